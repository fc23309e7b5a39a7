"""Where matching runs: ``resolve_device("auto" | "cpu" | "gpu") -> DeviceInfo``.

* ``cpu``: always available.
* ``gpu``: a real CUDA GPU, which needs three things, checked in this order: numba-cuda sees a
  CUDA driver and a device, CuPy imports, and CuPy counts at least one device. When one is
  missing, a ``DeviceError`` says which. Under numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``
  set before numba is imported) ``gpu`` resolves to the simulator, with NumPy standing in for
  CuPy (slow: for tests).
* ``auto``: the GPU when ``gpu`` would resolve to a real one, else the CPU, with the reason (shown
  in summaries). It never picks the simulator.

Nothing here imports numba.cuda or CuPy at module import; the probes import them when called.
"""
from __future__ import annotations

from dataclasses import dataclass

DEVICES = ("auto", "cpu", "gpu")
GPU_INSTALL_HINT = "pip install 'hpte[gpu]'"


class DeviceError(RuntimeError):
    """The requested device cannot be used; the message names what is missing."""


@dataclass(frozen=True)
class DeviceInfo:
    """A resolved device.

    kind : "cpu" or "gpu". reason : why this device (for ``auto``, why not the other one).
    simulator : True when kind is "gpu" and CUDA kernels run in numba's simulator.
    name : the GPU's name when known.
    """
    kind: str
    reason: str
    simulator: bool = False
    name: str = ""

    def describe(self) -> str:
        """One line for summaries, e.g. ``cpu (auto: no GPU: ...)``."""
        return f"{self.kind} ({self.reason})"


def _one_line(e: BaseException) -> str:
    """An exception's message on one line (driver errors span several)."""
    text = " ".join(str(e).split()).rstrip(" :")
    return text or type(e).__name__


# ---- probes (module-level so that tests can replace them) -------------------------------------
def probe_numba_cuda() -> tuple[str, str]:
    """("sim" | "gpu" | "none", detail) for numba-cuda."""
    try:
        import numba
        from numba import cuda
    except Exception as e:  # pragma: no cover - numba-cuda is a test dependency
        return "none", f"numba-cuda is not importable ({type(e).__name__}: {e}); {GPU_INSTALL_HINT}"
    if numba.config.ENABLE_CUDASIM:
        return "sim", "numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1)"
    try:
        if cuda.is_available():
            return "gpu", "numba-cuda sees a CUDA device"
    except Exception as e:  # pragma: no cover - is_available() does not raise in 0.30
        return "none", f"numba-cuda: {type(e).__name__}: {e}"
    detail = "no CUDA driver or no CUDA device"
    try:
        from numba.cuda.cudadrv.driver import driver
        driver.get_device_count()
    except Exception as e:
        detail = _one_line(e)
    return "none", f"numba-cuda found no usable GPU: {detail}"


def probe_cupy() -> tuple[object | None, str]:
    """(the cupy module or None, detail)."""
    try:
        import cupy
    except ImportError as e:
        return None, f"CuPy is not installed ({e}); {GPU_INSTALL_HINT}"
    except Exception as e:  # pragma: no cover - a broken install
        return None, f"CuPy failed to import ({type(e).__name__}: {e})"
    return cupy, "CuPy imported"


def probe_cupy_devices(cupy) -> tuple[int, str]:
    """(number of devices CuPy sees, detail)."""
    try:
        n = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as e:   # CUDARuntimeError when there is no driver or device
        return 0, f"CuPy sees no CUDA device ({_one_line(e)})"
    if n < 1:
        return 0, "CuPy sees no CUDA device (device count 0)"
    name = ""
    try:
        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props["name"].decode() if isinstance(props.get("name"), bytes) else str(props.get("name", ""))
    except Exception:  # pragma: no cover - cosmetic
        pass
    return n, name


def _resolve_gpu() -> DeviceInfo:
    mode, detail = probe_numba_cuda()
    if mode == "sim":
        return DeviceInfo("gpu", "numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1); NumPy stands in for CuPy",
                          simulator=True, name="simulator")
    if mode != "gpu":
        raise DeviceError(f"--device gpu: {detail}")
    cupy, detail = probe_cupy()
    if cupy is None:
        raise DeviceError(f"--device gpu: {detail}")
    count, name = probe_cupy_devices(cupy)
    if count < 1:
        raise DeviceError(f"--device gpu: {name}")
    return DeviceInfo("gpu", f"CUDA device 0 of {count}" + (f": {name}" if name else ""), name=name)


def resolve_device(device: str = "auto") -> DeviceInfo:
    """Resolve "auto" | "cpu" | "gpu" (see the module docstring). Raises DeviceError for an
    explicit "gpu" that cannot be had, ValueError for an unknown name."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cpu":
        return DeviceInfo("cpu", "requested")
    if device == "gpu":
        return _resolve_gpu()
    try:
        info = _resolve_gpu()
    except DeviceError as e:
        return DeviceInfo("cpu", "auto: no GPU: " + str(e).removeprefix("--device gpu: "))
    if info.simulator:
        return DeviceInfo("cpu", "auto: the CUDA simulator is active, auto never picks it (ask for gpu)")
    return DeviceInfo("gpu", "auto: " + info.reason, name=info.name)
