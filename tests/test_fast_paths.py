"""The CPU training kernels (monosemantic.kernels: relu, topk, sparse) against plain dense computations.

Each reference below is the textbook formula written out with dense tensors and autograd; the
fast path must give the same loss terms, codes, reconstructions and parameter gradients.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from monosemantic.dictionaries import JumpReLUDictionary, ReLUDictionary, StepInput, make_dictionary, reconstruction_mse
from monosemantic.kernels import sparse as sparse_ops
from monosemantic.kernels.relu import code_density

D, F, N = 16, 128, 64
# float64 parameters; reconstruction_mse works in float32, so recon-driven terms carry float32 rounding.
TOL: dict[str, Any] = {"rtol": 1e-6, "atol": 1e-8}


def _data(n=N, d=D, seed=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g) + 0.5).to(dtype)


def _perturbed(dictionary, seed=0):
    """The dictionary with every parameter moved off its initialisation, so biases and skips matter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in dictionary.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return dictionary


def _grads(dictionary, loss, *extra):
    dictionary.zero_grad(set_to_none=True)
    for t in extra:
        t.grad = None
    loss.backward()
    grads = {name: p.grad.clone() for name, p in dictionary.named_parameters() if p.grad is not None}
    grads.update({f"extra{i}": t.grad.clone() for i, t in enumerate(extra)})
    return grads


def _assert_same_grads(fast, reference, tol=TOL):
    assert fast.keys() == reference.keys()
    for name in reference:
        torch.testing.assert_close(fast[name], reference[name], **tol, msg=name)


def _encoder_input(dictionary, x):
    return x - dictionary.b_dec if dictionary.apply_b_dec_to_input else x


def _decode(dictionary, codes, x):
    recon = codes @ dictionary.W_dec + dictionary.b_dec
    return recon + x @ dictionary.W_skip.T if dictionary.config.skip else recon


def _mse(recon, target):
    return reconstruction_mse(recon, target)  # the library's convention: summed over width, mean over rows


# ----- kernels.sparse -------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sparse_products_equal_dense_ones(dtype):
    torch.manual_seed(0)
    codes = torch.relu(torch.randn(7, 11) - 1).to(dtype)
    codes[3] = 0  # an empty row
    codes[:, 5] = 0  # a latent that never fires
    table_FW, table_NW = torch.randn(11, 5, dtype=dtype), torch.randn(7, 5, dtype=dtype)
    active, values = sparse_ops.from_dense(codes)
    assert active.n_rows == 7 and values.numel() == int((codes != 0).sum())
    torch.testing.assert_close(sparse_ops.row_sums(active, values, table_FW), codes @ table_FW)
    torch.testing.assert_close(sparse_ops.latent_sums(active, values, table_NW), codes.T @ table_NW)
    torch.testing.assert_close(sparse_ops.latent_totals(active, values), codes.sum(0))
    torch.testing.assert_close(sparse_ops.sampled_dots(active, table_NW, table_FW), (table_NW @ table_FW.T)[codes != 0])

    indices = torch.randn(7, 11).topk(3, dim=-1).indices
    chosen = sparse_ops.from_indices(indices, 11)
    values = torch.rand(21, dtype=dtype)
    dense = torch.zeros(7, 11, dtype=dtype).scatter_(1, indices, values.view(7, 3))
    torch.testing.assert_close(sparse_ops.row_sums(chosen, values, table_FW), dense @ table_FW)
    torch.testing.assert_close(sparse_ops.latent_sums(chosen, values, table_NW), dense.T @ table_NW)
    torch.testing.assert_close(sparse_ops.sampled_dots(chosen, table_NW, table_FW),
                               (table_NW @ table_FW.T).gather(1, indices).flatten())



@pytest.mark.parametrize("width", [576, 577])
def test_bag_sums_of_tables_larger_than_cache_equal_dense_ones(width):
    # [1024, 576] and [1000, 576] float32 tables are over 2 MB: summed in 3 column slices (577
    # has no divisor to slice by).
    torch.manual_seed(0)
    indices = torch.randn(1024, 999).topk(8, dim=-1).indices + 1
    indices[:, 0] = 0  # one latent on every row, as dominant latents are in real data
    chosen = sparse_ops.from_indices(indices, 1000)
    values, table_NW, table_FW = torch.rand(1024 * 8), torch.randn(1024, width), torch.randn(1000, width)
    assert sparse_ops._cache_slices(table_NW) == (3 if width == 576 else 1)
    assert sparse_ops._cache_slices(table_FW) == (3 if width == 576 else 1)
    dense = torch.zeros(1024, 1000).scatter_(1, indices, values.view(1024, 8))
    for sums, expected in ((sparse_ops.latent_sums(chosen, values, table_NW), dense.T @ table_NW),
                           (sparse_ops.row_sums(chosen, values, table_FW), dense @ table_FW)):
        assert sums.shape == expected.shape and sums.is_contiguous()
        torch.testing.assert_close(sums, expected, rtol=1e-5, atol=1e-4)
    # Slicing changes no sum: the unsliced sums are the same bits.
    unsliced = torch.nn.functional.embedding_bag(chosen.rows_by_latent, table_NW, chosen.latent_offsets, mode="sum",
                                                 per_sample_weights=values[chosen.by_latent], include_last_offset=True)
    assert torch.equal(sparse_ops.latent_sums(chosen, values, table_NW), unsliced)


def test_code_density_is_estimated_on_a_row_sample():
    codes = torch.zeros(1024, 100)
    codes[:, :7] = 1.0
    assert code_density(codes) == pytest.approx(0.07)


# ----- relu ----------------------------------------------------------------------------------

def _relu_reference(dictionary, x, target, scale):
    codes = torch.relu(_encoder_input(dictionary, x) @ dictionary.W_enc + dictionary.b_enc)
    recon = _decode(dictionary, codes, x)
    weight = dictionary.W_dec.norm(dim=1) if dictionary.options["weight_l1_by_decoder_norm"] else 1.0
    sparsity = dictionary.options["l1_coeff"] * scale * (codes * weight).sum(-1).mean()
    mse = _mse(recon, target)
    return mse + sparsity, mse, sparsity, codes, recon


RELU_CASES = {
    "plain": ({}, {}),
    "weighted": ({"weight_l1_by_decoder_norm": True}, {}),
    "uncentred": ({"apply_b_dec_to_input": False}, {}),
    "transcoder": ({"weight_l1_by_decoder_norm": True}, {"d_out": D + 3, "skip": True}),
}


@pytest.mark.parametrize("case", list(RELU_CASES))
@pytest.mark.parametrize("path", ["dense", "sparse"])
def test_relu_fast_path_matches_dense_reference(case, path):
    options, shape = RELU_CASES[case]
    torch.manual_seed(0)
    dictionary = _perturbed(make_dictionary("relu", D, F, dtype=torch.float64, **shape, **options))
    assert isinstance(dictionary, ReLUDictionary)
    with torch.no_grad():
        dictionary.b_enc.sub_(0.3)  # sparse-ish codes, as late in training
    dictionary.max_sparse_density = 1.0 if path == "sparse" else 0.0
    x = _data().requires_grad_()  # the input's gradient is checked too
    target = _data(d=dictionary.d_out, seed=2) if "d_out" in shape else None
    out = dictionary.loss(x, target, StepInput(sparsity_scale=0.7))
    assert out.codes is not None
    # Backpropagating through the codes as well exercises the codes' own gradient.
    fast = _grads(dictionary, out.loss + 0.01 * out.codes.pow(2).sum(), x)
    loss, mse, sparsity, codes, recon = _relu_reference(dictionary, x, x if target is None else target, 0.7)
    reference = _grads(dictionary, loss + 0.01 * codes.pow(2).sum(), x)
    for got, want in ((out.loss, loss), (out.mse, mse), (out.terms["sparsity"], sparsity), (out.codes, codes),
                      (out.recon, recon)):
        torch.testing.assert_close(got, want, **TOL)
    _assert_same_grads(fast, reference)
    assert 0 < (codes > 0).float().mean() < 0.6


def test_relu_paths_agree_in_float32_and_without_sparsity_gradient():
    torch.manual_seed(0)
    dictionary = _perturbed(make_dictionary("relu", D, F, weight_l1_by_decoder_norm=True))
    assert isinstance(dictionary, ReLUDictionary)
    x = _data(dtype=torch.float32)
    results = []
    for density, fast in ((1.0, True), (0.0, True), (0.0, False)):
        dictionary.max_sparse_density, dictionary.fast_path = density, fast
        out = dictionary.loss(x, None, StepInput(sparsity_scale=0.0))
        results.append((out.loss.detach(), _grads(dictionary, out.loss)))
    for loss, grads in results[:2]:
        torch.testing.assert_close(loss, results[2][0])
        _assert_same_grads(grads, results[2][1], tol={"rtol": 1e-4, "atol": 1e-5})


# ----- topk ----------------------------------------------------------------------------------

def _topk_reference(dictionary, x, target, dead):
    """Dense top-k and AuxK over the ``dead`` latents (boolean [F] or None)."""
    pre = _encoder_input(dictionary, x) @ dictionary.W_enc + dictionary.b_enc
    values, indices = pre.topk(dictionary.options["k"], dim=-1)
    codes = torch.zeros_like(pre).scatter(-1, indices, torch.relu(values))
    recon = _decode(dictionary, codes, x)
    mse = _mse(recon, target)
    aux = torch.zeros((), dtype=pre.dtype)
    if dead is not None:
        dead = dead & ~(codes > 0).any(0)  # latents firing in this batch are alive
    if dead is not None and dead.any():
        k_aux = min(dictionary.options["aux_k"], int(dead.sum()))
        aux_values, aux_indices = pre.masked_fill(~dead, float("-inf")).topk(k_aux, dim=-1)
        aux_codes = torch.zeros_like(pre).scatter(-1, aux_indices, torch.relu(aux_values))
        aux = dictionary.options["aux_coeff"] * _mse(aux_codes @ dictionary.W_dec, (target - recon).detach())
    return mse + aux, mse, aux, codes, recon


@pytest.mark.parametrize("dead", [False, True])
@pytest.mark.parametrize("shape", [{}, {"d_out": D + 3, "skip": True}], ids=["sae", "transcoder"])
def test_topk_fast_path_matches_dense_reference(dead, shape):
    torch.manual_seed(0)
    # 512 latents: wide enough for top_indices' block pre-selection (the path used at real sizes).
    dictionary = _perturbed(make_dictionary("topk", D, 512, k=4, aux_k=8, dtype=torch.float64, **shape))
    dead_F = torch.arange(512) % 3 == 0 if dead else None  # a third of the latents, as the trainer would say
    x = _data().requires_grad_()
    target = _data(d=dictionary.d_out, seed=2) if shape else x
    out = dictionary.loss(x, target if shape else None, StepInput(dead_F=dead_F))
    assert out.codes is not None
    fast = _grads(dictionary, out.loss + 0.01 * out.codes.pow(2).sum(), x)
    loss, mse, aux, codes, recon = _topk_reference(dictionary, x, target, dead_F)
    reference = _grads(dictionary, loss + 0.01 * codes.pow(2).sum(), x)
    for got, want in ((out.loss, loss), (out.mse, mse), (out.terms["aux"], aux), (out.codes, codes),
                      (out.recon, recon)):
        torch.testing.assert_close(got, want.to(got.dtype), **TOL)
    assert (out.terms["aux"] > 0) == dead
    _assert_same_grads(fast, reference)


def test_topk_fast_and_plain_paths_report_the_same_firing():
    torch.manual_seed(0)
    fast = make_dictionary("topk", D, F, k=4)
    plain = copy.deepcopy(fast)
    plain.fast_path = False
    sparse = StepInput(dense_codes=False)
    for seed in range(3):
        x = _data(seed=seed, dtype=torch.float32)
        out_fast, out_plain = fast.loss(x, None, sparse), plain.loss(x, None, sparse)
        torch.testing.assert_close(out_fast.loss, out_plain.loss)
        assert out_fast.codes is None and out_plain.codes is None
        fired = out_fast.fired(F)
        assert torch.equal(fired, out_plain.fired(F)) and fired.any() and not fired.all()
        assert torch.equal(fired, (fast.encode(x) > 0).any(0))


# ----- jumprelu ------------------------------------------------------------------------------

JUMPRELU_CASES = {
    "plain": ({}, {}),
    "uncentred": ({"apply_b_dec_to_input": False}, {}),
    "transcoder": ({}, {"d_out": D + 3, "skip": True}),
}


@pytest.mark.parametrize("case", list(JUMPRELU_CASES))
@pytest.mark.parametrize("path", ["dense", "sparse"])
def test_jumprelu_fast_path_matches_the_plain_straight_through_one(case, path):
    options, shape = JUMPRELU_CASES[case]
    torch.manual_seed(0)
    # A wide bandwidth puts many entries near a threshold, where the thresholds' gradients come from.
    dictionary = _perturbed(make_dictionary("jumprelu", D, F, dtype=torch.float64, bandwidth=0.2, l0_coeff=0.5,
                                            initial_threshold=0.3, **shape, **options))
    assert isinstance(dictionary, JumpReLUDictionary)
    dictionary.max_sparse_density = 1.0 if path == "sparse" else 0.0
    x = _data().requires_grad_()
    target = _data(d=dictionary.d_out, seed=2) if "d_out" in shape else None
    results = []
    for fast in (True, False):
        dictionary.fast_path = fast
        out = dictionary.loss(x, target, StepInput(sparsity_scale=0.7))
        assert out.codes is not None
        grads = _grads(dictionary, out.loss + 0.01 * out.codes.pow(2).sum(), x)
        results.append((out, grads))
    (fast_out, fast_grads), (plain_out, plain_grads) = results
    for name in ("loss", "mse", "recon", "codes"):
        torch.testing.assert_close(getattr(fast_out, name), getattr(plain_out, name), **TOL, msg=name)
    torch.testing.assert_close(fast_out.terms["sparsity"], plain_out.terms["sparsity"], **TOL)
    _assert_same_grads(fast_grads, plain_grads, tol={"rtol": 1e-5, "atol": 1e-7})  # thresholds are float32
    assert plain_grads["log_threshold"].abs().sum() > 0
    assert 0 < (plain_out.codes > 0).float().mean() < 0.6


def test_fast_paths_stay_off_where_they_do_not_apply():
    dictionary = make_dictionary("topk", D, F, k=4, dtype=torch.bfloat16)
    assert not dictionary._fast_path_applies(_data(dtype=torch.bfloat16))
    dictionary = make_dictionary("relu", D, F)
    assert dictionary._fast_path_applies(_data(dtype=torch.float32))
    dictionary.fast_path = False
    assert not dictionary._fast_path_applies(_data(dtype=torch.float32))


@pytest.mark.parametrize("f, k", [(512, 8), (4608, 32), (256, 4), (100, 4), (128, 32)])
def test_top_indices_selects_the_k_largest(f, k):
    from monosemantic.kernels.topk import top_indices
    g = torch.Generator().manual_seed(f + k)
    pre = torch.randn(50, f, generator=g)
    pre[0, : 4 * k] += 10.0  # the top k crowded into few blocks
    pre[1, ::32] += 10.0  # one per block
    chosen = top_indices(pre, k)
    assert chosen.shape == (50, k) and chosen.dtype == torch.int64
    assert all(len(set(row.tolist())) == k for row in chosen)  # k distinct latents per row
    torch.testing.assert_close(pre.gather(1, chosen).sort(1).values, pre.topk(k, dim=-1).values.sort(1).values)


def test_scratch_reuses_memory_only_once_nothing_refers_to_it():
    from monosemantic.kernels import scratch
    scratch.release()
    shape = (1024, 4096)  # 16 MB in float32: large enough to be pooled
    first = scratch.empty(shape, torch.float32)
    first.fill_(1.0)
    pointer = first.data_ptr()
    second = scratch.empty(shape, torch.float32)
    assert second.data_ptr() != pointer  # first is alive: its block is not handed out
    view = first[:10]
    del first
    third = scratch.empty(shape, torch.float32)
    assert third.data_ptr() not in (pointer, second.data_ptr())  # a view keeps the block busy
    assert torch.equal(view, torch.ones(10, 4096))
    del view, third
    again = scratch.empty((512, 4096), torch.float64)  # any dtype and smaller shapes fit a free block
    assert again.data_ptr() == pointer and again.shape == (512, 4096) and again.is_contiguous()
    small = scratch.empty((3, 4), torch.float32)  # small tensors come from the allocator
    assert small.shape == (3, 4)
    del again
    big = scratch.empty((4096, 4096), torch.float32)  # 64 MB: a new block
    big_pointer = big.data_ptr()
    del big
    smaller = scratch.empty((1024, 2560), torch.float32)  # 10 MB: the free 16 MB block, not the 64 MB one
    assert smaller.data_ptr() == pointer
    other = scratch.empty((1024, 2560), torch.float32)  # 64 MB is more than twice 10 MB: a new block
    assert other.data_ptr() != big_pointer
    scratch.release()


@pytest.mark.parametrize("arch, options", [("relu", {}), ("topk", {"k": 16})])
def test_pooled_buffers_never_change_earlier_outputs(arch, options):
    # [1024, 4096] float32 codes are 16 MB: the fast paths take them from the scratch pool.
    torch.manual_seed(0)
    dictionary = make_dictionary(arch, 32, 4096, **options)
    plain = copy.deepcopy(dictionary)
    plain.fast_path = False
    x1, x2 = _data(1024, 32, seed=1, dtype=torch.float32), _data(1024, 32, seed=2, dtype=torch.float32)
    first = dictionary.loss(x1)
    assert first.codes is not None
    kept = first.codes.clone()
    first.loss.backward()
    second = dictionary.loss(x2)  # while `first` is alive
    assert torch.equal(first.codes, kept)
    del first
    third = dictionary.loss(x1)  # the first step's block is free again
    torch.testing.assert_close(third.codes, kept)
    torch.testing.assert_close(second.codes, plain.loss(x2).codes)


@pytest.mark.parametrize("fast", [True, False])
def test_loss_can_return_sparse_codes_instead_of_dense(fast):
    torch.manual_seed(0)
    d = make_dictionary("topk", 16, 64, k=4).train()
    d.fast_path = fast
    x_ND = torch.randn(32, 16)
    dense = d.loss(x_ND)
    sparse = d.loss(x_ND, None, StepInput(dense_codes=False))
    assert sparse.codes is None and sparse.sparse is not None and sparse.sparse.indices.shape == (32, 4)
    rebuilt_NF = torch.zeros(32, 64).scatter(1, sparse.sparse.indices, sparse.sparse.values)
    torch.testing.assert_close(rebuilt_NF, dense.codes)
    torch.testing.assert_close(sparse.loss, dense.loss)
    # Architectures without a sparse form keep dense codes.
    relu = make_dictionary("relu", 16, 64).train()
    relu_codes = relu.loss(x_ND, None, StepInput(dense_codes=False)).codes
    assert relu_codes is not None and relu_codes.shape == (32, 64)


def test_scratch_falls_back_to_fresh_memory_without_torchs_use_count(monkeypatch):
    # The pool relies on a private torch call; where a torch lacks it, tensors must come fresh
    # (never a block that something may still hold) and training must still run.
    from monosemantic.kernels import scratch
    scratch.release()
    monkeypatch.setattr(scratch, "_use_count", None)
    shape = (1024, 4096)
    held = scratch.empty(shape, torch.float32)
    held.fill_(1.0)
    again = scratch.empty(shape, torch.float32)
    assert again.data_ptr() != held.data_ptr()
    assert scratch._blocks == []  # nothing pooled
    d = make_dictionary("topk", 16, 64, k=4)
    out = d.loss(torch.randn(32, 16, generator=torch.Generator().manual_seed(0)))
    out.loss.backward()
    assert d.W_enc.grad is not None and torch.isfinite(d.W_enc.grad).all()


def test_use_count_sees_whether_a_storage_is_shared():
    from monosemantic.kernels import scratch
    if scratch._use_count is None:
        pytest.fail("this torch lacks _storage_Use_Count: the scratch pool falls back to fresh memory; "
                    "check the fallback is intended for this torch version")
    storage = torch.empty(16).untyped_storage()
    alone = scratch._use_count(storage)
    view = torch.empty(0).set_(storage)
    assert scratch._use_count(storage) == alone + 1
    del view
    assert scratch._use_count(storage) == alone


@pytest.mark.parametrize("arch,options", [("relu", {}), ("topk", {"k": 4}), ("batchtopk", {"k": 4}),
                                          ("jumprelu", {}), ("gated", {}), ("matryoshka", {"k": 4})])
@pytest.mark.parametrize("d_out", [None, 24])
def test_encoder_is_created_f_major_and_separate_from_the_decoder(arch, options, d_out):
    # The fast Adam updates W_enc [D, F] through its contiguous transpose; that needs this layout.
    d = make_dictionary(arch, 16, 64, d_out=d_out, **options)
    assert d.W_enc.shape == (16, 64) and d.W_enc.stride() == (1, 16)
    assert d.W_enc.untyped_storage().data_ptr() != d.W_dec.untyped_storage().data_ptr()


# ----- batchtopk and matryoshka ------------------------------------------------------------------

@pytest.mark.parametrize("dead", [False, True])
@pytest.mark.parametrize("arch, shape", [("batchtopk", {}), ("batchtopk", {"d_out": D + 3, "skip": True}),
                                         ("matryoshka", {})], ids=["batchtopk", "transcoder", "matryoshka"])
def test_batch_selection_fast_path_matches_the_plain_one(arch, shape, dead):
    # 4096 latents x 64 rows: the batch's top 4 * 64 entries go through top_entries' block pre-selection.
    torch.manual_seed(0)
    fast = _perturbed(make_dictionary(arch, D, 4096, k=4, aux_k=8, dtype=torch.float64, **shape)).train()
    with torch.no_grad():
        fast.b_enc[:2048].sub_(0.3)  # rows that keep fewer entries than others, and latents that never fire
    plain = copy.deepcopy(fast)
    plain.fast_path = False
    dead_F = torch.arange(4096) % 3 == 0 if dead else None
    target = _data(d=fast.d_out, seed=2) if shape else None
    outputs, grads = [], []
    for dictionary in (fast, plain):
        x = _data().requires_grad_()
        out = dictionary.loss(x, target, StepInput(dead_F=dead_F))
        assert out.codes is not None
        grads.append(_grads(dictionary, out.loss + 0.01 * out.codes.pow(2).sum(), x))
        outputs.append(out)
    got, want = outputs
    kept_per_row = (want.codes > 0).sum(1)
    assert kept_per_row.sum() == 4 * 64 and kept_per_row.min() < kept_per_row.max()  # a batch-level budget
    for name in ("loss", "recon", "codes"):
        torch.testing.assert_close(getattr(got, name), getattr(want, name), **TOL, msg=name)
    for name in want.terms:
        torch.testing.assert_close(got.terms[name], want.terms[name], **TOL, msg=name)
    assert (want.terms["aux"] > 0) == dead
    _assert_same_grads(*grads)
    threshold = fast.state_dict()["threshold"]
    torch.testing.assert_close(threshold, plain.state_dict()["threshold"], rtol=0, atol=0)
    assert threshold > 0


def test_batch_selection_fast_path_can_return_its_entries_only():
    torch.manual_seed(0)
    d = make_dictionary("batchtopk", D, 256, k=4).train()
    x = _data(dtype=torch.float32)
    dense = d.loss(x)
    sparse = d.loss(x, None, StepInput(dense_codes=False))
    assert sparse.codes is None and sparse.sparse is not None and dense.codes is not None
    assert torch.equal(sparse.fired(256), dense.fired(256))
    assert sparse.active_count() == dense.active_count() == int((dense.codes > 0).sum())
    torch.testing.assert_close(sparse.loss, dense.loss)


@pytest.mark.parametrize("count", [1, 300, 5000])
def test_top_entries_selects_the_largest_of_the_whole_matrix(count):
    from monosemantic.kernels.topk import top_entries
    g = torch.Generator().manual_seed(count)
    pre = torch.randn(64, 4096, generator=g)
    pre[3] += 5.0  # one row holding most of the largest entries
    chosen = top_entries(pre, count)
    assert chosen.shape == (count,) and chosen.unique().numel() == count
    torch.testing.assert_close(pre.view(-1)[chosen].sort().values, pre.view(-1).topk(count).values.sort().values)
