"""Window geometry: output size, pad/crop, im2col against explicit loops (NumPy's one-copy gather
against the portable loop), col2im as its adjoint, the batch blocks, the tiles of a convolution's
output and the rows they read, the kept workspaces, and the window-fit check."""

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


@given(case=windows())
def test_numpy_gather_agrees_with_the_portable_loop(case):
    """NumPy's im2col (one copy through a strided view) against the loop over taps that every
    other library runs (array_api_strict's arrays take it), on the same numbers."""
    import array_api_strict
    shape, kernel, stride, dilation, out_hw, seed = case
    xpad = np.random.default_rng(seed).standard_normal(shape)
    fast = geo.im2col(xpad, kernel, stride, dilation, out_hw)
    portable = geo.im2col(array_api_strict.asarray(xpad), kernel, stride, dilation, out_hw)
    np.testing.assert_array_equal(fast, np.asarray(portable))


def test_numpy_gather_reads_strided_inputs(rng):
    """The strided view is built from the input's own strides: a transposed, sliced input."""
    base = rng.standard_normal((3, 2, 9, 8))
    xpad = np.transpose(base, (1, 0, 3, 2))[:, :, 1:, ::2]            # (2, 3, 7, 5), not contiguous
    want = im2col_loops(np.ascontiguousarray(xpad), (2, 3), (2, 1), (1, 1), (3, 3))
    np.testing.assert_array_equal(geo.im2col(xpad, (2, 3), (2, 1), (1, 1), (3, 3)), want)


@given_with_backend
@given(case=windows(), data=st.data())
def test_im2col_of_a_band_of_rows_is_a_slice_of_the_whole(backend, case, data):
    """A tile's windows: im2col of the input rows that ``input_rows`` names, for output rows
    ``rows``, equals those rows of the whole im2col."""
    shape, kernel, stride, dilation, out_hw, seed = case
    start = data.draw(st.integers(0, out_hw[0] - 1))
    rows = slice(start, data.draw(st.integers(start + 1, out_hw[0])))
    xpad = np.random.default_rng(seed).standard_normal(shape)
    read = geo.input_rows(rows, kernel[0], stride[0], dilation[0])
    assert read.stop <= shape[2]
    band = geo.im2col(backend.asarray(xpad[:, :, read, :]), kernel, stride, dilation,
                      (rows.stop - rows.start, out_hw[1]))
    whole = im2col_loops(xpad, kernel, stride, dilation, out_hw)
    np.testing.assert_array_equal(backend.to_numpy(band), whole[:, :, :, :, rows, :])


@given(kernel=st.integers(1, 4), stride=st.integers(1, 3), dilation=st.integers(1, 3),
       out=st.integers(1, 9), data=st.data())
def test_input_rows_are_the_rows_the_windows_read(kernel, stride, dilation, out, data):
    start = data.draw(st.integers(0, out - 1))
    rows = slice(start, data.draw(st.integers(start + 1, out)))
    read = {p * stride + i * dilation for p in range(rows.start, rows.stop) for i in range(kernel)}
    got = geo.input_rows(rows, kernel, stride, dilation)
    assert (got.start, got.stop) == (min(read), max(read) + 1)


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


# ------------------------------------------------------------------------- convolution tiles

@given(n=st.integers(0, 6), h=st.integers(1, 12), w=st.integers(1, 12),
       per_position=st.integers(1, 40), itemsize=st.sampled_from([4, 8]),
       budget=st.integers(1, 4000), min_columns=st.integers(1, 60))
def test_window_tiles_cover_the_output_once_in_order(n, h, w, per_position, itemsize, budget,
                                                     min_columns):
    tiles = geo.window_tiles(n, (h, w), per_position, itemsize, budget, min_columns)
    covered = [(s, r) for samples, rows in tiles
               for s in range(samples.start, samples.stop) for r in range(rows.start, rows.stop)]
    assert covered == [(s, r) for s in range(n) for r in range(h)]
    extents = [(t[0].stop - t[0].start, t[1].stop - t[1].start) for t in tiles]
    assert all(e[0] * e[1] <= extents[0][0] * extents[0][1] for e in extents)  # first the largest
    row_bytes = per_position * w * itemsize
    tallest = max(budget // row_bytes, -(-min_columns // w), 1)
    bands = [r for n_tile, r in extents if r < h]
    if bands:                                   # bands of one sample, at most ``tallest`` rows
        assert all(n_tile == 1 for n_tile, r in extents)
        assert max(bands) <= tallest and max(bands) - min(bands) <= 1
    else:                                       # whole samples, as many as the budget holds
        assert all(n_tile == 1 or n_tile * h * row_bytes <= budget for n_tile, _ in extents)


def test_window_tiles_known_cases():
    # whole samples: 3 per tile
    assert geo.window_tiles(7, (2, 3), 10, 4, budget=3 * 240, min_columns=1) == [
        (slice(0, 3), slice(0, 2)), (slice(3, 6), slice(0, 2)), (slice(6, 7), slice(0, 2))]
    # bands of one sample, of heights 4, 3, 3 (not 4, 4, 2)
    assert geo.window_tiles(1, (10, 5), 8, 4, budget=4 * 160, min_columns=1) == [
        (slice(0, 1), slice(0, 4)), (slice(0, 1), slice(4, 7)), (slice(0, 1), slice(7, 10))]
    # a band holds at least min_columns positions: 12 // 5 -> 3 rows, whatever the budget
    assert geo.window_tiles(1, (6, 5), 8, 4, budget=1, min_columns=12) == [
        (slice(0, 1), slice(0, 3)), (slice(0, 1), slice(3, 6))]


def test_window_tiles_defaults_are_read_at_call_time(monkeypatch):
    monkeypatch.setattr(geo, "TILE_BYTES", 160)
    monkeypatch.setattr(geo, "TILE_COLUMNS", 1)
    assert len(geo.window_tiles(1, (10, 5), 8, 4)) == 10
    monkeypatch.setattr(geo, "TILE_COLUMNS", 10)
    assert len(geo.window_tiles(1, (10, 5), 8, 4)) == 5


def test_scratch_is_kept_per_name_dtype_and_thread(backend):
    import threading
    xp = backend.xp
    a = geo.scratch(xp, "test a", 10, xp.float32, None)
    a[...] = 7.0
    again = geo.scratch(xp, "test a", 6, xp.float32, None)
    assert tuple(again.shape) == (6,) and np.all(backend.to_numpy(again) == 7.0)   # the same memory
    other = geo.scratch(xp, "test b", 10, xp.float32, None)
    other[...] = 1.0
    assert np.all(backend.to_numpy(geo.scratch(xp, "test a", 10, xp.float32, None)) == 7.0)
    assert geo.scratch(xp, "test a", 10, xp.float64, None).dtype == xp.float64
    grown = geo.scratch(xp, "test a", 20, xp.float32, None)
    assert tuple(grown.shape) == (20,)
    grown[...] = 5.0
    thread = threading.Thread(target=lambda: geo.scratch(xp, "test a", 20, xp.float32, None)
                              .__setitem__(Ellipsis, -1.0))              # its own buffer
    thread.start()
    thread.join()
    assert np.all(backend.to_numpy(geo.scratch(xp, "test a", 20, xp.float32, None)) == 5.0)


def test_scratch_does_not_keep_large_buffers(monkeypatch):
    import array_api_compat.numpy as xp
    monkeypatch.setattr(geo, "SCRATCH_KEEP_BYTES", 64)
    kept, large = (geo.scratch(xp, "test small", 16, xp.float32, "cpu"),
                   geo.scratch(xp, "test large", 17, xp.float32, "cpu"))
    assert np.shares_memory(kept, geo.scratch(xp, "test small", 16, xp.float32, "cpu"))
    assert not np.shares_memory(large, geo.scratch(xp, "test large", 17, xp.float32, "cpu"))
