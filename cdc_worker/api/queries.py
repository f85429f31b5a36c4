"""The read side's Redis queries: one round trip each, consistent across a resync's swap.

Listing runs as one Lua script: it reads the checkpoint to find the live generation, walks the
smallest of the requested filter indexes from the cursor in id order, checks membership in the
others, and returns the matching documents, all atomically. The walk stops early when it has
visited ``scan_budget`` index entries or gathered ``max_bytes`` of documents: the page is then
short (even empty) and carries a cursor, so no call holds Redis for long.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from cdc_worker.store import keys
from cdc_worker.store.index_encoding import INDEX_FORMAT, index_member

CURSOR_PREFIX = b"v1:"
MAX_TICKET_ID = 2**63 - 1
ZRANGE_STEP = 500

# Reply: {code, last scanned member, documents...}; code -1: no read model, -2: indexes in
# an older format (the worker rebuilds them), 0: the walk reached the end, 1: more may follow
# the last member. Members are ids zero-padded to 19 digits (see store.index_encoding); the
# documents hash is keyed by the plain decimal id.
LIST_SCRIPT = """
local raw = redis.call('GET', KEYS[1])
if not raw then return {-1} end
local base = ARGV[6] .. cjson.decode(raw)['generation'] .. ':'
if redis.call('GET', base .. 'index-format') ~= ARGV[7] then return {-2} end
local sets, sizes = {}, {}
for i = 8, #ARGV, 3 do
  local value = ARGV[i + 1]
  if ARGV[i + 2] ~= '' then
    value = redis.call('HGET', base .. 'lookup:' .. ARGV[i + 2], value)
    if not value then return {0, ''} end
  end
  local name = base .. 'idx:' .. ARGV[i] .. ':' .. value
  sets[#sets + 1] = name
  sizes[name] = redis.call('ZCARD', name)
end
table.sort(sets, function(a, b) return sizes[a] < sizes[b] end)
local limit, budget, room = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local step = tonumber(ARGV[5])
local found, last, more, full = {}, ARGV[1], true, false
while more and not full and #found < limit and budget > 0 do
  local ids = redis.call('ZRANGE', sets[1], '(' .. last, '+', 'BYLEX', 'LIMIT', 0,
    math.min(step, budget))
  if #ids == 0 then more = false; break end
  for _, id in ipairs(ids) do
    local match = true
    for j = 2, #sets do
      if not redis.call('ZSCORE', sets[j], id) then match = false; break end
    end
    if match then
      local field = string.match(id, '^0*(%d+)$')
      local size = redis.call('HSTRLEN', KEYS[2], field)
      -- The page is full: this one starts the next page (one document at least a page).
      if #found > 0 and size > room then full = true; break end
      room = room - size
      found[#found + 1] = field
    end
    last = id; budget = budget - 1
    if #found >= limit or budget <= 0 then break end
  end
end
local reply = {more and 1 or 0, last}
if #found > 0 then
  local docs = redis.call('HMGET', KEYS[2], unpack(found))
  for i = 1, #found do reply[#reply + 1] = docs[i] end
end
return reply
"""

# A batch read: -1 without a read model, the documents' total size when it passes ARGV[1],
# else the documents (nil for missing ids) in the order asked.
BATCH_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local total = 0
for i = 2, #ARGV do total = total + redis.call('HSTRLEN', KEYS[2], ARGV[i]) end
if total > tonumber(ARGV[1]) then return total end
return redis.call('HMGET', KEYS[2], unpack(ARGV, 2))
"""

# Why a single read found no document: 1 the ticket is absent from a live read model, 0 no
# read model (no checkpoint, or the documents hash is gone while the live generation still
# indexes tickets: the worker is rebuilding it).
MISS_SCRIPT = """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then return 1 end
local all = ARGV[1] .. cjson.decode(raw)['generation'] .. ':idx:all:0'
if redis.call('ZCARD', all) > 0 then return 0 end
return 1
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


class NoReadModel(Exception):
    """Raised when there is no read model to list yet (or only one in an older format)."""


@dataclass(frozen=True, slots=True)
class Filter:
    """One AND-ed condition: an index field and its value, or a name to look up first."""

    field: str
    value: str
    lookup: str = ""


def list_arguments(
    after_id: int, limit: int, filters: list[Filter], scan_budget: int, max_bytes: int
) -> list[str | int]:
    """ARGV of ``LIST_SCRIPT``; no filter lists every live ticket."""
    chosen = filters or [Filter("all", "0")]
    flat = [part for f in chosen for part in (f.field, f.value, f.lookup)]
    head: list[str | int] = [index_member(after_id), limit, scan_budget, max_bytes]
    return [*head, ZRANGE_STEP, f"{keys.PREFIX}:g", INDEX_FORMAT, *flat]


def page_from_reply(reply: list[object]) -> Page:
    """The page a ``LIST_SCRIPT`` reply holds; raises ``NoReadModel``."""
    code = int(reply[0])  # type: ignore[call-overload]
    if code == -1:
        raise NoReadModel("no read model yet")
    if code == -2:
        raise NoReadModel("the read model's indexes are being rebuilt (older format)")
    documents = [doc for doc in reply[2:] if isinstance(doc, bytes)]
    last = int(reply[1]) if code == 1 and isinstance(reply[1], bytes) else 0
    return Page(documents, encode_cursor(last) if last > 0 else None)
