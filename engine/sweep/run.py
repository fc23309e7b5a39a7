"""``hpte.sweep`` and ``hpte.engine.sweep.backtest_bars``: one bar strategy over many parameter
sets on the same bars, on CPU threads, a GPU or a Dask cluster.

    res = hpte.sweep("ma_cross", "bars.parquet", params={"fast": "5:100:5", "slow": "110:600:10"},
                     out="sweep/")          # results.parquet, heatmap.png
    res.top                                 # the best parameter sets (dict of columns)

One kernel logic (hpte.kernels.backtest.bar_loop.run_one), three drivers:

* ``device="cpu"``: ``sweep_cpu``, ``prange`` over the parameter sets of a chunk;
* ``device="gpu"``: the CUDA kernel, one thread per parameter set; the data is copied to the
  device once, every chunk's parameter sets and results live there, only results come back;
* ``cluster="local"`` or a scheduler address: the grid cut into chunks, each a Dask task running
  ``sweep_cpu`` in a worker process; the data is scattered to every worker once.

Every row is the same whatever the driver, the chunk size or the number of threads or workers:
each parameter set is computed alone from the shared read-only data.
"""
from __future__ import annotations

import hashlib
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hpte.engine.backtest.strategy import StrategyError, cache_dir
from hpte.engine.io import InputError
from hpte.engine.sweep.data import bars_per_year, load_bars
from hpte.engine.sweep.grid import Grid, GridError, make_grid
from hpte.engine.sweep.strategy import BarStrategy, diagnose, driver, load_bar_strategy
from hpte.kernels.backtest.bars import METRICS, NOUT, OUT_TOTAL_RETURN

THREADS_PER_BLOCK = 128
DEFAULT_MEMORY = "4GiB"
LOWER_IS_BETTER = ("max_drawdown", "volatility")


class SweepError(ValueError):
    """Bad sweep input (one line, names it), raised before any work starts."""


def parse_bytes(text) -> int:
    """'4GiB', '512MB', '1e9' -> bytes."""
    if isinstance(text, (int, float)):
        return int(text)
    t = str(text).strip()
    units = {"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
             "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "b": 1}
    low = t.lower()
    for u in sorted(units, key=len, reverse=True):
        if low.endswith(u):
            try:
                return int(float(low[: -len(u)]) * units[u])
            except ValueError:
                break
    try:
        return int(float(t))
    except ValueError:
        raise SweepError(f"--memory {text!r}: use a size such as 4GiB or 512MB") from None


# ---------------------------------------------------------------------------------------------
# one parameter set
# ---------------------------------------------------------------------------------------------
@dataclass
class BarBacktest:
    """One bar backtest: metrics (``METRICS``) and, per bar, the equity, position and cash after
    that bar's order; ``fills`` and ``write`` give the trades, the curve and a report (what
    ``hpte backtest`` prints and writes for a bar strategy)."""
    strategy: str
    params: dict
    metrics: dict
    equity: np.ndarray                      # float64[n], equity after each bar's order
    position: np.ndarray = None             # float64[n], units (fractional)
    cash: np.ndarray = None                 # float64[n]
    time: np.ndarray = None                 # float64[n], the bars' time column (ns)
    close: np.ndarray = None                # float64[n]
    config: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)

    @property
    def fills(self) -> dict:
        """The trades: one row per bar whose order changed the position, at that bar's close."""
        pos = np.asarray(self.position, np.float64)
        prev = np.concatenate([[0.0], pos[:-1]])
        i = np.flatnonzero(pos != prev)
        d = pos[i] - prev[i]
        return {"ts_ns": self.time[i].astype(np.int64), "bar": i.astype(np.int64),
                "side": np.sign(d).astype(np.int8), "price": self.close[i], "qty": np.abs(d),
                "position": pos[i], "cash": self.cash[i]}

    @property
    def curve(self) -> dict:
        return {"ts_ns": self.time.astype(np.int64), "close": self.close, "position": self.position,
                "cash": self.cash, "equity": self.equity}

    def summary(self) -> str:
        m = self.metrics
        rows = [("strategy", self.strategy),
                ("params", ", ".join(f"{k}={v:g}" for k, v in self.params.items())),
                ("bars", f"{len(self.equity):,}"),
                ("total return", f"{m['total_return']:.6%}"), ("pnl", f"{m['pnl']:,.6g}"),
                ("end value", f"{m['end_value']:,.6g}"), ("sharpe", f"{m['sharpe']:.3f}"),
                ("volatility", f"{m['volatility']:.6g}"), ("max drawdown", f"{m['max_drawdown']:.4%}"),
                ("trades", f"{int(m['trades']):,}"), ("exposure", f"{m['exposure']:.4f}"),
                ("speed", f"{self.stats.get('seconds', 0):.3f} s (compile/load {self.stats.get('compile_s', 0):.2f} s)")]
        w = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)

    def write(self, out, report: bool = True) -> Path:
        """fills.parquet (the trades), equity.parquet (per bar), summary.json (and report.png)."""
        import json

        import pyarrow as pa
        import pyarrow.parquet as pq

        d = Path(out)
        d.mkdir(parents=True, exist_ok=True)
        for name, t in (("fills", self.fills), ("equity", self.curve)):
            pq.write_table(pa.table({k: pa.array(v) for k, v in t.items()}), d / f"{name}.parquet")
        (d / "summary.json").write_text(json.dumps(
            {"strategy": self.strategy, "params": self.params, "config": self.config,
             "metrics": self.metrics, "stats": self.stats}, indent=2, default=float) + "\n")
        if report:
            from hpte.engine.sweep.plot import draw_bar_report
            draw_bar_report(self, d / "report.png")
        return d


def _kernel(strat: BarStrategy, attr: str):
    try:
        return getattr(driver(strat), attr)
    except StrategyError:
        raise
    except Exception as e:  # noqa: BLE001
        raise diagnose(strat, e) from None


def _call(strat, fn, *args):
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - numba typing errors name the strategy's callback
        if type(e).__module__.startswith("numba"):
            raise diagnose(strat, e) from None
        raise


def backtest_bars(strategy, data, *, params: dict | None = None, fee: float = 0.0,
                  init_cash: float = 100.0, bars_year: float | None = None, symbol=None) -> BarBacktest:
    """One bar backtest (serial kernel, with the equity curve): what every sweep row must equal."""
    if not (math.isfinite(fee) and 0.0 <= fee < 1.0):
        raise SweepError(f"fee {fee}: a fraction of traded value in [0, 1)")
    if not (math.isfinite(init_cash) and init_cash > 0):
        raise SweepError(f"init_cash {init_cash}: must be positive")
    strat = load_bar_strategy(strategy)
    p = strat.param_vector(params)
    base = load_bars(data, symbol)
    mat = strat.prepare(base)
    ann = bars_per_year(base) if bars_year is None else float(bars_year)
    out = np.zeros(NOUT, np.float64)
    curve = np.zeros((3, mat.shape[1]), np.float64)
    t0 = time.perf_counter()
    kern = _kernel(strat, "backtest_cpu")
    # compile (or load) on two bars, timed apart
    _call(strat, kern, np.ascontiguousarray(mat[:, :2]), p, float(fee), float(init_cash), ann,
          np.zeros(NOUT, np.float64), np.zeros((3, 0), np.float64))
    t1 = time.perf_counter()
    _call(strat, kern, mat, p, float(fee), float(init_cash), ann, out, curve)
    t2 = time.perf_counter()
    name = str(data) if isinstance(data, (str, Path)) else f"<{type(data).__name__}>"
    return BarBacktest(strategy=strat.name, params=dict(zip(strat.params, map(float, p))),
                       metrics=dict(zip(METRICS, map(float, out))), equity=curve[0], position=curve[1],
                       cash=curve[2], time=base[0].copy(), close=base[4].copy(),
                       config={"data": name, "fee": float(fee), "init_cash": float(init_cash),
                               "bars_per_year": ann, "symbol": symbol},
                       stats={"bars": int(mat.shape[1]), "seconds": t2 - t1, "compile_s": t1 - t0})


# ---------------------------------------------------------------------------------------------
# sweeps
# ---------------------------------------------------------------------------------------------
@dataclass
class SweepResult:
    strategy: str
    names: list                 # parameter columns
    swept: list
    metric: str
    top: dict                   # the best rows (columns), best first
    table: dict | None          # the whole results table when kept in memory (out=None)
    path: Path | None           # results.parquet when written
    stats: dict = field(default_factory=dict)
    plot: Path | None = None
    metrics: list = field(default_factory=lambda: list(METRICS))     # the metric columns
    ints: tuple = ("trades",)                                         # integer metric columns

    def summary(self, n: int | None = None) -> str:
        cols = self.names + [m for m in self.metrics]
        rows = len(self.top.get(cols[0], ())) if cols else 0
        n = rows if n is None else min(n, rows)
        head = ["rank"] + cols
        body = []
        for r in range(n):
            line = [str(r + 1)]
            for c in cols:
                v = self.top[c][r]
                line.append(f"{int(v)}" if c in self.ints else f"{v:g}" if c in self.names else f"{v:.6g}")
            body.append(line)
        w = [max(len(h), *(len(b[j]) for b in body)) if body else len(h) for j, h in enumerate(head)]
        lines = ["  ".join(h.rjust(w[j]) for j, h in enumerate(head))]
        lines += ["  ".join(x.rjust(w[j]) for j, x in enumerate(b)) for b in body]
        s = self.stats
        unit = s.get("unit", "bars")
        mode = ", impact mode" if s.get("mode") == "impact" else ""
        lines.append(f"{s.get('sets', 0):,} parameter sets x {s.get(unit, 0):,} {unit} on {s.get('device', '?')}{mode}: "
                     f"{s.get('seconds', 0):.2f} s, {s.get('steps_per_s', 0) / 1e6:,.1f} M "
                     f"{'bar' if unit == 'bars' else 'event'}-parameter steps/s "
                     f"(compile/load {s.get('compile_s', 0):.2f} s)")
        return "\n".join(lines)


class _Sink:
    """Where a sweep's rows go, chunk by chunk in grid order: the top N, the whole table in
    memory (out=None) or results.parquet (streamed; opened with the first rows, so that a failed
    compile leaves no file), and progress."""

    def __init__(self, names, metrics, int_metrics, top, metric, lower, out, size, progress):
        self.names, self.metrics, self.ints = list(names), list(metrics), set(int_metrics)
        self.best = _TopN(top, metric, lower)
        self.keep = [] if out is None else None
        self.path = Path(out) / "results.parquet" if out is not None else None
        self.writer = None
        self.done, self.size, self.progress = 0, size, progress

    def emit(self, sets: np.ndarray, metrics: dict) -> None:
        cols = {n: sets[:, j] for j, n in enumerate(self.names)}
        for m in self.metrics:
            v = np.asarray(metrics[m])
            cols[m] = v.astype(np.int64) if m in self.ints else v.astype(np.float64)
        self.best.add(cols)
        if self.keep is not None:
            self.keep.append(cols)
        if self.path is not None:
            import pyarrow as pa
            if self.writer is None:
                import pyarrow.parquet as pq
                self.path.parent.mkdir(parents=True, exist_ok=True)
                schema = pa.schema([(n, pa.float64()) for n in self.names] +
                                   [(m, pa.int64() if m in self.ints else pa.float64()) for m in self.metrics])
                self.writer = pq.ParquetWriter(self.path, schema)
            self.writer.write_table(pa.table(cols, schema=self.writer.schema))
        self.done += len(sets)
        if self.progress is not None:
            self.progress(self.done, self.size)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def table(self) -> dict | None:
        if not self.keep:
            return None
        return {k: np.concatenate([c[k] for c in self.keep]) for k in self.keep[0]}


class _TopN:
    """The best n rows seen so far (ties: the earlier row first), kept across chunks."""

    def __init__(self, n: int, metric: str, lower_better: bool):
        self.n, self.metric, self.lower = n, metric, lower_better
        self.cols: dict | None = None

    def add(self, cols: dict) -> None:
        if self.n <= 0:
            return
        if self.cols is None:
            merged = {k: np.asarray(v) for k, v in cols.items()}
        else:
            merged = {k: np.concatenate([self.cols[k], cols[k]]) for k in cols}
        key = merged[self.metric].astype(np.float64)
        key = np.where(np.isnan(key), np.inf, key if self.lower else -key)
        order = np.argsort(key, kind="stable")[: self.n]
        self.cols = {k: v[order] for k, v in merged.items()}


def _strategy_blob(strat: BarStrategy) -> tuple:
    return (strat.name, strat.source, str(strat.path))


def _load_blob(blob, loader=None):
    """A strategy on a worker: from its path when the file there holds the same source, else from
    the source written into the worker's cache folder (remote machines)."""
    loader = loader or load_bar_strategy
    name, source, path = blob
    p = Path(path)
    try:
        if p.is_file() and p.read_text() == source:
            return loader(p)
    except OSError:
        pass
    d = cache_dir() / "sources" / hashlib.sha256(source.encode()).hexdigest()[:16]
    d.mkdir(parents=True, exist_ok=True)
    f = d / f"{name}.py"
    if not f.is_file():
        tmp = f.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(source)
        os.replace(tmp, f)
    return loader(f)


_worker_mat: dict = {}


def _worker_matrix(mat: np.ndarray) -> np.ndarray:
    """The data as the kernels' cached signature wants it (C-contiguous, writable). Data a Dask
    worker received is read-only (a different numba type: a recompile in every worker), so each
    worker process keeps one writable copy per data set, made on its first task."""
    if mat.flags.c_contiguous and mat.flags.writeable:
        return mat
    key = (id(mat), mat.shape)
    if key not in _worker_mat:
        _worker_mat.clear()
        _worker_mat[key] = (mat, np.array(mat, dtype=np.float64, order="C"))
    return _worker_mat[key][1]


def warm_worker(blob, rows: int, P: int) -> float:
    """Load (or compile) the strategy's CPU driver in a worker; returns the seconds it took."""
    t0 = time.perf_counter()
    strat = _load_blob(blob)
    kern = _kernel(strat, "sweep_cpu")
    tiny = np.ones((rows, 2), np.float64)
    _call(strat, kern, tiny, np.ones((1, P), np.float64), 0.0, 1.0, 1.0, np.zeros((1, NOUT), np.float64))
    return time.perf_counter() - t0


def run_chunk_cpu(blob, mat: np.ndarray, grid: Grid, start: int, stop: int, fee: float, init_cash: float,
                  ann: float) -> tuple:
    """Parameter sets start..stop-1 with the CPU kernel: (start, float64[k, P] sets, float64[k, NOUT]).
    The Dask task (runs in a worker)."""
    strat = _load_blob(blob)
    mat = _worker_matrix(mat)
    sets = grid.chunk(start, stop)
    out = np.zeros((stop - start, NOUT), np.float64)
    _call(strat, _kernel(strat, "sweep_cpu"), mat, sets, fee, init_cash, ann, out)
    return start, sets, out


class _GpuRunner:
    """The CUDA driver: data resident on the device (CuPy; NumPy under the simulator)."""

    def __init__(self, strat: BarStrategy, mat: np.ndarray, simulator: bool):
        self.kernel = make_sweep_cuda_for(strat)
        if simulator:
            import numpy as xp
        else:
            import cupy as xp
        self.xp = xp
        self.mat = xp.asarray(mat)
        self.none = xp.zeros((3, 0), dtype=xp.float64)

    def run(self, sets: np.ndarray, fee: float, init_cash: float, ann: float) -> np.ndarray:
        xp = self.xp
        k = sets.shape[0]
        g = xp.asarray(sets)
        out = xp.zeros((k, NOUT), dtype=xp.float64)
        tpb = THREADS_PER_BLOCK
        self.kernel[(k + tpb - 1) // tpb, tpb](self.mat, g, fee, init_cash, ann, out, self.none)
        return out.get() if hasattr(out, "get") else np.asarray(out)


_cuda_kernels: dict = {}


def make_sweep_cuda_for(strat: BarStrategy):
    mod = driver(strat)
    key = mod.__name__
    if key not in _cuda_kernels:
        _cuda_kernels[key] = mod.make_sweep_cuda()
    return _cuda_kernels[key]


def _connect(cluster, workers: int, threads_per_worker: int, cache: Path | None = None):
    """(client, owned cluster or None) for 'local' or a scheduler address; SweepError if it cannot.
    ``cache``: the folder of the driver this process loaded; a local cluster's workers use it
    as their HPTE_CACHE_DIR, so that they load what this process compiled (a process keeps
    the drivers it loaded whatever HPTE_CACHE_DIR says later)."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise SweepError("--cluster needs Dask: pip install 'hpte[dask]'") from None
    if cluster == "local":
        # each worker's numba uses threads_per_worker threads: workers x threads = the cores asked for
        env = {"NUMBA_NUM_THREADS": str(threads_per_worker)}
        if cache is not None:
            env["HPTE_CACHE_DIR"] = str(cache)
        lc = LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker, processes=True,
                          dashboard_address=None, env=env)
        return Client(lc), lc
    try:
        client = Client(cluster, timeout="5s")
    except Exception as e:  # noqa: BLE001 - OSError, TimeoutError, ValueError for a bad address
        raise SweepError(f"--cluster {cluster}: unreachable ({type(e).__name__}: {' '.join(str(e).split())[:160]})") from None
    return client, None


def run_on_dask(client, data: tuple, bounds, size: int, submit, emit, retries: int = 3) -> None:
    """Run a sweep's chunks as Dask tasks and hand each chunk's (parameter sets, results) to `emit`
    in grid order as they complete.

    data: the objects every task reads (the market data, the grid), scattered to every worker once;
    submit(scattered, start, stop, key_suffix) submits one chunk's task and returns its future, whose
    result is (start, sets, results). A worker killed mid-task costs Dask a retried task; a chunk
    whose task was cancelled because the scattered data went with the workers that held it is
    submitted again over freshly scattered data (at most `retries` times a chunk). A chunk that
    comes back twice is an error, never a duplicated row."""
    from concurrent.futures import CancelledError
    from dask.distributed import as_completed
    held: list = []

    def futures(x):     # client.scatter gives a future, or a dict / list of them for a dict / list
        return list(x.values()) if isinstance(x, dict) else list(x) if isinstance(x, (list, tuple)) else [x]

    def scattered():
        if not held or any(f.status != "finished" for x in held[-1] for f in futures(x)):
            held.append([client.scatter(x, broadcast=True) for x in data])
        return held[-1]

    def go(i: int, attempt: int):
        s, e = bounds[i]
        return submit(scattered(), s, e, f"-{s}" + (f"-r{attempt}" if attempt else ""))

    futs = [go(i, 0) for i in range(len(bounds))]
    which = {f.key: i for i, f in enumerate(futs)}
    tries = [0] * len(bounds)
    pending: dict = {}
    nxt = 0
    done = as_completed(futs)
    for fut in done:
        i = which[fut.key]
        try:
            s, sets, res = fut.result()
        except CancelledError:
            if tries[i] >= retries:
                raise
            tries[i] += 1
            again = go(i, tries[i])
            which[again.key] = i
            done.add(again)
            continue
        if s in pending or s < (bounds[nxt][0] if nxt < len(bounds) else size):
            raise RuntimeError(f"chunk at {s} came back twice")
        pending[s] = (sets, res)
        while nxt < len(bounds) and bounds[nxt][0] in pending:
            emit(*pending.pop(bounds[nxt][0]))
            nxt += 1


def _plan_chunk(size: int, P: int, budget: int, data_bytes: int, chunk: int | None, parts: int) -> int:
    per_row = 8 * (P + NOUT) * 3        # sets, outputs, Arrow copy
    avail = budget - data_bytes
    if avail < per_row:
        raise SweepError(f"the bar data needs {data_bytes / 2**20:,.0f} MiB, more than the memory budget "
                         f"({budget / 2**20:,.0f} MiB); raise --memory")
    cap = max(1, avail // per_row)
    if chunk is not None:
        if chunk < 1:
            raise SweepError(f"--chunk must be >= 1, got {chunk}")
        if chunk > cap:
            raise SweepError(f"--chunk {chunk:,} parameter sets do not fit in the memory budget "
                             f"({budget / 2**20:,.0f} MiB; at most {cap:,})")
        return chunk
    c = min(cap, 1 << 16, max(1, -(-size // parts)))
    return max(1, c)


def check_common(metric: str, metrics, top: int, workers: int, threads_per_worker: int) -> None:
    """The options every sweep (bars or ticks) takes, checked before any work starts."""
    if metric not in metrics:
        raise SweepError(f"--metric {metric!r}: use one of {', '.join(metrics)}")
    if top < 0:
        raise SweepError(f"--top {top}: must be >= 0")
    if workers < 1 or threads_per_worker < 1:
        raise SweepError("--workers and --threads-per-worker must be >= 1")


def swept_grid(strat, params, grid, max_size: int, what: str, form: str) -> Grid:
    """The grid of a sweep: at least one swept parameter and at most ``max_size`` sets.

    ``what`` names the sweep in the size error; ``form`` is the --param syntax shown in the hint."""
    g = make_grid(strat, params, grid)
    if not g.swept:
        raise SweepError(f"{strat.name}: nothing to sweep: give at least one --param {form} "
                         f"(parameters: {', '.join(strat.params) or 'none'})")
    if g.size > max_size:
        raise SweepError(f"a grid of {g.size:,} parameter sets is too large{what}")
    return g


def sweep(strategy, data, *, params: dict | None = None, grid=None, device: str = "cpu", cluster=None,
          out=None, top: int = 10, metric: str | None = None, fee: float = 0.0, init_cash: float = 100.0,
          bars_year: float | None = None, symbol=None, chunk: int | None = None, memory=DEFAULT_MEMORY,
          workers: int = 2, threads_per_worker: int = 1, plot: bool = True, progress=None,
          latency=None, fees=None, seed: int = 0, capital: float = 1e9, sample="1m", timer=None,
          tick: int | None = None, max_instant_actions: int = 100_000, stock: str | None = None,
          mode: str = "no-impact", queue: str | None = None) -> SweepResult:
    """Run ``strategy`` (a bar strategy file, bundled name or BarStrategy) over every parameter
    set of a grid on ``data`` (bars: see hpte.engine.sweep.data.load_bars).

    params : name -> ``"START:STOP:STEP"`` (inclusive), ``"A,B,C"``, a number or a sequence.
    grid : a TOML grid file (``[params]`` table); ``params`` override it.
    device : "cpu" or "gpu" ("gpu" without a GPU raises DeviceError before any work).
    cluster : None (in process), "local" (a LocalCluster of ``workers`` processes, started and
        stopped here) or a scheduler address ``tcp://HOST:PORT``.
    out : folder for results.parquet (streamed chunk by chunk) and heatmap.png / ranking.png;
        None keeps the whole table in memory (``SweepResult.table``), if it fits in ``memory``.
    top, metric : how many rows ``SweepResult.top`` keeps, ranked by which metric.
    fee : fraction of traded value per order; init_cash : starting cash.
    bars_year : bars per year for Sharpe and volatility (default: from the bar times).
    chunk : parameter sets per chunk (default: from ``memory``, at most 65,536; 2 chunks per Dask worker).
    progress : called as progress(sets_done, sets_total) after each chunk.

    A tick strategy (``market_maker``, ``momentum``, a file with ``on_book``) sweeps over an L3
    market-event stream instead (hpte.engine.sweep.ticks): ``data`` as for ``hpte.backtest``,
    which options ``latency``, ``fees``, ``seed``, ``capital``, ``sample``, ``timer``, ``tick``,
    ``max_instant_actions``, ``stock`` and ``mode`` ("no-impact" or "impact": every parameter set
    with its own simulated book, as ``hpte backtest --mode impact``) are; rows carry the
    backtest's metrics (ranked by ``pnl`` by default); CPU threads, a Dask cluster or (no-impact
    mode) a GPU (hpte.engine.sweep.ticks_gpu). ``queue`` (no-impact, CPU): the queue model of L2
    data (price levels and trades, no order ids), as ``hpte backtest --queue``.
    """
    t_start = time.perf_counter()
    from hpte.engine.backtest.strategy import is_bar_strategy

    # bars given as arrays always go to the bar path (whose loader names what a bar strategy lacks)
    if mode not in ("no-impact", "impact"):
        raise SweepError(f"--mode {mode!r}: use no-impact or impact")
    if not isinstance(data, np.ndarray) and not is_bar_strategy(strategy):
        if device not in ("cpu", "gpu"):
            raise SweepError(f"--device {device!r}: use cpu or gpu")
        if device == "gpu" and mode == "impact":
            raise SweepError("--device gpu: impact-mode tick sweeps run on CPU threads or a Dask cluster; the GPU "
                             "driver is for no-impact tick sweeps and bar strategies")
        if device == "gpu" and cluster is not None:
            raise SweepError("--cluster runs the CPU kernel in each worker; use --device cpu with --cluster")
        bar_only = [k for k, v, d in (("fee", fee, 0.0), ("init_cash", init_cash, 100.0), ("bars_year", bars_year, None),
                                      ("symbol", symbol, None)) if v != d]
        if bar_only:
            raise SweepError(f"{', '.join(bar_only)}: bar-sweep options; a tick strategy takes fees "
                             f"(maker=,taker= per lot) and capital")
        from hpte.engine.sweep.ticks import sweep_ticks
        return sweep_ticks(strategy, data, params=params, grid=grid, cluster=cluster, out=out, top=top,
                           metric=metric, latency=latency, fees=fees, seed=seed, capital=capital, sample=sample,
                           timer=timer, tick=tick, max_instant_actions=max_instant_actions, chunk=chunk,
                           workers=workers, threads_per_worker=threads_per_worker, plot=plot, progress=progress,
                           stock=stock, mode=mode, device=device, queue=queue)
    if mode != "no-impact":
        raise SweepError(f"--mode {mode}: a tick-sweep option (the strategy's orders in the replayed L3 book); "
                         f"a bar strategy trades at each bar's close")
    tick_only = [k for k, v, d in (("latency", latency, None), ("fees", fees, None), ("timer", timer, None),
                                   ("tick", tick, None), ("stock", stock, None),
                                   ("queue", queue, None)) if v != d]
    if tick_only:
        raise SweepError(f"{', '.join(tick_only)}: tick-sweep options; a bar strategy takes fee (a fraction of "
                         f"traded value) and init_cash")
    metric = metric or "total_return"
    # ---- validation: everything below raises before any work starts
    if device not in ("cpu", "gpu"):
        raise SweepError(f"--device {device!r}: use cpu or gpu")
    if cluster is not None and device != "cpu":
        raise SweepError("--cluster runs the CPU kernel in each worker; use --device cpu with --cluster")
    check_common(metric, METRICS, top, workers, threads_per_worker)
    if not (math.isfinite(fee) and 0.0 <= fee < 1.0):
        raise SweepError(f"--fee {fee}: a fraction of traded value in [0, 1)")
    if not (math.isfinite(init_cash) and init_cash > 0):
        raise SweepError(f"--init-cash {init_cash}: must be positive")
    budget = parse_bytes(memory)
    strat = load_bar_strategy(strategy)
    g = swept_grid(strat, params, grid, 1 << 40, "", "NAME=START:STOP:STEP")
    size = g.size
    base = load_bars(data, symbol)
    mat = strat.prepare(base)
    ann = bars_per_year(base) if bars_year is None else float(bars_year)
    if mat.nbytes >= budget:
        raise SweepError(f"the bar data needs {mat.nbytes / 2**20:,.1f} MiB, more than the memory budget "
                         f"({budget / 2**20:,.1f} MiB); raise --memory")
    P = len(g.names)
    table_bytes = size * 8 * (P + NOUT)
    if out is None and table_bytes * 2 > budget - mat.nbytes:
        raise SweepError(f"a grid of {size:,} parameter sets needs {table_bytes / 2**20:,.0f} MiB of results, "
                         f"more than the memory budget ({budget / 2**20:,.0f} MiB) allows in memory; give an "
                         f"output folder (--out) to stream them to Parquet, or raise --memory")
    if out is not None:
        import shutil
        probe = Path(out).resolve()
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        free = shutil.disk_usage(probe).free
        if table_bytes > free:
            raise SweepError(f"a grid of {size:,} parameter sets needs about {table_bytes / 2**30:,.1f} GiB of results, "
                             f"more than the {free / 2**30:,.1f} GiB free under {out}")
    parts = 2 * workers if cluster is not None else 1   # 2 chunks per worker: measured best
    csize = _plan_chunk(size, P, budget, mat.nbytes, chunk, parts)
    nchunks = -(-size // csize)
    bounds = [(s, min(s + csize, size)) for s in range(0, size, csize)] if nchunks <= 1 << 20 else None
    if bounds is None:
        raise SweepError(f"a grid of {size:,} parameter sets in chunks of {csize:,} is {nchunks:,} chunks; "
                         f"raise --memory or --chunk")
    info = None
    if device == "gpu":
        from hpte.engine.device import resolve_device
        info = resolve_device("gpu")          # DeviceError names what is missing
    client = owned = None
    if cluster is not None:
        client, owned = _connect(cluster, workers, threads_per_worker, Path(driver(strat).__file__).parent)

    # ---- work
    names = list(g.names)
    sink = _Sink(names, list(METRICS), ("trades",), top, metric, metric in LOWER_IS_BETTER, out, size, progress)
    compile_s = 0.0

    def emit(sets, res):
        sink.emit(sets, {m: res[:, j] for j, m in enumerate(METRICS)})

    t_run = time.perf_counter()
    try:
        if client is not None:
            blob = _strategy_blob(strat)
            t0 = time.perf_counter()
            client.run(warm_worker, blob, mat.shape[0], P)     # every worker loads the driver once
            compile_s = time.perf_counter() - t0
            t_run = time.perf_counter()
            key = f"hpte-sweep-{os.getpid()}-{id(g):x}"
            run_on_dask(client, (mat, g), bounds, size,
                        lambda d, s, e, suffix: client.submit(run_chunk_cpu, blob, d[0], d[1], s, e, float(fee),
                                                              float(init_cash), ann, key=key + suffix, pure=False),
                        emit)
            devname = f"dask ({'local cluster, ' if owned is not None else cluster + ', '}"\
                      f"{len(client.scheduler_info()['workers'])} workers)"
        elif device == "gpu":
            t0 = time.perf_counter()
            runner = _GpuRunner(strat, mat, info.simulator)
            first = True
            for s, e in bounds:
                sets = g.chunk(s, e)
                res = _call(strat, runner.run, sets, float(fee), float(init_cash), ann)
                if first:
                    compile_s = time.perf_counter() - t0
                    first = False
                emit(sets, res)
            devname = f"gpu ({info.name or info.reason})"
        else:
            t0 = time.perf_counter()
            kern = _kernel(strat, "sweep_cpu")
            # compile (or load from numba's cache) on a 1-set, 2-bar call, timed apart
            _call(strat, kern, np.ascontiguousarray(mat[:, :2]), g.chunk(0, 1), float(fee), float(init_cash),
                  ann, np.zeros((1, NOUT), np.float64))
            compile_s = time.perf_counter() - t0
            t_run = time.perf_counter()
            for s, e in bounds:
                sets = g.chunk(s, e)
                res = np.zeros((e - s, NOUT), np.float64)
                _call(strat, kern, mat, sets, float(fee), float(init_cash), ann, res)
                emit(sets, res)
            import numba
            devname = f"cpu ({numba.get_num_threads()} threads)"
        sink.close()
        seconds = time.perf_counter() - t_run      # the sweep itself: not the cluster's shutdown
    finally:
        sink.close()
        if client is not None:
            client.close()
        if owned is not None:
            owned.close()
    n = mat.shape[1]
    stats = {"sets": size, "bars": n, "chunks": len(bounds), "chunk": csize, "device": devname,
             "seconds": seconds, "compile_s": compile_s, "steps_per_s": size * n / seconds if seconds > 0 else 0.0,
             "total_s": time.perf_counter() - t_start, "bars_per_year": ann}
    res = SweepResult(strategy=strat.name, names=names, swept=g.swept, metric=metric,
                      top=sink.best.cols or {}, table=sink.table(), path=sink.path, stats=stats)
    if out is not None and plot:
        from hpte.engine.sweep.plot import draw
        res.plot = draw(res, g, Path(out))
    return res
