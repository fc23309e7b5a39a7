"""LOBSTER files: a byte-level reader for message and orderbook files, and a replay of the
messages through the engine's book that writes the orderbook file's rows.

Files (lobsterdata.com; ../shared/data/lobster_*/README.md)
--------------------------------------------------------
*Message file*, 6 columns: time (seconds after midnight, a decimal string with 3 to 9+
decimals), type (1 new limit order, 2 partial cancel, 3 delete, 4 visible execution, 5 hidden
execution, 6 cross trade, 7 trading halt), order id, size (shares), price (dollars x 10,000),
direction (+1 buy side, -1 sell side; for executions the resting order's side).
``read_messages`` gives SoA columns: ``time_ns`` int64 (parsed from the text exactly, never
through a float: the fraction is padded to 9 digits and digits beyond the 9th are truncated,
so ``43002.632812672004`` is 43,002,632,812,672 ns), ``type`` int8, ``order_id`` int64,
``size`` int64, ``price`` int64, ``direction`` int8.

*Orderbook file*, 4 N columns: ``ask_price_k, ask_size_k, bid_price_k, bid_size_k`` for
k = 1..N; an empty level is ``9999999999,0`` (ask) or ``-9999999999,0`` (bid). Row i is the
book after message i. ``read_orderbook`` gives ``LobsterBook.rows``, int64[n, 4 N] in the
file's column order (``columns()`` names them).

Both readers run one numba pass over the raw bytes. Bad input raises ``LobsterError`` (an
``InputError``, so a ``ValueError``) naming the file, the 1-based LINE and the problem: a wrong
number of columns, a field that is not a number, an unknown event type, a direction other than
+-1, a non-positive size or price on a type 1-4 row, a negative order id, a time earlier than
the line before. ``keep_valid=True`` returns the rows before the bad line instead, with
``error`` and ``stopped_at`` (its line number) set.

The replay
----------
``replay(messages, levels, orderbook=None)`` feeds the messages to ``hpte.engine.engine.Engine``
(one book, one account, STP off) and returns the top ``levels`` after every message in the
orderbook file's layout and units:

* type 1 -> NEW LIMIT GTC with the message's id, side, price and size;
* type 2 (size = shares removed) -> REPLACE to the reduced quantity at the same price (the
  engine keeps the order's priority), CANCEL if nothing is left;
* type 3 -> CANCEL (if the replay held the order with more shares than the delete names, the
  rest was someone else's all along and stays in the level, moved to its seed order);
* type 4 -> REPLACE down by the executed size, CANCEL when fully executed;
* types 5 (hidden execution), 6 (cross) and 7 (halt) -> nothing: the visible book is unchanged.

So every message changes its level's total by exactly its size, which is LOBSTER's own
delta-consistency (``orderbook[i] = orderbook[i-1] +- size`` at the message's price and side).
Which *orders* carry a level's quantity only matters for later messages that name them: a
reduction (types 2-4) is applied to the named order first; what the replay cannot attribute
to it (an id the replay never saw: an order that rested before the file starts or entered the
book outside the requested levels) is taken from the level's *seed* order (below) and then
from the level's other known orders, oldest first. Shares the level does not have are counted
(``qty_missing``): that happens without the orderbook file, or when the very first message
reduces a level (nothing is known before row 1). A new order never crosses in LOBSTER, so
opposite levels that a type-1 order would cross are stale and are removed first (counted as
``uncrossed``; this never happens on the AMZN sample).

The learning rule (what the replay may take from the orderbook file)
--------------------------------------------------------------------
LOBSTER's message file holds only the events inside the requested window of N levels. Orders
that rested before 09:30, orders that joined or left a level while it was deeper than level N,
and cancels of orders while they were deeper, are not in it. The replay's own book is therefore
exact inside its visible window and unknowable beyond it. With the orderbook file the replay
learns exactly what comes from beyond, and nothing else:

1. After applying message i, on each side, the *learnable region* is the set of prices strictly
   worse than the replay's own N-th visible level **at row i-1** (before message i). If the
   replay showed fewer than N levels on that side at row i-1, the whole side was visible and
   nothing is learnable. Before row 1 the replay has seen nothing, so at row 1 the whole book is
   learnable (this is how the pre-09:30 book comes in).
2. Every level of the file's row i whose price lies in the region and whose size differs from
   the replay's quantity at that price is *learned*: the replay's quantity there is set to the
   file's, by adding a synthetic seed order (id ``SEED_BIT | k``, which no LOBSTER id can
   collide with) for hidden quantity, or by removing quantity that left unseen (seed first).
3. A level that the replay now shows among its top N, in the region, and that the file's row i
   does not have at all is stale (its orders left while unseen): it is removed (learned as 0).
4. Nothing inside the region's boundary is ever taken from the file: levels that were visible at
   row i-1, and prices better than them, change only through messages. If the replay then
   disagrees with the file, that is reported as a mismatch, not repaired.

Why this is enough: any event at a price at or better than the N-th visible level changes the
visible book, so LOBSTER writes it; events it leaves out happen strictly beyond that level, and
the N-th level's price cannot move without a written message. So between rows i-1 and i only
the region can hold quantity the replay does not know, and the rule learns it exactly when it
becomes visible. A level that comes back into view with the quantity the replay remembers is
not learned again. The rule never looks at the file's row i-1, only at the replay's own.

Every learned level is logged (row, side, price, the replay's quantity before, the file's
quantity after) in ``ReplayResult.learned``. On the AMZN 2012-06-21 level-5 day the replay equals
the file on all 155,935 rows while learning 15,337 levels on 12,052 rows (7.7 % of the rows):
the 10 levels of row 1, then 6,865 levels with hidden quantity added (3,158 of them unknown to
the replay until then), 4,140 with quantity that left unseen removed and 4,322 stale levels
removed (+1,004,509 / -893,323 shares, 5,970 seed orders). For comparison, the data README
counts 12,051 rows where a price-level replay from row 1 differs from the file, each one a
level entering from beyond level 5. Without the orderbook file nothing is learned; rows whose
visible prices do not change still satisfy delta-consistency exactly.

Pipeline and speed: the planner kernel (``hpte.kernels.md.lobster.lobster_plan_cpu``) turns
messages into engine order rows (it tracks each order's open quantity, since LOBSTER's
reductions are relative and the engine's REPLACE takes the new quantity, and the level totals
that the rule compares); the engine matches them in chunks of ``chunk_messages`` messages; a
second kernel rebuilds the top N after every message from the engine's L2 deltas
(``Result.deltas``). The rows written are the engine's; the replay checks that they equal the
planner's view on every row and that the engine neither filled nor rejected anything.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hpte.kernels.md import lobster as K

from hpte.engine import schema as S
from hpte.engine.engine import Engine
from hpte.engine.io import InputError

__all__ = [
    "LobsterBook", "LobsterError", "LobsterMessages", "ReplayResult", "format_orderbook",
    "parse_messages", "parse_orderbook", "read_messages", "read_orderbook", "replay", "warm_up",
    "write_orderbook",
]

MESSAGE_COLUMNS = ("time", "type", "order_id", "size", "price", "direction")
EMPTY_ASK_PX = K.EMPTY_ASK_PX
EMPTY_BID_PX = K.EMPTY_BID_PX
SEED_BIT = int(K.SEED_BIT)


class LobsterError(InputError):
    """Bad LOBSTER input; ``line`` is the 1-based line of the file (None when none applies)."""

    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.line = line


# ---------------------------------------------------------------------------------------------
# Readers
# ---------------------------------------------------------------------------------------------
@dataclass
class LobsterMessages:
    """A message file as SoA columns (all length n, row i = line i + 1)."""
    time_ns: np.ndarray     # int64, ns after midnight
    type: np.ndarray        # int8, 1..7
    order_id: np.ndarray    # int64 (>= 0)
    size: np.ndarray        # int64, shares
    price: np.ndarray       # int64, dollars x 10,000
    direction: np.ndarray   # int8, +1 buy side / -1 sell side
    path: str | None = None
    error: str | None = None        # keep_valid: why reading stopped
    stopped_at: int | None = None   # keep_valid: 1-based line of the bad line

    def __len__(self) -> int:
        return len(self.type)

    def columns(self) -> dict[str, np.ndarray]:
        return {"time_ns": self.time_ns, "type": self.type, "order_id": self.order_id,
                "size": self.size, "price": self.price, "direction": self.direction}

    def head(self, n: int) -> "LobsterMessages":
        """The first n rows."""
        return LobsterMessages(**{k: v[:n] for k, v in self.columns().items()}, path=self.path)


@dataclass
class LobsterBook:
    """An orderbook file: ``rows`` int64[n, 4 levels], ask_px, ask_sz, bid_px, bid_sz per level."""
    rows: np.ndarray
    levels: int
    path: str | None = None
    error: str | None = None
    stopped_at: int | None = None

    def __len__(self) -> int:
        return self.rows.shape[0]

    @property
    def ask_price(self) -> np.ndarray:
        return self.rows[:, 0::4]

    @property
    def ask_size(self) -> np.ndarray:
        return self.rows[:, 1::4]

    @property
    def bid_price(self) -> np.ndarray:
        return self.rows[:, 2::4]

    @property
    def bid_size(self) -> np.ndarray:
        return self.rows[:, 3::4]

    def columns(self) -> dict[str, np.ndarray]:
        """Named columns (``ask_price_1``, ``ask_size_1``, ``bid_price_1``, ...), as views."""
        names = ("ask_price", "ask_size", "bid_price", "bid_size")
        return {f"{names[c % 4]}_{c // 4 + 1}": self.rows[:, c] for c in range(self.rows.shape[1])}

    def head(self, n: int) -> "LobsterBook":
        return LobsterBook(self.rows[:n], self.levels, self.path)


def _bytes(data) -> np.ndarray:
    """Read-only uint8 view (one kernel signature whatever the source)."""
    if isinstance(data, np.ndarray):
        a = data.view(np.uint8).reshape(-1)
    else:
        a = np.frombuffer(data, dtype=np.uint8)
    a = a.view()
    a.flags.writeable = False
    return a


def _load(path: str | Path) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise LobsterError(f"{p}: no such file")
    return _bytes(np.fromfile(p, dtype=np.uint8))


def _line_text(buf: np.ndarray, row: int) -> str:
    """Text of 0-based line `row` (for error messages; cut at 80 characters)."""
    nl = np.flatnonzero(buf == 10)
    start = 0 if row == 0 else int(nl[row - 1]) + 1
    ends = nl[nl >= start]
    end = int(ends[0]) if ends.size else len(buf)
    text = bytes(buf[start:end]).decode("ascii", "replace").rstrip("\r")
    return text if len(text) <= 80 else text[:77] + "..."


def _problem(code: int, col: int, value: int, ncols: int, names, buf, row: int) -> str:
    text = _line_text(buf, row)
    if code == K.E_COLUMNS:
        return f"expected {ncols} columns, found {value}: {text!r}"
    field = text.split(",")[col - 1] if 0 < col <= len(text.split(",")) else ""
    cname = names[col - 1] if names and 0 < col <= len(names) else f"column {col}"
    if code == K.E_NOT_NUMBER:
        return f"column {col} ({cname}) is not a number: {field!r}"
    if code == K.E_RANGE:
        return f"column {col} ({cname}) has too many digits: {field!r}"
    if code == K.E_TYPE:
        return f"unknown event type {value} (LOBSTER types are 1 to 7): {text!r}"
    if code == K.E_DIRECTION:
        return f"direction {value} is not 1 or -1: {text!r}"
    if code == K.E_SIZE:
        return f"size {value} must be positive on a type 1-4 row: {text!r}"
    if code == K.E_PRICE:
        return f"price {value} must be positive on a type 1-4 row: {text!r}"
    if code == K.E_ORDER_ID:
        return f"order id {value} is negative: {text!r}"
    if code == K.E_TIME_ORDER:
        return f"time {field} is earlier than the previous line's"
    return f"parser status {code}"  # pragma: no cover


def _raise_or_keep(name: str, rows: int, code: int, col: int, value: int, ncols: int, names, buf,
                   keep_valid: bool) -> tuple[str | None, int | None]:
    if code == K.E_OK:
        return None, None
    line = rows + 1
    msg = f"{name}: line {line}: {_problem(code, col, value, ncols, names, buf, rows)}"
    if not keep_valid:
        raise LobsterError(msg, line)
    return msg, line


def parse_messages(data, *, name: str = "<messages>", keep_valid: bool = False) -> LobsterMessages:
    """Parse message-file bytes (bytes, bytearray, memoryview or uint8 array)."""
    buf = _bytes(data)
    cap = int(np.count_nonzero(buf == 10)) + 1
    cols = (np.empty(cap, np.int64), np.empty(cap, np.int8), np.empty(cap, np.int64),
            np.empty(cap, np.int64), np.empty(cap, np.int64), np.empty(cap, np.int8))
    rows, code, col, value = K.parse_messages_cpu(buf, *cols)
    err, line = _raise_or_keep(name, rows, code, col, value, 6, MESSAGE_COLUMNS, buf, keep_valid)
    return LobsterMessages(*(c[:rows] for c in cols), path=name, error=err, stopped_at=line)


def read_messages(path: str | Path, *, keep_valid: bool = False) -> LobsterMessages:
    """Read a LOBSTER message file into SoA columns (see the module docstring)."""
    return parse_messages(_load(path), name=str(path), keep_valid=keep_valid)


def parse_orderbook(data, *, levels: int | None = None, name: str = "<orderbook>",
                    keep_valid: bool = False) -> LobsterBook:
    """Parse orderbook-file bytes; ``levels`` None takes it from the first line."""
    buf = _bytes(data)
    if levels is None:
        if buf.size == 0:
            raise LobsterError(f"{name}: empty file (the number of levels cannot be inferred)")
        nl = np.flatnonzero(buf[: 1 << 16] == 10)
        first = buf[: int(nl[0])] if nl.size else buf[: 1 << 16]
        ncols = int(np.count_nonzero(first == 44)) + 1
        if ncols % 4:
            raise LobsterError(f"{name}: line 1: expected 4 columns per level, found {ncols} columns", 1)
        levels = ncols // 4
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    ncols = 4 * levels
    cap = int(np.count_nonzero(buf == 10)) + 1
    out = np.empty((cap, ncols), np.int64)
    rows, code, col, value = K.parse_orderbook_cpu(buf, ncols, out)
    names = [f"{('ask_price', 'ask_size', 'bid_price', 'bid_size')[c % 4]}_{c // 4 + 1}" for c in range(ncols)]
    err, line = _raise_or_keep(name, rows, code, col, value, ncols, names, buf, keep_valid)
    return LobsterBook(out[:rows], levels, path=name, error=err, stopped_at=line)


def read_orderbook(path: str | Path, *, levels: int | None = None, keep_valid: bool = False) -> LobsterBook:
    """Read a LOBSTER orderbook file (``levels`` None: inferred from the first line)."""
    return parse_orderbook(_load(path), levels=levels, name=str(path), keep_valid=keep_valid)


def _format(rows: np.ndarray) -> np.ndarray:
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    if rows.ndim != 2:
        raise ValueError(f"rows must be 2-D, got shape {rows.shape}")
    out = np.empty(K.format_len_cpu(rows), np.uint8)
    return out[: K.format_rows_cpu(rows, out)]


def format_orderbook(rows: np.ndarray) -> bytes:
    """int64[n, 4 N] rows as the orderbook file's bytes (integers, ',', LF after every row)."""
    return _format(rows).tobytes()


def write_orderbook(path: str | Path, rows: np.ndarray) -> Path:
    """Write rows as a LOBSTER orderbook file."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    _format(rows).tofile(p)
    return p


# ---------------------------------------------------------------------------------------------
# Replay
# ---------------------------------------------------------------------------------------------
@dataclass
class ReplayResult:
    """What ``replay`` returns.

    rows : int64[n, 4 levels], the engine's top ``levels`` after every message, in the
        orderbook file's layout (``write_orderbook`` writes it).
    learned : dict of columns, one row per learned level: ``row`` (0-based message row = file
        line - 1), ``side`` (+1 bid, -1 ask), ``price``, ``before`` (the replay's quantity),
        ``after`` (the file's; 0 = a stale level removed).
    stats : counters (see ``STAT_NAMES``) and engine figures.
    mismatched_rows / first_mismatch : with an orderbook file, rows that differ from it and the
        first one (0-based); None without.
    seconds : wall time of the phases (prepare, plan, engine, rows, total).
    engine : the Engine after the last message (its book is the one the rows come from).
    """
    rows: np.ndarray
    levels: int
    learned: dict
    stats: dict
    mismatched_rows: int | None = None
    first_mismatch: int | None = None
    seconds: dict = field(default_factory=dict)
    engine: Engine | None = None

    @property
    def learned_levels(self) -> int:
        return len(self.learned["row"])

    @property
    def learned_rows(self) -> int:
        return self.stats["learned_rows"]


STAT_NAMES = {
    "seeds": K.SC_SEEDS, "learned_qty_added": K.SC_LEARN_ADD, "learned_qty_removed": K.SC_LEARN_DEL,
    "learned_rows": K.SC_LEARN_ROWS, "unknown_id_reductions": K.SC_UNKNOWN,
    "qty_from_seeds": K.SC_FROM_SEED, "qty_from_other_orders": K.SC_FROM_OTHERS,
    "qty_missing": K.SC_SHORT, "uncrossed_levels": K.SC_UNCROSSED, "duplicate_ids": K.SC_DUPLICATE,
    "delete_residue_to_seed": K.SC_TRANSFER, "known_id_elsewhere": K.SC_ELSEWHERE,
    "resting_at_end": K.SC_REST,
}


def _price_universe(parts: list[np.ndarray]) -> tuple[np.ndarray, callable]:
    """Sorted distinct prices and a function price array -> rank array."""
    allp = [p for p in parts if p.size]
    if not allp:
        return np.zeros(1, np.int64), lambda a: np.zeros(a.shape, np.int64)
    lo = min(int(p.min()) for p in allp)
    hi = max(int(p.max()) for p in allp)
    span = hi - lo + 1
    if span <= 1 << 22:  # a dense table: two gathers instead of a sort
        mark = np.zeros(span, np.bool_)
        for p in allp:
            mark[p - lo] = True
        prices = (np.flatnonzero(mark) + lo).astype(np.int64)
        rank_of = np.cumsum(mark, dtype=np.int32) - 1
        return prices, lambda a: rank_of[a - lo]
    prices = np.unique(np.concatenate(allp)).astype(np.int64)
    return prices, lambda a: np.searchsorted(prices, a).astype(np.int64)


def _pow2(x: int) -> int:
    return 1 << max(6, int(x - 1).bit_length())


def _alloc_plan(L: int, pool: int) -> K.PlanState:
    T = _pow2(2 * pool)
    sc = np.zeros(K.NSC, np.int64)
    sc[K.SC_FREE] = -1
    sc[K.SC_MASK] = T - 1
    lv = np.zeros((2, L, K.NLV), np.int64)
    lv[:, :, K.LV_HEAD] = -1
    lv[:, :, K.LV_TAIL] = -1
    return K.PlanState(
        vq=np.zeros((2, L), np.int64), vbm=np.zeros((2, L // 64 + 1), np.uint64),
        vbest=np.full(2, -1, np.int64), lv=lv, od=np.zeros((pool, K.NOD), np.int64),
        tab=np.zeros(T, np.int32), oid=np.zeros(pool, np.uint64), wlim=np.array([L, -1], np.int64), sc=sc)


def _grow_rows(a: np.ndarray, cap: int) -> np.ndarray:
    """A row buffer of `cap` rows holding a's rows first."""
    new = np.empty((cap, a.shape[1]), np.int64)
    new[: len(a)] = a
    return new


_DCOL = {name: c for c, (name, _dt) in enumerate(S.DELTA_COLUMNS)}
_ECOL = {name: c for c, (name, _dt) in enumerate(S.EVENT_COLUMNS)}


def replay(messages: LobsterMessages, levels: int, orderbook: LobsterBook | None = None, *,
           chunk_messages: int = 1 << 15) -> ReplayResult:
    """Replay ``messages`` through the engine and return its top ``levels`` after every message.

    With ``orderbook`` (row i = the book after message i; it may have more levels than
    ``levels``: the first ``levels`` are used) the replay learns edge levels by the rule in the
    module docstring and reports the rows where it still differs from the file. Messages are
    planned and sent to ``Engine.submit`` in chunks of at most ``chunk_messages`` (the buffers
    are reused, so they stay in cache).
    """
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    if chunk_messages < 1:
        raise ValueError(f"chunk_messages must be >= 1, got {chunk_messages}")
    n = len(messages)
    N = int(levels)
    t0 = time.perf_counter()
    typ = messages.type
    vis = (typ >= 1) & (typ <= 4)
    parts = [messages.price[vis]]
    if orderbook is not None:
        if orderbook.levels < N:
            raise LobsterError(f"{orderbook.path}: has {orderbook.levels} levels, fewer than the {N} asked for")
        if len(orderbook) != n:
            raise LobsterError(
                f"{orderbook.path}: {len(orderbook)} rows, but the message file has {n} "
                f"(row i of the orderbook file is the book after message i)")
        E = np.ascontiguousarray(orderbook.rows, dtype=np.int64)
        ask_px, bid_px = E[:, 0:4 * N:4], E[:, 2:4 * N:4]
        ask_ok, bid_ok = ask_px != EMPTY_ASK_PX, bid_px != EMPTY_BID_PX
        parts += [ask_px[ask_ok], bid_px[bid_ok]]
    prices, to_rank = _price_universe(parts)
    L = len(prices)
    rank = np.full(n, -1, np.int64)
    rank[vis] = to_rank(messages.price[vis])
    if orderbook is not None:
        e_rank = np.full((n, 2, N), -1, np.int32)
        e_rank[:, 0, :][bid_ok] = to_rank(bid_px[bid_ok])
        e_rank[:, 1, :][ask_ok] = to_rank(ask_px[ask_ok])
    else:
        E = np.zeros((0, 4 * N), np.int64)
        e_rank = np.full((0, 2, N), -1, np.int32)
    t_prep = time.perf_counter()

    M = int(min(chunk_messages, max(n, 1)))
    P = _alloc_plan(L, int(np.count_nonzero(typ == 1)) + 1)
    O = np.empty((2 * M + 1024, K.NOC), np.int64)
    G = np.empty((256 + n // 16, K.NLG), np.int64)
    plan_rows = np.empty((M, 4 * N), np.int64)
    rows = np.empty((n, 4 * N), np.int64)
    vq, vbm, vbest = np.zeros((2, L), np.int64), np.zeros((2, L // 64 + 1), np.uint64), np.full(2, -1, np.int64)
    span = int(prices[-1] - prices[0]) + 1
    eng = Engine(stp="none", max_levels=max(1 << 24, -(-2 * span // 4096) * 4096))
    no_deltas = np.zeros((0, len(S.DELTA_COLUMNS)), np.int64)
    ts, oid, size, direc = messages.time_ns, messages.order_id, messages.size, messages.direction
    has_e = orderbook is not None
    pos = 0
    calls = engine_rows = 0
    t_plan = t_engine = t_rows = 0.0
    while pos < n:
        P.sc[K.SC_K] = 0
        a = time.perf_counter()
        st, nxt = K.lobster_plan_cpu(P, O, G, pos, min(n, pos + M), ts, typ, oid, size, rank, direc,
                                     e_rank, E, has_e, N, prices, plan_rows)
        b = time.perf_counter()
        t_plan += b - a
        k = int(P.sc[K.SC_K])
        seq0 = eng.seq
        D = no_deltas
        row_of = np.ascontiguousarray(O[:k, K.OC_ROW])
        if k:
            res = eng.submit({"ts_ns": O[:k, K.OC_TS], "order_id": O[:k, K.OC_OID].view(np.uint64),
                              "side": O[:k, K.OC_SIDE].astype(np.int8), "price_ticks": O[:k, K.OC_PX],
                              "qty": O[:k, K.OC_QTY], "action": O[:k, K.OC_ACT].astype(np.uint8)})
            _check_engine(res, row_of, seq0)
            D = res.deltas.raw
            calls += 1
            engine_rows += k
        c = time.perf_counter()
        t_engine += c - b
        bad, differ, used = K.rows_from_deltas_cpu(D, _DCOL["seq"], _DCOL["side"], _DCOL["price_ticks"], _DCOL["qty"],
                                             seq0, row_of, pos, nxt, prices, vq, vbm, vbest, N, rows, plan_rows)
        t_rows += time.perf_counter() - c
        if bad >= 0:  # pragma: no cover - the planner only uses prices of the universe
            raise RuntimeError(f"engine delta at price {int(D[bad, _DCOL['price_ticks']])} outside the replay's prices")
        if used != len(D):  # pragma: no cover - deltas of rows outside the chunk
            raise RuntimeError(f"engine delta {used} of {len(D)} belongs to no message row of the chunk")
        if differ >= 0:  # pragma: no cover - an engine/planner disagreement
            raise RuntimeError(f"the engine's book and the replay plan disagree after message {differ + 1}: "
                               f"engine {rows[differ].tolist()} plan {plan_rows[differ - pos].tolist()}")
        pos = nxt
        if st == K.ST_NEED_LOG:
            G = _grow_rows(G, 2 * len(G))
        elif st == K.ST_NEED_ROWS and k == 0:
            O = _grow_rows(O[:0], 2 * len(O) + 16 + 8 * N + 3 * int(P.sc[K.SC_REST]))
    t_end = time.perf_counter()

    nlog = int(P.sc[K.SC_NLOG])
    learned = {"row": G[:nlog, K.LG_ROW].copy(), "side": G[:nlog, K.LG_SIDE].astype(np.int8),
               "price": G[:nlog, K.LG_PRICE].copy(), "before": G[:nlog, K.LG_BEFORE].copy(),
               "after": G[:nlog, K.LG_AFTER].copy()}
    stats = {name: int(P.sc[i]) for name, i in STAT_NAMES.items()}
    stats.update(learned_levels=nlog, engine_rows=engine_rows, engine_calls=calls, prices=L,
                 messages=n, levels=N)
    mism = first = None
    if has_e:
        diff = np.flatnonzero(np.any(rows != E[:, : 4 * N], axis=1))
        mism = int(diff.size)
        first = int(diff[0]) if diff.size else None
    seconds = {"prepare": t_prep - t0, "plan": t_plan, "engine": t_engine, "rows": t_rows,
               "compare": time.perf_counter() - t_end, "total": time.perf_counter() - t0}
    return ReplayResult(rows=rows, levels=N, learned=learned, stats=stats, mismatched_rows=mism,
                        first_mismatch=first, seconds=seconds, engine=eng)


def _check_engine(res, row_of: np.ndarray, seq0: int) -> None:
    """The replay never crosses and never names an order the engine does not hold."""
    if res.fills.n_rows:  # pragma: no cover - the planner uncrosses first
        raise RuntimeError(f"the engine filled {res.fills.n_rows} times during a LOBSTER replay")
    E = res.events.raw
    rej = np.flatnonzero(E[:, _ECOL["event"]] == S.EV_REJECTED)
    if rej.size:  # pragma: no cover - a planner bug
        e = E[rej[0]]
        k = int(e[_ECOL["seq"]]) - seq0
        raise RuntimeError(
            f"the engine rejected order {int(np.uint64(e[_ECOL['order_id']]))} "
            f"({S.REASON_NAMES.get(int(e[_ECOL['reason']]), '?')}) planned for message {int(row_of[k]) + 1}")


_WARM = (b"34200.0,1,1,10,1000000,1\n34200.1,1,2,5,1000100,-1\n34200.2,2,1,3,1000000,1\n"
         b"34200.3,4,2,5,1000100,-1\n34200.4,3,7,4,1000000,1\n34200.5,5,0,1,1000050,1\n")


def warm_up() -> None:
    """Load (or compile) every kernel the reader and the replay use, on a tiny input."""
    m = parse_messages(_WARM)
    r = replay(m, 1)
    book = parse_orderbook(format_orderbook(r.rows))
    replay(m, 1, book)



def trades_columns(messages: LobsterMessages, symbol: int = 0) -> dict[str, np.ndarray]:
    """The executions of a message file (types 4 visible, 5 hidden) in the fills layout's
    trade columns (ts_ns, symbol, price_ticks, qty, taker_side, maker_order_id), so that
    ``hpte md bars`` can aggregate them. ts_ns is ns after midnight; price_ticks is LOBSTER's
    dollars x 10,000; the taker is the side opposite the resting order's direction."""
    m = (messages.type == 4) | (messages.type == 5)
    return {
        "ts_ns": messages.time_ns[m].astype(np.int64),
        "symbol": np.full(int(m.sum()), symbol, np.uint32),
        "price_ticks": messages.price[m].astype(np.int64),
        "qty": messages.size[m].astype(np.int64),
        "taker_side": (-messages.direction[m]).astype(np.int8),
        "maker_order_id": messages.order_id[m].astype(np.uint64),
    }
