"""Market maker: one post-only bid and one post-only ask around the mid, skewed by inventory.

Parameters
----------
half_spread : ticks from the (skewed) mid to each quote (1.0: one tick each side)
size : lots per quote
max_position : no bid at or above +max_position lots, no ask at or below -max_position
skew : ticks the quotes move against the position when it is at max_position (linear)

Quotes never cross the visible book (at most the best bid / best ask); a quote whose price
changes is cancelled and sent again (a new queue position).
"""
import math

from hpte.kernels.backtest import api as bt

PARAMS = {"half_spread": 1.0, "size": 100.0, "max_position": 500.0, "skew": 2.0}
STATE_SIZE = 2      # state[0]: bid order id, state[1]: ask order id (0: none)


def _quote(md, orders, state, act, k, side, px, size):
    oid = int(state[k])
    if oid != 0:
        i = bt.find_order(orders, oid)
        if i < 0:
            state[k] = 0.0
        elif orders[i, bt.OF_STATUS] == bt.OS_CANCELLING:
            return
        elif orders[i, bt.OF_PX] == px:
            return
        else:
            bt.cancel(act, oid)
            state[k] = 0.0
    if px > 0 and size > 0:
        state[k] = bt.submit_limit(md, act, side, px, size, bt.TIF_GTC, 1)


def on_book(md, orders, params, state, act):
    if md[bt.MD_BID_QTY] <= 0 or md[bt.MD_ASK_QTY] <= 0:
        return
    tick = md[bt.MD_TICK]
    pos = md[bt.MD_POSITION]
    max_pos = params[2]
    fair = (md[bt.MD_BID_PX] + md[bt.MD_ASK_PX]) / (2.0 * tick) - params[3] * pos / max_pos
    bid = int(math.floor(fair - params[0])) * tick
    ask = int(math.ceil(fair + params[0])) * tick
    if bid > md[bt.MD_BID_PX]:
        bid = md[bt.MD_BID_PX]
    if ask < md[bt.MD_ASK_PX]:
        ask = md[bt.MD_ASK_PX]
    size = int(params[1])
    _quote(md, orders, state, act, 0, bt.BUY, bid if pos < max_pos else 0, size)
    _quote(md, orders, state, act, 1, bt.SELL, ask if pos > -max_pos else 0, size)
