"""Risk checks and circuit breakers inside the matching kernel (Engine(risk=...)).

Scenarios computed by hand (each limit through matching, price bands and limit state, velocity
pause, reopening auction, market-wide halt, kill switch) and properties on random flows: any batch
size gives the same outputs, the risk state's open orders are the book, positions follow the
fills, no fill prints outside the band or while a symbol is paused, every reopening auction price
equals a brute-force search, the same input replays to the same outputs."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference.auction_ref import uncross_ref
from strategies import random_stream, run_batches, split_batches

from hpte.engine import schema as S
from hpte.engine.engine import Engine
from hpte.engine.risk.limits import RiskLimits
from hpte.kernels.risk import breaker as KB
from hpte.kernels.risk.checks import S_LAST, S_STATIC

ODT = {n: t for n, t, _, _ in S.ORDER_COLUMNS}


def rows(*rs: dict) -> dict:
    """Order columns from row dicts (defaults: NEW LIMIT GTC, account 1, symbol 1)."""
    base = {"ts_ns": 0, "order_id": 0, "side": 1, "price_ticks": 100, "qty": 1, "action": 0,
            "order_type": 0, "tif": 0, "account": 1, "symbol": 1, "post_only": 0}
    full = [{**base, **r} for r in rs]
    return {k: np.array([r[k] for r in full], ODT[k]) for k in base}


def events(res) -> list[tuple]:
    """(order_id, EVENT, REASON, price, qty, leaves) of each event row, in order."""
    e = res.events
    return [(int(e["order_id"][k]), S.EVENT_NAMES[int(e["event"][k])], S.REASON_NAMES[int(e["reason"][k])],
             int(e["price_ticks"][k]), int(e["qty"][k]), int(e["leaves_qty"][k])) for k in range(e.n_rows)]


def fills(res) -> list[tuple]:
    f = res.fills
    return [(int(f["taker_order_id"][k]), int(f["maker_order_id"][k]), int(f["taker_side"][k]),
             int(f["price_ticks"][k]), int(f["qty"][k])) for k in range(f.n_rows)]


def engine(toml: str, **kw) -> Engine:
    return Engine(risk=RiskLimits.from_toml(toml), **kw)


# --- limits through matching ----------------------------------------------------------------------
def test_max_order_qty_at_below_above_through_matching():
    e = engine("[defaults]\nmax_order_qty = 10")
    r = e.submit(rows({"order_id": 1, "qty": 9}, {"order_id": 2, "qty": 10}, {"order_id": 3, "qty": 11}))
    ev = events(r)
    assert [x[1:3] for x in ev] == [("ACCEPTED", ""), ("ACCEPTED", ""), ("REJECTED", "MAX_ORDER_QTY")]
    assert sorted(e.book_l3()["order_id"].tolist()) == [1, 2]


def test_max_position_counts_fills_of_earlier_rows_in_the_same_batch():
    # account 2 buys 6 from account 1's resting sell; its worst-case long is then 6 + open buys
    e = engine("[defaults]\nmax_position = 10")
    r = e.submit(rows(
        {"order_id": 1, "side": -1, "qty": 6, "account": 1},
        {"order_id": 2, "side": 1, "qty": 6, "account": 2, "tif": 1},       # fills 6: position +6
        {"order_id": 3, "side": 1, "qty": 4, "account": 2, "price_ticks": 90},   # 6 + 4 = 10: ok
        {"order_id": 4, "side": 1, "qty": 1, "account": 2, "price_ticks": 90},   # 11 > 10
        {"order_id": 5, "side": -1, "qty": 17, "account": 2, "price_ticks": 120},  # -6 + ... sells: 17 - 6 = 11 > 10
        {"order_id": 6, "side": -1, "qty": 16, "account": 2, "price_ticks": 120},  # 16 - 6 = 10: ok
    ))
    got = [(x[0], x[1], x[2]) for x in events(r) if x[1] in ("ACCEPTED", "REJECTED")]
    assert got == [(1, "ACCEPTED", ""), (2, "ACCEPTED", ""), (3, "ACCEPTED", ""),
                   (4, "REJECTED", "MAX_POSITION"), (5, "REJECTED", "MAX_POSITION"), (6, "ACCEPTED", "")]
    p = e.risk.positions()
    k = list(p["account"]).index(2)
    assert p["position"][k] == 6 and p["open_buy"][k] == 4 and p["open_sell"][k] == 16
    assert p["avg_price"][k] == 100.0


def test_open_orders_freed_by_fills_cancels_and_expiry():
    e = engine("[defaults]\nmax_open_orders = 1")
    r = e.submit(rows(
        {"order_id": 1, "side": -1, "account": 1},
        {"order_id": 2, "side": -1, "account": 1, "price_ticks": 101},         # second open: rejected
        {"order_id": 3, "side": 1, "account": 2, "tif": 1},                     # fills order 1
        {"order_id": 4, "side": -1, "account": 1, "price_ticks": 101},         # 1 is gone: ok
        {"order_id": 4, "action": 1, "account": 1},                             # cancel
        {"order_id": 5, "side": -1, "account": 1, "price_ticks": 102, "tif": 1},  # IOC, expires
        {"order_id": 6, "side": -1, "account": 1, "price_ticks": 102},
    ))
    got = [(x[0], x[1], x[2]) for x in events(r) if x[1] in ("ACCEPTED", "REJECTED")]
    assert got == [(1, "ACCEPTED", ""), (2, "REJECTED", "MAX_OPEN_ORDERS"), (3, "ACCEPTED", ""),
                   (4, "ACCEPTED", ""), (5, "ACCEPTED", ""), (6, "ACCEPTED", "")]
    assert int(e.risk.accounts()["open_orders"][0]) == 1


def test_price_collar_uses_last_trade_then_mid_then_static():
    e = engine("[defaults]\nprice_collar_bps = 1000\n[symbols.1]\nreference_price_ticks = 200")
    r = e.submit(rows({"order_id": 1, "price_ticks": 180}, {"order_id": 2, "price_ticks": 179}))
    assert [x[2] for x in events(r)] == ["", "PRICE_COLLAR"]          # static 200: [180, 220]
    r = e.submit(rows({"order_id": 3, "side": -1, "price_ticks": 190}, {"order_id": 4, "price_ticks": 170}))
    assert [x[2] for x in events(r)] == ["", ""]                       # mid 185: [166.5, 203.5]
    r = e.submit(rows({"order_id": 5, "price_ticks": 190, "tif": 1}, {"order_id": 6, "price_ticks": 170},
                      {"order_id": 7, "price_ticks": 171}))
    assert ("REJECTED", "PRICE_COLLAR") in [x[1:3] for x in events(r) if x[0] == 6]   # last 190: [171, 209]
    assert ("ACCEPTED", "") in [x[1:3] for x in events(r) if x[0] == 7]


def test_message_rate_over_order_timestamps():
    e = engine("[defaults]\nmax_orders_per_second = 2")
    r = e.submit(rows({"order_id": 1, "ts_ns": 0}, {"order_id": 2, "ts_ns": 1}, {"order_id": 3, "ts_ns": 2},
                      {"order_id": 4, "ts_ns": 500_000_002}))
    assert [x[2] for x in events(r)] == ["", "", "MAX_ORDERS_PER_SECOND", ""]


def test_permissions_and_reject_names_in_the_events_file(tmp_path):
    e = engine("[accounts.1]\nsymbols = [2]")
    r = e.submit(rows({"order_id": 1, "symbol": 1}, {"order_id": 2, "symbol": 2}))
    assert [x[2] for x in events(r)] == ["NOT_PERMITTED", ""]


# --- kill switch --------------------------------------------------------------------------------
def test_kill_switch_cancels_resting_orders_and_blocks_new_ones():
    e = engine("")
    e.submit(rows({"order_id": 1, "account": 1}, {"order_id": 2, "account": 2, "price_ticks": 99},
                  {"order_id": 3, "account": 1, "side": -1, "price_ticks": 105, "symbol": 2}))
    r = e.set_kill(True, account=1, ts_ns=10)
    assert sorted((x[0], x[1], x[2]) for x in events(r)) == [(1, "CANCELLED", "KILL_SWITCH"),
                                                             (3, "CANCELLED", "KILL_SWITCH")]
    l3 = e.book_l3()
    assert 1 not in l3["account"].tolist() and l3["order_id"].tolist() == [2]
    acc = e.risk.accounts()
    assert int(acc["open_orders"][list(acc["account"]).index(1)]) == 0
    r = e.submit(rows({"ts_ns": 11, "order_id": 4, "account": 1}, {"ts_ns": 12, "order_id": 5, "account": 2}))
    assert [x[2] for x in events(r)][:2] == ["KILL_SWITCH", ""]
    e.set_kill(False, account=1, ts_ns=13)
    r = e.submit(rows({"ts_ns": 14, "order_id": 6, "account": 1, "price_ticks": 90}))
    assert events(r)[0][1] == "ACCEPTED"
    r = e.set_kill(True, ts_ns=15)                                    # global: every resting order
    assert len(r.events["order_id"]) == 3 and e.book_l3()["order_id"].size == 0
    assert e.risk.open_orders()["order_id"].size == 0


# --- bands, limit state, pause, auction --------------------------------------------------------------
BREAKERS = """
[symbols.1]
reference_price_ticks = 100
[breakers]
band_bps = 500
limit_state_ns = 100
pause_ns = 50
auction_ns = 20
"""


def test_band_clamps_trades_and_rest_price_then_limit_state_pause_and_reopening_auction():
    e = engine(BREAKERS)                                  # band [95, 105] around the static 100
    r = e.submit(rows({"ts_ns": 1, "order_id": 1, "side": -1, "price_ticks": 104, "qty": 5, "account": 1},
                      {"ts_ns": 2, "order_id": 2, "side": -1, "price_ticks": 106, "qty": 5, "account": 1},
                      {"ts_ns": 3, "order_id": 3, "side": 1, "price_ticks": 110, "qty": 8, "account": 2}))
    assert fills(r) == [(3, 1, 1, 104, 5)]                # 106 is outside the band: no trade there
    l3 = e.book_l3()
    assert dict(zip(l3["order_id"].tolist(), l3["price_ticks"].tolist())) == {2: 106, 3: 105}   # rests at the top
    ev = events(r)
    assert ev[-1] == (0, "LIMIT_STATE", "PRICE_BAND", 105, 0, 0)
    # the band reference moves to the last trade (104): band [99, 109]; still at 105 < 109: limit state left
    r = e.submit(rows({"ts_ns": 4, "order_id": 4, "side": 1, "price_ticks": 90, "qty": 1, "account": 3}))
    assert events(r)[-1][1:3] == ("RESUMED", "PRICE_BAND")
    e2 = engine(BREAKERS.replace("limit_state_ns", "band_window_ns = 1_000_000\nlimit_state_ns"))
    e2.submit(rows({"ts_ns": 1, "order_id": 1, "side": -1, "price_ticks": 106, "qty": 5, "account": 1},
                   {"ts_ns": 2, "order_id": 2, "side": 1, "price_ticks": 110, "qty": 8, "account": 2}))
    # 105 bid vs 106 ask, band fixed at [95, 105] for the window: limit state from ts 2
    r = e2.submit(rows({"ts_ns": 102, "order_id": 3, "side": -1, "price_ticks": 105, "qty": 3, "account": 3}))
    assert [x[1:3] for x in events(r)][:2] == [("PAUSED", "LIMIT_STATE"), ("ACCEPTED", "")]
    assert fills(r) == []                                 # paused: the crossing sell rests
    r = e2.submit(rows({"ts_ns": 120, "order_id": 4, "side": 1, "price_ticks": 104, "qty": 1, "tif": 1, "account": 4}))
    assert [x[1:3] for x in events(r)] == [("REJECTED", "SYMBOL_PAUSED")]
    r = e2.submit(rows({"ts_ns": 152, "order_id": 5, "side": 1, "price_ticks": 50, "qty": 1, "account": 4}))
    assert [x[1] for x in events(r)] == ["AUCTION", "ACCEPTED"]
    r = e2.submit(rows({"ts_ns": 172, "order_id": 6, "side": 1, "price_ticks": 51, "qty": 1, "account": 4}))
    # uncross: bid 105 x 8 against ask 105 x 3 (106 does not cross): 3 lots at 105
    assert fills(r) == [(2, 3, 0, 105, 3)]
    assert [x[1:3] for x in events(r)] == [("PARTIALLY_FILLED", "AUCTION"), ("FILLED", "AUCTION"),
                                           ("RESUMED", "LIMIT_STATE"), ("ACCEPTED", "")]
    assert events(r)[2] == (0, "RESUMED", "LIMIT_STATE", 105, 3, 0)   # auction price and volume
    st = r.deltas
    assert st["orders"][st["side"] == 0].tolist() == [S.TS_CONTINUOUS]
    # the new band is around the auction price (105: [100, 110]); the book is uncrossed
    l3 = e2.book_l3()
    assert sorted(zip(l3["order_id"].tolist(), l3["qty"].tolist())) == [(1, 5), (2, 5), (5, 1), (6, 1)]
    assert e2.parked()["order_id"].size == 0


def test_velocity_pause_stops_a_sweep_before_the_jump():
    e = engine("[breakers]\nvelocity_ticks = 3\nvelocity_window_ns = 1000\npause_ns = 10")
    r = e.submit(rows({"ts_ns": 1, "order_id": 1, "side": -1, "price_ticks": 100, "qty": 1, "account": 1},
                      {"ts_ns": 2, "order_id": 2, "side": -1, "price_ticks": 103, "qty": 1, "account": 1},
                      {"ts_ns": 3, "order_id": 3, "side": -1, "price_ticks": 104, "qty": 1, "account": 1},
                      {"ts_ns": 4, "order_id": 4, "side": 1, "price_ticks": 110, "qty": 5, "account": 2},
                      {"ts_ns": 5, "order_id": 5, "side": 1, "price_ticks": 120, "qty": 1, "tif": 1, "account": 2}))
    assert fills(r) == [(4, 1, 1, 100, 1), (4, 2, 1, 103, 1)]       # 104 is 4 ticks from the anchor 100
    assert (0, "PAUSED", "VELOCITY", 0, 0, 0) in events(r)
    assert e.book_l3()["order_id"].tolist() == [3]              # the rest of 4 waits for the auction
    assert e.parked()["order_id"].tolist() == [4] and e.parked()["qty"].tolist() == [3]
    assert events(r)[-1][1:3] == ("REJECTED", "SYMBOL_PAUSED")
    r = e.submit(rows({"ts_ns": 15, "order_id": 6, "side": 1, "price_ticks": 90, "account": 3}))
    # bid 110 x 3 against ask 104 x 1: volume 1 at every price in [104, 110], imbalance 2; the
    # reference is the last trade, 103: the closest price is 104
    assert fills(r) == [(4, 3, 0, 104, 1)]
    assert [x[1] for x in events(r)] == ["AUCTION", "PARTIALLY_FILLED", "FILLED", "RESUMED", "ACCEPTED"]
    l3 = e.book_l3()
    assert sorted(zip(l3["order_id"].tolist(), l3["price_ticks"].tolist(), l3["qty"].tolist())) == [(4, 110, 2), (6, 90, 1)]


def test_market_wide_halt_and_resume_through_auction():
    e = engine("[breakers]\nauction_ns = 100")
    e.submit(rows({"ts_ns": 1, "order_id": 1, "side": -1, "price_ticks": 101, "qty": 5},
                  {"ts_ns": 2, "order_id": 2, "side": 1, "price_ticks": 99, "qty": 5, "symbol": 2}))
    h = e.halt(10)
    assert [x[1:3] for x in events(h)] == [("HALTED", "HALT"), ("HALTED", "HALT")]
    r = e.submit(rows({"ts_ns": 11, "order_id": 3, "side": 1, "price_ticks": 103, "qty": 3, "account": 2},
                      {"ts_ns": 12, "order_id": 4, "side": 1, "price_ticks": 102, "qty": 4, "account": 3},
                      {"ts_ns": 13, "order_id": 5, "side": 1, "price_ticks": 103, "qty": 1, "tif": 1, "account": 2},
                      {"ts_ns": 14, "order_id": 6, "side": -1, "price_ticks": 1, "qty": 1, "symbol": 3}))
    assert fills(r) == []
    assert [x[1:3] for x in events(r)] == [("ACCEPTED", ""), ("ACCEPTED", ""), ("REJECTED", "SYMBOL_PAUSED"),
                                           ("ACCEPTED", "")]               # symbol 3, new while halted
    e.resume(20)
    r = e.submit(rows({"ts_ns": 119, "order_id": 7, "side": -1, "price_ticks": 150, "qty": 1}))
    assert fills(r) == []                                   # call period until 120
    r = e.submit(rows({"ts_ns": 120, "order_id": 8, "side": -1, "price_ticks": 150, "qty": 1}))
    # D(101..102) = 7 vs S = 5: volume 5; |imbalance| 2 at 101 and 102; no reference: lowest, 101
    bid, ask, vol = [3, 4], [1], 5
    price, v, _imb, bf, af = uncross_ref([(103, 3, 0), (102, 4, 1)], [(101, 5, 0), (150, 1, 1)], None)
    assert (price, v) == (101, vol)
    assert fills(r) == [(3, 1, 0, 101, 3), (4, 1, 0, 101, 2)]
    assert bid and ask


def test_closing_auction_on_the_live_book_by_command():
    e = engine("[breakers]\nauction_ns = \"1h\"")
    e.submit(rows({"ts_ns": 1, "order_id": 1, "side": -1, "price_ticks": 101, "qty": 5, "account": 1},
                  {"ts_ns": 2, "order_id": 2, "side": 1, "price_ticks": 99, "qty": 5, "account": 2}))
    e.halt(10)                                              # the closing call period begins
    e.submit(rows({"ts_ns": 11, "order_id": 3, "side": 1, "price_ticks": 102, "qty": 4, "account": 3},
                  {"ts_ns": 12, "order_id": 4, "side": -1, "price_ticks": 98, "qty": 2, "account": 4}))
    r = e.auction(20)
    # D(101) = D(102) = 4, S(101) = S(102) = 7: volume 4, imbalance -3 at both; no reference: 101
    price, vol, _imb, _b, _a = uncross_ref([(102, 4, 0), (99, 5, 1)], [(98, 2, 0), (101, 5, 1)], None)
    assert (price, vol) == (101, 4)
    assert [x[1] for x in events(r)][-1] == "RESUMED" and events(r)[-1][3:5] == (price, vol)
    assert sum(f[4] for f in fills(r)) == vol and {f[3] for f in fills(r)} == {price}
    lv = e.book_levels(depth=1)
    b, a = lv["price_ticks"][lv["side"] == 1], lv["price_ticks"][lv["side"] == -1]
    assert b[0] < a[0] and e.parked()["order_id"].size == 0
    assert e.auction(21).events.n_rows == 0                 # nothing paused any more


# --- properties on random flows ---------------------------------------------------------------------
RANDOM_TOML = """
[defaults]
max_order_qty = 12
max_position = 40
max_open_orders = 30
price_collar_bps = 900
[accounts.5]
max_orders_per_second = 100
[symbols.7]
reference_price_ticks = 100
max_open_orders = 8
[breakers]
band_bps = 300
limit_state_ns = 15
pause_ns = 8
velocity_ticks = 1
velocity_window_ns = 40
auction_ns = 5
"""


def _run(cols, sizes, toml=RANDOM_TOML, stp="none"):
    e = Engine(stp=stp, risk=RiskLimits.from_toml(toml))
    out = run_batches(e, split_batches(cols, sizes))
    return e, out


def _same(a, b):
    for k in ("fills", "events", "deltas"):
        for name in a[k]:
            np.testing.assert_array_equal(a[k][name], b[k][name], err_msg=f"{k}.{name}")


def _check_invariants(e: Engine, out) -> None:
    # 1. risk's open-order sums are the book's orders' (resting and parked; notional at the
    #    price each order rests at), per account and symbol
    l3, pk = e.book_l3(), e.parked()
    book: dict = {}
    for a, s_, sd, q, px in zip(*[np.concatenate([l3[c], pk[c]]).tolist()
                                  for c in ("account", "symbol", "side", "qty", "price_ticks")]):
        w = book.setdefault((a, s_), [0, 0, 0, 0])
        w[0 if sd == 1 else 1] += q
        w[2] += 1
        w[3] += q * px
    P = e.risk.positions()
    risk = {(a, s_): [b, s2, n, nt] for a, s_, b, s2, n, nt in
            zip(*[P[c].tolist() for c in ("account", "symbol", "open_buy", "open_sell", "open_orders", "open_notional")])
            if (b, s2, n, nt) != (0, 0, 0, 0)}
    assert risk == book
    acc = e.risk.accounts()
    per_acct: dict = {}
    for (a, _s), w in book.items():
        per_acct[a] = [per_acct.get(a, [0, 0])[0] + w[2], per_acct.get(a, [0, 0])[1] + w[3]]
    assert {a: [n, nt] for a, n, nt in zip(acc["account"].tolist(), acc["open_orders"].tolist(),
                                           acc["open_notional"].tolist()) if n or nt} == per_acct
    # 2. positions, cost and realised P&L follow the fills (average cost, plain Python)
    pos: dict = {}
    f = out["fills"]
    for k in range(len(f["qty"])):
        ts_ = int(f["taker_side"][k])
        t, m = (int(f["taker_account"][k]), int(f["maker_account"][k]))
        sg = 1 if ts_ in (0, 1) else -1          # auction fills: the buyer is in the taker columns
        s, px, q = int(f["symbol"][k]), int(f["price_ticks"][k]), int(f["qty"][k])
        for a, sd in ((t, sg), (m, -sg)):           # taker first (order matters for a self-trade)
            p, c, rl = pos.get((a, s), (0, 0, 0))
            if p == 0 or (p > 0) == (sd > 0):
                p, c = p + sd * q, c + sd * px * q
            else:
                close = min(q, abs(p))
                removed = (1 if p > 0 else -1) * (abs(c) * close // abs(p))
                rl += (1 if p > 0 else -1) * px * close - removed
                c -= removed
                p += sd * close
                if q > close:
                    p, c = sd * (q - close), sd * px * (q - close)
            pos[(a, s)] = (p, c, rl)
    P = e.risk.positions()
    got = {(int(a), int(s)): (int(p), int(c), int(r)) for a, s, p, c, r in
           zip(P["account"], P["symbol"], P["position"], P["cost"], P["realized_pnl"])}
    want = {k: v for k, v in pos.items() if v != (0, 0, 0)}
    assert {k: v for k, v in got.items() if v != (0, 0, 0)} == want
    # 3. no continuous-trading fill while the symbol is paused, halted or in its auction
    state: dict = {}
    ev = out["events"]
    for k in range(len(ev["event"])):
        code, s = int(ev["event"][k]), int(ev["symbol"][k])
        if code in (S.EV_PAUSED, S.EV_HALTED):
            state[s] = "paused"
        elif code == S.EV_AUCTION:
            state[s] = "auction"
        elif code == S.EV_RESUMED:
            state[s] = "open"
        elif code in (S.EV_FILLED, S.EV_PARTIALLY_FILLED) and int(ev["reason"][k]) != S.R_AUCTION:
            assert state.get(s, "open") == "open", f"fill at event row {k} while symbol {s} is {state[s]}"
    # 4. the book is never crossed where the symbol trades continuously
    lv = e.book_levels(depth=1)
    for s in np.unique(lv["symbol"]):
        srow = e.risk._syms.lookup(np.array([s]))[0]
        if e.risk.brk[srow, KB.K_STATE] >= S.TS_PAUSED:
            continue
        b = lv["price_ticks"][(lv["symbol"] == s) & (lv["side"] == 1)]
        a = lv["price_ticks"][(lv["symbol"] == s) & (lv["side"] == -1)]
        assert not (b.size and a.size and b[0] >= a[0]), f"symbol {s} crossed: {b[0]} >= {a[0]}"


def _band_check(out, toml=RANDOM_TOML, static=None):
    """Every continuous-trading fill lies in the band of its row: reference = the symbol's last
    trade price before the row (static 100 for symbol 7 before any trade), band re-read each row
    (no band_window_ns), or the auction price after a reopening."""
    lim = RiskLimits.from_toml(toml)
    bps = lim.breakers["band_bps"]
    last: dict = {}
    f = out["fills"]
    static = {7: 100} if static is None else static
    seqs, syms, pxs, sides = (f[c].tolist() for c in ("seq", "symbol", "price_ticks", "taker_side"))
    # fills come in row order, so a row's fills are one run (a scan per row was quadratic)
    assert all(a <= b for a, b in zip(seqs, seqs[1:])), "fills out of row order"
    k = 0
    n = len(seqs)
    while k < n:
        end = k
        while end < n and seqs[end] == seqs[k]:
            end += 1
        start_last = dict(last)
        for j in range(k, end):
            s, px = syms[j], pxs[j]
            if sides[j] != 0:
                ref = start_last.get(s, static.get(s))
                if ref is not None:
                    d = ref * bps // 10_000
                    assert ref - d <= px <= ref + d, f"fill {j} at {px} outside [{ref - d}, {ref + d}]"
            else:
                start_last[s] = px     # an auction resets the reference before the row's own trades
            last[s] = px
        k = end


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), stp=st.sampled_from(["none", "cancel-oldest", "decrement"]))
def test_random_flows_batch_size_invariance_and_invariants(seed, stp):
    cols = random_stream(np.random.default_rng(seed), 160, n_symbols=3, n_accounts=4)
    e1, whole = _run(cols, len(cols["ts_ns"]), stp=stp)
    _check_invariants(e1, whole)
    _band_check(whole)
    for sizes in (1, 7):
        _e, part = _run(cols, sizes, stp=stp)
        _same(whole, part)


def test_long_random_flow_breakers_fire_and_replay_is_identical(rng):
    cols = random_stream(np.random.default_rng(7), 3000, n_symbols=3, n_accounts=5)
    e1, a = _run(cols, 500)
    e2, b = _run(cols, 500)
    _same(a, b)
    _check_invariants(e1, a)
    _band_check(a)
    codes = set(a["events"]["event"].tolist())
    reasons = set(a["events"]["reason"].tolist())
    # the configuration is tight enough that the breakers and most checks fire on this flow
    assert {S.EV_LIMIT_STATE, S.EV_PAUSED, S.EV_AUCTION, S.EV_RESUMED} <= codes
    assert {S.RR_MAX_ORDER_QTY, S.RR_MAX_POSITION, S.RR_MAX_OPEN_ORDERS, S.RR_MAX_ORDERS_PER_SECOND,
            S.RR_SYMBOL_PAUSED, S.R_VELOCITY, S.R_LIMIT_STATE} <= reasons


def test_reopening_auction_price_equals_brute_force_on_the_live_book():
    """Row by row: before each row, the book and the reference; when the row reopens a symbol,
    its auction price and volume equal uncross_ref's on that book."""
    cols = random_stream(np.random.default_rng(11), 900, n_symbols=3, n_accounts=5)
    e = Engine(risk=RiskLimits.from_toml(RANDOM_TOML))
    checked = 0
    for i in range(len(cols["ts_ns"])):
        l3 = e.book_l3()
        pk = e.parked()
        l3 = {c: np.concatenate([l3[c], pk[c]]) for c in l3}     # book first, then parked: time order
        ref_of = {}
        for srow, sid in enumerate(e.risk.symbol_ids()):
            ref = next((int(v) for v in (e.risk.brk[srow, KB.K_REF], e.risk.sym[srow, S_LAST],
                                         e.risk.sym[srow, S_STATIC]) if v > 0), None)
            ref_of[int(sid)] = ref
        r = e.submit({k: v[i:i + 1] for k, v in cols.items()})
        ev = r.events
        for k in range(ev.n_rows):
            if int(ev["event"][k]) != S.EV_RESUMED or int(ev["reason"][k]) == S.R_PRICE_BAND:
                continue
            s = int(ev["symbol"][k])
            m = l3["symbol"] == s
            bids = [(int(p), int(q), t) for t, (p, q) in enumerate(zip(l3["price_ticks"][m & (l3["side"] == 1)],
                                                                        l3["qty"][m & (l3["side"] == 1)]))]
            asks = [(int(p), int(q), t) for t, (p, q) in enumerate(zip(l3["price_ticks"][m & (l3["side"] == -1)],
                                                                        l3["qty"][m & (l3["side"] == -1)]))]
            price, vol, _imb, _bf, _af = uncross_ref(bids, asks, ref_of.get(s))
            assert int(ev["price_ticks"][k]) == (price or 0) and int(ev["qty"][k]) == vol
            af = r.fills
            assert int(af["qty"][af["taker_side"] == 0].sum()) == vol
            checked += 1
    assert checked >= 3


# --- differential: the plain-Python reference (checks without breakers) ------------------------------
LIMITS_ONLY = RANDOM_TOML.split("[breakers]")[0] + "credit_limit = 40_000\nmax_order_notional = 1_300\n"


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), stp=st.sampled_from(sorted(S.STP_NAMES)), size=st.sampled_from([1, 13, 400]))
def test_risk_matching_equals_the_reference(seed, stp, size):
    from reference.risk_matcher import RiskReferenceEngine

    cols = random_stream(np.random.default_rng(seed), 400, n_symbols=3, n_accounts=5)
    lim = RiskLimits.from_toml(LIMITS_ONLY)
    e, got = _run(cols, size, toml=LIMITS_ONLY, stp=stp)
    ref = RiskReferenceEngine(lim, stp=stp)
    want = run_batches(ref, [cols])
    _same(got, want)
    P = e.risk.positions()
    mine = sorted(zip(*[P[c].tolist() for c in ("account", "symbol", "position", "cost", "realized_pnl",
                                                 "open_buy", "open_sell", "open_orders", "open_notional")]))
    assert [r for r in mine if any(r[2:])] == [r for r in ref.risk.positions() if any(r[2:])]
    l3 = e.book_l3()
    assert sorted(zip(*[l3[c].tolist() for c in ("symbol", "order_id", "account", "side", "qty",
                                                  "price_ticks")])) == ref.risk.open_orders()


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), stp=st.sampled_from(sorted(S.STP_NAMES)), size=st.sampled_from([1, 13, 500]))
def test_breakers_equal_the_reference(seed, stp, size):
    from reference.breaker_ref import BreakerReferenceEngine

    cols = random_stream(np.random.default_rng(seed), 500, n_symbols=3, n_accounts=5)
    e, got = _run(cols, size, stp=stp)
    ref = BreakerReferenceEngine(RiskLimits.from_toml(RANDOM_TOML), stp=stp)
    want = run_batches(ref, [cols])
    _same(got, want)
    parked = e.parked()
    assert sorted(zip(parked["symbol"].tolist(), parked["order_id"].tolist(), parked["price_ticks"].tolist(),
                      parked["qty"].tolist())) == sorted(
        (s, o.order_id, o.price, o.leaves) for s, stt in ref.syms.items() for o in stt.parked)
    l3 = e.book_l3()
    assert sorted(zip(l3["symbol"].tolist(), l3["order_id"].tolist(), l3["price_ticks"].tolist(), l3["qty"].tolist())) == \
        sorted(zip(*[ref.book_l3()[c].tolist() for c in ("symbol", "order_id", "price_ticks", "qty")]))


# --- real data: the LOBSTER AMZN day as an order flow -------------------------------------------------
LOBSTER_MSG = "lobster_AMZN_2012-06-21_level5/AMZN_2012-06-21_34200000_57600000_message_5.csv"
LOBSTER_TOML = """
[defaults]
max_order_qty = 300
max_position = 3_000
max_orders_per_second = 5
[breakers]
band_bps = 8
limit_state_ns = "2s"
pause_ns = "1s"
velocity_ticks = 6
velocity_window_ns = "2s"
auction_ns = "500ms"
"""


def lobster_orders(n: int) -> dict:
    """The first n LOBSTER messages as orders: submissions -> NEW GTC, partial cancels -> REPLACE to
    the smaller size, deletions -> CANCEL, executions of visible orders -> an IOC from the other
    side at the execution price (so trades print at the day's real prices); prices in cents;
    accounts 1..40 by order id."""
    from conftest import require_data

    from hpte.engine.md import lobster as L
    m = L.read_messages(require_data(LOBSTER_MSG)).head(n)
    keep = np.isin(m.type, (1, 2, 3, 4))
    t, oid, size, px, d = m.type[keep], m.order_id[keep], m.size[keep], m.price[keep] // 100, m.direction[keep]
    k = len(t)
    cols = {name: np.zeros(k, dt) for name, dt, _r, _d in S.ORDER_COLUMNS}
    cols["ts_ns"][:] = m.time_ns[keep]
    cols["price_ticks"][:] = px
    cols["qty"][:] = size
    cols["side"][:] = d
    cols["order_id"][:] = oid
    cols["account"][:] = oid % 40 + 1
    cols["action"][t == 3] = S.ACT_CANCEL
    # a partial cancel: the order's remaining size is not in the file, so the REPLACE asks for
    # the size cancelled (a decrease when the order had more; the engine checks it like any row)
    cols["action"][t == 2] = S.ACT_REPLACE
    ex = t == 4
    cols["side"][ex] = -d[ex]
    cols["tif"][ex] = S.TIF_IOC
    cols["order_id"][ex] = (1 << 40) + np.arange(int(ex.sum()))
    cols["account"][ex] = 41 + np.arange(int(ex.sum())) % 5
    return cols


def test_lobster_day_through_risk_and_breakers():
    cols = lobster_orders(30_000)
    e1, whole = _run(cols, len(cols["ts_ns"]), toml=LOBSTER_TOML)
    _check_invariants(e1, whole)
    _band_check(whole, LOBSTER_TOML, static={})
    _e, parts = _run(cols, 4096, toml=LOBSTER_TOML)
    _same(whole, parts)
    ev = whole["events"]
    reasons = set(ev["reason"][ev["event"] == S.EV_REJECTED].tolist())
    assert {S.RR_MAX_ORDER_QTY, S.RR_MAX_ORDERS_PER_SECOND} <= reasons
    assert whole["fills"]["qty"].size > 1000
    # on this real flow both breakers fire: velocity pauses and limit states that time out
    codes = set(zip(ev["event"].tolist(), ev["reason"].tolist()))
    assert {(S.EV_LIMIT_STATE, S.R_PRICE_BAND), (S.EV_PAUSED, S.R_VELOCITY), (S.EV_PAUSED, S.R_LIMIT_STATE),
            (S.EV_RESUMED, S.R_VELOCITY)} <= codes


# --- configuration changes, CLI ---------------------------------------------------------------------
def test_set_limits_takes_effect_at_the_next_batch():
    e = engine("[defaults]\nmax_order_qty = 5")
    assert events(e.submit(rows({"order_id": 1, "qty": 6})))[0][2] == "MAX_ORDER_QTY"
    r = e.set_limits(RiskLimits.from_toml("[defaults]\nmax_order_qty = 10"))
    assert r.events.n_rows == 0
    assert events(e.submit(rows({"order_id": 2, "qty": 6}, {"order_id": 3, "qty": 1, "account": 2})))[0][1] == "ACCEPTED"
    # a configuration that kills account 1 cancels its resting order at the boundary
    r = e.set_limits(RiskLimits.from_toml("[defaults]\nmax_order_qty = 10\n[accounts.1]\nkill = true"))
    assert [x[:3] for x in events(r)] == [(2, "CANCELLED", "KILL_SWITCH")]
    assert e.book_l3()["order_id"].tolist() == [3]


def test_gpu_with_risk_is_refused_and_halt_needs_risk(monkeypatch):
    import hpte.engine.engine as E
    from hpte.engine.device import DeviceInfo

    with pytest.raises(ValueError, match="halt needs risk state"):
        Engine().halt(0)
    # as if a GPU had been found: refused before any GPU work starts
    monkeypatch.setattr(E, "resolve_device", lambda d: DeviceInfo(kind="gpu", reason="test"))
    with pytest.raises(ValueError, match="CPU path"):
        Engine(device="gpu", risk=RiskLimits())


def test_commands_at_an_earlier_time_are_refused_and_change_nothing():
    from hpte.engine.io import InputError

    e = engine("")
    e.submit(rows({"ts_ns": 50, "order_id": 1}))
    for call in (lambda: e.set_kill(True, account=1, ts_ns=49), lambda: e.halt(49), lambda: e.auction(49)):
        with pytest.raises(InputError, match="before the previous"):
            call()
    assert e.book_l3()["order_id"].tolist() == [1] and not e.risk.acct[:, 0].any()


def test_cli_match_with_risk(tmp_path):
    from typer.testing import CliRunner

    from hpte.cli.main import app
    from hpte.engine import io

    cols = random_stream(np.random.default_rng(3), 1500, n_symbols=3, n_accounts=5)
    io.write_columns(tmp_path / "o.parquet", cols, S.ORDER_SCHEMA)
    (tmp_path / "risk.toml").write_text(RANDOM_TOML)
    res = CliRunner().invoke(app, ["match", str(tmp_path / "o.parquet"), "--fills", str(tmp_path / "f.parquet"),
                                   "--events", str(tmp_path / "e.parquet"), "--risk", str(tmp_path / "risk.toml"),
                                   "--positions", str(tmp_path / "p.parquet"), "--batch-size", "256", "--json"])
    assert res.exit_code == 0, res.output
    s = json.loads(res.output.strip().splitlines()[-1])
    assert s["rejects_by_reason"]["MAX_ORDER_QTY"] > 0 and s["rejects_by_reason"]["SYMBOL_PAUSED"] > 0
    assert any(k.startswith("PAUSED (VELOCITY)") for k in s["breaker_events"])
    ev = io.read_table(tmp_path / "e.parquet")
    names = set(ev.column("reason").to_pylist())
    assert {"MAX_ORDER_QTY", "VELOCITY"} <= names
    pos = io.read_table(tmp_path / "p.parquet")
    assert pos.num_rows > 0 and "realized_pnl" in pos.schema.names
    bad = tmp_path / "bad.toml"
    bad.write_text("[defaults]\nmax_order_qty = -1\n")
    res = CliRunner().invoke(app, ["match", str(tmp_path / "o.parquet"), "--fills", str(tmp_path / "f.parquet"),
                                   "--risk", str(bad)])
    assert res.exit_code == 1 and "defaults.max_order_qty" in res.output
    res = CliRunner().invoke(app, ["match", str(tmp_path / "o.parquet"), "--fills", str(tmp_path / "f.parquet"),
                                   "--positions", str(tmp_path / "p.parquet")])
    assert res.exit_code == 1 and "--positions needs --risk" in res.output
