"""Gateway state: the Engine and everything derived from its inputs and outputs.

Everything here changes only in ``apply_orders`` / ``apply_command``, which take a journaled
record (the batch as matched, with engine order ids) and the engine's outputs, so that live
serving and journal replay run the same code and reach the same state bit for bit.

Order ids: each account has its own namespace of client order ids (any uint64). The gateway maps
(account, client id) to an engine order id, assigned densely from 1; a cancel or replace of an
id the account never used gets a fresh engine id, which the engine rejects UNKNOWN_ORDER. So one
account can neither see nor touch another's orders, and ids never collide across accounts.
"""
from __future__ import annotations

from collections import deque

import numpy as np
import pyarrow as pa

from hpte.engine import schema as S
from hpte.engine.engine import Engine

from .protocol import OT_NAMES

# the order columns the gateway takes (it has no good-till-date or iceberg entry yet: expire_ts_ns
# and display_qty are left out; parse_arrow_frame refuses non-zero ones) and the client's order id. stop_price_ticks was added after the first journals were
# written; a record without it replays with its default (0: no stop), as Engine.submit does.
JOURNAL_SCHEMA = pa.schema([f for f in S.ORDER_SCHEMA if f.name not in ("expire_ts_ns", "stop_price_ticks",
                                                                                "display_qty")]
                           + [pa.field("client_order_id", pa.uint64(), nullable=False)]
                           + [f for f in S.ORDER_SCHEMA if f.name == "stop_price_ticks"])
LIVE = ("OPEN", "PARTIALLY_FILLED")
TRADES_KEPT = 100_000             # default of max_trades_kept (per symbol)
FINISHED_KEPT = 1_000_000         # default of max_finished_orders (whole server)
# order table row: [account, client id, symbol, side, price, qty, leaves, filled, status, reason,
#                   order_type, tif, filled notional (sum of fill price_ticks x qty: ticks x lots),
#                   ts_ns of its ACCEPTED event, stop price (0: not a stop order), triggered
#                   (a stop order whose TRIGGERED event came)]
(O_ACCT, O_COID, O_SYM, O_SIDE, O_PX, O_QTY, O_LEAVES, O_FILLED, O_STATUS, O_REASON, O_OT, O_TIF,
 O_NOTIONAL, O_TS, O_STOP, O_TRIG) = range(16)
O_COLS = 16
# what a row of an older snapshot (before the notional/time and the stop columns) reads as
_O_PAD = (None, None, 0, False)

_EV = S.EVENT_NAMES
_RN = S.REASON_NAMES


def engine_state(e: Engine) -> dict:
    """The Engine's attributes minus the per-process caches (compiled entry points)."""
    return {k: v for k, v in e.__dict__.items() if k not in ("_one", "_gpu")}


def engine_from_state(d: dict) -> Engine:
    e = Engine.__new__(Engine)
    e.__dict__.update(d)
    e._one = None
    e._gpu = None
    return e


class Gateway:
    """Memory is bounded by the live orders plus `max_finished` finished orders (filled,
    cancelled, expired or rejected; the oldest finished are forgotten first, with their client
    ids) plus `max_trades` trades per symbol. Both limits are part of the journal's metadata:
    eviction is driven by the journaled inputs alone, so replay forgets exactly what the live
    server forgot."""

    def __init__(self, symbols, stp: str = "none", risk=None, max_finished: int = FINISHED_KEPT,
                 max_trades: int = TRADES_KEPT):
        self.engine = Engine(stp=stp, risk=risk)
        self.symbols = tuple(symbols)
        self.ids: dict[int, int] = {}          # account << 64 | client id -> engine id
        self.next_eid = 1
        self.orders: dict[int, list] = {}      # engine id -> order table row
        self.max_finished = int(max_finished)
        self.max_trades = int(max_trades)
        self.finished: deque[int] = deque()    # engine ids in the order they finished
        self.forgotten: dict[int, int] = {}    # account -> finished orders no longer held
        self.md_seq = {s: 0 for s in self.symbols}
        self.trade_seq = {s: 0 for s in self.symbols}
        self.trades = {s: deque(maxlen=self.max_trades) for s in self.symbols}
        self.recno = 0                         # next journal record number
        self.batches = 0

    # ---- snapshots -------------------------------------------------------------------------
    def snapshot(self) -> dict:
        d = dict(self.__dict__)
        d["engine"] = engine_state(self.engine)
        return d

    @classmethod
    def restore(cls, d: dict) -> "Gateway":
        g = cls.__new__(cls)
        g.__dict__.update(d)
        g.engine = engine_from_state(d["engine"])
        for o in g.orders.values():        # a snapshot from before the notional, time or stop columns
            if len(o) < O_COLS:
                o.extend(_O_PAD[len(o) - O_COLS:])
        return g

    # ---- the client's ids ------------------------------------------------------------------
    def lookup(self, account: int, coid: int) -> int | None:
        """Engine id of an account's client order id (None: the account has no such order)."""
        return self.ids.get((account << 64) | coid)

    def order(self, account: int, coid: int) -> list | None:
        eid = self.lookup(account, coid)
        return None if eid is None else self.orders.get(eid)

    def translate(self, account: np.ndarray, coid: np.ndarray, action: np.ndarray, symbol: np.ndarray,
                  side: np.ndarray, price: np.ndarray, qty: np.ndarray, sym_given: np.ndarray) -> np.ndarray:
        """Engine ids for a batch about to be journaled (updates the id map for NEW rows). For
        CANCEL / REPLACE rows without a symbol (sym_given 0) the order's own symbol and side are
        filled in, in place."""
        n = len(coid)
        ids, orders = self.ids, self.orders
        nxt = self.next_eid
        acc_l, coid_l = account.tolist(), coid.tolist()
        if n >= self.BULK_MIN and (action == S.ACT_NEW).all():     # a bulk entry of new orders
            keys = [(a << 64) | c for a, c in zip(acc_l, coid_l)]
            if len(set(keys)) == n and ids.keys().isdisjoint(keys):
                ids.update(zip(keys, range(nxt, nxt + n)))
                self.next_eid = nxt + n
                return np.arange(nxt, nxt + n, dtype=np.uint64)
        out = np.empty(n, np.uint64)
        fresh: dict[int, tuple[int, int]] = {}
        act_l = action.tolist()
        for i in range(len(out)):
            key = (acc_l[i] << 64) | coid_l[i]
            eid = ids.get(key)
            if act_l[i] == S.ACT_NEW:
                if eid is None:
                    eid = ids[key] = nxt
                    nxt += 1
                fresh[eid] = (int(symbol[i]), int(side[i]))
            else:
                if eid is None:
                    eid = nxt            # never used: the engine answers UNKNOWN_ORDER
                    nxt += 1
                if not sym_given[i]:
                    o = orders.get(eid)
                    if o is not None:
                        symbol[i], side[i] = o[O_SYM], o[O_SIDE]
                    elif eid in fresh:
                        symbol[i], side[i] = fresh[eid]
            out[i] = eid
        self.next_eid = nxt
        return out

    # ---- applying a record -----------------------------------------------------------------
    def apply_orders(self, cols: dict, replay: bool = False):
        """Match one journaled batch (engine columns + client_order_id). Returns
        (Result, base seq, market-data messages by symbol). In replay the id map is rebuilt
        from the record."""
        if replay:
            self._restore_ids(cols)
        base = self.engine.seq
        # the journaled columns (optional order columns the gateway does not take, such as
        # expire_ts_ns, are absent and default in Engine.submit)
        eng = {name: cols[name] for name, _dt, _r, _d in S.ORDER_COLUMNS if name in cols}
        res = self.engine.submit(eng)
        md = self._derive(res, base, cols)
        self.recno += 1
        self.batches += 1
        return res, base, md

    def _restore_ids(self, cols: dict) -> None:
        eid, coid, acct, act = (cols[k].tolist() for k in ("order_id", "client_order_id", "account", "action"))
        for e, c, a, x in zip(eid, coid, acct, act):
            if x == S.ACT_NEW:
                self.ids[(a << 64) | c] = e
        if eid:
            self.next_eid = max(self.next_eid, max(eid) + 1)

    def apply_command(self, cmd: dict):
        """Run a journaled command; returns (Result, base seq, md messages)."""
        e, op, ts = self.engine, cmd["op"], int(cmd["ts_ns"])
        base = e.seq
        if op == "halt":
            res = e.halt(ts)
        elif op == "resume":
            res = e.resume(ts)
        elif op == "kill":
            res = e.set_kill(bool(cmd["on"]), cmd.get("account"), ts)
        elif op == "end_session":
            res = e.end_session(ts)
        else:  # pragma: no cover - only the writer writes commands
            raise ValueError(f"unknown journaled command {op!r}")
        md = self._derive(res, base, None)
        self.recno += 1
        return res, base, md

    def _derive(self, res, base: int, cols: dict | None) -> dict:
        """Order table, trades and market-data messages from one result."""
        ev = res.events
        orders = self.orders
        if ev.n_rows:
            seq, oid, acct, sym, side, code, reason, px, qty, leaves, ets = (
                ev[k].tolist() for k in ("seq", "order_id", "account", "symbol", "side", "event", "reason",
                                         "price_ticks", "qty", "leaves_qty", "ts_ns"))
            if cols is not None:
                c_oid, c_act, c_coid, c_px, c_qty, c_ot, c_tif = (cols[k].tolist() for k in (
                    "order_id", "action", "client_order_id", "price_ticks", "qty", "order_type", "tif"))
                nrows = len(c_oid)
                c_stop = cols["stop_price_ticks"].tolist() if "stop_price_ticks" in cols else [0] * nrows
            EV_ACC, EV_REJ, EV_F, EV_PF, EV_C, EV_X, EV_R, EV_T, NEW = (
                S.EV_ACCEPTED, S.EV_REJECTED, S.EV_FILLED, S.EV_PARTIALLY_FILLED, S.EV_CANCELLED, S.EV_EXPIRED,
                S.EV_REPLACED, S.EV_TRIGGERED, S.ACT_NEW)
            fin = self.finished
            todo = range(len(seq))
            if cols is not None and ev.n_rows >= self.BULK_MIN:
                todo = self._bulk_accept(ev, base, cols, oid)
            for j in todo:
                c = code[j]
                o = orders.get(oid[j])
                if c == EV_ACC or (c == EV_REJ and cols is not None and (o is None or o[O_STATUS] not in LIVE)):
                    r = seq[j] - base
                    if cols is None or not 0 <= r < nrows or c_oid[r] != oid[j] or c_act[r] != NEW:
                        continue
                    orders[oid[j]] = [acct[j], c_coid[r], sym[j], side[j], c_px[r], c_qty[r], leaves[j], 0,
                                      "OPEN" if c == EV_ACC else "REJECTED", _RN[reason[j]], c_ot[r], c_tif[r],
                                      0, ets[j], c_stop[r], False]
                    if c == EV_REJ:
                        fin.append(oid[j])
                elif o is None:
                    continue
                elif c == EV_F or c == EV_PF:
                    o[O_FILLED] += qty[j]
                    if o[O_NOTIONAL] is not None:
                        o[O_NOTIONAL] += px[j] * qty[j]
                    o[O_LEAVES] = leaves[j]
                    o[O_STATUS] = _EV[c]
                    if c == EV_F:
                        fin.append(oid[j])
                elif c == EV_C or c == EV_X:
                    o[O_LEAVES] = leaves[j]
                    if leaves[j] == 0:
                        if o[O_STATUS] in LIVE:
                            fin.append(oid[j])
                        o[O_STATUS] = _EV[c]
                    o[O_REASON] = _RN[reason[j]]
                elif c == EV_T:
                    o[O_TRIG] = True
                elif c == EV_R:
                    if cols is not None and not o[O_TRIG] and o[O_STOP]:    # a waiting stop: new stop price?
                        r = seq[j] - base
                        if 0 <= r < nrows and c_oid[r] == oid[j] and c_stop[r]:
                            o[O_STOP] = c_stop[r]
                    o[O_PX] = px[j]
                    o[O_QTY] = o[O_FILLED] + leaves[j]
                    o[O_LEAVES] = leaves[j]
                    if leaves[j] == 0 and o[O_STATUS] in LIVE:
                        o[O_STATUS] = "CANCELLED"
                        fin.append(oid[j])
            if len(fin) > self.max_finished:
                self._forget()
        md: dict[int, dict] = {}
        de = res.deltas
        if de.n_rows:
            for s, sd, p, q, n in zip(*(de[k].tolist() for k in ("symbol", "side", "price_ticks", "qty", "orders"))):
                if sd == 0:          # breaker status rows, not L2 levels
                    continue
                m = md.get(s)
                if m is None:
                    m = md[s] = {"deltas": [], "trades": []}
                m["deltas"].append([sd, p, q, n])
        fi = res.fills
        if fi.n_rows:
            for s, ts, p, q, sd in zip(*(fi[k].tolist() for k in ("symbol", "ts_ns", "price_ticks", "qty", "taker_side"))):
                t = self.trade_seq[s] = self.trade_seq.get(s, 0) + 1
                tr = [t, ts, p, q, sd]
                dq = self.trades.get(s)
                if dq is None:
                    dq = self.trades[s] = deque(maxlen=self.max_trades)
                dq.append(tr)
                m = md.get(s)
                if m is None:
                    m = md[s] = {"deltas": [], "trades": []}
                m["trades"].append(tr)
        for s, m in md.items():
            n = self.md_seq[s] = self.md_seq.get(s, 0) + 1
            m["type"], m["symbol"], m["seq"] = "update", s, n
        return md

    BULK_MIN = 64          # events in a result from which new orders' rows are made in bulk

    def _bulk_accept(self, ev, base: int, cols: dict, oid: list):
        """The order-table rows of this batch's accepted new orders, made at once from the
        columns (what the per-event loop does for each ACCEPTED event of a NEW row), when none
        of their engine ids is in the table already and none repeats; returns the indices of
        the events left for the loop (all of them when the bulk path does not apply). An
        order's ACCEPTED is its first event, so taking them first keeps each order's events in
        order."""
        code = ev["event"]
        acc = np.flatnonzero(code == S.EV_ACCEPTED)
        if not acc.size:
            return range(len(oid))
        r = ev["seq"][acc].astype(np.int64) - base
        ok = (r >= 0) & (r < len(cols["order_id"]))
        r = np.where(ok, r, 0)
        ok &= (cols["order_id"][r] == ev["order_id"][acc]) & (cols["action"][r] == S.ACT_NEW)
        a, r = acc[ok], r[ok]
        a_oid = ev["order_id"][a].tolist()
        orders = self.orders
        if len(set(a_oid)) != len(a_oid) or not orders.keys().isdisjoint(a_oid):
            return range(len(oid))
        n = len(a_oid)
        rows = zip(ev["account"][a].tolist(), cols["client_order_id"][r].tolist(), ev["symbol"][a].tolist(),
                   ev["side"][a].tolist(), cols["price_ticks"][r].tolist(), cols["qty"][r].tolist(),
                   ev["leaves_qty"][a].tolist(), [0] * n, ["OPEN"] * n, [_RN[x] for x in ev["reason"][a].tolist()],
                   cols["order_type"][r].tolist(), cols["tif"][r].tolist(), [0] * n, ev["ts_ns"][a].tolist(),
                   cols["stop_price_ticks"][r].tolist() if "stop_price_ticks" in cols else [0] * n, [False] * n)
        orders.update(zip(a_oid, map(list, rows)))
        rest = np.ones(len(oid), bool)
        rest[a] = False
        return np.flatnonzero(rest).tolist()

    def _forget(self) -> None:
        """Drop the oldest finished orders past `max_finished` (and their client ids: a later
        cancel of such an id is UNKNOWN_ORDER, a later new order with it is a new order). An id
        that became live again (a reused engine id) is skipped."""
        fin, orders, ids, lost = self.finished, self.orders, self.ids, self.forgotten
        while len(fin) > self.max_finished:
            eid = fin.popleft()
            o = orders.get(eid)
            if o is None or o[O_STATUS] in LIVE:
                continue
            del orders[eid]
            key = (o[O_ACCT] << 64) | o[O_COID]
            if ids.get(key) == eid:
                del ids[key]
            lost[o[O_ACCT]] = lost.get(o[O_ACCT], 0) + 1

    def retention(self, account: int) -> dict:
        """What this gateway no longer holds for an account (for the GET endpoints)."""
        return {"max_finished_orders": self.max_finished,
                "finished_orders_forgotten": self.forgotten.get(account, 0)}

    def trades_since(self, symbol: int, since: int, limit: int) -> dict:
        """Trades with trade seq > since, and the range still held (older ones are forgotten
        past max_trades per symbol): `first_held_seq` and `missing` (trades in (since,
        first_held_seq) that are no longer held)."""
        tr = self.trades.get(symbol, ())
        last = self.trade_seq.get(symbol, 0)
        first = tr[0][0] if tr else last + 1
        out = []
        if since < last:
            start = max(0, since + 1 - first)          # trade seqs are dense: index = seq - first
            for k in range(start, min(len(tr), start + limit)):
                out.append(tr[k])
        return {"symbol": symbol, "last_seq": last, "first_held_seq": first,
                "max_trades_kept": self.max_trades, "missing": max(0, first - since - 1), "trades": out}

    # ---- reads -----------------------------------------------------------------------------
    def levels(self, symbol: int, depth: int | None = None) -> dict:
        lv = self.engine.book_levels(depth)
        m = lv["symbol"] == symbol
        bids, asks = [], []
        for sd, p, q, n in zip(*(lv[k][m].tolist() for k in ("side", "price_ticks", "qty", "orders"))):
            (bids if sd == S.BUY else asks).append([p, q, n])
        return {"symbol": symbol, "seq": self.md_seq.get(symbol, 0), "bids": bids, "asks": asks}


def order_view(o: list) -> dict:
    return {"order_id": o[O_COID], "account": o[O_ACCT], "symbol": o[O_SYM],
            "side": "buy" if o[O_SIDE] == S.BUY else "sell", "price": o[O_PX], "qty": o[O_QTY],
            "leaves_qty": o[O_LEAVES], "filled_qty": o[O_FILLED], "status": o[O_STATUS],
            "reason": o[O_REASON], "order_type": OT_NAMES[o[O_OT]],
            "tif": ("gtc", "ioc", "fok", "day")[o[O_TIF]], "filled_notional": o[O_NOTIONAL], "ts_ns": o[O_TS],
            "stop_price": o[O_STOP], "triggered": o[O_TRIG]}
