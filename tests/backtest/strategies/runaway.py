"""Test strategy: a zero-latency loop. It sends an order of quantity 0 on the first book
update, and again on every reject, so that at zero latency the reject, the new order and the
next reject all happen at one instant, without end (the per-instant action limit stops it).
With any entry or response latency, time passes between the rounds."""
from hpte.kernels.backtest import api as bt

PARAMS = {}
STATE_SIZE = 1


def on_book(md, orders, params, state, act):
    if state[0] == 0.0 and md[bt.MD_BID_QTY] > 0:
        state[0] = 1.0
        bt.submit_limit(md, act, bt.BUY, md[bt.MD_BID_PX], 0)


def on_order(md, orders, params, state, act):
    if md[bt.MD_EV_KIND] == bt.EV_REJECTED:
        bt.submit_limit(md, act, bt.BUY, md[bt.MD_BID_PX], 0)
