"""A layered plotly drawing of a :class:`~circuitkit.circuit.Circuit`, its regularisation path, and exports.

Layout
------
Columns are the circuit's sites in computation order (:mod:`circuitkit.sites`); the heads of one layer
share a column (they run in parallel) and prediction targets come last. Within a column, nodes are
ordered by a few barycentre sweeps so that edges cross little. Nodes without a shown edge are hidden
unless ``show_isolated=True``.

Traces (fixed structure, so a figure can be updated in place and animated with frames)
--------------------------------------------------------------------------------------
* ``2 signs x 2 emphasis x 4 width bins`` line traces named ``"edges+ w{b}"`` / ``"edges- w{b}"``
  (``" dim"`` appended for edges outside a highlight): blue for positive weights, red for negative ones,
  width growing with ``score / max score``;
* ``"edge info"``: one marker at the middle of every shown edge, ``ids`` ``"source->target"`` and
  ``customdata`` ``[source, target, weight, score]`` (the hover of an edge);
* with selection probabilities (a circuit fitted with ``selection="stability"``, whose edges have a
  ``probability`` column), every edge line trace is split again into ``len(PROB_OPACITY)`` opacity bins
  (``" p{k}"`` appended, see :func:`probability_bin`; ``" p?"`` for edges without a probability, e.g. the
  points of the regularisation path), so opacity encodes the probability while width still encodes the
  score; the edge hover and ``customdata`` (``[source, target, weight, score, probability]``) carry it.
  Circuits without the column get exactly the traces above.
* ``"nodes"``: one marker per shown node, ``ids`` = node names, ``customdata``
  ``[node, label, site, kind, hover html]``.

So ``fig.data`` name ``"nodes"`` holds exactly the shown nodes and ``"edge info"`` exactly the shown
edges; tests and tools can read them back.

Exports: :func:`export_html` (self-contained page, plotly.js inline, with a sparsity slider),
:func:`export_png` (kaleido + a Chromium), and GraphML / JSON through ``Circuit.to_graphml`` /
``Circuit.save``.
"""

from __future__ import annotations

import html
import logging
import math
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..circuit import Circuit

if TYPE_CHECKING:  # plotly is imported lazily
    import plotly.graph_objects as go

logger = logging.getLogger(__name__)

POS_COLOR = "#2563eb"
NEG_COLOR = "#dc2626"
N_WIDTH_BINS = 4
WIDTHS = (0.8, 1.8, 3.2, 5.2)
_PALETTE = ("#1b9e77", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#1f78b4", "#b15928",
            "#6a3d9a", "#33a02c", "#ff7f00", "#17becf")
_SYMBOL = {"feature": "circle", "site": "circle", "error": "square", "target": "diamond"}
NODE_TRACE = "nodes"
EDGE_INFO_TRACE = "edge info"
PROB_EDGES = (0.7, 0.85, 0.95)           # probability bin edges: [0, .7), [.7, .85), [.85, .95), [.95, 1]
PROB_OPACITY = (0.16, 0.34, 0.6, 0.9)    # line opacity per probability bin
PROB_UNKNOWN_OPACITY = 0.55              # edges without a probability (the opacity of a plain circuit)


def has_probability(circuit_or_edges: Circuit | pd.DataFrame) -> bool:
    """Whether the edges carry selection probabilities (a ``probability`` column)."""
    edges = circuit_or_edges.edges if isinstance(circuit_or_edges, Circuit) else circuit_or_edges
    return "probability" in edges.columns


def probability_bin(p: float) -> str:
    """The opacity bin name (``"p0"`` ... ``"p3"``, ``"p?"`` for a missing probability) of probability ``p``."""
    if p is None or not math.isfinite(float(p)):
        return "p?"
    return f"p{int(np.searchsorted(PROB_EDGES, float(p), side='right'))}"


def _prob_bins() -> list[str]:
    return [f"p{k}" for k in range(len(PROB_OPACITY))] + ["p?"]


def edge_trace_names(*, probability: bool = False) -> list[str]:
    """Names of the edge line traces, in figure order (``probability``: the opacity-binned set)."""
    base = [(s, b, emph) for s in "+-" for emph in (True, False) for b in range(N_WIDTH_BINS)]
    if not probability:
        return [f"edges{s} w{b}{'' if emph else ' dim'}" for s, b, emph in base]
    return [f"edges{s} w{b} {pb}{'' if emph else ' dim'}" for s, b, emph in base for pb in _prob_bins()]


def bound_statement(meta: Mapping[str, Any]) -> str | None:
    """The stated error bound of a stability-selected circuit, from its ``meta``, or ``None`` without one:
    "At most ~X false edges expected (stability selection, pi=..., B=... complementary pairs, q=...)"."""
    bound = meta.get("expected_false_edges_bound")
    if bound is None:
        return None
    parts = [f"pi={meta['pi_thr']:.3g}" if "pi_thr" in meta else None,
             f"B={meta['n_pairs']} complementary pairs" if "n_pairs" in meta else None,
             f"q={meta['q']}" if "q" in meta else None]
    detail = ", ".join(p for p in parts if p)
    return (f"At most ~{float(bound):.3g} false edges expected (stability selection"
            + (f", {detail}" if detail else "") + "); opacity shows each edge's selection probability.")


# -- selection --------------------------------------------------------------------------------------
def select_edges(circuit: Circuit, *, top_k_per_node: int | None = None, min_score: float | None = None,
                 min_probability: float | None = None) -> pd.DataFrame:
    """The edges :func:`plot_circuit` draws.

    ``min_score`` keeps edges with ``score >= min_score`` (as :meth:`Circuit.threshold`); ``min_probability``
    keeps edges whose selection probability is ``>= min_probability`` (``ValueError`` if the circuit's edges
    have no ``probability`` column; edges with a missing probability are kept). Then, with
    ``top_k_per_node = k``, an edge is kept if it is among the ``k`` highest-scoring incoming edges of its
    target **or** among the ``k`` highest-scoring outgoing edges of its source (ties: the order of
    ``circuit.edges``, which is by descending score).
    """
    edges = circuit.edges
    if min_score is not None:
        if not (isinstance(min_score, (int, float, np.floating)) and math.isfinite(min_score) and min_score >= 0):
            raise ValueError(f"min_score must be a finite number >= 0, got {min_score!r}")
        edges = edges[edges["score"] >= min_score]
    if min_probability is not None:
        if not (isinstance(min_probability, (int, float, np.floating)) and 0 <= min_probability <= 1):
            raise ValueError(f"min_probability must be a number in [0, 1], got {min_probability!r}")
        if "probability" not in edges.columns:
            raise ValueError("min_probability needs edges with selection probabilities (a 'probability' column; "
                             "fit CircuitLasso with selection='stability'); this circuit has none")
        edges = edges[~(edges["probability"] < min_probability)]
    if top_k_per_node is not None:
        if not (isinstance(top_k_per_node, (int, np.integer)) and top_k_per_node >= 1):
            raise ValueError(f"top_k_per_node must be an int >= 1 (or None for all edges), got {top_k_per_node!r}")
        e = edges.sort_values("score", ascending=False, kind="mergesort")
        keep_in = e.groupby("target", sort=False).cumcount() < top_k_per_node
        keep_out = e.groupby("source", sort=False).cumcount() < top_k_per_node
        edges = e[keep_in | keep_out].sort_values("score", ascending=False, kind="mergesort")
    return edges.reset_index(drop=True)


# -- layout -----------------------------------------------------------------------------------------
def _column_keys(circuit: Circuit, nodes: list[str]) -> tuple[dict[str, int], list[str]]:
    """Column index of every node and the column titles."""
    from ..sites import parse_site

    info = circuit.nodes.set_index("node")
    kinds = info["kind"].to_dict()
    sites = info["site"].to_dict()
    keyed: dict[str, tuple] = {}
    titles: dict[tuple, set[str]] = {}
    parse_ok = True
    for n in nodes:
        if kinds.get(n) == "target":
            key: tuple = (math.inf, 1)
            title = "targets"
        else:
            try:
                key = tuple(parse_site(str(sites.get(n) or n)).rank)
                title = str(sites.get(n) or n)
            except ValueError:
                parse_ok = False
                break
        keyed[n] = key
        titles.setdefault(key, set()).add(title)
    if not parse_ok:  # free-form node names: layer by longest path from the sources
        import networkx as nx

        g = nx.DiGraph()
        g.add_nodes_from(nodes)
        sub = circuit.edges[circuit.edges["source"].isin(nodes) & circuit.edges["target"].isin(nodes)]
        g.add_edges_from(zip(sub["source"], sub["target"]))
        depth: dict[str, int] = {}
        for n in nx.topological_sort(g):
            depth[n] = max([depth[p] + 1 for p in g.predecessors(n)], default=0)
        keys = sorted(set(depth.values()))
        return {n: keys.index(depth[n]) for n in nodes}, [f"layer {k}" for k in keys]
    order = sorted(titles)
    col_titles = []
    for k in order:
        t = sorted(titles[k])
        if len(t) == 1:
            col_titles.append(t[0])
        else:
            prefix = os.path.commonprefix(t)
            col_titles.append(f"{prefix.rstrip('.H') or prefix} heads" if prefix.startswith("L") else " / ".join(t))
    return {n: order.index(keyed[n]) for n in nodes}, col_titles


def layout_positions(circuit: Circuit, nodes: Iterable[str], edges: pd.DataFrame | None = None, *,
                     sweeps: int = 3) -> tuple[dict[str, tuple[float, float]], list[str]]:
    """``({node: (x, y)}, column titles)`` for the given nodes: x is the column, y spreads each column's
    nodes around 0 in an order that reduces crossings (barycentre sweeps over ``edges``)."""
    order_idx = {n: i for i, n in enumerate(circuit.node_names)}
    nodes = sorted(set(nodes), key=lambda n: order_idx.get(n, len(order_idx)))
    if not nodes:
        return {}, []
    col, titles = _column_keys(circuit, nodes)
    n_cols = max(col.values()) + 1
    columns: list[list[str]] = [[] for _ in range(n_cols)]
    for n in nodes:
        columns[col[n]].append(n)
    edges = circuit.edges if edges is None else edges
    sel = edges[edges["source"].isin(col) & edges["target"].isin(col)]
    src, tgt, w = sel["source"].to_numpy(), sel["target"].to_numpy(), sel["score"].to_numpy(dtype=float)
    ins: dict[str, list[tuple[str, float]]] = {}
    outs: dict[str, list[tuple[str, float]]] = {}
    for s, t, x in zip(src, tgt, w):
        ins.setdefault(t, []).append((s, x))
        outs.setdefault(s, []).append((t, x))

    def place(column: list[str]) -> dict[str, float]:
        return {n: i - (len(column) - 1) / 2 for i, n in enumerate(column)}

    ypos: dict[str, float] = {}
    for c in columns:
        ypos.update(place(c))

    def reorder(column: list[str], nbrs: dict[str, list[tuple[str, float]]]) -> list[str]:
        keys = []
        for i, n in enumerate(column):
            nb = [(ypos[m], x) for m, x in nbrs.get(n, []) if m in ypos]
            if nb:
                ws = np.array([x for _, x in nb]) + 1e-12
                keys.append((float(np.dot([y for y, _ in nb], ws) / ws.sum()), i))
            else:
                keys.append((ypos[n], i))
        return [n for _, n in sorted(zip(keys, column))]

    for _ in range(sweeps):
        for c in range(1, n_cols):
            columns[c] = reorder(columns[c], ins)
            ypos.update(place(columns[c]))
        for c in range(n_cols - 2, -1, -1):
            columns[c] = reorder(columns[c], outs)
            ypos.update(place(columns[c]))
    return {n: (float(col[n]), -ypos[n]) for n in nodes}, titles


# -- hover ----------------------------------------------------------------------------------------------
def _evidence_lookup(circuit: Circuit, evidence: pd.DataFrame | None) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    cols = circuit.nodes.columns
    for rec in circuit.nodes.to_dict("records"):
        d = {}
        if "frequency" in cols and rec.get("frequency") is not None and not pd.isna(rec.get("frequency")):
            d["frequency"] = float(rec["frequency"])
        if "mean_activation" in cols and not pd.isna(rec.get("mean_activation", np.nan)):
            d["mean_activation"] = float(rec["mean_activation"])
        if "contexts" in cols and rec.get("contexts"):
            d["contexts"] = [c for c in str(rec["contexts"]).split("\n") if c]
        if "neuronpedia" in cols and rec.get("neuronpedia"):
            d["neuronpedia"] = str(rec["neuronpedia"])
        if d:
            out[rec["node"]] = d
    if evidence is not None and len(evidence):
        for rec in evidence.to_dict("records"):
            d = out.setdefault(rec["node"], {})
            d["frequency"] = float(rec.get("frequency", np.nan))
            d["mean_activation"] = float(rec.get("mean_activation", np.nan))
            d["contexts"] = list(rec.get("top_contexts") or [])[:3]
            if rec.get("neuronpedia"):
                d["neuronpedia"] = rec["neuronpedia"]
            if rec.get("label") and "label" not in d:
                d["auto_label"] = rec["label"]
    return out


def _node_hover(node: str, label: str, site: str, kind: str, ev: Mapping[str, Any], n_in: int, n_out: int) -> str:
    e = html.escape
    parts = [f"<b>{e(label)}</b>", f"{e(node)} · {e(kind)}" + (f" · {e(site)}" if site and site != node else "")]
    stats = []
    if "frequency" in ev and not math.isnan(ev["frequency"]):
        stats.append(f"active in {ev['frequency']:.2%} of rows")
    if "mean_activation" in ev and not math.isnan(ev["mean_activation"]):
        stats.append(f"mean act {ev['mean_activation']:.3g}")
    if stats:
        parts.append(" · ".join(stats))
    parts.append(f"in-edges {n_in} · out-edges {n_out}")
    ctx = ev.get("contexts") or []
    if ctx:
        parts.append("<i>top contexts</i>")
        parts.extend(e(c if len(c) <= 90 else "…" + c[-89:]) for c in ctx[:3])
    if ev.get("neuronpedia"):
        parts.append(e(ev["neuronpedia"]))
    return "<br>".join(parts)


def _truncate(s: str, n: int = 22) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    r, g, b = int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)
    return f"rgba({r},{g},{b},{alpha})"


# -- traces ------------------------------------------------------------------------------------------
def _traces(circuit: Circuit, edges: pd.DataFrame, shown: list[str], pos: Mapping[str, tuple[float, float]], *,
            labels: Mapping[str, str], evidence: Mapping[str, Mapping[str, Any]], highlight: set[str] | None,
            marked: set[str], selected: str | None, show_text: bool, n_cols: int, probability: bool = False) -> list:
    import plotly.graph_objects as go

    names = edge_trace_names(probability=probability)
    traces: dict[str, dict[str, list]] = {name: {"x": [], "y": []} for name in names}
    probs = (edges["probability"].to_numpy(float) if probability and "probability" in edges.columns
             else np.full(len(edges), np.nan))
    max_score = float(edges["score"].max()) if len(edges) else 1.0
    max_score = max_score if max_score > 0 else 1.0
    mid_x, mid_y, mid_ids, mid_cd, mid_text = [], [], [], [], []
    for s, t, w, sc, pr in zip(edges["source"], edges["target"], edges["weight"].to_numpy(float),
                               edges["score"].to_numpy(float), probs):
        (x0, y0), (x1, y1) = pos[s], pos[t]
        b = min(N_WIDTH_BINS - 1, int(sc / max_score * N_WIDTH_BINS))
        emph = highlight is None or (s in highlight and t in highlight)
        pb = f" {probability_bin(pr)}" if probability else ""
        name = f"edges{'+' if w >= 0 else '-'} w{b}{pb}{'' if emph else ' dim'}"
        span = x1 - x0
        if abs(span) <= 1 + 1e-9:
            xs, ys = [x0, x1], [y0, y1]
        else:  # arc over the columns in between
            tt = np.linspace(0, 1, 13)
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 + 0.45 * abs(span)
            xs = ((1 - tt) ** 2 * x0 + 2 * (1 - tt) * tt * cx + tt**2 * x1).tolist()
            ys = ((1 - tt) ** 2 * y0 + 2 * (1 - tt) * tt * cy + tt**2 * y1).tolist()
        traces[name]["x"].extend([*xs, None])
        traces[name]["y"].extend([*ys, None])
        k = len(xs) // 2
        mx, my = (xs[k] + xs[k - 1]) / 2 if len(xs) % 2 == 0 else xs[k], (ys[k] + ys[k - 1]) / 2 if len(ys) % 2 == 0 else ys[k]
        mid_x.append(mx)
        mid_y.append(my)
        mid_ids.append(f"{s}->{t}")
        text = (f"{html.escape(labels[s])} → {html.escape(labels[t])}<br>{html.escape(s)} → {html.escape(t)}"
                f"<br>weight {w:+.4g} · score {sc:.4g}")
        if probability:
            mid_cd.append([s, t, float(w), float(sc), float(pr)])
            text += f"<br>selection probability {pr:.2f}" if math.isfinite(pr) else "<br>selection probability: n/a"
        else:
            mid_cd.append([s, t, float(w), float(sc)])
        mid_text.append(text)
    out = []
    for name in names:
        sign, b, dim = name[5], int(name.split(" w")[1][0]), name.endswith("dim")
        color = POS_COLOR if sign == "+" else NEG_COLOR
        if probability:
            pb = name.split(" ")[2]
            alpha = PROB_UNKNOWN_OPACITY if pb == "p?" else PROB_OPACITY[int(pb[1:])]
            alpha = round(alpha * (0.22 if dim else 1.0), 3)
        else:
            alpha = 0.12 if dim else 0.55
        out.append(go.Scatter(x=traces[name]["x"], y=traces[name]["y"], mode="lines", name=name, hoverinfo="skip",
                              line={"color": _rgba(color, alpha), "width": WIDTHS[b]},
                              showlegend=False))
    out.append(go.Scatter(x=mid_x, y=mid_y, mode="markers", name=EDGE_INFO_TRACE, ids=mid_ids, customdata=mid_cd,
                          text=mid_text, hovertemplate="%{text}<extra></extra>",
                          marker={"size": 7, "color": "rgba(80,80,80,0.06)", "line": {"width": 0}},
                          showlegend=False))
    # nodes
    info = circuit.nodes.set_index("node")
    n_in = edges["target"].value_counts().to_dict()
    n_out = edges["source"].value_counts().to_dict()
    strength = pd.concat([edges.groupby("source")["score"].sum(), edges.groupby("target")["score"].sum()]
                         ).groupby(level=0).sum().to_dict() if len(edges) else {}
    max_strength = max(strength.values()) if strength else 1.0
    xs, ys, cd, text, colors, sizes, symbols, opac, lw, lc, tpos = ([] for _ in range(11))
    for n in shown:
        x, y = pos[n]
        kind = str(info.at[n, "kind"])
        site = str(info.at[n, "site"])
        lab = labels[n]
        ev = evidence.get(n, {})
        xs.append(x)
        ys.append(y)
        cd.append([n, lab, site, kind, _node_hover(n, lab, site, kind, ev, n_in.get(n, 0), n_out.get(n, 0))])
        text.append(_truncate(lab))
        col = int(round(x))
        colors.append("#9ca3af" if kind == "error" else "#111827" if kind == "target" else _PALETTE[col % len(_PALETTE)])
        sizes.append(9 + 13 * math.sqrt(strength.get(n, 0.0) / max_strength) if max_strength > 0 else 10)
        symbols.append(_SYMBOL.get(kind, "circle"))
        opac.append(1.0 if highlight is None or n in highlight else 0.2)
        if n == selected:
            lw.append(4)
            lc.append("#f59e0b")
        elif n in marked:
            lw.append(3)
            lc.append("#111827")
        else:
            lw.append(0.5)
            lc.append("#ffffff")
        tpos.append("middle left" if col == n_cols - 1 and n_cols > 1 else "middle right")
    out.append(go.Scatter(
        x=xs, y=ys, mode="markers+text" if show_text else "markers", name=NODE_TRACE, ids=list(shown), customdata=cd,
        text=text, textposition=tpos, textfont={"size": 10}, hovertemplate="%{customdata[4]}<extra></extra>",
        marker={"size": sizes, "color": colors, "symbol": symbols, "opacity": opac,
                "line": {"width": lw, "color": lc}},
        showlegend=False))
    return out


def _layout(titles: list[str], *, height: int, width: int | None, title: str | None, n_nodes: int, n_edges: int,
            empty_message: str | None, y_range: tuple[float, float], probability: bool = False) -> dict:
    legend = ("<span style='color:%s'>━ positive</span>  <span style='color:%s'>━ negative</span>  "
              "width ∝ |weight|" % (POS_COLOR, NEG_COLOR))
    if probability:
        legend += "  · opacity ∝ selection probability"
    ann = [{"text": legend,
            "xref": "paper", "yref": "paper", "x": 1, "y": 1.0, "yanchor": "bottom", "xanchor": "right",
            "yshift": 30, "showarrow": False, "font": {"size": 11}}]
    if empty_message:
        ann.append({"text": empty_message, "xref": "paper", "yref": "paper", "x": 0.5, "y": 0.5,
                    "showarrow": False, "font": {"size": 15, "color": "#374151"},
                    "bgcolor": "#f3f4f6", "bordercolor": "#9ca3af", "borderpad": 8})
    n_cols = max(len(titles), 1)
    return {
        "title": {"text": title or f"{n_nodes} nodes · {n_edges} edges", "x": 0.01, "font": {"size": 14}},
        "height": height,
        "width": width,
        "hovermode": "closest",
        "plot_bgcolor": "#ffffff",
        "paper_bgcolor": "#ffffff",
        "margin": {"l": 30, "r": 30, "t": 70, "b": 50},
        "xaxis": {"tickvals": list(range(len(titles))), "ticktext": titles, "side": "top", "showgrid": True,
                  "gridcolor": "#eef2f7", "zeroline": False, "range": [-0.6, n_cols - 0.4], "fixedrange": False},
        "yaxis": {"visible": False, "range": list(y_range), "zeroline": False},
        "annotations": ann,
        "showlegend": False,
        "dragmode": "pan",
    }


def _empty_message(circuit: Circuit, min_score, top_k_per_node, n_total: int) -> str:
    if len(circuit.nodes) == 0:
        return "This circuit has no nodes."
    if n_total == 0 and circuit.n_edges == 0:
        return "No edges in this circuit at this sparsity.<br>Try a smaller alpha (a denser point of the path)."
    return (f"No edges pass the current filters (min_score={min_score}).<br>"
            "Lower the threshold or clear the filters.")


def build_figure(circuit: Circuit, edges: pd.DataFrame, *, positions: Mapping[str, tuple[float, float]] | None = None,
                 titles: list[str] | None = None, labels: Mapping[str, str] | None = None,
                 evidence: pd.DataFrame | Mapping[str, Mapping[str, Any]] | None = None,
                 highlight: Iterable[str] | None = None, marked: Iterable[str] = (), selected: str | None = None,
                 show_isolated: bool = False, nodes: Iterable[str] | None = None, show_text: bool | None = None,
                 height: int | None = None, width: int | None = None, title: str | None = None,
                 empty_message: str | None = None, probability: bool | None = None) -> go.Figure:
    """Draw ``edges`` (already selected) of ``circuit``. ``positions``/``titles`` fix the layout (used by the
    explorer and the exported page so nodes do not move between sparsity levels). ``probability``: use the
    opacity-binned edge traces (module docstring); ``None``: when ``edges`` has a ``probability`` column.
    Callers that update one figure in place across levels pass the same value for every level."""
    import plotly.graph_objects as go

    from ..labels import node_labels

    lab = node_labels(circuit, labels)
    if nodes is not None:
        shown_set = set(nodes)
    elif show_isolated:
        shown_set = set(circuit.node_names)
    else:
        shown_set = set(edges["source"]).union(edges["target"])
    order = {n: i for i, n in enumerate(circuit.node_names)}
    if positions is None:
        positions, titles = layout_positions(circuit, shown_set, edges)
    else:
        missing = shown_set - set(positions)
        if missing:
            extra, _ = layout_positions(circuit, set(positions) | missing, edges)
            positions = {**extra, **positions}
            positions.update({n: extra[n] for n in missing})
    titles = titles or []
    shown = sorted(shown_set, key=lambda n: order.get(n, len(order)))
    ev = evidence if isinstance(evidence, Mapping) else _evidence_lookup(circuit, evidence)
    if show_text is None:
        show_text = len(shown) <= 80
    hl = None if highlight is None else set(highlight)
    n_cols = max(len(titles), int(max((p[0] for p in positions.values()), default=0)) + 1)
    if probability is None:
        probability = has_probability(edges)
    data = _traces(circuit, edges, shown, positions, labels=lab, evidence=ev, highlight=hl, marked=set(marked),
                   selected=selected, show_text=show_text, n_cols=n_cols, probability=bool(probability))
    per_col = pd.Series([round(p[0]) for p in positions.values()]).value_counts() if positions else pd.Series([1])
    max_col = int(per_col.max())
    if height is None:
        height = int(min(3000, max(460, 140 + 26 * max_col)))
    ys = [p[1] for p in positions.values()] or [0.0]
    y_range = (min(ys) - 1.0, max(ys) + 1.0 + 0.45 * max(n_cols - 2, 0) * (1 if len(edges) else 0))
    if not shown and empty_message is None:
        empty_message = "No nodes to show."
    fig = go.Figure(data=data)
    fig.update_layout(**_layout(titles, height=height, width=width, title=title, n_nodes=len(shown),
                                n_edges=len(edges), empty_message=empty_message if not len(edges) or not shown else None,
                                y_range=y_range, probability=bool(probability)))
    return fig


def plot_circuit(
    circuit: Circuit,
    *,
    top_k_per_node: int | None = None,
    min_score: float | None = None,
    labels: Mapping[str, str] | None = None,
    highlight: Iterable[str] | None = None,
    height: int | None = None,
    width: int | None = None,
    marked: Iterable[str] = (),
    selected: str | None = None,
    evidence: pd.DataFrame | None = None,
    show_isolated: bool = False,
    show_text: bool | None = None,
    title: str | None = None,
    min_probability: float | None = None,
) -> go.Figure:
    """A layered plotly figure of ``circuit`` (module docstring: layout and trace structure).

    Parameters
    ----------
    top_k_per_node, min_score, min_probability: which edges to draw (:func:`select_edges`); ``None`` draws
        them all. Edges with a ``probability`` column are drawn with opacity by probability.
    labels: ``{node: label}`` shown instead of the circuit's labels (the node name is the last fallback).
    highlight: nodes to emphasise; other nodes and every edge not between two of them are dimmed.
    marked: nodes drawn with a dark ring (the explorer's marked features). selected: one node with an
        orange ring.
    evidence: a :func:`circuitkit.labels.feature_evidence` table for the hover (frequency, contexts);
        a circuit labelled with :func:`~circuitkit.labels.label_circuit` carries them already.
    show_isolated: also show nodes without a drawn edge. show_text: write labels next to nodes
        (default: when at most 80 nodes are shown).
    height, width, title: figure size (default height grows with the tallest column) and title.

    Nothing is ever blank: with no edge to draw the figure says why and what to change.
    """
    if not isinstance(circuit, Circuit):
        raise ValueError(f"plot_circuit expects a Circuit, got {type(circuit).__name__}")
    edges = select_edges(circuit, top_k_per_node=top_k_per_node, min_score=min_score,
                         min_probability=min_probability)
    if highlight is not None:
        highlight = set(highlight)
        bad = highlight - set(circuit.node_names)
        if bad:
            raise ValueError(f"unknown nodes to highlight: {sorted(bad)[:5]}")
    marked = set(marked)
    bad = marked - set(circuit.node_names)
    if bad:
        raise ValueError(f"unknown marked nodes: {sorted(bad)[:5]}")
    if selected is not None and selected not in set(circuit.node_names):
        raise ValueError(f"unknown selected node {selected!r}")
    msg = None if len(edges) else _empty_message(circuit, min_score, top_k_per_node, len(edges))
    return build_figure(circuit, edges, labels=labels, evidence=evidence, highlight=highlight, marked=marked,
                        selected=selected, show_isolated=show_isolated, show_text=show_text, height=height,
                        width=width, title=title, empty_message=msg, probability=has_probability(circuit))


def figure_nodes(fig: go.Figure) -> list[str]:
    """The node names drawn in a figure made by :func:`plot_circuit`."""
    for t in fig.data:
        if t.name == NODE_TRACE:
            return list(t.ids or [])
    raise ValueError("this figure has no 'nodes' trace; was it made by circuitkit.viz.plot_circuit?")


def figure_edges(fig: go.Figure) -> pd.DataFrame:
    """The edges drawn in a figure made by :func:`plot_circuit` (source, target, weight, score, and probability
    when the figure shows selection probabilities)."""
    prob = any(t.name.startswith("edges") and " p" in t.name for t in fig.data if t.name)
    cols = ["source", "target", "weight", "score"] + (["probability"] if prob else [])
    for t in fig.data:
        if t.name == EDGE_INFO_TRACE:
            cd = list(t.customdata) if t.customdata is not None else []
            return pd.DataFrame([list(r) for r in cd], columns=cols)
    raise ValueError("this figure has no 'edge info' trace; was it made by circuitkit.viz.plot_circuit?")


# -- regularisation path ------------------------------------------------------------------------------------
def path_summary(circuit: Circuit) -> pd.DataFrame:
    """Per path point: ``alpha``, ``n_edges`` and ``n_nodes`` (nodes with an edge), densest last."""
    if circuit.path is None or circuit.alphas.size == 0:
        raise ValueError("this circuit has no regularisation path; fit CircuitLasso with alpha=None to get one")
    rows = []
    for a in circuit.alphas:
        e = circuit.path[np.isclose(circuit.path["alpha"], a, rtol=1e-12, atol=0)]
        rows.append({"alpha": float(a), "n_edges": len(e),
                     "n_nodes": len(set(e["source"]).union(e["target"]))})
    return pd.DataFrame(rows)


def plot_path(circuit: Circuit, *, height: int = 380, title: str | None = None) -> go.Figure:
    """Number of edges (and of nodes with an edge) against alpha along the stored path (log x axis), with
    the selected alpha (``circuit.meta["alpha"]``) and the fitted circuit's edge count marked."""
    import plotly.graph_objects as go

    df = path_summary(circuit)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=df["alpha"], y=df["n_edges"], mode="lines+markers", name="edges",
                             hovertemplate="alpha %{x:.4g}<br>%{y} edges<extra></extra>"))
    fig.add_trace(go.Scatter(x=df["alpha"], y=df["n_nodes"], mode="lines+markers", name="nodes with an edge",
                             line={"dash": "dot"}, hovertemplate="alpha %{x:.4g}<br>%{y} nodes<extra></extra>"))
    sel = circuit.meta.get("alpha")
    if sel is not None and np.isfinite(sel):
        fig.add_vline(x=float(sel), line={"color": "#f59e0b", "width": 2, "dash": "dash"})
        fig.add_trace(go.Scatter(x=[float(sel)], y=[circuit.n_edges], mode="markers", name="selected",
                                 marker={"size": 13, "color": "#f59e0b", "symbol": "star"},
                                 hovertemplate=f"selected ({circuit.meta.get('selection', '')})<br>alpha %{{x:.4g}}"
                                               "<br>%{y} edges<extra></extra>"))
    fig.update_layout(height=height, title=title or "Regularisation path: sparsity vs alpha",
                      xaxis={"type": "log", "title": "alpha (log scale; larger = sparser)"},
                      yaxis={"title": "count"}, hovermode="closest", template="plotly_white")
    return fig


# -- export ------------------------------------------------------------------------------------------------
def _levels(circuit: Circuit, max_levels: int) -> tuple[list[str], list[Circuit], int]:
    """Slider levels for the exported page: the fitted circuit, then the path points (sparse to dense),
    or score thresholds when there is no path; for a circuit with selection probabilities, probability
    thresholds (every distinct probability of its edges, at most ``max_levels``, low to high)."""
    labels, circuits = ["fitted"], [circuit]
    if has_probability(circuit):
        probs = np.unique(circuit.edges["probability"].dropna().to_numpy(float))
        if probs.size > max_levels:
            probs = probs[np.unique(np.linspace(0, probs.size - 1, max_levels).round().astype(int))]
        for q in probs[1:]:  # the lowest threshold keeps every edge: that is the fitted circuit
            circuits.append(circuit._with_edges(circuit.edges[~(circuit.edges["probability"] < q)],
                                                min_probability=float(q)))
            labels.append(f"p≥{q:.2f}")
        return labels, circuits, 0
    if circuit.path is not None and circuit.alphas.size > 1:
        alphas = circuit.alphas
        if alphas.size > max_levels:
            alphas = alphas[np.unique(np.linspace(0, alphas.size - 1, max_levels).round().astype(int))]
        for a in alphas:
            c = circuit.at(float(a))
            circuits.append(c)
            labels.append(f"α={a:.3g}")
    elif circuit.n_edges > 1:
        scores = np.sort(circuit.edges["score"].unique())
        qs = np.unique(np.quantile(scores, np.linspace(0, 0.98, min(max_levels, len(scores)))))
        for q in qs[1:]:
            circuits.append(circuit.threshold(float(q)))
            labels.append(f"≥{q:.3g}")
    return labels, circuits, 0


def export_html(
    circuit_or_figure: Circuit | go.Figure,
    path: str | Path,
    *,
    top_k_per_node: int | None = None,
    min_score: float | None = None,
    slider: bool = True,
    max_levels: int = 24,
    labels: Mapping[str, str] | None = None,
    evidence: pd.DataFrame | None = None,
    title: str | None = None,
    caption: str | None = None,
) -> Path:
    """Write a self-contained HTML page (plotly.js inline, works offline) and return its path.

    ``title`` is the figure's title and the page's ``<title>``; ``caption`` (plain text; blank lines separate
    paragraphs) is printed under the figure, e.g. the model, task, prompts and sparsity. For a circuit
    selected by stability selection (``meta["expected_false_edges_bound"]``) the caption also states the
    bound (:func:`bound_statement`), edge opacity shows each edge's selection probability (so does the
    hover), and the slider runs over probability thresholds instead of the path.

    For a circuit the page has the figure of :func:`plot_circuit` with the same hover, and (``slider``) a
    sparsity slider: the fitted circuit, then every stored path point ``circuit.at(alpha)`` (at most
    ``max_levels``), or score thresholds when there is no path. Node positions are shared by all levels.
    A figure is written as is.
    """
    import plotly.graph_objects as go

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(circuit_or_figure, go.Figure):
        fig = circuit_or_figure
    elif isinstance(circuit_or_figure, Circuit):
        circuit = circuit_or_figure
        prob = has_probability(circuit)
        stated = bound_statement(circuit.meta)
        if stated:
            caption = f"{caption}\n\n{stated}" if caption else stated
        names, circuits, init = _levels(circuit, max_levels) if slider else (["fitted"], [circuit], 0)
        sels = [select_edges(c, top_k_per_node=top_k_per_node, min_score=min_score) for c in circuits]
        ev = _evidence_lookup(circuit, evidence)
        layouts = [layout_positions(c, set(e["source"]).union(e["target"]), e) for c, e in zip(circuits, sels)]
        height = int(min(1400, max(460, 140 + 26 * max(_max_col(p) for p, _ in layouts))))
        figs = []
        for c, e, (positions, titles) in zip(circuits, sels, layouts):
            msg = None if len(e) else _empty_message(c, min_score, top_k_per_node, 0)
            figs.append(build_figure(c, e, positions=positions, titles=titles, labels=labels, evidence=ev,
                                     empty_message=msg, height=height, title=title, probability=prob))
        fig = go.Figure(figs[init])
        if slider and len(figs) > 1:
            fig.frames = [go.Frame(data=f.data, name=str(i),
                                   layout={"annotations": f.layout.annotations, "title": f.layout.title,
                                           "xaxis": f.layout.xaxis, "yaxis": f.layout.yaxis})
                          for i, f in enumerate(figs)]
            steps = [{"method": "animate", "label": f"{n} ({len(e)} edges)" if i == 0 else n,
                      "args": [[str(i)], {"mode": "immediate", "frame": {"duration": 0, "redraw": True},
                                          "transition": {"duration": 0}}]}
                     for i, (n, e) in enumerate(zip(names, sels))]
            fig.update_layout(sliders=[{"active": init, "steps": steps, "x": 0.02, "len": 0.96, "y": 0,
                                        "yanchor": "top", "pad": {"t": 10},
                                        "currentvalue": {"prefix": "min probability: " if prob else "sparsity: ",
                                                         "font": {"size": 12}}}],
                              margin={"b": 110})
    else:
        raise ValueError(f"export_html expects a Circuit or a plotly Figure, got {type(circuit_or_figure).__name__}")
    fig.write_html(str(path), include_plotlyjs=True, full_html=True, auto_play=False,
                   config={"displaylogo": False, "scrollZoom": True})
    if title or caption:
        _add_title_and_caption(path, title, caption)
    return path


def _add_title_and_caption(path: Path, title: str | None, caption: str | None) -> None:
    import html as _html

    page = path.read_text(encoding="utf-8")
    if title:
        page = page.replace("<head>", f"<head><title>{_html.escape(title)}</title>", 1)
    if caption:
        paras = "".join(f"<p>{_html.escape(p.strip())}</p>" for p in caption.split("\n\n") if p.strip())
        block = ('<div class="circuitkit-caption" style="font-family:sans-serif;font-size:14px;max-width:60em;'
                 f'margin:0 2em 2em 2em;color:#333">{paras}</div>')
        page = page.replace("</body>", block + "</body>", 1)
    path.write_text(page, encoding="utf-8")


def _max_col(positions: Mapping[str, tuple[float, float]]) -> int:
    if not positions:
        return 1
    return int(pd.Series([round(p[0]) for p in positions.values()]).value_counts().max())


def find_chromium() -> str | None:
    """Path of a Chrome/Chromium executable (``$BROWSER_PATH`` first), or ``None``."""
    env = os.environ.get("BROWSER_PATH")
    if env and Path(env).exists():
        return env
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"):
        got = shutil.which(name)
        if got:
            return got
    return None


def export_png(fig_or_circuit: go.Figure | Circuit, path: str | Path, *, width: int = 1200,
               height: int | None = None, scale: float = 1.0, **plot_kwargs: Any) -> Path:
    """Write a static PNG with kaleido. Needs a Chrome/Chromium (kaleido's own, ``$BROWSER_PATH`` or a
    ``chromium`` on ``PATH``; on Debian: ``apt-get install -y chromium``); raises ``RuntimeError`` saying so
    otherwise. A circuit is drawn with :func:`plot_circuit` (``plot_kwargs``) first."""
    import plotly.graph_objects as go

    fig = plot_circuit(fig_or_circuit, **plot_kwargs) if isinstance(fig_or_circuit, Circuit) else fig_or_circuit
    if not isinstance(fig, go.Figure):
        raise ValueError(f"export_png expects a plotly Figure or a Circuit, got {type(fig_or_circuit).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    chrome = find_chromium()
    old = os.environ.get("BROWSER_PATH")
    if chrome and not old:
        os.environ["BROWSER_PATH"] = chrome
    try:
        fig.write_image(str(path), format="png", width=width, height=height or fig.layout.height, scale=scale)
    except Exception as e:
        raise RuntimeError(
            f"PNG export failed ({type(e).__name__}: {e}). kaleido needs Chrome or Chromium: install one "
            "(Debian: apt-get install -y chromium; or `plotly_get_chrome`) or set BROWSER_PATH; "
            "export_html needs no browser."
        ) from e
    finally:
        if chrome and not old:
            os.environ.pop("BROWSER_PATH", None)
    return path
