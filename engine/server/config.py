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
    secret = "..."                 # optional: HMAC-SHA256 secret of the Binance-compatible adapter

    [binance]                      # optional: the Binance-compatible REST subset under /api/v3
    public_market_data = false     # true: depth and trades need no API key (as on Binance)
    max_recv_window_ms = 60000
    [[binance.symbols]]
    name = "BTCUSDT"               # the Binance symbol
    symbol = 0                     # the hpte symbol (one of [server] symbols)
    base = "BTC"
    quote = "USDT"
    tick_size = "0.01"             # price = price_ticks x tick_size (a decimal string)
    lot_size = "0.00001"           # quantity = qty (lots) x lot_size
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
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
    secret: str | None = None   # HMAC-SHA256 secret (Binance adapter: signed requests required)


@dataclass(frozen=True)
class BinanceSymbol:
    """One symbol of the Binance-compatible adapter: decimal price = price_ticks x tick,
    decimal quantity = qty (lots) x lot."""
    name: str
    symbol: int
    base: str
    quote: str
    tick: Decimal
    lot: Decimal


@dataclass
class BinanceConfig:
    symbols: dict[str, BinanceSymbol] = field(default_factory=dict)     # by name
    public_market_data: bool = False
    max_recv_window_ms: int = 60_000

    def by_id(self, symbol: int) -> BinanceSymbol | None:
        for b in self.symbols.values():
            if b.symbol == symbol:
                return b
        return None


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
    binance: BinanceConfig | None = None

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

        unknown = set(doc) - {"server", "keys", "binance"}
        if unknown:
            fail(f"unknown section {sorted(unknown)[0]!r} (expected [server], [[keys]] and [binance])")
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
            extra = set(k) - {"key", "account", "role", "rate", "burst", "secret"}
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
            secret = k.get("secret")
            if secret is not None and (not isinstance(secret, str) or not secret):
                fail(f"{where}: secret must be a non-empty string")
            c.keys[key] = ApiKey(key, acct, role, float(rate), float(burst), secret)
        if "binance" in doc:
            c.binance = _binance(doc["binance"], c.symbols, fail)
        return c


_BN_NAME = re.compile(r"^[A-Z0-9_.-]{1,20}$")
_BN_ASSET = re.compile(r"^[A-Z0-9]{1,20}$")


def _binance(b, symbols: tuple[int, ...], fail) -> BinanceConfig:
    if not isinstance(b, dict):
        fail("[binance] must be a table")
    b = dict(b)
    bc = BinanceConfig()
    if "public_market_data" in b:
        v = b.pop("public_market_data")
        if type(v) is not bool:
            fail(f"[binance] public_market_data must be true or false, got {v!r}")
        bc.public_market_data = v
    if "max_recv_window_ms" in b:
        v = b.pop("max_recv_window_ms")
        if type(v) is not int or not 1 <= v <= 600_000:
            fail(f"[binance] max_recv_window_ms must be an integer in [1, 600000], got {v!r}")
        bc.max_recv_window_ms = v
    syms = b.pop("symbols", None)
    if b:
        fail(f"[binance] unknown key {sorted(b)[0]!r}")
    if not isinstance(syms, list) or not syms:
        fail("[binance] needs at least one [[binance.symbols]] table")
    seen: set[int] = set()
    for i, t in enumerate(syms):
        where = f"[[binance.symbols]] #{i + 1}"
        if not isinstance(t, dict):
            fail(f"{where}: must be a table")
        extra = set(t) - {"name", "symbol", "base", "quote", "tick_size", "lot_size"}
        if extra:
            fail(f"{where}: unknown field {sorted(extra)[0]!r}")
        name = t.get("name")
        if not isinstance(name, str) or not _BN_NAME.match(name):
            fail(f"{where}: name must be 1-20 characters of A-Z 0-9 _ . -, got {name!r}")
        if name in bc.symbols:
            fail(f"{where}: duplicate name {name!r}")
        sym = t.get("symbol")
        if type(sym) is not int or sym not in symbols:
            fail(f"{where}: symbol must be one of [server] symbols {list(symbols)}, got {sym!r}")
        if sym in seen:
            fail(f"{where}: symbol {sym} is already named")
        seen.add(sym)
        assets = []
        for k in ("base", "quote"):
            v = t.get(k)
            if not isinstance(v, str) or not _BN_ASSET.match(v):
                fail(f"{where}: {k} must be 1-20 characters of A-Z 0-9, got {v!r}")
            assets.append(v)
        steps = []
        for k in ("tick_size", "lot_size"):
            v = t.get(k)
            try:
                d = Decimal(v) if isinstance(v, str) else None
            except InvalidOperation:
                d = None
            if d is None or not d.is_finite() or d <= 0 or d.as_tuple().exponent < -18:
                fail(f"{where}: {k} must be a positive decimal string such as \"0.01\" "
                     f"(at most 18 decimals; a string, not a TOML float), got {v!r}")
            steps.append(d)
        bc.symbols[name] = BinanceSymbol(name, sym, assets[0], assets[1], steps[0], steps[1])
    return bc
