"""GlobalContext, CoordAttention, SelectiveKernel and BAM together: the forward and the map
against the independent NumPy references (training and evaluation modes), the backward against
finite differences (check_module) on Hypothesis-drawn sizes and hyperparameters, the pure pair
against the module, dtypes kept, and nothing modified.  Each block's own properties, bad input
and PyTorch comparison are in its own file; the running statistics in test_batch_norm_blocks.py."""

from __future__ import annotations

import numpy as np
import pytest
from context_blocks_reference import (KINDS, NORM_KINDS, OPS, build, cases, host, hyper,
                                      randomize, reference)
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from npattn.gradcheck import check_module


@pytest.mark.parametrize("kind", KINDS)
@given(data=st.data())
def test_forward_and_map_match_reference(backend, kind, data):
    module, x = data.draw(cases(kind))
    ref = reference(module, x)
    module.to(backend.xp)
    xb = backend.asarray(x)
    np.testing.assert_allclose(backend.to_numpy(module.attention_map(xb)), ref.map,
                               rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(backend.to_numpy(module.forward(xb)), ref.y, rtol=1e-11, atol=1e-12)
    if kind in NORM_KINDS:
        for name, b in host(module.buffers).items():
            np.testing.assert_allclose(b, ref.buffers[name], rtol=1e-12, atol=1e-14, err_msg=name)


@pytest.mark.parametrize("kind", KINDS)
def test_backward_matches_finite_differences(backend, kind):
    # Full differences on NumPy; on array_api_strict, whose many small arrays make each forward
    # some ten times slower, one random direction per input and fewer draws (the registry test
    # checks every entry there once).
    numpy = backend.name == "numpy"
    budget = settings(settings.default, max_examples=min(settings.default.max_examples,
                                                         10 if numpy else 4))

    @budget
    @given(case=cases(kind))
    def check(case):
        module, x = case
        assume(reference(module, x).margin > 1e-4)         # away from the ReLU and h-swish kinks
        module.to(backend.xp)
        report = check_module(module, backend.asarray(x), mode="full" if numpy else "directional",
                              n_directions=1, rng=0)
        report.raise_if_failed()
        assert {c.name for c in report.inputs} == {"x", *module.params}

    check()


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("kind", KINDS)
def test_pure_pair_matches_module(backend, kind, training):
    rng = np.random.default_rng(2)
    module = randomize(build(kind, 3, rng), rng).train(training).to(backend.xp)
    pure_forward, pure_backward = type(module).pure_forward, type(module).pure_backward
    x = backend.asarray(rng.standard_normal((2, 3, 3, 2)))
    dy = backend.asarray(rng.standard_normal((2, 3, 3, 2)))
    extra = hyper(module)
    if kind in NORM_KINDS:
        extra.update(buffers=dict(module.buffers), training=training)
    y, cache = pure_forward(x, dict(module.params), **extra)
    dx, dparams = pure_backward(dy, cache)
    np.testing.assert_array_equal(backend.to_numpy(y), backend.to_numpy(module.forward(x)))
    np.testing.assert_array_equal(backend.to_numpy(dx), backend.to_numpy(module.backward(dy)))
    assert set(dparams) == set(module.params)
    for name, g in dparams.items():
        assert g.shape == module.params[name].shape
        np.testing.assert_array_equal(backend.to_numpy(g), backend.to_numpy(module.grads[name]))


@pytest.mark.parametrize("kind", KINDS)
def test_float32_stays_float32_and_nothing_is_modified(backend, kind):
    rng = np.random.default_rng(5)
    module = randomize(build(kind, 2, rng, dtype="float32"), rng).to(backend.xp)
    params_before = host(module.params)
    buffers_before = host(module.buffers) if kind in NORM_KINDS else {}
    x_np = rng.standard_normal((2, 2, 3, 3)).astype(np.float32)
    dy_np = rng.standard_normal(x_np.shape).astype(np.float32)
    x, dy = backend.asarray(x_np), backend.asarray(dy_np)
    extra = {**hyper(module), **({"buffers": dict(module.buffers)} if kind in NORM_KINDS else {})}
    y, cache = type(module).pure_forward(x, dict(module.params), **extra)
    dx, dparams = type(module).pure_backward(dy, cache)
    assert y.dtype == dx.dtype == backend.dtype("float32")
    assert all(g.dtype == backend.dtype("float32") for g in dparams.values())
    if kind in NORM_KINDS:
        assert all(b.dtype == backend.dtype("float32") for b in cache.buffers.values())
    np.testing.assert_array_equal(backend.to_numpy(x), x_np)
    np.testing.assert_array_equal(backend.to_numpy(dy), dy_np)
    for before, after in ((params_before, host(module.params)),
                          (buffers_before, host(module.buffers) if kind in NORM_KINDS else {})):
        for name, value in before.items():
            np.testing.assert_array_equal(after[name], value, err_msg=name)
    ref = reference(module, x_np.astype(np.float64))
    np.testing.assert_allclose(backend.to_numpy(y), ref.y, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_backward_checks_dy_shape(backend, kind):
    module = build(kind, 2, 0).to(backend.xp)
    module.forward(backend.asarray(np.zeros((2, 2, 2, 2))))
    dy = "dv" if kind == "SelectiveKernel" else "dy"
    with pytest.raises(ValueError, match=rf"{OPS[kind]}_backward: argument '{dy}' expected shape "
                                         r"\(2, 2, 2, 2\), got shape \(2, 2, 2, 3\)"):
        module.backward(backend.asarray(np.zeros((2, 2, 2, 3))))
