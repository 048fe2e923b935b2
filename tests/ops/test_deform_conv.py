"""deform_conv2d: loops, conv2d at zero offsets, finite differences off the pixel lines, the
dot-product test, torchvision's conventions at exact integers, bad input, no mutation, dtypes."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npattn.gradcheck import check_adjoint, check_op
from npattn.ops import _geometry
from npattn.ops import conv2d_forward, deform_conv2d_backward, deform_conv2d_forward

# Full-mode finite differences of all five inputs take about a second per example on
# array_api_strict: at most 10 of them (fewer if the profile asks for fewer).
few_examples = settings(max_examples=min(10, settings.default.max_examples))


@st.composite
def geometries(draw, max_hw=5, max_n=2, max_k=3):
    """Sizes and hyperparameters of a small deformable convolution whose windows fit."""
    groups = draw(st.integers(1, 2))
    offset_groups = draw(st.integers(1, 2))
    c = math.lcm(groups, offset_groups) * draw(st.integers(1, 2))
    kh, kw = draw(st.integers(1, max_k)), draw(st.integers(1, max_k))
    sh, sw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    ph, pw = draw(st.integers(0, 1)), draw(st.integers(0, 1))
    low_h, low_w = max(1, dh * (kh - 1) + 1 - 2 * ph), max(1, dw * (kw - 1) + 1 - 2 * pw)
    h = draw(st.integers(low_h, max(low_h, max_hw)))
    w = draw(st.integers(low_w, max(low_w, max_hw)))
    return dict(n=draw(st.integers(1, max_n)), c=c, o=groups * draw(st.integers(1, 2)), h=h, w=w,
                kernel=(kh, kw), groups=groups, stride=(sh, sw), padding=(ph, pw),
                dilation=(dh, dw), offset_groups=offset_groups,
                with_mask=draw(st.booleans()), with_bias=draw(st.booleans()))


def out_hw(g):
    return tuple((size + 2 * p - d * (k - 1) - 1) // s + 1 for size, k, s, p, d in
                 zip((g["h"], g["w"]), g["kernel"], g["stride"], g["padding"], g["dilation"]))


def draw_arrays(g, seed, margin=0.15, spread=2):
    """x, offset, weight, bias, mask for geometry ``g``.  Every sample point lies at least
    ``margin`` from a pixel line (base positions are integers; offsets are not, by margin)."""
    rng = np.random.default_rng(seed)
    ho, wo = out_hw(g)
    kh, kw = g["kernel"]
    taps = g["offset_groups"] * kh * kw
    x = rng.standard_normal((g["n"], g["c"], g["h"], g["w"]))
    whole = rng.integers(-spread, spread + 1, size=(g["n"], 2 * taps, ho, wo))
    offset = whole + margin + (1 - 2 * margin) * rng.random(whole.shape)
    weight = rng.standard_normal((g["o"], g["c"] // g["groups"], kh, kw))
    bias = rng.standard_normal(g["o"]) if g["with_bias"] else None
    mask = rng.random((g["n"], taps, ho, wo)) if g["with_mask"] else None
    return rng, x, offset, weight, bias, mask


def hyper(g):
    return dict(stride=g["stride"], padding=g["padding"], dilation=g["dilation"],
                offset_groups=g["offset_groups"])


def on(backend, *arrays, dtype=None):
    return [None if a is None else backend.asarray(a, dtype=dtype) for a in arrays]


# --------------------------------------------------------------------------- the reference

def bilinear(img, y, x):
    """torchvision's bilinear_interpolate, written out: 0 beyond (-1, H) x (-1, W)."""
    h, w = img.shape
    if y <= -1 or y >= h or x <= -1 or x >= w:
        return 0.0
    y0, x0 = int(np.floor(y)), int(np.floor(x))
    ly, lx = y - y0, x - x0

    def at(r, c):
        return img[r, c] if 0 <= r < h and 0 <= c < w else 0.0

    return ((1 - ly) * (1 - lx) * at(y0, x0) + (1 - ly) * lx * at(y0, x0 + 1)
            + ly * (1 - lx) * at(y0 + 1, x0) + ly * lx * at(y0 + 1, x0 + 1))


def ref_deform_conv2d(x, offset, weight, bias, mask, stride, padding, dilation, offset_groups):
    """One output value at a time, by torchvision's layout of offset and mask channels."""
    n_, c_, _, _ = x.shape
    o_, cw, kh, kw = weight.shape
    ho, wo = offset.shape[2:]
    og = o_ // (c_ // cw)                          # output channels per weight group
    cg = c_ // offset_groups                       # input channels per offset group
    y = np.zeros((n_, o_, ho, wo))
    for n in range(n_):
        for o in range(o_):
            for p in range(ho):
                for q in range(wo):
                    total = 0.0 if bias is None else bias[o]
                    for ci in range(cw):
                        c = (o // og) * cw + ci
                        g = c // cg
                        for i in range(kh):
                            for j in range(kw):
                                k = g * kh * kw + i * kw + j
                                py = p * stride[0] - padding[0] + i * dilation[0] + offset[n, 2 * k, p, q]
                                px = q * stride[1] - padding[1] + j * dilation[1] + offset[n, 2 * k + 1, p, q]
                                m = 1.0 if mask is None else mask[n, k, p, q]
                                total += weight[o, ci, i, j] * m * bilinear(x[n, c], py, px)
                    y[n, o, p, q] = total
    return y


# --------------------------------------------------------------------------------- forward

@given(g=geometries(), seed=st.integers(0, 2**32 - 1))
def test_forward_matches_loops(backend, g, seed):
    _, *arrays = draw_arrays(g, seed, margin=0.0, spread=3)   # anywhere, exact integers too
    y, _ = deform_conv2d_forward(*on(backend, *arrays), **hyper(g))
    np.testing.assert_allclose(backend.to_numpy(y), ref_deform_conv2d(*arrays, **hyper(g)),
                               rtol=1e-12, atol=1e-12)


@given(g=geometries(max_hw=6), seed=st.integers(0, 2**32 - 1))
def test_zero_offsets_and_unit_mask_equal_conv2d(backend, g, seed):
    _, x, offset, weight, bias, _ = draw_arrays(g, seed)
    zero = np.zeros_like(offset)
    ones = np.ones((offset.shape[0], offset.shape[1] // 2, *offset.shape[2:]))
    want, _ = conv2d_forward(*on(backend, x, weight, bias), g["stride"], g["padding"],
                             g["dilation"], g["groups"])
    for mask in (None, ones):
        y, _ = deform_conv2d_forward(*on(backend, x, zero, weight, bias, mask), **hyper(g))
        np.testing.assert_allclose(backend.to_numpy(y), backend.to_numpy(want), rtol=1e-12,
                                   atol=1e-12)


def test_whole_pixel_offsets_shift_the_input(backend):
    # A 1x1 kernel with offset (dy, dx) = (1, -1) everywhere reads x[p + 1, q - 1], 0 outside.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 2, 4, 5))
    offset = np.zeros((1, 2, 4, 5))
    offset[:, 0], offset[:, 1] = 1.0, -1.0
    weight = np.eye(2).reshape(2, 2, 1, 1)
    y, _ = deform_conv2d_forward(*on(backend, x, offset, weight))
    want = np.zeros_like(x)
    want[:, :, :3, 1:] = x[:, :, 1:, :4]
    np.testing.assert_array_equal(backend.to_numpy(y), want)


# ------------------------------------------------------------------------------- gradients

@few_examples
@given(g=geometries(max_hw=4, max_n=1, max_k=2), seed=st.integers(0, 2**32 - 1))
def test_gradients_match_finite_differences(backend, g, seed):
    rng, *arrays = draw_arrays(g, seed)
    check_op(deform_conv2d_forward, deform_conv2d_backward, *on(backend, *arrays), rng=rng,
             **hyper(g)).raise_if_failed()


@given(g=geometries(max_hw=4), seed=st.integers(0, 2**32 - 1))
def test_linear_inputs_pass_the_dot_product_test(backend, g, seed):
    # Linear in x, weight and mask; affine in bias; not in the offsets.
    rng, *arrays = draw_arrays(g, seed)
    inputs = [name for name, a in zip(["x", "weight", "bias", "mask"], [arrays[0], *arrays[2:]])
              if a is not None]
    check_adjoint(deform_conv2d_forward, deform_conv2d_backward, *on(backend, *arrays),
                  inputs=inputs, rng=rng, **hyper(g)).raise_if_failed()


def test_directional_gradient_at_a_realistic_size(backend):
    g = dict(n=2, c=8, o=8, h=12, w=12, kernel=(3, 3), groups=2, stride=(1, 1), padding=(1, 1),
             dilation=(1, 1), offset_groups=2, with_mask=True, with_bias=True)
    rng, *arrays = draw_arrays(g, 1)
    check_op(deform_conv2d_forward, deform_conv2d_backward, *on(backend, *arrays),
             mode="directional", rng=rng, **hyper(g)).raise_if_failed()


def test_float32_gradients_match_float64_finite_differences(backend):
    g = dict(n=1, c=2, o=2, h=4, w=4, kernel=(2, 2), groups=1, stride=(1, 1), padding=(0, 0),
             dilation=(1, 1), offset_groups=1, with_mask=True, with_bias=True)
    rng, *arrays = draw_arrays(g, 2)
    check_op(deform_conv2d_forward, deform_conv2d_backward, *on(backend, *arrays, dtype="float32"),
             rng=rng).raise_if_failed()


# ------------------------------------------------------ torchvision's conventions at integers

def test_at_exact_integer_offsets_floor_decides_the_cell(backend):
    # 1x1 kernel, offsets (dy, dx) = (1, 0) and (0, 1) at the two output pixels of a row: both
    # points land exactly on pixels.  The value is that pixel; dx puts all of dy there (weight
    # 0, not a share, on the next pixel); d(offset) is the slope towards the NEXT pixel of the
    # floor cell (x[y+1] - x[y], x[., x+1] - x[., x]) -- torchvision's get_coordinate_weight --
    # and past the last row or column the next pixel is outside and reads 0.
    x = np.array([[[[1.0, 2.0], [4.0, 8.0]]]])                       # (1, 1, 2, 2)
    offset = np.zeros((1, 2, 1, 2))
    offset[0, :, 0, 0] = (1.0, 0.0)                                  # (0, 0) -> (1, 0)
    offset[0, :, 0, 1] = (0.0, 1.0)                                  # (0, 1) -> (0, 2): outside
    mask = np.full((1, 1, 1, 2), 0.5)
    weight = np.ones((1, 1, 1, 1))
    y, cache = deform_conv2d_forward(*on(backend, x, offset, weight, None, mask),
                                     stride=(2, 1))
    np.testing.assert_array_equal(backend.to_numpy(y), [[[[0.5 * 4.0, 0.0]]]])
    dy = np.array([[[[1.0, 1.0]]]])
    dx, doffset, dweight, dbias, dmask = deform_conv2d_backward(backend.asarray(dy), cache)
    np.testing.assert_array_equal(backend.to_numpy(dx), [[[[0.0, 0.0], [0.5, 0.0]]]])
    # point 1 at (1, 0): d/dy -> row 2 is outside (0 - 4); d/dx -> (8 - 4).
    # point 2 at (0, 2): outside, but its cell [0, 1] x [2, 3] has corner (0, 2) and (1, 2)
    # outside and no pixel: all slopes 0.
    np.testing.assert_array_equal(backend.to_numpy(doffset)[0, :, 0, 0], [0.5 * (0 - 4.0), 0.5 * (8 - 4.0)])
    np.testing.assert_array_equal(backend.to_numpy(doffset)[0, :, 0, 1], [0.0, 0.0])
    np.testing.assert_array_equal(backend.to_numpy(dmask), [[[[4.0, 0.0]]]])
    assert dbias is None


def test_at_minus_one_the_slope_reaches_into_the_image(backend):
    # A point exactly at column -1 reads 0; its floor cell is [-1, 0], so the slope in x is
    # x[., 0] - 0 (torchvision's coordinate weight has no cut-off at -1).
    x = np.array([[[[3.0]]]])
    offset = np.array([[[[0.0]], [[-1.0]]]])                          # (1, 2, 1, 1)
    y, cache = deform_conv2d_forward(*on(backend, x, offset, np.ones((1, 1, 1, 1))))
    _, doffset, *_ = deform_conv2d_backward(backend.asarray(np.ones((1, 1, 1, 1))), cache)
    assert backend.to_numpy(y)[0, 0, 0, 0] == 0.0
    np.testing.assert_array_equal(backend.to_numpy(doffset)[0, :, 0, 0], [0.0, 3.0])


# ------------------------------------------------------------------------------ bad input

def _valid(backend):
    x = backend.asarray(np.zeros((2, 4, 5, 5)))
    offset = backend.asarray(np.zeros((2, 2 * 2 * 9, 3, 3)))
    weight = backend.asarray(np.zeros((6, 2, 3, 3)))
    return x, offset, weight


def test_bad_input(backend):
    x, offset, weight = _valid(backend)
    z = lambda *shape, **kw: backend.asarray(np.zeros(shape), **kw)   # noqa: E731
    cases = [
        (dict(x=z(4, 5, 5)), ValueError, "'x' expected 4 dimensions"),
        (dict(offset=z(2, 18, 3, 3)), ValueError, "'offset' expected shape (2, 36, 3, 3)"),
        (dict(offset=z(2, 36, 4, 3)), ValueError, "'offset' expected shape (2, 36, 3, 3)"),
        (dict(mask=z(2, 9, 3, 3)), ValueError, "'mask' expected shape (2, 18, 3, 3)"),
        (dict(bias=z(5)), ValueError, "'bias' expected shape (6,)"),
        (dict(weight=z(6, 3, 3, 3)), ValueError, "'weight' expected shape (O, C/groups, kh, kw)"),
        (dict(weight=z(5, 2, 3, 3)), ValueError, "'weight' expected shape (O, C/groups, kh, kw)"),
        (dict(weight=z(6, 2, 7, 3)), ValueError, "'weight' expected a (dilated) kernel"),
        (dict(offset_groups=3), ValueError, "'offset_groups' expected a divisor of the input channels C = 4"),
        (dict(offset_groups=0), ValueError, "'offset_groups' expected an int >= 1"),
        (dict(stride=0), ValueError, "'stride' expected values >= 1"),
        (dict(padding=-1), ValueError, "'padding' expected values >= 0"),
        (dict(dilation=1.5), TypeError, "'dilation' expected an int or a pair of ints"),
        (dict(offset=backend.asarray(np.zeros((2, 36, 3, 3)), dtype="float32")), TypeError, "'offset' expected dtype"),
        (dict(x=backend.asarray(np.zeros((2, 4, 5, 5)), dtype="int64")), TypeError, "'x' expected a real floating-point dtype"),
    ]
    for change, cls, text in cases:
        args = dict(x=x, offset=offset, weight=weight, offset_groups=2)
        args.update(change)
        with pytest.raises(cls, match=re.escape(f"deform_conv2d: argument {text}")):
            deform_conv2d_forward(**args)


def test_backward_checks_dy(backend):
    x, offset, weight = _valid(backend)
    _, cache = deform_conv2d_forward(x, offset, weight, offset_groups=2)
    with pytest.raises(ValueError, match=re.escape("deform_conv2d_backward: argument 'dy' expected shape (2, 6, 3, 3)")):
        deform_conv2d_backward(backend.asarray(np.zeros((2, 6, 3, 4))), cache)
    with pytest.raises(TypeError, match="deform_conv2d_backward: argument 'dy'"):
        deform_conv2d_backward(backend.asarray(np.zeros((2, 6, 3, 3)), dtype="float32"), cache)


def test_mixed_libraries_are_a_type_error(backend):
    if backend.name == "numpy":
        pytest.skip("needs a second library")
    x, offset, weight = _valid(backend)
    with pytest.raises(TypeError, match="deform_conv2d: argument 'offset' expected an array of the same library"):
        deform_conv2d_forward(x, np.zeros((2, 36, 3, 3)), weight, offset_groups=2)


# ------------------------------------------------------------------- no mutation, dtypes

def test_inputs_and_dy_are_not_modified(backend):
    g = dict(n=2, c=4, o=4, h=5, w=4, kernel=(2, 3), groups=2, stride=(1, 1), padding=(1, 0),
             dilation=(1, 1), offset_groups=2, with_mask=True, with_bias=True)
    rng, *arrays = draw_arrays(g, 3)
    args = on(backend, *arrays)
    y, cache = deform_conv2d_forward(*args, **hyper(g))
    dy = rng.standard_normal(tuple(y.shape))
    grads = deform_conv2d_backward(backend.asarray(dy), cache)
    for a, before in zip(args, arrays):
        np.testing.assert_array_equal(backend.to_numpy(a), before)
    for grad in grads:
        grad[...] = 0.0    # fresh arrays: writing to them touches nothing else
    np.testing.assert_array_equal(backend.to_numpy(deform_conv2d_forward(*args, **hyper(g))[0]),
                                  backend.to_numpy(y))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_is_kept_and_absent_inputs_get_none(backend, dtype):
    g = dict(n=1, c=2, o=3, h=4, w=4, kernel=(3, 3), groups=1, stride=(1, 1), padding=(1, 1),
             dilation=(1, 1), offset_groups=1, with_mask=False, with_bias=False)
    rng, x, offset, weight, _, _ = draw_arrays(g, 4)
    y, cache = deform_conv2d_forward(*on(backend, x, offset, weight, dtype=dtype), padding=1)
    grads = deform_conv2d_backward(backend.asarray(rng.standard_normal(tuple(y.shape)), dtype=dtype), cache)
    assert len(grads) == 5 and grads[3] is None and grads[4] is None
    assert y.dtype == backend.dtype(dtype)
    for grad, a in zip(grads[:3], (x, offset, weight)):
        assert grad.dtype == backend.dtype(dtype) and tuple(grad.shape) == a.shape


def test_empty_batch(backend):
    x, offset, mask = (backend.asarray(np.zeros(s)) for s in [(0, 2, 4, 4), (0, 18, 4, 4), (0, 9, 4, 4)])
    y, cache = deform_conv2d_forward(x, offset, backend.asarray(np.ones((3, 2, 3, 3))), None, mask,
                                     padding=1)
    grads = deform_conv2d_backward(backend.asarray(np.zeros((0, 3, 4, 4))), cache)
    assert tuple(y.shape) == (0, 3, 4, 4)
    assert [None if g is None else tuple(g.shape) for g in grads] == [
        (0, 2, 4, 4), (0, 18, 4, 4), (3, 2, 3, 3), None, (0, 9, 4, 4)]
    np.testing.assert_array_equal(backend.to_numpy(grads[2]), 0.0)


def test_batch_blocks_give_the_same_result(backend, monkeypatch):
    # A tiny block budget splits the batch into blocks of one sample: same output and gradients.
    g = dict(n=3, c=4, o=2, h=5, w=4, kernel=(2, 2), groups=2, stride=(1, 1), padding=(1, 0),
             dilation=(1, 1), offset_groups=2, with_mask=True, with_bias=True)
    rng, *arrays = draw_arrays(g, 5)
    args = on(backend, *arrays)
    y, cache = deform_conv2d_forward(*args, **hyper(g))
    dy = backend.asarray(rng.standard_normal(tuple(y.shape)))
    grads = deform_conv2d_backward(dy, cache)
    monkeypatch.setattr(_geometry, "BLOCK_ELEMENTS", 1)
    y1, cache1 = deform_conv2d_forward(*args, **hyper(g))
    np.testing.assert_allclose(backend.to_numpy(y1), backend.to_numpy(y), rtol=1e-13, atol=1e-13)
    for got, want in zip(deform_conv2d_backward(dy, cache1), grads):
        np.testing.assert_allclose(backend.to_numpy(got), backend.to_numpy(want), rtol=1e-13,
                                   atol=1e-13)
