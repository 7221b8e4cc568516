"""Feature evidence and labels agree with plain-numpy recomputations; user labels win and are saved."""

from collections import Counter

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from circuitkit.activations import Activations
from circuitkit.circuit import Circuit, error_node, feature_node
from circuitkit.labels import feature_evidence, label_circuit, short_label
from circuitkit.sae import Features

VOCAB = ["the", "john", "mary", "store", "gave", "a", "drink", "to", "went", "and"]
SITES = ("L0.resid_post", "L1.resid_post")


def make_features(n_prompts=40, length=9, d=10, seed=0, meta=None):
    """Random sparse codes plus planted features: f0 of L0 fires on 'john' only; f1 of L0 fires on 'mary'
    (strongly) and on 'store' (weakly); the last feature of every site is dead."""
    rng = np.random.default_rng(seed)
    tokens = [[VOCAB[i] for i in rng.integers(0, len(VOCAB), length)] for _ in range(n_prompts)]
    index = pd.DataFrame({"prompt": np.repeat(np.arange(n_prompts), length),
                          "position": np.tile(np.arange(length), n_prompts)})
    index["token"] = [tokens[p][t] for p, t in zip(index["prompt"], index["position"])]
    tok = index["token"].to_numpy()
    codes = {}
    for s in SITES:
        dense = np.where(rng.random((len(index), d)) < 0.2, rng.random((len(index), d)) * 3, 0.0)
        dense[:, -1] = 0.0
        codes[s] = dense
    z = codes["L0.resid_post"]
    z[:, 0] = np.where(tok == "john", 2.0 + rng.random(len(tok)), 0.0)
    z[:, 1] = np.where(tok == "mary", 5.0 + rng.random(len(tok)), np.where(tok == "store", 1.0, 0.0))
    codes = {s: sp.csr_matrix(c.astype(np.float32)) for s, c in codes.items()}
    errors = {s: rng.normal(size=(len(index), 4)).astype(np.float32) for s in SITES}
    return Features(codes, errors, index, tokens, {"sae_ids": {s: s for s in SITES}, **(meta or {})})


def numpy_top(feats, site, p, k):
    """Top-k rows of feature p by activation (ties: lower row first), recomputed with plain numpy."""
    col = feats.codes[site].toarray()[:, p].astype(np.float64)
    rows = np.flatnonzero(col)
    rows = rows[np.lexsort((rows, -col[rows]))][:k]
    return rows, col


def numpy_label(tokens, max_tokens=3):
    c = Counter(tokens)
    first = {t: tokens.index(t) for t in c}
    return " | ".join(sorted(c, key=lambda t: (-c[t], first[t]))[:max_tokens])


def test_labels_match_top_activating_tokens_computed_independently():
    feats = make_features()
    ev = feature_evidence(feats, top_k=6).set_index("node")
    tok = feats.index["token"].to_numpy()
    checked = 0
    for s in SITES:
        for p in range(feats.codes[s].shape[1]):
            rows, col = numpy_top(feats, s, p, 6)
            if rows.size == 0:
                assert feature_node(s, p) not in ev.index  # dead features are left out by default
                continue
            r = ev.loc[feature_node(s, p)]
            assert r["top_rows"] == rows.tolist()
            assert r["top_tokens"] == tok[rows].tolist()
            assert r["label"] == numpy_label(tok[rows].tolist())
            np.testing.assert_allclose(r["top_activations"], col[rows], rtol=1e-6)
            assert r["frequency"] == pytest.approx(np.count_nonzero(col) / len(col))
            assert r["mean_activation"] == pytest.approx(col[col != 0].mean(), rel=1e-6)
            assert r["max_activation"] == pytest.approx(col.max(), rel=1e-6)
            checked += 1
    assert checked == 2 * 9
    # the planted features read as what they detect
    assert ev.loc["L0.resid_post/f0", "label"] == "john"
    assert ev.loc["L0.resid_post/f1", "label"] == "mary"
    assert ev.loc["L0.resid_post/f1", "frequency"] == pytest.approx(np.isin(tok, ["mary", "store"]).mean())


def test_label_lists_dominant_tokens_by_count_then_rank():
    assert short_label(["b", "a", "a", "c", "b", "a"]) == "a | b | c"
    assert short_label(["x", "y", "z", "w"], max_tokens=2) == "x | y"
    assert short_label(["\u0120john", "\u0120john", "Ġ"]) == "john | 'Ġ'".replace("'Ġ'", repr(" "))
    assert short_label([]) == ""


def test_contexts_use_the_activations_context_format():
    feats = make_features()
    acts = Activations({"L0.resid_post": np.zeros((feats.n_rows, 2), np.float32)}, feats.index, feats.tokens)
    ev = feature_evidence(feats, site="L0.resid_post", top_k=4, window=3)
    for rec in ev.to_dict("records"):
        assert rec["top_contexts"] == [acts.context(r, window=3) for r in rec["top_rows"]]
        for ctx, t in zip(rec["top_contexts"], rec["top_tokens"]):
            assert f"[{t}]" in ctx
    assert set(ev["site"]) == {"L0.resid_post"}


def test_restricting_to_nodes_and_dead_features():
    feats = make_features()
    ev = feature_evidence(feats, nodes=["L1.resid_post/f2", "L0.resid_post/f9", "L0.resid_post/err"])
    assert ev["node"].tolist() == ["L0.resid_post/f9", "L1.resid_post/f2"]
    dead = ev.set_index("node").loc["L0.resid_post/f9"]
    assert dead["frequency"] == 0 and dead["label"] == "" and dead["top_rows"] == []
    full = feature_evidence(feats, site="L1.resid_post", include_dead=True)
    assert len(full) == feats.codes["L1.resid_post"].shape[1]


def test_neuronpedia_links_only_for_known_public_releases():
    site = "L0.resid_post"
    feats = make_features(meta={"sae_releases": {site: "gpt2-small-res-jb"},
                                "sae_ids": {site: "blocks.8.hook_resid_pre", "L1.resid_post": "custom"}})
    ev = feature_evidence(feats).set_index("node")
    assert ev.loc["L0.resid_post/f3", "neuronpedia"] == "https://neuronpedia.org/gpt2-small/8-res-jb/3"
    assert ev.loc["L1.resid_post/f3", "neuronpedia"] is None  # no release known
    direct = make_features(meta={"neuronpedia_ids": {"L1.resid_post": "mymodel/1-res"}})
    ev2 = feature_evidence(direct, site="L1.resid_post").set_index("node")
    assert ev2.loc["L1.resid_post/f2", "neuronpedia"] == "https://neuronpedia.org/mymodel/1-res/2"
    assert feature_evidence(make_features())["neuronpedia"].isna().all()


def test_bad_input_is_named():
    feats = make_features()
    with pytest.raises(ValueError, match="top_k"):
        feature_evidence(feats, top_k=0)
    with pytest.raises(ValueError, match="L7.resid_post.*encoded sites"):
        feature_evidence(feats, site="L7.resid_post")
    with pytest.raises(ValueError, match="expects Features"):
        feature_evidence(np.zeros((3, 3)))


def _circuit():
    nodes = [feature_node(s, p) for s in SITES for p in range(10)] + [error_node(s) for s in SITES]
    nodes = pd.DataFrame({"node": nodes, "site": [n.split("/")[0] for n in nodes],
                          "kind": ["error" if n.endswith("/err") else "feature" for n in nodes],
                          "feature": [int(n.rsplit("/f", 1)[1]) if "/f" in n else -1 for n in nodes]})
    edges = pd.DataFrame({"source": ["L0.resid_post/f0", "L0.resid_post/f1", "L0.resid_post/err"],
                          "target": ["L1.resid_post/f2", "L1.resid_post/f2", "L1.resid_post/f4"],
                          "weight": [0.5, -0.25, 0.1]})
    return Circuit(nodes, edges, None, {"method": "test"})


def test_label_circuit_sets_labels_and_user_overrides_win_and_are_saved(tmp_path):
    feats = make_features()
    ev = feature_evidence(feats).set_index("node")
    c = label_circuit(_circuit(), feats, overrides={"L0.resid_post/f1": "Mary detector"})
    lab = dict(zip(c.nodes["node"], c.nodes["label"]))
    assert lab["L0.resid_post/f0"] == "john" == ev.loc["L0.resid_post/f0", "label"]
    assert lab["L1.resid_post/f2"] == ev.loc["L1.resid_post/f2", "label"]
    assert lab["L0.resid_post/f1"] == "Mary detector"
    assert lab["L0.resid_post/err"] == "L0.resid_post SAE error"
    assert lab["L0.resid_post/f9"] == ""  # dead feature: no label, plots fall back to the node name
    row = c.nodes.set_index("node").loc["L0.resid_post/f0"]
    assert row["frequency"] == pytest.approx(ev.loc["L0.resid_post/f0", "frequency"])
    assert row["contexts"].split("\n") == ev.loc["L0.resid_post/f0", "top_contexts"][:3]
    # saved with the circuit, and relabelling keeps the user's label
    back = Circuit.load(c.save(tmp_path / "c.json"))
    assert back == c
    assert back.meta["user_labels"] == {"L0.resid_post/f1": "Mary detector"}
    again = label_circuit(back, feats)
    assert again.label("L0.resid_post/f1") == "Mary detector"
    assert again.label("L0.resid_post/f0") == "john"
    # the input circuit is not modified; GraphML keeps the evidence columns
    assert _circuit().label("L0.resid_post/f0") == "L0.resid_post/f0"
    import networkx as nx

    g = nx.read_graphml(c.to_graphml(tmp_path / "c.graphml"))
    assert g.nodes["L0.resid_post/f1"]["label"] == "Mary detector"
    with pytest.raises(ValueError, match="unknown nodes in overrides"):
        label_circuit(c, feats, overrides={"L9.resid_post/f1": "x"})


def test_labels_at_the_last_position_show_context_and_the_prediction():
    """At positions="last" every IOI row's token is "to"; labels must tell features apart by context."""
    import circuitkit as ck
    from circuitkit.datasets.templates import ioi
    from circuitkit.labels import feature_evidence
    from circuitkit.models.toylm import load_toy_saes

    prompts = ioi(40, seed=0)["prompt"].tolist()
    saes = load_toy_saes(["blocks.3.hook_resid_post"])
    acts = ck.capture("toylm", prompts, sites=["L3.resid_post"], positions="last", predictions=True, progress=False)
    assert set(acts.index["token"]) == {"to"} and acts.index["predicted"].ne("").all()
    ev = feature_evidence(ck.encode(acts, saes), top_k=8)
    assert len(ev) and ev["label"].str.startswith("to → ").all()
    assert ev["label"].nunique() > 1  # the predictions differ between features
    assert all(" → " in c for cs in ev["top_contexts"] for c in cs)
    plain = feature_evidence(ck.encode(ck.capture("toylm", prompts, sites=["L3.resid_post"], positions="last",
                                                  progress=False), saes), top_k=8)
    assert plain["label"].str.endswith(" to").all() and not plain["label"].eq("to").any()  # preceding token
