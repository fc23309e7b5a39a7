"""Single-producer single-consumer ring kernels over a shared-memory segment.

The ring is a fixed number of slots (``capacity``) of struct-of-arrays records: one ``uint64``
sequence column plus the user's columns, each stored as a contiguous byte region (column ``c``
occupies ``capacity * itemsize[c]`` bytes). Kernels see every column as a flat ``uint8`` array,
so one compiled kernel serves any record layout (specialised only on the number of columns).

Control block (``ctrl``, int64[CTRL_LEN]; ``seqctl`` is a uint64 view of the same bytes):

- ``C_TAIL``: records ever published by the producer (written only by the producer).
- ``C_HEAD``: records ever consumed (written only by the consumer).
- The slot of record number ``r`` is ``r % capacity``; ``tail - head`` records are in the ring,
  ``capacity - (tail - head)`` slots are free. Both counters only grow (int64: 2**63 records).

Memory ordering (the publication protocol)
------------------------------------------
The producer writes the records' slots, then stores ``tail`` with *release* semantics; the
consumer loads ``tail`` once per batch with *acquire* semantics, then reads the slots. Symmetrically
the consumer stores ``head`` (release) after it has copied the slots out, and the producer loads
``head`` (acquire) once per batch before it overwrites slots. ``load_acquire``/``store_release``
below are LLVM atomic accesses: on x86-64 (TSO: stores are not reordered with stores, loads not
with loads) they compile to plain ``mov`` instructions and only stop the compiler from moving the
slot writes past the counter store; on weakly ordered CPUs (ARM64) LLVM emits ``ldar``/``stlr``,
so the protocol stays correct there too. Nothing ever overwrites an unconsumed slot: the producer
writes at most ``capacity - (tail - head)`` records per batch.
"""
from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

# --- control block layout (int64 indices; hot counters 128 bytes apart: no false sharing) ------
C_MAGIC = 0
C_VERSION = 1
C_CAPACITY = 2
C_NCOLS = 3
C_DATA_OFFSET = 4
C_LAYOUT_LEN = 5
C_TOTAL_BYTES = 6
# producer-owned line
C_TAIL = 16
S_NEXT_SEQ = 17   # uint64 (seqctl): sequence number the next auto-numbered record gets
C_DONE = 18       # 1 once the producer said it will push no more
C_PUSHED_BATCHES = 19
# consumer-owned line
C_HEAD = 32
S_EXPECT_SEQ = 33  # uint64 (seqctl): sequence number the consumer expects next
C_GAPS = 34        # number of sequence discontinuities seen (and accepted)
S_GAP_GOT = 35     # uint64 (seqctl): sequence number found where S_EXPECT_SEQ was expected
CTRL_LEN = 64      # 512 bytes

POP_GAP = -1       # ring_pop_cpu: the first available record breaks the sequence


# --- intrinsics: atomic acquire/release accesses and a byte memcpy ------------------------------
def _int_array_1d(arr) -> bool:
    return isinstance(arr, types.Array) and arr.ndim == 1 and isinstance(arr.dtype, types.Integer)


@intrinsic
def load_acquire(typingctx, arr, idx):
    """``arr[idx]`` as an atomic load with acquire ordering (1-D integer array)."""
    if not (_int_array_1d(arr) and isinstance(idx, types.Integer)):
        return None
    sig = arr.dtype(arr, types.intp)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]], wraparound=False)
        align = context.get_abi_sizeof(context.get_data_type(aryty.dtype))
        return builder.load_atomic(ptr, "acquire", align)

    return sig, codegen


@intrinsic
def store_release(typingctx, arr, idx, val):
    """``arr[idx] = val`` as an atomic store with release ordering (1-D integer array)."""
    if not (_int_array_1d(arr) and isinstance(idx, types.Integer)):
        return None
    sig = types.void(arr, types.intp, arr.dtype)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]], wraparound=False)
        align = context.get_abi_sizeof(context.get_data_type(aryty.dtype))
        builder.store_atomic(args[2], ptr, "release", align)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def memcpy_bytes(typingctx, dst, doff, src, soff, nbytes):
    """Copy ``nbytes`` bytes ``src[soff:]`` -> ``dst[doff:]`` (uint8 arrays, no overlap, no checks)."""
    if not (isinstance(dst, types.Array) and isinstance(src, types.Array)
            and dst.dtype == types.uint8 and src.dtype == types.uint8
            and dst.ndim == 1 and src.ndim == 1 and dst.layout == "C" and src.layout == "C"):
        return None
    sig = types.void(dst, types.intp, src, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        d = context.make_array(signature.args[0])(context, builder, args[0])
        s = context.make_array(signature.args[2])(context, builder, args[2])
        cgutils.raw_memcpy(builder, builder.gep(d.data, [args[1]]), builder.gep(s.data, [args[3]]), args[4], 1)
        return context.get_dummy_value()

    return sig, codegen


# --- kernels ----------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def ring_load_cpu(ctrl, idx):
    """Acquire-load ``ctrl[idx]`` (for the Python side's waits: head, tail, done)."""
    return load_acquire(ctrl, idx)


@njit(cache=True, nogil=True)
def ring_store_cpu(ctrl, idx, value):
    """Release-store ``ctrl[idx] = value`` (for the producer's done flag)."""
    store_release(ctrl, idx, value)


@njit(cache=True, nogil=True)
def ring_push_cpu(ctrl, seqctl, ring_seq, ring_cols, itemsizes, batch_seq, batch_cols,
                  start, n, has_seq, all_or_nothing):
    """Publish records ``[start, start + n)`` of a batch into the ring, as many as fit.

    Parameters
    ----------
    ctrl : int64[CTRL_LEN], the ring's control block (shared memory)
    seqctl : uint64[CTRL_LEN], the same bytes viewed as uint64 (sequence fields)
    ring_seq : uint64[capacity], the ring's sequence column
    ring_cols : tuple of uint8[capacity * itemsize[c]], the ring's column regions
    itemsizes : int64[ncols], bytes per value of each column
    batch_seq : uint64[>= start + n], caller's sequence numbers (read only when ``has_seq``)
    batch_cols : tuple of uint8[rows * itemsize[c]], the batch's columns as raw bytes
    start, n : int, first batch row and number of rows to publish
    has_seq : bool, take sequence numbers from ``batch_seq``; else number the records
        consecutively from ``seqctl[S_NEXT_SEQ]``
    all_or_nothing : bool, publish nothing unless all ``n`` records fit

    Returns
    -------
    int, records published (0 .. n); the producer's tail advanced by that much.
    """
    cap = ctrl[C_CAPACITY]
    tail = ctrl[C_TAIL]                      # producer-owned: plain load
    head = load_acquire(ctrl, C_HEAD)        # once per batch
    free = cap - (tail - head)
    m = n if n < free else free
    if m <= 0 or (all_or_nothing and m < n):
        return 0
    slot = tail % cap
    first = m if m < cap - slot else cap - slot   # records before the wrap
    second = m - first
    if has_seq:
        for k in range(first):
            ring_seq[slot + k] = batch_seq[start + k]
        for k in range(second):
            ring_seq[k] = batch_seq[start + first + k]
        last = batch_seq[start + m - 1]
    else:
        s0 = seqctl[S_NEXT_SEQ]
        for k in range(first):
            ring_seq[slot + k] = s0 + np.uint64(k)
        for k in range(second):
            ring_seq[k] = s0 + np.uint64(first + k)
        last = s0 + np.uint64(m - 1)
    seqctl[S_NEXT_SEQ] = last + np.uint64(1)
    for c in range(len(ring_cols)):
        sz = itemsizes[c]
        memcpy_bytes(ring_cols[c], slot * sz, batch_cols[c], start * sz, first * sz)
        if second:
            memcpy_bytes(ring_cols[c], 0, batch_cols[c], (start + first) * sz, second * sz)
    ctrl[C_PUSHED_BATCHES] += 1
    store_release(ctrl, C_TAIL, tail + m)    # publish: records first, then the counter
    return m


@njit(cache=True, nogil=True)
def ring_pop_cpu(ctrl, seqctl, ring_seq, ring_cols, itemsizes, out_seq, out_cols, max_n, stop_on_gap):
    """Consume up to ``max_n`` records into preallocated outputs, checking the sequence.

    Parameters
    ----------
    ctrl, seqctl, ring_seq, ring_cols, itemsizes : as for ``ring_push_cpu``
    out_seq : uint64[>= max_n], receives the records' sequence numbers
    out_cols : tuple of uint8[>= max_n * itemsize[c]], receive the columns' bytes
    max_n : int, most records to consume
    stop_on_gap : bool, stop before the first record whose sequence number is not the expected
        one (``seqctl[S_EXPECT_SEQ]``); when that is the very first record, consume nothing,
        store the number found in ``seqctl[S_GAP_GOT]`` and return ``POP_GAP``. When False, count
        the discontinuity in ``ctrl[C_GAPS]``, resynchronise on the number found and go on.

    Returns
    -------
    int, records consumed (0 .. max_n), or ``POP_GAP``.
    """
    cap = ctrl[C_CAPACITY]
    head = ctrl[C_HEAD]                      # consumer-owned: plain load
    tail = load_acquire(ctrl, C_TAIL)        # once per batch
    avail = tail - head
    m = avail if avail < max_n else max_n
    if m <= 0:
        return 0
    slot = head % cap
    first = m if m < cap - slot else cap - slot
    expect = seqctl[S_EXPECT_SEQ]
    k = 0
    gaps = 0
    while k < m:
        pos = slot + k if k < first else k - first
        s = ring_seq[pos]
        if s != expect:
            if stop_on_gap:
                if k == 0:
                    seqctl[S_GAP_GOT] = s
                    return POP_GAP
                break
            gaps += 1
            seqctl[S_GAP_GOT] = s
        out_seq[k] = s
        expect = s + np.uint64(1)
        k += 1
    m = k
    first = m if m < first else first
    second = m - first
    for c in range(len(ring_cols)):
        sz = itemsizes[c]
        memcpy_bytes(out_cols[c], 0, ring_cols[c], slot * sz, first * sz)
        if second:
            memcpy_bytes(out_cols[c], first * sz, ring_cols[c], 0, second * sz)
    seqctl[S_EXPECT_SEQ] = expect
    if gaps:
        ctrl[C_GAPS] += gaps
    store_release(ctrl, C_HEAD, head + m)    # release the slots after copying them out
    return m
