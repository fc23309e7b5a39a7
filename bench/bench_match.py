"""Single-book matching throughput, batch-size-1 latency, memory and CLI start-up, in one run.

Everything that is compared is measured in this one process, so ratios hold on a noisy shared
machine. The flow is FORMATS.md's benchmark flow, ``generate_flow(N, seed=0)`` (one book,
arbitrary 64-bit order ids, 60% GTC / 30% cancel / 10% IOC).

1. Throughput: ``Engine().submit(flow)`` as one batch, and the same flow in batches of
   ``--batch`` rows; best of ``--repeats`` on a fresh Engine each, wall (perf_counter) and CPU
   (process_time); numba compile excluded (a warm-up on a small slice first). The batched
   outputs are checked identical (hashes of every output row, final L3 book) to the one-batch
   outputs.
2. Baseline: the plain-Python ReferenceEngine (tests/reference) on a ``--ref-events`` prefix, the
   engine on the same prefix (outputs checked identical), and the ratios.
3. Latency at batch size 1: a fresh Engine pre-loaded with ``--lat-preload`` events, then the next
   ``--lat-events`` events one row per ``submit`` call (rows sliced beforehand), each call timed
   with perf_counter_ns. This is the whole Python ``submit`` call (column checks, book lookup,
   output allocation, kernel, result wrapping), not the kernel alone.
4. Memory: book state bytes per resting order and per pool slot at the end of the full run; peak
   RSS (ru_maxrss) of this process and of a subprocess that only generates + matches N events.
5. Start-up: wall time of ``hpte match SMALL.parquet --fills F.parquet --json`` (10,000 events)
   as a subprocess: with an empty numba cache (compiles), again with that cache (warm), and with
   the default cache; plus ``hpte --help`` (import floor).

    .venv/bin/python bench/bench_match.py [--events 10000000] [--quick] [--json OUT]

Nothing is written into the repository (temporary directories only; numba's own cache aside).
"""
from __future__ import annotations

import argparse
import gc
import hashlib
import importlib.util
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# helpers
def _rss_peak_kib() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux


def _vm_hwm_kib() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _slice(cols: dict, i0: int, i1: int) -> dict:
    return {k: v[i0:i1] for k, v in cols.items()}


def _timed(fn):
    gc.collect()
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    w1, c1 = time.perf_counter(), time.process_time()
    return out, w1 - w0, c1 - c0


def _fmt_rate(x: float) -> str:
    return f"{x / 1e6:8.3f} M/s"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _load_reference():
    path = REPO / "tests" / "reference" / "matcher.py"
    spec = importlib.util.spec_from_file_location("_hpte_ref_matcher", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod.ReferenceEngine


def _hash_rows(h, rows) -> None:
    raw = np.ascontiguousarray(rows.raw)
    h.update(raw.data if raw.size else b"")


def _columns_equal(a, b) -> bool:
    """a, b: mappings of columns (engine Rows or reference dicts)."""
    if set(a) != set(b):
        return False
    return all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in a)


# ---------------------------------------------------------------------------------------------
# --rss-only: generate + match, nothing else (peak RSS of the full run in isolation)
def rss_only(n: int, seed: int) -> dict:
    from hpte.engine.engine import Engine
    from hpte.engine.gen import generate_flow

    r0, h0 = _rss_peak_kib(), _vm_hwm_kib()
    t0 = time.perf_counter()
    flow = generate_flow(n, seed=seed)
    t1 = time.perf_counter()
    r_gen, h_gen = _rss_peak_kib(), _vm_hwm_kib()
    eng = Engine()
    res = eng.submit(flow)
    t2 = time.perf_counter()
    return {"events": n, "rss_start_kib": r0, "rss_peak_after_gen_kib": r_gen,
            "rss_peak_after_match_kib": _rss_peak_kib(), "vmhwm_start_kib": h0,
            "vmhwm_after_gen_kib": h_gen, "vmhwm_after_match_kib": _vm_hwm_kib(),
            "grow": dict(eng.grow_counts), "gen_s": t1 - t0,
            "match_s_incl_compile_or_cache_load": t2 - t1, "trades": res.fills.n_rows,
            "resting": eng.store.resting()}


# ---------------------------------------------------------------------------------------------
def _time_grows(eng) -> dict:
    """Wrap eng._grow (instance attribute) to add up the seconds spent growing storage."""
    acc = {"grow_s": 0.0}
    inner = eng._grow

    def grow(*args):
        t = time.perf_counter()
        try:
            return inner(*args)
        finally:
            acc["grow_s"] += time.perf_counter() - t

    eng._grow = grow
    return acc


def bench_throughput(flow: dict, n: int, repeats: int, batch: int, out: dict) -> "tuple":
    from hpte.engine.engine import Engine

    # warm-up: compile (or load from numba's cache) every kernel submit uses, on a small slice
    w0 = time.perf_counter()
    e = Engine()
    e.submit(_slice(flow, 0, min(n, 20_000)))
    e.submit(_slice(flow, min(n, 20_000), min(n, 20_001)))
    e.book_levels()
    e.book_l3()
    out["warmup_s"] = time.perf_counter() - w0
    del e

    # one whole batch
    whole = []
    eng = res = None
    for _ in range(repeats):
        eng = res = None
        gc.collect()
        eng = Engine()
        acc = _time_grows(eng)
        res, w, c = _timed(lambda: eng.submit(flow))
        whole.append({"wall_s": w, "cpu_s": c, "grow": dict(eng.grow_counts), "grow_s": acc["grow_s"]})
    bw = min(r["wall_s"] for r in whole)
    bc = min(r["cpu_s"] for r in whole)
    out["whole_batch"] = {"repeats": whole, "best_wall_s": bw, "best_cpu_s": bc,
                          "events_per_s_wall": n / bw, "events_per_s_cpu": n / bc}

    # in batches of `batch` rows (views prepared beforehand)
    parts = [_slice(flow, i, min(n, i + batch)) for i in range(0, n, batch)]
    batched = []
    for _ in range(repeats):
        gc.collect()
        e2 = Engine()
        acc2 = _time_grows(e2)

        def run(e2=e2):
            nf = ne = nd = 0
            for p in parts:
                r = e2.submit(p)
                nf += r.fills.n_rows
                ne += r.events.n_rows
                nd += r.deltas.n_rows
            return nf, ne, nd

        counts, w, c = _timed(run)
        batched.append({"wall_s": w, "cpu_s": c, "fills": counts[0], "events": counts[1],
                        "deltas": counts[2], "grow": dict(e2.grow_counts),
                        "grow_s": acc2["grow_s"]})
        del e2
    bw2 = min(r["wall_s"] for r in batched)
    bc2 = min(r["cpu_s"] for r in batched)
    out["batched"] = {"batch_rows": batch, "n_batches": len(parts), "repeats": batched,
                      "best_wall_s": bw2, "best_cpu_s": bc2,
                      "events_per_s_wall": n / bw2, "events_per_s_cpu": n / bc2}

    # determinism check (untimed): batched outputs == one-batch outputs, row for row
    hw = [hashlib.sha1() for _ in range(3)]
    for h, rows in zip(hw, (res.fills, res.events, res.deltas)):
        _hash_rows(h, rows)
    hb = [hashlib.sha1() for _ in range(3)]
    e3 = Engine()
    for p in parts:
        r = e3.submit(p)
        for h, rows in zip(hb, (r.fills, r.events, r.deltas)):
            _hash_rows(h, rows)
    same_out = all(a.digest() == b.digest() for a, b in zip(hw, hb))
    same_book = _columns_equal(eng.book_l3(), e3.book_l3())
    out["batched"]["identical_to_whole_batch"] = bool(same_out and same_book)
    del e3, parts
    return eng, res


def book_stats(eng, res, gen_stats, out: dict) -> None:
    from hpte.kernels import book as K

    fills, events, deltas = res.fills, res.events, res.deltas
    resting = eng.store.resting()
    lv = eng.book_levels()
    touched = int(np.unique(deltas["price_ticks"]).size) if deltas.n_rows else 0
    sb = eng.state_bytes()
    St = eng.store.S
    pcap = int(St.bk[:, K.F_PCAP].sum())
    nlev = int(St.bk[:, K.F_NLEV].sum())
    tsize = int((St.bk[:, K.F_TMASK] + 1).sum())
    out["book"] = {
        "trades": fills.n_rows, "traded_qty": int(fills["qty"].sum()) if fills.n_rows else 0,
        "events_rows": events.n_rows, "delta_rows": deltas.n_rows,
        "resting_end": resting, "levels_end": int(lv["price_ticks"].size),
        "levels_touched": touched,
        "generator_says": {"trades": gen_stats.trades, "resting_end": gen_stats.resting_end,
                           "levels_touched": gen_stats.levels_touched},
    }
    out["memory"] = {
        "state_bytes": sb, "resting": resting, "pool_slots": pcap, "ladder_levels": nlev,
        "id_table_slots": tsize,
        "bytes_per_resting_order": sb / resting if resting else None,
        "bytes_per_pool_slot": sb / pcap if pcap else None,
        "state_arrays_bytes": {f: int(getattr(St, f).nbytes) for f in St._fields},
        "output_bytes_whole_batch": int(fills.raw.nbytes + events.raw.nbytes + deltas.raw.nbytes),
    }


def bench_reference(flow: dict, n_ref: int, repeats: int, out: dict) -> None:
    from hpte.engine.engine import Engine

    ReferenceEngine = _load_reference()
    pre = {k: v[:n_ref].copy() for k, v in flow.items()}
    ref_runs = []
    ref_res = None
    for _ in range(repeats):
        ref = ReferenceEngine()
        ref_res, w, c = _timed(lambda: ref.submit(pre))
        ref_runs.append({"wall_s": w, "cpu_s": c})
    eng_runs = []
    eng_res = None
    for _ in range(repeats):
        e = Engine()
        eng_res, w, c = _timed(lambda: e.submit(pre))
        eng_runs.append({"wall_s": w, "cpu_s": c})
    same = all(_columns_equal(getattr(eng_res, s), getattr(ref_res, s))
               for s in ("fills", "events", "deltas"))
    rw = min(r["wall_s"] for r in ref_runs)
    rc = min(r["cpu_s"] for r in ref_runs)
    ew = min(r["wall_s"] for r in eng_runs)
    ec = min(r["cpu_s"] for r in eng_runs)
    out["reference"] = {
        "events": n_ref, "ref_repeats": ref_runs, "engine_repeats": eng_runs,
        "ref_events_per_s_wall": n_ref / rw, "ref_events_per_s_cpu": n_ref / rc,
        "engine_prefix_events_per_s_wall": n_ref / ew, "engine_prefix_events_per_s_cpu": n_ref / ec,
        "outputs_identical": bool(same), "ref_trades": int(len(ref_res.fills["seq"])),
    }


def bench_latency(flow: dict, n: int, preload: int, n_lat: int, out: dict) -> None:
    from hpte.engine.engine import Engine

    preload = min(preload, max(n - 1, 0))
    n_lat = min(n_lat, n - preload)
    if n_lat <= 0:
        out["latency"] = {"skipped": "flow too short"}
        return
    eng = Engine()
    eng.submit(_slice(flow, 0, preload))
    rows = [{k: v[i:i + 1].copy() for k, v in flow.items()} for i in range(preload, preload + n_lat)]
    ns = np.empty(n_lat, np.int64)
    trades = 0
    pc = time.perf_counter_ns
    submit = eng.submit
    gc.collect()
    for j, r in enumerate(rows):
        t0 = pc()
        res = submit(r)
        ns[j] = pc() - t0
        trades += res.fills.n_rows
    # cost of the timer pair itself
    tm = np.empty(n_lat, np.int64)
    for j in range(n_lat):
        t0 = pc()
        tm[j] = pc() - t0
    # the scalar one-order entry point, same rows, fresh engine with the same preload
    from hpte.engine import schema as S

    eng2 = Engine()
    eng2.submit(_slice(flow, 0, preload))
    names = [c[0] for c in S.ORDER_COLUMNS]
    tuples = [tuple(int(flow[k][i]) for k in names) for i in range(preload, preload + n_lat)]
    ns2 = np.empty(n_lat, np.int64)
    submit_order = eng2.submit_order
    gc.collect()
    for j, t in enumerate(tuples):
        t0 = pc()
        submit_order(*t)
        ns2[j] = pc() - t0
    q2 = np.percentile(ns2 / 1e3, [50, 90, 99, 99.9])
    out["latency_submit_order"] = {"p50_us": q2[0], "p90_us": q2[1], "p99_us": q2[2], "p999_us": q2[3],
                                   "mean_us": float(ns2.mean() / 1e3)}
    us = ns / 1e3
    q = np.percentile(us, [50, 90, 99, 99.9])
    out["latency"] = {
        "preload_events": preload, "timed_calls": n_lat, "trades_in_timed": trades,
        "p50_us": q[0], "p90_us": q[1], "p99_us": q[2], "p999_us": q[3],
        "mean_us": float(us.mean()), "max_us": float(us.max()), "min_us": float(us.min()),
        "timer_overhead_p50_us": float(np.median(tm) / 1e3),
        "calls_per_s": n_lat / (ns.sum() / 1e9),
    }


def bench_startup(out: dict) -> None:
    exe = Path(sys.executable).parent / "hpte"
    hpte = str(exe) if exe.exists() else shutil.which("hpte")
    res: dict = {}
    out["startup"] = res
    if hpte is None:
        res["skipped"] = "hpte match not available (no hpte command)"
        return
    chk = subprocess.run([hpte, "match", "--help"], capture_output=True, text=True)
    if chk.returncode != 0:
        res["skipped"] = "hpte match not available"
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hpte.engine.gen import generate_flow

    with tempfile.TemporaryDirectory(prefix="hpte_bench_match_") as td:
        tdp = Path(td)
        small = tdp / "small.parquet"
        pq.write_table(pa.table(generate_flow(10_000, seed=0)), small)
        cache = tdp / "numba_cache"
        cache.mkdir()

        def run(tag, env_extra):
            env = dict(os.environ, **env_extra)
            fills = tdp / f"fills_{tag}.parquet"
            t0 = time.perf_counter()
            p = subprocess.run([hpte, "match", str(small), "--fills", str(fills), "--json"],
                               capture_output=True, text=True, env=env, cwd=td)
            w = time.perf_counter() - t0
            rec = {"wall_s": w, "rc": p.returncode}
            if p.returncode != 0:
                rec["stderr_tail"] = p.stderr[-2000:]
            else:
                try:
                    rec["json"] = json.loads(p.stdout)
                except ValueError:
                    rec["stdout_tail"] = p.stdout[-500:]
            return rec

        res["events"] = 10_000
        res["empty_cache_1st"] = run("cold", {"NUMBA_CACHE_DIR": str(cache)})
        res["same_cache_2nd"] = run("warm", {"NUMBA_CACHE_DIR": str(cache)})
        res["default_cache"] = run("default", {})
        t0 = time.perf_counter()
        subprocess.run([hpte, "--help"], capture_output=True)
        res["hpte_help_wall_s"] = time.perf_counter() - t0


def bench_rss_subprocess(n: int, seed: int, out: dict) -> None:
    p = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--rss-only",
                        "--events", str(n), "--seed", str(seed)], capture_output=True, text=True)
    if p.returncode != 0:
        out["rss_subprocess"] = {"error": p.stderr[-2000:]}
        return
    out["rss_subprocess"] = json.loads(p.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
def report(out: dict) -> str:
    L = []
    a = L.append
    m = out["machine"]
    a(f"hpte bench_match: {out['events']:,} events, seed {out['seed']}, single book  "
      f"[{m['machine']}, {m['nproc']} CPUs, {m['cpu']}, numba {m['numba']}, numpy {m['numpy']}]")
    a(f"  flow generation {out['gen_s']:.2f} s; numba warm-up (compile/cache load) {out['warmup_s']:.2f} s")
    a("")
    wb, bt, rf = out["whole_batch"], out["batched"], out["reference"]
    a("%-46s%12s%16s%16s" % ("throughput (best of %d)" % out["repeats"], "wall", "events/s wall", "events/s CPU"))

    def line(label, wall, rw, rc):
        a("%-46s%10.4f s%16s%16s" % (label, wall, _fmt_rate(rw), _fmt_rate(rc)))

    line("  engine, one batch of {:,}".format(out["events"]), wb["best_wall_s"],
         wb["events_per_s_wall"], wb["events_per_s_cpu"])
    line("  engine, batches of {:,} ({} calls)".format(bt["batch_rows"], bt["n_batches"]),
         bt["best_wall_s"], bt["events_per_s_wall"], bt["events_per_s_cpu"])
    line("  engine, first {:,} events, one batch".format(rf["events"]),
         min(r["wall_s"] for r in rf["engine_repeats"]),
         rf["engine_prefix_events_per_s_wall"], rf["engine_prefix_events_per_s_cpu"])
    line("  ReferenceEngine (plain Python), same {:,}".format(rf["events"]),
         min(r["wall_s"] for r in rf["ref_repeats"]),
         rf["ref_events_per_s_wall"], rf["ref_events_per_s_cpu"])
    a("  ratio engine (one batch of {:,}) / reference: {:.1f}x wall; engine (same prefix) / "
      "reference: {:.1f}x".format(out["events"], out["ratio_engine_over_reference"],
                                  out["ratio_prefix_engine_over_reference"]))
    a("  (the first repeat of a kind runs on memory this process has not touched before; page-faulting"
      " fresh pages is slow here, which is why best-of is reported)")
    a("  every repeat, wall s: one batch " + ", ".join("%.3f" % r["wall_s"] for r in wb["repeats"])
      + "; batched " + ", ".join("%.3f" % r["wall_s"] for r in bt["repeats"]))
    a(f"  batched outputs + final book identical to one batch: {bt['identical_to_whole_batch']}; "
      f"engine == reference on the prefix (fills, events, deltas): {rf['outputs_identical']}")
    a("  seconds in Engine._grow (pool/ladder relayout, output buffer copy) per repeat: one batch "
      + ", ".join("%.3f" % r["grow_s"] for r in wb["repeats"]) + "; batched "
      + ", ".join("%.3f" % r["grow_s"] for r in bt["repeats"]))
    a(f"  storage grows, one batch: {wb['repeats'][-1]['grow']}; batched: {bt['repeats'][-1]['grow']}")
    a("")
    b = out["book"]
    g = b["generator_says"]
    a(f"book after {out['events']:,} events: trades {b['trades']:,} (generator {g['trades']:,}), "
      f"traded qty {b['traded_qty']:,}")
    a(f"  resting orders {b['resting_end']:,} (generator {g['resting_end']:,}); levels now {b['levels_end']:,}; "
      f"levels touched {b['levels_touched']:,} (generator {g['levels_touched']:,})")
    a(f"  output rows: fills {b['trades']:,}, events {b['events_rows']:,}, deltas {b['delta_rows']:,}")
    a("")
    lt = out["latency"]
    if "skipped" in lt:
        a(f"latency: skipped ({lt['skipped']})")
    else:
        a(f"latency, batch size 1 (whole Python Engine.submit call, incl. input checks, output "
          f"allocation and result wrapping; {lt['preload_events']:,} events preloaded, "
          f"{lt['timed_calls']:,} calls, {lt['trades_in_timed']:,} trades):")
        a(f"  p50 {lt['p50_us']:.2f} us   p90 {lt['p90_us']:.2f} us   p99 {lt['p99_us']:.2f} us   "
          f"p99.9 {lt['p999_us']:.2f} us   max {lt['max_us']:.1f} us   mean {lt['mean_us']:.2f} us   "
          f"({lt['calls_per_s']:,.0f} calls/s; timer pair {lt['timer_overhead_p50_us']:.3f} us)")
        l2 = out["latency_submit_order"]
        a(f"  Engine.submit_order (scalar one-order entry, same rows): p50 {l2['p50_us']:.2f} us   "
          f"p90 {l2['p90_us']:.2f} us   p99 {l2['p99_us']:.2f} us   p99.9 {l2['p999_us']:.2f} us   "
          f"mean {l2['mean_us']:.2f} us")
    a("")
    mm = out["memory"]
    a(f"memory: book state {mm['state_bytes']:,} B = {mm['bytes_per_resting_order']:.0f} B per resting order "
      f"({mm['resting']:,}); {mm['bytes_per_pool_slot']:.0f} B per pool slot ({mm['pool_slots']:,} slots, "
      f"{mm['ladder_levels']:,} ladder levels, {mm['id_table_slots']:,} id-table slots)")
    big = sorted(mm["state_arrays_bytes"].items(), key=lambda kv: -kv[1])
    a("  state arrays: " + ", ".join(f"{k} {v / 1024:.0f} KiB" for k, v in big if v))
    a(f"  one-batch output buffers: {mm['output_bytes_whole_batch'] / 2**20:,.0f} MiB")
    rs = out.get("rss_subprocess", {})
    if "error" in rs:
        a(f"  peak RSS subprocess: error: {rs['error'][-300:]}")
    elif rs:
        a(f"  peak RSS, subprocess that only generates + matches {rs['events']:,} (one batch): "
          f"ru_maxrss {rs['rss_peak_after_match_kib'] / 1024:,.0f} MiB (after generating "
          f"{rs['rss_peak_after_gen_kib'] / 1024:,.0f} MiB, at start {rs['rss_start_kib'] / 1024:,.0f} MiB); "
          f"VmHWM {rs['vmhwm_after_match_kib'] / 1024:,.0f} MiB (after generating "
          f"{rs['vmhwm_after_gen_kib'] / 1024:,.0f}, at start {rs['vmhwm_start_kib'] / 1024:,.0f}); "
          f"match {rs['match_s_incl_compile_or_cache_load']:.2f} s incl. kernel load, grows {rs['grow']}")
    a(f"  peak RSS of this whole benchmark process: {out['rss_peak_this_process_kib'] / 1024:,.0f} MiB")
    a("")
    su = out["startup"]
    if "skipped" in su:
        a(f"start-up: skipped: {su['skipped']}")
    else:
        def one(r):
            s = f"{r['wall_s']:.2f} s"
            return s if r["rc"] == 0 else s + f" (rc {r['rc']}: {r.get('stderr_tail', '')[-200:]!r})"
        a(f"start-up, `hpte match SMALL.parquet --fills F.parquet --json` ({su['events']:,} events), wall:")
        a(f"  empty numba cache (compiles): {one(su['empty_cache_1st'])};  same cache again: "
          f"{one(su['same_cache_2nd'])};  default cache: {one(su['default_cache'])};  "
          f"`hpte --help`: {su['hpte_help_wall_s']:.2f} s")
    return "\n".join(L)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=None, help="flow length (default 10,000,000; --quick 1,000,000)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", type=Path, default=None, help="write every figure to this JSON file")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=65_536)
    ap.add_argument("--ref-events", type=int, default=50_000)
    ap.add_argument("--lat-preload", type=int, default=200_000)
    ap.add_argument("--lat-events", type=int, default=20_000)
    ap.add_argument("--no-subprocess", action="store_true", help="skip the RSS and start-up subprocesses")
    ap.add_argument("--rss-only", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    n = a.events if a.events is not None else (1_000_000 if a.quick else 10_000_000)

    if a.rss_only:
        print(json.dumps(rss_only(n, a.seed)))
        return 0

    import numba

    from hpte.engine.gen import generate_flow_stats

    out: dict = {"events": n, "seed": a.seed, "repeats": a.repeats, "argv": sys.argv[1:],
                 "machine": {"machine": platform.machine(), "nproc": os.cpu_count(), "cpu": _cpu_model(),
                             "python": platform.python_version(), "numpy": np.__version__,
                             "numba": numba.__version__}}
    if not a.no_subprocess:
        # first, while this process is still small: a forked child's ru_maxrss starts at the
        # parent's RSS on Linux (VmHWM, per address space, does not)
        bench_rss_subprocess(n, a.seed, out)
        print("rss subprocess done", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    flow, gen_stats = generate_flow_stats(n, seed=a.seed)
    out["gen_s"] = time.perf_counter() - t0
    print(f"generated {n:,} events in {out['gen_s']:.1f} s", file=sys.stderr, flush=True)

    eng, res = bench_throughput(flow, n, a.repeats, a.batch, out)
    book_stats(eng, res, gen_stats, out)
    del eng, res
    gc.collect()
    print("throughput done", file=sys.stderr, flush=True)

    bench_reference(flow, min(a.ref_events, n), a.repeats, out)
    out["ratio_engine_over_reference"] = (out["whole_batch"]["events_per_s_wall"]
                                          / out["reference"]["ref_events_per_s_wall"])
    out["ratio_prefix_engine_over_reference"] = (out["reference"]["engine_prefix_events_per_s_wall"]
                                                 / out["reference"]["ref_events_per_s_wall"])
    print("reference done", file=sys.stderr, flush=True)
    bench_latency(flow, n, a.lat_preload, a.lat_events, out)
    print("latency done", file=sys.stderr, flush=True)
    out["rss_peak_this_process_kib"] = _rss_peak_kib()
    del flow
    gc.collect()

    if a.no_subprocess:
        out["startup"] = {"skipped": "--no-subprocess"}
    else:
        bench_startup(out)

    print(report(out))
    if a.json is not None:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(out, indent=2, default=float))
        print(f"\nwrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
