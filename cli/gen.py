"""``hpte gen``: write a synthetic order flow like FORMATS.md's benchmark flow."""
from __future__ import annotations

import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated

import typer

_OPTION_NAMES = {"n_events": "--events", "n_books": "--books", "n_accounts": "--accounts",
                 "seed": "--seed", "start_mid": "--start-mid",
                 "stops": "--stops", "gtd": "--gtd", "icebergs": "--icebergs"}


def gen(
    out: Annotated[Path, typer.Argument(help="Output order file: Parquet, or Arrow IPC for .arrow/.ipc/.feather.")],
    events: Annotated[int, typer.Option("--events", "-n", help="Number of events (rows) to generate.")] = 1_000_000,
    books: Annotated[int, typer.Option("--books", "-b", help="Number of books (symbols 0..B-1), each with its own walk.")] = 1,
    accounts: Annotated[int, typer.Option("--accounts", "-a", help="Accounts 1..A, drawn Zipf(1.3).")] = 5000,
    seed: Annotated[int, typer.Option("--seed", "-s", help="Random seed; the flow is a function of all options.")] = 0,
    start_mid: Annotated[int, typer.Option("--start-mid", help="Starting mid of every book, ticks.")] = 100_000,
    stops: Annotated[float, typer.Option("--stops", help="Share of the NEW GTC rows turned into stop / stop-limit orders (0..1).")] = 0.0,
    gtd: Annotated[float, typer.Option("--gtd", help="Share of the NEW GTC rows given an expiry (good-till-date, 0..1).")] = 0.0,
    icebergs: Annotated[float, typer.Option("--icebergs", help="Share of the NEW GTC rows made icebergs (display_qty 1..qty, 0..1).")] = 0.0,
) -> None:
    """Generate synthetic order flow (60% new GTC, 30% cancels, 10% IOC) and write it as an order file."""
    from hpte.engine import gen as G
    from hpte.engine import io, schema

    try:
        with ExitStack() as stack:
            bar = None
            if sys.stderr.isatty() and events > G.GEN_CHUNK:
                bar = stack.enter_context(typer.progressbar(length=events, label="generating", file=sys.stderr))
            done = [0]

            def progress(i: int, n: int) -> None:
                if bar is not None:
                    bar.update(i - done[0])
                done[0] = i

            cols, st = G.generate_flow_stats(events, books, accounts, seed, start_mid, progress=progress,
                                                 stops=stops, gtd=gtd, icebergs=icebergs)
        t0 = time.perf_counter()
        path = io.write_columns(out, cols, schema.ORDER_SCHEMA)
        t_write = time.perf_counter() - t0
    except (ValueError, OSError) as e:
        msg = str(e)
        for name, opt in _OPTION_NAMES.items():
            msg = msg.replace(name, opt)
        typer.echo(f"hpte gen: error: {msg}", err=True)
        raise typer.Exit(1) from None
    mix = ""
    if stops or gtd or icebergs:
        mix = (f"; mixed in {st.stops + st.stop_limits:,} stops ({st.stop_limits:,} stop-limit), {st.gtd:,} GTD and "
               f"{st.icebergs:,} icebergs "
               "(trades and resting at end are the generator's plain simulation, without them)")
    typer.echo(
        f"wrote {st.n_events:,} events ({st.n_books:,} book{'s' if st.n_books != 1 else ''}) to {path}: "
        f"{st.new:,} new GTC, {st.cancel:,} cancels, {st.ioc:,} IOC; {st.trades:,} trades, "
        f"{st.resting_end:,} resting at end, {st.levels_touched:,} levels touched; "
        f"generated in {st.seconds:.2f} s, written in {t_write:.2f} s{mix}"
    )
