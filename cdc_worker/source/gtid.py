"""GTID positions, pure: is a checkpoint's position part of a server's history, and if not,
which transactions did the read model apply that the server never had?

MariaDB: a position is one ``domain-server-seq`` per replication domain (the last
transaction applied in each). A server's ``gtid_binlog_state`` holds the last sequence number
of every (domain, server) pair its binlog ever held; with ``gtid_strict_mode`` sequence numbers
only grow in a domain, so a GTID ``d-s-n`` is in the server's history when the state's entry
for (d, s) has a sequence number >= n. Transactions of s in d numbered above that entry were
lost (in a failover, to the primary that died with them).

MySQL: a position is a GTID set, ``uuid:1-5:7,uuid2:1-3`` (MySQL 8.3 adds tags:
``uuid:tag:1-5``); the checkpoint is in the server's history when its set is a subset of the
server's ``gtid_executed``, and what was lost is the difference.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TAG = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,31}")
Interval = tuple[int, int]  # first and last transaction number, inclusive


@dataclass(frozen=True, slots=True, order=True)
class MariadbGtid:
    """One MariaDB GTID: replication domain, originating server id, sequence number."""

    domain: int
    server: int
    seq: int

    def __str__(self) -> str:
        return f"{self.domain}-{self.server}-{self.seq}"


def parse_mariadb(position: str) -> list[MariadbGtid]:
    """``0-1-13,1-2-5`` -> its GTIDs; the empty string is the empty position."""
    gtids = []
    for part in position.replace("\n", "").split(","):
        if not part.strip():
            continue
        fields = part.strip().split("-")
        if len(fields) != 3 or not all(f.isdigit() for f in fields):
            raise ValueError(f"not a MariaDB GTID: {part.strip()!r}")
        gtids.append(MariadbGtid(int(fields[0]), int(fields[1]), int(fields[2])))
    return gtids


def mariadb_lost(checkpoint: str, binlog_state: str) -> list[str]:
    """The checkpoint's transactions missing from a server with ``binlog_state``, as ranges
    ``d-s-first..d-s-last`` (one per GTID of the checkpoint the server lacks); [] when the
    server holds all of them. A server that never saw server s in domain d lacks all of s's
    transactions there, as far as it can tell: the range then starts at 1."""
    last_seq = {(g.domain, g.server): g.seq for g in parse_mariadb(binlog_state)}
    lost = []
    for gtid in parse_mariadb(checkpoint):
        known = last_seq.get((gtid.domain, gtid.server), 0)
        if known < gtid.seq:
            first = MariadbGtid(gtid.domain, gtid.server, known + 1)
            lost.append(str(gtid) if first == gtid else f"{first}..{gtid}")
    return lost


class GtidSet:
    """A MySQL GTID set: per source (uuid, or uuid:tag), sorted disjoint intervals."""

    def __init__(self, intervals: dict[str, list[Interval]] | None = None) -> None:
        self.intervals: dict[str, list[Interval]] = {}
        for source, spans in (intervals or {}).items():
            for first, last in spans:
                self._add_span(source, first, last)

    @classmethod
    def parse(cls, text: str) -> GtidSet:
        """``uuid:1-5:7,uuid2:tag:1-3`` (whitespace and newlines allowed, as MySQL prints it)."""
        result = cls()
        for part in "".join(text.split()).split(","):
            if part:
                result._parse_part(part)
        return result

    def _parse_part(self, part: str) -> None:
        fields = part.split(":")
        source = fields[0].lower()
        for field in fields[1:]:
            if not field:
                raise ValueError(f"empty field in GTID set part {part!r}")
            if not field[:1].isdigit():  # a tag: the intervals after it are uuid:tag's
                if not TAG.fullmatch(field):
                    raise ValueError(f"not a GTID tag nor interval: {field!r} in {part!r}")
                source = f"{fields[0].lower()}:{field.lower()}"
                continue
            first, _, last = field.partition("-")
            if not first.isdigit() or not (last or first).isdigit():
                raise ValueError(f"not a GTID interval: {field!r} in {part!r}")
            self._add_span(source, int(first), int(last or first))

    def add(self, gtid: str) -> None:
        """Add one transaction, ``uuid:n`` or ``uuid:tag:n``."""
        source, _, number = gtid.lower().rpartition(":")
        self._add_span(source, int(number), int(number))

    def _add_span(self, source: str, first: int, last: int) -> None:
        if first < 1 or last < first:
            raise ValueError(f"not a GTID interval: {first}-{last}")
        merged: list[Interval] = []
        for span in self.intervals.get(source, []):
            if span[1] + 1 < first or last + 1 < span[0]:
                merged.append(span)
            else:
                first, last = min(first, span[0]), max(last, span[1])
        merged.append((first, last))
        self.intervals[source] = sorted(merged)

    def __sub__(self, other: GtidSet) -> GtidSet:
        result = GtidSet()
        for source, spans in self.intervals.items():
            left = _subtract(spans, other.intervals.get(source, []))
            if left:
                result.intervals[source] = left
        return result

    def __le__(self, other: GtidSet) -> bool:
        return not (self - other).intervals

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GtidSet) and self.intervals == other.intervals

    def __hash__(self) -> int:
        return hash(str(self))

    def __bool__(self) -> bool:
        return bool(self.intervals)

    def __str__(self) -> str:
        return ",".join(
            source + "".join(f":{a}" if a == b else f":{a}-{b}" for a, b in spans)
            for source, spans in sorted(self.intervals.items())
        )


def _subtract(spans: list[Interval], removed: list[Interval]) -> list[Interval]:
    left: list[Interval] = []
    for first, last in spans:
        for r_first, r_last in removed:
            if r_last < first or r_first > last:
                continue
            if r_first > first:
                left.append((first, r_first - 1))
            first = r_last + 1
            if first > last:
                break
        if first <= last:
            left.append((first, last))
    return left


def mysql_lost(checkpoint: str, gtid_executed: str) -> list[str]:
    """The checkpoint's transactions missing from a server's ``gtid_executed``."""
    missing = GtidSet.parse(checkpoint) - GtidSet.parse(gtid_executed)
    return [str(GtidSet({source: spans})) for source, spans in sorted(missing.intervals.items())]


def lost_transactions(checkpoint: str, server_state: str, is_mariadb: bool) -> list[str]:
    """What the checkpoint holds that the server's history lacks ([] when nothing)."""
    if is_mariadb:
        return mariadb_lost(checkpoint, server_state)
    return mysql_lost(checkpoint, server_state)


class MysqlGtidTracker:
    """The executed GTID set as the binlog stream advances (MySQL), starting from a position."""

    def __init__(self, initial: str | None) -> None:
        self.executed = GtidSet.parse(initial or "")

    def see(self, gtid: str) -> None:
        """Record a transaction's GTID. A MariaDB one (``d-s-n``: a MariaDB server read
        with ``is_mariadb`` off, by file and position) is no member of a MySQL set: ignored."""
        if ":" in gtid:
            self.executed.add(gtid)

    def __str__(self) -> str:
        return str(self.executed)
