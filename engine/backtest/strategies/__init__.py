"""Bundled strategies (each a plain strategy file; see hpte.kernels.backtest.api)."""
