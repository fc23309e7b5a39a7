"""hpte: a vectorised batch trading engine (numba kernels on CPU, optional CUDA).

The import package ``hpte`` is assembled from three folders of the repository:
``kernels/`` (hpte.kernels), ``engine/`` (hpte.engine) and ``cli/`` (hpte.cli).

The public face is imported lazily, so that ``import hpte`` stays fast and pulls in neither numba
nor pyarrow nor any GPU package::

    from hpte import Engine            # hpte.engine.engine.Engine
"""
from pathlib import Path as _Path

__version__ = "0.1.0"

_root = _Path(__file__).resolve().parent.parent
if (_root / "pyproject.toml").is_file() and (_root / "kernels" / "__init__.py").is_file():
    # Source checkout: the subpackages are siblings of this folder.
    __path__.append(str(_root))  # type: ignore[name-defined]

# public name -> (module, attribute), imported on first use
_PUBLIC = {
    "Engine": ("hpte.engine.engine", "Engine"),
    "RiskLimits": ("hpte.engine.risk.limits", "RiskLimits"),
    "match_file": ("hpte.engine.pipeline", "match_file"),
    "backtest": ("hpte.engine.backtest.run", "backtest"),
    "sweep": ("hpte.engine.sweep.run", "sweep"),
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    try:
        module, attr = _PUBLIC[name]
    except KeyError:
        raise AttributeError(f"module 'hpte' has no attribute {name!r}") from None
    import importlib

    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
