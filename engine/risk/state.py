"""Pre-trade risk: validated limits (engine/risk/limits.py) compiled into the state arrays of
kernels/risk/checks.py, one kernel call per micro-batch, fills applied to positions.

    lim = RiskLimits.load("risk.toml")
    risk = RiskEngine(lim)
    reasons = risk.check(batch)          # uint8 per row: 0 = pass, else a RISK_REASON_NAMES code
    risk.apply_fills(fills)              # schema.FILL_COLUMNS; all or nothing
    risk.release(symbol, order_id, qty)  # open quantity that matching expired / cancelled
    risk.set_kill(True, account=17)      # kill switches, pauses, quotes: between batches
    risk.set_limits(RiskLimits.load("risk2.toml"))   # takes effect at the next batch
    risk.positions(), risk.accounts(), risk.open_orders()

Semantics (sequential checking, what "open" means, check order, limits, reference price, token
buckets, average-cost P&L): kernels/risk/checks.py's module docstring.
"""
from __future__ import annotations

from typing import Mapping, NamedTuple

import numpy as np

from hpte.kernels.risk import breaker as KB
from hpte.kernels.risk import checks as K
from hpte.engine import schema as S
from hpte.engine.io import InputError, cast_checked, order_columns
from hpte.engine.risk.limits import NLIM, UNSET, RiskLimits

# Reject reasons of the risk checks (codes >= 100; names in schema.REASON_NAMES)
RISK_REASON_NAMES = {c: n for c, n in S.REASON_NAMES.items() if c >= 100}
ALL_REASON_NAMES = S.REASON_NAMES

POSITION_COLUMNS: tuple[tuple[str, np.dtype], ...] = (
    ("account", np.dtype(np.uint32)),
    ("symbol", np.dtype(np.uint32)),
    ("position", np.dtype(np.int64)),       # lots, signed
    ("avg_price", np.dtype(np.float64)),    # ticks, cost / position (NaN when flat)
    ("cost", np.dtype(np.int64)),           # signed cost of the position, ticks x lots
    ("realized_pnl", np.dtype(np.int64)),   # ticks x lots
    ("open_buy", np.dtype(np.int64)),       # open buy lots
    ("open_sell", np.dtype(np.int64)),
    ("open_orders", np.dtype(np.int64)),
    ("open_notional", np.dtype(np.int64)),  # ticks x lots
)
ACCOUNT_COLUMNS: tuple[tuple[str, np.dtype], ...] = (
    ("account", np.dtype(np.uint32)),
    ("open_orders", np.dtype(np.int64)),
    ("open_notional", np.dtype(np.int64)),
    ("gross_exposure", np.dtype(np.int64)),  # open notional + sum of |cost|
    ("kill", np.dtype(np.uint8)),
)
OPEN_ORDER_COLUMNS: tuple[tuple[str, np.dtype], ...] = (
    ("symbol", np.dtype(np.uint32)),
    ("order_id", np.dtype(np.uint64)),
    ("account", np.dtype(np.uint32)),
    ("side", np.dtype(np.int8)),
    ("leaves_qty", np.dtype(np.int64)),
    ("price_ticks", np.dtype(np.int64)),
)

_FILL_NEEDS = ("symbol", "taker_order_id", "maker_order_id", "taker_account", "maker_account",
               "taker_side", "price_ticks", "qty")


class RiskState(NamedTuple):
    """What the risk version of the matching kernel reads and updates (kernels/book.py
    ``process_row_risk``): the arrays of kernels/risk/checks.py, the breaker state and parameters of
    kernels/risk/breaker.py, and each input row's account and symbol rows."""
    acct: np.ndarray    # int64[A, NAF]
    sym: np.ndarray     # int64[S, NSF]
    pair: np.ndarray    # int64[A, S, NPF]
    g: np.ndarray       # int64[NG]
    omap: np.ndarray    # int64[H, NMF]
    brk: np.ndarray     # int64[S, NBF]
    bp: np.ndarray      # int64[NBP]
    ar: np.ndarray      # int64[n], account row of each input row
    sr: np.ndarray      # int64[n], symbol row of each input row


def _ro(a: np.ndarray) -> np.ndarray:
    """Read-only view: every input reaches the kernel with one type signature (compiles once)."""
    v = a.view()
    v.flags.writeable = False
    return v


def reason_names(codes) -> list[str]:
    """Reason codes (schema.R_* or risk codes) as names ('' for 0)."""
    return [ALL_REASON_NAMES.get(int(c), f"CODE_{int(c)}") for c in np.asarray(codes).ravel()]


class _Rows:
    """Dense rows for uint32 ids: each batch's new ids get the next rows, in ascending id order.
    Ids below LUT_MAX are looked up in a direct table, others by binary search."""

    LUT_MAX = 1 << 22

    def __init__(self) -> None:
        self.ids = np.empty(0, np.int64)      # row -> id
        self._sorted = np.empty(0, np.int64)  # ids ascending
        self._order = np.empty(0, np.int64)   # rows of _sorted
        self._lut = np.full(0, -1, np.int64)  # id -> row (-1: unknown) for small ids

    def __len__(self) -> int:
        return len(self.ids)

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        """Rows of ids (-1 where unknown)."""
        ids = np.asarray(ids, np.int64)
        if ids.size and 0 <= ids.min() and ids.max() < len(self._lut):
            return self._lut[ids]
        if not len(self._sorted):
            return np.full(ids.shape, -1, np.int64)
        pos = np.minimum(np.searchsorted(self._sorted, ids), len(self._sorted) - 1)
        return np.where(self._sorted[pos] == ids, self._order[pos], -1)

    def rows(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows of ids, the ids that were new and got rows now)."""
        ids = np.asarray(ids, np.int64)
        if ids.size == 0:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        r = self.lookup(ids)
        if (r >= 0).all():
            return r, np.empty(0, np.int64)
        new = np.unique(ids[r < 0])
        self.ids = np.concatenate([self.ids, new])
        self._order = np.argsort(self.ids, kind="stable")
        self._sorted = self.ids[self._order]
        small_new = new[new < self.LUT_MAX]
        if small_new.size:
            top = int(small_new[-1]) + 1          # `new` is sorted (np.unique)
            if top > len(self._lut):              # grow geometrically, only when an id needs it
                lut = np.full(min(max(top, 2 * len(self._lut)), self.LUT_MAX), -1, np.int64)
                lut[:len(self._lut)] = self._lut
                self._lut = lut
            self._lut[small_new] = np.arange(len(self.ids) - len(new), len(self.ids))[new < self.LUT_MAX]
        return self.lookup(ids), new


class RiskEngine:
    """Pre-trade risk state of a session: limits compiled into arrays, open orders, positions.

    Parameters
    ----------
    limits : RiskLimits or None (None: nothing configured, only the bookkeeping runs).
    map_capacity : initial slots of the open-order map (a power of two; grows by doubling).
    max_pair_bytes : cap on the dense account x symbol table (128 bytes per pair); exceeding it
        raises ValueError naming this knob.
    """

    def __init__(self, limits: RiskLimits | None = None, map_capacity: int = 1 << 12,
                 max_pair_bytes: int = 4 << 30):
        if map_capacity < 2 or map_capacity & (map_capacity - 1):
            raise ValueError(f"map_capacity must be a power of two >= 2, got {map_capacity}")
        self.limits = limits if limits is not None else RiskLimits()
        self.max_pair_bytes = int(max_pair_bytes)
        self._accts, self._syms = _Rows(), _Rows()
        self.acct = np.zeros((0, K.NAF), np.int64)
        self.sym = np.zeros((0, K.NSF), np.int64)
        self.pair = np.zeros((0, 0, K.NPF), np.int64)
        self.g = np.zeros(K.NG, np.int64)
        self.brk = np.zeros((0, KB.NBF), np.int64)
        self.bp = np.full(KB.NBP, K.UNSET, np.int64)
        self.halted = False     # market-wide halt: new symbols start halted too
        self.omap = np.full((map_capacity, K.NMF), 0, np.int64)
        self.omap[:, K.M_KEY] = -1
        self._kill_accounts: set[int] = set()   # runtime kill switches (OR-ed with the config's)
        self._kill_global = False
        self.last_ts: int | None = None
        self.counts = {"map_grows": 0}
        self._install_limits(self.limits)

    # ---- rows and limits -----------------------------------------------------------------------
    def _grow_rows(self, na: int, ns: int) -> None:
        A, Sn = self.acct.shape[0], self.sym.shape[0]
        if na <= A and ns <= Sn:
            return
        A2 = max(A, 16) if na <= A else max(na, 2 * A, 16)
        S2 = max(Sn, 4) if ns <= Sn else max(ns, 2 * Sn, 4)
        need = A2 * S2 * K.NPF * 8
        if need > self.max_pair_bytes:
            raise ValueError(
                f"the account x symbol risk table would need {need:,} bytes for {na:,} accounts x {ns:,} "
                f"symbols; raise RiskEngine(max_pair_bytes=...) (now {self.max_pair_bytes:,})")
        acct = np.zeros((A2, K.NAF), np.int64)
        acct[:A] = self.acct
        sym = np.zeros((S2, K.NSF), np.int64)
        sym[:Sn] = self.sym
        pair = np.zeros((A2, S2, K.NPF), np.int64)
        pair[:A, :Sn] = self.pair
        brk = np.zeros((S2, KB.NBF), np.int64)
        brk[:Sn] = self.brk
        self.acct, self.sym, self.pair, self.brk = acct, sym, pair, brk

    def _init_rows(self, new_acct: np.ndarray, new_sym: np.ndarray) -> None:
        """Give rows to new ids: limits of the current config, empty state, permissions."""
        na, ns = len(self._accts), len(self._syms)
        self._grow_rows(na, ns)
        a0, s0 = na - len(new_acct), ns - len(new_sym)
        if len(new_acct):
            self.acct[a0:na, K.A_LAST_TS] = K.INT64_MIN
            self._fill_acct_limits(self.limits, slice(a0, na))
            self.pair[a0:na, :ns, K.P_LAST_TS] = K.INT64_MIN
        if len(new_sym):
            self._fill_sym_limits(self.limits, slice(s0, ns))
            b = self.brk[s0:ns]
            b[:] = 0
            b[:, KB.K_REF_TS] = KB.INT64_MIN
            b[:, KB.K_VA_TS] = KB.INT64_MIN
            b[:, KB.K_HI] = KB.UNSET
            if self.halted:
                b[:, KB.K_STATE] = S.TS_HALTED
                b[:, KB.K_CAUSE] = S.R_HALT
            self.pair[:a0, s0:ns, K.P_LAST_TS] = K.INT64_MIN
        if len(new_acct):
            self._fill_pairs(self.limits, slice(a0, na), slice(0, ns))
        if len(new_sym):
            self._fill_pairs(self.limits, slice(0, a0), slice(s0, ns))

    def _fill_pairs(self, lim: RiskLimits, arows: slice, srows: slice) -> None:
        """Permissions and the per-order limits that apply (stricter of the two own values, else
        the default) of the account x symbol rows."""
        own_a = self.acct[arows, K.A_LIM:K.A_LIM + 4]
        own_s = self.sym[srows, K.S_LIM:K.S_LIM + 4]
        v = np.minimum(own_a[:, None, :], own_s[None, :, :])
        self.pair[arows, srows, K.P_LIM:K.P_LIM + 4] = np.where(v == UNSET, lim.default_limits[:4], v)
        self.pair[arows, srows, K.P_PERM] = lim.permitted(self._accts.ids[arows], self._syms.ids[srows])

    def _fill_acct_limits(self, lim: RiskLimits, rows: slice) -> None:
        ids = self._accts.ids[rows]
        r = lim.account_rows(ids)
        own = lim.account_limits[r]
        eff = own.copy()
        wide = slice(K.L_MAX_OPEN_ORDERS, NLIM)
        eff[:, wide] = np.where(own[:, wide] != UNSET, own[:, wide], lim.default_limits[wide])
        self.acct[rows, K.A_LIM:K.A_LIM + NLIM] = eff
        runtime = np.array([int(i) in self._kill_accounts for i in ids], np.uint8)
        self.acct[rows, K.A_KILL] = lim.account_kill[r] | runtime

    def _fill_sym_limits(self, lim: RiskLimits, rows: slice) -> None:
        r = lim.symbol_rows(self._syms.ids[rows])
        self.sym[rows, K.S_LIM:K.S_LIM + NLIM] = lim.symbol_limits[r]
        self.sym[rows, K.S_STATIC] = lim.symbol_reference[r]

    def _install_limits(self, lim: RiskLimits) -> None:
        na, ns = len(self._accts), len(self._syms)
        self._fill_acct_limits(lim, slice(0, na))
        self._fill_sym_limits(lim, slice(0, ns))
        self._fill_pairs(lim, slice(0, na), slice(0, ns))
        self.g[K.G_KILL] = int(lim.global_kill or self._kill_global)
        self.bp = np.asarray(lim.breaker_params, np.int64).copy()

    def set_limits(self, limits: RiskLimits) -> None:
        """Replace the configuration; it applies from the next call on (a batch boundary). State
        (open orders, positions, token buckets, runtime kill switches, pauses) is kept."""
        old = self.limits
        self.limits = limits
        try:
            self._install_limits(limits)
        except Exception:  # pragma: no cover - restore the old arrays
            self.limits = old
            self._install_limits(old)
            raise

    def _rows_for(self, accounts: np.ndarray, symbols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ar, new_a = self._accts.rows(accounts)
        sr, new_s = self._syms.rows(symbols)
        if len(new_a) or len(new_s):
            self._init_rows(new_a, new_s)
        return ar, sr

    # ---- switches and market state (between batches) -------------------------------------------
    def set_kill(self, on: bool = True, account: int | None = None) -> None:
        """Turn a kill switch on or off: one account's, or the global one (account=None). A kill
        switch set in the config stays on until a config without it is installed."""
        if account is None:
            self._kill_global = bool(on)
            self.g[K.G_KILL] = int(self._kill_global or self.limits.global_kill)
            return
        a = int(account)
        (self._kill_accounts.add if on else self._kill_accounts.discard)(a)
        ar, _ = self._rows_for(np.array([a]), np.empty(0, np.int64))
        r = self.limits.account_rows([a])[0]
        self.acct[ar[0], K.A_KILL] = int(bool(on) or bool(self.limits.account_kill[r]))

    def set_paused(self, symbol: int, on: bool = True) -> None:
        """Pause (SYMBOL_PAUSED for NEW and REPLACE) or resume a symbol."""
        _, sr = self._rows_for(np.empty(0, np.int64), np.array([int(symbol)]))
        self.sym[sr[0], K.S_PAUSED] = int(bool(on))

    def set_quotes(self, symbol: int, bid: int = 0, ask: int = 0, last: int | None = None) -> None:
        """Best bid / ask (0 = none) and optionally the last trade price of a symbol, in ticks."""
        for name, v in (("bid", bid), ("ask", ask), ("last", last)):
            if v is not None and not 0 <= int(v) <= K.BIG:
                raise ValueError(f"{name} must be in [0, 2**62] ticks, got {v}")
        _, sr = self._rows_for(np.empty(0, np.int64), np.array([int(symbol)]))
        self.sym[sr[0], K.S_BID] = int(bid)
        self.sym[sr[0], K.S_ASK] = int(ask)
        if last is not None:
            self.sym[sr[0], K.S_LAST] = int(last)

    # ---- the kernels -----------------------------------------------------------------------------
    def state(self, ar: np.ndarray, sr: np.ndarray) -> RiskState:
        """The kernel's view of the state for a batch whose rows have these account / symbol rows."""
        return RiskState(self.acct, self.sym, self.pair, self.g, self.omap, self.brk, self.bp, _ro(ar), _ro(sr))

    def symbol_ids(self) -> np.ndarray:
        """Symbol id of each symbol row."""
        return self._syms.ids

    def _grow_map(self) -> None:
        new = np.zeros((2 * self.omap.shape[0], K.NMF), np.int64)
        new[:, K.M_KEY] = -1
        K.map_rehash_cpu(self.omap, new)
        self.omap = new
        self.counts["map_grows"] += 1

    def check(self, batch) -> np.ndarray:
        """Check one micro-batch of orders (schema.ORDER_COLUMNS) in row order; accepted rows
        update the state. Returns uint8[n]: 0 = pass (or left to matching), else a risk code."""
        c = order_columns(batch)
        n = len(c["ts_ns"])
        reason = np.zeros(n, np.uint8)
        if n == 0:
            return reason
        if self.last_ts is not None and c["ts_ns"][0] < self.last_ts:
            raise InputError(f"column 'ts_ns' row 0: timestamps must not decrease across batches "
                             f"({self.last_ts} then {int(c['ts_ns'][0])})")
        ar, sr = self._rows_for(c["account"], c["symbol"])
        args = (_ro(c["ts_ns"]), _ro(c["order_id"].view(np.int64)), _ro(c["side"]), _ro(c["price_ticks"]),
                _ro(c["qty"]), _ro(c["action"]), _ro(c["order_type"]), _ro(c["tif"]), _ro(c["post_only"]),
                _ro(ar), _ro(sr))
        i = 0
        while True:
            st, i = K.pretrade_check_cpu(*args, self.acct, self.sym, self.pair, self.g,
                                         self.omap, reason, i)
            if st == K.ST_OK:
                break
            assert st == K.ST_MAP_FULL, st
            self._grow_map()
        self.last_ts = int(c["ts_ns"][-1])
        return reason

    def apply_fills(self, fills: Mapping[str, np.ndarray]) -> int:
        """Apply fills (columns of schema.FILL_COLUMNS; the ones used: symbol, taker/maker order id
        and account, taker_side, price_ticks, qty) to open orders and positions, all or nothing.
        Returns the number applied; a bad fill raises InputError naming the row, nothing applied."""
        missing = [k for k in _FILL_NEEDS if k not in fills]
        if missing:
            raise InputError(f"fills: missing column {missing[0]!r}")
        dt = dict(S.FILL_COLUMNS)
        f = {k: cast_checked(np.ascontiguousarray(fills[k]), dt[k], k) for k in _FILL_NEEDS}
        m = len(f["qty"])
        if any(len(v) != m for v in f.values()):
            raise InputError("fills: columns have different lengths")
        if m == 0:
            return 0
        # validate before giving rows to new ids, so a bad batch leaves no trace (the kernel
        # checks the same again before it applies anything)
        q, p = f["qty"], f["price_ticks"]
        bad = np.flatnonzero((q <= 0) | (p <= 0) | (q > K.BIG) | (p > K.BIG)
                             | ((f["taker_side"] != S.BUY) & (f["taker_side"] != S.SELL))
                             | (p > K.BIG // np.maximum(q, 1)))
        if bad.size:
            r = int(bad[0])
            raise InputError(f"fills row {r}: invalid fill (qty {int(f['qty'][r])}, price_ticks "
                             f"{int(f['price_ticks'][r])}, taker_side {int(f['taker_side'][r])}); nothing applied")
        ar, sr = self._rows_for(np.concatenate([f["taker_account"], f["maker_account"]]), f["symbol"])
        st, row = K.apply_fills_cpu(_ro(sr), _ro(f["taker_order_id"].view(np.int64)),
                                    _ro(f["maker_order_id"].view(np.int64)), _ro(ar[:m]), _ro(ar[m:]),
                                    _ro(f["taker_side"]), _ro(f["price_ticks"]), _ro(f["qty"]),
                                    self.acct, self.sym, self.pair, self.g, self.omap)
        if st != K.ST_OK:  # pragma: no cover - validated above
            raise InputError(f"fills row {row}: invalid fill; nothing applied")
        return m

    def release(self, symbol, order_id, qty) -> np.ndarray:
        """Release open quantity of orders (expired, cancelled by matching, STP decrements, orders
        matching rejected after risk passed them). Returns the lots released per row."""
        sids = np.atleast_1d(np.asarray(symbol, np.int64))
        oids = np.atleast_1d(np.asarray(order_id, np.uint64)).view(np.int64)
        q = np.atleast_1d(np.asarray(qty, np.int64))
        sids, oids, q = np.broadcast_arrays(sids, oids, q)
        sr = self._syms.lookup(sids)
        out = np.zeros(len(sr), np.int64)
        known = sr >= 0
        if known.any():
            K.release_cpu(_ro(np.ascontiguousarray(sr[known])), _ro(np.ascontiguousarray(oids[known])),
                          _ro(np.ascontiguousarray(q[known])), self.acct, self.pair, self.g, self.omap,
                          sub := np.zeros(int(known.sum()), np.int64))
            out[known] = sub
        return out

    # ---- views -----------------------------------------------------------------------------------
    def positions(self) -> dict:
        """Per account and symbol with any position, open order or realised P&L: POSITION_COLUMNS,
        ordered by (account, symbol)."""
        na, ns = len(self._accts), len(self._syms)
        p = self.pair[:na, :ns]
        live = (p[..., K.P_POS] != 0) | (p[..., K.P_NOPEN] != 0) | (p[..., K.P_REALIZED] != 0) | \
               (p[..., K.P_OPEN_BUY] != 0) | (p[..., K.P_OPEN_SELL] != 0)
        ai, si = np.nonzero(live)
        q = p[ai, si]
        pos, cost = q[:, K.P_POS], q[:, K.P_COST]
        with np.errstate(invalid="ignore", divide="ignore"):
            avg = np.where(pos != 0, cost / np.where(pos != 0, pos, 1), np.nan)
        out = {"account": self._accts.ids[ai].astype(np.uint32), "symbol": self._syms.ids[si].astype(np.uint32),
               "position": pos, "avg_price": avg.astype(np.float64), "cost": cost,
               "realized_pnl": q[:, K.P_REALIZED], "open_buy": q[:, K.P_OPEN_BUY],
               "open_sell": q[:, K.P_OPEN_SELL], "open_orders": q[:, K.P_NOPEN],
               "open_notional": q[:, K.P_OPEN_NOTIONAL]}
        o = np.lexsort((out["symbol"], out["account"]))
        return {k: np.ascontiguousarray(v[o]) for k, v in out.items()}

    def accounts(self) -> dict:
        """Per account seen: ACCOUNT_COLUMNS, ordered by account."""
        na = len(self._accts)
        o = np.argsort(self._accts.ids, kind="stable")
        a = self.acct[:na][o]
        return {"account": self._accts.ids[o].astype(np.uint32), "open_orders": a[:, K.A_NOPEN],
                "open_notional": a[:, K.A_OPEN_NOTIONAL],
                "gross_exposure": a[:, K.A_OPEN_NOTIONAL] + a[:, K.A_ABS_COST],
                "kill": (a[:, K.A_KILL] | self.g[K.G_KILL]).astype(np.uint8)}

    def open_orders(self) -> dict:
        """Every open order: OPEN_ORDER_COLUMNS, ordered by (symbol, order_id)."""
        m = self.omap[self.omap[:, K.M_KEY] != -1]
        key, slv = m[:, K.M_KEY], m[:, K.M_LEAVES]
        out = {"symbol": self._syms.ids[key >> 32].astype(np.uint32),
               "order_id": m[:, K.M_OID].view(np.uint64).copy(),
               "account": self._accts.ids[key & 0xFFFFFFFF].astype(np.uint32),
               "side": np.where(slv > 0, S.BUY, S.SELL).astype(np.int8), "leaves_qty": np.abs(slv),
               "price_ticks": m[:, K.M_PX].copy()}
        o = np.lexsort((out["order_id"], out["symbol"]))
        return {k: v[o] for k, v in out.items()}

    def state_bytes(self) -> int:
        return sum(a.nbytes for a in (self.acct, self.sym, self.pair, self.omap))
