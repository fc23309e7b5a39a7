"""Differential tests: every engine in IMPLS against the plain-Python reference, exactly.

Hypothesis order streams (tests/strategies.py) under all five STP modes, fed in batches of 1,
7, 1024 rows and whole; fills, events, deltas, book_levels (full and depth-limited), book_l3,
then end_session and the books after it must equal the reference's, row for row.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from reference.matcher import ReferenceEngine
from strategies import (IMPLS, STP_MODES, assert_same, order_streams, random_stream, run_batches,
                        split_batches)

from hpte.engine import schema as S

ENGINES = [name for name in IMPLS if name != "reference"]
BATCH_SIZES = (1, 7, 1024, None)          # None = the whole stream in one batch
END_TS = 9_000_000_000


def test_engine_registered():
    """Fails until the real engine is registered in tests/strategies.py IMPLS."""
    assert len(IMPLS) > 1, "no engine registered in tests/strategies.py IMPLS: the differential tests compare nothing"
    assert "reference" in IMPLS


def _snapshot(eng):
    return {"levels": eng.book_levels(), "levels1": eng.book_levels(1), "levels2": eng.book_levels(2),
            "l3": eng.book_l3()}


def _run(factory, stp, cols, size):
    eng = factory(stp=stp)
    batches = [cols] if size is None else split_batches(cols, size)
    out = run_batches(eng, batches)
    snap = _snapshot(eng)
    end = eng.end_session(END_TS)
    return out, snap, end, _snapshot(eng)


def compare(name, stp, cols, sizes=BATCH_SIZES):
    """Run the reference once and engine `name` for every batch size; everything must match."""
    ref_out, ref_snap, ref_end, ref_after = _run(ReferenceEngine, stp, cols, None)
    for size in sizes:
        tag = f"{name} stp={stp} batch={size or 'whole'}"
        out, snap, end, after = _run(IMPLS[name], stp, cols, size)
        assert_same(out["fills"], ref_out["fills"], S.FILL_COLUMNS, f"{tag}: fills")
        assert_same(out["events"], ref_out["events"], S.EVENT_COLUMNS, f"{tag}: events")
        assert_same(out["deltas"], ref_out["deltas"], S.DELTA_COLUMNS, f"{tag}: deltas")
        for key, columns in (("levels", S.LEVEL_COLUMNS), ("levels1", S.LEVEL_COLUMNS),
                             ("levels2", S.LEVEL_COLUMNS), ("l3", S.L3_COLUMNS)):
            assert_same(snap[key], ref_snap[key], columns, f"{tag}: {key}")
            assert_same(after[key], ref_after[key], columns, f"{tag}: {key} after end_session")
        assert_same(end.fills, ref_end.fills, S.FILL_COLUMNS, f"{tag}: end_session fills")
        assert_same(end.events, ref_end.events, S.EVENT_COLUMNS, f"{tag}: end_session events")
        assert_same(end.deltas, ref_end.deltas, S.DELTA_COLUMNS, f"{tag}: end_session deltas")


@pytest.mark.parametrize("stp", STP_MODES)
@pytest.mark.parametrize("name", ENGINES)
@given(cols=order_streams(max_rows=80))
def test_matches_reference(name, stp, cols):
    compare(name, stp, cols)


@pytest.mark.parametrize("name", ENGINES)
@given(cols=order_streams(max_rows=80, n_symbols=1, n_accounts=2, n_prices=3, invalid=False))
def test_matches_reference_dense_single_book(name, cols):
    """One book, two accounts, three prices: self-trades and sweeps on almost every row."""
    for stp in STP_MODES:
        compare(name, stp, cols, sizes=(1, None))


@pytest.mark.parametrize("stp", STP_MODES)
@pytest.mark.parametrize("name", ENGINES)
def test_matches_reference_long_stream(name, stp, rng):
    """A seeded stream longer than 1024 rows, so the 1024-row batches really split it."""
    cols = random_stream(rng, 3000)
    compare(name, stp, cols)


@pytest.mark.parametrize("name", ENGINES)
def test_matches_reference_empty_and_legacy_kind(name):
    """An empty batch, and a batch given with the legacy `kind` column and no action/tif."""
    cols = {"ts_ns": np.array([1, 2, 3, 4], dtype=np.int64),
            "order_id": np.array([1, 2, 3, 1], dtype=np.uint64),
            "side": np.array([1, -1, -1, 1], dtype=np.int8),
            "price_ticks": np.array([100, 100, 99, 100], dtype=np.int64),
            "qty": np.array([5, 2, 9, 0], dtype=np.int64),
            "kind": np.array([0, 2, 0, 1], dtype=np.uint8)}
    for stp in STP_MODES:
        ref, eng = ReferenceEngine(stp=stp), IMPLS[name](stp=stp)
        for batch in ({k: v[:0] for k, v in cols.items()}, cols):
            r, e = ref.submit(batch), eng.submit(batch)
            assert_same(e.fills, r.fills, S.FILL_COLUMNS, "fills")
            assert_same(e.events, r.events, S.EVENT_COLUMNS, "events")
            assert_same(e.deltas, r.deltas, S.DELTA_COLUMNS, "deltas")
        assert_same(eng.book_l3(), ref.book_l3(), S.L3_COLUMNS, "l3")
