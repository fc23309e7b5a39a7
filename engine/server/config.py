"""SERVER.toml: API keys (account and role), micro-batching, journal durability and limits.

    [server]
    symbols = [0, 1, 2]            # books this server trades; other symbols are refused
    batch_max_rows = 4096          # a micro-batch is cut at this many rows ...
    batch_wait_us = 0              # ... or after waiting this long for more (0: what is queued)
    journal_dir = "journal"        # relative to the config file
    journal_archive_dir = ""       # retired segments are moved here ("": deleted)
    fsync = "batch"                # always | batch | interval
    fsync_interval_ms = 10
    snapshot_every_batches = 10000
    snapshot_every_s = 60
    max_message_bytes = 65536      # JSON messages and REST bodies
    max_frame_bytes = 16777216     # binary Arrow frames
    max_queue_rows = 1000000       # requests beyond this are refused OVERLOADED
    md_backlog = 10000             # market-data messages queued for one client before it is disconnected
    orders_backlog = 1000000       # execution reports queued for one order-entry connection, likewise
    max_finished_orders = 1000000  # finished orders held for GET (oldest forgotten first); pinned in the journal
    max_trades_kept = 100000       # trades held per symbol for GET /v1/trades; pinned in the journal
    stp = "none"

    [[keys]]
    key = "trader-1-secret"
    account = 1
    role = "trader"                # trader | market_data | admin
    rate = 1000                    # messages per second (token bucket), burst = 2 x rate
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROLES = ("trader", "market_data", "admin")
FSYNC = ("always", "batch", "interval")


class ConfigError(ValueError):
    """A bad SERVER.toml: the message names the key."""


@dataclass(frozen=True)
class ApiKey:
    key: str
    account: int
    role: str
    rate: float            # messages per second; 0 = unlimited
    burst: float


@dataclass
class ServerConfig:
    symbols: tuple[int, ...] = (0,)
    batch_max_rows: int = 4096
    batch_wait_us: int = 0
    journal_dir: Path = Path("journal")
    fsync: str = "batch"
    fsync_interval_ms: int = 10
    snapshot_every_batches: int = 10_000
    snapshot_every_s: float = 60.0
    segment_bytes: int = 64 << 20
    max_message_bytes: int = 65_536
    max_frame_bytes: int = 16 << 20
    max_queue_rows: int = 1_000_000
    md_backlog: int = 10_000
    orders_backlog: int = 1_000_000
    stp: str = "none"
    journal_archive_dir: Path | None = None
    max_finished_orders: int = 1_000_000
    max_trades_kept: int = 100_000
    keys: dict[str, ApiKey] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> "ServerConfig":
        p = Path(path)
        try:
            doc = tomllib.loads(p.read_text())
        except OSError as e:
            raise ConfigError(f"{p}: cannot read ({e.strerror})") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{p}: not valid TOML ({e})") from None
        return cls.from_dict(doc, base=p.parent, source=str(p))

    @classmethod
    def from_dict(cls, doc: dict, base: Path = Path("."), source: str = "config") -> "ServerConfig":
        def fail(msg):
            raise ConfigError(f"{source}: {msg}")

        unknown = set(doc) - {"server", "keys"}
        if unknown:
            fail(f"unknown section {sorted(unknown)[0]!r} (expected [server] and [[keys]])")
        s = dict(doc.get("server", {}))
        c = cls()
        ints = {"batch_max_rows": (1, 1 << 24), "batch_wait_us": (0, 10_000_000),
                "fsync_interval_ms": (1, 60_000), "snapshot_every_batches": (1, 1 << 40),
                "segment_bytes": (1 << 12, 1 << 40), "max_message_bytes": (64, 1 << 26),
                "max_frame_bytes": (64, 1 << 31), "max_queue_rows": (1, 1 << 40),
                "md_backlog": (1, 1 << 30), "orders_backlog": (1, 1 << 30),
                "max_finished_orders": (0, 1 << 40), "max_trades_kept": (1, 1 << 32)}
        for k, (lo, hi) in ints.items():
            if k in s:
                v = s.pop(k)
                if type(v) is not int or not lo <= v <= hi:
                    fail(f"[server] {k} must be an integer in [{lo}, {hi}], got {v!r}")
                setattr(c, k, v)
        if "snapshot_every_s" in s:
            v = s.pop("snapshot_every_s")
            if type(v) not in (int, float) or not 0 < v <= 1e9:
                fail(f"[server] snapshot_every_s must be a positive number, got {v!r}")
            c.snapshot_every_s = float(v)
        if "symbols" in s:
            v = s.pop("symbols")
            if not isinstance(v, list) or not v or any(type(x) is not int or not 0 <= x < 2**32 for x in v):
                fail(f"[server] symbols must be a non-empty list of integers in [0, 2^32), got {v!r}")
            c.symbols = tuple(sorted(set(v)))
        if "fsync" in s:
            v = s.pop("fsync")
            if v not in FSYNC:
                fail(f"[server] fsync must be one of {', '.join(FSYNC)}, got {v!r}")
            c.fsync = v
        if "stp" in s:
            c.stp = str(s.pop("stp"))
        if "journal_dir" in s:
            v = s.pop("journal_dir")
            if not isinstance(v, str) or not v:
                fail(f"[server] journal_dir must be a path, got {v!r}")
            c.journal_dir = Path(v)
        if "journal_archive_dir" in s:
            v = s.pop("journal_archive_dir")
            if not isinstance(v, str):
                fail(f"[server] journal_archive_dir must be a path (or \"\" to delete retired segments), got {v!r}")
            c.journal_archive_dir = Path(v) if v else None
        if s:
            fail(f"[server] unknown key {sorted(s)[0]!r}")
        if not c.journal_dir.is_absolute():
            c.journal_dir = (base / c.journal_dir).resolve()
        if c.journal_archive_dir is not None and not c.journal_archive_dir.is_absolute():
            c.journal_archive_dir = (base / c.journal_archive_dir).resolve()
        if c.journal_archive_dir is not None and c.journal_archive_dir == c.journal_dir:
            fail("[server] journal_archive_dir must differ from journal_dir")
        keys = doc.get("keys", [])
        if not isinstance(keys, list):
            fail("keys must be an array of tables ([[keys]])")
        for i, k in enumerate(keys):
            where = f"[[keys]] #{i + 1}"
            extra = set(k) - {"key", "account", "role", "rate", "burst"}
            if extra:
                fail(f"{where}: unknown field {sorted(extra)[0]!r}")
            key = k.get("key")
            if not isinstance(key, str) or len(key) < 8:
                fail(f"{where}: key must be a string of at least 8 characters")
            if key in c.keys:
                fail(f"{where}: duplicate key")
            role = k.get("role", "trader")
            if role not in ROLES:
                fail(f"{where}: role must be one of {', '.join(ROLES)}, got {role!r}")
            acct = k.get("account", 0)
            if type(acct) is not int or not 0 <= acct < 2**32:
                fail(f"{where}: account must be an integer in [0, 2^32), got {acct!r}")
            rate = k.get("rate", 0)
            if type(rate) not in (int, float) or rate < 0:
                fail(f"{where}: rate must be a non-negative number (messages per second), got {rate!r}")
            burst = k.get("burst", 2 * rate)
            if type(burst) not in (int, float) or burst < 0 or (rate and burst < 1):
                fail(f"{where}: burst must be a number >= 1, got {burst!r}")
            c.keys[key] = ApiKey(key, acct, role, float(rate), float(burst))
        return c
