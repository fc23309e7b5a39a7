"""Impact mode (hpte.kernels.backtest.impact): the kernel against the plain-book reference
(tests/reference/backtest_ref.py, mode="impact") on random L3 streams with latency, hand-built
scenarios of each replay rule, the invariants of every run, and chunk / pool-size independence."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hpte.engine.backtest import backtest
from hpte.engine.backtest.data import MarketEvents
from hpte.kernels.backtest import api as A
from bt_flows import random_flow
from test_backtest_ref import LATENCIES, RANDOM, _run_both, assert_same

HERE = Path(__file__).resolve().parent
SCRIPTED = HERE / "strategies" / "scripted.py"


def check_impact_invariants(res, ev):
    """Every strategy fill is one the simulated book could have made:

    * maker fills come from a market event that reached the order: a new opposite order (or
      seed) at or through its price, or an execution / hidden trade on its side at or through
      it, and the
      fills one event causes never exceed its quantity;
    * taker fills at price p are at or inside the order's limit and never exceed what the data
      displayed at p plus the quantity the strategy's maker fills at p took out of replayed
      executions before (the only way the simulated book holds more than the data: an
      aggressor that met the strategy first left that much of its target order in place);
    * cash and position reconcile exactly with the fills, and with the run's end state."""
    F = res.fills
    cols = ev.columns()
    n = len(ev)
    E = res.orders
    limit = {int(E["order_id"][i]): (int(E["price"][i]), int(E["order_type"][i]))
             for i in range(len(E["ts_ns"])) if E["event"][i] == "ACCEPTED"}
    book = {1: {}, -1: {}}
    absorbed = {1: {}, -1: {}}     # side -> price -> strategy maker qty from executions so far
    by_seq = {}
    for i in range(len(F["ts_ns"])):
        by_seq.setdefault(int(F["seq"][i]), []).append(i)
    used = {}
    for s in range(n + 1):
        taken = {}
        for i in by_seq.get(s, []):
            sd, p, q = int(F["side"][i]), int(F["price"][i]), int(F["qty"][i])
            if F["maker"][i]:
                continue
            lim, otype = limit[int(F["order_id"][i])]
            if otype != A.T_MARKET:
                assert (p <= lim if sd > 0 else p >= lim), f"taker fill {i} outside its limit"
            key = (int(F["order_id"][i]), p)
            taken[key] = taken.get(key, 0) + q
            assert taken[key] <= book[-sd].get(p, 0) + absorbed[-sd].get(p, 0), f"taker fill {i} above the book"
        if s == n:
            break
        k, sd, p, q = (int(cols[c][s]) for c in ("kind", "side", "price", "qty"))
        for i in by_seq.get(s, []):
            if not F["maker"][i]:
                continue
            fsd, fp, fq = int(F["side"][i]), int(F["price"][i]), int(F["qty"][i])
            used[s] = used.get(s, 0) + fq
            assert used[s] <= q, f"maker fills from event {s} exceed its quantity"
            if k in (A.MK_ADD, A.MK_SEED):     # rules 1-2: a new replayed order through its price
                assert sd == -fsd and (p <= fp if fsd > 0 else p >= fp)
            else:
                assert k in (A.MK_EXEC, A.MK_TRADE) and sd == fsd and (p <= fp if fsd > 0 else p >= fp)
                if k == A.MK_EXEC:
                    absorbed[fsd][p] = absorbed[fsd].get(p, 0) + fq
        if k in (A.MK_ADD, A.MK_SEED):
            book[sd][p] = book[sd].get(p, 0) + q
        elif k in (A.MK_CANCEL, A.MK_EXEC):
            book[sd][p] = max(0, book[sd].get(p, 0) - q)
    side = F["side"].astype(np.int64)
    pos = np.cumsum(side * F["qty"])
    cash = np.cumsum(-side * F["price"] * F["qty"] - F["fee"])
    assert np.array_equal(pos, F["position"]) and np.array_equal(cash, F["cash"])
    assert int(pos[-1] if len(pos) else 0) == res.stats["position_exchange"] == res.metrics["position_end"]
    assert int(cash[-1] if len(cash) else 0) == res.stats["cash_exchange"] == res.metrics["cash_end"]


@pytest.mark.parametrize("latency", LATENCIES)
def test_random_strategy_impact_matches_reference(latency):
    ev = random_flow(7, 600)
    res, ref = _run_both(RANDOM, ev, latency=latency, fees="maker=-1,taker=3", seed=5, timer="7us", mode="impact")
    assert res.config["mode"] == "impact"
    assert len(res.fills["qty"]) > 5 and (~res.fills["maker"]).any() and res.fills["maker"].any()
    assert_same(res, ref)
    check_impact_invariants(res, ev)
    # the same run without impact is a different simulation
    other = backtest(RANDOM, ev, latency=latency, fees="maker=-1,taker=3", seed=5, timer="7us", sample="50us")
    assert not np.array_equal(other.fills["qty"], res.fills["qty"]) or not np.array_equal(
        other.fills["seq"], res.fills["seq"])


@settings(max_examples=15, deadline=None)
@example(flow_seed=1, strat_seed=846, n=6, lat=None, activity=13, timer=None)   # a seed crossing a strategy bid
@given(flow_seed=st.integers(0, 10_000), strat_seed=st.integers(1, 1000), n=st.integers(0, 300),
       lat=st.sampled_from(LATENCIES), activity=st.integers(5, 90), timer=st.sampled_from([None, "3us"]))
def test_impact_differential_hypothesis(flow_seed, strat_seed, n, lat, activity, timer):
    ev = random_flow(flow_seed, n)
    res, ref = _run_both(RANDOM, ev, params={"seed": strat_seed, "activity": activity}, latency=lat,
                         seed=flow_seed, timer=timer, fees="maker=-2,taker=1", mode="impact")
    assert_same(res, ref)
    check_impact_invariants(res, ev)


@pytest.mark.parametrize("latency", [None, "feed=3us,entry=1us:5us,response=2us"])
def test_market_maker_impact_matches_reference(latency):
    ev = random_flow(11, 1500)
    res, ref = _run_both("market_maker", ev, params={"size": 3, "max_position": 10, "half_spread": 0.0},
                         latency=latency, fees="maker=-1,taker=2", seed=3, mode="impact")
    assert res.metrics["trades"] > 10
    assert_same(res, ref)
    check_impact_invariants(res, ev)


@pytest.mark.parametrize("chunk", [1, 3, 64])
def test_impact_any_chunk_size_and_pool_size_same_outputs(chunk, monkeypatch):
    from hpte.engine.backtest import run as R
    from hpte.kernels.backtest.impact import SimBook

    ev = random_flow(21, 500)
    kw = dict(latency="feed=0:4us,entry=1us:3us,response=2us", seed=9, timer="5us", sample="20us",
              fees="maker=-1,taker=2", mode="impact")
    whole = backtest(RANDOM, ev, **kw)
    grown = []

    class Small(SimBook):     # a pool of 16 slots: the run grows it (ST_POOL) several times
        def __init__(self, L):
            super().__init__(L, pool=16)

        def grow(self):
            grown.append(1)
            super().grow()

    monkeypatch.setattr(R, "SimBook", Small)
    part = backtest(RANDOM, ev, chunk_events=chunk, **kw)
    assert len(grown) >= 1 and whole.stats["book_resting"] > 16
    for name in ("fills", "orders", "equity"):
        a, b = getattr(whole, name), getattr(part, name)
        for c in a:
            assert np.array_equal(a[c], b[c]), (name, c)
    assert whole.metrics == part.metrics


# --- hand-built scenarios of the replay rules (zero latency, one tick = 1) ----------------------
def _events(rows):
    a = np.array(rows, np.int64)
    return MarketEvents(ts_ns=a[:, 0], kind=a[:, 1], order_id=a[:, 2], side=a[:, 3], price=a[:, 4], qty=a[:, 5],
                        tick=1, name="scenario")


def _orders(*specs):
    p = {}
    for k, (at, side, px, qty, tif) in enumerate(specs):
        p.update({f"at{k}": at, f"side{k}": side, f"px{k}": px, f"qty{k}": qty, f"tif{k}": tif})
    return p


def _scenario(rows, *specs):
    ev = _events(rows)
    res, ref = _run_both(SCRIPTED, ev, params=_orders(*specs), mode="impact", sample="1s")
    assert_same(res, ref)
    check_impact_invariants(res, ev)
    F = res.fills
    return res, [(int(F["order_id"][i]), int(F["side"][i]), int(F["price"][i]), int(F["qty"][i]),
                  bool(F["maker"][i]), int(F["seq"][i])) for i in range(len(F["qty"]))]


ADD, CXL, EXE = A.MK_ADD, A.MK_CANCEL, A.MK_EXEC


def test_execution_of_an_order_the_strategy_took_is_reduced_to_what_is_left():
    rows = [(10, ADD, 1, -1, 100, 5), (20, ADD, 2, -1, 100, 5), (30, ADD, 3, 1, 98, 5),
            (40, EXE, 1, -1, 100, 5),      # the data executes all 5 of order 1: only 2 are left of it
            (50, EXE, 2, -1, 100, 2),      # then 2 of order 2: 3 left
            (60, ADD, 4, 1, 97, 1)]
    res, fills = _scenario(rows, (3, 1, 100, 3, 1), (5, 1, 100, 10, 1))
    # the first IOC takes 3 of order 1; the execution of 5 finds 2 (and order 1 is gone);
    # the second IOC finds only order 2's 3 lots, the rest of it expires
    assert fills == [(1, 1, 100, 3, False, 3), (2, 1, 100, 3, False, 5)]
    exp = [i for i in range(len(res.orders["event"])) if res.orders["event"][i] == "EXPIRED"]
    assert [int(res.orders["leaves_qty"][i]) for i in exp] == [7]
    # the same with no impact: the replayed book is left as the data says, both IOCs see 5 + 5
    ni = backtest(SCRIPTED, _events(rows), params=_orders((3, 1, 100, 3, 1), (5, 1, 100, 10, 1)), sample="1s")
    assert ni.fills["qty"].tolist() == [3, 3]


def test_cancel_of_an_order_the_strategy_took_is_reduced_or_dropped():
    rows = [(10, ADD, 1, -1, 100, 4), (20, ADD, 2, -1, 101, 4), (30, ADD, 3, 1, 98, 5),
            (40, CXL, 1, -1, 100, 2),      # 2 of order 1 cancelled: the strategy took 3, 1 is left -> gone
            (50, CXL, 2, -1, 101, 1),      # order 2 (untouched): 3 left
            (60, ADD, 4, 1, 97, 1)]
    res, fills = _scenario(rows, (3, 1, 100, 3, 1), (5, 1, 101, 10, 1))
    assert fills == [(1, 1, 100, 3, False, 3), (2, 1, 101, 3, False, 5)]


def test_resting_strategy_orders_are_matched_by_replayed_flow_in_time_priority():
    rows = [(10, ADD, 1, 1, 99, 4), (20, ADD, 2, -1, 101, 4),
            (30, EXE, 1, 1, 99, 4),        # a sell aggressor of 4 at 99: meets the strategy's 100 bid first
            (40, ADD, 3, 1, 99, 5),        # joins behind the strategy's 99 bid
            (50, EXE, 3, 1, 99, 3),        # an aggressor of 3 at 99: the strategy's 99 bid is first in time
            (60, CXL, 3, 1, 99, 2),        # order 3 is gone in the data
            (70, ADD, 4, -1, 102, 1)]
    res, fills = _scenario(rows, (2, 1, 99, 2, 0), (2, 1, 100, 3, 0))
    assert fills == [(2, 1, 100, 3, True, 2), (1, 1, 99, 2, True, 4)]
    acc = [i for i in range(len(res.orders["event"])) if res.orders["event"][i] == "ACCEPTED"]
    assert [int(res.orders["ahead"][i]) for i in acc] == [4, 0]     # behind order 1's 4 lots; alone at 100
    # at the end the bid side is empty as the data says (order 1 and order 3 are gone)
    assert int(res.equity["bid"][-1]) == A.NO_PRICE


def test_replayed_add_that_crosses_a_strategy_order_trades_with_it():
    rows = [(10, ADD, 1, 1, 99, 5), (20, ADD, 2, -1, 102, 5),
            (30, ADD, 3, 1, 101, 4),       # rests at 101 in the data; here it meets the strategy's 101 offer
            (40, EXE, 3, 1, 101, 4),       # the data's execution of order 3: 1 lot is left of it, then gone
            (50, ADD, 4, -1, 103, 1)]
    res, fills = _scenario(rows, (2, -1, 101, 3, 0), (4, -1, 101, 1, 1))
    # the strategy sells 3 to order 3 (maker, at its price); after the execution order 3 is gone,
    # so the later IOC sell at 101 finds no bid there and expires
    assert fills == [(1, -1, 101, 3, True, 2)]
    assert list(res.orders["event"]).count("EXPIRED") == 1
    assert int(res.equity["bid"][-1]) == 99


def test_impact_on_amzn_prefix_matches_reference():
    """The bundled market maker in impact mode on the real LOBSTER day's first 5,000 events (with
    the levels learned from the orderbook file), latency and fees: kernel == reference."""
    from conftest import require_data
    from hpte.engine.backtest.data import lobster_events

    day = lobster_events(require_data(
        "lobster_AMZN_2012-06-21_level5/AMZN_2012-06-21_34200000_57600000_message_5.csv"))
    ev = MarketEvents(**{c: v[:5_000] for c, v in day.columns().items()}, tick=day.tick)
    res, ref = _run_both("market_maker", ev, params={"size": 100}, latency="feed=100us,entry=50us:150us,response=100us",
                         fees="maker=-20,taker=30", seed=1, sample="10s", mode="impact")
    assert res.metrics["trades"] > 5
    assert_same(res, ref)
    check_impact_invariants(res, ev)


@pytest.mark.parametrize("real", [False, True])
def test_without_strategy_orders_the_simulated_book_is_the_data(real):
    """Rule 7 and the unknown-order rules: with no strategy orders the impact replay rebuilds the
    data's own book, so every equity sample's best bid and ask equal no-impact mode's (which
    keeps the data's book as it is) on a random flow and on the real AMZN day."""
    if real:
        from conftest import require_data
        ev = require_data("lobster_AMZN_2012-06-21_level5/AMZN_2012-06-21_34200000_57600000_message_5.csv")
        sample = "1s"
    else:
        ev = random_flow(31, 3000)
        sample = "5us"
    a = backtest(SCRIPTED, ev, sample=sample)         # no orders given: it never acts
    b = backtest(SCRIPTED, ev, sample=sample, mode="impact")
    assert len(a.equity["bid"]) > 100
    for c in ("ts_ns", "bid", "ask"):
        assert np.array_equal(a.equity[c], b.equity[c]), c


def test_impact_step_calls_are_compiled_without_reference_counting():
    """The per-message path (impact._row, loop.im_market, loop.im_request) is compiled on its
    own with ``_nrt=False``: inlined into the reference-counted driver, each call increfed and
    decrefed every array of the book's State, Outputs and Inputs (about two thirds of a
    replayed message's cost). They allocate nothing, so this must stay possible; and a row
    through _row still reaches the book."""
    from hpte.kernels.backtest import impact as IM
    from hpte.kernels.backtest import loop as LP
    from hpte.kernels import enums as En
    for f in (IM._row, LP.im_market, LP.im_request):
        assert f.targetoptions.get("_nrt") is False, f.py_func.__name__
    b = IM.SimBook(8, 16)
    S, O, I, books, nor = b.args()
    st = IM._row(I, S, O, books, nor, 0, 5, IM.MKT_ID0, IM.MKT_ACCT, 1, 3, 7, En.ACT_NEW, En.OT_LIMIT,
                 En.TIF_GTC, En.STP_CANCEL_NEWEST)
    assert st == 0 and b.resting() == 1 and O.cur[0, 1] > 0
    st = IM._row(I, S, O, books, nor, 1, 6, IM.MKT_ID0, IM.MKT_ACCT, 1, 3, 7, En.ACT_CANCEL, En.OT_LIMIT,
                 En.TIF_GTC, En.STP_NONE)
    assert st == 0 and b.resting() == 0
