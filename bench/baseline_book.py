"""The baseline for issue 10: a straightforward numba limit order book, trades only.

What a competent engineer writes in an afternoon: one book, a price ladder (an array indexed by
tick offset from a base price) with a FIFO per level kept as a doubly linked list through an
order pool, hashed order ids (open addressing, linear probing, backward-shift deletion), best
bid / ask found by a linear scan when a level empties. It writes fills only (taker id, maker id,
price, quantity) into preallocated arrays: no order events, no L2 deltas, no validation, no
STP, no risk. Benchmarks run it beside ``hpte`` in the same process on the same flow, so their
ratios survive a noisy shared machine (bench/bench_core_speed.py).

Semantics on the FORMATS.md flow (NEW LIMIT GTC / IOC, MARKET, CANCEL): price-time priority,
fills at the maker's price, IOC remainder dropped. REPLACE rows and FOK are not handled (the
benchmark flow has none). ``baseline_match`` returns the number of fills, or -1 when the fills
arrays or the ladder were too small (the bench sizes them so that this does not happen).
"""
from __future__ import annotations

import numpy as np
from numba import njit

_HMUL = np.uint64(0x9E3779B97F4A7C15)


@njit(cache=True, inline="always")
def _slot_of(key, mask):
    x = key * _HMUL
    return np.int64((x ^ (x >> np.uint64(29))) & np.uint64(mask))


@njit(cache=True)
def _find(tab, mask, pid, key):
    i = _slot_of(key, mask)
    while True:
        v = tab[i]
        if v < 0:
            return -1
        if pid[v] == key:
            return v
        i = (i + 1) & mask


@njit(cache=True)
def _insert(tab, mask, key, slot):
    i = _slot_of(key, mask)
    while tab[i] >= 0:
        i = (i + 1) & mask
    tab[i] = slot


@njit(cache=True)
def _delete(tab, mask, pid, key):
    i = _slot_of(key, mask)
    while True:
        v = tab[i]
        if v < 0:
            return
        if pid[v] == key:
            break
        i = (i + 1) & mask
    j = i
    while True:
        j = (j + 1) & mask
        v = tab[j]
        if v < 0:
            break
        k = _slot_of(pid[v], mask)
        if (i <= j and i < k <= j) or (i > j and (i < k or k <= j)):
            continue
        tab[i] = v
        i = j
    tab[i] = -1


@njit(cache=True)
def baseline_match(oid, side, px, qty, action, otype, tif, nlev, f_taker, f_maker, f_px, f_qty):
    """Match one book's rows in order; fills into f_* (capacity len(f_taker)). Returns the
    number of fills, or -1 when out of room."""
    n = oid.shape[0]
    base = np.int64(0)
    for i in range(n):                       # centre the ladder on the first limit price
        if action[i] == 0 and otype[i] == 0:
            base = px[i] - nlev // 2
            break
    head = np.full(nlev, -1, np.int64)
    tail = np.full(nlev, -1, np.int64)
    cap = 1 << 16
    pid = np.zeros(cap, np.uint64)
    pqty = np.zeros(cap, np.int64)
    plev = np.zeros(cap, np.int64)
    pnext = np.full(cap, -1, np.int64)
    pprev = np.full(cap, -1, np.int64)
    mask = 2 * cap - 1
    tab = np.full(2 * cap, -1, np.int64)
    free = -1
    hw = 0
    best_bid = -1
    best_ask = nlev
    nf = 0
    nfmax = f_taker.shape[0]
    for i in range(n):
        a = action[i]
        if a == 1:                                     # CANCEL
            s = _find(tab, mask, pid, oid[i])
            if s < 0:
                continue
            lv = plev[s]
            p = pprev[s]
            q = pnext[s]
            if p >= 0:
                pnext[p] = q
            else:
                head[lv] = q
            if q >= 0:
                pprev[q] = p
            else:
                tail[lv] = p
            _delete(tab, mask, pid, oid[i])
            pnext[s] = free
            free = s
            if head[lv] < 0:
                if lv == best_bid:
                    while best_bid >= 0 and head[best_bid] < 0:
                        best_bid -= 1
                elif lv == best_ask:
                    while best_ask < nlev and head[best_ask] < 0:
                        best_ask += 1
            continue
        if a != 0:
            continue
        q = qty[i]
        market = otype[i] == 1
        lv_in = px[i] - base
        if side[i] > 0:                                # buy: take asks from the best up
            while q > 0 and best_ask < nlev and (market or best_ask <= lv_in):
                s = head[best_ask]
                while s >= 0 and q > 0:
                    f = min(q, pqty[s])
                    if nf >= nfmax:
                        return -1
                    f_taker[nf] = oid[i]
                    f_maker[nf] = pid[s]
                    f_px[nf] = base + best_ask
                    f_qty[nf] = f
                    nf += 1
                    q -= f
                    pqty[s] -= f
                    nxt = pnext[s]
                    if pqty[s] == 0:
                        _delete(tab, mask, pid, pid[s])
                        head[best_ask] = nxt
                        if nxt >= 0:
                            pprev[nxt] = -1
                        else:
                            tail[best_ask] = -1
                        pnext[s] = free
                        free = s
                    s = nxt
                if head[best_ask] < 0:
                    while best_ask < nlev and head[best_ask] < 0:
                        best_ask += 1
        else:                                          # sell: take bids from the best down
            while q > 0 and best_bid >= 0 and (market or best_bid >= lv_in):
                s = head[best_bid]
                while s >= 0 and q > 0:
                    f = min(q, pqty[s])
                    if nf >= nfmax:
                        return -1
                    f_taker[nf] = oid[i]
                    f_maker[nf] = pid[s]
                    f_px[nf] = base + best_bid
                    f_qty[nf] = f
                    nf += 1
                    q -= f
                    pqty[s] -= f
                    nxt = pnext[s]
                    if pqty[s] == 0:
                        _delete(tab, mask, pid, pid[s])
                        head[best_bid] = nxt
                        if nxt >= 0:
                            pprev[nxt] = -1
                        else:
                            tail[best_bid] = -1
                        pnext[s] = free
                        free = s
                    s = nxt
                if head[best_bid] < 0:
                    while best_bid >= 0 and head[best_bid] < 0:
                        best_bid -= 1
        if q == 0 or market or tif[i] == 1 or tif[i] == 2:
            continue
        if lv_in < 0 or lv_in >= nlev:
            return -1                                   # ladder too small for this flow
        if free >= 0:                                   # rest: a slot from the free list or fresh
            s = free
            free = pnext[s]
        else:
            if hw == cap:                               # grow the pool and rebuild the id table
                ncap = 2 * cap
                pid2 = np.zeros(ncap, np.uint64)
                pid2[:cap] = pid
                pid = pid2
                pqty2 = np.zeros(ncap, np.int64)
                pqty2[:cap] = pqty
                pqty = pqty2
                plev2 = np.zeros(ncap, np.int64)
                plev2[:cap] = plev
                plev = plev2
                pn2 = np.full(ncap, -1, np.int64)
                pn2[:cap] = pnext
                pnext = pn2
                pp2 = np.full(ncap, -1, np.int64)
                pp2[:cap] = pprev
                pprev = pp2
                cap = ncap
                mask = 2 * cap - 1
                tab = np.full(2 * cap, -1, np.int64)
                for lv in range(nlev):
                    t = head[lv]
                    while t >= 0:
                        _insert(tab, mask, pid[t], t)
                        t = pnext[t]
            s = hw
            hw += 1
        pid[s] = oid[i]
        pqty[s] = q
        plev[s] = lv_in
        t = tail[lv_in]
        pprev[s] = t
        pnext[s] = -1
        if t >= 0:
            pnext[t] = s
        else:
            head[lv_in] = s
        tail[lv_in] = s
        _insert(tab, mask, oid[i], s)
        if side[i] > 0:
            if lv_in > best_bid:
                best_bid = lv_in
        elif lv_in < best_ask:
            best_ask = lv_in
    return nf


def run_baseline(cols: dict, nlev: int = 1 << 18):
    """Match order columns (FORMATS.md) with the baseline book; returns the fills as a dict of
    arrays (taker_order_id, maker_order_id, price_ticks, qty)."""
    n = len(cols["ts_ns"])
    cap = n + 1024
    f = [np.empty(cap, np.uint64), np.empty(cap, np.uint64), np.empty(cap, np.int64), np.empty(cap, np.int64)]
    nf = baseline_match(cols["order_id"], cols["side"], cols["price_ticks"], cols["qty"], cols["action"],
                        cols["order_type"], cols["tif"], nlev, *f)
    if nf < 0:
        raise RuntimeError("baseline book: fills arrays or ladder too small for this flow")
    return dict(zip(("taker_order_id", "maker_order_id", "price_ticks", "qty"), (a[:nf] for a in f)))
