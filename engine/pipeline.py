"""File-to-file matching: read an order file, feed it to an Engine in micro-batches, collect the
outputs, write Parquet. Used by ``hpte match`` and ``hpte demo``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import schema as S
from .book_state import Rows, STREAMS
from .engine import Engine
from .io import Columns, events_table, read_orders, to_arrow, write_columns, write_table
from .schema import arrow_schema


@dataclass
class MatchRun:
    """Outputs and figures of one matching run."""
    fills: Rows
    events: Rows
    deltas: Rows
    engine: Engine
    n_events: int
    seconds: float              # time inside Engine.submit only (no I/O, no compilation)
    compile_seconds: float      # first-call time of the kernels (compilation or cache load)
    batches: int
    extra: dict = field(default_factory=dict)

    def summary(self) -> dict:
        ev = self.events.raw
        codes = ev[:, 6] if len(ev) else np.empty(0, np.int64)
        reasons = ev[:, 7] if len(ev) else np.empty(0, np.int64)
        by_event = {S.EVENT_NAMES[int(c)]: int(n) for c, n in zip(*np.unique(codes, return_counts=True))}
        rej = reasons[codes == S.EV_REJECTED]
        by_reason = {S.REASON_NAMES[int(c)]: int(n) for c, n in zip(*np.unique(rej, return_counts=True))}
        brk = np.isin(codes, S.BREAKER_EVENTS)
        pairs = codes[brk] * 256 + reasons[brk]
        by_breaker = {f"{S.EVENT_NAMES[int(p) // 256]} ({S.REASON_NAMES[int(p) % 256]})": int(n)
                      for p, n in zip(*np.unique(pairs, return_counts=True))}
        return {
            "events": self.n_events,
            "fills": self.fills.n_rows,
            "order_events": self.events.n_rows,
            "deltas": self.deltas.n_rows,
            "books": self.engine.store.n_books,
            "resting": self.engine.store.resting(),
            "batches": self.batches,
            "seconds": self.seconds,
            "events_per_s": self.n_events / self.seconds if self.seconds > 0 else None,
            "compile_seconds": self.compile_seconds,
            "event_counts": by_event,
            "rejects_by_reason": by_reason,
            **({"breaker_events": by_breaker} if self.engine.risk is not None else {}),
            **self.extra,
        }


def warm_up(device: str = "cpu", risk: bool = False) -> float:
    """Run every kernel once on a tiny input (compiles, or loads numba's cache); seconds taken.
    With device "gpu" the CUDA matching kernel is compiled too; with `risk` the risk kernel."""
    t0 = time.perf_counter()
    if risk:
        from hpte.engine.risk.limits import RiskLimits
        Engine(risk=RiskLimits()).submit({"ts_ns": np.array([0], np.int64), "order_id": np.array([1], np.uint64),
                                          "side": np.array([1], np.int8), "price_ticks": np.array([10], np.int64),
                                          "qty": np.array([1], np.int64)})
    if device == "gpu":
        Engine(device="gpu").submit({"ts_ns": np.array([0], np.int64), "order_id": np.array([1], np.uint64),
                                     "side": np.array([1], np.int8), "price_ticks": np.array([10], np.int64),
                                     "qty": np.array([1], np.int64)})
    e = Engine()
    e.submit({"ts_ns": np.array([0, 1], np.int64), "order_id": np.array([1, 2], np.uint64),
              "side": np.array([1, -1], np.int8), "price_ticks": np.array([10, 10], np.int64),
              "qty": np.array([2, 1], np.int64), "tif": np.array([3, 0], np.uint8)})
    e.end_session(2)
    e.book_levels()
    e.book_l3()
    return time.perf_counter() - t0


def match_columns(cols: Columns, batch_size: int | None = None, stp: str = "none",
                  progress: Callable[[int], None] | None = None, engine: Engine | None = None,
                  device: str = "cpu", risk=None) -> MatchRun:
    """Match order columns in batches of `batch_size` rows (None = all at once) on `device`
    ("cpu", "gpu" or "auto"; engine/device.py; ignored when `engine` is given), with risk
    checks and breakers when `risk` (RiskLimits or a TOML path) is given."""
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    eng = engine if engine is not None else Engine(stp=stp, device=device, risk=risk)
    compile_s = warm_up(eng.device, eng.risk is not None)
    n = len(cols["ts_ns"])
    step = n if not batch_size else batch_size
    parts: list[tuple] = []
    seconds = 0.0
    batches = 0
    for start in range(0, max(n, 1), max(step, 1)):
        batch = {k: v[start:start + step] for k, v in cols.items()}
        t0 = time.perf_counter()
        res = eng.submit(batch)
        seconds += time.perf_counter() - t0
        parts.append((res.fills.raw, res.events.raw, res.deltas.raw))
        batches += 1
        if progress is not None:
            progress(min(start + step, n))
    outs = [Rows(np.concatenate([p[k] for p in parts]) if len(parts) > 1 else parts[0][k], cols_k)
            for k, (_f, cols_k) in enumerate(STREAMS)]
    return MatchRun(*outs, engine=eng, n_events=n, seconds=seconds, compile_seconds=compile_s, batches=batches,
                    extra={"device": eng.device, "device_reason": eng.device_info.reason})


def match_file(orders: str | Path, fills: str | Path, events: str | Path | None = None,
               book: str | Path | None = None, batch_size: int | None = None, stp: str = "none",
               progress: Callable[[int, int], None] | None = None, device: str = "cpu", risk=None,
               positions: str | Path | None = None) -> MatchRun:
    """``hpte match``: read, match, write. Raises io.InputError for bad files."""
    cols = read_orders(orders)
    n = len(cols["ts_ns"])
    run = match_columns(cols, batch_size, stp, None if progress is None else (lambda d: progress(d, n)),
                        device=device, risk=risk)
    write_outputs(run, fills, events, book)
    if positions is not None:
        from hpte.engine.risk.state import POSITION_COLUMNS
        write_columns(positions, run.engine.risk.positions(), arrow_schema(POSITION_COLUMNS))
    return run


def write_outputs(run: MatchRun, fills, events=None, book=None) -> None:
    write_table(fills, to_arrow(dict(run.fills), S.FILL_SCHEMA))
    if events is not None:
        write_table(events, events_table(dict(run.events)))
    if book is not None:
        write_columns(book, run.engine.book_levels(), S.LEVEL_SCHEMA)
