"""Speed, memory and memory traffic of the ops' backends, side by side with their peers.

For each op, size and backend: the forward time, the forward + backward time (a gradient for every
input), the peak memory on a GPU, the bytes the op must move at least (its inputs read and its
outputs written once, forward; plus the backward's reads and writes for f+b) and how that compares
with the machine's memory bandwidth. These scans are memory-bound, so the bandwidth is their
limit:

* on a GPU, ``fwd BW`` / ``f+b BW`` are the achieved fraction of the device's peak bandwidth
  (minimum bytes / time / peak; the peak from the device's datasheet for known devices, else the
  measured copy bandwidth);
* on the CPU, ``fwd limit`` / ``f+b limit`` are the times the minimum bytes take at the measured
  copy bandwidth of this machine (a large ``copy_``, read + write counted), the floor any
  implementation has.

Backends (``--backends``, first one = reference of the ``vs`` column): the op's own (``naive``,
``chunk``, ``triton``), ``auto`` (what ``backend=None`` picks), and peers:

* ``loop``: a plain Python loop over time, the simplest fast code a user would write
  (``linear_scan``: ``h = a_t * h + b_t`` over ``a.unbind(1)``, stacked; ``selective_scan``: the
  same recurrence with ``exp(dt_t A)`` and the ``C`` read-out per step, ``D`` and the gate after);
* ``mamba_ssm``: mamba-ssm's ``selective_scan_fn`` (CUDA, when installed);
* ``causal_conv1d_pkg``: the ``causal-conv1d`` package's ``causal_conv1d_fn`` (CUDA, when
  installed).

A backend an op lacks, or a peer that is not installed, is shown as ``n/a``. Examples::

    .venv/bin/python benchmarks/ops.py --ops linear_scan selective_scan --backends auto loop \\
        --lengths 1024 4096 --dims 256
    python benchmarks/ops.py --device cuda --ops selective_scan --backends triton mamba_ssm chunk \\
        --batch 8 --dims 1536 --d-state 16 --lengths 2048 --repeats 10 --markdown
"""

from __future__ import annotations

import argparse
import importlib
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from mixerzoo.core.ops import linear_scan, selective_scan
from mixerzoo.core.ops.causal_conv1d import causal_conv1d
from mixerzoo.core.ops.gla import gla
from mixerzoo.core.ops.mlstm import mlstm
from mixerzoo.core.ops.retention import retention, retnet_decays
from mixerzoo.core.ops.ssm2d import ssm2d_scan

SCAN_OPS = ("selective_scan", "linear_scan", "ssm2d", "causal_conv1d")
HEAD_OPS = ("retention", "gla", "mlstm")
OPS = SCAN_OPS + HEAD_OPS

# Inputs that are fixed buffers in the mixers, not trained, so no gradient is asked for them.
FROZEN = {"retention": ("gamma",)}

# Datasheet peak memory bandwidth (bytes / s) by a substring of the device name.
PEAK_BANDWIDTH = {
    "H200": 4.8e12,
    "H100 NVL": 3.9e12,
    "H100 PCIe": 2.0e12,
    "H100": 3.35e12,  # SXM
    "A100-SXM4-80GB": 2.04e12,
    "A100 80GB PCIe": 1.94e12,
    "A100": 1.56e12,  # 40 GB
    "L40S": 0.864e12,
    "A10G": 0.6e12,
    "T4": 0.32e12,
}


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
    """``[B, T, D, N]`` (or ``[B, T, D]`` with ``--d-state 0``), decays in (0, 1)."""
    g = torch.Generator().manual_seed(0)
    shape = (batch, length, dim, d_state) if d_state else (batch, length, dim)
    return {"a": torch.rand(shape, generator=g), "b": torch.randn(shape, generator=g)}


def _inputs_conv(batch: int, dim: int, d_state: int, length: int) -> dict:
    """Mamba's convolution: ``x [B, T, D]``, 4 taps, bias, SiLU (``d_state`` unused)."""
    g = torch.Generator().manual_seed(0)
    return {
        "x": torch.randn(batch, length, dim, generator=g),
        "weight": torch.randn(dim, 4, generator=g) * 0.5,
        "bias": torch.randn(dim, generator=g) * 0.1,
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
    "causal_conv1d": _inputs_conv,
    "retention": _inputs_retention,
    "gla": _inputs_gla,
    "mlstm": _inputs_mlstm,
}


def _loop_linear(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The plain loop ``h = a_t * h + b_t`` (``unbind``: indexing ``a[:, t]`` would make the
    backward quadratic in T), stacked."""
    h = torch.zeros_like(b[:, 0])
    states = []
    for a_t, b_t in zip(a.unbind(1), b.unbind(1)):
        h = a_t * h + b_t
        states.append(h)
    return torch.stack(states, 1)


def _loop_selective(u, delta, A, B, C, D, z, delta_bias) -> torch.Tensor:
    """The plain loop of the selective scan: per step ``h = exp(dt_t A) h + dt_t u_t B_t`` and
    ``y_t = C_t . h``; the softplus, ``D`` and the gate vectorised around it."""
    dt = F.softplus(delta + delta_bias[:, None])
    x = dt * u
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for dt_t, x_t, B_t, C_t in zip(dt.unbind(-1), x.unbind(-1), B.unbind(-1), C.unbind(-1)):
        h = torch.exp(dt_t[:, :, None] * A) * h + x_t[:, :, None] * B_t[:, None, :]
        ys.append((h * C_t[:, None, :]).sum(-1))
    return (torch.stack(ys, -1) + D[:, None] * u) * F.silu(z)


def _peer(module: str, name: str) -> Callable | None:
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError:
        return None


def _call(op: str, backend: str, inputs: dict) -> torch.Tensor:
    """One run of ``op`` on ``backend``; raises LookupError if the pair does not exist here."""
    device = next(iter(inputs.values())).device
    if backend == "loop":
        if op == "linear_scan":
            return _loop_linear(**inputs)
        if op == "selective_scan":
            return _loop_selective(**inputs)
        raise LookupError("no loop peer")
    if backend == "causal_conv1d_pkg":
        fn = _peer("causal_conv1d", "causal_conv1d_fn")
        if op != "causal_conv1d" or fn is None or device.type != "cuda":
            raise LookupError("causal-conv1d not installed (or not a CUDA run)")
        x = inputs["x"].transpose(1, 2)
        return fn(x, inputs["weight"], inputs["bias"], activation="silu").transpose(1, 2)
    chosen = None if backend == "auto" else backend
    if backend == "mamba_ssm" and (op != "selective_scan" or _peer("mamba_ssm", "Mamba") is None):
        raise LookupError("mamba-ssm not installed")
    try:
        if op == "selective_scan":
            return selective_scan(**inputs, delta_softplus=True, backend=chosen)
        if op == "linear_scan":
            return linear_scan(**inputs, backend=chosen)[0]
        if op == "causal_conv1d":
            return causal_conv1d(**inputs, activation="silu", backend=chosen)
        if op == "ssm2d":
            return ssm2d_scan(**inputs, backend=chosen)[0]
        fn = {"retention": retention, "gla": gla, "mlstm": mlstm}[op]
        # Only the output is differentiated: the final state is what a carried piece would use.
        return fn(**inputs, backend=chosen)[0]
    except ValueError as err:
        if "not implemented" in str(err):
            raise LookupError(str(err)) from err
        raise


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
    + backward on a GPU, else ``None``). Raises LookupError for a missing backend or peer."""
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


def min_bytes(op: str, inputs: dict) -> tuple[int, int]:
    """The bytes the op must move at least: (forward, forward + backward).

    Forward: every input read once and the output written once. Backward: the inputs and the
    output gradient read once more, a gradient written for every differentiated input. Small
    per-channel parameters (A, D, biases, weights, gamma) are counted like the rest.
    """
    sizes = {k: v.numel() * v.element_size() for k, v in inputs.items()}
    frozen = FROZEN.get(op, ())
    total_in = sum(sizes.values())
    grads = sum(v for k, v in sizes.items() if k not in frozen)
    out = {
        "selective_scan": sizes.get("u", 0),
        "linear_scan": sizes.get("a", 0),
        "causal_conv1d": sizes.get("x", 0),
        "ssm2d": sizes.get("x", 0),
        "retention": sizes.get("v", 0),
        "gla": sizes.get("v", 0),
        "mlstm": sizes.get("v", 0),
    }[op]
    forward = total_in + out
    return forward, forward + total_in + out + grads


def measured_bandwidth(device: torch.device) -> float:
    """Copy bandwidth (bytes read + written per second) of a 256 MiB buffer, best of 5."""
    src = torch.empty(64 * 2**20, dtype=torch.float32, device=device).normal_()
    dst = torch.empty_like(src)
    best = _time(lambda: dst.copy_(src), 5, device)
    return 2 * src.numel() * src.element_size() / best


def _cell(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ops", nargs="+", choices=OPS, default=list(OPS))
    parser.add_argument("--lengths", nargs="+", type=int, default=[256, 1024, 4096])
    parser.add_argument("--dims", nargs="+", type=int, default=[64, 256], help="channels D")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument(
        "--d-state",
        type=int,
        default=16,
        help="states N per channel (selective_scan, ssm2d; linear_scan's trailing dim, 0: none)",
    )
    parser.add_argument("--heads", type=int, default=4, help="heads H (retention, gla, mlstm)")
    parser.add_argument(
        "--head-dims", nargs="+", type=int, default=[32, 64], help="dk = dv (retention, gla, mlstm)"
    )
    parser.add_argument("--variates", type=int, default=7, help="variates V of the ssm2d grid")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the best is shown")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--backends",
        nargs="+",
        default=None,
        help="backends and peers (default: auto loop naive on the CPU, "
        "triton chunk mamba_ssm causal_conv1d_pkg on a GPU)",
    )
    parser.add_argument(
        "--peak-bandwidth", type=float, default=None, help="GB/s (overrides the datasheet table)"
    )
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    backends = args.backends or (
        ["triton", "chunk", "mamba_ssm", "causal_conv1d_pkg"] if gpu else ["auto", "loop", "naive"]
    )

    copy_bw = measured_bandwidth(device)
    if gpu:
        name = torch.cuda.get_device_name(device)
        table = next((bw for key, bw in PEAK_BANDWIDTH.items() if key in name), None)
        peak = args.peak_bandwidth * 1e9 if args.peak_bandwidth else (table or copy_bw)
        source = "given" if args.peak_bandwidth else ("datasheet" if table else "measured copy")
        setup = (
            f"{name}, batch {args.batch}, peak bandwidth {peak / 1e9:.0f} GB/s ({source}; "
            f"measured copy {copy_bw / 1e9:.0f} GB/s)"
        )
    else:
        peak = copy_bw
        setup = (
            f"CPU, {torch.get_num_threads()} threads, batch {args.batch}, measured copy bandwidth "
            f"{copy_bw / 1e9:.1f} GB/s"
        )
    setup += f", best of {args.repeats}"
    print(setup)
    bw_head = ("fwd BW", "f+b BW") if gpu else ("fwd limit", "f+b limit")
    header = (
        f"{'op':<15}{'shape':>18} {'backend':<18}{'fwd ms':>10}{'f+b ms':>11}{'vs':>7}"
        f"{'MB fwd/f+b':>16}{bw_head[0]:>11}{bw_head[1]:>11}{'peak GiB':>10}"
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
                    shape = f"{args.batch}x{length}x{args.variates}x{dim}"
                elif scan:
                    inputs = MAKE[op](args.batch, dim, args.d_state, length)
                    first = next(iter(inputs.values()))
                    shape = "x".join(map(str, first.shape))
                else:
                    inputs = MAKE[op](args.batch, args.heads, dim, length)
                    shape = f"{args.batch}x{args.heads}x{length}x{dim}"
                inputs = {k: v.to(device) for k, v in inputs.items()}
                bytes_fwd, bytes_fb = min_bytes(op, inputs)
                reference = None
                for backend in backends:
                    try:
                        fwd, fwd_bwd, mem = bench(op, backend, inputs, args.repeats)
                    except LookupError:
                        continue
                    except Exception as err:  # report, keep the table going
                        print(f"{op:<15}{shape:>18} {backend:<18}failed: {type(err).__name__}: "
                              f"{str(err).splitlines()[0][:80]}")  # fmt: skip
                        continue
                    reference = reference or (fwd, fwd_bwd)
                    if gpu:
                        bw = (bytes_fwd / fwd / peak * 100, bytes_fb / fwd_bwd / peak * 100)
                        bw_cells = (f"{bw[0]:.0f}%", f"{bw[1]:.0f}%")
                    else:
                        bw = (bytes_fwd / peak * 1e3, bytes_fb / peak * 1e3)
                        bw_cells = (f"{bw[0]:.2f}ms", f"{bw[1]:.2f}ms")
                    vs = reference[1] / fwd_bwd
                    mb = f"{bytes_fwd / 1e6:.3g}/{bytes_fb / 1e6:.3g}"
                    rows.append((op, shape, backend, fwd, fwd_bwd, vs, mb, bw_cells, mem))
                    print(
                        f"{op:<15}{shape:>18} {backend:<18}{fwd * 1e3:>10.2f}{fwd_bwd * 1e3:>11.2f}"
                        f"{vs:>6.2f}x{mb:>16}{bw_cells[0]:>11}{bw_cells[1]:>11}"
                        f"{_cell(mem, '.2f'):>10}",
                        flush=True,
                    )
    if args.markdown:
        print()
        print(f"{setup}. `vs`: f+b time of the first backend listed / this one's.")
        print()
        print(
            f"| op | shape | backend | fwd (ms) | f+b (ms) | vs | MB fwd / f+b | {bw_head[0]} "
            f"| {bw_head[1]} | peak GiB |"
        )
        print("|---|---|---|--:|--:|--:|--:|--:|--:|--:|")
        for op, shape, backend, fwd, fwd_bwd, vs, mb, bw_cells, mem in rows:
            print(
                f"| {op} | {shape} | {backend} | {fwd * 1e3:.2f} | {fwd_bwd * 1e3:.2f} | "
                f"{vs:.2f}x | {mb} | {bw_cells[0]} | {bw_cells[1]} | {_cell(mem, '.2f')} |"
            )


if __name__ == "__main__":
    main()
