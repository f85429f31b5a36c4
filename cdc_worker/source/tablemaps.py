"""Table maps parsed once per distinct event, not once per transaction.

Every transaction carries a TableMapEvent per table it touches, and python-mysql-replication
parses each one in full (column metadata, names, charsets, enum values): on a stream of small
transactions that costs more than decoding the rows. The event's bytes determine the parse,
so a stream that opts in keeps the parsed fields by those bytes and reuses them, including the
same ``Table`` object, which also keeps the row decoder's compiled plan attached to it.

The library's ``TableMapEvent.__init__`` is wrapped once, process-wide; only streams whose
control connection carries a cache (``enable``) take the new path. Any other stream in the
process parses exactly as before.
"""

from __future__ import annotations

from typing import Any

from pymysqlreplication.event import BinLogEvent
from pymysqlreplication.row_event import TableMapEvent
from pymysqlreplication.table import Table

CACHE_ATTRIBUTE = "_cdc_table_map_cache"
CACHE_MAX_ENTRIES = 1024
# Fields BinLogEvent.__init__ sets from the event at hand; everything else comes from the parse.
PER_EVENT_FIELDS = frozenset(
    {"packet", "table_map", "event_type", "timestamp", "event_size", "_ctl_connection"}
)
_parse = TableMapEvent.__init__


class _ParsedTable(Table):  # type: ignore[misc]
    """A cached table map's Table: every row event reads ``data``, so it is built once."""

    @property
    def data(self) -> dict[str, Any]:
        built: dict[str, Any] | None = self.__dict__.get("_built_data")
        if built is None:
            built = self.__dict__["_built_data"] = super().data
        return built


def enable(ctl_connection: Any) -> None:
    """Cache the table maps of the stream whose control connection this is."""
    setattr(ctl_connection, CACHE_ATTRIBUTE, {})


def _cached_init(
    self: Any, from_packet: Any, event_size: int, table_map: Any, ctl_connection: Any, **kw: Any
) -> None:
    cache: dict[bytes, dict[str, Any]] | None = getattr(ctl_connection, CACHE_ATTRIBUTE, None)
    if cache is None:
        _parse(self, from_packet, event_size, table_map, ctl_connection, **kw)
        return
    raw = from_packet.packet
    key = bytes(raw._data[raw._position : raw._position + event_size])
    parsed = cache.get(key)
    if parsed is None:
        _parse(self, from_packet, event_size, table_map, ctl_connection, **kw)
        if self._processed:
            self.table_obj.__class__ = _ParsedTable
        if len(cache) >= CACHE_MAX_ENTRIES:
            cache.clear()
        cache[key] = {k: v for k, v in vars(self).items() if k not in PER_EVENT_FIELDS}
        return
    BinLogEvent.__init__(self, from_packet, event_size, table_map, ctl_connection, **kw)
    vars(self).update(parsed)
    if self._processed:
        table_map[self.table_id] = self.table_obj


def install() -> None:
    """Wrap the library's table map parsing (idempotent)."""
    TableMapEvent.__init__ = _cached_init


install()
