"""Text as MySQL's ``utf8mb4_unicode_ci`` compares it, for the read API's name lookups.

The schema declares that collation (models.TABLE_OPTIONS), so ``WHERE email = ?`` ignores
case, most accents and ignorable characters, expands ``ß`` to ``ss``, gives every character
beyond U+FFFF one same weight (0xFFFD: all emoji are equal) and ignores trailing spaces
(PAD SPACE). ``fold`` maps a
string to one representative of its class: two strings fold alike exactly when the
collation finds them equal. The table is the server's own (see unicode_ci_table).
"""

from __future__ import annotations

import base64
import zlib
from functools import cache

import orjson

from projections.unicode_ci_table import FOLDS_ZLIB_B85

LAST_BMP = "\uffff"
# The generator's symbol for a weight no BMP character carries: weight 0xFFFD here.
BEYOND_BMP = chr(0xF0000 + 0xFFFD)


@cache
def _folds() -> dict[int, str]:
    raw = orjson.loads(zlib.decompress(base64.b85decode(FOLDS_ZLIB_B85)))
    return {int(cp): folded for cp, folded in raw.items()}


def fold(value: str) -> str:
    """``value`` folded: equal folds exactly when utf8mb4_unicode_ci finds the texts equal."""
    folds = _folds()
    if value and max(value) > LAST_BMP:
        value = "".join(BEYOND_BMP if ch > LAST_BMP else ch for ch in value)
    return value.translate(folds).rstrip(folds.get(0x20, " "))
