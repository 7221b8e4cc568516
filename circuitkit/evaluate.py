"""Structural metrics of a recovered circuit against known edges.

Candidate edges
---------------
For a set of sites, the candidates are every ordered pair ``(u, v)`` with ``u`` computed strictly before
``v`` (:func:`circuitkit.sites.precedes`; heads of one layer never connect). Every method is scored over
the same candidates; a candidate a method gives no score gets score 0.

Metrics (all from edge *scores*, so every method is treated alike)
------------------------------------------------------------------
* ``auroc``: area under the ROC curve of the scores over all candidates (Mann-Whitney; ties count 1/2).
  Needs no threshold.
* ``precision`` / ``recall`` at ``k = |true edges|``: the ``k`` highest-scoring candidates are predicted.
  Ties at the cut-off are broken *in expectation* (uniformly at random), so counts can be fractional and
  no method gains from a lucky candidate order. With ``k = |true|`` precision equals recall.
* ``shd``: structural Hamming distance (additions + deletions; edges all point forward, so there are
  no reversals) between that top-``|true|`` prediction and the truth, i.e. ``2 (k - TP)``.
* ``shd_selected`` (:func:`shd`): the SHD of a method's *own* selected edge set (e.g. CircuitLasso's
  eBIC circuit), reported separately because the selection rule differs between methods.

Ranking a CircuitLasso path
---------------------------
:func:`edge_scores` turns a :class:`~circuitkit.circuit.Circuit` into candidate scores. With a
regularisation path (CircuitLasso), an edge ranks by the **largest alpha at which it enters the path**,
ties broken by its score at the least-regularised point; without a path, by ``edges["score"]``.

Faithfulness and completeness (ablation metrics) are in :func:`faithfulness`.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .sites import parse_site, precedes, sort_sites

logger = logging.getLogger(__name__)

Edge = tuple[str, str]


def candidate_edges(sites: Iterable[str]) -> list[Edge]:
    """All ordered pairs ``(u, v)`` of ``sites`` with ``u`` strictly before ``v``, in site order."""
    s = sort_sites(sites)
    return [(u, v) for j, v in enumerate(s) for u in s[:j] if precedes(u, v)]


def _edges_list(edges: Iterable[Any], what: str) -> list[Edge]:
    out = []
    for e in edges:
        if not (isinstance(e, (tuple, list)) and len(e) == 2):
            raise ValueError(f"{what} must be (source, target) pairs, got {e!r}")
        out.append((str(e[0]), str(e[1])))
    return out


def _check_truth(true_edges: Iterable[Any], candidates: Sequence[Edge]) -> set[Edge]:
    truth = set(_edges_list(true_edges, "true edges"))
    if not truth:
        raise ValueError("the ground truth has no edges; edge metrics need at least one true edge")
    cand = set(candidates)
    bad = sorted(truth - cand)
    if bad:
        raise ValueError(
            f"true edges {bad[:5]} are not candidate edges (unknown sites, or not in computation order); "
            f"the candidate sites are {sorted({x for e in candidates for x in e})}"
        )
    return truth


def _scores_vector(scores: Mapping[Edge, float] | pd.Series, candidates: Sequence[Edge]) -> np.ndarray:
    if isinstance(scores, pd.Series):
        scores = dict(scores.items())
    cand = set(candidates)
    bad = [e for e in scores if tuple(e) not in cand]
    if bad:
        raise ValueError(f"scored edges {bad[:5]} are not candidate edges of the ground truth's sites")
    v = np.array([float(scores.get(e, 0.0)) for e in candidates], dtype=float)
    if not np.all(np.isfinite(v)):
        raise ValueError("edge scores contain NaN or inf")
    return v


def _rank_avg(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties averaged."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=float)
    xs = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and xs[j + 1] == xs[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def edge_auroc(scores: Mapping[Edge, float] | pd.Series, true_edges: Iterable[Edge], *,
               candidates: Sequence[Edge]) -> float:
    """AUROC of ``scores`` (higher = more likely an edge) over ``candidates`` (ties count 1/2).

    Returns NaN (with a warning) when every candidate is a true edge (no negatives).
    """
    candidates = list(candidates)
    truth = _check_truth(true_edges, candidates)
    s = _scores_vector(scores, candidates)
    y = np.array([e in truth for e in candidates])
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_neg == 0:
        warnings.warn("every candidate edge is a true edge; AUROC is undefined (NaN)", stacklevel=2)
        return float("nan")
    r = _rank_avg(s)
    return float((r[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(scores: Mapping[Edge, float] | pd.Series, true_edges: Iterable[Edge], *,
              candidates: Sequence[Edge]) -> pd.DataFrame:
    """ROC points ``(fpr, tpr, threshold)``, from (0, 0) to (1, 1); tied scores form one step."""
    candidates = list(candidates)
    truth = _check_truth(true_edges, candidates)
    s = _scores_vector(scores, candidates)
    y = np.array([e in truth for e in candidates])
    n_pos, n_neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    thr = np.unique(s)[::-1]
    rows = [(0.0, 0.0, float("inf"))]
    for t in thr:
        pred = s >= t
        rows.append((float((pred & ~y).sum() / n_neg), float((pred & y).sum() / n_pos), float(t)))
    return pd.DataFrame(rows, columns=["fpr", "tpr", "threshold"])


def _expected_tp_at_k(s: np.ndarray, y: np.ndarray, k: int) -> float:
    """Expected true positives among the top ``k`` scores, ties at the cut-off broken uniformly."""
    if k <= 0:
        return 0.0
    k = min(k, len(s))
    cut = np.sort(s)[::-1][k - 1]
    above = s > cut
    tie = s == cut
    n_above = int(above.sum())
    slots = k - n_above
    tp = float((above & y).sum())
    if slots > 0:
        tp += slots * float((tie & y).sum()) / float(tie.sum())
    return tp


def precision_recall_at_k(scores: Mapping[Edge, float] | pd.Series, true_edges: Iterable[Edge], *,
                          candidates: Sequence[Edge], k: int | None = None) -> tuple[float, float]:
    """Precision and recall of the top-``k`` candidates (default ``k = |true|``; ties in expectation)."""
    candidates = list(candidates)
    truth = _check_truth(true_edges, candidates)
    s = _scores_vector(scores, candidates)
    y = np.array([e in truth for e in candidates])
    k = len(truth) if k is None else int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    tp = _expected_tp_at_k(s, y, k)
    return tp / min(k, len(candidates)), tp / len(truth)


def shd(predicted: Iterable[Edge], true_edges: Iterable[Edge]) -> int:
    """Structural Hamming distance between two directed edge sets: ``|pred - true| + |true - pred|``.

    (Reversals cannot occur between graphs whose edges all follow computation order.)
    """
    p = set(_edges_list(predicted, "predicted edges"))
    t = set(_edges_list(true_edges, "true edges"))
    return len(p - t) + len(t - p)


def edge_scores(circuit: Any, *, candidates: Sequence[Edge] | None = None) -> pd.Series:
    """Candidate scores from a :class:`~circuitkit.circuit.Circuit` (module docstring: path ranking).

    Returns a Series indexed by ``(source, target)`` (only edges the circuit mentions; missing = 0).
    """
    path = getattr(circuit, "path", None)
    if path is not None and len(path):
        p = path[path["score"] > 0]
        entry = p.groupby(["source", "target"])["alpha"].max()
        a_min = float(path["alpha"].min())
        last = p[np.isclose(p["alpha"], a_min, rtol=1e-12, atol=0)].groupby(["source", "target"])["score"].max()
        df = pd.DataFrame({"entry": entry}).join(last.rename("last")).fillna({"last": 0.0})
        df = df.sort_values(["entry", "last"], ascending=[True, True], kind="mergesort")
        # lexicographic (entry alpha, last score) -> a strictly positive rank score; equal pairs tie
        keys = list(zip(df["entry"].to_numpy(), df["last"].to_numpy()))
        ranks, prev, r = [], None, 0
        for key in keys:
            if key != prev:
                r += 1
                prev = key
            ranks.append(float(r))
        out = pd.Series(ranks, index=df.index, dtype=float)
    else:
        e = circuit.edges
        out = pd.Series(e["score"].to_numpy(dtype=float),
                        index=pd.MultiIndex.from_arrays([e["source"], e["target"]]))
        out = out.groupby(level=[0, 1]).max()
    out.index = [tuple(i) for i in out.index]
    if candidates is not None:
        keep = set(candidates)
        out = out[[i in keep for i in out.index]] if len(out) else out
    return out


def _site_nodes(circuit: Any) -> set[str]:
    nodes = circuit.nodes
    kinds = nodes["kind"] if "kind" in nodes else pd.Series(["site"] * len(nodes))
    return set(nodes.loc[kinds.to_numpy() == "site", "node"])


def edge_metrics(
    circuit_or_scores: Any,
    true_edges: Iterable[Edge],
    *,
    candidates: Sequence[Edge] | None = None,
    sites: Iterable[str] | None = None,
    k: int | None = None,
) -> dict[str, float]:
    """AUROC, SHD (top-``|true|`` rule), precision and recall at ``|true|`` (module docstring).

    ``circuit_or_scores``: a Circuit (scores via :func:`edge_scores`) or a mapping ``{(u, v): score}``.
    The candidate edges come from ``candidates``, or from ``sites``, or from the circuit's site nodes.
    A circuit whose site nodes differ from the truth's sites is an error (the two graphs would not be
    comparable). Returns ``auroc, shd, precision, recall, k, n_true, n_candidates`` and, for a Circuit,
    ``shd_selected`` (the SHD of its own edge set, edges with score > 0).
    """
    if candidates is None and sites is not None:
        candidates = candidate_edges(sites)
    is_circuit = hasattr(circuit_or_scores, "edges") and hasattr(circuit_or_scores, "nodes")
    if is_circuit:
        nodes = _site_nodes(circuit_or_scores)
        if candidates is None:
            candidates = candidate_edges(nodes)
        truth_sites = {x for e in candidates for x in e} | {x for e in _edges_list(true_edges, "true edges")
                                                            for x in e}
        if nodes != truth_sites:
            raise ValueError(
                f"mismatched site sets between prediction and truth: only in the prediction "
                f"{sorted(nodes - truth_sites)}, only in the truth {sorted(truth_sites - nodes)}"
            )
        scores = edge_scores(circuit_or_scores)
    else:
        if candidates is None:
            raise ValueError("pass candidates= or sites= when scoring a plain {edge: score} mapping")
        scores = circuit_or_scores
    candidates = list(candidates)
    for u, v in candidates:
        parse_site(u), parse_site(v)
    truth = _check_truth(true_edges, candidates)
    s = _scores_vector(scores, candidates)
    y = np.array([e in truth for e in candidates])
    kk = len(truth) if k is None else int(k)
    tp = _expected_tp_at_k(s, y, kk)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        auroc = edge_auroc(dict(zip(candidates, s)), truth, candidates=candidates)
    res = {
        "auroc": auroc,
        "shd": float(kk - tp + len(truth) - tp),
        "precision": tp / min(kk, len(candidates)),
        "recall": tp / len(truth),
        "k": kk,
        "n_true": len(truth),
        "n_candidates": len(candidates),
    }
    if is_circuit:
        e = circuit_or_scores.edges
        sel = [(a, b) for a, b, sc in zip(e["source"], e["target"], e["score"]) if sc > 0]
        res["shd_selected"] = float(shd(sel, truth))
    return res


# --------------------------------------------------------------------------------------------------
# ablation metrics
# --------------------------------------------------------------------------------------------------


def faithfulness(m_circuit: float, m_full: float, m_empty: float) -> float:
    """``(m(C) - m(empty)) / (m(M) - m(empty))`` (Marks et al.); ideal 1. Completeness is the same ratio
    with ``m(M \\ C)`` in place of ``m(C)``; ideal 0. NaN when the full and empty models agree."""
    den = m_full - m_empty
    if den == 0 or not math.isfinite(den):
        return float("nan")
    return float((m_circuit - m_empty) / den)



def task_accuracy(model: Any, tok: Any, df: pd.DataFrame, *, batch_size: int = 256) -> dict[str, float]:
    """Next-token accuracy on a template frame (``prompt``/``answer``/``distractor`` columns).

    Returns ``top1`` (answer is the argmax over the vocabulary), ``logit_diff_acc`` (logit(answer) >
    logit(distractor)), ``mean_logit_diff`` and ``n``.
    """
    import torch

    from .runtime.capturing import next_token_logits

    logits = next_token_logits(model, df["prompt"].tolist(), tokenizer=tok, batch_size=batch_size)
    ans = torch.tensor(tok.convert_tokens_to_ids(df["answer"].tolist()))
    dis = torch.tensor(tok.convert_tokens_to_ids(df["distractor"].tolist()))
    rows = torch.arange(len(df))
    ld = logits[rows, ans] - logits[rows, dis]
    return {
        "top1": float((logits.argmax(-1) == ans).float().mean()),
        "logit_diff_acc": float((ld > 0).float().mean()),
        "mean_logit_diff": float(ld.mean()),
        "n": len(df),
    }


__all__ = [
    "candidate_edges",
    "edge_auroc",
    "edge_metrics",
    "edge_scores",
    "faithfulness",
    "precision_recall_at_k",
    "roc_curve",
    "shd",
    "task_accuracy",
]
