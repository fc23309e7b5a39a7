"""Events per second of several checkouts on one flow, alternating in one run.

    python bench/bench_checkouts.py CHECKOUT [CHECKOUT ...] [--events 2000000] [--rounds 5]
        [--repeats 2] [--algo fifo] [--json OUT]

For a change that must not slow the matching path down (issue 11: "fifo on flows without stops,
icebergs or GTD orders no slower than before"): every round starts one child process per
checkout (PYTHONPATH = that checkout, so each imports its own hpte; numba's cache lives in each
checkout's kernels/__pycache__ and a first warm-up round compiles it, untimed). A child builds
``generate_flow(N, seed=0)`` (FORMATS.md's benchmark flow, one book), warms up on a slice, then
times ``Engine(algo=...).submit(flow)`` as one batch on a fresh Engine, best of ``--repeats``
(perf_counter around submit). The order of the checkouts rotates from round to round, so a
noisy shared machine hurts each alike. Reports each checkout's best and median events/s and,
per checkout after the first, the median of the per-round ratios to the first checkout.
Nothing is written into the checkouts except numba's cache.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import sys, time, json
from hpte.engine.gen import generate_flow
from hpte.engine.engine import Engine
n, reps, algo = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
cols = generate_flow(n, seed=0)
small = {k: v[:20000] for k, v in cols.items()}
Engine(algo=algo).submit(small)
best = 1e30
for _ in range(reps):
    eng = Engine(algo=algo)
    t = time.perf_counter()
    res = eng.submit(cols)
    best = min(best, time.perf_counter() - t)
print(json.dumps({"events_per_s": n / best, "fills": int(res.fills["qty"].shape[0])}))
"""


def run_child(checkout: str, n: int, reps: int, algo: str) -> dict:
    env = dict(os.environ, PYTHONPATH=checkout)
    p = subprocess.run([sys.executable, "-c", CHILD, str(n), str(reps), algo], env=env,
                       capture_output=True, text=True, cwd=checkout)
    if p.returncode != 0:
        raise RuntimeError(f"{checkout}: child failed\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkouts", nargs="+")
    ap.add_argument("--events", type=int, default=2_000_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--algo", default="fifo")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    cks = [os.path.abspath(c) for c in a.checkouts]
    for c in cks:                          # warm-up: compiles each checkout's kernels, untimed
        run_child(c, 50_000, 1, a.algo)
    rates = {c: [] for c in cks}
    fills = {}
    for r in range(a.rounds):
        order = cks[r % len(cks):] + cks[:r % len(cks)]
        for c in order:
            out = run_child(c, a.events, a.repeats, a.algo)
            rates[c].append(out["events_per_s"])
            fills[c] = out["fills"]
        print(f"round {r}: " + "  ".join(f"{os.path.basename(c)} {rates[c][-1] / 1e6:.2f}M" for c in cks), flush=True)
    if len(set(fills.values())) != 1:
        raise SystemExit(f"checkouts disagree on the number of fills: {fills}")
    base = cks[0]
    summary = {}
    for c in cks:
        ratios = [x / y for x, y in zip(rates[c], rates[base])]
        summary[c] = {"best_events_per_s": max(rates[c]), "median_events_per_s": statistics.median(rates[c]),
                      "median_ratio_to_first": statistics.median(ratios),
                      "best_ratio_to_first": max(rates[c]) / max(rates[base]), "rounds": rates[c]}
        print(f"{c}: best {max(rates[c]) / 1e6:.2f}M ev/s, median {statistics.median(rates[c]) / 1e6:.2f}M, "
              f"median ratio to {os.path.basename(base)} {statistics.median(ratios):.3f}, "
              f"best/best {max(rates[c]) / max(rates[base]):.3f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"events": a.events, "algo": a.algo, "checkouts": summary}, f, indent=1)


if __name__ == "__main__":
    main()
