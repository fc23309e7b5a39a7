"""Device resolution (engine/device.py), ``--device`` on the CLI, ``hpte bench``, and the checks of
the GPU path that need no GPU: its NumPy helpers, the simulator suite (tests/test_cuda_sim.py in
a child process with NUMBA_ENABLE_CUDASIM=1) and the PTX compile of the CUDA kernel (NVVM only).
"""
from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numba
import numpy as np
import pytest
from typer.testing import CliRunner

from hpte.cli.main import app
from hpte.engine import device as D
from hpte.engine import io, schema as S
from hpte.engine.device import DeviceError, DeviceInfo, resolve_device

REPO = Path(__file__).resolve().parent.parent
SIM = bool(numba.config.ENABLE_CUDASIM)
runner = CliRunner()


def _has_real_gpu() -> bool:
    try:
        return not resolve_device("gpu").simulator
    except DeviceError:
        return False


HAS_GPU = _has_real_gpu()
no_gpu_here = pytest.mark.skipif(HAS_GPU or SIM, reason="this machine has a GPU (or the simulator is on)")


# ---------------------------------------------------------------------------------------------
# resolve_device with faked probes: every missing piece has its own message
# ---------------------------------------------------------------------------------------------
class FakeCupy:
    def __init__(self, count=1, error=None):
        def get_count():
            if error:
                raise RuntimeError(error)
            return count
        props = {"name": b"Fake H100"}
        self.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(
            getDeviceCount=get_count, getDeviceProperties=lambda i: props))


@pytest.fixture
def probes(monkeypatch):
    """Set the three probes: probes(numba="gpu"|"none"|"sim", cupy=FakeCupy()|None)."""
    def set_(numba="gpu", cupy=None):
        monkeypatch.setattr(D, "probe_numba_cuda", lambda: (numba, f"numba says {numba}"))
        monkeypatch.setattr(D, "probe_cupy", lambda: (cupy, "CuPy imported") if cupy is not None
                            else (None, "CuPy is not installed (No module named 'cupy'); pip install 'hpte[gpu]'"))
    return set_


def test_cpu_always_resolves():
    assert resolve_device("cpu") == DeviceInfo("cpu", "requested")


@pytest.mark.parametrize("bad", ["GPU", "cuda", "", "tpu"])
def test_unknown_device_is_a_value_error(bad):
    with pytest.raises(ValueError, match="device must be one of auto, cpu, gpu"):
        resolve_device(bad)


def test_gpu_needs_numba_cuda_driver(probes):
    probes(numba="none")
    with pytest.raises(DeviceError, match="--device gpu: numba says none"):
        resolve_device("gpu")
    info = resolve_device("auto")
    assert info.kind == "cpu" and info.reason == "auto: no GPU: numba says none"


def test_gpu_needs_cupy(probes):
    probes(numba="gpu", cupy=None)
    with pytest.raises(DeviceError, match="CuPy is not installed"):
        resolve_device("gpu")
    assert "CuPy is not installed" in resolve_device("auto").reason


@pytest.mark.parametrize("cupy, message", [
    (FakeCupy(count=0), "device count 0"),
    (FakeCupy(error="cudaErrorInsufficientDriver: CUDA driver version is insufficient"), "cudaErrorInsufficientDriver"),
])
def test_gpu_needs_a_device(probes, cupy, message):
    probes(numba="gpu", cupy=cupy)
    with pytest.raises(DeviceError, match=f"CuPy sees no CUDA device.*{message}"):
        resolve_device("gpu")
    assert resolve_device("auto").kind == "cpu"


def test_gpu_and_auto_with_everything_there(probes):
    probes(numba="gpu", cupy=FakeCupy(count=2))
    info = resolve_device("gpu")
    assert info == DeviceInfo("gpu", "CUDA device 0 of 2: Fake H100", name="Fake H100")
    auto = resolve_device("auto")
    assert auto.kind == "gpu" and auto.reason.startswith("auto: CUDA device 0 of 2")


def test_simulator_is_gpu_only_when_asked(probes):
    probes(numba="sim")
    info = resolve_device("gpu")
    assert info.kind == "gpu" and info.simulator and "NumPy stands in for CuPy" in info.reason
    auto = resolve_device("auto")
    assert auto.kind == "cpu" and "simulator" in auto.reason


# ---------------------------------------------------------------------------------------------
# the real machine (CI has no GPU)
# ---------------------------------------------------------------------------------------------
@no_gpu_here
def test_real_probes_without_a_gpu():
    with pytest.raises(DeviceError, match=r"^--device gpu: "):
        resolve_device("gpu")
    from hpte.engine.engine import Engine
    with pytest.raises(DeviceError):
        Engine(device="gpu")
    eng = Engine(device="auto")
    assert eng.device == "cpu" and eng.device_info.reason.startswith("auto: no GPU: ")
    assert eng._gpu is None


def test_gpu_modules_are_imported_lazily():
    code = textwrap.dedent("""
        import sys
        import hpte.engine, hpte.engine.engine, hpte.engine.pipeline, hpte.engine.device, hpte.cli.main
        from hpte.engine.engine import Engine
        import numpy as np
        Engine().submit({"ts_ns": np.array([1]), "order_id": np.array([1], np.uint64), "side": np.array([1], np.int8),
                         "price_ticks": np.array([10]), "qty": np.array([1])})
        Engine(device="cpu")
        bad = [m for m in ("cupy", "numba.cuda", "hpte.engine.gpu", "hpte.kernels.match_cuda") if m in sys.modules]
        print("LOADED", bad)
    """)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert "LOADED []" in r.stdout, r.stdout


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def orders(tmp_path_factory):
    from hpte.engine.gen import generate_flow
    p = tmp_path_factory.mktemp("dev") / "orders.parquet"
    io.write_columns(p, generate_flow(3000, n_books=3, seed=2), S.ORDER_SCHEMA)
    return p


def _one_line_error(r, prefix):
    out = r.output.strip()
    assert r.exit_code == 1, out
    assert len(out.splitlines()) == 1 and out.startswith(prefix) and "Traceback" not in out, out
    return out


@pytest.mark.parametrize("cmd", ["match", "demo"])
@pytest.mark.parametrize("numba_mode, cupy, message", [
    ("none", None, "numba says none"),
    ("gpu", None, "CuPy is not installed"),
    ("gpu", FakeCupy(count=0), "CuPy sees no CUDA device"),
])
def test_cli_device_gpu_missing_pieces(probes, orders, tmp_path, cmd, numba_mode, cupy, message):
    probes(numba=numba_mode, cupy=cupy)
    args = (["match", str(orders), "--fills", str(tmp_path / "f.parquet")] if cmd == "match"
            else ["demo", "--out", str(tmp_path / "d"), "-n", "100"])
    out = _one_line_error(runner.invoke(app, args + ["--device", "gpu"]), f"hpte {cmd}: error: --device gpu: ")
    assert message in out
    assert not (tmp_path / "f.parquet").exists() and not (tmp_path / "d").exists()


@pytest.mark.parametrize("cmd", ["match", "demo", "bench"])
def test_cli_unknown_device(orders, tmp_path, cmd):
    args = {"match": ["match", str(orders), "--fills", str(tmp_path / "f.parquet")],
            "demo": ["demo", "--out", str(tmp_path / "d")],
            "bench": ["bench", "--out", str(tmp_path / "b")]}[cmd]
    _one_line_error(runner.invoke(app, args + ["--device", "tpu"]), f"hpte {cmd}: error: --device must be one of auto, cpu, gpu")


@no_gpu_here
def test_cli_device_gpu_without_a_gpu_subprocess(orders, tmp_path):
    """The real console path on a machine without a GPU: one line on stderr, exit 1."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    r = subprocess.run([sys.executable, "-m", "hpte", "match", str(orders), "--fills", str(tmp_path / "f.parquet"),
                        "--device", "gpu"], capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    assert r.returncode == 1
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hpte match: error: --device gpu: "), r.stderr
    assert r.stdout == ""


@no_gpu_here
def test_cli_device_auto_falls_back_and_says_why(orders, tmp_path):
    r = runner.invoke(app, ["match", str(orders), "--fills", str(tmp_path / "f.parquet"), "--device", "auto", "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.output.strip().splitlines()[-1])
    assert s["device"] == "cpu" and s["device_reason"].startswith("auto: no GPU: ")
    r = runner.invoke(app, ["match", str(orders), "--fills", str(tmp_path / "f.parquet"), "--device", "auto"])
    assert re.search(r"^device\s+cpu \(auto: no GPU: ", r.output, re.M), r.output


def test_cli_device_cpu_is_the_default(orders, tmp_path):
    r = runner.invoke(app, ["match", str(orders), "--fills", str(tmp_path / "f.parquet"), "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.output.strip().splitlines()[-1])
    assert (s["device"], s["device_reason"]) == ("cpu", "requested")


# ---------------------------------------------------------------------------------------------
# hpte bench (CPU side; the GPU side runs under the simulator in tests/test_cuda_sim.py)
# ---------------------------------------------------------------------------------------------
def test_bench_cpu_side_writes_csv_and_plot(tmp_path):
    out = tmp_path / "b"
    r = runner.invoke(app, ["bench", "--out", str(out), "--device", "cpu", "--books", "1,3",
                            "--batch-sizes", "64,500", "--events", "1500"])
    assert r.exit_code == 0, r.output
    assert "GPU side not run: --device cpu" in r.output
    with (out / "bench.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(x["device"], x["books"], x["batch_size"]) for x in rows] == [
        ("cpu", "1", "64"), ("cpu", "1", "500"), ("cpu", "3", "64"), ("cpu", "3", "500")]
    assert all(float(x["events_per_s"]) > 0 and x["events"] == "1500" for x in rows)
    assert (out / "bench.png").read_bytes()[:4] == b"\x89PNG"
    table = r.output[r.output.index("books     batch"):]
    assert len(re.findall(r"\d\s+not run\s", table)) == 4     # the GPU column of every row


@no_gpu_here
def test_bench_auto_without_gpu_runs_cpu_and_says_so(tmp_path):
    r = runner.invoke(app, ["bench", "--out", str(tmp_path), "--books", "2", "--batch-sizes", "100",
                            "--events", "300"])
    assert r.exit_code == 0, r.output
    assert "GPU side not run: auto: no GPU: " in r.output
    r = runner.invoke(app, ["bench", "--out", str(tmp_path), "--device", "gpu", "--events", "300"])
    _one_line_error(r, "hpte bench: error: --device gpu: ")


@pytest.mark.parametrize("args, message", [
    (["--books", "1,x"], "--books must be a comma-separated list of integers"),
    (["--batch-sizes", "0"], "--batch-sizes values must be at least 1"),
    (["--events", "0"], "--events must be at least 1"),
    (["--cpu-threads", "0"], "--cpu-threads must be at least 1"),
])
def test_bench_bad_options(tmp_path, args, message):
    out = _one_line_error(runner.invoke(app, ["bench", "--out", str(tmp_path)] + args), "hpte bench: error: ")
    assert message in out


def test_bench_crossover():
    from hpte.engine.bench import BenchResult
    rows = [{"device": d, "books": b, "batch_size": 10, "events_per_s": v}
            for d, b, v in (("cpu", 1, 9.0), ("cpu", 10, 5.0), ("cpu", 100, 4.0),
                            ("gpu", 1, 0.1), ("gpu", 10, 2.0), ("gpu", 100, 4.0))]
    res = BenchResult(rows=rows, gpu=DeviceInfo("gpu", "fake"))
    assert res.crossovers() == {10: 100}
    res.rows[-1]["events_per_s"] = 3.9
    assert res.crossovers() == {10: None}
    assert BenchResult(rows=rows).crossovers() == {}


# ---------------------------------------------------------------------------------------------
# engine/gpu.py's xp helpers, with NumPy
# ---------------------------------------------------------------------------------------------
def test_grow_outputs_xp_matches_the_cpu_grow(rng):
    from hpte.engine.book_state import alloc_outputs, grow_outputs, region_starts
    from hpte.engine.gpu import alloc_outputs_xp, grow_outputs_xp
    caps = rng.integers(0, 6, (7, 3))
    O = alloc_outputs_xp(np, caps)
    assert (O.cap - region_starts(O) == caps).all()
    for f in ("F", "E", "D"):
        getattr(O, f)[:] = np.arange(getattr(O, f).size).reshape(getattr(O, f).shape)
    O.cur[:] += rng.integers(0, caps + 1)             # some rows used in every region
    regions = np.array([1, 4, 6])
    need = rng.integers(0, 20, (3, 3))
    G = grow_outputs_xp(np, O, regions, need)
    Ref = alloc_outputs(caps)
    Ref = Ref._replace(F=O.F.copy(), E=O.E.copy(), D=O.D.copy(), cur=O.cur.copy())
    for r, nd in zip(regions, need):
        Ref = grow_outputs(Ref, int(r), nd)
    gs, rs = region_starts(G), region_starts(Ref)
    assert (G.cur - gs == Ref.cur - rs).all()        # same rows used per region
    assert ((G.cap - G.cur)[regions] >= need).all()  # room made where asked
    for k, f in enumerate(("F", "E", "D")):
        for r in range(len(caps)):
            used = int(G.cur[r, k] - gs[r, k])
            np.testing.assert_array_equal(getattr(G, f)[gs[r, k]:gs[r, k] + used],
                                          getattr(Ref, f)[rs[r, k]:rs[r, k] + used])


def test_segments():
    from hpte.engine.gpu import _segments
    seg, off = _segments(np, np.array([2, 0, 3, 1]), 6)
    assert seg.tolist() == [0, 0, 2, 2, 2, 3] and off.tolist() == [0, 1, 0, 1, 2, 0]


# ---------------------------------------------------------------------------------------------
# No GPU needed: the simulator suite (child process) and the PTX compile check
# ---------------------------------------------------------------------------------------------
@pytest.mark.skipif(SIM, reason="already running under the CUDA simulator")
def test_simulator_suite():
    """Run tests/test_cuda_sim.py under NUMBA_ENABLE_CUDASIM=1 in a child pytest; all must pass."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider",
           str(REPO / "tests" / "test_cuda_sim.py")]
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    out = r.stdout + r.stderr
    tail = "\n".join(out.strip().splitlines()[-40:])
    assert r.returncode == 0, f"simulator suite failed (exit {r.returncode}):\n{tail}"
    summary = [ln for ln in out.splitlines() if re.search(r"\d+ passed", ln)]
    assert summary, f"no pytest summary line:\n{tail}"
    assert int(re.search(r"(\d+) passed", summary[-1]).group(1)) > 0, tail
    assert not re.search(r"\d+ (failed|errors?|skipped)", summary[-1]), summary[-1]


PTX_SCRIPT = textwrap.dedent("""
    import json, sys, time, types as _t
    try:
        from cuda.pathfinder import load_nvidia_dynamic_lib
        for lib in ("nvvm", "nvrtc"):
            load_nvidia_dynamic_lib(lib)
    except Exception as e:
        print(json.dumps({"skip": f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"}))
        sys.exit(0)
    # numba-cuda 0.30 asks the current device for its compute capability when a kernel calls
    # device functions; with no driver, answer for it (shared/TOOLCHAIN.md 3b)
    import numba.cuda.dispatcher as _d
    _d.get_current_device = lambda: _t.SimpleNamespace(compute_capability=(9, 0))
    import numpy as np
    from numba import cuda
    from numba.cuda.typing.typeof import Purpose, typeof
    from hpte.engine.book_state import BookStore, Inputs, alloc_outputs
    from hpte.kernels import match_cuda
    dts = (np.int64, np.uint64, np.int8, np.int64, np.int64, np.uint8, np.uint8, np.uint8, np.uint32, np.uint8, np.uint8,
           np.int64, np.int64, np.int64)
    I = Inputs(*[np.zeros(4, dt) for dt in dts])
    v, m = np.zeros(3, np.int64), np.zeros((3, 3), np.int64)
    args = (I, BookStore(max_levels=4096).S, alloc_outputs([[1, 1, 1]]), v, v, v, v, v, v, m, m,
            np.int64(0), np.int64(0))
    t0 = time.perf_counter()
    ptx, _ = cuda.compile_ptx(match_cuda.match_books_cuda.py_func,
                              tuple(typeof(a, Purpose.argument) for a in args), cc=(9, 0))
    print(json.dumps({"seconds": time.perf_counter() - t0, "bytes": len(ptx),
                      "sm_90": ".target sm_90" in ptx, "entry": ".entry" in ptx, "calls": ptx.count("call.")}))
""")


@pytest.mark.skipif(SIM, reason="needs the real CUDA target (simulator off)")
def test_match_books_cuda_compiles_to_ptx():
    """The whole kernel tree (NamedTuple arguments, run_chunk, process_row and every helper)
    compiles to PTX for sm_90 with NVVM, without a GPU. Skips unless NVVM and NVRTC are installed
    (``pip install -e '.[ptx]'``, about 130 MB of wheels)."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    r = subprocess.run([sys.executable, "-c", PTX_SCRIPT], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=600)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    assert r.returncode == 0 and lines, f"exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    res = json.loads(lines[-1])
    if "skip" in res:
        pytest.skip(f"NVVM/NVRTC not installed (pip install -e '.[ptx]'): {res['skip']}")
    assert res["entry"] and res["sm_90"] and res["bytes"] > 10_000, res
