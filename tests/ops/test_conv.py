"""conv2d and conv1d: forward against SciPy and explicit loops, backward against finite
differences and the dot-product test, the tiles (bands of rows, several samples, per sample or
side by side, NumPy's products written into y, the kept workspace), bad input, no mutation,
dtypes, NaN."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from array_api_compat import device
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scipy.signal import correlate

import npattn.ops as ops
from npattn.gradcheck import check_adjoint, check_op
from npattn.ops import _geometry, conv

# The backend fixture is stateless, so sharing it across Hypothesis examples is safe.
given_with_backend = settings(suppress_health_check=[*settings.default.suppress_health_check,
                                                     HealthCheck.function_scoped_fixture])


# --------------------------------------------------------------------------------- references

def conv2d_loops(x, w, b, stride, padding, dilation, groups):
    """y[n, o, p, q] = b[o] + sum_{c, i, j} w[o, c, i, j] xpad[n, g*C/G + c, p*s + i*d, q*s + j*d]."""
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    n_, c_, h_, w_ = x.shape
    o_, cg, kh, kw = w.shape
    xpad = np.zeros((n_, c_, h_ + 2 * ph, w_ + 2 * pw))
    xpad[:, :, ph:ph + h_, pw:pw + w_] = x
    ho = (h_ + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (w_ + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((n_, o_, ho, wo))
    for n in range(n_):
        for o in range(o_):
            g = o // (o_ // groups)
            for p in range(ho):
                for q in range(wo):
                    acc = 0.0 if b is None else b[o]
                    for c in range(cg):
                        for i in range(kh):
                            for j in range(kw):
                                acc += w[o, c, i, j] * xpad[n, g * cg + c, p * sh + i * dh, q * sw + j * dw]
                    y[n, o, p, q] = acc
    return y


def conv1d_loops(x, w, b, stride, padding, dilation, groups):
    """y[n, o, t] = b[o] + sum_{c, i} w[o, c, i] xpad[n, g*C/G + c, t*s + i*d]."""
    n_, c_, l_ = x.shape
    o_, cg, k = w.shape
    xpad = np.zeros((n_, c_, l_ + 2 * padding))
    xpad[:, :, padding:padding + l_] = x
    lo = (l_ + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    y = np.zeros((n_, o_, lo))
    for n in range(n_):
        for o in range(o_):
            g = o // (o_ // groups)
            for t in range(lo):
                acc = 0.0 if b is None else b[o]
                for c in range(cg):
                    for i in range(k):
                        acc += w[o, c, i] * xpad[n, g * cg + c, t * stride + i * dilation]
                y[n, o, t] = acc
    return y


# --------------------------------------------------------------------------------- the cases

@dataclass(frozen=True)
class Case:
    x: np.ndarray
    w: np.ndarray
    b: np.ndarray | None
    kwargs: dict

    def on(self, backend, dtype=None):
        b = None if self.b is None else backend.asarray(self.b, dtype)
        return (backend.asarray(self.x, dtype), backend.asarray(self.w, dtype), b)


def _size(draw, kernel, dilation, padding, extra):
    """A size the dilated kernel fits once padded, plus up to ``extra`` (odd sizes included)."""
    return max(1, dilation * (kernel - 1) + 1 - 2 * padding) + draw(st.integers(0, extra))


@st.composite
def conv2d_cases(draw, extra=2, max_stride=3):
    """Stride, padding (0 included), dilation, groups, kernel sizes, odd sizes, batch 1 or 2."""
    groups = draw(st.integers(1, 2))
    c, o = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, max_stride)), draw(st.integers(1, min(2, max_stride))))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 1)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    hw = tuple(_size(draw, k, d, p, extra) for k, d, p in zip(kernel, dilation, padding))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal((draw(st.integers(1, 2)), c, *hw))
    w = rng.standard_normal((o, c // groups, *kernel))
    b = rng.standard_normal(o) if draw(st.booleans()) else None
    return Case(x, w, b, dict(stride=stride, padding=padding, dilation=dilation, groups=groups))


@st.composite
def conv1d_cases(draw):
    groups = draw(st.integers(1, 2))
    c, o = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    k, s, p, d = (draw(st.integers(1, 4)), draw(st.integers(1, 3)), draw(st.integers(0, 2)),
                  draw(st.integers(1, 2)))
    length = _size(draw, k, d, p, 4)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal((draw(st.integers(1, 2)), c, length))
    w = rng.standard_normal((o, c // groups, k))
    b = rng.standard_normal(o) if draw(st.booleans()) else None
    return Case(x, w, b, dict(stride=s, padding=p, dilation=d, groups=groups))


def pairs(kwargs):
    """conv2d's int-or-pair keyword arguments as pairs, for the loop reference."""
    return [kwargs[k] if isinstance(kwargs[k], tuple) else (kwargs[k],) * 2
            for k in ("stride", "padding", "dilation")] + [kwargs["groups"]]


# ---------------------------------------------------------------------------------- forward

@pytest.mark.parametrize("padding", [0, 1, (2, 1)])
def test_conv2d_matches_scipy_correlate(backend, rng, padding):
    """PyTorch's conv is a cross-correlation: per (n, o), the sum over c of 'valid' correlations."""
    x, w, b = rng.standard_normal((2, 3, 6, 7)), rng.standard_normal((4, 3, 3, 2)), rng.standard_normal(4)
    ph, pw = padding if isinstance(padding, tuple) else (padding, padding)
    xpad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    ref = np.stack([np.stack([sum(correlate(xpad[n, c], w[o, c], mode="valid") for c in range(3)) + b[o]
                              for o in range(4)]) for n in range(2)])
    y, _ = ops.conv2d_forward(backend.asarray(x), backend.asarray(w), backend.asarray(b), padding=padding)
    np.testing.assert_allclose(backend.to_numpy(y), ref, rtol=1e-12, atol=1e-12)


def test_conv1d_matches_scipy_correlate(backend, rng):
    x, w = rng.standard_normal((2, 3, 9)), rng.standard_normal((2, 3, 4))
    xpad = np.pad(x, ((0, 0), (0, 0), (2, 2)))
    ref = np.stack([np.stack([sum(correlate(xpad[n, c], w[o, c], mode="valid") for c in range(3))
                              for o in range(2)]) for n in range(2)])
    y, _ = ops.conv1d_forward(backend.asarray(x), backend.asarray(w), padding=2)
    np.testing.assert_allclose(backend.to_numpy(y), ref, rtol=1e-12, atol=1e-12)


@given_with_backend
@given(case=conv2d_cases(extra=4))
def test_conv2d_matches_loops(backend, case):
    y, _ = ops.conv2d_forward(*case.on(backend), **case.kwargs)
    ref = conv2d_loops(case.x, case.w, case.b, *pairs(case.kwargs))
    np.testing.assert_allclose(backend.to_numpy(y), ref, rtol=1e-12, atol=1e-12)


@given_with_backend
@given(case=conv1d_cases())
def test_conv1d_matches_loops(backend, case):
    y, _ = ops.conv1d_forward(*case.on(backend), **case.kwargs)
    ref = conv1d_loops(case.x, case.w, case.b, *case.kwargs.values())
    np.testing.assert_allclose(backend.to_numpy(y), ref, rtol=1e-12, atol=1e-12)


def test_conv1d_accepts_one_tuples_like_pytorch(backend, rng):
    x, w = backend.asarray(rng.standard_normal((1, 2, 8))), backend.asarray(rng.standard_normal((3, 2, 3)))
    y_int, _ = ops.conv1d_forward(x, w, stride=2, padding=1, dilation=2)
    y_tuple, _ = ops.conv1d_forward(x, w, stride=(2,), padding=[1], dilation=(2,))
    np.testing.assert_array_equal(backend.to_numpy(y_int), backend.to_numpy(y_tuple))


# --------------------------------------------------------------------------------- backward

CASES = {"conv2d": conv2d_cases(), "conv1d": conv1d_cases()}


@pytest.mark.parametrize("op", CASES)
@given_with_backend
@given(data=st.data())
def test_gradients_match_finite_differences(backend, op, data):
    case = data.draw(CASES[op])
    forward, backward = getattr(ops, f"{op}_forward"), getattr(ops, f"{op}_backward")
    check_op(forward, backward, *case.on(backend), **case.kwargs).raise_if_failed()


@pytest.mark.parametrize("op", CASES)
@given_with_backend
@given(data=st.data())
def test_adjoint_in_x_and_weight(backend, op, data):
    """Linear in x and in weight (affine with a bias): the dot-product test for each."""
    case = data.draw(CASES[op])
    forward, backward = getattr(ops, f"{op}_forward"), getattr(ops, f"{op}_backward")
    check_adjoint(forward, backward, *case.on(backend), **case.kwargs).raise_if_failed()


def test_conv2d_float32_gradients_match_finite_differences(backend, rng):
    x, w, b = rng.standard_normal((2, 4, 5, 6)), rng.standard_normal((6, 2, 3, 3)), rng.standard_normal(6)
    report = check_op(ops.conv2d_forward, ops.conv2d_backward, backend.asarray(x, "float32"),
                      backend.asarray(w, "float32"), backend.asarray(b, "float32"),
                      stride=(1, 2), padding=1, groups=2)
    report.raise_if_failed()


@given_with_backend
@given(case=conv2d_cases(extra=4, max_stride=1))
def test_both_ways_to_dx_agree(backend, case):
    """At stride 1, dx by a convolution with the flipped kernel equals dx by col2im."""
    x, w, b = case.on(backend)
    y, cache = ops.conv2d_forward(x, w, b, **case.kwargs)
    assume(conv._transposes_to_a_convolution(cache))
    dy = backend.asarray(np.random.default_rng(1).standard_normal(tuple(y.shape)))
    np.testing.assert_allclose(backend.to_numpy(conv._dx_by_convolution(backend.xp, dy, cache)),
                               backend.to_numpy(conv._dx_by_col2im(backend.xp, dy, cache)),
                               rtol=1e-12, atol=1e-12)


def test_dbias_is_none_without_bias(backend, rng):
    x, w = backend.asarray(rng.standard_normal((1, 2, 4, 4))), backend.asarray(rng.standard_normal((3, 2, 3, 3)))
    y, cache = ops.conv2d_forward(x, w)
    dx, dw, db = ops.conv2d_backward(backend.asarray(rng.standard_normal(tuple(y.shape))), cache)
    assert db is None and tuple(dx.shape) == (1, 2, 4, 4) and tuple(dw.shape) == (3, 2, 3, 3)


# --------------------------------------------------------------------------------- the tiles

def _forward_backward(backend, x, w, b, dy, **kwargs):
    y, cache = ops.conv2d_forward(backend.asarray(x), backend.asarray(w), backend.asarray(b), **kwargs)
    return [backend.to_numpy(a) for a in (y, *ops.conv2d_backward(backend.asarray(dy), cache))]


TILINGS = {  # (TILE_BYTES, TILE_COLUMNS) for the 3x3 windows of 4 channels in float64
    "one row per tile": (1, 1),
    "bands of 2 rows (and 1)": (2 * 4 * 9 * 5 * 8, 1),
    "bands of at least 11 positions": (1, 11),
    "several samples per tile": (2 * 4 * 9 * 30 * 8, 1),
}


@pytest.mark.parametrize("tiling", TILINGS)
@pytest.mark.parametrize("kwargs", [dict(padding=1), dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2))],
                         ids=["stride 1", "strided, dilated"])
def test_tiles_give_the_whole_batch_result(backend, rng, monkeypatch, tiling, kwargs):
    """Bands of rows, uneven bands, tiles of several samples and a last smaller tile: the same
    output and gradients as one tile holding everything."""
    x, w, b = rng.standard_normal((5, 4, 6, 5)), rng.standard_normal((4, 4, 3, 3)), rng.standard_normal(4)
    y_shape = ops.conv2d_forward(x, w, b, **kwargs)[0].shape
    dy = rng.standard_normal(y_shape)
    monkeypatch.setattr(_geometry, "TILE_BYTES", 2 ** 30)
    whole = _forward_backward(backend, x, w, b, dy, **kwargs)
    budget, columns = TILINGS[tiling]
    monkeypatch.setattr(_geometry, "TILE_BYTES", budget)
    monkeypatch.setattr(_geometry, "TILE_COLUMNS", columns)
    assert len(conv._tiles(np, _geometry.pad2d(x, (1, 1)), (3, 3), y_shape[2:])) > 1
    for got, want in zip(_forward_backward(backend, x, w, b, dy, **kwargs), whole):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("tiling", ["one row per tile", "several samples per tile"])
@pytest.mark.parametrize("padding, groups, dilation", [(0, 1, 1), ((1, 0), 2, 1), (0, 1, 3)],
                         ids=["plain", "padded, grouped", "dilated"])
def test_pointwise_windows_read_in_place(backend, rng, monkeypatch, tiling, padding, groups,
                                         dilation):
    """A 1x1 kernel at stride 1 takes its windows straight from the (padded) input, no gather:
    output and all three gradients against the same sums written per group here."""
    x, w, b = rng.standard_normal((3, 4, 5, 4)), rng.standard_normal((6, 4 // groups, 1, 1)), rng.standard_normal(6)
    kwargs = dict(padding=padding, groups=groups, dilation=dilation)
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    xpad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    dy = rng.standard_normal((3, 6, *xpad.shape[2:]))
    budget, columns = TILINGS[tiling]
    monkeypatch.setattr(_geometry, "TILE_BYTES", budget)
    monkeypatch.setattr(_geometry, "TILE_COLUMNS", columns)
    y, dx, dw, db = _forward_backward(backend, x, w, b, dy, **kwargs)
    y_want, dxpad, dw_want = np.empty(dy.shape), np.zeros(xpad.shape), np.empty(w.shape)
    for g in range(groups):
        o, c = slice(6 // groups * g, 6 // groups * (g + 1)), slice(4 // groups * g, 4 // groups * (g + 1))
        wg = w[o, :, 0, 0]                                              # (O/G, C/G)
        y_want[:, o] = np.einsum("oc,nchw->nohw", wg, xpad[:, c]) + b[o, None, None]
        dxpad[:, c] = np.einsum("oc,nohw->nchw", wg, dy[:, o])
        dw_want[o, :, 0, 0] = np.einsum("nohw,nchw->oc", dy[:, o], xpad[:, c])
    np.testing.assert_allclose(y, y_want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, dxpad[:, :, ph:ph + 5, pw:pw + 4], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dw, dw_want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(db, dy.sum(axis=(0, 2, 3)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("side_by_side", [True, False])
@pytest.mark.parametrize("o", [2, 6])
def test_samples_side_by_side_or_one_by_one_agree(backend, rng, monkeypatch, side_by_side, o):
    """The products of a tile, per sample or with the samples side by side (chosen by shape):
    the same sums.  O = 6 > C = 2 takes dx through col2im, O = 2 through the convolution."""
    x, w, b = rng.standard_normal((4, 2, 3, 4)), rng.standard_normal((o, 2, 2, 3)), rng.standard_normal(o)
    dy = rng.standard_normal((4, o, 4, 4))
    reference = _forward_backward(backend, x, w, b, dy, padding=1)
    monkeypatch.setattr(conv, "_side_by_side", lambda cols, rows_of_a: side_by_side and cols.shape[0] > 1)
    for got, want in zip(_forward_backward(backend, x, w, b, dy, padding=1), reference):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_numpy_writes_products_into_y_as_the_portable_path_does(rng, monkeypatch):
    """NumPy's ``matmul(..., out=)`` into the rows of ``y`` (bands of rows, whole samples) against
    the product and slice assignment that array_api_strict runs."""
    import array_api_strict
    x, w, b = rng.standard_normal((3, 4, 7, 6)), rng.standard_normal((6, 2, 3, 3)), rng.standard_normal(6)
    for budget in (1, 2 ** 30):
        monkeypatch.setattr(_geometry, "TILE_BYTES", budget)
        monkeypatch.setattr(_geometry, "TILE_COLUMNS", 1)
        fast, _ = ops.conv2d_forward(x, w, b, padding=1, groups=2)
        portable, _ = ops.conv2d_forward(*(array_api_strict.asarray(a) for a in (x, w, b)),
                                         padding=1, groups=2)
        np.testing.assert_allclose(fast, np.asarray(portable), rtol=1e-13, atol=1e-13)


def test_kept_workspaces_carry_nothing_over(backend, rng):
    """The workspace kept between calls (``scratch``) filled with NaN before a call: nothing of
    it reaches the results (every entry a tile uses is written first)."""
    x, w, b = rng.standard_normal((3, 4, 6, 5)), rng.standard_normal((5, 4, 3, 3)), rng.standard_normal(5)
    dy = rng.standard_normal((3, 5, 6, 5))
    clean = _forward_backward(backend, x, w, b, dy, padding=1)
    where = device(backend.asarray(x))
    for dtype in (backend.xp.float32, backend.xp.float64):
        buffer = _geometry.scratch(backend.xp, "conv windows", 10 ** 5, dtype, where)
        buffer[...] = float("nan")
    for got, want in zip(_forward_backward(backend, x, w, b, dy, padding=1), clean):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------ mutation and dtype

@pytest.mark.parametrize("op,x_shape,w_shape,kwargs", [
    ("conv2d", (2, 4, 5, 6), (6, 2, 3, 2), dict(padding=(1, 0), stride=2, groups=2)),
    ("conv1d", (2, 3, 7), (2, 3, 3), dict(padding=1, dilation=2)),
])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dtype_kept_and_nothing_modified(backend, rng, op, x_shape, w_shape, kwargs, dtype):
    forward, backward = getattr(ops, f"{op}_forward"), getattr(ops, f"{op}_backward")
    x, w, b = (backend.asarray(rng.standard_normal(s), dtype) for s in (x_shape, w_shape, w_shape[:1]))
    before = [backend.to_numpy(a).copy() for a in (x, w, b)]
    y, cache = forward(x, w, b, **kwargs)
    dy = backend.asarray(rng.standard_normal(tuple(y.shape)), dtype)
    dy_before = backend.to_numpy(dy).copy()
    grads = backward(dy, cache)
    assert y.dtype == backend.dtype(dtype)
    assert all(g.dtype == backend.dtype(dtype) for g in grads)
    assert [tuple(g.shape) for g in grads] == [x_shape, w_shape, w_shape[:1]]
    for a, a_before in zip((x, w, b, dy), (*before, dy_before)):
        np.testing.assert_array_equal(backend.to_numpy(a), a_before)


def test_nan_and_inf_propagate_to_the_windows_that_read_them(backend, rng):
    x = rng.standard_normal((1, 1, 5, 5))
    x[0, 0, 0, 0], x[0, 0, 4, 4] = np.nan, np.inf
    w = np.abs(rng.standard_normal((1, 1, 2, 2))) + 0.1
    y, cache = ops.conv2d_forward(backend.asarray(x), backend.asarray(w))
    y = backend.to_numpy(y)
    assert np.isnan(y[0, 0, 0, 0]) and np.isposinf(y[0, 0, 3, 3])
    assert np.isfinite(y).sum() == 14
    dx, dw, _ = ops.conv2d_backward(backend.asarray(np.ones((1, 1, 4, 4)) * 0.5), cache)
    dw = backend.to_numpy(dw)
    assert np.all(np.isfinite(backend.to_numpy(dx)))   # dx reads only w and dy
    assert np.isnan(dw[0, 0, 0, 0]) and np.isposinf(dw[0, 0, 1, 1])  # the only taps that read them
    assert np.isfinite(dw[0, 0, 0, 1]) and np.isfinite(dw[0, 0, 1, 0])


# -------------------------------------------------------------------------------- bad input

def _conv2d_args(rng, x_shape=(2, 4, 5, 5), w_shape=(6, 2, 3, 3), b_shape=(6,)):
    return (rng.standard_normal(x_shape), rng.standard_normal(w_shape),
            None if b_shape is None else rng.standard_normal(b_shape))


DT = r"(array_api_strict\.)?"  # how array_api_strict prints its dtypes

BAD_CONV2D = [
    # (what, changes to (x, w, b), kwargs, error class, argument named, words in the message)
    ("x with 3 dimensions", dict(x_shape=(4, 5, 5)), {}, ValueError, "x", "4 dimensions"),
    ("weight with 3 dimensions", dict(w_shape=(6, 2, 3)), {}, ValueError, "weight", "4 dimensions"),
    ("bias with 2 dimensions", dict(b_shape=(6, 1)), {}, ValueError, "bias", "1 dimensions"),
    ("bias of the wrong length", dict(b_shape=(5,)), {}, ValueError, "bias", "shape (6,)"),
    ("channels not matching the weight", dict(w_shape=(6, 3, 3, 3)), {}, ValueError, "weight",
     "C/groups = 2"),
    ("groups not dividing C", dict(w_shape=(6, 1, 3, 3)), dict(groups=3), ValueError, "groups",
     "a divisor"),
    ("groups not dividing O", dict(w_shape=(5, 2, 3, 3), b_shape=None), {}, ValueError, "groups",
     "output channels O = 5"),
    ("zero groups", {}, dict(groups=0), ValueError, "groups", ">= 1"),
    ("non-integer groups", {}, dict(groups=2.0), TypeError, "groups", "an int"),
    ("empty kernel", dict(w_shape=(6, 2, 0, 3)), {}, ValueError, "weight", "size >= 1"),
    ("kernel larger than the padded input", dict(w_shape=(6, 2, 6, 3)), dict(padding=(0, 1)),
     ValueError, "weight", "padded input size (5, 7)"),
    ("dilated kernel larger than the input", {}, dict(dilation=3), ValueError, "weight", "(7, 7)"),
    ("zero stride", {}, dict(stride=0), ValueError, "stride", ">= 1"),
    ("negative stride in a pair", {}, dict(stride=(1, -1)), ValueError, "stride", ">= 1"),
    ("stride of three values", {}, dict(stride=(1, 1, 1)), TypeError, "stride", "pair"),
    ("zero dilation", {}, dict(dilation=(0, 1)), ValueError, "dilation", ">= 1"),
    ("negative padding", {}, dict(padding=-1), ValueError, "padding", ">= 0"),
    ("float padding", {}, dict(padding=1.5), TypeError, "padding", "int"),
]


@pytest.mark.parametrize("what,shapes,kwargs,cls,arg,words", BAD_CONV2D, ids=[c[0] for c in BAD_CONV2D])
def test_conv2d_bad_input(backend, rng, what, shapes, kwargs, cls, arg, words):
    x, w, b = (None if a is None else backend.asarray(a) for a in _conv2d_args(rng, **shapes))
    kwargs = {"groups": 2, **kwargs}
    with pytest.raises(cls, match=r"^conv2d: argument '" + arg + "' expected") as info:
        ops.conv2d_forward(x, w, b, **kwargs)
    assert words in str(info.value)


@pytest.mark.parametrize("dtype", ["int64", "bool", "complex128"])
@pytest.mark.parametrize("arg", ["x", "weight", "bias"])
def test_conv2d_rejects_non_real_float_dtypes(backend, rng, dtype, arg):
    args = dict(zip(("x", "weight", "bias"), _conv2d_args(rng, w_shape=(6, 4, 3, 3))))
    arrays = {k: backend.asarray(v.astype(dtype) if k == arg else v) for k, v in args.items()}
    with pytest.raises(TypeError, match=rf"^conv2d: argument '{arg}' expected a real floating-point dtype"):
        ops.conv2d_forward(arrays["x"], arrays["weight"], arrays["bias"])


@pytest.mark.parametrize("arg", ["weight", "bias"])
def test_conv2d_rejects_dtype_mismatch(backend, rng, arg):
    args = dict(zip(("x", "weight", "bias"), _conv2d_args(rng, w_shape=(6, 4, 3, 3))))
    arrays = {k: backend.asarray(v, "float32" if k == arg else "float64") for k, v in args.items()}
    with pytest.raises(TypeError, match=rf"^conv2d: argument '{arg}' expected dtype {DT}float64 "
                                        rf"\(the dtype of 'x'\), got dtype {DT}float32"):
        ops.conv2d_forward(arrays["x"], arrays["weight"], arrays["bias"])


def test_conv2d_rejects_mixed_backends(rng):
    import array_api_strict
    x, w, b = _conv2d_args(rng, w_shape=(6, 4, 3, 3))
    with pytest.raises(TypeError, match=r"^conv2d: argument 'weight' expected an array of the same "
                                        r"library as 'x' \(numpy\), got an array of array_api_strict"):
        ops.conv2d_forward(x, array_api_strict.asarray(w), b)
    with pytest.raises(TypeError, match=r"^conv2d_backward: argument 'weight' expected an array of the "
                                        r"same library as 'dy' \(array_api_strict\), got an array of numpy"):
        _, cache = ops.conv2d_forward(x, w, b)
        ops.conv2d_backward(array_api_strict.asarray(np.zeros((2, 6, 3, 3))), cache)


@pytest.mark.parametrize("op,x_shape,w_shape", [("conv2d", (2, 4, 5, 5), (6, 4, 3, 3)),
                                                ("conv1d", (2, 4, 5), (6, 4, 3))])
def test_backward_rejects_bad_dy(backend, rng, op, x_shape, w_shape):
    forward, backward = getattr(ops, f"{op}_forward"), getattr(ops, f"{op}_backward")
    y, cache = forward(backend.asarray(rng.standard_normal(x_shape)), backend.asarray(rng.standard_normal(w_shape)))
    shape = tuple(y.shape)
    with pytest.raises(ValueError, match=rf"^{op}_backward: argument 'dy' expected shape \({shape[0]}, "):
        backward(backend.asarray(np.zeros(shape[:-1] + (shape[-1] + 1,))), cache)
    with pytest.raises(TypeError, match=rf"^{op}_backward: argument 'dy' expected dtype {DT}float64"):
        backward(backend.asarray(np.zeros(shape), "float32"), cache)
    with pytest.raises(TypeError, match=rf"^{op}_backward: argument 'dy' expected a real floating"):
        backward(backend.asarray(np.zeros(shape, dtype=np.int64)), cache)


BAD_CONV1D = [
    ("x with 4 dimensions", (2, 4, 5, 5), (6, 4, 3), {}, ValueError, "x", "3 dimensions (N, C, L)"),
    ("weight with 4 dimensions", (2, 4, 5), (6, 4, 3, 3), {}, ValueError, "weight", "3 dimensions"),
    ("channels not matching", (2, 4, 5), (6, 2, 3), {}, ValueError, "weight", "C/groups = 4"),
    ("kernel too long", (2, 4, 5), (6, 4, 4), dict(dilation=2), ValueError, "weight", "(5,)"),
    ("stride as a pair", (2, 4, 5), (6, 4, 3), dict(stride=(1, 1)), TypeError, "stride", "1-tuple"),
    ("zero stride", (2, 4, 5), (6, 4, 3), dict(stride=0), ValueError, "stride", ">= 1"),
    ("negative padding", (2, 4, 5), (6, 4, 3), dict(padding=(-1,)), ValueError, "padding", ">= 0"),
    ("zero dilation", (2, 4, 5), (6, 4, 3), dict(dilation=0), ValueError, "dilation", ">= 1"),
    ("groups not dividing", (2, 4, 5), (6, 4, 3), dict(groups=4), ValueError, "groups", "a divisor"),
]


@pytest.mark.parametrize("what,x_shape,w_shape,kwargs,cls,arg,words", BAD_CONV1D,
                         ids=[c[0] for c in BAD_CONV1D])
def test_conv1d_bad_input(backend, rng, what, x_shape, w_shape, kwargs, cls, arg, words):
    x, w = backend.asarray(rng.standard_normal(x_shape)), backend.asarray(rng.standard_normal(w_shape))
    with pytest.raises(cls, match=r"^conv1d: argument '" + arg + "' expected") as info:
        ops.conv1d_forward(x, w, **kwargs)
    assert words in str(info.value)


def test_registered_with_passing_examples(rng):
    for name in ("conv2d", "conv1d"):
        spec = ops.REGISTRY[name]
        assert spec.family == "conv" and spec.linear and spec.doc == "ops/conv.md"
        args, kwargs = spec.example(rng)
        check_op(spec.forward, spec.backward, *args, **kwargs).raise_if_failed()
        check_adjoint(spec.forward, spec.backward, *args, **kwargs).raise_if_failed()
