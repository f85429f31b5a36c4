"""The core's ``fold`` against MariaDB's own comparisons in the schema's collation."""
# ruff: noqa: RUF001  (the probe strings are ambiguous on purpose)

from __future__ import annotations

import itertools

from sqlalchemy import text

from projections.collation import fold
from tests.conftest import SourceDatabase

TRICKY = [
    "mateo.petrovic.1@example.com",
    "MATEO.PETROVIC.1@EXAMPLE.COM",
    "Mateo.Petrović.1@example.com",
    "api",
    "API",
    "Api ",
    "api  ",
    " api",
    "a-pi",
    "apí",
    "ÀPI",
    "a\u200bpi",
    "a\u00adpi",
    "straße",
    "STRASSE",
    "strasse",
    "strase",
    "æon",
    "aeon",
    "ÆON",
    "ﬁle",
    "file",
    "Ｆｉｌｅ",
    "i",
    "I",
    "ı",
    "İ",
    "ς",
    "σ",
    "Σ",
    "ø",
    "o",
    "ö",
    "ł",
    "l",
    "đ",
    "d",
    "ŉ",
    "ʼn",
    "😀",
    "😁",
    "\ufffd",
    "x😀",
    "x😁",
    "①",
    "1",
    "²",
    "2",
    "ⅸ",
    "ix",
    "\t",
    "a\tb",
    "a b",
    "ǅ",
    "dž",
    "DŽ",
    "Å",
    "Å",
    "å",
    "한",
    "한",
    "ᄒ",
    "中",
    "丽",
    "tag",
    "TÄG",
    "tåg",
]


def test_fold_matches_the_collation_of_the_email_and_tag_columns(
    source_db: SourceDatabase,
) -> None:
    with source_db.engine.begin() as conn:
        for table, column in (("users", "email"), ("tags", "name")):
            row = conn.execute(text(f"SHOW FULL COLUMNS FROM {table} LIKE '{column}'")).one()
            assert row.Collation == "utf8mb4_unicode_ci"
        conn.execute(
            text(
                "CREATE TEMPORARY TABLE probe (i INT, v VARCHAR(100)) "
                "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
            )
        )
        conn.execute(
            text("INSERT INTO probe VALUES (:i, :v)"),
            [{"i": i, "v": v} for i, v in enumerate(TRICKY)],
        )
        equal = {
            (a, b): bool(same)
            for a, b, same in conn.execute(
                text("SELECT a.i, b.i, a.v = b.v FROM probe a JOIN probe b ON a.i < b.i")
            )
        }
    assert len(equal) == len(TRICKY) * (len(TRICKY) - 1) // 2
    differ = [
        (TRICKY[a], TRICKY[b], same)
        for (a, b), same in equal.items()
        if (fold(TRICKY[a]) == fold(TRICKY[b])) != same
    ]
    assert differ == []
    # and the probe is not trivial: both outcomes occur, across case, accents and expansions
    assert sum(equal.values()) > 40
    assert all(fold(a) == fold(b) for a, b in itertools.pairwise(TRICKY[:2]))
