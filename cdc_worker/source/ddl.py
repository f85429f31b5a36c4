"""Which statements change a tracked table's rows outside row events: only a resync is safe."""

from __future__ import annotations

import re

from projections.changes import TRACKED_TABLES

TRUNCATING_DDL = ("TRUNCATE", "DROP", "RENAME")
INCOMPATIBLE_ALTER = {"DROP", "CHANGE", "MODIFY", "RENAME"}
_IDENTIFIER = r"(?:`(?:[^`]|``)+`|[\w$]+)"
NAME = re.compile(rf"(?P<first>{_IDENTIFIER})(?:\s*\.\s*(?P<second>{_IDENTIFIER}))?")
# Comments (not /*! executable */ ones) and string literals name no table ("double quotes"
# may be identifiers: kept).
IGNORED_TEXT = re.compile(r"/\*(?!M?!).*?\*/|'(?:[^'\\]|\\.)*'|#[^\n]*|-- [^\n]*", re.S)


def data_changing_ddl(query: str, default_db: str = "", database: str = "") -> bool:
    """TRUNCATE, DROP or RENAME of a tracked table (rows changed with no row events), an
    ALTER of one that does more than add columns or indexes (only a resync is safe then), or
    DROP DATABASE of the tracked one. A table counts when it is in ``database``: named so, or
    unqualified while ``default_db`` (the statement's current database) is it; with no
    ``database`` given, every database counts."""
    text = IGNORED_TEXT.sub(" ", query)
    names = [_name(match, default_db) for match in NAME.finditer(text)]
    if not names:
        return False
    verb, words = names[0][1].upper(), {name.upper() for _, name in names}
    if verb == "DROP" and len(names) > 2 and names[1][1].upper() in ("DATABASE", "SCHEMA"):
        return _same_db(names[-1][1], database)
    if not any(n.lower() in TRACKED_TABLES and _same_db(db, database) for db, n in names[1:]):
        return False
    return verb in TRUNCATING_DDL or (verb == "ALTER" and bool(INCOMPATIBLE_ALTER & words))


def _name(match: re.Match[str], default_db: str) -> tuple[str, str]:
    """(database, name) of a possibly qualified identifier; backquotes removed."""
    first, second = match["first"].strip("`"), match["second"]
    return (first, second.strip("`")) if second else (default_db, first)


def _same_db(name: str, database: str) -> bool:
    return not database or name.casefold() == database.casefold()
