"""Journal, snapshots and crash recovery: kill -9 under load, restart, state equal to an offline
replay of the journal; torn and corrupt records cut at the checksum."""
from __future__ import annotations

import json
import threading
import time

import numpy as np
import orjson
import pytest

from hpte.engine import schema as S
from hpte.engine.server import journal as J
from hpte.engine.server.replay import replay_journal
from hpte.engine.server.state import Gateway, order_view

from .conftest import KEYS, recv_msg, ws_connect


def _batch(rng, n, start_oid, ts):
    return {"ts_ns": np.full(n, ts, np.int64), "order_id": np.arange(start_oid, start_oid + n, dtype=np.uint64),
            "side": rng.choice([-1, 1], n).astype(np.int8), "price_ticks": rng.integers(990, 1010, n).astype(np.int64),
            "qty": rng.integers(1, 9, n).astype(np.int64), "action": np.zeros(n, np.uint8),
            "order_type": np.zeros(n, np.uint8), "tif": np.zeros(n, np.uint8),
            "account": rng.integers(1, 4, n).astype(np.uint32), "symbol": rng.integers(0, 2, n).astype(np.uint32),
            "post_only": np.zeros(n, np.uint8), "client_order_id": np.arange(start_oid, start_oid + n, dtype=np.uint64)}


def test_snapshot_restores_bit_for_bit():
    """Gateway.snapshot -> pickle -> restore: the engine's arrays, the tables and every later
    output are identical to the original's."""
    import pickle

    rng = np.random.default_rng(5)
    g = Gateway([0, 1])
    for k in range(5):
        g.apply_orders(_batch(rng, 200, 1 + 200 * k, 1000 + k), replay=True)
    h = Gateway.restore(pickle.loads(pickle.dumps(g.snapshot())))
    st_g, st_h = g.engine.store.S, h.engine.store.S
    for name, a in st_g._asdict().items():
        assert np.array_equal(a, getattr(st_h, name)), name
    assert (g.orders, g.ids, g.md_seq, g.engine.seq) == (h.orders, h.ids, h.md_seq, h.engine.seq)
    for k in range(5, 8):
        b = _batch(rng, 300, 1 + 200 * k, 1000 + k)
        ra, _, ma = g.apply_orders(dict(b), replay=True)
        rb, _, mb = h.apply_orders(dict(b), replay=True)
        for x, y in zip(ra, rb):
            assert np.array_equal(x.raw, y.raw)
        assert ma == mb
    for k, v in g.engine.book_l3().items():
        assert np.array_equal(v, h.engine.book_l3()[k])


def test_journal_torn_and_corrupt_records(tmp_path):
    w = J.JournalWriter(tmp_path, 0, segment_bytes=64)
    for i in range(6):
        w.append(J.K_COMMAND, json.dumps({"i": i}).encode())
    w.close()
    segs = sorted(tmp_path.glob("seg-*.hpj"))
    assert len(segs) >= 2                                         # rolled
    recs, nxt, cut = J.read_records(tmp_path)
    assert [json.loads(p)["i"] for _, _, p in recs] == list(range(6)) and nxt == 6 and cut is None
    last = segs[-1]
    good = last.read_bytes()
    last.write_bytes(good + J.frame(J.K_COMMAND, 6, b'{"i": 6}')[:-3])      # torn
    recs, nxt, cut = J.read_records(tmp_path, repair=True)
    assert nxt == 6 and cut is not None and "torn" in cut.reason and last.read_bytes() == good
    bad = bytearray(J.frame(J.K_COMMAND, 6, b'{"i": 6}'))
    bad[-2] ^= 0xFF                                                          # corrupt payload
    last.write_bytes(good + bytes(bad))
    recs, nxt, cut = J.read_records(tmp_path, repair=True)
    assert nxt == 6 and "checksum" in cut.reason and last.read_bytes() == good
    first = segs[0]                                                          # damage mid-journal
    data = bytearray(first.read_bytes())
    data[J.HEADER.size + 1] ^= 0xFF
    first.write_bytes(bytes(data))
    with pytest.raises(J.JournalError, match="later segments follow"):
        J.read_records(tmp_path)


def _trader(srv, who, oid0, stop, acked, errors):
    rng = np.random.default_rng(oid0)
    try:
        ws = ws_connect(srv, "/v1/ws/orders", who)
        oid, req = oid0, 0
        live = []
        while not stop.is_set():
            for _ in range(20):
                req += 1
                if live and rng.random() < 0.3:
                    m = {"type": "cancel", "req_id": req, "order_id": live.pop(int(rng.integers(len(live))))}
                else:
                    oid += 1
                    m = {"type": "new", "req_id": req, "order_id": oid, "symbol": int(rng.integers(0, 2)),
                         "side": ["buy", "sell"][int(rng.integers(2))], "price": int(rng.integers(990, 1010)),
                         "qty": int(rng.integers(1, 9))}
                    live.append(oid)
                ws.send(orjson.dumps(m).decode())
            while True:
                m = recv_msg(ws)
                if m["type"] == "report" and m["event"] == "ACCEPTED":
                    acked.append(m["order_id"])
                if m["type"] == "ack" and m["req_id"] == req:
                    break
    except Exception as e:          # the kill ends every connection
        errors.append(repr(e))


def _state_matches_offline(srv, accounts):
    gw, _f, _e, _cut = replay_journal(srv.journal)
    h = srv.health()
    assert h["engine_seq"] == gw.engine.seq
    with srv.client("t1") as c:
        for sym in (0, 1):
            b = c.get(f"/v1/book/{sym}").json()
            assert b == gw.levels(sym)
    return gw


def test_kill9_under_load_recovers_exactly(make_server):
    srv = make_server({"snapshot_every_batches": 25})
    stop, errors = threading.Event(), []
    acked = {"t1": [], "t2": []}
    threads = [threading.Thread(target=_trader, args=(srv, who, base, stop, acked[who], errors))
               for who, base in (("t1", 0), ("t2", 1_000_000))]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and min(len(v) for v in acked.values()) < 300:
        time.sleep(0.05)
    srv.stop(kill9=True)                 # while the clients are still sending
    stop.set()
    for t in threads:
        t.join(30)
    assert min(len(v) for v in acked.values()) >= 300, errors
    assert any(p.name.startswith("snap-") for p in srv.journal.iterdir())
    srv.start()
    rep = srv.health()["recovery"]
    assert any("snapshot at record" in line for line in rep), rep
    gw = _state_matches_offline(srv, ("t1", "t2"))
    # every acknowledged order is there, in exactly the offline replay's state
    for who, ids in acked.items():
        acct = KEYS[who][1]
        with srv.client(who) as c:
            for oid in ids:
                r = c.get(f"/v1/orders/{oid}")
                assert r.status_code == 200, (who, oid)
                assert r.json() == order_view(gw.order(acct, oid))
    # a torn last record: cut at restart, reported, and the state is the offline replay's
    srv.stop(kill9=True)
    seg = sorted(srv.journal.glob("seg-*.hpj"))[-1]
    size = seg.stat().st_size
    with open(seg, "ab") as f:
        f.write(J.frame(J.K_ORDERS, 10**9, b"x" * 100)[:60])
    srv.start()
    assert any("cut 60 bytes" in line for line in srv.health()["recovery"])
    assert seg.stat().st_size == size
    _state_matches_offline(srv, ("t1", "t2"))
    # and the server goes on taking orders after recovery
    with srv.client("t1") as c:
        r = c.post("/v1/orders", json={"order_id": 10**12, "symbol": 0, "side": "buy", "price": 1, "qty": 1})
        assert r.json()["reports"][0]["event"] == "ACCEPTED"


def test_journal_replay_cli(make_server, tmp_path):
    import subprocess
    import sys

    import pyarrow.parquet as pq

    srv = make_server()
    with srv.client("t1") as a, srv.client("t2") as b:
        a.post("/v1/orders", json={"order_id": 1, "symbol": 0, "side": "buy", "price": 100, "qty": 5})
        b.post("/v1/orders", json={"order_id": 1, "symbol": 0, "side": "sell", "price": 100, "qty": 2})
    srv.stop()
    r = subprocess.run([sys.executable, "-m", "hpte", "journal", "replay", str(srv.journal), "--fills",
                        str(tmp_path / "f.parquet"), "--events", str(tmp_path / "e.parquet"), "--json"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert (s["records"], s["input_rows"], s["fills"], s["resting"]) == (2, 2, 1, 1)
    f = pq.read_table(tmp_path / "f.parquet").to_pydict()
    assert (f["qty"], f["price_ticks"], f["taker_account"], f["maker_account"]) == ([2], [100], [2], [1])
    ev = pq.read_table(tmp_path / "e.parquet").to_pydict()
    assert ev["event"] == ["ACCEPTED", "ACCEPTED", "PARTIALLY_FILLED", "FILLED"]   # maker, then taker
