"""The CPU path of linear_scan's sweeps: one intra-op thread inside a sweep (PyTorch's setting
restored after), wide time steps split into column blocks scanned by a thread pool (same values
as one sweep, forward and reverse, with a boundary state, under autograd too), and the
size-based choice between the chunked and the sequential sweep."""

from __future__ import annotations

import pytest
import torch

from mixerzoo.core.ops import linear_scan
from mixerzoo.core.ops.linear_scan import chunk as chunk_module
from mixerzoo.core.ops.linear_scan.naive import linear_scan_naive
from mixerzoo.core.testing import assert_close


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("length", [3, 37])
def test_column_blocks_in_threads_equal_one_sweep(two_threads, monkeypatch, reverse, length):
    # Small thresholds, so that a small input takes the threaded path (3 blocks of 7 values).
    monkeypatch.setattr(chunk_module, "PARALLEL_STEP_ELEMENTS", 8)
    a = torch.rand(2, length, 3, 7, dtype=torch.float64) * 2 - 1
    b = torch.randn(2, length, 3, 7, dtype=torch.float64)
    h0 = torch.randn(2, 3, 7, dtype=torch.float64)
    got = chunk_module.scan_sweep(a, b, h0, reverse=reverse, chunk_size=4)
    monkeypatch.setattr(chunk_module, "PARALLEL_STEP_ELEMENTS", 10**9)
    want = chunk_module.scan_sweep(a, b, h0, reverse=reverse, chunk_size=4)
    assert torch.equal(got, want)
    assert torch.get_num_threads() == 2


def test_threaded_path_under_autograd_matches_the_loop(two_threads, monkeypatch):
    monkeypatch.setattr(chunk_module, "PARALLEL_STEP_ELEMENTS", 8)
    a = (torch.rand(2, 29, 12, dtype=torch.float64) * 2 - 1).requires_grad_()
    b = torch.randn(2, 29, 12, dtype=torch.float64, requires_grad=True)
    reset = torch.zeros(2, 29, dtype=torch.bool)
    reset[0, 0] = reset[1, 28] = reset[1, 9] = True
    w = torch.randn(2, 29, 12, dtype=torch.float64)
    outs = []
    for fn in (chunk_module.linear_scan_chunk, linear_scan_naive):
        h, _ = fn(a, b, None, reset)
        outs.append([h.detach(), *torch.autograd.grad((h * w).sum(), [a, b])])
    for got, want in zip(*outs):
        assert_close(got, want)


def test_intra_op_threads_restored_after_an_error(two_threads):
    with pytest.raises(RuntimeError):
        with chunk_module._one_intra_op_thread():
            assert torch.get_num_threads() == 1
            raise RuntimeError("inside")
    assert torch.get_num_threads() == 2


def test_size_based_sweep_choice():
    # Wide steps: one sequential sweep; long sequences of small steps: longer chunks.
    assert chunk_module._auto_chunk(1024, chunk_module.SEQUENTIAL_STEP_ELEMENTS) == 1024
    assert chunk_module._auto_chunk(4096, 512) == 32
    assert chunk_module._auto_chunk(512, 512) == 16
    assert chunk_module._auto_chunk(100, 512) == 8
    # Values are the same whichever sweep is chosen.
    a, b = torch.rand(2, 300, 5, dtype=torch.float64), torch.randn(2, 300, 5, dtype=torch.float64)
    want = linear_scan(a, b, backend="naive")[0]
    for chunk in (None, 1, 32, 300):
        assert_close(chunk_module.scan_sweep(a, b, chunk_size=chunk), want)
