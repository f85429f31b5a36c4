"""Row events decoded by code compiled once per table map, beneath python-mysql-replication.

The library decodes every column through a chain of generic calls; that is the ceiling of
catch-up. Here, when a table map arrives, its column types become one straight-line Python
function (precompiled ``struct`` formats, slices of the event's buffer, no per-column
dispatch), cached by the columns' types and metadata. The library reads the protocol and
the first event of each table map; the events after it are read either by the library or,
once a plan exists, straight off their packets (``hotevents``), both decoding rows here.

Correctness never depends on coverage: a table with a column type not covered here, a partial
row image, an unexpected layout or any error while decoding falls back to the library's own
decoding of the same event (which has not been consumed). Decoding that does not end exactly
at the end of the event's rows counts as an error.
"""

from __future__ import annotations

import codecs
import datetime
import decimal
import struct
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from typing import Any

from pymysqlreplication.constants import FIELD_TYPE as T
from pymysqlreplication.row_event import RowsEvent, UpdateRowsEvent, WriteRowsEvent

from projections.changes import Op

Row = dict[str, Any]
Images = tuple[Row | None, Row | None]  # (before, after)
ImageFn = Callable[[bytes, int], tuple[Row, int]]

SPECIALIZED, LIBRARY = "specialized", "library"
_PLAN_ATTRIBUTE = "_cdc_row_plan"  # cached on the library's Table object (excluded from .data)
_FIXED_WIDTH = {T.TINY: 1, T.SHORT: 2, T.INT24: 3, T.LONG: 4, T.LONGLONG: 8, T.FLOAT: 4}
_FIXED_WIDTH |= {T.DOUBLE: 8, T.YEAR: 1, T.DATE: 3}
_STRUCTS = {
    (T.SHORT, False): "<h",
    (T.SHORT, True): "<H",
    (T.LONG, False): "<i",
    (T.LONG, True): "<I",
    (T.LONGLONG, False): "<q",
    (T.LONGLONG, True): "<Q",
    (T.FLOAT, False): "<f",
    (T.FLOAT, True): "<f",
    (T.DOUBLE, False): "<d",
    (T.DOUBLE, True): "<d",
}
_FSP_BYTES = (0, 1, 1, 2, 2, 3, 3)
_MICRO_SCALE = (1_000_000, 100_000, 10_000, 1_000, 100, 10, 1)  # 10 ** (6 - fsp)
_DECIMAL_DIGIT_BYTES = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)
_EPOCH = datetime.datetime(1970, 1, 1)
SUPPORTED_TYPES = frozenset(
    [*_FIXED_WIDTH, T.VARCHAR, T.STRING, T.BLOB, T.NEWDECIMAL, T.DATETIME2, T.TIMESTAMP2, T.ENUM]
)


class DecodeError(ValueError):
    """The compiled decoder disagrees with the event's layout; the library decodes it instead."""


class RowDecoder:
    """Decodes row events into (before, after) images; counts rows by decoder used.

    ``before_columns`` maps a table to the columns its update before-images need (the
    projector uses only keys of them); other tables' before-images are decoded whole. Only
    the specialized path applies it: the library always decodes whole images.
    """

    def __init__(
        self, specialized: bool = True, before_columns: Mapping[str, Collection[str]] = {}
    ) -> None:
        self.specialized = specialized
        self.before_columns = {t: frozenset(c) for t, c in before_columns.items()}
        self.rows_by_decoder: Counter[str] = Counter()
        self._plans: dict[tuple[Any, ...], _Plan | None] = {}

    def images(self, event: RowsEvent) -> list[Images]:
        """The event's rows as (before, after) images."""
        plan = self._plan(event) if self.specialized else None
        if plan is not None:
            try:
                images = plan.decode(event)
            except Exception:  # any surprise: the library decodes the untouched event
                images = None
            if images is not None:
                self.rows_by_decoder[SPECIALIZED] += len(images)
                return images
        images = library_images(event)
        self.rows_by_decoder[LIBRARY] += len(images)
        return images

    def plan_of(self, table: Any) -> _Plan | None:
        """The plan compiled for a library ``Table`` (None until an event of it was decoded
        here: compiling needs the event's columns)."""
        cached = getattr(table, _PLAN_ATTRIBUTE, None)
        return cached[1] if cached is not None and cached[0] is self else None

    def count_specialized(self, rows: int) -> None:
        """Rows decoded by a plan outside ``images`` (``hotevents``)."""
        self.rows_by_decoder[SPECIALIZED] += rows

    def _plan(self, event: RowsEvent) -> _Plan | None:
        table = event.table_map[event.table_id]
        cached = getattr(table, _PLAN_ATTRIBUTE, None)
        if cached is not None and cached[0] is self:
            return cached[1]  # type: ignore[no-any-return]
        signature = (event.table, *(_column_signature(c) for c in event.columns))
        if signature not in self._plans:
            self._plans[signature] = _compile(event, self.before_columns.get(event.table))
        plan = self._plans[signature]
        setattr(table, _PLAN_ATTRIBUTE, (self, plan))
        return plan


def library_images(event: RowsEvent) -> list[Images]:
    """The library's own decoding, as (before, after) images."""
    if isinstance(event, UpdateRowsEvent):
        return [(r["before_values"], r["after_values"]) for r in event.rows]
    if isinstance(event, WriteRowsEvent):
        return [(None, r["values"]) for r in event.rows]
    return [(r["values"], None) for r in event.rows]


class _Plan:
    """The compiled image functions of one table map."""

    def __init__(self, column_count: int, full: ImageFn, before: ImageFn) -> None:
        self.column_count = column_count
        self.full_bitmap = _full_bitmap(column_count)
        self.full, self.before = full, before

    def decode(self, event: RowsEvent) -> list[Images] | None:
        wrapper = event.packet
        if not event.complete or wrapper._BinLogPacketWrapper__data_buffer:
            return None
        if event.columns_present_bitmap != self.full_bitmap:
            return None  # a partial row image (binlog_row_image=MINIMAL/NOBLOB)
        raw = wrapper.packet
        buf, pos = raw._data, raw._position
        end = pos + event.event_size - wrapper.read_bytes
        if isinstance(event, UpdateRowsEvent):
            if event.columns_present_bitmap2 != self.full_bitmap:
                return None
            return _updates(buf, pos, end, self.before, self.full)
        return _singles(buf, pos, end, self.full, isinstance(event, WriteRowsEvent))


def row_images(plan: _Plan, buf: bytes, pos: int, end: int, op: Op) -> list[Images] | None:
    """A row event's rows read from its body by ``plan``: ``pos`` is where the column count
    starts, ``end`` where the rows end. None when the event is not laid out as the plan
    expects (another column count, a partial row image); raises ``DecodeError`` when the rows
    do not end exactly at ``end``."""
    if plan.column_count > 250 or buf[pos] != plan.column_count:  # one byte of count only
        return None
    bitmap = plan.full_bitmap
    width = len(bitmap)
    pos += 1
    if buf[pos : pos + width] != bitmap:
        return None
    pos += width
    if op is Op.UPDATE:
        if buf[pos : pos + width] != bitmap:
            return None
        return _updates(buf, pos + width, end, plan.before, plan.full)
    return _singles(buf, pos, end, plan.full, op is Op.INSERT)


def _singles(buf: bytes, pos: int, end: int, image: ImageFn, inserted: bool) -> list[Images]:
    """The rows of a write (inserted: (None, row)) or delete event ((row, None))."""
    rows: list[Row] = []
    while pos < end:
        row, pos = image(buf, pos)
        rows.append(row)
    if pos != end:
        raise DecodeError(f"decoded past the event's rows ({pos} > {end})")
    return [(None, row) for row in rows] if inserted else [(row, None) for row in rows]


def _updates(buf: bytes, pos: int, end: int, before: ImageFn, after: ImageFn) -> list[Images]:
    images: list[Images] = []
    while pos < end:
        old, pos = before(buf, pos)
        new, pos = after(buf, pos)
        images.append((old, new))
    if pos != end:
        raise DecodeError(f"decoded past the event's rows ({pos} > {end})")
    return images


def _full_bitmap(column_count: int) -> bytes:
    full, rest = divmod(column_count, 8)
    return b"\xff" * full + (bytes([(1 << rest) - 1]) if rest else b"")


def _column_signature(column: Any) -> tuple[Any, ...]:
    enum_values = getattr(column, "enum_values", None)
    return (
        column.type,
        column.name,
        column.unsigned,
        getattr(column, "max_length", None),
        getattr(column, "length_size", None),
        getattr(column, "fsp", None),
        getattr(column, "precision", None),
        getattr(column, "decimals", None),
        getattr(column, "size", None),
        column.character_set_name,
        tuple(enum_values) if enum_values else None,
    )


def _compile(event: RowsEvent, before_columns: frozenset[str] | None) -> _Plan | None:
    """Straight-line image functions for this table map, or None to leave it to the library."""
    columns = list(event.columns)
    if event.number_of_columns != len(columns) or not columns:
        return None
    if any(c.type not in SUPPORTED_TYPES or not c.name for c in columns):
        return None
    namespace = _namespace(columns)
    full = _image_function(columns, None, namespace)
    before = full if before_columns is None else _image_function(columns, before_columns, namespace)
    return _Plan(len(columns), full, before)


def _image_function(
    columns: list[Any], keep: frozenset[str] | None, namespace: dict[str, Any]
) -> ImageFn:
    """Source code of one image decoder, compiled: null bitmap, then each column in order."""
    bitmap_bytes = (len(columns) + 7) // 8
    lines = ["def image(buf, pos):"]
    lines += [f"    n{b} = buf[pos + {b}]" for b in range(bitmap_bytes)]
    lines.append(f"    pos += {bitmap_bytes}")
    kept = []
    for i, column in enumerate(columns):
        wanted = keep is None or column.name in keep
        null = f"n{i // 8} & {1 << (i % 8)}"
        if wanted:
            kept.append(i)
            lines += [f"    if {null}:", f"        v{i} = None", "    else:"]
            lines += [f"        {line}" for line in _value_code(i, column)]
        else:
            lines += [f"    if not {null}:"]
            lines += [f"        {line}" for line in _skip_code(i, column)]
    items = ", ".join(f"{columns[i].name!r}: v{i}" for i in kept)
    lines.append(f"    return {{{items}}}, pos")
    code = compile("\n".join(lines), f"<row decoder {columns[0].name}...>", "exec")
    scope = dict(namespace)
    exec(code, scope)  # noqa: S102 - source built above from column metadata only
    return scope["image"]  # type: ignore[no-any-return]


def _value_code(i: int, column: Any) -> list[str]:
    """Statements that set ``v{i}`` from ``buf`` at ``pos`` and advance ``pos``."""
    kind = column.type
    if kind == T.TINY:
        value = "buf[pos]" if column.unsigned else "_i8(buf, pos)[0]"
        return [f"v{i} = {value}", "pos += 1"]
    if kind == T.YEAR:
        return [f"v{i} = buf[pos] + 1900", "pos += 1"]
    if kind == T.INT24:
        signed = not column.unsigned
        return [f"v{i} = _from(buf[pos:pos + 3], 'little', signed={signed})", "pos += 3"]
    if (kind, column.unsigned) in _STRUCTS:
        width = _FIXED_WIDTH[kind]
        return [f"v{i} = _s{i}(buf, pos)[0]", f"pos += {width}"]
    if kind in (T.VARCHAR, T.STRING, T.BLOB):
        return [*_length_code(column), f"v{i} = {_text_code(i, column)}", "pos += length"]
    if kind == T.ENUM:
        index = "buf[pos]" if column.size == 1 else "_from(buf[pos:pos + 2], 'little')"
        value = f"_e{i}[{index}]" if column.enum_values else "None"
        return [f"v{i} = {value}", f"pos += {column.size}"]
    if kind == T.DATE:
        return [f"v{i} = _date(_from(buf[pos:pos + 3], 'little'))", "pos += 3"]
    if kind == T.NEWDECIMAL:
        return [f"v{i} = _decimal(buf, pos, _d{i})", f"pos += {_decimal_size(column)}"]
    fsp_bytes = _FSP_BYTES[column.fsp]
    if kind == T.DATETIME2:
        return [f"v{i} = _datetime2(buf, pos, _f{i})", f"pos += {5 + fsp_bytes}"]
    return [f"v{i} = _timestamp2(buf, pos, _f{i})", f"pos += {4 + fsp_bytes}"]  # TIMESTAMP2


def _skip_code(i: int, column: Any) -> list[str]:
    """Statements that advance ``pos`` past a column's value without decoding it."""
    kind = column.type
    if kind in (T.VARCHAR, T.STRING, T.BLOB):
        return [*_length_code(column), "pos += length"]
    if kind == T.INT24 or kind in _FIXED_WIDTH:
        return [f"pos += {_FIXED_WIDTH[kind]}"]
    if kind == T.ENUM:
        return [f"pos += {column.size}"]
    if kind == T.NEWDECIMAL:
        return [f"pos += {_decimal_size(column)}"]
    return [f"pos += {(5 if kind == T.DATETIME2 else 4) + _FSP_BYTES[column.fsp]}"]


def _length_code(column: Any) -> list[str]:
    size = column.length_size if column.type == T.BLOB else (2 if column.max_length > 255 else 1)
    if size == 1:
        return ["length = buf[pos]", "pos += 1"]
    return [f"length = _from(buf[pos:pos + {size}], 'little')", f"pos += {size}"]


def _text_code(i: int, column: Any) -> str:
    if _encoding(column) is None:  # binary, or a charset Python lacks: bytes, as the library
        return "buf[pos:pos + length] if length else ''"  # b"".decode("binary") is ""
    return f"buf[pos:pos + length].decode(_c{i})"


def _namespace(columns: list[Any]) -> dict[str, Any]:
    """Constants the compiled code refers to: structs, enum values, encodings, helpers."""
    namespace: dict[str, Any] = {
        "_from": int.from_bytes,
        "_i8": struct.Struct("<b").unpack_from,
        "_date": _date,
        "_decimal": _decimal,
        "_datetime2": _datetime2,
        "_timestamp2": _timestamp2,
    }
    for i, column in enumerate(columns):
        if (column.type, column.unsigned) in _STRUCTS:
            namespace[f"_s{i}"] = struct.Struct(
                _STRUCTS[(column.type, column.unsigned)]
            ).unpack_from
        if column.type == T.ENUM:
            namespace[f"_e{i}"] = column.enum_values
        if column.type in (T.VARCHAR, T.STRING, T.BLOB):
            namespace[f"_c{i}"] = _encoding(column)
        if column.type == T.NEWDECIMAL:
            namespace[f"_d{i}"] = _decimal_layout(column)
        if column.type in (T.DATETIME2, T.TIMESTAMP2):
            namespace[f"_f{i}"] = column.fsp
    return namespace


def _encoding(column: Any) -> str | None:
    """The Python codec of a text column as the library chooses it; None keeps bytes."""
    if column.character_set_name is None:
        return "utf-8"
    encoding = str(RowsEvent.charset_to_encoding(column.character_set_name))
    try:
        codecs.lookup(encoding)
    except LookupError:
        return None
    return encoding


# Values whose rules are not one expression: helpers that follow the library's reading exactly.


def _fsp_micro(buf: bytes, pos: int, fsp: int) -> int:
    """Fractional seconds after a temporal value, as microseconds (0 when absent)."""
    size = _FSP_BYTES[fsp]
    if not size:
        return 0
    micro = int.from_bytes(buf[pos : pos + size], "big", signed=True)
    if fsp % 2:
        micro = int(micro / 10)
    return micro * _MICRO_SCALE[fsp]


def _datetime2(buf: bytes, pos: int, fsp: int) -> datetime.datetime | None:
    packed = int.from_bytes(buf[pos : pos + 5], "big")
    micro = _fsp_micro(buf, pos + 5, fsp)
    year_month = packed >> 22 & 0x1FFFF
    fields = (packed >> 17 & 31, packed >> 12 & 31, packed >> 6 & 63, packed & 63)
    if micro > 999_999:  # the library's .replace(microsecond=...) raises: so do we
        raise ValueError(f"fractional seconds out of range: {micro}")
    try:  # the library: .replace(microsecond=micro) when micro > 0; one object fewer here
        return datetime.datetime(year_month // 13, year_month % 13, *fields, max(micro, 0))
    except ValueError:  # zero or invalid dates read as None
        return None


def _timestamp2(buf: bytes, pos: int, fsp: int) -> datetime.datetime:
    seconds = int.from_bytes(buf[pos : pos + 4], "big", signed=True)
    micro = _fsp_micro(buf, pos + 4, fsp)
    moment = _EPOCH + datetime.timedelta(seconds=seconds)  # naive UTC, as utcfromtimestamp
    return moment.replace(microsecond=micro) if micro > 0 else moment


def _date(packed: int) -> datetime.date | None:
    if packed == 0:
        return None
    year, month, day = packed >> 9 & 0x7FFF, packed >> 5 & 15, packed & 31
    if year == 0 or month == 0 or day == 0:
        return None
    return datetime.date(year, month, day)


def _decimal_layout(column: Any) -> tuple[int, int, int, int]:
    """(compressed integral digits, whole integral words, whole fraction words, compressed
    fraction digits) of a DECIMAL(precision, decimals)."""
    integral = column.precision - column.decimals
    return integral % 9, integral // 9, column.decimals // 9, column.decimals % 9


def _decimal_size(column: Any) -> int:
    lead, words, fraction_words, tail = _decimal_layout(column)
    digits = _DECIMAL_DIGIT_BYTES
    return digits[lead] + 4 * (words + fraction_words) + digits[tail]


def _decimal(buf: bytes, pos: int, layout: tuple[int, int, int, int]) -> decimal.Decimal:
    """MySQL's packed DECIMAL: big-endian groups of 9 digits, sign in the first bit."""
    lead, words, fraction_words, tail = layout
    size = _DECIMAL_DIGIT_BYTES[lead] + 4 * (words + fraction_words) + _DECIMAL_DIGIT_BYTES[tail]
    raw = bytearray(buf[pos : pos + size])
    negative = not raw[0] & 0x80
    raw[0] ^= 0x80
    mask = -1 if negative else 0
    parts, at = ["-" if negative else ""], 0

    def group(width: int) -> int:
        nonlocal at
        value = int.from_bytes(raw[at : at + width], "big", signed=True) ^ mask
        at += width
        return value

    if lead_size := _DECIMAL_DIGIT_BYTES[lead]:
        parts.append(str(group(lead_size)))
    parts += [f"{group(4):09d}" for _ in range(words)]
    parts.append(".")
    parts += [f"{group(4):09d}" for _ in range(fraction_words)]
    if tail_size := _DECIMAL_DIGIT_BYTES[tail]:
        parts.append(f"{group(tail_size):0{tail}d}")
    return decimal.Decimal("".join(parts))
