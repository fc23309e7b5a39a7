"""The kernel against the plain-Python reference (tests/reference/backtest_ref.py), and the
invariants of every run: fills only at prices and quantities the simulated book offered at
that simulated time, cash and position reconcile with the fills, any chunk size gives the same
outputs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpte.engine.backtest import backtest, load_strategy
from hpte.kernels.backtest import api as A
from bt_flows import random_flow
from reference.backtest_ref import run_reference

HERE = Path(__file__).resolve().parent
RANDOM = HERE / "strategies" / "random_actions.py"
FILL_COLS = ("ts_ns", "order_id", "side", "price", "qty", "maker", "fee", "position", "cash", "seq", "queue_ns")
EQ_COLS = ("ts_ns", "position", "cash", "bid", "ask", "fees")


def _run_both(strategy, ev, *, params=None, latency=None, fees=None, seed=0, timer=None, sample="50us",
              chunk_events=1 << 20, mode="no-impact"):
    res = backtest(strategy, ev, params=params, latency=latency, fees=fees, seed=seed, timer=timer,
                   sample=sample, chunk_events=chunk_events, mode=mode)
    strat = load_strategy(strategy)
    c = res.config
    lat = c["latency_ns"]
    ref = run_reference(strat.module, ev.columns(), params=strat.param_vector(params), state_size=strat.state_size,
                        tick=c["tick"], base=c["base"], L=c["ladder"], feed=tuple(lat["feed"]),
                        entry=tuple(lat["entry"]), response=tuple(lat["response"]), seed=seed,
                        maker_fee=c["fees"]["maker"], taker_fee=c["fees"]["taker"], timer_ns=c["timer_ns"],
                        sample_ns=c["sample_ns"], depth=c["depth"], max_instant=c["max_instant_actions"], mode=mode)
    return res, ref


def _kernel_rows(table, cols):
    return [tuple(int(table[c][i]) for c in cols) for i in range(len(table[cols[0]]))]


def _log_rows(res):
    inv_ev = {v: k for k, v in A.EVENT_NAMES.items()}
    inv_rj = {v: k for k, v in A.REASON_NAMES.items()}
    E = res.orders
    return [(int(E["ts_ns"][i]), int(E["order_id"][i]), inv_ev[E["event"][i]], int(E["side"][i]),
             int(E["price"][i]), int(E["qty"][i]), int(E["leaves_qty"][i]), int(E["ahead"][i]),
             inv_rj[E["reason"][i]], int(E["order_type"][i]), int(E["tif"][i])) for i in range(len(E["ts_ns"]))]


def assert_same(res, ref):
    fills, log, equity, md, state, orders = ref
    assert _kernel_rows(res.fills, FILL_COLS) == [tuple(int(x) for x in f) for f in fills]
    assert _log_rows(res) == [tuple(int(x) for x in e) for e in log]
    assert _kernel_rows(res.equity, EQ_COLS) == [tuple(int(x) for x in e) for e in equity]


def check_invariants(res, ev):
    """Fills within what the book offered; cash and position reconcile exactly."""
    F = res.fills
    cols = ev.columns()
    n = len(ev)
    # the exchange book after each prefix of events, for taker fills (seq = events applied)
    book = {1: {}, -1: {}}
    taker = np.flatnonzero(~F["maker"])
    need = sorted(set(int(F["seq"][i]) for i in taker))
    snap = {}
    j = 0
    for s in range(n + 1):
        while j < len(need) and need[j] == s:
            snap[s] = {1: dict(book[1]), -1: dict(book[-1])}
            j += 1
        if s == n:
            break
        k, sd, p, q = (int(cols[c][s]) for c in ("kind", "side", "price", "qty"))
        if k in (A.MK_ADD, A.MK_SEED):
            book[sd][p] = book[sd].get(p, 0) + q
        elif k in (A.MK_CANCEL, A.MK_EXEC):
            book[sd][p] = max(0, book[sd].get(p, 0) - q)
    taken = {}
    for i in taker:
        s, sd, p, q = int(F["seq"][i]), int(F["side"][i]), int(F["price"][i]), int(F["qty"][i])
        key = (s, int(F["order_id"][i]), p)
        taken[key] = taken.get(key, 0) + q
        assert snap[s][-sd].get(p, 0) >= taken[key], f"taker fill {i} above the displayed quantity"
    # maker fills: the causing event offered the price and the quantity
    used = {}
    for i in np.flatnonzero(F["maker"]):
        s, sd, p, q = int(F["seq"][i]), int(F["side"][i]), int(F["price"][i]), int(F["qty"][i])
        k, esd, ep, eq = (int(cols[c][s]) for c in ("kind", "side", "price", "qty"))
        used[s] = used.get(s, 0) + q
        assert used[s] <= eq, f"maker fills from event {s} exceed its quantity"
        if k == A.MK_ADD:
            assert esd == -sd and (ep <= p if sd > 0 else ep >= p)
        else:
            assert k in (A.MK_EXEC, A.MK_TRADE) and esd == sd and (ep <= p if sd > 0 else ep >= p)
    # reconcile
    side = F["side"].astype(np.int64)
    pos = np.cumsum(side * F["qty"])
    cash = np.cumsum(-side * F["price"] * F["qty"] - F["fee"])
    assert np.array_equal(pos, F["position"]) and np.array_equal(cash, F["cash"])
    assert int(pos[-1] if len(pos) else 0) == res.stats["position_exchange"]
    assert int(cash[-1] if len(cash) else 0) == res.stats["cash_exchange"]
    if len(res.equity["ts_ns"]):
        assert int(res.equity["position"][-1]) == res.stats["position_exchange"]
        assert int(res.equity["cash"][-1]) == res.stats["cash_exchange"]


LATENCIES = [None, "1us", "feed=2us,entry=0:3us,response=1us:4us", "feed=0:5us,entry=2us,response=0"]


@pytest.mark.parametrize("latency", LATENCIES)
def test_random_strategy_matches_reference(latency):
    ev = random_flow(7, 600)
    res, ref = _run_both(RANDOM, ev, latency=latency, fees="maker=-1,taker=3", seed=5, timer="7us")
    assert len(res.fills["qty"]) > 5 and (~res.fills["maker"]).any() and res.fills["maker"].any()
    assert_same(res, ref)
    check_invariants(res, ev)


@settings(max_examples=25)
@given(flow_seed=st.integers(0, 10_000), strat_seed=st.integers(1, 1000), n=st.integers(0, 300),
       lat=st.sampled_from(LATENCIES), activity=st.integers(5, 90), timer=st.sampled_from([None, "3us"]))
def test_differential_hypothesis(flow_seed, strat_seed, n, lat, activity, timer):
    ev = random_flow(flow_seed, n)
    res, ref = _run_both(RANDOM, ev, params={"seed": strat_seed, "activity": activity}, latency=lat,
                         seed=flow_seed, timer=timer, fees="maker=-2,taker=1")
    assert_same(res, ref)
    check_invariants(res, ev)


@pytest.mark.parametrize("latency", [None, "feed=3us,entry=1us:5us,response=2us"])
def test_market_maker_matches_reference(latency):
    ev = random_flow(11, 1500)
    res, ref = _run_both("market_maker", ev, params={"size": 3, "max_position": 10, "half_spread": 0.0},
                         latency=latency, fees="maker=-1,taker=2", seed=3)
    assert res.metrics["trades"] > 10
    assert_same(res, ref)
    check_invariants(res, ev)


def test_momentum_matches_reference():
    ev = random_flow(12, 1500)
    res, ref = _run_both("momentum", ev, params={"threshold": 1.0, "size": 2, "max_position": 6},
                         latency="feed=1us,entry=1us,response=1us")
    assert res.metrics["taker_fills"] > 5
    assert_same(res, ref)
    check_invariants(res, ev)


@pytest.mark.parametrize("chunk", [1, 2, 5, 64])
def test_any_chunk_size_same_outputs(chunk):
    ev = random_flow(21, 500)
    kw = dict(latency="feed=0:4us,entry=1us:3us,response=2us", seed=9, timer="5us", sample="20us",
              fees="maker=-1,taker=2")
    whole = backtest(RANDOM, ev, **kw)
    part = backtest(RANDOM, ev, chunk_events=chunk, **kw)
    for name in ("fills", "orders", "equity"):
        a, b = getattr(whole, name), getattr(part, name)
        for c in a:
            assert np.array_equal(a[c], b[c]), (name, c)
    assert whole.metrics == part.metrics


def test_identical_inputs_identical_outputs():
    ev = random_flow(3, 400)
    a = backtest(RANDOM, ev, latency="0:3us", seed=4)
    b = backtest(RANDOM, ev, latency="0:3us", seed=4)
    c = backtest(RANDOM, ev, latency="0:3us", seed=5)
    for name in ("fills", "orders", "equity"):
        for col in getattr(a, name):
            assert np.array_equal(getattr(a, name)[col], getattr(b, name)[col])
    assert any(not np.array_equal(a.orders[col], c.orders[col]) for col in ("ts_ns",)), \
        "another latency seed should change the order times"


def test_market_maker_on_amzn_prefix_matches_reference():
    """The bundled market maker on the real LOBSTER day's first 20,000 events (with the levels
    learned from the orderbook file), latency and fees: kernel == reference, invariants hold."""
    from conftest import require_data
    from hpte.engine.backtest.data import MarketEvents, lobster_events

    day = lobster_events(require_data(
        "lobster_AMZN_2012-06-21_level5/AMZN_2012-06-21_34200000_57600000_message_5.csv"))
    ev = MarketEvents(**{c: v[:20_000] for c, v in day.columns().items()}, tick=day.tick)
    res, ref = _run_both("market_maker", ev, params={"size": 100}, latency="feed=100us,entry=50us:150us,response=100us",
                         fees="maker=-20,taker=30", seed=1, sample="10s")
    assert res.metrics["trades"] > 20
    assert_same(res, ref)
    check_invariants(res, ev)


RUNAWAY = HERE / "strategies" / "runaway.py"


def test_zero_latency_runaway_is_stopped_as_in_the_reference():
    from hpte.engine.backtest import StrategyError
    from reference.backtest_ref import Runaway

    ev = random_flow(4, 200)
    with pytest.raises(StrategyError, match=r"runaway: more than 300 actions at one instant \(local time (\d+) ns\)") as ei:
        backtest(RUNAWAY, ev, max_instant_actions=300)
    t = int(ei.value.args[0].split("local time ")[1].split(" ")[0])
    strat = load_strategy(RUNAWAY)
    with pytest.raises(Runaway) as er:
        run_reference(strat.module, ev.columns(), params=strat.param_vector(), state_size=strat.state_size,
                      tick=ev.tick, base=ev.tick, L=4000, max_instant=300)
    assert er.value.t == t and t in set(ev.ts_ns.tolist())
    # with a latency time passes between the rounds: the run completes, every order rejected
    res, ref = _run_both(RUNAWAY, ev, latency="entry=1us")
    assert res.metrics["rejects"] > 100 and res.metrics["trades"] == 0
    assert_same(res, ref)
    with pytest.raises(ValueError, match="max_instant_actions must be >= 0"):
        backtest(RUNAWAY, ev, max_instant_actions=-1)


def test_arrivals_resolve_order_ids_any_table_size_and_chunks():
    """The market order ids resolved once per data set (loop.arrivals_cpu): each cancel or
    execution gets the index of its order's ADD (-1 unknown), as a plain dict says, whatever the
    starting table size (growth) and the chunking."""
    from hpte.engine.backtest.run import Arrivals

    ev = random_flow(8, 900)
    cols = ev.columns()
    live, want = {}, []
    for i, (k, oid, q) in enumerate(zip(cols["kind"], cols["order_id"], cols["qty"])):
        a = -1
        if k == A.MK_ADD:
            live[int(oid)] = [i, int(q)]
        elif k in (A.MK_CANCEL, A.MK_EXEC) and oid >= 0 and int(oid) in live:
            a = live[int(oid)][0]
            live[int(oid)][1] -= int(q)
            if live[int(oid)][1] <= 0:
                del live[int(oid)]
        want.append(a)
    assert sum(a >= 0 for a in want) > 100
    for bits, step in ((4, 900), (4, 7), (16, 64)):
        t = Arrivals(bits)
        got = np.concatenate([t.resolve({c: v[s:s + step] for c, v in cols.items()}) for s in range(0, len(ev), step)])
        assert got.tolist() == want
        assert t.live == len(live) and (bits == 16 or t.bits > bits)
