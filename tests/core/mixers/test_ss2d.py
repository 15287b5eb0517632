"""SS2D (VMamba cross scan / EfficientVMamba atrous scan) against a reference written from the
definition: explicit traversal orders, one S6 recurrence per direction with its own parameters,
outputs put back where their tokens came from."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mixerzoo.core import create_mixer
from mixerzoo.core.ops.selective_scan import selective_scan_naive
from mixerzoo.core.testing import assert_close


def _orders(h: int, w: int, scan: str) -> list[list[tuple[int, int] | None]]:
    """The four traversals as lists of grid positions (``None``: the padding of odd sides)."""
    if scan == "cross":
        rows = [(i, j) for i in range(h) for j in range(w)]
        cols = [(i, j) for j in range(w) for i in range(h)]
        return [rows, cols, rows[::-1], cols[::-1]]
    hp, wp = h + h % 2, w + w % 2

    def cell(i, j):
        return (i, j) if i < h and j < w else None

    # EfficientVMamba's EfficientScan: sub-grids (even, even) row-major, (odd, even) column-major,
    # (even, odd) row-major, (odd, odd) column-major.
    return [
        [cell(i, j) for i in range(0, hp, 2) for j in range(0, wp, 2)],
        [cell(i, j) for j in range(0, wp, 2) for i in range(1, hp, 2)],
        [cell(i, j) for i in range(0, hp, 2) for j in range(1, wp, 2)],
        [cell(i, j) for j in range(1, wp, 2) for i in range(1, hp, 2)],
    ]


def _reference(mixer, x: torch.Tensor) -> torch.Tensor:
    b, h, w, _ = x.shape
    e, n, r = mixer.d_inner, mixer.d_state, mixer.dt_rank
    u, z = mixer.in_proj(x).chunk(2, dim=-1)
    u = F.silu(mixer.conv2d(u.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)
    z = F.silu(z)
    y = torch.zeros(b, h, w, e, dtype=x.dtype)
    for k, order in enumerate(_orders(h, w, mixer.scan)):
        seq = torch.stack(
            [u[:, p[0], p[1]] if p is not None else u.new_zeros(b, e) for p in order], dim=-1
        )  # [B, E, L]
        dbc = torch.einsum("bel,ce->bcl", seq, mixer.x_proj_weight[k])
        dt, B, C = dbc.split([r, n, n], dim=1)
        dt = torch.einsum("brl,er->bel", dt, mixer.dt_projs_weight[k])
        out = selective_scan_naive(
            seq,
            dt,
            -torch.exp(mixer.A_logs[k * e : (k + 1) * e]),
            B,
            C,
            D=mixer.Ds[k * e : (k + 1) * e],
            delta_bias=mixer.dt_projs_bias[k],
            delta_softplus=True,
        )
        for t, p in enumerate(order):
            if p is not None:
                y[:, p[0], p[1]] += out[..., t]
    return mixer.out_proj(mixer.out_norm(y) * z)


@pytest.mark.parametrize("scan", ["atrous", "cross"])
@pytest.mark.parametrize("size", [(4, 6), (5, 7), (1, 9)])
def test_forward_2d_equals_the_reference(scan, size):
    torch.manual_seed(0)
    mixer = create_mixer("ss2d", d_model=12, d_state=5, scan=scan).double()
    x = torch.randn(2, *size, 12, dtype=torch.float64)
    with torch.no_grad():
        y, state = mixer.forward_2d(x)
        assert state is None
        assert_close(y, _reference(mixer, x), rtol=1e-9, atol=1e-10, msg=f"{scan} {size}")
        mixer.backend = "naive"
        assert_close(mixer.forward_2d(x)[0], y, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("scan", ["atrous", "cross"])
def test_a_sequence_is_the_one_row_grid_and_padding_changes_nothing(scan):
    torch.manual_seed(0)
    mixer = create_mixer("ss2d", d_model=8, d_state=4, scan=scan).double()
    x = torch.randn(2, 9, 8, dtype=torch.float64)
    with torch.no_grad():
        y, _ = mixer(x)
        assert_close(y, mixer.forward_2d(x.unsqueeze(1))[0].squeeze(1), rtol=0, atol=0)
        # Row 1 keeps its first 5 tokens; junk after them and a hole in row 0 change nothing.
        padded = torch.cat([x, 100 * torch.randn(2, 3, 8, dtype=torch.float64)], dim=1)
        mask = torch.ones(2, 12, dtype=torch.bool)
        mask[0, 9:] = False
        mask[1, 5:] = False
        y_pad, _ = mixer(padded, mask=mask)
        assert_close(y_pad[0, :9], y[0], rtol=1e-10, atol=1e-12)
        assert_close(y_pad[1, :5], mixer(x[1:, :5])[0][0], rtol=1e-10, atol=1e-12)


def test_directions_have_their_own_parameters_and_the_scan_is_bidirectional():
    mixer = create_mixer("ss2d", d_model=8, scan="cross")
    assert mixer.x_proj_weight.shape[0] == 4 and mixer.A_logs.shape[0] == 4 * mixer.d_inner
    assert mixer.causal is False
    x = torch.randn(1, 3, 3, 8)
    x2 = x.clone()
    x2[:, 2, 2] += 1.0  # the last token in raster order reaches the first one
    with torch.no_grad():
        assert (mixer.forward_2d(x)[0][:, 0, 0] - mixer.forward_2d(x2)[0][:, 0, 0]).abs().max() > 0


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="scan must be one of"):
        create_mixer("ss2d", d_model=8, scan="zigzag")
    with pytest.raises(ValueError, match="d_conv must be odd"):
        create_mixer("ss2d", d_model=8, d_conv=4)
    mixer = create_mixer("ss2d", d_model=8)
    with pytest.raises(ValueError, match="takes no state"):
        mixer.forward_2d(torch.randn(1, 2, 2, 8), state=torch.zeros(1))
    with pytest.raises(ValueError, match=r"x must have shape \[B, H, W, 8\]"):
        mixer.forward_2d(torch.randn(1, 2, 2, 9))
