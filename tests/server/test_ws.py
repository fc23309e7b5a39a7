"""WebSocket order entry and market data against a real `hpte serve`, checked against `hpte match`."""
from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hpte.engine.io import read_orders, write_columns
from hpte.engine import schema as S

from .conftest import KEYS, recv_msg, ws_connect

ACCT_KEY = {1: "t1", 2: "t2"}


def hpte(*args):
    r = subprocess.run([sys.executable, "-m", "hpte", *map(str, args)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return r


def gen_flow(path, n, books, accounts, seed, *extra):
    hpte("gen", path, "-n", n, "-b", books, "-a", accounts, "-s", seed, *extra)
    return read_orders(path)


def recv_until(ws, pred, timeout=60.0):
    """Messages until pred(message) is true (that one included); a binary frame (Arrow reports)
    comes as {"type": "arrow", "table": pyarrow.Table}."""
    out, end = [], time.monotonic() + timeout
    while True:
        m = recv_msg(ws, timeout=max(end - time.monotonic(), 0.01))
        out.append(m)
        if pred(m):
            return out


def md_until(ws, msgs: list, symbol: int, seq: int) -> None:
    """Read market data into msgs until symbol's sequence number reaches seq."""
    def done(m):
        return m.get("symbol") == symbol and m.get("seq", -1) >= seq
    if not any(done(m) for m in msgs):
        msgs += recv_until(ws, done)


def rebuild(msgs, symbol):
    """An L2 book from a snapshot and the updates after it, checking the sequence is gap-free."""
    bids, asks, seq = {}, {}, None
    for m in msgs:
        if m.get("symbol") != symbol:
            continue
        if m["type"] == "snapshot":
            bids = {p: (q, n) for p, q, n in m["bids"]}
            asks = {p: (q, n) for p, q, n in m["asks"]}
            seq = m["seq"]
        elif m["type"] == "update":
            assert seq is not None and m["seq"] == seq + 1, (seq, m["seq"])
            seq = m["seq"]
            for side, p, q, n in m["deltas"]:
                book = bids if side == S.BUY else asks
                if q == 0:
                    book.pop(p, None)
                else:
                    book[p] = (q, n)
    return ({"bids": [[p, *bids[p]] for p in sorted(bids, reverse=True)],
             "asks": [[p, *asks[p]] for p in sorted(asks)]}, seq)


def test_ws_flow_equals_hpte_match(make_server, tmp_path):
    """A generated flow sent as JSON over two accounts' WebSockets: the execution reports equal
    `hpte match` on the same flow, and a market-data subscriber rebuilds the final book exactly.
    The flow has stop and stop-limit orders (JSON "stop_price"): their TRIGGERED events too."""
    c = gen_flow(tmp_path / "flow.parquet", 3000, 2, 2, 7, "--stops", "0.05")
    hpte("match", tmp_path / "flow.parquet", "--fills", tmp_path / "f.parquet", "--events", tmp_path / "e.parquet",
         "--book", tmp_path / "b.parquet")
    ev = pq.read_table(tmp_path / "e.parquet").to_pydict()
    srv = make_server()
    md = ws_connect(srv, "/v1/ws/market", "md")
    md.send(orjson.dumps({"type": "subscribe", "symbols": [0, 1]}).decode())
    conns = {a: ws_connect(srv, "/v1/ws/orders", ACCT_KEY[a]) for a in (1, 2)}
    got = {1: [], 2: []}
    acked = {1: -1, 2: -1}
    prev = None
    for i in range(len(c["ts_ns"])):
        a = int(c["account"][i])
        if prev is not None and prev != a:          # keep arrival order across the two connections
            p = prev
            got[p] += recv_until(conns[p], lambda m, i=i: m.get("type") == "ack" and m["req_id"] == i - 1) \
                if acked[p] < i - 1 else []
            acked[p] = i - 1
        act = int(c["action"][i])
        m = {"type": ("new", "cancel", "replace")[act], "req_id": i, "order_id": int(c["order_id"][i]),
             "symbol": int(c["symbol"][i]), "side": int(c["side"][i])}
        if act == S.ACT_NEW:
            m |= {"price": int(c["price_ticks"][i]), "qty": int(c["qty"][i]), "order_type": int(c["order_type"][i]),
                  "tif": int(c["tif"][i])}
            if c["stop_price_ticks"][i]:
                m["stop_price"] = int(c["stop_price_ticks"][i])
        else:
            m |= {"price": int(c["price_ticks"][i]), "qty": int(c["qty"][i])}
        conns[a].send(orjson.dumps(m).decode())
        prev = a
    for a, ws in conns.items():             # drain: a ping after everything is answered last
        ws.send('{"type": "ping", "req_id": "end"}')
        got[a] += recv_until(ws, lambda m: m.get("type") == "pong")
    for a in (1, 2):
        seqs = [m["conn_seq"] for m in got[a]]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "per-connection sequence numbers have gaps"
        reps = [(m["seq"], m["event"], m["reason"], m["order_id"], m["qty"], m["leaves_qty"], m["price"])
                for m in got[a] if m["type"] == "report"]
        want = [(s, e, r, o, q, lv, p) for s, e, r, o, q, lv, p, acc in zip(
            ev["seq"], ev["event"], ev["reason"], ev["order_id"], ev["qty"], ev["leaves_qty"], ev["price_ticks"],
            ev["account"]) if acc == a]
        if reps != want:
            import difflib
            print("\n".join(list(difflib.unified_diff([str(x) for x in want], [str(x) for x in reps], lineterm=""))[:40]))
        assert len(reps) == len(want) and reps == want
        assert any(r[1] == "TRIGGERED" for r in reps), "the flow's stops never triggered"
        assert sum(m["type"] == "ack" for m in got[a]) == int((c["account"] == a).sum())
    # market data: rebuild from snapshot + deltas; equals the server's book and hpte match's
    book = pq.read_table(tmp_path / "b.parquet").to_pydict()
    seen: list = []
    with srv.client("t1") as h:
        for sym in (0, 1):
            rest = h.get(f"/v1/book/{sym}").json()
            md_until(md, seen, sym, rest["seq"])
            md_book, seq = rebuild(seen, sym)
            assert seq == rest["seq"]
            assert md_book == {"bids": rest["bids"], "asks": rest["asks"]}
            ref = {"bids": [], "asks": []}
            for s_, side, p, q, n in zip(book["symbol"], book["side"], book["price_ticks"], book["qty"], book["orders"]):
                if s_ == sym:
                    ref["bids" if side == S.BUY else "asks"].append([p, q, n])
            assert md_book == ref and (ref["bids"] or ref["asks"])
    for ws in (*conns.values(), md):
        ws.close()


def arrow_frame(cols: dict) -> bytes:
    sink = pa.BufferOutputStream()
    t = pa.table({k: pa.array(v) for k, v in cols.items()})
    with pa.ipc.new_stream(sink, t.schema) as w:
        w.write_table(t)
    return sink.getvalue().to_pybytes()


def test_arrow_frames_and_md_subscribe_midway(make_server, tmp_path):
    """Bulk entry in binary Arrow frames: the final book equals `hpte match` of the same rows, and a
    subscriber joining midway rebuilds it from its snapshot."""
    c = gen_flow(tmp_path / "flow.parquet", 20_000, 3, 1, 3, "--stops", "0.02")
    write_columns(tmp_path / "flow1.parquet", c, S.ORDER_SCHEMA)
    hpte("match", tmp_path / "flow1.parquet", "--fills", tmp_path / "f.parquet", "--book", tmp_path / "b.parquet")
    srv = make_server()
    ws = ws_connect(srv, "/v1/ws/orders", None)
    ws.send(orjson.dumps({"type": "auth", "key": KEYS["t1"][0]}).decode())   # first-message auth
    assert recv_msg(ws)["type"] == "authenticated"
    cols = {k: c[k] for k in ("ts_ns", "order_id", "side", "price_ticks", "qty", "action", "order_type", "tif", "symbol",
                              "stop_price_ticks")}
    chunks = np.array_split(np.arange(len(c["ts_ns"])), 8)
    md = None
    msgs = []
    triggered = 0
    for k, idx in enumerate(chunks):
        ws.send(arrow_frame({n: v[idx] for n, v in cols.items()}))
        got = recv_until(ws, lambda m: m.get("type") == "arrow")
        assert got[-2]["type"] == "ack" and got[-2]["rows"] == len(idx) and got[-2]["req_id"] == k
        t = got[-1]["table"]          # the reports of this frame's rows, with the client's order ids
        assert set(t.column("order_id").to_numpy()) <= set(c["order_id"][idx].tolist())
        assert t.num_rows >= len(idx)
        triggered += int((t.column("event").to_numpy() == S.EV_TRIGGERED).sum())
        if k == 3:
            md = ws_connect(srv, "/v1/ws/market", "md")
            md.send(orjson.dumps({"type": "subscribe", "symbols": [0, 1, 2]}).decode())
    ws.send('{"type": "ping"}')
    recv_until(ws, lambda m: m.get("type") == "pong")
    book = pq.read_table(tmp_path / "b.parquet").to_pydict()
    fills = pq.read_table(tmp_path / "f.parquet").num_rows
    with srv.client("t1") as h:
        total = 0
        for sym in (0, 1, 2):
            rest = h.get(f"/v1/book/{sym}").json()
            md_until(md, msgs, sym, rest["seq"])
            mb, seq = rebuild(msgs, sym)
            ref = {"bids": [], "asks": []}
            for s_, side, p, q, n in zip(book["symbol"], book["side"], book["price_ticks"], book["qty"], book["orders"]):
                if s_ == sym:
                    ref["bids" if side == S.BUY else "asks"].append([p, q, n])
            assert mb == {"bids": rest["bids"], "asks": rest["asks"]} == ref
            total += h.get(f"/v1/trades/{sym}").json()["last_seq"]
        assert total == fills
    assert triggered > 0          # stop orders came in the frames' stop_price_ticks column and triggered
    ws.close()
    md.close()


def test_ws_bad_input_keeps_connection(shared_server):
    s = shared_server
    ws = ws_connect(s, "/v1/ws/orders", "t2")
    seq0 = s.health()["engine_seq"]
    cases = [
        ("{not json", "message", "BAD_REQUEST"),
        ('{"type": "launch", "req_id": 1}', "type", "UNKNOWN_TYPE"),
        ('{"type": ["new"], "req_id": 1}', "type", "UNKNOWN_TYPE"),          # unhashable: once a TypeError
        ('{"type": "new", "req_id": 2, "order_id": 5, "symbol": 0, "side": "buy", "price": 1}', "qty", "BAD_REQUEST"),
        ('{"type": "new", "req_id": 3, "order_id": 5, "symbol": 0, "side": "buy", "price": 1, "qty": "1"}', "qty", "BAD_REQUEST"),
        ('{"type": "new", "req_id": 4, "order_id": 5, "symbol": 9, "side": "buy", "price": 1, "qty": 1}', "symbol", "UNKNOWN_SYMBOL"),
        ('{"type": "new", "req_id": 5, "order_id": -5, "symbol": 0, "side": "buy", "price": 1, "qty": 1}', "order_id", "BAD_REQUEST"),
        ('{"type": "replace", "req_id": 6, "order_id": 5, "price": 1}', "qty", "BAD_REQUEST"),
        ("[1, 2]", None, "BAD_REQUEST"),
        ("x" * 70_000, "message", "TOO_LARGE"),
    ]
    for text, field, code in cases:
        ws.send(text)
        m = recv_msg(ws)
        assert (m["type"], m["field"], m["code"]) == ("error", field, code), (text[:60], m)
    ws.send(b"\x00\x01not arrow")
    m = recv_msg(ws)
    assert (m["type"], m["field"]) == ("error", "frame")
    ws.send(arrow_frame({"order_id": np.array([1], np.uint64), "side": np.array([1], np.int8)}))
    m = recv_msg(ws)
    assert m["type"] == "error" and m["field"] == "ts_ns", m
    ws.send(arrow_frame({"ts_ns": np.array([0]), "order_id": np.array([1], np.uint64), "side": np.array([1], np.int8),
                         "price_ticks": np.array([1]), "qty": np.array([1]), "account": np.array([1], np.uint32)}))
    m = recv_msg(ws)
    assert m["type"] == "error" and m["field"] == "account", m
    assert s.health()["engine_seq"] == seq0                     # nothing reached the engine
    ws.send('{"type": "new", "req_id": "ok", "order_id": 5, "symbol": 0, "side": "sell", "price": 300000, "qty": 1}')
    got = recv_until(ws, lambda m: m.get("type") == "report")
    assert got[-1]["event"] == "ACCEPTED" and got[-1]["req_id"] == "ok"
    md = ws_connect(s, "/v1/ws/market", "md")
    for text, field in (('{"type": "subscribe", "symbols": [42]}', "symbols"), ('{"type": "sub"}', "type"), ("nope", "message")):
        md.send(text)
        assert recv_msg(md)["field"] == field
    md.send('{"type": "subscribe", "symbols": [0]}')
    assert recv_msg(md)["type"] == "snapshot"
    ws.close()
    md.close()


def test_ws_auth_failures(shared_server):
    from websockets.exceptions import ConnectionClosed

    for who, first in ((None, '{"type": "auth", "key": "wrong-key-123"}'), (None, '{"type": "new"}'), ("md", None)):
        ws = ws_connect(shared_server, "/v1/ws/orders", who)
        if first:
            ws.send(first)
        m = recv_msg(ws)
        assert m["code"] in ("UNAUTHORIZED", "FORBIDDEN")
        with pytest.raises(ConnectionClosed) as e:
            ws.recv(timeout=30)
        assert e.value.rcvd.code == 1008


def test_slow_consumer_backlog_closes_session():
    """The outbox rule behind slow-consumer disconnects: pushing never waits, and past the backlog
    limit the session closes with a reason (the WebSocket adapter then closes with 1008 and it).
    Over real sockets the kernel's buffers absorb several MB first; a network-level test of this
    is still to be written (see the report)."""
    import asyncio

    from hpte.engine.server.config import ApiKey
    from hpte.engine.server.core import Session

    async def run():
        s = Session(ApiKey("k" * 8, 1, "market_data", 0, 0), "market", 3)
        sent = []
        for i in range(3):
            s.push_raw(b"%d" % i)
        assert not s.closed and len(s.out) == 3
        s.push_raw(b"3")
        assert s.closed and "backlog" in s.close_reason and not s.out
        s.push_raw(b"4")                      # a closed session drops silently
        await asyncio.wait_for(s.pump(lambda d: sent.append(d)), 1)
        assert sent == []

    asyncio.run(run())


def test_slow_consumer_disconnected(make_server):
    """Over real sockets: a market-data client that stops reading is closed with code 1008 and a
    reason once its backlog passes the limit, while the writer and the order client carry on."""
    import socket

    from websockets.exceptions import ConnectionClosed

    srv = make_server({"md_backlog": 20})
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)     # a small window: backpressure soon
    sock.connect(("127.0.0.1", srv.port))
    slow = ws_connect(srv, "/v1/ws/market", "md", max_queue=1, sock=sock)
    slow.send('{"type": "subscribe", "symbols": [0]}')
    ws = ws_connect(srv, "/v1/ws/orders", "t1")
    n, frames = 4000, 150          # each frame: n resting orders at new prices = one ~90 KB update
    for k in range(frames):
        cols = {"ts_ns": np.zeros(n, np.int64), "order_id": np.arange(k * n + 1, (k + 1) * n + 1, dtype=np.uint64),
                "side": np.ones(n, np.int8), "price_ticks": np.arange(1_000_000 - n, 1_000_000) - k * n,
                "qty": np.ones(n, np.int64), "symbol": np.zeros(n, np.uint32)}
        ws.send(arrow_frame(cols))
        recv_until(ws, lambda m: m.get("type") == "arrow")
    assert srv.health()["engine_seq"] == frames * n
    with pytest.raises(ConnectionClosed) as e:
        while True:
            slow.recv(timeout=30)
    assert e.value.rcvd is not None and e.value.rcvd.code == 1008 and "backlog" in e.value.rcvd.reason
    ws.close()


def test_reports_of_resting_orders_go_to_the_entering_connection(shared_server):
    """Two connections of one account: a later fill of an order rests on the connection that
    entered it only; once that connection is gone, the account's other connections get it."""
    s = shared_server
    a1, a2 = ws_connect(s, "/v1/ws/orders", "t1"), ws_connect(s, "/v1/ws/orders", "t1")
    b = ws_connect(s, "/v1/ws/orders", "t2")
    a1.send('{"type": "new", "req_id": 1, "order_id": 7001, "symbol": 2, "side": "sell", "price": 777000, "qty": 5}')
    recv_until(a1, lambda m: m.get("type") == "report")
    b.send('{"type": "new", "req_id": 1, "order_id": 7002, "symbol": 2, "side": "buy", "price": 777000, "qty": 2}')
    recv_until(b, lambda m: m.get("type") == "report" and m["event"] == "FILLED")
    got = recv_until(a1, lambda m: m.get("type") == "report")
    assert (got[-1]["event"], got[-1]["order_id"], got[-1]["qty"], got[-1]["leaves_qty"]) == ("PARTIALLY_FILLED", 7001, 2, 3)
    a2.send('{"type": "ping", "req_id": "p"}')          # a2 saw no report of a1's order
    assert [m["type"] for m in recv_until(a2, lambda m: m.get("type") == "pong")] == ["pong"]
    a1.close()
    time.sleep(0.2)
    b.send('{"type": "new", "req_id": 2, "order_id": 7003, "symbol": 2, "side": "buy", "price": 777000, "qty": 3}')
    got = recv_until(a2, lambda m: m.get("type") == "report")
    assert (got[-1]["event"], got[-1]["order_id"], got[-1]["leaves_qty"]) == ("FILLED", 7001, 0)
    for ws in (a2, b):
        ws.close()
