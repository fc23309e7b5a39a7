"""Tick-level sweeps (hpte.engine.sweep.ticks): every row equals the single ``hpte backtest`` of
its parameter set exactly (all metrics, through the one metrics accumulator), whatever the
thread count or the chunk of the grid; the CLI; options of the other kind refused."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from hpte.engine.backtest import backtest
from hpte.engine.backtest.data import write_events
from hpte.engine.sweep import SweepError, sweep
from hpte.engine.sweep.ticks import TICK_METRICS
from hpte.kernels.backtest import loop as K
from hpte.kernels.backtest import metrics as M

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "backtest"))
from bt_flows import random_flow, random_l2_flow  # noqa: E402

KW = dict(latency="feed=3us,entry=1us:5us,response=2us", fees="maker=-1,taker=2", seed=3, sample="50us")


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HPTE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "hpte-cache"))


def _rows_equal_backtests(res, ev, **kw):
    t = res.table
    assert len(t["pnl"]) == res.stats["sets"]
    for j in range(len(t["pnl"])):
        p = {n: float(t[n][j]) for n in res.names}
        one = backtest("market_maker", ev, params=p, **kw)
        assert one.config["mode"] == kw.get("mode", "no-impact")
        assert set(one.metrics) == set(TICK_METRICS)
        for m in TICK_METRICS:
            assert t[m][j] == one.metrics[m], (p, m, t[m][j], one.metrics[m])


def test_layout_of_the_fold_matches_the_loop():
    assert (M._FL_SIDE, M._FL_PX, M._FL_QTY, M._FL_MAKER, M._FL_FEE, M._FL_POS, M._FL_CASH, M._FL_QUEUE_NS) == \
        (K.FL_SIDE, K.FL_PX, K.FL_QTY, K.FL_MAKER, K.FL_FEE, K.FL_POS, K.FL_CASH, K.FL_QUEUE_NS)
    assert (M._EL_KIND, M._EL_QTY) == (K.EL_KIND, K.EL_QTY)
    assert (M._EQ_POS, M._EQ_CASH, M._EQ_BID, M._EQ_ASK) == (K.EQ_POS, K.EQ_CASH, K.EQ_BID, K.EQ_ASK)


def test_rows_equal_single_backtests_any_threads_and_chunks():
    import numba

    ev = random_flow(11, 1500)
    rng = np.random.default_rng(5)
    hs = sorted(set(rng.integers(0, 3, 3).tolist()))
    p = {"half_spread": ",".join(map(str, hs)), "size": "2,3", "max_position": "6,40"}
    res = sweep("market_maker", ev, params=p, **KW)
    assert res.stats["sets"] == len(hs) * 4 and res.stats["unit"] == "events"
    assert res.table["trades"].min() > 0 and len(set(res.table["pnl"].tolist())) > 1
    _rows_equal_backtests(res, ev, **KW)
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = sweep("market_maker", ev, params=p, chunk=1, **KW)
    finally:
        numba.set_num_threads(old)
    assert one.stats["chunks"] == res.stats["sets"]
    for k in res.table:
        np.testing.assert_array_equal(one.table[k], res.table[k], err_msg=k)
    assert res.top["pnl"][0] == res.table["pnl"].max()


@pytest.mark.parametrize("queue", ["conservative", "prob:log"])
def test_l2_rows_equal_single_backtests_with_the_queue_model(queue):
    """L2 data (levels and trades, no order ids): each row equals ``hpte.backtest(queue=...)`` of
    its set (the prob model's draws seeded the same); 1 and 2 threads identical."""
    import numba

    ev = random_l2_flow(4, 1200)
    p = {"half_spread": "0,1", "size": "1,3"}
    kw = dict(KW, queue=queue)
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = sweep("market_maker", ev, params=p, chunk=1, **kw)
    finally:
        numba.set_num_threads(old)
    res = sweep("market_maker", ev, params=p, **kw)
    assert res.table["maker_fills"].max() > 0
    _rows_equal_backtests(res, ev, **kw)
    _same_tables(one.table, res.table)


def test_l2_data_needs_a_queue_model_and_a_queue_model_needs_l2_no_impact_cpu():
    p = {"half_spread": "0,1"}
    with pytest.raises(Exception, match="L2 data needs a queue model"):
        sweep("market_maker", random_l2_flow(4, 200), params=p, **KW)
    with pytest.raises(Exception, match="applies to L2 data"):
        sweep("market_maker", random_flow(11, 200), params=p, queue="conservative", **KW)
    with pytest.raises(SweepError, match="impact mode needs L3 data"):
        sweep("market_maker", random_l2_flow(4, 200), params=p, queue="prob", mode="impact", **KW)
    with pytest.raises(SweepError, match="queue.*bogus"):
        sweep("market_maker", random_l2_flow(4, 200), params=p, queue="bogus", **KW)


def _same_tables(a, b):
    assert list(a) == list(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_impact_rows_equal_single_impact_backtests_1_and_2_threads():
    """Impact mode: every parameter set in its own simulated book; each row equals
    ``hpte.backtest(mode="impact")`` of its set; 1 and 2 threads (and any chunking) identical;
    the rows are not no-impact's."""
    import numba

    ev = random_flow(11, 1500)
    rng = np.random.default_rng(13)
    hs = sorted(set(rng.integers(0, 3, 2).tolist()))
    sz = sorted(set(rng.integers(1, 5, 2).tolist()))
    p = {"half_spread": ",".join(map(str, hs)), "size": ",".join(map(str, sz)), "max_position": "6,40"}
    kw = dict(KW, mode="impact")
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        res = sweep("market_maker", ev, params=p, chunk=3, **kw)
        numba.set_num_threads(1)
        one = sweep("market_maker", ev, params=p, **kw)
    finally:
        numba.set_num_threads(old)
    assert res.stats["mode"] == "impact" and res.stats["sets"] == len(hs) * len(sz) * 2
    assert res.table["trades"].min() > 0 and len(set(res.table["pnl"].tolist())) > 1
    _rows_equal_backtests(res, ev, **kw)
    _same_tables(one.table, res.table)
    ni = sweep("market_maker", ev, params=p, **KW).table
    assert not np.array_equal(ni["trades"], res.table["trades"])


def test_impact_sweep_on_amzn_prefix_equals_single_backtests():
    """Impact-mode rows on the real LOBSTER day's first 4,000 events (levels learned from the
    orderbook file), latency and fees: each equals the single impact backtest."""
    from conftest import require_data
    from hpte.engine.backtest.data import MarketEvents, lobster_events

    day = lobster_events(require_data(
        "lobster_AMZN_2012-06-21_level5/AMZN_2012-06-21_34200000_57600000_message_5.csv"))
    ev = MarketEvents(**{c: v[:4_000] for c, v in day.columns().items()}, tick=day.tick)
    kw = dict(latency="feed=100us,entry=50us:150us,response=100us", fees="maker=-20,taker=30", seed=1,
              sample="10s", mode="impact")
    res = sweep("market_maker", ev, params={"half_spread": "0,2", "size": "50,100"}, **kw)
    assert res.table["trades"].max() > 0
    _rows_equal_backtests(res, ev, **kw)


def test_cli_tick_sweep_impact(tmp_path):
    from typer.testing import CliRunner
    from hpte.cli.main import app

    ev = random_flow(11, 1500)
    f = write_events(tmp_path / "ev.parquet", ev)
    r = CliRunner().invoke(app, ["sweep", "market_maker", "--data", str(f), "--tick", str(ev.tick), "--mode", "impact",
                                 "--param", "half_spread=0,1", "--latency", KW["latency"], "--fees", KW["fees"], "--seed",
                                 "3", "--sample", "50us", "--out", str(tmp_path / "o"), "--top", "2", "--no-plot"])
    assert r.exit_code == 0, r.output
    assert "2 parameter sets x 1,485 events" in r.output and "impact mode" in r.output
    import pyarrow.parquet as pq
    t = pq.read_table(tmp_path / "o" / "results.parquet").to_pydict()
    one = backtest("market_maker", f, tick=ev.tick, mode="impact", params={"half_spread": t["half_spread"][1]}, **KW)
    assert t["pnl"][1] == one.metrics["pnl"] and t["trades"][1] == one.metrics["trades"]


def test_cli_tick_sweep(tmp_path):
    import pyarrow.parquet as pq
    from typer.testing import CliRunner
    from hpte.cli.main import app

    ev = random_flow(11, 1500)
    f = write_events(tmp_path / "ev.parquet", ev)
    out = tmp_path / "o"
    r = CliRunner().invoke(app, ["sweep", "market_maker", "--data", str(f), "--tick", str(ev.tick), "--param",
                                 "half_spread=0,1", "--param", "size=2:3:1", "--latency", KW["latency"], "--fees",
                                 KW["fees"], "--seed", "3", "--sample", "50us", "--out", str(out), "--top", "3"])
    assert r.exit_code == 0, r.output
    assert "4 parameter sets x 1,485 events" in r.output and "pnl" in r.output
    t = pq.read_table(out / "results.parquet").to_pydict()
    assert len(t["pnl"]) == 4 and (out / "heatmap.png").stat().st_size > 0
    one = backtest("market_maker", f, tick=ev.tick, params={"half_spread": t["half_spread"][3], "size": t["size"][3]}, **KW)
    assert t["pnl"][3] == one.metrics["pnl"] and t["fill_ratio"][3] == one.metrics["fill_ratio"]


@pytest.mark.parametrize("args,needle", [
    (["market_maker", "--param", "size=1,2", "--fee", "0.1"], "fee: bar-sweep options"),
    (["market_maker", "--param", "size=1,2", "--device", "tpu"], "--device 'tpu': use cpu or gpu"),
    (["market_maker", "--param", "size=1,2", "--device", "gpu", "--cluster", "local"], "--cluster runs the CPU kernel"),
    (["market_maker", "--param", "sise=1,2"], "unknown parameter 'sise'"),
    (["market_maker", "--param", "size=1,2", "--metric", "total_return"], "--metric 'total_return'"),
    (["market_maker", "--param", "size=3:1"], "inverted range"),
    (["ma_cross", "--param", "fast=1,2", "--latency", "1us"], "latency: tick-sweep options"),
    (["ma_cross", "--param", "fast=1,2", "--mode", "impact"], "--mode impact: a tick-sweep option"),
    (["market_maker", "--param", "size=1,2", "--mode", "impakt"], "--mode 'impakt': use no-impact or impact"),
    (["market_maker", "--param", "size=1,2", "--mode", "impact", "--device", "gpu"], "impact-mode tick sweeps run on CPU"),
])
def test_cli_errors_are_one_line(tmp_path, args, needle):
    from typer.testing import CliRunner
    from hpte.cli.main import app

    f = write_events(tmp_path / "ev.parquet", random_flow(1, 50))
    r = CliRunner().invoke(app, ["sweep", *args, "--data", str(f), "--out", str(tmp_path / "o")])
    assert r.exit_code == 1, r.output
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and needle in err, err


def test_tick_sweep_gpu_without_a_gpu_is_a_one_line_error(tmp_path):
    from typer.testing import CliRunner
    from hpte.cli.main import app
    from hpte.engine.device import DeviceError, resolve_device

    try:
        resolve_device("gpu")
        pytest.skip("a GPU (or the simulator) is here: tests/sweep/test_sweep_gpu.py covers the GPU path")
    except DeviceError:
        pass
    f = write_events(tmp_path / "ev.parquet", random_flow(1, 50))
    r = CliRunner().invoke(app, ["sweep", "market_maker", "--param", "size=1,2", "--device", "gpu", "--data", str(f),
                                 "--out", str(tmp_path / "o")])
    assert r.exit_code == 1, r.output
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and "--device gpu:" in err, err
    assert not (tmp_path / "o").exists()


def test_nothing_to_sweep():
    with pytest.raises(SweepError, match="nothing to sweep"):
        sweep("market_maker", random_flow(1, 20))
