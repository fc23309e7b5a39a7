"""The order-entry core: sessions, the request queue and the single writer.

Adapters (REST, WebSocket JSON, WebSocket Arrow frames) authenticate a key, validate a message
into rows and call ``Core.submit``; they never touch the Engine. One task, ``Core.run``, owns the
Gateway (and so the Engine): it takes every queued request in arrival order, cuts a micro-batch
(``batch_max_rows``, or whatever arrived within ``batch_wait_us``), journals it, matches it and
pushes the results into per-connection outboxes. Pushing never waits: each connection has its own
sender task, and a connection whose outbox passes its backlog limit is closed with a reason, so a
slow client never stalls the writer.

Durability (``fsync``): "always" fsyncs each record before it is matched; "batch" (the default)
writes the record before matching and fsyncs it, overlapped with matching, before any
acknowledgement of the batch goes out; "interval" fsyncs every ``fsync_interval_ms`` (a crash may
lose acknowledged orders of the last interval).
"""
from __future__ import annotations

import asyncio
import json
from bisect import bisect_left
import os
import signal
import time
from collections import deque
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa

from hpte.engine import schema as S

from . import journal as J
from .config import ApiKey, ServerConfig
from .protocol import BadRequest, rows_to_columns
from .state import JOURNAL_SCHEMA, O_COID, Gateway

CRASH_POINTS = ("torn_record", "before_match", "before_ack", "roll", "snapshot_tmp", "before_retire")


class CrashHook:
    """Crash tests: ``HPTE_SERVER_CRASH_AT=point[:n]`` SIGKILLs the server the n-th time (default
    the first) the writer reaches `point`, one of CRASH_POINTS:

        torn_record    half of an orders record written, the rest not (a torn write)
        before_match   the record durable, the batch not yet matched
        before_ack     the batch matched, no acknowledgement or report sent
        roll           at a snapshot: the journal rolled to a new segment, no snapshot written
        snapshot_tmp   the snapshot written under its temporary name, not renamed
        before_retire  the snapshot in place, the old segments not yet retired

    Unset (always, outside tests) it costs one attribute test per batch."""

    def __init__(self, spec: str):
        point, _, n = spec.partition(":")
        if point not in CRASH_POINTS:
            raise ValueError(f"HPTE_SERVER_CRASH_AT: unknown point {point!r} (one of {', '.join(CRASH_POINTS)})")
        self.point, self.left = point, int(n or 1)

    def due(self, point: str) -> bool:
        if point != self.point:
            return False
        self.left -= 1
        return self.left <= 0

    def __call__(self, point: str) -> None:
        if self.due(point):
            os.kill(os.getpid(), signal.SIGKILL)


def crash_hook() -> CrashHook | None:
    spec = os.environ.get("HPTE_SERVER_CRASH_AT")
    return CrashHook(spec) if spec else None

_EV, _RN = S.EVENT_NAMES, S.REASON_NAMES
SIDE_NAME = {S.BUY: "buy", S.SELL: "sell", 0: ""}


class Session:
    """One connection's outbox (or one REST call's). The writer calls ``push``; ``pump`` sends."""

    _next_id = 0

    def __init__(self, key: ApiKey, kind: str, backlog: int):
        Session._next_id += 1
        self.id = Session._next_id
        self.key, self.account, self.kind = key, key.account, kind
        self.backlog = backlog
        self.out: deque = deque()
        self.ready = asyncio.Event()
        self.seq = 0
        self.closed = False
        self.close_reason = ""
        self.symbols: set[int] = set()

    def push(self, msg: dict) -> None:
        if self.closed:
            return
        self.seq += 1
        msg["conn_seq"] = self.seq
        if len(self.out) >= self.backlog:      # push_raw, inlined (a message or two per order)
            self.close(f"backlog limit exceeded ({self.backlog} messages)")
            return
        self.out.append(orjson.dumps(msg))
        self.ready.set()

    def push_raw(self, data: bytes) -> None:
        if self.closed:
            return
        if len(self.out) >= self.backlog:
            self.close(f"backlog limit exceeded ({self.backlog} messages)")
            return
        self.out.append(data)
        self.ready.set()

    def push_binary(self, data: bytes) -> None:
        """A binary frame (Arrow IPC); counts towards the backlog like any message."""
        self.push_raw((data,))

    def close(self, reason: str) -> None:
        self.closed = True
        self.close_reason = reason
        self.out.clear()
        self.ready.set()

    async def pump(self, send, coalesce: int = 1 << 18) -> None:
        """Send queued messages until the session closes (send: async callable of bytes for a
        text frame, or of a 1-tuple (bytes,) for a binary frame). Text messages queued together
        go out in one frame, one JSON message per line (up to `coalesce` bytes a frame), which
        is what keeps per-frame costs off the hot path under load."""
        out = self.out
        while True:
            await self.ready.wait()
            self.ready.clear()
            if self.closed:
                return
            while out:
                first = out.popleft()
                if type(first) is tuple or not out or type(out[0]) is tuple:
                    await send(first)
                else:
                    parts, size = [first], len(first)
                    while out and type(out[0]) is not tuple and size < coalesce:
                        m = out.popleft()
                        parts.append(m)
                        size += len(m) + 1
                    await send(b"\n".join(parts))
                if self.closed:
                    return


class Request:
    __slots__ = ("session", "req_id", "rows", "cols", "n", "t0", "fut", "reports", "op", "off")

    def __init__(self, session, req_id, rows=None, cols=None, fut=None, op=None):
        self.session, self.req_id, self.rows, self.cols, self.fut, self.op = session, req_id, rows, cols, fut, op
        self.n = len(rows) if rows is not None else (len(cols["action"]) if cols is not None else 0)
        self.t0 = time.perf_counter_ns()
        self.reports = [] if fut is not None else None


class RateLimiter:
    def __init__(self):
        self.b: dict[str, list[float]] = {}

    def allow(self, key: ApiKey, n: int = 1) -> bool:
        if key.rate <= 0:
            return True
        now = time.monotonic()
        st = self.b.get(key.key)
        if st is None:
            st = self.b[key.key] = [key.burst, now]
        st[0] = min(key.burst, st[0] + (now - st[1]) * key.rate)
        st[1] = now
        if st[0] < n:
            return False
        st[0] -= n
        return True


class Histogram:
    BOUNDS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1, 1.0)

    def __init__(self, name: str, help_: str, bounds=None):
        self.name, self.help = name, help_
        self.bounds = bounds or self.BOUNDS
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.n = 0

    def observe(self, v: float, k: int = 1) -> None:
        self.counts[bisect_left(self.bounds, v)] += k      # the first bucket with v <= bound
        self.sum += v * k
        self.n += k

    def render(self) -> str:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        acc = 0
        for b, c in zip(self.bounds, self.counts):
            acc += c
            out.append(f'{self.name}_bucket{{le="{b:g}"}} {acc}')
        out.append(f'{self.name}_bucket{{le="+Inf"}} {self.n}')
        out.append(f"{self.name}_sum {self.sum:.9f}")
        out.append(f"{self.name}_count {self.n}")
        return "\n".join(out)


class Core:
    def __init__(self, cfg: ServerConfig, risk_path: Path | None = None, log=print):
        self.cfg = cfg
        self.log = log
        self.symbols = frozenset(cfg.symbols)
        self.queue: deque[Request] = deque()
        self.queued_rows = 0
        self.wake = asyncio.Event()
        self.pending: deque = deque()     # (record number after, actions, requests) awaiting fsync
        self.sync_wake = asyncio.Event()
        self.order_sessions: dict[int, set[Session]] = {}     # account -> order-entry sessions
        self.entered: dict[int, Session] = {}                 # engine id -> the connection that entered it (open orders)
        self.md_subs: dict[int, set[Session]] = {}            # symbol -> market-data sessions
        # other adapters' market-data streams (the Binance streams): fn(md, acts), called by the
        # writer with each result's market-data messages, as _fanout is
        self.md_hooks: list = []
        self.rate = RateLimiter()
        self.stopping = False
        self.risk_path = risk_path
        self.recovery_report: list[str] = []
        self.started = time.time()
        self.m = {"orders": 0, "batches": 0, "rejected_requests": 0, "snapshots": 0, "segments_retired": 0}
        self.h_batch = Histogram("hpte_batch_rows", "rows per micro-batch", (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384))
        self.h_e2e = Histogram("hpte_ack_latency_seconds", "enqueue to acknowledgement, per request")
        self.h_match = Histogram("hpte_match_seconds", "matching time per batch")
        self.h_journal = Histogram("hpte_journal_seconds", "journal write and fsync per batch")
        self._last_snap = time.monotonic()
        self._snap_batches = 0
        self.crash = crash_hook()
        self._recover()
        self._warm()

    @staticmethod
    def _warm() -> None:
        """Run a batch's Arrow conversion and IPC encoding once (nothing is journaled): the first
        pa.array of a numpy column imports pyarrow's pandas support, ~1 s here, which would
        otherwise stall the first batch after every start."""
        n = np.zeros(1, np.int64)
        rb = pa.RecordBatch.from_arrays([pa.array(n.astype(f.type.to_pandas_dtype()), type=f.type)
                                         for f in JOURNAL_SCHEMA], schema=JOURNAL_SCHEMA)
        J.decode_batch(J.encode_batch(rb))

    # ---- start: snapshot + journal replay --------------------------------------------------
    def _meta(self) -> dict:
        risk = self.risk_path.read_text() if self.risk_path is not None else None
        return {"stp": self.cfg.stp, "risk_toml": risk, "symbols": list(self.cfg.symbols),
                "max_finished_orders": self.cfg.max_finished_orders, "max_trades_kept": self.cfg.max_trades_kept}

    def _recover(self) -> None:
        d = self.cfg.journal_dir
        d.mkdir(parents=True, exist_ok=True)
        meta_p = d / "meta.json"
        meta = self._meta()
        if meta_p.exists():
            old = json.loads(meta_p.read_text())
            if old != meta:
                diff = sorted(k for k in set(old) | set(meta) if old.get(k) != meta.get(k))
                raise J.JournalError(f"{d}: the journal was written with another configuration "
                                     f"({', '.join(diff)} differ); use another journal_dir")
        else:
            tmp = meta_p.with_suffix(".tmp")
            tmp.write_text(json.dumps(meta))
            tmp.replace(meta_p)
        self.gw, nxt, rep = recover(d, archive=self.cfg.journal_archive_dir)
        self.recovery_report = rep
        for line in rep:
            self.log(line)
        self.journal = J.JournalWriter(d, nxt, self.cfg.segment_bytes)
        self.journal.crash = self.crash

    # ---- adapters call these ---------------------------------------------------------------
    def register(self, s: Session) -> None:
        self.order_sessions.setdefault(s.account, set()).add(s)

    def unregister(self, s: Session) -> None:
        s.out.clear()           # Core.entered may keep the session (of open orders) a while
        self.order_sessions.get(s.account, set()).discard(s)
        for sym in s.symbols:
            self.md_subs.get(sym, set()).discard(s)

    def subscribe(self, s: Session, symbol: int) -> dict:
        """Register for a symbol's updates and return its snapshot: both in one step between two
        batches, so the first update after it carries seq = snapshot seq + 1."""
        s.symbols.add(symbol)
        self.md_subs.setdefault(symbol, set()).add(s)
        snap = self.gw.levels(symbol)
        snap["type"] = "snapshot"
        return snap

    def submit(self, req: Request) -> None:
        if self.stopping:
            raise BadRequest(None, "the server is shutting down", "UNAVAILABLE")
        if self.queued_rows + req.n > self.cfg.max_queue_rows:
            raise BadRequest(None, f"the order queue is full ({self.cfg.max_queue_rows} rows); retry later", "OVERLOADED")
        self.queue.append(req)
        self.queued_rows += req.n
        self.wake.set()

    # ---- the writer ------------------------------------------------------------------------
    async def run(self) -> None:
        aux = None
        if self.cfg.fsync == "interval":
            aux = asyncio.ensure_future(self._sync_every())
        elif self.cfg.fsync == "batch":
            aux = asyncio.ensure_future(self._syncer())
        if aux is not None:
            def aux_done(t: asyncio.Task) -> None:
                if not t.cancelled() and t.exception() is not None:
                    self.log(f"hpte serve: error: the journal's fsync task stopped: {t.exception()!r}")
            aux.add_done_callback(aux_done)
        try:
            while not self.stopping:
                if not self.queue:
                    self.wake.clear()
                    await self.wake.wait()
                    continue
                if self.cfg.batch_wait_us and self.queued_rows < self.cfg.batch_max_rows:
                    await asyncio.sleep(self.cfg.batch_wait_us / 1e6)
                reqs, rows = [], 0
                if self.queue[0].op is not None:
                    reqs.append(self.queue.popleft())
                    self.queued_rows -= reqs[0].n
                    await self._command(reqs[0])
                else:
                    while self.queue and self.queue[0].op is None and (not reqs or rows + self.queue[0].n <= self.cfg.batch_max_rows):
                        r = self.queue.popleft()
                        reqs.append(r)
                        rows += r.n
                    self.queued_rows -= rows
                    await self._batch(reqs, rows)
                await self._maybe_snapshot()
                await asyncio.sleep(0)          # let the connections queue more before the next cut
        finally:
            if aux is not None:
                aux.cancel()

    async def _sync_every(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.fsync_interval_ms / 1000)
            if self.journal.unsynced:
                await asyncio.to_thread(self.journal.sync)

    async def _syncer(self) -> None:
        """Group commit (fsync = "batch"): while one fsync runs in a thread the writer goes on
        journaling and matching later batches; when it returns, every batch whose record it
        covered is delivered (acknowledgements, reports, market data), in record order. So no
        acknowledgement or report leaves before its record is durable, and the writer never
        waits for the disk."""
        loop = asyncio.get_running_loop()
        pending = self.pending
        while True:
            if not pending:
                self.sync_wake.clear()
                await self.sync_wake.wait()
                continue
            target = self.journal.next
            if self.journal.unsynced:
                t = time.perf_counter()
                await loop.run_in_executor(None, self.journal.sync)
                self.h_journal.observe(time.perf_counter() - t)
            while pending and pending[0][0] <= target:
                _upto, acts, reqs = pending.popleft()
                self._deliver(acts, reqs)

    def _release(self, acts: list, reqs) -> None:
        """Deliver a batch's outputs now, or (fsync = "batch") once its record is durable and
        every earlier batch delivered."""
        if self.cfg.fsync == "batch" and (self.pending or self.journal.unsynced):
            self.pending.append((self.journal.next, acts, reqs))
            self.sync_wake.set()
        else:
            self._deliver(acts, reqs)

    def _deliver(self, acts: list, reqs) -> None:
        if self.crash is not None:
            self.crash("before_ack")
        for fn, arg in acts:
            fn(arg)
        if reqs:
            now = time.perf_counter_ns()
            obs = self.h_e2e.observe
            for r in reqs:
                obs((now - r.t0) / 1e9)
                if r.fut is not None and not r.fut.done():
                    r.fut.set_result(r.reports)

    def _now(self) -> int:
        last = self.gw.engine.last_ts
        now = time.time_ns()
        return now if last is None or now > last else last

    async def _journal(self, kind: int, payload: bytes) -> None:
        """Append a record; with fsync = "always" make it durable before returning (the other
        policies sync elsewhere: the group commit, or the interval task)."""
        t = time.perf_counter()
        self.journal.append(kind, payload)
        if self.cfg.fsync == "always":
            await asyncio.to_thread(self.journal.sync)
            self.h_journal.observe(time.perf_counter() - t)
        elif self.crash is not None:
            self.journal.sync()
            self.crash("before_match")

    async def _batch(self, reqs: list[Request], n: int) -> None:
        parts, i = [], 0
        while i < len(reqs):                       # runs of JSON rows become one column set
            if reqs[i].rows is not None:
                j = i
                rows = []
                while j < len(reqs) and reqs[j].rows is not None:
                    rows.extend(reqs[j].rows)
                    j += 1
                parts.append(rows_to_columns(rows))
                i = j
            else:
                parts.append(reqs[i].cols)
                i += 1
        c = parts[0] if len(parts) == 1 else {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        if len(reqs) == 1 or len({r.session.account for r in reqs}) == 1:
            acct = np.full(n, reqs[0].session.account, np.uint32)
        else:
            acct = np.concatenate([np.full(r.n, r.session.account, np.uint32) for r in reqs])
        gw = self.gw
        sym, side = c["symbol"], c["side"]
        eid = gw.translate(acct, c["client_order_id"], c["action"], sym, side, c["price_ticks"], c["qty"], c["sym_given"])
        ts = np.full(n, self._now(), np.int64)
        cols = {"ts_ns": ts, "order_id": eid, "side": side, "price_ticks": c["price_ticks"], "qty": c["qty"],
                "action": c["action"], "order_type": c["order_type"], "tif": c["tif"], "account": acct,
                "symbol": sym, "post_only": c["post_only"], "client_order_id": c["client_order_id"],
                "stop_price_ticks": c["stop_price_ticks"]}
        rb = pa.RecordBatch.from_arrays([pa.array(cols[f.name], type=f.type) for f in JOURNAL_SCHEMA], schema=JOURNAL_SCHEMA)
        await self._journal(J.K_ORDERS, J.encode_batch(rb))
        t = time.perf_counter()
        res, base, md = gw.apply_orders(cols)
        self.h_match.observe(time.perf_counter() - t)
        self.m["orders"] += n
        self.m["batches"] += 1
        self.h_batch.observe(n)
        acts: list = []
        self._route(res, base, reqs, eid, acts)
        self._fanout(md, acts)
        self._release(acts, reqs)

    def _route(self, res, base: int, reqs: list[Request], eid: np.ndarray, acts: list) -> None:
        """The acknowledgements and execution reports of one result, as (push, message) pairs
        appended to `acts` (REST calls collect theirs in Request.reports)."""
        ev = res.events
        owner: list[Request | None] = []
        for r in reqs:                       # acknowledgements first, in arrival order
            r.off = len(owner)
            if r.fut is None:
                acts.append((r.session.push, {"type": "ack", "req_id": r.req_id, "seq": base + len(owner), "rows": r.n}))
            owner.extend([r] * r.n)
        if not ev.n_rows:
            return
        orders = self.gw.orders
        eid_l = eid.tolist()
        skip = None
        for r in reqs:        # Arrow requests: their rows' reports go back as one Arrow frame
            if r.cols is not None:
                if skip is None:
                    row = ev["seq"].astype(np.int64) - base
                    inb = (row >= 0) & (row < len(eid))
                    own = np.zeros(len(row), bool)
                    own[inb] = eid[row[inb]] == ev["order_id"][inb]
                    skip = np.zeros(len(row), bool)
                m = own & (row >= r.off) & (row < r.off + r.n)
                skip |= m
                cols = {k: ev[k][m] for k, _dt in S.EVENT_COLUMNS}
                cols["order_id"] = r.cols["client_order_id"][row[m] - r.off]
                t = pa.table({k: pa.array(v) for k, v in cols.items()})
                sink = pa.BufferOutputStream()
                with pa.ipc.new_stream(sink, t.schema) as w:
                    w.write_table(t)
                acts.append((r.session.push_binary, sink.getvalue().to_pybytes()))
        keep = np.flatnonzero(~skip) if skip is not None else None
        if skip is not None and self.entered:        # orders finished by an Arrow frame's rows
            done = skip & (ev["leaves_qty"] == 0) & (ev["event"] != S.EV_ACCEPTED)
            for oid in ev["order_id"][done].tolist():
                self.entered.pop(oid, None)
        if keep is not None and not keep.size:
            return
        cols = [ev[k] if keep is None else ev[k][keep] for k in (
            "seq", "order_id", "account", "symbol", "side", "event", "reason", "price_ticks", "qty",
            "leaves_qty", "ts_ns")]
        sessions, entered = self.order_sessions, self.entered
        EV_ACC = S.EV_ACCEPTED
        for seq, oid, acct, sym, side, code, reason, px, qty, leaves, ts in zip(*(c.tolist() for c in cols)):
            row = seq - base
            r = owner[row] if 0 <= row < len(owner) and eid_l[row] == oid else None
            if r is not None:
                coid = r.rows[row - r.off][1] if r.rows is not None \
                    else int(r.cols["client_order_id"][row - r.off])
            else:
                o = orders.get(oid)
                if o is None:
                    continue
                coid = o[O_COID]
            rep = {"type": "report", "event": _EV[code], "reason": _RN[reason], "order_id": coid,
                   "symbol": sym, "side": SIDE_NAME.get(side, ""), "price": px, "qty": qty,
                   "leaves_qty": leaves, "seq": seq, "ts_ns": ts}
            if r is not None:                # this batch's own row: to the connection that sent it
                rep["req_id"] = r.req_id
                if r.fut is not None:
                    r.reports.append(rep)
                else:
                    if code == EV_ACC and leaves:
                        entered[oid] = r.session
                    acts.append((r.session.push, rep))
                if leaves == 0 and code != EV_ACC and entered:
                    entered.pop(oid, None)
                continue
            # an order from an earlier batch (a maker fill, an expiry, a kill switch): to the
            # connection that entered it while it is open, else to every connection of the account
            s = entered.get(oid)
            if s is not None and not s.closed:
                acts.append((s.push, rep))
            else:
                for s in sessions.get(acct, ()):
                    acts.append((s.push, dict(rep)))
            if leaves == 0 and code != EV_ACC:
                entered.pop(oid, None)

    def _fanout(self, md: dict, acts: list) -> None:
        for h in self.md_hooks:
            h(md, acts)
        for sym, msg in md.items():
            subs = self.md_subs.get(sym)
            if subs:
                data = orjson.dumps(msg)
                for s in list(subs):
                    acts.append((s.push_raw, data))

    async def _command(self, req: Request) -> None:
        if req.op["op"] == "ping":        # a barrier: answered after every earlier request
            self._release([(req.session.push, {"type": "pong", "req_id": req.req_id})], ())
            return
        cmd = dict(req.op)
        cmd["ts_ns"] = self._now()
        try:
            self.gw.engine._need_risk(cmd["op"]) if cmd["op"] in ("halt", "resume", "kill") else None
        except ValueError as e:
            req.fut.set_exception(BadRequest(None, str(e), "NEEDS_RISK"))
            return
        await self._journal(J.K_COMMAND, json.dumps(cmd).encode())
        res, base, md = self.gw.apply_command(cmd)
        acts: list = []
        self._route(res, base, [], np.empty(0, np.uint64), acts)
        self._fanout(md, acts)
        req.reports = {"op": cmd["op"], "ts_ns": cmd["ts_ns"], "events": int(res.events.n_rows)}
        self._release(acts, (req,))

    async def _maybe_snapshot(self) -> None:
        self._snap_batches += 1
        if self._snap_batches < self.cfg.snapshot_every_batches and \
                time.monotonic() - self._last_snap < self.cfg.snapshot_every_s:
            return
        await self.snapshot()

    async def snapshot(self) -> None:
        """Snapshot the state at the next record number R: roll the journal so that a segment
        starts at R, write snap-R, keep the two newest snapshots, then retire (delete or
        archive) the segments wholly before the older of the two, so that a damaged newest
        snapshot still has an older one and its records to fall back on."""
        self._snap_batches = 0
        self._last_snap = time.monotonic()
        d = self.cfg.journal_dir
        await asyncio.to_thread(self.journal.roll)
        if self.crash is not None:
            self.crash("roll")
        obj = self.gw.snapshot()
        await asyncio.to_thread(J.write_snapshot, d, self.gw.recno, obj, 2, self.crash)
        self.m["snapshots"] += 1
        if self.crash is not None:
            self.crash("before_retire")
        kept = J.snapshots(d)
        if len(kept) >= 2:
            gone = await asyncio.to_thread(J.retire_segments, d, kept[-1][0], self.cfg.journal_archive_dir)
            self.m["segments_retired"] += len(gone)

    def close(self) -> None:
        self.stopping = True
        self.wake.set()
        self.journal.close()

    # ---- metrics ---------------------------------------------------------------------------
    def metrics_text(self) -> str:
        up = max(time.time() - self.started, 1e-9)
        conns = sum(len(v) for v in self.order_sessions.values())
        mds = len({s.id for v in self.md_subs.values() for s in v})
        lines = [
            "# TYPE hpte_orders_total counter", f"hpte_orders_total {self.m['orders']}",
            "# TYPE hpte_orders_per_second gauge", f"hpte_orders_per_second {self.m['orders'] / up:.3f}",
            "# TYPE hpte_batches_total counter", f"hpte_batches_total {self.m['batches']}",
            "# TYPE hpte_snapshots_total counter", f"hpte_snapshots_total {self.m['snapshots']}",
            "# TYPE hpte_journal_segments_retired_total counter",
            f"hpte_journal_segments_retired_total {self.m['segments_retired']}",
            "# TYPE hpte_queue_rows gauge", f"hpte_queue_rows {self.queued_rows}",
            "# TYPE hpte_journal_unsynced_records gauge", f"hpte_journal_unsynced_records {self.journal.unsynced}",
            "# HELP hpte_journal_pending_batches batches matched and waiting for their fsync before delivery",
            "# TYPE hpte_journal_pending_batches gauge", f"hpte_journal_pending_batches {len(self.pending)}",
            "# TYPE hpte_journal_bytes_total counter", f"hpte_journal_bytes_total {self.journal.bytes_written}",
            "# TYPE hpte_journal_next_record gauge", f"hpte_journal_next_record {self.journal.next}",
            "# TYPE hpte_connected_clients gauge",
            f'hpte_connected_clients{{kind="orders"}} {conns}', f'hpte_connected_clients{{kind="market"}} {mds}',
        ]
        for h in (self.h_batch, self.h_e2e, self.h_match, self.h_journal):
            lines.append(h.render())
        return "\n".join(lines) + "\n"


def _fresh_gateway(meta: dict, source: str) -> Gateway:
    risk = None
    if meta.get("risk_toml") is not None:
        from hpte.engine.risk.limits import RiskLimits
        risk = RiskLimits.from_toml(meta["risk_toml"], source=source)
    return Gateway(meta["symbols"], stp=meta["stp"], risk=risk,
                   max_finished=meta.get("max_finished_orders", 1 << 62),
                   max_trades=meta.get("max_trades_kept", 100_000))


def apply_record(gw: Gateway, kind: int, payload: bytes):
    """Apply one journaled record to a gateway (replay): returns (Result, base seq, md)."""
    if kind == J.K_ORDERS:
        b = J.decode_batch(payload)
        return gw.apply_orders({name: b.column(name).to_numpy() for name in b.schema.names}, replay=True)
    return gw.apply_command(json.loads(payload))


def recover(d: Path, archive: Path | None = None) -> tuple[Gateway, int, list[str]]:
    """The state of a journal directory: the newest valid snapshot plus the records after it,
    reading only the segments that hold them (a torn last record is cut off). A snapshot whose
    checksum fails, or which is past the journal's end, is skipped for the next older one;
    without any, the journal is replayed from record 0, which must still be there (or in the
    archive). Returns (gateway, next record number, report lines)."""
    meta = json.loads((d / "meta.json").read_text())
    rep: list[str] = []
    gw = None
    recs = nxt = cut = None
    for snap_recno, p in J.snapshots(d):
        blob = J.snapshot_blob(p)
        if blob is None:
            rep.append(f"recovery: snapshot {p.name} is damaged (checksum); skipped")
            continue
        try:
            recs, nxt, cut = J.read_records(d, start=snap_recno, repair=True, archive=archive)
        except J.JournalError as e:
            rep.append(f"recovery: snapshot {p.name} skipped ({e})")
            continue
        if snap_recno > nxt:
            rep.append(f"recovery: snapshot at record {snap_recno} is past the journal's end ({nxt}); skipped")
            continue
        import pickle
        gw = Gateway.restore(pickle.loads(blob))
        rep.append(f"recovery: snapshot at record {snap_recno}")
        break
    if gw is None:
        try:
            recs, nxt, cut = J.read_records(d, start=0, repair=True, archive=archive)
        except J.JournalError as e:
            raise J.JournalError(f"{e}; no valid snapshot covers the records that are missing") from None
        gw = _fresh_gateway(meta, "journal meta.json")
    if cut is not None:
        rep.insert(0, str(cut))
    k = 0
    for recno, kind, payload in recs:
        if recno < gw.recno:
            continue
        apply_record(gw, kind, payload)
        k += 1
    rep.append(f"recovery: replayed {k} records; next record {nxt}; engine seq {gw.engine.seq}")
    return gw, nxt, rep
