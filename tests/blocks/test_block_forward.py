"""Block forwards against independent NumPy references (loops, einsum) and, where installed,
PyTorch; the maps; dtype kept; nothing modified."""

from __future__ import annotations

import numpy as np
import pytest
from blocks_reference import KINDS, REFERENCES, block_cases, build, host_params
from hypothesis import given
from hypothesis import strategies as st

import npattn.blocks as blocks
from npattn.blocks._registry import tie_free

PURE = {"SE": (blocks.se_forward, blocks.se_backward),
        "ECA": (blocks.eca_forward, blocks.eca_backward),
        "ChannelAttention": (blocks.channel_attention_forward, blocks.channel_attention_backward),
        "SpatialAttention": (blocks.spatial_attention_forward, blocks.spatial_attention_backward),
        "CBAM": (blocks.cbam_forward, blocks.cbam_backward)}


def close(a, b, rtol=1e-12, atol=1e-12):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


@pytest.mark.parametrize("kind", KINDS)
@given(data=st.data())
def test_forward_and_map_match_reference(backend, kind, data):
    module, x = data.draw(block_cases(kind))
    y_ref, map_ref = REFERENCES[kind](x, host_params(module))
    module.to(backend.xp)
    xb = backend.asarray(x)
    y = module.forward(xb)
    close(backend.to_numpy(y), y_ref)
    maps = module.attention_map(xb)
    for got, want in zip(maps if kind == "CBAM" else [maps], map_ref if kind == "CBAM" else [map_ref]):
        close(backend.to_numpy(got), want)
        assert np.all((backend.to_numpy(got) >= 0) & (backend.to_numpy(got) <= 1))


@pytest.mark.parametrize("kind", KINDS)
def test_pure_pair_matches_module(backend, kind):
    module = build(kind, 4, reduction=2, kernel_size=3, bias=True, rng=1).to(backend.xp)
    x = backend.asarray(tie_free(np.random.default_rng(0), (2, 4, 3, 5)))
    dy = backend.asarray(np.random.default_rng(1).standard_normal((2, 4, 3, 5)))
    forward, backward = PURE[kind]
    y, cache = forward(x, dict(module.params))
    dx, dparams = backward(dy, cache)
    close(backend.to_numpy(y), backend.to_numpy(module.forward(x)))
    close(backend.to_numpy(dx), backend.to_numpy(module.backward(dy)))
    assert set(dparams) == set(module.params)
    for name, g in dparams.items():
        assert g.shape == module.params[name].shape
        close(backend.to_numpy(g), backend.to_numpy(module.grads[name]))


@pytest.mark.parametrize("kind", KINDS)
def test_attention_map_keeps_no_cache(kind):
    module = build(kind, 3)
    x = tie_free(np.random.default_rng(0), (1, 3, 2, 2))
    module.attention_map(x)
    with pytest.raises(RuntimeError, match="before forward"):
        module.backward(np.ones_like(x))


@pytest.mark.parametrize("kind", KINDS)
def test_float32_stays_float32_and_nothing_is_modified(backend, kind):
    module = build(kind, 4, bias=True, dtype="float32").to(backend.xp)
    x_np = tie_free(np.random.default_rng(0), (2, 4, 3, 3)).astype(np.float32)
    dy_np = np.random.default_rng(1).standard_normal(x_np.shape).astype(np.float32)
    params_before = host_params(module)
    x, dy = backend.asarray(x_np), backend.asarray(dy_np)
    y = module.forward(x)
    dx = module.backward(dy)
    assert y.dtype == backend.dtype("float32") and dx.dtype == backend.dtype("float32")
    assert all(g.dtype == backend.dtype("float32") for g in module.grads.values())
    np.testing.assert_array_equal(backend.to_numpy(x), x_np)
    np.testing.assert_array_equal(backend.to_numpy(dy), dy_np)
    for name, p in host_params(module).items():
        np.testing.assert_array_equal(p, params_before[name])
    y_ref, _ = REFERENCES[kind](x_np.astype(np.float64), params_before)
    close(backend.to_numpy(y), y_ref, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------ against PyTorch

def _torch_blocks(torch):
    """The blocks written the way PyTorch code writes them, with the same parameter names."""
    nn, F = torch.nn, torch.nn.functional

    class TorchSE(nn.Module):
        def __init__(self, c, h):
            super().__init__()
            self.excitation = nn.Sequential(nn.Linear(c, h, bias=False), nn.ReLU(),
                                            nn.Linear(h, c, bias=False), nn.Sigmoid())

        def forward(self, x):
            return x * self.excitation(x.mean((2, 3)))[:, :, None, None]

    class TorchECA(nn.Module):
        def __init__(self, k):
            super().__init__()
            self.conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)

        def forward(self, x):
            s = F.adaptive_avg_pool2d(x, 1).squeeze(-1).transpose(-1, -2)      # (N, 1, C)
            return x * torch.sigmoid(self.conv(s)).transpose(-1, -2).unsqueeze(-1)

    class TorchCA(nn.Module):
        def __init__(self, c, h):
            super().__init__()
            self.mlp = nn.Sequential(nn.Conv2d(c, h, 1, bias=False), nn.ReLU(),
                                     nn.Conv2d(h, c, 1, bias=False))

        def forward(self, x):
            return x * torch.sigmoid(self.mlp(F.adaptive_avg_pool2d(x, 1))
                                     + self.mlp(F.adaptive_max_pool2d(x, 1)))

    class TorchSA(nn.Module):
        def __init__(self, k, bias):
            super().__init__()
            self.conv = nn.Conv2d(2, 1, k, padding=k // 2, bias=bias)

        def forward(self, x):
            f = torch.cat([x.mean(1, keepdim=True), torch.max(x, 1, keepdim=True)[0]], 1)
            return x * torch.sigmoid(self.conv(f))

    class TorchCBAM(nn.Module):
        def __init__(self, c, h, k):
            super().__init__()
            self.ca, self.sa = TorchCA(c, h), TorchSA(k, False)

        def forward(self, x):
            return self.sa(self.ca(x))

    return {"SE": lambda: TorchSE(6, 2), "ECA": lambda: TorchECA(3), "ChannelAttention": lambda: TorchCA(6, 2),
            "SpatialAttention": lambda: TorchSA(5, True), "CBAM": lambda: TorchCBAM(6, 2, 5)}


@pytest.mark.parametrize("kind", KINDS)
def test_matches_pytorch_after_loading_its_state_dict(kind):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    reference = _torch_blocks(torch)[kind]().double()
    module = build(kind, 6, reduction=3, kernel_size=3 if kind == "ECA" else 5, bias=True)
    module.load_state_dict({k: v.detach().numpy() for k, v in reference.state_dict().items()})
    x = tie_free(np.random.default_rng(0), (2, 6, 5, 4))
    dy = np.random.default_rng(1).standard_normal(x.shape)
    tx = torch.tensor(x, requires_grad=True)
    ty = reference(tx)
    ty.backward(torch.tensor(dy))
    close(module.forward(x), ty.detach().numpy())
    close(module.backward(dy), tx.grad.numpy())
    for name, p in reference.named_parameters():
        close(module.grads[name], p.grad.numpy())
