"""The mLSTM block (xLSTM) as a mixer.

Follows "xLSTM: Extended Long Short-Term Memory" (Beck, Pöppel, Spanring, Auer, Prudnikova,
Kopp, Klambauer, Brandstetter and Hochreiter, 2024, arXiv 2405.04517): the mLSTM cell inside
the paper's mLSTM block (the pre-up-projection block), with the details of the authors' code::

    x_m, z = split(W_up x)                                   (inner width = proj_factor * D = 2D)
    c = swish(causal_conv4(x_m))                             (depthwise, kernel 4)
    q = W_q c,  k = W_k c / sqrt(d_h),  v = W_v x_m          (block-diagonal, blocks of 4)
    log i = W_i [q, k, v] + b_i,   log f = logsigmoid(W_f [q, k, v] + b_f)   (one per head)
    h = mLSTM cell(q, k, v, i, f)                            (stabilised; mixerzoo.core.ops.mlstm)
    y = W_down ((GroupNorm_h(h) + skip * c) * swish(z))

The block's residual connection and pre-LayerNorm belong to the surrounding ``Block``. The
output gate ``o_t`` of the cell equations is, in the block, the ``swish(z)`` branch.
Initialisation as in the authors' code: forget-gate bias ``linspace(3, 6)``, input-gate bias ``N(0, 0.1)``, zero
gate weights, learnable skip of ones, small-init projections (std ``sqrt(2 / (5 D))``) and
``2 / sqrt(D)`` for the down-projection (their "wang" init with one block). The head-wise norm has
a weight and no bias, as theirs.

The state is ``{"C": [B, H, d_h, d_h], "n": [B, H, d_h], "m": [B, H], "conv": [B, K-1, 2D]}``: the
stabilised memory, normaliser and stabiliser of the cell and the last ``K-1`` conv inputs.

Resets and padding: the causal convolution (:class:`mixerzoo.core.layers.CausalDepthwiseConv1d`)
never reaches across a reset and skips padded steps; the cell (:func:`mixerzoo.core.ops.mlstm.mlstm`)
drops ``(C, n, m)`` at a reset and leaves it exactly as it is at a padded step (forget gate 1,
input gate 0); everything else acts token by token.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mixerzoo.core.layers import CausalDepthwiseConv1d, head_norm, merge_heads, split_heads
from mixerzoo.core.mixers.base import Flags, Mixer
from mixerzoo.core.ops.mlstm import mlstm
from mixerzoo.core.registry import register_mixer

__all__ = ["MLSTM", "BlockDiagonalLinear"]

MLSTMMixerState = dict  # {"C", "n", "m", "conv"}


class BlockDiagonalLinear(nn.Module):
    """A linear map whose matrix is block-diagonal: ``[..., n * s] -> [..., n * s]``.

    xLSTM's "headwise" q/k/v projections (blocks of ``block_size`` channels, no bias).
    """

    def __init__(self, features: int, block_size: int):
        super().__init__()
        if features % block_size:
            raise ValueError(
                f"BlockDiagonalLinear: features ({features}) must be a multiple of block_size ({block_size})"
            )
        self.block_size = block_size
        self.weight = nn.Parameter(torch.empty(features // block_size, block_size, block_size))
        nn.init.normal_(self.weight, std=math.sqrt(2.0 / (5.0 * features)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blocks = x.unflatten(-1, (-1, self.block_size))
        return torch.einsum("...ni,noi->...no", blocks, self.weight).flatten(-2)


@register_mixer("mlstm")
class MLSTM(Mixer):
    """The mLSTM block of xLSTM (up-projection, causal conv, mLSTM cell, gate, down-projection).

    Args:
        d_model: model width ``D``.
        n_heads: number of cell heads ``H``; the inner width must be divisible by it.
        proj_factor: inner width ``round(proj_factor * D)`` (paper: 2).
        conv_kernel: causal depthwise conv kernel size on the q/k path (paper: 4).
        qkv_block_size: block size of the block-diagonal q/k/v projections (paper: 4).
        bias: biases in the up/down projections.
        norm_eps: head-wise norm epsilon.
        eps: normaliser epsilon of the cell.
        chunk_size: chunk length of the chunkwise form.
        backend: op backend (``None``, ``"naive"``, ``"chunk"``).

    Shapes:
        ``forward(x [B, T, D], state=None, *, reset=None, mask=None) -> (y [B, T, D], state)``,
        state as in the module doc.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int = 4,
        proj_factor: float = 2.0,
        conv_kernel: int = 4,
        qkv_block_size: int = 4,
        bias: bool = False,
        norm_eps: float = 1e-5,
        eps: float = 1e-6,
        chunk_size: int = 64,
        backend: str | None = None,
    ):
        super().__init__(d_model)
        inner = round(proj_factor * d_model)
        if n_heads <= 0 or inner <= 0 or inner % n_heads or inner % qkv_block_size:
            raise ValueError(
                f"MLSTM: inner width round(proj_factor * d_model) = {inner} must be a positive "
                f"multiple of n_heads ({n_heads}) and of qkv_block_size ({qkv_block_size})"
            )
        if conv_kernel < 1:
            raise ValueError(f"MLSTM: conv_kernel must be >= 1, got {conv_kernel}")
        self.n_heads = n_heads
        self.inner = inner
        self.d_head = inner // n_heads
        self.conv_kernel = conv_kernel
        self.norm_eps = norm_eps
        self.eps = eps
        self.chunk_size = chunk_size
        self.backend = backend

        self.proj_up = nn.Linear(d_model, 2 * inner, bias=bias)
        self.conv = CausalDepthwiseConv1d(inner, conv_kernel)
        self.q_proj = BlockDiagonalLinear(inner, qkv_block_size)
        self.k_proj = BlockDiagonalLinear(inner, qkv_block_size)
        self.v_proj = BlockDiagonalLinear(inner, qkv_block_size)
        self.igate = nn.Linear(3 * inner, n_heads)
        self.fgate = nn.Linear(3 * inner, n_heads)
        self.norm_weight = nn.Parameter(torch.ones(inner))
        self.skip = nn.Parameter(torch.ones(inner))
        self.proj_down = nn.Linear(inner, d_model, bias=bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The authors' initialisation (see the module docstring)."""
        small = math.sqrt(2.0 / (5.0 * self.d_model))
        nn.init.normal_(self.proj_up.weight, std=small)
        nn.init.normal_(self.proj_down.weight, std=2.0 / math.sqrt(self.d_model))
        for proj in (self.proj_up, self.proj_down):
            if proj.bias is not None:
                nn.init.zeros_(proj.bias)
        for proj in (self.q_proj, self.k_proj, self.v_proj):
            nn.init.normal_(proj.weight, std=small)
        nn.init.zeros_(self.fgate.weight)
        with torch.no_grad():
            self.fgate.bias.copy_(torch.linspace(3.0, 6.0, self.n_heads))
        nn.init.zeros_(self.igate.weight)
        nn.init.normal_(self.igate.bias, std=0.1)
        nn.init.ones_(self.norm_weight)
        nn.init.ones_(self.skip)

    def forward(
        self,
        x: Tensor,
        state: MLSTMMixerState | None = None,
        *,
        reset: Flags = None,
        mask: Flags = None,
    ) -> tuple[Tensor, MLSTMMixerState]:
        reset, mask = self.check_args(x, reset, mask)
        b, t, _ = x.shape
        if state is None:
            state = self.init_state(b, device=x.device, dtype=x.dtype)
        elif not isinstance(state, dict) or set(state) != {"C", "n", "m", "conv"}:
            raise TypeError(
                "MLSTM: state must be the dict {'C', 'n', 'm', 'conv'} returned by forward/step "
                "or init_state"
            )
        if t == 0:
            # An empty piece leaves the state as it is (the conv needs at least one new input).
            return x.new_zeros(b, 0, self.d_model), state
        x_m, z = self.proj_up(x).split(self.inner, dim=-1)
        conv_out, conv_state = self.conv(x_m, state["conv"], reset=reset, mask=mask)
        c = F.silu(conv_out)
        q, k, v = self.q_proj(c), self.k_proj(c), self.v_proj(x_m)
        gate_in = torch.cat([q, k, v], dim=-1)
        log_i = self.igate(gate_in).transpose(1, 2)  # [B, H, T]
        log_f = F.logsigmoid(self.fgate(gate_in)).transpose(1, 2)
        heads = self.n_heads
        h, (c_mem, n_mem, m) = mlstm(
            split_heads(q, heads),
            split_heads(k, heads) * self.d_head**-0.5,
            split_heads(v, heads),
            log_i,
            log_f,
            (state["C"], state["n"], state["m"]),
            reset=reset,
            mask=mask,
            eps=self.eps,
            backend=self.backend,
            chunk_size=self.chunk_size,
        )
        # Head-wise LayerNorm (weight only) = GroupNorm with one group per head.
        h = head_norm(merge_heads(h), heads, self.norm_weight, None, self.norm_eps)
        h = (h + self.skip * c) * F.silu(z)
        return self.proj_down(h), {"C": c_mem, "n": n_mem, "m": m, "conv": conv_state}

    def init_state(
        self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> MLSTMMixerState:
        dtype = dtype if dtype is not None else torch.get_default_dtype()
        # The cell state is kept in float32 or wider (as the op returns it).
        cell = torch.promote_types(dtype, torch.float32)
        h, d = self.n_heads, self.d_head
        return {
            "C": torch.zeros(batch_size, h, d, d, device=device, dtype=cell),
            "n": torch.zeros(batch_size, h, d, device=device, dtype=cell),
            "m": torch.zeros(batch_size, h, device=device, dtype=cell),
            "conv": self.conv.init_state(batch_size, device=device, dtype=dtype),
        }

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, inner={self.inner}, n_heads={self.n_heads}, "
            f"conv_kernel={self.conv_kernel}"
        )
