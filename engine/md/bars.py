"""Streaming aggregation of trades into OHLCV bars (by time or by volume) with exact VWAP sums,
per symbol, many symbols at once; order-book imbalance and microprice.

The aggregator keeps its whole state in arrays between calls, so feeding a stream in chunks cut
anywhere gives exactly the bars of the whole stream (``update`` per chunk, then ``flush``).

Trades are rows with ``ts_ns`` (int64, non-decreasing over the stream), ``symbol`` (uint32),
``price_ticks`` (int64), ``qty`` (int64 lots, > 0): the fills file of FORMATS.md has them.

Bars (``BAR_COLUMNS``), one row per (symbol, bar):

- Time bars (``every`` ns): the bar of a trade at ``t`` covers ``[start_ns, end_ns)`` with
  ``start_ns = floor(t / every) * every``, ``end_ns = start_ns + every``. A bar is complete, and
  emitted, when a later trade of any symbol has ``ts_ns >= end_ns``; bars come out ordered by
  ``start_ns``, then by their first trade. No trades, no bar (nothing is carried forward).
- Volume bars (``volume`` V lots): each bar holds exactly V lots (except the last, partial one);
  a trade straddling the boundary is split, the lots that complete the bar go into it and the rest
  into the next bar(s) (a trade of 2.5 V lots into an empty bar completes two bars and leaves half
  a bar open); each piece counts as a trade of its bar (``n_trades`` counts pieces). ``start_ns``
  / ``end_ns`` are the first and the last piece's ``ts_ns``. A bar is emitted as soon as it holds V
  lots.
- ``flush()`` emits the open, partial bars (time bars: in opening order; volume bars: ordered by
  their first trade) and ends the stream; ``partial()`` shows them without closing them.
- ``vwap`` = sum(price_ticks * qty) / volume: the sum is kept exactly as a 128-bit integer and
  divided only here, at output (float64).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from hpte.kernels.md import bars as K
from hpte.engine import schema as S
from hpte.engine.io import InputError, cast_checked, check_column, column_getter, parse_duration

TRADE_COLUMNS: tuple[tuple[str, np.dtype], ...] = (
    ("ts_ns", np.dtype(np.int64)),
    ("symbol", np.dtype(np.uint32)),
    ("price_ticks", np.dtype(np.int64)),
    ("qty", np.dtype(np.int64)),
)

BAR_COLUMNS: tuple[tuple[str, np.dtype], ...] = (
    ("symbol", np.dtype(np.uint32)),
    ("start_ns", np.dtype(np.int64)),
    ("end_ns", np.dtype(np.int64)),
    ("open", np.dtype(np.int64)),       # ticks
    ("high", np.dtype(np.int64)),
    ("low", np.dtype(np.int64)),
    ("close", np.dtype(np.int64)),
    ("volume", np.dtype(np.int64)),     # lots
    ("n_trades", np.dtype(np.int64)),
    ("vwap", np.dtype(np.float64)),     # ticks
)
BAR_SCHEMA = S.arrow_schema(BAR_COLUMNS)

TOTAL_COLUMNS: tuple[tuple[str, np.dtype], ...] = (
    ("symbol", np.dtype(np.uint32)),
    ("volume", np.dtype(np.int64)),
    ("n_trades", np.dtype(np.int64)),
    ("vwap", np.dtype(np.float64)),
)

Columns = dict[str, np.ndarray]

LUT_SIZE = 1 << 16   # initial direct-table size; grows (up to kernels.bars.LUT_MAX ids) as larger ids come

def trade_columns(data) -> Columns:
    """Normalise a trade batch (mapping, structured array, Arrow batch/table) to TRADE_COLUMNS."""
    names, get = column_getter(data, "trades")
    out: Columns = {}
    n = None
    for name, dt in TRADE_COLUMNS:
        if name not in names:
            raise InputError(f"missing required column {name!r} (trades need {[c for c, _ in TRADE_COLUMNS]})")
        a = np.ascontiguousarray(get(name, dt))
        n = check_column(name, a, n)
        out[name] = a
    return out


def pv_to_float(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """Signed 128-bit integers (high int64 word, low word as raw int64 bits) as float64."""
    hi = np.asarray(hi, dtype=np.int64)
    lo = np.asarray(lo, dtype=np.int64)
    fits = hi == (lo >> 63)                   # the value is the int64 `lo`: exact conversion
    big = hi.astype(np.float64) * 2.0**64 + lo.view(np.uint64).astype(np.float64)
    return np.where(fits, lo.astype(np.float64), big)


def _bars_from_out(rows: np.ndarray) -> Columns:
    """Kernel output rows (int64[k, NOUT]) as BAR_COLUMNS arrays."""
    c = lambda f: rows[:, f].copy()  # always a copy: `rows` may be a reused buffer  # noqa: E731
    vol = c(K.O_VOLUME)
    return {
        "symbol": c(K.O_SYM).astype(np.uint32),
        "start_ns": c(K.O_START),
        "end_ns": c(K.O_END),
        "open": c(K.O_OPEN),
        "high": c(K.O_HIGH),
        "low": c(K.O_LOW),
        "close": c(K.O_CLOSE),
        "volume": vol,
        "n_trades": c(K.O_TRADES),
        "vwap": pv_to_float(c(K.O_PVH), c(K.O_PVL)) / np.maximum(vol, 1),
    }


def empty_bars() -> Columns:
    return {n: np.empty(0, dtype=t) for n, t in BAR_COLUMNS}


def concat_bars(parts) -> Columns:
    parts = [p for p in parts if len(p["symbol"])]
    if not parts:
        return empty_bars()
    if len(parts) == 1:
        return parts[0]
    return {n: np.concatenate([p[n] for p in parts]) for n, _ in BAR_COLUMNS}


def _pow2_at_least(x: int) -> int:
    return 1 << max(0, int(x - 1).bit_length())


class BarAggregator:
    """Streaming OHLCV/VWAP bars per symbol; give exactly one of ``every`` and ``volume``.

    every : int ns or a duration string ('1s', '500ms', '100us', '1m'): time bars
    volume : int lots > 0: volume bars of exactly that many lots
    symbols : initial symbol capacity (grows by doubling as new symbols appear)
    bar_buffer : rows of the internal buffer completed bars go through (refilled and grown as needed)

    ``update(trades)`` returns the bars completed by that chunk; ``flush()`` the partial ones at
    the end. A chunk with a bad row (decreasing ``ts_ns``, ``qty <= 0``) raises ``InputError``
    naming the stream row; the aggregator is then unusable (the stream is bad).
    """

    def __init__(self, every: int | str | None = None, volume: int | None = None, *, symbols: int = 64,
                 bar_buffer: int = 4096):
        if (every is None) == (volume is None):
            raise ValueError("give exactly one of every (time bars) and volume (volume bars)")
        if every is not None:
            self.kind = "time"
            self.every = parse_duration(every)
            self.volume = None
        else:
            if isinstance(volume, bool) or not isinstance(volume, (int, np.integer)) or volume <= 0:
                raise ValueError(f"volume {volume!r}: must be a positive integer number of lots")
            self.kind = "volume"
            self.volume = int(volume)
            self.every = None
        s = max(1, int(symbols))
        self._st = np.zeros((s, K.NST), dtype=np.int64)
        self._sym_ids = np.zeros(s, dtype=np.int64)
        self._open_list = np.zeros(s, dtype=np.int64)
        self._keys = np.full(_pow2_at_least(2 * s), -1, dtype=np.int64)
        self._vals = np.zeros(len(self._keys), dtype=np.int64)
        self._lut = np.full(LUT_SIZE, -1, dtype=np.int32)
        self._g = np.zeros(K.NG, dtype=np.int64)
        self._g[K.G_LAST_TS] = K.INT64_MIN
        self._g[K.G_WEND] = K.INT64_MIN
        self._out = np.empty((max(1, int(bar_buffer)), K.NOUT), dtype=np.int64)
        self.rows = 0            # trades consumed so far
        self.bars_emitted = 0
        self._state = "open"     # open | flushed | broken

    # --- state ---------------------------------------------------------------------------------
    @property
    def n_symbols(self) -> int:
        return int(self._g[K.G_NSYM])

    def _grow_symbols(self) -> None:
        s = len(self._sym_ids)
        s2 = 2 * s
        st = np.zeros((s2, K.NST), dtype=np.int64)
        st[:s] = self._st
        sym_ids = np.zeros(s2, dtype=np.int64)
        sym_ids[:s] = self._sym_ids
        ol = np.zeros(s2, dtype=np.int64)
        ol[:s] = self._open_list
        keys = np.full(_pow2_at_least(2 * s2), -1, dtype=np.int64)
        vals = np.zeros(len(keys), dtype=np.int64)
        K.sym_rehash(keys, vals, sym_ids, self.n_symbols)
        self._st, self._sym_ids, self._open_list, self._keys, self._vals = st, sym_ids, ol, keys, vals

    def _check_usable(self) -> None:
        if self._state == "flushed":
            raise ValueError("the aggregator was flushed (the stream ended): make a new one")
        if self._state == "broken":
            raise ValueError("the aggregator saw a bad row and cannot go on: make a new one")

    # --- streaming -----------------------------------------------------------------------------
    def update(self, trades) -> Columns:
        """Aggregate a chunk of trades; return the bars it completed (BAR_COLUMNS arrays)."""
        self._check_usable()
        cols = trade_columns(trades)
        ts, sym, px, qty = cols["ts_ns"], cols["symbol"], cols["price_ticks"], cols["qty"]
        n = len(ts)
        parts = []
        i = 0
        n_out = 0
        while True:
            if self.kind == "time":
                status, i, n_out = K.bars_time_cpu(ts, sym, px, qty, i, self.rows, self.every, self._lut,
                                                   self._keys, self._vals, self._sym_ids, self._st,
                                                   self._open_list, self._g, self._out, n_out)
            else:
                status, i, n_out = K.bars_volume_cpu(ts, sym, px, qty, i, self.rows, self.volume, self._lut,
                                                     self._keys, self._vals, self._sym_ids, self._st, self._g,
                                                     self._out, n_out)
            if status == K.ST_OK:
                break
            if status == K.ST_SYM_FULL:
                self._grow_symbols()
            elif status == K.ST_LUT_SMALL:
                lut = np.full(_pow2_at_least(int(sym[i]) + 1), -1, dtype=np.int32)
                lut[:len(self._lut)] = self._lut
                self._lut = lut
            elif status == K.ST_OUT_FULL:
                if n_out:
                    parts.append(_bars_from_out(self._out[:n_out]))
                    n_out = 0
                else:  # one step needs more rows than the buffer has
                    need = int(self._g[K.G_NOPEN]) + 1 if self.kind == "time" else int(qty[i]) // self.volume + 2
                    self._out = np.empty((max(2 * len(self._out), need), K.NOUT), dtype=np.int64)
            else:
                self._state = "broken"
                row = self.rows + int(i)
                if status == K.ST_TS_DECREASING:
                    raise InputError(f"column 'ts_ns' row {row}: timestamps must not decrease "
                                     f"({int(self._g[K.G_LAST_TS])} then {int(ts[i])})")
                raise InputError(f"column 'qty' row {row}: quantity must be positive, got {int(qty[i])}")
        if n_out:
            parts.append(_bars_from_out(self._out[:n_out]))
        self.rows += n
        res = concat_bars(parts)
        self.bars_emitted += len(res["symbol"])
        return res

    def _open_bars(self, clear: bool) -> Columns:
        nopen = int(self._g[K.G_NOPEN]) if self.kind == "time" else int(K.count_open_cpu(self._st, self._g))
        out = np.empty((nopen, K.NOUT), dtype=np.int64)
        if self.kind == "time":
            k = K.flush_time_cpu(self.every, self._sym_ids, self._st, self._open_list, self._g, out, 0, clear)
        else:
            k = K.flush_volume_cpu(self._sym_ids, self._st, self._g, out, 0, clear)
        return _bars_from_out(out[:k])

    def partial(self) -> Columns:
        """The open (incomplete) bars as they stand, without closing them."""
        self._check_usable()
        return self._open_bars(clear=False)

    def flush(self) -> Columns:
        """Emit the open (partial) bars and end the stream."""
        self._check_usable()
        res = self._open_bars(clear=True)
        self._state = "flushed"
        self.bars_emitted += len(res["symbol"])
        return res

    def totals(self) -> Columns:
        """Per symbol (in order of first appearance): volume, trade count and VWAP of every trade
        seen so far (emitted and open bars). ``n_trades`` counts trades (a split trade once)."""
        ns = self.n_symbols
        st = self._st[:ns]
        is_open = st[:, K.F_OPEN] != 0
        vol = st[:, K.F_TV] + np.where(is_open, st[:, K.F_V], 0)
        cnt = st[:, K.F_TN] + np.where(is_open, st[:, K.F_N], 0)
        th, tl = st[:, K.F_TPVH], st[:, K.F_TPVL]
        oh = np.where(is_open, st[:, K.F_PVH], 0)
        ol = np.where(is_open, st[:, K.F_PVL], 0)
        lo = (tl.view(np.uint64) + ol.view(np.uint64))
        carry = (lo < tl.view(np.uint64)).astype(np.int64)
        hi = th + oh + carry
        return {
            "symbol": self._sym_ids[:ns].astype(np.uint32),
            "volume": vol,
            "n_trades": cnt,
            "vwap": pv_to_float(hi, lo.view(np.int64)) / np.maximum(vol, 1),
        }


def bars_from_trades(trades, every: int | str | None = None, volume: int | None = None) -> Columns:
    """All bars of a whole trade batch (completed ones, then the partial ones): BAR_COLUMNS arrays."""
    agg = BarAggregator(every=every, volume=volume)
    return concat_bars([agg.update(trades), agg.flush()])


def book_imbalance(bid_px, bid_sz, ask_px, ask_sz) -> tuple[np.ndarray, np.ndarray]:
    """Top-of-book imbalance (bid_sz - ask_sz) / (bid_sz + ask_sz) and microprice
    (bid_px * ask_sz + ask_px * bid_sz) / (bid_sz + ask_sz), float64 arrays, per L2 state.

    Prices in ticks, sizes in lots (>= 0; 0 means that side is empty). NaN imbalance when both
    sides are empty; NaN microprice unless both sides have size.
    """
    arrs = []
    n = None
    for name, a in (("bid_px", bid_px), ("bid_sz", bid_sz), ("ask_px", ask_px), ("ask_sz", ask_sz)):
        a = np.atleast_1d(np.asarray(a))
        if a.size == 0:
            a = a.astype(np.int64)                 # [] arrives as float64
        a = np.ascontiguousarray(cast_checked(a, np.dtype(np.int64), name))
        if a.ndim != 1:
            raise InputError(f"{name} must be one-dimensional, got shape {a.shape}")
        if n is None:
            n = len(a)
        elif len(a) != n:
            raise InputError(f"{name} has {len(a)} rows, expected {n}")
        if name.endswith("_sz") and n and a.min() < 0:
            r = int(np.flatnonzero(a < 0)[0])
            raise InputError(f"{name} row {r}: size must be >= 0, got {int(a[r])}")
        arrs.append(a)
    imb = np.empty(n, dtype=np.float64)
    micro = np.empty(n, dtype=np.float64)
    K.book_imbalance_cpu(arrs[0], arrs[1], arrs[2], arrs[3], imb, micro)
    return imb, micro


# --- files ----------------------------------------------------------------------------------------
def _is_ipc(path: Path) -> bool:
    return path.suffix.lower() in (".arrow", ".ipc", ".feather")


def iter_trade_batches(path: str | Path, chunk_rows: int = 1_000_000) -> tuple[int, Iterator[pa.RecordBatch]]:
    """(total rows, iterator of record batches of the trade columns) for a Parquet or Arrow IPC file."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    names = [n for n, _ in TRADE_COLUMNS]
    try:
        if _is_ipc(p):
            reader = ipc.open_file(pa.memory_map(str(p), "r"))
            have = reader.schema.names
            total = sum(reader.get_batch(k).num_rows for k in range(reader.num_record_batches))

            def gen_ipc():
                for k in range(reader.num_record_batches):
                    b = reader.get_batch(k).select(names)
                    for off in range(0, b.num_rows, chunk_rows):
                        yield b.slice(off, chunk_rows)
            it = gen_ipc()
        else:
            pf = pq.ParquetFile(p)
            have = pf.schema_arrow.names
            total = pf.metadata.num_rows
            it = pf.iter_batches(batch_size=chunk_rows, columns=names) if all(n in have for n in names) else iter(())
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as e:
        raise InputError(f"{p}: not a readable {'Arrow IPC' if _is_ipc(p) else 'Parquet'} file ({e})") from None
    missing = [n for n in names if n not in have]
    if missing:
        raise InputError(f"{p}: missing required column {missing[0]!r} (trades need {names})")

    def guarded():
        try:
            yield from it
        except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as e:
            raise InputError(f"{p}: read error ({e})") from None
    return total, guarded()


class _BarWriter:
    """Bars appended chunk by chunk to a Parquet (or Arrow IPC) file, moved into place at the end."""

    def __init__(self, path: Path):
        self.path = path
        self.tmp = path.with_name(path.name + ".partial")
        path.parent.mkdir(parents=True, exist_ok=True)
        if _is_ipc(path):
            self._sink = pa.OSFile(str(self.tmp), "wb")
            self._w = ipc.new_file(self._sink, BAR_SCHEMA)
        else:
            self._sink = None
            self._w = pq.ParquetWriter(str(self.tmp), BAR_SCHEMA)

    def write(self, bars: Columns) -> None:
        if len(bars["symbol"]):
            t = pa.Table.from_arrays([pa.array(bars[n], type=f.type) for n, f in zip(bars, BAR_SCHEMA)],
                                     schema=BAR_SCHEMA)
            self._w.write_table(t)

    def close(self, ok: bool) -> None:
        self._w.close()
        if self._sink is not None:
            self._sink.close()
        if ok:
            self.tmp.replace(self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def bars_file(src: str | Path, dst: str | Path, *, every: int | str | None = None, volume: int | None = None,
              chunk_rows: int = 1_000_000,
              progress: Callable[[int, int], None] | None = None) -> dict:
    """Bars of a trades file, read in chunks and written as Parquet (Arrow IPC for .arrow/.ipc/.feather).

    ``progress(rows_done, rows_total)`` is called after each chunk. Returns a summary dict
    (trades, bars, symbols, seconds, path). Raises InputError (bad file or rows) or ValueError
    (bad parameters) with a one-line message.
    """
    if chunk_rows <= 0:
        raise ValueError(f"chunk_rows {chunk_rows}: must be positive")
    agg = BarAggregator(every=every, volume=volume)
    src, dst = Path(src), Path(dst)
    total, batches = iter_trade_batches(src, chunk_rows)
    t0 = time.perf_counter()
    writer = _BarWriter(dst)
    ok = False
    try:
        for b in batches:
            try:
                writer.write(agg.update(b))
            except InputError as e:
                raise InputError(f"{src}: {e}") from None
            if progress is not None:
                progress(agg.rows, total)
        writer.write(agg.flush())
        ok = True
    finally:
        writer.close(ok)
    return {"trades": agg.rows, "bars": agg.bars_emitted, "symbols": agg.n_symbols,
            "seconds": time.perf_counter() - t0, "path": dst}
