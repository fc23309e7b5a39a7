"""Test strategy: random actions from a seeded integer LCG kept in state[0] (exact in numba and
in Python), so that the kernel and the reference see the same decisions. It submits limit
orders around the book (some post-only, some IOC, some crossing, some bad), market orders and
cancels, from every callback."""
from hpte.kernels.backtest import api as bt

PARAMS = {"seed": 1.0, "activity": 40.0, "max_qty": 5.0}
STATE_SIZE = 4
BOOK_DEPTH = 5
TIMER_NS = 0


def _rand(state, m):
    x = int(state[0])
    x = (x * 1103515245 + 12345) % 2147483648
    state[0] = x
    return (x >> 8) % m


def _act(md, orders, params, state, act):
    if state[1] == 0.0:
        state[0] = params[0]
        state[1] = 1.0
    if _rand(state, 100) >= params[1]:
        return
    tick = md[bt.MD_TICK]
    r = _rand(state, 10)
    qty = 1 + _rand(state, int(params[2]))
    side = bt.BUY if _rand(state, 2) == 0 else bt.SELL
    ref = md[bt.MD_BID_PX] if side == bt.BUY else md[bt.MD_ASK_PX]
    if ref <= 0:
        ref = md[bt.MD_ASK_PX] if side == bt.BUY else md[bt.MD_BID_PX]
    if ref <= 0:
        ref = 1000 * tick
    k = _rand(state, bt.DEPTH)
    deep = md[bt.MD_LEVELS + 4 * k + (0 if side == bt.BUY else 2)]
    if deep > 0 and _rand(state, 3) == 0:
        ref = deep
    if r <= 3:
        px = ref + side * tick * (_rand(state, 5) - 2)
        bt.submit_limit(md, act, side, px, qty, bt.TIF_GTC, _rand(state, 2), r)
    elif r == 4:
        px = ref + side * tick * _rand(state, 3)
        bt.submit_limit(md, act, side, px, qty, bt.TIF_IOC, 0, r)
    elif r == 5:
        bt.submit_market(md, act, side, qty, r)
    elif r == 6:
        k = _rand(state, 4)
        if k == 0:
            bt.submit_limit(md, act, side, ref + 1, qty, bt.TIF_GTC, 0, r)      # off the tick grid
        elif k == 1:
            bt.submit_limit(md, act, side, ref, 0, bt.TIF_GTC, 0, r)            # no quantity
        elif k == 2:
            bt.submit_limit(md, act, side, ref + side * tick * 100000, qty, bt.TIF_GTC, 0, r)  # off the ladder
        else:
            bt.cancel(act, md[bt.MD_NEXT_ID] + 5)                               # unknown order
    else:
        i = _rand(state, bt.MAX_ORDERS)
        if orders[i, bt.OF_ID] != 0:
            if r == 7:
                bt.replace(md, orders, act, orders[i, bt.OF_ID], orders[i, bt.OF_PX] - orders[i, bt.OF_SIDE] * tick, qty)
            else:
                bt.cancel(act, orders[i, bt.OF_ID])


def on_book(md, orders, params, state, act):
    _act(md, orders, params, state, act)


def on_trade(md, orders, params, state, act):
    _act(md, orders, params, state, act)


def on_order(md, orders, params, state, act):
    # reacting to every own-order event at zero latency is a branching process (each action
    # brings two or more responses at the same instant): act on a quarter of them, so that the
    # chain stays finite and short
    if _rand(state, 4) == 0:
        _act(md, orders, params, state, act)


def on_fill(md, orders, params, state, act):
    state[2] += md[bt.MD_EV_QTY]
    if _rand(state, 4) == 0:
        _act(md, orders, params, state, act)


def on_timer(md, orders, params, state, act):
    state[3] += 1.0
    _act(md, orders, params, state, act)
