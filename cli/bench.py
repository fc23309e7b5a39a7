"""``hpte bench``: CPU against GPU matching throughput over books and batch sizes (engine/bench.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def _fail(msg: str) -> None:
    typer.echo(f"hpte bench: error: {msg}", err=True)
    raise typer.Exit(1)


def _ints(opt: str, text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        vals = tuple(int(x.replace("_", "")) for x in text.split(",") if x.strip())
    except ValueError:
        _fail(f"{opt} must be a comma-separated list of integers, got {text!r}")
    if not vals or min(vals) < 1:
        _fail(f"{opt} values must be at least 1, got {text!r}")
    return vals


def bench(
    out: Annotated[Path, typer.Option("--out", help="Folder for bench.csv and bench.png.")],
    quick: Annotated[bool, typer.Option("--quick", help="A small grid (under a minute on 2 cores): 1..10,000 books, 100,000 events.")] = False,
    device: Annotated[str, typer.Option("--device", help="auto (GPU side when there is a GPU), cpu (CPU side only) or gpu (error without one).")] = "auto",
    books: Annotated[str | None, typer.Option("--books", help="Numbers of books, comma-separated (default: the grid's).")] = None,
    batch_sizes: Annotated[str | None, typer.Option("--batch-sizes", help="Batch sizes, comma-separated (default: the grid's).")] = None,
    events: Annotated[int | None, typer.Option("--events", "-n", help="Events per flow (default: the grid's).")] = None,
    cpu_threads: Annotated[int | None, typer.Option("--cpu-threads", help="CPU engine threads (default: all cores).")] = None,
    seed: Annotated[int, typer.Option("--seed", "-s", help="Flow seed.")] = 0,
) -> None:
    """Benchmark matching on CPU against GPU: events/s over the number of books (1..100,000) and
    batch sizes, GPU transfer time apart; prints a table, writes DIR/bench.csv and DIR/bench.png."""
    from hpte.engine import bench as B
    from hpte.engine.device import DEVICES, DeviceError

    if device not in DEVICES:
        _fail(f"--device must be one of {', '.join(DEVICES)}, got {device!r}")
    if cpu_threads is not None and cpu_threads < 1:
        _fail(f"--cpu-threads must be at least 1, got {cpu_threads}")
    grid = B.QUICK if quick else B.FULL
    b = _ints("--books", books) or grid["books"]
    bs = _ints("--batch-sizes", batch_sizes) or grid["batch_sizes"]
    n = grid["events"] if events is None else events
    if n < 1:
        _fail(f"--events must be at least 1, got {n}")
    try:
        out.mkdir(parents=True, exist_ok=True)
        res = B.run_bench(b, bs, n, device=device, cpu_threads=cpu_threads, seed=seed, progress=typer.echo)
        csv_path = B.write_csv(res, out / "bench.csv")
        png_path = B.plot(res, out / "bench.png")
    except (DeviceError, ValueError, OSError) as e:
        _fail(str(e))
    typer.echo("")
    typer.echo(B.format_table(res))
    typer.echo(f"wrote {csv_path} and {png_path} ({res.seconds:.1f} s)")
