"""Crosscoders: shapes, options, persistence, per-source scale folding, fast paths, and recovery of
shared and source-specific features on synthetic two-source data."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from conftest import torch_threads
from monosemantic.dictionaries import (
    Crosscoder,
    StepInput,
    load_dictionary_native,
    make_dictionary,
    read_config,
    reconstruction_mse,
    save_dictionary,
)
from monosemantic.errors import MonosemanticError

S, D, F, N = 2, 8, 48, 40
CASES = {"relu": {}, "topk": {"activation": "topk", "k": 4, "aux_k": 6}}


def _data(n=N, s=S, d=D, seed=1, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, s, d, generator=g) + 0.5).to(dtype)


def _crosscoder(case="relu", dtype=torch.float32, **extra) -> Crosscoder:
    """A crosscoder with every parameter moved off its initialisation."""
    torch.manual_seed(0)
    crosscoder = make_dictionary("crosscoder", D, F, n_sources=S, dtype=dtype, **{**CASES[case], **extra})
    assert isinstance(crosscoder, Crosscoder)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in crosscoder.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
        crosscoder.b_enc.sub_(0.2)
    return crosscoder


@pytest.mark.parametrize("case", list(CASES))
def test_shapes_and_loss_terms(case):
    crosscoder = _crosscoder(case)
    assert crosscoder.W_enc.shape == (S, D, F) and crosscoder.W_dec.shape == (F, S, D)
    assert crosscoder.b_enc.shape == (F,) and crosscoder.b_dec.shape == (S, D)
    x = _data()
    codes = crosscoder.encode(x)
    assert codes.shape == (N, F) and (codes >= 0).all() and (codes > 0).any()
    assert crosscoder.decode(codes).shape == (N, S, D)
    recon, codes2, pre = crosscoder(x)
    assert recon.shape == (N, S, D) and torch.equal(codes2, codes) and pre.shape == (N, F)
    out = crosscoder.loss(x, None, StepInput(sparsity_scale=0.5))
    assert out.codes is not None
    assert out.recon.shape == (N, S, D) and out.codes.shape == (N, F)
    per_source = sum(reconstruction_mse(out.recon[:, s], x[:, s]) for s in range(S))
    torch.testing.assert_close(out.mse, per_source)
    torch.testing.assert_close(out.loss, out.mse + out.terms["sparsity"] + out.terms["aux"])
    if case == "topk":
        assert ((out.codes > 0).sum(1) <= 4).all() and float(out.terms["sparsity"]) == 0
    assert crosscoder.decoder_norms().shape == (F, S)


def test_encoder_centres_each_source_by_its_decoder_bias():
    crosscoder = _crosscoder()
    x = _data(seed=4)
    expected = sum((x[:, s] - crosscoder.b_dec[s]) @ crosscoder.W_enc[s] for s in range(S)) + crosscoder.b_enc
    torch.testing.assert_close(crosscoder.pre_acts(x), expected)
    uncentred = _crosscoder(apply_b_dec_to_input=False)
    expected = sum(x[:, s] @ uncentred.W_enc[s] for s in range(S)) + uncentred.b_enc
    torch.testing.assert_close(uncentred.pre_acts(x), expected)


def test_options_sites_and_errors():
    crosscoder = make_dictionary("crosscoder", D, F, sites=["blocks.3.resid_post", "blocks.6.resid_post"])
    assert crosscoder.n_sources == crosscoder.n_sites == 2 and crosscoder.sites[1] == "blocks.6.resid_post"
    assert crosscoder.options["l1_coeff"] == 5.0 and not crosscoder.unit_norm_decoder
    topk = make_dictionary("crosscoder", D, F, n_sources=3, activation="topk", k=4)
    assert topk.unit_norm_decoder and topk.options["aux_k"] == F // 2
    for options, match in [({}, "needs n_sources"), ({"n_sources": 1}, "n_sources=1 is invalid"),
                           ({"n_sources": 3, "sites": ["a", "b"]}, "one site per source"),
                           ({"n_sources": 2, "activation": "gelu"}, "activation='gelu' is invalid"),
                           ({"n_sources": 2, "k": 4}, "pass activation='topk'"),
                           ({"n_sources": 2, "activation": "topk"}, "needs option|k=None is invalid"),
                           ({"n_sources": 2, "activation": "topk", "k": 4, "l1_coeff": 1.0}, "top-k needs none"),
                           ({"n_sources": 2, "d_out": D + 1}, "leave d_out and skip unset"),
                           ({"sites": "blocks.3"}, "list of site names")]:
        with pytest.raises(MonosemanticError, match=match):
            make_dictionary("crosscoder", D, F, **options)
    with pytest.raises(MonosemanticError, match=r"\[rows, 2, 8\]"):
        crosscoder.loss(torch.randn(N, D))


@pytest.mark.parametrize("case", list(CASES))
def test_save_load_round_trip(case, tmp_path):
    crosscoder = _crosscoder(case, sites=["model_a/blocks.6", "model_b/blocks.6"])
    folder = save_dictionary(crosscoder.eval(), tmp_path / "xc")
    assert read_config(folder).options["sites"] == ["model_a/blocks.6", "model_b/blocks.6"]
    loaded = load_dictionary_native(folder)
    assert isinstance(loaded, Crosscoder) and loaded.config == crosscoder.config
    for name, tensor in crosscoder.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    x = _data(seed=5)
    assert torch.equal(loaded(x).recon, crosscoder(x).recon)


@pytest.mark.parametrize("case", list(CASES))
def test_fold_scale_per_source(case):
    crosscoder = _crosscoder(case).eval()
    x = _data(seed=7)
    scales = torch.tensor([3.0, 0.25])
    folded = copy.deepcopy(crosscoder)
    folded.fold_scale_(scales)
    trained = crosscoder(x * scales[:, None])
    raw = folded(x)
    torch.testing.assert_close(raw.codes, trained.codes, rtol=1e-4, atol=1e-5)  # codes keep training units
    torch.testing.assert_close(raw.recon, trained.recon / scales[:, None], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(folded.decoder_norms(), crosscoder.decoder_norms() / scales)
    same = copy.deepcopy(crosscoder)
    same.fold_scale_(2.0, 2.0)  # one scale for all sources, as the trainer passes it
    torch.testing.assert_close(same(x).recon, crosscoder(x * 2.0).recon / 2.0, rtol=1e-4, atol=1e-5)
    with pytest.raises(MonosemanticError, match="scale_out must equal scale_in"):
        crosscoder.fold_scale_(2.0, 3.0)
    with pytest.raises(MonosemanticError, match="one scale or 2"):
        crosscoder.fold_scale_([1.0, 2.0, 3.0])


def test_init_b_dec_per_source_and_decoder_constraints():
    topk = _crosscoder("topk")
    sample = _data(n=200, seed=2) * torch.tensor([1.0, 10.0])[:, None]
    topk.init_b_dec_(sample, method="mean")
    torch.testing.assert_close(topk.b_dec, sample.mean(0))
    topk.loss(_data()).loss.backward()
    topk.project_decoder_grad_()
    assert topk.W_dec.grad is not None
    radial = (topk.W_dec.grad * topk.W_dec).flatten(1).sum(1)
    assert radial.abs().max() < 1e-5 * topk.W_dec.grad.flatten(1).norm(dim=1).max()
    topk.normalize_decoder_()
    torch.testing.assert_close(topk.W_dec.flatten(1).norm(dim=1), torch.ones(F))
    relu = _crosscoder()
    before = relu.W_dec.detach().clone()
    relu.normalize_decoder_()
    assert torch.equal(relu.W_dec, before)  # free decoder: its norms are the penalty's business


# ----- the fast paths against the textbook computation -------------------------------------------

def _reference(crosscoder, x, scale, dead):
    """(loss, codes, recon) written out per source with dense tensors."""
    pre = sum((x[:, s] - crosscoder.b_dec[s]) @ crosscoder.W_enc[s] for s in range(S)) + crosscoder.b_enc
    if crosscoder.options["activation"] == "relu":
        codes = torch.relu(pre)
    else:
        values, indices = pre.topk(crosscoder.options["k"], dim=-1)
        codes = torch.zeros_like(pre).scatter(-1, indices, torch.relu(values))
    recon = torch.stack([codes @ crosscoder.W_dec[:, s] + crosscoder.b_dec[s] for s in range(S)], dim=1)
    loss = sum(reconstruction_mse(recon[:, s], x[:, s]) for s in range(S))
    if crosscoder.options["activation"] == "relu":
        norms = sum(crosscoder.W_dec[:, s].norm(dim=1) for s in range(S))
        loss = loss + crosscoder.options["l1_coeff"] * scale * (codes * norms).sum(-1).mean()
    elif dead is not None and (dead & ~(codes > 0).any(0)).any():
        dead = dead & ~(codes > 0).any(0)  # latents firing in this batch are alive
        k = min(crosscoder.options["aux_k"], int(dead.sum()))
        values, indices = pre.masked_fill(~dead, float("-inf")).topk(k, dim=-1)
        aux_codes = torch.zeros_like(pre).scatter(-1, indices, torch.relu(values))
        residual = (x - recon).detach().flatten(1)
        loss = loss + crosscoder.options["aux_coeff"] * reconstruction_mse(aux_codes @ crosscoder.W_dec.flatten(1),
                                                                          residual)
    assert isinstance(loss, torch.Tensor)
    return loss, codes, recon


@pytest.mark.parametrize("case, density", [("relu", 0.0), ("relu", 1.0), ("topk", None), ("topk-dead", None),
                                           ("plain", None)])
def test_loss_and_gradients_match_the_reference(case, density):
    crosscoder = _crosscoder("topk" if case.startswith("topk") else "relu", dtype=torch.float64)
    if density is not None:
        crosscoder.max_sparse_density = density  # 0: dense path, 1: sparse path
    dead = torch.arange(crosscoder.d_sae) % 2 == 0 if case == "topk-dead" else None  # half the latents
    crosscoder.fast_path = case != "plain"
    x = _data(dtype=torch.float64)
    out = crosscoder.loss(x, None, StepInput(sparsity_scale=0.6, dead_F=dead))
    crosscoder.zero_grad()
    out.loss.backward()
    fast = {}
    for name, p in crosscoder.named_parameters():
        assert p.grad is not None
        fast[name] = p.grad.clone()
    loss, codes, recon = _reference(crosscoder, x, 0.6, dead)
    crosscoder.zero_grad()
    loss.backward()
    tol: dict[str, Any] = {"rtol": 1e-6, "atol": 1e-8}  # float64 but for reconstruction_mse's float32
    torch.testing.assert_close(out.loss, loss.to(out.loss.dtype), **tol)
    torch.testing.assert_close(out.codes, codes, **tol)
    torch.testing.assert_close(out.recon, recon, **tol)
    for name, p in crosscoder.named_parameters():
        torch.testing.assert_close(fast[name], p.grad, **tol, msg=name)
    assert (float(out.terms["aux"].detach()) > 0) == (case == "topk-dead")


# ----- synthetic ground truth: shared and source-0-only features ---------------------------------


def _unit(t):
    return t / t.norm(dim=-1, keepdim=True)


def _train_two_sources(steps, lr, **options):
    """48 features write to both sources (different directions), 16 to source 0 only."""
    g = torch.Generator().manual_seed(1000)
    d, n_shared, n_only = 32, 48, 16
    dirs0, dirs1, only0 = (_unit(torch.randn(n, d, generator=g)) for n in (n_shared, n_shared, n_only))

    def batch(n):
        active = (torch.rand(n, n_shared + n_only, generator=g) < 3 / 64) * (0.5 + torch.rand(n, 64, generator=g))
        x0 = active[:, :n_shared] @ dirs0 + active[:, n_shared:] @ only0
        return torch.stack([x0, active[:, :n_shared] @ dirs1], dim=1)

    torch.manual_seed(0)
    crosscoder = make_dictionary("crosscoder", d, 256, n_sources=2, **options)
    assert isinstance(crosscoder, Crosscoder)
    crosscoder.init_b_dec_(batch(4096))
    opt = torch.optim.Adam(crosscoder.parameters(), lr=lr)
    with torch_threads(1):
        for _ in range(steps):
            out = crosscoder.loss(batch(1024))
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            crosscoder.project_decoder_grad_()
            opt.step()
            crosscoder.normalize_decoder_()
    return crosscoder.W_dec.detach(), crosscoder.decoder_norms(), dirs0, dirs1, only0


@pytest.mark.parametrize("options, steps, lr", [({"l1_coeff": 0.5}, 500, 1e-2),
                                                ({"activation": "topk", "k": 3}, 400, 4e-3)], ids=["relu", "topk"])
def test_recovers_shared_features_per_source_and_source_specific_ones(options, steps, lr):
    # relu: seeds 0-2 give per-source MMCS 1.000 and source-1/source-0 norm ratios <= 0.005 for the
    # source-0-only features; topk 0.997-0.999 and <= 0.05. Untrained, the MMCS is about 0.5.
    W_dec, norms, dirs0, dirs1, only0 = _train_two_sources(steps, lr, **options)
    # Each shared feature's latent: the best match to its joint direction over both sources.
    best = (_unit(torch.cat([dirs0, dirs1], dim=1)) @ _unit(W_dec.flatten(1)).T).argmax(dim=1)
    assert (_unit(W_dec[best, 0]) * dirs0).sum(1).mean() >= 0.9
    assert (_unit(W_dec[best, 1]) * dirs1).sum(1).mean() >= 0.9
    assert (norms[best, 1] / norms[best, 0]).min() > 0.3  # shared: substantial in both sources
    # Model diffing: the latents of source-0-only features barely write to source 1.
    cosines = only0 @ _unit(W_dec[:, 0]).T
    assert cosines.max(dim=1).values.mean() >= 0.9
    owners = cosines.argmax(dim=1)
    assert (norms[owners, 1] / norms[owners, 0]).max() < 0.1


def test_trains_in_the_trainer_and_saves_for_raw_activations(tmp_path):
    from monosemantic.training import TensorSource, TrainConfig, Trainer
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1024, S, D, generator=g) * torch.tensor([1.0, 30.0])[:, None]  # sources of unlike size
    torch.manual_seed(0)
    crosscoder = make_dictionary("crosscoder", D, F, n_sources=S, activation="topk", k=4)
    config = TrainConfig(total_tokens=1024 * 3, batch_size=256, log_every=4, checkpoint_every=None)
    Trainer({"xc": crosscoder}, config, tmp_path).fit(TensorSource(x), progress=False)
    loaded = load_dictionary_native(tmp_path / "xc")
    with torch.no_grad():
        recon = loaded(x).recon
    assert isinstance(loaded, Crosscoder) and recon.shape == x.shape
    fvu = float(((recon - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())
    assert fvu < 1.0  # the saved crosscoder acts on raw rows
