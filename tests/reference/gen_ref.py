"""Plain-Python reference of hpte.kernels.gen.gen_flow_cpu (the flow generator's book step).

Consumes the same pre-drawn inputs (hpte.engine.gen.draw_flow_inputs) and must give identical
rows and counters. The book is implemented independently and naively: a dict price -> FIFO list
per book and side, best prices found by scanning the dict. Only the resting list (a Python list
with swap-remove) mirrors the kernel, because it defines which order a uniform pick cancels.
"""
from __future__ import annotations

import math

import numpy as np

from hpte.engine import schema as S
from hpte.kernels import gen as K

MASK = (1 << 64) - 1


def mix64_ref(x: int) -> int:
    """SplitMix64 finaliser on Python ints."""
    x &= MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


def gen_flow_ref(setup, draws) -> tuple[dict[str, np.ndarray], list[int], list[int], int]:
    """Generate the rows of a whole flow.

    Returns (columns, counters, resting count per book, levels touched).
    """
    n = len(setup.sym)
    n_books = len(setup.lad_lo)
    key = int(setup.key)
    rows = {c: [0] * n for c in ("order_id", "side", "price_ticks", "qty", "action", "tif", "account")}
    cnt = [0] * K.N_COUNTERS
    bids = [dict() for _ in range(n_books)]  # price -> [row, ...] FIFO
    asks = [dict() for _ in range(n_books)]
    resting = [[] for _ in range(n_books)]    # rows, swap-remove order
    leaves: dict[int, int] = {}
    touched: set[tuple[int, int]] = set()

    def remove_resting(b, j):
        lst = resting[b]
        pos = lst.index(j)
        lst[pos] = lst[-1]
        lst.pop()

    for i in range(n):
        b = int(setup.sym[i])
        lo, hi = int(setup.lad_lo[b]), int(setup.lad_hi[b])
        r = math.floor(float(setup.mid[i]) + 0.5)
        kd = int(draws["kind"][i])
        if kd == K.GEN_CANCEL and not resting[b]:
            kd = K.GEN_NEW
            cnt[K.C_CANCEL_AS_NEW] += 1
        if kd == K.GEN_CANCEL:
            nr = len(resting[b])
            pos = min(int(float(draws["u_pick"][i]) * nr), nr - 1)
            j = resting[b][pos]
            s, p = rows["side"][j], rows["price_ticks"][j]
            rows["order_id"][i] = rows["order_id"][j]
            rows["side"][i] = s
            rows["price_ticks"][i] = p
            rows["qty"][i] = leaves[j]
            rows["action"][i] = S.ACT_CANCEL
            rows["tif"][i] = S.TIF_GTC
            rows["account"][i] = rows["account"][j]
            cnt[K.C_CANCEL] += 1
            book = bids[b] if s == S.BUY else asks[b]
            book[p].remove(j)
            if not book[p]:
                del book[p]
            del leaves[j]
            remove_resting(b, j)
            continue

        s = int(draws["side"][i])
        opp_book = asks[b] if s == S.BUY else bids[b]
        opp = (min(opp_book) if s == S.BUY else max(opp_book)) if opp_book else None
        if kd == K.GEN_IOC:
            p = opp + s * (int(draws["ioc_g"][i]) - 1) if opp is not None else r
            p = max(p, 1)
            scale = min(max(len(resting[b]) / K.IOC_SCALE_REF, K.IOC_SCALE_MIN), K.IOC_SCALE_MAX)
            q = max(int(int(draws["ioc_q"][i]) * scale), 1)
            rows["tif"][i] = S.TIF_IOC
            cnt[K.C_IOC] += 1
            cnt[K.C_IOC_QTY] += q
        else:
            if draws["mkt"][i] and opp is not None:
                p = opp + s * int(draws["through"][i])
                cnt[K.C_MARKETABLE] += 1
            else:
                p = r - s * int(draws["dist"][i])
                if opp is not None:
                    p = min(p, opp - 1) if s == S.BUY else max(p, opp + 1)
                cnt[K.C_PASSIVE] += 1
                cnt[K.C_PASSIVE_DIST] += abs(p - r)
            if p < lo or p > hi:
                cnt[K.C_CLIPPED] += 1
                p = min(max(p, lo), hi)
            q = int(draws["qty"][i])
            rows["tif"][i] = S.TIF_GTC
            cnt[K.C_NEW] += 1
        rows["order_id"][i] = mix64_ref(key + i)
        rows["side"][i] = s
        rows["price_ticks"][i] = p
        rows["qty"][i] = q
        rows["action"][i] = S.ACT_NEW
        rows["account"][i] = int(draws["account"][i])

        while q > 0 and opp_book:
            lp = min(opp_book) if s == S.BUY else max(opp_book)
            if (s == S.BUY and lp > p) or (s != S.BUY and lp < p):
                break
            queue = opp_book[lp]
            while queue and q > 0:
                h = queue[0]
                f = min(q, leaves[h])
                q -= f
                leaves[h] -= f
                cnt[K.C_TRADES] += 1
                cnt[K.C_TRADED_QTY] += f
                if leaves[h] == 0:
                    queue.pop(0)
                    del leaves[h]
                    remove_resting(b, h)
            if not queue:
                del opp_book[lp]
        if q > 0:
            if kd == K.GEN_IOC:
                cnt[K.C_IOC_EXPIRED] += q
                continue
            own = bids[b] if s == S.BUY else asks[b]
            own.setdefault(p, []).append(i)
            leaves[i] = q
            resting[b].append(i)
            touched.add((b, p))

    cols = {
        "order_id": np.array(rows["order_id"], dtype=np.uint64),
        "side": np.array(rows["side"], dtype=np.int8),
        "price_ticks": np.array(rows["price_ticks"], dtype=np.int64),
        "qty": np.array(rows["qty"], dtype=np.int64),
        "action": np.array(rows["action"], dtype=np.uint8),
        "tif": np.array(rows["tif"], dtype=np.uint8),
        "account": np.array(rows["account"], dtype=np.uint32),
    }
    return cols, cnt, [len(x) for x in resting], len(touched)
