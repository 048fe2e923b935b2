"""Geometry of sliding windows, in one place: output size, padding, im2col and its adjoint col2im.

Convolution and pooling all read an input through windows of ``kh x kw`` taps, ``stride`` apart,
taps ``dilation`` apart, over an input padded by ``padding`` on each side.  The output size is

.. math:: H_{out} = \\lfloor (H + 2 p_h - d_h (k_h - 1) - 1) / s_h \\rfloor + 1

(PyTorch's rule, ``ceil_mode=False``).  ``im2col`` gathers the windows into
``cols[n, c, i, j, oh, ow] = xpad[n, c, oh*s_h + i*d_h, ow*s_w + j*d_w]``, one strided slice per
kernel tap; ``col2im`` is its exact adjoint: the same loop over taps, ``=`` turned into ``+=``.
See ``docs/geometry.md``.
"""

from __future__ import annotations

from typing import Any

from array_api_compat import array_namespace, device

from ..checks import argument_error

__all__ = ["conv_output_size", "check_window_fits", "pad2d", "crop2d", "im2col", "col2im",
           "batch_blocks", "BLOCK_ELEMENTS"]

#: The most elements a per-block workspace (e.g. a block of im2col windows) should hold: 2 Mi
#: elements, 8 MiB in float32.  Large temporaries cost more than their copy: the allocator hands
#: them back to the system when freed and every call faults their pages in again (a 58 MiB
#: im2col at 8x64x56x56 took 15 ms to build fresh, 3.5 ms block by block into one reused buffer).
BLOCK_ELEMENTS = 2 ** 21


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """``floor((size + 2*padding - dilation*(kernel - 1) - 1) / stride) + 1``; may be < 1."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def check_window_fits(op: str, arg: str, in_hw: tuple[int, int], kernel: tuple[int, int],
                      stride: tuple[int, int], padding: tuple[int, int],
                      dilation: tuple[int, int]) -> tuple[int, int]:
    """Return ``(H_out, W_out)``; raise ``ValueError`` naming ``arg`` if a window does not fit."""
    out = tuple(conv_output_size(n, k, s, p, d)
                for n, k, s, p, d in zip(in_hw, kernel, stride, padding, dilation))
    if min(out) < 1:
        eff = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
        padded = tuple(n + 2 * p for n, p in zip(in_hw, padding))
        raise argument_error(op, arg, f"a (dilated) kernel of at most the padded input size {padded}",
                             f"an effective kernel of size {eff}")
    return out  # type: ignore[return-value]


def pad2d(x: Any, padding: tuple[int, int], value: float = 0.0) -> Any:
    """Pad the last two axes of ``x`` by ``padding = (ph, pw)`` on each side with ``value``.

    Returns ``x`` itself (not a copy) when there is nothing to pad.
    """
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    xp = array_namespace(x)
    *lead, h, w = x.shape
    out = xp.full((*lead, h + 2 * ph, w + 2 * pw), value, dtype=x.dtype, device=device(x))
    out[..., ph:ph + h, pw:pw + w] = x
    return out


def crop2d(g: Any, padding: tuple[int, int]) -> Any:
    """Adjoint of :func:`pad2d` (for the padded entries' gradient, which is dropped).

    Slices with explicit ends, so ``padding = 0`` keeps everything (a ``p:-p`` slice would not).
    """
    ph, pw = padding
    h, w = g.shape[-2] - 2 * ph, g.shape[-1] - 2 * pw
    return g[..., ph:ph + h, pw:pw + w]


def _tap(i: int, j: int, stride: tuple[int, int], dilation: tuple[int, int],
         out_hw: tuple[int, int]) -> tuple[slice, slice]:
    """The strided slices of padded input read by kernel tap ``(i, j)``."""
    (sh, sw), (dh, dw), (oh, ow) = stride, dilation, out_hw
    return (slice(i * dh, i * dh + sh * (oh - 1) + 1, sh),
            slice(j * dw, j * dw + sw * (ow - 1) + 1, sw))


def im2col(xpad: Any, kernel: tuple[int, int], stride: tuple[int, int],
           dilation: tuple[int, int], out_hw: tuple[int, int], out: Any = None) -> Any:
    """Gather the sliding windows of an already padded input.

    Parameters
    ----------
    xpad : array, shape (N, C, Hp, Wp)
    kernel, stride, dilation : pair of int
    out_hw : pair of int
        ``(H_out, W_out)`` from :func:`conv_output_size`.
    out : array, shape (N, C, kh, kw, H_out, W_out), optional
        A workspace to fill (and return) instead of a new array; every entry is overwritten.

    Returns
    -------
    cols : array, shape (N, C, kh, kw, H_out, W_out), the dtype of ``xpad``
        ``cols[n, c, i, j, oh, ow] = xpad[n, c, oh*sh + i*dh, ow*sw + j*dw]``.
    """
    xp = array_namespace(xpad)
    n, c = xpad.shape[:2]
    kh, kw = kernel
    if out is None:
        out = xp.empty((n, c, kh, kw, *out_hw), dtype=xpad.dtype, device=device(xpad))
    for i in range(kh):
        for j in range(kw):
            rows, columns = _tap(i, j, stride, dilation, out_hw)
            out[:, :, i, j, ...] = xpad[:, :, rows, columns]
    return out


def col2im(cols: Any, padded_hw: tuple[int, int], stride: tuple[int, int],
           dilation: tuple[int, int]) -> Any:
    """Adjoint of :func:`im2col`: add every window back where it was read from.

    Parameters
    ----------
    cols : array, shape (N, C, kh, kw, H_out, W_out)
    padded_hw : pair of int
        ``(Hp, Wp)``, the padded input's spatial size.
    stride, dilation : pair of int

    Returns
    -------
    gpad : array, shape (N, C, Hp, Wp)
        ``gpad[n, c, oh*sh + i*dh, ow*sw + j*dw] += cols[n, c, i, j, oh, ow]``.
    """
    xp = array_namespace(cols)
    n, c, kh, kw, oh, ow = cols.shape
    gpad = xp.zeros((n, c, *padded_hw), dtype=cols.dtype, device=device(cols))
    for i in range(kh):
        for j in range(kw):
            rows, columns = _tap(i, j, stride, dilation, (oh, ow))
            gpad[:, :, rows, columns] += cols[:, :, i, j, ...]
    return gpad


def batch_blocks(n: int, per_sample: int, budget: int | None = None) -> list[slice]:
    """Split a batch of ``n`` into consecutive slices of ``max(1, budget // per_sample)`` samples.

    ``per_sample`` is the number of elements one sample puts in the workspace and ``budget``
    (default :data:`BLOCK_ELEMENTS`, read at call time) the most a block should hold.  All
    slices but the last have the same length, so one workspace serves them all.
    """
    budget = BLOCK_ELEMENTS if budget is None else budget
    step = max(1, budget // max(1, per_sample))
    return [slice(start, min(start + step, n)) for start in range(0, n, step)]
