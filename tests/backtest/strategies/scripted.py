"""Test strategy: up to three limit orders given in PARAMS, each sent from the on_book call
that follows market event number ``at{k}`` (1-based; 0 = never): side{k} (+1 buy / -1 sell),
px{k} (price), qty{k}, tif{k} (0 GTC, 1 IOC). For hand-built scenarios of the impact rules."""
from hpte.kernels.backtest import api as bt

PARAMS = {"at0": 0.0, "side0": 1.0, "px0": 0.0, "qty0": 0.0, "tif0": 0.0,
          "at1": 0.0, "side1": 1.0, "px1": 0.0, "qty1": 0.0, "tif1": 0.0,
          "at2": 0.0, "side2": 1.0, "px2": 0.0, "qty2": 0.0, "tif2": 0.0}
STATE_SIZE = 1
TIMER_NS = 0


def on_book(md, orders, params, state, act):
    state[0] += 1.0
    for k in range(3):
        if params[5 * k] > 0 and state[0] == params[5 * k]:
            bt.submit_limit(md, act, int(params[5 * k + 1]), int(params[5 * k + 2]), int(params[5 * k + 3]),
                            int(params[5 * k + 4]), 0, k)
