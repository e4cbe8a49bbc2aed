"""Seed variation: intervals over seeds, cross-seed feature overlap, and the sweep's seed axis.

Intervals are checked against their definition by simulation (coverage of a known mean);
overlaps against cases with a known answer (a dictionary and its permuted copy, unrelated
random directions, constructed cosines); the seed axis against dictionaries trained alone.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from monosemantic.dictionaries import make_dictionary
from monosemantic.errors import MonosemanticError
from monosemantic.evaluation.seeds import (
    Interval,
    check_seed_group,
    cross_seed_overlap,
    hungarian_match,
    interval,
    overlap_matrix,
    seed_intervals,
)
from monosemantic.training import TensorSource, TrainConfig, build_dictionaries, read_metrics, sweep, sweep_specs
from monosemantic.training.sweep import check_seeds, seed_groups

pytestmark = pytest.mark.usefixtures("one_thread")


def unit_rows(n: int, d: int, seed: int) -> torch.Tensor:
    rows_ND = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    return rows_ND / rows_ND.norm(dim=1, keepdim=True)


# ----- intervals ------------------------------------------------------------------------------


def test_intervals_shrink_with_more_seeds_as_the_t_distribution_says():
    rng = np.random.default_rng(0)
    sigma = 0.05
    widths = {}
    for n in (3, 10, 30):
        drawn = [interval(rng.normal(0.7, sigma, n)) for _ in range(200)]
        widths[n] = float(np.mean([i.high - i.low for i in drawn]))
        assert all(i.n == n and i.low < i.mean < i.high for i in drawn)
    assert widths[3] > widths[10] > widths[30]
    # At n=30 the sample sd is close to sigma, so the mean width is close to 2 * t * sigma / sqrt(n).
    assert widths[30] == pytest.approx(2 * 2.045 * sigma / math.sqrt(30), rel=0.05)


@pytest.mark.parametrize("n", [3, 10])
def test_a_95_percent_interval_covers_the_true_mean_95_percent_of_the_time(n):
    # With n=3 a normal (z) interval would cover only about 82%: this tells t from z.
    rng = np.random.default_rng(n)
    covered = sum(i.low <= 0.5 <= i.high for i in (interval(rng.normal(0.5, 0.1, n)) for _ in range(2000)))
    assert 0.93 <= covered / 2000 <= 0.97


def test_a_lower_level_gives_a_narrower_interval_and_the_string_shows_it():
    values = [0.70, 0.72, 0.69, 0.74]
    wide, narrow = interval(values), interval(values, level=0.5)
    assert narrow.low > wide.low and narrow.high < wide.high and narrow.mean == wide.mean == pytest.approx(0.7125)
    assert str(wide) == f"{wide.mean:.3f} [{wide.low:.3f}, {wide.high:.3f}]"
    assert str(Interval(0.712, 0.69, 0.734, 3)) == "0.712 [0.690, 0.734]"


def test_separation_needs_intervals_that_do_not_overlap():
    high, low = interval([0.80, 0.81, 0.82]), interval([0.50, 0.51, 0.52])
    assert high.separated_above(low) and not low.separated_above(high)
    assert not high.overlaps(low) and not low.overlaps(high)
    close = interval([0.79, 0.83, 0.86])
    assert close.overlaps(high) and not close.separated_above(high) and not high.separated_above(close)


def test_one_value_never_separates():
    one, sure = interval([0.99]), interval([0.1, 0.1, 0.1])  # constant values: a zero-width interval
    assert one.n == 1 and one.mean == 0.99 and one.low == -math.inf and one.high == math.inf
    assert sure.low == pytest.approx(0.1) and sure.high == pytest.approx(0.1)
    assert not one.separated_above(sure) and not sure.separated_above(one) and one.overlaps(sure)
    assert json.loads(json.dumps(one.to_dict())) == {"mean": 0.99, "low": None, "high": None, "n": 1, "level": 0.95}


def test_nan_values_are_dropped_and_counted_out():
    kept = interval([0.6, math.nan, 0.8])
    assert kept.n == 2 and kept.mean == pytest.approx(0.7)
    none = interval([math.nan])
    assert none.n == 0 and math.isnan(none.mean) and not none.separated_above(kept)
    with pytest.raises(MonosemanticError, match="at least one value"):
        interval([])
    with pytest.raises(MonosemanticError, match="level"):
        interval([0.1, 0.2], level=95)


def test_seed_intervals_group_a_metric_by_its_point():
    groups = seed_groups(["topk_k4_x2_s0", "topk_k4_x2_s1", "topk_k8_x2_s0", "topk_k8_x2_s1"])
    values = {"topk_k4_x2_s0": 0.5, "topk_k4_x2_s1": 0.6, "topk_k8_x2_s0": 0.8, "topk_k8_x2_s1": 0.8}
    result = seed_intervals(values, groups)
    assert result["topk_k4_x2"].mean == pytest.approx(0.55) and result["topk_k8_x2"].n == 2
    with pytest.raises(MonosemanticError, match="topk_k8_x2_s1"):
        seed_intervals({k: v for k, v in values.items() if k != "topk_k8_x2_s1"}, groups)


# ----- cross-seed overlap ---------------------------------------------------------------------


def test_a_dictionary_overlaps_itself_fully_even_rescaled_or_permuted():
    torch.manual_seed(0)
    sae = make_dictionary("topk", 16, 48, k=4)
    same = cross_seed_overlap(sae, sae)
    assert same.mean_cosine == pytest.approx(1.0, abs=1e-6) and same.share == 1.0
    assert (same.n_a, same.n_b, same.n_matched) == (48, 48, 48)
    W_FD = sae.W_dec.detach() * torch.linspace(0.1, 3.0, 48)[:, None]  # not unit rows, as other formats load
    permutation = torch.randperm(48, generator=torch.Generator().manual_seed(1))
    shuffled = cross_seed_overlap(sae, W_FD[permutation])
    assert shuffled.mean_cosine == pytest.approx(1.0, abs=1e-6) and shuffled.share == 1.0
    rows_a, cols_b, _ = hungarian_match(sae, W_FD[permutation])
    assert torch.equal(permutation[cols_b], rows_a)  # the matching undoes the permutation


def test_unrelated_random_dictionaries_overlap_little():
    F, D = 64, 64
    result = cross_seed_overlap(unit_rows(F, D, 1), unit_rows(F, D, 2))
    # Cosines of independent random unit vectors have mean 0 and sd 1/sqrt(D); no matched pair can
    # beat the largest of the F*F entries, about sqrt(2 ln(F*F) / D) = 0.51 here, far from a shared 1.
    assert result.mean_cosine < math.sqrt(2 * math.log(F * F) / D)
    assert result.mean_cosine > math.sqrt(2 / (math.pi * D))  # the matching does beat a typical |cos|
    assert result.share == 0.0
    assert list(result.quantiles) == sorted(result.quantiles) and result.quantiles[-1] < 0.7


def test_the_share_counts_partners_at_or_above_the_threshold():
    # a's rows are e_0..e_3; b's row i is c_i e_i + sqrt(1 - c_i^2) e_{4+i}: matched cosines are c.
    c = torch.tensor([1.0, 0.9, 0.65, 0.2])
    a_FD = torch.eye(8)[:4]
    b_FD = c[:, None] * torch.eye(8)[:4] + (1 - c**2).sqrt()[:, None] * torch.eye(8)[4:]
    assert cross_seed_overlap(a_FD, b_FD, threshold=0.7).share == 0.5
    assert cross_seed_overlap(a_FD, b_FD, threshold=0.6).share == 0.75
    assert cross_seed_overlap(a_FD, b_FD, threshold=1.0).share == 0.25  # exactly at the threshold counts
    assert cross_seed_overlap(a_FD, b_FD).mean_cosine == pytest.approx(float(c.mean()))


def test_two_latents_cannot_claim_one_partner():
    x_D, y_D = torch.eye(4)[0], torch.eye(4)[1]
    result = cross_seed_overlap(torch.stack([x_D, x_D]), torch.stack([x_D, y_D]))
    # MMCS would say 1.0: both of a's latents find x. One-to-one, one of them is left with y.
    assert result.mean_cosine == pytest.approx(0.5) and result.share == 0.5


def test_max_latents_takes_a_fixed_subsample_that_keeps_true_partners():
    a_FD = unit_rows(200, 32, 3)
    b_FD = a_FD[torch.randperm(200, generator=torch.Generator().manual_seed(4))]
    first, again = (cross_seed_overlap(a_FD, b_FD, max_latents=50) for _ in range(2))
    assert first == again and first.n_matched == 50 and first.max_latents == 50 and first.share == 1.0
    assert cross_seed_overlap(a_FD, b_FD, max_latents=500).max_latents is None
    with pytest.raises(MonosemanticError, match="max_latents"):
        cross_seed_overlap(a_FD, b_FD, max_latents=0)


def test_overlap_refuses_bad_input():
    with pytest.raises(MonosemanticError, match="different widths"):
        cross_seed_overlap(unit_rows(8, 16, 0), unit_rows(8, 12, 0))
    with pytest.raises(MonosemanticError, match="threshold"):
        cross_seed_overlap(unit_rows(8, 16, 0), unit_rows(8, 16, 1), threshold=70)


def test_the_overlap_matrix_covers_every_pair():
    base_FD = unit_rows(32, 16, 5)
    group = {"s0": base_FD, "s1": base_FD.flip(0), "s2": unit_rows(32, 16, 6)}
    result = overlap_matrix(group)
    assert result.pairs == (("s0", "s1"), ("s0", "s2"), ("s1", "s2"))
    assert [o.share for o in result.overlaps][0] == 1.0 and result.share.n == 3
    assert result.share.mean == pytest.approx(sum(o.share for o in result.overlaps) / 3)
    assert json.loads(json.dumps(result.to_dict()))["share"]["n"] == 3
    with pytest.raises(MonosemanticError, match="at least two seeds"):
        overlap_matrix({"s0": base_FD})


# ----- seed groups --------------------------------------------------------------------------------


def test_check_seed_group_refuses_seeds_that_differ_in_architecture_or_size():
    def built(arch, d_sae, seed=0, **options):
        torch.manual_seed(seed)
        return make_dictionary(arch, 16, d_sae, **options)

    check_seed_group({"s0": built("topk", 32, 0, k=4), "s1": built("topk", 32, 1, k=4)})
    bad = [({"s0": built("topk", 32, k=4), "s1": built("batchtopk", 32, k=4)}, "arch"),
           ({"s0": built("topk", 32, k=4), "s1": built("topk", 64, k=4)}, "d_sae"),
           ({"s0": built("topk", 32, k=4), "s1": built("topk", 32, k=8)}, "options"),
           ({"s0": unit_rows(32, 16, 0), "s1": unit_rows(64, 16, 0)}, "decoder shape")]
    for group, field in bad:
        with pytest.raises(MonosemanticError, match=f"seeds that differ in architecture or size.*{field}"):
            check_seed_group(group)
        with pytest.raises(MonosemanticError, match="seeds that differ in architecture or size"):
            overlap_matrix(group)


def test_seed_groups_gather_seeded_names_in_seed_order():
    names = ["topk_k4_x2_s10", "topk_k4_x2_s2", "topk_k8_x2_s0", "relu_l1_0.5_x4"]
    assert seed_groups(names) == {"topk_k4_x2": ["topk_k4_x2_s2", "topk_k4_x2_s10"], "topk_k8_x2": ["topk_k8_x2_s0"]}


# ----- the sweep's seed axis ------------------------------------------------------------------


def tiny_data():
    # Seed 100 keeps the data apart from the dictionaries' init seeds (randn draws alike).
    g = torch.Generator().manual_seed(100)
    dirs_MD = torch.randn(24, 8, generator=g)
    codes_NM = torch.rand(512, 24, generator=g) * (torch.rand(512, 24, generator=g) < 0.1)
    return TensorSource(codes_NM @ dirs_MD)


def tiny_config() -> TrainConfig:
    return TrainConfig(total_tokens=12 * 32, batch_size=32, lr=3e-3, log_every=4, checkpoint_every=None, seed=7)


def test_seeded_specs_are_named_per_seed_and_unseeded_names_stay():
    seeded = sweep_specs("topk", expansions=[2, 4], sparsities=[4], seeds=(0, 1))
    assert list(seeded) == ["topk_k4_x2_s0", "topk_k4_x2_s1", "topk_k4_x4_s0", "topk_k4_x4_s1"]
    assert list(sweep_specs("topk", expansions=[2, 4], sparsities=[4])) == ["topk_k4_x2", "topk_k4_x4"]
    assert seed_groups(seeded) == {"topk_k4_x2": ["topk_k4_x2_s0", "topk_k4_x2_s1"],
                                   "topk_k4_x4": ["topk_k4_x4_s0", "topk_k4_x4_s1"]}


def test_each_seeds_init_is_that_seeds_init_alone():
    seeded = build_dictionaries(sweep_specs("topk", expansions=[2], sparsities=[4], seeds=(0, 1)), 8, seed=99)
    s0, s1 = seeded["topk_k4_x2_s0"].state_dict(), seeded["topk_k4_x2_s1"].state_dict()
    assert not torch.equal(s0["W_dec"], s1["W_dec"])
    for seed, state in ((0, s0), (1, s1)):
        alone = build_dictionaries(sweep_specs("topk", expansions=[2], sparsities=[4]), 8, seed=seed)["topk_k4_x2"]
        for key, tensor in alone.state_dict().items():
            assert torch.equal(state[key], tensor), (seed, key)  # the spec's seed, not seed=99, decides


def test_a_seeded_sweep_trains_each_seed_as_if_alone(tmp_path):
    source, cfg = tiny_data(), tiny_config()
    swept = sweep("topk", source, cfg, tmp_path / "both", expansions=[2], sparsities=[4], seeds=(0, 1), progress=False)
    assert sorted(swept.dictionaries) == ["topk_k4_x2_s0", "topk_k4_x2_s1"]
    assert {r["name"] for r in read_metrics(tmp_path / "both")} == {"topk_k4_x2_s0", "topk_k4_x2_s1"}
    assert all((tmp_path / "both" / name / "weights.safetensors").is_file() for name in swept.dictionaries)
    assert not torch.equal(swept.dictionaries["topk_k4_x2_s0"].W_dec, swept.dictionaries["topk_k4_x2_s1"].W_dec)
    for seed in (0, 1):
        name = f"topk_k4_x2_s{seed}"
        alone = sweep("topk", source, cfg, tmp_path / f"alone{seed}", expansions=[2], sparsities=[4], seeds=[seed],
                      progress=False)
        for key, tensor in alone.dictionaries[name].state_dict().items():
            assert torch.equal(swept.dictionaries[name].state_dict()[key], tensor), (name, key)


@pytest.mark.parametrize("seeds, message", [((0, 1, 0), r"seeds \[0\] are repeated"), ((0, 1.5), "seed 1.5"),
                                            ((True,), "seed True"), (("0",), "seed '0'"), ((-1,), "seed -1"),
                                            ((), "non-empty"), ("01", "non-empty list")])
def test_bad_seeds_are_refused(seeds, message):
    with pytest.raises(MonosemanticError, match=message):
        check_seeds(seeds)
    with pytest.raises(MonosemanticError, match=message):
        sweep_specs("topk", expansions=[2], sparsities=[4], seeds=seeds)
