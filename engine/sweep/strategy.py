"""Bar strategies: load a strategy file (or a bundled one), check it, compile it into the bar loop.

A bar strategy file defines ``on_bar(ctx, data, params, state, act)`` (hpte.kernels.backtest.bars)
and optionally::

    PARAMS = {"fast": 10.0, "slow": 50.0}   # name -> default, the float64 vector's order
    STATE_SIZE = 4                           # length of the scratch vector
    def prepare(data): ...                   # numpy, once per data set: extra rows float64[k, n]

Compilation follows hpte.engine.backtest.strategy: a driver module is generated in the cache
folder (``$HPTE_CACHE_DIR``, else ``~/.cache/hpte/backtest``), named after a hash of the
strategy's source, the bar loop's and the interface's source and the numba version; it holds the
bar loop's source with ``on_bar`` and ``STATE_LEN`` rebound, and numba caches it beside it.
"""
from __future__ import annotations

import hashlib
import importlib.util
import inspect
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hpte.engine.backtest.strategy import StrategyError, cache_dir

BUNDLED_DIR = Path(__file__).resolve().parent / "strategies"


@dataclass
class BarStrategy:
    name: str
    path: Path
    source: str
    params: dict            # name -> default (float)
    state_size: int
    module: object = field(repr=False, default=None)

    def param_vector(self, overrides: dict | None = None) -> np.ndarray:
        vals = dict(self.params)
        for k, v in (overrides or {}).items():
            if k not in vals:
                raise StrategyError(f"{self.name}: unknown parameter {k!r} (parameters: {', '.join(vals) or 'none'})")
            try:
                f = float(v)
            except (TypeError, ValueError):
                raise StrategyError(f"{self.name}: parameter {k}={v!r} is not a number") from None
            if not np.isfinite(f):
                raise StrategyError(f"{self.name}: parameter {k}={v!r} is not finite")
            vals[k] = f
        return np.array([vals[k] for k in self.params], np.float64)

    def prepare(self, base: np.ndarray) -> np.ndarray:
        """The data matrix the kernels read: ``base`` (float64[6, n]) and the rows ``prepare``
        adds, C-contiguous."""
        fn = getattr(self.module, "prepare", None)
        if fn is None:
            return np.ascontiguousarray(base, dtype=np.float64)
        try:
            extra = np.asarray(fn(base), dtype=np.float64)
        except Exception as e:  # noqa: BLE001 - the user's hook, reported in one line
            raise StrategyError(f"{self.path.name}: prepare(data) failed: {type(e).__name__}: {_one_line(e)}") from None
        if extra.ndim == 1:
            extra = extra.reshape(1, -1)
        if extra.ndim != 2 or extra.shape[1] != base.shape[1]:
            raise StrategyError(f"{self.path.name}: prepare(data) must return float64[k, n] with n = "
                                f"{base.shape[1]} bars, got shape {extra.shape}")
        return np.ascontiguousarray(np.concatenate([base, extra]), dtype=np.float64)


def bundled() -> list[str]:
    return sorted(p.stem for p in BUNDLED_DIR.glob("*.py") if not p.stem.startswith("_"))


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def resolve_path(spec) -> Path:
    """A bar strategy given as a file path, a bundled name (``ma_cross``) or a module name."""
    p = Path(spec)
    if p.suffix == ".py" or p.exists():
        if not p.is_file():
            raise StrategyError(f"{p}: no such strategy file")
        return p.resolve()
    name = str(spec)
    if (BUNDLED_DIR / f"{name}.py").is_file():
        return BUNDLED_DIR / f"{name}.py"
    try:
        found = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        found = None
    if found is None or not found.origin or not found.origin.endswith(".py"):
        raise StrategyError(f"{name}: not a strategy file, a bundled bar strategy ({', '.join(bundled())}) "
                            f"or an importable module")
    return Path(found.origin).resolve()


def load_bar_strategy(spec) -> BarStrategy:
    """Read, execute and check a bar strategy file; raises StrategyError (one line)."""
    if isinstance(spec, BarStrategy):
        return spec
    path = resolve_path(spec)
    name = path.name
    try:
        source = path.read_text()
    except OSError as e:
        raise StrategyError(f"{path}: {e.strerror or e}") from None
    try:
        code = compile(source, str(path), "exec")
    except SyntaxError as e:
        raise StrategyError(f"{name}: line {e.lineno}: syntax error: {e.msg}") from None
    module = type(sys)("hpte_bar_strategy_" + hashlib.sha256(str(path).encode()).hexdigest()[:12])
    module.__file__ = str(path)
    try:
        exec(code, module.__dict__)
    except Exception as e:  # noqa: BLE001
        raise StrategyError(f"{name}: executing the file failed: {type(e).__name__}: {_one_line(e)}") from None
    f = getattr(module, "on_bar", None)
    if f is None:
        raise StrategyError(f"{name}: missing callback on_bar(ctx, data, params, state, act)")
    py = getattr(f, "py_func", f)
    if not inspect.isfunction(py):
        raise StrategyError(f"{name}: on_bar must be a function")
    nargs = len(inspect.signature(py).parameters)
    if nargs != 5:
        raise StrategyError(f"{name}: on_bar takes {nargs} arguments; it takes 5 (ctx, data, params, state, act)")
    prep = getattr(module, "prepare", None)
    if prep is not None and not callable(prep):
        raise StrategyError(f"{name}: prepare must be a function prepare(data)")
    params = getattr(module, "PARAMS", {})
    if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
        raise StrategyError(f"{name}: PARAMS must be a dict of name -> default number")
    try:
        params = {k: float(v) for k, v in params.items()}
    except (TypeError, ValueError):
        raise StrategyError(f"{name}: PARAMS defaults must be numbers") from None
    state_size = getattr(module, "STATE_SIZE", 16)
    if not isinstance(state_size, int) or not 0 <= state_size <= 4096:
        raise StrategyError(f"{name}: STATE_SIZE must be an integer in 0..4096, got {state_size!r}")
    return BarStrategy(name=path.stem, path=path, source=source, params=params,
                       state_size=state_size, module=module)


def _src(modname: str) -> str:
    mod = importlib.import_module(modname)
    return Path(mod.__file__).read_text()


def driver_key(strat: BarStrategy) -> str:
    import numba

    h = hashlib.sha256()
    for part in (strat.source, str(strat.path), str(strat.state_size), _src("hpte.kernels.backtest.bar_loop"),
                 _src("hpte.kernels.backtest.bars"), numba.__version__, sys.version):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:20]


_BINDING = '''

# ---- generated by hpte.engine.sweep.strategy: the strategy's on_bar ------------------------------
import importlib.util as _ilu
import sys as _sys

_spec = _ilu.spec_from_file_location({modname!r}, {path!r})
_user = _ilu.module_from_spec(_spec)
_sys.modules[{modname!r}] = _user
_spec.loader.exec_module(_user)

from hpte.engine.sweep.strategy import jit_strategy_module as _jsm

on_bar = _jsm(_user)
STATE_LEN = {state_len}
bind()
'''


def jit_strategy_module(module):
    """Make every plain function of a strategy module callable from compiled code (CPU and
    CUDA); returns its on_bar."""
    from numba.extending import register_jitable

    for obj in list(vars(module).values()):
        if inspect.isfunction(obj) and obj.__module__ == module.__name__ and obj.__name__ != "prepare":
            register_jitable(obj)
    return module.on_bar


_drivers: dict[str, object] = {}


def driver(strat: BarStrategy):
    """The generated driver module of a bar strategy (written once per key, imported once)."""
    key = driver_key(strat)
    if key in _drivers:
        return _drivers[key]
    d = cache_dir()
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"bars_{strat.name}_{key}.py"
    if not path.is_file():
        text = _src("hpte.kernels.backtest.bar_loop") + _BINDING.format(
            modname=f"hpte_bar_strategy_{key}", path=str(strat.path), state_len=max(1, strat.state_size))
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    spec = importlib.util.spec_from_file_location(f"hpte_bars_driver_{key}", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    _drivers[key] = mod
    return mod


def diagnose(strat: BarStrategy, exc: BaseException) -> StrategyError:
    """Name what numba cannot compile in on_bar (compiled alone with the callback's types)."""
    import numba
    from numba import types as T

    sig = (T.float64[::1], T.float64[:, ::1], T.float64[::1], T.float64[::1], T.float64[::1])
    py = getattr(strat.module.on_bar, "py_func", strat.module.on_bar)
    try:
        numba.njit(py).compile(sig)
    except Exception as e:  # noqa: BLE001
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        what = next((ln for ln in lines if not ln.startswith(("During:", "File ", "^"))), type(e).__name__)
        try:
            where = f" (line {inspect.getsourcelines(py)[1]})"
        except (OSError, TypeError):
            where = ""
        return StrategyError(f"{strat.path.name}: callback on_bar{where} cannot be compiled by numba: {what}")
    return StrategyError(f"{strat.path.name}: the bar loop with this strategy cannot be compiled: {_one_line(exc)}")
