"""Many books: matching throughput with 1 and with 2 threads in the same run, and their ratio.

    python bench/bench_books.py [--events N] [--books B] [--repeats R] [--batch ROWS]

The flow is ``generate_flow(N, n_books=B)`` (the benchmark flow's statistics per book,
interleaved in time). Each configuration runs on a fresh Engine, best of R, after a warm-up
(compilation excluded). Outputs of every configuration are checked equal to the 1-thread run.
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import numba
import numpy as np

import hpte.engine.engine as E
from hpte.engine.engine import Engine
from hpte.engine.gen import generate_flow


KERNEL_SECONDS = [0.0]


def _timed(fn):
    """Wrap a kernel the engine calls, adding its wall time to KERNEL_SECONDS."""
    def wrapper(*args):
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            KERNEL_SECONDS[0] += time.perf_counter() - t0
    return wrapper


class _TimedPool:
    """The engine's thread pool, timing the rounds of matching chunks (the nogil run_chunk_cpu
    calls on the worker threads, wall time of each round), not the merge copies."""

    def __init__(self, pool):
        self.pool = pool

    def map(self, fn, *its):
        if fn.__name__ != "chunk":
            return self.pool.map(fn, *its)
        t0 = time.perf_counter()
        try:
            return list(self.pool.map(fn, *its))
        finally:
            KERNEL_SECONDS[0] += time.perf_counter() - t0


# measure the matching kernels apart from routing, merging and first-touch of new memory
E.match_seq_cpu = _timed(E.match_seq_cpu)
_pool_of = E._thread_pool
E._thread_pool = lambda threads: _TimedPool(_pool_of(threads))


def run(flow: dict, threads: int, batch: int | None) -> tuple[float, float, tuple]:
    eng = Engine(threads=threads)
    n = len(flow["ts_ns"])
    step = batch or n
    KERNEL_SECONDS[0] = 0.0
    t0, c0 = time.perf_counter(), time.process_time()
    outs = []
    for s in range(0, n, step):
        r = eng.submit({k: v[s:s + step] for k, v in flow.items()})
        outs.append((r.fills.raw, r.events.raw, r.deltas.raw))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    digest = tuple(int(np.concatenate([o[k] for o in outs]).sum(dtype=np.uint64)) for k in range(3))
    return wall, KERNEL_SECONDS[0], digest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=4_000_000)
    ap.add_argument("--books", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=0, help="rows per submit (0 = whole flow)")
    a = ap.parse_args()
    batch = a.batch or None
    flow = generate_flow(a.events, n_books=a.books, seed=0)
    warm = {k: v[:20_000] for k, v in flow.items()}
    for th in (1, 2):
        run(warm, th, None)
    print(f"hpte bench_books: {a.events:,} events over {a.books:,} books, batch "
          f"{'whole flow' if batch is None else f'{batch:,} rows'}  [{platform.machine()}, "
          f"{os.cpu_count()} CPUs, numba {numba.__version__}, {numba.config.NUMBA_NUM_THREADS} numba threads]")
    best = {}
    ref = None
    for th in (1, 2):
        for rep in range(a.repeats):
            wall, kern, digest = run(flow, th, batch)
            ref = ref or digest
            assert digest == ref, f"threads={th}: outputs differ from the 1-thread run"
            old = best.get(th, (9e9, 9e9))
            best[th] = min(old[0], wall), min(old[1], kern)
    for th in (1, 2):
        wall, kern = best[th]
        print(f"  threads={th}: best wall {wall:.3f} s = {a.events / wall / 1e6:.2f} M events/s end to end; "
              f"matching kernel {kern:.3f} s = {a.events / kern / 1e6:.2f} M events/s")
    print(f"  scaling 1 -> 2 threads: end to end {best[1][0] / best[2][0]:.2f}x, matching kernel "
          f"{best[1][1] / best[2][1]:.2f}x (outputs identical: True)")
    print("  (end to end includes routing, the merge back to arrival order and first-touch page faults "
          "of fresh output buffers, which the 2-thread path allocates twice)")


if __name__ == "__main__":
    main()
