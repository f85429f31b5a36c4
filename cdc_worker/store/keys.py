"""Every Redis key the worker owns, defined here and nowhere else.

State keys carry a generation number: a resync builds generation N+1 beside the live
generation N and one atomic step makes it current (see docs/redis-keys.md).
"""

from __future__ import annotations

DOCUMENTS = "tickets"
"""Hash: ticket id -> document JSON. The read model; its name is a contract."""

PREFIX = "ticket-sync"
CHECKPOINT = f"{PREFIX}:checkpoint"
"""String: JSON checkpoint (generation, binlog file/pos, GTID) of the last applied commit."""
DEAD_LETTERS = f"{PREFIX}:dead-letters"
"""Stream: rows the projector could not place, capped."""
CHANGES = f"{PREFIX}:changes"
"""Stream: the change feed, one entry per atomic write of documents (ids upserted, deleted,
filter indexes left, source position) and a ``reset`` entry per generation swap; capped."""
HEARTBEAT = f"{PREFIX}:heartbeat"
"""String with TTL: the worker's liveness and position."""
LEADER = f"{PREFIX}:leader"
"""String with TTL: the lease of the active worker, ``host:pid:random``; standbys wait for it
to be released or to expire (see ``store.lease``)."""
GENERATIONS = f"{PREFIX}:generations"
"""Counter: every snapshot or resync takes a fresh generation number from it, so two builders
(say, two workers started at once) never write into the same keys."""


def generation_prefix(generation: int) -> str:
    """Prefix of every key of one generation."""
    return f"{PREFIX}:g{generation}:"


def states(generation: int) -> str:
    """Hash: ticket id -> ticket state JSON (row and children), soft-deleted ones included."""
    return f"{generation_prefix(generation)}states"


def refs(generation: int, kind: str) -> str:
    """Hash: reference id -> JSON, for kind in department, status, user, tag."""
    return f"{generation_prefix(generation)}ref:{kind}"


def link(generation: int, kind: str, ref_id: int) -> str:
    """Set: ids of tickets whose state refers to this reference (fan-out and cascades)."""
    return f"{generation_prefix(generation)}link:{kind}:{ref_id}"


def staging_documents(generation: int) -> str:
    """Hash: documents a snapshot builds before they are swapped into ``DOCUMENTS``."""
    return f"{generation_prefix(generation)}staging-tickets"


def staged_writes(generation: int) -> str:
    """Counter: snapshot chunks written into a generation; the swap checks none was lost."""
    return f"{generation_prefix(generation)}staged-writes"


def builder(generation: int) -> str:
    """String: a token of the process that took this generation number; only it may write
    the generation's snapshot chunks, swap it in or drop it (a Redis restart resets
    ``GENERATIONS``, so a builder from before the restart may hold a number taken again)."""
    return f"{generation_prefix(generation)}builder"


def retired_documents(generation: int) -> str:
    """Hash: the previous read model, renamed away during a swap and unlinked at once."""
    return f"{generation_prefix(generation)}retired-tickets"


def index(generation: int, field: str, value: int) -> str:
    """Sorted set of live tickets with ``field = value``: every score 0, members the ticket
    ids as ``index_encoding.index_member`` writes them, so ZRANGE BYLEX walks them in id
    order exactly (scores are doubles: ids above 2^53 would collide).

    Fields: all (value 0), status, department, requester, assignee (0 = unassigned), tag.
    The read API pages through these by id; the worker maintains them atomically with the
    documents.
    """
    return f"{generation_prefix(generation)}idx:{field}:{value}"


def index_format(generation: int) -> str:
    """String: ``index_encoding.INDEX_FORMAT`` of the generation's ``index`` sets, set when
    its number is taken. Absent: an older encoding, which the API refuses to list and the
    worker rebuilds."""
    return f"{generation_prefix(generation)}index-format"


def lookup(generation: int, kind: str) -> str:
    """Hash: user email -> user id (kind user-email), tag name -> tag id (kind tag-name)."""
    return f"{generation_prefix(generation)}lookup:{kind}"


RESYNC_QUEUE = f"{PREFIX}:resync:queue"
"""List: ids of resync jobs waiting for the worker (the CLI and the admin API push here)."""
RESYNC_CLAIMED = f"{PREFIX}:resync:claimed"
"""List: the job the active worker took off the queue and has not finished; a worker that
takes over runs it (again from its start, or from its last chunk for a full resync)."""
RESYNC_ACTIVE = f"{PREFIX}:resync:active"
"""String: id of the full resync the worker is running (survives a worker restart)."""


def resync_job(job_id: str) -> str:
    """String: JSON state of one resync job (kind, state, progress); expires a day after."""
    return f"{PREFIX}:resync:job:{job_id}"
