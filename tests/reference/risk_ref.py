"""Plain-Python reference of the pre-trade risk checks and the position accounting
(hpte.kernels.risk.checks / hpte.engine.risk.state.RiskEngine), written from the rules, not from the kernel.

Everything is kept by ids in dicts; aggregates (open orders, open quantities, open notional,
exposure) are recomputed from the open-order dict on every check rather than maintained, token
buckets are exact Fractions, the reference price a Fraction. Limits are read from the validated
plain values (RiskLimits.defaults / accounts / symbols), not from the compiled arrays.
"""
from __future__ import annotations

import math
from fractions import Fraction

BIG = 1 << 62
BUY, SELL = 1, -1
NEW, CANCEL, REPLACE = 0, 1, 2
LIMIT, MARKET = 0, 1

REASONS = {
    "MAX_ORDER_QTY": 100, "MAX_ORDER_NOTIONAL": 101, "PRICE_COLLAR": 102, "MAX_OPEN_ORDERS": 103,
    "MAX_POSITION": 104, "CREDIT_LIMIT": 105, "MAX_ORDERS_PER_SECOND": 106, "KILL_SWITCH": 107,
    "SYMBOL_PAUSED": 108, "NOT_PERMITTED": 109, "NO_REFERENCE_PRICE": 110, "RISK_OVERFLOW": 111,
}
PER_ORDER = ("max_order_qty", "max_order_notional", "price_collar_bps", "max_position")


class RiskRef:
    def __init__(self, limits):
        self.set_limits(limits)
        self.open: dict[tuple[int, int], dict] = {}      # (symbol, order_id) -> order
        self.pos: dict[tuple[int, int], list] = {}       # (account, symbol) -> [pos, cost, realized]
        self.bucket: dict[tuple, tuple] = {}             # ("a", acct) / ("p", acct, sym) -> (tokens, ts)
        self.kill_global = False
        self.kill_accounts: set[int] = set()
        self.paused: set[int] = set()
        self.quotes: dict[int, tuple[int, int]] = {}
        self.last: dict[int, int] = {}

    def set_limits(self, limits) -> None:
        self.defaults = dict(limits.defaults)
        self.accounts = {a: dict(d) for a, d in limits.accounts.items()}
        self.symbols = {s: dict(d) for s, d in limits.symbols.items()}

    # ---- limits ------------------------------------------------------------------------------
    def per_order_limit(self, key, a, s):
        av = self.accounts.get(a, {}).get(key)
        sv = self.symbols.get(s, {}).get(key)
        if av is not None and sv is not None:
            return min(av, sv)
        if av is not None:
            return av
        if sv is not None:
            return sv
        return self.defaults.get(key)

    def account_limit(self, key, a):
        v = self.accounts.get(a, {}).get(key)
        return v if v is not None else self.defaults.get(key)

    def symbol_limit(self, key, s):
        return self.symbols.get(s, {}).get(key)

    def permitted(self, a, s) -> bool:
        allow = self.accounts.get(a, {}).get("symbols")
        return allow is None or s in allow

    def killed(self, a) -> bool:
        return (self.kill_global or self.defaults.get("kill", False) or a in self.kill_accounts
                or self.accounts.get(a, {}).get("kill", False))

    def reference(self, s):
        if self.last.get(s, 0) > 0:
            return Fraction(self.last[s])
        bid, ask = self.quotes.get(s, (0, 0))
        if bid > 0 and ask > 0:
            return Fraction(bid + ask, 2)
        static = self.symbols.get(s, {}).get("reference_price_ticks", 0)
        return Fraction(static) if static else None

    # ---- aggregates, recomputed -------------------------------------------------------------
    def orders_of(self, a, s=None):
        return [o for (sym, _), o in self.open.items() if o["account"] == a and (s is None or sym == s)]

    def open_qty(self, a, s, side):
        return sum(o["leaves"] for o in self.orders_of(a, s) if o["side"] == side)

    def open_notional(self, a, s=None):
        return sum(o["leaves"] * o["px"] for o in self.orders_of(a, s))

    def position(self, a, s):
        return self.pos.get((a, s), [0, 0, 0])

    def abs_cost(self, a, s=None):
        return sum(abs(v[1]) for (acc, sym), v in self.pos.items() if acc == a and (s is None or sym == s))

    def tokens(self, key, rate, ts):
        if key not in self.bucket:
            return Fraction(rate)
        tok, last = self.bucket[key]
        return min(Fraction(rate), tok + Fraction(max(ts - last, 0) * rate, 10**9))

    # ---- one row -------------------------------------------------------------------------------
    def check(self, row: dict) -> int:
        """Check one order row (keys of schema.ORDER_COLUMNS) and commit it when it passes.
        Returns 0 (pass or left to matching) or a risk reason code."""
        act, a, s, oid, ts = row["action"], row["account"], row["symbol"], row["order_id"], row["ts_ns"]
        side, px, qty = row["side"], row["price_ticks"], row["qty"]
        otype, tif, post = row.get("order_type", 0), row.get("tif", 0), row.get("post_only", 0)
        key = (s, oid)
        # left to matching
        if act == NEW:
            if side not in (BUY, SELL) or otype not in (LIMIT, MARKET) or tif not in (0, 1, 2, 3) or qty <= 0:
                return 0
            if otype == LIMIT and px <= 0:
                return 0
            if post and not (otype == LIMIT and tif in (0, 3)):
                return 0
            if key in self.open:
                return 0
        elif act in (CANCEL, REPLACE):
            if key not in self.open or self.open[key]["account"] != a:
                return 0
            if act == REPLACE and (qty <= 0 or px <= 0):
                return 0
        else:
            return 0

        d_qty = d_not = 0
        pxu = 0
        if act != CANCEL:
            if act == REPLACE:
                side, otype = self.open[key]["side"], LIMIT
            if self.killed(a):
                return REASONS["KILL_SWITCH"]
            if not self.permitted(a, s):
                return REASONS["NOT_PERMITTED"]
            if s in self.paused:
                return REASONS["SYMBOL_PAUSED"]
            if qty > BIG or (otype == LIMIT and px > BIG):
                return REASONS["RISK_OVERFLOW"]
            lim = self.per_order_limit("max_order_qty", a, s)
            if lim is not None and qty > lim:
                return REASONS["MAX_ORDER_QTY"]
            ref = self.reference(s)
            if otype == LIMIT:
                pxu = px
                bps = self.per_order_limit("price_collar_bps", a, s)
                if bps is not None and ref is not None and abs(px - ref) * 10_000 > bps * ref:
                    return REASONS["PRICE_COLLAR"]
            else:
                pxu = math.ceil(ref) if ref is not None else 0
            nlim = self.per_order_limit("max_order_notional", a, s)
            if pxu == 0 and (nlim is not None or self.account_limit("credit_limit", a) is not None
                             or self.symbol_limit("credit_limit", s) is not None):
                return REASONS["NO_REFERENCE_PRICE"]
            notional = pxu * qty
            if notional > BIG:
                return REASONS["RISK_OVERFLOW"]
            if nlim is not None and notional > nlim:
                return REASONS["MAX_ORDER_NOTIONAL"]
            if act == NEW:
                d_qty, d_not = qty, notional
                mo = self.account_limit("max_open_orders", a)
                ms = self.symbol_limit("max_open_orders", s)
                if (mo is not None and len(self.orders_of(a)) + 1 > mo) or \
                        (ms is not None and len(self.orders_of(a, s)) + 1 > ms):
                    return REASONS["MAX_OPEN_ORDERS"]
            else:
                o = self.open[key]
                d_qty, d_not = qty - o["leaves"], notional - o["leaves"] * o["px"]
            if self.open_notional(a) + d_not > BIG:
                return REASONS["RISK_OVERFLOW"]
            if d_qty > 0:
                plim = self.per_order_limit("max_position", a, s)
                p = self.position(a, s)[0]
                side_open = self.open_qty(a, s, side) + d_qty
                if side_open > BIG:
                    return REASONS["RISK_OVERFLOW"]
                worst = p + side_open if side == BUY else side_open - p
                if plim is not None and worst > plim:
                    return REASONS["MAX_POSITION"]
            if d_not > 0:
                c = self.account_limit("credit_limit", a)
                if c is not None and self.open_notional(a) + self.abs_cost(a) + d_not > c:
                    return REASONS["CREDIT_LIMIT"]
                c = self.symbol_limit("credit_limit", s)
                if c is not None and self.open_notional(a, s) + self.abs_cost(a, s) + d_not > c:
                    return REASONS["CREDIT_LIMIT"]
        buckets = []
        r = self.account_limit("max_orders_per_second", a)
        if r is not None:
            t = self.tokens(("a", a), r, ts)
            if t < 1:
                return REASONS["MAX_ORDERS_PER_SECOND"]
            buckets.append((("a", a), t))
        r = self.symbol_limit("max_orders_per_second", s)
        if r is not None:
            t = self.tokens(("p", a, s), r, ts)
            if t < 1:
                return REASONS["MAX_ORDERS_PER_SECOND"]
            buckets.append((("p", a, s), t))
        # commit
        for k, t in buckets:
            self.bucket[k] = (t - 1, ts)
        if act == NEW:
            self.open[key] = {"account": a, "side": side, "leaves": qty, "px": pxu}
        elif act == REPLACE:
            self.open[key].update(leaves=qty, px=pxu)
        else:
            del self.open[key]
        return 0

    def check_rows(self, rows: list[dict]) -> list[int]:
        return [self.check(r) for r in rows]

    # ---- fills and releases --------------------------------------------------------------------
    def release(self, s, oid, q) -> int:
        o = self.open.get((s, oid))
        if o is None or q <= 0:
            return 0
        d = min(q, o["leaves"])
        o["leaves"] -= d
        if o["leaves"] == 0:
            del self.open[(s, oid)]
        return d

    def _party(self, s, oid, a, side, px, q):
        o = self.open.get((s, oid))
        if o is not None and o["account"] == a and o["side"] == side:
            self.release(s, oid, q)
        p = self.pos.setdefault((a, s), [0, 0, 0])
        pos, cost = p[0], p[1]
        if pos == 0 or (pos > 0) == (side == BUY):
            p[0], p[1] = pos + side * q, cost + side * px * q
            return
        sp = 1 if pos > 0 else -1
        close = min(q, abs(pos))
        removed = sp * (abs(cost) * close // abs(pos))
        p[2] += sp * px * close - removed
        p[1] = cost - removed
        p[0] = pos + side * close
        if q > close:
            p[0], p[1] = side * (q - close), side * px * (q - close)

    def apply_fills(self, fills: list[dict]) -> None:
        for f in fills:
            if not (0 < f["qty"] <= BIG and 0 < f["price_ticks"] <= BIG and f["taker_side"] in (BUY, SELL)
                    and f["qty"] * f["price_ticks"] <= BIG):
                raise ValueError("bad fill")
        for f in fills:
            s, px, q, ts = f["symbol"], f["price_ticks"], f["qty"], f["taker_side"]
            self._party(s, f["taker_order_id"], f["taker_account"], ts, px, q)
            self._party(s, f["maker_order_id"], f["maker_account"], -ts, px, q)
            self.last[s] = px

    # ---- views in the engine's shapes -------------------------------------------------------------
    def positions(self) -> list[tuple]:
        keys = {k for k, v in self.pos.items() if v[0] or v[2]} | {(o["account"], s) for (s, _), o in self.open.items()}
        out = []
        for a, s in sorted(keys):
            p = self.position(a, s)
            out.append((a, s, p[0], p[1], p[2], self.open_qty(a, s, BUY), self.open_qty(a, s, SELL),
                        len(self.orders_of(a, s)), self.open_notional(a, s)))
        return out

    def open_orders(self) -> list[tuple]:
        return sorted((s, oid, o["account"], o["side"], o["leaves"], o["px"]) for (s, oid), o in self.open.items())
