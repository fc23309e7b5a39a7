"""``hpte md ...``: market data. ``bars`` (bars.py), ``itch parse|stats`` (itch.py), ``itch book``
(itch_book.py), ``lobster parse|replay`` (lobster.py)."""
from __future__ import annotations

import typer

from hpte.cli.md.bars import bars
from hpte.cli.md.itch import itch_app
from hpte.cli.md.itch_book import itch_book
from hpte.cli.md.lobster import lobster_app

md_app = typer.Typer(help="Market data: ITCH 5.0, LOBSTER, bars.", no_args_is_help=True)
md_app.command("bars")(bars)
itch_app.command("book")(itch_book)
md_app.add_typer(itch_app, name="itch")
md_app.add_typer(lobster_app, name="lobster")
