"""`CircuitExplorer`: an ipywidgets UI around :func:`~circuitkit.viz.figure.plot_circuit`.

Every control calls a plain method, so the same actions work from code and in tests::

    ex = CircuitExplorer(circuit, features=feats, top_k_per_node=3)
    ex.set_alpha(circuit.alphas[2])       # a stored path point (circuit.at, no refit)
    ex.set_threshold(0.05)                # hide edges with score < 0.05
    ex.set_min_probability(0.8)           # stability-selected circuits: hide edges selected in < 80% of halves
    ex.filter_sites(["L1.resid_post", "L2.resid_post"])
    ex.filter_label("john")               # edges touching a node whose label/name contains "john"
    ex.search("mary")                     # nodes whose label, name or top tokens match; highlighted
    ex.select_node("L2.resid_post/f7")    # contexts and in/out edges in ex.details
    ex.highlight_paths_to("y")            # every node with a path into "y" (networkx ancestors)
    ex.mark("L1.resid_post/f3")           # ex.marked: features chosen for ablation
    ex.show()

A circuit whose edges carry selection probabilities (``selection="stability"``) is drawn with edge opacity
by probability, shows it in the edge hover, and gets a probability-threshold slider (``min_probability``);
edges without a probability (the points of the regularisation path) are never hidden by that slider.

State lives in attributes (``alpha``, ``min_score``, ``min_probability``, ``sites``, ``label_query``, ``selected``,
``highlighted``, ``marked``); ``ex.current`` is the circuit on screen and ``ex.figure`` the
``plotly.graph_objects.FigureWidget`` (updated in place; its trace structure never changes, see
:mod:`circuitkit.viz.figure`). Node positions are recomputed only when the sparsity level changes, so
filters and thresholds never move nodes.
"""

from __future__ import annotations

import html
import logging
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..circuit import Circuit
from .figure import (
    NODE_TRACE,
    _evidence_lookup,
    bound_statement,
    build_figure,
    has_probability,
    layout_positions,
    select_edges,
)

if TYPE_CHECKING:
    import plotly.graph_objects as go

logger = logging.getLogger(__name__)


_FITTED = "fitted"  # the sparsity slider's value for the fitted circuit (ipywidgets sliders cannot hold None)


def _as_list(nodes: str | Iterable[str]) -> list[str]:
    return [nodes] if isinstance(nodes, str) else list(nodes)


class CircuitExplorer:
    """Explore a circuit in Jupyter (module docstring).

    Parameters
    ----------
    circuit: the circuit (labelled with :func:`circuitkit.labels.label_circuit` for readable names; node
        names are used otherwise).
    features: the :class:`~circuitkit.sae.Features` it was fitted on (for contexts), or
    evidence: a precomputed :func:`circuitkit.labels.feature_evidence` table.
    top_k_per_node: draw at most this many strongest in/out edges per node (see ``select_edges``).
    height: figure height in pixels (default: grows with the tallest column, at most 1400).
    """

    def __init__(self, circuit: Circuit, *, features: Any = None, evidence: pd.DataFrame | None = None,
                 top_k_per_node: int | None = None, height: int | None = None) -> None:
        if not isinstance(circuit, Circuit):
            raise ValueError(f"CircuitExplorer expects a Circuit, got {type(circuit).__name__}")
        if top_k_per_node is not None and not (isinstance(top_k_per_node, (int, np.integer)) and top_k_per_node >= 1):
            raise ValueError(f"top_k_per_node must be an int >= 1 or None, got {top_k_per_node!r}")
        self.circuit = circuit
        self.has_probability = has_probability(circuit)
        self.top_k_per_node = top_k_per_node
        self.height = height
        if evidence is None and features is not None:
            from ..labels import feature_evidence

            used = self._nodes_on_any_level()
            feat_nodes = circuit.nodes.loc[(circuit.nodes["kind"] == "feature") & circuit.nodes["node"].isin(used), "node"]
            evidence = feature_evidence(features, nodes=feat_nodes.tolist())
        self.evidence = evidence
        self._ev = _evidence_lookup(circuit, evidence)
        self._tokens = {}
        if evidence is not None and "top_tokens" in evidence:
            self._tokens = {r["node"]: [str(t).lower() for t in (r["top_tokens"] or [])]
                            for r in evidence[["node", "top_tokens"]].to_dict("records")}
        self._known = set(circuit.node_names)
        self._labels = {n: (lab if lab else n) for n, lab in zip(circuit.nodes["node"], circuit.nodes["label"])}
        self._site_of = dict(zip(circuit.nodes["node"], circuit.nodes["site"]))
        # state
        self.alpha: float | None = None      # None: the fitted circuit; else a stored path point
        self.min_score: float = 0.0
        self.min_probability: float = 0.0
        self.sites: set[str] | None = None
        self.label_query: str = ""
        self.search_results: pd.DataFrame = pd.DataFrame(columns=["node", "label", "site", "match"])
        self.selected: str | None = None
        self.details: dict[str, Any] = {}
        self.target: str | None = None
        self.highlighted: set[str] | None = None
        self.marked: set[str] = set()
        self.status: str = ""
        self._syncing = False
        self._level = circuit
        self._level_edges = select_edges(circuit, top_k_per_node=top_k_per_node)
        self._positions, self._titles = layout_positions(
            circuit, set(self._level_edges["source"]).union(self._level_edges["target"]), self._level_edges)
        self.current: Circuit = circuit
        self.figure = self._make_figure_widget()
        self._widgets: dict[str, Any] = {}
        self._refresh()

    # -- helpers ---------------------------------------------------------------------------------------------
    @property
    def has_path(self) -> bool:
        return self.circuit.path is not None and self.circuit.alphas.size > 0

    def _nodes_on_any_level(self) -> set[str]:
        used = set(self.circuit.edges["source"]).union(self.circuit.edges["target"])
        if self.has_path:
            used |= set(self.circuit.path["source"]).union(self.circuit.path["target"])
        return used

    def _check_nodes(self, nodes: Iterable[str]) -> list[str]:
        nodes = _as_list(nodes)
        bad = [n for n in nodes if n not in self._known]
        if bad:
            raise ValueError(f"unknown node(s) {bad[:5]}; nodes are listed in circuit.nodes['node'] "
                             f"(e.g. {self.circuit.node_names[:3]})")
        return nodes

    def _make_figure_widget(self) -> go.FigureWidget:
        import plotly.graph_objects as go

        fig = build_figure(self.circuit, self._level_edges, positions=self._positions, titles=self._titles,
                           evidence=self._ev, height=self._height(), probability=self.has_probability)
        fw = go.FigureWidget(fig)
        for t in fw.data:
            if t.name == NODE_TRACE:
                t.on_click(self._on_click)
        return fw

    def _height(self) -> int:
        if self.height is not None:
            return int(self.height)
        cols = pd.Series([round(p[0]) for p in self._positions.values()]) if self._positions else pd.Series([0])
        return int(min(1400, max(460, 140 + 26 * int(cols.value_counts().max()))))

    def _view_edges(self) -> pd.DataFrame:
        edges = self._level_edges
        if self.min_score > 0:
            edges = edges[edges["score"] >= self.min_score]
        if self.min_probability > 0 and "probability" in edges.columns:
            edges = edges[~(edges["probability"] < self.min_probability)]
        if self.sites:
            site = edges["source"].map(self._site_of).isin(self.sites) & edges["target"].map(self._site_of).isin(self.sites)
            edges = edges[site]
        if self.label_query:
            match = self._label_matches(self.label_query)
            edges = edges[edges["source"].isin(match) | edges["target"].isin(match)]
        return edges.reset_index(drop=True)

    def _label_matches(self, query: str) -> set[str]:
        q = query.lower()
        return {n for n, lab in self._labels.items() if q in lab.lower() or q in n.lower()}

    def _refresh(self) -> None:
        edges = self._view_edges()
        meta = {**self._level.meta, "explorer_min_score": self.min_score}
        if self.has_probability:
            meta["explorer_min_probability"] = self.min_probability
        self.current = Circuit(self._level.nodes, edges, self.circuit.path, meta)
        msg = None
        if not len(edges):
            if not len(self._level_edges):
                msg = ("No edges at this sparsity.<br>Move the sparsity slider to a smaller alpha." if self.has_path
                       else "This circuit has no edges.")
            else:
                msg = (f"No edges pass the filters (threshold {self.min_score:.3g}"
                       + (f", probability >= {self.min_probability:.2f}" if self.min_probability > 0 else "")
                       + (f", sites {sorted(self.sites)}" if self.sites else "")
                       + (f", label '{html.escape(self.label_query)}'" if self.label_query else "")
                       + ").<br>Lower the threshold or clear the filters.")
        shown = set(edges["source"]).union(edges["target"])
        hl = None if self.highlighted is None else self.highlighted
        nodes = shown | ({self.selected} if self.selected else set())
        level_label = "fitted" if self.alpha is None else f"α={self.alpha:.3g}"
        title = f"{level_label} · {len(nodes)} nodes · {len(edges)} edges"
        if self.marked:
            title += f" · {len(self.marked)} marked"
        if self.min_probability > 0:
            title += f" · probability ≥ {self.min_probability:.2f}"
        new = build_figure(self._level, edges, positions=self._positions,
                           titles=self._titles, evidence=self._ev, highlight=hl, marked=self.marked & nodes,
                           selected=self.selected, nodes=nodes, height=self._height(), title=title, empty_message=msg,
                           probability=self.has_probability)
        with self.figure.batch_update():
            for old, tr in zip(self.figure.data, new.data):
                d = tr.to_plotly_json()
                d.pop("type", None)
                old.update(d, overwrite=True)
            lay = new.layout.to_plotly_json()
            lay.pop("template", None)
            self.figure.layout.update(lay, overwrite=True)
        self._sync_widgets()

    # -- actions (the widgets call these) -----------------------------------------------------------------------
    def set_alpha(self, alpha: float | None) -> CircuitExplorer:
        """Show the stored path point nearest ``alpha`` (``circuit.at``; no refit); ``None`` shows the fitted
        circuit. ``ValueError`` without a path or outside it."""
        if alpha is None:
            self.alpha, self._level = None, self.circuit
        else:
            if not self.has_path:
                raise ValueError("this circuit has no regularisation path, so there is no alpha to choose; "
                                 "use set_threshold(min_score) instead")
            if not (isinstance(alpha, (int, float, np.floating)) and math.isfinite(alpha)):
                raise ValueError(f"alpha must be a finite number within the path, got {alpha!r}")
            level = self.circuit.at(float(alpha))  # ValueError outside the path
            self.alpha, self._level = float(level.meta["alpha"]), level
        self._level_edges = select_edges(self._level, top_k_per_node=self.top_k_per_node)
        self._positions, self._titles = layout_positions(
            self.circuit, set(self._level_edges["source"]).union(self._level_edges["target"]), self._level_edges)
        if self.target is not None:
            self._compute_paths(self.target)
        self._refresh()
        return self

    def set_threshold(self, min_score: float) -> CircuitExplorer:
        """Hide edges with ``score < min_score`` (on top of the sparsity level)."""
        if not (isinstance(min_score, (int, float, np.floating)) and math.isfinite(min_score) and min_score >= 0):
            raise ValueError(f"threshold must be a finite number >= 0, got {min_score!r}")
        self.min_score = float(min_score)
        if self.target is not None:
            self._compute_paths(self.target)
        self._refresh()
        return self

    def set_min_probability(self, min_probability: float) -> CircuitExplorer:
        """Hide edges whose selection probability is below ``min_probability`` (a number in [0, 1]); edges
        without a probability are kept. ``ValueError`` for a circuit without selection probabilities."""
        if not self.has_probability:
            raise ValueError("this circuit's edges have no selection probabilities (no 'probability' column; fit "
                             "CircuitLasso with selection='stability'); use set_threshold(min_score) instead")
        if isinstance(min_probability, (bool, np.bool_)) or not (
                isinstance(min_probability, (int, float, np.floating)) and 0 <= min_probability <= 1):
            raise ValueError(f"min_probability must be a number in [0, 1], got {min_probability!r}")
        self.min_probability = float(min_probability)
        if self.target is not None:
            self._compute_paths(self.target)
        self._refresh()
        return self

    @property
    def bound(self) -> str | None:
        """The circuit's stated error bound (:func:`~circuitkit.viz.figure.bound_statement`), or ``None``."""
        return bound_statement(self.circuit.meta)

    def filter_sites(self, sites: str | Iterable[str] | None = None) -> CircuitExplorer:
        """Keep edges whose two ends lie in ``sites`` (``None`` or empty: all sites)."""
        if sites is None or (not isinstance(sites, str) and len(list(sites)) == 0):
            self.sites = None
        else:
            sites = _as_list(sites)
            valid = sorted(set(self.circuit.nodes["site"]) - {""})
            bad = [s for s in sites if s not in valid]
            if bad:
                raise ValueError(f"unknown site(s) {bad}; this circuit's sites are {valid}")
            self.sites = set(sites)
        self._refresh()
        return self

    def filter_label(self, query: str | None = "") -> CircuitExplorer:
        """Keep edges with an end whose label or node name contains ``query`` (case-insensitive); ``""``
        clears the filter."""
        self.label_query = (query or "").strip()
        self._refresh()
        return self

    def search(self, query: str) -> pd.DataFrame:
        """Nodes whose label or name contains ``query`` or whose top-activating tokens include it
        (case-insensitive); they are highlighted. Returns a table ``node, label, site, match``. ``""`` clears."""
        q = (query or "").strip().lower()
        if not q:
            self.search_results = pd.DataFrame(columns=["node", "label", "site", "match"])
            self.highlighted = None
            self.status = ""
            self._refresh()
            return self.search_results
        rows = []
        for n in self.circuit.node_names:
            lab = self._labels[n]
            if lab != n and q in lab.lower():
                how = "label"
            elif q in n.lower():
                how = "name"
            elif q in self._tokens.get(n, []):
                how = "top token"
            else:
                continue
            rows.append({"node": n, "label": lab, "site": self._site_of[n], "match": how})
        self.search_results = pd.DataFrame(rows, columns=["node", "label", "site", "match"])
        self.target = None
        self.highlighted = set(self.search_results["node"]) if rows else None
        on_screen = len(set(self.search_results["node"]) & set(self.current.edges["source"]).union(self.current.edges["target"]))
        self.status = f"search '{html.escape(q)}': {len(rows)} nodes match, {on_screen} on screen"
        self._refresh()
        return self.search_results

    def select_node(self, node: str) -> dict[str, Any]:
        """Select ``node``: ``self.details`` gets its label, contexts and in/out edges (on screen); the node is
        ringed in the figure. Returns the details."""
        (node,) = self._check_nodes([node])
        self.selected = node
        e = self.current.edges
        lab = self._labels
        ins = e[e["target"] == node][["source", "weight", "score"]].assign(label=lambda d: d["source"].map(lab))
        outs = e[e["source"] == node][["target", "weight", "score"]].assign(label=lambda d: d["target"].map(lab))
        ev = self._ev.get(node, {})
        contexts = list(ev.get("contexts") or [])
        if self.evidence is not None and len(self.evidence):
            hit = self.evidence[self.evidence["node"] == node]
            if len(hit):
                contexts = list(hit["top_contexts"].iat[0])
        self.details = {"node": node, "label": lab[node], "site": self._site_of[node],
                        "frequency": ev.get("frequency"), "mean_activation": ev.get("mean_activation"),
                        "neuronpedia": ev.get("neuronpedia"), "contexts": contexts,
                        "in_edges": ins.reset_index(drop=True), "out_edges": outs.reset_index(drop=True),
                        "marked": node in self.marked}
        self._refresh()
        return self.details

    def _compute_paths(self, target: str) -> set[str]:
        import networkx as nx

        e = self._view_edges()
        g = nx.DiGraph()
        g.add_edges_from(zip(e["source"], e["target"]))
        anc = nx.ancestors(g, target) if target in g else set()
        self.highlighted = anc | {target}
        self.status = (f"{len(anc)} nodes have a path into {html.escape(self._labels[target])}" if anc else
                       f"no edge leads into {html.escape(target)} at this sparsity/threshold")
        return self.highlighted

    def highlight_paths_to(self, target: str | None) -> set[str]:
        """Highlight every node with a directed path into ``target`` (networkx ancestors on the edges on
        screen) and the edges among them; ``None`` clears. Returns the highlighted nodes."""
        if target is None:
            self.target, self.highlighted, self.status = None, None, ""
            self._refresh()
            return set()
        (target,) = self._check_nodes([target])
        self.target = target
        hl = self._compute_paths(target)
        self._refresh()
        return hl

    def clear_highlight(self) -> CircuitExplorer:
        self.highlight_paths_to(None)
        return self

    def mark(self, nodes: str | Iterable[str]) -> set[str]:
        """Add nodes to ``self.marked`` (e.g. features to ablate); returns the marked set."""
        self.marked |= set(self._check_nodes(nodes))
        if self.selected is not None:
            self.details["marked"] = self.selected in self.marked
        self._refresh()
        return self.marked

    def unmark(self, nodes: str | Iterable[str]) -> set[str]:
        """Remove nodes from ``self.marked``; returns the marked set."""
        self.marked -= set(self._check_nodes(nodes))
        if self.selected is not None:
            self.details["marked"] = self.selected in self.marked
        self._refresh()
        return self.marked

    def marked_table(self) -> pd.DataFrame:
        """The marked nodes with site, kind, feature index and label (node order)."""
        n = self.circuit.nodes
        return n[n["node"].isin(self.marked)][["node", "site", "kind", "feature", "label"]].reset_index(drop=True)

    def _on_click(self, trace: Any, points: Any, state: Any) -> None:
        inds = list(getattr(points, "point_inds", []) or [])
        if inds:
            self.select_node(str(trace.ids[inds[0]]))

    # -- widgets ---------------------------------------------------------------------------------------------
    def _details_html(self) -> str:
        d = self.details
        if not d:
            return "<i>Click a node to see its contexts and edges.</i>"
        e = html.escape
        parts = [f"<b>{e(d['label'])}</b> <code>{e(d['node'])}</code>" + (" · <b>marked</b>" if d.get("marked") else "")]
        stats = []
        if d.get("frequency") is not None and not math.isnan(d["frequency"]):
            stats.append(f"active in {d['frequency']:.2%} of rows")
        if d.get("mean_activation") is not None and not math.isnan(d["mean_activation"]):
            stats.append(f"mean activation {d['mean_activation']:.3g}")
        if stats:
            parts.append(" · ".join(stats))
        if d.get("neuronpedia"):
            parts.append(f"<a href='{e(d['neuronpedia'])}' target='_blank'>Neuronpedia</a>")
        if d["contexts"]:
            parts.append("<b>Top contexts</b><ol>" + "".join(f"<li><code>{e(c)}</code></li>" for c in d["contexts"])
                         + "</ol>")

        def table(df: pd.DataFrame, col: str, title: str) -> str:
            if df.empty:
                return f"<b>{title}</b>: none on screen"
            rows = "".join(f"<tr><td>{e(r['label'])}</td><td><code>{e(r[col])}</code></td>"
                           f"<td style='color:{'#2563eb' if r['weight'] >= 0 else '#dc2626'}'>{r['weight']:+.3g}</td></tr>"
                           for r in df.head(15).to_dict("records"))
            return f"<b>{title}</b><table>{rows}</table>"

        parts.append(table(d["in_edges"], "source", "In-edges"))
        parts.append(table(d["out_edges"], "target", "Out-edges"))
        return "<br>".join(parts)

    def _build_widgets(self) -> dict[str, Any]:
        import ipywidgets as W

        w: dict[str, Any] = {}
        if self.has_path:
            opts = [(f"fitted ({self.circuit.n_edges} edges)", _FITTED)]
            for a in self.circuit.alphas:
                n = int(np.isclose(self.circuit.path["alpha"], a, rtol=1e-12, atol=0).sum())
                opts.append((f"α={a:.3g} ({n} edges)", float(a)))
            w["alpha"] = W.SelectionSlider(options=opts, value=_FITTED if self.alpha is None else self.alpha,
                                           description="sparsity",
                                           continuous_update=False, layout=W.Layout(width="520px"))
            w["alpha"].observe(lambda ch: self._from_widget(self.set_alpha, None if ch["new"] == _FITTED else ch["new"]),
                               names="value")
        max_score = float(self.circuit.edges["score"].max()) if self.circuit.n_edges else 1.0
        if self.has_path:
            max_score = max(max_score, float(self.circuit.path["score"].max()) if len(self.circuit.path) else 0.0)
        w["threshold"] = W.FloatSlider(value=self.min_score, min=0.0, max=max_score, step=max_score / 100 or 0.01,
                                       description="min score", continuous_update=False, readout_format=".3g")
        w["threshold"].observe(lambda ch: self._from_widget(self.set_threshold, ch["new"]), names="value")
        if self.has_probability:
            w["probability"] = W.FloatSlider(value=self.min_probability, min=0.0, max=1.0, step=0.01,
                                             description="min prob.", continuous_update=False, readout_format=".2f")
            w["probability"].observe(lambda ch: self._from_widget(self.set_min_probability, ch["new"]),
                                     names="value")
            w["bound"] = W.HTML(value=html.escape(self.bound or ""))
        sites = sorted(set(self.circuit.nodes["site"]) - {""}, key=list(dict.fromkeys(self.circuit.nodes["site"])).index)
        w["sites"] = W.SelectMultiple(options=sites, value=tuple(self.sites or ()), description="sites",
                                      rows=min(6, max(2, len(sites))))
        w["sites"].observe(lambda ch: self._from_widget(self.filter_sites, list(ch["new"]) or None), names="value")
        w["label"] = W.Text(value=self.label_query, description="label", placeholder="filter by label",
                            continuous_update=False)
        w["label"].observe(lambda ch: self._from_widget(self.filter_label, ch["new"]), names="value")
        w["search"] = W.Text(description="search", placeholder="token or label", continuous_update=False)
        w["search"].observe(lambda ch: self._from_widget(self.search, ch["new"]), names="value")
        targets = self.circuit.nodes.loc[self.circuit.nodes["kind"] == "target", "node"].tolist()
        used = self._nodes_on_any_level()
        choices = targets + [n for n in self.circuit.node_names if n in used and n not in targets]
        w["target"] = W.Dropdown(options=[("(none)", None)] + [(f"{self._labels[n]} · {n}"
                                                                if self._labels[n] != n else n, n) for n in choices],
                                 value=self.target, description="paths into")
        w["target"].observe(lambda ch: self._from_widget(self.highlight_paths_to, ch["new"]), names="value")
        w["mark"] = W.Button(description="mark selected", icon="check")
        w["mark"].on_click(lambda _b: self.selected and self.mark(self.selected))
        w["unmark"] = W.Button(description="unmark selected", icon="times")
        w["unmark"].on_click(lambda _b: self.selected and self.unmark(self.selected))
        w["marked"] = W.HTML()
        w["details"] = W.HTML()
        w["status"] = W.HTML()
        return w

    def _from_widget(self, fn: Any, value: Any) -> None:
        if self._syncing:
            return
        try:
            fn(value)
        except ValueError as e:
            self.status = f"<span style='color:#dc2626'>{html.escape(str(e))}</span>"
            self._sync_widgets()

    def _sync_widgets(self) -> None:
        w = self._widgets
        if not w:
            return
        self._syncing = True
        try:
            want = _FITTED if self.alpha is None else self.alpha
            if "alpha" in w and w["alpha"].value != want:
                w["alpha"].value = want
            if w["threshold"].value != self.min_score:
                w["threshold"].value = min(self.min_score, w["threshold"].max)
            if "probability" in w and w["probability"].value != self.min_probability:
                w["probability"].value = self.min_probability
            if set(w["sites"].value) != (self.sites or set()):
                w["sites"].value = tuple(s for s in w["sites"].options if s in (self.sites or set()))
            if w["label"].value != self.label_query:
                w["label"].value = self.label_query
            if w["target"].value != self.target and self.target in [v for _, v in w["target"].options]:
                w["target"].value = self.target
            w["details"].value = self._details_html()
            w["marked"].value = ("<b>marked</b>: " + ", ".join(f"<code>{html.escape(n)}</code>"
                                                               for n in sorted(self.marked))) if self.marked else ""
            w["status"].value = self.status
        finally:
            self._syncing = False

    @property
    def widget(self) -> Any:
        """The ipywidgets box (built on first use)."""
        import ipywidgets as W

        if not self._widgets:
            self._widgets = self._build_widgets()
            self._sync_widgets()
        w = self._widgets
        first = [w[k] for k in ("alpha", "threshold", "probability") if k in w]
        controls = [W.HBox(first) if len(first) > 1 else first[0],
                    *([w["bound"]] if "bound" in w else []),
                    W.HBox([w["sites"], W.VBox([w["label"], w["search"], w["target"]])]),
                    W.HBox([w["mark"], w["unmark"], w["marked"]]), w["status"]]
        return W.VBox([*controls, self.figure, w["details"]])

    def show(self) -> None:
        """Display the explorer in the notebook."""
        from IPython.display import display

        display(self.widget)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        lvl = "fitted" if self.alpha is None else f"alpha={self.alpha:.4g}"
        return (f"CircuitExplorer({lvl}, edges on screen={self.current.n_edges}, marked={len(self.marked)}, "
                f"selected={self.selected!r})")
