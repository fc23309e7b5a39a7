"""Benchmark: ITCH 5.0 decoding to SoA columns (hpte.engine.md.itch.read_itch) vs a plain-Python
``struct`` parser, in one run.

Builds a large synthetic ITCH file of mixed order-flow messages in a temporary folder (never
in the repository; removed afterwards unless --keep), reads it once to warm the page cache,
then times ``read_itch`` (memory map, frame index, per-type decode into columns) and the
plain-Python parser on a slice, and prints GB/s, messages/s and their ratio.

    .venv/bin/python bench/bench_itch.py                 # ~8M messages, ~300 MB
    .venv/bin/python bench/bench_itch.py --messages 2e6 --gzip
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import struct
import tempfile
import time
from pathlib import Path

import numpy as np

from hpte.engine.md import itch as I
from hpte.kernels.md import itch as K

# Message mix (fraction of messages), roughly a NASDAQ day's order flow.
MIX = {"A": 0.38, "F": 0.02, "D": 0.30, "U": 0.10, "X": 0.04, "E": 0.08, "C": 0.01, "P": 0.03,
       "I": 0.02, "L": 0.01, "H": 0.005, "Y": 0.005}

_STOCKS = np.array([b"AAPL", b"MSFT", b"TSLA", b"SPY", b"QQQ", b"NVDA", b"AMZN", b"META"], dtype="S8")


def synthetic_tables(n_messages: int, seed: int = 7) -> dict[str, dict[str, np.ndarray]]:
    """Random but well-formed columns for the message mix; ``seq`` interleaves the types."""
    rng = np.random.default_rng(seed)
    letters = list(MIX)
    p = np.array([MIX[k] for k in letters])
    kinds = rng.choice(len(letters), size=n_messages, p=p / p.sum())
    ts = np.sort(rng.integers(4 * 3600 * 10**9, 20 * 3600 * 10**9, n_messages))
    tables = {}
    for i, letter in enumerate(letters):
        seq = np.flatnonzero(kinds == i)
        n = len(seq)
        lay = I.BY_LETTER[letter]
        cols = {"seq": seq}
        for f in lay.fields:
            if f.name == "timestamp":
                cols[f.name] = ts[seq]
            elif f.name == "stock":
                cols[f.name] = _STOCKS[rng.integers(0, len(_STOCKS), n)]
            elif f.kind == K.K_ALPHA:
                cols[f.name] = rng.choice(np.array([b"B", b"S", b"Y", b"N"]), n).astype(f"S{f.size}")
            elif f.kind == K.K_U16:
                cols[f.name] = rng.integers(0, 1 << 16, n, dtype=np.uint16)
            elif f.kind in (K.K_U32, K.K_PRICE4):
                cols[f.name] = rng.integers(0, 1 << 31, n, dtype=np.int64)
            else:
                cols[f.name] = rng.integers(0, 1 << 62, n, dtype=np.int64)
        tables[letter] = cols
    return tables


def _struct_parser():
    """A plain-Python parser: struct.unpack_from per message into per-type lists of tuples."""
    codes = {"u16": "H", "u32": "I", "u64": "Q", "ts48": "6s", "p4": "I", "p8": "q"}
    formats = {}
    for lay in I.LAYOUTS:
        fmt = ">" + "".join(codes.get(f.code, f"{f.size}s") for f in lay.fields)
        ts_index = [f.name for f in lay.fields].index("timestamp")
        formats[lay.code] = (struct.Struct(fmt), ts_index)

    def parse(data: bytes) -> dict[int, list]:
        out: dict[int, list] = {}
        pos, n = 0, len(data)
        from_bytes = int.from_bytes
        while pos < n:
            length = (data[pos] << 8) | data[pos + 1]
            t = data[pos + 2]
            st, ti = formats[t]
            row = list(st.unpack_from(data, pos + 3))
            row[ti] = from_bytes(row[ti], "big")
            out.setdefault(t, []).append(row)
            pos += 2 + length
        return out

    return parse


def _slice_frames(data: bytes, n_messages: int) -> bytes:
    pos = 0
    for _ in range(n_messages):
        if pos >= len(data):
            break
        pos += 2 + ((data[pos] << 8) | data[pos + 1])
    return data[:pos]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=float, default=8e6, help="messages in the synthetic file")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs of read_itch (best and median reported)")
    ap.add_argument("--ref-messages", type=float, default=3e5, help="messages in the slice for the struct parser")
    ap.add_argument("--gzip", action="store_true", help="also time the same file gzip-compressed")
    ap.add_argument("--dir", default=None, help="folder for the file (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the file")
    args = ap.parse_args()
    n_msgs = int(args.messages)

    tmp = tempfile.TemporaryDirectory(dir=args.dir) if not args.keep else None
    folder = Path(tmp.name if tmp else (args.dir or tempfile.mkdtemp()))
    path = folder / "synthetic.itch"
    t0 = time.perf_counter()
    I.write_itch(path, synthetic_tables(n_msgs))
    t_build = time.perf_counter() - t0
    size = path.stat().st_size
    print(f"file: {path} ({size / 1e6:.1f} MB, {n_msgs:,} messages; built and encoded in {t_build:.2f} s,"
          f" encoder {size / t_build / 1e9:.2f} GB/s incl. generation)")

    # Flush the new file to disk (mapping pages still under writeback blocks), then warm the
    # page cache and the JIT (compile or load the cached kernels).
    with open(path, "rb+") as f:
        os.fsync(f.fileno())
    with open(path, "rb") as f:
        while f.read(64 << 20):
            pass
    I.parse_itch(_slice_frames(path.read_bytes()[:1 << 20], 1000))

    times, cpu = [], []
    for _ in range(args.repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        d = I.read_itch(path)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        assert d.messages == n_msgs
        del d
    best, med, best_cpu = min(times), statistics.median(times), min(cpu)
    gbs, mps = size / best / 1e9, n_msgs / best
    print(f"read_itch (mmap -> columns), 1 thread: best {best:.3f} s, median {med:.3f} s:"
          f" {gbs:.2f} GB/s, {mps / 1e6:.1f} M msg/s (median {size / med / 1e9:.2f} GB/s;"
          f" per CPU-second {size / best_cpu / 1e9:.2f} GB/s, load average {os.getloadavg()[0]:.1f}"
          f" on {os.cpu_count()} CPUs)")

    data = path.read_bytes()
    sl = _slice_frames(data, int(args.ref_messages))
    parse = _struct_parser()
    t0 = time.perf_counter()
    ref = parse(sl)
    t_ref = time.perf_counter() - t0
    n_ref = sum(len(v) for v in ref.values())
    ref_gbs, ref_mps = len(sl) / t_ref / 1e9, n_ref / t_ref
    t0 = time.perf_counter()
    I.parse_itch(sl)
    t_slice = time.perf_counter() - t0
    print(f"plain-Python struct parser on the first {n_ref:,} messages ({len(sl) / 1e6:.1f} MB): {t_ref:.3f} s:"
          f" {ref_gbs * 1e3:.1f} MB/s, {ref_mps / 1e6:.3f} M msg/s")
    print(f"speed-up of read_itch over struct: {gbs / ref_gbs:.0f}x (whole file, best) ;"
          f" parse_itch on the same slice {t_slice:.4f} s = {t_ref / t_slice:.0f}x")
    result = {"file_bytes": size, "messages": n_msgs, "best_s": best, "median_s": med, "gb_per_s": gbs,
              "messages_per_s": mps, "struct_gb_per_s": ref_gbs, "struct_messages_per_s": ref_mps,
              "speedup": gbs / ref_gbs, "best_cpu_s": best_cpu, "gb_per_cpu_s": size / best_cpu / 1e9, "cpu": platform.processor() or platform.machine(),
              "threads": 1, "numba_threads_env": os.environ.get("NUMBA_NUM_THREADS")}

    if args.gzip:
        gz = folder / "synthetic.itch.gz"
        t0 = time.perf_counter()
        I.write_itch(gz, I.read_itch(path))
        t_gzw = time.perf_counter() - t0
        t0 = time.perf_counter()
        d = I.read_itch(gz)
        t_gz = time.perf_counter() - t0
        assert d.messages == n_msgs
        print(f"gzip ({gz.stat().st_size / 1e6:.1f} MB, written in {t_gzw:.1f} s): read_itch {t_gz:.2f} s ="
              f" {size / t_gz / 1e9:.2f} GB/s of decompressed stream")
        result["gzip_gb_per_s"] = size / t_gz / 1e9
    print(json.dumps(result))
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
