"""``circuitlasso-group``: capture + :class:`~circuitkit.fit.group.GroupCircuitLasso` behind the discovery
method signature (:mod:`circuitkit.baselines`), so benchmarks pick it by name like ``circuitlasso``."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from ..circuit import Circuit
from .eap import OutputKind, _observational_capture


def circuitlasso_group(model: Any, clean: Any, corrupt: Any = None, *, sites: Sequence[str] | None = None,
                       output_kind: OutputKind = "categorical", skip_first: int = 1, batch_size: int = 256,
                       **group_params: Any) -> Circuit:
    """Group-sparse CircuitLasso on the clean prompts only (observational: ``corrupt`` is ignored).

    Captures ``sites`` at every position after the first ``skip_first`` (BOS) with
    :func:`circuitkit.capture` (``batch_size`` prompts per trace) and fits
    :class:`~circuitkit.fit.group.GroupCircuitLasso` with its defaults (``group_params`` override them).
    ``output_kind`` is unused (no metric). The result keeps the regularisation path, which
    :func:`circuitkit.evaluate.edge_scores` uses to rank candidates.
    """
    from ..fit.group import GroupCircuitLasso

    t0 = time.perf_counter()
    acts, rows = _observational_capture(model, clean, sites=sites, skip_first=skip_first, batch_size=batch_size)
    circ = GroupCircuitLasso(**group_params).fit(acts).circuit_
    circ.meta.update({"method": "circuitlasso-group", "seconds": time.perf_counter() - t0, "n_prompts": len(rows)})
    return circ


__all__ = ["circuitlasso_group"]
