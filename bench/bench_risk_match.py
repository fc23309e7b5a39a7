"""Matching with every risk check and circuit breaker on, against matching without them, in one
process (ratios hold on a noisy machine).

The flow is the project's benchmark flow (``generate_flow``) over ``--books`` books and 5,000
accounts (Zipf). Three engines match the same flow in ``--batch``-row micro-batches, one thread:

- ``plain``: ``Engine()`` (the kernel built without risk: no check, no breaker code);
- ``bookkeeping``: ``Engine(risk=RiskLimits())``: the risk kernel with nothing configured (open
  orders, positions and P&L per account and symbol are still kept);
- ``all``: every limit of the issue and every breaker configured, loose enough that the flow is
  mostly accepted (the checks all run on every row; a few rows are rejected, and the breakers
  watch every trade).

Timed: the sum of ``Engine.submit`` calls (CPU time, process_time, and wall), best of
``--repeat`` rounds, the three engines interleaved within each round. numba compilation excluded
(warm-up first). Also: rejects by reason and breaker events of the ``all`` run, and the same
with the risk kernel profiled per part when ``--parts`` is given.

    .venv/bin/python bench/bench_risk_match.py [--events 2000000] [--books 4] [--repeat 3]

Profiling: ``perf record -F 4000 python bench/bench_risk_match.py --perf-map ...`` then ``perf
report --sort sym``: with ``--perf-map`` the script writes /tmp/perf-PID.map at the end, naming
the compiled kernels numba loaded from its cache (addresses from the JIT, sizes from the cached
object code via ``nm``), so perf shows ``match_seq_risk_cpu``, ``_risk_row_book``, ... instead of
bare addresses. Run it once without the flag first (kernels compiled in this process are not
mapped, only cached ones).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter

import numpy as np

_LIBS: list = []
if "--perf-map" in sys.argv:   # keep the object code of each kernel numba loads from its cache
    from numba.core import codegen as _cg

    _set = _cg.CPUCodeLibrary._set_compiled_object

    def _keep(self, value):
        _LIBS.append((self, value))
        return _set(self, value)

    _cg.CPUCodeLibrary._set_compiled_object = _keep

from hpte.engine import schema as S
from hpte.engine.engine import Engine
from hpte.engine.gen import generate_flow
from hpte.engine.risk.limits import RiskLimits

ALL = """
[defaults]
max_order_qty = 5_000
max_order_notional = 1_000_000_000
price_collar_bps = 2_000
max_open_orders = 1_000_000
max_position = 100_000_000
credit_limit = 1_000_000_000_000_000
max_orders_per_second = 1_000_000_000
[breakers]
band_bps = 1_000
band_window_ns = "1s"
limit_state_ns = "15s"
pause_ns = "1s"
velocity_ticks = 2_000
velocity_window_ns = "100ms"
auction_ns = "1s"
"""


def write_perf_map() -> int:
    """/tmp/perf-PID.map for the kernels loaded from numba's cache (see the module docstring).
    Returns the number of symbols written."""
    lines = []
    with tempfile.TemporaryDirectory() as d:
        for k, (lib, obj) in enumerate(_LIBS):
            path = os.path.join(d, f"lib{k}.o")
            with open(path, "wb") as f:
                f.write(obj)
            out = subprocess.run(["nm", "-S", "--defined-only", path], capture_output=True, text=True).stdout
            ee = lib._codegen._engine._ee
            for ln in out.splitlines():
                parts = ln.split()
                if len(parts) == 4 and parts[2] in "tTwW":
                    addr = ee.get_function_address(parts[3])
                    if addr:
                        lines.append(f"{addr:x} {int(parts[1], 16):x} {parts[3]}")
    with open(f"/tmp/perf-{os.getpid()}.map", "w") as f:
        f.write("\n".join(lines) + "\n")
    return len(lines)


def run(make, cols, batch: int):
    e = make()
    n = len(cols["ts_ns"])
    cpu = wall = 0.0
    outs = []
    for a in range(0, n, batch):
        b = {k: v[a:a + batch] for k, v in cols.items()}
        t0, c0 = time.perf_counter(), time.process_time()
        r = e.submit(b)
        wall += time.perf_counter() - t0
        cpu += time.process_time() - c0
        outs.append(r)
    return e, outs, cpu, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=2_000_000)
    ap.add_argument("--books", type=int, default=4)
    ap.add_argument("--batch", type=int, default=65_536)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default=None)
    ap.add_argument("--perf-map", action="store_true", help="write /tmp/perf-PID.map for perf (see above)")
    a = ap.parse_args()

    cols = generate_flow(a.events, n_books=a.books, seed=0)
    lim_all = RiskLimits.from_toml(ALL)
    engines = {"plain": lambda: Engine(), "bookkeeping": lambda: Engine(risk=RiskLimits()),
               "all": lambda: Engine(risk=lim_all)}
    warm = {k: v[:20_000] for k, v in cols.items()}
    for make in engines.values():
        run(make, warm, a.batch)
    best = {k: (float("inf"), float("inf")) for k in engines}
    last = {}
    for _ in range(a.repeat):
        for name, make in engines.items():
            e, outs, cpu, wall = run(make, cols, a.batch)
            best[name] = (min(best[name][0], cpu), min(best[name][1], wall))
            last[name] = (e, outs)
    # the plain and the risk kernels agree where risk changes nothing
    pf = np.concatenate([r.fills.raw for r in last["plain"][1]])
    bf = np.concatenate([r.fills.raw for r in last["bookkeeping"][1]])
    same = bool(np.array_equal(pf, bf))
    ev = np.concatenate([r.events.raw for r in last["all"][1]])
    rej = Counter(S.REASON_NAMES[int(c)] for c in ev[ev[:, 6] == S.EV_REJECTED, 7])
    brk = Counter(f"{S.EVENT_NAMES[int(c)]} ({S.REASON_NAMES[int(r)]})" for c, r in ev[np.isin(ev[:, 6], S.BREAKER_EVENTS)][:, 6:8])
    res = {
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
        "events": a.events, "books": a.books, "batch": a.batch,
        "cpu_s": {k: v[0] for k, v in best.items()}, "wall_s": {k: v[1] for k, v in best.items()},
        "events_per_s_cpu": {k: a.events / v[0] for k, v in best.items()},
        "ratio_cpu_vs_plain": {k: best[k][0] / best["plain"][0] for k in engines},
        "plain_equals_bookkeeping_fills": same,
        "all_rejects": dict(rej), "all_breaker_events": dict(brk),
        "all_fills": int(sum(r.fills.n_rows for r in last["all"][1])),
    }
    for k in engines:
        print(f"{k:<12} {res['events_per_s_cpu'][k] / 1e6:6.2f} M events/s (CPU)   "
              f"x{res['ratio_cpu_vs_plain'][k]:.3f} of plain")
    print("plain fills == bookkeeping fills:", same)
    print("all: rejects", dict(rej), "breakers", dict(brk), "fills", res["all_fills"])
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    if a.perf_map:
        print(f"perf map: {write_perf_map()} symbols in /tmp/perf-{os.getpid()}.map")


if __name__ == "__main__":
    main()
