"""The batch norms inside CoordAttention, SelectiveKernel and BAM: running statistics as module
buffers (state_dict, load_state_dict, to), updated like PyTorch's in training mode and only
there, used in evaluation mode; the pure forward's ``buffers`` argument and its errors."""

from __future__ import annotations

import numpy as np
import pytest
from context_blocks_reference import NORM_KINDS, OPS, build, host, hyper, randomize, reference

from npattn.gradcheck import check_module


def made(kind, seed=0, dtype="float64"):
    rng = np.random.default_rng(seed)
    return randomize(build(kind, 3, rng, dtype=dtype), rng)


def sample(seed=1, shape=(2, 3, 3, 2)):
    return np.random.default_rng(seed).standard_normal(shape)


@pytest.mark.parametrize("kind", NORM_KINDS)
def test_buffers_are_the_running_statistics_of_every_batch_norm(kind):
    module = build(kind, 3, 0)
    norms = {k.rsplit(".", 1)[0] for k in module.buffers}
    assert set(module.buffers) == {f"{b}.{s}" for b in norms for s in ("running_mean", "running_var")}
    for b in norms:                                        # PyTorch's initial values
        c = module.params[f"{b}.weight"].shape
        np.testing.assert_array_equal(module.params[f"{b}.weight"], np.ones(c))
        np.testing.assert_array_equal(module.params[f"{b}.bias"], np.zeros(c))
        np.testing.assert_array_equal(module.buffers[f"{b}.running_mean"], np.zeros(c))
        np.testing.assert_array_equal(module.buffers[f"{b}.running_var"], np.ones(c))
    assert not set(module.buffers) & set(module.params) and set(module.grads) == set(module.params)


@pytest.mark.parametrize("kind", NORM_KINDS)
def test_training_forwards_update_the_statistics_like_pytorch(kind):
    module, x1, x2 = made(kind), sample(1), sample(2)
    start = host(module.buffers)
    first = reference(module, x1).buffers
    module.forward(x1)
    module.attention_map(x2)                               # no side effect
    for name, b in host(module.buffers).items():          # momentum 0.1, unbiased variance
        np.testing.assert_allclose(b, first[name], rtol=1e-13, err_msg=name)
        assert not np.array_equal(b, start[name])
    second = reference(module, x2).buffers
    module.forward(x2)
    for name, b in host(module.buffers).items():
        np.testing.assert_allclose(b, second[name], rtol=1e-13, err_msg=name)


@pytest.mark.parametrize("kind", NORM_KINDS)
def test_eval_mode_uses_the_running_statistics_and_keeps_them(kind, backend):
    module = made(kind).eval().to(backend.xp)
    before = host(module.buffers)
    x = sample(3, (3, 3, 3, 2))
    y = backend.to_numpy(module.forward(backend.asarray(x)))
    np.testing.assert_allclose(y, reference(module, x).y, rtol=1e-11, atol=1e-12)
    for name, b in host(module.buffers).items():
        np.testing.assert_array_equal(b, before[name])
    # Each sample on its own: no batch statistics couple the samples in evaluation mode.
    alone = backend.to_numpy(module.forward(backend.asarray(x[1:2])))
    np.testing.assert_allclose(alone, y[1:2], rtol=1e-12, atol=1e-13)
    # And not the training output, which normalises with the batch's statistics.
    module.train()
    assert not np.allclose(backend.to_numpy(module.forward(backend.asarray(x))), y)


@pytest.mark.parametrize("kind", NORM_KINDS)
def test_eval_mode_backward_matches_finite_differences(kind, backend):
    module = made(kind, seed=4).eval().to(backend.xp)
    x = sample(5, (1, 3, 2, 3))                            # one sample is fine in eval mode
    assert reference(module, x).margin > 1e-4
    mode = "full" if backend.name == "numpy" else "directional"
    check_module(module, backend.asarray(x), mode=mode, rng=0).raise_if_failed()


@pytest.mark.parametrize("kind", NORM_KINDS)
def test_float32_module_is_differenced_in_float64_buffers_and_all(kind):
    module = made(kind, dtype="float32")
    report = check_module(module, sample(6).astype(np.float32), rng=0)
    report.raise_if_failed()
    assert report.fd_dtype == "float64" and not report.notes


@pytest.mark.parametrize("kind", NORM_KINDS)
def test_state_dict_round_trip_with_buffers(kind, tmp_path):
    source, target = made(kind, 1), made(kind, 2)
    source.forward(sample(7))                              # statistics away from their start
    state = source.state_dict()
    assert set(state) == set(source.params) | set(source.buffers)
    state[next(iter(source.buffers))][...] = 7.0           # a copy
    assert not np.any(next(iter(source.buffers.values())) == 7.0)
    path = tmp_path / "block.npz"
    np.savez(path, **source.state_dict())
    target.load_state_dict(path)
    for store in ("params", "buffers"):
        for name, a in getattr(source, store).items():
            np.testing.assert_array_equal(getattr(target, store)[name], a)
    source.eval(), target.eval()
    x = sample(8)
    np.testing.assert_array_equal(target.forward(x), source.forward(x))


@pytest.mark.parametrize("kind", NORM_KINDS)
def test_load_state_dict_lists_buffer_problems_and_loads_nothing(kind):
    module = made(kind)
    before = module.state_dict()
    mean = next(k for k in module.buffers if k.endswith("running_mean"))
    var = next(k for k in module.buffers if k.endswith("running_var"))
    bad = dict(before)
    del bad[var]
    bad[mean] = np.zeros(17)
    bad["extra.running_mean"] = np.zeros(3)
    with pytest.raises(ValueError) as info:
        module.load_state_dict(bad)
    message = str(info.value)
    assert message.startswith(f"{kind}.load_state_dict: argument 'state_dict'")
    for part in [f"missing key {var!r}", "unexpected key 'extra.running_mean'",
                 f"{mean!r} has shape (17,)", "3 problem(s)"]:
        assert part in message
    for name, a in module.state_dict().items():
        np.testing.assert_array_equal(a, before[name])
    # PyTorch's counters load (and are ignored); non-strict loading takes a subset.
    module.load_state_dict({**before, **{f"{k.rsplit('.', 1)[0]}.num_batches_tracked": np.array(3)
                                         for k in module.buffers}})
    module.load_state_dict({mean: np.full(before[mean].shape, 2.0)}, strict=False)
    np.testing.assert_array_equal(module.buffers[mean], 2.0)


@pytest.mark.parametrize("kind", NORM_KINDS)
def test_to_moves_and_casts_the_buffers(kind, backend):
    module = made(kind).to(backend.xp).to("float32")
    assert all(b.dtype == backend.dtype("float32") for b in module.buffers.values())
    module.forward(backend.asarray(sample(9).astype(np.float32)))
    assert all(b.dtype == backend.dtype("float32") for b in module.buffers.values())
    back = module.to("cpu").to("float64")
    assert all(isinstance(b, np.ndarray) and b.dtype == np.float64 for b in back.buffers.values())


# --------------------------------------------------------------------- the pure forward's buffers

@pytest.mark.parametrize("kind", NORM_KINDS)
def test_pure_forward_without_buffers_tracks_nothing(kind, backend):
    module = made(kind).to(backend.xp)
    forward = type(module).pure_forward
    x = backend.asarray(sample(10))
    y_tracked, tracked = forward(x, dict(module.params), buffers=dict(module.buffers), **hyper(module))
    y, cache = forward(x, dict(module.params), **hyper(module))
    assert cache.buffers is None and set(tracked.buffers) == set(module.buffers)
    np.testing.assert_array_equal(backend.to_numpy(y), backend.to_numpy(y_tracked))


@pytest.mark.parametrize("kind", NORM_KINDS)
def test_pure_forward_checks_its_buffers(kind, backend):
    import array_api_strict as xs
    module = made(kind).to(backend.xp)
    op = OPS[kind]
    forward = type(module).pure_forward
    x, params, buffers = backend.asarray(sample(11)), dict(module.params), dict(module.buffers)
    name = next(iter(buffers))
    with pytest.raises(ValueError, match=rf"{op}: argument 'buffers' expected the running "
                                         r"statistics in evaluation mode, got None"):
        forward(x, params, training=False, **hyper(module))
    with pytest.raises(TypeError, match=rf"{op}: argument 'buffers' expected a mapping"):
        forward(x, params, buffers=list(buffers.values()), **hyper(module))
    with pytest.raises(ValueError, match=rf"{op}: argument 'buffers' expected the keys .* "
                                         rf"missing \['{name}'\], unexpected \[\]"):
        forward(x, params, buffers={k: v for k, v in buffers.items() if k != name}, **hyper(module))
    wrong_shape = {**buffers, name: backend.asarray(np.zeros(99))}
    with pytest.raises(ValueError, match=rf"argument 'buffers\['{name}'\]' expected shape"):
        forward(x, params, buffers=wrong_shape, **hyper(module))
    wrong_dtype = {**buffers, name: backend.asarray(np.zeros(buffers[name].shape, np.float32))}
    with pytest.raises(TypeError, match=rf"argument 'buffers\['{name}'\]' expected dtype"):
        forward(x, params, buffers=wrong_dtype, **hyper(module))
    zeros = np.zeros(buffers[name].shape)
    other = zeros if backend.name != "numpy" else xs.asarray(zeros)      # another library
    with pytest.raises(TypeError, match="same library"):
        forward(x, params, buffers={**buffers, name: other}, **hyper(module))
    for kwargs, cls, words in [
            ({"training": 1}, TypeError, "argument 'training' expected a bool"),
            ({"momentum": 1.5}, ValueError, r"argument 'momentum' expected a float in \[0, 1\]"),
            ({"eps": 0.0}, ValueError, "argument 'eps' expected a float > 0")]:
        with pytest.raises(cls, match=f"{op}: {words}"):
            forward(x, params, buffers=buffers, **kwargs, **hyper(module))


@pytest.mark.parametrize("kind", NORM_KINDS)
def test_bad_batch_norm_settings_of_the_module(kind):
    with pytest.raises(ValueError, match=rf"{kind}: argument 'momentum' expected a float in "
                                         r"\[0, 1\], got -0.1"):
        type(build(kind, 2, 0))(2, momentum=-0.1)
    with pytest.raises(TypeError, match=rf"{kind}: argument 'eps' expected a float"):
        type(build(kind, 2, 0))(2, eps="small")
