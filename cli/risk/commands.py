"""``hpte risk check`` and ``hpte risk auction``: thin commands over engine/risk/limits.py and
engine/risk/auction.py."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

risk_app = typer.Typer(help="Pre-trade risk limits and call auctions.", no_args_is_help=True)


def _fail(cmd: str, msg: str) -> None:
    typer.echo(f"hpte risk {cmd}: error: {msg}", err=True)
    raise typer.Exit(1)


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(str(x) for x in v) + "]"
    return f"{v:,}" if isinstance(v, int) else str(v)


@risk_app.command("check")
def check(
    config: Annotated[Path, typer.Argument(help="Risk limits file (TOML).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the validated configuration as one JSON object.")] = False,
) -> None:
    """Validate a risk limits file and print the limits per scope (defaults, accounts, symbols,
    breakers). Exit 1 with one line naming the key for a bad file."""
    from hpte.engine.risk.limits import RiskConfigError, RiskLimits

    try:
        lim = RiskLimits.load(config)
    except RiskConfigError as e:
        _fail("check", str(e))
    if as_json:
        typer.echo(json.dumps({"defaults": lim.defaults, "accounts": {str(k): v for k, v in lim.accounts.items()},
                               "symbols": {str(k): v for k, v in lim.symbols.items()}, "breakers": lim.breakers}))
        return
    typer.echo(f"{config}: ok ({len(lim.accounts)} account{'s' if len(lim.accounts) != 1 else ''}, "
               f"{len(lim.symbols)} symbol{'s' if len(lim.symbols) != 1 else ''}, "
               f"{len(lim.breakers)} breaker parameter{'s' if len(lim.breakers) != 1 else ''})")
    for scope, values in lim.summary_rows():
        if not values:
            typer.echo(f"{scope}: (nothing set)")
            continue
        typer.echo(f"{scope}:")
        w = max(len(k) for k in values)
        for k, v in values.items():
            typer.echo(f"  {k:<{w}}  {_fmt(v)}")


@risk_app.command("auction")
def auction(
    orders: Annotated[Path, typer.Argument(help="Order file (Parquet, or Arrow IPC for .arrow/.ipc/.feather).")],
    fills: Annotated[Path, typer.Option("--fills", help="Where to write the auction's fills (Parquet or Arrow IPC).")],
    symbol: Annotated[Optional[int], typer.Option("--symbol", help="Only this book (default: one auction per symbol).")] = None,
    reference_price: Annotated[Optional[int], typer.Option("--reference-price", help="Reference price in ticks (tie-break: closest price wins); one book only.")] = None,
) -> None:
    """Run a call auction (opening / closing) on an order file's NEW LIMIT orders: one uncrossing
    price per book maximising volume, then minimising imbalance, then closest to the reference."""
    from hpte.engine import io
    from hpte.engine import schema as S
    from hpte.engine.risk.auction import auction_orders

    try:
        cols = io.read_orders(orders)
        out, books = auction_orders(cols, symbol=symbol, reference_price=reference_price)
        if symbol is not None and not books:
            raise io.InputError(f"{orders}: no NEW LIMIT orders of symbol {symbol}")
        io.write_columns(fills, out, S.FILL_SCHEMA)
    except (ValueError, OSError) as e:
        _fail("auction", str(e))
    for b in books:
        if b["price"] is None:
            typer.echo(f"symbol {b['symbol']}: no cross ({b['bids']} bids, {b['asks']} asks)")
        else:
            typer.echo(f"symbol {b['symbol']}: price {b['price']} volume {b['volume']} imbalance {b['imbalance']:+d} "
                       f"fills {b['fills']} ({b['bids']} bids, {b['asks']} asks)")
    typer.echo(f"wrote {len(out['qty']):,} fills to {fills}")
