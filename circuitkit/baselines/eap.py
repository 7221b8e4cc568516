"""Intervention-based circuit discovery at component granularity: EAP, EAP-IG, exact activation patching.

All three score every candidate edge ``u -> v`` (sites in computation order, heads of one layer never
connected; :func:`circuitkit.evaluate.candidate_edges`) from paired clean / corrupted prompts of equal
length, and return a :class:`~circuitkit.circuit.Circuit` whose nodes are the sites and whose edges are
*all* candidates with their scores.

Metric ``L`` (:func:`circuitkit.runtime.split.task_metric`), per prompt, summed over the output positions
after BOS: for categorical outputs the log-probability (``log_softmax`` of the output scores) of the
*clean* run's answer; for numerical outputs the output value.

* **Exact activation patching** (the reference): for each edge, in the input of ``v`` only, replace u's
  clean contribution by its corrupted one; the per-prompt effect is ``L(clean) - L(patched)``. One
  forward pass per edge and batch.
* **EAP** (attribution patching): the first-order estimate of that effect,
  ``(a_u(clean) - a_u(corrupt)) . dL/d(input of v)`` with the gradient taken on the clean run, summed
  over positions and model dimensions. One clean forward + backward and one corrupted forward per batch.
  Exact when ``L`` is linear in v's input (tested on a linear toy).
* **EAP-IG**: the same, with ``dL/d(input of v)`` averaged over ``steps`` points
  ``alpha = 1/steps, 2/steps, ..., 1`` on the straight line from the corrupted to the clean *input
  embeddings* (the standard EAP-IG form; ``steps`` forwards + backwards per batch).

Sign handling: a method's edge ``weight`` is the mean over prompts of the signed per-prompt effect, and
its ``score`` (used for ranking) is the mean over prompts of the *absolute* per-prompt effect, so
effects of opposite sign on different prompts do not cancel.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ..circuit import Circuit
from ..evaluate import candidate_edges
from ..runtime.split import answer_targets, input_gradients, run_components, task_metric
from ..sites import circuit_positions

logger = logging.getLogger(__name__)

OutputKind = Literal["categorical", "numerical"]


def _as_batches(x: Any, name: str) -> list[Tensor]:
    if isinstance(x, Tensor):
        if x.ndim != 2:
            raise ValueError(f"{name} must be [batch, pos] token ids, got shape {tuple(x.shape)}")
        return [x]
    if isinstance(x, (list, tuple)) and x and all(isinstance(b, Tensor) and b.ndim == 2 for b in x):
        return list(x)
    raise ValueError(f"{name} must be a [batch, pos] LongTensor or a list of them (one per sequence length)")


def _pairs(clean: Any, corrupt: Any) -> list[tuple[Tensor, Tensor]]:
    cb, kb = _as_batches(clean, "clean"), _as_batches(corrupt, "corrupt")
    if len(cb) != len(kb):
        raise ValueError(f"clean has {len(cb)} batches but corrupt has {len(kb)}; pair them one to one")
    for i, (c, k) in enumerate(zip(cb, kb)):
        if c.shape != k.shape:
            raise ValueError(f"batch {i}: clean shape {tuple(c.shape)} != corrupt shape {tuple(k.shape)}; "
                             "a corrupted prompt must have the same length as its clean prompt")
    return list(zip(cb, kb))


def _chunks(c: Tensor, k: Tensor, batch_size: int):
    for s in range(0, c.shape[0], batch_size):
        yield c[s:s + batch_size], k[s:s + batch_size]


def _resolve_sites(model: Any, sites: Sequence[str] | None, ids: Tensor) -> list[str]:
    with torch.no_grad():
        run = run_components(model, ids[:1])
    avail = list(run.outputs)
    if sites is None:
        return avail
    bad = [s for s in sites if s not in run.outputs]
    if bad:
        raise ValueError(f"sites {bad} are not components of this model; available: {avail}")
    return list(sites)


def _circuit(sites: list[str], cands: list[tuple[str, str]], signed: np.ndarray, absval: np.ndarray,
             n: int, meta: dict) -> Circuit:
    nodes = pd.DataFrame({"node": sites, "site": sites, "kind": "site"})
    edges = pd.DataFrame({"source": [u for u, _ in cands], "target": [v for _, v in cands],
                          "weight": signed / max(n, 1), "score": absval / max(n, 1)})
    return Circuit(nodes, edges, None, meta)


def _attribution(model: Any, clean: Any, corrupt: Any, *, sites: Sequence[str] | None, output_kind: OutputKind,
                 steps: int, batch_size: int, method: str) -> Circuit:
    t0 = time.perf_counter()
    pairs = _pairs(clean, corrupt)
    sites = _resolve_sites(model, sites, pairs[0][0])
    cands = candidate_edges(sites)
    targets_sites = sorted({v for _, v in cands}, key=sites.index)
    signed = np.zeros(len(cands))
    absval = np.zeros(len(cands))
    n = 0
    for c_all, k_all in pairs:
        for c, k in _chunks(c_all, k_all, batch_size):
            with torch.no_grad():
                run_c = run_components(model, c)
                run_k = run_components(model, k)
            tgt = answer_targets(run_c.outputs["out"], output_kind=output_kind)
            if steps == 0:  # plain EAP: gradient at the clean point
                grads = input_gradients(model, embed=run_c.outputs["embed"], targets=tgt, output_kind=output_kind,
                                        target_sites=targets_sites)
            else:
                e_c, e_k = run_c.outputs["embed"], run_k.outputs["embed"]
                alphas = torch.arange(1, steps + 1, dtype=e_c.dtype) / steps
                emb = torch.cat([e_k + a * (e_c - e_k) for a in alphas], dim=0)
                g = input_gradients(model, embed=emb, targets=tgt.repeat(steps, *([1] * (tgt.ndim - 1))),
                                    output_kind=output_kind, target_sites=targets_sites)
                grads = {v: gv.reshape(steps, c.shape[0], *gv.shape[1:]).mean(0) for v, gv in g.items()}
            delta = {u: (run_c.outputs[u] - run_k.outputs[u]) for u in sites if u != "out"}
            for i, (u, v) in enumerate(cands):
                per = (delta[u] * grads[v]).sum(dim=(1, 2)).double().numpy()
                signed[i] += per.sum()
                absval[i] += np.abs(per).sum()
            n += c.shape[0]
    meta = {"method": method, "output_kind": output_kind, "n_prompts": n, "ig_steps": steps,
            "seconds": time.perf_counter() - t0, "score": "mean |per-prompt attribution|"}
    return _circuit(sites, cands, signed, absval, n, meta)



def circuitlasso_qk(model: Any, clean: Any, corrupt: Any = None, **params: Any) -> Circuit:
    """:func:`circuitlasso` with ``qk=True`` (query/key pathways; Tracr models only), registered as
    ``"circuitlasso-qk"``."""
    circ = circuitlasso(model, clean, corrupt, qk=True, **params)
    circ.meta["method"] = "circuitlasso-qk"
    return circ


def eap(model: Any, clean: Any, corrupt: Any, *, sites: Sequence[str] | None = None,
        output_kind: OutputKind = "categorical", batch_size: int = 256) -> Circuit:
    """Edge attribution patching (module docstring). ``clean``/``corrupt``: ``[batch, pos]`` token ids or
    lists of such batches (one per length), paired row by row."""
    return _attribution(model, clean, corrupt, sites=sites, output_kind=output_kind, steps=0,
                        batch_size=batch_size, method="eap")


def eap_ig(model: Any, clean: Any, corrupt: Any, *, steps: int = 8, sites: Sequence[str] | None = None,
           output_kind: OutputKind = "categorical", batch_size: int = 256) -> Circuit:
    """EAP with integrated gradients over ``steps`` points between the corrupted and clean embeddings."""
    if not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    return _attribution(model, clean, corrupt, sites=sites, output_kind=output_kind, steps=steps,
                        batch_size=batch_size, method="eap-ig")


def activation_patching(model: Any, clean: Any, corrupt: Any, *, sites: Sequence[str] | None = None,
                        output_kind: OutputKind = "categorical", batch_size: int = 256) -> Circuit:
    """Exact edge patching: ``L(clean) - L(clean with u's contribution to v's input from corrupt)``."""
    t0 = time.perf_counter()
    pairs = _pairs(clean, corrupt)
    sites = _resolve_sites(model, sites, pairs[0][0])
    cands = candidate_edges(sites)
    signed = np.zeros(len(cands))
    absval = np.zeros(len(cands))
    n = 0
    with torch.no_grad():
        for c_all, k_all in pairs:
            for c, k in _chunks(c_all, k_all, batch_size):
                run_c = run_components(model, c)
                run_k = run_components(model, k)
                tgt = answer_targets(run_c.outputs["out"], output_kind=output_kind)
                base = task_metric(run_c.outputs["out"], tgt, output_kind=output_kind)
                for i, (u, v) in enumerate(cands):
                    run_p = run_components(model, c, patch={v: {u: run_k.outputs[u]}})
                    per = (base - task_metric(run_p.outputs["out"], tgt, output_kind=output_kind)).double().numpy()
                    signed[i] += per.sum()
                    absval[i] += np.abs(per).sum()
                n += c.shape[0]
    meta = {"method": "patching", "output_kind": output_kind, "n_prompts": n,
            "seconds": time.perf_counter() - t0, "score": "mean |per-prompt patching effect|"}
    return _circuit(sites, cands, signed, absval, n, meta)


def circuitlasso(model: Any, clean: Any, corrupt: Any = None, *, sites: Sequence[str] | None = None,
                 output_kind: OutputKind = "categorical", skip_first: int = 1, batch_size: int = 256,
                 progress: bool = False, qk: bool = False, **lasso_params: Any) -> Circuit:
    """CircuitLasso on the clean prompts only (observational: ``corrupt`` is ignored).

    ``qk=True`` also fits every head's query and key vectors as targets and merges the edges found
    through them (:mod:`circuitkit.fit.qk`; edges get a ``via`` column, e.g. ``"v+q"``). Tracr models only.

    Captures ``sites`` at every position after the first ``skip_first`` (BOS) with
    :func:`circuitkit.capture` and fits :class:`~circuitkit.fit.lasso.CircuitLasso` with its defaults
    (``lasso_params`` override them); ``batch_size`` prompts per nnsight trace, as for the attribution
    methods. ``output_kind`` is unused (no metric). The result keeps the regularisation path, which
    :func:`circuitkit.evaluate.edge_scores` uses to rank candidates.
    """
    from ..fit.lasso import CircuitLasso
    from ..runtime.capturing import capture

    t0 = time.perf_counter()
    batches = _as_batches(clean, "clean")
    if sites is None:
        sites = _resolve_sites(model, None, batches[0])
    rows = [r.tolist() for b in batches for r in b]

    positions = circuit_positions(skip_first)  # the one BOS rule (circuitkit.sites.DEFAULT_POSITIONS)
    acts = capture(model, rows, sites=list(sites), positions=positions, batch_size=batch_size, progress=False)
    if qk:
        from ..fit.qk import capture_qk, fit_qk_circuit

        circ = fit_qk_circuit(acts, capture_qk(model, rows, acts=acts), progress=progress, **lasso_params)
    else:
        circ = CircuitLasso(progress=progress, **lasso_params).fit(acts).circuit_
    circ.meta.update({"method": "circuitlasso", "seconds": time.perf_counter() - t0, "n_prompts": len(rows)})
    return circ


__all__ = ["activation_patching", "circuitlasso", "circuitlasso_qk", "eap", "eap_ig"]
