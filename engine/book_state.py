"""Allocation and growth of the book state and of the output buffers the kernels write.

The kernels never allocate. When a pool, a ladder or an output buffer is too small they stop
before the row that needs it and say so; the functions here grow the arrays (between kernel
calls) and the engine resumes at that row. Nothing is ever dropped for capacity.
"""
from __future__ import annotations

import mmap
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from hpte.kernels import book as K
from hpte.kernels.compact import compact_pool_cpu
from hpte.kernels.match_cpu import index_ids_cpu, move_ladder_cpu, relayout_cpu

from . import schema as Sch


class Inputs(NamedTuple):
    """One micro-batch as kernel columns (all length n)."""
    ts: np.ndarray       # int64 ns
    oid: np.ndarray      # uint64
    side: np.ndarray     # int8 +1/-1
    px: np.ndarray       # int64 ticks
    qty: np.ndarray      # int64 lots
    action: np.ndarray   # uint8 ACT_*
    otype: np.ndarray    # uint8 OT_*
    tif: np.ndarray      # uint8 TIF_*
    acct: np.ndarray     # uint32
    post: np.ndarray     # uint8 0/1
    force: np.ndarray    # uint8 reject reason forced by the engine (0 = none)
    exp: np.ndarray      # int64 ns good-till-date expiry (0 = none)
    stop: np.ndarray     # int64 ticks stop price of STOP / STOP_LIMIT rows (0 = none)
    disp: np.ndarray = np.zeros(0, np.int64)   # int64 lots iceberg slice size (0 = none); may be
                                               #   empty (callers without icebergs): read as 0


class State(NamedTuple):
    """All books (see kernels/book.py for the meaning of each array)."""
    bk: np.ndarray
    lv_head: np.ndarray
    lv_tail: np.ndarray
    lv_qty: np.ndarray
    lv_cnt: np.ndarray
    bm0: np.ndarray
    bm1: np.ndarray
    o_id: np.ndarray
    o_qty: np.ndarray
    o_px: np.ndarray
    o_next: np.ndarray
    o_prev: np.ndarray
    o_acct: np.ndarray
    o_flags: np.ndarray
    tab: np.ndarray
    o_arow: np.ndarray   # int32[P] risk account row of each order (engines with risk; else empty)
    o_exp: np.ndarray    # int64[P] good-till-date expiry (ns) of each order, 0 = none; a waiting
                         #   stop's stop price (kernels/book.py)
    o_rsv: np.ndarray    # int64[P] iceberg reserve (lots hidden behind the displayed o_qty);
                         #   empty until the engine's first iceberg (BookStore.ensure_icebergs)
    o_dsp: np.ndarray    # int64[P] iceberg slice size (lots), 0 = not an iceberg; as o_rsv


class Outputs(NamedTuple):
    """Output rows, one row-major int64 2-D array per stream (X[k, c] = column c of row k of
    the stream's schema, as int64 bit patterns), split in regions r with write cursors
    cur[r, 0..2] (fills, events, deltas) and exclusive ends cap[r, 0..2] (absolute rows).

    Row-major on purpose: a row is written with sequential stores. Column-major buffers put
    the 7-11 stores of one row in 7-11 page-aligned arrays that collide in the same L1 cache
    set (measured 28 ns per event row against 3.4 ns row-major; bench/RESULTS.md).
    """
    F: np.ndarray    # int64[nf, 10]  schema.FILL_COLUMNS
    E: np.ndarray    # int64[ne, 11]  schema.EVENT_COLUMNS
    D: np.ndarray    # int64[nd, 7]   schema.DELTA_COLUMNS
    cur: np.ndarray
    cap: np.ndarray


STREAMS = (("F", Sch.FILL_COLUMNS), ("E", Sch.EVENT_COLUMNS), ("D", Sch.DELTA_COLUMNS))

_STATE_DTYPES = {
    "lv_head": np.int32, "lv_tail": np.int32, "lv_qty": np.int64, "lv_cnt": np.int32,
    "o_id": np.uint64, "o_qty": np.int64, "o_px": np.int64, "o_next": np.int32,
    "o_prev": np.int32, "o_acct": np.uint32, "o_flags": np.uint8, "tab": np.int32, "o_exp": np.int64,
    "o_rsv": np.int64, "o_dsp": np.int64,
}


def _pow2(x: int) -> int:
    return 1 << max(0, int(x - 1).bit_length())


def alloc_outputs_1(nf: int, ne: int, nd: int) -> Outputs:
    """Outputs with one region of nf fills, ne events and nd deltas (the common case, kept
    cheap: it runs once per batch, and batches can be one order)."""
    return Outputs(F=np.empty((nf, 10), np.int64), E=np.empty((ne, 11), np.int64),
                   D=np.empty((nd, 7), np.int64), cur=np.zeros((1, 3), np.int64),
                   cap=np.array([[nf, ne, nd]], np.int64))


def alloc_outputs(caps: np.ndarray) -> Outputs:
    """Outputs with regions of the given capacities: caps int64[R, 3]."""
    caps = np.asarray(caps, dtype=np.int64).reshape(-1, 3)
    starts = np.zeros_like(caps)
    starts[1:] = np.cumsum(caps, axis=0)[:-1]
    totals = caps.sum(axis=0)
    arrays = {f: alloc_rows(int(totals[k]), len(cols)) for k, (f, cols) in enumerate(STREAMS)}
    return Outputs(**arrays, cur=starts.copy(), cap=starts + caps)


def region_starts(O: Outputs) -> np.ndarray:
    """First row of each region: int64[R, 3] (regions are laid out back to back)."""
    starts = np.zeros_like(O.cap)
    starts[1:] = O.cap[:-1]
    return starts


def grow_outputs(O: Outputs, r: int, need: np.ndarray) -> Outputs:
    """O with room for at least `need` (int64[3]) more rows per stream in region r. Only the
    streams that lack room are reallocated (doubled); the others are kept as they are."""
    starts = region_starts(O)
    caps = O.cap - starts
    used = O.cur - starts
    need = np.asarray(need, np.int64)
    new_caps = caps.copy()
    short = caps[r] - used[r] < need
    new_caps[r] = np.where(short, np.maximum(caps[r] * 2, used[r] + need * 2 + 1024), caps[r])
    new_starts = np.zeros_like(new_caps)
    new_starts[1:] = np.cumsum(new_caps, axis=0)[:-1]
    arrays = {}
    for k, (f, cols) in enumerate(STREAMS):
        src = getattr(O, f)
        if (new_caps[:, k] == caps[:, k]).all():
            arrays[f] = src
            continue
        dst = alloc_rows(int(new_caps[:, k].sum()), len(cols))
        for rr in range(len(caps)):
            dst[new_starts[rr, k]:new_starts[rr, k] + used[rr, k]] = src[starts[rr, k]:starts[rr, k] + used[rr, k]]
        arrays[f] = dst
    return Outputs(**arrays, cur=new_starts + used, cap=new_starts + new_caps)


POPULATE_MIN_BYTES = 32 << 20  # below glibc's largest mmap threshold freed memory is reused instead


def alloc_rows(n: int, ncols: int) -> np.ndarray:
    """An int64[n, ncols] row buffer (contents undefined). Large buffers are mapped with
    MAP_POPULATE so the kernel supplies all their pages at once: writing fresh memory page by
    page (a fault per 4 KiB page) measured 2.5-4.5x slower on the development VM (400 MB:
    0.31-0.57 s against 0.13 s), and it dominated runs that keep their outputs."""
    nbytes = n * ncols * 8
    flag = getattr(mmap, "MAP_POPULATE", 0)
    if nbytes < POPULATE_MIN_BYTES or not flag:
        return np.empty((n, ncols), np.int64)
    m = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | flag)
    return np.frombuffer(m, dtype=np.int64).reshape(n, ncols)


OUTPUT_NAMES = ("fills", "events", "deltas")   # the three streams, in STREAMS order
OFF_CAP = 1 << 40   # capacity given to a stream that is not written: no batch can exhaust it
NO_ROWS = tuple(np.empty((0, len(cols)), np.int64) for _f, cols in STREAMS)
ALL_OUTPUTS = (True, True, True)
_PARSED: dict = {}


def parse_outputs(spec) -> tuple[bool, bool, bool]:
    """Which output streams to write: None or "all" (every stream), "none", a comma-separated
    string ("fills,events") or an iterable of names from OUTPUT_NAMES. Returns one bool per
    stream (fills, events, deltas). Raises ValueError naming an unknown stream."""
    if spec is None:
        return ALL_OUTPUTS
    if type(spec) is tuple and len(spec) == 3 and all(type(t) is bool for t in spec):
        return spec          # already parsed
    key = spec if isinstance(spec, (str, tuple, frozenset)) else None
    got = _PARSED.get(key) if key is not None else None
    if got is not None:
        return got
    if isinstance(spec, str):
        names = list(OUTPUT_NAMES) if spec.strip() == "all" else (
            [] if spec.strip() == "none" else [t.strip() for t in spec.split(",") if t.strip()])
    else:
        try:
            names = [str(t) for t in spec]
        except TypeError:
            raise ValueError(f"outputs must be 'all', 'none', names joined by commas or a list of names, "
                             f"got {spec!r}") from None
    bad = [t for t in names if t not in OUTPUT_NAMES]
    if bad:
        raise ValueError(f"unknown output {bad[0]!r} in outputs={spec!r}; expected any of "
                         f"{', '.join(OUTPUT_NAMES)} (or 'all', 'none')")
    want = tuple(t in names for t in OUTPUT_NAMES)
    if key is not None:
        _PARSED[key] = want
    return want


class OutputBuffers:
    """Output row buffers an Engine keeps across batches: grown (doubled) when a batch needs
    more, never re-mapped per batch. Streams that are not asked for get no buffer: a 0-row
    array that the kernels do not write (kernels/emit.py) and a capacity of OFF_CAP."""

    def __init__(self):
        self.bufs: list = [None, None, None]
        self._one: dict = {}   # want -> (Outputs with one region, the buffers it was built on)

    def _ensure(self, k: int, rows: int) -> None:
        b = self.bufs[k]
        if b is None or b.shape[0] < rows:
            old = 0 if b is None else b.shape[0]
            self.bufs[k] = alloc_rows(max(int(rows), 2 * old), len(STREAMS[k][1]))

    def one(self, want, nf: int, ne: int, nd: int) -> Outputs:
        """Outputs with one region (cursor at 0) holding at least nf / ne / nd rows per wanted
        stream. Cheap when the buffers are big enough: the cached tuple is reused."""
        need = (nf, ne, nd)
        for k in range(3):
            if want[k]:
                self._ensure(k, need[k])
        cached = self._one.get(want)
        if cached is not None:
            O, bufs = cached
            if all(a is b for a, b in zip(bufs, self.bufs)):
                O.cur[0, 0] = O.cur[0, 1] = O.cur[0, 2] = 0
                return O
        arrays = [self.bufs[k] if want[k] else NO_ROWS[k] for k in range(3)]
        cap = np.array([[a.shape[0] if want[k] else OFF_CAP for k, a in enumerate(arrays)]], np.int64)
        O = Outputs(F=arrays[0], E=arrays[1], D=arrays[2], cur=np.zeros((1, 3), np.int64), cap=cap)
        self._one[want] = (O, list(self.bufs))
        return O

    def regions(self, want, caps: np.ndarray) -> Outputs:
        """Outputs with regions of the given capacities (int64[R, 3]) carved from the kept
        buffers (streams not wanted: OFF_CAP per region, no rows)."""
        caps = np.asarray(caps, dtype=np.int64).reshape(-1, 3).copy()
        totals = caps.sum(axis=0)
        arrays = []
        for k in range(3):
            if want[k]:
                self._ensure(k, int(totals[k]))
                arrays.append(self.bufs[k])
            else:
                caps[:, k] = OFF_CAP
                arrays.append(NO_ROWS[k])
        starts = np.zeros_like(caps)
        starts[1:] = np.cumsum(caps, axis=0)[:-1]
        return Outputs(F=arrays[0], E=arrays[1], D=arrays[2], cur=starts.copy(), cap=starts + caps)

    def adopt(self, O: Outputs, want) -> None:
        """Keep the buffers of O (the kernel may have grown them) for the next batch."""
        for k, (f, _cols) in enumerate(STREAMS):
            if want[k]:
                a = getattr(O, f)
                if self.bufs[k] is None or a.shape[0] > self.bufs[k].shape[0]:
                    self.bufs[k] = a

    def take(self, k: int, rows: int, copy: bool) -> np.ndarray:
        """The first `rows` rows of stream k for a result. Without `copy`: a view, valid until
        the next batch. With `copy`: an array the caller owns: a copy of a small part, or, when
        the part is large, the buffer itself (the Engine forgets it and allocates a new one
        when it next needs one; a copy of that size would fault in fresh pages anyway)."""
        b = self.bufs[k]
        if not copy:
            return b[:rows]
        if rows * b.shape[1] * 8 >= POPULATE_MIN_BYTES:
            self.bufs[k] = None
            return b[:rows]
        return b[:rows].copy()


def select_outputs(res: tuple, want) -> tuple:
    """Results of a path that writes every stream (the GPU's), with the streams not wanted
    replaced by empty ones."""
    return tuple(r if want[k] else Rows(NO_ROWS[k], STREAMS[k][1]) for k, r in enumerate(res))


class Rows(Mapping):
    """A stream's output rows (int64[n, ncols], row-major) read as named, typed columns.

    ``rows["price_ticks"]`` converts one column on first access (a copy of n values) and
    keeps it; ``dict(rows)`` gives every column; ``rows.raw`` is the row buffer itself.
    """

    __slots__ = ("raw", "cols", "_index", "_cache")
    _indexes: dict = {}

    def __init__(self, raw: np.ndarray, cols):
        self.raw = raw
        self.cols = cols
        index = Rows._indexes.get(id(cols))
        if index is None:
            index = Rows._indexes[id(cols)] = {name: (c, dt) for c, (name, dt) in enumerate(cols)}
        self._index = index
        self._cache: dict[str, np.ndarray] = {}

    @classmethod
    def of(cls, raw: np.ndarray, cols) -> "Rows":
        """Rows(raw, cols) for a `cols` seen before (the low-latency path: no index lookup by
        identity; the index is kept per `cols` object)."""
        r = cls.__new__(cls)
        r.raw = raw
        r.cols = cols
        r._index = cls._indexes[id(cols)]
        r._cache = None       # made on the first column read (most one-row results are never read by name)
        return r

    def __getitem__(self, name: str) -> np.ndarray:
        cache = self._cache
        if cache is None:
            cache = self._cache = {}
        a = cache.get(name)
        if a is None:
            c, dt = self._index[name]
            a = self.raw[:, c].astype(np.int64).view(dt) if dt.itemsize == 8 else self.raw[:, c].astype(dt)
            cache[name] = a
        return a

    def __iter__(self):
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    @property
    def n_rows(self) -> int:
        return self.raw.shape[0]

    def __repr__(self) -> str:
        return f"Rows({self.n_rows} rows: {', '.join(self._index)})"


def region_columns(O: Outputs, r: int = 0) -> tuple[dict, dict, dict]:
    """(fills, events, deltas) of region r as Rows (typed columns on access)."""
    starts = region_starts(O)
    return tuple(Rows(getattr(O, f)[starts[r, k]:O.cur[r, k]], cols)
                 for k, (f, cols) in enumerate(STREAMS))


def _first_prices(new: np.ndarray, symbol, px, action, otype, default: int, chunk: int = 1 << 16) -> np.ndarray:
    """For each symbol of `new` (sorted), the price of its first NEW LIMIT row with a positive
    price, else `default`. Looks at the rows a chunk at a time and stops once every symbol is
    found (usually in the first chunk: no pass over, or sort of, a whole large batch)."""
    p0 = np.full(new.size, default, np.int64)
    missing = np.ones(new.size, bool)
    for start in range(0, symbol.size, chunk):
        sl = slice(start, start + chunk)
        m = (action[sl] == Sch.ACT_NEW) & (otype[sl] == Sch.OT_LIMIT) & (px[sl] > 0)
        syms, first = np.unique(symbol[sl][m], return_index=True)
        k = np.searchsorted(new, syms)
        ok = k < new.size
        ok[ok] = new[k[ok]] == syms[ok]
        ok[ok] = missing[k[ok]]
        p0[k[ok]] = px[sl][m][first[ok]]
        missing[k[ok]] = False
        if not missing.any():
            break
    return p0


# the per-order (pool slot) arrays of State: what moves when one book's pool moves (_move_pool)
POOL_ARRAYS = ("o_id", "o_qty", "o_px", "o_next", "o_prev", "o_acct", "o_flags", "o_arow", "o_exp", "o_rsv",
               "o_dsp")
LUT_MAX_SYMBOL = 1 << 22  # symbols below this get a direct symbol -> book lookup table
MAX_LEVELS_MULTIPLE = 4096  # Engine(max_levels=...) stays a multiple of this (the API's rule)
SMALL_POOL = 1024   # pools below this many slots (46 KB) grow ahead for a batch's NEW rows as before
INIT_LEVELS = 128   # a book's first ladder (levels, centred on its first price); grows by doubling
INIT_POOL = 16      # a book's first pool (order slots); grows by doubling


class BookStore:
    """Owns the State arrays, the symbol -> book map and their growth."""

    def __init__(self, max_levels: int = 1 << 24, init_pool: int = INIT_POOL, risk_rows: bool = False,
                 init_levels: int = INIT_LEVELS):
        if max_levels < MAX_LEVELS_MULTIPLE or max_levels % MAX_LEVELS_MULTIPLE:
            raise ValueError(f"max_levels must be a positive multiple of {MAX_LEVELS_MULTIPLE}, got {max_levels}")
        if init_levels < K.LEVEL_BLOCK or init_levels % K.LEVEL_BLOCK:
            raise ValueError(f"init_levels must be a positive multiple of {K.LEVEL_BLOCK}, got {init_levels}")
        self.max_levels = int(max_levels)
        self.init_pool = int(init_pool)
        self.init_levels = min(int(init_levels), self.max_levels)
        self.l_end = 0     # levels [0, l_end) of the flat level arrays are laid out (or holes)
        self.symbols = np.empty(0, dtype=np.uint32)   # sorted known symbols
        self.book_of_sorted = np.empty(0, dtype=np.int64)  # book index of each sorted symbol
        self._lut = np.empty(0, dtype=np.int64)             # symbol -> book (-1 unknown), small symbols
        self.risk_rows = bool(risk_rows)   # keep o_arow (4 bytes a pool slot) for the risk kernel
        self.icebergs = False   # o_rsv / o_dsp sized (16 bytes a pool slot) since the first iceberg
        self.relayouts = 0      # every book laid out afresh (growth without free room, new books)
        self.pool_moves = 0     # one book's pool moved alone into free room
        self.shrinks = 0        # pools cut back to what they hold (maybe_shrink)
        self._rows_since_check = 0
        self._full_reserve = np.zeros(0, np.int64)   # NEW rows per book of the last batch reserved in full
        self.matching = None   # engine/matching.py MatchingConfig: algorithm columns of new books
        self.S = self._alloc(np.zeros((0, K.NF), dtype=np.int64))

    def __setstate__(self, d: dict) -> None:
        """Unpickling (the server's snapshots): a store pickled before the iceberg arrays were
        lazy has them sized; it keeps them (and their reserves) through later relayouts."""
        self.__dict__.update(d)
        if "icebergs" not in d:
            self.icebergs = self.S.o_rsv.shape[0] > 0

    # ---- geometry ------------------------------------------------------------------------
    @property
    def n_books(self) -> int:
        return self.S.bk.shape[0]

    def _alloc(self, bk: np.ndarray) -> State:
        """Fresh arrays for the geometry in bk (offsets recomputed, contents empty)."""
        bk = bk.copy()
        nlev, pcap, tsize = bk[:, K.F_NLEV], bk[:, K.F_PCAP], bk[:, K.F_TMASK] + 1
        bk[:, K.F_LOFF] = np.concatenate([[0], np.cumsum(nlev)[:-1]]) if len(bk) else 0
        bk[:, K.F_POFF] = np.concatenate([[0], np.cumsum(pcap)[:-1]]) if len(bk) else 0
        bk[:, K.F_TOFF] = np.concatenate([[0], np.cumsum(tsize)[:-1]]) if len(bk) else 0
        L, P, T = int(nlev.sum()), int(pcap.sum()), int(tsize.sum())
        self.l_end, self.p_end, self.t_end = L, P, T
        # room for ladders that grow (move_ladder_cpu); whole bm0 words (a multiple of 64 levels).
        # The room is for books other than the largest: the largest one's growth (at least
        # double) never fits in a quarter of the arrays, and with one book such room would only
        # be memory held for nothing (20 bytes a resting order): at most what the other books hold
        big_l = int(nlev.max()) if len(bk) else 0
        big_p = int(pcap.max()) if len(bk) else 0
        big_t = int(tsize.max()) if len(bk) else 0
        L = -(-(L + min(L // 2, L - big_l) + 16 * K.LEVEL_BLOCK) // K.LEVEL_BLOCK) * K.LEVEL_BLOCK
        # room for pools (and their id tables) that grow (_move_pool): a quarter more, at least
        # a few first pools
        P += min(P // 4, P - big_p) + 4 * self.init_pool
        T += min(T // 4, T - big_t) + 8 * self.init_pool
        arr = {
            "lv_head": np.full(L, -1, np.int32), "lv_tail": np.full(L, -1, np.int32),
            "lv_qty": np.zeros(L, np.int64), "lv_cnt": np.zeros(L, np.int32),
            "bm0": np.zeros(max(L // 64, 1), np.uint64), "bm1": np.zeros(1, np.uint64),
            "o_id": np.zeros(P, np.uint64), "o_qty": np.zeros(P, np.int64), "o_px": np.zeros(P, np.int64),
            "o_next": np.full(P, -1, np.int32), "o_prev": np.full(P, -1, np.int32),
            "o_acct": np.zeros(P, np.uint32), "o_flags": np.zeros(P, np.uint8),
            "tab": np.zeros(T, np.int32), "o_arow": np.zeros(P if self.risk_rows else 0, np.int32),
            "o_exp": np.zeros(P, np.int64), "o_rsv": np.zeros(P if self.icebergs else 0, np.int64),
            "o_dsp": np.zeros(P if self.icebergs else 0, np.int64),
        }
        return State(bk=bk, **arr)

    def ensure_icebergs(self) -> bool:
        """The kernel met the engine's first iceberg (ST_NEED_ICE): size o_rsv and o_dsp like
        the pool (zeros: no reserve anywhere yet); from now on they are laid out, moved and
        compacted with it. Between kernel calls only. Returns True if they were allocated."""
        if self.icebergs:
            return False
        S = self.S
        P = S.o_id.shape[0]
        self.icebergs = True
        self.S = S._replace(o_rsv=np.zeros(P, np.int64), o_dsp=np.zeros(P, np.int64))
        return True

    def _relayout(self, bk_new: np.ndarray) -> None:
        self.relayouts += 1
        n_old = self.n_books
        T = self._alloc(bk_new)
        if n_old:
            relayout_cpu(self.S, T, n_old)
        self.S = T

    # ---- symbols -------------------------------------------------------------------------
    def books_for(self, symbol: np.ndarray, px: np.ndarray, action: np.ndarray, otype: np.ndarray) -> np.ndarray:
        """Dense book index of every row, creating books for new symbols (ladder centred on
        the first limit price seen for them)."""
        if symbol.size == 0:
            return np.empty(0, np.int64)
        lo, hi = symbol.min(), symbol.max()
        if lo == hi and self.symbols.size and self.symbols[0] == lo and self.symbols.size == 1:
            return np.zeros(symbol.size, np.int64)
        if hi < self._lut.size:                      # every symbol seen before: O(n) lookup
            books = self._lut[symbol]
            if books.min() >= 0:
                return books
        if lo == hi:
            uniq = np.array([lo], symbol.dtype)
        elif hi < LUT_MAX_SYMBOL:   # O(n + max symbol) instead of sorting n symbols
            uniq = np.flatnonzero(np.bincount(symbol, minlength=int(hi) + 1)).astype(symbol.dtype)
        else:
            uniq = np.unique(symbol)
        new = uniq[~np.isin(uniq, self.symbols)]
        if new.size:
            bk = np.zeros((new.size, K.NF), dtype=np.int64)
            bk[:, K.F_SYM] = new
            bk[:, K.F_NLEV] = 0          # no ladder, no pool: reserve() gives them when orders come
            bk[:, K.F_PCAP] = 0
            bk[:, K.F_TMASK] = 1
            bk[:, K.F_BID] = -1
            bk[:, K.F_ASK] = -1
            bk[:, K.F_FREE] = -1
            bk[:, K.F_PHEAD] = -1
            bk[:, K.F_PTAIL] = -1
            bk[:, K.F_SHEAD] = -1
            bk[:, K.F_STAIL] = -1
            # centre each new ladder on the first positive limit price of a new order
            # F_BASE holds the first price until the book gets its ladder (centred on it)
            bk[:, K.F_BASE] = _first_prices(new, symbol, px, action, otype, self.init_levels // 2)
            if self.matching is not None:
                self.matching.fill_bk(bk)      # F_ALGO ... F_LMM0 + k: the book's algorithm
            self._add_books(bk)
            start = len(self.book_of_sorted)
            all_syms = np.concatenate([self.symbols, new])
            all_books = np.concatenate([self.book_of_sorted, np.arange(start, start + new.size)])
            o = np.argsort(all_syms, kind="stable")
            self.symbols, self.book_of_sorted = all_syms[o], all_books[o]
            if int(self.symbols[-1]) < LUT_MAX_SYMBOL:
                self._lut = np.full(int(self.symbols[-1]) + 1, -1, np.int64)
                self._lut[self.symbols] = self.book_of_sorted
        return self.book_of_sorted[np.searchsorted(self.symbols, symbol)]

    def _add_books(self, bk: np.ndarray) -> None:
        """Append new empty books (rows of bk: no ladder, no pool, a 2-entry id table). Their
        id tables go into the free room at the end of the table array when it has room (the
        other books are not copied: only the small bk array grows), else every book is laid out
        afresh."""
        S = self.S
        tsize = bk[:, K.F_TMASK] + 1
        need = int(tsize.sum())
        if self.n_books == 0 or self.t_end + need > S.tab.shape[0]:
            self._relayout(np.vstack([S.bk, bk]))
            return
        bk = bk.copy()
        bk[:, K.F_TOFF] = self.t_end + np.concatenate([[0], np.cumsum(tsize)[:-1]])
        bk[:, K.F_POFF] = self.p_end       # no slots yet
        bk[:, K.F_LOFF] = 0                # no levels yet
        self.t_end += need
        self.S = S._replace(bk=np.vstack([S.bk, bk]))

    def books_by_symbol(self) -> np.ndarray:
        """Book indices in ascending symbol order."""
        return self.book_of_sorted.astype(np.int64)

    # ---- growth --------------------------------------------------------------------------
    def reserve(self, books: np.ndarray, action: np.ndarray, at_most_double: bool = True) -> int:
        """Before a batch: give a ladder (``init_levels``, centred on its first price) and a first
        pool to every book of the batch that has none yet and may get a resting order, and grow
        the pools that are nearly full, all in one relayout (growing books one at a time copies
        every book each time, quadratic with many books).

        With `at_most_double` (the sequential CPU path) a pool grows here when its resting
        orders plus the batch's NEW rows exceed it, at most 2x (at least to ``init_pool``), and,
        once it has SMALL_POOL slots, only when it is at least 3/4 full: most new orders fill or
        are cancelled, so reserving a slot for each would size a large pool by the batch instead
        of by what rests (a 65,536-slot pool for 5,000 resting orders); a pool that runs out in
        the batch grows on demand (the kernel stops, ``grow_pool``). Small pools grow ahead as
        before: many books with small pools would otherwise stop the kernel (and lay every book
        out afresh) more often (1,000 books: 750 stops and 18 relayouts instead of 359 and 15). Without it (the parallel CPU path and the GPU, which meet
        their books one after another and pay a round of every chunk, or a launch, per stop)
        every pool is sized for all its NEW rows (remembered: ``maybe_shrink`` leaves a pool
        that room, so that the next such batch does not grow it again). Returns books grown."""
        if books.size == 0 or self.n_books == 0:
            return 0
        bk = self.S.bk
        if books.size == 1:  # one order: the common low-latency case
            b = int(books[0])
            if bk[b, K.F_NLEV] > 0 and (action[0] != Sch.ACT_NEW or bk[b, K.F_PCAP] > bk[b, K.F_NREST] + bk[b, K.F_NPARK] + bk[b, K.F_NSTOP]):
                return 0
        nb = self.n_books
        new_rows = np.bincount(books[action == Sch.ACT_NEW], minlength=nb)
        live = bk[:, K.F_NREST] + bk[:, K.F_NPARK] + bk[:, K.F_NSTOP]
        if at_most_double:
            pcap = bk[:, K.F_PCAP]
            want = np.minimum(live + new_rows, np.maximum(2 * pcap, self.init_pool))
            grow = want > pcap
            if grow.any():
                grow &= (pcap < SMALL_POOL) | (live * 4 >= pcap * 3)
        else:
            want = live + new_rows
            grow = want > bk[:, K.F_PCAP]
            self._full_reserve = new_rows
        ladder = (bk[:, K.F_NLEV] == 0) & (new_rows > 0)
        if not (grow.any() or ladder.any()):
            return 0
        gi = np.flatnonzero(grow)
        pcap = np.maximum(np.maximum(want[gi], 2 * bk[gi, K.F_PCAP]), self.init_pool)
        tsize = np.array([_pow2(2 * int(c)) for c in pcap], np.int64)
        li = np.flatnonzero(ladder)
        S = self.S
        if (self.p_end + int(pcap.sum()) <= S.o_id.shape[0] and self.t_end + int(tsize.sum()) <= S.tab.shape[0]
                and self.l_end + li.size * self.init_levels <= S.lv_head.shape[0]):
            # everything fits in the free room: only the books that grow move (their own size),
            # the others stay where they are
            for b, c, t in zip(gi.tolist(), pcap.tolist(), tsize.tolist()):
                self._move_pool(b, c, t)
            for b in li.tolist():
                base = int(bk[b, K.F_BASE]) - self.init_levels // 2
                move_ladder_cpu(S, b, self.l_end, self.init_levels, base)
                self.l_end += self.init_levels
            return int(np.count_nonzero(grow | ladder))
        bk = bk.copy()
        bk[gi, K.F_PCAP] = pcap
        bk[gi, K.F_TMASK] = tsize - 1
        bk[li, K.F_NLEV] = self.init_levels
        bk[li, K.F_BASE] -= self.init_levels // 2
        self._relayout(bk)
        return int(np.count_nonzero(grow | ladder))

    def grow_pool(self, b: int) -> None:
        """Book b's pool is full: double it. When the free room at the end of the pool and
        id-table arrays holds the larger pool, book b alone moves there (_move_pool: its own
        slots are copied, its id table rebuilt; the old place is a hole until the next
        relayout). Else every book is laid out afresh, and in the same relayout every other
        book whose pool is at least 3/4 full doubles too (books fill at similar rates; growing
        them together keeps the number of relayouts logarithmic rather than one per book)."""
        bk = self.S.bk
        pcap = max(2 * int(bk[b, K.F_PCAP]), self.init_pool)
        tsize = _pow2(2 * pcap)
        if self.p_end + pcap <= self.S.o_id.shape[0] and self.t_end + tsize <= self.S.tab.shape[0]:
            self._move_pool(b, pcap, tsize)
            return
        full = ((bk[:, K.F_NREST] + bk[:, K.F_NPARK] + bk[:, K.F_NSTOP]) * 4 >= bk[:, K.F_PCAP] * 3) & (bk[:, K.F_PCAP] > 0)
        full[b] = True
        self._grow_pools(np.flatnonzero(full), 2 * bk[:, K.F_PCAP])

    def _move_pool(self, b: int, pcap: int, tsize: int) -> None:
        """Move book b's pool to `pcap` slots at the end of the laid-out pool (p_end) and its id
        table to `tsize` entries at t_end (between kernel calls only; the room there is unused:
        fresh from _alloc). Slots keep their local numbers, so links, the free list and the
        levels stay valid: only the per-order arrays of POOL_ARRAYS are copied (a per-order
        array added to State is one more name there) and the id table is rebuilt."""
        S = self.S
        bk = S.bk
        src, hw, dst = int(bk[b, K.F_POFF]), int(bk[b, K.F_HW]), self.p_end
        for name in POOL_ARRAYS:
            a = getattr(S, name)
            if a.shape[0]:                 # o_arow is empty without risk, o_rsv / o_dsp before icebergs
                a[dst:dst + hw] = a[src:src + hw]
        bk[b, K.F_POFF] = dst
        bk[b, K.F_PCAP] = pcap
        bk[b, K.F_TOFF] = self.t_end
        bk[b, K.F_TMASK] = tsize - 1
        self.p_end += pcap
        self.t_end += tsize
        self.pool_moves += 1
        index_ids_cpu(S, b)

    def _grow_pools(self, idx: np.ndarray, want: np.ndarray) -> int:
        if idx.size == 0:
            return 0
        bk = self.S.bk.copy()
        # at least double: geometric growth keeps relayouts logarithmic in the final size
        pcap = np.maximum(np.maximum(want[idx], 2 * bk[idx, K.F_PCAP]), self.init_pool)
        bk[idx, K.F_PCAP] = pcap
        bk[idx, K.F_TMASK] = [_pow2(2 * int(c)) - 1 for c in pcap]
        self._relayout(bk)
        return int(idx.size)

    # ---- shrinking -----------------------------------------------------------------------
    # A pool shrinks when it holds at least SHRINK_RATIO x its target (its live orders plus a
    # quarter, at least init_pool; no pool for a book with none); it is then cut to the target.
    # Growth doubles a full pool, so between a shrink and the next one a book's live orders must
    # fall by more than SHRINK_RATIO / 1.25: no thrashing, and each shrink (a copy of the live
    # orders) is paid for by the orders that left since the last one.
    SHRINK_RATIO = 4
    shrink_min_slots = 1 << 14   # pool arrays at most this long are never shrunk (~1 MB)
    shrink_check_rows = 4096     # rows between two looks at the pools (a look is O(books))

    def maybe_shrink(self, rows: int) -> int:
        """At a batch boundary (no kernel running), after `rows` more input rows: give memory
        back when pools are mostly empty. Every pool whose capacity is at least SHRINK_RATIO x
        its target is compacted (kernels/compact.py compact_pool_cpu: live slots renumbered to
        0 .. live-1, outputs unchanged) and cut to the target, and every book is laid out
        afresh in smaller arrays, when that frees at least half of the pool arrays. Looks at
        the pools only every ``shrink_check_rows`` rows. Returns the books shrunk."""
        self._rows_since_check += rows
        if self._rows_since_check < self.shrink_check_rows:
            return 0
        self._rows_since_check = 0
        S = self.S
        P = S.o_id.shape[0]
        if P <= self.shrink_min_slots or self.n_books == 0:
            return 0
        bk = S.bk
        pcap = bk[:, K.F_PCAP]
        live = bk[:, K.F_NREST] + bk[:, K.F_NPARK] + bk[:, K.F_NSTOP]   # slots in use
        target = np.where(live > 0, np.maximum(live + (live + 3) // 4, self.init_pool), 0)
        full = self._full_reserve[:target.size]
        if full.size:     # the last fully reserved batch's NEW rows: room the next one would want
            target[:full.size] = np.maximum(target[:full.size], np.where(full > 0, live[:full.size] + full, 0))
        shrink = pcap >= self.SHRINK_RATIO * np.maximum(target, self.init_pool)
        if not shrink.any():
            return 0
        new_pcap = np.where(shrink, target, pcap)
        if P < 2 * int(new_pcap.sum()) + 4 * self.init_pool:
            return 0
        idx = np.flatnonzero(shrink)
        hw = bk[idx, K.F_HW]
        scratch = np.empty(int(hw.max()) if idx.size else 0, np.int32)
        for b, h, t in zip(idx.tolist(), hw.tolist(), new_pcap[idx].tolist()):
            if h > t:
                compact_pool_cpu(S, b, scratch)
        bk = bk.copy()
        bk[idx, K.F_PCAP] = new_pcap[idx]
        bk[idx, K.F_TMASK] = [_pow2(2 * int(c)) - 1 if c else 1 for c in new_pcap[idx]]
        # a pool cut to nothing: no slots in use, nothing on the free list
        empty = idx[new_pcap[idx] == 0]
        bk[empty, K.F_HW] = 0
        bk[empty, K.F_FREE] = -1
        self._relayout(bk)
        self.shrinks += 1
        return int(idx.size)

    def occupied_price_range(self, b: int) -> tuple[int, int] | None:
        S = self.S
        loff, nlev = int(S.bk[b, K.F_LOFF]), int(S.bk[b, K.F_NLEV])
        occ = np.flatnonzero(S.lv_cnt[loff:loff + nlev])
        base = int(S.bk[b, K.F_BASE])
        px = [base + int(occ[0]), base + int(occ[-1])] if occ.size else []
        poff, s = int(S.bk[b, K.F_POFF]), int(S.bk[b, K.F_PHEAD])
        while s >= 0:              # parked orders (a paused symbol's) rest in the ladder later
            px.append(int(S.o_px[poff + s]))
            s = int(S.o_next[poff + s])
        s = int(S.bk[b, K.F_SHEAD])
        while s >= 0:              # untriggered stop-limits rest at their price once triggered
            if not S.o_flags[poff + s] & K.FL_SMKT:
                px.append(int(S.o_px[poff + s]))
            s = int(S.o_next[poff + s])
        return (min(px), max(px)) if px else None

    def ladder_for(self, b: int, px: int) -> bool:
        """Grow/recentre book b's ladder to cover price px and every resting level.

        Returns False (and changes nothing) when that would need more than max_levels levels.
        A book without a ladder gets ``init_levels`` (or what the span needs); a ladder that
        grows at least doubles. The new ladder goes into the free room at the end of the level
        arrays when it fits (move_ladder_cpu: only this book's levels are copied), else every
        book is laid out afresh with new room.
        """
        rng = self.occupied_price_range(b)
        lo, hi = (px, px) if rng is None else (min(rng[0], px), max(rng[1], px))
        span = hi - lo + 1
        if span > self.max_levels:
            return False
        S = self.S
        cur = int(S.bk[b, K.F_NLEV])
        nlev = min(self.max_levels, max(2 * cur, _pow2(2 * span), self.init_levels))
        nlev = -(-nlev // K.LEVEL_BLOCK) * K.LEVEL_BLOCK
        base = lo - (nlev - span) // 2
        if self.l_end + nlev <= S.lv_head.shape[0]:
            loff = self.l_end
            self.l_end += nlev
            move_ladder_cpu(S, b, loff, nlev, base)
            return True
        bk = S.bk.copy()
        bk[b, K.F_NLEV] = nlev
        bk[b, K.F_BASE] = base
        self._relayout(bk)
        return True

    # ---- accounting ----------------------------------------------------------------------
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self.S))

    def stops(self) -> int:
        """Untriggered stop orders waiting outside the books (kernels/book.py F_SHEAD)."""
        return int(self.S.bk[:, K.F_NSTOP].sum()) if self.n_books else 0

    def parked(self) -> int:
        """Orders parked by paused symbols (kernels/book.py F_PHEAD), waiting for an auction."""
        return int(self.S.bk[:, K.F_NPARK].sum()) if self.n_books else 0

    def resting(self) -> int:
        return int(self.S.bk[:, K.F_NREST].sum()) if self.n_books else 0
