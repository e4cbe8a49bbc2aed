"""Shared fixtures: the real SmolLM2 tokenizer and tiny randomly initialised models.

Tiny models use SmolLM2's real tokenizer (vocabulary 49152), so text goes through the same
tokenisation path as in real use; their weights are random and built from a config, so they
cost nothing to make.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The suite must never write into the user's home: our converted-model cache, Hugging Face
# datasets' cache and locks, matplotlib's font cache and Chromium's profile files would all land
# under ~/.cache or ~/.config. Everything is pointed at one folder for the session, removed at
# its end. This runs at conftest import, before test modules import datasets or matplotlib,
# which read their folders once at import. Explicit XDG_*/HF_* settings of the user are
# overridden too, since they usually point into the home as well.
SESSION_HOME = Path(tempfile.mkdtemp(prefix="monosemantic-tests-"))
os.environ.update({
    "HOME": str(SESSION_HOME),
    "XDG_CACHE_HOME": str(SESSION_HOME / ".cache"),
    "XDG_CONFIG_HOME": str(SESSION_HOME / ".config"),
    "XDG_DATA_HOME": str(SESSION_HOME / ".local" / "share"),
    "MONOSEMANTIC_CACHE": str(SESSION_HOME / ".cache" / "monosemantic"),
    "HF_HOME": str(SESSION_HOME / ".cache" / "huggingface"),
    "HF_DATASETS_CACHE": str(SESSION_HOME / ".cache" / "huggingface" / "datasets"),
    "MPLCONFIGDIR": str(SESSION_HOME / ".config" / "matplotlib"),
})


def pytest_unconfigure(config):
    # The converted SmolLM2 alone is ~0.5 GB; a session's folder is of no use after it.
    shutil.rmtree(SESSION_HOME, ignore_errors=True)


import pytest  # noqa: E402 -- after the environment above, which libraries read at import
import torch  # noqa: E402

VOCAB = 49152


def _tiny_config(family: str):
    from transformers import Gemma2Config, GemmaConfig, GPT2Config, GPTNeoXConfig, LlamaConfig

    common: dict[str, Any] = dict(vocab_size=VOCAB, max_position_embeddings=256)
    if family == "llama":
        return LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                           num_key_value_heads=2, tie_word_embeddings=True, **common)
    if family == "gpt2":
        return GPT2Config(vocab_size=VOCAB, n_positions=256, n_embd=64, n_layer=4, n_head=4)
    if family == "gpt_neox":
        return GPTNeoXConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                             **common)
    if family == "gemma":
        return GemmaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                           num_key_value_heads=1, head_dim=16, **common)
    if family == "gemma2":
        return Gemma2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                            num_key_value_heads=2, head_dim=16, **common)
    raise KeyError(family)


TINY_FAMILIES = ("llama", "gpt2", "gpt_neox", "gemma", "gemma2")


@contextmanager
def torch_threads(n: int):
    """Run a block with ``n`` torch threads, restoring the previous count after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models and small problems gain nothing from more threads, and on a shared 2-core machine
    OpenMP threads stall each other; modules opt in with ``pytestmark``."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def smol_tokenizer_dir():
    """The folder of the converted embedded SmolLM2 (model and tokenizer), converted once a session
    into the session's cache (~18 s here); slow tests only."""
    from monosemantic.models import embedded_gguf
    from monosemantic.models.gguf_cache import converted_folder

    return converted_folder(embedded_gguf("smollm2-135m"))


@pytest.fixture(scope="session")
def smol_tokenizer():
    """SmolLM2's tokenizer read straight from the embedded GGUF (~4 s). The conversion saves this
    same tokenizer; reading it here spares the fast tests the whole model's conversion."""
    from transformers import AutoTokenizer

    from monosemantic.models import embedded_gguf

    gguf = embedded_gguf("smollm2-135m")
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, smol_tokenizer):
    """A factory: ``tiny_model_dir("llama")`` is a folder with a saved tiny random model."""
    from transformers import AutoModelForCausalLM

    made = {}

    def make(family: str):
        if family not in made:
            torch.manual_seed(0)
            model = AutoModelForCausalLM.from_config(_tiny_config(family))
            folder = tmp_path_factory.mktemp(f"tiny-{family}")
            model.save_pretrained(folder)
            smol_tokenizer.save_pretrained(folder)
            made[family] = folder
        return made[family]

    return make


@pytest.fixture(scope="session")
def smollm2():
    """The real embedded SmolLM2-135M (slow tests only)."""
    from monosemantic.models import load_model

    return load_model("smollm2-135m")


class Interrupted(Exception):
    """What :class:`StopsAfter` raises: a run stopping mid-way, as a killed one would."""


class StopsAfter:
    """A batch source that fails at training step ``n`` (a run interrupted between checkpoints).

    A fresh Trainer first reads a sample (scales, decoder bias) through one ``batches`` call;
    the training steps come from the next call, whose ``n``-th batch raises.
    """

    def __init__(self, source, n: int, sample_calls: int = 1):
        self.source, self.n, self.layout = source, n, source.layout
        self.calls_left = sample_calls

    def batches(self, batch_size, *, seed, start_step=0):
        sampling, self.calls_left = self.calls_left > 0, self.calls_left - 1
        for i, batch in enumerate(self.source.batches(batch_size, seed=seed, start_step=start_step)):
            if i == self.n and not sampling:
                raise Interrupted
            yield batch
