"""Event-driven strategies and tick-level backtests (issue 12): ``backtest`` runs a strategy
file over an L3 market-event stream (hpte.kernels.backtest.loop has the simulation rules)."""
from hpte.engine.backtest.run import BacktestResult, Latency, backtest, parse_fees, parse_latency
from hpte.engine.backtest.strategy import Strategy, StrategyError, load_strategy

__all__ = ["BacktestResult", "Latency", "Strategy", "StrategyError", "backtest", "load_strategy",
           "parse_fees", "parse_latency"]
