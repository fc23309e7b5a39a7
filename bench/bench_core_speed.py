"""Issue 10, "the core's speed as users see it": every figure beside the baseline book, in one run.

    python bench/bench_core_speed.py FLOW.parquet [--json out.json] [--only match,latency,...]

FLOW: a single-book order file of the FORMATS.md kind (``hpte gen FLOW -n 10000000``). On a
shared machine absolute figures swing; every section therefore runs the baseline book of
bench/baseline_book.py (a straightforward numba book, trades only) in the same run, just
before each measurement, and reports the ratio to it.

Sections:
  match    ``hpte match FLOW --fills F --json`` in a subprocess, as one batch and in batches of
           4,096 .. 1,048,576 rows: its ``events_per_s`` (time inside Engine.submit), the
           command's wall time, user and system time and peak RSS (wait4 rusage); and the
           kernel-only user path in this process (Engine(outputs="fills").submit(copy=False)).
  latency  Engine.submit of a one-row batch and Engine.submit_order: p50 / p99 per call.
  books    2,000,000 events over 1, 1,000 and 10,000 books (``generate_flow``), 1 and 2 threads.
  memory   book state: bytes per empty book and per resting order.
  risk     every limit configured, none hit, against the same flow without risk.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baseline_book import run_baseline  # noqa: E402

from hpte.engine.engine import Engine  # noqa: E402
from hpte.engine.io import read_orders  # noqa: E402

BATCHES = (None, 4096, 16384, 65536, 262144, 1048576)


def baseline_rate(cols, reps: int = 2) -> float:
    """Best of `reps` baseline runs, events/s."""
    n = len(cols["ts_ns"])
    best = 1e30
    for _ in range(reps):
        t = time.perf_counter()
        run_baseline(cols)
        best = min(best, time.perf_counter() - t)
    return n / best


def run_cmd(args: list[str]) -> dict:
    """Run a command; its wall time, user / system CPU time and peak RSS (from wait4)."""
    t = time.perf_counter()
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = p.stdout.read(), p.stderr.read()
    _pid, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    if status != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {err[-2000:]}")
    return {"wall_s": wall, "user_s": ru.ru_utime, "sys_s": ru.ru_stime, "max_rss_mb": ru.ru_maxrss / 1024,
            "stdout": out}


def section_match(flow: Path, cols, out: dict, batches=BATCHES) -> None:
    n = len(cols["ts_ns"])
    hpte = [sys.executable, "-m", "hpte"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        run_cmd(hpte + ["match", str(flow), "--fills", f"{tmp}/warm.parquet", "--batch-size", "100000"])
        for bs in batches:
            base = baseline_rate(cols)
            args = hpte + ["match", str(flow), "--fills", f"{tmp}/f.parquet", "--json"]
            if bs:
                args += ["--batch-size", str(bs)]
            r = run_cmd(args)
            s = json.loads(r.pop("stdout").strip().splitlines()[-1])
            # kernel-only user path, same process as the baseline
            eng = Engine(outputs="fills")
            t = time.perf_counter()
            step = bs or n
            for a in range(0, n, step):
                eng.submit({k: v[a:a + step] for k, v in cols.items()}, copy=False)
            inproc = n / (time.perf_counter() - t)
            row = {"batch": bs or "one", "baseline_eps": base, "match_eps": s["events_per_s"],
                   "ratio": s["events_per_s"] / base, "inproc_eps": inproc, "inproc_ratio": inproc / base,
                   "matching_s": s["seconds"], "wall_over_matching": r["wall_s"] / s["seconds"], **r,
                   "fills": s["fills"]}
            rows.append(row)
            print(f"match batch {row['batch']!s:>8}: hpte match {row['match_eps'] / 1e6:6.2f} M/s "
                  f"({row['ratio']:.2f}x baseline {base / 1e6:.2f} M/s); in-process {inproc / 1e6:6.2f} M/s "
                  f"({row['inproc_ratio']:.2f}x); wall {r['wall_s']:.2f} s = {row['wall_over_matching']:.1f}x "
                  f"matching; user {r['user_s']:.2f} s sys {r['sys_s']:.2f} s; peak RSS {r['max_rss_mb']:.0f} MB",
                  flush=True)
    out["match"] = rows


def _pcts(ts) -> dict:
    a = np.array(ts) * 1e6
    return {"p50_us": float(np.percentile(a, 50)), "p90_us": float(np.percentile(a, 90)),
            "p99_us": float(np.percentile(a, 99)), "p999_us": float(np.percentile(a, 99.9))}


def section_latency(cols, out: dict, calls: int = 20000, preload: int = 200_000) -> None:
    pre = {k: v[:preload] for k, v in cols.items()}
    tail = {k: v[preload:preload + calls] for k, v in cols.items()}
    res = {}
    for outputs in ("all", "fills"):
        eng = Engine(outputs=outputs)
        eng.submit(pre)
        rows = [{k: v[i:i + 1] for k, v in tail.items()} for i in range(calls)]
        ts = []
        pc = time.perf_counter
        for b in rows:
            t = pc()
            eng.submit(b)
            ts.append(pc() - t)
        res[f"submit_one_row[{outputs}]"] = _pcts(ts)
        eng = Engine(outputs=outputs)
        eng.submit(pre)
        names = ["ts_ns", "order_id", "side", "price_ticks", "qty", "action", "order_type", "tif", "account", "symbol"]
        vals = [tuple(int(tail[k][i]) for k in names) for i in range(calls)]
        ts = []
        so = eng.submit_order
        for v in vals:
            t = pc()
            so(*v)
            ts.append(pc() - t)
        res[f"submit_order[{outputs}]"] = _pcts(ts)
    for k, v in res.items():
        print(f"latency {k:26s} p50 {v['p50_us']:6.2f} us  p90 {v['p90_us']:6.2f}  p99 {v['p99_us']:6.2f}  "
              f"p99.9 {v['p999_us']:7.2f}", flush=True)
    out["latency"] = res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("flow", type=Path)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--only", default="match,latency")
    ap.add_argument("--batches", default=None, help="comma-separated batch sizes for `match` (0 = one batch)")
    a = ap.parse_args()
    cols = read_orders(a.flow)
    run_baseline({k: v[:10000] for k, v in cols.items()})     # compile / load the baseline
    Engine(outputs="fills").submit({k: v[:10000] for k, v in cols.items()})
    out: dict = {"flow": str(a.flow), "events": len(cols["ts_ns"]), "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                 "load_avg": os.getloadavg()}
    only = set(a.only.split(","))
    if "match" in only:
        bs = BATCHES if a.batches is None else tuple(int(x) or None for x in a.batches.split(","))
        section_match(a.flow, cols, out, bs)
    if "latency" in only:
        section_latency(cols, out)
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
