"""MambaOut's Gated CNN token mixer.

Follows "MambaOut: Do We Really Need Mamba for Vision?" (Yu & Wang, 2024, arXiv 2405.07992) and
its official ``GatedCNNBlock`` (yuweihao/MambaOut), itself after the gated CNN of "Language
Modeling with Gated Convolutional Networks" (Dauphin et al., 2017, arXiv 1612.08083):

    g, i, c = split(fc1(x), (H, H - C, C))         H = int(expansion_ratio * D), C = int(conv_ratio * D)
    y = fc2(act(g) * concat(i, dwconv(c)))

with a depthwise convolution (kernel 7, with bias) over the ``C`` conv channels, GELU, and
``expansion_ratio = 8/3``. The official block also holds the pre-norm, the residual and drop
path; here those belong to the surrounding ``Block``.

Over sequences the convolution is 1-D: centred padding (default, bidirectional) or left padding
(``causal=True``), in which case ``step`` keeps the last ``kernel_size - 1`` conv inputs as its
state (the causal convolution of ``core.layers``, with resets and padding masks). Built with
``conv_dims=2`` the convolution is the official 2-D one and ``forward_2d`` mixes an image
``[B, H, W, D]`` (centred padding, odd kernel). With a padding ``mask``, the centred 1-D
convolution sees each row without its padding (zeros past its last real token), as if run alone.

Under CPU autocast (``bf16-mixed`` training on a CPU) the 2-D depthwise convolution runs in
float32 while ``fc1``/``fc2`` take bfloat16: oneDNN's bfloat16 depthwise backward is much slower
than its float32 one (a MambaOut CIFAR training step: 597 ms all bfloat16, 408-476 ms with this
convolution in float32, 615-627 ms all float32; 2 cores), and the convolution is a small share of
the block's multiply-adds.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mixerzoo.core.layers import get_activation
from mixerzoo.core.layers.conv import causal_depthwise_conv1d, depthwise_conv1d
from mixerzoo.core.layers.sequence import Compaction
from mixerzoo.core.mixers.base import Flags, Mixer
from mixerzoo.core.registry import register_mixer
from mixerzoo.core.validation import check_tensor

__all__ = ["GatedCNN"]

_ACTIVATIONS = ("gelu", "silu", "relu", "identity")


@register_mixer("gated_cnn")
class GatedCNN(Mixer):
    """Gated CNN mixer of MambaOut (see the module docstring).

    Args:
        d_model: model width ``D``.
        expansion_ratio: hidden width ``H = int(expansion_ratio * D)`` (8/3).
        kernel_size: depthwise kernel (7).
        conv_ratio: the convolved channels ``C = int(conv_ratio * D)`` (1.0), at most ``H``.
        activation: gate activation, ``"gelu"`` (official), ``"silu"``, ``"relu"`` or ``"identity"``.
        causal: left-padded 1-D convolution with a streaming ``step``.
        conv_dims: 1 (sequences, ``forward``) or 2 (images, ``forward_2d``).
        bias: biases in ``fc1``/``fc2`` (the convolution always has one, as the official code).

    Shapes:
        ``forward(x [B, T, D], state) -> (y [B, T, D], state)``; the causal state is the last
        ``kernel_size - 1`` conv inputs ``[B, kernel_size - 1, C]``.
        ``forward_2d(x [B, H, W, D], state=None) -> (y [B, H, W, D], None)`` (``conv_dims=2``).
    """

    def __init__(
        self,
        d_model: int,
        expansion_ratio: float = 8 / 3,
        kernel_size: int = 7,
        conv_ratio: float = 1.0,
        activation: str = "gelu",
        causal: bool = False,
        conv_dims: int = 1,
        bias: bool = True,
    ):
        super().__init__(d_model)
        hidden = int(expansion_ratio * d_model)
        conv_channels = int(conv_ratio * d_model)
        if not 1 <= conv_channels <= hidden:
            raise ValueError(
                f"GatedCNN: need 1 <= int(conv_ratio * d_model) <= int(expansion_ratio * d_model), "
                f"got {conv_channels} conv channels and hidden width {hidden}"
            )
        if kernel_size < 1:
            raise ValueError(f"GatedCNN: kernel_size must be >= 1, got {kernel_size}")
        if conv_dims not in (1, 2):
            raise ValueError(f"GatedCNN: conv_dims must be 1 or 2, got {conv_dims}")
        if conv_dims == 2 and (causal or kernel_size % 2 == 0):
            raise ValueError("GatedCNN: conv_dims=2 needs causal=False and an odd kernel_size")
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"GatedCNN: unknown activation {activation!r}; choose one of {_ACTIVATIONS}"
            )
        self.hidden = hidden
        self.conv_channels = conv_channels
        self.kernel_size = kernel_size
        self.causal = causal
        self.conv_dims = conv_dims
        self.split_sizes = (hidden, hidden - conv_channels, conv_channels)
        self.fc1 = nn.Linear(d_model, 2 * hidden, bias=bias)
        self.act = get_activation(activation)
        if conv_dims == 1:
            self.conv = nn.Conv1d(conv_channels, conv_channels, kernel_size, groups=conv_channels)
        else:
            # The 2-D convolution pads itself (centred, odd kernel), as the official block: the
            # channels-last view goes to the convolution without a padded copy.
            self.conv = nn.Conv2d(
                conv_channels,
                conv_channels,
                kernel_size,
                padding=kernel_size // 2,
                groups=conv_channels,
            )
        self.fc2 = nn.Linear(hidden, d_model, bias=bias)

    def _gate(self, g: torch.Tensor, i: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(g) * torch.cat((i, c), dim=-1))

    def forward(
        self, x: Tensor, state: Tensor | None = None, *, reset: Flags = None, mask: Flags = None
    ) -> tuple[Tensor, Tensor | None]:
        if self.conv_dims != 1:
            raise ValueError("GatedCNN was built with conv_dims=2; call forward_2d(x [B, H, W, D])")
        reset, mask = self.check_args(x, reset, mask)
        g, i, c = torch.split(self.fc1(x), self.split_sizes, dim=-1)
        k = self.kernel_size
        if self.causal:
            if state is not None:
                check_tensor(
                    "state",
                    state,
                    (x.shape[0], k - 1, self.conv_channels),
                    where="GatedCNN.forward",
                )
            weight = self.conv.weight.squeeze(1)
            c_out, new_state = causal_depthwise_conv1d(
                c, weight, self.conv.bias, state, reset=reset, mask=mask
            )
            return self._gate(g, i, c_out), new_state
        if state is not None:
            raise ValueError("GatedCNN(causal=False) takes no state; pass state=None")
        compaction = Compaction(mask) if mask is not None else None
        if compaction is not None:
            # Each row without its padding, zeros after its last real token.
            c = compaction.compact(c) * compaction.valid.unsqueeze(-1).to(c.dtype)
        c_out = depthwise_conv1d(
            c, self.conv.weight.squeeze(1), self.conv.bias, padding=((k - 1) // 2, k // 2)
        )
        if compaction is not None:
            c_out = compaction.expand(c_out)
        return self._gate(g, i, c_out), None

    def forward_2d(self, x: torch.Tensor, state: None = None) -> tuple[torch.Tensor, None]:
        """Mix an image ``x [B, H, W, D]`` with the 2-D depthwise convolution (``conv_dims=2``)."""
        check_tensor("x", x, ("B", "H", "W", self.d_model), where="GatedCNN.forward_2d")
        if self.conv_dims != 2:
            raise ValueError("GatedCNN.forward_2d needs a mixer built with conv_dims=2")
        if state is not None:
            raise ValueError("GatedCNN.forward_2d takes no state; pass state=None")
        g, i, c = torch.split(self.fc1(x), self.split_sizes, dim=-1)
        c = c.permute(0, 3, 1, 2)
        if c.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                c_out = self.conv(c.float()).to(c.dtype)
        else:
            c_out = self.conv(c)
        return self._gate(g, i, c_out.permute(0, 2, 3, 1)), None

    def init_state(
        self, batch_size: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> torch.Tensor | None:
        if not self.causal:
            return None
        return torch.zeros(
            batch_size, self.kernel_size - 1, self.conv_channels, device=device, dtype=dtype
        )

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, hidden={self.hidden}, conv_channels={self.conv_channels}, "
            f"kernel_size={self.kernel_size}, causal={self.causal}, conv_dims={self.conv_dims}"
        )
