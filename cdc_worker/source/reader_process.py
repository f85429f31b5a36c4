"""The binlog reader in a child process, so decoding and applying use both cores.

Reading and decoding (the library's protocol work plus our row decoder) and applying
(projection and Redis writes) each cost tens of microseconds per row change and both hold the
GIL: in one process they take turns. Here a forked child runs the ``BinlogReader`` and hands
whole batches of chunks over a bounded queue as plain tuples (cheaper to pickle than the
dataclasses); the parent rebuilds them. The interface is the ``BinlogReader``'s, so the worker
loop is the same in both modes.

The child dies with the thread that started it (PR_SET_PDEATHSIG), also checks that its parent
is alive while it waits on a full queue, and is killed when the session ends. It never
reconnects either: its errors (StreamInterrupted, CheckpointLost...) reach the parent in order.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import multiprocessing
import os
import pickle
import queue
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from multiprocessing.reduction import ForkingPickler
from typing import Any

from cdc_worker.checkpoint import Position
from cdc_worker.source.binlog import BinlogReader, Chunk
from cdc_worker.source.stream import SourceConfig
from projections.changes import RowChange

TICK_S = 0.25  # the child reports its counters at least this often, events or not
QUEUE_MAX_MESSAGES = 2  # each holds up to about batch_max_rows row changes
PR_SET_PDEATHSIG = 1
Stats = tuple[int, float, dict[str, int]]


@dataclass
class DecoderCounts:
    """The child's row decoder counters, as last reported."""

    rows_by_decoder: dict[str, int] = field(default_factory=dict)


class ProcessReader:
    """A ``BinlogReader`` running in a child process; same methods, same guarantees."""

    def __init__(self, config: SourceConfig, start: Position) -> None:
        context = multiprocessing.get_context("fork")
        self._queue: Any = context.Queue(maxsize=QUEUE_MAX_MESSAGES)
        self._process = context.Process(
            target=_child_main,
            args=(config, start, self._queue, os.getpid()),
            name="binlog-reader",
            daemon=True,
        )
        self.events_seen = 0
        self.last_event_monotonic = time.monotonic()
        self.decoder = DecoderCounts()

    def start(self) -> None:
        """Fork the reader."""
        self._process.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Kill the reader (it holds nothing but a replication connection) and reap it."""
        stop_child(self._process, timeout_s)
        self._queue.close()
        self._queue.cancel_join_thread()

    def seconds_since_last_event(self) -> float:
        """Heartbeats count as events, as in the thread reader."""
        return time.monotonic() - self.last_event_monotonic

    def queue_depth(self) -> int:
        """Messages (batches, or ticks) the child sent and the applier has not taken."""
        try:
            return int(self._queue.qsize())
        except (NotImplementedError, OSError):  # no sem_getvalue (macOS), or closed
            return 0

    def next_batch(self, max_rows: int, wait_s: float) -> list[Chunk]:
        """The next batch the child read (it batches up to ``batch_max_rows``); waits
        ``wait_s`` for one. ``max_rows`` is the child's concern, set from the same config."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                kind, payload, stats = self._queue.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                return []
            self._note(stats)
            if kind == "error":
                raise payload
            if kind == "chunks":
                return [_chunk(flat) for flat in payload]

    def _note(self, stats: Stats) -> None:
        self.events_seen, self.last_event_monotonic, counts = stats
        self.decoder.rows_by_decoder = counts


def start_child(target: Callable[..., None], args: tuple[Any, ...], name: str) -> BaseProcess:
    """A reader child forked from this thread, running ``target(*args)``."""
    process = multiprocessing.get_context("fork").Process(target=target, args=args, name=name)
    process.daemon = True
    process.start()
    return process


def stop_child(process: BaseProcess, timeout_s: float = 5.0) -> None:
    """Kill a reader child (it holds nothing a clean stop would save) and reap it."""
    if process.pid is not None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.join(timeout_s)


def prepare_child(parents_ends: Iterable[Connection] = ()) -> None:
    """First steps of a forked reader child: close the parent's pipe ends it inherited (else
    a pipe never ends while the child lives: it would hold both sides), freeze what it
    inherited, die with the thread that forked it, take back the default signal handlers."""
    for end in parents_ends:
        end.close()
    # Everything inherited from the parent (its ticket-state cache, its references...) is
    # dead weight here: frozen, the child's garbage collections never walk it (nor copy
    # its pages by touching their reference counts).
    gc.freeze()
    _die_with_parent()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)  # the parent's handlers are not ours


def _child_main(config: SourceConfig, start: Position, out: Any, parent_pid: int) -> None:
    prepare_child()
    reader = BinlogReader(config, start, queue_max_rows=config.batch_max_rows)
    reader.start()
    try:
        _pump(reader, config.batch_max_rows, out, parent_pid)
    finally:
        reader.stop()


def _pump(reader: BinlogReader, max_rows: int, out: Any, parent_pid: int) -> None:
    last_sent = 0.0
    while True:
        try:
            batch = reader.next_batch(max_rows, TICK_S)
        except BaseException as exc:  # handed to the parent, which decides
            _send(out, ("error", portable(exc, "binlog reader"), _stats(reader)), parent_pid)
            return
        if batch or time.monotonic() - last_sent >= TICK_S:
            payload = [_flat(chunk) for chunk in batch] if batch else None
            _send(out, ("chunks" if batch else "tick", payload, _stats(reader)), parent_pid)
            last_sent = time.monotonic()


def _send(out: Any, message: tuple[str, Any, Stats], parent_pid: int) -> None:
    while True:
        try:
            out.put(message, timeout=1.0)
            return
        except queue.Full:
            if os.getppid() != parent_pid:
                raise SystemExit(0) from None  # orphaned: nobody will read this


def _stats(reader: BinlogReader) -> Stats:
    return reader.events_seen, reader.last_event_monotonic, dict(reader.decoder.rows_by_decoder)


def _flat(chunk: Chunk) -> tuple[Any, ...]:
    """The chunk as a tuple (a dataclass costs a function call each way to pickle); its row
    changes pickle through ``_reduce_row_change``."""
    commit = chunk.commit
    position = None if commit is None else (commit.log_file, commit.log_pos, commit.gtid)
    return chunk.changes, position, chunk.committed_at_s, chunk.ddl


def _chunk(flat: tuple[Any, ...]) -> Chunk:
    changes, position, committed_at_s, ddl = flat
    commit = None if position is None else Position(*position)
    return Chunk(changes, commit, committed_at_s, ddl)


def _reduce_row_change(change: RowChange) -> tuple[Any, tuple[Any, ...]]:
    """A row change unpickles through ``tuple.__new__``, in C: the named tuple's own
    ``__new__`` is a Python function, one call per row change in the parent. Its ``Op`` is
    pickled once per message (the pickler's memo), not once per change."""
    return _TUPLE_NEW, (RowChange, tuple(change))


_TUPLE_NEW = tuple.__new__
ForkingPickler.register(RowChange, _reduce_row_change)


def portable(exc: BaseException, reader: str) -> BaseException:
    """The exception itself when it pickles, else one that says what it was."""
    try:
        pickle.loads(pickle.dumps(exc))  # noqa: S301 - our own bytes, a round trip
    except Exception:  # any pickling failure
        return RuntimeError(f"{reader} failed: {exc!r}")
    return exc


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when the thread that forked it ends."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
