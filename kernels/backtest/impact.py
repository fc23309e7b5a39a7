"""Impact mode of the tick backtest: the strategy's orders and the replayed market orders share
one real L3 book, matched by the engine's own per-row step (kernels/book.py through
kernels/match_cpu.run_chunk_cpu, the one compiled copy of the step on the CPU: no second
matcher). ``hpte.kernels.backtest.loop.run_cpu`` calls these functions instead of its no-impact
exchange when ``cfg[CF_IMPACT]`` is 1; latency, channels, the strategy's view, accounting and
outputs are the loop's.

The simulated book (one book of the engine's State, ``S``) holds the replayed orders (account
MKT_ACCT) and the strategy's (account STRAT_ACCT). Its price of ladder index j is j + 1 (book base
1), so the step's ticks are the loop's ladder indices. Replay rules (the *reconciliation*; every
rule is in tests/reference/backtest_ref.py again, written from this list):

1. ADD (market order X, side s, price p, q): a GTC limit order of q at p enters the book through
   the step. Where it crosses the strategy's resting orders it trades with them first (the
   strategy is the maker, at its own price, in price-time priority); the rest rests at p behind
   every order already there. A replayed order that would cross another replayed order (only
   in inconsistent data) is dropped (self-trade prevention, cancel newest, between replayed
   orders).
2. SEED (quantity q learned from a snapshot at side s, price p): one replayed "seed" order per
   level holds it. A first seed enters like an ADD; more seed quantity at a level whose seed
   order is still there makes that order larger (it moves to the back of the level's queue).
3. CANCEL (q of X): X, if the simulated book still has it, is reduced by min(q, what is left of
   it), keeping its queue position; it leaves the book when nothing is left or when the data
   says X is now gone (its own remaining quantity reaches 0). A cancel of an X the strategy
   already took wholly is dropped. Quantity of an order the stream never introduced (no id, or
   an id it never added: orders from before the data starts, levels learned from a snapshot)
   comes off the level's seed order first, then off the level's other replayed orders, the
   most recent first.
4. EXEC (q against X resting on side s at price p): in the data an aggressor of the other side
   traded q at p. That aggressor enters the book first: an IOC order of q, limit p, that trades
   with the strategy's resting orders the matcher reaches before any replayed order (better
   prices than p, then the orders at p ahead of the level's first replayed order, in time
   priority) and stops at the first replayed order. What is left of q then reduces X as in
   rule 3 (at most to zero, whatever is beyond is dropped); X also leaves when the data says it
   is gone. So an execution of an order the strategy already took partly or wholly is reduced
   to what is left or dropped, and the strategy's resting orders are matched by replayed
   aggressive flow in time priority.
5. TRADE (a hidden execution of q at price p, resting side s): the aggressor of rule 4 with a
   limit strictly better than p for the resting side (the first ladder price above p for
   s = buy, below it for a sell): only strategy orders priced through p can trade; the hidden
   volume itself is not in the book.
6. The strategy's NEW orders are validated as in no-impact mode (qty, price, ladder range,
   MAX_ORDERS, a market order needs an opposite side, a post-only order that would cross is
   rejected) and then enter the book through the step: a limit order trades with the book's
   orders (replayed or not is all one) in price-time priority and its rest rests (GTC) or
   expires (IOC); a market order takes what it can and the rest expires. The strategy never
   trades with itself: where its order would meet its own resting order it stops and the rest
   expires (self-trade prevention, cancel newest). A CANCEL takes its order out of the book.
7. After a CANCEL or EXEC at (s, p) the replayed orders there never hold more than the data's
   own book holds at (s, p) after it: any excess comes off them, the most recent first. (The
   data does not always say whose quantity left, rule 3's unknown reductions guess, and an
   aggressor that met the strategy first leaves its target larger than the data's: this keeps
   the replayed liquidity within the data's.) Without strategy orders, the simulated book's
   levels therefore equal the data's after every event (tested on the AMZN day).

Fills of the strategy are at the step's fill prices; queue position (``ahead``) in responses is
the quantity ahead of the order in its level's FIFO, counted when the response is made.
The strategy's own book view (its feed) is the replayed data, as in no-impact mode: its own
orders and the liquidity it took are not shown there (its orders are in ``orders``).
"""
from __future__ import annotations

import numpy as np
from numba import njit
from numba.extending import register_jitable

from hpte.kernels import enums as E
from hpte.kernels.backtest.api import (
    A_CANCEL, EV_ACCEPTED, EV_CANCELLED, EV_EXPIRED, EV_REJECTED, MK_ADD, MK_CANCEL, MK_EXEC, MK_SEED,
    MK_TRADE, RJ_NO_LIQUIDITY, RJ_NONE, RJ_POST_ONLY, RJ_PRICE, RJ_QTY, RJ_RANGE, RJ_TOO_MANY, RJ_UNKNOWN,
    T_MARKET, TIF_IOC,
)
from hpte.kernels.book import (
    F_ASK, F_BASE, F_BID, F_FREE, F_HW, F_LOFF, F_PCAP, F_POFF, F_TMASK, F_TOFF, ST_NEED_POOL, ST_OK, id_find,
)
from hpte.kernels.match_cpu import run_chunk_cpu

STRAT_ACCT = 1
MKT_ACCT = 2
MKT_ID0 = np.int64(1) << np.int64(62)      # the replayed ADD at stream index k: order id MKT_ID0 + k
SEED_ID0 = np.int64(1) << np.int64(61)     # seed order of ladder index j, side s: SEED_ID0 + 2 j + (s < 0)
AGG_ID = MKT_ID0 - np.int64(1)            # the aggressor of rules 4-5 (IOC: never rests)

IM_OK = 0
IM_POOL = 1     # the book's pool is full: grow it (BookStore.grow_pool) and call again
IM_RING = 2     # a response ring overflowed
IM_FLUSH = 3    # the fills buffer may not hold the request's fills: drain it and call again


# --- the book, through the step -----------------------------------------------------------------
@njit(cache=True, nogil=True, _nrt=False)
def _row(I, S, O, books, nor, seq, t, oid, acct, side, px, q, action, otype, tif, stp):
    """One input row (book 0, region 0) through run_chunk_cpu; outputs start at row 0 of O.
    Compiled on its own without reference counting (like run_chunk_cpu): as an inlined
    register_jitable function in the reference-counted impact driver, every call increfed and
    decrefed each of the ~60 arrays of I, S and O (about 60% of a replayed message's cost)."""
    I.ts[0] = t
    I.oid[0] = np.uint64(oid)
    I.side[0] = side
    I.px[0] = px
    I.qty[0] = q
    I.action[0] = action
    I.otype[0] = otype
    I.tif[0] = tif
    I.acct[0] = acct
    I.post[0] = 0
    I.force[0] = 0
    I.exp[0] = 0
    I.stop[0] = 0
    O.cur[0, 0] = 0
    O.cur[0, 1] = 0
    O.cur[0, 2] = 0
    st, _j = run_chunk_cpu(I, S, O, books, books, False, 0, 0, 1, nor, nor, False, seq, stp)
    return st


@register_jitable
def _slot(S, oid):
    bk = S.bk
    return id_find(S.tab, bk[0, F_TOFF], bk[0, F_TMASK], S.o_id, bk[0, F_POFF], np.uint64(oid))


@register_jitable
def ahead_of(S, oid):
    """Quantity ahead of order oid in its level's FIFO (0 when it does not rest)."""
    s = _slot(S, oid)
    if s < 0:
        return np.int64(0)
    bk = S.bk
    poff = bk[0, F_POFF]
    g = bk[0, F_LOFF] + (S.o_px[poff + s] - bk[0, F_BASE])
    a = np.int64(0)
    k = S.lv_head[g]
    while k >= 0 and k != s:
        a += S.o_qty[poff + k]
        k = S.o_next[poff + k]
    return a


@register_jitable
def pool_full(S):
    return S.bk[0, F_FREE] < 0 and S.bk[0, F_HW] >= S.bk[0, F_PCAP]


@register_jitable
def sync_best(S, sc, sc_bb):
    """The book's best levels (ladder indices, -1 none) into sc[sc_bb], sc[sc_bb + 1]."""
    sc[sc_bb] = S.bk[0, F_BID]
    sc[sc_bb + 1] = S.bk[0, F_ASK]


@register_jitable
def reduce_order(I, S, O, books, nor, seq, t, oid, q, gone):
    """Rule 3: order oid loses min(q, its leaves) keeping its place; it leaves the book when
    nothing is left or ``gone``. Returns the quantity taken off (0: not in the book)."""
    s = _slot(S, oid)
    if s < 0:
        return np.int64(0)
    poff = S.bk[0, F_POFF]
    lq = S.o_qty[poff + s]
    px = S.o_px[poff + s]
    side = E.SELL if (S.o_flags[poff + s] & 1) != 0 else E.BUY
    if gone or q >= lq:
        _row(I, S, O, books, nor, seq, t, oid, MKT_ACCT, side, px, lq, E.ACT_CANCEL, E.OT_LIMIT, E.TIF_GTC,
             E.STP_NONE)
        return lq
    if q <= 0:
        return np.int64(0)
    _row(I, S, O, books, nor, seq, t, oid, MKT_ACCT, side, px, lq - q, E.ACT_REPLACE, E.OT_LIMIT, E.TIF_GTC,
         E.STP_NONE)
    return q


@register_jitable
def trade_limit(side, px, base, tick, L):
    """Rule 5: the aggressor's limit (ladder index) for a hidden trade at price px on resting
    side ``side``: the first ladder price above px for a buy, below it for a sell; -1 when no
    ladder price qualifies."""
    d = px - base
    if side > 0:
        j = d // tick + 1
    else:
        j = -((-d) // tick) - 1
    if j < 0 or j >= L:
        return np.int64(-1)
    return j


# --- allocation (Python, between kernel calls) ---------------------------------------------------
NO_ROWS = np.zeros((0, 3), np.int64)


def _outputs(pcap: int):
    """Step outputs for one row on a book of pcap slots: room for a row that meets every
    resting order (the step's own worst case with self-trade prevention); deltas not written."""
    from hpte.engine.book_state import OFF_CAP, Outputs
    nf, ne = pcap + 64, 2 * pcap + 64
    return Outputs(F=np.zeros((nf, 10), np.int64), E=np.zeros((ne, 11), np.int64), D=np.zeros((0, 7), np.int64),
                   cur=np.zeros((1, 3), np.int64), cap=np.array([[nf, ne, OFF_CAP]], np.int64))


def _inputs():
    from hpte.engine.book_state import Inputs
    return Inputs(ts=np.zeros(1, np.int64), oid=np.zeros(1, np.uint64), side=np.zeros(1, np.int8),
                  px=np.zeros(1, np.int64), qty=np.zeros(1, np.int64), action=np.zeros(1, np.uint8),
                  otype=np.zeros(1, np.uint8), tif=np.zeros(1, np.uint8), acct=np.zeros(1, np.uint32),
                  post=np.zeros(1, np.uint8), force=np.zeros(1, np.uint8), exp=np.zeros(1, np.int64),
                  stop=np.zeros(1, np.int64))


class SimBook:
    """The impact mode's book: one book of the engine's BookStore whose ladder is the loop's
    (L levels, price = ladder index + 1), with the one-row input and output buffers the loop
    hands to the step. ``grow()`` doubles the pool when the loop returns ST_POOL."""

    def __init__(self, L: int, pool: int = 1024):
        from hpte.engine.book_state import BookStore
        from hpte.kernels import book as K
        nlev = -(-(int(L) + 1) // K.LEVEL_BLOCK) * K.LEVEL_BLOCK
        mult = 4096
        self.store = BookStore(max_levels=max(mult, -(-nlev // mult) * mult), init_pool=pool,
                               init_levels=K.LEVEL_BLOCK)
        bk = np.zeros((1, K.NF), np.int64)
        bk[0, K.F_BASE] = 1
        bk[0, K.F_NLEV] = nlev
        bk[0, K.F_PCAP] = pool
        bk[0, K.F_TMASK] = (1 << max(1, (2 * pool - 1).bit_length())) - 1
        bk[0, K.F_BID] = bk[0, K.F_ASK] = -1
        bk[0, K.F_FREE] = -1
        bk[0, K.F_PHEAD] = bk[0, K.F_PTAIL] = -1
        self.store._relayout(bk)
        self.I = _inputs()
        self.O = _outputs(pool)
        self.books = np.zeros(1, np.int64)

    @property
    def S(self):
        return self.store.S

    def args(self) -> tuple:
        """(S, O, I, books, no_rows): the loop's last arguments."""
        return self.S, self.O, self.I, self.books, NO_ROWS

    def grow(self) -> None:
        from hpte.kernels import book as K
        self.store.grow_pool(0)
        self.O = _outputs(int(self.S.bk[0, K.F_PCAP]))

    def resting(self) -> int:
        from hpte.kernels import book as K
        return int(self.S.bk[0, K.F_NREST])


_DUMMY = None


def no_book() -> tuple:
    """The loop's book arguments for a no-impact run (never touched there; one small book, so
    the same compiled loop serves both modes)."""
    global _DUMMY
    if _DUMMY is None:
        _DUMMY = SimBook(1, 16).args()
    return _DUMMY


@register_jitable
def reduce_back(I, S, O, books, nor, seq, t, side, j, q):
    """Take up to q off the replayed orders on ``side`` at ladder index j, the most recent first
    (each at most to zero; never the strategy's). Returns the quantity taken off."""
    bk = S.bk
    poff = bk[0, F_POFF]
    g = bk[0, F_LOFF] + j + 1 - bk[0, F_BASE]
    done = np.int64(0)
    k = S.lv_tail[g]
    while k >= 0 and done < q:
        prv = S.o_prev[poff + k]
        is_sell = (S.o_flags[poff + k] & 1) != 0
        if S.o_acct[poff + k] == MKT_ACCT and is_sell == (side < 0):
            done += reduce_order(I, S, O, books, nor, seq, t, np.int64(S.o_id[poff + k]), q - done, False)
        k = prv
    return done


@register_jitable
def reduce_level(I, S, O, books, nor, seq, t, side, j, q):
    """Rules 3-4 for quantity q of an order the stream never introduced (no id, or an id it
    never added) at ladder index j of ``side``: the level's seed order first, then the level's
    other replayed orders, the most recent first. Returns the quantity taken off."""
    sd = np.int64(1) if side < 0 else np.int64(0)
    done = reduce_order(I, S, O, books, nor, seq, t, SEED_ID0 + 2 * j + sd, q, False)
    if done < q:
        done += reduce_back(I, S, O, books, nor, seq, t, side, j, q - done)
    return done


@register_jitable
def cap_level(I, S, O, books, nor, seq, t, side, j, d):
    """Rule 7: the replayed orders on ``side`` at ladder index j hold at most d (the data's
    quantity there); any excess comes off them, the most recent first."""
    bk = S.bk
    poff = bk[0, F_POFF]
    g = bk[0, F_LOFF] + j + 1 - bk[0, F_BASE]
    if S.lv_qty[g] <= d:      # the whole level is within it (the common case): no walk
        return
    have = np.int64(0)
    k = S.lv_head[g]
    while k >= 0:
        is_sell = (S.o_flags[poff + k] & 1) != 0
        if S.o_acct[poff + k] == MKT_ACCT and is_sell == (side < 0):
            have += S.o_qty[poff + k]
        k = S.o_next[poff + k]
    if have > d:
        reduce_back(I, S, O, books, nor, seq, t, side, j, have - d)
