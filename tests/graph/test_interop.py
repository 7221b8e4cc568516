"""Exchange formats (circuitkit.interop): MIB circuit JSON / .pt, feature roll-up, Neuronpedia graph JSON.

* the MIB export lists every candidate edge of the model (46 for a 2-layer, 2-head sequential GPT-2-like cfg,
  counted here from the architecture), with the published keys; it round-trips through JSON and .pt;
* q/k/v edges into one head merge on import (max |score|, in_graph if any);
* a CircuitLasso circuit fitted on a Tracr task exports and imports with its edges, scores and ranking;
* a hand-built feature circuit rolls up to the expected component edges (max and sum rules);
* the Neuronpedia export has circuit-tracer's keys, one node per feature node, and links between existing ids.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from circuitkit.circuit import Circuit, error_node, feature_node
from circuitkit.evaluate import candidate_edges
from circuitkit.interop import (
    load_mib,
    mib_candidate_edges,
    mib_cfg,
    rollup,
    save_mib,
    save_neuronpedia,
    site_to_mib,
    to_mib,
    to_mib_pt,
    to_neuronpedia,
)
from circuitkit.sites import component_sites

# Published schema, hard-coded from hannamw/EAP-IG src/eap/graph.py (the format MIB's circuit-localization track
# reads): Graph.to_json writes {"cfg": dict(cfg), "nodes": {name: {"in_graph": bool, ["score"], ...}},
# "edges": {name: {"score": float, "in_graph": bool}}}; Graph.from_model reads cfg keys n_layers, n_heads,
# parallel_attn_mlp, d_model; Graph.to_pt writes cfg, src_nodes, dst_nodes, edges_scores, edges_in_graph,
# nodes_in_graph (from_pt's required_keys).
MIB_TOP = {"cfg", "nodes", "edges"}
MIB_CFG = {"n_layers", "n_heads", "parallel_attn_mlp", "d_model"}
MIB_NODE = {"in_graph"}
MIB_EDGE = {"score", "in_graph"}
MIB_PT = {"cfg", "src_nodes", "dst_nodes", "edges_scores", "edges_in_graph", "nodes_in_graph"}
# circuit-tracer's frontend graph (safety-research/circuit-tracer circuit_tracer/frontend/graph_models.py:
# Model, Metadata, QParams, Node, Link).
NP_TOP = {"metadata", "qParams", "nodes", "links"}
NP_META = {"slug", "scan", "transcoder_list", "prompt_tokens", "prompt", "node_threshold", "schema_version"}
NP_QPARAMS = {"pinnedIds", "supernodes", "linkType", "clickedId", "sg_pos"}
NP_NODE = {"node_id", "feature", "layer", "ctx_idx", "feature_type", "token_prob", "is_target_logit", "run_idx",
           "reverse_ctx_idx", "jsNodeId", "clerp", "influence", "activation"}
NP_LINK = {"source", "target", "weight"}

CFG = {"n_layers": 2, "n_heads": 2, "parallel_attn_mlp": False, "d_model": 8}


def _n_mib_edges(n_layers: int, n_heads: int, parallel: bool) -> int:
    """MIB's edge count, from the architecture: each head reads q, k, v from every earlier node; an MLP reads
    every earlier node (parallel: not its own layer's heads); logits read everything."""
    n, upstream = 0, 1  # the input node
    for _ in range(n_layers):
        n += 3 * n_heads * upstream
        n += upstream + (0 if parallel else n_heads)
        upstream += n_heads + 1
    return n + upstream


def _mib_edge_names(n_layers: int, n_heads: int, parallel: bool) -> set[str]:
    """MIB's edge names written out from the architecture (EAP-IG Graph.from_model's construction)."""
    names, stream = set(), ["input"]
    for layer in range(n_layers):
        heads = [f"a{layer}.h{h}" for h in range(n_heads)]
        names |= {f"{u}->{a}<{x}>" for u in stream for a in heads for x in "qkv"}
        names |= {f"{u}->m{layer}" for u in (stream if parallel else stream + heads)}
        stream = stream + heads + [f"m{layer}"]
    return names | {f"{u}->logits" for u in stream}


def _circuit():
    edges = [("embed", "L0.H1", 0.5), ("L0.H1", "L0.MLP", -2.0), ("L0.MLP", "L1.H0", 1.25),
             ("embed", "out", 0.75), ("L1.H0", "out", 3.0), ("L0.H0", "L1.MLP", -0.125)]
    return Circuit.from_edges(edges)


def _edge_table(c: Circuit) -> pd.DataFrame:
    return c.edges[["source", "target", "weight", "score"]].sort_values(["source", "target"]).reset_index(drop=True)


def test_every_candidate_edge_is_listed_with_the_published_keys():
    doc = to_mib(_circuit(), cfg=CFG)
    assert set(doc) == MIB_TOP and set(doc["cfg"]) == MIB_CFG and doc["cfg"] == CFG
    assert all(set(r) == MIB_NODE for r in doc["nodes"].values())
    assert all(set(r) == MIB_EDGE for r in doc["edges"].values())
    assert set(doc["nodes"]) == {"input", "a0.h0", "a0.h1", "m0", "a1.h0", "a1.h1", "m1", "logits"}
    assert len(doc["edges"]) == _n_mib_edges(2, 2, False) == 46
    for nl, nh, par in ((2, 2, False), (3, 4, True), (1, 1, False)):
        cfg = {"n_layers": nl, "n_heads": nh, "parallel_attn_mlp": par, "d_model": 8}
        names = set(to_mib(Circuit.from_edges([("embed", "out", 1.0)]), cfg=cfg)["edges"])
        assert names == _mib_edge_names(nl, nh, par) and len(names) == _n_mib_edges(nl, nh, par)
    # the candidate set is circuitkit's own (evaluate.candidate_edges over the component sites)
    assert set(mib_candidate_edges(CFG)) == set(candidate_edges(component_sites(2, 2)))
    par = {**CFG, "parallel_attn_mlp": True}
    assert len(to_mib(Circuit.from_edges([("embed", "out", 1.0)]), cfg=par)["edges"]) == _n_mib_edges(2, 2, True)
    assert "a0.h0->m0" not in to_mib(Circuit.from_edges([("embed", "out", 1.0)]), cfg=par)["edges"]
    # mapping rule: a head edge goes to <v>, q/k get 0 and False; signed score; edges not in the circuit are 0
    e = doc["edges"]
    assert e["a0.h1->m0"] == {"score": -2.0, "in_graph": True}
    assert e["m0->a1.h0<v>"] == {"score": 1.25, "in_graph": True}
    assert e["m0->a1.h0<q>"] == e["m0->a1.h0<k>"] == {"score": 0.0, "in_graph": False}
    assert e["input->a0.h0<v>"] == {"score": 0.0, "in_graph": False}
    assert sum(r["in_graph"] for r in e.values()) == 6
    assert doc["nodes"]["logits"]["in_graph"] and not doc["nodes"]["a1.h1"]["in_graph"]
    assert doc["nodes"]["a0.h0"]["in_graph"]  # source of L0.H0 -> L1.MLP
    # top-k: only the k best circuit edges are in the graph; the rest keep their scores
    top = to_mib(_circuit(), cfg=CFG, k=2)["edges"]
    assert {n for n, r in top.items() if r["in_graph"]} == {"a1.h0->logits", "a0.h1->m0"}
    assert top["input->logits"] == {"score": 0.75, "in_graph": False}


def test_json_and_pt_round_trip(tmp_path):
    c = _circuit()
    for fmt in ("json", "pt"):
        path = save_mib(c, tmp_path / f"c.{fmt}", cfg=CFG, format=fmt, k=4)
        back = load_mib(path)
        pd.testing.assert_frame_equal(_edge_table(back), _edge_table(c), check_exact=True)
        assert int(back.edges["in_graph"].sum()) == 4
        assert set(back.edges["qkv"]) == {"v", ""}  # head targets carry the <v> letter, others none
        assert back.meta["mib_cfg"] == CFG
        # exporting the import again gives the same file content (in_graph column used, not the whole circuit)
        assert to_mib(back, cfg=CFG) == to_mib(c, cfg=CFG, k=4)
    pt = torch.load(str(tmp_path / "c.pt"), weights_only=True)
    assert set(pt) == MIB_PT
    assert tuple(pt["edges_scores"].shape) == (1 + 2 * 3, 2 * (3 * 2 + 1) + 1)  # rows sources, columns targets
    assert int(pt["edges_in_graph"].sum()) == 4
    # EAP-IG's indexing: forward index of a{l}.h{h} = 1 + l (H + 1) + h, of m{l} = 1 + l (H + 1) + H; backward
    # index of a{l}.h{h}<x> = l (3H + 1) + 'qkv'.index(x) H + h, of m{l} = l (3H + 1) + 3H, of logits -1
    H = 2
    fwd = {"input": 0, "a0.h1": 1 + 1, "m0": 1 + H, "a1.h0": 1 + (H + 1), "a0.h0": 1}
    assert pt["src_nodes"][fwd["m0"]] == "m0" and pt["dst_nodes"][(3 * H + 1) + 2 * H + 0] == "a1.h0<v>"
    assert pt["edges_scores"][fwd["a0.h1"], 3 * H].item() == -2.0  # a0.h1 -> m0
    assert pt["edges_scores"][fwd["m0"], (3 * H + 1) + 2 * H + 0].item() == 1.25  # m0 -> a1.h0<v>
    assert pt["edges_scores"][fwd["m0"], (3 * H + 1) + 0 * H + 0].item() == 0.0  # m0 -> a1.h0<q>
    assert pt["edges_scores"][fwd["input"], -1].item() == 0.75  # input -> logits
    assert pt["nodes_in_graph"].tolist() == [doc_in_graph for doc_in_graph in
                                             (to_mib(c, cfg=CFG, k=4)["nodes"][n]["in_graph"] for n in pt["src_nodes"])]
    assert json.loads((tmp_path / "c.json").read_text()) == to_mib(c, cfg=CFG, k=4)
    assert load_mib(to_mib_pt(c, cfg=CFG)).edges.shape[0] == c.n_edges  # the in-memory dict loads too


def test_qkv_edges_into_one_head_merge_on_import():
    doc = to_mib(Circuit.from_edges([("embed", "out", 1.0)]), cfg=CFG)
    doc["edges"]["input->a1.h0<q>"] = {"score": -4.0, "in_graph": False}
    doc["edges"]["input->a1.h0<k>"] = {"score": 1.0, "in_graph": True}
    doc["edges"]["input->a1.h0<v>"] = {"score": 2.0, "in_graph": False}
    doc["edges"]["m0->a1.h1<q>"] = {"score": 0.5, "in_graph": False}
    c = load_mib(doc)
    row = c.edges.set_index(["source", "target"])
    r = row.loc[("embed", "L1.H0")]
    assert (r["weight"], r["score"], bool(r["in_graph"]), r["qkv"]) == (-4.0, 4.0, True, "k")
    r = row.loc[("L0.MLP", "L1.H1")]
    assert (r["weight"], bool(r["in_graph"]), r["qkv"]) == (0.5, False, "q")
    assert len(c.edges) == 3
    assert len(load_mib(doc, in_graph_only=True).edges) == 2
    assert "mib_score" not in c.nodes
    doc["nodes"]["m0"]["score"] = 0.5  # optional node scores (EAP-IG node_scores=True) come along
    doc["nodes"]["input"]["neurons"] = [True] * CFG["d_model"]
    with pytest.warns(UserWarning, match="neuron-level masks"):
        scored = load_mib(doc)
    assert scored.nodes.set_index("node").loc["L0.MLP", "mib_score"] == 0.5
    assert np.isnan(scored.nodes.set_index("node").loc["L1.MLP", "mib_score"])
    # a qkv column is honoured on export
    qk = Circuit(c.nodes, pd.DataFrame({"source": ["embed"], "target": ["L0.H0"], "weight": [1.5], "qkv": ["qk"]}))
    e = to_mib(qk, cfg=CFG)["edges"]
    assert e["input->a0.h0<q>"] == e["input->a0.h0<k>"] == {"score": 1.5, "in_graph": True}
    assert e["input->a0.h0<v>"] == {"score": 0.0, "in_graph": False}
    # qkv= sets the letters for every head edge without a column value (circuitkit's own ablation: all three)
    allq = to_mib(_circuit(), cfg=CFG, qkv="qkv")["edges"]
    assert allq["m0->a1.h0<q>"] == allq["m0->a1.h0<k>"] == allq["m0->a1.h0<v>"] == {"score": 1.25, "in_graph": True}
    back = load_mib(to_mib(_circuit(), cfg=CFG, qkv="qkv")).edges.set_index(["source", "target"])
    assert back.loc[("L0.MLP", "L1.H0"), "qkv"] == "qkv"
    with pytest.raises(ValueError, match="letters from 'qkv'"):
        to_mib(_circuit(), cfg=CFG, qkv="x")


def test_bad_inputs_name_the_value_and_the_valid_forms():
    with pytest.raises(ValueError, match=r"'L0\.attn'.*valid forms are embed, L\{l\}\.H\{h\}"):
        to_mib(Circuit.from_edges([("L0.attn", "out", 1.0)]), cfg=CFG)
    with pytest.raises(ValueError, match=r"'L0\.MLP/f3'.*rollup"):
        to_mib(Circuit.from_edges([("L0.MLP/f3", "out", 1.0)], nodes=["L0.MLP/f3", "out"]), cfg=CFG)
    with pytest.raises(ValueError, match=r"'L2\.H0' is in layer 2 but cfg has n_layers=2"):
        to_mib(Circuit.from_edges([("L2.H0", "out", 1.0)]), cfg=CFG)
    with pytest.raises(ValueError, match=r"'L1\.H3' is head 3 but cfg has n_heads=2"):
        to_mib(Circuit.from_edges([("L1.H3", "out", 1.0)]), cfg=CFG)
    with pytest.raises(ValueError, match=r"cfg lacks keys \['d_model'\]"):
        to_mib(_circuit(), cfg={"n_layers": 2, "n_heads": 2, "parallel_attn_mlp": False})
    with pytest.raises(ValueError, match="not a candidate edge"):
        to_mib(Circuit.from_edges([("L0.H0", "L0.MLP", 1.0)]), cfg={**CFG, "parallel_attn_mlp": True})
    with pytest.raises(ValueError, match="format must be one of"):
        save_mib(_circuit(), "x.bin", cfg=CFG, format="bin")
    doc = to_mib(_circuit(), cfg=CFG)
    doc["edges"]["input->a0.h0"] = {"score": 1.0, "in_graph": True}  # a head target without <q|k|v>
    with pytest.raises(ValueError, match=r"'input->a0\.h0' is not an edge"):
        load_mib(doc)
    doc = to_mib(_circuit(), cfg=CFG)
    doc["edges"]["attn0->m0"] = {"score": 1.0, "in_graph": True}
    with pytest.raises(ValueError, match=r"unknown MIB node 'attn0'; valid forms are input, a\{L\}\.h\{H\}"):
        load_mib(doc)
    doc = to_mib(_circuit(), cfg=CFG)
    doc["nodes"]["mlp0"] = {"in_graph": False}
    with pytest.raises(ValueError, match=r"unknown MIB node 'mlp0'"):
        load_mib(doc)
    with pytest.raises(ValueError, match=r"missing keys \['edges'\]"):
        load_mib({"cfg": CFG, "nodes": {}})


def test_mib_cfg_from_models():
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        GPTNeoXConfig,
        GPTNeoXForCausalLM,
        LlamaConfig,
        LlamaForCausalLM,
    )

    from circuitkit.models.tracr import load_tracr_task

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=16, vocab_size=20, n_positions=16))
    assert mib_cfg(gpt2) == CFG | {"d_model": 16}
    neox = GPTNeoXForCausalLM(GPTNeoXConfig(num_hidden_layers=3, num_attention_heads=2, hidden_size=16,
                                            intermediate_size=32, vocab_size=20, use_parallel_residual=True))
    assert mib_cfg(neox) == {"n_layers": 3, "n_heads": 2, "parallel_attn_mlp": True, "d_model": 16}
    llama = LlamaForCausalLM(LlamaConfig(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         hidden_size=32, intermediate_size=64, vocab_size=20))
    assert mib_cfg(llama) == {"n_layers": 2, "n_heads": 4, "parallel_attn_mlp": False, "d_model": 32}
    task = load_tracr_task("reverse")
    assert mib_cfg(task.model) == mib_cfg(task) == {"n_layers": 4, "n_heads": 1, "parallel_attn_mlp": False,
                                                     "d_model": task.model.d_model}
    assert len(to_mib(Circuit.from_edges([("embed", "out", 1.0)]), cfg=gpt2)["edges"]) == 46


def test_circuitlasso_circuit_on_tracr_exports_and_imports(tmp_path):
    import circuitkit as ck
    from circuitkit.models.tracr import load_tracr_task

    task = load_tracr_task("reverse")
    acts = ck.capture(task.model, task.token_ids(task.sample_inputs(60, seed=0)), sites=task.sites, progress=False)
    c = ck.CircuitLasso(n_alphas=4).fit(acts).circuit_
    assert c.n_edges > 0
    cfg = mib_cfg(task)
    doc = to_mib(c, cfg=cfg)
    assert len(doc["edges"]) == _n_mib_edges(4, 1, False)
    assert sum(r["in_graph"] for r in doc["edges"].values()) == c.n_edges
    # the MIB ranking (|score|, as EAP-IG's apply_topn) is circuitkit's ranking
    best = max(doc["edges"], key=lambda n: abs(doc["edges"][n]["score"]))
    top = c.edges.iloc[0]
    assert best.split("<")[0] == f"{site_to_mib(top.source)}->{site_to_mib(top.target)}"
    for fmt in ("json", "pt"):
        back = load_mib(save_mib(c, tmp_path / f"tracr.{fmt}", cfg=cfg, format=fmt))
        pd.testing.assert_frame_equal(_edge_table(back), _edge_table(c), check_exact=True)
        assert back.edges["in_graph"].all()
    # in_graph means what MIB ablates by: the imported top-k circuit has the same ablation metric as c.top_k(k)
    from circuitkit.faithfulness import circuit_metric

    ids = task.encode(task.sample_inputs(24, seed=3, length=4))
    kept = load_mib(to_mib(c, cfg=cfg, k=4), in_graph_only=True)
    assert len(kept.edges) == 4
    m_ours = circuit_metric(task, ids, c.top_k(4), ablation="mean")
    m_back = circuit_metric(task, ids, kept, ablation="mean")
    assert m_back == pytest.approx(m_ours, abs=1e-9)
    # any method's circuit exports: EAP scores every candidate edge, so all of them are in the graph unless k=
    corrupt = task.encode(task.sample_inputs(24, seed=4, length=4))
    eap = ck.discover("eap", task.model, ids, corrupt, sites=task.sites, output_kind=task.output_kind)
    back = load_mib(to_mib(eap, cfg=cfg))
    pd.testing.assert_frame_equal(_edge_table(back), _edge_table(eap), check_exact=True)
    assert back.edges["in_graph"].all() and len(back.edges) == len(candidate_edges(task.sites))
    top2 = load_mib(to_mib(eap, cfg=cfg, k=2), in_graph_only=True)
    assert set(zip(top2.edges["source"], top2.edges["target"])) == set(zip(eap.edges["source"][:2],
                                                                           eap.edges["target"][:2]))
    # the true circuit's edges are all candidates of the exported graph
    names = set(doc["edges"])
    truth = Circuit.from_edges([(u, v, 1.0) for u, v in task.true_edges])
    truth_doc = to_mib(truth, cfg=cfg)
    assert set(truth_doc["edges"]) == names
    assert sum(r["in_graph"] for r in truth_doc["edges"].values()) == len(task.true_edges)


def _feature_circuit():
    """Features on L0.MLP and L1.H0 and on the residual stream after block 0, a target, and error nodes."""
    nodes = [feature_node("embed", 0), feature_node("L0.MLP", 1), feature_node("L0.MLP", 2), error_node("L0.MLP"),
             feature_node("L1.H0", 0), feature_node("L1.H0", 3), error_node("L1.H0"), "y"]
    sites = ["embed", "L0.MLP", "L0.MLP", "L0.MLP", "L1.H0", "L1.H0", "L1.H0", ""]
    kinds = ["feature", "feature", "feature", "error", "feature", "feature", "error", "target"]
    feats = [0, 1, 2, -1, 0, 3, -1, -1]
    nt = pd.DataFrame({"node": nodes, "site": sites, "kind": kinds, "feature": feats,
                       "label": ["", "dog", "", "", "copy", "", "", "logit diff"],
                       "activation": [1.0, 2.0, 0.5, np.nan, 3.0, 0.25, np.nan, np.nan]})
    edges = pd.DataFrame([
        ("embed/f0", "L0.MLP/f1", 0.5), ("embed/f0", "L0.MLP/f2", -1.5), ("embed/f0", "L0.MLP/err", 0.25),
        ("L0.MLP/f1", "L1.H0/f0", 2.0), ("L0.MLP/f2", "L1.H0/f0", -0.5), ("L0.MLP/err", "L1.H0/f3", 1.0),
        ("L1.H0/f0", "y", 4.0), ("L1.H0/err", "y", -0.75), ("L0.MLP/f2", "y", 0.125),
    ], columns=["source", "target", "weight"])
    return Circuit(nt, edges)


def test_rollup_gives_the_expected_component_edges():
    c = _feature_circuit()
    mx = rollup(c, rule="max").edges.set_index(["source", "target"])[["weight", "score"]]
    expected_max = {("embed", "L0.MLP"): (-1.5, 1.5), ("L0.MLP", "L1.H0"): (2.0, 2.0),
                    ("L1.H0", "out"): (4.0, 4.0), ("L0.MLP", "out"): (0.125, 0.125)}
    assert {k: tuple(v) for k, v in zip(mx.index, mx.to_numpy().tolist())} == expected_max
    sm = rollup(c, rule="sum").edges.set_index(["source", "target"])[["weight", "score"]]
    expected_sum = {("embed", "L0.MLP"): (-0.75, 2.25), ("L0.MLP", "L1.H0"): (2.5, 3.5),
                    ("L1.H0", "out"): (3.25, 4.75), ("L0.MLP", "out"): (0.125, 0.125)}
    got = {k: tuple(v) for k, v in zip(sm.index, sm.to_numpy().tolist())}
    assert got.keys() == expected_sum.keys()
    for k, v in expected_sum.items():
        np.testing.assert_allclose(got[k], v, rtol=1e-12)
    rolled = rollup(c)
    assert rolled.node_names == ["embed", "L0.MLP", "L1.H0", "out"]
    assert rolled.meta["rollup_rule"] == "max"
    doc = to_mib(rolled, cfg={"n_layers": 2, "n_heads": 1, "parallel_attn_mlp": False, "d_model": 4})
    assert doc["edges"]["m0->a1.h0<v>"] == {"score": 2.0, "in_graph": True}
    # residual-stream features are refused unless the last-writer rule is asked for
    r = Circuit.from_edges([("L0.resid_post/f1", "L1.resid_post/f2", -0.5), ("L1.resid_post/f2", "y", 1.0)],
                           nodes=pd.DataFrame({"node": ["L0.resid_post/f1", "L1.resid_post/f2", "y"],
                                               "site": ["L0.resid_post", "L1.resid_post", ""],
                                               "kind": ["feature", "feature", "target"], "feature": [1, 2, -1]}))
    with pytest.raises(ValueError, match=r"'L0\.resid_post/f1'.*residual stream.*residual='last_writer'"):
        rollup(r)
    lw = rollup(r, residual="last_writer")
    assert set(zip(lw.edges["source"], lw.edges["target"])) == {("L0.MLP", "L1.MLP"), ("L1.MLP", "out")}
    pre = Circuit.from_edges([("L0.resid_pre/f0", "L1.resid_pre/f0", 1.0)],
                             nodes=pd.DataFrame({"node": ["L0.resid_pre/f0", "L1.resid_pre/f0"],
                                                 "site": ["L0.resid_pre", "L1.resid_pre"], "kind": "feature",
                                                 "feature": [0, 0]}))
    lw = rollup(pre, residual="last_writer")
    assert list(zip(lw.edges["source"], lw.edges["target"])) == [("embed", "L0.MLP")]
    with pytest.raises(ValueError, match="rule must be 'max' or 'sum'"):
        rollup(c, rule="mean")


def test_neuronpedia_export(tmp_path):
    c = _feature_circuit()
    tokens = ["<bos>", "the", "dog", "runs"]
    doc = to_neuronpedia(c, prompt="the dog runs", tokens=tokens, model_id="toylm", slug="dog-circuit")
    assert set(doc) == NP_TOP and set(doc["metadata"]) == NP_META and set(doc["qParams"]) == NP_QPARAMS
    assert all(set(n) == NP_NODE for n in doc["nodes"]) and all(set(link) == NP_LINK for link in doc["links"])
    feature_like = c.nodes[c.nodes["kind"].isin(["feature", "error", "target"])]
    assert len(doc["nodes"]) == len(feature_like)  # one node per feature / error / target node
    ids = [n["node_id"] for n in doc["nodes"]]
    assert len(set(ids)) == len(ids)
    assert {link["source"] for link in doc["links"]} | {link["target"] for link in doc["links"]} <= set(ids)
    assert len(doc["links"]) == c.n_edges
    by = {n["clerp"]: n for n in doc["nodes"]}
    assert by["dog"]["node_id"] == "0_1_3" and by["dog"]["layer"] == "0" and by["dog"]["feature"] == 1
    assert by["dog"]["activation"] == 2.0 and by["dog"]["ctx_idx"] == 3
    assert by["logit diff"]["feature_type"] == "logit" and by["logit diff"]["is_target_logit"]
    assert by["logit diff"]["layer"] == "3"  # n_layers + 1, circuit-tracer's logit layer
    assert by["L0.MLP/err"]["feature_type"] == "mlp reconstruction error" and by["L0.MLP/err"]["activation"] is None
    w = {(link["source"], link["target"]): link["weight"] for link in doc["links"]}
    assert w[(by["dog"]["node_id"], by["copy"]["node_id"])] == 2.0
    assert doc["metadata"]["prompt_tokens"] == tokens and doc["metadata"]["scan"] == "toylm"
    p = save_neuronpedia(c, tmp_path / "g.json", prompt="the dog runs", tokens=tokens, model_id="toylm",
                         slug="dog-circuit")
    assert json.loads(p.read_text()) == doc
    # two sites in one block would share node ids: refused unless layers= separates them
    two = Circuit.from_edges([("L0.MLP/f1", "L0.resid_post/f1", 1.0)],
                             nodes=pd.DataFrame({"node": ["L0.MLP/f1", "L0.resid_post/f1"],
                                                 "site": ["L0.MLP", "L0.resid_post"], "kind": "feature",
                                                 "feature": [1, 1]}))
    with pytest.raises(ValueError, match="same node id"):
        to_neuronpedia(two, prompt="x", tokens=["x"], model_id="m", slug="s")
    ok = to_neuronpedia(two, prompt="x", tokens=["x"], model_id="m", slug="s", layers={"L0.resid_post": 1})
    assert [n["node_id"] for n in ok["nodes"]] == ["0_1_0", "1_1_0"]
    with pytest.raises(ValueError, match="component node"):
        to_neuronpedia(_circuit(), prompt="x", tokens=["x"], model_id="m", slug="s")


def test_fitted_feature_circuit_rolls_up_and_exports():
    """A feature-level CircuitLasso fit on planted codes at L0.MLP -> L1.H0: one component edge, in MIB's <v>."""
    import scipy.sparse as sp

    from circuitkit.features import Features
    from circuitkit.fit.lasso import CircuitLasso

    rng = np.random.default_rng(1)
    n, d = 800, 16
    z0 = (rng.random((n, d)) < 0.2) * rng.exponential(1.0, size=(n, d))
    planted = {(p, q): 1.0 + 0.25 * q for q, p in enumerate(rng.permutation(d)[:6])}
    z1 = (rng.random((n, d)) < 0.1) * rng.exponential(1.0, size=(n, d))
    for (p, q), w in planted.items():
        z1[:, q] = w * z0[:, p]
    z1 = np.maximum(z1 + 0.05 * rng.normal(size=z1.shape) * (z1 > 0), 0)
    idx = pd.DataFrame({"prompt": np.arange(n), "position": 0, "token": ""})
    feats = Features({"L0.MLP": sp.csr_matrix(z0), "L1.H0": sp.csr_matrix(z1)}, {}, idx)
    c = CircuitLasso(alpha=0.05, progress=False).fit(feats).circuit_
    top = c.top_k(len(planted))
    assert set(zip(top.edges["source"], top.edges["target"])) == {
        (f"L0.MLP/f{p}", f"L1.H0/f{q}") for p, q in planted}
    for rule in ("max", "sum"):
        rolled = rollup(top, rule=rule)
        assert list(zip(rolled.edges["source"], rolled.edges["target"])) == [("L0.MLP", "L1.H0")]
        agg = top.edges["score"].max() if rule == "max" else top.edges["score"].sum()
        assert rolled.edges["score"].iat[0] == pytest.approx(agg, rel=1e-12)
    doc = to_mib(rollup(top), cfg={"n_layers": 2, "n_heads": 1, "parallel_attn_mlp": False, "d_model": d})
    assert [n for n, r in doc["edges"].items() if r["in_graph"]] == ["m0->a1.h0<v>"]
    np_doc = to_neuronpedia(top, prompt="p", tokens=["a", "b"], model_id="synthetic", slug="planted")
    assert len(np_doc["nodes"]) == 2 * len(planted) and len(np_doc["links"]) == len(planted)
    assert {n["layer"] for n in np_doc["nodes"]} == {"0", "1"}
