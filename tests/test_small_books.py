"""Small books (issue 10): state proportional to what a book holds, ladders that start small and
grow (moved alone into free room, or with every book in a relayout), through the Engine against
the plain-Python reference."""
from __future__ import annotations

import numpy as np
import pytest
from reference.matcher import ReferenceEngine
from strategies import split_batches

from hpte.engine import schema as S
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


def _pile_up_then_cancel(rng, n_books, n_pile, n_tail, stops=0.0):
    """Every book piles up resting orders (passive prices, some GTD), then most of them are
    cancelled and trading goes on around the few left: pools that were large hold little.
    With ``stops`` > 0 that share of the pile-up rows are stop-limit orders (stop prices on both
    sides of 1000, so that the tail's trades trigger some of them after a shrink)."""
    n = n_pile + n_tail
    sym = rng.integers(0, n_books, n).astype(np.uint32)
    side = rng.choice(np.array([1, -1], np.int8), n)
    px = (1000 - side.astype(np.int64) * rng.integers(1, 40, n)).astype(np.int64)
    cross = rng.random(n) < np.where(np.arange(n) < n_pile, 0.02, 0.2)
    px[cross] = 1000 + side[cross].astype(np.int64) * 20
    oid = np.arange(1, n + 1, dtype=np.uint64)
    action = np.zeros(n, np.uint8)
    # the tail: mostly cancels of pile-up orders (each once), in random order
    tail = np.arange(n_pile, n)
    canc = tail[rng.random(n_tail) < 0.85]
    victims = rng.permutation(n_pile)[:canc.size]
    action[canc] = 1
    oid[canc] = victims + 1
    sym[canc] = sym[victims]
    side[canc] = side[victims]
    exp = np.where(rng.random(n) < 0.05, n + rng.integers(-n // 2, n, n), 0).astype(np.int64)
    exp[action == 1] = 0
    cols = {"ts_ns": np.arange(n, dtype=np.int64), "order_id": oid, "side": side, "price_ticks": px,
            "qty": rng.integers(1, 20, n).astype(np.int64), "action": action, "symbol": sym,
            "expire_ts_ns": np.maximum(exp, 0)}
    if stops:
        stop = (np.arange(n) < n_pile) & (action == 0) & (rng.random(n) < stops)
        otype = np.zeros(n, np.uint8)
        otype[stop] = S.OT_STOP_LIMIT
        sp = np.zeros(n, np.int64)
        sp[stop] = 1000 + side[stop].astype(np.int64) * rng.integers(1, 15, int(stop.sum()))
        px[stop] = sp[stop] + side[stop].astype(np.int64) * 2     # the limit, 2 ticks beyond
        cols["expire_ts_ns"][stop] = 0                           # a stop is never good-till-date
        cols.update(order_type=otype, stop_price_ticks=sp)
    return cols


def test_compact_pool_keeps_the_book_and_matches_its_python_form():
    """compact_pool_cpu (kernels/compact.py) on a book with many freed slots: live slots become
    0 .. live-1 (free list empty), the book reads the same (L3 in priority order, levels), every
    order is found through the rebuilt id table, and the compiled kernel and its plain-Python
    form leave identical arrays."""
    from hpte.kernels import book as K
    from hpte.kernels.compact import compact_pool_cpu
    cols = _pile_up_then_cancel(np.random.default_rng(3), 1, 3000, 2500)
    eng = Engine(algo="allocation")          # TOP orders (slot numbers in bk) must follow too
    eng.store.shrink_min_slots = 1 << 40     # no shrink here: the kernel alone
    eng.submit(cols)
    S = eng.store.S
    live = eng.store.resting()
    assert S.bk[0, K.F_HW] > 2 * live and S.bk[0, K.F_FREE] >= 0
    l3, levels = eng.book_l3(), eng.book_levels()
    S2 = type(S)(*[a.copy() for a in S])
    n = compact_pool_cpu(S, 0, np.empty(int(S.bk[0, K.F_HW]), np.int32))
    with np.errstate(over="ignore"):         # the id hash multiplies modulo 2**64
        compact_pool_cpu.py_func(S2, 0, np.empty(int(S2.bk[0, K.F_HW]), np.int32))
    for name, a, b in zip(S._fields, S, S2):
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert n == live and S.bk[0, K.F_HW] == live and S.bk[0, K.F_FREE] == -1
    for k, v in l3.items():
        np.testing.assert_array_equal(eng.book_l3()[k], v, err_msg=k)
    for k, v in levels.items():
        np.testing.assert_array_equal(eng.book_levels()[k], v, err_msg=k)
    poff, toff, tmask = int(S.bk[0, K.F_POFF]), int(S.bk[0, K.F_TOFF]), int(S.bk[0, K.F_TMASK])
    with np.errstate(over="ignore"):
        found = [K.id_find(S.tab, toff, tmask, S.o_id, poff, S.o_id[poff + s]) for s in range(live)]
    assert found == list(range(live))


@pytest.mark.parametrize("threads,algo", [(1, "fifo"), (2, "allocation"), (1, "risk"), (1, "stops")])
def test_pools_shrink_when_mostly_empty_and_match_the_reference(threads, algo):
    """Pools that grew for a pile-up of resting orders shrink (compacted, cut to their live
    orders, every book laid out afresh in smaller arrays) once most orders are cancelled;
    outputs, books and good-till-date expiries afterwards equal the reference's, and the
    state gets smaller. With risk (no limit set: the reference's outputs) the orders' risk rows
    move too: the risk state ends as that of an engine that never shrinks. With stops, untriggered
    stop-limit orders wait in the pools through the shrinks (the compaction moves the stop list)
    and are triggered afterwards."""
    from hpte.engine.risk.limits import RiskLimits
    cols = _pile_up_then_cancel(np.random.default_rng(7 + threads), 5, 4000, 4500,
                                stops=0.05 if algo == "stops" else 0.0)
    if algo == "stops":
        algo = "fifo"
        assert (cols["order_type"] == S.OT_STOP_LIMIT).sum() > 100
    ref = ReferenceEngine(algo="fifo" if algo == "risk" else algo)
    want = ref.submit(cols)

    def engine():
        if algo == "risk":
            return Engine(risk=RiskLimits())
        return Engine(threads=threads, algo=algo)

    if algo == "risk":
        plain = engine()
        plain.store.shrink_min_slots = 1 << 40
        for b in split_batches(cols, 250):
            plain.submit(b)
    for sizes in ((1, 250) if algo == "fifo" else (250,)):   # 1: the one-row path (_match_one)
        eng = engine()
        eng.store.shrink_min_slots = 0
        eng.store.shrink_check_rows = 64
        got, peak = [], 0
        for b in split_batches(cols, sizes):
            got.append(eng.submit(b))
            peak = max(peak, eng.state_bytes())
        g = type("R", (), {s: _concat(got, s) for s in ("fills", "events", "deltas")})
        _assert_same(g, want, f"threads {threads} batches {sizes}")
        if "order_type" in cols:    # stops triggered after the pools shrank (they waited through it)
            trig = g.events["event"] == S.EV_TRIGGERED
            assert trig.sum() > 10 and g.events["seq"][trig].max() > 4000, trig.sum()
        assert eng.store.shrinks >= 1, eng.store.shrinks
        assert eng.state_bytes() * 2 < peak, (eng.state_bytes(), peak)
        for k, v in ref.book_l3().items():
            np.testing.assert_array_equal(eng.book_l3()[k], v, err_msg=k)
        for k, v in ref.book_levels().items():
            np.testing.assert_array_equal(eng.book_levels()[k], v, err_msg=k)
        if algo == "risk":
            for name in ("acct", "pair"):
                np.testing.assert_array_equal(getattr(eng.risk, name), getattr(plain.risk, name), err_msg=name)


def test_one_row_batches_fast_path_equals_reference_and_bad_columns_get_the_batch_errors():
    """A one-row batch whose columns are all exact (the gateway's case) takes the one-row path
    (checks and copy in one pass); its outputs equal the reference's and submit_order's. A
    one-row batch with a mistyped or mis-shaped column, or a decreasing timestamp, gets the
    error naming the column and changes nothing."""
    from hpte.engine import schema as S
    from hpte.engine.gen import generate_flow
    from hpte.engine.io import InputError
    cols = generate_flow(1500, n_books=2, n_accounts=5, seed=4)
    assert set(cols) >= {name for name, *_ in S.ORDER_COLUMNS}
    want = ReferenceEngine().submit(cols)
    eng, eng2 = Engine(), Engine()
    got = [eng.submit(b) for b in split_batches(cols, 1)]
    g = type("R", (), {s: _concat(got, s) for s in ("fills", "events", "deltas")})
    _assert_same(g, want, "one-row batches")
    assert eng._one is not None and eng._one.fn is not None    # the one-row path ran
    got2 = [eng2.submit_order(*(cols[name][i] for name, *_ in S.ORDER_COLUMNS)) for i in range(1500)]
    g2 = type("R", (), {s: _concat(got2, s) for s in ("fills", "events", "deltas")})
    _assert_same(g2, want, "submit_order")
    last = {k: v[-1:] for k, v in cols.items()}
    before = (eng.seq, eng.book_l3())
    for name, bad, msg in [("price_ticks", last["price_ticks"].astype(np.float64) + 0.5, "'price_ticks' has dtype"),
                           ("qty", last["qty"].reshape(1, 1), "'qty' must be one-dimensional"),
                           ("ts_ns", last["ts_ns"] - 1, "'ts_ns' row 0: timestamps must not decrease")]:
        with pytest.raises(InputError, match=msg):
            eng.submit(dict(last, **{name: bad}))
    assert eng.seq == before[0]
    for k, v in before[1].items():
        np.testing.assert_array_equal(eng.book_l3()[k], v, err_msg=k)


def test_parallel_batches_reserved_in_full_do_not_shrink_and_grow_every_batch():
    """The parallel path sizes each pool for all its NEW rows of a batch (a stop costs a round
    of every chunk); a pool that holds far fewer orders at the batch's end must keep that room
    (BookStore._full_reserve), not be cut back and grown again every batch."""
    from hpte.engine.gen import generate_flow
    cols = generate_flow(262_144, n_books=2, seed=3)
    eng = Engine(threads=2, outputs="fills")
    eng.store.shrink_min_slots = 0
    eng.store.shrink_check_rows = 1
    for b in split_batches(cols, 65_536):
        eng.submit(b, copy=False)
    assert eng.store.shrinks == 0 and eng.store.relayouts <= 4, (eng.store.shrinks, eng.store.relayouts)
    one = Engine(outputs="fills")
    one.submit(cols)
    for k, v in one.book_l3().items():
        np.testing.assert_array_equal(eng.book_l3()[k], v, err_msg=k)
