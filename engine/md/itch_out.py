"""The engine's order events published as a NASDAQ TotalView-ITCH 5.0 stream (``hpte match --itch``).

    out = events_to_itch(run.events)          # ItchOut: per-type columns + the id maps
    write_match_itch("day.itch", run)         # the same, written as a framed ITCH file

What is written (message letters of the ITCH 5.0 specification):

* ``S`` system event ``O`` (start of messages) first, ``S`` ``C`` (end of messages) last;
* ``R`` stock directory and ``H`` stock trading action (state ``T``) for every symbol the
  events name, locate codes 1, 2, ... in ascending symbol order. Stock names:
  ``stock_name(symbol)`` = ``SYM<n>`` for symbols below 100,000, else ``S`` + the symbol in
  base 36 (7 digits); ``symbol_from_stock_name`` inverts it.
* per input row, from the engine's events (REJECTED events change nothing and give nothing):
  - an order that rests after its immediate fills -> ``A`` (add order) with its remaining
    quantity at its limit price, after the ``E`` messages of the makers it hit;
  - a fill of a resting order -> ``E`` (order executed; match numbers 1, 2, ... in fill order);
    the aggressor of a trade gets no message (ITCH has none), so IOC / FOK / MARKET orders that
    never rest appear only as their makers' ``E`` messages;
  - CANCEL, STP cancels of a maker, end-of-session expiry -> ``D`` (order delete);
  - a priority-keeping REPLACE (same price, quantity down) -> ``X`` (order cancel) for the
    difference (nothing when the quantity does not change); an STP ``decrement`` of a maker ->
    ``X`` for the decremented quantity;
  - a REPLACE that loses priority -> ``U`` (order replace: old reference, new reference, new
    quantity and price) when the order just moves; when the move trades (or is stopped by STP)
    first -> ``D`` of the old reference, the makers' messages, then ``A`` of a new reference for
    what rests (if anything).

Conventions:

* Order reference numbers are assigned here, 1, 2, ... in order of the ``A`` / ``U`` messages
  (ITCH references are unique over a day, engine order ids only within a book while the order
  lives, and a ``U`` needs a new one). ``ItchOut.ref_symbol`` / ``ref_order_id`` map each
  reference back to the engine's book and order id.
* Prices: one engine tick is one unit of ITCH Price(4), i.e. ``price_ticks * PRICE_SCALE``
  with ``PRICE_SCALE = 1``: 1 tick = $0.0001. Prices and quantities must fit ITCH's u32 fields.
* Timestamps: ``ts_ns`` modulo one day (ns since midnight; ITCH carries no date). A run that
  crosses midnight therefore writes timestamps that wrap.

Parsing the stream back and rebuilding the book (``hpte.engine.md.itch_book``) gives the engine's
own final book (``Engine.book_l3()``): same orders, prices, quantities and FIFO order per level.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from hpte.engine import schema as S
from hpte.engine.md.itch import ItchError, layout, write_itch

__all__ = ["DAY_NS", "PRICE_SCALE", "ItchOut", "events_to_itch", "stock_name", "symbol_from_stock_name",
           "write_match_itch"]

DAY_NS = 86_400 * 10**9
PRICE_SCALE = 1          # ITCH Price(4) units per engine tick (1 tick = $0.0001)
U32_MAX = 2**32 - 1
_B36 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def stock_name(symbol: int) -> str:
    """The 8-character ITCH stock name of an engine symbol (uint32): ``SYM<n>`` below 100,000,
    else ``S`` + 7 base-36 digits (never starts ``SY``, so the two forms cannot collide)."""
    s = int(symbol)
    if not 0 <= s <= U32_MAX:
        raise ValueError(f"symbol {s} is not a uint32")
    if s < 100_000:
        return f"SYM{s}"
    digits = []
    for _ in range(7):
        s, r = divmod(s, 36)
        digits.append(_B36[r])
    return "S" + "".join(reversed(digits))


def symbol_from_stock_name(name: str | bytes) -> int | None:
    """The engine symbol of a name written by ``stock_name``; None for any other name."""
    n = (name.decode("ascii", "replace") if isinstance(name, bytes) else name).rstrip(" \0")
    if n.startswith("SYM") and 3 < len(n) <= 8 and n[3:].isdigit() and (n[3] != "0" or len(n) == 4):
        return int(n[3:])
    if len(n) == 8 and n[0] == "S" and n[1] in "01" and all(c in _B36 for c in n[1:]):
        v = int(n[1:], 36)
        return v if 100_000 <= v <= U32_MAX else None
    return None


@dataclass
class ItchOut:
    """An ITCH stream built from engine events.

    Attributes
    ----------
    tables : dict letter -> dict column -> array (``encode_itch`` input; every table has ``seq``).
    symbols : uint32[k], the engine symbol of locate code ``i + 1`` is ``symbols[i]``.
    ref_symbol, ref_order_id : uint32[r], uint64[r]: reference number ``i + 1`` is the engine
        order ``ref_order_id[i]`` of book ``ref_symbol[i]``.
    """

    tables: dict
    symbols: np.ndarray
    ref_symbol: np.ndarray
    ref_order_id: np.ndarray

    @property
    def counts(self) -> dict[str, int]:
        """Messages per type letter (types present only)."""
        return {k: len(v["seq"]) for k, v in self.tables.items() if len(v["seq"])}

    @property
    def messages(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> dict:
        return {"messages": self.messages, "counts": self.counts, "stocks": int(self.symbols.size),
                "order_references": int(self.ref_symbol.size)}


# ---------------------------------------------------------------------------------------------
def _col(events, name: str, dt) -> np.ndarray:
    return np.asarray(events[name]).astype(dt, copy=False)


def _ffill_before(flag: np.ndarray, start: np.ndarray) -> np.ndarray:
    """For each position k of a segmented array: the last index j < k of the same segment with
    flag[j], or -1. ``start[k]`` is the index where k's segment begins."""
    pos = np.where(flag, np.arange(flag.size), -1)
    acc = np.maximum.accumulate(pos) if flag.size else pos
    before = np.concatenate([[-1], acc[:-1]]) if flag.size else acc
    before[before < start] = -1
    return before


def _check_u32(what: str, a: np.ndarray, sym: np.ndarray, oid: np.ndarray, lo: int = 0) -> None:
    bad = np.flatnonzero((a < lo) | (a > U32_MAX))
    if bad.size:
        k = int(bad[0])
        raise ItchError(f"ITCH out: {what} {int(a[k])} of order {int(oid[k])} (symbol {int(sym[k])}) does not fit "
                        f"ITCH's u32 field ({lo}..{U32_MAX}); 1 tick = $0.0001, so prices above $429,496.7295 "
                        f"or quantities of 2**32 lots and more cannot be written")


def events_to_itch(events: Mapping, n_fills: int | None = None) -> ItchOut:
    """Build the ITCH message tables of one run's order events.

    Parameters
    ----------
    events : the run's order events (``Result.events`` / ``MatchRun.events``, or a dict of
        columns of schema.EVENT_COLUMNS), every event since the engine started, in output order
        (``end_session`` events included where they were emitted).
    n_fills : the run's fill count, checked against the makers' fill events when given.

    Returns
    -------
    ItchOut. Raises ItchError when a value does not fit ITCH or an event names an order the
    events never showed resting (an engine that held orders before these events).
    """
    seq = _col(events, "seq", np.int64)
    ts_all = _col(events, "ts_ns", np.int64)
    sym_all = _col(events, "symbol", np.uint32)
    code_all = _col(events, "event", np.int64)
    srt = np.sort(sym_all)
    symbols = srt[np.concatenate([[True], srt[1:] != srt[:-1]])] if srt.size else srt
    if symbols.size > 65_535:
        raise ItchError(f"ITCH out: {symbols.size} symbols, but ITCH has at most 65,535 locate codes")
    trig = np.flatnonzero(code_all == S.EV_TRIGGERED)
    if trig.size:
        raise ItchError(f"ITCH out: a stop order was triggered (event at seq {int(_col(events, 'seq', np.int64)[trig[0]])}); "
                        "ITCH out does not publish STOP / STOP_LIMIT orders yet")
    keep = np.flatnonzero(code_all != S.EV_REJECTED)
    seq = seq[keep]
    ts = ts_all[keep]
    sym = sym_all[keep]
    oid = _col(events, "order_id", np.uint64)[keep]
    side = _col(events, "side", np.int64)[keep]
    code = code_all[keep]
    reason = _col(events, "reason", np.int64)[keep]
    px = _col(events, "price_ticks", np.int64)[keep]
    qty = _col(events, "qty", np.int64)[keep]
    leaves = _col(events, "leaves_qty", np.int64)[keep]
    m = seq.size
    idx = np.arange(m)

    # --- groups: the events of one input row (end-of-session expiries form their own groups) ----
    eos = (code == S.EV_EXPIRED) & (reason == S.R_END_OF_SESSION)
    brk = np.ones(m, bool)
    if m:
        brk[1:] = (seq[1:] != seq[:-1]) | (eos[1:] != eos[:-1])
    grp = np.cumsum(brk) - 1
    gfirst = np.flatnonzero(brk)
    glast = np.concatenate([gfirst[1:] - 1, [m - 1]]) if m else gfirst
    g_eos = eos[gfirst]
    fc, fr = code[gfirst], reason[gfirst]
    g_act = np.full(gfirst.size, -1, np.int64)
    g_act[fc == S.EV_ACCEPTED] = S.ACT_NEW
    g_act[(fc == S.EV_CANCELLED) & (fr == S.R_NONE)] = S.ACT_CANCEL
    g_act[(fc == S.EV_REPLACED) & (fr == S.R_NONE)] = S.ACT_REPLACE
    odd = np.flatnonzero((g_act < 0) & ~g_eos)
    if odd.size:
        j = int(gfirst[odd[0]])
        raise ItchError(f"ITCH out: events of input row seq {int(seq[j])} start with event {int(code[j])} "
                        f"(reason {int(reason[j])}); expected ACCEPTED, CANCELLED or REPLACED")
    own = ~eos & (sym == sym[gfirst][grp]) & (oid == oid[gfirst][grp])
    act = np.where(own, g_act[grp], -1)        # the row's action, for the row's own order's events
    own_pos = np.where(own, idx, -1)
    glast_own = np.maximum.reduceat(own_pos, gfirst) if m else own_pos

    # --- per order (book, id), lifetimes in event order ---------------------------------------
    # stable sort by (symbol, order id): by id, then a radix sort by the symbol's locate rank
    locate = np.searchsorted(symbols, sym).astype(np.int64) + 1
    perm = np.argsort(oid, kind="stable")
    perm = perm[np.argsort(locate[perm].astype(np.uint16), kind="stable")]
    ks, ko, kc = sym[perm], oid[perm], code[perm]
    newkey = np.ones(m, bool)
    if m:
        newkey[1:] = (ks[1:] != ks[:-1]) | (ko[1:] != ko[:-1])
    life_start = newkey | (kc == S.EV_ACCEPTED)
    lstart = np.maximum.accumulate(np.where(life_start, np.arange(m), 0)) if m else idx
    kleaves = leaves[perm]
    prev_leaves_k = np.where(life_start, 0, np.concatenate([[0], kleaves[:-1]]) if m else kleaves)
    sets_limit = own[perm] & ((kc == S.EV_ACCEPTED) | ((kc == S.EV_REPLACED) & (reason[perm] == S.R_NONE)))
    lim_at = _ffill_before(sets_limit, lstart)
    lim_before_k = np.where(lim_at >= 0, px[perm][np.maximum(lim_at, 0)], -1)
    prev_leaves = np.empty(m, np.int64)
    prev_leaves[perm] = prev_leaves_k
    lim_before = np.empty(m, np.int64)
    lim_before[perm] = lim_before_k

    # --- what each row does to the book -----------------------------------------------------
    is_repl = g_act == S.ACT_REPLACE
    j0 = gfirst
    in_place = is_repl & (px[j0] == lim_before[j0]) & (qty[j0] <= prev_leaves[j0])
    rests = ((g_act == S.ACT_NEW) | (is_repl & ~in_place)) & (glast_own >= 0)
    rests &= leaves[np.maximum(glast_own, 0)] > 0
    quiet = glast == gfirst
    as_u = is_repl & ~in_place & rests & quiet           # the order just moves: one U
    moved_d = is_repl & ~in_place & ~as_u               # D of the old reference first
    rest_groups = np.flatnonzero(rests)
    new_ref = np.zeros(gfirst.size, np.int64)
    new_ref[rest_groups] = np.arange(1, rest_groups.size + 1)

    # current reference of each event's order (strictly before the event), from the anchors
    anchor = np.zeros(m, bool)
    anchor[glast_own[rest_groups]] = True
    ref_at = np.zeros(m, np.int64)
    ref_at[glast_own[rest_groups]] = new_ref[rest_groups]
    a_k = _ffill_before(anchor[perm], lstart)
    cur_ref_k = np.where(a_k >= 0, ref_at[perm][np.maximum(a_k, 0)], 0)
    cur_ref = np.empty(m, np.int64)
    cur_ref[perm] = cur_ref_k

    maker = ~own
    is_fill = (code == S.EV_FILLED) | (code == S.EV_PARTIALLY_FILLED)
    e_rows = np.flatnonzero(maker & is_fill)
    d_mask = (maker & ((code == S.EV_CANCELLED) | (code == S.EV_EXPIRED))) | ((act == S.ACT_CANCEL) & (code == S.EV_CANCELLED))
    d_mask[j0[moved_d]] = True
    d_rows = np.flatnonzero(d_mask)
    x_maker = np.flatnonzero(maker & (code == S.EV_REPLACED))
    x_inpl_g = np.flatnonzero(in_place & (prev_leaves[j0] > qty[j0]))
    x_rows = np.concatenate([x_maker, j0[x_inpl_g]])
    x_shares = np.concatenate([qty[x_maker], prev_leaves[j0[x_inpl_g]] - qty[j0[x_inpl_g]]])
    u_g = np.flatnonzero(as_u)
    a_g = np.flatnonzero(rests & ~as_u)
    if n_fills is not None and e_rows.size != n_fills:
        raise ItchError(f"ITCH out: {e_rows.size} maker fill events but {n_fills} fills; events and fills disagree")
    bad = [rows for rows in (e_rows, d_rows, x_rows, j0[u_g]) if rows.size and (cur_ref[rows] == 0).any()]
    if bad:
        j = int(bad[0][np.flatnonzero(cur_ref[bad[0]] == 0)[0]])
        raise ItchError(f"ITCH out: order {int(oid[j])} of symbol {int(sym[j])} (event at seq {int(seq[j])}) "
                        f"never rested in these events; ITCH out needs every event since the engine started")

    # --- positions in the stream: event index * 4 (+3 for a rest after the row's events) --------
    a_anchor = glast[a_g]
    u_anchor = glast[u_g]
    out_pos = np.concatenate([e_rows * 4, d_rows * 4, x_rows * 4, a_anchor * 4 + 3, u_anchor * 4 + 3])
    order = np.argsort(out_pos, kind="stable")
    rank = np.empty(out_pos.size, np.int64)
    rank[order] = np.arange(out_pos.size)
    nsym = symbols.size
    base = 1 + 2 * nsym
    bounds = np.cumsum([0, e_rows.size, d_rows.size, x_rows.size, a_g.size, u_g.size])
    mseq = [base + rank[bounds[k]:bounds[k + 1]] for k in range(5)]
    t_first = int(ts[0] if m else (ts_all[0] if ts_all.size else 0)) % DAY_NS
    t_last = int(ts[-1] if m else (ts_all[-1] if ts_all.size else 0)) % DAY_NS

    def hdr(rows, s):
        return {"seq": s, "stock_locate": locate[rows].astype(np.uint16),
                "tracking_number": np.zeros(rows.size, np.uint16), "timestamp": ts[rows] % DAY_NS}

    names = np.array([stock_name(s).encode() for s in symbols.tolist()], dtype="S8")
    tables: dict[str, dict[str, np.ndarray]] = {}
    tables["S"] = {"seq": np.array([0, base + out_pos.size], np.int64), "stock_locate": np.zeros(2, np.uint16),
                   "tracking_number": np.zeros(2, np.uint16), "timestamp": np.array([t_first, t_last], np.int64),
                   "event_code": np.array([b"O", b"C"], "S1")}
    loc_all = np.arange(1, nsym + 1, dtype=np.uint16)

    def full(v, dt):
        return np.full(nsym, v, dtype=dt)

    tables["R"] = {"seq": np.arange(1, nsym + 1, dtype=np.int64), "stock_locate": loc_all,
                   "tracking_number": full(0, np.uint16), "timestamp": full(t_first, np.int64), "stock": names,
                   "market_category": full(b"Q", "S1"), "financial_status_indicator": full(b"N", "S1"),
                   "round_lot_size": full(1, np.uint32), "round_lots_only": full(b"N", "S1"),
                   "issue_classification": full(b"C", "S1"), "issue_sub_type": full(b"Z", "S2"),
                   "authenticity": full(b"P", "S1"), "short_sale_threshold_indicator": full(b"N", "S1"),
                   "ipo_flag": full(b"N", "S1"), "luld_reference_price_tier": full(b" ", "S1"),
                   "etp_flag": full(b"N", "S1"), "etp_leverage_factor": full(0, np.uint32),
                   "inverse_indicator": full(b"N", "S1")}
    tables["H"] = {"seq": np.arange(nsym + 1, 2 * nsym + 1, dtype=np.int64), "stock_locate": loc_all,
                   "tracking_number": full(0, np.uint16), "timestamp": full(t_first, np.int64), "stock": names,
                   "trading_state": full(b"T", "S1"), "reserved": full(b" ", "S1"), "reason": full(b"", "S4")}

    _check_u32("executed quantity", qty[e_rows], sym[e_rows], oid[e_rows])
    tables["E"] = {**hdr(e_rows, mseq[0]), "order_reference_number": cur_ref[e_rows].astype(np.uint64),
                   "executed_shares": qty[e_rows].astype(np.uint32),
                   "match_number": np.arange(1, e_rows.size + 1, dtype=np.uint64)}
    tables["D"] = {**hdr(d_rows, mseq[1]), "order_reference_number": cur_ref[d_rows].astype(np.uint64)}
    _check_u32("cancelled quantity", x_shares, sym[x_rows], oid[x_rows])
    tables["X"] = {**hdr(x_rows, mseq[2]), "order_reference_number": cur_ref[x_rows].astype(np.uint64),
                   "cancelled_shares": x_shares.astype(np.uint32)}
    a_lo = glast_own[a_g]               # the row's last own event: leaves after its fills
    a_px = px[gfirst[a_g]] * PRICE_SCALE  # ACCEPTED / REPLACED price = the limit price
    _check_u32("price", a_px, sym[a_lo], oid[a_lo], lo=1)
    _check_u32("quantity", leaves[a_lo], sym[a_lo], oid[a_lo], lo=1)
    tables["A"] = {**hdr(a_anchor, mseq[3]), "order_reference_number": new_ref[a_g].astype(np.uint64),
                   "buy_sell_indicator": np.where(side[a_lo] == S.BUY, b"B", b"S").astype("S1"),
                   "shares": leaves[a_lo].astype(np.uint32), "stock": names[locate[a_lo] - 1],
                   "price": a_px}
    u_j = j0[u_g]
    u_px = px[u_j] * PRICE_SCALE
    _check_u32("price", u_px, sym[u_j], oid[u_j], lo=1)
    _check_u32("quantity", leaves[u_j], sym[u_j], oid[u_j], lo=1)
    tables["U"] = {**hdr(u_anchor, mseq[4]), "original_order_reference_number": cur_ref[u_j].astype(np.uint64),
                   "new_order_reference_number": new_ref[u_g].astype(np.uint64),
                   "shares": leaves[u_j].astype(np.uint32), "price": u_px}
    for k, t in tables.items():  # every field present, in the layout's order
        lay = layout(k)
        missing = [f.name for f in lay.fields if f.name not in t]
        assert not missing, (k, missing)
    ref_rows = glast_own[rest_groups]
    return ItchOut(tables=tables, symbols=symbols, ref_symbol=sym[ref_rows].astype(np.uint32),
                   ref_order_id=oid[ref_rows].astype(np.uint64))


def write_match_itch(path: str | Path, run) -> ItchOut:
    """``hpte match --itch PATH``: write a matching run (``pipeline.MatchRun``) as an ITCH 5.0
    file (``.gz``: gzip-compressed). Raises ItchError (a ValueError) when it cannot."""
    out = events_to_itch(run.events, n_fills=run.fills.n_rows if hasattr(run.fills, "n_rows") else None)
    write_itch(path, out.tables)
    return out
