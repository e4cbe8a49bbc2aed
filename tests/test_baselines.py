"""Baselines as dictionaries: what each fit means, and that they persist like any dictionary."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from monosemantic.baselines import BASELINES, fit_baseline, random_unit_rows
from monosemantic.dictionaries import load_dictionary_native, make_dictionary, save_dictionary
from monosemantic.errors import MonosemanticError
from monosemantic.evaluation import evaluate_reconstruction

pytestmark = pytest.mark.usefixtures("one_thread")


def _sample(n=2000, d=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    scales = torch.linspace(3.0, 0.2, d)  # distinct variances, so principal directions are well defined
    return torch.randn(n, d, generator=g) * scales + 1.5


def _low_rank(n=3000, d=24, rank=4, noise=0.05, seed=1):
    g = torch.Generator().manual_seed(seed)
    z_NR = torch.randn(n, rank, generator=g) * torch.tensor([4.0, 3.0, 2.0, 1.0])[:rank]
    basis_RD = torch.linalg.qr(torch.randn(d, rank, generator=g))[0].T
    return z_NR @ basis_RD + noise * torch.randn(n, d, generator=g) + 0.7, basis_RD


def _fit(kind, x, **kw):
    sized = {"pca": 6, "ica": 6, "random": 20}
    return fit_baseline(kind, x, n_components=sized.get(kind), **kw)


@pytest.mark.parametrize("kind", BASELINES)
def test_native_save_load_round_trip(kind, tmp_path):
    x = _sample()
    dictionary = _fit(kind, x, site="blocks.1.resid_post", model="tiny")
    folder = save_dictionary(dictionary, tmp_path / kind)
    assert json.loads((folder / "config.json").read_text())["arch"] == kind
    loaded = load_dictionary_native(folder)
    assert type(loaded) is type(dictionary) and loaded.config == dictionary.config
    assert loaded.config.site_in == "blocks.1.resid_post" and loaded.config.model == "tiny"
    for name, tensor in dictionary.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    assert torch.equal(loaded(x).recon, dictionary(x).recon)


@pytest.mark.parametrize("kind", BASELINES)
def test_fitting_leaves_the_global_rng_alone(kind):
    x = _sample(n=300)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    _fit(kind, x)
    assert torch.equal(torch.rand(3), expected)


def test_identity_codes_are_the_activations_and_reconstruct_exactly():
    x = _sample()
    identity = fit_baseline("identity", x)
    assert identity.d_sae == identity.d_in == x.shape[1]
    out = identity(x)
    assert torch.equal(out.codes, x) and torch.equal(out.recon, x)
    # Built from a config alone (as load does before reading weights) it is already the identity.
    assert torch.equal(make_dictionary("identity", 5, 5)(x[:, :5]).recon, x[:, :5])
    with pytest.raises(MonosemanticError, match="d_sae must equal"):
        make_dictionary("identity", 5, 6)


def test_zero_and_mean_reconstruct_constants():
    x = _sample()
    zero, mean = fit_baseline("zero", x), fit_baseline("mean", x)
    assert torch.equal(zero(x).recon, torch.zeros_like(x))
    assert torch.allclose(mean(x).recon, x.double().mean(0).float().expand_as(x))
    assert not zero(x).codes.any() and not mean(x).codes.any()


def test_pca_recovers_a_known_low_rank_structure():
    x, basis_RD = _low_rank()
    centred = (x - x.mean(0)).double().numpy()
    s = np.linalg.svd(centred, compute_uv=False)
    explained = s**2 / (s**2).sum()
    for k in (1, 3, 4):
        pca = fit_baseline("pca", x, n_components=k)
        fvu = evaluate_reconstruction(pca, x).fvu
        assert fvu == pytest.approx(1 - explained[:k].sum(), rel=1e-4, abs=1e-6)
    # The 4 components span the planted subspace: projecting the basis onto them loses nothing.
    W_dec = fit_baseline("pca", x, n_components=4).W_dec.detach().double()
    assert torch.allclose(W_dec @ W_dec.T, torch.eye(4, dtype=torch.float64), atol=1e-5)
    projected = basis_RD.double() @ W_dec.T @ W_dec
    assert torch.allclose(projected, basis_RD.double(), atol=5e-3)


def test_pca_is_deterministic():
    x = _sample()
    assert torch.equal(fit_baseline("pca", x, n_components=5).W_dec, fit_baseline("pca", x, n_components=5).W_dec)


def test_ica_unmixes_independent_non_gaussian_sources():
    g = torch.Generator().manual_seed(3)
    n = 4000
    sources_NK = torch.stack([
        torch.rand(n, generator=g) * 2 - 1,  # uniform
        # Heavy-tailed: the difference of two Exp(1) draws is Laplace(0, 1), and unlike
        # torch.distributions.Laplace it takes the seeded generator.
        torch.empty(n).exponential_(generator=g) - torch.empty(n).exponential_(generator=g),
        torch.sign(torch.randn(n, generator=g)) * (1 + 0.1 * torch.rand(n, generator=g)),  # bimodal
    ], dim=1)
    mixing_KD = torch.randn(3, 8, generator=g)
    x = sources_NK @ mixing_KD + 0.3
    ica = fit_baseline("ica", x, n_components=3, seed=0)
    assert ica.config.options["converged"] is True
    codes_NK = ica.encode(x).detach()
    corr = np.corrcoef(np.concatenate([sources_NK.numpy(), codes_NK.numpy()], axis=1).T)[:3, 3:]
    assert np.abs(corr).max(axis=1).min() >= 0.95
    # Decoder rows are unit norm and the reconstruction is exact (rank-3 data, 3 components).
    assert torch.allclose(ica.W_dec.norm(dim=1), torch.ones(3), atol=1e-5)
    assert evaluate_reconstruction(ica, x).fvu < 1e-6


def test_random_directions_least_squares_and_projection():
    x = _sample(d=12)
    under = fit_baseline("random", x, n_components=5, seed=7)
    assert torch.allclose(under.W_dec.norm(dim=1), torch.ones(5), atol=1e-6)
    assert torch.allclose(under.W_dec.double(), random_unit_rows(5, 12, 7), atol=1e-7)
    # Least squares: the residual is orthogonal to every direction (the best fit in their span).
    residual = (x - under(x).recon).double()
    assert (residual @ under.W_dec.double().T).abs().max() < 1e-3
    over = fit_baseline("random", x, n_components=30, seed=7)
    assert evaluate_reconstruction(over, x).fvu < 1e-8  # 30 directions span 12 dims: exact
    projected = fit_baseline("random", x, n_components=30, seed=7, encoder="project")
    assert torch.equal(projected.W_enc, projected.W_dec.T)
    assert evaluate_reconstruction(projected, x).fvu > 0.5  # overcomplete projections overshoot
    assert not torch.equal(fit_baseline("random", x, n_components=5, seed=8).W_dec, under.W_dec)


@pytest.mark.parametrize("call, message", [
    (lambda x: fit_baseline("svd", x), "unknown baseline 'svd'; expected one of"),
    (lambda x: fit_baseline("pca", x, n_components=13), r"expected an integer in \[1, 12\]"),
    (lambda x: fit_baseline("identity", x, n_components=4), "fixed size"),
    (lambda x: fit_baseline("pca", x.numpy()), "floating \\[rows, width\\] tensor"),
    (lambda x: fit_baseline("random", x, encoder="qr"), "encoder='qr' is invalid"),
    (lambda x: fit_baseline("pca", x[:1]), "at least 2 rows"),
])
def test_bad_fits_fail_with_one_line(call, message):
    with pytest.raises(MonosemanticError, match=message) as caught:
        call(_sample(n=50))
    assert "\n" not in str(caught.value)


def test_a_saved_baseline_loads_in_a_fresh_interpreter(tmp_path):
    """The public loaders must not depend on the caller having imported monosemantic.baselines; the
    dictionaries layer alone (which cannot import the baselines above it) says where to load it instead."""
    import subprocess
    import sys

    save_dictionary(fit_baseline("pca", _sample(n=200, d=8), n_components=4), tmp_path / "pca")
    for code in ("import sys, monosemantic; print(monosemantic.load_dictionary(sys.argv[1]).config.arch)",
                 "import sys; from monosemantic.formats import load_dictionary; "
                 "print(load_dictionary(sys.argv[1]).config.arch)"):
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "pca")], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "pca"
    code = ("import sys; from monosemantic.dictionaries import load_dictionary_native\n"
            "from monosemantic.errors import MonosemanticError\n"
            "try:\n    load_dictionary_native(sys.argv[1])\nexcept MonosemanticError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "pca")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "unknown dictionary arch 'pca'" in out.stdout and "monosemantic.load_dictionary" in out.stdout
    assert len(out.stdout.strip().splitlines()) == 1
