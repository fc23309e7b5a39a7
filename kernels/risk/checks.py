"""Pre-trade risk kernels: one sequential pass over a micro-batch of orders, fills applied to
positions, open-order releases. Integer ticks and lots throughout; every result is exact.

Sequential semantics: ``pretrade_check_cpu`` checks row i against the state left by rows
0..i-1 (accepted rows change the state, rejected rows change nothing), so a batch gives exactly
the verdicts of checking its rows one at a time, whatever the batch size.

Two drivers of the same checks (``check_core``): the stand-alone batch kernel
(``pretrade_check_cpu``, ``RiskEngine.check``), where an order is open from the NEW risk accepts
until a CANCEL of it passes (``pretrade_check_cpu``), fills consume it (``apply_fills_cpu``) or the
caller releases it (``release_cpu``), tracked in an open-order hash map; and the matching kernel
(``risk_row_book`` and friends, called per row by kernels/book.py ``process_row_risk``), where the
book itself is the open-order table (its pool holds leaves, side, price and the risk account
row) and a resting order's open notional counts at the price it rests at (its band price when
a band slid it).

Rows that matching would reject on its own validation (README "Validation of a row": bad action,
side, order type, tif, qty <= 0, LIMIT price <= 0, post-only on a non-resting order; a NEW whose
(symbol, order id) is open; a CANCEL/REPLACE of an order that is not open or not the row's
account's; REPLACE qty/price <= 0) are left to matching: verdict 0, no state change, no token.

Checks (first failing wins) for NEW and REPLACE: KILL_SWITCH (global or account), NOT_PERMITTED,
SYMBOL_PAUSED, RISK_OVERFLOW (price or qty > 2**62), MAX_ORDER_QTY, PRICE_COLLAR (LIMIT prices),
NO_REFERENCE_PRICE (MARKET order when a notional or credit limit applies and no reference price
exists), MAX_ORDER_NOTIONAL, RISK_OVERFLOW (notional or open notional > 2**62), MAX_OPEN_ORDERS
(NEW only), MAX_POSITION, CREDIT_LIMIT, MAX_ORDERS_PER_SECOND. CANCEL: MAX_ORDERS_PER_SECOND only.
For a REPLACE, MAX_POSITION and CREDIT_LIMIT reject only an increase (a replace that lowers the
worst-case position or the exposure always passes them).

Limits (``UNSET`` = int64 max = not applied): per-order limits use min(account's own, symbol's
own), falling back to the default when neither sets it; the engine precomputes them into each
pair row (``P_LIM``). Account-wide limits apply the account value (own or default, precomputed in
the account row) to account totals and the symbol's own value to the account's totals in that
symbol (the pair row).

Reference price of a symbol (kept doubled, ``ref2``, so a mid is exact): 2 x last trade price if
any trade, else best bid + best ask if both exist, else 2 x the static reference, else none. The
collar: |2 price - ref2| x 10,000 > bps x ref2 rejects. A MARKET order's notional uses
ceil(ref2 / 2) as its price; with no reference its notional counts as 0 when no notional or credit
limit applies.

Message rate: a token bucket per account (and per account and symbol when the symbol sets
``max_orders_per_second``) of capacity R tokens refilled at R per second over the rows' own
``ts_ns``; kept in nano-tokens (one message = 10**9), so refills are exact integers. A bucket
starts full. Every row risk passes takes one token (NEW, CANCEL, REPLACE).

Arrays (all int64 unless said; the engine allocates and owns them):

- ``acct`` : [A, NAF] per account row: ``A_*`` fields.
- ``sym`` : [S, NSF] per symbol row: ``S_*`` fields.
- ``pair`` : [A, S, NPF] per account and symbol: ``P_*`` fields (position, open quantities, cost,
  realised P&L, token bucket, permission).
- ``g`` : [NG] globals: ``G_KILL``, ``G_NMAP`` (entries in ``omap``).
- ``omap`` : [H, NMF], H a power of two: open orders, open addressing with linear probing keyed by
  (symbol row, order id), 32 bytes a slot, empty slots have ``M_KEY`` = -1, deletion by backward
  shift (no tombstones); account and symbol rows must stay below 2**31. Load at most one half: a
  NEW row stops the kernel with ``ST_MAP_FULL`` before it is checked when ``G_NMAP`` >= H / 2
  (grow with ``map_rehash_cpu`` and resume at that row).

Position accounting (average cost, exact): ``P_COST`` is the signed cost of the open position in
ticks x lots (long > 0). Adding to a position adds price x qty; closing c of |pos| lots removes
floor(|cost| x c / |pos|) (all of it when the position closes), realised P&L gets
sign(pos) x price x c - removed. Average price = cost / pos, computed at output only.
``A_ABS_COST`` = sum over symbols of |P_COST|. Gross exposure = open notional + |cost|.
Exact while |position| < 3 x 10**9 lots and every sum stays below 2**62.

The per-row step is written once, as inlined scalar functions any driver can call (the matching
kernel included): ``risk_check_row`` (pure: the verdict and what committing needs),
``risk_commit_row`` (apply a passed row), ``risk_fill_party`` (one side of a fill),
``risk_release_row`` (open quantity that went away). Drivers: ``pretrade_check_cpu`` (a batch),
``apply_fills_cpu``, ``release_cpu``, ``map_rehash_cpu``. Drivers are compiled with ``_nrt=False``
(no reference counting of the array arguments of the inlined helpers: measured 2.5x faster) and
``pretrade_check_cpu`` prefetches the map slot and the account / pair rows ``PREFETCH`` rows ahead.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

# --- reject reasons: kernels/enums.py RR_* (risk codes start at 100; R_* stay below)
RR_DEFER = 255          # internal: the row is left to matching (written out as 0)

# --- status codes -------------------------------------------------------------------------------
ST_OK = 0
ST_MAP_FULL = 1         # row i is a NEW and the open-order map is half full: grow, resume at i
ST_BAD_FILL = -1        # apply_fills_cpu: fill row i is invalid (qty, price, side); nothing applied

from hpte.kernels.enums import (  # noqa: E402,F401
    ACT_CANCEL, ACT_NEW, ACT_REPLACE, BUY, OT_LIMIT, OT_MARKET, RR_CREDIT_LIMIT, RR_KILL_SWITCH,
    RR_MAX_OPEN_ORDERS, RR_MAX_ORDER_NOTIONAL, RR_MAX_ORDER_QTY, RR_MAX_ORDERS_PER_SECOND,
    RR_MAX_POSITION, RR_NO_REFERENCE_PRICE, RR_NOT_PERMITTED, RR_PRICE_COLLAR, RR_RISK_OVERFLOW,
    RR_SYMBOL_PAUSED, SELL, TIF_DAY, TIF_GTC,
)
from hpte.kernels.int128 import mul_wide_u64  # noqa: E402

# --- limit columns (engine/risk_config.LIMIT_KEYS order) -----------------------------------------
L_MAX_ORDER_QTY = 0
L_MAX_ORDER_NOTIONAL = 1
L_PRICE_COLLAR_BPS = 2
L_MAX_POSITION = 3
L_MAX_OPEN_ORDERS = 4
L_CREDIT_LIMIT = 5
L_MAX_ORDERS_PER_SECOND = 6
NLIM = 7

# --- account row fields (acct[a, A_*]) -----------------------------------------------------------
A_KILL = 0             # 1: this account's kill switch is on
A_NOPEN = 1            # open orders
A_OPEN_NOTIONAL = 2    # sum of leaves x price over open orders
A_ABS_COST = 3         # sum over symbols of |P_COST|
A_TOKENS = 4           # token bucket, nano-tokens
A_LAST_TS = 5          # ts_ns of the bucket's last refill (INT64_MIN: never, the bucket is full)
A_LIM = 8              # A_LIM + L_*: per-order columns (0-3): the account's own value or UNSET
NAF = 16               #   (informative; the kernels read P_LIM); account-wide columns (4-6): own
                       #   value, else default, else UNSET

# --- symbol row fields (sym[s, S_*]) -------------------------------------------------------------
S_PAUSED = 0           # 1: halted / paused (SYMBOL_PAUSED)
S_LAST = 1             # last trade price (0: none yet)
S_BID = 2              # best bid (0: none)
S_ASK = 3              # best ask (0: none)
S_STATIC = 4           # static reference price (0: none)
S_LIM = 8              # S_LIM + L_*: the symbol's own value or UNSET (account-wide columns: applied
NSF = 16               #              to an account's totals in this symbol)

# --- account x symbol fields (pair[a, s, P_*]) ---------------------------------------------------
P_PERM = 0             # 1: the account may trade the symbol
P_POS = 1              # position, lots (signed)
P_OPEN_BUY = 2         # open buy quantity
P_OPEN_SELL = 3        # open sell quantity
P_NOPEN = 4            # open orders
P_OPEN_NOTIONAL = 5    # sum of leaves x price
P_COST = 6             # signed cost of the position, ticks x lots
P_REALIZED = 7         # realised P&L, ticks x lots
P_TOKENS = 8           # token bucket for the symbol's own max_orders_per_second
P_LAST_TS = 9
P_LIM = 12             # P_LIM + L_* (per-order columns 0-3 only): the limit that applies, or UNSET
NPF = 16

# --- globals (g[G_*]) ----------------------------------------------------------------------------
G_KILL = 0             # global kill switch
G_NMAP = 1             # entries in omap
G_NEED_PX = 2          # scratch: the price a row stopped with ST_NEED_LADDER needs to rest at
NG = 8

# --- open-order map fields (omap[slot, M_*]; 32 bytes a slot, two slots a cache line) -----------
M_OID = 0              # order id (uint64 bits as int64)
M_KEY = 1              # symbol row << 32 | account row (-1: empty slot)
M_LEAVES = 2           # side x leaves (signed: > 0 buy, < 0 sell)
M_PX = 3               # price used for its notional (LIMIT: its price; MARKET: the reference)
NMF = 4

PREFETCH = 16           # rows ahead whose map slot and state rows pretrade_check_cpu prefetches

UNSET = np.iinfo(np.int64).max
INT64_MIN = np.iinfo(np.int64).min
BIG = 1 << 62           # bound on prices, quantities and tracked sums
NANO = 1_000_000_000    # nano-tokens per token, and ns per second
SMALL = 1 << 31


# ---------------------------------------------------------------------------------------------
# scalar helpers (inlined)
# ---------------------------------------------------------------------------------------------
_mul_wide = mul_wide_u64  # (hi, lo) uint64 words of a * b; here 0 <= a, b < 2**63


@njit(cache=True, inline="always")
def _prod_gt(a, b, c, d):
    """a * b > c * d, exactly, for 0 <= a, b, c, d < 2**63."""
    if a < SMALL and b < SMALL and c < SMALL and d < SMALL:
        return a * b > c * d
    h1, l1 = _mul_wide(a, b)
    h2, l2 = _mul_wide(c, d)
    return h1 > h2 or (h1 == h2 and l1 > l2)


@njit(cache=True, inline="always")
def _notional(p, q):
    """p * q for 0 <= p, q <= 2**62, or -1 when the product exceeds 2**62."""
    if p < SMALL and q < SMALL:
        return p * q
    if q != 0 and p > BIG // q:
        return -1
    return p * q


@njit(cache=True, inline="always")
def _muldiv(a, b, c):
    """floor(a * b / c) for 0 <= a, 0 <= b <= c, 0 < c < 3 * 10**9 (exact; no overflow)."""
    return (a // c) * b + ((a % c) * b) // c


@njit(cache=True, inline="always")
def _ref2(sym, sr):
    """Twice the symbol's reference price (0: none)."""
    last = sym[sr, S_LAST]
    if last > 0:
        return 2 * last
    bid = sym[sr, S_BID]
    ask = sym[sr, S_ASK]
    if bid > 0 and ask > 0:
        return bid + ask
    return 2 * sym[sr, S_STATIC]


@njit(cache=True, inline="always")
def _tokens(tok, last, ts, rate):
    """Nano-tokens in a bucket of `rate` per second at time ts (rate != UNSET)."""
    cap = rate * NANO
    if last == INT64_MIN:
        return cap
    dt = ts - last
    if dt < 0:
        dt = 0
    if dt > NANO:
        dt = NANO
    t = tok + dt * rate
    return cap if t > cap else t


@intrinsic
def prefetch(typingctx, arr, i, j):
    """Hint the CPU to fetch the row ``arr[i, j]`` (``arr[i]`` for a 2-D array: pass j = -1) into
    the caches: its first cache line, and the second when the row is longer than 64 bytes (the
    account and pair rows are 128: their limit columns sit in the second line, which a row check
    reads, so fetching only the first left one miss a row). No effect on results (llvm.prefetch:
    read, high locality). C-contiguous only."""
    if not (isinstance(arr, types.Array) and arr.layout == "C" and arr.ndim >= 2
            and isinstance(i, types.Integer) and isinstance(j, types.Integer)):
        return None
    sig = types.void(arr, i, j)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        zero = context.get_constant(types.intp, 0)
        lead = 2 if aryty.ndim >= 3 else 1
        idx = [args[1]] + ([args[2]] if lead == 2 else []) + [zero] * (aryty.ndim - lead)
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, idx, wraparound=False)
        i8p = cgutils.voidptr_t
        i32 = cgutils.int32_t
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        p8 = builder.bitcast(ptr, i8p)
        builder.call(fn, [p8, i32(0), i32(3), i32(1)])
        # bytes of a row: the product of the trailing dimensions x the item size
        shape = cgutils.unpack_tuple(builder, ary.shape, aryty.ndim)
        nbytes = context.get_constant(types.intp, context.get_abi_sizeof(context.get_data_type(aryty.dtype)))
        for d in shape[lead:]:
            nbytes = builder.mul(nbytes, d)
        with builder.if_then(builder.icmp_signed(">", nbytes, context.get_constant(types.intp, 64))):
            builder.call(fn, [builder.gep(p8, [cgutils.int32_t(64)]), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, inline="always")
def _hash(sr, oid, mask):
    h = oid * -7046029254386353131 + sr * -4658895280553007687
    h ^= h >> 29
    h *= -4417276706812531889
    h ^= h >> 32
    return h & mask


@njit(cache=True, inline="always")
def map_find(omap, sr, oid):
    """Slot of (sr, oid) in omap, or of the empty slot where it would go (omap[slot, M_KEY] == -1)."""
    mask = omap.shape[0] - 1
    j = _hash(sr, oid, mask)
    while True:
        k = omap[j, M_KEY]
        if k == -1 or ((k >> 32) == sr and omap[j, M_OID] == oid):
            return j
        j = (j + 1) & mask


@njit(cache=True, inline="always")
def map_delete(omap, j):
    """Remove slot j (backward-shift deletion: later entries of the probe run move up)."""
    mask = omap.shape[0] - 1
    i = j
    while True:
        omap[i, M_KEY] = -1
        k = i
        while True:
            k = (k + 1) & mask
            key = omap[k, M_KEY]
            if key == -1:
                return
            h = _hash(key >> 32, omap[k, M_OID], mask)
            # the entry at k may stay if its home h lies cyclically in (i, k]
            if i <= k:
                stay = i < h <= k
            else:
                stay = h > i or h <= k
            if not stay:
                break
        for f in range(NMF):
            omap[i, f] = omap[k, f]
        i = k


@njit(cache=True, _nrt=False)
def map_rehash_cpu(old, new):
    """Insert every entry of `old` into the empty map `new` (a larger power of two)."""
    for j in range(old.shape[0]):
        if old[j, M_KEY] != -1:
            k = map_find(new, old[j, M_KEY] >> 32, old[j, M_OID])
            for f in range(NMF):
                new[k, f] = old[j, f]


# ---------------------------------------------------------------------------------------------
# the per-row step: check (pure) and commit (state update), usable from any driver
# ---------------------------------------------------------------------------------------------
@njit(cache=True, inline="always")
def check_core(ts, side, px, qty, action, otype, ar, sr, lv, lpx, acct, sym, pair, g):
    """The checks of a row that matching's own validation passed, against the current state;
    changes nothing. For a REPLACE: side = the order's side, lv its open quantity and lpx the
    price its open notional was recorded at. Returns (reason, d_qty, d_notional, pxu, tok_a,
    tok_p): reason 0 = pass, else an RR_* code; for a pass, the change of open quantity and
    open notional, the price recorded (pxu) and the refilled buckets."""
    d_qty = 0
    d_not = 0
    pxu = 0
    if action != ACT_CANCEL:
        if action == ACT_REPLACE:
            otype = OT_LIMIT
        # --- states
        if g[G_KILL] != 0 or acct[ar, A_KILL] != 0:
            return RR_KILL_SWITCH, 0, 0, 0, 0, 0
        if pair[ar, sr, P_PERM] == 0:
            return RR_NOT_PERMITTED, 0, 0, 0, 0, 0
        if sym[sr, S_PAUSED] != 0:
            return RR_SYMBOL_PAUSED, 0, 0, 0, 0, 0
        if qty > BIG or (otype == OT_LIMIT and px > BIG):
            return RR_RISK_OVERFLOW, 0, 0, 0, 0, 0
        # --- per-order limits
        if qty > pair[ar, sr, P_LIM + L_MAX_ORDER_QTY]:
            return RR_MAX_ORDER_QTY, 0, 0, 0, 0, 0
        ref2 = _ref2(sym, sr)
        if otype == OT_LIMIT:
            pxu = px
            bps = pair[ar, sr, P_LIM + L_PRICE_COLLAR_BPS]
            if bps != UNSET and ref2 > 0:
                dev = 2 * px - ref2
                if dev < 0:
                    dev = -dev
                if _prod_gt(dev, 10_000, bps, ref2):
                    return RR_PRICE_COLLAR, 0, 0, 0, 0, 0
        else:
            pxu = (ref2 + 1) // 2
        nlim = pair[ar, sr, P_LIM + L_MAX_ORDER_NOTIONAL]
        if pxu == 0 and (nlim != UNSET or acct[ar, A_LIM + L_CREDIT_LIMIT] != UNSET
                         or sym[sr, S_LIM + L_CREDIT_LIMIT] != UNSET):
            return RR_NO_REFERENCE_PRICE, 0, 0, 0, 0, 0
        notional = _notional(pxu, qty)
        if notional < 0:
            return RR_RISK_OVERFLOW, 0, 0, 0, 0, 0
        if notional > nlim:
            return RR_MAX_ORDER_NOTIONAL, 0, 0, 0, 0, 0
        # --- changes to the tracked sums
        if action == ACT_NEW:
            d_qty = qty
            d_not = notional
            if acct[ar, A_NOPEN] + 1 > acct[ar, A_LIM + L_MAX_OPEN_ORDERS] or \
                    pair[ar, sr, P_NOPEN] + 1 > sym[sr, S_LIM + L_MAX_OPEN_ORDERS]:
                return RR_MAX_OPEN_ORDERS, 0, 0, 0, 0, 0
        else:
            d_qty = qty - lv
            d_not = notional - lv * lpx
        if acct[ar, A_OPEN_NOTIONAL] + d_not > BIG:
            return RR_RISK_OVERFLOW, 0, 0, 0, 0, 0
        if d_qty > 0:
            plim = pair[ar, sr, P_LIM + L_MAX_POSITION]
            if side == BUY:
                ob = pair[ar, sr, P_OPEN_BUY] + d_qty
                if ob > BIG:
                    return RR_RISK_OVERFLOW, 0, 0, 0, 0, 0
                if pair[ar, sr, P_POS] + ob > plim:
                    return RR_MAX_POSITION, 0, 0, 0, 0, 0
            else:
                os_ = pair[ar, sr, P_OPEN_SELL] + d_qty
                if os_ > BIG:
                    return RR_RISK_OVERFLOW, 0, 0, 0, 0, 0
                if os_ - pair[ar, sr, P_POS] > plim:
                    return RR_MAX_POSITION, 0, 0, 0, 0, 0
        if d_not > 0:
            clim = acct[ar, A_LIM + L_CREDIT_LIMIT]
            if clim != UNSET and acct[ar, A_OPEN_NOTIONAL] + d_not > clim - acct[ar, A_ABS_COST]:
                return RR_CREDIT_LIMIT, 0, 0, 0, 0, 0
            clim = sym[sr, S_LIM + L_CREDIT_LIMIT]
            if clim != UNSET:
                c = pair[ar, sr, P_COST]
                if pair[ar, sr, P_OPEN_NOTIONAL] + d_not > clim - (c if c >= 0 else -c):
                    return RR_CREDIT_LIMIT, 0, 0, 0, 0, 0
    # --- message rate (every action)
    tok_a = 0
    rate = acct[ar, A_LIM + L_MAX_ORDERS_PER_SECOND]
    if rate != UNSET:
        tok_a = _tokens(acct[ar, A_TOKENS], acct[ar, A_LAST_TS], ts, rate)
        if tok_a < NANO:
            return RR_MAX_ORDERS_PER_SECOND, 0, 0, 0, 0, 0
    tok_p = 0
    rate = sym[sr, S_LIM + L_MAX_ORDERS_PER_SECOND]
    if rate != UNSET:
        tok_p = _tokens(pair[ar, sr, P_TOKENS], pair[ar, sr, P_LAST_TS], ts, rate)
        if tok_p < NANO:
            return RR_MAX_ORDERS_PER_SECOND, 0, 0, 0, 0, 0
    return 0, d_qty, d_not, pxu, tok_a, tok_p



@njit(cache=True, inline="always")
def risk_check_row(ts, oid, side, px, qty, action, otype, tif, post, ar, sr,
                   acct, sym, pair, g, omap):
    """Check one row against the current state; changes nothing.

    Returns (reason, slot, d_qty, d_notional, pxu, tok_a, tok_p):
    reason 0 = pass, RR_DEFER = leave to matching, else an RR_* code. For a pass, what
    ``risk_commit_row`` needs: slot (the map slot of the order, or where a NEW goes), the change of
    open quantity and open notional, the price recorded (pxu), and the refilled buckets.
    """
    # --- matching's own validation: defer
    if action == ACT_NEW:
        if (side != BUY and side != SELL) or otype > OT_MARKET or tif > TIF_DAY or qty <= 0:
            return RR_DEFER, -1, 0, 0, 0, 0, 0
        if otype == OT_LIMIT and px <= 0:
            return RR_DEFER, -1, 0, 0, 0, 0, 0
        if post != 0 and not (otype == OT_LIMIT and (tif == TIF_GTC or tif == TIF_DAY)):
            return RR_DEFER, -1, 0, 0, 0, 0, 0
        slot = map_find(omap, sr, oid)
        if omap[slot, M_KEY] != -1:
            return RR_DEFER, -1, 0, 0, 0, 0, 0
    elif action == ACT_CANCEL or action == ACT_REPLACE:
        slot = map_find(omap, sr, oid)
        if omap[slot, M_KEY] == -1 or (omap[slot, M_KEY] & 0xFFFFFFFF) != ar:
            return RR_DEFER, -1, 0, 0, 0, 0, 0
        if action == ACT_REPLACE and (qty <= 0 or px <= 0):
            return RR_DEFER, -1, 0, 0, 0, 0, 0
    else:
        return RR_DEFER, -1, 0, 0, 0, 0, 0

    if action == ACT_REPLACE:
        lv_s = omap[slot, M_LEAVES]
        side = BUY if lv_s > 0 else SELL
        lv = lv_s * side
        lpx = omap[slot, M_PX]
    else:
        lv = 0
        lpx = 0
    r, d_qty, d_not, pxu, tok_a, tok_p = check_core(ts, side, px, qty, action, otype, ar, sr, lv, lpx,
                                                    acct, sym, pair, g)
    return r, slot, d_qty, d_not, pxu, tok_a, tok_p


@njit(cache=True, inline="always")
def risk_commit_row(ts, oid, side, qty, action, ar, sr, slot, d_qty, d_not, pxu, tok_a, tok_p,
                    acct, sym, pair, g, omap):
    """Apply a row that ``risk_check_row`` passed (reason 0), with the values it returned. Nothing
    may touch ``omap`` between the two calls (the slot would move)."""
    take_token(ts, ar, sr, tok_a, tok_p, acct, sym, pair)
    if action == ACT_NEW:
        omap[slot, M_OID] = oid
        omap[slot, M_KEY] = (sr << 32) | ar
        omap[slot, M_LEAVES] = side * qty
        omap[slot, M_PX] = pxu
        g[G_NMAP] += 1
        count_open(ar, sr, 1, acct, pair)
    elif action == ACT_REPLACE:
        side = BUY if omap[slot, M_LEAVES] > 0 else SELL
        omap[slot, M_LEAVES] = side * qty
        omap[slot, M_PX] = pxu
    else:  # CANCEL: release the whole order
        side = BUY if omap[slot, M_LEAVES] > 0 else SELL
        lv = omap[slot, M_LEAVES] * side
        d_qty = -lv
        d_not = -lv * omap[slot, M_PX]
        map_delete(omap, slot)
        g[G_NMAP] -= 1
        count_open(ar, sr, -1, acct, pair)
    add_open(ar, sr, side, d_qty, d_not, acct, pair)


@njit(cache=True, inline="always")
def take_token(ts, ar, sr, tok_a, tok_p, acct, sym, pair):
    """A passed row takes one message token from the buckets that apply (refilled values)."""
    if acct[ar, A_LIM + L_MAX_ORDERS_PER_SECOND] != UNSET:
        acct[ar, A_TOKENS] = tok_a - NANO
        acct[ar, A_LAST_TS] = ts
    if sym[sr, S_LIM + L_MAX_ORDERS_PER_SECOND] != UNSET:
        pair[ar, sr, P_TOKENS] = tok_p - NANO
        pair[ar, sr, P_LAST_TS] = ts


@njit(cache=True, inline="always")
def count_open(ar, sr, d, acct, pair):
    """Open orders of account row ar (and in symbol row sr) change by d."""
    acct[ar, A_NOPEN] += d
    pair[ar, sr, P_NOPEN] += d


@njit(cache=True, inline="always")
def add_open(ar, sr, side, d_qty, d_not, acct, pair):
    """Open quantity on `side` and open notional change by d_qty lots and d_not ticks x lots."""
    if side == BUY:
        pair[ar, sr, P_OPEN_BUY] += d_qty
    else:
        pair[ar, sr, P_OPEN_SELL] += d_qty
    acct[ar, A_OPEN_NOTIONAL] += d_not
    pair[ar, sr, P_OPEN_NOTIONAL] += d_not


@njit(cache=True, inline="always")
def risk_release_row(sr, oid, q, acct, pair, g, omap):
    """Reduce the open quantity of order (sr, oid) by min(q, leaves); remove it at 0 leaves.
    Returns the quantity released (0 when the order is not open)."""
    return release_slot(map_find(omap, sr, oid), sr, q, acct, pair, g, omap)


@njit(cache=True, inline="always")
def release_slot(slot, sr, q, acct, pair, g, omap):
    """``risk_release_row`` for the order at map slot `slot` (as map_find found it)."""
    key = omap[slot, M_KEY]
    if key == -1 or q <= 0:
        return 0
    ar = key & 0xFFFFFFFF
    slv = omap[slot, M_LEAVES]
    side = BUY if slv > 0 else SELL
    lv = slv * side
    d = q if q < lv else lv
    add_open(ar, sr, side, -d, -d * omap[slot, M_PX], acct, pair)
    if d == lv:
        map_delete(omap, slot)
        g[G_NMAP] -= 1
        count_open(ar, sr, -1, acct, pair)
    else:
        omap[slot, M_LEAVES] = side * (lv - d)
    return d


@njit(cache=True, inline="always")
def risk_fill_party(sr, oid, ar, side, px, q, acct, sym, pair, g, omap):
    """One side of a fill: release q of the order's open quantity (when (sr, oid) is open and
    belongs to ar with this side) and move q lots at px into the position (average cost)."""
    fill_slot(map_find(omap, sr, oid), sr, ar, side, px, q, acct, sym, pair, g, omap)


@njit(cache=True, inline="always")
def fill_slot(slot, sr, ar, side, px, q, acct, sym, pair, g, omap):
    """``risk_fill_party`` for the order at map slot `slot` (as map_find found it)."""
    key = omap[slot, M_KEY]
    if key != -1 and (key & 0xFFFFFFFF) == ar and (omap[slot, M_LEAVES] > 0) == (side == BUY):
        release_slot(slot, sr, q, acct, pair, g, omap)
    position_move(ar, sr, side, px, q, acct, pair)


@njit(cache=True, inline="always")
def position_move(ar, sr, side, px, q, acct, pair):
    """q lots at px on `side` into the position of account row ar in symbol row sr (average
    cost, realised P&L on the part that closes)."""
    pos = pair[ar, sr, P_POS]
    cost = pair[ar, sr, P_COST]
    old_abs = cost if cost >= 0 else -cost
    if pos == 0 or (pos > 0) == (side == BUY):
        pos += side * q
        cost += side * px * q
    else:
        sp = 1 if pos > 0 else -1
        apos = pos * sp
        close = q if q < apos else apos
        removed = sp * _muldiv(old_abs, close, apos)
        pair[ar, sr, P_REALIZED] += sp * px * close - removed
        cost -= removed
        pos += side * close
        rest = q - close
        if rest > 0:
            pos = side * rest
            cost = side * px * rest
    pair[ar, sr, P_POS] = pos
    pair[ar, sr, P_COST] = cost
    acct[ar, A_ABS_COST] += (cost if cost >= 0 else -cost) - old_abs


# ---------------------------------------------------------------------------------------------
# drivers
# ---------------------------------------------------------------------------------------------
@njit(cache=True, _nrt=False)
def pretrade_check_cpu(ts, oid, side, px, qty, action, otype, tif, post, ar, sr,
                       acct, sym, pair, g, omap, reason, start):
    """Check rows start.. of a batch in order, committing each accepted row.

    Parameters
    ----------
    ts : int64[n], ns; oid : int64[n], order id bits; side : int8[n]; px : int64[n], ticks;
    qty : int64[n], lots; action, otype, tif, post : uint8[n] (schema.ORDER_COLUMNS);
    ar, sr : int64[n], account and symbol rows of acct / sym / pair;
    acct, sym, pair, g, omap : the state (module docstring), updated in place;
    reason : uint8[n], out: 0 = pass, else an RR_* code;
    start : int, first row to check.

    Returns
    -------
    (status, i): ST_OK and n when every row is done; ST_MAP_FULL and the row to resume at.
    """
    n = ts.shape[0]
    half = omap.shape[0] >> 1
    mask = omap.shape[0] - 1
    for i in range(start, n):
        k = i + PREFETCH
        if k < n:
            prefetch(omap, _hash(sr[k], oid[k], mask), -1)
            prefetch(acct, ar[k], -1)
            prefetch(pair, ar[k], sr[k])
        a = action[i]
        if a == ACT_NEW and g[G_NMAP] >= half:
            return ST_MAP_FULL, i
        r, slot, dq, dn, pxu, ta, tp = risk_check_row(
            ts[i], oid[i], side[i], px[i], qty[i], a, otype[i], tif[i], post[i], ar[i], sr[i],
            acct, sym, pair, g, omap)
        if r == 0:
            risk_commit_row(ts[i], oid[i], side[i], qty[i], a, ar[i], sr[i], slot, dq, dn, pxu,
                            ta, tp, acct, sym, pair, g, omap)
            reason[i] = 0
        elif r == RR_DEFER:
            reason[i] = 0
        else:
            reason[i] = r
    return ST_OK, n


@njit(cache=True, _nrt=False)
def apply_fills_cpu(sr, taker_oid, maker_oid, taker_ar, maker_ar, taker_side, px, qty,
                    acct, sym, pair, g, omap):
    """Apply a batch of fills to open orders and positions, all or nothing.

    Parameters
    ----------
    sr : int64[m], symbol rows; taker_oid, maker_oid : int64[m], order id bits;
    taker_ar, maker_ar : int64[m], account rows; taker_side : int8[m] (+1 buy, -1 sell; the
    maker has the other side); px : int64[m], ticks; qty : int64[m], lots.

    Returns
    -------
    (status, row): (ST_OK, m) after applying every fill; (ST_BAD_FILL, i) when fill i has
    qty <= 0, price <= 0, a side not +-1, or qty, price or their product above 2**62 (nothing
    applied). Each fill sets the symbol's last trade price.
    """
    m = px.shape[0]
    for i in range(m):
        if qty[i] <= 0 or px[i] <= 0 or qty[i] > BIG or px[i] > BIG or \
                (taker_side[i] != BUY and taker_side[i] != SELL) or _notional(px[i], qty[i]) < 0:
            return ST_BAD_FILL, i
    for i in range(m):
        s = sr[i]
        ts_ = np.int64(taker_side[i])
        risk_fill_party(s, taker_oid[i], taker_ar[i], ts_, px[i], qty[i], acct, sym, pair, g, omap)
        risk_fill_party(s, maker_oid[i], maker_ar[i], -ts_, px[i], qty[i], acct, sym, pair, g, omap)
        sym[s, S_LAST] = px[i]
    return ST_OK, m


@njit(cache=True, _nrt=False)
def release_cpu(sr, oid, q, acct, pair, g, omap, released):
    """Release open quantity: ``released[i]`` = min(q[i], leaves) of order (sr[i], oid[i]) (0 when
    it is not open). For expiries, STP cancels and decrements, and orders matching rejected."""
    for i in range(sr.shape[0]):
        released[i] = risk_release_row(sr[i], oid[i], q[i], acct, pair, g, omap)
    return sr.shape[0]


# ---------------------------------------------------------------------------------------------
# the row functions the matching kernel calls (kernels/book.py process_row_risk). There the book
# is the open-order table: its pool holds each open order's leaves, side, price (the price its
# open notional counts at: the price it rests at) and risk account row, so no map is kept. Each
# is compiled once, not inlined (inlining them at each call site of the matching step made its
# compile ~10x slower), with plain array arguments. Passing the four state arrays as data
# pointers and row counts instead (18 call arguments instead of 46) was measured in session 6:
# no change of the risk / plain ratio beyond the noise and no shorter cold compile, so it was
# taken out again (bench/RESULTS.md): the calls cost the spills around them, not their words.
# Session 7 inlined the fill (risk_fill_book's body at the fill sites, numba's IR inliner): the
# risk / plain ratio fell ~0.1-0.2 (medians of 8 alternated runs, +-0.3 each) but the cold
# compile of the risk step doubled (80 -> 154 s CPU: position_move lands in every inlined copy
# of match_taker and fill_maker), so it was reverted. Inlining the NEW / CANCEL row checks
# at their call sites as well (a second variant) gave at most ~0.1 more on the `all` flow, within
# the noise (its cold compile was not measured apart: 181 s CPU for the whole warm-up). What
# would cut the calls without
# compile cost is LLVM-level inlining of the one compiled body, which numba does not offer.
# ---------------------------------------------------------------------------------------------
@njit(cache=True, inline="always")
def risk_row_book(ts, side, px, qty, action, otype, ar, sr, lv, lpx, acct, sym, pair, g):
    """Check a row that matching's own validation passed and commit it when it passes.
    side: the order's side; lv, lpx: a CANCEL's / REPLACE's open quantity and the price it counts
    at (all scalars integers, any width). Returns (0, the price the order's open quantity now
    counts at) or (RR_* reason, 0).

    A cast of the scalars to int64 inlined at the call site, around ``_risk_row_book``: the call
    sites pass the side as int8 (a NEW's column value) or int64 (a resting order's), which
    compiled the body twice (7 s CPU each, cold); every value here fits int64 unchanged."""
    return _risk_row_book(np.int64(ts), np.int64(side), np.int64(px), np.int64(qty),
                          np.int64(action), np.int64(otype), np.int64(ar), np.int64(sr),
                          np.int64(lv), np.int64(lpx), acct, sym, pair, g)


@njit(cache=True, _nrt=False)
def _risk_row_book(ts, side, px, qty, action, otype, ar, sr, lv, lpx, acct, sym, pair, g):
    """risk_row_book with int64 scalars (compiled once, called, not inlined)."""
    r, d_qty, d_not, pxu, tok_a, tok_p = check_core(ts, side, px, qty, action, otype, ar, sr, lv, lpx,
                                                    acct, sym, pair, g)
    if r != 0:
        return r, 0
    take_token(ts, ar, sr, tok_a, tok_p, acct, sym, pair)
    if action == ACT_CANCEL:
        add_open(ar, sr, side, -lv, -lv * lpx, acct, pair)
        count_open(ar, sr, -1, acct, pair)
        return 0, 0
    if action == ACT_NEW:
        count_open(ar, sr, 1, acct, pair)
    add_open(ar, sr, side, d_qty, d_not, acct, pair)
    return 0, pxu


@njit(cache=True, _nrt=False)
def risk_fill_book(sr, tar, side, tpx, tdone, mar, mpx, mdone, px, q, acct, sym, pair):
    """A fill of q lots at px: the taker (account row tar, `side`, open quantity counted at tpx;
    tdone: nothing of it is left open) and the maker (mar, the other side, mpx, mdone): open
    quantities and positions; the symbol's last trade price."""
    risk_party_book(tar, sr, side, tpx, tdone, px, q, acct, pair)
    risk_party_book(mar, sr, -side, mpx, mdone, px, q, acct, pair)
    sym[sr, S_LAST] = px


@njit(cache=True, inline="always")
def risk_party_book(ar, sr, side, npx, done, px, q, acct, pair):
    """One party of a fill (see risk_fill_book)."""
    add_open(ar, sr, side, -q, -q * npx, acct, pair)
    if done:
        count_open(ar, sr, -1, acct, pair)
    position_move(ar, sr, side, px, q, acct, pair)


@njit(cache=True, inline="always")
def risk_release_book(ar, sr, side, q, npx, done, acct, pair):
    """q lots of an order went away without trading (expiry, STP, cancel by matching or by a
    kill switch), counted at npx; done: nothing of the order is left open. The scalars are
    cast here (int64, bool), inlined at the call site, so that ``_risk_release_book`` is compiled
    once (the call sites pass an int8 or an int64 side, a literal True or a bool: 4
    compilations before)."""
    _risk_release_book(np.int64(ar), np.int64(sr), np.int64(side), np.int64(q), np.int64(npx),
                       bool(done), acct, pair)


@njit(cache=True, _nrt=False)
def _risk_release_book(ar, sr, side, q, npx, done, acct, pair):
    """risk_release_book with int64 scalars (compiled once, called, not inlined)."""
    add_open(ar, sr, side, -q, -q * npx, acct, pair)
    if done:
        count_open(ar, sr, -1, acct, pair)


@njit(cache=True, _nrt=False)
def risk_release_many(ar, sr, side, q, npx, acct, pair):
    """risk_release_book(..., done=True) for each i (orders removed whole)."""
    for i in range(ar.shape[0]):
        add_open(ar[i], sr[i], side[i], -q[i], -q[i] * npx[i], acct, pair)
        count_open(ar[i], sr[i], -1, acct, pair)


@njit(cache=True, _nrt=False)
def risk_renotional(ar, sr, q, dpx, acct, pair):
    """q open lots now count at a price dpx ticks higher (an order resting at its band price)."""
    acct[ar, A_OPEN_NOTIONAL] += q * dpx
    pair[ar, sr, P_OPEN_NOTIONAL] += q * dpx
