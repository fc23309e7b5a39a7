"""Trade-stream momentum taker: follows the sign of recent aggressive volume with market orders.

Parameters
----------
alpha : weight of each new trade in the exponential average of signed trade volume (0..1]
threshold : lots of average signed volume that trigger a trade
size : lots per market order
max_position : never beyond +-max_position lots

One order in flight at a time (no new order while the strategy knows of an open one).
"""
from hpte.kernels.backtest import api as bt

PARAMS = {"alpha": 0.1, "threshold": 50.0, "size": 100.0, "max_position": 300.0}
STATE_SIZE = 1      # state[0]: the signed volume average


def on_book(md, orders, params, state, act):
    return None


def on_trade(md, orders, params, state, act):
    a = params[0]
    state[0] = (1.0 - a) * state[0] + a * md[bt.MD_LAST_SIDE] * md[bt.MD_LAST_QTY]
    if md[bt.MD_OPEN] > 0:
        return
    size = int(params[2])
    pos = md[bt.MD_POSITION]
    if state[0] > params[1] and pos + size <= params[3]:
        bt.submit_market(md, act, bt.BUY, size)
    elif state[0] < -params[1] and pos - size >= -params[3]:
        bt.submit_market(md, act, bt.SELL, size)
