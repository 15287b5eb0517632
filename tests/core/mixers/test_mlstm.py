"""mLSTM block against an independent reference: the paper's unstabilised recurrence
(C_t = f C + i v k^T, h = C q / max(|n^T q|, 1)) inside the block of the authors' code."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mixerzoo.core import Block, create_mixer
from mixerzoo.core.mixers.mlstm import MLSTM
from mixerzoo.core.testing import assert_close

F64 = torch.float64
D = 16


def _mixer(**kwargs) -> MLSTM:
    torch.manual_seed(0)
    mixer = create_mixer("mlstm", d_model=D, eps=0.0, **kwargs).double().eval()
    # The authors' init zeroes the gate weights; randomise them (and the norm/skip) so the
    # reference has data-dependent gates and every parameter matters.
    with torch.no_grad():
        mixer.igate.weight.normal_(std=0.5)
        mixer.fgate.weight.normal_(std=0.5)
        mixer.norm_weight.uniform_(0.5, 1.5)
        mixer.skip.uniform_(0.5, 1.5)
    return mixer


def _reference(mixer: MLSTM, x: torch.Tensor) -> torch.Tensor:
    b, t, _ = x.shape
    e, h, dh, kk = mixer.inner, mixer.n_heads, mixer.d_head, mixer.conv_kernel
    up = mixer.proj_up(x)
    x_m, z = up[..., :e], up[..., e:]
    conv = F.conv1d(
        F.pad(x_m.transpose(1, 2), (kk - 1, 0)), mixer.conv.weight, mixer.conv.bias, groups=e
    )
    c = F.silu(conv.transpose(1, 2))

    def block_diag(proj, inp):
        return inp @ torch.block_diag(*proj.weight).T

    q, k, v = (
        block_diag(mixer.q_proj, c),
        block_diag(mixer.k_proj, c),
        block_diag(mixer.v_proj, x_m),
    )
    gate_in = torch.cat([q, k, v], dim=-1)
    i_gate, f_gate = (
        torch.exp(mixer.igate(gate_in)),
        torch.sigmoid(mixer.fgate(gate_in)),
    )  # [B, T, H]
    q, k, v = (y.view(b, t, h, dh) for y in (q, k, v))
    k = k / dh**0.5
    c_mem = torch.zeros(b, h, dh, dh, dtype=x.dtype)  # paper orientation: C = sum v k^T
    n_mem = torch.zeros(b, h, dh, dtype=x.dtype)
    outs = []
    for s in range(t):
        f, i = f_gate[:, s, :, None], i_gate[:, s, :, None]
        c_mem = f[..., None] * c_mem + i[..., None] * v[:, s, :, :, None] * k[:, s, :, None, :]
        n_mem = f * n_mem + i * k[:, s]
        denom = (n_mem * q[:, s]).sum(-1, keepdim=True).abs().clamp(min=1.0)
        outs.append((c_mem @ q[:, s, :, :, None]).squeeze(-1) / denom)
    h_tilde = torch.stack(outs, dim=1)  # [B, T, H, dh]
    normed = F.layer_norm(h_tilde, (dh,), eps=mixer.norm_eps).flatten(-2) * mixer.norm_weight
    return mixer.proj_down((normed + mixer.skip * c) * F.silu(z))


@pytest.mark.parametrize("backend", ["naive", "chunk"])
def test_matches_paper_recurrence(backend):
    mixer = _mixer(backend=backend, chunk_size=4)
    x = torch.randn(2, 13, D, dtype=F64)
    with torch.no_grad():
        assert_close(mixer(x)[0], _reference(mixer, x))


def test_pieces_shorter_than_the_conv_window():
    """Carry the conv state through pieces of 1 and 2 tokens (< kernel - 1) and longer ones."""
    mixer = _mixer(chunk_size=4)
    x = torch.randn(2, 15, D, dtype=F64)
    with torch.no_grad():
        y_full, s_full = mixer(x)
        ys, state = [], None
        for lo, hi in [(0, 1), (1, 3), (3, 4), (4, 15)]:
            y, state = mixer(x[:, lo:hi], state)
            ys.append(y)
    assert_close(torch.cat(ys, 1), y_full)
    for key in ("C", "n", "m", "conv"):
        assert_close(state[key], s_full[key], msg=key)
    assert_close(s_full["conv"], mixer.proj_up(x)[:, -3:, : mixer.inner].detach())


def test_authors_initialisation_and_sizes():
    torch.manual_seed(0)
    mixer = MLSTM(32)
    assert (mixer.inner, mixer.n_heads, mixer.d_head, mixer.conv_kernel) == (64, 4, 16, 4)
    assert_close(mixer.fgate.bias.detach(), torch.linspace(3.0, 6.0, 4))
    assert mixer.fgate.weight.abs().sum() == 0 and mixer.igate.weight.abs().sum() == 0
    assert_close(mixer.skip.detach(), torch.ones(64))
    state = mixer.init_state(3)
    assert state["C"].shape == (3, 4, 16, 16) and state["conv"].shape == (3, 3, 64)


def test_in_a_residual_block_step_equals_forward():
    torch.manual_seed(0)
    block = Block(D, mixer="mlstm", mixer_kwargs={"chunk_size": 4}, d_ff=0).double().eval()
    x = torch.randn(2, 9, D, dtype=F64)
    with torch.no_grad():
        y_full, _ = block(x)
        state = block.init_state(2, dtype=F64)
        ys = []
        for t in range(9):
            y_t, state = block.step(x[:, t], state)
            ys.append(y_t)
    assert_close(torch.stack(ys, 1), y_full)


def test_float32_and_bfloat16_run():
    torch.manual_seed(0)
    mixer = MLSTM(D)
    x = torch.randn(2, 7, D)
    y32, s32 = mixer(x)
    assert s32["C"].dtype == torch.float32
    y16, s16 = mixer.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert y16.dtype == torch.bfloat16 and s16["C"].dtype == torch.float32
    assert_close(y16, y32)


def test_errors():
    with pytest.raises(ValueError, match="multiple of n_heads"):
        MLSTM(10, n_heads=3)
    with pytest.raises(ValueError, match="conv_kernel"):
        MLSTM(16, conv_kernel=0)
    mixer = _mixer()
    with pytest.raises(TypeError, match="state must be the dict"):
        mixer(torch.randn(1, 3, D, dtype=F64), (None, None, None))


def test_empty_piece_keeps_the_state():
    mixer = _mixer()
    _, state = mixer(torch.randn(2, 4, D, dtype=F64))
    y, new_state = mixer(torch.randn(2, 0, D, dtype=F64), state)
    assert y.shape == (2, 0, D)
    assert all(torch.equal(new_state[key], state[key]) for key in state)


def _episodes(reset_row: torch.Tensor, mask_row: torch.Tensor) -> list[torch.Tensor]:
    """Real positions of each episode of a row (cut at its resets, padding dropped)."""
    t = reset_row.shape[0]
    cuts = [0, *[int(i) for i in torch.nonzero(reset_row).flatten() if i > 0], t]
    positions = torch.arange(t)
    return [positions[lo:hi][mask_row[lo:hi]] for lo, hi in zip(cuts[:-1], cuts[1:])]


@pytest.mark.parametrize("backend", ["naive", "chunk"])
def test_packed_padded_rows_match_the_paper_per_episode(backend):
    """Resets (one at a padded step) and padding (holes and a trailing run): every episode's
    real outputs are the paper recurrence's on that episode alone — the conv does not reach
    across a reset or see padding, the cell restarts — and the returned state continues the
    last episode."""
    mixer = _mixer(backend=backend, chunk_size=4)
    x = torch.randn(2, 14, D, dtype=F64)
    reset = torch.zeros(2, 14, dtype=torch.bool)
    mask = torch.ones(2, 14, dtype=torch.bool)
    reset[0, [3, 4, 9]] = True
    reset[1, [0, 13]] = True
    mask[0, [1, 5, 6, 9, 13]] = False
    mask[1, 7:10] = False
    after = torch.randn(1, 5, D, dtype=F64)
    with torch.no_grad():
        y, state = mixer(x, reset=reset, mask=mask)
        for row in range(2):
            episodes = _episodes(reset[row], mask[row])
            for positions in episodes:
                assert_close(y[row, positions], _reference(mixer, x[row : row + 1, positions])[0])
            last = x[row : row + 1, episodes[-1]]
            row_state = {key: value[row : row + 1] for key, value in state.items()}
            y_next, _ = mixer(after, row_state)
            expected = _reference(mixer, torch.cat([last, after], dim=1))[:, last.shape[1] :]
            assert_close(y_next, expected)
