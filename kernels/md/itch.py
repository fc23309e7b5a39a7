"""NASDAQ TotalView-ITCH 5.0 kernels: frame indexing, table-driven field decoding and encoding.

Arrays and scalars only. The message layouts live in one table in ``hpte.engine.md.itch``; the
engine flattens that table into the descriptor arrays these kernels take, so one decoder and
one encoder serve all 23 message types.

Stream framing: ``[u16 big-endian length][length bytes of message]``; the length counts the
message including its 1-byte type and excludes the prefix. ``size_by_type[t]`` is the message
size of type byte ``t`` (0 for an unknown type).

Descriptor arrays (one row per field of every type, fields of type ``t`` are rows
``f_lo[t]:f_hi[t]``):

* ``f_off`` : int64, byte offset of the field in its message (the type byte is offset 0);
* ``f_size`` : int64, field width in bytes;
* ``f_kind`` : int64, one of the ``K_*`` kinds below;
* ``f_base`` : int64, where the field's column starts in the flat buffer of its storage class
  (``K_U16`` -> ``u16``, ``K_U32`` -> ``u32``, ``K_ALPHA`` -> ``alpha``, all others -> ``i64``).
  Row ``r`` of a numeric column is element ``f_base + r``; of an alpha column, bytes
  ``f_base + r * f_size`` to ``f_base + (r + 1) * f_size``.

Decoding takes two passes: ``scan_frames_cpu`` validates the frames, counts them per type and
records their type bytes (the engine then sizes the outputs), and ``decode_frames_cpu`` writes
every field into the flat column buffers. Encoding is one pass, ``encode_frames_cpu``.
"""
from __future__ import annotations

import numpy as np
from numba import njit

# Field kinds (the engine's layout table uses these).
K_ALPHA = 0   # fixed-width ASCII, space padded on the right -> bytes
K_U16 = 1     # unsigned big-endian 2 bytes -> uint16
K_U32 = 2     # unsigned big-endian 4 bytes -> uint32
K_U64 = 3     # unsigned big-endian 8 bytes -> int64 storage (viewed as uint64 by the engine)
K_TS48 = 4    # unsigned big-endian 6 bytes, ns since midnight -> int64
K_PRICE4 = 5  # unsigned big-endian 4 bytes, 4 implied decimals -> int64
K_PRICE8 = 6  # big-endian 8 bytes, 8 implied decimals -> int64 (bit pattern kept)

# Frame scan status codes.
ST_OK = 0
ST_TRUNCATED = 1      # the last frame is incomplete (fewer bytes left than it needs)
ST_ZERO_LENGTH = 2    # a length prefix of 0
ST_UNKNOWN_TYPE = 3   # a type byte that is not an ITCH 5.0 message type
ST_BAD_LENGTH = 4     # a length prefix that differs from the type's size

WINDOW = 8192  # messages decoded per window (~256 KiB of stream: stays in L2 across the type passes)


@njit(cache=True, nogil=True)
def scan_frames_cpu(buf, start, stop, size_by_type, counts, types):
    """Walk and validate frames in ``buf[start:stop]``, counting messages per type.

    Parameters
    ----------
    buf : uint8[n], the byte stream (may be a read-only memory map).
    start, stop : int, byte range to scan; ``start`` must be a frame boundary.
    size_by_type : int64[256], message size per type byte, 0 for unknown types.
    counts : int64[256], incremented by the number of valid messages of each type.
    types : uint8[>= (stop - start) // 14 + 1], out: the type byte of each valid frame (valid
        frames are at least 14 bytes).

    Returns
    -------
    (n, pos, status) : number of valid frames, offset of the first frame not consumed (``stop``
    when all were) and an ``ST_*`` code saying why the scan stopped there.
    """
    pos = start
    n = 0
    while pos < stop:
        rem = stop - pos
        if rem < 2:
            return n, pos, ST_TRUNCATED
        length = (np.int64(buf[pos]) << 8) | np.int64(buf[pos + 1])
        if length == 0:
            return n, pos, ST_ZERO_LENGTH
        if rem < 3:
            return n, pos, ST_TRUNCATED
        t = buf[pos + 2]
        size = size_by_type[t]
        if size == 0:
            return n, pos, ST_UNKNOWN_TYPE
        if length != size:
            return n, pos, ST_BAD_LENGTH
        if rem < 2 + length:
            return n, pos, ST_TRUNCATED
        counts[t] += 1
        types[n] = t
        n += 1
        pos += 2 + length
    return n, pos, ST_OK


@njit(cache=True, nogil=True)
def frame_offset_cpu(buf, start, k):
    """Offset of the ``k``-th frame (0-based) after the frame at ``start`` (frames already
    validated by ``scan_frames_cpu``)."""
    pos = start
    for _ in range(k):
        pos += 2 + ((np.int64(buf[pos]) << 8) | np.int64(buf[pos + 1]))
    return pos


# Big-endian reads at an unsigned position: numba skips the negative-index wraparound for
# unsigned indices, which lets LLVM fuse the byte loads into one load + byte swap.
@njit(cache=True, inline="always")
def _be16(buf, p):
    return (np.int64(buf[p]) << 8) | np.int64(buf[p + np.uint64(1)])


@njit(cache=True, inline="always")
def _be32(buf, p):
    return ((np.int64(buf[p]) << 24) | (np.int64(buf[p + np.uint64(1)]) << 16)
            | (np.int64(buf[p + np.uint64(2)]) << 8) | np.int64(buf[p + np.uint64(3)]))


@njit(cache=True, inline="always")
def _be48(buf, p):
    return ((np.int64(buf[p]) << 40) | (np.int64(buf[p + np.uint64(1)]) << 32)
            | (np.int64(buf[p + np.uint64(2)]) << 24) | (np.int64(buf[p + np.uint64(3)]) << 16)
            | (np.int64(buf[p + np.uint64(4)]) << 8) | np.int64(buf[p + np.uint64(5)]))


@njit(cache=True, inline="always")
def _be64(buf, p):
    return ((np.int64(buf[p]) << 56) | (np.int64(buf[p + np.uint64(1)]) << 48)
            | (np.int64(buf[p + np.uint64(2)]) << 40) | (np.int64(buf[p + np.uint64(3)]) << 32)
            | (np.int64(buf[p + np.uint64(4)]) << 24) | (np.int64(buf[p + np.uint64(5)]) << 16)
            | (np.int64(buf[p + np.uint64(6)]) << 8) | np.int64(buf[p + np.uint64(7)]))


@njit(cache=True, nogil=True)
def decode_frames_cpu(buf, start, types, n, seq0, size_by_type, f_lo, f_hi, f_off, f_size, f_kind,
                      f_base, row_lo, seq, u16, u32, i64, alpha, window):
    """Decode ``n`` validated frames from ``buf[start:]`` into flat SoA column buffers.

    The stream is taken ``window`` messages at a time: each window's messages are grouped by
    type (a counting sort of their offsets), then each field of each type present is decoded
    over the group, so the window's bytes stay in cache while the columns are written as
    sequential streams.

    Parameters
    ----------
    buf : uint8[:], the byte stream; the frames must have passed ``scan_frames_cpu``.
    start : int, offset of the first frame.
    types : uint8[>= n], the frames' type bytes (from ``scan_frames_cpu``).
    n : int, number of frames.
    seq0 : int, stream position (``seq``) of the first frame.
    size_by_type : int64[256], message size per type byte.
    f_lo, f_hi, f_off, f_size, f_kind, f_base : the field descriptors (module docstring).
    row_lo : int64[256], where each type's rows start in ``seq``.
    seq : int64[n], out: per type (``seq[row_lo[t]:row_lo[t] + count[t]]``), the messages'
        stream positions.
    u16 : uint16[:], out: the K_U16 columns.
    u32 : uint32[:], out: the K_U32 columns.
    i64 : int64[:], out: the K_U64, K_TS48, K_PRICE4 and K_PRICE8 columns.
    alpha : uint8[:], out: the K_ALPHA columns (fixed width, the bytes of the stream).
    window : int, messages per window.

    Returns
    -------
    int : index (from the first frame) of the first message with a byte >= 0x80 in an alpha
    field, or -1. All frames are decoded either way.
    """
    goff = np.empty(window, np.int64)
    gidx = np.empty(window, np.int64)
    lcount = np.zeros(256, np.int64)
    lend = np.zeros(256, np.int64)
    done = np.zeros(256, np.int64)
    frame = np.empty(256, np.int64)
    for t in range(256):
        frame[t] = size_by_type[t] + 2
    bad = np.int64(-1)
    pos = np.int64(start)
    i = 0
    while i < n:
        m = min(window, n - i)
        lcount[:] = 0
        for k in range(m):
            lcount[types[i + k]] += 1
        acc_start = 0
        for t in range(256):
            lend[t] = acc_start
            acc_start += lcount[t]
        for k in range(m):  # group the window's messages by type, stream order kept within a type
            t = types[i + k]
            q = lend[t]
            goff[q] = pos + 2
            gidx[q] = k
            lend[t] = q + 1
            pos += frame[t]
        for t in range(256):
            c = lcount[t]
            if c == 0:
                continue
            g0 = lend[t] - c
            r0 = done[t]
            sb = row_lo[t] + r0
            for r in range(c):
                seq[sb + r] = seq0 + i + gidx[g0 + r]
            for j in range(f_lo[t], f_hi[t]):
                off = np.uint64(f_off[j])
                kind = f_kind[j]
                if kind == K_U16:
                    base = np.uint64(f_base[j] + r0)
                    for r in range(c):
                        u16[base + np.uint64(r)] = _be16(buf, np.uint64(goff[g0 + r]) + off)
                elif kind == K_U32:
                    base = np.uint64(f_base[j] + r0)
                    for r in range(c):
                        u32[base + np.uint64(r)] = _be32(buf, np.uint64(goff[g0 + r]) + off)
                elif kind == K_PRICE4:
                    base = np.uint64(f_base[j] + r0)
                    for r in range(c):
                        i64[base + np.uint64(r)] = _be32(buf, np.uint64(goff[g0 + r]) + off)
                elif kind == K_TS48:
                    base = np.uint64(f_base[j] + r0)
                    for r in range(c):
                        i64[base + np.uint64(r)] = _be48(buf, np.uint64(goff[g0 + r]) + off)
                elif kind == K_U64 or kind == K_PRICE8:
                    base = np.uint64(f_base[j] + r0)
                    for r in range(c):
                        i64[base + np.uint64(r)] = _be64(buf, np.uint64(goff[g0 + r]) + off)
                else:  # K_ALPHA: copy the bytes, OR them together to spot a byte >= 0x80
                    w = f_size[j]
                    uw = np.uint64(w)
                    base = np.uint64(f_base[j] + r0 * w)
                    acc = np.uint8(0)
                    if w == 1:
                        for r in range(c):
                            ch = buf[np.uint64(goff[g0 + r]) + off]
                            alpha[base + np.uint64(r)] = ch
                            acc |= ch
                    elif w == 8:
                        for r in range(c):
                            p = np.uint64(goff[g0 + r]) + off
                            q = base + np.uint64(r) * np.uint64(8)
                            for k in range(8):
                                ch = buf[p + np.uint64(k)]
                                alpha[q + np.uint64(k)] = ch
                                acc |= ch
                    else:
                        for r in range(c):
                            p = np.uint64(goff[g0 + r]) + off
                            q = base + np.uint64(r) * uw
                            for k in range(w):
                                ch = buf[p + np.uint64(k)]
                                alpha[q + np.uint64(k)] = ch
                                acc |= ch
                    if acc >= 0x80:
                        for r in range(c):
                            p = np.uint64(goff[g0 + r]) + off
                            hit = False
                            for k in range(w):
                                if buf[p + np.uint64(k)] >= 0x80:
                                    hit = True
                            if hit:
                                cand = i + gidx[g0 + r]
                                if bad < 0 or cand < bad:
                                    bad = cand
                                break
            done[t] = r0 + c
        i += m
    return bad


# Big-endian writes at an unsigned position (fused into byte-swapped stores by LLVM).
@njit(cache=True, inline="always")
def _put_be(out, p, v, w):
    for k in range(w):
        out[p + np.uint64(k)] = np.uint8((v >> (8 * (w - 1 - k))) & 0xFF)


@njit(cache=True, nogil=True)
def encode_frames_cpu(out, types, rows, size_by_type, f_lo, f_hi, f_off, f_size, f_kind, f_base,
                      u16, u32, i64, alpha):
    """Write framed messages, in stream order, from flat SoA column buffers (the inverse of
    ``decode_frames_cpu``).

    Parameters
    ----------
    out : uint8[sum of frame sizes], out: the framed stream.
    types : uint8[m], the type byte of each message, in stream order.
    rows : int64[m], each message's row in its type's columns.
    size_by_type : int64[256], message size per type byte.
    f_lo, f_hi, f_off, f_size, f_kind, f_base : the field descriptors (module docstring).
    u16, u32, i64, alpha : the column buffers, values already checked to fit their fields.

    Returns
    -------
    int : number of bytes written.
    """
    pos = np.uint64(0)
    for k in range(len(types)):
        t = types[k]
        r = rows[k]
        size = size_by_type[t]
        out[pos] = np.uint8(size >> 8)
        out[pos + np.uint64(1)] = np.uint8(size & 0xFF)
        p = pos + np.uint64(2)
        out[p] = t
        for j in range(f_lo[t], f_hi[t]):
            q = p + np.uint64(f_off[j])
            kind = f_kind[j]
            if kind == K_U16:
                _put_be(out, q, np.int64(u16[f_base[j] + r]), 2)
            elif kind == K_U32:
                _put_be(out, q, np.int64(u32[f_base[j] + r]), 4)
            elif kind == K_PRICE4:
                _put_be(out, q, i64[f_base[j] + r], 4)
            elif kind == K_TS48:
                _put_be(out, q, i64[f_base[j] + r], 6)
            elif kind == K_U64 or kind == K_PRICE8:
                _put_be(out, q, i64[f_base[j] + r], 8)
            else:
                w = f_size[j]
                src = np.uint64(f_base[j] + r * w)
                for i in range(w):
                    out[q + np.uint64(i)] = alpha[src + np.uint64(i)]
        pos = p + np.uint64(size)
    return np.int64(pos)
