"""Compaction of one book's order pool (between kernel calls only; engine/book_state.py
``BookStore.shrink``).

A book's pool is a slice of the flat per-order arrays (o_id, o_qty, ...) holding local slots
[0, pcap); slots [0, hw) have been used, the freed ones are chained through o_next from F_FREE.
Pools grow when full and would otherwise never give memory back: a book that once held 50,000
orders and now holds 5,000 keeps 50,000 slots. ``compact_pool_cpu`` renumbers the live slots
(resting orders in the ladder, parked orders, untriggered stops) to 0 .. live-1, keeping their
relative order, so that the pool can then be laid out with fewer slots (relayout_cpu copies slots [0, hw)).

Slot numbers are internal: every output and every priority comes from the links (FIFO per
level, the parked list in arrival order) and the order ids, never from slot numbers (the
good-till-date sweep orders by (expiry, order id)), so matching after a compaction gives
exactly the outputs it would have given without it (tests/test_small_books.py).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .book import (
    F_FREE, F_HW, F_LOFF, F_NLEV, F_PHEAD, F_POFF, F_PTAIL, F_SHEAD, F_STAIL, F_TMASK, F_TOFF, F_TOPA, F_TOPB,
    id_insert,
)


@njit(cache=True, nogil=True)
def compact_pool_cpu(S, b, newslot):
    """Renumber book b's live slots (those reachable from its occupied levels, its parked
    list and its list of untriggered stops) to 0 .. live-1 in increasing old-slot order, in
    place, and rebuild its id table.

    S: the State (engine/book_state.py). b: the book. newslot: int32 scratch of at least
    bk[b, F_HW] entries (contents ignored; on return newslot[s] is the new number of old slot s,
    or -1 for a free slot). Every per-order array (o_id, o_qty, o_px, o_next, o_prev, o_acct,
    o_flags, o_exp and, when present, o_arow, o_rsv and o_dsp) is moved; links, level heads and tails, the parked
    list, the stop list, the TOP orders (F_TOPB / F_TOPA) and the id table follow; afterwards the
    free list is empty (F_FREE = -1) and F_HW = live. Returns live (slots in use). The pool's capacity
    (F_PCAP) and place are unchanged: the caller lays the books out afresh to give memory back.
    """
    bk = S.bk
    poff = bk[b, F_POFF]
    hw = bk[b, F_HW]
    loff = bk[b, F_LOFF]
    for s in range(hw):
        newslot[s] = -1
    # live slots: the resting orders of every occupied level and the parked orders
    for lv in range(bk[b, F_NLEV]):
        if S.lv_cnt[loff + lv] > 0:
            s = S.lv_head[loff + lv]
            while s >= 0:
                newslot[s] = 0
                s = S.o_next[poff + s]
    for head in (F_PHEAD, F_SHEAD):    # the parked list, the untriggered stops
        s = bk[b, head]
        while s >= 0:
            newslot[s] = 0
            s = S.o_next[poff + s]
    live = 0
    for s in range(hw):
        if newslot[s] == 0:
            newslot[s] = live
            live += 1
    # move: new number <= old number, and slots are visited in increasing order, so a slot is
    # only ever written after its own old contents were moved (or were free)
    has_arow = S.o_arow.shape[0] > 0
    has_ice = S.o_rsv.shape[0] > 0        # the iceberg arrays are empty until the first iceberg
    for s in range(hw):
        t = newslot[s]
        if t < 0:
            continue
        src = poff + s
        dst = poff + t
        nx = S.o_next[src]
        pv = S.o_prev[src]
        S.o_id[dst] = S.o_id[src]
        S.o_qty[dst] = S.o_qty[src]
        S.o_px[dst] = S.o_px[src]
        S.o_acct[dst] = S.o_acct[src]
        S.o_flags[dst] = S.o_flags[src]
        S.o_exp[dst] = S.o_exp[src]
        if has_ice:
            S.o_rsv[dst] = S.o_rsv[src]
            S.o_dsp[dst] = S.o_dsp[src]
        if has_arow:
            S.o_arow[dst] = S.o_arow[src]
        S.o_next[dst] = newslot[nx] if nx >= 0 else -1
        S.o_prev[dst] = newslot[pv] if pv >= 0 else -1
    # what points at slots from outside the pool
    for lv in range(bk[b, F_NLEV]):
        g = loff + lv
        if S.lv_cnt[g] > 0:
            S.lv_head[g] = newslot[S.lv_head[g]]
            S.lv_tail[g] = newslot[S.lv_tail[g]]
    for head, tail in ((F_PHEAD, F_PTAIL), (F_SHEAD, F_STAIL)):
        if bk[b, head] >= 0:
            bk[b, head] = newslot[bk[b, head]]
            bk[b, tail] = newslot[bk[b, tail]]
    for f in (F_TOPB, F_TOPA):       # local slot + 1, 0 = none (a TOP order is always live)
        if bk[b, f] > 0:
            bk[b, f] = newslot[bk[b, f] - 1] + 1
    bk[b, F_FREE] = -1
    bk[b, F_HW] = live
    # the id table, rebuilt from the live orders in their new slots
    toff = bk[b, F_TOFF]
    tmask = bk[b, F_TMASK]
    for i in range(tmask + 1):
        S.tab[toff + i] = 0
    for t in range(live):
        id_insert(S.tab, toff, tmask, S.o_id[poff + t], t)
    return live
