"""Backtest kernels: the strategy interface (api) and the event-driven simulation loop (loop)."""
