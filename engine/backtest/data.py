"""Market data for backtests: an L3 market-event stream read in chunks.

The stream is SoA int64 columns ``ts_ns, kind, order_id, side, price, qty`` with the kinds of
hpte.kernels.backtest.api (MK_ADD a resting order joins, MK_CANCEL quantity leaves unexecuted,
MK_EXEC a resting visible order executes (side = the resting side), MK_TRADE a hidden
execution, MK_SEED quantity learned from a snapshot). Sources:

* a LOBSTER message file (``*_message_N.csv``): types 1 -> ADD, 2 and 3 -> CANCEL (by the
  size removed), 4 -> EXEC, 5 -> TRADE; 6 and 7 are skipped. When the matching orderbook file
  lies beside it, the levels that the replay (hpte.engine.md.lobster.replay) learns from it
  (orders that rested before 09:30 or beyond the file's N levels) are merged in after their
  message: quantity added as MK_SEED, quantity that left unseen as MK_CANCEL of an unknown
  order. Tick 100 (one cent in LOBSTER's dollars x 10,000).
* a Parquet or Arrow IPC events file with those six columns (``hpte`` writes it with
  ``write_events``), read in record batches; its tick is given by the caller (default 1).
* columns in memory (``MarketEvents``).

Every chunk is checked (kinds, sides, quantities, prices on the tick grid, time order) and a
bad row raises ``InputError`` naming the column and the row.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from hpte.engine.io import InputError
from hpte.kernels.backtest import api as A

COLUMNS = ("ts_ns", "kind", "order_id", "side", "price", "qty")


def check_chunk(cols: dict, tick: int, row0: int, prev_ts: int, name: str) -> None:
    """Validate one chunk (row numbers are 0-based over the whole stream)."""
    n = len(cols["ts_ns"])
    for c in COLUMNS:
        if c not in cols:
            raise InputError(f"{name}: missing column {c!r} (events need {', '.join(COLUMNS)})")
        if len(cols[c]) != n:
            raise InputError(f"{name}: column {c!r} has {len(cols[c])} rows, ts_ns has {n}")
    if n == 0:
        return

    def bad(mask, what):
        i = int(np.flatnonzero(mask)[0])
        raise InputError(f"{name}: row {row0 + i}: {what}")

    k, side, qty, px, ts = cols["kind"], cols["side"], cols["qty"], cols["price"], cols["ts_ns"]
    m = (k < A.MK_ADD) | (k > A.MK_SEED)
    if m.any():
        bad(m, f"kind {int(k[m][0])} is not one of 1..5 (ADD, CANCEL, EXEC, TRADE, SEED)")
    m = (side != 1) & (side != -1)
    if m.any():
        bad(m, f"side {int(side[m][0])} is not +1 or -1")
    m = qty <= 0
    if m.any():
        bad(m, f"qty {int(qty[m][0])} must be positive")
    m = px <= 0
    if m.any():
        bad(m, f"price {int(px[m][0])} must be positive")
    m = (k != A.MK_TRADE) & (px % tick != 0)
    if m.any():
        bad(m, f"price {int(px[m][0])} is not a multiple of the tick {tick}")
    m = (k == A.MK_ADD) & (cols["order_id"] < 0)
    if m.any():
        bad(m, f"order_id {int(cols['order_id'][m][0])} is negative")
    if ts[0] < prev_ts:
        bad(np.array([True]), "ts_ns is earlier than the row before")
    m = np.diff(ts) < 0
    if m.any():
        i = int(np.flatnonzero(m)[0]) + 1
        raise InputError(f"{name}: row {row0 + i}: ts_ns is earlier than the row before")


@dataclass
class MarketEvents:
    """A market-event stream in memory."""
    ts_ns: np.ndarray
    kind: np.ndarray
    order_id: np.ndarray
    side: np.ndarray
    price: np.ndarray
    qty: np.ndarray
    tick: int = 1
    name: str = "<events>"
    price_scale: float = 1.0   # currency per price unit (LOBSTER: 1e-4 dollars)

    def __post_init__(self):
        for c in COLUMNS:
            setattr(self, c, np.ascontiguousarray(getattr(self, c), dtype=np.int64))
        if int(self.tick) <= 0:
            raise ValueError(f"tick must be positive, got {self.tick}")

    def __len__(self) -> int:
        return len(self.ts_ns)

    def columns(self) -> dict:
        return {c: getattr(self, c) for c in COLUMNS}

    def price_range(self) -> tuple[int, int] | None:
        vis = self.kind != A.MK_TRADE
        if not vis.any():
            return None
        p = self.price[vis]
        return int(p.min()), int(p.max())

    def chunks(self, size: int) -> Iterator[dict]:
        n = len(self)
        prev = np.iinfo(np.int64).min
        for a in range(0, max(n, 1), size):
            c = {k: v[a:a + size] for k, v in self.columns().items()}
            check_chunk(c, self.tick, a, prev, self.name)
            if len(c["ts_ns"]):
                prev = int(c["ts_ns"][-1])
            yield c


_KIND_OF_LOBSTER = np.array([0, A.MK_ADD, A.MK_CANCEL, A.MK_CANCEL, A.MK_EXEC, A.MK_TRADE, 0, 0], np.int64)


def orderbook_beside(message_path: Path) -> Path | None:
    """The orderbook file LOBSTER names beside a message file, if it is there."""
    name = message_path.name
    if "_message_" not in name:
        return None
    p = message_path.with_name(name.replace("_message_", "_orderbook_"))
    return p if p.is_file() else None


def lobster_events(message_path, orderbook: str | Path | None = "auto") -> MarketEvents:
    """A LOBSTER day as a market-event stream (see the module docstring)."""
    from hpte.engine.md import lobster as L

    mp = Path(message_path)
    m = L.read_messages(mp)
    ob = orderbook_beside(mp) if orderbook == "auto" else (Path(orderbook) if orderbook else None)
    kind = _KIND_OF_LOBSTER[m.type.astype(np.int64)]
    keep = kind != 0
    cols = {"ts_ns": m.time_ns[keep], "kind": kind[keep], "order_id": m.order_id[keep].astype(np.int64),
            "side": m.direction[keep].astype(np.int64), "price": m.price[keep], "qty": m.size[keep]}
    row = np.flatnonzero(keep)
    if ob is not None:
        book = L.read_orderbook(ob)
        r = L.replay(m, book.levels, book)
        g = r.learned
        grow = g["row"].astype(np.int64)
        diff = g["after"] - g["before"]
        nz = diff != 0
        grow, diff = grow[nz], diff[nz]
        lcols = {"ts_ns": m.time_ns[grow], "kind": np.where(diff > 0, A.MK_SEED, A.MK_CANCEL).astype(np.int64),
                 "order_id": np.full(len(grow), -1, np.int64), "side": g["side"][nz].astype(np.int64),
                 "price": g["price"][nz].astype(np.int64), "qty": np.abs(diff).astype(np.int64)}
        key = np.concatenate([row * 2, grow * 2 + 1])
        order = np.argsort(key, kind="stable")
        cols = {c: np.concatenate([cols[c], lcols[c]])[order] for c in COLUMNS}
    return MarketEvents(**cols, tick=100, name=str(mp), price_scale=1e-4)


class EventFile:
    """A Parquet or Arrow IPC events file, read in record batches."""

    def __init__(self, path, tick: int = 1, price_scale: float = 1.0):
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"{self.path}: no such file")
        self.tick = int(tick)
        self.name = str(self.path)
        self.price_scale = price_scale
        if self.tick <= 0:
            raise ValueError(f"tick must be positive, got {tick}")

    def _batches(self, size: int):
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.path.suffix.lower() in (".arrow", ".ipc", ".feather"):
            with pa.memory_map(str(self.path)) as src:
                reader = pa.ipc.open_file(src)
                for i in range(reader.num_record_batches):
                    b = reader.get_batch(i)
                    for a in range(0, b.num_rows, size):
                        yield b.slice(a, size)
        else:
            try:
                f = pq.ParquetFile(self.path)
            except Exception as e:  # noqa: BLE001 - pyarrow's many error types
                raise InputError(f"{self.path}: not a Parquet file ({e})") from None
            missing = [c for c in COLUMNS if c not in f.schema_arrow.names]
            if missing:
                raise InputError(f"{self.path}: missing column(s) {', '.join(missing)} "
                                 f"(events need {', '.join(COLUMNS)})")
            yield from f.iter_batches(batch_size=size, columns=list(COLUMNS))

    def _cols(self, b) -> dict:
        names = b.schema.names
        for c in COLUMNS:
            if c not in names:
                raise InputError(f"{self.path}: missing column {c!r} (events need {', '.join(COLUMNS)})")
        return {c: np.asarray(b.column(names.index(c)).to_numpy(zero_copy_only=False), dtype=np.int64)
                for c in COLUMNS}

    def price_range(self, size: int = 1 << 18) -> tuple[int, int] | None:
        lo = hi = None
        for b in self._batches(size):
            names = b.schema.names
            kind = np.asarray(b.column(names.index("kind")).to_numpy(zero_copy_only=False))
            price = np.asarray(b.column(names.index("price")).to_numpy(zero_copy_only=False))
            vis = kind != A.MK_TRADE
            if vis.any():
                p = price[vis]
                lo = int(p.min()) if lo is None else min(lo, int(p.min()))
                hi = int(p.max()) if hi is None else max(hi, int(p.max()))
        return None if lo is None else (lo, hi)

    def chunks(self, size: int) -> Iterator[dict]:
        row = 0
        prev = np.iinfo(np.int64).min
        for b in self._batches(size):
            c = self._cols(b)
            check_chunk(c, self.tick, row, prev, self.name)
            row += len(c["ts_ns"])
            if len(c["ts_ns"]):
                prev = int(c["ts_ns"][-1])
            yield c


def write_events(path, events: MarketEvents, row_group: int = 1 << 20) -> Path:
    """Write a market-event stream as Parquet (the ``EventFile`` format)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({c: events.columns()[c] for c in COLUMNS}), p, row_group_size=row_group)
    return p


def open_data(data, tick: int | None = None):
    """A source from a path (LOBSTER message CSV, Parquet/IPC events file) or a MarketEvents."""
    if isinstance(data, MarketEvents):
        return data
    p = Path(data)
    if not p.is_file():
        raise InputError(f"{p}: no such data file")
    if p.suffix.lower() == ".csv":
        return lobster_events(p)
    return EventFile(p, tick=tick or 1)
