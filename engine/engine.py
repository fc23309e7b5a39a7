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

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numba
import numpy as np

from hpte.kernels import book as K
from hpte.kernels.match_cpu import (
    gather_rows_cpu, match_seq_args, match_seq_cpu, match_seq_risk_cpu, route_by_book_cpu, run_chunk_cpu,
)
from hpte.kernels.snapshot import auction_apply_cpu, l3_cpu, levels_cpu, parked_cpu, remove_orders_cpu

from . import schema as S
from .book_state import (
    NO_ROWS, STREAMS, BookStore, Inputs, OutputBuffers, Rows, alloc_outputs, alloc_outputs_1, alloc_rows,
    grow_outputs, parse_outputs, region_columns, region_starts, select_outputs,
)
from .device import resolve_device
from .io import InputError, order_columns
from .matching import resolve_matching


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
                        post=_ro(c["post_only"]), force=_ro(self.force),
                        exp=_ro(c["expire_ts_ns"]), stop=_ro(c["stop_price_ticks"]), disp=_ro(c["display_qty"]))
        self.book = np.zeros(1, np.int64)
        self.bufs = OutputBuffers()         # output rows, kept across calls
        self.fn = None                      # the compiled entry point, once known
        self.want = None                    # the outputs O was built for (O reused while the same)
        self.O = None
        self._arrays = [c[name] for name, _dt, _r, _d in S.ORDER_COLUMNS]
        # (name, dtype, memoryview of the one-row column): a memoryview's item assignment costs
        # a third of numpy's (no index parsing); values of the column's own dtype always fit
        self._load = [(name, dt, memoryview(c[name])) for name, dt, _r, _d in S.ORDER_COLUMNS]
        self._force = memoryview(self.force)
        self.b = -1                         # the book in self.book
        self.ts, self.sym = c["ts_ns"], c["symbol"]
        self.cur = None                     # O.cur[0] of self.O

    def load(self, batch: dict) -> bool:
        """Store the row of a one-row batch whose columns are all there as 1-D numpy arrays of
        exactly the schema's dtypes (what io._exact accepts, with one row) and return True; else
        return False (the batch takes the general path; what was stored here is unused). One
        pass: the checks and the copy of each column together."""
        get = batch.get
        try:
            for name, dt, m in self._load:
                v = get(name)
                if type(v) is not np.ndarray or v.ndim != 1 or (v.dtype is not dt and v.dtype != dt):
                    return False
                m[0] = v.item()      # ValueError unless exactly one element: not a one-row batch
        except ValueError:
            return False
        if "kind" in batch:
            return False
        self._force[0] = 0
        return True

    def set(self, *values) -> None:
        """Store one row (in schema.ORDER_COLUMNS order). A value that is not an integer (no
        ``__index__``: floats, numpy floats included) raises TypeError, one that does not fit
        its column's dtype ValueError, each naming the column."""
        try:
            for (_name, _dt, m), v in zip(self._load, values):
                m[0] = v
        except (TypeError, ValueError, OverflowError):
            for (name, dt, m), v in zip(self._load, values):
                try:
                    m[0] = v
                except (ValueError, OverflowError):
                    raise ValueError(f"{name}={v!r} does not fit {dt}") from None
                except TypeError:
                    raise TypeError(f"{name}={v!r}: expected an integer") from None
            raise
        self._force[0] = 0


_NO_ROWS3 = np.empty((0, 3), np.int64)   # run_chunk_cpu's row_start / row_count when it records nothing
_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _thread_pool(threads: int) -> ThreadPoolExecutor:
    """The process-wide pool of `threads` worker threads of the parallel CPU path (shared by
    every Engine: the work is in nogil kernels, the threads only carry the calls)."""
    with _POOLS_LOCK:
        pool = _POOLS.get(threads)
        if pool is None:
            pool = _POOLS[threads] = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="hpte-match")
        return pool


# a stream with no rows, shared by the results of one-row calls (nothing to copy)
_EMPTY_ROWS = tuple(Rows(NO_ROWS[k], cols) for k, (_f, cols) in enumerate(STREAMS))
_ORDER_NAMES = tuple(name for name, _dt, _r, _d in S.ORDER_COLUMNS)
_FILL_COLS, _EVENT_COLS, _DELTA_COLS = (cols for _f, cols in STREAMS)


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
    risk : RiskLimits, a path to a risk TOML file, or None
        Pre-trade checks, post-trade positions and circuit breakers inside the matching kernel
        (README "Risk limits and circuit breakers"); ``self.risk`` is the RiskEngine holding that
        state. Risk state spans books (accounts trade many symbols), so batches are matched in
        arrival order on one CPU thread; with a GPU device this raises ValueError.
    outputs : str or list of str
        Which output streams the kernels write: "all" (default), "none", or any of "fills",
        "events", "deltas" (a list, or names joined by commas, e.g. "fills"). Streams not asked
        for come back empty and cost nothing; the streams written hold exactly the rows of a run
        that writes all three. ``submit(batch, outputs=...)`` overrides this per call. (On a GPU
        every stream is still written and those not asked for are dropped.)
    algo : str
        Matching algorithm of every book (README "Matching algorithms"): "fifo" (default),
        "pro-rata", "allocation", "split", "fifo-lmm", "threshold-pro-rata", with their
        default parameters.
    matching : MatchingConfig, dict, path to a matching TOML file, or None
        Algorithm and parameters per symbol (engine/matching.py); overrides `algo`.
        Raises MatchingConfigError (a ValueError) naming the bad key.
    """

    def __init__(self, stp: str = "none", threads: int | None = 1, max_levels: int = 1 << 24,
                 device: str = "cpu", risk=None, outputs="all", algo: str = "fifo", matching=None):
        if stp not in S.STP_NAMES:
            raise ValueError(f"unknown stp mode {stp!r}; expected one of {', '.join(S.STP_NAMES)}")
        self.stp_name = stp
        self.stp = S.STP_NAMES[stp]
        self.outputs = parse_outputs(outputs)
        self._bufs = OutputBuffers()       # output rows, kept across batches
        self._gather = OutputBuffers()     # the parallel path's arrival-order outputs (copy=False)
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self.threads = numba.config.NUMBA_NUM_THREADS if threads is None else min(int(threads), numba.config.NUMBA_NUM_THREADS)
        self.store = BookStore(max_levels=max_levels, risk_rows=risk is not None)
        self.matching = resolve_matching(algo, matching)
        self.seq = 0             # seq of the next input row
        self.last_ts = None
        self.grow_counts = {"pool": 0, "ladder": 0, "output": 0}
        self.device_info = resolve_device(device)
        self.device = self.device_info.kind
        if risk is not None and self.device != "cpu":
            raise ValueError("risk checks and circuit breakers run on the CPU path; use device='cpu' with risk")
        self._gpu = None
        if self.device == "gpu":
            from .gpu import GpuMatcher   # lazy: numba.cuda / CuPy only on the GPU path
            self._gpu = GpuMatcher(self, self.device_info)
        self.store.matching = None if self.matching.is_fifo() else self.matching
        self._one = None                  # preallocated one-row input/output for submit_order
        self._book_of_symbol: dict[int, int] = {}
        self.risk = None
        if risk is not None:
            from hpte.engine.risk.state import RiskEngine
            from hpte.engine.risk.limits import RiskLimits
            if not isinstance(risk, RiskLimits):
                risk = RiskLimits.load(risk)
            self.risk = RiskEngine(risk)

    # ------------------------------------------------------------------------------------
    def submit(self, batch, outputs=None, copy: bool = True) -> Result:
        """Match one micro-batch. Structural problems (missing/mistyped columns, decreasing
        timestamps) raise InputError before anything changes; bad rows are REJECTED events.

        outputs: the streams to write for this call (as the Engine's ``outputs``; None = the
        Engine's choice). copy: with True (default) the result's arrays belong to the caller;
        with False they are views of the Engine's reused buffers, valid until its next call
        (no copy at all: for callers that consume each batch's outputs at once, such as
        ``hpte match`` streaming them to its writers)."""
        want = self.outputs if outputs is None else parse_outputs(outputs)
        if type(batch) is dict and self.risk is None and self._gpu is None:
            one = self._one
            if one is None:
                one = self._one = _OneRow()
            if one.load(batch):
                # one row of exact columns (the gateway's case): the submit_order path
                ts = one.ts.item()
                if self.last_ts is not None and ts < self.last_ts:
                    raise InputError(
                        f"column 'ts_ns' row 0: timestamps must not decrease across batches "
                        f"({self.last_ts} then {ts})")
                return self._match_one(one, one.sym.item(), want, copy)
        c = order_columns(batch)
        n = len(c["ts_ns"])
        if n and self.last_ts is not None and c["ts_ns"][0] < self.last_ts:
            raise InputError(
                f"column 'ts_ns' row 0: timestamps must not decrease across batches "
                f"({self.last_ts} then {int(c['ts_ns'][0])})")
        books = self.store.books_for(c["symbol"], c["price_ticks"], c["action"], c["order_type"])
        # the GPU and the parallel CPU path meet books one after another: reserve in full
        parallel = self._gpu is not None or (self.threads > 1 and n > 1 and books.min() != books.max()
                                             and self.risk is None)
        self.grow_counts["reserve"] = self.grow_counts.get("reserve", 0) + self.store.reserve(
            books, c["action"], at_most_double=not parallel)
        force = np.zeros(n, np.uint8)  # written here when a row must be rejected for range
        I = Inputs(ts=_ro(c["ts_ns"]), oid=_ro(c["order_id"]), side=_ro(c["side"]),
                   px=_ro(c["price_ticks"]), qty=_ro(c["qty"]), action=_ro(c["action"]),
                   otype=_ro(c["order_type"]), tif=_ro(c["tif"]), acct=_ro(c["account"]),
                   post=_ro(c["post_only"]), force=_ro(force), exp=_ro(c["expire_ts_ns"]),
                   stop=_ro(c["stop_price_ticks"]), disp=_ro(c["display_qty"]))
        if self.risk is not None:
            fills, events, deltas = self._submit_risk(I, books, c, n, want, copy)
        elif self._gpu is not None:
            fills, events, deltas = select_outputs(self._gpu.match(I, books, n), want)
        elif parallel:
            fills, events, deltas = self._submit_parallel(I, books, n, want, copy)
        else:
            nf, ne, nd = self._out_rows(n, 256)
            O = self._bufs.one(want, nf, ne, nd)
            pos = 0
            while True:
                st, pos = match_seq_cpu(I, self.store.S, O, books, pos, self.seq, self.stp)
                if st == K.ST_OK:
                    break
                O = self._grow(st, int(books[pos]), pos, I, O, 0)
            fills, events, deltas = self._results(O, want, copy)
        self.seq += n
        if n:
            self.last_ts = int(c["ts_ns"][-1])
        if self._gpu is None:
            self.store.maybe_shrink(n)      # pools mostly empty: give memory back (amortised)
        return Result(fills, events, deltas)

    def _results(self, O, want, copy: bool) -> tuple:
        """Region 0 of O (built on self._bufs) as the result's Rows, per stream."""
        bufs = self._bufs
        bufs.adopt(O, want)
        return tuple(Rows(bufs.take(k, int(O.cur[0, k]), copy) if want[k] else NO_ROWS[k], cols)
                     for k, (_f, cols) in enumerate(STREAMS))

    def submit_order(self, ts_ns: int, order_id: int, side: int, price_ticks: int, qty: int,
                     action: int = S.ACT_NEW, order_type: int = S.OT_LIMIT, tif: int = S.TIF_GTC,
                     account: int = 0, symbol: int = 0, post_only: int = 0, expire_ts_ns: int = 0,
                     stop_price_ticks: int = 0, display_qty: int = 0, outputs=None) -> Result:
        """One order, the low-latency way: scalars in, no batch validation or allocation beyond
        the few output rows returned. Same semantics and outputs as ``submit`` of a one-row
        batch (values are range-checked the same way). outputs: as for ``submit``."""
        want = self.outputs if outputs is None else parse_outputs(outputs)
        if self.risk is not None:
            return self.submit(outputs=want, batch={k: np.array([v], dt) for (k, dt, _r, _d), v in zip(
                S.ORDER_COLUMNS, (ts_ns, order_id, side, price_ticks, qty, action, order_type, tif,
                                  account, symbol, post_only, expire_ts_ns, stop_price_ticks, display_qty))})
        one = self._one
        if one is None:
            one = self._one = _OneRow()
        try:
            one.set(ts_ns, order_id, side, price_ticks, qty, action, order_type, tif, account, symbol, post_only,
                    expire_ts_ns, stop_price_ticks, display_qty)
        except (OverflowError, ValueError, TypeError) as e:
            raise InputError(f"submit_order: {e}") from None
        if self.last_ts is not None and ts_ns < self.last_ts:
            raise InputError(f"ts_ns {ts_ns} is before the previous order's {self.last_ts}")
        return self._match_one(one, symbol, want, True)

    def _match_one(self, one: "_OneRow", symbol, want, copy: bool) -> Result:
        """Match the row stored in `one` (the path of submit_order and of one-row submits): no
        batch validation, no allocation once the buffers exist, numba's dispatch skipped; the
        kernel asks for pool, ladder or output room when it needs it."""
        b = self._book_of_symbol.get(symbol)
        if b is None:
            books = self.store.books_for(one.cols["symbol"], one.cols["price_ticks"], one.cols["action"], one.cols["order_type"])
            self._book_of_symbol[int(symbol)] = b = int(books[0])
        if b != one.b:
            one.book[0] = one.b = b
        if one.want is want:
            O = one.O
            one.cur.fill(0)
        else:
            O = one.bufs.one(want, 256, 512, 256)
        pos = 0
        seq = self.seq
        while True:
            if one.fn is None:
                args = match_seq_args(one.I, self.store.S, O, one.book, pos, seq, self.stp)
                st, pos = run_chunk_cpu(*args)
                # later calls skip numba's dispatch (typing ~30 arrays costs ~3.5 us a call)
                one.fn = run_chunk_cpu.overloads[tuple(numba.typeof(a) for a in args)].entry_point
            else:   # match_seq_args, spelled out (one row)
                st, pos = one.fn(one.I, self.store.S, O, one.book, one.book, False, 0, pos, 1, _NO_ROWS3, _NO_ROWS3,
                                 False, seq, self.stp)
            if st == K.ST_OK:
                break
            O = self._grow(st, b, pos, one.I, O, 0)
            one.bufs.adopt(O, want)
            one.want = None
        if one.want is not want:
            one.O, one.want, one.cur = O, want, O.cur[0]
        self.seq = seq + 1
        self.last_ts = one.ts.item()
        store = self.store
        store._rows_since_check += 1
        if store._rows_since_check >= store.shrink_check_rows and self._gpu is None:
            store.maybe_shrink(0)
        nf, ne, nd = one.cur.tolist()
        return Result(_EMPTY_ROWS[0] if nf == 0 else Rows.of(O.F[:nf].copy() if copy else O.F[:nf], _FILL_COLS),
                      _EMPTY_ROWS[1] if ne == 0 else Rows.of(O.E[:ne].copy() if copy else O.E[:ne], _EVENT_COLS),
                      _EMPTY_ROWS[2] if nd == 0 else Rows.of(O.D[:nd].copy() if copy else O.D[:nd], _DELTA_COLS))

    def _submit_parallel(self, I: Inputs, books: np.ndarray, n: int, want=(True, True, True), copy: bool = True):
        """Books in parallel on `threads` threads; outputs merged back into arrival order."""
        counts = np.bincount(books, minlength=self.store.n_books)
        first = np.cumsum(counts) - counts                      # route position of each book's first row
        route = np.empty(n, np.int64)
        route_by_book_cpu(books, first.copy(), route)           # = np.argsort(books, kind="stable")
        book_starts = first[counts > 0][1:]                     # route positions where a book begins
        n_chunks = min(self.threads * 4, book_starts.size + 1)
        targets = (np.arange(1, n_chunks) * n) // n_chunks
        cuts = np.unique(book_starts[np.minimum(np.searchsorted(book_starts, targets), book_starts.size - 1)])
        lo = np.concatenate([[0], cuts]).astype(np.int64)
        hi = np.concatenate([cuts, [n]]).astype(np.int64)
        rows = hi - lo
        O = self._bufs.regions(want, np.stack(self._out_rows(rows, 64), axis=1))
        pos, status = lo.copy(), np.zeros(lo.size, np.int64)
        row_start = np.zeros((n, 3), np.int64)
        row_count = np.zeros((n, 3), np.int64)
        pool = _thread_pool(self.threads)
        S_, seq, stp = self.store.S, self.seq, self.stp

        def chunk(c: int) -> None:   # one chunk of books into its own region (run_chunk_cpu drops the GIL)
            st, j = run_chunk_cpu(I, S_, O, books, route, True, c, int(pos[c]), int(hi[c]),
                                  row_start, row_count, True, seq, stp)
            status[c] = st
            pos[c] = j

        todo = np.arange(lo.size)
        while True:
            # every chunk of this round runs to its end or to its first need; state and outputs
            # are grown only between rounds, when no thread runs
            list(pool.map(chunk, todo.tolist()))
            todo = np.flatnonzero(status != K.ST_OK)
            if todo.size == 0:
                break
            for c in todo:
                row = int(route[pos[c]])
                O = self._grow(int(status[c]), int(books[row]), row, I, O, int(c))
            S_ = self.store.S
        self._bufs.adopt(O, want)
        # arrival order: each row's outputs go where the sequential path would put them
        chunk_of = np.empty(n, np.int64)
        chunk_of[route] = np.repeat(np.arange(lo.size), rows)
        starts = region_starts(O)
        out = []
        for k, (f, cols) in enumerate(STREAMS):
            if not want[k]:
                out.append(Rows(NO_ROWS[k], cols))
                continue
            cnt = row_count[:, k]
            dst_start = np.concatenate([[0], np.cumsum(cnt)[:-1]]).astype(np.int64)
            total = int(cnt.sum())
            if copy:
                dst = alloc_rows(total, len(cols))
            else:
                self._gather._ensure(k, total)
                dst = self._gather.bufs[k][:total]
            src_start = row_start[:, k] + starts[chunk_of, k]
            src = getattr(O, f)
            cut = [(n * t) // self.threads for t in range(self.threads + 1)]
            list(pool.map(lambda t: gather_rows_cpu(src, src_start, row_count, k, dst_start, dst, cut[t], cut[t + 1]),
                          range(self.threads)))
            out.append(Rows(dst, cols))
        return tuple(out)

    def _submit_risk(self, I: Inputs, books: np.ndarray, c, n: int, want=(True, True, True), copy: bool = True):
        """Rows in arrival order through the risk version of the kernel (match_seq_risk_cpu)."""
        from hpte.kernels.risk.checks import G_NEED_PX
        risk = self.risk
        ar, sr = risk._rows_for(c["account"], c["symbol"])
        nf, ne, nd = self._out_rows(n, 256)
        O = self._bufs.one(want, nf, ne, nd)
        pos = 0
        while True:
            st, pos = match_seq_risk_cpu(I, self.store.S, O, books, pos, self.seq, self.stp, risk.state(ar, sr))
            if st == K.ST_OK:
                break
            b = int(books[pos])
            if st == K.ST_NEED_AUCTION:
                O = self._auction(b, int(sr[pos]), self.seq + pos, int(I.ts[pos]), O, risk.state(ar, sr))
            else:
                O = self._grow(st, b, pos, I, O, 0, px=int(risk.g[G_NEED_PX]), extra=8)
        return self._results(O, want, copy)

    def _auction(self, b: int, sr: int, seq: int, ts: int, O, R):
        """Uncross book b (its symbol's reopening auction) into region 0 and resume trading."""
        from hpte.kernels.risk.auction import uncross_cpu
        from hpte.kernels.risk.breaker import K_REF
        from hpte.kernels.risk.checks import S_LAST, S_STATIC
        one = np.array([b], np.int64)
        nr, npk = int(self.store.S.bk[b, K.F_NREST]), int(self.store.S.bk[b, K.F_NPARK])
        cols = {name: np.empty(nr + npk, dt) for name, dt in S.L3_COLUMNS}
        args = [cols[k] for k in ("symbol", "side", "price_ticks", "order_id", "account", "qty", "tif")]
        l3_cpu(self.store.S, one, *[a[:nr] for a in args])
        parked_cpu(self.store.S, one, *[a[nr:] for a in args])
        # priority: better price first, then time: the book's orders (FIFO per level) came before
        # every parked one (arrival order); stable sorts keep exactly that
        bid = np.flatnonzero(cols["side"] == S.BUY)
        ask = np.flatnonzero(cols["side"] == S.SELL)
        bid = bid[np.argsort(-cols["price_ticks"][bid], kind="stable")]
        ask = ask[np.argsort(cols["price_ticks"][ask], kind="stable")]
        bid_px, bid_qty = cols["price_ticks"][bid], cols["qty"][bid]
        ask_px, ask_qty = cols["price_ticks"][ask], cols["qty"][ask]
        ref = next((int(v) for v in (R.brk[sr, K_REF], R.sym[sr, S_LAST], R.sym[sr, S_STATIC]) if v > 0), 0)
        bf, af = np.zeros(len(bid_px), np.int64), np.zeros(len(ask_px), np.int64)
        m = len(bid_px) + len(ask_px)
        f_bid, f_ask, f_qty = (np.zeros(m, np.int64) for _ in range(3))
        price, vol, _imb, nf = uncross_cpu(bid_px, bid_qty, ask_px, ask_qty, ref, ref > 0, bf, af, f_bid, f_ask, f_qty)
        O = grow_outputs(O, 0, np.array([nf, 2 * nf + 9, 2 * nf + npk + 9], np.int64))
        auction_apply_cpu(self.store.S, O, R, b, sr, seq, ts, price, vol,
                          cols["order_id"][bid].copy(), cols["order_id"][ask].copy(), f_bid, f_ask, f_qty, nf)
        self.grow_counts["auctions"] = self.grow_counts.get("auctions", 0) + 1
        return O

    def _need_risk(self, what: str):
        if self.risk is None:
            raise ValueError(f"{what} needs risk state: create the Engine with risk=RiskLimits(...) or a risk file")
        return self.risk

    def _status_rows(self, ts_ns: int, code: int, reason: int, srows: np.ndarray, states: int) -> Result:
        """Breaker transition rows (events and status deltas) for symbol rows `srows`."""
        risk = self.risk
        from hpte.kernels.risk.breaker import K_REF
        syms = risk.symbol_ids()[srows]
        order = np.argsort(syms, kind="stable")
        syms, srows = syms[order], srows[order]
        k = len(syms)
        ev = np.zeros((k, len(S.EVENT_COLUMNS)), np.int64)
        ev[:, 0], ev[:, 1], ev[:, 2], ev[:, 6], ev[:, 7] = self.seq, ts_ns, syms, code, reason
        ev[:, 8] = risk.brk[srows, K_REF]
        de = np.zeros((k, len(S.DELTA_COLUMNS)), np.int64)
        de[:, 0], de[:, 1], de[:, 2], de[:, 4], de[:, 6] = self.seq, ts_ns, syms, risk.brk[srows, K_REF], states
        return Result(Rows(np.zeros((0, len(S.FILL_COLUMNS)), np.int64), S.FILL_COLUMNS),
                      Rows(ev, S.EVENT_COLUMNS), Rows(de, S.DELTA_COLUMNS))

    def _check_ts(self, ts_ns: int) -> None:
        if self.last_ts is not None and ts_ns < self.last_ts:
            raise InputError(f"ts_ns {ts_ns} is before the previous order's {self.last_ts}")

    def halt(self, ts_ns: int) -> Result:
        """Market-wide halt by command at ts_ns: every symbol (and any symbol seen later) stops
        trading; orders are still accepted and cancelled (IOC / FOK / MARKET are rejected
        SYMBOL_PAUSED). Events HALTED (reason HALT) and status deltas."""
        from hpte.kernels.risk import breaker as KB
        risk = self._need_risk("halt")
        self._check_ts(ts_ns)
        ns = len(risk.symbol_ids())
        rows = np.flatnonzero(risk.brk[:ns, KB.K_STATE] != S.TS_HALTED)
        risk.brk[rows, KB.K_STATE] = S.TS_HALTED
        risk.brk[rows, KB.K_SINCE] = ts_ns
        risk.brk[rows, KB.K_CAUSE] = S.R_HALT
        risk.halted = True
        self.last_ts = ts_ns
        return self._status_rows(ts_ns, S.EV_HALTED, S.R_HALT, rows, S.TS_HALTED)

    def resume(self, ts_ns: int) -> Result:
        """End a market-wide halt: every halted symbol enters the call period of its reopening
        auction (``auction_ns``), uncrossed at its first order at or after the period's end."""
        from hpte.kernels.risk import breaker as KB
        risk = self._need_risk("resume")
        self._check_ts(ts_ns)
        ns = len(risk.symbol_ids())
        rows = np.flatnonzero(risk.brk[:ns, KB.K_STATE] == S.TS_HALTED)
        a = int(risk.bp[KB.B_AUCTION_NS])
        risk.brk[rows, KB.K_STATE] = S.TS_AUCTION
        risk.brk[rows, KB.K_SINCE] = ts_ns
        risk.brk[rows, KB.K_UNTIL] = ts_ns + (0 if a == KB.UNSET else a)
        risk.halted = False
        self.last_ts = ts_ns
        return self._status_rows(ts_ns, S.EV_AUCTION, S.R_HALT, rows, S.TS_AUCTION)

    def auction(self, ts_ns: int, symbol: int | None = None) -> Result:
        """Uncross now (a call auction at ts_ns) every symbol that is paused, halted or in its
        call period, or just `symbol`: the opening / closing auction on the live book. Halt the
        market (``halt``) before the open or the close to collect orders, then call this; each
        symbol uncrossed trades continuously again (events RESUMED, fills reason AUCTION)."""
        from hpte.kernels.risk import breaker as KB
        risk = self._need_risk("auction")
        self._check_ts(ts_ns)
        ids = risk.symbol_ids()
        rows = np.flatnonzero(risk.brk[:len(ids), KB.K_STATE] >= S.TS_PAUSED)
        if symbol is not None:
            rows = rows[ids[rows] == int(symbol)]
        book_syms = self.store.S.bk[:self.store.n_books, K.F_SYM]
        O = alloc_outputs_1(16, 16, 16)
        for sr in rows[np.argsort(ids[rows], kind="stable")]:
            b = np.flatnonzero(book_syms == ids[sr])
            if b.size == 0:          # a symbol without a book (no order yet): nothing to uncross
                risk.brk[sr, KB.K_STATE] = S.TS_CONTINUOUS
                continue
            O = self._auction(int(b[0]), int(sr), self.seq, int(ts_ns), O, risk.state(np.empty(0, np.int64), np.empty(0, np.int64)))
        if symbol is None:
            risk.halted = False
        self.last_ts = int(ts_ns)
        return Result(*region_columns(O, 0))

    def set_kill(self, on: bool = True, account: int | None = None, ts_ns: int | None = None) -> Result:
        """Turn a kill switch on or off (one account's, or the global one with account=None), at a
        batch boundary. Turning it on also cancels the resting orders it covers (events
        CANCELLED, reason KILL_SWITCH). Later NEW / REPLACE rows of a killed account are
        rejected KILL_SWITCH; cancels still pass."""
        risk = self._need_risk("set_kill")
        ts = self.last_ts if ts_ns is None else int(ts_ns)
        ts = 0 if ts is None else ts
        self._check_ts(ts)
        risk.set_kill(on, account)
        if not on:
            return self._remove(ts, -1, 0, S.EV_CANCELLED, S.RR_KILL_SWITCH)
        return self._remove(ts, 2 if account is None else 1, 0 if account is None else int(account),
                            S.EV_CANCELLED, S.RR_KILL_SWITCH)

    def set_limits(self, limits, ts_ns: int | None = None) -> Result:
        """Install a new risk configuration (RiskLimits or a TOML path) at this batch boundary;
        state (open orders, positions, buckets, breakers) is kept. Kill switches it turns on
        cancel the resting orders they cover, as ``set_kill`` does (the returned events)."""
        from hpte.engine.risk.limits import RiskLimits
        risk = self._need_risk("set_limits")
        lim = limits if isinstance(limits, RiskLimits) else RiskLimits.load(limits)
        ts = self.last_ts if ts_ns is None else int(ts_ns)
        ts = 0 if ts is None else ts
        self._check_ts(ts)
        risk.set_limits(lim)
        from hpte.kernels.risk.checks import A_KILL, G_KILL
        if risk.g[G_KILL]:
            return self._remove(ts, 2, 0, S.EV_CANCELLED, S.RR_KILL_SWITCH)
        killed = risk._accts.ids[np.flatnonzero(risk.acct[:len(risk._accts), A_KILL])]
        parts = [self._remove(ts, 1, int(a), S.EV_CANCELLED, S.RR_KILL_SWITCH) for a in killed]
        if not parts:
            return self._remove(ts, -1, 0, S.EV_CANCELLED, S.RR_KILL_SWITCH)
        return Result(*(Rows(np.concatenate([p[k].raw for p in parts]), cols)
                        for k, (_f, cols) in enumerate(STREAMS)))

    def _remove(self, ts_ns: int, mode: int, acct: int, code: int, reason: int) -> Result:
        """remove_orders_cpu over every book (mode -1: nothing), with risk releases."""
        nrest = self.store.resting() + self.store.parked() + self.store.stops() if mode >= 0 else 0
        O = alloc_outputs([[0, nrest + 1, nrest + 1]])
        if mode >= 0:
            remove_orders_cpu(self.store.S, O, self.store.books_by_symbol(), np.uint64(self.seq),
                              np.int64(ts_ns), mode, np.uint32(acct), code, reason)
        res = Result(*region_columns(O, 0))
        if self.risk is not None and res.events.n_rows:     # their open quantity goes away
            from hpte.kernels.risk.checks import risk_release_many
            ev, risk = res.events, self.risk
            risk_release_many(risk._accts.lookup(ev["account"]), risk._syms.lookup(ev["symbol"]),
                              ev["side"].astype(np.int64), ev["qty"], ev["price_ticks"], risk.acct, risk.pair)
        return res

    def _out_rows(self, rows, pad: int):
        """Output rows (fills, events, deltas) a batch (or region) of `rows` input rows starts
        with; ints or int64 arrays. A kernel that runs out stops and _grow re-maps and copies
        every row written so far, so the first guess should rarely be short: under FIFO about
        rows/2 fills and 2 x rows events; the other algorithms split an aggressor's quantity
        among more makers at a level (pro-rata: 1.7x the fill rows of FIFO on the benchmark
        flow, bench/RESULTS.md), so engines with any non-FIFO book start with 3/4 x rows fills
        and 2.5 x rows events."""
        if self.store.matching is None:
            return rows // 2 + pad, 2 * rows + pad, rows + rows // 4 + pad
        return rows * 3 // 4 + pad, 2 * rows + rows // 2 + pad, rows + rows // 4 + pad

    def _grow(self, st: int, b: int, row: int, I: Inputs, O, r: int, px: int | None = None, extra: int = 0):
        """Make room for row `row` of book b as the kernel asked; returns the outputs. px: the
        price the row needs to rest at (default its own price); extra: rows of breaker events
        the risk kernel reserves."""
        if st == K.ST_NEED_POOL:
            self.store.grow_pool(b)
            self.grow_counts["pool"] += 1
        elif st == K.ST_NEED_LADDER:
            if not self.store.ladder_for(b, int(I.px[row]) if px is None else px):
                force = I.force.base if I.force.base is not None else I.force
                force[row] = S.R_PRICE_OUT_OF_RANGE
            self.grow_counts["ladder"] += 1
        elif st == K.ST_NEED_ICE:
            self.store.ensure_icebergs()
            self.grow_counts["icebergs"] = self.grow_counts.get("icebergs", 0) + 1
        elif st == K.ST_NEED_OUTPUT:
            nrest = int(self.store.S.bk[b, K.F_NREST])
            m = nrest if self.stp != S.STP_NONE else min(max(int(I.qty[row]), 0), nrest)
            bk = self.store.S.bk
            need = [m, 2 * m + 4 + extra, m + 3 + extra]
            ns = int(bk[b, K.F_NSTOP])
            if self.risk is None and (ns or int(I.otype[row]) >= S.OT_STOP):   # as the kernel reserves
                need = list(K.stop_room(nrest, ns))
            x = int(K.ice_room(int(bk[b, K.F_NSLC]), int(I.qty[row]), ns != 0))   # icebergs' replenishments
            need[0] += x
            need[1] += 2 * x
            nexp = int(bk[b, K.F_NEXP])
            if nexp and int(I.ts[row]) >= nexp:   # a good-till-date sweep is due before the row:
                x = nrest + int(bk[b, K.F_NPARK])   # up to every order of the book expires
                need[1] += x
                need[2] += x
            O = grow_outputs(O, r, np.array(need, np.int64))
            self.grow_counts["output"] += 1
        else:  # pragma: no cover - a kernel bug
            raise RuntimeError(f"kernel returned unknown status {st}")
        return O

    # ------------------------------------------------------------------------------------
    def end_session(self, ts_ns: int) -> Result:
        """Expire every resting DAY order (README, "End of session")."""
        return self._remove(int(ts_ns), 0, 0, S.EV_EXPIRED, S.R_END_OF_SESSION)

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

    def parked(self) -> dict:
        """Orders waiting for a paused symbol's reopening auction (outside the book, which may
        not cross): columns of schema.L3_COLUMNS, per symbol in arrival order."""
        n = self.store.parked()
        cols = {name: np.empty(n, dt) for name, dt in S.L3_COLUMNS}
        if n:
            parked_cpu(self.store.S, self.store.books_by_symbol(), cols["symbol"], cols["side"],
                       cols["price_ticks"], cols["order_id"], cols["account"], cols["qty"], cols["tif"])
        return cols

    def state_bytes(self) -> int:
        """Bytes held by the book state (ladders, pools, id tables)."""
        return self.store.nbytes()
