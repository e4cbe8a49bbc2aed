"""Feature absorption: exact on a constructed dictionary that absorbs "starts with s" into a "snake" latent."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import PreTrainedTokenizerBase

from conftest import TINY_FAMILIES
from monosemantic.dictionaries import make_dictionary
from monosemantic.errors import MonosemanticError
from monosemantic.evaluation import LETTERS, absorption, first_letter_task, measure_absorption, word_activations
from monosemantic.models import load_model

pytestmark = pytest.mark.usefixtures("one_thread")


SITE = "blocks.1.resid_post"
D = 24
S_LATENT, SNAKE_LATENT, ANIMAL_LATENT = 1, 3, 4


def _absorbing_case(n_per_letter=300, n_snake=9, seed=0):
    """Words starting with a, s, t; the first ``n_snake`` s-words are snakes.

    Activations: 3 x (the letter's direction) + unrelated content; a snake also carries a
    "snake" and an "animal" direction. The dictionary has one latent per letter, but the s
    latent is switched off by the snake direction, and a snake latent, whose decoder row
    writes "starts with s" (half of it), fires instead: absorption, on exactly the snakes.
    An animal latent also fires on snakes, louder, writing nothing about the letter.
    """
    g = torch.Generator().manual_seed(seed)
    basis_DD, _ = torch.linalg.qr(torch.randn(D, D, generator=g))
    e = {name: basis_DD[:, i] for i, name in enumerate(["a", "s", "t", "snake", "animal"])}
    rows, letters, words = [], [], []
    for letter in "ast":
        for i in range(n_per_letter):
            snake = letter == "s" and i < n_snake
            x_D = 3 * e[letter] + basis_DD[:, 5:] @ torch.randn(D - 5, generator=g)
            rows.append(x_D + (3 * e["snake"] + 2 * e["animal"] if snake else 0))
            letters.append(LETTERS.index(letter))
            words.append(f" snake{i}" if snake else f" {letter}word{i}")
    latents = {0: (e["a"], -1.0, e["a"]), S_LATENT: (e["s"] - 2 * e["snake"], -1.0, e["s"]), 2: (e["t"], -1.0, e["t"]),
               SNAKE_LATENT: (e["snake"], -1.0, e["s"] + e["snake"]), ANIMAL_LATENT: (e["animal"], -0.5, e["animal"])}
    sae = make_dictionary("relu", D, 8, l1_coeff=1.0)
    with torch.no_grad():
        sae.b_dec.zero_()
        for f in range(8):
            noise_D = basis_DD[:, 5:] @ torch.randn(D - 5, generator=g)  # latents 5-7 read unrelated content
            enc_D, bias, dec_D = latents.get(f, (noise_D / noise_D.norm(), 0.0, noise_D))
            sae.W_enc[:, f], sae.b_enc[f], sae.W_dec[f] = enc_D, bias, dec_D / dec_D.norm()
    return sae, torch.stack(rows), torch.tensor(letters), tuple(words)


def test_absorption_is_found_exactly_on_the_absorbed_words():
    sae, x_ND, letters_N, words = _absorbing_case()
    result = measure_absorption(sae, x_ND, letters_N, words, test_fraction=0.5, n_examples=20)
    assert [e.letter for e in result.letters] == ["a", "s", "t"] and result.probe_accuracy == 1.0
    s = result.letter("s")
    assert s.main_latents == (S_LATENT,) and s.main_cosines[0] > 0.5
    # Every held-out s-word is a probe true positive (probe F1 1), the s latent fires on all but
    # the snakes, and every miss is absorbed by the snake latent: missed = absorbed = the held-out snakes.
    assert s.probe_f1 == 1.0 and s.n_true_positives == s.n_test
    assert 2 <= s.n_missed == s.n_absorbed == len(s.examples) <= 9
    assert len({a.word for a in s.examples}) == s.n_absorbed
    assert all(a.word.startswith(" snake") and a.latent == SNAKE_LATENT for a in s.examples)
    assert s.absorbing_latents == ((SNAKE_LATENT, s.n_absorbed),)
    assert all(a.activation == pytest.approx(2.0) for a in s.examples)  # 3 x snake - bias 1
    # Its decoder row is (s + snake) / sqrt 2; the probe mostly reads s: a cosine of about 0.6.
    assert 0.3 < s.examples[0].cosine < 0.9
    assert s.absorption_rate == 1.0 and s.absorption_fraction == pytest.approx(s.n_absorbed / s.n_true_positives)
    assert s.firing_f1 < 1.0 and s.measured
    for letter in "at":
        clean = result.letter(letter)
        assert clean.n_missed == clean.n_absorbed == 0 and math.isnan(clean.absorption_rate)
        assert clean.absorption_fraction == 0.0 and clean.main_f1 == 1.0
    assert result.n_measured == 3 and result.mean_absorption_rate == 1.0  # the only letter with misses
    payload = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert payload["letters"][0]["absorption_rate"] is None and payload["config"]["task"] == {}


def test_a_common_snake_is_a_feature_split_not_absorption():
    # Snakes are 40% of s-words: the snake latent raises the k-sparse F1 by far more than the
    # split threshold, so it joins the s latent as a main latent and nothing is absorbed.
    sae, x_ND, letters_N, words = _absorbing_case(n_snake=120)
    s = measure_absorption(sae, x_ND, letters_N, words, test_fraction=0.5).letter("s")
    assert set(s.main_latents) == {S_LATENT, SNAKE_LATENT}
    assert s.n_missed == s.n_absorbed == 0 and s.firing_f1 == 1.0


def test_weakly_aligned_absorbers_are_not_counted():
    sae, x_ND, letters_N, words = _absorbing_case()
    # The snake latent's decoder row has cosine ~0.6 with the probe: above 0.95, nothing qualifies.
    s = measure_absorption(sae, x_ND, letters_N, words, test_fraction=0.5, cos_threshold=0.95).letter("s")
    assert s.n_missed >= 2 and s.n_absorbed == 0 and s.absorption_rate == 0.0


def test_first_letter_task_from_the_vocabulary(smol_tokenizer):
    token_ids_N, letters_N, words = first_letter_task(smol_tokenizer, max_per_letter=30)
    assert len(words) == token_ids_N.numel() == letters_N.numel()
    assert all(w.startswith(" ") and w[1:].isascii() and w[1:].isalpha() and len(w) >= 3 for w in words)
    assert [LETTERS[c] for c in letters_N.tolist()] == [w[1].lower() for w in words]
    assert [smol_tokenizer.decode([i]) for i in token_ids_N[:20].tolist()] == list(words[:20])
    counts = torch.bincount(letters_N, minlength=26)
    assert counts.max() == 30 and (counts > 0).sum() == 26  # capped per letter; even x, q and z are there
    no_space = first_letter_task(smol_tokenizer, leading_space=False, max_per_letter=5)[2]
    assert all(not w.startswith(" ") for w in no_space)


def test_absorption_runs_on_a_tiny_model(tiny_model_dir):
    lm = load_model(str(tiny_model_dir("llama")))
    sae = make_dictionary("topk", 64, 256, k=8, site_in=SITE)
    result = absorption(lm, sae, max_per_letter=16)
    assert result.config.task["site"] == SITE and result.config.task["n_words"] == result.n_train + result.n_test
    assert len(result.letters) >= 20
    for entry in result.letters:
        assert 1 <= len(entry.main_latents) <= 3 and entry.n_absorbed <= entry.n_missed <= entry.n_true_positives
    json.dumps(result.to_dict(), allow_nan=False)
    with pytest.raises(MonosemanticError, match="prefix is empty"):
        word_activations(lm, SITE, torch.tensor([5]), prefix="")


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_a_words_activation_is_the_full_prompts_last_position(tiny_model_dir, family):
    # The prefix's keys and values are reused across batches; the result must be what the whole prompt gives.
    lm = load_model(str(tiny_model_dir(family)))
    assert isinstance(lm.tokenizer, PreTrainedTokenizerBase)
    words = [" snake", " house", " rain", " moon", " cat"]
    ids_N = torch.tensor([lm.tokenizer.encode(w, add_special_tokens=False)[0] for w in words])
    prefix = lm.tokenizer.encode("Letters: apple A, bee B,", add_special_tokens=False)
    by_hand = torch.stack([lm.capture(torch.tensor([prefix + [i]]), [SITE])[SITE][0, -1] for i in ids_N.tolist()])
    got = word_activations(lm, SITE, ids_N, prefix="Letters: apple A, bee B,", batch_size=2)
    torch.testing.assert_close(got, by_hand, rtol=1e-4, atol=1e-5)


def test_absorption_input_errors_are_one_line():
    sae, x_ND, letters_N, words = _absorbing_case(n_per_letter=20, n_snake=2)
    transcoder = make_dictionary("relu", D, 8, d_out=D + 1, l1_coeff=1.0)
    for call, message in [
        (lambda: measure_absorption(sae, x_ND, letters_N, words[:-1]), "got 59 words for 60 activation rows"),
        (lambda: measure_absorption(transcoder, x_ND, letters_N, words), "needs an autoencoder"),
        (lambda: measure_absorption(sae, x_ND, letters_N[:-1], words), r"labels of shape \(59,\) for 60 tokens"),
        (lambda: measure_absorption(sae, x_ND, letters_N, words, test_fraction=1.5), "test_fraction=1.5"),
        (lambda: measure_absorption(sae, x_ND, letters_N + 10, words), r"class indices in \[0, 26\); got values"),
    ]:
        with pytest.raises(MonosemanticError, match=message) as caught:
            call()
        assert "\n" not in str(caught.value)
