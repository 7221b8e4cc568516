"""Selection probabilities (stability selection) in the figure, the explorer and the exports: opacity and
hover carry each edge's probability, the explorer's probability slider filters edges, the pages state the
E[V] bound; circuits without probabilities are drawn exactly as before."""

import re

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from test_viz import edge_set, feature_circuit, trace

from circuitkit.circuit import Circuit
from circuitkit.features import Features
from circuitkit.fit.lasso import CircuitLasso
from circuitkit.viz.explorer import CircuitExplorer
from circuitkit.viz.figure import (
    EDGE_INFO_TRACE,
    PROB_OPACITY,
    edge_trace_names,
    export_html,
    figure_edges,
    plot_circuit,
    probability_bin,
)
from circuitkit.viz.static import export_page

META = {"expected_false_edges_bound": 3.21, "pi_thr": 0.6, "n_pairs": 25, "q": 5, "selection": "stability"}
STATED = "At most ~3.21 false edges expected (stability selection, pi=0.6, B=25 complementary pairs, q=5)"


def prob_circuit(seed=0):
    c = feature_circuit(seed=seed)
    rng = np.random.default_rng(seed + 10)
    p = rng.choice([0.6, 0.72, 0.8, 0.9, 0.96, 1.0], len(c.edges))
    return Circuit(c.nodes, c.edges.assign(probability=p), c.path, {**c.meta, **META})


def opacity(t):
    return float(t.line.color.rsplit(",", 1)[1].rstrip(")"))


def test_figure_carries_probabilities_in_hover_customdata_and_opacity():
    c = prob_circuit()
    fig = plot_circuit(c)
    drawn = figure_edges(fig)
    want = dict(zip(zip(c.edges["source"], c.edges["target"]), c.edges["probability"]))
    assert len(drawn) == c.n_edges and "probability" in drawn
    assert all(want[(s, t)] == p for s, t, p in zip(drawn["source"], drawn["target"], drawn["probability"]))
    info = trace(fig, EDGE_INFO_TRACE)
    assert all("selection probability" in txt for txt in info.text)
    # every edge sits in the opacity bin of its probability, and opacity grows with probability
    assert [t.name for t in fig.data if t.name.startswith("edges")] == edge_trace_names(probability=True)
    for s, t, p, w in zip(c.edges["source"], c.edges["target"], c.edges["probability"], c.edges["weight"]):
        b = probability_bin(p)
        hits = [tr for tr in fig.data if tr.name.startswith(f"edges{'+' if w >= 0 else '-'} ")
                and tr.name.split(" ")[2] == b and tr.y and len(tr.y)]
        assert hits, (s, t, p)
    op = {tr.name.split(" ")[2]: opacity(tr) for tr in fig.data if tr.name.startswith("edges+ w0 p")
          and not tr.name.endswith("dim")}
    assert [op[f"p{k}"] for k in range(len(PROB_OPACITY))] == sorted(PROB_OPACITY)
    assert probability_bin(0.6) == "p0" and probability_bin(0.96) == "p3" and probability_bin(float("nan")) == "p?"
    assert "opacity ∝ selection probability" in fig.layout.annotations[0].text
    assert edge_set(figure_edges(plot_circuit(c, min_probability=0.85))) == edge_set(
        c.edges[c.edges["probability"] >= 0.85])


def test_circuit_without_probabilities_is_drawn_as_before():
    c = feature_circuit()
    fig = plot_circuit(c)
    names = [t.name for t in fig.data if t.name.startswith("edges")]
    assert names == edge_trace_names() and len(names) == 16 and not any(" p" in n for n in names)
    assert {opacity(t) for t in fig.data if t.name in names} == {0.55, 0.12}
    assert list(figure_edges(fig).columns) == ["source", "target", "weight", "score"]
    assert not any("probability" in txt for txt in trace(fig, EDGE_INFO_TRACE).text)
    assert "opacity" not in fig.layout.annotations[0].text
    # the same circuit with probabilities differs only in the probability channels
    fp = plot_circuit(prob_circuit())
    assert edge_set(figure_edges(fp)) == edge_set(figure_edges(fig))
    with pytest.raises(ValueError, match="min_probability needs edges with selection probabilities"):
        plot_circuit(c, min_probability=0.5)


def test_explorer_probability_slider_filters_edges():
    c = prob_circuit()
    ex = CircuitExplorer(c)
    assert ex.has_probability and ex.bound.startswith(STATED)
    ex.set_min_probability(0.85)
    want = c.edges[c.edges["probability"] >= 0.85]
    assert edge_set(figure_edges(ex.figure)) == edge_set(want) and ex.current.n_edges == len(want)
    assert (figure_edges(ex.figure)["probability"] >= 0.85).all()
    ex.set_threshold(0.5)  # both filters together
    assert edge_set(ex.current.edges) == edge_set(want[want["score"] >= 0.5])
    ex.set_threshold(0.0)
    ex.set_alpha(c.alphas[-1])  # path points have no probabilities: the slider keeps them all
    assert edge_set(figure_edges(ex.figure)) == edge_set(c.at(c.alphas[-1]).edges)
    ex.set_alpha(None)
    w = ex.widget
    ex._widgets["probability"].value = 0.95  # the slider drives the same method
    assert ex.min_probability == 0.95
    assert edge_set(ex.current.edges) == edge_set(c.edges[c.edges["probability"] >= 0.95])
    assert STATED in ex._widgets["bound"].value and w.children
    ex.set_min_probability(1.0)
    ex._widgets["probability"].value = 0.0
    assert edge_set(figure_edges(ex.figure)) == edge_set(c.edges)
    with pytest.raises(ValueError, match=r"min_probability must be a number in \[0, 1\]"):
        ex.set_min_probability(1.5)
    plain = CircuitExplorer(feature_circuit())
    with pytest.raises(ValueError, match="no selection probabilities.*set_threshold"):
        plain.set_min_probability(0.5)
    assert plain.widget.children
    assert "probability" not in plain._widgets and "bound" not in plain._widgets


def test_exported_page_states_the_bound_and_carries_probabilities(tmp_path):
    c = prob_circuit()
    text = export_html(c, tmp_path / "p.html", caption="Model: toy.").read_text()
    assert f"<p>Model: toy.</p><p>{STATED}" in text
    n_probs = c.edges["probability"].nunique()
    assert len(re.findall(r'"method":"animate"', text)) == n_probs  # fitted + one step per higher threshold
    assert "min probability: " in text and ("p≥0.96" in text or "p\\u22650.96" in text)
    assert "selection probability 0.72" in text
    only = export_html(c, tmp_path / "q.html").read_text()  # no caption given: the bound alone
    assert '<div class="circuitkit-caption"' in only and STATED in only
    plain = export_html(feature_circuit(), tmp_path / "plain.html").read_text()
    assert "false edges expected" not in plain and "selection probability" not in plain
    assert "sparsity: " in plain
    static = export_page(c, tmp_path / "s.html", title="toy", caption="Model: toy.").read_text()
    assert STATED in static and "selection probability 0.9" in static
    static_plain = export_page(feature_circuit(), tmp_path / "sp.html", title="toy").read_text()
    assert "false edges expected" not in static_plain and "selection probability" not in static_plain


def test_a_stability_fit_exports_its_own_bound(tmp_path):
    rng = np.random.default_rng(0)
    n, d = 400, 8
    Zs = np.maximum(rng.normal(size=(n, d)), 0)
    Zt = np.maximum(Zs[:, [0, 1, 2]] @ np.diag([1.0, -0.0, 1.0]) + 0.3 * rng.normal(size=(n, 3)), 0)
    Zt[:, 1] = np.maximum(Zs[:, 3] + 0.3 * rng.normal(size=n), 0)
    idx = pd.DataFrame({"prompt": np.arange(n), "position": 0, "token": ""})
    f = Features({"L0.resid_post": sp.csr_matrix(Zs), "L1.resid_post": sp.csr_matrix(Zt)}, {}, idx)
    c = CircuitLasso(selection="stability", stability_b=4, stability_q=2, include_errors=False, progress=False,
                     n_alphas=8).fit(f).circuit_
    bound = c.meta["expected_false_edges_bound"]
    text = export_html(c, tmp_path / "fit.html").read_text()
    assert f"At most ~{bound:.3g} false edges expected (stability selection, pi=0.6, B=4 complementary pairs, q=2)" \
        in text
    drawn = figure_edges(plot_circuit(c))
    assert edge_set(drawn) == edge_set(c.edges) and np.allclose(
        drawn.sort_values(["source", "target"])["probability"],
        c.edges.sort_values(["source", "target"])["probability"])
