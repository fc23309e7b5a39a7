"""``hpte backtest STRATEGY --data FILE --out DIR``."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer


def fail(msg: str) -> typer.Exit:
    """The one-line error exit of the strategy commands (backtest, sweep)."""
    typer.echo(f"error: {msg}", err=True)
    return typer.Exit(1)


def parse_params(items: list[str], usage: str = "NAME=VALUE") -> dict:
    """``--param NAME=VALUE`` options as name -> value text (the values are checked later)."""
    out = {}
    for it in items:
        if "=" not in it:
            raise ValueError(f"--param {it!r}: use {usage}")
        k, v = it.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def backtest_cmd(
    strategy: Annotated[str, typer.Argument(help="Strategy file (.py), a bundled strategy (market_maker, momentum; "
                                            "ma_cross on bars) or an importable module.")],
    data: Annotated[Path, typer.Option("--data", "-d", help="Market data: a LOBSTER message CSV (its orderbook file "
                                       "beside it is used when present), an ITCH 5.0 file (*.itch, with --stock), an hpte order file (matched by the "
                                       "engine first) or a Parquet/IPC events file; for a bar strategy "
                                       "an `hpte md bars` file (or any table with a close column).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for orders/fills/equity.parquet, summary.json, report.png.")],
    mode: Annotated[str, typer.Option("--mode", help="no-impact (the replayed book as the data says) or impact (the strategy's orders "
                                            "trade in one book with the replayed orders; README: impact mode).")] = "no-impact",
    queue: Annotated[Optional[str], typer.Option("--queue", help="L2 data (price levels, no order ids): the queue model of "
                                                 "the strategy's resting orders: conservative (ahead shrinks only by trades at "
                                                 "its level), prob (= prob:power:3), prob:power:N or prob:log (a level decrease "
                                                 "comes from ahead with a probability of the position; seeded by --seed). With a "
                                                 "LOBSTER message CSV it reads the day as L2 (its orderbook file). No-impact mode "
                                                 "only; L3 data needs none (exact queue position).")] = None,
    latency: Annotated[Optional[str], typer.Option("--latency", help="One duration for all channels (100us) or "
                                                   "feed=100us,entry=50us:150us,response=100us (lo:hi = uniform, seeded; "
                                                   "table:FILE = observed latencies in ns, a CSV or Parquet column, drawn seeded).")] = None,
    fees: Annotated[Optional[str], typer.Option("--fees", help="maker=-20,taker=30: price units per lot (negative: rebate).")] = None,
    param: Annotated[Optional[list[str]], typer.Option("--param", "-p", help="NAME=VALUE, repeatable (the strategy's PARAMS).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random latencies and of the prob queue model.")] = 0,
    capital: Annotated[float, typer.Option("--capital", help="Base of return and turnover, price units.")] = 1e9,
    sample: Annotated[str, typer.Option("--sample", help="Equity-curve interval (Sharpe and drawdown use it).")] = "1m",
    timer: Annotated[Optional[str], typer.Option("--timer", help="on_timer period (default: the strategy's TIMER_NS).")] = None,
    tick: Annotated[Optional[int], typer.Option("--tick", help="Price tick of an events file (LOBSTER: 100).")] = None,
    chunk_events: Annotated[int, typer.Option("--chunk-events", help="Events per chunk (memory; results do not depend on it).")] = 1 << 20,
    fee: Annotated[Optional[float], typer.Option("--fee", help="Bar strategies: fee per order, a fraction of traded value.")] = None,
    init_cash: Annotated[Optional[float], typer.Option("--init-cash", help="Bar strategies: starting cash (100).")] = None,
    symbol: Annotated[Optional[int], typer.Option("--symbol", help="Bar strategies: the symbol of a multi-symbol bars file.")] = None,
    stock: Annotated[Optional[str], typer.Option("--stock", help="ITCH data: the stock (AAPL); order files: the symbol "
                                                 "(7 or SYM7; default: the file's only one).")] = None,
    max_instant_actions: Annotated[int, typer.Option("--max-instant-actions", help="Stop with an error after this many "
                                                     "strategy actions at one instant (a zero-latency loop); 0: no limit.")] = 100_000,
    report: Annotated[bool, typer.Option("--report/--no-report", help="Draw report.png.")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress lines.")] = False,
) -> None:
    """Backtest a strategy tick by tick over L3 market data (or L2 data with --queue) and write its orders, fills, equity
    curve, a summary and report.png."""
    from hpte.engine.backtest import StrategyError, backtest
    from hpte.engine.io import InputError

    t0 = time.perf_counter()

    def progress(n: int) -> None:
        if not quiet:
            dt = time.perf_counter() - t0
            typer.echo(f"  {n:,} events, {dt:.1f} s", err=True)

    try:
        res = backtest(strategy, data, params=parse_params(param or []), mode=mode, latency=latency, fees=fees,
                       seed=seed, capital=capital, sample=sample, timer=timer, tick=tick,
                       chunk_events=chunk_events, progress=progress, max_instant_actions=max_instant_actions,
                       fee=fee, init_cash=init_cash, symbol=symbol, stock=stock, queue=queue)
        res.write(out, report=report)
    except StrategyError as e:
        raise fail(str(e)) from None
    except (InputError, ValueError) as e:
        raise fail(str(e)) from None
    except OSError as e:
        raise fail(f"{e.filename or data}: {e.strerror or e}") from None
    typer.echo(res.summary())
    if not hasattr(res, "orders"):      # a bar strategy
        typer.echo(f"wrote {out}/fills.parquet ({len(res.fills['ts_ns']):,} rows), equity.parquet "
                   f"({len(res.equity):,}), summary.json" + (", report.png" if report else ""))
        return
    typer.echo(f"wrote {out}/orders.parquet ({len(res.orders['ts_ns']):,} rows), fills.parquet "
               f"({len(res.fills['ts_ns']):,}), equity.parquet ({len(res.equity['ts_ns']):,}), summary.json"
               + (", report.png" if report else ""))
