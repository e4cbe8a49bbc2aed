"""One writer per output folder: a second harvest or train into a busy folder stops at once.

The writers here are real processes running the real CLI; the second one runs in this process
(CliRunner) while the first is still working, so it meets the lock.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from monosemantic.cli import app
from monosemantic.folders import replacing_folder
from monosemantic.locks import folder_lock, holds, lock_path

runner = CliRunner()
CLI = [sys.executable, "-c", "from monosemantic.cli import main; main()"]


def _start(args: list[str], folder: Path) -> subprocess.Popen:
    """The CLI in a child process, returned once it holds ``folder``'s lock."""
    child = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not lock_path(folder).exists():
        if child.poll() is not None:
            raise AssertionError(f"the first writer ended before taking the lock: {child.communicate()[1][-2000:]}")
        assert time.monotonic() < deadline, "the first writer never took the lock"
        time.sleep(0.01)
    return child


def _finish(child: subprocess.Popen) -> None:
    _, err = child.communicate(timeout=300)
    assert child.returncode == 0, err[-2000:]


def _refused(result, child: subprocess.Popen) -> None:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "is being written by another process" in lines[0], result.output
    assert f"pid {child.pid} on" in lines[0]
    assert child.poll() is None, "the first writer had finished: the second met no lock"


def test_two_harvests_into_one_folder_at_once(tiny_model_dir, tmp_path):
    model, out = str(tiny_model_dir("llama")), tmp_path / "store"
    first = _start(["harvest", "--model", model, "--site", "blocks.1.resid_post", "--tokens", "100000",
                    "--context", "64", "--out", str(out)], out)
    try:
        # Other settings into the same folder: without the lock its shards would mix with the first's.
        second = runner.invoke(app, ["harvest", "--model", model, "--site", "blocks.2.resid_post", "--tokens", "3000",
                                     "--out", str(out)])
        _refused(second, first)
    finally:
        _finish(first)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["settings"]["sites"] == ["blocks.1.resid_post"]
    assert runner.invoke(app, ["store", str(out), "--verify"]).exit_code == 0
    assert not lock_path(out).exists()  # released on exit


def test_two_trains_into_one_folder_at_once(tiny_model_dir, tmp_path):
    store, run = tmp_path / "store", tmp_path / "run"
    assert runner.invoke(app, ["harvest", "--model", str(tiny_model_dir("llama")), "--site", "blocks.1.resid_post",
                               "--tokens", "4000", "--context", "64", "--out", str(store)]).exit_code == 0
    train = ["train", "--store", str(store), "--out", str(run), "--arch", "topk", "--expansion", "2", "--option",
             "k=8", "--batch-size", "256"]
    first = _start([*train, "--tokens", "500000"], run)
    try:
        second = runner.invoke(app, [*train, "--tokens", "2048"])
        _refused(second, first)
    finally:
        _finish(first)
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 500000 // 256  # one writer's lines only


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path):
    folder = tmp_path / "run"
    child = subprocess.Popen([sys.executable, "-c", "import os, signal, sys\n"
                              "from monosemantic.locks import folder_lock\n"
                              "held = folder_lock(sys.argv[1], 'train')\n"
                              "held.__enter__()\n"
                              "os.kill(os.getpid(), signal.SIGKILL)\n", str(folder)])
    child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    assert json.loads(lock_path(folder).read_text())["pid"] == child.pid  # left behind
    with folder_lock(folder, "mine"):
        record = json.loads(lock_path(folder).read_text())
        assert (record["pid"], record["command"]) == (os.getpid(), "mine")
    assert not lock_path(folder).exists()


def test_a_held_lock_refuses_another_process_and_is_reentrant_here(tmp_path):
    folder = tmp_path / "out"
    probe = [sys.executable, "-c", "import sys\nfrom monosemantic.locks import folder_lock\n"
             "from monosemantic.errors import MonosemanticError\n"
             "try:\n    folder_lock(sys.argv[1]).__enter__()\nexcept MonosemanticError as e:\n"
             "    print(e)\n    sys.exit(2)\n", str(folder)]
    with folder_lock(folder, "harvest"):
        with folder_lock(folder):  # the same process again: a save inside a train command's folder
            assert holds(folder)
        assert holds(folder)
        refused = subprocess.run(probe, capture_output=True, text=True, timeout=60)
        assert refused.returncode == 2 and f"(`harvest`, pid {os.getpid()} on" in refused.stdout
    assert not holds(folder) and not lock_path(folder).exists()
    assert subprocess.run(probe, timeout=60).returncode == 0  # free again


def test_a_save_clears_what_killed_saves_left_and_restores_a_retired_folder(tmp_path):
    folder = tmp_path / "dict"
    folder.mkdir()
    (folder / "weights").write_text("v1")
    staging = tmp_path / ".dict.0123456789ab.saving"  # a save killed while writing
    staging.mkdir()
    (staging / "weights").write_text("torn")
    with replacing_folder(folder, "saving") as new:
        (new / "weights").write_text("v2")
    assert (folder / "weights").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dict"]

    # A kill between the two renames of a swap: only the retired previous version is left.
    retired = tmp_path / ".dict.aaaaaaaaaaaa.old"
    os.replace(folder, retired)
    (tmp_path / ".dict.bbbbbbbbbbbb.saving").mkdir()
    with pytest.raises(RuntimeError), replacing_folder(folder, "saving") as new:
        raise RuntimeError("this save fails too")
    assert (folder / "weights").read_text() == "v2"  # put back, not lost
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dict"]
