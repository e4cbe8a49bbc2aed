"""The demo pipeline end to end on a tiny model: every stage runs and the headline table agrees
with the files the stages wrote (the evaluation report, the autointerp explanations, the dashboard)."""

from __future__ import annotations

import json
import math

import pytest

from monosemantic.demo import CONTROL, RANDOM_MODEL, DemoSettings, headline_table, run_demo, verdict

pytestmark = pytest.mark.usefixtures("one_thread")


def test_demo_runs_every_stage_and_its_table_matches_the_reports(tiny_model_dir, tmp_path):
    from monosemantic.autointerp import JudgeCheck
    from monosemantic.evaluation import SuiteResult
    from monosemantic.features import FeatureData, dictionary_fingerprint
    from monosemantic.formats import load_dictionary
    from monosemantic.models import load_model

    lm = load_model(str(tiny_model_dir("llama")))
    settings = DemoSettings(site="blocks.1.resid_post", tokens=3000, train_tokens=3 * 512, sparsities=(4,),
                            expansions=(2,), batch_size=512, headline_sparsity=4, headline_expansion=2, eval_windows=6,
                            splice_windows=3, feature_windows=6, probe_windows=16, autointerp_latents="random6",
                            context_length=64, min_tokens=200, ica_max_iter=50)
    lines: list[str] = []
    result = run_demo(tmp_path / "demo", settings, lm=lm, echo=lines.append)
    assert isinstance(result.suite, SuiteResult) and isinstance(result.judge, JudgeCheck)
    assert [row["dictionary"] for row in result.rows] == ["topk_k4_x2", CONTROL, RANDOM_MODEL, "neurons", "pca", "ica"]
    assert [row["seeds"] for row in result.rows] == [3, 3, 1, 1, 1, 1]

    # Reconstruction numbers are the evaluation report's (a group's first member).
    report = json.loads(result.report.with_suffix(".json").read_text())
    table = next(t for s in report["sections"] if s["title"] == "Reconstruction" for t in s["tables"])
    fvu = {row[0]: row[table["headers"].index("FVU")] for row in table["rows"]}
    by_name = {r["dictionary"]: r for r in result.rows}
    for group, members in result.suite.groups.items():
        if group in by_name:
            assert by_name[group]["fvu"].mean == pytest.approx(sum(fvu[m] for m in members) / len(members))

    # The spliced loss runs on the first splice_windows of the evaluation's windows.
    from monosemantic.evaluation.splice import SpliceResult
    splice = result.suite.result("topk_k4_x2", SpliceResult)
    assert splice is not None and splice.n_windows == 3

    # Task AUROC intervals are over the three seeds, and the verdict is the suite's.
    sae = by_name["topk_k4_x2"]["auroc_k1"]
    assert sae.n == 3 and sae == result.suite.task_interval("topk_k4_x2", 1)
    assert result.suite.verdict(1) in verdict(result.suite, result.judge)

    # Detection is the mean over the latents scored in each feature folder's explanations.json.
    for name, row in by_name.items():
        stored = json.loads((tmp_path / "demo" / "features" / name / "explanations.json").read_text())
        scores = [v["scores"]["detection"] for v in stored["latents"].values()
                  if math.isfinite(v["scores"].get("detection", math.nan))]
        assert row["detection"] == pytest.approx(sum(scores) / len(scores))
    # The judge is checked against both controls before anything is read from it.
    assert result.judge.controls == (CONTROL, RANDOM_MODEL)
    assert ("no verdict" in result.judge.message) != result.judge.separates

    # The three seeds trained in one pass (one sweep folder); seed 0 stands for the recipe.
    trained = sorted(p.name for p in (tmp_path / "demo" / "sweep").glob("topk_*"))
    assert trained == [f"topk_k4_x2_s{i}" for i in range(3)] and not (tmp_path / "demo" / "seeds").exists()
    # The dashboard is the trained SAE's, and the control is the same size with other weights.
    sae = load_dictionary(tmp_path / "demo" / "sweep" / "topk_k4_x2_s0")
    dashboard = json.loads((result.dashboard.parent / "dashboard.json").read_text())
    assert dashboard["fingerprint"] == dictionary_fingerprint(sae)
    control = FeatureData.load(tmp_path / "demo" / "features" / CONTROL)
    assert control.n_latents == sae.config.d_sae and control.meta["fingerprint"] != dashboard["fingerprint"]

    summary = result.summary.read_text()
    assert headline_table(result.rows) in summary and verdict(result.suite, result.judge) in summary
    assert any(line.startswith("[demo] build the dashboard:") for line in lines)
