"""Visualisation: a layered plotly figure of a circuit, an ipywidgets explorer, and offline exports.

* :func:`plot_circuit` / :func:`plot_path` (:mod:`circuitkit.viz.figure`);
* :class:`CircuitExplorer` (:mod:`circuitkit.viz.explorer`);
* :func:`export_html`, :func:`export_png`, :func:`export_graph` (:mod:`circuitkit.viz.export`).

Names are resolved lazily, so importing this package does not import plotly or ipywidgets.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "plot_circuit": "circuitkit.viz.figure",
    "plot_path": "circuitkit.viz.figure",
    "path_summary": "circuitkit.viz.figure",
    "select_edges": "circuitkit.viz.figure",
    "figure_nodes": "circuitkit.viz.figure",
    "figure_edges": "circuitkit.viz.figure",
    "export_html": "circuitkit.viz.figure",
    "export_png": "circuitkit.viz.figure",
    "export_graph": "circuitkit.viz.export",
    "find_chromium": "circuitkit.viz.figure",
    "CircuitExplorer": "circuitkit.viz.explorer",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'circuitkit.viz' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
