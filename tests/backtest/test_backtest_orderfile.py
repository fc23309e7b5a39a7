"""hpte order files as backtest data, streamed (``OrderFileSource``): read in record batches,
matched batch by batch on one Engine, published and converted per batch. The rows and the
backtest's outputs must equal the whole-file path (``order_file_events``) for any batch size."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hpte.engine import schema as S
from hpte.engine.backtest import backtest
from hpte.engine.backtest.data import COLUMNS, OrderFileSource, open_data, order_file_events
from hpte.engine.gen import generate_flow
from hpte.engine.io import InputError
from hpte.kernels.backtest import api as A


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    """A generated flow of two books (adds, cancels, IOC and market orders; a third of the
    cancels made replaces down in place, a third replaces to a new price) as
    Parquet (small row groups) and Arrow IPC (several record batches)."""
    d = tmp_path_factory.mktemp("orders")
    cols = generate_flow(6000, n_books=2, seed=11)
    canc = np.flatnonzero(cols["action"] == S.ACT_CANCEL)
    down, move = canc[0::3], canc[1::3]     # replaces: quantity down in place, and a new price
    cols["action"][down] = S.ACT_REPLACE
    cols["qty"][down] = 1
    cols["action"][move] = S.ACT_REPLACE
    cols["price_ticks"][move] += np.where(cols["side"][move] > 0, 2, -2)
    cols["qty"][move] = 7
    t = pa.table(cols)
    pq.write_table(t, d / "flow.parquet", row_group_size=700)
    with pa.OSFile(str(d / "flow.arrow"), "wb") as f, pa.ipc.new_file(f, t.schema) as w:
        w.write_table(t, max_chunksize=1500)
    return d, cols


def _rows(src, size):
    ch = list(src.chunks(size))
    return {c: np.concatenate([x[c] for x in ch]) if ch else np.zeros(0, np.int64) for c in COLUMNS}


def test_flow_exercises_resting_orders_across_batches(flow):
    _d, cols = flow
    act = cols["action"]
    assert (act == S.ACT_CANCEL).sum() > 100 and (act == S.ACT_REPLACE).sum() > 100
    assert set(np.unique(cols["symbol"]).tolist()) == {0, 1}


@pytest.mark.parametrize("name", ["flow.parquet", "flow.arrow"])
@pytest.mark.parametrize("stock", ["0", "SYM1"])
def test_streamed_rows_equal_the_whole_file(flow, name, stock):
    d, _cols = flow
    whole = order_file_events(d / name, stock=stock)
    assert len(whole) > 2000 and whole.anomalies == {"unknown_reference": 0, "clipped": 0, "bad_adds": 0}
    kinds = set(np.unique(whole.kind).tolist())
    assert {A.MK_ADD, A.MK_CANCEL, A.MK_EXEC} <= kinds
    for batch, size in ((61, 50_000), (257, 33), (1000, 1 << 20), (1 << 20, 999)):
        src = OrderFileSource(d / name, stock=stock, batch_rows=batch)
        got = _rows(src, size)
        for c in COLUMNS:
            np.testing.assert_array_equal(got[c], getattr(whole, c), err_msg=f"{c}, batch_rows {batch}")
        assert src.anomalies == whole.anomalies
        assert src.price_range() == whole.price_range()


def test_backtest_outputs_equal_the_whole_file(flow):
    d, _cols = flow
    p = d / "flow.parquet"
    assert isinstance(open_data(p, stock="1"), OrderFileSource)
    kw = dict(params={"size": 3}, latency="50us", sample="1s")
    ref = backtest("market_maker", order_file_events(p, stock="1"), **kw)
    assert ref.metrics["trades"] > 0
    for data, chunk in ((p, 1 << 20), (OrderFileSource(p, stock="1", batch_rows=313), 101)):
        res = backtest("market_maker", data, stock="1" if data is p else None, chunk_events=chunk, **kw)
        assert res.metrics == ref.metrics
        for t in ("orders", "fills", "equity"):
            for c, v in getattr(ref, t).items():
                np.testing.assert_array_equal(getattr(res, t)[c], v, err_msg=f"{t}.{c}")


def _write(path, cols):
    pq.write_table(pa.table(cols), path, row_group_size=50)
    return path


def test_bad_order_files(flow, tmp_path):
    d, cols = flow
    small = {k: v[:300] for k, v in cols.items() if k != "symbol"}
    good = _write(tmp_path / "one.parquet", small)
    assert len(_rows(OrderFileSource(good, batch_rows=64), 100)["ts_ns"]) > 0   # one symbol: no --stock needed
    with pytest.raises(InputError, match="2 symbols in the order file .*choose one with --stock"):
        OrderFileSource(d / "flow.parquet")
    with pytest.raises(InputError, match=r"no stock 'SYM7' \(the order file has 2 symbol\(s\): SYM0, SYM1\)"):
        OrderFileSource(d / "flow.parquet", stock="7")
    # timestamps going back in the file's row 230 (a later batch): the file's row is named
    bad = dict(small, ts_ns=small["ts_ns"].copy())
    bad["ts_ns"][230] = bad["ts_ns"][229] - 1
    with pytest.raises(InputError, match=r"bad\.parquet: column 'ts_ns' row 230: timestamps must not decrease"):
        _rows(OrderFileSource(_write(tmp_path / "bad.parquet", bad), batch_rows=64), 100)
    # decreasing across a batch boundary (rows 127 -> 128)
    bad["ts_ns"] = small["ts_ns"].copy()
    bad["ts_ns"][128:] -= bad["ts_ns"][128] - bad["ts_ns"][127] + 1
    with pytest.raises(InputError, match=r"rows 128\.\.191: .*timestamps must not decrease across batches"):
        _rows(OrderFileSource(_write(tmp_path / "bad2.parquet", bad), batch_rows=64), 100)
    nq = {k: v for k, v in small.items() if k != "qty"}
    with pytest.raises(InputError, match="missing required column 'qty'"):
        _rows(OrderFileSource(_write(tmp_path / "noqty.parquet", nq), batch_rows=64), 100)
    new = np.flatnonzero(small["action"] == S.ACT_NEW)
    stop = dict(small, order_type=small["order_type"].copy(), stop_price_ticks=small["stop_price_ticks"].copy())
    stop["order_type"][new[40]] = S.OT_STOP
    stop["stop_price_ticks"][new[40]] = small["price_ticks"][new[40]]
    with pytest.raises(InputError, match=f"column 'order_type' row {new[40]}: a STOP / STOP_LIMIT order"):
        _rows(OrderFileSource(_write(tmp_path / "stop.parquet", stop), batch_rows=64), 100)
    ice = dict(small, display_qty=small["display_qty"].copy())
    ice["display_qty"][new[50]] = 1
    with pytest.raises(InputError, match=f"column 'display_qty' row {new[50]}: an iceberg order"):
        _rows(OrderFileSource(_write(tmp_path / "ice.parquet", ice), batch_rows=64), 100)
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"PAR1 not really")
    with pytest.raises(InputError, match=r"junk\.parquet: not a readable Parquet file"):
        OrderFileSource(junk)


def test_fills_file_as_trades_only_l2(flow, tmp_path):
    """A fills file (``hpte match --fills``) is L2 data with trades only: one TRADE row per fill
    of the symbol (side = the maker's), streamed; a backtest needs a queue model, and a resting
    strategy order fills from the trades at or through its price."""
    from pathlib import Path

    from hpte.engine.backtest.data import FillsFile
    from hpte.engine.io import read_orders, write_columns
    from hpte.engine.pipeline import match_columns

    d, _cols = flow
    run = match_columns(read_orders(d / "flow.parquet"))
    f = run.fills
    fp = write_columns(tmp_path / "fills.parquet", {c: np.asarray(f[c]) for c, _dt in S.FILL_COLUMNS}, S.FILL_SCHEMA)
    src = open_data(fp, stock="1")
    assert isinstance(src, FillsFile)
    m = np.asarray(f["symbol"]) == 1
    assert 200 < m.sum() < len(m)
    for batch in (97, 1 << 20):
        got = _rows(FillsFile(fp, stock="SYM1", batch_rows=batch), 50)
        np.testing.assert_array_equal(got["kind"], np.full(m.sum(), A.MK_TRADE))
        np.testing.assert_array_equal(got["ts_ns"], np.asarray(f["ts_ns"])[m] % (86_400 * 10**9))
        np.testing.assert_array_equal(got["side"], -np.asarray(f["taker_side"], np.int64)[m])
        np.testing.assert_array_equal(got["price"], np.asarray(f["price_ticks"])[m])
        np.testing.assert_array_equal(got["qty"], np.asarray(f["qty"])[m])
        np.testing.assert_array_equal(got["order_id"], np.full(m.sum(), -1))
    px = np.asarray(f["price_ticks"])[m]
    assert src.price_range() == (int(px.min()), int(px.max()))
    with pytest.raises(InputError, match="2 symbols in the fills file"):
        open_data(fp)
    # a bid at the median trade price from the 10th trade on, GTC: filled by trades only
    buy = int(np.median(px))
    strat = Path(__file__).parent / "strategies" / "trade_bid.py"
    res = backtest(strat, fp, stock="1", queue="conservative", params={"at": 10, "side": 1, "px": buy, "qty": 5})
    fq = np.asarray(res.fills["qty"])
    assert 0 < fq.sum() <= 5 and (np.asarray(res.fills["price"]) == buy).all()
    assert "queue model conservative" in res.summary()
    later = px[10:]     # trades after the order (at or through the bid) are what can fill it
    assert (later <= buy).any()
    with pytest.raises(InputError, match="taker_side"):
        bad = {c: np.asarray(f[c]) for c, _dt in S.FILL_COLUMNS}
        bad["taker_side"] = bad["taker_side"].copy()
        bad["taker_side"][m.nonzero()[0][3]] = 0
        _rows(FillsFile(write_columns(tmp_path / "bad.parquet", bad, S.FILL_SCHEMA), stock="1"), 50)
