"""selective_scan's fused Triton kernels (on the GPU, or interpreted on the CPU: tests/conftest.py)
against the step-by-step reference: outputs, last states and the gradients of every input (u,
delta, A, B, C, D, z, delta_bias, h0), with every option on and off, shared and grouped B/C,
several chunks and channel blocks, resets at t = 0 and at the end, padding, non-contiguous and
half-precision inputs; bad input refused before any launch; real sizes on a GPU."""

from __future__ import annotations

import pytest
import torch

from mixerzoo.core.ops.selective_scan.chunk import selective_scan_chunk
from mixerzoo.core.ops.selective_scan.naive import selective_scan_naive
from mixerzoo.core.ops.selective_scan.triton import selective_scan_triton
from mixerzoo.core.testing import assert_close

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
NAMES = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias", "h0"]


def _inputs(batch, channels, d_state, length, groups=(0, 0), dtype=torch.float64, seed=0):
    """Mamba-like inputs; ``groups`` for (B, C): 0 = shared ``[B, N, L]``, g = ``[B, g, N, L]``."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0, shift=0.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale + shift).to(dtype)

    def proj(n_groups):
        shape = (batch, d_state, length) if n_groups == 0 else (batch, n_groups, d_state, length)
        return rnd(*shape)

    return {
        "u": rnd(batch, channels, length),
        "delta": rnd(batch, channels, length, shift=-1.0),
        "A": -(torch.rand(channels, d_state, generator=g, dtype=torch.float64) + 0.5).to(dtype),
        "B": proj(groups[0]),
        "C": proj(groups[1]),
        "D": rnd(channels),
        "z": rnd(batch, channels, length),
        "delta_bias": rnd(channels, scale=0.3),
        "h0": rnd(batch, channels, d_state),
    }


def _flags(batch, length):
    """Resets at t = 0 (row 0), at the last step and in the middle (last row); padding at the
    end of row 0 and one padded step inside the last row."""
    reset = torch.zeros(batch, length, dtype=torch.bool)
    reset[0, 0] = True
    reset[-1, -1] = True
    reset[-1, length // 2] = True
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[0, -min(3, length - 1) :] = False
    mask[-1, length // 3] = False
    return reset, mask


def _run(fn, inputs, options, device, weights, **kw):
    leaves = {k: v.to(device).requires_grad_() for k, v in inputs.items() if v is not None}
    flags = {k: options[k].to(device) for k in ("reset", "mask") if options.get(k) is not None}
    out, last = fn(
        **leaves, delta_softplus=options["softplus"], return_last_state=True, **flags, **kw
    )
    loss = (out * weights[0].to(device)).sum() + (last * weights[1].to(device)).sum()
    grads = torch.autograd.grad(loss, list(leaves.values()))
    named = dict(zip(leaves, grads))
    return [out.detach().cpu(), last.detach().cpu()] + [
        named[k].cpu() if k in named else None for k in NAMES
    ]


def _compare(got, want, tag, dtype=None):
    for label, x, y in zip(["out", "last_state"] + [f"grad {n}" for n in NAMES], got, want):
        if y is None:
            assert x is None, label
            continue
        assert x.dtype == y.dtype or dtype is not None, label
        assert_close(x.float() if dtype else x, y.float() if dtype else y, dtype=dtype,
                     msg=f"{label} ({tag})")  # fmt: skip


# (B, D, N, L, (groups of B, of C)): one step; odd everything with several chunks and channel
# blocks; grouped B and C (three channels per group, with a block size that divides it); B
# grouped and C shared; batch 1 with N = 1.
CASES = [
    (1, 1, 1, 1, (0, 0)),
    (2, 5, 3, 19, (0, 0)),
    (2, 6, 5, 11, (3, 3)),
    (1, 4, 2, 9, (2, 0)),
    (1, 3, 1, 17, (0, 0)),
]


@pytest.mark.parametrize("batch,channels,d_state,length,groups", CASES)
@pytest.mark.parametrize("all_options", [True, False])
def test_triton_equals_naive_with_gradients(batch, channels, d_state, length, groups,
                                            all_options):  # fmt: skip
    inputs = _inputs(batch, channels, d_state, length, groups, seed=length + channels)
    reset, mask = _flags(batch, length)
    if all_options:
        options = {"softplus": True, "reset": reset, "mask": mask}
    else:
        options = {"softplus": False}
        for name in ("D", "z", "delta_bias", "h0"):
            inputs[name] = None
        inputs["delta"] = inputs["delta"].abs()  # positive steps without the softplus
    g = torch.Generator().manual_seed(1)
    weights = [
        torch.randn(batch, channels, length, generator=g, dtype=torch.float64),
        torch.randn(batch, channels, d_state, generator=g, dtype=torch.float64),
    ]
    got = _run(selective_scan_triton, inputs, options, DEVICE, weights)
    want = _run(selective_scan_naive, inputs, options, torch.device("cpu"), weights)
    _compare(got, want, f"options {all_options}")


def test_several_channel_blocks_and_chunks_forced():
    """Block sizes forced to 1 channel x 4 steps: the carry over five chunks and four blocks."""
    inputs = _inputs(2, 4, 3, 18, seed=9)
    reset, mask = _flags(2, 18)
    options = {"softplus": True, "reset": reset, "mask": mask}
    weights = [
        torch.randn(2, 4, 18, dtype=torch.float64),
        torch.randn(2, 4, 3, dtype=torch.float64),
    ]
    got = _run(selective_scan_triton, inputs, options, DEVICE, weights, blocks=(1, 4, 4, 1))
    want = _run(selective_scan_naive, inputs, options, torch.device("cpu"), weights)
    _compare(got, want, "blocks (1, 4, 4, 1)")


def test_non_contiguous_inputs_and_no_grad():
    """Views as a Mamba block makes them (delta and z transposed from [B, L, D], B and C strided)
    and the no-gradient path (no states stored) give the reference's values."""
    inputs = _inputs(2, 5, 4, 13, seed=4)
    views = dict(inputs)
    for name in ("delta", "z"):
        views[name] = inputs[name].transpose(1, 2).contiguous().transpose(1, 2)
    views["B"] = torch.stack([inputs["B"], inputs["B"] + 1], dim=2).flatten(1, 2)[:, ::2]
    assert not views["delta"].is_contiguous() and not views["B"].is_contiguous()
    reset, mask = _flags(2, 13)
    kw = dict(delta_softplus=True, return_last_state=True, reset=reset, mask=mask)
    with torch.no_grad():
        out, last = selective_scan_triton(
            **{k: v.to(DEVICE) for k, v in views.items()},
            **{k: (v.to(DEVICE) if isinstance(v, torch.Tensor) else v) for k, v in kw.items()},
        )
    want, want_last = selective_scan_naive(**inputs, **kw)
    assert_close(out.cpu(), want)
    assert_close(last.cpu(), want_last)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_lower_precision_inputs(dtype):
    """float32 arithmetic inside; out and every gradient keep their input's dtype and agree with
    the float32 reference on the same (rounded) inputs within that dtype's tolerance."""
    inputs = _inputs(2, 4, 3, 10, dtype=dtype, seed=5)
    reset, mask = _flags(2, 10)
    options = {"softplus": True, "reset": reset, "mask": mask}
    weights = [torch.randn(2, 4, 10), torch.randn(2, 4, 3)]
    got = _run(selective_scan_triton, inputs, options, DEVICE, weights)
    for x, name in zip(got[2:], NAMES):
        assert x.dtype == dtype, name
    assert got[0].dtype == dtype and got[1].dtype == torch.float32
    rounded = {k: v.float() for k, v in inputs.items()}
    want = _run(selective_scan_naive, rounded, options, torch.device("cpu"), weights)
    _compare(got, want, str(dtype), dtype=dtype)


@pytest.mark.parametrize(
    "change,error,match",
    [
        (lambda x: x.update(u=x["u"].long()), TypeError, "u must be a float16"),
        (lambda x: x.update(A=x["A"].to(torch.complex64)), TypeError, "A must be a float16"),
        (lambda x: x.update(delta=x["delta"][:, :, :-1]), ValueError, "delta must have shape"),
        (lambda x: x.update(A=x["A"][:-1]), ValueError, "A must be"),
        (lambda x: x.update(B=x["B"][:, :, :-1]), ValueError, "B must be"),
        (lambda x: x.update(C=x["C"][:, None].expand(-1, 4, -1, -1)), ValueError, "G dividing"),
        (lambda x: x.update(h0=x["h0"][..., :1]), ValueError, "h0 must have shape"),
        (lambda x: x.update(D=x["D"][:2]), ValueError, "D must have shape"),
    ],
)
def test_bad_input_is_refused_before_launch(change, error, match):
    inputs = _inputs(2, 6, 3, 5, dtype=torch.float32)
    change(inputs)
    with pytest.raises(error, match=match):
        selective_scan_triton(**{k: v.to(DEVICE) for k, v in inputs.items()})


def test_bad_flags_and_blocks_are_refused():
    inputs = {k: v.to(DEVICE) for k, v in _inputs(2, 6, 3, 5, groups=(3, 0)).items()}
    reset, _ = _flags(2, 5)
    with pytest.raises(ValueError, match="reset must be a bool"):
        selective_scan_triton(**inputs, reset=reset.int().to(DEVICE))
    with pytest.raises(ValueError, match="mask must be a bool"):
        selective_scan_triton(**inputs, mask=reset[:, 1:].to(DEVICE))
    with pytest.raises(ValueError, match="do not fit"):  # 4 channels straddle two groups of 2
        selective_scan_triton(**inputs, blocks=(4, 4, 8, 1))
    with pytest.raises(ValueError, match="powers of two"):
        selective_scan_triton(**inputs, blocks=(1, 4, 6, 1))


def test_on_cpu_without_interpreter_says_what_to_do(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    inputs = _inputs(1, 2, 2, 3, dtype=torch.float32)
    with pytest.raises(RuntimeError, match="needs CUDA tensors.*backend='chunk'"):
        selective_scan_triton(**inputs)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize(
    "batch,channels,d_state,length,groups,reference",
    [
        (2, 256, 16, 1024, (0, 0), "naive"),  # every option, against the loop
        (8, 1536, 16, 2048, (0, 0), "chunk"),  # the Mamba size, against the chunk path
        (2, 512, 16, 1000, (4, 4), "chunk"),  # grouped B / C, L not a multiple of the block
    ],
)
def test_real_sizes_on_gpu(batch, channels, d_state, length, groups, reference):
    inputs = _inputs(batch, channels, d_state, length, groups, dtype=torch.float32, seed=3)
    inputs["delta"] = inputs["delta"] - 3.0  # Mamba's step range after the softplus
    inputs["A"] = -torch.arange(1, d_state + 1, dtype=torch.float32).repeat(channels, 1)
    reset, mask = _flags(batch, length)
    options = {"softplus": True, "reset": reset, "mask": mask}
    weights = [torch.randn(batch, channels, length), torch.randn(batch, channels, d_state)]
    ref = selective_scan_naive if reference == "naive" else selective_scan_chunk
    got = _run(selective_scan_triton, inputs, options, DEVICE, weights)
    want = _run(ref, inputs, options, DEVICE, weights)
    for label, x, y in zip(["out", "last_state"] + [f"grad {n}" for n in NAMES], got, want):
        assert_close(x, y, rtol=1e-3, atol=1e-3, msg=label)
