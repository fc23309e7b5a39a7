"""A single-producer single-consumer ring of SoA records in shared memory, for streaming batches
between processes (a feed handler to an engine, an engine to a publisher).

One process creates the ring (``Ring.create``) and usually also produces or consumes; the other
attaches by name (``Ring.attach``). Exactly one producer and one consumer at a time: the counters
are not safe for two writers on one side.

Records
-------
A ring carries fixed-size records given as (name, dtype) columns (numeric dtypes), e.g. the names
and dtypes of ``schema.ORDER_COLUMNS``. Every record also carries a ``uint64`` sequence number in
the column ``seq``: the producer either passes its own (a column ``seq`` in the batch, e.g. the
exchange's or the sequencer's numbers) or lets the ring number records consecutively from
``first_seq``. The consumer expects each record's ``seq`` to be the previous one plus one and
detects any discontinuity (gap, repeat, reorder):

- ``on_gap="raise"`` (default): ``pop`` returns the records before the gap; the next ``pop`` raises
  ``RingGapError`` (``expected``, ``got``) without consuming anything. ``skip_gap()`` accepts the
  discontinuity (counted in ``gaps``) and consumption continues from the record found.
- ``on_gap="count"``: discontinuities are counted in ``gaps`` and consumption goes on.

Full-buffer policy (the producer's side; nothing is ever overwritten)
------------------------------------------------------------------
- ``policy="block"``: ``push`` publishes what fits and waits for the consumer to free slots, for at
  most ``timeout`` seconds of no completion; then ``RingTimeoutError`` (a ``RingFullError`` and a
  ``TimeoutError``) saying how many records of the batch were published (``err.pushed``).
- ``policy="fail"``: ``push`` publishes the whole batch or nothing and raises ``RingFullError``
  when it does not fit now.
- ``try_push`` never waits and never raises for a full ring: it publishes what fits and returns
  the count.

Memory ordering: records are written before the tail counter is stored with release semantics,
and the tail is loaded once per batch with acquire semantics (see ``hpte.kernels.md.ring``); plain
ordered stores suffice on x86-64, and the atomics keep it correct on ARM64.

Segment layout: a 4096-byte header (control block: 64 int64 counters with the producer's and
consumer's hot counters on separate cache lines; then the record layout as JSON), then the ``seq``
column and each user column as a contiguous region of ``capacity * itemsize`` bytes, 64-byte aligned.

Lifetime: the creating handle owns the segment: ``unlink()`` removes it (its context manager exit
closes and unlinks; an attaching handle's exit only closes). Python's resource tracker cleans up a
segment whose creator died without unlinking it; attaching handles are deliberately untracked so
that their exit does not destroy the creator's segment (Python < 3.13 tracks attachers too).
"""
from __future__ import annotations

import json
import sys
import threading
import time
from contextlib import contextmanager
from multiprocessing import shared_memory
from typing import Iterator, Mapping

import numpy as np

from hpte.kernels.md import ring as K
from hpte.engine.io import InputError, cast_checked

MAGIC = 0x4852_5450_4752_4E49  # arbitrary tag
VERSION = 1
HEADER_BYTES = 4096
_LAYOUT_OFFSET = K.CTRL_LEN * 8
_ALIGN = 64
POLICIES = ("block", "fail")
ON_GAP = ("raise", "count")
_NUMERIC_KINDS = "biuf"


class RingError(RuntimeError):
    """Misuse of a ring or a bad segment: the message names the ring and the remedy."""


class RingFullError(RingError):
    """The ring had no room for the batch (policy 'fail'), or stayed full (policy 'block')."""

    def __init__(self, msg: str, pushed: int = 0):
        super().__init__(msg)
        self.pushed = pushed


class RingTimeoutError(RingFullError, TimeoutError):
    """Policy 'block': the consumer freed no room within the timeout."""


class RingGapError(RingError):
    """The next record's sequence number is not the expected one."""

    def __init__(self, msg: str, expected: int, got: int):
        super().__init__(msg)
        self.expected = expected
        self.got = got


# --- layout -------------------------------------------------------------------------------------
def normalize_columns(columns) -> list[tuple[str, np.dtype]]:
    """(name, dtype) pairs from a column list ((name, dtype, ...) tuples) or a structured dtype."""
    if isinstance(columns, np.dtype):
        if not columns.names:
            raise RingError("columns: a structured dtype needs named fields")
        pairs = [(n, columns.fields[n][0]) for n in columns.names]
    else:
        pairs = []
        for c in columns:
            if not isinstance(c, (tuple, list)) or len(c) < 2:
                raise RingError(f"columns: expected (name, dtype) pairs, got {c!r}")
            pairs.append((c[0], c[1]))
    out: list[tuple[str, np.dtype]] = []
    seen = set()
    for name, dt in pairs:
        if not isinstance(name, str) or not name or len(name) > 64:
            raise RingError(f"columns: bad column name {name!r} (a non-empty string of at most 64 characters)")
        if name in seen:
            raise RingError(f"columns: duplicate column {name!r}")
        seen.add(name)
        try:
            dt = np.dtype(dt)
        except TypeError as e:
            raise RingError(f"columns: column {name!r} has no numpy dtype ({e})") from None
        if dt.kind not in _NUMERIC_KINDS or dt.shape or dt.itemsize > 16:
            raise RingError(f"columns: column {name!r} has dtype {dt}; use a fixed-size numeric dtype (bool, int, uint, float)")
        dt = dt.newbyteorder("=")
        if name == "seq" and dt != np.uint64:
            raise RingError(f"columns: 'seq' is the ring's sequence column and must be uint64, not {dt}")
        out.append((name, dt))
    if not [n for n, _ in out if n != "seq"]:
        raise RingError("columns: a ring needs at least one column besides 'seq'")
    return out


def _round_up(x: int, a: int = _ALIGN) -> int:
    return (x + a - 1) // a * a


def _segment_size(capacity: int, cols: list[tuple[str, np.dtype]]) -> int:
    size = HEADER_BYTES + _round_up(capacity * 8)
    for name, dt in cols:
        if name != "seq":
            size += _round_up(capacity * dt.itemsize)
    return size


# --- shared-memory tracking ---------------------------------------------------------------------
_track_lock = threading.Lock()


@contextmanager
def _untracked():
    """Keep Python < 3.13's resource tracker out of an attacher's open/unlink (bpo-39959)."""
    from multiprocessing import resource_tracker

    with _track_lock:
        reg, unreg = resource_tracker.register, resource_tracker.unregister

        def _reg(name, rtype):
            if rtype != "shared_memory":
                reg(name, rtype)

        def _unreg(name, rtype):
            if rtype != "shared_memory":
                unreg(name, rtype)

        resource_tracker.register, resource_tracker.unregister = _reg, _unreg
        try:
            yield
        finally:
            resource_tracker.register, resource_tracker.unregister = reg, unreg


def _open_untracked(name: str) -> shared_memory.SharedMemory:
    if sys.version_info >= (3, 13):
        return shared_memory.SharedMemory(name=name, track=False)
    with _untracked():
        return shared_memory.SharedMemory(name=name)


class _Backoff:
    """Spin, then yield, then sleep (up to 1 ms) while waiting on the other process."""

    __slots__ = ("n",)

    def __init__(self):
        self.n = 0

    def __call__(self) -> None:
        self.n += 1
        if self.n <= 64:
            return
        if self.n <= 256:
            time.sleep(0)
        else:
            time.sleep(min(1e-3, 2e-5 * (1 << min(self.n - 256, 6))))


class Ring:
    """A shared-memory SPSC ring of SoA records; build with ``Ring.create`` or ``Ring.attach``."""

    def __init__(self, shm: shared_memory.SharedMemory, *, owner: bool, policy: str, timeout: float,
                 on_gap: str):
        if policy not in POLICIES:
            raise RingError(f"policy {policy!r}: use one of {POLICIES}")
        if on_gap not in ON_GAP:
            raise RingError(f"on_gap {on_gap!r}: use one of {ON_GAP}")
        if not (timeout > 0):
            raise RingError(f"timeout {timeout!r}: must be a positive number of seconds")
        self._shm = shm
        self._owner = owner
        self.policy = policy
        self.timeout = float(timeout)
        self.on_gap = on_gap
        self._unlinked = False
        buf = shm.buf
        self._ctrl = np.frombuffer(buf, dtype=np.int64, count=K.CTRL_LEN, offset=0)
        self._seqctl = np.frombuffer(buf, dtype=np.uint64, count=K.CTRL_LEN, offset=0)
        if int(self._ctrl[K.C_MAGIC]) != MAGIC:
            self._release_views()
            raise RingError(f"shared memory {shm.name!r} is not an hpte ring (or its creator has not finished creating it)")
        if int(self._ctrl[K.C_VERSION]) != VERSION:
            v = int(self._ctrl[K.C_VERSION])
            self._release_views()
            raise RingError(f"ring {shm.name!r} has layout version {v}; this hpte reads version {VERSION}")
        nlay = int(self._ctrl[K.C_LAYOUT_LEN])
        layout = json.loads(bytes(buf[_LAYOUT_OFFSET:_LAYOUT_OFFSET + nlay]).decode())
        self.capacity = int(self._ctrl[K.C_CAPACITY])
        self.columns: list[tuple[str, np.dtype]] = [(n, np.dtype(d)) for n, d in layout["columns"]]
        self._user = [(n, d) for n, d in self.columns if n != "seq"]
        self._seq_declared = any(n == "seq" for n, _ in self.columns)
        off = HEADER_BYTES
        cap = self.capacity
        self._ring_seq = np.frombuffer(buf, dtype=np.uint64, count=cap, offset=off)
        off += _round_up(cap * 8)
        regions = []
        for _, dt in self._user:
            regions.append(np.frombuffer(buf, dtype=np.uint8, count=cap * dt.itemsize, offset=off))
            off += _round_up(cap * dt.itemsize)
        self._ring_cols = tuple(regions)
        self._itemsizes = np.array([dt.itemsize for _, dt in self._user], dtype=np.int64)
        self._no_seq = np.empty(0, dtype=np.uint64)

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def create(cls, name: str, capacity: int, columns, *, policy: str = "block", timeout: float = 10.0,
               on_gap: str = "raise", first_seq: int = 0) -> "Ring":
        """Create the shared segment ``name`` holding ``capacity`` records of ``columns``.

        ``columns``: (name, dtype) pairs (longer tuples such as schema.ORDER_COLUMNS' are fine) or
        a structured dtype. ``first_seq``: the sequence number the consumer expects first (and the
        first one the ring assigns when the producer passes none).
        """
        if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)) or capacity < 1:
            raise RingError(f"capacity {capacity!r}: must be a positive integer number of records")
        capacity = int(capacity)
        if not (0 <= int(first_seq) < 2**64):
            raise RingError(f"first_seq {first_seq!r}: must fit uint64")
        cols = normalize_columns(columns)
        layout = json.dumps({"columns": [[n, dt.str] for n, dt in cols]}).encode()
        if len(layout) > HEADER_BYTES - _LAYOUT_OFFSET:
            raise RingError(f"columns: layout of {len(cols)} columns too long for the ring header; use fewer or shorter names")
        size = _segment_size(capacity, cols)
        try:
            shm = shared_memory.SharedMemory(name=name, create=True, size=size)
        except FileExistsError:
            raise RingError(f"ring {name!r} already exists: attach to it, or unlink it first") from None
        except (OSError, ValueError) as e:
            raise RingError(f"ring {name!r}: cannot create a shared segment of {size} bytes ({e})") from None
        ctrl = np.frombuffer(shm.buf, dtype=np.int64, count=K.CTRL_LEN)
        seqctl = np.frombuffer(shm.buf, dtype=np.uint64, count=K.CTRL_LEN)
        ctrl[:] = 0
        shm.buf[_LAYOUT_OFFSET:_LAYOUT_OFFSET + len(layout)] = layout
        ctrl[K.C_VERSION] = VERSION
        ctrl[K.C_CAPACITY] = capacity
        ctrl[K.C_NCOLS] = len(cols)
        ctrl[K.C_DATA_OFFSET] = HEADER_BYTES
        ctrl[K.C_LAYOUT_LEN] = len(layout)
        ctrl[K.C_TOTAL_BYTES] = size
        seqctl[K.S_NEXT_SEQ] = np.uint64(first_seq)
        seqctl[K.S_EXPECT_SEQ] = np.uint64(first_seq)
        K.ring_store_cpu(ctrl, K.C_MAGIC, MAGIC)  # last: the header is complete
        del ctrl, seqctl
        try:
            return cls(shm, owner=True, policy=policy, timeout=timeout, on_gap=on_gap)
        except BaseException:
            shm.close()
            shm.unlink()
            raise

    @classmethod
    def attach(cls, name: str, *, policy: str = "block", timeout: float = 10.0, on_gap: str = "raise") -> "Ring":
        """Attach to the existing ring ``name`` (created by this or another process)."""
        try:
            shm = _open_untracked(name)
        except FileNotFoundError:
            raise RingError(f"ring {name!r} does not exist (create it first)") from None
        except (OSError, ValueError) as e:
            raise RingError(f"ring {name!r}: cannot attach ({e})") from None
        if shm.size < HEADER_BYTES:
            shm.close()
            raise RingError(f"shared memory {name!r} is too small to be an hpte ring")
        try:
            return cls(shm, owner=False, policy=policy, timeout=timeout, on_gap=on_gap)
        except BaseException:
            shm.close()
            raise

    # --- state ---------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._ctrl is None:
            raise RingError("ring is closed")

    @property
    def name(self) -> str:
        return self._shm.name

    @property
    def head(self) -> int:
        """Records consumed so far."""
        self._check_open()
        return int(K.ring_load_cpu(self._ctrl, K.C_HEAD))

    @property
    def tail(self) -> int:
        """Records published so far."""
        self._check_open()
        return int(K.ring_load_cpu(self._ctrl, K.C_TAIL))

    def __len__(self) -> int:
        """Records in the ring now (published, not yet consumed)."""
        self._check_open()
        return int(K.ring_load_cpu(self._ctrl, K.C_TAIL)) - int(K.ring_load_cpu(self._ctrl, K.C_HEAD))

    @property
    def free(self) -> int:
        return self.capacity - len(self)

    @property
    def gaps(self) -> int:
        """Sequence discontinuities accepted so far (``skip_gap`` or on_gap='count')."""
        self._check_open()
        return int(self._ctrl[K.C_GAPS])

    @property
    def expected_seq(self) -> int:
        """The sequence number the consumer expects next."""
        self._check_open()
        return int(self._seqctl[K.S_EXPECT_SEQ])

    @property
    def done(self) -> bool:
        """The producer called ``finish()``: nothing more will be pushed."""
        self._check_open()
        return bool(K.ring_load_cpu(self._ctrl, K.C_DONE))

    @property
    def finished(self) -> bool:
        """``done`` and every record consumed."""
        return self.done and len(self) == 0

    # --- producer ------------------------------------------------------------------------------
    def _batch(self, cols) -> tuple[int, np.ndarray, tuple[np.ndarray, ...], bool]:
        if isinstance(cols, np.ndarray) and cols.dtype.names:
            names = set(cols.dtype.names)
            get = cols.__getitem__
        elif isinstance(cols, Mapping):
            names = set(cols.keys())
            get = cols.__getitem__
        else:
            raise RingError(f"push: expected a mapping of columns or a structured array, not {type(cols).__name__}")
        n = None
        raw = []
        for name, dt in self._user:
            if name not in names:
                raise RingError(f"push: missing column {name!r} (ring {self.name!r} carries {[c for c, _ in self.columns]})")
            a = self._column(get(name), dt, name)
            if n is None:
                n = len(a)
            elif len(a) != n:
                raise RingError(f"push: column {name!r} has {len(a)} rows, expected {n}")
            raw.append(a.view(np.uint8))
        has_seq = "seq" in names
        if self._seq_declared and not has_seq:
            raise RingError("push: missing column 'seq' (the ring was created with a 'seq' column: pass the sequence numbers)")
        seq = self._no_seq
        if has_seq:
            seq = self._column(get("seq"), np.dtype(np.uint64), "seq")
            if len(seq) != n:
                raise RingError(f"push: column 'seq' has {len(seq)} rows, expected {n}")
        return n, seq, tuple(raw), has_seq

    @staticmethod
    def _column(a, dt: np.dtype, name: str) -> np.ndarray:
        a = np.asarray(a)
        if a.ndim != 1:
            raise RingError(f"push: column {name!r} must be one-dimensional, got shape {a.shape}")
        if a.dtype != dt:
            if dt.kind in "iub" and a.dtype.kind in "iub":
                try:
                    a = cast_checked(a, dt, name)
                except InputError as e:
                    raise RingError(f"push: {e}") from None
            elif np.can_cast(a.dtype, dt, "safe"):
                a = a.astype(dt)
            else:
                raise RingError(f"push: column {name!r} has dtype {a.dtype}, expected {dt}")
        return np.ascontiguousarray(a)

    def _push_kernel(self, seq, raw, has_seq, start, n, all_or_nothing) -> int:
        return int(K.ring_push_cpu(self._ctrl, self._seqctl, self._ring_seq, self._ring_cols, self._itemsizes,
                                   seq, raw, start, n, has_seq, all_or_nothing))

    def _check_producer(self) -> None:
        self._check_open()
        if self._ctrl[K.C_DONE]:
            raise RingError(f"push: ring {self.name!r} is finished (the producer called finish())")

    def try_push(self, cols) -> int:
        """Publish as many leading records of the batch as fit now; return that count (never waits)."""
        self._check_producer()
        n, seq, raw, has_seq = self._batch(cols)
        return self._push_kernel(seq, raw, has_seq, 0, n, False) if n else 0

    def push(self, cols, timeout: float | None = None) -> int:
        """Publish the whole batch under the ring's policy; return the number of records (= rows).

        cols: mapping of column name -> 1-D array (all the ring's columns; ``seq`` optional unless
        the ring declares it) or a structured array. ``timeout`` overrides the ring's for 'block'.
        """
        self._check_producer()
        n, seq, raw, has_seq = self._batch(cols)
        if n == 0:
            return 0
        if self.policy == "fail":
            if n > self.capacity:
                raise RingFullError(f"ring {self.name!r}: a batch of {n} records can never fit a ring of capacity "
                                    f"{self.capacity}; push smaller batches or create a larger ring")
            if self._push_kernel(seq, raw, has_seq, 0, n, True) == 0:
                raise RingFullError(f"ring {self.name!r} is full: {self.free} free slots for a batch of {n} records "
                                    "(policy 'fail': nothing was written); retry later, or use policy 'block'")
            return n
        pushed = self._push_kernel(seq, raw, has_seq, 0, n, False)
        limit = self.timeout if timeout is None else float(timeout)
        while pushed < n:
            want = min(n - pushed, max(1, self.capacity // 8))
            deadline = time.monotonic() + limit
            wait = _Backoff()
            while self.free < want:
                if time.monotonic() > deadline:
                    raise RingTimeoutError(
                        f"ring {self.name!r} stayed full for {limit:g} s (is the consumer running?); "
                        f"{pushed} of {n} records of this batch were published; raise the timeout or the capacity",
                        pushed=pushed)
                wait()
            pushed += self._push_kernel(seq, raw, has_seq, pushed, n - pushed, False)
        return n

    def finish(self) -> None:
        """Producer: no more records will be pushed (the consumer sees ``done``/``finished``)."""
        self._check_open()
        K.ring_store_cpu(self._ctrl, K.C_DONE, 1)

    # --- consumer ------------------------------------------------------------------------------
    def _wait_records(self, timeout: float | None) -> int:
        """Records available after waiting up to ``timeout`` s (None: until any or ``done``)."""
        avail = len(self)
        if avail or timeout == 0:
            return avail
        deadline = None if timeout is None else time.monotonic() + timeout
        wait = _Backoff()
        while True:
            avail = len(self)
            if avail:
                return avail
            if self.done:
                return len(self)
            if deadline is not None and time.monotonic() > deadline:
                return 0
            wait()

    def _pop_kernel(self, out_seq, out_raw, max_n) -> int:
        k = int(K.ring_pop_cpu(self._ctrl, self._seqctl, self._ring_seq, self._ring_cols, self._itemsizes,
                               out_seq, out_raw, max_n, self.on_gap == "raise"))
        if k == K.POP_GAP:
            exp, got = int(self._seqctl[K.S_EXPECT_SEQ]), int(self._seqctl[K.S_GAP_GOT])
            raise RingGapError(f"ring {self.name!r}: sequence gap: expected seq {exp}, got {got} "
                               "(records were lost, repeated or reordered upstream); call skip_gap() to go on",
                               expected=exp, got=got)
        return k

    def pop(self, max_n: int | None = None, timeout: float | None = 0.0) -> dict[str, np.ndarray]:
        """Consume up to ``max_n`` records (default: all available) as a dict of new arrays.

        The dict has ``seq`` first, then the ring's columns. ``timeout``: 0 returns at once
        (possibly no records); a number waits up to that many seconds for at least one record;
        None waits until a record arrives or the producer has finished. Raises ``RingGapError``
        at a sequence discontinuity (on_gap='raise'), having returned the records before it.
        """
        self._check_open()
        if max_n is not None and (isinstance(max_n, bool) or int(max_n) < 0):
            raise RingError(f"pop: max_n {max_n!r} must be a non-negative integer")
        avail = self._wait_records(timeout)
        m = avail if max_n is None else min(avail, int(max_n))
        out_seq = np.empty(m, dtype=np.uint64)
        outs = [np.empty(m, dtype=dt) for _, dt in self._user]
        k = self._pop_kernel(out_seq, tuple(o.view(np.uint8) for o in outs), m) if m else 0
        res = {"seq": out_seq[:k]}
        for (name, _), o in zip(self._user, outs):
            res[name] = o[:k]
        return res

    def pop_into(self, out: Mapping[str, np.ndarray], timeout: float | None = 0.0) -> int:
        """Consume into preallocated arrays (``out['seq']`` and each column, C-contiguous, exact
        dtype); at most the shortest array's length. Returns the count (no allocation)."""
        self._check_open()
        arrs = []
        for name, dt in [("seq", np.dtype(np.uint64))] + self._user:
            a = out.get(name) if isinstance(out, Mapping) else None
            if not isinstance(a, np.ndarray) or a.dtype != dt or a.ndim != 1 or not a.flags.c_contiguous \
                    or not a.flags.writeable:
                raise RingError(f"pop_into: out[{name!r}] must be a writeable C-contiguous 1-D {dt} array")
            arrs.append(a)
        cap = min(len(a) for a in arrs)
        avail = self._wait_records(timeout)
        m = min(avail, cap)
        if not m:
            return 0
        return self._pop_kernel(arrs[0], tuple(a.view(np.uint8) for a in arrs[1:]), m)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        """Batches until the producer has finished and the ring is drained."""
        while True:
            b = self.pop(timeout=None)
            if len(b["seq"]):
                yield b
            elif self.finished:
                return

    def skip_gap(self) -> None:
        """Consumer: accept the discontinuity the last RingGapError reported and go on from it."""
        self._check_open()
        self._seqctl[K.S_EXPECT_SEQ] = self._seqctl[K.S_GAP_GOT]
        self._ctrl[K.C_GAPS] += 1

    # --- lifetime ------------------------------------------------------------------------------
    def _release_views(self) -> None:
        self._ctrl = self._seqctl = None
        self._ring_seq = None
        self._ring_cols = ()

    def close(self) -> None:
        """Detach this handle (the segment stays until its creator unlinks it)."""
        if self._shm is None:
            return
        self._release_views()
        self._shm.close()

    def unlink(self) -> None:
        """Remove the shared segment's name (attached handles keep working until they close)."""
        if self._unlinked or self._shm is None:
            return
        self._unlinked = True
        try:
            if self._owner:
                self._shm.unlink()
            else:
                with _untracked():
                    self._shm.unlink()
        except FileNotFoundError:
            pass

    def __enter__(self) -> "Ring":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
        if self._owner:
            self.unlink()

    def __del__(self) -> None:
        try:
            if getattr(self, "_shm", None) is not None and getattr(self, "_ctrl", None) is not None:
                self.close()
        except Exception:  # noqa: BLE001 - never raise from a finaliser
            pass

    def __repr__(self) -> str:
        state = "closed" if self._ctrl is None else f"{len(self)}/{self.capacity} records"
        return f"Ring({self._shm.name!r}, {state}, columns={[n for n, _ in self.columns]}, policy={self.policy!r})"

