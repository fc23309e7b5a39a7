"""``hpte serve`` (the gateway, needs ``pip install 'hpte[server]'``) and ``hpte journal replay``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

journal_app = typer.Typer(help="Inspect and replay a gateway journal.", no_args_is_help=True)


def _fail(cmd: str, msg: str) -> None:
    typer.echo(f"hpte {cmd}: error: {msg}", err=True)
    raise typer.Exit(1)


def serve(
    config: Annotated[Path | None, typer.Option("--config", help="SERVER.toml: API keys, symbols, batching, journal (README 'The gateway').")] = None,
    risk: Annotated[Path | None, typer.Option("--risk", help="Risk limits and circuit breakers (TOML), applied per account.")] = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8000,
    journal_dir: Annotated[Path | None, typer.Option("--journal", help="Journal directory (overrides the config's journal_dir).")] = None,
) -> None:
    """Serve order entry (REST, WebSocket) and market data; journal every batch; recover at start."""
    try:
        import uvicorn

        from hpte.engine.server.app import create_app
        from hpte.engine.server.config import ConfigError, ServerConfig
        from hpte.engine.server.journal import JournalError
    except ImportError as e:
        _fail("serve", f"the gateway needs its extra: pip install 'hpte[server]' ({e})")
    try:
        cfg = ServerConfig.load(config) if config is not None else ServerConfig()
    except ConfigError as e:
        _fail("serve", str(e))
    if journal_dir is not None:
        cfg.journal_dir = journal_dir.resolve()
    if not cfg.keys:
        typer.echo("hpte serve: warning: no [[keys]] configured; every request will be refused", err=True)
    limits = None
    if risk is not None:
        from hpte.engine.risk.limits import RiskLimits
        try:
            limits = RiskLimits.load(risk)
        except (ValueError, OSError) as e:
            _fail("serve", str(e))
    # warm the matching kernels (and the risk ones when --risk is on) before accepting
    # connections: numba caches them on disk, but a cold cache compiles for tens of seconds
    from hpte.engine.engine import Engine
    Engine(risk=limits).submit_order(0, 1, 1, 100, 1)

    def log(line: str) -> None:
        typer.echo(line, err=True)

    # uvicorn's "websockets" protocol awaits the socket's drain on each send, which is what lets a
    # client that stops reading back up into its outbox (and be disconnected past its backlog);
    # the sans-I/O one buffers without bound. uvicorn marks it deprecated: silence that warning.
    import warnings
    warnings.filterwarnings("ignore", message=".*websockets. implementation is deprecated")
    app = create_app(cfg, risk.resolve() if risk else None, log=log)
    try:
        uvicorn.run(app, host=host, port=port, loop="uvloop", http="httptools", ws="websockets",
                    ws_max_size=cfg.max_frame_bytes + 1024, ws_per_message_deflate=False, log_level="warning", lifespan="on")
    except JournalError as e:
        _fail("serve", str(e))


@journal_app.command("replay")
def replay(
    directory: Annotated[Path, typer.Argument(help="The journal directory (journal_dir of SERVER.toml).")],
    fills: Annotated[Path | None, typer.Option("--fills", help="Where to write the fills (Parquet or Arrow IPC).")] = None,
    events: Annotated[Path | None, typer.Option("--events", help="Where to write the order events.")] = None,
    book: Annotated[Path | None, typer.Option("--book", help="Where to write the final L3 book.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object.")] = False,
    archive: Annotated[Path | None, typer.Option("--archive", help="Where retired segments were archived (journal_archive_dir), to replay from record 0.")] = None,
) -> None:
    """Replay a journal for audit: fills, events, book. From its first record when it (with
    --archive) still starts at record 0, else from the oldest snapshot it still follows."""
    from hpte.engine import schema as S
    from hpte.engine.io import concat_columns, events_table, write_columns, write_table
    from hpte.engine.server.journal import JournalError, read_records
    from hpte.engine.server.replay import replay_journal

    if not (directory / "meta.json").is_file():
        _fail("journal replay", f"{directory}: not a journal directory (no meta.json)")
    try:
        gw, fl, ev, cut, start = replay_journal(directory, archive)
    except JournalError as e:
        _fail("journal replay", str(e))
    if cut is not None:
        typer.echo(f"{cut} (not modified; the server cuts it at its next start)", err=True)
    if fills is not None:
        write_columns(fills, concat_columns(fl, S.FILL_COLUMNS), S.FILL_SCHEMA)
    if events is not None:
        write_table(events, events_table(concat_columns(ev, S.EVENT_COLUMNS)))
    if book is not None:
        write_columns(book, gw.engine.book_l3(), S.L3_SCHEMA)
    if start:
        typer.echo(f"records before {start} were retired: replayed from the snapshot at record {start}", err=True)
    s = {"from_record": start, "records": gw.recno, "input_rows": gw.engine.seq, "fills": sum(len(f["seq"]) for f in fl),
         "events": sum(len(e["seq"]) for e in ev), "resting": int(gw.engine.store.resting()),
         "torn_tail_bytes": cut.bytes_cut if cut else 0}
    if as_json:
        typer.echo(json.dumps(s))
    else:
        for k, v in s.items():
            typer.echo(f"{k:<16} {v:,}")
