"""Speed of the ops' fast backends against their references.

For each op and sequence length, times the forward pass and the forward + backward pass of two
backends (``--compare FAST REF``; by default the ``chunk`` path against the ``naive`` loop) and
prints a table with the speedup; on a GPU (``--device cuda``) also the peak memory of the
forward + backward. The ops:

* ``selective_scan``, ``linear_scan``: per-channel scans; the ``D`` column is the number of
  channels (``--dims``), with ``--d-state`` states per channel.
* ``ssm2d``: Chimera's 2-D scan over ``T x --variates`` tokens; ``D`` is the inner width ``E``
  (``--dims``), ``--d-state`` states per channel and axis.
* ``retention``, ``gla``, ``mlstm``: multi-head linear-attention recurrences with ``--heads``
  heads; the ``D`` column is the head dimension ``dk = dv`` (``--head-dims``).

``--markdown`` also prints the table as Markdown (for ``benchmarks/RESULTS.md``). Examples::

    .venv/bin/python benchmarks/ops.py --lengths 256 1024 4096 --repeats 3 --ops selective_scan
    python benchmarks/ops.py --device cuda --compare triton chunk --ops ssm2d --batch 32 \\
        --dims 64 --d-state 8 --variates 7 --lengths 96 --repeats 10
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
from mixerzoo.core.ops.ssm2d import ssm2d_scan

SCAN_OPS = ("selective_scan", "linear_scan", "ssm2d")
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


def _inputs_ssm2d(batch: int, dim: int, d_state: int, length: int, variates: int) -> dict:
    g = torch.Generator().manual_seed(0)
    tokens = (batch, length, variates, dim)
    s4d = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(dim, 1)
    return {
        "x": torch.randn(tokens, generator=g),
        # Step sizes around the mixer's initial range [1e-3, 1e-1].
        "dt1": F.softplus(torch.randn(tokens, generator=g) - 4.0),
        "dt2": F.softplus(torch.randn(tokens, generator=g) - 4.0),
        # The mixer's initialisation: S4D-Real diagonals, couplings at half of it.
        "A1": -s4d,
        "A2": -0.5 * s4d,
        "A3": -0.5 * s4d,
        "A4": -s4d.clone(),
        **{
            k: torch.randn(batch, length, variates, d_state, generator=g)
            for k in ("B1", "B2", "C1", "C2")
        },
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
    if op == "ssm2d":
        return ssm2d_scan(**inputs, backend=backend)[0]
    fn = {"retention": retention, "gla": gla, "mlstm": mlstm}[op]
    # Only the output is differentiated: the final state is what a carried piece would use.
    return fn(**inputs, backend=backend)[0]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable[[], None], repeats: int, device: torch.device) -> float:
    fn()  # warm-up: allocator, compilation and first-call costs are not what we measure
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def bench(op: str, backend: str, inputs: dict, repeats: int) -> tuple[float, float, float | None]:
    """(forward seconds, forward + backward seconds, best of ``repeats``; peak GiB of the forward
    + backward on a GPU, else ``None``)."""
    device = next(iter(inputs.values())).device

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
            g = torch.Generator().manual_seed(1)
            grad.append(torch.randn(out.shape, generator=g).to(out.device))
        out.backward(grad[0])

    fwd = _time(forward, repeats, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    fwd_bwd = _time(forward_backward, repeats, device)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return fwd, fwd_bwd, peak


def _memory(peak: float | None) -> str:
    return "-" if peak is None else f"{peak:.2f}"


def _markdown(setup: str, names: tuple[str, str], rows: list[tuple]) -> str:
    """The table as Markdown, times in milliseconds, peak memory in GiB."""
    fast, ref = names
    lines = [
        f"{setup}.",
        "",
        f"| op | D | T | fwd {fast} (ms) | fwd {ref} (ms) | speedup "
        f"| f+b {fast} (ms) | f+b {ref} (ms) | speedup | peak {fast} (GiB) | peak {ref} (GiB) |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for op, dim, length, (ff, bf, pf), (fr, br, pr) in rows:
        lines.append(
            f"| {op} | {dim} | {length} | {ff * 1e3:.1f} | {fr * 1e3:.1f} | {fr / ff:.1f}x "
            f"| {bf * 1e3:.1f} | {br * 1e3:.1f} | {br / bf:.1f}x | {_memory(pf)} | {_memory(pr)} |"
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
    parser.add_argument(
        "--variates", type=int, default=7, help="variates V of the ssm2d grid (ETTh1 has 7)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the best is shown")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's)"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--compare",
        nargs=2,
        default=["chunk", "naive"],
        metavar=("FAST", "REF"),
        help="the two backends timed (default: chunk naive)",
    )
    parser.add_argument(
        "--markdown", action="store_true", help="also print the table as Markdown at the end"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    fast, ref = args.compare

    if device.type == "cuda":
        setup = f"{torch.cuda.get_device_name(device)}, batch {args.batch}"
    else:
        setup = f"CPU, {torch.get_num_threads()} threads, batch {args.batch}"
    if any(op in SCAN_OPS for op in args.ops):
        setup += f", N={args.d_state}"
    if "ssm2d" in args.ops:
        setup += f", V={args.variates} (ssm2d)"
    if any(op in HEAD_OPS for op in args.ops):
        setup += f", H={args.heads}"
    setup += f", best of {args.repeats}"
    print(setup)
    header = (
        f"{'op':<15}{'D':>5}{'T':>6} | {'fwd ' + fast:>12}{'fwd ' + ref:>12}{'speedup':>8} | "
        f"{'f+b ' + fast:>12}{'f+b ' + ref:>12}{'speedup':>8} | {'peak GiB':>12}"
    )
    print(header)
    print("-" * len(header))
    rows = []
    for op in args.ops:
        scan = op in SCAN_OPS
        for dim in args.dims if scan else args.head_dims:
            for length in args.lengths:
                if op == "ssm2d":
                    inputs = _inputs_ssm2d(args.batch, dim, args.d_state, length, args.variates)
                elif scan:
                    inputs = MAKE[op](args.batch, dim, args.d_state, length)
                else:
                    inputs = MAKE[op](args.batch, args.heads, dim, length)
                inputs = {k: v.to(device) for k, v in inputs.items()}
                f, r = (bench(op, backend, inputs, args.repeats) for backend in (fast, ref))
                rows.append((op, dim, length, f, r))
                print(
                    f"{op:<15}{dim:>5}{length:>6} | {f[0] * 1e3:>10.1f}ms{r[0] * 1e3:>10.1f}ms"
                    f"{r[0] / f[0]:>7.1f}x | {f[1] * 1e3:>10.1f}ms{r[1] * 1e3:>10.1f}ms"
                    f"{r[1] / f[1]:>7.1f}x | {_memory(f[2]):>5} {_memory(r[2]):>6}",
                    flush=True,
                )
    if args.markdown:
        note = "D is the channel count for the scans and the head dim dk = dv for the others"
        print()
        print(_markdown(f"{setup}; {note}", (fast, ref), rows))


if __name__ == "__main__":
    main()
