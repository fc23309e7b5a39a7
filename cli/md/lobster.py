"""``hpte md lobster``: replay a LOBSTER message file through the engine's book."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from hpte.engine.md import lobster as L

lobster_app = typer.Typer(help="LOBSTER message and orderbook files (lobsterdata.com).", no_args_is_help=True)


def _fail(msg: str) -> typer.Exit:
    typer.echo(f"error: {msg}", err=True)
    return typer.Exit(1)


@lobster_app.command("parse")
def parse(
    messages: Annotated[Path, typer.Argument(help="LOBSTER message file (6 columns).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for messages.parquet and trades.parquet "
                                      "(and orderbook.parquet with --orderbook).")],
    orderbook: Annotated[Optional[Path], typer.Option("--orderbook", help="LOBSTER orderbook file to convert too.")] = None,
    symbol: Annotated[int, typer.Option("--symbol", help="Symbol id written in trades.parquet.")] = 0,
    keep_valid: Annotated[bool, typer.Option("--keep-valid", help="On a bad line keep the rows before it.")] = False,
) -> None:
    """Convert LOBSTER files to Parquet: the messages as columns, the executions (types 4 and 5)
    as a trades file that `hpte md bars` reads, and optionally the orderbook file."""
    import pyarrow as pa

    from hpte.engine.io import write_table

    try:
        msgs = L.read_messages(messages, keep_valid=keep_valid)
        book = L.read_orderbook(orderbook, keep_valid=keep_valid) if orderbook is not None else None
        cols = msgs.columns()
        write_table(out / "messages.parquet", pa.table({k: pa.array(v) for k, v in cols.items()}))
        trades = L.trades_columns(msgs, symbol)
        write_table(out / "trades.parquet", pa.table({k: pa.array(v) for k, v in trades.items()}))
        if book is not None:
            write_table(out / "orderbook.parquet", pa.table({k: pa.array(v) for k, v in book.columns().items()}))
    except L.LobsterError as e:
        raise _fail(str(e)) from None
    except OSError as e:
        raise _fail(f"{e.filename or messages}: {e.strerror or e}") from None
    for d in (msgs, book):
        if d is not None and d.error:
            typer.echo(f"warning: stopped early, kept {len(d):,} valid rows: {d.error}", err=True)
    typer.echo(f"wrote {out}/messages.parquet ({len(msgs):,} rows), trades.parquet "
               f"({len(trades['ts_ns']):,} executions)" + (f", orderbook.parquet ({len(book):,} rows)" if book is not None else ""))


@lobster_app.command("replay")
def replay(
    messages: Annotated[Path, typer.Argument(help="LOBSTER message file (6 columns).")],
    levels: Annotated[int, typer.Option("--levels", "-n", min=1, help="Levels per side to write (N).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Orderbook CSV to write: the top N after every message, "
                                      "in the orderbook file's layout and units.")],
    orderbook: Annotated[Optional[Path], typer.Option(
        "--orderbook", help="LOBSTER orderbook file of the same day: the replay learns from it only the levels "
                            "that enter the visible top N from beyond it, and compares every row.")] = None,
    keep_valid: Annotated[bool, typer.Option("--keep-valid", help="On a bad line keep the rows before it (in both "
                                             "files) and replay those, instead of failing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON summary line instead of text.")] = False,
) -> None:
    """Replay MESSAGES through the engine's book; write the top N levels after every message.

    Type 1 -> NEW LIMIT GTC, 2 -> REPLACE down, 3 -> CANCEL, 4 -> REPLACE down or CANCEL, 5-7 ->
    nothing. Exit 1 on bad input, or when a row differs from ORDERBOOK.
    """
    L.warm_up()  # load the compiled kernels before the clock starts
    t0 = time.perf_counter()
    try:
        msgs = L.read_messages(messages, keep_valid=keep_valid)
        book = L.read_orderbook(orderbook, keep_valid=keep_valid) if orderbook is not None else None
    except L.LobsterError as e:
        raise _fail(str(e)) from None
    except OSError as e:
        raise _fail(f"{e.filename or messages}: {e.strerror or e}") from None
    for d in (msgs, book):
        if d is not None and d.error:
            typer.echo(f"warning: stopped early, kept {len(d):,} valid rows: {d.error}", err=True)
    if book is not None and keep_valid and len(book) != len(msgs):
        n = min(len(book), len(msgs))
        typer.echo(f"warning: replaying the first {n:,} rows ({len(msgs):,} messages, {len(book):,} orderbook rows)",
                   err=True)
        msgs, book = msgs.head(n), book.head(n)
    t_read = time.perf_counter()
    try:
        res = L.replay(msgs, levels, book)
    except L.LobsterError as e:
        raise _fail(str(e)) from None
    t_replay = time.perf_counter()
    try:
        L.write_orderbook(out, res.rows)
    except OSError as e:
        raise _fail(f"{out}: {e.strerror or e}") from None
    t_write = time.perf_counter()
    n = len(msgs)
    st = res.stats
    summary = {
        "messages": n, "levels": levels, "out": str(out), "orderbook": str(orderbook) if orderbook else None,
        "mismatched_rows": res.mismatched_rows,
        "first_mismatch_line": None if res.first_mismatch is None else res.first_mismatch + 1,
        "learned_levels": res.learned_levels, "learned_rows": st["learned_rows"],
        "learned_qty_added": st["learned_qty_added"], "learned_qty_removed": st["learned_qty_removed"],
        "seeds": st["seeds"], "unknown_id_reductions": st["unknown_id_reductions"],
        "qty_missing": st["qty_missing"], "uncrossed_levels": st["uncrossed_levels"],
        "engine_rows": st["engine_rows"], "engine_calls": st["engine_calls"],
        "seconds": {"read": t_read - t0, "replay": t_replay - t_read, "write": t_write - t_replay},
        "replay_messages_per_s": n / (t_replay - t_read) if t_replay > t_read else 0.0,
    }
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        typer.echo(f"{n:,} messages -> {n:,} rows x {levels} levels in {out} "
                   f"(read {t_read - t0:.3f} s, replay {t_replay - t_read:.3f} s = "
                   f"{summary['replay_messages_per_s'] / 1e6:.2f} M messages/s, write {t_write - t_replay:.3f} s)")
        typer.echo(f"engine: {st['engine_rows']:,} order rows in {st['engine_calls']} batches; "
                   f"{st['unknown_id_reductions']:,} reductions of orders not in the file, "
                   f"{st['qty_missing']:,} shares of them not in the replay's book")
        if book is not None:
            typer.echo(f"learned {res.learned_levels:,} edge levels on {st['learned_rows']:,} rows "
                       f"(+{st['learned_qty_added']:,} / -{st['learned_qty_removed']:,} shares, "
                       f"{st['seeds']:,} seed orders)")
    if book is not None and res.mismatched_rows:
        raise _fail(f"{res.mismatched_rows:,} of {n:,} rows differ from {orderbook} "
                    f"(first at line {res.first_mismatch + 1})")
    if book is not None and not as_json:
        typer.echo(f"conformance: all {n:,} rows equal {orderbook}")
