"""The CUDA driver (kernels/match_cuda.py + engine/gpu.py) against the CPU engine, under numba's
CUDA simulator.

``NUMBA_ENABLE_CUDASIM=1`` has to be set before numba is imported, so this module (all marked
``cuda``) runs in a child process: tests/test_device.py::test_simulator_suite, an ordinary test,
runs ``python -m pytest -m cuda tests/test_cuda_sim.py`` with the variable set and checks that it
passed. In any process without the simulator the whole module skips with one reason, so plain
``pytest`` runs these tests once. To run them directly:
``NUMBA_ENABLE_CUDASIM=1 pytest -m cuda tests/test_cuda_sim.py``.

Threads per block are patched to 3, so every launch with more than three books spans several
blocks. The simulator runs each GPU thread as a Python thread: streams stay small.
"""
from __future__ import annotations


import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import (STP_MODES, assert_same, order_streams, random_stream, rows_to_columns, growth_stream,
                        run_batches, split_batches)

from hpte.engine import schema as S

SIM = bool(numba.config.ENABLE_CUDASIM)
END_TS = 9_000_000_000

pytestmark = pytest.mark.cuda
if not SIM:
    pytest.skip("CUDA simulator is off in this process: these cuda tests run in the child process of "
                "tests/test_device.py::test_simulator_suite (NUMBA_ENABLE_CUDASIM=1)", allow_module_level=True)


# ---------------------------------------------------------------------------------------------
# Simulator tests
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def small_blocks(monkeypatch):
    from hpte.kernels import match_cuda
    monkeypatch.setattr(match_cuda, "THREADS_PER_BLOCK", 3)
    return 3


def _engines(stp="none", **kw):
    from hpte.engine.engine import Engine
    cpu = Engine(stp=stp, **kw)
    gpu = Engine(stp=stp, device="gpu", **kw)
    assert gpu.device == "gpu" and gpu.device_info.simulator
    return cpu, gpu


def _same_books(gpu, cpu, tag):
    for depth in (None, 1):
        assert_same(gpu.book_levels(depth), cpu.book_levels(depth), S.LEVEL_COLUMNS, f"{tag}: levels {depth}")
    assert_same(gpu.book_l3(), cpu.book_l3(), S.L3_COLUMNS, f"{tag}: l3")


def _same_out(g, c, tag):
    assert_same(g["fills"], c["fills"], S.FILL_COLUMNS, f"{tag}: fills")
    assert_same(g["events"], c["events"], S.EVENT_COLUMNS, f"{tag}: events")
    assert_same(g["deltas"], c["deltas"], S.DELTA_COLUMNS, f"{tag}: deltas")


def compare(cols, stp="none", sizes=(None,), **kw):
    """GPU engine (simulator) == CPU engine: outputs, books, end_session and the books after."""
    gpus = []
    for size in sizes:
        tag = f"stp={stp} batch={size or 'whole'}"
        cpu, gpu = _engines(stp, **kw)
        batches = [cols] if size is None else split_batches(cols, size)
        _same_out(run_batches(gpu, batches), run_batches(cpu, batches), tag)
        _same_books(gpu, cpu, tag)
        ge, ce = gpu.end_session(END_TS), cpu.end_session(END_TS)
        assert_same(ge.events, ce.events, S.EVENT_COLUMNS, f"{tag}: end_session events")
        assert_same(ge.deltas, ce.deltas, S.DELTA_COLUMNS, f"{tag}: end_session deltas")
        _same_books(gpu, cpu, f"{tag} after end_session")
        gpus.append(gpu)
    return gpus


def _flow(n, books, seed):
    from hpte.engine.gen import generate_flow
    return generate_flow(n, n_books=books, seed=seed)


@pytest.mark.usefixtures("small_blocks")
@pytest.mark.parametrize("stp", STP_MODES)
def test_random_stream_all_stp(stp, rng):
    """Self-trades, invalid rows, cancels and replaces over 4 books (2 blocks), whole and in 37s."""
    cols = random_stream(rng, 600, n_symbols=4)
    compare(cols, stp, sizes=(None, 37))


@pytest.mark.usefixtures("small_blocks")
def test_many_books_multi_block():
    """60 books of generated flow: 20 blocks of 3 threads, several batches."""
    cols = _flow(3000, 60, seed=5)
    gpu, = compare(cols, sizes=(700,))
    assert gpu._gpu.launches >= 5


@pytest.mark.usefixtures("small_blocks")
def test_growth_pool_ladder_output_and_out_of_range():
    """Batches that make the kernel stop for ST_NEED_* in several books at once: pools (150
    resting orders per book > 64 slots; the engine's reserve() grows them before the launch),
    ladders (bids 1,000 or 5,000 ticks below
    the first price), output regions (IOCs sweeping 150 makers) and, with max_levels=4096,
    PRICE_OUT_OF_RANGE for the bids 5,000 ticks away."""
    cols = growth_stream(range(1, 6))
    for stp, max_levels in (("none", 1 << 24), ("decrement", 4096)):
        gpu = compare(cols, stp, sizes=(None, 400), max_levels=max_levels)[0]
        g = gpu.grow_counts
        assert g["ladder"] > 0 and g["output"] > 0, g
        assert gpu._gpu.launches > 2
    from hpte.engine.engine import Engine
    ev = Engine(max_levels=4096).submit(cols).events
    assert (ev["reason"] == S.R_PRICE_OUT_OF_RANGE).sum() == 3


@pytest.mark.usefixtures("small_blocks")
def test_state_hand_offs_between_batches():
    """Host reads (book_levels, end_session) between GPU batches move the state back and forth."""
    cols = _flow(1200, 7, seed=9)
    cpu, gpu = _engines()
    for k, batch in enumerate(split_batches(cols, 300)):
        _same_out(run_batches(gpu, [batch]), run_batches(cpu, [batch]), f"batch {k}")
        if k == 1:
            _same_books(gpu, cpu, "mid-stream")
        if k == 2:
            ge, ce = gpu.end_session(int(batch["ts_ns"][-1])), cpu.end_session(int(batch["ts_ns"][-1]))
            assert_same(ge.events, ce.events, S.EVENT_COLUMNS, "end_session events")
    assert gpu.store.resting() == cpu.store.resting()
    assert gpu.store.uploads >= 3
    empty = gpu.submit({k: v[:0] for k, v in cols.items()})
    assert empty.events["seq"].size == 0


@pytest.mark.usefixtures("small_blocks")
def test_gtd_sweep_grows_output():
    """120 good-till-date bids in two books expire at one row each: the sweep needs more output
    room than those rows reserve (engine/gpu.py grows the regions for it)."""
    rows = [dict(ts_ns=100 + k, order_id=k + 1, side=S.BUY, price_ticks=50 + k % 30, qty=1, symbol=k % 2,
                 expire_ts_ns=1000) for k in range(120)]
    rows += [dict(ts_ns=1000, order_id=999, side=S.SELL, price_ticks=200, qty=1, symbol=s) for s in (0, 1)]
    cols = rows_to_columns(rows)
    gpu, = compare(cols, sizes=(None,))
    first, last = {k: v[:120] for k, v in cols.items()}, {k: v[120:] for k, v in cols.items()}
    cpu, gpu = _engines()
    _same_out(run_batches(gpu, [first, last]), run_batches(cpu, [first, last]), "two batches")
    assert gpu.grow_counts["output"] > 0


@settings(max_examples=15)
@given(cols=order_streams(max_rows=60, n_symbols=3, gtd=True), size=st.sampled_from([None, 1, 7]))
def test_hypothesis_streams_gtd(cols, size):
    """Good-till-date orders (expiry sweeps, EXPIRE_IN_PAST / INVALID_EXPIRE rejects)."""
    from hpte.kernels import match_cuda
    old, match_cuda.THREADS_PER_BLOCK = match_cuda.THREADS_PER_BLOCK, 2
    try:
        compare(cols, "none", sizes=(size,))
    finally:
        match_cuda.THREADS_PER_BLOCK = old


@settings(max_examples=10)
@given(cols=order_streams(max_rows=50, n_symbols=3, stops=True, icebergs=True), stp=st.sampled_from(STP_MODES),
       size=st.sampled_from([None, 1, 7]))
def test_hypothesis_streams_stops(cols, stp, size):
    """Stop and stop-limit orders (triggers and cascades inside a row, cancels, replaces) and
    icebergs, with growth of the outputs a cascade and replenishments need (K.stop_room,
    K.ice_room on the GPU path)."""
    from hpte.kernels import match_cuda
    old, match_cuda.THREADS_PER_BLOCK = match_cuda.THREADS_PER_BLOCK, 2
    try:
        compare(cols, stp, sizes=(size,))
    finally:
        match_cuda.THREADS_PER_BLOCK = old


@settings(max_examples=40)
@given(cols=order_streams(max_rows=80, n_symbols=3), stp=st.sampled_from(STP_MODES),
       size=st.sampled_from([None, 1, 9]))
def test_hypothesis_streams(cols, stp, size):
    from hpte.kernels import match_cuda
    old, match_cuda.THREADS_PER_BLOCK = match_cuda.THREADS_PER_BLOCK, 2
    try:
        compare(cols, stp, sizes=(size,))
    finally:
        match_cuda.THREADS_PER_BLOCK = old



def test_bench_gpu_side_under_the_simulator(tmp_path):
    """engine/bench.py's GPU column, crossover, CSV and plot (tiny grid; simulator numbers mean
    nothing, and the simulator is refused unless asked for)."""
    from hpte.engine import bench as B
    res = B.run_bench(books=(1, 4), batch_sizes=(64,), events=300, device="gpu", allow_simulator=True)
    assert [(r["device"], r["books"]) for r in res.rows] == [("cpu", 1), ("gpu", 1), ("cpu", 4), ("gpu", 4)]
    g = [r for r in res.rows if r["device"] == "gpu"]
    assert all(r["launches"] >= 5 and r["kernel_s"] > 0 and r["transfer_s"] > 0 for r in g)
    assert set(res.crossovers()) == {64}
    assert "GPU M ev/s" in B.format_table(res) and "crossover at batch 64" in B.format_table(res)
    B.write_csv(res, tmp_path / "bench.csv")
    assert B.plot(res, tmp_path / "bench.png").stat().st_size > 0
    refused = B.run_bench(books=(2,), batch_sizes=(100,), events=100, device="gpu")
    assert refused.gpu is None and "simulator" in refused.gpu_note
    assert [r["device"] for r in refused.rows] == ["cpu"]


@pytest.mark.usefixtures("small_blocks")
@pytest.mark.parametrize("stp", ("none", "decrement"))
def test_matching_algorithms(stp, rng):
    """The allocation steps (kernels/book.py alloc_level) on the device: a preset per book."""
    matching = {"defaults": {"algorithm": "pro-rata"}, "symbols": {
        "7": {"algorithm": "allocation"}, str(1 << 31): {"algorithm": "split", "fifo_pct": 30},
        "12": {"algorithm": "fifo-lmm", "lmm_accounts": [1]}}}
    cols = random_stream(rng, 400, n_symbols=4)      # symbols 0, 7, 2**31, 12
    compare(cols, stp, sizes=(None, 37), matching=matching)
