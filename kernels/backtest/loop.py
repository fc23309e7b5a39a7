"""The tick backtest: one event loop over an L3 market-event stream, a strategy's callbacks,
modelled latency and exact queue positions. Two exchange models: no-impact (below: the replayed
book as the data says) and impact (IMPACT = True, cfg[CF_IMPACT] = 1: the strategy's orders and the replayed
orders share one book matched by the engine's step; rules in hpte.kernels.backtest.impact,
functions ``im_*`` here). Clocks, channels, latency, the strategy's view and the accounting are
the same in both.

This file is also the *template* of every strategy's compiled driver:
``hpte.engine.backtest.compile`` copies its source into a generated module and rebinds
``on_book``, ``on_trade``, ``on_order``, ``on_fill`` and ``on_timer`` to the user's functions
at the end, so that numba compiles the loop and the strategy as one unit and caches it under a
name that changes whenever the strategy's or this file's source changes. Imported as it is,
the module runs the null strategy (every callback does nothing).

Clocks and channels (all times int64 ns; every channel is FIFO)
--------------------------------------------------------------
* exchange: market event i happens at ``ts[i]``;
* feed: the strategy sees event i at ``max(prev, ts[i] + feed latency)`` on its own copy of the
  book (so it never acts on information it could not have yet);
* entry: an action taken at local time t reaches the exchange at ``max(prev, t + entry)``;
* response: an exchange reply made at t reaches the strategy at ``max(prev, t + response)``.
Each latency is a constant, uniform in [lo, hi], or one of an empirical table's values (kept in
cfg after its NCF fields), drawn from its own seeded splitmix64 stream.
Among items due at the same time the order is: market event, order arrival, feed update,
response, timer. A strategy that keeps acting at one instant (at zero latency every action can
bring a response at the same instant, and so on) is stopped after cfg[CF_MAX_INSTANT] actions
at that instant (ST_RUNAWAY). The run ends at the last market event's time; anything still in flight then
is dropped.

Queue position (no-impact, L3)
------------------------------
A resting strategy order joins behind the level's whole displayed quantity (``ahead``). A
cancel at its level reduces ``ahead`` when the cancelled order arrived before it (orders the
stream never introduced, and learned seed quantity, count as earlier). An execution of q at its
level consumes ``ahead`` first; what passes it fills the order. An execution, hidden trade or
new opposite order at a price through the order's (a sell at or below a resting buy) fills it
from that volume. Each market event's volume is shared among the strategy's orders in id
order, so their fills from one event never exceed its quantity. A marketable strategy order
takes the displayed opposite levels up to its limit (the book is left as the data says) and
the rest expires; a post-only order that would take is rejected.

Queue models (no-impact, L2 data: cfg[CF_QUEUE] != Q_L3)
--------------------------------------------------------
L2 data has price levels and trades but no order ids: MK_LEVEL rows (the level's new
quantity) and MK_TRADE rows. A resting strategy order joins behind the level's quantity as on
L3 data; then ``x_level_event`` moves it by the chosen model, as hftbacktest's queue models
do: a trade at its price consumes ``ahead`` first and what passes it fills the order;
Q_CONSERVATIVE advances only so (a level decrease that is not a trade only caps ``ahead`` at
the level's new quantity); Q_POWER / Q_LOG take such a decrease from behind the order with
probability f(behind) / (f(behind) + f(ahead)) (f(x) = x ** n, or log(1 + x)), drawn from
the seeded stream sc[SC_RNG_Q]. Trades, trades through its price and opposite levels that
grow at or through it fill it as on L3 data.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange
from numba.extending import register_jitable

from hpte.kernels.backtest.api import (
    A_CANCEL, A_NEW, DEPTH, EV_ACCEPTED, EV_CANCEL_SENT, EV_CANCELLED, EV_EXPIRED, EV_FILL,
    EV_REJECTED, EV_SUBMITTED, MD_ASK_PX, MD_ASK_QTY, MD_BID_PX, MD_BID_QTY, MD_CASH,
    MD_EV_ID, MD_EV_KIND, MD_EV_LEAVES, MD_EV_MAKER, MD_EV_PX, MD_EV_QTY, MD_EV_REASON,
    MD_EV_SIDE, MD_EV_TS, MD_FEES, MD_LAST_PX, MD_LAST_QTY, MD_LAST_SIDE, MD_LAST_TS,
    MD_LEVELS, MD_NOW, MD_OPEN, MD_POSITION, MK_ADD, MK_CANCEL, MK_EXEC, MK_LEVEL, MK_SEED, MK_TRADE,
    NO_PRICE, OF_AHEAD, OF_ID, OF_LEAVES, OF_PX, OF_QTY, OF_SIDE, OF_STATUS, OF_TAG, OF_TS,
    OS_CANCELLING, OS_OPEN, OS_PENDING, RJ_NO_LIQUIDITY, RJ_NONE, RJ_POST_ONLY, RJ_PRICE,
    RJ_QTY, RJ_RANGE, RJ_TOO_MANY, RJ_UNKNOWN, T_MARKET, TIF_IOC, AF_ACTION, AF_ID, AF_POST,
    AF_PX, AF_QTY, AF_SIDE, AF_TAG, AF_TIF, AF_TYPE, MAX_ACTIONS, MAX_ORDERS, NAF, NOF,
)
from hpte.kernels.backtest.metrics import fold
from hpte.kernels.backtest.impact import (
    AGG_ID, IM_FLUSH, IM_OK, IM_POOL, IM_RING, MKT_ACCT, MKT_ID0, SEED_ID0, STRAT_ACCT, ahead_of, cap_level, pool_full, reduce_level, reduce_order,
    sync_best, trade_limit, _row, _slot,
)
from hpte.kernels import enums as E
from hpte.kernels.book import F_NREST, F_POFF

INF = np.int64(9223372036854775807)
EMPTY_KEY = -1

# --- status --------------------------------------------------------------------------------
ST_DONE = 0     # final chunk processed to the end
ST_CHUNK = 1    # chunk exhausted: call again with the next chunk (carry from SC_IF)
ST_FLUSH = 2    # an output buffer is full: drain and call again
ST_RING = 3     # request or response ring full (knob: ring_capacity)
ST_RANGE = 4    # a market price outside the ladder (sc[SC_ERR] = the row)
ST_HASH = 5     # (unused: the order-id table lives in arrivals_cpu)
ST_RUNAWAY = 6  # more than cfg[CF_MAX_INSTANT] actions at one local instant (sc[SC_INST_T])
ST_POOL = 7     # impact mode: the simulated book's pool is full (grow it, call again)

# --- sc: int64 scalar state ------------------------------------------------------------------
SC_IX = 0       # exchange cursor in the chunk
SC_IF = 1       # feed cursor in the chunk (<= SC_IX)
SC_SEQ = 2      # market events applied at the exchange (global)
SC_XBB = 3      # exchange best bid index (-1 none)
SC_XBA = 4
SC_LBB = 5      # local (strategy view) best bid index
SC_LBA = 6
SC_FEED_T = 7   # arrival time of the feed event at SC_IF (valid when SC_FEED_OK)
SC_FEED_OK = 8
SC_FEED_PREV = 9
SC_RQ_HEAD = 10
SC_RQ_N = 11
SC_RQ_PREV = 12
SC_RS_HEAD = 13
SC_RS_N = 14
SC_RS_PREV = 15
SC_TIMER = 16   # next timer time
SC_SAMPLE = 17  # next equity sample time
SC_POS = 18     # exchange-side truth: position, cash, fees
SC_CASH = 19
SC_FEES = 20
SC_NFILL = 21   # rows written this call
SC_NEV = 22
SC_NEQ = 23
SC_RNG_F = 24
SC_RNG_E = 25
SC_RNG_R = 26
SC_END = 27     # last market event time seen
SC_HN = 28      # (unused)
SC_ERR = 29
SC_NXO = 30     # open strategy orders at the exchange
SC_STARTED = 31
SC_MAXBUY = 32  # highest price of an open strategy buy at the exchange (-1: none)
SC_MINSELL = 33  # lowest price of an open strategy sell (INF: none)
SC_INST_T = 34  # the local instant of the latest actions
SC_INST_N = 35  # actions taken at that instant so far
SC_RUNAWAY = 36  # 1: stopped by the per-instant action limit
SC_DBB = 37     # impact mode: the data's own best bid / ask index (xlad is the data's ladder)
SC_DBA = 38
SC_RNG_Q = 39   # L2 probabilistic queue model: its seeded splitmix64 stream
NSC = 40

# --- cfg: int64 configuration ----------------------------------------------------------------
CF_BASE = 0     # price of ladder index 0
CF_TICK = 1
CF_FEED_LO = 2
CF_FEED_HI = 3
CF_ENTRY_LO = 4
CF_ENTRY_HI = 5
CF_RESP_LO = 6
CF_RESP_HI = 7
CF_MAKER_FEE = 8    # per lot, price units (negative: rebate)
CF_TAKER_FEE = 9
CF_TIMER_NS = 10    # 0: no timer
CF_SAMPLE_NS = 11   # equity sample interval (> 0)
CF_FINAL = 12       # 1: this chunk is the last
CF_HBITS = 13       # (unused)
CF_DEPTH = 14       # levels per side written into md (the strategy's BOOK_DEPTH, 1..DEPTH)
CF_MAX_INSTANT = 15  # most actions the strategy may take at one local instant (0: no limit)
CF_IMPACT = 16  # 1: impact mode (the run uses a driver built with IMPACT = True)
CF_QUEUE = 17   # Q_*: 0 L3 data, exact queue position; else L2 data (MK_LEVEL, MK_TRADE) and a queue model
CF_QPARAM = 18  # Q_POWER: the exponent n x 1000
NCF = 19

# --- queue models of L2 data (cfg[CF_QUEUE]) ---------------------------------------------------
Q_L3 = 0            # L3 data: exact queue position (no model)
Q_CONSERVATIVE = 1  # ahead shrinks only by trades at the level (and never exceeds the level)
Q_POWER = 2         # probabilistic, f(x) = x ** n
Q_LOG = 3           # probabilistic, f(x) = log(1 + x)

# --- exchange-side strategy orders: int64[MAX_ORDERS, NXO] -----------------------------------
XO_ID = 0
XO_SIDE = 1
XO_PX = 2
XO_IDX = 3
XO_LEAVES = 4
XO_AHEAD = 5
XO_ENTRY = 6    # market events applied before it rested (those are ahead of it)
XO_TS = 7       # exchange time it was accepted
XO_QTY = 8
XO_TRADED = 9   # L2: traded quantity at its level since the level's last update (hftbacktest's cum_trade_qty)
NXO = 10

# --- request ring: int64[R, NRQ] ---------------------------------------------------------------
RQ_T = 0
RQ_ACTION = 1
RQ_ID = 2
RQ_SIDE = 3
RQ_PX = 4
RQ_QTY = 5
RQ_TYPE = 6
RQ_TIF = 7
RQ_POST = 8
NRQ = 9

# --- response ring: int64[R, NRS] ------------------------------------------------------------
RS_T = 0
RS_KIND = 1
RS_ID = 2
RS_PX = 3
RS_QTY = 4
RS_LEAVES = 5
RS_AHEAD = 6
RS_REASON = 7
RS_MAKER = 8
RS_SIDE = 9
RS_XTS = 10
RS_FEE = 11
NRS = 12

# --- outputs ---------------------------------------------------------------------------------
FL_TS = 0       # exchange time
FL_ID = 1
FL_SIDE = 2
FL_PX = 3
FL_QTY = 4
FL_MAKER = 5
FL_FEE = 6
FL_POS = 7      # after the fill
FL_CASH = 8
FL_SEQ = 9      # market events applied before the fill (taker) / index of the causing event (maker)
FL_QUEUE_NS = 10  # time from acceptance to this fill
NFL = 11

EL_TS = 0
EL_ID = 1
EL_KIND = 2
EL_SIDE = 3
EL_PX = 4
EL_QTY = 5
EL_LEAVES = 6
EL_AHEAD = 7
EL_REASON = 8
EL_TYPE = 9
EL_TIF = 10
NEL = 11

EQ_TS = 0
EQ_POS = 1
EQ_CASH = 2
EQ_BID = 3
EQ_ASK = 4
EQ_FEES = 5
NEQ = 6


# --- the strategy (the null strategy here; the generated driver rebinds these) ---------------
@register_jitable
def _noop(md, orders, params, state, act):
    return None


# The exchange model compiled into this copy of the loop: a driver generated for impact mode
# sets it to True (hpte.engine.backtest.strategy.driver(strat, impact=True)); numba reads it as
# a constant and prunes the other model's branches, so a no-impact driver never compiles the
# engine's step into itself (that cost ~20 s of compile per strategy).
IMPACT = False

on_book = _noop
on_trade = _noop
on_order = _noop
on_fill = _noop
on_timer = _noop


# --- helpers ---------------------------------------------------------------------------------
@register_jitable
def rand_u64(sc, k):
    """splitmix64: advance stream sc[k] and return its next 64-bit value."""
    s = np.uint64(sc[k]) + np.uint64(0x9E3779B97F4A7C15)
    sc[k] = np.int64(s)
    z = s
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@register_jitable
def latency(sc, cfg, k, lo_col):
    """The next latency of a channel (ns): constant (lo == hi), uniform in [lo, hi] from the
    seeded stream sc[k], or, when hi < 0, an empirical table: one of the -hi values stored in
    cfg from index lo, picked uniformly by the same stream."""
    lo = cfg[lo_col]
    hi = cfg[lo_col + 1]
    if hi < 0:
        return cfg[lo + np.int64(rand_u64(sc, k) % np.uint64(-hi))]
    if hi <= lo:
        return lo
    return lo + np.int64(rand_u64(sc, k) % np.uint64(hi - lo + 1))


@register_jitable
def _home(key, bits):
    return np.int64((np.uint64(key) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(64 - bits))


@register_jitable
def h_find(keys, key, bits):
    mask = keys.shape[0] - 1
    i = _home(key, bits)
    while True:
        k = keys[i]
        if k == key:
            return i
        if k == EMPTY_KEY:
            return -1
        i = (i + 1) & mask


@register_jitable
def h_insert(keys, vals, key, v0, v1, bits):
    """Insert or overwrite; returns 1 if a new key was added."""
    mask = keys.shape[0] - 1
    i = _home(key, bits)
    while True:
        k = keys[i]
        if k == EMPTY_KEY or k == key:
            keys[i] = key
            vals[i, 0] = v0
            vals[i, 1] = v1
            return 1 if k == EMPTY_KEY else 0
        i = (i + 1) & mask


@register_jitable
def h_delete(keys, vals, pos, bits):
    """Remove slot pos (linear probing, backward-shift deletion)."""
    mask = keys.shape[0] - 1
    i = pos
    j = pos
    while True:
        j = (j + 1) & mask
        if keys[j] == EMPTY_KEY:
            break
        h = _home(keys[j], bits)
        if i <= j:
            stay = i < h <= j
        else:
            stay = h > i or h <= j
        if stay:
            continue
        keys[i] = keys[j]
        vals[i, 0] = vals[j, 0]
        vals[i, 1] = vals[j, 1]
        i = j
    keys[i] = EMPTY_KEY


@njit(cache=True, nogil=True)
def rehash_cpu(keys, vals, keys2, vals2, bits2):
    """Move every key of (keys, vals) into the larger empty table (keys2, vals2)."""
    for i in range(keys.shape[0]):
        if keys[i] != EMPTY_KEY:
            h_insert(keys2, vals2, keys[i], vals[i, 0], vals[i, 1], bits2)


@register_jitable
def lad_add(lad, sc, bb_col, s, idx, q):
    """Add q at ladder side s (0 bid, 1 ask), index idx; keep the best index in sc[bb_col + s]."""
    lad[s, idx] += q
    b = sc[bb_col + s]
    if lad[s, idx] > 0:
        if b < 0 or (s == 0 and idx > b) or (s == 1 and idx < b):
            sc[bb_col + s] = idx


@register_jitable
def lad_sub(lad, sc, bb_col, s, idx, q):
    """Remove q (clamped at the level's quantity); rescan the best if the best level emptied."""
    v = lad[s, idx] - q
    lad[s, idx] = v if v > 0 else 0
    if v <= 0 and sc[bb_col + s] == idx:
        L = lad.shape[1]
        j = idx
        if s == 0:
            j -= 1
            while j >= 0 and lad[0, j] <= 0:
                j -= 1
            sc[bb_col] = j
        else:
            j += 1
            while j < L and lad[1, j] <= 0:
                j += 1
            sc[bb_col + 1] = j if j < L else -1


@register_jitable
def push_rsp(rsp, sc, cfg, t, kind, oid, px, qty, leaves, ahead, reason, maker, side, fee):
    R = rsp.shape[0]
    if sc[SC_RS_N] >= R:
        return False
    arr = t + latency(sc, cfg, SC_RNG_R, CF_RESP_LO)
    if arr < sc[SC_RS_PREV]:
        arr = sc[SC_RS_PREV]
    sc[SC_RS_PREV] = arr
    r = (sc[SC_RS_HEAD] + sc[SC_RS_N]) % R
    rsp[r, RS_T] = arr
    rsp[r, RS_KIND] = kind
    rsp[r, RS_ID] = oid
    rsp[r, RS_PX] = px
    rsp[r, RS_QTY] = qty
    rsp[r, RS_LEAVES] = leaves
    rsp[r, RS_AHEAD] = ahead
    rsp[r, RS_REASON] = reason
    rsp[r, RS_MAKER] = maker
    rsp[r, RS_SIDE] = side
    rsp[r, RS_XTS] = t
    rsp[r, RS_FEE] = fee
    sc[SC_RS_N] += 1
    return True


@register_jitable
def log_ev(evs, sc, t, oid, kind, side, px, qty, leaves, ahead, reason, otype, tif):
    r = sc[SC_NEV]
    evs[r, EL_TS] = t
    evs[r, EL_ID] = oid
    evs[r, EL_KIND] = kind
    evs[r, EL_SIDE] = side
    evs[r, EL_PX] = px
    evs[r, EL_QTY] = qty
    evs[r, EL_LEAVES] = leaves
    evs[r, EL_AHEAD] = ahead
    evs[r, EL_REASON] = reason
    evs[r, EL_TYPE] = otype
    evs[r, EL_TIF] = tif
    sc[SC_NEV] = r + 1


@register_jitable
def x_fill(xo, i, px, q, maker, t, seq, sc, cfg, fills, rsp):
    """Fill strategy order row i at the exchange; returns False if the response ring is full."""
    side = xo[i, XO_SIDE]
    xo[i, XO_LEAVES] -= q
    fee = q * (cfg[CF_MAKER_FEE] if maker else cfg[CF_TAKER_FEE])
    sc[SC_POS] += side * q
    sc[SC_CASH] -= side * px * q + fee
    sc[SC_FEES] += fee
    r = sc[SC_NFILL]
    fills[r, FL_TS] = t
    fills[r, FL_ID] = xo[i, XO_ID]
    fills[r, FL_SIDE] = side
    fills[r, FL_PX] = px
    fills[r, FL_QTY] = q
    fills[r, FL_MAKER] = maker
    fills[r, FL_FEE] = fee
    fills[r, FL_POS] = sc[SC_POS]
    fills[r, FL_CASH] = sc[SC_CASH]
    fills[r, FL_SEQ] = seq
    fills[r, FL_QUEUE_NS] = t - xo[i, XO_TS]
    sc[SC_NFILL] = r + 1
    ok = push_rsp(rsp, sc, cfg, t, EV_FILL, xo[i, XO_ID], px, q, xo[i, XO_LEAVES], xo[i, XO_AHEAD],
                  RJ_NONE, maker, side, fee)
    return ok


@register_jitable
def compact(xo, sc):
    """Drop rows that are done (id 0 or nothing left); live rows stay first, in id order."""
    n = sc[SC_NXO]
    w = 0
    for i in range(n):
        if xo[i, XO_ID] != 0 and xo[i, XO_LEAVES] > 0:
            if w != i:
                for c in range(NXO):
                    xo[w, c] = xo[i, c]
            w += 1
    for i in range(w, n):
        xo[i, XO_ID] = 0
    sc[SC_NXO] = w
    mb = np.int64(-1)
    ms = INF
    for i in range(w):
        p = xo[i, XO_PX]
        if xo[i, XO_SIDE] > 0:
            if p > mb:
                mb = p
        elif p < ms:
            ms = p
    sc[SC_MAXBUY] = mb
    sc[SC_MINSELL] = ms


@register_jitable
def x_hit(xo, i, q, avail, through, at_px, t, seq, sc, cfg, fills, rsp):
    """Strategy order i hit by market volume: ``through`` (a print beyond its price on its side, or
    an opposite order or level at or through its price) fills it from ``avail`` (the event's
    volume not yet given to the strategy's orders before it); ``at_px`` (a print of q lots at its
    price on its side) first consumes the volume ahead of it, and what passes it fills the order,
    at most ``avail``. Returns (avail left, False if the response ring is full)."""
    ok = True
    opx = xo[i, XO_PX]
    if through:
        f = min(avail, xo[i, XO_LEAVES])
        if f > 0:
            avail -= f
            ok = x_fill(xo, i, opx, f, 1, t, seq, sc, cfg, fills, rsp)
    elif at_px:
        ahead = xo[i, XO_AHEAD]
        c = min(q, ahead)
        xo[i, XO_AHEAD] = ahead - c
        f = min(q - c, xo[i, XO_LEAVES], avail)
        if f > 0:
            avail -= f
            ok = x_fill(xo, i, opx, f, 1, t, seq, sc, cfg, fills, rsp)
    return avail, ok


@register_jitable
def x_market_event(kind, side, px, idx, q, arrival, t, cfg, sc, xlad, xo, fills, rsp):
    """Apply one market event at the exchange and fill strategy orders it reaches. ``arrival``:
    for a cancel or execution, the index (in the whole stream) of the ADD of the order it
    reduces, -1 when unknown (ahead of every strategy order); see ``arrivals_cpu``."""
    s = 0 if side > 0 else 1
    seq = sc[SC_SEQ]
    if kind == MK_ADD or kind == MK_SEED:
        lad_add(xlad, sc, SC_XBB, s, idx, q)
    elif kind == MK_CANCEL or kind == MK_EXEC:
        lad_sub(xlad, sc, SC_XBB, s, idx, q)
    if sc[SC_NXO] == 0:
        return True
    # only events at or through a strategy order's price can touch it
    if kind == MK_ADD:
        if side > 0:
            if px < sc[SC_MINSELL]:
                return True
        elif px > sc[SC_MAXBUY]:
            return True
    elif side > 0:
        if px > sc[SC_MAXBUY]:
            return True
    elif px < sc[SC_MINSELL]:
        return True
    ok = True
    avail = q       # volume of this event the strategy's orders may still take
    for i in range(sc[SC_NXO]):      # rows are in id order
        if xo[i, XO_LEAVES] <= 0:
            continue
        oside = xo[i, XO_SIDE]
        opx = xo[i, XO_PX]
        if kind == MK_SEED:
            if oside == side and opx == px:
                xo[i, XO_AHEAD] += q
            continue
        if kind == MK_CANCEL:
            if oside == side and opx == px and (arrival < 0 or arrival < xo[i, XO_ENTRY]):
                a = xo[i, XO_AHEAD] - q
                xo[i, XO_AHEAD] = a if a > 0 else 0
            continue
        if kind == MK_ADD:
            # a new opposite order at or through a resting strategy order
            if oside == -side and ((oside > 0 and px <= opx) or (oside < 0 and px >= opx)):
                avail, hit = x_hit(xo, i, q, avail, True, False, t, seq, sc, cfg, fills, rsp)
                ok = hit and ok
            continue
        # MK_EXEC / MK_TRADE: a resting order on `side` at px traded with an aggressor (a hidden
        # MK_TRADE at the order's price consumes nothing ahead of it)
        if oside == side:
            through = (oside > 0 and opx > px) or (oside < 0 and opx < px)
            avail, hit = x_hit(xo, i, q, avail, through, kind == MK_EXEC and opx == px, t, seq, sc, cfg, fills, rsp)
            ok = hit and ok
    compact(xo, sc)
    return ok


@register_jitable
def q_behind(cfg, front, back):
    """The probabilistic queue model: the probability that a level decrease (not a trade) comes
    from behind the strategy's order, f(back) / (f(back) + f(front)), with f(x) = x ** n
    (Q_POWER, n = cfg[CF_QPARAM] / 1000) or log(1 + x) (Q_LOG); front, back >= 1 lots."""
    if cfg[CF_QUEUE] == Q_LOG:
        fa = math.log1p(np.float64(front))     # math, not np: CUDA lowers math.log1p only
        fb = math.log1p(np.float64(back))
    else:
        n = cfg[CF_QPARAM] / 1000.0
        fa = np.float64(front) ** n
        fb = np.float64(back) ** n
    return fb / (fa + fb)


@register_jitable
def x_level_event(kind, side, px, idx, q, t, cfg, sc, xlad, xo, fills, rsp):
    """Apply one L2 market event (MK_LEVEL: level (side, px) now shows q; MK_TRADE: q traded
    at px, side = the resting side) at the exchange and move the strategy's orders by the queue
    model cfg[CF_QUEUE]. Returns False if the response ring is full.

    A level update at an order's (side, price) first discounts the quantity traded there since
    the level's last update (XO_TRADED: that volume already passed through ``ahead``); a
    decrease d left over then: Q_CONSERVATIVE ignores it; the probabilistic models draw one
    uniform u from the seeded stream sc[SC_RNG_Q] (only when 0 < ahead < previous level qty)
    and take d from behind the order when u < q_behind(ahead, behind) (what exceeds the volume
    behind comes off ahead), else from ahead; with nothing behind, d comes off ahead. After
    every update ahead <= the level's new quantity. A trade at the order's price consumes
    ahead first, what passes it fills the order; a trade through the order's price, or an
    opposite level that grows at or through it, fills it from that volume (shared among the
    strategy's orders in id order, as on L3 data)."""
    s = 0 if side > 0 else 1
    seq = sc[SC_SEQ]
    prev = np.int64(0)
    if kind == MK_LEVEL:
        prev = xlad[s, idx]
        if q > prev:
            lad_add(xlad, sc, SC_XBB, s, idx, q - prev)
        elif q < prev:
            lad_sub(xlad, sc, SC_XBB, s, idx, prev - q)
    if sc[SC_NXO] == 0:
        return True
    ok = True
    avail = q if kind == MK_TRADE else q - prev
    model = cfg[CF_QUEUE]
    for i in range(sc[SC_NXO]):      # rows are in id order
        if xo[i, XO_LEAVES] <= 0:
            continue
        oside = xo[i, XO_SIDE]
        opx = xo[i, XO_PX]
        if kind == MK_LEVEL:
            if oside == side:
                if opx == px:
                    d = prev - q - xo[i, XO_TRADED]
                    xo[i, XO_TRADED] = 0
                    a = xo[i, XO_AHEAD]
                    if d > 0 and a > 0 and model != Q_CONSERVATIVE:
                        back = prev - a
                        if back <= 0:
                            a -= min(d, a)
                        else:
                            u = np.float64(rand_u64(sc, SC_RNG_Q) >> np.uint64(11)) * (1.0 / 9007199254740992.0)
                            if u < q_behind(cfg, a, back):
                                if d > back:
                                    a -= min(d - back, a)
                            else:
                                a -= min(d, a)
                    xo[i, XO_AHEAD] = a if a < q else q
            elif (oside > 0 and px <= opx) or (oside < 0 and px >= opx):
                # an opposite level that grows at or through the order
                avail, hit = x_hit(xo, i, q, avail, True, False, t, seq, sc, cfg, fills, rsp)
                ok = hit and ok
            continue
        # MK_TRADE: a resting quantity on `side` at px traded
        if oside != side:
            continue
        if opx == px:
            xo[i, XO_TRADED] += q
        through = (oside > 0 and opx > px) or (oside < 0 and opx < px)
        avail, hit = x_hit(xo, i, q, avail, through, opx == px, t, seq, sc, cfg, fills, rsp)
        ok = hit and ok
    compact(xo, sc)
    return ok


@register_jitable
def reject_unknown(t, oid, cfg, sc, evs, rsp):
    """A strategy cancel of an id that is not live at the exchange: REJECTED (RJ_UNKNOWN) in the
    event log and the response ring; False if the ring is full."""
    log_ev(evs, sc, t, oid, EV_REJECTED, 0, 0, 0, 0, 0, RJ_UNKNOWN, 0, 0)
    return push_rsp(rsp, sc, cfg, t, EV_REJECTED, oid, 0, 0, 0, 0, RJ_UNKNOWN, 0, 0, 0)


@register_jitable
def new_reason(qty, otype, px, cfg, L, row, nrows):
    """The reject reason of a strategy's new order at the exchange before the book is looked at
    (RJ_NONE: none): quantity (lots) not positive, a limit price (ticks) off the grid or outside
    the ladder of L levels, or no free order row (row of nrows)."""
    base = cfg[CF_BASE]
    tick = cfg[CF_TICK]
    if qty <= 0:
        return RJ_QTY
    if otype != T_MARKET:
        if px <= 0 or (px - base) % tick != 0:
            return RJ_PRICE
        if px < base or (px - base) // tick >= L:
            return RJ_RANGE
    if row >= nrows:
        return RJ_TOO_MANY
    return RJ_NONE


@register_jitable
def x_request(req, h, t, cfg, sc, xlad, xo, fills, evs, rsp):
    """A strategy request arrives at the exchange."""
    action = req[h, RQ_ACTION]
    oid = req[h, RQ_ID]
    side = req[h, RQ_SIDE]
    px = req[h, RQ_PX]
    qty = req[h, RQ_QTY]
    otype = req[h, RQ_TYPE]
    tif = req[h, RQ_TIF]
    ok = True
    if action == A_CANCEL:
        for i in range(sc[SC_NXO]):
            if xo[i, XO_ID] == oid and oid != 0:
                lv = xo[i, XO_LEAVES]
                log_ev(evs, sc, t, oid, EV_CANCELLED, xo[i, XO_SIDE], xo[i, XO_PX], 0, lv, xo[i, XO_AHEAD], RJ_NONE, 0, 0)
                ok = push_rsp(rsp, sc, cfg, t, EV_CANCELLED, oid, xo[i, XO_PX], 0, lv, 0, RJ_NONE, 0, xo[i, XO_SIDE], 0)
                xo[i, XO_ID] = 0
                compact(xo, sc)
                return ok
        return reject_unknown(t, oid, cfg, sc, evs, rsp)
    base = cfg[CF_BASE]
    tick = cfg[CF_TICK]
    L = xlad.shape[1]
    row = sc[SC_NXO]    # appended: rows stay in id order (ids increase)
    reason = new_reason(qty, otype, px, cfg, L, row, xo.shape[0])
    s = 0 if side > 0 else 1
    o = 1 - s
    best_opp = sc[SC_XBB + o]
    if reason == RJ_NONE and otype == T_MARKET and best_opp < 0:
        reason = RJ_NO_LIQUIDITY
    crosses = False
    if reason == RJ_NONE and best_opp >= 0:
        opp_px = base + best_opp * tick
        crosses = otype == T_MARKET or (side > 0 and px >= opp_px) or (side < 0 and px <= opp_px)
        if crosses and req[h, RQ_POST] != 0:
            reason = RJ_POST_ONLY
    if reason != RJ_NONE:
        log_ev(evs, sc, t, oid, EV_REJECTED, side, px, qty, 0, 0, reason, otype, tif)
        return push_rsp(rsp, sc, cfg, t, EV_REJECTED, oid, px, 0, 0, 0, reason, 0, side, 0)
    xo[row, XO_ID] = oid
    xo[row, XO_SIDE] = side
    xo[row, XO_PX] = px
    xo[row, XO_IDX] = (px - base) // tick if otype != T_MARKET else -1
    xo[row, XO_LEAVES] = qty
    xo[row, XO_QTY] = qty
    xo[row, XO_ENTRY] = sc[SC_SEQ]
    xo[row, XO_TS] = t
    xo[row, XO_TRADED] = 0
    ahead = 0
    if not crosses and tif != TIF_IOC:
        ahead = xlad[s, xo[row, XO_IDX]]
    xo[row, XO_AHEAD] = ahead
    sc[SC_NXO] += 1
    log_ev(evs, sc, t, oid, EV_ACCEPTED, side, px, qty, qty, ahead, RJ_NONE, otype, tif)
    ok = push_rsp(rsp, sc, cfg, t, EV_ACCEPTED, oid, px, 0, qty, ahead, RJ_NONE, 0, side, 0)
    if crosses:
        # take the displayed opposite levels up to the limit; the book is left as it is
        j = best_opp
        L = xlad.shape[1]
        while j >= 0 and j < L and xo[row, XO_LEAVES] > 0:
            lvl = xlad[o, j]
            if lvl > 0:
                lpx = base + j * tick
                if otype != T_MARKET and ((side > 0 and lpx > px) or (side < 0 and lpx < px)):
                    break
                f = min(lvl, xo[row, XO_LEAVES])
                ok = x_fill(xo, row, lpx, f, 0, t, sc[SC_SEQ], sc, cfg, fills, rsp) and ok
            j = j + 1 if o == 1 else j - 1
    if xo[row, XO_LEAVES] > 0 and (crosses or tif == TIF_IOC):
        lv = xo[row, XO_LEAVES]
        log_ev(evs, sc, t, oid, EV_EXPIRED, side, px, 0, lv, 0, RJ_NONE, otype, tif)
        ok = push_rsp(rsp, sc, cfg, t, EV_EXPIRED, oid, px, 0, lv, 0, RJ_NONE, 0, side, 0) and ok
        xo[row, XO_ID] = 0
    compact(xo, sc)
    return ok


# --- impact mode: the exchange is a real book (hpte.kernels.backtest.impact has the rules) -------
@register_jitable
def im_fills(S, O, xo, t, cfg, sc, fills, rsp):
    """Book the strategy's fills among the step's fill rows O.F[:O.cur[0, 0]] (taker or maker);
    returns False when the response ring is full. Does not compact xo."""
    ok = True
    base = cfg[CF_BASE]
    tick = cfg[CF_TICK]
    for k in range(O.cur[0, 0]):
        for who in range(2):
            if O.F[k, 5 + who] != STRAT_ACCT:
                continue
            oid = O.F[k, 3 + who]
            i = -1
            for j in range(sc[SC_NXO]):
                if xo[j, XO_ID] == oid:
                    i = j
                    break
            if i < 0:
                continue
            xo[i, XO_AHEAD] = ahead_of(S, oid)
            ok = x_fill(xo, i, base + (O.F[k, 8] - 1) * tick, O.F[k, 9], who, t, sc[SC_SEQ], sc, cfg,
                        fills, rsp) and ok
    return ok


@njit(cache=True, nogil=True, _nrt=False)
def im_market(k, side, px, j, q, arrival, end, t, cfg, sc, S, O, I, books, nor, xo, fills, rsp, V):
    """Replay one market event into the simulated book (impact rules 1-5 and 7); returns IM_*.
    im_market and im_request are compiled on their own without reference counting (they
    allocate nothing): inlined into the reference-counted driver, every call increfed and
    decrefed each array of S, O and I (dozens of atomic operations per replayed message).
    V: int64[2, L], the data's own ladder (as no-impact mode keeps it; its best levels in
    sc[SC_DBB], sc[SC_DBA]), for rule 7."""
    L = V.shape[1]
    seq = sc[SC_SEQ]
    ok = True
    sd = np.int64(1) if side < 0 else np.int64(0)
    if k == MK_ADD or k == MK_SEED:
        lad_add(V, sc, SC_DBB, sd, j, q)
    elif k == MK_CANCEL or k == MK_EXEC:
        lad_sub(V, sc, SC_DBB, sd, j, q)
    if k == MK_ADD or k == MK_SEED:
        oid = MKT_ID0 + seq
        if k == MK_SEED:
            oid = SEED_ID0 + 2 * j + sd
            s = _slot(S, oid)
            if s >= 0:      # more seed quantity: the level's seed order grows (to the back)
                lq = S.o_qty[S.bk[0, F_POFF] + s]
                _row(I, S, O, books, nor, seq, t, oid, MKT_ACCT, side, j + 1, lq + q, E.ACT_REPLACE, E.OT_LIMIT,
                     E.TIF_GTC, E.STP_CANCEL_NEWEST)
            else:
                if pool_full(S):
                    return IM_POOL
                _row(I, S, O, books, nor, seq, t, oid, MKT_ACCT, side, j + 1, q, E.ACT_NEW, E.OT_LIMIT, E.TIF_GTC,
                     E.STP_CANCEL_NEWEST)
        else:
            if pool_full(S):
                return IM_POOL
            _row(I, S, O, books, nor, seq, t, oid, MKT_ACCT, side, j + 1, q, E.ACT_NEW, E.OT_LIMIT, E.TIF_GTC,
                 E.STP_CANCEL_NEWEST)
        if sc[SC_NXO] > 0:
            ok = im_fills(S, O, xo, t, cfg, sc, fills, rsp)
    elif k == MK_CANCEL:
        if arrival >= 0:
            reduce_order(I, S, O, books, nor, seq, t, MKT_ID0 + arrival, q, end != 0)
        else:
            reduce_level(I, S, O, books, nor, seq, t, side, j, q)
    else:   # MK_EXEC / MK_TRADE: the aggressor first, then (EXEC) the order it executed
        taken = np.int64(0)
        lim = j
        if k == MK_TRADE:
            lim = trade_limit(side, px, cfg[CF_BASE], cfg[CF_TICK], L)
        reach = (side > 0 and sc[SC_MAXBUY] >= 0 and sc[SC_MAXBUY] >= px) or (side < 0 and sc[SC_MINSELL] <= px)
        if reach and lim >= 0:
            _row(I, S, O, books, nor, seq, t, AGG_ID, MKT_ACCT, -side, lim + 1, q, E.ACT_NEW, E.OT_LIMIT, E.TIF_IOC,
                 E.STP_CANCEL_NEWEST)
            for f in range(O.cur[0, 0]):
                taken += O.F[f, 9]
            ok = im_fills(S, O, xo, t, cfg, sc, fills, rsp)
        if k == MK_EXEC:
            if arrival >= 0:
                reduce_order(I, S, O, books, nor, seq, t, MKT_ID0 + arrival, q - taken, end != 0)
            else:
                reduce_level(I, S, O, books, nor, seq, t, side, j, q - taken)
    if k == MK_CANCEL or k == MK_EXEC:
        cap_level(I, S, O, books, nor, seq, t, side, j, V[sd, j])
    compact(xo, sc)
    sync_best(S, sc, SC_XBB)
    return IM_OK if ok else IM_RING


@njit(cache=True, nogil=True, _nrt=False)
def im_request(req, h, t, cfg, sc, S, O, I, books, nor, xo, fills, evs, rsp, L):
    """A strategy request arrives at the simulated book (impact rule 6); returns IM_*. IM_POOL
    and IM_FLUSH leave everything as it was (call again for the same request)."""
    action = req[h, RQ_ACTION]
    oid = req[h, RQ_ID]
    side = req[h, RQ_SIDE]
    px = req[h, RQ_PX]
    qty = req[h, RQ_QTY]
    otype = req[h, RQ_TYPE]
    tif = req[h, RQ_TIF]
    seq = sc[SC_SEQ]
    if action == A_CANCEL:
        for i in range(sc[SC_NXO]):
            if xo[i, XO_ID] == oid and oid != 0:
                lv = xo[i, XO_LEAVES]
                ahead = ahead_of(S, oid)
                _row(I, S, O, books, nor, seq, t, oid, STRAT_ACCT, xo[i, XO_SIDE], xo[i, XO_IDX] + 1, lv,
                     E.ACT_CANCEL, E.OT_LIMIT, E.TIF_GTC, E.STP_NONE)
                log_ev(evs, sc, t, oid, EV_CANCELLED, xo[i, XO_SIDE], xo[i, XO_PX], 0, lv, ahead, RJ_NONE, 0, 0)
                ok = push_rsp(rsp, sc, cfg, t, EV_CANCELLED, oid, xo[i, XO_PX], 0, lv, 0, RJ_NONE, 0, xo[i, XO_SIDE], 0)
                xo[i, XO_ID] = 0
                compact(xo, sc)
                sync_best(S, sc, SC_XBB)
                return IM_OK if ok else IM_RING
        return IM_OK if reject_unknown(t, oid, cfg, sc, evs, rsp) else IM_RING
    base = cfg[CF_BASE]
    tick = cfg[CF_TICK]
    row = sc[SC_NXO]
    reason = new_reason(qty, otype, px, cfg, L, row, xo.shape[0])
    s = 0 if side > 0 else 1
    best_opp = sc[SC_XBB + 1 - s]
    if reason == RJ_NONE and otype == T_MARKET and best_opp < 0:
        reason = RJ_NO_LIQUIDITY
    if reason == RJ_NONE and best_opp >= 0 and otype != T_MARKET and req[h, RQ_POST] != 0:
        opp_px = base + best_opp * tick
        if (side > 0 and px >= opp_px) or (side < 0 and px <= opp_px):
            reason = RJ_POST_ONLY
    if reason != RJ_NONE:
        log_ev(evs, sc, t, oid, EV_REJECTED, side, px, qty, 0, 0, reason, otype, tif)
        return IM_OK if push_rsp(rsp, sc, cfg, t, EV_REJECTED, oid, px, 0, 0, 0, reason, 0, side, 0) else IM_RING
    rests = otype != T_MARKET and tif != TIF_IOC
    if rests and pool_full(S):
        return IM_POOL
    nrest = S.bk[0, F_NREST]
    if sc[SC_NFILL] + min(qty, nrest) + 4 > fills.shape[0]:
        return IM_FLUSH
    idx = (px - base) // tick if otype != T_MARKET else np.int64(-1)
    xo[row, XO_ID] = oid
    xo[row, XO_SIDE] = side
    xo[row, XO_PX] = px
    xo[row, XO_IDX] = idx
    xo[row, XO_LEAVES] = qty
    xo[row, XO_QTY] = qty
    xo[row, XO_ENTRY] = seq
    xo[row, XO_TS] = t
    xo[row, XO_AHEAD] = 0
    sc[SC_NXO] += 1
    _row(I, S, O, books, nor, seq, t, oid, STRAT_ACCT, side, idx + 1 if otype != T_MARKET else 0, qty, E.ACT_NEW,
         E.OT_MARKET if otype == T_MARKET else E.OT_LIMIT, E.TIF_GTC if rests else E.TIF_IOC, E.STP_CANCEL_NEWEST)
    ahead = ahead_of(S, oid)
    xo[row, XO_AHEAD] = ahead
    log_ev(evs, sc, t, oid, EV_ACCEPTED, side, px, qty, qty, ahead, RJ_NONE, otype, tif)
    ok = push_rsp(rsp, sc, cfg, t, EV_ACCEPTED, oid, px, 0, qty, ahead, RJ_NONE, 0, side, 0)
    ok = im_fills(S, O, xo, t, cfg, sc, fills, rsp) and ok
    if xo[row, XO_LEAVES] > 0 and _slot(S, oid) < 0:
        lv = xo[row, XO_LEAVES]
        log_ev(evs, sc, t, oid, EV_EXPIRED, side, px, 0, lv, 0, RJ_NONE, otype, tif)
        ok = push_rsp(rsp, sc, cfg, t, EV_EXPIRED, oid, px, 0, lv, 0, RJ_NONE, 0, side, 0) and ok
        xo[row, XO_ID] = 0
    compact(xo, sc)
    sync_best(S, sc, SC_XBB)
    return IM_OK if ok else IM_RING


@register_jitable
def view_levels(md, lad, sc, cfg):
    """Best and top CF_DEPTH levels of the strategy's book copy into md."""
    base = cfg[CF_BASE]
    tick = cfg[CF_TICK]
    L = lad.shape[1]
    depth = cfg[CF_DEPTH]
    if depth <= 1:      # the best levels are tracked: no scan
        b = sc[SC_LBB]
        a = sc[SC_LBA]
        md[MD_BID_PX] = base + b * tick if b >= 0 else NO_PRICE
        md[MD_BID_QTY] = lad[0, b] if b >= 0 else 0
        md[MD_ASK_PX] = base + a * tick if a >= 0 else NO_PRICE
        md[MD_ASK_QTY] = lad[1, a] if a >= 0 else 0
        md[MD_LEVELS] = md[MD_BID_PX]
        md[MD_LEVELS + 1] = md[MD_BID_QTY]
        md[MD_LEVELS + 2] = md[MD_ASK_PX]
        md[MD_LEVELS + 3] = md[MD_ASK_QTY]
        return
    j = sc[SC_LBB]
    for k in range(depth):
        while j >= 0 and lad[0, j] <= 0:
            j -= 1
        if j >= 0:
            md[MD_LEVELS + 4 * k] = base + j * tick
            md[MD_LEVELS + 4 * k + 1] = lad[0, j]
            j -= 1
        else:
            md[MD_LEVELS + 4 * k] = NO_PRICE
            md[MD_LEVELS + 4 * k + 1] = 0
    j = sc[SC_LBA]
    if j < 0:
        j = L
    for k in range(depth):
        while j < L and lad[1, j] <= 0:
            j += 1
        if j < L:
            md[MD_LEVELS + 4 * k + 2] = base + j * tick
            md[MD_LEVELS + 4 * k + 3] = lad[1, j]
            j += 1
        else:
            md[MD_LEVELS + 4 * k + 2] = NO_PRICE
            md[MD_LEVELS + 4 * k + 3] = 0
    md[MD_BID_PX] = md[MD_LEVELS]
    md[MD_BID_QTY] = md[MD_LEVELS + 1]
    md[MD_ASK_PX] = md[MD_LEVELS + 2]
    md[MD_ASK_QTY] = md[MD_LEVELS + 3]


@register_jitable
def drain(t, md, orders, act, cfg, sc, req, evs, rsp):
    """Send the strategy's actions (local time t); returns False if a ring overflowed or the
    actions taken at instant t exceed cfg[CF_MAX_INSTANT] (then sc[SC_RUNAWAY] = 1)."""
    n = act[0, 0]
    act[0, 0] = 0
    if n > 0 and cfg[CF_MAX_INSTANT] > 0:
        if t == sc[SC_INST_T]:
            sc[SC_INST_N] += n
        else:
            sc[SC_INST_T] = t
            sc[SC_INST_N] = n
        if sc[SC_INST_N] > cfg[CF_MAX_INSTANT]:
            sc[SC_RUNAWAY] = 1
            return False
    R = req.shape[0]
    ok = True
    for a in range(1, n + 1):
        kind = act[a, AF_ACTION]
        oid = act[a, AF_ID]
        row = -1
        if kind == A_NEW:
            for i in range(orders.shape[0]):
                if orders[i, OF_ID] == 0:
                    row = i
                    break
            if row < 0:
                log_ev(evs, sc, t, oid, EV_REJECTED, act[a, AF_SIDE], act[a, AF_PX], act[a, AF_QTY], 0, 0,
                       RJ_TOO_MANY, act[a, AF_TYPE], act[a, AF_TIF])
                if sc[SC_RS_N] >= rsp.shape[0]:
                    return False
                # an immediate local reject, through the response channel at time t
                rr = (sc[SC_RS_HEAD] + sc[SC_RS_N]) % rsp.shape[0]
                arr = t if t > sc[SC_RS_PREV] else sc[SC_RS_PREV]
                sc[SC_RS_PREV] = arr
                rsp[rr, RS_T] = arr
                rsp[rr, RS_KIND] = EV_REJECTED
                rsp[rr, RS_ID] = oid
                rsp[rr, RS_PX] = act[a, AF_PX]
                rsp[rr, RS_QTY] = 0
                rsp[rr, RS_LEAVES] = 0
                rsp[rr, RS_AHEAD] = 0
                rsp[rr, RS_REASON] = RJ_TOO_MANY
                rsp[rr, RS_MAKER] = 0
                rsp[rr, RS_SIDE] = act[a, AF_SIDE]
                rsp[rr, RS_XTS] = t
                rsp[rr, RS_FEE] = 0
                sc[SC_RS_N] += 1
                continue
            orders[row, OF_ID] = oid
            orders[row, OF_SIDE] = act[a, AF_SIDE]
            orders[row, OF_PX] = act[a, AF_PX]
            orders[row, OF_QTY] = act[a, AF_QTY]
            orders[row, OF_LEAVES] = act[a, AF_QTY]
            orders[row, OF_AHEAD] = 0
            orders[row, OF_STATUS] = OS_PENDING
            orders[row, OF_TS] = t
            orders[row, OF_TAG] = act[a, AF_TAG]
            md[MD_OPEN] += 1
            log_ev(evs, sc, t, oid, EV_SUBMITTED, act[a, AF_SIDE], act[a, AF_PX], act[a, AF_QTY],
                   act[a, AF_QTY], 0, RJ_NONE, act[a, AF_TYPE], act[a, AF_TIF])
        elif kind == A_CANCEL:
            for i in range(orders.shape[0]):
                if orders[i, OF_ID] == oid and oid != 0:
                    row = i
                    break
            if row < 0 or orders[row, OF_STATUS] == OS_CANCELLING:
                continue
            orders[row, OF_STATUS] = OS_CANCELLING
            log_ev(evs, sc, t, oid, EV_CANCEL_SENT, orders[row, OF_SIDE], orders[row, OF_PX], 0,
                   orders[row, OF_LEAVES], 0, RJ_NONE, 0, 0)
        else:
            continue
        if sc[SC_RQ_N] >= R:
            return False
        arr = t + latency(sc, cfg, SC_RNG_E, CF_ENTRY_LO)
        if arr < sc[SC_RQ_PREV]:
            arr = sc[SC_RQ_PREV]
        sc[SC_RQ_PREV] = arr
        r = (sc[SC_RQ_HEAD] + sc[SC_RQ_N]) % R
        req[r, RQ_T] = arr
        req[r, RQ_ACTION] = kind
        req[r, RQ_ID] = oid
        req[r, RQ_SIDE] = act[a, AF_SIDE]
        req[r, RQ_PX] = act[a, AF_PX]
        req[r, RQ_QTY] = act[a, AF_QTY]
        req[r, RQ_TYPE] = act[a, AF_TYPE]
        req[r, RQ_TIF] = act[a, AF_TIF]
        req[r, RQ_POST] = act[a, AF_POST]
        sc[SC_RQ_N] += 1
    return ok


@register_jitable
def local_response(rsp, h, md, orders):
    """Apply a response to the strategy's view; returns the callback to run (0 order, 1 fill)."""
    kind = rsp[h, RS_KIND]
    oid = rsp[h, RS_ID]
    md[MD_EV_TS] = rsp[h, RS_XTS]
    md[MD_EV_KIND] = kind
    md[MD_EV_ID] = oid
    md[MD_EV_SIDE] = rsp[h, RS_SIDE]
    md[MD_EV_PX] = rsp[h, RS_PX]
    md[MD_EV_QTY] = rsp[h, RS_QTY]
    md[MD_EV_REASON] = rsp[h, RS_REASON]
    md[MD_EV_LEAVES] = rsp[h, RS_LEAVES]
    md[MD_EV_MAKER] = rsp[h, RS_MAKER]
    row = -1
    for i in range(orders.shape[0]):
        if orders[i, OF_ID] == oid and oid != 0:
            row = i
            break
    if kind == EV_FILL:
        q = rsp[h, RS_QTY]
        side = rsp[h, RS_SIDE]
        md[MD_POSITION] += side * q
        md[MD_CASH] -= side * rsp[h, RS_PX] * q + rsp[h, RS_FEE]
        md[MD_FEES] += rsp[h, RS_FEE]
        if row >= 0:
            orders[row, OF_LEAVES] = rsp[h, RS_LEAVES]
            orders[row, OF_AHEAD] = rsp[h, RS_AHEAD]
            if rsp[h, RS_LEAVES] <= 0:
                orders[row, OF_ID] = 0
                md[MD_OPEN] -= 1
        return 1
    if row >= 0:
        if kind == EV_ACCEPTED:
            if orders[row, OF_STATUS] == OS_PENDING:
                orders[row, OF_STATUS] = OS_OPEN
            orders[row, OF_AHEAD] = rsp[h, RS_AHEAD]
        elif kind == EV_REJECTED or kind == EV_CANCELLED or kind == EV_EXPIRED:
            orders[row, OF_ID] = 0
            md[MD_OPEN] -= 1
    return 0


@njit(cache=True, nogil=True, error_model="numpy")
def run_cpu(ts, kind, arrival, ends, side, px, qty, lvl, cfg, sc, xlad, llad, xo, orders, md,
            params, state, act, req, rsp, fills, evs, eq, S, O, I, books, nor):
    """Run the backtest over one chunk of market events; returns a status ST_*.

    ts, kind, side, px, qty : int64[n], the chunk's market events (MK_* kinds; side +1
        bid / -1 ask, for executions the resting side; px in price units on the tick grid
        except for MK_TRADE).
    arrival : int64[n], per cancel or execution the stream index of the ADD of the order it
        reduces, else -1 (``arrivals_cpu``: the market order ids resolved once per data set,
        shared by every run and parameter set over it).
    ends : int64[n], 1 where the data says that order is gone after the event (impact mode
        only; ignored otherwise).
    lvl : int64[n], the ladder index of px, (px - base) // tick (ignored for MK_TRADE).
    cfg : int64[NCF + latency table values] (``latency``); sc : int64[NSC] (state carried across calls).
    xlad, llad : int64[2, L], the exchange's and the strategy's displayed quantity per level.
    xo, orders : exchange-side and strategy-side own orders; md, params, state, act: see api.
    req, rsp : request and response rings; fills, evs, eq : outputs, rows counted in sc.
    S, O, I, books, nor : impact mode (a driver built with IMPACT = True): the simulated book (the engine's
        State of one book), the step's one-row outputs and inputs, int64[1] zeros and an empty
        int64[0, 3] (impact.SimBook.args()); untouched in no-impact mode (impact.no_book()).
        Impact mode returns ST_POOL when the book's pool is full (grow it, call again).
    """
    n = ts.shape[0]
    final = cfg[CF_FINAL] != 0
    sample_ns = cfg[CF_SAMPLE_NS]
    timer_ns = cfg[CF_TIMER_NS]
    RQ = req.shape[0]
    RS = rsp.shape[0]
    FCAP = fills.shape[0] - xlad.shape[1] - 2 * xo.shape[0] - 4   # a taker walk fills once per level
    ECAP = evs.shape[0] - 2 * act.shape[0] - 2 * xo.shape[0] - 8
    QCAP = eq.shape[0] - 2
    if sc[SC_STARTED] == 0:
        if n == 0:
            return ST_DONE if final else ST_CHUNK
        sc[SC_STARTED] = 1
        sc[SC_SAMPLE] = ts[0] + sample_ns
        sc[SC_TIMER] = ts[0] + timer_ns if timer_ns > 0 else INF
    while True:
        if sc[SC_NFILL] > FCAP or sc[SC_NEV] > ECAP or sc[SC_NEQ] > QCAP:
            return ST_FLUSH
        ix = sc[SC_IX]
        if ix >= n and not final:
            return ST_CHUNK
        tx = ts[ix] if ix < n else INF
        tr = req[sc[SC_RQ_HEAD], RQ_T] if sc[SC_RQ_N] > 0 else INF
        tf = INF
        fi = sc[SC_IF]
        if fi < ix:
            if sc[SC_FEED_OK] == 0:
                arr = ts[fi] + latency(sc, cfg, SC_RNG_F, CF_FEED_LO)
                if arr < sc[SC_FEED_PREV]:
                    arr = sc[SC_FEED_PREV]
                sc[SC_FEED_T] = arr
                sc[SC_FEED_OK] = 1
            tf = sc[SC_FEED_T]
        trs = rsp[sc[SC_RS_HEAD], RS_T] if sc[SC_RS_N] > 0 else INF
        tt = sc[SC_TIMER]
        t = min(tx, tr, tf, trs, tt)
        if ix >= n:
            # final chunk, data exhausted: only what is due by the last market event
            if t > sc[SC_END]:
                while sc[SC_SAMPLE] <= sc[SC_END] and sc[SC_NEQ] <= QCAP:
                    _sample(eq, sc, cfg, sc[SC_SAMPLE])
                    sc[SC_SAMPLE] += sample_ns
                if sc[SC_SAMPLE] <= sc[SC_END]:
                    return ST_FLUSH
                _sample(eq, sc, cfg, sc[SC_END])
                sc[SC_SAMPLE] = INF
                return ST_DONE
        if t == tx:
            k = kind[ix]
            p = px[ix]
            j = lvl[ix]
            if k != MK_TRADE and (j < 0 or j >= xlad.shape[1]):
                sc[SC_ERR] = ix
                return ST_RANGE
            while sc[SC_SAMPLE] <= tx:
                if sc[SC_NEQ] > QCAP:
                    return ST_FLUSH
                _sample(eq, sc, cfg, sc[SC_SAMPLE])
                sc[SC_SAMPLE] += sample_ns
            if IMPACT:
                ist = im_market(k, side[ix], p, j, qty[ix], arrival[ix], ends[ix], tx, cfg, sc, S, O, I, books, nor,
                                xo, fills, rsp, xlad)
                if ist == IM_POOL:
                    return ST_POOL
                if ist != IM_OK:
                    return ST_RING
            elif cfg[CF_QUEUE] != Q_L3:
                if not x_level_event(k, side[ix], p, j, qty[ix], tx, cfg, sc, xlad, xo, fills, rsp):
                    return ST_RING
            elif not x_market_event(k, side[ix], p, j, qty[ix], arrival[ix], tx, cfg, sc, xlad, xo, fills, rsp):
                return ST_RING
            sc[SC_SEQ] += 1
            sc[SC_END] = tx
            sc[SC_IX] = ix + 1
        elif t == tr:
            h = sc[SC_RQ_HEAD]
            if IMPACT:
                ist = im_request(req, h, tr, cfg, sc, S, O, I, books, nor, xo, fills, evs, rsp, xlad.shape[1])
                if ist == IM_POOL:
                    return ST_POOL
                if ist == IM_FLUSH:
                    return ST_FLUSH
                sc[SC_RQ_HEAD] = (h + 1) % RQ
                sc[SC_RQ_N] -= 1
                if ist != IM_OK:
                    return ST_RING
            else:
                sc[SC_RQ_HEAD] = (h + 1) % RQ
                sc[SC_RQ_N] -= 1
                if not x_request(req, h, tr, cfg, sc, xlad, xo, fills, evs, rsp):
                    return ST_RING
        elif t == tf:
            k = kind[fi]
            s = 0 if side[fi] > 0 else 1
            if k == MK_ADD or k == MK_SEED:
                lad_add(llad, sc, SC_LBB, s, lvl[fi], qty[fi])
            elif k == MK_CANCEL or k == MK_EXEC:
                lad_sub(llad, sc, SC_LBB, s, lvl[fi], qty[fi])
            elif k == MK_LEVEL:
                lq = llad[s, lvl[fi]]
                if qty[fi] > lq:
                    lad_add(llad, sc, SC_LBB, s, lvl[fi], qty[fi] - lq)
                elif qty[fi] < lq:
                    lad_sub(llad, sc, SC_LBB, s, lvl[fi], lq - qty[fi])
            sc[SC_FEED_PREV] = tf
            sc[SC_FEED_OK] = 0
            sc[SC_IF] = fi + 1
            md[MD_NOW] = tf
            md[MD_EV_TS] = ts[fi]
            md[MD_EV_KIND] = k
            md[MD_EV_SIDE] = side[fi]
            md[MD_EV_PX] = px[fi]
            md[MD_EV_QTY] = qty[fi]
            md[MD_EV_ID] = 0
            md[MD_EV_REASON] = 0
            md[MD_EV_LEAVES] = 0
            md[MD_EV_MAKER] = 0
            view_levels(md, llad, sc, cfg)
            if k == MK_EXEC or k == MK_TRADE:
                md[MD_LAST_PX] = px[fi]
                md[MD_LAST_QTY] = qty[fi]
                md[MD_LAST_SIDE] = -side[fi]
                md[MD_LAST_TS] = ts[fi]
                on_trade(md, orders, params, state, act)
                if not drain(tf, md, orders, act, cfg, sc, req, evs, rsp):
                    return ST_RUNAWAY if sc[SC_RUNAWAY] else ST_RING
            if k != MK_TRADE:
                on_book(md, orders, params, state, act)
                if not drain(tf, md, orders, act, cfg, sc, req, evs, rsp):
                    return ST_RUNAWAY if sc[SC_RUNAWAY] else ST_RING
        elif t == trs:
            h = sc[SC_RS_HEAD]
            sc[SC_RS_HEAD] = (h + 1) % RS
            sc[SC_RS_N] -= 1
            md[MD_NOW] = trs
            if local_response(rsp, h, md, orders) == 1:
                on_fill(md, orders, params, state, act)
            else:
                on_order(md, orders, params, state, act)
            if not drain(trs, md, orders, act, cfg, sc, req, evs, rsp):
                return ST_RUNAWAY if sc[SC_RUNAWAY] else ST_RING
        else:
            md[MD_NOW] = tt
            md[MD_EV_TS] = tt
            md[MD_EV_KIND] = 0
            sc[SC_TIMER] = tt + timer_ns
            on_timer(md, orders, params, state, act)
            if not drain(tt, md, orders, act, cfg, sc, req, evs, rsp):
                return ST_RUNAWAY if sc[SC_RUNAWAY] else ST_RING


@register_jitable
def _sample(eq, sc, cfg, t):
    r = sc[SC_NEQ]
    eq[r, EQ_TS] = t
    eq[r, EQ_POS] = sc[SC_POS]
    eq[r, EQ_CASH] = sc[SC_CASH]
    eq[r, EQ_BID] = cfg[CF_BASE] + sc[SC_XBB] * cfg[CF_TICK] if sc[SC_XBB] >= 0 else NO_PRICE
    eq[r, EQ_ASK] = cfg[CF_BASE] + sc[SC_XBA] * cfg[CF_TICK] if sc[SC_XBA] >= 0 else NO_PRICE
    eq[r, EQ_FEES] = sc[SC_FEES]
    sc[SC_NEQ] = r + 1


# --- the tick sweep: many parameter sets over one decoded stream -------------------------------
@register_jitable
def run_set(ts, kind, arrival, side, px, qty, lvl, cfg0, sc0, md0, params, state_len, L, ring, fcap, ecap, qcap,
            acc_i, acc_f, info, S, O, I, books, nor):
    """One parameter set over the whole stream (one final chunk), its own state allocated here;
    its outputs are folded into ``acc_i``/``acc_f`` (hpte.kernels.backtest.metrics) at every
    flush and not kept. Returns the final status (ST_DONE, or ST_RING / ST_RANGE / ST_RUNAWAY);
    info (int64[4]) gets the status, sc[SC_INST_T], the exchange-side position and cash."""
    cfg = cfg0.copy()
    cfg[CF_FINAL] = 1
    sc = sc0.copy()
    md = md0.copy()
    xlad = np.zeros((2, L), np.int64)
    llad = np.zeros((2, L), np.int64)
    xo = np.zeros((MAX_ORDERS, NXO), np.int64)
    orders = np.zeros((MAX_ORDERS, NOF), np.int64)
    state = np.zeros(state_len, np.float64)
    act = np.zeros((MAX_ACTIONS + 1, NAF), np.int64)
    req = np.zeros((ring, NRQ), np.int64)
    rsp = np.zeros((ring, NRS), np.int64)
    fills = np.zeros((fcap, NFL), np.int64)
    evs = np.zeros((ecap, NEL), np.int64)
    eq = np.zeros((qcap, NEQ), np.int64)
    while True:
        st = run_cpu(ts, kind, arrival, arrival, side, px, qty, lvl, cfg, sc, xlad, llad, xo, orders, md,
                     params, state, act, req, rsp, fills, evs, eq, S, O, I, books, nor)
        fold(acc_i, acc_f, fills, sc[SC_NFILL], evs, sc[SC_NEV], eq, sc[SC_NEQ])
        sc[SC_NFILL] = 0
        sc[SC_NEV] = 0
        sc[SC_NEQ] = 0
        if st != ST_FLUSH:
            break
    info[0] = st
    info[1] = sc[SC_INST_T]
    info[2] = sc[SC_POS]
    info[3] = sc[SC_CASH]
    return st


@njit(cache=True, nogil=True, parallel=True, error_model="numpy")
def sweep_cpu(ts, kind, arrival, side, px, qty, lvl, cfg, sc0, md0, grid, state_len, L, ring, fcap, ecap, qcap,
              acc_i, acc_f, info, S, O, I, books, nor):
    """Every parameter set of ``grid`` (float64[K, P]) over one decoded market-event stream:
    ``prange`` over the sets, each with its own book copies, orders, rings and buffers (no
    shared writes), so a row does not depend on the thread count. The stream columns (int64[n];
    ``arrival`` resolved once for all sets) and cfg / sc0 / md0 (the run's start values,
    ``hpte.engine.backtest.run.prepare_run``) are shared read-only. Row k of acc_i
    (int64[K, NMI]), acc_f (float64[K, NMF]) and info (int64[K, 4]) is written by set k only:
    the same fold the single backtest makes."""
    for k in prange(grid.shape[0]):
        run_set(ts, kind, arrival, side, px, qty, lvl, cfg, sc0, md0, grid[k], state_len, L, ring, fcap, ecap, qcap,
                acc_i[k], acc_f[k], info[k], S, O, I, books, nor)


# --- the market order ids, resolved once per data set ------------------------------------------
@njit(cache=True, nogil=True)
def arrivals_cpu(kind, oid, qty, seq0, keys, vals, bits, st, out, ends):
    """For every cancel or execution, the stream index of the ADD of the order it reduces.

    kind, oid, qty : int64[n], market events seq0.. seq0 + n - 1 of the stream; keys, vals, bits:
    the live market orders (int64[H], int64[H, 2] = index of the ADD, open qty; H = 2**bits),
    carried across calls; st : int64[2] = (next row to do, live keys), updated; out : int64[n],
    written: the ADD's index, or -1 (no id, or an order the stream never added: ahead of every
    strategy order); ends : int64[n], written: 1 where the order's open quantity (as the data
    says) reaches 0 at this row, else 0 (the impact mode's reconciliation). Returns False when it stopped at an ADD because the table would be more than
    half full (grow it with ``rehash_cpu`` and call again), True when every row is done."""
    H = keys.shape[0]
    hn = st[1]
    for i in range(st[0], kind.shape[0]):
        k = kind[i]
        a = np.int64(-1)
        e = np.int64(0)
        if k == MK_ADD:
            if 2 * (hn + 1) > H:
                st[0] = i
                st[1] = hn
                return False
            hn += h_insert(keys, vals, oid[i], seq0 + i, qty[i], bits)
        elif (k == MK_CANCEL or k == MK_EXEC) and oid[i] >= 0:
            p = h_find(keys, oid[i], bits)
            if p >= 0:
                a = vals[p, 0]
                vals[p, 1] -= qty[i]
                if vals[p, 1] <= 0:
                    h_delete(keys, vals, p, bits)
                    hn -= 1
                    e = 1
        out[i] = a
        ends[i] = e
    st[0] = kind.shape[0]
    st[1] = hn
    return True
