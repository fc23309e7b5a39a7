"""Order types beyond plain limit/market (README "Order types"): good-till-date orders.

Hand-computed scenarios (expected rows worked out by hand from the README's rules, not by running
code), each checked on the engine and the plain-Python reference; then hypothesis differential
tests with GTD orders mixed into the streams, in batches of 1, 7 and whole, on 1 and 2 threads.
"""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from reference.matcher import ReferenceEngine
from strategies import assert_same, order_streams, rows_to_columns, run_batches, split_batches

from hpte.engine import schema as S
from hpte.engine.engine import Engine

B, SL = S.BUY, S.SELL


def row(ts, oid, side, px, qty, acct=1, sym=0, exp=0, tif=S.TIF_GTC, action=S.ACT_NEW, otype=S.OT_LIMIT):
    return dict(ts_ns=ts, order_id=oid, side=side, price_ticks=px, qty=qty, account=acct, symbol=sym,
                expire_ts_ns=exp, tif=tif, action=action, order_type=otype)


def both(rows, end_ts=None):
    """Events and deltas of `rows` (one batch) on the engine and the reference: they must agree
    (and so must the books after); returns the engine's (events, deltas, end_session events)."""
    cols = rows_to_columns(rows)
    outs = []
    for eng in (Engine(), ReferenceEngine()):
        res = eng.submit(cols)
        end = eng.end_session(end_ts) if end_ts is not None else None
        outs.append((res, eng.book_l3(), end))
    (res, l3, end), (rres, rl3, rend) = outs
    assert_same(res.events, rres.events, S.EVENT_COLUMNS, "events")
    assert_same(res.deltas, rres.deltas, S.DELTA_COLUMNS, "deltas")
    assert_same(res.fills, rres.fills, S.FILL_COLUMNS, "fills")
    assert_same(l3, rl3, S.L3_COLUMNS, "l3")
    if end is not None:
        assert_same(end.events, rend.events, S.EVENT_COLUMNS, "end_session events")
    return res.events, res.deltas, end


def evs(events):
    """(order id, event, reason, qty, leaves) of every event row."""
    return list(zip(events["order_id"].tolist(), events["event"].tolist(), events["reason"].tolist(),
                    events["qty"].tolist(), events["leaves_qty"].tolist()))


def test_gtd_expires_on_the_books_first_row_at_or_after_expiry():
    # order 1 (bid 99 x 5) expires at 150; order 2 (bid 99 x 3) never; a row of ANOTHER book at
    # 160 does not expire it; the book's own row at 170 (a new bid 98) expires it first
    ev, de, _ = both([row(100, 1, B, 99, 5, exp=150), row(101, 2, B, 99, 3),
                      row(160, 5, B, 50, 1, sym=7),
                      row(170, 3, B, 98, 2)])
    assert evs(ev) == [(1, S.EV_ACCEPTED, 0, 5, 5), (2, S.EV_ACCEPTED, 0, 3, 3), (5, S.EV_ACCEPTED, 0, 1, 1),
                       (1, S.EV_EXPIRED, S.R_EXPIRE_TIME, 5, 0), (3, S.EV_ACCEPTED, 0, 2, 2)]
    # the expiry's delta: level 99 down to 3 lots in 1 order, at the expiring row's ts and seq
    d = [(int(de["seq"][k]), int(de["ts_ns"][k]), int(de["price_ticks"][k]), int(de["qty"][k]), int(de["orders"][k]))
         for k in range(de["seq"].shape[0]) if de["symbol"][k] == 0]
    assert d == [(0, 100, 99, 5, 1), (1, 101, 99, 8, 2), (3, 170, 99, 3, 1), (3, 170, 98, 2, 1)]


def test_gtd_expiry_exactly_at_row_ts_and_order_of_several():
    # three GTD asks; a row at ts 200 expires 2 (exp 180) and 4 and 3 (both exp 200; by order id:
    # 3 then 4), not 1 (exp 201); then the taker buys 101 x 10 against what is left: order 1 only
    ev, _, _ = both([row(100, 4, SL, 101, 1, exp=200), row(101, 3, SL, 101, 2, exp=200),
                     row(102, 2, SL, 102, 3, exp=180), row(103, 1, SL, 101, 4, exp=201),
                     row(200, 9, B, 102, 10, tif=S.TIF_IOC)])
    got = evs(ev)[4:]
    assert got[:3] == [(2, S.EV_EXPIRED, S.R_EXPIRE_TIME, 3, 0), (3, S.EV_EXPIRED, S.R_EXPIRE_TIME, 2, 0),
                       (4, S.EV_EXPIRED, S.R_EXPIRE_TIME, 1, 0)]
    assert got[3:] == [(9, S.EV_ACCEPTED, 0, 10, 10), (1, S.EV_FILLED, 0, 4, 0),
                       (9, S.EV_PARTIALLY_FILLED, 0, 4, 6), (9, S.EV_EXPIRED, 0, 6, 0)]


def test_gtd_rejects_with_named_reasons():
    ev, _, _ = both([row(100, 1, B, 99, 5, exp=100),                     # expiry == ts: in the past
                     row(100, 2, B, 99, 5, exp=50),                      # before ts
                     row(100, 3, B, 99, 5, exp=-1),                      # negative
                     row(100, 4, B, 99, 5, exp=500, tif=S.TIF_IOC),      # cannot rest
                     row(100, 5, B, 99, 5, exp=500, otype=S.OT_MARKET),
                     row(100, 6, B, 99, 5, exp=500, tif=S.TIF_DAY)])     # fine
    assert [(o, e, r) for o, e, r, _q, _l in evs(ev)] == [
        (1, S.EV_REJECTED, S.R_EXPIRE_IN_PAST), (2, S.EV_REJECTED, S.R_EXPIRE_IN_PAST),
        (3, S.EV_REJECTED, S.R_INVALID_EXPIRE), (4, S.EV_REJECTED, S.R_INVALID_EXPIRE),
        (5, S.EV_REJECTED, S.R_INVALID_EXPIRE), (6, S.EV_ACCEPTED, 0)]
    assert S.REASON_NAMES[S.R_EXPIRE_IN_PAST] == "EXPIRE_IN_PAST"


def test_gtd_filled_cancelled_replaced_then_expiry():
    # 1 is filled before its expiry (nothing expires later), 2 is cancelled, 3 is replaced
    # (re-entered at 98: it keeps its expiry 300), so only 3 expires, at the row at 300
    ev, _, _ = both([row(100, 1, SL, 101, 2, exp=300), row(101, 2, B, 99, 2, exp=300),
                     row(102, 3, B, 97, 2, exp=300),
                     row(103, 9, B, 101, 2, acct=2, tif=S.TIF_IOC),
                     row(104, 2, B, 99, 2, action=S.ACT_CANCEL),
                     row(105, 3, B, 98, 4, action=S.ACT_REPLACE),
                     row(300, 10, B, 90, 1)])
    exp = [(o, r, q) for o, e, r, q, _l in evs(ev) if e == S.EV_EXPIRED and r == S.R_EXPIRE_TIME]
    assert exp == [(3, S.R_EXPIRE_TIME, 4)]


def test_gtd_at_end_session():
    # end_session(ts) expires DAY orders and GTD orders due by ts (reason END_OF_SESSION); a GTD
    # order expiring after ts stays
    _, _, end = both([row(100, 1, B, 99, 5, exp=1000), row(101, 2, B, 98, 5, exp=5000),
                      row(102, 3, B, 97, 5, tif=S.TIF_DAY)], end_ts=2000)
    assert [(o, e, r) for o, e, r, _q, _l in evs(end.events)] == [
        (1, S.EV_EXPIRED, S.R_END_OF_SESSION), (3, S.EV_EXPIRED, S.R_END_OF_SESSION)]


def test_gtd_submit_order_path():
    eng = Engine()
    eng.submit_order(100, 1, B, 99, 5, expire_ts_ns=150)
    r = eng.submit_order(150, 2, B, 98, 1)
    assert evs(r.events) == [(1, S.EV_EXPIRED, S.R_EXPIRE_TIME, 5, 0), (2, S.EV_ACCEPTED, 0, 1, 1)]
    r = eng.submit_order(160, 3, B, 98, 1, expire_ts_ns=160)
    assert evs(r.events) == [(3, S.EV_REJECTED, S.R_EXPIRE_IN_PAST, 1, 0)]


def test_gtd_many_due_at_once_grows_outputs():
    # 300 GTD bids, then (a batch of its own) one row at their expiry: the sweep needs more
    # output room than that one row reserves
    first = rows_to_columns([row(100 + k, k + 1, B, 50 + k % 40, 1, exp=1000) for k in range(300)])
    last = rows_to_columns([row(1000, 999, SL, 200, 1)])
    outs = []
    for eng in (Engine(), ReferenceEngine()):
        eng.submit(first)
        outs.append(eng.submit(last))
    assert_same(outs[0].events, outs[1].events, S.EVENT_COLUMNS, "events")
    assert_same(outs[0].deltas, outs[1].deltas, S.DELTA_COLUMNS, "deltas")
    assert [o for o, _e, r, _q, _l in evs(outs[0].events) if r == S.R_EXPIRE_TIME] == list(range(1, 301))


def _outputs(eng, cols, size):
    batches = [cols] if size is None else split_batches(cols, size)
    out = run_batches(eng, batches)
    out["l3"] = eng.book_l3()
    out["end"] = eng.end_session(10**9)
    return out


@settings(max_examples=40, deadline=None)
@given(stp=st.sampled_from(list(S.STP_NAMES)),
       cols=order_streams(max_rows=60, n_symbols=3, n_accounts=3, n_prices=4, gtd=True))
def test_gtd_matches_reference(stp, cols):
    ref = _outputs(ReferenceEngine(stp=stp), cols, None)
    for size in (1, 7, None):
        for th in (1, 2):
            got = _outputs(Engine(stp=stp, threads=th), cols, size)
            tag = f"stp={stp} batch={size} threads={th}"
            for key, columns in (("fills", S.FILL_COLUMNS), ("events", S.EVENT_COLUMNS),
                                 ("deltas", S.DELTA_COLUMNS), ("l3", S.L3_COLUMNS)):
                assert_same(got[key], ref[key], columns, f"{tag}: {key}")
            assert_same(got["end"].events, ref["end"].events, S.EVENT_COLUMNS, f"{tag}: end_session events")
            assert_same(got["end"].deltas, ref["end"].deltas, S.DELTA_COLUMNS, f"{tag}: end_session deltas")


def test_gtd_expiry_releases_risk_open_orders():
    """With risk limits, an expired GTD order no longer counts as open (risk_release_book): the
    account's open orders and open notional go back to 0, and the outputs are the plain
    engine's (no breaker configured)."""
    from hpte.engine.risk.limits import RiskLimits
    lim = RiskLimits.from_toml("[defaults]\nmax_order_qty = 100\nmax_open_orders = 5\n")
    cols = rows_to_columns([row(100, 1, B, 99, 5, exp=150), row(101, 2, SL, 120, 3, exp=400),
                            row(150, 3, SL, 130, 1, acct=2)])
    risk_eng, plain = Engine(risk=lim), Engine()
    a, b = risk_eng.submit(cols), plain.submit(cols)
    assert_same(a.events, b.events, S.EVENT_COLUMNS, "events")
    assert_same(a.deltas, b.deltas, S.DELTA_COLUMNS, "deltas")
    acc = risk_eng.risk.accounts()
    by = dict(zip(acc["account"].tolist(), zip(acc["open_orders"].tolist(), acc["open_notional"].tolist())))
    assert by[1] == (1, 3 * 120) and by[2] == (1, 130)


def test_gtd_sweep_then_row_that_must_grow_on_two_threads():
    """A sweep written before the row stops for a ladder (a price far off) stays that row's
    output on the retry (parallel path: per-row output records)."""
    rows = [row(100 + k, k + 1, B, 100 + k % 5, 1, sym=k % 2, exp=500) for k in range(20)]
    rows += [row(500, 90, SL, 100_000, 1, sym=0), row(500, 91, SL, 100_000, 1, sym=1)]
    cols = rows_to_columns(rows)
    ref = ReferenceEngine().submit(cols)
    got = Engine(threads=2).submit(cols)
    assert_same(got.events, ref.events, S.EVENT_COLUMNS, "events")
    assert_same(got.deltas, ref.deltas, S.DELTA_COLUMNS, "deltas")
