"""File I/O through explicit schemas: Parquet and Arrow IPC in, SoA numpy columns out, and back.

Columns are ``dict[str, numpy.ndarray]`` (one 1-D array per column, all the same length).
Conversion from Arrow is zero-copy wherever the type allows (a single chunk, no nulls, the
schema's exact type); otherwise it converts once, checking that every value fits.
"""
from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from . import schema as S

Columns = dict[str, np.ndarray]


class InputError(ValueError):
    """Bad input file or batch: the message names the file, column or row."""


def _is_ipc(path: Path) -> bool:
    return path.suffix.lower() in (".arrow", ".ipc", ".feather")


def read_table(path: str | Path) -> pa.Table:
    """Read a Parquet or Arrow IPC file (chosen by suffix: .arrow/.ipc/.feather are IPC)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    try:
        if _is_ipc(p):
            with pa.memory_map(str(p), "r") as src:
                return ipc.open_file(src).read_all()
        return pq.read_table(p)
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as e:  # pragma: no branch
        raise InputError(f"{p}: not a readable {'Arrow IPC' if _is_ipc(p) else 'Parquet'} file ({e})") from None


def column_to_numpy(col: pa.Array | pa.ChunkedArray, dtype: np.dtype, name: str) -> np.ndarray:
    """One Arrow column as a numpy array of exactly `dtype`.

    Zero-copy when the column is one null-free chunk of that type. Integer columns of another
    integer type are converted when every value fits; anything else is an InputError naming
    the column.
    """
    if isinstance(col, pa.ChunkedArray):
        if col.null_count:
            raise InputError(f"column {name!r} has {col.null_count} null values")
        col = col.chunk(0) if col.num_chunks == 1 else (
            col.combine_chunks() if col.num_chunks else pa.array([], type=col.type))
    if col.null_count:
        raise InputError(f"column {name!r} has {col.null_count} null values")
    t = col.type
    if pa.types.is_dictionary(t) or not (pa.types.is_integer(t) or pa.types.is_boolean(t)):
        raise InputError(f"column {name!r} has type {t}, expected an integer type ({dtype})")
    if pa.types.is_boolean(t):
        return np.asarray(col.to_numpy(zero_copy_only=False), dtype=dtype)
    arr = col.to_numpy(zero_copy_only=False)
    return cast_checked(arr, dtype, name)


def cast_checked(arr: np.ndarray, dtype: np.dtype, name: str) -> np.ndarray:
    """`arr` as `dtype` (no copy when it already is); InputError if a value does not fit."""
    arr = np.asarray(arr)
    if arr.dtype == dtype:
        return arr
    if arr.dtype.kind == "b":
        return arr.astype(dtype)
    if arr.dtype.kind not in "iu":
        raise InputError(f"column {name!r} has dtype {arr.dtype}, expected an integer type ({dtype})")
    if arr.size:
        info = np.iinfo(dtype)
        lo, hi = int(arr.min()), int(arr.max())
        if lo < info.min or hi > info.max:
            bad = lo if lo < info.min else hi
            row = int(np.flatnonzero(arr == bad)[0])
            raise InputError(f"column {name!r} row {row}: value {bad} does not fit {dtype}")
    return arr.astype(dtype)


class ParquetColumns:
    """An order file's columns read one at a time (``column(name)``), so that reading a large
    file holds the numpy columns plus one Arrow column at most, not a whole Arrow table beside
    its conversion."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self._pf = pq.ParquetFile(str(path))
        except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as e:
            raise InputError(f"{path}: not a readable Parquet file ({e})") from None
        self.schema = self._pf.schema_arrow

    def column(self, name: str) -> pa.ChunkedArray:
        try:
            return self._pf.read(columns=[name]).column(0)
        except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as e:
            raise InputError(f"{self.path}: not a readable Parquet file ({e})") from None


def column_getter(data, what: str):
    """(column names, get(name, dtype) -> checked numpy column) for a batch given as a mapping
    of columns, a numpy structured array, or an Arrow RecordBatch/Table. `what` names the
    batch in the error for any other type."""
    if isinstance(data, (pa.RecordBatch, pa.Table, ParquetColumns)):
        return data.schema.names, lambda n, dt: column_to_numpy(data.column(n), dt, n)
    if isinstance(data, np.ndarray) and data.dtype.names:
        return list(data.dtype.names), lambda n, dt: cast_checked(np.ascontiguousarray(data[n]), dt, n)
    if isinstance(data, Mapping):
        return list(data.keys()), lambda n, dt: cast_checked(np.ascontiguousarray(data[n]), dt, n)
    raise InputError(f"{what} must be a mapping of columns, a structured array or an Arrow batch, "
                     f"not {type(data).__name__}")


def check_column(name: str, a: np.ndarray, n_rows: int | None) -> int:
    """A batch column must be 1-D and as long as the others (n_rows, None for the first).
    Returns the batch length."""
    if a.ndim != 1:
        raise InputError(f"column {name!r} must be one-dimensional, got shape {a.shape}")
    if n_rows is not None and len(a) != n_rows:
        raise InputError(f"column {name!r} has {len(a)} rows, expected {n_rows}")
    return len(a)


def order_columns(data) -> Columns:
    """Normalise an order batch to the order schema's SoA columns.

    `data` is a mapping of column name -> array-like, a numpy structured array, a pyarrow
    RecordBatch or Table. Required columns must be present; optional ones default (FORMATS.md).
    A legacy `kind` column (0 NEW LIMIT GTC, 1 CANCEL, 2 NEW LIMIT IOC) fills `action` and
    `tif` where those are absent. Unknown columns are ignored.
    """
    if type(data) is dict and _exact(data):
        # fast path (one-order batches): every column present with its exact dtype
        out = {name: data[name] for name, _dt, _r, _d in S.ORDER_COLUMNS}
        ts = out["ts_ns"]
        if ts.size > 1 and (ts[1:] < ts[:-1]).any():
            r = int(np.flatnonzero(ts[1:] < ts[:-1])[0]) + 1
            raise InputError(f"column 'ts_ns' row {r}: timestamps must not decrease ({int(ts[r - 1])} then {int(ts[r])})")
        return out
    names, get = column_getter(data, "orders")
    missing = [n for n, _, req, _ in S.ORDER_COLUMNS if req and n not in names]
    if missing:
        raise InputError(f"missing required column {missing[0]!r}" + (f" (and {missing[1:]})" if len(missing) > 1 else ""))
    out: Columns = {}
    n_rows = None
    for name, dt, _req, _default in S.ORDER_COLUMNS:
        if name in names:
            a = get(name, dt)
            n_rows = check_column(name, a, n_rows)
            out[name] = a
    assert n_rows is not None
    if "kind" in names and not ("action" in names and "tif" in names):
        kind = get("kind", np.dtype(np.uint8))
        if len(kind) != n_rows:
            raise InputError(f"column 'kind' has {len(kind)} rows, expected {n_rows}")
        bad = np.flatnonzero(kind > S.KIND_NEW_IOC)
        if bad.size:
            raise InputError(f"column 'kind' row {int(bad[0])}: unknown value {int(kind[bad[0]])} (0, 1 or 2)")
        if "action" not in names:
            out["action"] = np.where(kind == S.KIND_CANCEL, S.ACT_CANCEL, S.ACT_NEW).astype(np.uint8)
        if "tif" not in names:
            out["tif"] = np.where(kind == S.KIND_NEW_IOC, S.TIF_IOC, S.TIF_GTC).astype(np.uint8)
    for name, dt, _req, default in S.ORDER_COLUMNS:
        if name not in out:
            out[name] = np.full(n_rows, default, dtype=dt)
    ts = out["ts_ns"]
    if n_rows > 1:
        dec = np.flatnonzero(ts[1:] < ts[:-1])
        if dec.size:
            r = int(dec[0]) + 1
            raise InputError(f"column 'ts_ns' row {r}: timestamps must not decrease ({int(ts[r - 1])} then {int(ts[r])})")
    return out


def _exact(data: dict) -> bool:
    """All order columns present as 1-D contiguous arrays of exactly the schema dtype and of
    one length (no conversion or default needed)."""
    n = None
    for name, dt, _req, _default in S.ORDER_COLUMNS:
        a = data.get(name)
        if type(a) is not np.ndarray or a.dtype != dt or a.ndim != 1 or not a.flags.c_contiguous:
            return False
        if n is None:
            n = a.shape[0]
        elif a.shape[0] != n:
            return False
    return "kind" not in data


def read_orders(path: str | Path) -> Columns:
    """Read an order file (Parquet or Arrow IPC) into validated SoA columns."""
    p = Path(path)
    try:
        if not _is_ipc(p) and p.is_file():
            return order_columns(ParquetColumns(p))
        return order_columns(read_table(p))
    except InputError as e:
        msg = str(e)
        raise InputError(msg if msg.startswith(str(p)) else f"{p}: {msg}") from None


def to_arrow(cols: Mapping[str, np.ndarray], schema: pa.Schema) -> pa.Table:
    """SoA columns as an Arrow table of `schema` (zero-copy for plain numeric columns)."""
    arrays = []
    for f in schema:
        a = cols[f.name]
        if pa.types.is_dictionary(f.type):
            arrays.append(a if isinstance(a, pa.Array) else pa.array(a, type=f.type))
        else:
            arrays.append(pa.array(np.ascontiguousarray(a), type=f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def write_table(path: str | Path, table: pa.Table) -> Path:
    """Write a table as Parquet, or as uncompressed Arrow IPC for .arrow/.ipc/.feather."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if _is_ipc(p):
        with pa.OSFile(str(p), "wb") as f, ipc.new_file(f, table.schema) as w:
            w.write_table(table, max_chunksize=max(len(table), 1))
    else:
        pq.write_table(table, p)
    return p


class TableWriter:
    """Writes one file (Parquet, or Arrow IPC by suffix) piece by piece: ``write(table)`` as
    batches come, ``close()`` at the end. Pieces are gathered into row groups of about
    `row_group` rows, so that small batches do not make small row groups; memory stays bounded
    by one row group. The file exists (with the schema) from the start, even with no rows."""

    def __init__(self, path: str | Path, schema: pa.Schema, row_group: int = 1 << 20):
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.schema, self.row_group = p, schema, int(row_group)
        self._pending: list[pa.Table] = []
        self._rows = 0
        self.rows_written = 0
        if _is_ipc(p):
            self._sink = pa.OSFile(str(p), "wb")
            self._w = ipc.new_file(self._sink, schema)
        else:
            self._sink = None
            self._w = pq.ParquetWriter(str(p), schema)

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        self._pending.append(table)
        self._rows += table.num_rows
        if self._rows >= self.row_group:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        t = pa.concat_tables(self._pending) if len(self._pending) > 1 else self._pending[0]
        if self._sink is not None:
            self._w.write_table(t, max_chunksize=max(len(t), 1))
        else:
            self._w.write_table(t, row_group_size=max(len(t), 1))
        self.rows_written += t.num_rows
        self._pending, self._rows = [], 0

    def close(self) -> None:
        self._flush()
        self._w.close()
        if self._sink is not None:
            self._sink.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_columns(path: str | Path, cols: Mapping[str, np.ndarray], schema: pa.Schema) -> Path:
    """Write SoA columns with an explicit schema (Parquet or Arrow IPC by suffix)."""
    return write_table(path, to_arrow(cols, schema))


def names_array(codes: np.ndarray, names: Mapping[int, str]) -> pa.DictionaryArray:
    """Integer codes (uint8) as a dictionary-encoded string array using `names`."""
    size = max(names) + 1
    dictionary = pa.array([names.get(i, f"CODE_{i}") for i in range(size)], type=pa.string())
    idx = pa.array(np.asarray(codes, dtype=np.int8), type=pa.int8())
    return pa.DictionaryArray.from_arrays(idx, dictionary)


def events_table(events: Mapping[str, np.ndarray]) -> pa.Table:
    """Event columns (integer codes) as the events-file table (names dictionary-encoded)."""
    cols = dict(events)
    cols["event"] = names_array(events["event"], S.EVENT_NAMES)
    cols["reason"] = names_array(events["reason"], S.REASON_NAMES)
    return to_arrow(cols, S.EVENT_FILE_SCHEMA)


def concat_columns(parts: Iterable[Mapping[str, np.ndarray]], columns) -> Columns:
    """Concatenate SoA column dicts (empty input gives empty columns of the schema)."""
    parts = list(parts)
    return {n: (np.concatenate([p[n] for p in parts]) if parts else np.empty(0, dtype=t)) for n, t in columns}


_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
          "m": 60_000_000_000, "min": 60_000_000_000, "h": 3_600_000_000_000}
_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ns|us|µs|ms|s|min|m|h)\s*$")


def parse_duration(text: str | int) -> int:
    """A duration as integer ns (bar lengths, breaker windows): '500ms', '1s', '100us', '1m' (minute), '2h', '250ns', '1.5s'."""
    if isinstance(text, (int, np.integer)) and not isinstance(text, bool):
        ns = int(text)
    else:
        m = _DURATION.match(str(text))
        if not m:
            raise ValueError(f"bad duration {text!r}: use a number with a unit (ns, us, ms, s, m, h), e.g. 500ms or 1s")
        try:
            val = Decimal(m.group(1)) * _UNITS[m.group(2)]
        except InvalidOperation:  # pragma: no cover - the regex admits only decimals
            raise ValueError(f"bad duration {text!r}") from None
        if val != val.to_integral_value():
            raise ValueError(f"bad duration {text!r}: not a whole number of nanoseconds")
        ns = int(val)
    if ns <= 0:
        raise ValueError(f"bad duration {text!r}: must be positive")
    if ns >= 2**62:
        raise ValueError(f"bad duration {text!r}: too long")
    return ns
