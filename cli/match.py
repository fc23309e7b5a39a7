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


def _matching(cmd: str, algo: str, path: Path | None):
    """--algo / --matching as a MatchingConfig (one-line error naming the option or key, exit 1)."""
    from hpte.engine.matching import MatchingConfig, MatchingConfigError, make_algo

    try:
        if path is not None:
            return MatchingConfig.load(path)
        return MatchingConfig(make_algo(algo))
    except MatchingConfigError as e:
        _fail(cmd, str(e) if path is not None else f"--algo: {e.problem}")


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
    algo: Annotated[str, typer.Option("--algo", help="Matching algorithm of every book: fifo, pro-rata, allocation, split, fifo-lmm, threshold-pro-rata (README 'Matching algorithms').")] = "fifo",
    matching: Annotated[Path | None, typer.Option("--matching", help="Matching algorithm per symbol (TOML: [defaults], [symbols.ID]); overrides --algo.")] = None,
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

    cfg = _matching("match", algo, matching)
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
                             positions=positions, keep=itch is not None, notice=compiling_notice, matching=cfg)
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
    algorithms: Annotated[bool, typer.Option("--algorithms", help="Instead: one book per matching algorithm; show how each split the same aggressors' quantity (README 'Matching algorithms').")] = False,
) -> None:
    """The main job on an embedded default: generate a multi-book flow, match it, write Parquet
    outputs and a depth plot, print a summary and the throughput."""
    if algorithms:
        if events < 1:
            _fail("demo", "--events must be at least 1")
        return _demo_algorithms(min(events, 200_000), seed, device)
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


def _demo_algorithms(n_events: int, seed: int, device: str) -> None:
    """``hpte demo --algorithms``: the README's example level under every preset (who got how
    many lots, and by which rule), then one generated flow matched under every preset."""
    import numpy as np

    from hpte.engine.engine import Engine
    from hpte.engine.gen import generate_flow
    from hpte.engine.matching import PRESETS

    device = _device("demo", device)
    lmm = {"fifo-lmm": {"lmm_accounts": [3]}}
    rows = [(1, S.SELL, 100, 10, 1), (2, S.SELL, 100, 30, 2), (3, S.SELL, 100, 60, 3), (9, S.BUY, 100, 25, 4)]
    cols = {name: np.zeros(len(rows), dt) for name, dt, _r, _d in S.ORDER_COLUMNS}
    for k, (oid, side, px, qty, acct) in enumerate(rows):
        cols["ts_ns"][k], cols["order_id"][k], cols["side"][k] = k, oid, side
        cols["price_ticks"][k], cols["qty"][k], cols["account"][k] = px, qty, acct
    cols["tif"][-1] = S.TIF_IOC
    typer.echo("asks at 100 in time order: order 1 (account 1, 10 lots; first on the side: TOP), order 2 "
               "(account 2, 30), order 3 (account 3, 60; the LMM of fifo-lmm); a buy IOC of 25 lots:")
    for name in PRESETS:
        eng = Engine(matching={"defaults": {"algorithm": name, **lmm.get(name, {})}}, device=device)
        f = eng.submit(cols).fills
        got = dict(zip(f["maker_order_id"].tolist(), f["qty"].tolist()))
        a = eng.matching.default
        how = {"fifo": "time priority", "pro-rata": f"floor(25 x q / 100), min {a.min_alloc}; residual in time priority",
               "allocation": f"TOP first, then pro rata (min {a.min_alloc}) of the rest",
               "split": f"{a.fifo_pct}% in time priority, then pro rata (min {a.min_alloc})",
               "fifo-lmm": f"{a.lmm_pct}% to the LMM, the rest in time priority",
               "threshold-pro-rata": f"TOP first, then pro rata with threshold {a.min_alloc}"}[name]
        split = "  ".join(f"order {m}: {got.get(m, 0):>2}" for m in (1, 2, 3))
        typer.echo(f"  {name:<19} {split}   ({how})")
    typer.echo(f"\none generated book ({n_events:,} events, seed {seed}) under every algorithm:")
    flow = generate_flow(n_events, n_books=1, seed=seed)
    typer.echo(f"  {'algorithm':<19} {'fills':>8} {'lots':>10} {'makers per aggressor level':>27} {'resting':>8}")
    for name in PRESETS:
        eng = Engine(matching={"defaults": {"algorithm": name, **({"lmm_accounts": [1, 2, 3]} if name == "fifo-lmm" else {})}},
                     device=device)
        f = eng.submit(flow).fills
        keys = np.unique(np.stack([f["seq"], f["price_ticks"]]), axis=1).shape[1] if len(f["seq"]) else 0
        typer.echo(f"  {name:<19} {len(f['seq']):>8,} {int(f['qty'].sum()):>10,} "
                   f"{len(f['seq']) / max(keys, 1):>27.2f} {int(eng.book_l3()['qty'].size):>8,}")
