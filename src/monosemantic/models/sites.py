"""One naming scheme for activation sites across model families.

A *site* is a place in the forward pass whose activations we read or overwrite. Block sites are
named ``blocks.{L}.{kind}``:

=============  ===============================================================
``resid_pre``  the residual stream entering block L (block 0: the embeddings)
``resid_post`` the residual stream leaving block L
``attn_out``   what the attention sub-layer adds to the residual stream
``mlp_in``     the input of the MLP (after its pre-norm)
``mlp_out``    what the MLP sub-layer adds to the residual stream
``mlp_hidden`` the MLP's hidden activations (the neurons): input of its down projection
=============  ===============================================================

Any module path of the underlying ``torch`` model is a site too (its output), or its input with
the suffix ``:input`` (``model.layers.3.mlp.down_proj:input``).

The layout of a family is discovered from the module tree rather than listed per
architecture: the blocks are the ``ModuleList`` with one entry per layer, and the sub-layers
are found by the names the Hugging Face implementations use. Families whose sub-layer output
passes through its own norm before joining the residual (Gemma 2/3, OLMo 2) are recognised by
their ``post_feedforward_layernorm``, and their ``attn_out``/``mlp_out`` are taken after it.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Literal

from torch import nn

from ..errors import MonosemanticError

BLOCK_SITE_KINDS = ("resid_pre", "resid_post", "attn_out", "mlp_in", "mlp_out", "mlp_hidden")
_BLOCK_SITE = re.compile(r"^blocks\.(-?\d+)\.(\w+)$")

_ATTN_NAMES = ("self_attn", "attn", "attention", "self_attention")
_MLP_NAMES = ("mlp", "feed_forward", "ffn")
_DOWN_NAMES = ("down_proj", "c_proj", "dense_4h_to_h", "fc2", "w2", "fc_out")
Point = Literal["input", "output"]


@dataclass(frozen=True)
class Site:
    """Where to read an activation: the ``point`` ("input" or "output") of the module at ``module``."""

    name: str
    module: str
    point: Point
    layer: int | None = None


@dataclass(frozen=True)
class BlockLayout:
    """Module paths of one family, relative to the model root (blocks) or to a block."""

    blocks: str
    n_layers: int
    attn_out: str | None
    mlp: str | None
    mlp_out: str | None
    mlp_down: str | None


def _child(module: nn.Module, names: tuple[str, ...]) -> str | None:
    children = dict(module.named_children())
    return next((n for n in names if n in children), None)


def discover_layout(model: nn.Module, n_layers: int) -> BlockLayout:
    """Find the blocks and their sub-layers in ``model`` (any Hugging Face causal LM)."""
    blocks = next(
        (name for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) == n_layers),
        None,
    )
    if blocks is None:
        raise MonosemanticError(
            f"could not find the {n_layers} transformer blocks in {type(model).__name__}; "
            "use raw module paths as sites (see `monosemantic sites MODEL --modules`)"
        )
    block = model.get_submodule(f"{blocks}.0")
    attn, mlp = _child(block, _ATTN_NAMES), _child(block, _MLP_NAMES)
    down = _child(block.get_submodule(mlp), _DOWN_NAMES) if mlp else None
    post_norms = _child(block, ("post_feedforward_layernorm",)) is not None
    return BlockLayout(
        blocks=blocks,
        n_layers=n_layers,
        attn_out="post_attention_layernorm" if post_norms else attn,
        mlp=mlp,
        mlp_out="post_feedforward_layernorm" if post_norms else mlp,
        mlp_down=f"{mlp}.{down}" if down else None,
    )


class SiteIndex:
    """Resolves site names of one model to :class:`Site` objects, with helpful errors."""

    def __init__(self, model: nn.Module, n_layers: int, model_name: str = "the model"):
        self.model = model
        self.model_name = model_name
        self.layout = discover_layout(model, n_layers)

    def _block_kinds(self) -> list[str]:
        lay = self.layout
        present = {"resid_pre": True, "resid_post": True, "attn_out": lay.attn_out, "mlp_in": lay.mlp,
                   "mlp_out": lay.mlp_out, "mlp_hidden": lay.mlp_down}
        return [k for k in BLOCK_SITE_KINDS if present[k]]

    def names(self) -> list[str]:
        """Every block site of the model, layer by layer."""
        return [f"blocks.{layer}.{kind}" for layer in range(self.layout.n_layers) for kind in self._block_kinds()]

    def summary(self) -> str:
        return f"blocks.{{0..{self.layout.n_layers - 1}}}.{{{','.join(self._block_kinds())}}}"

    def resolve(self, name: str) -> Site:
        match = _BLOCK_SITE.match(name)
        if match:
            return self._block_site(name, int(match.group(1)), match.group(2))
        module, _, point = name.partition(":")
        if point not in ("", "input", "output"):
            raise MonosemanticError(f"site '{name}': the suffix after ':' must be 'input' or 'output'")
        modules = dict(self.model.named_modules())
        if module in modules and module:
            return Site(name, module, "input" if point == "input" else "output", _layer_of(module, self.layout))
        close = difflib.get_close_matches(name, self.names() + list(modules), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise MonosemanticError(
            f"unknown site '{name}' for {self.model_name}: expected {self.summary()} or a module path "
            f"such as {self.layout.blocks}.0.{self.layout.mlp or '...'}{hint} "
            "(`monosemantic sites MODEL` lists them)"
        )

    def _block_site(self, name: str, layer: int, kind: str) -> Site:
        lay = self.layout
        if kind not in BLOCK_SITE_KINDS:
            raise MonosemanticError(
                f"unknown site kind '{kind}' in '{name}': expected one of {', '.join(BLOCK_SITE_KINDS)}"
            )
        if not 0 <= layer < lay.n_layers:
            raise MonosemanticError(
                f"layer {layer} in site '{name}' is out of range: {self.model_name} has layers 0-{lay.n_layers - 1}"
            )
        if kind not in self._block_kinds():
            raise MonosemanticError(f"site kind '{kind}' is not available for {self.model_name}: no matching module "
                                    "found")
        block = f"{lay.blocks}.{layer}"
        where: dict[str, tuple[str, Point]] = {
            "resid_pre": (block, "input"),
            "resid_post": (block, "output"),
            "attn_out": (f"{block}.{lay.attn_out}", "output"),
            "mlp_in": (f"{block}.{lay.mlp}", "input"),
            "mlp_out": (f"{block}.{lay.mlp_out}", "output"),
            "mlp_hidden": (f"{block}.{lay.mlp_down}", "input"),
        }
        module, point = where[kind]
        return Site(name, module, point, layer)


def _layer_of(module: str, layout: BlockLayout) -> int | None:
    prefix = layout.blocks + "."
    if module.startswith(prefix):
        return int(module[len(prefix):].split(".")[0])
    return None
