"""SpaceTime: companion-matrix state spaces with a closed-loop decoder.

Zhang, Saab, Poli, Dao, Goel and Ré, "Effectively Modeling Time Series with Simple Discrete State
Spaces", ICLR 2023, arXiv 2303.09489. Layout and defaults follow the official code
(HazyResearch/spacetime: ``configs/model/{embedding/repeat, encoder/default, decoder/default,
output/default, ssm/preprocess/residual, ssm/companion_preprocess, ssm/closed_loop/companion}``
and the README's ETTh1 command: ``--lag 336 --n_blocks 1 --kernel_dim 64 --norm_order 1
--dropout 0.25 --data_transform mean``). Each series is a univariate lag window ``u [L, 1]``:

1. **Data transform** ("mean"): subtract the lookback mean, add it back to the forecast.
2. **Embedding** ("repeat"): copy the value into all ``D = 128`` channels.
3. **Encoder** (``e_layers`` SpaceTime layers; the README's ``--n_blocks 1`` is one encoder layer
   plus the decoder). The first layer starts with the fixed **preprocessing SSMs**: channel
   ``c`` (group ``r = c // G``, slot ``j = c % G`` with ``G = 8``) applies order-``j``
   differencing ``(1 - z)^j`` for ``j < 4`` (orders 0..3, Pascal's triangle with signs) and, for
   ``j >= 4``, the moving-average residual ``u_t - mean(u_{t-w+1..t})`` with a window ``w`` drawn
   once, uniformly in ``[4, 64)``. Both are shift SSMs with a fixed ``C`` (``core.ops.companion``).
   Then every layer is ``z -> MLP(SSM(z)) + z`` with a companion SSM (``companion_ssm`` mixer:
   first layer 16 SSMs each shared by 8 consecutive channels, later layers one per channel, a
   learnable skip ``D``, ``a`` L1-normalised) and the MLP ``GELU -> Dropout -> Linear(D, D)``
   with its own residual. The first layer's outer residual adds the *preprocessed* input.
4. **Decoder**: one closed-loop companion SSM per channel, no skip, ``a, b, c, k`` L1-normalised
   (``norm_order 1``). Its output at step ``t``, ``c . h_t``, is the next-step prediction; the
   forecast of step ``L + j`` is ``c (A + b k^T)^j h_{L-1}``, i.e. the SSM keeps running on its
   own predicted inputs ``u_{t+1} = k . h_t``. It is computed in closed form
   (``CompanionSSM.closed_loop``), which equals feeding the predictions back step by step.
5. **Output**: ``GELU -> Dropout -> Linear(D, 1)``.

Multivariate batches are handled channel-independently: each variate is one univariate series
through the same network (the published ETTh1 numbers are univariate, ``features S``; this keeps
exactly that network for ``M``).

Training objective (``training_loss``, used by ``ForecastTask``; official ``train/step/informer.py``
with the README's ``--loss informer_rmse --criterion_weights 1 1 1``), with ``RMSE(p, q) =
sqrt(mean((p - q)^2))`` over every element of a batch and ``d = d_state`` burn-in steps (the
official ``kernel_dim`` of the first encoder SSM):

    ``w0 * RMSE(forecast[L .. L+H-1], y) + w1 * RMSE(open[d-1 .. L-1], series[d .. L])
    + w2 * RMSE(next[d-1 .. L-2], z[d .. L-1])``

- horizon: the closed-loop forecast against the horizon truth;
- lag outputs: the decoder's open-loop output ``c . h_t`` at lag step ``t`` (state from the observed
  inputs up to ``t``), through the output MLP, predicts the series at ``t + 1``; the last one
  (``t = L - 1``) is compared with the first horizon value;
- next inputs: the decoder's predicted next input ``k . h_t`` against its actual next input
  ``z[t + 1]`` (the encoder output, in the mean-transformed units).

The first two compare values in data units (scaled by the data module), which equals comparing in
the mean-transformed units since the transform is a shift. As in the official code, the output MLP
runs separately on the closed-loop and on the open-loop outputs (separate dropout masks), and the
lag-window terms use the L1-normalised ``b, c, k`` of its open-loop path.

Deviations from the official code:
    - Lag-window terms: the official loop adds them only while ``model.inference_only`` is False;
      its first validation pass sets it (``set_eval``) and ``set_train`` never clears it, so from
      the second epoch on it trains on the horizon RMSE alone. By default the three terms act at
      every step, as the README describes ``--criterion_weights``; ``lag_loss_epochs=1``
      reproduces the official latch (lag-window terms in the first epoch only, keyed on the
      epoch that ``ForecastTask`` passes to ``set_epoch``, so a resumed run keeps it), and
      ``criterion_weights=(1, 0, 0)`` gives the horizon-only objective.
    - Model selection: ``ForecastTask`` keeps the checkpoint with the best validation MSE of the
      horizon (the benchmark protocol); the official code selects on the validation horizon RMSE
      (``--val_metric informer_rmse``: per-batch RMSE averaged over batches).
    - ``a`` is projected onto the unit L1 ball (``CompanionSSM(norm_a=True)``) instead of divided
      by its L1 norm; identical at the normal initialisation, where ``||a||_1 >> 1``.
    - In the decoder the same L1-normalised ``b`` builds the state over the lag window and the
      closed loop (the official code uses the raw ``b`` for the former): one consistent SSM.
    - The kernel comes from Krylov-by-squaring, not the paper's FFT algorithm (same values).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from mixerzoo.core.dropout import Dropout
from mixerzoo.core.mixers.companion_ssm import CompanionSSM
from mixerzoo.core.ops.companion import (
    companion_kernel,
    differencing_kernel,
    moving_average_residual_kernel,
)
from mixerzoo.core.ops.s4d import causal_conv
from mixerzoo.core.registry import register_model
from mixerzoo.core.validation import check_tensor

__all__ = ["SpaceTime", "SpaceTimePreprocess", "SpaceTimeLayer", "L1Normalize"]


class L1Normalize(nn.Module):
    """Parametrisation ``v -> v / ||v||_1`` over the last dim (SpaceTime's ``norm_order=1``)."""

    def forward(self, value: torch.Tensor) -> torch.Tensor:
        return value / value.abs().sum(-1, keepdim=True).clamp(min=1e-12)

    def right_inverse(self, value: torch.Tensor) -> torch.Tensor:
        # Unit-L1 vectors are fixed points, so assigning one stores it unchanged.
        return value


class SpaceTimePreprocess(nn.Module):
    """Fixed preprocessing SSMs of SpaceTime's first layer (official ``ResidualSSM``).

    Channel ``c`` uses slot ``j = c % n_kernels`` of group ``r = c // n_kernels``: order-``j``
    differencing for ``j < max_diff_order``, else the moving-average residual with window
    ``windows[r * (n_kernels - max_diff_order) + j - max_diff_order]``.

    Args:
        d_model: channels ``D`` (a multiple of ``n_kernels``).
        n_kernels: kernels per group ``G``.
        max_diff_order: differencing orders ``0 .. max_diff_order - 1``.
        min_avg_window: smallest moving-average window.
        max_avg_window: windows are drawn uniformly in ``[min_avg_window, max_avg_window)``.

    Shapes:
        ``forward(u [B, T, D]) -> [B, T, D]``.
    """

    def __init__(
        self,
        d_model: int,
        n_kernels: int = 8,
        max_diff_order: int = 4,
        min_avg_window: int = 4,
        max_avg_window: int = 64,
    ):
        super().__init__()
        if d_model % n_kernels:
            raise ValueError(f"d_model ({d_model}) must be a multiple of n_kernels ({n_kernels})")
        if not 0 < max_diff_order <= n_kernels:
            raise ValueError(f"need 0 < max_diff_order <= n_kernels, got {max_diff_order}")
        n_ma = (n_kernels - max_diff_order) * (d_model // n_kernels)
        if n_ma and not 1 <= min_avg_window < max_avg_window:
            raise ValueError(
                f"need 1 <= min_avg_window < max_avg_window, got {min_avg_window}, {max_avg_window}"
            )
        self.n_kernels, self.max_diff_order = n_kernels, max_diff_order
        windows = torch.randint(min_avg_window, max(max_avg_window, min_avg_window + 1), (n_ma,))
        taps = max(max_diff_order, max_avg_window)
        rows = []
        for c in range(d_model):
            group, slot = divmod(c, n_kernels)
            if slot < max_diff_order:
                rows.append(differencing_kernel(slot, taps, dtype=torch.float64))
            else:
                w = int(windows[group * (n_kernels - max_diff_order) + slot - max_diff_order])
                rows.append(moving_average_residual_kernel(w, taps, dtype=torch.float64))
        # Persistent: the drawn windows are part of the model and must survive a checkpoint. The
        # taps are built in float64 (1/w exact) and cast to the input's dtype when applied.
        self.register_buffer("windows", windows)
        self.register_buffer("kernel", torch.stack(rows))

    def describe(self, channel: int) -> tuple[str, int]:
        """``("diff", order)`` or ``("ma_residual", window)`` of a channel."""
        group, slot = divmod(channel, self.n_kernels)
        if slot < self.max_diff_order:
            return "diff", slot
        ma = group * (self.n_kernels - self.max_diff_order) + slot - self.max_diff_order
        return "ma_residual", int(self.windows[ma])

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        t = u.shape[1]
        k = self.kernel.to(u.dtype)
        # causal_conv needs at least T taps; taps beyond T never touch the output.
        k = F.pad(k, (0, t - k.shape[1])) if k.shape[1] < t else k[:, :t]
        return causal_conv(u, k)


class SpaceTimeLayer(nn.Module):
    """One SpaceTime encoder layer: ``z = pre(u)``, ``y = SSM(z)``, ``y + Linear(Drop(GELU(y))) + z``.

    Args:
        d_model: channels ``D``.
        d_state: companion state size (``kernel_dim``).
        n_heads: distinct companion SSMs (consecutive channels share one).
        dropout: MLP dropout.
        preprocess: the fixed preprocessing SSMs (first layer) or ``None``.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int,
        n_heads: int,
        dropout: float,
        preprocess: SpaceTimePreprocess | None = None,
    ):
        super().__init__()
        self.pre = preprocess
        self.ssm = CompanionSSM(d_model, d_state=d_state, n_heads=n_heads, norm_a=True, skip=True)
        self.mlp = nn.Sequential(nn.GELU(), Dropout(dropout), nn.Linear(d_model, d_model))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        z = self.pre(u) if self.pre is not None else u
        y, _ = self.ssm(z)
        return self.mlp(y) + y + z


@register_model("spacetime", domain="timeseries")
class SpaceTime(nn.Module):
    """SpaceTime forecaster (defaults: the official ETTh1 configuration, lag 336).

    Args:
        seq_len: lookback (lag) ``L``.
        pred_len: horizon ``H``.
        d_model: channels ``D`` of the repeat embedding.
        d_state: companion state size (``kernel_dim``).
        e_layers: encoder layers; the first holds the preprocessing SSMs.
        first_layer_heads: distinct companion SSMs of the first layer (official: 16 kernels x 8
            heads = 128 channels); later layers have one per channel.
        n_preprocess_kernels: preprocessing kernels per group (differencing + moving average).
        max_diff_order: differencing orders ``0 .. max_diff_order - 1`` per group.
        min_avg_window: smallest moving-average window.
        max_avg_window: moving-average windows are drawn in ``[min_avg_window, max_avg_window)``.
        dropout: dropout of the layer MLPs and the output MLP.
        mean_transform: subtract the lookback mean per series and add it back (official
            ``--data_transform mean``).
        init: ``"normal"`` (official ``kernel_init: normal``: ``a, b, c, k`` and the skip ``D``
            from N(0, 1)) or ``"xavier"`` (the mixer's own uniform initialisation).
        criterion_weights: ``(w0, w1, w2)`` of ``training_loss``: horizon RMSE, lag-window
            open-loop outputs, lag-window next-input predictions (official
            ``--criterion_weights``, README: ``1 1 1``).
        lag_loss_epochs: train with the lag-window terms for this many epochs only (official
            loop: 1, see the module docstring); ``None`` keeps them at every step.

    Shapes:
        ``forward(x [B, L, C], x_mark=None, x_dec=None, x_mark_dec=None) -> [B, H, C]`` (marks and
        decoder inputs are ignored);
        ``training_loss(x [B, L, C], y [B, H, C], ...) -> (loss [], forecast [B, H, C])``.
    """

    def __init__(
        self,
        seq_len: int = 336,
        pred_len: int = 96,
        d_model: int = 128,
        d_state: int = 64,
        e_layers: int = 1,
        first_layer_heads: int = 16,
        n_preprocess_kernels: int = 8,
        max_diff_order: int = 4,
        min_avg_window: int = 4,
        max_avg_window: int = 64,
        dropout: float = 0.25,
        mean_transform: bool = True,
        init: str = "normal",
        criterion_weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
        lag_loss_epochs: int | None = None,
    ):
        super().__init__()
        if len(criterion_weights) != 3:
            raise ValueError(
                f"criterion_weights must be three numbers (horizon, lag outputs, next inputs), "
                f"got {criterion_weights!r}"
            )
        if e_layers < 0:
            raise ValueError(f"e_layers must be >= 0, got {e_layers}")
        if lag_loss_epochs is not None and lag_loss_epochs < 0:
            raise ValueError(f"lag_loss_epochs must be >= 0 or None, got {lag_loss_epochs}")
        if init not in ("normal", "xavier"):
            raise ValueError(f"init must be 'normal' or 'xavier', got {init!r}")
        self.seq_len, self.pred_len, self.d_model = seq_len, pred_len, d_model
        self.mean_transform = mean_transform
        self.criterion_weights = tuple(float(w) for w in criterion_weights)
        self.lag_loss_epochs = lag_loss_epochs
        self.epoch = 0  # set by the training loop through set_epoch
        layers = []
        for i in range(e_layers):
            pre = None
            if i == 0:
                pre = SpaceTimePreprocess(
                    d_model, n_preprocess_kernels, max_diff_order, min_avg_window, max_avg_window
                )
            heads = first_layer_heads if i == 0 else d_model
            layers.append(SpaceTimeLayer(d_model, d_state, heads, dropout, pre))
        self.encoder = nn.ModuleList(layers)
        self.decoder = CompanionSSM(
            d_model, d_state=d_state, n_heads=d_model, norm_a=True, skip=False, feedback=True
        )
        self.output = nn.Sequential(nn.GELU(), Dropout(dropout), nn.Linear(d_model, 1))
        if init == "normal":
            with torch.no_grad():
                for ssm in [layer.ssm for layer in self.encoder] + [self.decoder]:
                    for p in (ssm.a, ssm.b, ssm.c, ssm.k, ssm.d):
                        if p is not None:
                            p.normal_()
        # norm_order 1 on the decoder's b, c, k (a is handled by the mixer's norm_a).
        for name in ("b", "c", "k"):
            parametrize.register_parametrization(self.decoder, name, L1Normalize())

    def set_epoch(self, epoch: int) -> None:
        """Tell the model the current training epoch (``ForecastTask`` calls it each epoch)."""
        self.epoch = int(epoch)

    def encode(self, u: torch.Tensor) -> torch.Tensor:
        """Repeat embedding and encoder: ``u [N, L, 1] -> z [N, L, D]``."""
        z = u.expand(-1, -1, self.d_model)
        for layer in self.encoder:
            z = layer(z)
        return z

    def decode_with_lag(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder over the lag window and past it: ``z [N, L, D] -> (open [N, L, D], y [N, H, D])``.

        ``open[:, t] = c . h_t`` is the open-loop next-step prediction from the inputs up to ``t``;
        ``y[:, j]`` predicts step ``L + j`` (its first step is ``open[:, -1]``, the rest closed loop).
        """
        y_open, state = self.decoder(z)
        first = y_open[:, -1:]
        if self.pred_len == 1:
            return y_open, first
        y_closed, _ = self.decoder.closed_loop(state, self.pred_len - 1)
        return y_open, torch.cat([first, y_closed], dim=1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Closed-loop decoder: ``z [N, L, D] -> y [N, H, D]``, ``y[:, j]`` predicting ``L + j``."""
        return self.decode_with_lag(z)[1]

    def next_input_predictions(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder's predicted next inputs over the lag window: ``z [N, L, D] -> [N, L, D]``.

        Row ``t`` is ``k . h_t`` with ``h_t`` the decoder state after the inputs up to ``t`` (open
        loop); it predicts ``z[:, t + 1]``. A convolution with the kernel ``k^T A^j b``.
        """
        dec = self.decoder
        kernel = companion_kernel(dec.last_column(), dec.b, dec.k, z.shape[1], backend=dec.backend)
        return causal_conv(z, kernel[dec.head_of_channel], backend=dec.backend)

    def _series(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Channel independence: ``x [B, L, C] -> (u [B*C, L, 1], lookback mean [B*C, 1, 1])``."""
        check_tensor("x", x, ("B", self.seq_len, "C"), where="SpaceTime")
        bsz, length, n_vars = x.shape
        u = x.transpose(1, 2).reshape(bsz * n_vars, length, 1)
        mean = u.mean(dim=1, keepdim=True) if self.mean_transform else torch.zeros_like(u[:, :1])
        return u, mean

    @staticmethod
    def _batch(y: torch.Tensor, bsz: int) -> torch.Tensor:
        """``[B*C, T, 1] -> [B, T, C]``."""
        return y.reshape(bsz, -1, y.shape[1]).transpose(1, 2)

    def forward(
        self,
        x: torch.Tensor,
        x_mark: torch.Tensor | None = None,
        x_dec: torch.Tensor | None = None,
        x_mark_dec: torch.Tensor | None = None,
    ) -> torch.Tensor:
        u, mean = self._series(x)
        y = self.output(self.decode(self.encode(u - mean))) + mean  # [B*C, H, 1]
        return self._batch(y, x.shape[0])

    def training_loss(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        x_mark: torch.Tensor | None = None,
        x_dec: torch.Tensor | None = None,
        x_mark_dec: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The official objective (module docstring) and the forecast, from one forward pass.

        Args:
            x: lookback ``[B, L, C]``.
            y: horizon truth ``[B, H, C]`` (same units as ``x``).
            x_mark, x_dec, x_mark_dec: ignored, as in ``forward``.

        Returns:
            ``(loss, forecast [B, H, C])``; the forecast is what ``forward`` returns.
        """
        u, mean = self._series(x)
        check_tensor("y", y, (x.shape[0], self.pred_len, x.shape[2]), where="SpaceTime")
        w_horizon, w_lag, w_next = self.criterion_weights
        if self.lag_loss_epochs is not None and self.epoch >= self.lag_loss_epochs:
            w_lag = w_next = 0.0
        burn_in, length = self.decoder.d_state, self.seq_len
        if (w_lag or w_next) and length <= burn_in:
            raise ValueError(
                f"the lag-window terms skip the first d_state={burn_in} steps and need "
                f"seq_len > d_state, got seq_len={length}; use criterion_weights=(1, 0, 0)"
            )
        z = self.encode(u - mean)
        y_open, y_horizon = self.decode_with_lag(z)
        pred = self._batch(self.output(y_horizon) + mean, x.shape[0])
        loss = w_horizon * _rmse(pred, y)
        if w_lag:
            series = torch.cat([u, y.transpose(1, 2).reshape(-1, self.pred_len, 1)], dim=1)
            lag_out = self.output(y_open) + mean  # row t predicts the series at t + 1
            loss = loss + w_lag * _rmse(lag_out[:, burn_in - 1 :], series[:, burn_in : length + 1])
        if w_next:
            z_next = self.next_input_predictions(z)  # row t predicts z[:, t + 1]
            loss = loss + w_next * _rmse(z_next[:, burn_in - 1 : -1], z[:, burn_in:])
        return loss, pred


def _rmse(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Root of the mean squared error over every element (official ``informer_rmse``)."""
    return F.mse_loss(pred, true).sqrt()
