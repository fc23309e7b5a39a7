"""LOBSTER kernels: CSV parsing and formatting over raw bytes, the replay planner, and the
per-row top-N view rebuilt from the engine's L2 deltas.

Arrays and scalars only; the orchestration, the learning rule's documentation and the error
messages live in ``hpte.engine.md.lobster``.

Prices inside the planner and the view are *ranks*: the index of a price in the sorted array
``prices`` of every distinct price the replay can meet (visible messages and orderbook levels).
Ranks keep the order of prices and make the per-price arrays as small as the number of distinct
prices, whatever the tick size. Side index ``si``: 0 = bids (direction +1), 1 = asks (-1).

The L2 *view* (``vq``, ``vbm``, ``vbest``) is a price-level book over ranks:
  vq    int64[2, L]   quantity at each rank per side (0 = no level)
  vbm   uint64[2, W]  occupancy bit per rank (W = L // 64 + 1)
  vbest int64[2]      best rank per side (bids: highest occupied, asks: lowest), -1 when empty
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit
from numba.extending import register_jitable

from hpte.kernels.enums import ACT_CANCEL, ACT_NEW, ACT_REPLACE, BUY, SELL

from hpte.kernels.book import id_delete, id_find, id_insert, lsb64, msb64

# LOBSTER's encoding of an empty level in the orderbook file.
EMPTY_ASK_PX = 9999999999
EMPTY_BID_PX = -9999999999

# Parser status codes (the engine turns them into messages naming the line).
E_OK = 0
E_COLUMNS = 1        # wrong number of columns (value: columns found)
E_NOT_NUMBER = 2     # a field is not a number (col: 1-based column)
E_RANGE = 3          # a number with too many digits (col)
E_TYPE = 4           # event type not in 1..7 (value)
E_DIRECTION = 5      # direction not +1/-1 (value)
E_SIZE = 6           # size <= 0 on a type 1-4 row (value)
E_PRICE = 7          # price <= 0 on a type 1-4 row (value)
E_ORDER_ID = 8       # negative order id (value)
E_TIME_ORDER = 9     # time earlier than the previous row's (value: ns)

# Planner status codes.
ST_DONE = 0          # every message planned
ST_NEED_ROWS = 1     # the engine-row buffer is too full for the next message's worst case
ST_NEED_LOG = 2      # the learning log is too full for the next message's worst case

# Planner scalars: sc[SC_*].
SC_FREE = 0          # head of the free slot list (-1 none)
SC_HW = 1            # slots never used start here
SC_MASK = 2          # id table size - 1
SC_K = 3             # engine rows written in the current buffer
SC_NLOG = 4          # learning-log entries written
SC_REST = 5          # resting orders (known + seeds)
SC_SEEDS = 6         # seed orders created
SC_LEARN_ADD = 7     # quantity learned into the book (seeded)
SC_LEARN_DEL = 8     # quantity learned out of the book (stale)
SC_LEARN_ROWS = 9    # rows at which something was learned
SC_UNKNOWN = 10      # reduce messages (types 2-4) naming an order the replay does not hold
SC_FROM_SEED = 11    # quantity of reduce messages taken from seeds
SC_FROM_OTHERS = 12  # quantity of reduce messages taken from other known orders of the level
SC_SHORT = 13        # quantity of reduce messages the level did not have (no orderbook)
SC_UNCROSSED = 14    # stale levels removed because a new order would have crossed them
SC_DUPLICATE = 15    # type-1 messages reusing the id of a resting order (the old one is dropped)
SC_TRANSFER = 16     # quantity a delete left at its level (known size > message size) -> seed
SC_ELSEWHERE = 17    # reduce messages naming a known order at another price or side
SC_GONE = 18         # levels that vanished, bids (SC_GONE + 1: asks); gates the stale check
NSC = 24

SEED_BIT = np.uint64(1) << np.uint64(63)  # seed order ids: SEED_BIT | counter (message ids < 2**63)
SEED_BIT_I64 = np.int64(-(1 << 63))        # the same bit pattern as int64 (engine rows are int64)
_U0 = np.uint64(0)
_U1 = np.uint64(1)
_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)


# ---------------------------------------------------------------------------------------------
# Parsing (one pass over the bytes; LF or CRLF line ends; the last line may lack its LF)
# ---------------------------------------------------------------------------------------------
@register_jitable
def _int_field(buf, p, end):
    """Parse an optionally negative decimal integer at buf[p:...] ending at ',' or `end`.

    Returns (value, position after the field, status E_OK / E_NOT_NUMBER / E_RANGE)."""
    neg = False
    if p < end and buf[p] == 45:  # '-'
        neg = True
        p += 1
    v = np.int64(0)
    nd = 0
    while p < end and buf[p] != 44:
        c = np.int64(buf[p]) - 48
        if c < 0 or c > 9:
            return v, p, E_NOT_NUMBER
        nd += 1
        if nd > 18:
            return v, p, E_RANGE
        v = v * 10 + c
        p += 1
    if nd == 0:
        return v, p, E_NOT_NUMBER
    return (-v if neg else v), p, E_OK


@register_jitable
def _time_field(buf, p, end):
    """Seconds after midnight as a decimal string -> int64 ns, exactly: the fraction is padded
    to 9 digits, digits beyond the 9th are checked and truncated. Returns (ns, pos, status)."""
    sec = np.int64(0)
    nd = 0
    while p < end and buf[p] != 44 and buf[p] != 46:
        c = np.int64(buf[p]) - 48
        if c < 0 or c > 9:
            return sec, p, E_NOT_NUMBER
        nd += 1
        if nd > 9:
            return sec, p, E_RANGE
        sec = sec * 10 + c
        p += 1
    if nd == 0:
        return sec, p, E_NOT_NUMBER
    frac = np.int64(0)
    nf = 0
    if p < end and buf[p] == 46:  # '.'
        p += 1
        while p < end and buf[p] != 44:
            c = np.int64(buf[p]) - 48
            if c < 0 or c > 9:
                return sec, p, E_NOT_NUMBER
            if nf < 9:
                frac = frac * 10 + c
                nf += 1
            p += 1
    while nf < 9:
        frac *= 10
        nf += 1
    return sec * 1_000_000_000 + frac, p, E_OK


@register_jitable
def _line_end(buf, pos, n):
    """(end of the line's content, start of the next line, number of commas)."""
    e = pos
    ncom = 0
    while e < n and buf[e] != 10:
        if buf[e] == 44:
            ncom += 1
        e += 1
    nxt = e + 1
    if e > pos and buf[e - 1] == 13:
        e -= 1
    return e, nxt, ncom


@njit(cache=True, nogil=True, _nrt=False)
def parse_messages_cpu(buf, t_ns, typ, oid, size, price, direc):
    """Parse a LOBSTER message file (6 columns per line) into columns.

    Parameters
    ----------
    buf : uint8[nb], the file's bytes (read-only is fine).
    t_ns : int64[>= lines], out: time, ns after midnight.
    typ : int8[...], out: event type 1..7.
    oid : int64[...], out: order id (>= 0).
    size : int64[...], out: shares.
    price : int64[...], out: dollars x 10,000.
    direc : int8[...], out: +1 buy side, -1 sell side.

    Returns
    -------
    (rows, status, col, value) : rows parsed before the first bad line (the bad line is
    ``rows + 1``, 1-based), an ``E_*`` code, the 1-based column and the offending value.
    """
    n = buf.shape[0]
    pos = 0
    row = 0
    prev = np.int64(-1)
    while pos < n:
        e, nxt, ncom = _line_end(buf, pos, n)
        if ncom != 5:
            return row, E_COLUMNS, 0, ncom + 1
        t, p, st = _time_field(buf, pos, e)
        if st != E_OK:
            return row, st, 1, 0
        k, p, st = _int_field(buf, p + 1, e)
        if st != E_OK:
            return row, st, 2, 0
        o, p, st = _int_field(buf, p + 1, e)
        if st != E_OK:
            return row, st, 3, 0
        s, p, st = _int_field(buf, p + 1, e)
        if st != E_OK:
            return row, st, 4, 0
        px, p, st = _int_field(buf, p + 1, e)
        if st != E_OK:
            return row, st, 5, 0
        d, p, st = _int_field(buf, p + 1, e)
        if st != E_OK:
            return row, st, 6, 0
        if k < 1 or k > 7:
            return row, E_TYPE, 2, k
        if o < 0:
            return row, E_ORDER_ID, 3, o
        if d != 1 and d != -1:
            return row, E_DIRECTION, 6, d
        if k <= 4:
            if s <= 0:
                return row, E_SIZE, 4, s
            if px <= 0:
                return row, E_PRICE, 5, px
        if t < prev:
            return row, E_TIME_ORDER, 1, t
        prev = t
        t_ns[row] = t
        typ[row] = k
        oid[row] = o
        size[row] = s
        price[row] = px
        direc[row] = d
        row += 1
        pos = nxt
    return row, E_OK, 0, 0


@njit(cache=True, nogil=True, _nrt=False)
def parse_orderbook_cpu(buf, ncols, out):
    """Parse a LOBSTER orderbook file (``ncols`` integer columns per line) into ``out``
    (int64[>= lines, ncols], row-major as in the file). Returns (rows, status, col, value) like
    ``parse_messages_cpu``."""
    n = buf.shape[0]
    pos = 0
    row = 0
    while pos < n:
        e, nxt, ncom = _line_end(buf, pos, n)
        if ncom != ncols - 1:
            return row, E_COLUMNS, 0, ncom + 1
        p = pos - 1
        for c in range(ncols):
            v, p, st = _int_field(buf, p + 1, e)
            if st != E_OK:
                return row, st, c + 1, 0
            out[row, c] = v
        row += 1
        pos = nxt
    return row, E_OK, 0, 0


# ---------------------------------------------------------------------------------------------
# Formatting (the orderbook file's exact text: integers, commas, LF)
# ---------------------------------------------------------------------------------------------
@register_jitable
def _ndigits(v):
    """Characters of int64 v in decimal (sign included)."""
    k = 1
    if v < 0:
        k = 2
        v = -v
    while v >= 10:
        v //= 10
        k += 1
    return k


@njit(cache=True, nogil=True, _nrt=False)
def format_len_cpu(rows):
    """Bytes ``format_rows_cpu`` writes for int64[n, c] rows."""
    total = 0
    for i in range(rows.shape[0]):
        for j in range(rows.shape[1]):
            total += _ndigits(rows[i, j]) + 1
    return total


@njit(cache=True, nogil=True, _nrt=False)
def format_rows_cpu(rows, out):
    """Write int64[n, c] rows as CSV text (',' between, '\\n' after each row) into uint8 out
    (sized by ``format_len_cpu``). Returns bytes written."""
    p = 0
    for i in range(rows.shape[0]):
        for j in range(rows.shape[1]):
            v = rows[i, j]
            k = _ndigits(v)
            q = p + k - 1
            if v < 0:
                out[p] = 45
                v = -v
            while True:
                out[q] = 48 + v % 10
                v //= 10
                q -= 1
                if v == 0:
                    break
            p += k
            out[p] = 44 if j + 1 < rows.shape[1] else 10
            p += 1
    return p


# ---------------------------------------------------------------------------------------------
# The L2 view over ranks
# ---------------------------------------------------------------------------------------------
@register_jitable
def scan_le(bm, si, r):
    """Highest occupied rank <= r on side si, or -1."""
    if r < 0:
        return -1
    w = r >> 6
    word = bm[si, w] & (_ALL >> np.uint64(63 - (r & 63)))
    while True:
        if word != _U0:
            return (w << 6) + msb64(word)
        w -= 1
        if w < 0:
            return -1
        word = bm[si, w]


@register_jitable
def scan_ge(bm, si, r, L):
    """Lowest occupied rank >= r (< L) on side si, or -1."""
    if r >= L:
        return -1
    w = r >> 6
    word = bm[si, w] & (_ALL << np.uint64(r & 63))
    nw = bm.shape[1]
    while True:
        if word != _U0:
            return (w << 6) + lsb64(word)
        w += 1
        if w >= nw:
            return -1
        word = bm[si, w]


@register_jitable
def view_set(vq, vbm, vbest, si, r, q):
    """Set the quantity at rank r of side si to q (>= 0), keeping bits and best up to date."""
    old = vq[si, r]
    vq[si, r] = q
    if old == 0 and q > 0:
        vbm[si, r >> 6] |= _U1 << np.uint64(r & 63)
        b = vbest[si]
        if b < 0 or (si == 0 and r > b) or (si == 1 and r < b):
            vbest[si] = r
    elif old > 0 and q == 0:
        vbm[si, r >> 6] &= ~(_U1 << np.uint64(r & 63))
        if vbest[si] == r:
            if si == 0:
                vbest[si] = scan_le(vbm, si, r - 1)
            else:
                vbest[si] = scan_ge(vbm, si, r + 1, vq.shape[1])


@register_jitable
def view_next(vq, vbm, si, r):
    """The next worse occupied rank after r on side si, or -1."""
    if si == 0:
        return scan_le(vbm, si, r - 1)
    return scan_ge(vbm, si, r + 1, vq.shape[1])


@register_jitable
def view_row(vq, vbm, vbest, prices, nlev, out, i):
    """Write the top ``nlev`` levels as LOBSTER orderbook row i of out (int64[n, 4 nlev]):
    ask_px, ask_sz, bid_px, bid_sz per level, empty levels as EMPTY_*_PX, 0.

    Returns (rank of the nlev-th bid level, of the nlev-th ask level), -1 where the side has
    fewer levels."""
    nth_b = -1
    nth_a = -1
    for si in range(2):
        r = vbest[si]
        c = 2 if si == 0 else 0
        for k in range(nlev):
            if r >= 0:
                out[i, 4 * k + c] = prices[r]
                out[i, 4 * k + c + 1] = vq[si, r]
                if k == nlev - 1:
                    if si == 0:
                        nth_b = r
                    else:
                        nth_a = r
                    break
                r = view_next(vq, vbm, si, r)
            else:
                out[i, 4 * k + c] = EMPTY_BID_PX if si == 0 else EMPTY_ASK_PX
                out[i, 4 * k + c + 1] = 0
    return nth_b, nth_a


@njit(cache=True, nogil=True, _nrt=False)
def rows_from_deltas_cpu(D, c_seq, c_side, c_px, c_qty, seq0, row_of, r_lo, r_hi,
                         prices, vq, vbm, vbest, nlev, out, plan_rows):
    """Apply one engine call's L2 deltas to the view, write the top ``nlev`` after every
    message row and compare it with the planner's row.

    Parameters
    ----------
    D : int64[nd, ncols], the engine's delta rows (schema.DELTA_COLUMNS, row-major).
    c_seq, c_side, c_px, c_qty : int, column indices of seq, side, price_ticks, qty in D.
    seq0 : int, the engine seq of the call's first input row.
    row_of : int64[k], message row of each engine input row of the call (non-decreasing).
    r_lo, r_hi : int, message rows [r_lo, r_hi) this call covers.
    prices : int64[L], the sorted price universe (rank -> price).
    vq, vbm, vbest : the view (module docstring), updated in place.
    nlev : int, levels per side written.
    out : int64[n, 4 nlev], out: orderbook rows.
    plan_rows : int64[>= r_hi - r_lo, 4 nlev], the planner's rows r_lo.. (lobster_plan_cpu).

    Returns
    -------
    (bad, row, used) : bad = -1, or the index in D of a delta whose price is not in ``prices``;
    row = -1, or the first message row where the engine's view differs from the plan; used =
    deltas consumed (all of them, nd, unless a delta belongs to no row of the range).
    """
    nd = D.shape[0]
    L = prices.shape[0]
    j = 0
    first = -1
    for r in range(r_lo, r_hi):
        while j < nd and row_of[D[j, c_seq] - seq0] == r:
            px = D[j, c_px]
            lo = 0
            hi = L
            while lo < hi:
                mid = (lo + hi) >> 1
                if prices[mid] < px:
                    lo = mid + 1
                else:
                    hi = mid
            if lo >= L or prices[lo] != px:
                return j, -1, j
            si = 0 if D[j, c_side] == BUY else 1
            view_set(vq, vbm, vbest, si, lo, D[j, c_qty])
            j += 1
        view_row(vq, vbm, vbest, prices, nlev, out, r)
        if first < 0:
            for c in range(4 * nlev):
                if out[r, c] != plan_rows[r - r_lo, c]:
                    first = r
                    break
    return -1, first, j


# ---------------------------------------------------------------------------------------------
# The replay planner: messages (+ orderbook rows) -> engine order rows, learning edge levels
# ---------------------------------------------------------------------------------------------
class PlanState(NamedTuple):
    """Planner state, kept between calls (engine/md/lobster.py ``_alloc_plan`` sizes it)."""
    vq: np.ndarray       # int64[2, L]       the replay's L2 view (module docstring)
    vbm: np.ndarray      # uint64[2, W]
    vbest: np.ndarray    # int64[2]
    lv: np.ndarray       # int64[2, L, NLV]  per level: LV_*
    od: np.ndarray       # int64[P, NOD]     known (message) orders by slot: OD_*
    tab: np.ndarray      # int32[T]          order id -> slot + 1 (open addressing)
    oid: np.ndarray      # uint64[P]         order id by slot (the id index's key column)
    wlim: np.ndarray     # int64[2]          learnable region: bids rank < wlim[0], asks rank > wlim[1]
    sc: np.ndarray       # int64[NSC]        scalars and counters, SC_*


# Per-level fields: P.lv[si, r, LV_*]
LV_SEED_ID = 0   # id of the level's seed order (as int64 bits; 0 = none)
LV_SEED_QTY = 1  # its quantity
LV_HEAD = 2      # first known order slot in FIFO order (-1 none)
LV_TAIL = 3      # last
NLV = 4

# Per-order fields: P.od[s, OD_*]
OD_QTY = 0       # open quantity
OD_SI = 1        # side index
OD_RANK = 2      # price rank
OD_NEXT = 3      # FIFO next (also the free list)
OD_PREV = 4      # FIFO previous
NOD = 5

# Engine rows written by the planner: O[k, OC_*] (int64; order ids as uint64 bit patterns)
OC_TS = 0        # ns
OC_OID = 1       # order id
OC_SIDE = 2      # +1 / -1
OC_PX = 3        # price (the file's units)
OC_QTY = 4       # quantity (NEW, REPLACE: new open quantity; CANCEL: quantity cancelled)
OC_ACT = 5       # ACT_NEW / ACT_CANCEL / ACT_REPLACE
OC_ROW = 6       # message row the engine row belongs to
NOC = 7

# Learning log: G[k, LG_*], one entry per learned level
LG_ROW = 0       # 0-based message row (orderbook line - 1)
LG_SIDE = 1      # +1 bid, -1 ask
LG_PRICE = 2
LG_BEFORE = 3    # the replay's quantity there before learning
LG_AFTER = 4     # the file's quantity (0: a stale level removed)
NLG = 5


@register_jitable
def _vq_add(P, si, r, dq):
    """Change the view's quantity at (si, r) by dq, counting levels that vanish (SC_GONE + si)."""
    q = P.vq[si, r] + dq
    view_set(P.vq, P.vbm, P.vbest, si, r, q)
    if q == 0 and dq != 0:
        P.sc[SC_GONE + si] += 1


@register_jitable
def _emit(P, O, ts, oid, si, r, q, action, prices, i):
    k = P.sc[SC_K]
    O[k, OC_TS] = ts
    O[k, OC_OID] = oid
    O[k, OC_SIDE] = BUY if si == 0 else SELL
    O[k, OC_PX] = prices[r]
    O[k, OC_QTY] = q
    O[k, OC_ACT] = action
    O[k, OC_ROW] = i
    P.sc[SC_K] = k + 1


@register_jitable
def _seed_set(P, O, ts, si, r, q, prices, i):
    """Make the seed order of level (si, r) hold q (NEW, REPLACE or CANCEL)."""
    old = P.lv[si, r, LV_SEED_QTY]
    if q == old:
        return
    if old == 0:
        P.sc[SC_SEEDS] += 1
        sid = SEED_BIT_I64 | P.sc[SC_SEEDS]
        P.lv[si, r, LV_SEED_ID] = sid
        P.sc[SC_REST] += 1
        _emit(P, O, ts, sid, si, r, q, ACT_NEW, prices, i)
    elif q == 0:
        _emit(P, O, ts, P.lv[si, r, LV_SEED_ID], si, r, old, ACT_CANCEL, prices, i)
        P.lv[si, r, LV_SEED_ID] = 0
        P.sc[SC_REST] -= 1
    else:
        _emit(P, O, ts, P.lv[si, r, LV_SEED_ID], si, r, q, ACT_REPLACE, prices, i)
    P.lv[si, r, LV_SEED_QTY] = q
    _vq_add(P, si, r, q - old)


@register_jitable
def _known_cancel(P, O, ts, s, prices, i):
    od = P.od
    si = od[s, OD_SI]
    r = od[s, OD_RANK]
    q = od[s, OD_QTY]
    _emit(P, O, ts, np.int64(P.oid[s]), si, r, q, ACT_CANCEL, prices, i)
    p = od[s, OD_PREV]
    n = od[s, OD_NEXT]
    if p >= 0:
        od[p, OD_NEXT] = n
    else:
        P.lv[si, r, LV_HEAD] = n
    if n >= 0:
        od[n, OD_PREV] = p
    else:
        P.lv[si, r, LV_TAIL] = p
    id_delete(P.tab, 0, P.sc[SC_MASK], P.oid, 0, P.oid[s])
    od[s, OD_NEXT] = P.sc[SC_FREE]
    P.sc[SC_FREE] = s
    P.sc[SC_REST] -= 1
    _vq_add(P, si, r, -q)


@register_jitable
def _known_reduce(P, O, ts, s, q, prices, i):
    """REPLACE known order s down to q > 0 at its price (keeps its priority)."""
    si = P.od[s, OD_SI]
    r = P.od[s, OD_RANK]
    old = P.od[s, OD_QTY]
    P.od[s, OD_QTY] = q
    _emit(P, O, ts, np.int64(P.oid[s]), si, r, q, ACT_REPLACE, prices, i)
    _vq_add(P, si, r, q - old)


@register_jitable
def _known_new(P, O, ts, key, si, r, q, prices, i):
    od = P.od
    s = P.sc[SC_FREE]
    if s >= 0:
        P.sc[SC_FREE] = od[s, OD_NEXT]
    else:
        s = P.sc[SC_HW]
        P.sc[SC_HW] = s + 1
    P.oid[s] = key
    od[s, OD_QTY] = q
    od[s, OD_SI] = si
    od[s, OD_RANK] = r
    t = P.lv[si, r, LV_TAIL]
    od[s, OD_PREV] = t
    od[s, OD_NEXT] = -1
    if t >= 0:
        od[t, OD_NEXT] = s
    else:
        P.lv[si, r, LV_HEAD] = s
    P.lv[si, r, LV_TAIL] = s
    id_insert(P.tab, 0, P.sc[SC_MASK], key, s)
    P.sc[SC_REST] += 1
    _emit(P, O, ts, np.int64(key), si, r, q, ACT_NEW, prices, i)
    _vq_add(P, si, r, q)


@register_jitable
def _level_take(P, O, ts, si, r, d, prices, i):
    """Remove quantity d from level (si, r): its seed first, then its known orders oldest
    first. Returns (taken from the seed, taken from known orders)."""
    t_seed = 0
    sq = P.lv[si, r, LV_SEED_QTY]
    if sq > 0 and d > 0:
        t_seed = min(sq, d)
        _seed_set(P, O, ts, si, r, sq - t_seed, prices, i)
        d -= t_seed
    t_known = 0
    s = P.lv[si, r, LV_HEAD]
    while d > 0 and s >= 0:
        nxt = P.od[s, OD_NEXT]
        q = P.od[s, OD_QTY]
        if q <= d:
            _known_cancel(P, O, ts, s, prices, i)
            t_known += q
            d -= q
        else:
            _known_reduce(P, O, ts, s, q - d, prices, i)
            t_known += d
            d = 0
        s = nxt
    return t_seed, t_known


@register_jitable
def _set_level(P, O, G, ts, si, r, q, prices, i):
    """Learning: make the replay's quantity at (si, r) equal q; log it."""
    before = P.vq[si, r]
    if q > before:
        _seed_set(P, O, ts, si, r, P.lv[si, r, LV_SEED_QTY] + q - before, prices, i)
        P.sc[SC_LEARN_ADD] += q - before
    else:
        _level_take(P, O, ts, si, r, before - q, prices, i)
        P.sc[SC_LEARN_DEL] += before - q
    k = P.sc[SC_NLOG]
    G[k, LG_ROW] = i
    G[k, LG_SIDE] = BUY if si == 0 else SELL
    G[k, LG_PRICE] = prices[r]
    G[k, LG_BEFORE] = before
    G[k, LG_AFTER] = q
    P.sc[SC_NLOG] = k + 1


@register_jitable
def _in_region(wlim, si, r):
    return r < wlim[0] if si == 0 else r > wlim[1]


@register_jitable
def _stale_level(vq, vbm, vbest, wlim, e_rank, i, si, nlev):
    """A level among the replay's top nlev on side si, in the learnable region, that the file's
    row i does not have (stale), or -1."""
    r = vbest[si]
    for _k in range(nlev):
        if r < 0:
            return -1
        if _in_region(wlim, si, r):
            found = False
            for k2 in range(nlev):
                if e_rank[i, si, k2] == r:
                    found = True
            if not found:
                return r
        r = view_next(vq, vbm, si, r)
    return -1


@register_jitable
def _e_size(E, i, si, k):
    """Size of level k on side si in orderbook row i (ask_sz at 4k+1, bid_sz at 4k+3)."""
    return E[i, 4 * k + 3] if si == 0 else E[i, 4 * k + 1]


@register_jitable
def _needs_learning(vq, vbm, vbest, wlim, e_rank, E, i, si, nlev, may_be_stale):
    """Would ``_learn_side`` change anything on side si at row i? (The cheap common case.)

    The replay's top nlev can reach into the region only when the region is everything (row 1)
    or a level of the side vanished during the message (``may_be_stale``); otherwise its nlev
    best levels are still at or better than the row before's nlev-th."""
    for k in range(nlev):
        r = e_rank[i, si, k]
        if r >= 0 and _in_region(wlim, si, r) and vq[si, r] != _e_size(E, i, si, k):
            return True
    if not may_be_stale:
        return False
    return _stale_level(vq, vbm, vbest, wlim, e_rank, i, si, nlev) >= 0


@register_jitable
def _learn_side(P, O, G, ts, si, e_rank, E, i, nlev, prices):
    """The learning rule for one side at row i (engine/md/lobster.py, module docstring)."""
    # 1. levels of the file's row inside the learnable region: take their quantity
    for k in range(nlev):
        r = e_rank[i, si, k]
        q = _e_size(E, i, si, k)
        if r >= 0 and _in_region(P.wlim, si, r) and P.vq[si, r] != q:
            _set_level(P, O, G, ts, si, r, q, prices, i)
    # 2. levels the replay now shows inside the region that the file's row lacks are stale
    while True:
        r = _stale_level(P.vq, P.vbm, P.vbest, P.wlim, e_rank, i, si, nlev)
        if r < 0:
            break
        _set_level(P, O, G, ts, si, r, 0, prices, i)


@register_jitable
def _reduce(P, O, ts, k, key, si, r, d, prices, i):
    """Message types 2-4: the level loses exactly d; the named order first (module docstring)."""
    s = id_find(P.tab, 0, P.sc[SC_MASK], P.oid, 0, key)
    if s >= 0 and (P.od[s, OD_SI] != si or P.od[s, OD_RANK] != r):
        P.sc[SC_ELSEWHERE] += 1
        s = -1
    rem = d
    if s < 0:
        P.sc[SC_UNKNOWN] += 1
    else:
        q = P.od[s, OD_QTY]
        if k == 3:
            # delete: the order leaves; a known size above the message's was reduced unseen
            # and the difference belongs to other (unknown) orders of the level
            _known_cancel(P, O, ts, s, prices, i)
            if q > d:
                P.sc[SC_TRANSFER] += q - d
                _seed_set(P, O, ts, si, r, P.lv[si, r, LV_SEED_QTY] + q - d, prices, i)
                rem = 0
            else:
                rem = d - q
        elif q > d:
            _known_reduce(P, O, ts, s, q - d, prices, i)
            rem = 0
        else:
            _known_cancel(P, O, ts, s, prices, i)
            rem = d - q
    if rem > 0:
        t_seed, t_known = _level_take(P, O, ts, si, r, rem, prices, i)
        P.sc[SC_FROM_SEED] += t_seed
        P.sc[SC_FROM_OTHERS] += t_known
        P.sc[SC_SHORT] += rem - t_seed - t_known


@register_jitable
def _add(P, O, ts, key, si, r, q, prices, i):
    """Message type 1."""
    s = id_find(P.tab, 0, P.sc[SC_MASK], P.oid, 0, key)
    if s >= 0:
        P.sc[SC_DUPLICATE] += 1
        _known_cancel(P, O, ts, s, prices, i)
    # a new limit order never crosses in LOBSTER: opposite levels it would cross are stale
    o = 1 - si
    while P.vbest[o] >= 0 and ((si == 0 and P.vbest[o] <= r) or (si == 1 and P.vbest[o] >= r)):
        P.sc[SC_UNCROSSED] += 1
        _level_take(P, O, ts, o, P.vbest[o], P.vq[o, P.vbest[o]], prices, i)
    _known_new(P, O, ts, key, si, r, q, prices, i)


@njit(cache=True, nogil=True, _nrt=False)
def lobster_plan_cpu(P, O, G, start, stop, ts_, typ, oid, size, rank, direc, e_rank, E, has_e,
                     nlev, prices, plan_rows):
    """Turn messages start..stop-1 into engine order rows, applying the learning rule after each.

    Parameters
    ----------
    P : PlanState, updated in place.
    O : int64[C, NOC], out: engine rows (OC_* columns) from row P.sc[SC_K] on (the caller
        resets SC_K per engine call).
    G : int64[C2, NLG], out: learning log (LG_* columns) from row P.sc[SC_NLOG] on.
    start, stop : int, message rows to plan (stop - start <= len(plan_rows)).
    ts_, typ, oid, size, direc : the message columns (engine/md/lobster.py ``LobsterMessages``).
    rank : int64[n], rank of each row's price in ``prices`` (-1 for types 5-7).
    e_rank : int32[n, 2, nlev], rank of the file's level k on side si at row i (-1: empty).
    E : int64[n, >= 4 nlev], the orderbook file's rows (sizes are read from it).
    has_e : bool, whether e_rank / E hold an orderbook file (else learning is off).
    nlev : int, visible levels per side.
    prices : int64[L], rank -> price.
    plan_rows : int64[>= stop - start, 4 nlev], out: the planner's view after row i in
        ``plan_rows[i - start]``.

    Returns
    -------
    (status, row) : ST_DONE and stop, or ST_NEED_* and the row to resume at (rows before it are
    complete: all their engine rows are in O).
    """
    n = stop
    cap = O.shape[0]
    gcap = G.shape[0]
    for i in range(start, n):
        # worst case of one message: its own rows, a take over every resting order, one
        # partial replace and one seed row per level touched (learning: <= 2 nlev + stale)
        if cap - P.sc[SC_K] < 16 + 8 * nlev + 3 * P.sc[SC_REST]:
            return ST_NEED_ROWS, i
        if gcap - P.sc[SC_NLOG] < 8 + 2 * nlev + P.sc[SC_REST]:
            return ST_NEED_LOG, i
        k = typ[i]
        si = 0 if direc[i] == 1 else 1
        gone_b = P.sc[SC_GONE]
        gone_a = P.sc[SC_GONE + 1]
        if k == 1:
            _add(P, O, ts_[i], np.uint64(oid[i]), si, rank[i], size[i], prices, i)
        elif k <= 4:
            _reduce(P, O, ts_[i], k, np.uint64(oid[i]), si, rank[i], size[i], prices, i)
        # types 5 (hidden execution), 6 (cross), 7 (halt): the visible book does not change
        if has_e:
            learned = False
            for side_i in range(2):
                gone = P.sc[SC_GONE + side_i] != (gone_b if side_i == 0 else gone_a)
                everything = P.wlim[0] >= P.vq.shape[1] if side_i == 0 else P.wlim[1] < 0
                if _needs_learning(P.vq, P.vbm, P.vbest, P.wlim, e_rank, E, i, side_i, nlev,
                                   gone or everything):
                    _learn_side(P, O, G, ts_[i], side_i, e_rank, E, i, nlev, prices)
                    learned = True
            if learned:
                P.sc[SC_LEARN_ROWS] += 1
        # the region for the next row: beyond the N-th visible level; none when fewer are shown
        rb, ra = view_row(P.vq, P.vbm, P.vbest, prices, nlev, plan_rows, i - start)
        P.wlim[0] = rb if rb >= 0 else -1
        P.wlim[1] = ra if ra >= 0 else P.vq.shape[1]
    return ST_DONE, n
