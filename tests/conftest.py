"""Shared fixtures: the real SmolLM2 tokenizer and tiny randomly initialised models.

Tiny models use SmolLM2's real tokenizer (vocabulary 49152), so text goes through the same
tokenisation path as in real use; their weights are random and built from a config, so they
cost nothing to make.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

VOCAB = 49152


def _tiny_config(family: str):
    from transformers import GemmaConfig, Gemma2Config, GPT2Config, GPTNeoXConfig, LlamaConfig

    common = dict(vocab_size=VOCAB, max_position_embeddings=256)
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
    """The folder of the converted embedded SmolLM2 (model and tokenizer), converted once."""
    from monosemantic.models import embedded_gguf
    from monosemantic.models.gguf_cache import converted_folder

    return converted_folder(embedded_gguf("smollm2-135m"))


@pytest.fixture(scope="session")
def smol_tokenizer(smol_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smol_tokenizer_dir)


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
