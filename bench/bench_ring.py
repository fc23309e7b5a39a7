"""Records per second between two processes: hpte's shared-memory ring vs multiprocessing.Queue.

The records are order records (schema.ORDER_COLUMNS: 45 bytes + the ring's 8-byte seq). A spawned
producer process pushes ``--records`` records in batches of ``--batch``; this process consumes
them. Timing starts when both sides are ready and stops when the consumer has the last record.
The baseline puts the same batches (dicts of numpy arrays, pickled) on a multiprocessing.Queue.

    .venv/bin/python bench/bench_ring.py [--records 20000000] [--batch 16384] [--capacity 262144]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time

import numpy as np

from hpte.engine import schema as S
from hpte.engine.md.ring import Ring

COLS = [(n, dt) for n, dt, *_ in S.ORDER_COLUMNS]
RECORD_BYTES = 8 + sum(dt.itemsize for _, dt in COLS)


def make_batch(n: int, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.integers(0, 100, n).astype(dt) for name, dt in COLS}


def ring_producer(name: str, records: int, batch: int, ready, go) -> None:
    b = make_batch(batch)
    with Ring.attach(name, policy="block", timeout=30.0) as r:
        r.push({k: v[:1] for k, v in b.items()})  # warm the kernel (cached) before timing
        ready.set()
        go.wait()
        left = records - 1
        while left > 0:
            k = min(batch, left)
            r.push(b if k == batch else {c: v[:k] for c, v in b.items()})
            left -= k
        r.finish()


def queue_producer(q, records: int, batch: int, ready, go) -> None:
    b = make_batch(batch)
    ready.set()
    go.wait()
    left = records
    while left > 0:
        k = min(batch, left)
        q.put(b if k == batch else {c: v[:k] for c, v in b.items()})
        left -= k
    q.put(None)


def bench_ring(ctx, records: int, batch: int, capacity: int, into: bool) -> float:
    name = f"hpte_bench_{os.getpid()}"
    with Ring.create(name, capacity, COLS, policy="block") as r:
        ready, go = ctx.Event(), ctx.Event()
        p = ctx.Process(target=ring_producer, args=(name, records, batch, ready, go))
        p.start()
        ready.wait()
        out = {"seq": np.empty(batch, np.uint64), **{n: np.empty(batch, dt) for n, dt in COLS}}
        got = 0
        t0 = time.perf_counter()
        go.set()
        if into:
            while True:
                k = r.pop_into(out, timeout=None)
                got += k
                if k == 0 and r.finished:
                    break
        else:
            while True:
                b = r.pop(batch, timeout=None)
                k = len(b["seq"])
                got += k
                if k == 0 and r.finished:
                    break
        dt = time.perf_counter() - t0
        p.join()
        assert got == records, (got, records)
        assert r.expected_seq == records and r.gaps == 0
    return records / dt


def bench_queue(ctx, records: int, batch: int) -> float:
    q = ctx.Queue(maxsize=64)
    ready, go = ctx.Event(), ctx.Event()
    p = ctx.Process(target=queue_producer, args=(q, records, batch, ready, go))
    p.start()
    ready.wait()
    got = 0
    t0 = time.perf_counter()
    go.set()
    while True:
        b = q.get()
        if b is None:
            break
        got += len(b["ts_ns"])
    dt = time.perf_counter() - t0
    p.join()
    assert got == records
    return records / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=20_000_000)
    ap.add_argument("--batch", type=int, nargs="+", default=[1024, 16384])
    ap.add_argument("--capacity", type=int, default=1 << 18)
    ap.add_argument("--queue-records", type=int, default=None,
                    help="records for the Queue baseline (default: --records)")
    a = ap.parse_args()
    ctx = mp.get_context("spawn")
    print(f"record: {len(COLS)} columns, {RECORD_BYTES} bytes with seq; {a.records:,} records; "
          f"ring capacity {a.capacity:,}; {os.cpu_count()} CPUs")
    print(f"{'batch':>7} {'ring pop() Mrec/s':>18} {'ring pop_into() Mrec/s':>23} {'Queue Mrec/s':>13} "
          f"{'ring/Queue':>10} {'ring GB/s':>9}")
    for batch in a.batch:
        r1 = bench_ring(ctx, a.records, batch, a.capacity, into=False)
        r2 = bench_ring(ctx, a.records, batch, a.capacity, into=True)
        qr = bench_queue(ctx, a.queue_records or a.records, batch)
        print(f"{batch:>7} {r1 / 1e6:>18.1f} {r2 / 1e6:>23.1f} {qr / 1e6:>13.2f} {r1 / qr:>9.1f}x "
              f"{r1 * RECORD_BYTES / 1e9:>9.2f}")


if __name__ == "__main__":
    main()
