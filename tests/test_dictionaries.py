"""Dictionaries: every architecture's shapes, persistence, training support and losses."""

from __future__ import annotations

import copy
import hashlib
import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import torch_threads
from monosemantic.dictionaries import (
    ARCHITECTURES,
    BatchTopKDictionary,
    DictionaryConfig,
    GatedDictionary,
    JumpReLUDictionary,
    MatryoshkaDictionary,
    StepInput,
    TopKDictionary,
    geometric_median,
    load_dictionary_native,
    make_dictionary,
    save_dictionary,
)
from monosemantic.dictionaries.ste import jumprelu, step
from monosemantic.errors import MonosemanticError

D, F, N = 16, 32, 64

ARCH_CASES = {
    "relu": ("relu", {}),
    "relu-weighted": ("relu", {"weight_l1_by_decoder_norm": True}),
    "topk": ("topk", {"k": 4}),
    "batchtopk": ("batchtopk", {"k": 4}),
    "matryoshka": ("matryoshka", {"k": 4}),
    "jumprelu": ("jumprelu", {"initial_threshold": 0.05}),
    "gated": ("gated", {}),
}
CASE_IDS = list(ARCH_CASES)


def _data(n=N, d=D, seed=1):
    # Offset from zero so that b_dec and the input centring matter.
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) + 0.5


def _grad(t: torch.Tensor) -> torch.Tensor:
    """``t.grad``, which the test has just filled by a backward pass."""
    assert t.grad is not None
    return t.grad


def _trained(case, steps=3, **extra):
    """A dictionary after a few Adam steps, so biases, thresholds and counters are not at their init."""
    arch, options = ARCH_CASES[case]
    torch.manual_seed(0)
    dictionary = make_dictionary(arch, D, F, **{**options, **extra})
    x = _data()
    dictionary.init_b_dec_(x)
    opt = torch.optim.Adam(dictionary.parameters(), lr=1e-2)
    for i in range(steps):
        out = dictionary.loss(_data(seed=10 + i))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    return dictionary


@pytest.mark.parametrize("case", CASE_IDS)
def test_shapes_and_loss_terms(case):
    dictionary = _trained(case)
    x = _data()
    codes = dictionary.encode(x)
    assert codes.shape == (N, F)
    assert dictionary.decode(codes).shape == (N, D)
    recon, codes2, pre = dictionary(x)
    assert recon.shape == (N, D) and codes2.shape == (N, F) and pre.shape == (N, F)
    out = dictionary.loss(x)
    assert out.codes is not None
    assert out.loss.ndim == 0 and out.codes.shape == (N, F) and out.recon.shape == (N, D)
    assert torch.allclose(out.mse, ((out.recon - x) ** 2).sum(-1).mean())
    if dictionary.arch != "matryoshka":
        assert torch.allclose(out.loss, out.mse + out.terms["sparsity"] + out.terms["aux"])
    assert (codes >= 0).all() and (codes > 0).any()


@pytest.mark.parametrize("case", CASE_IDS)
def test_save_load_round_trip(case, tmp_path):
    dictionary = _trained(case).eval()
    folder = save_dictionary(dictionary, tmp_path / "d")
    loaded = load_dictionary_native(folder)
    assert type(loaded) is type(dictionary) and loaded.config == dictionary.config
    assert not loaded.training
    saved_state, loaded_state = dictionary.state_dict(), loaded.state_dict()
    assert saved_state.keys() == loaded_state.keys()
    for name in saved_state:
        assert loaded_state[name].dtype == saved_state[name].dtype, name
        assert torch.equal(loaded_state[name], saved_state[name]), name
    x = _data(seed=5)
    codes = dictionary.encode(x)
    assert torch.equal(loaded.encode(x), codes)
    assert torch.equal(loaded.decode(codes), dictionary.decode(codes))
    assert json.loads((folder / "config.json").read_text())["format_version"] == 1


def test_round_trip_keeps_learned_buffers(tmp_path):
    batch = _trained("batchtopk")
    assert isinstance(batch, BatchTopKDictionary)
    assert float(batch.threshold) > 0
    loaded = load_dictionary_native(save_dictionary(batch, tmp_path / "batch"))
    assert isinstance(loaded, BatchTopKDictionary)
    assert torch.equal(loaded.threshold, batch.threshold)


def test_saves_from_when_top_k_counted_its_own_firing_still_load(tmp_path):
    # Until the trainer owned dead-latent tracking, top-k saves held a dead_after_tokens option
    # and a tokens_since_fired buffer; both are dropped on load.
    from safetensors.torch import load_file, save_file
    topk = make_dictionary("topk", D, F, k=4)
    folder = save_dictionary(topk, tmp_path / "old")
    config = json.loads((folder / "config.json").read_text())
    config["options"]["dead_after_tokens"] = 10_000_000
    (folder / "config.json").write_text(json.dumps(config))
    tensors = load_file(folder / "weights.safetensors")
    counter = torch.arange(F, dtype=torch.int64)
    save_file({**tensors, "tokens_since_fired": counter}, folder / "weights.safetensors")
    with pytest.warns(UserWarning, match="dead_after_tokens no longer applies.*TrainConfig.dead_after_tokens"):
        loaded = load_dictionary_native(folder)
    assert "dead_after_tokens" not in loaded.options and "tokens_since_fired" not in loaded.state_dict()
    x = _data()
    assert torch.equal(loaded.encode(x), topk.encode(x))
    # Feature folders made from the old save were fingerprinted with the counter: they still match.
    from monosemantic.features import dictionary_fingerprint
    old_style = hashlib.sha256()
    for name, tensor in sorted({**topk.state_dict(), "tokens_since_fired": counter}.items()):
        old_style.update(name.encode())
        old_style.update(str(tuple(tensor.shape)).encode())
        old_style.update(tensor.to(torch.float32).contiguous().numpy().tobytes())
    assert dictionary_fingerprint(loaded) == old_style.hexdigest() != dictionary_fingerprint(topk)


def test_auxk_spares_latents_that_fire_in_the_batch_itself():
    # The trainer's mask counts rows up to the previous batch; a latent firing now is alive
    # (Gao et al. count the batch first), so the aux term never reaches it.
    torch.manual_seed(0)
    dictionary = make_dictionary("topk", D, F, k=2)
    x = _data()
    out = dictionary.loss(x, None, StepInput(dead_F=torch.ones(F, dtype=torch.bool)))
    assert out.codes is not None
    fired = (out.codes > 0).any(0)
    assert fired.any() and not fired.all()
    dictionary.zero_grad()
    out.terms["aux"].backward()
    enc_grad = _grad(dictionary.W_enc).abs().sum(0)
    assert (enc_grad[fired] == 0).all() and (enc_grad[~fired] > 0).any()


@pytest.mark.parametrize("case", CASE_IDS)
def test_decoder_normalisation_and_gradient_projection(case):
    dictionary = _trained(case, steps=0)
    opt = torch.optim.Adam(dictionary.parameters(), lr=1e-2)
    before = dictionary.W_dec.detach().clone()
    dictionary.loss(_data()).loss.backward()
    dictionary.project_decoder_grad_()
    grad = _grad(dictionary.W_dec)
    opt.step()
    dictionary.normalize_decoder_()
    assert not torch.equal(dictionary.W_dec, before)
    norms = dictionary.W_dec.norm(dim=1)
    if dictionary.unit_norm_decoder:
        radial = (grad * before).sum(1)
        assert radial.abs().max() < 1e-5 * grad.norm(dim=1).max()
        assert torch.allclose(norms, torch.ones(F), atol=1e-5)
    else:
        # Anthropic-style decoder: free norms, which the step changed and normalisation kept.
        assert not torch.allclose(norms, torch.ones(F), atol=1e-4)


def _fold_check(dictionary, x, s_in, s_out):
    folded = copy.deepcopy(dictionary)
    folded.fold_scale_(s_in, s_out)
    scaled = dictionary(x * s_in)
    raw = folded(x)
    s_out = s_in if s_out is None else s_out
    assert torch.allclose(raw.recon, scaled.recon / s_out, rtol=1e-4, atol=1e-5)
    assert torch.allclose(raw.codes, scaled.codes / s_out, rtol=1e-4, atol=1e-5)
    assert torch.equal(raw.codes > 0, scaled.codes > 0)


@pytest.mark.parametrize("case", CASE_IDS)
@pytest.mark.parametrize("training", [False, True])
def test_fold_scale_makes_raw_forward_match_scaled_forward(case, training):
    dictionary = _trained(case).train(training)
    _fold_check(dictionary, _data(seed=7), 3.7, None)


@pytest.mark.parametrize("arch, options", [("relu", {}), ("topk", {"k": 4}), ("jumprelu", {"initial_threshold": 0.05}),
                                           ("gated", {})])
def test_fold_scale_for_transcoders_with_other_output_scale(arch, options):
    torch.manual_seed(0)
    dictionary = make_dictionary(arch, D, F, d_out=D + 3, skip=True, **options)
    with torch.no_grad():
        for p in dictionary.parameters():
            p.add_(0.05 * torch.randn_like(p))
    assert not dictionary.apply_b_dec_to_input
    _fold_check(dictionary.eval(), _data(seed=8), 2.5, 0.4)


def test_centred_dictionary_refuses_different_input_and_output_scales():
    with pytest.raises(MonosemanticError, match="must be equal"):
        make_dictionary("relu", D, F).fold_scale_(2.0, 3.0)


@pytest.mark.parametrize("case", ["relu", "topk", "jumprelu"])
def test_inputs_are_centred_by_b_dec_unless_told_otherwise(case):
    dictionary = _trained(case)
    uncentred = _trained(case, apply_b_dec_to_input=False)
    x = _data(seed=6)
    assert dictionary.b_dec.abs().sum() > 0
    assert torch.allclose(dictionary.pre_acts(x), (x - dictionary.b_dec) @ dictionary.W_enc + dictionary.b_enc)
    assert torch.allclose(uncentred.pre_acts(x), x @ uncentred.W_enc + uncentred.b_enc)


def test_sparsity_penalties_follow_their_formulas():
    x = _data(seed=6)
    for case in ("relu", "relu-weighted", "jumprelu"):
        dictionary = _trained(case)
        with torch.no_grad():
            dictionary.W_dec.mul_(torch.linspace(0.5, 2.0, F)[:, None])  # rows of unequal norm
        out = dictionary.loss(x, None, StepInput(sparsity_scale=0.5))
        assert out.codes is not None
        if case == "jumprelu":
            expected = dictionary.options["l0_coeff"] * 0.5 * (out.codes > 0).sum(-1).float().mean()
        else:
            weights = dictionary.W_dec.norm(dim=1) if case == "relu-weighted" else torch.ones(F)
            expected = dictionary.options["l1_coeff"] * 0.5 * (out.codes * weights).sum(-1).mean()
        assert torch.allclose(out.terms["sparsity"], expected), case


def test_gated_paths_penalty_and_frozen_decoder_aux():
    dictionary = _trained("gated")
    assert isinstance(dictionary, GatedDictionary)
    with torch.no_grad():
        dictionary.r_mag.normal_()
        dictionary.W_dec.mul_(torch.linspace(0.5, 2.0, F)[:, None])
    x = _data(seed=6)
    shared = (x - dictionary.b_dec) @ dictionary.W_enc
    gate = shared + dictionary.b_gate
    magnitude = torch.relu(shared * dictionary.r_mag.exp() + dictionary.b_mag)
    out = dictionary.loss(x, None, StepInput(sparsity_scale=0.25))
    assert out.codes is not None
    assert torch.allclose(out.codes, (gate > 0) * magnitude)
    norms = dictionary.W_dec.norm(dim=1)
    assert torch.allclose(out.terms["sparsity"], 5.0 * 0.25 * (torch.relu(gate) * norms).sum(-1).mean())
    gate_recon = torch.relu(gate) @ dictionary.W_dec + dictionary.b_dec
    assert torch.allclose(out.terms["aux"], ((gate_recon - x) ** 2).sum(-1).mean())
    dictionary.zero_grad()
    out.terms["aux"].backward()
    # zero_grad sets grads to None: a parameter outside the aux term's graph keeps None.
    assert dictionary.W_dec.grad is None and dictionary.b_mag.grad is None
    assert _grad(dictionary.W_enc).abs().sum() > 0 and _grad(dictionary.b_gate).abs().sum() > 0


def test_topk_sparse_paths_equal_dense_paths():
    dictionary = _trained("topk")
    assert isinstance(dictionary, TopKDictionary)
    x = _data(seed=4)
    values, indices = dictionary.encode_sparse(x)
    assert values.shape == indices.shape == (N, 4)
    dense = dictionary.encode(x)
    assert torch.equal(torch.zeros(N, F).scatter(1, indices, values), dense)
    negative = copy.deepcopy(dictionary)
    with torch.no_grad():
        negative.b_enc.fill_(-100.0)  # every pre-activation negative: top-k keeps k zeros
    assert not negative.encode(x).any() and not negative.encode_sparse(x).values.any()
    assert torch.allclose(dictionary.decode_sparse(values, indices), dictionary.decode(dense), atol=1e-5)

    names = ("W_enc", "W_dec", "b_dec", "b_enc")
    dictionary.zero_grad()
    dictionary.loss(x).mse.backward()  # the loss goes through the sparse path
    sparse_grads = {n: getattr(dictionary, n).grad.clone() for n in names}
    dictionary.zero_grad()
    ((dictionary.decode(dictionary.encode(x)) - x) ** 2).sum(-1).mean().backward()
    for n in names:
        assert sparse_grads[n].abs().sum() > 0, n
        assert torch.allclose(sparse_grads[n], getattr(dictionary, n).grad, rtol=1e-4, atol=1e-6), n


def test_topk_aux_loss_reaches_only_dead_latents():
    dictionary = make_dictionary("topk", D, F, k=2)
    x = _data()
    dead = torch.zeros(F, dtype=torch.bool)
    dead[:8] = True  # latents 0..7 dead, as the trainer says
    step = StepInput(dead_F=dead)
    assert dictionary.loss(x).terms["aux"].item() == 0  # no dead mask: no aux term
    assert dictionary.loss(x, None, StepInput(dead_F=torch.zeros(F, dtype=torch.bool))).terms["aux"].item() == 0
    with torch.no_grad():
        dictionary.W_enc[:, :8] *= 0.01  # and they stay dead: too weak to reach any row's top 2
    dictionary.eval()
    assert dictionary.loss(x, None, step).terms["aux"].item() == 0  # no aux loss outside training
    dictionary.train()
    out = dictionary.loss(x, None, step)
    assert out.terms["aux"].item() > 0
    # aux_k = 16 > 8 dead latents, so all dead latents with positive pre-activations take part.
    with torch.no_grad():
        dead_codes = torch.relu(dictionary.pre_acts(x)) * dead
        residual = x - out.recon
        expected = ((dead_codes @ dictionary.W_dec - residual) ** 2).sum(-1).mean() / 32
    assert torch.allclose(out.terms["aux"], expected)
    dictionary.zero_grad()
    out.terms["aux"].backward()
    enc_grad = _grad(dictionary.W_enc).abs().sum(0)
    assert (enc_grad[dead] > 0).any() and (enc_grad[~dead] == 0).all()
    with torch.no_grad():
        dictionary.b_enc[:8] = -100.0  # dead latents with negative pre-activations cannot help
    out = dictionary.loss(x, None, step)
    assert torch.allclose(out.terms["aux"], ((x - out.recon) ** 2).sum(-1).mean() / 32)


def test_jumprelu_step_gradient_is_the_rectangle_estimate():
    eps = 0.01
    theta = torch.tensor([1.0, 2.0], requires_grad=True)
    pre = torch.tensor([[1.004, 2.5], [0.997, 2.0049], [1.2, 1.0], [1.008, 1.993]])
    step(pre, theta, eps).sum().backward()
    # Rows within eps/2 of theta: two for latent 0, one for latent 1.
    assert torch.allclose(_grad(theta), torch.tensor([-2 / eps, -1 / eps]))
    theta.grad = None
    out = jumprelu(pre, theta, eps)
    assert torch.equal(out, pre * (pre > theta.detach()))
    out.sum().backward()
    assert torch.allclose(_grad(theta), torch.tensor([-(1.0 / eps) * 2, -(2.0 / eps) * 1]))


def test_jumprelu_threshold_learns_from_l0_near_threshold():
    torch.manual_seed(0)
    dictionary = make_dictionary("jumprelu", D, F, bandwidth=0.01)
    assert isinstance(dictionary, JumpReLUDictionary)
    x = _data()
    with torch.no_grad():
        pre0 = dictionary.pre_acts(x)[0]
        near = pre0 > 0.05
        # Row 0's pre-activations sit just above these latents' thresholds.
        dictionary.log_threshold[near] = torch.log(pre0[near] - 0.001)
    out = dictionary.loss(x)
    pre = dictionary.pre_acts(x)
    assert out.codes is not None
    assert torch.equal(out.codes, pre * (pre > dictionary.threshold))
    out.terms["sparsity"].backward()
    grad = _grad(dictionary.log_threshold)
    assert near.sum() > 3 and (grad[near] < 0).all()


def test_float32_thresholds_survive_dtype_changes():
    jump = make_dictionary("jumprelu", D, F, dtype=torch.bfloat16)
    batch = make_dictionary("batchtopk", D, F, k=4).to(torch.float16)
    assert jump.W_enc.dtype == torch.bfloat16 and jump.log_threshold.dtype == torch.float32
    assert batch.W_enc.dtype == torch.float16 and batch.threshold.dtype == torch.float32
    codes = jump.encode(_data())
    assert codes.dtype == torch.bfloat16 and codes.shape == (N, F)


def test_batchtopk_selects_k_per_row_over_the_batch_and_uses_threshold_in_eval():
    torch.manual_seed(0)
    dictionary = make_dictionary("batchtopk", D, F, k=4, threshold_beta=0.9)
    assert isinstance(dictionary, BatchTopKDictionary)
    x = _data()
    out = dictionary.loss(x)
    assert out.codes is not None
    per_row = (out.codes > 0).sum(1)
    assert int(per_row.sum()) == 4 * N and per_row.min() != per_row.max()
    first = out.codes[out.codes > 0].min()
    assert torch.allclose(dictionary.threshold, first)  # the first batch sets the threshold
    second = dictionary.loss(_data(seed=2)).codes
    assert second is not None
    expected = 0.9 * first + 0.1 * second[second > 0].min()
    assert torch.allclose(dictionary.threshold, expected)

    dictionary.eval()
    with torch.no_grad():
        dictionary.threshold.fill_(0.8)
    pre = dictionary.pre_acts(x)
    assert torch.equal(dictionary.encode(x), pre * (pre > 0.8))
    before = dictionary.threshold.clone()
    dictionary.loss(x)
    assert torch.equal(dictionary.threshold, before)  # eval mode learns nothing


def test_matryoshka_loss_is_the_mean_of_prefix_errors():
    dictionary = make_dictionary("matryoshka", 2, 3, k=2, group_sizes=[1, 2])
    assert isinstance(dictionary, MatryoshkaDictionary)
    with torch.no_grad():
        dictionary.W_enc.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
        dictionary.b_enc.copy_(torch.tensor([0.0, 0.0, 0.5]))
        r = 1 / math.sqrt(2)
        dictionary.W_dec.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [r, r]]))
        dictionary.b_dec.zero_()
    x = torch.tensor([[2.0, 1.0]])  # codes [2, 1, 0.5]
    # Training: batch top-2 keeps [2, 1, 0]; prefix {0} misses x[1] (error 1), all latents are exact.
    train = dictionary.loss(x)
    assert torch.allclose(train.loss, torch.tensor((1.0 + 0.0) / 2))
    assert torch.allclose(train.mse, torch.tensor(0.0))
    # Eval with threshold 0: all three fire; the full reconstruction overshoots by 0.5*r in both coordinates.
    assert torch.allclose(dictionary.threshold, torch.tensor(1.0))  # learned from the training batch
    dictionary.eval()
    with torch.no_grad():
        dictionary.threshold.zero_()
    out = dictionary.loss(x)
    assert out.codes is not None
    assert torch.allclose(out.codes, torch.tensor([[2.0, 1.0, 0.5]]))
    assert torch.allclose(out.loss, torch.tensor((1.0 + 2 * (0.5 * r) ** 2) / 2))


def test_geometric_median_resists_outliers_and_initialises_b_dec():
    points = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [100.0, 0.0]])
    assert torch.allclose(geometric_median(points), torch.tensor([2.0, 0.0]), atol=1e-2)
    dictionary = make_dictionary("relu", 2, 4)
    dictionary.init_b_dec_(points)
    assert torch.allclose(dictionary.b_dec, torch.tensor([2.0, 0.0]), atol=1e-2)
    dictionary.init_b_dec_(points, method="mean")
    assert torch.allclose(dictionary.b_dec, torch.tensor([21.2, 0.0]))


def test_transcoder_targets_and_skip_connection():
    torch.manual_seed(0)
    dictionary = make_dictionary("topk", D, F, d_out=8, skip=True, k=4, site_in="blocks.1.mlp_in",
                                 site_out="blocks.1.mlp_out")
    assert dictionary.config.is_transcoder and dictionary.W_skip.shape == (8, D) and dictionary.W_dec.shape == (F, 8)
    x, y = _data(), _data(d=8, seed=3)
    with torch.no_grad():
        dictionary.W_skip.normal_()
    codes = dictionary.encode(x)
    expected = codes @ dictionary.W_dec + dictionary.b_dec + x @ dictionary.W_skip.T
    assert torch.allclose(dictionary.decode(codes, x), expected)
    out = dictionary.loss(x, y)
    assert torch.allclose(out.mse, ((out.recon - y) ** 2).sum(-1).mean())
    with pytest.raises(MonosemanticError, match="needs the input"):
        dictionary.decode(codes)
    with pytest.raises(MonosemanticError, match="output site"):
        dictionary.loss(x)


# ----- synthetic ground truth ------------------------------------------------------------------


def _sparse_batch(dirs_TD, g, n=1024):
    # About 3 of 256 true features active per row, with magnitudes uniform in [0.5, 1.5].
    active = torch.rand(n, dirs_TD.shape[0], generator=g) < 3 / dirs_TD.shape[0]
    magnitudes = 0.5 + torch.rand(n, dirs_TD.shape[0], generator=g)
    return (active * magnitudes) @ dirs_TD


def _recovery(arch, steps, lr, seed=0, **options):
    """Mean over true directions of the best cosine similarity with a decoder row, after training."""
    g = torch.Generator().manual_seed(1000 + seed)  # not the init's seed: it must not draw the same vectors
    dirs_TD = torch.randn(256, 32, generator=g)
    dirs_TD /= dirs_TD.norm(dim=1, keepdim=True)
    torch.manual_seed(seed)
    dictionary = make_dictionary(arch, 32, 512, **options)
    dictionary.init_b_dec_(_sparse_batch(dirs_TD, g, 4096))
    opt = torch.optim.Adam(dictionary.parameters(), lr=lr)
    with torch_threads(1):
        for _ in range(steps):
            out = dictionary.loss(_sparse_batch(dirs_TD, g))
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            dictionary.project_decoder_grad_()
            opt.step()
            dictionary.normalize_decoder_()
    W_dec = dictionary.W_dec.detach()
    cosines = dirs_TD @ (W_dec / W_dec.norm(dim=1, keepdim=True)).T
    return cosines.max(dim=1).values.mean().item()


def test_relu_recovers_ground_truth_features():
    # Seeds 0-2 give 0.987-0.991 after 1500 steps; the untrained dictionary scores about 0.51.
    assert _recovery("relu", 1500, 1e-2, weight_l1_by_decoder_norm=True, l1_coeff=1.0) >= 0.95


def test_topk_recovers_ground_truth_features():
    # Seeds 0-2 give 0.989-0.992 after 600 steps; the untrained dictionary scores about 0.51.
    assert _recovery("topk", 600, 4e-3, k=3) >= 0.95


# ----- errors ----------------------------------------------------------------------------------

def test_unknown_arch_lists_known_ones():
    with pytest.raises(MonosemanticError) as err:
        make_dictionary("sparse-magic", D, F)
    for name in ARCHITECTURES:
        assert name in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("options, match", [
    ({"k": F}, r"k=32 is invalid; expected an integer in \[1, 31\]"),
    ({"k": 0}, "k=0 is invalid"),
    ({}, "needs option"),
    ({"k": 4, "kk": 2}, "unknown option"),
    ({"k": 2.5}, "expected an integer"),
])
def test_invalid_topk_options(options, match):
    with pytest.raises(MonosemanticError, match=match):
        make_dictionary("topk", D, F, **options)


@pytest.mark.parametrize("arch, options, match", [
    ("matryoshka", {"k": 4, "group_sizes": [8, 8]}, "summing to d_sae=32"),
    ("relu", {"l1_coeff": -1}, "l1_coeff=-1 is invalid"),
    ("jumprelu", {"bandwidth": 0}, "bandwidth=0 is invalid"),
    ("relu", {"apply_b_dec_to_input": "yes"}, "expected true or false"),
])
def test_invalid_options(arch, options, match):
    with pytest.raises(MonosemanticError, match=match):
        make_dictionary(arch, D, F, **options)


def test_bad_inputs_are_explained():
    dictionary = make_dictionary("relu", D, F)
    with pytest.raises(MonosemanticError, match=r"\[rows, 16\]"):
        dictionary.encode(torch.randn(2, 3, D))
    with pytest.raises(MonosemanticError, match="sparsity_scale"):
        dictionary.loss(_data(), None, StepInput(sparsity_scale=2.0))
    with pytest.raises(MonosemanticError, match="JSON"):
        make_dictionary("relu", D, F, l1_coeff=torch.tensor(1.0))


def _saved(tmp_path, name="d"):
    torch.manual_seed(0)
    return save_dictionary(make_dictionary("topk", D, F, k=4), tmp_path / name)


def test_load_with_a_missing_tensor(tmp_path):
    folder = _saved(tmp_path)
    tensors = load_file(folder / "weights.safetensors")
    del tensors["b_enc"]
    save_file(tensors, folder / "weights.safetensors")
    with pytest.raises(MonosemanticError, match="missing b_enc"):
        load_dictionary_native(folder)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_weights_that_are_not_finite_are_refused_in_every_format(tmp_path, bad):
    from monosemantic.formats import load_dictionary, save_dictionary_as

    folder = _saved(tmp_path)
    exported = save_dictionary_as(load_dictionary_native(folder), tmp_path / "saelens", to="saelens")
    tensors = load_file(folder / "weights.safetensors")
    tensors["W_dec"][3, 5] = bad
    save_file(tensors, folder / "weights.safetensors")
    for load in (load_dictionary_native, load_dictionary):
        with pytest.raises(MonosemanticError, match="tensor W_dec holds 1 NaN or infinite value"):
            load(folder)
    theirs = load_file(exported / "sae_weights.safetensors")
    theirs["b_enc"][0] = bad
    save_file(theirs, exported / "sae_weights.safetensors")
    with pytest.raises(MonosemanticError, match="tensor b_enc holds 1 NaN or infinite value"):
        load_dictionary(exported)


def test_two_identical_trainings_write_the_same_bytes(tmp_path):
    # safetensors orders its metadata differently from one save to the next; a checksum of
    # weights.safetensors must still stand for the dictionary.
    from safetensors import safe_open

    from monosemantic.training import TensorSource, TrainConfig, Trainer

    x_ND = torch.randn(2048, D, generator=torch.Generator().manual_seed(0))
    digests = set()
    for run in range(6):
        torch.manual_seed(0)
        trained = make_dictionary("topk", D, F, k=4)
        Trainer({"sae": trained}, TrainConfig(total_tokens=1024, batch_size=256, log_every=2),
                tmp_path / f"run{run}").fit(TensorSource(x_ND), progress=False)
        weights = tmp_path / f"run{run}" / "sae" / "weights.safetensors"
        digests.add(hashlib.sha256(weights.read_bytes()).hexdigest())
        with safe_open(weights, framework="pt") as f:  # still a file safetensors reads
            assert f.metadata() == {"format": "pt", "format_version": "1"}
    assert len(digests) == 1
    assert torch.equal(load_dictionary_native(tmp_path / "run0" / "sae").W_dec, trained.W_dec.detach())


def test_load_with_wrong_shape_or_newer_format(tmp_path):
    folder = _saved(tmp_path)
    tensors = load_file(folder / "weights.safetensors")
    tensors["b_dec"] = torch.zeros(D + 1)
    save_file(tensors, folder / "weights.safetensors")
    with pytest.raises(MonosemanticError, match=r"b_dec has shape \(17,\), expected \(16,\)"):
        load_dictionary_native(folder)
    config = json.loads((folder / "config.json").read_text())
    config["format_version"] = 99
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(MonosemanticError, match="format_version 99"):
        load_dictionary_native(folder)
    with pytest.raises(MonosemanticError, match="not a saved dictionary"):
        load_dictionary_native(tmp_path / "nowhere")


def test_save_never_clobbers_a_different_save(tmp_path):
    folder = _saved(tmp_path)
    first = load_dictionary_native(folder)
    assert save_dictionary(first, folder) == folder  # identical content: nothing to do
    other = make_dictionary("topk", D, F, k=5)
    with pytest.raises(MonosemanticError, match="overwrite=True"):
        save_dictionary(other, folder)
    assert load_dictionary_native(folder).options["k"] == 4
    save_dictionary(other, folder, overwrite=True)
    assert load_dictionary_native(folder).options["k"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]  # no staging folders left behind
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    with pytest.raises(MonosemanticError, match="other than a dictionary save"):
        save_dictionary(other, tmp_path / "notes", overwrite=True)


def test_config_round_trip_and_validation():
    config = DictionaryConfig(arch="topk", d_in=8, d_sae=16, options={"k": 2}, site_in="blocks.0.resid_post")
    assert config.d_out == 8 and not config.is_transcoder
    assert DictionaryConfig.from_dict(config.to_dict()) == config
    with pytest.raises(MonosemanticError, match="unknown field"):
        DictionaryConfig.from_dict({**config.to_dict(), "colour": "red"})
    with pytest.raises(MonosemanticError, match="d_sae must be a positive integer"):
        DictionaryConfig(arch="topk", d_in=8, d_sae=0)
