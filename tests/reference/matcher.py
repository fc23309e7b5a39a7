"""The plain-Python reference matcher: README "Matching semantics", one rule at a time.

Slow and obviously correct on purpose: per book a dict price -> deque of resting orders per
side, plus a dict order_id -> order. No numpy beyond building the output columns. The API is
the real engine's (``hpte.engine.engine.Engine``) so that tests can run both:

- ``submit(batch) -> Result`` (``fills``, ``events``, ``deltas``: dicts of numpy columns with
  exactly schema.FILL_COLUMNS / EVENT_COLUMNS / DELTA_COLUMNS);
- ``end_session(ts_ns) -> Result``;
- ``book_levels(depth=None) -> dict`` (schema.LEVEL_COLUMNS);
- ``book_l3() -> dict`` (schema.L3_COLUMNS).

Decisions where the README is silent (see the report in tests/reference and the README
proposals):
- the price of a taker's own CANCELLED/EXPIRED events is the order's price (the row price of
  a LIMIT order, 0 for MARKET, the new price for a re-entered REPLACE);
- REPLACED events carry the order's side and account;
- a priority-keeping REPLACE with new qty == leaves changes nothing in the book and emits no
  delta row (it still emits its REPLACED event).

Icebergs (column ``display_qty``, 0 = not an iceberg): ``_Order.leaves`` is the displayed slice's leaves (what
levels, deltas and L3 show), ``_Order.reserve`` the hidden rest, ``_Order.display`` the slice
size; events carry the total (leaves + reserve). Rules: README "Iceberg orders".
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from hpte.engine import schema as S
from hpte.kernels.book import ALG_FIFO, ALG_LMM, ALG_PRO, ALG_TOP
from hpte.engine.io import order_columns
from hpte.engine.matching import resolve_matching


@dataclass
class Result:
    """Output of one submit/end_session call: SoA columns of the three output schemas."""

    fills: dict
    events: dict
    deltas: dict


def _columns(rows: list[tuple], columns) -> dict:
    """List of row tuples -> dict of numpy columns of `columns` (name, dtype)."""
    return {
        name: np.array([r[i] for r in rows], dtype=dt) if rows else np.empty(0, dtype=dt)
        for i, (name, dt) in enumerate(columns)
    }


class _Order:
    __slots__ = ("order_id", "account", "side", "price", "leaves", "tif", "post_only", "market", "expire",
                 "stop", "stop_market", "display", "reserve")

    def __init__(self, order_id, account, side, price, leaves, tif, post_only, market=False, expire=0,
                 stop=0, stop_market=False, display=0):
        self.order_id = order_id
        self.account = account
        self.side = side
        self.price = price          # 0 for MARKET
        self.leaves = leaves
        self.tif = tif
        self.post_only = post_only
        self.market = market
        self.expire = expire        # good-till-date expiry (ns), 0 = none
        self.stop = stop            # stop price while an untriggered stop, else 0
        self.stop_market = stop_market   # an untriggered STOP (a MARKET order once triggered)
        self.display = display      # iceberg slice size (lots), 0 = not an iceberg
        self.reserve = 0            # iceberg: hidden quantity behind the displayed slice (leaves)

    def total(self) -> int:
        """Total leaves: the displayed slice and the hidden reserve."""
        return self.leaves + self.reserve


class _Book:
    def __init__(self, symbol: int):
        self.symbol = symbol
        self.levels: dict[int, dict[int, deque]] = {S.BUY: {}, S.SELL: {}}
        self.orders: dict[int, _Order] = {}
        self.algo = None            # engine/matching.py Algo, set by ReferenceEngine._book
        self.top = {S.BUY: None, S.SELL: None}   # each side's TOP order (when still in the book)
        self.stops: list[_Order] = []   # untriggered stops, in acceptance order (also in `orders`)
        self.last = 0               # price of the book's last trade, 0 = none yet

    def top_order(self, side: int):
        """The side's TOP order, or None: it lost the status when it left the book or was
        replaced (a replaced order is a new _Order object, or cleared by an in-place replace)."""
        o = self.top[side]
        if o is not None and self.orders.get(o.order_id) is o:
            return o
        return None

    def prices(self, side: int) -> list[int]:
        """Level prices of `side`, best first."""
        return sorted(self.levels[side], reverse=(side == S.BUY))

    def best(self, side: int):
        ps = self.levels[side]
        if not ps:
            return None
        return max(ps) if side == S.BUY else min(ps)

    def level_totals(self, side: int, price: int) -> tuple[int, int]:
        q = self.levels[side].get(price)
        if not q:
            return 0, 0
        return sum(o.leaves for o in q), len(q)


def _crosses(side: int, price: int, market: bool, level_price: int) -> bool:
    """Does an order of `side` at `price` (or MARKET) cross a level of the opposite side?"""
    if market:
        return True
    return price >= level_price if side == S.BUY else price <= level_price


class ReferenceEngine:
    """Plain-Python matcher with the real engine's API; `stp` is a key of schema.STP_NAMES."""

    stops_supported = True          # the risk engines reject STOP / STOP_LIMIT (STOP_NOT_SUPPORTED)
    icebergs_supported = True       # ... and icebergs (ICEBERG_NOT_SUPPORTED)

    def __init__(self, stp: str = "none", algo: str = "fifo", matching=None):
        if stp not in S.STP_NAMES:
            raise ValueError(f"stp={stp!r}: expected one of {sorted(S.STP_NAMES)}")
        self.stp = S.STP_NAMES[stp]
        # which algorithm each book uses: the engine's own configuration parser (the allocation
        # below is this file's own)
        self.matching = resolve_matching(algo, matching)
        self.books: dict[int, _Book] = {}
        self.seq = 0

    # ------------------------------------------------------------------ output helpers
    def _begin(self, seq: int, ts: int, symbol: int):
        self._cur = (seq, ts, symbol)

    def _event(self, order_id, account, side, ev, reason, price, qty, leaves):
        seq, ts, sym = self._cur
        self._events.append((seq, ts, sym, order_id, account, side, ev, reason, price, qty, leaves))

    def _delta(self, book: _Book, side: int, price: int):
        seq, ts, sym = self._cur
        qty, n = book.level_totals(side, price)
        self._deltas.append((seq, ts, sym, side, price, qty, n))

    def _fill(self, taker: _Order, maker: _Order, price: int, qty: int):
        seq, ts, sym = self._cur
        self._fills.append((seq, ts, sym, taker.order_id, maker.order_id, taker.account,
                            maker.account, taker.side, price, qty))

    def _result(self) -> Result:
        r = Result(_columns(self._fills, S.FILL_COLUMNS), _columns(self._events, S.EVENT_COLUMNS),
                   _columns(self._deltas, S.DELTA_COLUMNS))
        self._fills, self._events, self._deltas = [], [], []
        return r

    def _book(self, symbol: int) -> _Book:
        b = self.books.get(symbol)
        if b is None:
            b = self.books[symbol] = _Book(symbol)
            b.algo = self.matching.algo_for(symbol)
        return b

    # ------------------------------------------------------------------ public API
    def submit(self, batch) -> Result:
        cols = order_columns(batch)
        self._fills, self._events, self._deltas = [], [], []
        n = len(cols["ts_ns"])
        for i in range(n):
            row = {name: int(cols[name][i]) for name, *_ in S.ORDER_COLUMNS}
            self._process(row)
            self.seq += 1
        return self._result()

    def end_session(self, ts_ns: int) -> Result:
        self._fills, self._events, self._deltas = [], [], []
        for sym in sorted(self.books):
            book = self.books[sym]
            self._begin(self.seq, int(ts_ns), sym)
            for side in (S.BUY, S.SELL):
                for p in book.prices(side):
                    q = book.levels[side][p]
                    day = [o for o in q if o.tif == S.TIF_DAY or 0 < o.expire <= ts_ns]
                    if not day:
                        continue
                    for o in day:
                        self._event(o.order_id, o.account, o.side, S.EV_EXPIRED, S.R_END_OF_SESSION,
                                    o.price, o.total(), 0)
                        q.remove(o)
                        del book.orders[o.order_id]
                        o.leaves = 0
                    if not q:
                        del book.levels[side][p]
                    self._delta(book, side, p)
            for o in [o for o in book.stops if o.tif == S.TIF_DAY]:     # DAY stops (no delta)
                self._event(o.order_id, o.account, o.side, S.EV_EXPIRED, S.R_END_OF_SESSION, o.price, o.leaves, 0)
                book.stops.remove(o)
                del book.orders[o.order_id]
        return self._result()

    def book_levels(self, depth: int | None = None) -> dict:
        rows = []
        for sym in sorted(self.books):
            book = self.books[sym]
            for side in (S.BUY, S.SELL):
                for lvl, p in enumerate(book.prices(side)):
                    if depth is not None and lvl >= depth:
                        break
                    qty, n = book.level_totals(side, p)
                    rows.append((sym, side, lvl, p, qty, n))
        return _columns(rows, S.LEVEL_COLUMNS)

    def book_l3(self) -> dict:
        rows = []
        for sym in sorted(self.books):
            book = self.books[sym]
            for side in (S.BUY, S.SELL):
                for p in book.prices(side):
                    for o in book.levels[side][p]:
                        rows.append((sym, side, p, o.order_id, o.account, o.leaves, o.tif))
        return _columns(rows, S.L3_COLUMNS)

    # ------------------------------------------------------------------ one input row
    def _reject(self, row, reason, leaves=0):
        self._event(row["order_id"], row["account"], row["side"], S.EV_REJECTED, reason,
                    row["price_ticks"], row["qty"], leaves)

    def _paused_reject(self, row) -> int:
        """Hook: reject reason of a valid NEW row before the post-only check (breaker_ref.py:
        a paused symbol takes no IOC / FOK / MARKET order); 0 = none."""
        return 0

    def _level_gate(self, book, taker, price: int) -> bool:
        """Hook: True stops the taker before trading at the crossing level `price`
        (breaker_ref.py: price bands, velocity); the plain matcher never stops there."""
        return False

    def _risk(self, row, leaves: int) -> int:
        """Hook: a pre-trade check of a row matching's own checks passed (tests/reference/
        risk_matcher.py); 0 = pass, else the reject reason. The plain matcher has none."""
        return 0

    def _expire_due(self, book: _Book, ts: int):
        """Good-till-date orders of `book` whose expiry is at or before ts (the book's own row
        at ts): EXPIRED (reason EXPIRE_TIME) in (expiry, order id) order, a delta each."""
        due = sorted((o for o in book.orders.values() if 0 < o.expire <= ts),
                     key=lambda o: (o.expire, o.order_id))
        for o in due:
            self._event(o.order_id, o.account, o.side, S.EV_EXPIRED, S.R_EXPIRE_TIME, o.price, o.total(), 0)
            self._remove_resting(book, o)
            o.leaves = 0
            self._delta(book, o.side, o.price)

    def _process(self, row):
        self._begin(self.seq, row["ts_ns"], row["symbol"])
        self._expire_due(self._book(row["symbol"]), row["ts_ns"])
        action = row["action"]
        if action == S.ACT_NEW:
            self._new(row)
        elif action == S.ACT_CANCEL:
            self._cancel(row)
        elif action == S.ACT_REPLACE:
            self._replace(row)
        else:
            self._reject(row, S.R_INVALID_ACTION)
        self._fire_stops(self._book(row["symbol"]))

    def _fire_stops(self, book: _Book):
        """After each row: while the book's last trade price reaches a waiting stop (a buy stop
        at or below it, a sell stop at or above it), the first such stop in acceptance order is
        TRIGGERED and enters the book as a taker: a MARKET order (stop) or a LIMIT order at its
        price (stop-limit), matched, its remainder expired or resting. Its own trades move the
        last price, so the loop looks again."""
        while book.last:
            due = [o for o in book.stops if (o.side == S.BUY and book.last >= o.stop)
                   or (o.side == S.SELL and book.last <= o.stop)]
            if not due:
                return
            o = due[0]
            book.stops.remove(o)
            self._event(o.order_id, o.account, o.side, S.EV_TRIGGERED, S.R_NONE, o.stop, o.leaves, o.leaves)
            o.market, o.stop, o.stop_market = o.stop_market, 0, False
            own_best = book.best(o.side)
            self._match(book, o)
            self._remainder(book, o)
            if o.leaves == 0:
                del book.orders[o.order_id]
            elif (book.algo.steps & ALG_TOP) and (own_best is None or
                                                  (o.price > own_best if o.side == S.BUY else o.price < own_best)):
                book.top[o.side] = o

    def _new(self, row):
        side, otype, tif, qty, price = row["side"], row["order_type"], row["tif"], row["qty"], row["price_ticks"]
        post_only = row["post_only"] != 0
        if side not in (S.BUY, S.SELL):
            return self._reject(row, S.R_INVALID_SIDE)
        if otype not in (S.OT_LIMIT, S.OT_MARKET, S.OT_STOP, S.OT_STOP_LIMIT):
            return self._reject(row, S.R_INVALID_ORDER_TYPE)
        if tif not in (S.TIF_GTC, S.TIF_IOC, S.TIF_FOK, S.TIF_DAY):
            return self._reject(row, S.R_INVALID_TIF)
        if qty <= 0:
            return self._reject(row, S.R_INVALID_QTY)
        if otype in (S.OT_LIMIT, S.OT_STOP_LIMIT) and price <= 0:
            return self._reject(row, S.R_INVALID_PRICE)
        if post_only and not (otype == S.OT_LIMIT and tif in (S.TIF_GTC, S.TIF_DAY)):
            return self._reject(row, S.R_INVALID_POST_ONLY)
        expire = row["expire_ts_ns"]
        if expire != 0 and (expire < 0 or otype != S.OT_LIMIT or tif not in (S.TIF_GTC, S.TIF_DAY)):
            return self._reject(row, S.R_INVALID_EXPIRE)
        if expire != 0 and expire <= row["ts_ns"]:
            return self._reject(row, S.R_EXPIRE_IN_PAST)
        stop = row["stop_price_ticks"]
        is_stop = otype in (S.OT_STOP, S.OT_STOP_LIMIT)
        if stop != 0 and not is_stop:
            return self._reject(row, S.R_UNEXPECTED_STOP_PRICE)
        if is_stop and not self.stops_supported:
            return self._reject(row, S.R_STOP_NOT_SUPPORTED)
        if is_stop and stop <= 0:
            return self._reject(row, S.R_INVALID_STOP_PRICE)
        if is_stop and tif in (S.TIF_IOC, S.TIF_FOK):
            return self._reject(row, S.R_INVALID_STOP_TIF)
        display = row["display_qty"]
        if display < 0 or display > qty or (display > 0 and (otype != S.OT_LIMIT or tif in (S.TIF_IOC, S.TIF_FOK))):
            return self._reject(row, S.R_INVALID_DISPLAY_QTY)
        if display and not self.icebergs_supported:
            return self._reject(row, S.R_ICEBERG_NOT_SUPPORTED)
        book = self._book(row["symbol"])
        if row["order_id"] in book.orders:
            return self._reject(row, S.R_DUPLICATE_ORDER_ID)
        if is_stop:     # it waits outside the book (no delta) for the last trade to reach it
            market = otype == S.OT_STOP
            o = _Order(row["order_id"], row["account"], side, 0 if market else price, qty, tif, False,
                       stop=stop, stop_market=market)
            self._event(o.order_id, o.account, side, S.EV_ACCEPTED, S.R_NONE, o.price, qty, qty)
            book.stops.append(o)
            book.orders[o.order_id] = o
            return None
        market = otype == S.OT_MARKET
        taker = _Order(row["order_id"], row["account"], side, 0 if market else price, qty, tif,
                       post_only, market, expire, display=display)
        opp = -side
        r = self._paused_reject(row)
        if r:
            return self._reject(row, r)
        # 1. post-only
        if post_only:
            best = book.best(opp)
            if best is not None and _crosses(side, price, False, best):
                return self._reject(row, S.R_POST_ONLY_WOULD_TAKE)
        r = self._risk(row, 0)
        if r:
            return self._reject(row, r)
        # 2. FOK dry run
        if tif == S.TIF_FOK and self._fok_counted(book, taker) < qty:
            self._event(taker.order_id, taker.account, side, S.EV_ACCEPTED, S.R_NONE, taker.price, qty, qty)
            self._event(taker.order_id, taker.account, side, S.EV_EXPIRED, S.R_FOK_NOT_FILLABLE,
                        taker.price, qty, 0)
            return None
        # 3. accepted
        self._event(taker.order_id, taker.account, side, S.EV_ACCEPTED, S.R_NONE, taker.price, qty, qty)
        own_best = book.best(side)
        # 4. match, 5. remainder
        self._match(book, taker)
        self._remainder(book, taker)
        # TOP: a NEW order resting strictly better than its side's best before it came
        if (book.algo.steps & ALG_TOP) and taker in book.levels[side].get(taker.price, ()):
            if own_best is None or (taker.price > own_best if side == S.BUY else taker.price < own_best):
                book.top[side] = taker
        return None

    def _fok_counted(self, book: _Book, taker: _Order) -> int:
        counted = 0
        opp = -taker.side
        for p in book.prices(opp):
            if not _crosses(taker.side, taker.price, taker.market, p):
                break
            if book.algo.steps:
                # other algorithms resolve self-trades first at each level: an own order anywhere
                # at the level stops the taker there
                if self.stp != S.STP_NONE and any(o.account == taker.account for o in book.levels[opp][p]):
                    return counted
                counted += sum(o.total() for o in book.levels[opp][p])     # reserves count
                continue
            for o in book.levels[opp][p]:
                if self.stp != S.STP_NONE and o.account == taker.account:
                    return counted
                counted += o.total()
        return counted

    def _remove_resting(self, book: _Book, o: _Order):
        """Take a resting order out of its level (deleting an emptied level) and the id map."""
        q = book.levels[o.side][o.price]
        q.remove(o)
        if not q:
            del book.levels[o.side][o.price]
        del book.orders[o.order_id]

    def _self_trade(self, book: _Book, q: deque, taker: _Order, maker: _Order) -> bool:
        """Self-trade prevention between the taker and its own resting `maker` (of level q), by
        the engine's mode. Returns True when the taker is stopped."""
        stp = self.stp
        if stp == S.STP_CANCEL_NEWEST:
            self._event(taker.order_id, taker.account, taker.side, S.EV_CANCELLED,
                        S.R_SELF_TRADE, taker.price, taker.leaves, 0)
            taker.leaves = 0
            return True
        if stp in (S.STP_CANCEL_OLDEST, S.STP_CANCEL_BOTH):
            self._event(maker.order_id, maker.account, maker.side, S.EV_CANCELLED,
                        S.R_SELF_TRADE, maker.price, maker.total(), 0)
            maker.leaves = 0
            maker.reserve = 0
            q.remove(maker)
            del book.orders[maker.order_id]
            if stp == S.STP_CANCEL_OLDEST:
                return False
            self._event(taker.order_id, taker.account, taker.side, S.EV_CANCELLED,
                        S.R_SELF_TRADE, taker.price, taker.leaves, 0)
            taker.leaves = 0
            return True
        if stp == S.STP_DECREMENT:
            # on total leaves; an iceberg maker loses its hidden reserve first, so its displayed
            # slice (and place) changes only once the reserve is gone
            d = min(taker.leaves, maker.total())
            r = min(d, maker.reserve)
            maker.reserve -= r
            maker.leaves -= d - r
            taker.leaves -= d
            if maker.leaves == 0:
                self._event(maker.order_id, maker.account, maker.side, S.EV_CANCELLED,
                            S.R_SELF_TRADE, maker.price, d, 0)
                q.remove(maker)
                del book.orders[maker.order_id]
            else:
                self._event(maker.order_id, maker.account, maker.side, S.EV_REPLACED,
                            S.R_SELF_TRADE, maker.price, d, maker.total())
            if taker.leaves == 0:
                self._event(taker.order_id, taker.account, taker.side, S.EV_CANCELLED,
                            S.R_SELF_TRADE, taker.price, d, 0)
                return True
            self._event(taker.order_id, taker.account, taker.side, S.EV_REPLACED,
                        S.R_SELF_TRADE, taker.price, d, taker.leaves)
            return False
        raise AssertionError(f"unknown stp mode {stp}")  # pragma: no cover

    def _trade(self, book: _Book, q: deque, taker: _Order, maker: _Order, price: int, f: int):
        """The taker fills f lots against `maker` of level q: fill row, maker and taker events."""
        book.last = price
        maker.leaves -= f
        taker.leaves -= f
        self._fill(taker, maker, price, f)
        self._event(maker.order_id, maker.account, maker.side,
                    S.EV_FILLED if maker.total() == 0 else S.EV_PARTIALLY_FILLED,
                    S.R_NONE, price, f, maker.total())
        self._event(taker.order_id, taker.account, taker.side,
                    S.EV_FILLED if taker.leaves == 0 else S.EV_PARTIALLY_FILLED,
                    S.R_NONE, price, f, taker.leaves)
        if maker.total() == 0:
            q.remove(maker)
            del book.orders[maker.order_id]
        elif maker.leaves == 0:
            # iceberg: a new slice from the reserve joins the back of the level (new time
            # priority; a replenished order is no longer its side's TOP order)
            maker.leaves = min(maker.display, maker.reserve)
            maker.reserve -= maker.leaves
            q.remove(maker)
            q.append(maker)
            if book.top[maker.side] is maker:
                book.top[maker.side] = None

    def _match(self, book: _Book, taker: _Order):
        opp = -taker.side
        stp = self.stp
        while taker.leaves > 0:
            p = book.best(opp)
            if p is None or not _crosses(taker.side, taker.price, taker.market, p):
                break
            if self._level_gate(book, taker, p):
                break
            q = book.levels[opp][p]
            touched = False
            stop = False
            if book.algo.steps == 0:
                # FIFO: makers in time priority, self-trades met in their place
                while q and taker.leaves > 0:
                    maker = q[0]
                    if stp == S.STP_NONE or maker.account != taker.account:
                        self._trade(book, q, taker, maker, p, min(taker.leaves, maker.leaves))
                    else:
                        stop = self._self_trade(book, q, taker, maker)
                        if stop and stp == S.STP_CANCEL_NEWEST:
                            break
                    touched = True
                    if stop:
                        break
            else:
                # other algorithms: the taker's own orders at the level first, then allocation
                if stp != S.STP_NONE:
                    for maker in list(q):
                        if maker.account == taker.account:
                            stop = self._self_trade(book, q, taker, maker)
                            if stp != S.STP_CANCEL_NEWEST:
                                touched = True
                            if stop:
                                break
                # allocation on displayed leaves; icebergs whose slice emptied joined the back
                # with a new slice: allocate the level again until the taker or level is done
                while not stop and taker.leaves > 0 and q:
                    alloc = allocate(book.algo, list(q), taker.leaves, book.top_order(opp))
                    for maker in list(q):          # time priority
                        if alloc[maker] > 0:
                            self._trade(book, q, taker, maker, p, alloc[maker])
                            touched = True
            if not q:
                del book.levels[opp][p]
            if touched:
                self._delta(book, opp, p)
            if stop:
                break

    def _remainder(self, book: _Book, taker: _Order):
        if taker.leaves <= 0:
            return
        if not taker.market and taker.tif in (S.TIF_GTC, S.TIF_DAY):
            if 0 < taker.display < taker.leaves:       # iceberg: only a slice shows
                taker.reserve = taker.leaves - taker.display
                taker.leaves = taker.display
            book.levels[taker.side].setdefault(taker.price, deque()).append(taker)
            book.orders[taker.order_id] = taker
            self._delta(book, taker.side, taker.price)
        else:
            self._event(taker.order_id, taker.account, taker.side, S.EV_EXPIRED, S.R_NONE,
                        taker.price, taker.leaves, 0)
            taker.leaves = 0

    def _cancel(self, row):
        book = self._book(row["symbol"])
        o = book.orders.get(row["order_id"])
        if o is None:
            return self._reject(row, S.R_UNKNOWN_ORDER)
        if o.account != row["account"]:
            return self._reject(row, S.R_NOT_OWNER, o.total())
        if o in book.stops:         # an untriggered stop: not in the book, no delta
            self._event(o.order_id, o.account, o.side, S.EV_CANCELLED, S.R_NONE, o.price, o.leaves, 0)
            book.stops.remove(o)
            del book.orders[o.order_id]
            return None
        r = self._risk(row, o.leaves)
        if r:
            return self._reject(row, r, o.leaves)
        self._event(o.order_id, o.account, o.side, S.EV_CANCELLED, S.R_NONE, o.price, o.total(), 0)
        self._remove_resting(book, o)
        o.leaves = 0
        o.reserve = 0
        self._delta(book, o.side, o.price)
        return None

    def _replace(self, row):
        book = self._book(row["symbol"])
        o = book.orders.get(row["order_id"])
        if o is None:
            return self._reject(row, S.R_UNKNOWN_ORDER)
        if o.account != row["account"]:
            return self._reject(row, S.R_NOT_OWNER, o.total())
        if row["display_qty"] != 0:      # a REPLACE keeps the order's display size
            return self._reject(row, S.R_INVALID_DISPLAY_QTY, o.total())
        qty, price = row["qty"], row["price_ticks"]
        if o in book.stops:
            return self._replace_stop(book, o, row)
        if qty <= 0:
            return self._reject(row, S.R_INVALID_QTY, o.total())
        if price <= 0:
            return self._reject(row, S.R_INVALID_PRICE, o.total())
        if row["stop_price_ticks"] != 0:
            return self._reject(row, S.R_UNEXPECTED_STOP_PRICE, o.total())
        if o.post_only:
            best = book.best(-o.side)
            if best is not None and _crosses(o.side, price, False, best):
                return self._reject(row, S.R_POST_ONLY_WOULD_TAKE, o.total())
        r = self._risk(row, o.leaves)
        if r:
            return self._reject(row, r, o.total())
        return self._apply_replace(book, o, qty, price)

    def _replace_stop(self, book: _Book, o: _Order, row):
        """REPLACE of an untriggered stop: new quantity, new limit price (a stop-market ignores
        the row's price), new stop price unless stop_price_ticks is 0. It keeps its place in
        the stop list only when just the quantity goes down (or stays)."""
        qty, price, stop = row["qty"], row["price_ticks"], row["stop_price_ticks"]
        if qty <= 0:
            return self._reject(row, S.R_INVALID_QTY, o.leaves)
        if not o.stop_market and price <= 0:
            return self._reject(row, S.R_INVALID_PRICE, o.leaves)
        if stop < 0:
            return self._reject(row, S.R_INVALID_STOP_PRICE, o.leaves)
        new_price = 0 if o.stop_market else price
        new_stop = stop if stop != 0 else o.stop
        if not (new_price == o.price and new_stop == o.stop and qty <= o.leaves):
            book.stops.remove(o)
            book.stops.append(o)
        o.leaves, o.price, o.stop = qty, new_price, new_stop
        self._event(o.order_id, o.account, o.side, S.EV_REPLACED, S.R_NONE, new_price, qty, qty)
        return None

    def _apply_replace(self, book: _Book, o: _Order, qty: int, price: int):
        """A REPLACE that passed every check: in place (same price, not more) or re-entered.
        For an iceberg qty is the new total: in place it keeps its slice up to qty (the reserve
        takes the rest), re-entered it rests with a new slice of its display size."""
        if price == o.price and qty <= o.total():
            changed = qty < o.leaves
            o.reserve = qty - min(qty, o.leaves)
            o.leaves = min(qty, o.leaves)
            if book.top[o.side] is o:      # replaced in any way: no longer TOP
                book.top[o.side] = None
            self._event(o.order_id, o.account, o.side, S.EV_REPLACED, S.R_NONE, price, qty, qty)
            if changed:
                self._delta(book, o.side, price)
            return None
        old_price = o.price
        self._remove_resting(book, o)
        self._delta(book, o.side, old_price)
        self._event(o.order_id, o.account, o.side, S.EV_REPLACED, S.R_NONE, price, qty, qty)
        taker = _Order(o.order_id, o.account, o.side, price, qty, o.tif, o.post_only, expire=o.expire,
                       display=o.display)
        self._match(book, taker)
        self._remainder(book, taker)
        return None


def allocate(algo, orders: list, R: int, top) -> dict:
    """README "Matching algorithms": how R lots of a taker are split among `orders` (one price
    level, time priority; none of the taker's account when STP is on). `top`: the makers' side's
    TOP order (or None). Returns {order: lots}, summing to min(R, total leaves)."""
    T = sum(o.leaves for o in orders)
    alloc = {o: 0 for o in orders}
    if R >= T:                                     # 0. everything fills
        for o in orders:
            alloc[o] = o.leaves
        return alloc

    def left(o):
        return o.leaves - alloc[o]

    if algo.steps & ALG_TOP and top is not None and top in alloc:      # 1. TOP
        a = min(R, left(top))
        alloc[top] += a
        R -= a
    if algo.steps & ALG_LMM:                       # 2. LMM share of what is left, time priority
        budget = R * algo.lmm_pct // 100
        for o in orders:
            if o.account in algo.lmm_accounts:
                a = min(left(o), budget)
                alloc[o] += a
                budget -= a
                R -= a
    if algo.steps & ALG_FIFO:                      # 3. FIFO share of what is left
        budget = R * algo.fifo_pct // 100
        for o in orders:
            a = min(left(o), budget)
            alloc[o] += a
            budget -= a
            R -= a
    if algo.steps & ALG_PRO and R > 0:             # 4. pro rata on the leaves still open
        Tp = sum(left(o) for o in orders)
        share = {o: R * left(o) // Tp for o in orders}
        for o in orders:
            if share[o] >= algo.min_alloc:
                alloc[o] += share[o]
                R -= share[o]
    for o in orders:                               # 5. FIFO residual
        a = min(left(o), R)
        alloc[o] += a
        R -= a
    assert R == 0, "allocation left quantity at a level that had more"
    assert all(0 <= alloc[o] <= o.leaves for o in orders)
    return alloc
