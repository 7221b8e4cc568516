"""The Circuit type: exact JSON round trip, graph views, selection, and refusal of non-circuits."""

import json

import numpy as np
import pandas as pd
import pytest

from circuitkit.circuit import Circuit
from circuitkit.sites import all_sites, component_sites, parse_site, sort_sites


def small_circuit() -> Circuit:
    nodes = pd.DataFrame({"node": ["embed", "L0.H0", "L0.MLP", "out"], "site": ["embed", "L0.H0", "L0.MLP", "out"],
                          "kind": "site"})
    edges = pd.DataFrame({"source": ["embed", "L0.H0", "embed"], "target": ["L0.H0", "out", "L0.MLP"],
                          "weight": [0.1 + 0.2, -1 / 3, 2e-17]})
    path = pd.concat([edges.assign(alpha=1.0).iloc[:1], edges.assign(alpha=0.1)], ignore_index=True)
    return Circuit(nodes, edges, path, {"method": "test", "alpha": 0.1, "path_alphas": [1.0, 0.1], "backend": "local"})


def test_json_roundtrip_is_exact(tmp_path):
    c = small_circuit()
    c.set_labels({"L0.H0": "previous-token head"})
    back = Circuit.load(c.save(tmp_path / "c.json"))
    assert back == c
    assert back.edges["weight"].tolist() == c.edges["weight"].tolist()  # bit-exact floats
    assert back.label("L0.H0") == "previous-token head" and back.label("out") == "out"


def test_graph_views_and_selection():
    c = small_circuit()
    g = c.to_networkx()
    assert set(g.edges) == {("embed", "L0.H0"), ("L0.H0", "out"), ("embed", "L0.MLP")}
    assert g.edges["L0.H0", "out"]["weight"] == pytest.approx(-1 / 3)
    assert g.graph["method"] == "test" and g.graph["backend"] == "local"
    A = c.adjacency()
    assert A.shape == (4, 4) and A[3, 1] == pytest.approx(1 / 3)  # rows targets, columns sources
    assert c.threshold(0.2).n_edges == 2
    assert c.top_k(1).edges["source"].tolist() == ["L0.H0"]
    assert c.at(1.0).n_edges == 1 and c.at(0.1).n_edges == 3
    with pytest.raises(ValueError, match="outside the fitted path"):
        c.at(5.0)


def test_not_a_circuit_is_refused(tmp_path):
    p = tmp_path / "x.json"
    p.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="not a circuit"):
        Circuit.load(p)
    p.write_text("not json at all")
    with pytest.raises(ValueError, match="not a circuit file"):
        Circuit.load(p)
    with pytest.raises(ValueError, match="no circuit file"):
        Circuit.load(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="unknown nodes"):
        Circuit(pd.DataFrame({"node": ["a"]}), pd.DataFrame({"source": ["a"], "target": ["b"], "weight": [1.0]}))


def test_site_order():
    assert component_sites(1, 2) == ["embed", "L0.H0", "L0.H1", "L0.MLP", "out"]
    assert sort_sites(["out", "L1.H0", "L0.MLP", "embed", "L0.H1"]) == ["embed", "L0.H1", "L0.MLP", "L1.H0", "out"]
    assert parse_site("L0.H0").rank == parse_site("L0.H3").rank  # heads of a layer are parallel
    assert len(all_sites(2, 3)) == 1 + 2 * (1 + 3 + 1 + 1 + 1) + 1
    with pytest.raises(ValueError, match="valid forms"):
        parse_site("layer0.head1")
    np.testing.assert_equal(parse_site("L12.resid_post").layer, 12)


def test_two_identical_fits_compare_equal():
    """Wall times in ``meta`` differ between runs; equality is about the circuit, so it ignores them."""
    import circuitkit as ck
    from circuitkit.models.tracr import load_tracr_task

    task = load_tracr_task("hist")
    acts = ck.capture(task.model, task.token_ids(task.sample_inputs(60, seed=0)), sites=task.sites, progress=False, positions="all")
    a = ck.CircuitLasso(n_alphas=4).fit(acts).circuit_
    b = ck.CircuitLasso(n_alphas=4).fit(acts).circuit_
    assert a == b
    b.meta["seconds"] = 123.0  # a run-time detail, ignored
    assert a == b
    b.edges.loc[b.edges.index[0], "weight"] += 1.0  # a result detail, not ignored
    assert a != b
