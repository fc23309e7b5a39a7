"""LOBSTER: the byte-level readers, the replay through the engine's book and its learning rule,
the writer, bad input and the CLI.

The conformance test replays the real AMZN 2012-06-21 level-5 day (../shared/data) and demands
the orderbook file on every row, while checking that what the replay took from the file is only
edge levels (module docstring of hpte.engine.md.lobster). Without the data these tests skip
locally and fail under HPTE_REQUIRE_DATA=1 (CI).

Two independent checks of the replay: ``ref_replay`` below, a plain-Python price-level model of
the same rule (a dict per side), must give the same rows and the same learning log; and
``simulate`` generates LOBSTER-like files from a random *complete* order flow (with orders
resting before the file starts and events beyond the window that LOBSTER leaves out), which the
replay must reproduce on every row.
"""
from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from conftest import require_data
from hpte.cli.main import app
from hpte.engine.md import lobster as L
from hpte.engine.io import InputError

DAY = "lobster_AMZN_2012-06-21_level5"
MSG = f"{DAY}/AMZN_2012-06-21_34200000_57600000_message_5.csv"
OB = f"{DAY}/AMZN_2012-06-21_34200000_57600000_orderbook_5.csv"
ROWS = 155_935


@pytest.fixture(scope="module")
def day():
    msgs = L.read_messages(require_data(MSG))
    book = L.read_orderbook(require_data(OB))
    return msgs, book


@pytest.fixture(scope="module")
def day_replay(day):
    msgs, book = day
    return L.replay(msgs, 5, book)


# ---------------------------------------------------------------------------------------------
# Readers on the real files
# ---------------------------------------------------------------------------------------------
def test_read_messages_real_file(day):
    m, _ = day
    assert len(m) == ROWS and m.error is None
    # first: 34200.017459617,5,0,1,2238200,-1   last: 57599.95935965,3,287174077,100,2206300,-1
    assert [int(m.time_ns[0]), int(m.type[0]), int(m.order_id[0]), int(m.size[0]), int(m.price[0]),
            int(m.direction[0])] == [34_200_017_459_617, 5, 0, 1, 2_238_200, -1]
    assert [int(m.time_ns[-1]), int(m.type[-1]), int(m.order_id[-1]), int(m.size[-1]), int(m.price[-1]),
            int(m.direction[-1])] == [57_599_959_359_650, 3, 287_174_077, 100, 2_206_300, -1]
    # line 67,823 has 12 decimals (43002.632812672004): truncated to ns, never through a float
    assert int(m.time_ns[67_822]) == 43_002_632_812_672
    # line 120,992 has 3 decimals (53142.439)
    assert int(m.time_ns[120_991]) == 53_142_439_000_000
    assert {k: int(np.count_nonzero(m.type == k)) for k in range(1, 8)} == {
        1: 77_381, 2: 450, 3: 66_685, 4: 8_974, 5: 2_445, 6: 0, 7: 0}
    assert int(np.count_nonzero(m.direction == 1)) == 76_585
    assert int(np.count_nonzero(m.direction == -1)) == 79_350
    assert np.all(np.diff(m.time_ns) >= 0)
    assert m.time_ns.dtype == np.int64 and m.type.dtype == np.int8 and m.price.dtype == np.int64


def test_read_orderbook_real_file(day):
    _, b = day
    assert len(b) == ROWS and b.levels == 5 and b.rows.shape == (ROWS, 20)
    assert b.rows[0].tolist() == [2239500, 100, 2231800, 100, 2239900, 100, 2230700, 200, 2240000, 220,
                                  2230400, 100, 2242500, 100, 2230000, 10, 2244000, 547, 2226200, 100]
    # the data README prints the last line with its final field cut to "170"; the file (and the
    # replay) end in 1704
    assert b.rows[-1].tolist() == [2206400, 100, 2205100, 249, 2206500, 1290, 2205000, 71, 2206700, 170,
                                   2204800, 700, 2207100, 1800, 2204700, 100, 2207400, 800, 2204600, 1704]
    assert b.columns()["bid_size_5"][-1] == 1704 and b.ask_price.shape == (ROWS, 5)


@pytest.mark.parametrize("text, ns", [
    ("34200.017459617", 34_200_017_459_617),
    ("53142.439", 53_142_439_000_000),
    ("57599.95935965", 57_599_959_359_650),
    ("43002.632812672004", 43_002_632_812_672),
    ("1.9999999999", 1_999_999_999),       # truncated, not rounded
    ("7", 7_000_000_000),
    ("0.000000001", 1),
])
def test_time_parsed_exactly(text, ns):
    m = L.parse_messages(f"{text},5,0,1,100,1\n".encode())
    assert int(m.time_ns[0]) == ns


def test_orderbook_format_roundtrip_with_empty_levels():
    rows = np.array([[1010, 5, 1000, 7, L.EMPTY_ASK_PX, 0, 990, 3],
                     [L.EMPTY_ASK_PX, 0, L.EMPTY_BID_PX, 0, L.EMPTY_ASK_PX, 0, L.EMPTY_BID_PX, 0]], np.int64)
    text = L.format_orderbook(rows)
    assert text == b"1010,5,1000,7,9999999999,0,990,3\n9999999999,0,-9999999999,0,9999999999,0,-9999999999,0\n"
    back = L.parse_orderbook(text)
    assert back.levels == 2 and np.array_equal(back.rows, rows)
    assert np.array_equal(L.parse_orderbook(text.replace(b"\n", b"\r\n")).rows, rows)


# ---------------------------------------------------------------------------------------------
# Bad input: a LobsterError (an InputError, so a ValueError) naming the line
# ---------------------------------------------------------------------------------------------
GOOD = b"34200.1,1,11,100,2238100,1\n34200.2,1,12,50,2239600,-1\n"


@pytest.mark.parametrize("bad, line, words", [
    (GOOD + b"34200.3,1,13,100,2238100\n", 3, "expected 6 columns, found 5"),
    (GOOD + b"34200.3,1,13,100,2238100,1,9\n", 3, "expected 6 columns, found 7"),
    (GOOD + b"34200.3,9,13,100,2238100,1\n", 3, "unknown event type 9"),
    (GOOD + b"34200.3,1,13,1x0,2238100,1\n", 3, "column 4 (size) is not a number: '1x0'"),
    (GOOD + b"34200.3,1,13,100,,1\n", 3, "column 5 (price) is not a number"),
    (b"34200.1,1,11,100,2238100,1\nabc,1,13,100,2238100,1\n", 2, "column 1 (time) is not a number: 'abc'"),
    (GOOD + b"34200.3,1,13,100,2238100,0\n", 3, "direction 0 is not 1 or -1"),
    (GOOD + b"34200.3,1,13,0,2238100,1\n", 3, "size 0 must be positive"),
    (GOOD + b"34200.3,3,-13,10,2238100,1\n", 3, "order id -13 is negative"),
    (GOOD + b"34200.0,1,13,100,2238100,1\n", 3, "earlier than the previous line"),
    (GOOD + b"\n34200.3,1,13,100,2238100,1\n", 3, "expected 6 columns, found 1"),
    (GOOD + b"34200.3,1,1234567890123456789012,100,2238100,1\n", 3, "too many digits"),
])
def test_bad_messages_name_the_line(bad, line, words):
    with pytest.raises(L.LobsterError) as ei:
        L.parse_messages(bad, name="m.csv")
    e = ei.value
    assert isinstance(e, InputError) and isinstance(e, ValueError)
    assert e.line == line
    assert str(e).startswith(f"m.csv: line {line}: ") and words in str(e), str(e)
    kept = L.parse_messages(bad, name="m.csv", keep_valid=True)
    assert len(kept) == line - 1 and kept.stopped_at == line and words in kept.error
    assert kept.order_id.tolist() == [11, 12][: line - 1]


def test_bad_orderbook_names_the_line():
    good = b"1010,5,1000,7\n1010,5,1000,8\n"
    with pytest.raises(L.LobsterError, match=r"ob.csv: line 3: expected 4 columns, found 3"):
        L.parse_orderbook(good + b"1010,5,1000\n", name="ob.csv")
    with pytest.raises(L.LobsterError, match=r"ob.csv: line 2: column 2 \(ask_size_1\) is not a number: '5.5'"):
        L.parse_orderbook(b"1010,5,1000,7\n1010,5.5,1000,7\n", name="ob.csv")
    with pytest.raises(L.LobsterError, match=r"line 1: expected 4 columns per level, found 3"):
        L.parse_orderbook(b"1010,5,1000\n", name="ob.csv")
    kept = L.parse_orderbook(good + b"x,5,1000,7\n", keep_valid=True)
    assert len(kept) == 2 and kept.stopped_at == 3


def test_read_missing_file(tmp_path):
    with pytest.raises(L.LobsterError, match="no such file"):
        L.read_messages(tmp_path / "nope.csv")


# ---------------------------------------------------------------------------------------------
# Replay semantics on small hand-made days (levels N = 2)
# ---------------------------------------------------------------------------------------------
A, B = L.EMPTY_ASK_PX, L.EMPTY_BID_PX


def _msgs(rows):
    return L.parse_messages("".join(f"{34200 + i}.5,{t},{o},{s},{p},{d}\n"
                                    for i, (t, o, s, p, d) in enumerate(rows)).encode())


def test_replay_types_without_orderbook():
    m = _msgs([
        (1, 1, 100, 1000, 1),    # bid 1000 x100
        (1, 2, 50, 1010, -1),    # ask 1010 x50
        (1, 3, 30, 1000, 1),     # bid 1000 x130
        (2, 1, 40, 1000, 1),     # partial cancel id 1: 60 left
        (4, 2, 50, 1010, -1),    # full execution of id 2: ask side empty
        (5, 0, 10, 1005, -1),    # hidden execution: nothing
        (1, 4, 20, 990, 1),      # second bid level
        (3, 3, 30, 1000, 1),     # delete id 3
        (4, 1, 10, 1000, 1),     # partial execution of id 1: 50 left
    ])
    r = L.replay(m, 2)
    assert r.rows.tolist() == [
        [A, 0, 1000, 100, A, 0, B, 0],
        [1010, 50, 1000, 100, A, 0, B, 0],
        [1010, 50, 1000, 130, A, 0, B, 0],
        [1010, 50, 1000, 90, A, 0, B, 0],
        [A, 0, 1000, 90, A, 0, B, 0],
        [A, 0, 1000, 90, A, 0, B, 0],
        [A, 0, 1000, 90, A, 0, 990, 20],
        [A, 0, 1000, 60, A, 0, 990, 20],
        [A, 0, 1000, 50, A, 0, 990, 20],
    ]
    assert r.learned_levels == 0 and r.mismatched_rows is None
    # the rows are the engine's book: its L3 holds exactly the surviving message orders
    l3 = r.engine.book_l3()
    assert sorted(zip(l3["order_id"].tolist(), l3["qty"].tolist())) == [(1, 50), (4, 20)]


def test_replay_learns_only_edge_levels():
    m = _msgs([
        (5, 0, 1, 1005, 1),      # row 1: hidden execution; the whole pre-existing book is learned
        (3, 77, 50, 1010, -1),   # row 2: unknown id deletes ask 1010 -> 1030 enters from beyond
        (1, 5, 10, 1015, -1),    # row 3: new ask level 1015 pushes 1030 out again
        (3, 5, 10, 1015, -1),    # row 4: 1030 re-enters with the quantity the replay remembers
        (4, 88, 40, 1000, 1),    # row 5: executes 40 of the seeded (pre-existing) bid 1000
        (3, 99, 60, 1000, 1),    # row 6: bid 1000 gone; 980 enters (990 x 20 is still there)
    ])
    book = L.LobsterBook(np.array([
        [1010, 50, 1000, 100, 1020, 30, 990, 20],
        [1020, 30, 1000, 100, 1030, 25, 990, 20],
        [1015, 10, 1000, 100, 1020, 30, 990, 20],
        [1020, 30, 1000, 100, 1030, 25, 990, 20],
        [1020, 30, 1000, 60, 1030, 25, 990, 20],
        [1020, 30, 990, 20, 1030, 25, 980, 70],
    ], np.int64), 2, path="ob")
    r = L.replay(m, 2, book)
    assert r.mismatched_rows == 0 and np.array_equal(r.rows, book.rows)
    log = list(zip(*(r.learned[k].tolist() for k in ("row", "side", "price", "before", "after"))))
    assert log == [
        (0, 1, 1000, 0, 100), (0, 1, 990, 0, 20), (0, -1, 1010, 0, 50), (0, -1, 1020, 0, 30),
        (1, -1, 1030, 0, 25),
        (5, 1, 980, 0, 70),
    ]
    assert r.stats["unknown_id_reductions"] == 3 and r.stats["qty_from_seeds"] == 150
    assert r.stats["learned_rows"] == 3


def test_replay_removes_stale_levels_and_reports_inside_mismatches():
    m = _msgs([
        (1, 1, 10, 1000, 1),     # row 1: bid 1000 (learned: 990 x 5)
        (1, 2, 10, 1001, 1),     # row 2: 1001 pushes 990 beyond level 2
        (3, 2, 10, 1001, 1),     # row 3: 990 re-enters; the file says its orders left unseen
    ])
    book = L.LobsterBook(np.array([
        [A, 0, 1000, 10, A, 0, 990, 5],
        [A, 0, 1001, 10, A, 0, 1000, 10],
        [A, 0, 1000, 10, A, 0, B, 0],
    ], np.int64), 2, path="ob")
    r = L.replay(m, 2, book)
    assert r.mismatched_rows == 0
    assert r.learned["price"].tolist() == [990, 990] and r.learned["after"].tolist() == [5, 0]
    # a disagreement inside the visible window is reported, never copied
    bad = L.LobsterBook(book.rows.copy(), 2, path="ob")
    bad.rows[1, 3] = 11  # bid 1001 x 11 instead of 10: not learnable (better than row 1's levels)
    r2 = L.replay(m, 2, bad)
    assert r2.mismatched_rows == 1 and r2.first_mismatch == 1
    assert r2.rows[1, 3] == 10 and r2.learned["price"].tolist() == [990, 990]


def test_replay_argument_errors():
    m = _msgs([(1, 1, 10, 1000, 1)])
    with pytest.raises(L.LobsterError, match="1 levels, fewer than the 2"):
        L.replay(m, 2, L.LobsterBook(np.array([[A, 0, 1000, 10]], np.int64), 1, path="ob"))
    with pytest.raises(L.LobsterError, match="2 rows, but the message file has 1"):
        L.replay(m, 1, L.LobsterBook(np.array([[A, 0, 1000, 10]] * 2, np.int64), 1, path="ob"))
    with pytest.raises(ValueError, match="levels must be >= 1"):
        L.replay(m, 0)


# ---------------------------------------------------------------------------------------------
# Conformance: the AMZN day
# ---------------------------------------------------------------------------------------------
def test_replay_amzn_day_equals_orderbook_on_every_row(day, day_replay):
    msgs, book = day
    r = day_replay
    assert r.rows.shape == (ROWS, 20)
    assert r.mismatched_rows == 0 and r.first_mismatch is None
    assert np.array_equal(r.rows, book.rows)
    # the engine's own book after the last message is the last row
    lv = r.engine.book_levels(5)
    bids = lv["side"] == 1
    assert lv["price_ticks"][bids].tolist() == book.bid_price[-1].tolist()
    assert lv["qty"][~bids].tolist() == book.ask_size[-1].tolist()
    # nothing had to be forced: every reduction found its shares, no new order crossed
    assert r.stats["qty_missing"] == 0 and r.stats["uncrossed_levels"] == 0
    assert r.stats["engine_rows"] > ROWS - 2_445  # every visible message reached the engine


def test_replay_amzn_learns_only_edge_levels(day_replay):
    r = day_replay
    lg = r.learned
    n_learned = r.learned_levels
    # reported, and far below the row count (about 15,300 levels on about 12,050 rows)
    assert 0 < n_learned < ROWS // 8 and r.stats["learned_levels"] == n_learned
    assert r.stats["learned_rows"] < ROWS // 10
    # row 1 (the book before 09:30): all 10 levels
    assert int(np.count_nonzero(lg["row"] == 0)) == 10
    # every other learned level lies strictly beyond the replay's own 5th level of the row
    # before, on its side (rows are the engine's output, so this checks the rule end to end)
    later = lg["row"] > 0
    prev = r.rows[lg["row"][later] - 1]
    side = lg["side"][later]
    px = lg["price"][later]
    worst_bid, worst_ask = prev[:, 4 * 4 + 2], prev[:, 4 * 4]
    assert np.all(np.where(side == 1, px < worst_bid, px > worst_ask))
    # and what was learned is exactly what the file shows there (or a stale level removed)
    assert np.all(lg["before"] != lg["after"])


def test_replay_never_copies_the_file(day):
    """Perturb a level inside the window: the replay keeps its own value and reports the row."""
    msgs, book = day
    n = 20_000
    rows = book.rows[:n].copy()
    rows[10_000, 1] += 7  # ask size at level 1, visible at row 10,000 (0-based 9,999)
    r = L.replay(msgs.head(n), 5, L.LobsterBook(rows, 5, path="perturbed"))
    assert r.first_mismatch == 10_000 and r.mismatched_rows >= 1
    assert np.array_equal(r.rows[10_000], book.rows[10_000])


def test_replay_without_orderbook_is_delta_consistent(day):
    """No file to learn from: every row whose visible prices do not change (the window edge
    is not involved) differs from the row before by exactly the message's size at its price."""
    msgs, book = day
    r = L.replay(msgs, 5)
    assert r.learned_levels == 0 and r.mismatched_rows is None

    def check(R):
        prev, cur = R[:-1], R[1:]
        same = np.all(prev[:, 0::2] == cur[:, 0::2], axis=1)
        t, p, s, d = msgs.type[1:], msgs.price[1:], msgs.size[1:], msgs.direction[1:]
        vis = (t >= 1) & (t <= 4)
        idx = np.arange(len(t))
        pxcol = np.where(d == 1, 2, 0)
        exp = prev.copy()
        hit = np.zeros(len(t), bool)
        for k in range(5):
            at = vis & (prev[idx, 4 * k + pxcol] == p)
            exp[idx[at], 4 * k + pxcol[at] + 1] += np.where(t[at] == 1, 1, -1) * s[at]
            hit |= at
        sel = same & (~vis | hit)
        return int(sel.sum()), bool(np.array_equal(exp[sel], cur[sel]))

    checked, ok = check(r.rows)
    assert ok and checked > 0.4 * ROWS
    file_checked, file_ok = check(book.rows)  # the property the file itself has
    assert file_ok and file_checked > 0.5 * ROWS


# ---------------------------------------------------------------------------------------------
# A plain-Python reference of the rule, and LOBSTER-like files from random complete order flow
# ---------------------------------------------------------------------------------------------
def ref_replay(msgs, N, E=None):
    """The replay at price-level granularity: (rows, learning log as (row, side, price, before,
    after) tuples). Which orders hold a level's quantity does not change the rows or the log."""
    book = {1: {}, -1: {}}
    worst = {1: None, -1: None}  # the previous row's N-th price, None: the side had fewer
    rows, log = [], []
    for i in range(len(msgs)):
        t, p, s, d = int(msgs.type[i]), int(msgs.price[i]), int(msgs.size[i]), int(msgs.direction[i])
        if t == 1:
            for q in [q for q in book[-d] if (q <= p if d == 1 else q >= p)]:
                del book[-d][q]  # stale levels a new order would cross (never on real files)
            book[d][p] = book[d].get(p, 0) + s
        elif 2 <= t <= 4:
            q = book[d].get(p, 0) - s
            if q > 0:
                book[d][p] = q
            else:
                book[d].pop(p, None)
        tops = {}
        for side, pc, qc, empty in ((1, 2, 3, A and B), (-1, 0, 1, A)):
            lv = book[side]

            def region(q, side=side):
                if i == 0:
                    return True
                w = worst[side]
                return w is not None and (q < w if side == 1 else q > w)

            def top(lv=lv, side=side):
                return sorted(lv, reverse=side == 1)[:N]
            if E is not None:
                filed = [(int(E[i, 4 * k + pc]), int(E[i, 4 * k + qc])) for k in range(N)]
                filed = [(fp, fq) for fp, fq in filed if fp not in (A, B)]
                for fp, fq in filed:
                    if region(fp) and lv.get(fp, 0) != fq:
                        log.append((i, side, fp, lv.get(fp, 0), fq))
                        lv[fp] = fq
                prices = {fp for fp, _ in filed}
                while True:
                    stale = [q for q in top() if region(q) and q not in prices]
                    if not stale:
                        break
                    log.append((i, side, stale[0], lv[stale[0]], 0))
                    del lv[stale[0]]
            tops[side] = top()
        for side in (1, -1):
            worst[side] = tops[side][N - 1] if len(tops[side]) == N else None
        row = []
        for k in range(N):
            a = tops[-1][k] if k < len(tops[-1]) else None
            b = tops[1][k] if k < len(tops[1]) else None
            row += [A if a is None else a, 0 if a is None else book[-1][a],
                    B if b is None else b, 0 if b is None else book[1][b]]
        rows.append(row)
    return np.array(rows, np.int64).reshape(len(msgs), 4 * N), log


def simulate(seed: int, n_events: int = 300, N: int = 2, preexisting: int = 12):
    """LOBSTER-like message and orderbook bytes from a random complete order flow.

    Orders rest before the file starts; an event is written only when it changes the book
    within the top N (its price is among the side's N best before or after it) or is a hidden
    execution (type 5), as LOBSTER does. Row i = the true top N after message i.
    """
    rng = random.Random(seed)
    orders = {}                      # id -> [side, price, qty]
    fifo = {1: {}, -1: {}}           # side -> price -> [ids in time priority]
    nid = [1]

    def best(side):
        lv = fifo[side]
        return (max(lv) if side == 1 else min(lv)) if lv else None

    def topn(side):
        return sorted(fifo[side], reverse=side == 1)[:N]

    def add(side, price, qty):
        oid = nid[0]
        nid[0] += rng.randint(1, 3)
        orders[oid] = [side, price, qty]
        fifo[side].setdefault(price, []).append(oid)
        return oid

    def reduce(oid, qty):
        side, price, q = orders[oid]
        if qty >= q:
            del orders[oid]
            fifo[side][price].remove(oid)
            if not fifo[side][price]:
                del fifo[side][price]
        else:
            orders[oid][2] = q - qty

    def free_price(side):
        bb, ba = best(1), best(-1)
        if side == 1:
            hi = (ba - 100) if ba is not None else 10_100
            return rng.randrange(max(hi - 1_500, 100), hi + 1, 100)
        lo = (bb + 100) if bb is not None else 10_000
        return rng.randrange(lo, lo + 1_501, 100)

    for _ in range(preexisting):
        side = rng.choice((1, -1))
        add(side, free_price(side), rng.randint(1, 50))
    msg, ob = [], []
    t = 34_200 * 10**9
    for _ in range(n_events):
        t += rng.randint(0, 5_000_000)
        u = rng.random()
        before = {1: topn(1), -1: topn(-1)}
        if u < 0.45 or not orders:
            side = rng.choice((1, -1))
            price, qty = free_price(side), rng.randint(1, 50)
            ev = (1, add(side, price, qty), qty, price, side)
        elif u < 0.70:
            oid = rng.choice(list(orders))
            side, price, q = orders[oid]
            reduce(oid, q)
            ev = (3, oid, q, price, side)
        elif u < 0.80:
            oid = rng.choice([o for o, v in orders.items() if v[2] > 1] or [None])
            if oid is None:
                continue
            side, price, q = orders[oid]
            r = rng.randint(1, q - 1)
            reduce(oid, r)
            ev = (2, oid, r, price, side)
        elif u < 0.95:
            side = rng.choice([s for s in (1, -1) if fifo[s]])
            price = best(side)
            oid = fifo[side][price][0]
            r = rng.randint(1, orders[oid][2])
            reduce(oid, r)
            ev = (4, oid, r, price, side)
        else:
            ev = (5, 0, rng.randint(1, 20), 10_050, rng.choice((1, -1)))
        kind, oid, qty, price, side = ev
        after = {1: topn(1), -1: topn(-1)}
        if kind != 5 and price not in before[side] and price not in after[side]:
            continue  # outside the window: LOBSTER leaves it out
        msg.append(f"{t // 10**9}.{t % 10**9:09d},{kind},{oid},{qty},{price},{side}\n")
        row = []
        for k in range(N):
            a = after[-1][k] if k < len(after[-1]) else None
            b = after[1][k] if k < len(after[1]) else None
            row += [A if a is None else a, 0 if a is None else sum(orders[o][2] for o in fifo[-1][a]),
                    B if b is None else b, 0 if b is None else sum(orders[o][2] for o in fifo[1][b])]
        ob.append(",".join(map(str, row)) + "\n")
    return "".join(msg).encode(), "".join(ob).encode()


@given(st.integers(0, 2**32 - 1), st.sampled_from([1, 2, 3]))
def test_replay_reproduces_simulated_lobster_files(seed, N):
    mb, obb = simulate(seed, N=N)
    msgs = L.parse_messages(mb)
    book = L.parse_orderbook(obb, levels=N)
    r = L.replay(msgs, N, book, chunk_messages=97)
    assert r.mismatched_rows == 0 and L.format_orderbook(r.rows) == obb
    ref_rows, ref_log = ref_replay(msgs, N, book.rows)
    assert np.array_equal(r.rows, ref_rows)
    log = list(zip(*(r.learned[k].tolist() for k in ("row", "side", "price", "before", "after"))))
    assert log == ref_log
    # only a first message that reduces a level can miss shares: nothing is known before row 1
    first_reduces = 2 <= int(msgs.type[0]) <= 4
    assert r.stats["qty_missing"] == (int(msgs.size[0]) if first_reduces else 0)
    assert r.stats["uncrossed_levels"] == 0
    # without the file: the reference model of the messages alone
    r0 = L.replay(msgs, N)
    assert np.array_equal(r0.rows, ref_replay(msgs, N)[0])


def test_replay_matches_reference_on_amzn_prefix(day, monkeypatch):
    msgs, book = day
    n = 12_000
    grown = []
    grow = L._grow_rows
    monkeypatch.setattr(L, "_grow_rows", lambda a, cap: grown.append(cap) or grow(a, cap))
    r = L.replay(msgs.head(n), 5, book.head(n), chunk_messages=777)
    assert grown  # the learning log's buffer had to grow on the way
    ref_rows, ref_log = ref_replay(msgs.head(n), 5, book.rows[:n])
    assert np.array_equal(r.rows, ref_rows) and np.array_equal(r.rows, book.rows[:n])
    log = list(zip(*(r.learned[k].tolist() for k in ("row", "side", "price", "before", "after"))))
    assert log == ref_log and len(log) > 500


def test_replay_chunking_does_not_change_anything(day):
    msgs, book = day
    m, b = msgs.head(3_000), book.head(3_000)
    base = L.replay(m, 5, b)
    assert base.stats["engine_calls"] == 1
    for chunk in (1, 7, 1_000):  # 1: the engine-row buffer (2 rows + 1024) must grow too
        r = L.replay(m, 5, b, chunk_messages=chunk)
        assert np.array_equal(r.rows, base.rows) and r.mismatched_rows == 0
        assert all(np.array_equal(r.learned[k], base.learned[k]) for k in base.learned)
        assert r.stats["engine_rows"] == base.stats["engine_rows"]


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def test_cli_replay_amzn_byte_identical(tmp_path):
    msg, ob = require_data(MSG), require_data(OB)
    out = tmp_path / "book.csv"
    res = CliRunner().invoke(app, ["md", "lobster", "replay", str(msg), "--levels", "5", "--orderbook", str(ob),
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert out.read_bytes() == ob.read_bytes()
    assert f"conformance: all {ROWS:,} rows equal" in res.output and "learned " in res.output


def test_cli_replay_bad_file_one_line_error(tmp_path):
    bad = tmp_path / "m.csv"
    bad.write_bytes(GOOD + b"34200.3,8,13,100,2238100,1\n")
    out = tmp_path / "o.csv"
    res = CliRunner().invoke(app, ["md", "lobster", "replay", str(bad), "--levels", "2", "--out", str(out)])
    assert res.exit_code == 1
    lines = [x for x in res.output.splitlines() if x.strip()]
    assert lines == [f"error: {bad}: line 3: unknown event type 8 (LOBSTER types are 1 to 7): "
                     f"'34200.3,8,13,100,2238100,1'"]
    assert not out.exists()
    res = CliRunner().invoke(app, ["md", "lobster", "replay", str(bad), "--levels", "2", "--out", str(out),
                                   "--keep-valid"])
    assert res.exit_code == 0, res.output
    assert out.read_bytes() == b"9999999999,0,2238100,100,9999999999,0,-9999999999,0\n" \
                               b"2239600,50,2238100,100,9999999999,0,-9999999999,0\n"


def test_cli_replay_reports_mismatch(tmp_path):
    m = tmp_path / "m.csv"
    m.write_bytes(GOOD)
    ob = tmp_path / "ob.csv"
    ob.write_bytes(b"9999999999,0,2238100,100\n2239600,51,2238100,100\n")  # 51: not learnable
    res = CliRunner().invoke(app, ["md", "lobster", "replay", str(m), "--levels", "1", "--orderbook", str(ob),
                                   "--out", str(tmp_path / "o.csv")])
    assert res.exit_code == 1
    assert "error: 1 of 2 rows differ" in res.output and "first at line 2" in res.output


def test_cli_parse_to_parquet_and_bars(tmp_path):
    """One command turns the LOBSTER day into Parquet; its trades feed `hpte md bars`."""
    import pyarrow.parquet as pq
    from typer.testing import CliRunner

    from hpte.cli.main import app

    msg = require_data("lobster_AMZN_2012-06-21_level5/AMZN_2012-06-21_34200000_57600000_message_5.csv")
    ob = require_data("lobster_AMZN_2012-06-21_level5/AMZN_2012-06-21_34200000_57600000_orderbook_5.csv")
    runner = CliRunner()
    r = runner.invoke(app, ["md", "lobster", "parse", str(msg), "--orderbook", str(ob), "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    m = pq.read_table(tmp_path / "messages.parquet")
    assert m.num_rows == 155_935
    assert m.column("time_ns")[0].as_py() == 34_200_017_459_617
    t = pq.read_table(tmp_path / "trades.parquet")
    assert t.num_rows == 8_974 + 2_445          # visible + hidden executions (data README)
    assert pq.read_table(tmp_path / "orderbook.parquet").num_rows == 155_935
    r = runner.invoke(app, ["md", "bars", str(tmp_path / "trades.parquet"), "--every", "1m",
                            "--out", str(tmp_path / "bars.parquet"), "--quiet"])
    assert r.exit_code == 0, r.output
    bars = pq.read_table(tmp_path / "bars.parquet")
    assert bars.num_rows > 300 and sum(bars.column("volume").to_pylist()) == sum(t.column("qty").to_pylist())
    r = runner.invoke(app, ["md", "lobster", "parse", str(tmp_path / "nope.csv"), "--out", str(tmp_path)])
    assert r.exit_code == 1 and "error:" in r.output and "Traceback" not in r.output
