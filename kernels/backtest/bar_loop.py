"""The bar backtest and the parameter sweep over bars: one kernel logic, three drivers.

``run_one`` runs one parameter set over all bars (the strategy's ``on_bar`` at every close, the
order executed at that close, metrics accumulated in one pass). The drivers around it:

* ``backtest_cpu``: one parameter set, serial, also writing the equity curve;
* ``sweep_cpu``: ``prange`` over parameter sets; the data is shared read-only, every parameter
  set owns its state, context, action and output row (no atomics, no shared writes), so the
  result does not depend on the number of threads or on scheduling;
* ``make_sweep_cuda()``: a CUDA kernel, one thread per parameter set, the strategy compiled as a
  CUDA device function from the same source; state, context and action in thread-local memory.

The Dask driver (hpte.engine.sweep.run) cuts the grid into chunks and runs ``sweep_cpu`` on each
in a worker.

This file is also the *template* of every bar strategy's compiled driver: the sweep engine
copies its source into a generated module and rebinds ``on_bar`` and ``STATE_LEN`` to the
strategy's, so that numba compiles loop and strategy as one unit and caches it under a name that
changes with either source (as hpte.kernels.backtest.loop does for tick strategies). Imported as
it is, the module runs the null strategy (no orders).
"""
from __future__ import annotations

import math

import numpy as np
from numba import float64, njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic, register_jitable

from hpte.kernels.backtest.bars import (AK_NONE, ACT_KIND, B_CLOSE, B_HIGH, B_LOW, B_OPEN, B_TIME,
                                        B_VOLUME, BC_CASH, BC_CLOSE, BC_EQUITY, BC_HIGH, BC_INDEX,
                                        BC_LOW, BC_NBARS, BC_OPEN, BC_POSITION, BC_TIME, BC_VOLUME,
                                        NACT, NCTX, NOUT, OUT_END_VALUE, OUT_EXPOSURE,
                                        OUT_MAX_DRAWDOWN, OUT_PNL, OUT_SHARPE,
                                        OUT_TOTAL_RETURN, OUT_TRADES, OUT_VOLATILITY, execute)


@intrinsic
def stack_array(typingctx, size):
    """float64[size] in the calling function's stack frame (``size`` a compile-time constant; CPU).

    The CPU twin of ``cuda.local.array``: once ``on_bar`` is inlined, LLVM keeps the strategy's
    state, context and action in registers and drops the stores nobody reads, so the general
    interface costs what a hand-fused loop costs. Never returned or kept past the call."""
    if not isinstance(size, types.IntegerLiteral):
        return None
    k = size.literal_value
    arrty = types.Array(types.float64, 1, "C")

    def codegen(context, builder, sig, args):
        ptr = cgutils.alloca_once(builder, context.get_value_type(types.float64), size=k)
        ary = context.make_array(arrty)(context, builder)
        intp = context.get_value_type(types.intp)
        context.populate_array(ary, data=ptr, shape=[intp(k)], strides=[intp(8)], itemsize=intp(8),
                               meminfo=None)
        return ary._getvalue()

    return arrty(size), codegen


@register_jitable
def _null_on_bar(ctx, data, params, state, act):
    return None


on_bar = _null_on_bar
STATE_LEN = 1       # the strategy's STATE_SIZE (at least 1: CUDA local arrays cannot be empty)


def make_run_one(on_bar):
    """``run_one`` with ``on_bar`` bound (a closure: the CPU drivers inline it and the strategy
    into their loop, the CUDA driver compiles it as a device function)."""

    def run_one(data, params, state, ctx, act, fee, init_cash, ann, out, curve):
        """One parameter set over all bars.

        data : float64[NROW, n] (shared, read-only); params : float64[P]; state : float64[>=S],
        ctx : float64[NCTX], act : float64[NACT] (owned by this parameter set, overwritten);
        fee : fraction of traded value; init_cash : starting cash; ann : bars per year (Sharpe);
        out : float64[NOUT] (written: OUT_*); curve : float64[3, n], the equity, position
        (units) and cash after each bar's order (rows 0, 1, 2), or float64[3, 0] for none.
        """
        n = data.shape[1]
        for j in range(state.shape[0]):
            state[j] = 0.0
        ctx[BC_NBARS] = n
        pos = 0.0
        cash = init_cash
        prev = init_cash
        peak = init_cash
        trough = init_cash
        mdd = 0.0
        trades = 0
        held = 0
        opened = 0
        s1 = 0.0                               # sum of per-bar equity changes
        s2 = 0.0                               # sum of their squares
        keep = curve.shape[1] == n
        for i in range(n):
            c = data[B_CLOSE, i]
            ctx[BC_TIME] = data[B_TIME, i]
            ctx[BC_OPEN] = data[B_OPEN, i]
            ctx[BC_HIGH] = data[B_HIGH, i]
            ctx[BC_LOW] = data[B_LOW, i]
            ctx[BC_CLOSE] = c
            ctx[BC_VOLUME] = data[B_VOLUME, i]
            ctx[BC_INDEX] = i
            ctx[BC_POSITION] = pos
            ctx[BC_CASH] = cash
            ctx[BC_EQUITY] = cash + pos * c
            act[ACT_KIND] = AK_NONE
            on_bar(ctx, data, params, state, act)
            if act[ACT_KIND] != AK_NONE:
                was_flat = pos == 0.0
                pos, cash, t = execute(act, pos, cash, c, fee)
                trades += t
                # exposure counted at position changes only (bars ending with a position)
                if was_flat and pos != 0.0:
                    opened = i
                elif not was_flat and pos == 0.0:
                    held += i - opened
            eq = cash + pos * c
            d = eq - prev                      # per-bar equity change (as hpte backtest's Sharpe)
            s1 += d
            s2 += d * d
            # drawdown by epochs between new peaks: inside one the deepest point is the lowest
            # equity (a min, no division); an epoch's depth is divided out when a new peak ends it
            if eq > peak:
                dd = (peak - trough) / peak
                if dd > mdd:
                    mdd = dd
                peak = eq
                trough = eq
            else:
                trough = min(trough, eq)
            prev = eq
            if keep:
                curve[0, i] = eq
                curve[1, i] = pos
                curve[2, i] = cash
        out[OUT_TOTAL_RETURN] = prev / init_cash - 1.0
        out[OUT_END_VALUE] = prev
        out[OUT_TRADES] = trades
        if pos != 0.0:
            held += n - opened
        out[OUT_EXPOSURE] = held / n if n > 0 else 0.0
        out[OUT_MAX_DRAWDOWN] = max(mdd, (peak - trough) / peak)
        mean = s1 / n if n > 0 else 0.0
        out[OUT_PNL] = prev - init_cash
        var = (s2 - s1 * mean) / (n - 1) if n > 1 else 0.0
        sd = math.sqrt(var) if var > 0.0 else 0.0
        out[OUT_VOLATILITY] = sd * math.sqrt(ann)
        out[OUT_SHARPE] = mean / sd * math.sqrt(ann) if sd > 0.0 else math.nan

    return run_one


def bind():
    """(Re)build the loop around the module's current ``on_bar`` (the generated driver calls it
    again after rebinding ``on_bar``): ``run_one`` (plain, for the CUDA device function) and
    ``run_one_cpu`` (inlined by numba into the CPU drivers, with the strategy inlined into it,
    so that stack arrays stay in registers)."""
    global run_one, run_one_cpu
    run_one = make_run_one(on_bar)
    run_one_cpu = njit(inline="always")(make_run_one(njit(inline="always")(on_bar)))


@njit(cache=True, nogil=True)
def backtest_cpu(data, params, fee, init_cash, ann, out, curve):
    """One parameter set (float64[P]); writes out (float64[NOUT]) and curve (float64[3, n]:
    equity, position, cash after each bar)."""
    state = np.zeros(max(STATE_LEN, 1), np.float64)
    ctx = np.zeros(NCTX, np.float64)
    act = np.zeros(NACT, np.float64)
    run_one_cpu(data, params, state, ctx, act, fee, init_cash, ann, out, curve)


@njit(cache=True, nogil=True, parallel=True)
def sweep_cpu(data, grid, fee, init_cash, ann, out):
    """Every parameter set of ``grid`` (float64[K, P]) over the shared ``data``; writes
    ``out`` (float64[K, NOUT]), row k from parameter set k only."""
    none = np.zeros((3, 0), np.float64)
    for k in prange(grid.shape[0]):
        state = stack_array(STATE_LEN)
        ctx = stack_array(NCTX)
        act = stack_array(NACT)
        run_one_cpu(data, grid[k], state, ctx, act, fee, init_cash, ann, out[k], none)


cuda = None            # numba.cuda, bound by make_sweep_cuda (a global, so the simulator can swap it)
run_one_dev = None     # run_one as a CUDA device function


def sweep_cuda(data, grid, fee, init_cash, ann, out, none):
    """Thread k runs parameter set k (the CUDA twin of sweep_cpu's prange body)."""
    k = cuda.grid(1)
    if k < grid.shape[0]:
        state = cuda.local.array(STATE_LEN, float64)
        ctx = cuda.local.array(NCTX, float64)
        act = cuda.local.array(NACT, float64)
        run_one_dev(data, grid[k], state, ctx, act, fee, init_cash, ann, out[k], none)


def make_sweep_cuda():
    """The CUDA driver, compiled on first launch (numba.cuda is imported only here):
    ``kernel[blocks, threads](data, grid, fee, init_cash, ann, out, none)`` with ``none`` a
    float64[3, 0] device array; thread k runs parameter set k."""
    global cuda, run_one_dev
    from numba import cuda as _cuda

    cuda = _cuda
    run_one_dev = _cuda.jit(device=True)(make_run_one(on_bar))
    return _cuda.jit(sweep_cuda)


bind()

