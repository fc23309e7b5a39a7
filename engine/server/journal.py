"""The journal: append-only segment files of checksummed records, and engine snapshots.

A record is a 24-byte header then the payload::

    magic  b"HPJ1"   kind u8 (1 orders, 2 command)   3 bytes zero
    length u32       crc32 u32 (of record number + payload)   record number u64

An orders payload is an Arrow IPC stream holding one record batch (the order-file columns the
engine matched, plus ``client_order_id``); a command payload is JSON (halt, resume, kill switch,
end of session). Segments are named ``seg-<first record number>.hpj`` and rolled past
``segment_bytes``. Snapshots are ``snap-<next record number>.pkl`` (a checksummed pickle written
to a temporary name, fsynced and renamed), so that recovery = the newest valid snapshot + the
records from its number on; only those segments are read. A snapshot also starts a new segment,
and segments wholly before the oldest snapshot kept (two) are retired: deleted, or moved to an
archive directory when one is configured.

Reading stops at the first record whose header, length or checksum is wrong: in the last
segment it is a torn write (cut off and reported); anywhere else the journal is damaged and
recovery refuses to guess (JournalError).
"""
from __future__ import annotations

import os
import pickle
import shutil
import signal
import struct
import threading
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


def segment_firsts(dirs) -> list[tuple[int, Path]]:
    """(first record number, path) of every segment in `dirs` (an archive first, then the live
    directory), sorted; a record number held twice (an archived copy of a live segment) counts
    once, the later directory's copy winning."""
    found: dict[int, Path] = {}
    for d in dirs:
        if d is not None and Path(d).is_dir():
            for p in _segments(Path(d)):
                found[int(p.stem.split("-")[1])] = p
    return sorted(found.items())


def read_records(d: str | Path, start: int = 0, repair: bool = False, archive: str | Path | None = None,
                 ) -> tuple[list[tuple[int, int, bytes]], int, Cut | None]:
    """Every valid record with number >= start: ([(recno, kind, payload)], next recno, cut).

    Only the segments that can hold records >= start are read (with their checksums); segments
    retired before a snapshot (deleted, or moved to `archive`) may be missing below `start`,
    but from the first segment read on they must follow each other without a gap.
    repair=True truncates a torn last segment at its last good record (the cut is returned
    either way); a bad record in an earlier segment raises JournalError. A journal with no
    segment at all is empty (next record 0)."""
    d = Path(d)
    segs = segment_firsts([archive, d])
    recs: list[tuple[int, int, bytes]] = []
    cut = None
    keep = [i for i in range(len(segs)) if i == len(segs) - 1 or segs[i + 1][0] > start]
    if not keep:
        return recs, 0, None
    nxt = segs[keep[0]][0]
    if nxt > start:
        raise JournalError(f"{d}: records {start} to {nxt - 1} are not in the journal (retired segments; "
                           f"the oldest segment held starts at record {nxt})")
    for i in keep:
        first, seg = segs[i]
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
        self.lock = threading.Lock()   # sync (a thread) against roll and close (another thread)
        if segs:
            self._open(segs[-1])
        else:
            self._roll()
        self.bytes_written = 0
        self.unsynced = 0
        self.crash = None              # the server's CrashHook in crash tests

    def _open(self, p: Path) -> None:
        self.path = p
        self.fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.size = os.fstat(self.fd).st_size

    def _roll(self) -> None:
        if self.fd >= 0:
            os.fsync(self.fd)
            os.close(self.fd)
            self.unsynced = 0
        self._open(self.dir / f"seg-{self.next:016d}.hpj")
        _fsync_dir(self.dir)         # the new segment's name is durable too

    def roll(self) -> None:
        """Start a new segment at the next record (at a snapshot, so that segments end where
        snapshots begin and can be retired whole); a no-op when the current one is empty."""
        with self.lock:
            if self.size:
                self._roll()

    def append(self, kind: int, payload: bytes) -> int:
        """Write one record (not yet fsynced); returns its number."""
        if self.size >= self.segment_bytes:
            with self.lock:
                self._roll()
        rec = frame(kind, self.next, payload)
        if self.crash is not None and kind == K_ORDERS and self.crash.due("torn_record"):
            os.write(self.fd, rec[:len(rec) // 2])          # crash test: a torn write, then SIGKILL
            os.fsync(self.fd)
            os.kill(os.getpid(), signal.SIGKILL)
        n = os.write(self.fd, rec)
        if n != len(rec):          # pragma: no cover - a full disk
            raise OSError(f"short write to {self.path}: {n} of {len(rec)} bytes")
        self.size += n
        self.bytes_written += n
        self.unsynced += 1
        self.next += 1
        return self.next - 1

    def sync(self) -> None:
        with self.lock:
            if self.unsynced and self.fd >= 0:
                self.unsynced = 0
                os.fsync(self.fd)

    def close(self) -> None:
        with self.lock:
            if self.fd >= 0:
                os.fsync(self.fd)
                os.close(self.fd)
                self.fd = -1


# ---- snapshots -----------------------------------------------------------------------------
def write_snapshot(d: str | Path, next_recno: int, obj, keep: int = 2, crash=None) -> Path:
    """Write ``snap-<next_recno>.pkl`` atomically (temporary name, fsync, rename, fsync of the
    directory), then delete all but the `keep` newest snapshots. `crash(point)` is the server's
    crash-test hook (None outside tests)."""
    d = Path(d)
    blob = pickle.dumps(obj, protocol=5)
    p = d / f"snap-{next_recno:016d}.pkl"
    tmp = p.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(SNAP_MAGIC + struct.pack("<IQ", zlib.crc32(blob), len(blob)) + blob)
        f.flush()
        os.fsync(f.fileno())
    if crash is not None:
        crash("snapshot_tmp")
    os.replace(tmp, p)
    _fsync_dir(d)
    for old in sorted(d.glob("snap-*.pkl"))[:-keep]:
        old.unlink()
    return p


def _fsync_dir(d: Path) -> None:
    dfd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def snapshots(d: str | Path) -> list[tuple[int, Path]]:
    """(next record number, path) of every snapshot file, newest first (not yet checked)."""
    return sorted(((int(p.stem.split("-")[1]), p) for p in Path(d).glob("snap-*.pkl")), reverse=True)


def snapshot_blob(p: Path) -> bytes | None:
    """The pickled state held by a snapshot file, or None when its magic, length or checksum is
    wrong (a damaged snapshot is skipped, never loaded)."""
    try:
        data = p.read_bytes()
    except OSError:
        return None
    if len(data) < 16 or data[:4] != SNAP_MAGIC:
        return None
    crc, n = struct.unpack_from("<IQ", data, 4)
    blob = data[16:]
    if len(blob) != n or zlib.crc32(blob) != crc:
        return None
    return blob


def latest_snapshot(d: str | Path) -> tuple[int, object] | None:
    """(next record number, object) of the newest snapshot whose checksum holds, or None."""
    for recno, p in snapshots(d):
        blob = snapshot_blob(p)
        if blob is not None:
            return recno, pickle.loads(blob)
    return None


def retire_segments(d: str | Path, before: int, archive: str | Path | None = None) -> list[Path]:
    """Delete (or move into `archive`) every segment all of whose records are numbered below
    `before` (the oldest snapshot kept); the newest segment always stays. Oldest first, so that
    a crash midway leaves a journal that still starts with a contiguous run of segments.
    Returns the segments retired."""
    d = Path(d)
    segs = _segments(d)
    firsts = [int(p.stem.split("-")[1]) for p in segs]
    out = []
    for i in range(len(segs) - 1):
        if firsts[i + 1] > before:
            break
        if archive is not None:
            a = Path(archive)
            a.mkdir(parents=True, exist_ok=True)
            shutil.copy2(segs[i], a / segs[i].name)       # copy + fsync, then unlink: never lost
            with open(a / segs[i].name, "rb") as f:
                os.fsync(f.fileno())
            _fsync_dir(a)
        segs[i].unlink()
        out.append(segs[i])
    if out:
        _fsync_dir(d)
    return out


def iter_batches(d: str | Path) -> Iterator[tuple[int, int, object]]:
    """(recno, kind, RecordBatch or command dict) of every valid record, for offline replay."""
    import json
    recs, _n, _cut = read_records(d)
    for recno, kind, payload in recs:
        yield recno, kind, decode_batch(payload) if kind == K_ORDERS else json.loads(payload)
