"""Shared fixtures: the backend fixture (numpy, array_api_strict, cupy) and Hypothesis profiles.

Every test that takes ``backend`` runs once per array library.  ``backend.asarray`` turns a
NumPy array (the tests' references are computed in NumPy) into that library's array and
``backend.to_numpy`` brings a result back for comparison.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from npattn.backend import cupy_available, to_numpy

# The backend fixture is function-scoped but stateless, so sharing it across the examples of one
# Hypothesis test is safe: that health check is off in both profiles.
_SUPPRESSED = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
settings.register_profile("ci", max_examples=12, deadline=None, derandomize=True,
                          suppress_health_check=_SUPPRESSED)
settings.register_profile("dev", max_examples=25, deadline=None,
                          suppress_health_check=_SUPPRESSED)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@dataclass(frozen=True)
class Backend:
    """One array library as the tests see it."""

    name: str
    xp: ModuleType

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        """A NumPy array (or nested list) as this library's array, optionally cast."""
        a = np.asarray(a) if dtype is None else np.asarray(a, dtype=dtype)
        return self.xp.asarray(a)

    def to_numpy(self, a: Any) -> np.ndarray:
        return to_numpy(a)

    def dtype(self, name: str) -> Any:
        return getattr(self.xp, name)

    def other_asarray(self, a: Any) -> Any:
        """``a`` as an array of another CPU library than this backend's (for mixed-input tests)."""
        if self.name == "numpy":
            import array_api_strict
            return array_api_strict.asarray(np.asarray(a))
        return np.asarray(a)


def _make_backend(name: str) -> Backend:
    if name == "numpy":
        import array_api_compat.numpy as xp
        return Backend("numpy", xp)
    if name == "array_api_strict":
        import array_api_strict as xp
        return Backend("array_api_strict", xp)
    ok, why = cupy_available()
    if not ok:
        pytest.skip(f"cupy backend skipped: {why}")
    import array_api_compat.cupy as xp
    return Backend("cupy", xp)


BACKENDS = ["numpy", "array_api_strict", "cupy"]


@pytest.fixture(params=BACKENDS)
def backend(request) -> Backend:
    """Each array library in turn; cupy is skipped, with the reason, where it has no GPU."""
    return _make_backend(request.param)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def one_thread_then_every_array_split(monkeypatch: Any, fn: Any) -> tuple[Any, Any]:
    """``(fn() on the calling thread alone, fn() with npattn's threads splitting every array)``:
    two threads, no size threshold, cache and element-wise blocks of 256 bytes, so that small
    test inputs take the threaded NumPy paths, which switch on by themselves only above
    ``PARALLEL_MIN_ELEMENTS``."""
    import npattn.backend as npattn_backend
    previous = npattn_backend.set_threads(1)
    try:
        alone = fn()
        monkeypatch.setattr(npattn_backend, "PARALLEL_MIN_ELEMENTS", 0)
        monkeypatch.setattr(npattn_backend, "CACHE_BLOCK_BYTES", 256)
        monkeypatch.setattr(npattn_backend, "ELEMENTWISE_BLOCK_BYTES", 256)
        npattn_backend.set_threads(2)
        split = fn()
    finally:
        npattn_backend.set_threads(previous)
    return alone, split


#: Tolerances between one thread and two: the same operations, sums grouped differently.
THREAD_TOL = {"float32": dict(rtol=1e-5, atol=1e-6), "float64": dict(rtol=1e-12, atol=1e-13)}
