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
    """Run a command under /usr/bin/time: its wall time, user / system CPU time and peak RSS.
    (wait4's ru_maxrss is not used: a forked child counts the parent's pages until it execs,
    so it reports this process's RSS, not the command's.)"""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        t = time.perf_counter()
        p = subprocess.run(["/usr/bin/time", "-o", tf.name, "-f", "%U %S %M"] + args, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {p.stderr[-2000:]}")
        user, sys_, rss = tf.read().split()[-3:]
    return {"wall_s": wall, "user_s": float(user), "sys_s": float(sys_), "max_rss_mb": int(rss) / 1024,
            "stdout": p.stdout}


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


def _pcts(ts, cpu_ns: int = 0) -> dict:
    """Percentiles of per-call wall times (s), and the mean thread CPU time per call (us): on a
    shared machine the CPU time is the steadier figure (waiting for a core is not counted)."""
    a = np.array(ts) * 1e6
    return {"p50_us": float(np.percentile(a, 50)), "p90_us": float(np.percentile(a, 90)),
            "p99_us": float(np.percentile(a, 99)), "p999_us": float(np.percentile(a, 99.9)),
            "cpu_us_per_call": cpu_ns / len(ts) / 1e3}


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
        c0 = time.thread_time_ns()
        for b in rows:
            t = pc()
            eng.submit(b)
            ts.append(pc() - t)
        res[f"submit_one_row[{outputs}]"] = _pcts(ts, time.thread_time_ns() - c0)
        eng = Engine(outputs=outputs)
        eng.submit(pre)
        names = ["ts_ns", "order_id", "side", "price_ticks", "qty", "action", "order_type", "tif", "account", "symbol"]
        vals = [tuple(int(tail[k][i]) for k in names) for i in range(calls)]
        ts = []
        so = eng.submit_order
        c0 = time.thread_time_ns()
        for v in vals:
            t = pc()
            so(*v)
            ts.append(pc() - t)
        res[f"submit_order[{outputs}]"] = _pcts(ts, time.thread_time_ns() - c0)
    for k, v in res.items():
        print(f"latency {k:26s} p50 {v['p50_us']:6.2f} us  p90 {v['p90_us']:6.2f}  p99 {v['p99_us']:6.2f}  "
              f"p99.9 {v['p999_us']:7.2f}  thread CPU {v['cpu_us_per_call']:6.2f} us/call", flush=True)
    out["latency"] = res


def _match_time(cols, threads: int, batch: int, outputs: str = "fills"):
    """(wall s, thread CPU s of this thread) of submitting `cols` in batches to a fresh Engine;
    creating the books (the first batch's set-up) is included."""
    from hpte.engine.engine import Engine
    n = len(cols["ts_ns"])
    eng = Engine(threads=threads, outputs=outputs)
    t, c = time.perf_counter(), time.process_time()
    for a in range(0, n, batch):
        eng.submit({k: v[a:a + batch] for k, v in cols.items()}, copy=False)
    return time.perf_counter() - t, time.process_time() - c, eng


def section_books(out: dict, events: int = 2_000_000, batch: int = 65536, books=(1, 1000, 10_000),
                  threads=(1, 2), reps: int = 2) -> None:
    from hpte.engine.gen import generate_flow
    rows = []
    for nb in books:
        cols = generate_flow(events, n_books=nb, seed=0)
        _match_time({k: v[:50_000] for k, v in cols.items()}, 2, 8192)   # warm the parallel kernel too
        for t in threads:
            best = (1e30, 1e30, None)
            for _ in range(reps):
                w, c, eng = _match_time(cols, t, batch)
                best = min(best, (w, c, eng), key=lambda x: x[0])
            w, c, eng = best
            base = baseline_rate(generate_flow(events, n_books=1, seed=0)) if nb == 1 and t == 1 else None
            row = {"books": nb, "threads": t, "events_per_s": events / w, "per_thread_eps": events / w / t,
                   "cpu_s": c, "state_mb": eng.state_bytes() / 1e6, "resting": eng.store.resting(),
                   "baseline_eps": base}
            rows.append(row)
            print(f"books {nb:>6} threads {t}: {row['events_per_s'] / 1e6:6.2f} M/s "
                  f"({row['per_thread_eps'] / 1e6:.2f} M/s per thread), state {row['state_mb']:.1f} MB, "
                  f"{row['resting']:,} resting" + (f"; baseline book {base / 1e6:.2f} M/s" if base else ""), flush=True)
    single = {r["threads"]: r["events_per_s"] for r in rows if r["books"] == 1}
    for r in rows:
        r["per_thread_vs_single"] = r["per_thread_eps"] / single[1]
        one = next(x for x in rows if x["books"] == r["books"] and x["threads"] == 1)
        r["vs_one_thread"] = r["events_per_s"] / one["events_per_s"]
    for r in rows:
        print(f"books {r['books']:>6} threads {r['threads']}: per thread {r['per_thread_vs_single']:.2f}x single book, "
              f"{r['vs_one_thread']:.2f}x one thread", flush=True)
    out["books"] = rows


def section_memory(cols, out: dict) -> None:
    from hpte.engine.engine import Engine
    res = {}
    # empty books: 10,000 books created by cancels of unknown orders (nothing ever rests)
    e = Engine()
    e.submit({"ts_ns": np.zeros(1, np.int64), "order_id": np.ones(1, np.uint64), "side": np.ones(1, np.int8),
              "price_ticks": np.full(1, 100, np.int64), "qty": np.ones(1, np.int64), "action": np.ones(1, np.uint8)})
    b0 = e.state_bytes()
    k = 10_000
    e.submit({"ts_ns": np.ones(k, np.int64), "order_id": np.arange(k, dtype=np.uint64), "side": np.ones(k, np.int8),
              "price_ticks": np.full(k, 100, np.int64), "qty": np.ones(k, np.int64), "action": np.ones(k, np.uint8),
              "symbol": np.arange(1, k + 1, dtype=np.uint32)})
    res["empty_book_bytes"] = (e.state_bytes() - b0) / k
    # a book that held orders and is empty again
    e = Engine()
    e.submit({"ts_ns": np.array([0, 1], np.int64), "order_id": np.array([1, 1], np.uint64), "side": np.ones(2, np.int8),
              "price_ticks": np.full(2, 100, np.int64), "qty": np.ones(2, np.int64), "action": np.array([0, 1], np.uint8)})
    res["emptied_book_bytes"] = e.state_bytes()
    # the single-book flow: bytes per resting order at the end
    e = Engine(outputs="fills")
    for a in range(0, len(cols["ts_ns"]), 65536):
        e.submit({kk: v[a:a + 65536] for kk, v in cols.items()}, copy=False)
    res["flow_state_bytes"] = e.state_bytes()
    res["flow_resting"] = e.store.resting()
    res["flow_bytes_per_resting"] = e.state_bytes() / max(e.store.resting(), 1)
    bk = e.store.S.bk[0]
    from hpte.kernels import book as K
    res["flow_pool_slots"] = int(bk[K.F_PCAP])
    res["flow_ladder_levels"] = int(bk[K.F_NLEV])
    S = e.store.S
    # what one pool slot costs: the per-order arrays, plus the id table (2-4 entries a slot)
    from hpte.engine.book_state import POOL_ARRAYS
    res["pool_bytes_per_slot"] = sum(getattr(S, a).itemsize for a in POOL_ARRAYS if getattr(S, a).size)
    res["pool_bytes"] = sum(getattr(S, a).nbytes for a in POOL_ARRAYS)
    res["id_table_bytes"] = S.tab.nbytes
    res["ladder_bytes"] = sum(getattr(S, a).nbytes for a in ("lv_head", "lv_tail", "lv_qty", "lv_cnt", "bm0", "bm1"))
    res["flow_pool_shrinks"] = getattr(e.store, "shrinks", 0)
    # a pile-up that is cancelled: pools give their memory back (BookStore.maybe_shrink)
    e = Engine(outputs="fills")
    n = 200_000
    pile = {"ts_ns": np.arange(n, dtype=np.int64), "order_id": np.arange(1, n + 1, dtype=np.uint64),
            "side": np.where(np.arange(n) % 2, 1, -1).astype(np.int8),
            "price_ticks": (1000 + np.where(np.arange(n) % 2, -1, 1) * (1 + np.arange(n) % 50)).astype(np.int64),
            "qty": np.ones(n, np.int64)}
    e.submit(pile)
    res["pileup_resting"], res["pileup_state_bytes"] = e.store.resting(), e.state_bytes()
    keep = 5_000
    canc = dict(pile, ts_ns=np.full(n - keep, n, np.int64), order_id=pile["order_id"][keep:],
                side=pile["side"][keep:], price_ticks=pile["price_ticks"][keep:], qty=pile["qty"][keep:],
                action=np.ones(n - keep, np.uint8))
    e.submit(canc)
    res["after_cancel_resting"], res["after_cancel_state_bytes"] = e.store.resting(), e.state_bytes()
    res["after_cancel_bytes_per_resting"] = e.state_bytes() / max(e.store.resting(), 1)
    print("memory: " + ", ".join(f"{kk} {v:,.1f}" if isinstance(v, float) else f"{kk} {v:,}" for kk, v in res.items()), flush=True)
    out["memory"] = res


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
    if "memory" in only:
        section_memory(cols, out)
    if "books" in only:
        section_books(out)
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
