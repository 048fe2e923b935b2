"""NonLocal: forward against an independent einsum reference in both modes, softmax rows summing
to one, equivariance under a permutation of positions, gradients by finite differences
(check_module) on Hypothesis-drawn sizes, the pure pair against the module, the fused pair
against the op-by-op spec (forward, map and every gradient, float32 and float64), dtypes, no
mutation, bad input, and PyTorch where installed."""

from __future__ import annotations

import numpy as np
import pytest
from blocks_reference import host_params
from hypothesis import given, settings
from hypothesis import strategies as st

from npattn.backend import all_within, exp_into
from npattn.blocks import NonLocal, nonlocal_backward, nonlocal_forward
import npattn.blocks.nonlocal_ as nonlocal_module
from npattn.blocks.nonlocal_ import nonlocal_backward_by_ops, nonlocal_forward_by_ops
from npattn.gradcheck import check_module

MODES = ["embedded_gaussian", "dot_product"]


def ref_nonlocal(x, p, mode):
    """The block by einsum on flattened positions; returns (z, attention matrix)."""
    n, c, h, w = x.shape

    def conv1x1(name, v):                                          # v: (N, C_in, P)
        return (np.einsum("oc,ncp->nop", p[f"{name}.weight"][:, :, 0, 0], v)
                + p[f"{name}.bias"][None, :, None])

    flat = x.reshape(n, c, h * w)
    theta, phi, g = conv1x1("theta", flat), conv1x1("phi", flat), conv1x1("g", flat)
    f = np.einsum("nip,niq->npq", theta, phi)                      # f[p, q] = theta_p . phi_q
    if mode == "embedded_gaussian":
        e = np.exp(f - f.max(axis=2, keepdims=True))
        a = e / e.sum(axis=2, keepdims=True)
    else:
        a = f / (h * w)
    y = np.einsum("npq,niq->nip", a, g)                            # y_p = sum_q a[p, q] g_q
    return x + conv1x1("out", y).reshape(n, c, h, w), a


@st.composite
def nonlocal_cases(draw):
    channels = draw(st.integers(1, 3))
    inter = draw(st.none() | st.integers(1, 2))
    module = NonLocal(channels, inter, draw(st.sampled_from(MODES)),
                      rng=draw(st.integers(0, 2**32 - 1)), dtype="float64")
    shape = (draw(st.integers(1, 2)), channels, draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    x = 2.0 * np.random.default_rng(draw(st.integers(0, 2**32 - 1))).standard_normal(shape)
    return module, x


@given(case=nonlocal_cases())
def test_forward_and_map_match_reference(backend, case):
    module, x = case
    z_ref, a_ref = ref_nonlocal(x, host_params(module), module.mode)
    module.to(backend.xp)
    xb = backend.asarray(x)
    np.testing.assert_allclose(backend.to_numpy(module.forward(xb)), z_ref, rtol=1e-12, atol=1e-12)
    a = backend.to_numpy(module.attention_map(xb))
    np.testing.assert_allclose(a, a_ref, rtol=1e-12, atol=1e-14)
    if module.mode == "embedded_gaussian":
        np.testing.assert_allclose(a.sum(axis=2), 1.0, rtol=1e-13)
        assert np.all(a > 0)


@given(case=nonlocal_cases())
def test_backward_matches_finite_differences(backend, case):
    module, x = case
    module.to(backend.xp)
    report = check_module(module, backend.asarray(x), rng=0)
    report.raise_if_failed()
    assert {c.name for c in report.inputs} == {"x", *module.params}


@pytest.mark.parametrize("mode", MODES)
def test_permuting_positions_permutes_the_output(backend, mode):
    rng = np.random.default_rng(11)
    module = NonLocal(3, 2, mode, rng=1, dtype="float64").to(backend.xp)
    n, c, h, w = 2, 3, 3, 4
    x = rng.standard_normal((n, c, h, w))
    perm = rng.permutation(h * w)
    x_perm = x.reshape(n, c, h * w)[:, :, perm].reshape(n, c, h, w)
    z = backend.to_numpy(module.forward(backend.asarray(x)))
    z_perm = backend.to_numpy(module.forward(backend.asarray(x_perm)))
    np.testing.assert_allclose(z_perm, z.reshape(n, c, h * w)[:, :, perm].reshape(n, c, h, w),
                               rtol=1e-12, atol=1e-13)
    a = backend.to_numpy(module.attention_map(backend.asarray(x)))
    a_perm = backend.to_numpy(module.attention_map(backend.asarray(x_perm)))
    np.testing.assert_allclose(a_perm, a[:, perm][:, :, perm], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("mode", MODES)
def test_pure_pair_matches_module(backend, mode):
    module = NonLocal(4, rng=2, mode=mode, dtype="float64").to(backend.xp)
    assert module.inter_channels == 2
    x = backend.asarray(np.random.default_rng(0).standard_normal((2, 4, 3, 2)))
    dz = backend.asarray(np.random.default_rng(1).standard_normal((2, 4, 3, 2)))
    z, cache = nonlocal_forward(x, dict(module.params), mode)
    dx, dparams = nonlocal_backward(dz, cache)
    np.testing.assert_allclose(backend.to_numpy(z), backend.to_numpy(module.forward(x)), rtol=1e-15)
    np.testing.assert_allclose(backend.to_numpy(dx), backend.to_numpy(module.backward(dz)),
                               rtol=1e-15)
    assert set(dparams) == set(module.params)
    for name, g in dparams.items():
        np.testing.assert_allclose(backend.to_numpy(g), backend.to_numpy(module.grads[name]),
                                   rtol=1e-15)


@settings(deadline=None)
@given(channels=st.integers(1, 4), inter=st.integers(1, 3), n=st.integers(1, 2),
       h=st.integers(1, 4), w=st.integers(1, 4), mode=st.sampled_from(MODES),
       dtype=st.sampled_from(["float32", "float64"]), seed=st.integers(0, 2**16),
       try_bound=st.booleans())
def test_fused_pair_matches_the_op_by_op_spec(backend, channels, inter, n, h, w, mode, dtype,
                                              seed, try_bound, monkeypatch):
    monkeypatch.setattr(nonlocal_module, "_BOUND_MIN_ENTRIES", 0 if try_bound else 2**19)
    module = NonLocal(channels, inter, mode, rng=seed, dtype=dtype).to(backend.xp)
    params = dict(module.params)
    rng = np.random.default_rng(seed)
    x_np = (2.0 * rng.standard_normal((n, channels, h, w))).astype(dtype)
    dz_np = rng.standard_normal(x_np.shape).astype(dtype)
    x, dz = backend.asarray(x_np), backend.asarray(dz_np)
    z, cache = nonlocal_forward(x, params, mode)
    z_spec, cache_spec = nonlocal_forward_by_ops(x, params, mode)
    dx, grads = nonlocal_backward(dz, cache)
    dx_spec, grads_spec = nonlocal_backward_by_ops(dz, cache_spec)
    tol = dict(rtol=2e-5, atol=2e-5) if dtype == "float32" else dict(rtol=1e-12, atol=1e-12)
    for got, want in [(z, z_spec), (cache.map, cache_spec.map), (dx, dx_spec),
                      *((grads[k], grads_spec[k]) for k in grads_spec)]:
        assert got.dtype == want.dtype and tuple(got.shape) == tuple(want.shape)
        np.testing.assert_allclose(backend.to_numpy(got), backend.to_numpy(want), **tol)
    assert set(grads) == set(grads_spec)
    np.testing.assert_array_equal(backend.to_numpy(x), x_np)
    np.testing.assert_array_equal(backend.to_numpy(dz), dz_np)


@pytest.mark.parametrize("mode", MODES)
def test_fused_backward_over_several_row_blocks(backend, mode, monkeypatch):
    """The backward's loop over blocks of rows (whole samples up to 1024 rows) with 4 blocks."""
    monkeypatch.setattr(nonlocal_module, "ROW_BLOCK", 3)
    module = NonLocal(3, 2, mode, rng=7, dtype="float64").to(backend.xp)
    rng = np.random.default_rng(8)
    x = backend.asarray(rng.standard_normal((2, 3, 2, 5)))
    dz = backend.asarray(rng.standard_normal((2, 3, 2, 5)))
    dx, grads = nonlocal_backward(dz, nonlocal_forward(x, dict(module.params), mode)[1])
    dx_spec, grads_spec = nonlocal_backward_by_ops(
        dz, nonlocal_forward_by_ops(x, dict(module.params), mode)[1])
    np.testing.assert_allclose(backend.to_numpy(dx), backend.to_numpy(dx_spec), rtol=1e-12,
                               atol=1e-12)
    for name, g in grads_spec.items():
        np.testing.assert_allclose(backend.to_numpy(grads[name]), backend.to_numpy(g),
                                   rtol=1e-12, atol=1e-12)


def _constant_logits_params(module, value, dtype):
    """Params whose theta and phi are constant rows with f_ij = value for every pair."""
    params = {k: np.array(v, dtype=dtype) for k, v in host_params(module).items()}
    ci = params["theta.bias"].shape[0]
    for name in ("theta", "phi"):
        params[f"{name}.weight"][...] = 0.0
    params["theta.bias"][...] = 1.0
    params["phi.bias"][...] = value / ci
    return params


@pytest.mark.parametrize("try_bound", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("logit", [-1000.0, -25.0, 55.0, 250.0, 1e4])
def test_fused_pair_matches_the_spec_at_extreme_logits(backend, dtype, logit, try_bound,
                                                       monkeypatch):
    """Row maxima of f outside the range where the forward skips subtracting them (float32
    [-20, 60], float64 [-300, 300]) and just inside them, with and without the bound on |f|
    that skips the maxima too (tried from 2**19 entries; here from 0): the fused pair equals
    the spec, and the map is uniform (every f_ij is equal)."""
    if try_bound:
        monkeypatch.setattr(nonlocal_module, "_BOUND_MIN_ENTRIES", 0)
    module = NonLocal(3, 2, rng=9, dtype=dtype)
    host = _constant_logits_params(module, logit, dtype)
    params = {k: backend.asarray(v) for k, v in host.items()}
    rng = np.random.default_rng(10)
    x = backend.asarray(rng.standard_normal((2, 3, 3, 4)).astype(dtype))
    dz = backend.asarray(rng.standard_normal((2, 3, 3, 4)).astype(dtype))
    z, cache = nonlocal_forward(x, params)
    z_spec, cache_spec = nonlocal_forward_by_ops(x, params)
    dx, grads = nonlocal_backward(dz, cache)
    dx_spec, grads_spec = nonlocal_backward_by_ops(dz, cache_spec)
    eps = float(np.finfo(dtype).eps)
    np.testing.assert_allclose(backend.to_numpy(cache.map), 1.0 / 12, rtol=10 * eps)
    # theta's and phi's gradients are zero up to rounding on terms of size |logit|
    tol = dict(rtol=200 * eps, atol=200 * eps * (1.0 + abs(logit)))
    for got, want in [(z, z_spec), (dx, dx_spec), *((grads[k], grads_spec[k]) for k in grads)]:
        assert np.all(np.isfinite(backend.to_numpy(got)))
        np.testing.assert_allclose(backend.to_numpy(got), backend.to_numpy(want), **tol)


def test_all_within_fast_and_portable():
    a = np.array([[-1.0, 2.0], [0.5, 3.0]])
    assert all_within(a, -1.0, 3.0) is True
    assert all_within(a, -0.5, 3.0) is False and all_within(a, -1.0, 2.5) is False
    assert all_within(np.array([1.0, np.nan]), 0.0, 2.0) is False
    assert all_within(np.zeros((0, 2)), 0.0, 1.0) is True
    assert all_within(a, -1.0, 3.0, fast=False) is None


def test_all_within_is_unknown_off_numpy(backend):
    a = backend.asarray(np.array([1.0, 2.0]))
    assert all_within(a, 0.0, 3.0) is (True if backend.name == "numpy" else None)


def test_fused_backward_can_run_twice_on_one_cache(backend):
    module = NonLocal(4, 2, rng=4, dtype="float64").to(backend.xp)
    rng = np.random.default_rng(6)
    x = backend.asarray(rng.standard_normal((2, 4, 3, 3)))
    dz = backend.asarray(rng.standard_normal((2, 4, 3, 3)))
    _, cache = nonlocal_forward(x, dict(module.params))
    map_before = backend.to_numpy(cache.map)
    first, second = nonlocal_backward(dz, cache), nonlocal_backward(dz, cache)
    np.testing.assert_array_equal(backend.to_numpy(first[0]), backend.to_numpy(second[0]))
    np.testing.assert_array_equal(backend.to_numpy(cache.map), map_before)


def test_exp_into_fast_and_portable_agree():
    rng = np.random.default_rng(2)
    for dtype in ["float32", "float64"]:
        x = rng.standard_normal((3, 5, 7)).astype(dtype)
        portable = exp_into(x.copy(), fast=False)
        target = x.copy()
        fast = exp_into(target)
        assert fast is target and fast.dtype == x.dtype
        np.testing.assert_array_equal(fast, portable)
        np.testing.assert_array_equal(portable, np.exp(x))
    strided = rng.standard_normal((4, 6))[:, ::2]
    np.testing.assert_array_equal(exp_into(strided.copy()), np.exp(strided))
    np.testing.assert_array_equal(exp_into(strided), np.exp(strided))   # not contiguous: fresh


def test_exp_into_every_backend(backend):
    x = np.random.default_rng(3).standard_normal((2, 3))
    got = exp_into(backend.asarray(x.copy()))                 # NumPy: written over the copy
    np.testing.assert_allclose(backend.to_numpy(got), np.exp(x), rtol=1e-15)


@pytest.mark.parametrize("mode", MODES)
def test_float32_stays_float32_and_nothing_is_modified(backend, mode):
    module = NonLocal(4, 3, mode, rng=3).to(backend.xp)
    params_before = host_params(module)
    rng = np.random.default_rng(5)
    x_np = rng.standard_normal((2, 4, 2, 3)).astype(np.float32)
    dz_np = rng.standard_normal(x_np.shape).astype(np.float32)
    x, dz = backend.asarray(x_np), backend.asarray(dz_np)
    z = module.forward(x)
    dx = module.backward(dz)
    assert z.dtype == backend.dtype("float32") and dx.dtype == backend.dtype("float32")
    assert all(g.dtype == backend.dtype("float32") for g in module.grads.values())
    np.testing.assert_array_equal(backend.to_numpy(x), x_np)
    np.testing.assert_array_equal(backend.to_numpy(dz), dz_np)
    for name, p in host_params(module).items():
        np.testing.assert_array_equal(p, params_before[name])
    z_ref, _ = ref_nonlocal(x_np.astype(np.float64), params_before, mode)
    np.testing.assert_allclose(backend.to_numpy(z), z_ref, rtol=1e-5, atol=1e-5)


def test_bad_input(backend):
    module = NonLocal(4, rng=0, dtype="float64").to(backend.xp)
    with pytest.raises(ValueError, match="NonLocal: argument 'x' expected 4 channels"):
        module.forward(backend.asarray(np.zeros((1, 3, 2, 2))))
    with pytest.raises(ValueError, match="NonLocal: argument 'mode' expected one of"):
        NonLocal(4, mode="gaussian")
    with pytest.raises(ValueError, match="NonLocal: argument 'inter_channels' expected an int >= 1"):
        NonLocal(4, inter_channels=0)
    params = dict(module.params)
    x = backend.asarray(np.zeros((1, 4, 2, 2)))
    with pytest.raises(ValueError, match="nonlocal: argument 'mode' expected one of"):
        nonlocal_forward(x, params, "concatenation")
    del params["out.bias"]
    with pytest.raises(ValueError, match="nonlocal: argument 'params' expected the keys"):
        nonlocal_forward(x, params)


def test_matches_pytorch_after_loading_its_state_dict():
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class TorchNonLocal(nn.Module):
        def __init__(self, c, ci, mode):
            super().__init__()
            self.theta, self.phi, self.g = (nn.Conv2d(c, ci, 1) for _ in range(3))
            self.out = nn.Conv2d(ci, c, 1)
            self.mode = mode

        def forward(self, x):
            n, _, h, w = x.shape
            theta = self.theta(x).flatten(2).transpose(1, 2)           # (N, HW, Ci)
            phi = self.phi(x).flatten(2)                               # (N, Ci, HW)
            g = self.g(x).flatten(2).transpose(1, 2)                   # (N, HW, Ci)
            f = theta @ phi
            a = f.softmax(dim=-1) if self.mode == "embedded_gaussian" else f / (h * w)
            y = (a @ g).transpose(1, 2).reshape(n, -1, h, w)
            return x + self.out(y)

    for mode in MODES:
        torch.manual_seed(0)
        reference = TorchNonLocal(6, 3, mode).double()
        module = NonLocal(6, 3, mode, dtype="float64")
        module.load_state_dict({k: v.detach().numpy() for k, v in reference.state_dict().items()})
        x = np.random.default_rng(0).standard_normal((2, 6, 4, 3))
        dz = np.random.default_rng(1).standard_normal(x.shape)
        tx = torch.tensor(x, requires_grad=True)
        reference(tx).backward(torch.tensor(dz))
        np.testing.assert_allclose(module.forward(x), reference(tx).detach().numpy(), rtol=1e-12)
        np.testing.assert_allclose(module.backward(dz), tx.grad.numpy(), rtol=1e-10, atol=1e-12)
        for name, p in reference.named_parameters():
            np.testing.assert_allclose(module.grads[name], p.grad.numpy(), rtol=1e-10, atol=1e-12)
