"""Iceberg orders (issue 11): hand-computed scenarios run on the plain-Python reference matcher
and the engine (1 and 2 threads), and a random-stream invariant test of the reference (the
differential streams with icebergs are in test_differential.py).

Every expected row below was worked out by hand from README "Iceberg orders", not by running
code. Rows are compared on the fields that carry the rule (ids, kinds, quantities, leaves).
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from hpte.engine import schema as S
from hpte.engine.engine import Engine
from reference.matcher import ReferenceEngine

B, SL = S.BUY, S.SELL
GTC, IOC, FOK, DAY = S.TIF_GTC, S.TIF_IOC, S.TIF_FOK, S.TIF_DAY
ACC, REJ, CXL, EXP, FIL, PAR, RPL = (S.EV_ACCEPTED, S.EV_REJECTED, S.EV_CANCELLED, S.EV_EXPIRED,
                                     S.EV_FILLED, S.EV_PARTIALLY_FILLED, S.EV_REPLACED)
R0, ST, BADD = S.R_NONE, S.R_SELF_TRADE, S.R_INVALID_DISPLAY_QTY


def row(oid, side, px, qty, disp=0, acct=1, tif=GTC, otype=S.OT_LIMIT, action=S.ACT_NEW, stop=0, po=0):
    return dict(order_id=oid, side=side, price_ticks=px, qty=qty, display_qty=disp, account=acct,
                tif=tif, order_type=otype, action=action, stop_price_ticks=stop, post_only=po)


def cancel(oid, acct=1):
    return row(oid, B, 0, 0, acct=acct, action=S.ACT_CANCEL)


def replace(oid, px, qty, acct=1, disp=0):
    return row(oid, B, px, qty, disp=disp, acct=acct, action=S.ACT_REPLACE)


def batch(rows, ts0=1000):
    """Rows -> order columns (every schema column, defaults filled) plus display_qty."""
    cols = {}
    for name, dt, _req, default in S.ORDER_COLUMNS:
        cols[name] = np.array([r.get(name, default) for r in rows], dtype=dt)
    cols["ts_ns"] = np.arange(ts0, ts0 + len(rows), dtype=np.int64)
    cols["display_qty"] = np.array([r.get("display_qty", 0) for r in rows], dtype=np.int64)
    return cols


IMPLS = {"reference": lambda **kw: ReferenceEngine(**kw), "engine": lambda **kw: Engine(**kw),
         "engine-2threads": lambda **kw: Engine(threads=2, **kw)}


@pytest.fixture(params=list(IMPLS))
def impl(request):
    return IMPLS[request.param]


class Run:
    """An engine (`impl`) fed row batches; the last result's rows in compact forms."""

    def __init__(self, impl, stp="none", algo="fifo"):
        self.eng = impl(stp=stp, algo=algo)
        self.ts = 1000

    def __call__(self, *rows):
        r = self.eng.submit(batch(list(rows), self.ts))
        self.ts += len(rows)
        f, e, d = r.fills, r.events, r.deltas
        self.fills = [(int(f["taker_order_id"][i]), int(f["maker_order_id"][i]), int(f["qty"][i]))
                      for i in range(len(f["qty"]))]
        self.events = [(int(e["order_id"][i]), int(e["event"][i]), int(e["reason"][i]), int(e["qty"][i]),
                        int(e["leaves_qty"][i])) for i in range(len(e["qty"]))]
        self.deltas = [(int(d["side"][i]), int(d["price_ticks"][i]), int(d["qty"][i]), int(d["orders"][i]))
                       for i in range(len(d["qty"]))]
        return self

    def l3(self):
        b = self.eng.book_l3()
        return [(int(b["side"][i]), int(b["price_ticks"][i]), int(b["order_id"][i]), int(b["qty"][i]))
                for i in range(len(b["qty"]))]


def test_schema_names_the_reason():
    assert S.REASON_NAMES[BADD] == "INVALID_DISPLAY_QTY"


def test_only_the_slice_shows_and_events_carry_total_leaves(impl):
    r = Run(impl)
    r(row(1, SL, 100, 10, disp=3))
    assert r.events == [(1, ACC, R0, 10, 10)]
    assert r.deltas == [(SL, 100, 3, 1)]
    assert r.l3() == [(SL, 100, 1, 3)]
    lv = r.eng.book_levels()
    assert list(lv["qty"]) == [3] and list(lv["orders"]) == [1]


def test_replenished_slice_joins_the_back_reserve_behind_displayed_orders_ahead(impl):
    r = Run(impl)
    r(row(1, SL, 100, 10, disp=3), row(2, SL, 100, 4, acct=3))
    assert r.deltas[-1] == (SL, 100, 7, 2)
    r(row(10, B, 100, 5, acct=2))
    # slice of 1 fills (3), a new slice of 3 joins behind order 2, which gets the next 2 lots
    assert r.fills == [(10, 1, 3), (10, 2, 2)]
    assert r.events == [(10, ACC, R0, 5, 5), (1, PAR, R0, 3, 7), (10, PAR, R0, 3, 2),
                        (2, PAR, R0, 2, 2), (10, FIL, R0, 2, 0)]
    assert r.deltas == [(SL, 100, 5, 2)]
    assert r.l3() == [(SL, 100, 2, 2), (SL, 100, 1, 3)]
    r(row(11, B, 100, 4, acct=2))
    assert r.fills == [(11, 2, 2), (11, 1, 2)]
    assert r.events[1:] == [(2, FIL, R0, 2, 0), (11, PAR, R0, 2, 2), (1, PAR, R0, 2, 5), (11, FIL, R0, 2, 0)]
    assert r.l3() == [(SL, 100, 1, 1)]


def test_a_sweep_through_several_slices(impl):
    r = Run(impl)
    r(row(1, SL, 100, 10, disp=3))
    r(row(10, B, 101, 12, acct=2))
    assert r.fills == [(10, 1, 3), (10, 1, 3), (10, 1, 3), (10, 1, 1)]
    assert [e for e in r.events if e[0] == 1] == [(1, PAR, R0, 3, 7), (1, PAR, R0, 3, 4), (1, PAR, R0, 3, 1),
                                                  (1, FIL, R0, 1, 0)]
    assert r.deltas == [(SL, 100, 0, 0), (B, 101, 2, 1)]     # one delta for the level, then the rest
    assert r.l3() == [(B, 101, 10, 2)]


def test_two_icebergs_alternate_slice_by_slice(impl):
    r = Run(impl)
    r(row(1, SL, 100, 6, disp=2), row(2, SL, 100, 4, disp=2, acct=3))
    r(row(10, B, 100, 9, acct=2))
    assert r.fills == [(10, 1, 2), (10, 2, 2), (10, 1, 2), (10, 2, 2), (10, 1, 1)]
    assert [e[4] for e in r.events if e[0] == 1] == [4, 2, 1]
    assert [e[1:] for e in r.events if e[0] == 2] == [(PAR, R0, 2, 2), (FIL, R0, 2, 0)]
    assert r.l3() == [(SL, 100, 1, 1)]


def test_incoming_iceberg_takes_with_its_whole_quantity_then_shows_a_slice(impl):
    r = Run(impl)
    r(row(1, SL, 100, 3, acct=3))
    r(row(10, B, 100, 10, disp=2, acct=2))
    assert r.fills == [(10, 1, 3)]
    assert r.events[-1] == (10, PAR, R0, 3, 7)
    assert r.deltas == [(SL, 100, 0, 0), (B, 100, 2, 1)]
    assert r.l3() == [(B, 100, 10, 2)]
    r(row(11, SL, 99, 5, acct=3))       # 2 from the slice, then 2 more from a new one, 1 more
    assert r.fills == [(11, 10, 2), (11, 10, 2), (11, 10, 1)]
    assert r.l3() == [(B, 100, 10, 1)]


def test_pro_rata_allocates_on_displayed_quantity_and_reallocates_after_replenishment(impl):
    r = Run(impl, algo="pro-rata")
    r(row(1, SL, 100, 20, disp=2), row(2, SL, 100, 8, acct=3))
    # displayed T = 10 (not 28): 5 * 2 // 10 = 1, 5 * 8 // 10 = 4
    r(row(10, B, 100, 5, acct=2))
    assert r.fills == [(10, 1, 1), (10, 2, 4)]
    # displayed T = 1 + 4 < 12: both fill; order 1 replenishes (2) and the level is allocated
    # again with 7: 2, 2, 2 (R >= T each time), then 1 * 2 // 2 = 1
    r(row(11, B, 100, 12, acct=2))
    assert r.fills == [(11, 1, 1), (11, 2, 4), (11, 1, 2), (11, 1, 2), (11, 1, 2), (11, 1, 1)]
    assert [e[4] for e in r.events if e[0] == 1] == [18, 16, 14, 12, 11]
    assert r.deltas == [(SL, 100, 1, 1)]
    assert r.l3() == [(SL, 100, 1, 1)]


def test_stp_cancel_oldest_cancels_the_whole_iceberg(impl):
    r = Run(impl, stp="cancel-oldest")
    r(row(1, SL, 100, 10, disp=3, acct=2), row(2, SL, 100, 5, acct=1))
    r(row(10, B, 100, 4, acct=2))
    assert r.events[:2] == [(10, ACC, R0, 4, 4), (1, CXL, ST, 10, 0)]
    assert r.fills == [(10, 2, 4)]
    assert r.l3() == [(SL, 100, 2, 1)]


def test_stp_decrement_takes_the_reserve_first(impl):
    r = Run(impl, stp="decrement")
    r(row(1, SL, 100, 10, disp=3, acct=2))
    r(row(10, B, 100, 4, acct=2))
    assert r.events == [(10, ACC, R0, 4, 4), (1, RPL, ST, 4, 6), (10, CXL, ST, 4, 0)]
    assert r.l3() == [(SL, 100, 1, 3)]          # the displayed slice and its place are unchanged
    r(row(11, B, 100, 5, acct=2))                # reserve 3 goes, then 2 of the slice
    assert r.events[1] == (1, RPL, ST, 5, 1)
    assert r.l3() == [(SL, 100, 1, 1)]


def test_fok_dry_run_counts_reserves(impl):
    r = Run(impl)
    r(row(1, SL, 100, 10, disp=2))
    r(row(10, B, 100, 11, tif=FOK, acct=2))
    assert r.events == [(10, ACC, R0, 11, 11), (10, EXP, S.R_FOK_NOT_FILLABLE, 11, 0)]
    r(row(11, B, 100, 7, tif=FOK, acct=2))
    assert r.fills == [(11, 1, 2), (11, 1, 2), (11, 1, 2), (11, 1, 1)]
    assert r.l3() == [(SL, 100, 1, 1)]


def test_cancel_and_expiry_report_total_leaves(impl):
    r = Run(impl)
    r(row(1, SL, 100, 10, disp=3), row(2, SL, 101, 9, disp=4, tif=DAY))
    r(cancel(1))
    assert r.events == [(1, CXL, R0, 10, 0)]
    assert r.deltas == [(SL, 100, 0, 0)]
    e = r.eng.end_session(5000).events
    assert [(int(e["order_id"][i]), int(e["qty"][i])) for i in range(len(e["qty"]))] == [(2, 9)]


def test_replace_keeps_display_size_and_qty_is_the_total(impl):
    r = Run(impl)
    r(row(1, SL, 100, 10, disp=3), row(2, SL, 100, 1, acct=3))
    r(replace(1, 100, 5))                       # in place: slice 3 stays, reserve 2
    assert r.events == [(1, RPL, R0, 5, 5)] and r.deltas == []
    assert r.l3() == [(SL, 100, 1, 3), (SL, 100, 2, 1)]
    r(replace(1, 100, 2))                       # in place below the slice: slice 2, no reserve
    assert r.deltas == [(SL, 100, 3, 2)]
    assert r.l3() == [(SL, 100, 1, 2), (SL, 100, 2, 1)]
    r(replace(1, 100, 8))                       # more: re-entered at the back, a slice of 3
    assert r.deltas == [(SL, 100, 1, 1), (SL, 100, 4, 2)]
    assert r.l3() == [(SL, 100, 2, 1), (SL, 100, 1, 3)]
    r(replace(1, 102, 8))
    assert r.l3() == [(SL, 100, 2, 1), (SL, 102, 1, 3)]
    r(row(10, B, 102, 8, acct=2))               # still an iceberg after the replace
    assert r.fills == [(10, 2, 1), (10, 1, 3), (10, 1, 3), (10, 1, 1)]
    assert r.l3() == [(SL, 102, 1, 1)]


@pytest.mark.parametrize("bad", [
    row(1, B, 100, 10, disp=-1),
    row(1, B, 100, 10, disp=11),
    row(1, B, 0, 10, disp=2, otype=S.OT_MARKET, tif=IOC),
    row(1, B, 100, 10, disp=2, tif=IOC),
    row(1, B, 100, 10, disp=2, tif=FOK),
    row(1, B, 0, 10, disp=2, otype=S.OT_STOP, stop=90),
    row(1, B, 100, 10, disp=2, otype=S.OT_STOP_LIMIT, stop=90),
])
def test_invalid_display_qty_is_rejected(bad, impl):
    r = Run(impl)
    r(bad)
    assert r.events == [(1, REJ, BADD, 10, 0)]
    assert r.l3() == [] and r.deltas == []


def test_replace_row_with_display_qty_is_rejected(impl):
    r = Run(impl)
    r(row(1, SL, 100, 10, disp=3))
    r(replace(1, 100, 5, disp=2))
    assert r.events == [(1, REJ, BADD, 5, 10)]
    assert r.l3() == [(SL, 100, 1, 3)]


def test_display_equal_to_qty_and_post_only_are_accepted(impl):
    r = Run(impl)
    r(row(1, SL, 100, 4, disp=4), row(2, SL, 101, 6, disp=2, po=1))
    assert [e[1] for e in r.events] == [ACC, ACC]
    assert r.l3() == [(SL, 100, 1, 4), (SL, 101, 2, 2)]


# ------------------------------------------------------------------ random streams (reference)
def _stream(draw):
    rows = []
    for i in range(draw(st.integers(5, 40))):
        k = draw(st.integers(0, 9))
        oid = draw(st.integers(1, 12))
        acct = draw(st.integers(1, 3))
        side = draw(st.sampled_from([B, SL]))
        px = draw(st.integers(98, 102))
        qty = draw(st.integers(1, 12))
        if k < 5:
            rows.append(row(oid, side, px, qty, disp=draw(st.integers(0, qty)), acct=acct,
                            tif=draw(st.sampled_from([GTC, GTC, DAY, IOC]))))
            if rows[-1]["tif"] == IOC:
                rows[-1]["display_qty"] = 0
        elif k < 6:
            rows.append(row(oid, side, px, qty, acct=acct, tif=draw(st.sampled_from([IOC, FOK, GTC]))))
        elif k < 7:                     # stops: a triggered stop takes through icebergs too
            lim = draw(st.booleans())
            rows.append(row(oid, side, px if lim else 0, qty, acct=acct, stop=draw(st.integers(98, 102)),
                            otype=S.OT_STOP_LIMIT if lim else S.OT_STOP))
        elif k < 8:
            rows.append(cancel(oid, acct=acct))
        else:
            rows.append(replace(oid, px, qty, acct=acct))
    return rows


@settings(max_examples=25, deadline=None)
@given(st.data(), st.sampled_from(["none", "cancel-newest", "cancel-oldest", "cancel-both", "decrement"]),
       st.sampled_from(["fifo", "pro-rata", "allocation", "split", "fifo-lmm"]))
def test_reference_iceberg_streams_conserve_quantity_and_never_cross(data, stp, algo):
    rows = _stream(data.draw)
    r = Run(IMPLS["reference"], stp=stp, algo=algo)
    r(*rows)
    e = r.eng
    last = {}                       # order id -> leaves of its last event (total leaves)
    for oid, ev, rsn, _q, leaves in r.events:
        if not (ev == REJ and rsn == S.R_DUPLICATE_ORDER_ID):   # a row, not the open order
            last[oid] = leaves
    for book in e.books.values():
        for o in book.orders.values():
            assert last[o.order_id] == o.total(), "events' leaves disagree with the order's total"
    for book in e.books.values():
        bid, ask = book.best(B), book.best(SL)
        assert bid is None or ask is None or bid < ask, "crossed book"
        for side in (B, SL):
            for p, q in book.levels[side].items():
                assert q, "empty level kept"
                for o in q:
                    assert o.leaves > 0 and o.reserve >= 0
                    assert o.display == 0 or o.leaves <= o.display      # a slice at most
                    assert o.reserve == 0 or o.display > 0              # only icebergs hide
    lv = e.book_levels()
    l3 = e.book_l3()
    for i in range(len(lv["qty"])):
        m = (l3["side"] == lv["side"][i]) & (l3["price_ticks"] == lv["price_ticks"][i])
        assert int(l3["qty"][m].sum()) == int(lv["qty"][i]) and int(m.sum()) == int(lv["orders"][i])


# ------------------------------------------------------------------ risk engines
def test_risk_engine_rejects_icebergs():
    from hpte.engine.risk.limits import RiskLimits
    eng = Engine(risk=RiskLimits.from_toml(""))
    res = eng.submit(batch([row(1, SL, 100, 10, disp=3), row(2, SL, 100, 10, disp=11)]))
    assert [(int(a), int(b)) for a, b in zip(res.events["event"], res.events["reason"])] == \
        [(REJ, S.R_ICEBERG_NOT_SUPPORTED), (REJ, BADD)]


def test_itch_out_refuses_icebergs(tmp_path):
    """ITCH out does not publish icebergs yet (events carry total leaves, not the slice)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from hpte.engine.io import InputError
    from hpte.engine.pipeline import match_file
    path = tmp_path / "orders.parquet"
    pq.write_table(pa.table(batch([row(1, SL, 100, 10), row(2, SL, 101, 10, disp=3)])), path)
    with pytest.raises(InputError, match="display_qty' row 1: ITCH out"):
        match_file(path, tmp_path / "fills.parquet", keep=True)
    match_file(path, tmp_path / "fills2.parquet")       # without ITCH it matches


# ------------------------------------------------------------------ lazily allocated arrays
def _with_icebergs(cols, lo):
    """Rows from `lo` on: every valid NEW LIMIT GTC/DAY row becomes an iceberg (display a third)."""
    cols = {k: v.copy() for k, v in cols.items()}
    ok = ((cols["action"] == S.ACT_NEW) & (cols["order_type"] == S.OT_LIMIT) & (cols["qty"] > 0)
          & ((cols["tif"] == GTC) | (cols["tif"] == DAY)) & (cols["side"] >= 0) & (cols["price_ticks"] > 0))
    ok[:lo] = False
    cols["display_qty"][ok] = np.maximum(cols["qty"][ok] // 3, 1)
    return cols, int(np.flatnonzero(ok)[0])


@pytest.mark.parametrize("threads", [1, 2])
def test_iceberg_arrays_are_empty_until_the_first_iceberg_then_sized_mid_batch(threads):
    """An engine that never saw an iceberg holds zero-length o_rsv / o_dsp (no memory per
    order); the first iceberg NEW row stops its book (ST_NEED_ICE), the host sizes both like
    the pool, the batch resumes; outputs, books and end of session equal the reference's."""
    from strategies import STP_MODES, assert_same, random_stream, run_batches, split_batches
    rng = np.random.default_rng(11)
    plain = random_stream(rng, 600)
    cols, first = _with_icebergs(plain, 300)
    for stp in ("none", STP_MODES[-1]):
        eng, ref = Engine(stp=stp, threads=threads), ReferenceEngine(stp=stp)
        parts = split_batches(cols, [250, 350])       # the second batch meets the first iceberg
        out = run_batches(eng, parts[:1])
        S_ = eng.store.S
        assert S_.o_rsv.shape == (0,) and S_.o_dsp.shape == (0,) and S_.o_id.shape[0] > 0
        assert "icebergs" not in eng.grow_counts
        out2 = run_batches(eng, parts[1:])
        S_ = eng.store.S
        assert S_.o_rsv.shape == S_.o_id.shape == S_.o_dsp.shape
        assert eng.grow_counts["icebergs"] >= 1 and first > 250
        want = run_batches(ref, parts)
        for k, cols_k in (("fills", S.FILL_COLUMNS), ("events", S.EVENT_COLUMNS), ("deltas", S.DELTA_COLUMNS)):
            got = {n: np.concatenate([out[k][n], out2[k][n]]) for n, _ in cols_k}
            assert_same(got, want[k], cols_k, f"{stp} {k}")
        assert_same(eng.book_l3(), ref.book_l3(), S.L3_COLUMNS, f"{stp} l3")
        assert_same(eng.end_session(10**12).events, ref.end_session(10**12).events, S.EVENT_COLUMNS,
                    f"{stp} end_session")
    # without icebergs the arrays stay empty through the whole stream (pool growth included)
    eng = Engine(threads=threads)
    run_batches(eng, split_batches(plain, 97))
    assert eng.store.S.o_rsv.shape == (0,) and eng.store.S.o_dsp.shape == (0,)


def test_first_iceberg_through_submit_order_allocates_the_arrays():
    eng, ref = Engine(), ReferenceEngine()
    rows = [row(1, SL, 100, 5), row(2, SL, 100, 9, disp=4), row(3, B, 100, 12)]
    for i, r in enumerate(rows):
        if i == 1:
            assert eng.store.S.o_rsv.shape == (0,)
        got = eng.submit_order(1000 + i, r["order_id"], r["side"], r["price_ticks"], r["qty"],
                               display_qty=r["display_qty"], account=r["account"])
        want = ref.submit(batch([r], 1000 + i))
        assert_same_events(got.events, want.events)
        assert_same_events(got.fills, want.fills, S.FILL_COLUMNS)
    assert eng.store.S.o_rsv.shape == eng.store.S.o_id.shape
    assert eng.book_l3()["qty"].tolist() == ref.book_l3()["qty"].tolist() == [1]


def assert_same_events(a, b, columns=S.EVENT_COLUMNS):
    from strategies import assert_same
    assert_same(a, b, columns)
