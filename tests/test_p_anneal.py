"""p-annealing: the schedule of p, the L_p penalty and its rescaled coefficient."""

from __future__ import annotations

import pytest
import torch

from monosemantic.dictionaries import PAnnealDictionary, StepInput, make_dictionary
from monosemantic.dictionaries.p_anneal import annealed_p
from monosemantic.errors import MonosemanticError

D, F = 16, 48


def _data(n=64, seed=0):
    return torch.randn(n, D, generator=torch.Generator().manual_seed(seed))


def test_p_holds_then_falls_in_equal_steps_to_p_end_by_the_end_of_the_run():
    progress = [i / 200 for i in range(201)]
    ps = [annealed_p(t, 1.0, 0.2, 0.25, 4) for t in progress]
    assert all(p == 1.0 for t, p in zip(progress, ps) if t < 0.25)
    assert all(a >= b for a, b in zip(ps, ps[1:]))
    assert sorted(set(round(p, 9) for p in ps)) == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert ps[-1] == pytest.approx(0.2) and annealed_p(0.25, 1.0, 0.2, 0.25, 4) == pytest.approx(0.8)
    # Each level lasts a quarter of the annealed part of the run.
    assert sum(1 for p in ps if p == pytest.approx(0.6)) == pytest.approx(150 / 4, abs=1)


@pytest.mark.parametrize("penalty", ["lp", "lp^p"])
def test_penalty_is_the_lp_norm_of_the_codes_and_has_finite_gradients_at_zero(penalty):
    torch.manual_seed(0)
    d = make_dictionary("p_anneal", D, F, penalty=penalty)
    assert isinstance(d, PAnnealDictionary)
    codes = torch.relu(torch.randn(32, F, requires_grad=True))
    assert (codes == 0).any()
    for p in (1.0, 0.5, 0.2):
        got = d.lp_penalty(codes, p)
        per_row = (codes ** p * (codes > 0)).sum(-1)
        want = per_row.mean() if penalty == "lp^p" else per_row.pow(1 / p).mean()
        torch.testing.assert_close(got, want)
    leaf = torch.randn(32, F).requires_grad_()
    d.lp_penalty(torch.relu(leaf), 0.2).backward()
    assert leaf.grad is not None
    assert torch.isfinite(leaf.grad).all() and (leaf.grad[leaf <= 0] == 0).all()
    torch.testing.assert_close(d.lp_penalty(torch.relu(leaf), 1.0), torch.relu(leaf).sum(-1).mean())  # p=1: L1


def test_loss_is_plain_l1_before_annealing_and_keeps_its_scale_after():
    torch.manual_seed(0)
    d = make_dictionary("p_anneal", D, F, l1_coeff=0.01, anneal_start=0.5, p_end=0.25)
    assert isinstance(d, PAnnealDictionary)
    relu = make_dictionary("relu", D, F, l1_coeff=0.01)
    relu.load_state_dict(d.state_dict())
    x = _data()
    early, plain = d.loss(x, None, StepInput(progress=0.2)), relu.loss(x)
    torch.testing.assert_close(early.loss, plain.loss)
    torch.testing.assert_close(early.terms["sparsity"], plain.terms["sparsity"])

    late = d.loss(x, None, StepInput(progress=0.99, sparsity_scale=0.5))
    # The value is the L1 penalty's (coefficient rescaled), the gradient that of L_0.25.
    torch.testing.assert_close(late.terms["sparsity"], 0.5 * plain.terms["sparsity"])
    codes = torch.relu(d.pre_acts(x))
    lp = d.lp_penalty(codes, 0.25)
    expected = 0.01 * 0.5 * lp * (d.lp_penalty(codes, 1.0) / lp).detach()
    late_grad = torch.autograd.grad(late.terms["sparsity"], d.W_enc)[0]
    want_grad = torch.autograd.grad(expected, d.W_enc)[0]
    torch.testing.assert_close(late_grad, want_grad)
    l1_grad = torch.autograd.grad(0.5 * relu.loss(x).terms["sparsity"], relu.W_enc)[0]
    assert not torch.allclose(late_grad, l1_grad, rtol=1e-2)


@pytest.mark.parametrize("options, match", [({"p_end": 1.5}, "p_end"), ({"p_start": 0.0}, "p_start"),
                                            ({"penalty": "l0"}, "penalty"), ({"anneal_steps": 0}, "anneal_steps"),
                                            ({"anneal_start": 1.0}, "anneal_start")])
def test_bad_options_are_named(options, match):
    with pytest.raises(MonosemanticError, match=match):
        make_dictionary("p_anneal", D, F, **options)
