"""Cold compilation, per compiled function: run in a fresh numba cache.

    NUMBA_CACHE_DIR=$(mktemp -d) python bench/bench_compile.py [seq,par,risk | warmrisk,warm]

seq: ``Engine(threads=1).submit`` of 100 rows over 3 books, ``submit_order``, ``book_l3``,
``book_levels``; par: ``Engine(threads=2).submit`` of the same; risk: an ``Engine(risk=...)``
submit; warmrisk / warm: ``pipeline.warm_up`` with / without risk (what ``hpte match`` runs
before its clock starts). Prints the CPU seconds of each part and the numba compilations (numba's
"numba:compile" events) with their own CPU time (children excluded), largest first, then the
functions compiled more than once (one compilation per signature: a second one is usually an int
width or array layout that differs between call sites).
"""
from __future__ import annotations

import sys
import time

import numpy as np
from numba.core import event as ev

_stack: list = []
_rows: list = []


class _Listener(ev.Listener):
    def on_start(self, e):
        _stack.append([time.process_time(), e.data["dispatcher"].py_func.__qualname__, 0.0])

    def on_end(self, e):
        t0, name, child = _stack.pop()
        d = time.process_time() - t0
        _rows.append((d - child, d, name))
        if _stack:
            _stack[-1][2] += d


def _batch(n: int, nsym: int) -> dict:
    from hpte.engine import schema as S
    rng = np.random.default_rng(1)
    cols = {name: np.zeros(n, dt) for name, dt, _r, _d in S.ORDER_COLUMNS}
    cols["ts_ns"][:] = np.arange(n)
    cols["order_id"][:] = np.arange(1, n + 1)
    cols["side"][:] = rng.choice([-1, 1], n)
    cols["price_ticks"][:] = rng.integers(95, 105, n)
    cols["qty"][:] = rng.integers(1, 10, n)
    cols["symbol"][:] = rng.integers(0, nsym, n)
    cols["account"][:] = 1
    return cols


def main() -> None:
    parts = (sys.argv[1] if len(sys.argv) > 1 else "seq,par,risk").split(",")
    ev.register("numba:compile", _Listener())
    from hpte.engine.engine import Engine
    t = time.process_time()
    for part in parts:
        if part == "seq":
            e = Engine(threads=1)
            e.submit(_batch(100, 3))
            e.submit_order(200, 999, 1, 100, 1)
            e.book_l3()
            e.book_levels()
        elif part == "par":
            Engine(threads=2).submit(_batch(100, 3))
        elif part == "risk":
            from hpte.engine.risk.limits import RiskLimits
            Engine(risk=RiskLimits.from_toml("[defaults]\nmax_order_qty = 10")).submit(_batch(100, 3))
        elif part in ("warmrisk", "warm"):
            from hpte.engine.pipeline import warm_up
            warm_up("cpu", part == "warmrisk")
        else:
            raise SystemExit(f"unknown part {part!r}; expected seq, par, risk, warmrisk or warm")
        now = time.process_time()
        print(f"{part}: {now - t:.1f} s CPU", flush=True)
        t = now
    print(f"numba compilations: {len(_rows)}, own CPU {sum(r[0] for r in _rows):.1f} s")
    for own, incl, name in sorted(_rows, reverse=True)[:15]:
        print(f"  own {own:6.1f} s  incl {incl:6.1f} s  {name}")
    per: dict = {}
    for own, _incl, name in _rows:
        n, t = per.get(name, (0, 0.0))
        per[name] = (n + 1, t + own)
    many = sorted(((t, n, name) for name, (n, t) in per.items() if n > 1), reverse=True)
    print(f"compiled more than once (one compilation per signature): {len(many)} functions")
    for t, n, name in many:
        print(f"  {n} x, own {t:6.1f} s  {name}")


if __name__ == "__main__":
    main()
