"""Banded linear filters along one axis as blocked matrix products (CPU BLAS or cuBLAS).

A filter whose output block ``b`` (``bo`` samples) reads the ``k`` consecutive inputs starting
at ``step * b`` is one small matrix ``mat`` of shape ``(bo, k)``, applied to every block with a
single (batched) matrix product. For the short filters of the PRNU pipeline (the db4 wavelet,
3..9-wide box sums) this runs several times faster than a convolution or a chain of shifted
additions, on the CPU and on CUDA alike.

Layout conventions: the filtered axis has length ``step * nb`` (``nb`` blocks). Every block
may read up to ``k - step <= step`` samples beyond its own ``step`` samples; the last block of
a row (or plane) reads into the next one, so it is *junk*. Callers allocate one spare block per
axis and never use its outputs; buffers must hold finite values everywhere (0 * NaN is NaN).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def exact_matmul(device: torch.device) -> Iterator[None]:
    """No TF32 for these products on CUDA (the filters need full float32 precision)."""
    if device.type != "cuda":
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def rows_apply(x: torch.Tensor, mat: torch.Tensor, step: int) -> torch.Tensor:
    """Filter along dim -2 of a contiguous (N, R, C) stack: (N, bo * R / step, C).

    Output rows ``bo * b .. bo * b + bo - 1`` are ``mat @ x[step * b : step * b + k]`` with
    the planes' rows taken as one sequence (the last block of each plane is junk).
    """
    n, r, c = x.shape
    bo, k = mat.shape
    assert r % step == 0 and step < k <= 2 * step and x.is_contiguous()
    blocks = n * r // step
    out = x.new_empty((blocks, bo, c))
    flat = x.view(n * r, c)
    if blocks > 1:
        view = flat.as_strided((blocks - 1, k, c), (step * c, c, 1))
        torch.matmul(mat, view, out=out[:-1])
    torch.mm(mat[:, :step], flat[-step:], out=out[-1])
    return out.view(n, bo * r // step, c)


def cols_apply(x: torch.Tensor, mat: torch.Tensor, step: int) -> torch.Tensor:
    """Filter along the last dim of a stack whose trailing (rows, C) matrices are contiguous.

    ``x`` is (T, rows, C) with any stride between the T matrices (or (rows, C)); C is a
    multiple of `step`. Output (T, rows, bo * C / step): block b of a row is
    ``mat @ row[step * b : step * b + k]`` (the last block of each row is junk).
    """
    bo, k = mat.shape
    squeeze = x.dim() == 2
    if squeeze:
        x = x.unsqueeze(0)
    t, rows, c = x.shape
    assert c % step == 0 and step < k <= 2 * step
    assert x.stride(2) == 1 and x.stride(1) == c
    m = rows * c // step
    main = x.as_strided((t, m, step), (x.stride(0), step, 1))
    out = torch.matmul(main, mat[:, :step].T)  # (t, m, bo)
    if m > 1:
        over = x.as_strided((t, m - 1, k - step), (x.stride(0), step, 1), x.storage_offset() + step)
        out[:, :-1].baddbmm_(over, mat[:, step:].T.expand(t, k - step, bo))
    out = out.view(t, rows, bo * c // step)
    return out[0] if squeeze else out


def rows_into(x: torch.Tensor, mat: torch.Tensor, step: int, out: torch.Tensor) -> None:
    """`rows_apply` of one contiguous (R, C) matrix into out (nblk, bo, C): every block valid.

    Needs R >= step * (nblk - 1) + k.
    """
    nblk, bo, c = out.shape
    k = mat.shape[1]
    assert x.shape[0] >= step * (nblk - 1) + k and x.stride() == (c, 1)
    torch.matmul(mat, x.as_strided((nblk, k, c), (step * c, c, 1)), out=out)


def cols_into(x: torch.Tensor, mat: torch.Tensor, step: int, out: torch.Tensor) -> None:
    """`cols_apply` of one contiguous (rows, C) matrix into a contiguous out (rows, bo C / step)."""
    bo, k = mat.shape
    rows, c = x.shape
    assert x.stride() == (c, 1) and out.is_contiguous()
    m = rows * c // step
    flat = out.view(m, bo)
    torch.mm(x.view(m, step), mat[:, :step].T, out=flat)
    if m > 1:
        over = x.as_strided((m - 1, k - step), (step, 1), x.storage_offset() + step)
        flat[:-1].addmm_(over, mat[:, step:].T)
