"""GLA mixer against an independent step-by-step reference of the paper's GLA layer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mixerzoo.core import create_mixer
from mixerzoo.core.mixers.gla import GatedLinearAttention
from mixerzoo.core.testing import assert_close

F64 = torch.float64
D = 24


def _mixer(**kwargs) -> GatedLinearAttention:
    torch.manual_seed(0)
    mixer = create_mixer("gla", d_model=D, n_heads=3, **kwargs).double().eval()
    with torch.no_grad():
        mixer.head_norm.weight.uniform_(0.5, 1.5)
        mixer.head_norm.bias.normal_()
    return mixer


def _reference(mixer: GatedLinearAttention, x: torch.Tensor, s0: torch.Tensor | None = None):
    """The paper's layer: alpha = sigmoid(x W1 W2 + b)^(1/tau), S_t = diag(alpha) S + k^T v,
    per-head LayerNorm, swish output gate, output projection."""
    b, t, _ = x.shape
    h, dk, dv = mixer.n_heads, mixer.d_key, mixer.d_value
    q = mixer.q_proj(x).view(b, t, h, dk) / dk**0.5
    k = mixer.k_proj(x).view(b, t, h, dk)
    v = mixer.v_proj(x).view(b, t, h, dv)
    alpha = torch.sigmoid(mixer.gate_proj(x)) ** (1.0 / mixer.gate_logit_normalizer)
    alpha = alpha.view(b, t, h, dk)
    state = torch.zeros(b, h, dk, dv, dtype=x.dtype) if s0 is None else s0
    outs = []
    for i in range(t):
        state = alpha[:, i, :, :, None] * state + k[:, i, :, :, None] * v[:, i, :, None, :]
        outs.append(torch.einsum("bhk,bhkv->bhv", q[:, i], state))
    o = torch.stack(outs, dim=1)  # [B, T, H, dv]
    o = F.layer_norm(o, (dv,), eps=mixer.head_norm.eps).flatten(-2)
    o = o * mixer.head_norm.weight + mixer.head_norm.bias
    y = mixer.out_proj(F.silu(mixer.r_proj(x)) * o)
    return y, state


@pytest.mark.parametrize("backend", ["naive", "chunk"])
def test_matches_paper_layer(backend):
    mixer = _mixer(backend=backend, chunk_size=4)
    x = torch.randn(2, 13, D, dtype=F64)
    s0 = torch.randn(2, 3, 4, 8, dtype=F64)
    with torch.no_grad():
        y, state = mixer(x, s0)
        y_ref, state_ref = _reference(mixer, x, s0)
    assert_close(y, y_ref)
    assert_close(state, state_ref)


def test_paper_dimensions_by_default():
    mixer = GatedLinearAttention(64)
    assert (mixer.n_heads, mixer.d_key, mixer.d_value) == (4, 8, 16)  # d_k = D/2, d_v = D
    assert mixer.gate_proj[0].out_features == 16 and mixer.gate_logit_normalizer == 16
    assert mixer.init_state(2).shape == (2, 4, 8, 16)


def test_three_pieces_with_carried_state():
    mixer = _mixer(chunk_size=4)
    x = torch.randn(2, 17, D, dtype=F64)
    with torch.no_grad():
        y_full, s_full = mixer(x)
        ys, state = [], None
        for lo, hi in [(0, 1), (1, 9), (9, 17)]:
            y, state = mixer(x[:, lo:hi], state)
            ys.append(y)
    assert_close(torch.cat(ys, 1), y_full)
    assert_close(state, s_full)


def test_gate_parameters_learn():
    mixer = _mixer()
    x = torch.randn(2, 7, D, dtype=F64)
    mixer(x)[0].square().sum().backward()
    for p in mixer.gate_proj.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_constructor_errors():
    with pytest.raises(ValueError, match="multiples of n_heads"):
        GatedLinearAttention(20, n_heads=3)
    with pytest.raises(ValueError, match="gate_logit_normalizer"):
        GatedLinearAttention(16, gate_logit_normalizer=0)


def test_empty_piece_keeps_the_state():
    mixer = _mixer()
    _, state = mixer(torch.randn(2, 4, D, dtype=F64))
    y, new_state = mixer(torch.randn(2, 0, D, dtype=F64), state)
    assert y.shape == (2, 0, D) and torch.equal(new_state, state)


def _episodes(reset_row: torch.Tensor, mask_row: torch.Tensor) -> list[torch.Tensor]:
    """Real positions of each episode of a row (cut at its resets, padding dropped)."""
    t = reset_row.shape[0]
    cuts = [0, *[int(i) for i in torch.nonzero(reset_row).flatten() if i > 0], t]
    positions = torch.arange(t)
    return [positions[lo:hi][mask_row[lo:hi]] for lo, hi in zip(cuts[:-1], cuts[1:])]


def _packed_flags(t: int = 14):
    """Row 0: resets at 3, 4 and 9 (9 is padded), holes at 1, 5, 6, 13; row 1: resets at the first
    and the last step, a run of padding in the middle."""
    reset = torch.zeros(2, t, dtype=torch.bool)
    mask = torch.ones(2, t, dtype=torch.bool)
    reset[0, [3, 4, 9]] = True
    reset[1, [0, t - 1]] = True
    mask[0, [1, 5, 6, 9, 13]] = False
    mask[1, 7:10] = False
    return reset, mask


@pytest.mark.parametrize("backend", ["naive", "chunk"])
def test_packed_padded_rows_match_the_paper_layer_per_episode(backend):
    """With resets and padding, every episode's real outputs are the paper layer's on that
    episode alone (from the zero state), and the returned state is the last episode's."""
    mixer = _mixer(backend=backend, chunk_size=4)
    x = torch.randn(2, 14, D, dtype=F64)
    reset, mask = _packed_flags()
    with torch.no_grad():
        y, state = mixer(x, reset=reset, mask=mask)
        for row in range(2):
            for positions in _episodes(reset[row], mask[row]):
                y_ref, s_ref = _reference(mixer, x[row : row + 1, positions])
                assert_close(y[row, positions], y_ref[0])
            assert_close(state[row], s_ref[0])
