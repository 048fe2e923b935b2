"""The gradient checker: correct backwards pass, planted wrong ones fail and are located.

The ops here are self-contained toys written in array-API functions (so they run on every
backend): a single-channel cross-correlation with zero padding, and a gate
``y = x * sigmoid(s * x)`` whose input feeds two paths.  Each backward takes a ``bug`` that
plants a classic mistake: a factor off at the border, a transposed kernel, a wrong sign, a
missing term of the product rule.
"""

from __future__ import annotations

import copy
import threading
from functools import partial
from typing import Any, NamedTuple

import numpy as np
import pytest
from array_api_compat import array_namespace, device
from hypothesis import given
from hypothesis import strategies as st
from scipy.optimize import approx_fprime

from npattn.gradcheck import (GradcheckError, GradcheckReport, call_args, check_adjoint,
                              check_module, check_op)



# ---------------------------------------------------------------------------------- toy ops

class ConvCache(NamedTuple):
    xpad: Any
    w: Any
    pad: int
    shape: tuple[int, int]


def toy_conv_forward(x, w, pad=0):
    """``y[i, j] = sum_ab w[a, b] xpad[i + a, j + b]``; x (H, W), w (kh, kw), zero padding."""
    xp = array_namespace(x, w)
    h, wd = x.shape
    kh, kw = w.shape
    xpad = xp.zeros((h + 2 * pad, wd + 2 * pad), dtype=x.dtype, device=device(x))
    xpad[pad:pad + h, pad:pad + wd] = x
    ho, wo = h + 2 * pad - kh + 1, wd + 2 * pad - kw + 1
    y = xp.zeros((ho, wo), dtype=x.dtype, device=device(x))
    for a in range(kh):
        for b in range(kw):
            y = y + w[a, b] * xpad[a:a + ho, b:b + wo]
    return y, ConvCache(xpad, w, pad, (h, wd))


def toy_conv_backward(dy, cache, bug=None):
    """``dx`` scatters ``w[a, b] dy`` back; ``dw[a, b] = sum(dy * xpad window)``."""
    xp = array_namespace(dy)
    xpad, w, pad, (h, wd) = cache
    kh, kw = w.shape
    ho, wo = dy.shape
    wk = xp.permute_dims(w, (1, 0)) if bug == "transposed" else w
    dxpad = xp.zeros_like(xpad)
    dw = xp.zeros_like(w)
    for a in range(kh):
        for b in range(kw):
            dxpad[a:a + ho, b:b + wo] += wk[a, b] * dy
            dw[a, b] = xp.sum(dy * xpad[a:a + ho, b:b + wo])
    dx = dxpad[pad:pad + h, pad:pad + wd]
    if bug == "border":  # twice the gradient in the last column
        factor = xp.ones_like(dx)
        factor[:, wd - 1] = 2.0
        dx = dx * factor
    if bug == "sign":
        dw = -dw
    return dx, dw


class GateCache(NamedTuple):
    x: Any
    s: Any
    g: Any


def toy_gate_forward(x, s):
    """``y = x * sigmoid(s * x)``: x feeds the product and the gate."""
    xp = array_namespace(x, s)
    g = 0.5 * (xp.tanh(0.5 * s * x) + 1.0)
    return x * g, GateCache(x, s, g)


def toy_gate_backward(dy, cache, bug=None):
    """``dx = dy g + dz s`` (the product and the gate), ``ds = dz x``, ``dz = dy x g (1 - g)``."""
    x, s, g = cache
    dz = dy * x * g * (1.0 - g)
    dx = dy * g if bug == "missing_term" else dy * g + dz * s
    return dx, dz * x


def conv_args(backend, rng, h=4, w=5, k=3, pad=1, dtype=np.float64):
    return (backend.asarray(rng.standard_normal((h, w)), dtype),
            backend.asarray(rng.standard_normal((k, k)), dtype), pad)


def gate_args(backend, rng, shape=(2, 3), dtype=np.float64):
    return (backend.asarray(rng.standard_normal(shape), dtype),
            backend.asarray(rng.standard_normal(shape), dtype))


# which input each planted bug breaks, and which it leaves right
CONV_BUGS = {"border": ("x", "w"), "transposed": ("x", "w"), "sign": ("w", "x")}


def out_of_tol(report, name):
    """The entries of a full-mode input outside its tolerance, recomputed from the report."""
    entry = report[name]
    return np.argwhere(~(np.abs(entry.analytic - entry.numeric)
                         <= entry.atol_eff + report.rtol * np.abs(entry.numeric)))


# ------------------------------------------------------------------------------ correctness

@given(h=st.integers(1, 5), w=st.integers(1, 5), k=st.integers(1, 3), pad=st.integers(0, 2),
       seed=st.integers(0, 2**32 - 1))
def test_correct_conv_passes_both_modes(backend, h, w, k, pad, seed):
    h, w = max(h, k - 2 * pad), max(w, k - 2 * pad)
    args = conv_args(backend, np.random.default_rng(seed), h, w, k, pad)
    for mode in ("full", "directional"):
        report = check_op(toy_conv_forward, toy_conv_backward, *args, mode=mode, rng=seed)
        assert report.passed, str(report)
        assert [c.name for c in report.inputs] == ["x", "w"]


def test_correct_gate_passes_and_adjoint_holds(backend, rng):
    args = gate_args(backend, rng)
    check_op(toy_gate_forward, toy_gate_backward, *args).raise_if_failed()
    conv = conv_args(backend, rng)
    check_adjoint(toy_conv_forward, toy_conv_backward, *conv).raise_if_failed()


# --------------------------------------------------------------------------- planted bugs

@pytest.mark.parametrize("bug", sorted(CONV_BUGS))
@pytest.mark.parametrize("mode", ["full", "directional"])
def test_planted_conv_bug_fails_and_names_the_input(backend, rng, bug, mode):
    wrong, right = CONV_BUGS[bug]
    report = check_op(toy_conv_forward, partial(toy_conv_backward, bug=bug),
                      *conv_args(backend, rng), mode=mode)
    assert not report.passed
    assert not report[wrong].passed and report[wrong].n_out_of_tol > 0
    assert report[right].passed, str(report)
    text = str(report)
    assert "FAILED" in text
    row = next(line for line in text.splitlines() if line.strip().startswith(wrong + " "))
    assert row.rstrip().endswith("FAIL")
    with pytest.raises(GradcheckError) as info:
        report.raise_if_failed()
    assert isinstance(info.value, AssertionError) and str(info.value) == text


def test_border_bug_located_in_the_last_column(backend, rng):
    h, w = 4, 5
    report = check_op(toy_conv_forward, partial(toy_conv_backward, bug="border"),
                      *conv_args(backend, rng, h, w))
    x = report["x"]
    assert x.worst_index[1] == w - 1
    bad = out_of_tol(report, "x")
    assert len(bad) == x.n_out_of_tol > 0 and set(bad[:, 1]) == {w - 1}
    assert x.frac_out_of_tol == pytest.approx(x.n_out_of_tol / (h * w))
    # the worst entry's values are the planted factor apart
    assert x.analytic_at_worst == pytest.approx(2 * x.numeric_at_worst, rel=1e-6)
    assert str(x.worst_index) in str(report)


@given(h=st.integers(2, 5), w=st.integers(2, 5), k=st.integers(2, 3), pad=st.integers(0, 2),
       bug=st.sampled_from(sorted(CONV_BUGS)), mode=st.sampled_from(["full", "directional"]),
       seed=st.integers(0, 2**32 - 1))
def test_planted_conv_bugs_fail_on_drawn_shapes(backend, h, w, k, pad, bug, mode, seed):
    h, w = max(h, k - 2 * pad), max(w, k - 2 * pad)
    report = check_op(toy_conv_forward, partial(toy_conv_backward, bug=bug),
                      *conv_args(backend, np.random.default_rng(seed), h, w, k, pad),
                      mode=mode, rng=seed)
    assert not report[CONV_BUGS[bug][0]].passed, str(report)


@pytest.mark.parametrize("mode", ["full", "directional"])
def test_missing_product_rule_term_fails_on_x_only(backend, rng, mode):
    report = check_op(toy_gate_forward, partial(toy_gate_backward, bug="missing_term"),
                      *gate_args(backend, rng), mode=mode)
    assert not report["x"].passed and report["s"].passed, str(report)


def test_transposed_kernel_fails_the_adjoint_test(backend, rng):
    report = check_adjoint(toy_conv_forward, partial(toy_conv_backward, bug="transposed"),
                           *conv_args(backend, rng))
    assert not report["x"].passed and report["w"].passed, str(report)
    with pytest.raises(GradcheckError, match="check_adjoint toy_conv: FAILED"):
        report.raise_if_failed()


# ------------------------------------------------------------------------ the numeric side

def test_numeric_gradient_matches_scipy_approx_fprime(backend, rng):
    x, w, pad = conv_args(backend, rng, 3, 4, 2, 1)
    report = check_op(toy_conv_forward, toy_conv_backward, x, w, pad)
    u = report.cotangent
    x_np = backend.to_numpy(x)

    def objective(flat):
        y, _ = toy_conv_forward(backend.asarray(flat.reshape(x_np.shape)), w, pad)
        return float(np.sum(u * backend.to_numpy(y)))

    scipy_grad = approx_fprime(x_np.ravel(), objective, 1e-7).reshape(x_np.shape)
    np.testing.assert_allclose(report["x"].numeric, scipy_grad, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(report["x"].analytic, scipy_grad, rtol=1e-5, atol=1e-6)


def test_float32_analytic_with_float64_differences(backend, rng):
    args = conv_args(backend, rng, dtype=np.float32)
    report = check_op(toy_conv_forward, toy_conv_backward, *args)
    assert report.passed, str(report)
    assert report.dtype == "float32" and report.fd_dtype == "float64"
    assert report.atol == 1e-4 and report.rtol == 1e-3
    # the numeric gradient is float64-accurate: it matches the exact float64 gradient
    exact = check_op(toy_conv_forward, toy_conv_backward,
                     *[backend.asarray(backend.to_numpy(a), np.float64) for a in args[:2]], args[2])
    np.testing.assert_allclose(report["x"].numeric, exact["x"].analytic, rtol=1e-8, atol=1e-9)
    bad = check_op(toy_conv_forward, partial(toy_conv_backward, bug="border"), *args)
    assert not bad["x"].passed and bad["w"].passed


def test_gradient_of_the_wrong_dtype_or_shape_fails(backend, rng):
    x, s = gate_args(backend, rng, dtype=np.float32)

    def upcast(dy, cache):
        dx, ds = toy_gate_backward(dy, cache)
        return array_namespace(dx).astype(dx, array_namespace(dx).float64), ds

    report = check_op(toy_gate_forward, upcast, x, s)
    assert not report["x"].passed and "dtype float64, expected float32" in report["x"].note
    assert report["s"].passed

    def flat(dy, cache):
        dx, ds = toy_gate_backward(dy, cache)
        return array_namespace(dx).reshape(dx, (-1,)), ds

    report = check_op(toy_gate_forward, flat, x, s)
    assert not report["x"].passed and "shape (6,), expected (2, 3)" in report["x"].note
    assert "shape (6,)" in str(report)


def test_none_gradient_means_zero(backend, rng):
    x, s = gate_args(backend, rng)

    def ignores_s(x, s):
        return toy_gate_forward(x, s * 0.0 + 1.0)

    def no_ds(dy, cache):
        return toy_gate_backward(dy, cache)[0], None

    report = check_op(ignores_s, no_ds, x, s)
    assert report.passed and "compared with zero" in report["s"].note, str(report)
    report = check_op(toy_gate_forward, no_ds, x, s)
    assert not report["s"].passed and report["x"].passed


def test_short_result_gets_an_alignment_note(backend, rng):
    x, s = gate_args(backend, rng)

    def only_dx(dy, cache):
        return toy_gate_backward(dy, cache)[0]

    report = check_op(toy_gate_forward, only_dx, x, s)
    assert not report.passed
    assert "aligned with the forward's parameters in signature order" in str(report)


def test_dict_argument_entries_are_inputs(backend, rng):
    x, s = gate_args(backend, rng)

    def gate_p(x, params):
        return toy_gate_forward(x, params["s"])

    def gate_p_backward(dy, cache, bug=None):
        dx, ds = toy_gate_backward(dy, cache, bug)
        return dx, {"s": ds}

    report = check_op(gate_p, gate_p_backward, x, {"s": s})
    assert report.passed and [c.name for c in report.inputs] == ["x", "params['s']"]
    report = check_op(gate_p, partial(gate_p_backward, bug="missing_term"), x, {"s": s},
                      inputs="params")
    assert report.passed and [c.name for c in report.inputs] == ["params['s']"]
    assert not check_op(gate_p, partial(gate_p_backward, bug="missing_term"), x, {"s": s}).passed


# ----------------------------------------------------------------------- hygiene and errors

def test_caller_arrays_are_not_modified(backend, rng):
    args = conv_args(backend, rng)
    before = [backend.to_numpy(a).copy() for a in args[:2]]
    check_op(toy_conv_forward, toy_conv_backward, *args)
    check_op(toy_conv_forward, toy_conv_backward, *args, mode="directional")
    check_adjoint(toy_conv_forward, toy_conv_backward, *args)
    for a, b in zip(args[:2], before):
        np.testing.assert_array_equal(backend.to_numpy(a), b)


def test_an_op_that_modifies_its_input_or_dy_fails(backend, rng):
    x, s = gate_args(backend, rng)

    def scribbles_on_x(x, s):
        y, cache = toy_gate_forward(x, s)
        out = (y * 1.0, cache)
        x[0, 0] = 100.0
        return out

    report = check_op(scribbles_on_x, toy_gate_backward, backend.xp.asarray(x, copy=True), s)
    assert not report.passed and "modified its input 'x'" in str(report)

    def scribbles_on_dy(dy, cache):
        grads = toy_gate_backward(dy, cache)
        dy[0, 0] = 0.0
        return grads

    report = check_op(toy_gate_forward, scribbles_on_dy, x, s)
    assert not report.passed and "backward modified dy" in str(report)


def test_inputs_selects_and_bad_options_raise(backend, rng):
    args = conv_args(backend, rng)
    report = check_op(toy_conv_forward, toy_conv_backward, *args, inputs=["w"])
    assert [c.name for c in report.inputs] == ["w"]
    with pytest.raises(ValueError, match="check_op: argument 'inputs'.*'y'"):
        check_op(toy_conv_forward, toy_conv_backward, *args, inputs="y")
    with pytest.raises(ValueError, match="check_op: argument 'mode'"):
        check_op(toy_conv_forward, toy_conv_backward, *args, mode="half")
    with pytest.raises(ValueError, match="n_directions"):
        check_op(toy_conv_forward, toy_conv_backward, *args, mode="directional", n_directions=0)
    with pytest.raises(TypeError, match="check_op: argument 'args'"):
        check_op(toy_conv_forward, toy_conv_backward, *args, 7)
    with pytest.raises(TypeError, match="floating-point array"):
        check_op(toy_conv_forward, toy_conv_backward, [[1.0]], [[1.0]])


def test_forward_with_its_own_mode_argument(backend, rng):
    x, s = gate_args(backend, rng)

    def gate_mode(x, s, mode="gate"):
        return toy_gate_forward(x, s if mode == "gate" else s * 0.0)

    with pytest.raises(ValueError, match="has its own 'mode': pass it positionally"):
        check_op(gate_mode, toy_gate_backward, x, s, mode="gate")
    a, k = call_args(gate_mode, x, s, mode="gate")
    assert k == {} and a[2] == "gate"
    assert check_op(gate_mode, toy_gate_backward, *a, **k).passed


# ------------------------------------------------------------------------------ check_module

class ToyDense:
    """``y = tanh(x @ w.T + b)``, x (N, C), params ``w`` (C, C) and ``b`` (C,).

    ``bug="transposed"`` returns ``dw`` transposed; ``float32_only`` computes in float32 always.
    """

    def __init__(self, w, b, bug=None, float32_only=False):
        self.params = {"w": w, "b": b}
        self.grads = {}
        self.bug, self.float32_only = bug, float32_only
        self.cache = None
        self.zero_grad()

    def zero_grad(self):
        self.grads = {k: array_namespace(v).zeros_like(v) for k, v in self.params.items()}

    def forward(self, x):
        xp = array_namespace(x)
        w, b = self.params["w"], self.params["b"]
        if self.float32_only:
            x, w, b = (xp.astype(a, xp.float32) for a in (x, w, b))
        y = xp.tanh(x @ xp.matrix_transpose(w) + b)
        self.cache = (x, y)
        return y

    def backward(self, dy):
        if self.cache is None:
            raise RuntimeError("ToyDense.backward: call forward first")
        xp = array_namespace(dy)
        (x, y), self.cache = self.cache, None
        dz = dy * (1.0 - y * y)
        dw = xp.matrix_transpose(dz) @ x
        if self.bug == "transposed":
            dw = xp.matrix_transpose(dw)
        self.grads["w"] = self.grads["w"] + dw
        self.grads["b"] = self.grads["b"] + xp.sum(dz, axis=0)
        return dz @ self.params["w"]


def dense(backend, rng, dtype=np.float64, **kw):
    c = 3
    module = ToyDense(backend.asarray(rng.standard_normal((c, c)) / 2, dtype),
                      backend.asarray(rng.standard_normal(c) / 2, dtype), **kw)
    return module, backend.asarray(rng.standard_normal((2, c)), dtype)


@pytest.mark.parametrize("mode", ["full", "directional"])
def test_check_module_passes_and_leaves_the_module_alone(backend, rng, mode):
    module, x = dense(backend, rng)
    module.grads["w"] = module.grads["w"] + 1.0
    params, grads = dict(module.params), {k: backend.to_numpy(v).copy() for k, v in module.grads.items()}
    report = check_module(module, x, mode=mode)
    assert isinstance(report, GradcheckReport) and report.passed, str(report)
    assert [c.name for c in report.inputs] == ["x", "w", "b"]
    assert all(module.params[k] is params[k] for k in params)
    for k, g in grads.items():
        np.testing.assert_array_equal(backend.to_numpy(module.grads[k]), g)


@pytest.mark.parametrize("mode", ["full", "directional"])
def test_check_module_catches_a_transposed_weight_gradient(backend, rng, mode):
    module, x = dense(backend, rng, bug="transposed")
    report = check_module(module, x, mode=mode)
    assert not report["w"].passed and report["x"].passed and report["b"].passed, str(report)
    assert "check_module ToyDense: FAILED" in str(report)


def test_check_module_float32_differences_in_float64(backend, rng):
    module, x = dense(backend, rng, np.float32)
    report = check_module(module, x)
    assert report.passed and report.fd_dtype == "float64" and not report.notes, str(report)
    assert backend.to_numpy(module.params["w"]).dtype == np.float32


def test_check_module_without_a_float64_path_says_so(backend, rng):
    module, x = dense(backend, rng, np.float32, float32_only=True)
    report = check_module(module, x)
    assert report.passed and report.fd_dtype == "float32", str(report)
    assert report.atol == 1e-2 and "does not compute in float64" in str(report)


def test_check_module_restores_an_uncopyable_module(backend, rng):
    module, x = dense(backend, rng)
    module.lock = threading.Lock()
    with pytest.raises(TypeError):
        copy.deepcopy(module)
    module.grads["b"] = module.grads["b"] + 2.0
    params, grads = dict(module.params), {k: backend.to_numpy(v).copy() for k, v in module.grads.items()}
    assert check_module(module, x).passed
    assert all(module.params[k] is params[k] for k in params)
    for k, g in grads.items():
        np.testing.assert_array_equal(backend.to_numpy(module.grads[k]), g)


def test_check_module_inputs_and_errors(backend, rng):
    module, x = dense(backend, rng)
    assert [c.name for c in check_module(module, x, inputs=["b"]).inputs] == ["b"]
    with pytest.raises(ValueError, match="check_module: argument 'inputs'"):
        check_module(module, x, inputs=["nope"])
    with pytest.raises(TypeError, match="check_module: argument 'x'"):
        check_module(module, [[1.0, 2.0, 3.0]])
