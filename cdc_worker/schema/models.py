"""The source schema: SQLAlchemy 2.0 typed models, the one definition Alembic migrates from.

Table and column names, types, nullability and foreign-key actions are a contract with the
rest of the product and outside tools: add indexes, never rename or drop.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    text,
)
from sqlalchemy.dialects.mysql import DATETIME, MEDIUMTEXT
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

PRIORITIES = ("low", "normal", "high", "urgent")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# DATETIME(6) on MySQL/MariaDB; plain DateTime elsewhere. All values are UTC wall clock.
Timestamp6 = DateTime().with_variant(DATETIME(fsp=6), "mysql", "mariadb")
LongText = Text().with_variant(MEDIUMTEXT(), "mysql", "mariadb")
TABLE_ARGS = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_unicode_ci",
}


class Base(DeclarativeBase):
    """Declarative base carrying the naming convention for constraints and indexes."""

    metadata = MetaData(naming_convention=NAMING)


class Department(Base):
    """A team tickets are routed to."""

    __tablename__ = "departments"
    __table_args__ = TABLE_ARGS

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp6)


class User(Base):
    """A requester or agent."""

    __tablename__ = "users"
    __table_args__ = TABLE_ARGS

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    email: Mapped[str] = mapped_column(String(255), unique=True)
    full_name: Mapped[str] = mapped_column(String(200))
    department_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("departments.id", ondelete="SET NULL"), index=True
    )
    is_active: Mapped[bool] = mapped_column(Boolean, server_default=text("1"))
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp6)


class TicketStatus(Base):
    """A workflow state such as open or resolved."""

    __tablename__ = "ticket_statuses"
    __table_args__ = TABLE_ARGS

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)
    is_closed: Mapped[bool] = mapped_column(Boolean, server_default=text("0"))


class Ticket(Base):
    """A support request; ``is_deleted`` is a soft delete."""

    __tablename__ = "tickets"
    __table_args__ = (
        Index("ix_tickets_department_id_status_id", "department_id", "status_id"),
        Index("ix_tickets_updated_at", "updated_at"),
        TABLE_ARGS,
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(LongText)
    status_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("ticket_statuses.id", ondelete="RESTRICT"), index=True
    )
    priority: Mapped[str] = mapped_column(
        Enum(*PRIORITIES, name="ticket_priority", native_enum=True, validate_strings=True),
        server_default=text("'normal'"),
    )
    department_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("departments.id", ondelete="RESTRICT")
    )
    requester_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("users.id", ondelete="RESTRICT"), index=True
    )
    assignee_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    is_deleted: Mapped[bool] = mapped_column(Boolean, server_default=text("0"))
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp6)
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp6)


class Attachment(Base):
    """A file attached to a ticket."""

    __tablename__ = "attachments"
    __table_args__ = (
        CheckConstraint("size_bytes >= 0", name="size_bytes_non_negative"),
        TABLE_ARGS,
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("tickets.id", ondelete="CASCADE"), index=True
    )
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(100))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp6)


class Tag(Base):
    """A label tickets can carry."""

    __tablename__ = "tags"
    __table_args__ = TABLE_ARGS

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)


class TicketTag(Base):
    """The many-to-many link between tickets and tags."""

    __tablename__ = "ticket_tags"
    __table_args__ = TABLE_ARGS

    ticket_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("tickets.id", ondelete="CASCADE"), primary_key=True
    )
    tag_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class Comment(Base):
    """A message on a ticket."""

    __tablename__ = "comments"
    __table_args__ = (
        Index("ix_comments_ticket_id_created_at", "ticket_id", "created_at"),
        TABLE_ARGS,
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("tickets.id", ondelete="CASCADE"))
    author_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("users.id", ondelete="RESTRICT"), index=True
    )
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp6)


TRACKED_TABLES = tuple(Base.metadata.tables)
