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
``q_n . k_m``, a carried state keeps an absolute position offset only to continue the rotation.

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
from torch import nn

from mixerzoo.core.mixers.base import Mixer
from mixerzoo.core.ops.retention import retention, retnet_decays
from mixerzoo.core.registry import register_mixer

__all__ = ["MultiScaleRetention"]

RetentionState = dict  # {"S": [B, H, dk, dv] tensor, "offset": int}


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

    Shapes:
        ``forward(x [B, T, D], state=None) -> (y [B, T, D], state)`` with state
        ``{"S": [B, H, d_k, d_v], "offset": int}`` when causal (``None`` otherwise).
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
        self.g_proj = nn.Linear(d_model, value_width, bias=bias)
        self.group_norm = nn.GroupNorm(n_heads, value_width, eps=norm_eps)
        self.out_proj = nn.Linear(value_width, d_model, bias=bias)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.n_heads, x.shape[-1] // self.n_heads).transpose(1, 2)

    def _rotate(self, x: torch.Tensor, offset: int) -> torch.Tensor:
        """Rotate channel pairs ``(2j, 2j+1)`` of ``x [B, H, T, dk]`` by ``(offset + n) theta_j``."""
        t = x.shape[2]
        # Angles in float64: positions can be large after a long stream of carried states.
        theta = 10000.0 ** -torch.linspace(
            0, 1, self.d_key // 2, dtype=torch.float64, device=x.device
        )
        pos = torch.arange(offset, offset + t, dtype=torch.float64, device=x.device)
        angle = pos[:, None] * theta[None, :]
        cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
        even, odd = x[..., 0::2], x[..., 1::2]
        return torch.stack((even * cos - odd * sin, odd * cos + even * sin), dim=-1).flatten(-2)

    def forward(
        self, x: torch.Tensor, state: RetentionState | None = None
    ) -> tuple[torch.Tensor, RetentionState | None]:
        self.check_input(x)
        b, t, _ = x.shape
        offset, s0 = 0, None
        if state is not None:
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
            s0, offset = state["S"], int(state["offset"])
        q, k, v = (
            self._heads(self.q_proj(x)),
            self._heads(self.k_proj(x)),
            self._heads(self.v_proj(x)),
        )
        if self.rotation:
            q, k = self._rotate(q, offset), self._rotate(k, offset)
        k = k * self.d_key**-0.5
        gamma = torch.tensor(
            self.gammas, dtype=torch.promote_types(x.dtype, torch.float32), device=x.device
        )
        o, s_new = retention(
            q, k, v, gamma, s0, causal=self.causal, backend=self.backend, chunk_size=self.chunk_size
        )
        # GroupNorm with one group per head normalises each head's d_v channels of each token.
        width = self.n_heads * self.d_value
        o = self.group_norm(o.transpose(1, 2).reshape(b * t, width)).view(b, t, width)
        y = self.out_proj(F.silu(self.g_proj(x)) * o)
        return y, ({"S": s_new, "offset": offset + t} if self.causal else None)

    def init_state(
        self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> RetentionState | None:
        if not self.causal:
            return None
        dtype = dtype if dtype is not None else torch.get_default_dtype()
        s = torch.zeros(
            batch_size, self.n_heads, self.d_key, self.d_value, device=device, dtype=dtype
        )
        return {"S": s, "offset": 0}

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, n_heads={self.n_heads}, d_key={self.d_key}, "
            f"d_value={self.d_value}, causal={self.causal}, rotation={self.rotation}"
        )
