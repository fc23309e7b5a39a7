"""NASDAQ TotalView-ITCH 5.0: decoder, encoder, bad input, CLI.

The reference here is a plain-Python ``struct`` decoder written from the specification's field
lists, independently of the layout table in hpte.engine.md.itch (only the column names are
shared): the kernels are checked against it on the real sample, on synthetic streams with
every message type, and on mutated (fuzzed) streams.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import struct

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from conftest import require_data
from hpte.cli.main import app
from hpte.engine.md import itch as I

SAMPLE = "itch50_start_of_day_1000msgs/sample.itch"
SAMPLE_SHA256 = "6eb643216cb4f0a1960457ca95d88a9fad167f5152841dd94c460dcddf58063b"

# ---------------------------------------------------------------------------------------------
# Reference decoder: struct formats per message type, from the ITCH 5.0 specification.
# 'c'/'Ns' alpha, 'H' u16, 'I' u32 and Price(4), 'Q' u64, 'q' Price(8) (bit pattern kept, as
# hpte's int64), '6s' the u48 timestamp. The type byte precedes the format.
# ---------------------------------------------------------------------------------------------
_HDR = ["stock_locate", "tracking_number", "timestamp"]
REF = {
    "S": (">HH6sc", _HDR + ["event_code"]),
    "R": (">HH6s8sccIcc2scccccIc", _HDR + [
        "stock", "market_category", "financial_status_indicator", "round_lot_size", "round_lots_only",
        "issue_classification", "issue_sub_type", "authenticity", "short_sale_threshold_indicator",
        "ipo_flag", "luld_reference_price_tier", "etp_flag", "etp_leverage_factor", "inverse_indicator"]),
    "H": (">HH6s8scc4s", _HDR + ["stock", "trading_state", "reserved", "reason"]),
    "Y": (">HH6s8sc", _HDR + ["stock", "reg_sho_action"]),
    "L": (">HH6s4s8sccc", _HDR + ["mpid", "stock", "primary_market_maker", "market_maker_mode",
                                  "market_participant_state"]),
    "V": (">HH6sqqq", _HDR + ["level_1", "level_2", "level_3"]),
    "W": (">HH6sc", _HDR + ["breached_level"]),
    "K": (">HH6s8sIcI", _HDR + ["stock", "ipo_quotation_release_time", "ipo_quotation_release_qualifier",
                                "ipo_price"]),
    "J": (">HH6s8sIIII", _HDR + ["stock", "auction_collar_reference_price", "upper_auction_collar_price",
                                 "lower_auction_collar_price", "auction_collar_extension"]),
    "h": (">HH6s8scc", _HDR + ["stock", "market_code", "operational_halt_action"]),
    "A": (">HH6sQcI8sI", _HDR + ["order_reference_number", "buy_sell_indicator", "shares", "stock", "price"]),
    "F": (">HH6sQcI8sI4s", _HDR + ["order_reference_number", "buy_sell_indicator", "shares", "stock", "price",
                                   "attribution"]),
    "E": (">HH6sQIQ", _HDR + ["order_reference_number", "executed_shares", "match_number"]),
    "C": (">HH6sQIQcI", _HDR + ["order_reference_number", "executed_shares", "match_number", "printable",
                                "execution_price"]),
    "X": (">HH6sQI", _HDR + ["order_reference_number", "cancelled_shares"]),
    "D": (">HH6sQ", _HDR + ["order_reference_number"]),
    "U": (">HH6sQQII", _HDR + ["original_order_reference_number", "new_order_reference_number", "shares",
                               "price"]),
    "P": (">HH6sQcI8sIQ", _HDR + ["order_reference_number", "buy_sell_indicator", "shares", "stock", "price",
                                  "match_number"]),
    "Q": (">HH6sQ8sIQc", _HDR + ["shares", "stock", "cross_price", "match_number", "cross_type"]),
    "B": (">HH6sQ", _HDR + ["match_number"]),
    "I": (">HH6sQQc8sIIIcc", _HDR + ["paired_shares", "imbalance_shares", "imbalance_direction", "stock",
                                     "far_price", "near_price", "current_reference_price", "cross_type",
                                     "price_variation_indicator"]),
    "N": (">HH6s8sc", _HDR + ["stock", "interest_flag"]),
    "O": (">HH6s8scIIIQII", _HDR + ["stock", "open_eligibility_status", "minimum_allowable_price",
                                    "maximum_allowable_price", "near_execution_price", "near_execution_time",
                                    "lower_price_range_collar", "upper_price_range_collar"]),
}
# Sizes the sample's README and the specification give (type byte included).
SPEC_SIZES = {"S": 12, "R": 39, "H": 25, "Y": 20, "L": 26, "V": 35, "W": 12, "K": 28, "J": 35, "h": 21,
              "A": 36, "F": 40, "E": 31, "C": 36, "X": 23, "D": 19, "U": 35, "P": 44, "Q": 40, "B": 19,
              "I": 50, "N": 20, "O": 48}


def ref_decode(data: bytes):
    """Plain-Python decoder. Returns (tables letter -> column -> list, messages, stopped_at,
    kind) where kind is None or one of truncated/zero/unknown/length/alpha."""
    tables = {k: {c: [] for c in ["seq"] + names} for k, (_, names) in REF.items()}
    structs = {k: (struct.Struct(fmt), names) for k, (fmt, names) in REF.items()}
    pos, seq, n = 0, 0, len(data)
    while pos < n:
        if n - pos < 2:
            return tables, seq, pos, "truncated"
        length = int.from_bytes(data[pos:pos + 2], "big")
        if length == 0:
            return tables, seq, pos, "zero"
        if n - pos < 3:
            return tables, seq, pos, "truncated"
        letter = chr(data[pos + 2])
        if letter not in structs:
            return tables, seq, pos, "unknown"
        st_, names = structs[letter]
        if length != st_.size + 1:
            return tables, seq, pos, "length"
        if n - pos < 2 + length:
            return tables, seq, pos, "truncated"
        values = st_.unpack_from(data, pos + 3)
        if any(isinstance(v, bytes) and name != "timestamp" and max(v) >= 0x80 for v, name in zip(values, names)):
            return tables, seq, pos, "alpha"
        cols = tables[letter]
        cols["seq"].append(seq)
        for v, name in zip(values, names):
            cols[name].append(int.from_bytes(v, "big") if name == "timestamp" else v)
        seq += 1
        pos += 2 + length
    return tables, seq, None, None


_KIND_TEXT = {"truncated": "truncated", "zero": "length prefix is 0", "unknown": "unknown message type",
              "length": "disagrees with", "alpha": "non-ASCII byte"}


def as_lists(cols: dict[str, np.ndarray]) -> dict[str, list]:
    """Kernel columns as Python lists (alpha: the exact fixed-width bytes)."""
    out = {}
    for name, a in cols.items():
        if a.dtype.kind == "S":
            w = a.dtype.itemsize
            raw = a.tobytes()
            out[name] = [raw[i * w:(i + 1) * w] for i in range(len(a))]
        else:
            out[name] = [int(x) for x in a.tolist()]
    return out


def assert_matches_reference(data: I.ItchData, ref_tables) -> None:
    for letter, cols in ref_tables.items():
        assert as_lists(data.tables[letter]) == cols, letter


def sample_bytes() -> bytes:
    return require_data(SAMPLE).read_bytes()


# ---------------------------------------------------------------------------------------------
# The layout table
# ---------------------------------------------------------------------------------------------
def test_layout_table_matches_the_spec():
    assert len(I.LAYOUTS) == 23
    assert {lay.letter for lay in I.LAYOUTS} == set(SPEC_SIZES)
    for lay in I.LAYOUTS:
        assert lay.size == SPEC_SIZES[lay.letter], lay.letter
        fmt, names = REF[lay.letter]
        assert struct.calcsize(fmt) + 1 == lay.size, lay.letter
        assert [f.name for f in lay.fields] == names, lay.letter
        assert lay.columns[0] == "seq"
        ends = [f.offset + f.size for f in lay.fields]
        assert [f.offset for f in lay.fields] == [1] + ends[:-1] and ends[-1] == lay.size
    assert len({lay.name for lay in I.LAYOUTS}) == 23
    assert I.layout("add_order") is I.layout("A") and I.layout("F").name == "add_order_mpid"
    assert I.layout("h").name == "operational_halt" and I.layout("H").name == "stock_trading_action"
    with pytest.raises(I.ItchError, match="unknown ITCH message type"):
        I.layout("Z")
    assert issubclass(I.ItchError, ValueError)


# ---------------------------------------------------------------------------------------------
# The real sample (README of shared/data/itch50_start_of_day_1000msgs)
# ---------------------------------------------------------------------------------------------
def _ns(h, m, s, ns):
    return ((h * 60 + m) * 60 + s) * 1_000_000_000 + ns


def test_real_sample_counts_and_timestamps():
    p = require_data(SAMPLE)
    assert hashlib.sha256(p.read_bytes()).hexdigest() == SAMPLE_SHA256
    d = I.read_itch(p)
    assert d.counts == {"S": 1, "R": 993, "H": 3, "Y": 3}
    assert (d.messages, d.bytes, d.stopped_at, d.error) == (1000, 40874, None, None)
    seq = np.concatenate([t["seq"] for t in d.tables.values()])
    ts = np.concatenate([t["timestamp"] for t in d.tables.values()])
    assert sorted(seq.tolist()) == list(range(1000))
    ts = ts[np.argsort(seq)]
    assert np.all(np.diff(ts) >= 0)
    assert ts[0] == _ns(3, 4, 32, 57_543_747) and ts[-1] == _ns(3, 9, 14, 360_581_176)


def test_real_sample_fields():
    d = I.read_itch(require_data(SAMPLE))
    s = d["system_event"]
    assert s["seq"].tolist() == [0] and s["event_code"].tolist() == [b"O"]  # start of messages
    assert s["timestamp"][0] == _ns(3, 4, 32, 57_543_747)
    r = d["R"]
    assert r["stock_locate"].tolist() == list(range(1, 994))
    assert r["seq"][0] == 1 and np.all(np.diff(r["seq"]) > 0)
    assert r["stock"].dtype == np.dtype("S8")
    assert r["stock"][:3].tolist() == [b"A       ", b"AA      ", b"AAAU    "]
    assert r["stock"][-1] == b"BPFH    "
    stocks = [x.rstrip() for x in r["stock"].tolist()]
    assert stocks == sorted(stocks)
    # First directory entry (Agilent, 'A'): bytes checked by hand against the spec's field list.
    first = {k: v[0] for k, v in r.items()}
    assert first["tracking_number"] == 0 and first["market_category"] == b"N"  # NYSE
    assert first["financial_status_indicator"] == b" " and first["round_lot_size"] == 100
    assert first["round_lots_only"] == b"N" and first["issue_classification"] == b"C"  # common stock
    assert first["issue_sub_type"] == b"Z " and first["authenticity"] == b"P"  # production
    assert first["short_sale_threshold_indicator"] == b"N" and first["ipo_flag"] == b" "
    assert first["luld_reference_price_tier"] == b"1" and first["etp_flag"] == b"N"
    assert first["etp_leverage_factor"] == 0 and first["inverse_indicator"] == b"N"
    assert r["round_lot_size"].dtype == np.uint32 and r["stock_locate"].dtype == np.uint16
    h, y = d["stock_trading_action"], d["reg_sho_restriction"]
    assert [x.rstrip() for x in h["stock"].tolist()] == [b"A", b"AA", b"AAAU"]
    assert h["trading_state"].tolist() == [b"T"] * 3 and h["stock_locate"].tolist() == [1, 2, 3]
    assert [x.rstrip() for x in y["stock"].tolist()] == [b"A", b"AA", b"AAAU"]
    assert y["reg_sho_action"].tolist() == [b"0"] * 3
    assert all(len(d[lay.letter]["seq"]) == 0 for lay in I.LAYOUTS if lay.letter not in "SRHY")


def test_real_sample_matches_reference_and_reencodes_identically():
    raw = sample_bytes()
    ref_tables, n, stopped, kind = ref_decode(raw)
    assert (n, stopped, kind) == (1000, None, None)
    d = I.parse_itch(raw)
    assert_matches_reference(d, ref_tables)
    assert I.encode_itch(d) == raw
    assert I.encode_itch({k: v for k, v in reversed(list(d.tables.items()))}) == raw  # seq orders


def test_gzip_equals_plain_and_chunks_join(tmp_path):
    raw = sample_bytes()
    plain = tmp_path / "s.itch"
    plain.write_bytes(raw)
    gz = tmp_path / "s.itch.gz"
    gz.write_bytes(gzip.compress(raw))
    want = I.read_itch(plain)
    for got in (I.read_itch(gz), I.concat_itch(list(I.iter_itch(gz, chunk_bytes=4096))),
                I.concat_itch(list(I.iter_itch(plain, chunk_bytes=4099)))):
        assert got.messages == 1000 and got.bytes == len(raw)
        for letter in want.tables:
            assert as_lists(got.tables[letter]) == as_lists(want.tables[letter])
    parts = list(I.iter_itch(gz, chunk_bytes=4096))
    assert len(parts) >= 10 and sum(p.messages for p in parts) == 1000
    # several gzip members, as `cat a.gz b.gz` makes
    two = tmp_path / "two.itch.gz"
    two.write_bytes(gzip.compress(raw[:4012]) + gzip.compress(raw[4012:]))
    assert I.encode_itch(I.read_itch(two, chunk_bytes=4096)) == raw


def test_parquet_round_trip(tmp_path):
    raw = sample_bytes()
    d = I.parse_itch(raw)
    paths = I.write_itch_parquet(d, tmp_path)
    assert sorted(p.name for p in paths.values()) == [
        "reg_sho_restriction.parquet", "stock_directory.parquet", "stock_trading_action.parquet",
        "system_event.parquet"]
    t = pq.read_table(tmp_path / "stock_directory.parquet")
    assert t.schema == I.layout("R").arrow_schema()
    assert t.column("stock").to_pylist()[:3] == ["A", "AA", "AAAU"]
    assert t.column("issue_sub_type").to_pylist()[0] == "Z" and t.column("ipo_flag").to_pylist()[0] == ""
    assert t.schema.field("timestamp").type == pa.int64() and t.schema.field("round_lot_size").type == pa.uint32()
    assert I.encode_itch(I.read_itch_parquet(tmp_path)) == raw


# ---------------------------------------------------------------------------------------------
# Synthetic streams with every message type
# ---------------------------------------------------------------------------------------------
_INT_RANGES = {"u16": (0, 2**16 - 1), "u32": (0, 2**32 - 1), "p4": (0, 2**32 - 1), "ts48": (0, 2**48 - 1),
               "u64": (0, 2**64 - 1), "p8": (-2**63, 2**63 - 1)}


@st.composite
def itch_tables(draw, max_rows: int = 3, with_seq: bool = True):
    tables, total = {}, 0
    for lay in I.LAYOUTS:
        n = draw(st.integers(0, max_rows))
        cols = {}
        for f in lay.fields:
            if f.code.startswith("a"):
                # any ASCII except NUL (numpy's own padding byte)
                vals = draw(st.lists(st.binary(min_size=f.size, max_size=f.size), min_size=n, max_size=n))
                cols[f.name] = np.array([bytes(b % 127 + 1 for b in v) for v in vals], dtype=f.dtype)
            else:
                lo, hi = _INT_RANGES[f.code]
                vals = draw(st.lists(st.integers(lo, hi), min_size=n, max_size=n))
                cols[f.name] = np.array(vals, dtype=np.uint64 if f.code == "u64" else f.dtype)
        tables[lay.letter] = cols
        total += n
    if with_seq:
        perm = draw(st.permutations(range(total)))
        k = 0
        for lay in I.LAYOUTS:
            n = len(tables[lay.letter]["stock_locate"])
            tables[lay.letter]["seq"] = np.array(perm[k:k + n], dtype=np.int64)
            k += n
    return tables


@given(itch_tables())
def test_synthetic_round_trip_all_types(tables):
    raw = I.encode_itch(tables)
    d = I.parse_itch(raw)
    total = sum(len(c["seq"]) for c in tables.values())
    assert d.messages == total and d.bytes == len(raw) == sum(
        (I.BY_LETTER[k].size + 2) * len(c["seq"]) for k, c in tables.items())
    for letter, cols in tables.items():
        got = d.tables[letter]
        order = np.argsort(cols["seq"])
        for name, a in cols.items():
            assert as_lists({name: got[name]})[name] == as_lists({name: np.asarray(a)[order]})[name], (letter, name)
    ref_tables, n, stopped, _ = ref_decode(raw)
    assert n == total and stopped is None
    assert_matches_reference(d, ref_tables)
    assert I.encode_itch(d) == raw


@given(itch_tables(max_rows=2, with_seq=False))
def test_encode_without_seq_orders_by_timestamp(tables):
    raw = I.encode_itch(tables)
    d = I.parse_itch(raw)
    ts = np.concatenate([c["timestamp"] for c in d.tables.values()])
    seq = np.concatenate([c["seq"] for c in d.tables.values()])
    assert np.all(np.diff(ts[np.argsort(seq)]) >= 0)


def test_iter_chunks_split_frames_of_every_type(tmp_path, rng):
    tables = {}
    for i, lay in enumerate(I.LAYOUTS):
        n = 200
        cols = {"seq": np.arange(n) * 23 + i}
        for f in lay.fields:
            cols[f.name] = (rng.integers(32, 127, (n, f.size), dtype=np.uint8).view(f.dtype).ravel()
                            if f.code.startswith("a") else rng.integers(0, 2**15, n).astype(f.dtype))
        tables[lay.letter] = cols
    raw = I.encode_itch(tables)
    p = tmp_path / "all.itch"
    p.write_bytes(raw)
    gz = tmp_path / "all.itch.gz"
    I.write_itch(gz, I.read_itch(p))
    assert gzip.decompress(gz.read_bytes()) == raw
    for path in (p, gz):
        for chunk in (4096, 5003, 1 << 20):
            assert I.encode_itch(I.concat_itch(list(I.iter_itch(path, chunk_bytes=chunk)))) == raw


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------
def _frame_offsets(raw: bytes) -> list[int]:
    out, pos = [], 0
    while pos + 2 <= len(raw):
        out.append(pos)
        pos += 2 + int.from_bytes(raw[pos:pos + 2], "big")
    return out


@pytest.mark.parametrize("case", ["truncated", "length", "unknown", "zero", "alpha", "short_prefix"])
def test_bad_input_names_offset_and_keep_valid(case, tmp_path):
    raw = bytearray(sample_bytes())
    offs = _frame_offsets(bytes(raw))
    at = offs[500]
    if case == "truncated":
        raw = raw[:at + 20]
        text = "truncated stock_directory ('R') message: length prefix 39 but only 18 byte(s) remain"
    elif case == "length":
        raw[at:at + 2] = (40).to_bytes(2, "big")
        text = "length prefix 40 disagrees with the stock_directory ('R') message size 39"
    elif case == "unknown":
        raw[at + 2] = ord("Z")
        text = "unknown message type byte 0x5a ('Z'), length prefix 39"
    elif case == "zero":
        raw[at:at + 2] = b"\x00\x00"
        text = "length prefix is 0"
    elif case == "alpha":
        raw[at + 2 + 11 + 1] = 0xC3  # second byte of the stock symbol
        text = "non-ASCII byte 0xc3 in alpha field 'stock' of a stock_directory ('R') message"
    else:
        raw = raw[:at + 1]
        text = "truncated frame: 1 byte(s) left where a 2-byte length prefix starts"
    raw = bytes(raw)
    with pytest.raises(I.ItchError) as e:
        I.parse_itch(raw)
    assert e.value.offset == at and f"offset {at}: {text}" in str(e.value)
    d = I.parse_itch(raw, keep_valid=True)
    assert (d.messages, d.bytes, d.stopped_at) == (500, at, at) and text in d.error
    ref_tables, n, stopped, kind = ref_decode(raw)
    assert (n, stopped) == (500, at)
    assert_matches_reference(d, ref_tables)
    for name, data in (("f.itch", raw), ("f.itch.gz", gzip.compress(raw))):
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(I.ItchError, match=f"offset {at}: "):
            I.read_itch(p)
        for chunk in (None, 4096):
            got = I.read_itch(p, keep_valid=True) if chunk is None else I.concat_itch(
                list(I.iter_itch(p, keep_valid=True, chunk_bytes=chunk)))
            assert (got.messages, got.stopped_at) == (500, at) and text in got.error


def test_empty_and_missing_files(tmp_path):
    p = tmp_path / "empty.itch"
    p.write_bytes(b"")
    d = I.read_itch(p)
    assert (d.messages, d.bytes, d.counts) == (0, 0, {})
    assert I.encode_itch(d) == b""
    with pytest.raises(I.ItchError, match="no such file"):
        I.read_itch(tmp_path / "absent.itch")
    with pytest.raises(I.ItchError, match="not a regular file"):
        I.read_itch(tmp_path)


def test_corrupt_gzip(tmp_path):
    raw = sample_bytes()
    z = gzip.compress(raw)
    p = tmp_path / "cut.itch.gz"
    p.write_bytes(z[: len(z) // 2])
    with pytest.raises(I.ItchError, match="compressed stream ends early"):
        I.read_itch(p)
    d = I.read_itch(p, keep_valid=True)
    assert 0 < d.messages < 1000 and "compressed stream ends early" in d.error
    assert I.encode_itch(d) == raw[:d.bytes]
    q = tmp_path / "bad.itch.gz"
    q.write_bytes(b"not gzip at all" * 10)
    with pytest.raises(I.ItchError, match="bad gzip data"):
        I.read_itch(q)
    crc = bytearray(z)
    crc[-6] ^= 1  # the member's CRC-32
    q.write_bytes(bytes(crc))
    with pytest.raises(I.ItchError, match="incorrect data check"):
        I.read_itch(q)
    padded = tmp_path / "padded.itch.gz"
    padded.write_bytes(gzip.compress(raw[:100 * 41]) + b"\0" * 7 + gzip.compress(raw[100 * 41:]))
    assert I.encode_itch(I.read_itch(padded)) == raw


def _fuzz_bases() -> list[bytes]:
    rng = np.random.default_rng(5)
    tables = {}
    for i, lay in enumerate(I.LAYOUTS):
        cols = {"seq": np.arange(3) * 23 + i}
        for f in lay.fields:
            cols[f.name] = (rng.integers(32, 127, (3, f.size), dtype=np.uint8).view(f.dtype).ravel()
                            if f.code.startswith("a") else rng.integers(0, 2**15, 3).astype(f.dtype))
        tables[lay.letter] = cols
    return [I.encode_itch(tables)]


_BASES = _fuzz_bases()

_mutation = st.one_of(
    st.tuples(st.just("set"), st.integers(0, 10**6), st.integers(0, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6)),
    st.tuples(st.just("length"), st.integers(0, 10**6), st.integers(0, 70)),
    st.tuples(st.just("delete"), st.integers(0, 10**6), st.integers(1, 5)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.binary(min_size=1, max_size=4)),
)


def _mutate(raw: bytes, ops) -> bytes:
    b = bytearray(raw)
    for op in ops:
        if not b:
            break
        i = op[1] % len(b)
        if op[0] == "set":
            b[i] = op[2]
        elif op[0] == "truncate":
            del b[i:]
        elif op[0] == "length":
            offs = _frame_offsets(bytes(b))
            j = offs[i % len(offs)] if offs else 0
            b[j:j + 2] = op[2].to_bytes(2, "big")
        elif op[0] == "delete":
            del b[i:i + op[2]]
        else:
            b[i:i] = op[2]
    return bytes(b)


@settings(max_examples=200)
@given(st.integers(0, 1), st.lists(_mutation, min_size=1, max_size=4))
def test_fuzz_mutated_frames(which, ops):
    raw = _mutate(_BASES[0] if which else sample_bytes(), ops)
    ref_tables, n, stopped, kind = ref_decode(raw)
    try:
        d = I.parse_itch(raw)
    except I.ItchError as e:
        assert stopped is not None and e.offset == stopped and _KIND_TEXT[kind] in str(e)
    else:
        assert stopped is None and d.messages == n
        assert_matches_reference(d, ref_tables)
    d = I.parse_itch(raw, keep_valid=True)
    assert (d.messages, d.stopped_at) == (n, stopped)
    assert d.bytes == (len(raw) if stopped is None else stopped)
    assert_matches_reference(d, ref_tables)
    again = I.encode_itch(d)
    if not any(a.dtype.kind == "S" and b"\x00" in a.tobytes() for t in d.tables.values() for a in t.values()):
        assert again == raw[:d.bytes]
    else:  # NUL bytes at the end of an alpha field are padding to numpy: they come back as spaces
        back = I.parse_itch(again)
        for letter, cols in d.tables.items():
            for name, a in cols.items():
                want = np.char.ljust(a, a.dtype.itemsize) if a.dtype.kind == "S" and len(a) else a
                assert back.tables[letter][name].tobytes() == np.asarray(want, a.dtype).tobytes()


# ---------------------------------------------------------------------------------------------
# Encoder input validation
# ---------------------------------------------------------------------------------------------
def _one(letter: str, **over):
    lay = I.layout(letter)
    cols = {f.name: (np.array([b"X"], dtype=f.dtype) if f.code.startswith("a") else np.zeros(1, f.dtype))
            for f in lay.fields}
    cols.update(over)
    return {letter: cols}


def test_encoder_accepts_strings_and_pads():
    raw = I.encode_itch(_one("A", stock=["MSFT"], buy_sell_indicator=np.array(["B"]), price=[1234500]))
    assert raw[:3] == b"\x00\x24A" and raw[2 + 24:2 + 32] == b"MSFT    "
    d = I.parse_itch(raw)
    assert d["A"]["stock"].tolist() == [b"MSFT    "] and d["A"]["price"].tolist() == [1234500]
    assert d.to_arrow("A").column("stock").to_pylist() == ["MSFT"]
    for stock in (np.array([b"MSFT"], dtype="S4"), np.array([b"MSFT"], dtype="S8"), pa.array(["MSFT"]),
                  np.array(["MSFT"], dtype=object), [b"MSFT    "]):
        assert I.encode_itch(_one("A", stock=stock, buy_sell_indicator=np.array(["B"]), price=[1234500])) == raw


@pytest.mark.parametrize("over, match", [
    ({"shares": [2**32]}, "column 'shares' row 0: value 4294967296 does not fit"),
    ({"price": [-1]}, "column 'price' row 0: value -1 does not fit"),
    ({"timestamp": [2**48]}, "column 'timestamp' row 0"),
    ({"stock": ["TOOLONGSYM"]}, "column 'stock' row 0: .* longer than the field"),
    ({"stock": ["CAFÉ"]}, "column 'stock' row 0: .* not ASCII"),
    ({"stock": [None]}, "column 'stock' row 0: null value"),
    ({"order_reference_number": [-5]}, "negative"),
    ({"shares": [1.5]}, "expected integers"),
    ({"shares": [1, 2]}, "2 rows, expected 1"),
])
def test_encoder_rejects_bad_columns(over, match):
    with pytest.raises(I.ItchError, match=match):
        I.encode_itch(_one("A", **over))


def test_encoder_rejects_bad_tables():
    cols = _one("A")["A"]
    with pytest.raises(I.ItchError, match="missing column 'price'"):
        I.encode_itch({"A": {k: v for k, v in cols.items() if k != "price"}})
    with pytest.raises(I.ItchError, match="given twice"):
        I.encode_itch({"A": cols, "add_order": cols})
    with pytest.raises(I.ItchError, match="unknown ITCH message type"):
        I.encode_itch({"Z": cols})
    with pytest.raises(I.ItchError, match="appears more than once"):
        I.encode_itch({"A": {**cols, "seq": [3]}, "D": {**_one("D")["D"], "seq": [3]}})
    with pytest.raises(I.ItchError, match="every non-empty message type or for none"):
        I.encode_itch({"A": {**cols, "seq": [0]}, "D": _one("D")["D"]})


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
runner = CliRunner()


def test_cli_stats_and_parse(tmp_path):
    p = require_data(SAMPLE)
    r = runner.invoke(app, ["md", "itch", "stats", str(p), "--json"])
    assert r.exit_code == 0, r.output
    obj = json.loads(r.stdout.strip().splitlines()[-1])
    assert obj["messages"] == 1000 and obj["bytes"] == 40874 and obj["seconds"] > 0
    assert obj["counts"] == {"S": 1, "R": 993, "H": 3, "Y": 3}
    r = runner.invoke(app, ["md", "itch", "stats", str(p)])
    assert r.exit_code == 0 and "R stock_directory" in r.stdout and "1,000 messages" in r.stdout
    out = tmp_path / "pq"
    r = runner.invoke(app, ["md", "itch", "parse", str(p), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert sorted(x.name for x in out.iterdir()) == [
        "reg_sho_restriction.parquet", "stock_directory.parquet", "stock_trading_action.parquet",
        "system_event.parquet"]
    t = pq.read_table(out / "stock_trading_action.parquet")
    assert t.column("stock").to_pylist() == ["A", "AA", "AAAU"] and t.column("reason").to_pylist() == ["", "", ""]
    assert t.column("timestamp").type == pa.int64()
    assert I.encode_itch(I.read_itch_parquet(out)) == p.read_bytes()


def test_cli_bad_files(tmp_path):
    raw = sample_bytes()
    bad = tmp_path / "bad.itch"
    bad.write_bytes(raw[:40000])
    for args in (["stats", str(bad)], ["parse", str(bad), "--out", str(tmp_path / "o")],
                 ["stats", str(tmp_path / "absent.itch")]):
        r = runner.invoke(app, ["md", "itch", *args])
        assert r.exit_code == 1, r.output
        assert "Traceback" not in r.output
        assert r.exception is None or isinstance(r.exception, SystemExit)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ")
    r = runner.invoke(app, ["md", "itch", "stats", str(bad), "--json", "--keep-valid"])
    assert r.exit_code == 0
    obj = json.loads(r.stdout.strip().splitlines()[-1])
    assert obj["messages"] == 978 and obj["stopped_at"] == 39972 and "truncated" in obj["error"]
    assert "warning: stopped early" in r.stderr
    r = runner.invoke(app, ["md", "itch", "parse", str(bad), "--out", str(tmp_path / "kv"), "--keep-valid"])
    assert r.exit_code == 0 and len(pq.read_table(tmp_path / "kv" / "stock_directory.parquet")) == 971
