"""Numerical comparison helpers shared by every test in the suite.

Tolerances are defined once per dtype here; a test that needs another tolerance says why.
"""

from __future__ import annotations

import torch

__all__ = ["TOLERANCES", "tolerance", "assert_close", "outputs_and_grads"]

# (rtol, atol) per dtype: fp32 paths that reorder sums (chunked scans, FFT convolutions) stay
# within ~1e-5 relative of the step-by-step reference; half precision within a few ulps of 1e-3.
TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-7, 1e-9),
    torch.float32: (1e-4, 1e-5),
    torch.complex64: (1e-4, 1e-5),
    torch.complex128: (1e-7, 1e-9),
    torch.float16: (1e-2, 1e-3),
    torch.bfloat16: (5e-2, 1e-2),
}


def tolerance(dtype: torch.dtype) -> tuple[float, float]:
    """(rtol, atol) for comparing tensors of ``dtype``."""
    if dtype not in TOLERANCES:
        raise KeyError(f"no tolerance defined for {dtype}; add one to mixerzoo.core.testing")
    return TOLERANCES[dtype]


def assert_close(
    actual: torch.Tensor,
    expected: torch.Tensor,
    *,
    dtype: torch.dtype | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    msg: str = "",
) -> None:
    """Assert two tensors agree within the tolerance of ``dtype`` (default: ``actual.dtype``).

    The lower of the two precisions is used when the dtypes differ, so a bf16 kernel can be
    compared with an fp32 reference directly.
    """
    if dtype is None:
        a, e = tolerance(actual.dtype), tolerance(expected.dtype)
        dtype_tol = a if a[0] >= e[0] else e
    else:
        dtype_tol = tolerance(dtype)
    rtol = dtype_tol[0] if rtol is None else rtol
    atol = dtype_tol[1] if atol is None else atol
    if actual.shape != expected.shape:
        raise AssertionError(
            f"{msg} shape mismatch: {tuple(actual.shape)} vs {tuple(expected.shape)}"
        )
    common = torch.promote_types(actual.dtype, expected.dtype)
    torch.testing.assert_close(
        actual.to(common), expected.to(common), rtol=rtol, atol=atol, msg=lambda m: f"{msg}\n{m}"
    )


def _fresh_leaves(x):
    if x is None:
        return None
    if isinstance(x, (tuple, list)):
        return tuple(_fresh_leaves(item) for item in x)
    return x.detach().clone().requires_grad_()


def _flatten(x) -> list:
    if isinstance(x, (tuple, list)):
        return [leaf for item in x for leaf in _flatten(item)]
    return [x]


def outputs_and_grads(fn, inputs, weights):
    """Run ``fn(*inputs)`` on fresh leaf copies and backpropagate ``sum_i <output_i, weight_i>``.

    Used to compare the gradients of two implementations of an op with random output weights.

    Args:
        fn: the op; it may return a tensor or (nested) tuples of tensors.
        inputs: tensors, ``None`` (passed through) or tuples of tensors (e.g. a state).
        weights: one tensor per output tensor, in flattened order.

    Returns:
        (detached outputs, flattened; gradient of every flattened input, ``None`` for ``None``).
    """
    leaves = [_fresh_leaves(x) for x in inputs]
    outputs = _flatten(fn(*leaves))
    if len(outputs) != len(weights):
        raise ValueError(f"{len(outputs)} outputs but {len(weights)} weights")
    sum((out * w).sum() for out, w in zip(outputs, weights)).backward()
    grads = [None if leaf is None else leaf.grad for leaf in _flatten(leaves)]
    return [out.detach() for out in outputs], grads
