"""``hpte sweep STRATEGY --data BARS.parquet --param fast=5:100:5 --param slow=110:600:10 --out DIR``."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from hpte.cli.backtest.command import fail, parse_params

GRID_USAGE = "NAME=START:STOP:STEP, NAME=A,B,C or NAME=VALUE"


def sweep_cmd(
    strategy: Annotated[str, typer.Argument(help="Strategy file (.py), a bundled one (ma_cross on bars; market_maker, "
                                            "momentum on tick data) or a module.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for results.parquet and heatmap.png (ranking.png).")],
    data: Annotated[Optional[Path], typer.Option("--data", "-d", help="Bars: an `hpte md bars` Parquet file or any "
                                                 "Parquet/Arrow table with a close column; for a tick strategy the "
                                                 "market data of `hpte backtest` (LOBSTER CSV, events file, ITCH, orders).")] = None,
    walk: Annotated[Optional[int], typer.Option("--walk", help="Instead of --data: a geometric random walk of N bars "
                                                "(seeded by --seed).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of --walk; of the random latencies of a tick sweep.")] = 0,
    param: Annotated[Optional[list[str]], typer.Option("--param", "-p", help="NAME=START:STOP:STEP (inclusive), "
                                                       "NAME=A,B,C or NAME=VALUE; repeatable.")] = None,
    grid: Annotated[Optional[Path], typer.Option("--grid", help="TOML grid file with a [params] table.")] = None,
    device: Annotated[str, typer.Option("--device", help="cpu or gpu (bar strategies; tick strategies in no-impact "
                                        "mode).")] = "cpu",
    cluster: Annotated[Optional[str], typer.Option("--cluster", help="local (a Dask LocalCluster started and stopped "
                                                   "here) or a scheduler address tcp://HOST:PORT.")] = None,
    workers: Annotated[int, typer.Option("--workers", help="Worker processes of --cluster local.")] = 2,
    top: Annotated[int, typer.Option("--top", help="Print the best N parameter sets.")] = 10,
    metric: Annotated[Optional[str], typer.Option("--metric", help="Ranking metric (bars: total_return (default), sharpe, "
                                                  "max_drawdown, ...; ticks: pnl (default), sharpe, fill_ratio, ...).")] = None,
    fee: Annotated[float, typer.Option("--fee", help="Fee per order, a fraction of traded value (0.001 = 10 bp).")] = 0.0,
    init_cash: Annotated[float, typer.Option("--init-cash", help="Starting cash.")] = 100.0,
    symbol: Annotated[Optional[int], typer.Option("--symbol", help="Symbol of a multi-symbol bars file.")] = None,
    chunk: Annotated[Optional[int], typer.Option("--chunk", help="Parameter sets per chunk (default: from --memory).")] = None,
    memory: Annotated[str, typer.Option("--memory", help="Memory budget for data and results in flight.")] = "4GiB",
    mode: Annotated[str, typer.Option("--mode", help="Tick strategies: no-impact (the replayed book as the data says) "
                                      "or impact (each parameter set's orders in its own copy of the replayed L3 book, "
                                      "as hpte backtest --mode impact).")] = "no-impact",
    queue: Annotated[Optional[str], typer.Option("--queue", help="Tick strategies on L2 data: the queue model, as "
                                                 "hpte backtest's --queue (conservative, prob, prob:power:N, prob:log).")] = None,
    latency: Annotated[Optional[str], typer.Option("--latency", help="Tick strategies: as hpte backtest's --latency.")] = None,
    fees: Annotated[Optional[str], typer.Option("--fees", help="Tick strategies: maker=-20,taker=30 per lot.")] = None,
    capital: Annotated[float, typer.Option("--capital", help="Tick strategies: base of return and turnover.")] = 1e9,
    sample: Annotated[str, typer.Option("--sample", help="Tick strategies: equity sample interval (Sharpe, drawdown).")] = "1m",
    timer: Annotated[Optional[str], typer.Option("--timer", help="Tick strategies: on_timer period.")] = None,
    tick: Annotated[Optional[int], typer.Option("--tick", help="Tick strategies: price tick of an events or order file.")] = None,
    stock: Annotated[Optional[str], typer.Option("--stock", help="Tick strategies on ITCH data: the stock's symbol.")] = None,
    max_instant_actions: Annotated[int, typer.Option("--max-instant-actions", help="Tick strategies: stop after this many "
                                                     "actions at one instant (0: no limit).")] = 100_000,
    plot: Annotated[bool, typer.Option("--plot/--no-plot", help="Draw heatmap.png (two parameters) or ranking.png.")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress lines.")] = False,
) -> None:
    """Sweep a strategy over a parameter grid (bar strategies on CPU threads, a GPU or a Dask
    cluster; tick strategies over one decoded L3 stream on CPU threads, a GPU (no-impact) or
    Dask, in no-impact or impact mode); write
    results.parquet (one row per parameter set: parameters and metrics), print the best sets
    and draw a heatmap."""
    from hpte.engine.backtest.strategy import StrategyError
    from hpte.engine.device import DeviceError
    from hpte.engine.io import InputError
    from hpte.engine.sweep import sweep
    from hpte.engine.sweep.data import random_walk

    t0 = time.perf_counter()

    def progress(done: int, total: int) -> None:
        if not quiet:
            typer.echo(f"  {done:,}/{total:,} parameter sets ({done / total:.0%}), {time.perf_counter() - t0:.1f} s",
                       err=True)

    try:
        if (data is None) == (walk is None):
            raise ValueError("give the bars with --data FILE or --walk N (a random walk), one of the two")
        src = random_walk(walk, seed) if walk is not None else data
        res = sweep(strategy, src, params=parse_params(param or [], GRID_USAGE), grid=grid, device=device, cluster=cluster,
                    out=out, top=top, metric=metric, fee=fee, init_cash=init_cash, symbol=symbol, chunk=chunk,
                    memory=memory, workers=workers, plot=plot, progress=progress, latency=latency, fees=fees,
                    seed=seed, capital=capital, sample=sample, timer=timer, tick=tick, stock=stock,
                    max_instant_actions=max_instant_actions, mode=mode, queue=queue)
    except (StrategyError, InputError, DeviceError, ValueError) as e:
        raise fail(str(e)) from None
    except OSError as e:
        raise fail(f"{e.filename or data}: {e.strerror or e}") from None
    typer.echo(res.summary(top))
    typer.echo(f"wrote {res.path} ({res.stats['sets']:,} rows)" + (f", {res.plot}" if res.plot else ""))
