"""Independent NumPy references of GlobalContext, CoordAttention, SelectiveKernel and BAM (einsum,
shifted slices and plain loops; no npattn code), the Hypothesis strategies that draw them, and
helpers for their batch norms.

Every reference takes float64 NumPy arrays: ``x``, the params and the buffers (running
statistics; ``None`` in training mode without tracking) keyed like the blocks, and returns a
:class:`Ref`: the output, the attention map, the running statistics after the call (``None``
when none were given) and ``margin``, the smallest distance of any ReLU or h-swish input from
its kinks (0 for ReLU, -3 and 3 for h-swish), for rejecting draws too close to one.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from blocks_reference import relu, sigmoid
from hypothesis import strategies as st

from npattn.backend import to_numpy
from npattn.blocks import BAM, CoordAttention, GlobalContext, SelectiveKernel

EPS = 1e-5
MOMENTUM = 0.1
NORM_KINDS = ["CoordAttention", "SelectiveKernel", "BAM"]
KINDS = ["GlobalContext", *NORM_KINDS]
#: The pure functions' names, as error messages give them.
OPS = {"GlobalContext": "global_context", "CoordAttention": "coord_attention",
       "SelectiveKernel": "selective_kernel", "BAM": "bam"}


class Ref(NamedTuple):
    y: np.ndarray
    map: np.ndarray
    buffers: dict[str, np.ndarray] | None
    margin: float


class Tracker:
    """Runs a reference's batch norms and ReLUs, recording the new running statistics and the
    smallest distance to a kink."""

    def __init__(self, params, buffers, training):
        self.p, self.b, self.training = params, buffers, training
        self.new = None if buffers is None else {}
        self.margin = np.inf

    def bn(self, name, z):
        """Batch norm ``name`` of ``z`` over every axis but axis 1."""
        axes = tuple(i for i in range(z.ndim) if i != 1)
        shape = [1] * z.ndim
        shape[1] = -1
        if self.training:
            mean, var = z.mean(axis=axes), z.var(axis=axes)
            if self.b is not None:
                count = z.size // z.shape[1]
                self.new[f"{name}.running_mean"] = ((1 - MOMENTUM) * self.b[f"{name}.running_mean"]
                                                    + MOMENTUM * mean)
                self.new[f"{name}.running_var"] = ((1 - MOMENTUM) * self.b[f"{name}.running_var"]
                                                   + MOMENTUM * var * count / (count - 1))
        else:
            mean, var = self.b[f"{name}.running_mean"], self.b[f"{name}.running_var"]
            self.new[f"{name}.running_mean"] = mean
            self.new[f"{name}.running_var"] = var
        zhat = (z - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + EPS)
        return zhat * self.p[f"{name}.weight"].reshape(shape) + self.p[f"{name}.bias"].reshape(shape)

    def relu(self, z):
        self.margin = min(self.margin, float(np.abs(z).min()))
        return relu(z)

    def hswish(self, z):
        self.margin = min(self.margin, float(np.abs(np.abs(z) - 3.0).min()))
        return z * np.clip(z + 3.0, 0.0, 6.0) / 6.0


def conv_same(x, w, bias=None, dilation=1, groups=1):
    """A stride-1 convolution with padding ``dilation * (k - 1) / 2`` (odd k), by shifted
    slices of the zero-padded input, group by group."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    ph, pw = dilation * (kh - 1) // 2, dilation * (kw - 1) // 2
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    og = o // groups
    out = np.zeros((n, o, h, wd)) if bias is None else np.broadcast_to(bias[None, :, None, None],
                                                                       (n, o, h, wd)).copy()
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i * dilation:i * dilation + h, j * dilation:j * dilation + wd]
            for g in range(groups):
                out[:, g * og:(g + 1) * og] += np.einsum(
                    "oc,nchw->nohw", w[g * og:(g + 1) * og, :, i, j], patch[:, g * cg:(g + 1) * cg])
    return out


# ------------------------------------------------------------------------------------ references

def ref_global_context(x, p, buffers=None, training=True):
    n, c, h, w = x.shape
    t = Tracker(p, buffers, training)
    logits = np.einsum("c,nchw->nhw", p["conv_mask.weight"][0, :, 0, 0], x) + p["conv_mask.bias"][0]
    e = np.exp(logits - logits.max(axis=(1, 2), keepdims=True))
    a = e / e.sum(axis=(1, 2), keepdims=True)                      # softmax over the positions
    ctx = np.einsum("nhw,nchw->nc", a, x)
    t0 = ctx @ p["channel_add_conv.0.weight"][:, :, 0, 0].T + p["channel_add_conv.0.bias"]
    mu, var = t0.mean(axis=1, keepdims=True), t0.var(axis=1, keepdims=True)
    t1 = ((t0 - mu) / np.sqrt(var + EPS) * p["channel_add_conv.1.weight"][:, 0, 0]
          + p["channel_add_conv.1.bias"][:, 0, 0])
    t3 = t.relu(t1) @ p["channel_add_conv.3.weight"][:, :, 0, 0].T + p["channel_add_conv.3.bias"]
    return Ref(x + t3[:, :, None, None], a[:, None], None, t.margin)


def ref_coord_attention(x, p, buffers=None, training=True):
    n, c, h, w = x.shape
    t = Tracker(p, buffers, training)
    f = np.concatenate([x.mean(axis=3), x.mean(axis=2)], axis=2)   # (N, C, H + W)
    z = np.einsum("mc,ncl->nml", p["conv1.weight"][:, :, 0, 0], f) + p["conv1.bias"][None, :, None]
    u = t.hswish(t.bn("bn1", z))
    a_h = sigmoid(np.einsum("cm,nml->ncl", p["conv_h.weight"][:, :, 0, 0], u[:, :, :h])
                  + p["conv_h.bias"][None, :, None])
    a_w = sigmoid(np.einsum("cm,nml->ncl", p["conv_w.weight"][:, :, 0, 0], u[:, :, h:])
                  + p["conv_w.bias"][None, :, None])
    m = a_h[:, :, :, None] * a_w[:, :, None, :]
    return Ref(x * m, m, t.new, t.margin)


def ref_selective_kernel(x, p, buffers=None, training=True, kernels=(3, 5), groups=1):
    t = Tracker(p, buffers, training)
    us = [t.relu(t.bn(f"convs.{i}.1", conv_same(x, p[f"convs.{i}.0.weight"], dilation=(k - 1) // 2,
                                                 groups=groups)))
          for i, k in enumerate(kernels)]
    s = sum(us).mean(axis=(2, 3))                                   # (N, C)
    z = t.relu(t.bn("fc.1", s @ p["fc.0.weight"][:, :, 0, 0].T))   # (N, d)
    logits = np.stack([z @ p[f"fcs.{i}.weight"][:, :, 0, 0].T + p[f"fcs.{i}.bias"]
                       for i in range(len(kernels))], axis=1)       # (N, M, C)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    a = e / e.sum(axis=1, keepdims=True)
    v = sum(a[:, i, :, None, None] * u for i, u in enumerate(us))
    return Ref(v, a[..., None, None], t.new, t.margin)


def ref_bam(x, p, buffers=None, training=True, dilation=4):
    t = Tracker(p, buffers, training)
    pc, ps = "channel_att.gate_c.", "spatial_att.gate_s."
    s = x.mean(axis=(2, 3))
    z = s @ p[pc + "gate_c_fc_0.weight"].T + p[pc + "gate_c_fc_0.bias"]
    m_c = (t.relu(t.bn(pc + "gate_c_bn_1", z)) @ p[pc + "gate_c_fc_final.weight"].T
           + p[pc + "gate_c_fc_final.bias"])
    r = x
    for stage, d in (("reduce0", 1), ("di_0", dilation), ("di_1", dilation)):
        r = conv_same(r, p[f"{ps}gate_s_conv_{stage}.weight"], p[f"{ps}gate_s_conv_{stage}.bias"], d)
        r = t.relu(t.bn(f"{ps}gate_s_bn_{stage}", r))
    m_s = conv_same(r, p[ps + "gate_s_conv_final.weight"], p[ps + "gate_s_conv_final.bias"])
    m = sigmoid(m_c[:, :, None, None] + m_s)
    return Ref(x * (1.0 + m), m, t.new, t.margin)


REFERENCES = {"GlobalContext": ref_global_context, "CoordAttention": ref_coord_attention,
              "SelectiveKernel": ref_selective_kernel, "BAM": ref_bam}


def hyper(module):
    """The block's hyperparameters that its pure forward (and its reference) takes as keywords."""
    kind = type(module).__name__
    if kind == "SelectiveKernel":
        return {"kernels": module.kernels, "groups": module.groups}
    return {"dilation": module.dilation} if kind == "BAM" else {}


def reference(module, x):
    """The reference of ``module`` on ``x`` in the module's mode, with its params and buffers."""
    kind = type(module).__name__
    buffers = host(module.buffers) if kind in NORM_KINDS else None
    return REFERENCES[kind](x, host(module.params), buffers, module.training, **hyper(module))


# --------------------------------------------------------------------------------------- helpers

def host(arrays: Any) -> dict[str, np.ndarray]:
    """A mapping of arrays as float64 NumPy arrays."""
    return {k: np.asarray(to_numpy(v), dtype=np.float64) for k, v in arrays.items()}


def build(kind, channels, rng, dtype="float64", **kwargs):
    """A small instance: reduction 1 (bottleneck = channels), SK's least width L = 2, BAM's
    dilation 2 unless given."""
    if kind == "GlobalContext":
        return GlobalContext(channels, kwargs.get("reduction", 1), rng=rng, dtype=dtype)
    if kind == "CoordAttention":
        return CoordAttention(channels, kwargs.get("reduction", 1), rng=rng, dtype=dtype)
    if kind == "SelectiveKernel":
        return SelectiveKernel(channels, kwargs.get("kernels", (3, 5)), kwargs.get("reduction", 1),
                               kwargs.get("groups", 1), kwargs.get("L", 2), rng=rng, dtype=dtype)
    return BAM(channels, kwargs.get("reduction", 1), kwargs.get("dilation", 2), rng=rng, dtype=dtype)


def randomize(module, rng):
    """Move every param off its initial value (the norms' weights off 1, biases off 0) and give
    the running statistics random values (variances in [0.5, 2])."""
    for name, p in module.params.items():
        module.params[name] = p + 0.4 * rng.standard_normal(p.shape).astype(p.dtype)
    for name, b in getattr(module, "buffers", {}).items():
        if name.endswith("running_var"):
            module.buffers[name] = rng.uniform(0.5, 2.0, b.shape).astype(b.dtype)
        else:
            module.buffers[name] = 0.5 * rng.standard_normal(b.shape).astype(b.dtype)
    return module


@st.composite
def cases(draw, kind):
    """(module, x): batch 1-2 (2 where a batch norm sees one value per sample: SK's fuse layer
    and BAM's channel branch), channels 1-3, H and W 1-3, hyperparameters drawn, every param
    and running statistic randomised; the module in training mode or (for the batch-norm
    blocks, one draw in three) evaluation mode."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    channels = draw(st.integers(1, 3))
    kwargs = {"reduction": draw(st.integers(1, 4))}
    if kind == "SelectiveKernel":
        kwargs["kernels"] = draw(st.sampled_from([(3,), (3, 5), (5, 3, 7)]))
        kwargs["groups"] = draw(st.sampled_from([g for g in (1, 2, 3) if channels % g == 0]))
        kwargs["L"] = draw(st.integers(1, 3))
    if kind == "BAM":
        kwargs["dilation"] = draw(st.integers(1, 3))
    module = randomize(build(kind, channels, rng, **kwargs), rng)
    if kind in NORM_KINDS and draw(st.integers(0, 2)) == 0:
        module.eval()
    least = 2 if kind in ("SelectiveKernel", "BAM") and module.training else 1
    shape = (draw(st.integers(least, 2)), channels, draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    return module, 1.5 * rng.standard_normal(shape)


def assert_matches_torch(module, torch_module, x, dy, modes=(True, True, False)):
    """Load ``module``'s (randomised) state into the double-precision PyTorch module, load that
    module's ``state_dict`` (with its ``num_batches_tracked`` counters) into a copy of ``module``,
    and compare, for each mode in turn (two training steps, then evaluation): the output, dx,
    every parameter's gradient and the running statistics after the call."""
    import copy

    import torch
    torch_module.load_state_dict({k: torch.tensor(v) for k, v in module.state_dict().items()})
    ours = copy.deepcopy(module)
    ours.load_state_dict({k: v.detach().numpy() for k, v in torch_module.state_dict().items()})
    for training in modes:
        ours.train(training), torch_module.train(training)
        ours.zero_grad(), torch_module.zero_grad()
        tx = torch.tensor(x, requires_grad=True)
        ty = torch_module(tx)
        ty.backward(torch.tensor(dy))
        np.testing.assert_allclose(ours.forward(x), ty.detach().numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(ours.backward(dy), tx.grad.numpy(), rtol=1e-9, atol=1e-11)
        for name, p in torch_module.named_parameters():
            np.testing.assert_allclose(ours.grads[name], p.grad.numpy(), rtol=1e-9, atol=1e-11,
                                       err_msg=name)
        for name, b in torch_module.named_buffers():
            if not name.endswith("num_batches_tracked"):
                np.testing.assert_allclose(ours.buffers[name], b.numpy(), rtol=1e-12, err_msg=name)
