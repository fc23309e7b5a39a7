"""Sweep plots: a heatmap of the ranking metric for two-parameter grids, a ranked bar chart
otherwise (the best 30 parameter sets)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

MAX_HEATMAP_CELLS = 4_000_000


def draw(res, grid, out: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = res.metric
    sw = res.swept
    if len(sw) == 2 and grid.size <= MAX_HEATMAP_CELLS:
        a, b = sw
        va, vb = grid.axes[a], grid.axes[b]
        if res.table is not None:
            z = np.asarray(res.table[metric], np.float64)
        else:
            import pyarrow.parquet as pq
            z = pq.read_table(res.path, columns=[metric]).column(0).to_numpy().astype(np.float64)
        # grid order: the last swept parameter varies fastest (see Grid.chunk)
        z = z.reshape(len(va), len(vb))
        fig, ax = plt.subplots(figsize=(max(6, min(14, len(vb) * 0.2 + 3)), max(4.5, min(12, len(va) * 0.25 + 2))))
        im = ax.imshow(z, origin="lower", aspect="auto", cmap="viridis",
                       extent=(vb[0] - 0.5 * _step(vb), vb[-1] + 0.5 * _step(vb),
                               va[0] - 0.5 * _step(va), va[-1] + 0.5 * _step(va)))
        fig.colorbar(im, ax=ax, label=metric)
        ax.set_xlabel(b)
        ax.set_ylabel(a)
        if res.top and len(res.top[metric]):
            ax.plot(res.top[b][0], res.top[a][0], marker="*", color="red", markersize=14, linestyle="none",
                    label=f"best: {a}={res.top[a][0]:g}, {b}={res.top[b][0]:g}")
            ax.legend(loc="upper right", fontsize=8)
        ax.set_title(f"{res.strategy}: {metric} over {grid.size:,} parameter sets")
        p = out / "heatmap.png"
    else:
        k = min(30, len(res.top[metric]) if res.top else 0)
        labels = [", ".join(f"{n}={res.top[n][i]:g}" for n in sw) for i in range(k)]
        vals = np.asarray(res.top[metric][:k], np.float64) if k else np.zeros(0)
        fig, ax = plt.subplots(figsize=(9, max(3, 0.3 * k + 1.5)))
        ax.barh(np.arange(k)[::-1], vals, color="tab:blue")
        ax.set_yticks(np.arange(k)[::-1], labels, fontsize=7)
        ax.set_xlabel(metric)
        ax.set_title(f"{res.strategy}: best {k} of {grid.size:,} parameter sets by {metric}")
        p = out / "ranking.png"
    fig.tight_layout()
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


def _step(v) -> float:
    return float(v[1] - v[0]) if len(v) > 1 else 1.0


def draw_bar_report(res, path) -> Path:
    """report.png of one bar backtest: closes with the trades, position, equity."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    F = res.fills
    x = np.arange(len(res.close))
    fig, ax = plt.subplots(3, 1, figsize=(11, 8), sharex=True)
    ax[0].plot(x, res.close, lw=0.8, color="0.4", label="close")
    buy = F["side"] > 0
    ax[0].scatter(F["bar"][buy], F["price"][buy], s=8, color="tab:green", label="buys")
    ax[0].scatter(F["bar"][~buy], F["price"][~buy], s=8, color="tab:red", label="sells")
    ax[0].set_ylabel("close")
    ax[0].legend(loc="best", fontsize=8)
    ax[1].step(x, res.position, where="post", lw=0.8)
    ax[1].set_ylabel("position (units)")
    ax[2].plot(x, res.equity, lw=0.8, color="tab:blue")
    ax[2].set_ylabel("equity")
    ax[2].set_xlabel("bar")
    m = res.metrics
    fig.suptitle(f"{res.strategy}: total return {m['total_return']:.4%}, sharpe {m['sharpe']:.2f}, "
                 f"{int(m['trades']):,} trades, max drawdown {m['max_drawdown']:.2%}", fontsize=10)
    fig.tight_layout()
    p = Path(path)
    fig.savefig(p, dpi=100)
    plt.close(fig)
    return p
