"""The registry of ops: each op family registers its pairs right after defining them.

One table serves the parametrised tests, ``python -m npattn check`` and the docs table, so no
list of ops is kept by hand anywhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

__all__ = ["OpSpec", "REGISTRY", "register_op"]

# example(rng) -> (args, kwargs): small float64 NumPy inputs, drawn away from kinks and ties.
ExampleMaker = Callable[[np.random.Generator], "tuple[tuple[Any, ...], dict[str, Any]]"]


@dataclass(frozen=True)
class OpSpec:
    """One registered op.

    Attributes
    ----------
    name : str
        The op's name, e.g. ``"conv2d"``; its functions are ``NAME_forward``/``NAME_backward``.
    forward, backward : callable
        The pure pair.
    example : callable
        ``example(rng) -> (args, kwargs)`` with small float64 NumPy arrays away from kinks.
    family : str
        The module of ``npattn.ops`` that defines it (``"conv"``, ``"pooling"``, ...).
    doc : str
        The derivation page under ``docs/``.
    linear : bool
        Whether the op is linear in its first input (the dot-product test applies).
    tags : tuple of str
        ``"kink"``: the op has points without a derivative (a max, a ReLU, a pixel line of
        bilinear sampling), which its example keeps away from; its tie rule is tested apart.
    """

    name: str
    forward: Callable[..., Any]
    backward: Callable[..., Any]
    example: ExampleMaker
    family: str
    doc: str
    linear: bool = False
    tags: tuple[str, ...] = field(default=())


REGISTRY: dict[str, OpSpec] = {}


def register_op(name: str, forward: Callable[..., Any], backward: Callable[..., Any],
                example: ExampleMaker, *, doc: str, linear: bool = False,
                tags: tuple[str, ...] = ()) -> OpSpec:
    """Add an op to :data:`REGISTRY` (its family is the defining module) and return its spec."""
    if name in REGISTRY:
        raise ValueError(f"register_op: op {name!r} is registered twice")
    family = forward.__module__.rsplit(".", 1)[-1]
    spec = OpSpec(name, forward, backward, example, family, doc, linear, tuple(tags))
    REGISTRY[name] = spec
    return spec
