"""Call auctions (opening, closing, re-opening after a halt): uncross a book of limit orders at
one price. Rules and allocation: kernels/risk/auction.py.

    res = uncross((bid_px, bid_qty, bid_time), (ask_px, ask_qty, ask_time), reference_price=10_000)
    res.price, res.volume, res.imbalance       # None / 0 / 0 when nothing crosses
    res.bid_fill, res.ask_fill                 # lots per input order
    res.fills                                  # {"bid", "ask", "qty"}: input positions, all at res.price

    fills, books = auction_orders(order_columns, symbol=None, reference_price=None)
"""
from __future__ import annotations

from typing import Mapping, NamedTuple

import numpy as np

from hpte.kernels.risk import auction as K
from hpte.engine import schema as S
from hpte.engine.io import InputError, cast_checked

BIG = 1 << 62


class AuctionResult(NamedTuple):
    price: int | None       # uncrossing price in ticks (None: the book does not cross)
    volume: int             # lots executed
    imbalance: int          # demand - supply at the price (> 0: buy surplus)
    bid_fill: np.ndarray    # int64[nb], lots filled per bid (input order)
    ask_fill: np.ndarray    # int64[na]
    fills: dict             # "bid", "ask": int64 input positions; "qty": int64 lots


def _side(name: str, side) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if isinstance(side, Mapping):
        cols = [side[k] for k in ("price", "qty", "time")]
    else:
        cols = list(side)
        if len(cols) != 3:
            raise InputError(f"{name}: expected (price, qty, time), got {len(cols)} arrays")
    px, qty, t = (cast_checked(np.ascontiguousarray(np.atleast_1d(np.asarray(c))), np.dtype(np.int64), f"{name}.{k}")
                  for c, k in zip(cols, ("price", "qty", "time")))
    if not len(px) == len(qty) == len(t):
        raise InputError(f"{name}: price, qty and time have different lengths ({len(px)}, {len(qty)}, {len(t)})")
    for arr, k, lo in ((px, "price", 1), (qty, "qty", 1)):
        bad = np.flatnonzero((arr < lo) | (arr > BIG))
        if bad.size:
            raise InputError(f"{name}.{k} row {int(bad[0])}: must be in [1, 2**62], got {int(arr[bad[0]])}")
    if len(qty) and qty.sum(dtype=np.float64) > BIG * 0.99 and sum(int(q) for q in qty) > BIG:
        raise InputError(f"{name}.qty: total quantity exceeds 2**62 lots")
    return px, qty, t


def uncross(bids, asks, reference_price: int | None = None) -> AuctionResult:
    """Uncross one book. ``bids`` / ``asks``: (price, qty, time) arrays (or a mapping with those
    keys): prices in ticks, qty in lots, time any int64 (earlier = higher priority; ties: input
    order). ``reference_price``: ticks, or None."""
    bp, bq, bt = _side("bids", bids)
    ap, aq, at = _side("asks", asks)
    if reference_price is not None and not (isinstance(reference_price, (int, np.integer))
                                            and 0 < int(reference_price) <= BIG):
        raise InputError(f"reference_price must be an integer in [1, 2**62] ticks, got {reference_price!r}")
    nb, na = len(bp), len(ap)
    bo = np.lexsort((np.arange(nb), bt, -bp))     # price desc, time asc, input order
    ao = np.lexsort((np.arange(na), at, ap))      # price asc, time asc, input order
    bf, af = np.zeros(nb, np.int64), np.zeros(na, np.int64)
    fb, fa, fq = (np.zeros(nb + na, np.int64) for _ in range(3))
    price, vol, imb, k = K.uncross_cpu(bp[bo], bq[bo], ap[ao], aq[ao],
                                       np.int64(reference_price or 0), reference_price is not None,
                                       bf, af, fb, fa, fq)
    bid_fill, ask_fill = np.zeros(nb, np.int64), np.zeros(na, np.int64)
    bid_fill[bo], ask_fill[ao] = bf, af
    fills = {"bid": bo[fb[:k]], "ask": ao[fa[:k]], "qty": fq[:k].copy()}
    return AuctionResult(int(price) if vol else None, int(vol), int(imb), bid_fill, ask_fill, fills)


def auction_orders(cols: Mapping[str, np.ndarray], symbol: int | None = None,
                   reference_price: int | None = None,
                   seq: int | None = None) -> tuple[dict, list[dict]]:
    """Run a call auction per book over an order stream's NEW LIMIT orders (valid side, qty > 0,
    price > 0; CANCEL and REPLACE rows and MARKET orders are ignored). Time priority = row order.

    Returns (fills, books): fills as columns of schema.FILL_COLUMNS, buyer in the ``taker_*``
    columns and seller in the ``maker_*`` columns, ``taker_side`` = BUY, ``seq`` = the number of
    input rows (the seq the next row would have), ``ts_ns`` = the last row's ts_ns; books: one
    summary dict per symbol (ascending): symbol, orders, price (None), volume, imbalance, fills.
    """
    n = len(cols["ts_ns"])
    if seq is None:
        seq = n
    sel = (cols["action"] == S.ACT_NEW) & (cols["order_type"] == S.OT_LIMIT) & (cols["qty"] > 0) & \
          (cols["price_ticks"] > 0) & ((cols["side"] == S.BUY) | (cols["side"] == S.SELL))
    if symbol is not None:
        sel &= cols["symbol"] == symbol
    rows = np.flatnonzero(sel)
    syms = np.unique(cols["symbol"][rows])
    if reference_price is not None and len(syms) > 1:
        raise InputError(f"--reference-price applies to one book, but the orders have {len(syms)} symbols; "
                         f"pick one with --symbol")
    ts_end = int(cols["ts_ns"][-1]) if n else 0
    parts, books = [], []
    for s in syms:
        r = rows[cols["symbol"][rows] == s]
        b = r[cols["side"][r] == S.BUY]
        a = r[cols["side"][r] == S.SELL]
        res = uncross((cols["price_ticks"][b], cols["qty"][b], b), (cols["price_ticks"][a], cols["qty"][a], a),
                      reference_price)
        k = len(res.fills["qty"])
        bi, ai = b[res.fills["bid"]], a[res.fills["ask"]]
        parts.append({
            "seq": np.full(k, seq, np.uint64), "ts_ns": np.full(k, ts_end, np.int64),
            "symbol": np.full(k, s, np.uint32),
            "taker_order_id": cols["order_id"][bi], "maker_order_id": cols["order_id"][ai],
            "taker_account": cols["account"][bi], "maker_account": cols["account"][ai],
            "taker_side": np.full(k, S.BUY, np.int8),
            "price_ticks": np.full(k, res.price or 0, np.int64), "qty": res.fills["qty"]})
        books.append({"symbol": int(s), "orders": int(len(r)), "bids": int(len(b)), "asks": int(len(a)),
                      "price": res.price, "volume": res.volume, "imbalance": res.imbalance, "fills": k})
    fills = {name: (np.concatenate([p[name] for p in parts]).astype(dt) if parts else np.empty(0, dt))
             for name, dt in S.FILL_COLUMNS}
    return fills, books
