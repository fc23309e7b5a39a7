"""Synthetic order-flow generator kernels (the benchmark flow of FORMATS.md).

The generator runs its own simple price-time book so that cancels pick truly resting orders and
new orders know the touch. All randomness is drawn beforehand (hpte.engine.gen) and passed in,
so these kernels are deterministic; tests/reference/gen_ref.py is their plain-Python twin.

Book layout (simple on purpose: this is a generator, not the engine):

- one price ladder per book, a slice ``[lad_off[b], lad_off[b] + lad_hi[b] - lad_lo[b]]`` of the
  level arrays, covering every price an order of the book can rest at;
- per level a FIFO queue of resting orders as an intrusive doubly linked list (``head``,
  ``tail``, ``nxt``, ``prv``); a level only ever holds one side (the book is never crossed);
- per order state indexed by the event row of its NEW row (``leaves``, ``nxt``, ``prv``,
  ``rpos``); its price, side, account and id are read back from the output columns;
- per book a swap-remove list of resting rows (``rest[rest_off[b]:rest_off[b] + n_rest[b]]``)
  for a uniform random choice of the order to cancel.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from .enums import ACT_CANCEL, ACT_NEW, BUY, TIF_GTC, TIF_IOC

# Event kinds drawn by the engine (input `kind` of gen_flow_cpu).
GEN_NEW = 0
GEN_CANCEL = 1
GEN_IOC = 2

# The IOC quantity is scaled by n_rest / IOC_SCALE_REF clipped to [IOC_SCALE_MIN, IOC_SCALE_MAX].
IOC_SCALE_REF = 5000.0
IOC_SCALE_MIN = 0.25
IOC_SCALE_MAX = 4.0

# Indices of the `counters` output.
C_TRADES = 0          # fills (maker-taker pairs)
C_TRADED_QTY = 1      # lots filled
C_NEW = 2             # NEW LIMIT GTC rows
C_CANCEL = 3          # CANCEL rows
C_IOC = 4             # NEW LIMIT IOC rows
C_CANCEL_AS_NEW = 5   # cancel draws on an empty book, emitted as NEW LIMIT GTC instead
C_MARKETABLE = 6      # NEW GTC rows priced at or through the opposite touch on purpose
C_PASSIVE = 7         # NEW GTC rows priced passively
C_PASSIVE_DIST = 8    # sum over passive rows of |price - round(mid)| in ticks
C_IOC_QTY = 9         # lots asked by IOC rows
C_IOC_EXPIRED = 10    # lots of IOC rows left unfilled (expired)
C_CLIPPED = 11        # prices clipped into the book's ladder (should stay 0)
N_COUNTERS = 12

_U30 = np.uint64(30)
_U27 = np.uint64(27)
_U31 = np.uint64(31)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


@njit(cache=True)
def mix64(x):
    """SplitMix64 finaliser: a bijection of uint64 (so distinct inputs give distinct outputs).

    Parameters
    ----------
    x : uint64, any value.

    Returns
    -------
    uint64, well-spread over all 64 bits.
    """
    x = (x ^ (x >> _U30)) * _M1
    x = (x ^ (x >> _U27)) * _M2
    return x ^ (x >> _U31)


@njit(cache=True)
def walk_mid_cpu(incr, sym, cur, mid, mid_lo, mid_hi):
    """Advance each book's latent mid by its own Gaussian increments (one step per event).

    Processes one chunk of events; the book state (`cur`, `mid_lo`, `mid_hi`) carries over.

    Parameters
    ----------
    incr : float64[m], the walk increment of each event, ticks.
    sym : uint32[m], the book of each event (0 .. n_books-1).
    cur : float64[n_books], in/out: each book's current mid, ticks (start: the start mid).
    mid : float64[m], output: the mid of the event's book after its step, ticks.
    mid_lo, mid_hi : float64[n_books], in/out: running min and max of each book's mid.
    """
    for k in range(incr.shape[0]):
        b = sym[k]
        m = cur[b] + incr[k]
        cur[b] = m
        mid[k] = m
        if m < mid_lo[b]:
            mid_lo[b] = m
        if m > mid_hi[b]:
            mid_hi[b] = m


@njit(cache=True)
def _level(b, p, lad_off, lad_lo):
    return lad_off[b] + (p - lad_lo[b])


@njit(cache=True)
def gen_flow_cpu(i0, kind, side, mkt, through, dist, qty, ioc_g, ioc_q, u_pick, account,
                 sym, mid, key, lad_off, lad_lo, lad_hi, rest_off,
                 best_bid, best_ask, n_bid, n_ask, n_rest, head, tail, touched,
                 leaves, nxt, prv, rpos, rest,
                 out_id, out_side, out_price, out_qty, out_action, out_tif, out_account,
                 counters):
    """Generate the order rows of events ``i0 .. i0 + m - 1`` and update the generator's books.

    Chunk inputs (index k = i - i0, pre-drawn by the engine):

    kind : uint8[m], GEN_NEW / GEN_CANCEL / GEN_IOC.
    side : int8[m], +1 buy / -1 sell of a NEW or IOC row.
    mkt : uint8[m], 1 = a NEW row deliberately marketable (when the opposite side has orders).
    through : int64[m], 0..2, ticks a marketable NEW row goes through the opposite touch.
    dist : int64[m], >= 1, passive distance from the rounded mid, ticks.
    qty : int64[m], >= 1, lots of a NEW row.
    ioc_g : int64[m], >= 1, an IOC's limit is the opposite touch + (ioc_g - 1) ticks.
    ioc_q : int64[m], >= 1, an IOC's unscaled quantity, lots; the row asks
        max(1, trunc(ioc_q * clip(n_rest / IOC_SCALE_REF, IOC_SCALE_MIN, IOC_SCALE_MAX))).
    u_pick : float64[m], in [0, 1): picks the resting order a CANCEL row cancels.
    account : uint32[m], account of a NEW or IOC row.

    Whole-flow inputs (index i):

    sym : uint32[n], the book of each event; mid : float64[n], the book's latent mid, ticks.
    key : uint64, the id key: the order id of the NEW row i is mix64(key + i).

    Per book b: lad_off, lad_lo, lad_hi : int64, ladder offset into the level arrays and its
    lowest / highest price (ticks); rest_off : int64, offset of the book's resting list in `rest`;
    state best_bid, best_ask : int64 prices (valid while n_bid / n_ask > 0), n_bid, n_ask,
    n_rest : int64 resting order counts.
    Per level: head, tail : int64 (-1 = none), touched : uint8 (an order rested there).
    Per order (its NEW row): leaves : int64 lots, nxt, prv : int64 (-1 = none), rpos : int64
    position in the book's resting list; rest : int64[n], the resting lists.

    Outputs (index i, written for the chunk): out_id uint64, out_side int8, out_price int64,
    out_qty int64, out_action uint8, out_tif uint8, out_account uint32.
    counters : int64[N_COUNTERS], accumulated (C_* indices).
    """
    m = kind.shape[0]
    for k in range(m):
        i = i0 + k
        b = sym[i]
        r = np.int64(math.floor(mid[i] + 0.5))
        kd = kind[k]
        if kd == GEN_CANCEL and n_rest[b] == 0:
            kd = GEN_NEW
            counters[C_CANCEL_AS_NEW] += 1

        if kd == GEN_CANCEL:
            nr = n_rest[b]
            pos = np.int64(u_pick[k] * nr)
            if pos >= nr:
                pos = nr - 1
            j = rest[rest_off[b] + pos]
            p = out_price[j]
            s = out_side[j]
            out_id[i] = out_id[j]
            out_side[i] = s
            out_price[i] = p
            out_qty[i] = leaves[j]
            out_action[i] = ACT_CANCEL
            out_tif[i] = TIF_GTC
            out_account[i] = out_account[j]
            counters[C_CANCEL] += 1
            # unlink from the level's FIFO
            lvl = _level(b, p, lad_off, lad_lo)
            a_ = prv[j]
            z_ = nxt[j]
            if a_ != -1:
                nxt[a_] = z_
            else:
                head[lvl] = z_
            if z_ != -1:
                prv[z_] = a_
            else:
                tail[lvl] = a_
            leaves[j] = 0
            # swap-remove from the resting list
            last = rest[rest_off[b] + nr - 1]
            rest[rest_off[b] + pos] = last
            rpos[last] = pos
            n_rest[b] = nr - 1
            # side counts and touch
            if s == BUY:
                n_bid[b] -= 1
                if head[lvl] == -1 and p == best_bid[b] and n_bid[b] > 0:
                    x = p - 1
                    while head[_level(b, x, lad_off, lad_lo)] == -1:
                        x -= 1
                    best_bid[b] = x
            else:
                n_ask[b] -= 1
                if head[lvl] == -1 and p == best_ask[b] and n_ask[b] > 0:
                    x = p + 1
                    while head[_level(b, x, lad_off, lad_lo)] == -1:
                        x += 1
                    best_ask[b] = x
            continue

        s = np.int64(side[k])
        opp_n = n_ask[b] if s == BUY else n_bid[b]
        opp = best_ask[b] if s == BUY else best_bid[b]
        if kd == GEN_IOC:
            if opp_n > 0:
                p = opp + s * (ioc_g[k] - 1)
            else:
                p = r
            if p < 1:
                p = 1
            scale = n_rest[b] / IOC_SCALE_REF
            if scale < IOC_SCALE_MIN:
                scale = IOC_SCALE_MIN
            elif scale > IOC_SCALE_MAX:
                scale = IOC_SCALE_MAX
            q = np.int64(ioc_q[k] * scale)  # truncates (scale > 0)
            if q < 1:
                q = 1
            out_tif[i] = TIF_IOC
            counters[C_IOC] += 1
            counters[C_IOC_QTY] += q
        else:
            if mkt[k] != 0 and opp_n > 0:
                p = opp + s * through[k]
                counters[C_MARKETABLE] += 1
            else:
                p = r - s * dist[k]
                if opp_n > 0 and s * (p - opp) >= 0:
                    p = opp - s
                counters[C_PASSIVE] += 1
                counters[C_PASSIVE_DIST] += abs(p - r)
            if p < lad_lo[b]:
                p = lad_lo[b]
                counters[C_CLIPPED] += 1
            elif p > lad_hi[b]:
                p = lad_hi[b]
                counters[C_CLIPPED] += 1
            q = qty[k]
            out_tif[i] = TIF_GTC
            counters[C_NEW] += 1
        out_id[i] = mix64(key + np.uint64(i))
        out_side[i] = s
        out_price[i] = p
        out_qty[i] = q
        out_action[i] = ACT_NEW
        out_account[i] = account[k]

        # match against the opposite side: best level first, FIFO within a level
        while q > 0:
            if s == BUY:
                if n_ask[b] == 0 or best_ask[b] > p:
                    break
                lp = best_ask[b]
            else:
                if n_bid[b] == 0 or best_bid[b] < p:
                    break
                lp = best_bid[b]
            lvl = _level(b, lp, lad_off, lad_lo)
            h = head[lvl]
            while h != -1 and q > 0:
                f = leaves[h] if leaves[h] < q else q
                q -= f
                leaves[h] -= f
                counters[C_TRADES] += 1
                counters[C_TRADED_QTY] += f
                if leaves[h] == 0:
                    z_ = nxt[h]
                    head[lvl] = z_
                    if z_ != -1:
                        prv[z_] = -1
                    else:
                        tail[lvl] = -1
                    nr = n_rest[b] - 1
                    pos = rpos[h]
                    last = rest[rest_off[b] + nr]
                    rest[rest_off[b] + pos] = last
                    rpos[last] = pos
                    n_rest[b] = nr
                    if s == BUY:
                        n_ask[b] -= 1
                    else:
                        n_bid[b] -= 1
                    h = z_
            if head[lvl] == -1:
                if s == BUY:
                    if n_ask[b] > 0:
                        x = lp + 1
                        while head[_level(b, x, lad_off, lad_lo)] == -1:
                            x += 1
                        best_ask[b] = x
                else:
                    if n_bid[b] > 0:
                        x = lp - 1
                        while head[_level(b, x, lad_off, lad_lo)] == -1:
                            x -= 1
                        best_bid[b] = x

        if q > 0:
            if kd == GEN_IOC:
                counters[C_IOC_EXPIRED] += q
                continue
            # rest at the back of the level's queue
            lvl = _level(b, p, lad_off, lad_lo)
            leaves[i] = q
            t_ = tail[lvl]
            prv[i] = t_
            nxt[i] = -1
            if t_ != -1:
                nxt[t_] = i
            else:
                head[lvl] = i
            tail[lvl] = i
            touched[lvl] = 1
            if s == BUY:
                if n_bid[b] == 0 or p > best_bid[b]:
                    best_bid[b] = p
                n_bid[b] += 1
            else:
                if n_ask[b] == 0 or p < best_ask[b]:
                    best_ask[b] = p
                n_ask[b] += 1
            nr = n_rest[b]
            rpos[i] = nr
            rest[rest_off[b] + nr] = i
            n_rest[b] = nr + 1


@njit(cache=True)
def inverse_cdf_cpu(u, cdf, guide, out):
    """Sample a discrete distribution by inversion with a guide table (Chen & Asau).

    ``out[k] = 1 + searchsorted(cdf, u[k], side="right")``, in O(1) expected time per draw.

    Parameters
    ----------
    u : float64[m], uniforms in [0, 1).
    cdf : float64[K], non-decreasing cumulative probabilities, ``cdf[K-1] == 1.0``.
    guide : int64[G], ``guide[g] = searchsorted(cdf, g / G, side="right")``.
    out : uint32[m], output: the drawn values, 1 .. K.
    """
    ng = guide.shape[0]
    last = cdf.shape[0] - 1
    for k in range(u.shape[0]):
        x = u[k]
        g = np.int64(x * ng)
        if g >= ng:
            g = ng - 1
        j = guide[g]
        while j > 0 and cdf[j - 1] > x:
            j -= 1
        while j < last and cdf[j] <= x:
            j += 1
        out[k] = j + 1
