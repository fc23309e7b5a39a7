"""Order types beyond plain limit/market (README "Order types"): good-till-date orders, stop and
stop-limit orders.

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


def row(ts, oid, side, px, qty, acct=1, sym=0, exp=0, tif=S.TIF_GTC, action=S.ACT_NEW, otype=S.OT_LIMIT,
        stop=0, post=0):
    return dict(ts_ns=ts, order_id=oid, side=side, price_ticks=px, qty=qty, account=acct, symbol=sym,
                expire_ts_ns=exp, tif=tif, action=action, order_type=otype, stop_price_ticks=stop,
                post_only=post)


def both(rows, end_ts=None, algo="fifo", stp="none"):
    """Events and deltas of `rows` (one batch) on the engine and the reference: they must agree
    (and so must the books after); returns the engine's (events, deltas, end_session events)."""
    cols = rows_to_columns(rows)
    outs = []
    for eng in (Engine(algo=algo, stp=stp), ReferenceEngine(algo=algo, stp=stp)):
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


# ---------------------------------------------------------------------------------------------
# Stop and stop-limit orders
# ---------------------------------------------------------------------------------------------
TR, AC, FI, PF, EX, CA, RP, RJ = (S.EV_TRIGGERED, S.EV_ACCEPTED, S.EV_FILLED, S.EV_PARTIALLY_FILLED, S.EV_EXPIRED,
                                  S.EV_CANCELLED, S.EV_REPLACED, S.EV_REJECTED)


def evp(events):
    """(order id, event, reason, price, qty, leaves) of every event row."""
    return list(zip(events["order_id"].tolist(), events["event"].tolist(), events["reason"].tolist(),
                    events["price_ticks"].tolist(), events["qty"].tolist(), events["leaves_qty"].tolist()))


def test_buy_stop_triggers_on_last_trade_and_sweeps():
    # asks 101 x 2 (1), 102 x 3 (2); buy stop 10 (stop 101, 4 lots) waits unseen; an IOC buy of 1
    # at 101 trades: last trade 101 >= 101 triggers 10, a MARKET buy of 4: 1 @ 101, 3 @ 102
    ev, de, _ = both([row(1, 1, SL, 101, 2, acct=2), row(2, 2, SL, 102, 3, acct=2),
                      row(3, 10, B, 0, 4, otype=S.OT_STOP, stop=101),
                      row(4, 11, B, 101, 1, acct=3, tif=S.TIF_IOC)])
    assert evp(ev)[2:] == [
        (10, AC, 0, 0, 4, 4),
        (11, AC, 0, 101, 1, 1), (1, PF, 0, 101, 1, 1), (11, FI, 0, 101, 1, 0),
        (10, TR, 0, 101, 4, 4), (1, FI, 0, 101, 1, 0), (10, PF, 0, 101, 1, 3),
        (2, FI, 0, 102, 3, 0), (10, FI, 0, 102, 3, 0)]
    # no delta at the stop's acceptance (seq 2); the trigger's deltas carry the triggering row's seq
    assert [(int(a), int(p), int(q)) for a, p, q in zip(de["seq"], de["price_ticks"], de["qty"])] == [
        (0, 101, 2), (1, 102, 3), (3, 101, 1), (3, 101, 0), (3, 102, 0)]


def test_sell_stop_cascade_in_one_row():
    # bids 99 x 1 (1), 98 x 1 (2), 97 x 5 (3); sell stops A (21: stop 99, 2 lots) and B (22: stop
    # 98, 1 lot). A sell IOC trades 99: A triggers (99 <= 99) and sells 98 x 1, 97 x 1: last 97
    # triggers B (97 <= 98), which sells 97 x 1; all in the IOC's row
    ev, de, _ = both([row(1, 1, B, 99, 1, acct=2), row(2, 2, B, 98, 1, acct=2), row(3, 3, B, 97, 5, acct=2),
                      row(4, 21, SL, 0, 2, otype=S.OT_STOP, stop=99),
                      row(5, 22, SL, 0, 1, otype=S.OT_STOP, stop=98),
                      row(6, 30, SL, 99, 1, acct=3, tif=S.TIF_IOC)])
    assert evp(ev)[5:] == [
        (30, AC, 0, 99, 1, 1), (1, FI, 0, 99, 1, 0), (30, FI, 0, 99, 1, 0),
        (21, TR, 0, 99, 2, 2), (2, FI, 0, 98, 1, 0), (21, PF, 0, 98, 1, 1), (3, PF, 0, 97, 1, 4),
        (21, FI, 0, 97, 1, 0),
        (22, TR, 0, 98, 1, 1), (3, PF, 0, 97, 1, 3), (22, FI, 0, 97, 1, 0)]
    assert set(de["seq"][3:].tolist()) == {5}


def test_stop_limit_rests_after_trigger_and_market_stop_remainder_expires():
    # ask 101 x 2; buy stop-limit 10 (stop 101, limit 101, 5 lots) and buy stop 11 (stop 101, 9
    # lots; accepted after 10); a buy of 1 at 101 triggers both: 10 first (acceptance order) takes
    # the last lot and rests 4 at 101; 11 finds no ask left: its 9 lots expire
    ev, de, _ = both([row(1, 1, SL, 101, 2, acct=2),
                      row(2, 10, B, 101, 5, otype=S.OT_STOP_LIMIT, stop=101),
                      row(3, 11, B, 0, 9, otype=S.OT_STOP, stop=101),
                      row(4, 12, B, 101, 1, acct=3)])
    assert evp(ev)[3:] == [
        (12, AC, 0, 101, 1, 1), (1, PF, 0, 101, 1, 1), (12, FI, 0, 101, 1, 0),
        (10, TR, 0, 101, 5, 5), (1, FI, 0, 101, 1, 0), (10, PF, 0, 101, 1, 4),
        (11, TR, 0, 101, 9, 9), (11, EX, 0, 0, 9, 0)]
    assert [(int(s_), int(p), int(q), int(n)) for s_, p, q, n in zip(de["side"], de["price_ticks"], de["qty"],
                                                                    de["orders"])][-1] == (B, 101, 4, 1)


def test_stops_trigger_in_acceptance_order_not_by_stop_price():
    # buy stops X (stop 102, accepted first) and Y (stop 101); a trade at 102 reaches both: X first
    ev, _, _ = both([row(1, 1, SL, 102, 1, acct=2), row(2, 2, SL, 105, 10, acct=2),
                     row(3, 40, B, 0, 1, otype=S.OT_STOP, stop=102),
                     row(4, 41, B, 0, 1, otype=S.OT_STOP, stop=101),
                     row(5, 42, B, 102, 1, acct=3)])
    assert [o for o, e, *_ in evp(ev) if e == TR] == [40, 41]


def test_stop_already_reached_triggers_in_its_own_row_and_none_before_a_trade():
    # no trade yet: a buy stop at 1 waits; after a trade at 100 a buy stop at 99 triggers at once
    ev, _, _ = both([row(1, 50, B, 0, 1, otype=S.OT_STOP, stop=1),
                     row(2, 1, SL, 100, 5, acct=2), row(3, 2, B, 100, 1, acct=3),
                     row(4, 51, B, 0, 1, otype=S.OT_STOP, stop=99)])
    got = evp(ev)
    # row 2's trade at 100 triggers 50 (100 >= 1) in row 2; 51 in its own row 3
    assert [(o, e) for o, e, *_ in got] == [(50, AC), (1, AC), (2, AC), (1, PF), (2, FI), (50, TR), (1, PF), (50, FI),
                                          (51, AC), (51, TR), (1, PF), (51, FI)]
    assert ev["seq"][got.index((51, TR, 0, 99, 1, 1))] == 3


def test_stop_rejects_with_named_reasons():
    ev, _, _ = both([row(1, 1, B, 0, 1, otype=S.OT_STOP, stop=100, tif=S.TIF_IOC),
                     row(1, 2, B, 0, 1, otype=S.OT_STOP, stop=100, tif=S.TIF_FOK),
                     row(1, 3, B, 0, 1, otype=S.OT_STOP, stop=0),
                     row(1, 4, B, 0, 1, otype=S.OT_STOP, stop=-5),
                     row(1, 5, B, 100, 1, stop=100),                                 # on a LIMIT
                     row(1, 6, B, 0, 1, otype=S.OT_MARKET, stop=100),
                     row(1, 7, B, 0, 1, otype=S.OT_STOP_LIMIT, stop=100),            # no limit price
                     row(1, 8, B, 100, 1, otype=S.OT_STOP_LIMIT, stop=100, exp=50),  # no GTD stops
                     row(1, 9, B, 100, 1, otype=S.OT_STOP_LIMIT, stop=100, post=1),
                     row(1, 10, B, 100, 1, otype=4),
                     row(1, 11, B, 100, 1, otype=S.OT_STOP_LIMIT, stop=100, tif=S.TIF_DAY)])   # fine
    assert [(o, e, S.REASON_NAMES[r]) for o, e, r, *_ in evp(ev)] == [
        (1, RJ, "INVALID_STOP_TIF"), (2, RJ, "INVALID_STOP_TIF"), (3, RJ, "INVALID_STOP_PRICE"),
        (4, RJ, "INVALID_STOP_PRICE"), (5, RJ, "UNEXPECTED_STOP_PRICE"), (6, RJ, "UNEXPECTED_STOP_PRICE"),
        (7, RJ, "INVALID_PRICE"), (8, RJ, "INVALID_EXPIRE"), (9, RJ, "INVALID_POST_ONLY"),
        (10, RJ, "INVALID_ORDER_TYPE"), (11, AC, "")]
    assert S.EVENT_NAMES[S.EV_TRIGGERED] == "TRIGGERED"


def test_stop_cancel_replace_and_end_session():
    # 60 (buy stop 103) is cancelled: no delta; 61 (sell stop-limit 95 @ 94) is replaced to stop
    # 99 and limit 98 (to the back of the stop list), then triggered by a trade at 99 and rests
    # its remainder; 62 (DAY buy stop) expires at the end of the session, 63 (GTC) stays;
    # a replace of a resting order with a stop price is refused
    ev, de, end = both([row(1, 1, B, 99, 2, acct=2), row(2, 60, B, 0, 1, otype=S.OT_STOP, stop=103),
                        row(3, 61, SL, 94, 5, otype=S.OT_STOP_LIMIT, stop=95),
                        row(4, 62, B, 0, 1, otype=S.OT_STOP, stop=200, tif=S.TIF_DAY),
                        row(5, 63, B, 0, 1, otype=S.OT_STOP, stop=201),
                        row(6, 60, B, 0, 1, action=S.ACT_CANCEL),
                        row(7, 61, SL, 98, 5, action=S.ACT_REPLACE, stop=99),
                        row(8, 1, B, 99, 2, acct=2, action=S.ACT_REPLACE, stop=5),
                        row(9, 70, SL, 99, 1, acct=3)], end_ts=100)
    got = evp(ev)
    assert got[5:] == [(60, CA, 0, 0, 1, 0), (61, RP, 0, 98, 5, 5), (1, RJ, S.R_UNEXPECTED_STOP_PRICE, 99, 2, 2),
                       (70, AC, 0, 99, 1, 1), (1, PF, 0, 99, 1, 1), (70, FI, 0, 99, 1, 0),
                       (61, TR, 0, 99, 5, 5), (1, FI, 0, 99, 1, 0), (61, PF, 0, 99, 1, 4)]
    assert de["seq"].tolist() == [0, 8, 8, 8]     # bid 99; the fill, the stop's fill, its rest at 98
    assert [(o, e, S.REASON_NAMES[r]) for o, e, r, *_ in evp(end.events)] == [(62, EX, "END_OF_SESSION")]


def test_stop_with_pro_rata_and_stp():
    # a triggered stop allocates by the book's algorithm and meets self-trade prevention like any
    # taker: pro-rata book, asks 101: 4 lots (acct 2), 12 lots (acct 5), 2 lots (acct 1, the
    # stop's own); stop 80 (acct 1, 8 lots) triggered by a 1-lot trade
    for algo in ("pro-rata", "fifo"):
        for stp in ("none", "cancel-oldest", "decrement"):
            both([row(1, 1, SL, 101, 4, acct=2), row(2, 2, SL, 101, 12, acct=5), row(3, 3, SL, 101, 2, acct=1),
                  row(4, 80, B, 0, 8, otype=S.OT_STOP, stop=101, acct=1),
                  row(5, 81, B, 101, 1, acct=4)], algo=algo, stp=stp)


def test_waiting_stop_is_not_expired_by_a_gtd_sweep():
    # a waiting stop keeps its stop price where a book order keeps its expiry (o_exp): the GTD
    # sweep at ts 300 (order 1 due at 200) must leave stop 20 (stop price 150 < 300) waiting, and
    # once triggered and resting it is not good-till-date
    ev, _, end = both([row(100, 1, B, 90, 1, exp=200), row(101, 20, B, 160, 2, otype=S.OT_STOP_LIMIT, stop=150),
                       row(300, 2, SL, 200, 1, acct=2),
                       row(400, 3, SL, 150, 1, acct=2), row(401, 4, B, 150, 1, acct=3),
                       row(10**6, 5, B, 10, 1, acct=3)], end_ts=10**7)
    assert [(o, e, r) for o, e, r, *_ in evp(ev) if e in (EX, TR)] == [(1, EX, S.R_EXPIRE_TIME), (20, TR, 0)]
    assert [o for o, *_ in evp(end.events)] == []


def test_stop_not_supported_with_risk():
    from hpte.engine.risk.limits import RiskLimits
    eng = Engine(risk=RiskLimits.from_toml("[defaults]\nmax_order_qty = 100\n"))
    res = eng.submit(rows_to_columns([row(1, 1, B, 0, 1, otype=S.OT_STOP, stop=100)]))
    assert evs(res.events) == [(1, RJ, S.R_STOP_NOT_SUPPORTED, 1, 0)]


def test_stop_submit_order_path_and_growth():
    # the one-row path (stop_price_ticks argument), and a book whose many stops all trigger in
    # one row: the outputs grow for the cascade (stop_room)
    eng, ref = Engine(), ReferenceEngine()
    rows = [row(1 + k, 100 + k, SL, 101, 1, acct=2) for k in range(40)]
    rows += [row(50 + k, 200 + k, B, 0, 1, otype=S.OT_STOP, stop=101) for k in range(30)]
    rows += [row(90, 300, B, 101, 1, acct=3)]
    outs = []
    for e in (eng, ref):
        e.submit(rows_to_columns(rows[:-1]))
    r = eng.submit_order(90, 300, B, 101, 1, account=3)
    rr = ref.submit(rows_to_columns(rows[-1:]))
    assert_same(r.events, rr.events, S.EVENT_COLUMNS, "events")
    assert_same(r.fills, rr.fills, S.FILL_COLUMNS, "fills")
    assert len([e for e in r.events["event"].tolist() if e == TR]) == 30
    r = eng.submit_order(91, 400, SL, 0, 1, order_type=S.OT_STOP, stop_price_ticks=101)
    assert [(o, e) for o, e, *_ in evp(r.events)] == [(400, AC), (400, TR), (400, EX)]


@settings(max_examples=30, deadline=None)
@given(stp=st.sampled_from(list(S.STP_NAMES)), algo=st.sampled_from(["fifo", "pro-rata", "allocation"]),
       cols=st.one_of(order_streams(max_rows=60, n_symbols=2, n_accounts=3, n_prices=4, stops=True),
                      order_streams(max_rows=60, n_symbols=2, n_accounts=3, n_prices=4, stops=True, gtd=True),
                      order_streams(max_rows=60, n_symbols=2, n_accounts=3, n_prices=4, stops=True, gtd=True,
                                    icebergs=True)))
def test_stops_match_reference(stp, algo, cols):
    """Stops, good-till-date orders and icebergs against the reference: every STP mode, three
    algorithms, batch sizes 1, 7 and whole, 1 and 2 threads."""
    ref = _outputs(ReferenceEngine(stp=stp, algo=algo), cols, None)
    for size in (1, 7, None):
        for th in (1, 2):
            got = _outputs(Engine(stp=stp, algo=algo, threads=th), cols, size)
            tag = f"stp={stp} algo={algo} batch={size} threads={th}"
            for key, columns in (("fills", S.FILL_COLUMNS), ("events", S.EVENT_COLUMNS),
                                 ("deltas", S.DELTA_COLUMNS), ("l3", S.L3_COLUMNS)):
                assert_same(got[key], ref[key], columns, f"{tag}: {key}")
            assert_same(got["end"].events, ref["end"].events, S.EVENT_COLUMNS, f"{tag}: end_session events")


def test_itch_out_refuses_stop_orders(tmp_path):
    """ITCH out does not publish stops yet: a clear error, not a book with phantom orders."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import pytest
    from hpte.engine.io import InputError
    from hpte.engine.md.itch import ItchError
    from hpte.engine.md.itch_out import events_to_itch
    from hpte.engine.pipeline import match_file
    rows = [row(1, 1, SL, 101, 2, acct=2), row(2, 10, B, 0, 1, otype=S.OT_STOP, stop=101),
            row(3, 11, B, 101, 1, acct=3)]
    res = ReferenceEngine().submit(rows_to_columns(rows))
    with pytest.raises(ItchError, match="STOP"):
        events_to_itch(res.events)
    path = tmp_path / "orders.parquet"
    pq.write_table(pa.table(rows_to_columns(rows)), path)
    with pytest.raises(InputError, match="row 1: ITCH out"):
        match_file(path, tmp_path / "fills.parquet", keep=True)
