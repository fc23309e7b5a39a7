"""Book read-out and end-of-session kernels (CPU).

Books are visited in the order given by ``order`` (the engine passes ascending symbol); per
book, bids from best to worst level, then asks from best to worst, FIFO within a level.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .enums import BUY, EV_EXPIRED, R_END_OF_SESSION, SELL, TIF_DAY

from .book import (
    F_ASK, F_BASE, F_BID, F_LOFF, F_NLEV, F_POFF, F_SYM, F_TMASK, F_TOFF, emit_delta,
    emit_event, id_delete, remove_resting, scan_down, scan_up, slot_free,
)


@njit(cache=True)
def _next_level(S, b, g, is_ask):
    loff = S.bk[b, F_LOFF]
    if is_ask:
        return scan_up(S.bm0, S.bm1, g + 1, loff + S.bk[b, F_NLEV])
    return scan_down(S.bm0, S.bm1, g - 1, loff)


@njit(cache=True)
def _first_level(S, b, is_ask):
    best = S.bk[b, F_ASK] if is_ask else S.bk[b, F_BID]
    return -1 if best < 0 else S.bk[b, F_LOFF] + best


@njit(cache=True)
def levels_cpu(S, order, depth, sym, side, level, px, qty, cnt):
    """L2 levels (at most `depth` per side, -1 = all). Output arrays sized by the caller
    (total occupied levels is enough). Returns rows written."""
    k = 0
    for j in range(order.shape[0]):
        b = order[j]
        for is_ask in (False, True):
            g = _first_level(S, b, is_ask)
            n = 0
            while g >= 0 and (depth < 0 or n < depth):
                sym[k] = S.bk[b, F_SYM]
                side[k] = SELL if is_ask else BUY
                level[k] = n
                px[k] = S.bk[b, F_BASE] + g - S.bk[b, F_LOFF]
                qty[k] = S.lv_qty[g]
                cnt[k] = S.lv_cnt[g]
                k += 1
                n += 1
                g = _next_level(S, b, g, is_ask)
    return k


@njit(cache=True)
def l3_cpu(S, order, sym, side, px, oid, acct, qty, tif):
    """Every resting order (L3), in priority order. Returns rows written."""
    k = 0
    for j in range(order.shape[0]):
        b = order[j]
        poff = S.bk[b, F_POFF]
        for is_ask in (False, True):
            g = _first_level(S, b, is_ask)
            while g >= 0:
                s = S.lv_head[g]
                while s >= 0:
                    sym[k] = S.bk[b, F_SYM]
                    side[k] = SELL if is_ask else BUY
                    px[k] = S.o_px[poff + s]
                    oid[k] = S.o_id[poff + s]
                    acct[k] = S.o_acct[poff + s]
                    qty[k] = S.o_qty[poff + s]
                    tif[k] = (S.o_flags[poff + s] >> 1) & 3
                    k += 1
                    s = S.o_next[poff + s]
                g = _next_level(S, b, g, is_ask)
    return k


@njit(cache=True)
def expire_day_cpu(S, O, order, seq, ts):
    """End of session: expire every resting DAY order (README). Outputs to region 0, whose
    capacity must hold one event and one delta per resting order."""
    for j in range(order.shape[0]):
        b = order[j]
        poff = S.bk[b, F_POFF]
        sym = S.bk[b, F_SYM]
        for is_ask in (False, True):
            side = SELL if is_ask else BUY
            g = _first_level(S, b, is_ask)
            while g >= 0:
                lp = S.bk[b, F_BASE] + g - S.bk[b, F_LOFF]
                s = S.lv_head[g]
                changed = False
                while s >= 0:
                    nxt = S.o_next[poff + s]
                    if ((S.o_flags[poff + s] >> 1) & 3) == TIF_DAY:
                        q = S.o_qty[poff + s]
                        oid = S.o_id[poff + s]
                        emit_event(O, 0, seq, ts, sym, oid, S.o_acct[poff + s], side,
                                   EV_EXPIRED, R_END_OF_SESSION, lp, q, 0)
                        remove_resting(S, b, s)
                        id_delete(S.tab, S.bk[b, F_TOFF], S.bk[b, F_TMASK], S.o_id, poff, oid)
                        slot_free(S, b, poff, s)
                        changed = True
                    s = nxt
                if changed:
                    emit_delta(O, 0, seq, ts, sym, side, lp, S.lv_qty[g], S.lv_cnt[g])
                # the level may be gone now; continue from its position
                g = _next_level(S, b, g, is_ask)
