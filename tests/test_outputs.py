"""Outputs on demand and reused output buffers (issue 10), through the Engine and `hpte match`:
the streams asked for hold exactly the rows of a run that writes all three, for every batch
size, thread count, STP mode and with risk; the others come back empty; results the caller
owns survive later batches; bad selections give an error naming what is wrong."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from strategies import random_stream, split_batches
from typer.testing import CliRunner

from hpte.cli.main import app
from hpte.engine import io, schema as S
from hpte.engine.engine import Engine
from hpte.engine.gen import generate_flow

STREAMS = ("fills", "events", "deltas")
SUBSETS = [s for k in range(4) for s in itertools.combinations(STREAMS, k)]


def _cols(rows) -> dict:
    return {k: np.asarray(rows[k]).copy() for k in rows}


def _run(eng, batches, **kw) -> dict:
    out = {s: [] for s in STREAMS}
    for b in batches:
        res = eng.submit(b, **kw)
        for s in STREAMS:
            out[s].append(_cols(getattr(res, s)))
    return {s: {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} for s, parts in out.items()}


def _assert_streams(got, full, asked, what):
    for s in STREAMS:
        for k, v in full[s].items():
            if s in asked:
                np.testing.assert_array_equal(got[s][k], v, err_msg=f"{what}: {s}.{k}")
            else:
                assert got[s][k].shape == (0,) and got[s][k].dtype == v.dtype, (what, s, k)


RISK_TOML = """
[defaults]
max_order_qty = 12
max_position = 40
max_open_orders = 30
[breakers]
band_bps = 300
limit_state_ns = 15
pause_ns = 8
velocity_ticks = 1
velocity_window_ns = 40
auction_ns = 5
"""


@pytest.fixture(scope="module")
def flow():
    cols = random_stream(np.random.default_rng(5), 3000, n_symbols=3, n_accounts=4)
    return cols


@pytest.mark.parametrize("stp", ["none", "decrement"])
@pytest.mark.parametrize("threads", [1, 2])
def test_outputs_on_demand_equal_full_output(flow, stp, threads):
    full = _run(Engine(stp=stp, threads=threads), split_batches(flow, 997))
    assert all(len(full[s]["seq"]) > 0 for s in STREAMS)
    for asked in SUBSETS:
        for sizes in (None, 997, 61):
            batches = [flow] if sizes is None else split_batches(flow, sizes)
            got = _run(Engine(stp=stp, threads=threads, outputs=list(asked)), batches)
            _assert_streams(got, full, asked, f"Engine(outputs={asked}) batches {sizes}")
            if sizes == 61:   # per call, overriding the Engine's choice, views of reused buffers
                got = _run(Engine(stp=stp, threads=threads), batches, outputs=",".join(asked) or "none", copy=False)
                _assert_streams(got, full, asked, f"submit(outputs={asked}, copy=False)")


def test_outputs_on_demand_with_risk(flow):
    from hpte.engine.risk.limits import RiskLimits
    lim = RiskLimits.from_toml(RISK_TOML)
    full = _run(Engine(risk=lim), split_batches(flow, 500))
    reasons = {S.REASON_NAMES[int(r)] for r in full["events"]["reason"]}
    assert {"MAX_ORDER_QTY", "VELOCITY"} <= reasons, reasons
    for asked in (("fills",), ("events",), ("deltas", "fills")):
        got = _run(Engine(risk=lim, outputs=asked), split_batches(flow, 500))
        _assert_streams(got, full, asked, f"risk outputs={asked}")


def test_submit_order_outputs(flow):
    full, fills_only, per_call = Engine(), Engine(outputs="fills"), Engine()
    for i in range(400):
        row = [int(flow[name][i]) for name, _dt, _r, _d in S.ORDER_COLUMNS]
        a, b = full.submit_order(*row), fills_only.submit_order(*row)
        asked = STREAMS[i % 3]
        c = per_call.submit_order(*row, outputs=[asked])
        for s in STREAMS:
            np.testing.assert_array_equal(getattr(b, s).raw, getattr(a, s).raw if s == "fills" else
                                          np.empty((0, len(getattr(a, s).cols)), np.int64), err_msg=s)
            np.testing.assert_array_equal(getattr(c, s).raw, getattr(a, s).raw if s == asked else
                                          np.empty((0, len(getattr(a, s).cols)), np.int64), err_msg=s)


def test_results_survive_later_batches_and_buffers_are_reused():
    cols = generate_flow(20_000, n_books=1, n_accounts=20, seed=3)
    batches = split_batches(cols, 2000)
    eng = Engine()
    kept = [eng.submit(b) for b in batches]           # caller-owned (default copy=True)
    ref = Engine()
    for b, r in zip(batches, kept):
        want = ref.submit(b)
        for s in STREAMS:
            np.testing.assert_array_equal(getattr(r, s).raw, getattr(want, s).raw, err_msg=s)
    # copy=False: every batch's rows are views of the same buffers (nothing re-mapped per batch)
    eng = Engine(outputs="fills,events")
    views = [eng.submit(b, copy=False) for b in batches[:3]]
    for s in ("fills", "events"):
        bases = {id(np.asarray(getattr(v, s).raw).base) for v in views}
        assert len(bases) == 1, s
        assert np.shares_memory(getattr(views[0], s).raw, getattr(views[2], s).raw)


@pytest.mark.parametrize("bad, message", [
    ("trades", "unknown output 'trades'"),
    (["fills", "L2"], "unknown output 'L2'"),
    ("fills,,events,depth", "unknown output 'depth'"),
    (42, "outputs must be"),
])
def test_bad_outputs_name_what_is_wrong(bad, message):
    with pytest.raises(ValueError, match=message):
        Engine(outputs=bad)
    eng = Engine()
    with pytest.raises(ValueError, match=message):
        eng.submit({"ts_ns": [0], "order_id": [1], "side": [1], "price_ticks": [10], "qty": [1]}, outputs=bad)
    assert eng.seq == 0     # nothing happened


def test_cli_match_asks_only_for_what_it_writes(tmp_path):
    cols = generate_flow(12_000, n_books=2, n_accounts=30, seed=4)
    src = tmp_path / "o.parquet"
    io.write_columns(src, cols, S.ORDER_SCHEMA)
    runner = CliRunner()
    r = runner.invoke(app, ["match", str(src), "--fills", str(tmp_path / "all_f.parquet"),
                            "--events", str(tmp_path / "all_e.parquet"), "--json"])
    assert r.exit_code == 0, r.output
    full = json.loads(r.output.strip().splitlines()[-1])
    want_f = pq.read_table(tmp_path / "all_f.parquet")
    want_e = pq.read_table(tmp_path / "all_e.parquet")
    for bs in (None, 4096, 333):
        f = tmp_path / f"f{bs}.parquet"
        args = ["match", str(src), "--fills", str(f), "--json"] + ([] if bs is None else ["--batch-size", str(bs)])
        r = runner.invoke(app, args)
        assert r.exit_code == 0, r.output
        s = json.loads(r.output.strip().splitlines()[-1])
        assert s["fills"] == full["fills"] == want_f.num_rows > 0
        assert s["order_events"] is None and s["deltas"] is None and "event_counts" not in s
        assert pq.read_table(f).equals(want_f)
        if bs == 333:   # streamed events equal the one-batch events
            e = tmp_path / "e333.parquet"
            r = runner.invoke(app, args + ["--events", str(e)])
            assert r.exit_code == 0, r.output
            assert pq.read_table(e).equals(want_e)
            assert json.loads(r.output.strip().splitlines()[-1])["event_counts"] == full["event_counts"]
    r = runner.invoke(app, ["match", str(src), "--fills", str(tmp_path / "x.arrow"), "--batch-size", "5000"])
    assert r.exit_code == 0 and "not written" in r.output, r.output
    assert io.read_table(tmp_path / "x.arrow").equals(want_f)
