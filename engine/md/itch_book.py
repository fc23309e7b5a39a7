"""Order-by-order books rebuilt from NASDAQ TotalView-ITCH 5.0 messages, kept in the Engine.

    b = ItchBookBuilder(symbols=["AAPL"])
    for part in iter_itch("day.itch"):
        trades = b.feed(part)            # trades of this batch (dict of columns)
    b.l3(), b.levels(depth=5), b.summary()

    itch_book_file("day.itch", "out/")   # ``hpte md itch book``: trades.parquet, book.parquet, summary.json

Message -> engine row (one engine, STP none, every order of account 0, LIMIT GTC):

* ``A`` / ``F`` add order -> NEW (order id = order reference number, price in ticks, side B/S ->
  +1/-1);
* ``E`` / ``C`` execution of N shares and ``X`` cancel of N shares -> REPLACE to leaves - N at
  the same price (the engine keeps the order's place in its queue) or CANCEL when nothing is
  left. E/C also give a trade, taken from the message: price = the resting order's price (E)
  or the message's execution price (C), quantity N;
* ``D`` delete -> CANCEL;
* ``U`` replace -> CANCEL of the original reference + NEW of the new reference (same side, the
  message's shares and price): the order loses its priority, as ITCH specifies.

The engine matches crossing orders; an ITCH book is a record of what the exchange already
decided and may be locked or crossed (halts, auctions, quoting periods). So each stock's bids and
asks live in two engine books: engine symbol ``2 * stock_locate`` (bids) and ``2 * stock_locate +
1`` (asks). Nothing ever crosses inside the engine, which only keeps the queues; every output
names the stock by its locate code (``symbol``) and name (``stock``).

Prices: every output price (``price_ticks``) is the ITCH Price(4) integer, 1 tick = $0.0001 (the
convention of ``hpte.engine.md.itch_out``). ``tick`` (ITCH units per engine tick, default 1) only
coarsens the engine's ladders (their memory grows with a book's price span in ticks): an order
whose price is not a multiple of ``tick`` is tracked but kept out of the engine book ("off
book"), as is one the engine rejects because its ladder would exceed ``max_levels``.

State between batches (the order reference -> locate, side, price, leaves table every E/C/X/D/U
needs) is a sorted array table updated with vectorised numpy per batch; within a batch the
messages of one reference are chained with segmented cumulative sums, and U chains (A -> U -> U
...) are resolved by pointer doubling.

Anomalies are counted, never fatal:
``unknown`` - E/C/X/D/U naming a reference that is not live (orders added before the file, or
already gone); ``bad_adds`` - A/F with side other than B/S, 0 shares or price 0 (ignored), or a U
whose new shares or price are 0 (the original is still deleted); ``duplicates`` - an add of a
reference that is live (the live order is deleted first); ``over_reductions`` - E/C/X of more
shares than the order has (clipped to its leaves; the order is gone).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hpte.engine import schema as S
from hpte.engine.engine import Engine
from hpte.engine.md.itch import DEFAULT_CHUNK_BYTES, LAYOUTS, ItchData, alpha_to_arrow, iter_itch

__all__ = ["BOOK_COLUMNS", "BOOK_SCHEMA", "L3_COLUMNS", "TRADE_COLUMNS", "TRADE_SCHEMA", "ItchBookBuilder",
           "itch_book_file"]

# op kinds
K_ADD, K_UADD, K_E, K_C, K_X, K_D, K_UDEL = range(7)
_KIND_LETTER = np.array([ord(c) for c in "AUECXDU"], np.uint8)
_GONE = 1 << 33            # reduction of a delete: more than any u32 leaves

TRADE_COLUMNS = (
    ("seq", np.dtype(np.int64)),          # the E/C message's position in the stream
    ("ts_ns", np.dtype(np.int64)),        # ns since midnight
    ("symbol", np.dtype(np.uint32)),      # stock locate code of the resting order
    ("order_id", np.dtype(np.uint64)),    # the resting (matched) order's reference number
    ("side", np.dtype(np.int8)),          # the resting order's side: +1 bid executed, -1 ask
    ("price_ticks", np.dtype(np.int64)),  # ITCH Price(4): 1 tick = $0.0001
    ("qty", np.dtype(np.int64)),          # shares executed (clipped to the order's leaves)
    ("match_number", np.dtype(np.uint64)),
    ("printable", np.dtype(np.uint8)),    # 1 for E and C 'Y', 0 for C 'N'
    ("msg_type", np.dtype(np.uint8)),     # ord('E') or ord('C')
)
TRADE_SCHEMA = pa.schema([pa.field(n, pa.from_numpy_dtype(t), nullable=False) for n, t in TRADE_COLUMNS[:2]]
                         + [pa.field("symbol", pa.uint32(), nullable=False), pa.field("stock", pa.string(), nullable=False)]
                         + [pa.field(n, pa.from_numpy_dtype(t), nullable=False) for n, t in TRADE_COLUMNS[3:]])
BOOK_COLUMNS = (
    ("ts_ns", np.dtype(np.int64)),        # snapshot time: the book after every message before it
    ("symbol", np.dtype(np.uint32)),      # stock locate code
    ("side", np.dtype(np.int8)),
    ("level", np.dtype(np.int32)),        # 0 = best
    ("price_ticks", np.dtype(np.int64)),  # ITCH Price(4)
    ("qty", np.dtype(np.int64)),
    ("orders", np.dtype(np.int64)),
)
BOOK_SCHEMA = pa.schema([pa.field(n, pa.from_numpy_dtype(t), nullable=False) for n, t in BOOK_COLUMNS[:2]]
                        + [pa.field("stock", pa.string(), nullable=False)]
                        + [pa.field(n, pa.from_numpy_dtype(t), nullable=False) for n, t in BOOK_COLUMNS[2:]]
                        + [pa.field("final", pa.bool_(), nullable=False)])  # the end-of-file snapshot
L3_COLUMNS = (("symbol", np.dtype(np.uint32)), ("side", np.dtype(np.int8)), ("price_ticks", np.dtype(np.int64)),
              ("order_id", np.dtype(np.uint64)), ("qty", np.dtype(np.int64)))


def _empty(cols) -> dict[str, np.ndarray]:
    return {n: np.empty(0, t) for n, t in cols}


def _seg_cumsum(x: np.ndarray, start_idx: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """Cumulative sum of x within segments (segment k starts at start_idx[k]; seg = segment of
    each element), the element itself included."""
    c = np.cumsum(x)
    return c - (c[start_idx] - x[start_idx])[seg]


@dataclass
class _State:
    """Live orders, sorted by reference: the table every E/C/X/D/U is resolved against."""
    ref: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint64))
    loc: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    side: np.ndarray = field(default_factory=lambda: np.empty(0, np.int8))
    px: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    leaves: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    on: np.ndarray = field(default_factory=lambda: np.empty(0, bool))     # in the engine book

    def lookup(self, refs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pos = np.searchsorted(self.ref, refs)
        found = pos < self.ref.size
        found[found] = self.ref[pos[found]] == refs[found]
        return np.minimum(pos, max(self.ref.size - 1, 0)), found


class ItchBookBuilder:
    """Rebuild every stock's order book from ITCH messages fed batch by batch.

    Parameters
    ----------
    symbols : stock names to keep (e.g. ``["AAPL", "MSFT"]``), None = every stock. A stock is
        recognised by the name its ``R`` (stock directory) message, or else its first ``A``/``F``
        message, gives its locate code.
    tick : ITCH Price(4) units per engine tick (>= 1): the engine's ladder granularity. Orders
        priced off this grid are tracked but kept out of the engine book.
    max_levels : the Engine's ladder limit (a multiple of 4096); None = the Engine's default.
    init_pool : order slots each new engine book starts with. The engine grows a book's pool by
        doubling, and every growth re-lays out every book, so with thousands of books (stocks x
        2 sides) small initial pools make the rebuild quadratic; 1024 slots cost ~45 KB per book.
    levels, every_ns : periodic snapshots of the top ``levels`` levels per side at every multiple
        of ``every_ns`` ns since midnight between the first and the last message (None = none);
        ``feed`` returns them.
    """

    def __init__(self, symbols: Iterable[str] | None = None, tick: int = 1, max_levels: int | None = None,
                 levels: int = 10, every_ns: int | None = None, init_pool: int = 1024):
        if isinstance(tick, bool) or not isinstance(tick, (int, np.integer)) or tick < 1:
            raise ValueError(f"tick must be an integer >= 1, got {tick!r}")
        if levels < 1:
            raise ValueError(f"levels must be at least 1, got {levels}")
        if every_ns is not None and every_ns < 1:
            raise ValueError(f"every_ns must be at least 1, got {every_ns}")
        self.tick = int(tick)
        self.levels_depth = int(levels)
        self.every_ns = None if every_ns is None else int(every_ns)
        self.engine = Engine(stp="none") if max_levels is None else Engine(stp="none", max_levels=int(max_levels))
        self.engine.store.init_pool = max(int(init_pool), 1)
        self.state = _State()
        self.names = np.zeros(65_536, "S8")           # locate -> stock name (space padded)
        self.named = np.zeros(65_536, bool)
        self.from_directory = np.zeros(65_536, bool)
        self.want: np.ndarray | None = None
        if symbols is not None:
            want = []
            for s in symbols:
                b = s.strip().encode("ascii", "replace")
                if not b or len(b) > 8:
                    raise ValueError(f"stock name {s!r} must be 1 to 8 ASCII characters")
                want.append(b.ljust(8))
            self.want = np.array(want, "S8")
        self.loc_ok = np.ones(65_536, bool) if self.want is None else np.zeros(65_536, bool)
        self.counts = {k: 0 for k in ("adds", "executions", "cancels", "deletes", "replaces", "unknown",
                                      "bad_adds", "duplicates", "over_reductions", "off_tick", "trades")}
        self.unknown_by_type = {c: 0 for c in "ECXDU"}
        self.traded_qty = 0
        self.messages = 0
        self.by_type = {lay.letter: 0 for lay in LAYOUTS}
        self.engine_rejects: dict[str, int] = {}
        self.first_ts: int | None = None
        self.last_ts = 0                 # ITCH timestamp of the last message fed
        self.engine_ts = 0               # timestamps fed to the engine never decrease
        self.next_snap: int | None = None
        self.snapshots_taken = 0
        self.seconds = 0.0

    # ------------------------------------------------------------------------------------
    def _update_names(self, T) -> None:
        changed = False
        R = T["R"]
        if len(R["seq"]):
            loc = R["stock_locate"].astype(np.int64)
            self.names[loc] = R["stock"]
            self.named[loc] = True
            self.from_directory[loc] = True
            changed = True
        for k in "AF":
            t = T[k]
            if len(t["seq"]):
                loc = t["stock_locate"].astype(np.int64)
                u, first = np.unique(loc, return_index=True)
                new = ~self.named[u]
                if new.any():
                    self.names[u[new]] = t["stock"][first[new]]
                    self.named[u[new]] = True
                    changed = True
        if changed and self.want is not None:
            self.loc_ok = self.named & np.isin(self.names, self.want)

    def _ops(self, T) -> dict[str, np.ndarray]:
        """The book messages of a batch as ops (a U gives a delete and an add), locate-filtered,
        bad adds dropped and counted."""
        cols: dict[str, list] = {k: [] for k in ("kind", "okey", "ts", "loc", "ref", "side", "px", "n", "match",
                                                 "printable", "umsg")}

        def put(kind, t, ref, sub=0, side=None, px=None, n=None, match=None, printable=None, umsg=None):
            c = len(t["seq"])
            cols["kind"].append(np.full(c, kind, np.int8))
            cols["okey"].append(t["seq"].astype(np.int64) * 2 + sub)
            cols["ts"].append(t["timestamp"].astype(np.int64))
            cols["loc"].append(t["stock_locate"].astype(np.int64))
            cols["ref"].append(ref.astype(np.uint64))
            cols["side"].append(np.zeros(c, np.int8) if side is None else side)
            cols["px"].append(np.zeros(c, np.int64) if px is None else px.astype(np.int64))
            cols["n"].append(np.zeros(c, np.int64) if n is None else n.astype(np.int64))
            cols["match"].append(np.zeros(c, np.uint64) if match is None else match.astype(np.uint64))
            cols["printable"].append(np.ones(c, np.uint8) if printable is None else printable)
            cols["umsg"].append(np.full(c, -1, np.int64) if umsg is None else umsg)

        for k in "AF":
            t = T[k]
            bs = t["buy_sell_indicator"]
            side = np.where(bs == b"B", S.BUY, np.where(bs == b"S", S.SELL, 0)).astype(np.int8)
            put(K_ADD, t, t["order_reference_number"], side=side, px=t["price"], n=t["shares"])
        t = T["E"]
        put(K_E, t, t["order_reference_number"], n=t["executed_shares"], match=t["match_number"])
        t = T["C"]
        put(K_C, t, t["order_reference_number"], px=t["execution_price"], n=t["executed_shares"],
            match=t["match_number"], printable=(t["printable"] != b"N").astype(np.uint8))
        t = T["X"]
        put(K_X, t, t["order_reference_number"], n=t["cancelled_shares"])
        t = T["D"]
        put(K_D, t, t["order_reference_number"])
        t = T["U"]
        um = np.arange(len(t["seq"]), dtype=np.int64)
        put(K_UDEL, t, t["original_order_reference_number"], umsg=um)
        put(K_UADD, t, t["new_order_reference_number"], sub=1, px=t["price"], n=t["shares"], umsg=um)
        ops = {k: np.concatenate(v) for k, v in cols.items()}
        keep = self.loc_ok[ops["loc"]]
        kind = ops["kind"]
        bad = keep & (((kind == K_ADD) & ((ops["side"] == 0) | (ops["n"] <= 0) | (ops["px"] <= 0)))
                      | ((kind == K_UADD) & ((ops["n"] <= 0) | (ops["px"] <= 0))))
        self.counts["bad_adds"] += int(bad.sum())
        keep &= ~bad
        o = np.flatnonzero(keep)
        o = o[np.lexsort((ops["okey"][o], ops["ref"][o]))]
        return {k: v[o] for k, v in ops.items()}

    # ------------------------------------------------------------------------------------
    def feed(self, data: ItchData) -> tuple[dict[str, np.ndarray], list[dict[str, np.ndarray]]]:
        """Apply one batch of decoded messages (batches in stream order).

        Returns (trades, snapshots): the batch's trades (columns TRADE_COLUMNS, stream order) and
        the periodic snapshots it completed (columns BOOK_COLUMNS each)."""
        t0 = time.perf_counter()
        T = data.tables
        for letter, c in data.counts.items():
            self.by_type[letter] += c
        self.messages += data.messages
        self._update_names(T)
        stamps = [T[k]["timestamp"] for k in T if len(T[k]["seq"])]
        if stamps:
            lo = min(int(s.min()) for s in stamps)
            self.first_ts = lo if self.first_ts is None else min(self.first_ts, lo)
            last_seq = max(int(T[k]["seq"][-1]) for k in T if len(T[k]["seq"]))
            self.last_ts = next(int(T[k]["timestamp"][-1]) for k in T if len(T[k]["seq"]) and int(T[k]["seq"][-1]) == last_seq)
        if self.every_ns is not None and self.next_snap is None and self.first_ts is not None:
            self.next_snap = (self.first_ts // self.every_ns + 1) * self.every_ns
        op = self._ops(T)
        trades, snaps = self._apply(op)
        self.seconds += time.perf_counter() - t0
        return trades, snaps

    def _apply(self, op: dict[str, np.ndarray]):
        n = op["ref"].size
        kind, ref, red_n = op["kind"], op["ref"], op["n"]
        St = self.state
        is_add = (kind == K_ADD) | (kind == K_UADD)
        first = np.ones(n, bool)
        if n:
            first[1:] = ref[1:] != ref[:-1]
        last = np.ones(n, bool)
        if n:
            last[:-1] = first[1:]
        seg_start = first | is_add
        seg = np.cumsum(seg_start) - 1
        ss = np.flatnonzero(seg_start)
        nseg = ss.size
        # state lookup for the first op of every reference
        st_pos, st_found = St.lookup(ref)
        st_found &= first
        # segment initial values
        s_add = is_add[ss]
        s_state = ~s_add & st_found[ss]
        sp = st_pos[ss]
        seg_loc = np.where(s_add, op["loc"][ss], np.where(s_state, St.loc[sp] if St.ref.size else 0, 0))
        seg_side = np.where(s_add, op["side"][ss], np.where(s_state, St.side[sp] if St.ref.size else 0, 0)).astype(np.int8)
        seg_px = np.where(s_add, op["px"][ss], np.where(s_state, St.px[sp] if St.ref.size else 0, 0))
        seg_init = np.where(s_add, red_n[ss], np.where(s_state, St.leaves[sp] if St.ref.size else 0, 0))
        seg_on = np.where(s_add, seg_px % self.tick == 0, s_state & (St.on[sp] if St.ref.size else False))
        # leaves through each segment (local: as if the segment's start were valid)
        red = np.where(is_add, 0, np.where((kind == K_D) | (kind == K_UDEL), _GONE, red_n))
        c_seg = _seg_cumsum(red, ss, seg) if n else red
        la_local = seg_init[seg] - c_seg
        lb_local = la_local + red
        # validity: A/F and state segments are known; a U's new order is valid when its original
        # was (chains resolved by pointer doubling); side comes from the chain's root
        good0 = s_add & (kind[ss] == K_ADD) | s_state
        src = np.arange(nseg)
        uadd_ss = np.flatnonzero(kind[ss] == K_UADD)
        if uadd_ss.size:
            udel_at = np.full(int(op["umsg"].max()) + 1, -1, np.int64)
            ud = np.flatnonzero(kind == K_UDEL)
            udel_at[op["umsg"][ud]] = ud
            par_op = udel_at[op["umsg"][ss[uadd_ss]]]
            src[uadd_ss] = seg[par_op]
            good0[uadd_ss] = lb_local[par_op] > 0
        g = good0 & good0[src]
        a = src
        while (a != a[a]).any():
            g = g & g[a]
            a = a[a]
        seg_good = g
        seg_side = seg_side[a]
        seg_on &= seg_good
        valid = seg_good[seg] & (is_add | (lb_local > 0))
        leaves_after = np.where(valid, np.maximum(la_local, 0), 0)
        live_after = valid & (leaves_after > 0)
        # an add of a live reference deletes the live order first
        prev_live = np.zeros(n, bool)
        if n:
            prev_live[1:] = live_after[:-1]
        dup_prev = is_add & ~first & prev_live
        dup_state = is_add & st_found
        dup = dup_prev | dup_state
        self.counts["duplicates"] += int(dup.sum())

        # --- engine rows: key = okey * 2 (+1 for the main row; +0 for a duplicate's cancel) ---
        tick = self.tick
        ps = seg[np.maximum(np.arange(n) - 1, 0)]          # previous op's segment
        d_idx = np.flatnonzero(dup & np.where(dup_state, st_found & (St.on[st_pos] if St.ref.size else False),
                                              seg_on[ps]))
        d_loc = np.where(dup_state[d_idx], St.loc[st_pos[d_idx]] if St.ref.size else 0, seg_loc[ps[d_idx]])
        d_side = np.where(dup_state[d_idx], St.side[st_pos[d_idx]] if St.ref.size else 0, seg_side[ps[d_idx]])
        sg = seg_on[seg]
        m_idx = np.flatnonzero(valid & sg)
        m_seg = seg[m_idx]
        m_add = is_add[m_idx]
        m_left = leaves_after[m_idx]
        action = np.where(m_add, S.ACT_NEW, np.where(m_left > 0, S.ACT_REPLACE, S.ACT_CANCEL)).astype(np.uint8)
        qty = np.where(m_add, red_n[m_idx], m_left)
        loc_rows = np.concatenate([d_loc, seg_loc[m_seg]])
        side_rows = np.concatenate([d_side, seg_side[m_seg]]).astype(np.int8)
        rows = {
            "ts_ns": np.concatenate([op["ts"][d_idx], op["ts"][m_idx]]),
            "order_id": np.concatenate([ref[d_idx], ref[m_idx]]),
            "side": side_rows,
            "price_ticks": np.concatenate([np.ones(d_idx.size, np.int64), seg_px[m_seg] // tick]),
            "qty": np.concatenate([np.ones(d_idx.size, np.int64), qty]),
            "action": np.concatenate([np.full(d_idx.size, S.ACT_CANCEL, np.uint8), action]),
            "symbol": (loc_rows * 2 + (side_rows == S.SELL)).astype(np.uint32),
        }
        row_seg = np.concatenate([np.full(d_idx.size, -1, np.int64), m_seg])
        rk = np.concatenate([op["okey"][d_idx] * 2, op["okey"][m_idx] * 2 + 1])
        o = np.argsort(rk, kind="stable")
        rows = {k: v[o] for k, v in rows.items()}
        row_seg = row_seg[o]
        ts = np.maximum.accumulate(np.concatenate([[self.engine_ts], rows["ts_ns"]]))[1:]
        rows["ts_ns"] = ts
        if ts.size:
            self.engine_ts = int(ts[-1])
        nr = ts.size
        rows.update(order_type=np.zeros(nr, np.uint8), tif=np.zeros(nr, np.uint8),
                    account=np.zeros(nr, np.uint32), post_only=np.zeros(nr, np.uint8))
        self._register_books(rows)
        snaps = []
        start = 0
        # a snapshot at B is the book after every message stamped before B; it is taken once a
        # message at or after B has been seen (so B <= the last timestamp fed)
        while self.next_snap is not None and self.next_snap <= self.last_ts:
            stop = int(np.searchsorted(rows["ts_ns"], self.next_snap, side="left"))
            self._submit(rows, start, stop, row_seg, seg_on)
            start = max(start, stop)
            snaps.append(self.levels(self.levels_depth, ts=self.next_snap))
            self.next_snap += self.every_ns
            self.snapshots_taken += 1
        self._submit(rows, start, nr, row_seg, seg_on)
        # --- counters and trades ---
        k_valid = kind[valid]
        cnt = np.bincount(k_valid, minlength=7)
        self.counts["adds"] += int(cnt[K_ADD])
        self.counts["replaces"] += int(cnt[K_UDEL])
        self.counts["executions"] += int(cnt[K_E] + cnt[K_C])
        self.counts["cancels"] += int(cnt[K_X])
        self.counts["deletes"] += int(cnt[K_D])
        self.counts["off_tick"] += int((valid & is_add & (seg_px[seg] % tick != 0)).sum())
        inv = np.bincount(kind[~valid & ~is_add], minlength=7)
        for kk, letter in ((K_E, "E"), (K_C, "C"), (K_X, "X"), (K_D, "D"), (K_UDEL, "U")):
            self.unknown_by_type[letter] += int(inv[kk])
            self.counts["unknown"] += int(inv[kk])
        reducing = valid & ((kind == K_E) | (kind == K_C) | (kind == K_X))
        self.counts["over_reductions"] += int((reducing & (red_n > lb_local)).sum())
        t_idx = np.flatnonzero(valid & ((kind == K_E) | (kind == K_C)))
        t_idx = t_idx[np.argsort(op["okey"][t_idx], kind="stable")]
        t_seg = seg[t_idx]
        tq = np.minimum(red_n[t_idx], lb_local[t_idx])
        trades = {
            "seq": op["okey"][t_idx] // 2, "ts_ns": op["ts"][t_idx], "symbol": seg_loc[t_seg].astype(np.uint32),
            "order_id": ref[t_idx], "side": seg_side[t_seg].astype(np.int8),
            "price_ticks": np.where(kind[t_idx] == K_C, op["px"][t_idx], seg_px[t_seg]),
            "qty": tq, "match_number": op["match"][t_idx], "printable": op["printable"][t_idx],
            "msg_type": _KIND_LETTER[kind[t_idx]],
        }
        self.counts["trades"] += int(t_idx.size)
        self.traded_qty += int(tq.sum())
        # --- new state: untouched old orders + the live last op of every reference ---
        fin = np.flatnonzero(last & live_after)
        f_seg = seg[fin]
        touched = ref[first]
        pos = np.searchsorted(touched, St.ref)
        hit = pos < touched.size
        hit[hit] = touched[pos[hit]] == St.ref[hit]
        keep = ~hit
        new_ref = ref[fin]
        old_ref = St.ref[keep]
        at = np.searchsorted(old_ref, new_ref)
        self.state = _State(
            ref=np.insert(old_ref, at, new_ref), loc=np.insert(St.loc[keep], at, seg_loc[f_seg]),
            side=np.insert(St.side[keep], at, seg_side[f_seg]), px=np.insert(St.px[keep], at, seg_px[f_seg]),
            leaves=np.insert(St.leaves[keep], at, leaves_after[fin]), on=np.insert(St.on[keep], at, seg_on[f_seg]))
        return trades, snaps

    def _register_books(self, rows) -> None:
        """Create the engine books of new symbols up front, centred on their first price, with
        rows the engine rejects (qty 0): one small batch instead of a per-new-symbol scan of a
        large one (Engine.books_for), and no re-centring of a ladder built around price 0."""
        if not rows["symbol"].size:
            return
        u, first = np.unique(rows["symbol"], return_index=True)
        new = ~np.isin(u, self.engine.store.symbols)
        if not new.any():
            return
        px = rows["price_ticks"][first[new]]
        for k in range(0, int(new.sum()), 2048):
            c = min(2048, int(new.sum()) - k)
            self.engine.submit({
                "ts_ns": np.full(c, self.engine.last_ts or 0, np.int64), "order_id": np.zeros(c, np.uint64),
                "side": np.ones(c, np.int8), "price_ticks": px[k:k + c], "qty": np.zeros(c, np.int64),
                "symbol": u[new][k:k + c]})

    def _submit(self, rows, start: int, stop: int, row_seg, seg_on) -> None:
        if stop <= start:
            return
        seq0 = self.engine.seq
        res = self.engine.submit({k: v[start:stop] for k, v in rows.items()})
        self._note_rejects(res.events, rows, seq0 - start, row_seg, seg_on)

    def _note_rejects(self, ev, rows, seq_base, row_seg, seg_on) -> None:
        code = np.asarray(ev["event"])
        rj = np.flatnonzero(code == S.EV_REJECTED)
        if not rj.size:
            return
        reason = np.asarray(ev["reason"])[rj]
        r = np.asarray(ev["seq"])[rj].astype(np.int64) - seq_base
        for c, k in zip(*np.unique(reason, return_counts=True)):
            name = S.REASON_NAMES[int(c)]
            self.engine_rejects[name] = self.engine_rejects.get(name, 0) + int(k)
        off = r[(rows["action"][r] == S.ACT_NEW) & (row_seg[r] >= 0)]
        seg_on[row_seg[off]] = False       # out of the engine book from now on

    # ------------------------------------------------------------------------------------
    def stock_names(self, locs: np.ndarray) -> pa.Array:
        return alpha_to_arrow(self.names[np.asarray(locs, np.int64)])

    def levels(self, depth: int | None = None, ts: int | None = None) -> dict[str, np.ndarray]:
        """Top ``depth`` levels per side of every book (BOOK_COLUMNS; stocks by ascending locate,
        bids best to worst, then asks)."""
        lv = self.engine.book_levels(depth)
        k = lv["symbol"].size
        return {"ts_ns": np.full(k, self.last_ts if ts is None else ts, np.int64),
                "symbol": (lv["symbol"] >> 1).astype(np.uint32), "side": lv["side"], "level": lv["level"],
                "price_ticks": lv["price_ticks"] * self.tick, "qty": lv["qty"], "orders": lv["orders"]}

    def l3(self) -> dict[str, np.ndarray]:
        """Every order in the engine book in priority order (L3_COLUMNS: symbol = locate,
        order_id = reference number, price in ITCH units)."""
        b = self.engine.book_l3()
        return {"symbol": (b["symbol"] >> 1).astype(np.uint32), "side": b["side"],
                "price_ticks": b["price_ticks"] * self.tick, "order_id": b["order_id"], "qty": b["qty"]}

    def summary(self) -> dict:
        return {
            "messages": self.messages,
            "messages_by_type": {k: v for k, v in self.by_type.items() if v},
            **self.counts,
            "unknown_by_type": {k: v for k, v in self.unknown_by_type.items() if v},
            "traded_qty": self.traded_qty,
            "live_orders": int(self.state.ref.size),
            "resting_in_engine": self.engine.store.resting(),
            "off_book_live": int((~self.state.on).sum()),
            "engine_rejects": dict(self.engine_rejects),
            "books": int(np.unique(self.state.loc[self.state.on]).size),
            "stocks_named": int(self.named.sum()),
            "snapshots": self.snapshots_taken,
            "first_ts_ns": self.first_ts,
            "last_ts_ns": self.last_ts if self.messages else None,
            "seconds": self.seconds,
            "messages_per_s": self.messages / self.seconds if self.seconds > 0 else None,
        }


# ---------------------------------------------------------------------------------------------
def _table(cols: dict, schema: pa.Schema, builder: ItchBookBuilder, final: bool = False) -> pa.Table:
    arrays = []
    for f in schema:
        if f.name == "stock":
            arrays.append(builder.stock_names(cols["symbol"]))
        elif f.name == "final":
            arrays.append(pa.array(np.full(cols["symbol"].size, final)))
        else:
            arrays.append(pa.array(np.ascontiguousarray(cols[f.name]), type=f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def itch_book_file(path, out_dir, *, symbols: Iterable[str] | None = None, levels: int = 10,
                   every_ns: int | None = None, tick: int = 1, max_levels: int | None = None,
                   keep_valid: bool = False, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> dict:
    """``hpte md itch book``: stream an ITCH file through an ItchBookBuilder and write
    ``out_dir/trades.parquet`` (TRADE_SCHEMA), ``out_dir/book.parquet`` (BOOK_SCHEMA: the
    periodic snapshots, then the top ``levels`` at the end of the file, stamped with the last
    message's time and ``final`` true) and ``out_dir/summary.json``. Returns the summary. Raises ItchError for bad
    input (unless ``keep_valid``: the messages before the bad frame are used and the summary
    says where parsing stopped), ValueError for bad arguments, OSError for files."""
    b = ItchBookBuilder(symbols, tick=tick, max_levels=max_levels, levels=levels, every_ns=every_ns)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stopped = None
    t0 = time.perf_counter()
    with pq.ParquetWriter(out / "trades.parquet", TRADE_SCHEMA) as tw, \
            pq.ParquetWriter(out / "book.parquet", BOOK_SCHEMA) as bw:
        for part in iter_itch(path, keep_valid=keep_valid, chunk_bytes=chunk_bytes):
            trades, snaps = b.feed(part)
            if trades["seq"].size:
                tw.write_table(_table(trades, TRADE_SCHEMA, b))
            for s in snaps:
                if s["symbol"].size:
                    bw.write_table(_table(s, BOOK_SCHEMA, b))
            if part.error:
                stopped = {"stopped_at": part.stopped_at, "error": part.error}
        final = b.levels(levels)
        if final["symbol"].size:
            bw.write_table(_table(final, BOOK_SCHEMA, b, final=True))
    s = b.summary()
    s["wall_seconds"] = time.perf_counter() - t0
    s["file"] = str(path)
    if stopped:
        s.update(stopped)
    (out / "summary.json").write_text(json.dumps(s, indent=1) + "\n")
    return s

