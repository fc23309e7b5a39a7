"""Full-size CPU against GPU: ``Engine(device="gpu")`` must give exactly the CPU engine's fills,
events, deltas and books. Runs only on a real CUDA GPU with CuPy (``pip install -e '.[gpu,test]'``;
on a machine with the packages preinstalled, ``PYTHONPATH=. pytest -m gpu tests/test_gpu.py``);
everywhere else the module skips with one reason. The same logic is checked without a GPU by
tests/test_cuda_sim.py (simulator) and tests/test_device.py (PTX compile).
"""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import (STP_MODES, assert_same, order_streams, random_stream, rows_to_columns, growth_stream,
                        run_batches, split_batches)

from hpte.engine import schema as S
from hpte.engine.device import DeviceError, resolve_device


def _gpu_reason() -> str | None:
    try:
        info = resolve_device("gpu")
    except DeviceError as e:
        return f"needs a real CUDA GPU: {e}"
    return "needs a real CUDA GPU, not the simulator" if info.simulator else None


_REASON = _gpu_reason()
pytestmark = pytest.mark.gpu
if _REASON:
    pytest.skip(_REASON, allow_module_level=True)

from hpte.engine.engine import Engine  # noqa: E402
from hpte.engine.gen import generate_flow  # noqa: E402

END_TS = 9_000_000_000_000_000_000


def _same(gpu, cpu, g, c, tag):
    assert_same(g["fills"], c["fills"], S.FILL_COLUMNS, f"{tag}: fills")
    assert_same(g["events"], c["events"], S.EVENT_COLUMNS, f"{tag}: events")
    assert_same(g["deltas"], c["deltas"], S.DELTA_COLUMNS, f"{tag}: deltas")
    assert_same(gpu.book_levels(), cpu.book_levels(), S.LEVEL_COLUMNS, f"{tag}: levels")
    assert_same(gpu.book_l3(), cpu.book_l3(), S.L3_COLUMNS, f"{tag}: l3")


def compare(cols, stp="none", sizes=(None,), cpu_threads=None, **kw):
    out = []
    for size in sizes:
        tag = f"stp={stp} batch={size or 'whole'}"
        cpu = Engine(stp=stp, threads=cpu_threads, **kw)
        gpu = Engine(stp=stp, device="gpu", **kw)
        batches = [cols] if size is None else split_batches(cols, size)
        _same(gpu, cpu, run_batches(gpu, batches), run_batches(cpu, batches), tag)
        ge, ce = gpu.end_session(END_TS), cpu.end_session(END_TS)
        assert_same(ge.events, ce.events, S.EVENT_COLUMNS, f"{tag}: end_session events")
        assert_same(ge.deltas, ce.deltas, S.DELTA_COLUMNS, f"{tag}: end_session deltas")
        assert_same(gpu.book_l3(), cpu.book_l3(), S.L3_COLUMNS, f"{tag}: l3 after end_session")
        out.append(gpu)
    return out


@pytest.mark.parametrize("books", [1, 37, 1000, 20_000])
def test_generated_flow_full_size(books):
    """1M events of the benchmark flow over 1..20,000 books, whole and in 65,536-row batches."""
    cols = generate_flow(1_000_000, n_books=books, seed=books)
    for gpu in compare(cols, sizes=(None, 65_536)):
        assert gpu._gpu.launches >= 1


@pytest.mark.parametrize("stp", STP_MODES)
def test_random_stream_all_stp(stp, rng):
    cols = random_stream(rng, 5000, n_symbols=4)
    compare(cols, stp, sizes=(None, 1024, 7))


def test_growth_paths_and_out_of_range():
    cols = growth_stream(range(200))
    for stp, max_levels in (("none", 1 << 24), ("decrement", 4096)):
        gpu = compare(cols, stp, sizes=(None, 999), max_levels=max_levels)[0]
        assert gpu.grow_counts["ladder"] > 0 and gpu.grow_counts["output"] > 0


def test_state_stays_on_the_device():
    """Batches with no growth and no new books move no book state between host and device."""
    cols = generate_flow(400_000, n_books=500, seed=3)
    gpu = Engine(device="gpu")
    gpu.submit({k: v[:200_000] for k, v in cols.items()})
    assert gpu.store.n_books == 500
    uploads = gpu.store.uploads
    for s in range(200_000, 400_000, 20_000):
        gpu.submit({k: v[s:s + 20_000] for k, v in cols.items()})
    grown = gpu.grow_counts.get("reserve", 0) + gpu.grow_counts["pool"] + gpu.grow_counts["ladder"]
    assert gpu.store.uploads - uploads <= grown
    cpu = Engine()
    cpu.submit(cols)
    assert_same(gpu.book_l3(), cpu.book_l3(), S.L3_COLUMNS, "l3")


@settings(max_examples=200)
@given(cols=order_streams(max_rows=120, n_symbols=3), stp=st.sampled_from(STP_MODES),
       size=st.sampled_from([None, 1, 9]))
def test_hypothesis_streams(cols, stp, size):
    compare(cols, stp, sizes=(size,), cpu_threads=1)
