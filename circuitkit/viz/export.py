"""Exports of a circuit for people and for other tools, chosen by format or file suffix.

============  ===========================================================================
format        what is written
============  ===========================================================================
``html``      a self-contained page, plotly.js inline, with a sparsity slider (:func:`export_html`)
``png``       a static picture via kaleido; needs Chrome/Chromium (:func:`export_png`)
``graphml``   nodes (site, kind, feature, label, ...) and edges (weight, score) for Gephi, yEd, Cytoscape
``json``      circuitkit's versioned circuit file (``Circuit.save``; loads back exactly)
``csv``       the edge table with source and target labels
============  ===========================================================================

A circuit selected by stability selection carries each edge's ``probability`` into every format (an edge
attribute in GraphML, a column in CSV/JSON); the HTML page also draws edge opacity by probability, puts
a probability-threshold slider in place of the sparsity slider, and states the E[V] bound in its caption.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..circuit import Circuit
from .figure import export_html, export_png

__all__ = ["FORMATS", "export_graph", "export_html", "export_png"]

FORMATS = ("html", "png", "graphml", "json", "csv")


def export_graph(circuit: Circuit, path: str | Path, *, format: str | None = None, **kwargs: Any) -> Path:
    """Write ``circuit`` to ``path`` in ``format`` (default: the file suffix); returns the path.
    ``kwargs`` go to :func:`export_html` / :func:`export_png`."""
    if not isinstance(circuit, Circuit):
        raise ValueError(f"export_graph expects a Circuit, got {type(circuit).__name__}")
    path = Path(path)
    fmt = (format or path.suffix.lstrip(".")).lower()
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r} (from {'format=' if format else 'the suffix of '}{path.name if not format else format!r}); "
                         f"valid formats are {FORMATS}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "html":
        return export_html(circuit, path, **kwargs)
    if fmt == "png":
        return export_png(circuit, path, **kwargs)
    if fmt == "graphml":
        return circuit.to_graphml(path)
    if fmt == "json":
        return circuit.save(path)
    labels = dict(zip(circuit.nodes["node"], circuit.nodes["label"]))
    edges = circuit.edges.assign(source_label=lambda d: d["source"].map(labels),
                                 target_label=lambda d: d["target"].map(labels))
    edges.to_csv(path, index=False)
    return path
