"""Independent NumPy references of the blocks (plain loops and einsum, no npattn code), and the
Hypothesis strategy that draws a block and an input for the block tests.

Every reference takes float64 NumPy arrays and a params dict keyed like the blocks, and returns
``(y, map)``; CBAM returns ``(y, (M_c, M_s))``.
"""

from __future__ import annotations

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st

from npattn.blocks import CBAM, ECA, SE, ChannelAttention, SpatialAttention
from npattn.blocks._registry import tie_free


KINDS = ["SE", "ECA", "ChannelAttention", "SpatialAttention", "CBAM"]


def sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def relu(z):
    return np.maximum(z, 0.0)


def ref_se(x, p):
    s = x.mean(axis=(2, 3))                                        # (N, C)
    m = sigmoid(relu(s @ p["excitation.0.weight"].T) @ p["excitation.2.weight"].T)
    return x * m[:, :, None, None], m[:, :, None, None]


def ref_eca(x, p):
    s = x.mean(axis=(2, 3))                                        # (N, C)
    w = p["conv.weight"][0, 0]
    k = len(w)
    n, c = s.shape
    z = np.zeros_like(s)
    for b in range(n):
        for ch in range(c):
            for j in range(k):                                     # tap j reads channel ch + j - (k-1)/2
                src = ch + j - (k - 1) // 2
                if 0 <= src < c:
                    z[b, ch] += w[j] * s[b, src]
    m = sigmoid(z)[:, :, None, None]
    return x * m, m


def ref_channel_attention(x, p):
    w1, w2 = p["mlp.0.weight"][:, :, 0, 0], p["mlp.2.weight"][:, :, 0, 0]
    mlp = lambda d: np.einsum("ch,nh->nc", w2, relu(np.einsum("hc,nc->nh", w1, d)))  # noqa: E731
    m = sigmoid(mlp(x.mean(axis=(2, 3))) + mlp(x.max(axis=(2, 3))))[:, :, None, None]
    return x * m, m


def ref_spatial_attention(x, p):
    w = p["conv.weight"]
    bias = p["conv.bias"][0] if "conv.bias" in p else 0.0
    _, _, kh, kw = w.shape
    f = np.stack([x.mean(axis=1), x.max(axis=1)], axis=1)          # (N, 2, H, W)
    n, _, h, wd = f.shape
    fp = np.zeros((n, 2, h + kh - 1, wd + kw - 1))
    fp[:, :, kh // 2:kh // 2 + h, kw // 2:kw // 2 + wd] = f
    z = np.full((n, 1, h, wd), bias, dtype=float)
    for b in range(n):
        for i in range(h):
            for j in range(wd):
                z[b, 0, i, j] += np.sum(w[0] * fp[b, :, i:i + kh, j:j + kw])
    m = sigmoid(z)
    return x * m, m


def ref_cbam(x, p):
    sub = lambda pre: {k[len(pre):]: v for k, v in p.items() if k.startswith(pre)}  # noqa: E731
    y1, mc = ref_channel_attention(x, sub("ca."))
    y, ms = ref_spatial_attention(y1, sub("sa."))
    return y, (mc, ms)


REFERENCES = {"SE": ref_se, "ECA": ref_eca, "ChannelAttention": ref_channel_attention,
              "SpatialAttention": ref_spatial_attention, "CBAM": ref_cbam}


def build(kind, channels, reduction=2, kernel_size=3, bias=False, rng=0, dtype="float64"):
    """One block of ``kind`` at the given hyperparameters."""
    if kind == "SE":
        return SE(channels, reduction, rng=rng, dtype=dtype)
    if kind == "ECA":
        return ECA(channels, kernel_size=kernel_size, rng=rng, dtype=dtype)
    if kind == "ChannelAttention":
        return ChannelAttention(channels, reduction, rng=rng, dtype=dtype)
    if kind == "SpatialAttention":
        return SpatialAttention(kernel_size, bias=bias, rng=rng, dtype=dtype)
    return CBAM(channels, reduction, kernel_size, rng=rng, dtype=dtype)


def host_params(module):
    """The module's params as float64 NumPy arrays."""
    from npattn.backend import to_numpy
    return {k: np.asarray(to_numpy(v), dtype=np.float64) for k, v in module.params.items()}


@st.composite
def block_cases(draw, kind):
    """(module, x) with small Hypothesis-drawn sizes: batch 1-2, channels 1-5 (often below the
    reduction), H and W 1-3 (1x1 included), reduction 1-8, odd kernels 1-5.  ``x`` is tie-free.

    Draws whose ReLU pre-activations or CBAM's channel max come within 1e-3 of a kink or a tie
    are rejected by the test (see :func:`kink_margin`).
    """
    channels = draw(st.integers(1, 5))
    module = build(kind, channels, reduction=draw(st.integers(1, 8)),
                   kernel_size=draw(st.sampled_from([1, 3, 5])), bias=draw(st.booleans()),
                   rng=draw(st.integers(0, 2**32 - 1)))
    shape = (draw(st.integers(1, 2)), channels, draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    x = tie_free(np.random.default_rng(draw(st.integers(0, 2**32 - 1))), shape)
    return module, x


def kink_margin(kind, module, x):
    """How far the draw is from a non-differentiable point: the smallest |ReLU pre-activation|
    of the MLPs and the smallest gap between the two largest channel values fed to a channel
    max (inf where the block has neither)."""
    p = host_params(module)
    margins = [np.inf]
    pre = "ca." if kind == "CBAM" else ""
    if kind == "SE":
        margins.append(np.abs(x.mean(axis=(2, 3)) @ p["excitation.0.weight"].T).min())
    if kind in ("ChannelAttention", "CBAM"):
        w1 = p[pre + "mlp.0.weight"][:, :, 0, 0]
        for d in (x.mean(axis=(2, 3)), x.max(axis=(2, 3))):
            margins.append(np.abs(d @ w1.T).min())
    if kind == "CBAM":
        y1, _ = ref_channel_attention(x, {k[3:]: v for k, v in p.items() if k.startswith("ca.")})
        if y1.shape[1] > 1:
            top2 = np.sort(y1, axis=1)[:, -2:]
            margins.append((top2[:, 1] - top2[:, 0]).min())
    return float(min(margins))
