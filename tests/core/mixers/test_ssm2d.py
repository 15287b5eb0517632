"""SSM2D mixer (Chimera): 1-variate forward == forward_2d, causal in time, bidirectional across
variates (and causal across variates without the backward module), flip symmetry of the two
directions, state carried over time pieces, and backends agree (the fused Triton kernels too, with
the gradients of every parameter)."""

from __future__ import annotations

import pytest
import torch

from mixerzoo.core import create_mixer
from mixerzoo.core.testing import assert_close


def _mixer(**kw):
    torch.manual_seed(0)
    return create_mixer("ssm2d", d_model=6, d_state=3, **kw).double().eval()


def test_sequence_forward_is_the_one_variate_grid():
    m = _mixer()
    x = torch.randn(2, 7, 6, dtype=torch.float64)
    with torch.no_grad():
        y, _ = m(x)
        y4, _ = m.forward_2d(x.unsqueeze(2))
    assert_close(y, y4.squeeze(2))


@pytest.mark.parametrize("bidirectional", [True, False])
def test_dependency_structure(bidirectional):
    m = _mixer(bidirectional=bidirectional)
    x = torch.randn(1, 6, 4, 6, dtype=torch.float64, requires_grad=True)
    y, _ = m.forward_2d(x)
    # Output at (t=3, v=1): no dependence on later time steps in either mode.
    (g,) = torch.autograd.grad(y[0, 3, 1].sum(), x)
    assert torch.all(g[:, 4:] == 0)
    assert g[0, 3, 0].abs().sum() > 0  # earlier variate, same time
    later_variate = g[0, 3, 3].abs().sum()
    if bidirectional:
        assert later_variate > 0
    else:
        assert later_variate == 0


def test_backward_module_is_the_forward_module_on_flipped_variates():
    m = _mixer()
    swapped = _mixer()
    swapped.fwd.load_state_dict(m.bwd.state_dict())
    swapped.bwd.load_state_dict(m.fwd.state_dict())
    x = torch.randn(2, 5, 4, 6, dtype=torch.float64)
    with torch.no_grad():
        y, _ = m.forward_2d(x)
        y_flip, _ = swapped.forward_2d(x.flip(2))
    assert_close(y_flip.flip(2), y)


def test_time_pieces_with_state_equal_whole_and_backends_agree():
    m = _mixer()
    x = torch.randn(2, 9, 3, 6, dtype=torch.float64)
    with torch.no_grad():
        y, state = m.forward_2d(x)
        y1, s1 = m.forward_2d(x[:, :4])
        y2, s2 = m.forward_2d(x[:, 4:], s1)
        m.backend = "naive"
        y_naive, _ = m.forward_2d(x)
    assert_close(torch.cat([y1, y2], 1), y)
    for key in ("fwd", "bwd"):
        for got, want in zip(s2[key], state[key]):
            assert_close(got, want)
    assert_close(y_naive, y)


def test_wrong_2d_shape():
    m = _mixer()
    with pytest.raises(ValueError, match=r"x must have shape \[B, T, V, 6\]"):
        m.forward_2d(torch.randn(2, 5, 6, dtype=torch.float64))


def test_triton_backend_matches_chunk_with_parameter_gradients():
    """The mixer on the fused kernels (GPU, or interpreted on the CPU): same outputs, states and
    parameter gradients as on the chunk path, both variate directions and a carried state."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    x = torch.randn(2, 5, 3, 6, dtype=torch.float64)
    results = {}
    for backend in ("chunk", "triton"):
        m = _mixer(backend=backend).train().to(device)
        y1, state = m.forward_2d(x[:, :2].to(device))
        y2, state = m.forward_2d(x[:, 2:].to(device), state)
        loss = (y1**2).sum() + (y2**3).sum() + sum(s.sum() for s in state["bwd"])
        loss.backward()
        grads = {k: p.grad.cpu() for k, p in m.named_parameters()}
        results[backend] = (y1.cpu(), y2.cpu(), [s.cpu() for s in state["fwd"]], grads)
    (a1, a2, sa, ga), (b1, b2, sb, gb) = results["triton"], results["chunk"]
    assert_close(a1, b1)
    assert_close(a2, b2)
    for got, want in zip(sa, sb):
        assert_close(got, want)
    assert ga.keys() == gb.keys() and len(ga) > 10
    for name in ga:
        assert_close(ga[name], gb[name], msg=name)


def test_forward_2d_mask_skips_padded_time_steps():
    """A padded time step (junk at every variate) changes no real output of the grid, and the
    returned state (both directions) is the state after the row's last real time step."""
    m = _mixer()
    x = torch.randn(2, 8, 3, 6, dtype=torch.float64)
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[0, [0, 4]] = False
    mask[1, 6:] = False
    junk = torch.where(mask.view(2, 8, 1, 1), x, 40 * torch.randn_like(x))
    with torch.no_grad():
        y, state = m.forward_2d(junk, mask=mask)
        for b in range(2):
            y_alone, state_alone = m.forward_2d(x[b : b + 1, mask[b]])
            assert_close(y[b, mask[b]], y_alone[0], msg=f"row {b}")
            for key in ("fwd", "bwd"):
                for got, want in zip(state[key], state_alone[key]):
                    assert_close(got[b], want[0], msg=f"row {b} {key} state")
