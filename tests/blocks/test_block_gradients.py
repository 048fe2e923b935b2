"""Every block's backward against float64 central differences (npattn.gradcheck.check_module),
with respect to x and every parameter, on Hypothesis-drawn sizes and hyperparameters."""

from __future__ import annotations

import numpy as np
import pytest
from blocks_reference import KINDS, block_cases, kink_margin
from hypothesis import assume, given
from hypothesis import strategies as st

from npattn.blocks import BLOCK_REGISTRY
from npattn.gradcheck import check_module


@pytest.mark.parametrize("kind", KINDS)
@given(data=st.data())
def test_backward_matches_finite_differences(backend, kind, data):
    module, x = data.draw(block_cases(kind))
    assume(kink_margin(kind, module, x) > 1e-3)
    module.to(backend.xp)
    report = check_module(module, backend.asarray(x), rng=0)
    report.raise_if_failed()
    assert {c.name for c in report.inputs} == {"x", *module.params}


@pytest.mark.parametrize("name", sorted(BLOCK_REGISTRY))
def test_registered_block_passes_check_module(backend, name):
    spec = BLOCK_REGISTRY[name]
    rng = np.random.default_rng(3)
    module = spec.make(rng).to(backend.xp)
    x = spec.example(rng)
    assert x.dtype == np.float64
    assert all(str(p.dtype).endswith("float64") for p in module.params.values())
    check_module(module, backend.asarray(x), rng=1).raise_if_failed()


@pytest.mark.parametrize("name", sorted(BLOCK_REGISTRY))
def test_float32_block_matches_float64_differences(name):
    spec = BLOCK_REGISTRY[name]
    rng = np.random.default_rng(4)
    module = spec.make(rng).to("float32")
    check_module(module, spec.example(rng).astype(np.float32), rng=2).raise_if_failed()
