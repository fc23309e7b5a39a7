"""Parameter grids: ``NAME=START:STOP:STEP`` (inclusive), ``NAME=A,B,C``, ``NAME=V`` and a TOML
grid file; the grid is the Cartesian product in the strategy's ``PARAMS`` order (the last
swept parameter varies fastest), generated chunk by chunk (never materialised whole).

A TOML grid file::

    [params]
    fast = {start = 5, stop = 100, step = 5}
    slow = [110, 200, 400]
    fee_bps = 3          # a fixed value
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class GridError(ValueError):
    """A bad parameter range or grid (the message is one line and names it)."""


def parse_range(name: str, text: str) -> np.ndarray:
    """Values of one parameter from ``START:STOP:STEP`` (inclusive of STOP when on the step),
    ``START:STOP`` (step 1), ``A,B,C`` or ``V``."""
    t = str(text).strip()
    if not t:
        raise GridError(f"--param {name}: empty value")
    try:
        if ":" in t:
            parts = t.split(":")
            if len(parts) not in (2, 3):
                raise GridError(f"--param {name}={t}: use START:STOP:STEP")
            start, stop = float(parts[0]), float(parts[1])
            step = float(parts[2]) if len(parts) == 3 else 1.0
            return make_range(name, start, stop, step, t)
        vals = np.array([float(v) for v in t.split(",")], np.float64)
    except GridError:
        raise
    except ValueError:
        raise GridError(f"--param {name}={t}: not a number, START:STOP:STEP or A,B,C") from None
    if not np.isfinite(vals).all():
        raise GridError(f"--param {name}={t}: values must be finite")
    return vals


def make_range(name: str, start: float, stop: float, step: float, text: str = "") -> np.ndarray:
    what = text or f"{start}:{stop}:{step}"
    if not all(math.isfinite(x) for x in (start, stop, step)):
        raise GridError(f"--param {name}={what}: values must be finite")
    if step <= 0:
        raise GridError(f"--param {name}={what}: the step must be positive")
    if stop < start:
        raise GridError(f"--param {name}={what}: inverted range (stop {stop:g} < start {start:g})")
    k = int(math.floor((stop - start) / step + 1e-9)) + 1
    if k > 10_000_000:
        raise GridError(f"--param {name}={what}: {k:,} values in one parameter is too many")
    return start + step * np.arange(k, dtype=np.float64)


def read_grid_file(path) -> dict:
    """name -> values from a TOML grid file (see the module docstring)."""
    import tomllib

    p = Path(path)
    try:
        doc = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise GridError(f"{p}: no such grid file") from None
    except tomllib.TOMLDecodeError as e:
        raise GridError(f"{p}: not valid TOML: {e}") from None
    table = doc.get("params")
    if not isinstance(table, dict) or not table:
        raise GridError(f"{p}: needs a [params] table of name = values")
    out = {}
    for k, v in table.items():
        if isinstance(v, dict):
            try:
                out[k] = make_range(k, float(v["start"]), float(v["stop"]), float(v.get("step", 1)))
            except KeyError as e:
                raise GridError(f"{p}: params.{k}: missing {e.args[0]!r} (use start, stop, step)") from None
            except (TypeError, ValueError) as e:
                if isinstance(e, GridError):
                    raise
                raise GridError(f"{p}: params.{k}: start, stop and step must be numbers") from None
        elif isinstance(v, list):
            if not v:
                raise GridError(f"{p}: params.{k}: empty list")
            try:
                out[k] = np.array([float(x) for x in v], np.float64)
            except (TypeError, ValueError):
                raise GridError(f"{p}: params.{k}: values must be numbers") from None
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = np.array([float(v)], np.float64)
        else:
            raise GridError(f"{p}: params.{k}: use a number, a list or {{start, stop, step}}")
        if not np.isfinite(out[k]).all():
            raise GridError(f"{p}: params.{k}: values must be finite")
    return out


@dataclass
class Grid:
    """The Cartesian product of ``axes`` (name -> values) over a strategy's parameters
    (``names`` in PARAMS order, ``defaults`` for the others)."""
    names: list
    defaults: np.ndarray
    axes: dict

    @property
    def swept(self) -> list:
        return [n for n in self.names if n in self.axes]

    @property
    def size(self) -> int:
        return math.prod(len(self.axes[n]) for n in self.swept)

    def chunk(self, start: int, stop: int) -> np.ndarray:
        """Parameter sets start..stop-1 as float64[stop - start, P]."""
        k = stop - start
        out = np.empty((k, len(self.names)), np.float64)
        out[:] = self.defaults
        sw = self.swept
        if sw:
            shape = tuple(len(self.axes[n]) for n in sw)
            idx = np.unravel_index(np.arange(start, stop, dtype=np.int64), shape)
            for n, ix in zip(sw, idx):
                out[:, self.names.index(n)] = self.axes[n][ix]
        return out


def make_grid(strategy, params: dict | None = None, grid_file=None) -> Grid:
    """The grid of a strategy (a BarStrategy) from ``params`` (name -> spec string, sequence or
    number) and/or a TOML grid file (``params`` wins on a name in both)."""
    axes: dict = {}
    if grid_file is not None:
        axes.update(read_grid_file(grid_file))
    for k, v in (params or {}).items():
        if isinstance(v, str):
            axes[k] = parse_range(k, v)
        else:
            a = np.atleast_1d(np.asarray(v, dtype=np.float64))
            if a.size == 0:
                raise GridError(f"parameter {k}: empty list of values")
            if not np.isfinite(a).all():
                raise GridError(f"parameter {k}: values must be finite")
            axes[k] = a
    names = list(strategy.params)
    for k in axes:
        if k not in strategy.params:
            raise GridError(f"{strategy.name}: unknown parameter {k!r} (parameters: {', '.join(names) or 'none'})")
    return Grid(names=names, defaults=strategy.param_vector(), axes=axes)
