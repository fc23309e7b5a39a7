"""Brute-force reference of the call-auction uncrossing (hpte.kernels.risk.auction): every integer tick
price between the lowest and the highest order price is tried, D and S summed from scratch."""
from __future__ import annotations


def uncross_ref(bids: list[tuple[int, int, int]], asks: list[tuple[int, int, int]], ref: int | None):
    """bids, asks: (price, qty, time) per order. Returns (price or None, volume, imbalance,
    bid_fill, ask_fill) with fills per input order."""
    prices = [p for p, _, _ in bids] + [p for p, _, _ in asks]
    best = None
    if prices:
        for p in range(min(prices), max(prices) + 1):
            d = sum(q for bp, q, _ in bids if bp >= p)
            s = sum(q for ap, q, _ in asks if ap <= p)
            v = min(d, s)
            if v == 0:
                continue
            key = (-v, abs(d - s), abs(p - ref) if ref is not None else 0, p)
            if best is None or key < best[0]:
                best = (key, p, v, d - s)
    if best is None:
        return None, 0, 0, [0] * len(bids), [0] * len(asks)
    _, price, vol, imb = best
    bid_fill, ask_fill = [0] * len(bids), [0] * len(asks)
    # better prices first, then earlier time, then input order; only orders that may trade at price
    for fill, orders, better in ((bid_fill, bids, lambda o: (-o[1][0], o[1][2], o[0])),
                                 (ask_fill, asks, lambda o: (o[1][0], o[1][2], o[0]))):
        rem = vol
        for i, (p, q, _) in sorted(enumerate(orders), key=better):
            ok = p >= price if orders is bids else p <= price
            if ok and rem:
                fill[i] = min(q, rem)
                rem -= fill[i]
    return price, vol, imb, bid_fill, ask_fill
