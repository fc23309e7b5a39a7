"""The Typer command-line application ``hpte``."""
