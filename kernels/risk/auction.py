"""Call-auction uncrossing kernel: one price for a whole book of limit orders.

At a price p, demand D(p) = lots of bids with price >= p, supply S(p) = lots of asks with price <= p,
executable volume V(p) = min(D(p), S(p)), imbalance I(p) = D(p) - S(p). The uncrossing price is,
among all integer tick prices, the one that

1. maximises V(p), then
2. minimises |I(p)|, then
3. minimises |p - reference| (skipped when there is no reference price), then
4. is the lowest.

D and S are constant between consecutive order prices, so the candidates are the order prices plus,
in each gap of two or more ticks between consecutive order prices, the one gap price that rule 3/4
prefers (the reference clamped into the gap, or the gap's lowest price without a reference).

Allocation at p: on each side, V lots go to the orders that may trade at p (bids >= p, asks <= p) in
price-time priority: better prices first, then earlier time, then input order. So every order with
a better price than p fills fully and orders at p fill by time priority, except in the one case
rules 3/4 create: when the side with the surplus has no order at p itself (p lies strictly between
its orders' prices), that side's marginal better-priced orders share V in the same priority.
The allocated quantities are then paired in priority order into fills, all at p.

Inputs are pre-sorted in priority order by the caller (engine/risk/auction.py):
bid_px : int64[nb], descending; bid_qty : int64[nb] > 0; ask_px : int64[na], ascending;
ask_qty : int64[na] > 0; prices in (0, 2**62], each side's total quantity <= 2**62.
"""
from __future__ import annotations

from numba import njit


@njit(cache=True, inline="always")
def _better(v, im, d, p, bv, bim, bd, bp):
    """(v, |im|, d, p) beats the best so far (bv, |bim|, bd, bp)?"""
    if v != bv:
        return v > bv
    a = im if im >= 0 else -im
    b = bim if bim >= 0 else -bim
    if a != b:
        return a < b
    if d != bd:
        return d < bd
    return p < bp


@njit(cache=True, inline="always")
def _dist(p, ref, has_ref):
    if not has_ref:
        return 0
    d = p - ref
    return d if d >= 0 else -d


@njit(cache=True)
def uncross_cpu(bid_px, bid_qty, ask_px, ask_qty, ref, has_ref, bid_fill, ask_fill, f_bid, f_ask, f_qty):
    """Uncross one book.

    Parameters
    ----------
    bid_px, bid_qty, ask_px, ask_qty : the book in priority order (module docstring).
    ref : int64, reference price in ticks; has_ref : bool (False: rule 3 is skipped).
    bid_fill : int64[nb], out, lots allocated to each bid; ask_fill : int64[na], likewise.
    f_bid, f_ask, f_qty : int64[nb + na], out: fills as (bid position, ask position, lots).

    Returns
    -------
    (price, volume, imbalance, n_fills): price 0 and everything 0 when nothing crosses.
    """
    nb = bid_px.shape[0]
    na = ask_px.shape[0]
    tot_b = 0
    for i in range(nb):
        tot_b += bid_qty[i]
        bid_fill[i] = 0
    for j in range(na):
        ask_fill[j] = 0
    # sweep the distinct prices ascending: bids from the end of their (descending) list
    bi = nb - 1          # next bid (lowest price not yet passed)
    aj = 0               # next ask
    below_b = 0          # lots of bids with price < current price
    s = 0                # lots of asks with price <= current price
    best_v = 0
    best_im = 0
    best_d = 0
    best_p = 0
    prev = -1            # previous distinct price (-1: none yet)
    prev_d_next = 0      # D just above prev = tot_b - bids <= prev
    prev_s = 0           # S(prev)
    while bi >= 0 or aj < na:
        if aj < na and (bi < 0 or ask_px[aj] <= bid_px[bi]):
            p = ask_px[aj]
        else:
            p = bid_px[bi]
        # the gap (prev, p): D = tot_b - bids <= prev, S = S(prev)
        if prev >= 0 and p - prev >= 2:
            x = prev + 1
            if has_ref:
                x = ref if ref > prev + 1 else prev + 1
                if x > p - 1:
                    x = p - 1
            v = prev_d_next if prev_d_next < prev_s else prev_s
            if v > 0 and _better(v, prev_d_next - prev_s, _dist(x, ref, has_ref), x,
                                 best_v, best_im, best_d, best_p):
                best_v, best_im, best_d, best_p = v, prev_d_next - prev_s, _dist(x, ref, has_ref), x
        # the price p itself (every bid below p is already in below_b)
        d = tot_b - below_b
        while aj < na and ask_px[aj] == p:
            s += ask_qty[aj]
            aj += 1
        v = d if d < s else s
        if v > 0 and _better(v, d - s, _dist(p, ref, has_ref), p, best_v, best_im, best_d, best_p):
            best_v, best_im, best_d, best_p = v, d - s, _dist(p, ref, has_ref), p
        while bi >= 0 and bid_px[bi] == p:
            below_b += bid_qty[bi]
            bi -= 1
        prev = p
        prev_d_next = tot_b - below_b
        prev_s = s
    if best_v == 0:
        return 0, 0, 0, 0
    price = best_p
    # allocation in priority order
    rem = best_v
    for i in range(nb):
        if rem == 0 or bid_px[i] < price:
            break
        q = bid_qty[i] if bid_qty[i] < rem else rem
        bid_fill[i] = q
        rem -= q
    rem = best_v
    for j in range(na):
        if rem == 0 or ask_px[j] > price:
            break
        q = ask_qty[j] if ask_qty[j] < rem else rem
        ask_fill[j] = q
        rem -= q
    # pair the allocations in priority order
    k = 0
    i = 0
    j = 0
    lb = bid_fill[0] if nb > 0 else 0
    la = ask_fill[0] if na > 0 else 0
    while i < nb and j < na and bid_fill[i] > 0 and ask_fill[j] > 0:
        q = lb if lb < la else la
        f_bid[k] = i
        f_ask[k] = j
        f_qty[k] = q
        k += 1
        lb -= q
        la -= q
        if lb == 0:
            i += 1
            if i < nb:
                lb = bid_fill[i]
        if la == 0:
            j += 1
            if j < na:
                la = ask_fill[j]
    return price, best_v, best_im, k
