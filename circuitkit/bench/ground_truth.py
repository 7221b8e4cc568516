"""Ground-truth benchmark: CircuitLasso vs EAP, EAP-IG (and exact patching) on Tracr models with known circuits.

Protocol (fixed seeds; every method sees the same prompts):

* **Tasks**: every embedded Tracr task (:func:`circuitkit.models.tracr.list_tracr_tasks`), or ``--tasks``.
  ``--holdout`` runs the holdout split instead (``list_tracr_tasks("holdout")``: programs built by
  ``scripts/build_tracr.py --holdout`` that no default was chosen on; disjoint from the suite). Every
  record carries ``split`` (``"suite"`` or ``"holdout"``).
  Sites are the task's non-empty components; truth is its weight-derived component edges.
* **Clean prompts**: ``n`` sequences from the task's sampler (``task.sample_inputs(n, seed=seed)``; the
  sampler draws the length too). **Corrupted prompts**: for each clean prompt, an independent draw from
  the same sampler with the same length (``sample_inputs(m, seed=seed + 1000 + length, length=length)``
  for the ``m`` clean prompts of that length), paired in order.
* **Methods**: ``circuitlasso`` (capture of the clean prompts at every non-BOS position + default
  ``CircuitLasso``; it never sees the corrupted prompts), ``circuitlasso-group`` (the same capture +
  default ``GroupCircuitLasso``; not in the default list, ask for it with ``--methods``), ``eap``, ``eap-ig`` (``--ig-steps``), and
  ``patching`` (exact edge patching, the reference the attribution methods approximate).
* **Metrics** (:mod:`circuitkit.evaluate`): AUROC over all candidate edges; precision = recall at
  ``|true|``; SHD of the top-``|true|`` edges (the same rule for every method); plus ``shd_selected``,
  the SHD of each method's own edge set (CircuitLasso: its eBIC circuit; attribution methods: every edge
  with a nonzero score).
* **Time**: wall seconds of each method call, which includes its own forward passes (CircuitLasso: the
  nnsight capture and the fit; attribution methods: their forward and backward passes). Each method is
  run once on a few prompts before timing so that imports and first-call costs are not counted.

Run::

    python -m circuitkit bench ground-truth --json outputs/ground_truth.json
    python -m circuitkit bench ground-truth --tasks hist sort --n-samples 100 --quick
    python -m circuitkit bench ground-truth --holdout --json outputs/ground_truth_holdout.json
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

logger = logging.getLogger(__name__)

DEFAULT_METHODS = ("circuitlasso", "eap", "eap-ig", "patching")
QUICK_TASKS = ("hist", "sort")
DEFAULT_N = 400
DEFAULT_IG_STEPS = 8
METRIC_COLS = ["auroc", "shd", "precision", "recall", "shd_selected", "seconds"]


def make_prompts(task: Any, n: int, *, seed: int = 0) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Paired clean/corrupted token batches, one batch per sequence length (module docstring's rule)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    clean = task.sample_inputs(n, seed=seed)
    by_len: dict[int, list[list]] = {}
    for x in clean:
        by_len.setdefault(len(x), []).append(x)
    cb, kb = [], []
    for length in sorted(by_len):
        xs = by_len[length]
        ks = task.sample_inputs(len(xs), seed=seed + 1000 + length, length=length)
        cb.append(task.encode(xs))
        kb.append(task.encode(ks))
    return cb, kb


def run_task(task: Any, *, methods: Sequence[str] = DEFAULT_METHODS, n_samples: int = DEFAULT_N,
             ig_steps: int = DEFAULT_IG_STEPS, seed: int = 0, split: str = "suite") -> tuple[list[dict], dict[str, Any]]:
    """Run ``methods`` on one task; returns the metric records and the circuits by method."""
    from ..baselines import get_method
    from ..evaluate import candidate_edges, edge_metrics

    torch.manual_seed(seed)
    np.random.seed(seed)
    clean, corrupt = make_prompts(task, n_samples, seed=seed)
    cands = candidate_edges(task.sites)
    records, circuits = [], {}
    for m in methods:
        fn = get_method(m)
        kw: dict[str, Any] = {"sites": task.sites, "output_kind": task.output_kind}
        if m == "eap-ig":
            kw["steps"] = ig_steps
        t0 = time.perf_counter()
        circ = fn(task.model, clean, corrupt, **kw)
        secs = time.perf_counter() - t0
        met = edge_metrics(circ, task.true_edges, candidates=cands)
        circuits[m] = circ
        records.append({"task": task.name, "split": split, "method": m, "auroc": met["auroc"], "shd": met["shd"],
                        "precision": met["precision"], "recall": met["recall"],
                        "shd_selected": met["shd_selected"], "seconds": secs, "n_true": met["n_true"],
                        "n_candidates": met["n_candidates"], "n_prompts": n_samples,
                        "ig_steps": ig_steps if m == "eap-ig" else None})
    return records, circuits


def _warmup(methods: Sequence[str], task: Any, ig_steps: int) -> None:
    """Run every method once on a few prompts so first-call costs are not timed."""
    run_task(task, methods=methods, n_samples=8, ig_steps=ig_steps, seed=12345)


def run_benchmark(tasks: Sequence[str] | None = None, *, methods: Sequence[str] = DEFAULT_METHODS,
                  n_samples: int = DEFAULT_N, ig_steps: int = DEFAULT_IG_STEPS, seed: int = 0,
                  progress: bool = False, split: str = "suite") -> tuple[pd.DataFrame, dict[str, dict[str, Any]]]:
    """The benchmark as a function (the CLI and the notebook call this).

    ``split`` picks the task set (``"suite"`` or ``"holdout"``, see :data:`circuitkit.models.tracr.SPLITS`);
    ``tasks`` must be names of that split.

    Returns ``(records, circuits)``: one row per task x method, and ``circuits[task][method]``.
    """
    from tqdm.auto import tqdm

    from ..baselines import get_method
    from ..models.tracr import list_tracr_tasks, load_tracr_task

    available = list_tracr_tasks(split)
    names = list(tasks) if tasks else available
    bad = [t for t in names if t not in available]
    if bad:
        raise ValueError(f"unknown tasks {bad}; available Tracr tasks of split {split!r}: {available}")
    if not names:
        raise ValueError(f"no Tracr tasks found for split {split!r} (see circuitkit.models.tracr.data_dir)")
    for m in methods:
        get_method(m)
    if not (isinstance(ig_steps, int) and ig_steps >= 1):
        raise ValueError(f"ig_steps must be an int >= 1, got {ig_steps!r}")
    loaded = [load_tracr_task(t) for t in names]
    for t in loaded:
        if not t.true_edges:
            raise ValueError(f"task {t.name!r} has no ground-truth edges; edge metrics need at least one")
    _warmup(methods, loaded[0], ig_steps)
    rows, circuits = [], {}
    for task in tqdm(loaded, desc="ground-truth", disable=not progress):
        recs, circs = run_task(task, methods=methods, n_samples=n_samples, ig_steps=ig_steps, seed=seed,
                               split=split)
        rows.extend(recs)
        circuits[task.name] = circs
    return pd.DataFrame(rows), circuits


def summarize(records: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, float]]:
    """Per-method means and each method's total time relative to CircuitLasso's."""
    means = records.groupby("method", sort=False)[METRIC_COLS].mean()
    total = records.groupby("method", sort=False)["seconds"].sum()
    ratio = {}
    if "circuitlasso" in total.index and total["circuitlasso"] > 0:
        ratio = {m: float(total[m] / total["circuitlasso"]) for m in total.index if m != "circuitlasso"}
    return means, ratio


def format_tables(records: pd.DataFrame) -> str:
    means, ratio = summarize(records)
    fmt = {"auroc": "{:.3f}", "shd": "{:.2f}", "precision": "{:.3f}", "recall": "{:.3f}",
           "shd_selected": "{:.1f}", "seconds": "{:.3f}"}
    lines = []
    t = records[["task", "method", *METRIC_COLS, "n_true", "n_candidates"]].copy()
    for c, f in fmt.items():
        t[c] = t[c].map(lambda v, f=f: f.format(v) if pd.notna(v) else "nan")
    lines.append(t.to_string(index=False))
    lines.append("")
    lines.append("means over tasks:")
    mm = means.copy()
    for c, f in fmt.items():
        mm[c] = mm[c].map(lambda v, f=f: f.format(v) if pd.notna(v) else "nan")
    lines.append(mm.to_string())
    if ratio:
        lines.append("")
        lines.append("total time relative to CircuitLasso (baseline seconds / CircuitLasso seconds):")
        for m, r in ratio.items():
            lines.append(f"  {m:>12s}: {r:.2f}x")
    return "\n".join(lines)


def add_arguments(parser) -> None:
    parser.add_argument("--tasks", nargs="+", default=None, help="Tracr task names (default: all)")
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS),
                        help=f"discovery methods (default: {' '.join(DEFAULT_METHODS)}; any registered name, "
                             "e.g. circuitlasso-group)")
    parser.add_argument("--n-samples", type=int, default=None, help=f"prompts per task (default {DEFAULT_N})")
    parser.add_argument("--ig-steps", type=int, default=DEFAULT_IG_STEPS,
                        help=f"EAP-IG interpolation steps (default {DEFAULT_IG_STEPS})")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    parser.add_argument("--holdout", action="store_true",
                        help="run the holdout split (Tracr tasks no default was chosen on) instead of the suite")
    parser.add_argument("--quick", action="store_true",
                        help=f"small run: tasks {' '.join(QUICK_TASKS)} unless --tasks, 64 prompts unless --n-samples")


def main(args) -> int:
    tasks = args.tasks
    n = args.n_samples
    split = "holdout" if getattr(args, "holdout", False) else "suite"
    if getattr(args, "quick", False) and split == "suite":
        tasks = tasks or list(QUICK_TASKS)
        n = n or 64
    elif getattr(args, "quick", False):
        n = n or 64
    n = n or DEFAULT_N
    records, _ = run_benchmark(tasks, methods=args.methods, n_samples=n, ig_steps=args.ig_steps, seed=args.seed,
                               progress=True, split=split)
    print(format_tables(records))
    if getattr(args, "json", None):
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        recs = [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
                for r in records.to_dict("records")]
        path.write_text(json.dumps(recs, indent=1, default=float) + "\n")
        print(f"\nwrote {len(recs)} records to {path}")
    return 0


# -- figures (the notebook calls these) ---------------------------------------------------------------


def truth_circuit(task: Any):
    """The task's ground truth as a :class:`~circuitkit.circuit.Circuit` (weight 1 per true edge)."""
    from ..circuit import Circuit

    return Circuit.from_edges([(u, v, 1.0) for u, v in task.true_edges], nodes=task.sites,
                              meta={"method": "truth", "task": task.name})


def top_circuit(circuit: Any, k: int, *, sites: Sequence[str]):
    """The ``k`` best-ranked candidate edges of ``circuit`` (the same rule as the SHD), scored by rank."""
    from ..circuit import Circuit
    from ..evaluate import edge_scores

    s = edge_scores(circuit).sort_values(ascending=False, kind="mergesort").head(k)
    rows = [(u, v, float(sc)) for (u, v), sc in s.items() if sc > 0]
    return Circuit.from_edges(rows, nodes=list(sites), meta={**circuit.meta, "top_k": k})


def plot_roc(circuits: dict[str, Any], task: Any):
    """Plotly ROC curves of each method's edge scores on ``task``."""
    import plotly.graph_objects as go

    from ..evaluate import candidate_edges, edge_auroc, edge_scores, roc_curve

    cands = candidate_edges(task.sites)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot", "color": "#999"},
                             name="chance", hoverinfo="skip"))
    for m, circ in circuits.items():
        sc = edge_scores(circ)
        roc = roc_curve(sc, task.true_edges, candidates=cands)
        auc = edge_auroc(sc, task.true_edges, candidates=cands)
        fig.add_trace(go.Scatter(x=roc["fpr"], y=roc["tpr"], mode="lines+markers", line_shape="linear",
                                 name=f"{m} (AUROC {auc:.2f})"))
    fig.update_layout(title=f"{task.name}: edge ROC ({len(task.true_edges)} true of {len(cands)} candidates)",
                      xaxis_title="false positive rate", yaxis_title="true positive rate", width=560, height=460,
                      xaxis={"range": [-0.02, 1.02]}, yaxis={"range": [-0.02, 1.02]})
    return fig


def plot_side_by_side(left: Any, right: Any, *, titles: Sequence[str] = ("true circuit", "recovered")):
    """Two circuits drawn next to each other (``circuitkit.viz.plot_circuit`` traces when available,
    otherwise a plain layered drawing)."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=list(titles), horizontal_spacing=0.06)
    for col, circ in ((1, left), (2, right)):
        for tr in _circuit_traces(circ):
            fig.add_trace(tr, row=1, col=col)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(showlegend=False, height=520, width=1100)
    return fig


def _circuit_traces(circ: Any) -> list:
    try:
        from ..viz.figure import plot_circuit

        return list(plot_circuit(circ, show_isolated=True, show_text=True).data)
    except ImportError:  # pragma: no cover - viz is part of circuitkit, kept optional here
        return _simple_traces(circ)


def _simple_traces(circ: Any) -> list:
    import plotly.graph_objects as go

    from ..sites import parse_site

    nodes = circ.node_names
    cols: dict[tuple, list[str]] = {}
    for n in nodes:
        r = parse_site(n).rank
        cols.setdefault(r, []).append(n)
    pos = {}
    for x, r in enumerate(sorted(cols)):
        for y, n in enumerate(cols[r]):
            pos[n] = (x, y - (len(cols[r]) - 1) / 2)
    ex, ey = [], []
    for u, v in zip(circ.edges["source"], circ.edges["target"]):
        ex += [pos[u][0], pos[v][0], None]
        ey += [pos[u][1], pos[v][1], None]
    return [go.Scatter(x=ex, y=ey, mode="lines", line={"color": "#2563eb"}, hoverinfo="skip"),
            go.Scatter(x=[pos[n][0] for n in nodes], y=[pos[n][1] for n in nodes], mode="markers+text",
                       text=nodes, textposition="top center", marker={"size": 14})]


__all__ = [
    "add_arguments",
    "format_tables",
    "main",
    "make_prompts",
    "plot_roc",
    "plot_side_by_side",
    "run_benchmark",
    "run_task",
    "summarize",
    "top_circuit",
    "truth_circuit",
]
