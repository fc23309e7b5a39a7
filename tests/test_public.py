"""The public face of the package: ``from hpte import Engine`` and friends, imported lazily."""
from __future__ import annotations

import subprocess
import sys

import pytest


def test_import_hpte_pulls_in_nothing_heavy():
    code = ("import sys, hpte; heavy = [m for m in ('numba', 'pyarrow', 'numpy', 'cupy', 'numba.cuda', 'typer')"
            " if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import hpte imported {out.stdout.strip()}"


def test_public_names_are_the_engine_objects():
    import hpte
    from hpte.engine.engine import Engine
    from hpte.engine.pipeline import match_file
    from hpte.engine.risk.limits import RiskLimits

    assert hpte.Engine is Engine
    assert hpte.match_file is match_file
    assert hpte.RiskLimits is RiskLimits
    assert set(hpte.__all__) <= set(dir(hpte))


def test_unknown_public_name_is_an_attribute_error():
    import hpte

    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        hpte.Nope  # noqa: B018
