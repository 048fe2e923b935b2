"""PyTorch twins of npattn's blocks, written the plain way a PyTorch user would, for timing only.

Imported only when PyTorch is installed; npattn itself never needs it.  Parameter names and
shapes follow npattn's (which follow the common PyTorch implementations), so a state dict can
travel between the two.
"""

from __future__ import annotations

import math

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


BLOCKS = {
    "SE": lambda c: SE(c),
    "ECA": lambda c: ECA(c),
    "ChannelAttention": lambda c: ChannelAttention(c),
    "SpatialAttention": lambda c: SpatialAttention(7),
    "CBAM": lambda c: CBAM(c),
    "NonLocal": lambda c: NonLocal(c),
}
