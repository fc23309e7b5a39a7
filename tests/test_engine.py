"""Engine-specific behaviour: growth paths, range limits, structural input errors, Arrow input,
the generated benchmark flow against the reference, and batch-size independence."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from reference.matcher import ReferenceEngine
from strategies import split_batches

from hpte.engine import schema as S
from hpte.engine.engine import Engine
from hpte.engine.gen import generate_flow
from hpte.engine.io import InputError

COMPARE = ("fills", "events", "deltas")


def _as_dict(rows) -> dict:
    return {k: np.asarray(rows[k]) for k in rows}


def _assert_same(a, b, what=""):
    for stream in COMPARE:
        da, db = _as_dict(getattr(a, stream)), _as_dict(getattr(b, stream))
        assert da.keys() == db.keys(), (what, stream)
        for k in da:
            np.testing.assert_array_equal(da[k], db[k], err_msg=f"{what} {stream}.{k}")


def _concat(results):
    out = {}
    for stream in COMPARE:
        parts = [_as_dict(getattr(r, stream)) for r in results]
        out[stream] = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return type("R", (), out)


def _orders(**cols):
    n = len(cols["order_id"])
    base = {"ts_ns": np.arange(n, dtype=np.int64), "side": np.ones(n, np.int8),
            "price_ticks": np.full(n, 100, np.int64), "qty": np.ones(n, np.int64)}
    base.update({k: np.asarray(v) for k, v in cols.items()})
    base["order_id"] = np.asarray(base["order_id"], np.uint64)
    return base


@pytest.fixture(scope="module")
def flow():
    return generate_flow(30_000, n_books=3, n_accounts=50, seed=7)


def test_generated_flow_matches_reference_across_batch_sizes(flow):
    ref = ReferenceEngine()
    want = ref.submit(flow)
    for size in (1, 7, 1024, None):
        eng = Engine()
        n = len(flow["ts_ns"])
        if size is None:
            got = eng.submit(flow)
        else:
            sizes = [size] * (n // size) + ([n % size] if n % size else [])
            if size == 1:  # one row per call on a prefix keeps the test fast
                sizes = [1] * 3000
                sub = {k: v[:3000] for k, v in flow.items()}
                want_sub = ReferenceEngine().submit(sub)
                got = _concat([eng.submit(b) for b in split_batches(sub, sizes)])
                _assert_same(got, want_sub, "batch 1")
                continue
            got = _concat([eng.submit(b) for b in split_batches(flow, sizes)])
        _assert_same(got, want, f"batch {size}")
        lv, lv_ref = eng.book_levels(), ref.book_levels()
        for k in lv:
            np.testing.assert_array_equal(lv[k], lv_ref[k], err_msg=k)
    # the flow really exercised the book
    assert len(want.fills["seq"]) > 1000


@pytest.mark.parametrize("reserve", [True, False], ids=["reserve-ahead", "grow-in-kernel"])
def test_pool_ladder_and_output_growth_keep_every_order(reserve):
    """Start tiny; thousands of resting orders over a wide, drifting price range. With the
    batch reservation switched off, the kernel's own stop-grow-resume path does all growth."""
    rng = np.random.default_rng(3)
    n = 20_000
    side = rng.choice(np.array([1, -1], np.int8), n)
    mid = 1_000_000 + np.cumsum(rng.integers(-40, 41, n))   # drifts far beyond one 4096 ladder
    px = mid - side.astype(np.int64) * rng.integers(1, 3000, n)
    cols = _orders(order_id=np.arange(n, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15), side=side,
                   price_ticks=px, qty=rng.integers(1, 50, n))
    eng = Engine()
    if not reserve:
        eng.store.reserve = lambda books, action, at_most_double=True: 0
    got = eng.submit(cols)
    want = ReferenceEngine().submit(cols)
    _assert_same(got, want, "growth")
    assert eng.grow_counts["ladder"] > 0
    assert (eng.grow_counts["reserve"] > 0) if reserve else (eng.grow_counts["pool"] > 3)
    l3 = eng.book_l3()
    assert len(l3["order_id"]) == eng.store.resting() > 1000
    # quantity conservation: submitted = filled (both sides count once per fill) + resting
    filled = 2 * int(np.asarray(got.fills["qty"]).sum())
    expired = int(np.asarray(got.events["qty"])[np.asarray(got.events["event"]) == S.EV_EXPIRED].sum())
    assert int(cols["qty"].sum()) == filled + int(l3["qty"].sum()) + expired


def test_price_too_far_from_book_is_rejected_not_dropped():
    eng = Engine(max_levels=4096)
    cols = _orders(order_id=[1, 2, 3, 4], side=[1, 1, -1, 1],
                   price_ticks=[100, 100 + 4000, 100 + 10_000, 50], qty=[1, 1, 1, 1])
    res = eng.submit(cols)
    ev = _as_dict(res.events)
    names = [(int(i), S.EVENT_NAMES[int(e)], S.REASON_NAMES[int(r)])
             for i, e, r in zip(ev["order_id"], ev["event"], ev["reason"])]
    assert names == [(1, "ACCEPTED", ""), (2, "ACCEPTED", ""),
                     (3, "REJECTED", "PRICE_OUT_OF_RANGE"), (4, "ACCEPTED", "")]
    assert sorted(eng.book_l3()["order_id"].tolist()) == [1, 2, 4]


def test_far_marketable_order_does_not_stretch_the_ladder():
    eng = Engine(max_levels=4096)
    eng.submit(_orders(order_id=[1], side=[-1], price_ticks=[100], qty=[5]))
    res = eng.submit(_orders(order_id=[2], side=[1], price_ticks=[10**12], qty=[5]))
    assert int(np.asarray(res.fills["qty"]).sum()) == 5
    assert eng.store.resting() == 0


@pytest.mark.parametrize("bad, message", [
    ({"drop": "qty"}, "missing required column 'qty'"),
    ({"price_ticks": np.array([1.5, 2.0])}, "column 'price_ticks' has dtype float64"),
    ({"ts_ns": np.array([5, 4])}, "column 'ts_ns' row 1: timestamps must not decrease"),
    ({"account": np.array([-1, 0])}, "column 'account' row 0: value -1 does not fit uint32"),
    ({"qty": np.array([1, 2, 3])}, "column 'qty' has 3 rows, expected 2"),
])
def test_structural_errors_name_the_column_and_change_nothing(bad, message):
    eng = Engine()
    eng.submit(_orders(order_id=[10], side=[-1], price_ticks=[100], qty=[3]))
    before = eng.book_l3()
    cols = _orders(order_id=[1, 2], side=[1, 1], price_ticks=[100, 100], qty=[1, 1])
    if "drop" in bad:
        del cols[bad["drop"]]
    else:
        cols.update(bad)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        eng.submit(cols)
    after = eng.book_l3()
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])
    assert eng.seq == 1


def test_arrow_input_is_zero_copy_and_equal_to_numpy(flow):
    cols = {k: v[:5000] for k, v in flow.items()}
    batch = pa.RecordBatch.from_pydict({k: pa.array(v) for k, v in cols.items()})
    a, b = Engine().submit(batch), Engine().submit(cols)
    _assert_same(a, b, "arrow")


def test_legacy_kind_column():
    cols = _orders(order_id=[1, 2, 1], side=[1, -1, 1], price_ticks=[100, 99, 100], qty=[5, 2, 5],
                   kind=np.array([0, 2, 1], np.uint8))
    ev = _as_dict(Engine().submit(cols).events)
    assert [S.EVENT_NAMES[int(e)] for e in ev["event"]] == [
        "ACCEPTED", "ACCEPTED", "PARTIALLY_FILLED", "FILLED", "CANCELLED"]


def test_unknown_stp_mode():
    with pytest.raises(ValueError, match="unknown stp mode 'sometimes'"):
        Engine(stp="sometimes")


def test_submit_order_equals_batches_and_reference(flow):
    """The scalar one-order entry point gives exactly the outputs of the batch path."""
    cols = {k: v[:4000] for k, v in flow.items()}
    eng = Engine()
    parts = [eng.submit_order(*(cols[name][i] for name, *_ in S.ORDER_COLUMNS)) for i in range(4000)]
    _assert_same(_concat(parts), ReferenceEngine().submit(cols), "submit_order")
    for k, v in eng.book_l3().items():
        ref = Engine()
        ref.submit(cols)
        np.testing.assert_array_equal(v, ref.book_l3()[k])


def test_submit_order_rejects_values_that_do_not_fit():
    eng = Engine()
    with pytest.raises(InputError, match="submit_order"):
        eng.submit_order(0, -5, 1, 100, 1)
    with pytest.raises(InputError, match="before the previous"):
        eng.submit_order(10, 1, 1, 100, 1)
        eng.submit_order(9, 2, 1, 100, 1)
    assert eng.store.resting() == 1 and eng.seq == 1


@pytest.mark.parametrize("n,nbooks", [(0, 3), (1, 1), (997, 7), (20_000, 1000)])
def test_route_by_book_is_a_stable_sort_by_book(n, nbooks):
    """The parallel path's routing kernel against numpy's stable argsort (its reference)."""
    from hpte.kernels.match_cpu import route_by_book_cpu
    books = np.random.default_rng(n).integers(0, nbooks, n).astype(np.int64)
    counts = np.bincount(books, minlength=nbooks)
    first = np.cumsum(counts) - counts
    nxt = first.copy()
    route = np.full(n, -1, np.int64)
    route_by_book_cpu(books, nxt, route)
    np.testing.assert_array_equal(route, np.argsort(books, kind="stable"))
    np.testing.assert_array_equal(nxt, first + counts)
