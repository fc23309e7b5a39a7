"""``hpte md itch``: NASDAQ TotalView-ITCH 5.0 files to Parquet, and message statistics."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from hpte.engine.md import itch as I

itch_app = typer.Typer(help="NASDAQ TotalView-ITCH 5.0 files (plain or .gz).", no_args_is_help=True)

FileArg = Annotated[Path, typer.Argument(help="ITCH 5.0 file: [u16 BE length][message] frames; .gz is read streamed.")]
KeepValid = Annotated[bool, typer.Option("--keep-valid", help="On bad input keep the messages before the bad frame "
                                         "and report where parsing stopped, instead of failing.")]


def _fail(msg: str) -> typer.Exit:
    typer.echo(f"error: {msg}", err=True)
    return typer.Exit(1)


def _read(file: Path, keep_valid: bool) -> tuple[I.ItchData, float]:
    """Decode the file (shared by the commands); ItchError and OS errors become one line + exit 1."""
    I.warm_up()  # load the compiled kernels before the clock starts
    t0 = time.perf_counter()
    try:
        data = I.read_itch(file, keep_valid=keep_valid)
    except I.ItchError as e:
        raise _fail(str(e)) from None
    except OSError as e:
        raise _fail(f"{file}: {e.strerror or e}") from None
    seconds = time.perf_counter() - t0
    if data.error:
        typer.echo(f"warning: stopped early, kept {data.messages:,} valid messages: {data.error}", err=True)
    return data, seconds


@itch_app.command("parse")
def parse(
    file: FileArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for one <message_name>.parquet per type present.")],
    keep_valid: KeepValid = False,
) -> None:
    """Decode FILE into one Parquet file per message type present (alpha fields as strings
    without padding, timestamps int64 ns since midnight, prices integers in the spec's
    implied decimals, `seq` = position in the stream)."""
    data, seconds = _read(file, keep_valid)
    try:
        written = I.write_itch_parquet(data, out)
    except OSError as e:
        raise _fail(f"{out}: {e.strerror or e}") from None
    for letter, path in written.items():
        typer.echo(f"{letter} {I.BY_LETTER[letter].name:<52} {data.counts[letter]:>12,}  {path}")
    typer.echo(f"{data.messages:,} messages, {data.bytes:,} bytes decoded in {seconds:.3f} s; "
               f"{len(written)} Parquet file(s) in {out}")


@itch_app.command("stats")
def stats(
    file: FileArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object (the last line) instead of a table.")] = False,
    keep_valid: KeepValid = False,
) -> None:
    """Count FILE's messages per type and report the decoding throughput."""
    data, seconds = _read(file, keep_valid)
    counts = data.counts
    rate = data.bytes / seconds if seconds > 0 else 0.0
    mps = data.messages / seconds if seconds > 0 else 0.0
    if as_json:
        typer.echo(json.dumps({
            "file": str(file), "messages": data.messages, "bytes": data.bytes, "seconds": seconds,
            "gb_per_s": rate / 1e9, "messages_per_s": mps, "counts": counts,
            "names": {k: I.BY_LETTER[k].name for k in counts},
            "stopped_at": data.stopped_at, "error": data.error,
        }))
        return
    for letter, n in counts.items():
        typer.echo(f"{letter} {I.BY_LETTER[letter].name:<52} {n:>12,}")
    typer.echo(f"{data.messages:,} messages, {data.bytes:,} bytes in {seconds:.3f} s: "
               f"{rate / 1e9:.3f} GB/s, {mps / 1e6:.2f} M messages/s")
