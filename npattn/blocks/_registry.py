"""The registry of blocks: name -> how to build a small float64 instance and an input for it.

``python -m npattn check`` and the parametrised tests iterate :data:`BLOCK_REGISTRY`, so a new
block is covered by adding one entry here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..module import Module
from .bam import BAM
from .cbam import CBAM
from .channel_attention import ChannelAttention
from .coord_attention import CoordAttention
from .eca import ECA
from .global_context import GlobalContext
from .nonlocal_ import NonLocal
from .pyramid_spatial import PyramidSpatialAttention
from .se import SE
from .selective_kernel import SelectiveKernel
from .simam import SimAM
from .spatial_attention import SpatialAttention
from .triplet import TripletAttention
from .deform import DeformConv2d
from .spatial_transformer import IDENTITY_THETA, SpatialTransformer

__all__ = ["BlockSpec", "BLOCK_REGISTRY", "tie_free"]


@dataclass(frozen=True)
class BlockSpec:
    """One registered block.

    Attributes
    ----------
    name : str
        The class name, e.g. ``"CBAM"``.
    make : callable
        ``make(rng) -> Module``: a small float64 instance, initialised from ``rng``.
    example : callable
        ``example(rng) -> numpy.ndarray``: a float64 input for it, with all entries distinct and
        spread apart, so no max (over channels or positions) is near a tie.
    doc : str
        The derivation page under ``docs/``.
    """

    name: str
    make: Callable[[np.random.Generator], Module]
    example: Callable[[np.random.Generator], np.ndarray]
    doc: str


def tie_free(rng: np.random.Generator, shape: tuple[int, ...], spread: float = 2.0) -> np.ndarray:
    """Float64 values in ``[-spread, spread]``, all distinct, at least ``2 spread / (n - 1)`` apart.

    A random permutation of an even grid: every maximum is unique by a margin far above a
    finite-difference step, and none of the values is zero.
    """
    n = math.prod(shape)
    grid = np.linspace(-spread, spread, n) if n > 1 else np.array([spread / 2])
    grid = grid + (grid == 0) * (spread / max(n, 1) / 2)  # no exact zero
    return rng.permutation(grid).reshape(shape)


_SHAPE = (2, 4, 3, 4)


def _spatial_transformer(rng: np.random.Generator) -> SpatialTransformer:
    """A transformer whose sample points sit off pixel lines (a fresh one samples exactly on
    pixel centres, where bilinear sampling has a kink)."""
    m = SpatialTransformer(4, (3, 4), hidden=2, rng=rng, dtype="float64")
    m.params["fc_loc.weight"] = 0.05 * rng.standard_normal(m.params["fc_loc.weight"].shape)
    m.params["fc_loc.bias"] = np.asarray(IDENTITY_THETA) + 0.3 * rng.uniform(-1, 1, 6)
    return m


def _deform_conv(rng: np.random.Generator) -> DeformConv2d:
    """A deformable convolution whose offsets sit off whole pixels (a fresh one has zero offsets,
    exactly on the kink of bilinear sampling)."""
    m = DeformConv2d(4, 4, 3, padding=1, offset_groups=2, rng=rng, dtype="float64")
    shape = m.params["conv_offset.bias"].shape
    m.params["conv_offset.weight"] = 0.02 * rng.standard_normal(m.params["conv_offset.weight"].shape)
    m.params["conv_offset.bias"] = rng.integers(-1, 2, shape) + 0.35 + 0.3 * rng.random(shape)
    return m

BLOCK_REGISTRY: dict[str, BlockSpec] = {
    spec.name: spec for spec in [
        BlockSpec("SE", lambda rng: SE(4, reduction=2, rng=rng, dtype="float64"),
                  lambda rng: tie_free(rng, _SHAPE), "blocks/se.md"),
        BlockSpec("ECA", lambda rng: ECA(4, kernel_size=3, rng=rng, dtype="float64"),
                  lambda rng: tie_free(rng, _SHAPE), "blocks/eca.md"),
        BlockSpec("ChannelAttention", lambda rng: ChannelAttention(4, reduction=2, rng=rng,
                                                                   dtype="float64"),
                  lambda rng: tie_free(rng, _SHAPE), "blocks/channel_attention.md"),
        BlockSpec("SpatialAttention", lambda rng: SpatialAttention(3, bias=True, rng=rng,
                                                                   dtype="float64"),
                  lambda rng: tie_free(rng, _SHAPE), "blocks/spatial_attention.md"),
        BlockSpec("CBAM", lambda rng: CBAM(4, reduction=2, kernel_size=3, rng=rng, dtype="float64"),
                  lambda rng: tie_free(rng, _SHAPE), "blocks/cbam.md"),
        BlockSpec("NonLocal", lambda rng: NonLocal(4, inter_channels=2, rng=rng, dtype="float64"),
                  lambda rng: tie_free(rng, _SHAPE), "blocks/nonlocal.md"),
        BlockSpec("SimAM", lambda rng: SimAM(lambda_=1e-2),
                  lambda rng: tie_free(rng, _SHAPE), "blocks/simam.md"),
        BlockSpec("PyramidSpatialAttention",
                  lambda rng: PyramidSpatialAttention(3, scales=(1, 2, 4), bias=True, rng=rng,
                                                      dtype="float64"),
                  lambda rng: tie_free(rng, _SHAPE), "blocks/pyramid_spatial.md"),
        BlockSpec("GlobalContext", lambda rng: GlobalContext(4, reduction=2, rng=rng, dtype="float64"),
                  lambda rng: tie_free(rng, _SHAPE), "blocks/global_context.md"),
        # Two channels: the batch-norm blocks have many params per channel (mip >= 8, 3x3 convs).
        BlockSpec("CoordAttention", lambda rng: CoordAttention(2, rng=rng, dtype="float64"),
                  lambda rng: tie_free(rng, (2, 2, 3, 4)), "blocks/coord_attention.md"),
        BlockSpec("SelectiveKernel",
                  lambda rng: SelectiveKernel(2, kernels=(3, 5), reduction=1, L=2, rng=rng,
                                              dtype="float64"),
                  lambda rng: tie_free(rng, (2, 2, 3, 4)), "blocks/selective_kernel.md"),
        BlockSpec("BAM", lambda rng: BAM(2, reduction=1, dilation=2, rng=rng, dtype="float64"),
                  lambda rng: tie_free(rng, (2, 2, 3, 4)), "blocks/bam.md"),
        BlockSpec("SpatialTransformer", _spatial_transformer,
                  lambda rng: tie_free(rng, _SHAPE), "blocks/spatial_transformer.md"),
        BlockSpec("DeformConv2d", _deform_conv,
                  lambda rng: tie_free(rng, _SHAPE), "blocks/deform.md"),
        BlockSpec("TripletAttention", lambda rng: TripletAttention(3, rng=rng, dtype="float64"),
                  lambda rng: tie_free(rng, _SHAPE), "blocks/triplet.md"),
    ]
}
