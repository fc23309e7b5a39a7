"""The Engine: micro-batches of orders in, fills, order events and L2 deltas out.

    eng = Engine(stp="none")
    res = eng.submit(batch)          # dict of columns, structured array, Arrow batch or table
    res.fills, res.events, res.deltas  # dicts of numpy columns (engine/schema.py)
    eng.end_session(ts_ns)           # expires DAY orders
    eng.book_levels(depth=5), eng.book_l3()

Processing a stream in batches of any size gives exactly the outputs of processing it one
row at a time (README, "Matching semantics").
"""
from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from hpte.kernels import book as K
from hpte.kernels.match_cpu import gather_rows_cpu, match_books_cpu, match_seq_cpu
from hpte.kernels.snapshot import expire_day_cpu, l3_cpu, levels_cpu

from . import schema as S
from .book_state import (
    STREAMS, BookStore, Inputs, Rows, alloc_outputs, alloc_outputs_1, alloc_rows, grow_outputs,
    region_columns,
    region_starts,
)
from .device import resolve_device
from .io import InputError, order_columns


def _ro(a: np.ndarray) -> np.ndarray:
    """A read-only view: input columns reach the kernel with one type signature whether they
    came from Arrow (read-only, zero-copy) or from numpy (writable), so it compiles once."""
    v = a.view()
    v.flags.writeable = False
    return v


class _OneRow:
    """Reusable one-row kernel input and output buffers for Engine.submit_order."""

    def __init__(self):
        self.cols = {name: np.zeros(1, dt) for name, dt, _r, _d in S.ORDER_COLUMNS}
        self.force = np.zeros(1, np.uint8)
        c = self.cols
        self.I = Inputs(ts=_ro(c["ts_ns"]), oid=_ro(c["order_id"]), side=_ro(c["side"]),
                        px=_ro(c["price_ticks"]), qty=_ro(c["qty"]), action=_ro(c["action"]),
                        otype=_ro(c["order_type"]), tif=_ro(c["tif"]), acct=_ro(c["account"]),
                        post=_ro(c["post_only"]), force=_ro(self.force))
        self.book = np.zeros(1, np.int64)
        self.out = alloc_outputs_1(256, 512, 256)
        self.fn = None                      # the compiled entry point, once known
        self._arrays = [c[name] for name, _dt, _r, _d in S.ORDER_COLUMNS]

    def set(self, *values) -> None:
        """Store one row (in schema.ORDER_COLUMNS order); numpy refuses values that do not fit
        (OverflowError) and non-integers (TypeError/ValueError)."""
        for a, v in zip(self._arrays, values):
            if type(v) is float:
                raise TypeError(f"expected an integer, got {v!r}")
            a[0] = v
        self.force[0] = 0


class Result(NamedTuple):
    """Outputs of one call, each a dict of numpy columns in arrival order."""
    fills: dict
    events: dict
    deltas: dict


class Engine:
    """A matching engine over any number of books (one per symbol).

    Parameters
    ----------
    stp : str
        Self-trade prevention: "none", "cancel-newest", "cancel-oldest", "cancel-both",
        "decrement" (see README).
    threads : int or None
        CPU threads for batches that touch several books (books are matched in parallel,
        each book's rows in order). None = numba's default thread count; 1 = sequential.
    max_levels : int
        Most price levels (ticks) one book's ladder may span; an order that would have to rest
        further from the rest of its book is rejected with PRICE_OUT_OF_RANGE. A multiple of 4096.
    device : str
        "cpu", "gpu" or "auto" (engine/device.py resolve_device): "gpu" matches on a CUDA GPU
        (one thread per book; raises DeviceError when there is none), "auto" takes the GPU
        when there is one. ``device_info`` says what was chosen and why.
    """

    def __init__(self, stp: str = "none", threads: int | None = 1, max_levels: int = 1 << 24,
                 device: str = "cpu"):
        if stp not in S.STP_NAMES:
            raise ValueError(f"unknown stp mode {stp!r}; expected one of {', '.join(S.STP_NAMES)}")
        self.stp_name = stp
        self.stp = S.STP_NAMES[stp]
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self.threads = numba.config.NUMBA_NUM_THREADS if threads is None else min(int(threads), numba.config.NUMBA_NUM_THREADS)
        self.store = BookStore(max_levels=max_levels)
        self.seq = 0             # seq of the next input row
        self.last_ts = None
        self.grow_counts = {"pool": 0, "ladder": 0, "output": 0}
        self.device_info = resolve_device(device)
        self.device = self.device_info.kind
        self._gpu = None
        if self.device == "gpu":
            from .gpu import GpuMatcher   # lazy: numba.cuda / CuPy only on the GPU path
            self._gpu = GpuMatcher(self, self.device_info)
        self._one = None                  # preallocated one-row input/output for submit_order
        self._book_of_symbol: dict[int, int] = {}

    # ------------------------------------------------------------------------------------
    def submit(self, batch) -> Result:
        """Match one micro-batch. Structural problems (missing/mistyped columns, decreasing
        timestamps) raise InputError before anything changes; bad rows are REJECTED events."""
        c = order_columns(batch)
        n = len(c["ts_ns"])
        if n and self.last_ts is not None and c["ts_ns"][0] < self.last_ts:
            raise InputError(
                f"column 'ts_ns' row 0: timestamps must not decrease across batches "
                f"({self.last_ts} then {int(c['ts_ns'][0])})")
        books = self.store.books_for(c["symbol"], c["price_ticks"], c["action"], c["order_type"])
        # the GPU and the parallel CPU path meet books one after another: reserve in full
        parallel = self._gpu is not None or (self.threads > 1 and n > 1 and books.min() != books.max())
        self.grow_counts["reserve"] = self.grow_counts.get("reserve", 0) + self.store.reserve(
            books, c["action"], at_most_double=not parallel)
        force = np.zeros(n, np.uint8)  # written here when a row must be rejected for range
        I = Inputs(ts=_ro(c["ts_ns"]), oid=_ro(c["order_id"]), side=_ro(c["side"]),
                   px=_ro(c["price_ticks"]), qty=_ro(c["qty"]), action=_ro(c["action"]),
                   otype=_ro(c["order_type"]), tif=_ro(c["tif"]), acct=_ro(c["account"]),
                   post=_ro(c["post_only"]), force=_ro(force))
        if self._gpu is not None:
            fills, events, deltas = self._gpu.match(I, books, n)
        elif parallel:
            fills, events, deltas = self._submit_parallel(I, books, n)
        else:
            O = alloc_outputs_1(n // 2 + 256, 2 * n + 256, n + n // 4 + 256)
            pos = 0
            while True:
                st, pos = match_seq_cpu(I, self.store.S, O, books, pos, self.seq, self.stp)
                if st == K.ST_OK:
                    break
                O = self._grow(st, int(books[pos]), pos, I, O, 0)
            fills, events, deltas = region_columns(O, 0)
        self.seq += n
        if n:
            self.last_ts = int(c["ts_ns"][-1])
        return Result(fills, events, deltas)

    def submit_order(self, ts_ns: int, order_id: int, side: int, price_ticks: int, qty: int,
                     action: int = S.ACT_NEW, order_type: int = S.OT_LIMIT, tif: int = S.TIF_GTC,
                     account: int = 0, symbol: int = 0, post_only: int = 0) -> Result:
        """One order, the low-latency way: scalars in, no batch validation or allocation beyond
        the few output rows returned. Same semantics and outputs as ``submit`` of a one-row
        batch (values are range-checked the same way)."""
        one = self._one
        if one is None:
            one = self._one = _OneRow()
        try:
            one.set(ts_ns, order_id, side, price_ticks, qty, action, order_type, tif, account, symbol, post_only)
        except (OverflowError, ValueError, TypeError) as e:
            raise InputError(f"submit_order: {e}") from None
        if self.last_ts is not None and ts_ns < self.last_ts:
            raise InputError(f"ts_ns {ts_ns} is before the previous order's {self.last_ts}")
        b = self._book_of_symbol.get(symbol)
        if b is None:
            books = self.store.books_for(one.cols["symbol"], one.cols["price_ticks"], one.cols["action"], one.cols["order_type"])
            self._book_of_symbol[symbol] = b = int(books[0])
            one.book[0] = b
        else:
            one.book[0] = b
        self.store.reserve(one.book, one.cols["action"])
        O = one.out
        O.cur[0, :] = 0
        pos = 0
        while True:
            args = (one.I, self.store.S, O, one.book, pos, self.seq, self.stp)
            if one.fn is None:
                st, pos = match_seq_cpu(*args)
                # later calls skip numba's dispatch (typing ~30 arrays costs ~3.5 us a call)
                one.fn = match_seq_cpu.overloads[tuple(numba.typeof(a) for a in args)].entry_point
            else:
                st, pos = one.fn(*args)
            if st == K.ST_OK:
                break
            O = one.out = self._grow(st, b, pos, one.I, O, 0)
        self.seq += 1
        self.last_ts = ts_ns
        return Result(Rows(O.F[:O.cur[0, 0]].copy(), S.FILL_COLUMNS),
                      Rows(O.E[:O.cur[0, 1]].copy(), S.EVENT_COLUMNS),
                      Rows(O.D[:O.cur[0, 2]].copy(), S.DELTA_COLUMNS))

    def _submit_parallel(self, I: Inputs, books: np.ndarray, n: int):
        """Books in parallel on `threads` threads; outputs merged back into arrival order."""
        route = np.argsort(books, kind="stable")
        sb = books[route]
        book_starts = np.flatnonzero(np.diff(sb)) + 1          # route positions where a book begins
        n_chunks = min(self.threads * 4, book_starts.size + 1)
        targets = (np.arange(1, n_chunks) * n) // n_chunks
        cuts = np.unique(book_starts[np.minimum(np.searchsorted(book_starts, targets), book_starts.size - 1)])
        lo = np.concatenate([[0], cuts]).astype(np.int64)
        hi = np.concatenate([cuts, [n]]).astype(np.int64)
        rows = hi - lo
        O = alloc_outputs(np.stack([rows // 2 + 64, 2 * rows + 64, rows + rows // 4 + 64], axis=1))
        pos, status = lo.copy(), np.zeros(lo.size, np.int64)
        row_start = np.zeros((n, 3), np.int64)
        row_count = np.zeros((n, 3), np.int64)
        prev = numba.get_num_threads()
        numba.set_num_threads(self.threads)
        try:
            while True:
                match_books_cpu(I, self.store.S, O, books, route, lo, hi, pos, status,
                                row_start, row_count, self.seq, self.stp)
                todo = np.flatnonzero(status != K.ST_OK)
                if todo.size == 0:
                    break
                for c in todo:
                    row = int(route[pos[c]])
                    O = self._grow(int(status[c]), int(books[row]), row, I, O, int(c))
        finally:
            numba.set_num_threads(prev)
        # arrival order: each row's outputs go where the sequential path would put them
        chunk_of = np.empty(n, np.int64)
        chunk_of[route] = np.repeat(np.arange(lo.size), rows)
        starts = region_starts(O)
        out = []
        for k, (f, cols) in enumerate(STREAMS):
            cnt = row_count[:, k]
            dst_start = np.concatenate([[0], np.cumsum(cnt)[:-1]]).astype(np.int64)
            dst = alloc_rows(int(cnt.sum()), len(cols))
            src_start = row_start[:, k] + starts[chunk_of, k]
            gather_rows_cpu(getattr(O, f), src_start, row_count, k, dst_start, dst)
            out.append(Rows(dst, cols))
        return tuple(out)

    def _grow(self, st: int, b: int, row: int, I: Inputs, O, r: int):
        """Make room for row `row` of book b as the kernel asked; returns the outputs."""
        if st == K.ST_NEED_POOL:
            self.store.grow_pool(b)
            self.grow_counts["pool"] += 1
        elif st == K.ST_NEED_LADDER:
            if not self.store.ladder_for(b, int(I.px[row])):
                force = I.force.base if I.force.base is not None else I.force
                force[row] = S.R_PRICE_OUT_OF_RANGE
            self.grow_counts["ladder"] += 1
        elif st == K.ST_NEED_OUTPUT:
            nrest = int(self.store.S.bk[b, K.F_NREST])
            m = nrest if self.stp != S.STP_NONE else min(max(int(I.qty[row]), 0), nrest)
            O = grow_outputs(O, r, np.array([m, 2 * m + 4, m + 3], np.int64))
            self.grow_counts["output"] += 1
        else:  # pragma: no cover - a kernel bug
            raise RuntimeError(f"kernel returned unknown status {st}")
        return O

    # ------------------------------------------------------------------------------------
    def end_session(self, ts_ns: int) -> Result:
        """Expire every resting DAY order (README, "End of session")."""
        nrest = self.store.resting()
        O = alloc_outputs([[0, nrest + 1, nrest + 1]])
        expire_day_cpu(self.store.S, O, self.store.books_by_symbol(), np.uint64(self.seq), np.int64(ts_ns))
        return Result(*region_columns(O, 0))

    def book_levels(self, depth: int | None = None) -> dict:
        """L2 levels of every book: columns of schema.LEVEL_COLUMNS (books by ascending
        symbol; bids best to worst, then asks best to worst; at most `depth` per side)."""
        St = self.store.S
        nlev = int(np.count_nonzero(St.lv_cnt))
        cols = {name: np.empty(nlev, dt) for name, dt in S.LEVEL_COLUMNS}
        k = levels_cpu(St, self.store.books_by_symbol(), -1 if depth is None else int(depth),
                       cols["symbol"], cols["side"], cols["level"], cols["price_ticks"],
                       cols["qty"], cols["orders"])
        return {name: a[:k] for name, a in cols.items()}

    def book_l3(self) -> dict:
        """Every resting order in priority order: columns of schema.L3_COLUMNS."""
        n = self.store.resting()
        cols = {name: np.empty(n, dt) for name, dt in S.L3_COLUMNS}
        k = l3_cpu(self.store.S, self.store.books_by_symbol(), cols["symbol"], cols["side"],
                   cols["price_ticks"], cols["order_id"], cols["account"], cols["qty"], cols["tif"])
        assert k == n, (k, n)
        return cols

    def state_bytes(self) -> int:
        """Bytes held by the book state (ladders, pools, id tables)."""
        return self.store.nbytes()
