"""A Binance-compatible REST subset under ``/api/v3``: an adapter over the same order-entry core
as the native routes (it validates into the core's rows with ``protocol.parse_order`` and submits
them like ``POST /v1/orders``), so existing Binance clients (ccxt) can trade against hpte.

Mounted when SERVER.toml has a ``[binance]`` table (config.py). Decimal <-> integer mapping, per
symbol: price = price_ticks x tick_size, quantity = qty (lots) x lot_size; a price or quantity
that is not a whole number of ticks or lots is refused (-1013 Filter failure: PRICE_FILTER /
LOT_SIZE), as Binance does. Order ids: Binance ``orderId`` = the gateway's engine order id;
``newClientOrderId`` = the account's client order id: a decimal number below 2^64 is that id,
any other string (at most 36 of ``[.A-Za-z0-9:/_-]``) maps to a 64-bit hash of itself (high bit
set) and its text is kept in ``binance-client-ids.tsv`` in the journal directory for the replies.

Authentication: header ``X-MBX-APIKEY``. For a key with a ``secret`` in SERVER.toml, the order and
account endpoints require ``timestamp`` and ``signature`` = hex HMAC-SHA256(secret, query string
followed by the request body, without the signature parameter), within ``recvWindow`` (default
5000 ms) of the server's clock; for a key without a secret the signature is not checked.
Errors are Binance's ``{"code": -1102, "msg": "..."}``, naming the parameter.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from decimal import Decimal, localcontext
from pathlib import Path
from urllib.parse import parse_qsl

import orjson
from fastapi import FastAPI, Request as HttpRequest, WebSocket, WebSocketDisconnect
from fastapi.responses import Response

from hpte.engine import schema as S

from .config import ApiKey, BinanceConfig, BinanceSymbol, ServerConfig
from .protocol import BadRequest, parse_order
from .state import (LIVE, O_ACCT, O_COID, O_FILLED, O_NOTIONAL, O_OT, O_PX, O_QTY, O_SIDE, O_STATUS, O_STOP, O_SYM,
                    O_TIF, O_TRIG, O_TS)

DECIMAL_RE = re.compile(r"^([0-9]{1,20})(\.[0-9]{1,20})?$")
COID_RE = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
INT_RE = re.compile(r"^[0-9]{1,19}$")
STATUS = {"OPEN": "NEW", "PARTIALLY_FILLED": "PARTIALLY_FILLED", "FILLED": "FILLED", "CANCELLED": "CANCELED",
          "EXPIRED": "EXPIRED", "REJECTED": "REJECTED"}
TIF_NAMES = ("GTC", "IOC", "FOK", "DAY")
TIFS = {"GTC": S.TIF_GTC, "IOC": S.TIF_IOC, "FOK": S.TIF_FOK}
TYPES = ("LIMIT", "MARKET", "LIMIT_MAKER", "STOP_LOSS", "STOP_LOSS_LIMIT")
TYPE_NAMES = ("LIMIT", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT")          # by the engine's order_type
OT_OF = {"LIMIT": "limit", "LIMIT_MAKER": "limit", "MARKET": "market", "STOP_LOSS": "stop",
         "STOP_LOSS_LIMIT": "stop_limit"}
UNSUPPORTED_TYPES = ("TAKE_PROFIT", "TAKE_PROFIT_LIMIT")
# the engine's rejection reasons as Binance words them (-2010 NEW_ORDER_REJECTED)
REJECT_MSG = {"POST_ONLY_WOULD_TAKE": "Order would immediately match and take.",
              "DUPLICATE_ORDER_ID": "Duplicate order sent."}
SIGNED = {"timestamp", "recvWindow", "signature"}
U64 = 2**64
MAX_LOTS = 2**63 - 1


class BinanceError(Exception):
    """A Binance-style error: HTTP status and body {"code": ..., "msg": ...}."""

    def __init__(self, code: int, msg: str, status: int = 400):
        super().__init__(msg)
        self.code, self.msg, self.status = code, msg, status

    def response(self) -> Response:
        return Response(orjson.dumps({"code": self.code, "msg": self.msg}), status_code=self.status,
                        media_type="application/json")


def mandatory(name: str) -> BinanceError:
    return BinanceError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def not_required(name: str) -> BinanceError:
    return BinanceError(-1106, f"Parameter '{name}' sent when not required.")


def from_core(e: BadRequest) -> BinanceError:
    """A core BadRequest (validation, rate limit, queue) in Binance's words."""
    if e.code == "RATE_LIMITED":
        return BinanceError(-1003, f"Too many requests; {e}", 429)
    if e.code in ("OVERLOADED", "UNAVAILABLE"):
        return BinanceError(-1008, f"Server is currently overloaded with other requests ({e}).", 503)
    if e.code == "UNKNOWN_SYMBOL":
        return BinanceError(-1121, "Invalid symbol.")
    return BinanceError(-1102, f"{e} (parameter {e.field!r})" if e.field else str(e))


def dec(units: int, step: Decimal) -> str:
    """An integer count of ticks or lots as Binance's decimal string (step's decimals)."""
    if units is None:
        return "-1"
    with localcontext() as ctx:
        ctx.prec = 80
        return format((Decimal(units) * step).quantize(step if step.as_tuple().exponent < 0 else Decimal(1)), "f")


def notional(units: int | None, b: BinanceSymbol) -> str:
    """Sum of price_ticks x lots as a quote-currency amount (Binance's cummulativeQuoteQty)."""
    if units is None:              # orders from a snapshot older than the notional column
        return "-1"
    with localcontext() as ctx:
        ctx.prec = 80
        step = b.tick * b.lot
        return format((Decimal(units) * step).quantize(step), "f")


def to_units(text: str, step: Decimal, name: str, filt: str, lo: int = 1) -> int:
    """A decimal parameter -> whole ticks or lots; -1100 for bad characters, -1013 for a value
    that is not a multiple of the step or out of range."""
    if not DECIMAL_RE.match(text):
        raise BinanceError(-1100, f"Illegal characters found in parameter '{name}'; legal range is "
                           f"'{DECIMAL_RE.pattern}'.")
    with localcontext() as ctx:
        ctx.prec = 80
        q = Decimal(text) / step
        if q != q.to_integral_value():
            raise BinanceError(-1013, f"Filter failure: {filt} ('{name}' {text} is not a multiple of {step})")
        u = int(q)
    if not lo <= u <= MAX_LOTS:
        raise BinanceError(-1013, f"Filter failure: {filt} ('{name}' {text} is out of range)")
    return u


def ms(ts_ns) -> int | None:
    return None if ts_ns is None else int(ts_ns) // 1_000_000


class ClientIds:
    """newClientOrderId text <-> the account's uint64 client order id. Decimal ids below 2^64
    are themselves; other text hashes to 64 bits (high bit set) and is remembered, in memory and
    appended to `path` (so that replies after a restart still carry it)."""

    def __init__(self, path: Path):
        self.path = path
        self.names: dict[int, str] | None = None

    def _load(self) -> dict[int, str]:
        if self.names is None:
            self.names = {}
            if self.path.exists():
                for line in self.path.read_text().splitlines():
                    parts = line.split("\t")
                    if len(parts) == 3 and parts[0].isdigit() and parts[1].isdigit():
                        self.names[(int(parts[0]) << 64) | int(parts[1])] = parts[2]
        return self.names

    @staticmethod
    def number(text: str) -> int:
        if INT_RE.match(text) or (text.isdigit() and len(text) == 20):
            v = int(text)
            if v < U64 and str(v) == text:
                return v
        h = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")
        return h | (1 << 63)

    def enter(self, account: int, text: str) -> int:
        coid = self.number(text)
        if str(coid) != text:
            names = self._load()
            k = (account << 64) | coid
            if names.get(k) != text:
                names[k] = text
                with open(self.path, "a") as f:
                    f.write(f"{account}\t{coid}\t{text}\n")
        return coid

    def text(self, account: int, coid: int) -> str:
        return self._load().get((account << 64) | coid) or str(coid)


def add_routes(app: FastAPI, cfg: ServerConfig, core, submit_rows) -> None:
    """Mount /api/v3 on `app`. `core()` returns the Core; `submit_rows(key, rows)` submits rows
    of protocol.parse_order through the core (rate limit included) and returns their reports."""
    bc: BinanceConfig = cfg.binance
    ids = ClientIds(cfg.journal_dir / "binance-client-ids.tsv")

    def reply(obj, status: int = 200) -> Response:
        return Response(orjson.dumps(obj), status_code=status, media_type="application/json")

    async def params_of(req: HttpRequest, allowed: set[str]) -> tuple[dict, str, list[str]]:
        """The parameters of the query string and the (form-encoded) body, the signed payload
        (query string + body without the signature) and the signatures sent."""
        body = await req.body()
        if len(body) > cfg.max_message_bytes:
            raise BinanceError(-1102, f"request body of {len(body)} bytes is over the limit of "
                               f"{cfg.max_message_bytes}", 413)
        qs = req.url.query
        try:
            bs = body.decode("ascii")
        except UnicodeDecodeError:
            raise BinanceError(-1100, "Illegal characters found in the request body.") from None
        payload, sigs = [], []
        for raw in (qs, bs):
            keep = []
            for part in raw.split("&") if raw else ():
                (sigs.append(part[10:]) if part.startswith("signature=") else keep.append(part))
            payload.append("&".join(keep))
        p: dict[str, str] = {}
        for raw in (qs, bs):
            for k, v in parse_qsl(raw, keep_blank_values=True):
                if k in p:
                    raise BinanceError(-1101, f"Duplicate values for a parameter detected ('{k}').")
                if v == "":
                    raise BinanceError(-1105, f"Parameter '{k}' was empty.")
                p[k] = v
        extra = sorted(set(p) - allowed - SIGNED)
        if extra:
            raise BinanceError(-1104, f"Not all sent parameters were read; read {len(p) - len(extra)} "
                               f"parameter(s) but was sent {len(p)} (unknown parameter '{extra[0]}').")
        return p, "".join(payload), sigs

    def api_key(req: HttpRequest, roles) -> ApiKey:
        k = req.headers.get("x-mbx-apikey")
        if not k:
            raise BinanceError(-2014, "API-key format invalid. (send the X-MBX-APIKEY header)", 401)
        key = cfg.keys.get(k)
        if key is None or (roles is not None and key.role not in roles):
            raise BinanceError(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        return key

    def signed(req: HttpRequest, p: dict, payload: str, sigs: list[str], roles=("trader", "admin")) -> ApiKey:
        key = api_key(req, roles)
        ts = p.get("timestamp")
        if ts is None:
            raise mandatory("timestamp")
        if not INT_RE.match(ts):
            raise BinanceError(-1100, "Illegal characters found in parameter 'timestamp'; legal range is '^[0-9]{1,19}$'.")
        rw = p.get("recvWindow", "5000")
        if not INT_RE.match(rw) or not 0 < int(rw) <= bc.max_recv_window_ms:
            raise BinanceError(-1131, f"recvWindow must be less than or equal to {bc.max_recv_window_ms}.")
        if key.secret is not None:
            if not sigs:
                raise mandatory("signature")
            if len(sigs) > 1:
                raise BinanceError(-1101, "Duplicate values for a parameter detected ('signature').")
            want = hmac.new(key.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
            if not hmac.compare_digest(want, sigs[0].lower()):
                raise BinanceError(-1022, "Signature for this request is not valid.")
        now = time.time_ns() // 1_000_000
        if int(ts) >= now + 1000:
            raise BinanceError(-1021, "Timestamp for this request was 1000ms ahead of the server's time.")
        if now - int(ts) > int(rw):
            raise BinanceError(-1021, "Timestamp for this request is outside of the recvWindow.")
        return key

    def symbol_of(p: dict, required: bool = True) -> BinanceSymbol | None:
        name = p.get("symbol")
        if name is None:
            if required:
                raise mandatory("symbol")
            return None
        b = bc.symbols.get(name)
        if b is None:
            raise BinanceError(-1121, "Invalid symbol.")
        return b

    def order_json(eid: int, o: list, b: BinanceSymbol) -> dict:
        st = STATUS[o[O_STATUS]]
        t = ms(o[O_TS])
        return {"symbol": b.name, "orderId": eid, "orderListId": -1, "clientOrderId": ids.text(o[O_ACCT], o[O_COID]),
                "price": dec(o[O_PX] if o[O_OT] in (S.OT_LIMIT, S.OT_STOP_LIMIT) else 0, b.tick),
                "origQty": dec(o[O_QTY], b.lot),
                "executedQty": dec(o[O_FILLED], b.lot), "cummulativeQuoteQty": notional(o[O_NOTIONAL], b),
                "status": st, "timeInForce": TIF_NAMES[o[O_TIF]], "type": TYPE_NAMES[o[O_OT]],
                "side": "BUY" if o[O_SIDE] == S.BUY else "SELL", "stopPrice": dec(o[O_STOP] or 0, b.tick),
                "icebergQty": dec(0, b.lot), "time": t, "updateTime": t,
                "isWorking": st in ("NEW", "PARTIALLY_FILLED") and (not o[O_STOP] or bool(o[O_TRIG])),
                "workingTime": t if not o[O_STOP] or o[O_TRIG] else -1, "origQuoteOrderQty": notional(0, b), "selfTradePreventionMode": "NONE"}

    def find(key: ApiKey, p: dict, b: BinanceSymbol, code: int, msg: str) -> tuple[int, list]:
        """The account's order named by orderId or origClientOrderId (another account's reads
        as unknown)."""
        gw = core().gw
        oid, coid_t = p.get("orderId"), p.get("origClientOrderId")
        if oid is None and coid_t is None:
            raise BinanceError(-1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!")
        if oid is not None:
            if not INT_RE.match(oid):
                raise BinanceError(-1100, "Illegal characters found in parameter 'orderId'; legal range is '^[0-9]{1,19}$'.")
            eid = int(oid)
            o = gw.orders.get(eid)
        else:
            if not COID_RE.match(coid_t):
                raise BinanceError(-1100, "Illegal characters found in parameter 'origClientOrderId'; legal range is "
                                   f"'{COID_RE.pattern}'.")
            eid = gw.lookup(key.account, ClientIds.number(coid_t))
            o = gw.orders.get(eid) if eid is not None else None
        if o is None or o[O_ACCT] != key.account or o[O_SYM] != b.symbol or \
                (coid_t is not None and o[O_COID] != ClientIds.number(coid_t)):
            raise BinanceError(code, msg)
        return eid, o

    # ---- general -------------------------------------------------------------------------
    @app.get("/api/v3/ping", tags=["binance"])
    async def bn_ping():
        """Binance: test connectivity."""
        return reply({})

    @app.get("/api/v3/time", tags=["binance"])
    async def bn_time():
        """Binance: the server's clock in ms."""
        return reply({"serverTime": time.time_ns() // 1_000_000})

    @app.get("/api/v3/exchangeInfo", tags=["binance"])
    async def bn_exchange_info(req: HttpRequest):
        """Binance: the symbols with their tick (PRICE_FILTER) and lot (LOT_SIZE) sizes."""
        try:
            p, _, _ = await params_of(req, {"symbol", "symbols", "permissions", "showPermissionSets", "symbolStatus"})
            names = list(bc.symbols)
            if "symbol" in p:
                names = [symbol_of(p).name]
            elif "symbols" in p:
                try:
                    want = orjson.loads(p["symbols"])
                except orjson.JSONDecodeError:
                    want = None
                if not isinstance(want, list) or not all(isinstance(x, str) for x in want):
                    raise BinanceError(-1100, "Illegal characters found in parameter 'symbols'; "
                                       "legal range is a JSON list of symbol names.")
                names = [symbol_of({"symbol": x}).name for x in want]
        except BinanceError as e:
            return e.response()
        out = []
        for n in names:
            b = bc.symbols[n]
            out.append({
                "symbol": b.name, "status": "TRADING", "baseAsset": b.base,
                "baseAssetPrecision": max(0, -b.lot.as_tuple().exponent), "quoteAsset": b.quote,
                "quotePrecision": max(0, -b.tick.as_tuple().exponent),
                "quoteAssetPrecision": max(0, -b.tick.as_tuple().exponent),
                "baseCommissionPrecision": 0, "quoteCommissionPrecision": 0,
                "orderTypes": list(TYPES), "icebergAllowed": False, "ocoAllowed": False, "otoAllowed": False,
                "quoteOrderQtyMarketAllowed": False, "allowTrailingStop": False, "cancelReplaceAllowed": False,
                "isSpotTradingAllowed": True, "isMarginTradingAllowed": False,
                "filters": [{"filterType": "PRICE_FILTER", "minPrice": dec(1, b.tick), "maxPrice": dec(MAX_LOTS, b.tick),
                             "tickSize": dec(1, b.tick)},
                            {"filterType": "LOT_SIZE", "minQty": dec(1, b.lot), "maxQty": dec(MAX_LOTS, b.lot),
                             "stepSize": dec(1, b.lot)}],
                "permissions": ["SPOT"], "permissionSets": [["SPOT"]],
                "defaultSelfTradePreventionMode": "NONE", "allowedSelfTradePreventionModes": ["NONE"],
                "hpteSymbol": b.symbol})
        return reply({"timezone": "UTC", "serverTime": time.time_ns() // 1_000_000, "rateLimits": [],
                      "exchangeFilters": [], "symbols": out})

    # ---- market data ---------------------------------------------------------------------
    def limit_of(p: dict, default: int, hi: int) -> int:
        v = p.get("limit")
        if v is None:
            return default
        if not INT_RE.match(v) or not 1 <= int(v) <= hi:
            raise BinanceError(-1100, f"Illegal characters found in parameter 'limit'; legal range is '[1, {hi}]'.")
        return int(v)

    def market_key(req: HttpRequest) -> None:
        if not bc.public_market_data:
            api_key(req, None)

    @app.get("/api/v3/depth", tags=["binance"])
    async def bn_depth(req: HttpRequest):
        """Binance: the L2 book (price, quantity), best first; lastUpdateId = the market-data seq."""
        try:
            p, _, _ = await params_of(req, {"symbol", "limit"})
            market_key(req)
            b = symbol_of(p)
            n = limit_of(p, 100, 5000)
        except BinanceError as e:
            return e.response()
        lv = core().gw.levels(b.symbol, n)
        return reply({"lastUpdateId": lv["seq"],
                      "bids": [[dec(x[0], b.tick), dec(x[1], b.lot)] for x in lv["bids"]],
                      "asks": [[dec(x[0], b.tick), dec(x[1], b.lot)] for x in lv["asks"]]})

    @app.get("/api/v3/trades", tags=["binance"])
    async def bn_trades(req: HttpRequest):
        """Binance: the most recent trades, oldest first (id = the symbol's trade seq)."""
        try:
            p, _, _ = await params_of(req, {"symbol", "limit"})
            market_key(req)
            b = symbol_of(p)
            n = limit_of(p, 500, 1000)
        except BinanceError as e:
            return e.response()
        gw = core().gw
        last = gw.trade_seq.get(b.symbol, 0)
        tr = gw.trades_since(b.symbol, max(0, last - n), n)["trades"]
        return reply([{"id": t, "price": dec(px, b.tick), "qty": dec(q, b.lot), "quoteQty": notional(px * q, b),
                       "time": ms(ts), "isBuyerMaker": sd == S.SELL, "isBestMatch": True}
                      for t, ts, px, q, sd in tr])

    @app.get("/api/v3/aggTrades", tags=["binance"])
    async def bn_agg_trades(req: HttpRequest):
        """Binance: trades as aggregate trades (each trade is its own: a = f = l = the trade seq),
        the most recent, or from fromId on."""
        try:
            p, _, _ = await params_of(req, {"symbol", "limit", "fromId"})
            market_key(req)
            b = symbol_of(p)
            n = limit_of(p, 500, 1000)
            fid = p.get("fromId")
            if fid is not None and not INT_RE.match(fid):
                raise BinanceError(-1100, "Illegal characters found in parameter 'fromId'; legal range is '^[0-9]{1,19}$'.")
        except BinanceError as e:
            return e.response()
        gw = core().gw
        since = max(0, int(fid) - 1) if fid is not None else max(0, gw.trade_seq.get(b.symbol, 0) - n)
        tr = gw.trades_since(b.symbol, since, n)["trades"]
        return reply([{"a": t, "p": dec(px, b.tick), "q": dec(q, b.lot), "f": t, "l": t, "T": ms(ts),
                       "m": sd == S.SELL, "M": True} for t, ts, px, q, sd in tr])

    # ---- orders --------------------------------------------------------------------------
    NEW_PARAMS = {"symbol", "side", "type", "timeInForce", "quantity", "price", "newClientOrderId",
                  "newOrderRespType", "quoteOrderQty", "stopPrice", "icebergQty", "trailingDelta",
                  "selfTradePreventionMode"}

    @app.post("/api/v3/order", tags=["binance"])
    async def bn_new_order(req: HttpRequest):
        """Binance: a new LIMIT, LIMIT_MAKER or MARKET order (timeInForce GTC, IOC or FOK)."""
        try:
            p, payload, sigs = await params_of(req, NEW_PARAMS)
            key = signed(req, p, payload, sigs)
            b = symbol_of(p)
            side = p.get("side")
            if side is None:
                raise mandatory("side")
            if side not in ("BUY", "SELL"):
                raise BinanceError(-1117, f"Invalid side. ('{side}': BUY or SELL)")
            typ = p.get("type")
            if typ is None:
                raise mandatory("type")
            if typ not in TYPES:
                extra = " (not supported by hpte)" if typ in UNSUPPORTED_TYPES else ""
                raise BinanceError(-1116, f"Invalid orderType. ('{typ}'{extra}: LIMIT, LIMIT_MAKER, MARKET, "
                                   "STOP_LOSS or STOP_LOSS_LIMIT)")
            stop = typ in ("STOP_LOSS", "STOP_LOSS_LIMIT")
            for k in ("quoteOrderQty", "icebergQty", "trailingDelta") + (() if stop else ("stopPrice",)):
                if k in p:
                    raise not_required(k)
            stp = p.get("selfTradePreventionMode")
            if stp is not None and stp != "NONE":
                raise BinanceError(-1102, f"Parameter 'selfTradePreventionMode' = '{stp}' is not supported "
                                   "(only NONE; hpte's STP mode is the server's [server] stp)")
            rt = p.get("newOrderRespType", "FULL")
            if rt not in ("ACK", "RESULT", "FULL"):
                raise BinanceError(-1102, f"Parameter 'newOrderRespType' = '{rt}' is malformed (ACK, RESULT or FULL).")
            tif_t = p.get("timeInForce")
            if typ in ("LIMIT", "STOP_LOSS_LIMIT"):
                if tif_t is None:
                    raise mandatory("timeInForce")
                if tif_t not in TIFS:
                    raise BinanceError(-1115, f"Invalid timeInForce. ('{tif_t}': GTC, IOC or FOK)")
                if stop and tif_t != "GTC":      # a stop waits for its trigger
                    raise BinanceError(-1115, f"Invalid timeInForce. ('{tif_t}': a STOP_LOSS_LIMIT order waits "
                                       "for its trigger; GTC only)")
            elif tif_t is not None:
                raise not_required("timeInForce")
            if stop:
                if "stopPrice" not in p:
                    raise mandatory("stopPrice")
                stop_px = to_units(p["stopPrice"], b.tick, "stopPrice", "PRICE_FILTER")
            if "quantity" not in p:
                raise mandatory("quantity")
            qty = to_units(p["quantity"], b.lot, "quantity", "LOT_SIZE")
            if typ in ("MARKET", "STOP_LOSS"):
                if "price" in p:
                    raise not_required("price")
                px = None
            else:
                if "price" not in p:
                    raise mandatory("price")
                px = to_units(p["price"], b.tick, "price", "PRICE_FILTER")
            ctext = p.get("newClientOrderId")
            if ctext is None:
                ctext = str(secrets.randbits(63))
            elif not COID_RE.match(ctext):
                raise BinanceError(-1100, "Illegal characters found in parameter 'newClientOrderId'; legal range is "
                                   f"'{COID_RE.pattern}'.")
            m = {"type": "new", "order_id": ClientIds.number(ctext), "symbol": b.symbol, "side": side.lower(),
                 "qty": qty, "order_type": OT_OF[typ],
                 "tif": tif_t.lower() if tif_t else "gtc", "post_only": typ == "LIMIT_MAKER"}
            if stop:
                m["stop_price"] = stop_px
            if px is not None:
                m["price"] = px
            try:
                row = parse_order(m, core().symbols)
            except BadRequest as e:
                raise from_core(e) from None
            coid = ids.enter(key.account, ctext)
            try:
                reps = await submit_rows(key, [row])
            except BadRequest as e:
                raise from_core(e) from None
            rej = next((r for r in reps if r["event"] == "REJECTED"), None)
            if rej is not None:
                raise BinanceError(-2010, REJECT_MSG.get(rej["reason"], f"Order rejected: {rej['reason']}."))
            gw = core().gw
            eid = gw.lookup(key.account, coid)
            o = gw.orders.get(eid) if eid is not None else None
            if o is None:                 # forgotten already (max_finished_orders = 0)
                raise BinanceError(-1000, "The order was processed but is no longer held; query it by newClientOrderId.")
        except BinanceError as e:
            return e.response()
        t = ms(reps[0]["ts_ns"]) if reps else ms(o[O_TS])
        if rt == "ACK":
            return reply({"symbol": b.name, "orderId": eid, "orderListId": -1, "clientOrderId": ctext,
                          "transactTime": t})
        d = order_json(eid, o, b)
        d["transactTime"] = t
        for k in ("time", "updateTime", "isWorking", "icebergQty") + (() if stop else ("stopPrice",)):
            d.pop(k)
        if typ == "LIMIT_MAKER":
            d["type"] = "LIMIT_MAKER"
        if rt == "FULL":
            d["fills"] = [{"price": dec(r["price"], b.tick), "qty": dec(r["qty"], b.lot), "commission": dec(0, b.tick),
                           "commissionAsset": b.quote}
                          for r in reps if r["event"] in ("FILLED", "PARTIALLY_FILLED")]
        return reply(d)

    @app.delete("/api/v3/order", tags=["binance"])
    async def bn_cancel(req: HttpRequest):
        """Binance: cancel one of this account's orders by orderId or origClientOrderId."""
        try:
            p, payload, sigs = await params_of(req, {"symbol", "orderId", "origClientOrderId", "newClientOrderId",
                                                     "cancelRestrictions"})
            key = signed(req, p, payload, sigs)
            b = symbol_of(p)
            if "cancelRestrictions" in p:
                raise not_required("cancelRestrictions")
            eid, o = find(key, p, b, -2011, "Unknown order sent.")
            gw = core().gw
            if o[O_STATUS] not in LIVE or gw.lookup(key.account, o[O_COID]) != eid:
                raise BinanceError(-2011, "Unknown order sent.")
            try:
                row = parse_order({"type": "cancel", "order_id": o[O_COID], "symbol": b.symbol}, core().symbols)
                reps = await submit_rows(key, [row])
            except BadRequest as e:
                raise from_core(e) from None
            if not any(r["event"] == "CANCELLED" for r in reps):
                raise BinanceError(-2011, "Unknown order sent.")
        except BinanceError as e:
            return e.response()
        d = order_json(eid, o, b)
        cancel_id = p.get("newClientOrderId") or d["clientOrderId"]
        d["origClientOrderId"] = d["clientOrderId"]
        d["clientOrderId"] = cancel_id
        d["transactTime"] = ms(reps[-1]["ts_ns"])
        for k in ("time", "updateTime", "isWorking", "stopPrice", "icebergQty", "workingTime", "origQuoteOrderQty"):
            d.pop(k)
        return reply(d)

    @app.get("/api/v3/order", tags=["binance"])
    async def bn_get_order(req: HttpRequest):
        """Binance: one of this account's orders by orderId or origClientOrderId."""
        try:
            p, payload, sigs = await params_of(req, {"symbol", "orderId", "origClientOrderId"})
            key = signed(req, p, payload, sigs, None)
            b = symbol_of(p)
            eid, o = find(key, p, b, -2013, "Order does not exist.")
        except BinanceError as e:
            return e.response()
        return reply(order_json(eid, o, b))

    @app.get("/api/v3/openOrders", tags=["binance"])
    async def bn_open_orders(req: HttpRequest):
        """Binance: this account's open orders (of one symbol, or of every Binance symbol)."""
        try:
            p, payload, sigs = await params_of(req, {"symbol"})
            key = signed(req, p, payload, sigs, None)
            b = symbol_of(p, required=False)
        except BinanceError as e:
            return e.response()
        by_id = {x.symbol: x for x in bc.symbols.values()}
        out = []
        for eid, o in core().gw.orders.items():
            if o[O_ACCT] == key.account and o[O_STATUS] in LIVE and (b is None or o[O_SYM] == b.symbol):
                s = by_id.get(o[O_SYM])
                if s is not None:
                    out.append(order_json(eid, o, s))
        return reply(out)

    @app.api_route("/api/v3/{rest:path}", methods=["GET", "POST", "PUT", "DELETE"], include_in_schema=False)
    async def bn_unsupported(rest: str):
        return BinanceError(-1020, f"This operation is not supported (/api/v3/{rest}; see README, "
                            "'Binance-compatible subset').", 404).response()



# ---- WebSocket market streams ---------------------------------------------------------------
STREAM_RE = re.compile(r"^([a-z0-9_.-]{1,20})@(trade|depth|depth@100ms)$")
MAX_STREAMS = 1024              # streams on one connection (Binance's limit)


class DecFormat:
    """dec(units, step) for one step, in integer arithmetic (the streams format every level and
    trade of every update): the same string as ``dec``."""

    def __init__(self, step: Decimal):
        _sign, digits, exp = step.as_tuple()
        self.mant = int("".join(map(str, digits))) * (10 ** exp if exp > 0 else 1)
        self.k = -exp if exp < 0 else 0

    def __call__(self, units: int) -> str:
        v = units * self.mant
        if not self.k:
            return str(v)
        neg, v = v < 0, abs(v)
        s = str(v).rjust(self.k + 1, "0")
        return ("-" if neg else "") + s[:-self.k] + "." + s[-self.k:]


class _StreamKey:
    """What a stream session's Session needs of a key (market streams may be public)."""
    __slots__ = ("account", "key", "role")

    def __init__(self, key: ApiKey | None):
        self.account = key.account if key is not None else -1
        self.key = key
        self.role = key.role if key is not None else "public"


class Streams:
    """Binance's market streams over the core's market data: ``<symbol>@trade`` (one event per
    trade, as it happens) and ``<symbol>@depth`` / ``<symbol>@depth@100ms`` (diff depth: the
    levels changed in the last 1000 / 100 ms, absolute quantities, "0" = gone; nothing is sent
    for a window without changes). Depth events carry Binance's update ids: ``u`` = the
    symbol's market-data seq of the window's last change (what ``GET /api/v3/depth`` returns as
    lastUpdateId), ``U`` = the first change's id, where a change's id range starts right after
    the previous change's seq (results that changed no level, e.g. a trade-only one, are inside
    the range). So Binance's "manage a local order book" procedure works as documented: buffer
    the events, take the REST snapshot, drop events with ``u`` <= lastUpdateId, the first kept
    one has ``U`` <= lastUpdateId + 1 <= ``u``, each next one ``U`` = previous ``u`` + 1.

    The writer calls ``fanout`` with each result's market data (Core.md_hooks): trades are
    built once per result and queued to every subscriber; depth changes are merged into the
    window of each subscribed speed when the result is delivered (after its fsync, like every
    acknowledgement), and ``flush`` (a task, every 100 ms) sends the windows due. Nothing
    waits on a subscriber (one past ``md_backlog`` is cut off, as on the native stream)."""

    def __init__(self, bc: BinanceConfig, gw):
        self.by_name = {name.lower(): b for name, b in bc.symbols.items()}
        self.by_sym = {b.symbol: b for b in bc.symbols.values()}
        self.fmt = {b.symbol: (DecFormat(b.tick), DecFormat(b.lot)) for b in bc.symbols.values()}
        self.subs: dict[int, dict[str, dict]] = {}        # hpte symbol -> kind -> {session: stream name}
        self.last_u = {b.symbol: gw.md_seq.get(b.symbol, 0) for b in bc.symbols.values()}
        # (symbol, kind) -> the open window: [U, u, {price: qty} bids, {price: qty} asks]
        self.windows: dict[tuple[int, str], list] = {}
        self.ticks = 0

    def parse(self, name: str) -> tuple[BinanceSymbol, str]:
        m = STREAM_RE.match(name) if isinstance(name, str) else None
        b = self.by_name.get(m.group(1)) if m else None
        if b is None:
            raise BinanceError(-1121 if m else -1100, f"Invalid stream name {name!r} (<symbol>@trade or "
                               f"<symbol>@depth, symbol one of {', '.join(sorted(self.by_name))})")
        return b, {"trade": "trade", "depth": "depth1000", "depth@100ms": "depth100"}[m.group(2)]

    def add(self, s, name: str) -> None:
        b, kind = self.parse(name)
        self.subs.setdefault(b.symbol, {}).setdefault(kind, {})[s] = name
        s.streams.add(name)

    def remove(self, s, name: str) -> None:
        b, kind = self.parse(name)
        self.subs.get(b.symbol, {}).get(kind, {}).pop(s, None)
        s.streams.discard(name)

    def drop(self, s) -> None:
        for kinds in self.subs.values():
            for d in kinds.values():
                d.pop(s, None)

    def fanout(self, md: dict, acts: list) -> None:
        now = None
        for sym, m in md.items():
            deltas = m["deltas"]
            subs = self.subs.get(sym)
            U = None
            if deltas and sym in self.last_u:
                U = self.last_u[sym] + 1
                self.last_u[sym] = m["seq"]
            if not subs:
                continue
            b = self.by_sym[sym]
            px, lot = self.fmt[sym]
            if now is None:
                now = time.time_ns() // 1_000_000
            if U is not None and (subs.get("depth1000") or subs.get("depth100")):
                acts.append((self._merge, (sym, U, m["seq"], deltas)))
            t = subs.get("trade")
            if t and m["trades"]:
                for seq, ts, p, q, sd in m["trades"]:
                    ev = {"e": "trade", "E": now, "s": b.name, "t": seq, "p": px(p), "q": lot(q),
                          "T": ts // 1_000_000, "m": sd == S.SELL, "M": True}
                    self._send(t, ev, acts)

    def _merge(self, arg) -> None:
        """A delivered result's depth changes into the open windows of the symbol's speeds."""
        sym, U, u, deltas = arg
        subs = self.subs.get(sym)
        if not subs:
            return
        for kind in ("depth1000", "depth100"):
            if subs.get(kind):
                w = self.windows.get((sym, kind))
                if w is None:
                    w = self.windows[(sym, kind)] = [U, u, {}, {}]
                w[1] = u
                bids, asks = w[2], w[3]
                for sd, p, q, _n in deltas:
                    (bids if sd == S.BUY else asks)[p] = q

    def flush(self, kinds=("depth100",)) -> None:
        """Send the open windows of these speeds to their subscribers."""
        now = time.time_ns() // 1_000_000
        for key in [k for k in self.windows if k[1] in kinds]:
            sym, kind = key
            U, u, bids, asks = self.windows.pop(key)
            subs = self.subs.get(sym, {}).get(kind)
            if not subs:
                continue
            px, lot = self.fmt[sym]
            ev = {"e": "depthUpdate", "E": now, "s": self.by_sym[sym].name, "U": U, "u": u,
                  "b": [[px(p), lot(q)] for p, q in sorted(bids.items(), reverse=True)],
                  "a": [[px(p), lot(q)] for p, q in sorted(asks.items())]}
            acts: list = []
            self._send(subs, ev, acts)
            for fn, data in acts:
                fn(data)

    async def run(self, stopping) -> None:
        """Every 100 ms: flush the 100 ms windows; every 10th time the 1000 ms ones too."""
        import asyncio
        while not stopping():
            await asyncio.sleep(0.1)
            self.ticks += 1
            self.flush(("depth100", "depth1000") if self.ticks % 10 == 0 else ("depth100",))

    @staticmethod
    def _send(subs: dict, ev: dict, acts: list) -> None:
        raw = combined = None
        for s, name in list(subs.items()):
            if s.combined:
                if combined is None or combined[0] != name:
                    combined = (name, orjson.dumps({"stream": name, "data": ev}))
                acts.append((s.push_raw, combined[1]))
            else:
                if raw is None:
                    raw = orjson.dumps(ev)
                acts.append((s.push_raw, raw))


def add_stream_routes(app: FastAPI, cfg: ServerConfig, core) -> None:
    """Binance's WebSocket market streams: ``/ws/<stream>[/<stream>...]`` (raw payloads) and
    ``/stream?streams=<stream>/<stream>`` (combined: ``{"stream": name, "data": payload}``); live
    ``{"method": "SUBSCRIBE" | "UNSUBSCRIBE" | "LIST_SUBSCRIPTIONS", "params": [...], "id": n}``.
    A key (X-MBX-APIKEY or X-API-Key header) is needed unless ``public_market_data``."""
    import asyncio
    import contextlib

    from .core import Session

    bc: BinanceConfig = cfg.binance
    st: dict = {}

    def streams() -> Streams:
        if "s" not in st:
            c = core()
            st["s"] = Streams(bc, c.gw)
            c.md_hooks.append(st["s"].fanout)
            st["task"] = asyncio.ensure_future(st["s"].run(lambda: c.stopping))
        return st["s"]

    def key_of(ws: WebSocket) -> ApiKey | None:
        k = ws.headers.get("x-mbx-apikey") or ws.headers.get("x-api-key")
        key = cfg.keys.get(k) if k else None
        if key is None and not bc.public_market_data:
            raise BinanceError(-2014 if not k else -2015, "API-key format invalid. (send the X-MBX-APIKEY header; "
                               "market streams need a key unless [binance] public_market_data = true)", 401)
        return key

    async def serve(ws: WebSocket, names: list[str], combined: bool) -> None:
        ss = streams()
        try:
            key = key_of(ws)
            if len(names) > MAX_STREAMS:
                raise BinanceError(-1100, f"at most {MAX_STREAMS} streams on one connection")
            for n in names:
                ss.parse(n)
        except BinanceError as e:
            await ws.accept()
            await ws.send_text(orjson.dumps({"code": e.code, "msg": e.msg}).decode())
            await ws.close(1008, e.msg[:120])
            return
        s = Session(_StreamKey(key), "binance-md", cfg.md_backlog)
        s.combined, s.streams = combined, set()
        for n in names:              # registered before the handshake completes: a client that
            ss.add(s, n)             # then reads the REST snapshot misses no event after it
        me = asyncio.current_task()

        async def send(data):
            await ws.send_text(data.decode())

        async def pump():
            try:
                await s.pump(send, coalesce=0)       # one event per frame, as Binance sends
            except Exception:
                s.closed = True
            if s.close_reason:
                with contextlib.suppress(Exception):
                    await ws.close(1008, s.close_reason[:120])
            me.cancel()

        def reply(obj) -> None:
            s.push_raw(orjson.dumps(obj))

        def handle(text) -> None:
            rid = None
            try:
                if text is None or len(text) > cfg.max_message_bytes:
                    raise ValueError("send JSON text messages")
                m = orjson.loads(text)
                if not isinstance(m, dict):
                    raise ValueError("a message must be a JSON object")
                rid = m.get("id")
                meth, params = m.get("method"), m.get("params", [])
                if meth == "LIST_SUBSCRIPTIONS":
                    reply({"result": sorted(s.streams), "id": rid})
                    return
                if meth not in ("SUBSCRIBE", "UNSUBSCRIBE"):
                    raise ValueError(f"unknown method {meth!r} (SUBSCRIBE, UNSUBSCRIBE, LIST_SUBSCRIPTIONS)")
                if not isinstance(params, list) or not all(isinstance(x, str) for x in params):
                    raise ValueError("'params' must be a list of stream names")
                for n in params:
                    ss.parse(n)
                if meth == "SUBSCRIBE" and len(s.streams | set(params)) > MAX_STREAMS:
                    raise ValueError(f"at most {MAX_STREAMS} streams on one connection")
                for n in params:
                    (ss.add if meth == "SUBSCRIBE" else ss.remove)(s, n)
                reply({"result": None, "id": rid})
            except BinanceError as e:
                reply({"error": {"code": 2, "msg": f"Invalid request: {e.msg}"}, "id": rid})
            except (ValueError, orjson.JSONDecodeError) as e:
                reply({"error": {"code": 3 if isinstance(e, orjson.JSONDecodeError) else 2,
                                 "msg": f"Invalid request: {e}"}, "id": rid})

        try:
            await ws.accept()
        except Exception:
            ss.drop(s)
            return
        pt = asyncio.ensure_future(pump())
        try:
            while not s.closed:
                msg = await ws.receive()
                if msg["type"] == "websocket.disconnect":
                    return
                handle(msg.get("text"))
        except (WebSocketDisconnect, RuntimeError, asyncio.CancelledError):
            return
        finally:
            s.closed = True
            s.ready.set()
            ss.drop(s)
            if not pt.done() and pt is not asyncio.current_task():
                pt.cancel()

    @app.websocket("/ws/{path:path}")
    async def bn_ws_raw(ws: WebSocket, path: str):
        await serve(ws, [n for n in path.split("/") if n], False)

    @app.websocket("/stream")
    async def bn_ws_combined(ws: WebSocket):
        q = ws.query_params.get("streams", "")
        await serve(ws, [n for n in q.split("/") if n], True)
