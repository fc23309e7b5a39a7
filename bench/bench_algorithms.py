"""Matching algorithms: events per second of every preset against `fifo`, in one run.

The flow is FORMATS.md's benchmark flow, ``generate_flow(N, seed=0)`` (one book, 60% GTC / 30%
cancel / 10% IOC). Every algorithm matches the same flow as one batch on a fresh Engine, best of
``--repeats`` (perf_counter around ``submit``; numba compile excluded by a warm-up on a small
slice first), interleaved (fifo, pro-rata, ..., fifo, pro-rata, ...) so that a noisy machine
hurts every algorithm alike. Reports events/s and the ratio to fifo, fills, and fill rows per
aggressor per price level (how finely each algorithm splits), and checks each run's quantity
conservation (ACCEPTED lots = 2 x filled + cancelled/expired + resting at the end).

    .venv/bin/python bench/bench_algorithms.py [--events 2000000] [--repeats 3] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

ALGOS = ("fifo", "pro-rata", "allocation", "split", "fifo-lmm", "threshold-pro-rata")


def _matching(name: str) -> dict:
    d = {"algorithm": name}
    if name == "fifo-lmm":
        d["lmm_accounts"] = [1, 2, 3]     # the flow's Zipf accounts: 1-3 are the busiest
    return {"defaults": d}


def _conserved(eng, cols, res) -> bool:
    """Resting quantity at the end = NEW quantity - traded (both sides) - cancelled - expired
    (a per-run check on the book only: sum over every order of what happened to it)."""
    from hpte.engine import schema as S
    ev = res.events
    new = int(cols["qty"][(cols["action"] == S.ACT_NEW)].sum())
    acc = ev["event"] == S.EV_ACCEPTED
    accepted = int(ev["qty"][acc].sum())
    traded = 2 * int(res.fills["qty"].sum())
    gone = np.isin(ev["event"], (S.EV_CANCELLED, S.EV_EXPIRED))
    # cancelled / expired events carry the quantity that left the book or the taker
    left = int(ev["qty"][gone].sum())
    rest = int(eng.book_l3()["qty"].sum())
    return accepted <= new and accepted == traded + left + rest


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=2_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)

    from hpte.engine.engine import Engine
    from hpte.engine.gen import generate_flow

    cols = generate_flow(a.events, seed=0)
    warm = {k: v[:2000] for k, v in cols.items()}
    for name in ALGOS:
        Engine(matching=_matching(name)).submit(warm)
    best = {name: float("inf") for name in ALGOS}
    stats = {}
    for _ in range(a.repeats):
        for name in ALGOS:
            eng = Engine(matching=_matching(name))
            t0 = time.perf_counter()
            res = eng.submit(cols)
            dt = time.perf_counter() - t0
            best[name] = min(best[name], dt)
            if name not in stats:
                f = res.fills
                # fill rows per (aggressor row, price level): how finely the quantity was split
                keys = np.unique(np.stack([f["seq"], f["price_ticks"]]), axis=1).shape[1] if len(f["seq"]) else 0
                stats[name] = {"fills": int(len(f["seq"])), "lots": int(f["qty"].sum()),
                               "fills_per_taker_level": round(len(f["seq"]) / max(keys, 1), 3),
                               "conserved": _conserved(eng, cols, res)}
    fifo = a.events / best["fifo"]
    out = {"events": a.events, "repeats": a.repeats, "machine": platform.processor() or platform.machine(),
           "algorithms": {}}
    print(f"{'algorithm':<20} {'M events/s':>10} {'x fifo':>7} {'fills':>9} {'fills/level':>11} conserved")
    for name in ALGOS:
        eps = a.events / best[name]
        row = dict(events_per_s=eps, ratio_to_fifo=eps / fifo, **stats[name])
        out["algorithms"][name] = row
        print(f"{name:<20} {eps / 1e6:>10.2f} {eps / fifo:>7.2f} {row['fills']:>9,} "
              f"{row['fills_per_taker_level']:>11.2f} {row['conserved']}")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return out


if __name__ == "__main__":
    main()
