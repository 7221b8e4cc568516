"""Query/key pathways (circuitkit.fit.qk): a dependency that acts only through a head's queries is found
with qk=True and missed without it; the captured queries/keys equal the slow reference computed from the
captured site outputs."""

import numpy as np
import pytest
import torch

import circuitkit as ck
from circuitkit.fit.qk import capture_qk, fit_qk_circuit, supports_qk
from circuitkit.models.tracr import _layer_weights, _nz_rows, component_io, load_tracr_task
from circuitkit.sites import parse_site


@pytest.fixture(scope="module")
def reverse():
    task = load_tracr_task("reverse")
    xs = task.sample_inputs(300, seed=0)
    batches = [task.encode([x for x in xs if len(x) == n]) for n in sorted({len(x) for x in xs})]
    return task, batches


def _value_reads(task, head):
    p = parse_site(head)
    a = _layer_weights(task.weights, p.layer, "attn")
    dh = a["query_w"].shape[1] // task.meta["n_heads"]
    return _nz_rows(a["value_w"][:, p.head * dh:(p.head + 1) * dh], 0)


def test_reverse_has_a_query_only_edge(reverse):
    task, _ = reverse
    io = component_io(task.weights, n_layers=task.meta["n_layers"], n_heads=task.meta["n_heads"])
    # L2.MLP (opp_idx) reaches L3.H0 only through its query: no dim it writes is read by W_V
    assert ("L2.MLP", "L3.H0") in task.true_edges
    assert not (io["L2.MLP"][1] & _value_reads(task, "L3.H0")).any()


def test_qk_targets_equal_the_query_of_the_summed_site_outputs(reverse):
    task, batches = reverse
    ids = [r.tolist() for b in batches for r in b]
    acts = ck.capture(task.model, ids, sites=task.sites, progress=False)
    qk = capture_qk(task.model, ids, acts=acts)
    assert set(qk) == {"L0.H0", "L3.H0"}
    attn = task.model.layers[3].attn
    resid = sum(acts[s] for s in task.sites if parse_site(s).rank < parse_site("L3.H0").rank)  # no layer norm
    r = torch.as_tensor(resid)
    q_ref = (r @ attn.W_Q + attn.b_Q).numpy()[:, : attn.d_head]
    k_ref = (r @ attn.W_K + attn.b_K).numpy()[:, : attn.d_head]
    np.testing.assert_allclose(qk["L3.H0"]["q"], q_ref, atol=1e-4)
    np.testing.assert_allclose(qk["L3.H0"]["k"], k_ref, atol=1e-4)


def test_query_only_edge_found_with_qk_and_missed_without(reverse):
    task, batches = reverse
    off = ck.discover("circuitlasso", task.model, batches, sites=task.sites, qk=False)
    on = ck.discover("circuitlasso", task.model, batches, sites=task.sites, qk=True)
    auto = ck.discover("circuitlasso", task.model, batches, sites=task.sites)   # qk="auto": on for Tracr
    assert auto.meta["qk"] and not off.meta["qk"]
    assert set(zip(auto.edges["source"], auto.edges["target"])) == set(zip(on.edges["source"], on.edges["target"]))
    assert ck.discover("circuitlasso-v", task.model, batches, sites=task.sites).meta["qk"] is False
    e_off = set(zip(off.edges["source"], off.edges["target"]))
    e_on = on.edges.set_index(["source", "target"])
    assert ("L2.MLP", "L3.H0") not in e_off
    assert ("L2.MLP", "L3.H0") in e_on.index and "q" in e_on.loc[("L2.MLP", "L3.H0"), "via"]
    # the option only adds edges into heads; every edge found without it is kept
    assert e_off <= set(e_on.index)
    assert all(parse_site(v).kind == "head" for u, v in set(e_on.index) - e_off)
    assert set(on.path["via"]) == {"v", "q", "k"} and on.meta["pathways"] == ["v", "q", "k"]


def test_qk_bad_inputs(reverse):
    task, batches = reverse
    ids = [r.tolist() for b in batches[:1] for r in b]
    acts = ck.capture(task.model, ids, sites=task.sites, progress=False)
    with pytest.raises(TypeError, match="Tracr models"):
        capture_qk(torch.nn.Linear(2, 2), ids, acts=acts)
    with pytest.raises(ValueError, match="subset of"):
        fit_qk_circuit(acts, {}, pathways=["z"])
    with pytest.raises(ValueError, match="head sites"):
        capture_qk(task.model, ids, acts=acts, heads=["L0.MLP"])
    assert supports_qk(task.model) and not supports_qk(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="qk must be True, False or 'auto'"):
        ck.discover("circuitlasso", task.model, batches[:1], sites=task.sites, qk="yes")
    with pytest.raises(ValueError, match="not a head site"):
        ck.CircuitLasso(progress=False).fit(acts, reads={"L0.MLP": {"q": np.zeros((acts.n_rows, 2))}})
    with pytest.raises(ValueError, match=r"must be \[\d+, d\]"):
        ck.CircuitLasso(progress=False).fit(acts, reads={"L0.H0": {"q": np.zeros((3, 2))}})


def test_read_nodes_are_targets_never_sources_and_leave_the_site_fit_unchanged(reverse):
    """fit(acts, reads=...) adds "L3.H0<q>"-style target nodes regressed on the sites before the head; they are
    never sources, the alpha grid and every site edge are those of the plain fit, and fit_qk_circuit merges
    them into the head with via."""
    task, batches = reverse
    ids = [r.tolist() for b in batches for r in b]
    acts = ck.capture(task.model, ids, sites=task.sites, progress=False)
    qk = capture_qk(task.model, ids, acts=acts)
    plain = ck.CircuitLasso(progress=False).fit(acts)
    est = ck.CircuitLasso(progress=False).fit(acts, reads={h: {"q": v["q"], "k": v["k"]} for h, v in qk.items()})
    c = est.circuit_
    reads = c.nodes[c.nodes["kind"] == "read"]
    assert sorted(reads["node"]) == ["L0.H0<k>", "L0.H0<q>", "L3.H0<k>", "L3.H0<q>"]
    assert set(reads["site"]) == {"L0.H0", "L3.H0"}
    assert not set(c.path["source"]) & set(reads["node"])                 # never a source
    order = {s: parse_site(s).rank for s in task.sites}
    into = c.path[c.path["target"].isin(reads["node"])]
    assert len(into) and all(order[u] < order[parse_site(t.split("<")[0]).name] for u, t in
                             zip(into["source"], into["target"]))
    np.testing.assert_array_equal(est.alphas_, plain.alphas_)
    sites_only = c.edges[~c.edges["target"].isin(reads["node"])]
    assert set(zip(sites_only["source"], sites_only["target"])) == set(zip(plain.circuit_.edges["source"],
                                                                           plain.circuit_.edges["target"]))
    merged = fit_qk_circuit(acts, qk, progress=False)
    assert "read" not in set(merged.nodes["kind"]) and {"v", "q", "k"} == set(merged.path["via"])
