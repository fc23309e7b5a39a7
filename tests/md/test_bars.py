"""Streaming bars (time, volume), VWAP, totals, imbalance/microprice and `hpte md bars`, against
plain-Python references, including "chunks == whole" for chunk boundaries anywhere."""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit
from typer.testing import CliRunner

from hpte.cli.main import app
from hpte.engine import io
from hpte.engine import schema as S
from hpte.engine.io import InputError, parse_duration
from hpte.engine.md.bars import BAR_COLUMNS, BarAggregator, bars_from_trades, book_imbalance, concat_bars, pv_to_float
from hpte.kernels.md import bars as K

INT_COLS = [n for n, t in BAR_COLUMNS if t.kind in "iu"]


# --- plain-Python references ----------------------------------------------------------------------
def ref_time_bars(trades: list[tuple], every: int) -> list[dict]:
    """Declarative: one bar per (window, symbol) with trades; ordered by window, then first trade."""
    groups: dict[tuple, dict] = {}
    for row, (t, s, p, q) in enumerate(trades):
        w = t // every * every
        b = groups.get((w, s))
        if b is None:
            groups[(w, s)] = b = {"symbol": s, "start_ns": w, "end_ns": w + every, "open": p, "high": p,
                                  "low": p, "close": p, "volume": 0, "n_trades": 0, "pv": 0, "row": row}
        b["high"] = max(b["high"], p)
        b["low"] = min(b["low"], p)
        b["close"] = p
        b["volume"] += q
        b["n_trades"] += 1
        b["pv"] += p * q
    return sorted(groups.values(), key=lambda b: (b["start_ns"], b["row"]))


def ref_volume_bars(trades: list[tuple], vsize: int) -> list[dict]:
    """Sequential: split trades into pieces that fill bars of exactly vsize lots per symbol."""
    out, open_ = [], {}
    for row, (t, s, p, q) in enumerate(trades):
        rem = q
        while rem:
            b = open_.get(s)
            if b is None:
                open_[s] = b = {"symbol": s, "start_ns": t, "end_ns": t, "open": p, "high": p, "low": p,
                                "close": p, "volume": 0, "n_trades": 0, "pv": 0, "row": row}
            take = min(rem, vsize - b["volume"])
            b["high"], b["low"], b["close"], b["end_ns"] = max(b["high"], p), min(b["low"], p), p, t
            b["volume"] += take
            b["n_trades"] += 1
            b["pv"] += p * take
            rem -= take
            if b["volume"] == vsize:
                out.append(open_.pop(s))
    return out + sorted(open_.values(), key=lambda b: b["row"])


def ref_totals(trades: list[tuple]) -> dict[int, tuple[int, int, int]]:
    tot: dict[int, list[int]] = {}
    for t, s, p, q in trades:
        v = tot.setdefault(s, [0, 0, 0])
        v[0] += q
        v[1] += 1
        v[2] += p * q
    return {s: tuple(v) for s, v in tot.items()}


def ref_imbalance(bp: int, bs: int, ap: int, asz: int) -> tuple[float, float]:
    imb = (bs - asz) / (bs + asz) if bs + asz > 0 else math.nan
    micro = float(Fraction(bp * asz + ap * bs, bs + asz)) if bs > 0 and asz > 0 else math.nan
    return imb, micro


def as_cols(trades: list[tuple]) -> dict[str, np.ndarray]:
    t = list(zip(*trades)) if trades else [[], [], [], []]
    return {"ts_ns": np.array(t[0], dtype=np.int64), "symbol": np.array(t[1], dtype=np.uint32),
            "price_ticks": np.array(t[2], dtype=np.int64), "qty": np.array(t[3], dtype=np.int64)}


def assert_bars_equal(got: dict, ref: list[dict]) -> None:
    assert len(got["symbol"]) == len(ref)
    for n in INT_COLS:
        assert got[n].tolist() == [b[n] for b in ref], n
    for v, b in zip(got["vwap"].tolist(), ref):
        assert math.isclose(v, float(Fraction(b["pv"], b["volume"])), rel_tol=1e-13), (v, b)


def run_chunked(trades, cuts, **kw) -> dict:
    agg = BarAggregator(**kw)
    cols = as_cols(trades)
    bounds = [0] + sorted(cuts) + [len(trades)]
    parts = [agg.update({k: v[a:b] for k, v in cols.items()}) for a, b in zip(bounds[:-1], bounds[1:])]
    return concat_bars(parts + [agg.flush()])


# --- hypothesis data: equal timestamps, several symbols, cut points anywhere -------------------------
@st.composite
def trade_streams(draw, max_n=60, big=False):
    n = draw(st.integers(0, max_n))
    # direct table (< 65536), table grown on demand (< 2**20), hash (>= 2**20)
    syms = draw(st.lists(st.sampled_from([0, 1, 7, 123456, 2**20 - 1, 2**20, 2**32 - 1]), min_size=n, max_size=n))
    gaps = draw(st.lists(st.sampled_from([0, 0, 1, 3, 10, 25]), min_size=n, max_size=n))
    t0 = draw(st.sampled_from([0, 1_700_000_000_000_000_000, -100]))
    ts = np.cumsum(gaps).tolist()
    pxs = st.integers(-2**62, 2**62) if big else st.integers(-5, 200)
    qts = st.integers(1, 2**40) if big else st.integers(1, 30)
    px = draw(st.lists(pxs, min_size=n, max_size=n))
    q = draw(st.lists(qts, min_size=n, max_size=n))
    trades = [(t0 + ts[i], syms[i], px[i], q[i]) for i in range(n)]
    cuts = draw(st.lists(st.integers(0, n), max_size=5))
    return trades, cuts


@settings(max_examples=100)
@given(data=trade_streams(), every=st.sampled_from([1, 2, 7, 10, 1000]), buf=st.sampled_from([1, 3, 4096]),
       syms=st.sampled_from([1, 64]))
def test_time_bars_chunks_equal_whole_equal_reference(data, every, buf, syms):
    trades, cuts = data
    ref = ref_time_bars(trades, every)
    whole = bars_from_trades(as_cols(trades), every=every)
    assert_bars_equal(whole, ref)
    chunked = run_chunked(trades, cuts, every=every, bar_buffer=buf, symbols=syms)
    assert_bars_equal(chunked, ref)


@settings(max_examples=100)
@given(data=trade_streams(), vsize=st.sampled_from([1, 5, 17, 100]), buf=st.sampled_from([1, 2, 4096]),
       syms=st.sampled_from([1, 64]))
def test_volume_bars_chunks_equal_whole_equal_reference(data, vsize, buf, syms):
    trades, cuts = data
    ref = ref_volume_bars(trades, vsize)
    assert_bars_equal(bars_from_trades(as_cols(trades), volume=vsize), ref)
    assert_bars_equal(run_chunked(trades, cuts, volume=vsize, bar_buffer=buf, symbols=syms), ref)


@settings(max_examples=100)
@given(data=trade_streams(max_n=30, big=True), every=st.sampled_from([1, 10]), vsize=st.sampled_from([2**39, 2**41]))
def test_vwap_sums_exact_beyond_int64(data, every, vsize):
    # prices near 2**62 times qty up to 2**40: products need 103 bits
    trades, cuts = data
    assert_bars_equal(run_chunked(trades, cuts, every=every), ref_time_bars(trades, every))
    assert_bars_equal(run_chunked(trades, cuts, volume=vsize), ref_volume_bars(trades, vsize))


@settings(max_examples=100)
@given(data=trade_streams(), every=st.sampled_from([3, 10]), mode=st.sampled_from(["time", "volume"]))
def test_totals_and_partial(data, every, mode):
    trades, cuts = data
    kw = {"every": every} if mode == "time" else {"volume": every}
    agg = BarAggregator(**kw)
    cols = as_cols(trades)
    bounds = [0] + sorted(cuts) + [len(trades)]
    parts = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        parts.append(agg.update({k: v[a:b] for k, v in cols.items()}))
        agg.partial()  # looking at the open bars changes nothing
    tot = agg.totals()
    ref = ref_totals(trades)
    assert sorted(tot["symbol"].tolist()) == sorted(ref)
    for s, v, c, w in zip(tot["symbol"].tolist(), tot["volume"].tolist(), tot["n_trades"].tolist(), tot["vwap"].tolist()):
        assert (v, c) == ref[s][:2]
        assert math.isclose(w, float(Fraction(ref[s][2], ref[s][0])), rel_tol=1e-13)
    part = agg.partial()
    flushed = agg.flush()
    for n, _ in BAR_COLUMNS:
        assert np.array_equal(part[n], flushed[n])
    ref_bars = ref_time_bars(trades, every) if mode == "time" else ref_volume_bars(trades, every)
    assert_bars_equal(concat_bars(parts + [flushed]), ref_bars)


@settings(max_examples=300)
@given(p=st.integers(-2**63, 2**63 - 1), q=st.integers(1, 2**63 - 1), hi=st.integers(-2**40, 2**40),
       lo=st.integers(0, 2**64 - 1))
def test_add_mul_128_exact(p, q, hi, lo):
    got_hi, got_lo = _amul(np.int64(hi), np.int64(lo - 2**64 if lo >= 2**63 else lo), np.int64(p), np.int64(q))
    val = (hi << 64) + lo + p * q
    assert (int(got_hi) << 64) + (int(got_lo) & (2**64 - 1)) == val
    assert pv_to_float(np.array([got_hi]), np.array([got_lo]))[0] == pytest.approx(float(val), rel=1e-15)


@njit
def _amul(hi, lo, p, q):
    return K.add_mul_128(hi, lo, p, q)


def test_pv_to_float_small_negative_is_exact():
    # -5 is hi=-1, lo=2**64-5: naive hi*2**64 + lo cancels to 0
    assert pv_to_float(np.array([-1, 0]), np.array([-5, 7])).tolist() == [-5.0, 7.0]


# --- examples and edge cases ---------------------------------------------------------------------
TR = [(0, 1, 100, 1), (5, 2, 200, 2), (10, 1, 101, 3), (12, 1, 99, 4), (25, 2, 205, 5), (25, 1, 98, 6),
      (40, 1, 97, 7)]


def test_time_bars_example_and_emission_timing():
    agg = BarAggregator(every=10)
    c = as_cols(TR)
    first = agg.update({k: v[:3] for k, v in c.items()})  # ts 10 completes the window [0, 10)
    assert first["symbol"].tolist() == [1, 2] and first["end_ns"].tolist() == [10, 10]
    rest = agg.update({k: v[3:] for k, v in c.items()})
    assert rest["start_ns"].tolist() == [10, 20, 20] and rest["symbol"].tolist() == [1, 2, 1]
    last = agg.flush()
    assert last["start_ns"].tolist() == [40] and last["close"].tolist() == [97]
    b = concat_bars([first, rest, last])
    assert b["volume"].tolist() == [1, 2, 7, 5, 6, 7]
    assert b["vwap"][2] == pytest.approx((101 * 3 + 99 * 4) / 7)


def test_volume_bars_split_straddling_trades():
    b = bars_from_trades(as_cols(TR), volume=4)
    # symbol 1: (1@100 + 3@101) | 4@99 | 4 of 6@98 | 2@98 + 2 of 7@97 | 4@97 | partial 1@97
    assert b["symbol"].tolist() == [1, 1, 2, 1, 1, 1, 2, 1]
    assert b["volume"].tolist() == [4, 4, 4, 4, 4, 4, 3, 1]
    assert b["n_trades"].tolist() == [2, 1, 2, 1, 2, 1, 1, 1]
    assert b["open"].tolist()[4] == 98 and b["close"].tolist()[4] == 97
    assert b["start_ns"].tolist()[4] == 25 and b["end_ns"].tolist()[4] == 40


def test_one_huge_trade_fills_many_volume_bars_with_tiny_buffer():
    agg = BarAggregator(volume=10, bar_buffer=1)
    b = agg.update(as_cols([(1, 3, 50, 1005)]))
    assert len(b["symbol"]) == 100 and set(b["volume"].tolist()) == {10}
    assert agg.totals()["n_trades"].tolist() == [1]  # the split trade counts once
    assert agg.flush()["volume"].tolist() == [5]


def test_many_symbols_grow_state():
    rng = np.random.default_rng(5)
    n = 5000
    syms = rng.integers(0, 2**32, 300, dtype=np.uint64)[rng.integers(0, 300, n)].astype(np.uint32)
    trades = list(zip(np.cumsum(rng.integers(0, 3, n)).tolist(), syms.tolist(),
                      rng.integers(90, 110, n).tolist(), rng.integers(1, 9, n).tolist()))
    agg = BarAggregator(every=50, symbols=1, bar_buffer=2)
    got = concat_bars([agg.update(as_cols(trades)), agg.flush()])
    assert_bars_equal(got, ref_time_bars(trades, 50))
    assert agg.n_symbols == len(set(syms.tolist()))


def test_empty_input_and_arrow_input():
    assert len(bars_from_trades(as_cols([]), every=5)["symbol"]) == 0
    tbl = pa.table({"ts_ns": pa.array([1, 2], pa.int64()), "symbol": pa.array([4, 4], pa.uint32()),
                    "price_ticks": pa.array([10, 12], pa.int64()), "qty": pa.array([1, 1], pa.int64()),
                    "extra": pa.array(["a", "b"])})
    assert bars_from_trades(tbl, every="1ns")["volume"].tolist() == [1, 1]


def test_bad_rows_and_args_raise_naming_the_field():
    agg = BarAggregator(every=10)
    agg.update(as_cols([(5, 1, 10, 1), (6, 1, 10, 1)]))
    with pytest.raises(InputError, match=r"column 'ts_ns' row 3: timestamps must not decrease \(6 then 4\)"):
        agg.update(as_cols([(6, 1, 10, 1), (4, 1, 10, 1)]))
    with pytest.raises(ValueError, match="bad row"):
        agg.update(as_cols([(7, 1, 10, 1)]))
    with pytest.raises(InputError, match=r"column 'qty' row 1: quantity must be positive, got 0"):
        bars_from_trades(as_cols([(1, 1, 10, 1), (2, 1, 10, 0)]), volume=3)
    with pytest.raises(InputError, match="missing required column 'qty'"):
        bars_from_trades({k: v for k, v in as_cols(TR).items() if k != "qty"}, every=5)
    with pytest.raises(InputError, match="column 'symbol' row 0: value -1 does not fit uint32"):
        bars_from_trades({**as_cols(TR[:1]), "symbol": np.array([-1])}, every=5)
    with pytest.raises(ValueError, match="exactly one of every"):
        BarAggregator()
    with pytest.raises(ValueError, match="exactly one of every"):
        BarAggregator(every=1, volume=1)
    with pytest.raises(ValueError, match="volume 0"):
        BarAggregator(volume=0)
    agg = BarAggregator(volume=3)
    agg.flush()
    with pytest.raises(ValueError, match="flushed"):
        agg.update(as_cols(TR))


@pytest.mark.parametrize("text,ns", [("1s", 10**9), ("500ms", 5 * 10**8), ("100us", 10**5), ("100µs", 10**5),
                                     ("1m", 6 * 10**10), ("2h", 7.2e12), ("250ns", 250), ("1.5s", 1.5e9), (7, 7)])
def test_parse_duration(text, ns):
    assert parse_duration(text) == int(ns)


@pytest.mark.parametrize("text", ["1", "1x", "0s", "-1s", "1.5ns", "s", ""])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration(text)


# --- imbalance and microprice ----------------------------------------------------------------------
@settings(max_examples=100)
@given(st.lists(st.tuples(st.integers(-10**6, 10**9), st.integers(0, 10**7), st.integers(-10**6, 10**9),
                          st.integers(0, 10**7)), max_size=20))
def test_book_imbalance_matches_reference(rows):
    t = list(zip(*rows)) if rows else [[], [], [], []]
    imb, micro = book_imbalance(*t)
    for (bp, bs, ap, asz), i, m in zip(rows, imb.tolist(), micro.tolist()):
        ri, rm = ref_imbalance(bp, bs, ap, asz)
        assert (math.isnan(i) and math.isnan(ri)) or math.isclose(i, ri, rel_tol=1e-15, abs_tol=1e-15)
        assert (math.isnan(m) and math.isnan(rm)) or math.isclose(m, rm, rel_tol=1e-14, abs_tol=1e-9)


def test_book_imbalance_examples_and_errors():
    imb, micro = book_imbalance([100, 100, 100], [3, 0, 0], [102, 101, 101], [1, 5, 0])
    assert imb[0] == 0.5 and micro[0] == 101.5      # leans toward the ask: more size on the bid
    assert imb[1] == -1.0 and math.isnan(micro[1]) and math.isnan(imb[2])
    with pytest.raises(InputError, match="ask_sz row 0: size must be >= 0"):
        book_imbalance([1], [1], [2], [-1])
    with pytest.raises(InputError, match="ask_px has 2 rows, expected 1"):
        book_imbalance([1], [1], [2, 3], [1])


# --- CLI -----------------------------------------------------------------------------------------
runner = CliRunner()


def write_fills(path, trades) -> None:
    c = as_cols(trades)
    n = len(trades)
    cols = {"seq": np.arange(n, dtype=np.uint64), "ts_ns": c["ts_ns"], "symbol": c["symbol"],
            "taker_order_id": np.zeros(n, np.uint64), "maker_order_id": np.zeros(n, np.uint64),
            "taker_account": np.zeros(n, np.uint32), "maker_account": np.zeros(n, np.uint32),
            "taker_side": np.ones(n, np.int8), "price_ticks": c["price_ticks"], "qty": c["qty"]}
    io.write_columns(path, cols, S.FILL_SCHEMA)


def random_trades(n: int, seed: int = 1) -> list[tuple]:
    rng = np.random.default_rng(seed)
    return list(zip((1_700_000_000 * 10**9 + np.cumsum(rng.integers(0, 3 * 10**8, n))).tolist(),
                    rng.integers(0, 4, n).tolist(), rng.integers(990, 1010, n).tolist(), rng.integers(1, 20, n).tolist()))


@pytest.mark.parametrize("suffix", [".parquet", ".arrow"])
def test_cli_time_bars_chunked_equals_whole(tmp_path, suffix):
    trades = random_trades(500)
    src, dst = tmp_path / f"fills{suffix}", tmp_path / "bars.parquet"
    write_fills(src, trades)
    r = runner.invoke(app, ["md", "bars", str(src), "--every", "1s", "--out", str(dst), "--chunk", "37"])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("wrote ") and "1s time bars for 4 symbols from 500 trades" in r.output
    got = {k: v.to_numpy() for k, v in zip(pq.read_table(dst).column_names, pq.read_table(dst).columns)}
    assert pq.read_schema(dst).names == [n for n, _ in BAR_COLUMNS]
    assert_bars_equal(got, ref_time_bars(trades, 10**9))


def test_cli_volume_bars_and_units(tmp_path):
    trades = random_trades(300, seed=2)
    src = tmp_path / "fills.parquet"
    write_fills(src, trades)
    dst = tmp_path / "vbars.arrow"
    r = runner.invoke(app, ["md", "bars", str(src), "--volume", "25", "--out", str(dst), "-q"])
    assert r.exit_code == 0 and r.output == ""
    got = {k: v.to_numpy() for k, v in zip(io.read_table(dst).column_names, io.read_table(dst).columns)}
    assert_bars_equal(got, ref_volume_bars(trades, 25))
    for every, ns in [("500ms", 5 * 10**8), ("100us", 10**5), ("1m", 6 * 10**10)]:
        r = runner.invoke(app, ["md", "bars", str(src), "--every", every, "--out", str(tmp_path / "b.parquet")])
        assert r.exit_code == 0, r.output
        got = {k: v.to_numpy() for k, v in zip(pq.read_table(tmp_path / "b.parquet").column_names,
                                               pq.read_table(tmp_path / "b.parquet").columns)}
        assert_bars_equal(got, ref_time_bars(trades, ns))


def test_cli_errors_are_one_line_without_traceback(tmp_path):
    src = tmp_path / "fills.parquet"
    write_fills(src, [(5, 1, 10, 1), (4, 1, 10, 1)])
    notrades = tmp_path / "other.parquet"
    pq.write_table(pa.table({"ts_ns": pa.array([1], pa.int64())}), notrades)
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"not parquet")
    out = str(tmp_path / "b.parquet")
    cases = [
        ([str(tmp_path / "missing.parquet"), "--every", "1s"], "no such file"),
        ([str(src), "--every", "1s", "--volume", "3"], "exactly one of --every"),
        ([str(src)], "exactly one of --every"),
        ([str(src), "--every", "1x"], "bad duration '1x'"),
        ([str(src), "--volume", "0"], "--volume 0"),
        ([str(src), "--every", "1s", "--chunk", "0"], "--chunk 0"),
        ([str(src), "--every", "1s"], "row 1: timestamps must not decrease"),
        ([str(notrades), "--every", "1s"], "missing required column 'symbol'"),
        ([str(garbage), "--every", "1s"], "not a readable Parquet file"),
    ]
    for args, msg in cases:
        r = runner.invoke(app, ["md", "bars", *args, "--out", out])
        assert r.exit_code == 1, (args, r.output)
        lines = r.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("hpte md bars: error: ") and msg in lines[0], (args, r.output)
        assert "Traceback" not in r.output
    assert not (tmp_path / "b.parquet").exists() and not (tmp_path / "b.parquet.partial").exists()
