"""The module protocol (npattn.module): dotted names, live views, one backward per forward,
gradient accumulation, train/eval, to(), state_dict and load_state_dict."""

from __future__ import annotations

import numpy as np
import pytest

from npattn.backend import cupy_available
from npattn.blocks import CBAM
from npattn.layers import Linear, ReLU, Sequential, Sigmoid
from npattn.module import Module


def net(dtype="float64"):
    return Sequential(Linear(3, 4, rng=0, dtype=dtype), ReLU(),
                      Sequential(Linear(4, 2, bias=False, rng=1, dtype=dtype), Sigmoid()))


def test_names_are_dotted_in_pytorch_order():
    assert list(net().params) == ["0.weight", "0.bias", "2.0.weight"]
    assert list(net().grads) == ["0.weight", "0.bias", "2.0.weight"]
    assert list(CBAM(8, 2, 3).params) == ["ca.mlp.0.weight", "ca.mlp.2.weight", "sa.conv.weight"]
    assert len(net().params) == 3 and "2.0.weight" in net().params and "2.weight" not in net().params


def test_views_are_live_and_write_through_to_the_owner():
    module = CBAM(4, 2, 3, rng=0)
    new = np.ones((1, 2, 3, 3), dtype=np.float32)
    module.params["sa.conv.weight"] = new
    assert module.sa.params["conv.weight"] is new
    assert module.children()["sa"] is module.sa
    with pytest.raises(ValueError, match=r"argument 'sa.conv.weight' expected an array of shape \(1, 2, 3, 3\)"):
        module.params["sa.conv.weight"] = np.ones((1, 2, 5, 5))
    with pytest.raises(KeyError):
        module.params["sa.conv.bias"] = np.ones(1)
    with pytest.raises(KeyError):
        module.params["nope.weight"]
    with pytest.raises(TypeError, match="cannot be deleted"):
        del module.params["sa.conv.weight"]
    assert "'sa.conv.weight': (1, 2, 3, 3)" in repr(module.params)


def test_forward_backward_and_gradient_accumulation(backend):
    module = net().to(backend.xp)
    x = backend.asarray(np.random.default_rng(0).standard_normal((5, 3)))
    dy = backend.asarray(np.random.default_rng(1).standard_normal((5, 2)))
    module(x)
    dx = module.backward(dy)
    assert dx.shape == (5, 3)
    once = {k: backend.to_numpy(g).copy() for k, g in module.grads.items()}
    assert all(np.any(g) for g in once.values())
    module.forward(x)
    module.backward(dy)
    for k, g in module.grads.items():
        np.testing.assert_allclose(backend.to_numpy(g), 2 * once[k], rtol=1e-12)
    module.zero_grad()
    assert all(not np.any(backend.to_numpy(g)) for g in module.grads.values())


def test_backward_errors_name_the_module():
    module = net()
    with pytest.raises(RuntimeError, match=r"^Sequential.backward: called before forward"):
        module.backward(np.ones((1, 2)))
    module.forward(np.ones((1, 3)))
    module.backward(np.ones((1, 2)))
    with pytest.raises(RuntimeError, match=r"^Sequential.backward: called a second time after one forward"):
        module.backward(np.ones((1, 2)))
    with pytest.raises(RuntimeError, match=r"^Linear.backward: called a second time"):
        module[0].backward(np.ones((1, 4)))


def test_a_failed_backward_keeps_the_cache():
    module = Linear(3, 2, dtype="float64")
    module.forward(np.ones((1, 3)))
    with pytest.raises(ValueError, match="dy"):
        module.backward(np.ones((1, 5)))
    assert module.backward(np.ones((1, 2))).shape == (1, 3)


def test_train_and_eval_reach_every_child():
    module = net()
    assert module.training and module[2][1].training
    assert module.eval() is module
    assert not module.training and not module[2][0].training
    module.train()
    assert all(m.training for m in (module, module[0], module[2], module[2][1]))


def test_to_dtype_and_namespace_and_back(backend):
    module = net().to(backend.xp).to("float32")
    assert all(p.dtype == backend.dtype("float32") for p in module.params.values())
    assert all(g.dtype == backend.dtype("float32") for g in module.grads.values())
    y = module(backend.asarray(np.ones((2, 3), dtype=np.float32)))
    assert y.dtype == backend.dtype("float32")
    module.to("cpu")
    assert all(type(p) is np.ndarray for p in module.params.values())


def test_to_drops_a_held_forward():
    module = Linear(3, 2)
    module.forward(np.ones((1, 3), dtype=np.float32))
    module.to("float64")
    with pytest.raises(RuntimeError, match="before forward"):
        module.backward(np.ones((1, 2)))


@pytest.mark.parametrize("target, cls", [("float16", ValueError), ("cuda", ValueError), (np.float32, TypeError),
                                         (3, TypeError)])
def test_to_rejects_unknown_targets(target, cls):
    with pytest.raises(cls, match=r"Linear.to: argument 'target' expected 'cpu', 'gpu', 'float32', 'float64'"):
        Linear(2, 2).to(target)


def test_to_gpu_without_a_gpu_says_why():
    ok, _ = cupy_available()
    if ok:
        pytest.skip("a GPU is present: covered by the cupy backend")
    with pytest.raises(RuntimeError, match="cannot move to 'gpu'"):
        Linear(2, 2).to("gpu")


def test_state_dict_order_copy_and_round_trip(tmp_path, backend):
    source, target = net().to(backend.xp), net("float32")
    state = source.state_dict()
    assert list(state) == list(source.params)
    assert all(state[k] is not source.params[k] for k in state)
    np.savez(tmp_path / "w.npz", **{k: backend.to_numpy(v) for k, v in state.items()})
    target.load_state_dict(tmp_path / "w.npz")
    for k, v in target.params.items():
        assert v.dtype == np.float32
        np.testing.assert_allclose(v, backend.to_numpy(state[k]), rtol=1e-7)


def test_load_state_dict_into_another_library_keeps_the_modules_library(backend):
    module = net().to(backend.xp)
    module.load_state_dict({k: np.zeros(v.shape) for k, v in net().params.items()})
    assert all(type(p) is type(backend.asarray(np.zeros(1))) for p in module.params.values())


def test_load_state_dict_rejects_non_mappings():
    with pytest.raises(TypeError, match="Sequential.load_state_dict: argument 'state_dict' expected a mapping"):
        net().load_state_dict([np.zeros(3)])


def test_load_state_dict_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    module = Linear(3, 2, dtype="float64")
    module.load_state_dict({"weight": torch.ones(2, 3), "bias": torch.zeros(2)})
    np.testing.assert_array_equal(module.params["weight"], np.ones((2, 3)))


def test_a_subclass_needs_only_forward_and_backward():
    class Scale(Module):
        def __init__(self):
            super().__init__()
            self.add_param("gain", np.array([2.0]))

        def _forward(self, x):
            return x * self._params["gain"], x

        def _backward(self, dy, x):
            return dy * self._params["gain"], {"gain": np.sum(dy * x, keepdims=True).reshape(1)}

    module = Scale()
    assert repr(module) == "Scale()"
    module.forward(np.array([1.0, 3.0]))
    np.testing.assert_array_equal(module.backward(np.array([1.0, 1.0])), [2.0, 2.0])
    np.testing.assert_array_equal(module.grads["gain"], [4.0])
    with pytest.raises(NotImplementedError, match="Module defines no _forward"):
        Module().forward(np.ones(1))
