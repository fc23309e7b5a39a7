"""Shared fixtures: seeded RNG, hypothesis profiles, and the real market data in ../shared/data."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", deadline=None, max_examples=60, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "dev", deadline=None, max_examples=25,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough", deadline=None, max_examples=1000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

REPO = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path:
    """Where the real market data lives: $HPTE_DATA, else ../shared/data beside the checkout."""
    env = os.environ.get("HPTE_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def require_data(relpath: str) -> Path:
    """Path of a shared data file; skip (or fail, when HPTE_REQUIRE_DATA=1) if it is absent."""
    p = shared_data_dir() / relpath
    if not p.exists():
        msg = f"real data file {p} is absent (set HPTE_DATA to the folder holding shared/data)"
        if os.environ.get("HPTE_REQUIRE_DATA") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return p


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261124)
