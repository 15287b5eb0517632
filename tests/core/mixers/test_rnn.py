"""LSTM / GRU mixers: against the cell equations written out, streaming with several layers and
an output projection, the bidirectional variant, and the batch-first state layout."""

from __future__ import annotations

import pytest
import torch

from mixerzoo.core import create_mixer
from mixerzoo.core.mixers.rnn import GRU, LSTM
from mixerzoo.core.testing import assert_close


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_lstm_equals_cell_equations():
    torch.manual_seed(0)
    mixer = LSTM(4).double()
    rnn = mixer.rnn
    x = _randn(2, 5, 4, seed=1)
    h = c = torch.zeros(2, 4, dtype=torch.float64)
    ys = []
    for t in range(5):
        z = x[:, t] @ rnn.weight_ih_l0.T + rnn.bias_ih_l0 + h @ rnn.weight_hh_l0.T + rnn.bias_hh_l0
        i, f, g, o = z.chunk(4, dim=-1)  # PyTorch's gate order
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        ys.append(h)
    y, (h_n, c_n) = mixer(x)
    assert mixer.out_proj is None
    assert_close(y, torch.stack(ys, 1))
    assert_close(h_n[:, 0], h)
    assert_close(c_n[:, 0], c)


def test_gru_equals_cell_equations():
    torch.manual_seed(0)
    mixer = GRU(3).double()
    rnn = mixer.rnn
    x = _randn(2, 6, 3, seed=2)
    h = torch.zeros(2, 3, dtype=torch.float64)
    ys = []
    for t in range(6):
        gi = x[:, t] @ rnn.weight_ih_l0.T + rnn.bias_ih_l0
        gh = h @ rnn.weight_hh_l0.T + rnn.bias_hh_l0
        r = torch.sigmoid(gi[:, :3] + gh[:, :3])
        z = torch.sigmoid(gi[:, 3:6] + gh[:, 3:6])
        n = torch.tanh(gi[:, 6:] + r * gh[:, 6:])
        h = (1 - z) * n + z * h
        ys.append(h)
    y, h_n = mixer(x)
    assert_close(y, torch.stack(ys, 1))
    assert_close(h_n[:, 0], h)


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_stacked_projected_step_and_pieces_equal_forward(name):
    torch.manual_seed(0)
    mixer = create_mixer(name, d_model=6, hidden_size=5, num_layers=2, dropout=0.2).double().eval()
    assert mixer.out_proj is not None and mixer.causal
    x = _randn(3, 9, 6, seed=3)
    with torch.no_grad():
        y_full, _ = mixer(x)
        state = mixer.init_state(3, dtype=torch.float64)
        ys = []
        for t in range(9):
            y_t, state = mixer.step(x[:, t], state)
            ys.append(y_t)
        y1, mid = mixer(x[:, :4])
        y2, _ = mixer(x[:, 4:], mid)
    assert_close(torch.stack(ys, 1), y_full)
    assert_close(torch.cat([y1, y2], 1), y_full)


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_bidirectional_is_not_causal(name):
    torch.manual_seed(0)
    mixer = create_mixer(name, d_model=4, bidirectional=True).double()
    assert not mixer.causal and mixer.init_state(2) is None
    assert mixer.out_proj.in_features == 8
    x = _randn(2, 5, 4, seed=4)
    x2 = x.clone()
    x2[:, -1] += 1.0
    with torch.no_grad():
        y, state = mixer(x)
        assert state is None
        assert not torch.allclose(mixer(x2)[0][:, 0], y[:, 0])
    with pytest.raises(NotImplementedError):
        mixer.step(x[:, 0], None)


def test_errors():
    with pytest.raises(ValueError, match="out_proj=True"):
        LSTM(4, hidden_size=6, out_proj=False)
    with pytest.raises(ValueError, match="num_layers > 1"):
        GRU(4, dropout=0.1)
    with pytest.raises(ValueError, match=r"state h must have shape"):
        LSTM(4)(torch.randn(2, 3, 4), (torch.zeros(3, 1, 4), torch.zeros(3, 1, 4)))
    with pytest.raises(TypeError, match=r"tuple \(h, c\)"):
        LSTM(4)(torch.randn(2, 3, 4), torch.zeros(2, 1, 4))
