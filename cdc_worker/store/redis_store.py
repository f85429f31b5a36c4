"""The Redis adapter: batched reads, and MULTI/EXEC writes that carry the checkpoint."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import islice
from typing import Any

import orjson
import redis

from cdc_worker.checkpoint import Checkpoint
from cdc_worker.store import keys
from cdc_worker.store.feed import KIND_RESET, entry_fields
from cdc_worker.store.index_encoding import INDEX_FORMAT
from cdc_worker.store.interface import FenceLost, ReadModelLost
from cdc_worker.store.jobs import Job, save_ops
from cdc_worker.store.lease import Lease
from cdc_worker.store.redis_tx import Transaction, read_many
from projections.projector import StoreOps
from projections.state import REF_KINDS, LinkKey, Refs, TicketState, decode_ref, decode_state

READ_CHUNK = 5000

# Swap the staged read model in and set the checkpoint, atomically. An empty staging hash
# does not exist in Redis, so it means "no documents" rather than an error. Refused (0) when
# the checkpoint moved, (-1) when fewer staged writes arrived than the builder made: Redis
# restarted or was flushed while it built (a restarted Redis also has no checkpoint), or (-2)
# when the generation's number is not the caller's (see ``keys.builder``). With the change
# feed on (ARGV[5] its cap), the swap appends the feed's ``reset`` entry in the same step.
SWAP_SCRIPT = """
local live, staging, retired, checkpoint, writes = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local current = redis.call('GET', checkpoint)
if (current or '') ~= ARGV[2] then
  return 0
end
if ARGV[4] ~= '' and redis.call('GET', KEYS[6]) ~= ARGV[4] then
  return -2
end
if ARGV[3] ~= '' and tonumber(redis.call('GET', writes) or '0') ~= tonumber(ARGV[3]) then
  return -1
end
redis.call('DEL', writes)
if redis.call('EXISTS', live) == 1 then
  redis.call('RENAME', live, retired)
  redis.call('UNLINK', retired)
end
if redis.call('EXISTS', staging) == 1 then
  redis.call('RENAME', staging, live)
end
redis.call('SET', checkpoint, ARGV[1])
if ARGV[5] ~= '' then
  redis.call('XADD', KEYS[7], 'MAXLEN', '~', ARGV[5], '*', 'kind', ARGV[6], 'pos', ARGV[7])
end
return 1
"""


NEW_GENERATION_SCRIPT = """
local g = redis.call('INCR', KEYS[1])
local floor = tonumber(ARGV[1])
if g <= floor then g = redis.call('INCRBY', KEYS[1], floor - g + 1) end
return g
"""


def chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive lists of at most ``size`` items."""
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


class RedisStore:
    """``ReadModelStore`` on Redis. One client, pooled; nothing connects at import."""

    def __init__(
        self,
        client: redis.Redis,
        dead_letter_max_len: int = 10_000,
        lease: Lease | None = None,
        changes_max_len: int | None = None,
    ) -> None:
        self.client = client
        self.dead_letter_max_len = dead_letter_max_len
        self.lease = lease  # when set, a batch starts only while this worker holds it
        self.changes_max_len = changes_max_len  # None: no change feed

    def write_change(self, tx: Transaction, ops: StoreOps, position: str) -> None:
        """Queue the change-feed entry of a write to the live documents, if it has one."""
        fields = entry_fields(ops, position) if self.changes_max_len else None
        if fields is not None and self.changes_max_len:
            tx.xadd(keys.CHANGES, fields, maxlen=self.changes_max_len, approximate=True)

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
            raw, holder = pipe.mget(keys.CHECKPOINT, keys.LEADER)  # one round trip, as a GET
            if self.lease is not None:
                self.lease.check(holder)
            found = None if raw is None else Checkpoint.decode(raw)
            if found != expected:
                raise FenceLost(f"checkpoint moved: expected {expected}, found {found}")
            try:
                yield RedisBatch(self, pipe, expected.generation)
            except redis.WatchError:
                raise FenceLost("checkpoint changed while the batch was applied") from None

    def write_dead_letters(self, tx: Transaction, ops: StoreOps) -> None:
        """Queue the batch's dead letters on the capped stream."""
        for letter in ops.dead_letters:
            fields = {"identity": letter.identity, "position": letter.position}
            fields["reason"] = letter.reason[:2000]
            tx.xadd(keys.DEAD_LETTERS, fields, maxlen=self.dead_letter_max_len, approximate=True)

    def write_staged(self, generation: int, token: str, ops: StoreOps) -> None:
        """Write a snapshot chunk into a generation nobody reads yet, with the write counter,
        in one MULTI/EXEC, if the generation's number is still ours (``token``). A chunk
        lands whole or not at all (Redis full, killed, or the writer killed mid-send), so the
        counter the swap checks counts exactly the chunks that are there."""
        pipe: Any
        with self.client.pipeline(transaction=True) as pipe:
            pipe.watch(keys.builder(generation))
            if pipe.get(keys.builder(generation)) != token.encode():
                raise FenceLost(f"generation {generation} is no longer ours (Redis restarted?)")
            tx = Transaction()
            write_ops(tx, generation, ops, keys.staging_documents(generation))
            self.write_dead_letters(tx, ops)
            tx.incr(keys.staged_writes(generation))
            try:
                tx.execute(pipe)
            except redis.WatchError:
                raise FenceLost(f"generation {generation} changed hands while written") from None

    def owns(self, generation: int, token: str) -> bool:
        """True while the generation's number is the one ``token`` took."""
        return bool(self.client.get(keys.builder(generation)) == token.encode())

    def swap_in(
        self,
        checkpoint: Checkpoint,
        expected: Checkpoint | None,
        staged_writes: int | None = None,
        token: str | None = None,
    ) -> None:
        """Make a staged generation the live read model, with its checkpoint, atomically.

        Refused (``FenceLost``) when the stored checkpoint is no longer ``expected``, when
        Redis holds fewer than ``staged_writes`` of the generation's ``write_staged`` calls,
        or when ``token`` no longer owns the generation's number.
        """
        generation = checkpoint.generation
        swapped = self.client.eval(
            SWAP_SCRIPT,
            7,
            keys.DOCUMENTS,
            keys.staging_documents(generation),
            keys.retired_documents(generation),
            keys.CHECKPOINT,
            keys.staged_writes(generation),
            keys.builder(generation),
            keys.CHANGES,
            checkpoint.encode(),
            b"" if expected is None else expected.encode(),
            "" if staged_writes is None else staged_writes,
            token or "",
            self.changes_max_len or "",
            KIND_RESET,
            str(checkpoint.position),
        )
        if swapped == -2:
            raise FenceLost(f"generation {generation} is no longer ours (Redis restarted?)")
        if swapped == -1:
            raise FenceLost("Redis lost part of the snapshot while it was built")
        if not swapped:
            raise FenceLost("the checkpoint changed while the snapshot was built")

    def new_generation(self, above: int, token: str) -> int:
        """A generation number greater than ``above`` that no other builder has, owned by
        ``token`` (see ``keys.builder``); keys left under it by a dead builder are dropped."""
        g = int(self.client.eval(NEW_GENERATION_SCRIPT, 1, keys.GENERATIONS, above))
        self.drop_generation(g)  # a builder still writing finds no token of its own: it stops
        self.client.mset({keys.builder(g): token, keys.index_format(g): INDEX_FORMAT})
        return g

    def index_format_current(self, generation: int) -> bool:
        """False when the generation's indexes were written in an older encoding (by an
        older version): only a full rebuild brings them to the current one."""
        return bool(self.client.get(keys.index_format(generation)) == INDEX_FORMAT.encode())

    def drop_generation(self, generation: int) -> int:
        """Unlink every key of a generation (an old one, or an abandoned snapshot)."""
        pattern = keys.generation_prefix(generation) + "*"
        dropped = 0
        for batch in chunks(self.client.scan_iter(match=pattern, count=1000), 1000):
            dropped += int(self.client.unlink(*batch))
        return dropped

    def beat(
        self,
        checkpoint: Checkpoint,
        lag_s: float,
        ttl_s: int,
        source_behind_s: float = 0.0,
        worker: str = "",
        source: str | None = None,
    ) -> tuple[int, int]:
        """Refresh the heartbeat and check the read model is still there; returns its size
        and the dead-letter stream's length.

        Raises ``FenceLost`` when the checkpoint is not ``checkpoint`` (Redis flushed or
        restarted empty, another writer) or when the documents hash vanished while its index
        still lists tickets, so an idle worker notices within one beat.
        """
        position = checkpoint.position
        value = {
            "at_s": time.time(),
            "lag_s": lag_s,
            "source_behind_s": source_behind_s,
            "position": str(position),
            "gtid": position.gtid,
            "committed_at_s": checkpoint.committed_at_s,
        }
        if worker:
            value["worker"] = worker  # host:pid of the active worker
        if source is not None:
            value["source"] = source  # the source server read, host:port
        pipe = self.client.pipeline(transaction=False)
        pipe.get(keys.CHECKPOINT)
        pipe.hlen(keys.DOCUMENTS)
        pipe.zcard(keys.index(checkpoint.generation, "all", 0))
        pipe.xlen(keys.DEAD_LETTERS)
        pipe.set(keys.HEARTBEAT, orjson.dumps(value), ex=ttl_s)
        stored, documents, indexed, dead_letters, _ = pipe.execute()
        if stored is None or Checkpoint.decode(stored) != checkpoint:
            raise FenceLost("the checkpoint in Redis changed or vanished")
        if documents == 0 and indexed > 0:
            raise ReadModelLost(f"the '{keys.DOCUMENTS}' hash vanished ({indexed} tickets indexed)")
        return int(documents), int(dead_letters)

    def beat_halted(
        self, reason: str, ttl_s: int, source_behind_s: float = 0.0, worker: str = ""
    ) -> None:
        """A heartbeat saying the worker stopped applying, and why (readiness shows it)."""
        value: dict[str, object] = {
            "at_s": time.time(),
            "lag_s": 0.0,
            "source_behind_s": source_behind_s,
            "halted": reason,
        }
        if worker:
            value["worker"] = worker  # host:pid of the halted (active) worker
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

    def link_sets(
        self, keys_: Iterable[LinkKey], generation: int | None = None
    ) -> dict[LinkKey, set[int]]:
        g = self.generation if generation is None else generation
        wanted = list(keys_)
        commands = [("SMEMBERS", keys.link(g, kind, ref_id)) for kind, ref_id in wanted]
        replies = read_many(self.pipe, commands) if commands else []
        return {key: set(map(int, members)) for key, members in zip(wanted, replies, strict=True)}

    def load_states(
        self, ids: Iterable[int], generation: int | None = None
    ) -> dict[int, TicketState | None]:
        loaded: dict[int, TicketState | None] = {}
        name = keys.states(self.generation if generation is None else generation)
        for chunk in chunks(sorted(ids), READ_CHUNK):
            for ticket_id, raw in zip(chunk, self.pipe.hmget(name, chunk), strict=True):
                loaded[ticket_id] = None if raw is None else decode_state(ticket_id, raw)
        return loaded

    def commit(
        self,
        ops: StoreOps,
        checkpoint: Checkpoint | None,
        shadow: tuple[int, StoreOps] | None = None,
        job: Job | None = None,
    ) -> None:
        """One MULTI/EXEC: the live generation, its change-feed entry, a resync's shadow
        generation (documents to its staging hash), the job's progress and the checkpoint."""
        tx = Transaction()
        write_ops(tx, self.generation, ops, keys.DOCUMENTS)
        self.store.write_dead_letters(tx, ops)
        self.store.write_change(tx, ops, str(checkpoint.position) if checkpoint else "")
        if shadow is not None:
            generation, shadow_ops = shadow
            write_ops(tx, generation, shadow_ops, keys.staging_documents(generation))
            self.store.write_dead_letters(tx, shadow_ops)
        if job is not None:
            save_ops(tx, job)
        if checkpoint is not None:
            tx.set(keys.CHECKPOINT, checkpoint.encode())
        tx.execute(self.pipe)


def write_ops(tx: Transaction, generation: int, ops: StoreOps, documents_key: str) -> None:
    """Queue every write of ``ops`` on a transaction."""
    _write_hash(tx, documents_key, ops.docs_put, ops.docs_deleted)
    _write_hash(tx, keys.states(generation), ops.states_put, ops.states_deleted)
    for kind in REF_KINDS:
        name = keys.refs(generation, kind)
        _write_hash(tx, name, ops.refs_put.get(kind, {}), ops.refs_deleted.get(kind, set()))
    for (kind, ref_id), ids in ops.links_added.items():
        tx.sadd(keys.link(generation, kind, ref_id), *ids)
    for (kind, ref_id), ids in ops.links_removed.items():
        tx.srem(keys.link(generation, kind, ref_id), *ids)
    for (field, value), ids in ops.index_added.items():
        tx.zadd_ids(keys.index(generation, field, value), ids)
    for (field, value), ids in ops.index_removed.items():
        tx.zrem_ids(keys.index(generation, field, value), ids)
    for kind in set(ops.lookups_put) | set(ops.lookups_deleted):
        name = keys.lookup(generation, kind)
        _write_hash(tx, name, ops.lookups_put.get(kind, {}), ops.lookups_deleted.get(kind, set()))


def _write_hash(tx: Transaction, name: str, puts: dict[Any, Any], deletes: set[Any]) -> None:
    if puts:
        tx.hset(name, mapping=puts)  # ids packed as their decimal text, as str() gives
    if deletes:
        tx.hdel(name, *deletes)
