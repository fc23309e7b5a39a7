"""Bar backtests and parameter sweeps (CPU threads, a GPU, a Dask cluster)."""
from hpte.engine.sweep.run import BarBacktest, SweepError, SweepResult, backtest_bars, sweep

__all__ = ["BarBacktest", "SweepError", "SweepResult", "backtest_bars", "sweep"]
