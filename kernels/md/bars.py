"""Streaming market-data aggregation kernels: OHLCV bars by time and by volume, VWAP, trade counts,
many symbols at once; order-book imbalance and microprice.

All state lives in arrays the caller owns and passes to every call, so a stream cut into chunks
anywhere gives exactly the result of the whole stream. Kernels are resumable: they return
``(status, i, n_out)``: ``status`` is ``ST_OK`` (all rows consumed) or a code saying why they
stopped before row ``i`` (output full, symbol table full: grow and call again from ``i``; or a bad
row); ``n_out`` is the number of bar rows now in ``out``.

Inputs (one chunk of trades, in stream order)
--------------------------------------------
ts : int64[n], trade time in ns, non-decreasing over the whole stream
sym : uint32[n], symbol (instrument id, any value)
px : int64[n], price in ticks (any sign)
qty : int64[n], quantity in lots, > 0

Per-symbol state ``st`` : int64[S, NST] (one 128-byte row per dense symbol index, fields ``F_*``);
symbol -> dense index: ``lut`` : int32[L], a direct table (-1 = not seen yet) for symbols below
``LUT_MAX``, grown by the caller when a kernel stops with ``ST_LUT_SMALL``; and for every symbol
the hash table ``keys``/``vals`` : int64[H] (open addressing, H a power of two >= 2 S; ``keys`` -1
= empty), which the kernels consult for symbols >= ``LUT_MAX``, once per run of trades of one
symbol; ``sym_ids`` : int64[S] dense index -> symbol; ``g`` :
int64[NG] globals (``G_*``). Output ``out`` : int64[M, NOUT], one bar per row (fields ``O_*``).

Every helper called in a hot loop is ``inline="always"``: a non-inlined njit call taking arrays
costs a call and reference-count updates per trade (measured: 4x slower with 64 symbols).

Exact integer VWAP: each bar keeps sum(price * qty) as a signed 128-bit integer in two int64 words
(``PVH`` high, ``PVL`` low word as raw bits); division happens only at output (engine).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from hpte.kernels.int128 import mul_wide_u64

# --- status codes -------------------------------------------------------------------------------
ST_OK = 0
ST_OUT_FULL = 1        # not enough room in `out` for the bars row i would complete
ST_SYM_FULL = 2        # row i has a new symbol and the symbol state has no free row
ST_LUT_SMALL = 3       # row i has a symbol in [len(lut), LUT_MAX): grow `lut` to cover it
ST_TS_DECREASING = -1  # ts[i] < the previous trade's ts
ST_BAD_QTY = -2        # qty[i] <= 0

# --- per-symbol state fields (st[d, F_*]) --------------------------------------------------------
F_OPEN = 0        # 1 while a bar is open
F_START = 1       # time bars: window start; volume bars: ts of the bar's first trade
F_END = 2         # ts of the bar's last trade
F_O = 3
F_H = 4
F_L = 5
F_C = 6
F_V = 7           # lots in the bar
F_N = 8           # trades (volume bars: trade pieces) in the bar
F_PVH = 9         # sum(price * qty), high word (signed)
F_PVL = 10        # sum(price * qty), low word (raw 64 bits)
F_ROW = 11        # stream row of the bar's first trade (flush order)
F_TV = 12         # totals over emitted bars: lots
F_TN = 13         # trades (a trade split over volume bars counts once)
F_TPVH = 14       # sum(price * qty), high word
F_TPVL = 15       # low word
NST = 16

# --- globals (g[G_*]) -----------------------------------------------------------------------------
G_NSYM = 0        # symbols known (dense indices 0 .. G_NSYM-1)
G_LAST_TS = 1     # ts of the last trade (INT64_MIN before any)
G_WSTART = 2      # time bars: current window [G_WSTART, G_WEND)
G_WEND = 3        # INT64_MIN before any trade
G_NOPEN = 4       # time bars: open bars listed in open_list[:G_NOPEN]
NG = 8

# --- output fields (out[k, O_*]) ------------------------------------------------------------------
O_SYM = 0
O_START = 1       # time bars: window start (multiple of `every`); volume bars: first trade's ts
O_END = 2         # time bars: window end (start + every, exclusive); volume bars: last trade's ts
O_OPEN = 3
O_HIGH = 4
O_LOW = 5
O_CLOSE = 6
O_VOLUME = 7
O_TRADES = 8
O_PVH = 9
O_PVL = 10
NOUT = 11

INT64_MIN = np.iinfo(np.int64).min
LUT_MAX = 1 << 20      # symbols below this go through the direct table (grown on demand), others hash
_S32 = np.uint64(32)
_ONE = np.uint64(1)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


# --- exact 128-bit accumulation -------------------------------------------------------------------
@njit(cache=True, inline="always")
def add_mul_128(hi, lo, p, q):
    """(hi, lo) + p * q as a signed 128-bit integer in two int64 words (lo: raw low 64 bits).

    p : int64 (any sign), q : int64 (> 0). Returns the new (hi, lo).
    """
    ulo = np.uint64(lo)
    if -2147483648 < p < 2147483648 and q < 2147483648:
        prod = p * q                             # |prod| < 2**62: exact in int64
        nlo = ulo + np.uint64(prod)
        carry = np.int64(1) if nlo < ulo else np.int64(0)
        borrow = np.int64(1) if prod < 0 else np.int64(0)
        return hi + carry - borrow, np.int64(nlo)
    # full 64 x 64 -> 128 product of |p| and q from 32-bit limbs
    ua = np.uint64(p) if p >= 0 else np.uint64(0) - np.uint64(p)
    phi, plo = mul_wide_u64(ua, np.uint64(q))
    if p < 0:                                    # two's-complement negation of (phi, plo)
        plo = ~plo + _ONE
        phi = ~phi + (_ONE if plo == np.uint64(0) else np.uint64(0))
    nlo = ulo + plo
    carry = _ONE if nlo < ulo else np.uint64(0)
    nhi = np.uint64(hi) + phi + carry
    return np.int64(nhi), np.int64(nlo)


@njit(cache=True, inline="always")
def add_128(hi, lo, bhi, blo):
    """(hi, lo) + (bhi, blo), signed 128-bit integers in two int64 words."""
    ulo = np.uint64(lo)
    nlo = ulo + np.uint64(blo)
    carry = np.int64(1) if nlo < ulo else np.int64(0)
    return hi + bhi + carry, np.int64(nlo)


# --- symbol table -------------------------------------------------------------------------------
@njit(cache=True, inline="always")
def _slot(keys, s):
    mask = np.uint64(len(keys) - 1)
    return np.int64(((np.uint64(s) * _GOLDEN) >> _S32) & mask)


@njit(cache=True, inline="always")
def sym_lookup(keys, vals, s):
    """Dense index of symbol ``s`` (int64 >= 0), or -1 when unknown."""
    h = _slot(keys, s)
    m = len(keys) - 1
    while True:
        k = keys[h]
        if k == s:
            return vals[h]
        if k == -1:
            return -1
        h = (h + 1) & m


@njit(cache=True, inline="always")
def sym_insert(keys, vals, s, d):
    """Insert symbol ``s`` -> dense index ``d`` (the table must have a free slot)."""
    h = _slot(keys, s)
    m = len(keys) - 1
    while keys[h] != -1:
        h = (h + 1) & m
    keys[h] = s
    vals[h] = d


@njit(cache=True)
def sym_rehash(keys, vals, sym_ids, nsym):
    """Fill an empty table (keys all -1) from the dense symbols ``sym_ids[:nsym]``."""
    for d in range(nsym):
        sym_insert(keys, vals, sym_ids[d], d)


@njit(cache=True, inline="always")
def _dense(keys, vals, sym_ids, g, s):
    """Dense index of symbol s, inserting it when new; -1 when the state has no free row."""
    d = sym_lookup(keys, vals, s)
    if d < 0:
        d = g[G_NSYM]
        if d >= len(sym_ids):
            return -1
        sym_insert(keys, vals, s, d)
        sym_ids[d] = s
        g[G_NSYM] = d + 1
    return d


# --- bar emission ---------------------------------------------------------------------------------
@njit(cache=True, inline="always")
def _emit(st, sym_ids, d, end, out, k, clear):
    """Write symbol d's open bar to out[k]; when `clear`, add it to the totals and close it."""
    out[k, O_SYM] = sym_ids[d]
    out[k, O_START] = st[d, F_START]
    out[k, O_END] = end
    out[k, O_OPEN] = st[d, F_O]
    out[k, O_HIGH] = st[d, F_H]
    out[k, O_LOW] = st[d, F_L]
    out[k, O_CLOSE] = st[d, F_C]
    out[k, O_VOLUME] = st[d, F_V]
    out[k, O_TRADES] = st[d, F_N]
    out[k, O_PVH] = st[d, F_PVH]
    out[k, O_PVL] = st[d, F_PVL]
    if clear:
        st[d, F_TV] += st[d, F_V]
        st[d, F_TN] += st[d, F_N]
        st[d, F_TPVH], st[d, F_TPVL] = add_128(st[d, F_TPVH], st[d, F_TPVL], st[d, F_PVH], st[d, F_PVL])
        st[d, F_OPEN] = 0


@njit(cache=True, inline="always")
def _open(st, d, t0, t, p, row):
    st[d, F_OPEN] = 1
    st[d, F_START] = t0
    st[d, F_END] = t
    st[d, F_O] = p
    st[d, F_H] = p
    st[d, F_L] = p
    st[d, F_C] = p
    st[d, F_V] = 0
    st[d, F_N] = 0
    st[d, F_PVH] = 0
    st[d, F_PVL] = 0
    st[d, F_ROW] = row


# --- time bars ------------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def bars_time_cpu(ts, sym, px, qty, start, row0, every, lut, keys, vals, sym_ids, st, open_list, g, out,
                  n_out):
    """OHLCV time bars over trades ``[start, n)`` of a chunk, continuing the stream's state.

    A trade at ``t`` belongs to the bar of its symbol over the window ``[w, w + every)`` with
    ``w = floor(t / every) * every`` (windows aligned to multiples of ``every`` ns). Windows are
    global: a bar is complete once any later trade (of any symbol) has ``t >= w + every``; then
    every open bar is emitted, in the order the bars were opened (first trade), so the output is
    ordered by window start. Windows without trades of a symbol give no bar for it.

    Parameters
    ----------
    ts, sym, px, qty : the chunk (see module doc); start : int, first row to process
    row0 : int, stream row number of the chunk's row 0 (for the flush order and errors)
    every : int64, bar length in ns (> 0)
    lut, keys, vals, sym_ids, st, g : the stream state (module doc); open_list : int64[S]
    out : int64[M, NOUT], receives completed bars from row ``n_out`` on

    Returns
    -------
    (status, i, n_out) : see the module doc.
    """
    n = len(ts)
    m_out = out.shape[0]
    last_ts = g[G_LAST_TS]
    wstart = g[G_WSTART]
    wend = g[G_WEND]
    nopen = g[G_NOPEN]
    status = ST_OK
    nlut = len(lut)
    last_s = np.int64(-1)
    last_d = np.int64(-1)
    i = start
    while i < n:
        t = ts[i]
        q = qty[i]
        if t < last_ts:
            status = ST_TS_DECREASING
            break
        if q <= 0:
            status = ST_BAD_QTY
            break
        if t >= wend:
            if n_out + nopen > m_out:
                status = ST_OUT_FULL
                break
            for j in range(nopen):
                _emit(st, sym_ids, open_list[j], st[open_list[j], F_START] + every, out, n_out, True)
                n_out += 1
            nopen = 0
            r = t % every                        # floor modulo (numba follows Python for ints)
            wstart = t - r
            wend = wstart + every
        s = np.int64(sym[i])
        if s < nlut:                             # small ids: one load from the direct table
            d = np.int64(lut[s])
            if d < 0:
                d = _dense(keys, vals, sym_ids, g, s)
                if d < 0:
                    status = ST_SYM_FULL
                    break
                lut[s] = d
        elif s < LUT_MAX:
            status = ST_LUT_SMALL
            break
        elif s == last_s:                        # large ids: hash, skipped within a run
            d = last_d
        else:
            d = _dense(keys, vals, sym_ids, g, s)
            if d < 0:
                status = ST_SYM_FULL
                break
            last_s = s
            last_d = d
        p = px[i]
        if st[d, F_OPEN] == 0:
            _open(st, d, wstart, t, p, row0 + i)
            open_list[nopen] = d
            nopen += 1
        else:
            st[d, F_H] = max(st[d, F_H], p)
            st[d, F_L] = min(st[d, F_L], p)
            st[d, F_C] = p
            st[d, F_END] = t
        st[d, F_V] += q
        st[d, F_N] += 1
        st[d, F_PVH], st[d, F_PVL] = add_mul_128(st[d, F_PVH], st[d, F_PVL], p, q)
        last_ts = t
        i += 1
    g[G_LAST_TS] = last_ts
    g[G_WSTART] = wstart
    g[G_WEND] = wend
    g[G_NOPEN] = nopen
    return status, i, n_out


@njit(cache=True, nogil=True)
def flush_time_cpu(every, sym_ids, st, open_list, g, out, n_out, clear):
    """Emit every open (partial) time bar in opening order; ``clear`` closes them.

    ``out`` needs ``g[G_NOPEN]`` free rows. Returns the new ``n_out``.
    """
    nopen = g[G_NOPEN]
    for j in range(nopen):
        d = open_list[j]
        _emit(st, sym_ids, d, st[d, F_START] + every, out, n_out, clear)
        n_out += 1
    if clear:
        g[G_NOPEN] = 0
    return n_out


# --- volume bars ----------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def bars_volume_cpu(ts, sym, px, qty, start, row0, vsize, lut, keys, vals, sym_ids, st, g, out, n_out):
    """OHLCV volume bars of exactly ``vsize`` lots per symbol over trades ``[start, n)``.

    Straddling trades are split: a trade of q lots when the symbol's open bar holds v lots puts
    ``min(q, vsize - v)`` lots into that bar, which is complete (and emitted at once) when it
    reaches ``vsize``; the rest opens the next bar, and a remainder of ``vsize`` lots or more fills
    whole bars of its own (one piece each). Each piece counts as one trade in its bar and adds
    ``price * piece`` to the bar's VWAP sum; the split trade's price is the close of one bar and the
    open of the next. ``O_START``/``O_END`` are the ts of the bar's first and last piece. Emission
    order = completion order. Arguments as for ``bars_time_cpu`` (``vsize`` : int64 lots > 0).
    """
    n = len(ts)
    m_out = out.shape[0]
    last_ts = g[G_LAST_TS]
    status = ST_OK
    nlut = len(lut)
    last_s = np.int64(-1)
    last_d = np.int64(-1)
    i = start
    while i < n:
        t = ts[i]
        q = qty[i]
        if t < last_ts:
            status = ST_TS_DECREASING
            break
        if q <= 0:
            status = ST_BAD_QTY
            break
        # Same symbol lookup as in the time-bar kernel, written out on purpose: factored into an
        # inlined helper returning (row, status, last_s, last_d) it measured 4x slower
        # (163 -> 41 M trades/s, bench/bench_bars.py, 1 symbol).
        s = np.int64(sym[i])
        if s < nlut:                             # small ids: one load from the direct table
            d = np.int64(lut[s])
            if d < 0:
                d = _dense(keys, vals, sym_ids, g, s)
                if d < 0:
                    status = ST_SYM_FULL
                    break
                lut[s] = d
        elif s < LUT_MAX:
            status = ST_LUT_SMALL
            break
        elif s == last_s:                        # large ids: hash, skipped within a run
            d = last_d
        else:
            d = _dense(keys, vals, sym_ids, g, s)
            if d < 0:
                status = ST_SYM_FULL
                break
            last_s = s
            last_d = d
        v = st[d, F_V] if st[d, F_OPEN] else 0
        if n_out + (v + q) // vsize > m_out:     # bars this trade completes
            status = ST_OUT_FULL
            break
        p = px[i]
        rem = q
        while rem > 0:
            if st[d, F_OPEN] == 0:
                _open(st, d, t, t, p, row0 + i)
            else:
                if p > st[d, F_H]:
                    st[d, F_H] = p
                if p < st[d, F_L]:
                    st[d, F_L] = p
                st[d, F_C] = p
                st[d, F_END] = t
            room = vsize - st[d, F_V]
            take = rem if rem < room else room
            st[d, F_V] += take
            st[d, F_N] += 1
            st[d, F_PVH], st[d, F_PVL] = add_mul_128(st[d, F_PVH], st[d, F_PVL], p, take)
            rem -= take
            if take == room:
                _emit(st, sym_ids, d, t, out, n_out, True)
                n_out += 1
                if rem > 0:
                    st[d, F_TN] -= 1                 # totals count the split trade once
        last_ts = t
        i += 1
    g[G_LAST_TS] = last_ts
    return status, i, n_out


@njit(cache=True, nogil=True)
def flush_volume_cpu(sym_ids, st, g, out, n_out, clear):
    """Emit every open (partial) volume bar, in the order of their first trades; ``clear``
    closes them. ``out`` needs one free row per open bar. Returns the new ``n_out``."""
    nsym = g[G_NSYM]
    cnt = 0
    for d in range(nsym):
        if st[d, F_OPEN]:
            cnt += 1
    ds = np.empty(cnt, dtype=np.int64)
    rows = np.empty(cnt, dtype=np.int64)
    k = 0
    for d in range(nsym):
        if st[d, F_OPEN]:
            ds[k] = d
            rows[k] = st[d, F_ROW]
            k += 1
    order = np.argsort(rows)
    for j in range(cnt):
        d = ds[order[j]]
        _emit(st, sym_ids, d, st[d, F_END], out, n_out, clear)
        n_out += 1
    return n_out


@njit(cache=True, nogil=True)
def count_open_cpu(st, g):
    """Number of open bars (volume-bar flush sizing)."""
    c = 0
    for d in range(g[G_NSYM]):
        if st[d, F_OPEN]:
            c += 1
    return c


# --- order-book imbalance and microprice ----------------------------------------------------------
@njit(cache=True, nogil=True)
def book_imbalance_cpu(bid_px, bid_sz, ask_px, ask_sz, imbalance, microprice):
    """Top-of-book imbalance and microprice per L2 state.

    Parameters
    ----------
    bid_px, ask_px : int64[n], best bid / ask price in ticks
    bid_sz, ask_sz : int64[n], lots at the best bid / ask (>= 0; 0 = that side is empty)
    imbalance : float64[n], out: (bid_sz - ask_sz) / (bid_sz + ask_sz), in [-1, 1]; NaN when both
        sides are empty
    microprice : float64[n], out: size-weighted mid (bid_px * ask_sz + ask_px * bid_sz) /
        (bid_sz + ask_sz) in ticks (leans toward the side with less size); NaN unless both sides
        have size
    """
    for i in range(len(bid_px)):
        b = bid_sz[i]
        a = ask_sz[i]
        tot = np.float64(b) + np.float64(a)
        if tot > 0.0:
            imbalance[i] = (np.float64(b) - np.float64(a)) / tot
        else:
            imbalance[i] = np.nan
        if b > 0 and a > 0:
            microprice[i] = (np.float64(bid_px[i]) * np.float64(a) + np.float64(ask_px[i]) * np.float64(b)) / tot
        else:
            microprice[i] = np.nan
