"""Test strategy for trades-only data: on the ``at``-th trade it sees (on_trade), one GTC limit
order of ``qty`` at ``px`` on ``side`` (+1 buy / -1 sell). No on_book logic (no book on such data)."""
from hpte.kernels.backtest import api as bt

PARAMS = {"at": 10.0, "side": 1.0, "px": 0.0, "qty": 1.0}
STATE_SIZE = 1
TIMER_NS = 0


def on_book(md, orders, params, state, act):
    pass


def on_trade(md, orders, params, state, act):
    state[0] += 1.0
    if state[0] == params[0]:
        bt.submit_limit(md, act, int(params[1]), int(params[2]), int(params[3]), 0, 0, 0)
