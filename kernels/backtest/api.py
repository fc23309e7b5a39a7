"""The strategy interface: what a strategy callback reads and the helpers it acts through.

A strategy is a Python file (or module) of plain functions in the numba-compilable subset.
Every callback has one signature::

    def on_book(md, orders, params, state, act): ...

and may be any of ``on_book`` (the strategy's view of the book changed; required),
``on_trade`` (a trade was seen), ``on_order`` (an own order was accepted, rejected, cancelled
or expired), ``on_fill`` (an own order filled) and ``on_timer`` (every ``timer_ns`` of
simulated time). Missing optional callbacks do nothing. The arguments are arrays only, so one
source compiles for the CPU (``njit``) and for CUDA device functions (the sweep issue):

md : int64[NMD]
    The strategy's view of the market and of itself, read with the ``MD_*`` indices below:
    the local time, the event that caused the call (``MD_EV_*``), the best bid and ask and the
    top ``BOOK_DEPTH`` levels of both sides (a strategy file sets ``BOOK_DEPTH``, 1 to
    ``DEPTH`` = 5, default 1: deeper levels cost a scan per event) as the strategy sees them
    (after feed latency), the last trade, and its
    position, cash and fees as reported to it (after response latency).
orders : int64[MAX_ORDERS, NOF]
    The strategy's open orders as it knows them (``OF_*`` columns; ``OF_ID == 0`` is a free
    row), including each order's queue position (volume ahead) as last reported.
params : float64[P]
    The parameter vector (names in the strategy's ``PARAMS``, in order).
state : float64[S]
    Scratch state the strategy owns (``STATE_SIZE`` long, zero at the start).
act : int64[MAX_ACTIONS + 1, NAF]
    The action buffer, written only through ``submit_limit``, ``submit_market``, ``cancel``,
    ``replace`` and ``cancel_all``; row 0 column 0 is the number of actions.

Prices are integer ticks of the data (LOBSTER: dollars x 10,000, tick 100), quantities
integer lots; sides +1 buy, -1 sell. No allocation, no exceptions, no Python objects.
"""
from __future__ import annotations

import numpy as np
from numba.extending import register_jitable

# --- md: int64 vector ------------------------------------------------------------------------
DEPTH = 5
MD_NOW = 0          # local (strategy) time, ns
MD_EV_TS = 1        # exchange time of the event behind this call
MD_EV_KIND = 2      # market: MK_*; order events: EV_*
MD_EV_SIDE = 3
MD_EV_PX = 4
MD_EV_QTY = 5
MD_EV_ID = 6        # own order id (order and fill events)
MD_EV_REASON = 7    # reject reason (RJ_*)
MD_EV_LEAVES = 8    # own order's open quantity after the event
MD_EV_MAKER = 9     # fill: 1 maker, 0 taker
MD_BID_PX = 10      # best bid price (NO_PRICE when empty)
MD_BID_QTY = 11
MD_ASK_PX = 12
MD_ASK_QTY = 13
MD_LAST_PX = 14     # last trade price (NO_PRICE before the first)
MD_LAST_QTY = 15
MD_LAST_SIDE = 16   # aggressor side of the last trade
MD_LAST_TS = 17
MD_POSITION = 18    # lots, from fill reports
MD_CASH = 19        # price units x lots, fees included, from fill reports
MD_FEES = 20
MD_OPEN = 21        # own orders the strategy knows as open or pending
MD_TICK = 22        # price tick of the data
MD_NEXT_ID = 23     # id the next submitted order will get
MD_LEVELS = 24      # level k (0-based): bid px, bid qty, ask px, ask qty at MD_LEVELS + 4 k + 0..3
NMD = MD_LEVELS + 4 * DEPTH
NO_PRICE = -1

# --- market event kinds (MD_EV_KIND for on_book / on_trade) ----------------------------------
MK_ADD = 1          # a resting order joined the book
MK_CANCEL = 2       # quantity left the book unexecuted (partial cancel or delete)
MK_EXEC = 3         # a resting visible order executed (side = resting side)
MK_TRADE = 4        # a hidden execution: a trade, the visible book unchanged
MK_SEED = 5         # quantity learned from a snapshot (orders that rested unseen)
MK_LEVEL = 6        # L2 data: the level (side, px) now shows qty (0: the level is empty)

# --- own order events (MD_EV_KIND for on_order / on_fill) ------------------------------------
EV_ACCEPTED = 11
EV_REJECTED = 12
EV_CANCELLED = 13
EV_EXPIRED = 14     # IOC rest, or a no-impact marketable remainder
EV_FILL = 15
EV_SUBMITTED = 16   # order log only: the strategy sent it
EV_CANCEL_SENT = 17  # order log only

# --- reject reasons --------------------------------------------------------------------------
RJ_NONE = 0
RJ_QTY = 1            # qty <= 0
RJ_PRICE = 2          # price not a positive multiple of the tick
RJ_RANGE = 3          # price outside the simulated price ladder
RJ_POST_ONLY = 4      # a post-only order would have taken liquidity
RJ_TOO_MANY = 5       # MAX_ORDERS open orders already
RJ_UNKNOWN = 6        # cancel of an order the exchange does not hold (filled or gone)
RJ_NO_LIQUIDITY = 7   # market order with an empty opposite side
RJ_ACTIONS = 8        # the action buffer was full (the action was dropped)
REASON_NAMES = {RJ_NONE: "", RJ_QTY: "INVALID_QTY", RJ_PRICE: "INVALID_PRICE",
                RJ_RANGE: "PRICE_OUT_OF_RANGE", RJ_POST_ONLY: "POST_ONLY_WOULD_TAKE",
                RJ_TOO_MANY: "TOO_MANY_ORDERS", RJ_UNKNOWN: "UNKNOWN_ORDER",
                RJ_NO_LIQUIDITY: "NO_LIQUIDITY", RJ_ACTIONS: "ACTION_BUFFER_FULL"}
EVENT_NAMES = {EV_ACCEPTED: "ACCEPTED", EV_REJECTED: "REJECTED", EV_CANCELLED: "CANCELLED",
               EV_EXPIRED: "EXPIRED", EV_FILL: "FILL", EV_SUBMITTED: "SUBMITTED",
               EV_CANCEL_SENT: "CANCEL_SENT"}

# --- orders: int64[MAX_ORDERS, NOF] ----------------------------------------------------------
MAX_ORDERS = 16
OF_ID = 0
OF_SIDE = 1
OF_PX = 2
OF_QTY = 3
OF_LEAVES = 4
OF_AHEAD = 5        # volume ahead in the queue, as last reported
OF_STATUS = 6       # OS_*
OF_TS = 7           # local submit time
OF_TAG = 8          # the strategy's own tag
NOF = 9
OS_PENDING = 1      # sent, not yet acknowledged
OS_OPEN = 2         # acknowledged and resting
OS_CANCELLING = 3   # cancel sent

# --- actions: int64[MAX_ACTIONS + 1, NAF] ----------------------------------------------------
MAX_ACTIONS = 16
AF_ACTION = 0       # A_NEW / A_CANCEL
AF_SIDE = 1
AF_PX = 2
AF_QTY = 3
AF_TYPE = 4         # T_LIMIT / T_MARKET
AF_TIF = 5          # TIF_GTC / TIF_IOC
AF_POST = 6         # 1 post-only
AF_ID = 7           # NEW: the id it gets; CANCEL: the order to cancel
AF_TAG = 8
NAF = 9
A_NEW = 1
A_CANCEL = 2
T_LIMIT = 0
T_MARKET = 1
TIF_GTC = 0
TIF_IOC = 1

BUY = 1
SELL = -1


@register_jitable
def _push(act, action, side, px, qty, otype, tif, post, oid, tag):
    n = act[0, 0]
    if n >= act.shape[0] - 1:
        return False
    r = n + 1
    act[r, AF_ACTION] = action
    act[r, AF_SIDE] = side
    act[r, AF_PX] = px
    act[r, AF_QTY] = qty
    act[r, AF_TYPE] = otype
    act[r, AF_TIF] = tif
    act[r, AF_POST] = post
    act[r, AF_ID] = oid
    act[r, AF_TAG] = tag
    act[0, 0] = n + 1
    return True


@register_jitable
def submit_limit(md, act, side, px, qty, tif=TIF_GTC, post_only=0, tag=0):
    """Queue a limit order; returns the id it will carry, or 0 if the action buffer is full."""
    oid = md[MD_NEXT_ID]
    if not _push(act, A_NEW, side, px, qty, T_LIMIT, tif, post_only, oid, tag):
        return 0
    md[MD_NEXT_ID] = oid + 1
    return oid


@register_jitable
def submit_market(md, act, side, qty, tag=0):
    """Queue a market order (takes the displayed opposite side; never rests)."""
    oid = md[MD_NEXT_ID]
    if not _push(act, A_NEW, side, 0, qty, T_MARKET, TIF_IOC, 0, oid, tag):
        return 0
    md[MD_NEXT_ID] = oid + 1
    return oid


@register_jitable
def cancel(act, order_id):
    """Queue a cancel of an own order; returns False if the action buffer is full."""
    return _push(act, A_CANCEL, 0, 0, 0, 0, 0, 0, order_id, 0)


@register_jitable
def find_order(orders, order_id):
    """Row of an own order in ``orders``, -1 if it is not there."""
    for i in range(orders.shape[0]):
        if orders[i, OF_ID] == order_id:
            return i
    return -1


@register_jitable
def replace(md, orders, act, order_id, px, qty):
    """Cancel an own order and send a new one on the same side (new queue position); returns
    the new order's id, 0 if the order is unknown or the buffer is full."""
    i = find_order(orders, order_id)
    if i < 0:
        return 0
    if not cancel(act, order_id):
        return 0
    return submit_limit(md, act, orders[i, OF_SIDE], px, qty, TIF_GTC, 0, orders[i, OF_TAG])


@register_jitable
def cancel_all(orders, act):
    """Queue cancels of every own order not already being cancelled; returns how many."""
    k = 0
    for i in range(orders.shape[0]):
        if orders[i, OF_ID] != 0 and orders[i, OF_STATUS] != OS_CANCELLING:
            if cancel(act, orders[i, OF_ID]):
                k += 1
    return k


@register_jitable
def mid2(md):
    """Twice the mid price (an exact integer); 0 when a side is empty."""
    if md[MD_BID_QTY] <= 0 or md[MD_ASK_QTY] <= 0:
        return 0
    return md[MD_BID_PX] + md[MD_ASK_PX]


def new_md() -> np.ndarray:
    md = np.zeros(NMD, np.int64)
    md[MD_BID_PX] = NO_PRICE
    md[MD_ASK_PX] = NO_PRICE
    md[MD_LAST_PX] = NO_PRICE
    md[MD_NEXT_ID] = 1
    for k in range(DEPTH):
        md[MD_LEVELS + 4 * k] = NO_PRICE
        md[MD_LEVELS + 4 * k + 2] = NO_PRICE
    return md


def new_orders() -> np.ndarray:
    return np.zeros((MAX_ORDERS, NOF), np.int64)


def new_actions() -> np.ndarray:
    return np.zeros((MAX_ACTIONS + 1, NAF), np.int64)
