"""Multi-scale retention mixer against an independent parallel-form reference of the paper."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mixerzoo.core import create_mixer
from mixerzoo.core.mixers.retention import MultiScaleRetention
from mixerzoo.core.testing import assert_close

F64 = torch.float64
D = 24


def _mixer(**kwargs) -> MultiScaleRetention:
    torch.manual_seed(0)
    mixer = create_mixer("retention", d_model=D, n_heads=3, **kwargs).double().eval()
    # Non-trivial GroupNorm affine parameters so the reference checks that they are used.
    with torch.no_grad():
        mixer.group_norm.weight.uniform_(0.5, 1.5)
        mixer.group_norm.bias.normal_()
    return mixer


def _reference(
    mixer: MultiScaleRetention, x: torch.Tensor, gammas=None, causal=True, rotation=True
):
    """MSR written from the paper: complex rotation e^{i n theta}, explicit decay mask D."""
    b, t, _ = x.shape
    h, dk = mixer.n_heads, mixer.d_key
    q = mixer.q_proj(x).view(b, t, h, dk)
    k = mixer.k_proj(x).view(b, t, h, dk)
    v = mixer.v_proj(x).view(b, t, h, -1)
    if rotation:
        theta = 10000.0 ** (-torch.arange(dk // 2, dtype=F64) / max(dk // 2 - 1, 1))
        phase = torch.polar(
            torch.ones(t, dk // 2, dtype=F64), torch.arange(t, dtype=F64)[:, None] * theta
        )
        q = torch.view_as_real(
            torch.view_as_complex(q.reshape(b, t, h, dk // 2, 2)) * phase[:, None]
        ).flatten(-2)
        k = torch.view_as_real(
            torch.view_as_complex(k.reshape(b, t, h, dk // 2, 2)) * phase[:, None]
        ).flatten(-2)
    gammas = [1 - 2 ** (-5 - i) for i in range(h)] if gammas is None else gammas
    n = torch.arange(t)
    heads = []
    for i, gamma in enumerate(gammas):
        diff = n[:, None] - n[None, :]
        decay = torch.tensor(gamma, dtype=F64) ** diff.abs()
        if causal:
            decay = decay * (diff >= 0)
        scores = q[:, :, i] @ k[:, :, i].transpose(-1, -2) / dk**0.5 * decay
        heads.append(scores @ v[:, :, i])  # [B, T, dv]
    heads = torch.stack(heads, dim=2)  # [B, T, H, dv]
    # GroupNorm over each head's channels = LayerNorm per head, then the per-channel affine.
    normed = F.layer_norm(heads, heads.shape[-1:], eps=mixer.group_norm.eps).flatten(-2)
    normed = normed * mixer.group_norm.weight + mixer.group_norm.bias
    return mixer.out_proj(F.silu(mixer.g_proj(x)) * normed)


def test_matches_paper_parallel_form():
    mixer = _mixer()
    x = torch.randn(2, 19, D, dtype=F64)
    with torch.no_grad():
        y, state = mixer(x)
        assert_close(y, _reference(mixer, x))
    assert state["S"].shape == (2, 3, 8, 16)
    assert state["offset"].dtype == torch.long and state["offset"].tolist() == [19, 19]


@pytest.mark.parametrize("backend", ["naive", "chunk"])
def test_backends_agree(backend):
    mixer = _mixer(backend=backend, chunk_size=4)
    x = torch.randn(2, 11, D, dtype=F64)
    with torch.no_grad():
        assert_close(mixer(x)[0], _reference(mixer, x))


def test_only_relative_positions_matter():
    """Starting the rotation at other offsets (one per row) with an empty state gives the same
    output."""
    mixer = _mixer()
    x = torch.randn(2, 9, D, dtype=F64)
    state = mixer.init_state(2, dtype=F64)
    state["offset"] = torch.tensor([12345, 7])
    with torch.no_grad():
        y_shifted, new_state = mixer(x, state)
        assert_close(y_shifted, mixer(x)[0])
    assert new_state["offset"].tolist() == [12345 + 9, 7 + 9]


def test_custom_gammas_and_no_rotation():
    gammas = [0.5, 0.8, 0.999]
    mixer = _mixer(gammas=gammas, rotation=False)
    x = torch.randn(1, 10, D, dtype=F64)
    with torch.no_grad():
        assert_close(mixer(x)[0], _reference(mixer, x, gammas=gammas, rotation=False))


def test_bidirectional_variant():
    mixer = _mixer(causal=False, chunk_size=4)
    assert not mixer.causal and mixer.init_state(2) is None
    x = torch.randn(2, 13, D, dtype=F64)
    with torch.no_grad():
        y, state = mixer(x)
        assert state is None
        assert_close(y, _reference(mixer, x, causal=False))
        # The first token sees the future.
        x2 = x.clone()
        x2[:, -1] += 1.0
        assert not torch.allclose(mixer(x2)[0][:, 0], y[:, 0])
    with pytest.raises(NotImplementedError):
        mixer.step(x[:, 0], None)
    with pytest.raises(ValueError, match="takes no state"):
        mixer(x, {"S": torch.zeros(2, 3, 8, 16, dtype=F64), "offset": 0})


def test_bidirectional_without_rotation_commutes_with_reversal():
    """gamma^|n-m| is symmetric, so reversing the sequence reverses the output."""
    mixer = _mixer(causal=False, rotation=False)
    x = torch.randn(2, 10, D, dtype=F64)
    with torch.no_grad():
        assert_close(mixer(x.flip(1))[0], mixer(x)[0].flip(1))


def test_float32_state_and_step():
    torch.manual_seed(0)
    mixer = MultiScaleRetention(16, n_heads=2)
    x = torch.randn(3, 5, 16)
    state = mixer.init_state(3)
    ys = []
    with torch.no_grad():
        for t in range(5):
            y_t, state = mixer.step(x[:, t], state)
            ys.append(y_t)
        assert_close(torch.stack(ys, 1), mixer(x)[0])
    assert state["S"].dtype == torch.float32 and state["offset"].tolist() == [5, 5, 5]


def test_constructor_errors():
    with pytest.raises(ValueError, match="divisible"):
        MultiScaleRetention(30, n_heads=4)
    with pytest.raises(ValueError, match="even key width"):
        MultiScaleRetention(12, n_heads=4)
    MultiScaleRetention(12, n_heads=4, rotation=False)
    with pytest.raises(ValueError, match="gammas"):
        MultiScaleRetention(16, n_heads=2, gammas=[0.5, 1.5])
    with pytest.raises(ValueError, match="gammas"):
        MultiScaleRetention(16, n_heads=2, gammas=[0.5])


def test_bad_state_is_a_clear_error():
    mixer = _mixer()
    with pytest.raises(TypeError, match="state must be the dict"):
        mixer(torch.randn(1, 3, D, dtype=F64), torch.zeros(1, 3, 8, 16, dtype=F64))


def test_empty_piece_keeps_the_state():
    mixer = _mixer()
    _, state = mixer(torch.randn(2, 4, D, dtype=F64))
    y, new_state = mixer(torch.randn(2, 0, D, dtype=F64), state)
    assert y.shape == (2, 0, D)
    assert torch.equal(new_state["S"], state["S"]) and new_state["offset"].tolist() == [4, 4]


def _episodes(reset_row: torch.Tensor, mask_row: torch.Tensor) -> list[torch.Tensor]:
    """Real positions of each episode of a row (cut at its resets, padding dropped)."""
    t = reset_row.shape[0]
    cuts = [0, *[int(i) for i in torch.nonzero(reset_row).flatten() if i > 0], t]
    positions = torch.arange(t)
    return [positions[lo:hi][mask_row[lo:hi]] for lo, hi in zip(cuts[:-1], cuts[1:])]


@pytest.mark.parametrize("backend", ["naive", "chunk"])
def test_packed_padded_rows_match_the_paper_per_episode(backend):
    """Resets (one at a padded step) and padding: each episode's real outputs are the paper's
    parallel form on that episode alone (the rotation counts its real tokens from 0), and the
    returned state is exactly the last episode's: the same S and the same offset."""
    mixer = _mixer(backend=backend, chunk_size=4)
    x = torch.randn(2, 14, D, dtype=F64)
    reset = torch.zeros(2, 14, dtype=torch.bool)
    mask = torch.ones(2, 14, dtype=torch.bool)
    reset[0, [3, 4, 9]] = True
    reset[1, [0, 13]] = True
    mask[0, [1, 5, 6, 9, 13]] = False
    mask[1, 7:10] = False
    with torch.no_grad():
        y, state = mixer(x, mixer.init_state(2, dtype=F64), reset=reset, mask=mask)
        for row in range(2):
            episodes = _episodes(reset[row], mask[row])
            for positions in episodes:
                assert_close(y[row, positions], _reference(mixer, x[row : row + 1, positions])[0])
            _, alone = mixer(x[row : row + 1, episodes[-1]])
            assert_close(state["S"][row : row + 1], alone["S"])
            assert torch.equal(state["offset"][row : row + 1], alone["offset"])


def test_offsets_count_real_tokens_per_row():
    """Rows of different real lengths continue from their own offsets."""
    mixer = _mixer()
    x = torch.randn(2, 8, D, dtype=F64)
    after = torch.randn(2, 3, D, dtype=F64)
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[1, 5:] = False
    with torch.no_grad():
        _, state = mixer(x, mask=mask)
        assert state["offset"].tolist() == [8, 5]
        y_next, _ = mixer(after, state)
        for row, n in enumerate((8, 5)):
            whole = torch.cat([x[row : row + 1, :n], after[row : row + 1]], dim=1)
            assert_close(y_next[row], mixer(whole)[0][0, n:])


@pytest.mark.parametrize("layout", ["trailing", "holes"])
@pytest.mark.parametrize("backend", ["naive", "chunk"])
def test_bidirectional_padding_changes_no_real_output(layout, backend):
    """The symmetric variant with a mask: every row's real outputs are the paper's form on its
    real tokens alone, and padded inputs get exactly zero gradient."""
    mixer = _mixer(causal=False, backend=backend, chunk_size=4)
    torch.manual_seed(1)
    x = 50 * torch.randn(3, 12, D, dtype=F64)
    mask = torch.zeros(3, 12, dtype=torch.bool)
    for row, n in enumerate((12, 7, 1)):
        positions = torch.arange(n) if layout == "trailing" else torch.randperm(12)[:n]
        mask[row, positions] = True
    x.requires_grad_()
    y, state = mixer(x, mask=mask)
    assert state is None
    (grad,) = torch.autograd.grad((y * mask.unsqueeze(-1)).sum(), x)
    assert grad[~mask].abs().max() == 0
    with torch.no_grad():
        for row in range(3):
            alone = x[row : row + 1, mask[row]]
            assert_close(y[row, mask[row]], _reference(mixer, alone, causal=False)[0])


def test_bidirectional_refuses_reset():
    mixer = _mixer(causal=False)
    with pytest.raises(ValueError, match="reset is for causal mixers"):
        mixer(torch.randn(1, 4, D, dtype=F64), reset=torch.ones(1, 4, dtype=torch.bool))


def test_bad_offset_is_a_clear_error():
    mixer = _mixer()
    state = mixer.init_state(2, dtype=F64)
    state["offset"] = 3
    with pytest.raises(TypeError, match=r"offset'\] must be an int64 tensor \[B\] = \[2\]"):
        mixer(torch.randn(2, 3, D, dtype=F64), state)
