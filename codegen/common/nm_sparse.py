"""Sparse or dense: the kernel choice for N:M sparse linears on the CPU, and the CSR form.

A sparse kernel only beats dense BLAS when the weight is sparse enough; how sparse depends on the
kernel and on how many rows (tokens) multiply the weight: with one row a GEMM is a memory-bound
matrix-vector product and CSR wins early; with a prefill's hundreds of rows BLAS runs near peak and
CSR needs a very sparse weight. The crossovers below are the backends' defaults, chosen with
`benchmarks/cpu_backends.py --sparse` (which compares both kernels on real layer shapes); a backend's
option `sparse_crossover` overrides them.

    rows <= SMALL_ROWS : CSR when density <= crossover.small_rows
    otherwise          : CSR when density <= crossover.many_rows

`example_rows(x)` reads the row count of the traced example from a node's meta (the choice is made
at compile time). `nm_to_csr` builds scipy's CSR arrays straight from the packed N:M form (every row holds the same
number of kept values, so indptr is an arithmetic sequence). Reads and writes nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse
import torch
import torch.fx

SMALL_ROWS = 8


@dataclass(frozen=True)
class Crossover:
    """Largest density (fraction of nonzero weights) at which the sparse kernel is chosen."""

    small_rows: float
    many_rows: float

    def density_limit(self, rows: int | None) -> float:
        return self.small_rows if rows is not None and rows <= SMALL_ROWS else self.many_rows


# N:M 1:16 and sparser run as CSR, everything denser dense, whatever the row count: the conservative
# choice (benchmarks/cpu_backends.py --sparse shows where the kernels cross on a given machine).
NUMPY_CROSSOVER = Crossover(small_rows=0.0625, many_rows=0.0625)
TORCH_CROSSOVER = Crossover(small_rows=0.0625, many_rows=0.0625)


@dataclass(frozen=True)
class SparseChoice:
    use_sparse: bool
    density: float
    rows: int | None
    limit: float

    def describe(self, kernel: str) -> str:
        where = f"{self.rows} rows" if self.rows is not None else "unknown rows"
        return (f"{kernel if self.use_sparse else 'dense BLAS'} (density {self.density:.3f}, "
                f"{'<=' if self.use_sparse else '>'} crossover {self.limit:.3f} at {where})")


def example_rows(x: torch.fx.Node) -> int | None:
    """Rows (tokens) of the traced example input of a linear: the product of its leading dims."""
    val = x.meta.get("val") if isinstance(x, torch.fx.Node) else None
    if not isinstance(val, torch.Tensor):
        return None
    rows = 1
    for dim in val.shape[:-1]:
        hint = dim if isinstance(dim, int) else getattr(dim.node, "hint", None)
        if hint is None:
            return None
        rows *= int(hint)
    return rows


def choose(density: float, rows: int | None, crossover: Crossover) -> SparseChoice:
    limit = crossover.density_limit(rows)
    return SparseChoice(density <= limit, density, rows, limit)


def nm_column_indices(indices: np.ndarray, n: int, m: int) -> np.ndarray:
    """Column of each kept value: group g's in-group index i sits at g*m + i; [N, K*n/m] int64."""
    rows, kept = indices.shape
    groups = np.arange(kept, dtype=np.int64) // n
    return groups[None, :] * m + indices.astype(np.int64)


def densify_nm(values: np.ndarray, indices: np.ndarray, n: int, m: int) -> np.ndarray:
    """The dense [N, K] weight of a packed N:M weight (numpy twin of fxc.ir.ops.densify_nm)."""
    rows, kept = values.shape
    dense = np.zeros((rows, kept // n * m), dtype=values.dtype)
    np.put_along_axis(dense, nm_column_indices(indices, n, m), values, axis=1)
    return dense


def nm_to_csr(values: np.ndarray, indices: np.ndarray, n: int, m: int) -> scipy.sparse.csr_array:
    rows, kept = values.shape
    columns = kept // n * m
    indptr = np.arange(0, rows * kept + 1, kept, dtype=np.int64)
    return scipy.sparse.csr_array(
        (values.reshape(-1), nm_column_indices(indices, n, m).reshape(-1), indptr), shape=(rows, columns)
    )
