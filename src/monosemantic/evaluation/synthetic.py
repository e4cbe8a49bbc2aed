"""Ground truth with realistic structure: hierarchical, correlated, Zipf-frequency synthetic features.

After SynthSAEBench (Chanin & Garriga-Alonso 2026, arXiv 2602.14687): rows are sparse
non-negative combinations of ``G`` random unit directions in ``D`` dimensions (superposition
when ``G > D``), where

- firing frequencies follow a Zipf law over features (``p_rank ∝ rank^-zipf_exponent``, scaled
  so that a row has ``mean_active`` active features on average);
- firing is correlated through a Gaussian copula whose covariance is low rank plus diagonal:
  feature ``g`` draws ``z_g = sqrt(s) l_g.u + sqrt(1 - s|l_g|^2) e_g`` with ``u ~ N(0, I_R)``
  shared by the row, and fires when ``z_g < Phi^-1(q_g)``;
- features form trees (``n_parents`` roots, ``children_per_parent`` children per node, ``depth``
  levels below each root): a child fires only where its parent fires. A child's own threshold
  uses ``q = p_child / p_parent`` and its loading is made orthogonal to its ancestors', so its
  ``z`` is independent of whether the parent fired and its marginal frequency is exactly
  ``p_child``. Parents take the more frequent Zipf ranks of their tree, so ``q <= 1``.

``make_synthetic(config)`` builds a :class:`SyntheticModel`; ``model.sample(n, seed)`` gives
``(acts_ND, codes_NG)`` and ``model.batches`` streams the same rows in bounded memory;
:class:`SyntheticSource` feeds fresh rows to a ``Trainer``. :func:`score_dictionary` scores a
learned dictionary against the truth (:class:`GroundTruthScores`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from ..dictionaries import Dictionary
from ..errors import MonosemanticError
from ..training.layout import Batch, Layout
from .compare import decoder_directions
from .results import Result, ratio

__all__ = ["GroundTruthScores", "SyntheticConfig", "SyntheticModel", "SyntheticSource", "make_synthetic",
           "match_features", "mcc", "score_dictionary"]

MAGNITUDES = ("folded_normal", "exponential")
BLOCK_ROWS = 4096  # rows per independently seeded block: sample(n) is the same whatever the batch size
_SAMPLE, _TRAIN = 1, 2  # stream tags, so that training and held-out rows never coincide


# ----- configuration ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticConfig(Result):
    """A synthetic ground-truth model; every field is checked on construction."""

    n_features: int = 256  # G true features
    d_model: int = 64  # D activation width
    n_parents: int = 16  # roots of feature trees (0: no hierarchy)
    children_per_parent: int = 3  # children of every non-leaf tree node
    depth: int = 1  # levels of children below each root
    zipf_exponent: float = 1.0  # firing probability of the r-th most frequent feature ∝ r^-exponent
    mean_active: float = 4.0  # expected active features per row (target L0)
    correlation_rank: int = 4  # R shared Gaussian factors (0: independent firing)
    correlation_strength: float = 0.5  # s in [0, 1): latent correlation is s * cos(l_g, l_h)
    magnitude: str = "folded_normal"  # |1 + magnitude_std * N(0, 1)|, or exponential with mean 1
    magnitude_std: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        _integer("n_features", self.n_features, 1)
        _integer("d_model", self.d_model, 1)
        _integer("n_parents", self.n_parents, 0)
        _integer("children_per_parent", self.children_per_parent, 1)
        _integer("depth", self.depth, 1)
        _integer("correlation_rank", self.correlation_rank, 0)
        _integer("seed", self.seed, 0)
        _number("zipf_exponent", self.zipf_exponent, 0.0)
        _number("mean_active", self.mean_active, 0.0, low_open=True)
        _number("correlation_strength", self.correlation_strength, 0.0, high=1.0)
        _number("magnitude_std", self.magnitude_std, 0.0)
        if self.magnitude not in MAGNITUDES:
            raise MonosemanticError(f"synthetic magnitude={self.magnitude!r} is unknown; expected one of "
                                    f"{', '.join(MAGNITUDES)}")
        if self.n_tree_features > self.n_features:
            raise MonosemanticError(
                f"synthetic trees need {self.n_tree_features} features ({self.n_parents} roots x "
                f"{self.children_per_parent} children x depth {self.depth}) but n_features={self.n_features}; "
                f"expected n_features >= {self.n_tree_features}: lower n_parents, children_per_parent or depth, "
                "or raise n_features")
        top = float(zipf_probabilities(self)[0])
        if top > 1.0:
            raise MonosemanticError(
                f"synthetic mean_active={self.mean_active} makes the most frequent feature fire with "
                f"probability {top:.2f} at zipf_exponent={self.zipf_exponent}; expected at most 1: lower "
                "mean_active or zipf_exponent, or raise n_features")

    @property
    def n_tree_features(self) -> int:
        """Features inside trees (roots included); the rest are independent roots."""
        per_tree = sum(self.children_per_parent ** level for level in range(self.depth + 1))
        return self.n_parents * per_tree


def zipf_probabilities(config: SyntheticConfig) -> np.ndarray:
    """Firing probability by frequency rank ``[G]``, decreasing, summing to ``mean_active``."""
    weights_G = np.arange(1, config.n_features + 1, dtype=np.float64) ** -float(config.zipf_exponent)
    return weights_G * (config.mean_active / weights_G.sum())


def _integer(name: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise MonosemanticError(f"synthetic {name}={value!r} is invalid; expected an integer >= {low}")


def _number(name: str, value, low: float, *, high: float | None = None, low_open: bool = False) -> None:
    ok = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and (high is None or value < high)
    if not ok:
        bounds = f"{'>' if low_open else '>='} {low}" + ("" if high is None else f" and < {high}")
        raise MonosemanticError(f"synthetic {name}={value!r} is invalid; expected a number {bounds}")


# ----- the model ----------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SyntheticModel:
    """True features and how they fire; build with :func:`make_synthetic`."""

    config: SyntheticConfig
    features_GD: Tensor  # float32 unit rows: the true directions
    parent_G: Tensor  # int64 parent feature, -1 for roots
    probs_G: Tensor  # float64 marginal firing probability
    conditional_G: Tensor  # float64 firing probability given the parent fired (probs_G for roots)
    loadings_GR: Tensor  # float32 rows of norm 1 (or 0): each feature's share of the R factors

    @property
    def n_features(self) -> int:
        return self.features_GD.shape[0]

    @property
    def d_model(self) -> int:
        return self.features_GD.shape[1]

    def sample(self, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
        """``n`` rows: (activations ``[n, D]``, true coefficients ``[n, G]``), both float32."""
        _integer("sample rows", n, 1)
        parts = list(self.batches(n, BLOCK_ROWS, seed))
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def batches(self, n_rows: int, batch_size: int, seed: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """The rows of ``sample(n_rows, seed)`` as ``(acts, codes)`` batches of ``batch_size``.

        The last batch may be short.
        """
        _integer("batches n_rows", n_rows, 1)
        _integer("batch_size", batch_size, 1)
        _integer("sample seed", seed, 0)
        pending, held, block = [], 0, 0
        while n_rows > 0:
            while held < min(batch_size, n_rows):
                # Whole blocks, each from its own seed, so the rows do not depend on batch_size.
                codes_BG = self.draw_codes(BLOCK_ROWS, _generator(seed, _SAMPLE, block))
                pending.append(codes_BG)
                held, block = held + BLOCK_ROWS, block + 1
            codes_NG = torch.cat(pending)
            take = min(batch_size, n_rows)
            pending, held, n_rows = [codes_NG[take:]], held - take, n_rows - take
            yield codes_NG[:take] @ self.features_GD, codes_NG[:take].clone()

    def draw_codes(self, rows: int, gen: torch.Generator) -> Tensor:
        """True coefficients ``[rows, G]`` drawn with ``gen``."""
        fire_NG = self._fire(rows, gen)
        codes_NG = torch.zeros(rows, self.n_features)
        # Magnitudes only for the firing entries: the rows are sparse.
        codes_NG[fire_NG] = self._magnitudes(int(fire_NG.sum()), gen)
        return codes_NG

    def _fire(self, rows: int, gen: torch.Generator) -> Tensor:
        z_NG = torch.randn(rows, self.n_features, generator=gen)
        strength = self.config.correlation_strength
        if self.loadings_GR.shape[1] and strength > 0:
            u_NR = torch.randn(rows, self.loadings_GR.shape[1], generator=gen)
            noise_G = (1 - strength * self.loadings_GR.square().sum(1)).clamp_min(0).sqrt()
            z_NG = z_NG * noise_G + math.sqrt(strength) * (u_NR @ self.loadings_GR.T)
        fire_NG = z_NG < torch.special.ndtri(self.conditional_G).float()
        # Levels top down, so a grandchild sees its parent already gated by the grandparent.
        for children_C, parents_C in _levels(self.parent_G):
            fire_NG[:, children_C] &= fire_NG[:, parents_C]
        return fire_NG

    def _magnitudes(self, n: int, gen: torch.Generator) -> Tensor:
        if self.config.magnitude == "exponential":
            return torch.empty(n).exponential_(1.0, generator=gen)
        return (1 + self.config.magnitude_std * torch.randn(n, generator=gen)).abs()


def make_synthetic(config: SyntheticConfig) -> SyntheticModel:
    """Draw the true features, the trees, the Zipf frequencies and the factor loadings from ``config.seed``."""
    if not isinstance(config, SyntheticConfig):
        raise MonosemanticError(f"make_synthetic expects a SyntheticConfig; got {type(config).__name__}")
    gen = torch.Generator().manual_seed(config.seed)
    features_GD = torch.randn(config.n_features, config.d_model, generator=gen)
    features_GD /= features_GD.norm(dim=1, keepdim=True)
    parent_G = _tree_parents(config)
    probs_G = _assign_ranks(config, parent_G, gen)
    conditional_G = probs_G.clone()
    child_C = torch.nonzero(parent_G >= 0).flatten()
    conditional_G[child_C] = probs_G[child_C] / probs_G[parent_G[child_C]]
    loadings_GR = _loadings(config, parent_G, gen)
    return SyntheticModel(config, features_GD, parent_G, probs_G, conditional_G, loadings_GR)


def _tree_parents(config: SyntheticConfig) -> Tensor:
    """Parent of each feature: trees laid out level by level from index 0, the rest roots."""
    parent_G = torch.full((config.n_features,), -1, dtype=torch.int64)
    start, width = 0, config.n_parents
    for _ in range(config.depth):
        if width == 0:
            break
        children = width * config.children_per_parent
        parent_G[start + width:start + width + children] = start + torch.arange(children) // config.children_per_parent
        start, width = start + width, children
    return parent_G


def _assign_ranks(config: SyntheticConfig, parent_G: Tensor, gen: torch.Generator) -> Tensor:
    """Marginal probabilities ``[G]``: Zipf ranks shuffled, then sorted within each tree parents first."""
    rank_G = torch.randperm(config.n_features, generator=gen)
    root_G = torch.arange(config.n_features)
    for _ in range(config.depth):  # follow parents up to each node's root
        root_G = torch.where(parent_G[root_G] >= 0, parent_G[root_G], root_G)
    for root in range(config.n_parents):
        # Tree ids increase level by level, so giving the smaller ranks to smaller ids puts every
        # parent before its children: p_child <= p_parent.
        nodes = torch.nonzero(root_G == root).flatten()
        rank_G[nodes] = rank_G[nodes].sort().values
    return torch.from_numpy(zipf_probabilities(config))[rank_G]


def _loadings(config: SyntheticConfig, parent_G: Tensor, gen: torch.Generator) -> Tensor:
    """Factor loadings ``[G, R]``, each child's orthogonal to all its ancestors' (or zero when R is too small)."""
    loadings_GR = torch.randn(config.n_features, config.correlation_rank, generator=gen, dtype=torch.float64)
    loadings_GR /= loadings_GR.norm(dim=1, keepdim=True).clamp_min(1e-12)
    if config.correlation_rank == 0:
        return loadings_GR.float()
    for child in torch.nonzero(parent_G >= 0).flatten().tolist():  # ids run parents first
        ancestors, node = [], int(parent_G[child])
        while node >= 0:
            ancestors.append(node)
            node = int(parent_G[node])
        # Independence of a child's z from its ancestors' firing is what keeps its marginal exact.
        basis_RA = torch.linalg.qr(loadings_GR[ancestors].T).Q
        row_R = loadings_GR[child] - basis_RA @ (basis_RA.T @ loadings_GR[child])
        norm = float(row_R.norm())
        loadings_GR[child] = row_R / norm if norm > 1e-6 else 0.0
    return loadings_GR.float()


def _levels(parent_G: Tensor) -> list[tuple[Tensor, Tensor]]:
    """(children, their parents) per tree level, top down."""
    depth_G = torch.zeros_like(parent_G)
    node_G = parent_G.clone()
    while bool((node_G >= 0).any()):
        depth_G += (node_G >= 0).long()
        node_G = torch.where(node_G >= 0, parent_G[node_G.clamp_min(0)], node_G)
    levels = []
    for level in range(1, int(depth_G.max()) + 1):
        children_C = torch.nonzero(depth_G == level).flatten()
        levels.append((children_C, parent_G[children_C]))
    return levels


def _generator(*parts: int) -> torch.Generator:
    seed = int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))
    return torch.Generator().manual_seed(seed)


class SyntheticSource:
    """A ``Trainer`` source of endless fresh rows: the batch at step n is drawn from (data seed, trainer seed, n).

    Its rows never coincide with ``model.sample``'s, so those can be the held-out rows.
    """

    def __init__(self, model: SyntheticModel, seed: int = 0):
        _integer("source seed", seed, 0)
        self.model, self.seed = model, seed
        self.layout = Layout((model.d_model,), None, "synthetic model")

    def batches(self, batch_size: int, *, seed: int, start_step: int = 0):
        step = start_step
        while True:
            codes_NG = self.model.draw_codes(batch_size, _generator(self.seed, _TRAIN, seed, step))
            yield Batch(codes_NG @ self.model.features_GD, None)
            step += 1


# ----- scoring ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroundTruthScores(Result):
    """How well a dictionary recovers the true features (see :func:`score_dictionary`)."""

    mcc: float  # mean over true features of the cosine with their Hungarian-matched latent
    mean_f1: float  # mean over true features (NaN ones left out) of the matched latent's detection F1
    uniqueness: float  # share of true features that are the best match of exactly one live latent
    shrinkage: float  # sum of matched codes x decoder norm / sum of true coefficients, where both fire
    norm_ratio: float  # mean ||reconstruction|| / ||input|| over non-zero rows
    fvu: float  # squared error / total variance of the inputs
    l0: float  # mean active latents per row
    n_rows: int  # held-out rows scored
    latent_G: tuple[int, ...]  # matched latent of each true feature (-1: none, when F < G)
    cos_G: tuple[float, ...]  # cosine with it (0 when none)
    f1_G: tuple[float, ...]  # detection F1 (NaN when the feature and its latent never fired)


def match_features(decoder: Dictionary | Tensor, features_GD: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching maximising total cosine: (latent of each true feature ``[G]``, its cosine ``[G]``).

    ``decoder`` is a dictionary or its ``[F, D]`` decoder rows. When ``F < G`` the true features
    left without a latent get latent -1 and cosine 0.
    """
    rows_FD = decoder_directions(decoder)
    if rows_FD.shape[1] != features_GD.shape[1]:
        raise MonosemanticError(f"decoder rows have width {rows_FD.shape[1]} but the true features "
                                f"{features_GD.shape[1]}; score a dictionary of the synthetic model's width")
    truth_GD = features_GD.detach().float().cpu()
    cos_GF = (truth_GD / truth_GD.norm(dim=1, keepdim=True) @ rows_FD.T).double().numpy()
    rows_M, cols_M = linear_sum_assignment(cos_GF, maximize=True)
    latent_G = np.full(cos_GF.shape[0], -1, dtype=np.int64)
    cos_G = np.zeros(cos_GF.shape[0])
    latent_G[rows_M], cos_G[rows_M] = cols_M, cos_GF[rows_M, cols_M]
    return latent_G, cos_G


def mcc(decoder: Dictionary | Tensor, features_GD: Tensor) -> float:
    """Mean cosine over true features after Hungarian matching to decoder rows (1: every feature found)."""
    return float(match_features(decoder, features_GD)[1].mean())


def score_dictionary(dictionary: Dictionary, model: SyntheticModel, *, n_rows: int = 16384, seed: int = 1,
                     batch_size: int = 4096) -> GroundTruthScores:
    """Score ``dictionary`` on ``model.sample(n_rows, seed)``; pick a seed the dictionary was not trained on.

    Detection: the matched latent fires (code > 0) against the true feature active (coefficient
    > 0), counted over rows, giving F1 per true feature. Uniqueness counts, for each latent that
    fired on these rows, its best-cosine true feature; a true feature is uniquely represented
    when exactly one such latent picks it (dead latents do not count; split or duplicated
    features, and latents tracking feature combinations, lower it). Shrinkage below 1 means
    codes underestimate the true coefficients.
    """
    if not isinstance(dictionary, Dictionary) or dictionary.config.is_transcoder:
        raise MonosemanticError("score_dictionary expects an autoencoder Dictionary; "
                                f"got {type(dictionary).__name__}; pass one that reconstructs its input")
    latent_G, cos_G = match_features(dictionary, model.features_GD)
    was_training = dictionary.training
    dictionary.eval()  # inference behaviour (e.g. batch top-k's threshold), restored afterwards
    try:
        with torch.no_grad():
            totals = _score_rows(dictionary, model, latent_G, n_rows, seed, batch_size)
    finally:
        dictionary.train(was_training)
    return _scores(dictionary, model, latent_G, cos_G, totals, n_rows)


def _score_rows(dictionary: Dictionary, model: SyntheticModel, latent_G: np.ndarray, n_rows: int, seed: int,
                batch_size: int) -> dict:
    """Per-row sums over the held-out rows, streamed."""
    F = dictionary.d_sae
    device = dictionary.W_dec.device
    norms_F = dictionary.W_dec.detach().float().norm(dim=1).cpu()
    index_G = torch.from_numpy(np.where(latent_G >= 0, latent_G, F))  # F: a column of zeros
    t: dict[str, Any] = dict(tp=0, fp=0, fn=0, shrunk=0.0, true=0.0, norm_ratio=0.0, nonzero=0, sq_err=0.0, sq=0.0,
                             s=0, active=0.0, fired_F=torch.zeros(F, dtype=torch.bool))
    for x_ND, true_NG in model.batches(n_rows, batch_size, seed):
        codes_NF = dictionary.encode(x_ND.to(device))
        recon_ND = dictionary.decode(codes_NF, x_ND.to(device)).float().cpu()
        codes_NF = codes_NF.float().cpu()
        t["fired_F"] |= (codes_NF > 0).any(0)
        t["active"] += float((codes_NF > 0).sum())
        scaled_NG = torch.cat([codes_NF * norms_F, torch.zeros(len(codes_NF), 1)], 1)[:, index_G]
        pred_NG, truth_NG = scaled_NG > 0, true_NG > 0
        t["tp"] = t["tp"] + (pred_NG & truth_NG).sum(0)
        t["fp"] = t["fp"] + (pred_NG & ~truth_NG).sum(0)
        t["fn"] = t["fn"] + (~pred_NG & truth_NG).sum(0)
        both_NG = pred_NG & truth_NG
        t["shrunk"] += float(scaled_NG[both_NG].sum())
        t["true"] += float(true_NG[both_NG].sum())
        x_norm_N = x_ND.norm(dim=1)
        live_N = x_norm_N > 0
        t["norm_ratio"] += float((recon_ND.norm(dim=1)[live_N] / x_norm_N[live_N]).sum())
        t["nonzero"] += int(live_N.sum())
        t["sq_err"] += float((recon_ND - x_ND).square().sum())
        t["sq"] += float(x_ND.double().square().sum())
        t["s"] = t["s"] + x_ND.double().sum(0)
    return t


def _scores(dictionary: Dictionary, model: SyntheticModel, latent_G: np.ndarray, cos_G: np.ndarray, t: dict,
            n_rows: int) -> GroundTruthScores:
    tp, fp, fn = (t[k].double().numpy() for k in ("tp", "fp", "fn"))
    with np.errstate(invalid="ignore", divide="ignore"):
        f1_G = 2 * tp / (2 * tp + fp + fn)
    best_F = (decoder_directions(dictionary) @ model.features_GD.T).argmax(1)
    picks_G = torch.bincount(best_F[t["fired_F"]], minlength=model.n_features)
    variance = t["sq"] - float(t["s"].square().sum()) / n_rows
    return GroundTruthScores(
        mcc=float(cos_G.mean()),
        mean_f1=float(np.nanmean(f1_G)) if np.isfinite(f1_G).any() else math.nan,
        uniqueness=float((picks_G == 1).double().mean()),
        shrinkage=ratio(t["shrunk"], t["true"]),
        norm_ratio=ratio(t["norm_ratio"], t["nonzero"]),
        fvu=ratio(t["sq_err"], variance),
        l0=t["active"] / n_rows,
        n_rows=n_rows,
        latent_G=tuple(int(i) for i in latent_G),
        cos_G=tuple(float(c) for c in cos_G),
        f1_G=tuple(float(f) for f in f1_G),
    )
