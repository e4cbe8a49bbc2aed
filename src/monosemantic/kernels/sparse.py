"""Products over the active (row, latent) entries of sparse codes, for sparse training steps.

Once codes are sparse, the decoder and every backward product except the encoder's forward
only involve the entries where a latent fired. An :class:`ActiveSet` lists those entries
twice: row-major (CSR offsets, for sums per row: decoding) and latent-major (a permutation
that sorts entries by latent, for sums per latent: weight gradients). Sums run as
``embedding_bag`` reductions and dot products at the entries as ``sampled_addmm``, so no
``[entries, width]`` intermediate is ever materialised.

Shapes: N rows, F latents, E active entries, W any width.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from . import scratch


@contextmanager
def _quiet():
    # torch warns once per process that sparse CSR support is "beta"; the few CSR operations
    # used here are covered by this package's tests, so the warning would only be noise.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        yield


class ActiveSet(NamedTuple):
    """The active entries of an ``[N, F]`` code matrix, in row-major order."""

    n_latents: int
    row_offsets: Tensor  # [N + 1] int64: entries of row n are row_offsets[n]:row_offsets[n + 1]
    rows: Tensor  # [E] int64 row of each entry
    cols: Tensor  # [E] int64 latent of each entry
    by_latent: Tensor  # [E] int64 entry order sorted by latent (stable)
    latent_offsets: Tensor  # [F + 1] int64: offsets of each latent's entries in by_latent order
    rows_by_latent: Tensor  # [E] int64 rows[by_latent], kept because every latent sum needs it

    @property
    def n_rows(self) -> int:
        return self.row_offsets.numel() - 1


def _with_latent_order(n_latents: int, row_offsets: Tensor, rows_E: Tensor, cols_E: Tensor) -> ActiveSet:
    # Stable, so that entries of one latent stay in row order and sums are reproducible. The
    # narrowest integer type that holds the latents sorts fastest (int16: ~3x faster than int64).
    keys_E = cols_E.to(torch.int16 if n_latents <= 2**15 else torch.int32 if n_latents <= 2**31 else torch.int64)
    by_latent_E = torch.sort(keys_E, stable=True).indices
    counts_F = torch.bincount(cols_E, minlength=n_latents)
    latent_offsets = torch.zeros(n_latents + 1, dtype=torch.int64, device=cols_E.device)
    torch.cumsum(counts_F, 0, out=latent_offsets[1:])
    return ActiveSet(n_latents, row_offsets, rows_E, cols_E, by_latent_E, latent_offsets, rows_E[by_latent_E])


def from_indices(indices_NK: Tensor, n_latents: int) -> ActiveSet:
    """The entries of ``K`` latents per row (top-k selections); entry ``n*K + j`` is ``indices[n, j]``."""
    n, k = indices_NK.shape
    device = indices_NK.device
    row_offsets = torch.arange(0, n * k + 1, k, dtype=torch.int64, device=device)
    rows_E = torch.arange(n, device=device).repeat_interleave(k)
    return _with_latent_order(n_latents, row_offsets, rows_E, indices_NK.reshape(-1).long())


def from_flat(flat_E: Tensor, n_rows: int, n_latents: int) -> ActiveSet:
    """The entries at positions ``flat`` (ascending) of a row-major ``[N, F]`` code matrix."""
    rows_E, cols_E = flat_E // n_latents, flat_E % n_latents
    row_offsets = torch.zeros(n_rows + 1, dtype=torch.int64, device=flat_E.device)
    torch.cumsum(torch.bincount(rows_E, minlength=n_rows), 0, out=row_offsets[1:])
    return _with_latent_order(n_latents, row_offsets, rows_E, cols_E)


def from_dense(codes_NF: Tensor) -> tuple[ActiveSet, Tensor]:
    """The nonzero entries of dense codes, and their values ``[E]`` (row-major)."""
    flat = codes_NF.reshape(-1)
    # One nonzero over the flat codes (to_sparse_csr makes several passes): row-major already.
    where_E = flat.nonzero().squeeze(1)
    return from_flat(where_E, *codes_NF.shape), flat.index_select(0, where_E)


def flat_positions(active: ActiveSet) -> Tensor:
    """``[E]``: each entry's position in the row-major ``[N, F]`` matrix (the inverse of :func:`from_flat`)."""
    return active.rows * active.n_latents + active.cols


def row_sums(active: ActiveSet, values_E: Tensor, table_FW: Tensor) -> Tensor:
    """``[N, W]``: row n sums ``values[e] * table[cols[e]]`` over its entries (``codes @ table``)."""
    return _bag_sums(active.cols, table_FW, active.row_offsets, values_E, active.n_rows)


def latent_sums(active: ActiveSet, values_E: Tensor, table_NW: Tensor) -> Tensor:
    """``[F, W]``: latent f sums ``values[e] * table[rows[e]]`` over its entries (``codes.T @ table``)."""
    return _bag_sums(active.rows_by_latent, table_NW, active.latent_offsets, values_E[active.by_latent],
                     active.n_latents)


def _bag_sums(indices_E: Tensor, table_TW: Tensor, offsets: Tensor, weights_E: Tensor, n_bags: int) -> Tensor:
    """``[n_bags, W]``: bag b sums ``weights[e] * table[indices[e]]`` over ``offsets[b]:offsets[b + 1]``.

    A bag reads its rows from all over the table, so on CPU a table bigger than a core's cache
    is summed in column slices that fit: ~2x faster for a [4096, 576] or [4608, 576] table on
    2 cores, the copies into and out of slices included. Each output value sums the same terms
    in the same order either way.
    """
    n, width = table_TW.shape
    slices = _cache_slices(table_TW)
    if slices == 1:
        return _embedding_sums(indices_E, table_TW, offsets, weights_E)
    w = width // slices
    parts_STw = scratch.empty((slices, n, w), table_TW.dtype)
    parts_STw.copy_(table_TW.unflatten(1, (slices, w)).transpose(0, 1))
    out_BW = scratch.empty((n_bags, width), table_TW.dtype)
    for i, part_Tw in enumerate(parts_STw):
        out_BW[:, i * w:(i + 1) * w] = _embedding_sums(indices_E, part_Tw, offsets, weights_E)
    return out_BW


# A core's share of cache the table slices of _bag_sums should fit in (L2 of current x86 cores).
_SLICE_BYTES = 1 << 20


def _cache_slices(table_TW: Tensor) -> int:
    """How many equal column slices to sum ``table`` in: 1 off CPU or when it fits already."""
    width = table_TW.shape[1]
    if table_TW.device.type != "cpu" or table_TW.nbytes <= _SLICE_BYTES:
        return 1
    wanted = -(-table_TW.nbytes // _SLICE_BYTES)
    # The smallest divisor of the width at or above the wanted count, keeping slices >= 16 wide.
    return next((s for s in range(wanted, width // 16 + 1) if width % s == 0), 1)


def _embedding_sums(indices_E: Tensor, table: Tensor, offsets: Tensor, weights_E: Tensor) -> Tensor:
    return F.embedding_bag(indices_E, table.contiguous(), offsets, per_sample_weights=weights_E, mode="sum",
                           include_last_offset=True)


def latent_totals(active: ActiveSet, values_E: Tensor) -> Tensor:
    """``[F]``: the sum of each latent's values (``codes.sum(0)``)."""
    totals_F = values_E.new_zeros(active.n_latents)
    return totals_F.index_add_(0, active.cols, values_E)


def sampled_dots(active: ActiveSet, a_NW: Tensor, b_FW: Tensor) -> Tensor:
    """``[E]``: ``a[rows[e]] . b[cols[e]]``, i.e. ``a @ b.T`` read at the active entries only."""
    with _quiet():
        pattern = torch.sparse_csr_tensor(active.row_offsets, active.cols, a_NW.new_zeros(active.cols.numel()),
                                          (active.n_rows, active.n_latents), check_invariants=False)
        return torch.sparse.sampled_addmm(pattern, a_NW, b_FW.T, beta=0.0).values()
