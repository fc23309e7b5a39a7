"""The ``hpte`` command: thin Typer commands over hpte.engine."""
from __future__ import annotations

import typer

app = typer.Typer(
    name="hpte",
    help="hpte: a vectorised batch trading engine (numba kernels on CPU, optional CUDA).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
md_app = typer.Typer(help="Market data: ITCH 5.0, LOBSTER, bars.", no_args_is_help=True)
app.add_typer(md_app, name="md")

# --- sub-command registrations (one line each) ---
from .md_bars import bars; md_app.command("bars")(bars)  # noqa: E402
from .md_itch import itch_app; md_app.add_typer(itch_app, name="itch")  # noqa: E402
from .md_lobster import lobster_app; md_app.add_typer(lobster_app, name="lobster")  # noqa: E402
from .md_itch_book import itch_book; itch_app.command("book")(itch_book)  # noqa: E402
from .gen_cmd import gen  # noqa: E402
app.command("gen")(gen)
from .match_cmd import book, demo, match  # noqa: E402
app.command("match")(match); app.command("book")(book); app.command("demo")(demo)
from .bench_cmd import bench; app.command("bench")(bench)  # noqa: E402
from .risk_cmd import risk_app; app.add_typer(risk_app, name="risk")  # noqa: E402


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
