"""Journal, snapshots and crash recovery: kill -9 under load, restart, state equal to an offline
replay of the journal; torn and corrupt records cut at the checksum."""
from __future__ import annotations

import json
import threading
import time

import numpy as np
import orjson
import pyarrow as pa
import pytest

from hpte.engine import schema as S
from hpte.engine.server import journal as J
from hpte.engine.server.replay import replay_journal
from hpte.engine.server.state import JOURNAL_SCHEMA, Gateway, order_view

from .conftest import KEYS, recv_msg, ws_connect


def _batch(rng, n, start_oid, ts):
    return {"ts_ns": np.full(n, ts, np.int64), "order_id": np.arange(start_oid, start_oid + n, dtype=np.uint64),
            "side": rng.choice([-1, 1], n).astype(np.int8), "price_ticks": rng.integers(990, 1010, n).astype(np.int64),
            "qty": rng.integers(1, 9, n).astype(np.int64), "action": np.zeros(n, np.uint8),
            "order_type": np.zeros(n, np.uint8), "tif": np.zeros(n, np.uint8),
            "account": rng.integers(1, 4, n).astype(np.uint32), "symbol": rng.integers(0, 2, n).astype(np.uint32),
            "post_only": np.zeros(n, np.uint8), "client_order_id": np.arange(start_oid, start_oid + n, dtype=np.uint64),
            "stop_price_ticks": np.zeros(n, np.int64)}


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
    gw, _f, _e, _cut, _s = replay_journal(srv.journal)
    h = srv.health()
    assert h["engine_seq"] == gw.engine.seq
    with srv.client("t1") as c:
        for sym in (0, 1):
            b = c.get(f"/v1/book/{sym}").json()
            assert b == gw.levels(sym)
    return gw


def _stops(srv) -> dict:
    """Stop orders on symbol 2 (the load trades 0 and 1): a buy STOP that triggers at once on a
    trade at 1000, a sell STOP_LIMIT (stop 990, limit 985) and a buy STOP (stop 1500) left
    waiting. Returns the client ids."""
    with srv.client("t1") as a, srv.client("t2") as b:
        def post(c, m):
            r = c.post("/v1/orders", json={"symbol": 2, **m})
            assert r.status_code == 200, r.text
            return [x["event"] for x in r.json()["reports"]]
        assert post(a, {"order_id": 9001, "side": "sell", "price": 1000, "qty": 5}) == ["ACCEPTED"]
        assert post(b, {"order_id": 9002, "side": "buy", "qty": 2, "order_type": "stop", "stop_price": 1000}) == ["ACCEPTED"]
        assert post(b, {"order_id": 9003, "side": "sell", "qty": 3, "order_type": "stop_limit", "price": 985,
                        "stop_price": 990, "tif": "day"}) == ["ACCEPTED"]
        assert post(b, {"order_id": 9004, "side": "buy", "qty": 1, "order_type": "stop", "stop_price": 1500}) == ["ACCEPTED"]
        # a trade at 1000: the buy stop at 1000 triggers in the same row and takes 2 more at 1000
        # (the REST reply holds this row's own order's reports)
        assert post(b, {"order_id": 9005, "side": "buy", "price": 1000, "qty": 1}) == ["ACCEPTED", "FILLED"]
        assert a.get("/v1/orders/9001").json()["leaves_qty"] == 2
        v = {o: b.get(f"/v1/orders/{o}").json() for o in (9002, 9003, 9004)}
    assert (v[9002]["status"], v[9002]["triggered"]) == ("FILLED", True)
    assert [(v[o]["status"], v[o]["triggered"], v[o]["stop_price"]) for o in (9003, 9004)] == \
        [("OPEN", False, 990), ("OPEN", False, 1500)]
    return v


def test_kill9_under_load_recovers_exactly(make_server):
    """... with waiting stop orders (in the snapshot and the replayed records): after the restart
    they are still waiting in the engine and trigger as before the kill."""
    srv = make_server({"snapshot_every_batches": 25})
    stops = _stops(srv)
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
    with srv.client("t2") as b, srv.client("t1") as a:
        assert {o: b.get(f"/v1/orders/{o}").json() for o in stops} == stops
        assert {o: order_view(gw.order(2, o)) for o in stops} == stops
        assert a.get("/v1/book/2").json() == gw.levels(2)
        # the recovered sell stop (990) still waits in the engine: a trade at 990 triggers it,
        # its limit 985 then rests; the buy stop at 1500 keeps waiting
        a.post("/v1/orders", json={"order_id": 9100, "symbol": 2, "side": "buy", "price": 990, "qty": 1})
        r = a.post("/v1/orders", json={"order_id": 9101, "symbol": 2, "side": "sell", "qty": 1, "order_type": "market"})
        got = [(x["event"], x["order_id"]) for x in r.json()["reports"]]
        assert got == [("ACCEPTED", 9101), ("FILLED", 9101)], got
        assert b.get("/v1/orders/9003").json()["triggered"] is True
        assert b.get("/v1/orders/9004").json()["triggered"] is False
        assert a.get("/v1/book/2?depth=1").json()["asks"] == [[985, 3, 1]]
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


def _finish_flow(rng, k, n):
    """Batch k of a flow that finishes many orders: crossing limits, IOCs and cancels."""
    b = _batch(rng, n, 1 + n * k, 2000 + k)
    b["tif"] = (rng.random(n) < 0.2).astype(np.uint8)                       # some IOC
    if k:
        cancel = rng.random(n) < 0.25                                         # cancel older ids
        b["action"][cancel] = S.ACT_CANCEL
        b["order_id"][cancel] = b["client_order_id"][cancel] = rng.integers(1, 1 + n * k, int(cancel.sum())).astype(np.uint64)
    return b


def test_finished_orders_and_trades_bounded():
    """A gateway that keeps 50 finished orders and 7 trades a symbol holds exactly the newest
    ones of an unbounded gateway fed the same batches (live orders all held), counts what it
    forgot per account, reports missing trades, and a snapshot restores the bounded state."""
    import pickle

    rng = np.random.default_rng(11)
    big, small = Gateway([0, 1]), Gateway([0, 1], max_finished=50, max_trades=7)
    finished_order: list[int] = []
    for k in range(6):
        b = _finish_flow(rng, k, 300)
        # the engine ids the writer would give: the same rows go to both gateways
        for g in (big, small):
            g.apply_orders({c: v.copy() for c, v in b.items()}, replay=True)
    live = {e: o for e, o in big.orders.items() if o[8] in ("OPEN", "PARTIALLY_FILLED")}
    fin = [e for e in big.finished if big.orders[e][8] not in ("OPEN", "PARTIALLY_FILLED")]
    assert len(fin) > 50 and len(live) > 0
    kept = set(fin[-50:])
    assert set(small.orders) == set(live) | kept
    for e in small.orders:
        assert small.orders[e] == big.orders[e]
    gone = set(fin) - kept
    assert sum(small.forgotten.values()) == len(gone)
    for a in (1, 2, 3):
        assert small.forgotten.get(a, 0) == sum(big.orders[e][0] == a for e in gone)
    for e in gone:            # the client id of a forgotten order is unknown now
        o = big.orders[e]
        assert small.order(o[0], o[1]) is None and big.order(o[0], o[1]) == o
    for s in (0, 1):
        t = small.trades_since(s, 0, 1000)
        last = big.trade_seq[s]
        assert last > 7 and t["last_seq"] == last and t["first_held_seq"] == last - 6
        assert t["trades"] == list(big.trades[s])[-7:] and t["missing"] == last - 7
        assert small.trades_since(s, last - 3, 2)["trades"] == list(big.trades[s])[-3:-1]
        assert small.trades_since(s, last, 10)["trades"] == [] and small.trades_since(s, last, 10)["missing"] == 0
    h = Gateway.restore(pickle.loads(pickle.dumps(small.snapshot())))
    b = _finish_flow(rng, 6, 300)
    small.apply_orders({c: v.copy() for c, v in b.items()}, replay=True)
    h.apply_orders({c: v.copy() for c, v in b.items()}, replay=True)
    assert (h.orders, h.ids, h.forgotten, list(h.finished)) == (small.orders, small.ids, small.forgotten, list(small.finished))
    assert len(small.orders) <= 50 + sum(o[8] in ("OPEN", "PARTIALLY_FILLED") for o in small.orders.values())


def test_segments_retired_and_recovery_reads_from_newest_snapshot(tmp_path):
    """Segments wholly before the older of the two kept snapshots are deleted (or archived); a
    recovery reads only the segments from the newest valid snapshot on (damage in an earlier,
    still kept segment does not matter), falls back to the older snapshot when the newest is
    damaged, and refuses when neither covers the missing records."""
    from hpte.engine.server.core import _fresh_gateway, recover

    meta = {"stp": "none", "risk_toml": None, "symbols": [0, 1], "max_finished_orders": 10**6, "max_trades_kept": 100}
    for archive in (None, tmp_path / "archive"):
        d = tmp_path / ("del" if archive is None else "arch")
        d.mkdir()
        (d / "meta.json").write_text(json.dumps(meta))
        rng = np.random.default_rng(3)
        gw = _fresh_gateway(meta, "test")
        w = J.JournalWriter(d, 0)
        snaps = []
        for k in range(12):
            b = _batch(rng, 50, 1 + 50 * k, 3000 + k)
            rb = pa.RecordBatch.from_pydict({f.name: b[f.name] for f in JOURNAL_SCHEMA}, schema=JOURNAL_SCHEMA)
            w.append(J.K_ORDERS, J.encode_batch(rb))
            gw.apply_orders(b, replay=True)
            if k % 4 == 3:                  # a snapshot at records 4, 8, 12, as the writer does it
                w.roll()
                J.write_snapshot(d, gw.recno, gw.snapshot())
                snaps.append(gw.recno)
                kept = J.snapshots(d)
                J.retire_segments(d, kept[-1][0], archive)
        w.close()
        assert [r for r, _ in J.snapshots(d)] == [12, 8]
        assert [p.name for p in sorted(d.glob("seg-*.hpj"))] == [f"seg-{r:016d}.hpj" for r in (8, 12)]
        if archive is not None:
            assert [p.name for p in sorted(archive.glob("seg-*.hpj"))] == [f"seg-{r:016d}.hpj" for r in (0, 4)]
            g0, _f, _e, _c, start = replay_journal(d, archive)         # the whole history, from record 0
            assert start == 0 and g0.engine.seq == gw.engine.seq and g0.orders == gw.orders
        else:                                      # offline replay from the oldest snapshot kept
            g0, fills, _e, _c, start = replay_journal(d)
            assert start == 8 and len(fills) == 4 and g0.engine.seq == gw.engine.seq and g0.orders == gw.orders
        g1, nxt, rep = recover(d, archive)
        assert nxt == 12 and "snapshot at record 12" in rep[0] and "replayed 0 records" in rep[-1]
        assert g1.orders == gw.orders and g1.levels(0) == gw.levels(0)
        seg8 = d / f"seg-{8:016d}.hpj"             # damage before the newest snapshot: not read
        orig = seg8.read_bytes()
        data = bytearray(orig)
        data[J.HEADER.size + 5] ^= 0xFF
        seg8.write_bytes(bytes(data))
        assert recover(d, archive)[0].orders == gw.orders
        seg8.write_bytes(orig)
        snap12 = d / f"snap-{12:016d}.pkl"         # newest snapshot damaged: the older one + 4 records
        s12 = snap12.read_bytes()
        snap12.write_bytes(s12[:-1] + bytes([s12[-1] ^ 1]))
        g2, nxt, rep = recover(d, archive)
        assert "damaged" in rep[0] and "snapshot at record 8" in rep[1] and "replayed 4 records" in rep[-1]
        assert g2.orders == gw.orders and g2.engine.seq == gw.engine.seq
        snap8 = d / f"snap-{8:016d}.pkl"
        snap8.write_bytes(b"junk")
        if archive is None:                        # neither snapshot: records 0-7 are gone
            with pytest.raises(J.JournalError, match="no valid snapshot"):
                recover(d, archive)
        else:                                      # the archive still holds them: a whole replay
            g3, _n, rep = recover(d, archive)
            assert "replayed 12 records" in rep[-1] and g3.orders == gw.orders


def test_kill9_at_chosen_crash_points(make_server):
    """SIGKILL at each chosen point of the writer (HPTE_SERVER_CRASH_AT), one after another on
    one journal (snapshots every 2 batches, retired segments archived). After each restart:
    the server died of the kill; every acknowledged order is there in the offline replay's exact
    state; the two orders of the call in flight are both there or both absent, as the offline
    replay has them: there when the crash came after their record was durable, absent for a
    torn record (at a snapshot the call in flight may not have reached the writer); the books
    equal the offline replay's."""
    import httpx

    from hpte.engine.server.core import CRASH_POINTS

    srv = make_server({"snapshot_every_batches": 2, "journal_archive_dir": "archive"})
    archive = srv.dir / "archive"
    acked: list[int] = []
    oid = 0

    def check(pending, present):
        gw, _f, _e, _c, start = replay_journal(srv.journal, archive)
        assert start == 0
        assert srv.health()["engine_seq"] == gw.engine.seq
        with srv.client("t1") as c:
            for o in acked:
                r = c.get(f"/v1/orders/{o}")
                assert r.status_code == 200 and r.json() == order_view(gw.order(1, o)), o
            got = [c.get(f"/v1/orders/{o}").status_code for o in pending]
            there = gw.order(1, pending[0]) is not None
            assert got == ([200, 200] if there else [404, 404]), (pending, got)      # never half applied
            assert present is None or there == present, (pending, present)
            return there
            for sym in (0, 1):
                assert c.get(f"/v1/book/{sym}").json() == gw.levels(sym)

    # before_match leaves the same state on disk as before_ack (the record durable, nothing
    # acknowledged); each server start costs seconds, so it is left out
    points = [p for p in CRASH_POINTS if p != "before_match"]
    last = None          # (point, call in flight) of the crash before: checked after this start
    for point in (*points, None):
        srv.stop()
        srv.start(env={"HPTE_SERVER_CRASH_AT": f"{point}:3"} if point else None)
        if last is not None:
            lp, pending = last
            want = {"torn_record": False, "before_match": True, "before_ack": True}.get(lp)
            if check(pending, want):
                acked.extend(pending)       # durable and now recovered: checked from here on too
            if lp == "torn_record":
                assert any("torn" in line for line in srv.health()["recovery"]), srv.health()
        if point is None:
            break
        pending = None
        with srv.client("t1") as c:
            for _ in range(200):
                pair = [oid + 1, oid + 2]
                oid += 2
                body = [{"order_id": o, "symbol": o % 2, "side": ("buy", "sell")[o % 3 == 0], "price": 1000 + o % 5,
                         "qty": 1 + o % 4} for o in pair]
                try:
                    r = c.post("/v1/orders", json=body)
                except httpx.TransportError:
                    pending = pair
                    break
                assert r.status_code == 200
                acked.extend(pair)
        assert pending is not None, f"{point}: the server did not crash"
        srv.proc.wait(30)
        assert srv.proc.returncode == -9, (point, srv.output()[-2000:])
        last = (point, pending)
    assert any(archive.glob("seg-*.hpj")) and len(list(srv.journal.glob("snap-*.pkl"))) == 2


def test_bulk_accept_equals_the_per_event_loop():
    """The order-table rows of accepted new orders made in bulk equal the per-event loop's, on
    random batches with cancels, replaces, IOCs, market orders and repeated ids (where the bulk
    path must step aside)."""
    class Loop(Gateway):
        BULK_MIN = 1 << 62

    rng = np.random.default_rng(23)
    fast, slow = Gateway([0, 1], max_finished=300), Loop([0, 1], max_finished=300)
    for k in range(12):
        n = int(rng.integers(40, 400))
        b = _finish_flow(rng, k, n)
        b["order_type"] = (rng.random(n) < 0.05).astype(np.uint8)              # some market orders
        rep = rng.random(n) < 0.1
        if k:
            b["action"][rep] = S.ACT_REPLACE
            b["order_id"][rep] = b["client_order_id"][rep] = rng.integers(1, 400 * k, int(rep.sum())).astype(np.uint64)
        if k % 3 == 2:                                                          # a repeated new id
            b["order_id"][5] = b["client_order_id"][5] = b["order_id"][3]
            b["action"][3] = b["action"][5] = S.ACT_NEW
        ra, _, ma = fast.apply_orders({c: v.copy() for c, v in b.items()}, replay=True)
        rb, _, mb = slow.apply_orders({c: v.copy() for c, v in b.items()}, replay=True)
        assert ma == mb
        assert fast.orders == slow.orders and list(fast.finished) == list(slow.finished), k
        assert fast.forgotten == slow.forgotten and fast.ids == slow.ids
    assert len(fast.orders) > 100 and sum(fast.forgotten.values()) > 0


def test_bulk_translate_equals_the_per_row_loop():
    """Engine ids of all-new batches assigned in bulk equal the per-row loop's, including
    batches where the bulk path must step aside (a repeated id, an id already in use, a cancel)."""
    class Loop(Gateway):
        BULK_MIN = 1 << 62

    rng = np.random.default_rng(8)
    fast, slow = Gateway([0, 1]), Loop([0, 1])
    for k in range(10):
        n = int(rng.integers(50, 300))
        acct = np.full(n, int(rng.integers(1, 3)), np.uint32)
        coid = rng.integers(0, 2000, n).astype(np.uint64) if k % 3 == 1 else np.arange(k * 1000, k * 1000 + n, dtype=np.uint64)
        act = np.zeros(n, np.uint8)
        if k % 4 == 3:
            act[::7] = S.ACT_CANCEL
        outs = []
        for g in (fast, slow):
            sym, side = rng.integers(0, 2, n).astype(np.uint32), np.ones(n, np.int8)
            outs.append(g.translate(acct, coid, act, sym, side, np.ones(n, np.int64), np.ones(n, np.int64), np.ones(n, np.uint8)))
        assert np.array_equal(outs[0], outs[1]), k
        assert fast.ids == slow.ids and fast.next_eid == slow.next_eid
    assert len(fast.ids) > 1000


def test_waiting_stop_in_the_order_table_and_snapshot():
    """The order table follows a waiting stop (stop price, replace with a new stop price,
    TRIGGERED), the same live and after a snapshot restore, and the engine triggers it at its
    new stop price."""
    import pickle

    def rows(*rs, ts):
        keys = ("order_id", "client_order_id", "account", "action", "side", "price_ticks", "qty", "order_type",
                "stop_price_ticks")
        cols = {k: np.array([r[i] for r in rs]) for i, k in enumerate(keys)}
        n = len(rs)
        dt = {f.name: f.type.to_pandas_dtype() for f in JOURNAL_SCHEMA}
        out = {k: v.astype(dt[k]) for k, v in cols.items()}
        out |= {"ts_ns": np.full(n, ts, np.int64), "tif": np.zeros(n, np.uint8), "symbol": np.zeros(n, np.uint32),
                "post_only": np.zeros(n, np.uint8)}
        return out

    g = Gateway([0])
    # id, client id, account, action, side, price, qty, order_type, stop price
    g.apply_orders(rows((1, 1, 1, S.ACT_NEW, S.SELL, 100, 10, S.OT_LIMIT, 0),
                        (2, 2, 2, S.ACT_NEW, S.BUY, 0, 2, S.OT_STOP, 120), ts=10), replay=True)
    assert order_view(g.orders[2])["stop_price"] == 120 and order_view(g.orders[2])["order_type"] == "stop"
    g.apply_orders(rows((2, 2, 2, S.ACT_REPLACE, S.BUY, 1, 3, S.OT_LIMIT, 100), ts=11), replay=True)
    h = Gateway.restore(pickle.loads(pickle.dumps(g.snapshot())))
    for gw in (g, h):
        v = order_view(gw.orders[2])
        assert (v["stop_price"], v["qty"], v["triggered"], v["status"]) == (100, 3, False, "OPEN")
        res, _b, _m = gw.apply_orders(rows((3, 3, 3, S.ACT_NEW, S.BUY, 100, 1, S.OT_LIMIT, 0), ts=12), replay=True)
        ev = [(S.EVENT_NAMES[e], o) for e, o in zip(res.events["event"].tolist(), res.events["order_id"].tolist())]
        assert (S.EVENT_NAMES[S.EV_TRIGGERED], 2) in ev, ev       # the new stop price (100) was reached
        v = order_view(gw.orders[2])
        assert (v["triggered"], v["status"], v["filled_qty"]) == (True, "FILLED", 3)
    assert g.orders == h.orders
