"""``hpte match``, ``hpte book``, ``hpte demo`` through Typer's runner and a real subprocess."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from reference.matcher import ReferenceEngine
from typer.testing import CliRunner

from hpte.cli.main import app
from hpte.engine import io, schema as S
from hpte.engine.gen import generate_flow

runner = CliRunner()

FILL_COLS = ["seq", "ts_ns", "symbol", "taker_order_id", "maker_order_id", "taker_account",
             "maker_account", "taker_side", "price_ticks", "qty"]
EVENT_COLS = ["seq", "ts_ns", "symbol", "order_id", "account", "event", "reason", "leaves_qty"]


@pytest.fixture(scope="module")
def orders(tmp_path_factory):
    p = tmp_path_factory.mktemp("cli") / "orders.parquet"
    cols = generate_flow(20_000, n_books=2, n_accounts=100, seed=11)
    io.write_columns(p, cols, S.ORDER_SCHEMA)
    return p, cols


def test_match_writes_outputs_equal_to_reference(orders, tmp_path):
    path, cols = orders
    f, e, b = tmp_path / "f.parquet", tmp_path / "e.parquet", tmp_path / "b.parquet"
    r = runner.invoke(app, ["match", str(path), "--fills", str(f), "--events", str(e),
                            "--book", str(b), "--batch-size", "777", "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output.strip().splitlines()[-1])
    for k in ("events", "fills", "seconds", "events_per_s", "compile_seconds"):
        assert k in summary
    want = ReferenceEngine().submit(cols)
    fills = pq.read_table(f)
    assert fills.schema.names[:len(FILL_COLS)] == FILL_COLS
    assert summary["events"] == 20_000 and summary["fills"] == fills.num_rows == len(want.fills["seq"])
    for k in FILL_COLS:
        np.testing.assert_array_equal(fills.column(k).to_numpy(), want.fills[k], err_msg=k)
    ev = pq.read_table(e)
    assert set(EVENT_COLS) <= set(ev.schema.names)
    names = ev.column("event").to_pylist()
    assert names == [S.EVENT_NAMES[int(c)] for c in want.events["event"]]
    assert ev.column("reason").to_pylist() == [S.REASON_NAMES[int(c)] for c in want.events["reason"]]
    r = runner.invoke(app, ["book", str(b), "--depth", "3"])
    assert r.exit_code == 0, r.output
    assert r.output.count("symbol ") == 2 and " | " in r.output


@pytest.mark.parametrize("args, message", [
    (["match", "nope.parquet", "--fills", "f.parquet"], "nope.parquet: no such file"),
    (["match", "{orders}", "--fills", "f.parquet", "--stp", "maybe"], "--stp must be one of"),
    (["match", "{orders}", "--fills", "f.parquet", "--batch-size", "0"], "--batch-size must be at least 1"),
    (["match", "{bad}", "--fills", "f.parquet"], "missing required column 'qty'"),
    (["match", "{text}", "--fills", "f.parquet"], "not a readable Parquet file"),
    (["book", "{orders}"], "missing column 'level'"),
])
def test_bad_arguments_and_files_give_one_line(orders, tmp_path, args, message):
    path, cols = orders
    bad = tmp_path / "bad.parquet"
    io.write_table(bad, io.to_arrow({k: v for k, v in cols.items()}, S.ORDER_SCHEMA).drop_columns(["qty"]))
    text = tmp_path / "text.parquet"
    text.write_text("not parquet")
    args = [a.format(orders=path, bad=bad, text=text) for a in args]
    args = [str(tmp_path / a) if a == "f.parquet" else a for a in args]
    r = runner.invoke(app, args)
    assert r.exit_code == 1
    out = r.output.strip()
    assert message in out and "Traceback" not in out and len(out.splitlines()) == 1, out


def test_demo_runs_and_writes_files(tmp_path):
    out = tmp_path / "demo"
    r = runner.invoke(app, ["demo", "--out", str(out), "--events", "5000", "--books", "2"])
    assert r.exit_code == 0, r.output
    for name in ("orders.parquet", "fills.parquet", "events.parquet", "book.parquet", "book.png"):
        assert (out / name).stat().st_size > 0, name
    assert "throughput" in r.output and "M events/s" in r.output


def test_match_in_a_real_subprocess(orders, tmp_path):
    path, _ = orders
    f = tmp_path / "f.arrow"
    env = dict(os.environ)
    r = subprocess.run([sys.executable, "-m", "hpte", "match", str(path), "--fills", str(f), "--json"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["fills"] == io.read_table(f).num_rows > 0
