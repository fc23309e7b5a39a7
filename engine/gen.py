"""Synthetic order flow like FORMATS.md's benchmark flow (``hpte gen``).

Per event (FORMATS.md, "The benchmark flow"): 60% NEW LIMIT GTC, 30% CANCEL of a uniformly chosen
resting order, 10% marketable NEW LIMIT IOC; a Gaussian random-walk latent mid per book (sigma
0.1 tick per event); new limits 50/50 buy/sell, 97% passive at a geometric(0.12) distance
(1, 2, ... ticks) from the rounded mid, moved to one tick short of the opposite touch when it
would cross, 3% at or 1-2 ticks through the opposite touch (uniform 0, 1, 2), quantity
geometric(0.15); IOCs at the opposite touch + geometric(0.5) - 1 ticks for geometric(0.04) lots
times (the book's resting orders / 5,000 clipped to [0.25, 4]), truncated, at least 1; accounts 1..A
Zipf(1.3); inter-arrival 1 + geometric, mean 2 us. With several books each book has its own walk
and its own book; every event belongs to a uniformly drawn book, so the books' flows interleave
in time order.

The generator tracks the book itself (hpte.kernels.gen.gen_flow_cpu): cancels only name orders
resting at that moment, with their own account, side, price and leaves quantity.

Order-type mix (``stops``, ``gtd``; both 0 by default, and then the flow is exactly the plain
one): mix_order_types turns a seeded share of the NEW LIMIT GTC rows into STOP / STOP_LIMIT
orders and good-till-date orders after the plain flow is generated. The generator's own book
(and so GenStats' trades, resting_end, ...) is that of the plain flow; it does not simulate
stops or expiry (``icebergs`` likewise: a share of NEW LIMIT GTC rows given a display_qty).

Determinism: the flow is a function of (n_events, n_books, n_accounts, seed, start_mid, stops, gtd,
icebergs). All
random numbers come from ``np.random.default_rng(seed)`` in a fixed order, drawn in chunks of
GEN_CHUNK events (a constant, so progress reporting never changes the flow). A flow is not a
prefix of a longer flow of the same seed.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterator, Optional

import numpy as np

from hpte.kernels import gen as K

from . import schema as S
from .io import Columns

GEN_CHUNK = 1 << 20             # events drawn and generated per kernel call
START_TS_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z, timestamp of the flow's start
MEAN_DT_NS = 2_000              # mean inter-arrival time (1 + geometric), ns
MID_SIGMA = 0.1                 # latent mid step, ticks per event of the book
P_NEW, P_CANCEL = 0.60, 0.30    # the rest (0.10) is IOC
P_MARKETABLE = 0.03             # share of NEW limits priced at/through the opposite touch
P_DIST = 0.12                   # passive distance: geometric(P_DIST) ticks (1, 2, ...) from the rounded mid
DIST_MAX = 255                  # passive distances are clipped here (P(larger) ~ 1e-14)
P_QTY = 0.15                    # NEW quantity: geometric(P_QTY) lots
P_IOC_PX = 0.5                  # IOC limit: opposite touch + geometric(P_IOC_PX) - 1 ticks
P_IOC_QTY = 0.04                # IOC quantity: geometric(P_IOC_QTY) lots, then scaled
ZIPF_S = 1.3                    # account popularity exponent
LADDER_MARGIN = DIST_MAX + 64   # ladder ticks beyond the walk's range on either side
MAX_EVENTS = 2**31 - 1
MIX_STREAM = 0x6D6978           # second word of the mix's seed: np.random.default_rng([seed, MIX_STREAM])
P_STOP_DIST = 0.35              # stop price: geometric(P_STOP_DIST) ticks (1, 2, ...) beyond the touch estimate
P_STOP_LIMIT = 0.5              # share of the stops that are STOP_LIMIT (the rest STOP)
STOP_LIMIT_SLACK = 2            # STOP_LIMIT limit price: stop price + side * uniform{0..2} ticks
GTD_MEAN_NS = 1_000_000         # GTD horizon: 1 + geometric(1 / GTD_MEAN_NS) ns after the row's ts_ns
MAX_LEVELS = 1 << 28            # total ladder size over all books (int64 entries)


@dataclass(frozen=True)
class FlowSetup:
    """Whole-flow inputs drawn before the events: times, books, mids, ladder layout.

    ts_ns : int64[n], event times (ns). sym : uint32[n], book per event. mid : float64[n], the
    book's latent mid after the event's step (ticks). key : uint64, order-id key. Per book:
    lad_off, lad_lo, lad_hi : int64 (ladder offset, lowest and highest price), rest_off : int64.
    n_levels : total ladder size.
    """

    ts_ns: np.ndarray
    sym: np.ndarray
    mid: np.ndarray
    key: np.uint64
    lad_off: np.ndarray
    lad_lo: np.ndarray
    lad_hi: np.ndarray
    rest_off: np.ndarray
    n_levels: int


CHUNK_FIELDS = ("kind", "side", "mkt", "through", "dist", "qty", "ioc_g", "ioc_q", "u_pick", "account")


@dataclass(frozen=True)
class GenStats:
    """Summary of a generated flow, measured by the generator's own book."""

    n_events: int
    n_books: int
    new: int                  # NEW LIMIT GTC rows
    cancel: int               # CANCEL rows
    ioc: int                  # NEW LIMIT IOC rows
    cancel_as_new: int        # cancel draws on an empty book, emitted as NEW GTC
    marketable: int           # NEW GTC rows priced at/through the opposite touch on purpose
    passive_dist_mean: float  # mean |price - round(mid)| of passive NEW rows, ticks
    trades: int               # fills (maker-taker pairs) the flow produces under price-time
    traded_qty: int           # lots filled
    ioc_qty_mean: float       # mean IOC quantity, lots
    ioc_fill_ratio: float     # share of IOC lots that fill
    resting_end: int          # orders resting at the end, all books
    levels_touched: int       # distinct (book, price) levels where an order ever rested
    clipped: int              # prices clipped into the ladder (expected 0)
    seconds: float            # generation time
    stops: int = 0            # NEW GTC rows turned into STOP orders (mix_order_types)
    stop_limits: int = 0      # NEW GTC rows turned into STOP_LIMIT orders
    gtd: int = 0              # NEW GTC rows given an expire_ts_ns
    icebergs: int = 0         # NEW GTC rows given a display_qty

    def as_dict(self) -> dict:
        return asdict(self)


def _check_int(name: str, value, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    v = int(value)
    if v < lo or v > hi:
        raise ValueError(f"{name} must be in [{lo:,}, {hi:,}], got {v:,}")
    return v


def _validate(n_events, n_books, n_accounts, seed, start_mid) -> tuple[int, int, int, int, int]:
    n = _check_int("n_events", n_events, 0, MAX_EVENTS)
    nb = _check_int("n_books", n_books, 1, 1 << 20)
    na = _check_int("n_accounts", n_accounts, 1, 2**32 - 1)
    sd = _check_int("seed", seed, 0, 2**63 - 1)
    sm = _check_int("start_mid", start_mid, 1, 1 << 50)
    return n, nb, na, sd, sm


def _check_fraction(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    v = float(value)
    if not (0.0 <= v <= 1.0):
        raise ValueError(f"{name} must be a fraction in [0, 1], got {value!r}")
    return v


def _validate_mix(stops, gtd, icebergs=0.0) -> tuple[float, float, float]:
    fs, fg, fi = _check_fraction("stops", stops), _check_fraction("gtd", gtd), _check_fraction("icebergs", icebergs)
    if fs + fg + fi > 1.0:
        raise ValueError(f"stops + gtd + icebergs must be at most 1 (shares of the NEW GTC rows), got {fs} + {fg} + {fi}")
    return fs, fg, fi


def mix_order_types(cols: Columns, mid: np.ndarray, *, stops: float = 0.0, gtd: float = 0.0,
                    seed: int = 0, icebergs: float = 0.0) -> tuple[Columns, dict[str, int]]:
    """Turn a seeded share of a flow's NEW LIMIT GTC rows into stop and good-till-date orders.

    Parameters
    ----------
    cols : order columns (schema.ORDER_COLUMNS), length n; not modified.
    mid : float64[n], per row the latent mid of the row's book, ticks (FlowSetup.mid); the touch
        is estimated as round(mid) -/+ 1 tick (the flow's passive orders sit >= 1 tick from it).
    stops, gtd : fractions in [0, 1] with stops + gtd <= 1 of the NEW LIMIT GTC rows (k =
        round(fraction * count) rows each, disjoint, chosen by a seeded permutation).
    seed : int >= 0; the mix draws from ``np.random.default_rng([seed, MIX_STREAM])``, so the
        plain flow's own stream is untouched.

    Stops: side kept, tif GTC; stop_price_ticks = touch estimate + side * geometric(P_STOP_DIST)
    ticks (a buy stop above the ask, a sell stop below the bid: each triggers when the last trade
    moves that way), at least 1. Half (P_STOP_LIMIT) are STOP_LIMIT with price_ticks = stop price
    + side * uniform{0..STOP_LIMIT_SLACK} (at least 1), the rest STOP with price_ticks 0.
    GTD: expire_ts_ns = ts_ns + 1 + geometric(1 / GTD_MEAN_NS) ns (> ts_ns: always valid).
    Icebergs (share `icebergs` of the rows, disjoint from the others; sum <= 1): display_qty =
    uniform{1..qty} (valid: <= qty), drawn after everything above, so a mix without icebergs is
    unchanged by this option.

    Every mixed row passes the engine's validation. A later CANCEL row of a converted order may
    find it gone (a stop triggered and filled, an order expired) and is then rejected
    UNKNOWN_ORDER by the engine, as a cancel racing a fill would be.

    Returns (new columns (unchanged columns shared, changed ones copied), counts
    {"stops", "stop_limits", "gtd", "icebergs"}).
    """
    fs, fg, fi = _validate_mix(stops, gtd, icebergs)
    sd = _check_int("seed", seed, 0, 2**63 - 1)
    counts = {"stops": 0, "stop_limits": 0, "gtd": 0, "icebergs": 0}
    if fs == 0.0 and fg == 0.0 and fi == 0.0:
        return cols, counts
    mid = np.asarray(mid, dtype=np.float64)
    n = len(cols["ts_ns"])
    if mid.shape != (n,):
        raise ValueError(f"mid must have one value per row ({n}), got shape {mid.shape}")
    rows = np.flatnonzero((cols["action"] == S.ACT_NEW) & (cols["tif"] == S.TIF_GTC)
                          & (cols["order_type"] == S.OT_LIMIT) & (cols["expire_ts_ns"] == 0))
    m = rows.size
    ks = min(m, int(math.floor(fs * m + 0.5)))
    kg = min(m - ks, int(math.floor(fg * m + 0.5)))
    rng = np.random.default_rng([sd, MIX_STREAM])
    perm = rng.permutation(m)
    si = np.sort(rows[perm[:ks]])
    gi = np.sort(rows[perm[ks:ks + kg]])
    out = dict(cols)
    for name in ("order_type", "price_ticks", "stop_price_ticks", "expire_ts_ns"):
        out[name] = cols[name].copy()
    side = cols["side"][si].astype(np.int64)
    touch = np.rint(mid[si]).astype(np.int64) + side
    stop_px = np.maximum(1, touch + side * rng.geometric(P_STOP_DIST, ks))
    is_lim = rng.random(ks) < P_STOP_LIMIT
    lim_px = np.maximum(1, stop_px + side * rng.integers(0, STOP_LIMIT_SLACK + 1, ks))
    out["order_type"][si] = np.where(is_lim, S.OT_STOP_LIMIT, S.OT_STOP).astype(np.uint8)
    out["price_ticks"][si] = np.where(is_lim, lim_px, 0)
    out["stop_price_ticks"][si] = stop_px
    out["expire_ts_ns"][gi] = cols["ts_ns"][gi] + 1 + rng.geometric(1.0 / GTD_MEAN_NS, kg)
    counts.update(stops=int(ks - is_lim.sum()), stop_limits=int(is_lim.sum()), gtd=int(kg))
    if fi > 0.0:
        ki = min(m - ks - kg, int(math.floor(fi * m + 0.5)))
        ii = np.sort(rows[perm[ks + kg:ks + kg + ki]])
        out["display_qty"] = cols["display_qty"].copy()
        out["display_qty"][ii] = rng.integers(1, cols["qty"][ii] + 1)
        counts["icebergs"] = int(ki)
    return out, counts


def _zipf_tables(n_accounts: int) -> tuple[np.ndarray, np.ndarray]:
    """CDF of Zipf(ZIPF_S) bounded to 1..n_accounts and its guide table."""
    w = np.arange(1, n_accounts + 1, dtype=np.float64) ** -ZIPF_S
    cdf = np.cumsum(w)
    cdf /= cdf[-1]
    cdf[-1] = 1.0
    g = max(64, min(4 * n_accounts, 1 << 16))
    guide = np.searchsorted(cdf, np.arange(g, dtype=np.float64) / g, side="right").astype(np.int64)
    return cdf, guide


def _chunks(n: int) -> Iterator[tuple[int, int]]:
    for i0 in range(0, n, GEN_CHUNK):
        yield i0, min(n, i0 + GEN_CHUNK)


def draw_setup(rng: np.random.Generator, n: int, n_books: int, start_mid: int) -> FlowSetup:
    """Draw the whole-flow inputs (first part of the random stream)."""
    key = rng.integers(0, 2**64 - 1, dtype=np.uint64, endpoint=True)
    ts = np.empty(n, dtype=np.int64)
    sym = np.zeros(n, dtype=np.uint32)
    mid = np.empty(n, dtype=np.float64)
    cur = np.full(n_books, float(start_mid))
    lo = cur.copy()
    hi = cur.copy()
    t = START_TS_NS
    for i0, i1 in _chunks(n):
        m = i1 - i0
        dt = rng.geometric(1.0 / MEAN_DT_NS, m)
        c = np.cumsum(dt)
        ts[i0:i1] = t + c
        t += int(c[-1])
        if n_books > 1:
            sym[i0:i1] = rng.integers(0, n_books, m, dtype=np.uint32)
        K.walk_mid_cpu(rng.normal(0.0, MID_SIGMA, m), sym[i0:i1], cur, mid[i0:i1], lo, hi)
    lad_lo = np.maximum(1, np.floor(lo).astype(np.int64) - LADDER_MARGIN)
    lad_hi = np.ceil(hi).astype(np.int64) + LADDER_MARGIN
    width = lad_hi - lad_lo + 1
    lad_off = np.concatenate(([0], np.cumsum(width)[:-1])).astype(np.int64)
    n_levels = int(width.sum())
    if n_levels > MAX_LEVELS:
        raise ValueError(f"the books' price ladders need {n_levels:,} levels (> {MAX_LEVELS:,}); "
                         "use fewer events or fewer books")
    counts = np.bincount(sym, minlength=n_books).astype(np.int64)
    rest_off = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
    return FlowSetup(ts, sym, mid, np.uint64(key), lad_off, lad_lo, lad_hi, rest_off, n_levels)


def draw_chunk(rng: np.random.Generator, m: int, cdf: np.ndarray, guide: np.ndarray) -> dict[str, np.ndarray]:
    """Draw the per-event inputs of one chunk of `m` events (see gen_flow_cpu for meanings).

    Each kind only draws what it uses: new-order values for NEW and CANCEL events (a cancel on an
    empty book becomes a NEW), IOC values for IOC events, the pick for CANCEL events.
    """
    u = rng.random(m)
    kind = np.where(u < P_NEW, K.GEN_NEW, np.where(u < P_NEW + P_CANCEL, K.GEN_CANCEL, K.GEN_IOC)).astype(np.uint8)
    side = (rng.integers(0, 2, m, dtype=np.int8) * 2 - 1).astype(np.int8)
    nw = np.flatnonzero(kind != K.GEN_IOC)
    io = np.flatnonzero(kind == K.GEN_IOC)
    ca = np.flatnonzero(kind == K.GEN_CANCEL)
    u2 = np.zeros(m)
    u2[nw] = rng.random(nw.size)
    mkt = (u2 < P_MARKETABLE).astype(np.uint8)
    mkt[io] = 0
    through = np.minimum((u2 * (3.0 / P_MARKETABLE)).astype(np.int64), 2)  # uniform 0..2 given mkt
    dist = np.zeros(m, dtype=np.int64)
    dist[nw] = np.minimum(rng.geometric(P_DIST, nw.size), DIST_MAX)
    qty = np.ones(m, dtype=np.int64)
    qty[nw] = rng.geometric(P_QTY, nw.size)
    ioc_g = np.ones(m, dtype=np.int64)
    ioc_g[io] = rng.geometric(P_IOC_PX, io.size)
    ioc_q = np.ones(m, dtype=np.int64)
    ioc_q[io] = rng.geometric(P_IOC_QTY, io.size)
    u_pick = np.zeros(m)
    u_pick[ca] = rng.random(ca.size)
    account = np.empty(m, dtype=np.uint32)
    K.inverse_cdf_cpu(rng.random(m), cdf, guide, account)
    return {"kind": kind, "side": side, "mkt": mkt, "through": through, "dist": dist, "qty": qty,
            "ioc_g": ioc_g, "ioc_q": ioc_q, "u_pick": u_pick, "account": account}


def draw_flow_inputs(n_events: int, n_books: int = 1, n_accounts: int = 5000, seed: int = 0,
                     start_mid: int = 100_000) -> tuple[FlowSetup, dict[str, np.ndarray]]:
    """All random inputs of a flow at once (setup + the chunks concatenated), for references."""
    n, nb, na, sd, sm = _validate(n_events, n_books, n_accounts, seed, start_mid)
    rng = np.random.default_rng(sd)
    setup = draw_setup(rng, n, nb, sm)
    cdf, guide = _zipf_tables(na)
    parts = [draw_chunk(rng, i1 - i0, cdf, guide) for i0, i1 in _chunks(n)]
    if not parts:
        parts = [draw_chunk(np.random.default_rng(0), 0, cdf, guide)]
    return setup, {f: np.concatenate([p[f] for p in parts]) for f in CHUNK_FIELDS}


def generate_flow_stats(n_events: int, n_books: int = 1, n_accounts: int = 5000, seed: int = 0,
                        start_mid: int = 100_000,
                        progress: Optional[Callable[[int, int], None]] = None,
                        stops: float = 0.0, gtd: float = 0.0, icebergs: float = 0.0) -> tuple[Columns, GenStats]:
    """Generate a flow and its statistics; see generate_flow.

    progress : called as ``progress(events_done, n_events)`` after each chunk.
    The statistics other than stops / stop_limits / gtd are those of the plain flow (the
    generator's book does not simulate stops or expiry).
    """
    t0 = time.perf_counter()
    n, nb, na, sd, sm = _validate(n_events, n_books, n_accounts, seed, start_mid)
    _validate_mix(stops, gtd, icebergs)
    rng = np.random.default_rng(sd)
    st = draw_setup(rng, n, nb, sm)
    cdf, guide = _zipf_tables(na)

    out = {name: np.zeros(n, dtype=dt) for name, dt, _req, _default in S.ORDER_COLUMNS
           if name not in ("ts_ns", "symbol")}
    out["ts_ns"] = st.ts_ns
    out["symbol"] = st.sym
    best_bid = np.zeros(nb, dtype=np.int64)
    best_ask = np.zeros(nb, dtype=np.int64)
    n_bid = np.zeros(nb, dtype=np.int64)
    n_ask = np.zeros(nb, dtype=np.int64)
    n_rest = np.zeros(nb, dtype=np.int64)
    head = np.full(st.n_levels, -1, dtype=np.int64)
    tail = np.full(st.n_levels, -1, dtype=np.int64)
    touched = np.zeros(st.n_levels, dtype=np.uint8)
    leaves = np.empty(n, dtype=np.int64)
    nxt = np.empty(n, dtype=np.int64)
    prv = np.empty(n, dtype=np.int64)
    rpos = np.empty(n, dtype=np.int64)
    rest = np.empty(n, dtype=np.int64)
    counters = np.zeros(K.N_COUNTERS, dtype=np.int64)
    for i0, i1 in _chunks(n):
        c = draw_chunk(rng, i1 - i0, cdf, guide)
        K.gen_flow_cpu(i0, c["kind"], c["side"], c["mkt"], c["through"], c["dist"], c["qty"],
                       c["ioc_g"], c["ioc_q"], c["u_pick"], c["account"],
                       st.sym, st.mid, st.key, st.lad_off, st.lad_lo, st.lad_hi, st.rest_off,
                       best_bid, best_ask, n_bid, n_ask, n_rest, head, tail, touched,
                       leaves, nxt, prv, rpos, rest,
                       out["order_id"], out["side"], out["price_ticks"], out["qty"], out["action"],
                       out["tif"], out["account"], counters)
        if progress is not None:
            progress(i1, n)
    cols = {name: out[name] for name, _dt, _req, _default in S.ORDER_COLUMNS}
    cols, mixed = mix_order_types(cols, st.mid, stops=stops, gtd=gtd, seed=sd, icebergs=icebergs)
    cnt = counters
    passive = int(cnt[K.C_PASSIVE])
    ioc_qty = int(cnt[K.C_IOC_QTY])
    stats = GenStats(
        n_events=n, n_books=nb,
        new=int(cnt[K.C_NEW]), cancel=int(cnt[K.C_CANCEL]), ioc=int(cnt[K.C_IOC]),
        cancel_as_new=int(cnt[K.C_CANCEL_AS_NEW]), marketable=int(cnt[K.C_MARKETABLE]),
        passive_dist_mean=float(cnt[K.C_PASSIVE_DIST]) / passive if passive else math.nan,
        trades=int(cnt[K.C_TRADES]), traded_qty=int(cnt[K.C_TRADED_QTY]),
        ioc_qty_mean=ioc_qty / int(cnt[K.C_IOC]) if cnt[K.C_IOC] else math.nan,
        ioc_fill_ratio=1.0 - int(cnt[K.C_IOC_EXPIRED]) / ioc_qty if ioc_qty else math.nan,
        resting_end=int(n_rest.sum()), levels_touched=int(touched.sum()),
        clipped=int(cnt[K.C_CLIPPED]), seconds=time.perf_counter() - t0, **mixed,
    )
    return cols, stats


def generate_flow(n_events: int, n_books: int = 1, n_accounts: int = 5000, seed: int = 0,
                  start_mid: int = 100_000, stops: float = 0.0, gtd: float = 0.0, icebergs: float = 0.0) -> Columns:
    """Synthetic order flow with the statistics of FORMATS.md's benchmark flow.

    Parameters
    ----------
    n_events : int >= 0, rows to generate.
    n_books : int >= 1, books (symbols 0 .. n_books-1), each with its own walk and book.
    n_accounts : int >= 1, accounts 1 .. n_accounts, Zipf(1.3).
    seed : int >= 0, seed of ``np.random.default_rng``; the flow is a function of all arguments.
    start_mid : int >= 1, every book's starting mid, ticks.
    stops, gtd : shares in [0, 1] (sum <= 1) of the NEW LIMIT GTC rows turned into STOP /
        STOP_LIMIT orders and good-till-date orders (mix_order_types); 0 and 0 give the plain
        flow, unchanged.
    icebergs : share in [0, 1] (stops + gtd + icebergs <= 1) of the NEW LIMIT GTC rows given a
        display_qty (iceberg orders; mix_order_types).

    Returns
    -------
    dict of every column of the order schema (schema.ORDER_COLUMNS, exact dtypes), length
    n_events: ts_ns int64 (non-decreasing ns), order_id uint64 (NEW: unique, spread over 64 bits;
    CANCEL: the id of an order resting at that moment), side int8, price_ticks int64, qty int64
    (CANCEL: the order's leaves), action uint8 (NEW / CANCEL), order_type uint8 (LIMIT), tif uint8
    (GTC / IOC), account uint32, symbol uint32, post_only uint8 (0); with the mix also
    order_type STOP / STOP_LIMIT, stop_price_ticks, expire_ts_ns and display_qty (else 0).
    """
    return generate_flow_stats(n_events, n_books, n_accounts, seed, start_mid, stops=stops, gtd=gtd,
                               icebergs=icebergs)[0]
