"""Bundled bar strategies (each a plain bar strategy file; see hpte.kernels.backtest.bars)."""
