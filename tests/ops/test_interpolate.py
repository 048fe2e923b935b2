"""interpolate (nearest, bilinear; align_corners both ways): PyTorch's documented outputs, explicit
per-pixel loops, its scale and floor rules, the dot-product test and finite differences, dtypes,
no mutation, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import npattn.ops as ops
from npattn.gradcheck import call_args, check_adjoint, check_op

seeds = st.integers(0, 2**32 - 1)


# ------------------------------------------------------------------ PyTorch's documented values
# From the examples of torch.nn.Upsample: the 2x2 input [[1, 2], [3, 4]] doubled, and the same
# input in the corner of a 3x3 map of zeros, doubled.

TWO_BY_TWO = np.array([[1.0, 2.0], [3.0, 4.0]])
THREE_BY_THREE = np.pad(TWO_BY_TWO, ((0, 1), (0, 1)))
DOCUMENTED = [
    (TWO_BY_TWO, "nearest", None,
     [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]),
    (TWO_BY_TWO, "bilinear", False,
     [[1.0, 1.25, 1.75, 2.0], [1.5, 1.75, 2.25, 2.5], [2.5, 2.75, 3.25, 3.5],
      [3.0, 3.25, 3.75, 4.0]]),
    (TWO_BY_TWO, "bilinear", True,
     [[1.0, 4 / 3, 5 / 3, 2.0], [5 / 3, 2.0, 7 / 3, 8 / 3], [7 / 3, 8 / 3, 3.0, 10 / 3],
      [3.0, 10 / 3, 11 / 3, 4.0]]),
    (THREE_BY_THREE, "bilinear", False,
     [[1.0, 1.25, 1.75, 1.5, 0.5, 0.0], [1.5, 1.75, 2.25, 1.875, 0.625, 0.0],
      [2.5, 2.75, 3.25, 2.625, 0.875, 0.0], [2.25, 2.4375, 2.8125, 2.25, 0.75, 0.0],
      [0.75, 0.8125, 0.9375, 0.75, 0.25, 0.0], [0.0] * 6]),
    (THREE_BY_THREE, "bilinear", True,
     [[1.0, 1.4, 1.8, 1.6, 0.8, 0.0], [1.8, 2.2, 2.6, 2.24, 1.12, 0.0],
      [2.6, 3.0, 3.4, 2.88, 1.44, 0.0], [2.4, 2.72, 3.04, 2.56, 1.28, 0.0],
      [1.2, 1.36, 1.52, 1.28, 0.64, 0.0], [0.0] * 6]),
]


@pytest.mark.parametrize("image, mode, align_corners, expected", DOCUMENTED)
def test_pytorch_documented_examples(backend, image, mode, align_corners, expected):
    x = backend.asarray(image[None, None])
    y, _ = ops.interpolate_forward(x, scale_factor=2, mode=mode, align_corners=align_corners)
    np.testing.assert_allclose(backend.to_numpy(y)[0, 0], expected, rtol=1e-12)


# ------------------------------------------------------------------------ per-pixel reference

def source_nearest(o, n_in, n_out, factor):
    """PyTorch's nearest_idx: copy, halve, or floor(o * scale) in float32, clamped."""
    if n_out == n_in:
        return o
    if n_out == 2 * n_in:
        return o // 2
    scale = np.float32(1.0 / factor) if factor else np.float32(n_in) / np.float32(n_out)
    return min(int(math.floor(np.float32(o) * scale)), n_in - 1)


def source_linear(o, n_in, n_out, factor, align_corners):
    """The two taps and weights of output ``o``, one scalar at a time (float64)."""
    if n_out == n_in:
        return o, o, 1.0, 0.0
    if align_corners:
        src = o * (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    else:
        scale = 1.0 / factor if factor else n_in / n_out
        src = max(scale * (o + 0.5) - 0.5, 0.0)
    i0 = min(int(math.floor(src)), n_in - 1)
    lam = min(max(src - i0, 0.0), 1.0)
    return i0, min(i0 + 1, n_in - 1), 1.0 - lam, lam


def ref_interpolate(x, out_hw, mode, align_corners, factors):
    n_, c_, h_, w_ = x.shape
    y = np.zeros((n_, c_, *out_hw))
    for oh in range(out_hw[0]):
        for ow in range(out_hw[1]):
            if mode == "nearest":
                y[:, :, oh, ow] = x[:, :, source_nearest(oh, h_, out_hw[0], factors[0]),
                                    source_nearest(ow, w_, out_hw[1], factors[1])]
                continue
            h0, h1, a0, a1 = source_linear(oh, h_, out_hw[0], factors[0], align_corners)
            w0, w1, b0, b1 = source_linear(ow, w_, out_hw[1], factors[1], align_corners)
            y[:, :, oh, ow] = (a0 * (b0 * x[:, :, h0, w0] + b1 * x[:, :, h0, w1])
                               + a1 * (b0 * x[:, :, h1, w0] + b1 * x[:, :, h1, w1]))
    return y


@st.composite
def cases(draw):
    """An input shape, and either a size or a scale factor, a mode and align_corners."""
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 5)),
             draw(st.integers(1, 5)))
    mode = draw(st.sampled_from(["nearest", "bilinear"]))
    align = None if mode == "nearest" else draw(st.sampled_from([None, False, True]))
    if draw(st.booleans()):
        kwargs = {"size": (draw(st.integers(1, 7)), draw(st.integers(1, 7)))}
    else:
        factors = tuple(draw(st.sampled_from([0.5, 0.75, 1.0, 1.3, 1.7, 2.0, 2.5, 3.0]))
                        for _ in range(2))
        assume(all(math.floor(n * f) >= 1 for n, f in zip(shape[2:], factors)))
        kwargs = {"scale_factor": factors,
                  "recompute_scale_factor": draw(st.sampled_from([None, False, True]))}
    return shape, {"mode": mode, "align_corners": align, **kwargs}


def out_and_factors(shape, kwargs):
    if "size" in kwargs:
        return kwargs["size"], (None, None)
    factors = kwargs["scale_factor"]
    out = tuple(math.floor(n * f) for n, f in zip(shape[2:], factors))
    return out, (None, None) if kwargs["recompute_scale_factor"] else factors


@given(case=cases(), seed=seeds)
def test_forward_matches_per_pixel_loops(backend, case, seed):
    shape, kwargs = case
    x = np.random.default_rng(seed).standard_normal(shape)
    y, _ = ops.interpolate_forward(backend.asarray(x), **kwargs)
    out_hw, factors = out_and_factors(shape, kwargs)
    expected = ref_interpolate(x, out_hw, kwargs["mode"], bool(kwargs["align_corners"]), factors)
    np.testing.assert_allclose(backend.to_numpy(y), expected, rtol=1e-12, atol=1e-14)


@given(case=cases(), seed=seeds)
def test_backward_is_the_adjoint_and_matches_finite_differences(backend, case, seed):
    shape, kwargs = case
    rng = np.random.default_rng(seed)
    # interpolate's own 'mode' is passed positionally, away from the checker's 'mode'.
    args, kw = call_args(ops.interpolate_forward, backend.asarray(rng.standard_normal(shape)),
                         **kwargs)
    pair = (ops.interpolate_forward, ops.interpolate_backward)
    check_adjoint(*pair, *args, rng=rng, **kw).raise_if_failed()
    check_op(*pair, *args, rng=rng, **kw).raise_if_failed()


# ------------------------------------------------------------------------ PyTorch's index rules

def test_scale_factor_is_used_unless_recomputed(backend):
    # W = 5, scale_factor 1.7: W_out = floor(8.5) = 8.  Output 5 reads floor(5 / 1.7) = 2 with
    # the given factor, but floor(5 * 5 / 8) = 3 with the recomputed scale W / W_out.
    x = backend.asarray(np.arange(5.0).reshape(1, 1, 1, 5))
    y, _ = ops.interpolate_forward(x, scale_factor=(1.0, 1.7))
    np.testing.assert_array_equal(backend.to_numpy(y)[0, 0, 0], [0, 0, 1, 1, 2, 2, 3, 4])
    y, _ = ops.interpolate_forward(x, scale_factor=(1.0, 1.7), recompute_scale_factor=True)
    np.testing.assert_array_equal(backend.to_numpy(y)[0, 0, 0], [0, 0, 1, 1, 2, 3, 3, 4])
    y, _ = ops.interpolate_forward(x, size=(1, 8))
    np.testing.assert_array_equal(backend.to_numpy(y)[0, 0, 0], [0, 0, 1, 1, 2, 3, 3, 4])


def test_nearest_floor_rule_downsampling(backend):
    # 5 -> 3: scale 5/3, sources floor(0), floor(1.67), floor(3.33) = 0, 1, 3 (floor, not round).
    x = backend.asarray(np.arange(5.0).reshape(1, 1, 5, 1))
    y, _ = ops.interpolate_forward(x, size=(3, 1))
    np.testing.assert_array_equal(backend.to_numpy(y)[0, 0, :, 0], [0, 1, 3])


def test_bilinear_single_output_and_identity(backend):
    x_np = np.arange(12.0).reshape(1, 1, 3, 4)
    x = backend.asarray(x_np)
    # One output row: aligned corners read row 0; half-pixel centres read (0 + 1/2) * 3 - 1/2 = 1.
    y, _ = ops.interpolate_forward(x, size=(1, 4), mode="bilinear", align_corners=True)
    np.testing.assert_array_equal(backend.to_numpy(y)[0, 0, 0], x_np[0, 0, 0])
    y, _ = ops.interpolate_forward(x, size=(1, 4), mode="bilinear")
    np.testing.assert_array_equal(backend.to_numpy(y)[0, 0, 0], x_np[0, 0, 1])
    # Same size: a copy, whatever the factor said (floor(3 * 1.2) = 3).
    y, _ = ops.interpolate_forward(x, scale_factor=(1.2, 1.0), mode="bilinear")
    np.testing.assert_array_equal(backend.to_numpy(y), x_np)


def test_matrices_rows_sum_to_one(backend):
    _, cache = ops.interpolate_forward(backend.asarray(np.zeros((1, 1, 4, 3))), size=(7, 2),
                                       mode="bilinear")
    for a in (cache.a_h, cache.a_w):
        np.testing.assert_allclose(backend.to_numpy(a).sum(axis=1), 1.0, rtol=1e-15)


# --------------------------------------------------------------------------- dtypes, misuse

@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_dtype_kept_and_nothing_modified(backend, dtype, mode):
    rng = np.random.default_rng(8)
    x_np = rng.standard_normal((2, 3, 3, 4)).astype(dtype)
    x = backend.asarray(x_np)
    y, cache = ops.interpolate_forward(x, scale_factor=1.5, mode=mode)
    dy_np = rng.standard_normal(tuple(y.shape)).astype(dtype)
    dy = backend.asarray(dy_np)
    dx = ops.interpolate_backward(dy, cache)
    assert y.dtype == x.dtype and dx.dtype == x.dtype and tuple(dx.shape) == x_np.shape
    np.testing.assert_array_equal(backend.to_numpy(x), x_np)
    np.testing.assert_array_equal(backend.to_numpy(dy), dy_np)


def test_float32_matches_float64_reference(backend):
    x = np.random.default_rng(9).standard_normal((1, 2, 5, 3))
    for mode in ("nearest", "bilinear"):
        y32, _ = ops.interpolate_forward(backend.asarray(x.astype(np.float32)), size=(7, 8),
                                         mode=mode)
        expected = ref_interpolate(x.astype(np.float32).astype(np.float64), (7, 8), mode, False,
                                   (None, None))
        np.testing.assert_allclose(backend.to_numpy(y32), expected, rtol=1e-6, atol=1e-6)


def test_bad_input(backend):
    x = backend.asarray(np.zeros((1, 1, 3, 3)))
    f = ops.interpolate_forward
    with pytest.raises(ValueError, match="interpolate: argument 'size' expected exactly one"):
        f(x)
    with pytest.raises(ValueError, match="interpolate: argument 'size' expected exactly one"):
        f(x, size=4, scale_factor=2.0)
    with pytest.raises(ValueError, match="argument 'align_corners' expected None with mode"):
        f(x, size=4, align_corners=False)
    with pytest.raises(ValueError, match="argument 'mode' expected one of"):
        f(x, size=4, mode="bicubic")
    with pytest.raises(ValueError, match="argument 'scale_factor' expected an output size >= 1"):
        f(x, scale_factor=0.2)
    with pytest.raises(ValueError, match="argument 'size' expected values > 0"):
        f(x, size=(0, 2))
    with pytest.raises(TypeError, match="argument 'size' expected an int or a pair of ints"):
        f(x, size=2.5)
    with pytest.raises(ValueError, match="argument 'recompute_scale_factor' expected None or False"):
        f(x, size=4, recompute_scale_factor=True)
    with pytest.raises(ValueError, match="argument 'x' expected 4 dimensions"):
        f(backend.asarray(np.zeros((3, 3))), size=4)
    _, cache = f(x, size=(4, 5))
    with pytest.raises(ValueError, match="interpolate_backward: argument 'dy' expected shape"):
        ops.interpolate_backward(backend.asarray(np.zeros((1, 1, 5, 4))), cache)
