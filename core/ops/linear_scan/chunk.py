"""Fast pure-PyTorch linear scan: a two-level chunked scan with a reverse-scan backward.

The recurrence ``h_t = a_t * h_{t-1} + b_t`` is split into ``nC`` chunks of ``L`` steps. All chunks
are advanced together, one position at a time, so each Python-level step works on ``nC`` slices
at once and the loop runs ``~2L`` times per level instead of ``T`` times:

1. local sweep: the state each chunk reaches from a zero start (``L`` steps over all chunks);
2. carries: chunk ``c`` maps its start state ``H`` to ``P_c * H + local_c`` where ``P_c`` is the
   product of its decays, so the chunk start states are themselves a (short) linear scan, solved by
   the same function recursively;
3. final sweep: every chunk re-runs from its true start state, writing the outputs.

Only products and sums of the inputs appear, never a division by a cumulative product and no
logarithm, so decays of exactly zero (resets), negative or complex decays and long products that
underflow are all exact in the sense of the step-by-step loop (same operations, reassociated).

The backward pass is itself a reverse linear scan (see ``_LinearScanFn``), so training costs about
two forward scans and saves only ``a`` and the outputs.

Threads. A sweep is a long series of mid-sized operations; run with PyTorch's intra-op threads,
each of them is a parallel region whose threads synchronise at its end, and on a busy machine
(other processes on the cores) every synchronisation can wait for a scheduler time slice:
measured on 2 shared cores, the chunked scan of ``[2, 4096, 256]`` took 726 ms with 2 intra-op
threads and 8 ms with one (a plain Python loop: 88 ms). So the sweeps run their operations on one
intra-op thread, and use several threads, when PyTorch is allowed several, only for large time
steps, by splitting the trailing values into contiguous blocks scanned side by side by a small
thread pool (one synchronisation per sweep instead of one per operation; PyTorch releases the
GIL inside its operations).
"""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor

import torch

__all__ = ["scan_sweep", "linear_scan_chunk"]


# From this many values per time step a plain sequential sweep wins on CPU: each step's tensor
# op is already large enough to hide the Python overhead, and one pass moves half the memory of
# the two chunked sweeps (measured on one thread: equal at 4K values per step, sequential ahead
# from 8K; 2x faster at 16K on two threads).
SEQUENTIAL_STEP_ELEMENTS = 8192

# Values per time step from which a sweep is split across threads (each block's operations still
# large enough that the Python dispatch, which holds the GIL, stays a small part of them).
PARALLEL_STEP_ELEMENTS = 65536

_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _auto_chunk(length: int, step_elements: int) -> int:
    if step_elements >= SEQUENTIAL_STEP_ELEMENTS:
        return length
    # Measured on CPU: 8-32 steps per chunk minimise time over a wide range of T and state sizes
    # (the chunk carries recurse, so long sequences still take only O(log T) levels); longer
    # chunks pay off for long sequences of small steps (fewer operations per level).
    if length >= 2048:
        return 32
    return 16 if length >= 256 else 8


@contextlib.contextmanager
def _one_intra_op_thread():
    """Run the enclosed PyTorch operations on one intra-op thread (see the module docstring)."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _pool(workers: int) -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL._max_workers < workers:
            _POOL = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="linear_scan")
        return _POOL


def _sequential(
    a: torch.Tensor, b: torch.Tensor, h: torch.Tensor | None, out: torch.Tensor, reverse: bool
) -> None:
    steps = range(a.shape[1] - 1, -1, -1) if reverse else range(a.shape[1])
    for t in steps:
        if h is None:
            out[:, t].copy_(b[:, t])
        else:
            torch.addcmul(b[:, t], a[:, t], h, out=out[:, t])
        h = out[:, t]


def _chunked(
    a: torch.Tensor,
    b: torch.Tensor,
    h0: torch.Tensor | None,
    out: torch.Tensor,
    chunk: int,
    reverse: bool,
) -> None:
    """Scan whose length is a multiple of ``chunk``; writes into ``out`` (which may alias ``b``)."""
    batch, length = a.shape[:2]
    rest = a.shape[2:]
    n_chunks = length // chunk
    a_c = a.view(batch, n_chunks, chunk, *rest)
    b_c = b.view(batch, n_chunks, chunk, *rest)
    o_c = out.view(batch, n_chunks, chunk, *rest)
    order = list(range(chunk - 1, -1, -1)) if reverse else list(range(chunk))

    # 1. local sweep from a zero state: the state each chunk reaches on its own, and the product
    #    of its decays (a running product here is cheaper than a strided prod() reduction).
    local = b_c[:, :, order[0]].clone()
    decay = a_c[:, :, order[0]].clone()
    for i in order[1:]:
        torch.addcmul(b_c[:, :, i], a_c[:, :, i], local, out=local)
        decay.mul_(a_c[:, :, i])

    # 2. carries between chunks: a short scan over chunks with the chunk decay products (in place
    #    into ``local``); the start state of each chunk is the carry of its neighbour (written
    #    into ``decay``, no longer needed).
    _sweep(decay, local, h0, local, _auto_chunk(n_chunks, decay.numel() // n_chunks), reverse)
    ends = local
    start = decay
    edge = -1 if reverse else 0
    if reverse:
        start[:, :-1] = ends[:, 1:]
    else:
        start[:, 1:] = ends[:, :-1]
    if h0 is None:
        start[:, edge].zero_()
    else:
        start[:, edge] = h0

    # 3. final sweep from the true chunk start states (reads b_c[..., i] before writing o_c[..., i]).
    prev = start
    for i in order:
        torch.addcmul(b_c[:, :, i], a_c[:, :, i], prev, out=o_c[:, :, i])
        prev = o_c[:, :, i]


@torch.no_grad()
def scan_sweep(
    a: torch.Tensor,
    b: torch.Tensor,
    h0: torch.Tensor | None = None,
    *,
    reverse: bool = False,
    out: torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """All states of a linear recurrence along dim 1, without autograd (the kernel of the ops).

    Forward: ``out_t = a_t * out_{t-1} + b_t`` with ``out_{-1} = h0``. Reverse:
    ``out_t = a_t * out_{t+1} + b_t`` with ``out_T = h0`` (the adjoint recurrence of backward
    passes). ``h0=None`` means a zero state.

    Args:
        a: decays ``[B, T, *]``.
        b: inputs ``[B, T, *]`` (same shape and dtype as ``a``).
        h0: boundary state ``[B, *]`` or ``None``.
        reverse: run from ``t = T - 1`` down to ``0``.
        out: optional contiguous ``[B, T, *]`` result buffer; it may be ``b`` itself (in place).
        chunk_size: steps per chunk; default 8, 16 or 32 by length, or no chunking (one
            sequential sweep) when a time step already holds ``SEQUENTIAL_STEP_ELEMENTS`` values
            or more; sequences shorter than four chunks are swept sequentially too.

    Returns:
        ``out [B, T, *]``.
    """
    a, b = a.contiguous(), b.contiguous()
    if out is None:
        out = torch.empty_like(b)
    length = a.shape[1]
    step_elements = a.numel() // max(length, 1)
    chunk = chunk_size or _auto_chunk(length, step_elements)
    threads = torch.get_num_threads() if a.device.type == "cpu" else 1
    with _one_intra_op_thread() if a.device.type == "cpu" else contextlib.nullcontext():
        values = step_elements // max(a.shape[0], 1)
        workers = min(threads, values // max(1, PARALLEL_STEP_ELEMENTS // threads))
        if workers <= 1 or step_elements < PARALLEL_STEP_ELEMENTS:
            _sweep(a, b, h0, out, chunk, reverse)
            return out
        # Contiguous blocks of the trailing values, scanned side by side.
        flat = [x.reshape(x.shape[0], x.shape[1], -1) for x in (a, b, out)]
        h0_flat = h0.reshape(h0.shape[0], -1) if h0 is not None else None
        bounds = [values * i // workers for i in range(workers + 1)]
        jobs = []
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            part = [x[..., lo:hi] for x in flat]
            h0_part = h0_flat[:, lo:hi] if h0_flat is not None else None
            jobs.append(_pool(workers).submit(_sweep, *part[:2], h0_part, part[2], chunk, reverse))
        for job in jobs:
            job.result()
    return out


@torch.no_grad()  # grad mode is per thread: the pool's threads need it too
def _sweep(
    a: torch.Tensor,
    b: torch.Tensor,
    h0: torch.Tensor | None,
    out: torch.Tensor,
    chunk: int,
    reverse: bool,
) -> None:
    """:func:`scan_sweep` on one thread (``a``, ``b``, ``out`` may be views of column blocks)."""
    length = a.shape[1]
    main = (length // chunk) * chunk
    # Too short for chunks to pay: their two sweeps and carries cost more operations than T.
    if length < 4 * chunk:
        _sequential(a, b, h0, out, reverse)
        return
    if reverse:
        # The remainder sits at the start, so the chunked part sees the boundary state h0.
        tail = length - main
        _chunked(a[:, tail:], b[:, tail:], h0, out[:, tail:], chunk, reverse=True)
        if tail:
            _sequential(a[:, :tail], b[:, :tail], out[:, tail], out[:, :tail], reverse=True)
    else:
        _chunked(a[:, :main], b[:, :main], h0, out[:, :main], chunk, reverse=False)
        if main < length:
            _sequential(a[:, main:], b[:, main:], out[:, main - 1], out[:, main:], reverse=False)


class _LinearScanFn(torch.autograd.Function):
    """``h = scan(a, b, h0)`` with the adjoint scan as backward.

    With ``g_t = dL/dh_t`` (from the outputs only) and ``lam_t`` the total gradient of ``h_t``:
    ``lam_t = g_t + conj(a_{t+1}) lam_{t+1}``. Writing ``mu_t = conj(a_t) lam_t`` (the gradient
    that reaches ``h_{t-1}`` through step ``t``) gives the reverse scan
    ``mu_t = conj(a_t) * mu_{t+1} + conj(a_t) * g_t``, then ``grad_b = lam = g + mu_{t+1}``,
    ``grad_a_t = lam_t * conj(h_{t-1})`` and ``grad_h0 = mu_0`` (conjugates follow PyTorch's
    convention for complex gradients and vanish for real tensors).
    """

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None) -> torch.Tensor:
        h = scan_sweep(a, b, h0)
        ctx.save_for_backward(a, h, h0)
        return h

    @staticmethod
    def backward(ctx, grad_h: torch.Tensor):
        a, h, h0 = ctx.saved_tensors
        grad_h = grad_h.contiguous()
        a_conj = a.conj()
        mu = a_conj * grad_h
        scan_sweep(a_conj, mu, reverse=True, out=mu)
        lam = grad_h.clone()
        lam[:, :-1] += mu[:, 1:]
        grad_a = None
        if ctx.needs_input_grad[0]:
            grad_a = torch.empty_like(lam)
            torch.mul(lam[:, 1:], h[:, :-1].conj(), out=grad_a[:, 1:])
            if h0 is None:
                grad_a[:, 0].zero_()
            else:
                torch.mul(lam[:, 0], h0.conj(), out=grad_a[:, 0])
        grad_h0 = mu[:, 0].clone() if h0 is not None and ctx.needs_input_grad[2] else None
        return grad_a, lam, grad_h0


def linear_scan_chunk(
    a: torch.Tensor,
    b: torch.Tensor,
    h0: torch.Tensor | None = None,
    reset: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked parallel ``h_t = a_t * h_{t-1} + b_t`` (``h_t = b_t`` where ``reset_t``).

    Same arguments and returns as :func:`mixerzoo.core.ops.linear_scan.naive.linear_scan_naive`.
    A reset is a zero decay at that step, which the scan handles exactly.
    """
    dtype = a.dtype
    compute = torch.promote_types(dtype, torch.float32)
    a, b = a.to(compute), b.to(compute)
    if h0 is not None:
        h0 = h0.to(compute)
    if reset is not None:
        a = a.masked_fill(reset.view(*reset.shape, *(1,) * (a.dim() - 2)), 0)
    h = _LinearScanFn.apply(a, b, h0)
    return h.to(dtype), h[:, -1].to(dtype)
