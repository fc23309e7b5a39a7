"""Circuit-breaker state of a symbol and its per-row steps, called by the risk version of the
matching step (kernels/book.py ``process_row_risk``). All transitions are driven by the orders'
own timestamps: a symbol's breaker moves when one of its own rows arrives (README "Circuit
breakers"), so a replay of the same input gives the same outputs on every batch size.

State ``brk`` : int64[S, NBF], one row per risk symbol row (engine/risk/state.py), ``K_*`` fields.
Parameters ``bp`` : int64[NBP], ``B_*`` (engine/risk_config.BREAKER_KEYS order; UNSET = not applied).

- Price band: around the band reference (the symbol's last trade price, re-read at the symbol's
  first row of every ``band_window_ns``, or at every row when no window is set; before any trade
  the static ``reference_price_ticks``): lo = ref - floor(ref x bps / 10,000),
  hi = ref + floor(ref x bps / 10,000). No trade prints outside [lo, hi].
- Limit state: the book's best bid at or above hi, or best ask at or below lo, after a row;
  left when neither holds. A symbol still in limit state at a row ``limit_state_ns`` or more
  after entering it is paused (cause LIMIT_STATE).
- Velocity: a trade more than ``velocity_ticks`` away from the anchor, the first trade price of
  the current ``velocity_window_ns`` window (a trade later than the window re-anchors), pauses
  the symbol instead of printing (cause VELOCITY).
- Pause: ``pause_ns`` (0 when not set) from the row that paused it; then the call period of the
  reopening auction, ``auction_ns`` (0 when not set); the symbol's first row at or after its end
  stops the kernel with ST_NEED_AUCTION, the engine uncrosses the book (kernels/risk/auction.py,
  kernels/snapshot.py ``auction_apply_cpu``) and resumes at that row.
- Market-wide halt: state HALTED until the engine's ``resume`` moves it to the auction.

Every transition writes one event (order_id 0, account 0, side 0, event EV_*, reason the cause,
price_ticks the band price / reference / auction price, qty the auction volume) and one delta
row with side 0 whose ``orders`` column is the new TS_* state and ``price_ticks`` the same price.
"""
from __future__ import annotations

import numpy as np
from numba.extending import register_jitable

from hpte.kernels.emit import emit_delta, emit_event
from hpte.kernels.enums import (
    EV_AUCTION, EV_LIMIT_STATE, EV_PAUSED, EV_RESUMED, R_LIMIT_STATE, R_PRICE_BAND, TS_AUCTION, TS_CONTINUOUS,
    TS_LIMIT, TS_PAUSED,
)

# --- brk[s, K_*] ---------------------------------------------------------------------------------
K_STATE = 0       # TS_*
K_SINCE = 1       # ts the current state began
K_UNTIL = 2       # PAUSED: end of the pause; AUCTION: end of the call period
K_REF = 3         # band reference price (0: none yet)
K_REF_TS = 4      # ts the reference was last read (INT64_MIN: never)
K_LO = 5          # band, inclusive (0 and INT64_MAX: no band)
K_HI = 6
K_VA_PX = 7       # velocity anchor price
K_VA_TS = 8       # velocity anchor time (INT64_MIN: none)
K_CAUSE = 9       # reason of the current pause / halt
NBF = 12

# --- bp[B_*] (engine/risk_config.BREAKER_KEYS) -----------------------------------------------------
B_BAND_BPS = 0
B_BAND_WINDOW_NS = 1
B_LIMIT_STATE_NS = 2
B_PAUSE_NS = 3
B_VELOCITY_TICKS = 4
B_VELOCITY_WINDOW_NS = 5
B_AUCTION_NS = 6
NBP = 7

UNSET = np.iinfo(np.int64).max
INT64_MIN = np.iinfo(np.int64).min
BIG = 1 << 62

# the risk symbol row fields the breakers read (kernels/risk/checks.py S_*; repeated to keep this module
# free of the risk kernels' imports)
_S_LAST = 1
_S_BID = 2
_S_ASK = 3
_S_STATIC = 4


@register_jitable
def band_of(ref, bps):
    """(lo, hi) of the band of `bps` basis points around `ref` ticks (both > 0); lo >= 1."""
    if ref // 10_000 > BIG // bps:
        d = BIG
    else:
        d = (ref // 10_000) * bps + ((ref % 10_000) * bps) // 10_000
    lo = ref - d
    hi = ref + d
    if lo < 1:
        lo = 1
    if hi > BIG or hi < ref:
        hi = BIG
    return lo, hi


@register_jitable
def brk_emit(O, r, seq, ts, sym, code, cause, px, q, state):
    """A breaker transition: one event row and one status delta row."""
    emit_event(O, r, seq, ts, sym, 0, 0, 0, code, cause, px, q, 0)
    emit_delta(O, r, seq, ts, sym, 0, px, 0, state)


@register_jitable
def brk_pause(R, O, r, seq, ts, s, sym, cause):
    """Pause symbol row s now (from continuous or limit state)."""
    brk = R.brk
    p = R.bp[B_PAUSE_NS]
    brk[s, K_STATE] = TS_PAUSED
    brk[s, K_SINCE] = ts
    brk[s, K_UNTIL] = ts + (0 if p == UNSET else p)
    brk[s, K_CAUSE] = cause
    brk_emit(O, r, seq, ts, sym, EV_PAUSED, cause, brk[s, K_REF], 0, TS_PAUSED)


@register_jitable(inline="always")
def brk_begin_row(R, O, r, seq, ts, s, sym):
    """Timed transitions of symbol row s at a row of time ts, before the row is applied; rolls the
    band reference. Returns True when the reopening auction is due (nothing of the row is applied
    yet: the engine runs the auction and calls again)."""
    brk = R.brk
    bp = R.bp
    st = brk[s, K_STATE]
    if st == TS_LIMIT and bp[B_LIMIT_STATE_NS] != UNSET and ts - brk[s, K_SINCE] >= bp[B_LIMIT_STATE_NS]:
        brk_pause(R, O, r, seq, ts, s, sym, R_LIMIT_STATE)
        st = TS_PAUSED
    if st == TS_PAUSED and ts >= brk[s, K_UNTIL]:
        a = bp[B_AUCTION_NS]
        brk[s, K_STATE] = TS_AUCTION
        brk[s, K_SINCE] = ts
        brk[s, K_UNTIL] = ts + (0 if a == UNSET else a)
        brk_emit(O, r, seq, ts, sym, EV_AUCTION, brk[s, K_CAUSE], brk[s, K_REF], 0, TS_AUCTION)
        st = TS_AUCTION
    if st == TS_AUCTION and ts >= brk[s, K_UNTIL]:
        return True
    if st <= TS_LIMIT and bp[B_BAND_BPS] != UNSET:
        w = bp[B_BAND_WINDOW_NS]
        if brk[s, K_REF_TS] == INT64_MIN or w == UNSET or ts - brk[s, K_REF_TS] >= w:
            ref = R.sym[s, _S_LAST]
            if ref <= 0:
                ref = R.sym[s, _S_STATIC]
            if ref > 0:
                lo, hi = band_of(ref, bp[B_BAND_BPS])
                brk[s, K_REF] = ref
                brk[s, K_REF_TS] = ts
                brk[s, K_LO] = lo
                brk[s, K_HI] = hi
    return False


@register_jitable(inline="always")
def brk_end_row(R, O, r, seq, ts, s, sym, bid_px, ask_px):
    """After a row: record the symbol's best bid / ask (0: none) for the risk reference price and
    enter or leave the limit state."""
    R.sym[s, _S_BID] = bid_px
    R.sym[s, _S_ASK] = ask_px
    brk = R.brk
    st = brk[s, K_STATE]
    if st > TS_LIMIT or R.bp[B_BAND_BPS] == UNSET or brk[s, K_REF] == 0:
        return
    hi = brk[s, K_HI]
    lo = brk[s, K_LO]
    up = bid_px > 0 and bid_px >= hi
    down = ask_px > 0 and ask_px <= lo
    if st == TS_CONTINUOUS and (up or down):
        brk[s, K_STATE] = TS_LIMIT
        brk[s, K_SINCE] = ts
        brk_emit(O, r, seq, ts, sym, EV_LIMIT_STATE, R_PRICE_BAND, hi if up else lo, 0, TS_LIMIT)
    elif st == TS_LIMIT and not (up or down):
        brk[s, K_STATE] = TS_CONTINUOUS
        brk[s, K_SINCE] = ts
        brk_emit(O, r, seq, ts, sym, EV_RESUMED, R_PRICE_BAND, brk[s, K_REF], 0, TS_CONTINUOUS)


@register_jitable
def band_limits(R, s):
    """(lo, hi) trade prices allowed now for symbol row s (0, INT64_MAX when no band)."""
    if R.bp[B_BAND_BPS] == UNSET or R.brk[s, K_REF] == 0:
        return 0, UNSET
    return R.brk[s, K_LO], R.brk[s, K_HI]


@register_jitable
def velocity_breach(R, s, ts, px):
    """Would a trade at px, time ts, move more than velocity_ticks from the anchor?"""
    k = R.bp[B_VELOCITY_TICKS]
    w = R.bp[B_VELOCITY_WINDOW_NS]
    if k == UNSET or w == UNSET:
        return False
    a = R.brk[s, K_VA_TS]
    if a == INT64_MIN or ts - a > w:
        return False
    d = px - R.brk[s, K_VA_PX]
    return d > k or -d > k


@register_jitable
def velocity_trade(R, s, ts, px):
    """A trade at px, time ts: (re-)anchor when there is no anchor or it is older than the window."""
    a = R.brk[s, K_VA_TS]
    w = R.bp[B_VELOCITY_WINDOW_NS]
    if a == INT64_MIN or (w != UNSET and ts - a > w):
        R.brk[s, K_VA_PX] = px
        R.brk[s, K_VA_TS] = ts
