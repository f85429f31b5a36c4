"""The Redis adapter: batched reads, and MULTI/EXEC writes that carry the checkpoint."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import islice
from typing import Any

import orjson
import redis

from cdc_worker import keys
from cdc_worker.checkpoint import Checkpoint
from cdc_worker.store import FenceLost
from projections.projector import StoreOps
from projections.state import REF_KINDS, LinkKey, Refs, TicketState, decode_ref, decode_state

READ_CHUNK = 5000

# Swap the staged read model in and set the checkpoint, atomically. An empty staging hash
# does not exist in Redis, so it means "no documents" rather than an error.
SWAP_SCRIPT = """
local live, staging, retired, checkpoint = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local current = redis.call('GET', checkpoint)
if (current or '') ~= ARGV[2] then
  return 0
end
if redis.call('EXISTS', live) == 1 then
  redis.call('RENAME', live, retired)
  redis.call('UNLINK', retired)
end
if redis.call('EXISTS', staging) == 1 then
  redis.call('RENAME', staging, live)
end
redis.call('SET', checkpoint, ARGV[1])
return 1
"""


def chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive lists of at most ``size`` items."""
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


class RedisStore:
    """``ReadModelStore`` on Redis. One client, pooled; nothing connects at import."""

    def __init__(self, client: redis.Redis, dead_letter_max_len: int = 10_000) -> None:
        self.client = client
        self.dead_letter_max_len = dead_letter_max_len

    def load_checkpoint(self) -> Checkpoint | None:
        raw = self.client.get(keys.CHECKPOINT)
        return None if raw is None else Checkpoint.decode(raw)

    def load_refs(self, generation: int) -> Refs:
        loaded = Refs()
        for kind in REF_KINDS:
            table = loaded.table(kind)
            for field, raw in self.client.hscan_iter(keys.refs(generation, kind), count=5000):
                table[int(field)] = decode_ref(kind, raw)
        return loaded

    @contextmanager
    def batch(self, expected: Checkpoint) -> Iterator[RedisBatch]:
        """WATCH the checkpoint, check it is ``expected``; reads and MULTI/EXEC follow."""
        pipe: Any
        with self.client.pipeline(transaction=True) as pipe:
            pipe.watch(keys.CHECKPOINT)
            raw = pipe.get(keys.CHECKPOINT)
            found = None if raw is None else Checkpoint.decode(raw)
            if found != expected:
                raise FenceLost(f"checkpoint moved: expected {expected}, found {found}")
            try:
                yield RedisBatch(self, pipe, expected.generation)
            except redis.WatchError:
                raise FenceLost("checkpoint changed while the batch was applied") from None

    def write_dead_letters(self, pipe: Any, ops: StoreOps) -> None:
        """Queue the batch's dead letters on the capped stream."""
        for letter in ops.dead_letters:
            fields = {"identity": letter.identity, "position": letter.position}
            fields["reason"] = letter.reason[:2000]
            pipe.xadd(keys.DEAD_LETTERS, fields, maxlen=self.dead_letter_max_len, approximate=True)

    def write_staged(self, generation: int, ops: StoreOps) -> None:
        """Write a snapshot chunk into a generation nobody reads yet (no MULTI needed)."""
        pipe = self.client.pipeline(transaction=False)
        write_ops(pipe, generation, ops, keys.staging_documents(generation))
        self.write_dead_letters(pipe, ops)
        pipe.execute()

    def swap_in(self, checkpoint: Checkpoint, expected: Checkpoint | None) -> None:
        """Make a staged generation the live read model, with its checkpoint, atomically.

        Refused (``FenceLost``) when the stored checkpoint is no longer ``expected``.
        """
        generation = checkpoint.generation
        swapped = self.client.eval(
            SWAP_SCRIPT,
            4,
            keys.DOCUMENTS,
            keys.staging_documents(generation),
            keys.retired_documents(generation),
            keys.CHECKPOINT,
            checkpoint.encode(),
            b"" if expected is None else expected.encode(),
        )
        if not swapped:
            raise FenceLost("the checkpoint changed while the snapshot was built")

    def drop_generation(self, generation: int) -> int:
        """Unlink every key of a generation (an old one, or an abandoned snapshot)."""
        pattern = keys.generation_prefix(generation) + "*"
        dropped = 0
        for batch in chunks(self.client.scan_iter(match=pattern, count=1000), 1000):
            dropped += int(self.client.unlink(*batch))
        return dropped

    def beat(self, checkpoint: Checkpoint, ttl_s: int) -> None:
        """Refresh the worker's heartbeat key (read by health checks) with its position."""
        value = {"at_s": time.time(), "checkpoint": checkpoint.encode().decode()}
        self.client.set(keys.HEARTBEAT, orjson.dumps(value), ex=ttl_s)

    def document_count(self) -> int:
        """Number of documents in the read model."""
        return int(self.client.hlen(keys.DOCUMENTS))


class RedisBatch:
    """One fenced batch: immediate reads on the watching connection, then MULTI/EXEC."""

    def __init__(self, store: RedisStore, pipe: Any, generation: int) -> None:
        self.store = store
        self.pipe = pipe
        self.generation = generation

    def linked_ids(self, keys_: Iterable[LinkKey]) -> set[int]:
        names = [keys.link(self.generation, kind, ref_id) for kind, ref_id in keys_]
        return {int(member) for member in self.pipe.sunion(names)} if names else set()

    def load_states(self, ids: Iterable[int]) -> dict[int, TicketState | None]:
        loaded: dict[int, TicketState | None] = {}
        name = keys.states(self.generation)
        for chunk in chunks(sorted(ids), READ_CHUNK):
            for ticket_id, raw in zip(chunk, self.pipe.hmget(name, chunk), strict=True):
                loaded[ticket_id] = None if raw is None else decode_state(ticket_id, raw)
        return loaded

    def commit(self, ops: StoreOps, checkpoint: Checkpoint | None) -> None:
        self.pipe.multi()
        write_ops(self.pipe, self.generation, ops, keys.DOCUMENTS)
        self.store.write_dead_letters(self.pipe, ops)
        if checkpoint is not None:
            self.pipe.set(keys.CHECKPOINT, checkpoint.encode())
        self.pipe.execute()


def write_ops(pipe: Any, generation: int, ops: StoreOps, documents_key: str) -> None:
    """Queue every write of ``ops`` on a pipeline."""
    if ops.docs_put:
        pipe.hset(documents_key, mapping={str(i): d for i, d in ops.docs_put.items()})
    if ops.docs_deleted:
        pipe.hdel(documents_key, *ops.docs_deleted)
    states = keys.states(generation)
    if ops.states_put:
        pipe.hset(states, mapping={str(i): s for i, s in ops.states_put.items()})
    if ops.states_deleted:
        pipe.hdel(states, *ops.states_deleted)
    for (kind, ref_id), ids in ops.links_added.items():
        pipe.sadd(keys.link(generation, kind, ref_id), *ids)
    for (kind, ref_id), ids in ops.links_removed.items():
        pipe.srem(keys.link(generation, kind, ref_id), *ids)
    for kind, entries in ops.refs_put.items():
        pipe.hset(keys.refs(generation, kind), mapping={str(i): v for i, v in entries.items()})
    for kind, ids in ops.refs_deleted.items():
        pipe.hdel(keys.refs(generation, kind), *ids)
