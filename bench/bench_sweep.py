"""Sweep benchmark: the ``ma_cross`` strategy over a grid of moving-average pairs on a geometric
random walk, side by side in one run (issue 13's workload by default: 1,000,000 bars, fast
5..100 step 5 x slow 110..600 step 10 = 1,000 pairs).

    python bench/bench_sweep.py                      # CPU: hpte, fused numba kernel, vectorbt, Dask
    python bench/bench_sweep.py --device gpu         # + hpte's CUDA driver (needs a GPU)
    PYTHONPATH=. python3 bench/bench_sweep.py --device gpu   # from a checkout, nothing installed

Rows (each the best of ``--repeat`` timed runs after a warm-up that compiles):

* hpte cpu: ``hpte.sweep`` (the general strategy interface, metrics included), in process;
* fused: a hand-written numba ``prange`` kernel of the same strategy (total return only), the
  baseline the issue names; the ratio hpte / fused is in the same run;
* vectorbt (where installed): ``MA.run`` + ``crossed_above`` + ``Portfolio.from_signals`` on a
  subset of the pairs (vectorbt holds a float64 array per pair and bar); rates are per
  bar-parameter step, so the subset is comparable;
* dask: ``hpte.sweep(cluster="local")`` with 2 worker processes against in-process, the same grid;
* hpte gpu (``--device gpu``): the CUDA driver, data resident on the device, results copied back.

Every row's total returns are checked against hpte cpu's (vectorbt and fused to 1e-9; the GPU
to 1e-9). Speeds are bar-parameter steps per second (bars x parameter sets / seconds).

The tick-level sweep (``--ticks N``, issue 13): N market-maker parameter sets over the real AMZN
LOBSTER day (half_spread x size x max_position), in process (``prange`` over the sets on one
decoded stream) beside N single ``hpte.backtest`` runs of a subset in the same process (the
per-set cost without the sweep), on a Dask local cluster and, with ``--device gpu``, on the GPU
(one CUDA thread per set; rows checked against the CPU's); figures are set-events per second
(market events x parameter sets / seconds); rows checked equal to the single backtests.

    python bench/bench_sweep.py --ticks 1000 --no-bars

The impact-mode tick sweep (``--impact N``): N market-maker sets over the AMZN day, every set
in its own simulated book, on 1 and on 2 threads, beside the no-impact tick sweep of the same
grid in the same run (set-events per second), rows checked equal across thread counts and to
single ``hpte.backtest(mode="impact")`` runs (``--singles``); ``--impact-dask`` adds a Dask
local cluster of 2 worker processes.

    python bench/bench_sweep.py --impact 16 --no-bars
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # run from a checkout

from numba import njit, prange  # noqa: E402


@njit(cache=True, parallel=True, nogil=True)
def fused_ma_cross(cs, close, fasts, slows, out):
    """The strategy fused by hand: vectorbt's rolling means from the running sum ``cs``,
    crossed_above / crossed_below state in registers, whole-equity entries at the close."""
    n = close.shape[0]
    for k in prange(fasts.shape[0]):
        wf = int(fasts[k])
        ws = int(slows[k])
        cash = 100.0
        pos = 0.0
        wb = False
        ra = False
        wa = False
        rb = False
        for i in range(n):
            if i + 1 < wf or i + 1 < ws:
                wb = ra = wa = rb = False
                continue
            f = cs[i] / wf if i < wf else (cs[i] - cs[i - wf]) / wf
            s = cs[i] / ws if i < ws else (cs[i] - cs[i - ws]) / ws
            if f > s:
                if wb and not ra and pos == 0.0:
                    pos = cash / close[i]
                    cash = 0.0
                if wb:
                    ra = True
                wa = True
                rb = False
            elif f == s:
                ra = False
                rb = False
            else:
                if wa and not rb and pos > 0.0:
                    cash = pos * close[i]
                    pos = 0.0
                if wa:
                    rb = True
                wb = True
                ra = False
        out[k] = (cash + pos * close[n - 1]) / 100.0 - 1.0


def best_of(fn, repeat):
    times = []
    res = None
    for _ in range(repeat):
        t = time.perf_counter()
        res = fn()
        times.append(time.perf_counter() - t)
    return min(times), res


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                cpu = ln.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    ap.add_argument("--bars", type=int, default=1_000_000)
    ap.add_argument("--fast", default="5:100:5")
    ap.add_argument("--slow", default="110:600:10")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--vbt-pairs", type=int, default=10, help="pairs vectorbt runs (a subset; 0: skip)")
    ap.add_argument("--no-dask", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the figures as JSON")
    ap.add_argument("--ticks", type=int, default=0, help="also the tick-level sweep: N market-maker sets over the AMZN day")
    ap.add_argument("--singles", type=int, default=4, help="single backtests timed beside the tick sweep")
    ap.add_argument("--impact", type=int, default=0, help="also the impact-mode tick sweep: N market-maker sets "
                                                          "over the AMZN day, 1 vs 2 threads, beside no-impact")
    ap.add_argument("--impact-events", type=int, default=0, help="only the first N events of the day (0: all)")
    ap.add_argument("--impact-dask", action="store_true", help="also the impact sweep on a Dask local cluster")
    ap.add_argument("--no-bars", action="store_true", help="skip the ma_cross section")
    a = ap.parse_args(argv)
    if a.ticks:
        tick_section(a)
    if a.impact:
        impact_section(a)
    if a.no_bars:
        return 0

    import numba

    from hpte.engine.sweep import sweep
    from hpte.engine.sweep.data import random_walk
    from hpte.engine.sweep.grid import parse_range

    close = random_walk(a.bars, a.seed)
    cs = np.cumsum(close)
    fa, sl = parse_range("fast", a.fast), parse_range("slow", a.slow)
    F, S = (x.ravel().copy() for x in np.meshgrid(fa, sl, indexing="ij"))
    K, n = len(F), a.bars
    params = {"fast": a.fast, "slow": a.slow}
    print(f"ma_cross sweep: {n:,} bars x {K:,} pairs ({len(fa)} fast x {len(sl)} slow) = {n * K / 1e9:.2f} G steps; "
          f"{machine()}; numba {numba.__version__}, {numba.get_num_threads()} threads")
    rows = {}

    def report(name, secs, sets, ref_ratio=None, note=""):
        rate = sets * n / secs
        rows[name] = {"seconds": secs, "sets": sets, "steps_per_s": rate, "note": note}
        extra = f"  {ref_ratio}" if ref_ratio else ""
        print(f"  {name:<28} {secs:9.3f} s  {rate / 1e6:10.1f} M steps/s{extra}  {note}")

    # ---- hpte in process (CPU)
    sweep("ma_cross", close[:1000], params={"fast": "5:6", "slow": "110"})        # compile / load
    t_cpu, res = best_of(lambda: sweep("ma_cross", close, params=params), a.repeat)
    hp = res.table["total_return"]
    report("hpte cpu (in process)", t_cpu, K)

    # ---- fused hand-written kernel
    out = np.zeros(K)
    fused_ma_cross(cs[:300], close[:300], F[:2], S[:2], out[:2])
    t_fused, _ = best_of(lambda: fused_ma_cross(cs, close, F, S, out), a.repeat)
    dmax = float(np.max(np.abs(out - hp)))
    report("fused numba prange kernel", t_fused, K, note=f"max |total return - hpte| {dmax:.1e}")
    print(f"  -> hpte cpu / fused kernel speed: {t_fused / t_cpu:.2f}x")

    # ---- vectorbt on a subset
    if a.vbt_pairs > 0:
        try:
            import pandas as pd
            import vectorbt as vbt
        except Exception as e:  # noqa: BLE001
            print(f"  vectorbt: not installed here ({type(e).__name__}); skipped")
        else:
            idx = np.linspace(0, K - 1, min(a.vbt_pairs, K)).astype(int)
            s = pd.Series(close)

            def run_vbt():
                fm = vbt.MA.run(s, [int(F[i]) for i in idx], short_name="fast")
                sm = vbt.MA.run(s, [int(S[i]) for i in idx], short_name="slow")
                ent = fm.ma_crossed_above(sm)
                ex = fm.ma_crossed_below(sm)
                pf = vbt.Portfolio.from_signals(s, ent, ex, init_cash=100.0)
                return np.asarray(pf.total_return())

            run_vbt()
            t_vbt, vr = best_of(run_vbt, max(1, min(a.repeat, 2)))
            dv = float(np.max(np.abs(vr - hp[idx])))
            report(f"vectorbt {vbt.__version__} ({len(idx)} pairs)", t_vbt, len(idx),
                   note=f"max |total return - hpte| {dv:.1e}")
            print(f"  -> hpte cpu / vectorbt speed (per step): "
                  f"{rows['hpte cpu (in process)']['steps_per_s'] / rows[next(reversed(rows))]['steps_per_s']:.1f}x")

    # ---- Dask local cluster against in process
    if not a.no_dask and a.device == "cpu":
        try:
            import distributed  # noqa: F401
        except Exception as e:  # noqa: BLE001
            print(f"  dask: not installed here ({type(e).__name__}); skipped")
        else:
            t0 = time.perf_counter()
            r = sweep("ma_cross", close, params=params, cluster="local", workers=2)
            total = time.perf_counter() - t0
            ok = np.array_equal(r.table["total_return"], hp)
            report("dask local cluster (2 procs)", r.stats["seconds"], K,
                   note=f"rows identical: {ok}; {total:.2f} s with cluster start/stop")
            print(f"  -> dask / in-process time: {r.stats['seconds'] / t_cpu:.2f}x (sweep), "
                  f"{total / t_cpu:.2f}x (with cluster start and stop)")

    # ---- GPU
    if a.device == "gpu":
        from hpte.engine.device import resolve_device
        info = resolve_device("gpu")
        sweep("ma_cross", close[:1000], params={"fast": "5:6", "slow": "110"}, device="gpu")   # compile
        t_gpu, g = best_of(lambda: sweep("ma_cross", close, params=params, device="gpu"), a.repeat)
        dg = float(np.max(np.abs(g.table["total_return"] - hp)))
        same_trades = bool(np.array_equal(g.table["trades"], res.table["trades"]))
        report(f"hpte gpu ({info.name or 'GPU'})", t_gpu, K,
               note=f"max |total return - cpu| {dg:.1e}; trades identical: {same_trades}")
        print(f"  -> gpu / cpu speed: {t_cpu / t_gpu:.1f}x; gpu / fused kernel: {t_fused / t_gpu:.1f}x")
    if a.json:
        a.json.write_text(json.dumps({"bars": n, "pairs": K, "machine": machine(), "rows": rows}, indent=2) + "\n")
    print(json.dumps({"bars": n, "pairs": K, "rows": {k: round(v["steps_per_s"] / 1e6, 1) for k, v in rows.items()}}))
    return 0


def tick_grid(n: int) -> dict:
    """About n market-maker parameter sets: half_spread 0..9 ticks x size x max_position."""
    hs = list(range(min(10, n)))
    rest = max(1, n // len(hs))
    sizes = max(1, int(round(rest ** 0.5 * 2)))
    mps = max(1, rest // sizes)
    return {"half_spread": ",".join(map(str, hs)), "size": ",".join(str(10 * (i + 1)) for i in range(sizes)),
            "max_position": ",".join(str(200 * (i + 1)) for i in range(mps))}


def tick_section(a) -> None:
    import numba

    from hpte.engine.backtest import backtest
    from hpte.engine.backtest.data import lobster_events
    from hpte.engine.sweep import sweep

    data = Path(os.environ.get("HPTE_DATA", Path(__file__).resolve().parent.parent.parent / "shared" / "data"))
    path = data / "lobster_AMZN_2012-06-21_level5" / "AMZN_2012-06-21_34200000_57600000_message_5.csv"
    if not path.is_file():
        print(f"tick sweep: {path} is absent (set HPTE_DATA to the folder holding shared/data); skipped")
        return
    t0 = time.perf_counter()
    ev = lobster_events(path)
    decode = time.perf_counter() - t0
    kw = dict(latency="feed=100us,entry=50us:150us,response=100us", fees="maker=-20,taker=30", seed=1)
    grid = tick_grid(a.ticks)
    n = len(ev)
    print(f"tick sweep: market_maker over the AMZN day ({n:,} events, decoded once in {decode:.2f} s); "
          f"{machine()}; numba {numba.__version__}, {numba.get_num_threads()} threads")
    sweep("market_maker", ev, params={"size": "10,20"}, **kw)                  # compile / load
    t_sw, res = best_of(lambda: sweep("market_maker", ev, params=grid, **kw), max(1, a.repeat))
    K = res.stats["sets"]
    print(f"  hpte sweep, in process      {K:,} sets {t_sw:9.2f} s  {K * n / t_sw / 1e6:10.1f} M set-events/s")
    t = res.table
    idx = np.linspace(0, K - 1, max(1, min(a.singles, K))).astype(int)
    backtest("market_maker", ev, params={"size": 10}, **kw)
    t1 = time.perf_counter()
    same = True
    for j in idx:
        one = backtest("market_maker", ev, params={nm: float(t[nm][j]) for nm in res.names}, **kw)
        same &= all(t[m][j] == one.metrics[m] for m in one.metrics)
    t_one = (time.perf_counter() - t1) / len(idx)
    print(f"  single hpte.backtest (mean of {len(idx)}) {t_one:9.3f} s  {n / t_one / 1e6:10.1f} M events/s; "
          f"rows equal to the single backtests: {same}")
    print(f"  -> sweep / singles, per set: {t_one * K / t_sw:.2f}x")
    if a.device == "gpu":
        sweep("market_maker", ev, params={"size": "10,20"}, device="gpu", **kw)         # compile
        t_g, rg = best_of(lambda: sweep("market_maker", ev, params=grid, device="gpu", **kw), max(1, a.repeat))
        g = rg.table
        ints = all(np.array_equal(g[c], t[c]) for c in t if t[c].dtype.kind == "i" or c in res.names)
        close = all(np.allclose(g[c], t[c], rtol=1e-9, atol=1e-12) for c in t if t[c].dtype.kind == "f")
        print(f"  hpte sweep, {rg.stats['device']} {K:,} sets {t_g:9.2f} s  {K * n / t_g / 1e6:10.1f} M set-events/s; "
              f"integer columns equal to the CPU's: {ints}; float columns to 1e-9: {close}")
        print(f"  -> gpu / cpu (in process, {numba.get_num_threads()} threads): {t_sw / t_g:.2f}x")
    if not a.no_dask:
        try:
            import distributed  # noqa: F401
        except Exception as e:  # noqa: BLE001
            print(f"  dask: not installed here ({type(e).__name__}); skipped")
            return
        t0 = time.perf_counter()
        r = sweep("market_maker", ev, params=grid, cluster="local", workers=2, **kw)
        total = time.perf_counter() - t0
        ok = all(np.array_equal(r.table[c], t[c]) for c in t)
        print(f"  dask local cluster (2 procs) {r.stats['seconds']:9.2f} s  {K * n / r.stats['seconds'] / 1e6:10.1f} "
              f"M set-events/s; rows identical: {ok}; {total:.2f} s with cluster start/stop")
        print(f"  -> dask / in-process time: {r.stats['seconds'] / t_sw:.2f}x")


def gil_probe(ev, kw) -> None:
    """Does the impact kernel release the GIL? One parameter set runs in a second thread while
    this thread counts Python loop turns; the same count with the thread idle (sleeping) is the
    baseline. A kernel that held the GIL would leave this thread (almost) no turns."""
    import threading

    from hpte.engine.backtest.strategy import load_strategy
    from hpte.engine.sweep.ticks import decode, run_sets_impact
    from hpte.engine.backtest.run import prepare_run

    strat = load_strategy("market_maker")
    rc = prepare_run(strat, ev, **kw)
    cols = decode(ev)[0]
    sets = np.tile(strat.param_vector(), (1, 1))

    def count(th):
        k = 0
        t0 = time.perf_counter()
        th.start()
        while th.is_alive():
            k += 1
        return k, time.perf_counter() - t0

    busy, tb = count(threading.Thread(target=run_sets_impact, args=(strat, cols, rc, sets, 1)))
    idle, ti = count(threading.Thread(target=time.sleep, args=(tb,)))
    print(f"  GIL probe: Python loop turns in this thread while one impact set ran in another: {busy / tb / 1e6:.2f} M/s "
          f"({tb:.2f} s); with that thread sleeping: {idle / ti / 1e6:.2f} M/s -> {busy / tb / (idle / ti):.2f} "
          f"(about 1 when the kernel releases the GIL; 0 if it held it)")


def impact_section(a) -> None:
    import numba

    from hpte.engine.backtest import backtest
    from hpte.engine.backtest.data import MarketEvents, lobster_events
    from hpte.engine.sweep import sweep

    data = Path(os.environ.get("HPTE_DATA", Path(__file__).resolve().parent.parent.parent / "shared" / "data"))
    path = data / "lobster_AMZN_2012-06-21_level5" / "AMZN_2012-06-21_34200000_57600000_message_5.csv"
    ev = lobster_events(path)
    if a.impact_events:
        ev = MarketEvents(**{c: v[:a.impact_events] for c, v in ev.columns().items()}, tick=ev.tick)
    kw = dict(latency="feed=100us,entry=50us:150us,response=100us", fees="maker=-20,taker=30", seed=1)
    grid = tick_grid(a.impact)
    n = len(ev)
    nthr = numba.get_num_threads()
    print(f"impact-mode tick sweep: market_maker over the AMZN day ({n:,} events); {machine()}; "
          f"numba {numba.__version__}, {nthr} threads available")
    sweep("market_maker", ev, params={"size": "10,20"}, mode="impact", **kw)      # compile / load
    sweep("market_maker", ev, params={"size": "10,20"}, **kw)
    rows = {}
    for label, mode, thr in (("impact, 1 thread", "impact", 1), ("impact, 2 threads", "impact", 2),
                             ("no-impact, 1 thread", "no-impact", 1), ("no-impact, 2 threads", "no-impact", 2)):
        if thr > nthr:
            print(f"  {label}: skipped ({nthr} thread(s) available)")
            continue
        numba.set_num_threads(thr)
        try:
            t, res = best_of(lambda: sweep("market_maker", ev, params=grid, mode=mode, **kw), max(1, a.repeat))
        finally:
            numba.set_num_threads(nthr)
        K = res.stats["sets"]
        rows[label] = (t, res)
        print(f"  {label:22s} {K:,} sets {t:9.2f} s  {K * n / t / 1e6:8.3f} M set-events/s")
    gil_probe(ev, kw)
    base = rows.get("impact, 1 thread")
    two = rows.get("impact, 2 threads")
    if base and two:
        same = all(np.array_equal(base[1].table[c], two[1].table[c]) for c in base[1].table)
        print(f"  -> impact 2 threads / 1 thread speed: {base[0] / two[0]:.2f}x; rows identical: {same}")
    for thr in (1, 2):
        i, ni = rows.get(f"impact, {thr} thread" + ("s" if thr > 1 else "")), rows.get(
            f"no-impact, {thr} thread" + ("s" if thr > 1 else ""))
        if i and ni:
            print(f"  -> impact / no-impact speed, {thr} thread(s): {ni[0] / i[0]:.2f}x")
    if base or two:
        t, res = two or base
        tb = res.table
        K = res.stats["sets"]
        idx = np.linspace(0, K - 1, max(1, min(a.singles, K))).astype(int)
        t1 = time.perf_counter()
        same = True
        for j in idx:
            one = backtest("market_maker", ev, mode="impact", params={nm: float(tb[nm][j]) for nm in res.names}, **kw)
            same &= all(tb[m][j] == one.metrics[m] for m in one.metrics)
        t_one = (time.perf_counter() - t1) / len(idx)
        print(f"  single hpte.backtest(mode='impact') (mean of {len(idx)}) {t_one:.3f} s  "
              f"{n / t_one / 1e6:.3f} M events/s; rows equal to the single backtests: {same}")
        if a.impact_dask:
            r = sweep("market_maker", ev, params=grid, mode="impact", cluster="local", workers=2, **kw)
            ok = all(np.array_equal(r.table[c], tb[c]) for c in tb)
            print(f"  impact, dask local cluster (2 procs x 1 thread) {r.stats['seconds']:9.2f} s  "
                  f"{K * n / r.stats['seconds'] / 1e6:8.3f} M set-events/s; rows identical: {ok}; "
                  f"/ in-process time ({'2 threads' if two else '1 thread'}): {r.stats['seconds'] / t:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
