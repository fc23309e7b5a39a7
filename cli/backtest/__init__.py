"""``hpte backtest``: run a strategy file over market data (thin: hpte.engine.backtest does the work)."""
from hpte.cli.backtest.command import backtest_cmd

__all__ = ["backtest_cmd"]
