"""protocol.parse_order's hot path against parse_order_checked (every field checked in turn):
the same row for every message, or the same error (field and code). No server needed."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from hpte.engine.server.core import Histogram
from hpte.engine.server.protocol import BadRequest, parse_arrow_frame, parse_order, parse_order_checked

SYMBOLS = frozenset({0, 1, 2})
VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-2**64, 2**64 + 1), st.sampled_from([0, 1, 2, 3, -1, 2**63 - 1, 2**63, 2**64 - 1]),
    st.sampled_from(["new", "cancel", "replace", "buy", "sell", "limit", "market", "stop", "stop_limit", "gtc", "ioc", "fok", "day", "x", ""]),
    st.text(max_size=70), st.floats(allow_nan=False), st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=1))
KEYS = ["type", "req_id", "order_id", "symbol", "side", "price", "qty", "order_type", "tif", "post_only", "stop_price", "extra"]


def outcome(f, m):
    try:
        return ("ok", f(m, SYMBOLS))
    except BadRequest as e:
        return ("error", e.field, e.code, str(e))


@st.composite
def messages(draw):
    base = {"type": "new", "req_id": 7, "order_id": 42, "symbol": 1, "side": "buy", "price": 100_000, "qty": 5,
            "order_type": "limit", "tif": "gtc", "post_only": False}
    m = {k: v for k, v in base.items() if draw(st.booleans()) or k in ("order_id", "symbol", "side", "qty")}
    for k in draw(st.lists(st.sampled_from(KEYS), max_size=3)):
        if draw(st.booleans()):
            m[k] = draw(VALUES)
        else:
            m.pop(k, None)
    return m


@settings(max_examples=1500, deadline=None)
@given(messages())
def test_hot_path_equals_checked_path(m):
    assert outcome(parse_order, m) == outcome(parse_order_checked, m)


@pytest.mark.parametrize("m", [
    {"order_id": 1, "symbol": 0, "side": "sell", "qty": 3, "order_type": "market"},
    {"order_id": 2**64 - 1, "symbol": 2, "side": "buy", "qty": 2**63 - 1, "price": -(2**63) + 1, "tif": "ioc", "req_id": "r" * 64},
    {"order_id": 1, "symbol": 0, "side": True, "qty": 3, "price": 5},       # a bool is not a side code
    {"order_id": 1, "symbol": 0, "side": "buy", "qty": 3},                   # a limit order without a price
    {"order_id": 1, "symbol": 9, "side": "buy", "qty": 3, "price": 5},       # unknown symbol
    {"order_id": 1, "symbol": 0, "side": "buy", "qty": 3, "price": 5, "post_only": 1},
    [1, 2], "text", None,
])
def test_edge_cases_agree(m):
    assert outcome(parse_order, m) == outcome(parse_order_checked, m)


STOP = {"order_id": 1, "symbol": 0, "side": "buy", "qty": 3, "order_type": "stop", "stop_price": 100}


@pytest.mark.parametrize("m, field, words", [
    ({k: v for k, v in STOP.items() if k != "stop_price"}, "stop_price", "missing field 'stop_price'"),
    ({**STOP, "stop_price": -5}, "stop_price", "out of range"),
    ({**STOP, "stop_price": 0}, "stop_price", "out of range"),
    ({**STOP, "stop_price": 100.5}, "stop_price", "must be an integer"),         # off the tick grid
    ({**STOP, "stop_price": "100"}, "stop_price", "must be an integer"),
    ({**STOP, "tif": "ioc"}, "tif", "gtc or day"),
    ({**STOP, "tif": "fok"}, "tif", "gtc or day"),
    ({**STOP, "order_type": "stop_limit"}, "price", "missing field 'price'"),
    ({**STOP, "order_type": "limit", "price": 5}, "stop_price", "only for stop and stop_limit"),
    ({**STOP, "order_type": "stop_limit", "price": 5, "post_only": True}, "post_only", "for limit orders"),
    ({"type": "replace", "order_id": 1, "price": 5, "qty": 2, "stop_price": -1}, "stop_price", "out of range"),
    ({"type": "cancel", "order_id": 1, "stop_price": 7}, "stop_price", "unknown field"),
])
def test_stop_errors_name_the_field(m, field, words):
    with pytest.raises(BadRequest, match=words) as e:
        parse_order(m, SYMBOLS)
    assert e.value.field == field and e.value.code == "BAD_REQUEST"


def test_stop_rows():
    from hpte.engine import schema as S
    assert parse_order(STOP, SYMBOLS) == (S.ACT_NEW, 1, 0, S.BUY, 0, 3, S.OT_STOP, S.TIF_GTC, 0, True, 100)
    m = {**STOP, "order_type": 3, "price": 120, "tif": "day", "side": "sell"}
    assert parse_order(m, SYMBOLS) == (S.ACT_NEW, 1, 0, S.SELL, 120, 3, S.OT_STOP_LIMIT, S.TIF_DAY, 0, True, 100)
    r = parse_order({"type": "replace", "order_id": 1, "price": 5, "qty": 2, "stop_price": 90}, SYMBOLS)
    assert r[0] == S.ACT_REPLACE and r[-1] == 90
    assert parse_order({"order_id": 1, "symbol": 0, "side": "buy", "qty": 3, "price": 5}, SYMBOLS)[-1] == 0


def test_histogram_buckets():
    h = Histogram("h", "help", (1.0, 2.0, 4.0))
    for v in (0.5, 1.0, 1.5, 2.0, 4.0, 4.5, 100.0):
        h.observe(v)
    h.observe(3.0, 4)
    assert h.counts == [2, 2, 5, 2] and h.n == 11 and h.sum == pytest.approx(125.5)


@pytest.mark.parametrize("sym, words", [
    ({"tick_size": 0.01}, "tick_size must be a positive decimal string"),       # a TOML float
    ({"lot_size": "-1"}, "lot_size must be a positive decimal string"),
    ({"symbol": 7}, "symbol must be one of [server] symbols"),
    ({"name": "btc usdt"}, "name must be 1-20 characters"),
    ({"base": ""}, "base must be 1-20 characters"),
    ({"colour": "red"}, "unknown field 'colour'"),
])
def test_binance_config_errors_name_the_key(sym, words):
    from hpte.engine.server.config import ConfigError, ServerConfig

    good = {"name": "BTCUSDT", "symbol": 0, "base": "BTC", "quote": "USDT", "tick_size": "0.01", "lot_size": "0.001"}
    ok = ServerConfig.from_dict({"server": {"symbols": [0]}, "binance": {"symbols": [good]}})
    assert str(ok.binance.symbols["BTCUSDT"].tick) == "0.01"
    with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace("]", r"\]")):
        ServerConfig.from_dict({"server": {"symbols": [0]}, "binance": {"symbols": [{**good, **sym}]}})
    with pytest.raises(ConfigError, match="duplicate name"):
        ServerConfig.from_dict({"server": {"symbols": [0, 1]}, "binance": {"symbols": [good, {**good, "symbol": 1}]}})
    with pytest.raises(ConfigError, match="secret must be a non-empty string"):
        ServerConfig.from_dict({"keys": [{"key": "abcdefgh-1", "secret": ""}]})


@pytest.mark.parametrize("col", ["display_qty", "expire_ts_ns"])
def test_arrow_frame_refuses_what_the_gateway_does_not_take(col):
    """An Arrow frame with an iceberg's display_qty or a GTD expiry is refused naming the column and
    row (the journal has neither column: taking the row would lose it); zeros are fine."""
    import numpy as np
    import pyarrow as pa

    from hpte.engine import schema as S
    from hpte.engine.gen import generate_flow

    cols = generate_flow(4, seed=1)
    cols = {k: np.asarray(v) for k, v in getattr(cols, "cols", cols).items()}
    cols["symbol"][:] = 1
    cols["account"][:] = 7

    def frame(c):
        sink = pa.BufferOutputStream()
        t = pa.table({k: c[k] for k in S.ORDER_SCHEMA.names}, schema=S.ORDER_SCHEMA)
        with pa.ipc.new_stream(sink, t.schema) as w:
            w.write_table(t)
        return sink.getvalue().to_pybytes()

    ok = parse_arrow_frame(frame(cols), 7, SYMBOLS)
    assert len(ok["qty"]) == 4
    cols[col][2] = 1 if col == "display_qty" else 10**18
    with pytest.raises(BadRequest) as e:
        parse_arrow_frame(frame(cols), 7, SYMBOLS)
    assert e.value.field == col and "row 2" in str(e.value)
