"""Small books (issue 10): state proportional to what a book holds, ladders that start small and
grow (moved alone into free room, or with every book in a relayout), through the Engine against
the plain-Python reference."""
from __future__ import annotations

import numpy as np
import pytest
from reference.matcher import ReferenceEngine
from strategies import split_batches

from hpte.engine.engine import Engine


def _assert_same(got, want, what):
    for stream in ("fills", "events", "deltas"):
        g, w = getattr(got, stream), getattr(want, stream)
        for k in w:
            np.testing.assert_array_equal(np.asarray(g[k]), np.asarray(w[k]), err_msg=f"{what} {stream}.{k}")


def _concat(results, stream):
    parts = [getattr(r, stream) for r in results]
    return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}


def test_empty_books_cost_a_few_hundred_bytes():
    eng = Engine()
    one = {"ts_ns": np.zeros(1, np.int64), "order_id": np.ones(1, np.uint64), "side": np.ones(1, np.int8),
           "price_ticks": np.full(1, 100, np.int64), "qty": np.ones(1, np.int64), "action": np.ones(1, np.uint8)}
    eng.submit(one)
    before = eng.state_bytes()
    k = 2000
    res = eng.submit({"ts_ns": np.ones(k, np.int64), "order_id": np.arange(k, dtype=np.uint64),
                      "side": np.ones(k, np.int8), "price_ticks": np.full(k, 100, np.int64),
                      "qty": np.ones(k, np.int64), "action": np.ones(k, np.uint8),     # cancels: nothing rests
                      "symbol": np.arange(1, k + 1, dtype=np.uint32)})
    assert eng.store.n_books == k + 1 and res.events.n_rows == k
    per_book = (eng.state_bytes() - before) / k
    assert 0 < per_book <= 512, per_book


def test_state_grows_with_content_not_a_fixed_ladder():
    rng = np.random.default_rng(1)
    n = 400
    cols = {"ts_ns": np.arange(n, dtype=np.int64), "order_id": np.arange(1, n + 1, dtype=np.uint64),
            "side": np.where(np.arange(n) % 2, 1, -1).astype(np.int8),
            "price_ticks": (1000 + np.where(np.arange(n) % 2, -1, 1) * rng.integers(1, 40, n)).astype(np.int64),
            "qty": np.ones(n, np.int64)}
    eng = Engine()
    eng.submit(cols)
    assert eng.store.resting() == n
    # 400 orders within 80 ticks: well under 64 KB (a 4,096-level ladder alone was 80 KB)
    assert eng.state_bytes() < 64_000, eng.state_bytes()


def _wide_flow(rng, n, n_books):
    """Books whose prices walk far (each book's ladder must grow many times), with cancels."""
    sym = rng.integers(0, n_books, n).astype(np.uint32)
    step = rng.integers(-60, 61, n)
    mid = 50_000 + np.cumsum(step)
    side = rng.choice(np.array([1, -1], np.int8), n)
    px = (mid - side.astype(np.int64) * rng.integers(0, 400, n)).astype(np.int64)
    action = np.where(rng.random(n) < 0.25, 1, 0).astype(np.uint8)
    oid = np.arange(1, n + 1, dtype=np.uint64)
    # a cancel names an earlier order (maybe gone already) of any book
    prev = np.maximum(np.arange(n) - rng.integers(1, 200, n), 0)
    oid = np.where(action == 1, oid[prev], oid).astype(np.uint64)
    return {"ts_ns": np.arange(n, dtype=np.int64), "order_id": oid, "side": side, "price_ticks": px,
            "qty": rng.integers(1, 30, n).astype(np.int64), "action": action, "symbol": sym,
            "tif": np.where(rng.random(n) < 0.1, 1, 0).astype(np.uint8)}


@pytest.mark.parametrize("n_books", [1, 7])
@pytest.mark.parametrize("threads", [1, 2])
def test_growing_ladders_match_the_reference(n_books, threads):
    cols = _wide_flow(np.random.default_rng(n_books * 10 + threads), 6000, n_books)
    ref = ReferenceEngine()
    want = ref.submit(cols)
    for sizes in (None, 613, 1):
        eng = Engine(threads=threads)
        if sizes == 1 and n_books > 1:
            continue
        batches = [cols] if sizes is None else split_batches(cols, sizes)
        got = [eng.submit(b) for b in batches]
        g = type("R", (), {s: _concat(got, s) for s in ("fills", "events", "deltas")})
        _assert_same(g, want, f"books {n_books} threads {threads} batches {sizes}")
        assert eng.grow_counts["ladder"] >= 2
        for k, v in ref.book_l3().items():
            np.testing.assert_array_equal(eng.book_l3()[k], v, err_msg=k)
        for k, v in ref.book_levels().items():
            np.testing.assert_array_equal(eng.book_levels()[k], v, err_msg=k)


@pytest.mark.parametrize("threads", [1, 2])
def test_growing_pools_move_alone_and_match_the_reference(threads):
    """Book 0 grows its pool from a few slots to thousands while six other books hold orders:
    growth moves book 0's pool alone into free room (no copy of the other books) until the room
    is used up, then lays every book out afresh; both give the reference's outputs and books."""
    rng = np.random.default_rng(5 + threads)
    n = 5000
    sym = np.where(rng.random(n) < 0.7, 0, rng.integers(1, 7, n)).astype(np.uint32)
    side = rng.choice(np.array([1, -1], np.int8), n)
    # mostly passive orders (they rest and pile up), a few crossing ones, a few cancels
    px = (1000 - side.astype(np.int64) * rng.integers(1, 50, n)).astype(np.int64)
    cross = rng.random(n) < 0.05
    px[cross] = 1000 + side[cross].astype(np.int64) * 30
    action = np.where(rng.random(n) < 0.1, 1, 0).astype(np.uint8)
    oid = np.arange(1, n + 1, dtype=np.uint64)
    prev = np.maximum(np.arange(n) - rng.integers(1, 300, n), 0)
    oid = np.where(action == 1, oid[prev], oid).astype(np.uint64)
    cols = {"ts_ns": np.arange(n, dtype=np.int64), "order_id": oid, "side": side, "price_ticks": px,
            "qty": rng.integers(1, 20, n).astype(np.int64), "action": action, "symbol": sym}
    ref = ReferenceEngine()
    want = ref.submit(cols)
    for sizes in (1, 97):
        eng = Engine(threads=threads)
        got = [eng.submit(b) for b in split_batches(cols, sizes)]
        g = type("R", (), {s: _concat(got, s) for s in ("fills", "events", "deltas")})
        _assert_same(g, want, f"threads {threads} batches {sizes}")
        assert eng.store.resting() > 2000
        assert eng.store.pool_moves >= 3 and eng.store.relayouts >= 3, (eng.store.pool_moves, eng.store.relayouts)
        for k, v in ref.book_l3().items():
            np.testing.assert_array_equal(eng.book_l3()[k], v, err_msg=k)
        for k, v in ref.book_levels().items():
            np.testing.assert_array_equal(eng.book_levels()[k], v, err_msg=k)


def test_new_books_one_at_a_time_are_appended_and_match_the_reference():
    """Symbols arriving one per batch (the gateway's case): a new book's id table goes into the
    free room without laying out every book again, most of the time; outputs and books equal
    the reference's."""
    rng = np.random.default_rng(11)
    n = 1200
    sym = np.repeat(np.arange(300, dtype=np.uint32), 4)        # each symbol's first order opens its book
    side = rng.choice(np.array([1, -1], np.int8), n)
    cols = {"ts_ns": np.arange(n, dtype=np.int64), "order_id": np.arange(1, n + 1, dtype=np.uint64),
            "side": side, "price_ticks": (500 - side.astype(np.int64) * rng.integers(-2, 5, n)).astype(np.int64),
            "qty": rng.integers(1, 9, n).astype(np.int64), "symbol": sym}
    want = ReferenceEngine()
    w = want.submit(cols)
    eng = Engine()
    got = [eng.submit(b) for b in split_batches(cols, 4)]
    g = type("R", (), {s: _concat(got, s) for s in ("fills", "events", "deltas")})
    _assert_same(g, w, "one new book per batch")
    assert eng.store.n_books == 300
    assert eng.store.relayouts < 100, eng.store.relayouts
    for k, v in want.book_l3().items():
        np.testing.assert_array_equal(eng.book_l3()[k], v, err_msg=k)
