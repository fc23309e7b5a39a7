"""The GPU path of ``Engine.submit`` (``Engine(device="gpu")``).

Per batch: the input columns go to the device; the rows are routed to books there (a sort by
(book, row) keeps arrival order within each book); every book gets its own output region; the
CUDA driver ``match_books_cuda`` (kernels/match_cuda.py) runs one thread per book over the
shared per-row step; rows that need room stop their book with an ST_NEED_* status, the host
grows what is short and the kernel resumes those books; finally every row's outputs are
gathered back into arrival order on the device and copied to the host. Fills, events, deltas
and final books are identical to the CPU path (README, "Determinism").

One ``xp`` code path: CuPy on a real GPU, NumPy under numba's CUDA simulator (where "device"
arrays are separate NumPy copies, so the host/device hand-offs are exercised too).

Book state stays on the device between batches (``DeviceBookStore``). Anything on the host
that reads ``store.S`` (growth, new books, end_session, book_levels, book_l3) first copies it
back and makes the host copy the authoritative one; the next launch uploads it again. A stream
of submits with no growth and no new books moves only inputs and outputs.
"""
from __future__ import annotations

import time

import numpy as np

from hpte.kernels import book as K

from . import schema as Sch
from .book_state import STREAMS, BookStore, Inputs, Outputs, Rows, State
from .device import DeviceInfo

TIMING_KEYS = ("h2d", "route", "kernel", "grow", "merge", "d2h", "state_h2d", "state_d2h")


class Backend:
    """Array module and host/device transfers: CuPy on a GPU, NumPy under the simulator."""

    def __init__(self, info: DeviceInfo):
        self.simulator = info.simulator
        if info.simulator:
            self.xp = np
            self.name = "numpy (CUDA simulator)"
        else:
            import cupy
            self.xp = cupy
            self.name = "cupy"

    def to_device(self, a):
        """A device copy of host array a (always a separate buffer)."""
        if self.simulator:
            return np.array(a, copy=True, order="C")
        return self.xp.asarray(np.ascontiguousarray(a))

    def to_host(self, a) -> np.ndarray:
        if self.simulator:
            return np.array(a, copy=True)
        return self.xp.asnumpy(a)

    def sync(self) -> None:
        if not self.simulator:
            self.xp.cuda.Device().synchronize()


class DeviceBookStore(BookStore):
    """A BookStore whose state lives on the device between kernel launches.

    ``S`` (host) and ``device_state()`` (device) hand the state back and forth lazily: reading
    ``S`` copies it down if the device holds the newer copy, and makes the host the owner (the
    caller may write it); ``device_state()`` uploads it if the host holds the newer copy, and
    makes the device the owner (the kernel writes it).
    """

    def __init__(self, backend: Backend, max_levels: int = 1 << 24, init_pool: int | None = None):
        self._backend = backend
        self._host: State | None = None
        self._dev: State | None = None
        self._host_current = True
        self._device_current = False
        self.seconds = {"state_h2d": 0.0, "state_d2h": 0.0}
        self.uploads = 0
        super().__init__(max_levels=max_levels, **({} if init_pool is None else {"init_pool": init_pool}))

    @property
    def S(self) -> State:
        if not self._host_current:
            t0 = time.perf_counter()
            self._host = State(*[self._backend.to_host(a) for a in self._dev])
            self.seconds["state_d2h"] += time.perf_counter() - t0
            self._host_current = True
        self._device_current = False
        return self._host

    @S.setter
    def S(self, value: State) -> None:
        self._host = value
        self._dev = None
        self._host_current = True
        self._device_current = False

    def device_state(self) -> State:
        """The state as device arrays, for a launch (the device becomes the owner)."""
        if not self._device_current:
            t0 = time.perf_counter()
            self._dev = State(*[self._backend.to_device(a) for a in self._host])
            self._backend.sync()
            self.seconds["state_h2d"] += time.perf_counter() - t0
            self.uploads += 1
            self._device_current = True
        self._host_current = False
        return self._dev

    def reserve(self, books: np.ndarray, action: np.ndarray, at_most_double: bool = False) -> int:
        """BookStore.reserve (pre-grow pools for a batch's NEW rows), deciding from the per-book
        scalars alone so that a batch needing no growth does not pull the state off the device."""
        if books.size == 0 or self.n_books == 0:
            return 0
        bk = self._bk()
        new_rows = np.bincount(books[action == Sch.ACT_NEW], minlength=bk.shape[0])
        if not ((new_rows > bk[:, K.F_PCAP] - bk[:, K.F_NREST] - bk[:, K.F_NSTOP]).any()
                or ((new_rows > 0) & (bk[:, K.F_NLEV] == 0)).any()):
            return 0
        return super().reserve(books, action, at_most_double)

    def _bk(self):
        return self._host.bk if self._host_current else self._backend.to_host(self._dev.bk)

    @property
    def n_books(self) -> int:
        return (self._host if self._host_current else self._dev).bk.shape[0]

    def resting(self) -> int:
        bk = self._bk()
        return int(bk[:, K.F_NREST].sum()) if bk.shape[0] else 0

    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in (self._host if self._host_current else self._dev)))


def _exclusive_cumsum(xp, a, axis=0):
    c = xp.cumsum(a, axis=axis)
    return c - a


def _segments(xp, counts, total: int):
    """For t in range(total): which segment of `counts` (int64[m]) it falls in, and its offset
    inside it (segments laid back to back; empty segments are skipped)."""
    ends = xp.cumsum(counts)
    t = xp.arange(total, dtype=np.int64)
    seg = xp.searchsorted(ends, t, side="right")
    return seg, t - (ends - counts)[seg]


def alloc_outputs_xp(xp, caps) -> Outputs:
    """Device Outputs with regions of capacities caps (int64[R, 3], a device array)."""
    starts = _exclusive_cumsum(xp, caps)
    totals = [int(x) for x in caps.sum(axis=0)] if caps.shape[0] else [0, 0, 0]
    arrays = {f: xp.empty((totals[k], len(cols)), dtype=np.int64) for k, (f, cols) in enumerate(STREAMS)}
    return Outputs(**arrays, cur=starts.copy(), cap=starts + caps)


def grow_outputs_xp(xp, O: Outputs, regions, need) -> Outputs:
    """O with room for at least need[j] (int64[k, 3]) more rows in region regions[j], for all j
    at once (the CPU engine's grow_outputs, vectorized over regions). Streams with room are kept."""
    starts = xp.zeros_like(O.cap)
    starts[1:] = O.cap[:-1]
    caps = O.cap - starts
    used = O.cur - starts
    new_caps = caps.copy()
    c, u = caps[regions], used[regions]
    new_caps[regions] = xp.where(c - u < need, xp.maximum(c * 2, u + need * 2 + 16), c)
    new_starts = _exclusive_cumsum(xp, new_caps)
    arrays = {}
    for k, (f, cols) in enumerate(STREAMS):
        src = getattr(O, f)
        if not bool((new_caps[:, k] != caps[:, k]).any()):
            arrays[f] = src
            continue
        dst = xp.empty((int(new_caps[:, k].sum()), len(cols)), dtype=np.int64)
        total = int(used[:, k].sum())
        if total:
            seg, off = _segments(xp, used[:, k], total)
            dst[new_starts[seg, k] + off] = src[starts[seg, k] + off]
        arrays[f] = dst
    return Outputs(**arrays, cur=new_starts + used, cap=new_starts + new_caps)


class GpuMatcher:
    """Runs Engine.submit's matching on the device; owns the engine's DeviceBookStore."""

    def __init__(self, engine, info: DeviceInfo):
        from hpte.kernels import match_cuda   # lazy: numba.cuda only when a GPU path is made

        self._kernels = match_cuda
        self.info = info
        self.backend = Backend(info)
        old = engine.store
        engine.store = DeviceBookStore(self.backend, max_levels=old.max_levels, init_pool=old.init_pool)
        self.engine = engine
        self.timings = dict.fromkeys(TIMING_KEYS, 0.0)
        self.launches = 0

    def _tick(self, key: str, t0: float) -> float:
        self.backend.sync()
        t1 = time.perf_counter()
        self.timings[key] += t1 - t0
        return t1

    def match(self, I: Inputs, books: np.ndarray, n: int):
        """Match one validated batch (host Inputs, dense book per row); (fills, events, deltas)
        as Rows on the host, in arrival order."""
        eng, B, xp = self.engine, self.backend, self.backend.xp
        store: DeviceBookStore = eng.store
        if n == 0:
            return tuple(Rows(np.empty((0, len(cols)), np.int64), cols) for _f, cols in STREAMS)
        t = time.perf_counter()
        dI = Inputs(*[B.to_device(a) for a in I])
        dbooks = B.to_device(np.asarray(books, dtype=np.int64))
        t = self._tick("h2d", t)

        # route: rows sorted by (book, row); the keys are unique, so arrival order is kept
        idx = xp.arange(n, dtype=np.int64)
        route = xp.argsort(dbooks * n + idx)
        sb = dbooks[route]
        cuts = xp.flatnonzero(sb[1:] != sb[:-1]).astype(np.int64) + 1
        lo = xp.concatenate([xp.zeros(1, np.int64), cuts])
        hi = xp.concatenate([cuts, xp.full(1, n, dtype=np.int64)])
        rows = hi - lo
        O = alloc_outputs_xp(xp, xp.stack([rows // 2 + 8, 2 * rows + 16, rows + rows // 4 + 8], axis=1))
        pos = lo.copy()
        status = xp.zeros(lo.shape[0], np.int64)
        row_start = xp.zeros((n, 3), np.int64)
        row_count = xp.zeros((n, 3), np.int64)
        t = self._tick("route", t)

        seq0, stp = np.int64(eng.seq), np.int64(eng.stp)
        while True:
            S = store.device_state()
            t = time.perf_counter()
            self._kernels.launch_match_books_cuda(dI, S, O, dbooks, route, lo, hi, pos, status,
                                                  row_start, row_count, seq0, stp)
            self.launches += 1
            todo = xp.flatnonzero(status != K.ST_OK)
            t = self._tick("kernel", t)
            if todo.shape[0] == 0:
                break
            O = self._grow(dI, I, dbooks, route, pos, status, todo, O)
            t = self._tick("grow", t)

        # arrival order: every row's outputs go where the sequential path would put them
        chunk_of = xp.empty(n, np.int64)
        chunk_of[route] = xp.searchsorted(hi, idx, side="right")
        starts = xp.zeros_like(O.cap)
        starts[1:] = O.cap[:-1]
        dev_out = []
        for k, (f, cols) in enumerate(STREAMS):
            cnt = row_count[:, k]
            total = int(cnt.sum())
            if total:
                seg, off = _segments(xp, cnt, total)
                src_start = row_start[:, k] + starts[chunk_of, k]
                dev_out.append(getattr(O, f)[src_start[seg] + off])
            else:
                dev_out.append(xp.empty((0, len(cols)), np.int64))
        t = self._tick("merge", t)
        out = tuple(Rows(B.to_host(d), cols) for d, (_f, cols) in zip(dev_out, STREAMS))
        self._tick("d2h", t)
        self.timings["state_h2d"] = store.seconds["state_h2d"]
        self.timings["state_d2h"] = store.seconds["state_d2h"]
        return out

    def _grow(self, dI: Inputs, I: Inputs, dbooks, route, pos, status, todo, O: Outputs) -> Outputs:
        """Make room for the rows the stopped books need (as Engine._grow does, all books of
        one launch at once for the output regions)."""
        eng, B, xp = self.engine, self.backend, self.backend.xp
        store: DeviceBookStore = eng.store
        st = status[todo]
        row = route[pos[todo]]
        b = dbooks[row]
        out_mask = st == K.ST_NEED_OUTPUT
        if bool(out_mask.any()):
            S = store.device_state()
            r_out, row_out, b_out = todo[out_mask], row[out_mask], b[out_mask]
            nrest = S.bk[b_out, K.F_NREST]
            if eng.stp != Sch.STP_NONE:
                m = nrest
            else:
                m = xp.minimum(xp.maximum(dI.qty[row_out], 0), nrest)
            # a good-till-date sweep due before the row: up to every order of the book expires
            nexp = S.bk[b_out, K.F_NEXP]
            x = xp.where((nexp != 0) & (dI.ts[row_out] >= nexp),
                         S.bk[b_out, K.F_NREST] + S.bk[b_out, K.F_NPARK], 0)
            # books with untriggered stops (or a NEW stop row) reserve K.stop_room: the cascade
            ns = S.bk[b_out, K.F_NSTOP]
            sk = nrest + 2 * ns + 4
            st_ = (ns != 0) | (dI.otype[row_out] >= Sch.OT_STOP)
            # icebergs' replenishments (K.ice_room): a fill and two events each
            nsl = S.bk[b_out, K.F_NSLC]
            xi = xp.where(ns != 0, nsl, xp.minimum(nsl, xp.maximum(dI.qty[row_out], 0)))
            need = xp.stack([xp.where(st_, sk, m) + xi, xp.where(st_, 8 * sk + 8, 2 * m + 4) + x + 2 * xi,
                             xp.where(st_, 3 * sk + 4, m + 3) + x], axis=1)
            O = grow_outputs_xp(xp, O, r_out, need)
            eng.grow_counts["output"] += int(r_out.shape[0])
        other = B.to_host(xp.stack([st, row, b], axis=1)[~out_mask])
        for s_k, r_k, b_k in other.tolist():
            if s_k == K.ST_NEED_POOL:
                store.grow_pool(b_k)
                eng.grow_counts["pool"] += 1
            elif s_k == K.ST_NEED_LADDER:
                if not store.ladder_for(b_k, int(I.px[r_k])):
                    dI.force[r_k] = Sch.R_PRICE_OUT_OF_RANGE
                eng.grow_counts["ladder"] += 1
            elif s_k == K.ST_NEED_ICE:
                store.ensure_icebergs()
                eng.grow_counts["icebergs"] = eng.grow_counts.get("icebergs", 0) + 1
            else:  # pragma: no cover - a kernel bug
                raise RuntimeError(f"kernel returned unknown status {s_k}")
        return O
