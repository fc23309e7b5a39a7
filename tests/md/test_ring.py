"""The shared-memory SPSC ring: semantics against a deque model, policies, gaps, two processes."""
from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections import deque

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpte.engine import schema as S
from hpte.engine.md.ring import Ring, RingError, RingFullError, RingGapError, RingTimeoutError

COLS = [("ts_ns", np.int64), ("price_ticks", np.int64), ("side", np.int8), ("qty", np.uint32)]
_counter = iter(range(10**9))


def _name() -> str:
    return f"hpte_t{os.getpid()}_{next(_counter)}"


def rows(start: int, n: int) -> dict[str, np.ndarray]:
    """n records whose payload is a function of a running index (start..start+n-1)."""
    i = np.arange(start, start + n, dtype=np.int64)
    return {"ts_ns": i * 3 + 7, "price_ticks": (i * 2654435761) % 1000003 - 500000,
            "side": (i % 2 * 2 - 1).astype(np.int8), "qty": (i % 97 + 1).astype(np.uint32)}


# --- plain-Python reference model -----------------------------------------------------------------
class RingGap(Exception):
    pass


class RingModel:
    """A deque with the ring's push/pop semantics (capacity, sequence numbers, gap handling)."""

    def __init__(self, capacity: int, first_seq: int = 0, stop_on_gap: bool = True):
        self.cap = capacity
        self.q: deque = deque()
        self.next_seq = first_seq
        self.expect = first_seq
        self.stop_on_gap = stop_on_gap
        self.gaps = 0
        self.gap_got = None

    def try_push(self, recs: list[tuple], seqs: list[int] | None = None) -> int:
        k = min(len(recs), self.cap - len(self.q))
        for i in range(k):
            s = seqs[i] if seqs is not None else self.next_seq
            self.next_seq = (s + 1) % 2**64
            self.q.append((s, recs[i]))
        return k

    def push_fail(self, recs, seqs=None) -> int:
        if len(recs) > self.cap - len(self.q):
            raise RingFullError("full")
        return self.try_push(recs, seqs)

    def pop(self, max_n: int) -> list[tuple]:
        out = []
        while self.q and len(out) < max_n:
            s, r = self.q[0]
            if s != self.expect:
                if self.stop_on_gap:
                    if not out:
                        self.gap_got = s
                        raise RingGap(s)
                    break
                self.gaps += 1
            self.q.popleft()
            out.append((s, r))
            self.expect = (s + 1) % 2**64
        return out

    def skip_gap(self) -> None:
        self.expect = self.gap_got
        self.gaps += 1


def as_records(cols: dict[str, np.ndarray]) -> list[tuple]:
    names = [n for n, _ in COLS]
    return list(zip(*[cols[n].tolist() for n in names])) if len(cols[names[0]]) else []


# --- single process ---------------------------------------------------------------------------
def test_push_pop_wraparound():
    with Ring.create(_name(), 7, COLS, policy="fail") as r:
        model = RingModel(7)
        start = 0
        for push_n, pop_n in [(3, 2), (5, 4), (2, 6), (7, 7), (6, 1), (1, 9), (0, 3), (4, 0)]:
            b = rows(start, push_n)
            assert r.push(b) == push_n and model.push_fail(as_records(b)) == push_n
            start += push_n
            got = r.pop(pop_n)
            exp = model.pop(pop_n)
            assert got["seq"].tolist() == [s for s, _ in exp]
            assert as_records(got) == [rec for _, rec in exp]
            assert len(r) == len(model.q)
        assert r.tail == start and r.head == r.tail - len(r)


def test_pop_returns_seq_first_and_exact_dtypes():
    with Ring.create(_name(), 16, COLS) as r:
        r.push(rows(0, 5))
        b = r.pop()
        assert list(b) == ["seq"] + [n for n, _ in COLS]
        assert b["seq"].dtype == np.uint64 and [b[n].dtype for n, _ in COLS] == [np.dtype(t) for _, t in COLS]
        assert r.pop()["seq"].size == 0


def test_order_columns_layout_roundtrip():
    cols = [(n, t) for n, t, *_ in S.ORDER_COLUMNS]
    with Ring.create(_name(), 1000, S.ORDER_COLUMNS) as r:
        rng = np.random.default_rng(3)
        b = {n: rng.integers(0, 120, 333).astype(t) for n, t in cols}
        r.push(b)
        out = r.pop()
        for n, _ in cols:
            assert np.array_equal(out[n], b[n])


def test_fail_policy_is_all_or_nothing():
    with Ring.create(_name(), 8, COLS, policy="fail") as r:
        r.push(rows(0, 6))
        with pytest.raises(RingFullError, match="2 free slots for a batch of 3.*nothing was written"):
            r.push(rows(6, 3))
        assert len(r) == 6 and r.tail == 6
        with pytest.raises(RingFullError, match="can never fit"):
            r.push(rows(0, 9))
        assert r.try_push(rows(6, 3)) == 2  # try_push publishes what fits
        assert r.pop()["ts_ns"].tolist() == (np.arange(8) * 3 + 7).tolist()


def test_block_policy_times_out_with_clear_error():
    with Ring.create(_name(), 8, COLS, policy="block", timeout=0.05) as r:
        t = time.monotonic()
        with pytest.raises(RingTimeoutError, match=r"stayed full for 0.05 s.*5 of 13 records") as ei:
            r.push(rows(3, 13)) if r.push(rows(0, 3)) else None
        assert isinstance(ei.value, TimeoutError) and isinstance(ei.value, RingFullError)
        assert ei.value.pushed == 5 and time.monotonic() - t < 2
        assert r.pop()["seq"].tolist() == list(range(8))  # nothing overwritten


def test_block_policy_streams_batches_larger_than_capacity():
    # the consumer runs in a thread here (the kernels release the GIL); two processes below
    import threading

    with Ring.create(_name(), 5, COLS, policy="block", timeout=5.0) as r:
        got = []

        def consume():
            while sum(len(g) for g in got) < 1000:
                got.append(r.pop(3, timeout=1.0)["ts_ns"])

        th = threading.Thread(target=consume)
        th.start()
        assert r.push(rows(0, 1000)) == 1000
        th.join(10)
        assert np.concatenate(got).tolist() == (np.arange(1000) * 3 + 7).tolist()


def test_gap_detection_raise_then_skip():
    with Ring.create(_name(), 32, [("seq", np.uint64)] + COLS, first_seq=100) as r:
        b = rows(0, 6)
        b["seq"] = np.array([100, 101, 102, 105, 106, 107], dtype=np.uint64)
        r.push(b)
        first = r.pop(10)
        assert first["seq"].tolist() == [100, 101, 102]     # stops before the gap
        with pytest.raises(RingGapError, match="expected seq 103, got 105") as ei:
            r.pop(10)
        assert (ei.value.expected, ei.value.got) == (103, 105)
        with pytest.raises(RingGapError):  # nothing consumed: raises again
            r.pop(10)
        r.skip_gap()
        assert r.pop(10)["seq"].tolist() == [105, 106, 107] and r.gaps == 1
        assert r.expected_seq == 108


def test_gap_detection_count_mode_and_repeats():
    with Ring.create(_name(), 32, COLS, on_gap="count") as r:
        b = rows(0, 5)
        b["seq"] = np.array([0, 1, 1, 0, 9], dtype=np.uint64)  # a repeat, a step back and a gap
        r.push(b)
        assert r.pop()["seq"].tolist() == [0, 1, 1, 0, 9]
        assert r.gaps == 3 and r.expected_seq == 10


def test_declared_seq_column_is_required_and_auto_seq_continues():
    with Ring.create(_name(), 32, [("seq", np.uint64)] + COLS) as r:
        with pytest.raises(RingError, match="missing column 'seq'"):
            r.push(rows(0, 2))
    with Ring.create(_name(), 32, COLS, first_seq=2**64 - 2) as r:
        r.push(rows(0, 3))  # wraps around uint64
        assert r.pop()["seq"].tolist() == [2**64 - 2, 2**64 - 1, 0]


def test_bad_inputs_name_the_field():
    with pytest.raises(RingError, match="capacity"):
        Ring.create(_name(), 0, COLS)
    with pytest.raises(RingError, match="'note' has dtype <U3"):
        Ring.create(_name(), 4, [("note", "U3")])
    with pytest.raises(RingError, match="duplicate column 'a'"):
        Ring.create(_name(), 4, [("a", np.int8), ("a", np.int8)])
    with pytest.raises(RingError, match="'seq' is the ring's sequence column"):
        Ring.create(_name(), 4, [("seq", np.int64), ("a", np.int8)])
    with pytest.raises(RingError, match="does not exist"):
        Ring.attach(_name())
    with Ring.create(_name(), 4, COLS) as r:
        with pytest.raises(RingError, match="already exists"):
            Ring.create(r.name, 4, COLS)
        b = rows(0, 2)
        with pytest.raises(RingError, match="missing column 'qty'"):
            r.push({k: v for k, v in b.items() if k != "qty"})
        with pytest.raises(RingError, match="'side' has 1 rows, expected 2"):
            r.push({**b, "side": b["side"][:1]})
        with pytest.raises(RingError, match="'qty' row 1: value -1 does not fit uint32"):
            r.push({**b, "qty": np.array([1, -1])})
        with pytest.raises(RingError, match="'ts_ns' has dtype float64"):
            r.push({**b, "ts_ns": np.array([1.5, 2.0])})
        assert len(r) == 0
    r.close()
    with pytest.raises(RingError, match="closed"):
        r.pop()


def test_attach_sees_layout_and_data_and_finish():
    with Ring.create(_name(), 64, COLS) as prod, Ring.attach(prod.name) as cons:
        assert cons.columns == prod.columns and cons.capacity == 64
        prod.push(rows(0, 10))
        prod.push(rows(10, 5))
        prod.finish()
        with pytest.raises(RingError, match="finished"):
            prod.push(rows(0, 1))
        batches = list(cons)
        assert np.concatenate([b["ts_ns"] for b in batches]).tolist() == (np.arange(15) * 3 + 7).tolist()
        assert cons.finished and cons.pop(timeout=None)["seq"].size == 0


def test_pop_into_preallocated():
    with Ring.create(_name(), 16, COLS) as r:
        r.push(rows(0, 12))
        out = {"seq": np.empty(5, np.uint64), **{n: np.empty(5, t) for n, t in COLS}}
        assert r.pop_into(out) == 5 and out["ts_ns"].tolist() == (np.arange(5) * 3 + 7).tolist()
        with pytest.raises(RingError, match=r"out\['qty'\] must be"):
            r.pop_into({**out, "qty": np.empty(5, np.int64)})


# --- differential: arbitrary interleavings against the deque model --------------------------------
op = st.one_of(
    st.tuples(st.just("push"), st.integers(0, 12)),
    st.tuples(st.just("push_fail"), st.integers(0, 12)),
    st.tuples(st.just("push_seq"), st.integers(0, 6), st.integers(0, 3)),  # explicit seq, jump 0..3
    st.tuples(st.just("pop"), st.integers(0, 12)),
)


@settings(max_examples=150)
@given(cap=st.integers(1, 11), ops=st.lists(op, max_size=40), stop_on_gap=st.booleans())
def test_ring_matches_deque_model(cap, ops, stop_on_gap):
    model = RingModel(cap, stop_on_gap=stop_on_gap)
    with Ring.create(_name(), cap, COLS, policy="fail", on_gap="raise" if stop_on_gap else "count") as r:
        src = 0
        for o in ops:
            kind = o[0]
            if kind in ("push", "push_fail", "push_seq"):
                b = rows(src, o[1])
                src += o[1]
                seqs = None
                if kind == "push_seq":
                    base = model.next_seq + o[2]
                    seqs = list(range(base, base + o[1]))
                    b["seq"] = np.array(seqs, dtype=np.uint64)
                if kind == "push_fail":
                    try:
                        exp = model.push_fail(as_records(b))
                    except RingFullError:
                        with pytest.raises(RingFullError):
                            r.push(b)
                        continue
                    assert r.push(b) == exp
                else:
                    assert r.try_push(b) == model.try_push(as_records(b), seqs)
            else:
                try:
                    exp = model.pop(o[1])
                except RingGap:
                    with pytest.raises(RingGapError):
                        r.pop(o[1])
                    r.skip_gap()
                    model.skip_gap()
                    continue
                got = r.pop(o[1])
                assert got["seq"].tolist() == [s for s, _ in exp]
                assert as_records(got) == [rec for _, rec in exp]
            assert len(r) == len(model.q)
            assert r.gaps == model.gaps and r.expected_seq == model.expect


# --- two real processes ---------------------------------------------------------------------------
def _checksum(b: dict[str, np.ndarray]) -> int:
    return int(np.sum(b["price_ticks"].astype(np.uint64) * np.uint64(31) + b["qty"], dtype=np.uint64))


def _producer(name: str, total: int, seed: int, result) -> None:
    """Spawned process: push `total` records in random-sized batches, then report a checksum."""
    rng = np.random.default_rng(seed)
    csum = 0
    with Ring.attach(name, policy="block", timeout=30.0) as r:
        sent = 0
        while sent < total:
            k = min(int(rng.integers(1, 40_000)), total - sent)
            b = rows(sent, k)
            r.push(b)
            csum = (csum + _checksum(b)) % 2**64
            sent += k
        r.finish()
    result.put(csum)


def test_two_processes_stream_2m_records_in_order():
    # 2M records through a 64K-slot ring: ~30 wraps, pops of random size (large streams:
    # bench/bench_ring.py)
    total = 2_000_000
    ctx = mp.get_context("spawn")
    result = ctx.Queue()
    with Ring.create(_name(), 1 << 16, COLS, policy="block") as r:
        p = ctx.Process(target=_producer, args=(r.name, total, 7, result))
        p.start()
        rng = np.random.default_rng(8)
        got = 0
        csum = 0
        deadline = time.monotonic() + 120
        try:
            while True:
                b = r.pop(int(rng.integers(1, 50_000)), timeout=0.2)
                k = len(b["seq"])
                if k:
                    # in order, nothing lost: seq (checked by the ring too) and the payload's index
                    assert b["seq"][0] == got and b["seq"][-1] == got + k - 1
                    assert np.array_equal(b["ts_ns"], np.arange(got, got + k, dtype=np.int64) * 3 + 7)
                    csum = (csum + _checksum(b)) % 2**64
                    got += k
                elif r.finished:
                    break
                elif p.exitcode not in (None, 0) or time.monotonic() > deadline:
                    pytest.fail(f"producer exited with {p.exitcode} after {got} records")
            assert got == total and r.gaps == 0 and r.expected_seq == total
            assert result.get(timeout=30) == csum
        finally:
            p.join(30)
            if p.is_alive():
                p.kill()
        assert p.exitcode == 0
