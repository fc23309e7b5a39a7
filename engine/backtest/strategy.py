"""Strategies: load a user's file (or a bundled one), check it, and compile it into the loop.

A strategy file defines plain functions (``on_book`` required; ``on_trade``, ``on_order``,
``on_fill``, ``on_timer`` optional), all with the signature ``(md, orders, params, state, act)``
(hpte.kernels.backtest.api), and optionally::

    PARAMS = {"half_spread": 1.0, "size": 100.0}   # name -> default, the float64 vector's order
    STATE_SIZE = 8                                  # length of the scratch vector
    TIMER_NS = 0                                    # on_timer period (0: none; --timer overrides)
    BOOK_DEPTH = 1                                  # levels per side in md (1..5)

Compilation: a driver module is generated in the cache folder (``$HPTE_CACHE_DIR``, else
``~/.cache/hpte/backtest``), named after a hash of the strategy's source, the loop's, the
interface's and the metrics accumulator's source and the numba version: it holds the loop's source with the callbacks
rebound to the strategy's functions, and numba caches it (``cache=True``) beside it. A
changed strategy file gets a new driver (recompiled); an unchanged one loads from the cache.
Helper modules a strategy itself imports are not part of the hash: change the strategy file
(or clear the cache folder) after editing them.
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

CALLBACKS = ("on_book", "on_trade", "on_order", "on_fill", "on_timer")
REQUIRED = ("on_book",)
BUNDLED_DIR = Path(__file__).resolve().parent / "strategies"


class StrategyError(ValueError):
    """A strategy that cannot be loaded, checked or compiled (the message is one line)."""


@dataclass
class Strategy:
    name: str
    path: Path
    source: str
    params: dict            # name -> default (float)
    state_size: int
    timer_ns: int
    depth: int = 1
    module: object = field(repr=False, default=None)

    def param_vector(self, overrides: dict | None = None) -> np.ndarray:
        """The float64 parameter vector: defaults overridden by ``overrides`` (name -> number)."""
        return param_vector(self.name, self.params, overrides)


def param_vector(name: str, params: dict, overrides: dict | None = None) -> np.ndarray:
    """A strategy's float64 parameter vector (tick and bar strategies alike): the defaults
    ``params`` (name -> float, in the vector's order) overridden by ``overrides``."""
    vals = dict(params)
    for k, v in (overrides or {}).items():
        if k not in vals:
            known = ", ".join(vals) or "none"
            raise StrategyError(f"{name}: unknown parameter {k!r} (parameters: {known})")
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise StrategyError(f"{name}: parameter {k}={v!r} is not a number") from None
        if not np.isfinite(f):
            raise StrategyError(f"{name}: parameter {k}={v!r} is not finite")
        vals[k] = f
    return np.array([vals[k] for k in params], np.float64)


def bundled(folder: Path = BUNDLED_DIR) -> list[str]:
    """Names of the bundled strategies (in ``folder``: the tick strategies by default)."""
    return sorted(p.stem for p in folder.glob("*.py") if not p.stem.startswith("_"))


def resolve_path(spec: str | os.PathLike, folder: Path = BUNDLED_DIR, kind: str = "strategy") -> Path:
    """A strategy given as a file path, a name bundled in ``folder`` (``market_maker``) or a
    module name."""
    p = Path(spec)
    if p.suffix == ".py" or p.exists():
        if not p.is_file():
            raise StrategyError(f"{p}: no such strategy file")
        return p.resolve()
    name = str(spec)
    if (folder / f"{name}.py").is_file():
        return folder / f"{name}.py"
    try:
        found = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        found = None
    if found is None or not found.origin or not found.origin.endswith(".py"):
        raise StrategyError(f"{name}: not a strategy file, a bundled {kind} ({', '.join(bundled(folder))}) "
                            f"or an importable module")
    return Path(found.origin).resolve()


def is_bar_strategy(spec) -> bool:
    """True when ``spec`` names a bar strategy (``on_bar``, run by the sweep's bar kernel): a
    BarStrategy, a name bundled with the bar strategies (``ma_cross``) and not with the tick ones,
    or a file whose top level defines ``on_bar`` and no ``on_book``. Read, not executed."""
    import ast

    if isinstance(spec, Strategy):
        return False
    if type(spec).__name__ == "BarStrategy":
        return True
    bar_dir = BUNDLED_DIR.parent.parent / "sweep" / "strategies"
    try:
        path = resolve_path(spec)
    except StrategyError:
        try:
            resolve_path(spec, bar_dir, "bar strategy")
        except StrategyError:
            return False
        return True
    try:
        tree = ast.parse(path.read_text())
    except (OSError, SyntaxError, ValueError):
        return False        # the tick loader reports it
    names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    return "on_bar" in names and "on_book" not in names


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def exec_file(path: Path, prefix: str) -> tuple[str, object]:
    """Read, compile and execute a strategy file as a fresh module named ``prefix`` + a hash of
    its path; returns (source, module). Every failure is a StrategyError with one line."""
    name = path.name
    try:
        source = path.read_text()
    except OSError as e:
        raise StrategyError(f"{path}: {e.strerror or e}") from None
    try:
        code = compile(source, str(path), "exec")
    except SyntaxError as e:
        raise StrategyError(f"{name}: line {e.lineno}: syntax error: {e.msg}") from None
    module = type(sys)(prefix + hashlib.sha256(str(path).encode()).hexdigest()[:12])
    module.__file__ = str(path)
    try:
        exec(code, module.__dict__)
    except Exception as e:  # noqa: BLE001 - any failure of the user's module is reported in one line
        raise StrategyError(f"{name}: executing the file failed: {type(e).__name__}: {_one_line(e)}") from None
    return source, module


def check_callback(module, name: str, cb: str, args: str) -> None:
    """If the module defines ``cb``, it must be a plain function of the 5 arguments ``args``."""
    f = getattr(module, cb, None)
    if f is None:
        return
    py = getattr(f, "py_func", f)
    if not callable(f) or not inspect.isfunction(py):
        raise StrategyError(f"{name}: {cb} must be a function")
    nargs = len(inspect.signature(py).parameters)
    if nargs != 5:
        raise StrategyError(f"{name}: {cb} takes {nargs} arguments; it takes 5 {args}")


def read_params(module, name: str) -> dict:
    """The module's ``PARAMS`` (name -> default number) as name -> float."""
    params = getattr(module, "PARAMS", {})
    if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
        raise StrategyError(f"{name}: PARAMS must be a dict of name -> default number")
    try:
        return {k: float(v) for k, v in params.items()}
    except (TypeError, ValueError):
        raise StrategyError(f"{name}: PARAMS defaults must be numbers") from None


def load_strategy(spec: str | os.PathLike) -> Strategy:
    """Read, execute and check a strategy file; raises StrategyError with a one-line message."""
    path = resolve_path(spec)
    name = path.name
    source, module = exec_file(path, "hpte_strategy_")
    for cb in REQUIRED:
        if not callable(getattr(module, cb, None)):
            raise StrategyError(f"{name}: missing callback {cb}(md, orders, params, state, act)")
    for cb in CALLBACKS:
        check_callback(module, name, cb, "(md, orders, params, state, act)")
    params = read_params(module, name)
    state_size = getattr(module, "STATE_SIZE", 16)
    if not isinstance(state_size, int) or state_size < 0:
        raise StrategyError(f"{name}: STATE_SIZE must be a non-negative integer, got {state_size!r}")
    timer_ns = getattr(module, "TIMER_NS", 0)
    if not isinstance(timer_ns, int) or timer_ns < 0:
        raise StrategyError(f"{name}: TIMER_NS must be a non-negative integer, got {timer_ns!r}")
    from hpte.kernels.backtest.api import DEPTH

    depth = getattr(module, "BOOK_DEPTH", 1)
    if not isinstance(depth, int) or not 1 <= depth <= DEPTH:
        raise StrategyError(f"{name}: BOOK_DEPTH must be an integer from 1 to {DEPTH}, got {depth!r}")
    return Strategy(name=path.stem, path=path, source=source, params=params, state_size=state_size,
                    timer_ns=timer_ns, depth=depth, module=module)


def cache_dir() -> Path:
    d = os.environ.get("HPTE_CACHE_DIR")
    return Path(d) if d else Path.home() / ".cache" / "hpte" / "backtest"


def _loop_source() -> str:
    from hpte.kernels.backtest import loop
    return Path(loop.__file__).read_text()


def _api_source() -> str:
    from hpte.kernels.backtest import api
    return Path(api.__file__).read_text()


def source_key(*parts: str) -> str:
    """The name of a generated driver: a hash of every source it is built from, with numba's
    and Python's versions (a change to any of them gives a new driver, compiled anew)."""
    import numba

    h = hashlib.sha256()
    for part in (*parts, numba.__version__, sys.version):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:20]


def _metrics_source() -> str:
    from hpte.kernels.backtest import metrics
    return Path(metrics.__file__).read_text()


def _impact_sources() -> str:
    """The impact mode's source and the step's (compiled into every driver through it)."""
    from hpte.kernels import book, match_cpu
    from hpte.kernels.backtest import impact
    return "".join(Path(m.__file__).read_text() for m in (impact, book, match_cpu))


def driver_key(strat: Strategy) -> str:
    return source_key(strat.source, str(strat.path), _loop_source(), _api_source(), _metrics_source(),
                      _impact_sources())


_BINDING = '''

# ---- generated by hpte.engine.backtest.strategy: the strategy's callbacks --------------------
import importlib.util as _ilu
import sys as _sys

_spec = _ilu.spec_from_file_location({modname!r}, {path!r})
_user = _ilu.module_from_spec(_spec)
_sys.modules[{modname!r}] = _user
_spec.loader.exec_module(_user)

from hpte.engine.backtest.strategy import as_jit as _as_jit, jit_module_functions as _jmf

_jmf(_user)
on_book = _as_jit(_user.on_book)
on_trade = _as_jit(getattr(_user, "on_trade", _noop))
on_order = _as_jit(getattr(_user, "on_order", _noop))
on_fill = _as_jit(getattr(_user, "on_fill", _noop))
on_timer = _as_jit(getattr(_user, "on_timer", _noop))
'''


def as_jit(f):
    """A strategy callback as something numba can call: dispatchers as they are, plain functions
    through ``register_jitable`` (compiled into the loop, so the loop's cache holds them)."""
    from numba.core.registry import CPUDispatcher
    from numba.extending import register_jitable

    if isinstance(f, CPUDispatcher):
        return f
    return register_jitable(f)


def jit_module_functions(module, skip: tuple[str, ...] = ()) -> None:
    """Make every plain function a strategy module defines callable from compiled code
    (its own helpers, not only the callbacks), except those named in ``skip``."""
    from numba.extending import register_jitable

    for obj in list(vars(module).values()):
        if inspect.isfunction(obj) and obj.__module__ == module.__name__ and obj.__name__ not in skip:
            register_jitable(obj)


_drivers: dict[str, object] = {}


def load_driver(key: str, filename: str, modname: str, text) -> object:
    """Import the generated driver module ``filename`` of the cache folder, writing it first
    (``text()``: its source) when it is not there yet; once per key and process."""
    if key in _drivers:
        return _drivers[key]
    d = cache_dir()
    d.mkdir(parents=True, exist_ok=True)
    path = d / filename
    if not path.is_file():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text())
        os.replace(tmp, path)     # atomic: concurrent runs never see half a file
    spec = importlib.util.spec_from_file_location(modname, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    _drivers[key] = mod
    return mod


def driver(strat: Strategy, impact: bool = False):
    """The generated driver module for a strategy (written once per key, imported once); with
    ``impact`` the impact-mode driver (the loop with IMPACT = True: the engine's step compiled in)."""
    key = driver_key(strat) + ("i" if impact else "")
    return load_driver(key, f"bt_{strat.name}_{key}.py", f"hpte_bt_driver_{key}",
                       lambda: _loop_source() + _BINDING.format(modname=f"hpte_strategy_{key}",
                                                                path=str(strat.path))
                       + ("IMPACT = True\n" if impact else ""))


def diagnose(strat: Strategy, exc: BaseException) -> StrategyError:
    """Name the callback numba cannot compile (each compiled alone with the callback types)."""
    import numba
    from numba import types as T

    sig = (T.int64[::1], T.int64[:, ::1], T.float64[::1], T.float64[::1], T.int64[:, ::1])
    for cb in CALLBACKS:
        f = getattr(strat.module, cb, None)
        if f is None:
            continue
        py = getattr(f, "py_func", f)
        try:
            numba.njit(py).compile(sig)
        except Exception as e:  # noqa: BLE001 - numba raises many kinds; one line names it
            lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
            what = next((ln for ln in lines if not ln.startswith(("During:", "File ", "^"))), type(e).__name__)
            where = ""
            try:
                line = inspect.getsourcelines(py)[1]
                where = f" (line {line})"
            except (OSError, TypeError):
                pass
            return StrategyError(f"{strat.path.name}: callback {cb}{where} cannot be compiled by numba: {what}")
    return StrategyError(f"{strat.path.name}: the backtest loop with this strategy cannot be compiled: "
                         f"{_one_line(exc)}")
