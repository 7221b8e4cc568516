"""Intervention-based circuit discovery at component granularity: EAP, EAP-IG, exact activation patching.

All three score every candidate edge ``u -> v`` (sites in computation order, heads of one layer never
connected; :func:`circuitkit.evaluate.candidate_edges`) from paired clean / corrupted prompts of equal
length, and return a :class:`~circuitkit.circuit.Circuit` whose nodes are the sites and whose edges are
*all* candidates with their scores.

Metric ``L`` (:func:`circuitkit.runtime.split.task_metric`), per prompt, summed over the output positions
after BOS: for categorical outputs the log-probability (``log_softmax`` of the output scores) of the
*clean* run's answer; for numerical outputs the output value. With ``answer=`` and ``distractor=`` (one
token id per prompt, paired with ``clean`` like the corrupted prompts) ``L`` is instead the logit difference
``logit[answer] - logit[distractor]`` at the last position (MIB's IOI metric; categorical outputs only).

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
from ..sites import circuit_positions, parse_site

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


def _chunks(c: Tensor, k: Tensor, batch_size: int, a: Tensor | None = None, d: Tensor | None = None):
    for s in range(0, c.shape[0], batch_size):
        sl = slice(s, s + batch_size)
        yield c[sl], k[sl], (None if a is None else a[sl]), (None if d is None else d[sl])


def _answer_batches(answer: Any, distractor: Any, pairs: list[tuple[Tensor, Tensor]],
                    output_kind: str) -> tuple[list, list]:
    """Per-batch answer / distractor ids (``None`` each when the default task metric is used)."""
    if answer is None and distractor is None:
        return [None] * len(pairs), [None] * len(pairs)
    if answer is None or distractor is None:
        raise ValueError("the logit-difference metric needs both answer= and distractor= (one token id per prompt)")
    if output_kind != "categorical":
        raise ValueError(f"answer=/distractor= need categorical outputs, got output_kind={output_kind!r}")
    out = []
    for name, x in (("answer", answer), ("distractor", distractor)):
        xs = [x] if isinstance(x, Tensor) else list(x) if isinstance(x, (list, tuple)) else None
        if xs is None or len(xs) != len(pairs) or not all(isinstance(b, Tensor) and b.ndim == 1 for b in xs):
            raise ValueError(f"{name} must be a [batch] tensor of token ids, or a list of them paired one to one "
                             f"with the {len(pairs)} clean batches")
        for i, (b, (c, _k)) in enumerate(zip(xs, pairs)):
            if b.shape[0] != c.shape[0]:
                raise ValueError(f"batch {i}: {name} has {b.shape[0]} ids but clean has {c.shape[0]} prompts")
        out.append([b.long() for b in xs])
    return out[0], out[1]


def _logit_diff(a: Tensor, d: Tensor):
    """``out -> logit[a] - logit[d]`` at the last position, per prompt (rows repeat ``a``/``d`` if needed)."""
    def metric(out: Tensor) -> Tensor:
        last = out[:, -1]
        reps = last.shape[0] // a.shape[0]
        aa, dd = a.repeat(reps), d.repeat(reps)
        rows = torch.arange(last.shape[0], device=last.device)
        return last[rows, aa] - last[rows, dd]
    return metric


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
                 steps: int, batch_size: int, method: str, answer: Any = None, distractor: Any = None) -> Circuit:
    t0 = time.perf_counter()
    pairs = _pairs(clean, corrupt)
    answers, distractors = _answer_batches(answer, distractor, pairs, output_kind)
    sites = _resolve_sites(model, sites, pairs[0][0])
    cands = candidate_edges(sites)
    targets_sites = sorted({v for _, v in cands}, key=sites.index)
    signed = np.zeros(len(cands))
    absval = np.zeros(len(cands))
    n = 0
    for c_all, k_all, a_all, d_all in zip(*zip(*pairs), answers, distractors):
        for c, k, a, d in _chunks(c_all, k_all, batch_size, a_all, d_all):
            with torch.no_grad():
                run_c = run_components(model, c)
                run_k = run_components(model, k)
            tgt = answer_targets(run_c.outputs["out"], output_kind=output_kind)
            metric = None if a is None else _logit_diff(a, d)
            if steps == 0:  # plain EAP: gradient at the clean point
                grads = input_gradients(model, embed=run_c.outputs["embed"], targets=tgt, output_kind=output_kind,
                                        target_sites=targets_sites, metric=metric)
            else:
                e_c, e_k = run_c.outputs["embed"], run_k.outputs["embed"]
                alphas = torch.arange(1, steps + 1, dtype=e_c.dtype) / steps
                emb = torch.cat([e_k + a * (e_c - e_k) for a in alphas], dim=0)
                g = input_gradients(model, embed=emb, targets=tgt.repeat(steps, *([1] * (tgt.ndim - 1))),
                                    output_kind=output_kind, target_sites=targets_sites, metric=metric)
                grads = {v: gv.reshape(steps, c.shape[0], *gv.shape[1:]).mean(0) for v, gv in g.items()}
            delta = {u: (run_c.outputs[u] - run_k.outputs[u]) for u in sites if u != "out"}
            for i, (u, v) in enumerate(cands):
                per = (delta[u] * grads[v]).sum(dim=(1, 2)).double().numpy()
                signed[i] += per.sum()
                absval[i] += np.abs(per).sum()
            n += c.shape[0]
    meta = {"method": method, "output_kind": output_kind, "n_prompts": n, "ig_steps": steps,
            "metric": "task" if answers[0] is None else "logit_diff",
            "seconds": time.perf_counter() - t0, "score": "mean |per-prompt attribution|"}
    return _circuit(sites, cands, signed, absval, n, meta)


def circuitlasso_qk(model: Any, clean: Any, corrupt: Any = None, **params: Any) -> Circuit:
    """:func:`circuitlasso` with ``qk=True`` (query/key pathways; Tracr models only, ``TypeError`` otherwise),
    registered as ``"circuitlasso-qk"``."""
    circ = circuitlasso(model, clean, corrupt, qk=True, **params)
    circ.meta["method"] = "circuitlasso-qk"
    return circ


def eap(model: Any, clean: Any, corrupt: Any, *, sites: Sequence[str] | None = None,
        output_kind: OutputKind = "categorical", batch_size: int = 256, answer: Any = None,
        distractor: Any = None) -> Circuit:
    """Edge attribution patching (module docstring). ``clean``/``corrupt``: ``[batch, pos]`` token ids or
    lists of such batches (one per length), paired row by row; ``answer``/``distractor``: the logit-difference
    metric's token ids, batched like ``clean`` (default: the task metric)."""
    return _attribution(model, clean, corrupt, sites=sites, output_kind=output_kind, steps=0,
                        batch_size=batch_size, method="eap", answer=answer, distractor=distractor)


def eap_ig(model: Any, clean: Any, corrupt: Any, *, steps: int = 8, sites: Sequence[str] | None = None,
           output_kind: OutputKind = "categorical", batch_size: int = 256, answer: Any = None,
           distractor: Any = None) -> Circuit:
    """EAP with integrated gradients over ``steps`` points between the corrupted and clean embeddings
    (``answer``/``distractor``: as :func:`eap`)."""
    if not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    return _attribution(model, clean, corrupt, sites=sites, output_kind=output_kind, steps=steps,
                        batch_size=batch_size, method="eap-ig", answer=answer, distractor=distractor)


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
            for c, k, _a, _d in _chunks(c_all, k_all, batch_size):
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


def _observational_capture(model: Any, clean: Any, *, sites: Sequence[str] | None, skip_first: int,
                           batch_size: int) -> tuple[Any, list[list[int]]]:
    """The clean prompts captured at every position after the first ``skip_first``
    (:func:`circuitkit.sites.circuit_positions`: the one BOS rule, :data:`~circuitkit.sites.DEFAULT_POSITIONS`,
    for the default ``skip_first``): the input of the observational methods ``circuitlasso`` and
    ``circuitlasso-group``. Returns the activations and the prompts' token ids (one list per prompt)."""
    from ..runtime.capturing import capture

    batches = _as_batches(clean, "clean")
    if sites is None:
        sites = _resolve_sites(model, None, batches[0])
    rows = [r.tolist() for b in batches for r in b]
    positions = circuit_positions(skip_first)  # the one BOS rule (circuitkit.sites.DEFAULT_POSITIONS)
    acts = capture(model, rows, sites=list(sites), positions=positions, batch_size=batch_size, progress=False)
    return acts, rows


def circuitlasso(model: Any, clean: Any, corrupt: Any = None, *, sites: Sequence[str] | None = None,
                 output_kind: OutputKind = "categorical", skip_first: int = 1, batch_size: int = 256,
                 progress: bool = False, qk: bool | Literal["auto"] = "auto", **lasso_params: Any) -> Circuit:
    """CircuitLasso on the clean prompts only (observational: ``corrupt`` is ignored).

    Captures ``sites`` at every position after the first ``skip_first`` (BOS) with
    :func:`circuitkit.capture` and fits :class:`~circuitkit.fit.lasso.CircuitLasso` with its defaults
    (``lasso_params`` override them); ``batch_size`` prompts per nnsight trace, as for the attribution
    methods. ``output_kind`` is unused (no metric). The result keeps the regularisation path, which
    :func:`circuitkit.evaluate.edge_scores` uses to rank candidates.

    ``qk``: also fit every head's query and key vectors as targets and merge the edges found through them
    (:mod:`circuitkit.fit.qk`; edges get a ``via`` column, e.g. ``"v+q"``). ``"auto"`` (default): on for models
    whose heads' queries and keys circuitkit can record (Tracr models; :func:`circuitkit.fit.qk.supports_qk`), off
    otherwise; ``True`` insists (``TypeError`` for other models); ``False``: site outputs only (what
    ``CircuitLasso().fit(ck.capture(...))`` fits). The same circuit from captured activations:
    ``fit_qk_circuit(acts, capture_qk(model, ids, acts=acts))``.
    """
    from ..fit.lasso import CircuitLasso
    from ..fit.qk import supports_qk

    if qk not in (True, False, "auto"):
        raise ValueError(f"qk must be True, False or 'auto', got {qk!r}")
    t0 = time.perf_counter()
    acts, rows = _observational_capture(model, clean, sites=sites, skip_first=skip_first, batch_size=batch_size)
    if qk == "auto":
        qk = supports_qk(model) and any(parse_site(s).kind == "head" for s in acts.sites)
    if qk:
        from ..fit.qk import capture_qk, fit_qk_circuit

        circ = fit_qk_circuit(acts, capture_qk(model, rows, acts=acts), progress=progress, **lasso_params)
    else:
        circ = CircuitLasso(progress=progress, **lasso_params).fit(acts).circuit_
    circ.meta.update({"method": "circuitlasso", "seconds": time.perf_counter() - t0, "n_prompts": len(rows),
                      "qk": bool(qk)})
    return circ


def circuitlasso_v(model: Any, clean: Any, corrupt: Any = None, **params: Any) -> Circuit:
    """:func:`circuitlasso` with ``qk=False`` (site outputs only, the fit of ``CircuitLasso().fit(ck.capture(...))``),
    registered as ``"circuitlasso-v"``."""
    circ = circuitlasso(model, clean, corrupt, qk=False, **params)
    circ.meta["method"] = "circuitlasso-v"
    return circ


__all__ = ["activation_patching", "circuitlasso", "circuitlasso_qk", "circuitlasso_v", "eap", "eap_ig"]
