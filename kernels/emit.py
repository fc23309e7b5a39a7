"""Output rows of the matching kernels: one function per stream (fills, order events, L2 deltas),
writing row-major int64 rows into region r of the Outputs tuple O (engine/book_state.py). Shared
by kernels/book.py, kernels/risk/breaker.py and kernels/snapshot.py.

Outputs on demand: a stream whose buffer has no rows (``O.F.shape[0] == 0``) was not asked for
and is not written (its cursor stays put; the engine gives it a capacity no row can exhaust, so
the kernels' room checks pass). One predictable branch per emitted row; nothing else changes, so
the streams that are written hold exactly the rows of a run that writes all three.
"""
from __future__ import annotations

import numpy as np
from numba.extending import register_jitable


@register_jitable
def emit_fill(O, r, seq, ts, sym, tid, mid, tacct, macct, tside, px, q):
    """One fills row (row-major: O.F[k, c] is column c of schema.FILL_COLUMNS, as int64 bits)."""
    F = O.F
    if F.shape[0] == 0:     # fills not asked for
        return
    k = O.cur[r, 0]
    F[k, 0] = seq
    F[k, 1] = ts
    F[k, 2] = sym
    F[k, 3] = np.int64(tid)
    F[k, 4] = np.int64(mid)
    F[k, 5] = tacct
    F[k, 6] = macct
    F[k, 7] = tside
    F[k, 8] = px
    F[k, 9] = q
    O.cur[r, 0] = k + 1


@register_jitable
def emit_event(O, r, seq, ts, sym, oid, acct, side, code, reason, px, q, leaves):
    """One events row (schema.EVENT_COLUMNS) in region r."""
    E = O.E
    if E.shape[0] == 0:     # order events not asked for
        return
    k = O.cur[r, 1]
    E[k, 0] = seq
    E[k, 1] = ts
    E[k, 2] = sym
    E[k, 3] = np.int64(oid)
    E[k, 4] = acct
    E[k, 5] = side
    E[k, 6] = code
    E[k, 7] = reason
    E[k, 8] = px
    E[k, 9] = q
    E[k, 10] = leaves
    O.cur[r, 1] = k + 1


@register_jitable
def emit_delta(O, r, seq, ts, sym, side, px, q, n):
    """One deltas row (schema.DELTA_COLUMNS) in region r."""
    D = O.D
    if D.shape[0] == 0:     # L2 deltas not asked for
        return
    k = O.cur[r, 2]
    D[k, 0] = seq
    D[k, 1] = ts
    D[k, 2] = sym
    D[k, 3] = side
    D[k, 4] = px
    D[k, 5] = q
    D[k, 6] = n
    O.cur[r, 2] = k + 1


