"""Initial schema: departments, users, ticket_statuses, tickets, attachments, tags,
ticket_tags, comments.

Written out by hand from ``cdc_worker.schema.models`` and reviewed against autogenerate
(``cdc_worker.schema.migrate.drift`` is empty after upgrading). Frozen: it does not import the models,
so later model changes need a new revision.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Same variants as the models: DATETIME(6) / MEDIUMTEXT on MySQL and MariaDB.
TIMESTAMP6 = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
LONG_TEXT = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")
PRIORITY = sa.Enum("low", "normal", "high", "urgent", name="ticket_priority")
TABLE_OPTIONS = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_unicode_ci",
}

# Parents before children; downgrade walks this backwards.
TABLES = (
    "departments",
    "tags",
    "ticket_statuses",
    "users",
    "tickets",
    "attachments",
    "comments",
    "ticket_tags",
)


def upgrade() -> None:
    _create_reference_tables()
    _create_users()
    _create_tickets()
    _create_attachments()
    _create_comments()
    _create_ticket_tags()


def downgrade() -> None:
    # Dropping a table drops its indexes. Dropping the indexes first would fail on MySQL:
    # an index backing a foreign key cannot be dropped while the key exists (error 1553).
    for table in reversed(TABLES):
        op.drop_table(table)


def _create_reference_tables() -> None:
    op.create_table(
        "departments",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("created_at", TIMESTAMP6, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_departments")),
        sa.UniqueConstraint("name", name=op.f("uq_departments_name")),
        **TABLE_OPTIONS,
    )
    op.create_table(
        "tags",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=50), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tags")),
        sa.UniqueConstraint("name", name=op.f("uq_tags_name")),
        **TABLE_OPTIONS,
    )
    op.create_table(
        "ticket_statuses",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=50), nullable=False),
        sa.Column("is_closed", sa.Boolean(), server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ticket_statuses")),
        sa.UniqueConstraint("name", name=op.f("uq_ticket_statuses_name")),
        **TABLE_OPTIONS,
    )


def _create_users() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("email", sa.String(length=255), nullable=False),
        sa.Column("full_name", sa.String(length=200), nullable=False),
        sa.Column("department_id", sa.Integer(), nullable=True),
        sa.Column("is_active", sa.Boolean(), server_default=sa.text("1"), nullable=False),
        sa.Column("created_at", TIMESTAMP6, nullable=False),
        sa.ForeignKeyConstraint(
            ["department_id"],
            ["departments.id"],
            name=op.f("fk_users_department_id_departments"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("email", name=op.f("uq_users_email")),
        **TABLE_OPTIONS,
    )
    op.create_index(op.f("ix_users_department_id"), "users", ["department_id"], unique=False)


def _create_tickets() -> None:
    op.create_table(
        "tickets",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("description", LONG_TEXT, nullable=True),
        sa.Column("status_id", sa.Integer(), nullable=False),
        sa.Column("priority", PRIORITY, server_default=sa.text("'normal'"), nullable=False),
        sa.Column("department_id", sa.Integer(), nullable=False),
        sa.Column("requester_id", sa.Integer(), nullable=False),
        sa.Column("assignee_id", sa.Integer(), nullable=True),
        sa.Column("is_deleted", sa.Boolean(), server_default=sa.text("0"), nullable=False),
        sa.Column("created_at", TIMESTAMP6, nullable=False),
        sa.Column("updated_at", TIMESTAMP6, nullable=False),
        *_ticket_foreign_keys(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tickets")),
        **TABLE_OPTIONS,
    )
    _create_ticket_indexes()


def _ticket_foreign_keys() -> list[sa.ForeignKeyConstraint]:
    return [
        sa.ForeignKeyConstraint(
            ["status_id"],
            ["ticket_statuses.id"],
            name=op.f("fk_tickets_status_id_ticket_statuses"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["department_id"],
            ["departments.id"],
            name=op.f("fk_tickets_department_id_departments"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["requester_id"],
            ["users.id"],
            name=op.f("fk_tickets_requester_id_users"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["assignee_id"],
            ["users.id"],
            name=op.f("fk_tickets_assignee_id_users"),
            ondelete="SET NULL",
        ),
    ]


def _create_ticket_indexes() -> None:
    op.create_index(op.f("ix_tickets_assignee_id"), "tickets", ["assignee_id"], unique=False)
    op.create_index(
        op.f("ix_tickets_department_id_status_id"),
        "tickets",
        ["department_id", "status_id"],
        unique=False,
    )
    op.create_index(op.f("ix_tickets_requester_id"), "tickets", ["requester_id"], unique=False)
    op.create_index(op.f("ix_tickets_status_id"), "tickets", ["status_id"], unique=False)
    op.create_index(op.f("ix_tickets_updated_at"), "tickets", ["updated_at"], unique=False)


def _create_attachments() -> None:
    op.create_table(
        "attachments",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("ticket_id", sa.BigInteger(), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("content_type", sa.String(length=100), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("created_at", TIMESTAMP6, nullable=False),
        sa.CheckConstraint("size_bytes >= 0", name=op.f("ck_attachments_size_bytes_non_negative")),
        sa.ForeignKeyConstraint(
            ["ticket_id"],
            ["tickets.id"],
            name=op.f("fk_attachments_ticket_id_tickets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attachments")),
        **TABLE_OPTIONS,
    )
    op.create_index(op.f("ix_attachments_ticket_id"), "attachments", ["ticket_id"], unique=False)


def _create_comments() -> None:
    op.create_table(
        "comments",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("ticket_id", sa.BigInteger(), nullable=False),
        sa.Column("author_id", sa.Integer(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", TIMESTAMP6, nullable=False),
        sa.ForeignKeyConstraint(
            ["ticket_id"],
            ["tickets.id"],
            name=op.f("fk_comments_ticket_id_tickets"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["author_id"],
            ["users.id"],
            name=op.f("fk_comments_author_id_users"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_comments")),
        **TABLE_OPTIONS,
    )
    op.create_index(op.f("ix_comments_author_id"), "comments", ["author_id"], unique=False)
    # Leads with ticket_id, so it also serves the ticket_id foreign key.
    op.create_index(
        op.f("ix_comments_ticket_id_created_at"),
        "comments",
        ["ticket_id", "created_at"],
        unique=False,
    )


def _create_ticket_tags() -> None:
    op.create_table(
        "ticket_tags",
        sa.Column("ticket_id", sa.BigInteger(), nullable=False),
        sa.Column("tag_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["ticket_id"],
            ["tickets.id"],
            name=op.f("fk_ticket_tags_ticket_id_tickets"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tag_id"],
            ["tags.id"],
            name=op.f("fk_ticket_tags_tag_id_tags"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("ticket_id", "tag_id", name=op.f("pk_ticket_tags")),
        **TABLE_OPTIONS,
    )
    op.create_index(op.f("ix_ticket_tags_tag_id"), "ticket_tags", ["tag_id"], unique=False)
