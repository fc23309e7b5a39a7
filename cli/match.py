"""``hpte match``, ``hpte book`` and ``hpte demo``: thin commands over engine/pipeline.py."""
from __future__ import annotations

import json
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated

import typer

from hpte.engine import schema as S


def _fail(cmd: str, msg: str) -> None:
    typer.echo(f"hpte {cmd}: error: {msg}", err=True)
    raise typer.Exit(1)


def _device(cmd: str, device: str) -> str:
    """Check --device early (one-line error, exit 1, before any work); returns it unchanged so
    that the engine resolves it itself and keeps the reason for the summary."""
    from hpte.engine.device import DEVICES, DeviceError, resolve_device

    if device not in DEVICES:
        _fail(cmd, f"--device must be one of {', '.join(DEVICES)}, got {device!r}")
    try:
        resolve_device(device)
    except DeviceError as e:
        _fail(cmd, str(e))
    return device


DEVICE_HELP = "Where to match: cpu, gpu (a CUDA GPU; error when there is none) or auto (the GPU when there is one)."


def _count(n) -> str:
    return "not written" if n is None else f"{n:,}"


def _print_summary(s: dict) -> None:
    rows = [
        ("input events", f"{s['events']:,}"), ("books", f"{s['books']:,}"),
        ("fills", _count(s['fills'])), ("order events", _count(s['order_events'])),
        ("L2 deltas", _count(s['deltas'])), ("resting at end", f"{s['resting']:,}"),
        ("batches", f"{s['batches']:,}"),
        ("matching time", f"{s['seconds']:.3f} s"),
        ("throughput", f"{(s['events_per_s'] or 0) / 1e6:.2f} M events/s"),
        ("compile / cache load", f"{s['compile_seconds']:.2f} s"),
    ]
    if "device" in s:
        rows.insert(0, ("device", f"{s['device']} ({s['device_reason']})"))
    for name, n in sorted(s.get("event_counts", {}).items()):
        rows.append((f"  {name}", f"{n:,}"))
    for name, n in sorted(s.get("rejects_by_reason", {}).items()):
        rows.append((f"  rejected {name}", f"{n:,}"))
    for name, n in sorted(s.get("breaker_events", {}).items()):
        rows.append((f"  breaker {name}", f"{n:,}"))
    w = max(len(r[0]) for r in rows)
    for k, v in rows:
        typer.echo(f"{k:<{w}}  {v}")


def match(
    orders: Annotated[Path, typer.Argument(help="Order file (Parquet, or Arrow IPC for .arrow/.ipc/.feather).")],
    fills: Annotated[Path, typer.Option("--fills", help="Where to write the fills (Parquet or Arrow IPC).")],
    events: Annotated[Path | None, typer.Option("--events", help="Where to write the order events.")] = None,
    book: Annotated[Path | None, typer.Option("--book", help="Where to write the final book's L2 levels.")] = None,
    itch: Annotated[Path | None, typer.Option("--itch", help="Also write the run as a NASDAQ TotalView-ITCH 5.0 stream (.gz: gzip).")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Rows per micro-batch (default: whole file).")] = None,
    stp: Annotated[str, typer.Option("--stp", help="Self-trade prevention: none, cancel-newest, cancel-oldest, cancel-both, decrement.")] = "none",
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object on the last line.")] = False,
    device: Annotated[str, typer.Option("--device", help=DEVICE_HELP)] = "cpu",
    risk: Annotated[Path | None, typer.Option("--risk", help="Risk limits and circuit breakers (TOML, README 'Risk limits'): pre-trade checks and breakers inside matching.")] = None,
    positions: Annotated[Path | None, typer.Option("--positions", help="With --risk: where to write the final positions per account and symbol.")] = None,
) -> None:
    """Match an order file and write fills (and events, and the final book).

    The kernels write only what the options name (fills; order events with --events); each
    batch's outputs are streamed to the files, so memory stays bounded by a batch."""
    from hpte.engine.device import DeviceError
    from hpte.engine.io import InputError
    from hpte.engine.pipeline import match_file

    device = _device("match", device)
    limits = None
    if risk is not None:
        from hpte.engine.risk.limits import RiskConfigError, RiskLimits
        try:
            limits = RiskLimits.load(risk)
        except RiskConfigError as e:
            _fail("match", str(e))
        except OSError as e:
            _fail("match", f"--risk: {e}")
    elif positions is not None:
        _fail("match", "--positions needs --risk")

    if stp not in S.STP_NAMES:
        _fail("match", f"--stp must be one of {', '.join(S.STP_NAMES)}, got {stp!r}")
    if batch_size is not None and batch_size < 1:
        _fail("match", f"--batch-size must be at least 1, got {batch_size}")
    try:
        with ExitStack() as stack:
            bar = None
            done = [0]

            def progress(d: int, n: int) -> None:
                nonlocal bar
                if bar is None and sys.stderr.isatty() and n > 1_000_000:
                    bar = stack.enter_context(typer.progressbar(length=n, label="matching", file=sys.stderr))
                if bar is not None:
                    bar.update(d - done[0])
                done[0] = d

            from .notice import compiling_notice
            run = match_file(orders, fills, events, book, batch_size, stp, progress, device=device, risk=limits,
                             positions=positions, keep=itch is not None, notice=compiling_notice)
            if itch is not None:
                from hpte.engine.md.itch_out import write_match_itch
                run.extra["itch_messages"] = write_match_itch(itch, run).messages
    except (InputError, ValueError, OSError, DeviceError) as e:
        _fail("match", str(e))
    s = run.summary()
    if as_json:
        typer.echo(json.dumps(s))
    else:
        _print_summary(s)


def book(
    path: Annotated[Path, typer.Argument(help="A book file written by `hpte match --book`.")],
    depth: Annotated[int, typer.Option("--depth", help="Levels per side to show.")] = 10,
    symbol: Annotated[int | None, typer.Option("--symbol", help="Only this symbol.")] = None,
) -> None:
    """Print the top levels of a book file as a table (bids left, asks right)."""
    import numpy as np

    from hpte.engine.io import InputError, column_to_numpy, read_table

    if depth < 1:
        _fail("book", f"--depth must be at least 1, got {depth}")
    try:
        t = read_table(path)
        missing = [n for n, _ in S.LEVEL_COLUMNS if n not in t.schema.names]
        if missing:
            raise InputError(f"{path}: missing column {missing[0]!r} (not a book file?)")
        c = {n: column_to_numpy(t.column(n), dt, n) for n, dt in S.LEVEL_COLUMNS}
    except InputError as e:
        _fail("book", str(e))
    syms = np.unique(c["symbol"])
    if symbol is not None:
        syms = syms[syms == symbol]
        if syms.size == 0:
            _fail("book", f"symbol {symbol} is not in {path}")
    for s in syms:
        m = c["symbol"] == s
        bid = m & (c["side"] == S.BUY) & (c["level"] < depth)
        ask = m & (c["side"] == S.SELL) & (c["level"] < depth)
        typer.echo(f"symbol {int(s)}")
        typer.echo(f"{'orders':>7} {'bid qty':>10} {'bid':>12} | {'ask':<12} {'ask qty':<10} {'orders':<7}")
        bi, ai = np.flatnonzero(bid), np.flatnonzero(ask)
        for k in range(max(bi.size, ai.size)):
            left = (f"{int(c['orders'][bi[k]]):>7} {int(c['qty'][bi[k]]):>10} {int(c['price_ticks'][bi[k]]):>12}"
                    if k < bi.size else " " * 30)
            right = (f"{int(c['price_ticks'][ai[k]]):<12} {int(c['qty'][ai[k]]):<10} {int(c['orders'][ai[k]]):<7}"
                     if k < ai.size else "")
            typer.echo(f"{left} | {right}".rstrip())


def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for the demo's files.")] = Path("hpte-demo"),
    events: Annotated[int, typer.Option("--events", "-n", help="Events to generate.")] = 1_000_000,
    books: Annotated[int, typer.Option("--books", "-b", help="Books (symbols).")] = 4,
    seed: Annotated[int, typer.Option("--seed", "-s", help="Random seed.")] = 0,
    device: Annotated[str, typer.Option("--device", help=DEVICE_HELP)] = "cpu",
) -> None:
    """The main job on an embedded default: generate a multi-book flow, match it, write Parquet
    outputs and a depth plot, print a summary and the throughput."""
    from hpte.engine import io
    from hpte.engine.device import DeviceError
    from hpte.engine.gen import generate_flow
    from hpte.engine.pipeline import match_columns, write_outputs

    if events < 1 or books < 1:
        _fail("demo", "--events and --books must be at least 1")
    device = _device("demo", device)
    try:
        from hpte.engine.pipeline import warm_up

        from .notice import compiling_notice
        with compiling_notice():
            generate_flow(10, n_books=1, seed=seed)
            warm_up(device)
        typer.echo(f"generating {events:,} events over {books} books (seed {seed}) ...")
        cols = generate_flow(events, n_books=books, seed=seed)
        io.write_columns(out / "orders.parquet", cols, S.ORDER_SCHEMA)
        typer.echo("matching ...")
        run = match_columns(cols, batch_size=65_536, device=device)  # micro-batches: small reused buffers
        write_outputs(run, out / "fills.parquet", out / "events.parquet", out / "book.parquet")
        png = _depth_plot(run.engine.book_levels(depth=20), out / "book.png")
    except (ValueError, OSError, DeviceError) as e:
        _fail("demo", str(e))
    _print_summary(run.summary())
    typer.echo(f"wrote {out}/orders.parquet, fills.parquet, events.parquet, book.parquet" + (f", {png.name}" if png else ""))
    typer.echo(f"next: hpte book {out}/book.parquet --depth 5")


def _depth_plot(levels: dict, path: Path) -> Path | None:
    """Cumulative depth of every book's final top 20 levels, one panel per book (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    syms = np.unique(levels["symbol"])
    if syms.size == 0:
        return None
    k = min(int(syms.size), 4)
    fig, axes = plt.subplots(1, k, figsize=(4 * k, 3.2), squeeze=False)
    for ax, s in zip(axes[0], syms[:k]):
        for side, color, name in ((S.BUY, "tab:green", "bids"), (S.SELL, "tab:red", "asks")):
            m = (levels["symbol"] == s) & (levels["side"] == side)
            px, q = levels["price_ticks"][m], np.cumsum(levels["qty"][m])
            ax.step(px, q, where="post", color=color, label=name)
            ax.fill_between(px, q, step="post", color=color, alpha=0.25)
        ax.set_title(f"symbol {int(s)}: final depth")
        ax.set_xlabel("price (ticks)")
        ax.set_ylabel("cumulative qty (lots)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
