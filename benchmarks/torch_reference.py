"""PyTorch twins of npattn's blocks, written the plain way a PyTorch user would, for timing only.

Imported only when PyTorch is installed; npattn itself never needs it.  Parameter names and
shapes follow npattn's (which follow the common PyTorch implementations), so a state dict can
travel between the two.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


def hidden(channels: int, reduction: int) -> int:
    return max(1, channels // reduction)


class SE(nn.Module):
    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        h = hidden(channels, reduction)
        self.excitation = nn.Sequential(nn.Linear(channels, h, bias=False), nn.ReLU(),
                                        nn.Linear(h, channels, bias=False))

    def forward(self, x):
        s = x.mean(dim=(2, 3))
        return x * torch.sigmoid(self.excitation(s))[:, :, None, None]


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    k = int(abs((math.log2(channels) + b) / gamma))
    return k if k % 2 else k + 1


class ECA(nn.Module):
    def __init__(self, channels: int, gamma: int = 2, b: int = 1):
        super().__init__()
        k = eca_kernel_size(channels, gamma, b)
        self.conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)

    def forward(self, x):
        s = x.mean(dim=(2, 3))[:, None, :]
        return x * torch.sigmoid(self.conv(s))[:, 0, :, None, None]


class ChannelAttention(nn.Module):
    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        h = hidden(channels, reduction)
        self.mlp = nn.Sequential(nn.Conv2d(channels, h, 1, bias=False), nn.ReLU(),
                                 nn.Conv2d(h, channels, 1, bias=False))

    def forward(self, x):
        avg = self.mlp(F.adaptive_avg_pool2d(x, 1))
        mx = self.mlp(F.adaptive_max_pool2d(x, 1))
        return x * torch.sigmoid(avg + mx)


class SpatialAttention(nn.Module):
    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x):
        d = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(d))


class CBAM(nn.Module):
    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7):
        super().__init__()
        self.ca = ChannelAttention(channels, reduction)
        self.sa = SpatialAttention(kernel_size)

    def forward(self, x):
        return self.sa(self.ca(x))


class NonLocal(nn.Module):
    """Embedded Gaussian non-local block, no batch norm, no sub-sampling (as npattn's)."""

    def __init__(self, channels: int, inter_channels: int | None = None):
        super().__init__()
        c = inter_channels or max(1, channels // 2)
        self.theta = nn.Conv2d(channels, c, 1)
        self.phi = nn.Conv2d(channels, c, 1)
        self.g = nn.Conv2d(channels, c, 1)
        self.out = nn.Conv2d(c, channels, 1)

    def forward(self, x):
        n, _, h, w = x.shape
        t = self.theta(x).flatten(2).transpose(1, 2)   # (N, HW, c)
        p = self.phi(x).flatten(2)                      # (N, c, HW)
        g = self.g(x).flatten(2).transpose(1, 2)       # (N, HW, c)
        a = torch.softmax(t @ p, dim=-1)                # (N, HW, HW)
        y = (a @ g).transpose(1, 2).reshape(n, -1, h, w)
        return x + self.out(y)



# ----------------------------------------------- issue 7: context, coordinate, kernel, pyramid

class GlobalContext(nn.Module):
    """GCNet's context block: attention pooling, a bottleneck with layer norm, added everywhere."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        planes = hidden(channels, reduction)
        self.conv_mask = nn.Conv2d(channels, 1, 1)
        self.channel_add_conv = nn.Sequential(nn.Conv2d(channels, planes, 1),
                                              nn.LayerNorm([planes, 1, 1]), nn.ReLU(),
                                              nn.Conv2d(planes, channels, 1))

    def forward(self, x):
        n, c, h, w = x.shape
        a = self.conv_mask(x).view(n, 1, h * w).softmax(dim=2)               # (N, 1, HW)
        context = torch.bmm(x.view(n, c, h * w), a.transpose(1, 2)).view(n, c, 1, 1)
        return x + self.channel_add_conv(context)


class CoordAttention(nn.Module):
    """Hou et al.'s CoordAtt(C, C, reduction), h-swish as x * relu6(x + 3) / 6."""

    def __init__(self, channels: int, reduction: int = 32):
        super().__init__()
        mip = max(8, channels // reduction)
        self.conv1 = nn.Conv2d(channels, mip, 1)
        self.bn1 = nn.BatchNorm2d(mip)
        self.conv_h = nn.Conv2d(mip, channels, 1)
        self.conv_w = nn.Conv2d(mip, channels, 1)

    def forward(self, x):
        h = x.shape[2]
        x_h = x.mean(dim=3, keepdim=True)                                     # (N, C, H, 1)
        x_w = x.mean(dim=2, keepdim=True).permute(0, 1, 3, 2)                 # (N, C, W, 1)
        u = F.hardswish(self.bn1(self.conv1(torch.cat([x_h, x_w], dim=2))))
        u_h, u_w = u[:, :, :h], u[:, :, h:].permute(0, 1, 3, 2)
        return x * self.conv_w(u_w).sigmoid() * self.conv_h(u_h).sigmoid()


class SelectiveKernel(nn.Module):
    """An SK unit: dilated 3x3 branches with batch norm, a bias-free fc with batch norm, biased fcs."""

    def __init__(self, channels: int, kernels=(3, 5), reduction: int = 16, groups: int = 1,
                 L: int = 32):
        super().__init__()
        d = max(channels // reduction, L)
        self.convs = nn.ModuleList(nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=(k - 1) // 2, dilation=(k - 1) // 2,
                      groups=groups, bias=False), nn.BatchNorm2d(channels), nn.ReLU())
            for k in kernels)
        self.fc = nn.Sequential(nn.Conv2d(channels, d, 1, bias=False), nn.BatchNorm2d(d), nn.ReLU())
        self.fcs = nn.ModuleList(nn.Conv2d(d, channels, 1) for _ in kernels)

    def forward(self, x):
        u = torch.stack([conv(x) for conv in self.convs], dim=1)             # (N, M, C, H, W)
        z = self.fc(u.sum(dim=1).mean(dim=(2, 3), keepdim=True))
        a = torch.stack([fc(z) for fc in self.fcs], dim=1).softmax(dim=1)
        return (a * u).sum(dim=1)


class PyramidSpatialAttention(nn.Module):
    """CBAM's [mean; max] descriptor, average-pooled at each scale, upsampled, one conv, sigmoid."""

    def __init__(self, kernel_size: int = 7, scales=(1, 2, 4)):
        super().__init__()
        self.scales = scales
        self.conv = nn.Conv2d(2 * len(scales), 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x):
        h, w = x.shape[2:]
        f = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        levels = [f if s == 1 else
                  F.interpolate(F.adaptive_avg_pool2d(f, (max(1, h // s), max(1, w // s))),
                                size=(h, w), mode="bilinear", align_corners=False)
                  for s in self.scales]
        return x * torch.sigmoid(self.conv(torch.cat(levels, dim=1)))


class SimAM(nn.Module):
    def __init__(self, lambda_: float = 1e-4):
        super().__init__()
        self.lambda_ = lambda_

    def forward(self, x):
        n = x.shape[2] * x.shape[3] - 1
        d = (x - x.mean(dim=(2, 3), keepdim=True)) ** 2
        return x * torch.sigmoid(d / (4 * (d.sum(dim=(2, 3), keepdim=True) / n + self.lambda_)) + 0.5)


class BAM(nn.Module):
    """The authors' module layout (gate_c, gate_s), with the paper's sum of the two maps."""

    def __init__(self, channels: int, reduction: int = 16, dilation: int = 4):
        super().__init__()
        c, h = channels, hidden(channels, reduction)
        self.channel_att, self.spatial_att = nn.Module(), nn.Module()
        self.channel_att.gate_c = nn.Sequential(OrderedDict([
            ("flatten", nn.Flatten()), ("gate_c_fc_0", nn.Linear(c, h)),
            ("gate_c_bn_1", nn.BatchNorm1d(h)), ("gate_c_relu_1", nn.ReLU()),
            ("gate_c_fc_final", nn.Linear(h, c))]))
        layers = [("gate_s_conv_reduce0", nn.Conv2d(c, h, 1)),
                  ("gate_s_bn_reduce0", nn.BatchNorm2d(h)), ("gate_s_relu_reduce0", nn.ReLU())]
        for i in range(2):
            layers += [(f"gate_s_conv_di_{i}", nn.Conv2d(h, h, 3, padding=dilation, dilation=dilation)),
                       (f"gate_s_bn_di_{i}", nn.BatchNorm2d(h)), (f"gate_s_relu_di_{i}", nn.ReLU())]
        layers.append(("gate_s_conv_final", nn.Conv2d(h, 1, 1)))
        self.spatial_att.gate_s = nn.Sequential(OrderedDict(layers))

    def forward(self, x):
        m_c = self.channel_att.gate_c(x.mean(dim=(2, 3), keepdim=True))[:, :, None, None]
        m_s = self.spatial_att.gate_s(x)
        return x * (1 + torch.sigmoid(m_c + m_s))


class ZGate(nn.Module):
    """One branch of triplet attention: Z-pool ([max; mean] over axis 1), conv, batch norm, sigmoid."""

    def __init__(self, kernel_size: int):
        super().__init__()
        self.conv = nn.Module()   # the reference code's names: <branch>.conv.conv, <branch>.conv.bn
        self.conv.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.conv.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01)

    def forward(self, v):
        f = torch.cat([v.amax(dim=1, keepdim=True), v.mean(dim=1, keepdim=True)], dim=1)
        return v * torch.sigmoid(self.conv.bn(self.conv.conv(f)))


class TripletAttention(nn.Module):
    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.cw, self.hc, self.hw = ZGate(kernel_size), ZGate(kernel_size), ZGate(kernel_size)

    def forward(self, x):
        return (self.cw(x.permute(0, 2, 1, 3)).permute(0, 2, 1, 3)
                + self.hc(x.permute(0, 3, 2, 1)).permute(0, 3, 2, 1) + self.hw(x)) / 3


BLOCKS = {
    "SE": lambda c: SE(c),
    "ECA": lambda c: ECA(c),
    "ChannelAttention": lambda c: ChannelAttention(c),
    "SpatialAttention": lambda c: SpatialAttention(7),
    "CBAM": lambda c: CBAM(c),
    "NonLocal": lambda c: NonLocal(c),
    "GlobalContext": lambda c: GlobalContext(c),
    "CoordAttention": lambda c: CoordAttention(c),
    "SelectiveKernel": lambda c: SelectiveKernel(c),
    "PyramidSpatialAttention": lambda c: PyramidSpatialAttention(7),
    "SimAM": lambda c: SimAM(),
    "BAM": lambda c: BAM(c),
    "TripletAttention": lambda c: TripletAttention(7),
}
