"""Losses with hand-written gradients: softmax cross-entropy, mean squared error, binary cross-entropy.

Each loss is a pure pair like the ops: ``NAME_forward(input, target, reduction="mean") ->
(loss, cache)`` and ``NAME_backward(dloss, cache)``.  ``reduction`` follows PyTorch:
``"mean"`` (the default) averages the per-element losses, ``"sum"`` adds them, both giving a 0-d
array, and ``"none"`` returns them unreduced.  ``dloss`` has the shape of the loss (``()`` when
reduced), so a training step calls ``NAME_backward(1.0 as a 0-d array, cache)``.

* :func:`softmax_cross_entropy_forward` -- logits ``(N, K)`` and integer class labels ``(N,)``;
  the backward returns the bare gradient of the logits (labels have none).
* :func:`mse_forward`, :func:`bce_forward`, :func:`bce_with_logits_forward` -- an input and a
  floating target of the same shape; the backward returns ``(d_input, d_target)``, both
  defined as in PyTorch.

Derivations: ``docs/training-step.md``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from array_api_compat import device

from .backend import namespace
from .checks import argument_error, check_float_array, check_same_dtype, check_shape

__all__ = [
    "softmax_cross_entropy_forward", "softmax_cross_entropy_backward",
    "mse_forward", "mse_backward",
    "bce_forward", "bce_backward",
    "bce_with_logits_forward", "bce_with_logits_backward",
]

REDUCTIONS = ("mean", "sum", "none")

# PyTorch's binary_cross_entropy clamps each log at -100 (so a probability of exactly 0 or 1
# costs at most 100, never inf) and divides by max(p (1 - p), 1e-12) in backward.
LOG_FLOOR = -100.0
BCE_EPS = 1e-12


class CrossEntropyCache(NamedTuple):
    """``residual = softmax(logits) - onehot(target)``, shape (N, K), and the reduction."""

    residual: Any
    reduction: str


class MSECache(NamedTuple):
    """``diff = input - target`` and the reduction."""

    diff: Any
    reduction: str


class BCECache(NamedTuple):
    """The probabilities ``p`` and the target ``t`` (the caller's arrays) and the reduction."""

    p: Any
    t: Any
    reduction: str


class BCEWithLogitsCache(NamedTuple):
    """``residual = sigmoid(z) - t``, the logits ``z`` (the caller's array) and the reduction."""

    residual: Any
    z: Any
    reduction: str


# ------------------------------------------------------------------------------------- helpers

def _check_reduction(op: str, reduction: Any) -> str:
    if reduction not in REDUCTIONS:
        raise argument_error(op, "reduction", "one of 'mean', 'sum', 'none'", repr(reduction))
    return reduction


def _reduce(xp: Any, per_element: Any, reduction: str) -> Any:
    """The loss from its per-element values: their mean, their sum, or themselves."""
    if reduction == "mean":
        return xp.mean(per_element)
    if reduction == "sum":
        return xp.sum(per_element)
    return per_element


def _spread(op: str, dloss: Any, shape: tuple[int, ...], reduction: str) -> Any:
    """Backward of :func:`_reduce`: the gradient of each per-element loss (``shape``).

    ``mean`` gives every element ``dloss / count``, ``sum`` gives it ``dloss``, ``none`` passes
    ``dloss`` (of ``shape``) through.  The result broadcasts against ``shape``.
    """
    check_shape(op, "dy", dloss, shape if reduction == "none" else ())
    if reduction == "mean":
        count = 1
        for n in shape:
            count *= n
        return dloss / count
    return dloss


def _check_pair(op: str, x_name: str, x: Any, target: Any) -> Any:
    """Checks shared by the element-wise losses; returns the namespace."""
    xp = namespace(op, **{x_name: x, "target": target})
    check_float_array(op, x_name, x)
    check_float_array(op, "target", target)
    check_same_dtype(op, **{x_name: x, "target": target})
    if tuple(target.shape) != tuple(x.shape):
        raise argument_error(op, "target", f"the shape of '{x_name}' {tuple(x.shape)}",
                             f"shape {tuple(target.shape)}")
    return xp


# ---------------------------------------------------------------------- softmax cross-entropy

def softmax_cross_entropy_forward(logits: Any, target: Any,
                                  reduction: str = "mean") -> tuple[Any, CrossEntropyCache]:
    """Cross-entropy of the softmax of ``logits`` against class labels (``F.cross_entropy``).

    ``loss_n = -log softmax(logits_n)[target_n] = logsumexp(logits_n) - logits_n[target_n]``,
    with the log-sum-exp taken after subtracting the row's maximum, so logits of any size (e.g.
    1e4) give a finite loss.

    Parameters
    ----------
    logits : array, shape (N, K), float32 or float64
        Unnormalised scores of K classes for N samples.
    target : integer array, shape (N,)
        Class labels in ``[0, K)``.
    reduction : {"mean", "sum", "none"}

    Returns
    -------
    loss : array, shape () (mean, sum) or (N,) (none), the dtype of ``logits``
    cache : CrossEntropyCache
        ``residual = softmax(logits) - onehot(target)`` (N, K), and the reduction.
    """
    op = "softmax_cross_entropy"
    xp = namespace(op, logits=logits, target=target)
    check_float_array(op, "logits", logits, 2, "(N, K)")
    reduction = _check_reduction(op, reduction)
    if not hasattr(target, "dtype") or not xp.isdtype(target.dtype, "integral"):
        raise argument_error(op, "target", "an integer array of class labels",
                             f"dtype {getattr(target, 'dtype', type(target).__name__)}", TypeError)
    n, k = logits.shape
    if tuple(target.shape) != (n,):
        raise argument_error(op, "target", f"shape ({n},) (one label per row of 'logits')",
                             f"shape {tuple(target.shape)}")
    if n and (int(xp.min(target)) < 0 or int(xp.max(target)) >= k):
        raise argument_error(op, "target", f"labels in [0, {k})",
                             f"labels in [{int(xp.min(target))}, {int(xp.max(target))}]")
    shifted = logits - xp.max(logits, axis=1, keepdims=True)
    log_probs = shifted - xp.log(xp.sum(xp.exp(shifted), axis=1, keepdims=True))
    classes = xp.arange(k, dtype=target.dtype, device=device(logits))
    onehot = xp.astype(xp.reshape(target, (n, 1)) == classes, logits.dtype)
    per_sample = -xp.sum(onehot * log_probs, axis=1)
    return _reduce(xp, per_sample, reduction), CrossEntropyCache(xp.exp(log_probs) - onehot,
                                                                 reduction)


def softmax_cross_entropy_backward(dy: Any, cache: CrossEntropyCache) -> Any:
    """``dlogits_nk = g_n (softmax(logits_n)_k - [k == target_n])``.

    ``g_n`` is ``dy / N`` (mean), ``dy`` (sum) or ``dy_n`` (none).  Returns the bare gradient
    of the logits, shape (N, K).  See ``docs/training-step.md``.
    """
    residual = cache.residual
    g = _spread("softmax_cross_entropy_backward", dy, residual.shape[:1], cache.reduction)
    xp = namespace("softmax_cross_entropy_backward", dy=dy, residual=residual)
    if cache.reduction == "none":
        g = xp.reshape(g, (residual.shape[0], 1))
    return g * residual


# ------------------------------------------------------------------------- mean squared error

def mse_forward(x: Any, target: Any, reduction: str = "mean") -> tuple[Any, MSECache]:
    """Squared error ``(x - target)^2`` per element, then reduced (``F.mse_loss``).

    Parameters
    ----------
    x : array, any shape, float32 or float64
    target : array, the shape and dtype of ``x``
    reduction : {"mean", "sum", "none"}

    Returns
    -------
    loss : array, shape () (mean, sum) or the shape of ``x`` (none)
    cache : MSECache
        ``diff = x - target`` and the reduction.
    """
    xp = _check_pair("mse", "x", x, target)
    reduction = _check_reduction("mse", reduction)
    diff = x - target
    return _reduce(xp, diff * diff, reduction), MSECache(diff, reduction)


def mse_backward(dy: Any, cache: MSECache) -> tuple[Any, Any]:
    """``dx = 2 g (x - target)`` and ``dtarget = -dx``, ``g`` as in the reduction.

    Returns ``(dx, dtarget)``, each the shape of ``x``.
    """
    diff = cache.diff
    g = _spread("mse_backward", dy, tuple(diff.shape), cache.reduction)
    namespace("mse_backward", dy=dy, diff=diff)
    dx = 2.0 * g * diff
    return dx, -dx


# ------------------------------------------------------------- binary cross-entropy on probabilities

def bce_forward(p: Any, target: Any, reduction: str = "mean") -> tuple[Any, BCECache]:
    """Binary cross-entropy of probabilities (``F.binary_cross_entropy``).

    ``loss = -(t log p + (1 - t) log(1 - p))`` per element, each log clamped at -100 as in
    PyTorch, so ``p`` of exactly 0 or 1 gives a finite loss.

    Parameters
    ----------
    p : array, any shape, float32 or float64
        Probabilities in [0, 1] (e.g. a sigmoid's output).
    target : array, the shape and dtype of ``p``
        Targets, usually in [0, 1] (soft targets are allowed).
    reduction : {"mean", "sum", "none"}

    Returns
    -------
    loss : array, shape () (mean, sum) or the shape of ``p`` (none)
    cache : BCECache
        ``p``, ``target`` (references, not copies) and the reduction.

    Raises
    ------
    ValueError
        If some ``p`` lies outside [0, 1] (PyTorch raises too).
    """
    xp = _check_pair("bce", "p", p, target)
    reduction = _check_reduction("bce", reduction)
    if p.size and bool(xp.any((p < 0.0) | (p > 1.0))):
        raise argument_error("bce", "p", "probabilities in [0, 1]",
                             f"values in [{float(xp.min(p))}, {float(xp.max(p))}]")
    log_p, log_q = _clamped_logs(xp, p)
    per_element = -(target * log_p + (1.0 - target) * log_q)
    return _reduce(xp, per_element, reduction), BCECache(p, target, reduction)


def _clamped_logs(xp: Any, p: Any) -> tuple[Any, Any]:
    """``max(log p, -100)`` and ``max(log(1 - p), -100)``.

    The logs only see positive numbers (0 is replaced by 1 before, and the -100 put back
    after), so a probability of exactly 0 or 1 raises no divide-by-zero warning.
    """
    floor = xp.full_like(p, LOG_FLOOR)
    one = xp.ones_like(p)
    log_p = xp.where(p > 0.0, xp.maximum(xp.log(xp.where(p > 0.0, p, one)), floor), floor)
    log_q = xp.where(p < 1.0, xp.maximum(xp.log1p(-xp.where(p < 1.0, p, 0.0 * one)), floor), floor)
    return log_p, log_q


def bce_backward(dy: Any, cache: BCECache) -> tuple[Any, Any]:
    """``dp = g (p - t) / max(p (1 - p), 1e-12)``, ``dt = g (log(1 - p) - log p)`` (logs clamped).

    ``g`` as in the reduction.  Returns ``(dp, dtarget)``.  ``dp`` is PyTorch's formula,
    including the clamp that keeps it finite at ``p`` = 0 or 1.  ``dt`` is the exact derivative
    of the clamped loss: it equals PyTorch's except at ``p`` = 0 or 1, where PyTorch's is
    infinite and this one is +-100 per unit of ``g``.  See ``docs/training-step.md``.
    """
    p, t = cache.p, cache.t
    g = _spread("bce_backward", dy, tuple(p.shape), cache.reduction)
    xp = namespace("bce_backward", dy=dy, p=p)
    eps = xp.asarray(BCE_EPS, dtype=p.dtype, device=device(p))
    dp = g * (p - t) / xp.maximum(p * (1.0 - p), eps)
    log_p, log_q = _clamped_logs(xp, p)
    return dp, g * (log_q - log_p)


# --------------------------------------------------------------- binary cross-entropy on logits

def bce_with_logits_forward(z: Any, target: Any,
                            reduction: str = "mean") -> tuple[Any, BCEWithLogitsCache]:
    """Binary cross-entropy of ``sigmoid(z)``, computed from the logits (``F.binary_cross_entropy_with_logits``).

    ``loss = max(z, 0) - z t + log(1 + exp(-|z|))`` per element: equal to
    ``-(t log sigmoid(z) + (1 - t) log(1 - sigmoid(z)))``, but ``exp`` only ever sees a
    non-positive number, so any finite ``z`` gives a finite loss.

    Parameters
    ----------
    z : array, any shape, float32 or float64
        Logits.
    target : array, the shape and dtype of ``z``
    reduction : {"mean", "sum", "none"}

    Returns
    -------
    loss : array, shape () (mean, sum) or the shape of ``z`` (none)
    cache : BCEWithLogitsCache
        ``residual = sigmoid(z) - target``, ``z`` (a reference) and the reduction.
    """
    xp = _check_pair("bce_with_logits", "z", z, target)
    reduction = _check_reduction("bce_with_logits", reduction)
    per_element = (xp.maximum(z, xp.zeros_like(z)) - z * target
                   + xp.log1p(xp.exp(-xp.abs(z))))
    sigmoid = 0.5 * (xp.tanh(0.5 * z) + 1.0)
    return _reduce(xp, per_element, reduction), BCEWithLogitsCache(sigmoid - target, z, reduction)


def bce_with_logits_backward(dy: Any, cache: BCEWithLogitsCache) -> tuple[Any, Any]:
    """``dz = g (sigmoid(z) - t)`` and ``dt = -g z``, ``g`` as in the reduction.

    Returns ``(dz, dtarget)``.  See ``docs/training-step.md``.
    """
    residual = cache.residual
    g = _spread("bce_with_logits_backward", dy, tuple(residual.shape), cache.reduction)
    namespace("bce_with_logits_backward", dy=dy, residual=residual)
    return g * residual, -g * cache.z
