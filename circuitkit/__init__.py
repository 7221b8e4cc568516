"""circuitkit: scalable circuit learning (CircuitLasso) for language models.

The front door is a few verbs::

    import circuitkit as ck
    acts = ck.capture("toylm", prompts, sites=[...], positions="last")
    feats = ck.encode(acts, saes)
    circuit = ck.CircuitLasso(alpha=0.05).fit(feats).circuit_

Heavy modules are imported lazily so ``import circuitkit`` stays fast in a notebook.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "capture": ("circuitkit.runtime.capturing", "capture"),
    "load_model": ("circuitkit.runtime.loading", "load_model"),
    "forward": ("circuitkit.runtime.capturing", "forward"),
    "Activations": ("circuitkit.activations", "Activations"),
    "Features": ("circuitkit.features", "Features"),
    "encode": ("circuitkit.sae", "encode"),
    "load_sae": ("circuitkit.sae", "load_sae"),
    "CircuitLasso": ("circuitkit.fit.lasso", "CircuitLasso"),
    "Circuit": ("circuitkit.circuit", "Circuit"),
    "plot_circuit": ("circuitkit.viz.figure", "plot_circuit"),
    "export_html": ("circuitkit.viz.figure", "export_html"),
    "edge_metrics": ("circuitkit.evaluate", "edge_metrics"),
    "discover": ("circuitkit.baselines", "discover"),
    "CircuitExplorer": ("circuitkit.viz.explorer", "CircuitExplorer"),
    "label_circuit": ("circuitkit.labels", "label_circuit"),
    "feature_evidence": ("circuitkit.labels", "feature_evidence"),
    "catalogue_table": ("circuitkit.saelens_catalogue", "catalogue_table"),
    "load_release_sae": ("circuitkit.saelens_catalogue", "load_release_sae"),
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'circuitkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
