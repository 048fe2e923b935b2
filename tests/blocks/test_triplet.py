"""TripletAttention: forward, maps and running statistics against a reference that moves each
branch's pooled axis to the front with np.transpose and convolves with SciPy's correlate2d;
gradients by finite differences (check_module) in training mode on Hypothesis-drawn sizes, and
in evaluation mode separately; properties (transposing H and W swaps the cw and hc branches,
zero gates halve x, the first-max tie rule in every branch), buffers (updated like PyTorch's,
untouched by eval and attention_map, in state_dict), the pure pair against the module, dtypes,
no mutation, bad input, and PyTorch where installed."""

from __future__ import annotations

import numpy as np
import pytest
from blocks_reference import host_params, sigmoid
from context_blocks_reference import assert_matches_torch, randomize
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.signal import correlate2d

from npattn.backend import to_numpy
from npattn.blocks._registry import tie_free
from npattn.blocks import TripletAttention, triplet_attention_backward, triplet_attention_forward
from npattn.gradcheck import check_module

seeds = st.integers(0, 2**32 - 1)
# Finite differences through three branches are the slow tests: at most 10 draws each.
few_examples = settings(max_examples=min(10, settings.default.max_examples))

#: Branch -> (the axis of x it pools, the two axes of x its map spans, in the map's order).
AXES = {"cw": (2, (1, 3)), "hc": (3, (2, 1)), "hw": (1, (2, 3))}


# ------------------------------------------------------------------------------- the reference

def ref_triplet(x, p, buffers=None, no_spatial=False, training=True, momentum=0.01, eps=1e-5):
    """The block written from its definition; returns (y, maps, new buffers, the conv outputs).

    Branch b pools x over its axis (max, then mean), correlates the two maps ("same" zero
    padding) on the plane of the other two axes, batch-normalises with the statistics over N and
    that plane, gates x broadcast along the pooled axis.
    """
    branches = ("cw", "hc") if no_spatial else ("cw", "hc", "hw")
    n = x.shape[0]
    y, maps, new, convs = np.zeros_like(x), {}, {}, {}
    for b in branches:
        axis, plane = AXES[b]
        order = (0, axis, *plane)                             # pooled axis first, then the plane
        v = np.transpose(x, order)
        f = np.stack([v.max(axis=1), v.mean(axis=1)], axis=1)             # (N, 2, P, Q)
        w = p[f"{b}.conv.conv.weight"][0]
        z = np.stack([sum(correlate2d(f[i, q], w[q], mode="same") for q in range(2))
                      for i in range(n)])                                 # (N, P, Q)
        convs[b] = z
        pre = f"{b}.conv.bn."
        if training:
            mean, var = z.mean(), z.var()
            if buffers is not None:
                count = z.size
                new[pre + "running_mean"] = (1 - momentum) * buffers[pre + "running_mean"] + momentum * mean
                new[pre + "running_var"] = ((1 - momentum) * buffers[pre + "running_var"]
                                            + momentum * var * count / (count - 1))
        else:
            mean, var = buffers[pre + "running_mean"][0], buffers[pre + "running_var"][0]
        zn = (z - mean) / np.sqrt(var + eps) * p[pre + "weight"][0] + p[pre + "bias"][0]
        m = sigmoid(zn)                                                   # (N, P, Q)
        maps[b] = m[:, None]
        y += np.transpose(v * m[:, None], np.argsort(order))
    return y / len(branches), maps, new, convs


# ---------------------------------------------------------------------------------- the draws

@st.composite
def triplet_cases(draw):
    """A float64 block and a tie-free input: batch 1-2, C, H, W 1-4 with every branch's map
    holding at least two values (batch statistics need them), odd kernels 1-5, with or without
    the hw branch, every param and running statistic randomised."""
    shape = draw(st.tuples(st.integers(1, 2), st.integers(1, 4), st.integers(1, 4),
                           st.integers(1, 4)).filter(
        lambda s: min(s[0] * s[1] * s[3], s[0] * s[2] * s[1], s[0] * s[2] * s[3]) >= 2))
    rng = np.random.default_rng(draw(seeds))
    module = TripletAttention(draw(st.sampled_from([1, 3, 5])), draw(st.booleans()), rng=rng,
                              dtype="float64")
    return randomize(module, rng), tie_free(rng, shape)


def gradcheck_mode(backend):
    """Every entry by central differences on NumPy; on the slower array_api_strict, random
    directions (its per-call overhead makes ~600 forwards per draw take seconds)."""
    return "full" if backend.name == "numpy" else "directional"


def batch_spread(module, x):
    """The smallest standard deviation of a branch's conv output over its batch: near zero,
    a batch norm divides by about sqrt(eps) and finite differences lose their accuracy."""
    _, _, _, convs = ref_triplet(x, host_params(module), no_spatial=module.no_spatial)
    return min(z.std() for z in convs.values())


@given(case=triplet_cases())
def test_forward_maps_and_running_statistics_match_reference(backend, case):
    module, x = case
    start = {k: to_numpy(v) for k, v in module.buffers.items()}
    y_ref, maps_ref, new_ref, _ = ref_triplet(x, host_params(module), start, module.no_spatial)
    module.to(backend.xp)
    xb = backend.asarray(x)
    maps = module.attention_map(xb)
    assert set(maps) == set(maps_ref)
    for b, m in maps.items():
        np.testing.assert_allclose(backend.to_numpy(m), maps_ref[b], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(backend.to_numpy(module.forward(xb)), y_ref, rtol=1e-12, atol=1e-14)
    for k, v in module.buffers.items():
        np.testing.assert_allclose(backend.to_numpy(v), new_ref[k], rtol=1e-12, atol=1e-15)


@few_examples
@given(case=triplet_cases())
def test_backward_matches_finite_differences_in_training_mode(backend, case):
    module, x = case
    assume(batch_spread(module, x) > 1e-2)
    module.to(backend.xp)
    report = check_module(module, backend.asarray(x), mode=gradcheck_mode(backend), rng=0)
    report.raise_if_failed()
    assert {c.name for c in report.inputs} == {"x", *module.params}


@few_examples
@given(case=triplet_cases())
def test_evaluation_mode_uses_the_running_statistics(backend, case):
    module, x = case
    buffers = {k: to_numpy(v) for k, v in module.buffers.items()}
    y_ref, maps_ref, _, _ = ref_triplet(x, host_params(module), buffers, module.no_spatial,
                                        training=False)
    module.eval().to(backend.xp)
    xb = backend.asarray(x)
    np.testing.assert_allclose(backend.to_numpy(module.forward(xb)), y_ref, rtol=1e-12, atol=1e-14)
    for k, v in module.buffers.items():                   # evaluation updates nothing
        np.testing.assert_array_equal(backend.to_numpy(v), buffers[k])
    check_module(module, xb, mode=gradcheck_mode(backend), rng=1).raise_if_failed()


def test_a_single_value_map_is_fine_in_evaluation_mode(backend):
    module = TripletAttention(3, rng=0, dtype="float64").eval().to(backend.xp)
    x = np.array([[[[0.7]]]])
    y_ref, _, _, _ = ref_triplet(x, host_params(module), {k: to_numpy(v) for k, v in
                                                          module.buffers.items()}, training=False)
    np.testing.assert_allclose(backend.to_numpy(module.forward(backend.asarray(x))), y_ref,
                               rtol=1e-13)


# --------------------------------------------------------------------------------- properties

def test_transposing_h_and_w_swaps_the_cw_and_hc_branches(backend):
    # x^T (H and W swapped): branch cw of x^T pools W and spans (C, H), the transpose of branch
    # hc's plane (H, C) for x; so with the kernels transposed and swapped, y(x^T) = y(x)^T.
    rng = np.random.default_rng(0)
    module = randomize(TripletAttention((3, 5), rng=1, dtype="float64"), rng)
    twin = TripletAttention((5, 3), rng=2, dtype="float64")
    swap = {"cw": "hc", "hc": "cw", "hw": "hw"}
    for name, p in host_params(module).items():
        b, rest = name.split(".", 1)
        twin.params[f"{swap[b]}.{rest}"] = np.transpose(p, (0, 1, 3, 2)) if p.ndim == 4 else p
    x = tie_free(rng, (2, 3, 4, 5))
    y = backend.to_numpy(module.to(backend.xp).forward(backend.asarray(x)))
    y_t = backend.to_numpy(twin.to(backend.xp).forward(backend.asarray(np.transpose(x, (0, 1, 3, 2)))))
    np.testing.assert_allclose(y_t, np.transpose(y, (0, 1, 3, 2)), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("no_spatial", [False, True])
def test_zero_gates_give_half_the_input(backend, no_spatial):
    module = TripletAttention(3, no_spatial, rng=0, dtype="float64")
    for name, p in module.params.items():
        if ".bn." in name:
            module.params[name] = p * 0.0                 # BN output 0 -> every gate 1/2
    module.to(backend.xp)
    x = tie_free(np.random.default_rng(0), (2, 3, 4, 4))
    np.testing.assert_allclose(backend.to_numpy(module.forward(backend.asarray(x))), x / 2,
                               rtol=1e-15)


@pytest.mark.parametrize("branch", ["cw", "hc", "hw"])
def test_max_tie_sends_the_gradient_to_the_first_maximum(backend, branch):
    # Two slices along the branch's pooled axis are equal and hold the maximum.  The gradient
    # at the tie equals the limit from the side where the first of them is the strict maximum,
    # and differs from the limit where the second one is.
    axis = AXES[branch][0]
    rng = np.random.default_rng(5)
    x = tie_free(rng, (2, 4, 4, 4), spread=1.0)
    first, second = [slice(None)] * 4, [slice(None)] * 4
    first[axis], second[axis] = 1, 3
    x[tuple(first)] = x[tuple(second)] = tie_free(rng, np.shape(x[tuple(first)]), spread=1.0) + 5.0
    module = randomize(TripletAttention(3, rng=6, dtype="float64"), rng).to(backend.xp)
    dy = backend.asarray(rng.standard_normal(x.shape))

    def dx_at(x_np):
        _, cache = triplet_attention_forward(backend.asarray(x_np), dict(module.params))
        return backend.to_numpy(triplet_attention_backward(dy, cache)[0])

    def raised(where):
        x_np = x.copy()
        x_np[tuple(where)] += 1e-9
        return x_np

    at_tie = dx_at(x)
    np.testing.assert_allclose(at_tie, dx_at(raised(first)), rtol=1e-5, atol=1e-7)
    assert np.abs(at_tie - dx_at(raised(second))).max() > 1e-3


def test_attention_map_and_backward_leave_the_buffers_alone(backend):
    module = TripletAttention(3, rng=0, dtype="float64").to(backend.xp)
    x = backend.asarray(tie_free(np.random.default_rng(0), (2, 3, 4, 4)))
    before = {k: backend.to_numpy(v) for k, v in module.buffers.items()}
    module.attention_map(x)
    for k, v in module.buffers.items():
        np.testing.assert_array_equal(backend.to_numpy(v), before[k])
    module.forward(x)
    changed = {k: backend.to_numpy(v) for k, v in module.buffers.items()}
    assert all(not np.array_equal(changed[k], before[k]) for k in before)
    module.backward(backend.asarray(np.random.default_rng(1).standard_normal((2, 3, 4, 4))))
    for k, v in module.buffers.items():
        np.testing.assert_array_equal(backend.to_numpy(v), changed[k])


def test_pure_pair_matches_module(backend):
    rng = np.random.default_rng(0)
    module = randomize(TripletAttention(3, rng=2, dtype="float64"), rng)
    module.to(backend.xp)
    x = backend.asarray(tie_free(rng, (2, 3, 4, 5)))
    dy = backend.asarray(rng.standard_normal((2, 3, 4, 5)))
    buffers = dict(module.buffers)
    y, cache = triplet_attention_forward(x, dict(module.params), buffers)
    dx, dparams = triplet_attention_backward(dy, cache)
    np.testing.assert_array_equal(backend.to_numpy(y), backend.to_numpy(module.forward(x)))
    np.testing.assert_array_equal(backend.to_numpy(dx), backend.to_numpy(module.backward(dy)))
    assert set(dparams) == set(module.params)
    for name, g in dparams.items():
        np.testing.assert_array_equal(backend.to_numpy(g), backend.to_numpy(module.grads[name]))
    for name, b in cache.buffers.items():
        np.testing.assert_array_equal(backend.to_numpy(b), backend.to_numpy(module.buffers[name]))
    _, no_stats = triplet_attention_forward(x, dict(module.params))       # nothing tracked
    assert no_stats.buffers is None


def test_float32_stays_float32_and_nothing_is_modified(backend):
    rng = np.random.default_rng(5)
    module = TripletAttention(3, rng=3).to(backend.xp)
    params_before = host_params(module)
    x_np = tie_free(rng, (2, 4, 3, 5)).astype(np.float32)
    dy_np = rng.standard_normal(x_np.shape).astype(np.float32)
    x, dy = backend.asarray(x_np), backend.asarray(dy_np)
    buffers = dict(module.buffers)
    buffers_before = {k: backend.to_numpy(v).copy() for k, v in buffers.items()}
    y = module.forward(x)
    dx = module.backward(dy)
    assert y.dtype == backend.dtype("float32") and dx.dtype == backend.dtype("float32")
    assert all(g.dtype == backend.dtype("float32") for g in module.grads.values())
    assert all(b.dtype == backend.dtype("float32") for b in module.buffers.values())
    np.testing.assert_array_equal(backend.to_numpy(x), x_np)
    np.testing.assert_array_equal(backend.to_numpy(dy), dy_np)
    for name, p in host_params(module).items():
        np.testing.assert_array_equal(p, params_before[name])
    for name, b in buffers.items():                       # replaced, never written in place
        np.testing.assert_array_equal(backend.to_numpy(b), buffers_before[name])
    y_ref, _, _, _ = ref_triplet(x_np.astype(np.float64), params_before)
    np.testing.assert_allclose(backend.to_numpy(y), y_ref, rtol=1e-4, atol=1e-5)


def test_names_shapes_state_dict_and_repr():
    module = TripletAttention(5, rng=0)
    assert {k: tuple(v.shape) for k, v in module.params.items()} == {
        f"{b}.conv.{k}": s for b in ("cw", "hc", "hw")
        for k, s in (("conv.weight", (1, 2, 5, 5)), ("bn.weight", (1,)), ("bn.bias", (1,)))}
    assert set(module.state_dict()) == set(module.params) | {
        f"{b}.conv.bn.{k}" for b in ("cw", "hc", "hw") for k in ("running_mean", "running_var")}
    assert repr(module) == "TripletAttention(kernel_size=5, no_spatial=False)"
    assert (module.momentum, module.eps) == (0.01, 1e-5)
    assert not any(k.startswith("hw.") for k in TripletAttention(3, no_spatial=True).state_dict())
    assert np.all(np.abs(module.params["cw.conv.conv.weight"]) <= 1 / np.sqrt(2 * 25))


def test_bad_input(backend):
    name, op = "TripletAttention", "triplet_attention"
    with pytest.raises(ValueError, match=f"{name}: argument 'kernel_size' expected an odd int"):
        TripletAttention(4)
    with pytest.raises(TypeError, match=f"{name}: argument 'no_spatial' expected a bool"):
        TripletAttention(3, no_spatial=1)
    with pytest.raises(ValueError, match=f"{name}: argument 'momentum' expected a float in"):
        TripletAttention(3, momentum=2.0)
    module = TripletAttention(3, rng=0, dtype="float64").to(backend.xp)
    with pytest.raises(ValueError, match=f"{name}: argument 'x' expected 4 dimensions"):
        module.forward(backend.asarray(np.zeros((2, 3, 4))))
    with pytest.raises(ValueError, match=f"{op}: argument 'x' expected more than 1 value in every "
                                         "branch's map"):
        module.forward(backend.asarray(np.ones((1, 1, 1, 3))))       # branch cw: N C W = 3, hc: 1
    params = dict(module.params)
    x = backend.asarray(np.zeros((2, 2, 3, 3)))
    with pytest.raises(ValueError, match=f"{op}: argument 'params' expected the keys"):
        triplet_attention_forward(x, params, no_spatial=True)
    with pytest.raises(ValueError, match=f"{op}: argument 'buffers' expected the running "
                                         "statistics in evaluation mode"):
        triplet_attention_forward(x, params, None, training=False)
    with pytest.raises(TypeError, match=f"{op}: argument 'no_spatial' expected a bool"):
        triplet_attention_forward(x, params, no_spatial="no")
    with pytest.raises(ValueError, match=f"{op}: argument 'params\\['hc.conv.conv.weight'\\]' "
                                         "expected shape \\(1, 2, 3, 3\\)"):
        triplet_attention_forward(x, {**params, "hc.conv.conv.weight": params["cw.conv.conv.weight"][:, :, :1, :]})
    _, cache = triplet_attention_forward(x, params)
    with pytest.raises(ValueError, match="triplet_attention_backward: argument 'dy' expected shape"):
        triplet_attention_backward(backend.asarray(np.zeros((2, 2, 3, 4))), cache)


# ------------------------------------------------------------------------------ against PyTorch

def _torch_triplet(torch, k, no_spatial):
    """Triplet attention written the way the reference code is organised, so its state_dict
    has the reference names (``cw.conv.conv.weight``, ``cw.conv.bn.running_mean``, ...)."""
    nn = torch.nn

    class ConvBN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 1, k, padding=k // 2, bias=False)
            self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01)

    class Gate(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = ConvBN()

        def forward(self, v):
            f = torch.cat([v.max(dim=1, keepdim=True)[0], v.mean(dim=1, keepdim=True)], dim=1)
            return v * torch.sigmoid(self.conv.bn(self.conv.conv(f)))

    class Triplet(nn.Module):
        def __init__(self):
            super().__init__()
            self.cw, self.hc = Gate(), Gate()
            if not no_spatial:
                self.hw = Gate()

        def forward(self, x):
            outs = [self.cw(x.permute(0, 2, 1, 3)).permute(0, 2, 1, 3),
                    self.hc(x.permute(0, 3, 2, 1)).permute(0, 3, 2, 1)]
            if not no_spatial:
                outs.append(self.hw(x))
            return sum(outs) / len(outs)

    return Triplet()


@pytest.mark.parametrize("no_spatial", [False, True])
def test_matches_pytorch_in_both_modes(no_spatial):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    module = randomize(TripletAttention(5, no_spatial, rng=rng, dtype="float64"), rng)
    x = tie_free(rng, (2, 4, 5, 6))
    assert_matches_torch(module, _torch_triplet(torch, 5, no_spatial).double(), x,
                         rng.standard_normal(x.shape))
