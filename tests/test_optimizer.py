"""monosemantic's Adam: the same updates as torch's, through contiguous aliases of transposed parameters."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from monosemantic.dictionaries import make_dictionary
from monosemantic.kernels.adam import Adam, moments


def _pair(shape, transposed: bool, seed: int = 0):
    """A parameter (stored transposed when asked) and an independent contiguous copy of it."""
    g = torch.Generator().manual_seed(seed)
    value = torch.randn(*shape, generator=g)
    param = torch.nn.Parameter(value.T.contiguous().T if transposed else value.clone())
    return param, torch.nn.Parameter(value.clone())


def _grads(steps: int, shapes, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(*s, generator=g) for s in shapes] for _ in range(steps)]


def _run(optimizer, params, grads):
    for step_grads in grads:
        optimizer.zero_grad(set_to_none=True)
        for p, grad in zip(params, step_grads):
            # Gradients in the parameter's own layout, as autograd leaves them.
            p.grad = grad.T.contiguous().T if not p.is_contiguous() else grad.clone()
        optimizer.step()


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("shape", [(6, 10), (7, 7)])
def test_updates_equal_torch_adam_on_contiguous_copies(fused, shape):
    mine, reference = zip(_pair(shape, True), _pair((10,), False, seed=3))
    ours = Adam(mine, lr=0.05, betas=(0.9, 0.99), fused=fused)
    assert ours._aliased and ours._aliased[0][0] is mine[0]  # the transposed one goes through an alias
    theirs = torch.optim.Adam(reference, lr=0.05, betas=(0.9, 0.99), fused=fused)
    grads = _grads(4, [shape, (10,)])
    _run(ours, mine, grads)
    _run(theirs, reference, grads)
    for a, b in zip(mine, reference):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=0, atol=1e-6)
    assert not mine[0].is_contiguous()  # updated in place: the layout is kept
    assert mine[0].grad is not None  # the gradient autograd wrote stays readable after step


def test_state_dict_is_in_the_parameters_layout_both_ways():
    (w, w_ref), (b, b_ref) = _pair((5, 9), True), _pair((9,), False, seed=2)
    ours, theirs = Adam([w, b], lr=0.1), torch.optim.Adam([w_ref, b_ref], lr=0.1)
    assert ours._aliased
    grads = _grads(3, [(5, 9), (9,)])
    _run(ours, [w, b], grads)
    _run(theirs, [w_ref, b_ref], grads)
    mine, reference = ours.state_dict()["state"], theirs.state_dict()["state"]
    for key in ("exp_avg", "exp_avg_sq"):
        assert mine[0][key].shape == (5, 9)
        torch.testing.assert_close(mine[0][key], reference[0][key], rtol=0, atol=1e-7)
    # A plain torch Adam state loads into ours (and ours into torch's), and training goes on alike.
    resumed = Adam([w, b], lr=0.1)
    resumed.load_state_dict(theirs.state_dict())
    back = torch.optim.Adam([w_ref, b_ref], lr=0.1)
    back.load_state_dict(ours.state_dict())
    more = _grads(2, [(5, 9), (9,)], seed=7)
    _run(resumed, [w, b], more)
    _run(back, [w_ref, b_ref], more)
    torch.testing.assert_close(w.detach(), w_ref.detach(), rtol=0, atol=1e-6)


def test_moments_are_views_in_the_parameters_layout():
    w, _ = _pair((4, 8), True)
    optimizer = Adam([w], lr=0.1)
    assert optimizer._aliased
    _run(optimizer, [w], _grads(1, [(4, 8)]))
    found = moments(optimizer, w)
    assert len(found) == 2 and all(m.shape == w.shape for m in found)
    found[0][:, 3] = 0  # resampling zeroes a latent's column like this
    assert float(optimizer.state_dict()["state"][0]["exp_avg"][:, 3].abs().sum()) == 0
    assert float(optimizer.state_dict()["state"][0]["exp_avg"][:, 2].abs().sum()) > 0


def test_a_dictionarys_transposed_encoder_goes_through_an_alias():
    dictionary = make_dictionary("topk", 8, 32, k=4)
    assert not dictionary.W_enc.is_contiguous()  # F-major, tied to W_dec at initialisation
    optimizer = Adam(dictionary.parameters(), lr=1e-3)
    assert [p for p, _ in optimizer._aliased] == [dictionary.W_enc]


def test_parameter_groups_keep_their_own_lr_and_settings_a_saved_state_lacks():
    (w, w_ref), (b, b_ref) = _pair((5, 9), True), _pair((9,), False, seed=2)
    ours = Adam([{"params": [w], "lr_scale": 1.0}, {"params": [b], "lr": 0.5, "lr_scale": 5.0}], lr=0.1)
    assert ours._aliased and ours._aliased[0][0] is w  # aliases work inside groups too
    theirs = torch.optim.Adam([{"params": [w_ref]}, {"params": [b_ref], "lr": 0.5}], lr=0.1)
    grads = _grads(3, [(5, 9), (9,)])
    _run(ours, [w, b], grads)
    _run(theirs, [w_ref, b_ref], grads)
    torch.testing.assert_close(w.detach(), w_ref.detach(), rtol=0, atol=1e-6)
    torch.testing.assert_close(b.detach(), b_ref.detach(), rtol=0, atol=1e-6)
    # A state saved without lr_scale (an older checkpoint) loads; the groups keep theirs and the moments come over.
    resumed = Adam([{"params": [w], "lr_scale": 1.0}, {"params": [b], "lr_scale": 5.0}], lr=0.1)
    resumed.load_state_dict(theirs.state_dict())
    assert [g["lr_scale"] for g in resumed.param_groups] == [1.0, 5.0]
    assert [g["lr"] for g in resumed.param_groups] == [0.1, 0.5]
    torch.testing.assert_close(moments(resumed, b)[0], theirs.state[b_ref]["exp_avg"], rtol=0, atol=0)


def test_refuses_what_it_cannot_do():
    w, _ = _pair((3, 4), True)
    mixed: Any = [w, {"params": [w]}]  # Any: deliberately neither a list of tensors nor of groups
    with pytest.raises(TypeError, match="not a mix"):
        Adam(mixed, lr=0.1)
    optimizer = Adam([w], lr=0.1)
    with pytest.raises(TypeError, match="closure"):
        optimizer.step(lambda: 0.0)
