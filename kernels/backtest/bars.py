"""Bar strategies: the ``on_bar`` interface, its context indices and the order helpers.

A bar strategy is a Python file of plain functions in the numba-compilable subset with one
callback in the array style of hpte.kernels.backtest.api::

    def on_bar(ctx, data, params, state, act): ...

called once per bar, at the bar's close, for each parameter set. Nothing in it may allocate,
raise or use Python objects, so the same source compiles for the CPU (``njit``, ``prange`` over
parameter sets) and for CUDA (``cuda.jit(device=True)``, one thread per parameter set).

ctx : float64[NCTX]
    The current bar and the strategy's account, read with the ``BC_*`` indices: bar time (ns,
    as float64: exact to 256 ns at today's epoch), open, high, low, close, volume, the bar's
    index i (0-based), the number of bars n, and the position (units, fractional), cash and
    equity (cash + position x close) before this bar's order.
data : float64[NROW, n]
    The whole data set, one row per field (``B_TIME`` .. ``B_VOLUME``, then the rows the
    strategy's optional ``prepare`` hook added, from ``B_EXTRA`` on). Column i is bar i. A
    strategy reads columns ``<= ctx[BC_INDEX]`` only: later columns are the future (nothing
    checks this at run time, as in any compiled loop; the reference tests do).
params : float64[P]
    The parameter set (names in the strategy's ``PARAMS``, in order).
state : float64[S]
    Scratch state the strategy owns (``STATE_SIZE`` long, zero at the start of every run).
act : float64[NACT]
    The order for this bar, written only through ``target_percent``, ``target_size``,
    ``close_position``; cleared before every call. It executes at this bar's close.

Accounting (as vectorbt's ``Portfolio.from_signals`` / ``from_orders`` with ``price=close``):
float cash and fractional positions; an order moves the position to its target at the close
``c``; buying q costs ``q c (1 + fee)`` and never more than the cash (a larger buy is cut to
``cash / (c (1 + fee))``, cash then 0: a whole-equity entry); selling q brings
``q c (1 - fee)``; a change within 1e-12 of the position is no order (rounding dust of
re-sent targets); a target below zero is a short sale (the proceeds go to cash). Fees are a
fraction of the traded value, 0 by default.
"""
from __future__ import annotations

from numba.extending import register_jitable

# --- data rows: float64[NROW, n] --------------------------------------------------------------
B_TIME = 0
B_OPEN = 1
B_HIGH = 2
B_LOW = 3
B_CLOSE = 4
B_VOLUME = 5
B_EXTRA = 6         # first row a strategy's prepare() added
NBASE = 6
ROW_NAMES = ("time", "open", "high", "low", "close", "volume")

# --- ctx: float64[NCTX] -----------------------------------------------------------------------
BC_TIME = 0
BC_OPEN = 1
BC_HIGH = 2
BC_LOW = 3
BC_CLOSE = 4
BC_VOLUME = 5
BC_INDEX = 6        # i, 0-based
BC_NBARS = 7        # n
BC_POSITION = 8     # units held before this bar's order (negative: short)
BC_CASH = 9
BC_EQUITY = 10      # cash + position * close
NCTX = 11

# --- act: float64[NACT] -----------------------------------------------------------------------
ACT_KIND = 0        # AK_*
ACT_VALUE = 1
NACT = 2
AK_NONE = 0.0
AK_PERCENT = 1.0    # target value = VALUE x equity
AK_SIZE = 2.0       # target position = VALUE units

# --- results: float64[NOUT] per parameter set --------------------------------------------------
OUT_TOTAL_RETURN = 0    # end value / initial cash - 1
OUT_SHARPE = 1          # mean / std (ddof 1) of per-bar equity changes x sqrt(bars per year), as
                        # hpte backtest's Sharpe; NaN when the equity never changes
OUT_MAX_DRAWDOWN = 2    # largest fall from a running peak of equity, as a fraction of the peak
OUT_TRADES = 3          # orders that changed the position
OUT_EXPOSURE = 4        # fraction of bars that end with a non-zero position
OUT_END_VALUE = 5       # equity after the last bar
OUT_PNL = 6             # end value - initial cash
OUT_VOLATILITY = 7      # std (ddof 1) of per-bar equity changes x sqrt(bars per year), cash units
NOUT = 8
METRICS = ("total_return", "sharpe", "max_drawdown", "trades", "exposure", "end_value",
           "pnl", "volatility")


@register_jitable
def target_percent(act, fraction):
    """Move the position so that it is worth ``fraction`` of the equity at this close
    (1.0: all in, 0.0: flat, -1.0: short the whole equity)."""
    act[ACT_KIND] = AK_PERCENT
    act[ACT_VALUE] = fraction


@register_jitable
def target_size(act, units):
    """Move the position to ``units`` (fractional; negative: short) at this close."""
    act[ACT_KIND] = AK_SIZE
    act[ACT_VALUE] = units


@register_jitable
def close_position(act):
    """Sell (or cover) the whole position at this close."""
    act[ACT_KIND] = AK_SIZE
    act[ACT_VALUE] = 0.0


@register_jitable
def row_at(data, row, i):
    """``data[row, i]``, or NaN when bar i does not exist (i < 0 or past the end)."""
    if i < 0 or i >= data.shape[1]:
        return float("nan")
    return data[row, i]


@register_jitable
def execute(act, pos, cash, close, fee):
    """Apply the order in ``act`` at ``close``; returns (position, cash, traded: 0 or 1)."""
    kind = act[ACT_KIND]
    if kind == AK_NONE:
        return pos, cash, 0
    if kind == AK_PERCENT:
        target = act[ACT_VALUE] * (cash + pos * close) / close
    else:
        target = act[ACT_VALUE]
    delta = target - pos
    if abs(delta) <= 1e-12 * max(abs(pos), abs(target)):
        return pos, cash, 0               # rounding dust (a target the position already holds)
    if delta > 0.0:
        cost = delta * close * (1.0 + fee)
        if cost >= cash:
            if cash <= 0.0:
                return pos, cash, 0
            return pos + cash / (close * (1.0 + fee)), 0.0, 1
        return pos + delta, cash - cost, 1
    if delta < 0.0:
        return target, cash - delta * close * (1.0 - fee), 1
    return pos, cash, 0
