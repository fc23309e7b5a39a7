"""Engines under test, hypothesis order-stream strategies, and comparison helpers for the tests.

Order streams are dicts of numpy columns in the order schema (schema.ORDER_COLUMNS). They
stress the book: few price levels (prices collide, books cross), few accounts (self-trades),
every action / order type / tif / post-only, cancels and replaces aimed mostly at ids used
before (live, finished or never used), occasional invalid values, several symbols and
duplicate ids.
"""
from __future__ import annotations

from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
from hypothesis import strategies as st
from reference.matcher import ReferenceEngine

from hpte.engine import schema as S
from hpte.engine.engine import Engine

# ---------------------------------------------------------------------------------------------
# Engine factories under test: name -> callable(stp: str = "none") -> engine.
# Every test parametrized over `impl` runs each of them; test_differential compares every entry
# other than "reference" with the reference.
# ---------------------------------------------------------------------------------------------
IMPLS: dict[str, Callable[..., object]] = {
    "reference": ReferenceEngine,
    "engine": lambda stp="none": Engine(stp=stp),
    # books matched in parallel (Python threads over chunks of books), outputs merged to arrival order
    "engine-2threads": lambda stp="none": Engine(stp=stp, threads=2),
}

STP_MODES: tuple[str, ...] = tuple(S.STP_NAMES)

ORDER_DTYPES = {name: dt for name, dt, _, _ in S.ORDER_COLUMNS}

# Invalid values used now and then (each fits its column's dtype).
BAD_SIDES = (0, 2, -2, 127)
BAD_TYPES = (4, 9, 255)
BAD_TIFS = (4, 9, 255)
BAD_ACTIONS = (3, 7, 255)
BAD_QTYS = (0, -1, -7)
BAD_PRICES = (0, -3)


# ---------------------------------------------------------------------------------------------
# Column helpers
# ---------------------------------------------------------------------------------------------
def rows_to_columns(rows: Sequence[Mapping[str, int]]) -> dict[str, np.ndarray]:
    """A list of row dicts (missing optional keys take their defaults) -> order columns."""
    return {
        name: np.array([r.get(name, default) for r in rows], dtype=dt) if rows else np.empty(0, dtype=dt)
        for name, dt, _req, default in S.ORDER_COLUMNS
    }

def growth_stream(symbols) -> dict[str, np.ndarray]:
    """Per symbol (book): 150 asks near 10,000, one bid 1,000 or 5,000 ticks away (so a small
    max_levels rejects the odd symbols' bids PRICE_OUT_OF_RANGE), then an IOC that sweeps the asks: exercises
    pool, ladder and output growth in every book."""
    rows, ts, oid = [], 1000, 1
    for sym in symbols:
        for k in range(150):
            rows.append(dict(ts_ns=ts, order_id=oid, side=S.SELL, price_ticks=10_000 + k % 7, qty=1 + k % 3,
                             account=1 + k % 2, symbol=sym))
            ts, oid = ts + 1, oid + 1
        rows.append(dict(ts_ns=ts, order_id=oid, side=S.BUY, price_ticks=10_000 - (5000 if sym % 2 else 1000),
                         qty=5, account=3, symbol=sym))
        ts, oid = ts + 1, oid + 1
        rows.append(dict(ts_ns=ts, order_id=oid, side=S.BUY, price_ticks=10_006, qty=400, tif=S.TIF_IOC,
                         account=1, symbol=sym))
        ts, oid = ts + 1, oid + 1
    return rows_to_columns(rows)



def n_rows(cols: Mapping[str, np.ndarray]) -> int:
    return len(cols["ts_ns"])


def split_batches(cols: Mapping[str, np.ndarray], sizes: int | Sequence[int]) -> list[dict[str, np.ndarray]]:
    """Cut order columns into consecutive batches.

    `sizes` an int: batches of that many rows (the last may be shorter; an empty stream gives
    one empty batch). `sizes` a sequence: batches of those sizes in turn (0 allowed: an empty
    batch), then one batch with whatever is left (possibly empty). Concatenating the batches
    always gives back `cols`.
    """
    n = n_rows(cols)
    if isinstance(sizes, (int, np.integer)):
        if sizes <= 0:
            raise ValueError(f"batch size must be positive, got {sizes}")
        bounds = list(range(0, n, int(sizes))) + [n]
        if len(bounds) == 1:
            bounds = [0, 0]
    else:
        bounds = [0]
        for s in sizes:
            if s < 0:
                raise ValueError(f"batch sizes must be >= 0, got {s}")
            bounds.append(min(n, bounds[-1] + int(s)))
        bounds.append(n)
    return [{k: v[a:b] for k, v in cols.items()} for a, b in zip(bounds[:-1], bounds[1:])]


def concat(parts: Sequence[Mapping[str, np.ndarray]], columns) -> dict[str, np.ndarray]:
    """Concatenate output column dicts of schema `columns` (empty list -> empty columns)."""
    return {n: (np.concatenate([np.asarray(p[n]) for p in parts]) if parts else np.empty(0, dtype=t))
            for n, t in columns}


def run_batches(engine, batches) -> dict[str, dict[str, np.ndarray]]:
    """Submit each batch in turn; the concatenated fills, events and deltas."""
    res = [engine.submit(b) for b in batches]
    return {
        "fills": concat([r.fills for r in res], S.FILL_COLUMNS),
        "events": concat([r.events for r in res], S.EVENT_COLUMNS),
        "deltas": concat([r.deltas for r in res], S.DELTA_COLUMNS),
    }


def as_rows(cols: Mapping[str, np.ndarray], columns) -> list[tuple]:
    """Output columns as a list of plain-int tuples in schema column order."""
    arrays = [np.asarray(cols[n]) for n, _ in columns]
    return [tuple(int(a[i]) for a in arrays) for i in range(len(arrays[0]) if arrays else 0)]


def assert_columns(cols: Mapping[str, np.ndarray], columns, what: str = "output") -> None:
    """`cols` has exactly the schema's column names, dtypes, one dimension and one length."""
    names = [n for n, _ in columns]
    assert list(cols.keys()) == names or sorted(cols.keys()) == sorted(names), \
        f"{what}: columns {list(cols.keys())}, expected {names}"
    lens = set()
    for n, dt in columns:
        a = cols[n]
        assert isinstance(a, np.ndarray), f"{what}.{n}: {type(a).__name__}, expected numpy.ndarray"
        assert a.dtype == dt, f"{what}.{n}: dtype {a.dtype}, expected {dt}"
        assert a.ndim == 1, f"{what}.{n}: shape {a.shape}"
        lens.add(len(a))
    assert len(lens) <= 1, f"{what}: columns of different lengths {lens}"


def assert_same(actual: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray], columns,
                what: str = "output") -> None:
    """Exact equality of two column dicts of schema `columns`, with a readable first difference."""
    assert_columns(actual, columns, what + " (actual)")
    assert_columns(expected, columns, what + " (expected)")
    a, e = as_rows(actual, columns), as_rows(expected, columns)
    if a == e:
        return
    names = [n for n, _ in columns]
    k = next((i for i, (x, y) in enumerate(zip(a, e)) if x != y), min(len(a), len(e)))
    lo = max(0, k - 3)
    msg = [f"{what}: first difference at row {k} (actual {len(a)} rows, expected {len(e)})",
           "columns: " + ", ".join(names)]
    for i in range(lo, k + 4):
        msg.append(f"  row {i}: actual   {a[i] if i < len(a) else '-'}")
        msg.append(f"  row {i}: expected {e[i] if i < len(e) else '-'}")
    raise AssertionError("\n".join(msg))


# ---------------------------------------------------------------------------------------------
# Hypothesis strategies
# ---------------------------------------------------------------------------------------------
def _pick(draw, weighted: Sequence[tuple[int, object]]):
    """Draw one value from (weight, value) pairs; shrinks towards the first pair."""
    total = sum(w for w, _ in weighted)
    r = draw(st.integers(0, total - 1))
    for w, v in weighted:
        if r < w:
            return v
        r -= w
    raise AssertionError("unreachable")


@st.composite
def order_streams(draw, min_rows: int = 0, max_rows: int = 60, n_symbols: int = 2,
                  n_accounts: int = 3, n_prices: int = 5, invalid: bool = True,
                  first_id: int = 1, gtd: bool = False, stops: bool = False,
                  icebergs: bool = False) -> dict[str, np.ndarray]:
    """A stream of order rows (dict of numpy columns of the order schema) that stresses the book.

    Prices come from `n_prices` ticks around 100 (buys a little lower than sells, so books both
    rest and cross), accounts from 1..`n_accounts`, symbols from a few values. NEW ids are
    mostly fresh, sometimes a reused one (duplicate when it still rests, legal reuse when it has
    finished). CANCEL/REPLACE target, in about 55/30/15 proportions, an order live at that
    point (known by running the reference alongside: generation only, never an expectation), an
    id used before (mostly finished) and an id never used; with the owner's account and book
    most of the time. With `invalid`, a few percent of values are out of range. With `gtd`, a
    half of the NEW rows carry an `expire_ts_ns` a few ns ahead (some in the past, some far ahead).
    With `stops`, about a third of the NEW rows are STOP / STOP_LIMIT orders with stop prices among
    the trading prices (a few with a bad stop price or tif), and some REPLACE rows move a stop price.
    With `icebergs`, about half of the NEW rows carry a `display_qty` (mostly 1..qty on any order
    type: valid on resting LIMIT orders, INVALID_DISPLAY_QTY elsewhere; a few -1 or qty + 1), and a
    few REPLACE rows one (INVALID_DISPLAY_QTY).
    """
    n = draw(st.integers(min_rows, max_rows))
    symbols = [0, 7, 1 << 31][: max(1, n_symbols)]
    bad = 1 if invalid else 0
    ts = draw(st.integers(0, 1_000_000))
    next_id = first_id
    used: list[int] = []                    # NEW ids in order of first use
    sim = ReferenceEngine()                 # to know which orders are live
    owner: dict[int, tuple[int, int, int]] = {}  # id -> (account, symbol, side) of its last NEW
    rows = []
    for _ in range(n):
        ts += draw(st.integers(0, 2))
        action = _pick(draw, [(60, S.ACT_NEW), (16, S.ACT_CANCEL), (18, S.ACT_REPLACE),
                              (2 * bad, "bad")])
        if action == "bad":
            action = draw(st.sampled_from(BAD_ACTIONS))
        row = {"ts_ns": ts, "action": action}
        if action == S.ACT_NEW:
            if used and draw(st.integers(0, 9)) == 0:
                oid = draw(st.sampled_from(used))          # duplicate / reuse
            else:
                oid = next_id
                next_id += 1
            side = _pick(draw, [(50, S.BUY), (50, S.SELL), (2 * bad, "bad")])
            if side == "bad":
                side = draw(st.sampled_from(BAD_SIDES))
            otype = _pick(draw, [(85, S.OT_LIMIT), (13, S.OT_MARKET), (1 * bad, "bad"),
                                 (25 if stops else 0, S.OT_STOP), (25 if stops else 0, S.OT_STOP_LIMIT)])
            if otype == "bad":
                otype = draw(st.sampled_from(BAD_TYPES))
            tif = _pick(draw, [(45, S.TIF_GTC), (15, S.TIF_IOC), (12, S.TIF_FOK), (25, S.TIF_DAY),
                               (1 * bad, "bad")])
            if tif == "bad":
                tif = draw(st.sampled_from(BAD_TIFS))
            account = draw(st.integers(1, n_accounts))
            symbol = draw(st.sampled_from(symbols))
            post_only = _pick(draw, [(85, 0), (13, 1), (2, 255)])
            row.update(order_id=oid, side=side, order_type=otype, tif=tif, account=account,
                       symbol=symbol, post_only=post_only)
            if gtd and draw(st.integers(0, 1)) == 0:
                row["expire_ts_ns"] = _pick(draw, [(85, ts + draw(st.integers(1, 8))), (8, ts),
                                                   (4, 10**10), (3 * bad, -1)])
            if stops and otype in (S.OT_STOP, S.OT_STOP_LIMIT):
                if "expire_ts_ns" in row and draw(st.integers(0, 9)) > 0:
                    del row["expire_ts_ns"]         # mostly no GTD stop (INVALID_EXPIRE)
                last = sim.books[symbol].last if symbol in sim.books else 0   # generation only
                near = last + draw(st.integers(-2, 2)) if last else 100
                row["stop_price_ticks"] = _pick(draw, [(50, near), (45, draw(st.integers(97, 104))), (3 * bad, 0),
                                                       (2 * bad, -2)])
                if row["tif"] in (S.TIF_IOC, S.TIF_FOK) and draw(st.integers(0, 3)) > 0:
                    row["tif"] = S.TIF_GTC          # mostly valid stops (a few IOC / FOK rejects)
            elif stops and bad and draw(st.integers(0, 29)) == 0:
                row["stop_price_ticks"] = 101       # a stop price on a non-stop order
            if oid not in owner:
                used.append(oid)
            owner[oid] = (account, symbol, side if side in (S.BUY, S.SELL) else S.BUY)
        else:
            live = sorted((sym, oid) for sym, b in sim.books.items() for oid in b.orders)
            r = draw(st.integers(0, 19))
            target = None
            if live and r < 11:
                sym, oid = draw(st.sampled_from(live))
                target = sim.books[sym].orders[oid]
                acc, sd = target.account, target.side
            else:
                if used and r < 17:
                    oid = draw(st.sampled_from(used))
                else:
                    oid = draw(st.sampled_from([next_id + 1000, 0, 2**64 - 1]))   # never used
                if oid in owner:
                    acc, sym, sd = owner[oid]
                else:
                    acc, sym, sd = draw(st.integers(1, n_accounts)), draw(st.sampled_from(symbols)), S.BUY
            if draw(st.integers(0, 9)) == 0:
                acc = draw(st.integers(0, n_accounts))
            if draw(st.integers(0, 14)) == 0:
                sym = draw(st.sampled_from(symbols))
            row.update(order_id=oid, account=acc, symbol=sym, side=sd,
                       order_type=S.OT_LIMIT, tif=draw(st.sampled_from([S.TIF_GTC, S.TIF_IOC, S.TIF_DAY])),
                       post_only=draw(st.sampled_from([0, 0, 0, 1])))
            side = sd
            if stops and action == S.ACT_REPLACE and draw(st.integers(0, 3)) == 0:
                row["stop_price_ticks"] = _pick(draw, [(90, draw(st.integers(97, 104))), (5 * bad, -1)])
            if target is not None and action == S.ACT_REPLACE and draw(st.integers(0, 2)) == 0:
                # same price: in place (qty <= leaves) or re-entry (qty up)
                row.update(price_ticks=target.price, qty=max(1, target.leaves + draw(st.integers(-2, 2))))
                rows.append(row)
                sim.submit(rows_to_columns([row]))
                continue
        # price and quantity
        mid = 100
        # buys in [mid - n + 3, mid + 2], sells in [mid, mid + n - 1]: three prices overlap
        lo = mid - n_prices + 3 if side == S.BUY else mid
        price = draw(st.integers(lo, lo + n_prices - 1))
        if invalid and draw(st.integers(0, 39)) == 0:
            price = draw(st.sampled_from(BAD_PRICES))
        if row.get("order_type") == S.OT_MARKET and draw(st.booleans()):
            price = 0
        qty = draw(st.integers(1, 12))
        if invalid and draw(st.integers(0, 39)) == 0:
            qty = draw(st.sampled_from(BAD_QTYS))
        row.update(price_ticks=price, qty=qty)
        if icebergs and action == S.ACT_NEW and draw(st.booleans()):
            row["display_qty"] = _pick(draw, [(90, draw(st.integers(1, max(1, qty)))), (5 * bad, -1),
                                              (5 * bad, qty + 1)])
        elif icebergs and action == S.ACT_REPLACE and draw(st.integers(0, 19)) == 0:
            row["display_qty"] = 1
        rows.append(row)
        sim.submit(rows_to_columns([row]))
    return rows_to_columns(rows)


def random_stream(rng: np.random.Generator, n: int, n_symbols: int = 3, n_accounts: int = 4,
                  n_prices: int = 8, invalid: bool = True) -> dict[str, np.ndarray]:
    """A long seeded stream with the character of `order_streams` (for the 1024-row batches)."""
    symbols = np.array([0, 7, 1 << 31, 12][: max(1, n_symbols)], dtype=np.uint32)
    cols = {name: np.empty(n, dtype=dt) for name, dt, _, _ in S.ORDER_COLUMNS}
    cols["ts_ns"][:] = 1_000_000 + np.cumsum(rng.integers(0, 3, n))
    cols["expire_ts_ns"][:] = 0             # no good-till-date orders (order_streams(gtd=True) has them)
    cols["stop_price_ticks"][:] = 0         # no stop orders (order_streams(stops=True) has them)
    cols["display_qty"][:] = 0              # no icebergs (order_streams(icebergs=True) has them)
    used: list[int] = []
    sim = ReferenceEngine()                 # to know which orders are live
    owner: dict[int, tuple[int, int, int]] = {}
    next_id = 1
    for i in range(n):
        u = rng.random()
        action = S.ACT_NEW if u < 0.6 else S.ACT_CANCEL if u < 0.78 else S.ACT_REPLACE if u < 0.98 else (
            int(rng.choice(BAD_ACTIONS)) if invalid else S.ACT_NEW)
        otype, tif, post_only = S.OT_LIMIT, S.TIF_GTC, 0
        if action == S.ACT_NEW:
            if used and rng.random() < 0.05:
                oid = used[int(rng.integers(len(used)))]
            else:
                oid, next_id = next_id, next_id + 1
            side = S.BUY if rng.random() < 0.5 else S.SELL
            if invalid and rng.random() < 0.01:
                side = int(rng.choice(BAD_SIDES))
            v = rng.random()
            otype = S.OT_LIMIT if v < 0.9 else S.OT_MARKET if v < 0.995 or not invalid else int(rng.choice(BAD_TYPES))
            v = rng.random()
            tif = (S.TIF_GTC if v < 0.5 else S.TIF_DAY if v < 0.75 else S.TIF_IOC if v < 0.88 else
                   S.TIF_FOK if v < 0.995 or not invalid else int(rng.choice(BAD_TIFS)))
            post_only = 1 if rng.random() < 0.1 else 0
            account = int(rng.integers(1, n_accounts + 1))
            symbol = int(rng.choice(symbols))
            if oid not in owner:
                used.append(oid)
            owner[oid] = (account, symbol, side if side in (S.BUY, S.SELL) else S.BUY)
        else:
            v = rng.random()
            live = sorted((sym, oid) for sym, b in sim.books.items() for oid in b.orders)
            if live and v < 0.6:
                symbol, oid = live[int(rng.integers(len(live)))]
                o = sim.books[symbol].orders[oid]
                account, side = o.account, o.side
            else:
                oid = used[int(rng.integers(len(used)))] if used and v < 0.9 else next_id + 10_000
                account, symbol, side = owner.get(
                    oid, (int(rng.integers(1, n_accounts + 1)), int(rng.choice(symbols)), S.BUY))
            if rng.random() < 0.05:
                account = int(rng.integers(0, n_accounts + 1))
        mid = 100
        lo = mid - n_prices + 2 if side == S.BUY else mid
        price = int(rng.integers(lo, lo + n_prices))
        qty = int(rng.integers(1, 15))
        if invalid and rng.random() < 0.01:
            price = int(rng.choice(BAD_PRICES))
        if invalid and rng.random() < 0.01:
            qty = int(rng.choice(BAD_QTYS))
        for name, v in (("order_id", oid), ("side", side), ("price_ticks", price), ("qty", qty),
                        ("action", action), ("order_type", otype), ("tif", tif),
                        ("account", account), ("symbol", symbol), ("post_only", post_only)):
            cols[name][i] = v
        sim.submit({k: a[i:i + 1] for k, a in cols.items()})
    return cols


def iter_rows(cols: Mapping[str, np.ndarray]) -> Iterator[dict[str, int]]:
    """Rows of order columns as dicts of Python ints."""
    for i in range(n_rows(cols)):
        yield {name: int(cols[name][i]) for name in ORDER_DTYPES}
