"""Matching algorithms beyond FIFO (README "Matching algorithms"; kernels/book.py alloc_level).

Hand-computed allocations per preset (every expected split below was worked out by hand from the
README's steps, not by running code), run on the engine and on the plain-Python reference; then
hypothesis differential tests of every preset and parameter against the reference, in batches of
1, 7 and whole, on 1 and 2 threads.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference.matcher import ReferenceEngine
from strategies import assert_same, order_streams, rows_to_columns, run_batches, split_batches

from hpte.engine import schema as S
from hpte.engine.engine import Engine
from hpte.engine.matching import MatchingConfig, MatchingConfigError, make_algo

B, SL = S.BUY, S.SELL
IOC = S.TIF_IOC


def row(oid, side, px, qty, acct, tif=S.TIF_GTC, action=S.ACT_NEW, sym=0, otype=S.OT_LIMIT):
    return dict(order_id=oid, side=side, price_ticks=px, qty=qty, account=acct, tif=tif,
                action=action, symbol=sym, order_type=otype)


def stream(rows):
    return rows_to_columns([dict(r, ts_ns=1000 + k) for k, r in enumerate(rows)])


def splits(rows, **kw):
    """(maker id, qty) of every fill, from the engine (also on 2 threads) and the reference:
    they must agree; returned once."""
    cols = stream(rows)
    out = []
    ref_kw = {k: v for k, v in kw.items() if k != "threads"}
    for eng in (Engine(**kw), ReferenceEngine(**ref_kw)):
        f = eng.submit(cols).fills
        out.append(list(zip(f["maker_order_id"].tolist(), f["qty"].tolist())))
    assert out[0] == out[1], f"engine {out[0]} != reference {out[1]}"
    return out[0]


# Asks at 100 in time order: 1 (10 lots, account 1), 2 (30, account 2), 3 (60, account 3):
# T = 100. Order 1 came to an empty ask side: it is the ask side's TOP order.
LEVEL = [row(1, SL, 100, 10, 1), row(2, SL, 100, 30, 2), row(3, SL, 100, 60, 3)]


def taker(qty, oid=9, px=100, acct=4):
    return row(oid, B, px, qty, acct, tif=IOC)


def test_fifo_default():
    assert splits(LEVEL + [taker(25)]) == [(1, 10), (2, 15)]
    assert splits(LEVEL + [taker(25)], algo="fifo") == [(1, 10), (2, 15)]


def test_pro_rata_rounding_and_residual():
    # floor(25*10/100)=2, floor(25*30/100)=7, floor(25*60/100)=15: 24; residual 1 to order 1
    assert splits(LEVEL + [taker(25)], algo="pro-rata") == [(1, 3), (2, 7), (3, 15)]
    # three equal orders, 10 lots: 3 each, the odd lot to the first in time
    eq = [row(1, SL, 100, 10, 1), row(2, SL, 100, 10, 2), row(3, SL, 100, 10, 3)]
    assert splits(eq + [taker(10)], algo="pro-rata") == [(1, 4), (2, 3), (3, 3)]


def test_pro_rata_min_alloc():
    # R=9: shares 0, 2, 5 (sum 7), residual 2 in time order -> 1 gets 2
    assert splits(LEVEL + [taker(9)], matching={"defaults": {"algorithm": "pro-rata", "min_alloc": 2}}) \
        == [(1, 2), (2, 2), (3, 5)]
    # min_alloc 3: order 2's 2 lots become 0; residual 4 to order 1 (its leaves 10)
    assert splits(LEVEL + [taker(9)], matching={"defaults": {"algorithm": "pro-rata", "min_alloc": 3}}) \
        == [(1, 4), (3, 5)]


def test_r_at_least_t_fills_everything_then_next_level():
    rows = LEVEL + [row(4, SL, 101, 20, 1), taker(110, px=101)]
    for algo in ("pro-rata", "allocation", "split", "fifo-lmm", "threshold-pro-rata"):
        assert splits(rows, algo=algo) == [(1, 10), (2, 30), (3, 60), (4, 10)], algo


def test_allocation_top_first():
    # TOP (order 1) 10; R'=15 over T'=90: 5 and 10; nothing left
    assert splits(LEVEL + [taker(25)], algo="allocation") == [(1, 10), (2, 5), (3, 10)]
    # R=8: TOP takes all 8
    assert splits(LEVEL + [taker(8)], algo="allocation") == [(1, 8)]
    # R=13: TOP 10; R'=3 over 90: floor(3*30/90)=1 < 2 -> 0, floor(3*60/90)=2; residual 1 -> order 2
    assert splits(LEVEL + [taker(13)], algo="allocation") == [(1, 10), (2, 1), (3, 2)]


def test_threshold_pro_rata_configurable_min_alloc():
    m = {"defaults": {"algorithm": "threshold-pro-rata", "min_alloc": 3}}
    # TOP 10; R'=13 over 90: floor(13*30/90)=4, floor(13*60/90)=8 -> 12; residual 1 -> order 2
    assert splits(LEVEL + [taker(23)], matching=m) == [(1, 10), (2, 5), (3, 8)]
    # TOP 10; R'=5: floor(5*30/90)=1 -> 0 (below 3), floor(5*60/90)=3; residual 2 -> order 2
    assert splits(LEVEL + [taker(15)], matching=m) == [(1, 10), (2, 2), (3, 3)]


def test_split_fifo_share_then_pro_rata():
    # FIFO share floor(50*40/100)=20: order 1 10, order 2 10. R'=30 over T'=80 (0, 20, 60):
    # 0, floor(30*20/80)=7, floor(30*60/80)=22 -> 29; residual 1 -> order 2
    assert splits(LEVEL + [taker(50)], algo="split") == [(1, 10), (2, 18), (3, 22)]
    m = {"defaults": {"algorithm": "split", "fifo_pct": 0}}   # pure pro rata then
    assert splits(LEVEL + [taker(25)], matching=m) == [(1, 3), (2, 7), (3, 15)]


def test_fifo_lmm():
    m = {"defaults": {"algorithm": "fifo-lmm", "lmm_accounts": [3]}}
    # LMM budget floor(25*20/100)=5 to account 3's order; the other 20 in time priority
    assert splits(LEVEL + [taker(25)], matching=m) == [(1, 10), (2, 10), (3, 5)]
    m = {"defaults": {"algorithm": "fifo-lmm", "lmm_pct": 50, "lmm_accounts": [1, 3]}}
    # budget floor(40*50/100)=20: order 1 10, order 3 10; then FIFO 20: order 2 20
    assert splits(LEVEL + [taker(40)], matching=m) == [(1, 10), (2, 20), (3, 10)]
    # an LMM with less than its budget resting: the rest goes on in time priority
    m = {"defaults": {"algorithm": "fifo-lmm", "lmm_pct": 100, "lmm_accounts": [1]}}
    assert splits(LEVEL + [taker(30)], matching=m) == [(1, 10), (2, 20)]


def test_top_gained_and_lost():
    # ask 1 @101 (empty side: TOP), ask 2 @100 (strictly better: TOP now), ask 3 @100 (not better)
    base = [row(1, SL, 101, 10, 1), row(2, SL, 100, 10, 2), row(3, SL, 100, 10, 3)]
    # R=12 at 100: TOP order 2 gets 10; R'=2 over order 3 (10): floor(2*10/10)=2
    assert splits(base + [taker(12)], algo="allocation") == [(2, 10), (3, 2)]
    # order 2 replaced (qty 10 -> 9, keeps its place): no longer TOP. R=6 over T=19:
    # floor(6*9/19)=2, floor(6*10/19)=3, residual 1 -> order 2
    rep = dict(row(2, SL, 100, 9, 2), action=S.ACT_REPLACE)
    assert splits(base + [rep, taker(6)], algo="allocation") == [(2, 3), (3, 3)]
    # order 2 cancelled: a later order at the same price is not TOP (not strictly better)
    cxl = dict(row(2, SL, 100, 0, 2), action=S.ACT_CANCEL)
    assert splits(base + [cxl, row(4, SL, 100, 10, 4), taker(6)], algo="allocation") == [(3, 3), (4, 3)]
    # a new better ask 5 @99 takes TOP; it fills, and order 2 does not regain it
    rows = base + [row(5, SL, 99, 4, 5), taker(4, oid=8, px=99), taker(6)]
    assert splits(rows, algo="allocation") == [(5, 4), (2, 3), (3, 3)]
    # FIFO books keep no TOP: the same stream is plain time priority
    assert splits(base + [taker(12)]) == [(2, 10), (3, 2)]


def test_self_trade_resolved_before_allocation():
    # account 2 takes: its order 2 is cancelled first (cancel-oldest), then 25 over 1 and 3
    # (T=70): floor(25*10/70)=3, floor(25*60/70)=21, residual 1 -> order 1
    t = taker(25, acct=2)
    assert splits(LEVEL + [t], algo="pro-rata", stp="cancel-oldest") == [(1, 4), (3, 21)]
    # cancel-newest: the taker is cancelled before anything trades at the level
    assert splits(LEVEL + [t], algo="pro-rata", stp="cancel-newest") == []
    # decrement: order 2 (30) and the taker (25) both lose 25; nothing left to trade
    assert splits(LEVEL + [t], algo="pro-rata", stp="decrement") == []
    # FIFO meets the own order in its place: order 1 fills first
    assert splits(LEVEL + [t], stp="cancel-newest") == [(1, 10)]


def test_fok_with_pro_rata():
    fok = row(9, B, 100, 100, 4, tif=S.TIF_FOK)
    assert splits(LEVEL + [fok], algo="pro-rata") == [(1, 10), (2, 30), (3, 60)]
    fok = row(9, B, 100, 101, 4, tif=S.TIF_FOK)
    assert splits(LEVEL + [fok], algo="pro-rata") == []


def test_per_symbol_algorithms():
    rows = [dict(r, symbol=s) for s in (1, 2) for r in LEVEL] + [dict(taker(25, oid=9), symbol=1),
                                                                 dict(taker(25, oid=8), symbol=2)]
    m = {"defaults": {"algorithm": "fifo"}, "symbols": {"2": {"algorithm": "pro-rata"}}}
    assert splits(rows, matching=m) == [(1, 10), (2, 15), (1, 3), (2, 7), (3, 15)]
    assert splits(rows, matching=m, threads=2) == [(1, 10), (2, 15), (1, 3), (2, 7), (3, 15)]


def test_wide_quantities_exact():
    big = 1 << 40
    rows = [row(1, SL, 100, big, 1), row(2, SL, 100, 3 * big, 2), row(3, SL, 100, 5, 3), taker(2 * big + 3)]
    # R=2^41+3 over T=2^42+5: floor(R*q/T) in exact integers
    R_, T_ = 2 * big + 3, 4 * big + 5
    a = [R_ * q // T_ for q in (big, 3 * big, 5)]
    res = R_ - sum(a)
    want = [(1, a[0] + res), (2, a[1]), (3, a[2])] if a[2] else [(1, a[0] + res), (2, a[1])]
    assert splits(rows, algo="pro-rata") == want


# --------------------------------------------------------------------------- configuration
def test_config_errors_name_the_key():
    with pytest.raises(MatchingConfigError, match=r"^algorithm: unknown algorithm 'prorata' \(did you mean 'pro-rata'"):
        Engine(algo="prorata")
    with pytest.raises(MatchingConfigError, match=r"^symbols\.3\.lmm_pct: must be an integer in \[0, 100\], got 120"):
        Engine(matching={"symbols": {"3": {"algorithm": "fifo-lmm", "lmm_pct": 120}}})
    with pytest.raises(MatchingConfigError, match=r"^defaults\.fifo_pct: algorithm 'pro-rata' has no fifo_pct"):
        Engine(matching={"defaults": {"algorithm": "pro-rata", "fifo_pct": 10}})
    with pytest.raises(MatchingConfigError, match=r"^symbols\.x: must be a symbol id"):
        MatchingConfig.from_dict({"symbols": {"x": {}}})
    with pytest.raises(MatchingConfigError, match=r"^defaults\.min_aloc: unknown key \(did you mean 'min_alloc'"):
        MatchingConfig.from_dict({"defaults": {"algorithm": "pro-rata", "min_aloc": 1}})
    with pytest.raises(MatchingConfigError, match=r"lmm_accounts: at most 7 accounts"):
        make_algo("fifo-lmm", lmm_accounts=list(range(8)))
    with pytest.raises(MatchingConfigError, match=r"^min_alloc: must be an integer in \[1, "):
        make_algo("pro-rata", min_alloc=0)


def test_config_file(tmp_path):
    p = tmp_path / "m.toml"
    p.write_text('[defaults]\nalgorithm = "split"\nfifo_pct = 25\n\n[symbols.7]\nmin_alloc = 4\n'
                 '[symbols.8]\nalgorithm = "fifo-lmm"\nlmm_accounts = [1, 2]\n')
    m = MatchingConfig.load(p)
    assert m.algo_for(0) == make_algo("split", fifo_pct=25)
    assert m.algo_for(7) == make_algo("split", fifo_pct=25, min_alloc=4)   # defaults' keys apply
    assert m.algo_for(8) == make_algo("fifo-lmm", lmm_accounts=[1, 2])
    p.write_text('[defaults]\nalgorithm = "split"\nfifo_pct = 250\n')
    with pytest.raises(MatchingConfigError, match=r"m\.toml: defaults\.fifo_pct: must be an integer"):
        MatchingConfig.load(p)
    p.write_text('[defaults\n')
    with pytest.raises(MatchingConfigError, match="not valid TOML"):
        MatchingConfig.load(p)


# --------------------------------------------------------------------------- differential
ALGOS = st.sampled_from([
    {"defaults": {"algorithm": "pro-rata"}},
    {"defaults": {"algorithm": "pro-rata", "min_alloc": 2}},
    {"defaults": {"algorithm": "allocation"}},
    {"defaults": {"algorithm": "split"}},
    {"defaults": {"algorithm": "split", "fifo_pct": 75, "min_alloc": 3}},
    {"defaults": {"algorithm": "fifo-lmm", "lmm_accounts": [2]}},
    {"defaults": {"algorithm": "fifo-lmm", "lmm_pct": 60, "lmm_accounts": [1, 3]}},
    {"defaults": {"algorithm": "threshold-pro-rata", "min_alloc": 4}},
    {"defaults": {"algorithm": "pro-rata"}, "symbols": {"1": {"algorithm": "fifo"},
                                                        "2": {"algorithm": "allocation"}}},
])


def _outputs(eng, cols, size):
    batches = [cols] if size is None else split_batches(cols, size)
    out = run_batches(eng, batches)
    out["l3"] = eng.book_l3()
    return out


def _compare(matching, stp, cols, sizes=(1, 7, None), threads=(1, 2)):
    ref = _outputs(ReferenceEngine(stp=stp, matching=matching), cols, None)
    for size in sizes:
        for th in threads:
            got = _outputs(Engine(stp=stp, matching=matching, threads=th), cols, size)
            tag = f"{matching} stp={stp} batch={size} threads={th}"
            for key, columns in (("fills", S.FILL_COLUMNS), ("events", S.EVENT_COLUMNS),
                                 ("deltas", S.DELTA_COLUMNS), ("l3", S.L3_COLUMNS)):
                assert_same(got[key], ref[key], columns, f"{tag}: {key}")


@settings(max_examples=40)
@given(matching=ALGOS, stp=st.sampled_from(list(S.STP_NAMES)),
       cols=order_streams(max_rows=60, n_symbols=3, n_accounts=3, n_prices=4))
def test_algorithms_match_reference(matching, stp, cols):
    _compare(matching, stp, cols)


@settings(max_examples=20)
@given(matching=ALGOS, cols=order_streams(max_rows=60, n_symbols=1, n_accounts=4, n_prices=2, invalid=False))
def test_algorithms_match_reference_deep_levels(matching, cols):
    """One book, two prices: long queues, many makers per allocation."""
    _compare(matching, "none", cols, sizes=(None,), threads=(1,))


# --------------------------------------------------------------------------- CLI
def test_cli_match_algo_and_matching_file(tmp_path):
    import pyarrow.parquet as pq
    from typer.testing import CliRunner

    from hpte.cli.main import app
    from hpte.engine import io
    from hpte.engine.gen import generate_flow

    cols = generate_flow(3_000, n_books=2, n_accounts=20, seed=5)
    orders = tmp_path / "o.parquet"
    io.write_columns(orders, cols, S.ORDER_SCHEMA)
    runner = CliRunner()
    syms = np.unique(cols["symbol"]).tolist()
    toml = tmp_path / "m.toml"
    toml.write_text(f'[defaults]\nalgorithm = "pro-rata"\n[symbols.{syms[0]}]\nalgorithm = "fifo-lmm"\n'
                    f'lmm_accounts = [1, 2]\n')
    for args, kw in ((["--algo", "split"], {"algo": "split"}),
                     (["--matching", str(toml)], {"matching": MatchingConfig.load(toml)})):
        f = tmp_path / "f.parquet"
        r = runner.invoke(app, ["match", str(orders), "--fills", str(f), "--batch-size", "500"] + args)
        assert r.exit_code == 0, r.output
        want = ReferenceEngine(**kw).submit(cols).fills
        got = pq.read_table(f)
        for k in ("seq", "maker_order_id", "qty", "price_ticks"):
            np.testing.assert_array_equal(got.column(k).to_numpy(), want[k], err_msg=k)
        # and the split differs from FIFO's on this flow (the option is not ignored)
        assert not np.array_equal(got.column("qty").to_numpy(), ReferenceEngine().submit(cols).fills["qty"]) \
            or len(got) != len(ReferenceEngine().submit(cols).fills["qty"])
    for args, msg in ((["--algo", "pro_rata"], "hpte match: error: --algo: unknown algorithm 'pro_rata' (did you mean 'pro-rata'?)"),
                      (["--matching", str(tmp_path / "nope.toml")], "cannot read matching file")):
        toml.write_text('[symbols.1]\nalgorithm = "split"\nfifo_pct = -1\n')
        r = runner.invoke(app, ["match", str(orders), "--fills", str(tmp_path / "f.parquet")] + args)
        assert r.exit_code == 1 and msg in r.output and len(r.output.strip().splitlines()) == 1, r.output
    r = runner.invoke(app, ["match", str(orders), "--fills", str(tmp_path / "f.parquet"), "--matching", str(toml)])
    assert r.exit_code == 1 and "symbols.1.fifo_pct: must be an integer in [0, 100], got -1" in r.output, r.output


def test_risk_kernel_runs_the_same_allocation(rng):
    """The risk build of the step (match_seq_risk_cpu) allocates like the plain one: with no
    limits set, the same outputs for every STP mode; positions add up to the fills."""
    from strategies import random_stream

    from hpte.engine.risk.limits import RiskLimits
    cols = random_stream(rng, 300, n_symbols=2)
    m = {"defaults": {"algorithm": "split"}, "symbols": {"7": {"algorithm": "allocation"}}}
    for stp in ("none", "cancel-oldest"):
        a = Engine(stp=stp, matching=m).submit(cols)
        b = Engine(stp=stp, matching=m, risk=RiskLimits()).submit(cols)
        assert_same(b.fills, a.fills, S.FILL_COLUMNS, f"{stp}: fills")
        assert_same(b.events, a.events, S.EVENT_COLUMNS, f"{stp}: events")
        assert_same(b.deltas, a.deltas, S.DELTA_COLUMNS, f"{stp}: deltas")


# --------------------------------------------------------------------------- stateful
from hypothesis.stateful import initialize  # noqa: E402
from test_book_stateful import BookMachine  # noqa: E402


class AlgoBookMachine(BookMachine):
    """tests/test_book_stateful.py's machine (never crossed, quantity conserved per order, time
    priority kept within a level, L2 deltas rebuild the book) on books with other algorithms."""

    @initialize(stp=st.sampled_from(list(S.STP_NAMES)), matching=ALGOS)
    def start(self, stp, matching):
        self.stp = stp
        self.eng = Engine(stp=stp, matching=matching)


TestAlgoBook = AlgoBookMachine.TestCase
TestAlgoBook.settings = settings(max_examples=15, stateful_step_count=30, deadline=None)


def test_cli_demo_algorithms():
    from typer.testing import CliRunner

    from hpte.cli.main import app
    r = CliRunner().invoke(app, ["demo", "--algorithms", "-n", "2000"])
    assert r.exit_code == 0, r.output
    lines = {ln.split()[0]: ln for ln in r.output.splitlines() if ln.startswith("  ") and "order 1:" in ln}
    assert "order 1:  3  order 2:  7  order 3: 15" in lines["pro-rata"]          # README's example
    assert "order 1: 10  order 2:  5  order 3: 10" in lines["allocation"]
    assert "order 1: 10  order 2: 10  order 3:  5" in lines["fifo-lmm"]
    assert "order 1: 10  order 2: 15  order 3:  0" in lines["fifo"]
    assert r.output.count("\n  threshold-pro-rata ") == 2      # the example and the generated book
