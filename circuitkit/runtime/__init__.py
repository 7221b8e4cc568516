"""The one room that runs models.

==============================  ==================================================================
module                          what it does
==============================  ==================================================================
:mod:`.loading`                 ``load_model`` -> :class:`LoadedModel`; ``module_of`` finds the torch module
:mod:`.inputs`                  tokenize, pad, batch, choose positions (one ``after_bos`` rule)
:mod:`.capturing`               the one nnsight trace: ``capture`` -> Activations; ``forward``
:mod:`.store`                   streaming capture (+ SAE encoding) to disk, resumable
:mod:`.interventions`           edits by site name (torch hooks): record, replace, add, zero/mean/resample
                                ablation, SAE splice; ``hooked``, ``run_with_edits``
:mod:`.split`                   the split forward (every reader gets its own residual copy):
                                ``run_components``, per-target gradients, the task metric
:mod:`.pooling`                 per-prompt pooled residuals / SAE codes and SAE-feature attributions
==============================  ==================================================================

nnsight observes (capture); torch hooks edit (interventions, split forward). No module outside this
package registers a forward hook or opens an nnsight trace (a test greps for it).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "LoadedModel": "loading", "load_model": "loading", "module_of": "loading", "NAMED_MODELS": "loading",
    "capture": "capturing", "forward": "capturing", "next_token_logits": "capturing",
    "capture_to_disk": "store", "load_store": "store", "Store": "store",
    "Edit": "interventions", "Record": "interventions", "Replace": "interventions", "Add": "interventions",
    "Zero": "interventions", "Mean": "interventions", "Resample": "interventions", "Splice": "interventions",
    "Custom": "interventions", "hooked": "interventions", "run_with_edits": "interventions",
    "RunResult": "interventions", "HookState": "interventions",
    "run_components": "split", "ComponentRun": "split", "input_gradients": "split", "task_metric": "split",
    "answer_targets": "split",
    "FeatureAblation": "pooling", "pooled_residual": "pooling", "pooled_codes": "pooling",
    "feature_attributions": "pooling",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
