"""A static, self-contained page of a circuit: inline SVG, no JavaScript, small enough to email.

:func:`export_page` draws the layered graph of :func:`circuitkit.viz.figure.layout_positions` (one column
per site, computation order left to right) as SVG: edges as lines whose width and opacity follow ``|score|``
(blue positive, red negative weight), nodes as circles (features), squares (error nodes) or diamonds
(prediction targets), and the labels of the ``label_top`` strongest nodes (by the summed ``|score|`` of their
drawn edges) written next to them. A title and a caption (model, task, prompts, sparsity) frame it. For a
circuit with selection probabilities (``selection="stability"``: a ``probability`` edge column) the opacity
of an edge is its probability instead, its tooltip states it, and the caption ends with the stated bound on
the expected number of false edges (:func:`circuitkit.viz.figure.bound_statement`). The
page is a few hundred kB at most; the interactive page (:func:`circuitkit.export_html`) embeds plotly.js
(~5 MB).
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import pandas as pd

from ..circuit import Circuit
from .figure import bound_statement, layout_positions, select_edges

_W_COL = 230
_H_ROW = 28
_PAD = 60


def _label_of(circuit: Circuit) -> dict[str, str]:
    out = {}
    for n, lab in zip(circuit.nodes["node"], circuit.nodes["label"]):
        out[n] = str(lab) if isinstance(lab, str) and lab else str(n)
    return out


def export_page(
    circuit: Circuit,
    path: str | Path,
    *,
    title: str,
    caption: str = "",
    top_k_per_node: int | None = 3,
    max_edges: int = 150,
    label_top: int = 20,
) -> Path:
    """Write the static page of ``circuit`` to ``path`` (module docstring) and return the path.

    ``max_edges`` strongest edges are drawn (after ``top_k_per_node``); ``label_top`` nodes get visible
    labels (every node's label is also its SVG tooltip).
    """
    if not isinstance(circuit, Circuit):
        raise TypeError(f"export_page expects a Circuit, got {type(circuit).__name__}")
    if not isinstance(title, str) or not title.strip():
        raise ValueError("export_page needs a non-empty title")
    edges = select_edges(circuit, top_k_per_node=top_k_per_node)
    edges = edges.reindex(edges["score"].abs().sort_values(ascending=False).index).head(max_edges)
    nodes = set(edges["source"]).union(edges["target"])
    pos, titles = layout_positions(circuit, nodes, edges) if nodes else ({}, [])
    labels = _label_of(circuit)
    kinds = dict(zip(circuit.nodes["node"], circuit.nodes["kind"]))
    strength = pd.concat([edges.groupby("source")["score"].apply(lambda s: s.abs().sum()),
                          edges.groupby("target")["score"].apply(lambda s: s.abs().sum())]).groupby(level=0).sum()
    shown_labels = set(strength.sort_values(ascending=False).head(label_top).index)
    shown_labels |= {n for n in nodes if kinds.get(n) == "target"}
    ys = [p[1] for p in pos.values()] or [0.0]
    n_cols = max(len(titles), 1)
    width = _PAD * 2 + _W_COL * n_cols
    height = int(_PAD * 2 + _H_ROW * (max(ys) - min(ys) + 1) + 40)
    y0 = min(ys)

    def xy(n: str) -> tuple[float, float]:
        x, y = pos[n]
        return _PAD + _W_COL * x + 40, _PAD + 40 + _H_ROW * (y - y0)

    smax = float(edges["score"].abs().max()) if len(edges) else 1.0
    probs = edges["probability"].to_numpy(float) if "probability" in edges.columns else [float("nan")] * len(edges)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="sans-serif" font-size="11">']
    for i, t in enumerate(titles):
        parts.append(f'<text x="{_PAD + _W_COL * i + 40}" y="{_PAD}" text-anchor="middle" font-weight="bold">'
                     f"{html.escape(t)}</text>")
    for s, t, sc, w, pr in zip(edges["source"], edges["target"], edges["score"], edges["weight"], probs):
        (x1, y1), (x2, y2) = xy(s), xy(t)
        a = 0.15 + 0.85 * abs(float(sc)) / smax
        known = math.isfinite(float(pr))
        op = 0.1 + 0.9 * float(pr) if known else a  # no probability: opacity by score, as before
        col = "#1f77b4" if float(w) >= 0 else "#d62728"
        tip = f"{s} -> {t}: weight {float(w):+.3g}" + (f", selection probability {float(pr):.2f}" if known else "")
        parts.append(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{col}" '
                     f'stroke-opacity="{op:.2f}" stroke-width="{0.5 + 3.5 * a:.2f}"><title>'
                     f"{html.escape(tip)}</title></line>")
    for n in sorted(nodes, key=lambda m: pos[m]):
        x, y = xy(n)
        kind = kinds.get(n, "feature")
        tip = html.escape(f"{n}: {labels.get(n, n)}")
        if kind == "error":
            shape = f'<rect x="{x - 5:.1f}" y="{y - 5:.1f}" width="10" height="10" fill="#999">'
            end = "</rect>"
        elif kind == "target":
            shape = (f'<polygon points="{x:.1f},{y - 8:.1f} {x + 8:.1f},{y:.1f} {x:.1f},{y + 8:.1f} '
                     f'{x - 8:.1f},{y:.1f}" fill="#e6ab02">')
            end = "</polygon>"
        else:
            shape = f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="#1b9e77">'
            end = "</circle>"
        parts.append(f"{shape}<title>{tip}</title>{end}")
        if n in shown_labels:
            text = labels.get(n, n)
            text = text if len(text) <= 34 else text[:33] + "…"
            parts.append(f'<text x="{x + 9:.1f}" y="{y + 4:.1f}">{html.escape(text)}</text>')
    parts.append("</svg>")
    body = "".join(parts)
    stated = bound_statement(circuit.meta)
    if stated:
        caption = f"{caption}\n\n{stated}" if caption.strip() else stated
    paras = "".join(f"<p>{html.escape(p.strip())}</p>" for p in caption.split("\n\n") if p.strip())
    page = (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title></head>"
            f'<body style="font-family:sans-serif;margin:1.5em"><h2>{html.escape(title)}</h2>{body}'
            f'<div style="max-width:60em;color:#333">{paras}</div></body></html>')
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


__all__ = ["export_page"]
