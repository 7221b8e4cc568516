"""Debiasing workflow (circuitkit.debias, circuitkit.ablate, bench debias)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from circuitkit import debias
from circuitkit.ablate import FeatureAblation, pooled_codes, pooled_residual


@pytest.fixture(scope="module")
def toy():
    from circuitkit.models.toylm import load_toy_lm, load_toy_saes

    model, tok = load_toy_lm()
    sae = load_toy_saes(["blocks.1.hook_resid_post"])["blocks.1.hook_resid_post"]
    return model, tok, sae


@pytest.fixture(scope="module")
def result(toy):
    model, tok, sae = toy
    cfg = debias.DebiasConfig(n_train=400, n_test=400)
    return debias.run_debias(cfg, model=model, tokenizer=tok, sae=sae)


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
    sd = X.std(0)
    # sklearn: mean log-loss + alpha ||w||_1  <=>  C = 1 / (n alpha) with its summed loss
    ref = LogisticRegression(penalty="l1", C=1 / (n * alpha), solver="liblinear", tol=1e-10, max_iter=10000,
                             intercept_scaling=1e4).fit(X / sd, y)
    np.testing.assert_allclose(r.coef, ref.coef_.ravel(), atol=2e-3)
    assert set(r.top(2)) == {0, 3}
    # per-prompt scores are |A| * |z| on the standardised codes
    np.testing.assert_allclose(r.scores.toarray(), np.abs(X / sd) * r.importance[None], atol=1e-9)


def test_rank_features_from_features_pools_rows_per_prompt():
    from circuitkit.sae import Features

    codes = sp.csr_matrix(np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [0.0, 4.0]]))
    idx = pd.DataFrame({"prompt": [0, 0, 1, 1], "position": [1, 2, 1, 2], "token": ["a"] * 4})
    feats = Features({"L1.resid_post": codes}, {}, idx)
    np.testing.assert_allclose(debias._as_codes(feats).toarray(), [[2.0, 0.0], [0.0, 3.0]])


# -- bad input ------------------------------------------------------------------------------------------------
def test_bad_inputs_raise(toy):
    model, tok, sae = toy
    X = sp.random(20, 5, density=0.5, random_state=0, format="csr")
    with pytest.raises(ValueError, match="exactly 2 classes"):
        debias.rank_features(X, np.zeros(20, dtype=int))
    with pytest.raises(ValueError, match="rows"):
        debias.rank_features(X, np.arange(19) % 2)
    with pytest.raises(ValueError, match="single class"):
        debias.ProfessionProbe().fit(np.ones((4, 2)), [1, 1, 1, 1])
    with pytest.raises(ValueError, match="out of range"):
        FeatureAblation(sae=sae, layer=1, features=[0, int(sae.cfg.d_sae)])
    with pytest.raises(ValueError, match="out of range"):
        debias.ablate(model, tok, ["anna is a nurse ."], [-1], sae=sae, sae_layer=1, readout_layer=3)
    with pytest.raises(ValueError, match="empty selection"):
        debias.ablate(model, tok, ["anna is a nurse ."], [], sae=sae, sae_layer=1, readout_layer=3)

    class Explorer:
        marked: set = set()

    with pytest.raises(ValueError, match="no features are marked"):
        debias.marked_features(Explorer())
    with pytest.raises(ValueError, match="profession_signal"):
        debias.load_bios_splits(10, 10, profession_signal=0.0)
    with pytest.raises(ValueError, match="valid choices"):
        debias.DebiasConfig(target="logit")


def test_marked_features_reads_explorer():
    class Explorer:
        marked = {"L1.resid_post/f7", "L1.resid_post/f3"}

    assert debias.marked_features(Explorer()) == [3, 7]
    Explorer.marked = {"L1.resid_post/f7", "L2.resid_post/f3"}
    with pytest.raises(ValueError, match="several sites"):
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
    model, tok, sae = toy
    prompts = debias.load_bios_splits(16, 16, seed=3).test["prompt"].tolist()
    codes = pooled_codes(model, tok, prompts, sae=sae, layer=1).toarray()
    f = int(np.argmax((codes > 0).mean(0) * codes.mean(0)))
    base = pooled_residual(model, tok, prompts, layer=3)
    abl = pooled_residual(model, tok, prompts, layer=3, ablate=FeatureAblation(sae=sae, layer=1, features=[f]))
    assert np.abs(abl - base).max() > 1e-3
    # an unused feature changes nothing
    dead = int(np.flatnonzero(codes.max(0) == 0)[0])
    same = pooled_residual(model, tok, prompts, layer=3, ablate=FeatureAblation(sae=sae, layer=1, features=[dead]))
    np.testing.assert_allclose(same, base, atol=1e-5)
    # attribution patching approximates the effect of zero-ablating the feature on a linear read-out
    from circuitkit.ablate import feature_attributions

    w = torch.randn(base.shape[1], generator=torch.Generator().manual_seed(0))
    attr = feature_attributions(model, tok, prompts, sae=sae, layer=1, readout_layer=3, readout=lambda h: h @ w)
    effect = (abl - base) @ w.numpy()
    corr = np.corrcoef(-attr[:, f], effect)[0, 1]
    # a first-order approximation through three LayerNorm'd blocks: 0.68 on the shipped toy LM (16 prompts)
    assert corr > 0.5, corr


# -- the science --------------------------------------------------------------------------------------------------
def test_original_probe_relies_on_gender(result):
    t = result.table().set_index("method")
    # the ambiguous-trained probe is worse on balanced data than the oracle, mostly in the off-diagonal cells
    assert t.at["oracle", "profession_acc"] - t.at["original", "profession_acc"] > 0.02
    assert t.at["oracle", "worst_group_acc"] - t.at["original", "worst_group_acc"] > 0.05
    assert t.at["original", "classifier_gender_acc"] > t.at["oracle", "classifier_gender_acc"] + 0.03


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
    assert cl.seconds > 0 and cl.importance.shape == (int(result.features.shape[1]),)
    circ = cl.circuit(10)
    assert set(circ.edges["target"]) == {"y"} and len(circ.edges) == min(10, len(cl.order))
