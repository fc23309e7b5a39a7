#!/usr/bin/env bash
# GPU check, for a machine with an NVIDIA GPU and numba, numba-cuda, CuPy, pyarrow, typer, pytest
# preinstalled (nothing is installed here). Run from the repository root:
#
#     OUT=/some/folder bash bench/gpu_check.sh
#
# It runs the GPU test suite (pytest -m gpu: the full-size CPU-versus-GPU comparisons), `hpte bench`
# on both devices and, where it exists, the GPU sweep benchmark, all from the checkout with
# PYTHONPATH=., and writes every log and figure under $OUT (at most two folders down):
#   $OUT/env.txt            nvidia-smi, Python and package versions
#   $OUT/pytest_gpu.log     pytest -m gpu
#   $OUT/bench.log, $OUT/bench/bench.csv, $OUT/bench/bench.png    hpte bench --device gpu
#   $OUT/sweep.log          bench/bench_sweep.py --device gpu (when the sweep benchmark exists)
#   $OUT/sweep_ticks.log    bench/bench_sweep.py --device gpu --ticks 1000 --no-bars (tick sweep, GPU vs CPU)
# Exit status: 0 when every step passed, else the number of failed steps.
set -u
OUT="${OUT:?set OUT to the folder for the results}"
cd "$(dirname "$0")/.."
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export NUMBA_CACHE_DIR="${NUMBA_CACHE_DIR:-/tmp/hpte-numba-cache}"
mkdir -p "$OUT/bench"
failed=0
step() {  # step NAME LOG CMD...: run CMD, tee its output to LOG, count a failure
    local name=$1 log=$2; shift 2
    echo "== $name: $*" | tee "$log"
    local t0=$SECONDS
    "$@" 2>&1 | tee -a "$log"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$log"
    [ "$rc" -eq 0 ] || failed=$((failed + 1))
}
{
    date -u; uname -a; nvidia-smi || echo "nvidia-smi: not found"
    python3 - <<'PY'
import importlib
for m in ("numpy", "numba", "numba_cuda", "cupy", "pyarrow", "typer", "pytest", "hypothesis"):
    try:
        print(m, importlib.import_module(m).__version__)
    except Exception as e:  # noqa: BLE001 - a report, not a check
        print(m, "missing:", e)
from hpte.engine.device import resolve_device
print("resolve_device('auto'):", resolve_device("auto"))
PY
} > "$OUT/env.txt" 2>&1
step "pytest -m gpu" "$OUT/pytest_gpu.log" python3 -m pytest -m gpu -q -p no:cacheprovider
step "hpte bench" "$OUT/bench.log" python3 -m hpte bench --device gpu --out "$OUT/bench"
if [ -f bench/bench_sweep.py ]; then
    step "GPU sweep" "$OUT/sweep.log" python3 bench/bench_sweep.py --device gpu
    # the tick-level sweep on the GPU beside the CPU: 1,000 market-maker sets over the AMZN day
    # (needs the LOBSTER file under $HPTE_DATA or ../shared/data; says so and skips otherwise)
    step "GPU tick sweep" "$OUT/sweep_ticks.log" python3 bench/bench_sweep.py --device gpu --ticks 1000 --no-bars \
        --no-dask --singles 1 --repeat 1
else
    echo "bench/bench_sweep.py does not exist yet: no GPU sweep figures" | tee "$OUT/sweep.log"
fi
echo "gpu_check: $failed step(s) failed; results in $OUT"
exit "$failed"
