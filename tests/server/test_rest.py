"""REST order entry against a real `hpte serve`: orders, isolation, auth, rate limits, bad input."""
from __future__ import annotations

import json

import httpx
import pytest

from .conftest import KEYS


def order(oid, side="buy", price=100_000, qty=5, symbol=0, **kw):
    return {"order_id": oid, "symbol": symbol, "side": side, "price": price, "qty": qty, **kw}


def test_place_fill_cancel_replace(shared_server):
    s = shared_server
    with s.client("t1") as a, s.client("t2") as b:
        r = a.post("/v1/orders", json=order(11, "buy", 99_000, 10, symbol=1))
        assert r.status_code == 200, r.text
        assert [x["event"] for x in r.json()["reports"]] == ["ACCEPTED"]
        r = b.post("/v1/orders", json=order(12, "sell", 99_000, 4, symbol=1))
        reps = r.json()["reports"]
        assert [(x["event"], x["qty"], x["price"]) for x in reps] == [("ACCEPTED", 4, 99_000), ("FILLED", 4, 99_000)]
        o = a.get("/v1/orders/11").json()
        assert (o["status"], o["leaves_qty"], o["filled_qty"]) == ("PARTIALLY_FILLED", 6, 4)
        r = a.patch("/v1/orders/11", json={"price": 98_990, "qty": 8})
        assert [x["event"] for x in r.json()["reports"]] == ["REPLACED"], r.text
        o = a.get("/v1/orders/11").json()
        assert (o["price"], o["qty"], o["leaves_qty"]) == (98_990, 12, 8)   # qty: the new open quantity
        book = a.get("/v1/book/1").json()
        assert book["bids"] == [[98_990, 8, 1]] and book["asks"] == []
        trades = a.get("/v1/trades/1", params={"since": 0}).json()
        assert [t[2:4] for t in trades["trades"]] == [[99_000, 4]]
        assert a.get("/v1/trades/1", params={"since": trades["last_seq"]}).json()["trades"] == []
        assert [x["order_id"] for x in a.get("/v1/orders", params={"status": "open"}).json()["orders"]] == [11]
        r = a.delete("/v1/orders/11")
        assert [(x["event"], x["qty"]) for x in r.json()["reports"]] == [("CANCELLED", 8)]
        assert a.get("/v1/orders/11").json()["status"] == "CANCELLED"
        assert a.get("/v1/book/1").json()["bids"] == []
        # a list of orders in one call
        r = a.post("/v1/orders", json=[order(13, price=90_000, symbol=1), order(14, price=90_001, symbol=1)])
        assert [x["order_id"] for x in r.json()["reports"]] == [13, 14]
        assert "positions" not in a.get("/v1/account").json()       # no --risk
        m = httpx.get(s.url + "/metrics").text
        assert "hpte_orders_total" in m and "hpte_ack_latency_seconds_bucket" in m
        assert "hpte_journal_pending_batches 0" in m and "hpte_journal_segments_retired_total" in m


def test_account_isolation(shared_server):
    s = shared_server
    with s.client("t1") as a, s.client("t2") as b:
        assert a.post("/v1/orders", json=order(500, "sell", 200_000, 3, symbol=2)).status_code == 200
        # another account's id reads as unknown, and it cannot cancel or replace it
        for r in (b.get("/v1/orders/500"), b.delete("/v1/orders/500"), b.patch("/v1/orders/500", json={"price": 1, "qty": 1})):
            assert r.status_code == 404 and r.json()["code"] == "UNKNOWN_ORDER", r.text
        assert all(o["order_id"] != 500 for o in b.get("/v1/orders", params={"status": "all"}).json()["orders"])
        # the same client id is a different order in each account's namespace
        r = b.post("/v1/orders", json=order(500, "buy", 190_000, 2, symbol=2))
        assert [x["event"] for x in r.json()["reports"]] == ["ACCEPTED"]
        assert a.get("/v1/orders/500").json()["side"] == "sell"
        assert b.get("/v1/orders/500").json()["side"] == "buy"
        # a WebSocket cancel by account 2 of "its" 500 touches only its own order
        assert b.delete("/v1/orders/500").json()["reports"][0]["event"] == "CANCELLED"
        assert a.get("/v1/orders/500").json()["status"] == "OPEN"


def test_auth_and_roles(shared_server):
    s = shared_server
    assert httpx.post(s.url + "/v1/orders", json=order(1)).status_code == 401
    r = httpx.get(s.url + "/v1/account", headers={"X-API-Key": "not-a-key-at-all"})
    assert r.status_code == 401 and r.json()["field"] == "X-API-Key"
    r = httpx.get(s.url + "/v1/account", headers={"Authorization": f"Bearer {KEYS['t1'][0]}"})
    assert r.status_code == 200 and r.json()["account"] == 1
    with s.client("md") as m:
        assert m.post("/v1/orders", json=order(1)).status_code == 403
        assert m.get("/v1/book/0").status_code == 200
    with s.client("t1") as a:
        assert a.post("/v1/admin/halt").status_code == 403
    with s.client("admin") as adm:
        r = adm.post("/v1/admin/halt")            # no --risk on this server
        assert r.status_code == 409 and r.json()["code"] == "NEEDS_RISK"


def test_rate_limit(shared_server):
    with shared_server.client("slow") as c:
        codes = [c.post("/v1/orders", json=order(900 + i, price=50_000 + i, symbol=2)).status_code for i in range(8)]
        assert codes[:5] == [200] * 5 and 429 in codes[5:], codes
        assert c.get("/v1/account").status_code == 200   # reads are not rate-limited


BAD = [
    (b'{"order_id": 1, "symbol": 0, "side": "buy", "price": 1', "body", 400),            # malformed
    (json.dumps(order("7")), "order_id", 400),                                             # mistyped
    (json.dumps({"symbol": 0, "side": "buy", "price": 1, "qty": 1}), "order_id", 400),    # missing
    (json.dumps(order(7, qty=0)), "qty", 400),                                             # out of range
    (json.dumps(order(7, qty=2**63)), "qty", 400),
    (json.dumps(order(2**64)), "order_id", 400),
    (json.dumps(order(7, side="up")), "side", 400),
    (json.dumps(order(7, tif="forever")), "tif", 400),
    (json.dumps(order(7, symbol=77)), "symbol", 400),                                      # unknown symbol
    (json.dumps(order(7, price=1.5)), "price", 400),
    (json.dumps(order(7, colour="red")), "colour", 400),                                   # unknown field
    (json.dumps(order(7, type="teleport")), "type", 400),                                  # unknown type
    (json.dumps([order(7), order(8, qty=-1)]), "[1].qty", 400),
    (json.dumps([]), "body", 400),
    (json.dumps("hello"), None, 400),
    (json.dumps(order(7, req_id=[1])), "req_id", 400),
    (b"[" + b"1," * 40000 + b"1]", "body", 413),                                            # oversized
]


@pytest.mark.parametrize("body,field,status", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_input_rest(shared_server, body, field, status):
    s = shared_server
    with s.client("t1") as a:
        before = (s.health()["engine_seq"], a.get("/v1/book/0").json())
        r = a.post("/v1/orders", content=body)
        assert r.status_code == status, r.text
        e = r.json()
        assert e["type"] == "error" and e["field"] == field, e
        assert (s.health()["engine_seq"], a.get("/v1/book/0").json()) == before
        assert a.get("/v1/orders/7").status_code == 404
        # the same client goes on working
        assert a.get("/v1/account").status_code == 200


def test_bad_input_other_endpoints(shared_server):
    with shared_server.client("t1") as a:
        for r, field in ((a.get("/v1/orders/abc"), "order_id"), (a.delete("/v1/orders/-1"), "order_id"),
                         (a.get("/v1/book/x"), "symbol"), (a.get("/v1/book/99"), "symbol"),
                         (a.get("/v1/book/0", params={"depth": 0}), "depth"),
                         (a.get("/v1/orders", params={"status": "weird"}), "status"),
                         (a.get("/v1/trades/0", params={"since": -1}), "since")):
            assert r.status_code in (400, 404) and r.json()["field"] == field, r.text
        assert a.post("/v1/orders", json=order(31, price=100_000, symbol=0)).status_code == 200
        for body, field in (({"price": "x", "qty": 1}, "price"), ({"price": 1}, "qty"), ([1], "body")):
            r = a.patch("/v1/orders/31", json=body)
            assert r.status_code == 400 and r.json()["field"] == field, r.text
        assert a.get("/v1/orders/31").json()["price"] == 100_000
    with shared_server.client("admin") as adm:
        r = adm.post("/v1/admin/kill-switch", json={"on": "yes"})
        assert r.status_code == 400 and r.json()["field"] == "on"


def test_forgotten_orders_and_trades_are_reported(make_server):
    """max_finished_orders = 2, max_trades_kept = 2: the GET endpoints say what is no longer
    held; the limits are pinned in the journal (a restart with others is refused, naming them)."""
    from hpte.engine.server.config import ServerConfig
    from hpte.engine.server.core import Core
    from hpte.engine.server.journal import JournalError

    srv = make_server({"max_finished_orders": 2, "max_trades_kept": 2})
    with srv.client("t1") as a, srv.client("t2") as b:
        assert a.post("/v1/orders", json=order(10, "sell", 100, 3, symbol=1)).status_code == 200
        for i in (1, 2, 3):                                  # 3 trades; t2's 3 and t1's 10 finish
            assert b.post("/v1/orders", json=order(i, "buy", 100, 1, symbol=1)).json()["reports"][-1]["event"] == "FILLED"
        t = a.get("/v1/trades/1", params={"since": 0}).json()
        assert (t["last_seq"], t["first_held_seq"], t["missing"], t["max_trades_kept"]) == (3, 2, 1, 2)
        assert [x[0] for x in t["trades"]] == [2, 3]
        assert a.get("/v1/trades/1", params={"since": 2}).json()["missing"] == 0
        for i in (1, 2, 3, 4):                               # then t1's 1..4 finish (cancelled)
            a.post("/v1/orders", json=order(i, "buy", 50 + i, 1, symbol=0))
            assert a.delete(f"/v1/orders/{i}").json()["reports"][0]["event"] == "CANCELLED"
        r = a.get("/v1/orders/1")
        assert r.status_code == 404 and r.json()["code"] == "UNKNOWN_ORDER"
        assert (r.json()["finished_orders_forgotten"], r.json()["max_finished_orders"]) == (3, 2)
        assert "no longer held" in r.json()["error"]
        assert a.get("/v1/orders/3").json()["status"] == "CANCELLED"
        lst = a.get("/v1/orders", params={"status": "all"}).json()
        assert [o["order_id"] for o in lst["orders"]] == [3, 4] and lst["finished_orders_forgotten"] == 3
        assert b.get("/v1/account").json()["finished_orders_forgotten"] == 3
        assert b.get("/v1/orders/1").status_code == 404
    srv.stop()
    cfg = ServerConfig.load(srv.config)
    cfg.max_finished_orders = 5
    with pytest.raises(JournalError, match="max_finished_orders"):
        Core(cfg)
