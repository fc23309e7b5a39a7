"""The GPU sweep driver without a GPU (the simulator suite in a child process, the PTX compile
check) and, on a machine with one, the full-size CPU-versus-GPU comparison (``gpu`` marker)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numba
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SIM = bool(numba.config.ENABLE_CUDASIM)


def _real_gpu() -> bool:
    if SIM:
        return False
    try:
        from hpte.engine.device import resolve_device
        return not resolve_device("gpu").simulator
    except Exception:
        return False


@pytest.mark.skipif(SIM, reason="already running under the CUDA simulator")
def test_sweep_simulator_suite(tmp_path_factory):
    """tests/sweep/test_sweep_cuda_sim.py under NUMBA_ENABLE_CUDASIM=1 in a child pytest; all pass.
    The child shares the session's driver cache (the CPU drivers it compares against are
    usually compiled there already by the other sweep tests)."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1",
               HPTE_CACHE_DIR=str(tmp_path_factory.getbasetemp() / "hpte-cache"))
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider",
           str(REPO / "tests" / "sweep" / "test_sweep_cuda_sim.py")]
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    out = r.stdout + r.stderr
    tail = "\n".join(out.strip().splitlines()[-40:])
    assert r.returncode == 0, f"sweep simulator suite failed (exit {r.returncode}):\n{tail}"
    summary = [ln for ln in out.splitlines() if re.search(r"\d+ passed", ln)]
    assert summary and int(re.search(r"(\d+) passed", summary[-1]).group(1)) >= 4, tail
    assert not re.search(r"\d+ (failed|errors?|skipped)", summary[-1]), summary[-1]


PTX_SCRIPT = textwrap.dedent("""
    import json, os, sys, time, types as _t
    try:
        from cuda.pathfinder import load_nvidia_dynamic_lib
        for lib in ("nvvm", "nvrtc"):
            load_nvidia_dynamic_lib(lib)
    except Exception as e:
        print(json.dumps({"skip": f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"}))
        sys.exit(0)
    import numba.cuda.dispatcher as _d
    _d.get_current_device = lambda: _t.SimpleNamespace(compute_capability=(9, 0))
    from numba import cuda, types as T
    from hpte.engine.sweep.strategy import driver, load_bar_strategy
    out = {}
    for name in sys.argv[1:]:
        if name.startswith("tick:"):      # the tick sweep's kernel (loop + strategy as device functions)
            from hpte.engine.backtest.strategy import load_strategy
            from hpte.engine.sweep import ticks_gpu
            k = ticks_gpu.kernel_for(load_strategy(name[5:]))
            i1, i2, i3 = T.int64[::1], T.int64[:, ::1], T.int64[:, :, ::1]
            f2 = T.float64[:, ::1]
            sig = (i1,) * 7 + (f2, i2, i2, i2, i3, i3, i3, i3, f2, i3, i3, i3, i3, i3, i3, i2, f2, i2, i1)
            t0 = time.perf_counter()
            ptx, _ = cuda.compile_ptx(k.py_func, sig, cc=(9, 0))
            out[name] = {"seconds": time.perf_counter() - t0, "bytes": len(ptx), "sm_90": ".target sm_90" in ptx,
                         "entry": ".entry" in ptx}
            continue
        mod = driver(load_bar_strategy(name))
        k = mod.make_sweep_cuda()
        a2 = T.float64[:, ::1]
        sig = (a2, a2, T.float64, T.float64, T.float64, a2, a2)      # the last: the float64[3, 0] "no curve"
        t0 = time.perf_counter()
        ptx, _ = cuda.compile_ptx(k.py_func, sig, cc=(9, 0))
        out[name] = {"seconds": time.perf_counter() - t0, "bytes": len(ptx), "sm_90": ".target sm_90" in ptx,
                     "entry": ".entry" in ptx, "local": ".local" in ptx}
    print(json.dumps(out))
""")


@pytest.mark.skipif(SIM, reason="needs the real CUDA target (simulator off)")
def test_sweep_cuda_compiles_to_ptx(tmp_path):
    """The CUDA sweep kernels compile to PTX for sm_90 with NVVM, without a GPU: the bar kernel
    with the bundled ma_cross and the random test strategy, the tick kernel with the bundled
    market_maker (about 30 s of the test). Skips unless NVVM and NVRTC are installed
    (``pip install -e '.[ptx]'``)."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["HPTE_CACHE_DIR"] = str(tmp_path / "cache")
    strat = str(REPO / "tests" / "sweep" / "strategies" / "random_bars.py")
    r = subprocess.run([sys.executable, "-c", PTX_SCRIPT, "ma_cross", strat, "tick:market_maker"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=600)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    assert r.returncode == 0 and lines, f"exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    res = json.loads(lines[-1])
    if "skip" in res:
        pytest.skip(f"NVVM/NVRTC not installed (pip install -e '.[ptx]'): {res['skip']}")
    assert set(res) == {"ma_cross", strat, "tick:market_maker"}, res
    for name, v in res.items():
        assert v["entry"] and v["sm_90"] and v["bytes"] > 5_000, (name, v)


@pytest.mark.gpu
@pytest.mark.skipif(not _real_gpu(), reason="needs a real CUDA GPU (numba-cuda and CuPy with a device)")
def test_full_size_cpu_versus_gpu():
    """The issue's workload: 1,000,000 bars x 1,000 moving-average pairs, GPU rows equal to CPU
    rows (decisions exactly; metrics to 1e-9, since the GPU may fuse multiply-adds)."""
    from hpte.engine.sweep import sweep
    from hpte.engine.sweep.data import random_walk
    close = random_walk(1_000_000, 42)
    p = {"fast": "5:100:5", "slow": "110:600:10"}
    cpu = sweep("ma_cross", close, params=p).table
    gpu = sweep("ma_cross", close, params=p, device="gpu").table
    np.testing.assert_array_equal(gpu["trades"], cpu["trades"])
    for k in ("total_return", "end_value", "max_drawdown", "exposure", "sharpe"):
        np.testing.assert_allclose(gpu[k], cpu[k], rtol=1e-9, atol=1e-12, err_msg=k)


@pytest.mark.gpu
@pytest.mark.skipif(not _real_gpu(), reason="needs a real CUDA GPU (numba-cuda and CuPy with a device)")
def test_tick_sweep_cpu_versus_gpu():
    """The tick sweep on the device: 200 market-maker sets over the whole AMZN LOBSTER day with
    random latencies; integer columns exactly the CPU's, float metrics to 1e-9 (the GPU may fuse
    multiply-adds)."""
    from conftest import require_data
    from hpte.engine.sweep import sweep
    path = require_data("lobster_AMZN_2012-06-21_level5/AMZN_2012-06-21_34200000_57600000_message_5.csv")
    p = {"half_spread": "0:9:1", "size": "10:100:10", "max_position": "200,1000"}
    kw = dict(latency="feed=100us,entry=50us:150us,response=100us", fees="maker=-20,taker=30", seed=1)
    cpu = sweep("market_maker", path, params=p, **kw).table
    gpu = sweep("market_maker", path, params=p, device="gpu", **kw).table
    assert len(gpu["pnl"]) == 200 and cpu["trades"].max() > 0
    for k in cpu:
        if cpu[k].dtype.kind == "i" or k in ("half_spread", "size", "max_position", "skew"):
            np.testing.assert_array_equal(gpu[k], cpu[k], err_msg=k)
        else:
            np.testing.assert_allclose(gpu[k], cpu[k], rtol=1e-9, atol=1e-12, err_msg=k)
