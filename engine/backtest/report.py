"""report.png: the price with the strategy's fills, its position, and its equity."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def draw_report(res, path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    Q, F = res.equity, res.fills
    fig, ax = plt.subplots(3, 1, figsize=(11, 8), sharex=True)
    t0 = Q["ts_ns"][0] if len(Q["ts_ns"]) else 0
    hours = lambda t: (np.asarray(t) - t0) / 3.6e12  # noqa: E731
    ok = (Q["bid"] > 0) & (Q["ask"] > 0)
    ax[0].plot(hours(Q["ts_ns"][ok]), (Q["bid"][ok] + Q["ask"][ok]) / 2, lw=0.8, color="0.4", label="mid")
    buy = F["side"] > 0
    ax[0].scatter(hours(F["ts_ns"][buy]), F["price"][buy], s=6, color="tab:green", label="buy fills")
    ax[0].scatter(hours(F["ts_ns"][~buy]), F["price"][~buy], s=6, color="tab:red", label="sell fills")
    ax[0].set_ylabel("price (units)")
    ax[0].legend(loc="best", fontsize=8)
    ax[1].step(hours(F["ts_ns"]), F["position"], where="post", lw=0.8)
    ax[1].set_ylabel("position (lots)")
    mid = np.where(ok, (Q["bid"] + Q["ask"]) / 2.0, 0.0)
    ax[2].plot(hours(Q["ts_ns"]), Q["cash"] + Q["position"] * mid, lw=0.8, color="tab:blue")
    ax[2].set_ylabel("equity (price units)")
    ax[2].set_xlabel("hours since the first event")
    m = res.metrics
    fig.suptitle(f"{res.strategy}: pnl {m['pnl']:,.0f}, sharpe {m['sharpe']:.2f}, {m['trades']:,} fills, "
                 f"max drawdown {m['max_drawdown']:,.0f}", fontsize=10)
    fig.tight_layout()
    p = Path(path)
    fig.savefig(p, dpi=100)
    plt.close(fig)
    return p
