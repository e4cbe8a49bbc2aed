"""Dictionaries: sparse autoencoders and transcoders over language-model activations.

``make_dictionary("topk", d_in, d_sae, k=32)`` builds one; ``save_dictionary`` and
``load_dictionary_native`` store it as ``config.json`` + ``weights.safetensors``.
Architectures: relu, topk, batchtopk, jumprelu, gated, matryoshka, p_anneal, and crosscoder (one dictionary
over several sources: ``make_dictionary("crosscoder", d_in, d_sae, n_sources=2)``, inputs ``[N, S, D]``), and
transcoders at many layers at once (``transcoders``, ``clt``: MLP inputs ``[N, S, D]`` to MLP outputs).
"""

# Importing the architecture modules (relu, topk, batchtopk, matryoshka, jumprelu, gated,
# crosscoder, p_anneal) registers them.
from .base import Dictionary, DictionaryOutput, reconstruction_mse, require_single_site, sites_spanned
from .batchtopk import BatchTopKDictionary
from .config import FORMAT_VERSION, DictionaryConfig
from .crosscoder import Crosscoder
from .gated import GatedDictionary
from .io import load_dictionary_native, read_config, save_dictionary
from .jumprelu import JumpReLUDictionary
from .layered import CrossLayerTranscoder, LayeredTranscoder, PerLayerTranscoders
from .matryoshka import MatryoshkaDictionary
from .median import geometric_median
from .p_anneal import PAnnealDictionary
from .registry import ARCHITECTURES, architecture, dictionary_from_config, make_dictionary, register
from .relu import ReLUDictionary
from .step import LOCAL, BatchReduce, LossOutput, SparseCodes, StepInput, fired_latents, loss_terms
from .topk import TopKDictionary

__all__ = [
    "ARCHITECTURES", "FORMAT_VERSION", "LOCAL", "BatchReduce", "BatchTopKDictionary", "StepInput", "Crosscoder",
    "CrossLayerTranscoder", "LayeredTranscoder", "PerLayerTranscoders",
    "Dictionary", "DictionaryConfig", "DictionaryOutput", "GatedDictionary", "JumpReLUDictionary", "LossOutput",
    "MatryoshkaDictionary", "PAnnealDictionary", "ReLUDictionary", "SparseCodes", "TopKDictionary", "architecture",
    "dictionary_from_config", "geometric_median", "load_dictionary_native", "make_dictionary", "read_config",
    "fired_latents", "loss_terms", "reconstruction_mse", "register", "require_single_site", "save_dictionary",
    "sites_spanned",
]
