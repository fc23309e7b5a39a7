"""Bar backtests and sweeps on the CPU: the kernels against the plain-Python references
(tests/reference/bars_ref.py) and vectorbt, every sweep row against its single backtest, thread
count and chunk size invariance, bad input, and the CLI."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpte.engine.sweep import SweepError, backtest_bars, sweep
from hpte.engine.sweep.data import bars_from_close, random_walk
from hpte.engine.sweep.grid import GridError, make_grid, parse_range
from hpte.engine.sweep.strategy import load_bar_strategy
from hpte.kernels.backtest import bars as bb
from reference.bars_ref import backtest_bars_ref, ma_cross_ref

HERE = Path(__file__).resolve().parent
RANDOM = HERE / "strategies" / "random_bars.py"


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HPTE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "hpte-cache"))


def plateau_walk(n, seed):
    """Closes on a coarse grid with many repeats, so that moving averages are often equal."""
    rng = np.random.default_rng(seed)
    return 100.0 + np.cumsum(rng.integers(-1, 2, n)).astype(np.float64)


def test_layout_matches_reference():
    from reference import bars_ref as R
    assert (bb.BC_TIME, bb.BC_CLOSE, bb.BC_INDEX, bb.BC_NBARS, bb.BC_POSITION, bb.BC_CASH, bb.BC_EQUITY) == \
        (R.TIME, R.CLOSE, R.INDEX, R.NBARS, R.POSITION, R.CASH, R.EQUITY)
    assert (bb.ACT_KIND, bb.ACT_VALUE, bb.NCTX) == (R.KIND, R.VALUE, 11)


# ---------------------------------------------------------------------------------------------
# ma_cross: vectorbt's semantics
# ---------------------------------------------------------------------------------------------
@settings(max_examples=40)
@given(n=st.integers(1, 400), fast=st.integers(1, 40), slow=st.integers(1, 60), seed=st.integers(0, 10**6),
       plateau=st.booleans())
def test_ma_cross_against_reference(n, fast, slow, seed, plateau):
    close = plateau_walk(n, seed) if plateau else random_walk(n, seed)
    r = backtest_bars("ma_cross", close, params={"fast": fast, "slow": slow})
    ret, orders, prod = ma_cross_ref(close, fast, slow)
    assert r.metrics["total_return"] == pytest.approx(ret, rel=1e-12, abs=1e-12)
    assert r.metrics["total_return"] == pytest.approx(prod, rel=1e-9, abs=1e-9)
    assert r.metrics["trades"] == orders


def test_ma_cross_equal_averages_reset_the_crossing_state():
    # fast(1) vs slow(2) over 1,1,... : equal, then below/equal/above patterns
    close = np.array([5, 5, 4, 4, 4, 6, 6, 6, 5, 6, 7, 6, 5, 5, 5, 7], np.float64)
    r = backtest_bars("ma_cross", close, params={"fast": 1, "slow": 2})
    ret, orders, _ = ma_cross_ref(close, 1, 2)
    assert orders > 2 and r.metrics["trades"] == orders
    assert r.metrics["total_return"] == pytest.approx(ret, rel=1e-12)


vbt = None
try:  # vectorbt is the bench extra; where it is not installed the reference tests above hold the rules
    import vectorbt as vbt  # noqa: F811
except Exception:  # pragma: no cover
    vbt = None


@pytest.mark.skipif(vbt is None, reason="vectorbt is not installed (pip install 'hpte[bench]')")
@pytest.mark.parametrize("seed,plateau", [(1, False), (2, True), (3, True), (4, False)])
def test_ma_cross_against_vectorbt(seed, plateau):
    import pandas as pd
    n = 3000
    close = plateau_walk(n, seed) if plateau else random_walk(n, seed)
    s = pd.Series(close)
    fasts, slows = [2, 5, 10, 30], [3, 20, 50, 120]
    res = sweep("ma_cross", close, params={"fast": fasts, "slow": slows})
    t = res.table
    for f in fasts:
        fm = vbt.MA.run(s, f)
        for w in slows:
            sm = vbt.MA.run(s, w)
            pf = vbt.Portfolio.from_signals(s, fm.ma_crossed_above(sm), fm.ma_crossed_below(sm), init_cash=100.0)
            k = np.flatnonzero((t["fast"] == f) & (t["slow"] == w))[0]
            assert t["total_return"][k] == pytest.approx(pf.total_return(), rel=1e-9, abs=1e-9), (f, w)
            assert t["trades"][k] == pf.orders.count(), (f, w)
            assert t["max_drawdown"][k] == pytest.approx(-pf.max_drawdown(), rel=1e-9, abs=1e-12), (f, w)


# ---------------------------------------------------------------------------------------------
# a general strategy against the plain-Python reference
# ---------------------------------------------------------------------------------------------
def _mat(strat, close, seed=0):
    rng = np.random.default_rng(seed)
    base = bars_from_close(close)
    base[1] = close * (1 + rng.normal(0, 0.001, len(close)))
    base[2] = np.maximum(base[1], close) * 1.001
    base[3] = np.minimum(base[1], close) * 0.999
    base[5] = rng.integers(1, 1000, len(close))
    return base, strat.prepare(base)


@settings(max_examples=30)
@given(n=st.integers(1, 300), seed=st.integers(0, 1000), rate=st.floats(0.0, 1.0), size=st.floats(-5, 5),
       fee=st.sampled_from([0.0, 0.001, 0.01]), dseed=st.integers(0, 10**6))
def test_random_strategy_against_reference(n, seed, rate, size, fee, dseed):
    strat = load_bar_strategy(RANDOM)
    base, mat = _mat(strat, random_walk(n, dseed), dseed)
    p = {"seed": seed, "rate": rate, "size": size}
    r = backtest_bars(strat, base, params=p, fee=fee, bars_year=252.0)
    ref, curve = backtest_bars_ref(strat.module.on_bar.py_func if hasattr(strat.module.on_bar, "py_func")
                                   else strat.module.on_bar, mat, strat.param_vector(p), strat.state_size,
                                   fee=fee, ann=252.0)
    np.testing.assert_allclose(r.equity, curve, rtol=1e-12, atol=1e-12)
    for k, v in ref.items():
        if isinstance(v, float) and math.isnan(v):
            assert math.isnan(r.metrics[k]), k
        else:
            assert r.metrics[k] == pytest.approx(v, rel=1e-9, abs=1e-12), k


def test_ma_cross_against_generic_reference():
    strat = load_bar_strategy("ma_cross")
    close = plateau_walk(500, 5)
    base, mat = _mat(strat, close)
    for f, s in [(3, 10), (10, 3), (5, 5), (1, 2)]:
        r = backtest_bars(strat, base, params={"fast": f, "slow": s}, bars_year=252.0)
        ref, curve = backtest_bars_ref(strat.module.on_bar, mat, [f, s], strat.state_size, ann=252.0)
        np.testing.assert_allclose(r.equity, curve, rtol=1e-12)
        assert r.metrics["trades"] == ref["trades"]


# ---------------------------------------------------------------------------------------------
# sweeps: every row is its single backtest; threads and chunks change nothing
# ---------------------------------------------------------------------------------------------
@settings(max_examples=8)
@given(data=st.data())
def test_sweep_rows_equal_single_backtests(data):
    n = data.draw(st.integers(2, 400))
    close = random_walk(n, data.draw(st.integers(0, 1000)))
    seeds = data.draw(st.lists(st.integers(0, 50), min_size=1, max_size=4, unique=True))
    rates = data.draw(st.lists(st.floats(0, 1), min_size=1, max_size=3, unique=True))
    fee = data.draw(st.sampled_from([0.0, 0.002]))
    res = sweep(RANDOM, close, params={"seed": seeds, "rate": rates}, fee=fee, bars_year=252.0,
                chunk=data.draw(st.integers(1, 5)))
    t = res.table
    assert len(t["seed"]) == len(seeds) * len(rates)
    for k in range(len(t["seed"])):
        one = backtest_bars(RANDOM, close, params={"seed": t["seed"][k], "rate": t["rate"][k]}, fee=fee,
                            bars_year=252.0)
        for m, v in one.metrics.items():
            assert (t[m][k] == v) or (math.isnan(v) and math.isnan(t[m][k])), (k, m, t[m][k], v)


def test_grid_order_and_defaults():
    res = sweep(RANDOM, random_walk(50, 1), params={"seed": "1:3:1", "size": "0.5,1.5"})
    assert res.table["seed"].tolist() == [1, 1, 2, 2, 3, 3]
    assert res.table["size"].tolist() == [0.5, 1.5] * 3
    assert (res.table["rate"] == 0.3).all()          # not swept: the default


def test_threads_do_not_change_results():
    import numba
    close = random_walk(3000, 7)
    p = {"fast": "2:40:3", "slow": "10:90:7"}
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = sweep("ma_cross", close, params=p).table
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = sweep("ma_cross", close, params=p).table
    finally:
        numba.set_num_threads(before)
    for k in one:
        np.testing.assert_array_equal(one[k], two[k], err_msg=k)


def test_chunks_and_streaming_do_not_change_results(tmp_path):
    close = random_walk(2000, 3)
    p = {"fast": "2:30:2", "slow": "5:60:5"}
    whole = sweep("ma_cross", close, params=p, plot=False).table
    res = sweep("ma_cross", close, params=p, out=tmp_path, chunk=7, plot=False, top=5)
    import pyarrow.parquet as pq
    t = pq.read_table(res.path).to_pydict()
    assert res.stats["chunks"] == math.ceil(len(whole["fast"]) / 7)
    for k in whole:
        np.testing.assert_array_equal(np.asarray(t[k]), whole[k], err_msg=k)
    order = np.argsort(-whole["total_return"], kind="stable")[:5]
    np.testing.assert_array_equal(res.top["total_return"], whole["total_return"][order])


def test_fees_lower_returns_and_count_trades():
    close = random_walk(2000, 11)
    p = {"fast": [5, 10], "slow": [30, 60]}
    free = sweep("ma_cross", close, params=p).table
    paid = sweep("ma_cross", close, params=p, fee=0.001).table
    np.testing.assert_array_equal(free["trades"], paid["trades"])
    assert (paid["total_return"] < free["total_return"]).all()


# ---------------------------------------------------------------------------------------------
# bad input: one line naming it, before any work
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("params,message", [
    ({"fast": "10:5:1"}, "inverted range"),
    ({"fast": "5:10:0"}, "step must be positive"),
    ({"fast": ""}, "empty value"),
    ({"fats": "5:10"}, "unknown parameter 'fats'"),
    ({"fast": "a:b"}, "not a number"),
    ({}, "nothing to sweep"),
])
def test_bad_grids(params, message):
    with pytest.raises((SweepError, GridError), match=message):
        sweep("ma_cross", random_walk(10, 0), params=params)


def test_grid_file(tmp_path):
    g = tmp_path / "grid.toml"
    g.write_text("[params]\nfast = {start = 2, stop = 6, step = 2}\nslow = [10, 20]\n")
    res = sweep("ma_cross", random_walk(100, 0), grid=g)
    assert res.table["fast"].tolist() == [2, 2, 4, 4, 6, 6]
    res = sweep("ma_cross", random_walk(100, 0), grid=g, params={"slow": "30"})
    assert res.table["slow"].tolist() == [30, 30, 30]
    g.write_text("[params]\nfast = {start = 6, stop = 2}\n")
    with pytest.raises(GridError, match="inverted range"):
        sweep("ma_cross", random_walk(100, 0), grid=g)
    g.write_text("[params]\nfast = []\n")
    with pytest.raises(GridError, match="empty list"):
        sweep("ma_cross", random_walk(100, 0), grid=g)


def test_too_large_for_memory():
    with pytest.raises(SweepError, match="more than the memory budget"):
        sweep("ma_cross", random_walk(100, 0), params={"fast": "1:2000", "slow": "1:2000"}, memory="10MiB")
    with pytest.raises(SweepError, match="the bar data needs"):
        sweep("ma_cross", random_walk(200_000, 0), params={"fast": "1:2"}, memory="1MiB")


def test_parse_range():
    assert parse_range("f", "5:100:5").tolist() == list(range(5, 101, 5))
    assert len(parse_range("s", "110:600:10")) == 50
    assert parse_range("x", "0.1:0.3:0.1").tolist() == pytest.approx([0.1, 0.2, 0.3])
    assert parse_range("x", "3").tolist() == [3.0]


def test_grid_chunks_cover_the_product():
    strat = load_bar_strategy(RANDOM)
    g = make_grid(strat, {"seed": "1:4", "rate": "0.1,0.2,0.3"})
    whole = g.chunk(0, g.size)
    parts = np.concatenate([g.chunk(s, min(s + 5, g.size)) for s in range(0, g.size, 5)])
    np.testing.assert_array_equal(whole, parts)
    assert len({tuple(r) for r in whole}) == g.size == 12


def test_bad_strategy_files(tmp_path):
    from hpte.engine.backtest.strategy import StrategyError
    bad = tmp_path / "bad.py"
    bad.write_text("def on_bar(ctx, data, params, state, act)\n    pass\n")
    with pytest.raises(StrategyError, match="syntax error"):
        sweep(bad, random_walk(10, 0), params={})
    bad.write_text("PARAMS = {'a': 1.0}\ndef on_book(md, orders, params, state, act):\n    pass\n")
    with pytest.raises(StrategyError, match="missing callback on_bar"):
        sweep(bad, random_walk(10, 0), params={"a": "1:2"})
    bad.write_text("PARAMS = {'a': 1.0}\ndef on_bar(ctx, data, params, state, act):\n    y = ctx.no_such_attribute\n")
    with pytest.raises(StrategyError, match="on_bar.*cannot be compiled"):
        sweep(bad, random_walk(10, 0), params={"a": "1:2"}, out=tmp_path / "o")
    assert not (tmp_path / "o" / "results.parquet").exists()


def test_gpu_without_a_gpu_is_refused_before_work(monkeypatch):
    from hpte.engine import device
    from hpte.engine.device import DeviceError
    monkeypatch.setattr(device, "probe_numba_cuda", lambda: ("none", "numba-cuda found no usable GPU: no driver"))
    with pytest.raises(DeviceError, match="--device gpu: numba-cuda found no usable GPU"):
        sweep("ma_cross", random_walk(10, 0), params={"fast": "1:3"}, device="gpu")


def test_unreachable_cluster():
    pytest.importorskip("distributed", reason="Dask is the dask extra (pip install 'hpte[dask]')")
    with pytest.raises(SweepError, match=r"--cluster tcp://127.0.0.1:9: unreachable"):
        sweep("ma_cross", random_walk(10, 0), params={"fast": "1:3"}, cluster="tcp://127.0.0.1:9")


# ---------------------------------------------------------------------------------------------
# data files and the CLI
# ---------------------------------------------------------------------------------------------
def _bars_file(path, closes_by_symbol):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from hpte.engine.md.bars import BAR_SCHEMA
    rows = {f.name: [] for f in BAR_SCHEMA}
    for sym, closes in closes_by_symbol.items():
        for i, c in enumerate(closes):
            px = int(round(c * 100))
            vals = dict(symbol=sym, start_ns=i * 10**9, end_ns=(i + 1) * 10**9, open=px, high=px + 1, low=px - 1,
                        close=px, volume=100 + i, n_trades=1, vwap=float(px))
            for k in rows:
                rows[k].append(vals[k])
    pq.write_table(pa.table(rows, schema=BAR_SCHEMA), path)
    return path


def test_md_bars_file_and_symbols(tmp_path):
    from hpte.engine.io import InputError
    c = random_walk(300, 4)
    f = _bars_file(tmp_path / "bars.parquet", {7: c, 9: c[::-1]})
    with pytest.raises(InputError, match="2 symbols in the file"):
        sweep("ma_cross", f, params={"fast": "2:4"})
    res = sweep("ma_cross", f, params={"fast": "2:4", "slow": "10"}, symbol=9)
    ticks = np.round(c[::-1] * 100)
    ret, orders, _ = ma_cross_ref(ticks, 3, 10)
    assert res.table["total_return"][1] == pytest.approx(ret, rel=1e-12)
    assert res.stats["bars_per_year"] == pytest.approx(252 * 23400)


def _cli(*args):
    from typer.testing import CliRunner
    from hpte.cli.main import app
    return CliRunner().invoke(app, list(args))


def test_cli_sweep_writes_results_and_heatmap(tmp_path):
    import pyarrow.parquet as pq
    f = _bars_file(tmp_path / "bars.parquet", {1: random_walk(400, 2)})
    r = _cli("sweep", "ma_cross", "--data", str(f), "--param", "fast=2:10:2", "--param", "slow=20:40:10",
             "--top", "3", "--out", str(tmp_path / "out"))
    assert r.exit_code == 0, r.output
    t = pq.read_table(tmp_path / "out" / "results.parquet")
    assert t.num_rows == 15 and t.column_names[:2] == ["fast", "slow"]
    assert {"total_return", "sharpe", "max_drawdown", "trades", "exposure"} <= set(t.column_names)
    assert (tmp_path / "out" / "heatmap.png").stat().st_size > 1000
    lines = r.output.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.split()[:3] == ["rank", "fast", "slow"])
    best = max(t.column("total_return").to_pylist())
    assert float(lines[head + 1].split()[3]) == pytest.approx(best, rel=1e-5)
    assert "parameter sets (100%)" in r.output


def test_cli_walk_and_ranking_plot(tmp_path):
    r = _cli("sweep", str(RANDOM), "--walk", "300", "--param", "seed=1:3", "--param", "rate=0.1,0.5",
             "--param", "size=1,2", "--out", str(tmp_path), "--quiet", "--metric", "sharpe")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "ranking.png").is_file() and not (tmp_path / "heatmap.png").exists()


@pytest.mark.parametrize("args,message", [
    (["--walk", "100", "--param", "fast=9:3"], "error: --param fast=9:3: inverted range"),
    (["--walk", "100", "--param", "speed=1:3"], "error: ma_cross: unknown parameter 'speed'"),
    (["--param", "fast=1:3"], "error: give the bars with --data FILE or --walk N"),
    (["--data", "nope.parquet", "--param", "fast=1:3"], "error: nope.parquet: no such bars file"),
    (["--walk", "100", "--param", "fast"], "error: --param 'fast': use NAME=START:STOP:STEP"),
    (["--walk", "100", "--param", "fast=1:3", "--device", "tpu"], "error: --device 'tpu': use cpu or gpu"),
    (["--walk", "100", "--param", "fast=1:1000", "--param", "slow=1:1000", "--memory", "1MiB", "--chunk", "100000"],
     "error: --chunk 100,000 parameter sets do not fit"),
    (["--walk", "100", "--param", "fast=1:3", "--metric", "alpha"], "error: --metric 'alpha': use one of"),
    (["--walk", "100", "--param", "fast=1:3", "--fee", "-0.1"], "error: --fee -0.1"),
    (["--walk", "100", "--param", "fast=1:3", "--device", "gpu", "--cluster", "local"], "error: --cluster runs the CPU"),
])
def test_cli_errors_are_one_line(tmp_path, args, message):
    r = _cli("sweep", "ma_cross", *args, "--out", str(tmp_path / "o"))
    assert r.exit_code == 1
    out = r.output.strip().splitlines()
    assert len(out) == 1 and out[0].startswith(message), r.output
    assert not (tmp_path / "o" / "results.parquet").exists()


def test_public_api():
    import hpte
    assert hpte.sweep is sweep
    res = hpte.sweep("ma_cross", random_walk(200, 1), params={"fast": [2, 3], "slow": [5]}, top=1)
    assert len(res.top["fast"]) == 1
    none = hpte.sweep("ma_cross", random_walk(200, 1), params={"fast": [2, 3]}, top=0)
    assert none.top == {} and "2 parameter sets x 200 bars" in none.summary()


def test_readme_strategy(tmp_path):
    """The bar strategy example in README.md runs, agrees with the reference, and re-sending a
    target it already holds is not an order."""
    import re
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    sec = text[text.index("## Parameter sweeps"):]
    code = next(c for c in re.findall(r"```python\n(.*?)```", sec, re.S) if "def on_bar" in c)
    f = tmp_path / "lookback.py"
    f.write_text(code)
    strat = load_bar_strategy(f)
    close = random_walk(800, 9)
    base, mat = _mat(strat, close)
    res = sweep(f, base, params={"lookback": "5:30:5"}, bars_year=252.0).table
    for k, w in enumerate(res["lookback"]):
        ref, _ = backtest_bars_ref(strat.module.on_bar, mat, [w], strat.state_size, ann=252.0)
        assert res["trades"][k] == ref["trades"]
        assert res["total_return"][k] == pytest.approx(ref["total_return"], rel=1e-12)
        signal = (close[int(w):] > close[:-int(w)]).astype(int)
        assert res["trades"][k] == 1 + np.count_nonzero(np.diff(signal)) - (signal[0] == 0)
