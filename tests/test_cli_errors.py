"""Every bad input to the CLI is one line on stderr, exit status 2, and leaves no new file.

One table of real commands against a real tiny model, store, dictionary and feature folder. A
case fails if the command raises (a traceback: exit 1), prints more than one line, exits with
another status, or creates, changes or leaves anything under the test's folders.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from monosemantic.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def made(tiny_model_dir, tmp_path_factory):
    """A tiny model, store, dictionary and feature folder, and a file where a folder is expected."""
    root = tmp_path_factory.mktemp("made")
    model = str(tiny_model_dir("llama"))
    store, run = root / "store", root / "run"
    for args in (["harvest", "--model", model, "--site", "blocks.1.resid_post", "--tokens", "4000", "--context", "64",
                  "--out", str(store)],
                 ["train", "--store", str(store), "--out", str(run), "--option", "k=8", "--expansion", "2",
                  "--tokens", "2048", "--batch-size", "256"],
                 ["features", str(run / "topk_k8_x2"), "--windows", "8", "--context", "64"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    (root / "afile").write_text("not a folder")
    return {"root": root, "model": model, "store": str(store), "dictionary": str(run / "topk_k8_x2"),
            "features": str(run / "topk_k8_x2" / "features"), "file": str(root / "afile")}


def _harvest(m, *more):
    return ["harvest", "--model", m["model"], "--site", "blocks.1.resid_post", "--tokens", "500", "--context", "64",
            "--out", str(m["root"] / "new-store"), *more]


def _train(m, *more, command="train"):
    return [command, "--store", m["store"], "--out", str(m["root"] / "new-run"), "--tokens", "2048",
            "--batch-size", "256", *(["--option", "k=8"] if command == "train" else []), *more]


# (what is wrong, the command as a function of the made things, a fragment the message must hold)
CASES = [
    ("a CUDA device that is not there", lambda m: _harvest(m, "--device", "cuda:99"), "cuda:99"),
    ("a device that is not a device", lambda m: _train(m, "--device", "gpu"), "not a device name"),
    ("negative threads", lambda m: _harvest(m, "--threads", "-1"), "threads=-1"),
    ("zero threads", lambda m: ["prompt", m["dictionary"], "def f():", "--threads", "0"], "threads=0"),
    ("an --out that is a file", lambda m: _harvest(m)[:-1] + [m["file"]], "is a file"),
    ("an --out inside a file", lambda m: _train(m)[:4] + [m["file"] + "/run"] + _train(m)[5:], "which is a file"),
    ("an --out that cannot be made", lambda m: _harvest(m)[:-1] + ["/proc/monosemantic/store"], "/proc/"),
    ("a context longer than the model allows", lambda m: _harvest(m, "--context", "100000"), "--context 256"),
    ("no tokens", lambda m: _harvest(m, "--tokens", "0"), "n_tokens=0"),
    ("a corpus that does not exist", lambda m: _harvest(m, "--corpus", str(m["root"] / "none.txt")), "does not exist"),
    ("an option value of the wrong type", lambda m: _train(m, "--option", "k=abc"), "k='abc'"),
    ("an option without a value", lambda m: _train(m, "--option", "k"), "NAME=VALUE"),
    ("an unknown option", lambda m: _train(m, "--option", "bogus=1"), "unknown option(s) bogus"),
    ("an expansion that is not a number", lambda m: _train(m, "--expansion", "nan"), "expansion nan"),
    ("a zero expansion", lambda m: _train(m, "--expansion", "0"), "expansion 0"),
    ("a negative learning rate", lambda m: _train(m, "--lr", "-1"), "lr=-1"),
    ("an unknown architecture", lambda m: _train(m, "--arch", "nope"), "unknown dictionary arch 'nope'"),
    ("training into an activation store", lambda m: _train(m)[:4] + [m["store"]] + _train(m)[5:],
     "is an activation store"),
    ("a store that is not a store", lambda m: _train(m)[:2] + [m["dictionary"]] + _train(m)[3:], "no activation store"),
    ("a zero expansion in a sweep", lambda m: _train(m, "--expansions", "0", "--sparsities", "8", command="sweep"),
     "expansion 0"),
    ("sparsities that are not numbers", lambda m: _train(m, "--sparsities", "abc", command="sweep"), "'abc'"),
    ("a negative port", lambda m: ["serve", m["features"], "--port", "-1"], "port -1"),
    ("a port above 65535", lambda m: ["serve", m["features"], "--port", "70000"], "port 70000"),
    ("an evaluation context longer than the model allows",
     lambda m: ["evaluate", m["dictionary"], "--context", "100000", "--out", str(m["root"] / "eval")], "100000"),
    ("no feature windows", lambda m: ["features", m["dictionary"], "--windows", "0", "--out", str(m["root"] / "f")],
     "n_windows=0"),
    ("a dashboard of a folder that is not feature data",
     lambda m: ["dashboard", m["dictionary"], "--out", str(m["root"] / "dash")], "not a feature folder"),
    ("a format that cannot be written",
     lambda m: ["convert", m["dictionary"], str(m["root"] / "converted"), "--to", "bogus"], "--to 'bogus'"),
    ("a convert destination that is a file", lambda m: ["convert", m["dictionary"], m["file"]], "DST"),
    ("a store path that holds no store", lambda m: ["store", m["dictionary"], "--verify"], "no activation store"),
    ("a latent that does not exist", lambda m: ["steer", m["dictionary"], "def f():", "--latent", "99999"],
     "latent 99999"),
]


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("case", [c[0] for c in CASES])
def test_a_bad_input_is_one_line_exit_2_and_no_new_file(made, case):
    _, command, fragment = next(c for c in CASES if c[0] == case)
    before = _tree(made["root"])
    result = runner.invoke(app, command(made))
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert fragment in lines[0], lines[0]
    assert _tree(made["root"]) == before


def test_a_full_disk_is_one_line_and_the_rerun_finishes(tiny_model_dir, tmp_path):
    # A file-size limit stands in for a full disk: the write fails the same way (EFBIG for ENOSPC).
    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))

    out = tmp_path / "store"
    args = ["harvest", "--model", str(tiny_model_dir("llama")), "--site", "blocks.1.resid_post", "--tokens", "50000",
            "--context", "64", "--out", str(out)]
    full = subprocess.run([sys.executable, "-c", "from monosemantic.cli import main; main()", *args],
                          preexec_fn=limited, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert full.returncode == 2, full.stderr[-2000:]
    errors = [line for line in full.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("error: could not write (File too large"), full.stderr[-2000:]
    assert "Traceback" not in full.stderr
    assert (out / "manifest.json").is_file()  # the harvest's state is kept for the rerun
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert runner.invoke(app, ["store", str(out), "--verify"]).exit_code == 0


@pytest.mark.parametrize("damage", ["truncated", "missing"])
def test_training_on_a_damaged_store_is_the_stores_one_line_error(made, tmp_path, damage):
    store = tmp_path / "store"
    shutil.copytree(made["store"], store)
    shard = store / "shard_00000.safetensors"
    if damage == "truncated":
        shard.write_bytes(shard.read_bytes()[:1000])
    else:
        shard.unlink()
    result = runner.invoke(app, ["train", "--store", str(store), "--out", str(tmp_path / "run"), "--option", "k=8",
                                 "--tokens", "2048", "--batch-size", "256"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "shard_00000.safetensors" in lines[0] and "re-harvest" in lines[0], result.stderr
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())  # nothing trained or saved
