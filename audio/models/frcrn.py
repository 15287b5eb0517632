"""FRCRN: complex U-Nets with frequency-recurrent FSMNs for monaural speech enhancement.

Follows "FRCRN: Boosting Feature Representation using Frequency Recurrence for Monaural Speech
Enhancement" (Zhao et al., ICASSP 2022, arXiv 2206.07293) and its official implementation in
ClearerVoice-Studio (``DCCRN(complex=True, model_depth=14)``, ``FRCRN_SE_16K``):

- a fixed complex STFT at 16 kHz (window 640, hop 320, FFT 640, square-root periodic Hann),
  implemented, as the official code, by a convolution with a constant kernel, and its inverse by a
  transposed convolution with the pseudo-inverse kernel and window-power normalisation;
- two cascaded complex U-Nets (7 encoders, 7 decoders, 128 channels). Every complex convolution
  keeps a real and an imaginary kernel (``(W_r + i W_i)(x_r + i x_i)``), followed by a complex
  batch norm (one BN per part) and LeakyReLU. Convolutions have kernel ``(k_f, 2)`` over
  (frequency, time), stride 2 in frequency; encoders pad one frame on both sides in time,
  decoders (transposed) crop one;
- the *frequency recurrence*: a complex FSMN (``fsmn`` mixer, order 20) runs along the frequency
  axis of every frame before encoders 1-6 and after decoders 0-5, and a two-layer complex FSMN
  runs along time at the bottleneck;
- complex SE layers (squeeze-and-excitation with real/imaginary fully connected branches) on the
  skip connections;
- complex ratio masks ``M1 = tanh(U1(Y))`` and ``M = M1 + tanh(U2(U1(Y)))``, applied to the noisy
  spectrum ``Y`` by complex multiplication, then the iSTFT.

The training loss (``frcrn_loss``) is the official one: ``-SI-SNR`` of the waveform plus the MSE
of the complex mask against the clipped complex ideal ratio mask, scaled by the FFT length.

Parameters: 13.96 M, of which 13.14 M trainable (the STFT/iSTFT kernels are non-trainable
parameters, as in the official model); the official layout also has modules it never calls
(``fsmn_enc[0]``, ``fsmn_dec[6]``, ``se_layers_dec[5]``), kept here so that the official
checkpoint loads and the counts match.

Options and deviations (all defaults are the official model):

- ``se_pooling="global"`` (official) averages the SE input over frequency *and the whole
  utterance*, so the output at one frame depends on the future. ``se_pooling="causal"`` averages
  over frequency and the frames so far (a running mean carried in the streaming state): the model
  then streams frame by frame with output equal to offline processing (:class:`FRCRNStreamer`).
- ``forward`` pads half a window (320 samples) of zeros in front and enough at the end that every
  sample is covered by two frames, then crops to the input length; the official ``forward`` uses
  the raw signal (its first and last 320 samples are covered by one frame only, where the window
  normalisation amplifies any mask error). :meth:`FRCRN.forward_frames` is the official computation
  on an already framed (padded) signal.
- ``channels`` and ``fsmn_order`` shrink the network for a CPU variant (official: 128, 20).
- Complex convolutions use three real convolutions (Gauss's product) instead of four; with
  ``(W_r + W_i)``, ``(W_i - W_r)`` formed from the stored official kernels the result is the same.
  Calls of a few frames (streaming) run the U-Net convolutions as batched matrix products over
  all frequency positions instead (the transposed ones in polyphase form): the same sums, in the
  form PyTorch runs fast at one frame, where its convolutions take slow generic paths.
- Time is processed causally per layer: an encoder's time tap on frame ``j - 1`` and a decoder's
  tap on frame ``j + 1`` are computed once per frame ("partial products") and carried, which is
  both the offline computation and the streaming one (no convolution is recomputed per frame).
  Overall the official U-Net looks 7 frames ahead (each decoder reads frame ``j + 1``), so the
  streaming output trails the input by 14 frames (280 ms) plus one window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mixerzoo.core.mixers.fsmn import fsmn_side_by_side, stacked_fsmn_weights
from mixerzoo.core.registry import create_mixer, register_model

__all__ = [
    "FRCRN",
    "FRCRNOutput",
    "FRCRNStreamer",
    "frcrn_loss",
    "complex_ideal_ratio_mask",
    "frcrn_official_key_map",
]

# Depth-14 U-Net of the official code: (kernel over frequency) per layer; every time kernel is 2,
# every frequency stride 2, encoder time padding 1 (both sides), decoder time crop 1.
_ENC_KF = (5, 5, 5, 5, 5, 5, 2)
_DEC_KF = (2, 5, 5, 5, 6, 5, 5)


def _sqrt_hann(win_len: int) -> torch.Tensor:
    # scipy.signal.get_window("hann", N, fftbins=True) is the periodic Hann window.
    n = torch.arange(win_len, dtype=torch.float64)
    return (0.5 - 0.5 * torch.cos(2 * math.pi * n / win_len)).sqrt()


def _stft_kernels(win_len: int, fft_len: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Analysis and synthesis kernels ``[fft_len + 2, 1, win_len]`` of the official ConvSTFT."""
    window = _sqrt_hann(win_len)
    eye = torch.eye(fft_len, dtype=torch.float64)
    basis = torch.fft.rfft(eye)[:win_len]  # [win_len, F] complex
    kernel = torch.cat([basis.real, basis.imag], dim=1).T  # [2F, win_len]
    inverse = torch.linalg.pinv(kernel).T  # [2F, win_len]
    analysis = (kernel * window)[:, None, :].float()
    synthesis = (inverse * window)[:, None, :].float()
    return analysis, synthesis, window.float()


class _STFTKernel(nn.Module):
    """Holds a fixed STFT kernel as a non-trainable parameter (as the official ``ConvSTFT``)."""

    def __init__(self, kernel: torch.Tensor, window: torch.Tensor | None = None):
        super().__init__()
        self.weight = nn.Parameter(kernel, requires_grad=False)
        if window is not None:
            self.register_buffer("window", window[None, :, None])


def _leaky_relu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.01)


class _ComplexPair(nn.Module):
    """Real and imaginary kernels of a complex (transposed) convolution, official names."""

    def __init__(self, cls: type[nn.Module], names: tuple[str, str], *args, **kwargs):
        super().__init__()
        self._names = names
        setattr(self, names[0], cls(*args, **kwargs))
        setattr(self, names[1], cls(*args, **kwargs))

    def kernels(self) -> tuple[nn.Module, nn.Module]:
        return getattr(self, self._names[0]), getattr(self, self._names[1])


class ComplexBatchNorm(nn.Module):
    """One ``BatchNorm2d`` per part (official ``ComplexBatchNorm2d``) on ``[2, B, C, F, T]``."""

    def __init__(self, channels: int):
        super().__init__()
        self.bn_re = nn.BatchNorm2d(channels)
        self.bn_im = nn.BatchNorm2d(channels)

    def _affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Evaluation mode: the norms as ``z * scale + shift``, each ``[2, C]`` (real, imag)."""
        bns = (self.bn_re, self.bn_im)
        params = tuple(
            t for bn in bns for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var)
        )

        def build() -> tuple[torch.Tensor, torch.Tensor]:
            scale = torch.stack([bn.weight * torch.rsqrt(bn.running_var + bn.eps) for bn in bns])
            mean = torch.stack([bn.running_mean for bn in bns])
            return scale, torch.stack([bn.bias for bn in bns]) - mean * scale

        return _derived(self, "affine", params, build)

    def forward(self, z: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """Normalise ``z + bias`` (``bias [2, C]``: a preceding convolution's, or ``None``).

        In evaluation mode (running statistics) both are one per-channel affine map of ``z``, a
        single pass instead of three; in training mode the two ``BatchNorm2d`` run as usual.
        """
        bns = (self.bn_re, self.bn_im)
        if not any(bn.training or bn.running_mean is None for bn in bns):
            scale, shift = self._affine()
            if bias is not None:
                shift = shift + bias * scale
            return torch.addcmul(shift[:, None, :, None, None], z, scale[:, None, :, None, None])
        if bias is not None:
            z = z + bias[:, None, :, None, None]
        return torch.stack((self.bn_re(z[0]), self.bn_im(z[1])))


# Frames (times streams) up to which the U-Net convolutions run as matrix products (below) instead
# of ``conv2d`` / ``conv_transpose2d``: for a few frames PyTorch's convolutions take slow generic
# paths (single-frame transposed convolutions in particular), while a product over all frequency
# positions at once runs at the speed of the offline convolution per frame (2 threads, full-size
# layers: up to 2.7x faster at 1-2 frames, mostly faster at 5). The whole streaming model, against
# the channels-last convolutions: 10 frames per call 0.82 against 0.96 real time; 12 frames 0.91
# against 0.87 and 15 frames 0.82 against 0.73, where the convolutions win, as offline and in
# training.
_GEMM_MAX_FRAMES = 10


def _derived(module: nn.Module, name: str, params: tuple[torch.Tensor, ...], build):
    """``build()``, kept on ``module`` under ``name`` while autograd is off and ``params`` are
    unchanged (no in-place update, same storage and dtype).

    Streaming runs every convolution once per 20 ms frame, and re-forming weight-sized tensors
    each time cost more than the products; training (autograd on) neither reads nor fills it.
    """
    if torch.is_grad_enabled() and any(p.requires_grad for p in params):
        return build()
    key = tuple((p._version, p.data_ptr(), p.dtype) for p in params)
    cache = module.__dict__.setdefault("_derived_cache", {})
    hit = cache.get(name)
    if hit is not None and hit[0] == key:
        return hit[1]
    value = build()
    cache[name] = (key, value)
    return value


def _gauss_kernels(
    module: nn.Module,
    w_re: torch.Tensor,
    w_im: torch.Tensor,
    b_re: torch.Tensor,
    b_im: torch.Tensor,
    layout=None,
) -> tuple[torch.Tensor, ...]:
    """``(W_r, W_r + W_i, W_i - W_r)`` (each through ``layout``, e.g. the time-tap split of the
    U-Net convolutions) and the complex bias ``[2, C]`` of a complex convolution.

    Without autograd (inference, streaming) they are kept on ``module`` (:func:`_derived`): three
    kernels per convolution, about 1.5x the convolution weights (60 MiB for the full model), and
    as much again for the matrix-product layout of the U-Net convolutions once a call of at most
    ``_GEMM_MAX_FRAMES`` frames has used it.
    """

    def build() -> tuple[torch.Tensor, ...]:
        wr, wi = (w_re, w_im) if layout is None else (layout(w_re), layout(w_im))
        return (wr, wr + wi, wi - wr, torch.stack((b_re - b_im, b_re + b_im)))

    return _derived(module, "gauss", (w_re, w_im, b_re, b_im), build)


def _gauss_product(
    xr: torch.Tensor, xi: torch.Tensor, kernels: tuple[torch.Tensor, ...], op
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W_r + i W_i) * (x_r + i x_i)`` for a linear op with three real applications, given
    :func:`_gauss_kernels`' ``(W_r, W_r + W_i, W_i - W_r, ...)``."""
    k1 = op(xr + xi, kernels[0])
    k2 = op(xi, kernels[1])
    k3 = op(xr, kernels[2])
    return k1 - k2, k1 + k3


def _gauss_inputs(z: torch.Tensor) -> torch.Tensor:
    """``[2, B, C, F, N] -> [3, B, N, F, C]``: the Gauss product's inputs ``x_r + x_i, x_i, x_r``
    with channels last, as rows for the matrix products below."""
    x = z.permute(0, 1, 4, 3, 2)
    return torch.stack((x[0] + x[1], x[1], x[0]))


def _gauss_outputs(k: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """The three products ``k [3, rows, C]`` -> ``[2, B, C, F, N]`` (``shape = (B, N, F)``)."""
    y = torch.stack((k[0] - k[1], k[0] + k[2]))
    return y.view(2, *shape, -1).permute(0, 1, 4, 3, 2)


def _freq_conv_gemm(z: torch.Tensor, weight: torch.Tensor, kf: int) -> torch.Tensor:
    """A complex convolution over frequency (kernel ``kf``, stride 2) of ``z [2, B, C, F, N]`` as
    one batched matrix product: windows of the channels-last input (a strided view) times
    ``weight [3, kf * C, C']`` (:func:`_freq_conv_weight`). Returns ``[2, B, C', F', N]``."""
    _, b, c, f, n = z.shape
    x = _gauss_inputs(z)
    f_out = (f - kf) // 2 + 1
    s = x.stride()
    windows = x.as_strided((3, b, n, f_out, kf, c), (s[0], s[1], s[2], 2 * s[3], s[3], s[4]))
    k = torch.bmm(windows.reshape(3, b * n * f_out, kf * c), weight)
    return _gauss_outputs(k, (b, n, f_out))


def _freq_conv_weight(kernels: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Gauss kernels ``[C', C, kf, 1]`` -> ``[3, kf * C, C']`` rows ordered (tap, channel)."""
    return torch.stack([w[..., 0].permute(2, 1, 0).reshape(-1, w.shape[0]) for w in kernels[:3]])


def _freq_conv_transpose_gemm(z: torch.Tensor, weight: torch.Tensor, kf: int) -> torch.Tensor:
    """A complex transposed convolution over frequency (kernel ``kf``, stride 2) of
    ``z [2, B, C, F, N]`` as one batched matrix product, in polyphase form: output bins ``2j``
    and ``2j + 1`` are both sums over the ``m = ceil(kf / 2)`` input bins ``j - m + 1 .. j``, so
    windows of the zero-padded input times ``weight [3, m * C, 2 * C']``
    (:func:`_freq_conv_transpose_weight`) give the output with the two phases interleaved, in
    place (no overlap-add pass). Returns ``[2, B, C', 2 (F - 1) + kf, N]``."""
    _, b, c, f, n = z.shape
    m = (kf + 1) // 2
    x = F.pad(_gauss_inputs(z), (0, 0, m - 1, m - 1))
    j = f + m - 1
    s = x.stride()
    windows = x.as_strided((3, b, n, j, m, c), (s[0], s[1], s[2], s[3], s[3], s[4]))
    k = torch.bmm(windows.reshape(3, b * n * j, m * c), weight)
    f_out = 2 * (f - 1) + kf
    k = k.view(3, b * n, 2 * j, -1)[:, :, :f_out]
    return _gauss_outputs(k.reshape(3, b * n * f_out, -1), (b, n, f_out))


def _freq_conv_transpose_weight(kernels: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Gauss kernels ``[C, C', kf, 1]`` -> ``[3, m * C, 2 * C']``: window position ``t`` and
    phase ``r`` take tap ``2 (m - 1 - t) + r`` (zero past the kernel)."""
    c, c_out, kf = kernels[0].shape[:3]
    m = (kf + 1) // 2
    out = []
    for w in kernels[:3]:
        poly = w.new_zeros(m, c, 2, c_out)
        for t in range(m):
            for r in range(2):
                tap = 2 * (m - 1 - t) + r
                if tap < kf:
                    poly[t, :, r] = w[:, :, tap, 0]
        out.append(poly.reshape(m * c, 2 * c_out))
    return torch.stack(out)


def _complex_freq_conv(
    module: nn.Module,
    z: torch.Tensor,
    params: tuple[torch.Tensor, ...],
    kernels: tuple[torch.Tensor, ...],
    transpose: bool,
) -> torch.Tensor:
    """``module``'s complex (transposed) convolution over frequency, stride 2, of
    ``z [2, B, C, F, N]`` with its Gauss ``kernels`` (time taps split as channels): matrix
    products for at most ``_GEMM_MAX_FRAMES`` frames x streams, the convolutions otherwise."""
    kf = kernels[0].shape[2]
    if z.shape[1] * z.shape[-1] <= _GEMM_MAX_FRAMES:
        if transpose:
            to_weight, gemm = _freq_conv_transpose_weight, _freq_conv_transpose_gemm
        else:
            to_weight, gemm = _freq_conv_weight, _freq_conv_gemm
        return gemm(z, _derived(module, "gemm", params, lambda: to_weight(kernels)), kf)
    conv = F.conv_transpose2d if transpose else F.conv2d
    # Channels last (one copy of z): oneDNN's fast path; for the transposed convolutions the
    # default layout falls back to a generic kernel about 2.4x slower.
    z = z.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
    real, imag = _gauss_product(z[0], z[1], kernels, lambda x, w: conv(x, w, stride=(2, 1)))
    return torch.stack((real, imag))


class ComplexEncoder(nn.Module):
    """Complex Conv2d (kernel ``(k_f, 2)``, stride ``(2, 1)``, time padding 1) + BN + LeakyReLU.

    Time is handled by partial products: the frequency convolution of each frame with the two
    time taps, ``Q_0`` (applied to the next frame's output) and ``Q_1`` (this frame's), so that
    ``out[j] = Q_0[j-1] + Q_1[j] + b``. The state is ``Q_0`` of the last frame (zeros before the
    first: the left padding); ``final`` adds the frame of the right padding.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_f: int):
        super().__init__()
        self.conv = _ComplexPair(
            nn.Conv2d, ("conv_re", "conv_im"), in_channels, out_channels, (kernel_f, 2), (2, 1)
        )
        self.bn = ComplexBatchNorm(out_channels)
        self.out_channels = out_channels

    def _taps(self, weight: torch.Tensor) -> torch.Tensor:
        # [Cout, Cin, kf, 2] -> [2 * Cout, Cin, kf, 1]: tap 0 channels first, then tap 1.
        return torch.cat([weight[..., 0:1], weight[..., 1:2]], dim=0)

    def forward(
        self, z: torch.Tensor, state: torch.Tensor | None, final: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        conv_re, conv_im = self.conv.kernels()
        c = self.out_channels
        if state is None:
            state = z.new_zeros(())
        params = (conv_re.weight, conv_im.weight, conv_re.bias, conv_im.bias)
        kernels = _gauss_kernels(self, *params, self._taps)
        if z.shape[-1] > 0:
            q = _complex_freq_conv(self, z, params, kernels, transpose=False)  # [2, B, 2C, F', N]
            q0, q1 = q[:, :, :c], q[:, :, c:]
            if q0.shape[-1] == 1:
                out = q1 + state  # one frame (streaming): the last frame's Q_0 alone
            else:
                out = q1 + torch.cat([state.expand_as(q0[..., :1]), q0[..., :-1]], dim=-1)
            last_q0 = q0[..., -1:]
        else:
            out = None
            last_q0 = state
        if final:
            tail = last_q0 if last_q0.dim() > 0 else None
            if tail is None:
                raise ValueError("ComplexEncoder: final frame requested before any input frame")
            out = tail if out is None else torch.cat([out, tail], dim=-1)
        if out is None:
            f_out = (z.shape[3] - conv_re.weight.shape[2]) // 2 + 1
            return z.new_zeros(z.shape[:2] + (c, f_out, 0)), last_q0
        return _leaky_relu(self.bn(out, kernels[3])), last_q0


class ComplexDecoder(nn.Module):
    """Complex ConvTranspose2d (kernel ``(k_f, 2)``, stride ``(2, 1)``, time crop 1) + BN + LReLU.

    ``out[j] = P_0[j+1] + P_1[j] + b`` with the per-frame partial products ``P_k`` of the time
    taps; the state is ``P_1`` of the last frame (absent before the first frame, so the first call
    returns one frame fewer than it receives, as the crop of the official decoder).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_f: int, activation: bool = True):
        super().__init__()
        self.transconv = _ComplexPair(
            nn.ConvTranspose2d,
            ("tconv_re", "tconv_im"),
            in_channels,
            out_channels,
            (kernel_f, 2),
            (2, 1),
            (0, 1),
        )
        self.bn = ComplexBatchNorm(out_channels)
        self.out_channels = out_channels

    def _taps(self, weight: torch.Tensor) -> torch.Tensor:
        # [Cin, Cout, kf, 2] -> [Cin, 2 * Cout, kf, 1]
        return torch.cat([weight[..., 0:1], weight[..., 1:2]], dim=1)

    def forward(
        self, z: torch.Tensor, state: torch.Tensor | None, final: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        tconv_re, tconv_im = self.transconv.kernels()
        c = self.out_channels
        if z.shape[-1] == 0:
            f_out = (z.shape[3] - 1) * 2 + tconv_re.weight.shape[2]
            return z.new_zeros(z.shape[:2] + (c, f_out, 0)), state
        params = (tconv_re.weight, tconv_im.weight, tconv_re.bias, tconv_im.bias)
        kernels = _gauss_kernels(self, *params, self._taps)
        p = _complex_freq_conv(self, z, params, kernels, transpose=True)  # [2, B, 2C, F', N]
        p0, p1 = p[:, :, :c], p[:, :, c:]
        if state is None:
            out = p0[..., 1:] + p1[..., :-1]
        else:
            out = p0 + (state if p1.shape[-1] == 1 else torch.cat([state, p1[..., :-1]], dim=-1))
        new_state = p1[..., -1:]
        return _leaky_relu(self.bn(out, kernels[3])), new_state


class ComplexSE(nn.Module):
    """Complex squeeze-and-excitation (official ``SELayer``, reduction 8) on ``[2, B, C, F, T]``.

    ``s_r, s_i`` are the means of the real and imaginary parts over frequency and time
    (``pooling="global"``, official) or over frequency and the frames so far (``"causal"``);
    the gains are ``g_r = fc_r(s_r) - fc_i(s_i)``, ``g_i = fc_r(s_i) + fc_i(s_r)``, and the real
    part is scaled by ``g_r``, the imaginary part by ``g_i``.
    """

    def __init__(self, channels: int, reduction: int = 8, pooling: str = "global"):
        super().__init__()
        hidden = channels // reduction

        def branch() -> nn.Sequential:
            return nn.Sequential(
                nn.Linear(channels, hidden),
                nn.ReLU(),
                nn.Linear(hidden, channels),
                nn.Sigmoid(),
            )

        self.fc_r = branch()
        self.fc_i = branch()
        self.pooling = pooling

    def _branches(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(fc_r(s), fc_i(s))`` on both parts at once, the two branches as one pass: their
        first layers as one product, their second layers as one block-diagonal product (half
        the operations of two ``Sequential`` calls; streaming runs 24 SE layers per frame)."""
        (lin1_r, _, lin2_r, _), (lin1_i, _, lin2_i, _) = self.fc_r, self.fc_i
        params = (lin1_r.weight, lin1_r.bias, lin1_i.weight, lin1_i.bias)
        params += (lin2_r.weight, lin2_r.bias, lin2_i.weight, lin2_i.bias)

        def build() -> tuple[torch.Tensor, ...]:
            return (
                torch.cat((lin1_r.weight, lin1_i.weight)),
                torch.cat((lin1_r.bias, lin1_i.bias)),
                torch.block_diag(lin2_r.weight, lin2_i.weight),
                torch.cat((lin2_r.bias, lin2_i.bias)),
            )

        w1, b1, w2, b2 = _derived(self, "branches", params, build)
        gains = torch.sigmoid(F.linear(F.relu(F.linear(s, w1, b1)), w2, b2))
        c = lin2_r.weight.shape[0]
        return gains[..., :c], gains[..., c:]

    def forward(
        self, z: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None, final: bool
    ) -> tuple[torch.Tensor, Any]:
        if z.shape[-1] == 0:
            return z, state
        per_frame = z.mean(dim=3)  # [2, B, C, T]
        if self.pooling == "global":
            if state is not None or not final:
                raise ValueError(
                    "FRCRN with se_pooling='global' (the official model) averages over the whole "
                    "utterance and cannot stream; build it with se_pooling='causal' to stream"
                )
            pooled = per_frame.mean(dim=-1, keepdim=True)  # [2, B, C, 1]
            new_state = None
        else:
            # State: the running sum [2, B, C] and the number of frames so far (an int); a
            # single frame (streaming) needs neither cumsum nor a tensor of step counts.
            total, count = (None, 0) if state is None else state
            n = per_frame.shape[-1]
            cumulative = per_frame.cumsum(dim=-1) if n > 1 else per_frame
            if total is not None:
                cumulative = cumulative + total[..., None]
            if n == 1:
                pooled = cumulative / (count + 1)
            else:
                steps = torch.arange(count + 1, count + n + 1, device=z.device)
                pooled = cumulative / steps.to(per_frame.dtype)
            new_state = (cumulative[..., -1], count + n)
        s = pooled.transpose(-1, -2)  # [2, B, T', C]
        by_r, by_i = self._branches(s)
        g_r = by_r[0] - by_i[1]
        g_i = by_r[1] + by_i[0]
        gains = torch.stack((g_r, g_i)).transpose(-1, -2)[:, :, :, None, :]  # [2, B, C, 1, T']
        return z * gains, new_state


def _combine(re: torch.Tensor, im: torch.Tensor) -> torch.Tensor:
    """``[y_r; y_i]`` of a complex layer from its real and imaginary mixers' outputs on
    ``[x_r; x_i]``: ``y_r = F_re(x_r) - F_im(x_i)``, ``y_i = F_re(x_i) + F_im(x_r)``."""
    n = re.shape[0] // 2
    return torch.cat((re[:n] - im[n:], re[n:] + im[:n]))


class ComplexFSMN(nn.Module):
    """Complex FSMN layers (official ``ComplexUniDeepFsmn_L1`` / ``ComplexUniDeepFsmn``).

    Each layer holds a real and an imaginary ``fsmn`` mixer; ``y = F_re(x) * ...`` as complex
    multiplication: ``y_r = F_re(x_r) - F_im(x_i)``, ``y_i = F_re(x_i) + F_im(x_r)``.

    Args:
        channels: width of the sequence features.
        layers: 1 (``_L1``, along frequency) or 2 (bottleneck, along time).
        lorder: FSMN memory order (20).
        axis: ``"freq"`` (sequence over frequency bins of each frame, channels = ``C``) or
            ``"time"`` (sequence over frames, features = ``C * F``; carries streaming state).
    """

    def __init__(self, channels: int, layers: int = 1, lorder: int = 20, axis: str = "freq"):
        super().__init__()
        self.layers = layers
        self.axis = axis
        for i in range(1, layers + 1):
            for part in ("re", "im"):
                mixer = create_mixer("fsmn", d_model=channels, lorder=lorder, hidden_size=channels)
                self.add_module(f"fsmn_{part}_L{i}", mixer)

    def _layer(self, i: int, both: torch.Tensor, state: Any) -> tuple:
        """Layer ``i`` on ``both = [x_r; x_i]`` (real parts, then imaginary parts, stacked along
        the batch): each real FSMN runs once on both parts; returns ``[y_r; y_i]`` and states."""
        f_re, f_im = getattr(self, f"fsmn_re_L{i}"), getattr(self, f"fsmn_im_L{i}")
        s_re, s_im = (None, None) if state is None else state
        re, s_re = f_re(both, s_re)
        im, s_im = f_im(both, s_im)
        return _combine(re, im), (s_re, s_im)

    def _layer_paired(self, i: int, both: torch.Tensor) -> torch.Tensor:
        """:meth:`_layer` without state, its two mixers as one wider pass
        (:func:`~mixerzoo.core.mixers.fsmn.fsmn_side_by_side`, with their stacked weights kept
        between calls): a third of the operations, which is what a frame's worth of frequency
        sequences costs (streaming runs these layers 24 times per 20 ms frame)."""
        pair = (getattr(self, f"fsmn_re_L{i}"), getattr(self, f"fsmn_im_L{i}"))
        params = tuple(t for m in pair for t in (m.linear.weight, m.linear.bias, m.memory_weight))
        stacked = _derived(self, f"paired_L{i}", params, lambda: stacked_fsmn_weights(pair))
        y = fsmn_side_by_side(pair, both, stacked)  # [2n, F, 2C]: F_re(both), then F_im(both)
        c = both.shape[2]
        return _combine(y[..., :c], y[..., c:])

    def forward(self, z: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        two, b, c, f, t = z.shape
        if t == 0:
            return z, state
        # [x_r; x_i] as one batch of sequences, formed by the one copy the layout change needs.
        if self.axis == "freq":
            seq = z.permute(0, 1, 4, 3, 2).reshape(2 * b * t, f, c)  # sequences over frequency
        else:
            seq = z.reshape(2, b, c * f, t).transpose(-1, -2).reshape(2 * b, t, c * f)
        new_states = []
        # A few frames (streaming): the paired pass; long calls run faster without it (0.90x).
        paired = self.axis == "freq" and b * t <= _GEMM_MAX_FRAMES
        for i in range(1, self.layers + 1):
            if paired:
                seq = self._layer_paired(i, seq)
                continue
            layer_state = None if (state is None or self.axis == "freq") else state[i - 1]
            seq, s = self._layer(i, seq, layer_state)
            new_states.append(s)
        if self.axis == "freq":
            out = seq.view(2, b, t, f, c).permute(0, 1, 4, 3, 2)
            return out, None
        out = seq.view(2, b, t, c * f).transpose(-1, -2).reshape(2, b, c, f, t)
        return out, tuple(new_states)


class ComplexLinear(nn.Module):
    """The U-Net's final complex 1x1 convolution (official ``linear = ComplexConv2d(C, 1, 1)``)."""

    def __init__(self, in_channels: int, out_channels: int = 1):
        super().__init__()
        self.conv_re = nn.Conv2d(in_channels, out_channels, 1)
        self.conv_im = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.shape[-1] == 0:
            return z[:, :, :1]
        kernels = _gauss_kernels(
            self, self.conv_re.weight, self.conv_im.weight, self.conv_re.bias, self.conv_im.bias
        )
        real, imag = _gauss_product(z[0], z[1], kernels, F.conv2d)
        return torch.stack((real, imag)) + kernels[3][:, None, :, None, None]


class ComplexUNet(nn.Module):
    """One FRCRN complex U-Net (official ``UNet(complex=True, model_depth=14)``).

    Works on ``[2, B, 1, F, T]`` spectra (real and imaginary part first) and returns the mask
    logits of the same shape. ``forward(z, state, final)`` processes the frames ``z`` continuing
    from ``state`` and returns the output frames that are complete (see the module docstring).
    """

    def __init__(self, channels: int = 128, fsmn_order: int = 20, se_pooling: str = "global"):
        super().__init__()
        depth = len(_ENC_KF)
        self.depth = depth
        enc_ch = [1] + [channels] * depth
        dec_in = [channels] + [2 * channels] * (depth - 1)
        dec_out = [channels] * (depth - 1) + [1]
        self.fsmn = ComplexFSMN(channels, layers=2, lorder=fsmn_order, axis="time")
        # Official registration: fsmn_enc[0] and fsmn_dec[depth-1], se_layers_dec[depth-2] exist
        # but are never called, and se_layers_enc[depth-1]'s output is never read by a decoder
        # (all kept for parameter parity and checkpoint loading).
        self.fsmn_enc = nn.ModuleList(
            ComplexFSMN(channels, 1, fsmn_order, "freq") for _ in range(depth)
        )
        self.encoders = nn.ModuleList(
            ComplexEncoder(enc_ch[i], enc_ch[i + 1], _ENC_KF[i]) for i in range(depth)
        )
        self.se_layers_enc = nn.ModuleList(ComplexSE(channels, 8, se_pooling) for _ in range(depth))
        self.fsmn_dec = nn.ModuleList(
            ComplexFSMN(channels, 1, fsmn_order, "freq") for _ in range(depth)
        )
        self.decoders = nn.ModuleList(
            ComplexDecoder(dec_in[i], dec_out[i], _DEC_KF[i]) for i in range(depth)
        )
        self.se_layers_dec = nn.ModuleList(
            ComplexSE(channels, 8, se_pooling) for _ in range(depth - 1)
        )
        self.linear = ComplexLinear(1, 1)

    def init_state(self) -> dict[str, Any]:
        d = self.depth
        return {
            "enc": [None] * d,
            "se_enc": [None] * d,
            "fsmn": None,
            "dec": [None] * d,
            "se_dec": [None] * d,
            # Skip frames produced by the encoders and not yet consumed by the decoders.
            "skips": [None] * (d + 1),
        }

    def forward(
        self, z: torch.Tensor, state: dict[str, Any] | None = None, final: bool = True
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        d = self.depth
        state = self.init_state() if state is None else dict(state)
        enc, se_enc, dec, se_dec = (list(state[k]) for k in ("enc", "se_enc", "dec", "se_dec"))
        skips = list(state["skips"])

        def push(level: int, frames: torch.Tensor) -> None:
            skips[level] = frames if skips[level] is None else torch.cat([skips[level], frames], -1)

        def pop(level: int, n: int) -> torch.Tensor:
            frames = skips[level]
            skips[level] = frames[..., n:]
            return frames[..., :n]

        x = z
        push(0, x)
        for i, encoder in enumerate(self.encoders):
            if i > 0:
                x, _ = self.fsmn_enc[i](x)
            x, enc[i] = encoder(x, enc[i], final)
            skip, se_enc[i] = self.se_layers_enc[i](x, se_enc[i], final)
            push(i + 1, skip)
        p, fsmn_state = self.fsmn(x, state["fsmn"])
        for i, decoder in enumerate(self.decoders):
            p, dec[i] = decoder(p, dec[i], final)
            if i == d - 1:
                break
            p, _ = self.fsmn_dec[i](p)
            if i < d - 2:
                p, se_dec[i] = self.se_layers_dec[i](p, se_dec[i], final)
            p = torch.cat([p, pop(d - 1 - i, p.shape[-1])], dim=2)
        out = self.linear(p)
        new_state = {
            "enc": enc,
            "se_enc": se_enc,
            "fsmn": fsmn_state,
            "dec": dec,
            "se_dec": se_dec,
            "skips": skips,
        }
        return out, new_state


@dataclass
class FRCRNOutput:
    """What :meth:`FRCRN.forward_frames` returns.

    Attributes:
        wav: ``[B, L']`` enhanced waveform of the framed signal.
        spec: ``[B, 2, F, N]`` enhanced complex spectrum (real, imaginary).
        mask: ``[B, 2, F, N]`` complex ratio mask ``M1 + M2`` (real, imaginary).
    """

    wav: torch.Tensor
    spec: torch.Tensor
    mask: torch.Tensor


@register_model("frcrn", domain="audio")
class FRCRN(nn.Module):
    """FRCRN speech enhancer (see the module docstring): noisy ``[B, L]`` -> enhanced ``[B, L]``.

    Args:
        sample_rate: rate the model works at (16 kHz for the official model); inputs are expected
            at this rate (:mod:`mixerzoo.audio.inference` resamples files).
        win_len: STFT window (640).
        hop: STFT hop (320).
        fft_len: FFT size (640).
        channels: U-Net width (128; smaller for a CPU variant).
        fsmn_order: FSMN memory order (20).
        se_pooling: ``"global"`` (official, offline only) or ``"causal"`` (streamable).
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        win_len: int = 640,
        hop: int = 320,
        fft_len: int = 640,
        channels: int = 128,
        fsmn_order: int = 20,
        se_pooling: str = "global",
    ):
        super().__init__()
        if se_pooling not in ("global", "causal"):
            raise ValueError(f"FRCRN: se_pooling must be 'global' or 'causal', got {se_pooling!r}")
        if fft_len != 640 or win_len != 640 or hop != 320:
            # The U-Net's kernel sizes are fixed for 321 frequency bins (FFT 640).
            raise ValueError(
                f"FRCRN: the depth-14 U-Net is built for 321 frequency bins: use win_len=640, "
                f"hop=320, fft_len=640 (got {win_len}, {hop}, {fft_len})"
            )
        self.sample_rate = sample_rate
        self.win_len, self.hop, self.fft_len = win_len, hop, fft_len
        self.freq_bins = fft_len // 2 + 1
        self.se_pooling = se_pooling
        analysis, synthesis, window = _stft_kernels(win_len, fft_len)
        self.stft = _STFTKernel(analysis)
        self.istft = _STFTKernel(synthesis, window)
        self.unet = ComplexUNet(channels, fsmn_order, se_pooling)
        self.unet2 = ComplexUNet(channels, fsmn_order, se_pooling)

    @property
    def causal_streaming(self) -> bool:
        """Whether :class:`FRCRNStreamer` can run this model (``se_pooling="causal"``)."""
        return self.se_pooling == "causal"

    @property
    def latency_frames(self) -> int:
        """Frames of look-ahead of the two U-Nets (7 each)."""
        return 2 * self.unet.depth

    # -- framing -----------------------------------------------------------------------------

    def padding(self, length: int) -> tuple[int, int]:
        """Zeros ``(front, back)`` that :meth:`forward` adds to a signal of ``length`` samples."""
        frames = -(-length // self.hop) + 1
        total = self.hop * (frames + 1)
        return self.hop, total - self.hop - length

    def pad(self, wav: torch.Tensor) -> torch.Tensor:
        """``[B, L] -> [B, L']`` zero-padded so that every sample is covered by two frames."""
        front, back = self.padding(wav.shape[-1])
        return F.pad(wav, (front, back))

    def analyse(self, wav: torch.Tensor) -> torch.Tensor:
        """Complex STFT of a framed signal: ``[B, L'] -> [2, B, 1, F, N]``."""
        spec = F.conv1d(wav.unsqueeze(1), self.stft.weight, stride=self.hop)  # [B, 2F, N]
        f = self.freq_bins
        return torch.stack((spec[:, :f], spec[:, f:]))[:, :, None]

    def masks(
        self, spec: torch.Tensor, state: dict[str, Any] | None = None, final: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Run the two U-Nets: ``[2, B, 1, F, N] -> (tanh(U1), tanh(U2), state)``."""
        state = state or {}
        out1, s1 = self.unet(spec, state.get("unet"), final)
        out2, s2 = self.unet2(out1, state.get("unet2"), final)
        return torch.tanh(out1), torch.tanh(out2), {"unet": s1, "unet2": s2}

    def synthesise(self, spec: torch.Tensor) -> torch.Tensor:
        """Official iSTFT: ``[B, 2F, N] -> [B, (N - 1) * hop + win]``."""
        wav = F.conv_transpose1d(spec, self.istft.weight, stride=self.hop)
        power = self.istft.window.square().expand(1, -1, spec.shape[-1])
        norm = F.conv_transpose1d(
            power,
            torch.eye(self.win_len, device=spec.device, dtype=spec.dtype)[:, None, :],
            stride=self.hop,
        )
        return (wav / (norm + 1e-8)).squeeze(1)

    @staticmethod
    def apply_mask(spec: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Complex product of ``[2, ...]`` spectrum and mask."""
        return torch.stack(
            (spec[0] * mask[0] - spec[1] * mask[1], spec[0] * mask[1] + spec[1] * mask[0])
        )

    def forward_frames(self, framed: torch.Tensor) -> FRCRNOutput:
        """The official computation (``DCCRN.forward``) on a framed signal ``[B, L']``."""
        spec = self.analyse(framed)
        m1, m2, _ = self.masks(spec)
        mask = m1 + m2  # [2, B, 1, F, N]
        est = self.apply_mask(spec, mask)[:, :, 0]  # [2, B, F, N]
        wav = self.synthesise(torch.cat([est[0], est[1]], dim=1))
        return FRCRNOutput(wav=wav, spec=est.transpose(0, 1), mask=mask[:, :, 0].transpose(0, 1))

    def forward(self, wav: torch.Tensor, return_output: bool = False):
        """Enhance ``wav [B, L]`` -> ``[B, L]`` (or the :class:`FRCRNOutput` of the framed signal).

        The input is padded as :meth:`pad` says; the output is cropped back to ``L`` samples.
        """
        if wav.dim() != 2:
            raise ValueError(f"FRCRN expects a waveform [B, L], got shape {tuple(wav.shape)}")
        length = wav.shape[-1]
        out = self.forward_frames(self.pad(wav))
        if return_output:
            return out
        return out.wav[:, self.hop : self.hop + length]


class FRCRNStreamer:
    """Frame-by-frame FRCRN with carried state; the output equals :meth:`FRCRN.forward`.

    Feed chunks of any size with :meth:`process` (``[B, n]`` samples); it returns the enhanced
    samples that are complete so far. :meth:`flush` ends the stream and returns the rest. The
    concatenation of all outputs equals ``model(x)`` for the whole signal ``x``.

    Each new STFT frame (one hop, 20 ms at 16 kHz) runs through both U-Nets once: encoders,
    SE running means, the bottleneck FSMN and the decoders carry their state, and the skip
    connections wait in queues for the decoders, which trail the encoders by one frame per level.
    Output latency: :attr:`FRCRN.latency_frames` hops + one window.

    Args:
        model: an :class:`FRCRN` with ``se_pooling="causal"`` (in eval mode).
        batch_size: streams processed together.
    """

    def __init__(self, model: FRCRN, batch_size: int = 1):
        if not model.causal_streaming:
            raise ValueError(
                "FRCRNStreamer needs FRCRN(se_pooling='causal'): the official global SE pooling "
                "averages over the whole utterance, which a stream does not have"
            )
        self.model = model
        self.batch_size = batch_size
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.reset()

    def reset(self) -> None:
        """Start a new stream."""
        hop = self.model.hop
        self._buffer = torch.zeros(self.batch_size, hop, device=self.device, dtype=self.dtype)
        self._state: dict[str, Any] | None = None
        self._spec_queue: torch.Tensor | None = None  # input frames awaiting their mask
        self._mask1_queue: torch.Tensor | None = None  # tanh(U1) frames awaiting tanh(U2)
        self._ola_tail = None  # overlap-add tail (samples and normaliser) of the last frame
        self._received = 0
        self._emitted = 0

    def _frames(self) -> torch.Tensor | None:
        hop, win = self.model.hop, self.model.win_len
        n = (self._buffer.shape[-1] - win) // hop + 1 if self._buffer.shape[-1] >= win else 0
        if n <= 0:
            return None
        used = self._buffer[:, : (n - 1) * hop + win]
        self._buffer = self._buffer[:, n * hop :]
        return used

    def _run(self, framed: torch.Tensor | None, final: bool) -> torch.Tensor:
        model = self.model
        if framed is not None:
            spec = model.analyse(framed)
        else:
            spec = torch.zeros(
                2, self.batch_size, 1, model.freq_bins, 0, device=self.device, dtype=self.dtype
            )
        state = self._state or {}
        out1, s1 = model.unet(spec, state.get("unet"), final)
        out2, s2 = model.unet2(out1, state.get("unet2"), final)
        self._state = {"unet": s1, "unet2": s2}

        def queue(old, new):
            return new if old is None else torch.cat([old, new], dim=-1)

        self._spec_queue = queue(self._spec_queue, spec)
        self._mask1_queue = queue(self._mask1_queue, torch.tanh(out1))
        n = out2.shape[-1]
        mask = self._mask1_queue[..., :n] + torch.tanh(out2)
        spec_now = self._spec_queue[..., :n]
        self._mask1_queue = self._mask1_queue[..., n:]
        self._spec_queue = self._spec_queue[..., n:]
        est = model.apply_mask(spec_now, mask)[:, :, 0]  # [2, B, F, n]
        return self._overlap_add(torch.cat([est[0], est[1]], dim=1), final)

    def _overlap_add(self, spec: torch.Tensor, final: bool) -> torch.Tensor:
        model = self.model
        hop, win = model.hop, model.win_len
        b = self.batch_size
        n = spec.shape[-1]
        if n == 0 and not final:
            return spec.new_zeros(b, 0)
        # Frame-wise synthesis and window power, overlap-added with the tail of the last frame.
        wav = F.conv_transpose1d(spec, model.istft.weight, stride=hop).squeeze(1)
        power = model.istft.window.square().reshape(1, win).expand(n, win)
        norm = (
            F.fold(
                power.T.unsqueeze(0), (1, (n - 1) * hop + win), (1, win), stride=(1, hop)
            ).reshape(-1)
            if n > 0
            else spec.new_zeros(0)
        )
        if self._ola_tail is not None:
            tail_wav, tail_norm = self._ola_tail
            if n > 0:
                wav = wav.clone()
                norm = norm.clone()
                wav[:, : win - hop] += tail_wav
                norm[: win - hop] += tail_norm
            else:
                wav, norm = tail_wav, tail_norm
        if final:
            done_wav, done_norm = wav, norm
            self._ola_tail = None
        else:
            keep = win - hop
            done_wav, done_norm = wav[:, :-keep], norm[:-keep]
            self._ola_tail = (wav[:, -keep:], norm[-keep:])
        return done_wav / (done_norm + 1e-8)

    @torch.no_grad()
    def process(self, chunk: torch.Tensor) -> torch.Tensor:
        """Push ``[B, n]`` samples; return the enhanced samples completed so far ``[B, m]``."""
        if chunk.dim() != 2 or chunk.shape[0] != self.batch_size:
            raise ValueError(
                f"FRCRNStreamer.process: expected a chunk [{self.batch_size}, n], got "
                f"{tuple(chunk.shape)}"
            )
        self._received += chunk.shape[-1]
        self._buffer = torch.cat([self._buffer, chunk.to(self.device, self.dtype)], dim=-1)
        framed = self._frames()
        if framed is None:
            return chunk.new_zeros(self.batch_size, 0)
        return self._deliver(self._run(framed, final=False))

    @torch.no_grad()
    def flush(self) -> torch.Tensor:
        """End the stream: pad as :meth:`FRCRN.pad` does and return the remaining samples."""
        if self._received == 0:
            raise ValueError("FRCRNStreamer.flush: no samples were processed")
        _, back = self.model.padding(self._received)
        self._buffer = torch.cat([self._buffer, self._buffer.new_zeros(self.batch_size, back)], -1)
        framed = self._frames()
        out = self._deliver(self._run(framed, final=True))
        self.reset()
        return out

    def _deliver(self, samples: torch.Tensor) -> torch.Tensor:
        # The synthesised stream starts with the front padding (one hop) and may run past the
        # input length at the end; cut both.
        start = max(self.model.hop - self._emitted, 0)
        stop_total = self.model.hop + self._received
        end = max(min(samples.shape[-1], stop_total - self._emitted), 0)
        self._emitted += samples.shape[-1]
        return samples[:, min(start, end) : end]


def complex_ideal_ratio_mask(
    noisy: torch.Tensor, clean: torch.Tensor, win_len: int = 640, hop: int = 320, fft_len: int = 640
) -> torch.Tensor:
    """The official training target: clipped complex ideal ratio mask ``[B, 2, F, N]``.

    ``M = S Y* / |Y|^2`` from ``torch.stft`` (symmetric Hann window, no centring) of the noisy
    ``Y`` and clean ``S`` framed signals ``[B, L']``; entries above 2 are set to 1 and below -2
    to -1, as in ClearerVoice-Studio's ``loss_complex_mask``.
    """
    window = torch.hann_window(win_len, periodic=False, device=noisy.device, dtype=noisy.dtype)

    def stft(x: torch.Tensor) -> torch.Tensor:
        return torch.stft(x, fft_len, hop, win_len, window, center=False, return_complex=True)

    s, y = stft(clean), stft(noisy)
    power = y.real.square() + y.imag.square() + 1e-8
    real = (s.real * y.real + s.imag * y.imag) / power
    imag = (s.imag * y.real - s.real * y.imag) / power
    mask = torch.stack((real, imag), dim=1)
    mask = torch.where(mask > 2, torch.ones_like(mask), mask)
    return torch.where(mask < -2, -torch.ones_like(mask), mask)


def frcrn_loss(
    model: FRCRN, noisy: torch.Tensor, clean: torch.Tensor, output: FRCRNOutput
) -> dict[str, torch.Tensor]:
    """Official FRCRN loss: ``-SI-SNR(est, clean) + fft_len * (MSE(M_r) + MSE(M_i))``.

    Args:
        model: the FRCRN that produced ``output``.
        noisy, clean: ``[B, L]`` waveforms (unpadded; padded here as the model pads).
        output: ``model(noisy, return_output=True)``.

    Returns:
        ``{"loss", "si_snr", "mask_mse"}``: the total, the mean SI-SNR (dB) of the cropped output
        and the scaled mask MSE.
    """
    from mixerzoo.audio.metrics import si_snr

    length = noisy.shape[-1]
    noisy_p, clean_p = model.pad(noisy), model.pad(clean)
    target = complex_ideal_ratio_mask(noisy_p, clean_p, model.win_len, model.hop, model.fft_len)
    est = output.wav[:, model.hop : model.hop + length]
    sisnr = si_snr(est, clean).mean()
    mse = F.mse_loss(output.mask[:, 0], target[:, 0]) + F.mse_loss(output.mask[:, 1], target[:, 1])
    mask_mse = mse * model.fft_len
    return {"loss": mask_mse - sisnr, "si_snr": sisnr, "mask_mse": mask_mse}


def frcrn_official_key_map(official: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map an official FRCRN state dict (ClearerVoice-Studio ``DCCRN``) to :class:`FRCRN` keys.

    The official checkpoint (``FRCRN_SE_16K``: ``torch.load(path)["model"]``, keys optionally
    prefixed by ``module.``) holds each U-Net sub-module twice: under ``encoder{i}``,
    ``decoder{i}``, ``fsmn_enc{i}``, ``fsmn_dec{i}``, ``se_layer_enc{i}``, ``se_layer_dec{i}``
    (``add_module``) and under the lists ``encoders.{i}``, ``decoders.{i}``, ``fsmn_enc.{i}``,
    ``fsmn_dec.{i}``, ``se_layers_enc.{i}``, ``se_layers_dec.{i}``. The list names are ours; the
    ``add_module`` aliases are dropped (after checking they equal the list entries), as is the
    constant ``istft.enframe``. FSMN memory kernels ``*.conv1.weight [C, 1, lorder, 1]`` become
    ``*.memory_weight [C, lorder]`` (same tap order). Every other key is unchanged.
    """
    aliases = {
        "encoder": "encoders",
        "decoder": "decoders",
        "fsmn_enc": "fsmn_enc",
        "fsmn_dec": "fsmn_dec",
        "se_layer_enc": "se_layers_enc",
        "se_layer_dec": "se_layers_dec",
    }
    import re

    alias_re = re.compile(r"^(unet2?)\.(" + "|".join(aliases) + r")(\d+)\.(.*)$")
    out: dict[str, torch.Tensor] = {}
    pending_alias: dict[str, torch.Tensor] = {}
    for key, value in official.items():
        key = key[len("module.") :] if key.startswith("module.") else key
        if key == "istft.enframe":
            continue
        match = alias_re.match(key)
        if match:
            net, name, index, rest = match.groups()
            pending_alias[f"{net}.{aliases[name]}.{index}.{rest}"] = value
            continue
        if key.endswith(".conv1.weight") and value.dim() == 4:
            key = key[: -len(".conv1.weight")] + ".memory_weight"
            value = value[:, 0, :, 0]
        out[key] = value
    for key, value in pending_alias.items():
        mapped = key
        if key.endswith(".conv1.weight") and value.dim() == 4:
            mapped = key[: -len(".conv1.weight")] + ".memory_weight"
            value = value[:, 0, :, 0]
        if mapped in out:
            if not torch.equal(out[mapped], value):
                raise ValueError(f"official checkpoint: alias of {mapped} holds different values")
        else:
            out[mapped] = value
    return out
