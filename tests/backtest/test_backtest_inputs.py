"""More inputs for tick backtests: ITCH 5.0 files (one stock) and hpte order files (matched by
the engine first, published as ITCH, decoded): the ops kernel against its plain-Python
reference, and the whole chain against the engine's own run on real data."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import require_data
from hpte.engine.backtest import backtest
from hpte.engine.backtest.data import itch_events, order_file_events
from hpte.engine.io import InputError
from hpte.kernels.backtest import api as A
from hpte.kernels.backtest import itch_events as IK
from hpte.kernels.backtest import loop as LK
from reference.backtest_ref import itch_ops_ref

ITCH = "itch50_start_of_day_1000msgs/sample.itch"
AMZN = "lobster_AMZN_2012-06-21_level5/AMZN_2012-06-21_34200000_57600000_message_5.csv"


def _kernel(ops, bits=4):
    a = np.array(ops, np.int64).reshape(-1, 7)
    keys = np.full(1 << bits, LK.EMPTY_KEY, np.int64)
    vals = np.zeros((1 << bits, 2), np.int64)
    out = np.zeros((2 * len(a), 6), np.int64)
    counts = np.zeros(IK.NCOUNT, np.int64)
    w = IK.itch_ops_cpu(*(np.ascontiguousarray(a[:, j]) for j in range(7)), keys, vals, bits, out, counts)
    return [tuple(int(x) for x in r) for r in out[:w]], tuple(int(x) for x in counts[:3])


def test_op_codes_match_the_reference():
    assert (IK.OP_ADD, IK.OP_EXEC, IK.OP_CANCEL, IK.OP_DELETE, IK.OP_REPLACE, IK.OP_TRADE) == (1, 2, 3, 4, 5, 6)


@settings(max_examples=60)
@given(st.lists(st.tuples(st.integers(1, 6), st.integers(1, 8), st.integers(0, 4), st.sampled_from([-1, 0, 1]),
                          st.integers(0, 4), st.integers(0, 9)), max_size=60))
def test_itch_ops_against_reference(raw):
    ops, t = [], 1000
    for code, ref, ref2, side, px, n in raw:
        t += 1
        ops.append((code, t, ref, ref2 + 1, side, px * 100, n))
    got = _kernel(ops, bits=6)      # 64 slots: more than twice the 9 references that can be live
    ref_rows, ref_counts = itch_ops_ref(ops)
    assert got[0] == [tuple(r) for r in ref_rows]
    assert got[1] == ref_counts


def test_itch_every_message_kind():
    ops = [(1, 1, 10, 0, 1, 1000, 5), (1, 2, 11, -0, -1, 1100, 7), (2, 3, 10, 0, 0, 0, 2), (3, 4, 11, 0, 0, 0, 3),
           (5, 5, 11, 12, 0, 1200, 9), (2, 6, 12, 0, 0, 0, 20), (4, 7, 10, 0, 0, 0, 0), (6, 8, 0, 0, 1, 1050, 4),
           (4, 9, 99, 0, 0, 0, 0)]
    rows, counts = _kernel(ops)
    assert rows == [(1, A.MK_ADD, 10, 1, 1000, 5), (2, A.MK_ADD, 11, -1, 1100, 7), (3, A.MK_EXEC, 10, 1, 1000, 2),
                    (4, A.MK_CANCEL, 11, -1, 1100, 3), (5, A.MK_CANCEL, 11, -1, 1100, 4), (5, A.MK_ADD, 12, -1, 1200, 9),
                    (6, A.MK_EXEC, 12, -1, 1200, 9), (7, A.MK_CANCEL, 10, 1, 1000, 3), (8, A.MK_TRADE, 0, 1, 1050, 4)]
    assert counts == (1, 1, 0)      # the delete of 99 (unknown), the execution of 20 > 9 (clipped)


def test_itch_sample_file_stock_and_errors():
    """The real ITCH sample (system, directory and status messages only): a stock of its
    directory is found and has no order events; an unknown stock and a missing --stock are
    one-line errors."""
    p = require_data(ITCH)
    ev = itch_events(p, "AAPL")
    assert len(ev) == 0 and ev.tick == 100
    res = backtest("market_maker", ev)
    assert res.metrics["trades"] == 0 and res.stats["events"] == 0
    with pytest.raises(InputError, match=r"no stock 'ZZZZZZ' \(its stock directory has 993: A, AA"):
        itch_events(p, "ZZZZZZ")
    with pytest.raises(InputError, match="choose one with --stock"):
        itch_events(p, None)


def _lobster_order_file(tmp_path, n):
    """The first n messages of the real LOBSTER day as an hpte order file: submissions as GTC
    limits, deletions as cancels, partial cancels as replaces down, executions as IOC orders
    from the other side at the execution price (orders from before 09:30 are unknown to it)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from hpte.engine.md import lobster as L
    from hpte.kernels import enums as E

    m = L.read_messages(require_data(AMZN))
    rows = {c: [] for c in ("ts_ns", "order_id", "side", "price_ticks", "qty", "action", "tif")}
    live = {}
    nid = 10**9
    for i in range(n):
        typ, oid, q, px, d = (int(m.type[i]), int(m.order_id[i]), int(m.size[i]), int(m.price[i]) // 100,
                              int(m.direction[i]))
        row = None
        if typ == 1:
            live[oid] = q
            row = (oid, d, px, q, E.ACT_NEW, E.TIF_GTC)
        elif typ == 3 and oid in live:
            row = (oid, d, px, 0, E.ACT_CANCEL, E.TIF_GTC)
            live.pop(oid)
        elif typ == 2 and oid in live and live[oid] > q:
            live[oid] -= q
            row = (oid, d, px, live[oid], E.ACT_REPLACE, E.TIF_GTC)
        elif typ == 4:
            nid += 1
            row = (nid, -d, px, q, E.ACT_NEW, E.TIF_IOC)
        if row is not None:
            rows["ts_ns"].append(int(m.time_ns[i]))
            for c, v in zip(("order_id", "side", "price_ticks", "qty", "action", "tif"), row):
                rows[c].append(v)
    t = pa.table({"ts_ns": pa.array(rows["ts_ns"], pa.int64()), "order_id": pa.array(rows["order_id"], pa.uint64()),
                  "side": pa.array(rows["side"], pa.int8()), "price_ticks": pa.array(rows["price_ticks"], pa.int64()),
                  "qty": pa.array(rows["qty"], pa.int64()), "action": pa.array(rows["action"], pa.uint8()),
                  "tif": pa.array(rows["tif"], pa.uint8())})
    p = tmp_path / "amzn_orders.parquet"
    pq.write_table(t, p)
    return p


def test_order_file_events_equal_the_engines_run(tmp_path):
    """An order file made from the real LOBSTER day: its market events rebuild the engine's own
    final book level by level, its executions are the engine's fills, and a backtest runs on it."""
    from hpte.engine.io import read_orders
    from hpte.engine.pipeline import match_columns

    p = _lobster_order_file(tmp_path, 6000)
    ev = order_file_events(p)
    assert ev.anomalies == {"unknown_reference": 0, "clipped": 0, "bad_adds": 0}
    run = match_columns(read_orders(p))
    book = {}
    for k, s, px, q in zip(ev.kind, ev.side, ev.price, ev.qty):
        if k in (A.MK_ADD, A.MK_SEED):
            book[(s, px)] = book.get((s, px), 0) + q
        elif k in (A.MK_CANCEL, A.MK_EXEC):
            book[(s, px)] -= q
            assert book[(s, px)] >= 0
    lv = run.engine.book_levels()
    engine_book = {(int(s), int(px)): int(q) for s, px, q in zip(lv["side"], lv["price_ticks"], lv["qty"])}
    assert {k: v for k, v in book.items() if v} == engine_book and len(engine_book) > 20
    fq = run.fills["qty"]
    assert int(ev.qty[ev.kind == A.MK_EXEC].sum()) == int(np.asarray(fq).sum()) > 0
    res = backtest("market_maker", p, params={"size": 100}, latency="100us", sample="10s")
    assert res.stats["events"] == len(ev) and res.config["tick"] == 1
    with pytest.raises(InputError, match="--stock applies to ITCH and order files"):
        from hpte.engine.backtest.data import open_data, write_events
        open_data(write_events(tmp_path / "e.parquet", ev), stock="SYM0")


def test_cli_itch_and_order_file(tmp_path):
    from typer.testing import CliRunner
    from hpte.cli.main import app

    r = CliRunner()
    p = require_data(ITCH)
    res = r.invoke(app, ["backtest", "market_maker", "--data", str(p), "--out", str(tmp_path / "o"), "--no-report"])
    assert res.exit_code == 1 and "choose one with --stock" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = r.invoke(app, ["backtest", "market_maker", "--data", str(p), "--stock", "AAPL", "--out", str(tmp_path / "o"),
                         "--no-report"])
    assert res.exit_code == 0, res.output
    o = _lobster_order_file(tmp_path, 3000)
    res = r.invoke(app, ["backtest", "market_maker", "--data", str(o), "--stock", "0", "--param", "size=100",
                         "--latency", "100us", "--out", str(tmp_path / "o2"), "--no-report"])
    assert res.exit_code == 0, res.output
    res = r.invoke(app, ["backtest", "market_maker", "--data", str(o), "--stock", "5", "--out", str(tmp_path / "o3")])
    assert res.exit_code == 1 and "no stock 'SYM5'" in res.stderr


def test_lobster_conversion_is_cached(tmp_path, monkeypatch):
    """A LOBSTER day is converted once into a cached events file, read back equal; a changed
    file gets a new cache entry; HPTE_DATA_CACHE=0 converts every time."""
    import os

    from hpte.engine.backtest.data import EventFile, MarketEvents, lobster_cache_path, lobster_events, open_data

    monkeypatch.setenv("HPTE_CACHE_DIR", str(tmp_path / "cache"))
    src = require_data(AMZN)
    msg = tmp_path / "AMZN_2012-06-21_34200000_57600000_message_5.csv"
    with src.open() as f:
        msg.write_text("".join(f.readline() for _ in range(3000)))
    direct = lobster_events(msg)
    a = open_data(msg)
    assert isinstance(a, EventFile) and a.name == str(msg) and a.tick == 100 and a.price_scale == 1e-4
    path = lobster_cache_path(msg)
    assert path.is_file()
    stamp = path.stat().st_mtime_ns
    b = open_data(msg)
    assert path.stat().st_mtime_ns == stamp                 # read, not written again
    got = {c: np.concatenate([ch[c] for ch in b.chunks(1000)]) for c in direct.columns()}
    for c, v in direct.columns().items():
        np.testing.assert_array_equal(got[c], v, err_msg=c)
    assert b.price_range() == direct.price_range()
    ra = backtest("market_maker", msg, params={"size": 100}, latency="100us")
    rb = backtest("market_maker", direct, params={"size": 100}, latency="100us")
    assert ra.metrics == rb.metrics and ra.metrics["orders"] > 0
    os.utime(msg, ns=(stamp + 10**9, stamp + 10**9))
    assert lobster_cache_path(msg) != path
    monkeypatch.setenv("HPTE_DATA_CACHE", "0")
    assert isinstance(open_data(msg), MarketEvents)


def _itch_file(tmp_path, n):
    """An ITCH 5.0 file of the engine's run over the order file made from the AMZN day."""
    from hpte.engine.io import read_orders
    from hpte.engine.md.itch import encode_itch
    from hpte.engine.md.itch_out import events_to_itch
    from hpte.engine.pipeline import match_columns

    run = match_columns(read_orders(_lobster_order_file(tmp_path, n)))
    out = events_to_itch(run.events, n_fills=run.fills.n_rows if hasattr(run.fills, "n_rows") else None)
    p = tmp_path / "amzn.itch"
    p.write_bytes(bytes(encode_itch(out.tables)))
    return p


def test_itch_file_is_streamed_in_chunks_with_the_same_rows(tmp_path):
    """ItchSource decodes a few KiB of the file at a time and carries the live orders across
    batches: the rows equal the whole-file conversion for any chunk size, and so do backtests."""
    from hpte.engine.backtest.data import ItchSource, open_data

    p = _itch_file(tmp_path, 4000)
    whole = itch_events(p, "SYM0", tick=1)
    assert len(whole) > 3000
    for cb, size in ((4096, 37), (10_000, 1000), (1 << 26, 1 << 20)):
        src = ItchSource(p, "SYM0", tick=1, chunk_bytes=cb)
        got = list(src.chunks(size))
        if cb == 4096:
            assert len(got) > 20
        for c, v in whole.columns().items():
            np.testing.assert_array_equal(np.concatenate([g[c] for g in got]), v, err_msg=c)
        assert src.anomalies == whole.anomalies and src.price_range() == whole.price_range()
    assert isinstance(open_data(p, stock="SYM0"), ItchSource)
    kw = dict(params={"size": 100}, latency="feed=0:3us,entry=1us,response=1us", seed=2, sample="10s")
    a = backtest("market_maker", ItchSource(p, "SYM0", tick=1, chunk_bytes=4096), chunk_events=101, **kw)
    b = backtest("market_maker", whole, **kw)
    assert a.metrics == b.metrics and np.array_equal(a.fills["seq"], b.fills["seq"]) and a.metrics["orders"] > 0
    with pytest.raises(InputError, match="no stock 'ZZZ'"):
        ItchSource(p, "ZZZ")
