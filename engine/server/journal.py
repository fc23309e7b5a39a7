"""The journal: append-only segment files of checksummed records, and engine snapshots.

A record is a 24-byte header then the payload::

    magic  b"HPJ1"   kind u8 (1 orders, 2 command)   3 bytes zero
    length u32       crc32 u32 (of record number + payload)   record number u64

An orders payload is an Arrow IPC stream holding one record batch (the order-file columns the
engine matched, plus ``client_order_id``); a command payload is JSON (halt, resume, kill switch,
end of session). Segments are named ``seg-<first record number>.hpj`` and rolled past
``segment_bytes``. Snapshots are ``snap-<next record number>.pkl`` (a checksummed pickle written
to a temporary name, fsynced and renamed), so that recovery = the latest snapshot + the records
from its number on.

Reading stops at the first record whose header, length or checksum is wrong: in the last
segment it is a torn write (cut off and reported); anywhere else the journal is damaged and
recovery refuses to guess (JournalError).
"""
from __future__ import annotations

import os
import pickle
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.ipc as ipc

MAGIC = b"HPJ1"
HEADER = struct.Struct("<4sB3xIIQ")
K_ORDERS, K_COMMAND = 1, 2
SNAP_MAGIC = b"HPS1"


class JournalError(RuntimeError):
    """A journal that cannot be recovered without guessing."""


@dataclass
class Cut:
    """A torn or corrupt tail cut off at recovery."""
    segment: Path
    offset: int
    bytes_cut: int
    reason: str

    def __str__(self) -> str:
        return (f"journal: cut {self.bytes_cut} bytes at {self.segment.name} offset {self.offset} "
                f"({self.reason})")


def encode_batch(batch: pa.RecordBatch) -> bytes:
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, batch.schema) as w:
        w.write_batch(batch)
    return sink.getvalue().to_pybytes()


def decode_batch(payload: bytes) -> pa.RecordBatch:
    return ipc.open_stream(pa.py_buffer(payload)).read_next_batch()


def frame(kind: int, recno: int, payload: bytes) -> bytes:
    crc = zlib.crc32(payload, zlib.crc32(struct.pack("<Q", recno)))
    return HEADER.pack(MAGIC, kind, len(payload), crc, recno) + payload


def _segments(d: Path) -> list[Path]:
    return sorted(d.glob("seg-*.hpj"))


def _scan(data: bytes, first: int) -> tuple[list[tuple[int, int, int, int]], int, str | None]:
    """Records of one segment's bytes: ([(recno, kind, start, end)], good_end, problem)."""
    out, pos, want = [], 0, first
    while pos < len(data):
        if len(data) - pos < HEADER.size:
            return out, pos, "incomplete header"
        magic, kind, length, crc, recno = HEADER.unpack_from(data, pos)
        if magic != MAGIC or kind not in (K_ORDERS, K_COMMAND):
            return out, pos, "bad record header"
        if recno != want:
            return out, pos, f"record number {recno}, expected {want}"
        end = pos + HEADER.size + length
        if end > len(data):
            return out, pos, f"record {recno} torn ({len(data) - pos - HEADER.size} of {length} payload bytes)"
        payload = memoryview(data)[pos + HEADER.size:end]
        if zlib.crc32(payload, zlib.crc32(struct.pack("<Q", recno))) != crc:
            return out, pos, f"record {recno} checksum mismatch"
        out.append((recno, kind, pos + HEADER.size, end))
        pos, want = end, want + 1
    return out, pos, None


def read_records(d: str | Path, start: int = 0, repair: bool = False) -> tuple[list[tuple[int, int, bytes]], int, Cut | None]:
    """Every valid record with number >= start: ([(recno, kind, payload)], next recno, cut).

    repair=True truncates a torn last segment at its last good record (the cut is returned
    either way); a bad record in an earlier segment raises JournalError."""
    d = Path(d)
    segs = _segments(d)
    recs: list[tuple[int, int, bytes]] = []
    nxt, cut = 0, None
    for i, seg in enumerate(segs):
        first = int(seg.stem.split("-")[1])
        if first != nxt:
            raise JournalError(f"{seg}: starts at record {first}, expected {nxt} (a segment is missing)")
        data = seg.read_bytes()
        found, good, problem = _scan(data, first)
        if problem is not None:
            if i != len(segs) - 1:
                raise JournalError(f"{seg} offset {good}: {problem}, and later segments follow")
            cut = Cut(seg, good, len(data) - good, problem)
            if repair:
                with open(seg, "r+b") as f:
                    f.truncate(good)
                    f.flush()
                    os.fsync(f.fileno())
        for recno, kind, a, b in found:
            if recno >= start:
                recs.append((recno, kind, data[a:b]))
        nxt = first + len(found)
    return recs, nxt, cut


class JournalWriter:
    """Appends records to the current segment (os.write on an O_APPEND descriptor)."""

    def __init__(self, d: str | Path, next_recno: int, segment_bytes: int = 64 << 20):
        self.dir = Path(d)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.next = next_recno
        self.segment_bytes = segment_bytes
        segs = _segments(self.dir)
        self.fd = -1
        if segs:
            self._open(segs[-1])
        else:
            self._roll()
        self.bytes_written = 0
        self.unsynced = 0

    def _open(self, p: Path) -> None:
        self.path = p
        self.fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.size = os.fstat(self.fd).st_size

    def _roll(self) -> None:
        if self.fd >= 0:
            os.fsync(self.fd)
            os.close(self.fd)
        self._open(self.dir / f"seg-{self.next:016d}.hpj")
        dfd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dfd)            # the new segment's name is durable too
        finally:
            os.close(dfd)

    def append(self, kind: int, payload: bytes) -> int:
        """Write one record (not yet fsynced); returns its number."""
        if self.size >= self.segment_bytes:
            self._roll()
        rec = frame(kind, self.next, payload)
        n = os.write(self.fd, rec)
        if n != len(rec):          # pragma: no cover - a full disk
            raise OSError(f"short write to {self.path}: {n} of {len(rec)} bytes")
        self.size += n
        self.bytes_written += n
        self.unsynced += 1
        self.next += 1
        return self.next - 1

    def sync(self) -> None:
        if self.unsynced:
            self.unsynced = 0
            os.fsync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = -1


# ---- snapshots -----------------------------------------------------------------------------
def write_snapshot(d: str | Path, next_recno: int, obj) -> Path:
    d = Path(d)
    blob = pickle.dumps(obj, protocol=5)
    p = d / f"snap-{next_recno:016d}.pkl"
    tmp = p.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(SNAP_MAGIC + struct.pack("<IQ", zlib.crc32(blob), len(blob)) + blob)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, p)
    dfd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    for old in sorted(d.glob("snap-*.pkl"))[:-2]:      # keep the two latest
        old.unlink()
    return p


def latest_snapshot(d: str | Path) -> tuple[int, object] | None:
    """(next record number, object) of the newest snapshot whose checksum holds, or None."""
    for p in sorted(Path(d).glob("snap-*.pkl"), reverse=True):
        data = p.read_bytes()
        if len(data) < 16 or data[:4] != SNAP_MAGIC:
            continue
        crc, n = struct.unpack_from("<IQ", data, 4)
        blob = data[16:]
        if len(blob) != n or zlib.crc32(blob) != crc:
            continue
        return int(p.stem.split("-")[1]), pickle.loads(blob)
    return None


def iter_batches(d: str | Path) -> Iterator[tuple[int, int, object]]:
    """(recno, kind, RecordBatch or command dict) of every valid record, for offline replay."""
    import json
    recs, _n, _cut = read_records(d)
    for recno, kind, payload in recs:
        yield recno, kind, decode_batch(payload) if kind == K_ORDERS else json.loads(payload)
