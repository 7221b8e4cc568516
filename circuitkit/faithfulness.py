"""Ablation metrics of component circuits through the runtime: faithfulness, completeness, CPR and CMD.

A *component circuit* is a set of edges ``u -> v`` between the sites of :func:`circuitkit.runtime.run_components`
(``embed``, heads ``L{l}.H{h}``, MLPs ``L{l}.MLP``, ``out``). The *candidate* edges are every ordered pair
``u -> v`` with ``u`` computed strictly before ``v`` (:func:`circuitkit.evaluate.candidate_edges`; heads of one
layer never connect; with a parallel residual, GPT-NeoX, a layer's heads do not feed its own MLP). Every
architecture the split forward supports works (Tracr, GPT-2, GPT-NeoX, Llama/Qwen/Mistral, Gemma, Gemma-2).

Ablation
--------
* **edge** (``level="edge"``): every candidate edge ``u -> v`` *not* in the circuit is ablated in v's own
  input copy only (``patch[v][u] = r_u``, :data:`circuitkit.runtime.split.PatchSpec`); every other reader of
  ``u`` still sees u's current value. Upstream effects compose: u's value is its value in the *ablated* run.
* **node** (``level="node"``): the circuit's nodes are the endpoints of its edges (``out`` is always kept);
  every other node ``u`` is ablated in *every* reader (all candidate edges leaving ``u``).

The reference value ``r_u`` (``ablation=``):

* ``"zero"``: ``r_u = 0``;
* ``"mean"``: u's per-position mean over a reference set of prompts (``reference=``; default the evaluated
  inputs), taken on the full, unablated model. Rows of different lengths are averaged per position over the
  rows that have it (padding excluded when ``attention_mask`` is given and ``reference`` is ``None``);
* ``"resample"``: u's value, on the full model, on paired corrupted prompts ``reference=`` (the same shapes as
  ``inputs``, row by row; MIB's "patching" intervention).

Metrics (``metric=``), per prompt, then averaged over prompts
-------------------------------------------------------------
* ``"task"``: :func:`circuitkit.runtime.split.task_metric` (categorical: log-probability of the *full* model's
  answer, summed over the positions after BOS; numerical: the output value), the Tracr metric;
* ``"logit_diff"``: ``logit[answer] - logit[distractor]`` at the metric position (``answer=`` and
  ``distractor=``, one token id per prompt);
* ``"prob"``: ``softmax(logits)[answer]`` (``answer`` defaults to the full model's argmax);
* ``"kl"``: ``KL(p_full || p_circuit)`` of the output distributions (0 for the full model; lower is better,
  the normalisation below still applies).

The metric position (``position=``) is ``"last"`` (the last real token of each row: the last position
without ``attention_mask``) or ``"all"`` (summed over the positions after the first ``skip_first``); ``"task"``
always uses all positions after BOS (padding excluded).

Scores
------
With ``m(C)`` the metric of the circuit, ``m(N)`` of the full model (nothing ablated) and ``m(∅)`` of the
empty circuit (every candidate ablated):

* faithfulness ``f(C) = (m(C) - m(∅)) / (m(N) - m(∅))`` (Marks et al.; ideal 1;
  :func:`circuitkit.evaluate.faithfulness`), NaN when ``m(N) = m(∅)``;
* completeness ``(m(N \\ C) - m(∅)) / (m(N) - m(∅))``: the circuit's edges ablated and every other candidate
  kept (ideal 0).

:func:`faithfulness_curve` ranks the candidates by the circuit's scores and evaluates the top
``n = int(fraction * n_candidates)`` edges (MIB's rule: floored, so on small models the first grid points can
be the empty circuit) at each fraction of the grid (default MIB's ``0.001, 0.002, 0.005, 0.01, 0.02, 0.05,
0.1, 0.2, 0.5, 1``). :func:`cpr` (area under ``f``) and :func:`cmd` (area under ``|1 - f|``) integrate with the
trapezoidal rule over the grid's points (no point is added at 0). By default the fraction axis is normalised
to ``[0, 1]`` (``(x - x_first) / (x_last - x_first)``), so a perfect curve (``f = 1`` everywhere) has CPR 1 and
CMD 0 exactly; ``normalize=False`` integrates over the raw fractions as MIB's ``evaluate_area_under_curve``
does (there a perfect curve on the default grid has CPR ``1 - 0.001 = 0.999``).

Feature circuits
----------------
:func:`feature_faithfulness` ablates SAE features (nodes ``site/f{i}``) at their sites, keeping every error
node ``site/err`` (Marks et al.'s node ablation; zero or mean codes), through plain forwards with
:func:`circuitkit.runtime.hooked` edits.

Pitfall: numerical outputs under mean ablation
----------------------------------------------
*Symptom*: ``m(N) - m(∅)`` is ~1e-8 and faithfulness is noise or NaN on a numerical Tracr task
(``frac_prevs``, ``pair_balance``, ``token_sq``). *Cause*: the metric is the mean output and the readout is
linear, so the mean-ablated model's mean output equals the full model's. *Fix*: ``ablation="zero"`` or
``"resample"``, or a metric that is not linear in the output (a callable, e.g. minus the squared error to
the full output).

Example::

    >>> from circuitkit.circuit import Circuit
    >>> from circuitkit.models.tracr import load_tracr_task
    >>> task = load_tracr_task("reverse")
    >>> ids = task.encode(task.sample_inputs(32, seed=0, length=4))
    >>> circ = Circuit.from_edges([(u, v, 1.0) for u, v in task.true_edges])  # the weight-derived truth
    >>> curve = faithfulness_curve(task, circ, ids, fractions=(0.0, 0.5, 1.0), ablation="mean")
    >>> curve["faithfulness"].tolist(), curve["completeness"].tolist(), cpr(curve)
    ([0.0, 1.0, 1.0], [1.0, 0.0, 0.0], 0.75)
"""

from __future__ import annotations

import itertools
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from .evaluate import candidate_edges, edge_scores
from .evaluate import faithfulness as _ratio
from .models.adapters import get_adapter
from .runtime.loading import module_of
from .runtime.split import OUTPUT_KINDS, answer_targets, run_components, task_metric
from .sites import parse_site, sort_sites

logger = logging.getLogger(__name__)

Edge = tuple[str, str]
Ablation = Literal["zero", "mean", "resample"]
MetricName = Literal["task", "logit_diff", "prob", "kl"]
Level = Literal["edge", "node"]

ABLATIONS = ("zero", "mean", "resample")
METRICS = ("task", "logit_diff", "prob", "kl")
LEVELS = ("edge", "node")
POSITIONS = ("last", "all")
RANK_BY = ("score", "path")
#: MIB's fraction grid (share of the candidate edges kept).
DEFAULT_FRACTIONS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def _choice(value: Any, valid: Sequence[str], what: str) -> str:
    if not isinstance(value, str) or value not in valid:
        raise ValueError(f"unknown {what} {value!r}; valid choices: {list(valid)}")
    return value


# --------------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------------


def _batches(x: Any, name: str, *, ndim: int = 2) -> list[Tensor]:
    """A tensor, or a list of tensors (one batch per sequence length), as a list of tensors."""
    if isinstance(x, Tensor):
        if x.ndim != ndim:
            raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
        return [x]
    if isinstance(x, (list, tuple)) and x and all(isinstance(b, Tensor) and b.ndim == ndim for b in x):
        return list(x)
    what = "[batch, pos] token ids" if ndim == 2 else "[batch] token ids"
    raise ValueError(f"{name} must be a tensor of {what} or a non-empty list of them (one per batch)")


def _paired(x: Any, inputs: list[Tensor], name: str, *, ndim: int) -> list[Tensor] | list[None]:
    if x is None:
        return [None] * len(inputs)
    xs = _batches(x, name, ndim=ndim)
    if len(xs) != len(inputs):
        raise ValueError(f"{name} has {len(xs)} batches but inputs has {len(inputs)}; pair them one to one")
    for i, (a, b) in enumerate(zip(xs, inputs)):
        if tuple(a.shape) != tuple(b.shape[:ndim]):
            raise ValueError(f"batch {i}: {name} shape {tuple(a.shape)} does not match inputs "
                             f"{tuple(b.shape[:ndim])}")
    return xs


def _circuit_edges(circuit_edges: Any) -> list[Edge]:
    """Edges from a Circuit, a DataFrame with source/target columns, or (source, target) pairs."""
    if hasattr(circuit_edges, "edges") and hasattr(circuit_edges, "nodes"):
        nodes = circuit_edges.nodes
        feats = nodes.loc[nodes["kind"].isin(["feature", "error"]), "node"].tolist() if "kind" in nodes else []
        used = set(circuit_edges.edges["source"]).union(circuit_edges.edges["target"])
        bad = sorted(used.intersection(feats))
        if bad:
            raise ValueError(f"feature circuits are not supported by component ablation: the circuit's edges "
                             f"use SAE feature/error nodes {bad[:5]}; pass a component circuit (site nodes)")
        circuit_edges = circuit_edges.edges
    if isinstance(circuit_edges, pd.DataFrame):
        missing = [c for c in ("source", "target") if c not in circuit_edges]
        if missing:
            raise ValueError(f"the edge table lacks columns {missing}; expected source, target")
        return list(dict.fromkeys(zip(circuit_edges["source"].astype(str), circuit_edges["target"].astype(str))))
    out = []
    for e in circuit_edges:
        if not (isinstance(e, (tuple, list)) and len(e) == 2 and all(isinstance(s, str) for s in e)):
            raise ValueError(f"circuit edges must be (source, target) pairs of site names, got {e!r}")
        out.append((e[0], e[1]))
    return list(dict.fromkeys(out))


# --------------------------------------------------------------------------------------------------
# the prepared evaluation: full runs, reference values and targets, computed once
# --------------------------------------------------------------------------------------------------


@dataclass
class _Chunk:
    ids: Tensor
    mask: Tensor | None
    answer: Tensor | None
    distractor: Tensor | None
    full_out: Tensor
    ref: dict[str, Tensor | None]  # reference value of every source site (None = zero)


class _Metric:
    """The per-prompt metric, shared by component (:class:`_Evaluation`) and feature circuits."""

    metric: str | Callable
    position: str
    skip_first: int
    output_kind: str

    def _setup_metric(self, model: Any, *, metric: Any, position: str, skip_first: int, output_kind: str | None,
                      batch_size: int, answer: Any, distractor: Any) -> None:
        if not callable(metric):
            _choice(metric, METRICS, "metric")
        self.metric = metric
        self.position = _choice(position, POSITIONS, "position")
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if not (isinstance(skip_first, int) and skip_first >= 0):
            raise ValueError(f"skip_first must be an int >= 0, got {skip_first!r}")
        self.skip_first = skip_first
        if output_kind is None:
            output_kind = getattr(model, "output_kind", "categorical")
        self.output_kind = _choice(output_kind, OUTPUT_KINDS, "output_kind")
        if self.output_kind == "numerical" and metric in ("logit_diff", "prob", "kl"):
            raise ValueError(f"metric {metric!r} needs categorical outputs; this model's outputs are numerical "
                             "(use metric='task')")
        if metric == "logit_diff" and (answer is None or distractor is None):
            raise ValueError("metric='logit_diff' needs answer= and distractor= (one token id per prompt)")

    def _pos(self, c: _Chunk) -> Tensor:
        b, t = c.ids.shape
        if c.mask is None:
            return torch.full((b,), t - 1, dtype=torch.long, device=c.ids.device)
        return (c.mask.long().cumsum(-1).argmax(-1)).to(torch.long)  # last real token (right padding)

    def _per_prompt(self, out: Tensor, c: _Chunk) -> Tensor:
        if callable(self.metric):
            val = self.metric(out, c.full_out)
            if not (isinstance(val, Tensor) and val.shape == (out.shape[0],)):
                raise ValueError(f"a metric callable must return a [batch] tensor, got "
                                 f"{getattr(val, 'shape', type(val).__name__)}")
            return val
        if self.metric == "task":
            tgt = answer_targets(c.full_out, output_kind=self.output_kind)
            if c.mask is None:
                return task_metric(out, tgt, output_kind=self.output_kind, skip_first=self.skip_first)
            per = torch.stack([task_metric(out[:, t:t + 1], tgt[:, t:t + 1], output_kind=self.output_kind,
                                           skip_first=0) for t in range(out.shape[1])], dim=1)
            return (per * c.mask.to(per.dtype))[:, self.skip_first:].sum(-1)  # padding excluded
        rows = torch.arange(out.shape[0], device=out.device)
        if self.position == "last":
            sel = out[rows, self._pos(c)][:, None]  # [batch, 1, n_out]
            full = c.full_out[rows, self._pos(c)][:, None]
            w = torch.ones(sel.shape[:2], dtype=out.dtype, device=out.device)
        else:
            sel, full = out[:, self.skip_first:], c.full_out[:, self.skip_first:]
            w = (torch.ones(sel.shape[:2], dtype=out.dtype, device=out.device) if c.mask is None
                 else c.mask[:, self.skip_first:].to(out.dtype))
        if self.metric == "kl":
            lp_full = torch.log_softmax(full.double(), -1)
            lp = torch.log_softmax(sel.double(), -1)
            val = (lp_full.exp() * (lp_full - lp)).sum(-1)
        else:
            ans = c.answer if c.answer is not None else full.argmax(-1)[:, 0]
            ans_idx = ans.view(-1, 1, 1).expand(-1, sel.shape[1], 1)
            if self.metric == "prob":
                val = torch.softmax(sel.double(), -1).gather(-1, ans_idx).squeeze(-1)
            else:  # logit_diff
                dis_idx = c.distractor.view(-1, 1, 1).expand(-1, sel.shape[1], 1)
                val = (sel.gather(-1, ans_idx) - sel.gather(-1, dis_idx)).squeeze(-1).double()
        return (val * w.double()).sum(-1)


class _Evaluation(_Metric):
    """Everything :func:`circuit_metric` needs, computed once (the curve reuses it for every fraction)."""

    def __init__(self, model: Any, inputs: Any, *, ablation: str, metric: str | Callable, reference: Any,
                 attention_mask: Any, answer: Any, distractor: Any, output_kind: str | None, position: str,
                 sites: Sequence[str] | None, skip_first: int, batch_size: int) -> None:
        self.ablation = _choice(ablation, ABLATIONS, "ablation")
        self._setup_metric(model, metric=metric, position=position, skip_first=skip_first, output_kind=output_kind,
                           batch_size=batch_size, answer=answer, distractor=distractor)
        self.model = model
        module = module_of(model)
        self.module = module
        try:
            self.device = next(module.parameters()).device
        except StopIteration:
            self.device = torch.device("cpu")
        xs = _batches(inputs, "inputs")
        masks = _paired(attention_mask, xs, "attention_mask", ndim=2)
        answers = _paired(answer, xs, "answer", ndim=1)
        distractors = _paired(distractor, xs, "distractor", ndim=1)
        with torch.no_grad():
            run = run_components(model, xs[0][:1].to(self.device),
                                 attention_mask=None if masks[0] is None else masks[0][:1].to(self.device))
        available = sort_sites(run.outputs)
        if sites is None:
            sites = available
        else:
            sites = list(sites)
            bad = [s for s in sites if s not in run.outputs]
            if bad:
                raise ValueError(f"sites {bad} are not components of this model; available: {available}")
            sites = sort_sites(sites)
        self.sites = sites
        cands = candidate_edges(sites)
        if get_adapter(module).is_parallel():  # a layer's MLP reads the block input, not its own heads
            cands = [(u, v) for u, v in cands
                     if not (parse_site(u).kind == "head" and parse_site(v).kind == "mlp"
                             and parse_site(u).layer == parse_site(v).layer)]
        self.candidates: list[Edge] = cands
        self._cand_set = set(cands)
        self.sources = sorted({u for u, _ in cands}, key=sites.index)

        # reference values and full runs, chunk by chunk
        refs = self._reference(reference, xs, masks, batch_size)
        self.chunks: list[_Chunk] = []
        with torch.no_grad():
            for b, (x, m, a, d) in enumerate(zip(xs, masks, answers, distractors)):
                for s in range(0, x.shape[0], batch_size):
                    sl = slice(s, s + batch_size)
                    ids = x[sl].to(self.device)
                    mk = None if m is None else m[sl].to(self.device)
                    full = run_components(model, ids, attention_mask=mk).outputs["out"]
                    ref = refs(b, sl, ids.shape[1])
                    self.chunks.append(_Chunk(ids, mk, None if a is None else a[sl].to(self.device),
                                              None if d is None else d[sl].to(self.device), full, ref))
        self.n_prompts = sum(c.ids.shape[0] for c in self.chunks)

    # -- reference values ------------------------------------------------------------------------
    def _reference(self, reference: Any, xs: list[Tensor], masks: list, batch_size: int):
        if self.ablation == "zero":
            zero: dict[str, Tensor | None] = {u: None for u in self.sources}
            return lambda _b, _sl, _t: zero
        if self.ablation == "resample":
            if reference is None:
                raise ValueError("ablation='resample' needs reference= (corrupted prompts paired row by row with "
                                 "inputs, the same shapes)")
            ks = _paired(reference, xs, "reference", ndim=2)
            for i, (k, x) in enumerate(zip(ks, xs)):
                if k.shape != x.shape:
                    raise ValueError(f"batch {i}: reference shape {tuple(k.shape)} != inputs shape "
                                     f"{tuple(x.shape)}; a corrupted prompt must match its clean prompt")

            def resampled(b: int, sl: slice, _t: int) -> dict[str, Tensor | None]:
                with torch.no_grad():
                    m = masks[b]
                    out = run_components(self.model, ks[b][sl].to(self.device),
                                         attention_mask=None if m is None else m[sl].to(self.device)).outputs
                return {u: out[u] for u in self.sources}

            return resampled
        # mean: per-position mean over the reference rows, on the full model
        if reference is None:
            rs, rmasks = xs, masks
        else:
            rs = _batches(reference, "reference")
            rmasks = [None] * len(rs)
        sums: dict[str, Tensor] = {}
        count: Tensor | None = None
        with torch.no_grad():
            for r, m in zip(rs, rmasks):
                for s in range(0, r.shape[0], batch_size):
                    ids = r[s:s + batch_size].to(self.device)
                    mk = None if m is None else m[s:s + batch_size].to(self.device)
                    out = run_components(self.model, ids, attention_mask=mk).outputs
                    w = torch.ones(ids.shape, dtype=torch.float64, device=self.device) if mk is None \
                        else mk.to(torch.float64)
                    t = ids.shape[1]
                    cnt = w.sum(0)
                    if count is None or count.shape[0] < t:
                        count = _grow(count, t, device=self.device)
                    count[:t] += cnt
                    for u in self.sources:
                        v = (out[u].to(torch.float64) * w[..., None]).sum(0)
                        prev = sums.get(u)
                        if prev is None or prev.shape[0] < t:
                            prev = _grow(prev, t, v.shape[-1], device=self.device)
                        prev[:t] += v
                        sums[u] = prev
        means = {u: sums[u] / count.clamp_min(1)[:, None] for u in self.sources}
        dtype = self._dtype()

        def mean_ref(_b: int, _sl: slice, t: int) -> dict[str, Tensor | None]:
            if t > count.shape[0] or bool((count[:t] == 0).any()):
                raise ValueError(f"mean ablation: the reference prompts do not cover every position of an input of "
                                 f"length {t} (reference covers {int((count > 0).sum())} positions); pass a "
                                 "reference= set with prompts at least as long as the inputs")
            return {u: means[u][:t].unsqueeze(0).to(dtype) for u in self.sources}

        return mean_ref

    def _dtype(self) -> torch.dtype:
        try:
            return next(self.module.parameters()).dtype
        except StopIteration:
            return torch.float32

    # -- validation of circuits ------------------------------------------------------------------
    def check_edges(self, edges: Iterable[Edge]) -> list[Edge]:
        edges = list(edges)
        names = {s for e in edges for s in e}
        unknown = sorted(names - set(self.sites))
        if unknown:
            raise ValueError(f"the circuit uses sites {unknown[:6]} that are not among the evaluated sites of "
                             f"this model; valid sites: {self.sites}")
        bad = [e for e in edges if e not in self._cand_set]
        if bad:
            raise ValueError(f"circuit edges {bad[:5]} are not candidate edges (the source must be computed "
                             "strictly before the target; heads of one layer never connect)")
        return edges

    def ablated(self, kept: Iterable[Edge], *, level: str, complement: bool) -> list[Edge]:
        """The candidate edges to ablate so that ``kept`` (or, with ``complement``, all but ``kept``) is the
        circuit."""
        kept = set(kept)
        if level == "edge":
            return [e for e in self.candidates if (e in kept) == complement]
        nodes = {s for e in kept for s in e} - {"out"}
        return [(u, v) for u, v in self.candidates if (u in nodes) == complement]

    def value(self, ablated: Sequence[Edge]) -> float:
        """Mean metric over prompts with the edges ``ablated`` patched by their reference values."""
        by_target: dict[str, list[str]] = {}
        for u, v in ablated:
            by_target.setdefault(v, []).append(u)
        total = 0.0
        with torch.no_grad():
            for c in self.chunks:
                if by_target:
                    patch = {v: {u: c.ref[u] for u in us} for v, us in by_target.items()}
                    out = run_components(self.model, c.ids, attention_mask=c.mask, patch=patch).outputs["out"]
                else:
                    out = c.full_out
                total += float(self._per_prompt(out, c).double().sum())
        return total / self.n_prompts

    def m_full(self) -> float:
        return self.value([])

    def m_empty(self) -> float:
        return self.value(self.candidates)


def _grow(x: Tensor | None, t: int, d: int | None = None, *, device: torch.device) -> Tensor:
    shape = (t,) if d is None else (t, d)
    new = torch.zeros(shape, dtype=torch.float64, device=device)
    if x is not None:
        new[:x.shape[0]] = x
    return new


# --------------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------------


def circuit_metric(
    model: Any,
    inputs: Any,
    circuit_edges: Any,
    *,
    ablation: Ablation = "mean",
    metric: MetricName | Callable[[Tensor, Tensor], Tensor] = "task",
    level: Level = "edge",
    complement: bool = False,
    reference: Any = None,
    attention_mask: Any = None,
    answer: Any = None,
    distractor: Any = None,
    output_kind: Literal["categorical", "numerical"] | None = None,
    position: Literal["last", "all"] = "last",
    sites: Sequence[str] | None = None,
    skip_first: int = 1,
    batch_size: int = 64,
) -> float:
    """The mean task metric ``m(C)`` of the circuit ``circuit_edges`` with everything else ablated.

    Parameters
    ----------
    model: a model the split forward supports (torch module, LoadedModel or Tracr task).
    inputs: token ids ``[batch, pos]`` or a list of such batches (e.g. one per sequence length).
    circuit_edges: a :class:`~circuitkit.circuit.Circuit` (all its edges), an edge table with ``source`` and
        ``target`` columns, or ``(source, target)`` pairs of sites.
    ablation: ``"zero"``, ``"mean"`` or ``"resample"`` (module docstring).
    metric: ``"task"``, ``"logit_diff"``, ``"prob"``, ``"kl"``, or a callable ``(out, full_out) -> [batch]``
        on the model outputs ``[batch, pos, n_out]``.
    level: ``"edge"`` (ablate edges outside the circuit) or ``"node"`` (ablate nodes outside it).
    complement: ablate the circuit instead and keep every other candidate (``m(N \\ C)``, completeness).
    reference: mean ablation: the prompts to average over (default ``inputs``); resample ablation: corrupted
        prompts paired with ``inputs`` (the same structure and shapes).
    attention_mask, answer, distractor: the same structure as ``inputs`` (``[batch, pos]``, ``[batch]``).
    output_kind: ``"categorical"``/``"numerical"`` for ``metric="task"`` (default: the Tracr task's, else
        categorical).
    position: where ``logit_diff``/``prob``/``kl`` are read: ``"last"`` real token or ``"all"`` positions after
        ``skip_first`` (summed).
    sites: the sites between which edges are candidates (default: every component); edges from other sites
        are never ablated.
    """
    ev = _Evaluation(model, inputs, ablation=ablation, metric=metric, reference=reference,
                     attention_mask=attention_mask, answer=answer, distractor=distractor, output_kind=output_kind,
                     position=position, sites=sites, skip_first=skip_first, batch_size=batch_size)
    level = _choice(level, LEVELS, "level")
    edges = ev.check_edges(_circuit_edges(circuit_edges))
    return ev.value(ev.ablated(edges, level=level, complement=bool(complement)))


# --------------------------------------------------------------------------------------------------
# feature circuits: SAE features spliced at their sites, error nodes kept
# --------------------------------------------------------------------------------------------------

FEATURE_ABLATIONS = ("zero", "mean")
_FEATURE = re.compile(r"f(\d+)")


def _feature_nodes(circuit: Any) -> dict[str, set[int]]:
    """``{site: kept feature indices}`` from a Circuit (the endpoints of its edges) or node names."""
    if hasattr(circuit, "edges") and hasattr(circuit, "nodes"):
        names = set(circuit.edges["source"]).union(circuit.edges["target"])
    elif isinstance(circuit, str):
        raise ValueError(f"pass a Circuit or a list of node names, got the string {circuit!r}")
    else:
        names = set(circuit)
    feats: dict[str, set[int]] = {}
    for n in sorted(map(str, names)):
        if n == "y" or n.startswith("y:"):
            continue  # prediction targets are not ablated
        site, sep, rest = n.partition("/")
        if not sep:
            raise ValueError(f"node {n!r} is a component, not an SAE feature; feature circuits have nodes "
                             "'site/f{index}' (and 'site/err'); use circuit_metric for component circuits")
        parse_site(site)
        if rest == "err":
            continue  # error nodes are always kept
        m = _FEATURE.fullmatch(rest)
        if m is None:
            raise ValueError(f"node {n!r} is not a feature node; valid forms are 'site/f{{index}}' and 'site/err'")
        feats.setdefault(site, set()).add(int(m.group(1)))
    return feats


def _w_dec(sae: Any) -> Tensor:
    w = getattr(sae, "W_dec", None)
    return (w if w is not None else sae.sae.W_dec).detach()


class _FeatureEvaluation(_Metric):
    """Plain forwards with, at every SAE site, the features outside the circuit replaced by a reference code."""

    def __init__(self, model: Any, inputs: Any, saes: Any, *, ablation: str, metric: Any, reference: Any,
                 attention_mask: Any, answer: Any, distractor: Any, output_kind: str | None, position: str,
                 skip_first: int, batch_size: int) -> None:
        from .runtime.interventions import Record, hooked
        from .sae import attach_saes

        self.ablation = _choice(ablation, FEATURE_ABLATIONS, "feature ablation")
        self._setup_metric(model, metric=metric, position=position, skip_first=skip_first, output_kind=output_kind,
                           batch_size=batch_size, answer=answer, distractor=distractor)
        self.model = model
        self.module = module_of(model)
        self.tracr = get_adapter(self.module).spec.name == "tracr"
        self.saes = attach_saes(saes)
        try:
            self.device = next(self.module.parameters()).device
        except StopIteration:
            self.device = torch.device("cpu")
        xs = _batches(inputs, "inputs")
        masks = _paired(attention_mask, xs, "attention_mask", ndim=2)
        answers = _paired(answer, xs, "answer", ndim=1)
        distractors = _paired(distractor, xs, "distractor", ndim=1)
        self.means: dict[str, Tensor] = {}
        if self.ablation == "mean":  # per-feature mean code over the reference's real positions after skip_first
            rs, rm = (xs, masks) if reference is None else (_batches(reference, "reference"), None)
            rm = rm if rm is not None else [None] * len(rs)
            sums = {s: 0.0 for s in self.saes}
            n = 0.0
            with torch.no_grad(), hooked(model, [Record(s) for s in self.saes]) as st:
                for r, m in zip(rs, rm):
                    for a in range(0, r.shape[0], batch_size):
                        ids = r[a:a + batch_size].to(self.device)
                        mk = None if m is None else m[a:a + batch_size].to(self.device)
                        st.records.clear()
                        self._forward(ids, mk)
                        w = torch.ones(ids.shape, dtype=torch.float64, device=self.device) if mk is None \
                            else mk.to(torch.float64)
                        w[:, :skip_first] = 0
                        for s, sae in self.saes.items():
                            z = sae.encode(st.records[s].to(_w_dec(sae).dtype)).to(torch.float64)
                            sums[s] = sums[s] + (z * w[..., None]).sum((0, 1))
                        n += float(w.sum())
            if n == 0:
                raise ValueError("mean feature ablation: the reference has no positions after skip_first")
            self.means = {s: (sums[s] / n) for s in self.saes}
        self.chunks: list[_Chunk] = []
        with torch.no_grad():
            for x, m, a, d in zip(xs, masks, answers, distractors):
                for b in range(0, x.shape[0], batch_size):
                    sl = slice(b, b + batch_size)
                    ids = x[sl].to(self.device)
                    mk = None if m is None else m[sl].to(self.device)
                    self.chunks.append(_Chunk(ids, mk, None if a is None else a[sl].to(self.device),
                                              None if d is None else d[sl].to(self.device), self._forward(ids, mk), {}))
        self.n_prompts = sum(c.ids.shape[0] for c in self.chunks)

    def _forward(self, ids: Tensor, mask: Tensor | None) -> Tensor:
        if self.tracr:
            return self.module(ids)
        y = self.module(input_ids=ids, attention_mask=mask, use_cache=False)
        return getattr(y, "logits", y)

    def check(self, feats: Mapping[str, set[int]]) -> None:
        bad = sorted(set(feats) - set(self.saes))
        if bad:
            raise ValueError(f"the circuit has features at sites {bad} without an SAE; SAEs are given for "
                             f"{sorted(self.saes)}")
        for s, idx in feats.items():
            d_sae = int(self.saes[s].cfg.d_sae)
            out = sorted(i for i in idx if not 0 <= i < d_sae)
            if out:
                raise ValueError(f"features {out[:5]} at {s!r} are out of range; this SAE has d_sae={d_sae}")

    def _edit(self, site: str, idx: list[int]) -> Any:
        from .runtime.interventions import Custom

        sae = self.saes[site]
        w = _w_dec(sae)
        ii = torch.as_tensor(idx, dtype=torch.long, device=w.device)
        ref = self.means[site][ii].to(w.dtype) if site in self.means else None

        def fn(h: Tensor) -> Tensor:
            z = sae.encode(h.detach().to(w.dtype))[..., ii]
            if ref is not None:
                z = z - ref
            return h - (z @ w[ii]).to(h.dtype)

        return Custom(site, fn=fn)

    def value(self, ablated: Mapping[str, list[int]]) -> float:
        from .runtime.interventions import hooked

        edits = [self._edit(s, idx) for s, idx in ablated.items() if idx]
        total = 0.0
        with torch.no_grad(), hooked(self.model, edits):
            for c in self.chunks:
                out = self._forward(c.ids, c.mask) if edits else c.full_out
                total += float(self._per_prompt(out, c).double().sum())
        return total / self.n_prompts

    def ablated(self, feats: Mapping[str, set[int]] | None, *, complement: bool) -> dict[str, list[int]]:
        """Features to ablate at each SAE site: those outside ``feats`` (``None`` = keep all), or with
        ``complement`` those inside."""
        out = {}
        for s, sae in self.saes.items():
            keep = set() if feats is None else feats.get(s, set())
            every = range(int(sae.cfg.d_sae))
            out[s] = [i for i in every if (i in keep) == complement] if feats is not None else []
        return out


def feature_faithfulness(
    model: Any,
    inputs: Any,
    circuit: Any,
    saes: Any,
    *,
    ablation: Literal["zero", "mean"] = "mean",
    metric: MetricName | Callable[[Tensor, Tensor], Tensor] = "task",
    reference: Any = None,
    attention_mask: Any = None,
    answer: Any = None,
    distractor: Any = None,
    output_kind: Literal["categorical", "numerical"] | None = None,
    position: Literal["last", "all"] = "last",
    skip_first: int = 1,
    batch_size: int = 64,
) -> dict[str, float]:
    """Faithfulness and completeness of a *feature* circuit (Marks et al.'s node ablation).

    At every site of ``saes`` (``{site: sae}``, as :func:`circuitkit.sae.attach_saes`) the value becomes
    ``h - sum_{f ablated} (z_f - r_f) W_dec[f]`` with ``z = encode(h)``: the SAE's reconstruction with the ablated
    latents set to ``r_f`` plus the untouched error term. ``r_f`` is 0 (``"zero"``, the same edit as
    :class:`~circuitkit.runtime.Splice` with ``ablate=``) or feature f's mean code over the reference's positions
    after ``skip_first`` (``"mean"``; default reference: the inputs, real tokens only). Sites are edited in
    computation order, each on the already edited stream. The circuit's features are its nodes ``site/f{i}``
    (a Circuit: the endpoints of its edges); error nodes ``site/err`` are always kept, so ``m(empty)`` is every
    feature ablated with the errors kept and ``m(N)`` is the unedited model.

    Returns ``m_C, m_complement, m_full, m_empty, faithfulness, completeness, n_features``.
    """
    ev = _FeatureEvaluation(model, inputs, saes, ablation=ablation, metric=metric, reference=reference,
                            attention_mask=attention_mask, answer=answer, distractor=distractor,
                            output_kind=output_kind, position=position, skip_first=skip_first, batch_size=batch_size)
    feats = _feature_nodes(circuit)
    ev.check(feats)
    m_full = ev.value(ev.ablated(None, complement=False))
    m_empty = ev.value(ev.ablated({}, complement=False))
    m_c = ev.value(ev.ablated(feats, complement=False))
    m_k = ev.value(ev.ablated(feats, complement=True))
    return {"m_C": m_c, "m_complement": m_k, "m_full": m_full, "m_empty": m_empty,
            "faithfulness": _ratio(m_c, m_full, m_empty), "completeness": _ratio(m_k, m_full, m_empty),
            "n_features": sum(len(v) for v in feats.values())}


def rank_edges(circuit: Any, candidates: Sequence[Edge], *, rank_by: Literal["score", "path"] = "score") -> list[Edge]:
    """``candidates`` ordered best first by the circuit's ranking.

    ``rank_by="score"``: ``circuit.edges["score"]`` (the largest over duplicate rows); ``"path"``: the
    regularisation-path rank of :func:`circuitkit.evaluate.edge_scores` (entry alpha, then last score).
    Candidates the circuit does not rank come last; ties keep candidate (computation) order.
    """
    rank_by = _choice(rank_by, RANK_BY, "rank_by")
    if rank_by == "path":
        path = getattr(circuit, "path", None)
        if path is None or not len(path):
            raise ValueError("rank_by='path' needs a circuit with a regularisation path (circuit.path); "
                             "use rank_by='score'")
        scores = edge_scores(circuit)
    else:
        e = circuit.edges if hasattr(circuit, "edges") else circuit
        if not isinstance(e, pd.DataFrame) or "score" not in e:
            raise ValueError("rank_by='score' needs a Circuit or an edge table with a 'score' column")
        scores = e.groupby(["source", "target"])["score"].max()
        scores.index = [tuple(i) for i in scores.index]
    cset = set(candidates)
    bad = [k for k in scores.index if tuple(k) not in cset]
    if bad:
        raise ValueError(f"the circuit ranks edges {bad[:5]} that are not candidate edges of this model "
                         f"(unknown sites, or not in computation order)")
    d = {tuple(k): float(v) for k, v in scores.items()}
    if any(not math.isfinite(v) for v in d.values()):
        raise ValueError("edge scores contain NaN or inf")
    order = sorted(range(len(candidates)), key=lambda i: (-(d.get(candidates[i], -math.inf)), i))
    return [candidates[i] for i in order]


def faithfulness_curve(
    model: Any,
    circuit: Any,
    inputs: Any,
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    rank_by: Literal["score", "path"] = "score",
    ablation: Ablation = "mean",
    metric: MetricName | Callable[[Tensor, Tensor], Tensor] = "task",
    reference: Any = None,
    level: Level = "edge",
    attention_mask: Any = None,
    answer: Any = None,
    distractor: Any = None,
    output_kind: Literal["categorical", "numerical"] | None = None,
    position: Literal["last", "all"] = "last",
    sites: Sequence[str] | None = None,
    skip_first: int = 1,
    batch_size: int = 64,
) -> pd.DataFrame:
    """Faithfulness and completeness of the circuit's top edges at every fraction of the candidates.

    Returns one row per fraction: ``fraction, n_edges`` (``int(fraction * n_candidates)``), ``m_C``,
    ``m_complement`` (``m(N \\ C)``), ``faithfulness``, ``completeness``; ``attrs`` holds ``m_full``,
    ``m_empty``, ``n_candidates``, ``ablation``, ``metric``, ``level``, ``rank_by``. At ``level="node"`` the
    circuit at a fraction is the node set of its top edges. Other arguments: :func:`circuit_metric`.
    """
    fr = [float(f) for f in fractions]
    if not fr or any(not (0.0 <= f <= 1.0) for f in fr) or any(b <= a for a, b in itertools.pairwise(fr)):
        raise ValueError(f"fractions must be a non-empty increasing sequence in [0, 1], got {list(fractions)}")
    level = _choice(level, LEVELS, "level")
    ev = _Evaluation(model, inputs, ablation=ablation, metric=metric, reference=reference,
                     attention_mask=attention_mask, answer=answer, distractor=distractor, output_kind=output_kind,
                     position=position, sites=sites, skip_first=skip_first, batch_size=batch_size)
    ranked = rank_edges(circuit, ev.candidates, rank_by=rank_by)
    n_c = len(ranked)
    m_full, m_empty = ev.m_full(), ev.m_empty()
    rows = []
    cache: dict[int, tuple[float, float]] = {}
    for f in fr:
        k = int(f * n_c)
        if k not in cache:
            kept = ranked[:k]
            m_c = m_full if (k == n_c and level == "edge") else (
                m_empty if k == 0 else ev.value(ev.ablated(kept, level=level, complement=False)))
            m_k = m_empty if (k == n_c and level == "edge") else (
                m_full if k == 0 else ev.value(ev.ablated(kept, level=level, complement=True)))
            cache[k] = (m_c, m_k)
        m_c, m_k = cache[k]
        rows.append({"fraction": f, "n_edges": k, "m_C": m_c, "m_complement": m_k,
                     "faithfulness": _ratio(m_c, m_full, m_empty), "completeness": _ratio(m_k, m_full, m_empty)})
    df = pd.DataFrame(rows)
    df.attrs.update({"m_full": m_full, "m_empty": m_empty, "n_candidates": n_c, "ablation": ablation,
                     "metric": metric if isinstance(metric, str) else getattr(metric, "__name__", "callable"),
                     "level": level, "rank_by": rank_by, "n_prompts": ev.n_prompts})
    return df


def _area(curve: pd.DataFrame, y: np.ndarray, *, normalize: bool, log_x: bool) -> float:
    if not isinstance(curve, pd.DataFrame) or "fraction" not in curve:
        raise ValueError("expected a faithfulness_curve DataFrame with 'fraction' and 'faithfulness' columns")
    x = curve["fraction"].to_numpy(dtype=float)
    if len(x) < 2:
        raise ValueError(f"need at least two fractions to integrate a curve, got {len(x)}")
    if np.any(np.diff(x) <= 0):
        raise ValueError("curve fractions must be strictly increasing")
    if log_x:
        if np.any(x <= 0):
            raise ValueError("log_x=True needs fractions > 0")
        x = np.log(x)
    if normalize:
        x = (x - x[0]) / (x[-1] - x[0])
    if np.any(~np.isfinite(y)):
        return float("nan")
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))


def cpr(curve: pd.DataFrame, *, normalize: bool = True, log_x: bool = False) -> float:
    """Circuit performance ratio: trapezoidal area under faithfulness over the fraction axis (module
    docstring; ``normalize`` maps the grid onto ``[0, 1]``, so a perfect curve gives 1). Higher is better."""
    return _area(curve, curve["faithfulness"].to_numpy(dtype=float), normalize=normalize, log_x=log_x)


def cmd(curve: pd.DataFrame, *, normalize: bool = True, log_x: bool = False) -> float:
    """Circuit-model difference: trapezoidal area under ``|1 - faithfulness|`` (a perfect curve gives 0).
    Lower is better."""
    return _area(curve, np.abs(1.0 - curve["faithfulness"].to_numpy(dtype=float)), normalize=normalize,
                 log_x=log_x)


def plot_faithfulness(curves: Mapping[str, pd.DataFrame], *, y: Literal["faithfulness", "completeness"] = "faithfulness",
                      log_x: bool = True, title: str | None = None) -> Any:
    """One plotly figure with a line per method: ``y`` against the fraction of candidate edges kept.

    ``curves``: ``{method name: faithfulness_curve(...)}``. The legend shows each method's CPR and CMD
    (faithfulness) on the normalised grid. plotly is imported here, not at module import.
    """
    import plotly.graph_objects as go

    _choice(y, ("faithfulness", "completeness"), "y")
    if not isinstance(curves, Mapping) or not curves:
        raise ValueError("curves must be a non-empty {method: DataFrame} mapping")
    fig = go.Figure()
    for name, df in curves.items():
        if not isinstance(df, pd.DataFrame) or not {"fraction", y} <= set(df.columns):
            raise ValueError(f"curve {name!r} is not a faithfulness_curve DataFrame (needs 'fraction' and {y!r})")
        label = str(name)
        if y == "faithfulness" and len(df) >= 2:
            label += f" (CPR {cpr(df):.2f}, CMD {cmd(df):.2f})"
        fig.add_trace(go.Scatter(x=df["fraction"], y=df[y], mode="lines+markers", name=label,
                                 customdata=df[["n_edges"]].to_numpy() if "n_edges" in df else None,
                                 hovertemplate="fraction %{x}<br>" + y + " %{y:.3f}"
                                 + ("<br>edges %{customdata[0]}" if "n_edges" in df else "") + "<extra></extra>"))
    ideal = 1.0 if y == "faithfulness" else 0.0
    fig.add_hline(y=ideal, line_dash="dot", line_color="gray")
    fig.update_layout(title=title or f"{y.capitalize()} of the top edges", xaxis_title="fraction of candidate edges kept",
                      yaxis_title=y)
    if log_x:
        fig.update_xaxes(type="log")
    return fig


__all__ = ["ABLATIONS", "DEFAULT_FRACTIONS", "FEATURE_ABLATIONS", "LEVELS", "METRICS", "circuit_metric", "cmd", "cpr",
           "faithfulness_curve", "feature_faithfulness", "plot_faithfulness", "rank_edges"]
