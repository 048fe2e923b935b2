"""PyTorch's default initialisation of convolution and linear layers, drawn from a seeded generator.

PyTorch initialises ``nn.Conv1d/2d`` and ``nn.Linear`` weights with
``kaiming_uniform_(w, a=sqrt(5))``: uniform on ``[-bound, bound]`` with

.. math:: \\text{bound} = \\text{gain} \\sqrt{3 / \\text{fan\\_in}}, \\quad
          \\text{gain} = \\sqrt{2 / (1 + a^2)} = \\sqrt{1/3}, \\quad\\text{so}\\quad
          \\text{bound} = 1 / \\sqrt{\\text{fan\\_in}},

and biases uniform on ``[-1/sqrt(fan_in), 1/sqrt(fan_in)]``, where ``fan_in`` is the product of
every weight dimension but the first (``C/groups * kh * kw`` for a convolution, ``in`` for a
linear layer).  The distributions are PyTorch's; the numbers are NumPy's, from the generator
given, so a seed reproduces a module exactly (not PyTorch's numbers for the same seed).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .checks import argument_error

__all__ = ["as_generator", "fan_in", "kaiming_uniform", "bias_uniform"]

_DTYPES = ("float32", "float64")


def as_generator(rng: Any, op: str = "init") -> np.random.Generator:
    """``rng`` as a ``numpy.random.Generator``: a Generator, an int seed, or ``None`` (fresh)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or (isinstance(rng, int) and not isinstance(rng, bool)):
        return np.random.default_rng(rng)
    raise argument_error(op, "rng", "a numpy.random.Generator, an int seed or None",
                         type(rng).__name__, TypeError)


def _dtype(dtype: Any, op: str) -> np.dtype:
    """``dtype`` as a NumPy float dtype; a name ("float32") or a NumPy dtype is accepted."""
    try:
        d = np.dtype(dtype)
    except TypeError:
        d = None
    if d is None or d.name not in _DTYPES:
        raise argument_error(op, "dtype", "'float32' or 'float64'", repr(dtype))
    return d


def fan_in(shape: tuple[int, ...]) -> int:
    """The number of inputs feeding one output: the product of ``shape[1:]``."""
    return math.prod(shape[1:])


def _uniform(shape: tuple[int, ...], bound: float, rng: Any, dtype: Any, op: str) -> np.ndarray:
    gen = as_generator(rng, op)
    return gen.uniform(-bound, bound, size=shape).astype(_dtype(dtype, op))


def kaiming_uniform(shape: tuple[int, ...], rng: Any = None, a: float = math.sqrt(5.0),
                    dtype: Any = "float32") -> np.ndarray:
    """A weight drawn like PyTorch's ``kaiming_uniform_(w, a)`` (leaky-ReLU gain).

    Parameters
    ----------
    shape : tuple of int
        The weight's shape, e.g. ``(O, C/groups, kh, kw)`` or ``(out, in)``.
    rng : numpy.random.Generator, int or None
    a : float
        The negative slope in the gain ``sqrt(2 / (1 + a^2))``; PyTorch's layers use ``sqrt(5)``.
    dtype : {"float32", "float64"}

    Returns
    -------
    w : numpy.ndarray, ``shape``, uniform on ``[-b, b]`` with ``b = gain * sqrt(3 / fan_in)``
    """
    gain = math.sqrt(2.0 / (1.0 + a * a))
    bound = gain * math.sqrt(3.0 / fan_in(shape)) if fan_in(shape) > 0 else 0.0
    return _uniform(tuple(shape), bound, rng, dtype, "kaiming_uniform")


def bias_uniform(shape: tuple[int, ...], fan: int, rng: Any = None, dtype: Any = "float32") -> np.ndarray:
    """A bias drawn like PyTorch's layers: uniform on ``[-1/sqrt(fan), 1/sqrt(fan)]`` (0 if fan is 0)."""
    bound = 1.0 / math.sqrt(fan) if fan > 0 else 0.0
    return _uniform(tuple(shape), bound, rng, dtype, "bias_uniform")
