"""No-impact backtests on L2 data (price levels, no order ids) with queue models: the kernel
(hpte.kernels.backtest.loop.x_level_event) against the plain-Python reference, invariants,
hand-built scenarios of each model, and the LOBSTER day read as L2 data."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpte.engine.backtest import backtest, load_strategy
from hpte.engine.backtest.data import MarketEvents, l2_events
from hpte.engine.backtest.run import parse_queue
from hpte.engine.io import InputError
from hpte.kernels.backtest import api as A
from bt_flows import random_flow, random_l2_flow
from reference.backtest_ref import run_reference
from test_backtest_ref import assert_same

HERE = Path(__file__).resolve().parent
RANDOM = HERE / "strategies" / "random_actions.py"
SCRIPTED = HERE / "strategies" / "scripted.py"
QUEUES = ["conservative", "prob", "prob:log", "prob:power:0.5"]
LATENCIES = [None, "feed=2us,entry=1us:4us,response=0:3us"]
LVL, TRD = A.MK_LEVEL, A.MK_TRADE


def _run_both(strategy, ev, *, queue, params=None, latency=None, fees=None, seed=0, timer=None, sample="50us",
              chunk_events=1 << 20):
    res = backtest(strategy, ev, params=params, latency=latency, fees=fees, seed=seed, timer=timer,
                   sample=sample, chunk_events=chunk_events, queue=queue)
    strat = load_strategy(strategy)
    c = res.config
    lat = c["latency_ns"]
    ref = run_reference(strat.module, ev.columns(), params=strat.param_vector(params), state_size=strat.state_size,
                        tick=c["tick"], base=c["base"], L=c["ladder"], feed=tuple(lat["feed"]),
                        entry=tuple(lat["entry"]), response=tuple(lat["response"]), seed=seed,
                        maker_fee=c["fees"]["maker"], taker_fee=c["fees"]["taker"], timer_ns=c["timer_ns"],
                        sample_ns=c["sample_ns"], depth=c["depth"], max_instant=c["max_instant_actions"],
                        queue=tuple(c["queue_model"]))
    return res, ref


def check_l2_invariants(res, ev):
    """Every strategy fill is one the L2 book could have made: a maker fill is at its order's
    price, from a trade on its side at or through that price or from an opposite level that
    grew at or through it, and the fills one row causes never exceed its volume; a taker fill
    is within its limit and within the level the data showed at that price; queue positions
    in the order log are never negative; cash and position reconcile with the fills."""
    F, E = res.fills, res.orders
    cols = ev.columns()
    n = len(ev)
    limit = {int(E["order_id"][i]): (int(E["price"][i]), int(E["order_type"][i]))
             for i in range(len(E["ts_ns"])) if E["event"][i] == "ACCEPTED"}
    assert (E["ahead"] >= 0).all()
    book = {1: {}, -1: {}}
    by_seq = {}
    for i in range(len(F["ts_ns"])):
        by_seq.setdefault(int(F["seq"][i]), []).append(i)
    for s in range(n + 1):
        taken = {}
        for i in by_seq.get(s, []):
            if F["maker"][i]:
                continue
            sd, p, q = int(F["side"][i]), int(F["price"][i]), int(F["qty"][i])
            lim, otype = limit[int(F["order_id"][i])]
            if otype != A.T_MARKET:
                assert (p <= lim if sd > 0 else p >= lim), f"taker fill {i} outside its limit"
            key = (int(F["order_id"][i]), p)
            taken[key] = taken.get(key, 0) + q
            assert taken[key] <= book[-sd].get(p, 0), f"taker fill {i} above the level the data showed"
        if s == n:
            break
        k, sd, p, q = (int(cols[c][s]) for c in ("kind", "side", "price", "qty"))
        grown = q - book[sd].get(p, 0) if k == LVL else q
        used = 0
        for i in by_seq.get(s, []):
            if not F["maker"][i]:
                continue
            fsd, fp, fq = int(F["side"][i]), int(F["price"][i]), int(F["qty"][i])
            assert fp == limit[int(F["order_id"][i])][0], "a maker fill away from its order's price"
            used += fq
            assert used <= grown, f"maker fills from row {s} exceed its volume"
            if k == LVL:
                assert sd == -fsd and (p <= fp if fsd > 0 else p >= fp)
            else:
                assert k == TRD and sd == fsd and (p <= fp if fsd > 0 else p >= fp)
        if k == LVL:
            book[sd][p] = q
    side = F["side"].astype(np.int64)
    pos = np.cumsum(side * F["qty"])
    cash = np.cumsum(-side * F["price"] * F["qty"] - F["fee"])
    assert np.array_equal(pos, F["position"]) and np.array_equal(cash, F["cash"])
    assert int(pos[-1] if len(pos) else 0) == res.stats["position_exchange"] == res.metrics["position_end"]
    assert int(cash[-1] if len(cash) else 0) == res.stats["cash_exchange"] == res.metrics["cash_end"]


@pytest.mark.parametrize("queue", QUEUES)
@pytest.mark.parametrize("latency", LATENCIES)
def test_random_strategy_l2_matches_reference(queue, latency):
    ev = random_l2_flow(3, 700)
    res, ref = _run_both(RANDOM, ev, queue=queue, latency=latency, fees="maker=-1,taker=3", seed=5, timer="7us")
    assert res.metrics["maker_fills"] > 3 and res.metrics["taker_fills"] > 3
    assert_same(res, ref)
    check_l2_invariants(res, ev)


@settings(max_examples=12, deadline=None)
@given(flow_seed=st.integers(0, 10_000), strat_seed=st.integers(1, 1000), n=st.integers(0, 300),
       lat=st.sampled_from(LATENCIES), activity=st.integers(5, 90), queue=st.sampled_from(QUEUES + ["prob:power:2"]))
def test_l2_differential_hypothesis(flow_seed, strat_seed, n, lat, activity, queue):
    ev = random_l2_flow(flow_seed, n)
    res, ref = _run_both(RANDOM, ev, queue=queue, params={"seed": strat_seed, "activity": activity}, latency=lat,
                         seed=flow_seed, fees="maker=-2,taker=1")
    assert_same(res, ref)
    check_l2_invariants(res, ev)


@pytest.mark.parametrize("queue", ["conservative", "prob"])
def test_market_maker_l2_matches_reference(queue):
    ev = random_l2_flow(11, 1500)
    res, ref = _run_both("market_maker", ev, queue=queue, params={"size": 3, "max_position": 10, "half_spread": 0.0},
                         latency="feed=3us,entry=1us:5us,response=2us", fees="maker=-1,taker=2", seed=3)
    assert res.metrics["maker_fills"] > 5
    assert_same(res, ref)
    check_l2_invariants(res, ev)


def test_models_differ_and_prob_is_seeded():
    ev = random_l2_flow(5, 1500)
    kw = dict(params={"size": 3, "max_position": 10, "half_spread": 0.0}, latency="feed=3us,entry=2us,response=2us")
    runs = {q: backtest("market_maker", ev, queue=q, seed=1, **kw) for q in ("conservative", "prob", "prob:log")}
    again = backtest("market_maker", ev, queue="prob", seed=1, **kw)
    assert np.array_equal(runs["prob"].fills["seq"], again.fills["seq"])
    assert not np.array_equal(runs["prob"].fills["seq"], runs["conservative"].fills["seq"])
    other_seed = [backtest("market_maker", ev, queue="prob:log", seed=s, **kw).fills["seq"] for s in (2, 3, 4)]
    assert any(not np.array_equal(f, runs["prob:log"].fills["seq"]) for f in other_seed)


@pytest.mark.parametrize("chunk", [1, 5, 64])
def test_l2_any_chunk_size_same_outputs(chunk):
    ev = random_l2_flow(21, 500)
    kw = dict(latency="feed=0:4us,entry=1us:3us,response=2us", seed=9, timer="5us", sample="20us",
              fees="maker=-1,taker=2", queue="prob:power:2")
    whole = backtest(RANDOM, ev, **kw)
    part = backtest(RANDOM, ev, chunk_events=chunk, **kw)
    assert len(whole.fills["qty"]) > 5
    for name in ("fills", "orders", "equity"):
        a, b = getattr(whole, name), getattr(part, name)
        for c in a:
            assert np.array_equal(a[c], b[c]), (name, c)
    assert whole.metrics == part.metrics


# --- hand-built scenarios (zero latency, tick 1) ------------------------------------------------
def _l2(rows):
    a = np.array(rows, np.int64)
    return l2_events(a[:, 0], a[:, 1], a[:, 2], a[:, 3], a[:, 4], tick=1, name="scenario")


def _buy(at, px, qty):
    return {"at0": at, "side0": 1, "px0": px, "qty0": qty, "tif0": 0}


def _fills(res):
    F = res.fills
    return [(int(F["price"][i]), int(F["qty"][i]), bool(F["maker"][i]), int(F["seq"][i]))
            for i in range(len(F["qty"]))]


def _scenario(rows, params, queue, seed=0):
    ev = _l2(rows)
    res, ref = _run_both(SCRIPTED, ev, queue=queue, params=params, sample="1s", seed=seed)
    assert_same(res, ref)
    check_l2_invariants(res, ev)
    return res


def _accepted_ahead(res):
    E = res.orders
    return [int(E["ahead"][i]) for i in range(len(E["event"])) if E["event"][i] == "ACCEPTED"]


CONSERVATIVE_ROWS = [
    (10, LVL, 1, 100, 10), (20, LVL, -1, 102, 5),   # the buy at 100 joins behind 10 (after row 2)
    (30, LVL, 1, 100, 6),      # 4 leave, not traded: conservative keeps ahead (capped at the level: 6)
    (40, TRD, 1, 100, 4),      # 4 trade at 100: ahead 6 -> 2
    (50, LVL, 1, 100, 2),      # the level shows the trade: nothing more
    (60, TRD, 1, 100, 4),      # 2 pass ahead, 2 fill the order
    (70, LVL, 1, 100, 0),
    (80, TRD, 1, 99, 5),       # a trade through 100: the last lot fills
]


def test_conservative_queue_advances_only_on_trades():
    res = _scenario(CONSERVATIVE_ROWS, _buy(2, 100, 3), "conservative")
    assert _accepted_ahead(res) == [10]
    assert _fills(res) == [(100, 2, True, 5), (100, 1, True, 7)]


def test_conservative_never_lets_ahead_exceed_the_level():
    rows = [(10, LVL, 1, 100, 10), (20, LVL, -1, 102, 5),
            (30, LVL, 1, 100, 1),      # 9 cancelled: at most 1 can still be ahead
            (40, LVL, 1, 100, 30),     # 29 join behind
            (50, TRD, 1, 100, 3)]      # 1 passes ahead, 2 fill
    res = _scenario(rows, _buy(2, 100, 5), "conservative")
    assert _fills(res) == [(100, 2, True, 4)]


def test_prob_models_take_the_decrease_by_position():
    # back 0: the decrease can only come from ahead (no draw); with n = 100 the draw is all but
    # certain: from the larger side (front 1 vs back 10 -> behind; front 10 vs back 1 -> ahead)
    rows = [(10, LVL, 1, 100, 10), (20, LVL, -1, 102, 5),
            (30, LVL, 1, 100, 6),      # nothing behind: ahead 10 -> 6 (conservative: 6 as well, the cap)
            (40, LVL, 1, 100, 16),     # 10 join behind: front 6, back 10
            (50, LVL, 1, 100, 11),     # 5 leave: power 100 says behind -> ahead stays 6
            (60, TRD, 1, 100, 6),      # 6 pass ahead, nothing fills
            (70, LVL, 1, 100, 5),      # front 0 (no draw), back 5
            (80, TRD, 1, 100, 2)]      # 2 fill
    res = _scenario(rows, _buy(2, 100, 3), "prob:power:100")
    assert _fills(res) == [(100, 2, True, 7)]
    rows2 = [(10, LVL, 1, 100, 10), (20, LVL, -1, 102, 5),
             (30, LVL, 1, 100, 11),    # front 10, back 1
             (40, LVL, 1, 100, 8),     # 3 leave: from ahead -> 7 (1 behind could not hold 3 anyway)
             (50, LVL, 1, 100, 9),     # front 7, back 2
             (60, LVL, 1, 100, 8),     # 1 leaves: power 100 says ahead -> 6
             (70, TRD, 1, 100, 8)]     # 6 pass, 2 fill
    res = _scenario(rows2, _buy(2, 100, 3), "prob:power:100")
    assert _fills(res) == [(100, 2, True, 6)]
    # the conservative model on the same rows: ahead 10 capped at 8, then 8 -> trade of 8 fills none
    cons = _scenario(rows2, _buy(2, 100, 3), "conservative")
    assert _fills(cons) == []


def test_trades_at_the_level_are_not_counted_twice():
    """A trade at the order's level, then the level's decrease by the same volume: the decrease
    is the trade (already through ``ahead``), not a cancel ahead of the order."""
    rows = [(10, LVL, 1, 100, 4), (20, LVL, -1, 102, 5),
            (30, LVL, 1, 100, 10),     # front 4, back 6
            (40, TRD, 1, 100, 3),      # ahead 4 -> 1
            (50, LVL, 1, 100, 7),      # the trade's 3: no draw, ahead stays 1
            (60, TRD, 1, 100, 1)]      # ahead 1 -> 0, nothing fills
    for q in ("prob:power:100", "prob:log", "conservative"):
        res = _scenario(rows, _buy(2, 100, 2), q)
        assert _fills(res) == [], q


def test_log_model_frequency_over_seeds():
    """front 3, back 1, one lot leaves: log says behind with p = log 2 / (log 2 + log 4) = 1/3;
    the next trade of 3 fills the order's first lot only when the lot came from ahead (2/3)."""
    rows = [(10, LVL, 1, 100, 3), (20, LVL, -1, 102, 5),
            (30, LVL, 1, 100, 4),      # one joins behind
            (40, LVL, 1, 100, 3),      # one leaves: the draw
            (50, TRD, 1, 100, 3)]
    ev = _l2(rows)
    hits = 0
    N = 150
    for seed in range(N):
        res = backtest(SCRIPTED, ev, params=_buy(2, 100, 2), sample="1s", seed=seed, queue="prob:log")
        hits += int(res.fills["qty"].sum())
    assert abs(hits / N - 2 / 3) < 5 * np.sqrt(2 / 9 / N), hits


def test_opposite_level_through_a_resting_order_fills_it():
    rows = [(10, LVL, 1, 98, 5), (20, LVL, -1, 103, 5),
            (30, LVL, -1, 101, 2),     # an ask level at 101 appears: the strategy's 101 bid was there first
            (40, LVL, -1, 101, 6)]     # it grows by 4: 1 lot left of the order fills
    res = _scenario(rows, _buy(2, 101, 3), "conservative")
    assert _fills(res) == [(101, 2, True, 2), (101, 1, True, 3)]


# --- options and errors -----------------------------------------------------------------------
def test_parse_queue():
    from hpte.kernels.backtest import loop as K

    assert parse_queue(None) == (K.Q_L3, 0)
    assert parse_queue("conservative") == (K.Q_CONSERVATIVE, 0)
    assert parse_queue("prob") == parse_queue("prob:power:3") == (K.Q_POWER, 3000)
    assert parse_queue("prob:power:0.5") == (K.Q_POWER, 500)
    assert parse_queue("PROB:LOG") == (K.Q_LOG, 0)
    for bad in ("fifo", "prob:power:x", "prob:power:0", "prob:power:-1", "prob:log:2", "prob:cube"):
        with pytest.raises(ValueError, match="queue"):
            parse_queue(bad)


def test_queue_model_needs_l2_data_and_l2_data_needs_one():
    l3 = random_flow(1, 50)
    with pytest.raises(InputError, match="L3 data"):
        backtest(RANDOM, l3, queue="prob")
    l2 = random_l2_flow(1, 50)
    with pytest.raises(InputError, match="needs a queue model"):
        backtest(RANDOM, l2)
    with pytest.raises(ValueError, match="impact mode"):
        backtest(RANDOM, l2, queue="prob", mode="impact")


def test_l2_events_file_without_order_ids(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    ev = random_l2_flow(4, 300)
    p = tmp_path / "l2.parquet"
    pq.write_table(pa.table({c: ev.columns()[c] for c in ("ts_ns", "kind", "side", "price", "qty")}), p)
    a = backtest(RANDOM, p, queue="prob", tick=2, seed=3, chunk_events=64)
    b = backtest(RANDOM, ev, queue="prob", seed=3)
    assert np.array_equal(a.fills["seq"], b.fills["seq"]) and a.metrics == b.metrics


# --- the LOBSTER day as L2 data -----------------------------------------------------------------
def _amzn():
    from conftest import require_data

    return require_data("lobster_AMZN_2012-06-21_level5/AMZN_2012-06-21_34200000_57600000_message_5.csv")


def test_lobster_l2_rows_rebuild_the_orderbook_file():
    """Replaying the L2 rows of the day's first 20,000 messages gives, after every message, the
    orderbook file's snapshot (its N levels per side)."""
    from hpte.engine.backtest.data import lobster_l2_rows
    from hpte.engine.md import lobster as L

    mp = _amzn()
    m = L.read_messages(mp).head(20_000)
    book = L.read_orderbook(str(mp).replace("_message_", "_orderbook_")).head(20_000)
    c = lobster_l2_rows(m.time_ns, m.type, m.price, m.size, m.direction, book.rows, book.levels)
    assert int((c["kind"] == LVL).sum()) > 10_000
    assert int((c["kind"] == TRD).sum()) == int(((m.type == 4) | (m.type == 5)).sum())
    lv = {1: {}, -1: {}}
    j = 0
    nrow = len(c["ts_ns"])
    # rows of message i end where the next message's time starts; check at every distinct time
    times = m.time_ns
    for i in range(len(times)):
        if i + 1 < len(times) and times[i + 1] == times[i]:
            continue
        while j < nrow and c["ts_ns"][j] <= times[i]:
            if c["kind"][j] == LVL:
                lv[int(c["side"][j])][int(c["price"][j])] = int(c["qty"][j])
            j += 1
        r = book.rows[i]
        for side, pc, qc in ((-1, 0, 1), (1, 2, 3)):
            shown = [(int(r[4 * k + pc]), int(r[4 * k + qc])) for k in range(book.levels) if r[4 * k + qc] > 0]
            have = sorted(((p, q) for p, q in lv[side].items() if q > 0), reverse=side == 1)
            assert have[:len(shown)] == shown, (i, side)


def test_amzn_l2_prefix_matches_reference():
    """The bundled market maker on the LOBSTER day's first 8,000 L2 rows (both models, latency,
    fees): kernel == reference, invariants."""
    from hpte.engine.backtest.data import lobster_l2_events

    day = lobster_l2_events(_amzn())
    ev = MarketEvents(**{c: v[:8_000] for c, v in day.columns().items()}, tick=day.tick)
    for q in ("conservative", "prob"):
        res, ref = _run_both("market_maker", ev, queue=q, params={"size": 100},
                             latency="feed=100us,entry=50us:150us,response=100us", fees="maker=-20,taker=30", seed=1,
                             sample="10s")
        assert res.metrics["trades"] > 5, q
        assert_same(res, ref)
        check_l2_invariants(res, ev)


def test_cli_amzn_day_l2(tmp_path):
    """The whole day through the CLI with --queue: the LOBSTER CSV read as L2 data; the same as
    the API; an L3 events file with --queue is refused with a one-line error."""
    import pyarrow.parquet as pq
    from typer.testing import CliRunner

    from hpte.cli.main import app
    from hpte.engine.backtest.data import write_events

    runner = CliRunner()
    out = tmp_path / "out"
    args = ["backtest", "market_maker", "--data", str(_amzn()), "--queue", "prob",
            "--latency", "feed=100us,entry=50us:150us,response=100us", "--fees", "maker=-20,taker=30",
            "--param", "size=100", "--out", str(out), "-q", "--no-report"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "queue model prob" in r.stdout
    fills = pq.read_table(out / "fills.parquet").to_pydict()
    api = backtest("market_maker", _amzn(), queue="prob", params={"size": 100},
                   latency="feed=100us,entry=50us:150us,response=100us", fees="maker=-20,taker=30")
    assert api.stats["events"] > 150_000 and len(fills["seq"]) > 100
    assert fills["seq"] == api.fills["seq"].tolist() and fills["qty"] == api.fills["qty"].tolist()
    l3 = write_events(tmp_path / "l3.parquet", random_flow(2, 100))
    r = runner.invoke(app, ["backtest", "market_maker", "--data", str(l3), "--queue", "conservative",
                            "--out", str(tmp_path / "x"), "-q"])
    err = r.stderr.strip()
    assert r.exit_code == 1 and "L3 data" in err and "Traceback" not in r.output and len(err.splitlines()) == 1
