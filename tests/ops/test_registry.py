"""Every registered op, on every backend, in float64 and float32: the gradient checker passes on
its example, inputs and ``dy`` are left alone, dtypes are kept, a ``dy`` of the wrong shape is
refused, its derivation page exists, and linear ops pass the dot-product test.

The list of ops is :data:`npattn.ops.REGISTRY`; nothing here names an op by hand.
"""

from __future__ import annotations

import inspect
import zlib
from pathlib import Path

import numpy as np
import pytest
from array_api_compat import is_array_api_obj
from conftest import THREAD_TOL, _make_backend, one_thread_then_every_array_split

from npattn.backend import to_numpy
from npattn.check_all import convert
from npattn.gradcheck import call_args, check_adjoint, check_op
from npattn.ops import REGISTRY

DOCS = Path(__file__).resolve().parents[2] / "docs"
NAMES = list(REGISTRY)
LINEAR = [name for name, spec in REGISTRY.items() if spec.linear]
DTYPES = ["float64", "float32"]


def example(name, backend, dtype):
    """The op's example on ``backend`` in ``dtype``, every positional-able argument positional
    (so an op's own ``mode`` or ``eps`` cannot meet the checker's)."""
    spec = REGISTRY[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    args, kwargs = convert(spec.example(rng), backend.xp, dtype)
    return call_args(spec.forward, *args, **kwargs)


def arrays(values):
    """NumPy copies of the arrays among ``values`` (dict entries included), in order."""
    out = []
    for v in values:
        if is_array_api_obj(v):
            out.append(np.array(to_numpy(v), copy=True))
        elif isinstance(v, dict):
            out += arrays(list(v.values()))
    return out


def floating_dtypes(values):
    return [str(v.dtype).rsplit(".", 1)[-1] for v in values
            if is_array_api_obj(v) and np.issubdtype(to_numpy(v).dtype, np.floating)]


def first_parameter(name):
    return next(iter(inspect.signature(REGISTRY[name].forward).parameters))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_gradient_check_passes_on_the_example(backend, name, dtype):
    spec = REGISTRY[name]
    args, kwargs = example(name, backend, dtype)
    # Every entry, except array_api_strict in float32 (the slowest pair, and the float32 path is
    # the same code as NumPy's): random directions there.
    mode = "directional" if (backend.name, dtype) == ("array_api_strict", "float32") else "full"
    report = check_op(spec.forward, spec.backward, *args, mode=mode, **kwargs)
    assert report.passed, str(report)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_inputs_and_dy_unmodified_and_dtype_kept(backend, name, dtype):
    spec = REGISTRY[name]
    args, kwargs = example(name, backend, dtype)
    before = arrays([*args, *kwargs.values()])
    y, cache = spec.forward(*args, **kwargs)
    assert str(y.dtype).rsplit(".", 1)[-1] == dtype
    dy = backend.asarray(np.random.default_rng(1).standard_normal(tuple(y.shape)), dtype)
    dy_before = np.array(to_numpy(dy), copy=True)
    grads = spec.backward(dy, cache)
    for a, b in zip(arrays([*args, *kwargs.values()]), before):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(to_numpy(dy), dy_before)
    grads = grads if isinstance(grads, tuple) else (grads,)
    assert set(floating_dtypes(grads)) == {dtype}


@pytest.mark.parametrize("name", NAMES)
def test_dy_of_the_wrong_shape_raises_naming_the_op(backend, name):
    spec = REGISTRY[name]
    args, kwargs = example(name, backend, "float64")
    y, cache = spec.forward(*args, **kwargs)
    shape = tuple(y.shape)
    wrong = (*shape[:-1], shape[-1] + 1) if shape else (1,)
    dy = backend.asarray(np.random.default_rng(2).standard_normal(wrong))
    with pytest.raises(ValueError, match=name):
        spec.backward(dy, cache)


@pytest.mark.parametrize("name", NAMES)
def test_derivation_page_exists(name):
    page = DOCS / REGISTRY[name].doc
    assert page.is_file(), f"{name}: its derivation page docs/{REGISTRY[name].doc} is missing"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", LINEAR)
def test_linear_op_passes_the_dot_product_test(backend, name, dtype):
    spec = REGISTRY[name]
    args, kwargs = example(name, backend, dtype)
    report = check_adjoint(spec.forward, spec.backward, *args, inputs=first_parameter(name), **kwargs)
    assert report.passed, str(report)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_threads_give_the_one_thread_results(name, dtype, monkeypatch):
    """NumPy with npattn's threads splitting every array against the calling thread alone: the
    examples are far below the sizes where the threaded paths switch on by themselves."""
    numpy_backend = _make_backend("numpy")
    spec = REGISTRY[name]

    def forward_backward():
        args, kwargs = example(name, numpy_backend, dtype)
        y, cache = spec.forward(*args, **kwargs)
        dy = numpy_backend.asarray(np.random.default_rng(1).standard_normal(tuple(y.shape)), dtype)
        grads = spec.backward(dy, cache)
        return arrays([y, *(grads if isinstance(grads, tuple) else (grads,))])

    alone, split = one_thread_then_every_array_split(monkeypatch, forward_backward)
    assert len(split) == len(alone)
    for got, want in zip(split, alone):
        np.testing.assert_allclose(got, want, **THREAD_TOL[dtype])
