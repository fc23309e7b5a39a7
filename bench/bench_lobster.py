"""Benchmark: LOBSTER replay of the real AMZN 2012-06-21 level-5 day through the engine
(hpte.engine.md.lobster) vs a plain-Python dict-based L2 replay, in one run.

Times, best of --repeat runs each (the kernels are loaded before the clock starts):

* reading the message file (155,935 rows) and the orderbook file into columns;
* ``replay(messages, 5, orderbook)``: plan, Engine.submit, top 5 after every message from the
  engine's L2 deltas, with the edge-level learning rule and the row-by-row comparison;
* ``replay(messages, 5)`` without the orderbook file;
* formatting the 155,935 rows as the orderbook file's bytes;
* end to end, file to file, like ``hpte md lobster replay ... --orderbook ... --out ...``.

The baseline is the same job in plain Python on the first --ref-messages messages: ``csv``
parsing, a dict price -> quantity per side, the top 5 per row by ``heapq``, the same
learning rule (levels beyond the previous row's 5th), and ``",".join`` formatting. Both
must reproduce the orderbook file (checked). Ratios are messages/s over messages/s.

    .venv/bin/python bench/bench_lobster.py
    .venv/bin/python bench/bench_lobster.py --repeat 9 --ref-messages 40000 --json out.json
"""
from __future__ import annotations

import argparse
import csv
import heapq
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from hpte.engine.md import lobster as L

DAY = "lobster_AMZN_2012-06-21_level5"
MSG = "AMZN_2012-06-21_34200000_57600000_message_5.csv"
OB = "AMZN_2012-06-21_34200000_57600000_orderbook_5.csv"


def data_dir() -> Path:
    env = os.environ.get("HPTE_DATA")
    return (Path(env) if env else Path(__file__).resolve().parent.parent.parent / "shared" / "data") / DAY


def timed(fn, repeat: int):
    """(best seconds, median seconds, the best run's result)."""
    times, best = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
        if times[-1] == min(times):
            best = out
    return min(times), statistics.median(times), best


# ---------------------------------------------------------------------------------------------
# Plain-Python baseline
# ---------------------------------------------------------------------------------------------
def py_read(path: Path, n: int) -> list[list[str]]:
    with open(path, newline="") as f:
        out = []
        for row in csv.reader(f):
            out.append(row)
            if len(out) == n:
                break
    return out


def py_replay(msg_rows: list[list[str]], ob_rows: list[list[str]], N: int) -> list[str]:
    """Dict-based L2 replay with the same edge-level learning rule; returns the CSV lines."""
    books = {1: {}, -1: {}}  # side -> {price: qty}
    worst = {1: None, -1: None}  # previous row's N-th price; None = whole side learnable / nothing
    learn_all = True
    lines = []
    for i, m in enumerate(msg_rows):
        sec, _, frac = m[0].partition(".")
        _ts = int(sec) * 1_000_000_000 + int((frac + "000000000")[:9])
        typ, size, px, d = int(m[1]), int(m[3]), int(m[4]), int(m[5])
        book = books[d]
        if typ == 1:
            book[px] = book.get(px, 0) + size
        elif 2 <= typ <= 4:
            q = book.get(px, 0) - size
            if q > 0:
                book[px] = q
            else:
                book.pop(px, None)
        e = [int(x) for x in ob_rows[i]]
        row_tops = {}
        for side, pc, qc, empty in ((1, 2, 3, L.EMPTY_BID_PX), (-1, 0, 1, L.EMPTY_ASK_PX)):
            book = books[side]
            w = worst[side]

            def region(p, side=side, w=w):
                if learn_all:
                    return True
                if w is None:
                    return False
                return p < w if side == 1 else p > w
            file_levels = {e[4 * k + pc]: e[4 * k + qc] for k in range(N) if e[4 * k + pc] != empty}
            for p, q in file_levels.items():
                if region(p) and book.get(p, 0) != q:
                    book[p] = q
            while True:
                top = heapq.nlargest(N, book) if side == 1 else heapq.nsmallest(N, book)
                stale = [p for p in top if region(p) and p not in file_levels]
                if not stale:
                    break
                del book[stale[0]]
            row_tops[side] = top
            worst[side] = top[N - 1] if len(top) == N else None
        learn_all = False
        cells = []
        for k in range(N):
            a = row_tops[-1][k] if k < len(row_tops[-1]) else None
            b = row_tops[1][k] if k < len(row_tops[1]) else None
            cells += [str(a) if a is not None else str(L.EMPTY_ASK_PX), str(books[-1][a]) if a is not None else "0",
                      str(b) if b is not None else str(L.EMPTY_BID_PX), str(books[1][b]) if b is not None else "0"]
        lines.append(",".join(cells))
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per measurement (best and median)")
    ap.add_argument("--ref-messages", type=int, default=20_000, help="messages in the plain-Python prefix")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args()

    d = data_dir()
    msg_path, ob_path = d / MSG, d / OB
    if not msg_path.is_file():
        raise SystemExit(f"{msg_path} is absent (set HPTE_DATA to the folder holding shared/data)")
    L.warm_up()
    ob_bytes = ob_path.read_bytes()
    _ = msg_path.read_bytes()  # page cache

    t_msg, t_msg_med, msgs = timed(lambda: L.read_messages(msg_path), args.repeat)
    t_ob, t_ob_med, book = timed(lambda: L.read_orderbook(ob_path), args.repeat)
    n = len(msgs)
    t_rep, t_rep_med, res = timed(lambda: L.replay(msgs, 5, book), args.repeat)
    assert res.mismatched_rows == 0, "the replay must reproduce the orderbook file"
    t_rep0, t_rep0_med, res0 = timed(lambda: L.replay(msgs, 5), args.repeat)
    t_fmt, t_fmt_med, text = timed(lambda: L.format_orderbook(res.rows), args.repeat)
    assert text == ob_bytes
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "book.csv"

        def end_to_end():
            r = L.replay(L.read_messages(msg_path), 5, L.read_orderbook(ob_path))
            L.write_orderbook(out, r.rows)
            return r
        t_e2e, t_e2e_med, _ = timed(end_to_end, args.repeat)
        assert out.read_bytes() == ob_bytes

    # plain-Python baseline on a prefix
    m = min(args.ref_messages, n)
    py_repeat = max(1, min(3, args.repeat))
    t_py_read, _, (py_msgs, py_ob) = timed(lambda: (py_read(msg_path, m), py_read(ob_path, m)), py_repeat)
    t_py_rep, _, py_lines = timed(lambda: py_replay(py_msgs, py_ob, 5), py_repeat)
    py_text = ("\n".join(py_lines) + "\n").encode()
    assert py_text == b"".join(ob_bytes.splitlines(keepends=True)[:m]), "the Python baseline must match the file"
    py_rate = m / t_py_rep
    py_e2e_rate = m / (t_py_read + t_py_rep)

    rate = n / t_rep
    rate0 = n / t_rep0
    e2e_rate = n / t_e2e
    st = res.stats
    result = {
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(), "platform": platform.platform()},
        "messages": n, "levels": 5,
        "read_messages_s": t_msg, "read_orderbook_s": t_ob,
        "replay_s": t_rep, "replay_median_s": t_rep_med, "replay_messages_per_s": rate,
        "replay_phases_s": res.seconds,
        "replay_no_orderbook_s": t_rep0, "replay_no_orderbook_messages_per_s": rate0,
        "format_s": t_fmt, "end_to_end_s": t_e2e, "end_to_end_median_s": t_e2e_med, "end_to_end_messages_per_s": e2e_rate,
        "learned_levels": res.learned_levels, "learned_rows": st["learned_rows"], "engine_rows": st["engine_rows"],
        "engine_calls": st["engine_calls"], "mismatched_rows": res.mismatched_rows,
        "python_messages": m, "python_replay_s": t_py_rep, "python_replay_messages_per_s": py_rate,
        "python_end_to_end_messages_per_s": py_e2e_rate,
        "ratio_replay": rate / py_rate, "ratio_end_to_end": e2e_rate / py_e2e_rate,
        "repeat": args.repeat,
    }
    print(f"AMZN 2012-06-21 level 5: {n:,} messages (best of {args.repeat})")
    print(f"  read messages   {t_msg * 1e3:8.1f} ms   {n / t_msg / 1e6:6.2f} M rows/s")
    print(f"  read orderbook  {t_ob * 1e3:8.1f} ms   {n / t_ob / 1e6:6.2f} M rows/s")
    print(f"  replay + learn  {t_rep * 1e3:8.1f} ms   {rate / 1e6:6.2f} M messages/s  (median {t_rep_med * 1e3:.1f} ms; "
          + ", ".join(f"{k} {v * 1e3:.1f}" for k, v in res.seconds.items()) + " ms)")
    print(f"  replay, no file {t_rep0 * 1e3:8.1f} ms   {rate0 / 1e6:6.2f} M messages/s")
    print(f"  format rows     {t_fmt * 1e3:8.1f} ms   {len(text) / t_fmt / 1e9:6.2f} GB/s")
    print(f"  file to file    {t_e2e * 1e3:8.1f} ms   {e2e_rate / 1e6:6.2f} M messages/s  (median {t_e2e_med * 1e3:.1f} ms)")
    print(f"  learned {res.learned_levels:,} levels on {st['learned_rows']:,} rows; {st['engine_rows']:,} engine rows "
          f"in {st['engine_calls']} Engine.submit calls; rows equal to the file: {n - res.mismatched_rows:,}/{n:,}")
    print(f"plain Python (best of {py_repeat}), first {m:,} messages: replay {t_py_rep:.3f} s = {py_rate / 1e3:.1f} k messages/s; "
          f"with csv parsing {py_e2e_rate / 1e3:.1f} k messages/s")
    print(f"ratio hpte / Python: replay {rate / py_rate:.0f}x, file to file {e2e_rate / py_e2e_rate:.0f}x")
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
