"""hpte: a vectorised batch trading engine (numba kernels on CPU, optional CUDA).

The import package ``hpte`` is assembled from three folders of the repository:
``kernels/`` (hpte.kernels), ``engine/`` (hpte.engine) and ``cli/`` (hpte.cli).
"""
from pathlib import Path as _Path

__version__ = "0.1.0"

_root = _Path(__file__).resolve().parent.parent
if (_root / "pyproject.toml").is_file() and (_root / "kernels" / "__init__.py").is_file():
    # Source checkout: the subpackages are siblings of this folder.
    __path__.append(str(_root))  # type: ignore[name-defined]
