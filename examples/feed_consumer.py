"""A backend cache kept exactly in step with ticket-sync's read model, from the change feed.

The recipe of docs/change-feed.md, with redis-py only:

1. ``reload()``: note the feed's last entry id, then copy the whole ``tickets`` hash (HSCAN).
   Every change committed after that id is in the feed after it, so nothing is missed.
2. ``poll()``: ``XREAD BLOCK`` the entries after the last one applied; for each, HMGET the
   upserted ids (a missing document means deleted since) and drop the deleted ids.
3. After each read, check the resume point was not trimmed away (``XINFO STREAM``); if it
   was, or the entry is a ``reset`` (a full resync swapped the read model), reload.

Run it: ``python examples/feed_consumer.py redis://127.0.0.1:6379/1`` prints each change.
The property test tests/integration/test_change_feed.py drives this very class.
"""

from __future__ import annotations

import sys
from typing import Any

import redis

STREAM = "ticket-sync:changes"
DOCUMENTS = "tickets"


class FeedCache:
    """Documents by ticket id (decimal text), following the feed from ``last_id``."""

    def __init__(self, client: redis.Redis, docs: dict[str, bytes] | None = None) -> None:
        self.client = client
        self.docs: dict[str, bytes] = dict(docs or {})
        self.last_id = "0-0"
        self.reloads = 0  # full reloads: resets and trimmed resume points
        self.trimmed_reports = 0

    def reload(self) -> None:
        """Copy the whole read model; follow the feed from the entry before the copy."""
        newest = self.client.xrevrange(STREAM, count=1)
        self.last_id = newest[0][0].decode() if newest else "0-0"
        docs = self.client.hscan_iter(DOCUMENTS, count=1000)
        self.docs = {key.decode(): value for key, value in docs}
        self.reloads += 1

    def poll(self, block_ms: int | None = 1000, count: int = 100) -> int:
        """Apply the entries after ``last_id`` (waiting up to ``block_ms`` for one);
        returns how many were applied. ``block_ms=None`` does not wait."""
        reply = self.client.xread({STREAM: self.last_id}, count=count, block=block_ms)
        if self.trimmed():
            self.trimmed_reports += 1
            self.reload()
            return 0
        entries = reply[0][1] if reply else []
        for entry_id, fields in entries:
            if fields.get(b"kind") == b"reset":
                self.reload()  # the copy is newer than every entry still in this reply
                return 1
            self.apply(fields)
            self.last_id = entry_id.decode()
        return len(entries)

    def apply(self, fields: dict[bytes, bytes]) -> None:
        """One ``changes`` entry: re-read the upserted documents, drop the deleted ones."""
        upserted = [i for i in fields.get(b"up", b"").decode().split(",") if i]
        for start in range(0, len(upserted), 1000):
            chunk = upserted[start : start + 1000]
            for ticket_id, doc in zip(chunk, self.client.hmget(DOCUMENTS, chunk), strict=True):
                if doc is None:
                    self.docs.pop(ticket_id, None)  # deleted since: a later entry says so
                else:
                    self.docs[ticket_id] = doc
        for ticket_id in fields.get(b"del", b"").decode().split(","):
            self.docs.pop(ticket_id, None)

    def trimmed(self) -> bool:
        """True when entries right after ``last_id`` may have been trimmed away."""
        try:
            info: dict[Any, Any] = self.client.xinfo_stream(STREAM)
        except redis.ResponseError:  # no stream (yet): nothing was trimmed
            return False
        first = info.get("first-entry") or info.get(b"first-entry")
        added = info.get("entries-added", info.get(b"entries-added", 0))
        length = info.get("length", info.get(b"length", 0))
        if not first or int(added) <= int(length):
            return False
        return _pair(self.last_id) < _pair(first[0].decode())


def _pair(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def main(url: str) -> None:
    cache = FeedCache(redis.Redis.from_url(url))
    cache.reload()
    print(f"{len(cache.docs)} documents, following the feed after {cache.last_id}")
    while True:
        before = dict(cache.docs)
        if cache.poll(block_ms=5000):
            changed = {
                k for k in before.keys() | cache.docs.keys() if before.get(k) != cache.docs.get(k)
            }
            print(f"at {cache.last_id}: {len(changed)} documents changed {sorted(changed)[:10]}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "redis://127.0.0.1:6379/1")
