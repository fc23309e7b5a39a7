"""A real `hpte serve` subprocess on a free loopback port, and real clients (httpx, websockets)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the gateway tests need the server extra: pip install -e '.[test,server]'")
import httpx  # noqa: E402

KEYS = {
    "t1": ("trader-1-secret", 1, "trader"),
    "t2": ("trader-2-secret", 2, "trader"),
    "md": ("market-data-key", 9, "market_data"),
    "admin": ("admin-secret-key", 0, "admin"),
    "slow": ("rate-limited-key", 3, "trader"),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(d: Path, server: dict | None = None, keys=KEYS, extra: str = "") -> Path:
    """SERVER.toml: [server], the KEYS, then `extra` TOML text (more [[keys]], [binance])."""
    srv = {"symbols": [0, 1, 2], "journal_dir": "journal"} | (server or {})
    lines = ["[server]"]
    for k, v in srv.items():
        lines.append(f"{k} = {v!r}".replace("'", '"'))
    for name, (key, acct, role) in keys.items():
        lines += ["", "[[keys]]", f'key = "{key}"', f"account = {acct}", f'role = "{role}"']
        if name == "slow":
            lines += ["rate = 5", "burst = 5"]
    p = d / "SERVER.toml"
    p.write_text("\n".join(lines) + "\n" + extra)
    return p


class Server:
    """`hpte serve` as a subprocess; stop() kills it (SIGKILL with kill9=True)."""

    def __init__(self, d: Path, server: dict | None = None, risk: Path | None = None, extra: str = ""):
        self.dir = d
        self.config = write_config(d, server, extra=extra)
        self.journal = d / "journal"
        self.risk = risk
        self.proc = None
        self.start()

    def start(self, env: dict | None = None) -> None:
        """Start (again) on a fresh port; `env` adds environment variables (crash tests)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws = f"ws://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "hpte", "serve", "--config", str(self.config), "--port", str(self.port)]
        if self.risk is not None:
            cmd += ["--risk", str(self.risk)]
        self.log = open(self.dir / f"server-{self.port}.log", "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **env} if env else None)
        deadline = time.monotonic() + 300     # the first start compiles the kernels
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hpte serve exited {self.proc.returncode}: {self.output()}")
            try:
                if httpx.get(self.url + "/v1/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"hpte serve did not become ready: {self.output()}")

    def output(self) -> str:
        self.log.flush()
        return (self.dir / f"server-{self.port}.log").read_text()

    def client(self, who: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"X-API-Key": KEYS[who][0]}, timeout=30)

    def health(self) -> dict:
        return httpx.get(self.url + "/v1/health", timeout=30).json()

    def stop(self, kill9: bool = False) -> None:
        if self.proc is not None and self.proc.poll() is None:
            if kill9:
                self.proc.send_signal(signal.SIGKILL)
            else:
                self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self.proc = None
        self.log.close()


@pytest.fixture
def make_server(tmp_path):
    servers = []

    def make(server: dict | None = None, risk: Path | None = None, sub: str = "srv", extra: str = "") -> Server:
        d = tmp_path / f"{sub}{len(servers)}"
        d.mkdir()
        s = Server(d, server, risk, extra)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stop()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory):
    """One server for the tests that only need a fresh account namespace."""
    s = Server(tmp_path_factory.mktemp("shared"), {"md_backlog": 100000})
    yield s
    s.stop()


def ws_connect(server: Server, path: str, who: str | None, **kw):
    from websockets.sync.client import connect

    headers = {"X-API-Key": KEYS[who][0]} if who else None
    c = connect(server.ws + path, additional_headers=headers, open_timeout=30, close_timeout=5,
                max_size=64 << 20, compression=None, **kw)
    return c.__enter__()       # as a context manager would (websockets >= 17.1 warns otherwise)


def recv_msg(ws, timeout: float = 30.0) -> dict:
    """The next message: a text frame holds one or more JSON messages, one per line; a binary
    frame (Arrow reports) comes as {"type": "arrow", "table": pyarrow.Table}."""
    import orjson
    import pyarrow as pa

    pending = ws.__dict__.setdefault("_hpte_pending", [])
    if not pending:
        raw = ws.recv(timeout=timeout)
        if isinstance(raw, bytes):
            return {"type": "arrow", "table": pa.ipc.open_stream(raw).read_all()}
        pending.extend(raw.split("\n"))
    return orjson.loads(pending.pop(0))


os.environ.setdefault("PYTHONUNBUFFERED", "1")
