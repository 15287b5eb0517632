"""Small layers shared by every mixer, block and domain model (below the mixers).

Mixers and ``core.blocks`` import from here, never the other way round (DESIGN.md, layout):

- ``activations``: :func:`get_activation` by name;
- ``norms``: :func:`make_norm` (LayerNorm, RMSNorm, ScaleNorm), :class:`ScaleNorm`,
  :func:`head_norm` (one normalisation group per head);
- ``mlp``: :class:`MLP` and the gated :class:`GLU` feed-forward;
- ``drop``: :class:`DropPath` (stochastic depth) and the fast :class:`Dropout`;
- ``heads``: :func:`split_heads` / :func:`merge_heads`;
- ``conv``: :class:`CausalDepthwiseConv1d`, the causal depthwise convolution with a carried state,
  resets and padding masks (Mamba, mLSTM/ViL, MambaOut's causal variant, FSMN);
- ``rotary``: rotary position embeddings over interleaved pairs (RoPE; RetNet's xPos rotation);
- ``sequence``: the ``reset``/``mask`` checks and helpers of the mixer contract (segment ids,
  moving the real tokens of a padded batch to the front and back).
"""

from mixerzoo.core.dropout import Dropout
from mixerzoo.core.layers.activations import get_activation
from mixerzoo.core.layers.conv import CausalDepthwiseConv1d, depthwise_conv1d
from mixerzoo.core.layers.drop import DropPath
from mixerzoo.core.layers.heads import merge_heads, split_heads
from mixerzoo.core.layers.mlp import GLU, MLP
from mixerzoo.core.layers.norms import ScaleNorm, head_norm, make_norm
from mixerzoo.core.layers.rotary import rotary_frequencies, rotate_pairs
from mixerzoo.core.layers.sequence import (
    Compaction,
    check_mask,
    check_reset,
    segment_ids,
)

__all__ = [
    "Dropout",
    "DropPath",
    "get_activation",
    "make_norm",
    "ScaleNorm",
    "head_norm",
    "MLP",
    "GLU",
    "split_heads",
    "merge_heads",
    "CausalDepthwiseConv1d",
    "depthwise_conv1d",
    "rotary_frequencies",
    "rotate_pairs",
    "check_reset",
    "check_mask",
    "segment_ids",
    "Compaction",
]
