"""Micro-batching by size and by waiting time, and each fsync policy through a restart."""
from __future__ import annotations

import re

import httpx
import pytest

from .conftest import recv_msg, ws_connect


def test_batches_cut_by_size_after_waiting(make_server):
    srv = make_server({"batch_max_rows": 3, "batch_wait_us": 1_000_000})
    ws = ws_connect(srv, "/v1/ws/orders", "t1")
    for i in range(5):        # all queued within the 1 s wait: cut into 3 + 2 rows
        ws.send(f'{{"type": "new", "req_id": {i}, "order_id": {i + 1}, "symbol": 0, "side": "buy", "price": {100 + i}, "qty": 1}}')
    ws.send('{"type": "ping", "req_id": "end"}')
    msgs = []
    while not msgs or msgs[-1].get("type") != "pong":
        msgs.append(recv_msg(ws, 60))
    acks = [m for m in msgs if m["type"] == "ack"]
    assert [a["req_id"] for a in acks] == [0, 1, 2, 3, 4]
    m = httpx.get(srv.url + "/metrics").text
    assert re.search(r"^hpte_batches_total 2$", m, re.M), m
    assert re.search(r'^hpte_batch_rows_bucket\{le="2"\} 1$', m, re.M) and re.search(r'^hpte_batch_rows_bucket\{le="4"\} 2$', m, re.M)
    ws.close()


def test_fsync_policies_survive_a_restart(make_server):
    """One journal served in turn under each policy (the policy is not part of the journal):
    what each acknowledged is there after each restart."""
    from .conftest import write_config

    srv = make_server({"fsync": "always"})
    placed = []
    for i, policy in enumerate(("always", "batch", "interval")):
        if i:
            srv.stop()               # graceful: the journal is closed (fsynced) on the way out
            write_config(srv.dir, {"fsync": policy})
            srv.start()
        with srv.client("t1") as c:
            for oid in placed:       # what the earlier policies acknowledged
                o = c.get(f"/v1/orders/{oid}").json()
                assert (o["status"], o["leaves_qty"], o["price"]) == ("OPEN", 2, 7 + oid), (policy, o)
            oid = 9 + i
            assert c.post("/v1/orders", json={"order_id": oid, "symbol": 1, "side": "sell", "price": 7 + oid,
                                              "qty": 2}).status_code == 200
            placed.append(oid)
    srv.stop()
    srv.start()
    with srv.client("t1") as c:
        assert c.get("/v1/book/1").json()["asks"] == [[7 + oid, 2, 1] for oid in placed]


@pytest.mark.parametrize("server,named", [
    ({"max_finished_orders": -1}, "max_finished_orders"),
    ({"max_trades_kept": 0}, "max_trades_kept"),
    ({"journal_archive_dir": 5}, "journal_archive_dir"),
    ({"journal_dir": "j", "journal_archive_dir": "j"}, "journal_archive_dir"),
    ({"fsync": "sometimes"}, "fsync"),
    ({"batch_max_rows": 0}, "batch_max_rows"),
    ({"colour": 1}, "colour"),
])
def test_config_errors_name_the_key(tmp_path, server, named):
    from hpte.engine.server.config import ConfigError, ServerConfig

    with pytest.raises(ConfigError, match=named):
        ServerConfig.from_dict({"server": server}, base=tmp_path)
    ok = ServerConfig.from_dict({"server": {"journal_archive_dir": "arch", "max_finished_orders": 0}}, base=tmp_path)
    assert ok.journal_archive_dir == (tmp_path / "arch").resolve() and ok.max_finished_orders == 0
    assert ServerConfig.from_dict({"server": {"journal_archive_dir": ""}}).journal_archive_dir is None
