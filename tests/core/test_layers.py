"""core.layers: the causal depthwise convolution against a plain loop (resets, padding,
dilation, carried state, step), the compaction helper, rotary embeddings, norms and MLPs."""

from __future__ import annotations

import pytest
import torch

from mixerzoo.core.layers import (
    GLU,
    MLP,
    CausalDepthwiseConv1d,
    Compaction,
    ScaleNorm,
    head_norm,
    make_norm,
    merge_heads,
    rotary_frequencies,
    rotate_pairs,
    segment_ids,
    split_heads,
)
from mixerzoo.core.layers.conv import causal_depthwise_conv1d, depthwise_conv1d
from mixerzoo.core.testing import assert_close


def _loop_conv(x, weight, bias, state, dilation, reset, mask):
    """y_t = bias + sum_i w_i x_{t - d (K-1-i)} over the real tokens of the current episode,
    counted back from t (the carried state before the first token), written as a plain loop."""
    b, t, c = x.shape
    k = weight.shape[1]
    ys = torch.zeros(b, t, c, dtype=x.dtype)
    states = []
    for row in range(b):
        history = list(state[row])  # previous inputs, oldest first (episode 0)
        for step in range(t):
            if reset is not None and reset[row, step]:
                history = [torch.zeros(c, dtype=x.dtype)] * len(state[row])
            if mask is not None and not mask[row, step]:
                continue
            history.append(x[row, step])
            taps = history[::-1][: dilation * (k - 1) + 1 : dilation]  # newest first
            taps = taps + [torch.zeros(c, dtype=x.dtype)] * (k - len(taps))
            ys[row, step] = bias + sum(weight[:, k - 1 - i] * taps[i] for i in range(k))
        states.append(torch.stack(history[len(history) - dilation * (k - 1) :]))
    return ys, torch.stack(states)


@pytest.mark.parametrize("dilation", [1, 3])
@pytest.mark.parametrize("with_reset", [False, True])
@pytest.mark.parametrize("with_mask", [False, True])
@pytest.mark.parametrize("t", [11, 2])  # longer and shorter than the carried context
def test_causal_conv_equals_loop(dilation, with_reset, with_mask, t):
    torch.manual_seed(0)
    b, c, k = 3, 5, 4
    x = torch.randn(b, t, c, dtype=torch.float64)
    weight, bias = torch.randn(c, k, dtype=torch.float64), torch.randn(c, dtype=torch.float64)
    state = torch.randn(b, dilation * (k - 1), c, dtype=torch.float64)
    reset = torch.rand(b, t) < 0.2 if with_reset else None
    if reset is not None:
        reset[0, 0] = reset[1, -1] = True
    mask = torch.rand(b, t) < 0.7 if with_mask else None
    if mask is not None:
        mask[2] = False  # a row without any real token keeps (or, if reset, drops) its state
    y, new_state = causal_depthwise_conv1d(x, weight, bias, state, dilation, reset=reset, mask=mask)
    y_ref, state_ref = _loop_conv(x, weight, bias, state, dilation, reset, mask)
    real = mask if mask is not None else torch.ones(b, t, dtype=torch.bool)
    assert_close(y[real], y_ref[real])
    assert (y[~real] == 0).all()
    assert_close(new_state, state_ref)


@pytest.mark.parametrize("padding", [0, 3, (5, 0), (2, 7)])
@pytest.mark.parametrize("dilation", [1, 3])
def test_depthwise_conv1d_equals_conv1d(padding, dilation):
    # The channels-last form against nn.Conv1d's own grouped convolution on [B, C, T], values and
    # gradients (input, taps, bias), at an odd length and channel count.
    torch.manual_seed(0)
    x = torch.randn(3, 29, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, dtype=torch.float64, requires_grad=True)
    y = depthwise_conv1d(x, w, b, dilation, padding)
    pads = padding if isinstance(padding, tuple) else (padding, padding)
    ref = torch.nn.functional.conv1d(
        torch.nn.functional.pad(x.transpose(1, 2), pads), w[:, None], b, dilation=dilation, groups=5
    ).transpose(1, 2)
    assert y.shape == ref.shape and y.is_contiguous()
    assert_close(y, ref)
    g = torch.randn_like(ref)
    for got, want in zip(
        torch.autograd.grad(y, (x, w, b), g), torch.autograd.grad(ref, (x, w, b), g)
    ):
        assert_close(got, want)


def test_causal_conv_module_step_and_pieces():
    torch.manual_seed(0)
    conv = CausalDepthwiseConv1d(6, 4, dilation=2).double()
    x = torch.randn(2, 9, 6, dtype=torch.float64)
    y, _ = conv(x)
    y1, s = conv(x[:, :4])
    y2, _ = conv(x[:, 4:], s)
    assert_close(torch.cat([y1, y2], 1), y)
    s = conv.init_state(2, dtype=torch.float64)
    steps = []
    for t in range(9):
        y_t, s = conv.step(x[:, t], s)
        steps.append(y_t)
    assert_close(torch.stack(steps, 1), y)
    # Same parameter layout as a depthwise nn.Conv1d (state dicts load unchanged).
    assert conv.weight.shape == (6, 1, 4) and set(conv.state_dict()) == {"weight", "bias"}


def test_compaction_round_trip_and_segments():
    mask = torch.tensor([[True, False, True, True], [False, False, True, False]])
    comp = Compaction(mask)
    x = torch.arange(8.0).view(2, 4, 1)
    compact = comp.compact(x)
    assert compact[0, :3, 0].tolist() == [0.0, 2.0, 3.0] and compact[1, 0, 0] == 6.0
    assert comp.lengths.tolist() == [3, 1]
    assert comp.valid.tolist() == [[True, True, True, False], [True, False, False, False]]
    assert_close(comp.expand(compact), x * mask.unsqueeze(-1))
    reset = torch.tensor([[False, True, False, True], [True, False, False, False]])
    assert segment_ids(reset, (2, 4)).tolist() == [[0, 1, 1, 2], [1, 1, 1, 1]]


def test_rotary_depends_on_relative_position_only():
    freqs = rotary_frequencies(8, spacing="rope")
    q, k = torch.randn(1, 8, dtype=torch.float64), torch.randn(1, 8, dtype=torch.float64)
    dots = [
        (
            rotate_pairs(q, torch.tensor([p + 3]), freqs)
            * rotate_pairs(k, torch.tensor([p]), freqs)
        ).sum()
        for p in (0, 5, 1000)
    ]
    assert_close(torch.stack(dots), dots[0].expand(3))
    # Pairs beyond 2 * len(freqs) pass unchanged; norms are preserved.
    x = torch.randn(5, 10, dtype=torch.float64)
    y = rotate_pairs(x, torch.arange(5), freqs)
    assert_close(y[:, 8:], x[:, 8:])
    assert_close(y.norm(dim=-1), x.norm(dim=-1))
    assert_close(
        rotary_frequencies(6, spacing="linspace"),
        10000.0 ** -torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64),
    )


def test_norms_heads_and_mlps():
    x = torch.randn(2, 3, 8, dtype=torch.float64)
    sn = ScaleNorm(8).double()
    assert_close(sn(x), x / (x.norm(dim=-1, keepdim=True) / 8**0.5))
    assert isinstance(make_norm("rmsnorm", 8), torch.nn.RMSNorm)
    with pytest.raises(ValueError, match="unknown norm"):
        make_norm("batchnorm", 8)
    heads = split_heads(x, 2)
    assert heads.shape == (2, 2, 3, 4)
    assert_close(merge_heads(heads), x)
    normed = head_norm(x, 2)
    per_head = x.view(2, 3, 2, 4)
    expected = (per_head - per_head.mean(-1, keepdim=True)) / (
        per_head.var(-1, unbiased=False, keepdim=True) + 1e-5
    ).sqrt()
    assert_close(normed, expected.view(2, 3, 8))
    mlp, glu = MLP(8, 16, "relu").double(), GLU(8, 16, "silu").double()
    assert_close(mlp(x), mlp.fc2(torch.relu(mlp.fc1(x))))
    gate, value = glu.fc1(x).chunk(2, -1)
    assert_close(glu(x), glu.fc2(torch.nn.functional.silu(gate) * value))
