"""Matching algorithms: the presets, per-book parameters and the matching TOML file.

At one price level an aggressor's remaining quantity R is allocated among the resting orders by
steps (kernels/book.py ``alloc_level``; README "Matching algorithms"): 0. R >= T fills everything,
1. TOP, 2. LMM, 3. FIFO share, 4. pro rata, 5. FIFO residual. Steps 0 and 5 always apply; a
preset names which of 1-4 do and their default parameters.

File format (every table and key optional)::

    [defaults]                      # every symbol
    algorithm = "pro-rata"
    min_alloc = 1

    [symbols.3]                     # symbol 3
    algorithm = "fifo-lmm"
    lmm_pct = 25
    lmm_accounts = [7, 9]

A key a symbol's table leaves out comes from ``[defaults]`` when [defaults] names the same
algorithm, else from the preset. A parameter the chosen algorithm does not use is an error.
Errors are ``MatchingConfigError`` naming the key path, e.g.
``symbols.3.lmm_pct: must be an integer in [0, 100], got 120``.
"""
from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from hpte.kernels import book as K

ID_MAX = (1 << 32) - 1
QTY_MAX = (1 << 62)

# name -> (ALG_* steps, default parameters). Parameters: min_alloc (steps with pro rata),
# fifo_pct (FIFO share), lmm_pct and lmm_accounts (LMM).
PRESETS: dict[str, tuple[int, dict]] = {
    "fifo": (0, {}),
    "pro-rata": (K.ALG_PRO, {"min_alloc": 1}),
    "allocation": (K.ALG_TOP | K.ALG_PRO, {"min_alloc": 2}),
    "split": (K.ALG_FIFO | K.ALG_PRO, {"fifo_pct": 40, "min_alloc": 1}),
    "fifo-lmm": (K.ALG_LMM, {"lmm_pct": 20, "lmm_accounts": ()}),
    "threshold-pro-rata": (K.ALG_TOP | K.ALG_PRO, {"min_alloc": 2}),
}
PARAM_KEYS = ("min_alloc", "fifo_pct", "lmm_pct", "lmm_accounts")


class MatchingConfigError(ValueError):
    """A bad matching configuration. ``key`` is the dotted key path, ``problem`` the rest."""

    def __init__(self, key: str, problem: str, source: str | None = None):
        self.key, self.problem, self.source = key, problem, source
        msg = f"{key}: {problem}" if key else problem
        super().__init__(f"{source}: {msg}" if source else msg)


@dataclass(frozen=True)
class Algo:
    """One book's algorithm: the preset's name, its ALG_* steps and the parameters."""
    name: str = "fifo"
    steps: int = 0
    min_alloc: int = 1
    fifo_pct: int = 0
    lmm_pct: int = 0
    lmm_accounts: tuple = ()

    def bk_values(self) -> dict[int, int]:
        """bk column -> value for kernels/book.py (F_ALGO ... F_LMM0+k)."""
        v = {K.F_ALGO: self.steps, K.F_MINALLOC: self.min_alloc, K.F_FIFOPCT: self.fifo_pct,
             K.F_LMMPCT: self.lmm_pct, K.F_NLMM: len(self.lmm_accounts)}
        for k, a in enumerate(self.lmm_accounts):
            v[K.F_LMM0 + k] = int(a)
        return v


FIFO = Algo()


def _show(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return repr(v)
    if isinstance(v, dict):
        return "a table"
    if isinstance(v, (list, tuple)):
        return "an array"
    return str(v)


def _int(path: str, v: Any, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= int(v) <= hi:
        raise MatchingConfigError(path, f"must be an integer in [{lo}, {hi}], got {_show(v)}")
    return int(v)


def _unknown(path: str, key: str, known) -> MatchingConfigError:
    near = difflib.get_close_matches(key, list(known), n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else f"; expected one of {', '.join(known)}"
    return MatchingConfigError(f"{path}{key}" if path else key, f"unknown key{hint}")


def make_algo(name: str = "fifo", path: str = "", **params) -> Algo:
    """The Algo of preset `name` with `params` overriding its defaults (each validated; errors
    name ``path`` + the key). A parameter the preset does not use is an error."""
    apath = f"{path}algorithm" if path else "algorithm"
    if not isinstance(name, str) or name not in PRESETS:
        near = difflib.get_close_matches(str(name), list(PRESETS), n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise MatchingConfigError(apath, f"unknown algorithm {_show(name)}{hint}; expected one of "
                                  f"{', '.join(PRESETS)}")
    steps, defaults = PRESETS[name]
    vals = dict(defaults)
    for key, v in params.items():
        kp = f"{path}{key}"
        if key not in PARAM_KEYS:
            raise _unknown(path, key, PARAM_KEYS + ("algorithm",))
        if key not in defaults:
            raise MatchingConfigError(kp, f"algorithm {name!r} has no {key}; its parameters: "
                                      f"{', '.join(defaults) or 'none'}")
        if key == "min_alloc":
            vals[key] = _int(kp, v, 1, QTY_MAX)
        elif key in ("fifo_pct", "lmm_pct"):
            vals[key] = _int(kp, v, 0, 100)
        else:
            if not isinstance(v, (list, tuple)):
                raise MatchingConfigError(kp, f"must be an array of account ids, got {_show(v)}")
            if len(v) > K.MAX_LMM:
                raise MatchingConfigError(kp, f"at most {K.MAX_LMM} accounts, got {len(v)}")
            accts = tuple(_int(f"{kp}[{i}]", a, 0, ID_MAX) for i, a in enumerate(v))
            if len(set(accts)) != len(accts):
                raise MatchingConfigError(kp, "an account is listed twice")
            vals[key] = accts
    return Algo(name=name, steps=steps, **vals)


class MatchingConfig:
    """The algorithm of every book: a default Algo and per-symbol ones."""

    def __init__(self, default: Algo = FIFO, symbols: Mapping[int, Algo] | None = None):
        self.default = default
        self.symbols = dict(symbols or {})

    @classmethod
    def from_dict(cls, d: Mapping, source: str | None = None) -> "MatchingConfig":
        try:
            return cls._from_dict(d)
        except MatchingConfigError as e:
            if source is None:
                raise
            raise MatchingConfigError(e.key, e.problem, source) from None

    @classmethod
    def _from_dict(cls, d: Mapping) -> "MatchingConfig":
        for key in d:
            if key not in ("defaults", "symbols"):
                raise _unknown("", key, ("defaults", "symbols"))
        dd = d.get("defaults", {})
        if not isinstance(dd, Mapping):
            raise MatchingConfigError("defaults", f"must be a table, got {_show(dd)}")
        dd = dict(dd)
        default = make_algo(dd.pop("algorithm", "fifo"), "defaults.", **dd)
        dparams = {k: v for k, v in d.get("defaults", {}).items() if k != "algorithm"}
        syms = d.get("symbols", {})
        if not isinstance(syms, Mapping):
            raise MatchingConfigError("symbols", f"must be a table, got {_show(syms)}")
        out = {}
        for sk, t in syms.items():
            path = f"symbols.{sk}."
            try:
                sym = int(sk)
            except (TypeError, ValueError):
                sym = -1
            if not 0 <= sym <= ID_MAX:
                raise MatchingConfigError(f"symbols.{sk}", f"must be a symbol id in [0, {ID_MAX}]")
            if not isinstance(t, Mapping):
                raise MatchingConfigError(f"symbols.{sk}", f"must be a table, got {_show(t)}")
            t = dict(t)
            name = t.pop("algorithm", default.name)
            params = dict(dparams) if name == default.name else {}
            params.update(t)
            out[sym] = make_algo(name, path, **params)
        return cls(default, out)

    @classmethod
    def load(cls, path) -> "MatchingConfig":
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as e:
            raise MatchingConfigError("", f"cannot read matching file: {e.strerror}", str(p)) from None
        try:
            d = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise MatchingConfigError("", f"not valid TOML: {e}", str(p)) from None
        return cls.from_dict(d, str(p))

    def algo_for(self, symbol: int) -> Algo:
        return self.symbols.get(int(symbol), self.default)

    def is_fifo(self) -> bool:
        return self.default.steps == 0 and all(a.steps == 0 for a in self.symbols.values())

    def fill_bk(self, bk: np.ndarray) -> None:
        """Write the algorithm columns of new book rows (bk[:, F_SYM] set) in place."""
        for i in range(bk.shape[0]):
            for col, v in self.algo_for(int(bk[i, K.F_SYM])).bk_values().items():
                bk[i, col] = v


def resolve_matching(algo: str = "fifo", matching=None) -> MatchingConfig:
    """Engine(algo=..., matching=...): `matching` (a MatchingConfig, a dict in the file's layout,
    or a path to a TOML file) wins; else every book uses preset `algo` with its defaults."""
    if matching is not None:
        if isinstance(matching, MatchingConfig):
            return matching
        if isinstance(matching, Mapping):
            return MatchingConfig.from_dict(matching)
        return MatchingConfig.load(matching)
    if isinstance(algo, Algo):
        return MatchingConfig(algo)
    return MatchingConfig(make_algo(algo))
