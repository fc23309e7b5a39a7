"""Orders per second of the pre-trade risk kernel (``kernels.risk.pretrade_check_cpu``) alone,
against a plain-Python baseline doing the same checks, in one process (so ratios hold on a noisy
machine). Single-threaded; each figure is the best of ``--repeat`` runs on fresh state.

Flows (10M rows by default):

- ``quotes`` (the main figure): market-making flow over ``--accounts`` accounts and ``--symbols``
  books with a bounded set of live orders (about ``--live``), as when the checks run in front of
  matching and fills/expiries release orders: about 50% NEW LIMIT, 39% CANCEL and 11% REPLACE of a
  random live order (no MARKET/IOC orders: with nothing but cancels to release them they would
  pile up in the open-order map); 1% of the NEW rows break a limit on purpose (qty, collar) and the
  busiest accounts run into their open-order, position and rate limits. Every limit of the
  issue is configured, so every check runs on every row.
- ``gen``: the project's benchmark flow (``hpte.engine.gen.generate_flow``): in the standalone
  semantics nothing but a CANCEL releases an order, so the open-order map grows to millions of
  entries (the memory-bound worst case).

Timed: one ``pretrade_check_cpu`` call over the whole flow (rows -> dense account/symbol rows done
before; open-order map sized up front), wall (perf_counter) and CPU (process_time). Also timed:
``RiskEngine.check`` in batches of ``--batch`` rows (column checks, id -> row mapping, kernel).
Baseline: a plain-Python loop over dicts implementing the same checks, on the first
``--py-rows`` rows; its verdicts are checked equal to the kernel's on that slice.

    .venv/bin/python bench/bench_risk.py [--rows 10000000] [--repeat 3] [--flow quotes|gen|both]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
from numba import njit

from hpte.engine.risk.state import RiskEngine, _ro, reason_names
from hpte.engine.risk.limits import RiskLimits
from hpte.kernels.risk import checks as K

CONFIG = """
[defaults]
max_order_qty = 500
max_order_notional = 40_000_000
price_collar_bps = 200
max_open_orders = 400
max_position = 20_000
credit_limit = 2_000_000_000
max_orders_per_second = 20_000

[accounts.1]
max_open_orders = 5_000
max_orders_per_second = 400_000
credit_limit = 40_000_000_000

[accounts.2]
symbols = [0, 1, 2, 3]

[accounts.3]
max_position = 200

[symbols.0]
max_order_qty = 300
reference_price_ticks = 100_000

[symbols.1]
reference_price_ticks = 100_000
max_orders_per_second = 5_000
"""


@njit(cache=True)
def _quotes_flow(n, n_acct, n_sym, live_target, seed, ts, oid, side, px, qty, action, otype, tif, acct, sym):
    np.random.seed(seed)
    mid = np.full(n_sym, 100_000, np.int64)
    cap = live_target * 4 + 16
    live_oid = np.empty(cap, np.int64)
    live_acct = np.empty(cap, np.int64)
    live_sym = np.empty(cap, np.int64)
    live_side = np.empty(cap, np.int64)
    nl = 0
    t = 1_700_000_000_000_000_000
    next_id = 1
    for i in range(n):
        t += 1 + np.int64(np.random.exponential(100.0))
        ts[i] = t
        u = np.random.random()
        p_new = 0.55 if nl < live_target else 0.40
        if nl < 16 or (nl < cap - 1 and u < p_new):
            a = np.int64(n_acct * np.random.random() ** 3)          # skewed: low ids busier
            s = np.random.randint(0, n_sym)
            if np.random.random() < 0.3:
                mid[s] += np.random.randint(-3, 4)
            sd = 1 if np.random.random() < 0.5 else -1
            off = np.int64(np.random.exponential(20.0))
            p = mid[s] - sd * off
            q = 1 + np.int64(np.random.exponential(40.0))
            v = np.random.random()
            if v < 0.005:
                q = 600 + np.random.randint(0, 100)                  # MAX_ORDER_QTY
            elif v < 0.01:
                p = mid[s] + sd * 5_000                               # PRICE_COLLAR
            ot = 0
            oid[i] = next_id
            next_id += 1
            side[i] = sd
            px[i] = p if ot == 0 else 0
            qty[i] = q
            action[i] = 0
            otype[i] = ot
            tif[i] = 1 if ot == 1 else 0
            acct[i] = a
            sym[i] = s
            if ot == 0:
                live_oid[nl] = oid[i]
                live_acct[nl] = a
                live_sym[nl] = s
                live_side[nl] = sd
                nl += 1
        else:
            j = np.random.randint(0, nl)
            oid[i] = live_oid[j]
            acct[i] = live_acct[j]
            sym[i] = live_sym[j]
            side[i] = live_side[j]
            otype[i] = 0
            tif[i] = 0
            if np.random.random() < 0.78:
                action[i] = 1
                px[i] = 0
                qty[i] = 0
                nl -= 1
                live_oid[j] = live_oid[nl]
                live_acct[j] = live_acct[nl]
                live_sym[j] = live_sym[nl]
                live_side[j] = live_side[nl]
            else:
                action[i] = 2
                px[i] = mid[sym[i]] - side[i] * np.int64(np.random.exponential(20.0))
                qty[i] = 1 + np.int64(np.random.exponential(40.0))


def quotes_flow(n: int, n_acct: int, n_sym: int, live: int, seed: int = 7) -> dict:
    cols = {"ts_ns": np.empty(n, np.int64), "order_id": np.empty(n, np.uint64), "side": np.empty(n, np.int8),
            "price_ticks": np.empty(n, np.int64), "qty": np.empty(n, np.int64), "action": np.empty(n, np.uint8),
            "order_type": np.empty(n, np.uint8), "tif": np.empty(n, np.uint8), "account": np.empty(n, np.uint32),
            "symbol": np.empty(n, np.uint32)}
    _quotes_flow(n, n_acct, n_sym, live, seed, cols["ts_ns"], cols["order_id"].view(np.int64), cols["side"],
                 cols["price_ticks"], cols["qty"], cols["action"], cols["order_type"], cols["tif"],
                 cols["account"], cols["symbol"])
    cols["post_only"] = np.zeros(n, np.uint8)
    return cols


# --- plain-Python baseline: the same checks with dicts ---------------------------------------------
class PyRisk:
    """Incremental dict-based implementation of the kernel's checks (the baseline)."""

    def __init__(self, lim: RiskLimits):
        self.lim = lim
        self.d = lim.defaults
        self.open = {}           # (sym, oid) -> [acct, side, leaves, px]
        self.nopen = {}          # acct -> n ; (acct, sym) -> n
        self.onot = {}           # acct -> open notional ; (acct, sym) -> ...
        self.oside = {}          # (acct, sym, side) -> open qty
        self.bucket = {}         # acct / (acct, sym) -> [nano tokens, last ts]
        self.last, self.quotes = {}, {}

    def _per_order(self, key, a, s):
        av = self.lim.accounts.get(a, {}).get(key)
        sv = self.lim.symbols.get(s, {}).get(key)
        if av is not None and sv is not None:
            return min(av, sv)
        return av if av is not None else (sv if sv is not None else self.d.get(key))

    def _acct(self, key, a):
        v = self.lim.accounts.get(a, {}).get(key)
        return v if v is not None else self.d.get(key)

    def _tokens(self, k, rate, ts):
        b = self.bucket.get(k)
        if b is None:
            return rate * 10**9
        return min(rate * 10**9, b[0] + min(max(ts - b[1], 0), 10**9) * rate)

    def check(self, ts, oid, sd, p, q, act, ot, tif, a, s) -> int:
        key = (s, oid)
        o = self.open.get(key)
        if act == 0:
            if sd not in (1, -1) or ot > 1 or tif > 3 or q <= 0 or (ot == 0 and p <= 0) or o is not None:
                return 0
        elif act in (1, 2):
            if o is None or o[0] != a or (act == 2 and (q <= 0 or p <= 0)):
                return 0
        else:
            return 0
        dq = dn = pxu = 0
        if act != 1:
            if act == 2:
                sd, ot = o[1], 0
            if self.d.get("kill") or self.lim.accounts.get(a, {}).get("kill"):
                return K.RR_KILL_SWITCH
            allow = self.lim.accounts.get(a, {}).get("symbols")
            if allow is not None and s not in allow:
                return K.RR_NOT_PERMITTED
            if q > K.BIG or (ot == 0 and p > K.BIG):
                return K.RR_RISK_OVERFLOW
            lim = self._per_order("max_order_qty", a, s)
            if lim is not None and q > lim:
                return K.RR_MAX_ORDER_QTY
            ref2 = 2 * self.last.get(s, 0) or sum(self.quotes.get(s, (0, 0))) or \
                2 * self.lim.symbols.get(s, {}).get("reference_price_ticks", 0)
            if ot == 0:
                pxu = p
                bps = self._per_order("price_collar_bps", a, s)
                if bps is not None and ref2 and abs(2 * p - ref2) * 10_000 > bps * ref2:
                    return K.RR_PRICE_COLLAR
            else:
                pxu = (ref2 + 1) // 2
            nlim = self._per_order("max_order_notional", a, s)
            if pxu == 0 and (nlim is not None or self._acct("credit_limit", a) is not None
                             or self.lim.symbols.get(s, {}).get("credit_limit") is not None):
                return K.RR_NO_REFERENCE_PRICE
            notional = pxu * q
            if notional > K.BIG:
                return K.RR_RISK_OVERFLOW
            if nlim is not None and notional > nlim:
                return K.RR_MAX_ORDER_NOTIONAL
            if act == 0:
                dq, dn = q, notional
                mo, ms = self._acct("max_open_orders", a), self.lim.symbols.get(s, {}).get("max_open_orders")
                if (mo is not None and self.nopen.get(a, 0) + 1 > mo) or \
                        (ms is not None and self.nopen.get((a, s), 0) + 1 > ms):
                    return K.RR_MAX_OPEN_ORDERS
            else:
                dq, dn = q - o[2], notional - o[2] * o[3]
            if self.onot.get(a, 0) + dn > K.BIG:
                return K.RR_RISK_OVERFLOW
            if dq > 0:
                plim = self._per_order("max_position", a, s)
                side_open = self.oside.get((a, s, sd), 0) + dq
                if side_open > K.BIG:
                    return K.RR_RISK_OVERFLOW
                if plim is not None and side_open > plim:        # no fills in this bench: position 0
                    return K.RR_MAX_POSITION
            if dn > 0:
                c = self._acct("credit_limit", a)
                if c is not None and self.onot.get(a, 0) + dn > c:
                    return K.RR_CREDIT_LIMIT
                c = self.lim.symbols.get(s, {}).get("credit_limit")
                if c is not None and self.onot.get((a, s), 0) + dn > c:
                    return K.RR_CREDIT_LIMIT
        upd = []
        r = self._acct("max_orders_per_second", a)
        if r is not None:
            t = self._tokens(a, r, ts)
            if t < 10**9:
                return K.RR_MAX_ORDERS_PER_SECOND
            upd.append((a, t))
        r = self.lim.symbols.get(s, {}).get("max_orders_per_second")
        if r is not None:
            t = self._tokens((a, s), r, ts)
            if t < 10**9:
                return K.RR_MAX_ORDERS_PER_SECOND
            upd.append(((a, s), t))
        for k, t in upd:
            self.bucket[k] = [t - 10**9, ts]
        if act == 0:
            self.open[key] = [a, sd, q, pxu]
            for k in (a, (a, s)):
                self.nopen[k] = self.nopen.get(k, 0) + 1
        elif act == 2:
            o[2], o[3] = q, pxu
        else:
            del self.open[key]
            dq, dn = -o[2], -o[2] * o[3]
            for k in (a, (a, s)):
                self.nopen[k] -= 1
        self.oside[(a, s, sd)] = self.oside.get((a, s, sd), 0) + dq
        for k in (a, (a, s)):
            self.onot[k] = self.onot.get(k, 0) + dn
        return 0


def run_python(lim: RiskLimits, cols: dict, n: int, n_sym: int) -> tuple[float, list[int]]:
    py = PyRisk(lim)
    _quotes(RiskEngine(), n_sym, py)
    rows = list(zip(*(cols[c][:n].tolist() for c in ("ts_ns", "order_id", "side", "price_ticks", "qty", "action",
                                                      "order_type", "tif", "account", "symbol"))))
    t0 = time.perf_counter()
    out = [py.check(*r) for r in rows]
    return time.perf_counter() - t0, out


def _quotes(eng, n_sym: int, py: "PyRisk | None" = None) -> None:
    """Every book quoted 99,999 / 100,001 at the start, so the collar applies to every symbol."""
    for s in range(n_sym):
        eng.set_quotes(s, 99_999, 100_001)
        if py is not None:
            py.quotes[s] = (99_999, 100_001)


def kernel_args(eng: RiskEngine, cols: dict):
    ar, sr = eng._rows_for(cols["account"], cols["symbol"])
    return [_ro(cols["ts_ns"]), _ro(cols["order_id"].view(np.int64)), _ro(cols["side"]), _ro(cols["price_ticks"]),
            _ro(cols["qty"]), _ro(cols["action"]), _ro(cols["order_type"]), _ro(cols["tif"]),
            _ro(cols["post_only"]), _ro(ar), _ro(sr)]


def run_kernel(lim: RiskLimits, cols: dict, repeat: int, map_capacity: int, n_sym: int) -> dict:
    n = len(cols["ts_ns"])
    best_w = best_c = float("inf")
    reason = np.zeros(n, np.uint8)
    for _ in range(repeat):
        eng = RiskEngine(lim, map_capacity=map_capacity)
        _quotes(eng, n_sym)
        args = kernel_args(eng, cols)
        t0, c0 = time.perf_counter(), time.process_time()
        i = 0
        while True:   # the map is sized up front; growing it (if ever needed) is timed too
            st, i = K.pretrade_check_cpu(*args, eng.acct, eng.sym, eng.pair, eng.g, eng.omap, reason, i)
            if st == K.ST_OK:
                break
            eng._grow_map()
        w, c = time.perf_counter() - t0, time.process_time() - c0
        assert i == n, (st, i)
        best_w, best_c = min(best_w, w), min(best_c, c)
    names, counts = np.unique(reason, return_counts=True)
    return {"rows": n, "wall_s": best_w, "cpu_s": best_c, "rows_per_s_wall": n / best_w, "rows_per_s_cpu": n / best_c,
            "open_orders_end": int(eng.g[K.G_NMAP]), "map_slots": int(eng.omap.shape[0]),
            "map_grows": eng.counts["map_grows"],
            "state_mib": eng.state_bytes() / 2**20, "reasons": dict(zip(reason_names(names), counts.tolist())),
            "verdicts": reason}


def run_engine_batches(lim: RiskLimits, cols: dict, batch: int, map_capacity: int, n_sym: int) -> dict:
    n = len(cols["ts_ns"])
    eng = RiskEngine(lim, map_capacity=map_capacity)
    _quotes(eng, n_sym)
    t0 = time.perf_counter()
    out = [eng.check({k: v[a:a + batch] for k, v in cols.items()}) for a in range(0, n, batch)]
    w = time.perf_counter() - t0
    return {"batch": batch, "wall_s": w, "rows_per_s": n / w, "verdicts": np.concatenate(out)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--accounts", type=int, default=1_000)
    ap.add_argument("--symbols", type=int, default=16)
    ap.add_argument("--live", type=int, default=20_000, help="live orders the quotes flow keeps about")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batch", type=int, default=65_536)
    ap.add_argument("--py-rows", type=int, default=300_000)
    ap.add_argument("--flow", choices=("quotes", "gen", "both"), default="both")
    ap.add_argument("--json", type=str, default=None, help="also write the figures as JSON here")
    a = ap.parse_args()
    lim = RiskLimits.from_toml(CONFIG)
    print(f"hpte bench_risk: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}, numpy {np.__version__}; single-threaded")
    # warm-up: compile / load the cache on a small flow
    warm = quotes_flow(1000, 10, 2, 100)
    RiskEngine(lim).check(warm)
    _quotes(RiskEngine(lim), 2)
    results = {}
    flows = ["quotes", "gen"] if a.flow == "both" else [a.flow]
    for flow in flows:
        t0 = time.perf_counter()
        lim = RiskLimits.from_toml(CONFIG)
        if flow == "quotes":
            cols = quotes_flow(a.rows, a.accounts, a.symbols, a.live)
            cap = 1 << max(12, (3 * a.live).bit_length())     # load <= ~1/3 with ~live entries
            label = f"quotes flow: {a.rows:,} rows, {a.accounts:,} accounts, {a.symbols} symbols, ~{a.live:,} live orders"
        else:
            from hpte.engine.gen import generate_flow
            cols = generate_flow(a.rows, n_books=a.symbols, n_accounts=a.accounts, seed=1)
            bound = int(np.count_nonzero(cols["action"] == 0)) - int(np.count_nonzero(cols["action"] == 1))
            cap = 1 << max(12, (2 * max(bound, 1024)).bit_length())
            lim = RiskLimits.from_toml(CONFIG.replace("max_open_orders = 400", "max_open_orders = 10_000_000")
                                       .replace("max_position = 20_000", "max_position = 1_000_000_000"))
            label = f"gen flow (generate_flow): {a.rows:,} rows, {a.accounts:,} accounts, {a.symbols} books"
        print(f"\n{label}  (generated in {time.perf_counter() - t0:.1f} s)")
        k = run_kernel(lim, cols, a.repeat, cap, a.symbols)
        print(f"  kernel pretrade_check_cpu: {k['rows_per_s_wall'] / 1e6:7.1f} M orders/s wall, "
              f"{k['rows_per_s_cpu'] / 1e6:7.1f} M orders/s CPU  ({k['wall_s'] * 1e9 / a.rows:.1f} ns/order; "
              f"best of {a.repeat})")
        print(f"  open orders at end {k['open_orders_end']:,} (map {k['map_slots']:,} slots, grown {k['map_grows']}x), "
              f"state {k['state_mib']:.1f} MiB")
        rej = {r: c for r, c in k["reasons"].items() if r}
        print(f"  verdicts: pass {k['reasons'].get('', 0):,}; " + ", ".join(f"{r} {c:,}" for r, c in sorted(rej.items())))
        b = run_engine_batches(lim, cols, a.batch, cap, a.symbols)
        assert np.array_equal(b["verdicts"], k["verdicts"]), "batched engine verdicts differ from the whole-flow kernel"
        print(f"  RiskEngine.check, batches of {a.batch:,}: {b['rows_per_s'] / 1e6:7.1f} M orders/s wall "
              f"(verdicts identical to one kernel call)")
        m = min(a.py_rows, a.rows)
        py_s, py_v = run_python(lim, cols, m, a.symbols)
        kp = run_kernel(lim, {c: v[:m] for c, v in cols.items()}, a.repeat, cap, a.symbols)
        assert py_v == kp["verdicts"].tolist(), "plain-Python baseline verdicts differ from the kernel"
        print(f"  plain Python (dicts), first {m:,} rows: {m / py_s / 1e6:7.3f} M orders/s wall "
              f"(verdicts identical)")
        print(f"  ratio kernel / Python: {k['rows_per_s_wall'] / (m / py_s):,.0f}x (whole flow), "
              f"{kp['rows_per_s_wall'] / (m / py_s):,.0f}x (same {m:,} rows)")
        results[flow] = {"kernel": {x: y for x, y in k.items() if x != "verdicts"},
                         "engine_batches": {x: y for x, y in b.items() if x != "verdicts"},
                         "python": {"rows": m, "wall_s": py_s, "rows_per_s": m / py_s},
                         "kernel_same_rows": {x: y for x, y in kp.items() if x != "verdicts"}}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1, default=float)


if __name__ == "__main__":
    main()
