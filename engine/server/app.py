"""The ASGI app: FastAPI REST routes and the two WebSocket adapters over one Core.

Authentication: header ``X-API-Key: <key>`` (or ``Authorization: Bearer <key>``) on every REST
call and WebSocket handshake; a WebSocket may instead send ``{"type": "auth", "key": ...}`` as its
first message. Errors are JSON ``{"type": "error", "code": ..., "error": ..., "field": ...}``.
"""
from __future__ import annotations

import asyncio
import contextlib
import gc
from pathlib import Path

import numpy as np
import orjson
from fastapi import FastAPI, Request as HttpRequest, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field

from .config import ApiKey, ServerConfig
from .core import Core, Request, Session
from .protocol import BadRequest, parse_arrow_frame, parse_order, req_id_of
from .state import LIVE, order_view

STATUS = {"BAD_REQUEST": 400, "UNKNOWN_TYPE": 400, "UNKNOWN_SYMBOL": 400, "UNAUTHORIZED": 401,
          "FORBIDDEN": 403, "UNKNOWN_ORDER": 404, "TOO_LARGE": 413, "RATE_LIMITED": 429,
          "OVERLOADED": 503, "UNAVAILABLE": 503, "NEEDS_RISK": 409}
TRADE_ROLES = ("trader", "admin")


class OrderIn(BaseModel):
    """A new order (documentation of the JSON body; the gateway validates it itself)."""
    type: str = Field("new", description="new, cancel or replace")
    req_id: int | str | None = None
    order_id: int = Field(description="the client's order id (uint64), unique per account")
    symbol: int
    side: str = Field(description="buy or sell (or 1 / -1)")
    price: int | None = Field(None, description="limit price in ticks (not for market or stop orders)")
    qty: int = Field(description="lots, > 0")
    order_type: str = Field("limit", description="limit, market, stop (a market order once triggered) or stop_limit")
    tif: str = Field("gtc", description="gtc, ioc, fok or day (stop orders: gtc or day)")
    post_only: bool = False
    stop_price: int | None = Field(None, description="stop and stop_limit only: the trigger price in ticks, > 0")


class ReplaceIn(BaseModel):
    price: int = Field(description="the new limit price in ticks (ignored for a waiting stop order)")
    qty: int
    stop_price: int | None = Field(None, description="a waiting stop order's new trigger price (omitted: kept)")


def _err(e: BadRequest) -> JSONResponse:
    return JSONResponse(e.body(), status_code=STATUS.get(e.code, 400))


def create_app(cfg: ServerConfig, risk_path: Path | None = None, log=print) -> FastAPI:
    state: dict = {}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        core = Core(cfg, risk_path, log=log)
        state["core"] = core
        # The order table and the id map are millions of small long-lived objects: with the
        # default thresholds the cyclic GC walks them over and over (half the writer's time on
        # Arrow frames). Collect the young generation every 50,000 allocations instead of 700,
        # and move the recovered state out of the collector's sight.
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)
        task = asyncio.ensure_future(core.run())

        def writer_done(t: asyncio.Task) -> None:
            if not t.cancelled() and t.exception() is not None:
                log(f"hpte serve: error: the writer stopped: {t.exception()!r}")
        task.add_done_callback(writer_done)
        log(f"hpte serve: ready (engine seq {core.gw.engine.seq}, journal {cfg.journal_dir})")
        try:
            yield
        finally:
            core.close()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    app = FastAPI(title="hpte gateway", version="0.1.0", lifespan=lifespan,
                  description="Order entry and market data over REST and WebSockets (README, 'The gateway').")

    def core() -> Core:
        return state["core"]

    def auth(headers, roles=None) -> ApiKey:
        k = headers.get("x-api-key")
        if k is None:
            a = headers.get("authorization", "")
            if a.lower().startswith("bearer "):
                k = a[7:].strip()
        key = cfg.keys.get(k) if k else None
        if key is None:
            raise BadRequest("X-API-Key", "missing or unknown API key", "UNAUTHORIZED")
        if roles is not None and key.role not in roles:
            raise BadRequest(None, f"role {key.role!r} may not do this (needs {' or '.join(roles)})", "FORBIDDEN")
        return key

    def rest_session(key: ApiKey) -> Session:
        return Session(key, "rest", 1 << 30)

    async def body_json(req: HttpRequest):
        data = await req.body()
        if len(data) > cfg.max_message_bytes:
            raise BadRequest("body", f"request body of {len(data)} bytes is over the limit of {cfg.max_message_bytes}", "TOO_LARGE")
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as e:
            raise BadRequest("body", f"malformed JSON ({e})") from None

    def coid_of(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise BadRequest("order_id", f"order_id must be an integer, got {text!r}") from None
        if not 0 <= v < 2**64:
            raise BadRequest("order_id", f"order_id {v} is out of range [0, 2^64)")
        return v

    async def submit_rows(key: ApiKey, rows: list[tuple], req_id=None) -> list:
        c = core()
        if not c.rate.allow(key, len(rows)):
            raise BadRequest(None, f"rate limit of {key.rate:g} messages per second exceeded", "RATE_LIMITED")
        fut = asyncio.get_running_loop().create_future()
        c.submit(Request(rest_session(key), req_id, rows=rows, fut=fut))
        return await fut

    # ---- orders --------------------------------------------------------------------------
    @app.post("/v1/orders", openapi_extra={"requestBody": {"content": {"application/json": {
        "schema": {"oneOf": [OrderIn.model_json_schema(), {"type": "array", "items": OrderIn.model_json_schema()}]}}}}})
    async def post_orders(req: HttpRequest):
        """Place one order or a list (each validated; any invalid one refuses the whole call)."""
        try:
            key = auth(req.headers, TRADE_ROLES)
            m = await body_json(req)
            msgs = m if isinstance(m, list) else [m]
            if not msgs:
                raise BadRequest("body", "an empty list of orders")
            rows = []
            for i, x in enumerate(msgs):
                try:
                    rows.append(parse_order(x, core().symbols))
                except BadRequest as e:
                    if isinstance(m, list):
                        e.field = f"[{i}].{e.field}" if e.field else f"[{i}]"
                    raise
            reps = await submit_rows(key, rows, req_id_of(m) if isinstance(m, dict) else None)
        except BadRequest as e:
            return _err(e)
        return Response(orjson.dumps({"reports": reps}), media_type="application/json")

    @app.delete("/v1/orders/{order_id}")
    async def cancel_order(order_id: str, req: HttpRequest):
        """Cancel one of this account's orders (another account's id reads as unknown)."""
        try:
            key = auth(req.headers, TRADE_ROLES)
            coid = coid_of(order_id)
            if core().gw.order(key.account, coid) is None:
                raise BadRequest("order_id", f"unknown order {coid}", "UNKNOWN_ORDER")
            reps = await submit_rows(key, [parse_order({"type": "cancel", "order_id": coid}, core().symbols)])
        except BadRequest as e:
            return _err(e)
        return {"reports": reps}

    @app.patch("/v1/orders/{order_id}", openapi_extra={"requestBody": {"content": {"application/json": {
        "schema": ReplaceIn.model_json_schema()}}}})
    async def replace_order(order_id: str, req: HttpRequest):
        """Replace (new price and total quantity) one of this account's orders."""
        try:
            key = auth(req.headers, TRADE_ROLES)
            coid = coid_of(order_id)
            m = await body_json(req)
            if not isinstance(m, dict):
                raise BadRequest("body", "the body must be a JSON object {price, qty}")
            if core().gw.order(key.account, coid) is None:
                raise BadRequest("order_id", f"unknown order {coid}", "UNKNOWN_ORDER")
            row = parse_order({**m, "type": "replace", "order_id": coid}, core().symbols)
            reps = await submit_rows(key, [row])
        except BadRequest as e:
            return _err(e)
        return {"reports": reps}

    @app.get("/v1/orders/{order_id}")
    async def get_order(order_id: str, req: HttpRequest):
        """One of this account's orders: status, leaves and filled quantity."""
        try:
            key = auth(req.headers)
            coid = coid_of(order_id)
            gw = core().gw
            o = gw.order(key.account, coid)
            if o is None:
                ret = gw.retention(key.account)
                msg = f"unknown order {coid}"
                if ret["finished_orders_forgotten"]:
                    msg += (f" (or one of this account's {ret['finished_orders_forgotten']} finished orders no longer "
                            f"held: the server keeps the newest {ret['max_finished_orders']} finished orders)")
                raise BadRequest("order_id", msg, "UNKNOWN_ORDER", ret)
        except BadRequest as e:
            return _err(e)
        return order_view(o)

    @app.get("/v1/orders")
    async def list_orders(req: HttpRequest, status: str = "open"):
        """This account's orders: status=open (live ones) or all."""
        try:
            key = auth(req.headers)
            if status not in ("open", "all"):
                raise BadRequest("status", f"status must be open or all, got {status!r}")
        except BadRequest as e:
            return _err(e)
        gw = core().gw
        out = [order_view(o) for o in gw.orders.values()
               if o[0] == key.account and (status == "all" or o[8] in LIVE)]
        return {"orders": out, **gw.retention(key.account)}

    if cfg.binance is not None:        # the Binance-compatible subset under /api/v3
        from .binance import add_routes, add_stream_routes
        add_routes(app, cfg, core, submit_rows)
        add_stream_routes(app, cfg, core)

    # ---- market data ---------------------------------------------------------------------
    def symbol_of(text: str) -> int:
        try:
            s = int(text)
        except ValueError:
            raise BadRequest("symbol", f"symbol must be an integer, got {text!r}") from None
        if s not in core().symbols:
            raise BadRequest("symbol", f"unknown symbol {s}", "UNKNOWN_SYMBOL")
        return s

    @app.get("/v1/book/{symbol}")
    async def get_book(symbol: str, req: HttpRequest, depth: int | None = None):
        """L2 levels (best first): [price, qty, orders]; seq = the market-data sequence number."""
        try:
            auth(req.headers)
            s = symbol_of(symbol)
            if depth is not None and depth < 1:
                raise BadRequest("depth", f"depth must be at least 1, got {depth}")
        except BadRequest as e:
            return _err(e)
        return core().gw.levels(s, depth)

    @app.get("/v1/trades/{symbol}")
    async def get_trades(symbol: str, req: HttpRequest, since: int = 0, limit: int = 1000):
        """Trades with trade seq > since: [trade_seq, ts_ns, price, qty, taker_side]. The newest
        max_trades_kept per symbol are held: first_held_seq is the oldest, and missing counts
        the trades after `since` that are no longer held."""
        try:
            auth(req.headers)
            s = symbol_of(symbol)
            if since < 0 or not 1 <= limit <= 100_000:
                raise BadRequest("since" if since < 0 else "limit", "since must be >= 0 and limit in [1, 100000]")
        except BadRequest as e:
            return _err(e)
        return core().gw.trades_since(s, since, limit)

    @app.get("/v1/account")
    async def account(req: HttpRequest):
        """This account: open orders, and positions, P&L and limits when risk is on."""
        try:
            key = auth(req.headers)
        except BadRequest as e:
            return _err(e)
        gw = core().gw
        d = {"account": key.account, "role": key.role,
             "open_orders": sum(1 for o in gw.orders.values() if o[0] == key.account and o[8] in LIVE),
             **gw.retention(key.account)}
        risk = gw.engine.risk
        if risk is not None:
            p = risk.positions()
            m = p["account"] == key.account
            d["positions"] = [{k: (None if isinstance(v, float) and v != v else v) for k, v in
                               zip(p.keys(), row)} for row in zip(*(p[k][m].tolist() for k in p))]
            d["limits"] = str(risk_path) if risk_path else None
        return d

    # ---- admin ---------------------------------------------------------------------------
    async def command(req: HttpRequest, op: dict):
        try:
            auth(req.headers, ("admin",))
            fut = asyncio.get_running_loop().create_future()
            core().submit(Request(None, None, fut=fut, op=op))
            return await fut
        except BadRequest as e:
            return _err(e)

    @app.post("/v1/admin/halt")
    async def halt(req: HttpRequest):
        """Market-wide halt (needs --risk)."""
        return await command(req, {"op": "halt"})

    @app.post("/v1/admin/resume")
    async def resume(req: HttpRequest):
        """End a halt: reopening auctions (needs --risk)."""
        return await command(req, {"op": "resume"})

    @app.post("/v1/admin/kill-switch")
    async def kill_switch(req: HttpRequest):
        """Body {"on": true, "account": 7} (account omitted: the global switch); needs --risk."""
        try:
            m = await body_json(req)
            if not isinstance(m, dict) or type(m.get("on")) is not bool:
                raise BadRequest("on", "body must be {\"on\": true|false, \"account\": <int, optional>}")
            a = m.get("account")
            if a is not None and (type(a) is not int or not 0 <= a < 2**32):
                raise BadRequest("account", f"account must be an integer in [0, 2^32), got {a!r}")
        except BadRequest as e:
            return _err(e)
        return await command(req, {"op": "kill", "on": m["on"], "account": a})

    @app.post("/v1/admin/end-session")
    async def end_session(req: HttpRequest):
        """Expire every resting DAY order."""
        return await command(req, {"op": "end_session"})

    @app.get("/v1/health")
    async def health():
        c = core()
        return {"status": "ok", "engine_seq": c.gw.engine.seq, "journal_next_record": c.journal.next,
                "queued_rows": c.queued_rows, "recovery": c.recovery_report}

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(core().metrics_text(), media_type="text/plain; version=0.0.4")

    # ---- WebSockets ----------------------------------------------------------------------
    async def ws_auth(ws: WebSocket, roles) -> ApiKey | None:
        await ws.accept()
        try:
            return auth(ws.headers, roles)
        except BadRequest as e:
            if e.code == "FORBIDDEN":
                await ws.send_text(orjson.dumps(e.body()).decode())
                await ws.close(1008, str(e)[:120])
                return None
        try:
            m = orjson.loads(await asyncio.wait_for(ws.receive_text(), 10))
            if not isinstance(m, dict) or m.get("type") != "auth":
                raise BadRequest("type", "the first message must be {\"type\": \"auth\", \"key\": ...} "
                                 "(or send the X-API-Key header)", "UNAUTHORIZED")
            key = cfg.keys.get(m.get("key")) if isinstance(m.get("key"), str) else None
            if key is None:
                raise BadRequest("key", "unknown API key", "UNAUTHORIZED")
            if key.role not in roles:
                raise BadRequest(None, f"role {key.role!r} may not use this endpoint", "FORBIDDEN")
            await ws.send_text(orjson.dumps({"type": "authenticated", "account": key.account, "role": key.role}).decode())
            return key
        except BadRequest as e:
            await ws.send_text(orjson.dumps(e.body()).decode())
            await ws.close(1008, str(e)[:120])
        except (asyncio.TimeoutError, orjson.JSONDecodeError, KeyError, WebSocketDisconnect, RuntimeError):
            with contextlib.suppress(Exception):
                await ws.close(1008, "authentication required")
        return None

    async def serve_ws(ws: WebSocket, s: Session, handle) -> None:
        """Receive on this task, send on the session's pump task. Receiving is a plain loop over
        the ASGI receive (no task per message); when the pump ends (the session closed past its
        backlog) it closes the socket with the reason and cancels the receiving task."""
        recv = ws.receive
        me = asyncio.current_task()

        async def send(data):
            if type(data) is tuple:
                await ws.send_bytes(data[0])
            else:
                await ws.send_text(data.decode())

        async def pump():
            try:
                await s.pump(send)
            except Exception:          # the peer went away mid-send: stop receiving too
                s.closed = True
            if s.close_reason:
                with contextlib.suppress(Exception):
                    await ws.close(1008, s.close_reason[:120])
            me.cancel()

        pt = asyncio.ensure_future(pump())
        try:
            while not s.closed:
                msg = await recv()
                if msg["type"] == "websocket.disconnect":
                    return
                handle(msg.get("text"), msg.get("bytes"))
        except (WebSocketDisconnect, RuntimeError, asyncio.CancelledError):
            return
        finally:
            s.closed = True
            s.ready.set()
            core().unregister(s)
            if not pt.done() and pt is not asyncio.current_task():
                pt.cancel()

    @app.websocket("/v1/ws/orders")
    async def ws_orders(ws: WebSocket):
        key = await ws_auth(ws, TRADE_ROLES)
        if key is None:
            return
        c = core()
        s = Session(key, "orders", cfg.orders_backlog)
        c.register(s)
        frames = [0]          # binary frames on this connection: frame k is acknowledged with req_id k

        def handle(text, data):
            m = None
            try:
                if data is not None:
                    if len(data) > cfg.max_frame_bytes:
                        raise BadRequest("frame", f"binary frame of {len(data)} bytes is over {cfg.max_frame_bytes}", "TOO_LARGE")
                    cols = parse_arrow_frame(data, key.account, c.symbols)
                    if not c.rate.allow(key, 1):
                        raise BadRequest(None, "rate limit exceeded", "RATE_LIMITED")
                    c.submit(Request(s, frames[0], cols=cols))
                    frames[0] += 1
                    return
                if len(text) > cfg.max_message_bytes:
                    raise BadRequest("message", f"message of {len(text)} bytes is over {cfg.max_message_bytes}", "TOO_LARGE")
                try:
                    m = orjson.loads(text)
                except orjson.JSONDecodeError as e:
                    raise BadRequest("message", f"malformed JSON ({e})") from None
                if isinstance(m, dict) and m.get("type") == "ping":   # answered after all earlier requests
                    c.submit(Request(s, req_id_of(m), op={"op": "ping"}))
                    return
                row = parse_order(m, c.symbols)
                if not c.rate.allow(key, 1):
                    raise BadRequest(None, f"rate limit of {key.rate:g} messages per second exceeded", "RATE_LIMITED")
                c.submit(Request(s, m.get("req_id"), rows=[row]))
            except BadRequest as e:
                s.push(e.body(req_id_of(m)))

        await serve_ws(ws, s, handle)

    @app.websocket("/v1/ws/market")
    async def ws_market(ws: WebSocket):
        key = await ws_auth(ws, ("trader", "market_data", "admin"))
        if key is None:
            return
        c = core()
        s = Session(key, "market", cfg.md_backlog)

        def handle(text, data):
            m = None
            try:
                if text is None or len(text) > cfg.max_message_bytes:
                    raise BadRequest("message", "send JSON text messages of at most "
                                     f"{cfg.max_message_bytes} bytes", "TOO_LARGE" if text else "BAD_REQUEST")
                try:
                    m = orjson.loads(text)
                except orjson.JSONDecodeError as e:
                    raise BadRequest("message", f"malformed JSON ({e})") from None
                if not isinstance(m, dict):
                    raise BadRequest("message", "a message must be a JSON object")
                t = m.get("type")
                if t not in ("subscribe", "unsubscribe"):
                    raise BadRequest("type", f"unknown message type {t!r} (expected subscribe, unsubscribe)", "UNKNOWN_TYPE")
                syms = m.get("symbols")
                if not isinstance(syms, list) or not syms or any(type(x) is not int for x in syms):
                    raise BadRequest("symbols", "symbols must be a non-empty list of integers")
                bad = [x for x in syms if x not in c.symbols]
                if bad:
                    raise BadRequest("symbols", f"unknown symbol {bad[0]}", "UNKNOWN_SYMBOL")
                if not c.rate.allow(key, 1):
                    raise BadRequest(None, "rate limit exceeded", "RATE_LIMITED")
                for x in syms:
                    if t == "subscribe":
                        s.push_raw(orjson.dumps(c.subscribe(s, x)))
                    else:
                        s.symbols.discard(x)
                        c.md_subs.get(x, set()).discard(s)
            except BadRequest as e:
                s.push_raw(orjson.dumps(e.body(req_id_of(m))))

        await serve_ws(ws, s, handle)

    return app
