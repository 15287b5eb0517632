"""Compile every fused Triton kernel of ``core/ops`` for a GPU target without a GPU.

Each kernel is compiled (Triton -> PTX -> cubin with the bundled ``ptxas``) for the target
(default sm_90, an H100 / H200) in the configurations the wrappers launch, and its resource use
is printed: registers per thread, spilled bytes (local memory and stack frame) and shared memory,
read from the cubin
with the bundled ``cuobjdump``. This is what can be checked of the compiled kernels on a machine
without a GPU; it says nothing of their speed. The interpreter tests check their numbers.

    TRITON_INTERPRET=0 .venv/bin/python benchmarks/compile_kernels.py [--arch 90] [--only NAME]

Exits non-zero if a kernel fails to compile, or (with ``--no-spills``) spills.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

if os.environ.get("TRITON_INTERPRET") == "1":
    sys.exit("compile_kernels.py: unset TRITON_INTERPRET (interpreted kernels cannot be compiled)")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from mixerzoo.core.ops.causal_conv1d import triton as conv  # noqa: E402
from mixerzoo.core.ops.gla import triton as gla  # noqa: E402
from mixerzoo.core.ops.linear_scan import triton as lscan  # noqa: E402
from mixerzoo.core.ops.mlstm import triton as mlstm  # noqa: E402
from mixerzoo.core.ops.selective_scan import triton as sscan  # noqa: E402

# Pointer element types by argument name; every other pointer is fp32, every scalar i32.
POINTER_TYPES = {"reset_ptr": "*i8", "mask_ptr": "*i8", "seg_ptr": "*i32"}


def _signature(fn, constexprs: dict, pointer_type: str) -> dict:
    sig = {}
    for param in fn.params:
        if param.is_constexpr:
            sig[param.name] = "constexpr"
        elif param.name.endswith("_ptr"):
            sig[param.name] = POINTER_TYPES.get(param.name, pointer_type)
        else:
            sig[param.name] = "i32"
    missing = [p.name for p in fn.params if p.is_constexpr and p.name not in constexprs]
    if missing:
        raise ValueError(f"{fn.__name__}: no value for constexpr {missing}")
    return sig


def _resources(cubin: bytes) -> dict:
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run(
            [tool, "--dump-resource-usage", f.name], capture_output=True, text=True
        )
    found = re.search(r"REG:(\d+).*?STACK:(\d+).*?SHARED:(\d+).*?LOCAL:(\d+)", out.stdout)
    if not found:
        return {"registers": "?", "stack": "?", "shared": "?", "local": "?"}
    return dict(zip(("registers", "stack", "shared", "local"), map(int, found.groups())))


def _cases() -> list[tuple[str, object, dict, int, str]]:
    """(label, kernel, constexprs, warps, pointer type) in the configurations the wrappers use."""
    f32 = tl.float32
    cases = []
    for complex_ in (False, True):
        for summary in (False, True):
            base = dict(BLOCK=512, COMPLEX=complex_, HAS_RESET=True, SUMMARY=summary, ACC=f32)
            tag = f"{'complex' if complex_ else 'real'}, {'summary' if summary else 'apply'}"
            cases.append((f"linear_scan fwd ({tag})", lscan._scan_fwd_kernel, base, 4, "*fp32"))
            cases.append((f"linear_scan bwd ({tag})", lscan._scan_bwd_kernel,
                          dict(base, HAS_H0=True), 4, "*fp32"))  # fmt: skip
        cases.append((f"linear_scan carry ({'complex' if complex_ else 'real'})",
                      lscan._carry_kernel, dict(BLOCK=512, COMPLEX=complex_, HAS_H0=True,
                                                REVERSE=False, ACC=f32), 4, "*fp32"))  # fmt: skip
    flags = dict(HAS_D=True, HAS_Z=True, HAS_BIAS=True, SOFTPLUS=True, HAS_H0=True,
                 HAS_RESET=True, HAS_MASK=True)  # fmt: skip
    for d_state in (16, 4, 64):
        block_d, block_n, block_t, warps = sscan._blocks(1536, d_state, (1, 1))
        size = dict(BLOCK_D=block_d, BLOCK_N=block_n, BLOCK_T=block_t, ACC=f32)
        tag = f"N={d_state}: [{block_d}, {block_n}, {block_t}], {warps} warps"
        cases.append((f"selective_scan fwd ({tag})", sscan._ss_fwd_kernel,
                      dict(flags, STORE=True, **size), warps, "*fp32"))  # fmt: skip
        cases.append((f"selective_scan bwd ({tag})", sscan._ss_bwd_kernel,
                      dict(flags, HAS_GLAST=True, **size), warps, "*fp32"))  # fmt: skip
    block_t, block_c, warps = conv._blocks(2048, 1536)
    conv_flags = dict(K=4, HAS_BIAS=True, HAS_STATE=True, HAS_SEG=True, SILU=True,
                      BLOCK_T=block_t, BLOCK_C=block_c, ACC=f32)  # fmt: skip
    cases.append(
        (
            "causal_conv1d fwd (K=4, SiLU)",
            conv._conv_fwd_kernel,
            dict(conv_flags, STORE_PRE=True),
            warps,
            "*bf16",
        )  # fmt: skip
    )
    cases.append(
        ("causal_conv1d bwd (K=4, SiLU)", conv._conv_bwd_kernel, conv_flags, warps, "*bf16")
    )
    for scalar in (True, False):
        for head_dim in (64, 128):
            block_t, block_k, block_v, warps = gla._blocks(head_dim, head_dim, scalar)
            size = dict(BLOCK_T=block_t, BLOCK_K=block_k, BLOCK_V=block_v, ACC=f32, DOT="tf32x3")
            tag = (f"{'gate per head' if scalar else 'gate per dim'}, dk=dv={head_dim}: "
                   f"[{block_t}, {block_k}, {block_v}]")  # fmt: skip
            common = dict(SCALAR=scalar, HAS_RESET=True, **size)
            for name, fn, extra in (
                ("state", gla._gla_state_kernel, dict(HAS_H0=True)),
                ("output", gla._gla_output_kernel, {}),
                ("dstate", gla._gla_dstate_kernel, dict(HAS_H0=True, HAS_DFINAL=True)),
                ("grad", gla._gla_grad_kernel, {}),
            ):
                cases.append((f"gla {name} ({tag})", fn, dict(common, **extra), warps, "*fp32"))
    for head_dim in (64, 128):
        block_t, block_k, block_v, warps = mlstm._blocks(head_dim, head_dim)
        size = dict(BLOCK_T=block_t, BLOCK_K=block_k, BLOCK_V=block_v, ACC=f32, DOT="tf32x3")
        tag = f"dk=dv={head_dim}: [{block_t}, {block_k}, {block_v}]"
        common = dict(HAS_M0=True, HAS_RESET=True, **size)
        for name, fn, extra in (
            ("state", mlstm._mlstm_state_kernel, dict(HAS_H0=True)),
            ("output", mlstm._mlstm_output_kernel, {}),
            ("dstate", mlstm._mlstm_dstate_kernel, dict(HAS_H0=True, HAS_DFINAL=True)),
            ("grad", mlstm._mlstm_grad_kernel, {}),
        ):
            cases.append((f"mlstm {name} ({tag})", fn, dict(common, **extra), warps, "*fp32"))
    # The same kernels with every optional input off (other code paths: no resets, no state, ...),
    # in the first size of each family.
    optional = {"HAS_RESET", "HAS_H0", "HAS_MASK", "HAS_D", "HAS_Z", "HAS_BIAS", "SOFTPLUS",
                "HAS_GLAST", "HAS_DFINAL", "HAS_M0", "HAS_STATE", "HAS_SEG", "SILU", "STORE_PRE",
                "STORE"}  # fmt: skip
    first = {}
    for label, fn, constexprs, warps, pointer in cases:
        first.setdefault(fn, (label, constexprs, warps, pointer))
    for fn, (label, constexprs, warps, pointer) in first.items():
        off = {k: (False if k in optional else v) for k, v in constexprs.items()}
        cases.append((f"{label.split(' (')[0]} (options off)", fn, off, warps, pointer))
    return cases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 90 or 80")
    parser.add_argument("--only", default="", help="compile only kernels whose label contains this")
    parser.add_argument("--no-spills", action="store_true", help="fail on any spilled byte")
    args = parser.parse_args()
    target = GPUTarget("cuda", args.arch, 32)
    print(f"target sm_{args.arch}, triton {triton.__version__}")
    header = f"{'kernel':<66}{'regs':>6}{'spill B':>9}{'shared B':>10}{'compile s':>11}"
    print(header)
    print("-" * len(header))
    failed = spilled = 0
    for label, fn, constexprs, warps, pointer in _cases():
        if args.only not in label:
            continue
        start = time.perf_counter()
        try:
            src = ASTSource(
                fn=fn, signature=_signature(fn, constexprs, pointer), constexprs=constexprs
            )
            compiled = triton.compile(src, target=target, options={"num_warps": warps})
        except Exception as err:  # report every failure, then fail
            failed += 1
            print(f"{label:<66} FAILED: {type(err).__name__}: {str(err).splitlines()[0][:200]}")
            continue
        res = _resources(compiled.asm["cubin"])
        spill = res["local"] + res["stack"] if isinstance(res["local"], int) else 1
        if spill != 0:
            spilled += 1
        print(f"{label:<66}{res['registers']:>6}{spill:>9}{res['shared']:>10}"
              f"{time.perf_counter() - start:>11.1f}", flush=True)  # fmt: skip
    print(f"{failed} failed to compile" if failed else "all compiled", end=", ")
    print(f"{spilled} spill" if spilled else "no spills")
    return 1 if failed or (spilled and args.no_spills) else 0


if __name__ == "__main__":
    sys.exit(main())
