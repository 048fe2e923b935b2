"""SelectiveKernel: the selection weights sum to one across the branches, two identical branches
are one branch, a kernel of 5 is a 3x3 dilated by 2 (its taps, and nothing else), groups keep
channels apart, the names and shapes of the SKConv reference, bad input, and PyTorch in training
and evaluation modes.  (Forward against the NumPy reference and finite differences:
test_context_blocks.py; running statistics: test_batch_norm_blocks.py.)"""

from __future__ import annotations

import re

import numpy as np
import pytest
from context_blocks_reference import assert_matches_torch, build, randomize
from hypothesis import given
from hypothesis import strategies as st

from npattn.blocks import SelectiveKernel, selective_kernel_forward


def made(channels, seed, **kwargs):
    rng = np.random.default_rng(seed)
    return randomize(build("SelectiveKernel", channels, rng, **kwargs), rng)


@given(seed=st.integers(0, 2**32 - 1), kernels=st.sampled_from([(3,), (3, 5), (7, 5, 3)]),
       hw=st.tuples(st.integers(1, 3), st.integers(1, 3)))
def test_selection_weights_sum_to_one_across_branches(backend, seed, kernels, hw):
    module = made(3, seed, kernels=kernels).to(backend.xp)
    x = np.random.default_rng(seed).standard_normal((2, 3, *hw))
    a = backend.to_numpy(module.attention_map(backend.asarray(x)))
    assert a.shape == (2, len(kernels), 3, 1, 1) and np.all(a > 0)
    np.testing.assert_allclose(a.sum(axis=1), 1.0, rtol=1e-14)


def test_two_identical_branches_are_one_branch(backend):
    one = made(4, 0, kernels=(3,))
    two = SelectiveKernel(4, (3, 3), reduction=1, L=2, dtype="float64")
    for name in two.params:                                # branch 1 a copy of branch 0
        two.params[name] = one.params[re.sub(r"^(convs|fcs)\.1\.", r"\1.0.", name)]
    x = backend.asarray(np.random.default_rng(1).standard_normal((2, 4, 3, 3)))
    one.to(backend.xp), two.to(backend.xp)
    np.testing.assert_allclose(backend.to_numpy(two.attention_map(x)), 0.5, rtol=1e-15)
    np.testing.assert_allclose(backend.to_numpy(two.forward(x)), backend.to_numpy(one.forward(x)),
                               rtol=1e-14, atol=1e-15)


def single_branch_difference(backend, kernel, groups, where, shape=(1, 2, 7, 7)):
    """V(x + e) - V(x) for a one-branch block in evaluation mode (an affine batch norm) whose
    bias keeps the ReLU open, with e a unit bump at ``where``."""
    module = made(shape[1], 2, kernels=(kernel,), groups=groups).eval()
    module.params["convs.0.1.bias"] = module.params["convs.0.1.bias"] + 50.0   # ReLU open
    module.to(backend.xp)
    x = np.random.default_rng(3).standard_normal(shape)
    bumped = x.copy()
    bumped[where] += 1.0
    return (backend.to_numpy(module.forward(backend.asarray(bumped)))
            - backend.to_numpy(module.forward(backend.asarray(x))))


@pytest.mark.parametrize("kernel", [3, 5, 7])
def test_a_kernel_is_a_dilated_3x3(backend, kernel):
    d = (kernel - 1) // 2
    diff = single_branch_difference(backend, kernel, 1, (0, 0, 3, 3))
    reached = np.abs(diff).max(axis=(0, 1)) > 1e-12
    taps = np.zeros((7, 7), dtype=bool)
    for i in (-d, 0, d):
        for j in (-d, 0, d):
            taps[3 + i, 3 + j] = True
    np.testing.assert_array_equal(reached, taps)


def test_groups_keep_channels_apart(backend):
    diff = single_branch_difference(backend, 3, 2, (0, 1, 3, 3))       # groups = channels = 2
    assert np.abs(diff[:, 1]).max() > 1e-3 and np.abs(diff[:, 0]).max() == 0.0


@pytest.mark.parametrize("channels, reduction, L, d",
                         [(64, 16, 32, 32), (256, 4, 32, 64), (6, 2, 1, 3)])
def test_names_and_shapes_are_the_references(channels, reduction, L, d):
    module = SelectiveKernel(channels, (3, 5, 7), reduction, groups=2, L=L, rng=0)
    c = channels
    want = {"fc.0.weight": (d, c, 1, 1), "fc.1.weight": (d,), "fc.1.bias": (d,)}
    for i in range(3):
        want.update({f"convs.{i}.0.weight": (c, c // 2, 3, 3), f"convs.{i}.1.weight": (c,),
                     f"convs.{i}.1.bias": (c,), f"fcs.{i}.weight": (c, d, 1, 1),
                     f"fcs.{i}.bias": (c,)})
    assert {k: tuple(v.shape) for k, v in module.params.items()} == want
    norms = ("convs.0.1", "convs.1.1", "convs.2.1", "fc.1")
    assert set(module.buffers) == {f"{b}.{s}" for b in norms for s in ("running_mean", "running_var")}
    assert repr(module) == (f"SelectiveKernel(channels={c}, kernels=(3, 5, 7), "
                            f"reduction={reduction}, groups=2, L={L})")


@pytest.mark.parametrize("kwargs, cls, words", [
    ({"kernels": (3, 4)}, ValueError, "argument 'kernels' expected an odd int"),
    ({"kernels": (1, 3)}, ValueError, r"argument 'kernels' expected odd ints >= 3 \(a dilated 3x3"),
    ({"kernels": ()}, TypeError, "argument 'kernels' expected a non-empty tuple"),
    ({"kernels": 5}, TypeError, "argument 'kernels' expected a non-empty tuple"),
    ({"groups": 3}, ValueError, "argument 'groups' expected a divisor of channels=4, got 3"),
    ({"L": 0}, ValueError, "argument 'L' expected an int >= 1"),
])
def test_bad_constructor_arguments(kwargs, cls, words):
    with pytest.raises(cls, match=f"SelectiveKernel: {words}"):
        SelectiveKernel(4, **kwargs)


def test_bad_input(backend):
    module = made(4, 0).to(backend.xp)
    with pytest.raises(ValueError, match=r"SelectiveKernel: argument 'x' expected 4 channels"):
        module.forward(backend.asarray(np.zeros((2, 3, 2, 2))))
    x = backend.asarray(np.zeros((1, 4, 2, 2)))
    with pytest.raises(ValueError, match=r"selective_kernel: argument 'x' expected at least 2 "
                                         r"samples in training mode"):
        module.forward(x)
    module.eval().forward(x)                               # one sample is fine in eval mode
    params = dict(module.params)
    with pytest.raises(ValueError, match=r"selective_kernel: argument 'params' expected the keys .*"
                                         r"missing \['convs.2.0.weight'"):
        selective_kernel_forward(x, params, (3, 5, 7), training=False, buffers=dict(module.buffers))
    with pytest.raises(ValueError, match=r"selective_kernel: argument 'groups' expected a divisor"):
        selective_kernel_forward(x, params, groups=3)


def test_matches_pytorch_after_loading_its_state_dict():
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class TorchSKConv(nn.Module):
        """An SK unit with dilated 3x3 branches, a bias-free fc with batch norm, biased fcs."""

        def __init__(self, c, kernels, groups, d):
            super().__init__()
            self.convs = nn.ModuleList(nn.Sequential(
                nn.Conv2d(c, c, 3, padding=(k - 1) // 2, dilation=(k - 1) // 2, groups=groups,
                          bias=False), nn.BatchNorm2d(c), nn.ReLU()) for k in kernels)
            self.fc = nn.Sequential(nn.Conv2d(c, d, 1, bias=False), nn.BatchNorm2d(d), nn.ReLU())
            self.fcs = nn.ModuleList(nn.Conv2d(d, c, 1) for _ in kernels)

        def forward(self, x):
            u = torch.stack([conv(x) for conv in self.convs], dim=1)       # (N, M, C, H, W)
            z = self.fc(u.sum(dim=1).mean(dim=(2, 3), keepdim=True))
            a = torch.stack([fc(z) for fc in self.fcs], dim=1).softmax(dim=1)
            return (a * u).sum(dim=1)

    rng = np.random.default_rng(2)
    module = made(4, 3, kernels=(3, 5), groups=2, reduction=2, L=3)
    x, dy = rng.standard_normal((3, 4, 4, 3)), rng.standard_normal((3, 4, 4, 3))
    assert_matches_torch(module, TorchSKConv(4, (3, 5), 2, 3).double(), x, dy)
