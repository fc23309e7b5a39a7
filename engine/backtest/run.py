"""``hpte.backtest``: run a strategy over a market-event stream and collect its orders, fills,
equity curve and metrics.

    res = hpte.backtest("market_maker", "AMZN_..._message_5.csv", params={"size": 50},
                        latency="feed=100us,entry=50us:150us,response=100us", fees="maker=-20,taker=30")
    res.metrics["pnl"], res.fills, res.orders, res.equity
    res.write("out/")   # orders/fills/equity Parquet, summary.json, report.png

The simulation itself is hpte.kernels.backtest.loop (its docstring has the rules); this module
validates, allocates, feeds chunks and reads the outputs back. Memory is flat in the data's
length: the stream is fed in chunks of ``chunk_events`` (a lagging tail of at most the feed
latency's worth of events is carried to the next chunk) and the outputs are drained whenever
a buffer fills.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hpte.engine.backtest.data import COLUMNS, MarketEvents, open_data
from hpte.engine.backtest.strategy import (Strategy, StrategyError, diagnose, driver, is_bar_strategy,
                                          load_strategy)
from hpte.engine.io import InputError, parse_duration
from hpte.kernels.backtest import api as A
from hpte.kernels.backtest import loop as K
from hpte.kernels.backtest import metrics as M
from hpte.kernels.backtest.impact import SimBook, no_book

MODES = ("no-impact", "impact")


@dataclass
class Latency:
    """Latencies in ns: (lo, hi) per channel; lo == hi is a constant, else uniform in [lo, hi];
    a channel in ``tables`` draws from that int64 array of observed values instead (its (lo,
    hi) is then the table's min and max, for display)."""
    feed: tuple = (0, 0)
    entry: tuple = (0, 0)
    response: tuple = (0, 0)
    seed: int = 0
    tables: dict = field(default_factory=dict)
    sources: dict = field(default_factory=dict)


def read_latency_table(path, what: str = "latency") -> np.ndarray:
    """Observed latencies (int64 ns, >= 0) from a CSV (one value per line, an optional header
    line; or a ``latency_ns`` column among several) or a Parquet/IPC file (its ``latency_ns``
    column, or its only column)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"latency {what}: table {p}: no such file")
    if p.suffix.lower() == ".csv":
        import pyarrow.csv as pc

        try:
            t = pc.read_csv(p)
        except Exception as e:  # noqa: BLE001 - pyarrow's error types
            raise InputError(f"latency {what}: table {p}: not a readable CSV ({e})") from None
        if t.num_columns == 1 and t.column_names[0].strip().lstrip("-").isdigit():
            t = pc.read_csv(p, read_options=pc.ReadOptions(column_names=["latency_ns"]))
    else:
        import pyarrow.parquet as pq

        try:
            if p.suffix.lower() in (".arrow", ".ipc", ".feather"):
                import pyarrow as pa

                with pa.memory_map(str(p)) as src:
                    t = pa.ipc.open_file(src).read_all()
            else:
                t = pq.read_table(p)
        except Exception as e:  # noqa: BLE001
            raise InputError(f"latency {what}: table {p}: not a readable Parquet/IPC file ({e})") from None
    if "latency_ns" in t.column_names:
        col = t.column("latency_ns")
    elif t.num_columns == 1:
        col = t.column(0)
    else:
        raise InputError(f"latency {what}: table {p}: no latency_ns column (columns: {', '.join(t.column_names)})")
    if len(col) == 0:
        raise InputError(f"latency {what}: table {p}: no values")
    if col.null_count:
        raise InputError(f"latency {what}: table {p}: {col.null_count} empty value(s)")
    v = np.asarray(col.to_numpy(zero_copy_only=False))
    if v.dtype.kind not in "iu" and not (v.dtype.kind == "f" and np.all(v == np.floor(v))):
        raise InputError(f"latency {what}: table {p}: values must be integer nanoseconds")
    v = v.astype(np.int64)
    if len(v) == 0:
        raise InputError(f"latency {what}: table {p}: no values")
    if (v < 0).any():
        raise InputError(f"latency {what}: table {p}: row {int(np.flatnonzero(v < 0)[0])}: negative latency {int(v[v < 0][0])}")
    return np.ascontiguousarray(v)


def _dur(text: str, what: str) -> int:
    t = str(text).strip()
    if t in ("0", "0ns", "0us", "0ms", "0s"):
        return 0
    try:
        return parse_duration(t)
    except ValueError as e:
        raise ValueError(f"latency {what}: {e}") from None


def parse_latency(spec, seed: int = 0) -> Latency:
    """``None`` (zero), a Latency, one duration for all three channels ('100us'), or
    'feed=100us,entry=50us:150us,response=100us' (lo:hi = uniform, seeded), where a channel may
    be ``table:FILE`` (observed latencies in ns, ``read_latency_table``; drawn uniformly, seeded)
    or an int array; a dict works too."""
    if spec is None:
        return Latency(seed=seed)
    if isinstance(spec, Latency):
        return spec
    if isinstance(spec, dict):
        items = list(spec.items())
    else:
        text = str(spec).strip()
        if "=" not in text:
            items = [("feed", text), ("entry", text), ("response", text)]
        else:
            items = []
            for part in text.split(","):
                if "=" not in part:
                    raise ValueError(f"latency: {part!r} is not NAME=DURATION (names: feed, entry, response)")
                k, v = part.split("=", 1)
                items.append((k.strip(), v.strip()))
    out = Latency(seed=seed)
    for k, v in items:
        if k not in ("feed", "entry", "response"):
            raise ValueError(f"latency: unknown channel {k!r} (channels: feed, entry, response)")
        if isinstance(v, np.ndarray) or (isinstance(v, str) and v.strip().lower().startswith("table:")):
            if isinstance(v, np.ndarray):
                tab = np.ascontiguousarray(v, dtype=np.int64)
                if len(tab) == 0 or (tab < 0).any():
                    raise ValueError(f"latency {k}: a table needs values >= 0")
                out.sources[k] = f"table of {len(tab)} values"
            else:
                path = v.strip()[len("table:"):]
                tab = read_latency_table(path, k)
                out.sources[k] = f"table:{path}"
            out.tables[k] = tab
            setattr(out, k, (int(tab.min()), int(tab.max())))
            continue
        if isinstance(v, (tuple, list)):
            lo, hi = (_dur(x, k) for x in v)
        elif ":" in str(v):
            a, b = str(v).split(":", 1)
            lo, hi = _dur(a, k), _dur(b, k)
        else:
            lo = hi = _dur(v, k)
        if hi < lo:
            raise ValueError(f"latency {k}: the range {v!r} is inverted")
        setattr(out, k, (lo, hi))
    return out


QUEUE_HELP = "conservative, prob (= prob:power:3), prob:power:N (N > 0) or prob:log"


def parse_queue(spec) -> tuple[int, int]:
    """The queue model of L2 data as (cfg[CF_QUEUE], cfg[CF_QPARAM]): None (L3 data, exact
    queue position: (Q_L3, 0)), 'conservative', 'prob' (= 'prob:power:3'), 'prob:power:N'
    (f(x) = x ** N, N > 0, kept to 1/1000) or 'prob:log' (f(x) = log(1 + x))."""
    if spec is None:
        return K.Q_L3, 0
    text = str(spec).strip().lower()
    if text == "conservative":
        return K.Q_CONSERVATIVE, 0
    parts = text.split(":")
    if parts[0] == "prob":
        if len(parts) == 1:
            return K.Q_POWER, 3000
        if parts[1] == "log" and len(parts) == 2:
            return K.Q_LOG, 0
        if parts[1] == "power" and len(parts) <= 3:
            if len(parts) == 2:
                return K.Q_POWER, 3000
            try:
                n = float(parts[2])
            except ValueError:
                raise ValueError(f"queue {spec!r}: the exponent {parts[2]!r} is not a number") from None
            if not (math.isfinite(n) and 0 < n <= 100) or round(n * 1000) == 0:
                raise ValueError(f"queue {spec!r}: the exponent must be in (0, 100], got {parts[2]}")
            return K.Q_POWER, int(round(n * 1000))
    raise ValueError(f"queue {spec!r}: use {QUEUE_HELP}")


def check_l2_chunk(chunk: dict, queue: int, row0: int, name: str) -> None:
    """L2 rows (MK_LEVEL, MK_TRADE) need a queue model, a queue model needs L2 rows."""
    k = chunk["kind"]
    if queue != K.Q_L3:
        m = (k != A.MK_LEVEL) & (k != A.MK_TRADE)
        if m.any():
            i = int(np.flatnonzero(m)[0])
            raise InputError(f"{name}: row {row0 + i}: kind {int(k[i])} is L3 data (orders with ids); a queue "
                             f"model (--queue) applies to L2 data (LEVEL and TRADE rows only): drop --queue for "
                             f"exact queue position on L3 data")
    else:
        m = k == A.MK_LEVEL
        if m.any():
            i = int(np.flatnonzero(m)[0])
            raise InputError(f"{name}: row {row0 + i}: a LEVEL row: L2 data needs a queue model, "
                             f"--queue {QUEUE_HELP}")


def parse_fees(spec) -> tuple[int, int]:
    """(maker, taker) fee per lot in price units (negative: a rebate): None, a tuple, a dict or
    'maker=-20,taker=30'."""
    if spec is None:
        return 0, 0
    if isinstance(spec, tuple):
        items = [("maker", spec[0]), ("taker", spec[1])]
    elif isinstance(spec, dict):
        items = list(spec.items())
    else:
        items = []
        for part in str(spec).split(","):
            if "=" not in part:
                raise ValueError(f"fees: {part!r} is not NAME=INTEGER (names: maker, taker)")
            k, v = part.split("=", 1)
            items.append((k.strip(), v.strip()))
    fees = {"maker": 0, "taker": 0}
    for k, v in items:
        if k not in fees:
            raise ValueError(f"fees: unknown fee {k!r} (fees: maker, taker)")
        try:
            iv = int(str(v))
        except ValueError:
            raise ValueError(f"fees: {k}={v!r} is not an integer (price units per lot)") from None
        fees[k] = iv
    return fees["maker"], fees["taker"]


@dataclass
class BacktestResult:
    """What ``backtest`` returns: the tables (dicts of numpy columns), metrics and run figures."""
    strategy: str
    params: dict
    orders: dict
    fills: dict
    equity: dict
    metrics: dict
    config: dict
    stats: dict = field(default_factory=dict)

    def summary(self) -> str:
        m = self.metrics
        mode = self.config.get("mode", "no-impact")
        if self.config.get("queue"):
            mode += f", L2 data, queue model {self.config['queue']}"
        rows = [("strategy", self.strategy), ("mode", mode),
                ("events", f"{self.stats.get('events', 0):,}"),
                ("pnl", f"{m['pnl']:,.2f} price units ({m['pnl_currency']:,.4f} currency)"),
                ("return", f"{m['return']:.6%}"), ("sharpe", f"{m['sharpe']:.3f}"),
                ("max drawdown", f"{m['max_drawdown']:,.2f}"), ("turnover", f"{m['turnover']:.4f}"),
                ("trades", f"{m['trades']:,} ({m['maker_fills']:,} maker, {m['taker_fills']:,} taker)"),
                ("volume", f"{m['volume']:,} lots"), ("fill ratio", f"{m['fill_ratio']:.4f}"),
                ("time in queue", f"{m['time_in_queue_s']:.3f} s (mean, per filled lot)"),
                ("inventory", f"{m['position_min']:,} .. {m['position_max']:,} lots (end {m['position_end']:,})"),
                ("fees", f"{m['fees']:,} price units"),
                ("orders", f"{m['orders']:,} sent, {m['cancels']:,} cancels, {m['rejects']:,} rejected"),
                ("speed", f"{self.stats.get('events_per_s', 0) / 1e6:,.2f} M events/s "
                          f"({self.stats.get('seconds', 0):.2f} s, compile/load {self.stats.get('compile_s', 0):.2f} s)")]
        w = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)

    def write(self, out, report: bool = True) -> Path:
        """orders.parquet, fills.parquet, equity.parquet, summary.json (and report.png)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        d = Path(out)
        d.mkdir(parents=True, exist_ok=True)
        for name in ("orders", "fills", "equity"):
            t = getattr(self, name)
            pq.write_table(pa.table({k: pa.array(v) for k, v in t.items()}), d / f"{name}.parquet")
        (d / "summary.json").write_text(json.dumps(
            {"strategy": self.strategy, "params": self.params, "config": self.config,
             "metrics": self.metrics, "stats": self.stats}, indent=2, default=float) + "\n")
        if report:
            from hpte.engine.backtest.report import draw_report
            draw_report(self, d / "report.png")
        return d


_FILL_NAMES = ("ts_ns", "order_id", "side", "price", "qty", "maker", "fee", "position", "cash", "seq", "queue_ns")
_EV_NAMES = ("ts_ns", "order_id", "event", "side", "price", "qty", "leaves_qty", "ahead", "reason", "order_type", "tif")
_EQ_NAMES = ("ts_ns", "position", "cash", "bid", "ask", "fees")


def rng_seed(seed: int, channel: int) -> int:
    """Initial splitmix64 state of latency stream ``channel`` (0 feed, 1 entry, 2 response),
    as the int64 the kernel stores."""
    u = (int(seed) * 3 + channel + 1) & 0xFFFFFFFFFFFFFFFF
    return u - (1 << 64) if u >= 1 << 63 else u


def _ro(a: np.ndarray) -> np.ndarray:
    """A read-only C-contiguous int64 view (copying only what is not already int64 and C-ordered):
    the data columns reach the kernel with one type whatever their source (Arrow buffers are
    read-only), so it compiles once."""
    v = np.ascontiguousarray(a, dtype=np.int64).view()
    v.flags.writeable = False
    return v


# the stream columns run_cpu takes, in its order: the order ids replaced by their ADD's index
RUN_COLUMNS = ("ts_ns", "kind", "arrival", "ends", "side", "price", "qty")


class Arrivals:
    """The market order ids of a stream resolved chunk by chunk (loop.arrivals_cpu): for every
    cancel or execution the stream index of its order's ADD, -1 when unknown. The live-order
    table is kept between chunks and doubled when it fills."""

    def __init__(self, bits: int = 16):
        self.bits = bits
        self.keys = np.full(1 << bits, K.EMPTY_KEY, np.int64)
        self.vals = np.zeros((1 << bits, 2), np.int64)
        self.live = 0
        self.seq = 0

    def resolve(self, chunk: dict) -> np.ndarray:
        """The chunk's arrival column; ``self.ends`` gets its ends column (1 where the data says
        the order is gone after the row)."""
        kind, oid, qty = (np.ascontiguousarray(chunk[c], dtype=np.int64) for c in ("kind", "order_id", "qty"))
        out = np.empty(len(kind), np.int64)
        self.ends = np.empty(len(kind), np.int64)
        st = np.array([0, self.live], np.int64)
        while not K.arrivals_cpu(kind, oid, qty, self.seq, self.keys, self.vals, self.bits, st, out, self.ends):
            self.bits += 1
            k2 = np.full(1 << self.bits, K.EMPTY_KEY, np.int64)
            v2 = np.zeros((1 << self.bits, 2), np.int64)
            K.rehash_cpu(self.keys, self.vals, k2, v2, self.bits)
            self.keys, self.vals = k2, v2
        self.live = int(st[1])
        self.seq += len(kind)
        return out


def _pow2(x: int) -> int:
    return 1 << max(4, int(x - 1).bit_length())


def _as_source(data, tick, stock=None, l2: bool = False):
    if isinstance(data, dict):
        cols = dict(data)
        if "order_id" not in cols and "ts_ns" in cols:
            cols["order_id"] = np.full(len(cols["ts_ns"]), -1, np.int64)
        return MarketEvents(**{c: cols[c] for c in COLUMNS}, tick=tick or 1)
    return open_data(data, tick=tick, stock=stock, l2=l2)


@dataclass
class RunConfig:
    """What a tick run of a strategy over a data source is set up with (shared by ``backtest``
    and the tick sweep): the kernel's cfg and initial sc and md, the ladder and buffer sizes."""
    cfg: np.ndarray
    sc: np.ndarray
    md: np.ndarray
    latency: Latency
    maker_fee: int
    taker_fee: int
    sample_ns: int
    timer_ns: int
    tick: int
    base: int
    L: int
    ring: int
    fcap: int
    ecap: int
    qcap: int


def prepare_run(strat: Strategy, src, *, latency=None, fees=None, seed: int = 0, sample="1m", timer=None,
                margin_ticks: int = 1000, max_instant_actions: int = 100_000, queue=None) -> RunConfig:
    """Validate the run options and build the kernel's configuration for ``src``."""
    lat = parse_latency(latency, seed)
    qmodel, qparam = parse_queue(queue)
    maker_fee, taker_fee = parse_fees(fees)
    sample_ns = parse_duration(sample)
    timer_ns = strat.timer_ns if timer is None else (0 if str(timer) in ("0", "") else parse_duration(timer))
    if max_instant_actions < 0:
        raise ValueError(f"max_instant_actions must be >= 0 (0: no limit), got {max_instant_actions}")
    tk = int(src.tick)
    rng = src.price_range()
    if rng is None:
        lo = hi = tk * 1000
    else:
        lo, hi = rng
    base = lo - margin_ticks * tk
    if base <= 0:
        base = lo % tk if lo % tk else tk
    L = (hi - base) // tk + 1 + margin_ticks
    ntab = sum(len(t) for t in lat.tables.values())
    cfg = np.zeros(K.NCF + ntab, np.int64)
    cfg[K.CF_BASE] = base
    cfg[K.CF_TICK] = tk
    cfg[K.CF_FEED_LO], cfg[K.CF_FEED_HI] = lat.feed
    cfg[K.CF_ENTRY_LO], cfg[K.CF_ENTRY_HI] = lat.entry
    cfg[K.CF_RESP_LO], cfg[K.CF_RESP_HI] = lat.response
    off = K.NCF
    for name, col in (("feed", K.CF_FEED_LO), ("entry", K.CF_ENTRY_LO), ("response", K.CF_RESP_LO)):
        if name in lat.tables:      # an empirical table: its values after the NCF fields
            tab = lat.tables[name]
            cfg[off:off + len(tab)] = tab
            cfg[col], cfg[col + 1] = off, -len(tab)
            off += len(tab)
    cfg[K.CF_MAKER_FEE] = maker_fee
    cfg[K.CF_TAKER_FEE] = taker_fee
    cfg[K.CF_TIMER_NS] = timer_ns
    cfg[K.CF_SAMPLE_NS] = sample_ns
    cfg[K.CF_DEPTH] = strat.depth
    cfg[K.CF_MAX_INSTANT] = max_instant_actions
    cfg[K.CF_QUEUE] = qmodel
    cfg[K.CF_QPARAM] = qparam
    sc = np.zeros(K.NSC, np.int64)
    sc[K.SC_XBB] = sc[K.SC_XBA] = sc[K.SC_LBB] = sc[K.SC_LBA] = sc[K.SC_MAXBUY] = sc[K.SC_DBB] = sc[K.SC_DBA] = -1
    sc[K.SC_MINSELL] = K.INF
    for j, col in enumerate((K.SC_RNG_F, K.SC_RNG_E, K.SC_RNG_R, K.SC_RNG_Q)):
        sc[col] = rng_seed(seed, j)
    md = A.new_md()
    md[A.MD_TICK] = tk
    return RunConfig(cfg=cfg, sc=sc, md=md, latency=lat, maker_fee=maker_fee, taker_fee=taker_fee,
                     sample_ns=sample_ns, timer_ns=timer_ns, tick=tk, base=int(base), L=int(L),
                     ring=_pow2(max(1 << 14, 4 * L)), fcap=max(1 << 15, 2 * L + 1024), ecap=1 << 15, qcap=1 << 12)


def backtest(strategy, data, *, params: dict | None = None, mode: str = "no-impact", latency=None,
             fees=None, seed: int = 0, capital: float = 1e9, sample: str | int = "1m",
             timer: str | int | None = None, tick: int | None = None, chunk_events: int = 1 << 20,
             margin_ticks: int = 1000, progress=None, max_instant_actions: int = 100_000,
             fee: float | None = None, init_cash: float | None = None, symbol=None, stock: str | None = None,
             queue: str | None = None):
    """Backtest ``strategy`` (a file path, a bundled name or a Strategy) over ``data`` (a LOBSTER
    message CSV, an ITCH 5.0 file with ``stock``, an hpte order file (matched by the engine
    first; ``stock`` picks its symbol), a Parquet/IPC events file, a MarketEvents or a dict of
    event columns).

    params : name -> value, overriding the strategy's PARAMS defaults.
    mode : "no-impact" (the replayed book as the data says; queue position tracked) or
        "impact" (the strategy's orders trade in a real book with the replayed orders, matched by
        the engine's step; hpte.kernels.backtest.impact has the reconciliation rules).
    queue : the queue model of L2 data (price levels, no order ids; hpte.engine.backtest.data):
        see ``parse_queue`` ('conservative', 'prob', 'prob:power:N', 'prob:log'); None for L3
        data (exact queue position). With a LOBSTER message file, a queue model reads the day
        as L2 data (its orderbook file's snapshots); no-impact mode only.
    latency : see ``parse_latency``; seed seeds the random latencies (and the queue model's draws).
    fees : see ``parse_fees`` (price units per lot; negative: rebate).
    capital : the base of return and turnover, price units.
    sample : equity-curve interval (Sharpe and drawdown use it).
    timer : on_timer period (default: the strategy's TIMER_NS).
    chunk_events : events per chunk fed to the kernel (results do not depend on it).
    progress : called as progress(events_done) after every chunk.
    max_instant_actions : stop with a StrategyError when the strategy takes more than this many
        actions at one instant of its local time (a zero-latency loop); 0: no limit.

    A bar strategy (``on_bar``: ``ma_cross`` or a file like it) runs on bars instead (``data`` an
    ``hpte md bars`` file or any table with a close column) through the sweep's bar kernel, the
    one every sweep row is computed by: it takes ``params``, ``fee`` (a fraction of traded value),
    ``init_cash`` (100) and ``symbol``, and returns a hpte.engine.sweep.BarBacktest.
    """
    t_start = time.perf_counter()
    if is_bar_strategy(strategy):
        tick_only = {"latency": latency, "fees": fees, "timer": timer, "tick": tick, "stock": stock, "queue": queue}
        given = [k for k, v in tick_only.items() if v is not None] + (["mode"] if mode != "no-impact" else [])
        if given:
            raise ValueError(f"{', '.join(given)}: tick-backtest options; a bar strategy trades at each bar's "
                             f"close (options: params, fee, init_cash, symbol)")
        from hpte.engine.sweep.run import backtest_bars
        return backtest_bars(strategy, data, params=params, fee=0.0 if fee is None else float(fee),
                             init_cash=100.0 if init_cash is None else float(init_cash), symbol=symbol)
    bar_only = [k for k, v in {"fee": fee, "init_cash": init_cash, "symbol": symbol}.items() if v is not None]
    if bar_only:
        raise ValueError(f"{', '.join(bar_only)}: bar-backtest options; for a tick strategy use fees "
                         f"(maker=,taker= per lot) and capital")
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: use one of {', '.join(MODES)}")
    if chunk_events < 1:
        raise ValueError(f"chunk_events must be >= 1, got {chunk_events}")
    if not (capital > 0 and math.isfinite(capital)):
        raise ValueError(f"capital must be positive and finite, got {capital}")
    qmodel, _ = parse_queue(queue)
    if qmodel != K.Q_L3 and mode == "impact":
        raise ValueError(f"queue {queue!r}: queue models are for no-impact mode on L2 data; impact mode "
                         f"needs L3 data (orders with ids)")
    strat = strategy if isinstance(strategy, Strategy) else load_strategy(strategy)
    pvec = strat.param_vector(params)
    src = _as_source(data, tick, stock, l2=qmodel != K.Q_L3)
    run_cfg = prepare_run(strat, src, latency=latency, fees=fees, seed=seed, sample=sample, timer=timer,
                          margin_ticks=margin_ticks, max_instant_actions=max_instant_actions, queue=queue)
    lat, maker_fee, taker_fee = run_cfg.latency, run_cfg.maker_fee, run_cfg.taker_fee
    sample_ns, timer_ns, tk, base, L = run_cfg.sample_ns, run_cfg.timer_ns, run_cfg.tick, run_cfg.base, run_cfg.L

    t_compile = time.perf_counter()
    mod = driver(strat, impact=mode == "impact")
    run = mod.run_cpu
    compile_s = time.perf_counter() - t_compile

    cfg = run_cfg.cfg.copy()
    cfg[K.CF_IMPACT] = 1 if mode == "impact" else 0
    sc = run_cfg.sc.copy()
    book = SimBook(L) if mode == "impact" else None
    xlad = np.zeros((2, L), np.int64)
    llad = np.zeros((2, L), np.int64)
    arrivals = Arrivals()
    xo = np.zeros((A.MAX_ORDERS, K.NXO), np.int64)
    orders = A.new_orders()
    md = run_cfg.md.copy()
    state = np.zeros(strat.state_size, np.float64)
    act = A.new_actions()
    ring, fcap, ecap, qcap = run_cfg.ring, run_cfg.fcap, run_cfg.ecap, run_cfg.qcap
    req = np.zeros((ring, K.NRQ), np.int64)
    rsp = np.zeros((ring, K.NRS), np.int64)
    fills = np.zeros((fcap, K.NFL), np.int64)
    evs = np.zeros((ecap, K.NEL), np.int64)
    eq = np.zeros((qcap, K.NEQ), np.int64)
    acc_i, acc_f = M.new_acc()
    out_f, out_e, out_q = [], [], []

    def drain_outputs():
        M.fold_cpu(acc_i, acc_f, fills, sc[K.SC_NFILL], evs, sc[K.SC_NEV], eq, sc[K.SC_NEQ])
        for buf, col, dest in ((fills, K.SC_NFILL, out_f), (evs, K.SC_NEV, out_e), (eq, K.SC_NEQ, out_q)):
            k = int(sc[col])
            if k:
                dest.append(buf[:k].copy())
                sc[col] = 0

    # compile (or load) before the clock starts: an empty non-final chunk returns at once
    e0 = _ro(np.zeros(0, np.int64))
    t_c = time.perf_counter()
    try:
        run(e0, e0, e0, e0, e0, e0, e0, e0, cfg, sc, xlad, llad, xo, orders, md, pvec, state, act,
            req, rsp, fills, evs, eq, *no_book())
    except Exception as e:  # noqa: BLE001 - numba's typing errors: name the callback
        if type(e).__module__.startswith("numba"):
            raise diagnose(strat, e) from None
        raise
    compile_s += time.perf_counter() - t_c
    events = 0
    carry = None
    t_run = time.perf_counter()
    it = iter(src.chunks(chunk_events))
    nxt = next(it, None)
    while True:
        chunk = nxt
        nxt = next(it, None) if chunk is not None else None
        final = nxt is None
        if chunk is None:
            chunk = {c: np.zeros(0, np.int64) for c in COLUMNS}
        chunk = dict(chunk)
        check_l2_chunk(chunk, qmodel, events, src.name)
        chunk["arrival"] = arrivals.resolve(chunk)     # the new rows' market order ids, once
        chunk["ends"] = arrivals.ends
        events += len(chunk["ts_ns"])
        if carry is not None and len(carry["ts_ns"]):
            cols = {c: np.concatenate([carry[c], chunk[c]]) for c in RUN_COLUMNS}
        else:
            cols = {c: np.ascontiguousarray(chunk[c], dtype=np.int64) for c in RUN_COLUMNS}
        cfg[K.CF_FINAL] = 1 if final else 0
        lvl = (cols["price"] - base) // tk
        while True:
            st = run(*(_ro(cols[c]) for c in RUN_COLUMNS), _ro(lvl), cfg, sc, xlad, llad, xo, orders, md, pvec, state,
                     act, req, rsp, fills, evs, eq, *(book.args() if book is not None else no_book()))
            nfill = int(sc[K.SC_NFILL])
            drain_outputs()
            if st == K.ST_POOL:
                book.grow()
                continue
            if st == K.ST_FLUSH:
                if book is not None and nfill == 0:   # a strategy order may fill more rows than it holds
                    fills = np.zeros((2 * fills.shape[0] + book.resting(), K.NFL), np.int64)
                continue
            if st == K.ST_RUNAWAY:
                raise StrategyError(runaway_message(strat.name, max_instant_actions, int(sc[K.SC_INST_T])))
            if st == K.ST_RING:
                raise RuntimeError(f"more than {ring} orders or responses in flight at once "
                                   f"(the strategy sends too much in one latency interval)")
            if st == K.ST_RANGE:   # pragma: no cover - the ladder spans the data's price range
                row = int(sc[K.SC_ERR])
                raise InputError(f"{src.name}: market event price {int(cols['price'][row])} outside the price ladder")
            break
        if progress is not None:
            progress(events)
        if st == K.ST_DONE:
            break
        fi = int(sc[K.SC_IF])
        carry = {c: cols[c][fi:] for c in RUN_COLUMNS}
        sc[K.SC_IX] -= fi
        sc[K.SC_IF] = 0
    seconds = time.perf_counter() - t_run

    def table(parts, ncol, names):
        a = np.concatenate(parts) if parts else np.zeros((0, ncol), np.int64)
        return {nm: np.ascontiguousarray(a[:, j]) for j, nm in enumerate(names)}

    F = table(out_f, K.NFL, _FILL_NAMES)
    E = table(out_e, K.NEL, _EV_NAMES)
    Q = table(out_q, K.NEQ, _EQ_NAMES)
    F["side"] = F["side"].astype(np.int8)
    F["maker"] = F["maker"].astype(np.bool_)
    E["side"] = E["side"].astype(np.int8)
    E["event"] = np.array([A.EVENT_NAMES.get(int(v), str(v)) for v in E["event"]], dtype=object)
    E["reason"] = np.array([A.REASON_NAMES.get(int(v), str(v)) for v in E["reason"]], dtype=object)
    metrics = finish_metrics(acc_i, acc_f, capital=capital, sample_ns=sample_ns,
                             price_scale=getattr(src, "price_scale", 1.0))
    config = {"latency_tables": dict(lat.sources), "mode": mode, "queue": None if qmodel == K.Q_L3 else str(queue), "queue_model": [int(qmodel), int(cfg[K.CF_QPARAM])],
              "latency_ns": {"feed": list(lat.feed), "entry": list(lat.entry),
                                           "response": list(lat.response)}, "seed": seed,
              "fees": {"maker": maker_fee, "taker": taker_fee}, "capital": capital,
              "sample_ns": sample_ns, "timer_ns": timer_ns, "depth": strat.depth, "tick": tk, "base": int(base), "ladder": int(L),
              "max_instant_actions": int(max_instant_actions),
              "data": str(src.name),
              "chunk_events": chunk_events}
    stats = {"events": events, "seconds": seconds, "events_per_s": events / seconds if seconds > 0 else 0.0,
             "compile_s": compile_s, "total_s": time.perf_counter() - t_start,
             "position_exchange": int(sc[K.SC_POS]), "cash_exchange": int(sc[K.SC_CASH])}
    if book is not None:
        stats["book_resting"] = book.resting()
    return BacktestResult(strategy=strat.name, params=dict(zip(strat.params, map(float, pvec))),
                          orders=E, fills=F, equity=Q, metrics=metrics, config=config, stats=stats)


def runaway_message(name: str, limit: int, t: int) -> str:
    """The one-line error of a strategy stopped by the per-instant action limit."""
    return (f"{name}: more than {limit:,} actions at one instant (local time {t} ns): a loop that never lets "
            f"time pass (at zero latency each action can answer the last at the same instant); give it a "
            f"latency, act on fewer events, or raise --max-instant-actions (0: no limit)")


def finish_metrics(acc_i: np.ndarray, acc_f: np.ndarray, *, capital: float, sample_ns: int,
                   price_scale: float = 1.0) -> dict:
    """The metrics of a run from its accumulator (hpte.kernels.backtest.metrics): the single
    backtest's and every tick-sweep row's, computed by this one function from one fold.

    pnl: equity (cash + position at the mid) at the last sample; Sharpe: mean / std of the
    equity changes between samples, annualised for 252 days of 6.5 h; max drawdown from the
    running peak (starting at 0); return and turnover over ``capital``."""
    a, f = acc_i, acc_f
    k = int(a[M.MI_SAMPLES])
    pnl = float(f[M.MF_LAST]) if k else 0.0
    nd = k - 1
    sd = math.sqrt(f[M.MF_M2] / nd) if nd > 1 and f[M.MF_M2] > 0 else 0.0
    per_year = 252 * 23_400e9 / sample_ns
    sharpe = float(f[M.MF_MEAN] / sd * math.sqrt(per_year)) if sd > 0 else 0.0
    trades, maker = int(a[M.MI_TRADES]), int(a[M.MI_MAKER])
    sent_qty, mq = int(a[M.MI_SUBMITTED_QTY]), int(a[M.MI_MAKER_QTY])
    return {
        "pnl": pnl, "pnl_currency": pnl * price_scale, "return": pnl / capital, "sharpe": sharpe,
        "max_drawdown": float(max(f[M.MF_MAXDD], 0.0)), "turnover": float(a[M.MI_NOTIONAL]) / capital,
        "trades": trades, "maker_fills": maker, "taker_fills": trades - maker,
        "volume": int(a[M.MI_VOLUME]), "fill_ratio": float(a[M.MI_VOLUME]) / sent_qty if sent_qty else 0.0,
        "time_in_queue_s": float(f[M.MF_QUEUE] / mq / 1e9) if mq else 0.0,
        "position_min": int(a[M.MI_POS_MIN]), "position_max": int(a[M.MI_POS_MAX]),
        "position_end": int(a[M.MI_POS_END]), "cash_end": int(a[M.MI_CASH_END]),
        "fees": int(a[M.MI_FEES]), "orders": int(a[M.MI_SUBMITTED]),
        "cancels": int(a[M.MI_CANCELS]), "rejects": int(a[M.MI_REJECTS]),
    }
