"""NASDAQ TotalView-ITCH 5.0: the message layout table, a zero-copy decoder and an encoder.

One table (``LAYOUTS``) describes all 23 message types of the ITCH 5.0 specification: type
letter, snake_case message name, size, and every field with its offset, size and kind. The
decoder and the encoder are both driven by it, through the table-driven kernels in
``hpte.kernels.md.itch``.

Stream format: ``[u16 big-endian length][message]`` repeated (NASDAQ's ``.NASDAQ_ITCH50``
files); ``.gz`` files are decompressed in streamed chunks, never to disk.

Decoded data (``ItchData``) is struct-of-arrays, one dict of numpy columns per message type,
keyed by type letter (``data["A"]`` or ``data["add_order"]``):

* ``seq`` : int64, the message's 0-based position in the stream (across all types);
* ``stock_locate``, ``tracking_number`` : uint16;
* ``timestamp`` : int64, nanoseconds since midnight (the spec's u48);
* u16 / u32 fields : uint16 / uint32; 8-byte integers (order reference numbers, match numbers,
  ``shares`` of cross trades, ...) : uint64;
* prices : int64 holding the integer on the wire (Price(4): 4 implied decimals, Price(8): 8
  implied decimals; a Price(8) above 2**63 - 1 keeps its bit pattern, i.e. reads negative);
* alpha fields : fixed-width bytes ``S<w>`` exactly as on the wire, space padding included.
  Padding is removed only at the Arrow/Parquet boundary (``itch_to_arrow``).

Bad input raises ``ItchError`` (a ValueError) naming the byte offset of the bad frame and the
problem: a truncated frame, a zero length, an unknown type, a length that is not the type's
size, a byte >= 0x80 in an alpha field. With ``keep_valid=True`` the messages before the bad
frame are returned and ``ItchData.stopped_at`` / ``ItchData.error`` say where and why.

``encode_itch`` is the inverse: decoding then encoding gives the input bytes back (the one
exception: NUL bytes ending an alpha field, which numpy treats as padding, come back as spaces;
NASDAQ pads with spaces).
"""
from __future__ import annotations

import gzip
import mmap
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hpte.kernels.md import itch as K

__all__ = [
    "BY_LETTER", "BY_NAME", "DEFAULT_CHUNK_BYTES", "LAYOUTS", "ItchData", "ItchError", "ItchField", "ItchLayout",
    "alpha_to_arrow", "concat_itch", "encode_itch", "iter_itch", "itch_to_arrow", "layout", "parse_itch",
    "read_itch", "read_itch_parquet", "warm_up", "write_itch", "write_itch_parquet",
]

Columns = dict[str, np.ndarray]


class ItchError(ValueError):
    """Bad ITCH input (or columns that cannot be encoded); ``offset`` is the byte offset of the
    bad frame's length prefix in the (decompressed) stream, or None when no offset applies."""

    def __init__(self, message: str, offset: int | None = None):
        super().__init__(message)
        self.offset = offset


# ---------------------------------------------------------------------------------------------
# The layout table (ITCH 5.0 specification, section 1; every message starts with the 11-byte
# header: type alpha(1), stock locate u16, tracking number u16, timestamp u48)
# ---------------------------------------------------------------------------------------------
# Field codes: aN = alpha of N bytes, u16/u32/u64 = unsigned big-endian integer,
# ts48 = 6-byte timestamp (ns since midnight), p4 = Price(4), p8 = Price(8).
_CODES = {
    "a1": (K.K_ALPHA, 1), "a2": (K.K_ALPHA, 2), "a4": (K.K_ALPHA, 4), "a8": (K.K_ALPHA, 8),
    "u16": (K.K_U16, 2), "u32": (K.K_U32, 4), "u64": (K.K_U64, 8),
    "ts48": (K.K_TS48, 6), "p4": (K.K_PRICE4, 4), "p8": (K.K_PRICE8, 8),
}
_HEADER = "stock_locate u16, tracking_number u16, timestamp ts48"

# (letter, snake_case name, message size in bytes including the type byte, body fields)
_TABLE = (
    ("S", "system_event", 12, "event_code a1"),
    ("R", "stock_directory", 39,
     "stock a8, market_category a1, financial_status_indicator a1, round_lot_size u32,"
     " round_lots_only a1, issue_classification a1, issue_sub_type a2, authenticity a1,"
     " short_sale_threshold_indicator a1, ipo_flag a1, luld_reference_price_tier a1, etp_flag a1,"
     " etp_leverage_factor u32, inverse_indicator a1"),
    ("H", "stock_trading_action", 25, "stock a8, trading_state a1, reserved a1, reason a4"),
    ("Y", "reg_sho_restriction", 20, "stock a8, reg_sho_action a1"),
    ("L", "market_participant_position", 26,
     "mpid a4, stock a8, primary_market_maker a1, market_maker_mode a1, market_participant_state a1"),
    ("V", "mwcb_decline_level", 35, "level_1 p8, level_2 p8, level_3 p8"),
    ("W", "mwcb_status", 12, "breached_level a1"),
    ("K", "ipo_quoting_period_update", 28,
     "stock a8, ipo_quotation_release_time u32, ipo_quotation_release_qualifier a1, ipo_price p4"),
    ("J", "luld_auction_collar", 35,
     "stock a8, auction_collar_reference_price p4, upper_auction_collar_price p4,"
     " lower_auction_collar_price p4, auction_collar_extension u32"),
    ("h", "operational_halt", 21, "stock a8, market_code a1, operational_halt_action a1"),
    ("A", "add_order", 36,
     "order_reference_number u64, buy_sell_indicator a1, shares u32, stock a8, price p4"),
    ("F", "add_order_mpid", 40,
     "order_reference_number u64, buy_sell_indicator a1, shares u32, stock a8, price p4,"
     " attribution a4"),
    ("E", "order_executed", 31, "order_reference_number u64, executed_shares u32, match_number u64"),
    ("C", "order_executed_with_price", 36,
     "order_reference_number u64, executed_shares u32, match_number u64, printable a1,"
     " execution_price p4"),
    ("X", "order_cancel", 23, "order_reference_number u64, cancelled_shares u32"),
    ("D", "order_delete", 19, "order_reference_number u64"),
    ("U", "order_replace", 35,
     "original_order_reference_number u64, new_order_reference_number u64, shares u32, price p4"),
    ("P", "trade", 44,
     "order_reference_number u64, buy_sell_indicator a1, shares u32, stock a8, price p4,"
     " match_number u64"),
    ("Q", "cross_trade", 40, "shares u64, stock a8, cross_price p4, match_number u64, cross_type a1"),
    ("B", "broken_trade", 19, "match_number u64"),
    ("I", "noii", 50,
     "paired_shares u64, imbalance_shares u64, imbalance_direction a1, stock a8, far_price p4,"
     " near_price p4, current_reference_price p4, cross_type a1, price_variation_indicator a1"),
    ("N", "rpii", 20, "stock a8, interest_flag a1"),
    ("O", "direct_listing_with_capital_raise_price_discovery", 48,
     "stock a8, open_eligibility_status a1, minimum_allowable_price p4,"
     " maximum_allowable_price p4, near_execution_price p4, near_execution_time u64,"
     " lower_price_range_collar p4, upper_price_range_collar p4"),
)

_NUMPY_DTYPES = {
    K.K_U16: np.dtype(np.uint16), K.K_U32: np.dtype(np.uint32), K.K_U64: np.dtype(np.uint64),
    K.K_TS48: np.dtype(np.int64), K.K_PRICE4: np.dtype(np.int64), K.K_PRICE8: np.dtype(np.int64),
}
_ARROW_TYPES = {
    K.K_ALPHA: pa.string(), K.K_U16: pa.uint16(), K.K_U32: pa.uint32(), K.K_U64: pa.uint64(),
    K.K_TS48: pa.int64(), K.K_PRICE4: pa.int64(), K.K_PRICE8: pa.int64(),
}
# Storage classes of the flat decode/encode buffers.
_C_U16, _C_U32, _C_I64, _C_ALPHA = 0, 1, 2, 3
_CLASS = {K.K_U16: _C_U16, K.K_U32: _C_U32, K.K_U64: _C_I64, K.K_TS48: _C_I64,
          K.K_PRICE4: _C_I64, K.K_PRICE8: _C_I64, K.K_ALPHA: _C_ALPHA}


@dataclass(frozen=True)
class ItchField:
    """One field: snake_case name, byte offset in the message (type byte = 0), size, kind
    (``hpte.kernels.md.itch.K_*``) and the spec code (``a8``, ``u32``, ``ts48``, ``p4``, ...)."""

    name: str
    offset: int
    size: int
    kind: int
    code: str

    @property
    def dtype(self) -> np.dtype:
        """The numpy dtype of the decoded column."""
        return np.dtype(f"S{self.size}") if self.kind == K.K_ALPHA else _NUMPY_DTYPES[self.kind]

    @property
    def arrow_type(self) -> pa.DataType:
        """The Arrow type of the column in Parquet output (alpha: string without padding)."""
        return _ARROW_TYPES[self.kind]


@dataclass(frozen=True)
class ItchLayout:
    """One message type: letter, snake_case name, size in bytes (type byte included, length
    prefix excluded) and its fields (the header fields first; the type byte is implicit)."""

    letter: str
    name: str
    size: int
    fields: tuple[ItchField, ...]

    @property
    def code(self) -> int:
        """The type byte."""
        return ord(self.letter)

    @property
    def columns(self) -> tuple[str, ...]:
        """Decoded column names: ``seq`` then the fields."""
        return ("seq",) + tuple(f.name for f in self.fields)

    def field(self, name: str) -> ItchField:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"{self.name} ({self.letter!r}) has no field {name!r}")

    def arrow_schema(self) -> pa.Schema:
        """The Arrow schema of this type's Parquet file."""
        return pa.schema([pa.field("seq", pa.int64(), nullable=False)]
                         + [pa.field(f.name, f.arrow_type, nullable=False) for f in self.fields])


def _build_layouts() -> tuple[ItchLayout, ...]:
    out = []
    for letter, name, size, body in _TABLE:
        fields, off = [], 1
        for item in (_HEADER + ", " + body).split(","):
            fname, code = item.split()
            kind, fsize = _CODES[code]
            fields.append(ItchField(fname, off, fsize, kind, code))
            off += fsize
        if off != size:  # the table's stated size is a check on the field list
            raise AssertionError(f"ITCH layout {letter!r}: fields add up to {off} bytes, not {size}")
        out.append(ItchLayout(letter, name, size, tuple(fields)))
    return tuple(out)


LAYOUTS: tuple[ItchLayout, ...] = _build_layouts()
"""All 23 ITCH 5.0 message layouts, in the specification's order."""
BY_LETTER: dict[str, ItchLayout] = {lay.letter: lay for lay in LAYOUTS}
BY_NAME: dict[str, ItchLayout] = {lay.name: lay for lay in LAYOUTS}


def layout(key: str) -> ItchLayout:
    """The layout of a message type given its letter (``"A"``) or snake_case name (``"add_order"``)."""
    lay = BY_LETTER.get(key) or BY_NAME.get(key)
    if lay is None:
        raise ItchError(f"unknown ITCH message type {key!r} (a letter such as 'A' or a name such as 'add_order')")
    return lay


# Flattened descriptors for the kernels, in type-byte order.
def _build_descriptors():
    size_by_type = np.zeros(256, np.int64)
    f_lo = np.zeros(256, np.int64)
    f_hi = np.zeros(256, np.int64)
    rows = []  # (layout, field)
    for lay in sorted(LAYOUTS, key=lambda x: x.code):
        size_by_type[lay.code] = lay.size
        f_lo[lay.code] = len(rows)
        rows.extend((lay, f) for f in lay.fields)
        f_hi[lay.code] = len(rows)
    f_off = np.array([f.offset for _, f in rows], np.int64)
    f_size = np.array([f.size for _, f in rows], np.int64)
    f_kind = np.array([f.kind for _, f in rows], np.int64)
    f_type = np.array([lay.code for lay, _ in rows], np.int64)
    f_class = np.array([_CLASS[f.kind] for _, f in rows], np.int64)
    f_width = np.where(f_kind == K.K_ALPHA, f_size, 1)  # buffer elements per row
    return size_by_type, f_lo, f_hi, f_off, f_size, f_kind, f_type, f_class, f_width


(_SIZE_BY_TYPE, _F_LO, _F_HI, _F_OFF, _F_SIZE, _F_KIND, _F_TYPE, _F_CLASS,
 _F_WIDTH) = _build_descriptors()
_MIN_FRAME = 2 + min(lay.size for lay in LAYOUTS)
for _a in (_SIZE_BY_TYPE, _F_LO, _F_HI, _F_OFF, _F_SIZE, _F_KIND):
    _a.flags.writeable = False


def _bases(counts: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Where each field's column starts in its class buffer, and the size of each buffer."""
    contrib = counts[_F_TYPE] * _F_WIDTH
    base = np.zeros(len(contrib), np.int64)
    totals = []
    for c in range(4):
        m = _F_CLASS == c
        v = contrib[m]
        base[m] = np.cumsum(v) - v
        totals.append(int(v.sum()))
    return base, totals


def _empty_tables() -> dict[str, Columns]:
    return {lay.letter: {"seq": np.empty(0, np.int64), **{f.name: np.empty(0, f.dtype) for f in lay.fields}}
            for lay in LAYOUTS}


# ---------------------------------------------------------------------------------------------
# Decoded data
# ---------------------------------------------------------------------------------------------
@dataclass
class ItchData:
    """Decoded ITCH messages: one dict of SoA numpy columns per message type.

    Attributes
    ----------
    tables : dict letter -> dict column -> array, for all 23 types (empty arrays for absent
        ones); columns as ``ItchLayout.columns``.
    messages : number of messages decoded.
    bytes : bytes of the (decompressed) stream those messages occupy, length prefixes included.
    stopped_at : with ``keep_valid``, the offset of the first bad frame; None when all was valid.
    error : with ``keep_valid``, the problem found at ``stopped_at`` (same text as the ItchError).
    """

    tables: dict[str, Columns]
    messages: int
    bytes: int
    stopped_at: int | None = None
    error: str | None = None

    def __getitem__(self, key: str) -> Columns:
        return self.tables[layout(key).letter]

    @property
    def counts(self) -> dict[str, int]:
        """Messages per type letter, for the types present, in specification order."""
        out = {}
        for lay in LAYOUTS:
            n = len(self.tables[lay.letter]["seq"])
            if n:
                out[lay.letter] = n
        return out

    def to_arrow(self, key: str) -> pa.Table:
        """One type's columns as an Arrow table (alpha fields as strings without padding)."""
        return itch_to_arrow(self[key], key)


# ---------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------
def _frame_problem(buf: np.ndarray, pos: int, stop: int, status: int, note: str = "") -> str:
    rem = stop - pos
    if status == K.ST_TRUNCATED:
        if rem < 2:
            return f"truncated frame: {rem} byte(s) left where a 2-byte length prefix starts{note}"
        length = (int(buf[pos]) << 8) | int(buf[pos + 1])
        if rem < 3:
            return f"truncated frame: length prefix {length} but no message bytes follow{note}"
        lay = BY_LETTER[chr(buf[pos + 2])]
        return (f"truncated {lay.name} ({lay.letter!r}) message: length prefix {length} but only "
                f"{rem - 2} byte(s) remain{note}")
    if status == K.ST_ZERO_LENGTH:
        return "length prefix is 0 (an empty message)"
    length = (int(buf[pos]) << 8) | int(buf[pos + 1])
    t = int(buf[pos + 2])
    if status == K.ST_UNKNOWN_TYPE:
        shown = repr(chr(t)) if 0x20 <= t < 0x7F else "not printable"
        return f"unknown message type byte 0x{t:02x} ({shown}), length prefix {length}"
    lay = BY_LETTER[chr(t)]
    return f"length prefix {length} disagrees with the {lay.name} ({lay.letter!r}) message size {lay.size}"


def _alpha_problem(buf: np.ndarray, msg: int) -> str:
    """Describe the first non-ASCII alpha byte of the message whose type byte is at ``msg``."""
    lay = BY_LETTER[chr(buf[msg])]
    for f in lay.fields:
        if f.kind == K.K_ALPHA:
            for k in range(f.size):
                b = int(buf[msg + f.offset + k])
                if b >= 0x80:
                    return (f"non-ASCII byte 0x{b:02x} in alpha field {f.name!r} of a {lay.name} "
                            f"({lay.letter!r}) message (byte {k} of the field)")
    return f"non-ASCII byte in an alpha field of a {lay.name} ({lay.letter!r}) message"  # pragma: no cover


def _decode_frames(buf: np.ndarray, start: int, types: np.ndarray, n: int, counts: np.ndarray, seq0: int):
    """Decode ``n`` validated frames from ``start``. Returns (tables, bad) where bad is None
    or (offset of the type byte, seq) of the first message with a non-ASCII alpha byte; the
    tables then hold only the messages before it."""
    row_lo = np.cumsum(counts) - counts
    base, totals = _bases(counts)
    seq = np.empty(n, np.int64)
    u16 = np.empty(totals[_C_U16], np.uint16)
    u32 = np.empty(totals[_C_U32], np.uint32)
    i64 = np.empty(totals[_C_I64], np.int64)
    alpha = np.empty(totals[_C_ALPHA], np.uint8)
    bad_index = int(K.decode_frames_cpu(buf, start, types, n, seq0, _SIZE_BY_TYPE, _F_LO, _F_HI, _F_OFF,
                                        _F_SIZE, _F_KIND, base, row_lo, seq, u16, u32, i64, alpha, K.WINDOW))
    tables: dict[str, Columns] = {}
    for lay in LAYOUTS:
        t = lay.code
        c = int(counts[t])
        lo = int(row_lo[t])
        cols: Columns = {"seq": seq[lo:lo + c]}
        for j, f in zip(range(int(_F_LO[t]), int(_F_HI[t])), lay.fields):
            b = int(base[j])
            if f.kind == K.K_ALPHA:
                cols[f.name] = alpha[b:b + c * f.size].view(f"S{f.size}")
            elif f.kind == K.K_U16:
                cols[f.name] = u16[b:b + c]
            elif f.kind == K.K_U32:
                cols[f.name] = u32[b:b + c]
            elif f.kind == K.K_U64:
                cols[f.name] = i64[b:b + c].view(np.uint64)
            else:
                cols[f.name] = i64[b:b + c]
        tables[lay.letter] = cols
    if bad_index < 0:
        return tables, None
    bad_seq = seq0 + bad_index
    for letter, cols in tables.items():  # keep only the messages before the bad one
        keep = int(np.searchsorted(cols["seq"], bad_seq))
        tables[letter] = {name: a[:keep] for name, a in cols.items()}
    return tables, (int(K.frame_offset_cpu(buf, start, bad_index)) + 2, bad_seq)


def _readonly(a: np.ndarray) -> np.ndarray:
    if a.flags.writeable:
        a = a.view()
        a.flags.writeable = False
    return a


def _parse_window(buf: np.ndarray, start: int, stop: int, final: bool, base: int, seq0: int,
                  keep_valid: bool, label: str, note: str = "") -> tuple[ItchData, int, bool]:
    """Parse the frames of ``buf[start:stop]``; ``base`` is the stream offset of ``buf[0]``.

    Returns (data, next position, done). A frame cut by ``stop`` is left for the next window
    unless ``final``."""
    counts = np.zeros(256, np.int64)
    types = np.empty((stop - start) // _MIN_FRAME + 1, np.uint8)  # valid frames are >= 14 bytes
    n, pos, status = K.scan_frames_cpu(buf, start, stop, _SIZE_BY_TYPE, counts, types)
    n, pos, status = int(n), int(pos), int(status)
    err_pos = problem = None
    if status != K.ST_OK and (final or status != K.ST_TRUNCATED):
        err_pos, problem = pos, _frame_problem(buf, pos, stop, status, note)
    tables, bad = _decode_frames(buf, start, types, n, counts, seq0)
    if bad is not None:
        msg, bad_seq = bad
        err_pos, problem = msg - 2, _alpha_problem(buf, msg)
        n, pos = bad_seq - seq0, msg - 2
    if err_pos is not None:
        text = f"{label}: offset {base + err_pos}: {problem}"
        if not keep_valid:
            raise ItchError(text, offset=base + err_pos)
        return ItchData(tables, n, err_pos - start, base + err_pos, text), err_pos, True
    return ItchData(tables, n, pos - start), pos, final and pos == stop


def parse_itch(data, *, keep_valid: bool = False, label: str = "<bytes>") -> ItchData:
    """Decode an in-memory ITCH stream (bytes, bytearray, memoryview or a 1-D uint8 array),
    without copying it. Raises ItchError on bad input unless ``keep_valid``."""
    if isinstance(data, np.ndarray):
        if data.ndim != 1 or data.dtype != np.uint8:
            raise ItchError(f"{label}: expected a 1-D uint8 array, got {data.dtype} of shape {data.shape}")
        buf = np.ascontiguousarray(data)
    else:
        buf = np.frombuffer(data, dtype=np.uint8)
    buf = _readonly(buf)
    out, _, _ = _parse_window(buf, 0, len(buf), True, 0, 0, keep_valid, label)
    return out


def warm_up() -> None:
    """Compile (or load from numba's cache) the decode and encode kernels, so that a later
    timing measures decoding only."""
    tables = {lay.letter: {"seq": np.array([i]), **{f.name: (np.array([b" " * f.size], dtype=f.dtype)
                                                              if f.kind == K.K_ALPHA else np.zeros(1, f.dtype))
                                                    for f in lay.fields}}
              for i, lay in enumerate(LAYOUTS)}
    parse_itch(encode_itch(tables))


DEFAULT_CHUNK_BYTES = 64 << 20
_MIN_CHUNK_BYTES = 4096


def _is_gzip(p: Path) -> bool:
    return p.suffix.lower() == ".gz"


_MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22)  # Linux >= 5.14


def _phys_bytes() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return 0


class _Mapped:
    """A read-only memory map of a file as a uint8 array (an empty array for an empty file).

    Files up to a quarter of physical memory are mapped with MAP_POPULATE (page tables filled
    in one system call instead of one page fault per 64 KiB); larger ones are read with
    MADV_SEQUENTIAL and populated window by window (``populate``)."""

    def __init__(self, p: Path):
        self._mm = None
        self.whole = False
        with open(p, "rb") as f:
            size = f.seek(0, 2)
            if size == 0:
                self.array = _readonly(np.empty(0, np.uint8))
                return
            flags = mmap.MAP_SHARED
            if hasattr(mmap, "MAP_POPULATE") and size <= _phys_bytes() // 4:
                flags |= mmap.MAP_POPULATE
                self.whole = True
            self._mm = mmap.mmap(f.fileno(), 0, flags=flags, prot=mmap.PROT_READ)
        if not self.whole and hasattr(self._mm, "madvise"):
            self._mm.madvise(mmap.MADV_SEQUENTIAL)
        self.array = np.frombuffer(self._mm, dtype=np.uint8)

    def populate(self, start: int, stop: int) -> None:
        """Ask the kernel to map ``[start, stop)`` now (best effort)."""
        if self.whole or self._mm is None or not hasattr(self._mm, "madvise"):
            return
        lo = start - start % mmap.PAGESIZE
        try:
            self._mm.madvise(_MADV_POPULATE_READ, lo, min(stop, len(self._mm)) - lo)
        except (OSError, ValueError):  # pragma: no cover - older kernels
            self.whole = True  # do not try again

    def close(self) -> None:
        self.array = None
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:  # pragma: no cover - someone still holds a view; the GC closes it
                pass
            self._mm = None


def _check_file(path) -> Path:
    p = Path(path)
    if not p.exists():
        raise ItchError(f"{p}: no such file")
    if not p.is_file():
        raise ItchError(f"{p}: not a regular file")
    return p


def iter_itch(path, *, keep_valid: bool = False, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[ItchData]:
    """Decode an ITCH file (plain, memory-mapped; or ``.gz``, decompressed in chunks) as a
    sequence of ItchData batches of about ``chunk_bytes`` of stream each.

    ``seq`` runs on across batches; frames spanning a chunk boundary are decoded whole in the
    next batch. On bad input: ItchError, or with ``keep_valid`` a last batch with ``stopped_at``
    and ``error`` set.
    """
    p = _check_file(path)
    if chunk_bytes < _MIN_CHUNK_BYTES:
        raise ItchError(f"chunk_bytes must be at least {_MIN_CHUNK_BYTES}, got {chunk_bytes}")
    if _is_gzip(p):
        yield from _iter_gzip(p, keep_valid, chunk_bytes)
        return
    m = _Mapped(p)
    try:
        buf = m.array
        n = len(buf)
        pos = seq = 0
        while True:
            stop = min(pos + chunk_bytes, n)
            m.populate(pos, stop)
            part, pos, done = _parse_window(buf, pos, stop, stop == n, 0, seq, keep_valid, str(p))
            seq += part.messages
            yield part
            if done:
                return
    finally:
        buf = None
        m.close()


_GZ_READ = 4 << 20  # compressed bytes read at a time


def _gunzip(f, want):
    """Decompress a gzip file object (several members allowed, zero padding between them
    skipped, as gzip does); ``want()`` says how many bytes the caller can take next. Yields
    pieces; raises EOFError when the stream ends inside a member, zlib.error on bad data
    (zlib checks each member's CRC-32 and length)."""
    d = None
    data = b""
    while True:
        if not data:
            data = f.read(_GZ_READ)
            if not data:
                if d is not None:
                    raise EOFError("the compressed stream ends early")
                return
        if d is None:
            data = data.lstrip(b"\0")
            if not data:
                continue
            d = zlib.decompressobj(wbits=31)
        piece = d.decompress(data, want())
        if d.eof:
            data, d = d.unused_data, None
        else:
            data = d.unconsumed_tail
        if piece:
            yield piece


def _iter_gzip(p: Path, keep_valid: bool, chunk_bytes: int) -> Iterator[ItchData]:
    label = f"{p} (decompressed)"
    buf = np.empty(chunk_bytes + 64, np.uint8)
    ro = _readonly(buf)
    fill = base = seq = 0
    eof = False
    gz_problem = None
    with open(p, "rb") as f:
        pieces = _gunzip(f, lambda: chunk_bytes - fill)
        while True:
            while fill < chunk_bytes and not eof:
                try:
                    piece = next(pieces)
                except StopIteration:
                    eof = True
                    break
                except (EOFError, zlib.error) as e:
                    gz_problem = str(e) if isinstance(e, EOFError) else f"bad gzip data ({e})"
                    eof = True
                    break
                buf[fill:fill + len(piece)] = np.frombuffer(piece, np.uint8)
                fill += len(piece)
            note = f"; {gz_problem}" if gz_problem else ""
            part, pos, done = _parse_window(ro, 0, fill, eof, base, seq, keep_valid, label, note)
            if done and part.error is None and gz_problem is not None:
                text = f"{label}: offset {base + fill}: {gz_problem}"
                if not keep_valid:
                    raise ItchError(text, offset=base + fill)
                part.stopped_at, part.error = base + fill, text
            seq += part.messages
            yield part
            if done:
                return
            rest = fill - pos
            buf[:rest] = buf[pos:fill].copy()
            base += pos
            fill = rest


def concat_itch(parts: list[ItchData]) -> ItchData:
    """Concatenate decoded batches (in stream order) into one ItchData."""
    if not parts:
        return ItchData(_empty_tables(), 0, 0)
    if len(parts) == 1:
        return parts[0]
    tables = {lay.letter: {c: np.concatenate([q.tables[lay.letter][c] for q in parts]) for c in lay.columns}
              for lay in LAYOUTS}
    last = parts[-1]
    return ItchData(tables, sum(q.messages for q in parts), sum(q.bytes for q in parts),
                    last.stopped_at, last.error)


def read_itch(path, *, keep_valid: bool = False, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> ItchData:
    """Decode a whole ITCH file into ItchData.

    A plain file is memory-mapped and decoded in one pass (no copy of the file, no
    concatenation); a ``.gz`` file is decompressed in ``chunk_bytes`` chunks and the batches
    concatenated. Raises ItchError on bad input unless ``keep_valid``.
    """
    p = _check_file(path)
    if _is_gzip(p):
        return concat_itch(list(_iter_gzip(p, keep_valid, max(chunk_bytes, _MIN_CHUNK_BYTES))))
    m = _Mapped(p)
    try:
        buf = m.array
        out, _, _ = _parse_window(buf, 0, len(buf), True, 0, 0, keep_valid, str(p))
        return out
    finally:
        buf = None
        m.close()


# ---------------------------------------------------------------------------------------------
# Arrow / Parquet boundary
# ---------------------------------------------------------------------------------------------
def alpha_to_arrow(a: np.ndarray) -> pa.StringArray:
    """A fixed-width bytes column (``S<w>``) as Arrow strings without the right padding
    (trailing spaces and NULs removed), vectorised."""
    a = np.ascontiguousarray(a)
    n, w = len(a), a.dtype.itemsize
    m = a.view(np.uint8).reshape(n, w)
    keep = (m != 0x20) & (m != 0)
    rev = keep[:, ::-1]
    lengths = np.where(rev.any(axis=1), w - rev.argmax(axis=1), 0)
    data = m[np.arange(w) < lengths[:, None]]
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(data)))


def itch_to_arrow(cols: Mapping[str, np.ndarray], key: str) -> pa.Table:
    """One type's decoded columns as an Arrow table of ``layout(key).arrow_schema()``."""
    lay = layout(key)
    schema = lay.arrow_schema()
    arrays = [pa.array(np.ascontiguousarray(cols["seq"]), type=pa.int64())]
    for f in lay.fields:
        a = cols[f.name]
        arrays.append(alpha_to_arrow(a) if f.kind == K.K_ALPHA else pa.array(np.ascontiguousarray(a), type=f.arrow_type))
    return pa.Table.from_arrays(arrays, schema=schema)


def write_itch_parquet(data: ItchData, out_dir) -> dict[str, Path]:
    """Write one Parquet file per message type present, ``<out_dir>/<snake_name>.parquet``.
    Returns letter -> path."""
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    out = {}
    for letter in data.counts:
        lay = BY_LETTER[letter]
        p = d / f"{lay.name}.parquet"
        pq.write_table(data.to_arrow(letter), p)
        out[letter] = p
    return out


def read_itch_parquet(in_dir) -> dict[str, pa.Table]:
    """Read the Parquet files ``write_itch_parquet`` wrote (snake name -> table), e.g. to
    re-encode them with ``encode_itch``."""
    d = Path(in_dir)
    return {p.stem: pq.read_table(p) for p in sorted(d.glob("*.parquet")) if p.stem in BY_NAME}


# ---------------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------------
_INT_BITS = {K.K_U16: 16, K.K_U32: 32, K.K_TS48: 48, K.K_PRICE4: 32}


def _as_numpy(a):
    if isinstance(a, (pa.Array, pa.ChunkedArray)):
        if a.null_count:
            raise ValueError(f"{a.null_count} null values")
        return a
    return np.asarray(a)


def _first_bad_row(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _int_column(a, f: ItchField, where: str) -> np.ndarray:
    """Validate and convert an integer column to the storage of its class."""
    if isinstance(a, (pa.Array, pa.ChunkedArray)):
        a = a.to_numpy()
    a = np.asarray(a)
    if a.ndim != 1:
        raise ItchError(f"{where}: expected a 1-D column, got shape {a.shape}")
    if a.dtype.kind not in "iu":
        raise ItchError(f"{where}: expected integers, got dtype {a.dtype}")
    if f.kind == K.K_PRICE8:
        return a.view(np.int64) if a.dtype == np.uint64 else a.astype(np.int64)
    if f.kind == K.K_U64:
        if a.dtype.kind == "i" and a.size and a.min() < 0:
            r = _first_bad_row(a < 0)
            raise ItchError(f"{where} row {r}: value {int(a[r])} is negative (field is u64)")
        return a.astype(np.uint64).view(np.int64)
    bits = _INT_BITS[f.kind]
    if a.size:
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi >= (1 << bits):
            bad = a < 0 if lo < 0 else a >= (1 << bits)
            r = _first_bad_row(bad)
            raise ItchError(f"{where} row {r}: value {int(a[r])} does not fit the field ({f.code}: 0..{(1 << bits) - 1})")
    return a.astype({K.K_U16: np.uint16, K.K_U32: np.uint32}.get(f.kind, np.int64))


def _alpha_column(a, f: ItchField, where: str) -> np.ndarray:
    """Validate an alpha column and return its wire bytes (uint8[n * size], space padded).

    Accepts fixed-width bytes (``S``), str (``U``/object) and Arrow string/binary columns.
    Values longer than the field or with non-ASCII characters are errors; shorter values are
    padded with spaces (numpy's NUL padding of ``S`` arrays counts as padding)."""
    w = f.size
    if not isinstance(a, (pa.Array, pa.ChunkedArray)):
        a = np.asarray(a)
        if a.ndim != 1:
            raise ItchError(f"{where}: expected a 1-D column, got shape {a.shape}")
        if a.dtype.kind in "UO":
            try:
                a = pa.array(a)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
                raise ItchError(f"{where}: expected strings or bytes ({e})") from None
        elif a.dtype.kind != "S":
            raise ItchError(f"{where}: expected strings or fixed-width bytes, got dtype {a.dtype}")
    if isinstance(a, (pa.Array, pa.ChunkedArray)):
        if a.null_count:
            r = _first_bad_row(np.asarray(a.is_null()))
            raise ItchError(f"{where} row {r}: null value")
        if not (pa.types.is_string(a.type) or pa.types.is_binary(a.type) or pa.types.is_large_string(a.type)
                or pa.types.is_large_binary(a.type)):
            raise ItchError(f"{where}: expected strings, got Arrow type {a.type}")
        a = pc.cast(a, pa.large_binary())
        lengths = np.asarray(pc.binary_length(a))
        a = np.asarray(a.to_numpy(zero_copy_only=False) if isinstance(a, pa.Array) else a.to_numpy())
        if len(a) == 0:
            return np.empty(0, np.uint8)
        a = a.astype(f"S{max(int(lengths.max()), 1)}")
    if len(a) == 0:
        return np.empty(0, np.uint8)
    if a.dtype.itemsize > w:
        lengths = np.char.str_len(a)
        if lengths.max() > w:
            r = _first_bad_row(lengths > w)
            raise ItchError(f"{where} row {r}: value {bytes(a[r])!r} is longer than the field ({w} bytes)")
    if a.dtype.itemsize != w:
        a = a.astype(f"S{w}")
    m = np.ascontiguousarray(a).view(np.uint8).reshape(len(a), w)
    if m.max() >= 0x80:
        r = _first_bad_row((m >= 0x80).any(axis=1))
        raise ItchError(f"{where} row {r}: value {bytes(m[r])!r} is not ASCII")
    if not m.all():  # NUL bytes: numpy's padding of short values; trailing ones become spaces
        m = m.copy()
        rev = (m != 0)[:, ::-1]
        lengths = np.where(rev.any(axis=1), w - rev.argmax(axis=1), 0)
        m[np.arange(w) >= lengths[:, None]] = 0x20
    return m.reshape(-1)


def _normalise_tables(tables) -> list[tuple[ItchLayout, Mapping]]:
    if isinstance(tables, ItchData):
        tables = tables.tables
    if not isinstance(tables, Mapping):
        raise ItchError(f"encode_itch takes ItchData or a mapping of type -> columns, not {type(tables).__name__}")
    out, seen = [], {}
    for key, cols in tables.items():
        lay = layout(key)
        if lay.letter in seen:
            raise ItchError(f"message type {lay.letter!r} given twice (as {seen[lay.letter]!r} and {key!r})")
        seen[lay.letter] = key
        if isinstance(cols, (pa.Table, pa.RecordBatch)):
            cols = {name: cols.column(name) for name in cols.schema.names}
        elif not isinstance(cols, Mapping):
            raise ItchError(f"{lay.name} ({lay.letter!r}): expected a mapping of columns or an Arrow table")
        out.append((lay, cols))
    return out


def _encode_array(tables) -> np.ndarray:
    items = _normalise_tables(tables)
    f_base = np.zeros(len(_F_OFF), np.int64)
    parts: list[list[np.ndarray]] = [[], [], [], []]
    fill = [0, 0, 0, 0]
    seqs, stamps, codes, first_row = [], [], [], []
    with_seq = []
    total = 0
    for lay, cols in items:
        missing = [f.name for f in lay.fields if f.name not in cols]
        if missing:
            raise ItchError(f"{lay.name} ({lay.letter!r}): missing column {missing[0]!r}"
                            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        n = None
        t = lay.code
        for j, f in zip(range(int(_F_LO[t]), int(_F_HI[t])), lay.fields):
            where = f"{lay.name} ({lay.letter!r}) column {f.name!r}"
            try:
                raw = _as_numpy(cols[f.name])
            except ValueError as e:
                raise ItchError(f"{where}: {e}") from None
            v = _alpha_column(raw, f, where) if f.kind == K.K_ALPHA else _int_column(raw, f, where)
            if f.name == "timestamp":
                ts_col = v
            rows = len(v) // f.size if f.kind == K.K_ALPHA else len(v)
            if n is None:
                n = rows
            elif rows != n:
                raise ItchError(f"{where}: {rows} rows, expected {n}")
            c = _CLASS[f.kind]
            f_base[j] = fill[c]
            fill[c] += len(v)
            parts[c].append(v)
        assert n is not None
        total += n
        if n == 0:
            continue
        if "seq" in cols:
            s = _int_column(_as_numpy(cols["seq"]), ItchField("seq", 0, 8, K.K_U64, "u64"),
                            f"{lay.name} ({lay.letter!r}) column 'seq'").view(np.int64)
            if len(s) != n:
                raise ItchError(f"{lay.name} ({lay.letter!r}) column 'seq': {len(s)} rows, expected {n}")
            seqs.append(s)
            with_seq.append(True)
        else:
            with_seq.append(False)
        stamps.append(ts_col)
        codes.append(np.full(n, t, np.uint8))
        first_row.append(np.full(n, total - n, np.int64))
    if total == 0:
        return np.empty(0, np.uint8)
    if all(with_seq):
        key = np.concatenate(seqs)
        order = np.empty(total, np.int64)
        if key.min() == 0 and key.max() == total - 1:
            order[key] = np.arange(total)
            ok = bool(np.array_equal(key[order], np.arange(total)))
        else:
            ok = False
        if not ok:
            order = np.argsort(key, kind="stable")
            ks = key[order]
            dup = np.flatnonzero(ks[1:] == ks[:-1])
            if dup.size:
                raise ItchError(f"column 'seq': value {int(ks[dup[0]])} appears more than once")
    elif not any(with_seq):
        ts = np.concatenate(stamps)
        order = np.argsort(ts, kind="stable")
    else:
        raise ItchError("column 'seq' must be given for every non-empty message type or for none")
    types = np.concatenate(codes)[order]
    rows = order - np.concatenate(first_row)[order]
    bufs = [np.concatenate(p) if p else np.empty(0, dt)
            for p, dt in zip(parts, (np.uint16, np.uint32, np.int64, np.uint8))]
    out = np.empty(int((_SIZE_BY_TYPE[types] + 2).sum()), np.uint8)
    written = K.encode_frames_cpu(out, types, rows, _SIZE_BY_TYPE, _F_LO, _F_HI, _F_OFF, _F_SIZE, _F_KIND, f_base,
                                  bufs[0], bufs[1], bufs[2], bufs[3])
    assert written == len(out)
    return out


def encode_itch(tables) -> bytes:
    """Encode per-type columns as a framed ITCH 5.0 stream (the inverse of ``read_itch``).

    Parameters
    ----------
    tables : ItchData, or a mapping of type letter or snake_case name -> columns (a mapping
        of column name -> array-like, or an Arrow table such as one read back from Parquet).
        Every field of the layout is required; integer columns must fit their field (u16, u32,
        u48 timestamp, Price(4) 0..2**32-1; u64 and Price(8) take int64 or uint64); alpha
        columns may be ``S<w>`` bytes (numpy's NUL padding counts as padding), str or Arrow
        strings, are padded on the right with spaces and must be ASCII and at most the field's
        width.

    Message order: by ``seq`` when every non-empty table has that column (values must be
    unique; they need not be contiguous), else by ``timestamp``, ties kept in the order of the
    tables in the mapping and then of the rows.

    Returns
    -------
    bytes : ``[u16 BE length][message]`` frames. Decoding ItchData and encoding it again gives
    the original bytes.
    """
    return _encode_array(tables).tobytes()


def write_itch(path, tables) -> Path:
    """Encode ``tables`` (see ``encode_itch``) into a file; a ``.gz`` path is gzip-compressed."""
    p = Path(path)
    out = _encode_array(tables)
    p.parent.mkdir(parents=True, exist_ok=True)
    if _is_gzip(p):
        with gzip.open(p, "wb", compresslevel=6) as g:
            g.write(memoryview(out))
    else:
        with open(p, "wb") as f:
            f.write(memoryview(out))
    return p
