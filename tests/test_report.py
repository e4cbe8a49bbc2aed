"""Reports: the tables carry the results' numbers, and the plots are real images."""

from __future__ import annotations

import json

import matplotlib.image as matplotlib_image
import numpy as np
import pytest
import torch

from monosemantic.dictionaries import make_dictionary
from monosemantic.errors import MonosemanticError
from monosemantic.evaluation import (
    AbsorbedWord,
    AbsorptionConfig,
    AbsorptionResult,
    Cluster,
    ClusteringConfig,
    ClusteringResult,
    LetterAbsorption,
    ProbeScore,
    ProbingConfig,
    ProbingResult,
    ReconstructionConfig,
    ReconstructionResult,
    SpliceConfig,
    SpliceResult,
    TokenExample,
    density_summary,
    mmcs,
    write_report,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _reconstruction(arch, d_sae, l0, fvu, k=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    fires_F = (torch.rand(d_sae, generator=g) ** 4 * 5000).long()  # a spread of densities, some dead
    options = {} if k is None else {"k": k}
    return ReconstructionResult(
        config=ReconstructionConfig(), dictionary={"arch": arch, "d_sae": d_sae, "options": options}, n_tokens=5000,
        mse=fvu * 40, fvu=fvu, cosine=1 - fvu / 2, l0=l0, l1=l0 * 1.5, l2_ratio=0.9, norm_ratio=0.9,
        relative_reconstruction_bias=1.05, density=density_summary(fires_F, 5000))


def _probing():
    config = ProbingConfig(ks=(1, 2, 5), selection="normalised", test_fraction=0.25, max_tokens=20000, C=1.0,
                           max_iter=200, seed=0)
    scores = [ProbeScore("majority", None, "overall", 0.25, 0.08, 0, ()),
              ProbeScore("activations", None, "overall", 0.9, 0.88, 576, ())]
    curves = {"sae": (0.61, 0.72, 0.8, 0.87), "neurons": (0.41, 0.45, 0.52, 0.9), "pca": (0.38, 0.5, 0.6, 0.85)}
    for name, accuracies in curves.items():
        scores += [ProbeScore(name, k, "overall", a, a - 0.01, 7 * (k or 80), ()) for k, a in
                   zip((1, 2, 5, None), accuracies)]
        scores += [ProbeScore(name, None, c, 0.9, f1, 80, ()) for c, f1 in (("keyword", 0.97), ("comment", 0.4))]
    return ProbingResult(config=config, classes=("keyword", "comment"), test_counts=(40, 12), n_train=3000,
                         n_test=1000, n_train_windows=30, n_test_windows=10,
                         dictionaries={n: {"arch": n} for n in curves}, scores=tuple(scores))


def _absorption():
    config = AbsorptionConfig(test_fraction=0.3, cos_threshold=0.1, min_share=0.5, split_threshold=0.03, max_main=3,
                              min_words=10, min_main_f1=0.5, C=1.0, max_iter=500, seed=0, task={"site": "x"})
    s = LetterAbsorption(letter="s", n_train=70, n_test=30, main_latents=(17,), main_cosines=(0.8,),
                         main_contribution=2.0, main_f1=0.93, firing_f1=0.9, probe_f1=0.98, n_true_positives=29,
                         n_missed=4, n_absorbed=3, absorption_rate=0.75, absorption_fraction=3 / 29, measured=True,
                         absorbing_latents=((905, 2), (33, 1)),
                         examples=(AbsorbedWord(" snake", 905, 2.5, 0.6), AbsorbedWord(" short", 33, 1.0, 0.3)))
    t = LetterAbsorption(letter="t", n_train=70, n_test=30, main_latents=(4, 8), main_cosines=(0.7, 0.6),
                         main_contribution=1.5, main_f1=0.99, firing_f1=0.98, probe_f1=1.0, n_true_positives=30,
                         n_missed=0, n_absorbed=0, absorption_rate=float("nan"), absorption_fraction=0.0,
                         measured=True, absorbing_latents=(), examples=())
    return AbsorptionResult(config=config, dictionary={"arch": "topk", "d_sae": 4096, "options": {"k": 32}},
                            n_train=140, n_test=60, probe_accuracy=0.97, n_measured=2, mean_absorption_rate=0.75,
                            mean_absorption_fraction=3 / 58, mean_main_f1=0.96, letters=(s, t))


def _clustering():
    example = TokenExample(token="|", context="a = b «|» c\nd", window=0, position=3, label="operator",
                           distance=0.1)
    cluster = Cluster(index=0, size=9, majority_label="operator", purity=0.8888, label_counts={"operator": 8,
                      "name": 1}, top_tokens=(("|", 5), ("\n", 4)), examples=(example,))
    config = ClusteringConfig(n_clusters=2, max_tokens=None, normalise=True, n_init=1, n_examples=1,
                              context_before=8, context_after=2, seed=0)
    return ClusteringResult(config=config, name="sae", dictionary=None, classes=("name", "operator"), n_tokens=9,
                            n_labelled=9, purity=0.8888, nmi=0.5, clusters=(cluster,))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    splice = SpliceResult(
        config=SpliceConfig(site_in="blocks.3.resid_post", site_out="blocks.3.resid_post", batch_size=8,
                            skip_first=True, exclude_special=True, windows={"n_windows": 4}),
        dictionary={"arch": "topk", "d_sae": 4096, "options": {"k": 32}}, model={"name": "tiny"}, n_windows=4,
        n_tokens=500, ce_clean=2.5, ce_spliced=2.75, ce_zero=7.5, ce_mean=5.0, delta_loss=0.25, loss_recovered=0.95,
        loss_recovered_mean=0.9, kl_spliced=0.2, kl_zero=5.0, kl_mean=2.5)
    results = {"sae": [_reconstruction("topk", 4096, 32.0, 0.1234, k=32), splice],
               "neurons": _reconstruction("identity", 576, 576.0, 0.0, seed=1),
               "pca-64": _reconstruction("pca", 64, 64.0, 0.4321, seed=2),
               "probing": _probing(), "absorption sae": _absorption(), "clusters": _clustering(),
               "sae vs random": mmcs(make_dictionary("relu", 8, 16), make_dictionary("relu", 8, 16))}
    return folder, write_report(results, folder, title="Tiny report")


def test_tables_hold_the_numbers(report):
    folder, path = report
    assert path == folder / "report.md"
    md = path.read_text()
    assert md.startswith("# Tiny report")
    assert "| sae | topk | 4096 | 5000 | 32 | 0.1234 |" in md
    assert "| pca-64 | pca | 64 | 5000 | 64 | 0.4321 |" in md
    assert "| neurons | identity | 576 | 5000 | 576 | 0 |" in md
    assert "| sae | blocks.3.resid_post | 500 | 2.5 | 2.75 | 7.5 | 5 | 0.25 | 0.95 | 0.9 | 0.2 |" in md
    assert "| probe | k=1 | k=2 | k=5 | all |" in md
    assert "| sae | 0.61 | 0.72 | 0.8 | 0.87 |" in md and "| majority | – | – | – | 0.25 |" in md
    assert "| activations | – | – | – | 0.9 |" in md
    assert "| keyword | 40 | – | – | 0.97 | 0.97 | 0.97 |" in md  # per-class F1 of the full probes
    assert "| absorption sae | 2/26 |" not in md and "| absorption sae | 2/2 | 0.75 |" in md
    assert "| s | 17 | 0.93 | 0.98 | 29 | 4 | 3 | 0.75 | 905 (2), 33 (1) | snake->905, short->33 |" in md
    assert "| t | 4, 8 | 0.99 | 1 | 30 | 0 | 0 | – |" in md  # no miss: the rate is undefined, shown as a dash
    # Source tokens hold pipes and newlines: escaped, so every table row stays one row.
    assert "| 0 | 9 | operator | 0.8888 | '\\|' (5), '\\\\n' (4) | a = b «\\|» c⏎d |" in md
    assert md.count("MMCS a->b") == 1


def test_json_and_html_carry_the_same_report(report):
    folder, _ = report
    payload = json.loads((folder / "report.json").read_text())  # strict JSON: NaN was written as null
    kinds = [(r["name"], r["kind"]) for r in payload["results"]]
    assert ("sae", "ReconstructionResult") in kinds and ("sae", "SpliceResult") in kinds
    assert ("probing", "ProbingResult") in kinds and len(kinds) == 8
    reconstruction = next(s for s in payload["sections"] if s["title"] == "Reconstruction")
    assert reconstruction["tables"][0]["rows"][0][:6] == ["sae", "topk", 4096, 5000, 32.0, 0.1234]
    absorption = next(r for r in payload["results"] if r["kind"] == "AbsorptionResult")["result"]
    assert absorption["letters"][1]["absorption_rate"] is None
    page = (folder / "report.html").read_text()
    assert page.count("<table>") == sum(len(s["tables"]) for s in payload["sections"])
    assert "<td>0.1234</td>" in page and "<img src='frontier.png'" in page


@pytest.mark.parametrize("image", ["frontier.png", "densities.png", "probing-1.png", "absorption.png"])
def test_plots_are_real_images(report, image):
    folder, path = report
    assert f"![{image}]({image})" in path.read_text()
    pixels = matplotlib_image.imread(folder / image)
    assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels.shape[1] > 300
    gray = pixels[..., :3].mean(axis=2)
    assert gray.std() > 0.05  # not blank: axes, text and data on a white background
    assert (gray < 0.5).mean() > 0.002 and (np.abs(pixels[..., 0] - pixels[..., 2]) > 0.2).any()  # ink, and colour


def test_without_plots_and_names(tmp_path):
    results = [_reconstruction("topk", 4096, 32.0, 0.1234, k=32), _reconstruction("topk", 4096, 20.0, 0.2, k=32)]
    path = write_report(results, tmp_path, plot=False)
    md = path.read_text()
    assert "| topk-4096-k32 | topk |" in md and "| topk-4096-k32 #2 | topk |" in md  # default names, made unique
    assert not list(tmp_path.glob("*.png")) and "![" not in md
    for bad, message in [([1, 2], "is a int, not an evaluation result"), ("results", "takes a list or a dict")]:
        with pytest.raises(MonosemanticError, match=message) as caught:
            write_report(bad, tmp_path)
        assert "\n" not in str(caught.value)
