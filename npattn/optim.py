"""Optimizers: SGD (momentum, dampening, Nesterov, weight decay) and Adam, with PyTorch's update rules.

An optimizer updates any object with ``params`` and ``grads`` mappings of the same names (a
:class:`npattn.module.Module`), writing each new parameter back through ``params[name] = ...``::

    opt = Adam(net, lr=2e-3)
    opt.zero_grad()
    loss, cache = softmax_cross_entropy_forward(net(x), labels)
    net.backward(softmax_cross_entropy_backward(one, cache))
    opt.step()

Its state (momentum buffers, moments) is kept by parameter name, in the parameters' own
array library and dtype.  ``lr`` is a plain attribute, so a schedule sets ``opt.lr`` between
steps.  The rules are written out in ``docs/training-step.md``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .backend import namespace
from .checks import argument_error

__all__ = ["Optimizer", "SGD", "Adam"]


def _check_number(op: str, arg: str, value: Any, low: float, high: float | None = None,
                  high_open: bool = False) -> float:
    """A real number in ``[low, high]`` (``[low, high)`` with ``high_open``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise argument_error(op, arg, "a finite real number", repr(value), TypeError)
    above = high is not None and (value >= high if high_open else value > high)
    if value < low or above:
        bound = "" if high is None else f" and {'<' if high_open else '<='} {high}"
        raise argument_error(op, arg, f"a number >= {low}{bound}", value)
    return float(value)


class Optimizer:
    """Base class: holds the module, the learning rate and per-parameter state.

    Parameters
    ----------
    module : object with ``params`` and ``grads`` mappings
        Usually a :class:`npattn.module.Module`; every parameter is updated by :meth:`step`.
    lr : float
        Learning rate, >= 0.

    Attributes
    ----------
    lr : float
        May be changed between steps (a schedule).
    state : dict of str to dict
        Per-parameter state by parameter name.
    steps : int
        Number of :meth:`step` calls so far.
    """

    def __init__(self, module: Any, lr: float) -> None:
        op = type(self).__name__
        if not all(isinstance(getattr(module, a, None), Mapping) for a in ("params", "grads")):
            raise argument_error(op, "module", "an object with 'params' and 'grads' mappings",
                                 type(module).__name__, TypeError)
        self.module = module
        self.lr = _check_number(op, "lr", lr, 0.0)
        self.state: dict[str, dict[str, Any]] = {}
        self.steps = 0

    def zero_grad(self) -> None:
        """Set the module's gradients to zero (``module.zero_grad()``)."""
        self.module.zero_grad()

    def step(self) -> None:
        """Update every parameter from its gradient, in place in the module."""
        self.steps += 1
        params, grads = self.module.params, self.module.grads
        for name in list(params):
            state = self.state.setdefault(name, {})
            params[name] = self._update(params[name], grads[name], state)

    def _update(self, p: Any, g: Any, state: dict[str, Any]) -> Any:
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent, PyTorch's ``torch.optim.SGD``.

    With ``d = g + weight_decay * p``::

        b = d                                   (first step)
        b = momentum * b + (1 - dampening) * d  (later steps)
        d = d + momentum * b   if nesterov, else   d = b     (when momentum > 0)
        p = p - lr * d

    Parameters
    ----------
    module : object with ``params`` and ``grads``
    lr : float
    momentum : float, >= 0
    dampening : float, in [0, 1]
    weight_decay : float, >= 0
        L2 penalty added to the gradient.
    nesterov : bool
        Needs ``momentum > 0`` and ``dampening == 0``.
    """

    def __init__(self, module: Any, lr: float = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False) -> None:
        super().__init__(module, lr)
        self.momentum = _check_number("SGD", "momentum", momentum, 0.0)
        self.dampening = _check_number("SGD", "dampening", dampening, 0.0, 1.0)
        self.weight_decay = _check_number("SGD", "weight_decay", weight_decay, 0.0)
        self.nesterov = bool(nesterov)
        if self.nesterov and (self.momentum <= 0.0 or self.dampening != 0.0):
            raise argument_error("SGD", "nesterov", "momentum > 0 and dampening == 0",
                                 f"momentum {self.momentum} and dampening {self.dampening}")

    def _update(self, p: Any, g: Any, state: dict[str, Any]) -> Any:
        namespace("SGD.step", param=p, grad=g)
        d = g + self.weight_decay * p if self.weight_decay else g
        if self.momentum:
            if "momentum_buffer" not in state:
                b = d
            else:
                b = self.momentum * state["momentum_buffer"] + (1.0 - self.dampening) * d
            state["momentum_buffer"] = b
            d = d + self.momentum * b if self.nesterov else b
        return p - self.lr * d


class Adam(Optimizer):
    """Adam, PyTorch's ``torch.optim.Adam`` (``amsgrad`` and decoupled weight decay included).

    At step ``t`` (from 1), with ``d = g + weight_decay * p`` (or, with
    ``decoupled_weight_decay``, ``d = g`` and ``p = p (1 - lr weight_decay)`` first, AdamW)::

        m = m + (1 - beta1) (d - m)             (that is beta1 m + (1 - beta1) d)
        v = beta2 v + (1 - beta2) d^2
        v_max = max(v_max, v)                   (amsgrad only; then v_max replaces v below)
        p = p - (lr / (1 - beta1^t)) m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    ``m`` and ``v`` start at zero.

    Parameters
    ----------
    module : object with ``params`` and ``grads``
    lr : float
    betas : pair of float, each in [0, 1)
    eps : float, >= 0
    weight_decay : float, >= 0
    amsgrad : bool
    decoupled_weight_decay : bool
    """

    def __init__(self, module: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False,
                 decoupled_weight_decay: bool = False) -> None:
        super().__init__(module, lr)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise argument_error("Adam", "betas", "a pair of numbers", repr(betas), TypeError)
        self.betas = tuple(_check_number("Adam", "betas", b, 0.0, 1.0, high_open=True)
                           for b in betas)
        self.eps = _check_number("Adam", "eps", eps, 0.0)
        self.weight_decay = _check_number("Adam", "weight_decay", weight_decay, 0.0)
        self.amsgrad = bool(amsgrad)
        self.decoupled_weight_decay = bool(decoupled_weight_decay)

    def _update(self, p: Any, g: Any, state: dict[str, Any]) -> Any:
        xp = namespace("Adam.step", param=p, grad=g)
        beta1, beta2 = self.betas
        t = state["step"] = state.get("step", 0) + 1
        if self.weight_decay and self.decoupled_weight_decay:
            p = p * (1.0 - self.lr * self.weight_decay)
        elif self.weight_decay:
            g = g + self.weight_decay * p
        m = state.get("exp_avg", xp.zeros_like(g))
        v = state.get("exp_avg_sq", xp.zeros_like(g))
        m = state["exp_avg"] = m + (1.0 - beta1) * (g - m)
        v = state["exp_avg_sq"] = beta2 * v + (1.0 - beta2) * (g * g)
        if self.amsgrad:
            v = state["max_exp_avg_sq"] = xp.maximum(state.get("max_exp_avg_sq", v), v)
        step_size = self.lr / (1.0 - beta1 ** t)
        denom = xp.sqrt(v) / math.sqrt(1.0 - beta2 ** t) + self.eps
        return p - step_size * (m / denom)
