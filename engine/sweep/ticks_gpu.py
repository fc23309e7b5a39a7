"""The tick sweep on a GPU (no-impact mode): one CUDA thread per parameter set, running the
strategy's own loop (the generated driver's ``run_cpu`` source, hpte.kernels.backtest.loop)
compiled as a CUDA device function through numba-cuda, with the metrics fold
(hpte.kernels.backtest.metrics.fold) on the device.

The decoded stream (int64 columns, ``arrival`` resolved once) is copied to the device once and
shared read-only by every thread; each parameter set owns a slice of per-set device buffers
(its copies of cfg / sc / md, ladders, orders, rings, output buffers) and writes only its rows
of acc_i / acc_f / info, which are all that is copied back. The thread body is
``loop.run_set``'s: call the loop on the whole stream as one final chunk, fold its outputs at
every flush, stop at the final status. So a row is the CPU sweep's row (and the single
backtest's) whatever the launch shape: exactly under numba's CUDA simulator (tested); on a
device the integer metrics are exact and the float sums may differ in the last bits where the
compiler contracts a multiply-add (``--device gpu`` checks are to 1e-9 relative).

Impact mode has no GPU driver (each set's book grows its pool between kernel calls).
"""
from __future__ import annotations

import numpy as np

from hpte.engine.backtest.run import RunConfig
from hpte.engine.backtest.strategy import Strategy, driver
from hpte.kernels.backtest import api as A
from hpte.kernels.backtest import loop as K
from hpte.kernels.backtest import metrics as M

THREADS_PER_BLOCK = 64
OUT_ROWS = 1024             # output rows a set's fills / order-event buffers hold beyond one step's worst case
EQ_ROWS = 256               # equity samples between folds
DEVICE_BUDGET = 8 << 30     # bytes of per-set buffers on the device per launch (sizes the default chunk)
_kernels: dict = {}
cuda = None     # numba.cuda, bound by make_kernel (a module global, so that the simulator can swap it)


def make_kernel(mod):
    """The CUDA kernel of a generated tick driver module ``mod`` (compiled on first launch):
    ``kernel[blocks, threads](ts, kind, arrival, side, px, qty, lvl, grid, cfg, sc, md, xlad, llad,
    xo, orders, state, act, req, rsp, fills, evs, eq, acc_i, acc_f, info, dummy)``; every per-set
    argument has the parameter set as its first axis; thread k runs set k."""
    global cuda
    from numba import cuda as _cuda

    cuda = _cuda
    run_dev = cuda.jit(device=True)(mod.run_cpu.py_func)
    fold = M.fold
    ST_FLUSH, SC_NFILL, SC_NEV, SC_NEQ = K.ST_FLUSH, K.SC_NFILL, K.SC_NEV, K.SC_NEQ
    SC_INST_T, SC_POS, SC_CASH = K.SC_INST_T, K.SC_POS, K.SC_CASH

    def sweep_ticks_cuda(ts, kind, arrival, side, px, qty, lvl, grid, cfg, sc, md, xlad, llad, xo, orders, state,
                         act, req, rsp, fills, evs, eq, acc_i, acc_f, info, dummy):
        k = cuda.grid(1)
        if k < grid.shape[0]:
            s = sc[k]
            while True:
                st = run_dev(ts, kind, arrival, arrival, side, px, qty, lvl, cfg[k], s, xlad[k], llad[k], xo[k],
                             orders[k], md[k], grid[k], state[k], act[k], req[k], rsp[k], fills[k], evs[k], eq[k],
                             dummy, dummy, dummy, dummy, dummy)
                fold(acc_i[k], acc_f[k], fills[k], s[SC_NFILL], evs[k], s[SC_NEV], eq[k], s[SC_NEQ])
                s[SC_NFILL] = 0
                s[SC_NEV] = 0
                s[SC_NEQ] = 0
                if st != ST_FLUSH:
                    break
            info[k, 0] = st
            info[k, 1] = s[SC_INST_T]
            info[k, 2] = s[SC_POS]
            info[k, 3] = s[SC_CASH]

    return cuda.jit(sweep_ticks_cuda)


def kernel_for(strat: Strategy):
    mod = driver(strat)
    if mod.__name__ not in _kernels:
        _kernels[mod.__name__] = make_kernel(mod)
    return _kernels[mod.__name__]


def caps(rc: RunConfig) -> tuple:
    """(fills, order events, equity) rows of a set's device output buffers: what one step of the
    loop can write at most (its flush margins) plus OUT_ROWS / EQ_ROWS; smaller than the CPU's
    (the buffers are folded and emptied at every flush, so a row does not depend on them)."""
    return (rc.L + 2 * A.MAX_ORDERS + 4 + OUT_ROWS, 2 * (A.MAX_ACTIONS + 1) + 2 * A.MAX_ORDERS + 8 + OUT_ROWS,
            2 + EQ_ROWS)


def per_set_bytes(rc: RunConfig, state_size: int, P: int) -> int:
    """Device memory one parameter set needs (its buffers and outputs), bytes."""
    fc, ec, qc = caps(rc)
    rows = (K.NCF + K.NSC + A.NMD + 4 * rc.L + A.MAX_ORDERS * (K.NXO + A.NOF) + (A.MAX_ACTIONS + 1) * A.NAF
            + rc.ring * (K.NRQ + K.NRS) + fc * K.NFL + ec * K.NEL + qc * K.NEQ + M.NMI + 4)
    return 8 * (rows + M.NMF + max(state_size, 1) + P)


class TickGpuRunner:
    """The stream resident on the device (CuPy; NumPy under the simulator); ``run(sets)`` gives
    (acc_i, acc_f, info) of a chunk of parameter sets, as ``ticks.run_sets`` does on the CPU."""

    def __init__(self, strat: Strategy, cols: dict, rc: RunConfig, simulator: bool):
        self.kernel = kernel_for(strat)
        if simulator:
            import numpy as xp
        else:
            import cupy as xp
        self.xp, self.rc, self.ss = xp, rc, max(strat.state_size, 1)
        self.cols = [xp.asarray(np.ascontiguousarray(cols[c], dtype=np.int64))
                     for c in ("ts_ns", "kind", "arrival", "side", "price", "qty")]
        self.lvl = xp.asarray((np.asarray(cols["price"], np.int64) - rc.base) // rc.tick)
        self.dummy = xp.zeros(1, dtype=xp.int64)

    def run(self, sets: np.ndarray) -> tuple:
        xp, rc = self.xp, self.rc
        k = sets.shape[0]
        fc, ec, qc = caps(rc)
        cfg = np.tile(rc.cfg, (k, 1))
        cfg[:, K.CF_FINAL] = 1
        cfg[:, K.CF_IMPACT] = 0

        def z(*shape, dt=np.int64):
            return xp.zeros((k, *shape), dtype=dt)

        args = [xp.asarray(np.ascontiguousarray(sets, dtype=np.float64)), xp.asarray(cfg),
                xp.asarray(np.tile(rc.sc, (k, 1))), xp.asarray(np.tile(rc.md, (k, 1))), z(2, rc.L), z(2, rc.L),
                z(A.MAX_ORDERS, K.NXO), z(A.MAX_ORDERS, A.NOF), z(self.ss, dt=np.float64), z(A.MAX_ACTIONS + 1, A.NAF),
                z(rc.ring, K.NRQ), z(rc.ring, K.NRS), z(fc, K.NFL), z(ec, K.NEL), z(qc, K.NEQ)]
        acc_i, acc_f, info = z(M.NMI), z(M.NMF, dt=np.float64), z(4)
        tpb = THREADS_PER_BLOCK
        self.kernel[(k + tpb - 1) // tpb, tpb](*self.cols, self.lvl, *args, acc_i, acc_f, info, self.dummy)
        get = (lambda a: a.get()) if hasattr(acc_i, "get") else np.asarray
        return get(acc_i), get(acc_f), get(info)
