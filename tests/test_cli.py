"""The command line, run in-process through typer's runner on tiny models."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from monosemantic.activations import ActivationStore
from monosemantic.cli import app

runner = CliRunner()


def test_sites_lists_block_sites_with_widths(tiny_model_dir):
    result = runner.invoke(app, ["sites", str(tiny_model_dir("gpt_neox"))])
    assert result.exit_code == 0, result.output
    assert "GPTNeoXForCausalLM, 4 layers, d_model 64" in result.output
    assert "blocks.3.mlp_hidden [128]" in result.output and "blocks.0.resid_pre [64]" in result.output


def test_harvest_then_describe_and_verify(tiny_model_dir, tmp_path):
    out = tmp_path / "store"
    args = ["harvest", "--model", str(tiny_model_dir("llama")), "--site", "blocks.1.resid_post",
            "--site", "blocks.2.mlp_hidden", "--tokens", "3000", "--context", "64", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    store = ActivationStore(out)
    assert len(store) == 3000 and store.width("blocks.2.mlp_hidden") == 128
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is True
    result = runner.invoke(app, ["store", str(out), "--verify"])
    assert result.exit_code == 0, result.output
    assert "3,000 rows" in result.output and "verified: the shard list, rows" in result.output


def test_bad_input_is_one_line_and_exit_2(tiny_model_dir, tmp_path):
    result = runner.invoke(app, ["harvest", "--model", str(tiny_model_dir("llama")), "--site", "blocks.7.resid_post",
                                 "--tokens", "100", "--out", str(tmp_path / "s")])
    assert result.exit_code == 2
    assert result.output.strip().startswith("error: layer 7 in site 'blocks.7.resid_post' is out of range")
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").iterdir())


def _tiny_store(tiny_model_dir, tmp_path):
    out = tmp_path / "store"
    result = runner.invoke(app, ["harvest", "--model", str(tiny_model_dir("llama")), "--site", "blocks.1.resid_post",
                                 "--tokens", "4000", "--context", "64", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_train_and_sweep_from_a_store(tiny_model_dir, tmp_path):
    from monosemantic.dictionaries import load_dictionary_native

    store = _tiny_store(tiny_model_dir, tmp_path)
    result = runner.invoke(app, ["train", "--store", str(store), "--out", str(tmp_path / "run"), "--arch", "topk",
                                 "--expansion", "2", "--option", "k=8", "--tokens", "2048", "--batch-size", "256"])
    assert result.exit_code == 0, result.output
    assert "trained 1 dictionary for 8 steps (2,048 tokens)" in result.output
    sae = load_dictionary_native(tmp_path / "run" / "topk_k8_x2")
    assert (sae.config.d_in, sae.config.d_sae, sae.config.options["k"]) == (64, 128, 8)
    assert sae.config.site_in == "blocks.1.resid_post"

    result = runner.invoke(app, ["sweep", "--store", str(store), "--out", str(tmp_path / "grid"), "--arch", "topk",
                                 "--expansions", "1,2", "--sparsities", "4,8", "--tokens", "1024",
                                 "--batch-size", "256"])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (tmp_path / "grid").iterdir() if (p / "config.json").is_file())
    assert names == ["topk_k4_x1", "topk_k4_x2", "topk_k8_x1", "topk_k8_x2"]


def test_train_errors_are_one_line(tiny_model_dir, tmp_path):
    store = _tiny_store(tiny_model_dir, tmp_path)
    base = ["train", "--store", str(store), "--out", str(tmp_path / "run"), "--tokens", "512", "--batch-size", "128"]
    for extra, message in [(["--arch", "nope"], "unknown dictionary arch 'nope'; expected one of"),
                           (["--option", "k"], "not of the form NAME=VALUE"),
                           (["--arch", "topk", "--option", "k=1000"], "k=1000")]:
        result = runner.invoke(app, base + extra)
        assert result.exit_code == 2, result.output
        assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_evaluate_writes_a_report_against_baselines_and_compare_prints_mmcs(tiny_model_dir, tmp_path):
    store = _tiny_store(tiny_model_dir, tmp_path)
    for k in ("4", "8"):
        result = runner.invoke(app, ["train", "--store", str(store), "--out", str(tmp_path / f"run{k}"), "--arch",
                                     "topk", "--expansion", "2", "--option", f"k={k}", "--tokens", "2048",
                                     "--batch-size", "256"])
        assert result.exit_code == 0, result.output
    sae = tmp_path / "run8" / "topk_k8_x2"
    result = runner.invoke(app, ["evaluate", str(sae), "--windows", "24", "--context", "64",
                                 "--tasks", "reconstruction"])
    assert result.exit_code == 2 and "2,000" in result.output  # too few tokens for the statistics, with the count
    result = runner.invoke(app, ["evaluate", str(sae), "--windows", "24", "--context", "64", "--min-tokens", "1000",
                                 "--tasks", "reconstruction,splice,probing", "--out", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    names = {entry["name"] for entry in report["results"]}
    assert {"topk_k8_x2", "neurons", "pca", "ica", "untrained", "token categories"} <= names
    neurons = next(e for e in report["results"] if e["name"] == "neurons" and e["kind"] == "ReconstructionResult")
    assert abs(neurons["result"]["fvu"]) < 1e-5  # the neuron basis reconstructs exactly
    markdown = (tmp_path / "eval" / "report.md").read_text()
    assert "## Probing" in markdown and "| comment |" in markdown  # classes by their Python token names

    result = runner.invoke(app, ["compare", str(tmp_path / "run4" / "topk_k4_x2"), str(sae)])
    assert result.exit_code == 0, result.output
    assert "MMCS topk_k4_x2 -> topk_k8_x2" in result.output and "novel" in result.output
    result = runner.invoke(app, ["compare", str(sae), str(sae)])
    assert "symmetric: 1.0000" in result.output
