"""The read side's Redis queries: one round trip each, consistent across a resync's swap.

Listing runs as one Lua script: it reads the checkpoint to find the live generation, walks the
smallest of the requested filter indexes from the cursor in id order, checks membership in the
others, and returns the matching documents, all atomically.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from cdc_worker.store import keys

CURSOR_PREFIX = b"v1:"
SCAN_BUDGET = 20_000
MAX_TICKET_ID = 2**63 - 1

LIST_SCRIPT = """
local raw = redis.call('GET', KEYS[1])
if not raw then return {-1} end
local base = ARGV[4] .. cjson.decode(raw)['generation'] .. ':'
local sets, sizes = {}, {}
for i = 5, #ARGV, 3 do
  local value = ARGV[i + 1]
  if ARGV[i + 2] ~= '' then
    value = redis.call('HGET', base .. 'lookup:' .. ARGV[i + 2], value)
    if not value then return {0} end
  end
  local name = base .. 'idx:' .. ARGV[i] .. ':' .. value
  sets[#sets + 1] = name
  sizes[name] = redis.call('ZCARD', name)
end
table.sort(sets, function(a, b) return sizes[a] < sizes[b] end)
local after, limit, budget = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local found, last, exhausted = {}, after, false
while #found < limit and budget > 0 do
  local ids = redis.call('ZRANGE', sets[1], '(' .. last, '+inf', 'BYSCORE', 'LIMIT', 0, 500)
  if #ids == 0 then exhausted = true; break end
  for _, id in ipairs(ids) do
    last = tonumber(id); budget = budget - 1
    local match = true
    for j = 2, #sets do
      if not redis.call('ZSCORE', sets[j], id) then match = false; break end
    end
    if match then found[#found + 1] = id end
    if #found >= limit or budget <= 0 then break end
  end
end
local reply = {exhausted and 0 or last}
if #found > 0 then
  local docs = redis.call('HMGET', KEYS[2], unpack(found))
  for i = 1, #found do reply[#reply + 1] = docs[i] end
end
return reply
"""


class BadCursor(ValueError):
    """Raised when a cursor was not made by this API."""


def encode_cursor(after_id: int) -> str:
    """Opaque cursor: the last ticket id scanned. It names no key, so it cannot reach one."""
    return base64.urlsafe_b64encode(CURSOR_PREFIX + str(after_id).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """Inverse of ``encode_cursor``; anything else raises ``BadCursor``."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raise BadCursor("cursor is not valid") from None
    digits = raw.removeprefix(CURSOR_PREFIX)
    if not raw.startswith(CURSOR_PREFIX) or not digits.isdigit() or len(digits) > 19:
        raise BadCursor("cursor is not valid")
    value = int(digits)
    if value > MAX_TICKET_ID:
        raise BadCursor("cursor is not valid")
    return value


@dataclass(frozen=True, slots=True)
class Page:
    """Documents of one listing page (raw JSON) and the cursor of the next, if any."""

    documents: list[bytes]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Filter:
    """One AND-ed condition: an index field and its value, or a name to look up first."""

    field: str
    value: str
    lookup: str = ""


def list_arguments(after_id: int, limit: int, filters: list[Filter]) -> list[str | int]:
    """ARGV of ``LIST_SCRIPT``; no filter lists every live ticket."""
    chosen = filters or [Filter("all", "0")]
    flat = [part for f in chosen for part in (f.field, f.value, f.lookup)]
    return [after_id, limit, SCAN_BUDGET, f"{keys.PREFIX}:g", *flat]


def page_from_reply(reply: list[object]) -> Page | None:
    """None when there is no read model yet."""
    last = int(reply[0])  # type: ignore[call-overload]
    if last < 0:
        return None
    documents = [doc for doc in reply[1:] if isinstance(doc, bytes)]
    return Page(documents, encode_cursor(last) if last else None)
