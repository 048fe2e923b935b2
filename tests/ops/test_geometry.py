"""Window geometry: output size, pad/crop, im2col against explicit loops, col2im as its adjoint,
the batch blocks, and the window-fit check."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from npattn.ops import _geometry as geo

# The backend fixture is stateless, so sharing it across Hypothesis examples is safe.
given_with_backend = settings(suppress_health_check=[*settings.default.suppress_health_check,
                                                     HealthCheck.function_scoped_fixture])


@st.composite
def windows(draw):
    """A window geometry whose output has at least one position, on an already padded input."""
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padded = tuple(d * (k - 1) + 1 + draw(st.integers(0, 4)) for k, d in zip(kernel, dilation))
    out_hw = tuple(geo.conv_output_size(p, k, s, 0, d)
                   for p, k, s, d in zip(padded, kernel, stride, dilation))
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    return (n, c, *padded), kernel, stride, dilation, out_hw, draw(st.integers(0, 2**32 - 1))


def im2col_loops(xpad, kernel, stride, dilation, out_hw):
    n_, c_ = xpad.shape[:2]
    cols = np.zeros((n_, c_, *kernel, *out_hw))
    for n in range(n_):
        for c in range(c_):
            for i in range(kernel[0]):
                for j in range(kernel[1]):
                    for p in range(out_hw[0]):
                        for q in range(out_hw[1]):
                            cols[n, c, i, j, p, q] = xpad[n, c, p * stride[0] + i * dilation[0],
                                                          q * stride[1] + j * dilation[1]]
    return cols


def col2im_loops(cols, padded_hw, stride, dilation):
    n_, c_, kh, kw, oh, ow = cols.shape
    g = np.zeros((n_, c_, *padded_hw))
    for n in range(n_):
        for c in range(c_):
            for i in range(kh):
                for j in range(kw):
                    for p in range(oh):
                        for q in range(ow):
                            g[n, c, p * stride[0] + i * dilation[0],
                              q * stride[1] + j * dilation[1]] += cols[n, c, i, j, p, q]
    return g


# ------------------------------------------------------------------------------- output size

@pytest.mark.parametrize("size,kernel,stride,padding,dilation,expected", [
    (7, 3, 1, 0, 1, 5), (7, 3, 1, 1, 1, 7), (7, 3, 2, 1, 1, 4), (8, 3, 2, 1, 1, 4),
    (5, 2, 2, 0, 1, 2), (9, 3, 1, 0, 3, 3), (1, 1, 5, 0, 1, 1), (2, 3, 1, 0, 1, 0),
])
def test_output_size_known_values(size, kernel, stride, padding, dilation, expected):
    assert geo.conv_output_size(size, kernel, stride, padding, dilation) == expected


@given(size=st.integers(1, 12), kernel=st.integers(1, 4), stride=st.integers(1, 4),
       padding=st.integers(0, 3), dilation=st.integers(1, 3))
def test_output_size_counts_window_starts(size, kernel, stride, padding, dilation):
    """The formula is the number of strided starts whose dilated window fits the padded input."""
    span = dilation * (kernel - 1) + 1
    starts = [s for s in range(0, size + 2 * padding, stride) if s + span <= size + 2 * padding]
    assert max(geo.conv_output_size(size, kernel, stride, padding, dilation), 0) == len(starts)


def test_check_window_fits_returns_size_and_names_the_argument():
    assert geo.check_window_fits("op", "w", (5, 6), (3, 2), (2, 1), (1, 0), (1, 2)) == (3, 4)
    with pytest.raises(ValueError, match=r"op: argument 'w' expected .*padded input size \(4, 4\), "
                                         r"got an effective kernel of size \(5, 3\)"):
        geo.check_window_fits("op", "w", (2, 4), (3, 3), (1, 1), (1, 0), (2, 1))
    # Works for one spatial axis too (conv1d).
    assert geo.check_window_fits("op", "w", (9,), (3,), (2,), (1,), (1,)) == (5,)


# ----------------------------------------------------------------------------------- pad/crop

def test_pad2d_values_and_crop_inverse(backend, rng):
    x = rng.standard_normal((2, 3, 4, 5))
    xpad = backend.to_numpy(geo.pad2d(backend.asarray(x), (1, 2), value=-7.0))
    assert xpad.shape == (2, 3, 6, 9)
    np.testing.assert_array_equal(xpad[..., 1:5, 2:7], x)
    border = np.ones(xpad.shape, dtype=bool)
    border[..., 1:5, 2:7] = False
    assert np.all(xpad[border] == -7.0)
    np.testing.assert_array_equal(backend.to_numpy(geo.crop2d(backend.asarray(xpad), (1, 2))), x)


def test_zero_padding_keeps_everything(backend, rng):
    """``crop2d`` with padding 0 keeps every entry (a ``p:-p`` slice would return nothing)."""
    x = backend.asarray(rng.standard_normal((1, 2, 3, 4)))
    assert geo.pad2d(x, (0, 0)) is x
    np.testing.assert_array_equal(backend.to_numpy(geo.crop2d(x, (0, 0))), backend.to_numpy(x))
    np.testing.assert_array_equal(backend.to_numpy(geo.crop2d(x, (1, 0))),
                                  backend.to_numpy(x)[:, :, 1:2, :])


def test_crop_is_the_adjoint_of_pad(backend, rng):
    x, g = rng.standard_normal((2, 2, 3, 4)), rng.standard_normal((2, 2, 5, 8))
    lhs = np.sum(backend.to_numpy(geo.pad2d(backend.asarray(x), (1, 2))) * g)
    rhs = np.sum(x * backend.to_numpy(geo.crop2d(backend.asarray(g), (1, 2))))
    assert lhs == pytest.approx(rhs, rel=1e-12)


# ------------------------------------------------------------------------------ im2col/col2im

@given_with_backend
@given(case=windows())
def test_im2col_matches_loops(backend, case):
    shape, kernel, stride, dilation, out_hw, seed = case
    xpad = np.random.default_rng(seed).standard_normal(shape)
    cols = geo.im2col(backend.asarray(xpad), kernel, stride, dilation, out_hw)
    np.testing.assert_array_equal(backend.to_numpy(cols),
                                  im2col_loops(xpad, kernel, stride, dilation, out_hw))


@given_with_backend
@given(case=windows())
def test_im2col_into_a_workspace_overwrites_every_entry(backend, case):
    shape, kernel, stride, dilation, out_hw, seed = case
    xpad = backend.asarray(np.random.default_rng(seed).standard_normal(shape))
    workspace = backend.asarray(np.full((*shape[:2], *kernel, *out_hw), np.nan))
    cols = geo.im2col(xpad, kernel, stride, dilation, out_hw, out=workspace)
    assert cols is workspace
    np.testing.assert_array_equal(backend.to_numpy(cols),
                                  backend.to_numpy(geo.im2col(xpad, kernel, stride, dilation, out_hw)))


@given_with_backend
@given(case=windows())
def test_col2im_matches_loops(backend, case):
    shape, kernel, stride, dilation, out_hw, seed = case
    cols = np.random.default_rng(seed).standard_normal((*shape[:2], *kernel, *out_hw))
    g = geo.col2im(backend.asarray(cols), shape[2:], stride, dilation)
    np.testing.assert_allclose(backend.to_numpy(g), col2im_loops(cols, shape[2:], stride, dilation),
                               rtol=1e-13, atol=1e-13)


@given_with_backend
@given(case=windows())
def test_col2im_is_the_adjoint_of_im2col(backend, case):
    """``<im2col(x), c> == <x, col2im(c)>`` for random x and c (the dot-product test)."""
    shape, kernel, stride, dilation, out_hw, seed = case
    rng = np.random.default_rng(seed)
    x, c = rng.standard_normal(shape), rng.standard_normal((*shape[:2], *kernel, *out_hw))
    lhs = np.sum(backend.to_numpy(geo.im2col(backend.asarray(x), kernel, stride, dilation, out_hw)) * c)
    rhs = np.sum(x * backend.to_numpy(geo.col2im(backend.asarray(c), shape[2:], stride, dilation)))
    assert lhs == pytest.approx(rhs, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_im2col_col2im_keep_dtype_and_inputs(backend, rng, dtype):
    x = backend.asarray(rng.standard_normal((1, 2, 5, 5)), dtype=dtype)
    x_before = backend.to_numpy(x).copy()
    cols = geo.im2col(x, (2, 2), (1, 2), (2, 1), (3, 2))
    cols_before = backend.to_numpy(cols).copy()
    g = geo.col2im(cols, (5, 5), (1, 2), (2, 1))
    assert cols.dtype == g.dtype == backend.dtype(dtype)
    np.testing.assert_array_equal(backend.to_numpy(x), x_before)
    np.testing.assert_array_equal(backend.to_numpy(cols), cols_before)


# ------------------------------------------------------------------------------ batch blocks

@given(n=st.integers(1, 20), per_sample=st.integers(1, 50), budget=st.integers(1, 200))
def test_batch_blocks_cover_the_batch_in_equal_steps(n, per_sample, budget):
    blocks = geo.batch_blocks(n, per_sample, budget)
    step = max(1, budget // per_sample)
    assert [i for b in blocks for i in range(b.start, b.stop)] == list(range(n))
    assert all(b.stop - b.start == step for b in blocks[:-1])
    assert 1 <= blocks[-1].stop - blocks[-1].start <= step


def test_batch_blocks_default_budget_is_read_at_call_time(monkeypatch):
    assert geo.batch_blocks(5, 10) == [slice(0, 5)]
    monkeypatch.setattr(geo, "BLOCK_ELEMENTS", 20)
    assert geo.batch_blocks(5, 10) == [slice(0, 2), slice(2, 4), slice(4, 5)]
