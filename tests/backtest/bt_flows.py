"""Small L3 market-event streams for the backtest tests (seeded, plain Python)."""
from __future__ import annotations

import numpy as np

from hpte.engine.backtest.data import MarketEvents
from hpte.kernels.backtest import api as A


def random_flow(seed: int, n: int, tick: int = 2, mid: int = 1000, width: int = 6,
                dt_max: int = 3_000) -> MarketEvents:
    """n events of a random L3 book: adds near the mid, cancels (partial and full) of live
    orders, FIFO executions at the best level, hidden trades, seeds and cancels of unknown
    orders; time steps 0..dt_max ns (many equal times)."""
    r = np.random.default_rng(seed)
    live = {1: {}, -1: {}}      # side -> {price: [[oid, qty], ...]} in arrival order
    rows = []
    t = 1_000_000_000
    next_id = 1
    for _ in range(n):
        t += int(r.integers(0, dt_max + 1)) if r.random() < 0.7 else 0
        u = r.random()
        bids = [p for p, q in live[1].items() if q]
        asks = [p for p, q in live[-1].items() if q]
        bb = max(bids) if bids else None
        ba = min(asks) if asks else None
        if u < 0.45 or not (bids or asks):
            side = 1 if r.random() < 0.5 else -1
            d = int(r.integers(0, width))
            p = (mid - 1 - d) * tick if side == 1 else (mid + 1 + d) * tick
            if side == 1 and ba is not None and p >= ba:
                p = ba - tick
            if side == -1 and bb is not None and p <= bb:
                p = bb + tick
            q = int(r.integers(1, 8))
            live[side].setdefault(p, []).append([next_id, q])
            rows.append((t, A.MK_ADD, next_id, side, p, q))
            next_id += 1
        elif u < 0.70:
            side = 1 if (r.random() < 0.5 and bids) or not asks else -1
            p = [x for x, q in live[side].items() if q][int(r.integers(0, len([x for x, q in live[side].items() if q])))]
            lvl = live[side][p]
            j = int(r.integers(0, len(lvl)))
            oid, q = lvl[j]
            c = q if r.random() < 0.7 else int(r.integers(1, q + 1))
            lvl[j][1] -= c
            if lvl[j][1] == 0:
                lvl.pop(j)
            rows.append((t, A.MK_CANCEL, oid, side, p, c))
        elif u < 0.88:
            side = 1 if (r.random() < 0.5 and bids) or not asks else -1
            p = bb if side == 1 else ba
            lvl = live[side][p]
            oid, q = lvl[0]
            c = q if r.random() < 0.6 else int(r.integers(1, q + 1))
            lvl[0][1] -= c
            if lvl[0][1] == 0:
                lvl.pop(0)
            rows.append((t, A.MK_EXEC, oid, side, p, c))
        elif u < 0.94:
            side = 1 if r.random() < 0.5 else -1
            p = (bb if side == 1 else ba) or mid * tick
            p = p + int(r.integers(-1, 2))     # hidden prints may be off the grid
            rows.append((t, A.MK_TRADE, 0, side, max(p, 1), int(r.integers(1, 6))))
        elif u < 0.97:
            side = 1 if r.random() < 0.5 else -1
            p = (mid - 2 - int(r.integers(0, width))) * tick if side == 1 else (mid + 2 + int(r.integers(0, width))) * tick
            if (side == 1 and ba is not None and p >= ba) or (side == -1 and bb is not None and p <= bb):
                continue
            q = int(r.integers(1, 6))
            live[side].setdefault(p, []).append([-(next_id), q])   # unknown to the stream: no id
            next_id += 1
            rows.append((t, A.MK_SEED, -1, side, p, q))
        else:
            # a cancel of quantity the stream never introduced by id (id -1), from a seeded level
            side = 1 if r.random() < 0.5 else -1
            cands = [(p, j) for p, lvl in live[side].items() for j, (oid, q) in enumerate(lvl) if oid < 0]
            if not cands:
                continue
            p, j = cands[int(r.integers(0, len(cands)))]
            lvl = live[side][p]
            c = lvl[j][1]
            lvl.pop(j)
            rows.append((t, A.MK_CANCEL, -1, side, p, c))
    a = np.array(rows, np.int64).reshape(-1, 6)
    return MarketEvents(ts_ns=a[:, 0], kind=a[:, 1], order_id=a[:, 2], side=a[:, 3], price=a[:, 4],
                        qty=a[:, 5], tick=tick, name=f"random_flow({seed})")


def random_l2_flow(seed: int, n: int, tick: int = 2, mid: int = 1000, width: int = 6,
                   dt_max: int = 3_000) -> MarketEvents:
    """n rows of a random L2 book (no order ids): LEVEL rows (a level's new quantity: grows,
    shrinks, empties, new levels inside the spread) and TRADE rows at the best levels (each
    followed, mostly, by the level's decrease, sometimes by more or less than the trade, as a
    lagging feed shows it), trades through the book and off the grid; many equal times. The
    book stays uncrossed."""
    r = np.random.default_rng(seed)
    lv = {1: {}, -1: {}}
    rows = []
    t = 1_000_000_000

    def best(s):
        ps = [p for p, q in lv[s].items() if q > 0]
        return (max(ps) if s == 1 else min(ps)) if ps else None

    def put(s, p, q):
        lv[s][p] = q
        rows.append((t, A.MK_LEVEL, -1, s, p, q))

    while len(rows) < n:
        t += int(r.integers(0, dt_max + 1)) if r.random() < 0.7 else 0
        u = r.random()
        bb, ba = best(1), best(-1)
        s = 1 if r.random() < 0.5 else -1
        if u < 0.5 or (bb is None and ba is None):
            d = int(r.integers(0, width))
            p = (mid - 1 - d) * tick if s == 1 else (mid + 1 + d) * tick
            if s == 1 and ba is not None and p >= ba:
                p = ba - tick
            if s == -1 and bb is not None and p <= bb:
                p = bb + tick
            old = lv[s].get(p, 0)
            v = r.random()
            if old and v < 0.15:
                q = 0
            elif old and v < 0.55:
                q = int(r.integers(0, old))
            else:
                q = old + int(r.integers(1, 8))
            put(s, p, q)
        elif u < 0.8:
            b = bb if s == 1 else ba
            if b is None:
                continue
            q = int(r.integers(1, lv[s][b] + 1))
            rows.append((t, A.MK_TRADE, -1, s, b, q))
            v = r.random()
            if v < 0.7:
                put(s, b, lv[s][b] - q)
            elif v < 0.85:
                put(s, b, max(0, lv[s][b] - q - int(r.integers(0, 3))))
        elif u < 0.9:
            b = (bb if s == 1 else ba) or mid * tick
            p = b + (int(r.integers(-2, 3)) * tick if r.random() < 0.7 else int(r.integers(-1, 2)))
            rows.append((t, A.MK_TRADE, -1, s, max(p, 1), int(r.integers(1, 6))))
        else:       # a new level inside the spread
            if bb is None or ba is None or ba - bb <= tick:
                continue
            p = bb + tick if s == 1 else ba - tick
            put(s, p, int(r.integers(1, 6)))
    a = np.array(rows[:n], np.int64).reshape(-1, 6)
    return MarketEvents(ts_ns=a[:, 0], kind=a[:, 1], order_id=a[:, 2], side=a[:, 3], price=a[:, 4],
                        qty=a[:, 5], tick=tick, name=f"random_l2_flow({seed})")
