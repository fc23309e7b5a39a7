"""Bar data for bar backtests and sweeps: ``hpte md bars`` files, plain OHLC(V) tables, arrays,
and a seeded geometric random walk.

Everything becomes one float64[6, n] matrix with rows time (ns), open, high, low, close, volume
(hpte.kernels.backtest.bars ``B_*``). Prices stay in the file's units (ticks for ``hpte md bars``
files): returns do not depend on the unit.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from hpte.engine.io import InputError
from hpte.kernels.backtest.bars import NBASE, ROW_NAMES

_TIME_COLUMNS = ("end_ns", "ts_ns", "time", "start_ns")


def random_walk(n: int, seed: int = 0, start: float = 100.0, sigma: float = 0.01) -> np.ndarray:
    """Closes of a geometric random walk: ``start * exp(cumsum(sigma * N(0, 1)))`` (float64[n]),
    from ``np.random.default_rng(seed)``."""
    if n < 1:
        raise ValueError(f"random walk: n must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    return start * np.exp(np.cumsum(rng.normal(0.0, sigma, n)))


def bars_from_close(close, time=None) -> np.ndarray:
    """A float64[6, n] data matrix from closes alone (open = high = low = close, volume 0,
    time = the bar index x 1 s unless given)."""
    c = np.ascontiguousarray(close, dtype=np.float64)
    n = c.shape[0]
    data = np.empty((NBASE, n), np.float64)
    data[0] = np.arange(n, dtype=np.float64) * 1e9 if time is None else np.asarray(time, np.float64)
    data[1] = data[2] = data[3] = data[4] = c
    data[5] = 0.0
    return check_bars(data, "bars")


def check_bars(data: np.ndarray, name: str) -> np.ndarray:
    if data.ndim != 2 or data.shape[0] != NBASE:
        raise InputError(f"{name}: bar data must be float64[6, n], got shape {data.shape}")
    if data.shape[1] == 0:
        raise InputError(f"{name}: no bars")
    close = data[4]
    bad = ~(np.isfinite(close) & (close > 0))
    if bad.any():
        i = int(np.argmax(bad))
        raise InputError(f"{name}: column 'close' row {i}: {close[i]!r} is not a positive finite price")
    return data


def load_bars(data, symbol: int | None = None) -> np.ndarray:
    """The float64[6, n] bar matrix of ``data``: a Parquet/Arrow file (``hpte md bars`` output:
    symbol, start_ns, end_ns, open, high, low, close, volume, ...; or any table with a ``close``
    column), a dict of columns, a float64[6, n] matrix, or a 1-D array of closes."""
    if isinstance(data, np.ndarray):
        if data.ndim == 1:
            return bars_from_close(data)
        return check_bars(np.ascontiguousarray(data, dtype=np.float64), "bars")
    if isinstance(data, dict):
        return _from_columns(data, "bars", symbol)
    p = Path(data)
    if not p.is_file():
        raise InputError(f"{p}: no such bars file")
    try:
        if p.suffix in (".arrow", ".ipc", ".feather"):
            import pyarrow.feather as feather
            table = feather.read_table(p)
        else:
            import pyarrow.parquet as pq
            table = pq.read_table(p)
    except OSError:
        raise
    except Exception as e:  # noqa: BLE001 - pyarrow raises ArrowInvalid and friends
        raise InputError(f"{p}: not a readable Parquet/Arrow bars file ({type(e).__name__}: "
                         f"{' '.join(str(e).split())[:200]})") from None
    cols = {name: table.column(name).to_numpy() for name in table.column_names}
    return _from_columns(cols, p.name, symbol)


def _from_columns(cols: dict, name: str, symbol) -> np.ndarray:
    if "close" not in cols:
        raise InputError(f"{name}: missing column 'close' (bars need close; open, high, low, volume and "
                         f"a time column ({', '.join(_TIME_COLUMNS)}) are used when present)")
    n = len(cols["close"])
    keep = np.ones(n, bool)
    if "symbol" in cols:
        syms = np.unique(np.asarray(cols["symbol"]))
        if symbol is None:
            if len(syms) > 1:
                raise InputError(f"{name}: {len(syms)} symbols in the file ({', '.join(map(str, syms[:8]))}"
                                 f"{', ...' if len(syms) > 8 else ''}); choose one with --symbol")
        else:
            if symbol not in set(syms.tolist()):
                raise InputError(f"{name}: no bars of symbol {symbol}")
            keep = np.asarray(cols["symbol"]) == symbol
    data = np.zeros((NBASE, int(keep.sum())), np.float64)
    tcol = next((c for c in _TIME_COLUMNS if c in cols), None)
    if tcol is not None:
        data[0] = np.asarray(cols[tcol])[keep].astype(np.float64)
    else:
        data[0] = np.arange(data.shape[1], dtype=np.float64) * 1e9
    for r, c in enumerate(ROW_NAMES[1:], start=1):
        if c in cols:
            data[r] = np.asarray(cols[c])[keep].astype(np.float64)
        elif c != "volume":
            data[r] = np.asarray(cols["close"])[keep].astype(np.float64)
    return check_bars(data, name)


def write_bars(path, data: np.ndarray) -> Path:
    """Write a float64[6, n] bar matrix as a Parquet file (time as int64 ``end_ns``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = Path(path)
    cols = {"end_ns": pa.array(data[0].astype(np.int64))}
    for r, c in enumerate(ROW_NAMES[1:], start=1):
        cols[c] = pa.array(data[r])
    pq.write_table(pa.table(cols), p)
    return p


def bars_per_year(data: np.ndarray) -> float:
    """Bars per year for the Sharpe ratio: from the median spacing of the bar times, counting a
    year as 252 sessions of 6.5 h (spacing of a day or more: 252 per year); 252 when unknown."""
    t = data[0]
    if t.shape[0] < 2:
        return 252.0
    dt = float(np.median(np.diff(t)))
    if not np.isfinite(dt) or dt <= 0:
        return 252.0
    if dt >= 86_400e9:
        return 252.0
    return 252.0 * 23_400e9 / dt
