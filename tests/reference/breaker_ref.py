"""Plain-Python reference of the circuit breakers (kernels/risk/breaker.py and the risk build of the
matching step), on top of the reference matcher with risk checks (risk_matcher.py), written from
README "Circuit breakers":

- before a row, its symbol's timed transitions (limit state timed out -> PAUSED, pause over ->
  AUCTION, call period over -> the reopening auction, by brute force with auction_ref.py), then
  the band reference is re-read when its window has passed (every row without a window);
- while matching, a level outside the band stops the taker (beyond the band on the far side:
  the end; on the near side, a stale level: the remainder expires PRICE_BAND); a level more than
  velocity_ticks from the window's anchor pauses the symbol before it trades;
- a remainder that rests under a band rests at the band price; in a paused symbol, or after a
  velocity pause, it is parked until the auction;
- after a row, the limit state is entered or left from the book's best bid and ask.
"""
from __future__ import annotations

from collections import deque

from hpte.engine import schema as S

from .auction_ref import uncross_ref
from .matcher import _crosses
from .risk_matcher import RiskReferenceEngine

INF = float("inf")


class _Sym:
    def __init__(self):
        self.state = S.TS_CONTINUOUS
        self.since = 0
        self.until = 0
        self.ref = 0
        self.ref_ts = None
        self.lo, self.hi = 0, INF
        self.va_px, self.va_ts = 0, None
        self.cause = 0
        self.parked: list = []


class BreakerReferenceEngine(RiskReferenceEngine):
    def __init__(self, limits, stp: str = "none"):
        super().__init__(limits, stp)
        b = limits.breakers
        self.band_bps = b.get("band_bps")
        self.band_window = b.get("band_window_ns")
        self.limit_state_ns = b.get("limit_state_ns")
        self.pause_ns = b.get("pause_ns") or 0
        self.velocity_ticks = b.get("velocity_ticks")
        self.velocity_window = b.get("velocity_window_ns")
        self.auction_ns = b.get("auction_ns") or 0
        self.static = {s: d.get("reference_price_ticks", 0) for s, d in limits.symbols.items()}
        self.syms: dict[int, _Sym] = {}
        self._halt = 0

    # ---- helpers ------------------------------------------------------------------------------
    def _st(self, s) -> _Sym:
        return self.syms.setdefault(s, _Sym())

    def _emit(self, code, cause, px, q, state):
        seq, ts, sym = self._cur
        self._event(0, 0, 0, code, cause, px, q, 0)
        self._deltas.append((seq, ts, sym, 0, px, 0, state))

    def _pause(self, st, ts, cause):
        st.state, st.since, st.until, st.cause = S.TS_PAUSED, ts, ts + self.pause_ns, cause
        self._emit(S.EV_PAUSED, cause, st.ref, 0, S.TS_PAUSED)

    def _band(self, ref):
        d = ref * self.band_bps // 10_000
        return max(ref - d, 1), ref + d

    def _velocity_on(self):
        return self.velocity_ticks is not None and self.velocity_window is not None

    def _breach(self, st, ts, p) -> bool:
        if not self._velocity_on() or st.va_ts is None or ts - st.va_ts > self.velocity_window:
            return False
        return abs(p - st.va_px) > self.velocity_ticks

    def _clamp(self, st, side, price):
        if side == S.BUY and price > st.hi:
            return st.hi
        if side == S.SELL and price < st.lo:
            return st.lo
        return price

    # ---- per row ---------------------------------------------------------------------------------
    def _process(self, row):
        s, ts = row["symbol"], row["ts_ns"]
        self._begin(self.seq, ts, s)
        self._halt = 0
        st = self._st(s)
        if st.state == S.TS_LIMIT and self.limit_state_ns is not None and ts - st.since >= self.limit_state_ns:
            self._pause(st, ts, S.R_LIMIT_STATE)
        if st.state == S.TS_PAUSED and ts >= st.until:
            st.state, st.since, st.until = S.TS_AUCTION, ts, ts + self.auction_ns
            self._emit(S.EV_AUCTION, st.cause, st.ref, 0, S.TS_AUCTION)
        if st.state == S.TS_AUCTION and ts >= st.until:
            self._auction(s, st, ts)
        if st.state <= S.TS_LIMIT and self.band_bps is not None:
            if st.ref_ts is None or self.band_window is None or ts - st.ref_ts >= self.band_window:
                ref = self.risk.last.get(s, 0) or self.static.get(s, 0)
                if ref > 0:
                    st.ref, st.ref_ts = ref, ts
                    st.lo, st.hi = self._band(ref)
        super()._process(row)
        self._begin(self.seq, ts, s)
        if st.state > S.TS_LIMIT or self.band_bps is None or st.ref == 0:
            return
        book = self.books.get(s)
        bid = (book.best(S.BUY) or 0) if book else 0
        ask = (book.best(S.SELL) or 0) if book else 0
        up, down = bid > 0 and bid >= st.hi, ask > 0 and ask <= st.lo
        if st.state == S.TS_CONTINUOUS and (up or down):
            st.state, st.since = S.TS_LIMIT, ts
            self._emit(S.EV_LIMIT_STATE, S.R_PRICE_BAND, st.hi if up else st.lo, 0, S.TS_LIMIT)
        elif st.state == S.TS_LIMIT and not (up or down):
            st.state, st.since = S.TS_CONTINUOUS, ts
            self._emit(S.EV_RESUMED, S.R_PRICE_BAND, st.ref, 0, S.TS_CONTINUOUS)

    def _auction(self, s, st, ts):
        book = self._book(s)
        parked = set(id(o) for o in st.parked)
        bids = [o for p in book.prices(S.BUY) for o in book.levels[S.BUY][p]] + [o for o in st.parked if o.side == S.BUY]
        asks = [o for p in book.prices(S.SELL) for o in book.levels[S.SELL][p]] + [o for o in st.parked if o.side == S.SELL]
        bids.sort(key=lambda o: -o.price)      # stable: the book's orders, then the parked ones
        asks.sort(key=lambda o: o.price)
        ref = st.ref or self.risk.last.get(s, 0) or self.static.get(s, 0)
        price, vol, _imb, bf, af = uncross_ref([(o.price, o.leaves, t) for t, o in enumerate(bids)],
                                               [(o.price, o.leaves, t) for t, o in enumerate(asks)], ref or None)
        price = price or 0
        i = j = 0
        lb = bf[0] if bids else 0
        la = af[0] if asks else 0
        pairs = []
        while i < len(bids) and j < len(asks) and bf[i] > 0 and af[j] > 0:
            q = min(lb, la)
            pairs.append((i, j, q))
            lb -= q
            la -= q
            if lb == 0:
                i += 1
                lb = bf[i] if i < len(bids) else 0
            if la == 0:
                j += 1
                la = af[j] if j < len(asks) else 0
        seq, _ts, sym = self._cur
        for i, j, q in pairs:
            b, a = bids[i], asks[j]
            self._fills.append((seq, ts, sym, b.order_id, a.order_id, b.account, a.account, 0, price, q))
            for o in (b, a):
                o.leaves -= q
                if id(o) in parked:
                    if o.leaves == 0:
                        st.parked.remove(o)
                        del book.orders[o.order_id]
                else:
                    lp = o.price
                    if o.leaves == 0:
                        self._remove_resting(book, o)
                    self._delta(book, o.side, lp)
                self._event(o.order_id, o.account, o.side,
                            S.EV_FILLED if o.leaves == 0 else S.EV_PARTIALLY_FILLED, S.R_AUCTION, price, q, o.leaves)
                self.risk._party(s, o.order_id, o.account, o.side, price, q)
        for o in st.parked:
            book.levels[o.side].setdefault(o.price, deque()).append(o)
            self._delta(book, o.side, o.price)
        st.parked = []
        if price > 0:
            self.risk.last[s] = price
            st.va_px, st.va_ts, st.ref, st.ref_ts = price, ts, price, ts
            if self.band_bps is not None:
                st.lo, st.hi = self._band(price)
        st.state, st.since = S.TS_CONTINUOUS, ts
        self._emit(S.EV_RESUMED, st.cause, price, vol, S.TS_CONTINUOUS)
        st.cause = 0

    # ---- hooks of the reference matcher ---------------------------------------------------------
    def _paused_reject(self, row) -> int:
        st = self._st(row["symbol"])
        rests = row["order_type"] == S.OT_LIMIT and row["tif"] in (S.TIF_GTC, S.TIF_DAY)
        return S.RR_SYMBOL_PAUSED if st.state >= S.TS_PAUSED and not rests else 0

    def _level_gate(self, book, taker, p) -> bool:
        st = self._st(book.symbol)
        if st.state >= S.TS_PAUSED:
            return True
        far, near = (p > st.hi, p < st.lo) if taker.side == S.BUY else (p < st.lo, p > st.hi)
        if far:
            return True
        if near:
            self._halt = 1
            return True
        ts = self._cur[1]
        if self._breach(st, ts, p):
            self._pause(st, ts, S.R_VELOCITY)
            self._halt = 2
            return True
        return False

    def _fill(self, taker, maker, price, qty):
        super()._fill(taker, maker, price, qty)
        st, ts = self._st(self._cur[2]), self._cur[1]
        if st.va_ts is None or (self.velocity_window is not None and ts - st.va_ts > self.velocity_window):
            st.va_px, st.va_ts = price, ts

    def _fok_counted(self, book, taker) -> int:
        st, ts = self._st(book.symbol), self._cur[1]
        have = st.va_ts is not None and self.velocity_window is not None and ts - st.va_ts <= self.velocity_window
        anchor = st.va_px
        counted = 0
        for p in book.prices(-taker.side):
            if not _crosses(taker.side, taker.price, taker.market, p):
                break
            if p < st.lo or p > st.hi:
                return counted
            if self._velocity_on():
                if not have:
                    anchor, have = p, True
                elif abs(p - anchor) > self.velocity_ticks:
                    return counted
            for o in book.levels[-taker.side][p]:
                if self.stp != S.STP_NONE and o.account == taker.account:
                    return counted
                counted += o.leaves
        return counted

    def _remainder(self, book, taker):
        if taker.leaves <= 0:
            return
        st = self._st(book.symbol)
        rests = not taker.market and taker.tif in (S.TIF_GTC, S.TIF_DAY)
        if not rests or self._halt == 1:
            self._event(taker.order_id, taker.account, taker.side, S.EV_EXPIRED,
                        S.R_PRICE_BAND if self._halt == 1 else S.R_NONE, taker.price, taker.leaves, 0)
            taker.leaves = 0
            return
        if self._halt == 2 or st.state < S.TS_PAUSED:
            # rests at the band price: its open quantity counts at that price from now on
            taker.price = self._clamp(st, taker.side, taker.price)
            self.risk.open[(book.symbol, taker.order_id)]["px"] = taker.price
        if st.state >= S.TS_PAUSED:
            st.parked.append(taker)
            book.orders[taker.order_id] = taker
            return
        super()._remainder(book, taker)

    def _is_parked(self, s, o) -> bool:
        return any(p is o for p in self._st(s).parked)

    def _cancel(self, row):
        s = row["symbol"]
        book = self._book(s)
        o = book.orders.get(row["order_id"])
        if o is None or o.account != row["account"] or not self._is_parked(s, o):
            return super()._cancel(row)
        r = self._risk(row, o.leaves)
        if r:
            return self._reject(row, r, o.leaves)
        self._event(o.order_id, o.account, o.side, S.EV_CANCELLED, S.R_NONE, o.price, o.leaves, 0)
        self._st(s).parked.remove(o)
        del book.orders[o.order_id]
        o.leaves = 0
        return None

    def _apply_replace(self, book, o, qty, price):
        s = book.symbol
        st = self._st(s)
        parked = self._is_parked(s, o)
        in_place = price == o.price and qty <= o.leaves
        if st.state < S.TS_PAUSED or (not parked and in_place):
            return super()._apply_replace(book, o, qty, price)
        # paused: the order waits parked (a parked one keeps its place only for a decrease)
        if not parked:
            old = o.price
            self._remove_resting(book, o)
            self._delta(book, o.side, old)
            o.price, o.leaves = price, qty
            st.parked.append(o)
            book.orders[o.order_id] = o
        elif not in_place:
            st.parked.remove(o)
            o.price, o.leaves = price, qty
            st.parked.append(o)
        else:
            o.leaves = qty
        self._event(o.order_id, o.account, o.side, S.EV_REPLACED, S.R_NONE, price, qty, qty)
        return None
