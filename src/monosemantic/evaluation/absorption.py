"""Feature absorption on the first-letter task (Chanin et al. 2024, "A is for Absorption").

A dictionary *absorbs* a feature when a latent that should fire ("starts with S") stays silent
on some tokens (" snake") because a more specific latent fires instead and carries the
feature in its decoder direction. Per letter, on held-out words:

1. a multinomial linear probe on the raw activations gives the ground-truth direction ``p``
   (its weights mapped back from standardised to activation space, unit length);
2. the *main latents*: the latent with the largest (mean on the letter's words - mean on the
   others) / std, then the next ones only while each raises the training F1 of a k-sparse
   probe on them by more than ``split_threshold`` (a feature split: several latents sharing
   the letter; up to ``max_main``);
3. *missed*: words the probe gets right (true positives) on which no main latent fires
   (code > 0; SAE codes are non-negative, for signed baseline codes it means a positive one);
4. *absorbed*: missed words on which the firing non-main latent with the largest contribution
   along the probe, code x (decoder row . p), has a decoder row with cosine >= ``cos_threshold``
   with ``p`` and contributes at least ``min_share`` of what the main latents contribute on the
   words where they fire (the median). That latent is the *absorbing* one. The share condition
   matters in high dimensions: among the dozens of latents firing on a word, one whose decoder
   has a cosine of 0.1 with ``p`` by chance is common, but it rarely writes as much of ``p`` as
   a real letter latent does.

``absorption_rate`` = absorbed / missed (the paper's reading; NaN when nothing is missed),
``absorption_fraction`` = absorbed / true positives (0 when nothing is missed). Absorption only
means something for a letter the dictionary has latents for: the means over letters count
only letters whose main latents classify it with test F1 >= ``min_main_f1`` (*measured*
letters; an untrained dictionary has none, and its means are NaN rather than a number).
Where the paper confirms an absorber by ablating it, this measure uses its decoder direction
only, which is why the cosine threshold is 0.1 rather than the paper's 0.025.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
from torch import Tensor

from ..dictionaries import Dictionary, require_single_site
from ..errors import MonosemanticError
from .features import check_rows, class_scores, columns, dictionary_codes, fit_logistic, top_features
from .results import Result
from .spelling import DEFAULT_PREFIX, LETTERS, first_letter_task, word_activations


@dataclass(frozen=True)
class AbsorptionConfig(Result):
    test_fraction: float
    cos_threshold: float  # least cosine of an absorbing latent's decoder row with the probe direction
    min_share: float  # least contribution along the probe, relative to the main latents' median
    split_threshold: float  # least training-F1 gain for another main latent (a feature split)
    max_main: int
    min_words: int  # letters with fewer training words are skipped
    min_main_f1: float  # letters whose main latents score below this are not in the means
    C: float
    max_iter: int
    seed: int
    task: dict  # where the words and activations came from (site, prefix, ...), {} when given


@dataclass(frozen=True)
class AbsorbedWord(Result):
    word: str
    latent: int  # the absorbing latent
    activation: float  # its code on the word
    cosine: float  # of its decoder row with the probe direction


@dataclass(frozen=True)
class LetterAbsorption(Result):
    letter: str
    n_train: int  # training words with this letter
    n_test: int
    main_latents: tuple[int, ...]
    main_cosines: tuple[float, ...]  # of their decoder rows with the probe direction
    main_contribution: float  # median code x (decoder row . p) of the main latents where they fire
    main_f1: float  # test F1 of a probe on the main latents
    firing_f1: float  # test F1 of "a main latent fires"
    probe_f1: float  # test F1 of the activation probe
    n_true_positives: int
    n_missed: int  # true positives on which no main latent fires
    n_absorbed: int
    absorption_rate: float  # absorbed / missed
    absorption_fraction: float  # absorbed / true positives
    measured: bool  # main_f1 >= min_main_f1: the letter counts in the means
    absorbing_latents: tuple[tuple[int, int], ...]  # (latent, words absorbed), most first
    examples: tuple[AbsorbedWord, ...]


@dataclass(frozen=True)
class AbsorptionResult(Result):
    config: AbsorptionConfig
    dictionary: dict
    n_train: int
    n_test: int
    probe_accuracy: float  # test accuracy of the multinomial activation probe
    n_measured: int  # letters counted in the means
    mean_absorption_rate: float  # over measured letters where it is defined
    mean_absorption_fraction: float  # over measured letters
    mean_main_f1: float  # over all letters
    letters: tuple[LetterAbsorption, ...]

    def letter(self, letter: str) -> LetterAbsorption:
        for entry in self.letters:
            if entry.letter == letter:
                return entry
        raise MonosemanticError(f"letter {letter!r} was not measured; measured: "
                                f"{''.join(e.letter for e in self.letters)}")


def absorption(lm, dictionary: Dictionary, site: str | None = None, *, prefix: str = DEFAULT_PREFIX,
               leading_space: bool | None = True, min_length: int = 2, max_per_letter: int | None = 200,
               batch_size: int = 256, **options) -> AbsorptionResult:
    """Absorption of ``dictionary`` (reading ``site``, default its config's) on ``lm``'s vocabulary words.

    ``options`` go to :func:`measure_absorption` (thresholds, split, probe settings).
    """
    site = site or dictionary.config.site_in
    if site is None:
        raise MonosemanticError(f"the {dictionary.config.arch} dictionary's config names no site; pass "
                                "site='blocks.L.kind'")
    seed = options.get("seed", 0)
    token_ids_N, letters_N, words = first_letter_task(lm.tokenizer, leading_space=leading_space,
                                                      min_length=min_length, max_per_letter=max_per_letter, seed=seed)
    acts_ND = word_activations(lm, site, token_ids_N, prefix=prefix, batch_size=batch_size)
    task = {"site": lm.site(site).name, "model": lm.describe(), "prefix": prefix, "leading_space": leading_space,
            "min_length": min_length, "max_per_letter": max_per_letter, "n_words": len(words)}
    return measure_absorption(dictionary, acts_ND, letters_N, words, task=task, **options)


def measure_absorption(dictionary: Dictionary, acts_ND: Tensor, letters_N: Tensor, words, *,
                       classes=LETTERS, test_fraction: float = 0.3, cos_threshold: float = 0.1,
                       min_share: float = 0.5, split_threshold: float = 0.03, max_main: int = 3, min_words: int = 10,
                       min_main_f1: float = 0.5, C: float = 1.0,
                       max_iter: int = 500, n_examples: int = 5, seed: int = 0,
                       task: dict | None = None) -> AbsorptionResult:
    """Absorption from given activations: ``letters_N`` class indices into ``classes``, ``words`` their text."""
    config = _config(test_fraction, cos_threshold, min_share, split_threshold, max_main, min_words, min_main_f1, C,
                     max_iter, seed, task)
    check_rows(acts_ND, letters_N)
    _check_dictionary(dictionary, acts_ND, words)
    _check_letters(letters_N, classes)
    order = np.random.default_rng(seed).permutation(acts_ND.shape[0])
    n_test = max(1, round(test_fraction * order.size))
    test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
    y_N = letters_N.cpu().numpy()
    x_N_D = acts_ND.detach().float().cpu().numpy()
    probe = fit_logistic(x_N_D[train], y_N[train], C=C, max_iter=max_iter)
    pred_test = probe.predict(x_N_D[test])
    directions = _probe_directions(probe)
    codes = dictionary_codes(dictionary, acts_ND)
    split = _Data(codes[train], codes[test], y_N[train], y_N[test], pred_test, [words[i] for i in test])
    decoder_FD = dictionary.W_dec.detach().double().cpu().numpy()
    scores_CF = class_scores(split.codes_train, split.y_train, probe.classes_, signed=True)
    letters = [_letter(split, c, str(classes[c]), scores_CF[i], directions[c], decoder_FD, config, n_examples)
               for i, c in enumerate(probe.classes_) if (split.y_train == c).sum() >= min_words]
    return AbsorptionResult(
        config=config, dictionary=dictionary.config.to_dict(), n_train=train.size, n_test=test.size,
        probe_accuracy=float((pred_test == split.y_test).mean()),
        n_measured=sum(e.measured for e in letters),
        mean_absorption_rate=_nanmean([e.absorption_rate for e in letters if e.measured]),
        mean_absorption_fraction=_nanmean([e.absorption_fraction for e in letters if e.measured]),
        mean_main_f1=_nanmean([e.main_f1 for e in letters]), letters=tuple(letters))


class _Data:
    """Codes, letters and probe predictions of the train and test words."""

    def __init__(self, codes_train, codes_test, y_train: np.ndarray, y_test: np.ndarray, pred_test: np.ndarray,
                 words_test: list[str]):
        self.codes_train, self.codes_test, self.y_train, self.y_test = codes_train, codes_test, y_train, y_test
        self.pred_test, self.words_test = pred_test, words_test


def _probe_directions(probe) -> dict[int, np.ndarray]:
    """Unit probe direction per class in activation space: weights / feature scale (standardised by scale)."""
    scaler, model = probe[0], probe[-1]
    coef_CD = model.coef_ / scaler.scale_[None, :]
    if coef_CD.shape[0] == 1:  # two classes: sklearn keeps one row, for the second class
        coef_CD = np.concatenate([-coef_CD, coef_CD])
    unit_CD = coef_CD / np.maximum(np.linalg.norm(coef_CD, axis=1, keepdims=True), 1e-12)
    return {int(c): unit_CD[i] for i, c in enumerate(model.classes_)}


def _letter(data: _Data, c: int, letter: str, scores_F: np.ndarray, p_D: np.ndarray, decoder_FD: np.ndarray,
            config: AbsorptionConfig, n_examples: int) -> LetterAbsorption:
    truth_train, truth_test = data.y_train == c, data.y_test == c
    main = _main_latents(data.codes_train, truth_train, scores_F, config)
    model = fit_logistic(columns(data.codes_train, main), truth_train, C=config.C, max_iter=config.max_iter)
    main_codes_NK = columns(data.codes_test, main)
    fires_N = np.any(main_codes_NK > 0, axis=1)  # the function, not the method: numpy types it [N], not maybe-scalar
    along_F = decoder_FD @ p_D
    cosine_F = along_F / np.maximum(np.linalg.norm(decoder_FD, axis=1), 1e-12)
    main_along_N = np.maximum(main_codes_NK, 0) @ along_F[main]
    typical = float(np.median(main_along_N[fires_N & truth_test])) if (fires_N & truth_test).any() else math.nan
    true_positive_N = truth_test & (data.pred_test == c)
    missed = np.flatnonzero(true_positive_N & ~fires_N)
    least = config.min_share * typical if typical > 0 else 0.0  # main latents that write no p: any positive share
    absorbed = _absorbed(data, missed, main, along_F, cosine_F, config.cos_threshold, least)
    n_tp, n_missed = int(true_positive_N.sum()), int(missed.size)
    main_f1 = _f1(truth_test, model.predict(main_codes_NK).astype(bool))
    return LetterAbsorption(
        letter=letter, n_train=int(truth_train.sum()), n_test=int(truth_test.sum()),
        main_latents=tuple(int(f) for f in main), main_cosines=tuple(float(cosine_F[f]) for f in main),
        main_contribution=typical,
        main_f1=main_f1, firing_f1=_f1(truth_test, fires_N),
        probe_f1=_f1(truth_test, data.pred_test == c), n_true_positives=n_tp, n_missed=n_missed,
        n_absorbed=len(absorbed), absorption_rate=len(absorbed) / n_missed if n_missed else math.nan,
        absorption_fraction=len(absorbed) / n_tp if n_tp else math.nan,
        measured=bool(main_f1 >= config.min_main_f1),  # False for NaN too
        absorbing_latents=tuple(Counter(a.latent for a in absorbed).most_common()),
        examples=tuple(absorbed[:n_examples]))


def _main_latents(codes_train, truth_N: np.ndarray, scores_F: np.ndarray, config: AbsorptionConfig) -> np.ndarray:
    """The best-separating latent, plus the next ones while each adds > split_threshold training F1."""
    ranked = top_features(scores_F, config.max_main)
    best_f1, k = -1.0, 0
    for candidate in range(1, ranked.size + 1):
        chosen = ranked[:candidate]
        model = fit_logistic(columns(codes_train, chosen), truth_N, C=config.C, max_iter=config.max_iter)
        f1 = _f1(truth_N, model.predict(columns(codes_train, chosen)).astype(bool))
        if candidate > 1 and not f1 - best_f1 > config.split_threshold:
            break
        best_f1, k = f1, candidate
    return ranked[:k]


def _absorbed(data: _Data, missed: np.ndarray, main: np.ndarray, along_F: np.ndarray, cosine_F: np.ndarray,
              cos_threshold: float, least: float) -> list[AbsorbedWord]:
    """The missed words whose top contributor along the probe is a latent aligned with it."""
    if missed.size == 0:
        return []
    codes_MF = data.codes_test[missed]
    codes_MF = np.asarray(codes_MF.todense() if hasattr(codes_MF, "todense") else codes_MF, dtype=np.float64)
    contribution_MF = np.where(codes_MF > 0, codes_MF * along_F[None, :], -np.inf)
    contribution_MF[:, main] = -np.inf
    best_M = contribution_MF.argmax(axis=1)
    found = []
    for row, (m, f) in enumerate(zip(missed.tolist(), best_M.tolist())):
        if contribution_MF[row, f] > max(least, 0.0) and cosine_F[f] >= cos_threshold:
            found.append(AbsorbedWord(word=data.words_test[m], latent=int(f), activation=float(codes_MF[row, f]),
                                      cosine=float(cosine_F[f])))
    return found


def _f1(truth_N: np.ndarray, pred_N: np.ndarray) -> float:
    tp, wrong = int((truth_N & pred_N).sum()), int((truth_N ^ pred_N).sum())
    return 2 * tp / (2 * tp + wrong) if 2 * tp + wrong else math.nan


def _nanmean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def _check_dictionary(dictionary: Dictionary, acts_ND: Tensor, words) -> None:
    require_single_site(dictionary, "absorption")
    if dictionary.config.is_transcoder:
        raise MonosemanticError(f"absorption compares decoder rows with a probe in the input space, so it needs an "
                                f"autoencoder; got a {dictionary.config.arch} transcoder")
    if len(words) != acts_ND.shape[0]:
        raise MonosemanticError(f"got {len(words)} words for {acts_ND.shape[0]} activation rows; expected one word "
                                "per row")


def _check_letters(letters_N: Tensor, classes) -> None:
    if letters_N.numel() and (int(letters_N.min()) < 0 or int(letters_N.max()) >= len(classes)):
        raise MonosemanticError(f"letters must be class indices in [0, {len(classes)}); got values from "
                                f"{int(letters_N.min())} to {int(letters_N.max())}; index into classes (LETTERS)")


def _config(test_fraction, cos_threshold, min_share, split_threshold, max_main, min_words, min_main_f1, C, max_iter,
            seed, task) -> AbsorptionConfig:
    if not 0 < test_fraction < 1:
        raise MonosemanticError(f"test_fraction={test_fraction!r} is invalid; expected a fraction in (0, 1), e.g. 0.3")
    if not -1 <= cos_threshold <= 1:
        raise MonosemanticError(f"cos_threshold={cos_threshold!r} is invalid; expected a cosine in [-1, 1], e.g. 0.1")
    for name, value in (("max_main", max_main), ("min_words", min_words), ("max_iter", max_iter)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise MonosemanticError(f"{name}={value!r} is invalid; expected a positive integer")
    if not min_share >= 0:
        raise MonosemanticError(f"min_share={min_share!r} is invalid; expected a share >= 0, e.g. 0.5")
    return AbsorptionConfig(test_fraction=float(test_fraction), cos_threshold=float(cos_threshold),
                            min_share=float(min_share),
                            split_threshold=float(split_threshold), max_main=max_main, min_words=min_words,
                            min_main_f1=float(min_main_f1),
                            C=float(C), max_iter=max_iter, seed=seed, task=dict(task or {}))
