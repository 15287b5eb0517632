"""Speed of the fast pure-PyTorch ops against their step-by-step references on the CPU.

For each op and sequence length, times the forward pass and the forward + backward pass of the
``chunk`` backend and of the ``naive`` loop, and prints a table with the speedup. The ops:

* ``selective_scan``, ``linear_scan``: per-channel scans; the ``D`` column is the number of
  channels (``--dims``), with ``--d-state`` states per channel.
* ``retention``, ``gla``, ``mlstm``: multi-head linear-attention recurrences with ``--heads``
  heads; the ``D`` column is the head dimension ``dk = dv`` (``--head-dims``).

``--markdown`` also prints the table as Markdown (for ``benchmarks/RESULTS.md``). Example::

    .venv/bin/python benchmarks/ops.py --lengths 256 1024 4096 --repeats 3 --ops selective_scan
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from mixerzoo.core.ops import linear_scan, selective_scan
from mixerzoo.core.ops.gla import gla
from mixerzoo.core.ops.mlstm import mlstm
from mixerzoo.core.ops.retention import retention, retnet_decays

SCAN_OPS = ("selective_scan", "linear_scan")
HEAD_OPS = ("retention", "gla", "mlstm")
OPS = SCAN_OPS + HEAD_OPS

# Inputs that are fixed buffers in the mixers, not trained, so no gradient is asked for them.
FROZEN = {"retention": ("gamma",)}


def _inputs_selective(batch: int, dim: int, d_state: int, length: int) -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "u": torch.randn(batch, dim, length, generator=g),
        # Pre-softplus time steps around the Mamba init range (softplus(-4) ~ 0.018).
        "delta": torch.randn(batch, dim, length, generator=g) - 4.0,
        "A": -torch.arange(1, d_state + 1, dtype=torch.float32).repeat(dim, 1),
        "B": torch.randn(batch, d_state, length, generator=g),
        "C": torch.randn(batch, d_state, length, generator=g),
        "D": torch.ones(dim),
        "z": torch.randn(batch, dim, length, generator=g),
        "delta_bias": torch.zeros(dim),
    }


def _inputs_linear(batch: int, dim: int, d_state: int, length: int) -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "a": torch.rand(batch, length, dim, d_state, generator=g),
        "b": torch.randn(batch, length, dim, d_state, generator=g),
    }


def _qkv(batch: int, heads: int, head_dim: int, length: int, g: torch.Generator) -> dict:
    shape = (batch, heads, length, head_dim)
    return {
        "q": torch.randn(shape, generator=g),
        # Scaled by dk^-0.5 as the mixers do, so the scores stay O(1).
        "k": torch.randn(shape, generator=g) * head_dim**-0.5,
        "v": torch.randn(shape, generator=g),
    }


def _inputs_retention(batch: int, heads: int, head_dim: int, length: int) -> dict:
    g = torch.Generator().manual_seed(0)
    # RetNet's multi-scale decays 1 - 2^(-5-h), as the mixer uses them.
    return {**_qkv(batch, heads, head_dim, length, g), "gamma": retnet_decays(heads).float()}


def _inputs_gla(batch: int, heads: int, head_dim: int, length: int) -> dict:
    g = torch.Generator().manual_seed(0)
    inputs = _qkv(batch, heads, head_dim, length, g)
    # The paper's gate log(sigmoid(z)^(1/16)) with z ~ N(0, 1): alpha mostly in 0.93 .. 0.99.
    z = torch.randn(batch, heads, length, head_dim, generator=g)
    return {**inputs, "g": F.logsigmoid(z) / 16.0}


def _inputs_mlstm(batch: int, heads: int, head_dim: int, length: int) -> dict:
    g = torch.Generator().manual_seed(0)
    inputs = _qkv(batch, heads, head_dim, length, g)
    # xLSTM's init: forget-gate bias linspace(3, 6) over the heads, input-gate bias N(0, 0.1);
    # the unit-variance noise stands in for the projections of the input.
    f_bias = torch.linspace(3.0, 6.0, heads).view(1, heads, 1)
    log_f = F.logsigmoid(torch.randn(batch, heads, length, generator=g) + f_bias)
    log_i = torch.randn(batch, heads, length, generator=g)
    return {**inputs, "log_i": log_i, "log_f": log_f}


MAKE = {
    "selective_scan": _inputs_selective,
    "linear_scan": _inputs_linear,
    "retention": _inputs_retention,
    "gla": _inputs_gla,
    "mlstm": _inputs_mlstm,
}


def _call(op: str, backend: str, inputs: dict) -> torch.Tensor:
    if op == "selective_scan":
        return selective_scan(**inputs, delta_softplus=True, backend=backend)
    if op == "linear_scan":
        return linear_scan(**inputs, backend=backend)[0]
    fn = {"retention": retention, "gla": gla, "mlstm": mlstm}[op]
    # Only the output is differentiated: the final state is what a carried piece would use.
    return fn(**inputs, backend=backend)[0]


def _time(fn: Callable[[], None], repeats: int) -> float:
    fn()  # warm-up: allocator and first-call costs are not what we measure
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bench(op: str, backend: str, inputs: dict, repeats: int) -> tuple[float, float]:
    """(forward seconds, forward + backward seconds), best of ``repeats``."""

    def forward() -> None:
        with torch.no_grad():
            _call(op, backend, inputs)

    frozen = FROZEN.get(op, ())
    leaves = {
        k: v.clone() if k in frozen else v.clone().requires_grad_() for k, v in inputs.items()
    }
    # A fixed output gradient (made on the warm-up call), so no loss computation is timed.
    grad: list[torch.Tensor] = []

    def forward_backward() -> None:
        for v in leaves.values():
            v.grad = None
        out = _call(op, backend, leaves)
        if not grad:
            grad.append(torch.randn(out.shape, generator=torch.Generator().manual_seed(1)))
        out.backward(grad[0])

    return _time(forward, repeats), _time(forward_backward, repeats)


def _markdown(setup: str, rows: list[tuple[str, int, int, float, float, float, float]]) -> str:
    """The table as Markdown, times in milliseconds."""
    lines = [
        f"{setup}.",
        "",
        "| op | D | T | fwd chunk (ms) | fwd naive (ms) | speedup "
        "| f+b chunk (ms) | f+b naive (ms) | speedup |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for op, dim, length, fc, fn, bc, bn in rows:
        lines.append(
            f"| {op} | {dim} | {length} | {fc * 1e3:.1f} | {fn * 1e3:.1f} | {fn / fc:.1f}x "
            f"| {bc * 1e3:.1f} | {bn * 1e3:.1f} | {bn / bc:.1f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ops", nargs="+", choices=OPS, default=list(OPS))
    parser.add_argument("--lengths", nargs="+", type=int, default=[256, 1024, 4096])
    parser.add_argument(
        "--dims", nargs="+", type=int, default=[64, 256], help="channels D (scan ops)"
    )
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument(
        "--d-state", type=int, default=16, help="state size N per channel (scan ops)"
    )
    parser.add_argument("--heads", type=int, default=4, help="heads H (retention, gla, mlstm)")
    parser.add_argument(
        "--head-dims",
        nargs="+",
        type=int,
        default=[32, 64],
        help="head dim dk = dv (retention, gla, mlstm)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the best is shown")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's)"
    )
    parser.add_argument(
        "--markdown", action="store_true", help="also print the table as Markdown at the end"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    setup = f"CPU, {torch.get_num_threads()} threads, batch {args.batch}"
    if any(op in SCAN_OPS for op in args.ops):
        setup += f", N={args.d_state}"
    if any(op in HEAD_OPS for op in args.ops):
        setup += f", H={args.heads}"
    setup += f", best of {args.repeats}"
    print(setup)
    header = (
        f"{'op':<15}{'D':>5}{'T':>6} | {'fwd chunk':>10}{'fwd naive':>10}{'speedup':>8} | "
        f"{'f+b chunk':>10}{'f+b naive':>10}{'speedup':>8}"
    )
    print(header)
    print("-" * len(header))
    rows = []
    for op in args.ops:
        scan = op in SCAN_OPS
        for dim in args.dims if scan else args.head_dims:
            for length in args.lengths:
                if scan:
                    inputs = MAKE[op](args.batch, dim, args.d_state, length)
                else:
                    inputs = MAKE[op](args.batch, args.heads, dim, length)
                fc, bc = bench(op, "chunk", inputs, args.repeats)
                fn, bn = bench(op, "naive", inputs, args.repeats)
                rows.append((op, dim, length, fc, fn, bc, bn))
                print(
                    f"{op:<15}{dim:>5}{length:>6} | {fc * 1e3:>8.1f}ms{fn * 1e3:>8.1f}ms{fn / fc:>7.1f}x | "
                    f"{bc * 1e3:>8.1f}ms{bn * 1e3:>8.1f}ms{bn / bc:>7.1f}x",
                    flush=True,
                )
    if args.markdown:
        note = "D is the channel count for the scans and the head dim dk = dv for the others"
        print()
        print(_markdown(f"{setup}; {note}", rows))


if __name__ == "__main__":
    main()
