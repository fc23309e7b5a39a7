"""``hpte bench``: CPU against GPU matching throughput over the number of books and batch sizes.

For every number of books B, the benchmark flow ``generate_flow(events, n_books=B, seed)`` is
matched on a fresh Engine per (device, batch size): the CPU engine with ``cpu_threads`` threads
(books in parallel) and, when a GPU is there, ``Engine(device="gpu")`` (one CUDA thread per book).
Compilation is excluded (a warm-up first), and so is the set-up: creating the B books (and, on the
GPU, the first upload of their state) is timed separately as ``setup_s``. ``seconds`` is the time
of all ``submit`` calls; for the GPU, ``transfer_s`` is the part of it spent copying inputs,
outputs and book state between host and device, ``kernel_s`` the part in the matching kernel.

The crossover for a batch size is the smallest number of books at which the GPU is at least as
fast as the CPU. Results: a printed table, ``bench.csv`` and ``bench.png`` (throughput against
books, one line per device and batch size, crossovers marked).

Without a GPU only the CPU side runs and the result says why the GPU side did not. The CUDA
simulator is never benchmarked unless asked for (``allow_simulator``, for tests): it runs the
kernel as Python and measures nothing about GPUs.
"""
from __future__ import annotations

import csv
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .device import DeviceError, DeviceInfo, resolve_device

QUICK = {"books": (1, 10, 100, 1000, 10_000), "batch_sizes": (8192, 65_536), "events": 100_000}
FULL = {"books": (1, 10, 100, 1000, 10_000, 100_000), "batch_sizes": (4096, 65_536, 1_048_576),
        "events": 1_000_000}

CSV_COLUMNS = ("device", "books", "batch_size", "events", "seconds", "events_per_s", "setup_s",
               "transfer_s", "kernel_s", "launches", "state_mb")


@dataclass
class BenchResult:
    """Rows (dicts with CSV_COLUMNS) and what ran."""
    rows: list[dict] = field(default_factory=list)
    cpu_threads: int = 1
    gpu: DeviceInfo | None = None        # the GPU that ran, None when the GPU side did not run
    gpu_note: str = ""                    # why the GPU side did not run
    seconds: float = 0.0

    def crossovers(self) -> dict[int, int | None]:
        """batch size -> smallest number of books where GPU events/s >= CPU events/s (None: never)."""
        out: dict[int, int | None] = {}
        if self.gpu is None:
            return out
        for bs in sorted({r["batch_size"] for r in self.rows}):
            cpu = {r["books"]: r["events_per_s"] for r in self.rows if r["batch_size"] == bs and r["device"] == "cpu"}
            gpu = {r["books"]: r["events_per_s"] for r in self.rows if r["batch_size"] == bs and r["device"] == "gpu"}
            out[bs] = next((b for b in sorted(gpu) if b in cpu and gpu[b] >= cpu[b]), None)
        return out


def _time_engine(eng, cols: dict, batch_size: int) -> dict:
    """Set up the books, then submit the flow in batches; seconds and GPU split."""
    n = len(cols["ts_ns"])
    t0 = time.perf_counter()
    eng.store.books_for(cols["symbol"], cols["price_ticks"], cols["action"], cols["order_type"])
    gpu = eng._gpu
    if gpu is not None:
        eng.store.device_state()
    setup = time.perf_counter() - t0
    before = dict(gpu.timings) if gpu is not None else None
    launches0 = gpu.launches if gpu is not None else 0
    t0 = time.perf_counter()
    for s in range(0, n, batch_size):
        eng.submit({k: v[s:s + batch_size] for k, v in cols.items()})
    seconds = time.perf_counter() - t0
    row = {"events": n, "seconds": seconds, "events_per_s": n / seconds if seconds > 0 else float("inf"),
           "setup_s": setup, "transfer_s": 0.0, "kernel_s": 0.0, "launches": 0,
           "state_mb": eng.state_bytes() / 1e6}
    if gpu is not None:
        d = {k: gpu.timings[k] - before[k] for k in gpu.timings}
        row.update(transfer_s=d["h2d"] + d["d2h"] + d["state_h2d"] + d["state_d2h"], kernel_s=d["kernel"],
                   launches=gpu.launches - launches0)
    return row


def run_bench(books=QUICK["books"], batch_sizes=QUICK["batch_sizes"], events: int = QUICK["events"],
              device: str = "auto", cpu_threads: int | None = None, seed: int = 0,
              progress: Callable[[str], None] | None = None, allow_simulator: bool = False) -> BenchResult:
    """Run the grid (see the module docstring). device: "auto" (GPU side when there is a GPU),
    "cpu" (CPU side only) or "gpu" (DeviceError when there is none)."""
    import numba

    from .engine import Engine
    from .gen import generate_flow
    from .pipeline import warm_up

    if events < 1 or not books or not batch_sizes or min(books) < 1 or min(batch_sizes) < 1:
        raise ValueError("events, books and batch sizes must be at least 1")
    t_start = time.perf_counter()
    say = progress or (lambda _s: None)
    threads = numba.config.NUMBA_NUM_THREADS if cpu_threads is None else int(cpu_threads)
    res = BenchResult(cpu_threads=threads)
    info = resolve_device(device)          # DeviceError for an explicit gpu without one
    if device == "cpu":
        res.gpu_note = "GPU side not run: --device cpu"
    elif info.kind != "gpu":
        res.gpu_note = f"GPU side not run: {info.reason}"
    elif info.simulator and not allow_simulator:
        res.gpu_note = ("GPU side not run: the CUDA simulator (NUMBA_ENABLE_CUDASIM=1) runs kernels "
                        "as Python and measures nothing about GPUs")
    else:
        res.gpu = info
    devices = ["cpu"] + (["gpu"] if res.gpu is not None else [])
    say("warm-up (compile or load the kernels) ...")
    for d in devices:
        warm_up(d)
    for b in books:
        cols = generate_flow(events, n_books=b, seed=seed)
        for bs in batch_sizes:
            for d in devices:
                eng = Engine(threads=threads, device=d) if d == "cpu" else Engine(device=d)
                row = {"device": d, "books": b, "batch_size": bs, **_time_engine(eng, cols, bs)}
                res.rows.append(row)
                say(f"{d:>3}  books {b:>7,}  batch {bs:>9,}  {row['events_per_s'] / 1e6:8.3f} M events/s")
                del eng
    res.seconds = time.perf_counter() - t_start
    return res


def format_table(res: BenchResult) -> str:
    """The results as a text table, CPU and GPU side by side per (books, batch size)."""
    by = {(r["books"], r["batch_size"], r["device"]): r for r in res.rows}
    keys = sorted({(r["books"], r["batch_size"]) for r in res.rows})
    head = f"{'books':>8} {'batch':>9} {'CPU M ev/s':>11} {'GPU M ev/s':>11} {'GPU/CPU':>8} {'transfer s':>11} {'kernel s':>9} {'state MB':>9}"
    lines = [head, "-" * len(head)]
    for b, bs in keys:
        c, g = by.get((b, bs, "cpu")), by.get((b, bs, "gpu"))
        cs = f"{c['events_per_s'] / 1e6:11.3f}" if c else f"{'-':>11}"
        if g:
            gs = f"{g['events_per_s'] / 1e6:11.3f}"
            ratio = f"{g['events_per_s'] / c['events_per_s']:8.2f}" if c else f"{'-':>8}"
            tr, kn = f"{g['transfer_s']:11.3f}", f"{g['kernel_s']:9.3f}"
        else:
            gs, ratio, tr, kn = f"{'not run':>11}", f"{'-':>8}", f"{'-':>11}", f"{'-':>9}"
        mb = (c or g)["state_mb"]
        lines.append(f"{b:>8,} {bs:>9,} {cs} {gs} {ratio} {tr} {kn} {mb:9.0f}")
    lines.append(f"CPU: {res.cpu_threads} thread(s)." + (f" GPU: {res.gpu.describe()}." if res.gpu else ""))
    if res.gpu is None:
        lines.append(res.gpu_note)
    else:
        for bs, b in res.crossovers().items():
            lines.append(f"crossover at batch {bs:,}: " + (f"GPU >= CPU from {b:,} books" if b else "GPU never caught up"))
    return "\n".join(lines)


def write_csv(res: BenchResult, path: Path) -> Path:
    path = Path(path)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for r in res.rows:
            w.writerow({k: r[k] for k in CSV_COLUMNS})
    return path


def plot(res: BenchResult, path: Path) -> Path:
    """Throughput against books (log-log), one line per device and batch size; crossovers marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    sizes = sorted({r["batch_size"] for r in res.rows})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, bs in enumerate(sizes):
        for d, style in (("cpu", "-o"), ("gpu", "--s")):
            pts = sorted((r["books"], r["events_per_s"]) for r in res.rows if r["batch_size"] == bs and r["device"] == d)
            if pts:
                x, y = zip(*pts)
                ax.plot(x, np.asarray(y) / 1e6, style, color=colors[i % len(colors)], label=f"{d.upper()} batch {bs:,}")
    for i, (bs, b) in enumerate(res.crossovers().items()):
        if b is not None:
            ax.axvline(b, color=colors[sizes.index(bs) % len(colors)], linestyle=":", alpha=0.8)
            ax.annotate(f"crossover\n(batch {bs:,})", (b, ax.get_ylim()[1]), fontsize=8,
                        xytext=(3, -12 - 24 * i), textcoords="offset points", va="top")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("books in the flow")
    ax.set_ylabel("M events / s")
    title = f"hpte matching throughput: CPU ({res.cpu_threads} threads)"
    title += f" vs GPU ({res.gpu.name or 'CUDA'})" if res.gpu else ""
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    if res.gpu is None:
        fig.text(0.5, 0.01, textwrap.fill(res.gpu_note, 120), ha="center", va="bottom", fontsize=7, color="0.3")
        fig.tight_layout(rect=(0, 0.07, 1, 1))
    else:
        fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


__all__ = ["BenchResult", "CSV_COLUMNS", "DeviceError", "FULL", "QUICK", "format_table", "plot",
           "run_bench", "write_csv"]
