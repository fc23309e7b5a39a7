"""Benchmark: tick-level backtests of the bundled market maker, no-impact and impact mode side
by side, over the real AMZN 2012-06-21 LOBSTER day and over a generated L3 flow of --events
events, beside the plain-Python reference backtester (tests/reference/backtest_ref.py, both
modes) on a prefix and, where it is installed, hftbacktest replaying the same stream.

Figures are market events per second (the kernel's loop, chunks fed from memory, strategy
compiled and loaded before the clock starts), best of --repeat, and ratios against the null
strategy (on_book does nothing) and the reference measured in the same process. Peak memory
(tracemalloc of numpy buffers, and ru_maxrss) is reported for two flow lengths.

    .venv/bin/python bench/bench_backtest.py
    .venv/bin/python bench/bench_backtest.py --events 10000000 --repeat 3 --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
from numba import njit

from hpte.engine.backtest import backtest
from hpte.engine.backtest.data import MarketEvents, lobster_events
from hpte.kernels.backtest import api as A

REPO = Path(__file__).resolve().parent.parent
AMZN = "lobster_AMZN_2012-06-21_level5/AMZN_2012-06-21_34200000_57600000_message_5.csv"
NULL = '''def on_book(md, orders, params, state, act):
    return None
'''


@njit(cache=True)
def gen_l3_cpu(n, seed, ts, kind, oid, side, px, qty):
    """A random L3 flow with FIFO levels: 50% adds near the touch, 35% cancels of a live order
    near the touch, 12% executions at the best level (FIFO), 3% hidden trades; ~1 us apart.
    Returns the number of events written (<= n)."""
    np.random.seed(seed)
    NL = 8192
    CAP = 128
    qid = np.zeros((2, NL, CAP), np.int64)
    qq = np.zeros((2, NL, CAP), np.int64)
    head = np.zeros((2, NL), np.int64)
    tail = np.zeros((2, NL), np.int64)
    live = np.zeros((2, NL), np.int64)
    bb = NL // 2 - 1
    ba = NL // 2 + 1
    t = np.int64(34_200_000_000_000)
    nid = np.int64(1)
    k = 0
    base = 100_000 - NL // 2
    while k < n:
        t += np.int64(np.random.geometric(0.5)) * 500
        u = np.random.random()
        if u < 0.50:
            s = 0 if np.random.random() < 0.5 else 1
            d = np.random.geometric(0.3) - 1
            lv = (ba - 1 - d) if s == 0 else (bb + 1 + d)
            if lv <= 0 or lv >= NL - 1 or tail[s, lv] - head[s, lv] >= CAP:
                continue
            if s == 0 and lv >= ba or s == 1 and lv <= bb:
                continue
            q = np.random.geometric(0.15)
            c = tail[s, lv] % CAP
            qid[s, lv, c] = nid
            qq[s, lv, c] = q
            tail[s, lv] += 1
            live[s, lv] += 1
            if s == 0 and lv > bb:
                bb = lv
            if s == 1 and lv < ba:
                ba = lv
            ts[k], kind[k], oid[k], side[k], px[k], qty[k] = t, 1, nid, 1 - 2 * s, base + lv, q
            nid += 1
            k += 1
        elif u < 0.97:
            s = 0 if np.random.random() < 0.5 else 1
            if u < 0.85:
                d = np.random.geometric(0.25) - 1
                lv = bb - d if s == 0 else ba + d
            else:
                lv = bb if s == 0 else ba
            if lv <= 0 or lv >= NL - 1 or live[s, lv] == 0:
                continue
            if u < 0.85:
                j = head[s, lv] + np.random.randint(0, tail[s, lv] - head[s, lv])
            else:
                j = head[s, lv]
                while qq[s, lv, j % CAP] == 0:
                    j += 1
            c = j % CAP
            if qq[s, lv, c] == 0:
                continue
            q = qq[s, lv, c]
            if u >= 0.85 and np.random.random() < 0.4:
                q = 1 + np.random.randint(0, q)
            qq[s, lv, c] -= q
            ts[k], kind[k], oid[k], side[k], px[k], qty[k] = t, 2 if u < 0.85 else 3, qid[s, lv, c], 1 - 2 * s, base + lv, q
            k += 1
            if qq[s, lv, c] == 0:
                live[s, lv] -= 1
                while head[s, lv] < tail[s, lv] and qq[s, lv, head[s, lv] % CAP] == 0:
                    head[s, lv] += 1
                if live[s, lv] == 0:
                    if s == 0 and lv == bb:
                        while bb > 0 and live[0, bb] == 0:
                            bb -= 1
                    if s == 1 and lv == ba:
                        while ba < NL - 1 and live[1, ba] == 0:
                            ba += 1
        else:
            s = 0 if np.random.random() < 0.5 else 1
            ts[k], kind[k], oid[k], side[k], px[k], qty[k] = t, 4, 0, 1 - 2 * s, base + (bb if s == 0 else ba), 1 + np.random.randint(0, 20)
            k += 1
    return k


def gen_flow(n: int, seed: int = 1) -> MarketEvents:
    cols = [np.empty(n, np.int64) for _ in range(6)]
    k = gen_l3_cpu(n, seed, *cols)
    return MarketEvents(*(c[:k] for c in cols), tick=1, name=f"generated L3 flow ({n:,} events)")


def best_rate(strategy, ev, repeat, **kw):
    backtest(strategy, ev, **kw)         # load (or compile) first
    best = None
    for _ in range(repeat):
        r = backtest(strategy, ev, **kw)
        if best is None or r.stats["seconds"] < best.stats["seconds"]:
            best = r
    return len(ev) / best.stats["seconds"], best


def reference_rate(strategy, ev, n_ref, **kw):
    sys.path.insert(0, str(REPO / "tests"))
    from reference.backtest_ref import run_reference

    from hpte.engine.backtest import load_strategy

    sub = MarketEvents(*(getattr(ev, c)[:n_ref] for c in ("ts_ns", "kind", "order_id", "side", "price", "qty")), tick=ev.tick)
    r = backtest(strategy, sub, **kw)
    strat = load_strategy(strategy)
    c = r.config
    lat = c["latency_ns"]
    t = time.perf_counter()
    fills, *_ = run_reference(strat.module, sub.columns(), params=strat.param_vector(kw.get("params")),
                              state_size=strat.state_size, tick=c["tick"], base=c["base"], L=c["ladder"],
                              feed=tuple(lat["feed"]), entry=tuple(lat["entry"]), response=tuple(lat["response"]),
                              seed=c["seed"], maker_fee=c["fees"]["maker"], taker_fee=c["fees"]["taker"],
                              sample_ns=c["sample_ns"], depth=c["depth"], mode=c["mode"])
    dt = time.perf_counter() - t
    same = len(fills) == len(r.fills["qty"]) and all(int(f[4]) == int(q) for f, q in zip(fills, r.fills["qty"]))
    return n_ref / dt, same


def peak_memory(n: int, strategy, **kw) -> float:
    """Peak traced Python/numpy allocation (MiB) of a backtest over a generated flow of n events
    fed from a Parquet file in chunks (the data never in memory at once)."""
    import tempfile

    from hpte.engine.backtest.data import write_events

    ev = gen_flow(n, seed=3)
    with tempfile.TemporaryDirectory() as d:
        p = write_events(Path(d) / "ev.parquet", ev, row_group=1 << 18)
        del ev
        tracemalloc.start()
        backtest(strategy, p, chunk_events=1 << 18, **kw)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak / 2**20


def _hft_events(ev: MarketEvents):
    """The stream as hftbacktest L3 (market-by-order) events, zero feed latency: ADD ->
    ADD_ORDER_EVENT, CANCEL -> CANCEL_ORDER_EVENT (hftbacktest's L3 feed has no partial cancel:
    a partial cancel removes the whole order there), EXEC -> FILL_EVENT, hidden trade ->
    TRADE_EVENT; learned seeds are dropped."""
    import hftbacktest as H

    keep = (ev.kind >= A.MK_ADD) & (ev.kind <= A.MK_TRADE)
    k = ev.kind[keep]
    out = np.zeros(int(keep.sum()), H.event_dtype)
    code = np.zeros(len(k), np.uint64)
    code[k == A.MK_ADD] = H.ADD_ORDER_EVENT
    code[k == A.MK_CANCEL] = H.CANCEL_ORDER_EVENT
    code[k == A.MK_EXEC] = H.FILL_EVENT
    code[k == A.MK_TRADE] = H.TRADE_EVENT
    side = np.where(ev.side[keep] > 0, H.BUY_EVENT, H.SELL_EVENT).astype(np.uint64)
    out["ev"] = code | side | np.uint64(H.EXCH_EVENT | H.LOCAL_EVENT)
    out["exch_ts"] = ev.ts_ns[keep]
    out["local_ts"] = ev.ts_ns[keep]
    out["px"] = ev.price[keep].astype(np.float64)
    out["qty"] = ev.qty[keep].astype(np.float64)
    out["order_id"] = np.maximum(ev.order_id[keep], 0).astype(np.uint64)
    return out


_HFT_MM = None


def _hft_mm():
    """A market maker in hftbacktest's numba API: on every feed event, one post-only (GTX)
    bid at the best bid and one ask at the best ask, cancelled when the touch moves."""
    global _HFT_MM
    if _HFT_MM is None:
        import hftbacktest as H

        BUY, GTX, LIMIT = H.BUY, H.GTX, H.LIMIT

        @njit
        def mm(hbt, size):
            n = 0
            oid = 1
            while hbt.wait_next_feed(True, 1_000_000_000_000_000) != 1:
                n += 1
                d = hbt.depth(0)
                bb = d.best_bid
                ba = d.best_ask
                if not (bb > 0 and ba > bb):
                    continue
                hbt.clear_inactive_orders(0)
                has_b = False
                has_a = False
                vals = hbt.orders(0).values()
                while vals.has_next():
                    o = vals.get()
                    want = bb if o.side == BUY else ba
                    if o.price != want and o.cancellable:
                        hbt.cancel(0, o.order_id, False)
                    elif o.side == BUY:
                        has_b = True
                    else:
                        has_a = True
                if not has_b:
                    hbt.submit_buy_order(0, oid, bb, size, GTX, LIMIT, False)
                    oid += 1
                if not has_a:
                    hbt.submit_sell_order(0, oid, ba, size, GTX, LIMIT, False)
                    oid += 1
            return n, oid - 1
        _HFT_MM = mm
    return _HFT_MM


def hftbacktest_rate(ev: MarketEvents, repeat: int, size: float):
    """hftbacktest (if installed) replaying the same stream (L3 FIFO queue model, zero latency)
    with the market maker above; returns (events/s, note)."""
    try:
        import hftbacktest as H
    except ImportError as e:
        return None, f"hftbacktest not installed ({e})"
    data = _hft_events(ev)
    mm = _hft_mm()
    lo, hi = float(ev.price.min()) - 1000 * ev.tick, float(ev.price.max()) + 1000 * ev.tick
    best = None
    orders = 0
    for _ in range(repeat + 1):        # the first run compiles
        asset = H.BacktestAsset().data([data]).linear_asset(1.0)
        asset = (asset.constant_order_latency(0, 0) if hasattr(asset, "constant_order_latency")
                 else asset.constant_latency(0, 0))
        asset = (asset.l3_fifo_queue_model().no_partial_fill_exchange().trading_value_fee_model(0.0, 0.0)
                 .tick_size(float(ev.tick)).lot_size(1.0).roi_lb(lo).roi_ub(hi))
        hbt = H.ROIVectorMarketDepthBacktest([asset])
        t = time.perf_counter()
        _, orders = mm(hbt, size)
        dt = time.perf_counter() - t
        hbt.close()
        best = dt if best is None else min(best, dt)
    return len(data) / best, (f"hftbacktest {H.__version__ if hasattr(H, '__version__') else ''} "
                              f"L3 FIFO, zero latency, quotes at the touch ({orders:,} orders)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--ref-events", type=int, default=30_000)
    ap.add_argument("--hft-events", type=int, default=1_000_000, help="prefix of the generated flow hftbacktest replays")
    ap.add_argument("--latency", default="feed=100us,entry=50us:150us,response=100us")
    ap.add_argument("--json")
    a = ap.parse_args()
    os.environ.setdefault("HPTE_CACHE_DIR", str(Path.home() / ".cache" / "hpte" / "backtest"))
    null = Path(os.environ["HPTE_CACHE_DIR"]) / "bench_null_strategy.py"
    null.parent.mkdir(parents=True, exist_ok=True)
    if not null.is_file() or null.read_text() != NULL:
        null.write_text(NULL)
    out = {"machine": platform.processor() or platform.machine(), "python": sys.version.split()[0], "runs": []}
    data = [("AMZN 2012-06-21 (LOBSTER, level 5)", None)]
    for name, _ in data:
        shared = os.environ.get("HPTE_DATA") or str(REPO.parent / "shared" / "data")
        p = Path(shared) / AMZN
        if not p.is_file():
            print(f"{name}: absent ({p}), skipped")
            continue
        t = time.perf_counter()
        ev = lobster_events(p)
        print(f"{name}: {len(ev):,} events (messages + learned levels), loaded in {time.perf_counter() - t:.2f} s")
        run_set(out, name, ev, a, null, mm_params={"size": 100},
                hft_note="not run: on this stream hftbacktest 2.4.4 did not finish 20,000 events in 240 s "
                         "(its L3 feed meets cancels and executions of orders it never saw)")
    t = time.perf_counter()
    ev = gen_flow(a.events)
    print(f"generated flow: {len(ev):,} events in {time.perf_counter() - t:.2f} s")
    run_set(out, f"generated {len(ev):,}", ev, a, null, mm_params={"size": 5, "max_position": 50})
    for n in (a.events // 10, a.events):
        mib = peak_memory(n, str(null), latency=a.latency)
        mm = peak_memory(n, "market_maker", params={"size": 5, "max_position": 50}, latency=a.latency)
        print(f"peak traced memory, {n:,} events from Parquet in chunks of 262,144: null strategy {mib:,.1f} MiB, "
              f"market maker {mm:,.1f} MiB (its outputs grow with its orders)")
        out["runs"].append({"data": f"memory {n}", "peak_mib_null": mib, "peak_mib_mm": mm})
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))


def run_set(out, name, ev, a, null, mm_params, hft_note=None):
    rows = []
    for mode in ("no-impact", "impact"):
        for lat in (None, a.latency):
            r_null, _ = best_rate(str(null), ev, a.repeat, latency=lat, mode=mode)
            r_mm, res = best_rate("market_maker", ev, a.repeat, latency=lat, params=mm_params, mode=mode)
            rows.append((f"{mode}, latency {lat or 'none'}", r_null, r_mm, res.metrics["orders"], res.metrics["trades"]))
            out["runs"].append({"data": name, "mode": mode, "latency": lat, "null_events_per_s": r_null,
                                "mm_events_per_s": r_mm, "mm_orders": res.metrics["orders"],
                                "mm_fills": res.metrics["trades"], "mm_pnl": res.metrics["pnl"]})
    n_ref = min(a.ref_events, len(ev))
    ref, same = reference_rate("market_maker", ev, n_ref, latency=a.latency, params=mm_params)
    ref_i, same_i = reference_rate("market_maker", ev, n_ref, latency=a.latency, params=mm_params, mode="impact")
    if hft_note is None:
        n_h = min(a.hft_events, len(ev))
        sub = MarketEvents(*(getattr(ev, c)[:n_h] for c in ("ts_ns", "kind", "order_id", "side", "price", "qty")),
                           tick=ev.tick)
        hft, note = hftbacktest_rate(sub, a.repeat, float(mm_params["size"]))
        note += f", first {n_h:,} events"
    else:
        hft, note = None, hft_note
    print(f"  {'mode, latency':<60} {'null M ev/s':>12} {'MM M ev/s':>10} {'MM/null':>8} {'orders':>9} {'fills':>7}")
    for lat, rn, rm, o, f in rows:
        print(f"  {lat:<60} {rn / 1e6:>12.2f} {rm / 1e6:>10.2f} {rm / rn:>8.2f} {o:>9,} {f:>7,}")
    print(f"  impact / no-impact, MM with latency: {rows[3][2] / rows[1][2]:.2f}x; null strategy: "
          f"{rows[3][1] / rows[1][1]:.2f}x")
    print(f"  reference (plain Python) on {n_ref:,} events: no-impact {ref / 1e6:.4f} M ev/s "
          f"(hpte MM with latency is {rows[1][2] / ref:,.0f}x; fills agree: {same}), impact {ref_i / 1e6:.4f} M ev/s "
          f"(hpte is {rows[3][2] / ref_i:,.0f}x; fills agree: {same_i})")
    print(f"  hftbacktest: {note if hft is None else f'{hft / 1e6:.3f} M ev/s ({note}); hpte MM without latency is {rows[0][2] / hft:,.1f}x'}")
    out["runs"].append({"data": name, "reference_events_per_s": ref, "reference_agrees": same,
                        "reference_impact_events_per_s": ref_i, "reference_impact_agrees": same_i,
                        "hftbacktest": hft, "hftbacktest_note": note})


if __name__ == "__main__":
    main()
