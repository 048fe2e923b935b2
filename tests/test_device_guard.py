"""The transfer guard: every op and block runs forward and backward on a device with every way to
the host closed, and every output, gradient, cache entry and module array stays on that device.

Without a GPU the device is array_api_strict's second device, ``Device("device1")``: its arrays
refuse to mix with arrays on the CPU device (``ValueError``) and to become NumPy arrays.
:func:`strict_guard` closes the other ways out while the op runs -- DLPack export, the scalar
conversions (``float``, ``int``, ``bool``, ``operator.index``, ``complex``) and ``to_device`` to
another device -- so an op that creates an array without ``device=``, round-trips through NumPy,
or reads a flag on the host (a stall on a GPU) fails here.  So does one that indexes with a
boolean mask or calls a function of data-dependent shape (``nonzero``, ``unique_*``): array
API strict's flags switch those off, since on CuPy they read a count back from the GPU.

With CuPy and a GPU, :func:`cupy_guard` does the same on the GPU.  Every copy to the host in CuPy
goes through ``ndarray.get`` (``float``, ``int``, ``bool``, ``.item()``, ``.tolist()``,
``cupy.asnumpy``, ``repr``), which the guard replaces by a raise, as it does ``__dlpack__`` towards
the CPU; ``__array__`` refuses already.  Each guard is first shown to catch what it claims.

Copies from the host *to* the device (index tables built from shapes, e.g. in ``interpolate`` and
``max_pool2d``) are allowed: they need no device data and do not stall.

Results are compared with the same call on NumPy, so the device path also computes the same
thing.  These tests take no ``backend`` fixture: they are about devices, which NumPy has not.
"""

from __future__ import annotations

import contextlib
import dataclasses
import operator
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from array_api_compat import device as device_of
from array_api_compat import is_array_api_obj

from npattn import ops
from npattn.backend import cupy_available, to_numpy
from npattn.blocks import BLOCK_REGISTRY, CBAM
from npattn.layers import Conv2d, Flatten, GlobalAvgPool2d, Linear, MaxPool2d, ReLU, Sequential
from npattn.losses import softmax_cross_entropy_backward, softmax_cross_entropy_forward
from npattn.module import Module
from npattn.optim import SGD, Adam

xps = pytest.importorskip("array_api_strict")
DEVICE1 = xps.Device("device1")
STRICT_ARRAY = type(xps.asarray(0.0))
SCALAR_READS = ("__bool__", "__int__", "__float__", "__index__", "__complex__")


class HostTransfer(AssertionError):
    """A copy from the device to the host inside a guarded call."""


# ------------------------------------------------------------------------------------- guards

def _closed(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    """``original`` for CPU arrays (and ``to_device`` onto the same device); a raise otherwise."""
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        staying = name == "to_device" and args and args[0] == self.device
        if self.device != xps.Device("CPU_DEVICE") and not staying:
            raise HostTransfer(f"{name} called on an array on {self.device}: a copy to the host "
                               f"(or off the device) inside an op")
        return original(self, *args, **kwargs)
    return method


@contextlib.contextmanager
def strict_guard(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """array_api_strict's arrays off the CPU device refuse every way to the host, and boolean
    indexing and data-dependent shapes are switched off."""
    flags = xps.ArrayAPIStrictFlags(boolean_indexing=False, data_dependent_shapes=False)
    with monkeypatch.context() as mp, flags:
        for name in SCALAR_READS + ("__array__", "__buffer__", "__dlpack__", "to_device"):
            if hasattr(STRICT_ARRAY, name):
                mp.setattr(STRICT_ARRAY, name, _closed(name, getattr(STRICT_ARRAY, name)))
        yield


@contextlib.contextmanager
def cupy_guard(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """CuPy's ways to the host raise: ``ndarray.get`` (behind every scalar read, ``item``,
    ``tolist``, ``repr`` and ``cupy.asnumpy``), and ``__dlpack__`` asked for a CPU copy."""
    import cupy

    def get(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise HostTransfer("cupy.ndarray.get inside an op: a copy to the host")

    dlpack = cupy.ndarray.__dlpack__

    def to_dlpack(self: Any, *args: Any, dl_device: Any = None, **kwargs: Any) -> Any:
        if dl_device is not None and int(dl_device[0]) == 1:  # kDLCPU
            raise HostTransfer("cupy.ndarray.__dlpack__ to the CPU inside an op")
        return dlpack(self, *args, dl_device=dl_device, **kwargs)

    with monkeypatch.context() as mp:
        mp.setattr(cupy.ndarray, "get", get)
        mp.setattr(cupy.ndarray, "__dlpack__", to_dlpack)
        mp.setattr(cupy, "asnumpy", lambda a, *args, **kwargs: get(a))
        yield


# ------------------------------------------------------------------------------------ targets

@dataclasses.dataclass(frozen=True)
class Target:
    """A device to run on: how to put host arrays and modules there, and how to guard it."""

    name: str
    put: Callable[[np.ndarray], Any]
    holds: Callable[[Any], bool]
    move: Callable[[Module], Module]
    guard: Callable[[pytest.MonkeyPatch], Any]
    rtol: float


def _device1() -> Target:
    return Target("device1", lambda a: xps.asarray(a, device=DEVICE1),
                  lambda a: isinstance(a, STRICT_ARRAY) and a.device == DEVICE1,
                  lambda m: m.to(xps, device=DEVICE1), strict_guard, 1e-12)


def _cupy() -> Target:
    ok, why = cupy_available()
    if not ok:
        pytest.skip(f"CuPy guard skipped: {why}")
    import cupy
    gpu = cupy.cuda.Device().id
    return Target("cupy", cupy.asarray, lambda a: isinstance(a, cupy.ndarray) and a.device.id == gpu,
                  lambda m: m.to("gpu"), cupy_guard, 1e-9)


@pytest.fixture(params=["device1", "cupy"])
def target(request: pytest.FixtureRequest) -> Target:
    """array_api_strict's ``device1`` always; CuPy's current GPU where there is one."""
    return _device1() if request.param == "device1" else _cupy()


# ------------------------------------------------------------------------------------ helpers

def leaves(value: Any, path: str = "", seen: set[int] | None = None) -> Iterator[tuple[str, Any]]:
    """Every array inside ``value`` with its path: NamedTuple fields, dataclass fields, dict
    entries, tuple and list items, and the arrays and children of modules (each module once)."""
    seen = set() if seen is None else seen
    if is_array_api_obj(value):
        yield path, value
    elif isinstance(value, Module):
        if id(value) not in seen:
            seen.add(id(value))
            for key, item in vars(value).items():
                yield from leaves(item, f"{path}.{key}", seen)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, f"{path}[{key!r}]", seen)
    elif isinstance(value, tuple) and hasattr(value, "_fields"):
        for key in value._fields:
            yield from leaves(getattr(value, key), f"{path}.{key}", seen)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from leaves(getattr(value, f.name), f"{path}.{f.name}", seen)
    elif isinstance(value, (tuple, list)):
        for i, item in enumerate(value):
            yield from leaves(item, f"{path}[{i}]", seen)


def assert_all_on(target: Target, value: Any, what: str) -> int:
    """Every array in ``value`` lives on the target device; returns how many distinct ones."""
    found = list(leaves(value, what))
    away = [f"{path} ({type(a).__module__}, {device_of(a)})" for path, a in found
            if not target.holds(a)]
    assert not away, f"arrays off the {target.name} device: " + ", ".join(away)
    return len({id(a) for _, a in found})


def put_all(target: Target, value: Any) -> Any:
    """NumPy arrays in ``value`` (inside tuples, lists and dicts too) onto the target."""
    if isinstance(value, np.ndarray):
        return target.put(value)
    if isinstance(value, (tuple, list)):
        return type(value)(put_all(target, v) for v in value)
    if isinstance(value, dict):
        return {k: put_all(target, v) for k, v in value.items()}
    return value


def assert_same_values(target: Target, got: Any, want: Any) -> None:
    """The arrays of ``got`` (on the device) equal those of ``want`` (NumPy), path by path."""
    got, want = dict(leaves(got)), dict(leaves(want))
    assert got.keys() == want.keys()
    for path, a in got.items():
        np.testing.assert_allclose(to_numpy(a), to_numpy(want[path]), rtol=target.rtol,
                                   atol=target.rtol, err_msg=f"{target.name}: {path}")


def rng_for(name: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(name.encode()))


# ------------------------------------------------------------------------- the guards guard

def test_strict_guard_catches_every_way_to_the_host(monkeypatch):
    a = xps.asarray(np.arange(3.0), device=DEVICE1)
    one = xps.sum(a)
    with strict_guard(monkeypatch):
        for read in (float, int, bool, complex, operator.index):
            with pytest.raises(HostTransfer):
                read(one)
        for copy in (np.asarray, np.from_dlpack, to_numpy,
                     lambda v: v.to_device(xps.Device("CPU_DEVICE"))):
            with pytest.raises((HostTransfer, RuntimeError, TypeError)):
                copy(a)
        with pytest.raises(ValueError):  # mixing devices, refused by array_api_strict itself
            a + xps.asarray(np.ones(3))
        for data_dependent in (lambda v: v[v > 1.0], xps.nonzero, xps.unique_values):
            with pytest.raises(RuntimeError, match="flag"):
                data_dependent(a)
        assert a.to_device(DEVICE1).device == DEVICE1
        cpu = xps.asarray(np.ones(3))
        assert float(xps.sum(cpu)) == 3.0  # CPU arrays are left alone
    assert to_numpy(a).tolist() == [0.0, 1.0, 2.0]  # and everything is back after


def test_cupy_guard_catches_every_way_to_the_host(monkeypatch):
    ok, why = cupy_available()
    if not ok:
        pytest.skip(f"CuPy guard skipped: {why}")
    import cupy
    a = cupy.arange(3.0)
    one = a.sum()
    with cupy_guard(monkeypatch):
        for read in (float, int, bool, complex, lambda v: v.item(), repr):
            with pytest.raises(HostTransfer):
                read(one)
        for copy in (lambda v: v.get(), lambda v: v.tolist(), cupy.asnumpy, to_numpy,
                     np.from_dlpack, np.asarray):  # the last two refused by CuPy or NumPy
            with pytest.raises((HostTransfer, TypeError, RuntimeError, BufferError, ValueError)):
                copy(a)
        assert isinstance(a + 1, cupy.ndarray)
    assert to_numpy(a).tolist() == [0.0, 1.0, 2.0]


# ----------------------------------------------------------------------------------- every op

@pytest.mark.parametrize("name", list(ops.REGISTRY))
def test_every_op_stays_on_the_device(target, name, monkeypatch):
    spec = ops.REGISTRY[name]
    rng = rng_for(name)
    args, kwargs = spec.example(rng)
    y_np, cache_np = spec.forward(*args, **kwargs)
    dy_np = rng.standard_normal(tuple(y_np.shape))
    grads_np = spec.backward(dy_np, cache_np)

    dev_args, dev_kwargs, dy = put_all(target, args), put_all(target, kwargs), target.put(dy_np)
    with target.guard(monkeypatch):
        y, cache = spec.forward(*dev_args, **dev_kwargs)
        grads = spec.backward(dy, cache)
    assert_all_on(target, y, "y")
    assert_all_on(target, cache, "cache")
    assert assert_all_on(target, grads, "grads") >= 1
    assert_same_values(target, (y, grads), (y_np, grads_np))


# -------------------------------------------------------------------------------- every block

@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", list(BLOCK_REGISTRY))
def test_every_block_stays_on_the_device(target, name, training, monkeypatch):
    spec = BLOCK_REGISTRY[name]
    reference = spec.make(rng_for(name)).train(training)
    block = target.move(spec.make(rng_for(name)).train(training))
    assert_all_on(target, block, name)
    rng = rng_for(name + "input")
    x_np = spec.example(rng)
    dy_np = rng.standard_normal(x_np.shape)
    x, dy = target.put(x_np), target.put(dy_np)
    with target.guard(monkeypatch):
        y = block.forward(x)
        cache = block._cache
        dx = block.backward(dy)
    assert_all_on(target, (y, cache, dx), "outputs")
    assert_all_on(target, block, name)  # parameters, gradients, any running statistics
    want = (reference.forward(x_np), reference.backward(dy_np), dict(reference.grads))
    assert_same_values(target, (y, dx, dict(block.grads)), want)


# ------------------------------------------------------------------- a whole training step

def _net() -> Sequential:
    return Sequential(Conv2d(3, 4, 3, padding=1, rng=0, dtype="float64"), ReLU(), MaxPool2d(2),
                      CBAM(4, reduction=2, kernel_size=3, rng=1, dtype="float64"),
                      GlobalAvgPool2d(), Flatten(), Linear(4, 3, rng=2, dtype="float64"))


def _train_step(model: Module, opt: Any, x: Any, labels: Any, one: Any, guard: Any) -> None:
    """One step; the loss's forward runs outside ``guard``: it reads the label range on the host
    to raise a clear error (``softmax_cross_entropy_forward``), two scalars per batch."""
    opt.zero_grad()
    with guard():
        logits = model.forward(x)
    _, cache = softmax_cross_entropy_forward(logits, labels)
    with guard():
        model.backward(softmax_cross_entropy_backward(one, cache))
        opt.step()


@pytest.mark.parametrize("optimizer", [SGD, Adam])
def test_a_training_step_stays_on_the_device(target, optimizer, monkeypatch):
    """Layers, a block, the loss's backward and the optimizer together, as the demo trains."""
    rng = np.random.default_rng(3)
    x_np, labels_np, one_np = rng.standard_normal((2, 3, 6, 6)), np.array([2, 0]), np.asarray(1.0)
    reference, net = _net(), target.move(_net())
    opt_np, opt = optimizer(reference, lr=0.1), optimizer(net, lr=0.1)
    for _ in range(2):  # the second step finds the optimizer's state on the device
        _train_step(reference, opt_np, x_np, labels_np, one_np, contextlib.nullcontext)
        _train_step(net, opt, target.put(x_np), target.put(labels_np), target.put(one_np),
                    lambda: target.guard(monkeypatch))
    assert_all_on(target, (net, opt.state), "net")
    assert_same_values(target, dict(net.params), dict(reference.params))
    assert_same_values(target, opt.state, opt_np.state)


# ---------------------------------------------------------------------------- moving modules

def test_to_a_namespace_device_and_back():
    block = BLOCK_REGISTRY["CBAM"].make(np.random.default_rng(0))
    before = {k: np.array(v, copy=True) for k, v in block.params.items()}
    block.to(xps, device=DEVICE1)
    assert assert_all_on(_device1(), block, "CBAM") == 2 * len(before)
    block.to("cpu")
    assert all(isinstance(v, np.ndarray) for v in block.params.values())
    for k, v in block.params.items():
        np.testing.assert_array_equal(v, before[k])


@pytest.mark.parametrize("where", ["cpu", "gpu", "float32"])
def test_a_device_is_refused_beside_anything_but_a_namespace(where):
    block = BLOCK_REGISTRY["SE"].make(np.random.default_rng(0))
    with pytest.raises(TypeError, match=r"SE\.to.*'device'.*None unless 'target' is an array namespace"):
        block.to(where, device=DEVICE1)
