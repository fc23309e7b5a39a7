"""Plain-Python references for bar backtests and the ma_cross strategy (slow and obvious).

``backtest_bars_ref`` runs a bar strategy's ``on_bar`` as plain Python, bar by bar, with the
accounting rules of hpte.kernels.backtest.bars written out again here (not imported), and
computes every metric from the whole equity curve. ``ma_cross_ref`` is vectorbt's recipe from
scratch: rolling means over a running sum, ``crossed_above`` / ``crossed_below``, and
``Portfolio.from_signals`` (whole cash in, whole position out, entries ignored while in a position).
"""
from __future__ import annotations

import math

import numpy as np

# ctx / act layout of the interface (the kernel's constants are checked against these in tests)
TIME, OPEN, HIGH, LOW, CLOSE, VOLUME, INDEX, NBARS, POSITION, CASH, EQUITY = range(11)
KIND, VALUE = 0, 1


def _execute_ref(kind, value, pos, cash, close, fee):
    if kind == 0:
        return pos, cash, 0
    target = value * (cash + pos * close) / close if kind == 1 else value
    if abs(target - pos) <= 1e-12 * max(abs(pos), abs(target)):
        return pos, cash, 0               # already there (rounding dust of a re-sent target)
    if target > pos:
        q = target - pos
        cost = q * close * (1 + fee)
        if cost >= cash:                  # buying power is the cash: a whole-equity entry
            if cash <= 0:
                return pos, cash, 0
            return pos + cash / (close * (1 + fee)), 0.0, 1
        return pos + q, cash - cost, 1
    if target < pos:
        q = pos - target
        return target, cash + q * close * (1 - fee), 1
    return pos, cash, 0


def backtest_bars_ref(on_bar, data, params, state_size, fee=0.0, init_cash=100.0, ann=252.0):
    """(metrics dict, equity list) of ``on_bar`` over ``data`` (float64[NROW, n])."""
    n = data.shape[1]
    state = np.zeros(max(1, state_size))
    pos, cash = 0.0, float(init_cash)
    equity, trades, held = [], 0, 0
    for i in range(n):
        c = float(data[4, i])
        ctx = np.zeros(11)
        ctx[TIME:VOLUME + 1] = data[:6, i]
        ctx[INDEX], ctx[NBARS], ctx[POSITION], ctx[CASH], ctx[EQUITY] = i, n, pos, cash, cash + pos * c
        act = np.zeros(2)
        # the strategy sees the data up to this bar only: a future column is NaN here
        view = data.copy()
        view[:, i + 1:] = np.nan
        on_bar(ctx, view, np.asarray(params, np.float64), state, act)
        pos, cash, t = _execute_ref(act[KIND], act[VALUE], pos, cash, c, fee)
        trades += t
        held += pos != 0
        equity.append(cash + pos * c)
    eq = np.array(equity)
    prev = np.concatenate([[init_cash], eq[:-1]])
    d = eq - prev                         # per-bar equity changes
    sd = float(np.std(d, ddof=1)) if n > 1 else 0.0
    peak = np.maximum.accumulate(np.concatenate([[init_cash], eq]))[1:]
    dd = np.where(peak > 0, (peak - eq) / np.where(peak > 0, peak, 1), 0.0)
    metrics = {
        "total_return": eq[-1] / init_cash - 1, "sharpe": float(d.mean() / sd * math.sqrt(ann)) if sd > 0 else math.nan,
        "max_drawdown": float(max(0.0, dd.max())), "trades": trades, "exposure": held / n,
        "end_value": float(eq[-1]), "pnl": float(eq[-1] - init_cash), "volatility": sd * math.sqrt(ann),
    }
    return metrics, equity


def sma_vbt(close, w):
    """vectorbt's rolling_mean_1d_nb with minp = window, for a NaN-free input."""
    out = np.full(len(close), np.nan)
    cs = np.cumsum(close)
    for i in range(len(close)):
        if i + 1 < w:
            continue
        out[i] = (cs[i] if i < w else cs[i] - cs[i - w]) / w
    return out


def crossed_above_vbt(a, b):
    """vectorbt's crossed_above_1d_nb (wait = 0)."""
    out = np.zeros(len(a), bool)
    was_below, ago = False, -1
    for i in range(len(a)):
        if math.isnan(a[i]) or math.isnan(b[i]):
            was_below, ago = False, -1
        elif a[i] > b[i]:
            if was_below:
                ago += 1
                out[i] = ago == 0
        elif a[i] == b[i]:
            ago = -1
        else:
            ago = -1
            was_below = True
    return out


def ma_cross_ref(close, fast, slow, init_cash=100.0):
    """(total return, number of orders, total return as the product of round trips - 1)."""
    close = np.asarray(close, np.float64)
    f, s = sma_vbt(close, int(fast)), sma_vbt(close, int(slow))
    entries, exits = crossed_above_vbt(f, s), crossed_above_vbt(s, f)
    cash, pos, orders = init_cash, 0.0, 0
    prod, entry_px = 1.0, None
    for i, c in enumerate(close):
        if entries[i] and pos == 0:
            pos, cash, orders, entry_px = cash / c, 0.0, orders + 1, c
        elif exits[i] and pos > 0:
            pos, cash, orders = 0.0, pos * c, orders + 1
            prod *= c / entry_px
            entry_px = None
    if entry_px is not None:
        prod *= close[-1] / entry_px
    return (cash + pos * close[-1]) / init_cash - 1, orders, prod - 1
