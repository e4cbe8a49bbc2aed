"""What a batch is, and the checks that a source's batches fit the dictionaries being trained.

One batch type covers every kind of dictionary:

- autoencoder: ``Batch(x_ND, None)``
- transcoder: ``Batch(x_ND, target_ND)`` (input and output site rows of the same tokens)
- crosscoder over S sites: ``Batch(x_NSD, None)``
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ..dictionaries import Dictionary, sites_spanned
from ..errors import MonosemanticError


class Batch(NamedTuple):
    """One training batch."""

    x: Tensor  # [N, D] input rows, or [N, S, D] for a crosscoder
    target: Tensor | None  # [N, D_out] output-site rows for a transcoder; None when the target is x


class Layout(NamedTuple):
    """The shape of a source's rows, known before any batch is read."""

    input_shape: tuple[int, ...]  # (D,) or (S, D) for crosscoders
    target_width: int | None  # D_out of transcoder targets; None for autoencoders
    what: str  # how errors name the rows, e.g. "store site 'blocks.6.resid_post'"

    @property
    def n_sites(self) -> int:
        """How many sites a row spans (``Dictionary.n_sites`` of the dictionaries it fits)."""
        return sites_spanned(self.input_shape)


def check_fits(name: str, dictionary: Dictionary, layout: Layout) -> None:
    """MonosemanticError when ``dictionary`` cannot train on rows shaped as ``layout`` says."""
    expected = dictionary.input_shape
    if tuple(layout.input_shape) != expected:
        got, want = _shape_words(layout.input_shape, "width"), _shape_words(expected, "d_in=")
        raise MonosemanticError(f"{layout.what} rows have {got} but dictionary {name!r} expects {want}; "
                                "build the dictionary for these sites or pick the matching sites")
    if dictionary.is_transcoder:
        if layout.target_width is None:
            raise MonosemanticError(f"dictionary {name!r} is a transcoder but {layout.what} gives no target rows; "
                                    "give the source an output site (site_out)")
        if layout.target_width != dictionary.d_out:
            raise MonosemanticError(f"{layout.what} target rows have width {layout.target_width} but dictionary "
                                    f"{name!r} expects d_out={dictionary.d_out}; pick the matching output site")
    elif layout.target_width is not None and layout.target_width != dictionary.d_out:
        raise MonosemanticError(f"{layout.what} gives target rows of width {layout.target_width} but dictionary "
                                f"{name!r} reconstructs its input (d_out={dictionary.d_out}); build a transcoder "
                                "(d_out, site_out) or drop the source's output site")


def _shape_words(shape: tuple[int, ...], width: str) -> str:
    words = f"{width}{'' if width.endswith('=') else ' '}{shape[-1]}"
    return words if len(shape) == 1 else f"{shape[0]} sites of {words}"


def check_batch(batch: Batch, layout: Layout, step: int, batch_size: int, *, first_row: int | None = None) -> None:
    """Shapes as promised and every value finite; else MonosemanticError naming step and rows."""
    rows = batch.x.shape[0]
    if tuple(batch.x.shape[1:]) != tuple(layout.input_shape) or rows != batch_size:
        raise MonosemanticError(f"{layout.what} gave a batch of shape {tuple(batch.x.shape)} at step {step}; "
                                f"expected ({batch_size}, {', '.join(map(str, layout.input_shape))}); "
                                "the source is not consistent with itself")
    first = step * batch_size if first_row is None else first_row
    for part, tensor in (("input", batch.x), ("target", batch.target)):
        # A finite sum proves every value finite (NaN or inf would propagate) in one cheap
        # pass; isfinite takes four passes over the batch. Only a non-finite sum, or an
        # overflow of huge finite values, gets the row-by-row check.
        if tensor is None or bool(torch.isfinite(tensor.sum(dtype=torch.float32))):
            continue
        finite_N = torch.isfinite(tensor.reshape(rows, -1)).all(dim=1)
        if not bool(finite_N.all()):
            bad = int((~finite_N).nonzero()[0, 0])
            raise MonosemanticError(
                f"{layout.what} {part} rows hold NaN or inf at step {step} (first at training row {first + bad}, "
                f"in rows {first}-{first + rows - 1}); training stopped, the last checkpoint is intact; "
                "clean or re-harvest the activations")
