"""Risk limits and circuit-breaker parameters: one TOML file, validated when loaded, compiled into
dense int64 arrays for the pre-trade kernel (kernels/risk/checks.py).

File format (every table and key optional; a limit or breaker parameter left out is not applied)::

    [defaults]                      # every account, every symbol
    max_order_qty = 1_000           # lots per order
    max_order_notional = 5_000_000  # price_ticks x qty per order (MARKET: reference price x qty)
    price_collar_bps = 500          # |price - reference| <= 5% of the reference price
    max_open_orders = 200           # open orders per account
    max_position = 10_000           # worst case per account and symbol: |position +- open orders|
    credit_limit = 100_000_000      # gross notional exposure per account (ticks x lots)
    max_orders_per_second = 1_000   # messages per account, token bucket over the rows' ts_ns
    kill = false                    # global kill switch

    [accounts.17]                   # overrides for account 17
    max_order_qty = 500
    symbols = [1, 2, 3]             # allow-list (absent: every symbol)
    kill = false

    [symbols.3]                     # overrides for symbol 3
    max_order_qty = 50
    reference_price_ticks = 10_150  # static reference (used when no trade and no mid exists)

    [breakers]                      # breaker parameters for the matching kernel (durations: ns or "500ms")
    band_bps = 500
    band_window_ns = "5m"
    limit_state_ns = "15s"
    pause_ns = "5m"
    velocity_ticks = 200
    velocity_window_ns = "1s"
    auction_ns = "10s"

Which value applies (the "stricter of two overrides" rule): for a per-order or per-position
limit (``max_order_qty``, ``max_order_notional``, ``price_collar_bps``, ``max_position``) on an order
of account a in symbol s: the smaller of the account's and the symbol's own values when both set it,
else the one that sets it, else ``[defaults]``, else not applied. For an account-wide limit
(``max_open_orders``, ``credit_limit``, ``max_orders_per_second``): the account's own value, else
``[defaults]``, applied to the account's totals; a symbol's own value of one of these applies in
addition, to the account's totals in that symbol only.

Errors are ``RiskConfigError`` whose message names the key path, e.g.
``accounts.17.max_order_qty: must be a positive integer, got -3``.
"""
from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

UNSET = np.iinfo(np.int64).max   # "not applied" in every compiled limit array
VALUE_MAX = 1 << 62               # largest limit value (sums of two stay below 2**63)
RATE_MAX = 1_000_000_000          # messages per second (token buckets are kept in nano-tokens)
BPS_MAX = 1_000_000               # 10,000 %
ID_MAX = (1 << 32) - 1            # account and symbol ids are uint32

# Limit keys, in the column order of every compiled limit array (K_* are the column indices).
LIMIT_KEYS = ("max_order_qty", "max_order_notional", "price_collar_bps", "max_position",
              "max_open_orders", "credit_limit", "max_orders_per_second")
K_MAX_ORDER_QTY, K_MAX_ORDER_NOTIONAL, K_PRICE_COLLAR_BPS, K_MAX_POSITION, \
    K_MAX_OPEN_ORDERS, K_CREDIT_LIMIT, K_MAX_ORDERS_PER_SECOND = range(len(LIMIT_KEYS))
NLIM = len(LIMIT_KEYS)
PER_ORDER_KEYS = LIMIT_KEYS[:4]      # the stricter-of-two-overrides rule
ACCOUNT_WIDE_KEYS = LIMIT_KEYS[4:]   # account totals (account or defaults) + per-symbol totals (symbol)

# (lowest value, highest value, what it must be) per limit key
_LIMIT_RANGE = {
    "max_order_qty": (1, VALUE_MAX, "a positive integer"),
    "max_order_notional": (1, VALUE_MAX, "a positive integer"),
    "price_collar_bps": (0, BPS_MAX, f"an integer in [0, {BPS_MAX}]"),
    "max_position": (0, VALUE_MAX, "a non-negative integer"),
    "max_open_orders": (1, VALUE_MAX, "a positive integer"),
    "credit_limit": (0, VALUE_MAX, "a non-negative integer"),
    "max_orders_per_second": (1, RATE_MAX, f"an integer in [1, {RATE_MAX}]"),
}

BREAKER_KEYS = ("band_bps", "band_window_ns", "limit_state_ns", "pause_ns", "velocity_ticks",
                "velocity_window_ns", "auction_ns")
B_BAND_BPS, B_BAND_WINDOW_NS, B_LIMIT_STATE_NS, B_PAUSE_NS, B_VELOCITY_TICKS, \
    B_VELOCITY_WINDOW_NS, B_AUCTION_NS = range(len(BREAKER_KEYS))

_TOP_KEYS = ("defaults", "accounts", "symbols", "breakers")
_DEFAULT_KEYS = LIMIT_KEYS + ("kill",)
_ACCOUNT_KEYS = LIMIT_KEYS + ("kill", "symbols")
_SYMBOL_KEYS = LIMIT_KEYS + ("reference_price_ticks",)


class RiskConfigError(ValueError):
    """A bad risk configuration. ``key`` is the dotted key path, ``problem`` the rest."""

    def __init__(self, key: str, problem: str, source: str | None = None):
        self.key, self.problem, self.source = key, problem, source
        msg = f"{key}: {problem}" if key else problem
        super().__init__(f"{source}: {msg}" if source else msg)


def _show(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return repr(v)
    if isinstance(v, (dict, list)):
        return {"dict": "a table", "list": "an array"}[type(v).__name__]
    return str(v)


def _int(path: str, v: Any, lo: int, hi: int, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise RiskConfigError(path, f"must be {what}, got {_show(v)}")
    if not lo <= v <= hi:
        extra = f" (at most {hi:,})" if v > hi and what.startswith(("a positive", "a non-negative")) else ""
        raise RiskConfigError(path, f"must be {what}{extra}, got {v}")
    return v


def _bool(path: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise RiskConfigError(path, f"must be true or false, got {_show(v)}")
    return v


def _duration(path: str, v: Any) -> int:
    from hpte.engine.io import parse_duration
    what = 'a positive duration (integer ns, or a string with a unit ns/us/ms/s/m/h such as "500ms")'
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        raise RiskConfigError(path, f"must be {what}, got {_show(v)}")
    try:
        ns = parse_duration(v)
    except ValueError:
        raise RiskConfigError(path, f"must be {what}, got {_show(v)}") from None
    if ns > VALUE_MAX:
        raise RiskConfigError(path, f"must be {what} below 2**62 ns, got {_show(v)}")
    return ns


def _unknown(path: str, key: str, allowed: tuple[str, ...]) -> RiskConfigError:
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else f" (expected one of: {', '.join(allowed)})"
    return RiskConfigError(f"{path}.{key}" if path else key, f"unknown key{hint}")


def _table(path: str, v: Any) -> Mapping:
    if not isinstance(v, dict):
        raise RiskConfigError(path, f"must be a table, got {_show(v)}")
    return v


def _limits(path: str, tbl: Mapping, allowed: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tbl.items():
        p = f"{path}.{k}"
        if k not in allowed:
            raise _unknown(path, k, allowed)
        if k in _LIMIT_RANGE:
            out[k] = _int(p, v, *_LIMIT_RANGE[k])
        elif k == "kill":
            out[k] = _bool(p, v)
        elif k == "reference_price_ticks":
            out[k] = _int(p, v, 1, VALUE_MAX, "a positive integer")
        elif k == "symbols":
            if not isinstance(v, list):
                raise RiskConfigError(p, f"must be an array of symbol ids, got {_show(v)}")
            out[k] = sorted({_int(f"{p}[{i}]", s, 0, ID_MAX, f"a symbol id in [0, {ID_MAX}]")
                             for i, s in enumerate(v)})
    return out


def _id(path: str, key: str, what: str) -> int:
    try:
        i = int(key, 10)
    except ValueError:
        i = -1
    if not (0 <= i <= ID_MAX) or key.strip() != key or (key.startswith("0") and key != "0") or key.startswith("+"):
        raise RiskConfigError(f"{path}.{key}", f"{what} id must be a decimal integer in [0, {ID_MAX}]")
    return i


@dataclass(frozen=True)
class RiskLimits:
    """A validated risk configuration, as plain values and compiled arrays.

    Plain values (what the file says, after validation; absent keys absent):
    ``defaults`` (dict), ``accounts`` / ``symbols`` (dict id -> dict), ``breakers`` (dict, ns).

    Compiled arrays (int64, ``UNSET`` = not applied; columns in ``LIMIT_KEYS`` order):

    - ``default_limits`` : int64[NLIM], the ``[defaults]`` values.
    - ``account_ids`` : uint32[NA] ascending; ``account_limits`` : int64[NA + 1, NLIM], each
      configured account's own values (row NA: an unconfigured account, all UNSET);
      ``account_kill`` : uint8[NA + 1]; ``account_all_symbols`` : uint8[NA + 1] (1 = no allow-list);
      allow-lists in CSR form: symbols of row r are ``allow_symbols[allow_ptr[r]:allow_ptr[r + 1]]``.
    - ``symbol_ids`` : uint32[NS] ascending; ``symbol_limits`` : int64[NS + 1, NLIM];
      ``symbol_reference`` : int64[NS + 1] static reference price in ticks (0 = none).
    - ``breaker_params`` : int64[len(BREAKER_KEYS)].
    - ``global_kill`` : bool.
    """

    defaults: dict = field(default_factory=dict)
    accounts: dict = field(default_factory=dict)
    symbols: dict = field(default_factory=dict)
    breakers: dict = field(default_factory=dict)
    source: str | None = None

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, doc: Mapping, source: str | None = None) -> "RiskLimits":
        """Validate a parsed TOML document (``tomllib.load`` output)."""
        try:
            return cls._from_dict(doc, source)
        except RiskConfigError as e:
            if source and e.source is None:
                raise RiskConfigError(e.key, e.problem, source) from None
            raise

    @classmethod
    def _from_dict(cls, doc: Mapping, source: str | None) -> "RiskLimits":
        for k in doc:
            if k not in _TOP_KEYS:
                raise _unknown("", k, _TOP_KEYS)
        defaults = _limits("defaults", _table("defaults", doc.get("defaults", {})), _DEFAULT_KEYS)
        accounts: dict[int, dict] = {}
        for key, tbl in _table("accounts", doc.get("accounts", {})).items():
            aid = _id("accounts", key, "account")
            if aid in accounts:
                raise RiskConfigError(f"accounts.{key}", f"account {aid} is configured twice")
            accounts[aid] = _limits(f"accounts.{key}", _table(f"accounts.{key}", tbl), _ACCOUNT_KEYS)
        symbols: dict[int, dict] = {}
        for key, tbl in _table("symbols", doc.get("symbols", {})).items():
            sid = _id("symbols", key, "symbol")
            if sid in symbols:
                raise RiskConfigError(f"symbols.{key}", f"symbol {sid} is configured twice")
            symbols[sid] = _limits(f"symbols.{key}", _table(f"symbols.{key}", tbl), _SYMBOL_KEYS)
        breakers: dict[str, int] = {}
        for k, v in _table("breakers", doc.get("breakers", {})).items():
            p = f"breakers.{k}"
            if k not in BREAKER_KEYS:
                raise _unknown("breakers", k, BREAKER_KEYS)
            if k.endswith("_ns"):
                breakers[k] = _duration(p, v)
            elif k == "band_bps":
                breakers[k] = _int(p, v, 1, BPS_MAX, f"an integer in [1, {BPS_MAX}]")
            else:
                breakers[k] = _int(p, v, 1, VALUE_MAX, "a positive integer")
        return cls(defaults=defaults, accounts=dict(sorted(accounts.items())),
                   symbols=dict(sorted(symbols.items())), breakers=breakers, source=source)

    @classmethod
    def from_toml(cls, text: str, source: str | None = None) -> "RiskLimits":
        """Parse and validate TOML text."""
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise RiskConfigError("", f"invalid TOML: {e}", source) from None
        return cls.from_dict(doc, source)

    @classmethod
    def load(cls, path: str | Path) -> "RiskLimits":
        """Read, parse and validate a TOML file."""
        p = Path(path)
        try:
            text = p.read_bytes().decode("utf-8")
        except FileNotFoundError:
            raise RiskConfigError("", "no such file", str(p)) from None
        except (OSError, UnicodeDecodeError) as e:
            raise RiskConfigError("", f"cannot read ({e})", str(p)) from None
        return cls.from_toml(text, str(p))

    # ---- compiled arrays (computed once per object) --------------------------------------------
    def __post_init__(self) -> None:
        def vec(d: Mapping) -> np.ndarray:
            return np.array([d.get(k, UNSET) for k in LIMIT_KEYS], np.int64)

        na, ns = len(self.accounts), len(self.symbols)
        c = {
            "default_limits": vec(self.defaults),
            "account_ids": np.array(list(self.accounts), np.uint32),
            "account_limits": np.vstack([vec(d) for d in self.accounts.values()] + [vec({})]),
            "account_kill": np.array([d.get("kill", False) for d in self.accounts.values()] + [False], np.uint8),
            "account_all_symbols": np.array(["symbols" not in d for d in self.accounts.values()] + [True], np.uint8),
            "allow_ptr": np.cumsum([0] + [len(d.get("symbols", ())) for d in self.accounts.values()] + [0]).astype(np.int64),
            "allow_symbols": np.array([s for d in self.accounts.values() for s in d.get("symbols", ())], np.uint32),
            "symbol_ids": np.array(list(self.symbols), np.uint32),
            "symbol_limits": np.vstack([vec(d) for d in self.symbols.values()] + [vec({})]),
            "symbol_reference": np.array([d.get("reference_price_ticks", 0) for d in self.symbols.values()] + [0], np.int64),
            "breaker_params": np.array([self.breakers.get(k, UNSET) for k in BREAKER_KEYS], np.int64),
        }
        assert c["account_limits"].shape == (na + 1, NLIM) and c["symbol_limits"].shape == (ns + 1, NLIM)
        for a in c.values():
            a.flags.writeable = False
        object.__setattr__(self, "_c", c)

    def __getattr__(self, name: str):
        c = self.__dict__.get("_c")
        if c is not None and name in c:
            return c[name]
        raise AttributeError(name)

    @property
    def global_kill(self) -> bool:
        return bool(self.defaults.get("kill", False))

    # ---- id -> row mappings --------------------------------------------------------------------
    @staticmethod
    def _rows(ids: np.ndarray, known: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, np.int64)
        pos = np.searchsorted(known, ids)
        posc = np.minimum(pos, max(len(known) - 1, 0))
        hit = (pos < len(known)) & (known[posc] == ids) if len(known) else np.zeros(ids.shape, bool)
        return np.where(hit, pos, len(known)).astype(np.int64)

    def account_rows(self, ids) -> np.ndarray:
        """Row of each account id in the account arrays (unconfigured -> the last, all-UNSET row)."""
        return self._rows(ids, self.account_ids.astype(np.int64))

    def symbol_rows(self, ids) -> np.ndarray:
        """Row of each symbol id in the symbol arrays (unconfigured -> the last, all-UNSET row)."""
        return self._rows(ids, self.symbol_ids.astype(np.int64))

    def permitted(self, account_ids, symbol_ids) -> np.ndarray:
        """uint8[len(account_ids), len(symbol_ids)]: 1 where the account may trade the symbol."""
        ar = self.account_rows(account_ids)
        sids = np.asarray(symbol_ids, np.int64)
        out = np.ones((len(ar), len(sids)), np.uint8)
        for i, r in enumerate(ar):
            if not self.account_all_symbols[r]:
                allowed = self.allow_symbols[self.allow_ptr[r]:self.allow_ptr[r + 1]].astype(np.int64)
                out[i] = np.isin(sids, allowed)
        return out

    # ---- effective values (plain Python, for summaries and tests) ------------------------------
    def effective(self, key: str, account: int, symbol: int) -> int | None:
        """The limit `key` that applies to an order of `account` in `symbol` (None: not applied).
        For account-wide keys this is the account-total layer (account or defaults)."""
        if key not in LIMIT_KEYS:
            raise KeyError(f"unknown limit {key!r}")
        a = self.accounts.get(account, {}).get(key)
        if key in ACCOUNT_WIDE_KEYS:
            return a if a is not None else self.defaults.get(key)
        s = self.symbols.get(symbol, {}).get(key)
        if a is not None and s is not None:
            return min(a, s)
        for v in (a, s, self.defaults.get(key)):
            if v is not None:
                return v
        return None

    def summary_rows(self) -> list[tuple[str, dict]]:
        """(scope, values) rows for display: defaults, each account, each symbol, breakers."""
        rows = [("defaults", dict(self.defaults))]
        rows += [(f"account {a}", dict(d)) for a, d in self.accounts.items()]
        rows += [(f"symbol {s}", dict(d)) for s, d in self.symbols.items()]
        if self.breakers:
            rows.append(("breakers", dict(self.breakers)))
        return rows


def load_limits(path: str | Path) -> RiskLimits:
    """Read and validate a risk TOML file (RiskLimits.load)."""
    return RiskLimits.load(path)
