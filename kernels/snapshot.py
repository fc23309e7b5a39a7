"""Book read-out and whole-book kernels between rows (CPU): levels, L3, end of session, kill
switches, the execution of a reopening auction.

Books are visited in the order given by ``order`` (the engine passes ascending symbol); per
book, bids from best to worst level, then asks from best to worst, FIFO within a level.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .book import (
    F_ASK, F_ASKQTY, F_BASE, F_BID, F_BIDQTY, F_LOFF, F_NLEV, F_PHEAD, F_POFF, F_SHEAD, F_SYM, F_TMASK,
    F_TOFF, FL_PARKED, FL_SELL, stop_unlink, add_resting, emit_delta, emit_event, emit_fill, id_delete, id_find,
    ice_set_reserve, park_unlink, remove_resting, rsv_at, scan_down, scan_up, slot_free,
)
from hpte.kernels.risk.breaker import (
    B_BAND_BPS, K_CAUSE, K_HI, K_LO, K_REF, K_REF_TS, K_SINCE, K_STATE, K_VA_PX, K_VA_TS, UNSET,
    band_of, brk_emit,
)
from .enums import (
    BUY, EV_EXPIRED, EV_FILLED, EV_PARTIALLY_FILLED, EV_RESUMED, R_AUCTION, R_END_OF_SESSION, SELL,
    TIF_DAY, TS_CONTINUOUS,
)
from hpte.kernels.risk.checks import S_LAST, risk_party_book


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
def _l3_row(S, b, ms, k, sym, side, px, oid, acct, qty, tif):
    """Row k of the L3 columns from pool slot ms of book b."""
    sym[k] = S.bk[b, F_SYM]
    side[k] = SELL if (S.o_flags[ms] & FL_SELL) != 0 else BUY
    px[k] = S.o_px[ms]
    oid[k] = S.o_id[ms]
    acct[k] = S.o_acct[ms]
    qty[k] = S.o_qty[ms]
    tif[k] = (S.o_flags[ms] >> 1) & 3


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
                    _l3_row(S, b, poff + s, k, sym, side, px, oid, acct, qty, tif)
                    k += 1
                    s = S.o_next[poff + s]
                g = _next_level(S, b, g, is_ask)
    return k


@njit(cache=True)
def remove_orders_cpu(S, O, order, seq, ts, mode, acct, code, reason):
    """Take resting orders out of the books: mode 0 every DAY order and every good-till-date
    order whose expiry is at or before ts (end of session), mode 1
    every order of account `acct`, mode 2 every order (kill switches); per book the book's
    orders, then the parked ones, then the untriggered stops (DAY stops at end of session). One event (`code`,
    `reason`) per order and one delta per level touched, to region 0, whose capacity must hold
    one event and one delta per resting order. Returns the orders removed."""
    k = 0
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
                    if mode == 2 or (mode == 1 and S.o_acct[poff + s] == acct) or \
                            (mode == 0 and (((S.o_flags[poff + s] >> 1) & 3) == TIF_DAY
                                            or 0 < S.o_exp[poff + s] <= ts)):
                        rsv = rsv_at(S, poff + s)
                        q = S.o_qty[poff + s] + rsv     # an iceberg's total
                        oid = S.o_id[poff + s]
                        emit_event(O, 0, seq, ts, sym, oid, S.o_acct[poff + s], side, code, reason, lp, q, 0)
                        if rsv != 0:
                            ice_set_reserve(S, b, poff + s, 0)
                        remove_resting(S, b, s)
                        id_delete(S.tab, S.bk[b, F_TOFF], S.bk[b, F_TMASK], S.o_id, poff, oid)
                        slot_free(S, b, poff, s)
                        changed = True
                        k += 1
                    s = nxt
                if changed:
                    emit_delta(O, 0, seq, ts, sym, side, lp, S.lv_qty[g], S.lv_cnt[g])
                # the level may be gone now; continue from its position
                g = _next_level(S, b, g, is_ask)
        s = S.bk[b, F_PHEAD]          # parked orders (no deltas: they are not in the book)
        while s >= 0:
            nxt = S.o_next[poff + s]
            if mode == 2 or (mode == 1 and S.o_acct[poff + s] == acct) or \
                    (mode == 0 and (((S.o_flags[poff + s] >> 1) & 3) == TIF_DAY
                                    or 0 < S.o_exp[poff + s] <= ts)):
                oid = S.o_id[poff + s]
                emit_event(O, 0, seq, ts, sym, oid, S.o_acct[poff + s],
                           SELL if (S.o_flags[poff + s] & FL_SELL) != 0 else BUY, code, reason,
                           S.o_px[poff + s], S.o_qty[poff + s], 0)
                park_unlink(S, b, s)
                id_delete(S.tab, S.bk[b, F_TOFF], S.bk[b, F_TMASK], S.o_id, poff, oid)
                slot_free(S, b, poff, s)
                k += 1
            s = nxt
        s = S.bk[b, F_SHEAD]          # untriggered stops (no deltas either), in acceptance order
        while s >= 0:
            nxt = S.o_next[poff + s]
            if mode == 2 or (mode == 1 and S.o_acct[poff + s] == acct) or \
                    (mode == 0 and ((S.o_flags[poff + s] >> 1) & 3) == TIF_DAY):
                oid = S.o_id[poff + s]
                emit_event(O, 0, seq, ts, sym, oid, S.o_acct[poff + s],
                           SELL if (S.o_flags[poff + s] & FL_SELL) != 0 else BUY, code, reason,
                           S.o_px[poff + s], S.o_qty[poff + s], 0)
                stop_unlink(S, b, s)
                id_delete(S.tab, S.bk[b, F_TOFF], S.bk[b, F_TMASK], S.o_id, poff, oid)
                slot_free(S, b, poff, s)
                k += 1
            s = nxt
    return k


@njit(cache=True)
def parked_cpu(S, order, sym, side, px, oid, acct, qty, tif):
    """Every parked order (waiting for a paused symbol's auction), per book in arrival order:
    the columns of l3_cpu. Returns rows written."""
    k = 0
    for j in range(order.shape[0]):
        b = order[j]
        poff = S.bk[b, F_POFF]
        s = S.bk[b, F_PHEAD]
        while s >= 0:
            _l3_row(S, b, poff + s, k, sym, side, px, oid, acct, qty, tif)
            k += 1
            s = S.o_next[poff + s]
    return k


@njit(cache=True, _nrt=False)
def auction_apply_cpu(S, O, R, b, sr, seq, ts, px, vol, bid_oid, ask_oid, f_bid, f_ask, f_qty, nf):
    """Execute an uncrossing (kernels/risk/auction.py ``uncross_cpu``) on book b at price px and
    reopen its symbol (risk row sr): fill k trades f_qty[k] lots between bid bid_oid[f_bid[k]]
    and ask ask_oid[f_ask[k]] (fills: the bid in the taker columns, taker_side 0 = auction);
    FILLED / PARTIALLY_FILLED events with reason AUCTION, a delta per level per fill, risk
    positions, then the symbol's breaker state back to continuous around px (event RESUMED,
    qty = vol); the parked orders left join the book. Region 0 must hold nf fills, 2 nf + 1
    events and 2 nf + parked + 1 deltas."""
    bk = S.bk
    poff = bk[b, F_POFF]
    toff = bk[b, F_TOFF]
    tmask = bk[b, F_TMASK]
    sym = bk[b, F_SYM]
    for k in range(nf):
        q = f_qty[k]
        bo = bid_oid[f_bid[k]]
        ao = ask_oid[f_ask[k]]
        sb = id_find(S.tab, toff, tmask, S.o_id, poff, bo)
        sa = id_find(S.tab, toff, tmask, S.o_id, poff, ao)
        emit_fill(O, 0, seq, ts, sym, bo, ao, S.o_acct[poff + sb], S.o_acct[poff + sa], 0, px, q)
        for side in (BUY, SELL):
            s = sb if side == BUY else sa
            oid = bo if side == BUY else ao
            ms = poff + s
            a = S.o_acct[ms]
            arow = np.int64(S.o_arow[ms])
            lp = S.o_px[ms]
            left = S.o_qty[ms] - q
            S.o_qty[ms] = left
            if (S.o_flags[ms] & FL_PARKED) != 0:
                if left == 0:
                    park_unlink(S, b, s)
                    id_delete(S.tab, toff, tmask, S.o_id, poff, oid)
                    slot_free(S, b, poff, s)
            else:
                g = bk[b, F_LOFF] + lp - bk[b, F_BASE]
                S.lv_qty[g] -= q
                if side == BUY:
                    bk[b, F_BIDQTY] -= q
                else:
                    bk[b, F_ASKQTY] -= q
                if left == 0:
                    remove_resting(S, b, s)     # its quantity is 0 now: only the links and count
                    id_delete(S.tab, toff, tmask, S.o_id, poff, oid)
                    slot_free(S, b, poff, s)
                emit_delta(O, 0, seq, ts, sym, side, lp, S.lv_qty[g], S.lv_cnt[g])
            emit_event(O, 0, seq, ts, sym, oid, a, side, EV_FILLED if left == 0 else EV_PARTIALLY_FILLED,
                       R_AUCTION, px, q, left)
            risk_party_book(arow, sr, side, lp, left == 0, px, q, R.acct, R.pair)
    # what is left of the parked orders joins the book, in arrival order (it no longer crosses)
    while bk[b, F_PHEAD] >= 0:
        s = bk[b, F_PHEAD]
        park_unlink(S, b, s)
        g = add_resting(S, b, s)
        side = SELL if (S.o_flags[poff + s] & FL_SELL) != 0 else BUY
        emit_delta(O, 0, seq, ts, sym, side, S.o_px[poff + s], S.lv_qty[g], S.lv_cnt[g])
    brk = R.brk
    if px > 0:
        R.sym[sr, S_LAST] = px
        brk[sr, K_VA_PX] = px
        brk[sr, K_VA_TS] = ts
        brk[sr, K_REF] = px
        brk[sr, K_REF_TS] = ts
        if R.bp[B_BAND_BPS] != UNSET:
            lo, hi = band_of(px, R.bp[B_BAND_BPS])
            brk[sr, K_LO] = lo
            brk[sr, K_HI] = hi
    brk[sr, K_STATE] = TS_CONTINUOUS
    brk[sr, K_SINCE] = ts
    brk_emit(O, 0, seq, ts, sym, EV_RESUMED, brk[sr, K_CAUSE], px, vol, TS_CONTINUOUS)
    brk[sr, K_CAUSE] = 0
