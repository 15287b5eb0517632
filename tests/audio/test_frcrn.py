"""FRCRN: parameter counts, STFT, official checkpoint layout and forward, streaming = offline.

The reference forward below is written from the official ClearerVoice-Studio code as read
(``DCCRN``/``UNet``/``complex_nn``/``SELayer``): four real convolutions per complex convolution,
time padding by the convolutions themselves, BN in eval mode, SE pooled over frequency and time,
FSMN memory as a padded ``Conv2d`` — none of which the model under test uses.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mixerzoo.audio.inference import load_model
from mixerzoo.audio.models.frcrn import (
    _GEMM_MAX_FRAMES,
    FRCRN,
    ComplexBatchNorm,
    ComplexFSMN,
    ComplexSE,
    FRCRNStreamer,
    _freq_conv_gemm,
    _freq_conv_transpose_gemm,
    _freq_conv_transpose_weight,
    _freq_conv_weight,
    complex_ideal_ratio_mask,
    frcrn_loss,
    frcrn_official_key_map,
)
from mixerzoo.core.testing import assert_close

ENC_KF = (5, 5, 5, 5, 5, 5, 2)
DEC_KF = (2, 5, 5, 5, 6, 5, 5)


def assert_same_values_and_grads(got, want, inputs, want_inputs=None):
    """``got == want``, and so are their gradients (under one random output weighting) with
    respect to ``inputs`` (for ``want``: ``want_inputs``, when its graph has its own leaves)."""
    assert_close(got, want)
    probe = torch.randn_like(want)
    for g, e in zip(
        torch.autograd.grad((got * probe).sum(), inputs),
        torch.autograd.grad((want * probe).sum(), want_inputs or inputs),
    ):
        assert_close(g, e)


def official_state_dict(c: int, lorder: int = 20, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in the official DCCRN layout (keys, shapes and duplicate aliases)."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=0.2):
        return torch.randn(*shape, generator=g) * scale

    sd: dict[str, torch.Tensor] = {}
    n = 640
    win = torch.hann_window(n, periodic=True, dtype=torch.float64).sqrt()
    basis = torch.fft.rfft(torch.eye(n, dtype=torch.float64))
    kernel = torch.cat([basis.real, basis.imag], 1).T
    sd["stft.weight"] = (kernel * win)[:, None, :].float()
    sd["istft.weight"] = (torch.linalg.pinv(kernel).T * win)[:, None, :].float()
    sd["istft.window"] = win[None, :, None].float()
    sd["istft.enframe"] = torch.eye(n)[:, None, :]

    def fsmn(prefix, layers):
        for i in range(1, layers + 1):
            for part in ("re", "im"):
                p = f"{prefix}.fsmn_{part}_L{i}."
                sd[p + "linear.weight"] = rnd(c, c)
                sd[p + "linear.bias"] = rnd(c)
                sd[p + "project.weight"] = rnd(c, c)
                sd[p + "conv1.weight"] = rnd(c, 1, lorder, 1)

    def bn(prefix, ch):
        for part in ("re", "im"):
            p = f"{prefix}.bn_{part}."
            sd[p + "weight"] = 1 + rnd(ch, scale=0.1)
            sd[p + "bias"] = rnd(ch, scale=0.1)
            sd[p + "running_mean"] = rnd(ch, scale=0.1)
            sd[p + "running_var"] = 1 + rnd(ch, scale=0.1).abs()
            sd[p + "num_batches_tracked"] = torch.tensor(7)

    def se(prefix):
        h = c // 8
        for b in ("fc_r", "fc_i"):
            sd[f"{prefix}.{b}.0.weight"] = rnd(h, c)
            sd[f"{prefix}.{b}.0.bias"] = rnd(h)
            sd[f"{prefix}.{b}.2.weight"] = rnd(c, h)
            sd[f"{prefix}.{b}.2.bias"] = rnd(c)

    enc_ch = [1] + [c] * 7
    dec_in = [c] + [2 * c] * 6
    dec_out = [c] * 6 + [1]
    for net in ("unet", "unet2"):
        fsmn(f"{net}.fsmn", 2)
        for i in range(7):
            fsmn(f"{net}.fsmn_enc{i}", 1)
            for part in ("re", "im"):
                sd[f"{net}.encoder{i}.conv.conv_{part}.weight"] = rnd(
                    enc_ch[i + 1], enc_ch[i], ENC_KF[i], 2, scale=1 / math.sqrt(enc_ch[i] * 10)
                )
                sd[f"{net}.encoder{i}.conv.conv_{part}.bias"] = rnd(enc_ch[i + 1], scale=0.05)
            bn(f"{net}.encoder{i}.bn", enc_ch[i + 1])
            se(f"{net}.se_layer_enc{i}")
        for i in range(7):
            fsmn(f"{net}.fsmn_dec{i}", 1)
            for part in ("re", "im"):
                sd[f"{net}.decoder{i}.transconv.tconv_{part}.weight"] = rnd(
                    dec_in[i], dec_out[i], DEC_KF[i], 2, scale=1 / math.sqrt(dec_in[i] * 10)
                )
                sd[f"{net}.decoder{i}.transconv.tconv_{part}.bias"] = rnd(dec_out[i], scale=0.05)
            bn(f"{net}.decoder{i}.bn", dec_out[i])
            if i < 6:
                se(f"{net}.se_layer_dec{i}")
        for part in ("re", "im"):
            sd[f"{net}.linear.conv_{part}.weight"] = rnd(1, 1, 1, 1, scale=1.0)
            sd[f"{net}.linear.conv_{part}.bias"] = rnd(1, scale=0.1)
        # The ModuleList aliases of the same modules (the official UNet registers both).
        aliases = {
            "decoder": "decoders",
            "encoder": "encoders",
            "se_layer_enc": "se_layers_enc",
            "se_layer_dec": "se_layers_dec",
            "fsmn_enc": "fsmn_enc",
            "fsmn_dec": "fsmn_dec",
        }
        for key in [k for k in sd if k.startswith(net + ".")]:
            head, rest = key[len(net) + 1 :].split(".", 1)
            for name, lst in aliases.items():
                if head.startswith(name) and head[len(name) :].isdigit():
                    sd[f"{net}.{lst}.{head[len(name) :]}.{rest}"] = sd[key]
    return sd


# --- an independent reference forward of the official model ---------------------------------


def ref_cconv(x, p, transposed=False):
    """x [B, C, F, T, 2]; official ComplexConv2d / ComplexConvTranspose2d with 4 real convs."""
    if transposed:
        w_re, b_re = p["transconv.tconv_re.weight"], p["transconv.tconv_re.bias"]
        w_im, b_im = p["transconv.tconv_im.weight"], p["transconv.tconv_im.bias"]

        def op(t, w, b):
            return F.conv_transpose2d(t, w, b, stride=(2, 1), padding=(0, 1))
    else:
        w_re, b_re = p["conv.conv_re.weight"], p["conv.conv_re.bias"]
        w_im, b_im = p["conv.conv_im.weight"], p["conv.conv_im.bias"]

        def op(t, w, b):
            return F.conv2d(t, w, b, stride=(2, 1), padding=(0, 1))

    real = op(x[..., 0], w_re, b_re) - op(x[..., 1], w_im, b_im)
    imag = op(x[..., 1], w_re, b_re) + op(x[..., 0], w_im, b_im)
    return torch.stack((real, imag), -1)


def ref_bn(x, p):
    parts = []
    for i, part in enumerate(("re", "im")):
        q = {
            k.split(f"bn.bn_{part}.")[1]: v for k, v in p.items() if k.startswith(f"bn.bn_{part}.")
        }
        parts.append(
            F.batch_norm(x[..., i], q["running_mean"], q["running_var"], q["weight"], q["bias"])
        )
    return torch.stack(parts, -1)


def ref_fsmn_layer(x, p, prefix):
    """Official UniDeepFsmn on [N, T, C]."""
    f1 = F.relu(x @ p[prefix + "linear.weight"].T + p[prefix + "linear.bias"])
    p1 = f1 @ p[prefix + "project.weight"].T
    w = p[prefix + "conv1.weight"]
    y = p1.unsqueeze(1).permute(0, 3, 2, 1)  # [N, C, T, 1]
    y_pad = F.pad(y, [0, 0, w.shape[2] - 1, 0])
    out = y + F.conv2d(y_pad, w, groups=w.shape[0])
    return x + out.permute(0, 3, 2, 1).squeeze(1)


def ref_cfsmn(x, p, layers):
    """Official ComplexUniDeepFsmn_L1 (frequency, layers=1) / ComplexUniDeepFsmn (time, 2)."""
    b, c, h, t, d = x.shape
    if layers == 1:
        seq = x.transpose(1, 3).reshape(b * t, h, c, d)
    else:
        seq = x.reshape(b, c * h, t, d).transpose(1, 2)
    re, im = seq[..., 0], seq[..., 1]
    for i in range(1, layers + 1):
        fr, fi = f"fsmn_re_L{i}.", f"fsmn_im_L{i}."
        re, im = (
            ref_fsmn_layer(re, p, fr) - ref_fsmn_layer(im, p, fi),
            ref_fsmn_layer(im, p, fr) + ref_fsmn_layer(re, p, fi),
        )
    out = torch.stack((re, im), -1)
    if layers == 1:
        return out.reshape(b, t, h, c, d).transpose(1, 3)
    return out.transpose(1, 2).reshape(b, c, h, t, d)


def ref_se(x, p):
    def fc(v, name):
        h = F.relu(v @ p[f"{name}.0.weight"].T + p[f"{name}.0.bias"])
        return torch.sigmoid(h @ p[f"{name}.2.weight"].T + p[f"{name}.2.bias"])

    xr, xi = x[..., 0].mean((2, 3)), x[..., 1].mean((2, 3))
    yr = fc(xr, "fc_r") - fc(xi, "fc_i")
    yi = fc(xi, "fc_r") + fc(xr, "fc_i")
    return x * torch.stack((yr, yi), -1)[:, :, None, None, :]


def sub(sd, prefix):
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


def ref_unet(x, sd, net):
    xs_se = [x]
    for i in range(7):
        if i > 0:
            x = ref_cfsmn(x, sub(sd, f"{net}.fsmn_enc{i}."), 1)
        p = sub(sd, f"{net}.encoder{i}.")
        x = F.leaky_relu(ref_bn(ref_cconv(x, p), p), 0.01)
        xs_se.append(ref_se(x, sub(sd, f"{net}.se_layer_enc{i}.")))
    x = ref_cfsmn(x, sub(sd, f"{net}.fsmn."), 2)
    for i in range(7):
        p = sub(sd, f"{net}.decoder{i}.")
        x = F.leaky_relu(ref_bn(ref_cconv(x, p, transposed=True), p), 0.01)
        if i == 6:
            break
        x = ref_cfsmn(x, sub(sd, f"{net}.fsmn_dec{i}."), 1)
        if i < 5:
            x = ref_se(x, sub(sd, f"{net}.se_layer_dec{i}."))
        x = torch.cat([x, xs_se[6 - i]], 1)
    p = sub(sd, f"{net}.linear.")
    real = F.conv2d(x[..., 0], p["conv_re.weight"], p["conv_re.bias"]) - F.conv2d(
        x[..., 1], p["conv_im.weight"], p["conv_im.bias"]
    )
    imag = F.conv2d(x[..., 1], p["conv_re.weight"], p["conv_re.bias"]) + F.conv2d(
        x[..., 0], p["conv_im.weight"], p["conv_im.bias"]
    )
    return torch.stack((real, imag), -1)


def ref_frcrn(wav, sd):
    """Official DCCRN.forward -> estimated waveform [B, L']."""
    spec = F.conv1d(wav[:, None], sd["stft.weight"], stride=320)  # [B, 642, T]
    x = torch.stack((spec[:, :321], spec[:, 321:]), -1)[:, None]  # [B, 1, F, T, 2]
    u1 = ref_unet(x, sd, "unet")
    u2 = ref_unet(u1, sd, "unet2")
    m = torch.tanh(u1) + torch.tanh(u2)
    est = torch.cat(
        [
            x[..., 0] * m[..., 0] - x[..., 1] * m[..., 1],
            x[..., 0] * m[..., 1] + x[..., 1] * m[..., 0],
        ],
        1,
    )  # [B, 2, F, T]
    est = torch.cat([est[:, 0], est[:, 1]], 1)
    out = F.conv_transpose1d(est, sd["istft.weight"], stride=320)
    coff = F.conv_transpose1d(
        sd["istft.window"].repeat(1, 1, est.shape[-1]) ** 2, sd["istft.enframe"], stride=320
    )
    return (out / (coff + 1e-8))[:, 0]


# --- tests -------------------------------------------------------------------------------------


def test_parameter_counts_match_the_official_model():
    model = FRCRN()
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # Published / official: 13.96 M parameters, 13.14 M trainable (STFT kernels fixed).
    assert total == 13_963_604
    assert trainable == 13_141_844


def test_full_size_official_layout_maps_onto_every_parameter():
    official = official_state_dict(128)
    mapped = frcrn_official_key_map(official)
    model = FRCRN()
    ours = model.state_dict()
    assert set(mapped) == set(ours)
    for key, value in mapped.items():
        assert value.shape == ours[key].shape, key


def test_stft_matches_torch_stft_and_istft_reconstructs():
    model = FRCRN(channels=8)
    wav = torch.randn(2, 320 * 12)
    spec = model.analyse(wav)  # [2, B, 1, F, N]
    window = torch.hann_window(640, periodic=True).sqrt()
    ref = torch.stft(wav, 640, 320, 640, window, center=False, return_complex=True)
    assert_close(spec[0, :, 0], ref.real, atol=2e-4, rtol=1e-4)
    assert_close(spec[1, :, 0], ref.imag, atol=2e-4, rtol=1e-4)
    back = model.synthesise(torch.cat([spec[0, :, 0], spec[1, :, 0]], 1))
    assert_close(back[:, 320:-320], wav[:, 320:-320], atol=1e-4, rtol=1e-4)


def test_official_checkpoint_loads_and_forward_matches_reference(tmp_path):
    official = official_state_dict(8, seed=1)
    path = tmp_path / "official.pt"
    torch.save({"model": {"module." + k: v for k, v in official.items()}}, path)
    model = load_model("frcrn", path, official=True, channels=8)
    wav = torch.randn(2, 320 * 9 + 640) * 0.1
    with torch.no_grad():
        ours = model.forward_frames(wav).wav
        ref = ref_frcrn(wav, official)
    assert ours.shape == ref.shape
    assert_close(ours, ref, atol=1e-4, rtol=1e-3)


def test_forward_keeps_length_any_length_and_short_inputs():
    model = FRCRN(channels=8).eval()
    with torch.no_grad():
        for n in (1, 100, 641):
            assert model(torch.randn(2, n)).shape == (2, n)


@pytest.mark.parametrize("length", [4800, 1280])
def test_inference_kernels_follow_weight_updates(length):
    # Without autograd the complex convolutions keep their derived kernels between calls; an
    # optimiser step, a loaded state dict or a dtype change must never leave them stale: after
    # each, the output equals that of a fresh model holding the same weights. 4,800 samples (16
    # frames) run the convolutions, 1,280 (6 frames) their matrix-product form, with its own kept
    # weights.
    torch.manual_seed(0)
    model = FRCRN(channels=8).eval()
    wav = torch.randn(1, length) * 0.3

    def fresh_output(m: FRCRN) -> torch.Tensor:
        twin = FRCRN(channels=8).eval().to(next(m.parameters()).dtype)
        twin.load_state_dict(m.state_dict())
        with torch.no_grad():
            return twin(wav.to(next(m.parameters()).dtype))

    with torch.no_grad():
        before = model(wav)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    clean = torch.randn(1, length) * 0.3
    frcrn_loss(model, wav, clean, model(wav, return_output=True))["loss"].backward()
    optimiser.step()
    model.eval()
    with torch.no_grad():
        after_step = model(wav)
    assert (after_step - before).abs().max() > 1e-3
    assert_close(after_step, fresh_output(model))
    other = FRCRN(channels=8).eval()
    model.load_state_dict(other.state_dict())
    with torch.no_grad():
        assert_close(model(wav), fresh_output(other))
    model.double()
    with torch.no_grad():
        assert model(wav.double()).dtype == torch.float64
        assert_close(model(wav.double()), fresh_output(model))


@pytest.mark.parametrize("training", [False, True])
def test_complex_batch_norm_equals_two_batch_norms(training):
    # Evaluation mode folds the bias and both norms into one affine map; values and gradients
    # (input, bias, norm weights) must equal BatchNorm2d's on each part of z + bias.
    torch.manual_seed(0)
    norm = ComplexBatchNorm(3).double()
    for bn in (norm.bn_re, norm.bn_im):
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.normal_()
        bn.bias.data.normal_()
    norm.train(training)
    twin = ComplexBatchNorm(3).double().train(training)
    twin.load_state_dict(norm.state_dict())
    z = torch.randn(2, 2, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    got = norm(z, bias)
    shifted = z + bias[:, None, :, None, None]
    want = torch.stack((twin.bn_re(shifted[0]), twin.bn_im(shifted[1])))
    inputs = (z, bias, norm.bn_re.weight, norm.bn_im.bias)
    assert_same_values_and_grads(got, want, inputs, (z, bias, twin.bn_re.weight, twin.bn_im.bias))


def _complex_conv(z, w_re, w_im, op):
    """The official complex convolution: four real applications, ``[2, ...]`` real/imag."""
    return torch.stack((op(z[0], w_re) - op(z[1], w_im), op(z[0], w_im) + op(z[1], w_re)))


@pytest.mark.parametrize("kf", sorted(set(ENC_KF + DEC_KF)))
@pytest.mark.parametrize("transpose", [False, True])
def test_frequency_convolutions_as_matrix_products_equal_the_convolutions(kf, transpose):
    # Few frames (streaming) run the U-Net convolutions as matrix products; values and gradients
    # must equal conv2d / conv_transpose2d's (stride 2 over frequency, odd bin count, batch 2).
    torch.manual_seed(0)
    c_in, c_out, bins, frames = 3, 4, 19, 3
    z = torch.randn(2, 2, c_in, bins, frames, dtype=torch.float64, requires_grad=True)
    shape = (c_in, c_out, kf, 1) if transpose else (c_out, c_in, kf, 1)
    w_re = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    w_im = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    if transpose:
        op = lambda x, w: F.conv_transpose2d(x, w, stride=(2, 1))  # noqa: E731
        to_weight, gemm = _freq_conv_transpose_weight, _freq_conv_transpose_gemm
    else:
        op = lambda x, w: F.conv2d(x, w, stride=(2, 1))  # noqa: E731
        to_weight, gemm = _freq_conv_weight, _freq_conv_gemm
    expected = _complex_conv(z, w_re, w_im, op)
    got = gemm(z, to_weight((w_re, w_re + w_im, w_im - w_re)), kf)
    assert got.shape == expected.shape
    assert_same_values_and_grads(got, expected, (z, w_re, w_im))


@pytest.mark.parametrize("frames", [1, 3])
def test_frequency_fsmn_paired_pass_equals_its_two_mixers(frames):
    # For a few frames the frequency FSMN runs its real and imaginary mixers as one wider pass;
    # values and gradients must equal the complex combination of the two mixers' own forward.
    torch.manual_seed(0)
    fsmn = ComplexFSMN(6, 1, lorder=4, axis="freq").double()
    for p in fsmn.parameters():
        p.data.normal_(0, 0.5)  # the memory taps start at zero-mean init; make every term count
    z = torch.randn(2, 2, 6, 9, frames, dtype=torch.float64, requires_grad=True)
    got, _ = fsmn(z)
    seq = z.permute(0, 1, 4, 3, 2).reshape(2, 2 * frames, 9, 6)  # [part, B * T, F, C]
    f_re, f_im = fsmn.fsmn_re_L1, fsmn.fsmn_im_L1

    def mix(f, x):
        return f(x)[0]

    real = mix(f_re, seq[0]) - mix(f_im, seq[1])
    imag = mix(f_re, seq[1]) + mix(f_im, seq[0])
    want = torch.stack((real, imag)).view(2, 2, frames, 9, 6).permute(0, 1, 4, 3, 2)
    inputs = (z, f_re.linear.weight, f_im.project.weight, f_re.memory_weight, f_im.linear.bias)
    assert_same_values_and_grads(got, want, inputs)


def test_se_branches_in_one_pass_equal_the_two_sequentials():
    # The SE layer runs its real and imaginary branches as one pass; values and gradients must
    # equal those of the branches' own Sequential modules (the official layers).
    torch.manual_seed(0)
    se = ComplexSE(16, reduction=8).double()
    s = torch.randn(2, 3, 4, 16, dtype=torch.float64, requires_grad=True)
    got = torch.cat(se._branches(s), -1)
    want = torch.cat((se.fc_r(s), se.fc_i(s)), -1)
    inputs = (s, se.fc_r[0].weight, se.fc_i[0].bias, se.fc_r[2].bias, se.fc_i[2].weight)
    assert_same_values_and_grads(got, want, inputs)


def test_few_frames_take_the_matrix_product_path_and_match_many_frames():
    # The same frames through the model at once (convolutions) and one call per few frames
    # (matrix products) give the same masks.
    torch.manual_seed(1)
    model = FRCRN(channels=8, se_pooling="causal").eval()
    for p in model.parameters():
        p.data += 0.05 * torch.randn_like(p)
    spec = model.analyse(torch.randn(1, 320 * 23 + 320) * 0.3)
    assert spec.shape[-1] > _GEMM_MAX_FRAMES
    with torch.no_grad():
        whole, _ = model.unet(spec)
        pieces, state = [], None
        for start in range(0, spec.shape[-1], _GEMM_MAX_FRAMES):
            part = spec[..., start : start + _GEMM_MAX_FRAMES]
            final = start + _GEMM_MAX_FRAMES >= spec.shape[-1]
            out, state = model.unet(part, state, final)
            pieces.append(out)
    assert_close(torch.cat(pieces, -1), whole, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("chunks", [[320] * 18, [1, 799, 1000, 3, 2500, 1200, 1]])
def test_streaming_equals_offline(chunks):
    model = FRCRN(channels=8, se_pooling="causal").eval()
    for p in model.parameters():  # larger weights so that errors would show
        p.data += 0.05 * torch.randn_like(p)
    wav = torch.randn(1, sum(chunks)) * 0.3
    with torch.no_grad():
        offline = model(wav)
    streamer = FRCRNStreamer(model)
    pieces, start = [], 0
    for n in chunks:
        pieces.append(streamer.process(wav[:, start : start + n]))
        start += n
    pieces.append(streamer.flush())
    streamed = torch.cat(pieces, -1)
    assert streamed.shape == offline.shape
    assert_close(streamed, offline, atol=1e-4, rtol=1e-4)


def test_causal_model_ignores_the_future_beyond_its_latency():
    model = FRCRN(channels=8, se_pooling="causal").eval()
    wav = torch.randn(1, 320 * 60)
    later = wav.clone()
    cut = 320 * 40
    later[:, cut:] = torch.randn(1, wav.shape[1] - cut)
    with torch.no_grad():
        a, b = model(wav), model(later)
    # Output up to (latency + one window) before the change is untouched.
    safe = cut - 320 * (model.latency_frames + 2)
    assert_close(a[:, :safe], b[:, :safe])
    assert not torch.allclose(a[:, cut:], b[:, cut:])


def test_global_se_refuses_streaming():
    with pytest.raises(ValueError, match="se_pooling='causal'"):
        FRCRNStreamer(FRCRN(channels=8))


def test_mask_target_and_loss():
    model = FRCRN(channels=8)
    clean = torch.randn(2, 4000)
    # The ideal ratio mask of the clean signal against itself is 1 + 0i.
    mask = complex_ideal_ratio_mask(model.pad(clean), model.pad(clean))
    assert_close(mask[:, 0], torch.ones_like(mask[:, 0]), atol=1e-3, rtol=0)
    assert_close(mask[:, 1], torch.zeros_like(mask[:, 1]), atol=1e-3, rtol=0)
    noisy = clean + 0.3 * torch.randn(2, 4000)
    out = model(noisy, return_output=True)
    parts = frcrn_loss(model, noisy, clean, out)
    parts["loss"].backward()
    assert torch.isfinite(parts["loss"])
    assert_close(parts["loss"], parts["mask_mse"] - parts["si_snr"])
    # never called or never read, as officially (the last encoder's SE output is no skip)
    unused = ("fsmn_enc.0.", "fsmn_dec.6.", "se_layers_dec.5.", "se_layers_enc.6.")
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if any(u in name for u in unused):
            assert p.grad is None, name
        else:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
