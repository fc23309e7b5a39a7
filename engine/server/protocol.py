"""Wire validation and encoding, shared by every adapter.

A JSON order message (REST body or WebSocket text frame)::

    {"type": "new", "req_id": 7, "order_id": 42, "symbol": 0, "side": "buy", "price": 100000,
     "qty": 5, "order_type": "limit", "tif": "gtc", "post_only": false}
    {"type": "cancel", "req_id": 8, "order_id": 42}
    {"type": "replace", "req_id": 9, "order_id": 42, "price": 100001, "qty": 3}
    {"type": "new", ..., "order_type": "stop_limit", "price": 100100, "stop_price": 100050}

Integers are ticks and lots as in the order file; side, order_type and tif take their names or
the order file's integer codes. A "stop" (order_type 2) or "stop_limit" (3) order needs
``stop_price`` (ticks, > 0) and GTC or DAY; a replace of a waiting stop may carry a new
``stop_price``. Every error names the field (BadRequest.field).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from hpte.engine import schema as S

U64 = 2**64
I64 = 2**63
SIDES = {"buy": S.BUY, "sell": S.SELL, 1: S.BUY, -1: S.SELL}
OTYPES = {"limit": S.OT_LIMIT, "market": S.OT_MARKET, "stop": S.OT_STOP, "stop_limit": S.OT_STOP_LIMIT,
          0: S.OT_LIMIT, 1: S.OT_MARKET, 2: S.OT_STOP, 3: S.OT_STOP_LIMIT}
OT_NAMES = ("limit", "market", "stop", "stop_limit")
TIFS = {"gtc": S.TIF_GTC, "ioc": S.TIF_IOC, "fok": S.TIF_FOK, "day": S.TIF_DAY,
        0: S.TIF_GTC, 1: S.TIF_IOC, 2: S.TIF_FOK, 3: S.TIF_DAY}
ACTIONS = {"new": S.ACT_NEW, "cancel": S.ACT_CANCEL, "replace": S.ACT_REPLACE}
FIELDS = {"new": {"type", "req_id", "order_id", "symbol", "side", "price", "qty", "order_type", "tif", "post_only",
                  "stop_price"},
          "cancel": {"type", "req_id", "order_id", "symbol", "side", "price", "qty"},
          "replace": {"type", "req_id", "order_id", "symbol", "price", "qty", "stop_price"}}


class BadRequest(ValueError):
    def __init__(self, field: str | None, msg: str, code: str = "BAD_REQUEST", extra: dict | None = None):
        super().__init__(msg)
        self.field, self.code, self.extra = field, code, extra

    def body(self, req_id=None) -> dict:
        d = {"type": "error", "code": self.code, "error": str(self), "field": self.field}
        if self.extra:
            d.update(self.extra)
        if req_id is not None:
            d["req_id"] = req_id
        return d


def _int(m: dict, k: str, lo: int, hi: int, required: bool = True, default: int = 0) -> int:
    v = m.get(k)
    if v is None:
        if required:
            raise BadRequest(k, f"missing field {k!r}")
        return default
    if type(v) is not int:
        raise BadRequest(k, f"field {k!r} must be an integer, got {type(v).__name__}")
    if not lo <= v <= hi:
        raise BadRequest(k, f"field {k!r} = {v} is out of range [{lo}, {hi}]")
    return v


def _enum(m: dict, k: str, table: dict, default: int) -> int:
    v = m.get(k)
    if v is None:
        return default
    if type(v) is bool or (type(v) not in (int, str)) or v not in table:
        names = [n for n in table if isinstance(n, str)]
        raise BadRequest(k, f"field {k!r} must be one of {', '.join(names)} (or its code), got {v!r}")
    return table[v]


def req_id_of(m) -> object:
    """The client request id echoed back (a string or integer, or None)."""
    if isinstance(m, dict):
        r = m.get("req_id")
        if r is None or (type(r) in (int, str) and (type(r) is str and len(r) <= 64 or type(r) is int)):
            return r
    return None


_NEW_KEYS = frozenset(FIELDS["new"] - {"stop_price"})      # the hot path: no stop orders
_SIDE_S = {k: v for k, v in SIDES.items() if type(k) is str}
_OT_S = {"limit": S.OT_LIMIT, "market": S.OT_MARKET}
_TIF_S = {k: v for k, v in TIFS.items() if type(k) is str}


def parse_order(m, symbols: frozenset) -> tuple:
    """A JSON order message -> (action, client id, symbol, side, price, qty, order_type, tif,
    post_only, symbol_given, stop_price). Raises BadRequest naming the field.

    The hot path: a well-formed new order with names for side, order_type and tif is taken
    here with plain type and range tests; anything else (other messages, integer codes, any
    doubt) goes to ``parse_order_checked``, which gives the same result or names the error
    (tests/server/test_protocol.py checks that the two agree)."""
    if type(m) is dict and m.keys() <= _NEW_KEYS:
        g = m.get
        coid, sym, qty, r, sd = g("order_id"), g("symbol"), g("qty"), g("req_id"), g("side")
        otn, tn, po, px = g("order_type", "limit"), g("tif", "gtc"), g("post_only", False), g("price")
        if (g("type", "new") == "new" and type(coid) is int and 0 <= coid < U64 and type(sym) is int
                and sym in symbols and type(qty) is int and 0 < qty < I64 and type(sd) is str
                and type(otn) is str and type(tn) is str and type(po) is bool
                and (r is None or type(r) is int or (type(r) is str and len(r) <= 64))):
            side, ot, tif = _SIDE_S.get(sd), _OT_S.get(otn), _TIF_S.get(tn)
            if side is not None and ot is not None and tif is not None:
                if type(px) is int and -I64 < px < I64:
                    return (S.ACT_NEW, coid, sym, side, px, qty, ot, tif, int(po), True, 0)
                if px is None and ot == S.OT_MARKET:
                    return (S.ACT_NEW, coid, sym, side, 0, qty, ot, tif, int(po), True, 0)
    return parse_order_checked(m, symbols)


def parse_order_checked(m, symbols: frozenset) -> tuple:
    """parse_order, every field checked in turn (the first failing check names the error)."""
    if not isinstance(m, dict):
        raise BadRequest(None, f"an order must be a JSON object, got {type(m).__name__}")
    t = m.get("type", "new")
    if type(t) is not str or t not in ACTIONS:          # (a list or object is unhashable)
        raise BadRequest("type", f"unknown message type {t!r} (expected new, cancel, replace)", "UNKNOWN_TYPE")
    extra = set(m) - FIELDS[t]
    if extra:
        f = sorted(extra)[0]
        raise BadRequest(f, f"unknown field {f!r} for a {t} message")
    r = m.get("req_id")
    if r is not None and not (type(r) is int or (type(r) is str and len(r) <= 64)):
        raise BadRequest("req_id", "field 'req_id' must be an integer or a string of at most 64 characters")
    coid = _int(m, "order_id", 0, U64 - 1)
    sym_given = "symbol" in m
    sym = _int(m, "symbol", 0, 2**32 - 1, required=(t == "new"), default=next(iter(sorted(symbols))))
    if sym not in symbols:
        raise BadRequest("symbol", f"unknown symbol {sym} (this server trades {sorted(symbols)})", "UNKNOWN_SYMBOL")
    if t == "new":
        ot = _enum(m, "order_type", OTYPES, S.OT_LIMIT)
        if "side" not in m:
            raise BadRequest("side", "missing field 'side'")
        side = _enum(m, "side", SIDES, S.BUY)
        px = _int(m, "price", -I64 + 1, I64 - 1, required=(ot in (S.OT_LIMIT, S.OT_STOP_LIMIT)))
        qty = _int(m, "qty", 1, I64 - 1)
        tif = _enum(m, "tif", TIFS, S.TIF_GTC)
        po = m.get("post_only", False)
        if type(po) is not bool:
            raise BadRequest("post_only", "field 'post_only' must be true or false")
        if ot in (S.OT_STOP, S.OT_STOP_LIMIT):
            stop = _int(m, "stop_price", 1, I64 - 1)
            if tif not in (S.TIF_GTC, S.TIF_DAY):
                raise BadRequest("tif", f"a {OT_NAMES[ot]} order waits for its trigger: field 'tif' must be gtc or day")
            if po:
                raise BadRequest("post_only", f"field 'post_only' is for limit orders, not {OT_NAMES[ot]}")
        elif "stop_price" in m:
            raise BadRequest("stop_price", f"field 'stop_price' is only for stop and stop_limit orders, "
                             f"not {OT_NAMES[ot]}")
        else:
            stop = 0
        return (S.ACT_NEW, coid, sym, side, px, qty, ot, tif, int(po), True, stop)
    if t == "cancel":       # side, price and qty are informative, as in the order file
        side = _enum(m, "side", SIDES, S.BUY)
        return (S.ACT_CANCEL, coid, sym, side, _int(m, "price", -I64 + 1, I64 - 1, False),
                _int(m, "qty", 0, I64 - 1, False), S.OT_LIMIT, S.TIF_GTC, 0, sym_given, 0)
    px = _int(m, "price", -I64 + 1, I64 - 1)
    qty = _int(m, "qty", 1, I64 - 1)
    stop = _int(m, "stop_price", 1, I64 - 1, required=False)     # a waiting stop's new stop price
    return (S.ACT_REPLACE, coid, sym, S.BUY, px, qty, S.OT_LIMIT, S.TIF_GTC, 0, sym_given, stop)


ROW_DTYPES = (np.uint8, np.uint64, np.uint32, np.int8, np.int64, np.int64, np.uint8, np.uint8, np.uint8, np.uint8,
              np.int64)
ROW_NAMES = ("action", "client_order_id", "symbol", "side", "price_ticks", "qty", "order_type", "tif",
             "post_only", "sym_given", "stop_price_ticks")


def rows_to_columns(rows: list[tuple]) -> dict:
    cols = list(zip(*rows))
    return {n: np.array(c, dt) for n, c, dt in zip(ROW_NAMES, cols, ROW_DTYPES)}


def parse_arrow_frame(data: bytes, account: int, symbols: frozenset) -> dict:
    """A binary frame holding an Arrow IPC stream of order-file columns -> row columns (as
    rows_to_columns). ``order_id`` is the client's id; an ``account`` column, if present, must
    be the key's account."""
    from hpte.engine.io import InputError, order_columns

    try:
        reader = pa.ipc.open_stream(pa.py_buffer(data))
        table = reader.read_all()
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as e:
        raise BadRequest("frame", f"binary frame is not an Arrow IPC stream ({e})") from None
    if table.num_rows == 0:
        raise BadRequest("frame", "the Arrow batch has no rows")
    names = table.schema.names
    try:
        c = order_columns(table)
    except InputError as e:
        msg = str(e)
        field = msg.split("'")[1] if "'" in msg else "frame"
        raise BadRequest(field, msg) from None
    for col, what in (("display_qty", "iceberg orders"), ("expire_ts_ns", "good-till-date orders")):
        if col in names and (c[col] != 0).any():      # never dropped silently: the journal has no such column
            r = int(np.flatnonzero(c[col] != 0)[0])
            raise BadRequest(col, f"column {col!r} row {r}: {what} are not taken by the gateway yet (leave it 0 "
                                  f"or drop the column)")
    if "account" in names and (c["account"] != account).any():
        raise BadRequest("account", f"column 'account' must be this key's account {account} on every row")
    bad = ~np.isin(c["symbol"], np.fromiter(symbols, np.uint32))
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise BadRequest("symbol", f"column 'symbol' row {r}: unknown symbol {int(c['symbol'][r])}", "UNKNOWN_SYMBOL")
    n = len(c["order_id"])
    return {"action": c["action"], "client_order_id": c["order_id"], "symbol": c["symbol"].copy(),
            "side": c["side"].copy(), "price_ticks": c["price_ticks"], "qty": c["qty"],
            "order_type": c["order_type"], "tif": c["tif"], "post_only": c["post_only"],
            "sym_given": np.ones(n, np.uint8), "stop_price_ticks": c["stop_price_ticks"]}
