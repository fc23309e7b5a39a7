"""Pre-trade risk kernel and position accounting: every check at, just below and just above its
limit, fills (average cost, realised P&L, all or nothing), releases, map growth, and Hypothesis
differential tests: a batch == the same rows one at a time == the plain-Python reference."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from reference.risk_ref import REASONS, RiskRef

from hpte.engine.io import InputError
from hpte.engine.risk.state import ALL_REASON_NAMES, RISK_REASON_NAMES, RiskEngine, reason_names
from hpte.engine.risk.limits import RiskLimits
from hpte.engine import schema as S

COLS = ("ts_ns", "order_id", "side", "price_ticks", "qty", "action", "order_type", "tif", "account",
        "symbol", "post_only")


def order(ts=0, oid=1, side=1, px=100, qty=1, action=0, otype=0, tif=0, account=1, symbol=1, post=0):
    return {"ts_ns": ts, "order_id": oid, "side": side, "price_ticks": px, "qty": qty, "action": action,
            "order_type": otype, "tif": tif, "account": account, "symbol": symbol, "post_only": post}


def batch(rows: list[dict]) -> dict:
    return {c: np.array([r[c] for r in rows], dtype=dict((n, t) for n, t, _, _ in S.ORDER_COLUMNS)[c])
            for c in COLS}


def names(eng: RiskEngine, rows: list[dict]) -> list[str]:
    return reason_names(eng.check(batch(rows)))


def fill(symbol=1, toid=1, moid=2, ta=1, ma=2, side=1, px=100, qty=1):
    return {"symbol": symbol, "taker_order_id": toid, "maker_order_id": moid, "taker_account": ta,
            "maker_account": ma, "taker_side": side, "price_ticks": px, "qty": qty}


def fills_cols(fs: list[dict]) -> dict:
    dt = dict(S.FILL_COLUMNS)
    keys = ("symbol", "taker_order_id", "maker_order_id", "taker_account", "maker_account", "taker_side",
            "price_ticks", "qty")
    return {k: np.array([f[k] for f in fs], dt[k]) for k in keys}


def eng(toml: str = "", **kw) -> RiskEngine:
    return RiskEngine(RiskLimits.from_toml(toml), **kw)


def test_reason_codes_do_not_clash_and_fit_int8():
    assert all(S.REASON_NAMES[c] == n for c, n in RISK_REASON_NAMES.items())   # one table: schema
    assert max(c for c in S.REASON_NAMES if c < 100) < min(RISK_REASON_NAMES)
    assert all(100 <= c < 128 for c in RISK_REASON_NAMES)
    assert {v: k for k, v in RISK_REASON_NAMES.items()} == REASONS
    assert ALL_REASON_NAMES[0] == "" and ALL_REASON_NAMES[100] == "MAX_ORDER_QTY"


# --- each check at, just below and just above its limit -----------------------------------------
def test_max_order_qty():
    e = eng("[defaults]\nmax_order_qty = 10")
    assert names(e, [order(oid=1, qty=9), order(oid=2, qty=10), order(oid=3, qty=11)]) == \
        ["", "", "MAX_ORDER_QTY"]


def test_max_order_notional():
    e = eng("[defaults]\nmax_order_notional = 700")
    assert names(e, [order(oid=1, px=7, qty=99), order(oid=2, px=7, qty=100), order(oid=3, px=7, qty=101),
                     order(oid=4, px=701, qty=1)]) == ["", "", "MAX_ORDER_NOTIONAL", "MAX_ORDER_NOTIONAL"]


@pytest.mark.parametrize("px,want", [(10_099, ""), (10_100, ""), (10_101, "PRICE_COLLAR"),
                                     (9_901, ""), (9_900, ""), (9_899, "PRICE_COLLAR")])
def test_price_collar_static_reference(px, want):
    e = eng("[defaults]\nprice_collar_bps = 100\n[symbols.1]\nreference_price_ticks = 10000")
    assert names(e, [order(px=px)]) == [want]


def test_price_collar_reference_precedence_last_then_mid_then_static():
    e = eng("[defaults]\nprice_collar_bps = 100\n[symbols.1]\nreference_price_ticks = 10000")
    e.set_quotes(1, bid=19_999, ask=20_000)            # mid 19,999.5: band [19,799.505, 20,199.495]
    assert names(e, [order(oid=1, px=20_199), order(oid=2, px=20_200), order(oid=3, px=19_800),
                     order(oid=4, px=19_799), order(oid=5, px=10_000)]) == \
        ["", "PRICE_COLLAR", "", "PRICE_COLLAR", "PRICE_COLLAR"]
    e.apply_fills(fills_cols([fill(toid=90, moid=91, px=5_000)]))   # last trade beats the mid
    assert names(e, [order(oid=6, px=5_050), order(oid=7, px=5_051), order(oid=8, px=20_000)]) == \
        ["", "PRICE_COLLAR", "PRICE_COLLAR"]


def test_collar_not_applied_without_reference_or_for_market_orders():
    e = eng("[defaults]\nprice_collar_bps = 0")
    assert names(e, [order(oid=1, px=1), order(oid=2, px=10**9)]) == ["", ""]
    e.set_quotes(1, bid=100, ask=100)
    assert names(e, [order(oid=3, px=100), order(oid=4, px=101), order(oid=5, otype=1, px=0, tif=1)]) == \
        ["", "PRICE_COLLAR", ""]


def test_market_orders_use_the_reference_price_for_notional():
    e = eng("[defaults]\nmax_order_notional = 1000")
    assert names(e, [order(oid=1, otype=1, tif=1, px=0, qty=5)]) == ["NO_REFERENCE_PRICE"]
    e.set_quotes(1, bid=99, ask=100)                   # reference 99.5 -> priced at 100
    assert names(e, [order(oid=2, otype=1, tif=1, qty=10), order(oid=3, otype=1, tif=1, qty=11)]) == \
        ["", "MAX_ORDER_NOTIONAL"]
    assert e.open_orders()["price_ticks"].tolist() == [100]
    # no notional or credit limit: a market order without a reference passes, notional 0
    e2 = eng("[defaults]\nmax_order_qty = 100")
    assert names(e2, [order(oid=1, otype=1, tif=1, qty=5)]) == [""]


def test_max_open_orders_and_cancel_frees_a_slot():
    e = eng("[defaults]\nmax_open_orders = 3")
    assert names(e, [order(oid=i) for i in (1, 2, 3, 4)]) == ["", "", "", "MAX_OPEN_ORDERS"]
    assert names(e, [order(oid=2, action=1), order(oid=4), order(oid=5)]) == ["", "", "MAX_OPEN_ORDERS"]
    assert names(e, [order(oid=9, account=2)]) == [""]      # another account has its own count


def test_max_open_orders_per_symbol_layer():
    e = eng("[defaults]\nmax_open_orders = 3\n[symbols.2]\nmax_open_orders = 1")
    assert names(e, [order(oid=1, symbol=2), order(oid=2, symbol=2), order(oid=3, symbol=1),
                     order(oid=4, symbol=1), order(oid=5, symbol=1)]) == \
        ["", "MAX_OPEN_ORDERS", "", "", "MAX_OPEN_ORDERS"]


def test_max_position_counts_open_orders_worst_case():
    e = eng("[defaults]\nmax_position = 10")
    assert names(e, [order(oid=1, qty=9), order(oid=2, qty=1), order(oid=3, qty=1)]) == ["", "", "MAX_POSITION"]
    # sells are checked against the short side only: position - open sells >= -10
    assert names(e, [order(oid=4, side=-1, qty=10), order(oid=5, side=-1, qty=1)]) == ["", "MAX_POSITION"]
    # a position from fills: long 4 (fill of order 1 as taker) -> long side 4 + 6 open = 10
    e.apply_fills(fills_cols([fill(toid=1, moid=77, ta=1, ma=2, side=1, px=100, qty=4)]))
    p = e.positions()
    assert p["position"].tolist()[0] == 4 and p["open_buy"].tolist()[0] == 6
    assert names(e, [order(oid=6, qty=1)]) == ["MAX_POSITION"]
    # the short side is now 4 - 10 = -6: 4 more may be sold, not 5
    assert names(e, [order(oid=7, side=-1, qty=5), order(oid=8, side=-1, qty=4)]) == ["MAX_POSITION", ""]


def test_credit_limit_counts_open_notional_and_position_cost():
    e = eng("[defaults]\ncredit_limit = 1000")
    assert names(e, [order(oid=1, px=10, qty=99), order(oid=2, px=10, qty=1), order(oid=3, px=1, qty=1)]) == \
        ["", "", "CREDIT_LIMIT"]
    # order 1 fills 50 at 8: open notional 500, |cost| 400 -> exposure 900: 100 more fits
    e.apply_fills(fills_cols([fill(toid=1, moid=50, ta=1, ma=2, side=1, px=8, qty=50)]))
    a = e.accounts()
    assert a["gross_exposure"][a["account"] == 1].tolist() == [900]
    assert names(e, [order(oid=4, px=101, qty=1), order(oid=5, px=100, qty=1)]) == ["CREDIT_LIMIT", ""]


def test_credit_limit_per_symbol_layer():
    e = eng("[symbols.2]\ncredit_limit = 100")
    assert names(e, [order(oid=1, symbol=2, px=10, qty=10), order(oid=2, symbol=2, px=1, qty=1),
                     order(oid=3, symbol=1, px=10, qty=1000)]) == ["", "CREDIT_LIMIT", ""]


def test_message_rate_token_bucket_boundaries():
    e = eng("[defaults]\nmax_orders_per_second = 3")
    assert names(e, [order(ts=0, oid=1), order(ts=0, oid=2), order(ts=0, oid=3), order(ts=0, oid=4)]) == \
        ["", "", "", "MAX_ORDERS_PER_SECOND"]
    # 1/3 s refills one token: 333,333,333 ns gives 0.999999999 tokens, 333,333,334 ns gives one
    assert names(e, [order(ts=333_333_333, oid=5), order(ts=333_333_334, oid=6),
                     order(ts=333_333_334, oid=7)]) == ["MAX_ORDERS_PER_SECOND", "", "MAX_ORDERS_PER_SECOND"]
    # a long gap refills to the capacity, not beyond
    assert names(e, [order(ts=10**10 + k, oid=10 + k) for k in range(4)]) == \
        ["", "", "", "MAX_ORDERS_PER_SECOND"]
    # cancels are messages too; a rejected row costs no token
    e2 = eng("[defaults]\nmax_orders_per_second = 2\nmax_order_qty = 5")
    assert names(e2, [order(oid=1, qty=6), order(oid=1), order(oid=1, action=1), order(oid=2)]) == \
        ["MAX_ORDER_QTY", "", "", "MAX_ORDERS_PER_SECOND"]


def test_message_rate_per_symbol_layer_is_per_account_and_symbol():
    e = eng("[symbols.1]\nmax_orders_per_second = 1")
    assert names(e, [order(oid=1), order(oid=2), order(oid=3, account=2), order(oid=4, symbol=2),
                     order(oid=5, symbol=2)]) == ["", "MAX_ORDERS_PER_SECOND", "", "", ""]


def test_kill_switches_block_new_and_replace_but_not_cancel():
    e = eng("[accounts.3]\nkill = true")
    assert names(e, [order(oid=1, account=3), order(oid=2, account=1)]) == ["KILL_SWITCH", ""]
    e.set_kill(True, account=1)
    assert names(e, [order(oid=3, account=1), order(oid=2, account=1, action=2, qty=5, px=100),
                     order(oid=2, account=1, action=1)]) == ["KILL_SWITCH", "KILL_SWITCH", ""]
    e.set_kill(False, account=1)
    e.set_kill(False, account=3)                        # a config kill stays on
    assert names(e, [order(oid=4, account=1), order(oid=5, account=3)]) == ["", "KILL_SWITCH"]
    e.set_kill(True)                                    # global
    assert names(e, [order(oid=6, account=2)]) == ["KILL_SWITCH"]
    e.set_kill(False)
    assert names(e, [order(oid=6, account=2)]) == [""]
    g = eng("[defaults]\nkill = true")
    assert names(g, [order(oid=1)]) == ["KILL_SWITCH"]


def test_symbol_permissions_and_pause():
    e = eng("[accounts.1]\nsymbols = [1, 3]")
    assert names(e, [order(oid=1, symbol=1), order(oid=2, symbol=2), order(oid=3, symbol=3),
                     order(oid=4, symbol=2, account=2)]) == ["", "NOT_PERMITTED", "", ""]
    e.set_paused(3)
    assert names(e, [order(oid=5, symbol=3), order(oid=3, symbol=3, action=1)]) == ["SYMBOL_PAUSED", ""]
    e.set_paused(3, False)
    assert names(e, [order(oid=5, symbol=3)]) == [""]


def test_stricter_of_two_overrides():
    e = eng("[defaults]\nmax_order_qty = 10\n[accounts.1]\nmax_order_qty = 50\n"
            "[symbols.2]\nmax_order_qty = 30\n[symbols.3]\nmax_order_qty = 100")
    rows = [order(oid=1, account=1, symbol=1, qty=50), order(oid=2, account=1, symbol=1, qty=51),
            order(oid=3, account=1, symbol=2, qty=30), order(oid=4, account=1, symbol=2, qty=31),
            order(oid=5, account=2, symbol=3, qty=100), order(oid=6, account=2, symbol=3, qty=101),
            order(oid=7, account=2, symbol=1, qty=11)]
    assert names(e, rows) == ["", "MAX_ORDER_QTY", "", "MAX_ORDER_QTY", "", "MAX_ORDER_QTY", "MAX_ORDER_QTY"]


def test_replace_checks_only_increases_of_position_and_exposure():
    e = eng("[defaults]\nmax_position = 10\ncredit_limit = 1000\nmax_order_qty = 8")
    assert names(e, [order(oid=1, qty=8, px=100)]) == [""]
    assert names(e, [order(oid=1, action=2, qty=9, px=100)]) == ["MAX_ORDER_QTY"]
    assert names(e, [order(oid=1, action=2, qty=8, px=126)]) == ["CREDIT_LIMIT"]
    assert names(e, [order(oid=1, action=2, qty=8, px=125)]) == [""]
    e.set_limits(RiskLimits.from_toml("[defaults]\nmax_position = 3\ncredit_limit = 100"))
    # over both new limits already: a reduction passes, an increase does not
    assert names(e, [order(oid=1, action=2, qty=5, px=125), order(oid=1, action=2, qty=6, px=125)]) == \
        ["", "MAX_POSITION"]
    o = e.open_orders()
    assert o["leaves_qty"].tolist() == [5] and o["price_ticks"].tolist() == [125]


def test_rows_left_to_matching_change_nothing():
    e = eng("[defaults]\nmax_order_qty = 1\nmax_orders_per_second = 1")
    rows = [order(oid=1, qty=0), order(oid=2, side=0), order(oid=3, px=0), order(oid=4, action=7),
            order(oid=5, tif=9), order(oid=6, otype=1, tif=1, post=1), order(oid=7, action=1),
            order(oid=8, action=2, qty=5)]
    assert names(e, rows) == [""] * len(rows)
    assert e.open_orders()["order_id"].size == 0
    assert names(e, [order(oid=1), order(oid=1, ts=10**9)]) == ["", ""]   # token untouched; dup id deferred
    assert e.open_orders()["order_id"].tolist() == [1]
    # cancel / replace of another account's order: left to matching (NOT_OWNER)
    assert names(e, [order(oid=1, account=2, action=1, ts=3 * 10**9)]) == [""]
    assert e.open_orders()["order_id"].tolist() == [1]


def test_overflow_is_rejected_not_wrapped():
    e = eng()
    big = 1 << 62
    assert names(e, [order(oid=1, qty=big + 1), order(oid=2, px=big + 1), order(oid=3, px=(1 << 31) + 1, qty=1 << 31),
                     order(oid=4, px=1 << 31, qty=1 << 30), order(oid=5, px=1 << 31, qty=1 << 30),
                     order(oid=6, px=1, qty=1)]) == \
        ["RISK_OVERFLOW", "RISK_OVERFLOW", "RISK_OVERFLOW", "", "", "RISK_OVERFLOW"]


def test_collar_exact_for_huge_prices():
    e = eng("[defaults]\nprice_collar_bps = 1\n[symbols.1]\nreference_price_ticks = 4_000_000_000_000_000_000")
    r = 4_000_000_000_000_000_000
    assert names(e, [order(oid=1, px=r + r // 10_000), order(oid=2, px=r + r // 10_000 + 1)]) == ["", "PRICE_COLLAR"]


# --- fills, positions, releases --------------------------------------------------------------------
def test_average_cost_realised_pnl_and_flip():
    e = eng()
    e.check(batch([order(oid=1, qty=20, px=110)]))
    e.apply_fills(fills_cols([fill(toid=1, moid=9, ta=1, ma=2, side=1, px=100, qty=10),
                              fill(toid=1, moid=9, ta=1, ma=2, side=1, px=110, qty=10)]))
    p = {k: v[0] for k, v in e.positions().items()}
    assert (p["position"], p["cost"], p["avg_price"], p["realized_pnl"], p["open_orders"]) == (20, 2100, 105.0, 0, 0)
    e.apply_fills(fills_cols([fill(toid=5, moid=6, ta=3, ma=1, side=1, px=120, qty=15)]))  # account 1 sells 15
    p = {k: v[0] for k, v in e.positions().items()}
    assert (p["position"], p["cost"], p["realized_pnl"]) == (5, 2100 - 1575, 15 * 120 - 1575)
    e.apply_fills(fills_cols([fill(toid=7, moid=8, ta=1, ma=4, side=-1, px=100, qty=10)]))  # close 5, short 5
    p = {k: v[0] for k, v in e.positions().items()}
    assert (p["position"], p["cost"], p["realized_pnl"], p["avg_price"]) == (-5, -500, 225 + 500 - 525, 100.0)
    e.apply_fills(fills_cols([fill(toid=7, moid=8, ta=1, ma=4, side=1, px=90, qty=5)]))    # flat
    p = {k: v[0] for k, v in e.positions().items()}
    assert (p["position"], p["cost"], p["realized_pnl"]) == (0, 0, 200 + 50)
    assert np.isnan(p["avg_price"])
    # the counterparties, the other side of every fill
    pos = e.positions()
    assert int(pos["position"].sum()) == 0


def test_fills_move_open_quantity_for_taker_and_maker():
    e = eng()
    e.check(batch([order(oid=1, account=1, side=-1, qty=10, px=100), order(oid=2, account=2, side=1, qty=4, px=101)]))
    e.apply_fills(fills_cols([fill(toid=2, moid=1, ta=2, ma=1, side=1, px=100, qty=4)]))
    pos = e.positions()
    assert pos["account"].tolist() == [1, 2]
    assert pos["position"].tolist() == [-4, 4] and pos["open_sell"].tolist() == [6, 0]
    assert pos["open_buy"].tolist() == [0, 0] and pos["open_orders"].tolist() == [1, 0]
    assert e.accounts()["open_notional"].tolist() == [600, 0]


def test_apply_fills_is_all_or_nothing():
    e = eng()
    e.check(batch([order(oid=1, qty=10)]))
    before = (e.positions(), e.open_orders(), e.accounts())
    bad = fills_cols([fill(toid=1, qty=3), fill(toid=1, qty=0)])
    with pytest.raises(InputError, match="fills row 1"):
        e.apply_fills(bad)
    with pytest.raises(InputError, match="row 0"):
        e.apply_fills(fills_cols([fill(toid=1, px=1 << 40, qty=1 << 30)]))
    after = (e.positions(), e.open_orders(), e.accounts())
    for b, a in zip(before, after):
        assert b.keys() == a.keys() and all(np.array_equal(b[k], a[k], equal_nan=True) for k in b)


def test_release_and_cancel_free_open_quantity():
    e = eng("[defaults]\nmax_position = 10")
    e.check(batch([order(oid=1, qty=10), order(oid=2, qty=1)]))
    assert e.release(1, 1, 4).tolist() == [4]
    assert names(e, [order(oid=3, qty=4), order(oid=4, qty=1)]) == ["", "MAX_POSITION"]
    assert e.release([1, 1, 5], [1, 99, 1], [100, 1, 1]).tolist() == [6, 0, 0]
    assert e.open_orders()["order_id"].tolist() == [3]


def test_map_growth_gives_the_same_results():
    rng = np.random.default_rng(5)
    rows = []
    for i in range(3000):
        if i % 3 == 2:
            rows.append(order(ts=i, oid=int(rng.integers(0, i)), action=1, account=int(rng.integers(1, 4))))
        else:
            rows.append(order(ts=i, oid=i, qty=int(rng.integers(1, 20)), account=int(rng.integers(1, 4)),
                              symbol=int(rng.integers(1, 3))))
    toml = "[defaults]\nmax_position = 400\nmax_open_orders = 900"
    small, large = eng(toml, map_capacity=2), eng(toml, map_capacity=1 << 14)
    assert np.array_equal(small.check(batch(rows)), large.check(batch(rows)))
    assert small.counts["map_grows"] > 5
    for a, b in ((small.open_orders(), large.open_orders()), (small.positions(), large.positions())):
        assert all(np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f") for k in a)


def test_timestamps_must_not_decrease_across_batches():
    e = eng()
    e.check(batch([order(ts=10)]))
    with pytest.raises(InputError, match="ts_ns"):
        e.check(batch([order(ts=9, oid=2)]))


def test_set_limits_takes_effect_at_the_next_batch():
    e = eng("[defaults]\nmax_order_qty = 5")
    assert names(e, [order(oid=1, qty=6)]) == ["MAX_ORDER_QTY"]
    e.set_limits(RiskLimits.from_toml("[defaults]\nmax_order_qty = 6\n[accounts.1]\nsymbols = [2]"))
    assert names(e, [order(oid=1, qty=6, symbol=2), order(oid=2, qty=6, symbol=1)]) == ["", "NOT_PERMITTED"]


# --- differential: batch == one at a time == reference ------------------------------------------------
LIMIT_VALUES = {"max_order_qty": st.integers(5, 40), "max_order_notional": st.integers(500, 5000),
                "price_collar_bps": st.integers(0, 3000), "max_position": st.integers(0, 60),
                "max_open_orders": st.integers(1, 6), "credit_limit": st.integers(0, 8000),
                "max_orders_per_second": st.integers(1, 5)}


def limit_tables(keys=tuple(LIMIT_VALUES)):
    return st.fixed_dictionaries({}, optional={k: LIMIT_VALUES[k] for k in keys})


@st.composite
def configs(draw):
    doc = {"defaults": draw(limit_tables())}
    if draw(st.integers(0, 15)) == 9:
        doc["defaults"]["kill"] = True
    accts = {}
    for a in draw(st.lists(st.integers(1, 3), unique=True, max_size=2)):
        t = draw(limit_tables())
        if draw(st.booleans()):
            t["symbols"] = draw(st.lists(st.integers(1, 2), max_size=2))
        if draw(st.integers(0, 8)) == 5:
            t["kill"] = True
        accts[str(a)] = t
    syms = {}
    for s in draw(st.lists(st.integers(1, 2), unique=True, max_size=2)):
        t = draw(limit_tables())
        if draw(st.booleans()):
            t["reference_price_ticks"] = draw(st.integers(80, 120))
        syms[str(s)] = t
    doc["accounts"], doc["symbols"] = accts, syms
    return RiskLimits.from_dict(doc)


def _rare(common, rare):
    """Mostly `common` values, sometimes a `rare` (edge or invalid) one."""
    return st.sampled_from(list(common) * max(1, 24 // len(common)) + list(rare))


@st.composite
def order_rows(draw, n_max=40):
    n = draw(st.integers(0, n_max))
    ts = 0
    rows = []
    for _ in range(n):
        ts += draw(_rare([0, 0, 0, 1, 50_000_000, 150_000_000], [1_000_000_000, 333_333_333]))
        act = draw(_rare([0, 0, 0, 1, 2], [3]))
        otype = draw(_rare([0], [1]))
        rows.append(order(ts=ts, oid=draw(st.integers(1, 14)), side=draw(_rare([1, -1], [0])),
                          px=draw(_rare([90, 99, 100, 101, 110, 125], [0, 1 << 62, (1 << 62) + 1, 7 << 30])),
                          qty=draw(_rare([1, 2, 5, 9, 10, 11, 20], [0, 30, 1 << 32, 1 << 62])),
                          action=act, otype=otype, tif=1 if otype == 1 else draw(_rare([0, 3], [1, 2, 7])),
                          account=draw(st.integers(1, 3)), symbol=draw(st.integers(1, 2)),
                          post=draw(_rare([0], [1]))))
    return rows


@st.composite
def fill_rows(draw):
    return [fill(symbol=draw(st.integers(1, 2)), toid=draw(st.integers(1, 10)), moid=draw(st.integers(1, 10)),
                 ta=draw(st.integers(1, 3)), ma=draw(st.integers(1, 3)), side=draw(st.sampled_from([1, -1])),
                 px=draw(st.integers(85, 115)), qty=draw(st.integers(1, 12)))
            for _ in range(draw(st.integers(0, 4)))]


def state_of(e: RiskEngine) -> tuple:
    p = e.positions()
    pos = [tuple(int(p[k][i]) for k in ("account", "symbol", "position", "cost", "realized_pnl", "open_buy",
                                         "open_sell", "open_orders", "open_notional")) for i in range(len(p["account"]))]
    o = e.open_orders()
    oo = [tuple(int(o[k][i]) for k in ("symbol", "order_id", "account", "side", "leaves_qty", "price_ticks"))
          for i in range(len(o["symbol"]))]
    return pos, oo


def check_account_totals(e: RiskEngine) -> None:
    """The incrementally kept account totals equal sums over the pairs and the open orders."""
    from hpte.kernels.risk import checks as K
    na, ns = len(e._accts), len(e._syms)
    p = e.pair[:na, :ns]
    assert np.array_equal(e.acct[:na, K.A_NOPEN], p[..., K.P_NOPEN].sum(1))
    assert np.array_equal(e.acct[:na, K.A_OPEN_NOTIONAL], p[..., K.P_OPEN_NOTIONAL].sum(1))
    assert np.array_equal(e.acct[:na, K.A_ABS_COST], np.abs(p[..., K.P_COST]).sum(1))
    assert e.g[K.G_NMAP] == int((e.omap[:, K.M_KEY] != -1).sum())


@given(cfg=configs(), steps=st.lists(st.tuples(order_rows(), fill_rows(), st.integers(0, 40),
                                               st.integers(0, 9)), min_size=1, max_size=4))
def test_batch_equals_one_at_a_time_equals_reference(cfg, steps):
    whole, single, ref = RiskEngine(cfg, map_capacity=2), RiskEngine(cfg, map_capacity=4), RiskRef(cfg)
    ts_base = 0
    for rows, fills, cut, event in steps:
        rows = [dict(r, ts_ns=r["ts_ns"] + ts_base) for r in rows]
        if rows:
            ts_base = rows[-1]["ts_ns"]
        # between batches: switches and quotes, the same on all three
        if event == 1:
            for x in (whole, single):
                x.set_kill(True, account=2)
            ref.kill_accounts.add(2)
        elif event == 2:
            for x in (whole, single):
                x.set_kill(False, account=2)
            ref.kill_accounts.discard(2)
        elif event == 3:
            for x in (whole, single):
                x.set_paused(1, True)
            ref.paused.add(1)
        elif event == 4:
            for x in (whole, single):
                x.set_paused(1, False)
            ref.paused.discard(1)
        elif event == 5:
            for x in (whole, single):
                x.set_quotes(2, bid=99, ask=102)
            ref.quotes[2] = (99, 102)
        want = ref.check_rows(rows)
        got_parts = [whole.check(batch(rows[:cut])), whole.check(batch(rows[cut:]))] if rows else []
        got = np.concatenate(got_parts).tolist() if rows else []
        got1 = [int(single.check(batch([r]))[0]) for r in rows]
        assert got == want, (reason_names(got), reason_names(want))
        assert got1 == want
        if fills:
            ref.apply_fills(fills)
            whole.apply_fills(fills_cols(fills))
            single.apply_fills(fills_cols(fills))
        pos, oo = state_of(whole)
        assert (pos, oo) == state_of(single)
        assert oo == ref.open_orders()
        assert pos == ref.positions()
        check_account_totals(whole)


def test_large_ids_and_row_mapping():
    e = eng("[accounts.4000000000]\nmax_order_qty = 5\n[symbols.4294967295]\nmax_order_qty = 3")
    rows = [order(oid=1, account=4_000_000_000, symbol=7, qty=6), order(oid=2, account=4_000_000_000, symbol=7, qty=5),
            order(oid=3, account=9, symbol=4_294_967_295, qty=4), order(oid=4, account=9, symbol=4_294_967_295, qty=3),
            order(oid=(1 << 64) - 1, account=1 << 21, symbol=1 << 22, qty=1)]
    assert names(e, rows) == ["MAX_ORDER_QTY", "", "MAX_ORDER_QTY", "", ""]
    o = e.open_orders()
    assert o["order_id"].tolist() == [2, (1 << 64) - 1, 4] and o["account"].tolist() == [4_000_000_000, 1 << 21, 9]
    assert e.accounts()["account"].tolist() == [9, 1 << 21, 4_000_000_000]



def test_row_prefetch_changes_nothing():
    """prefetch (kernels/risk/checks.py: one or two cache lines of a row, by the row's length)
    is a hint only: every value stays as it was, whatever the row length."""
    from numba import njit
    from hpte.kernels.risk.checks import prefetch

    @njit(_nrt=False)
    def touch(p3, a2, m2):
        t = 0
        for i in range(p3.shape[0]):
            prefetch(p3, i, p3.shape[1] - 1)
            prefetch(a2, i, -1)
            prefetch(m2, i, -1)
            t += p3[i, p3.shape[1] - 1, 0] + a2[i, 0] + m2[i, 0]
        return t

    rng = np.random.default_rng(3)
    p3 = rng.integers(-9, 9, (4, 3, 16))     # 128-byte rows: two lines
    a2 = rng.integers(-9, 9, (4, 16))
    m2 = rng.integers(-9, 9, (4, 4))         # 32-byte rows: one line
    before = [p3.copy(), a2.copy(), m2.copy()]
    assert touch(p3, a2, m2) == int(p3[:, 2, 0].sum() + a2[:, 0].sum() + m2[:, 0].sum())
    for x, y in zip((p3, a2, m2), before):
        np.testing.assert_array_equal(x, y)
