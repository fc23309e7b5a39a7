"""Tick-level sweeps: one tick strategy (``market_maker``, a strategy file) over many parameter
sets on one L3 market-event stream, on CPU threads, a Dask cluster or (no-impact mode, see
hpte.engine.sweep.ticks_gpu) a GPU, in either mode of
``hpte backtest`` (no-impact: the replayed book as the data says; impact: the strategy's orders
in a real book with the replayed orders).

    res = hpte.sweep("market_maker", "AMZN_..._message_5.csv",
                     params={"half_spread": "0,1,2", "size": "50,100"}, latency="100us")

The stream is decoded and validated once (a LOBSTER day, an events file, ITCH or an order file:
hpte.engine.backtest.data.open_data) and shared read-only; ``hpte.kernels.backtest.loop.sweep_cpu``
runs the parameter sets in parallel (``prange``), each with its own simulated exchange view,
orders, latency streams and buffers, and folds its outputs into the metrics accumulator that the
single ``hpte backtest`` folds its own into (hpte.kernels.backtest.metrics). Every row therefore
equals the single backtest of that parameter set exactly, whatever the thread count, the chunk
of the grid or the Dask worker it ran in.

Impact mode (``mode="impact"``) gives every parameter set its own simulated book
(hpte.kernels.backtest.impact.SimBook: the engine's BookStore, matched by its step), run by the
strategy's impact driver exactly as ``hpte backtest --mode impact`` runs it (``run_impact_set``:
the same ``run_cpu`` calls, pool growth and fill-buffer growth, one final chunk). The pool of a
book grows in Python between kernel calls, so the sets are not a ``prange``: they run on a pool
of Python threads (``numba.get_num_threads()`` of them), each running whole parameter sets;
``run_cpu`` and the step are compiled ``nogil``, so the threads run in parallel. Each set writes
only its own rows of the outputs: the rows do not depend on the thread count.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np

from hpte.engine.backtest.data import COLUMNS, MarketEvents
from hpte.kernels.backtest.impact import SimBook, no_book
from hpte.engine.backtest.run import (Arrivals, RunConfig, _as_source, _ro, check_l2_chunk, finish_metrics,
                                     parse_queue, prepare_run,
                                     runaway_message)
from hpte.engine.backtest.strategy import Strategy, StrategyError, diagnose, driver, load_strategy
from hpte.kernels.backtest import api as A
from hpte.kernels.backtest import loop as K
from hpte.kernels.backtest import metrics as M

# the metric columns of a tick sweep row (finish_metrics' keys, in its order) and the integer ones
TICK_METRICS = ("pnl", "pnl_currency", "return", "sharpe", "max_drawdown", "turnover", "trades", "maker_fills",
                "taker_fills", "volume", "fill_ratio", "time_in_queue_s", "position_min", "position_max",
                "position_end", "cash_end", "fees", "orders", "cancels", "rejects")
TICK_INTS = ("trades", "maker_fills", "taker_fills", "volume", "position_min", "position_max", "position_end",
             "cash_end", "fees", "orders", "cancels", "rejects")
TICK_LOWER_IS_BETTER = ("max_drawdown", "fees", "rejects")
MODES = ("no-impact", "impact")


def decode(src) -> tuple[dict, int, float, str]:
    """The whole stream of a source as int64 columns (validated chunk by chunk), with
    ``arrival`` (the market order ids resolved: ``Arrivals``): (columns, tick, price scale, name)."""
    if isinstance(src, MarketEvents):
        parts = list(src.chunks(max(len(src), 1)))
    else:
        parts = list(src.chunks(1 << 20))
    cols = {c: np.ascontiguousarray(np.concatenate([p[c] for p in parts]) if parts else np.zeros(0, np.int64),
                                    dtype=np.int64) for c in COLUMNS}
    arr = Arrivals()
    cols["arrival"] = arr.resolve(cols)     # the market order ids, resolved once for every set
    cols["ends"] = arr.ends                 # 1 where the data says the order is gone (impact mode)
    return cols, int(src.tick), float(getattr(src, "price_scale", 1.0)), str(getattr(src, "name", "<events>"))


def _set_inputs(cols: dict, rc: RunConfig, k: int) -> tuple:
    """What k parameter sets run with: zeroed accumulators (acc_i int64[k, NMI], acc_f
    float64[k, NMF], info int64[k, 4]), the stream's columns read-only, as the single backtest
    passes them (one compiled run_cpu serves both), and each row's ladder index."""
    c = {n: _ro(v) for n, v in cols.items()}
    return (np.zeros((k, M.NMI), np.int64), np.zeros((k, M.NMF), np.float64), np.zeros((k, 4), np.int64), c,
            _ro((c["price"] - rc.base) // rc.tick))


def run_sets(strat: Strategy, cols: dict, rc: RunConfig, sets: np.ndarray) -> tuple:
    """Parameter sets (float64[k, P]) over the decoded stream with the CPU sweep kernel:
    (acc_i int64[k, NMI], acc_f float64[k, NMF], info int64[k, 4])."""
    acc_i, acc_f, info, c, lvl = _set_inputs(cols, rc, sets.shape[0])
    kern = driver(strat).sweep_cpu
    try:
        kern(c["ts_ns"], c["kind"], c["arrival"], c["side"], c["price"], c["qty"], lvl, rc.cfg, rc.sc, rc.md,
             np.ascontiguousarray(sets, dtype=np.float64), max(strat.state_size, 0), rc.L, rc.ring, rc.fcap,
             rc.ecap, rc.qcap, acc_i, acc_f, info, *no_book())
    except Exception as e:  # noqa: BLE001 - numba's typing errors: name the callback
        if type(e).__module__.startswith("numba"):
            raise diagnose(strat, e) from None
        raise
    return acc_i, acc_f, info


def run_impact_set(run, c: dict, lvl: np.ndarray, rc: RunConfig, pvec: np.ndarray, state_size: int,
                   acc_i: np.ndarray, acc_f: np.ndarray, info: np.ndarray) -> int:
    """One parameter set in impact mode over the decoded stream (read-only columns ``c``, ladder
    indices ``lvl``): its own SimBook, state and buffers, the impact driver's ``run_cpu``
    (``run``) called as ``hpte.backtest(mode="impact")`` calls it (one final chunk; ST_POOL grows
    the book's pool, ST_FLUSH with no fill to drain grows the fills buffer) and every call's
    outputs folded into acc_i (int64[NMI]) / acc_f (float64[NMF]). info (int64[4]) gets the final
    status, sc[SC_INST_T] and the exchange-side position and cash; returns the status."""
    cfg = rc.cfg.copy()
    cfg[K.CF_IMPACT] = 1
    cfg[K.CF_FINAL] = 1
    sc = rc.sc.copy()
    md = rc.md.copy()
    L = rc.L
    book = SimBook(L)
    xlad = np.zeros((2, L), np.int64)
    llad = np.zeros((2, L), np.int64)
    xo = np.zeros((A.MAX_ORDERS, K.NXO), np.int64)
    orders = A.new_orders()
    state = np.zeros(state_size, np.float64)
    act = A.new_actions()
    req = np.zeros((rc.ring, K.NRQ), np.int64)
    rsp = np.zeros((rc.ring, K.NRS), np.int64)
    fills = np.zeros((rc.fcap, K.NFL), np.int64)
    evs = np.zeros((rc.ecap, K.NEL), np.int64)
    eq = np.zeros((rc.qcap, K.NEQ), np.int64)
    cl = tuple(c[n] for n in ("ts_ns", "kind", "arrival", "ends", "side", "price", "qty"))
    while True:
        st = run(*cl, lvl, cfg, sc, xlad, llad, xo, orders, md, pvec, state, act, req, rsp, fills, evs, eq,
                 *book.args())
        nfill = int(sc[K.SC_NFILL])
        M.fold_cpu(acc_i, acc_f, fills, sc[K.SC_NFILL], evs, sc[K.SC_NEV], eq, sc[K.SC_NEQ])
        sc[K.SC_NFILL] = sc[K.SC_NEV] = sc[K.SC_NEQ] = 0
        if st == K.ST_POOL:
            book.grow()
            continue
        if st == K.ST_FLUSH:
            if nfill == 0:       # a strategy order may fill more rows than the buffer holds
                fills = np.zeros((2 * fills.shape[0] + book.resting(), K.NFL), np.int64)
            continue
        break
    info[0] = st
    info[1] = sc[K.SC_INST_T]
    info[2] = sc[K.SC_POS]
    info[3] = sc[K.SC_CASH]
    return st


def run_sets_impact(strat: Strategy, cols: dict, rc: RunConfig, sets: np.ndarray, threads: int) -> tuple:
    """Parameter sets (float64[k, P]) in impact mode, each with its own book, on ``threads``
    Python threads (the kernel releases the GIL): (acc_i int64[k, NMI], acc_f float64[k, NMF],
    info int64[k, 4]); row j is written by set j only."""
    k = sets.shape[0]
    acc_i, acc_f, info, c, lvl = _set_inputs(cols, rc, k)
    run = driver(strat, impact=True).run_cpu
    sets = np.ascontiguousarray(sets, dtype=np.float64)
    ss = max(strat.state_size, 0)

    def one(j: int) -> int:
        return run_impact_set(run, c, lvl, rc, sets[j].copy(), ss, acc_i[j], acc_f[j], info[j])

    try:
        if threads <= 1 or k <= 1:
            for j in range(k):
                one(j)
        else:
            from concurrent.futures import ThreadPoolExecutor
            with ThreadPoolExecutor(max_workers=min(threads, k)) as pool:
                list(pool.map(one, range(k)))
    except Exception as e:  # noqa: BLE001 - numba's typing errors: name the callback
        if type(e).__module__.startswith("numba"):
            raise diagnose(strat, e) from None
        raise
    return acc_i, acc_f, info


def warm_impact(strat: Strategy, rc: RunConfig) -> None:
    """Compile (or load) the impact driver on an empty stream (as ``hpte.backtest`` does)."""
    e0 = _ro(np.zeros(0, np.int64))
    cfg = rc.cfg.copy()
    cfg[K.CF_IMPACT] = 1
    L = rc.L
    try:
        driver(strat, impact=True).run_cpu(
            e0, e0, e0, e0, e0, e0, e0, e0, cfg, rc.sc.copy(), np.zeros((2, L), np.int64), np.zeros((2, L), np.int64),
            np.zeros((A.MAX_ORDERS, K.NXO), np.int64), A.new_orders(), rc.md.copy(), strat.param_vector(),
            np.zeros(strat.state_size, np.float64), A.new_actions(), np.zeros((16, K.NRQ), np.int64),
            np.zeros((16, K.NRS), np.int64), np.zeros((16, K.NFL), np.int64), np.zeros((16, K.NEL), np.int64),
            np.zeros((16, K.NEQ), np.int64), *no_book())
    except Exception as e:  # noqa: BLE001
        if type(e).__module__.startswith("numba"):
            raise diagnose(strat, e) from None
        raise


def compute(strat: Strategy, cols: dict, rc: RunConfig, sets: np.ndarray, mode: str, threads: int) -> tuple:
    """(acc_i, acc_f, info) of parameter sets in either mode."""
    if mode == "impact":
        return run_sets_impact(strat, cols, rc, sets, threads)
    return run_sets(strat, cols, rc, sets)


def rows(strat: Strategy, sets, acc_i, acc_f, info, rc: RunConfig, *, capital: float, price_scale: float,
         max_instant_actions: int) -> dict:
    """The metric columns of a chunk of rows (finish_metrics of each accumulator); a set that
    stopped (a runaway, full rings) raises the single backtest's error, naming the set."""
    for j in range(len(info)):
        st = int(info[j, 0])
        if st == K.ST_DONE:
            continue
        ps = ", ".join(f"{n}={v:g}" for n, v in zip(strat.params, sets[j]))
        if st == K.ST_RUNAWAY:
            raise StrategyError(f"{runaway_message(strat.name, max_instant_actions, int(info[j, 1]))} "
                                f"[parameter set {ps}]")
        if st == K.ST_RING:
            raise RuntimeError(f"more than {rc.ring} orders or responses in flight at once "
                               f"(the strategy sends too much in one latency interval) [parameter set {ps}]")
        raise RuntimeError(f"the tick sweep kernel stopped with status {st} [parameter set {ps}]")
    ms = [finish_metrics(acc_i[j], acc_f[j], capital=capital, sample_ns=rc.sample_ns, price_scale=price_scale)
          for j in range(len(info))]
    return {m: np.array([d[m] for d in ms], np.int64 if m in TICK_INTS else np.float64) for m in TICK_METRICS}


def warm(strat: Strategy, rc: RunConfig, P: int) -> None:
    """Compile (or load) the sweep kernel on an empty stream."""
    e = {c: np.zeros(0, np.int64) for c in (*COLUMNS, "arrival")}
    run_sets(strat, e, rc, np.tile(strat.param_vector(), (1, 1)).reshape(1, P))


def warm_worker(blob, mode: str = "no-impact") -> float:
    """Load (or compile) a tick strategy's sweep kernel (``mode``'s driver) in a Dask worker;
    returns the seconds."""
    from hpte.engine.sweep.run import _load_blob

    t0 = time.perf_counter()
    strat = _load_blob(blob, load_strategy)
    rc = prepare_run(strat, MarketEvents(*(np.zeros(0, np.int64) for _ in COLUMNS), tick=1))
    if mode == "impact":
        warm_impact(strat, rc)
    else:
        warm(strat, rc, len(strat.params))
    return time.perf_counter() - t0


def run_chunk(blob, cols: dict, rc: RunConfig, grid, start: int, stop: int, capital: float, price_scale: float,
              max_instant_actions: int, mode: str = "no-impact") -> tuple:
    """Parameter sets start..stop-1 (the Dask task): (start, sets, metric columns). Impact mode
    runs on the worker's numba thread count (NUMBA_NUM_THREADS: --threads-per-worker)."""
    import numba

    from hpte.engine.sweep.run import _load_blob

    strat = _load_blob(blob, load_strategy)
    sets = grid.chunk(start, stop)
    acc_i, acc_f, info = compute(strat, cols, rc, sets, mode, numba.get_num_threads())
    return start, sets, rows(strat, sets, acc_i, acc_f, info, rc, capital=capital, price_scale=price_scale,
                             max_instant_actions=max_instant_actions)


def sweep_ticks(strategy, data, *, params=None, grid=None, cluster=None, out=None, top: int = 10,
                metric: str | None = None, latency=None, fees=None, seed: int = 0, capital: float = 1e9,
                sample="1m", timer=None, tick: int | None = None, max_instant_actions: int = 100_000,
                chunk: int | None = None, workers: int = 2, threads_per_worker: int = 1, plot: bool = True,
                progress=None, stock: str | None = None, mode: str = "no-impact", device: str = "cpu",
                queue: str | None = None):
    """``hpte.sweep`` for a tick strategy (see the module docstring); the options are
    ``hpte.backtest``'s (mode, latency, fees, seed, capital, sample, timer, tick,
    max_instant_actions, queue: the queue model of L2 data) and the sweep's (params, grid, cluster, out, top, metric, chunk, workers)."""
    from hpte.engine.sweep.run import (SweepError, SweepResult, _connect, _Sink, _strategy_blob, check_common,
                                      run_on_dask, swept_grid)

    t_start = time.perf_counter()
    metric = metric or "pnl"
    if mode not in MODES:
        raise SweepError(f"--mode {mode!r}: use one of {', '.join(MODES)}")
    check_common(metric, TICK_METRICS, top, workers, threads_per_worker)
    if not (capital > 0 and math.isfinite(capital)):
        raise SweepError(f"--capital {capital}: must be positive and finite")
    if chunk is not None and chunk < 1:
        raise SweepError(f"--chunk must be >= 1, got {chunk}")
    strat = strategy if isinstance(strategy, Strategy) else load_strategy(strategy)
    g = swept_grid(strat, params, grid, 1 << 32, " for a tick sweep", "NAME=A,B,C or START:STOP:STEP")
    size = g.size
    try:
        qmodel, _ = parse_queue(queue)
    except ValueError as e:
        raise SweepError(f"--{e}") from None
    if qmodel != K.Q_L3 and mode == "impact":
        raise SweepError(f"--queue {queue}: queue models are for no-impact mode on L2 data; impact mode needs "
                         f"L3 data (orders with ids)")
    if qmodel != K.Q_L3 and device == "gpu":
        raise SweepError(f"--queue {queue}: L2 data with a queue model is swept on the CPU (--device cpu) only")
    src = _as_source(data, tick, stock, l2=qmodel != K.Q_L3)
    rc = prepare_run(strat, src, latency=latency, fees=fees, seed=seed, sample=sample, timer=timer,
                     max_instant_actions=max_instant_actions, queue=queue)
    ginfo = None
    if device == "gpu":
        from hpte.engine.device import resolve_device
        ginfo = resolve_device("gpu")          # DeviceError names what is missing, before any work
    client = owned = None
    if cluster is not None:
        client, owned = _connect(cluster, workers, threads_per_worker,
                                 Path(driver(strat, impact=mode == "impact").__file__).parent)
    try:
        t0 = time.perf_counter()
        cols, _tk, price_scale, name = decode(src)
        check_l2_chunk(cols, qmodel, 0, name)      # L2 rows need a queue model, a queue model L2 rows
        decode_s = time.perf_counter() - t0
        P = len(g.names)
        names = list(g.names)
        sink = _Sink(names, list(TICK_METRICS), TICK_INTS, top, metric, metric in TICK_LOWER_IS_BETTER, out, size,
                     progress)
        kw = dict(capital=float(capital), price_scale=price_scale, max_instant_actions=int(max_instant_actions))
        impact = mode == "impact"
        try:
            if client is not None:
                parts = 2 * workers
                csize = chunk or max(1, -(-size // parts))
                bounds = [(s, min(s + csize, size)) for s in range(0, size, csize)]
                blob = _strategy_blob(strat)
                t0 = time.perf_counter()
                client.run(warm_worker, blob, mode)
                compile_s = time.perf_counter() - t0
                t_run = time.perf_counter()
                key = f"hpte-tsweep-{os.getpid()}-{id(g):x}"
                run_on_dask(client, (cols, g), bounds, size,
                            lambda d, s, e, suffix: client.submit(run_chunk, blob, d[0], rc, d[1], s, e, key=key + suffix,
                                                                  pure=False, mode=mode, **kw),
                            sink.emit)
                devname = f"dask ({'local cluster, ' if owned is not None else cluster + ', '}" \
                          f"{len(client.scheduler_info()['workers'])} workers)"
            elif ginfo is not None:
                from hpte.engine.sweep import ticks_gpu as TG
                csize = chunk or max(1, min(size, 1 << 16, TG.DEVICE_BUDGET // TG.per_set_bytes(rc, strat.state_size, P)))
                bounds = [(s, min(s + csize, size)) for s in range(0, size, csize)]
                t0 = time.perf_counter()
                empty = {c: np.zeros(0, np.int64) for c in cols}      # compile on an empty stream, timed apart
                TG.TickGpuRunner(strat, empty, rc, ginfo.simulator).run(g.chunk(0, 1))
                compile_s = time.perf_counter() - t0
                t_run = time.perf_counter()
                runner = TG.TickGpuRunner(strat, cols, rc, ginfo.simulator)
                for s, e in bounds:
                    sets = g.chunk(s, e)
                    acc_i, acc_f, info = runner.run(sets)
                    sink.emit(sets, rows(strat, sets, acc_i, acc_f, info, rc, **kw))
                devname = f"gpu ({ginfo.name or ginfo.reason})"
            else:
                import numba
                threads = numba.get_num_threads()
                csize = chunk or max(4 * threads, 1)
                bounds = [(s, min(s + csize, size)) for s in range(0, size, csize)]
                t0 = time.perf_counter()
                if impact:
                    warm_impact(strat, rc)
                else:
                    warm(strat, rc, P)
                compile_s = time.perf_counter() - t0
                t_run = time.perf_counter()
                for s, e in bounds:
                    sets = g.chunk(s, e)
                    acc_i, acc_f, info = compute(strat, cols, rc, sets, mode, threads)
                    sink.emit(sets, rows(strat, sets, acc_i, acc_f, info, rc, **kw))
                devname = f"cpu ({threads} threads)"
            sink.close()
            seconds = time.perf_counter() - t_run
        finally:
            sink.close()
    finally:
        if client is not None:
            client.close()
        if owned is not None:
            owned.close()
    n = len(cols["ts_ns"])
    stats = {"sets": size, "events": n, "unit": "events", "mode": mode, "chunks": len(bounds), "chunk": csize, "device": devname,
             "seconds": seconds, "compile_s": compile_s, "decode_s": decode_s,
             "steps_per_s": size * n / seconds if seconds > 0 else 0.0, "total_s": time.perf_counter() - t_start}
    res = SweepResult(strategy=strat.name, names=names, swept=g.swept, metric=metric, top=sink.best.cols or {},
                      table=sink.table(), path=sink.path, stats=stats, metrics=list(TICK_METRICS), ints=TICK_INTS)
    if out is not None and plot:
        from hpte.engine.sweep.plot import draw
        res.plot = draw(res, g, Path(out))
    return res
