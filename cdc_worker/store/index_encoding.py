"""How ticket ids are written into the read API's index sorted sets (``keys.index``)."""

from __future__ import annotations

INDEX_MEMBER_DIGITS = 19
"""Every BIGINT id (1 to 2^63-1) has at most 19 digits: zero-padded to 19, byte order is
numeric order, so ZRANGE BYLEX walks ids in order (scores are doubles: exact only to 2^53)."""
INDEX_FORMAT = "lex19"
"""The encoding a generation's index sets were written with (``keys.index_format``). The
first encoding (score = member = id) predates the marker and has none."""


def index_member(ticket_id: int) -> str:
    """The member that stands for a ticket in an index sorted set: every score is 0."""
    return f"{ticket_id:0{INDEX_MEMBER_DIGITS}d}"
