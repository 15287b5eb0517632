"""Multi-scale retention (MSR) as a mixer.

Follows "Retentive Network: A Successor to Transformer for Large Language Models" (Sun, Dong,
Huang, Ma, Xia, Xue, Wang and Wei, 2023, arXiv 2307.08621), gated multi-scale retention::

    Q = (X W_Q) * Theta,  K = (X W_K) * Theta-bar,  V = X W_V
    head_h = Retention(Q, K, V, gamma_h),   gamma_h = 1 - 2^(-5 - h)
    Y = GroupNorm_h(Concat(head_1, ..., head_H))
    MSR(X) = (swish(X W_G) * Y) W_O

with ``d_v = expand_v * d_model`` (the paper uses ``expand_v = 2``) and keys scaled by
``d_k^-0.5`` (as in the authors' torchscale code). ``Theta`` is the xPos-style rotation of the
paper: token ``n`` rotates each pair of query/key channels ``(2j, 2j+1)`` by the angle
``n * theta_j`` with ``theta_j = 10000^(-j / (d_k/2 - 1))`` (torchscale's ``linspace(0, 1)``
spacing); the length-extrapolating decay part of xPos is the retention decay ``gamma`` itself,
so the rotation carries no extra scaling. Because only the difference of positions enters
``q_n . k_m``, a carried state keeps an absolute position offset only to continue the rotation:
``{"S": [B, H, d_k, d_v], "offset": [B] int64}``, one offset per row (zero at init, so
:func:`mixerzoo.core.state.reset_state` restarts a row exactly as ``init_state`` does).

Resets and padding: positions count each row's real tokens only (a padded step does not advance
the rotation) and restart from 0 at a reset, so a packed row rotates every episode as if it ran
alone; the op (:func:`mixerzoo.core.ops.retention.retention`) drops the state at a reset and
makes a padded step the identity (decay 1, key dropped). The bidirectional variant takes
``mask`` (``|n - m|`` counts real tokens) and refuses ``reset``.

Deviation: the paper's score normalisations (row-normalising ``D`` and ``Q K^T * D``) are
omitted: they scale each row of each head by a positive factor, which the per-head GroupNorm
removes (up to its ``eps``), and the recurrent form is then exactly the parallel one.

``causal=False`` (no ``step``, no state) uses the symmetric decay ``gamma^|n-m|``, the 1-D case
of the distance decay of RMT (Fan et al., 2023, arXiv 2309.11523, which uses the Manhattan
distance on the 2-D patch grid). ViR ("ViR: Towards Efficient Vision Retention Backbones",
Hatamizadeh et al., 2023, arXiv 2310.19731) does *not* use a symmetric mask: its official code
runs causal retention (decays ``1 - exp(linspace(log 1/32, log 1/512, H))``, no rotation, gate or
GroupNorm) and, in its bidirectional mode, over the patch sequence concatenated with its
reverse, with the class token last. A ViR model gets that token mixing from this mixer with
``causal=True, rotation=False, gammas=...`` applied to ``[x, flip(x)]`` (RetNet's gate and
GroupNorm stay). (Its released parallel mode also applies a softmax after the decay
mask, which its recurrent mode does not; this mixer follows the recurrent-equivalent form.)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mixerzoo.core.layers import (
    head_norm,
    merge_heads,
    rotary_frequencies,
    rotate_pairs,
    split_heads,
)
from mixerzoo.core.mixers.base import Flags, Mixer
from mixerzoo.core.ops.retention import retention, retnet_decays
from mixerzoo.core.registry import register_mixer

__all__ = ["MultiScaleRetention"]

RetentionState = dict  # {"S": [B, H, dk, dv] tensor, "offset": [B] int64 tensor}


@register_mixer("retention")
class MultiScaleRetention(Mixer):
    """Multi-scale retention (RetNet).

    Args:
        d_model: model width ``D``.
        n_heads: number of heads ``H``; ``D`` must be divisible by it (``d_k = D / H``, even when
            ``rotation`` is on).
        expand_v: value width factor, ``d_v = expand_v * D / H`` per head (the paper uses 2).
        causal: causal decay with a recurrent state (default) or the symmetric decay
            ``gamma^|n-m|`` without state or ``step``.
        gammas: per-head decays (``H`` values in ``(0, 1]``); default RetNet's
            ``1 - 2^(-5 - h)``.
        rotation: apply the xPos-style rotation to queries and keys.
        bias: biases in the projections.
        norm_eps: GroupNorm epsilon.
        chunk_size: chunk length of the chunkwise form.
        backend: op backend (``None``, ``"naive"``, ``"chunk"``); see ``mixerzoo.core.ops``.
        gate: RetNet's swish output gate ``swish(X W_G) * Y`` (``False``: ``Y`` goes straight to
            ``W_O``, as in ViR, whose retention layer has ViT's attention parameters).
        norm_affine: learnable scale and shift of the per-head GroupNorm (``False``: the plain
            per-head normalisation, no parameters).

    Shapes:
        ``forward(x [B, T, D], state=None, *, reset=None, mask=None) -> (y [B, T, D], state)``
        with state ``{"S": [B, H, d_k, d_v], "offset": [B] int64}`` when causal (``None``
        otherwise; ``reset`` only when causal).
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int = 4,
        expand_v: int = 2,
        causal: bool = True,
        gammas: Sequence[float] | None = None,
        rotation: bool = True,
        bias: bool = False,
        norm_eps: float = 1e-5,
        chunk_size: int = 64,
        backend: str | None = None,
        gate: bool = True,
        norm_affine: bool = True,
    ):
        super().__init__(d_model)
        if n_heads <= 0 or d_model % n_heads:
            raise ValueError(
                f"MultiScaleRetention: d_model ({d_model}) must be divisible by n_heads ({n_heads})"
            )
        if expand_v <= 0:
            raise ValueError(f"MultiScaleRetention: expand_v must be positive, got {expand_v}")
        self.n_heads = n_heads
        self.d_key = d_model // n_heads
        self.d_value = expand_v * self.d_key
        if rotation and self.d_key % 2:
            raise ValueError(
                f"MultiScaleRetention: the rotation needs an even key width per head, got "
                f"d_model / n_heads = {self.d_key}; change n_heads or pass rotation=False"
            )
        decays = (
            retnet_decays(n_heads) if gammas is None else torch.tensor(gammas, dtype=torch.float64)
        )
        if decays.shape != (n_heads,) or not bool(((decays > 0) & (decays <= 1)).all()):
            raise ValueError(
                f"MultiScaleRetention: gammas must be {n_heads} values in (0, 1], got {gammas!r}"
            )
        # Kept as a Python list so that .half()/.bfloat16() never rounds a decay such as
        # 1 - 2^-12 to 1; the tensor is made in float32 (or wider) at each call.
        self.gammas = decays.tolist()
        self.causal = causal
        self.rotation = rotation
        self.chunk_size = chunk_size
        self.backend = backend
        value_width = n_heads * self.d_value
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, value_width, bias=bias)
        self.g_proj = nn.Linear(d_model, value_width, bias=bias) if gate else None
        self.group_norm = nn.GroupNorm(n_heads, value_width, eps=norm_eps, affine=norm_affine)
        self.out_proj = nn.Linear(value_width, d_model, bias=bias)

    def _positions(
        self,
        offset: torch.Tensor,
        b: int,
        t: int,
        reset: torch.Tensor | None,
        mask: torch.Tensor | None,
        device: torch.device,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotation position ``[B, T]`` of every token and the offset ``[B]`` after the piece.

        A token's position is the number of real tokens before it in its episode, plus the
        carried ``offset`` in the episode that continues the state.
        """
        if reset is None and mask is None:
            positions = offset.unsqueeze(1) + torch.arange(t, device=device)
            return positions, offset + t
        real = torch.ones(b, t, dtype=torch.long, device=device) if mask is None else mask.long()
        count = real.cumsum(1)
        before = count - real  # real tokens before each position
        if reset is None:
            return offset.unsqueeze(1) + before, offset + count[:, -1]
        # Real tokens before the latest reset (counts only grow, so a running max finds it).
        start = torch.where(reset, before, 0).cummax(1).values
        continued = reset.long().cumsum(1) == 0  # still in the episode of the carried state
        positions = before - start + torch.where(continued, offset.unsqueeze(1), 0)
        new_offset = count[:, -1] - start[:, -1] + torch.where(continued[:, -1], offset, 0)
        return positions, new_offset

    def _check_state(self, state: object, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.causal:
            raise ValueError(
                "MultiScaleRetention(causal=False) sees the whole sequence and takes no state; "
                "pass state=None or build it with causal=True"
            )
        if not isinstance(state, dict) or set(state) != {"S", "offset"}:
            raise TypeError(
                "MultiScaleRetention: state must be the dict {'S', 'offset'} returned by "
                "forward/step or init_state"
            )
        offset = state["offset"]
        if (
            not isinstance(offset, torch.Tensor)
            or offset.dtype != torch.long
            or tuple(offset.shape) != (b,)
        ):
            got = (
                f"{offset.dtype} tensor of shape {tuple(offset.shape)}"
                if isinstance(offset, torch.Tensor)
                else type(offset).__name__
            )
            raise TypeError(
                f"MultiScaleRetention: state['offset'] must be an int64 tensor [B] = [{b}] (one "
                f"rotation offset per row, as init_state makes it), got {got}"
            )
        return state["S"], offset

    def forward(
        self,
        x: Tensor,
        state: RetentionState | None = None,
        *,
        reset: Flags = None,
        mask: Flags = None,
    ) -> tuple[Tensor, RetentionState | None]:
        reset, mask = self.check_args(x, reset, mask)
        b, t, _ = x.shape
        if state is None:
            s0, offset = None, torch.zeros(b, dtype=torch.long, device=x.device)
        else:
            s0, offset = self._check_state(state, b)
        h = self.n_heads
        q = split_heads(self.q_proj(x), h)
        k = split_heads(self.k_proj(x), h)
        v = split_heads(self.v_proj(x), h)
        positions, new_offset = self._positions(offset, b, t, reset, mask, x.device)
        if self.rotation:
            freqs = rotary_frequencies(self.d_key, spacing="linspace", device=x.device)
            q = rotate_pairs(q, positions.unsqueeze(1), freqs)
            k = rotate_pairs(k, positions.unsqueeze(1), freqs)
        k = k * self.d_key**-0.5
        gamma = torch.tensor(
            self.gammas, dtype=torch.promote_types(x.dtype, torch.float32), device=x.device
        )
        o, s_new = retention(
            q,
            k,
            v,
            gamma,
            s0,
            reset=reset,
            mask=mask,
            causal=self.causal,
            backend=self.backend,
            chunk_size=self.chunk_size,
        )
        # GroupNorm with one group per head normalises each head's d_v channels of each token.
        norm = self.group_norm
        o = head_norm(merge_heads(o), h, norm.weight, norm.bias, norm.eps)
        if self.g_proj is not None:
            o = F.silu(self.g_proj(x)) * o
        y = self.out_proj(o)
        return y, ({"S": s_new, "offset": new_offset} if self.causal else None)

    def init_state(
        self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> RetentionState | None:
        if not self.causal:
            return None
        dtype = dtype if dtype is not None else torch.get_default_dtype()
        s = torch.zeros(
            batch_size, self.n_heads, self.d_key, self.d_value, device=device, dtype=dtype
        )
        return {"S": s, "offset": torch.zeros(batch_size, dtype=torch.long, device=device)}

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, n_heads={self.n_heads}, d_key={self.d_key}, "
            f"d_value={self.d_value}, causal={self.causal}, rotation={self.rotation}"
        )
