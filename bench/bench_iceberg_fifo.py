"""Events/s of the FIFO engine on the benchmark flow (one batch, no icebergs), best of R, for
side-by-side runs of two checkouts (alternate the processes; PYTHONPATH picks the checkout):

    PYTHONPATH=CHECKOUT HPTE_CACHE_DIR=DIR .venv/bin/python bench/bench_iceberg_fifo.py N R

Prints M events/s. The first call per cache dir compiles the kernels (a 2,000-row warm-up,
excluded from the timing).
"""
import sys
import time

from hpte.engine.engine import Engine
from hpte.engine.gen import generate_flow

n = int(sys.argv[1])
R = int(sys.argv[2])
cols = generate_flow(n, seed=0)
Engine().submit({k: v[:2000] for k, v in cols.items()})   # warm-up / compile
best = 1e9
for _ in range(R):
    e = Engine()
    t = time.perf_counter()
    e.submit(cols)
    best = min(best, time.perf_counter() - t)
print(f"{n / best / 1e6:.3f} Mev/s")
