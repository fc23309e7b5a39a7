"""The Dask driver: a LocalCluster of 2 worker processes gives the in-process rows, and a worker
killed in the middle of a sweep costs a retried task, never a lost or duplicated row."""
from __future__ import annotations

import os
import signal

import numpy as np
import pytest

distributed = pytest.importorskip("distributed", reason="Dask is not installed (pip install 'hpte[dask]')")

from hpte.engine.sweep import sweep  # noqa: E402
from hpte.engine.sweep.data import random_walk  # noqa: E402


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    # worker processes inherit the environment: they compile into (and load from) the same cache
    monkeypatch.setenv("HPTE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "hpte-cache"))


def test_local_cluster_equals_in_process(tmp_path):
    close = random_walk(5000, 21)
    p = {"fast": "2:30:4", "slow": "10:80:10"}
    here = sweep("ma_cross", close, params=p).table
    res = sweep("ma_cross", close, params=p, cluster="local", workers=2, out=tmp_path, plot=False)
    import pyarrow.parquet as pq
    t = pq.read_table(res.path).to_pydict()
    assert res.stats["chunks"] >= 4 and "dask (local cluster, 2 workers)" == res.stats["device"]
    for k in here:
        np.testing.assert_array_equal(np.asarray(t[k]), here[k], err_msg=k)


def _pids(lc):
    """Worker process ids, read from the nannies (no second Client in this process)."""
    return sorted(w.process.process.pid for w in lc.workers.values() if w.process is not None and w.process.process)


def test_killed_worker_costs_a_retry_not_a_row():
    from distributed import LocalCluster

    close = random_walk(300_000, 5)
    p = {"fast": "2:60:2", "slow": "100:190:10"}          # 300 sets, 30 chunks of 10
    here = sweep("ma_cross", close, params=p).table
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as lc:
        pids = _pids(lc)
        assert len(pids) == 2
        victim = pids[0]
        killed = []

        def progress(done, total):
            if not killed and done >= 10:
                os.kill(victim, signal.SIGKILL)
                killed.append(done)

        res = sweep("ma_cross", close, params=p, cluster=lc.scheduler_address, chunk=10, progress=progress)
        assert killed and killed[0] < 300, "the worker was not killed mid-run"
        assert victim not in _pids(lc)
        with pytest.raises(ProcessLookupError):
            os.kill(victim, 0)
    t = res.table
    assert len(t["fast"]) == 300
    assert len({(a, b) for a, b in zip(t["fast"], t["slow"])}) == 300     # every row exactly once
    for k in here:
        np.testing.assert_array_equal(t[k], here[k], err_msg=k)


def test_every_worker_killed_rescatters_the_data_and_loses_no_row():
    """Both workers killed at once: the data scattered to them is gone with them, so Dask cancels
    the chunks that read it; the driver scatters the data again and resubmits those chunks."""
    from distributed import LocalCluster

    close = random_walk(100_000, 6)
    p = {"fast": "2:40:2", "slow": "100:190:10"}          # 200 sets, 20 chunks of 10
    here = sweep("ma_cross", close, params=p).table
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as lc:
        victims = _pids(lc)
        assert len(victims) == 2
        killed = []

        def progress(done, total):
            if not killed and done >= 10:
                for v in victims:
                    os.kill(v, signal.SIGKILL)
                killed.append(done)

        res = sweep("ma_cross", close, params=p, cluster=lc.scheduler_address, chunk=10, progress=progress)
        assert killed and killed[0] < 200, "the workers were not killed mid-run"
        assert not set(victims) & set(_pids(lc))
    t = res.table
    assert len({(a, b) for a, b in zip(t["fast"], t["slow"])}) == len(t["fast"]) == 200
    for k in here:
        np.testing.assert_array_equal(t[k], here[k], err_msg=k)


@pytest.mark.parametrize("mode", ["no-impact", "impact"])
def test_tick_sweep_on_a_local_cluster_equals_in_process(mode):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "backtest"))
    from bt_flows import random_flow

    ev = random_flow(11, 800)
    p = {"half_spread": "0,1", "size": "2,3,4"}
    kw = dict(latency="feed=3us,entry=1us:5us,response=2us", fees="maker=-1,taker=2", seed=3, sample="50us",
              mode=mode)
    here = sweep("market_maker", ev, params=p, **kw).table
    res = sweep("market_maker", ev, params=p, cluster="local", workers=2, chunk=2, **kw)
    assert res.stats["chunks"] == 3 and res.stats["device"] == "dask (local cluster, 2 workers)"
    assert res.stats["mode"] == mode
    for k in here:
        np.testing.assert_array_equal(res.table[k], here[k], err_msg=k)
