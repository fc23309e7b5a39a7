"""Stateful hypothesis tests of the book, for every engine in IMPLS.

A RuleBasedStateMachine submits NEW limit orders, MARKET orders, stop and stop-limit orders,
cancels, replaces (of stops too), small random batches and end-of-session calls, and keeps a ledger built only from the engine's
outputs. Invariants after every step:

- never crossed at rest: per book, best bid < best ask;
- quantity conserved per order: filled + resting + cancelled + expired + decremented =
  submitted (ACCEPTED qty plus every user REPLACE's change), and every event's leaves_qty is
  the ledger's leaves minus the event's qty;
- waiting stops are nowhere in the book (book_l3, levels, deltas) until TRIGGERED, which only a
  waiting stop gets (qty = leaves = its leaves); then it is a taker like any other;
- price-time priority: within a level, book_l3 lists orders by the seq at which they entered
  it (ACCEPTED, or a re-entering REPLACE; in-place replaces and decrements keep it);
- book_levels qty/orders equal the book_l3 sums, depth-limited levels are a prefix, and the
  L2 deltas applied to an empty book give book_levels;
- fill rows pair with consecutive (maker, taker) fill events, output seq/ts are the row's.
"""
from __future__ import annotations

from collections import defaultdict

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from strategies import IMPLS, STP_MODES, as_rows, iter_rows, order_streams, rows_to_columns

from hpte.engine import schema as S

SYMBOLS = (0, 3)
ACCOUNTS = (1, 2, 3)
PRICES = st.integers(98, 102)
QTYS = st.integers(1, 9)


class _Entry:
    __slots__ = ("side", "account", "price", "leaves", "submitted", "filled", "cancelled",
                 "expired", "decremented", "stamp", "waiting", "display")

    def __init__(self, side, account, price, qty, stamp):
        self.side, self.account, self.price, self.leaves = side, account, price, qty
        self.submitted, self.filled, self.cancelled, self.expired, self.decremented = qty, 0, 0, 0, 0
        self.stamp = stamp
        self.waiting = False        # an untriggered stop (not in the book)
        self.display = 0            # an iceberg's slice size (the book shows at most that)

    def consumed(self):
        return self.filled + self.cancelled + self.expired + self.decremented


class BookMachine(RuleBasedStateMachine):
    factory = None  # set per impl below

    def __init__(self):
        super().__init__()
        self.eng = None
        self.seq = 0
        self.ts = 1_000
        self.next_id = 1
        self.used: list[tuple[int, int]] = []      # (symbol, id) of every NEW
        self.owner: dict[tuple[int, int], int] = {}
        self.live: dict[tuple[int, int], _Entry] = {}
        self.l2: dict[tuple[int, int, int], tuple[int, int]] = {}

    @initialize(stp=st.sampled_from(STP_MODES))
    def start(self, stp):
        self.stp = stp
        self.eng = type(self).factory(stp=stp)

    # ------------------------------------------------------------------ submitting
    def _fresh_id(self, data):
        if self.used and data.draw(st.integers(0, 7)) == 0:
            return data.draw(st.sampled_from(self.used))[1]      # duplicate or legal reuse
        self.next_id += 1
        return self.next_id - 1

    def _target(self, data):
        if self.live and data.draw(st.integers(0, 3)):
            key = data.draw(st.sampled_from(sorted(self.live)))
        elif self.used:
            key = data.draw(st.sampled_from(self.used))
        else:
            key = (0, 999_999)
        acct = self.owner.get(key, 1)
        if data.draw(st.integers(0, 9)) == 0:
            acct = data.draw(st.sampled_from(ACCOUNTS))
        return key, acct

    def _submit(self, rows):
        rows = [dict(r) for r in rows]
        for r in rows:
            self.ts += 1
            r["ts_ns"] = self.ts
        cols = rows_to_columns(rows)
        res = self.eng.submit(cols)
        inputs = list(iter_rows(cols))
        for r in inputs:
            if r["action"] == S.ACT_NEW:
                key = (r["symbol"], r["order_id"])
                if key not in self.owner:
                    self.used.append(key)
                self.owner[key] = r["account"]
        self._ledger(res, inputs, self.seq)
        self.seq += len(inputs)

    @rule(data=st.data(), side=st.sampled_from([S.BUY, S.SELL]), price=PRICES, qty=QTYS,
          tif=st.sampled_from([S.TIF_GTC, S.TIF_GTC, S.TIF_DAY, S.TIF_IOC, S.TIF_FOK]),
          acct=st.sampled_from(ACCOUNTS), sym=st.sampled_from(SYMBOLS), po=st.sampled_from([0, 0, 0, 1]))
    def submit_new(self, data, side, price, qty, tif, acct, sym, po):
        if tif in (S.TIF_IOC, S.TIF_FOK):
            po = 0
        self._submit([dict(order_id=self._fresh_id(data), side=side, price_ticks=price, qty=qty,
                           tif=tif, account=acct, symbol=sym, post_only=po)])

    @rule(data=st.data(), side=st.sampled_from([S.BUY, S.SELL]), qty=st.integers(1, 20),
          tif=st.sampled_from([S.TIF_IOC, S.TIF_FOK, S.TIF_GTC]), acct=st.sampled_from(ACCOUNTS),
          sym=st.sampled_from(SYMBOLS))
    def market(self, data, side, qty, tif, acct, sym):
        self._submit([dict(order_id=self._fresh_id(data), side=side, price_ticks=0, qty=qty,
                           order_type=S.OT_MARKET, tif=tif, account=acct, symbol=sym)])

    @rule(data=st.data(), side=st.sampled_from([S.BUY, S.SELL]), price=PRICES, stop=PRICES, qty=QTYS,
          otype=st.sampled_from([S.OT_STOP, S.OT_STOP_LIMIT]), tif=st.sampled_from([S.TIF_GTC, S.TIF_DAY]),
          acct=st.sampled_from(ACCOUNTS), sym=st.sampled_from(SYMBOLS))
    def stop_order(self, data, side, price, stop, qty, otype, tif, acct, sym):
        self._submit([dict(order_id=self._fresh_id(data), side=side, price_ticks=price, qty=qty,
                           order_type=otype, stop_price_ticks=stop, tif=tif, account=acct, symbol=sym)])

    @rule(data=st.data(), price=PRICES, stop=PRICES, qty=st.integers(0, 9))
    def replace_stop(self, data, price, stop, qty):
        (sym, oid), acct = self._target(data)
        self._submit([dict(order_id=oid, side=S.BUY, price_ticks=price, qty=qty, action=S.ACT_REPLACE,
                           stop_price_ticks=stop, account=acct, symbol=sym)])

    @rule(data=st.data())
    def cancel(self, data):
        (sym, oid), acct = self._target(data)
        self._submit([dict(order_id=oid, side=S.BUY, price_ticks=0, qty=0, action=S.ACT_CANCEL,
                           account=acct, symbol=sym)])

    @rule(data=st.data(), price=PRICES, qty=st.integers(0, 9))
    def replace(self, data, price, qty):
        (sym, oid), acct = self._target(data)
        e = self.live.get((sym, oid))
        if e is not None and data.draw(st.booleans()):
            price = e.price          # same price: in place (qty <= leaves) or re-enter (qty up)
            if data.draw(st.booleans()):
                qty = e.leaves + data.draw(st.integers(-1, 3))
        self._submit([dict(order_id=oid, side=S.BUY, price_ticks=price, qty=qty, action=S.ACT_REPLACE,
                           account=acct, symbol=sym)])

    @rule(cols=order_streams(max_rows=6, first_id=10_000, stops=True, icebergs=True))
    def submit_batch(self, cols):
        self._submit(list(iter_rows(cols)))

    @rule()
    def end_session(self):
        self.ts += 1
        res = self.eng.end_session(self.ts)
        evs = as_rows(res.events, S.EVENT_COLUMNS)
        assert len(res.fills["seq"]) == 0
        for seq, ts, sym, oid, acct, side, ev, rsn, px, qty, leaves in evs:
            assert (seq, ts, ev, rsn, leaves) == (self.seq, self.ts, S.EV_EXPIRED, S.R_END_OF_SESSION, 0)
        self._ledger(res, None, self.seq)
        for row in as_rows(self.eng.book_l3(), S.L3_COLUMNS):
            assert row[6] != S.TIF_DAY, f"DAY order {row} survived end_session"

    # ------------------------------------------------------------------ the ledger
    def _ledger(self, res, inputs, seq0):
        events = as_rows(res.events, S.EVENT_COLUMNS)
        fills = as_rows(res.fills, S.FILL_COLUMNS)
        deltas = as_rows(res.deltas, S.DELTA_COLUMNS)
        n_in = len(inputs) if inputs is not None else 0
        # seq/ts of every output row: the input row's (end_session: next seq, its ts)
        for kind, rows in (("event", events), ("fill", fills), ("delta", deltas)):
            last = seq0
            for r in rows:
                seq, ts = r[0], r[1]
                assert last <= seq, f"{kind} seq goes back: {r}"
                last = seq
                if inputs is not None:
                    assert seq0 <= seq < seq0 + n_in, f"{kind} {r}: seq outside this batch"
                    assert ts == inputs[seq - seq0]["ts_ns"] and r[2] == inputs[seq - seq0]["symbol"], r
                else:
                    assert seq == seq0 and ts == self.ts, r
        # fills pair with consecutive (maker, taker) fill events
        fill_ev = [i for i, e in enumerate(events) if e[6] in (S.EV_FILLED, S.EV_PARTIALLY_FILLED)]
        assert len(fill_ev) == 2 * len(fills), "two fill events (maker, taker) per fill row"
        for k, f in enumerate(fills):
            i, j = fill_ev[2 * k], fill_ev[2 * k + 1]
            assert j == i + 1, f"maker and taker events of fill {f} are not adjacent"
            m, t = events[i], events[j]
            fseq, _, fsym, tid, mid, tacc, macc, tside, px, q = f
            assert q > 0
            assert (m[0], m[2], m[3], m[4], m[5], m[8], m[9]) == (fseq, fsym, mid, macc, -tside, px, q), (f, m)
            assert (t[0], t[2], t[3], t[4], t[5], t[8], t[9]) == (fseq, fsym, tid, tacc, tside, px, q), (f, t)
        # per-order quantity bookkeeping; time priority stamps are (seq, event index): the orders
        # one row puts in the book (the row's own, then the stops it triggers) enter in event order
        for n_ev, e in enumerate(events):
            seq, _, sym, oid, acct, side, ev, rsn, px, qty, leaves = e
            key = (sym, oid)
            if ev == S.EV_REJECTED:
                assert inputs is not None
                r = inputs[seq - seq0]
                assert (oid, acct, side, px, qty) == (r["order_id"], r["account"], r["side"],
                                                      r["price_ticks"], r["qty"]), (e, r)
                target = self.live.get(key)
                if r["action"] in (S.ACT_CANCEL, S.ACT_REPLACE) and target is not None:
                    assert rsn != S.R_UNKNOWN_ORDER, e
                    assert leaves == target.leaves, e
                else:
                    assert leaves == 0, e
                continue
            if ev == S.EV_ACCEPTED:
                assert key not in self.live, f"ACCEPTED {e} while {key} rests"
                assert qty == leaves > 0
                self.live[key] = _Entry(side, acct, px, qty, (seq, n_ev))
                r = inputs[seq - seq0]
                self.live[key].waiting = r["order_type"] in (S.OT_STOP, S.OT_STOP_LIMIT)
                self.live[key].display = r.get("display_qty", 0)
                continue
            entry = self.live.get(key)
            assert entry is not None, f"event {e} for an order that is not live"
            assert (acct, side) == (entry.account, entry.side), (e, entry.account, entry.side)
            if ev == S.EV_TRIGGERED:
                assert entry.waiting and qty == leaves == entry.leaves and rsn == S.R_NONE, e
                entry.waiting = False
                entry.stamp = (seq, n_ev)   # it enters the book now
                continue
            if entry.waiting:
                assert ev in (S.EV_REPLACED, S.EV_CANCELLED, S.EV_EXPIRED) and rsn in (
                    S.R_NONE, S.R_END_OF_SESSION), f"{e}: a waiting stop does not trade"
            if ev == S.EV_REPLACED and rsn == S.R_NONE:
                assert qty == leaves > 0
                in_place = px == entry.price and qty <= entry.leaves
                entry.submitted += qty - entry.leaves
                entry.leaves = qty
                entry.price = px
                if not in_place:
                    entry.stamp = (seq, n_ev)
                continue
            assert 0 < qty <= entry.leaves, f"{e}: qty vs leaves {entry.leaves}"
            assert leaves == entry.leaves - qty, f"{e}: leaves should be {entry.leaves - qty}"
            entry.leaves = leaves
            if ev in (S.EV_FILLED, S.EV_PARTIALLY_FILLED):
                assert (ev == S.EV_FILLED) == (leaves == 0), e
                entry.filled += qty
            elif ev == S.EV_CANCELLED:
                assert leaves == 0 and (rsn == S.R_NONE or rsn == S.R_SELF_TRADE), e
                entry.cancelled += qty
            elif ev == S.EV_EXPIRED:
                assert leaves == 0 and rsn in (S.R_NONE, S.R_FOK_NOT_FILLABLE, S.R_END_OF_SESSION), e
                entry.expired += qty
            elif ev == S.EV_REPLACED:
                assert rsn == S.R_SELF_TRADE and self.stp == "decrement" and leaves > 0, e
                entry.decremented += qty
            else:
                raise AssertionError(f"unknown event code in {e}")
            if rsn == S.R_SELF_TRADE:
                assert self.stp != "none", f"self-trade event under STP none: {e}"
            if entry.leaves == 0:
                assert entry.consumed() == entry.submitted, f"{key}: quantity not conserved"
                del self.live[key]
        for e in self.live.values():
            assert e.consumed() + e.leaves == e.submitted
        # L2 deltas
        for _seq, _ts, sym, side, px, qty, n in deltas:
            assert qty >= 0 and n >= 0 and (qty == 0) == (n == 0), (sym, side, px, qty, n)
            if n == 0:
                self.l2.pop((sym, side, px), None)
            else:
                self.l2[(sym, side, px)] = (qty, n)

    # ------------------------------------------------------------------ invariants
    @invariant()
    def book_consistent(self):
        if self.eng is None:
            return
        levels = as_rows(self.eng.book_levels(), S.LEVEL_COLUMNS)
        l3 = as_rows(self.eng.book_l3(), S.L3_COLUMNS)
        # L3 = the ledger's live orders (waiting stops are not in the book), quantity and price
        in_book = sum(1 for e in self.live.values() if not e.waiting)
        assert len(l3) == in_book, f"book_l3 has {len(l3)} orders, ledger {in_book}"
        for sym, side, px, oid, acct, qty, tif in l3:
            e = self.live.get((sym, oid))
            assert e is not None and not e.waiting, f"resting order {(sym, oid)} unknown to the ledger or a stop"
            if e.display:       # an iceberg shows a slice of its total leaves
                assert (side, px, acct) == (e.side, e.price, e.account) and 0 < qty <= min(e.display, e.leaves)
            else:
                assert (side, px, acct, qty) == (e.side, e.price, e.account, e.leaves), (sym, oid)
            assert tif in (S.TIF_GTC, S.TIF_DAY)
        # books ascending, bids best->worst then asks best->worst, FIFO by stamp
        key = [(sym, 0 if side == S.BUY else 1, -px if side == S.BUY else px) for sym, side, px, *_ in l3]
        assert key == sorted(key), "book_l3 not in book/side/price order"
        last = {}
        for sym, side, px, oid, *_ in l3:
            if self.live[(sym, oid)].display:
                continue        # a replenished slice has a new time priority the ledger cannot see
            st_ = self.live[(sym, oid)].stamp
            k = (sym, side, px)
            assert k not in last or last[k] < st_, f"price-time priority broken at {k}: order {oid}"
            last[k] = st_
        # levels = L3 sums, numbered 0.. per side
        sums = defaultdict(lambda: [0, 0])
        for sym, side, px, oid, acct, qty, tif in l3:
            sums[(sym, side, px)][0] += qty
            sums[(sym, side, px)][1] += 1
        got = {(sym, side, px): (qty, n) for sym, side, lvl, px, qty, n in levels}
        assert len(got) == len(levels)
        assert got == {k: tuple(v) for k, v in sums.items()}, "levels differ from L3 sums"
        assert got == self.l2, "L2 deltas replayed do not give book_levels"
        count = defaultdict(int)
        prev = None
        for sym, side, lvl, px, qty, n in levels:
            assert lvl == count[(sym, side)], "level numbers"
            count[(sym, side)] += 1
            k = (sym, 0 if side == S.BUY else 1, -px if side == S.BUY else px)
            assert prev is None or prev < k, "levels order"
            prev = k
        # depth-limited levels
        top = as_rows(self.eng.book_levels(1), S.LEVEL_COLUMNS)
        assert top == [r for r in levels if r[2] < 1]
        # never crossed
        best = {}
        for sym, side, lvl, px, qty, n in levels:
            if lvl == 0:
                best[(sym, side)] = px
        for (sym, side), px in best.items():
            if side == S.BUY and (sym, S.SELL) in best:
                assert px < best[(sym, S.SELL)], f"book {sym} crossed: bid {px} ask {best[(sym, S.SELL)]}"


for _name, _factory in IMPLS.items():
    _cls = type(f"BookMachine_{_name}", (BookMachine,), {"factory": staticmethod(_factory)})
    globals()[f"TestBook_{_name}"] = _cls.TestCase
del _name, _factory, _cls
