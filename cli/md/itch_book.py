"""``hpte md itch book``: rebuild every stock's order book from an ITCH 5.0 file with the engine."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def _fail(msg: str) -> typer.Exit:
    typer.echo(f"error: {msg}", err=True)
    return typer.Exit(1)


def itch_book(
    file: Annotated[Path, typer.Argument(help="ITCH 5.0 file: [u16 BE length][message] frames; .gz is read streamed.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for trades.parquet, book.parquet and summary.json.")],
    symbols: Annotated[str | None, typer.Option("--symbols", help="Only these stocks, comma separated (e.g. AAPL,MSFT).")] = None,
    levels: Annotated[int, typer.Option("--levels", help="Price levels per side in the book snapshots.")] = 10,
    every_ns: Annotated[int | None, typer.Option("--every-ns", help="Also snapshot the book at every multiple of this "
                                                 "many ns since midnight (the book before that time).")] = None,
    tick: Annotated[int, typer.Option("--tick", help="ITCH price units ($0.0001) per engine tick; e.g. 100 = one cent. "
                                      "Orders off this grid are tracked but kept out of the engine book.")] = 1,
    max_levels: Annotated[int | None, typer.Option("--max-levels", help="Engine ladder limit in ticks per book side "
                                                   "(a multiple of 4096); orders beyond it are kept off book.")] = None,
    keep_valid: Annotated[bool, typer.Option("--keep-valid", help="On bad input use the messages before the bad frame "
                                             "instead of failing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object on the last line.")] = False,
) -> None:
    """Rebuild every stock's order-by-order book from FILE's add / execute / cancel / delete /
    replace messages in the engine's book; write the trades (from E/C messages), the top levels
    at the end (and every --every-ns) and a summary. Prices in the outputs are ITCH Price(4)
    integers (1 tick = $0.0001)."""
    from hpte.engine.md.itch import ItchError
    from hpte.engine.md.itch import warm_up as itch_warm_up
    from hpte.engine.md.itch_book import itch_book_file
    from hpte.engine.pipeline import warm_up

    if levels < 1:
        raise _fail(f"--levels must be at least 1, got {levels}")
    if every_ns is not None and every_ns < 1:
        raise _fail(f"--every-ns must be at least 1, got {every_ns}")
    names = None if symbols is None else [s for s in (x.strip() for x in symbols.split(",")) if s]
    try:
        itch_warm_up()
        warm_up()     # compile / load the kernels before the clock starts
        s = itch_book_file(file, out, symbols=names, levels=levels, every_ns=every_ns, tick=tick,
                           max_levels=max_levels, keep_valid=keep_valid)
    except ItchError as e:
        raise _fail(str(e)) from None
    except ValueError as e:
        raise _fail(str(e)) from None
    except OSError as e:
        raise _fail(f"{e.filename or file}: {e.strerror or e}") from None
    if s.get("error"):
        typer.echo(f"warning: stopped early, used the messages before the bad frame: {s['error']}", err=True)
    if as_json:
        typer.echo(json.dumps(s))
        return
    rows = [
        ("messages", f"{s['messages']:,}"), ("stocks named", f"{s['stocks_named']:,}"),
        ("adds", f"{s['adds']:,}"), ("executions", f"{s['executions']:,}"), ("partial cancels", f"{s['cancels']:,}"),
        ("deletes", f"{s['deletes']:,}"), ("replaces", f"{s['replaces']:,}"),
        ("trades", f"{s['trades']:,} ({s['traded_qty']:,} shares)"),
        ("unknown references", f"{s['unknown']:,}" + (f" {s['unknown_by_type']}" if s["unknown"] else "")),
        ("bad adds", f"{s['bad_adds']:,}"), ("duplicate references", f"{s['duplicates']:,}"),
        ("over-executions/cancels", f"{s['over_reductions']:,}"),
        ("live orders", f"{s['live_orders']:,} in {s['books']:,} books ({s['off_book_live']:,} off book)"),
        ("snapshots", f"{s['snapshots']:,} + the final one"),
        ("time", f"{s['seconds']:.3f} s ({(s['messages_per_s'] or 0) / 1e6:.2f} M messages/s)"),
    ]
    if s["engine_rejects"]:
        rows.append(("engine rejects", ", ".join(f"{k} {v:,}" for k, v in s["engine_rejects"].items())))
    w = max(len(k) for k, _ in rows)
    for k, v in rows:
        typer.echo(f"{k:<{w}}  {v}")
    typer.echo(f"wrote {out}/trades.parquet, book.parquet, summary.json")
