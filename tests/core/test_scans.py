"""2-D scan orders against explicit index loops."""

import pytest
import torch

from mixerzoo.core.scans import atrous_merge, atrous_scan, cross_merge, cross_scan


def _grid(b, h, w, c=2):
    return torch.randn(b, h, w, c, dtype=torch.float64)


@pytest.mark.parametrize("h,w", [(3, 5), (4, 4), (1, 7)])
def test_cross_scan_orders_match_explicit_traversals(h, w):
    x = _grid(2, h, w)
    seqs = cross_scan(x)
    row = [x[:, i, j] for i in range(h) for j in range(w)]
    col = [x[:, i, j] for j in range(w) for i in range(h)]
    torch.testing.assert_close(seqs[:, 0], torch.stack(row, 1))
    torch.testing.assert_close(seqs[:, 1], torch.stack(col, 1))
    torch.testing.assert_close(seqs[:, 2], torch.stack(row[::-1], 1))
    torch.testing.assert_close(seqs[:, 3], torch.stack(col[::-1], 1))


@pytest.mark.parametrize("h,w", [(3, 5), (4, 4)])
def test_cross_merge_is_the_adjoint_of_cross_scan(h, w):
    x, y = _grid(2, h, w), torch.randn(2, 4, h * w, 2, dtype=torch.float64)
    # <scan(x), y> == <x, merge(y)> for every x, y: merge is the transpose of scan.
    torch.testing.assert_close((cross_scan(x) * y).sum(), (x * cross_merge(y, h, w)).sum())
    torch.testing.assert_close(cross_merge(cross_scan(x), h, w), 4 * x)


@pytest.mark.parametrize("h,w", [(4, 6), (5, 3), (1, 1), (2, 7)])
def test_atrous_scan_visits_each_subgrid_in_the_official_order(h, w):
    x = _grid(2, h, w)
    seqs = atrous_scan(x)
    hp, wp = h + h % 2, w + w % 2
    padded = torch.zeros(2, hp, wp, 2, dtype=torch.float64)
    padded[:, :h, :w] = x
    expected = [
        [padded[:, i, j] for i in range(0, hp, 2) for j in range(0, wp, 2)],
        [padded[:, i, j] for j in range(0, wp, 2) for i in range(1, hp, 2)],
        [padded[:, i, j] for i in range(0, hp, 2) for j in range(1, wp, 2)],
        [padded[:, i, j] for j in range(1, wp, 2) for i in range(1, hp, 2)],
    ]
    for k in range(4):
        torch.testing.assert_close(seqs[:, k], torch.stack(expected[k], 1))
    torch.testing.assert_close(atrous_merge(seqs, h, w), x)


def test_atrous_merge_is_the_adjoint_of_atrous_scan_and_gradients_flow():
    x = _grid(1, 5, 6).requires_grad_()
    y = torch.randn(1, 4, 9, 2, dtype=torch.float64)
    torch.testing.assert_close((atrous_scan(x) * y).sum(), (x * atrous_merge(y, 5, 6)).sum())
    atrous_merge(atrous_scan(x) * 3, 5, 6).sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, 3.0))


def test_bad_shapes_are_clear_errors():
    with pytest.raises(ValueError, match=r"x must have shape \[B, H, W, C\]"):
        cross_scan(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="only step=2"):
        atrous_scan(_grid(1, 4, 4), step=3)
    with pytest.raises(ValueError, match=r"y must have shape \[B, 4, 12, C\]"):
        cross_merge(torch.randn(1, 4, 10, 2), 3, 4)
