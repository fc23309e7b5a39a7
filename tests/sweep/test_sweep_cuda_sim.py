"""The CUDA sweep driver under numba's CUDA simulator, against the CPU driver.

``NUMBA_ENABLE_CUDASIM=1`` must be set before numba is imported, so this module runs in a child
process started by tests/sweep/test_sweep_gpu.py::test_sweep_simulator_suite; in any process
without the simulator it skips as a whole. Directly:
``NUMBA_ENABLE_CUDASIM=1 pytest -m cuda tests/sweep/test_sweep_cuda_sim.py``.
Threads per block are patched to 3, so every launch spans several blocks.
"""
from __future__ import annotations

from pathlib import Path

import numba
import numpy as np
import pytest

SIM = bool(numba.config.ENABLE_CUDASIM)
pytestmark = pytest.mark.cuda
if not SIM:
    pytest.skip("CUDA simulator is off in this process: these run in the child process of "
                "tests/sweep/test_sweep_gpu.py::test_sweep_simulator_suite", allow_module_level=True)

from hpte.engine.sweep import run as R  # noqa: E402
from hpte.engine.sweep import sweep  # noqa: E402
from hpte.engine.sweep.data import random_walk  # noqa: E402

RANDOM = Path(__file__).resolve().parent / "strategies" / "random_bars.py"


@pytest.fixture(autouse=True)
def _setup(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HPTE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "hpte-cache"))
    monkeypatch.setattr(R, "THREADS_PER_BLOCK", 3)
    from hpte.engine.sweep import ticks_gpu
    monkeypatch.setattr(ticks_gpu, "THREADS_PER_BLOCK", 3)
    monkeypatch.setattr(ticks_gpu, "OUT_ROWS", 4)       # tiny output buffers: many flushes and folds per set
    monkeypatch.setattr(ticks_gpu, "EQ_ROWS", 2)


def _same(a, b):
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_ma_cross_gpu_equals_cpu():
    close = random_walk(150, 3)
    p = {"fast": "2:8:3", "slow": "5:30:6"}
    gpu = sweep("ma_cross", close, params=p, device="gpu")
    assert "simulator" in gpu.stats["device"]
    _same(gpu.table, sweep("ma_cross", close, params=p).table)


@pytest.mark.parametrize("fee", [0.0, 0.003])
def test_random_strategy_gpu_equals_cpu(fee):
    close = random_walk(120, 8)
    p = {"seed": "1:5", "rate": "0.2,0.6", "size": "-1.5,2"}
    gpu = sweep(RANDOM, close, params=p, device="gpu", fee=fee, chunk=7)
    assert gpu.stats["chunks"] == 3
    _same(gpu.table, sweep(RANDOM, close, params=p, fee=fee).table)


# the simulator runs the loop's splitmix64 latency draws in NumPy scalars, which warn on the
# (intended) uint64 wrap-around; compiled code wraps silently
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_tick_sweep_gpu_equals_cpu():
    """The tick sweep's CUDA kernel (no-impact; the loop and market_maker as device functions,
    one thread per set, random latencies) equals the CPU sweep row for row: 5 sets in chunks of
    4 over 2 launches of 2 blocks and 1 block, output buffers folded every few rows, 200 events
    (tiny: the simulator interprets it)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "backtest"))
    from bt_flows import random_flow

    ev = random_flow(11, 200)
    p = {"half_spread": "0,1,2,3,4", "size": "3"}
    kw = dict(latency="feed=3us,entry=1us:5us,response=2us", fees="maker=-1,taker=2", seed=3, sample="50us")
    gpu = sweep("market_maker", ev, params=p, device="gpu", chunk=4, **kw)
    assert "simulator" in gpu.stats["device"] and gpu.stats["chunks"] == 2
    cpu = sweep("market_maker", ev, params=p, **kw)
    assert cpu.table["trades"].max() > 0
    _same(gpu.table, cpu.table)
