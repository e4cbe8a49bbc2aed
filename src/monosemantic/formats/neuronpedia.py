"""Features in Neuronpedia's dashboard batch layout (SAEDashboard's ``batch-{n}.json``).

One file per batch of latents: ``{model_id, layer, sae_set, sae_id_suffix, features: [...]}``,
each feature with the fields Neuronpedia imports (``feature_index``, neuron alignment, logit
tables ``pos_str/pos_values/neg_str/neg_values``, ``frac_nonzero``, the activation histogram
``freq_hist_data_bar_*``, ``n_prompts_total``, ``n_tokens_in_prompt``, ``dataset``, ``vector``
and ``activations``: example contexts with ``bin_min``, ``bin_max``, ``bin_contains``, ``tokens``,
``values``, ``qualifying_token_index``).

The source is a :class:`monosemantic.features.FeatureData` (from ``analyze_features``) and the
dictionary it describes. Fields this analysis does not compute are written empty rather than
invented: correlated neurons/features, the logit histogram, ``decoder_weights_dist`` and the
``dfa_*`` attention fields. Example groups become activation bins: the top examples one bin
spanning their peak values, each quantile group one bin; ``bin_contains`` is the number of
examples shown from that bin. Token strings are written raw (JSON escapes them; Neuronpedia
renders them).
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import torch

from ..dictionaries import Dictionary
from ..errors import MonosemanticError
from ..features import dictionary_fingerprint
from .common import json_writer

N_NEURONS = 10


def neuronpedia_feature(features, dictionary: Dictionary, latent: int, *, dataset: str = "",
                        n_neurons: int = N_NEURONS) -> dict:
    """One feature's entry in a Neuronpedia batch (see the module docstring for the fields)."""
    row_D = dictionary.W_dec.detach()[latent].float().cpu()
    order = row_D.abs().argsort(descending=True)[:n_neurons]
    l1 = float(row_D.abs().sum()) or 1.0
    promoted, suppressed = features.logit_effects(latent)
    counts, edges = features.histogram(latent)
    meta = features.meta
    return {
        "feature_index": latent,
        "neuron_alignment_indices": order.tolist(),
        "neuron_alignment_values": row_D[order].tolist(),
        "neuron_alignment_l1": (row_D[order] / l1).tolist(),
        "correlated_neurons_indices": [], "correlated_neurons_l1": [], "correlated_neurons_pearson": [],
        "correlated_features_indices": [], "correlated_features_l1": [], "correlated_features_pearson": [],
        "neg_str": features.tokens_str([t for t, _ in suppressed]), "neg_values": [float(v) for _, v in suppressed],
        "pos_str": features.tokens_str([t for t, _ in promoted]), "pos_values": [float(v) for _, v in promoted],
        "frac_nonzero": float(features.density(latent)),
        "freq_hist_data_bar_values": [(a + b) / 2 for a, b in itertools.pairwise(edges)],
        "freq_hist_data_bar_heights": [float(c) for c in counts],
        "logits_hist_data_bar_values": [], "logits_hist_data_bar_heights": [],
        "n_prompts_total": int(meta.get("n_windows", 0)),
        "n_tokens_in_prompt": int(meta.get("context_length", 0)),
        "dataset": dataset,
        "decoder_weights_dist": [],
        "vector": row_D.tolist(),
        "activations": _activation_bins(features, latent),
    }


def _activation_bins(features, latent: int) -> list[dict]:
    groups = [features.top_examples(latent), *reversed(features.quantile_examples(latent))]
    rows = []
    for examples in groups:
        if not examples:
            continue
        peaks = [ex.acts[ex.peak] for ex in examples]
        for ex in examples:
            rows.append({"bin_min": float(min(peaks)), "bin_max": float(max(peaks)), "bin_contains": len(examples),
                         "tokens": features.tokens_str(list(ex.tokens)), "values": [float(v) for v in ex.acts],
                         "qualifying_token_index": int(ex.peak)})
    return rows


def export_neuronpedia(features, dictionary: Dictionary, folder: str | os.PathLike, *, model_id: str, layer: int,
                       sae_set: str, sae_id_suffix: str | None = None, latents: list[int] | None = None,
                       batch_size: int = 128, dataset: str = "") -> list[Path]:
    """Write ``batch-{n}.json`` files for ``latents`` (default: all) into ``folder``; returns their paths.

    ``model_id``, ``layer`` and ``sae_set`` form Neuronpedia's source id ``{layer}-{sae_set}``.
    """
    if features.n_latents != dictionary.d_sae:
        raise MonosemanticError(f"the feature data has {features.n_latents} latents but the dictionary has "
                                f"{dictionary.d_sae}; pass the dictionary the features were analysed with")
    fingerprint = features.meta.get("fingerprint")
    if fingerprint is not None and dictionary_fingerprint(dictionary) != fingerprint:
        raise MonosemanticError("the feature data was made with a different dictionary (fingerprints differ); "
                                "pass the dictionary the features were analysed with")
    latents = list(range(dictionary.d_sae)) if latents is None else [int(i) for i in latents]
    bad = [i for i in latents if not 0 <= i < dictionary.d_sae]
    if bad:
        raise MonosemanticError(f"latents {bad[:5]} are out of range; the dictionary has {dictionary.d_sae}")
    if batch_size < 1:
        raise MonosemanticError(f"batch_size must be >= 1; got {batch_size}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    with torch.no_grad():
        for n, start in enumerate(range(0, len(latents), batch_size)):
            batch = {"model_id": model_id, "layer": layer, "sae_set": sae_set, "sae_id_suffix": sae_id_suffix,
                     "features": [neuronpedia_feature(features, dictionary, i, dataset=dataset)
                                  for i in latents[start:start + batch_size]]}
            path = folder / f"batch-{n}.json"
            json_writer(batch)(path)
            paths.append(path)
    return paths
