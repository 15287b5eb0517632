"""MambaOut Gated CNN: against an explicit implementation (1-D centred, causal, and 2-D), streaming."""

from __future__ import annotations

import pytest
import torch

from mixerzoo.core import create_mixer
from mixerzoo.core.mixers.gated_cnn import GatedCNN
from mixerzoo.core.testing import assert_close


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _explicit_1d(mixer: GatedCNN, x: torch.Tensor) -> torch.Tensor:
    hidden, conv = mixer.hidden, mixer.conv_channels
    h = x @ mixer.fc1.weight.T + mixer.fc1.bias
    g, i, c = h[..., :hidden], h[..., hidden : 2 * hidden - conv], h[..., 2 * hidden - conv :]
    k, t_len = mixer.kernel_size, x.shape[1]
    # Tap m reads step t - (k - 1) + m when causal, t - (k - 1) // 2 + m when centred.
    offset = k - 1 if mixer.causal else (k - 1) // 2
    out = mixer.conv.bias.expand_as(c).clone()
    for t in range(t_len):
        for m in range(k):
            src = t - offset + m
            if 0 <= src < t_len:
                out[:, t] += mixer.conv.weight[:, 0, m] * c[:, src]
    gate = torch.nn.functional.gelu(g)
    return (gate * torch.cat([i, out], dim=-1)) @ mixer.fc2.weight.T + mixer.fc2.bias


def test_split_sizes_follow_mambaout():
    mixer = create_mixer("gated_cnn", d_model=32)
    assert mixer.split_sizes == (85, 53, 32)  # H = int(8/3 * 32), C = int(1.0 * 32)
    assert mixer.fc1.out_features == 170 and mixer.conv.kernel_size == (7,)


@pytest.mark.parametrize(
    "causal,kernel,conv_ratio", [(False, 7, 1.0), (False, 4, 0.5), (True, 7, 1.0), (True, 3, 0.25)]
)
def test_equals_explicit_implementation(causal, kernel, conv_ratio):
    torch.manual_seed(0)
    mixer = GatedCNN(12, kernel_size=kernel, conv_ratio=conv_ratio, causal=causal).double()
    x = _randn(2, 9, 12, seed=1)
    assert_close(mixer(x)[0], _explicit_1d(mixer, x))


@pytest.mark.parametrize("kernel", [1, 4, 7])
def test_causal_step_and_pieces_equal_forward(kernel):
    torch.manual_seed(0)
    mixer = GatedCNN(10, kernel_size=kernel, conv_ratio=0.5, causal=True).double()
    x = _randn(2, 8, 10, seed=2)
    with torch.no_grad():
        y_full, final = mixer(x)
        state = mixer.init_state(2, dtype=torch.float64)
        ys = []
        for t in range(8):
            y_t, state = mixer.step(x[:, t], state)
            ys.append(y_t)
        y1, mid = mixer(x[:, :2])  # shorter than the conv buffer when kernel = 7
        y2, _ = mixer(x[:, 2:], mid)
    assert_close(torch.stack(ys, 1), y_full)
    assert_close(torch.cat([y1, y2], 1), y_full)
    assert_close(state, final)
    assert final.shape == (2, kernel - 1, 5)


def test_forward_2d_equals_explicit_depthwise_conv():
    torch.manual_seed(0)
    mixer = GatedCNN(6, kernel_size=3, conv_dims=2).double()
    x = _randn(2, 4, 5, 6, seed=3)
    hidden, conv = mixer.hidden, mixer.conv_channels
    h = mixer.fc1(x)
    g, i, c = h[..., :hidden], h[..., hidden : 2 * hidden - conv], h[..., 2 * hidden - conv :]
    out = mixer.conv.bias.expand_as(c).clone()
    for r in range(4):
        for q in range(5):
            for dr in range(3):
                for dq in range(3):
                    rr, qq = r + dr - 1, q + dq - 1
                    if 0 <= rr < 4 and 0 <= qq < 5:
                        out[:, r, q] += mixer.conv.weight[:, 0, dr, dq] * c[:, rr, qq]
    expected = mixer.fc2(torch.nn.functional.gelu(g) * torch.cat([i, out], dim=-1))
    y, state = mixer.forward_2d(x)
    assert state is None
    assert_close(y, expected)
    with pytest.raises(ValueError, match="forward_2d"):
        mixer(x[:, 0])


def test_forward_2d_under_cpu_autocast_convolves_in_float32():
    """Under bf16 autocast the linear layers take bfloat16 and the depthwise convolution float32
    (its bfloat16 backward is slow on CPUs); values and gradients stay near the float32 ones."""
    torch.manual_seed(0)
    mixer = GatedCNN(16, conv_dims=2)
    x = torch.randn(2, 8, 8, 16, requires_grad=True)
    seen = []
    mixer.conv.register_forward_hook(lambda m, args, out: seen.append((args[0].dtype, out.dtype)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, _ = mixer.forward_2d(x)
    assert seen == [(torch.float32, torch.float32)] and y.dtype == torch.bfloat16
    y.float().square().sum().backward()
    grads = [x.grad, mixer.conv.weight.grad, mixer.fc1.weight.grad]
    mixer.zero_grad()
    x_ref = x.detach().clone().requires_grad_(True)
    y_ref, _ = mixer.forward_2d(x_ref)
    y_ref.square().sum().backward()
    refs = [x_ref.grad, mixer.conv.weight.grad, mixer.fc1.weight.grad]
    assert seen[-1] == (torch.float32, torch.float32)
    scale = y_ref.abs().max()
    assert (y.float() - y_ref).abs().max() < 0.03 * scale  # bfloat16 rounding, not an error
    for got, want in zip(grads, refs):
        assert (got - want).abs().max() < 0.05 * want.abs().max()


def test_errors():
    seq = GatedCNN(6)
    with pytest.raises(ValueError, match="conv_dims=2"):
        seq.forward_2d(torch.randn(1, 3, 3, 6))
    with pytest.raises(ValueError, match="takes no state"):
        seq(torch.randn(1, 3, 6), torch.zeros(1, 6, 6))
    with pytest.raises(ValueError, match="conv_dims=2 needs causal=False"):
        GatedCNN(6, causal=True, conv_dims=2)
    with pytest.raises(ValueError, match="conv channels"):
        GatedCNN(6, conv_ratio=4.0)
