"""Trades per second for OHLCV time bars: hpte's streaming kernel vs numpy and plain-Python baselines.

Synthetic trades: ts_ns increasing by 1 + geometric gaps (mean about 1 us), price a random walk
in ticks, qty geometric (mean about 7 lots); 1, 64 and 100,000 symbols drawn uniformly at random
per trade. All runs are
single-threaded and in one process; each figure is the best of ``--repeat`` runs.

- kernel, whole: ``bars_time_cpu`` over the whole array in one call (state arrays preallocated).
- kernel, chunked: ``BarAggregator.update`` over ``--chunk``-row chunks then ``flush`` (the
  streaming API, including validation and output conversion).
- numpy: a vectorised group-by (floor-divide, stable argsort by (window, symbol), reduceat),
  whole array, not streaming.
- python: a dict-based plain-Python loop, timed on the first ``--py-trades`` trades.

    .venv/bin/python bench/bench_bars.py [--trades 20000000] [--every 1s] [--chunk 1000000]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from hpte.engine.md.bars import BarAggregator, parse_duration
from hpte.kernels.md import bars as K


def make_trades(n: int, n_sym: int, seed: int = 42) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ts = 1_700_000_000_000_000_000 + np.cumsum(1 + rng.geometric(1 / 1000, n)).astype(np.int64)
    px = 100_000 + np.cumsum(rng.integers(-1, 2, n)).astype(np.int64)
    return {"ts_ns": ts, "symbol": rng.integers(0, n_sym, n).astype(np.uint32), "price_ticks": px,
            "qty": rng.geometric(0.15, n).astype(np.int64)}


def best(fn, repeat: int) -> tuple[float, object]:
    t_best, res = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        res = fn()
        t_best = min(t_best, time.perf_counter() - t0)
    return t_best, res


def kernel_whole(tr, every: int, n_sym: int) -> int:
    """Bars of the whole array from one kernel pass (re-entered only when the bar buffer fills)."""
    s = max(n_sym, 1)
    st = np.zeros((s, K.NST), np.int64)
    keys = np.full(1 << (2 * s - 1).bit_length(), -1, np.int64)
    vals = np.zeros(len(keys), np.int64)
    sym_ids = np.zeros(s, np.int64)
    ol = np.zeros(s, np.int64)
    lut = np.full(1 << 17 if n_sym > 1 << 16 else 1 << 16, -1, np.int32)
    g = np.zeros(K.NG, np.int64)
    g[K.G_LAST_TS] = g[K.G_WEND] = K.INT64_MIN
    n = len(tr["ts_ns"])
    out = np.empty((max(1 << 16, s + 1), K.NOUT), np.int64)
    i, bars = 0, 0
    while True:
        status, i, n_out = K.bars_time_cpu(tr["ts_ns"], tr["symbol"], tr["price_ticks"], tr["qty"], i, 0, every,
                                           lut, keys, vals, sym_ids, st, ol, g, out, 0)
        bars += n_out
        if status == K.ST_OK:
            break
        assert status == K.ST_OUT_FULL, status
    return bars + K.flush_time_cpu(every, sym_ids, st, ol, g, out, 0, True)


def kernel_chunked(tr, every: int, chunk: int) -> int:
    agg = BarAggregator(every=every)
    n = len(tr["ts_ns"])
    nb = 0
    for a in range(0, n, chunk):
        nb += len(agg.update({k: v[a:a + chunk] for k, v in tr.items()})["symbol"])
    return nb + len(agg.flush()["symbol"])


def numpy_bars(tr, every: int) -> int:
    ts, sym, px, q = tr["ts_ns"], tr["symbol"], tr["price_ticks"], tr["qty"]
    usym, inv = np.unique(sym, return_inverse=True)
    key = (ts // every) * len(usym) + inv
    order = np.argsort(key, kind="stable")
    k, p, qq = key[order], px[order], q[order]
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    ends = np.r_[starts[1:], len(k)] - 1
    bars = {
        "symbol": usym[inv[order][starts]], "start_ns": (ts[order][starts] // every) * every,
        "open": p[starts], "high": np.maximum.reduceat(p, starts), "low": np.minimum.reduceat(p, starts),
        "close": p[ends], "volume": np.add.reduceat(qq, starts), "n_trades": np.diff(np.r_[starts, len(k)]),
        "pv": np.add.reduceat(p * qq, starts),
    }
    return len(bars["open"])


def python_bars(tr, every: int, n: int) -> int:
    ts, sym, px, q = (tr[c][:n].tolist() for c in ("ts_ns", "symbol", "price_ticks", "qty"))
    open_bars: dict[int, list] = {}
    out = []
    wend = None
    for t, s, p, v in zip(ts, sym, px, q):
        if wend is None or t >= wend:
            out.extend(open_bars.values())
            open_bars = {}
            wend = t - t % every + every
        b = open_bars.get(s)
        if b is None:
            open_bars[s] = [s, wend - every, p, p, p, p, v, 1, p * v]
        else:
            if p > b[3]:
                b[3] = p
            if p < b[4]:
                b[4] = p
            b[5] = p
            b[6] += v
            b[7] += 1
            b[8] += p * v
    out.extend(open_bars.values())
    return len(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trades", type=int, default=20_000_000)
    ap.add_argument("--every", default="1s")
    ap.add_argument("--symbols", type=int, nargs="+", default=[1, 64, 100_000])
    ap.add_argument("--chunk", type=int, default=1_000_000)
    ap.add_argument("--py-trades", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    every = parse_duration(a.every)
    print(f"{a.trades:,} trades, time bars every {a.every} ({every:,} ns), single thread; "
          f"best of {a.repeat}; Mtrades/s")
    hdr = (f"{'symbols':>7} {'bars':>9} {'kernel whole':>12} {'kernel chunked':>14} {'numpy':>8} "
           f"{'python':>8} {'kernel/numpy':>12} {'kernel/python':>13}")
    print(hdr)
    for n_sym in a.symbols:
        tr = make_trades(a.trades, n_sym)
        n = a.trades
        kernel_whole(make_trades(1000, n_sym), every, n_sym)  # compile / load from cache
        kernel_chunked(make_trades(1000, n_sym), every, 100)
        t_k, nb = best(lambda: kernel_whole(tr, every, n_sym), a.repeat)
        t_c, nb_c = best(lambda: kernel_chunked(tr, every, a.chunk), a.repeat)
        t_n, nb_n = best(lambda: numpy_bars(tr, every), a.repeat)
        n_py = min(a.py_trades, n)
        t_p, _ = best(lambda: python_bars(tr, every, n_py), 1)
        assert nb == nb_c == nb_n, (nb, nb_c, nb_n)
        rk, rc, rn, rp = n / t_k / 1e6, n / t_c / 1e6, n / t_n / 1e6, n_py / t_p / 1e6
        print(f"{n_sym:>7} {nb:>9,} {rk:>12.1f} {rc:>14.1f} {rn:>8.1f} {rp:>8.2f} {rk / rn:>11.1f}x {rk / rp:>12.0f}x")


if __name__ == "__main__":
    main()
