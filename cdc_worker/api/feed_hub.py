"""The change feed as the API reads it: one XREAD BLOCK per process, fanned out in memory.

A thousand open event streams must not mean a thousand blocked Redis connections nor a
thousand reads of each document. The hub follows ``keys.CHANGES`` on a connection of its
own, reads the documents of every new entry once, and keeps the recent entries in memory;
a stream whose position is inside that window is served from memory, one that is behind
(a reconnect with an old ``Last-Event-ID``) catches up from Redis on its own, then joins.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from cdc_worker.store import keys
from cdc_worker.store.connect import close_client
from cdc_worker.store.feed import KIND_RESET, FeedEntry, decode_entry, parse_entry_id
from cdc_worker.store.feed import trimmed_from_info as _trimmed_from_info

READ_COUNT = 200  # entries per XREAD/XRANGE
WINDOW_DOCUMENTS = 20_000  # documents the hub keeps in memory (with their entries)
BLOCK_MS = 1000
HMGET_CHUNK = 1000
NO_ENTRY = "0-0"
START_TIMEOUT_S = 5.0

Facets = tuple[Any, Any, Any]  # department_id, status_id, assignee_id of a document


@dataclass(frozen=True, slots=True)
class Document:
    """A document as read, with the fields the filters look at."""

    raw: bytes
    facets: Facets


@dataclass(frozen=True, slots=True)
class Item:
    """A feed entry and the documents of its upserted tickets (None: gone since)."""

    entry: FeedEntry
    docs: dict[int, Document | None]
    # Its SSE text by view, rendered once however many streams show the same view.
    rendered: dict[Any, bytes] = field(default_factory=dict)
    key: tuple[int, int] = (0, 0)  # the entry id, parsed once

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", parse_entry_id(self.entry.entry_id))


def reset_item(entry_id: str) -> Item:
    """A ``reset`` for a reader whose resume point was trimmed away: reload, go on after
    ``entry_id``."""
    return Item(FeedEntry(entry_id, KIND_RESET, position=""), {})


async def read_documents(client: aioredis.Redis, ids: Iterable[int]) -> dict[int, Document | None]:
    """The current documents of ``ids``."""
    wanted = sorted(set(ids))
    found: dict[int, Document | None] = {}
    for start in range(0, len(wanted), HMGET_CHUNK):
        chunk = wanted[start : start + HMGET_CHUNK]
        replies: list[Any] = await client.hmget(keys.DOCUMENTS, chunk)
        for ticket_id, raw in zip(chunk, replies, strict=True):
            found[ticket_id] = None if raw is None else _document(raw)
    return found


def _document(raw: bytes) -> Document:
    doc = orjson.loads(raw)
    return Document(raw, (doc.get("department_id"), doc.get("status_id"), doc.get("assignee_id")))


async def newest_id(client: aioredis.Redis) -> str:
    """The id of the feed's last entry, or ``0-0`` when it has none."""
    newest: Any = await client.xrevrange(keys.CHANGES, count=1)
    return str(newest[0][0].decode()) if newest else NO_ENTRY


async def is_trimmed(client: aioredis.Redis, after: str) -> bool:
    """True when entries right after ``after`` may have been trimmed away (see
    ``cdc_worker.store.feed.resume_is_trimmed``)."""
    try:
        info: Any = await client.xinfo_stream(keys.CHANGES)
    except RedisError:  # no stream: nothing was ever trimmed from it
        return False
    return _trimmed_from_info(after, info)


@dataclass(frozen=True, slots=True)
class Page:
    """Entries read from Redis; ``trimmed_to`` set when the resume point was trimmed away
    (then there are no entries: reload, and read on after ``trimmed_to``)."""

    items: list[Item]
    trimmed_to: str | None = None


async def read_after(client: aioredis.Redis, after: str, count: int) -> Page:
    """Up to ``count`` entries after ``after`` from Redis, with their documents."""
    replies: Any = await client.xrange(keys.CHANGES, min=f"({after}", count=count)
    if await is_trimmed(client, after):  # checked after the read: nothing lost in between
        return Page([], await newest_id(client))
    entries = [decode_entry(entry_id, fields) for entry_id, fields in replies]
    docs = await read_documents(client, (i for e in entries for i in e.upserted))
    return Page([Item(e, {i: docs[i] for i in e.upserted}) for e in entries])


class FeedHub:
    """Follows the feed for every stream of this process."""

    def __init__(self, connect: Callable[[], aioredis.Redis]) -> None:
        self.connect = connect
        self.items: list[Item] = []
        self.ids: list[tuple[int, int]] = []  # parsed ids of ``items``, for bisect
        self.floor_key = (0, 0)  # ``items`` hold every entry after this one
        self.last = NO_ENTRY
        self.window_docs = 0
        self.published = asyncio.Event()
        self.started = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.client: aioredis.Redis | None = None

    async def start(self) -> None:
        """Start following (once); returns when the hub knows the feed's last id. Raises
        ``RedisConnectionError`` (the API answers 503) when Redis does not answer in time."""
        if self.task is None:
            self.client = self.connect()
            self.task = asyncio.create_task(self._follow(self.client), name="feed-hub")
        try:
            await asyncio.wait_for(self.started.wait(), START_TIMEOUT_S)
        except TimeoutError:
            raise RedisConnectionError("the change feed is not readable") from None

    async def close(self) -> None:
        """Stop following and close the hub's connection."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if self.client is not None:
            await close_client(self.client)

    def covers(self, after: tuple[int, int]) -> bool:
        """True when every entry after ``after`` (a parsed id) is (or will be) held here."""
        return after >= self.floor_key

    def items_after(self, after: tuple[int, int]) -> list[Item]:
        """The held entries after ``after`` (which ``covers``)."""
        return self.items[bisect.bisect_right(self.ids, after) :]

    async def wait(self, after: tuple[int, int], timeout_s: float) -> list[Item]:
        """Entries after ``after`` (which ``covers``), waiting up to ``timeout_s`` for one."""
        published = self.published
        found = self.items_after(after)
        if not found:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):  # no task per waiter, unlike wait_for
                    await published.wait()
            found = self.items_after(after) if self.covers(after) else []
        return found

    async def _follow(self, client: aioredis.Redis) -> None:
        while True:
            try:
                if not self.started.is_set():
                    self.last = await newest_id(client)
                    self.floor_key = parse_entry_id(self.last)
                    self.started.set()
                await self._read(client)
            except RedisError:
                await asyncio.sleep(1)  # the streams keep waiting; they time out to heartbeats

    async def _read(self, client: aioredis.Redis) -> None:
        reply: Any = await client.xread({keys.CHANGES: self.last}, count=READ_COUNT, block=BLOCK_MS)
        if await is_trimmed(client, self.last):  # the hub fell behind the cap: readers reload
            newest = await newest_id(client)
            self._publish([reset_item(newest)], newest)
            return
        if not reply:
            return
        entries = [decode_entry(entry_id, fields) for entry_id, fields in reply[0][1]]
        docs = await read_documents(client, (i for e in entries for i in e.upserted))
        items = [Item(e, {i: docs[i] for i in e.upserted}) for e in entries]
        self._publish(items, entries[-1].entry_id)

    def _publish(self, items: list[Item], last: str) -> None:
        self.items += items
        self.ids += [item.key for item in items]
        self.window_docs += sum(len(item.docs) + 1 for item in items)
        self.last = last
        if self.window_docs > WINDOW_DOCUMENTS:  # drop the older half of the window
            half = len(self.items) // 2 or 1
            self.floor_key = self.items[half - 1].key
            self.window_docs -= sum(len(item.docs) + 1 for item in self.items[:half])
            del self.items[:half], self.ids[:half]
        published, self.published = self.published, asyncio.Event()
        published.set()
