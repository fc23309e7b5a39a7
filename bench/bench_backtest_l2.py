"""Benchmark: no-impact backtests on L2 data with queue models beside L3 no-impact, same run.

The bundled market maker (size 100, latency feed=100us,entry=50us:150us,response=100us, fees
maker=-20,taker=30) over the real AMZN 2012-06-21 LOBSTER day: once as L3 (the message file,
exact queue position) and once read as L2 (its orderbook file's snapshots + trades) with each
queue model. Both streams are converted and held in memory before the clock starts; figures
are market rows per second of the loop (best of --repeat) and the ratio to L3 no-impact
measured in the same process, plus fills and P&L per run. Also the plain-Python reference on
an L2 prefix (kernel speed-up).

    HPTE_DATA=/work/shared/data .venv/bin/python bench/bench_backtest_l2.py --repeat 3
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from hpte.engine.backtest import backtest, load_strategy
from hpte.engine.backtest.data import MarketEvents, lobster_events, lobster_l2_events

AMZN = "lobster_AMZN_2012-06-21_level5/AMZN_2012-06-21_34200000_57600000_message_5.csv"
KW = dict(params={"size": 100}, latency="feed=100us,entry=50us:150us,response=100us", fees="maker=-20,taker=30")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--ref-rows", type=int, default=20_000)
    a = ap.parse_args()
    mp = Path(os.environ.get("HPTE_DATA", "/work/shared/data")) / AMZN
    t = time.perf_counter()
    l3 = lobster_events(mp)
    t_l3 = time.perf_counter() - t
    t = time.perf_counter()
    l2 = lobster_l2_events(mp)
    t_l2 = time.perf_counter() - t
    print(f"AMZN day: L3 {len(l3):,} events (conversion {t_l3:.1f} s), L2 {len(l2):,} rows (conversion {t_l2:.1f} s)")
    runs = [("L3 no-impact (exact queue)", l3, None), ("L2 conservative", l2, "conservative"),
            ("L2 prob (power 3)", l2, "prob"), ("L2 prob:log", l2, "prob:log")]
    for _, ev, q in runs:       # compile / load first
        backtest("market_maker", MarketEvents(**{c: v[:100] for c, v in ev.columns().items()}, tick=ev.tick),
                 queue=q, **KW)
    best = {}
    for r in range(a.repeat):
        for name, ev, q in runs:
            res = backtest("market_maker", ev, queue=q, **KW)
            eps = res.stats["events_per_s"]
            if eps > best.get(name, (0,))[0]:
                best[name] = (eps, res.metrics["trades"], res.metrics["pnl"], res.metrics["volume"])
    base = best[runs[0][0]][0]
    print(f"{'run':<28} {'M rows/s':>9} {'x L3':>6} {'fills':>7} {'volume':>9} {'pnl':>14}")
    for name, _, _ in runs:
        eps, tr, pnl, vol = best[name]
        print(f"{name:<28} {eps / 1e6:9.2f} {eps / base:6.2f} {tr:7,} {vol:9,} {pnl:14,.0f}")
    if a.ref_rows:
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from reference.backtest_ref import run_reference

        ev = MarketEvents(**{c: v[:a.ref_rows] for c, v in l2.columns().items()}, tick=l2.tick)
        res = backtest("market_maker", ev, queue="prob", **KW)
        st = load_strategy("market_maker")
        c = res.config
        t = time.perf_counter()
        ref = run_reference(st.module, ev.columns(), params=st.param_vector(KW["params"]), state_size=st.state_size,
                            tick=c["tick"], base=c["base"], L=c["ladder"], feed=tuple(c["latency_ns"]["feed"]),
                            entry=tuple(c["latency_ns"]["entry"]), response=tuple(c["latency_ns"]["response"]),
                            maker_fee=-20, taker_fee=30, timer_ns=c["timer_ns"], sample_ns=c["sample_ns"],
                            depth=c["depth"], max_instant=c["max_instant_actions"], queue=tuple(c["queue_model"]))
        dt = time.perf_counter() - t
        same = [tuple(int(x) for x in f) for f in ref[0]] == [
            tuple(int(res.fills[k][i]) for k in ("ts_ns", "order_id", "side", "price", "qty", "maker", "fee",
                                                  "position", "cash", "seq", "queue_ns"))
            for i in range(len(res.fills["qty"]))]
        print(f"reference, L2 prob, first {a.ref_rows:,} rows: {a.ref_rows / dt / 1e6:.4f} M rows/s, kernel "
              f"{res.stats['events_per_s'] / (a.ref_rows / dt):.0f}x faster; fills agree: {same}")


if __name__ == "__main__":
    main()
