"""The attention mixer: cross-attention against an explicit softmax reference, memory masks,
and the KV cache's validity flags (resets and padding; the registry-wide contract tests cover the
rest)."""

from __future__ import annotations

import math

import pytest
import torch

from mixerzoo.core.mixers.attention import Attention
from mixerzoo.core.state import reset_state
from mixerzoo.core.testing import assert_close


def _reference_cross(attn: Attention, x, memory, memory_mask=None):
    """softmax(Q K^T / sqrt(d) + mask) V per head, written out with the mixer's weights."""
    b, t, d = x.shape
    h, e = attn.n_heads, d // attn.n_heads
    q = (x @ attn.q_proj.weight.T + attn.q_proj.bias).view(b, t, h, e)
    k = (memory @ attn.k_proj.weight.T + attn.k_proj.bias).view(b, -1, h, e)
    v = (memory @ attn.v_proj.weight.T + attn.v_proj.bias).view(b, -1, h, e)
    scores = torch.einsum("bthe,bshe->bhts", q, k) / math.sqrt(e)
    if memory_mask is not None:
        scores = scores.masked_fill(~memory_mask[:, None, None, :], float("-inf"))
    y = torch.einsum("bhts,bshe->bthe", scores.softmax(-1), v).reshape(b, t, d)
    return y @ attn.out_proj.weight.T + attn.out_proj.bias


@pytest.mark.parametrize("causal", [False, True])
def test_cross_attention_matches_reference(causal):
    attn = Attention(24, n_heads=3, causal=causal).double().eval()
    x = torch.randn(2, 5, 24, dtype=torch.float64)
    memory = torch.randn(2, 9, 24, dtype=torch.float64)
    y, state = attn(x, memory=memory)
    assert state is None
    assert_close(y, _reference_cross(attn, x, memory))


def test_memory_mask_hides_padded_memory():
    attn = Attention(16, n_heads=2).double().eval()
    x = torch.randn(2, 4, 16, dtype=torch.float64)
    memory = torch.randn(2, 7, 16, dtype=torch.float64)
    memory_mask = torch.ones(2, 7, dtype=torch.bool)
    memory_mask[1, 4:] = False
    y, _ = attn(x, memory=memory, memory_mask=memory_mask)
    assert_close(y, _reference_cross(attn, x, memory, memory_mask))
    # The row with padding equals attending to its real memory alone.
    y_alone, _ = attn(x[1:], memory=memory[1:, :4])
    assert_close(y[1:], y_alone)
    with pytest.raises(ValueError, match="without any real memory token"):
        attn(x, memory=memory, memory_mask=torch.zeros(2, 7, dtype=torch.bool))
    with pytest.raises(ValueError, match="takes no state or reset"):
        attn(x, memory=memory, reset=torch.zeros(2, 4, dtype=torch.bool))


def test_cache_flags_follow_resets_and_padding():
    attn = Attention(8, n_heads=2, causal=True).double().eval()
    x = torch.randn(2, 6, 8, dtype=torch.float64)
    reset = torch.zeros(2, 6, dtype=torch.bool)
    reset[0, 3] = True
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 4:] = False
    _, state = attn(x, reset=reset, mask=mask)
    # Row 0 keeps only the keys of its last episode; row 1 only its real keys.
    assert state["valid"].tolist() == [[False] * 3 + [True] * 3, [True] * 4 + [False] * 2]
    cleared = reset_state(state, torch.tensor([True, False]))
    assert not cleared["valid"][0].any() and cleared["valid"][1].equal(state["valid"][1])
