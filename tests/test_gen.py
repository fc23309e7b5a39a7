"""hpte gen: the synthetic benchmark flow (engine/gen.py, kernels/gen.py, cli/gen.py)."""
from __future__ import annotations

from collections import deque

import numpy as np
import pytest
from reference.gen_ref import gen_flow_ref, mix64_ref
from typer.testing import CliRunner

from hpte.cli.main import app
from hpte.engine import gen as G
from hpte.engine import io
from hpte.engine import schema as S
from hpte.kernels import gen as K


@pytest.fixture(scope="module")
def flow200k():
    return G.generate_flow_stats(200_000, seed=11)


# ---------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------
def test_mix64_matches_reference_and_is_injective(rng):
    xs = np.concatenate([np.array([0, 1, 2, 2**63, 2**64 - 1], dtype=np.uint64),
                         rng.integers(0, 2**64 - 1, 2000, dtype=np.uint64, endpoint=True)])
    got = [int(K.mix64(x)) for x in xs]
    assert got == [mix64_ref(int(x)) for x in xs]
    assert len(set(got)) == len(set(int(x) for x in xs))


@pytest.mark.parametrize("n_accounts", [1, 2, 7, 5000])
def test_inverse_cdf_equals_searchsorted(rng, n_accounts):
    cdf, guide = G._zipf_tables(n_accounts)
    u = np.concatenate([rng.random(20_000), cdf[:-1], np.nextafter(cdf[:-1], 0), [0.0, np.nextafter(1.0, 0)]])
    u = u[(u >= 0) & (u < 1)]
    out = np.empty(u.size, dtype=np.uint32)
    K.inverse_cdf_cpu(u, cdf, guide, out)
    np.testing.assert_array_equal(out, np.searchsorted(cdf, u, side="right") + 1)
    assert out.min() >= 1 and out.max() <= n_accounts


# ---------------------------------------------------------------------------------------------
# Differential: kernel vs the plain-Python reference on the same pre-drawn inputs
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,books,accounts,seed,start_mid", [
    (0, 1, 5000, 0, 100_000),
    (1, 1, 5000, 1, 100_000),
    (40_000, 1, 5000, 2, 100_000),  # > 1,250 resting: the IOC scaling leaves its 0.25 floor
    (30_000, 3, 50, 3, 100_000),
    (3000, 1, 1, 4, 3),          # prices near the floor of 1 tick: the ladder starts at 1
    (2500, 7, 5000, 5, 1_000),
])
def test_kernel_matches_reference(monkeypatch, n, books, accounts, seed, start_mid):
    monkeypatch.setattr(G, "GEN_CHUNK", 1000)  # several kernel calls carrying state over
    cols, st = G.generate_flow_stats(n, books, accounts, seed, start_mid)
    setup, draws = G.draw_flow_inputs(n, books, accounts, seed, start_mid)
    ref, cnt, resting, touched = gen_flow_ref(setup, draws)
    for name, arr in ref.items():
        np.testing.assert_array_equal(cols[name], arr, err_msg=name)
    np.testing.assert_array_equal(cols["ts_ns"], setup.ts_ns)
    np.testing.assert_array_equal(cols["symbol"], setup.sym)
    assert (st.trades, st.traded_qty, st.new, st.cancel, st.ioc, st.cancel_as_new, st.marketable) == (
        cnt[K.C_TRADES], cnt[K.C_TRADED_QTY], cnt[K.C_NEW], cnt[K.C_CANCEL], cnt[K.C_IOC],
        cnt[K.C_CANCEL_AS_NEW], cnt[K.C_MARKETABLE])
    assert st.resting_end == sum(resting)
    assert st.levels_touched == touched
    assert st.new + st.cancel + st.ioc == n


def test_chunk_size_constant_defines_the_flow(monkeypatch):
    """The flow depends on GEN_CHUNK (draws are chunked), so it must be a constant: check that
    draw_flow_inputs and generate_flow agree at the real chunk size too."""
    cols, _ = G.generate_flow_stats(3000, seed=9)
    setup, draws = G.draw_flow_inputs(3000, seed=9)
    ref, *_ = gen_flow_ref(setup, draws)
    for name, arr in ref.items():
        np.testing.assert_array_equal(cols[name], arr, err_msg=name)


# ---------------------------------------------------------------------------------------------
# Properties of the flow
# ---------------------------------------------------------------------------------------------
def test_schema_and_determinism():
    a = G.generate_flow(5000, n_books=2, seed=7)
    b = G.generate_flow(5000, n_books=2, seed=7)
    c = G.generate_flow(5000, n_books=2, seed=8)
    assert list(a) == [name for name, *_ in S.ORDER_COLUMNS]
    for name, dt, *_ in S.ORDER_COLUMNS:
        assert a[name].dtype == dt and a[name].shape == (5000,)
        np.testing.assert_array_equal(a[name], b[name])
    assert not np.array_equal(a["order_id"], c["order_id"])
    assert not np.array_equal(a["price_ticks"], c["price_ticks"])
    # the normaliser of engine/io accepts it unchanged
    norm = io.order_columns(a)
    for name in a:
        np.testing.assert_array_equal(norm[name], a[name])


def test_empty_flow():
    cols = G.generate_flow(0)
    assert all(len(v) == 0 for v in cols.values())
    assert set(cols) == {name for name, *_ in S.ORDER_COLUMNS}


def test_ids_unique_and_spread(flow200k):
    cols, _ = flow200k
    ids = cols["order_id"][cols["action"] == S.ACT_NEW]
    assert np.unique(ids).size == ids.size
    bits = ((ids[:, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)).mean(axis=0)
    assert np.all(np.abs(bits - 0.5) < 0.01), bits  # every bit ~ fair: not dense, not small
    assert int(ids.max()) - int(ids.min()) > 2**63
    # other seeds use other ids
    other = G.generate_flow(1000, seed=12)["order_id"]
    assert np.intersect1d(other, ids).size == 0


def test_timestamps(flow200k):
    cols, _ = flow200k
    ts = cols["ts_ns"]
    dt = np.diff(ts)
    assert dt.min() >= 1
    assert ts[0] > G.START_TS_NS
    assert 1900 < dt.mean() < 2100


def test_statistics_match_formats(flow200k):
    cols, st = flow200k
    n = st.n_events
    act, tif, side = cols["action"], cols["tif"], cols["side"]
    new = (act == S.ACT_NEW) & (tif == S.TIF_GTC)
    ioc = (act == S.ACT_NEW) & (tif == S.TIF_IOC)
    cancel = act == S.ACT_CANCEL
    assert abs(new.mean() - 0.60) < 0.006 and abs(cancel.mean() - 0.30) < 0.006 and abs(ioc.mean() - 0.10) < 0.004
    assert (st.new, st.cancel, st.ioc) == (new.sum(), cancel.sum(), ioc.sum())
    assert np.all(cols["order_type"] == S.OT_LIMIT) and np.all(cols["post_only"] == 0)
    assert np.all(cols["symbol"] == 0)
    assert set(np.unique(side)) == {S.BUY, S.SELL}
    assert abs((side[new | ioc] == S.BUY).mean() - 0.5) < 0.01
    assert abs(st.marketable / st.new - 0.03) < 0.003
    # passive distance: geometric(0.12) from the rounded mid, pushed out a little by the touch
    assert 8.0 < st.passive_dist_mean < 9.5
    assert abs(cols["qty"][new].mean() - 1 / 0.15) < 0.1
    assert cols["qty"].min() >= 1 and cols["price_ticks"].min() >= 1
    # IOCs: mean geometric(0.04) = 25 lots scaled by resting/5000 in [0.25, 4]
    assert 0.25 * 25 - 1 < st.ioc_qty_mean < 4 * 25
    # the book holds a few thousand resting orders; trades ~0.366 per event (FORMATS: 3.66M / 10M)
    assert 1_000 < st.resting_end < 20_000
    assert 0.34 < st.trades / n < 0.39
    assert st.clipped == 0 and st.cancel_as_new < 10
    acc = cols["account"]
    assert acc.min() >= 1 and acc.max() <= 5000
    share1 = (acc[new | ioc] == 1).mean()  # Zipf(1.3) on 1..5000: P(1) = 1 / H = 0.272
    assert abs(share1 - 0.272) < 0.01


def _replay(cols) -> tuple[int, int]:
    """Independent price-time book over the generated rows: every cancel must name an order
    resting at that moment with the row's account, side, price and leaves. Returns (trades,
    resting at the end)."""
    books: dict[int, tuple[dict, dict]] = {}
    live: dict[tuple[int, int], list] = {}   # (symbol, id) -> [side, price, leaves, account]
    trades = 0
    for i in range(len(cols["ts_ns"])):
        sym = int(cols["symbol"][i])
        oid = int(cols["order_id"][i])
        s, p, q = int(cols["side"][i]), int(cols["price_ticks"][i]), int(cols["qty"][i])
        bids, asks = books.setdefault(sym, ({}, {}))
        if cols["action"][i] == S.ACT_CANCEL:
            o = live.pop((sym, oid), None)
            assert o is not None, f"row {i}: cancel of id {oid} which is not resting"
            assert o == [s, p, q, int(cols["account"][i])], f"row {i}: cancel row disagrees with the order {o}"
            lvl = (bids if s == S.BUY else asks)[p]
            lvl.remove(oid)
            if not lvl:
                del (bids if s == S.BUY else asks)[p]
            continue
        assert (sym, oid) not in live, f"row {i}: id reused while resting"
        opp = asks if s == S.BUY else bids
        while q and opp:
            best = min(opp) if s == S.BUY else max(opp)
            if (best > p) if s == S.BUY else (best < p):
                break
            fifo = opp[best]
            while fifo and q:
                o = live[(sym, fifo[0])]
                f = min(q, o[2])
                q -= f
                o[2] -= f
                trades += 1
                if o[2] == 0:
                    del live[(sym, fifo.popleft())]
            if not fifo:
                del opp[best]
        if q and cols["tif"][i] == S.TIF_GTC:
            (bids if s == S.BUY else asks).setdefault(p, deque()).append(oid)
            live[(sym, oid)] = [s, p, q, int(cols["account"][i])]
        if bids and asks:
            for b_, a_ in [(max(bids), min(asks))]:
                assert b_ < a_, f"row {i}: book crossed"
    return trades, len(live)


@pytest.mark.parametrize("books", [1, 4])
def test_cancels_name_resting_orders(books):
    cols, st = G.generate_flow_stats(30_000, n_books=books, seed=21)
    trades, resting = _replay(cols)
    assert trades == st.trades
    assert resting == st.resting_end


def test_several_books_interleave():
    cols, st = G.generate_flow_stats(40_000, n_books=5, seed=3)
    sym = cols["symbol"]
    counts = np.bincount(sym, minlength=5)
    assert counts.size == 5 and counts.min() > 7_000
    assert np.all(np.diff(cols["ts_ns"]) >= 1)
    # each book walks on its own: the books' last prices differ
    last = [cols["price_ticks"][np.flatnonzero(sym == b)[-50:]].mean() for b in range(5)]
    assert len({round(x) for x in last}) > 1
    # ids are unique over the whole flow, not only per book
    ids = cols["order_id"][cols["action"] == S.ACT_NEW]
    assert np.unique(ids).size == ids.size


@pytest.mark.parametrize("kwargs,field", [
    ({"n_events": -1}, "n_events"),
    ({"n_events": 1.5}, "n_events"),
    ({"n_events": 10, "n_books": 0}, "n_books"),
    ({"n_events": 10, "n_accounts": 0}, "n_accounts"),
    ({"n_events": 10, "seed": -3}, "seed"),
    ({"n_events": 10, "start_mid": 0}, "start_mid"),
])
def test_bad_arguments(kwargs, field):
    with pytest.raises(ValueError, match=field):
        G.generate_flow(**kwargs)


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
runner = CliRunner()


@pytest.mark.parametrize("suffix", [".parquet", ".arrow"])
def test_cli_gen_writes_the_flow(tmp_path, suffix):
    out = tmp_path / f"flow{suffix}"
    res = runner.invoke(app, ["gen", str(out), "--events", "3000", "--books", "2", "--accounts", "100", "--seed", "5"])
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wrote 3,000 events (2 books)") and "trades" in lines[0]
    got = io.read_orders(out)
    want = G.generate_flow(3000, n_books=2, n_accounts=100, seed=5)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


@pytest.mark.parametrize("args,needle", [
    (["--events", "-5"], "--events"),
    (["--books", "0"], "--books"),
    (["--accounts", "0"], "--accounts"),
    (["--seed", "-1"], "--seed"),
])
def test_cli_gen_bad_arguments(tmp_path, args, needle):
    out = tmp_path / "x.parquet"
    res = runner.invoke(app, ["gen", str(out), "--events", "10", *args])
    assert res.exit_code != 0
    text = res.output.strip()
    assert len(text.splitlines()) == 1 and needle in text and "Traceback" not in text, text
    assert res.exception is None or isinstance(res.exception, SystemExit)
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# Order-type mix: --stops / --gtd (mix_order_types)
# ---------------------------------------------------------------------------------------------
def _digest(cols) -> str:
    import hashlib
    h = hashlib.sha256()
    for name, dt, _req, _default in S.ORDER_COLUMNS:
        a = np.ascontiguousarray(cols[name])
        assert a.dtype == dt, name
        if name == "display_qty":   # added after these digests (icebergs): no iceberg in the flow
            assert not a.any()
            continue
        h.update(name.encode())
        h.update(a.tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("args,digest", [
    # sha256 of the columns as generated before the mix existed (branch stp, 4796e95): the
    # benchmark workload must not change when the mix is off
    ((20_000, 1, 5000, 1), "e4719c7b4d30687e9f0bb040a3e3e19f65bea11a83f266bdfbdb7365a824656b"),
    ((5_000, 3, 100, 7), "86ee6532704ef7dd9fda2828b34262ba0920df8afd4e513a7e9fd2d00ac52bdd"),
])
def test_mix_off_is_the_plain_flow_byte_for_byte(args, digest):
    assert _digest(G.generate_flow(*args)) == digest
    assert _digest(G.generate_flow(*args, stops=0, gtd=0.0)) == digest


def _new_gtc(cols):
    return (cols["action"] == S.ACT_NEW) & (cols["tif"] == S.TIF_GTC)


@pytest.mark.parametrize("stops,gtd", [(0.1, 0.0), (0.0, 0.25), (0.2, 0.3), (0.5, 0.5), (1.0, 0.0)])
def test_mix_fractions_and_row_contents(stops, gtd):
    plain, pst = G.generate_flow_stats(4000, 2, 100, 9)
    cols, st = G.generate_flow_stats(4000, 2, 100, 9, stops=stops, gtd=gtd)
    setup, _ = G.draw_flow_inputs(4000, 2, 100, 9)
    n_new = int(_new_gtc(plain).sum())
    is_stop = np.isin(cols["order_type"], [S.OT_STOP, S.OT_STOP_LIMIT])
    is_gtd = cols["expire_ts_ns"] != 0
    assert is_stop.sum() == st.stops + st.stop_limits == round(stops * n_new)
    assert is_gtd.sum() == st.gtd == min(round(gtd * n_new), n_new - round(stops * n_new))
    assert (cols["order_type"] == S.OT_STOP_LIMIT).sum() == st.stop_limits
    assert not (is_stop & is_gtd).any()
    changed = is_stop | is_gtd
    assert _new_gtc(plain)[changed].all()          # only NEW GTC rows change, and they stay NEW GTC
    assert _new_gtc(cols)[changed].all()
    for name, *_ in S.ORDER_COLUMNS:                # every other row and column is the plain flow's
        if name not in ("order_type", "price_ticks", "stop_price_ticks", "expire_ts_ns"):
            np.testing.assert_array_equal(cols[name], plain[name], err_msg=name)
        else:
            np.testing.assert_array_equal(cols[name][~changed], plain[name][~changed], err_msg=name)
    # stops sit beyond the touch estimate on the side where a move triggers them
    side = cols["side"][is_stop].astype(np.int64)
    touch = np.rint(setup.mid[is_stop]).astype(np.int64) + side
    beyond = (cols["stop_price_ticks"][is_stop] - touch) * side
    assert (beyond >= 1).all()
    lim = cols["order_type"] == S.OT_STOP_LIMIT
    assert (cols["price_ticks"][cols["order_type"] == S.OT_STOP] == 0).all()
    slack = (cols["price_ticks"][lim] - cols["stop_price_ticks"][lim]) * cols["side"][lim]
    assert ((slack >= 0) & (slack <= G.STOP_LIMIT_SLACK)).all()
    assert (cols["expire_ts_ns"][is_gtd] > cols["ts_ns"][is_gtd]).all()
    # the plain simulation's statistics are kept as they were
    assert (st.trades, st.resting_end, st.new) == (pst.trades, pst.resting_end, pst.new)


def test_mix_icebergs():
    """--icebergs: a share of the NEW GTC rows (disjoint from stops / GTD) gets display_qty in
    1..qty; the stops and GTD of the same mix are unchanged by it."""
    base, _ = G.generate_flow_stats(4000, 2, 100, 9, stops=0.2, gtd=0.1)
    cols, st = G.generate_flow_stats(4000, 2, 100, 9, stops=0.2, gtd=0.1, icebergs=0.3)
    n_new = int(_new_gtc(base).sum())
    ice = cols["display_qty"] != 0
    assert ice.sum() == st.icebergs == round(0.3 * n_new)
    assert ((cols["display_qty"][ice] >= 1) & (cols["display_qty"][ice] <= cols["qty"][ice])).all()
    assert (cols["order_type"][ice] == S.OT_LIMIT).all() and (cols["expire_ts_ns"][ice] == 0).all()
    assert _new_gtc(cols)[ice].all()
    for name, *_ in S.ORDER_COLUMNS:
        if name != "display_qty":
            np.testing.assert_array_equal(cols[name], base[name], err_msg=name)


def test_mix_is_deterministic_per_seed():
    a = G.generate_flow(3000, seed=4, stops=0.2, gtd=0.2)
    b = G.generate_flow(3000, seed=4, stops=0.2, gtd=0.2)
    c = G.generate_flow(3000, seed=5, stops=0.2, gtd=0.2)
    assert _digest(a) == _digest(b) != _digest(c)
    plain = G.generate_flow(3000, seed=4)
    d, _ = G.mix_order_types(plain, G.draw_flow_inputs(3000, seed=4)[0].mid, stops=0.2, gtd=0.2, seed=4)
    assert _digest(d) == _digest(a)
    assert _digest(plain) == _digest(G.generate_flow(3000, seed=4))   # the input is not modified


def test_mixed_flow_engine_equals_reference_with_triggers_and_expiries():
    from reference.matcher import ReferenceEngine
    from strategies import assert_same

    from hpte.engine.engine import Engine

    cols = G.generate_flow(3000, n_books=2, n_accounts=50, seed=21, stops=0.15, gtd=0.2, icebergs=0.2)
    assert (cols["display_qty"] != 0).sum() > 0
    res = Engine().submit(cols)
    ref = ReferenceEngine().submit(cols)
    assert_same(res.events, ref.events, S.EVENT_COLUMNS, "events")
    assert_same(res.fills, ref.fills, S.FILL_COLUMNS, "fills")
    assert_same(res.deltas, ref.deltas, S.DELTA_COLUMNS, "deltas")
    ev, reason = res.events["event"], res.events["reason"]
    assert (ev == S.EV_TRIGGERED).sum() > 0
    assert ((ev == S.EV_EXPIRED) & (reason == S.R_EXPIRE_TIME)).sum() > 0
    # no row is invalid: the only rejects are cancels of converted orders already gone
    rej = ev == S.EV_REJECTED
    assert set(reason[rej].tolist()) <= {S.R_UNKNOWN_ORDER}
    seq = res.events["seq"][rej].astype(np.int64)
    assert (cols["action"][seq] == S.ACT_CANCEL).all()


@pytest.mark.parametrize("kwargs,field", [
    ({"stops": -0.1}, "stops"), ({"stops": 1.5}, "stops"), ({"gtd": float("nan")}, "gtd"),
    ({"gtd": "0.1"}, "gtd"), ({"stops": True}, "stops"), ({"stops": 0.6, "gtd": 0.5}, "stops \\+ gtd"),
])
def test_mix_bad_fractions(kwargs, field):
    with pytest.raises(ValueError, match=field):
        G.generate_flow(10, **kwargs)


def test_cli_gen_mix(tmp_path):
    out = tmp_path / "mix.parquet"
    res = runner.invoke(app, ["gen", str(out), "--events", "3000", "--seed", "5", "--stops", "0.1", "--gtd", "0.2"])
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and "stops" in lines[0] and "GTD" in lines[0] and "plain simulation" in lines[0]
    got = io.read_orders(out)
    want = G.generate_flow(3000, seed=5, stops=0.1, gtd=0.2)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


@pytest.mark.parametrize("args,needle", [
    (["--stops", "1.5"], "--stops"), (["--gtd", "-0.5"], "--gtd"), (["--stops", "0.7", "--gtd", "0.7"], "--stops + --gtd"),
])
def test_cli_gen_mix_bad_fractions(tmp_path, args, needle):
    out = tmp_path / "x.parquet"
    res = runner.invoke(app, ["gen", str(out), "--events", "10", *args])
    assert res.exit_code != 0
    text = res.output.strip()
    assert len(text.splitlines()) == 1 and needle in text and "Traceback" not in text, text
    assert not out.exists()
