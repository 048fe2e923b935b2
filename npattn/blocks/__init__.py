"""The attention blocks of the CBAM family, each a pure pair and a thin module over it.

=====================  =====================================  ====================================
block                  pure pair                              params
=====================  =====================================  ====================================
:class:`SE`            ``se_forward`` / ``se_backward``       ``excitation.0.weight``, ``excitation.2.weight``
:class:`ECA`           ``eca_forward`` / ``eca_backward``     ``conv.weight``
:class:`ChannelAttention`  ``channel_attention_forward`` / ...  ``mlp.0.weight``, ``mlp.2.weight``
:class:`SpatialAttention`  ``spatial_attention_forward`` / ...  ``conv.weight`` [, ``conv.bias``]
:class:`CBAM`          ``cbam_forward`` / ``cbam_backward``   ``ca.mlp.0.weight``, ``ca.mlp.2.weight``, ``sa.conv.weight``
:class:`NonLocal`      ``nonlocal_forward`` / ...             ``theta``, ``phi``, ``g``, ``out`` (``.weight``, ``.bias``)
:class:`SimAM`         ``simam_forward`` / ``simam_backward`` (none)
:class:`PyramidSpatialAttention`  ``pyramid_spatial_attention_forward`` / ...  ``conv.weight`` [, ``conv.bias``]
:class:`GlobalContext` ``global_context_forward`` / ...       ``conv_mask``, ``channel_add_conv.0/.1/.3`` (``.weight``, ``.bias``)
:class:`CoordAttention`  ``coord_attention_forward`` / ...    ``conv1``, ``bn1``, ``conv_h``, ``conv_w``; buffers ``bn1.running_*``
:class:`SelectiveKernel`  ``selective_kernel_forward`` / ...  ``convs.i.0/.1``, ``fc.0/.1``, ``fcs.i``; buffers ``*.running_*``
:class:`BAM`           ``bam_forward`` / ``bam_backward``     ``channel_att.gate_c.*``, ``spatial_att.gate_s.*``; buffers
:class:`SpatialTransformer`  ``spatial_transformer_forward`` / ...  ``localization.0.*``, ``fc_loc.weight``, ``fc_loc.bias``
:class:`DeformConv2d`  ``deform_block_forward`` / ...         ``conv_offset.*`` (offsets and mask), ``weight`` [, ``bias``]
:class:`TripletAttention`  ``triplet_attention_forward`` / ...  ``{cw,hc,hw}.conv.conv.weight``, ``{b}.conv.bn.*``; buffers
=====================  =====================================  ====================================

Every pure forward is ``NAME_forward(x, params) -> (y, cache)`` with ``cache.map`` the attention
map; every backward ``NAME_backward(dy, cache) -> (dx, dparams)``.  :data:`BLOCK_REGISTRY`
lists them all for the tests and ``python -m npattn check``.
"""

from ._registry import BLOCK_REGISTRY, BlockSpec
from .bam import BAM, bam_backward, bam_forward
from .cbam import CBAM, cbam_backward, cbam_forward
from .channel_attention import ChannelAttention, channel_attention_backward, channel_attention_forward
from .coord_attention import CoordAttention, coord_attention_backward, coord_attention_forward
from .eca import ECA, eca_backward, eca_forward, eca_kernel_size
from .global_context import GlobalContext, global_context_backward, global_context_forward
from .nonlocal_ import NonLocal, nonlocal_backward, nonlocal_forward
from .pyramid_spatial import (PyramidSpatialAttention, pyramid_spatial_attention_backward,
                              pyramid_spatial_attention_forward)
from .se import SE, se_backward, se_forward
from .selective_kernel import SelectiveKernel, selective_kernel_backward, selective_kernel_forward
from .simam import SimAM, simam_backward, simam_forward
from .spatial_transformer import SpatialTransformer, spatial_transformer_backward, spatial_transformer_forward
from .deform import DeformConv2d, deform_block_backward, deform_block_forward
from .spatial_attention import SpatialAttention, spatial_attention_backward, spatial_attention_forward
from .triplet import TripletAttention, triplet_attention_backward, triplet_attention_forward

__all__ = [
    "SE", "ECA", "ChannelAttention", "SpatialAttention", "CBAM",
    "se_forward", "se_backward", "eca_forward", "eca_backward", "eca_kernel_size",
    "channel_attention_forward", "channel_attention_backward",
    "spatial_attention_forward", "spatial_attention_backward",
    "cbam_forward", "cbam_backward",
    "NonLocal", "SimAM", "nonlocal_forward", "nonlocal_backward", "simam_forward", "simam_backward",
    "PyramidSpatialAttention", "pyramid_spatial_attention_forward",
    "pyramid_spatial_attention_backward",
    "GlobalContext", "global_context_forward", "global_context_backward",
    "CoordAttention", "coord_attention_forward", "coord_attention_backward",
    "SelectiveKernel", "selective_kernel_forward", "selective_kernel_backward",
    "BAM", "bam_forward", "bam_backward",
    "SpatialTransformer", "spatial_transformer_forward", "spatial_transformer_backward",
    "DeformConv2d", "deform_block_forward", "deform_block_backward",
    "TripletAttention", "triplet_attention_forward", "triplet_attention_backward",
    "BLOCK_REGISTRY", "BlockSpec",
]
