"""``hpte backtest`` end to end, bad strategy files and bad parameters (one-line errors), and
the compile cache (a changed file recompiles, an unchanged one loads)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from bt_flows import random_flow
from conftest import require_data
from hpte.cli.main import app
from hpte.engine.backtest import StrategyError, backtest, load_strategy
from hpte.engine.backtest.data import write_events

AMZN = "lobster_AMZN_2012-06-21_level5/AMZN_2012-06-21_34200000_57600000_message_5.csv"
runner = CliRunner()


def _events_file(tmp_path) -> Path:
    return write_events(tmp_path / "events.parquet", random_flow(5, 300))


def _one_line_error(result, *needles):
    assert result.exit_code == 1, result.output
    err = result.stderr.strip()
    assert "Traceback" not in result.output and "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, err
    return err


def _write(tmp_path, name, body) -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(body))
    return p


GOOD_HEAD = "from hpte.kernels.backtest import api as bt\n"


@pytest.mark.parametrize("name,body,needles", [
    ("syntax.py", GOOD_HEAD + "def on_book(md, orders, params, state, act)\n    return None\n",
     ("syntax.py", "line 2", "syntax error")),
    ("missing.py", GOOD_HEAD + "def on_trade(md, orders, params, state, act):\n    return None\n",
     ("missing.py", "missing callback on_book")),
    ("arity.py", GOOD_HEAD + "def on_book(md, orders):\n    return None\n",
     ("arity.py", "on_book takes 2 arguments")),
    ("raises.py", GOOD_HEAD + "import no_such_module_hpte\n", ("raises.py", "ModuleNotFoundError")),
    ("badparams.py", GOOD_HEAD + "PARAMS = {'a': 'x'}\ndef on_book(md, orders, params, state, act):\n    return None\n",
     ("badparams.py", "PARAMS defaults must be numbers")),
])
def test_bad_strategy_files(tmp_path, name, body, needles):
    p = _write(tmp_path, name, body)
    res = runner.invoke(app, ["backtest", str(p), "--data", str(_events_file(tmp_path)), "--out", str(tmp_path / "o")])
    _one_line_error(res, *needles)


def test_uncompilable_callback_is_named(tmp_path):
    p = _write(tmp_path, "nojit.py", GOOD_HEAD + textwrap.dedent("""
        import json

        def on_book(md, orders, params, state, act):
            return None

        def on_fill(md, orders, params, state, act):
            state[0] = len(json.dumps({"a": 1}))
        """))
    res = runner.invoke(app, ["backtest", str(p), "--data", str(_events_file(tmp_path)), "--out", str(tmp_path / "o")])
    _one_line_error(res, "nojit.py", "callback on_fill", "cannot be compiled")


@pytest.mark.parametrize("args,needles", [
    (["--param", "nosuch=1"], ("unknown parameter 'nosuch'", "half_spread")),
    (["--param", "size=abc"], ("size='abc' is not a number",)),
    (["--param", "size"], ("use NAME=VALUE",)),
    (["--latency", "feed=fast"], ("latency feed", "bad duration")),
    (["--latency", "wire=1us"], ("unknown channel 'wire'",)),
    (["--latency", "entry=5us:1us"], ("inverted",)),
    (["--fees", "maker=0.5"], ("maker='0.5' is not an integer",)),
    (["--mode", "sideways"], ("mode 'sideways'",)),
])
def test_bad_options(tmp_path, args, needles):
    res = runner.invoke(app, ["backtest", "market_maker", "--data", str(_events_file(tmp_path)),
                              "--out", str(tmp_path / "o"), *args])
    _one_line_error(res, *needles)


def test_bad_data(tmp_path):
    res = runner.invoke(app, ["backtest", "market_maker", "--data", str(tmp_path / "none.parquet"), "--out", str(tmp_path / "o")])
    _one_line_error(res, "none.parquet", "no such data file")
    res = runner.invoke(app, ["backtest", "nosuchstrategy", "--data", str(_events_file(tmp_path)), "--out", str(tmp_path / "o")])
    _one_line_error(res, "nosuchstrategy", "market_maker")
    ev = random_flow(5, 50)
    ev.side[7] = 3
    p = write_events(tmp_path / "bad.parquet", ev)
    res = runner.invoke(app, ["backtest", "market_maker", "--data", str(p), "--out", str(tmp_path / "o")])
    _one_line_error(res, "bad.parquet", "row 7", "side 3")


def test_events_file_equals_in_memory(tmp_path):
    ev = random_flow(8, 700)
    p = write_events(tmp_path / "ev.parquet", ev, row_group=100)
    kw = dict(params={"size": 2, "half_spread": 0}, latency="2us", tick=2, chunk_events=64)
    a = backtest("market_maker", ev, **kw)
    b = backtest("market_maker", p, **kw)
    assert a.metrics["trades"] > 0
    for name in ("fills", "orders", "equity"):
        for c in getattr(a, name):
            assert np.array_equal(getattr(a, name)[c], getattr(b, name)[c])


def test_cli_amzn_day_market_maker(tmp_path):
    data = require_data(AMZN)
    out = tmp_path / "out"
    res = runner.invoke(app, ["backtest", "market_maker", "--data", str(data), "--out", str(out),
                              "--latency", "feed=100us,entry=50us:150us,response=100us", "--fees", "maker=-20,taker=30",
                              "--param", "size=100"])
    assert res.exit_code == 0, res.output
    for f in ("orders.parquet", "fills.parquet", "equity.parquet", "summary.json", "report.png"):
        assert (out / f).stat().st_size > 0
    s = json.loads((out / "summary.json").read_text())
    assert s["stats"]["events"] > 155_935     # the messages (less types 6/7) plus the learned levels
    fills = pq.read_table(out / "fills.parquet").to_pydict()
    assert len(fills["qty"]) == s["metrics"]["trades"] > 100
    side = np.array(fills["side"], np.int64)
    q, px, fee = (np.array(fills[c], np.int64) for c in ("qty", "price", "fee"))
    assert int((side * q).sum()) == s["stats"]["position_exchange"] == s["metrics"]["position_end"]
    assert int((-side * px * q - fee).sum()) == s["stats"]["cash_exchange"]
    assert set(np.unique(px % 100)) == {0}        # on the cent grid
    assert "pnl" in res.output and "fill ratio" in res.output


def test_cli_amzn_day_market_maker_impact(tmp_path):
    """The market maker in impact mode over the whole AMZN day through the CLI: the files, the
    fills reconcile with the position and cash, the Python API gives the same fills, and every
    fill passes the impact invariants against the day's events."""
    from hpte.engine.backtest.data import lobster_events
    from test_backtest_impact import check_impact_invariants

    data = require_data(AMZN)
    out = tmp_path / "out"
    args = dict(latency="feed=100us,entry=50us:150us,response=100us", fees="maker=-20,taker=30")
    res = runner.invoke(app, ["backtest", "market_maker", "--data", str(data), "--out", str(out), "--mode", "impact",
                              "--latency", args["latency"], "--fees", args["fees"], "--param", "size=100",
                              "--no-report", "-q"])
    assert res.exit_code == 0, res.output
    s = json.loads((out / "summary.json").read_text())
    assert s["config"]["mode"] == "impact" and s["stats"]["events"] > 155_935
    fills = pq.read_table(out / "fills.parquet").to_pydict()
    assert len(fills["qty"]) == s["metrics"]["trades"] > 100
    side = np.array(fills["side"], np.int64)
    q, px, fee = (np.array(fills[c], np.int64) for c in ("qty", "price", "fee"))
    assert int((side * q).sum()) == s["stats"]["position_exchange"] == s["metrics"]["position_end"]
    assert int((-side * px * q - fee).sum()) == s["stats"]["cash_exchange"]
    assert set(np.unique(px % 100)) == {0}
    assert any(ln.split() == ["mode", "impact"] for ln in res.output.splitlines()) and "fill ratio" in res.output
    api = backtest("market_maker", data, params={"size": 100}, mode="impact", **args)
    for c in fills:
        assert np.array_equal(np.asarray(fills[c]), np.asarray(api.fills[c])), c
    check_impact_invariants(api, lobster_events(data))
    ni = backtest("market_maker", data, params={"size": 100}, **args)
    assert ni.metrics != api.metrics      # the strategy's orders changed the book it traded in


def test_changed_strategy_recompiles_unchanged_loads(tmp_path):
    env = dict(os.environ, HPTE_CACHE_DIR=str(tmp_path / "cache"))
    strat = _write(tmp_path, "tiny.py", GOOD_HEAD + textwrap.dedent("""
        PARAMS = {"px_off": 0.0}

        def on_book(md, orders, params, state, act):
            if md[bt.MD_OPEN] == 0 and md[bt.MD_BID_QTY] > 0:
                bt.submit_limit(md, act, bt.BUY, md[bt.MD_BID_PX] - int(params[0]) * md[bt.MD_TICK], 1)
        """))
    ev = _events_file(tmp_path)
    code = textwrap.dedent(f"""
        from hpte.engine.backtest import backtest, load_strategy
        from hpte.engine.backtest.strategy import driver
        r = backtest({str(strat)!r}, {str(ev)!r}, tick=2)
        st = driver(load_strategy({str(strat)!r})).run_cpu.stats
        print(len(st.cache_hits), len(st.cache_misses), r.metrics["orders"])
        """)

    def run():
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        return [int(x) for x in out.stdout.split()]

    hits, misses, orders1 = run()
    assert (hits, misses) == (0, 1)
    hits, misses, orders2 = run()
    assert (hits, misses) == (1, 0) and orders2 == orders1
    strat.write_text(strat.read_text().replace("md[bt.MD_OPEN] == 0", "md[bt.MD_OPEN] < 2"))
    hits, misses, orders3 = run()
    assert (hits, misses) == (0, 1) and orders3 > orders1
    assert len(list((tmp_path / "cache").glob("bt_tiny_*.py"))) == 2


def test_strategy_errors_in_python():
    with pytest.raises(StrategyError, match="unknown parameter 'x'"):
        load_strategy("market_maker").param_vector({"x": 1})
    with pytest.raises(StrategyError, match="not finite"):
        load_strategy("market_maker").param_vector({"size": float("nan")})


def test_public_name():
    import hpte
    from hpte.engine.backtest.run import backtest as bt_fn

    assert hpte.backtest is bt_fn


def test_cli_bar_strategy_on_amzn_bars(tmp_path):
    """``hpte backtest ma_cross`` on bars made from the real LOBSTER day by ``hpte md lobster
    parse`` and ``hpte md bars``: the sweep's bar kernel, equal to the ma_cross reference and to
    the sweep row of the same parameters; trades reconcile with the position and cash."""
    from reference.bars_ref import ma_cross_ref
    from hpte.engine.sweep import sweep

    data = require_data(AMZN)
    res = runner.invoke(app, ["md", "lobster", "parse", str(data), "--out", str(tmp_path / "amzn")])
    assert res.exit_code == 0, res.output
    bars = tmp_path / "bars.parquet"
    res = runner.invoke(app, ["md", "bars", str(tmp_path / "amzn" / "trades.parquet"), "--every", "10s",
                              "--out", str(bars), "--quiet"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "o"
    res = runner.invoke(app, ["backtest", "ma_cross", "--data", str(bars), "--param", "fast=5", "--param", "slow=20",
                              "--fee", "0.0005", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "total return" in res.output and "trades" in res.output
    s = json.loads((out / "summary.json").read_text())
    close = pq.read_table(bars).column("close").to_numpy().astype(np.float64)
    assert s["stats"]["bars"] == len(close) > 1000
    eq = pq.read_table(out / "equity.parquet").to_pydict()
    fills = pq.read_table(out / "fills.parquet").to_pydict()
    assert (out / "report.png").stat().st_size > 0
    # trades reconcile: cash and position move only at the fills, by their price and quantity
    pos = np.array(eq["position"])
    side, qty, px = (np.array(fills[c], np.float64) for c in ("side", "qty", "price"))
    assert len(qty) == s["metrics"]["trades"] > 20
    np.testing.assert_allclose(np.cumsum(side * qty), np.array(fills["position"]), rtol=1e-12, atol=1e-15)
    assert pos[-1] == fills["position"][-1]
    np.testing.assert_allclose(np.array(eq["equity"]), np.array(eq["cash"]) + pos * close, rtol=1e-12)
    # the sweep row of the same set is the same number, bit for bit
    row = sweep("ma_cross", bars, params={"fast": [5], "slow": [20]}, fee=0.0005, plot=False).table
    assert row["total_return"][0] == s["metrics"]["total_return"]
    # without fees: vectorbt's recipe
    res = runner.invoke(app, ["backtest", "ma_cross", "--data", str(bars), "--param", "fast=5", "--param", "slow=20",
                              "--out", str(tmp_path / "o2"), "--no-report"])
    s2 = json.loads((tmp_path / "o2" / "summary.json").read_text())
    ret, orders, _ = ma_cross_ref(close, 5, 20)
    assert s2["metrics"]["trades"] == orders
    assert s2["metrics"]["total_return"] == pytest.approx(ret, rel=1e-12, abs=1e-12)
    # tick options with a bar strategy, bar options with a tick strategy: one line
    res = runner.invoke(app, ["backtest", "ma_cross", "--data", str(bars), "--latency", "1us", "--out", str(tmp_path / "x")])
    _one_line_error(res, "latency", "bar strategy")
    res = runner.invoke(app, ["backtest", "market_maker", "--data", str(_events_file(tmp_path)), "--fee", "0.1",
                              "--out", str(tmp_path / "x")])
    _one_line_error(res, "fee", "tick strategy")


def test_cli_runaway_is_one_line(tmp_path):
    strat = Path(__file__).resolve().parent / "strategies" / "runaway.py"
    res = runner.invoke(app, ["backtest", str(strat), "--data", str(_events_file(tmp_path)), "--out", str(tmp_path / "o"),
                              "--max-instant-actions", "1000"])
    _one_line_error(res, "runaway", "more than 1,000 actions at one instant", "--max-instant-actions")
