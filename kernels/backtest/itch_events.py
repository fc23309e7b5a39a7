"""One stock's ITCH 5.0 order messages as an L3 market-event stream for the backtest loop.

The caller (hpte.engine.backtest.data.itch_events) picks the messages of one stock locate,
merges them in stream order as ops (``OP_*`` codes) and calls ``itch_ops_cpu`` per decoded
chunk; the live-order table (order reference -> side x price, leaves) carries across calls in
the loop's open-addressing id table (hpte.kernels.backtest.loop ``h_*``). Per op:

* ``A`` / ``F`` add -> MK_ADD (order id = the reference, side B +1 / S -1, price, shares);
* ``E`` executed, ``C`` executed with price -> MK_EXEC at the resting order's price (the book
  level it leaves; C's execution price is not the book's) for min(shares, leaves);
* ``X`` cancel -> MK_CANCEL of min(shares, leaves); ``D`` delete -> MK_CANCEL of the leaves;
* ``U`` replace -> MK_CANCEL of the original's leaves, then MK_ADD of the new reference (same
  side, the message's price and shares);
* ``P`` non-cross trade (a hidden order) -> MK_TRADE (side = the hidden resting order's side).

Messages naming a reference that is not live (added before the file began, or gone) change
nothing and are counted (``counts[0]``), as are over-reductions clipped to the leaves
(``counts[1]``) and adds with no side, shares or price (``counts[2]``).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from hpte.kernels.backtest.api import MK_ADD, MK_CANCEL, MK_EXEC, MK_TRADE
from hpte.kernels.backtest.loop import h_delete, h_find, h_insert

OP_ADD = 1      # A, F
OP_EXEC = 2     # E, C
OP_CANCEL = 3   # X
OP_DELETE = 4   # D
OP_REPLACE = 5  # U (ref = original, ref2 = new)
OP_TRADE = 6    # P

C_UNKNOWN = 0
C_CLIPPED = 1
C_BAD_ADD = 2
NCOUNT = 4


@njit(cache=True, nogil=True)
def itch_ops_cpu(code, ts, ref, ref2, side, px, n, keys, vals, bits, out, counts):
    """Turn ops into market events; returns the number of rows written to ``out``.

    code : int64[m], OP_*; ts : int64[m], ns since midnight; ref, ref2 : int64[m], order
        references (ref2: a U's new reference); side : int64[m], +1 / -1 (0 unknown) for adds and
        P; px : int64[m], Price(4) units; n : int64[m], shares.
    keys, vals, bits : the live-order table (int64[H], int64[H, 2] = side x price, leaves),
        H = 2**bits, at least twice the live orders plus the adds of this call (the caller grows it).
    out : int64[2 m, 6], rows (ts_ns, kind, order_id, side, price, qty); counts : int64[NCOUNT].
    """
    w = 0
    for i in range(code.shape[0]):
        c = code[i]
        t = ts[i]
        if c == OP_ADD:
            if side[i] == 0 or n[i] <= 0 or px[i] <= 0:
                counts[C_BAD_ADD] += 1
                continue
            p = h_find(keys, ref[i], bits)
            if p >= 0:                      # a live reference added again: the old order leaves
                sp = vals[p, 0]
                _put(out, w, t, MK_CANCEL, ref[i], 1 if sp > 0 else -1, abs(sp), vals[p, 1])
                w += 1
            h_insert(keys, vals, ref[i], side[i] * px[i], n[i], bits)
            _put(out, w, t, MK_ADD, ref[i], side[i], px[i], n[i])
            w += 1
        elif c == OP_TRADE:
            if side[i] == 0 or n[i] <= 0 or px[i] <= 0:
                counts[C_BAD_ADD] += 1
                continue
            _put(out, w, t, MK_TRADE, 0, side[i], px[i], n[i])
            w += 1
        else:
            p = h_find(keys, ref[i], bits)
            if p < 0:
                counts[C_UNKNOWN] += 1
                continue
            sp = vals[p, 0]
            s = 1 if sp > 0 else -1
            opx = abs(sp)
            leaves = vals[p, 1]
            if c == OP_DELETE or c == OP_REPLACE:
                q = leaves
            else:
                q = n[i]
                if q > leaves:
                    counts[C_CLIPPED] += 1
                    q = leaves
            if q > 0:
                _put(out, w, t, MK_EXEC if c == OP_EXEC else MK_CANCEL, ref[i], s, opx, q)
                w += 1
            if leaves - q <= 0:
                h_delete(keys, vals, p, bits)
            else:
                vals[p, 1] = leaves - q
            if c == OP_REPLACE:
                if n[i] <= 0 or px[i] <= 0:
                    counts[C_BAD_ADD] += 1
                    continue
                p2 = h_find(keys, ref2[i], bits)
                if p2 >= 0:
                    sp2 = vals[p2, 0]
                    _put(out, w, t, MK_CANCEL, ref2[i], 1 if sp2 > 0 else -1, abs(sp2), vals[p2, 1])
                    w += 1
                h_insert(keys, vals, ref2[i], s * px[i], n[i], bits)
                _put(out, w, t, MK_ADD, ref2[i], s, px[i], n[i])
                w += 1
    return w


@njit(cache=True, nogil=True, inline="always")
def _put(out, w, t, kind, oid, side, px, q):
    out[w, 0] = t
    out[w, 1] = kind
    out[w, 2] = oid
    out[w, 3] = side
    out[w, 4] = px
    out[w, 5] = q
