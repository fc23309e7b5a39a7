"""CPU drivers around the shared per-row step of kernels/book.py.

``run_chunk_cpu``: the one compiled copy of the per-row step on the CPU. Rows (in arrival order,
or through a route) into one output region; stops at the first row that needs more capacity and
says which (ST_*), so the engine can grow and resume at that row; rows before it are fully
applied. Compiled ``nogil``: the engine runs books in parallel by calling it from Python threads
(engine/engine.py ``_submit_parallel``), each thread on its own chunk of books writing its own
output region, then ``gather_rows_cpu`` puts every row's outputs back in arrival order. That
gives exactly the outputs of the sequential path, since a row's outputs depend only on its own
book's history. (A ``parallel=True`` prange driver compiled a second copy of the whole step:
minutes of cold compilation for the same machine code.)

``match_seq_cpu``: the sequential path, run_chunk_cpu over rows start.. into region 0 (a plain
Python call, so that it shares run_chunk_cpu's compiled code instead of compiling it again).

``relayout_cpu``: copies every book from one state layout into a larger one (between kernel
calls only) and rebuilds bitmaps and id tables (resting, parked and untriggered stop orders).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .book import (
    F_ASK, F_BASE, F_BID, F_HW, F_LOFF, F_NEXP, F_NLEV, F_PHEAD, F_POFF, F_SHEAD, F_SYM, F_TMASK, F_TOFF, ST_OK, bit_clear,
    bit_set, gtd_due_plain, gtd_due_risk, id_insert, process_row, process_row_risk,
)
from hpte.kernels.risk.breaker import brk_end_row
from hpte.kernels.risk.checks import PREFETCH, prefetch


_NO_ROWS = np.empty((0, 3), np.int64)


def match_seq_cpu(I, S, O, books, start, seq0, stp):
    """Process rows start.. of I in order into region 0. books: int64[n] dense book of each row.

    Returns (status, row): status ST_OK and row == n when done, else the ST_* need and the row
    that must be retried after growing. (run_chunk_cpu without a route; a Python function, so
    the step is compiled once, in run_chunk_cpu, not again inside a jitted wrapper.)
    """
    return run_chunk_cpu(I, S, O, books, books, False, 0, int(start), I.ts.shape[0], _NO_ROWS, _NO_ROWS,
                         False, int(seq0), int(stp))


def match_seq_args(I, S, O, books, start, seq0, stp):
    """The arguments match_seq_cpu passes to run_chunk_cpu (for callers that keep the compiled
    entry point of run_chunk_cpu and call it without numba's dispatch)."""
    return (I, S, O, books, books, False, 0, int(start), I.ts.shape[0], _NO_ROWS, _NO_ROWS, False, int(seq0), int(stp))


@njit(cache=True, _nrt=False)
def match_seq_risk_cpu(I, S, O, books, start, seq0, stp, R):
    """``match_seq_cpu`` with pre-trade risk checks, post-trade risk state and circuit breakers
    (R: engine/risk/state.py RiskState; R.ar / R.sr are each row's account and symbol rows). Rows in
    arrival order into region 0: risk state is shared across books (accounts trade many
    symbols), so this path is sequential. Returns (status, row) like ``match_seq_cpu``, with
    ST_NEED_AUCTION and ST_NEED_MAP besides."""
    n = I.ts.shape[0]
    bk = S.bk
    for i in range(start, n):
        k = i + PREFETCH
        if k < n:   # the account and account x symbol rows of a row ahead
            prefetch(R.acct, R.ar[k], -1)
            prefetch(R.pair, R.ar[k], R.sr[k])
        b = books[i]
        if bk[b, F_NEXP] != 0 and I.ts[i] >= bk[b, F_NEXP]:   # good-till-date orders due first
            st = gtd_due_risk(I, S, O, 0, i, b, seq0 + i, R)
            if st != ST_OK:
                return st, i
        st = process_row_risk(I, S, O, 0, i, b, seq0 + i, stp, R)
        if st != ST_OK:
            return st, i
        base = bk[b, F_BASE]
        bid = base + bk[b, F_BID] if bk[b, F_BID] >= 0 else 0
        ask = base + bk[b, F_ASK] if bk[b, F_ASK] >= 0 else 0
        brk_end_row(R, O, 0, seq0 + i, I.ts[i], R.sr[i], bk[b, F_SYM], bid, ask)
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
            T.o_exp[tp + s] = S.o_exp[sp + s]
        if T.o_rsv.shape[0] > 0:          # the iceberg arrays: empty until the first iceberg
            for s in range(S.bk[b, F_HW]):
                T.o_rsv[tp + s] = S.o_rsv[sp + s]
                T.o_dsp[tp + s] = S.o_dsp[sp + s]
        if T.o_arow.shape[0] > 0:
            for s in range(S.bk[b, F_HW]):
                T.o_arow[tp + s] = S.o_arow[sp + s]
        # id table from the resting and the parked orders
        for lv in range(S.bk[b, F_NLEV]):
            s = S.lv_head[so + lv] if S.lv_cnt[so + lv] > 0 else -1
            while s >= 0:
                id_insert(T.tab, T.bk[b, F_TOFF], T.bk[b, F_TMASK], S.o_id[sp + s], s)
                s = S.o_next[sp + s]
        s = S.bk[b, F_PHEAD]
        while s >= 0:
            id_insert(T.tab, T.bk[b, F_TOFF], T.bk[b, F_TMASK], S.o_id[sp + s], s)
            s = S.o_next[sp + s]
        s = S.bk[b, F_SHEAD]      # untriggered stops
        while s >= 0:
            id_insert(T.tab, T.bk[b, F_TOFF], T.bk[b, F_TMASK], S.o_id[sp + s], s)
            s = S.o_next[sp + s]


@njit(cache=True)
def index_ids_cpu(S, b):
    """Fill book b's id table (S.tab from bk[b, F_TOFF], bk[b, F_TMASK] + 1 entries, all 0 on
    entry) from its resting and parked orders: after its pool and table moved (between kernel
    calls only; engine/book_state.py BookStore._move_pool)."""
    bk = S.bk
    so = bk[b, F_LOFF]
    sp = bk[b, F_POFF]
    toff = bk[b, F_TOFF]
    tmask = bk[b, F_TMASK]
    for lv in range(bk[b, F_NLEV]):
        s = S.lv_head[so + lv] if S.lv_cnt[so + lv] > 0 else -1
        while s >= 0:
            id_insert(S.tab, toff, tmask, S.o_id[sp + s], s)
            s = S.o_next[sp + s]
    s = bk[b, F_PHEAD]
    while s >= 0:
        id_insert(S.tab, toff, tmask, S.o_id[sp + s], s)
        s = S.o_next[sp + s]
    s = bk[b, F_SHEAD]       # untriggered stops
    while s >= 0:
        id_insert(S.tab, toff, tmask, S.o_id[sp + s], s)
        s = S.o_next[sp + s]


@njit(cache=True)
def move_ladder_cpu(S, b, loff, nlev, base):
    """Move book b's ladder to `nlev` levels starting at flat level `loff` with level 0 at price
    `base` (between kernel calls only). The new region must be unused (head/tail -1, counts 0,
    bits clear) and cover every occupied level; the old region is left empty (bits cleared), a
    hole until the next relayout. Other books are not touched: growing one small book's ladder
    costs its own levels, not a copy of every book."""
    bk = S.bk
    so = bk[b, F_LOFF]
    shift = bk[b, F_BASE] - base
    for lv in range(bk[b, F_NLEV]):
        g = so + lv
        if S.lv_cnt[g] > 0:
            t = loff + lv + shift
            S.lv_head[t] = S.lv_head[g]
            S.lv_tail[t] = S.lv_tail[g]
            S.lv_qty[t] = S.lv_qty[g]
            S.lv_cnt[t] = S.lv_cnt[g]
            bit_set(S.bm0, S.bm1, t)
            bit_clear(S.bm0, S.bm1, g)
            S.lv_head[g] = -1
            S.lv_tail[g] = -1
            S.lv_qty[g] = 0
            S.lv_cnt[g] = 0
    if bk[b, F_BID] >= 0:
        bk[b, F_BID] += shift
    if bk[b, F_ASK] >= 0:
        bk[b, F_ASK] += shift
    bk[b, F_LOFF] = loff
    bk[b, F_NLEV] = nlev
    bk[b, F_BASE] = base


@njit(cache=True, nogil=True, _nrt=False)
def run_chunk_cpu(I, S, O, books, route, use_route, c, lo, hi, row_start, row_count, record, seq0, stp):
    """Rows route[lo:hi] (or lo:hi when not use_route) into region c, in order; stops at the
    first row that needs room. Returns (status, position reached). With `record`, notes each
    row's output rows relative to the start of region c (regions are back to back: region c
    starts at O.cap[c - 1]); a row that stops is marked (row_count[i, 0] = -1, its start kept)
    so that outputs it wrote before stopping (a good-till-date sweep) stay its own on the retry. This is the one place the per-row step is compiled (inlined) for the
    CPU; it releases the GIL, so threads may run it on disjoint books and regions at once."""
    fb = O.cap[c - 1, 0] if c > 0 else 0
    eb = O.cap[c - 1, 1] if c > 0 else 0
    db = O.cap[c - 1, 2] if c > 0 else 0
    j = lo
    while j < hi:
        i = route[j] if use_route else j
        f0 = O.cur[c, 0]
        e0 = O.cur[c, 1]
        d0 = O.cur[c, 2]
        if record and row_count[i, 0] < 0:
            # a retry: what the stopped attempt wrote (a good-till-date sweep) is the row's too
            f0 = row_start[i, 0] + fb
            e0 = row_start[i, 1] + eb
            d0 = row_start[i, 2] + db
        b = books[i]
        st = ST_OK
        if S.bk[b, F_NEXP] != 0 and I.ts[i] >= S.bk[b, F_NEXP]:   # good-till-date orders due first
            st = gtd_due_plain(I, S, O, c, i, b, seq0 + i, None)
        if st == ST_OK:
            st = process_row(I, S, O, c, i, b, seq0 + i, stp)
        if st != ST_OK:
            if record and row_count[i, 0] >= 0:   # first stop of this row: where its outputs begin
                row_start[i, 0] = f0 - fb
                row_start[i, 1] = e0 - eb
                row_start[i, 2] = d0 - db
                row_count[i, 0] = -1
            return st, j
        j += 1
        if not record:
            continue
        row_start[i, 0] = f0 - fb
        row_start[i, 1] = e0 - eb
        row_start[i, 2] = d0 - db
        row_count[i, 0] = O.cur[c, 0] - f0
        row_count[i, 1] = O.cur[c, 1] - e0
        row_count[i, 2] = O.cur[c, 2] - d0
    return ST_OK, hi


@njit(cache=True, nogil=True)
def route_by_book_cpu(books, next_pos, route):
    """Counting sort of rows by book, stable: route[next_pos[b]...] = the rows of book b in
    arrival order. books: int64[n]; next_pos: int64[nbooks], on entry the first route position
    of each book (exclusive prefix sum of the book counts), on return the end of each book;
    route: int64[n], written. O(n), against O(n log n) for numpy's stable argsort."""
    for i in range(books.shape[0]):
        b = books[i]
        route[next_pos[b]] = i
        next_pos[b] += 1


@njit(cache=True, nogil=True)
def gather_rows_cpu(src, src_start, row_count, k, dst_start, dst, lo, hi):
    """Copy the output rows of stream k of input rows lo..hi-1 from src (region layout) to dst
    in arrival order: dst[dst_start[i]:dst_start[i]+row_count[i, k]] = src[src_start[i]:...].
    src, dst: int64[rows, ncol]; src_start, dst_start: int64[n]; row_count: int64[n, 3].
    Releases the GIL: threads may copy disjoint row ranges at once."""
    ncol = src.shape[1]
    for i in range(lo, hi):
        a = src_start[i]
        d = dst_start[i]
        for t in range(row_count[i, k]):
            for c in range(ncol):
                dst[d + t, c] = src[a + t, c]
