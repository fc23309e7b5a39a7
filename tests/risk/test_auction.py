"""Call-auction uncrossing against a brute-force reference over every tick price, fill properties
(conservation, limit prices, price-time priority), edge cases, and `hpte risk auction`."""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st
from reference.auction_ref import uncross_ref
from typer.testing import CliRunner

from hpte.cli.main import app
from hpte.engine import io
from hpte.engine import schema as S
from hpte.engine.risk.auction import auction_orders, uncross
from hpte.engine.io import InputError

runner = CliRunner()


def side(orders):
    return (np.array([o[0] for o in orders], np.int64), np.array([o[1] for o in orders], np.int64),
            np.array([o[2] for o in orders], np.int64))


def run(bids, asks, ref=None):
    return uncross(side(bids), side(asks), ref)


def test_empty_one_sided_and_uncrossed_books():
    for b, a in (([], []), ([(100, 5, 0)], []), ([], [(100, 5, 0)]), ([(99, 5, 0)], [(100, 5, 0)])):
        r = run(b, a, 100)
        assert (r.price, r.volume, r.imbalance, len(r.fills["qty"])) == (None, 0, 0, 0)
        assert r.bid_fill.tolist() == [0] * len(b) and r.ask_fill.tolist() == [0] * len(a)


def test_classic_book():
    bids = [(102, 10, 0), (101, 5, 1), (100, 20, 2), (99, 30, 3)]
    asks = [(98, 8, 0), (100, 12, 1), (101, 15, 2), (103, 5, 3)]
    r = run(bids, asks)
    # V(100) = min(35, 20) = 20, V(101) = min(15, 35) = 15 -> 100
    assert (r.price, r.volume, r.imbalance) == (100, 20, 15)
    assert r.bid_fill.tolist() == [10, 5, 5, 0] and r.ask_fill.tolist() == [8, 12, 0, 0]
    assert list(zip(r.fills["bid"].tolist(), r.fills["ask"].tolist(), r.fills["qty"].tolist())) == \
        [(0, 0, 8), (0, 1, 2), (1, 1, 5), (2, 1, 5)]


def test_reference_price_inside_a_gap_is_chosen():
    # V = 10 and imbalance 0 for every price in [95, 105]: the reference wins, even between orders
    assert run([(105, 10, 0)], [(95, 10, 0)], 100).price == 100
    assert run([(105, 10, 0)], [(95, 10, 0)], 200).price == 105
    assert run([(105, 10, 0)], [(95, 10, 0)], 1).price == 95
    assert run([(105, 10, 0)], [(95, 10, 0)], None).price == 95      # no reference: the lowest


def test_time_priority_at_the_price_and_input_order_on_ties():
    bids = [(100, 5, 3), (100, 5, 1), (100, 5, 1), (101, 2, 9)]
    asks = [(100, 9, 0)]
    r = run(bids, asks)
    assert r.price == 100 and r.volume == 9
    assert r.bid_fill.tolist() == [0, 5, 2, 2]


def test_validation_names_the_field():
    with pytest.raises(InputError, match=r"bids.qty row 1"):
        run([(100, 5, 0), (100, 0, 0)], [])
    with pytest.raises(InputError, match=r"asks.price row 0"):
        run([], [(0, 5, 0)])
    with pytest.raises(InputError, match="reference_price"):
        run([], [], -5)
    with pytest.raises(InputError, match="different lengths"):
        uncross(([1, 2], [1], [0]), ([], [], []))


books = st.lists(st.tuples(st.integers(90, 110), st.integers(1, 20), st.integers(0, 5)), max_size=12)


@given(bids=books, asks=books, ref=st.one_of(st.none(), st.integers(80, 120)))
def test_uncross_equals_brute_force_and_fills_are_sound(bids, asks, ref):
    r = run(bids, asks, ref)
    price, vol, imb, bf, af = uncross_ref(bids, asks, ref)
    assert (r.price, r.volume, r.imbalance) == (price, vol, imb)
    assert r.bid_fill.tolist() == bf and r.ask_fill.tolist() == af
    # fills conserve quantity and add up to each order's allocation
    fb, fa, fq = r.fills["bid"], r.fills["ask"], r.fills["qty"]
    assert int(fq.sum()) == vol and (fq > 0).all()
    assert np.bincount(fb, fq, len(bids)).astype(np.int64).tolist() == bf
    assert np.bincount(fa, fq, len(asks)).astype(np.int64).tolist() == af
    if price is None:
        return
    for orders, fill, sign in ((bids, bf, 1), (asks, af, -1)):
        for (p, q, _), f in zip(orders, fill):
            assert 0 <= f <= q
            if f:                                       # never at a worse price than the limit
                assert sign * (p - price) >= 0
        better_short = any(f < q for (p, q, _), f in zip(orders, fill) if sign * (p - price) > 0)
        at_price = [(t, i, f, q) for i, ((p, q, t), f) in enumerate(zip(orders, fill)) if p == price]
        if better_short:                               # only when no order of that side sits at the price
            assert not at_price
        # at the price: time priority (then input order); once one is short, later ones get nothing
        short = False
        for t, i, f, q in sorted(at_price):
            assert not (short and f), "a later order at the price filled before an earlier one"
            short = short or f < q


def test_auction_orders_and_cli(tmp_path):
    rows = [  # ts, id, side, px, qty, action, symbol, account
        (1, 1, 1, 101, 10, 0, 7, 1), (2, 2, -1, 99, 4, 0, 7, 2), (3, 3, -1, 100, 10, 0, 7, 3),
        (4, 4, 1, 100, 3, 0, 7, 4), (5, 3, -1, 100, 10, 1, 7, 3),   # cancel row: ignored
        (6, 5, 1, 50, 5, 0, 8, 1), (7, 6, -1, 50, 5, 0, 8, 2),
    ]
    cols = {n: np.array([r[k] for r in rows], dt) for k, (n, dt) in enumerate(
        [("ts_ns", np.int64), ("order_id", np.uint64), ("side", np.int8), ("price_ticks", np.int64),
         ("qty", np.int64), ("action", np.uint8), ("symbol", np.uint32), ("account", np.uint32)])}
    path = tmp_path / "orders.parquet"
    io.write_columns(path, io.order_columns(cols), S.ORDER_SCHEMA)
    fills, books = auction_orders(io.order_columns(cols))
    assert [(b["symbol"], b["price"], b["volume"], b["imbalance"]) for b in books] == [(7, 100, 13, -1), (8, 50, 5, 0)]
    assert fills["qty"].sum() == 18 and set(fills["taker_side"].tolist()) == {S.BUY}
    out = tmp_path / "fills.parquet"
    r = runner.invoke(app, ["risk", "auction", str(path), "--symbol", "7", "--reference-price", "100",
                            "--fills", str(out)])
    assert r.exit_code == 0, r.output
    assert "symbol 7" in r.output and "price 100" in r.output and "volume 13" in r.output
    t = pq.read_table(out)
    assert t.schema.equals(S.FILL_SCHEMA) and t.num_rows == 3
    got = t.to_pydict()
    assert got["taker_order_id"] == [1, 1, 4] and got["maker_order_id"] == [2, 3, 3] and got["qty"] == [4, 6, 3]
    assert set(got["price_ticks"]) == {100} and set(got["seq"]) == {len(rows)}
    r = runner.invoke(app, ["risk", "auction", str(path), "--reference-price", "100", "--fills", str(out)])
    assert r.exit_code == 1 and "--symbol" in r.output
    r = runner.invoke(app, ["risk", "auction", str(tmp_path / "nope.parquet"), "--fills", str(out)])
    assert r.exit_code == 1 and "no such file" in r.output
