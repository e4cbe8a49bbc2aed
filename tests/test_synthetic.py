"""The hierarchical, correlated, Zipf synthetic ground truth, and scoring dictionaries against it."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import numpy as np
import pytest
import torch

from monosemantic.dictionaries import make_dictionary
from monosemantic.errors import MonosemanticError
from monosemantic.evaluation.synthetic import (
    GroundTruthScores,
    SyntheticConfig,
    SyntheticSource,
    make_synthetic,
    match_features,
    mcc,
    score_dictionary,
)
from monosemantic.training import TensorSource, TrainConfig, Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

FLAT: dict[str, Any] = dict(n_parents=0, correlation_rank=0, correlation_strength=0.0)  # independent, no trees


def firing(config: SyntheticConfig, n: int, seed: int = 5):
    model = make_synthetic(config)
    return model, model.sample(n, seed)[1] > 0


# ----- the generator ------------------------------------------------------------------------------


def test_children_fire_only_with_their_parent_and_keep_their_configured_frequency():
    config = SyntheticConfig(n_features=64, d_model=32, n_parents=4, children_per_parent=3, depth=2,
                             mean_active=4.0, correlation_rank=4, correlation_strength=0.6, seed=3)
    model, fire_NG = firing(config, 40_000)
    child_C = torch.nonzero(model.parent_G >= 0).flatten()
    assert len(child_C) == 4 * 3 + 4 * 9
    assert not (fire_NG[:, child_C] & ~fire_NG[:, model.parent_G[child_C]]).any()
    assert bool((fire_NG[:, child_C].sum(0) > 50).all())  # children do fire
    assert bool((model.probs_G[child_C] <= model.probs_G[model.parent_G[child_C]]).all())
    # Marginals stay as configured despite gating and correlation (binomial z-scores).
    freq_G = fire_NG.double().mean(0)
    z_G = (freq_G - model.probs_G) / (model.probs_G * (1 - model.probs_G) / 40_000).sqrt()
    assert float(z_G.abs().max()) < 5


def test_features_sharing_a_factor_fire_together_and_an_independent_control_does_not():
    base: dict[str, Any] = dict(n_features=32, d_model=16, n_parents=0, zipf_exponent=0.5, mean_active=6.0, seed=1)
    model, fire_NG = firing(SyntheticConfig(**base, correlation_rank=2, correlation_strength=0.8), 20_000)
    _, control_NG = firing(SyntheticConfig(**base, correlation_rank=0, correlation_strength=0.0), 20_000)
    predicted_GG = 0.8 * model.loadings_GR @ model.loadings_GR.T
    pairs = torch.triu(predicted_GG > 0.5, diagonal=1)
    assert int(pairs.sum()) > 20
    shared = float(torch.corrcoef(fire_NG.T.float())[pairs].mean())
    control = float(torch.corrcoef(control_NG.T.float())[pairs].mean())
    assert shared > 0.15 and abs(control) < 0.03 and shared > control + 0.1
    anti = torch.triu(predicted_GG < -0.5, diagonal=1)
    assert float(torch.corrcoef(fire_NG.T.float())[anti].mean()) < -0.05


def test_firing_frequencies_follow_the_zipf_exponent_and_the_mean_l0():
    config = SyntheticConfig(n_features=48, d_model=16, zipf_exponent=1.2, mean_active=3.0, seed=2, **FLAT)
    model, fire_NG = firing(config, 40_000)
    assert float(fire_NG.sum(1).float().mean()) == pytest.approx(3.0, rel=0.03)
    order = torch.argsort(model.probs_G, descending=True)
    freq_R = fire_NG.double().mean(0)[order].numpy()
    assert freq_R[0] > freq_R[4] > freq_R[16] > freq_R[40]
    ranks = np.arange(1, 25)  # the frequent half: enough firings for a clean slope
    slope = np.polyfit(np.log(ranks), np.log(freq_R[:24]), 1)[0]
    assert slope == pytest.approx(-1.2, abs=0.08)


def test_exponential_magnitudes_and_rows_built_from_the_codes():
    model = make_synthetic(SyntheticConfig(n_features=32, d_model=8, magnitude="exponential", mean_active=3.0,
                                           n_parents=2, seed=4))
    x_ND, codes_NG = model.sample(20_000, seed=0)
    assert x_ND.dtype == codes_NG.dtype == torch.float32 and x_ND.shape == (20_000, 8)
    torch.testing.assert_close(x_ND, codes_NG @ model.features_GD)
    assert float(codes_NG[codes_NG > 0].mean()) == pytest.approx(1.0, rel=0.05)
    torch.testing.assert_close(model.features_GD.norm(dim=1), torch.ones(32))


def test_the_same_seed_gives_the_same_rows_whatever_the_batch_size():
    config = SyntheticConfig(n_features=40, d_model=12, n_parents=4, seed=7)
    a, b = make_synthetic(config), make_synthetic(config)
    assert torch.equal(a.features_GD, b.features_GD) and torch.equal(a.probs_G, b.probs_G)
    x_ND, codes_NG = a.sample(5000, seed=3)
    assert torch.equal(x_ND, b.sample(5000, seed=3)[0])
    batches = list(a.batches(5000, 1500, seed=3))
    assert [len(x) for x, _ in batches] == [1500, 1500, 1500, 500]
    assert torch.equal(torch.cat([c for _, c in batches]), codes_NG)
    assert not torch.equal(a.sample(5000, seed=4)[1], codes_NG)
    assert not torch.equal(make_synthetic(dataclasses.replace(config, seed=8)).features_GD, a.features_GD)
    source = SyntheticSource(a, seed=0)
    first = next(source.batches(64, seed=0, start_step=3)).x
    steps = source.batches(64, seed=0)
    assert torch.equal([next(steps) for _ in range(4)][3].x, first)


@pytest.mark.parametrize("bad", [dict(n_features=0), dict(d_model=2.5), dict(n_parents=-1), dict(depth=0),
                                 dict(n_parents=40, children_per_parent=8), dict(mean_active=0),
                                 dict(mean_active=200.0), dict(correlation_strength=1.0),
                                 dict(zipf_exponent=float("nan")), dict(magnitude="gamma"),
                                 dict(correlation_rank=True)])
def test_bad_configs_are_refused_in_one_line(bad):
    with pytest.raises(MonosemanticError) as info:
        SyntheticConfig(**bad)
    assert "\n" not in str(info.value) and "expected" in str(info.value)


def test_a_zipf_too_steep_for_the_target_l0_is_refused():
    with pytest.raises(MonosemanticError, match="lower mean_active"):
        SyntheticConfig(n_features=64, zipf_exponent=2.0, mean_active=3.0)


# ----- scoring ------------------------------------------------------------------------------------


def truth_dictionary(model):
    """A ReLU dictionary that decodes with the true features and encodes exactly (needs G <= D)."""
    G, D = model.features_GD.shape
    dictionary = make_dictionary("relu", D, G)
    with torch.no_grad():
        dictionary.W_dec.copy_(model.features_GD)
        dictionary.W_enc.copy_(torch.linalg.pinv(model.features_GD))
        dictionary.b_enc.fill_(-1e-4)  # cuts float noise on absent features
        dictionary.b_dec.zero_()
    return dictionary


def test_the_truth_scores_perfectly_and_a_random_dictionary_does_not():
    model = make_synthetic(SyntheticConfig(n_features=16, d_model=32, n_parents=2, mean_active=3.0, seed=11))
    scores = score_dictionary(truth_dictionary(model), model, n_rows=8192)
    assert scores.mcc == pytest.approx(1.0, abs=1e-5)
    assert scores.latent_G == tuple(range(16))
    assert scores.mean_f1 > 0.99 and scores.uniqueness == 1.0
    assert scores.shrinkage == pytest.approx(1.0, abs=1e-3) and scores.norm_ratio == pytest.approx(1.0, abs=1e-3)
    assert scores.fvu < 1e-6 and scores.l0 == pytest.approx(3.0, rel=0.05)
    json.dumps(scores.to_dict())

    torch.manual_seed(0)
    random = make_dictionary("topk", 32, 16, k=3)
    rough = score_dictionary(random, model, n_rows=4096)
    assert rough.mcc < 0.5 and rough.mean_f1 < 0.6 and rough.fvu > 0.3
    assert isinstance(rough, GroundTruthScores) and len(rough.f1_G) == 16


def test_mcc_matches_one_to_one_and_takes_plain_decoder_tensors():
    model = make_synthetic(SyntheticConfig(n_features=64, d_model=32, seed=12))
    features_GD = model.features_GD
    assert mcc(features_GD, features_GD) == pytest.approx(1.0, abs=1e-5)
    doubled_FD = torch.cat([features_GD[:32], features_GD[:32]])  # half the features, twice each
    latent_G, cos_G = match_features(doubled_FD, features_GD)
    assert sorted(latent_G.tolist()) == list(range(64))  # one-to-one: duplicates cannot both count
    assert mcc(doubled_FD, features_GD) < 0.8
    assert mcc(torch.randn(64, 32), features_GD) < 0.45
    latent_G, cos_G = match_features(features_GD[:10] * 3.0, features_GD)  # fewer latents than features
    assert (latent_G >= 0).sum() == 10 and cos_G.mean() == pytest.approx(10 / 64, abs=1e-5)
    with pytest.raises(MonosemanticError, match="width"):
        mcc(torch.randn(64, 31), features_GD)


def test_a_topk_dictionary_trained_briefly_recovers_the_features():
    model = make_synthetic(SyntheticConfig(n_features=64, d_model=32, n_parents=4, children_per_parent=2,
                                           mean_active=3.0, zipf_exponent=0.6, seed=21))
    torch.manual_seed(0)
    fresh = make_dictionary("topk", 32, 64, k=3)
    before = score_dictionary(fresh, model, n_rows=4096)
    x_ND, _ = model.sample(49_152, seed=0)
    config = TrainConfig(total_tokens=400 * 256, batch_size=256, log_every=400, checkpoint_every=None)
    trained = Trainer({"topk": fresh}, config, lrs={"topk": 4e-3}).fit(TensorSource(x_ND), progress=False)
    after = score_dictionary(trained.dictionaries["topk"], model, n_rows=4096, seed=9)
    assert after.mcc > 0.8 and after.mcc > before.mcc + 0.35
    assert after.mean_f1 > 0.45 and after.mean_f1 > before.mean_f1 + 0.2 and after.fvu < 0.3
    # At most k: a row with fewer than k positive pre-activations keeps fewer latents.
    assert math.isfinite(after.shrinkage) and 2.5 <= after.l0 <= 3.0
