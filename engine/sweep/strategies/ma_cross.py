"""Moving-average crossover on bars, long only, with exactly vectorbt's semantics.

Parameters
----------
fast : window of the fast simple moving average of closes, bars (>= 1)
slow : window of the slow simple moving average, bars (>= 1)

At the close of the bar where the fast SMA crosses above the slow one, the whole equity goes in
(a fractional position); at the close where it crosses below, the position is sold. The rules
are vectorbt's ``fast_ma.vbt.crossed_above(slow_ma)`` / ``crossed_below`` with
``Portfolio.from_signals`` (no fees by default, entries ignored while in a position, exits
while flat):

* an SMA of window w is defined from bar w - 1 on, computed as vectorbt's rolling mean does:
  ``(S[i] - S[i - w]) / w`` over the running sum S of closes (``prepare`` adds S as a data row),
  so both round the same way;
* a cross above counts at bar i when fast > slow there and fast was below slow at some bar since
  both averages were last defined, and no cross above has counted since fast was last at or
  below slow: equal averages end the run above without clearing "was below" (so below, equal,
  above is a cross), and an undefined average clears everything. Crosses below mirror this.

Total return = the product of the round trips' exit/entry closes (an open position marked at
the last close) minus 1.
"""
import math

import numpy as np

from hpte.kernels.backtest import bars as bb

PARAMS = {"fast": 10.0, "slow": 50.0}
STATE_SIZE = 4
# state[0]: fast was below slow, state[1]: fast has crossed above and stayed above,
# state[2]: slow was below fast, state[3]: slow has crossed above (fast below) and stayed
CUMSUM = bb.B_EXTRA


def prepare(data):
    """The running sum of closes, as vectorbt's rolling mean keeps it (shared by every set)."""
    return np.cumsum(data[bb.B_CLOSE]).reshape(1, -1)


def sma(data, i, w):
    """vectorbt's rolling mean of closes with window w at bar i (NaN before bar w - 1)."""
    if w < 1 or i + 1 < w:
        return math.nan
    if i < w:
        return data[CUMSUM, i] / w
    return (data[CUMSUM, i] - data[CUMSUM, i - w]) / w


def on_bar(ctx, data, params, state, act):
    i = int(ctx[bb.BC_INDEX])
    f = sma(data, i, int(params[0]))
    s = sma(data, i, int(params[1]))
    entry = False
    leave = False
    if f != f or s != s:
        state[0] = 0.0
        state[1] = 0.0
        state[2] = 0.0
        state[3] = 0.0
    elif f > s:
        if state[0] != 0.0:
            entry = state[1] == 0.0
            state[1] = 1.0
        state[2] = 1.0
        state[3] = 0.0
    elif f == s:
        state[1] = 0.0
        state[3] = 0.0
    else:
        if state[2] != 0.0:
            leave = state[3] == 0.0
            state[3] = 1.0
        state[0] = 1.0
        state[1] = 0.0
    pos = ctx[bb.BC_POSITION]
    if entry and pos == 0.0:
        bb.target_percent(act, 1.0)
    elif leave and pos > 0.0:
        bb.close_position(act)
