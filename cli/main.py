"""The ``hpte`` command: thin Typer commands over hpte.engine.

Where each command lives: ``match``, ``book``, ``demo`` in cli/match.py; ``gen`` in cli/gen.py;
``bench`` in cli/bench.py; ``md ...`` in cli/md/; ``risk ...`` in cli/risk/; ``backtest`` in
cli/backtest/; ``sweep`` in cli/sweep.py; ``serve`` and ``journal ...`` in cli/server/.
"""
from __future__ import annotations

import typer

from hpte.cli.backtest import backtest_cmd
from hpte.cli.bench import bench
from hpte.cli.gen import gen
from hpte.cli.match import book, demo, match
from hpte.cli.md import md_app
from hpte.cli.risk.commands import risk_app
from hpte.cli.server.commands import journal_app, serve
from hpte.cli.sweep import sweep_cmd

app = typer.Typer(
    name="hpte",
    help="hpte: a vectorised batch trading engine (numba kernels on CPU, optional CUDA).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("match")(match)
app.command("book")(book)
app.command("demo")(demo)
app.command("gen")(gen)
app.command("bench")(bench)
app.command("backtest")(backtest_cmd)
app.command("sweep")(sweep_cmd)
app.add_typer(md_app, name="md")
app.add_typer(risk_app, name="risk")
app.command("serve")(serve)
app.add_typer(journal_app, name="journal")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
