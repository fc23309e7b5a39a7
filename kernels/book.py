"""Order-book kernels: price ladder, per-level FIFO in a preallocated pool, id index, bitmaps.

Many books live in one set of flat arrays (book-major). Per book b, ``bk[b, F_*]`` holds its
scalars: where its ladder, pool and id table start in the flat arrays, their sizes, the best
levels, counters. Everything below is written once as ``register_jitable`` functions (scalars
and arrays in, no allocation, no exceptions, no Python objects), so the same per-order step can
be compiled for the CPU (drivers in kernels/match_cpu.py) and for CUDA.

Inlining: the per-row functions take the whole state as NamedTuples, which numba flattens into
~100-240 scalar arguments per call; LLVM declines to inline such big callees, and the calls
alone cost ~100 ns per row (measured: 126 ns/row with calls, 35 ns/row inlined, add+cancel
rows). So the large per-row functions are inlined at numba IR level (inline="always"); the
small leaves are inlined by LLVM anyway. The price is a longer cold compile (cached after).

Units: prices int64 ticks, quantities int64 lots, times int64 ns. Slots and level indices are
local to their book (0-based inside the book's segment), so a book's segment can be moved
without rewriting links.

State tuple ``S`` (see engine/book_state.py for allocation):
  bk      int64[B, NF]   per-book scalars, F_* below
  lv_head int32[L]       first order slot of each level (-1 empty)
  lv_tail int32[L]       last order slot
  lv_qty  int64[L]       total resting quantity of each level
  lv_cnt  int32[L]       resting orders at each level
  bm0     uint64[L/64]   occupancy bit per level
  bm1     uint64[1]      unused (was: occupancy bit per bm0 word; kept so the tuple's type stays)
  o_id    uint64[P]      order id per pool slot
  o_qty   int64[P]       leaves quantity
  o_px    int64[P]       price
  o_next  int32[P]       next slot in the level FIFO (also the free list)
  o_prev  int32[P]       previous slot in the level FIFO
  o_acct  uint32[P]      account
  o_flags uint8[P]       bit0 sell, bits1-2 tif, bit3 post-only
  tab     int32[T]       open-addressing id index: local slot + 1, 0 = empty
  o_arow  int32[P]       (risk) account row of each order; empty without risk
  o_exp   int64[P]       good-till-date expiry (ns), 0 = none; stale on free slots (only
                         slots the id index maps to count). For a waiting stop (flag FL_STOP,
                         never good-till-date) its stop price (ticks) instead: no pool array
                         more for stops; reset to 0 when the stop triggers
  o_rsv   int64[P]       iceberg reserve (lots hidden behind the displayed slice o_qty); 0 on
                         every other slot (an iceberg leaving the book clears it). Empty (length
                         0, with o_dsp) until the engine's first iceberg: a NEW iceberg row
                         finding them empty returns ST_NEED_ICE and the host sizes both like
                         the pool; read through rsv_at where the slot may not be an iceberg
  o_dsp   int64[P]       iceberg slice size (lots); valid only on slots flagged FL_ICE
"""
from __future__ import annotations

import warnings

import numpy as np
from numba.core.errors import NumbaIRAssumptionWarning
from numba.extending import register_jitable

from . import _inline_typing  # noqa: F401  (compile time: inlined functions are not compiled on their own)

from hpte.kernels.risk.breaker import (
    B_VELOCITY_TICKS, B_VELOCITY_WINDOW_NS, INT64_MIN, K_STATE, K_VA_PX, K_VA_TS, UNSET,
    band_limits, brk_begin_row, brk_pause, velocity_breach, velocity_trade,
)
from .emit import emit_delta, emit_event, emit_fill  # noqa: F401  (re-exported)
from hpte.kernels.risk.checks import G_NEED_PX, risk_fill_book, risk_release_book, risk_renotional, risk_row_book

from .enums import (
    ACT_CANCEL, ACT_NEW, ACT_REPLACE, BUY, EV_ACCEPTED, EV_CANCELLED, EV_EXPIRED, EV_FILLED,
    EV_PARTIALLY_FILLED, EV_REJECTED, EV_REPLACED, EV_TRIGGERED, OT_LIMIT, OT_MARKET, OT_STOP, OT_STOP_LIMIT,
    R_DUPLICATE_ORDER_ID, R_INVALID_STOP_PRICE, R_INVALID_STOP_TIF, R_STOP_NOT_SUPPORTED, R_UNEXPECTED_STOP_PRICE,
    R_FOK_NOT_FILLABLE, R_INVALID_ACTION, R_INVALID_ORDER_TYPE, R_INVALID_POST_ONLY,
    R_INVALID_PRICE, R_INVALID_QTY, R_INVALID_SIDE, R_INVALID_TIF, R_NONE, R_NOT_OWNER,
    R_EXPIRE_IN_PAST, R_EXPIRE_TIME, R_ICEBERG_NOT_SUPPORTED, R_INVALID_DISPLAY_QTY, R_INVALID_EXPIRE, R_POST_ONLY_WOULD_TAKE, R_PRICE_BAND, R_SELF_TRADE, R_UNKNOWN_ORDER, R_VELOCITY, RR_SYMBOL_PAUSED,
    SELL, STP_CANCEL_BOTH, TS_PAUSED,
    STP_CANCEL_NEWEST, STP_CANCEL_OLDEST, STP_DECREMENT, STP_NONE, TIF_DAY, TIF_FOK, TIF_GTC, TIF_IOC,
)

# numba's IR inliner trips its own pedantic scope check on these functions (harmless: the
# compiled code is checked against the plain-Python reference by the test suite).
warnings.filterwarnings("ignore", category=NumbaIRAssumptionWarning)

# Per-book scalar fields: bk[b, F_*]
F_BASE = 0      # price (ticks) of ladder level 0
F_NLEV = 1      # ladder levels (multiple of LEVEL_BLOCK, may be 0)
F_LOFF = 2      # offset of level 0 in the flat level arrays (multiple of LEVEL_BLOCK)
F_BID = 3       # best bid level (local index), -1 when no bids
F_ASK = 4       # best ask level, -1 when no asks
F_POFF = 5      # offset of slot 0 in the flat pool
F_PCAP = 6      # pool slots
F_FREE = 7      # head of the free list (local slot), -1 when empty
F_HW = 8        # slots never used yet start here
F_TOFF = 9      # offset of the id table
F_TMASK = 10    # id table size - 1 (size is a power of two >= 2 * pool slots)
F_NREST = 11    # resting orders
F_BIDQTY = 12   # total resting bid quantity
F_ASKQTY = 13   # total resting ask quantity
F_SYM = 14      # symbol of this book
F_PHEAD = 15    # (risk) first parked order (local slot), -1 none: orders taken while the
F_PTAIL = 16    #   symbol is paused wait outside the ladder, in arrival order, for the auction
F_NPARK = 17    # parked orders
# Matching algorithm of the book (README "Matching algorithms"; engine/matching.py sets them)
F_ALGO = 18     # optional allocation steps, ALG_* bits; 0 = FIFO (the fast path)
F_MINALLOC = 19  # pro-rata step: an allocation below this many lots becomes 0
F_FIFOPCT = 20  # FIFO-share step: percent of what is left, allocated in time priority
F_LMMPCT = 21   # LMM step: percent of what is left, to the lead-market-maker accounts
F_TOPB = 22     # TOP order of the bid side: local slot + 1, 0 = none
F_TOPA = 23     # TOP order of the ask side: local slot + 1, 0 = none
F_NLMM = 24     # lead-market-maker accounts of the book (at most MAX_LMM)
F_LMM0 = 25     # the LMM accounts: bk[b, F_LMM0 : F_LMM0 + F_NLMM]
MAX_LMM = 7
F_NEXP = 32     # earliest expire_ts_ns (ns) of the book's good-till-date orders, 0 = none (may be
                #   stale-early after a cancel: the sweep then finds nothing due and recomputes it)
# Stop orders (README "Stop and stop-limit orders"): untriggered stops wait in pool slots outside
# the ladder, in a list in acceptance order (linked through o_next / o_prev like the parked list)
F_NSLC = 33     # icebergs: replenishments still to come, sum of ceil(o_rsv / o_dsp) over the book
                #   (0: no reserve anywhere, the matching loops never look at o_rsv); also bounds
                #   the extra fills a row may produce (ice_room)
F_LAST = 34     # price (ticks) of the book's last trade, 0 = none yet
F_SHEAD = 35    # first untriggered stop (local slot), -1 none
F_STAIL = 36    # last untriggered stop
F_NSTOP = 37    # untriggered stops (0: the step never looks at them: the FIFO path stays as it was)
F_SBMIN = 38    # lowest stop price of the waiting buy stops, 0 = none; F_SSMAX: highest of the
F_SSMAX = 39    #   sell stops. Both may be stale-wide after a cancel (a scan recomputes them)
NF = 40

# Allocation steps (bits of bk[b, F_ALGO]); steps 0 (R >= T: everything fills) and 5 (FIFO
# residual) always apply, so a book with no bit set is plain FIFO
ALG_TOP = 1
ALG_LMM = 2
ALG_FIFO = 4
ALG_PRO = 8

LEVEL_BLOCK = 64    # ladder sizes and offsets are multiples of this (one bm0 word); a ladder may
                    # be empty (0 levels: a book that never held an order)

# Kernel return status
ST_OK = 0
ST_NEED_POOL = 1     # book needs more pool slots (and id table)
ST_NEED_LADDER = 2   # order may rest outside the book's ladder
ST_NEED_OUTPUT = 3   # output region too small for the worst case of the next order
ST_NEED_AUCTION = 4  # (risk) the row's symbol must reopen by call auction before the row
ST_NEED_MAP = 5      # (risk) the open-order map of the risk state is half full
ST_NEED_ICE = 6      # a NEW iceberg row found the iceberg arrays (o_rsv, o_dsp) empty

FL_SELL = 1
FL_POST = 8
FL_PARKED = 16
FL_STOP = 32     # an untriggered stop (in the book's stop list, not in the ladder)
FL_SMKT = 64     # ... a stop-market one (a MARKET order once triggered; o_px 0)
FL_ICE = 128     # an iceberg (o_dsp is its slice size; README "Iceberg orders")

_U1 = np.uint64(1)
_U0 = np.uint64(0)
_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)
_HMUL = np.uint64(0x9E3779B97F4A7C15)


# ---------------------------------------------------------------------------------------------
# Bit helpers (portable: plain integer arithmetic, no intrinsics)
# ---------------------------------------------------------------------------------------------
@register_jitable
def msb64(x):
    """Index of the highest set bit of a non-zero uint64."""
    n = 0
    if x >> np.uint64(32):
        x = x >> np.uint64(32)
        n += 32
    if x >> np.uint64(16):
        x = x >> np.uint64(16)
        n += 16
    if x >> np.uint64(8):
        x = x >> np.uint64(8)
        n += 8
    if x >> np.uint64(4):
        x = x >> np.uint64(4)
        n += 4
    if x >> np.uint64(2):
        x = x >> np.uint64(2)
        n += 2
    if x >> np.uint64(1):
        n += 1
    return n


@register_jitable
def lsb64(x):
    """Index of the lowest set bit of a non-zero uint64."""
    return msb64(x & (~x + _U1))


@register_jitable
def bit_set(bm0, bm1, g):
    """Mark global level g occupied. (bm1 is no longer kept: books own whole bm0 words but may
    share a bm1 word, which books matched on different threads would then write at once.)"""
    bm0[g >> 6] |= _U1 << np.uint64(g & 63)


@register_jitable
def bit_clear(bm0, bm1, g):
    """Mark global level g empty."""
    bm0[g >> 6] &= ~(_U1 << np.uint64(g & 63))


@register_jitable
def scan_down(bm0, bm1, g, lo):
    """Highest occupied global level in [lo, g], or -1. lo is a multiple of LEVEL_BLOCK (64: a
    book owns whole bm0 words). Scans the book's bm0 words downwards (a word covers 64 levels:
    a 1,024-level ladder is 16 words)."""
    if g < lo:
        return -1
    w = g >> 6
    word = bm0[w] & (_ALL >> np.uint64(63 - (g & 63)))
    lw = lo >> 6
    while word == _U0:
        if w <= lw:
            return -1
        w -= 1
        word = bm0[w]
    return (w << 6) + msb64(word)


@register_jitable
def scan_up(bm0, bm1, g, hi):
    """Lowest occupied global level in [g, hi), or -1. hi is a multiple of LEVEL_BLOCK."""
    if g >= hi:
        return -1
    w = g >> 6
    word = bm0[w] & (_ALL << np.uint64(g & 63))
    hw = (hi >> 6) - 1
    while word == _U0:
        if w >= hw:
            return -1
        w += 1
        word = bm0[w]
    return (w << 6) + lsb64(word)


# ---------------------------------------------------------------------------------------------
# Order-id index: linear probing, backward-shift deletion, values = local slot + 1
# ---------------------------------------------------------------------------------------------
@register_jitable
def id_hash(key, mask):
    x = key * _HMUL
    x = x ^ (x >> np.uint64(29))
    return np.int64(x & np.uint64(mask))


@register_jitable
def id_find(tab, toff, mask, o_id, poff, key):
    """Local slot of order `key` in this book, or -1."""
    i = id_hash(key, mask)
    while True:
        v = tab[toff + i]
        if v == 0:
            return -1
        s = np.int64(v) - 1
        if o_id[poff + s] == key:
            return s
        i = (i + 1) & mask


@register_jitable
def id_insert(tab, toff, mask, key, slot):
    i = id_hash(key, mask)
    while tab[toff + i] != 0:
        i = (i + 1) & mask
    tab[toff + i] = slot + 1


@register_jitable(inline="always")
def id_delete(tab, toff, mask, o_id, poff, key):
    i = id_hash(key, mask)
    while True:
        v = tab[toff + i]
        if v == 0:
            return
        if o_id[poff + np.int64(v) - 1] == key:
            break
        i = (i + 1) & mask
    j = i
    while True:
        j = (j + 1) & mask
        v = tab[toff + j]
        if v == 0:
            break
        k = id_hash(o_id[poff + np.int64(v) - 1], mask)
        # leave the entry at j if its home k lies cyclically in (i, j]
        if i <= j:
            if i < k and k <= j:
                continue
        else:
            if i < k or k <= j:
                continue
        tab[toff + i] = v
        i = j
    tab[toff + i] = 0


# ---------------------------------------------------------------------------------------------
# Level and pool primitives
# ---------------------------------------------------------------------------------------------
@register_jitable
def level_unlink(S, poff, g, s):
    """Remove local slot s from the FIFO of global level g (counts untouched)."""
    p = S.o_prev[poff + s]
    n = S.o_next[poff + s]
    if p >= 0:
        S.o_next[poff + p] = n
    else:
        S.lv_head[g] = n
    if n >= 0:
        S.o_prev[poff + n] = p
    else:
        S.lv_tail[g] = p


@register_jitable
def level_append(S, poff, g, s):
    t = S.lv_tail[g]
    S.o_prev[poff + s] = t
    S.o_next[poff + s] = -1
    if t >= 0:
        S.o_next[poff + t] = s
    else:
        S.lv_head[g] = s
    S.lv_tail[g] = s


@register_jitable
def slot_free(S, b, poff, s):
    """Return local slot s to book b's free list; an order leaving the book loses TOP."""
    S.o_next[poff + s] = np.int32(S.bk[b, F_FREE])
    S.bk[b, F_FREE] = s
    if S.bk[b, F_TOPB] == s + 1:
        S.bk[b, F_TOPB] = 0
    if S.bk[b, F_TOPA] == s + 1:
        S.bk[b, F_TOPA] = 0


@register_jitable
def top_lose(S, b, s):
    """Local slot s (replaced) is no longer its side's TOP order."""
    if S.bk[b, F_TOPB] == s + 1:
        S.bk[b, F_TOPB] = 0
    if S.bk[b, F_TOPA] == s + 1:
        S.bk[b, F_TOPA] = 0


@register_jitable
def top_gain(S, b, s, side, lvl):
    """A NEW order (local slot s, about to rest at local level lvl) becomes its side's TOP order
    when the book's algorithm has the TOP step and lvl is strictly better than the side's best
    before it arrived (or the side is empty). Call before add_resting."""
    bk = S.bk
    if (bk[b, F_ALGO] & ALG_TOP) == 0:
        return
    if side == BUY:
        if bk[b, F_BID] < 0 or lvl > bk[b, F_BID]:
            bk[b, F_TOPB] = s + 1
    else:
        if bk[b, F_ASK] < 0 or lvl < bk[b, F_ASK]:
            bk[b, F_TOPA] = s + 1


@register_jitable
def mul_div_floor(a, b, c):
    """floor(a * b / c) for int64 0 <= a, 0 <= b, 0 < c with a <= c or b <= c (so the quotient
    fits in 64 bits), exact: the product is formed in 128 bits when it could overflow."""
    if a < 3037000499 and b < 3037000499:          # a * b < 2**63
        return (a * b) // c
    m32 = np.uint64(0xFFFFFFFF)
    s32 = np.uint64(32)
    ua = np.uint64(a)
    ub = np.uint64(b)
    a0 = ua & m32
    a1 = ua >> s32
    b0 = ub & m32
    b1 = ub >> s32
    p00 = a0 * b0
    p01 = a0 * b1
    p10 = a1 * b0
    mid = (p00 >> s32) + (p01 & m32) + (p10 & m32)
    lo = (p00 & m32) | (mid << s32)
    hi = a1 * b1 + (p01 >> s32) + (p10 >> s32) + (mid >> s32)
    uc = np.uint64(c)
    rem = np.uint64(0)
    qt = np.uint64(0)
    for i in range(127, -1, -1):                    # binary long division of (hi, lo) by c
        if i >= 64:
            bit = (hi >> np.uint64(i - 64)) & _U1
        else:
            bit = (lo >> np.uint64(i)) & _U1
        rem = (rem << _U1) | bit
        if rem >= uc:
            rem = rem - uc
            if i < 64:
                qt = qt | (_U1 << np.uint64(i))
    return np.int64(qt)


@register_jitable
def pro_share(left, rem, tp):
    """The pro-rata share floor(left * rem / tp) (left < tp, rem <= tp): a multiply and a compare
    when it is 0 (most orders of a deep level against a small aggressor), else the division."""
    if left < 3037000499 and rem < 3037000499:
        p = left * rem
        if p < tp:
            return np.int64(0)
        return p // tp
    return mul_div_floor(left, rem, tp)


@register_jitable
def is_lmm(bk, b, acct):
    """Is `acct` one of book b's lead-market-maker accounts?"""
    for k in range(bk[b, F_NLMM]):
        if bk[b, F_LMM0 + k] == acct:
            return True
    return False


@register_jitable
def drop_maker(S, b, poff, g, s, mid):
    """A maker (local slot s, id mid) at global level g is done: out of the level's FIFO and
    count, the id index and the pool (the level's quantity and the book's totals are settled
    by the caller, once per level)."""
    level_unlink(S, poff, g, s)
    S.lv_cnt[g] -= 1
    id_delete(S.tab, S.bk[b, F_TOFF], S.bk[b, F_TMASK], S.o_id, poff, mid)
    slot_free(S, b, poff, s)


@register_jitable(inline="always")
def level_emptied(S, b, lvl, is_sell):
    """Level `lvl` (local) just lost its last order: clear its bit, move the best if needed."""
    bk = S.bk
    loff = bk[b, F_LOFF]
    bit_clear(S.bm0, S.bm1, loff + lvl)
    if is_sell:
        if bk[b, F_ASK] == lvl:
            g = scan_up(S.bm0, S.bm1, loff + lvl + 1, loff + bk[b, F_NLEV])
            bk[b, F_ASK] = -1 if g < 0 else g - loff
    else:
        if bk[b, F_BID] == lvl:
            g = scan_down(S.bm0, S.bm1, loff + lvl - 1, loff)
            bk[b, F_BID] = -1 if g < 0 else g - loff


@register_jitable(inline="always")
def remove_resting(S, b, s):
    """Take a resting order (local slot s) out of its level entirely: FIFO, counts, side total.

    Returns the level's global index. Does not free the slot or touch the id index.
    """
    bk = S.bk
    poff = bk[b, F_POFF]
    lvl = S.o_px[poff + s] - bk[b, F_BASE]
    g = bk[b, F_LOFF] + lvl
    q = S.o_qty[poff + s]
    is_sell = (S.o_flags[poff + s] & FL_SELL) != 0
    level_unlink(S, poff, g, s)
    S.lv_qty[g] -= q
    S.lv_cnt[g] -= 1
    if is_sell:
        bk[b, F_ASKQTY] -= q
    else:
        bk[b, F_BIDQTY] -= q
    bk[b, F_NREST] -= 1
    if S.lv_cnt[g] == 0:
        level_emptied(S, b, lvl, is_sell)
    return g


@register_jitable
def slot_take(S, b):
    """A free slot of book b's pool (local number): the head of its free list, else the next
    never-used slot (the caller made sure the pool has room)."""
    bk = S.bk
    s = bk[b, F_FREE]
    if s >= 0:
        bk[b, F_FREE] = S.o_next[bk[b, F_POFF] + s]
    else:
        s = bk[b, F_HW]
        bk[b, F_HW] = s + 1
    return s


@register_jitable
def list_append(S, b, s, fh, ft, fn):
    """Put slot s at the back of one of book b's slot lists (linked through o_next / o_prev):
    bk[b, fh] / bk[b, ft] its first / last slot (-1 none), bk[b, fn] its length."""
    bk = S.bk
    poff = bk[b, F_POFF]
    t = bk[b, ft]
    S.o_prev[poff + s] = t
    S.o_next[poff + s] = -1
    if t >= 0:
        S.o_next[poff + t] = s
    else:
        bk[b, fh] = s
    bk[b, ft] = s
    bk[b, fn] += 1


@register_jitable
def list_unlink(S, b, s, fh, ft, fn):
    """Take slot s out of the slot list of book b that list_append's fields name (not freed)."""
    bk = S.bk
    poff = bk[b, F_POFF]
    p = S.o_prev[poff + s]
    n = S.o_next[poff + s]
    if p >= 0:
        S.o_next[poff + p] = n
    else:
        bk[b, fh] = n
    if n >= 0:
        S.o_prev[poff + n] = p
    else:
        bk[b, ft] = p
    bk[b, fn] -= 1


@register_jitable
def park_append(S, b, s):
    """Park slot s (fields set) at the back of book b's parked list (a paused symbol's orders
    wait there for the reopening auction: a paused book may cross, the ladder may not)."""
    list_append(S, b, s, F_PHEAD, F_PTAIL, F_NPARK)
    S.o_flags[S.bk[b, F_POFF] + s] |= np.uint8(FL_PARKED)


@register_jitable
def park_unlink(S, b, s):
    """Take slot s out of book b's parked list (does not free it)."""
    list_unlink(S, b, s, F_PHEAD, F_PTAIL, F_NPARK)
    S.o_flags[S.bk[b, F_POFF] + s] &= np.uint8(~FL_PARKED & 0xFF)


@register_jitable
def stop_append(S, b, s):
    """Put slot s (fields set: o_exp = its stop price, flags with FL_STOP) at the back of book b's
    stop list (acceptance order) and widen the book's trigger bounds to its stop price."""
    list_append(S, b, s, F_SHEAD, F_STAIL, F_NSTOP)
    bk = S.bk
    poff = bk[b, F_POFF]
    sp = S.o_exp[poff + s]
    if (S.o_flags[poff + s] & FL_SELL) != 0:
        if bk[b, F_SSMAX] == 0 or sp > bk[b, F_SSMAX]:
            bk[b, F_SSMAX] = sp
    else:
        if bk[b, F_SBMIN] == 0 or sp < bk[b, F_SBMIN]:
            bk[b, F_SBMIN] = sp


@register_jitable
def stop_unlink(S, b, s):
    """Take slot s out of book b's stop list (does not free it; the bounds stay, stale-wide)."""
    list_unlink(S, b, s, F_SHEAD, F_STAIL, F_NSTOP)
    bk = S.bk
    if bk[b, F_NSTOP] == 0:
        bk[b, F_SBMIN] = 0
        bk[b, F_SSMAX] = 0


@register_jitable
def stop_next_due(S, b):
    """The first stop of book b's list (acceptance order) that its last trade price triggers (a
    buy stop at or below it, a sell stop at or above it), as a local slot, or -1; recomputes the
    trigger bounds of the stops that stay. Call only when bk[b, F_LAST] != 0."""
    bk = S.bk
    poff = bk[b, F_POFF]
    last = bk[b, F_LAST]
    found = -1
    bmin = np.int64(0)
    smax = np.int64(0)
    s = bk[b, F_SHEAD]
    while s >= 0:
        sp = S.o_exp[poff + s]
        sell = (S.o_flags[poff + s] & FL_SELL) != 0
        if found < 0 and ((sell and last <= sp) or ((not sell) and last >= sp)):
            found = s
        elif sell:
            if smax == 0 or sp > smax:
                smax = sp
        else:
            if bmin == 0 or sp < bmin:
                bmin = sp
        s = S.o_next[poff + s]
    bk[b, F_SBMIN] = bmin
    bk[b, F_SSMAX] = smax
    return found


@register_jitable(inline="always")
def add_resting(S, b, s):
    """Put slot s (fields already set) at the back of its price level."""
    bk = S.bk
    poff = bk[b, F_POFF]
    lvl = S.o_px[poff + s] - bk[b, F_BASE]
    g = bk[b, F_LOFF] + lvl
    q = S.o_qty[poff + s]
    level_append(S, poff, g, s)
    S.lv_qty[g] += q
    S.lv_cnt[g] += 1
    if S.lv_cnt[g] == 1:
        bit_set(S.bm0, S.bm1, g)
    if (S.o_flags[poff + s] & FL_SELL) != 0:
        bk[b, F_ASKQTY] += q
        if bk[b, F_ASK] < 0 or lvl < bk[b, F_ASK]:
            bk[b, F_ASK] = lvl
    else:
        bk[b, F_BIDQTY] += q
        if bk[b, F_BID] < 0 or lvl > bk[b, F_BID]:
            bk[b, F_BID] = lvl
    bk[b, F_NREST] += 1
    return g


@register_jitable
def crosses(S, b, side, is_market, px):
    """Does a taker on `side` at `px` cross the opposite best level of book b?"""
    bk = S.bk
    if side == BUY:
        a = bk[b, F_ASK]
        if a < 0:
            return False
        return is_market or bk[b, F_BASE] + a <= px
    bb = bk[b, F_BID]
    if bb < 0:
        return False
    return is_market or bk[b, F_BASE] + bb >= px


# ---------------------------------------------------------------------------------------------
# Icebergs (README "Iceberg orders"): o_qty is the displayed slice, o_rsv the hidden reserve
# ---------------------------------------------------------------------------------------------
@register_jitable
def ice_slices(rsv, dsp):
    """Replenishments a reserve of rsv lots gives with slices of dsp lots: ceil(rsv / dsp)."""
    if rsv <= 0:
        return np.int64(0)
    return (rsv + dsp - 1) // dsp


@register_jitable(inline="always")
def rsv_at(S, ms):
    """Reserve (lots) of global pool slot ms: 0 while the iceberg arrays are empty (no iceberg
    yet; every reserve is 0 then)."""
    if S.o_rsv.shape[0] == 0:
        return np.int64(0)
    return S.o_rsv[ms]


@register_jitable
def ice_set_reserve(S, b, ms, rsv):
    """Set the reserve of iceberg pool slot ms (global) of book b to rsv, keeping F_NSLC."""
    d = S.o_dsp[ms]
    S.bk[b, F_NSLC] += ice_slices(rsv, d) - ice_slices(S.o_rsv[ms], d)
    S.o_rsv[ms] = rsv


@register_jitable
def ice_refill(S, b, poff, g, s):
    """Iceberg at local slot s of global level g: its slice is 0, reserve left. A new slice
    min(display, reserve) joins the back of the level (new time priority, no longer TOP).
    Returns the new slice (the caller settles the level's quantity)."""
    ms = poff + s
    rsv = S.o_rsv[ms]
    nq = min(S.o_dsp[ms], rsv)
    S.o_rsv[ms] = rsv - nq
    S.bk[b, F_NSLC] -= 1
    S.o_qty[ms] = nq
    level_unlink(S, poff, g, s)
    level_append(S, poff, g, s)
    top_lose(S, b, s)
    return nq


@register_jitable
def ice_room(nsl, q, stops):
    """Extra fill rows a row may need for icebergs' replenishments: each replenishment is at
    most one fill more (and two events). A taker of q lots makes at most q fills, so min(nsl, q)
    without stops; with stops (a cascade of takers) every replenishment left, nsl."""
    if nsl == 0:
        return np.int64(0)
    if stops:
        return nsl
    return min(nsl, max(q, 0))


@register_jitable
def level_total(S, poff, g):
    """Displayed slices and reserves of every order at global level g (lots)."""
    t = 0
    s = S.lv_head[g]
    while s >= 0:
        t += S.o_qty[poff + s] + S.o_rsv[poff + s]
        s = S.o_next[poff + s]
    return t



# ---------------------------------------------------------------------------------------------
# The per-row step
# ---------------------------------------------------------------------------------------------
@register_jitable(inline="always")
def may_rest_outside(S, b, side, px, q, stp):
    """For a resting-capable order priced outside the ladder: could any of it come to rest?

    Every resting order lies inside the ladder, so such a price either crosses the whole
    opposite side or none of it. Conservative under STP modes that keep the taker alive.
    """
    bk = S.bk
    base = bk[b, F_BASE]
    if side == BUY:
        cross_all = px >= base + bk[b, F_NLEV]
        opp = bk[b, F_ASKQTY]
    else:
        cross_all = px < base
        opp = bk[b, F_BIDQTY]
    if not cross_all:
        return True
    return q > opp or stp == STP_CANCEL_OLDEST or stp == STP_DECREMENT


@register_jitable
def outside_ladder(S, b, px):
    lvl = px - S.bk[b, F_BASE]
    return lvl < 0 or lvl >= S.bk[b, F_NLEV]


# ---------------------------------------------------------------------------------------------
# Risk and breaker hooks (the RISK versions of the step below; R is engine/risk/state.py's RiskState)
# ---------------------------------------------------------------------------------------------
@register_jitable(inline="always")
def risk_fill(R, sr, ts, tar, side, npx, tdone, mar, mdone, px, f):
    """A fill of f lots at px between the taker (account row tar, `side`, open quantity counted at
    npx) and a maker (account row mar, counted at px, its resting price): both parties' open
    quantity and position, the symbol's last price, the velocity anchor."""
    risk_fill_book(sr, tar, np.int64(side), npx, tdone, mar, px, mdone, px, f, R.acct, R.sym, R.pair)
    velocity_trade(R, sr, ts, px)


@register_jitable
def rest_price(R, sr, side, px):
    """Where a limit order of `side` at px rests under the band: a buy above the band's top rests
    at the top, a sell below its bottom at the bottom (LULD-style price sliding)."""
    lo, hi = band_limits(R, sr)
    if side == BUY and px > hi:
        return hi
    if side == SELL and px < lo:
        return lo
    return px


# ---------------------------------------------------------------------------------------------
# The per-row step, built twice: without risk (RISK False: the plain matching engine, also the
# CUDA kernel) and with risk checks and circuit breakers (RISK True). numba prunes the `if RISK`
# branches of the closure at compile time, so the plain build carries none of it.
# ---------------------------------------------------------------------------------------------
@register_jitable
def gtd_live(S, b, poff, s):
    """Expiry (ns) of local slot s of book b if it holds a live good-till-date order, else 0."""
    e = S.o_exp[poff + s]
    if e == 0 or (S.o_flags[poff + s] & FL_STOP) != 0:     # a waiting stop's field is its stop price
        return np.int64(0)
    if id_find(S.tab, S.bk[b, F_TOFF], S.bk[b, F_TMASK], S.o_id, poff, S.o_id[poff + s]) != s:
        return np.int64(0)      # a free slot's stale expiry
    return e


@register_jitable
def gtd_scan(S, b, poff, ts):
    """Book b's live good-till-date orders: (the due one, expiry <= ts, with the smallest
    (expiry, order id) as a local slot or -1, due orders, the earliest expiry after ts or 0)."""
    best = -1
    bexp = np.int64(0)
    bid = np.uint64(0)
    ndue = 0
    nxt = np.int64(0)
    for s in range(S.bk[b, F_HW]):
        e = gtd_live(S, b, poff, s)
        if e == 0:
            continue
        if e <= ts:
            ndue += 1
            oid = S.o_id[poff + s]
            if best < 0 or e < bexp or (e == bexp and oid < bid):
                best = s
                bexp = e
                bid = oid
        elif nxt == 0 or e < nxt:
            nxt = e
    return best, ndue, nxt


@register_jitable
def stop_room(nrest, ns):
    """Output rows (fills, events, deltas) a row of a book with `nrest` resting orders and `ns`
    untriggered stops (or a NEW stop) reserves: the row and every stop it may trigger, each a
    taker in turn. Every fill either completes a maker (at most nrest + ns + 1 orders: stops
    that rest may be taken later in the cascade) or completes a taker (at most ns + 2), so
    K = nrest + 2 ns + 4 bounds the fills; events: two per fill, at most two per self-trade
    (each ends a maker or a taker) and three per taker; deltas: one per level a maker left,
    three per taker. The engine's output growth uses the same function."""
    k = nrest + 2 * ns + 4
    return k, 8 * k + 8, 3 * k + 4


def _make_step(RISK):
    # stp_self and alloc_level are called, not inlined at IR level: they are off the FIFO fast
    # path (self-trades; books with another algorithm), and inlining them as well made the cold
    # compile of the step several times longer. fill_maker (once per fill) is inlined into
    # alloc_level.

    @register_jitable(inline="always")
    def fok_fillable(S, b, side, is_market, px, acct, qty, stp, R, sr, ts):
        """FOK dry run: can `qty` be filled by the crossing opposite orders (README rules)? With
        RISK: only at levels inside the band and within the velocity limit."""
        bk = S.bk
        base = bk[b, F_BASE]
        loff = bk[b, F_LOFF]
        nlev = bk[b, F_NLEV]
        poff = bk[b, F_POFF]
        avail = 0
        ice = bk[b, F_NSLC] != 0           # reserves count (icebergs replenish within the FOK)
        if RISK:
            lo, hi = band_limits(R, sr)
            vk = R.bp[B_VELOCITY_TICKS]
            vw = R.bp[B_VELOCITY_WINDOW_NS]
            va = R.brk[sr, K_VA_TS]
            have_anchor = va != INT64_MIN and vw != UNSET and ts - va <= vw
            anchor = R.brk[sr, K_VA_PX]
        if side == BUY:
            lvl = bk[b, F_ASK]
        else:
            lvl = bk[b, F_BID]
        while lvl >= 0:
            lp = base + lvl
            if not is_market:
                if (side == BUY and lp > px) or (side == SELL and lp < px):
                    return False
            if RISK:
                if lp < lo or lp > hi:
                    return False
                if vk != UNSET and vw != UNSET:
                    if not have_anchor:
                        anchor = lp
                        have_anchor = True
                    elif lp - anchor > vk or anchor - lp > vk:
                        return False
            g = loff + lvl
            if stp == STP_NONE:
                avail += level_total(S, poff, g) if ice else S.lv_qty[g]
                if avail >= qty:
                    return True
            elif bk[b, F_ALGO] != 0:
                # other algorithms resolve self-trades at a level before allocating: any own
                # order at a level the taker reaches stops it (as one first in time would)
                s = S.lv_head[g]
                while s >= 0:
                    if S.o_acct[poff + s] == acct:
                        return False
                    s = S.o_next[poff + s]
                avail += level_total(S, poff, g) if ice else S.lv_qty[g]
                if avail >= qty:
                    return True
            else:
                s = S.lv_head[g]
                while s >= 0:
                    if S.o_acct[poff + s] == acct:
                        return False
                    avail += S.o_qty[poff + s] + rsv_at(S, poff + s)
                    if avail >= qty:
                        return True
                    s = S.o_next[poff + s]
            if side == BUY:
                g = scan_up(S.bm0, S.bm1, g + 1, loff + nlev)
            else:
                g = scan_down(S.bm0, S.bm1, g - 1, loff)
            lvl = -1 if g < 0 else g - loff
        return False

    @register_jitable
    def stp_self(S, O, r, b, seq, ts, sym, oid, acct, side, tpx, q, stp, poff, g, s, lp, R, tar, sr, npx):
        """Self-trade prevention between the taker (leaves q) and its own resting order at local
        slot s of global level g (price lp), by mode `stp` (README). Returns (taker leaves after,
        taker stopped, quantity taken off the level, orders taken off the level); the caller
        settles the level's quantity and delta."""
        ms = poff + s
        mq = S.o_qty[ms]
        rsv = rsv_at(S, ms)                # an iceberg's reserve (0 otherwise): STP acts on the total
        macct = S.o_acct[ms]
        mid = S.o_id[ms]
        maker_side = SELL if side == BUY else BUY
        stopped = False
        removed_q = 0
        removed_n = 0
        if stp == STP_CANCEL_NEWEST:
            emit_event(O, r, seq, ts, sym, oid, acct, side, EV_CANCELLED, R_SELF_TRADE, tpx, q, 0)
            if RISK:
                risk_release_book(tar, sr, side, q, npx, True, R.acct, R.pair)
            return 0, True, 0, 0
        if stp == STP_CANCEL_OLDEST or stp == STP_CANCEL_BOTH:
            emit_event(O, r, seq, ts, sym, mid, macct, maker_side, EV_CANCELLED, R_SELF_TRADE, lp, mq + rsv, 0)
            if RISK:
                risk_release_book(np.int64(S.o_arow[ms]), sr, maker_side, mq, lp, True, R.acct, R.pair)
            if rsv != 0:
                ice_set_reserve(S, b, ms, 0)
            S.o_qty[ms] = 0
            removed_q += mq
            drop_maker(S, b, poff, g, s, mid)
            removed_n += 1
            if stp == STP_CANCEL_BOTH:
                emit_event(O, r, seq, ts, sym, oid, acct, side, EV_CANCELLED, R_SELF_TRADE, tpx, q, 0)
                if RISK:
                    risk_release_book(tar, sr, side, q, npx, True, R.acct, R.pair)
                q = 0
                stopped = True
            return q, stopped, removed_q, removed_n
        # STP_DECREMENT: an iceberg loses its reserve first, its displayed slice only after it
        d = min(q, mq + rsv)
        x = min(d, rsv)
        if x != 0:
            ice_set_reserve(S, b, ms, rsv - x)
        mq -= d - x
        q -= d
        if RISK:
            risk_release_book(np.int64(S.o_arow[ms]), sr, maker_side, d, lp, mq == 0, R.acct, R.pair)
            risk_release_book(tar, sr, side, d, npx, q == 0, R.acct, R.pair)
        S.o_qty[ms] = mq
        removed_q += d - x
        if mq == 0:
            emit_event(O, r, seq, ts, sym, mid, macct, maker_side, EV_CANCELLED, R_SELF_TRADE, lp, d, 0)
            drop_maker(S, b, poff, g, s, mid)
            removed_n += 1
        else:
            emit_event(O, r, seq, ts, sym, mid, macct, maker_side, EV_REPLACED, R_SELF_TRADE, lp, d, mq + rsv - x)
        if q == 0:
            emit_event(O, r, seq, ts, sym, oid, acct, side, EV_CANCELLED, R_SELF_TRADE, tpx, d, 0)
            stopped = True
        else:
            emit_event(O, r, seq, ts, sym, oid, acct, side, EV_REPLACED, R_SELF_TRADE, tpx, d, q)
        return q, stopped, removed_q, removed_n

    @register_jitable(inline="always")
    def fill_maker(S, O, r, b, seq, ts, sym, oid, acct, side, q, poff, g, s, lp, f, R, tar, sr, npx):
        """The taker (leaves q) fills f lots against the maker at local slot s of global level g
        (price lp): the fill row, the maker's and the taker's events; a maker filled completely
        leaves the book (level count, id index, pool; the level's quantity is settled by the
        caller). An iceberg whose slice empties with reserve left replenishes to the back of the
        level. Returns (taker leaves after, 1 if the maker left the book else 0, the new slice
        (lots added to the level) or 0)."""
        ms = poff + s
        mq = S.o_qty[ms] - f
        mt = mq + rsv_at(S, ms)            # the maker's total leaves (events carry it)
        macct = S.o_acct[ms]
        mid = S.o_id[ms]
        maker_side = SELL if side == BUY else BUY
        q -= f
        S.o_qty[ms] = mq
        S.bk[b, F_LAST] = lp
        emit_fill(O, r, seq, ts, sym, oid, mid, acct, macct, side, lp, f)
        if RISK:
            risk_fill(R, sr, ts, tar, side, npx, q == 0, np.int64(S.o_arow[ms]), mq == 0, lp, f)
        gone = 0
        added = 0
        if mt == 0:
            emit_event(O, r, seq, ts, sym, mid, macct, maker_side, EV_FILLED, R_NONE, lp, f, 0)
            drop_maker(S, b, poff, g, s, mid)
            gone = 1
        else:
            emit_event(O, r, seq, ts, sym, mid, macct, maker_side, EV_PARTIALLY_FILLED, R_NONE, lp, f, mt)
            if mq == 0:
                added = ice_refill(S, b, poff, g, s)
        if q == 0:
            emit_event(O, r, seq, ts, sym, oid, acct, side, EV_FILLED, R_NONE, lp, f, 0)
        else:
            emit_event(O, r, seq, ts, sym, oid, acct, side, EV_PARTIALLY_FILLED, R_NONE, lp, f, q)
        return q, gone, added

    @register_jitable
    def alloc_level(S, O, r, b, seq, ts, oid, acct, side, tpx, q, stp, g, lp, R, tar, sr, npx):
        """Allocate the taker's leaves q among the orders of global level g (price lp) by book b's
        algorithm (bk[b, F_ALGO] != 0; README "Matching algorithms"):

        self-trade prevention first (the taker's own orders at the level, in time priority, by
        mode `stp`), then with R = q and T = the level's quantity: 0. R >= T: every order fills
        completely; else 1. TOP, 2. LMM, 3. FIFO share, 4. pro rata (floor(R' q'_i / T'), below
        min_alloc -> 0), 5. FIFO residual, each optional step by its ALG_* bit. One pass sums the
        pro-rata allocations, a second emits one fill per maker (its steps added up) in time
        priority; the running budgets of steps 2, 3 and 5 are recomputed in the same order in
        both passes, so nothing is stored per order. Settles the level (quantity, totals, one
        delta, emptied level). Returns (taker leaves after, stopped by STP)."""
        bk = S.bk
        sym = bk[b, F_SYM]
        poff = bk[b, F_POFF]
        algo = bk[b, F_ALGO]
        maker_side = SELL if side == BUY else BUY
        stopped = False
        touched = False
        removed_q = 0
        removed_n = 0
        if stp != STP_NONE:
            s = S.lv_head[g]
            while s >= 0:
                nxt = S.o_next[poff + s]
                if S.o_acct[poff + s] == acct:
                    q, stopped, dq, dn = stp_self(S, O, r, b, seq, ts, sym, oid, acct, side, tpx, q, stp,
                                                  poff, g, s, lp, R, tar, sr, npx)
                    removed_q += dq
                    removed_n += dn
                    if stp != STP_CANCEL_NEWEST:
                        touched = True
                    if stopped:
                        break
                s = nxt
        # allocation on displayed quantities; icebergs whose slice emptied joined the back with a
        # new slice, and the level is allocated again until the taker or the level is done
        # (without icebergs one pass always ends it: R < T allocates all of R, R >= T empties it)
        while not stopped and q > 0 and S.lv_cnt[g] > 0:
            T = S.lv_qty[g] - removed_q
            full = q >= T                      # step 0
            top = -1
            topa = 0
            lmm_b = 0
            fifo_b = 0
            left = 0
            Tp = 1
            res_b = 0
            mina = bk[b, F_MINALLOC]
            if not full:
                left = q
                if (algo & ALG_TOP) != 0:      # step 1
                    t = (bk[b, F_TOPA] if maker_side == SELL else bk[b, F_TOPB]) - 1
                    if t >= 0 and S.o_px[poff + t] == lp:
                        top = t
                        topa = min(left, S.o_qty[poff + t])
                        left -= topa
                if (algo & ALG_LMM) != 0 and left > 0:      # step 2: its budget, capped by the
                    lmm_b = mul_div_floor(left, bk[b, F_LMMPCT], 100)   # LMM orders' leaves
                    avail = 0
                    s = S.lv_head[g]
                    while s >= 0 and avail < lmm_b:
                        if is_lmm(bk, b, S.o_acct[poff + s]):
                            avail += S.o_qty[poff + s] - (topa if s == top else 0)
                        s = S.o_next[poff + s]
                    lmm_b = min(lmm_b, avail)
                    left -= lmm_b
                if (algo & ALG_FIFO) != 0 and left > 0:     # step 3
                    fifo_b = mul_div_floor(left, bk[b, F_FIFOPCT], 100)
                    left -= fifo_b
                Tp = T - (q - left)            # the level's leaves after steps 1-3
                res_b = left
                if (algo & ALG_PRO) != 0 and left > 0:      # step 4, pass 1: sum of a_i
                    lb = lmm_b
                    fb = fifo_b
                    s = S.lv_head[g]
                    while s >= 0:
                        rem = S.o_qty[poff + s]
                        if s == top:
                            rem -= topa
                        if lb > 0 and is_lmm(bk, b, S.o_acct[poff + s]):
                            x = min(rem, lb)
                            rem -= x
                            lb -= x
                        if fb > 0:
                            x = min(rem, fb)
                            rem -= x
                            fb -= x
                        a = pro_share(left, rem, Tp)
                        if a >= mina:
                            res_b -= a
                        s = S.o_next[poff + s]
            # pass 2: one fill per maker, in time priority, up to the level's last order now
            # (a replenished slice joins behind it: its turn is the next allocation)
            pro = (algo & ALG_PRO) != 0 and left > 0
            s = S.lv_head[g]
            end = S.lv_tail[g]
            while s >= 0 and q > 0:
                ms = poff + s
                nxt = S.o_next[ms]
                mq = S.o_qty[ms]
                if full:
                    f = mq
                else:
                    rem = mq
                    if s == top:
                        rem -= topa
                    if lmm_b > 0 and is_lmm(bk, b, S.o_acct[ms]):
                        x = min(rem, lmm_b)
                        rem -= x
                        lmm_b -= x
                    if fifo_b > 0:
                        x = min(rem, fifo_b)
                        rem -= x
                        fifo_b -= x
                    if pro:
                        a = pro_share(left, rem, Tp)
                        if a >= mina:
                            rem -= a
                    if res_b > 0:
                        x = min(rem, res_b)
                        rem -= x
                        res_b -= x
                    f = mq - rem
                if f > 0:
                    q, gone, added = fill_maker(S, O, r, b, seq, ts, sym, oid, acct, side, q, poff, g, s, lp, f,
                                                R, tar, sr, npx)
                    removed_q += f - added
                    removed_n += gone
                    touched = True
                if s == end:
                    break
                s = nxt
        if touched:
            S.lv_qty[g] -= removed_q
            if maker_side == SELL:
                bk[b, F_ASKQTY] -= removed_q
            else:
                bk[b, F_BIDQTY] -= removed_q
            bk[b, F_NREST] -= removed_n
            emit_delta(O, r, seq, ts, sym, maker_side, lp, S.lv_qty[g], S.lv_cnt[g])
            if S.lv_cnt[g] == 0:
                level_emptied(S, b, g - bk[b, F_LOFF], maker_side == SELL)
        return q, stopped

    @register_jitable(inline="always")
    def match_taker(S, O, r, b, seq, ts, oid, acct, side, is_market, px, q, stp, R, tar, sr, npx):
        """Match a taker of leaves `q` against book b (README step 4).

        Returns (leaves after, stopped_by_stp, halt): halt 0, or with RISK 1 when the next level
        lies outside the price band on the near side (stale after the band moved) and 2 when
        trading there would break the velocity limit (the symbol is now paused). Emits fills,
        maker/taker events and one delta per level left after filling/cancelling/decrementing.
        With RISK the taker is account row tar with its open quantity counted at npx.
        """
        bk = S.bk
        sym = bk[b, F_SYM]
        base = bk[b, F_BASE]
        loff = bk[b, F_LOFF]
        poff = bk[b, F_POFF]
        toff = bk[b, F_TOFF]
        tmask = bk[b, F_TMASK]
        tpx = 0 if is_market else px
        stopped = False
        halt = 0
        maker_side = SELL if side == BUY else BUY
        algo = bk[b, F_ALGO]
        ice = bk[b, F_NSLC] != 0       # some iceberg has reserve (else o_rsv is never read)
        if RISK:
            lo, hi = band_limits(R, sr)
        while q > 0:
            if side == BUY:
                lvl = bk[b, F_ASK]
                if lvl < 0:
                    break
                lp = base + lvl
                if not is_market and lp > px:
                    break
                if RISK:
                    if lp > hi:
                        break
                    if lp < lo:
                        halt = 1
                        break
            else:
                lvl = bk[b, F_BID]
                if lvl < 0:
                    break
                lp = base + lvl
                if not is_market and lp < px:
                    break
                if RISK:
                    if lp < lo:
                        break
                    if lp > hi:
                        halt = 1
                        break
            if RISK:
                if velocity_breach(R, sr, ts, lp):
                    brk_pause(R, O, r, seq, ts, sr, sym, R_VELOCITY)
                    halt = 2
                    break
            g = loff + lvl
            if algo != 0:
                q, stopped = alloc_level(S, O, r, b, seq, ts, oid, acct, side, tpx, q, stp, g, lp, R, tar, sr, npx)
                if stopped:
                    break
                continue
            s = S.lv_head[g]
            removed_q = 0
            removed_n = 0
            touched = False
            while s >= 0 and q > 0:
                ms = poff + s
                nxt = S.o_next[ms]
                mq = S.o_qty[ms]
                macct = S.o_acct[ms]
                mid = S.o_id[ms]
                if stp != STP_NONE and macct == acct:
                    q, stopped, dq, dn = stp_self(S, O, r, b, seq, ts, sym, oid, acct, side, tpx, q, stp,
                                                  poff, g, s, lp, R, tar, sr, npx)
                    removed_q += dq
                    removed_n += dn
                    if stp != STP_CANCEL_NEWEST:
                        touched = True
                    if stopped:
                        break
                else:
                    f = min(q, mq)
                    mq -= f
                    q -= f
                    S.o_qty[ms] = mq
                    removed_q += f
                    touched = True
                    mt = mq                 # the maker's total leaves (events carry it)
                    if ice:
                        mt += S.o_rsv[ms]
                    bk[b, F_LAST] = lp
                    emit_fill(O, r, seq, ts, sym, oid, mid, acct, macct, side, lp, f)
                    if RISK:
                        risk_fill(R, sr, ts, tar, side, npx, q == 0, np.int64(S.o_arow[ms]), mq == 0, lp, f)
                    if mt == 0:
                        emit_event(O, r, seq, ts, sym, mid, macct, maker_side, EV_FILLED, R_NONE, lp, f, 0)
                        drop_maker(S, b, poff, g, s, mid)
                        removed_n += 1
                    else:
                        emit_event(O, r, seq, ts, sym, mid, macct, maker_side, EV_PARTIALLY_FILLED, R_NONE, lp, f, mt)
                        if mq == 0:         # an iceberg's slice: a new one joins the back
                            removed_q -= ice_refill(S, b, poff, g, s)
                            if nxt < 0:     # it was the last order: it is the next one too
                                nxt = s
                    if q == 0:
                        emit_event(O, r, seq, ts, sym, oid, acct, side, EV_FILLED, R_NONE, lp, f, 0)
                    else:
                        emit_event(O, r, seq, ts, sym, oid, acct, side, EV_PARTIALLY_FILLED, R_NONE, lp, f, q)
                s = nxt
            # one delta for everything the taker did at this level
            if touched:
                S.lv_qty[g] -= removed_q
                if maker_side == SELL:
                    bk[b, F_ASKQTY] -= removed_q
                else:
                    bk[b, F_BIDQTY] -= removed_q
                bk[b, F_NREST] -= removed_n
                emit_delta(O, r, seq, ts, sym, maker_side, lp, S.lv_qty[g], S.lv_cnt[g])
                if S.lv_cnt[g] == 0:
                    level_emptied(S, b, lvl, maker_side == SELL)
            if stopped:
                break
        return q, stopped, halt

    @register_jitable(inline="always")
    def risk_gate(I, O, r, i, seq, R, sym, act, oside, px, q, lq, lpx):
        """The pre-trade checks of row i (RISK only), for an order on `oside` (a CANCEL's or
        REPLACE's: open quantity lq counted at lpx). Returns (0, the price its open quantity now
        counts at) when it passes (and is committed); else the row is rejected here and
        (reason, 0) returned."""
        ts = I.ts[i]
        rr, npx = risk_row_book(ts, oside, px, q, act, I.otype[i], R.ar[i], R.sr[i], lq, lpx,
                                R.acct, R.sym, R.pair, R.g)
        if rr != 0:
            emit_event(O, r, seq, ts, sym, I.oid[i], I.acct[i], I.side[i], EV_REJECTED, rr, px, q, lq)
        return rr, npx

    @register_jitable
    def expire_due(S, O, r, b, seq, ts, sym, R, sr):
        """Expire book b's good-till-date orders whose expiry is at or before ts (the book's
        row at ts), in (expiry, order id) order: an EXPIRED event (reason EXPIRE_TIME) and, for
        a resting order, a delta each; then bk[b, F_NEXP] = the next expiry. Writes nothing
        and returns ST_NEED_OUTPUT unless region r has room for all of them."""
        poff = S.bk[b, F_POFF]
        s, ndue, nxt = gtd_scan(S, b, poff, ts)
        if O.cur[r, 1] + ndue > O.cap[r, 1] or O.cur[r, 2] + ndue > O.cap[r, 2]:
            return ST_NEED_OUTPUT
        while s >= 0:
            ms = poff + s
            oid = S.o_id[ms]
            fl = S.o_flags[ms]
            oside = SELL if (fl & FL_SELL) != 0 else BUY
            opx = S.o_px[ms]
            lq = S.o_qty[ms]
            if (fl & FL_ICE) != 0 and S.o_rsv[ms] != 0:
                emit_event(O, r, seq, ts, sym, oid, S.o_acct[ms], oside, EV_EXPIRED, R_EXPIRE_TIME, opx,
                           lq + S.o_rsv[ms], 0)
                ice_set_reserve(S, b, ms, 0)
            else:
                emit_event(O, r, seq, ts, sym, oid, S.o_acct[ms], oside, EV_EXPIRED, R_EXPIRE_TIME, opx, lq, 0)
            if RISK:
                risk_release_book(np.int64(S.o_arow[ms]), sr, oside, lq, opx, True, R.acct, R.pair)
            if (fl & FL_PARKED) != 0:
                park_unlink(S, b, s)
                id_delete(S.tab, S.bk[b, F_TOFF], S.bk[b, F_TMASK], S.o_id, poff, oid)
                slot_free(S, b, poff, s)
            else:
                g = remove_resting(S, b, s)
                id_delete(S.tab, S.bk[b, F_TOFF], S.bk[b, F_TMASK], S.o_id, poff, oid)
                slot_free(S, b, poff, s)
                emit_delta(O, r, seq, ts, sym, oside, opx, S.lv_qty[g], S.lv_cnt[g])
            S.o_exp[ms] = 0
            s, ndue, nxt = gtd_scan(S, b, poff, ts)
        S.bk[b, F_NEXP] = nxt
        return ST_OK

    @register_jitable(inline="always")
    def step(I, S, O, r, i, b, seq, stp, R):
        """Apply input row i to book b, writing outputs to region r. Returns an ST_* status.

        Anything but ST_OK means the row was not applied: the caller grows what the status
        names and calls again for the same row (with RISK, breaker transitions that were due at
        the row's time may already have been written; they are not repeated).
        I: input columns (ts, oid, side, px, qty, action, otype, tif, acct, post, force, exp, stop), length n.
        The drivers call ``gtd_due`` before it (good-till-date orders due at the row's ts expire
        first; kept out of the inlined step, which measured ~5% slower on FIFO flows with it).
        """
        bk = S.bk
        q = I.qty[i]
        nrest = bk[b, F_NREST]
        if stp != STP_NONE:
            m = nrest
        else:
            m = min(max(q, 0), nrest)
        extra = 8 if RISK else 0   # breaker transitions: at most 4 events and 4 deltas a row
        ne = 2 * m + 4 + extra
        nd = m + 3 + extra
        ns = bk[b, F_NSTOP]
        if not RISK and (ns != 0 or I.otype[i] >= OT_STOP):
            # stops may trigger after the row, each one a taker in turn (stop_room)
            m, ne, nd = stop_room(nrest, ns)
        nsl = bk[b, F_NSLC]
        if nsl != 0:                    # icebergs' replenishments: a fill (two events) each
            x = ice_room(nsl, q, ns != 0)
            m += x
            ne += 2 * x
        if O.cur[r, 0] + m > O.cap[r, 0] or O.cur[r, 1] + ne > O.cap[r, 1] or O.cur[r, 2] + nd > O.cap[r, 2]:
            return ST_NEED_OUTPUT
        ts = I.ts[i]
        oid = I.oid[i]
        act = I.action[i]
        acct = I.acct[i]
        side = I.side[i]
        px = I.px[i]
        sym = bk[b, F_SYM]
        poff = bk[b, F_POFF]
        toff = bk[b, F_TOFF]
        tmask = bk[b, F_TMASK]
        dsp_q = I.disp[i] if I.disp.shape[0] != 0 else 0     # iceberg slice size (0 = none)
        paused = False
        sr = 0
        tar = 0
        if RISK:
            sr = R.sr[i]
            tar = R.ar[i]
            if brk_begin_row(R, O, r, seq, ts, sr, sym):
                return ST_NEED_AUCTION
            paused = R.brk[sr, K_STATE] >= TS_PAUSED

        if act == ACT_NEW:
            otype = I.otype[i]
            tif = I.tif[i]
            post = I.post[i] != 0
            rej = R_NONE
            if side != BUY and side != SELL:
                rej = R_INVALID_SIDE
            elif otype > OT_STOP_LIMIT:
                rej = R_INVALID_ORDER_TYPE
            elif tif > TIF_DAY:
                rej = R_INVALID_TIF
            elif q <= 0:
                rej = R_INVALID_QTY
            elif (otype == OT_LIMIT or otype == OT_STOP_LIMIT) and px <= 0:
                rej = R_INVALID_PRICE
            elif post and not (otype == OT_LIMIT and (tif == TIF_GTC or tif == TIF_DAY)):
                rej = R_INVALID_POST_ONLY
            elif I.exp[i] != 0 and (I.exp[i] < 0 or otype != OT_LIMIT or not (tif == TIF_GTC or tif == TIF_DAY)):
                rej = R_INVALID_EXPIRE
            elif I.exp[i] != 0 and I.exp[i] <= ts:
                rej = R_EXPIRE_IN_PAST
            elif I.stop[i] != 0 and otype < OT_STOP:
                rej = R_UNEXPECTED_STOP_PRICE
            elif otype >= OT_STOP and RISK:
                rej = R_STOP_NOT_SUPPORTED
            elif otype >= OT_STOP and I.stop[i] <= 0:
                rej = R_INVALID_STOP_PRICE
            elif otype >= OT_STOP and (tif == TIF_IOC or tif == TIF_FOK):
                rej = R_INVALID_STOP_TIF
            elif dsp_q != 0 and (dsp_q < 0 or dsp_q > q or otype != OT_LIMIT or tif == TIF_IOC or tif == TIF_FOK):
                rej = R_INVALID_DISPLAY_QTY
            elif dsp_q != 0 and RISK:
                rej = R_ICEBERG_NOT_SUPPORTED
            elif id_find(S.tab, toff, tmask, S.o_id, poff, oid) >= 0:
                rej = R_DUPLICATE_ORDER_ID
            elif I.force[i] != 0:
                rej = I.force[i]
            if rej != R_NONE:
                emit_event(O, r, seq, ts, sym, oid, acct, side, EV_REJECTED, rej, px, q, 0)
                return ST_OK
            if not RISK and otype >= OT_STOP:
                return stop_accept(I, S, O, r, i, b, seq)
            is_market = otype == OT_MARKET
            rests = (not is_market) and (tif == TIF_GTC or tif == TIF_DAY)
            if paused and not rests:
                emit_event(O, r, seq, ts, sym, oid, acct, side, EV_REJECTED, RR_SYMBOL_PAUSED, px, q, 0)
                return ST_OK
            if post and crosses(S, b, side, False, px):
                emit_event(O, r, seq, ts, sym, oid, acct, side, EV_REJECTED, R_POST_ONLY_WOULD_TAKE, px, q, 0)
                return ST_OK
            rpx = px
            if RISK and rests and not paused:
                rpx = rest_price(R, sr, side, px)
            if rests:
                if bk[b, F_FREE] < 0 and bk[b, F_HW] >= bk[b, F_PCAP]:
                    return ST_NEED_POOL
                if dsp_q != 0 and S.o_dsp.shape[0] == 0:
                    return ST_NEED_ICE     # the engine's first iceberg: the host sizes o_rsv, o_dsp
                if outside_ladder(S, b, rpx):
                    if RISK:
                        R.g[G_NEED_PX] = rpx
                        return ST_NEED_LADDER
                    if may_rest_outside(S, b, side, px, q, stp):
                        return ST_NEED_LADDER
            npx = 0
            if RISK:
                rr, npx = risk_gate(I, O, r, i, seq, R, sym, act, side, px, q, 0, 0)
                if rr != 0:
                    return ST_OK
            tpx = 0 if is_market else px
            emit_event(O, r, seq, ts, sym, oid, acct, side, EV_ACCEPTED, R_NONE, tpx, q, q)
            halt = 0
            if not paused:
                if tif == TIF_FOK and not fok_fillable(S, b, side, is_market, px, acct, q, stp, R, sr, ts):
                    emit_event(O, r, seq, ts, sym, oid, acct, side, EV_EXPIRED, R_FOK_NOT_FILLABLE, tpx, q, 0)
                    if RISK:
                        risk_release_book(tar, sr, side, q, npx, True, R.acct, R.pair)
                    return ST_OK
                q, stopped, halt = match_taker(S, O, r, b, seq, ts, oid, acct, side, is_market, px, q, stp,
                                               R, tar, sr, npx)
                if stopped or q == 0:
                    return ST_OK
            if not rests or halt == 1:
                emit_event(O, r, seq, ts, sym, oid, acct, side, EV_EXPIRED,
                           R_PRICE_BAND if halt == 1 else R_NONE, tpx, q, 0)
                if RISK:
                    risk_release_book(tar, sr, side, q, npx, True, R.acct, R.pair)
                return ST_OK
            s = slot_take(S, b)
            ms = poff + s
            S.o_id[ms] = oid
            S.o_qty[ms] = q
            S.o_px[ms] = rpx
            S.o_acct[ms] = acct
            fl = np.uint8(tif << 1)
            if side == SELL:
                fl |= np.uint8(FL_SELL)
            if post:
                fl |= np.uint8(FL_POST)
            S.o_flags[ms] = fl
            e = I.exp[i]
            S.o_exp[ms] = e
            if e != 0 and (bk[b, F_NEXP] == 0 or e < bk[b, F_NEXP]):
                bk[b, F_NEXP] = e
            if dsp_q != 0:                 # an iceberg: its slice shows, the rest is its reserve
                S.o_flags[ms] = fl | np.uint8(FL_ICE)
                S.o_dsp[ms] = dsp_q
                if q > dsp_q:
                    S.o_qty[ms] = dsp_q
                    ice_set_reserve(S, b, ms, q - dsp_q)
            id_insert(S.tab, toff, tmask, oid, s)
            if RISK:
                S.o_arow[ms] = tar
                if rpx != npx:
                    risk_renotional(tar, sr, q, rpx - npx, R.acct, R.pair)
            if RISK and (paused or halt == 2):
                park_append(S, b, s)
                return ST_OK
            top_gain(S, b, s, side, rpx - bk[b, F_BASE])
            g = add_resting(S, b, s)
            emit_delta(O, r, seq, ts, sym, side, rpx, S.lv_qty[g], S.lv_cnt[g])
            return ST_OK

        if act != ACT_CANCEL and act != ACT_REPLACE:
            emit_event(O, r, seq, ts, sym, oid, acct, side, EV_REJECTED, R_INVALID_ACTION, px, q, 0)
            return ST_OK
        s = id_find(S.tab, toff, tmask, S.o_id, poff, oid)
        if s < 0:
            emit_event(O, r, seq, ts, sym, oid, acct, side, EV_REJECTED, R_UNKNOWN_ORDER, px, q, 0)
            return ST_OK
        ms = poff + s
        fl = S.o_flags[ms]
        lq = S.o_qty[ms]
        if (fl & FL_ICE) != 0:          # an iceberg: events carry the total leaves
            lq += S.o_rsv[ms]
        if S.o_acct[ms] != acct:
            emit_event(O, r, seq, ts, sym, oid, acct, side, EV_REJECTED, R_NOT_OWNER, px, q, lq)
            return ST_OK
        oside = SELL if (fl & FL_SELL) != 0 else BUY
        opx = S.o_px[ms]
        if act == ACT_CANCEL:
            if not RISK and (fl & FL_STOP) != 0:     # an untriggered stop: not in the book
                stop_unlink(S, b, s)
                id_delete(S.tab, toff, tmask, S.o_id, poff, oid)
                slot_free(S, b, poff, s)
                emit_event(O, r, seq, ts, sym, oid, acct, oside, EV_CANCELLED, R_NONE, opx, lq, 0)
                return ST_OK
            if RISK:
                rr, npx = risk_gate(I, O, r, i, seq, R, sym, act, oside, px, q, lq, opx)
                if rr != 0:
                    return ST_OK
                if (fl & FL_PARKED) != 0:
                    park_unlink(S, b, s)
                    id_delete(S.tab, toff, tmask, S.o_id, poff, oid)
                    slot_free(S, b, poff, s)
                    emit_event(O, r, seq, ts, sym, oid, acct, oside, EV_CANCELLED, R_NONE, opx, lq, 0)
                    return ST_OK
            g = remove_resting(S, b, s)
            id_delete(S.tab, toff, tmask, S.o_id, poff, oid)
            slot_free(S, b, poff, s)
            if (fl & FL_ICE) != 0:
                ice_set_reserve(S, b, ms, 0)
            emit_event(O, r, seq, ts, sym, oid, acct, oside, EV_CANCELLED, R_NONE, opx, lq, 0)
            emit_delta(O, r, seq, ts, sym, oside, opx, S.lv_qty[g], S.lv_cnt[g])
            return ST_OK

        # REPLACE: q = new open quantity (an iceberg's new total), px = new price
        if dsp_q != 0:                     # a replace keeps the display size
            emit_event(O, r, seq, ts, sym, oid, acct, side, EV_REJECTED, R_INVALID_DISPLAY_QTY, px, q, lq)
            return ST_OK
        if not RISK and (fl & FL_STOP) != 0:
            return stop_replace(I, S, O, r, i, b, seq, s)
        rej = R_NONE
        if q <= 0:
            rej = R_INVALID_QTY
        elif px <= 0:
            rej = R_INVALID_PRICE
        elif I.stop[i] != 0:
            rej = R_UNEXPECTED_STOP_PRICE
        elif (fl & FL_POST) != 0 and crosses(S, b, oside, False, px):
            rej = R_POST_ONLY_WOULD_TAKE
        elif I.force[i] != 0:
            rej = I.force[i]
        if rej != R_NONE:
            emit_event(O, r, seq, ts, sym, oid, acct, side, EV_REJECTED, rej, px, q, lq)
            return ST_OK
        if RISK and paused and ((fl & FL_PARKED) != 0 or not (px == opx and q <= lq)):
            # paused: the replaced order waits in the parked list (no matching, no delta there);
            # a parked order keeps its place only for a decrease at the same price
            if outside_ladder(S, b, px):
                R.g[G_NEED_PX] = px
                return ST_NEED_LADDER
            rr, npx = risk_gate(I, O, r, i, seq, R, sym, act, oside, px, q, lq, opx)
            if rr != 0:
                return ST_OK
            if (fl & FL_PARKED) == 0:
                g = remove_resting(S, b, s)
                emit_delta(O, r, seq, ts, sym, oside, opx, S.lv_qty[g], S.lv_cnt[g])
                S.o_px[ms] = px
                S.o_qty[ms] = q
                park_append(S, b, s)
            elif not (px == opx and q <= lq):
                park_unlink(S, b, s)
                S.o_px[ms] = px
                S.o_qty[ms] = q
                park_append(S, b, s)
            else:
                S.o_qty[ms] = q
            top_lose(S, b, s)
            emit_event(O, r, seq, ts, sym, oid, acct, oside, EV_REPLACED, R_NONE, px, q, q)
            return ST_OK
        if px == opx and q <= lq:
            if RISK:
                rr, npx = risk_gate(I, O, r, i, seq, R, sym, act, oside, px, q, lq, opx)
                if rr != 0:
                    return ST_OK
            g = bk[b, F_LOFF] + (opx - bk[b, F_BASE])
            diff = lq - q
            if (fl & FL_ICE) != 0:      # the slice stays up to q, the reserve takes the rest
                shown = min(S.o_qty[ms], q)
                diff = S.o_qty[ms] - shown
                ice_set_reserve(S, b, ms, q - shown)
                S.o_qty[ms] = shown
            else:
                S.o_qty[ms] = q
            top_lose(S, b, s)
            emit_event(O, r, seq, ts, sym, oid, acct, oside, EV_REPLACED, R_NONE, px, q, q)
            if diff > 0:
                S.lv_qty[g] -= diff
                if oside == SELL:
                    bk[b, F_ASKQTY] -= diff
                else:
                    bk[b, F_BIDQTY] -= diff
                emit_delta(O, r, seq, ts, sym, oside, px, S.lv_qty[g], S.lv_cnt[g])
            return ST_OK
        rpx = px
        if RISK and not paused:
            rpx = rest_price(R, sr, oside, px)
        if outside_ladder(S, b, rpx):
            if RISK:
                R.g[G_NEED_PX] = rpx
                return ST_NEED_LADDER
            if may_rest_outside(S, b, oside, px, q, stp):
                return ST_NEED_LADDER
        npx = 0
        if RISK:
            rr, npx = risk_gate(I, O, r, i, seq, R, sym, act, oside, px, q, lq, opx)
            if rr != 0:
                return ST_OK
        g = remove_resting(S, b, s)
        top_lose(S, b, s)
        if (fl & FL_ICE) != 0:          # re-entered: a taker of q, then a new slice if it rests
            ice_set_reserve(S, b, ms, 0)
        emit_delta(O, r, seq, ts, sym, oside, opx, S.lv_qty[g], S.lv_cnt[g])
        emit_event(O, r, seq, ts, sym, oid, acct, oside, EV_REPLACED, R_NONE, px, q, q)
        S.o_px[ms] = rpx
        S.o_qty[ms] = q
        halt = 0
        if not paused:
            q, stopped, halt = match_taker(S, O, r, b, seq, ts, oid, acct, oside, False, px, q, stp, R, tar, sr, npx)
            if stopped or q == 0:
                id_delete(S.tab, toff, tmask, S.o_id, poff, oid)
                slot_free(S, b, poff, s)
                return ST_OK
            if halt == 1:
                emit_event(O, r, seq, ts, sym, oid, acct, oside, EV_EXPIRED, R_PRICE_BAND, px, q, 0)
                if RISK:
                    risk_release_book(tar, sr, oside, q, npx, True, R.acct, R.pair)
                id_delete(S.tab, toff, tmask, S.o_id, poff, oid)
                slot_free(S, b, poff, s)
                return ST_OK
        S.o_qty[ms] = q
        if (fl & FL_ICE) != 0 and q > S.o_dsp[ms]:
            S.o_qty[ms] = S.o_dsp[ms]
            ice_set_reserve(S, b, ms, q - S.o_dsp[ms])
        if RISK and rpx != npx:
            risk_renotional(tar, sr, q, rpx - npx, R.acct, R.pair)
        if RISK and halt == 2:      # the sweep paused the symbol: the rest waits for the auction
            park_append(S, b, s)
            return ST_OK
        g = add_resting(S, b, s)
        emit_delta(O, r, seq, ts, sym, oside, rpx, S.lv_qty[g], S.lv_cnt[g])
        return ST_OK

    @register_jitable
    def stop_accept(I, S, O, r, i, b, seq):
        """A valid NEW STOP / STOP_LIMIT row i: ACCEPTED, then it waits in book b's stop list
        (a pool slot outside the ladder: no delta, not in the visible book). A stop-limit's
        price must lie inside the ladder (it rests there once triggered)."""
        bk = S.bk
        if bk[b, F_FREE] < 0 and bk[b, F_HW] >= bk[b, F_PCAP]:
            return ST_NEED_POOL
        lim = I.otype[i] == OT_STOP_LIMIT
        px = I.px[i]
        if lim and outside_ladder(S, b, px):
            return ST_NEED_LADDER
        poff = bk[b, F_POFF]
        oid = I.oid[i]
        q = I.qty[i]
        side = I.side[i]
        tpx = px if lim else 0
        emit_event(O, r, seq, I.ts[i], bk[b, F_SYM], oid, I.acct[i], side, EV_ACCEPTED, R_NONE, tpx, q, q)
        s = slot_take(S, b)
        ms = poff + s
        S.o_id[ms] = oid
        S.o_qty[ms] = q
        S.o_px[ms] = tpx
        S.o_acct[ms] = I.acct[i]
        fl = np.uint8((I.tif[i] << 1) | FL_STOP)
        if side == SELL:
            fl |= np.uint8(FL_SELL)
        if not lim:
            fl |= np.uint8(FL_SMKT)
        S.o_flags[ms] = fl
        S.o_exp[ms] = I.stop[i]          # a waiting stop's stop price (see the State notes)
        id_insert(S.tab, bk[b, F_TOFF], bk[b, F_TMASK], oid, s)
        stop_append(S, b, s)
        return ST_OK

    @register_jitable
    def stop_replace(I, S, O, r, i, b, seq, s):
        """REPLACE row i of an untriggered stop (local slot s, owner checked): new quantity, new
        limit price (stop-limit; a stop-market's row price is ignored), new stop price when
        stop_price_ticks != 0. It keeps its place in the stop list only when nothing but a
        smaller quantity changes; else it goes to the back (a new acceptance)."""
        bk = S.bk
        poff = bk[b, F_POFF]
        ms = poff + s
        fl = S.o_flags[ms]
        smkt = (fl & FL_SMKT) != 0
        lq = S.o_qty[ms]
        q = I.qty[i]
        px = I.px[i]
        nsp = I.stop[i]
        ts = I.ts[i]
        sym = bk[b, F_SYM]
        oid = I.oid[i]
        rej = R_NONE
        if q <= 0:
            rej = R_INVALID_QTY
        elif (not smkt) and px <= 0:
            rej = R_INVALID_PRICE
        elif nsp < 0:
            rej = R_INVALID_STOP_PRICE
        elif I.force[i] != 0:
            rej = I.force[i]
        if rej != R_NONE:
            emit_event(O, r, seq, ts, sym, oid, I.acct[i], I.side[i], EV_REJECTED, rej, px, q, lq)
            return ST_OK
        if (not smkt) and outside_ladder(S, b, px):
            return ST_NEED_LADDER
        npx = 0 if smkt else px
        nstop = S.o_exp[ms] if nsp == 0 else nsp
        keep = npx == S.o_px[ms] and nstop == S.o_exp[ms] and q <= lq
        S.o_qty[ms] = q
        if not keep:
            stop_unlink(S, b, s)
            S.o_px[ms] = npx
            S.o_exp[ms] = nstop
            stop_append(S, b, s)
        emit_event(O, r, seq, ts, sym, oid, S.o_acct[ms], SELL if (fl & FL_SELL) != 0 else BUY,
                   EV_REPLACED, R_NONE, npx, q, q)
        return ST_OK

    @register_jitable
    def stops_fire(S, O, r, b, seq, ts, stp):
        """After a row of book b (plain engine): trigger the stops its last trade price reaches,
        one at a time, the first in acceptance order first; each enters the book as the taker it
        now is (TRIGGERED, then matched as a MARKET order (stop) or a LIMIT order at its price
        (stop-limit) whose remainder rests), and its own trades may trigger more. Outputs go to
        region r under the row's seq and ts; the step reserved room for all of it (stop_room)."""
        bk = S.bk
        sym = bk[b, F_SYM]
        while bk[b, F_NSTOP] != 0:
            last = bk[b, F_LAST]
            if last == 0:
                return
            lo = bk[b, F_SBMIN]
            hi = bk[b, F_SSMAX]
            if not ((lo != 0 and last >= lo) or (hi != 0 and last <= hi)):
                return
            s = stop_next_due(S, b)
            if s < 0:
                return
            poff = bk[b, F_POFF]
            ms = poff + s
            oid = S.o_id[ms]
            acct = S.o_acct[ms]
            q = S.o_qty[ms]
            px = S.o_px[ms]
            fl = S.o_flags[ms]
            side = SELL if (fl & FL_SELL) != 0 else BUY
            is_market = (fl & FL_SMKT) != 0
            stop_unlink(S, b, s)
            S.o_flags[ms] = fl & np.uint8(~(FL_STOP | FL_SMKT) & 0xFF)
            emit_event(O, r, seq, ts, sym, oid, acct, side, EV_TRIGGERED, R_NONE, S.o_exp[ms], q, q)
            S.o_exp[ms] = 0                  # the stop price field is the expiry again: none
            q, stopped, _halt = match_taker(S, O, r, b, seq, ts, oid, acct, side, is_market, px, q, stp,
                                            None, 0, 0, 0)
            if stopped or q == 0 or is_market:
                if q > 0 and not stopped:       # a stop-market's remainder: nothing left to take
                    emit_event(O, r, seq, ts, sym, oid, acct, side, EV_EXPIRED, R_NONE, 0, q, 0)
                id_delete(S.tab, bk[b, F_TOFF], bk[b, F_TMASK], S.o_id, poff, oid)
                slot_free(S, b, poff, s)
                continue
            S.o_qty[ms] = q
            top_gain(S, b, s, side, px - bk[b, F_BASE])
            g = add_resting(S, b, s)
            emit_delta(O, r, seq, ts, sym, side, px, S.lv_qty[g], S.lv_cnt[g])

    @register_jitable
    def gtd_due(I, S, O, r, i, b, seq, R):
        """Before input row i of book b: expire the book's good-till-date orders due at its ts
        (``expire_due``). ST_OK, or ST_NEED_OUTPUT with nothing written."""
        esr = 0
        if RISK:
            esr = R.sr[i]
        return expire_due(S, O, r, b, seq, I.ts[i], S.bk[b, F_SYM], R, esr)

    return step, match_taker, fok_fillable, gtd_due, stops_fire


_step_plain, match_taker, fok_fillable, gtd_due_plain, _stops_fire_plain = _make_step(False)
process_row_risk, _match_taker_risk, _fok_fillable_risk, gtd_due_risk, _stops_fire_risk = _make_step(True)


@register_jitable(inline="always")
def process_row(I, S, O, r, i, b, seq, stp):
    """The per-row step without risk checks or breakers (``_make_step``), then the stops the
    row's trades trigger (``stops_fire``; a book with no untriggered stop skips it: one compare)."""
    st = _step_plain(I, S, O, r, i, b, seq, stp, None)
    if st == ST_OK and S.bk[b, F_NSTOP] != 0:
        _stops_fire_plain(S, O, r, b, seq, I.ts[i], stp)
    return st
