"""CPU drivers around the shared per-row step of kernels/book.py.

``match_seq_cpu``: rows in arrival order, any mix of books, outputs written in arrival order to
region 0. Stops at the first row that needs more capacity and says which (ST_*), so the engine
can grow and resume at that row; rows before it are fully applied.

``relayout_cpu``: copies every book from one state layout into a larger one (between kernel
calls only) and rebuilds bitmaps and id tables.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .book import (
    F_ASK, F_BASE, F_BID, F_HW, F_LOFF, F_NLEV, F_POFF, F_TMASK, F_TOFF, ST_OK, bit_set,
    id_insert, process_row,
)


@njit(cache=True, _nrt=False)
def match_seq_cpu(I, S, O, books, start, seq0, stp):
    """Process rows start.. of I in order. books: int64[n] dense book of each row.

    Returns (status, row): status ST_OK and row == n when done, else the ST_* need and the row
    that must be retried after growing.
    """
    n = I.ts.shape[0]
    for i in range(start, n):
        st = process_row(I, S, O, 0, i, books[i], seq0 + i, stp)
        if st != ST_OK:
            return st, i
    return ST_OK, n


@njit(cache=True)
def relayout_cpu(S, T, nbooks_old):
    """Copy books 0..nbooks_old-1 from state S into state T (T.bk holds the new geometry:
    offsets and sizes; its ladder must cover every occupied level of S). Rebuilds T's bitmaps,
    best levels and id tables. T's arrays must be zeroed / -1 filled by the caller."""
    for b in range(nbooks_old):
        # ladder
        shift = S.bk[b, F_BASE] - T.bk[b, F_BASE]
        so = S.bk[b, F_LOFF]
        to = T.bk[b, F_LOFF]
        for lv in range(S.bk[b, F_NLEV]):
            if S.lv_cnt[so + lv] > 0:
                g = to + lv + shift
                T.lv_head[g] = S.lv_head[so + lv]
                T.lv_tail[g] = S.lv_tail[so + lv]
                T.lv_qty[g] = S.lv_qty[so + lv]
                T.lv_cnt[g] = S.lv_cnt[so + lv]
                bit_set(T.bm0, T.bm1, g)
        T.bk[b, F_BID] = S.bk[b, F_BID] + shift if S.bk[b, F_BID] >= 0 else -1
        T.bk[b, F_ASK] = S.bk[b, F_ASK] + shift if S.bk[b, F_ASK] >= 0 else -1
        # pool: slots [0, hw) keep their local numbers
        sp = S.bk[b, F_POFF]
        tp = T.bk[b, F_POFF]
        for s in range(S.bk[b, F_HW]):
            T.o_id[tp + s] = S.o_id[sp + s]
            T.o_qty[tp + s] = S.o_qty[sp + s]
            T.o_px[tp + s] = S.o_px[sp + s]
            T.o_next[tp + s] = S.o_next[sp + s]
            T.o_prev[tp + s] = S.o_prev[sp + s]
            T.o_acct[tp + s] = S.o_acct[sp + s]
            T.o_flags[tp + s] = S.o_flags[sp + s]
        # id table from the resting orders
        for lv in range(S.bk[b, F_NLEV]):
            s = S.lv_head[so + lv] if S.lv_cnt[so + lv] > 0 else -1
            while s >= 0:
                id_insert(T.tab, T.bk[b, F_TOFF], T.bk[b, F_TMASK], S.o_id[sp + s], s)
                s = S.o_next[sp + s]
