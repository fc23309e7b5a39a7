"""File-to-file matching: read an order file, feed it to an Engine in micro-batches, collect the
outputs, write Parquet. Used by ``hpte match`` and ``hpte demo``.
"""
from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import schema as S
from .book_state import NO_ROWS, STREAMS, Rows, parse_outputs
from .engine import Engine
from .io import Columns, InputError, TableWriter, events_table, read_orders, to_arrow, write_columns, write_table
from .schema import arrow_schema


WRITE_SLICE = 1 << 18   # output rows converted to Arrow at a time when streaming to files


class Tally:
    """Counts of a run's outputs, added up batch by batch (so that a run whose outputs were
    streamed to files, not kept, still has its summary)."""

    def __init__(self, want=(True, True, True)):
        self.want = tuple(want)
        self.rows = [0, 0, 0]
        self.codes = np.zeros(256, np.int64)      # events by code
        self.rejects = np.zeros(256, np.int64)    # REJECTED events by reason
        self.pairs = np.zeros(256 * 256, np.int64)  # breaker events by (code, reason)

    def add(self, fills: Rows, events: Rows, deltas: Rows) -> None:
        for k, r in enumerate((fills, events, deltas)):
            self.rows[k] += r.n_rows
        ev = events.raw
        if len(ev):
            codes, reasons = ev[:, 6], ev[:, 7]
            self.codes += np.bincount(codes, minlength=256)[:256]
            self.rejects += np.bincount(reasons[codes == S.EV_REJECTED], minlength=256)[:256]
            brk = np.isin(codes, S.BREAKER_EVENTS)
            if brk.any():
                self.pairs += np.bincount(codes[brk] * 256 + reasons[brk], minlength=256 * 256)[:256 * 256]


@dataclass
class MatchRun:
    """Outputs and figures of one matching run. When its outputs were streamed to files
    (``match_file``) the Rows here are empty and ``tally`` holds the counts."""
    fills: Rows
    events: Rows
    deltas: Rows
    engine: Engine
    n_events: int
    seconds: float              # time inside Engine.submit only (no I/O, no compilation)
    compile_seconds: float      # first-call time of the kernels (compilation or cache load)
    batches: int
    extra: dict = field(default_factory=dict)
    tally: Tally | None = None

    def summary(self) -> dict:
        t = self.tally
        if t is None:
            t = Tally()
            t.add(self.fills, self.events, self.deltas)
        by_event = {S.EVENT_NAMES[int(c)]: int(t.codes[c]) for c in np.flatnonzero(t.codes)}
        by_reason = {S.REASON_NAMES[int(c)]: int(t.rejects[c]) for c in np.flatnonzero(t.rejects)}
        by_breaker = {f"{S.EVENT_NAMES[int(p) // 256]} ({S.REASON_NAMES[int(p) % 256]})": int(t.pairs[p])
                      for p in np.flatnonzero(t.pairs)}
        ev = t.want[1]
        return {
            "events": self.n_events,
            "fills": t.rows[0] if t.want[0] else None,
            "order_events": t.rows[1] if ev else None,
            "deltas": t.rows[2] if t.want[2] else None,
            "books": self.engine.store.n_books,
            "resting": self.engine.store.resting(),
            "batches": self.batches,
            "seconds": self.seconds,
            "events_per_s": self.n_events / self.seconds if self.seconds > 0 else None,
            "compile_seconds": self.compile_seconds,
            **({"event_counts": by_event, "rejects_by_reason": by_reason} if ev else {}),
            **({"breaker_events": by_breaker} if self.engine.risk is not None and ev else {}),
            **self.extra,
        }


_WARM: dict = {}   # (device, risk) -> seconds its warm-up took in this process


def warm_up(device: str = "cpu", risk: bool = False) -> float:
    """Run every kernel a run uses once on a tiny input (compiles, or loads numba's cache);
    seconds taken. With device "gpu" the CUDA matching kernel is compiled too. With `risk` the
    risk kernel and not the plain matching step (a risk run never calls it: building it cost
    ~40 s CPU of a cold ``hpte match --risk``). Done once per process and key: later calls
    return the first call's seconds."""
    key = (device, bool(risk))
    if key in _WARM:
        return _WARM[key]
    t0 = time.perf_counter()
    if device == "gpu":
        Engine(device="gpu").submit({"ts_ns": np.array([0], np.int64), "order_id": np.array([1], np.uint64),
                                     "side": np.array([1], np.int8), "price_ticks": np.array([10], np.int64),
                                     "qty": np.array([1], np.int64)})
    if risk:
        from hpte.engine.risk.limits import RiskLimits
        e = Engine(risk=RiskLimits())
    else:
        e = Engine()
    e.submit({"ts_ns": np.array([0, 1], np.int64), "order_id": np.array([1, 2], np.uint64),
              "side": np.array([1, -1], np.int8), "price_ticks": np.array([10, 10], np.int64),
              "qty": np.array([2, 1], np.int64), "tif": np.array([3, 0], np.uint8)})
    e.end_session(2)
    e.book_levels()
    e.book_l3()
    _WARM[key] = time.perf_counter() - t0
    return _WARM[key]


def match_columns(cols: Columns, batch_size: int | None = None, stp: str = "none",
                  progress: Callable[[int], None] | None = None, engine: Engine | None = None,
                  device: str = "cpu", risk=None, outputs="all",
                  sink: Callable[[Rows, Rows, Rows], None] | None = None, matching=None) -> MatchRun:
    """Match order columns in batches of `batch_size` rows (None = all at once) on `device`
    ("cpu", "gpu" or "auto"; engine/device.py; ignored when `engine` is given), with risk
    checks and breakers when `risk` (RiskLimits or a TOML path) is given, and the books' matching
    algorithms from `matching` (engine/matching.py: a MatchingConfig, dict or TOML path).

    outputs: the streams to write ("all", or any of "fills", "events", "deltas"; Engine).
    sink: when given, each batch's outputs go to ``sink(fills, events, deltas)`` as views of the
    engine's reused buffers (valid during the call) and are not kept: memory stays bounded by
    one batch whatever the number of rows. Without it, the run keeps every output row."""
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    want = parse_outputs(outputs)
    eng = engine if engine is not None else Engine(stp=stp, device=device, risk=risk, matching=matching)
    compile_s = warm_up(eng.device, eng.risk is not None)
    n = len(cols["ts_ns"])
    step = n if not batch_size else batch_size
    parts: list[tuple] = []
    tally = Tally(want)
    seconds = 0.0
    batches = 0
    for start in range(0, max(n, 1), max(step, 1)):
        batch = {k: v[start:start + step] for k, v in cols.items()}
        t0 = time.perf_counter()
        res = eng.submit(batch, outputs=want, copy=sink is None)
        seconds += time.perf_counter() - t0
        tally.add(*res)
        if sink is not None:
            sink(*res)
        else:
            parts.append((res.fills.raw, res.events.raw, res.deltas.raw))
        batches += 1
        if progress is not None:
            progress(min(start + step, n))
    if sink is not None:
        outs = [Rows(NO_ROWS[k], cols_k) for k, (_f, cols_k) in enumerate(STREAMS)]
    else:
        outs = [Rows(np.concatenate([p[k] for p in parts]) if len(parts) > 1 else parts[0][k], cols_k)
                for k, (_f, cols_k) in enumerate(STREAMS)]
    return MatchRun(*outs, engine=eng, n_events=n, seconds=seconds, compile_seconds=compile_s, batches=batches,
                    extra={"device": eng.device, "device_reason": eng.device_info.reason}, tally=tally)


def match_file(orders: str | Path, fills: str | Path, events: str | Path | None = None,
               book: str | Path | None = None, batch_size: int | None = None, stp: str = "none",
               progress: Callable[[int, int], None] | None = None, device: str = "cpu", risk=None,
               positions: str | Path | None = None, keep: bool = False, notice=None, matching=None) -> MatchRun:
    """``hpte match``: read, match, write. Raises io.InputError for bad files.

    Only the streams that are written are asked of the kernels (fills; order events when
    `events` is given). Each batch's outputs are streamed to the file writers and the buffers
    reused, so memory stays bounded by a batch; with `keep` the run keeps every output row
    in memory instead (all three streams: ``hpte match --itch`` needs them). notice: a context
    manager factory wrapped around the kernels' warm-up (the CLI's "compiling kernels" notice)."""
    cols = read_orders(orders)
    if keep:
        stops = np.flatnonzero((cols["action"] == S.ACT_NEW) & ((cols["order_type"] == S.OT_STOP)
                                                                  | (cols["order_type"] == S.OT_STOP_LIMIT)))
        if stops.size:   # their waiting time would show as orders in the ITCH book (issue 11)
            raise InputError(f"column 'order_type' row {int(stops[0])}: ITCH out (--itch) does not publish "
                             "STOP / STOP_LIMIT orders yet; match this file without --itch")
        ice = np.flatnonzero((cols["action"] == S.ACT_NEW) & (cols["display_qty"] != 0))
        if ice.size:     # events carry an iceberg's total leaves: ITCH would show its reserve
            raise InputError(f"column 'display_qty' row {int(ice[0])}: ITCH out (--itch) does not publish "
                             "iceberg orders yet; match this file without --itch")
    with (notice() if notice is not None else nullcontext()):
        from .device import resolve_device
        warm_up(resolve_device(device).kind, risk is not None)
    n = len(cols["ts_ns"])
    prog = None if progress is None else (lambda d: progress(d, n))
    if keep:
        run = match_columns(cols, batch_size, stp, prog, device=device, risk=risk, matching=matching)
        write_outputs(run, fills, events, book)
    else:
        fw = TableWriter(fills, S.FILL_SCHEMA)
        ew = TableWriter(events, S.EVENT_FILE_SCHEMA) if events is not None else None

        def sink(f: Rows, e: Rows, _d: Rows) -> None:
            # converted a slice at a time: a one-batch run holds one slice's columns, not all
            for a in range(0, f.n_rows, WRITE_SLICE):
                fw.write(to_arrow(dict(Rows(f.raw[a:a + WRITE_SLICE], f.cols)), S.FILL_SCHEMA))
            for a in range(0, e.n_rows if ew is not None else 0, WRITE_SLICE):
                ew.write(events_table(dict(Rows(e.raw[a:a + WRITE_SLICE], e.cols))))
        try:
            run = match_columns(cols, batch_size, stp, prog, device=device, risk=risk, matching=matching,
                                outputs=("fills", "events") if events is not None else ("fills",), sink=sink)
        finally:
            fw.close()
            if ew is not None:
                ew.close()
        if book is not None:
            write_columns(book, run.engine.book_levels(), S.LEVEL_SCHEMA)
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
