"""The Binance-compatible subset (/api/v3) against a real `hpte serve`: hand-signed httpx requests,
the decimal <-> tick/lot mapping checked against the native API, account isolation, bad input
(Binance error codes naming the parameter, engine state unchanged), and ccxt's binance client
(ccxt is in the test extra)."""
from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import urlencode

import httpx
import pytest

from .conftest import KEYS, Server

BN = {"bn1": ("binance-key-one", 1, "trader", "s3cret-one"),
      "bn2": ("binance-key-two", 2, "trader", "s3cret-two"),
      "nosig": ("binance-key-nosecret", 4, "trader", None),
      "bnmd": ("binance-key-md", 9, "market_data", "s3cret-md")}
EXTRA = "".join(
    f'\n[[keys]]\nkey = "{k}"\naccount = {a}\nrole = "{r}"\n' + (f'secret = "{s}"\n' if s else "")
    for k, a, r, s in BN.values()) + """
[binance]
[[binance.symbols]]
name = "BTCUSDT"
symbol = 1
base = "BTC"
quote = "USDT"
tick_size = "0.01"
lot_size = "0.001"
[[binance.symbols]]
name = "ETHUSDT"
symbol = 2
base = "ETH"
quote = "USDT"
tick_size = "0.05"
lot_size = "0.1"
"""


@pytest.fixture(scope="module")
def bn_server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("binance"), extra=EXTRA)
    yield s
    s.stop()


def call(s: Server, method: str, path: str, who: str | None, params: dict, *, sign: bool = True,
         ts_shift_ms: int = 0, secret: str | None = None, raw_extra: str = ""):
    """A Binance request as its clients send it: form-encoded body for POST, query string else,
    timestamp and HMAC-SHA256 signature of the encoded parameters."""
    p = dict(params)
    headers = {}
    if who is not None:
        headers["X-MBX-APIKEY"] = BN[who][0] if who in BN else who
    if sign:
        p["timestamp"] = int(time.time() * 1000) + ts_shift_ms
    q = urlencode(p) + raw_extra
    if sign and who in BN and (secret or BN[who][3]):
        q += "&signature=" + hmac.new((secret or BN[who][3]).encode(), q.encode(), hashlib.sha256).hexdigest()
    if method == "POST":
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        return httpx.post(s.url + path, content=q, headers=headers, timeout=30)
    return httpx.request(method, s.url + path + ("?" + q if q else ""), headers=headers, timeout=30)


def ok(r) -> dict | list:
    assert r.status_code == 200, r.text
    return r.json()


def test_exchange_info_and_public(bn_server):
    s = bn_server
    assert ok(call(s, "GET", "/api/v3/ping", None, {}, sign=False)) == {}
    t = ok(call(s, "GET", "/api/v3/time", None, {}, sign=False))["serverTime"]
    assert abs(t - time.time() * 1000) < 60_000
    info = ok(call(s, "GET", "/api/v3/exchangeInfo", None, {}, sign=False))
    by = {x["symbol"]: x for x in info["symbols"]}
    assert set(by) == {"BTCUSDT", "ETHUSDT"}
    f = {x["filterType"]: x for x in by["ETHUSDT"]["filters"]}
    assert f["PRICE_FILTER"]["tickSize"] == "0.05" and f["LOT_SIZE"]["stepSize"] == "0.1"
    assert by["ETHUSDT"]["hpteSymbol"] == 2
    assert by["BTCUSDT"]["orderTypes"] == ["LIMIT", "MARKET", "LIMIT_MAKER", "STOP_LOSS", "STOP_LOSS_LIMIT"]
    one = ok(call(s, "GET", "/api/v3/exchangeInfo", None, {"symbol": "BTCUSDT"}, sign=False))
    assert [x["symbol"] for x in one["symbols"]] == ["BTCUSDT"]


def test_trade_flow_and_mapping(bn_server):
    s = bn_server
    # a resting buy of 0.005 BTC at 100.01 USDT = 5 lots at 10001 ticks, seen natively too
    r = ok(call(s, "POST", "/api/v3/order", "bn1", {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT",
                                                      "timeInForce": "GTC", "quantity": "0.005", "price": "100.01",
                                                      "newClientOrderId": "my-order_1"}))
    assert (r["status"], r["price"], r["origQty"], r["executedQty"], r["fills"]) == ("NEW", "100.01", "0.005", "0.000", [])
    assert r["clientOrderId"] == "my-order_1" and r["side"] == "BUY" and r["type"] == "LIMIT"
    oid = r["orderId"]
    native = [o for o in httpx.get(s.url + "/v1/orders", headers={"X-API-Key": KEYS["t1"][0]}).json()["orders"]
              if o["symbol"] == 1]
    assert [(o["price"], o["qty"], o["side"]) for o in native] == [(10001, 5, "buy")]
    # another account sells 0.002 at market: fills at the maker's price
    r2 = ok(call(s, "POST", "/api/v3/order", "bn2", {"symbol": "BTCUSDT", "side": "SELL", "type": "MARKET",
                                                       "quantity": "0.002"}))
    assert (r2["status"], r2["executedQty"], r2["cummulativeQuoteQty"]) == ("FILLED", "0.002", "0.20002")
    assert r2["fills"] == [{"price": "100.01", "qty": "0.002", "commission": "0.00", "commissionAsset": "USDT"}]
    o = ok(call(s, "GET", "/api/v3/order", "bn1", {"symbol": "BTCUSDT", "origClientOrderId": "my-order_1"}))
    assert (o["orderId"], o["status"], o["executedQty"], o["cummulativeQuoteQty"]) == (oid, "PARTIALLY_FILLED", "0.002", "0.20002")
    assert ok(call(s, "GET", "/api/v3/order", "bn1", {"symbol": "BTCUSDT", "orderId": oid})) == o
    book = ok(call(s, "GET", "/api/v3/depth", "bn1", {"symbol": "BTCUSDT", "limit": 5}, sign=False))
    assert book["bids"] == [["100.01", "0.003"]] and book["asks"] == []
    tr = ok(call(s, "GET", "/api/v3/trades", "bnmd", {"symbol": "BTCUSDT"}, sign=False))
    assert [(t["price"], t["qty"], t["quoteQty"], t["isBuyerMaker"]) for t in tr] == [("100.01", "0.002", "0.20002", True)]   # the buyer rested
    # isolation: account 2 can neither see nor cancel account 1's order, by either id
    for method, code in (("GET", -2013), ("DELETE", -2011)):
        for q in ({"orderId": oid}, {"origClientOrderId": "my-order_1"}):
            r = call(s, method, "/api/v3/order", "bn2", {"symbol": "BTCUSDT", **q})
            assert r.status_code == 400 and r.json()["code"] == code, r.text
    assert ok(call(s, "GET", "/api/v3/openOrders", "bn2", {})) == []
    assert [x["orderId"] for x in ok(call(s, "GET", "/api/v3/openOrders", "bn1", {"symbol": "BTCUSDT"}))] == [oid]
    # LIMIT_MAKER that would take; FOK that cannot fill; IOC remainder expires
    r = call(s, "POST", "/api/v3/order", "bn2", {"symbol": "BTCUSDT", "side": "SELL", "type": "LIMIT_MAKER",
                                                 "quantity": "0.001", "price": "100.00"})
    assert r.status_code == 400 and r.json() == {"code": -2010, "msg": "Order would immediately match and take."}
    r = ok(call(s, "POST", "/api/v3/order", "bn2", {"symbol": "BTCUSDT", "side": "SELL", "type": "LIMIT",
                                                      "timeInForce": "FOK", "quantity": "0.004", "price": "100.01"}))
    assert (r["status"], r["executedQty"]) == ("EXPIRED", "0.000")
    r = ok(call(s, "POST", "/api/v3/order", "bn2", {"symbol": "BTCUSDT", "side": "SELL", "type": "LIMIT",
                                                      "timeInForce": "IOC", "quantity": "0.004", "price": "100.01",
                                                      "newOrderRespType": "RESULT"}))
    assert (r["status"], r["executedQty"], "fills" in r) == ("EXPIRED", "0.003", False)
    assert ok(call(s, "GET", "/api/v3/order", "bn1", {"symbol": "BTCUSDT", "orderId": oid}))["status"] == "FILLED"
    # cancel: a resting ETH order, by orderId; a second cancel is unknown
    r = ok(call(s, "POST", "/api/v3/order", "bn1", {"symbol": "ETHUSDT", "side": "SELL", "type": "LIMIT",
                                                      "timeInForce": "GTC", "quantity": "1.5", "price": "2000.05",
                                                      "newOrderRespType": "ACK"}))
    eth = r["orderId"]
    assert set(r) == {"symbol", "orderId", "orderListId", "clientOrderId", "transactTime"}
    assert ok(call(s, "GET", "/api/v3/depth", "bn1", {"symbol": "ETHUSDT"}, sign=False))["asks"] == [["2000.05", "1.5"]]
    c = ok(call(s, "DELETE", "/api/v3/order", "bn1", {"symbol": "ETHUSDT", "orderId": eth}))
    assert (c["status"], c["origQty"], c["origClientOrderId"]) == ("CANCELED", "1.5", r["clientOrderId"])
    r = call(s, "DELETE", "/api/v3/order", "bn1", {"symbol": "ETHUSDT", "orderId": eth})
    assert r.status_code == 400 and r.json()["code"] == -2011
    assert ok(call(s, "GET", "/api/v3/depth", "bn1", {"symbol": "ETHUSDT"}, sign=False))["asks"] == []
    # a key without a secret: the signature is not asked for (the timestamp still is)
    r = ok(call(s, "POST", "/api/v3/order", "nosig", {"symbol": "ETHUSDT", "side": "BUY", "type": "LIMIT",
                                                        "timeInForce": "GTC", "quantity": "0.1", "price": "1.00"}))
    assert r["status"] == "NEW"


BAD = [  # (method, path, who, params, code, words in msg), each refused with engine state unchanged
    ("POST", "/api/v3/order", "bn1", {"side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "1", "price": "1"}, -1102, "'symbol'"),
    ("POST", "/api/v3/order", "bn1", {"symbol": "XRPUSDT", "side": "BUY", "type": "MARKET", "quantity": "1"}, -1121, "Invalid symbol"),
    ("POST", "/api/v3/order", "bn1", {"symbol": "BTCUSDT", "side": "LONG", "type": "MARKET", "quantity": "1"}, -1117, "side"),
    ("POST", "/api/v3/order", "bn1", {"symbol": "BTCUSDT", "side": "BUY", "type": "TAKE_PROFIT", "quantity": "1"}, -1116, "not supported"),
    ("POST", "/api/v3/order", "bn1", {"symbol": "BTCUSDT", "side": "BUY", "type": "STOP_LOSS", "quantity": "1"}, -1102, "'stopPrice'"),
    ("POST", "/api/v3/order", "bn1", {"symbol": "ETHUSDT", "side": "SELL", "type": "STOP_LOSS_LIMIT", "timeInForce": "GTC", "quantity": "1", "price": "100.05", "stopPrice": "100.07"}, -1013, "'stopPrice'"),
    ("POST", "/api/v3/order", "bn1", {"symbol": "ETHUSDT", "side": "SELL", "type": "STOP_LOSS", "quantity": "1", "stopPrice": "-5"}, -1100, "'stopPrice'"),
    ("POST", "/api/v3/order", "bn1", {"symbol": "ETHUSDT", "side": "SELL", "type": "STOP_LOSS", "quantity": "1", "stopPrice": "0"}, -1013, "'stopPrice'"),
    ("POST", "/api/v3/order", "bn1", {"symbol": "ETHUSDT", "side": "SELL", "type": "STOP_LOSS_LIMIT", "timeInForce": "IOC", "quantity": "1", "price": "100.05", "stopPrice": "100.10"}, -1115, "timeInForce"),
    ("POST", "/api/v3/order", "bn1", {"symbol": "ETHUSDT", "side": "SELL", "type": "STOP_LOSS_LIMIT", "timeInForce": "GTC", "quantity": "1", "stopPrice": "100.10"}, -1102, "'price'"),
    ("POST", "/api/v3/order", "bn1", {"symbol": "ETHUSDT", "side": "SELL", "type": "STOP_LOSS", "quantity": "1", "price": "100.05", "stopPrice": "100.10"}, -1106, "'price'"),
    ("POST", "/api/v3/order", "bn1", {"symbol": "ETHUSDT", "side": "SELL", "type": "LIMIT", "timeInForce": "GTC", "quantity": "1", "price": "100.05", "stopPrice": "100.10"}, -1106, "'stopPrice'"),
    ("POST", "/api/v3/order", "bn1", {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "quantity": "1", "price": "1"}, -1102, "'timeInForce'"),
    ("POST", "/api/v3/order", "bn1", {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTD", "quantity": "1", "price": "1"}, -1115, "timeInForce"),
    ("POST", "/api/v3/order", "bn1", {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "1", "price": "1"}, -1106, "'price'"),
    ("POST", "/api/v3/order", "bn1", {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "1"}, -1102, "'price'"),
    ("POST", "/api/v3/order", "bn1", {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "1e3"}, -1100, "'quantity'"),
    ("POST", "/api/v3/order", "bn1", {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.0005"}, -1013, "LOT_SIZE"),
    ("POST", "/api/v3/order", "bn1", {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0"}, -1013, "LOT_SIZE"),
    ("POST", "/api/v3/order", "bn1", {"symbol": "ETHUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "1", "price": "100.07"}, -1013, "PRICE_FILTER"),
    ("POST", "/api/v3/order", "bn1", {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "1", "quoteOrderQty": "5"}, -1106, "'quoteOrderQty'"),
    ("POST", "/api/v3/order", "bn1", {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "1", "newClientOrderId": "a b"}, -1100, "'newClientOrderId'"),
    ("POST", "/api/v3/order", "bn1", {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "1", "colour": "red"}, -1104, "'colour'"),
    ("POST", "/api/v3/order", "bn1", {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": ""}, -1105, "'quantity'"),
    ("DELETE", "/api/v3/order", "bn1", {"symbol": "BTCUSDT"}, -1102, "'orderId'"),
    ("GET", "/api/v3/order", "bn1", {"symbol": "BTCUSDT", "orderId": "x1"}, -1100, "'orderId'"),
    ("GET", "/api/v3/depth", "bn1", {"symbol": "BTCUSDT", "limit": "0"}, -1100, "'limit'"),
    ("GET", "/api/v3/account", "bn1", {}, -1020, "not supported"),
]


def test_bad_input_leaves_state_unchanged(bn_server):
    s = bn_server
    before = s.health()
    for method, path, who, params, code, words in BAD:
        r = call(s, method, path, who, params, sign=method != "GET" or path == "/api/v3/order")
        assert r.status_code in (400, 404) and r.json()["code"] == code and words in r.json()["msg"], (params, r.text)
    new = {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.001"}
    auth_cases = [
        (call(s, "POST", "/api/v3/order", "bn1", new, secret="wrong"), 400, -1022),
        (call(s, "POST", "/api/v3/order", "bn1", new, sign=False), 400, -1102),          # no timestamp
        (call(s, "POST", "/api/v3/order", "bn1", new, ts_shift_ms=-120_000), 400, -1021),
        (call(s, "POST", "/api/v3/order", "bn1", new, ts_shift_ms=+120_000), 400, -1021),
        (call(s, "POST", "/api/v3/order", None, new), 401, -2014),
        (call(s, "POST", "/api/v3/order", "not-a-configured-key", new), 401, -2015),
        (call(s, "POST", "/api/v3/order", "bnmd", new), 401, -2015),                    # market-data role
        (call(s, "GET", "/api/v3/depth", None, {"symbol": "BTCUSDT"}, sign=False), 401, -2014),
        (call(s, "POST", "/api/v3/order", "bn1", new, raw_extra="&symbol=ETHUSDT"), 400, -1101),
    ]
    for r, status, code in auth_cases:
        assert r.status_code == status and r.json()["code"] == code, r.text
    # the signature must cover the body: a parameter changed after signing is refused
    p = {**new, "timestamp": int(time.time() * 1000)}
    q = urlencode(p)
    sig = hmac.new(BN["bn1"][3].encode(), q.encode(), hashlib.sha256).hexdigest()
    r = httpx.post(s.url + "/api/v3/order", content=q.replace("0.001", "0.002") + "&signature=" + sig,
                   headers={"X-MBX-APIKEY": BN["bn1"][0], "Content-Type": "application/x-www-form-urlencoded"})
    assert r.json()["code"] == -1022
    after = s.health()
    assert (after["engine_seq"], after["journal_next_record"]) == (before["engine_seq"], before["journal_next_record"])


def test_ccxt_binance_client(bn_server):
    """ccxt's own binance class (signing, market loading, order parsing) against hpte."""
    ccxt = pytest.importorskip("ccxt", reason="ccxt is in the test extra: pip install -e '.[test,server]'")
    s = bn_server
    base = s.url + "/api/v3"

    def client(who):
        ex = ccxt.binance({"apiKey": BN[who][0], "secret": BN[who][3], "enableRateLimit": False,
                           "options": {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False,
                                       "fetchMargins": False},
                           "headers": {"X-MBX-APIKEY": BN[who][0]}})
        ex.urls["api"]["public"] = ex.urls["api"]["private"] = base
        return ex

    a, b = client("bn1"), client("bn2")
    m = a.load_markets()
    assert set(m) == {"BTC/USDT", "ETH/USDT"}
    assert m["ETH/USDT"]["precision"] == {**m["ETH/USDT"]["precision"], "price": 0.05, "amount": 0.1}
    o = a.create_order("ETH/USDT", "limit", "buy", 2.0, 1500.05)
    assert (o["status"], o["amount"], o["price"], o["filled"]) == ("open", 2.0, 1500.05, 0.0)
    t = b.create_order("ETH/USDT", "market", "sell", 0.5)
    assert (t["status"], t["filled"], t["cost"], t["average"]) == ("closed", 0.5, 750.025, 1500.05)
    got = a.fetch_order(o["id"], "ETH/USDT")
    assert (got["status"], got["filled"], got["remaining"], got["clientOrderId"]) == ("open", 0.5, 1.5, o["clientOrderId"])
    assert [x["id"] for x in a.fetch_open_orders("ETH/USDT")] == [o["id"]]
    assert b.fetch_open_orders("ETH/USDT") == []
    with pytest.raises(ccxt.OrderNotFound):
        b.cancel_order(o["id"], "ETH/USDT")
    book = a.fetch_order_book("ETH/USDT")
    assert book["bids"][0][:2] == [1500.05, 1.5]
    assert [(x["price"], x["amount"], x["side"]) for x in a.fetch_trades("ETH/USDT")][-1:] == [(1500.05, 0.5, "sell")]
    c = a.cancel_order(o["id"], "ETH/USDT")
    assert c["status"] == "canceled"
    assert 1500.05 not in [x[0] for x in a.fetch_order_book("ETH/USDT")["bids"]]
    # Binance errors become ccxt's exceptions: a post-only order that would take; a wrong secret
    b.create_order("ETH/USDT", "limit", "sell", 0.1, 1600.00)
    with pytest.raises(ccxt.InvalidOrder):
        a.create_order("ETH/USDT", "limit", "buy", 0.1, 1600.00, {"postOnly": True})
    bad = client("bn1")
    bad.secret = "not-the-secret"
    bad.markets, bad.markets_by_id, bad.symbols = a.markets, a.markets_by_id, a.symbols
    with pytest.raises(ccxt.AuthenticationError):
        bad.fetch_open_orders("ETH/USDT")


def _ccxt(s: Server, who: str):
    ccxt = pytest.importorskip("ccxt", reason="ccxt is in the test extra: pip install -e '.[test,server]'")
    ex = ccxt.binance({"apiKey": BN[who][0], "secret": BN[who][3], "enableRateLimit": False,
                       "options": {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False, "fetchMargins": False},
                       "headers": {"X-MBX-APIKEY": BN[who][0]}})
    ex.urls["api"]["public"] = ex.urls["api"]["private"] = s.url + "/api/v3"
    ex.load_markets()
    return ex


def test_ws_streams_rebuild_book(bn_server):
    """Binance's "manage a local order book" procedure with real clients: the websockets library on
    /stream (diff depth + trades), ccxt's REST order book (lastUpdateId) in the middle of a random
    flow; the rebuilt book equals the engine's, every trade after the snapshot arrives once."""
    import random
    from decimal import Decimal

    import orjson
    from websockets.sync.client import connect

    s = bn_server
    url = s.ws + "/stream?streams=btcusdt@depth/btcusdt@trade/btcusdt@depth@100ms"
    hdr = {"X-MBX-APIKEY": BN["bnmd"][0]}
    ws = connect(url, additional_headers=hdr, open_timeout=30, compression=None).__enter__()
    raw = connect(s.ws + "/ws/ethusdt@trade", additional_headers=hdr, open_timeout=30, compression=None).__enter__()
    ex = _ccxt(s, "bnmd")
    rng = random.Random(11)
    placed = []

    def flow(n):
        for _ in range(n):
            who = rng.choice(["bn1", "bn2"])
            if placed and rng.random() < 0.25:
                w, oid = placed.pop(rng.randrange(len(placed)))
                call(s, "DELETE", "/api/v3/order", w, {"symbol": "BTCUSDT", "orderId": oid})
                continue
            px = f"{rng.randint(9990, 10010) / 100:.2f}"
            r = ok(call(s, "POST", "/api/v3/order", who, {"symbol": "BTCUSDT", "side": rng.choice(["BUY", "SELL"]),
                                                          "type": "LIMIT", "timeInForce": "GTC", "price": px,
                                                          "quantity": f"0.00{rng.randint(1, 9)}",
                                                          "newOrderRespType": "ACK"}))
            placed.append((who, r["orderId"]))
            mine.add(r["orderId"])

    mine = set()
    flow(30)
    snap = ex.fetch_order_book("BTC/USDT", 5000)          # ccxt's REST: nonce = lastUpdateId
    L = snap["nonce"]
    trades_before = ok(call(s, "GET", "/api/v3/trades", "bnmd", {"symbol": "BTCUSDT", "limit": 1000}, sign=False))
    flow(40)
    mine.add(ok(call(s, "POST", "/api/v3/order", "bn1", {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT",
                                                         "timeInForce": "GTC", "price": "0.01", "quantity": "0.001"}))
             ["orderId"])     # a last, known change
    final = httpx.get(s.url + "/v1/book/1", headers={"X-API-Key": KEYS["t1"][0]}).json()
    speeds = ("btcusdt@depth", "btcusdt@depth@100ms")      # 1000 ms and 100 ms windows: one book each
    books = {n: {"bids": {Decimal(str(p)): Decimal(str(q)) for p, q in snap["bids"]},
                 "asks": {Decimal(str(p)): Decimal(str(q)) for p, q in snap["asks"]}} for n in speeds}
    prev_u, trades = dict.fromkeys(speeds), []
    while any(u is None or u < final["seq"] for u in prev_u.values()):
        m = orjson.loads(ws.recv(timeout=30))
        d, name = m["data"], m["stream"]
        if name == "btcusdt@trade":
            trades.append(d)
            continue
        assert d["e"] == "depthUpdate" and d["s"] == "BTCUSDT" and name in speeds
        if d["u"] <= L:
            continue                                       # older than the snapshot: dropped
        if prev_u[name] is None:
            assert d["U"] <= L + 1 <= d["u"], (L, d["U"], d["u"])
        else:
            assert d["U"] == prev_u[name] + 1, (prev_u[name], d["U"])
        prev_u[name] = d["u"]
        for side, key in (("b", "bids"), ("a", "asks")):
            for p, q in d[side]:
                if Decimal(q) == 0:
                    books[name][key].pop(Decimal(p), None)
                else:
                    books[name][key][Decimal(p)] = Decimal(q)
    assert set(prev_u.values()) == {final["seq"]}
    want = {k: {Decimal(p) / 100: Decimal(q) / 1000 for p, q, _n in final[k]} for k in ("bids", "asks")}
    assert books[speeds[0]] == books[speeds[1]] == want and want["bids"] and want["asks"]
    # trades: the stream holds every trade, each once; those after the snapshot's trades are the REST ones
    after = ok(call(s, "GET", "/api/v3/trades", "bnmd", {"symbol": "BTCUSDT", "limit": 1000}, sign=False))
    last_before = trades_before[-1]["id"] if trades_before else 0
    got = [(t["t"], t["p"], t["q"], t["m"]) for t in trades if t["t"] > last_before]
    assert got == [(t["id"], t["price"], t["qty"], t["isBuyerMaker"]) for t in after if t["id"] > last_before]
    assert got, "the flow made no trades"
    # live SUBSCRIBE / LIST_SUBSCRIPTIONS / a bad stream name; the raw /ws/ path sends bare events
    raw.send(orjson.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 1}).decode())
    assert orjson.loads(raw.recv(timeout=30)) == {"result": None, "id": 1}
    raw.send(orjson.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 2}).decode())
    assert orjson.loads(raw.recv(timeout=30)) == {"result": ["btcusdt@trade", "ethusdt@trade"], "id": 2}
    raw.send(orjson.dumps({"method": "SUBSCRIBE", "params": ["xrpusdt@trade"], "id": 3}).decode())
    err = orjson.loads(raw.recv(timeout=30))
    assert err["id"] == 3 and "xrpusdt@trade" in err["error"]["msg"]
    ok(call(s, "POST", "/api/v3/order", "bn2", {"symbol": "BTCUSDT", "side": "SELL", "type": "MARKET", "quantity": "0.001"}))
    ev = orjson.loads(raw.recv(timeout=30))
    best_bid = f"{Decimal(final['bids'][0][0]) / 100:.2f}"
    assert (ev["e"], ev["s"], ev["p"], ev["q"], ev["m"]) == ("trade", "BTCUSDT", best_bid, "0.001", True)
    ws.close()
    raw.close()
    for who in ("bn1", "bn2"):          # leave BTCUSDT's book to the next test as it was
        for o in ok(call(s, "GET", "/api/v3/openOrders", who, {"symbol": "BTCUSDT"})):
            if o["orderId"] in mine:
                ok(call(s, "DELETE", "/api/v3/order", who, {"symbol": "BTCUSDT", "orderId": o["orderId"]}))
    # no key: refused with Binance's error, naming the problem
    with connect(s.ws + "/ws/btcusdt@depth", open_timeout=30) as bad:
        e = orjson.loads(bad.recv(timeout=30))
        assert e["code"] == -2014 and "X-MBX-APIKEY" in e["msg"]


def test_stop_loss_orders(bn_server):
    """STOP_LOSS_LIMIT / STOP_LOSS with stopPrice: waiting (NEW, isWorking false, not in depth),
    triggered by a trade at or through the stop price (then working), cancelled while waiting;
    also through ccxt's triggerPrice. (After the ccxt test: ETH's last trade is at 1500.05.)"""
    s = bn_server
    r = ok(call(s, "POST", "/api/v3/order", "bn1", {"symbol": "ETHUSDT", "side": "SELL", "type": "STOP_LOSS_LIMIT",
                                                    "timeInForce": "GTC", "quantity": "0.3", "price": "1399.95",
                                                    "stopPrice": "1400.00", "newClientOrderId": "stop-1"}))
    assert (r["status"], r["type"], r["price"], r["stopPrice"], r["executedQty"]) == \
        ("NEW", "STOP_LOSS_LIMIT", "1399.95", "1400.00", "0.0")
    native = [o for o in httpx.get(s.url + "/v1/orders", headers={"X-API-Key": KEYS["t1"][0]}).json()["orders"]
              if o["order_type"] == "stop_limit"]        # stopPrice in ticks exactly like price: 1400.00 / 0.05
    assert [(o["symbol"], o["price"], o["stop_price"], o["qty"], o["triggered"]) for o in native] == [(2, 27999, 28000, 3, False)]
    depth0 = ok(call(s, "GET", "/api/v3/depth", "bn1", {"symbol": "ETHUSDT"}, sign=False))
    assert "1399.95" not in [a[0] for a in depth0["asks"]]            # a waiting stop is not in the book
    o = ok(call(s, "GET", "/api/v3/order", "bn1", {"symbol": "ETHUSDT", "origClientOrderId": "stop-1"}))
    assert (o["status"], o["isWorking"], o["stopPrice"]) == ("NEW", False, "1400.00")
    m = ok(call(s, "POST", "/api/v3/order", "bn1", {"symbol": "ETHUSDT", "side": "BUY", "type": "STOP_LOSS",
                                                    "quantity": "0.1", "stopPrice": "5000.00"}))
    assert (m["status"], m["type"], m["price"], m["stopPrice"]) == ("NEW", "STOP_LOSS", "0.00", "5000.00")
    c = ok(call(s, "DELETE", "/api/v3/order", "bn1", {"symbol": "ETHUSDT", "orderId": m["orderId"]}))
    assert c["status"] == "CANCELED"
    # a trade at 1400.00 (bn2 against itself) triggers the sell stop: it rests at its limit 1399.95
    ok(call(s, "POST", "/api/v3/order", "bn2", {"symbol": "ETHUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
                                                "quantity": "0.1", "price": "1400.00"}))
    ok(call(s, "POST", "/api/v3/order", "bn2", {"symbol": "ETHUSDT", "side": "SELL", "type": "MARKET", "quantity": "0.1"}))
    o = ok(call(s, "GET", "/api/v3/order", "bn1", {"symbol": "ETHUSDT", "origClientOrderId": "stop-1"}))
    assert (o["status"], o["isWorking"], o["type"], o["origQty"]) == ("NEW", True, "STOP_LOSS_LIMIT", "0.3")
    depth = ok(call(s, "GET", "/api/v3/depth", "bn1", {"symbol": "ETHUSDT"}, sign=False))
    assert depth["asks"][0] == ["1399.95", "0.3"]
    # ccxt: a limit order with triggerPrice is a STOP_LOSS_LIMIT
    ccxt = pytest.importorskip("ccxt", reason="ccxt is in the test extra")
    ex = ccxt.binance({"apiKey": BN["bn2"][0], "secret": BN["bn2"][3], "enableRateLimit": False,
                       "options": {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False, "fetchMargins": False},
                       "headers": {"X-MBX-APIKEY": BN["bn2"][0]}})
    ex.urls["api"]["public"] = ex.urls["api"]["private"] = s.url + "/api/v3"
    ex.load_markets()
    t = ex.create_order("ETH/USDT", "limit", "buy", 0.2, 3000.0, {"triggerPrice": 2999.95})
    got = ex.fetch_order(t["id"], "ETH/USDT")
    assert (got["status"], got["type"], got["triggerPrice"], got["amount"]) == ("open", "limit", 2999.95, 0.2)
    assert got["info"]["type"] == "STOP_LOSS_LIMIT" and got["info"]["stopPrice"] == "2999.95"
    ex.cancel_order(t["id"], "ETH/USDT")


def test_restart_keeps_orders_and_client_ids(bn_server):
    """kill -9 and restart: the orders placed through /api/v3 are where they were, with their
    text client ids and filled notional (both derived from the journal or kept beside it).
    (Last in the module: it restarts the module's server.)"""
    s = bn_server
    ok(call(s, "POST", "/api/v3/order", "bn1", {"symbol": "BTCUSDT", "side": "SELL", "type": "LIMIT", "timeInForce": "GTC",
                                                "quantity": "0.010", "price": "25000.00", "newClientOrderId": "x-keep/me:1"}))
    ok(call(s, "POST", "/api/v3/order", "bn2", {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.004"}))
    before = ok(call(s, "GET", "/api/v3/order", "bn1", {"symbol": "BTCUSDT", "origClientOrderId": "x-keep/me:1"}))
    s.stop(kill9=True)
    s.start()
    after = ok(call(s, "GET", "/api/v3/order", "bn1", {"symbol": "BTCUSDT", "origClientOrderId": "x-keep/me:1"}))
    assert after == before
    assert (after["clientOrderId"], after["executedQty"], after["cummulativeQuoteQty"]) == ("x-keep/me:1", "0.004", "100.00000")
