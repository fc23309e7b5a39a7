"""Plain-Python reference of the no-impact tick backtest (hpte.kernels.backtest.loop).

Slow and obvious: dicts for the books and the market order ids, a list of the strategy's
orders at the exchange, explicit FIFO lists for the request and response channels, and the
strategy's callbacks called as plain Python on the same arrays. The rules are the loop's
docstring; everything here is written again from them, not copied from the kernel.
"""
from __future__ import annotations

import numpy as np

from hpte.kernels.backtest import api as A

M64 = (1 << 64) - 1


class SplitMix:
    def __init__(self, state: int):
        self.s = state & M64

    def next(self) -> int:
        self.s = (self.s + 0x9E3779B97F4A7C15) & M64
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        return z ^ (z >> 31)

    def latency(self, lo: int, hi: int) -> int:
        return lo if hi <= lo else lo + self.next() % (hi - lo + 1)


def draw(rng: SplitMix, spec) -> int:
    """A channel's next latency: spec (lo, hi), or an array of observed values (a table: one
    picked uniformly by the stream's next value)."""
    if isinstance(spec, np.ndarray):
        return int(spec[rng.next() % len(spec)])
    return rng.latency(*spec)


def _noop(md, orders, params, state, act):
    return None


# queue models of L2 data (the kernel's Q_*): 0 none (L3), 1 conservative, 2 power, 3 log
def prob_behind(model, param, front, back):
    """f(back) / (f(back) + f(front)): the chance that a level decrease is behind the order."""
    import math

    if model == 3:
        fa, fb = math.log1p(float(front)), math.log1p(float(back))
    else:
        n = param / 1000.0
        fa, fb = float(front) ** n, float(back) ** n
    return fb / (fa + fb)


STRAT, MKT = "strategy", "market"


class PlainBook:
    """The impact mode's book, written plainly: per side a dict price -> list of orders (dicts
    with id, acct, qty) in time priority. Matching is price-time; a taker meeting an order of
    its own account stops there and does not rest (self-trade prevention, cancel newest)."""

    def __init__(self):
        self.side = {1: {}, -1: {}}
        self.where = {}             # id -> (side, price)

    def best(self, side):
        ps = [p for p, lv in self.side[side].items() if lv]
        if not ps:
            return None
        return max(ps) if side == 1 else min(ps)

    def find(self, oid):
        if oid not in self.where:
            return None
        s, p = self.where[oid]
        for o in self.side[s][p]:
            if o["id"] == oid:
                return o
        raise AssertionError("index out of step")

    def ahead(self, oid):
        if oid not in self.where:
            return 0
        s, p = self.where[oid]
        a = 0
        for o in self.side[s][p]:
            if o["id"] == oid:
                return a
            a += o["qty"]
        raise AssertionError("index out of step")

    def remove(self, oid):
        s, p = self.where.pop(oid)
        self.side[s][p] = [o for o in self.side[s][p] if o["id"] != oid]

    def take(self, oid, q, gone):
        """Reduce order oid by min(q, its qty), keeping its place; remove it when nothing is left
        or when ``gone``. Returns the quantity taken off."""
        o = self.find(oid)
        if o is None:
            return 0
        if gone or q >= o["qty"]:
            self.remove(oid)
            return o["qty"]
        if q <= 0:
            return 0
        o["qty"] -= q
        return q

    def take_back(self, side, px, q):
        """Up to q off the replayed orders at (side, px), the most recent first."""
        done = 0
        for o in reversed(list(self.side[side].get(px, []))):
            if done >= q:
                break
            if o["acct"] == MKT:
                done += self.take(o["id"], q - done, False)
        return done

    def take_level(self, side, px, q):
        """Quantity q of orders the stream never introduced, at (side, px): the level's seed
        order first, then its other replayed orders, the most recent first (never the
        strategy's)."""
        done = self.take(("seed", side, px), q, False)
        if done < q:
            done += self.take_back(side, px, q - done)
        return done

    def cap(self, side, px, d):
        """The replayed orders at (side, px) hold at most d: the excess off the most recent."""
        have = sum(o["qty"] for o in self.side[side].get(px, []) if o["acct"] == MKT)
        if have > d:
            self.take_back(side, px, have - d)

    def submit(self, oid, acct, side, px, qty, rests):
        """A new order (px None: market). Returns its fills [(taker id, maker id, maker acct,
        price, qty)] in matching order and whether it rests."""
        fills = []
        stopped = False
        while qty > 0 and not stopped:
            bp = self.best(-side)
            if bp is None or (px is not None and ((side == 1 and bp > px) or (side == -1 and bp < px))):
                break
            level = self.side[-side][bp]
            while level and qty > 0:
                m = level[0]
                if m["acct"] == acct:
                    stopped = True
                    break
                f = min(qty, m["qty"])
                qty -= f
                m["qty"] -= f
                fills.append((oid, m["id"], m["acct"], bp, f))
                if m["qty"] == 0:
                    level.pop(0)
                    del self.where[m["id"]]
        if stopped or qty == 0 or not rests:
            return fills, False
        self.side[side].setdefault(px, []).append(dict(id=oid, acct=acct, qty=qty))
        self.where[oid] = (side, px)
        return fills, True


class Runaway(Exception):
    """The strategy took more than ``max_instant`` actions at the local instant ``t``."""

    def __init__(self, t: int):
        super().__init__(f"runaway at {t}")
        self.t = t


def run_reference(module, events: dict, *, params, state_size, tick, base, L, feed=(0, 0), entry=(0, 0),
                  response=(0, 0), seed=0, maker_fee=0, taker_fee=0, timer_ns=0, sample_ns=60_000_000_000,
                  depth=1, max_instant=0, mode="no-impact", queue=(0, 0)):
    """Run a strategy module over event columns; returns (fills, log, equity, md, state, orders)
    with rows as tuples in the kernel's column order (loop.FL_*, EL_*, EQ_*). Raises Runaway when
    the actions taken at one local instant exceed ``max_instant`` (> 0). ``mode="impact"``: the
    exchange is a PlainBook holding the replayed orders and the strategy's, with the replay
    rules of hpte.kernels.backtest.impact (written again here from that list). feed, entry,
    response: (lo, hi) or an int64 array of observed latencies (``draw``). ``queue`` =
    (model, param) != (0, 0): the events are L2 data (LEVEL and TRADE rows) and the strategy's
    resting orders move by that queue model (1 conservative, 2 power with n = param / 1000,
    3 log; draws from their own SplitMix stream seed * 3 + 4)."""
    impact = mode == "impact"
    pb = PlainBook()
    cb = {name: getattr(module, name, _noop) for name in ("on_book", "on_trade", "on_order", "on_fill", "on_timer")}
    ts = [int(x) for x in events["ts_ns"]]
    kind = [int(x) for x in events["kind"]]
    oids = [int(x) for x in events["order_id"]]
    sides = [int(x) for x in events["side"]]
    pxs = [int(x) for x in events["price"]]
    qtys = [int(x) for x in events["qty"]]
    n = len(ts)
    rng_f, rng_e, rng_r, rng_q = (SplitMix(seed * 3 + j + 1) for j in range(4))
    qmodel, qparam = queue
    params = np.asarray(params, np.float64)
    state = np.zeros(state_size, np.float64)
    md = A.new_md()
    md[A.MD_TICK] = tick
    orders = A.new_orders()
    act = A.new_actions()
    xbook = {1: {}, -1: {}}     # exchange: side -> {price: qty}
    lbook = {1: {}, -1: {}}     # strategy's view
    ids = {}                    # market order id -> [arrival seq, open qty]
    mine = []                   # strategy orders at the exchange, in id order (dicts)
    requests = []               # FIFO: dicts with 't'
    responses = []
    last = {"req": -(1 << 63), "rsp": -(1 << 63)}
    acct = {"pos": 0, "cash": 0, "fees": 0}
    fills, log, equity = [], [], []
    seq = 0

    def best(book, side):
        ps = [p for p, q in book[side].items() if q > 0]
        if not ps:
            return None
        return max(ps) if side == 1 else min(ps)

    def levels(book, side):
        ps = sorted((p for p, q in book[side].items() if q > 0), reverse=(side == 1))
        return [(p, book[side][p]) for p in ps]

    def respond(t, kind_, oid, px, qty, leaves, ahead, reason, maker, side, fee):
        arr = max(last["rsp"], t + draw(rng_r, response))
        last["rsp"] = arr
        responses.append(dict(t=arr, kind=kind_, oid=oid, px=px, qty=qty, leaves=leaves, ahead=ahead,
                              reason=reason, maker=maker, side=side, xts=t, fee=fee))

    def fill(o, px, q, maker, t, s):
        fee = q * (maker_fee if maker else taker_fee)
        o["leaves"] -= q
        acct["pos"] += o["side"] * q
        acct["cash"] -= o["side"] * px * q + fee
        acct["fees"] += fee
        fills.append((t, o["id"], o["side"], px, q, maker, fee, acct["pos"], acct["cash"], s, t - o["ts"]))
        respond(t, A.EV_FILL, o["id"], px, q, o["leaves"], o["ahead"], 0, maker, o["side"], fee)

    def tidy():
        mine[:] = [o for o in mine if o["leaves"] > 0 and not o.get("gone")]

    def find_mine(oid):
        for o in mine:
            if o["id"] == oid:
                return o
        raise AssertionError(f"no strategy order {oid}")

    def book_fills(fl, t, taker):
        """The strategy's fills among a book operation's fills (ahead counted after it)."""
        for tid, mid, macct, px, q in fl:
            if taker is not None:
                o, maker = find_mine(tid), 0
            elif macct == STRAT:
                o, maker = find_mine(mid), 1
            else:
                continue
            o["ahead"] = pb.ahead(o["id"])
            fill(o, px, q, maker, t, seq)

    def market_impact(i):
        nonlocal seq
        k, s, p, q, oid, t = kind[i], sides[i], pxs[i], qtys[i], oids[i], ts[i]
        target, gone = None, False
        if k in (A.MK_CANCEL, A.MK_EXEC):
            if oid >= 0 and oid in ids:
                target = ("add", ids[oid][0])
                ids[oid][1] -= q
                if ids[oid][1] <= 0:
                    del ids[oid]
                    gone = True
            else:
                target = ("seed", s, p)
        if k in (A.MK_ADD, A.MK_SEED):
            xbook[s][p] = xbook[s].get(p, 0) + q        # the data's own book, for rule 7
        elif k in (A.MK_CANCEL, A.MK_EXEC):
            xbook[s][p] = max(0, xbook[s].get(p, 0) - q)
        if k == A.MK_ADD:
            ids[oid] = [seq, q]
            fl, _ = pb.submit(("add", seq), MKT, s, p, q, True)
            book_fills(fl, t, None)
        elif k == A.MK_SEED:
            key = ("seed", s, p)
            old = pb.find(key)
            if old is not None:
                q += old["qty"]
                pb.remove(key)
            fl, _ = pb.submit(key, MKT, s, p, q, True)
            book_fills(fl, t, None)
        elif k == A.MK_CANCEL:
            if target[0] == "seed":
                pb.take_level(s, p, q)
            else:
                pb.take(target, q, gone)
        else:
            if k == A.MK_EXEC:
                lim = p
            elif s == 1:
                lim = base + ((p - base) // tick + 1) * tick
            else:
                lim = base + (-((base - p) // tick) - 1) * tick
            fl, _ = pb.submit("aggressor", MKT, -s, lim, q, False)
            book_fills(fl, t, None)
            if k == A.MK_EXEC:
                if target[0] == "seed":
                    pb.take_level(s, p, q - sum(f[4] for f in fl))
                else:
                    pb.take(target, q - sum(f[4] for f in fl), gone)
        if k in (A.MK_CANCEL, A.MK_EXEC):
            pb.cap(s, p, xbook[s].get(p, 0))
        tidy()
        seq += 1

    def market_l2(i):
        """An L2 row at the exchange: the level's new quantity, or a trade; the queue model."""
        nonlocal seq
        k, s, p, q, t = kind[i], sides[i], pxs[i], qtys[i], ts[i]
        prev = 0
        if k == A.MK_LEVEL:
            prev = xbook[s].get(p, 0)
            xbook[s][p] = q
            grown = q - prev
        else:
            grown = q
        left = grown                    # volume the strategy's orders may still take
        for o in mine:
            if o["leaves"] <= 0:
                continue
            if k == A.MK_LEVEL:
                if o["side"] == s and o["px"] == p:
                    dec = prev - q - o["traded"]
                    o["traded"] = 0
                    a = o["ahead"]
                    if dec > 0 and a > 0 and qmodel != 1:
                        back = prev - a
                        if back <= 0:
                            a -= min(dec, a)
                        else:
                            u = (rng_q.next() >> 11) / 9007199254740992.0
                            if u < prob_behind(qmodel, qparam, a, back):
                                a -= min(max(dec - back, 0), a)
                            else:
                                a -= min(dec, a)
                    o["ahead"] = min(a, q)
                    assert 0 <= o["ahead"] <= q, "queue position outside [0, level]"
                elif o["side"] == -s and left > 0 and ((o["side"] == 1 and p <= o["px"]) or
                                                       (o["side"] == -1 and p >= o["px"])):
                    f = min(left, o["leaves"])
                    left -= f
                    fill(o, o["px"], f, 1, t, seq)
            elif o["side"] == s:        # a trade against resting quantity on side s at p
                if (s == 1 and o["px"] > p) or (s == -1 and o["px"] < p):
                    if left > 0:
                        f = min(left, o["leaves"])
                        left -= f
                        fill(o, o["px"], f, 1, t, seq)
                elif o["px"] == p:
                    o["traded"] += q
                    c = min(q, o["ahead"])
                    o["ahead"] -= c
                    assert o["ahead"] >= 0, "queue position negative"
                    f = min(q - c, o["leaves"], left)
                    if f > 0:
                        left -= f
                        fill(o, o["px"], f, 1, t, seq)
        tidy()
        seq += 1

    def market(i):
        nonlocal seq
        if impact:
            return market_impact(i)
        if qmodel:
            return market_l2(i)
        k, s, p, q, oid, t = kind[i], sides[i], pxs[i], qtys[i], oids[i], ts[i]
        arrival = None
        if k in (A.MK_ADD, A.MK_SEED):
            xbook[s][p] = xbook[s].get(p, 0) + q
            if k == A.MK_ADD:
                ids[oid] = [seq, q]
        elif k in (A.MK_CANCEL, A.MK_EXEC):
            xbook[s][p] = max(0, xbook[s].get(p, 0) - q)
            if oid >= 0 and oid in ids:
                arrival = ids[oid][0]
                ids[oid][1] -= q
                if ids[oid][1] <= 0:
                    del ids[oid]
        avail = q
        for o in mine:
            if o["leaves"] <= 0:
                continue
            if k == A.MK_SEED:
                if o["side"] == s and o["px"] == p:
                    o["ahead"] += q
            elif k == A.MK_CANCEL:
                if o["side"] == s and o["px"] == p and (arrival is None or arrival < o["entry"]):
                    o["ahead"] = max(0, o["ahead"] - q)
            elif k == A.MK_ADD:
                crosses = (o["side"] == 1 and p <= o["px"]) or (o["side"] == -1 and p >= o["px"])
                if o["side"] == -s and crosses and avail > 0:
                    f = min(avail, o["leaves"])
                    avail -= f
                    fill(o, o["px"], f, 1, t, seq)
            elif o["side"] == s:
                through = (s == 1 and o["px"] > p) or (s == -1 and o["px"] < p)
                if through:
                    if avail > 0:
                        f = min(avail, o["leaves"])
                        avail -= f
                        fill(o, o["px"], f, 1, t, seq)
                elif k == A.MK_EXEC and o["px"] == p:
                    c = min(q, o["ahead"])
                    o["ahead"] -= c
                    f = min(q - c, o["leaves"], avail)
                    if f > 0:
                        avail -= f
                        fill(o, o["px"], f, 1, t, seq)
        tidy()
        seq += 1

    def request(r):
        t = r["t"]
        if r["action"] == A.A_CANCEL:
            for o in mine:
                if o["id"] == r["oid"]:
                    if impact:
                        o["ahead"] = pb.ahead(o["id"])
                        pb.remove(o["id"])
                    log.append((t, o["id"], A.EV_CANCELLED, o["side"], o["px"], 0, o["leaves"], o["ahead"], 0, 0, 0))
                    respond(t, A.EV_CANCELLED, o["id"], o["px"], 0, o["leaves"], 0, 0, 0, o["side"], 0)
                    o["gone"] = True
                    tidy()
                    return
            log.append((t, r["oid"], A.EV_REJECTED, 0, 0, 0, 0, 0, A.RJ_UNKNOWN, 0, 0))
            respond(t, A.EV_REJECTED, r["oid"], 0, 0, 0, 0, A.RJ_UNKNOWN, 0, 0, 0)
            return
        side, px, qty, otype, tif = r["side"], r["px"], r["qty"], r["type"], r["tif"]
        reason = 0
        if qty <= 0:
            reason = A.RJ_QTY
        elif otype != A.T_MARKET and (px <= 0 or (px - base) % tick != 0):
            reason = A.RJ_PRICE
        elif otype != A.T_MARKET and not (0 <= (px - base) // tick < L):
            reason = A.RJ_RANGE
        elif len(mine) >= A.MAX_ORDERS:
            reason = A.RJ_TOO_MANY
        opp = pb.best(-side) if impact else best(xbook, -side)
        if reason == 0 and otype == A.T_MARKET and opp is None:
            reason = A.RJ_NO_LIQUIDITY
        crosses = False
        if reason == 0 and opp is not None:
            crosses = otype == A.T_MARKET or (side == 1 and px >= opp) or (side == -1 and px <= opp)
            if crosses and r["post"] and not (impact and otype == A.T_MARKET):
                reason = A.RJ_POST_ONLY
        if reason:
            log.append((t, r["oid"], A.EV_REJECTED, side, px, qty, 0, 0, reason, otype, tif))
            respond(t, A.EV_REJECTED, r["oid"], px, 0, 0, 0, reason, 0, side, 0)
            return
        if impact:
            rests = otype != A.T_MARKET and tif != A.TIF_IOC
            o = dict(id=r["oid"], side=side, px=px, leaves=qty, ahead=0, entry=seq, ts=t)
            mine.append(o)
            fl, rested = pb.submit(o["id"], STRAT, side, None if otype == A.T_MARKET else px, qty, rests)
            o["ahead"] = pb.ahead(o["id"])
            log.append((t, o["id"], A.EV_ACCEPTED, side, px, qty, qty, o["ahead"], 0, otype, tif))
            respond(t, A.EV_ACCEPTED, o["id"], px, 0, qty, o["ahead"], 0, 0, side, 0)
            book_fills(fl, t, True)
            if o["leaves"] > 0 and not rested:
                log.append((t, o["id"], A.EV_EXPIRED, side, px, 0, o["leaves"], 0, 0, otype, tif))
                respond(t, A.EV_EXPIRED, o["id"], px, 0, o["leaves"], 0, 0, 0, side, 0)
                o["gone"] = True
            tidy()
            return
        ahead = xbook[side].get(px, 0) if (not crosses and tif != A.TIF_IOC) else 0
        o = dict(id=r["oid"], side=side, px=px, leaves=qty, ahead=ahead, entry=seq, ts=t, traded=0)
        mine.append(o)
        log.append((t, o["id"], A.EV_ACCEPTED, side, px, qty, qty, ahead, 0, otype, tif))
        respond(t, A.EV_ACCEPTED, o["id"], px, 0, qty, ahead, 0, 0, side, 0)
        if crosses:
            for lpx, lq in levels(xbook, -side):
                if o["leaves"] <= 0:
                    break
                if otype != A.T_MARKET and ((side == 1 and lpx > px) or (side == -1 and lpx < px)):
                    break
                fill(o, lpx, min(lq, o["leaves"]), 0, t, seq)
        if o["leaves"] > 0 and (crosses or tif == A.TIF_IOC):
            log.append((t, o["id"], A.EV_EXPIRED, side, px, 0, o["leaves"], 0, 0, otype, tif))
            respond(t, A.EV_EXPIRED, o["id"], px, 0, o["leaves"], 0, 0, 0, side, 0)
            o["gone"] = True
        tidy()

    instant = {"t": None, "n": 0}

    def send(t):
        nact = int(act[0, 0])
        act[0, 0] = 0
        if nact and max_instant > 0:
            if instant["t"] != t:
                instant["t"], instant["n"] = t, 0
            instant["n"] += nact
            if instant["n"] > max_instant:
                raise Runaway(t)
        for a in range(1, nact + 1):
            row = act[a]
            action, oid = int(row[A.AF_ACTION]), int(row[A.AF_ID])
            if action == A.A_NEW:
                free = [i for i in range(A.MAX_ORDERS) if orders[i, A.OF_ID] == 0]
                if not free:
                    log.append((t, oid, A.EV_REJECTED, int(row[A.AF_SIDE]), int(row[A.AF_PX]), int(row[A.AF_QTY]),
                                0, 0, A.RJ_TOO_MANY, int(row[A.AF_TYPE]), int(row[A.AF_TIF])))
                    arr = max(last["rsp"], t)
                    last["rsp"] = arr
                    responses.append(dict(t=arr, kind=A.EV_REJECTED, oid=oid, px=int(row[A.AF_PX]), qty=0, leaves=0,
                                          ahead=0, reason=A.RJ_TOO_MANY, maker=0, side=int(row[A.AF_SIDE]), xts=t, fee=0))
                    continue
                i = free[0]
                orders[i] = 0
                orders[i, A.OF_ID] = oid
                orders[i, A.OF_SIDE] = row[A.AF_SIDE]
                orders[i, A.OF_PX] = row[A.AF_PX]
                orders[i, A.OF_QTY] = row[A.AF_QTY]
                orders[i, A.OF_LEAVES] = row[A.AF_QTY]
                orders[i, A.OF_STATUS] = A.OS_PENDING
                orders[i, A.OF_TS] = t
                orders[i, A.OF_TAG] = row[A.AF_TAG]
                md[A.MD_OPEN] += 1
                log.append((t, oid, A.EV_SUBMITTED, int(row[A.AF_SIDE]), int(row[A.AF_PX]), int(row[A.AF_QTY]),
                            int(row[A.AF_QTY]), 0, 0, int(row[A.AF_TYPE]), int(row[A.AF_TIF])))
            elif action == A.A_CANCEL:
                hit = [i for i in range(A.MAX_ORDERS) if orders[i, A.OF_ID] == oid and oid != 0]
                if not hit or orders[hit[0], A.OF_STATUS] == A.OS_CANCELLING:
                    continue
                i = hit[0]
                orders[i, A.OF_STATUS] = A.OS_CANCELLING
                log.append((t, oid, A.EV_CANCEL_SENT, int(orders[i, A.OF_SIDE]), int(orders[i, A.OF_PX]), 0,
                            int(orders[i, A.OF_LEAVES]), 0, 0, 0, 0))
            else:
                continue
            arr = max(last["req"], t + draw(rng_e, entry))
            last["req"] = arr
            requests.append(dict(t=arr, action=action, oid=oid, side=int(row[A.AF_SIDE]), px=int(row[A.AF_PX]),
                                 qty=int(row[A.AF_QTY]), type=int(row[A.AF_TYPE]), tif=int(row[A.AF_TIF]),
                                 post=int(row[A.AF_POST])))

    def on_response(r):
        md[A.MD_NOW] = r["t"]
        md[A.MD_EV_TS] = r["xts"]
        md[A.MD_EV_KIND] = r["kind"]
        md[A.MD_EV_ID] = r["oid"]
        md[A.MD_EV_SIDE] = r["side"]
        md[A.MD_EV_PX] = r["px"]
        md[A.MD_EV_QTY] = r["qty"]
        md[A.MD_EV_REASON] = r["reason"]
        md[A.MD_EV_LEAVES] = r["leaves"]
        md[A.MD_EV_MAKER] = r["maker"]
        hit = [i for i in range(A.MAX_ORDERS) if orders[i, A.OF_ID] == r["oid"] and r["oid"] != 0]
        i = hit[0] if hit else None
        if r["kind"] == A.EV_FILL:
            md[A.MD_POSITION] += r["side"] * r["qty"]
            md[A.MD_CASH] -= r["side"] * r["px"] * r["qty"] + r["fee"]
            md[A.MD_FEES] += r["fee"]
            if i is not None:
                orders[i, A.OF_LEAVES] = r["leaves"]
                orders[i, A.OF_AHEAD] = r["ahead"]
                if r["leaves"] <= 0:
                    orders[i, A.OF_ID] = 0
                    md[A.MD_OPEN] -= 1
            cb["on_fill"](md, orders, params, state, act)
        else:
            if i is not None:
                if r["kind"] == A.EV_ACCEPTED:
                    if orders[i, A.OF_STATUS] == A.OS_PENDING:
                        orders[i, A.OF_STATUS] = A.OS_OPEN
                    orders[i, A.OF_AHEAD] = r["ahead"]
                elif r["kind"] in (A.EV_REJECTED, A.EV_CANCELLED, A.EV_EXPIRED):
                    orders[i, A.OF_ID] = 0
                    md[A.MD_OPEN] -= 1
            cb["on_order"](md, orders, params, state, act)
        send(r["t"])

    def on_feed(i, t):
        k, s, p, q = kind[i], sides[i], pxs[i], qtys[i]
        if k in (A.MK_ADD, A.MK_SEED):
            lbook[s][p] = lbook[s].get(p, 0) + q
        elif k in (A.MK_CANCEL, A.MK_EXEC):
            lbook[s][p] = max(0, lbook[s].get(p, 0) - q)
        elif k == A.MK_LEVEL:
            lbook[s][p] = q
        md[A.MD_NOW] = t
        md[A.MD_EV_TS] = ts[i]
        md[A.MD_EV_KIND] = k
        md[A.MD_EV_SIDE] = s
        md[A.MD_EV_PX] = p
        md[A.MD_EV_QTY] = q
        for c in (A.MD_EV_ID, A.MD_EV_REASON, A.MD_EV_LEAVES, A.MD_EV_MAKER):
            md[c] = 0
        bl, al = levels(lbook, 1), levels(lbook, -1)
        for d in range(depth):
            md[A.MD_LEVELS + 4 * d], md[A.MD_LEVELS + 4 * d + 1] = bl[d] if d < len(bl) else (A.NO_PRICE, 0)
            md[A.MD_LEVELS + 4 * d + 2], md[A.MD_LEVELS + 4 * d + 3] = al[d] if d < len(al) else (A.NO_PRICE, 0)
        md[A.MD_BID_PX], md[A.MD_BID_QTY] = md[A.MD_LEVELS], md[A.MD_LEVELS + 1]
        md[A.MD_ASK_PX], md[A.MD_ASK_QTY] = md[A.MD_LEVELS + 2], md[A.MD_LEVELS + 3]
        if k in (A.MK_EXEC, A.MK_TRADE):
            md[A.MD_LAST_PX], md[A.MD_LAST_QTY], md[A.MD_LAST_SIDE], md[A.MD_LAST_TS] = p, q, -s, ts[i]
            cb["on_trade"](md, orders, params, state, act)
            send(t)
        if k != A.MK_TRADE:
            cb["on_book"](md, orders, params, state, act)
            send(t)

    def sample(t):
        b, a = (pb.best(1), pb.best(-1)) if impact else (best(xbook, 1), best(xbook, -1))
        equity.append((t, acct["pos"], acct["cash"], A.NO_PRICE if b is None else b,
                       A.NO_PRICE if a is None else a, acct["fees"]))

    if n == 0:
        return fills, log, equity, md, state, orders
    # feed arrivals: FIFO, each ts + its latency
    arrive, prev = [], -(1 << 63)
    for i in range(n):
        prev = max(prev, ts[i] + draw(rng_f, feed))
        arrive.append(prev)
    end = ts[-1]
    ix = fi = 0
    next_sample = ts[0] + sample_ns
    next_timer = ts[0] + timer_ns if timer_ns > 0 else None
    INF = float("inf")
    while True:
        cands = [  # (time, priority)
            (ts[ix] if ix < n else INF, 0),
            (requests[0]["t"] if requests else INF, 1),
            (arrive[fi] if fi < ix else INF, 2),
            (responses[0]["t"] if responses else INF, 3),
            (next_timer if next_timer is not None else INF, 4),
        ]
        t, which = min(cands)
        if t == INF or t > end:
            break
        if which == 0:
            while next_sample <= t:
                sample(next_sample)
                next_sample += sample_ns
            market(ix)
            ix += 1
        elif which == 1:
            request(requests.pop(0))
        elif which == 2:
            on_feed(fi, t)
            fi += 1
        elif which == 3:
            on_response(responses.pop(0))
        else:
            md[A.MD_NOW] = t
            md[A.MD_EV_TS] = t
            md[A.MD_EV_KIND] = 0
            next_timer = t + timer_ns
            cb["on_timer"](md, orders, params, state, act)
            send(t)
    while next_sample <= end:
        sample(next_sample)
        next_sample += sample_ns
    sample(end)
    return fills, log, equity, md, state, orders


def itch_ops_ref(ops):
    """Plain-Python twin of hpte.kernels.backtest.itch_events: ops as (code, ts, ref, ref2, side,
    px, n) tuples in stream order -> (event rows (ts, kind, order_id, side, price, qty),
    (unknown, clipped, bad_adds)). Codes: 1 add, 2 exec, 3 cancel, 4 delete, 5 replace, 6 trade."""
    live = {}       # ref -> [side, px, leaves]
    out = []
    unknown = clipped = bad = 0
    for code, t, ref, ref2, side, px, n in ops:
        if code == 1:
            if side == 0 or n <= 0 or px <= 0:
                bad += 1
                continue
            if ref in live:
                s, p, q = live[ref]
                out.append((t, A.MK_CANCEL, ref, s, p, q))
            live[ref] = [side, px, n]
            out.append((t, A.MK_ADD, ref, side, px, n))
        elif code == 6:
            if side == 0 or n <= 0 or px <= 0:
                bad += 1
                continue
            out.append((t, A.MK_TRADE, 0, side, px, n))
        else:
            if ref not in live:
                unknown += 1
                continue
            s, p, leaves = live[ref]
            if code in (4, 5):
                q = leaves
            else:
                q = n
                if q > leaves:
                    clipped += 1
                    q = leaves
            if q > 0:
                out.append((t, A.MK_EXEC if code == 2 else A.MK_CANCEL, ref, s, p, q))
            if leaves - q <= 0:
                del live[ref]
            else:
                live[ref][2] = leaves - q
            if code == 5:
                if n <= 0 or px <= 0:
                    bad += 1
                    continue
                if ref2 in live:
                    s2, p2, q2 = live[ref2]
                    out.append((t, A.MK_CANCEL, ref2, s2, p2, q2))
                live[ref2] = [s, px, n]
                out.append((t, A.MK_ADD, ref2, s, px, n))
    return out, (unknown, clipped, bad)
