"""Exact wide integer arithmetic for kernels (no floats): the 64 x 64 -> 128-bit product."""
from __future__ import annotations

import numpy as np
from numba import njit

_M32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)


@njit(cache=True, inline="always")
def mul_wide_u64(a, b):
    """(hi, lo) uint64 words of the full 128-bit product a * b of two unsigned 64-bit values,
    from 32-bit limbs (portable: no 128-bit type needed)."""
    ua = np.uint64(a)
    ub = np.uint64(b)
    a0 = ua & _M32
    a1 = ua >> _S32
    b0 = ub & _M32
    b1 = ub >> _S32
    p00 = a0 * b0
    p01 = a0 * b1
    p10 = a1 * b0
    mid = (p00 >> _S32) + (p01 & _M32) + (p10 & _M32)
    lo = (p00 & _M32) | (mid << _S32)
    hi = a1 * b1 + (p01 >> _S32) + (p10 >> _S32) + (mid >> _S32)
    return hi, lo
