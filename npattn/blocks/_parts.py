"""What the blocks with convolution stacks share: registering a PyTorch-initialised
convolution (:func:`add_conv`), and batch norms inside blocks -- their parameters, their running
statistics, and the module mixin that keeps those statistics as buffers.

A PyTorch ``nn.BatchNorm2d(c)`` stored as ``bn`` holds two parameters, ``bn.weight`` (ones) and
``bn.bias`` (zeros), trained like any other, and two buffers, ``bn.running_mean`` (zeros) and
``bn.running_var`` (ones): saved in ``state_dict``, never trained.  A training-mode forward
normalises with the batch statistics and updates the running ones; an evaluation-mode forward
normalises with the running ones (:func:`npattn.ops.batch_norm2d_forward`).

A block's pure forward takes the running statistics as a ``buffers`` dict beside ``params``
(``None`` in training mode: track nothing, PyTorch's ``track_running_stats=False``) and returns
the updated dict as ``cache.buffers``; it modifies nothing.  :class:`BatchNormBlock` keeps the
dict on the module and stores the update after each training-mode :meth:`~BatchNormBlock.forward`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
from array_api_compat import array_namespace, device

from .. import ops
from ..backend import namespace, to_numpy
from ..checks import argument_error, check_float_array, check_same_dtype, check_shape
from ..init import bias_uniform, fan_in, kaiming_uniform
from ..module import Module, TensorView
from ._base import Block

__all__ = ["add_conv", "RUNNING", "batch_norm_shapes", "take_buffers", "check_bn_settings",
           "BatchNorms", "updated_buffers", "BatchNormBlock"]


def add_conv(module: Module, name: str, shape: tuple[int, ...], gen: np.random.Generator,
             dtype: str, bias: bool = True) -> Any:
    """Register an ``nn.Conv2d`` (or ``nn.Linear``) ``name`` of weight ``shape`` on ``module``:
    ``name.weight`` and, with ``bias``, ``name.bias`` (``shape[0]``,), drawn from ``gen`` like
    PyTorch's defaults.  Returns the weight."""
    weight = module.add_param(f"{name}.weight", kaiming_uniform(shape, gen, dtype=dtype))
    if bias:
        module.add_param(f"{name}.bias", bias_uniform((shape[0],), fan_in(shape), gen, dtype))
    return weight


#: The buffers of one batch norm, after its name: ``"bn1.running_mean"``, ``"bn1.running_var"``.
RUNNING = ("running_mean", "running_var")


def batch_norm_shapes(norms: Mapping[str, Any]) -> dict[str, tuple[Any, ...]]:
    """The parameters of the named batch norms, for :func:`~npattn.blocks._base.take_params`:
    ``{name}.weight`` and ``{name}.bias`` of shape ``(c,)`` for each ``name: c``."""
    return {f"{name}.{k}": (c,) for name, c in norms.items() for k in ("weight", "bias")}


def take_buffers(op: str, buffers: Any, x: Any, norms: Mapping[str, int],
                 training: bool) -> dict[str, Any] | None:
    """Check a block's ``buffers`` against ``x`` and return them.

    ``None`` is allowed in training mode only.  Otherwise exactly ``{name}.running_mean`` and
    ``{name}.running_var`` for each batch norm ``name: c``, each a float array of shape ``(c,)``
    in the dtype and array library of ``x``.
    """
    if buffers is None:
        if not training:
            raise argument_error(op, "buffers", "the running statistics in evaluation mode", "None")
        return None
    if not isinstance(buffers, Mapping):
        raise argument_error(op, "buffers", "a mapping of buffer name to array, or None",
                             type(buffers).__name__, TypeError)
    shapes = {f"{name}.{k}": (c,) for name, c in norms.items() for k in RUNNING}
    missing = [k for k in shapes if k not in buffers]
    unexpected = [k for k in buffers if k not in shapes]
    if missing or unexpected:
        raise argument_error(op, "buffers", f"the keys {list(shapes)}",
                             f"missing {missing}, unexpected {unexpected}")
    for name, shape in shapes.items():
        arg = f"buffers[{name!r}]"
        check_float_array(op, arg, buffers[name], ndim=1)
        namespace(op, x=x, **{arg: buffers[name]})
        check_same_dtype(op, x=x, **{arg: buffers[name]})
        check_shape(op, arg, buffers[name], shape)
    return {k: buffers[k] for k in shapes}


def check_bn_settings(op: str, training: Any, momentum: Any, eps: Any) -> tuple[bool, float, float]:
    """``training`` a bool, ``momentum`` a float in [0, 1], ``eps`` a float > 0."""
    if not isinstance(training, bool):
        raise argument_error(op, "training", "a bool", repr(training), TypeError)
    for arg, value in (("momentum", momentum), ("eps", eps)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise argument_error(op, arg, "a float", repr(value), TypeError)
    if not 0.0 <= momentum <= 1.0:
        raise argument_error(op, "momentum", "a float in [0, 1]", momentum)
    if not eps > 0:
        raise argument_error(op, "eps", "a float > 0", eps)
    return training, float(momentum), float(eps)


class BatchNorms(NamedTuple):
    """How one forward of a block runs its batch norms: the block's checked params and buffers,
    the mode, ``momentum`` and ``eps``."""

    params: Mapping[str, Any]
    buffers: Mapping[str, Any] | None
    training: bool
    momentum: float
    eps: float

    def forward(self, name: str, z: Any) -> tuple[Any, Any]:
        """``batch_norm2d_forward`` of ``z`` (N, c, H, W) with batch norm ``name``'s parameters
        and running statistics; the cache carries the updated statistics."""
        b = self.buffers
        stats = [None, None] if b is None else [b[f"{name}.{k}"] for k in RUNNING]
        return ops.batch_norm2d_forward(z, self.params[f"{name}.weight"],
                                        self.params[f"{name}.bias"], *stats, training=self.training,
                                        momentum=self.momentum, eps=self.eps)


def updated_buffers(caches: Mapping[str, Any]) -> dict[str, Any] | None:
    """The running statistics after a forward, keyed like the buffers, from each batch norm's
    cache by name; ``None`` when the forward tracked none."""
    if any(cache.running_mean is None for cache in caches.values()):
        return None
    return {f"{name}.{k}": getattr(cache, k) for name, cache in caches.items() for k in RUNNING}


class BatchNormBlock(Block):
    """A block with batch norms: their running statistics kept as buffers beside the params.

    Subclasses call :meth:`add_batch_norm` in ``__init__`` (after the layer it follows) and pass
    :meth:`bn_kwargs` to their pure forward, whose cache has a ``buffers`` field.  The buffers
    are in :meth:`state_dict`, loaded by :meth:`load_state_dict`, moved and cast by ``to``; they
    are not in ``params`` (no gradient, untouched by optimisers and by ``check_module``).
    ``train()`` (the default) uses and updates the batch statistics; ``eval()`` the running ones.

    Parameters
    ----------
    momentum : float in [0, 1]
        The weight of each new batch in the running averages (PyTorch's default 0.1).
    eps : float > 0
        Added to the variance before the square root.
    """

    def __init__(self, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        _, self.momentum, self.eps = check_bn_settings(self.name, True, momentum, eps)
        self._buffers: dict[str, Any] = {}

    def add_batch_norm(self, name: str, channels: int, like: Any) -> None:
        """Register ``nn.BatchNorm2d(channels)`` as ``name``: params ``name.weight`` (ones) and
        ``name.bias`` (zeros), buffers ``name.running_mean`` (zeros) and ``name.running_var``
        (ones), all in the dtype of the array ``like`` (the layer before it)."""
        ones, zeros = np.ones(channels, dtype=like.dtype), np.zeros(channels, dtype=like.dtype)
        self.add_param(f"{name}.weight", ones)
        self.add_param(f"{name}.bias", zeros.copy())
        self._buffers[f"{name}.running_mean"] = zeros
        self._buffers[f"{name}.running_var"] = ones.copy()

    @property
    def buffers(self) -> TensorView:
        """The running statistics by name (a live view, like ``params``)."""
        return TensorView(self, "_buffers")

    def bn_kwargs(self, x: Any) -> dict[str, Any]:
        """The batch-norm keywords of the pure forward for input ``x``: the buffers, the mode,
        ``momentum`` and ``eps``.

        The buffers are handed over in the array library and dtype of ``x``; they already are
        unless something replaced the params behind the module's back (``check_module``'s float64
        re-run, ``python -m npattn check``), and then they follow the params.
        """
        xp = array_namespace(x)
        buffers = {k: b if array_namespace(b) is xp and b.dtype == x.dtype
                   else xp.astype(xp.asarray(to_numpy(b), device=device(x)), x.dtype)
                   for k, b in self._buffers.items()}
        return {"buffers": buffers, "training": self.training, "momentum": self.momentum,
                "eps": self.eps}

    def forward(self, x: Any) -> Any:
        """Compute the output, keep the cache, and in training mode store the updated running
        statistics (``attention_map`` does not: it computes without side effects)."""
        y = super().forward(x)
        if self.training and self._cache.buffers is not None:
            self._buffers.update(self._cache.buffers)
        return y

    # ----------------------------------------------------------------------- state with buffers

    def state_dict(self) -> dict[str, Any]:
        """A copy of every parameter and buffer, by dotted name."""
        return {**super().state_dict(),
                **{k: array_namespace(b).asarray(b, copy=True) for k, b in self._buffers.items()}}

    def load_state_dict(self, state: Mapping[str, Any] | str | os.PathLike,
                        strict: bool = True) -> None:
        """Load parameters and buffers, as :meth:`Module.load_state_dict` loads parameters.

        PyTorch's ``*.num_batches_tracked`` entries are accepted and ignored: with a fixed
        ``momentum`` they play no part.
        """
        if isinstance(state, (str, os.PathLike)):
            with np.load(state, allow_pickle=False) as npz:
                state = {k: npz[k] for k in npz.files}
        if isinstance(state, Mapping):
            state = {k: v for k, v in state.items() if not k.endswith(".num_batches_tracked")}
        # Module's loader checks every name and shape, casts, and loads all or nothing; the
        # buffers ride along as if they were params for the length of this call.
        params = self._params
        self._params = {**params, **self._buffers}
        try:
            super().load_state_dict(state, strict)
            loaded = self._params
        finally:
            self._params = params
        for store in (self._params, self._buffers):
            store.update({k: loaded[k] for k in store})

    def _map_arrays(self, fn: Any) -> None:
        super()._map_arrays(fn)
        for k, b in list(self._buffers.items()):
            self._buffers[k] = fn(b)
