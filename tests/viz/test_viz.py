"""The circuit figure, the explorer's callbacks and the exports, on hand-built circuits with known edges."""

from types import SimpleNamespace

import networkx as nx
import numpy as np
import pandas as pd
import pytest

from circuitkit.circuit import Circuit, feature_node
from circuitkit.viz.explorer import CircuitExplorer
from circuitkit.viz.figure import (
    EDGE_INFO_TRACE,
    NODE_TRACE,
    WIDTHS,
    export_html,
    export_png,
    figure_edges,
    figure_nodes,
    path_summary,
    plot_circuit,
    plot_path,
)

SITES = ["L0.resid_post", "L1.resid_post", "L2.resid_post"]


def feature_circuit(n_feat=8, n_edges=30, alphas=(0.5, 0.2, 0.05), seed=0, labels=True):
    """Features of 3 sites plus a target 'y'; edges go forward between adjacent sites (and into y). The path
    at alpha a keeps the edges with score >= a (so sparser alphas are nested subsets)."""
    rng = np.random.default_rng(seed)
    names = [feature_node(s, p) for s in SITES for p in range(n_feat)] + ["y"]
    nodes = pd.DataFrame({"node": names, "site": [n.split("/")[0] if "/" in n else "" for n in names],
                          "kind": ["target" if n == "y" else "feature" for n in names],
                          "feature": [int(n.rsplit("/f", 1)[1]) if "/f" in n else -1 for n in names],
                          "label": [f"tok{i % 5}" if labels and n != "y" else ("" if n != "y" else "y") for i, n in
                                    enumerate(names)]})
    pairs = set()
    while len(pairs) < n_edges:
        i = int(rng.integers(0, 2))
        s, t = int(rng.integers(0, n_feat)), int(rng.integers(0, n_feat))
        pairs.add((feature_node(SITES[i], s), feature_node(SITES[i + 1], t)))
    pairs = sorted(pairs) + [(feature_node(SITES[2], p), "y") for p in range(3)]
    w = rng.uniform(0.02, 1.0, len(pairs)) * rng.choice([-1, 1], len(pairs))
    full = pd.DataFrame({"source": [p[0] for p in pairs], "target": [p[1] for p in pairs], "weight": w,
                         "score": np.abs(w)})
    path = pd.concat([full[full["score"] >= a].assign(alpha=a) for a in alphas], ignore_index=True)
    fitted = full[full["score"] >= 0.3]
    return Circuit(nodes, fitted, path, {"alpha": 0.3, "selection": "test", "path_alphas": list(alphas)})


def edge_set(df):
    return set(zip(df["source"], df["target"]))


def trace(fig, name):
    return next(t for t in fig.data if t.name == name)


# -- the figure --------------------------------------------------------------------------------------------
def test_figure_holds_exactly_the_circuits_nodes_and_edges():
    c = feature_circuit()
    fig = plot_circuit(c)
    drawn = figure_edges(fig)
    assert edge_set(drawn) == edge_set(c.edges) and len(drawn) == c.n_edges
    w = dict(zip(zip(c.edges["source"], c.edges["target"]), c.edges["weight"]))
    assert all(w[(s, t)] == pytest.approx(x) for s, t, x in zip(drawn["source"], drawn["target"], drawn["weight"]))
    assert set(figure_nodes(fig)) == set(c.edges["source"]) | set(c.edges["target"])  # isolated nodes hidden
    assert set(figure_nodes(plot_circuit(c, show_isolated=True))) == set(c.node_names)
    for a in c.alphas:  # at every stored sparsity and at a threshold
        sub = c.at(a)
        assert edge_set(figure_edges(plot_circuit(sub))) == edge_set(sub.edges)
    thr = plot_circuit(c, min_score=0.6)
    assert edge_set(figure_edges(thr)) == edge_set(c.threshold(0.6).edges)
    assert set(figure_nodes(thr)) == set(c.threshold(0.6).edges[["source", "target"]].stack())


def test_top_k_per_node_keeps_each_nodes_strongest_edges():
    c = feature_circuit(n_edges=60).at(0.05)
    k = 2
    drawn = edge_set(figure_edges(plot_circuit(c, top_k_per_node=k)))
    e = c.edges
    expected = set()
    for s, t in zip(e["source"], e["target"]):
        sc = float(e[(e["source"] == s) & (e["target"] == t)]["score"].iloc[0])
        rank_in = int((e[e["target"] == t]["score"] > sc).sum())
        rank_out = int((e[e["source"] == s]["score"] > sc).sum())
        if rank_in < k or rank_out < k:
            expected.add((s, t))
    assert drawn == expected and len(drawn) < len(e)


def test_edges_coloured_by_sign_and_sized_by_weight():
    c = feature_circuit()
    fig = plot_circuit(c)
    n_pos = sum(t.y.count(None) if t.y else 0 for t in fig.data if t.name.startswith("edges+"))
    n_neg = sum(t.y.count(None) if t.y else 0 for t in fig.data if t.name.startswith("edges-"))
    assert n_pos == int((c.edges["weight"] > 0).sum()) and n_neg == int((c.edges["weight"] < 0).sum())
    assert all(t.line.color.startswith("rgba(37,99,235,") for t in fig.data if t.name.startswith("edges+"))  # blue
    assert all(t.line.color.startswith("rgba(220,38,38,") for t in fig.data if t.name.startswith("edges-"))  # red
    strongest = c.edges.iloc[0]
    sign = "+" if strongest["weight"] > 0 else "-"
    thick = trace(fig, f"edges{sign} w3")
    assert thick.line.width == max(WIDTHS) and thick.y and thick.y.count(None) >= 1
    assert list(WIDTHS) == sorted(WIDTHS)


def test_layers_are_columns_in_computation_order_and_hover_has_evidence():
    c = feature_circuit()
    c.nodes["frequency"] = 0.125
    c.nodes["contexts"] = "a b [tok] c"
    fig = plot_circuit(c)
    nodes = trace(fig, NODE_TRACE)
    x = dict(zip(nodes.ids, nodes.x))
    for n, xx in x.items():
        expected = 3 if n == "y" else SITES.index(n.split("/")[0])
        assert xx == expected
    assert list(fig.layout.xaxis.ticktext) == SITES + ["targets"]
    cd = {r[0]: r for r in nodes.customdata}
    some = next(n for n in nodes.ids if n != "y")
    assert cd[some][1] == c.label(some)
    assert "12.50%" in cd[some][4] and "a b [tok] c" in cd[some][4]
    info = trace(fig, EDGE_INFO_TRACE)
    assert set(info.ids) == {f"{s}->{t}" for s, t in edge_set(c.edges)}


def test_component_circuit_heads_share_a_column():
    c = Circuit.from_edges([("embed", "L0.H0", 1.0), ("embed", "L0.H1", -0.5), ("L0.H0", "L0.MLP", 0.7),
                            ("L0.H1", "out", 0.2), ("L0.MLP", "out", 0.9)])
    fig = plot_circuit(c)
    x = dict(zip(trace(fig, NODE_TRACE).ids, trace(fig, NODE_TRACE).x))
    assert x["embed"] < x["L0.H0"] == x["L0.H1"] < x["L0.MLP"] < x["out"]
    assert "L0 heads" in list(fig.layout.xaxis.ticktext)


def test_missing_labels_fall_back_to_node_names_and_empty_figure_explains_itself():
    c = feature_circuit(labels=False)
    nodes = trace(plot_circuit(c), NODE_TRACE)
    assert [r[1] for r in nodes.customdata] == list(nodes.ids)
    empty = plot_circuit(c, min_score=10.0)
    assert figure_edges(empty).empty and figure_nodes(empty) == []
    texts = " ".join(a.text for a in empty.layout.annotations)
    assert "No edges" in texts and "threshold" in texts.lower()
    with pytest.raises(ValueError, match="min_score"):
        plot_circuit(c, min_score=-1)
    with pytest.raises(ValueError, match="top_k_per_node"):
        plot_circuit(c, top_k_per_node=0)
    with pytest.raises(ValueError, match="unknown nodes to highlight"):
        plot_circuit(c, highlight=["nope"])
    with pytest.raises(ValueError, match="expects a Circuit"):
        plot_circuit(c.edges)


def test_readable_at_hundreds_of_nodes():
    rng = np.random.default_rng(1)
    n_per, sites = 80, ["L0.resid_post", "L1.resid_post", "L2.resid_post", "L3.resid_post"]
    src, tgt = [], []
    for i in range(3):
        for _ in range(1500):
            src.append(feature_node(sites[i], int(rng.integers(n_per))))
            tgt.append(feature_node(sites[i + 1], int(rng.integers(n_per))))
    e = pd.DataFrame({"source": src, "target": tgt}).drop_duplicates()
    e["weight"] = rng.normal(size=len(e))
    names = [feature_node(s, p) for s in sites for p in range(n_per)]
    c = Circuit(pd.DataFrame({"node": names, "site": [n.split("/")[0] for n in names], "kind": "feature"}), e)
    fig = plot_circuit(c, top_k_per_node=2)
    shown = figure_nodes(fig)
    assert len(shown) >= 200
    assert len(figure_edges(fig)) <= 2 * 2 * len(shown) < len(e) / 3
    nodes = trace(fig, NODE_TRACE)
    assert nodes.mode == "markers"  # no text clutter at this size; labels are in the hover
    assert fig.layout.height >= 26 * 80


def test_plot_path_counts_edges_per_alpha():
    c = feature_circuit()
    summ = path_summary(c)
    assert summ["n_edges"].tolist() == [int(np.isclose(c.path["alpha"], a).sum()) for a in c.alphas]
    fig = plot_path(c)
    assert list(fig.data[0].y) == summ["n_edges"].tolist()
    sel = next(t for t in fig.data if t.name == "selected")
    assert sel.x[0] == c.meta["alpha"] and sel.y[0] == c.n_edges
    with pytest.raises(ValueError, match="no regularisation path"):
        path_summary(Circuit(c.nodes, c.edges))


# -- the explorer ----------------------------------------------------------------------------------------------
def test_explorer_sparsity_and_threshold_update_the_figure():
    c = feature_circuit()
    ex = CircuitExplorer(c)
    assert edge_set(figure_edges(ex.figure)) == edge_set(c.edges)
    for a in c.alphas:
        ex.set_alpha(a)
        assert edge_set(figure_edges(ex.figure)) == edge_set(c.at(a).edges)
        assert set(figure_nodes(ex.figure)) == set(c.at(a).edges[["source", "target"]].stack())
    ex.set_threshold(0.5)
    assert edge_set(figure_edges(ex.figure)) == edge_set(c.at(c.alphas[-1]).threshold(0.5).edges)
    assert ex.current.edges["score"].min() >= 0.5
    ex.set_threshold(0.0)
    ex.set_alpha(None)  # back to the fitted circuit
    assert edge_set(figure_edges(ex.figure)) == edge_set(c.edges)
    with pytest.raises(ValueError, match="outside the fitted path"):
        ex.set_alpha(10.0)
    with pytest.raises(ValueError, match="threshold"):
        ex.set_threshold(-0.1)
    w = ex.widget  # the widgets drive the same methods and follow them
    ex._widgets["alpha"].value = float(c.alphas[0])
    assert ex.alpha == c.alphas[0] and edge_set(figure_edges(ex.figure)) == edge_set(c.at(c.alphas[0]).edges)
    ex.set_alpha(None)
    assert ex._widgets["alpha"].value == "fitted" and w.children
    ex.set_threshold(100.0)  # nothing passes: the figure says so instead of going blank
    assert figure_edges(ex.figure).empty
    assert any("No edges pass" in a.text for a in ex.figure.layout.annotations)


def test_explorer_without_path_falls_back_to_threshold():
    c = feature_circuit()
    nopath = Circuit(c.nodes, c.edges, None, {})
    ex = CircuitExplorer(nopath, top_k_per_node=1)
    with pytest.raises(ValueError, match="no regularisation path.*set_threshold"):
        ex.set_alpha(0.2)
    ex.set_threshold(0.6)
    from circuitkit.viz.figure import select_edges

    assert edge_set(figure_edges(ex.figure)) == edge_set(select_edges(nopath, top_k_per_node=1, min_score=0.6))
    w = ex.widget
    assert "alpha" not in ex._widgets and w.children
    ex._widgets["threshold"].value = 0.2  # the slider drives the same method
    assert ex.min_score == 0.2


def test_explorer_filters_search_select_highlight_and_mark():
    c = feature_circuit().at(0.05)
    ex = CircuitExplorer(c)
    ex.filter_sites(["L1.resid_post", "L2.resid_post"])
    assert {n.split("/")[0] for n in figure_nodes(ex.figure)} == {"L1.resid_post", "L2.resid_post"}
    with pytest.raises(ValueError, match="unknown site.*sites are"):
        ex.filter_sites(["L9.MLP"])
    ex.filter_sites(None)
    ex.filter_label("tok3")
    lab = dict(zip(c.nodes["node"], c.nodes["label"]))
    drawn = figure_edges(ex.figure)
    assert len(drawn) and all("tok3" in lab[s] or "tok3" in lab[t] for s, t in zip(drawn["source"], drawn["target"]))
    ex.filter_label("")
    assert edge_set(figure_edges(ex.figure)) == edge_set(c.edges)

    found = ex.search("tok1")
    assert set(found["node"]) == {n for n, v in lab.items() if "tok1" in v}
    nodes = trace(ex.figure, NODE_TRACE)
    opacity = dict(zip(nodes.ids, nodes.marker.opacity))
    assert all((opacity[n] == 1.0) == (n in set(found["node"])) for n in nodes.ids)

    node = "L1.resid_post/" + c.edges[c.edges["source"].str.startswith("L1")]["source"].iloc[0].split("/")[1]
    d = ex.select_node(node)
    assert edge_set(d["in_edges"].rename(columns={"source": "source"}).assign(target=node)) == \
        edge_set(c.edges[c.edges["target"] == node])
    assert set(d["out_edges"]["target"]) == set(c.edges[c.edges["source"] == node]["target"])
    nodes = trace(ex.figure, NODE_TRACE)
    widths = dict(zip(nodes.ids, nodes.marker.line.width))
    assert widths[node] == 4 and sum(w == 4 for w in widths.values()) == 1
    # clicking a node in the figure is the same as select_node
    other = figure_nodes(ex.figure)[0]
    ex._on_click(nodes, SimpleNamespace(point_inds=[list(nodes.ids).index(other)]), None)
    assert ex.selected == other

    hl = ex.highlight_paths_to("y")
    g = nx.DiGraph(list(edge_set(c.edges)))
    assert hl == nx.ancestors(g, "y") | {"y"}
    dim = sum(t.y.count(None) if t.y else 0 for t in ex.figure.data if t.name.endswith("dim"))
    off_path = sum(1 for s, t in edge_set(c.edges) if not (s in hl and t in hl))
    assert dim == off_path > 0
    ex.highlight_paths_to(None)
    assert ex.highlighted is None

    ex.mark([node, other])
    ex.unmark(other)
    assert ex.marked == {node}
    widths = dict(zip(trace(ex.figure, NODE_TRACE).ids, trace(ex.figure, NODE_TRACE).marker.line.width))
    assert widths[node] == 3
    assert ex.marked_table()["node"].tolist() == [node]
    for bad in (lambda: ex.select_node("L1.resid_post/f999"), lambda: ex.mark("nope"),
                lambda: ex.highlight_paths_to("nope")):
        with pytest.raises(ValueError, match="unknown node"):
            bad()


def test_explorer_on_unlabelled_circuit_uses_node_names():
    c = feature_circuit(labels=False)
    ex = CircuitExplorer(c)
    nodes = trace(ex.figure, NODE_TRACE)
    assert [r[1] for r in nodes.customdata] == list(nodes.ids)
    assert ex.search("L2.resid_post/f1")["match"].tolist() == ["name"]


# -- exports -----------------------------------------------------------------------------------------------
def test_export_html_is_self_contained_with_a_sparsity_slider(tmp_path):
    import re

    c = feature_circuit()
    page = export_html(c, tmp_path / "c.html")
    text = page.read_text()
    assert not re.search(r"<script[^>]+src=[\"']?(https?:)?//", text)
    assert len(text) > 1_000_000  # plotly.js inline
    n_steps = len(re.findall(r'"method":"animate"', text))  # the fitted circuit + every path point
    assert n_steps == 1 + len(c.alphas)
    assert "sparsity: " in text and "L1.resid_post" in text
    fig_page = export_html(plot_circuit(c), tmp_path / "fig.html")
    assert fig_page.stat().st_size > 1_000_000
    captioned = export_html(c, tmp_path / "cap.html", title="IOI <circuit>",
                            caption="Model: toy.\n\nPrompts: 40 IOI & SVA.").read_text()
    assert "<title>IOI &lt;circuit&gt;</title>" in captioned
    assert "<p>Model: toy.</p><p>Prompts: 40 IOI &amp; SVA.</p>" in captioned


def test_export_png_error_names_the_fix(tmp_path, monkeypatch):
    import plotly.graph_objects as go

    def boom(*a, **k):
        raise RuntimeError("no browser")

    monkeypatch.setattr(go.Figure, "write_image", boom)
    with pytest.raises(RuntimeError, match="apt-get install -y chromium"):
        export_png(feature_circuit(), tmp_path / "c.png")


def test_export_graph_formats(tmp_path):
    from circuitkit.viz.export import export_graph

    c = feature_circuit()
    g = nx.read_graphml(export_graph(c, tmp_path / "c.graphml"))
    assert set(g.edges) == edge_set(c.edges)
    assert Circuit.load(export_graph(c, tmp_path / "c.json")) == c
    csv = pd.read_csv(export_graph(c, tmp_path / "edges.csv"))
    assert edge_set(csv) == edge_set(c.edges) and "source_label" in csv
    with pytest.raises(ValueError, match="unknown export format"):
        export_graph(c, tmp_path / "c.docx")
