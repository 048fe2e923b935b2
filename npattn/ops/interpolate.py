"""Resizing of (N, C, H, W) maps: ``interpolate`` with ``mode="nearest"`` or ``"bilinear"``.

The rules are PyTorch's (``torch.nn.functional.interpolate``), axis by axis.  For an axis of
input size ``n_in`` and output size ``n_out``:

* the output size is ``size``, or ``floor(n_in * scale_factor)``;
* the *scale* is ``1 / scale_factor`` when a scale factor is given (and
  ``recompute_scale_factor`` is not true), else ``n_in / n_out``; bilinear with
  ``align_corners=True`` uses ``(n_in - 1) / (n_out - 1)`` (0 when ``n_out == 1``) instead;
* nearest reads source ``min(floor(o * scale), n_in - 1)`` for output ``o``, computed in float32
  as PyTorch does (``o`` itself when ``n_out == n_in``, ``o // 2`` when ``n_out == 2 n_in``);
* bilinear reads ``src = scale * o`` (aligned corners) or ``max(scale * (o + 1/2) - 1/2, 0)``,
  then ``i0 = floor(src)``, ``i1 = min(i0 + 1, n_in - 1)``, ``l1 = src - i0``, ``l0 = 1 - l1``;
  when ``n_out == n_in`` the axis is copied (``i0 = i1 = o``, ``l1 = 0``).

Resizing is linear: ``y = A_h x A_w^T`` with one matrix per axis, row ``o`` of ``A`` holding
``l0`` at ``i0`` and ``l1`` at ``i1`` (a single 1 for nearest).  The forward gathers the taps
(exactly PyTorch's arithmetic, W first), the backward multiplies by the transposes:
``dx = A_h^T dy A_w``.  Derivation: ``docs/ops/interpolate.md``.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
from array_api_compat import device

from ..backend import namespace
from ..checks import argument_error, check_float_array, check_shape
from ._registry import register_op

__all__ = ["interpolate_forward", "interpolate_backward", "interpolate_plan"]

MODES = ("nearest", "bilinear")


class AxisPlan(NamedTuple):
    """How one axis is resized: output ``o`` is ``l0[o] * in[i0[o]] + l1[o] * in[i1[o]]``.

    Host (NumPy) arrays of length ``n_out``; for nearest ``i1 = i0``, ``l0 = 1``, ``l1 = 0``.
    """

    i0: np.ndarray
    i1: np.ndarray
    l0: np.ndarray
    l1: np.ndarray
    n_in: int

    def matrix(self) -> np.ndarray:
        """The (n_out, n_in) matrix of the resize, float64."""
        a = np.zeros((len(self.i0), self.n_in))
        rows = np.arange(len(self.i0))
        np.add.at(a, (rows, self.i0), self.l0)
        np.add.at(a, (rows, self.i1), self.l1)
        return a


class InterpolateCache(NamedTuple):
    """The input's shape and the two resize matrices (in the input's dtype and device).

    Attributes
    ----------
    in_shape : tuple of int
        ``(N, C, H, W)``.
    a_h : array, shape (H_out, H)
    a_w : array, shape (W_out, W)
    """

    in_shape: tuple[int, ...]
    a_h: Any
    a_w: Any


# --------------------------------------------------------------------------------- index rules

def _nearest_plan(n_in: int, n_out: int, scale_factor: float | None) -> AxisPlan:
    """PyTorch's ``nearest_idx``: ``min(floor(o * scale), n_in - 1)``, in float32."""
    o = np.arange(n_out)
    if n_out == n_in:
        src = o
    elif n_out == 2 * n_in:
        src = o // 2
    else:
        scale = (np.float32(1.0 / scale_factor) if scale_factor is not None
                 else np.float32(n_in) / np.float32(n_out))
        src = np.minimum(np.floor(o.astype(np.float32) * scale).astype(np.int64), n_in - 1)
    ones = np.ones(n_out)
    return AxisPlan(src, src, ones, 0.0 * ones, n_in)


def _bilinear_plan(n_in: int, n_out: int, scale_factor: float | None, align_corners: bool,
                   dtype: type) -> AxisPlan:
    """PyTorch's ``compute_source_index_and_lambda``, in ``dtype`` (float32 or float64)."""
    o = np.arange(n_out)
    if n_out == n_in:
        return AxisPlan(o, o, np.ones(n_out), np.zeros(n_out), n_in)
    if align_corners:
        scale = dtype(n_in - 1) / dtype(n_out - 1) if n_out > 1 else dtype(0)
        src = scale * o.astype(dtype)
    else:
        scale = (dtype(1.0 / scale_factor) if scale_factor is not None
                 else dtype(n_in) / dtype(n_out))
        src = np.maximum(scale * (o.astype(dtype) + dtype(0.5)) - dtype(0.5), dtype(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    l1 = np.clip(src - i0.astype(dtype), dtype(0), dtype(1))
    i1 = np.minimum(i0 + 1, n_in - 1)
    return AxisPlan(i0, i1, (dtype(1) - l1).astype(np.float64), l1.astype(np.float64), n_in)


# ----------------------------------------------------------------------------------- arguments

def _pair_of(op: str, arg: str, value: Any, kind: type) -> tuple[Any, Any]:
    """An int (``kind=int``) or positive number (``kind=float``), or a pair of them."""
    items = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    ok = len(items) == 2 and all(
        not isinstance(v, bool) and (hasattr(v, "__index__") if kind is int
                                     else isinstance(v, (int, float))) for v in items)
    if not ok:
        what = "an int or a pair of ints" if kind is int else "a float or a pair of floats"
        raise argument_error(op, arg, what, repr(value), TypeError)
    pair = tuple(kind(v) for v in items)
    if min(pair) <= 0:
        raise argument_error(op, arg, "values > 0", value)
    return pair  # type: ignore[return-value]


def interpolate_plan(in_hw: tuple[int, int], size: Any = None, scale_factor: Any = None,
                     mode: str = "nearest", align_corners: bool | None = None,
                     recompute_scale_factor: bool | None = None,
                     dtype: str = "float32") -> tuple[AxisPlan, AxisPlan]:
    """The two axis plans of an ``interpolate`` call (checks every argument).

    ``dtype`` (``"float32"`` or ``"float64"``) is the precision bilinear's source positions are
    computed in, the input's, as PyTorch does.  See :func:`interpolate_forward` for the rest.
    """
    op = "interpolate"
    if mode not in MODES:
        raise argument_error(op, "mode", f"one of {MODES}", repr(mode))
    if mode == "nearest" and align_corners is not None:
        raise argument_error(op, "align_corners", "None with mode 'nearest' (it only applies to "
                             "interpolating modes)", repr(align_corners))
    if align_corners is not None and not isinstance(align_corners, bool):
        raise argument_error(op, "align_corners", "a bool or None", repr(align_corners), TypeError)
    if recompute_scale_factor is not None and not isinstance(recompute_scale_factor, bool):
        raise argument_error(op, "recompute_scale_factor", "a bool or None",
                             repr(recompute_scale_factor), TypeError)
    if (size is None) == (scale_factor is None):
        raise argument_error(op, "size", "exactly one of 'size' and 'scale_factor'",
                             "both" if size is not None else "neither")
    if size is not None:
        if recompute_scale_factor:
            raise argument_error(op, "recompute_scale_factor", "None or False with an explicit "
                                 "'size'", recompute_scale_factor)
        out_hw, scales = _pair_of(op, "size", size, int), (None, None)
    else:
        factors = _pair_of(op, "scale_factor", scale_factor, float)
        out_hw = tuple(int(math.floor(n * f)) for n, f in zip(in_hw, factors))
        if min(out_hw) < 1:
            raise argument_error(op, "scale_factor", f"an output size >= 1 for input {in_hw}",
                                 f"output size {out_hw}")
        scales = (None, None) if recompute_scale_factor else factors
    np_dtype = np.float64 if dtype == "float64" else np.float32
    return tuple(  # type: ignore[return-value]
        _nearest_plan(n, m, s) if mode == "nearest"
        else _bilinear_plan(n, m, s, bool(align_corners), np_dtype)
        for n, m, s in zip(in_hw, out_hw, scales))


# ---------------------------------------------------------------------------------- forward pair

def _gather(xp: Any, x: Any, plan: AxisPlan, axis: int, dev: Any) -> Any:
    """Resize ``x`` along ``axis`` (2 or 3) by ``plan``: two taps, or one for a plain copy."""
    shape = [1, 1, 1, 1]
    shape[axis] = len(plan.i0)
    take0 = xp.take(x, xp.asarray(plan.i0, device=dev), axis=axis)
    if not np.any(plan.l1):
        return take0
    l0 = xp.reshape(xp.asarray(plan.l0, dtype=x.dtype, device=dev), tuple(shape))
    l1 = xp.reshape(xp.asarray(plan.l1, dtype=x.dtype, device=dev), tuple(shape))
    return l0 * take0 + l1 * xp.take(x, xp.asarray(plan.i1, device=dev), axis=axis)


def interpolate_forward(x: Any, size: Any = None, scale_factor: Any = None,
                        mode: str = "nearest", align_corners: bool | None = None,
                        recompute_scale_factor: bool | None = None
                        ) -> tuple[Any, InterpolateCache]:
    """Resize the spatial axes of ``x`` (``torch.nn.functional.interpolate``, 4-D input).

    Parameters
    ----------
    x : array, shape (N, C, H, W), float32 or float64
    size : int or pair of int, optional
        The output size ``(H_out, W_out)``.  Exactly one of ``size`` and ``scale_factor``.
    scale_factor : float or pair of float, optional
        ``H_out = floor(H * scale_factor)``; unless ``recompute_scale_factor`` is true, the
        source positions use ``1 / scale_factor`` (not ``H / H_out``), as PyTorch does.
    mode : {"nearest", "bilinear"}
        ``"nearest"`` is PyTorch's floor rule (not ``"nearest-exact"``).
    align_corners : bool or None
        Bilinear only (``None`` means ``False``); must be ``None`` for nearest.
    recompute_scale_factor : bool or None
        With ``scale_factor``: True computes the scale from the sizes, ``H / H_out``.

    Returns
    -------
    y : array, shape (N, C, H_out, W_out), the dtype of ``x``
    cache : InterpolateCache
        The input's shape and the two resize matrices.
    """
    xp = namespace("interpolate", x=x)
    check_float_array("interpolate", "x", x, 4, "(N, C, H, W)")
    dtype = "float64" if x.dtype == xp.float64 else "float32"
    plan_h, plan_w = interpolate_plan(tuple(x.shape[2:]), size, scale_factor, mode,
                                      align_corners, recompute_scale_factor, dtype)
    dev = device(x)
    y = _gather(xp, _gather(xp, x, plan_w, 3, dev), plan_h, 2, dev)
    a_h = xp.asarray(plan_h.matrix(), dtype=x.dtype, device=dev)
    a_w = xp.asarray(plan_w.matrix(), dtype=x.dtype, device=dev)
    return y, InterpolateCache(tuple(x.shape), a_h, a_w)


def interpolate_backward(dy: Any, cache: InterpolateCache) -> Any:
    """``dx = A_h^T @ dy @ A_w``: every output's gradient goes back to its taps, weighted.

    Returns
    -------
    dx : array, shape (N, C, H, W)
    """
    n, c = cache.in_shape[:2]
    check_shape("interpolate_backward", "dy", dy, (n, c, cache.a_h.shape[0], cache.a_w.shape[0]))
    xp = namespace("interpolate_backward", dy=dy, a_h=cache.a_h)
    return xp.matmul(xp.matmul(xp.matrix_transpose(cache.a_h), dy), cache.a_w)


# ----------------------------------------------------------------------------------- registry

register_op("interpolate", interpolate_forward, interpolate_backward,
            lambda rng: ((rng.standard_normal((2, 2, 3, 4)),),
                         {"scale_factor": (2.0, 1.5), "mode": "bilinear"}),
            doc="ops/interpolate.md", linear=True)
