"""Plain layers: thin modules over the pure ops of :mod:`npattn.ops`, with PyTorch's names.

``Conv2d`` and ``Linear`` hold ``weight`` and ``bias`` initialised like PyTorch's defaults
(:mod:`npattn.init`) from a seeded ``rng``; the others hold no parameters.  ``Sequential``
chains modules, its children named ``"0"``, ``"1"``, ... so its parameter names match PyTorch's
(``"0.weight"``, ``"3.bias"``).  Every layer follows :class:`npattn.module.Module`.
"""

from __future__ import annotations

import math
from typing import Any

from . import ops
from .backend import namespace
from .checks import argument_error, check_float_array, check_int, check_shape, int_pair
from .init import as_generator, bias_uniform, fan_in, kaiming_uniform
from .module import Module

__all__ = [
    "Conv2d", "Linear", "ReLU", "Sigmoid", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d",
    "GlobalAvgPool2d", "Flatten", "Sequential",
]


def _present(**grads: Any) -> dict[str, Any]:
    """The gradients that exist (an absent bias has ``None``)."""
    return {name: g for name, g in grads.items() if g is not None}


# ---------------------------------------------------------------------------- with parameters

class Conv2d(Module):
    """``nn.Conv2d``: params ``weight`` (O, C/groups, kh, kw) and, with ``bias``, ``bias`` (O,).

    Parameters
    ----------
    in_channels, out_channels : int >= 1
        Both divisible by ``groups``.
    kernel_size : int or pair
    stride, padding, dilation : int or pair
        PyTorch's meaning; padding is zero padding on each side.
    groups : int >= 1
    bias : bool
    rng : numpy.random.Generator, int seed or None
    dtype : {"float32", "float64"}

    Input (N, in_channels, H, W); output (N, out_channels, H_out, W_out).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True, *,
                 rng: Any = None, dtype: str = "float32") -> None:
        super().__init__()
        op = "Conv2d"
        self.in_channels = check_int(op, "in_channels", in_channels, 1)
        self.out_channels = check_int(op, "out_channels", out_channels, 1)
        self.groups = check_int(op, "groups", groups, 1)
        for arg, n in (("in_channels", self.in_channels), ("out_channels", self.out_channels)):
            if n % self.groups:
                raise argument_error(op, arg, f"a multiple of groups={self.groups}", n)
        self.kernel_size = int_pair(op, "kernel_size", kernel_size, 1)
        self.stride = int_pair(op, "stride", stride, 1)
        self.padding = int_pair(op, "padding", padding, 0)
        self.dilation = int_pair(op, "dilation", dilation, 1)
        gen = as_generator(rng, op)
        shape = (self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        self.add_param("weight", kaiming_uniform(shape, gen, dtype=dtype))
        if bias:
            self.add_param("bias", bias_uniform((self.out_channels,), fan_in(shape), gen, dtype))

    def _forward(self, x: Any) -> tuple[Any, Any]:
        return ops.conv2d_forward(x, self._params["weight"], self._params.get("bias"),
                                  stride=self.stride, padding=self.padding,
                                  dilation=self.dilation, groups=self.groups)

    def _backward(self, dy: Any, cache: Any) -> tuple[Any, dict[str, Any]]:
        dx, dweight, dbias = ops.conv2d_backward(dy, cache)
        return dx, _present(weight=dweight, bias=dbias)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"groups={self.groups}, bias={'bias' in self._params}")


class Linear(Module):
    """``nn.Linear``: params ``weight`` (out, in) and, with ``bias``, ``bias`` (out,).

    Input (N, in_features); output (N, out_features).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 rng: Any = None, dtype: str = "float32") -> None:
        super().__init__()
        self.in_features = check_int("Linear", "in_features", in_features, 1)
        self.out_features = check_int("Linear", "out_features", out_features, 1)
        gen = as_generator(rng, "Linear")
        shape = (self.out_features, self.in_features)
        self.add_param("weight", kaiming_uniform(shape, gen, dtype=dtype))
        if bias:
            self.add_param("bias", bias_uniform((self.out_features,), fan_in(shape), gen, dtype))

    def _forward(self, x: Any) -> tuple[Any, Any]:
        return ops.linear_forward(x, self._params["weight"], self._params.get("bias"))

    def _backward(self, dy: Any, cache: Any) -> tuple[Any, dict[str, Any]]:
        dx, dweight, dbias = ops.linear_backward(dy, cache)
        return dx, _present(weight=dweight, bias=dbias)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bias={'bias' in self._params}"


# ------------------------------------------------------------------------- without parameters

class _OpLayer(Module):
    """A layer over one parameter-free op ``NAME``: ``NAME_forward(x, **kwargs)``."""

    _op = ""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self._kwargs = kwargs

    def _forward(self, x: Any) -> tuple[Any, Any]:
        return getattr(ops, f"{self._op}_forward")(x, **self._kwargs)

    def _backward(self, dy: Any, cache: Any) -> tuple[Any, dict[str, Any]]:
        return getattr(ops, f"{self._op}_backward")(dy, cache), {}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self._kwargs.items())


class ReLU(_OpLayer):
    """``max(x, 0)``, any shape."""

    _op = "relu"


class Sigmoid(_OpLayer):
    """``1 / (1 + exp(-x))``, any shape."""

    _op = "sigmoid"


class _WindowPool(_OpLayer):
    """A pool over ``kernel_size`` windows, ``stride`` apart (default: the kernel size)."""

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0) -> None:
        kernel = int_pair(self.name, "kernel_size", kernel_size, 1)
        stride = kernel if stride is None else int_pair(self.name, "stride", stride, 1)
        super().__init__(kernel_size=kernel, stride=stride,
                         padding=int_pair(self.name, "padding", padding, 0))


class MaxPool2d(_WindowPool):
    """``nn.MaxPool2d(kernel_size, stride=kernel_size, padding=0)``; ties go to the first maximum."""

    _op = "max_pool2d"


class AvgPool2d(_WindowPool):
    """``nn.AvgPool2d(kernel_size, stride=kernel_size, padding=0)``, padding counted in the mean."""

    _op = "avg_pool2d"


class AdaptiveAvgPool2d(_OpLayer):
    """``nn.AdaptiveAvgPool2d(output_size)`` with PyTorch's bin rule."""

    _op = "adaptive_avg_pool2d"

    def __init__(self, output_size: Any) -> None:
        super().__init__(output_size=int_pair("AdaptiveAvgPool2d", "output_size", output_size, 1))


class GlobalAvgPool2d(_OpLayer):
    """The mean over H and W: (N, C, H, W) -> (N, C, 1, 1)."""

    _op = "global_avg_pool2d"


class Flatten(Module):
    """``nn.Flatten(start_dim=1, end_dim=-1)``: join the axes ``start_dim..end_dim`` into one."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim = check_int("Flatten", "start_dim", start_dim)
        self.end_dim = check_int("Flatten", "end_dim", end_dim)

    def _flat_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        start, end = self.start_dim % len(shape), self.end_dim % len(shape)
        if start > end:
            raise argument_error("Flatten", "x", f"at least {max(start, end) + 1} dimensions "
                                 f"(start_dim={self.start_dim}, end_dim={self.end_dim})",
                                 f"shape {shape}")
        return (*shape[:start], math.prod(shape[start:end + 1]), *shape[end + 1:])

    def _forward(self, x: Any) -> tuple[Any, Any]:
        xp = namespace("Flatten", x=x)
        check_float_array("Flatten", "x", x)
        ndim_needed = max(self.start_dim if self.start_dim >= 0 else -self.start_dim - 1,
                          self.end_dim if self.end_dim >= 0 else -self.end_dim - 1) + 1
        if x.ndim < ndim_needed:
            raise argument_error("Flatten", "x", f"at least {ndim_needed} dimensions",
                                 f"{x.ndim} with shape {tuple(x.shape)}")
        return xp.reshape(x, self._flat_shape(tuple(x.shape))), tuple(x.shape)

    def _backward(self, dy: Any, shape: Any) -> tuple[Any, dict[str, Any]]:
        xp = namespace("Flatten.backward", dy=dy)
        check_shape("Flatten.backward", "dy", dy, self._flat_shape(shape))
        return xp.reshape(dy, shape), {}

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


# ----------------------------------------------------------------------------------- container

class Sequential(Module):
    """Modules applied in order; child ``i`` is named ``str(i)``, as in PyTorch.

    Backward runs the children's backward in reverse; each fills its own gradients.
    """

    def __init__(self, *modules: Module) -> None:
        super().__init__()
        for i, module in enumerate(modules):
            if not isinstance(module, Module):
                raise argument_error("Sequential", f"modules[{i}]", "an npattn Module",
                                     type(module).__name__, TypeError)
            self.add_child(str(i), module)

    def __getitem__(self, i: int) -> Module:
        return list(self._children.values())[i]

    def __len__(self) -> int:
        return len(self._children)

    def __iter__(self):
        return iter(self._children.values())

    def _forward(self, x: Any) -> tuple[Any, Any]:
        for module in self._children.values():
            x = module.forward(x)
        return x, None

    def _backward(self, dy: Any, cache: Any) -> tuple[Any, dict[str, Any]]:
        for module in reversed(self._children.values()):
            dy = module.backward(dy)
        return dy, {}
