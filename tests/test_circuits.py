"""Circuits: transcoders at every layer, the replacement model, frozen forwards and attribution graphs."""

from __future__ import annotations

import json

import pytest
import torch

from monosemantic.circuits.attribution import (
    TARGET,
    Attribution,
    TargetSpec,
    Tracer,
    attribute,
    influence,
    linear_forward,
)
from monosemantic.circuits.graph import SCHEMA_VERSION, build_graph, load_graph, scores
from monosemantic.circuits.intervene import FeatureEdit, intervene
from monosemantic.circuits.linearise import frozen
from monosemantic.circuits.replacement import Editor, Replacement, evaluate_replacement
from monosemantic.circuits.trace import trace
from monosemantic.dictionaries import load_dictionary_native, make_dictionary, save_dictionary
from monosemantic.errors import MonosemanticError
from monosemantic.models import load_model, splice
from monosemantic.training import TrainConfig, Trainer
from monosemantic.training.live import LiveSource

pytestmark = pytest.mark.usefixtures("one_thread")

D, LAYERS = 64, 4
INS = [f"blocks.{layer}.mlp_in" for layer in range(LAYERS)]
OUTS = [f"blocks.{layer}.mlp_out" for layer in range(LAYERS)]
PROMPT = "def add(a, b):\n    return a"


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return load_model(str(tiny_model_dir("llama")))


def _transcoders(arch: str, *, skip: bool = True, seed: int = 0, per_layer: int = 32, k: int = 4, **options):
    """Random transcoders with non-zero biases and skip path, so that every term is exercised."""
    torch.manual_seed(seed)
    t = make_dictionary(arch, D, LAYERS * per_layer, k=k, sites_in=INS, sites_out=OUTS, skip=skip, **options)
    with torch.no_grad():  # outputs about the size of the tiny model's MLP outputs
        t.b_enc.normal_(std=0.1)
        t.b_dec.normal_(std=0.01)
        for name, W in t.named_parameters():
            if name.startswith("W_dec"):
                W.mul_(0.02)
        if skip:
            t.W_skip.normal_(std=0.01)
    return t


def _rows(n: int = 12, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, LAYERS, D, generator=g), torch.randn(n, LAYERS, D, generator=g)


# ----- the dictionaries ------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["transcoders", "clt"])
def test_sparse_training_decode_equals_dense_decode(arch):
    t = _transcoders(arch)
    x, y = _rows()
    out = t(x)
    loss = t.loss(x, y)
    assert torch.allclose(loss.recon, out.recon, atol=1e-5)
    assert torch.allclose(t.decode(out.codes, x), out.recon, atol=1e-5)
    # k per layer: every layer's block of latents holds exactly k active codes per row
    active = (out.codes.view(12, LAYERS, -1) > 0).sum(-1)
    assert bool((active <= 4).all()) and int(active.max()) == 4
    expected_mse = float(((out.recon.detach() - y) ** 2).sum((1, 2)).mean())
    assert float(loss.mse.detach()) == pytest.approx(expected_mse, rel=1e-5)


def test_per_layer_latents_write_to_their_layer_and_clt_latents_to_later_layers():
    x, _ = _rows(4)
    for arch, reach in (("transcoders", lambda s, t: s == t), ("clt", lambda s, t: t >= s)):
        tc = _transcoders(arch, skip=False)
        codes = torch.zeros(4, tc.d_sae)
        base = tc.decode(codes)
        for s in range(LAYERS):
            bumped = codes.clone()
            bumped[:, s * (tc.d_sae // LAYERS) + 3] = 1.0
            changed = (tc.decode(bumped) - base).abs().amax(dim=(0, 2)) > 0
            assert changed.tolist() == [reach(s, t) for t in range(LAYERS)], (arch, s)


@pytest.mark.parametrize("arch", ["transcoders", "clt"])
def test_fold_scale_makes_a_scaled_dictionary_act_on_raw_rows(arch):
    t = _transcoders(arch)
    x, _ = _rows()
    c, o = [2.0, 0.5, 3.0, 1.5], [4.0, 0.25, 1.0, 2.0]
    c_t, o_t = torch.tensor(c)[:, None], torch.tensor(o)[:, None]
    expected = t(x * c_t).recon / o_t
    t.fold_scale_(c, o)
    assert torch.allclose(t(x).recon, expected, atol=1e-4)


@pytest.mark.parametrize("arch", ["transcoders", "clt"])
def test_save_and_load_round_trip(arch, tmp_path):
    t = _transcoders(arch)
    x, _ = _rows()
    load = load_dictionary_native(save_dictionary(t, tmp_path / arch))
    assert type(load) is type(t) and load.config == t.config
    assert torch.equal(load(x).recon, t(x).recon)


@pytest.mark.parametrize("options, message", [
    ({"k": 4, "n_layers": 3}, "multiple of n_layers"),
    ({"n_layers": 4}, "needs option(s) k"),
    ({"k": 4}, "needs n_layers"),
    ({"k": 4, "sites_in": INS, "sites_out": OUTS[:2]}, "one site per layer"),
    ({"k": 40, "n_layers": 4}, "option k=40"),
    ({"k": 4, "n_layers": 4, "apply_b_dec_to_input": True}, "cannot centre"),
])
def test_bad_options_are_refused(options, message):
    with pytest.raises(MonosemanticError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make_dictionary("clt", D, 128, **options)


def test_loss_needs_targets_of_the_right_shape():
    t = _transcoders("transcoders")
    x, y = _rows()
    with pytest.raises(MonosemanticError, match="needs the MLP outputs"):
        t.loss(x)
    with pytest.raises(MonosemanticError, match=r"\[rows, 4, 64\]"):
        t.loss(x, y[:, :2])


# ----- training from one live forward --------------------------------------------------------


def test_live_source_reads_every_pair_in_one_forward(lm):
    source = LiveSource(lm, sites=INS, sites_out=OUTS, context_length=32, buffer_batches=1, model_batch_size=4)
    assert source.layout.input_shape == (LAYERS, D) and source.layout.target_width == D
    batch = next(source.batches(64, seed=0))
    assert batch.target is not None
    assert batch.x.shape == (64, LAYERS, D) and batch.target.shape == (64, LAYERS, D)
    # rows pair up: the same token's MLP input and output at each layer (the MLP maps one to the other)
    mlp = lm.model.get_submodule(lm.site("blocks.1.mlp_out").module)
    with torch.no_grad():
        assert torch.allclose(mlp(batch.x[:, 1]), batch.target[:, 1], atol=1e-5)
    with pytest.raises(MonosemanticError, match="one output site per input site"):
        LiveSource(lm, sites=INS, sites_out=OUTS[:2])


@pytest.mark.parametrize("arch", ["transcoders", "clt"])
def test_trainer_fits_transcoders_at_every_layer(lm, arch, tmp_path):
    source = LiveSource(lm, sites=INS, sites_out=OUTS, context_length=64, model_batch_size=8)
    x, y = next(source.batches(512, seed=99))
    assert y is not None
    t = make_dictionary(arch, D, LAYERS * 64, k=8, sites_in=INS, sites_out=OUTS, model=lm.name)
    fvu = lambda d: float(((d(x).recon.detach() - y) ** 2).sum() / ((y - y.mean(0)) ** 2).sum())  # noqa: E731
    result = Trainer({arch: t}, TrainConfig(total_tokens=60_000, batch_size=256, lr=3e-3),
                     out_dir=tmp_path / arch).fit(source, progress=False)
    trained = result.dictionaries[arch]
    assert fvu(trained) < 0.7 * fvu(t)  # the untrained copy's outputs are noise around b_dec = 0
    reloaded = load_dictionary_native(tmp_path / arch / arch)
    assert torch.allclose(reloaded(x).recon, trained(x).recon, atol=1e-5)


# ----- the replacement model ------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["transcoders", "clt"])
def test_spliced_outputs_are_the_dictionarys_outputs_at_every_layer(lm, arch):
    t = _transcoders(arch)
    ids = lm.tokenizer(PROMPT, return_tensors="pt").input_ids
    acts = lm.capture(ids, INS)
    expected = t(torch.stack([acts[s][0] for s in INS], 1)).recon
    seen = {}

    class Keep(Editor):
        def output(self, layer, out_ND, real_ND, x_ND):
            seen[layer] = out_ND.detach()
            return real_ND

    with torch.no_grad(), Replacement(lm, t).spliced(Keep()):
        lm.model(input_ids=ids)
    assert sorted(seen) == list(range(LAYERS))
    for layer in range(LAYERS):
        assert torch.allclose(seen[layer], expected[:, layer], atol=1e-5)


def test_replacement_refuses_what_does_not_fit(lm):
    with pytest.raises(MonosemanticError, match="transcoders at many layers"):
        Replacement(lm, make_dictionary("topk", D, 32, k=4))
    partial = make_dictionary("transcoders", D, 64, k=4, sites_in=INS[:2], sites_out=OUTS[:2])
    with pytest.raises(MonosemanticError, match="but not 2-3"):
        Replacement(lm, partial)
    assert Replacement(lm, partial, require_all=False).layers == [0, 1]
    wide = make_dictionary("transcoders", 2 * D, 128, k=4, sites_in=INS, sites_out=OUTS)
    with pytest.raises(MonosemanticError, match="map 64 -> 64"):
        Replacement(lm, wide)
    other = make_dictionary("transcoders", D, 128, k=4, sites_in=INS, sites_out=OUTS, model="gpt2")
    with pytest.raises(MonosemanticError, match="trained on gpt2"):
        Replacement(lm, other)
    crossed = make_dictionary("transcoders", D, 128, k=4, sites_in=INS, sites_out=OUTS[1:] + OUTS[:1])
    with pytest.raises(MonosemanticError, match="blocks.L.mlp_in -> blocks.L.mlp_out"):
        Replacement(lm, crossed)


def test_evaluate_replacement_matches_an_independent_zero_ablation(lm):
    t = _transcoders("transcoders")
    windows = torch.randint(100, 5000, (3, 24))
    result = evaluate_replacement(Replacement(lm, t), windows)
    mask = torch.ones(3, 24, dtype=torch.bool)
    mask[:, 0] = False  # position 0 is neither replaced nor scored

    def zero(acts):
        return torch.where(mask[..., None], torch.zeros_like(acts), acts)

    with torch.no_grad():
        clean = lm.model(input_ids=windows).logits
        with splice(lm, OUTS[0], zero), splice(lm, OUTS[1], zero), splice(lm, OUTS[2], zero), \
                splice(lm, OUTS[3], zero):
            zeroed = lm.model(input_ids=windows).logits
    scored = mask[:, :-1]
    targets = windows[:, 1:][scored]
    ce = lambda logits: float(torch.nn.functional.cross_entropy(logits[:, :-1][scored], targets))  # noqa: E731
    assert result.n_tokens == int(scored.sum())
    assert result.ce_clean == pytest.approx(ce(clean), rel=1e-5)
    assert result.ce_zero == pytest.approx(ce(zeroed), rel=1e-5)
    assert result.kl_replaced > 0 and result.ce_replaced != result.ce_clean
    assert result.mean_l0 == pytest.approx(4.0)


# ----- frozen forwards ---------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["llama", "gemma", "gemma2", "gpt2", "gpt_neox"])
def test_frozen_forward_gives_the_models_logits_and_replays_them(tiny_model_dir, family):
    model = load_model(str(tiny_model_dir(family)))
    ids = model.tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        clean = model.model(input_ids=ids).logits
        with frozen(model) as freeze:
            first = model.model(input_ids=ids).logits
        assert freeze.patterns and freeze.scales
        with frozen(model, freeze):
            again = model.model(input_ids=ids).logits
            other = model.model(input_ids=ids.flip(1)).logits  # other inputs through the same constants
        after = model.model(input_ids=ids).logits
    assert torch.allclose(first, clean, atol=1e-4)
    assert torch.equal(first, again)
    assert not torch.allclose(other, model.model(input_ids=ids.flip(1)).logits, atol=1e-3)
    assert torch.equal(after, clean)  # the model is as before


def test_frozen_forward_is_linear_in_the_residual_stream(lm):
    ids = lm.tokenizer(PROMPT, return_tensors="pt").input_ids
    embed = lm.model.get_input_embeddings()
    base = embed(ids).detach()
    direction = torch.randn_like(base)

    def logits_at(e):
        handle = embed.register_forward_hook(lambda _m, _a, _o: e)
        try:
            with frozen(lm, freeze):
                return lm.model(input_ids=ids).logits
        finally:
            handle.remove()

    with torch.no_grad():
        with frozen(lm) as freeze:
            lm.model(input_ids=ids)
        f0, f1, f2 = (logits_at(base + s * direction) for s in (0.0, 1.0, 2.0))
        # with MLPs still in the model it is not affine, so take them out of the comparison
    with torch.no_grad(), Replacement(lm, _transcoders("transcoders", skip=False)).spliced(_Constant()):
        g0, g1, g2 = (logits_at(base + s * direction) for s in (0.0, 1.0, 2.0))
    assert torch.allclose(g2 - g1, g1 - g0, atol=1e-3)
    assert not torch.allclose(f2 - f1, f1 - f0, atol=1e-3)


class _Constant(Editor):
    """MLP outputs fixed at zero: what is left of the frozen model is linear (plus biases)."""

    def output(self, layer, out_ND, real_ND, x_ND):
        return torch.zeros_like(real_ND)


# ----- attribution ---------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["transcoders", "clt"])
def traced(request, lm):
    replacement = Replacement(lm, _transcoders(request.param))
    ids = lm.tokenizer(PROMPT, return_tensors="pt").input_ids[0]
    target = TargetSpec(lm.tokenizer.encode(" +")[0], minus=lm.tokenizer.encode(" -")[0])
    tracer = Tracer(replacement, ids, target)
    tracer.compute_rows([TARGET, *range(tracer.attribution.n_features)])
    return replacement, ids, target, tracer


def _replay(replacement, ids, target, tracer, change=None):
    """The frozen model at the prompt's inputs, with ``change(codes, errors, embeddings)`` applied first."""
    run = tracer.run
    L = len(replacement.layers)
    codes = {i: run.inputs.leaves[i].detach().clone() for i in range(L)}
    errors = {i: run.inputs.errors[i].detach().clone() for i in range(L)}
    embeddings = run.embeddings_SD.detach().clone()
    if change is not None:
        change(codes, errors, embeddings)
    replayed, _ = linear_forward(replacement, ids, target, tracer.freeze, codes=codes, errors=errors,
                                 embeddings_SD=embeddings)
    return replayed


def test_the_target_is_the_models_logit_difference(lm, traced):
    _, ids, target, tracer = traced
    with torch.no_grad():
        logits = lm.model(input_ids=ids[None]).logits[0, -1]
    assert tracer.attribution.target_value == pytest.approx(float(logits[target.token] - logits[target.minus]),
                                                            abs=1e-4)


def test_edge_weights_are_the_linearised_models_gradients(traced):
    """Doubling an input adds exactly its edge to every row (the frozen model is affine in its inputs)."""
    replacement, ids, target, tracer = traced
    a = tracer.attribution
    base = _replay(replacement, ids, target, tracer)
    rows = [TARGET, *[n for n in range(a.n_features) if int(a.feature_index[n, 0]) == LAYERS - 1][:3]]
    probes = []
    strongest = int(a.rows[TARGET][:a.n_features].abs().argmax())
    i, p, f = a.feature_index[strongest].tolist()
    probes.append((strongest, lambda c, e, x: c[i].__setitem__((p, f), 2 * c[i][p, f])))
    probes.append((a.error_id(1, 3), lambda c, e, x: e[1].__setitem__(3, 2 * e[1][3])))
    probes.append((a.embedding_id(2), lambda c, e, x: x.__setitem__(2, 2 * x[2])))
    for source, change in probes:
        doubled = _replay(replacement, ids, target, tracer, change)
        for node in rows:
            if node == TARGET:
                delta = float((doubled.target - base.target).detach())
            else:
                li, pi, fi = a.feature_index[node].tolist()
                delta = float((doubled.inputs.pre[li][pi, fi] - base.inputs.pre[li][pi, fi]).detach())
            tolerance = 1e-6 * float(a.rows[node].abs().sum()) + 1e-5
            assert delta == pytest.approx(float(a.rows[node][source]), abs=tolerance), (source, node)
    assert any(float(a.rows[TARGET][s]) != 0 for s, _ in probes)


def test_contributions_into_a_node_sum_to_its_pre_activation(traced):
    """Completeness: edges in + the constant term (the frozen model at zero inputs) = the node's value."""
    replacement, ids, target, tracer = traced
    a = tracer.attribution

    def zero(codes, errors, embeddings):
        for t in (*codes.values(), *errors.values(), embeddings):
            t.zero_()

    at_zero = _replay(replacement, ids, target, tracer, zero)
    values = {TARGET: (a.target_value, float(at_zero.target.detach()))}
    for node in range(a.n_features):
        li, pi, fi = a.feature_index[node].tolist()
        values[node] = (float(a.feature_pre[node]), float(at_zero.inputs.pre[li][pi, fi].detach()))
    for node, (value, constant) in values.items():
        row = a.rows[node].double()
        # float32 rounding of the terms summed: a millionth of their magnitudes
        tolerance = 1e-6 * float(row.abs().sum() + abs(constant)) + 1e-5
        assert float(row.sum()) + constant == pytest.approx(value, abs=tolerance), node
        assert a.biases[node] == pytest.approx(constant, abs=tolerance)


def test_features_only_receive_from_earlier_layers(traced):
    _, _, _, tracer = traced
    a = tracer.attribution
    layer_of = a.feature_index[:, 0]
    assert bool((a.feature_index[:, 1] > 0).all())  # position 0, the attention sink, has no features
    for node in range(a.n_features):
        incoming = a.rows[node][:a.n_features].nonzero().flatten()
        assert bool((layer_of[incoming] < layer_of[node]).all())
        # errors of the node's own layer or later cannot reach its pre-activation either
        later_errors = [a.error_id(i, p) for i in range(int(layer_of[node]), LAYERS) for p in range(a.n_positions)]
        assert float(a.rows[node][later_errors].abs().sum()) == 0


def test_attribute_expands_the_most_influential_features_first(lm):
    replacement = Replacement(lm, _transcoders("clt"))
    ids = lm.tokenizer(PROMPT, return_tensors="pt").input_ids[0]
    target = TargetSpec(lm.tokenizer.encode(" +")[0])
    few = attribute(replacement, ids, target, max_feature_nodes=5, batch=5, progress=False)
    assert len(few.rows) == 6
    top = few.rows[TARGET][:few.n_features].abs().argsort(descending=True)[:5]
    assert set(n for n in few.rows if n != TARGET) == set(top.tolist())  # with one batch, the direct effects rank


def test_graph_prunes_stores_and_reads_back(lm, traced, tmp_path):
    replacement, ids, target, tracer = traced
    a = tracer.attribution
    full = build_graph(a, lm.tokenizer, node_threshold=1.0, edge_threshold=1.0)
    small = build_graph(a, lm.tokenizer, node_threshold=0.5, edge_threshold=0.8)
    features = lambda g: [n for n in g.nodes if n["kind"] == "feature"]  # noqa: E731
    assert len(features(small)) < len(features(full)) <= a.n_features
    assert len(small.edges) < len(full.edges)
    ids_full = {n["id"] for n in full.nodes}
    assert all(e["source"] in ids_full and e["target"] in ids_full for e in full.edges)
    for key in ("completeness", "replacement"):
        assert 0 < full.scores[key] <= 1
    # edges into the target: the row's entries, nothing invented
    into_target = {e["source"]: e["weight"] for e in full.edges if e["target"] == "target"}
    strongest = int(a.rows[TARGET][:a.n_features].abs().argmax())
    layer, position, latent = a.feature_index[strongest].tolist()
    assert into_target[f"feature:{layer}:{position}:{latent}"] == pytest.approx(float(a.rows[TARGET][strongest]))
    path = full.save(tmp_path / "graph.json")
    assert load_graph(path) == full
    data = json.loads(path.read_text())
    data["version"] = SCHEMA_VERSION + 1
    path.write_text(json.dumps(data))
    with pytest.raises(MonosemanticError, match="schema version"):
        load_graph(path)
    path.write_text(json.dumps({"nodes": []}))
    with pytest.raises(MonosemanticError, match="not a monosemantic attribution graph"):
        load_graph(path)


def _attribution(rows: dict[int, list[float]]) -> Attribution:
    """A hand-made attribution over 2 layers, 1 position: features 0 (layer 0) and 1 (layer 1)."""
    return Attribution(ids_S=torch.tensor([5]), layers=[0, 1], target=TargetSpec(7), target_value=1.0,
                       feature_index=torch.tensor([[0, 0, 3], [1, 0, 4]]), feature_value=torch.ones(2),
                       feature_pre=torch.ones(2), error_norm=torch.ones(2, 1),
                       rows={n: torch.tensor(r) for n, r in rows.items()})


def test_scores_follow_their_definitions():
    # inputs: feature 0, feature 1, error (layer 0), error (layer 1), token 0
    clean = _attribution({TARGET: [0.0, 2.0, 0.0, 0.0, 0.0], 1: [1.0, 0.0, 0.0, 0.0, 1.0], 0: [0, 0, 0, 0, 3.0]})
    assert scores(clean) == pytest.approx({"completeness": 1.0, "replacement": 1.0, "unexpanded_influence": 0.0,
                                           "active_features": 2, "expanded_features": 2})
    # the target takes half its weight from the layer-1 error; feature 1 a quarter from the layer-0 error
    mixed = _attribution({TARGET: [0.0, 1.0, 0.0, -1.0, 0.0], 1: [0.0, 0.0, 1.0, 0.0, 3.0]})
    infl = influence(mixed)
    assert infl.tolist() == pytest.approx([0.0, 0.5, 0.125, 0.5, 0.375])
    got = scores(mixed)
    # completeness: target (weight 1) 0.5 complete, feature 1 (weight 0.5) 0.75 complete
    assert got["completeness"] == pytest.approx((1 * 0.5 + 0.5 * 0.75) / 1.5)
    assert got["replacement"] == pytest.approx(0.375 / (0.375 + 0.625))
    assert got["expanded_features"] == 1


def test_trace_refuses_bad_prompts_and_targets(lm):
    replacement = Replacement(lm, _transcoders("transcoders"))
    with pytest.raises(MonosemanticError, match="not one"):
        trace(replacement, PROMPT, " return value", progress=False)
    with pytest.raises(MonosemanticError, match="longer than"):
        trace(replacement, "a " * 300, " +", progress=False)
    with pytest.raises(MonosemanticError, match="empty"):
        trace(replacement, "", " +", progress=False)
    graph = trace(replacement, PROMPT, " +", minus=" -", max_feature_nodes=8, progress=False)
    assert graph.meta["target"]["text"] == " +" and graph.meta["target"]["minus_text"] == " -"
    assert graph.scores["expanded_features"] == 8


# ----- interventions -------------------------------------------------------------------------------


def test_edits_that_change_nothing_leave_every_run_as_the_model(lm, traced):
    replacement, ids, target, tracer = traced
    a = tracer.attribution
    i, p, f = a.feature_index[0].tolist()
    keep = [FeatureEdit(layer=replacement.layers[i], latent=f, position=p, value=None, add=0.0)]
    for model in ("replacement", "real"):
        result = intervene(replacement, ids, keep, target, model=model)
        assert result.target_after == result.target_before == pytest.approx(a.target_value, abs=1e-4)
        assert result.changes == ()


def test_holding_features_an_ablation_moves_the_target_by_minus_its_edge(traced):
    """The graph's claim, checked through the intervention API: direct effects only."""
    replacement, ids, target, tracer = traced
    a = tracer.attribution
    row = a.rows[TARGET]
    for node in row[:a.n_features].abs().argsort(descending=True)[:3].tolist():
        i, p, f = a.feature_index[node].tolist()
        edit = FeatureEdit(layer=replacement.layers[i], latent=f, position=p, value=0.0)
        result = intervene(replacement, ids, [edit], target, hold_features=True)
        tolerance = 1e-6 * float(row.abs().sum()) + 1e-5
        assert result.target_change == pytest.approx(-float(row[node]), abs=tolerance)
        assert [(c.layer, c.position, c.latent, c.after) for c in result.changes] == [(edit.layer, p, f, 0.0)]


def test_ablating_in_the_replacement_and_the_real_model_spreads_downstream(traced):
    replacement, ids, target, tracer = traced
    a = tracer.attribution
    first_layer = a.feature_index[:, 0] == 0
    node = int((a.feature_value * first_layer).argmax())
    i, p, f = a.feature_index[node].tolist()
    steer = FeatureEdit(layer=replacement.layers[i], latent=f, position=p, value=None, add=5.0)
    for model in ("replacement", "real"):
        result = intervene(replacement, ids, [steer], target, model=model)
        assert result.target_change != 0
        edited = [c for c in result.changes if (c.layer, c.position, c.latent) == (steer.layer, p, f)]
        assert edited and edited[0].after == pytest.approx(edited[0].before + 5.0)
        assert any(c.layer > steer.layer for c in result.changes), model  # later features responded


def test_bad_interventions_are_refused(lm):
    replacement = Replacement(lm, _transcoders("transcoders"))
    ids = lm.tokenizer(PROMPT, return_tensors="pt").input_ids[0]
    target = TargetSpec(lm.tokenizer.encode(" +")[0])
    for edits, message in (([], "no edits"), ([FeatureEdit(layer=9, latent=0)], "cover layers"),
                           ([FeatureEdit(layer=0, latent=999)], "latents 0-31"),
                           ([FeatureEdit(layer=0, latent=1, position=99)], "has 10 tokens")):
        with pytest.raises(MonosemanticError, match=message):
            intervene(replacement, ids, edits, target)
    with pytest.raises(MonosemanticError, match="expected one of replacement, real"):
        intervene(replacement, ids, [FeatureEdit(0, 1)], target, model="fake")
    with pytest.raises(MonosemanticError, match="hold_features applies"):
        intervene(replacement, ids, [FeatureEdit(0, 1)], target, model="real", hold_features=True)


# ----- the command line ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def replaced(tiny_model_dir, tmp_path_factory):
    from typer.testing import CliRunner

    from monosemantic.cli import app

    out = tmp_path_factory.mktemp("replace") / "run"
    result = CliRunner().invoke(app, ["replace", "--model", str(tiny_model_dir("llama")), "--out", str(out),
                                      "--expansion", "1", "--k", "4", "--tokens", "4096", "--batch-size", "512",
                                      "--context", "64", "--evaluate-windows", "2"])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_replace_trains_every_layer_and_reports_the_replacement(replaced):
    out, output = replaced
    folder = out / "transcoders_k4_x1"
    t = load_dictionary_native(folder)
    assert t.arch == "transcoders" and t.sites == INS and t.sites_out == OUTS and t.d_sae == LAYERS * D
    scored = json.loads((folder / "replacement.json").read_text())
    assert scored["layers"] == list(range(LAYERS)) and scored["n_tokens"] > 0
    assert f"loss recovered {scored['loss_recovered']:.3f}" in output


def test_trace_writes_the_graph_its_page_and_feature_pages(replaced, tmp_path):
    from typer.testing import CliRunner

    from monosemantic.cli import app

    out, _ = replaced
    result = CliRunner().invoke(app, ["trace", str(out), "def add(a, b):\\n    return a", "--target", " +",
                                      "--out", str(tmp_path / "g"), "--examples", "4"])
    assert result.exit_code == 0, result.output
    graph = load_graph(tmp_path / "g" / "graph.json")
    assert graph.meta["prompt"] == PROMPT and graph.meta["target"]["text"] == " +"
    assert f"completeness {graph.scores['completeness']:.3f}" in result.output
    page = (tmp_path / "g" / "index.html").read_text()
    features = [n for n in graph.nodes if n["kind"] == "feature"]
    assert features and all(f'data-node="{n["id"]}"' in page for n in graph.nodes)
    for node in features:
        assert (tmp_path / "g" / "features" / f"layer_{node['layer']}" / f"{node['latent']}.html").is_file()
    # a rerun replaces the graph; a folder of other files is refused
    assert CliRunner().invoke(app, ["trace", str(out), PROMPT, "--target", " -", "--out", str(tmp_path / "g"),
                                    "--examples", "0"]).exit_code == 0
    assert load_graph(tmp_path / "g" / "graph.json").meta["target"]["text"] == " -"
    assert not (tmp_path / "g" / "features").exists()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    refused = CliRunner().invoke(app, ["trace", str(out), PROMPT, "--target", " -", "--out", str(tmp_path / "other")])
    assert refused.exit_code == 2 and "no graph.json" in refused.stderr
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("args, message", [
    (["--target", " return value"], "is 2 tokens"),
    (["--target", " +", "--max-features", "-1"], "max_feature_nodes=-1"),
    (["--target", " +", "--node-threshold", "0"], "node_threshold=0.0"),
])
def test_trace_bad_input_is_one_line(replaced, tmp_path, args, message):
    from typer.testing import CliRunner

    from monosemantic.cli import app

    out, _ = replaced
    result = CliRunner().invoke(app, ["trace", str(out), PROMPT, "--out", str(tmp_path / "g"), *args])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("arch", ["transcoders", "clt"])
def test_auxk_revives_only_dead_latents_of_each_layer(arch):
    from monosemantic.dictionaries import StepInput

    t = _transcoders(arch, skip=False).train()
    x, y = _rows(3)  # 3 rows fire at most 12 of each layer's 32 latents
    codes = t.loss(x, y).codes
    assert codes is not None
    fired = codes.ne(0).any(0)
    dead = ~fired
    assert bool(dead.any()) and bool(fired.any())
    grads = {}
    for name, step in (("plain", None), ("aux", StepInput(dead_F=dead))):
        t.zero_grad()
        out = t.loss(x, y, step)
        out.loss.backward()
        assert t.W_enc.grad is not None
        grads[name] = t.W_enc.grad.detach().clone()  # [S, D, F]
        if name == "aux":
            assert float(out.terms["aux"]) > 0
        else:
            assert float(out.terms["aux"]) == 0
    changed_F = (grads["aux"] - grads["plain"]).abs().sum(1).flatten() > 0  # per latent, layer-major
    assert bool(changed_F.any())
    assert not bool((changed_F & fired).any())  # live latents get no AuxK gradient
