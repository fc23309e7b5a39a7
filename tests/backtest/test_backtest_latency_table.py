"""Empirical latency tables (``--latency feed=table:FILE``): observed values drawn uniformly from
each channel's seeded stream; kernel == reference, any chunk size, a table of one value is the
constant, orders never reach the exchange before their entry latency, bad tables fail cleanly."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hpte.engine.backtest import backtest, load_strategy
from hpte.engine.backtest.run import parse_latency
from hpte.engine.io import InputError
from bt_flows import random_flow, random_l2_flow
from reference.backtest_ref import run_reference
from test_backtest_ref import assert_same, check_invariants

HERE = Path(__file__).resolve().parent
RANDOM = HERE / "strategies" / "random_actions.py"
FEED = np.array([0, 1_000, 1_000, 7_000, 2_500], np.int64)
ENTRY = np.array([5_000, 50_000], np.int64)


def _ref(strategy, ev, res, lat, params=None, seed=0, queue=(0, 0)):
    strat = load_strategy(strategy)
    c = res.config
    spec = {k: lat.get(k, np.array(c["latency_ns"][k], np.int64)) for k in ("feed", "entry", "response")}
    spec = {k: v if k in lat else tuple(int(x) for x in v) for k, v in spec.items()}
    return run_reference(strat.module, ev.columns(), params=strat.param_vector(params), state_size=strat.state_size,
                         tick=c["tick"], base=c["base"], L=c["ladder"], seed=seed, maker_fee=c["fees"]["maker"],
                         taker_fee=c["fees"]["taker"], timer_ns=c["timer_ns"], sample_ns=c["sample_ns"],
                         depth=c["depth"], max_instant=c["max_instant_actions"], queue=queue, **spec)


def test_tables_match_reference_and_entry_never_early(tmp_path):
    ev = random_flow(8, 800)
    f = tmp_path / "feed.csv"
    f.write_text("latency_ns\n" + "\n".join(map(str, FEED)) + "\n")
    e = tmp_path / "entry.csv"
    e.write_text("\n".join(map(str, ENTRY)) + "\n")      # no header line
    res = backtest(RANDOM, ev, latency=f"feed=table:{f},entry=table:{e},response=2us", seed=4, timer="9us",
                   sample="50us", fees="maker=-1,taker=2")
    assert res.config["latency_tables"] == {"feed": f"table:{f}", "entry": f"table:{e}"}
    ref = _ref(RANDOM, ev, res, {"feed": FEED, "entry": ENTRY}, seed=4)
    assert_same(res, ref)
    check_invariants(res, ev)
    E = res.orders
    sent = {int(E["order_id"][i]): int(E["ts_ns"][i]) for i in range(len(E["ts_ns"])) if E["event"][i] == "SUBMITTED"}
    gaps = [int(E["ts_ns"][i]) - sent[int(E["order_id"][i])] for i in range(len(E["ts_ns"]))
            if E["event"][i] == "ACCEPTED" and int(E["order_id"][i]) in sent]
    assert len(gaps) > 20 and min(gaps) >= ENTRY.min()
    assert {5_000, 50_000} <= set(gaps)         # both observed values were drawn


def test_table_on_l2_data_with_prob_queue_matches_reference(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    ev = random_l2_flow(9, 600)
    p = tmp_path / "resp.parquet"
    pq.write_table(pa.table({"latency_ns": np.array([0, 3_000, 11_000], np.int64)}), p)
    res = backtest(RANDOM, ev, latency=f"feed=1us,entry=0:2us,response=table:{p}", seed=2, queue="prob",
                   sample="50us")
    ref = _ref(RANDOM, ev, res, {"response": np.array([0, 3_000, 11_000], np.int64)}, seed=2,
               queue=tuple(res.config["queue_model"]))
    assert_same(res, ref)


def test_table_any_chunk_size_and_one_value_is_the_constant():
    ev = random_flow(12, 500)
    kw = dict(seed=6, timer="5us", sample="20us")
    lat = {"feed": FEED, "entry": ENTRY, "response": "1us"}
    whole = backtest(RANDOM, ev, latency=lat, **kw)
    part = backtest(RANDOM, ev, latency=lat, chunk_events=7, **kw)
    for name in ("fills", "orders", "equity"):
        for c in getattr(whole, name):
            assert np.array_equal(getattr(whole, name)[c], getattr(part, name)[c]), (name, c)
    one = backtest(RANDOM, ev, latency={"feed": np.array([3_000]), "entry": "2us", "response": "1us"}, **kw)
    const = backtest(RANDOM, ev, latency="feed=3us,entry=2us,response=1us", **kw)
    assert np.array_equal(one.fills["seq"], const.fills["seq"]) and one.metrics == const.metrics
    other = backtest(RANDOM, ev, latency=lat, **dict(kw, seed=7))
    assert not np.array_equal(other.orders["ts_ns"], whole.orders["ts_ns"])   # the seed picks the draws


@pytest.mark.parametrize("body,needle", [
    ("latency_ns\n", "no values"),
    ("latency_ns\n5\n-3\n", "negative latency -3"),
    ("latency_ns\n5\n1.5\n", "integer nanoseconds"),
    ("a,b\n1,2\n", "no latency_ns column"),
])
def test_bad_tables(tmp_path, body, needle):
    p = tmp_path / "t.csv"
    p.write_text(body)
    with pytest.raises(InputError, match=needle):
        parse_latency(f"feed=table:{p}")
    with pytest.raises(InputError, match="no such file"):
        parse_latency(f"entry=table:{tmp_path / 'missing.csv'}")
