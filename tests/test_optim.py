"""Optimizers: steps computed by hand, PyTorch's trajectories, dtype, schedules and bad arguments."""

from __future__ import annotations

import numpy as np
import pytest

from npattn.module import Module
from npattn.optim import SGD, Adam


class Params(Module):
    """A module that only holds the parameters it is given."""

    def __init__(self, **arrays):
        super().__init__()
        for name, a in arrays.items():
            self.add_param(name, a)


def run(backend, optimizer, grads, p0=(1.0, -2.0), dtype="float64", **options):
    """Apply ``optimizer`` to a parameter ``p0`` with the gradients ``grads``, one per step."""
    module = Params(w=backend.asarray(np.array(p0, dtype=dtype)))
    opt = optimizer(module, **options)
    for g in grads:
        module.grads["w"] = backend.asarray(np.array(g, dtype=dtype))
        opt.step()
    return backend.to_numpy(module.params["w"]), module, opt


G2 = [[0.5, 1.0], [0.25, -1.0]]


# ------------------------------------------------------------------------------ by hand

def test_sgd_plain(backend):
    p, _, _ = run(backend, SGD, G2, lr=0.1)
    np.testing.assert_allclose(p, [1.0 - 0.05 - 0.025, -2.0 - 0.1 + 0.1], rtol=1e-15)


def test_sgd_momentum_dampening_weight_decay(backend):
    # step 1: d = g + 0.1 p = [0.6, 0.8], b = d, p = [0.94, -2.08]
    # step 2: d = [0.344, -1.208], b = 0.9 [0.6, 0.8] + 0.5 d = [0.712, 0.116], p -= 0.1 b
    p, _, opt = run(backend, SGD, G2, lr=0.1, momentum=0.9, dampening=0.5, weight_decay=0.1)
    np.testing.assert_allclose(p, [0.8688, -2.0916], rtol=1e-14)
    np.testing.assert_allclose(backend.to_numpy(opt.state["w"]["momentum_buffer"]), [0.712, 0.116],
                               rtol=1e-14)


def test_sgd_nesterov(backend):
    # step 1: b = g, d = g + 0.9 b = [0.95, 1.9], p = [0.905, -2.19]
    # step 2: b = 0.9 [0.5, 1] + g = [0.7, -0.1], d = g + 0.9 b = [0.88, -1.09]
    p, _, _ = run(backend, SGD, G2, lr=0.1, momentum=0.9, nesterov=True)
    np.testing.assert_allclose(p, [0.817, -2.081], rtol=1e-14)


def test_adam_two_steps(backend):
    # step 1: m_hat = g, v_hat = g^2, so p moves by lr * g / (|g| + eps)
    # step 2 (first coordinate): m = 0.9 * 0.05 + 0.1 * 0.25 = 0.07,
    #   v = 0.999 * 0.00025 + 0.001 * 0.0625 = 0.00031225,
    #   p = 0.900000002 - 0.1 * (0.07 / 0.19) / (sqrt(0.00031225 / 0.001999) + 1e-8)
    grads = [[0.5, -4.0], [0.25, 2.0]]
    p1, _, _ = run(backend, Adam, grads[:1], lr=0.1)
    np.testing.assert_allclose(p1, [1.0 - 0.1 * 0.5 / (0.5 + 1e-8), -2.0 + 0.1 * 4.0 / (4.0 + 1e-8)],
                               rtol=1e-15)
    p2, _, opt = run(backend, Adam, grads, lr=0.1)
    np.testing.assert_allclose(p2, [0.8067820404774624, -1.8733662963681956], rtol=1e-13)
    assert opt.state["w"]["step"] == 2
    np.testing.assert_allclose(backend.to_numpy(opt.state["w"]["exp_avg"]), [0.07, -0.16], rtol=1e-14)


def test_adam_weight_decay_coupled_and_decoupled(backend):
    """One step: L2 decay enters the gradient (Adam), or shrinks p first (AdamW)."""
    lr, wd = 0.1, 0.5
    p, _, _ = run(backend, Adam, [[0.5, -4.0]], lr=lr, weight_decay=wd)
    d = np.array([0.5 + wd * 1.0, -4.0 + wd * -2.0])
    np.testing.assert_allclose(p, np.array([1.0, -2.0]) - lr * d / (np.abs(d) + 1e-8), rtol=1e-15)
    p, _, _ = run(backend, Adam, [[0.5, -4.0]], lr=lr, weight_decay=wd, decoupled_weight_decay=True)
    shrunk = np.array([1.0, -2.0]) * (1.0 - lr * wd)
    np.testing.assert_allclose(p, shrunk - lr * np.array([0.5, -4.0]) / (np.array([0.5, 4.0]) + 1e-8),
                               rtol=1e-15)


def test_adam_amsgrad_keeps_the_largest_second_moment(backend):
    _, _, opt = run(backend, Adam, [[4.0, 0.0], [0.0, 0.0]], lr=0.1, amsgrad=True)
    state = opt.state["w"]
    np.testing.assert_allclose(backend.to_numpy(state["exp_avg_sq"]), [0.999 * 0.001 * 16.0, 0.0])
    np.testing.assert_allclose(backend.to_numpy(state["max_exp_avg_sq"]), [0.001 * 16.0, 0.0])


# --------------------------------------------------------------------- against PyTorch itself

@pytest.mark.parametrize("kind, options", [
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.2, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True)),
    ("Adam", dict(lr=0.05, betas=(0.8, 0.99), weight_decay=0.02)),
    ("Adam", dict(lr=0.05, amsgrad=True, weight_decay=0.02, decoupled_weight_decay=True)),
])
def test_matches_torch_over_five_steps(backend, kind, options):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    p0, grads = rng.standard_normal(4), [rng.standard_normal(4) for _ in range(5)]
    ours, _, _ = run(backend, {"SGD": SGD, "Adam": Adam}[kind], grads, p0=p0, **options)
    tp = torch.tensor(p0, requires_grad=True)
    topt = getattr(torch.optim, kind)([tp], **options)
    for g in grads:
        tp.grad = torch.tensor(g)
        topt.step()
    np.testing.assert_allclose(ours, tp.detach().numpy(), rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------- behaviour and dtype

@pytest.mark.parametrize("optimizer", [SGD, Adam])
def test_float32_stays_float32_and_grads_untouched(backend, optimizer):
    g = np.array([0.5, -0.25], dtype=np.float32)
    module = Params(w=backend.asarray(np.array([1.0, 2.0], dtype=np.float32)))
    opt = optimizer(module, lr=0.1, **({"momentum": 0.9} if optimizer is SGD else {}))
    module.grads["w"] = gb = backend.asarray(g)
    opt.step()
    opt.step()
    assert module.params["w"].dtype == backend.dtype("float32")
    np.testing.assert_array_equal(backend.to_numpy(gb), g)
    opt.zero_grad()
    np.testing.assert_array_equal(backend.to_numpy(module.grads["w"]), [0.0, 0.0])


def test_every_parameter_of_a_nested_module_is_updated(backend):
    inner = Params(weight=backend.asarray(np.ones((2, 2))))
    outer = Params(bias=backend.asarray(np.zeros(2)))
    outer.add_child("inner", inner)
    outer.grads["inner.weight"] = backend.asarray(np.full((2, 2), 2.0))
    outer.grads["bias"] = backend.asarray(np.array([1.0, -1.0]))
    SGD(outer, lr=0.5).step()
    np.testing.assert_allclose(backend.to_numpy(inner.params["weight"]), np.zeros((2, 2)))
    np.testing.assert_allclose(backend.to_numpy(outer.params["bias"]), [-0.5, 0.5])


def test_lr_can_change_between_steps(backend):
    module = Params(w=backend.asarray(np.array([0.0])))
    opt = SGD(module, lr=1.0)
    module.grads["w"] = backend.asarray(np.array([1.0]))
    opt.step()
    opt.lr = 0.25
    opt.step()
    np.testing.assert_allclose(backend.to_numpy(module.params["w"]), [-1.25])
    assert opt.steps == 2


def test_bad_arguments(backend):
    module = Params(w=backend.asarray(np.zeros(2)))
    with pytest.raises(ValueError, match=r"SGD: argument 'lr' expected a number >= 0.0, got -1"):
        SGD(module, lr=-1)
    with pytest.raises(TypeError, match="SGD: argument 'lr' expected a finite real number"):
        SGD(module, lr=float("nan"))
    with pytest.raises(ValueError, match="SGD: argument 'nesterov' expected momentum > 0"):
        SGD(module, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="Adam: argument 'betas' expected a number >= 0.0 and < 1.0"):
        Adam(module, betas=(0.9, 1.0))
    with pytest.raises(TypeError, match="Adam: argument 'betas' expected a pair"):
        Adam(module, betas=0.9)
    with pytest.raises(TypeError, match="Adam: argument 'module' expected an object with 'params'"):
        Adam([np.zeros(2)])
