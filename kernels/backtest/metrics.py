"""The metrics accumulator of tick backtests: one fold over a run's output rows, shared by the
single backtest (hpte.engine.backtest.run, which also keeps the tables) and the tick sweep
(hpte.kernels.backtest.loop.sweep_cpu, which keeps only this), so that every sweep row equals
the single backtest of its parameter set exactly.

A run's outputs (fills, order-log rows, equity samples; the loop's FL_*, EL_*, EQ_* columns)
are folded row by row in their order, whatever buffer boundaries they come in, into

acc_i : int64[NMI]  counts and exact integer sums (MI_*)
acc_f : float64[NMF]  the equity statistics (MF_*): Welford mean and sum of squares of the
    equity changes between samples, the running peak and the deepest fall from it

``new_acc`` gives the start values; hpte.engine.backtest.run.finish_metrics turns them into the
metrics dict.
"""
from __future__ import annotations

import numpy as np
from numba import njit
from numba.extending import register_jitable

from hpte.kernels.backtest.api import EV_CANCELLED, EV_REJECTED, EV_SUBMITTED

# the loop's output columns (hpte.kernels.backtest.loop FL_*, EL_*, EQ_*; checked in the tests)
_FL_SIDE, _FL_PX, _FL_QTY, _FL_MAKER, _FL_FEE, _FL_POS, _FL_CASH, _FL_QUEUE_NS = 2, 3, 4, 5, 6, 7, 8, 10
_EL_KIND, _EL_QTY = 2, 5
_EQ_POS, _EQ_CASH, _EQ_BID, _EQ_ASK = 1, 2, 3, 4

MI_TRADES = 0       # fills
MI_MAKER = 1        # maker fills
MI_VOLUME = 2       # filled lots
MI_MAKER_QTY = 3    # lots filled as maker
MI_NOTIONAL = 4     # sum of price x lots (price units)
MI_POS_MIN = 5      # lowest position after a fill (starts at 0)
MI_POS_MAX = 6
MI_POS_END = 7      # position after the last fill
MI_CASH_END = 8
MI_FEES = 9
MI_SUBMITTED = 10   # orders sent
MI_SUBMITTED_QTY = 11
MI_CANCELS = 12     # orders cancelled at the exchange
MI_REJECTS = 13
MI_SAMPLES = 14     # equity samples
NMI = 16

MF_QUEUE = 0        # sum over maker fills of time in queue (ns) x lots
MF_LAST = 1         # equity at the latest sample (price units)
MF_MEAN = 2         # mean of the equity changes between samples (Welford)
MF_M2 = 3           # their sum of squared deviations (Welford)
MF_PEAK = 4         # running peak of equity, starting at 0
MF_MAXDD = 5        # largest fall from the running peak
NMF = 8


def new_acc() -> tuple[np.ndarray, np.ndarray]:
    """Start values of (acc_i, acc_f)."""
    return np.zeros(NMI, np.int64), np.zeros(NMF, np.float64)


@register_jitable
def fold_fills(acc_i, acc_f, fills, n):
    """Fold fill rows 0..n-1 (int64[:, NFL])."""
    for r in range(n):
        q = fills[r, _FL_QTY]
        acc_i[MI_TRADES] += 1
        acc_i[MI_VOLUME] += q
        acc_i[MI_NOTIONAL] += fills[r, _FL_PX] * q
        if fills[r, _FL_MAKER] != 0:
            acc_i[MI_MAKER] += 1
            acc_i[MI_MAKER_QTY] += q
            acc_f[MF_QUEUE] += float(fills[r, _FL_QUEUE_NS]) * float(q)
        p = fills[r, _FL_POS]
        if p < acc_i[MI_POS_MIN]:
            acc_i[MI_POS_MIN] = p
        if p > acc_i[MI_POS_MAX]:
            acc_i[MI_POS_MAX] = p
        acc_i[MI_POS_END] = p
        acc_i[MI_CASH_END] = fills[r, _FL_CASH]
        acc_i[MI_FEES] += fills[r, _FL_FEE]


@register_jitable
def fold_events(acc_i, evs, n):
    """Fold order-log rows 0..n-1 (int64[:, NEL])."""
    for r in range(n):
        k = evs[r, _EL_KIND]
        if k == EV_SUBMITTED:
            acc_i[MI_SUBMITTED] += 1
            acc_i[MI_SUBMITTED_QTY] += evs[r, _EL_QTY]
        elif k == EV_CANCELLED:
            acc_i[MI_CANCELS] += 1
        elif k == EV_REJECTED:
            acc_i[MI_REJECTS] += 1


@register_jitable
def fold_equity(acc_i, acc_f, eq, n):
    """Fold equity samples 0..n-1 (int64[:, NEQ]): equity = cash + position x mid (the mid of
    the exchange's best bid and ask; one side when the other is empty (NO_PRICE); 0 when both are)."""
    for r in range(n):
        b = eq[r, _EQ_BID]
        a = eq[r, _EQ_ASK]
        if b > 0 and a > 0:
            mid = (b + a) / 2.0
        elif b > 0:
            mid = float(b)
        elif a > 0:
            mid = float(a)
        else:
            mid = 0.0
        e = eq[r, _EQ_CASH] + eq[r, _EQ_POS] * mid
        k = acc_i[MI_SAMPLES]
        if k > 0:
            d = e - acc_f[MF_LAST]
            m = acc_f[MF_MEAN]
            delta = d - m
            m += delta / k          # k changes so far, this one included
            acc_f[MF_MEAN] = m
            acc_f[MF_M2] += delta * (d - m)
        acc_f[MF_LAST] = e
        if e > acc_f[MF_PEAK]:
            acc_f[MF_PEAK] = e
        dd = acc_f[MF_PEAK] - e
        if dd > acc_f[MF_MAXDD]:
            acc_f[MF_MAXDD] = dd
        acc_i[MI_SAMPLES] = k + 1


@register_jitable
def fold(acc_i, acc_f, fills, nf, evs, ne, eq, nq):
    """Fold a run's new output rows (the first nf fills, ne log rows, nq equity samples)."""
    fold_fills(acc_i, acc_f, fills, nf)
    fold_events(acc_i, evs, ne)
    fold_equity(acc_i, acc_f, eq, nq)


@njit(cache=True, nogil=True)
def fold_cpu(acc_i, acc_f, fills, nf, evs, ne, eq, nq):
    """``fold`` called from Python (the single backtest, at every drain of its buffers)."""
    fold(acc_i, acc_f, fills, nf, evs, ne, eq, nq)
