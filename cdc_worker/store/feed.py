"""The change feed: one compact stream entry per atomic write of documents.

Every MULTI/EXEC that writes or removes documents in the live ``tickets`` hash also appends
one entry to ``keys.CHANGES`` (see docs/change-feed.md): the ids it upserted, the ids it
deleted, the filter indexes tickets left (so a filtered view knows what to remove) and the
source position of the commit. A swap of a whole generation appends one ``reset`` entry.
Ids are listed, never documents: a department rename touching 50,000 tickets costs about
6 bytes a ticket, and readers HGET the documents they want.

This module holds the entry's encoding and the resume check; it does no I/O itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from projections.projector import StoreOps

KIND_CHANGES = "changes"
KIND_RESET = "reset"
# The filter indexes whose departures an entry records (field names as in the indexes).
VIEW_FIELDS = ("department", "status", "assignee")


@dataclass(frozen=True, slots=True)
class FeedEntry:
    """One decoded stream entry."""

    entry_id: str
    kind: str
    position: str = ""
    upserted: tuple[int, ...] = ()
    deleted: tuple[int, ...] = ()
    # (field, value) -> ids that left that index in this write (moved away, or deleted).
    left: dict[tuple[str, int], frozenset[int]] = field(default_factory=dict)
    refs: tuple[tuple[str, int], ...] = ()  # references (re)written: renames, new ones

    @property
    def is_reset(self) -> bool:
        """True for the entry a generation swap writes: readers reload everything."""
        return self.kind == KIND_RESET


def entry_fields(ops: StoreOps, position: str) -> dict[str, str] | None:
    """The stream entry for a write of ``ops``, or None when it changes no document."""
    if not ops.docs_put and not ops.docs_deleted:
        return None
    fields = {"kind": KIND_CHANGES, "pos": position}
    fields["up"] = _ids(ops.docs_put)
    fields["del"] = _ids(ops.docs_deleted)
    left = [
        f"{name}:{value}={_ids(ids)}"
        for (name, value), ids in sorted(ops.index_removed.items())
        if name in VIEW_FIELDS and ids
    ]
    fields["left"] = ";".join(left)
    refs = {(kind, ref_id) for kind, entries in ops.refs_put.items() for ref_id in entries}
    refs |= {(kind, ref_id) for kind, ids in ops.refs_deleted.items() for ref_id in ids}
    fields["refs"] = ",".join(f"{kind}:{ref_id}" for kind, ref_id in sorted(refs))
    return fields


def _ids(ids: Iterable[int]) -> str:
    return ",".join(map(str, sorted(ids)))


def decode_entry(entry_id: bytes | str, fields: Mapping[bytes | str, bytes | str]) -> FeedEntry:
    """A ``FeedEntry`` from XREAD/XRANGE's reply for one entry."""
    text = {_str(k): _str(v) for k, v in fields.items()}
    left: dict[tuple[str, int], frozenset[int]] = {}
    for part in filter(None, text.get("left", "").split(";")):
        key, _, ids = part.partition("=")
        name, _, value = key.partition(":")
        left[(name, int(value))] = frozenset(_parse_ids(ids))
    refs = []
    for part in filter(None, text.get("refs", "").split(",")):
        kind, _, ref_id = part.partition(":")
        refs.append((kind, int(ref_id)))
    return FeedEntry(
        entry_id=_str(entry_id),
        kind=text.get("kind", KIND_CHANGES),
        position=text.get("pos", ""),
        upserted=_parse_ids(text.get("up", "")),
        deleted=_parse_ids(text.get("del", "")),
        left=left,
        refs=tuple(refs),
    )


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _parse_ids(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part)


def parse_entry_id(text: str) -> tuple[int, int]:
    """``"<ms>-<seq>"`` (or ``"<ms>"``, or ``"0"``) as a comparable pair; raises ValueError."""
    ms, dash, seq = text.strip().partition("-")
    if not ms.isdigit() or (dash and not seq.isdigit()) or len(ms) > 20 or len(seq) > 20:
        raise ValueError(f"not a stream entry id: {text[:40]!r}")
    pair = (int(ms), int(seq or 0))
    if pair[0] >= 2**64 or pair[1] >= 2**64:
        raise ValueError(f"not a stream entry id: {text[:40]!r}")
    return pair


def resume_is_trimmed(after: str, first_entry: str | None, trimmed_any: bool) -> bool:
    """True when entries after ``after`` may have been trimmed away.

    Trimming removes the oldest entries, so nothing after ``after`` is missing when nothing
    was ever trimmed or ``after`` is at or past the first entry still held. Otherwise the
    entry right after ``after`` may be gone: the reader must reload. (When ``after`` is the
    last entry trimmed this answer is cautious: a reload that was not strictly needed.)
    """
    if not trimmed_any:
        return False
    if first_entry is None:  # everything trimmed (cannot happen with XADD MAXLEN ~ N >= 1)
        return True
    return parse_entry_id(after) < parse_entry_id(first_entry)


def trimmed_from_info(after: str, info: Mapping[bytes | str, object]) -> bool:
    """``resume_is_trimmed`` from an XINFO STREAM reply (redis-py's dict); also True when
    ``after`` lies beyond the stream's last id (a stream recreated since, say by a flush)."""
    text = {_str(k): v for k, v in info.items()}
    last = text.get("last-generated-id")
    if isinstance(last, bytes | str) and parse_entry_id(after) > parse_entry_id(_str(last)):
        return True
    added = int(text.get("entries-added", 0))  # type: ignore[call-overload]
    length = int(text.get("length", 0))  # type: ignore[call-overload]
    first = text.get("first-entry")
    first_id = None
    if isinstance(first, list | tuple) and first:
        first_id = _str(first[0])
    return resume_is_trimmed(after, first_id, added > length)
