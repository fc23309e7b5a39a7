"""Hand-computed scenarios of the README's "Matching semantics", run on every impl in IMPLS.

Every expected fill, event, delta and book row below was worked out by hand from the README,
not by running code. Conventions of these tests: the row with stream position `seq` gets
ts_ns = 1000 + seq (the Harness does it), so the expectation helpers derive ts from seq;
accounts 1 and 3 are makers, 2 a taker, unless a test is about self-trades.
"""
from __future__ import annotations

import pytest
from strategies import IMPLS, as_rows, assert_columns, concat, rows_to_columns, split_batches

from hpte.engine import schema as S

B, SL = S.BUY, S.SELL
NEW, CXL_, RPL_ = S.ACT_NEW, S.ACT_CANCEL, S.ACT_REPLACE
GTC, IOC, FOK, DAY = S.TIF_GTC, S.TIF_IOC, S.TIF_FOK, S.TIF_DAY
LMT, MKT = S.OT_LIMIT, S.OT_MARKET
ACC, REJ, CXL, EXP, FIL, PAR, RPL = (S.EV_ACCEPTED, S.EV_REJECTED, S.EV_CANCELLED, S.EV_EXPIRED,
                                     S.EV_FILLED, S.EV_PARTIALLY_FILLED, S.EV_REPLACED)
R0, ST, ES = S.R_NONE, S.R_SELF_TRADE, S.R_END_OF_SESSION
TS0 = 1000


@pytest.fixture(params=list(IMPLS))
def impl(request):
    """An engine factory: callable(stp="none") -> engine."""
    return IMPLS[request.param]


# --------------------------------------------------------------------------- helpers
def N(oid, side, price, qty, acct=1, tif=GTC, otype=LMT, sym=0, po=0, action=NEW):
    """An input row (ts filled in by Harness)."""
    return dict(order_id=oid, side=side, price_ticks=price, qty=qty, account=acct, tif=tif,
                order_type=otype, symbol=sym, post_only=po, action=action)


def C(oid, acct=1, sym=0, side=B, price=0, qty=0):
    return dict(order_id=oid, side=side, price_ticks=price, qty=qty, account=acct, symbol=sym,
                action=CXL_)


def R(oid, price, qty, acct=1, sym=0, side=B):
    return dict(order_id=oid, side=side, price_ticks=price, qty=qty, account=acct, symbol=sym,
                action=RPL_)


def F(seq, taker, maker, tacct, macct, tside, px, qty, sym=0, ts=None):
    return (seq, TS0 + seq if ts is None else ts, sym, taker, maker, tacct, macct, tside, px, qty)


def E(seq, oid, acct, side, ev, rsn, px, qty, leaves, sym=0, ts=None):
    return (seq, TS0 + seq if ts is None else ts, sym, oid, acct, side, ev, rsn, px, qty, leaves)


def D(seq, side, px, qty, orders, sym=0, ts=None):
    return (seq, TS0 + seq if ts is None else ts, sym, side, px, qty, orders)


def L(side, level, px, qty, orders, sym=0):
    return (sym, side, level, px, qty, orders)


def O3(side, px, oid, acct, qty, tif=GTC, sym=0):
    return (sym, side, px, oid, acct, qty, tif)


class Harness:
    """One engine plus the stream position; every output is checked against its schema."""

    def __init__(self, factory, stp="none"):
        self.eng = factory(stp=stp)
        self.seq = 0

    def cols(self, rows):
        rows = [dict(r, ts_ns=TS0 + self.seq + i) for i, r in enumerate(rows)]
        return rows_to_columns(rows)

    def submit(self, *rows):
        res = self.eng.submit(self.cols(rows))
        self.seq += len(rows)
        return self.out(res)

    def end_session(self, ts):
        return self.out(self.eng.end_session(ts))

    @staticmethod
    def out(res):
        assert_columns(res.fills, S.FILL_COLUMNS, "fills")
        assert_columns(res.events, S.EVENT_COLUMNS, "events")
        assert_columns(res.deltas, S.DELTA_COLUMNS, "deltas")
        return (as_rows(res.fills, S.FILL_COLUMNS), as_rows(res.events, S.EVENT_COLUMNS),
                as_rows(res.deltas, S.DELTA_COLUMNS))

    def levels(self, depth=None):
        cols = self.eng.book_levels() if depth is None else self.eng.book_levels(depth)
        assert_columns(cols, S.LEVEL_COLUMNS, "book_levels")
        return as_rows(cols, S.LEVEL_COLUMNS)

    def l3(self):
        cols = self.eng.book_l3()
        assert_columns(cols, S.L3_COLUMNS, "book_l3")
        return as_rows(cols, S.L3_COLUMNS)


def check(out, fills, events, deltas):
    f, e, d = out
    assert f == fills, "fills"
    assert e == events, "events"
    assert d == deltas, "deltas"


# --------------------------------------------------------------------------- empty things
def test_empty_batch_and_empty_book(impl):
    h = Harness(impl)
    check(h.submit(), [], [], [])
    assert h.levels() == [] and h.levels(3) == [] and h.l3() == []
    check(h.end_session(5), [], [], [])
    # an empty batch consumes no seq
    check(h.submit(N(1, B, 100, 10)), [], [E(0, 1, 1, B, ACC, R0, 100, 10, 10)], [D(0, B, 100, 10, 1)])
    assert h.levels() == [L(B, 0, 100, 10, 1)]
    assert h.l3() == [O3(B, 100, 1, 1, 10)]


def test_one_side_empty(impl):
    h = Harness(impl)
    out = h.submit(N(1, B, 100, 5), N(2, B, 99, 3), N(3, B, 101, 2), N(4, SL, 102, 4))
    check(out, [],
          [E(0, 1, 1, B, ACC, R0, 100, 5, 5), E(1, 2, 1, B, ACC, R0, 99, 3, 3),
           E(2, 3, 1, B, ACC, R0, 101, 2, 2), E(3, 4, 1, SL, ACC, R0, 102, 4, 4)],
          [D(0, B, 100, 5, 1), D(1, B, 99, 3, 1), D(2, B, 101, 2, 1), D(3, SL, 102, 4, 1)])
    assert h.levels() == [L(B, 0, 101, 2, 1), L(B, 1, 100, 5, 1), L(B, 2, 99, 3, 1), L(SL, 0, 102, 4, 1)]
    assert h.levels(1) == [L(B, 0, 101, 2, 1), L(SL, 0, 102, 4, 1)]
    assert h.levels(2) == [L(B, 0, 101, 2, 1), L(B, 1, 100, 5, 1), L(SL, 0, 102, 4, 1)]
    assert h.l3() == [O3(B, 101, 3, 1, 2), O3(B, 100, 1, 1, 5), O3(B, 99, 2, 1, 3), O3(SL, 102, 4, 1, 4)]


def test_sell_into_empty_bids_rests(impl):
    h = Harness(impl)
    check(h.submit(N(1, SL, 100, 3, acct=2)), [], [E(0, 1, 2, SL, ACC, R0, 100, 3, 3)], [D(0, SL, 100, 3, 1)])
    assert h.levels() == [L(SL, 0, 100, 3, 1)]


# --------------------------------------------------------------------------- matching
def test_fifo_at_equal_prices_and_partial_fills(impl):
    h = Harness(impl)
    check(h.submit(N(1, SL, 100, 3), N(2, SL, 100, 4), N(3, SL, 100, 5, acct=3)), [],
          [E(0, 1, 1, SL, ACC, R0, 100, 3, 3), E(1, 2, 1, SL, ACC, R0, 100, 4, 4),
           E(2, 3, 3, SL, ACC, R0, 100, 5, 5)],
          [D(0, SL, 100, 3, 1), D(1, SL, 100, 7, 2), D(2, SL, 100, 12, 3)])
    assert h.l3() == [O3(SL, 100, 1, 1, 3), O3(SL, 100, 2, 1, 4), O3(SL, 100, 3, 3, 5)]
    check(h.submit(N(10, B, 100, 8, acct=2)),
          [F(3, 10, 1, 2, 1, B, 100, 3), F(3, 10, 2, 2, 1, B, 100, 4), F(3, 10, 3, 2, 3, B, 100, 1)],
          [E(3, 10, 2, B, ACC, R0, 100, 8, 8),
           E(3, 1, 1, SL, FIL, R0, 100, 3, 0), E(3, 10, 2, B, PAR, R0, 100, 3, 5),
           E(3, 2, 1, SL, FIL, R0, 100, 4, 0), E(3, 10, 2, B, PAR, R0, 100, 4, 1),
           E(3, 3, 3, SL, PAR, R0, 100, 1, 4), E(3, 10, 2, B, FIL, R0, 100, 1, 0)],
          [D(3, SL, 100, 4, 1)])
    assert h.levels() == [L(SL, 0, 100, 4, 1)]
    assert h.l3() == [O3(SL, 100, 3, 3, 4)]


def test_multi_level_sweep_then_rest(impl):
    h = Harness(impl)
    h.submit(N(1, SL, 101, 2), N(2, SL, 102, 3), N(3, SL, 103, 4))
    check(h.submit(N(10, B, 102, 7, acct=2)),
          [F(3, 10, 1, 2, 1, B, 101, 2), F(3, 10, 2, 2, 1, B, 102, 3)],
          [E(3, 10, 2, B, ACC, R0, 102, 7, 7),
           E(3, 1, 1, SL, FIL, R0, 101, 2, 0), E(3, 10, 2, B, PAR, R0, 101, 2, 5),
           E(3, 2, 1, SL, FIL, R0, 102, 3, 0), E(3, 10, 2, B, PAR, R0, 102, 3, 2)],
          [D(3, SL, 101, 0, 0), D(3, SL, 102, 0, 0), D(3, B, 102, 2, 1)])
    assert h.levels() == [L(B, 0, 102, 2, 1), L(SL, 0, 103, 4, 1)]
    assert h.l3() == [O3(B, 102, 10, 2, 2), O3(SL, 103, 3, 1, 4)]


def test_sell_taker_sweeps_bids_best_first(impl):
    h = Harness(impl)
    h.submit(N(1, B, 99, 2), N(2, B, 101, 1), N(3, B, 100, 2, acct=3))
    check(h.submit(N(10, SL, 98, 4, acct=2, tif=DAY)),
          [F(3, 10, 2, 2, 1, SL, 101, 1), F(3, 10, 3, 2, 3, SL, 100, 2), F(3, 10, 1, 2, 1, SL, 99, 1)],
          [E(3, 10, 2, SL, ACC, R0, 98, 4, 4),
           E(3, 2, 1, B, FIL, R0, 101, 1, 0), E(3, 10, 2, SL, PAR, R0, 101, 1, 3),
           E(3, 3, 3, B, FIL, R0, 100, 2, 0), E(3, 10, 2, SL, PAR, R0, 100, 2, 1),
           E(3, 1, 1, B, PAR, R0, 99, 1, 1), E(3, 10, 2, SL, FIL, R0, 99, 1, 0)],
          [D(3, B, 101, 0, 0), D(3, B, 100, 0, 0), D(3, B, 99, 1, 1)])
    assert h.l3() == [O3(B, 99, 1, 1, 1)]


def test_ioc_remainder_expires(impl):
    h = Harness(impl)
    h.submit(N(1, SL, 100, 3))
    check(h.submit(N(10, B, 101, 5, acct=2, tif=IOC)),
          [F(1, 10, 1, 2, 1, B, 100, 3)],
          [E(1, 10, 2, B, ACC, R0, 101, 5, 5),
           E(1, 1, 1, SL, FIL, R0, 100, 3, 0), E(1, 10, 2, B, PAR, R0, 100, 3, 2),
           E(1, 10, 2, B, EXP, R0, 101, 2, 0)],
          [D(1, SL, 100, 0, 0)])
    assert h.levels() == [] and h.l3() == []
    # IOC that does not cross: accepted then expired whole, the book never sees it
    check(h.submit(N(11, B, 99, 4, acct=2, tif=IOC)), [],
          [E(2, 11, 2, B, ACC, R0, 99, 4, 4), E(2, 11, 2, B, EXP, R0, 99, 4, 0)], [])
    assert h.l3() == []


def test_fok_pass(impl):
    h = Harness(impl)
    h.submit(N(1, SL, 100, 3), N(2, SL, 101, 3))
    check(h.submit(N(10, B, 101, 5, acct=2, tif=FOK)),
          [F(2, 10, 1, 2, 1, B, 100, 3), F(2, 10, 2, 2, 1, B, 101, 2)],
          [E(2, 10, 2, B, ACC, R0, 101, 5, 5),
           E(2, 1, 1, SL, FIL, R0, 100, 3, 0), E(2, 10, 2, B, PAR, R0, 100, 3, 2),
           E(2, 2, 1, SL, PAR, R0, 101, 2, 1), E(2, 10, 2, B, FIL, R0, 101, 2, 0)],
          [D(2, SL, 100, 0, 0), D(2, SL, 101, 1, 1)])
    assert h.l3() == [O3(SL, 101, 2, 1, 1)]


def test_fok_exactly_fillable_passes(impl):
    h = Harness(impl)
    h.submit(N(1, SL, 100, 3), N(2, SL, 101, 3))
    check(h.submit(N(10, B, 101, 6, acct=2, tif=FOK)),
          [F(2, 10, 1, 2, 1, B, 100, 3), F(2, 10, 2, 2, 1, B, 101, 3)],
          [E(2, 10, 2, B, ACC, R0, 101, 6, 6),
           E(2, 1, 1, SL, FIL, R0, 100, 3, 0), E(2, 10, 2, B, PAR, R0, 100, 3, 3),
           E(2, 2, 1, SL, FIL, R0, 101, 3, 0), E(2, 10, 2, B, FIL, R0, 101, 3, 0)],
          [D(2, SL, 100, 0, 0), D(2, SL, 101, 0, 0)])
    assert h.l3() == []


def test_fok_fail_leaves_book_untouched(impl):
    h = Harness(impl)
    h.submit(N(1, SL, 100, 3), N(2, SL, 101, 3))
    before = h.l3()
    # not enough in total
    check(h.submit(N(10, B, 101, 7, acct=2, tif=FOK)), [],
          [E(2, 10, 2, B, ACC, R0, 101, 7, 7), E(2, 10, 2, B, EXP, S.R_FOK_NOT_FILLABLE, 101, 7, 0)], [])
    # enough in total but not within the limit price
    check(h.submit(N(11, B, 100, 5, acct=2, tif=FOK)), [],
          [E(3, 11, 2, B, ACC, R0, 100, 5, 5), E(3, 11, 2, B, EXP, S.R_FOK_NOT_FILLABLE, 100, 5, 0)], [])
    # MARKET FOK crosses every level: 6 available
    check(h.submit(N(12, B, 0, 7, acct=2, tif=FOK, otype=MKT)), [],
          [E(4, 12, 2, B, ACC, R0, 0, 7, 7), E(4, 12, 2, B, EXP, S.R_FOK_NOT_FILLABLE, 0, 7, 0)], [])
    assert h.l3() == before


def test_market_with_liquidity(impl):
    h = Harness(impl)
    h.submit(N(1, SL, 100, 2), N(2, SL, 105, 2))
    check(h.submit(N(10, B, 0, 3, acct=2, otype=MKT)),
          [F(2, 10, 1, 2, 1, B, 100, 2), F(2, 10, 2, 2, 1, B, 105, 1)],
          [E(2, 10, 2, B, ACC, R0, 0, 3, 3),
           E(2, 1, 1, SL, FIL, R0, 100, 2, 0), E(2, 10, 2, B, PAR, R0, 100, 2, 1),
           E(2, 2, 1, SL, PAR, R0, 105, 1, 1), E(2, 10, 2, B, FIL, R0, 105, 1, 0)],
          [D(2, SL, 100, 0, 0), D(2, SL, 105, 1, 1)])
    # a MARKET GTC order larger than the book: the remainder expires, it never rests
    check(h.submit(N(12, B, 77, 5, acct=2, otype=MKT, tif=DAY)),
          [F(3, 12, 2, 2, 1, B, 105, 1)],
          [E(3, 12, 2, B, ACC, R0, 0, 5, 5),
           E(3, 2, 1, SL, FIL, R0, 105, 1, 0), E(3, 12, 2, B, PAR, R0, 105, 1, 4),
           E(3, 12, 2, B, EXP, R0, 0, 4, 0)],
          [D(3, SL, 105, 0, 0)])
    assert h.l3() == []


def test_market_without_liquidity(impl):
    h = Harness(impl)
    h.submit(N(1, SL, 100, 2))          # only asks; a MARKET sell finds no bids
    check(h.submit(N(11, SL, 55, 4, acct=2, otype=MKT)), [],
          [E(1, 11, 2, SL, ACC, R0, 0, 4, 4), E(1, 11, 2, SL, EXP, R0, 0, 4, 0)], [])
    # price_ticks <= 0 is fine on a MARKET order
    check(h.submit(N(12, SL, -5, 1, acct=2, otype=MKT, tif=IOC)), [],
          [E(2, 12, 2, SL, ACC, R0, 0, 1, 1), E(2, 12, 2, SL, EXP, R0, 0, 1, 0)], [])
    assert h.l3() == [O3(SL, 100, 1, 1, 2)]


# --------------------------------------------------------------------------- post-only
def test_post_only(impl):
    h = Harness(impl)
    h.submit(N(1, B, 100, 5), N(2, SL, 102, 5))
    PO = S.R_POST_ONLY_WOULD_TAKE
    # buy at the best ask would take
    check(h.submit(N(3, B, 102, 2, acct=2, po=1)), [], [E(2, 3, 2, B, REJ, PO, 102, 2, 0)], [])
    # buy inside the spread rests
    check(h.submit(N(4, B, 101, 2, acct=2, po=1)), [], [E(3, 4, 2, B, ACC, R0, 101, 2, 2)],
          [D(3, B, 101, 2, 1)])
    # sells at or below the best bid (now 101) would take
    check(h.submit(N(5, SL, 100, 1, acct=2, po=1), N(6, SL, 101, 1, acct=2, po=255)), [],
          [E(4, 5, 2, SL, REJ, PO, 100, 1, 0), E(5, 6, 2, SL, REJ, PO, 101, 1, 0)], [])
    # post-only DAY sell above the bid rests
    check(h.submit(N(7, SL, 103, 1, acct=2, po=1, tif=DAY)), [], [E(6, 7, 2, SL, ACC, R0, 103, 1, 1)],
          [D(6, SL, 103, 1, 1)])
    # empty opposite side (another book): never crosses
    check(h.submit(N(8, B, 500, 1, acct=2, po=1, sym=7)), [],
          [E(7, 8, 2, B, ACC, R0, 500, 1, 1, sym=7)], [D(7, B, 500, 1, 1, sym=7)])
    assert h.l3() == [O3(B, 101, 4, 2, 2), O3(B, 100, 1, 1, 5), O3(SL, 102, 2, 1, 5),
                      O3(SL, 103, 7, 2, 1, tif=DAY), O3(B, 500, 8, 2, 1, sym=7)]


# --------------------------------------------------------------------------- self-trade prevention
# Book for the STP scenarios: asks at 100 [id1 acct1 q2, id2 acct2 q3, id3 acct1 q4], at 101
# [id4 acct1 q5]; then acct 2 buys 6 @ 101 (id2 is its own order).
def _stp_book(impl, stp):
    h = Harness(impl, stp)
    h.submit(N(1, SL, 100, 2), N(2, SL, 100, 3, acct=2), N(3, SL, 100, 4), N(4, SL, 101, 5))
    return h


def test_stp_none_trades_with_itself(impl):
    h = _stp_book(impl, "none")
    check(h.submit(N(10, B, 101, 6, acct=2)),
          [F(4, 10, 1, 2, 1, B, 100, 2), F(4, 10, 2, 2, 2, B, 100, 3), F(4, 10, 3, 2, 1, B, 100, 1)],
          [E(4, 10, 2, B, ACC, R0, 101, 6, 6),
           E(4, 1, 1, SL, FIL, R0, 100, 2, 0), E(4, 10, 2, B, PAR, R0, 100, 2, 4),
           E(4, 2, 2, SL, FIL, R0, 100, 3, 0), E(4, 10, 2, B, PAR, R0, 100, 3, 1),
           E(4, 3, 1, SL, PAR, R0, 100, 1, 3), E(4, 10, 2, B, FIL, R0, 100, 1, 0)],
          [D(4, SL, 100, 3, 1)])
    assert h.l3() == [O3(SL, 100, 3, 1, 3), O3(SL, 101, 4, 1, 5)]


def test_stp_cancel_newest(impl):
    h = _stp_book(impl, "cancel-newest")
    check(h.submit(N(10, B, 101, 6, acct=2)),
          [F(4, 10, 1, 2, 1, B, 100, 2)],
          [E(4, 10, 2, B, ACC, R0, 101, 6, 6),
           E(4, 1, 1, SL, FIL, R0, 100, 2, 0), E(4, 10, 2, B, PAR, R0, 100, 2, 4),
           E(4, 10, 2, B, CXL, ST, 101, 4, 0)],
          [D(4, SL, 100, 7, 2)])
    assert h.l3() == [O3(SL, 100, 2, 2, 3), O3(SL, 100, 3, 1, 4), O3(SL, 101, 4, 1, 5)]


def test_stp_cancel_newest_first_maker_is_own(impl):
    # nothing done to any maker at the level: no delta row
    h = Harness(impl, "cancel-newest")
    h.submit(N(1, SL, 100, 2), N(2, SL, 100, 2, acct=3))
    check(h.submit(N(3, B, 100, 3)), [],
          [E(2, 3, 1, B, ACC, R0, 100, 3, 3), E(2, 3, 1, B, CXL, ST, 100, 3, 0)], [])
    assert h.l3() == [O3(SL, 100, 1, 1, 2), O3(SL, 100, 2, 3, 2)]


def test_stp_cancel_oldest(impl):
    h = _stp_book(impl, "cancel-oldest")
    check(h.submit(N(10, B, 101, 6, acct=2)),
          [F(4, 10, 1, 2, 1, B, 100, 2), F(4, 10, 3, 2, 1, B, 100, 4)],
          [E(4, 10, 2, B, ACC, R0, 101, 6, 6),
           E(4, 1, 1, SL, FIL, R0, 100, 2, 0), E(4, 10, 2, B, PAR, R0, 100, 2, 4),
           E(4, 2, 2, SL, CXL, ST, 100, 3, 0),
           E(4, 3, 1, SL, FIL, R0, 100, 4, 0), E(4, 10, 2, B, FIL, R0, 100, 4, 0)],
          [D(4, SL, 100, 0, 0)])
    assert h.l3() == [O3(SL, 101, 4, 1, 5)]


def test_stp_cancel_both(impl):
    h = _stp_book(impl, "cancel-both")
    check(h.submit(N(10, B, 101, 6, acct=2)),
          [F(4, 10, 1, 2, 1, B, 100, 2)],
          [E(4, 10, 2, B, ACC, R0, 101, 6, 6),
           E(4, 1, 1, SL, FIL, R0, 100, 2, 0), E(4, 10, 2, B, PAR, R0, 100, 2, 4),
           E(4, 2, 2, SL, CXL, ST, 100, 3, 0), E(4, 10, 2, B, CXL, ST, 101, 4, 0)],
          [D(4, SL, 100, 4, 1)])
    assert h.l3() == [O3(SL, 100, 3, 1, 4), O3(SL, 101, 4, 1, 5)]


def test_stp_decrement_maker_out_taker_goes_on(impl):
    h = _stp_book(impl, "decrement")
    check(h.submit(N(10, B, 101, 6, acct=2)),
          [F(4, 10, 1, 2, 1, B, 100, 2), F(4, 10, 3, 2, 1, B, 100, 1)],
          [E(4, 10, 2, B, ACC, R0, 101, 6, 6),
           E(4, 1, 1, SL, FIL, R0, 100, 2, 0), E(4, 10, 2, B, PAR, R0, 100, 2, 4),
           E(4, 2, 2, SL, CXL, ST, 100, 3, 0), E(4, 10, 2, B, RPL, ST, 101, 3, 1),
           E(4, 3, 1, SL, PAR, R0, 100, 1, 3), E(4, 10, 2, B, FIL, R0, 100, 1, 0)],
          [D(4, SL, 100, 3, 1)])
    assert h.l3() == [O3(SL, 100, 3, 1, 3), O3(SL, 101, 4, 1, 5)]


def test_stp_decrement_maker_keeps_priority(impl):
    h = Harness(impl, "decrement")
    h.submit(N(1, SL, 100, 5), N(2, SL, 100, 1, acct=3))
    check(h.submit(N(3, B, 100, 2)), [],
          [E(2, 3, 1, B, ACC, R0, 100, 2, 2),
           E(2, 1, 1, SL, RPL, ST, 100, 2, 3), E(2, 3, 1, B, CXL, ST, 100, 2, 0)],
          [D(2, SL, 100, 4, 2)])
    assert h.l3() == [O3(SL, 100, 1, 1, 3), O3(SL, 100, 2, 3, 1)]


def test_stp_decrement_equal_quantities(impl):
    h = Harness(impl, "decrement")
    h.submit(N(1, SL, 100, 3))
    check(h.submit(N(2, B, 100, 3)), [],
          [E(1, 2, 1, B, ACC, R0, 100, 3, 3),
           E(1, 1, 1, SL, CXL, ST, 100, 3, 0), E(1, 2, 1, B, CXL, ST, 100, 3, 0)],
          [D(1, SL, 100, 0, 0)])
    assert h.l3() == []


def test_stp_decrement_taker_rests_remainder(impl):
    h = Harness(impl, "decrement")
    h.submit(N(1, SL, 100, 2))
    check(h.submit(N(2, B, 100, 5)), [],
          [E(1, 2, 1, B, ACC, R0, 100, 5, 5),
           E(1, 1, 1, SL, CXL, ST, 100, 2, 0), E(1, 2, 1, B, RPL, ST, 100, 2, 3)],
          [D(1, SL, 100, 0, 0), D(1, B, 100, 3, 1)])
    assert h.l3() == [O3(B, 100, 2, 1, 3)]


def test_stp_decrement_market_taker(impl):
    h = Harness(impl, "decrement")
    h.submit(N(1, SL, 100, 2), N(2, SL, 101, 4, acct=3))
    check(h.submit(N(3, B, 0, 5, otype=MKT)),
          [F(2, 3, 2, 1, 3, B, 101, 3)],
          [E(2, 3, 1, B, ACC, R0, 0, 5, 5),
           E(2, 1, 1, SL, CXL, ST, 100, 2, 0), E(2, 3, 1, B, RPL, ST, 0, 2, 3),
           E(2, 2, 3, SL, PAR, R0, 101, 3, 1), E(2, 3, 1, B, FIL, R0, 101, 3, 0)],
          [D(2, SL, 100, 0, 0), D(2, SL, 101, 1, 1)])


def test_stp_does_not_touch_other_accounts(impl):
    for stp in S.STP_NAMES:
        h = Harness(impl, stp)
        h.submit(N(1, SL, 100, 2, acct=3))
        check(h.submit(N(2, B, 100, 1)), [F(1, 2, 1, 1, 3, B, 100, 1)],
              [E(1, 2, 1, B, ACC, R0, 100, 1, 1),
               E(1, 1, 3, SL, PAR, R0, 100, 1, 1), E(1, 2, 1, B, FIL, R0, 100, 1, 0)],
              [D(1, SL, 100, 1, 1)])


def test_fok_dry_run_with_stp(impl):
    rows = (N(1, SL, 100, 2, acct=2), N(2, SL, 100, 5, acct=1))
    # STP none: own order counts, FOK passes and trades with itself
    h = Harness(impl, "none")
    h.submit(*rows)
    check(h.submit(N(10, B, 100, 4, tif=FOK)),
          [F(2, 10, 1, 1, 2, B, 100, 2), F(2, 10, 2, 1, 1, B, 100, 2)],
          [E(2, 10, 1, B, ACC, R0, 100, 4, 4),
           E(2, 1, 2, SL, FIL, R0, 100, 2, 0), E(2, 10, 1, B, PAR, R0, 100, 2, 2),
           E(2, 2, 1, SL, PAR, R0, 100, 2, 3), E(2, 10, 1, B, FIL, R0, 100, 2, 0)],
          [D(2, SL, 100, 3, 1)])
    # any STP mode: the walk stops at the own order, 2 < 4 counted
    for stp in ("cancel-newest", "cancel-oldest", "cancel-both", "decrement"):
        h = Harness(impl, stp)
        h.submit(*rows)
        check(h.submit(N(10, B, 100, 4, tif=FOK)), [],
              [E(2, 10, 1, B, ACC, R0, 100, 4, 4), E(2, 10, 1, B, EXP, S.R_FOK_NOT_FILLABLE, 100, 4, 0)], [])
        assert h.l3() == [O3(SL, 100, 1, 2, 2), O3(SL, 100, 2, 1, 5)]
        # enough before the own order: passes and never reaches it
        check(h.submit(N(11, B, 100, 2, tif=FOK)),
              [F(3, 11, 1, 1, 2, B, 100, 2)],
              [E(3, 11, 1, B, ACC, R0, 100, 2, 2),
               E(3, 1, 2, SL, FIL, R0, 100, 2, 0), E(3, 11, 1, B, FIL, R0, 100, 2, 0)],
              [D(3, SL, 100, 5, 1)])


# --------------------------------------------------------------------------- cancel
def test_cancel(impl):
    h = Harness(impl)
    h.submit(N(1, B, 100, 5), N(2, B, 100, 3))
    # the row's side/price/qty are informative only
    check(h.submit(C(1, side=SL, price=7, qty=99)), [], [E(2, 1, 1, B, CXL, R0, 100, 5, 0)], [D(2, B, 100, 3, 1)])
    check(h.submit(C(2)), [], [E(3, 2, 1, B, CXL, R0, 100, 3, 0)], [D(3, B, 100, 0, 0)])
    assert h.levels() == [] and h.l3() == []


def test_cancel_unknown_and_not_owner(impl):
    h = Harness(impl)
    h.submit(N(1, B, 100, 5), N(2, B, 101, 3), C(1))
    U, NO = S.R_UNKNOWN_ORDER, S.R_NOT_OWNER
    out = h.submit(C(99, price=4, qty=2),            # never used
                   C(1),                             # finished (cancelled)
                   C(2, sym=5),                      # rests in another book
                   C(2, acct=9, side=SL, price=1, qty=8))  # not the owner
    check(out, [],
          [E(3, 99, 1, B, REJ, U, 4, 2, 0), E(4, 1, 1, B, REJ, U, 0, 0, 0),
           E(5, 2, 1, B, REJ, U, 0, 0, 0, sym=5), E(6, 2, 9, SL, REJ, NO, 1, 8, 3)], [])
    assert h.l3() == [O3(B, 101, 2, 1, 3)]


def test_filled_order_is_unknown(impl):
    h = Harness(impl)
    h.submit(N(1, SL, 100, 1), N(2, B, 100, 1, acct=2))
    check(h.submit(C(1), R(1, 100, 5)), [],
          [E(2, 1, 1, B, REJ, S.R_UNKNOWN_ORDER, 0, 0, 0), E(3, 1, 1, B, REJ, S.R_UNKNOWN_ORDER, 100, 5, 0)], [])


# --------------------------------------------------------------------------- replace
def test_replace_in_place_and_re_enter(impl):
    h = Harness(impl)
    h.submit(N(1, B, 100, 5), N(2, B, 100, 4))
    # quantity down at the same price: in place, priority kept
    check(h.submit(R(1, 100, 2)), [], [E(2, 1, 1, B, RPL, R0, 100, 2, 2)], [D(2, B, 100, 6, 2)])
    assert h.l3() == [O3(B, 100, 1, 1, 2), O3(B, 100, 2, 1, 4)]
    # same quantity at the same price: in place, nothing changes, so no delta row
    check(h.submit(R(1, 100, 2)), [], [E(3, 1, 1, B, RPL, R0, 100, 2, 2)], [])
    assert h.l3() == [O3(B, 100, 1, 1, 2), O3(B, 100, 2, 1, 4)]
    # quantity up at the same price: leaves and re-enters at the back (two rows, same level)
    check(h.submit(R(1, 100, 6)), [], [E(4, 1, 1, B, RPL, R0, 100, 6, 6)],
          [D(4, B, 100, 4, 1), D(4, B, 100, 10, 2)])
    assert h.l3() == [O3(B, 100, 2, 1, 4), O3(B, 100, 1, 1, 6)]
    # price change (quantity unchanged): moves
    check(h.submit(R(2, 99, 4, side=SL)), [], [E(5, 2, 1, B, RPL, R0, 99, 4, 4)],
          [D(5, B, 100, 6, 1), D(5, B, 99, 4, 1)])
    assert h.levels() == [L(B, 0, 100, 6, 1), L(B, 1, 99, 4, 1)]
    # price change with quantity down: moves too
    check(h.submit(R(2, 98, 1)), [], [E(6, 2, 1, B, RPL, R0, 98, 1, 1)],
          [D(6, B, 99, 0, 0), D(6, B, 98, 1, 1)])
    assert h.l3() == [O3(B, 100, 1, 1, 6), O3(B, 98, 2, 1, 1)]


def test_replace_crossing_matches(impl):
    h = Harness(impl)
    h.submit(N(1, B, 100, 6, tif=DAY), N(2, B, 99, 4), N(3, SL, 101, 3, acct=3))
    check(h.submit(R(1, 101, 5)),
          [F(3, 1, 3, 1, 3, B, 101, 3)],
          [E(3, 1, 1, B, RPL, R0, 101, 5, 5),
           E(3, 3, 3, SL, FIL, R0, 101, 3, 0), E(3, 1, 1, B, PAR, R0, 101, 3, 2)],
          [D(3, B, 100, 0, 0), D(3, SL, 101, 0, 0), D(3, B, 101, 2, 1)])
    # the re-entered order keeps its tif (DAY)
    assert h.l3() == [O3(B, 101, 1, 1, 2, tif=DAY), O3(B, 99, 2, 1, 4)]


def test_replace_crossing_fills_completely(impl):
    h = Harness(impl)
    h.submit(N(1, SL, 103, 2), N(2, B, 101, 1, acct=3), N(3, B, 100, 1, acct=3))
    check(h.submit(R(1, 100, 2)),
          [F(3, 1, 2, 1, 3, SL, 101, 1), F(3, 1, 3, 1, 3, SL, 100, 1)],
          [E(3, 1, 1, SL, RPL, R0, 100, 2, 2),
           E(3, 2, 3, B, FIL, R0, 101, 1, 0), E(3, 1, 1, SL, PAR, R0, 101, 1, 1),
           E(3, 3, 3, B, FIL, R0, 100, 1, 0), E(3, 1, 1, SL, FIL, R0, 100, 1, 0)],
          [D(3, SL, 103, 0, 0), D(3, B, 101, 0, 0), D(3, B, 100, 0, 0)])
    assert h.l3() == []


def test_replace_crossing_with_stp(impl):
    h = Harness(impl, "cancel-newest")
    h.submit(N(1, SL, 103, 2), N(2, B, 101, 1))
    check(h.submit(R(1, 101, 2)), [],
          [E(2, 1, 1, SL, RPL, R0, 101, 2, 2), E(2, 1, 1, SL, CXL, ST, 101, 2, 0)],
          [D(2, SL, 103, 0, 0)])
    assert h.l3() == [O3(B, 101, 2, 1, 1)]


def test_replace_post_only(impl):
    h = Harness(impl)
    h.submit(N(1, B, 100, 5, po=1), N(2, SL, 102, 5, acct=3))
    check(h.submit(R(1, 102, 5)), [], [E(2, 1, 1, B, REJ, S.R_POST_ONLY_WOULD_TAKE, 102, 5, 5)], [])
    check(h.submit(R(1, 101, 6)), [], [E(3, 1, 1, B, RPL, R0, 101, 6, 6)],
          [D(3, B, 100, 0, 0), D(3, B, 101, 6, 1)])
    assert h.l3() == [O3(B, 101, 1, 1, 6), O3(SL, 102, 2, 3, 5)]


def test_replace_rejects(impl):
    h = Harness(impl)
    h.submit(N(1, B, 100, 5))
    U, NO, IQ, IP = S.R_UNKNOWN_ORDER, S.R_NOT_OWNER, S.R_INVALID_QTY, S.R_INVALID_PRICE
    out = h.submit(R(2, 100, 5),                    # unknown
                   R(1, 100, 5, sym=3),             # other book: unknown
                   R(1, 0, 0, acct=2),              # not owner wins over bad qty/price
                   R(1, 0, 0),                      # bad qty wins over bad price
                   R(1, 100, -1),
                   R(1, -2, 3))
    check(out, [],
          [E(1, 2, 1, B, REJ, U, 100, 5, 0), E(2, 1, 1, B, REJ, U, 100, 5, 0, sym=3),
           E(3, 1, 2, B, REJ, NO, 0, 0, 5), E(4, 1, 1, B, REJ, IQ, 0, 0, 5),
           E(5, 1, 1, B, REJ, IQ, 100, -1, 5), E(6, 1, 1, B, REJ, IP, -2, 3, 5)], [])
    assert h.l3() == [O3(B, 100, 1, 1, 5)]


# --------------------------------------------------------------------------- validation
def test_each_new_reject_reason(impl):
    h = Harness(impl)
    h.submit(N(1, B, 100, 5))
    rows = [
        N(2, B, 100, 1, action=3),              # INVALID_ACTION
        N(1, B, 100, 1, action=255),            # INVALID_ACTION even on a resting id: leaves 0
        N(3, 0, 0, 0, otype=9, tif=9),          # INVALID_SIDE first
        N(4, 2, 100, 1),                        # INVALID_SIDE
        N(5, SL, 0, 0, otype=4, tif=9),         # INVALID_ORDER_TYPE before tif/qty/price
        N(6, SL, 0, 0, tif=4),                  # INVALID_TIF before qty/price
        N(7, SL, 0, 0, po=1, tif=IOC),          # INVALID_QTY before price/post-only
        N(8, SL, 100, -4),                      # INVALID_QTY
        N(9, SL, 0, 1, po=1, tif=IOC),          # INVALID_PRICE before post-only
        N(10, SL, -1, 1),                       # INVALID_PRICE
        N(1, B, 100, 1, po=1, tif=IOC),         # INVALID_POST_ONLY before duplicate
        N(11, SL, 100, 1, po=1, tif=FOK),       # INVALID_POST_ONLY
        N(12, SL, 100, 1, po=1, otype=MKT),     # INVALID_POST_ONLY (MARKET)
        N(1, SL, 101, 1, acct=2),               # DUPLICATE_ORDER_ID (resting in this book)
        N(1, SL, 0, 1, otype=MKT, tif=IOC),     # DUPLICATE_ORDER_ID, even for a MARKET IOC
    ]
    out = h.submit(*rows)
    ev = [
        E(1, 2, 1, B, REJ, S.R_INVALID_ACTION, 100, 1, 0),
        E(2, 1, 1, B, REJ, S.R_INVALID_ACTION, 100, 1, 0),
        E(3, 3, 1, 0, REJ, S.R_INVALID_SIDE, 0, 0, 0),
        E(4, 4, 1, 2, REJ, S.R_INVALID_SIDE, 100, 1, 0),
        E(5, 5, 1, SL, REJ, S.R_INVALID_ORDER_TYPE, 0, 0, 0),
        E(6, 6, 1, SL, REJ, S.R_INVALID_TIF, 0, 0, 0),
        E(7, 7, 1, SL, REJ, S.R_INVALID_QTY, 0, 0, 0),
        E(8, 8, 1, SL, REJ, S.R_INVALID_QTY, 100, -4, 0),
        E(9, 9, 1, SL, REJ, S.R_INVALID_PRICE, 0, 1, 0),
        E(10, 10, 1, SL, REJ, S.R_INVALID_PRICE, -1, 1, 0),
        E(11, 1, 1, B, REJ, S.R_INVALID_POST_ONLY, 100, 1, 0),
        E(12, 11, 1, SL, REJ, S.R_INVALID_POST_ONLY, 100, 1, 0),
        E(13, 12, 1, SL, REJ, S.R_INVALID_POST_ONLY, 100, 1, 0),
        E(14, 1, 2, SL, REJ, S.R_DUPLICATE_ORDER_ID, 101, 1, 0),
        E(15, 1, 1, SL, REJ, S.R_DUPLICATE_ORDER_ID, 0, 1, 0),
    ]
    check(out, [], ev, [])
    assert h.l3() == [O3(B, 100, 1, 1, 5)]


def test_cancel_and_replace_validation_order(impl):
    h = Harness(impl)
    h.submit(N(1, B, 100, 5))
    out = h.submit(C(7, acct=9),            # UNKNOWN before NOT_OWNER
                   R(7, 0, 0, acct=9),      # UNKNOWN before everything
                   dict(C(1), action=4))    # INVALID_ACTION checked first
    check(out, [],
          [E(1, 7, 9, B, REJ, S.R_UNKNOWN_ORDER, 0, 0, 0), E(2, 7, 9, B, REJ, S.R_UNKNOWN_ORDER, 0, 0, 0),
           E(3, 1, 1, B, REJ, S.R_INVALID_ACTION, 0, 0, 0)], [])


def test_ids_are_per_book_and_reusable(impl):
    h = Harness(impl)
    h.submit(N(1, B, 100, 5))
    # the same id in another book is a different order
    check(h.submit(N(1, SL, 90, 2, sym=4, acct=2)), [], [E(1, 1, 2, SL, ACC, R0, 90, 2, 2, sym=4)],
          [D(1, SL, 90, 2, 1, sym=4)])
    # a finished id may be reused
    h.submit(C(1))
    check(h.submit(N(1, SL, 101, 3)), [], [E(3, 1, 1, SL, ACC, R0, 101, 3, 3)], [D(3, SL, 101, 3, 1)])
    assert h.l3() == [O3(SL, 101, 1, 1, 3), O3(SL, 90, 1, 2, 2, sym=4)]
    assert h.levels() == [L(SL, 0, 101, 3, 1), L(SL, 0, 90, 2, 1, sym=4)]


# --------------------------------------------------------------------------- end of session
def test_day_expiry(impl):
    h = Harness(impl)
    h.submit(N(5, SL, 50, 1, sym=2),                 # GTC: survives
             N(6, B, 40, 7, sym=2, tif=DAY),
             N(2, B, 100, 3, sym=1),                 # GTC: survives
             N(1, B, 100, 2, sym=1, tif=DAY),
             N(3, B, 99, 1, sym=1, tif=DAY),
             N(4, SL, 105, 4, sym=1, tif=DAY, po=1))
    check(h.end_session(5000), [],
          [E(6, 1, 1, B, EXP, ES, 100, 2, 0, sym=1, ts=5000),
           E(6, 3, 1, B, EXP, ES, 99, 1, 0, sym=1, ts=5000),
           E(6, 4, 1, SL, EXP, ES, 105, 4, 0, sym=1, ts=5000),
           E(6, 6, 1, B, EXP, ES, 40, 7, 0, sym=2, ts=5000)],
          [D(6, B, 100, 3, 1, sym=1, ts=5000), D(6, B, 99, 0, 0, sym=1, ts=5000),
           D(6, SL, 105, 0, 0, sym=1, ts=5000), D(6, B, 40, 0, 0, sym=2, ts=5000)])
    assert h.l3() == [O3(B, 100, 2, 1, 3, sym=1), O3(SL, 50, 5, 1, 1, sym=2)]
    # nothing left to expire
    check(h.end_session(6000), [], [], [])
    # end_session consumed no seq: the next row is seq 6
    check(h.submit(N(7, B, 50, 1, sym=2, acct=2)), [F(6, 7, 5, 2, 1, B, 50, 1, sym=2)],
          [E(6, 7, 2, B, ACC, R0, 50, 1, 1, sym=2),
           E(6, 5, 1, SL, FIL, R0, 50, 1, 0, sym=2), E(6, 7, 2, B, FIL, R0, 50, 1, 0, sym=2)],
          [D(6, SL, 50, 0, 0, sym=2)])


def test_day_expiry_fifo_within_level(impl):
    h = Harness(impl)
    h.submit(N(3, SL, 100, 1, tif=DAY), N(1, SL, 100, 2), N(2, SL, 100, 3, tif=DAY), N(9, SL, 101, 1, tif=DAY))
    check(h.end_session(7),
          [],
          [E(4, 3, 1, SL, EXP, ES, 100, 1, 0, ts=7), E(4, 2, 1, SL, EXP, ES, 100, 3, 0, ts=7),
           E(4, 9, 1, SL, EXP, ES, 101, 1, 0, ts=7)],
          [D(4, SL, 100, 2, 1, ts=7), D(4, SL, 101, 0, 0, ts=7)])


# --------------------------------------------------------------------------- batching
def test_batch_split_in_two_gives_same_result(impl):
    rows = [N(1, SL, 100, 3), N(2, SL, 101, 2, tif=DAY), N(3, B, 99, 4, acct=2),
            N(4, B, 101, 4, acct=2), R(3, 100, 6, acct=2), C(2), N(5, SL, 99, 9, acct=3, tif=IOC),
            N(6, B, 0, 1, otype=MKT, acct=3), N(1, SL, 100, 1), R(1, 98, 1)]
    h = Harness(impl)
    cols = h.cols(rows)

    def run(batches):
        eng = impl(stp="none")
        res = [eng.submit(b) for b in batches]
        return ([as_rows(concat([r.fills for r in res], S.FILL_COLUMNS), S.FILL_COLUMNS),
                 as_rows(concat([r.events for r in res], S.EVENT_COLUMNS), S.EVENT_COLUMNS),
                 as_rows(concat([r.deltas for r in res], S.DELTA_COLUMNS), S.DELTA_COLUMNS)],
                as_rows(eng.book_levels(), S.LEVEL_COLUMNS), as_rows(eng.book_l3(), S.L3_COLUMNS))

    whole = run([cols])
    # the hand-computed whole run
    assert whole[0][0] == [F(3, 4, 1, 2, 1, B, 100, 3), F(3, 4, 2, 2, 1, B, 101, 1),
                           F(6, 5, 3, 3, 2, SL, 100, 6)]
    assert whole[0][1] == [
        E(0, 1, 1, SL, ACC, R0, 100, 3, 3), E(1, 2, 1, SL, ACC, R0, 101, 2, 2),
        E(2, 3, 2, B, ACC, R0, 99, 4, 4),
        E(3, 4, 2, B, ACC, R0, 101, 4, 4),
        E(3, 1, 1, SL, FIL, R0, 100, 3, 0), E(3, 4, 2, B, PAR, R0, 100, 3, 1),
        E(3, 2, 1, SL, PAR, R0, 101, 1, 1), E(3, 4, 2, B, FIL, R0, 101, 1, 0),
        E(4, 3, 2, B, RPL, R0, 100, 6, 6),
        E(5, 2, 1, SL, CXL, R0, 101, 1, 0),
        E(6, 5, 3, SL, ACC, R0, 99, 9, 9),
        E(6, 3, 2, B, FIL, R0, 100, 6, 0), E(6, 5, 3, SL, PAR, R0, 100, 6, 3),
        E(6, 5, 3, SL, EXP, R0, 99, 3, 0),
        E(7, 6, 3, B, ACC, R0, 0, 1, 1), E(7, 6, 3, B, EXP, R0, 0, 1, 0),
        E(8, 1, 1, SL, ACC, R0, 100, 1, 1),
        E(9, 1, 1, SL, RPL, R0, 98, 1, 1),
    ]
    assert whole[0][2] == [
        D(0, SL, 100, 3, 1), D(1, SL, 101, 2, 1), D(2, B, 99, 4, 1),
        D(3, SL, 100, 0, 0), D(3, SL, 101, 1, 1),
        D(4, B, 99, 0, 0), D(4, B, 100, 6, 1),
        D(5, SL, 101, 0, 0),
        D(6, B, 100, 0, 0),
        D(8, SL, 100, 1, 1),
        D(9, SL, 100, 0, 0), D(9, SL, 98, 1, 1),
    ]
    assert whole[1] == [L(SL, 0, 98, 1, 1)]
    assert whole[2] == [O3(SL, 98, 1, 1, 1)]
    for k in range(len(rows) + 1):
        assert run(split_batches(cols, [k])) == whole, f"split at {k}"
    assert run(split_batches(cols, 1)) == whole
    assert run(split_batches(cols, [0, 3, 0, 4])) == whole
