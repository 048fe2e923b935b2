"""The block classes as modules: PyTorch's names and shapes, seeded PyTorch-default init,
state_dict round trips, the errors of load_state_dict, of backward, and of bad arguments."""

from __future__ import annotations

import math

import numpy as np
import pytest
from blocks_reference import KINDS, build

import npattn.blocks as blocks
from npattn.blocks import CBAM, ECA, SE, ChannelAttention, SpatialAttention
from npattn.blocks._registry import tie_free

# channels=12, reduction=4 -> h = 3; kernel 7 (ECA: 3, the adaptive size at C = 12).
EXPECTED = {
    "SE": (SE(12, 4), {"excitation.0.weight": (3, 12), "excitation.2.weight": (12, 3)}),
    "ECA": (ECA(12), {"conv.weight": (1, 1, 3)}),
    "ChannelAttention": (ChannelAttention(12, 4), {"mlp.0.weight": (3, 12, 1, 1),
                                                   "mlp.2.weight": (12, 3, 1, 1)}),
    "SpatialAttention": (SpatialAttention(7), {"conv.weight": (1, 2, 7, 7)}),
    "SpatialAttention+bias": (SpatialAttention(7, bias=True), {"conv.weight": (1, 2, 7, 7),
                                                                "conv.bias": (1,)}),
    "CBAM": (CBAM(12, 4, 7), {"ca.mlp.0.weight": (3, 12, 1, 1), "ca.mlp.2.weight": (12, 3, 1, 1),
                              "sa.conv.weight": (1, 2, 7, 7)}),
}


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_parameter_names_and_shapes_are_pytorchs(case):
    module, shapes = EXPECTED[case]
    assert {k: tuple(v.shape) for k, v in module.params.items()} == shapes
    assert {k: tuple(v.shape) for k, v in module.grads.items()} == shapes
    assert all(p.dtype == np.float32 for p in module.params.values())


@pytest.mark.parametrize("channels, reduction, h", [(3, 16, 1), (16, 16, 1), (64, 16, 4), (8, 3, 2)])
def test_hidden_width_is_channels_over_reduction_at_least_one(channels, reduction, h):
    assert SE(channels, reduction).params["excitation.0.weight"].shape == (h, channels)
    assert ChannelAttention(channels, reduction).params["mlp.0.weight"].shape == (h, channels, 1, 1)


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_init_is_pytorchs_default_bounds(case):
    # kaiming_uniform(a=sqrt(5)) and the bias rule both give U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    module, _ = EXPECTED[case]
    for name, p in module.params.items():
        fan_in = math.prod(p.shape[1:]) if not name.endswith("bias") else 2 * 7 * 7
        bound = 1.0 / math.sqrt(fan_in)
        assert np.abs(p).max() <= bound
        if p.size >= 20:
            assert np.abs(p).max() > 0.7 * bound   # spread over the range, not all tiny


@pytest.mark.parametrize("kind", KINDS)
def test_seed_reproduces_and_generators_differ(kind):
    a, b, c = build(kind, 8, rng=7), build(kind, 8, rng=7), build(kind, 8, rng=8)
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])
    assert any(not np.array_equal(a.params[k], c.params[k]) for k in a.params)


@pytest.mark.parametrize("kind", KINDS)
def test_state_dict_round_trip_through_npz(tmp_path, kind):
    source, target = build(kind, 6, bias=True, rng=1), build(kind, 6, bias=True, rng=2)
    path = tmp_path / "weights.npz"
    np.savez(path, **source.state_dict())
    target.load_state_dict(path)
    target.load_state_dict(str(path))
    x = tie_free(np.random.default_rng(0), (2, 6, 3, 3))
    np.testing.assert_array_equal(target.forward(x), source.forward(x))


def test_state_dict_is_a_copy():
    module = CBAM(4, 2, 3, rng=0)
    state = module.state_dict()
    state["sa.conv.weight"][...] = 7.0
    assert not np.any(module.params["sa.conv.weight"] == 7.0)


def test_load_state_dict_lists_every_problem_and_loads_nothing():
    module = CBAM(8, 2, 3, rng=0)
    before = module.state_dict()
    bad = {"ca.mlp.0.weight": np.zeros((4, 8)), "sa.conv.weight": np.zeros((1, 2, 3, 3)),
           "sa.conv.bias": np.zeros(1), "extra": np.zeros(2)}
    with pytest.raises(ValueError) as info:
        module.load_state_dict(bad)
    message = str(info.value)
    assert message.startswith("CBAM.load_state_dict: argument 'state_dict'")
    for part in ["missing key 'ca.mlp.2.weight'", "unexpected key 'sa.conv.bias'",
                 "unexpected key 'extra'", "'ca.mlp.0.weight' has shape (4, 8), expected (4, 8, 1, 1)",
                 "4 problem(s)"]:
        assert part in message
    for name, p in module.params.items():
        np.testing.assert_array_equal(p, before[name])


def test_load_state_dict_non_strict_still_checks_shapes():
    module = SpatialAttention(3, bias=True, rng=0)
    module.load_state_dict({"conv.weight": np.ones((1, 2, 3, 3)), "other": np.ones(3)}, strict=False)
    np.testing.assert_array_equal(module.params["conv.weight"], np.ones((1, 2, 3, 3), np.float32))
    assert module.params["conv.weight"].dtype == np.float32      # cast to the module's dtype
    with pytest.raises(ValueError, match="'conv.weight' has shape"):
        module.load_state_dict({"conv.weight": np.ones((1, 2, 5, 5))}, strict=False)


def test_load_state_dict_refuses_pickles(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, **{"conv.weight": np.array([object()], dtype=object)})
    with pytest.raises(ValueError, match="allow_pickle"):
        ECA(4, kernel_size=3).load_state_dict(path)


@pytest.mark.parametrize("kind", KINDS)
def test_backward_before_forward_and_twice_are_clear_errors(kind):
    module = build(kind, 4)
    x = tie_free(np.random.default_rng(0), (1, 4, 2, 2))
    with pytest.raises(RuntimeError, match=f"{type(module).__name__}.backward: called before forward"):
        module.backward(x)
    module.forward(x)
    module.backward(x)
    with pytest.raises(RuntimeError, match="second time after one forward"):
        module.backward(x)


@pytest.mark.parametrize("kind", KINDS)
def test_grads_accumulate_until_zero_grad(kind):
    module = build(kind, 4, bias=True, rng=0)
    x = tie_free(np.random.default_rng(0), (1, 4, 2, 3))
    dy = np.random.default_rng(1).standard_normal(x.shape)
    module.forward(x)
    module.backward(dy)
    once = {k: np.array(g) for k, g in module.grads.items()}
    module.forward(x)
    module.backward(dy)
    for name, g in module.grads.items():
        np.testing.assert_allclose(g, 2 * once[name], rtol=1e-12)
    module.zero_grad()
    assert all(not np.any(g) for g in module.grads.values())


@pytest.mark.parametrize("kind", KINDS)
def test_to_casts_and_moves_every_array(backend, kind):
    module = build(kind, 4, bias=True, rng=0).to(backend.xp).to("float32")
    assert all(p.dtype == backend.dtype("float32") for p in module.params.values())
    assert all(g.dtype == backend.dtype("float32") for g in module.grads.values())
    back = module.to("cpu").to("float64")
    assert all(isinstance(p, np.ndarray) and p.dtype == np.float64 for p in back.params.values())


# --------------------------------------------------------------------------- bad constructor args

@pytest.mark.parametrize("make, cls, words", [
    (lambda: SE(0), ValueError, "SE: argument 'channels' expected an int >= 1, got 0"),
    (lambda: SE(8, reduction=0), ValueError, "SE: argument 'reduction' expected an int >= 1, got 0"),
    (lambda: SE(8.0), TypeError, "SE: argument 'channels' expected an int"),
    (lambda: ChannelAttention(8, reduction=-2), ValueError, "argument 'reduction'"),
    (lambda: ECA(8, kernel_size=4), ValueError, "ECA: argument 'kernel_size' expected an odd int"),
    (lambda: ECA(8, kernel_size=0), ValueError, "ECA: argument 'kernel_size' expected an int >= 1"),
    (lambda: ECA(8, gamma=0), ValueError, "argument 'gamma' expected a non-zero number"),
    (lambda: ECA(8, b="1"), TypeError, "argument 'b' expected a finite real number"),
    (lambda: SpatialAttention(6), ValueError, "SpatialAttention: argument 'kernel_size' expected an odd"),
    (lambda: SpatialAttention(True), TypeError, "argument 'kernel_size'"),
    (lambda: CBAM(8, kernel_size=4), ValueError, "argument 'kernel_size' expected an odd"),
    (lambda: CBAM(0), ValueError, "CBAM: argument 'channels'"),
    (lambda: SE(8, rng="seed"), TypeError, "SE: argument 'rng'"),
    (lambda: SE(8, dtype="int32"), ValueError, "argument 'dtype' expected 'float32' or 'float64'"),
])
def test_bad_constructor_arguments(make, cls, words):
    with pytest.raises(cls, match=words.replace("(", r"\(").replace(")", r"\)")):
        make()


@pytest.mark.parametrize("kind", ["SE", "ECA", "ChannelAttention", "CBAM"])
def test_input_with_the_wrong_channel_count(kind):
    module = build(kind, 4)
    name = type(module).__name__
    with pytest.raises(ValueError, match=rf"{name}: argument 'x' expected 4 channels, shape \(N, 4, H, W\), "
                                         r"got shape \(1, 3, 2, 2\)"):
        module.forward(np.ones((1, 3, 2, 2)))


@pytest.mark.parametrize("kind", KINDS)
def test_input_of_the_wrong_kind(kind):
    module = build(kind, 4)
    with pytest.raises(ValueError, match="expected 4 dimensions"):
        module.forward(np.ones((4, 2, 2)))
    with pytest.raises(TypeError, match="real floating-point dtype"):
        module.forward(np.ones((1, 4, 2, 2), dtype=np.int64))


def test_backward_checks_dy_shape():
    module = SE(4, 2, dtype="float64")
    module.forward(np.ones((1, 4, 2, 2)))
    with pytest.raises(ValueError, match="dy"):
        module.backward(np.ones((1, 4, 2, 3)))


# ---------------------------------------------------------------------- bad params (pure pairs)

def test_pure_forward_names_the_bad_parameter(backend):
    x = backend.asarray(np.ones((1, 4, 2, 2)))
    w1, w2 = backend.asarray(np.ones((2, 4))), backend.asarray(np.ones((4, 2)))
    with pytest.raises(ValueError, match=r"se: argument 'params' expected the keys .* missing \['excitation.2.weight'\]"):
        blocks.se_forward(x, {"excitation.0.weight": w1})
    with pytest.raises(ValueError, match=r"unexpected \['excitation.1.weight'\]"):
        blocks.se_forward(x, {"excitation.0.weight": w1, "excitation.2.weight": w2,
                              "excitation.1.weight": w2})
    with pytest.raises(ValueError, match=r"params\['excitation.2.weight'\]' expected shape \(4, 2\), got shape \(4, 3\)"):
        blocks.se_forward(x, {"excitation.0.weight": w1, "excitation.2.weight": backend.asarray(np.ones((4, 3)))})
    with pytest.raises(TypeError, match="dtype"):
        blocks.se_forward(x, {"excitation.0.weight": w1,
                              "excitation.2.weight": backend.asarray(np.ones((4, 2), np.float32))})
    with pytest.raises(TypeError, match="params"):
        blocks.se_forward(x, [w1, w2])
    with pytest.raises(ValueError, match=r"eca: argument 'params\['conv.weight'\].shape\[2\]' expected an odd"):
        blocks.eca_forward(x, {"conv.weight": backend.asarray(np.ones((1, 1, 2)))})
    with pytest.raises(ValueError, match=r"cbam: argument 'params' expected keys under \['ca.', 'sa.'\]"):
        blocks.cbam_forward(x, {"conv.weight": w1})


def test_mixed_array_libraries_are_a_type_error():
    import array_api_strict as xs
    x = xs.asarray(np.ones((1, 2, 3, 3)))
    with pytest.raises(TypeError, match="spatial_attention: .*same library"):
        blocks.spatial_attention_forward(x, {"conv.weight": np.ones((1, 2, 3, 3))})
