"""``hpte md bars``: OHLCV/VWAP bars from a trades (fills) file, streamed in chunks."""
from __future__ import annotations

import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Optional

import typer


def bars(
    trades: Annotated[Path, typer.Argument(help="Trades file (the fills layout: ts_ns, symbol, price_ticks, qty), "
                                                "Parquet or Arrow IPC (.arrow/.ipc/.feather).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output bars file: Parquet, or Arrow IPC for .arrow/.ipc/.feather.")],
    every: Annotated[Optional[str], typer.Option("--every", "-e", help="Time bars of this length: 100us, 500ms, 1s, 1m, 1h ...")] = None,
    volume: Annotated[Optional[int], typer.Option("--volume", "-v", help="Volume bars of exactly this many lots (straddling trades are split).")] = None,
    chunk: Annotated[int, typer.Option("--chunk", help="Trades read and aggregated per chunk.")] = 1_000_000,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no summary line.")] = False,
) -> None:
    """Aggregate trades into OHLCV bars with VWAP and trade counts, per symbol, by time or by volume."""
    from hpte.engine.md import bars as B
    from hpte.engine.io import parse_duration

    try:
        if (every is None) == (volume is None):
            raise ValueError("give exactly one of --every (time bars) and --volume (volume bars)")
        if volume is not None and volume <= 0:
            raise ValueError(f"--volume {volume}: must be a positive number of lots")
        if chunk <= 0:
            raise ValueError(f"--chunk {chunk}: must be positive")
        every_ns = parse_duration(every) if every is not None else None
        with ExitStack() as stack:
            bar = None
            if not quiet and sys.stderr.isatty():
                bar = stack.enter_context(typer.progressbar(length=1, label="aggregating", file=sys.stderr))
            done = [0]

            def progress(rows: int, total: int) -> None:
                if bar is not None:
                    bar.length = max(total, 1)
                    bar.update(rows - done[0])
                done[0] = rows

            res = B.bars_file(trades, out, every=every_ns, volume=volume, chunk_rows=chunk, progress=progress)
    except (ValueError, OSError) as e:
        typer.echo(f"hpte md bars: error: {e}", err=True)
        raise typer.Exit(1) from None
    if not quiet:
        what = f"{every} time bars" if every is not None else f"{volume:,}-lot volume bars"
        rate = res["trades"] / res["seconds"] / 1e6 if res["seconds"] > 0 else float("inf")
        typer.echo(f"wrote {res['bars']:,} {what} for {res['symbols']:,} symbol{'s' if res['symbols'] != 1 else ''} "
                   f"from {res['trades']:,} trades to {res['path']} in {res['seconds']:.2f} s ({rate:.1f} M trades/s)")
