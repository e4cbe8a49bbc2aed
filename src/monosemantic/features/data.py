"""What a feature analysis produces, and its folder on disk.

:class:`FeatureData` holds everything known about a dictionary's latents after one analysis
pass (:func:`monosemantic.features.analyze_features`): examples, histograms, logit effects,
input tokens. It is saved as one folder:

- ``features.json``: meta (dictionary config and fingerprint, model, site, settings, format);
- ``windows.safetensors``: the analysed token windows ``[W, S]``;
- ``latents.safetensors``: the per-latent tables (names below, each ``[F, ...]``);
- ``tokens.json``: ``{id: text}`` for every token id the tables or windows mention;
- ``explanations.json`` (optional): explanations and scores, see :func:`write_explanations`.

Every example's context is a slice of a stored window, so the tables keep only its window,
start and per-token activations. Nothing here needs the model or the dictionary.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

from ..errors import MonosemanticError
from ..folders import replacing_folder
from .explanations import read_explanations
from .folder import is_feature_folder, not_a_feature_folder

FORMAT = "monosemantic-features"
FORMAT_VERSION = 1

# Tensors of latents.safetensors (F latents; K top, Q quantiles x P per quantile, N negatives,
# C context tokens, H histogram bins, L logits, T input tokens). Window -1 marks an empty slot.
TABLES = (
    "fire_count_F", "act_sum_F", "max_F", "hist_counts_FH", "hist_top_F",
    "top_window_FK", "top_start_FK", "top_peak_FK", "top_value_FK", "top_acts_FKC",
    "quant_window_FQP", "quant_start_FQP", "quant_peak_FQP", "quant_acts_FQPC",
    "neg_window_FN", "neg_start_FN", "neg_acts_FNC",
    "logit_up_id_FL", "logit_up_FL", "logit_down_id_FL", "logit_down_FL",
    "input_id_FT", "input_count_FT", "input_mean_FT",
)


class Example(NamedTuple):
    """One context shown for a latent: a slice of an analysed window with the latent's activation per token."""

    window: int  # index of the window in FeatureData.windows
    start: int  # position in that window of tokens[0]
    tokens: list[int]  # token ids of the context shown (a slice around the peak, <= context_tokens long)
    acts: list[float]  # the latent's activation on each shown token (same length as tokens)
    peak: int  # index into tokens/acts of the selected token (the peak; for negatives: the middle)


def dictionary_fingerprint(dictionary) -> str:
    """sha256 over the dictionary's state_dict tensors (names and float32 bytes, in name order).

    Tensors an older save held that are no longer state (``retired_state``, e.g. the firing
    counters top-k dictionaries kept) count too, so folders made from that save still match it.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted({**dictionary.state_dict(), **dictionary.retired_state}.items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


class FeatureData:
    """Everything known about a dictionary's latents after one analysis pass; saved in one folder."""

    def __init__(self, meta: dict, windows: Tensor, tables: dict[str, Tensor], token_strings: dict[int, str],
                 folder: Path | None = None):
        missing = [name for name in TABLES if name not in tables]
        if missing:
            raise MonosemanticError(f"feature data lacks the tables {', '.join(missing)}; rerun the analysis")
        self.meta = meta  # JSON: dictionary config and fingerprint, model, site, settings, format
        self.windows = windows  # [W, S] int64 token ids of every analysed window
        self.tables = tables  # the per-latent tensors named in TABLES
        self.token_strings = token_strings  # id -> raw text of every id the tables mention
        self.folder = folder  # where it was loaded from or saved to (explanations live there)
        self.n_latents = int(tables["fire_count_F"].shape[0])
        self._explanations: dict | None = None

    # ----- tokens ---------------------------------------------------------------------------

    def token_str(self, token_id: int) -> str:
        """The token's text (raw, NOT escaped)."""
        try:
            return self.token_strings[int(token_id)]
        except KeyError:
            raise MonosemanticError(f"token id {token_id} does not occur in this feature data") from None

    def tokens_str(self, ids: list[int]) -> list[str]:
        return [self.token_str(i) for i in ids]

    # ----- per-latent numbers ---------------------------------------------------------------

    def _check(self, latent: int) -> int:
        if isinstance(latent, bool) or not isinstance(latent, int) or not 0 <= latent < self.n_latents:
            raise MonosemanticError(f"feature index {latent!r} is out of range: this dictionary has latents "
                                    f"0..{self.n_latents - 1}")
        return latent

    @property
    def n_tokens(self) -> int:
        return int(self.meta["n_tokens"])

    def density(self, latent: int) -> float:
        """Fraction of analysed tokens where the latent is > 0."""
        return float(self.tables["fire_count_F"][self._check(latent)]) / max(self.n_tokens, 1)

    def max_act(self, latent: int) -> float:
        return float(self.tables["max_F"][self._check(latent)])

    def mean_act(self, latent: int) -> float:
        """Mean over all analysed tokens."""
        return float(self.tables["act_sum_F"][self._check(latent)]) / max(self.n_tokens, 1)

    def histogram(self, latent: int) -> tuple[list[int], list[float]]:
        """(counts, edges) of the latent's positive activations: equal bins from 0 to a power of two just above
        its max (bins past the max left out); ``([], [0.0])`` for a latent that never fires."""
        counts_H = self.tables["hist_counts_FH"][self._check(latent)]
        if int(counts_H.sum()) == 0:
            return [], [0.0]
        top = float(self.tables["hist_top_F"][latent])
        n_bins = counts_H.shape[0]
        used = int(torch.nonzero(counts_H).max()) + 1
        edges = [top * i / n_bins for i in range(used + 1)]
        return [int(c) for c in counts_H[:used]], edges

    # ----- examples -------------------------------------------------------------------------

    def _example(self, window: int, start: int, acts_C: Tensor, peak: int) -> Example:
        tokens = self.windows[window, start:start + acts_C.shape[0]].tolist()
        return Example(window, start, tokens, [float(a) for a in acts_C.tolist()], peak)

    def top_examples(self, latent: int) -> list[Example]:
        """Highest peaks first (one per context chunk)."""
        t = self.tables
        f = self._check(latent)
        return [self._example(int(w), int(s), t["top_acts_FKC"][f, k], int(t["top_peak_FK"][f, k]))
                for k, (w, s) in enumerate(zip(t["top_window_FK"][f], t["top_start_FK"][f])) if w >= 0]

    def quantile_examples(self, latent: int) -> list[list[Example]]:
        """Random examples from equal intervals of (0, max], lowest interval first."""
        t = self.tables
        f = self._check(latent)
        window_QP, start_QP, peak_QP = t["quant_window_FQP"][f], t["quant_start_FQP"][f], t["quant_peak_FQP"][f]
        return [[self._example(int(window_QP[q, p]), int(start_QP[q, p]), t["quant_acts_FQPC"][f, q, p],
                               int(peak_QP[q, p])) for p in range(window_QP.shape[1]) if window_QP[q, p] >= 0]
                for q in range(window_QP.shape[0])]

    def negative_examples(self, latent: int) -> list[Example]:
        """Random context chunks where the latent is never > 0 (for latents that fire almost everywhere,
        topped up with the chunks of lowest peak)."""
        t = self.tables
        f = self._check(latent)
        return [self._example(int(w), int(s), t["neg_acts_FNC"][f, n], t["neg_acts_FNC"].shape[2] // 2)
                for n, (w, s) in enumerate(zip(t["neg_window_FN"][f], t["neg_start_FN"][f])) if w >= 0]

    # ----- tokens in and out ----------------------------------------------------------------

    def logit_effects(self, latent: int) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
        """(promoted, suppressed): (token_id, decoder row @ unembedding), most promoted / suppressed first."""
        t = self.tables
        f = self._check(latent)
        up = [(int(i), float(v)) for i, v in zip(t["logit_up_id_FL"][f], t["logit_up_FL"][f]) if i >= 0]
        down = [(int(i), float(v)) for i, v in zip(t["logit_down_id_FL"][f], t["logit_down_FL"][f]) if i >= 0]
        return up, down

    def top_input_tokens(self, latent: int) -> list[tuple[int, int, float]]:
        """(token_id, n_fires, mean act when firing), most fires first."""
        t = self.tables
        f = self._check(latent)
        return [(int(i), int(n), float(m))
                for i, n, m in zip(t["input_id_FT"][f], t["input_count_FT"][f], t["input_mean_FT"][f]) if i >= 0]

    def latent_order(self, by: str = "density") -> list[int]:
        """Latents sorted by ``density`` or ``max`` (highest first), or by ``index``."""
        if by == "index":
            return list(range(self.n_latents))
        if by not in ("density", "max"):
            raise MonosemanticError(f"cannot order latents by {by!r}; expected density, max or index")
        key_F = self.tables["fire_count_F" if by == "density" else "max_F"].double()
        return torch.sort(key_F, descending=True, stable=True).indices.tolist()

    # ----- explanations ---------------------------------------------------------------------

    def _latent_entry(self, latent: int) -> dict | None:
        self._check(latent)
        if self._explanations is None:
            self._explanations = read_explanations(self.folder) if self.folder is not None else {}
        return self._explanations.get("latents", {}).get(str(latent))

    def explanation(self, latent: int) -> str | None:
        entry = self._latent_entry(latent)
        return entry.get("explanation") if entry else None

    def score(self, latent: int) -> dict | None:
        entry = self._latent_entry(latent)
        return entry.get("scores") if entry else None

    def reload_explanations(self) -> None:
        """Forget cached explanations, so the next call reads explanations.json again."""
        self._explanations = None

    # ----- disk -----------------------------------------------------------------------------

    @classmethod
    def load(cls, folder) -> FeatureData:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        folder = Path(folder)
        if not is_feature_folder(folder):
            raise not_a_feature_folder(folder, "no features.json")
        try:
            meta = json.loads((folder / "features.json").read_text())
            if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                raise not_a_feature_folder(folder, "features.json is not feature meta")
            if int(meta.get("format_version", 0)) > FORMAT_VERSION:
                raise MonosemanticError(f"{folder} has feature format {meta['format_version']}; this monosemantic "
                                        f"reads up to {FORMAT_VERSION}; upgrade monosemantic")
            windows = load_file(folder / "windows.safetensors")["windows_WS"]
            tables = load_file(folder / "latents.safetensors")
            strings = {int(k): v for k, v in json.loads((folder / "tokens.json").read_text()).items()}
        except (OSError, ValueError, KeyError, SafetensorError) as e:
            if isinstance(e, MonosemanticError):
                raise
            first = str(e).splitlines()[0] if str(e) else ""
            raise not_a_feature_folder(folder, f"{type(e).__name__}: {first}") from None
        return cls(meta, windows, tables, strings, folder=folder)

    def save(self, folder) -> None:
        """Write the folder beside its final name, then swap it in (explanations.json is kept)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        if folder.exists() and not is_feature_folder(folder) and any(folder.iterdir()):
            raise MonosemanticError(f"{folder} exists and is not a feature folder; refusing to replace it; "
                                    "choose another --out")
        with replacing_folder(folder) as staging:
            (staging / "features.json").write_text(json.dumps(self.meta, indent=1, allow_nan=False))
            save_file({"windows_WS": self.windows.contiguous()}, staging / "windows.safetensors")
            save_file({k: v.contiguous() for k, v in self.tables.items()}, staging / "latents.safetensors")
            (staging / "tokens.json").write_text(json.dumps({str(k): v for k, v in sorted(self.token_strings.items())}))
            old = folder / "explanations.json"
            if old.is_file() and self._same_dictionary(folder):
                shutil.copy2(old, staging / "explanations.json")
        self.folder = folder
        self._explanations = None

    def _same_dictionary(self, folder: Path) -> bool:
        try:
            return json.loads((folder / "features.json").read_text()).get("fingerprint") == self.meta["fingerprint"]
        except (OSError, ValueError):
            return False
