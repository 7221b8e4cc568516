"""Influence of every edge of a fitted prediction-level `CircuitLasso` on its target ``y``.

A circuit fitted with ``CircuitLasso().fit(data, y)`` is a linear structural model on standardised columns:
every target column ``z_j = sum_i C[j, i] z_i`` (``C`` = ``coef_``, rows targets, columns earlier sources)
and ``y = sum_i w_i z_i`` (``w`` = ``y_coef_``). Edge weights (the coefficient blocks) say how strongly a
site predicts another; they do not say whether that dependency matters for ``y``. The **total effect** of
column ``i`` on ``y`` through the model is the sum over every directed path of the products of the
coefficients along it, which the triangular structure gives in one sparse back-substitution::

    t_i = w_i + sum_j C[j, i] t_j        i.e.   t = (I - C')^-1 w

(``t`` in standard deviations of ``y`` per standard deviation of column ``i``). The signal that flows over
the node edge ``u -> v`` is the part of ``u`` that reaches ``y`` through ``v``: with
``g_i = sum_{j in v} C[j, i] t_j`` for the columns ``i`` of ``u``, the edge carries ``c_r = sum_i z_ri g_i`` on
row ``r``. Its **influence** is the root mean square of ``c_r`` over the rows (``g_i = w_i`` for a direct edge
``u -> y``). That is the linear-model analogue of attribution patching's edge score (activation difference
times the gradient of the metric with respect to ``v``'s input), read off the fitted map without a backward
pass, and it is what :func:`edge_influence` returns. Ranking a circuit's edges by it puts the edges that
carry ``y`` first, where the regularisation path (``rank_by="path"``) puts the strongest site-to-site
regressions first, which need not lead to ``y`` at all.

``coef="path_end"`` (default) reads ``C`` and ``w`` at the smallest grid alpha, so that every edge the path
ever reaches can get an influence; ``coef="selected"`` uses the selected circuit (``coef_``, ``y_coef_``).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse.linalg import spsolve_triangular
from sklearn.utils.validation import check_is_fitted

from ..activations import Activations
from ..circuit import Circuit
from .design import column_stats

COEFS = ("path_end", "selected")


def _design(est: Any, X: Activations) -> np.ndarray:
    """The standardised ``[rows, n_columns]`` design in ``est.columns_`` order (component level)."""
    sites = list(dict.fromkeys(est.columns_["site"]))
    width = sum(X[s].shape[1] for s in sites)
    if width != len(est.columns_):
        raise ValueError(f"the activations' sites {sites} have {width} columns; the estimator was fitted on "
                         f"{len(est.columns_)}: pass the activations it was fitted on")
    Z = np.concatenate([np.asarray(X[s], dtype=np.float64) for s in sites], axis=1)
    mean, sd = column_stats(Z)
    Z -= mean
    if est.standardize:
        Z /= np.where(sd > 0, sd, 1.0)
    return Z


def total_effect(C: sp.spmatrix, w: np.ndarray) -> np.ndarray:
    """``t = (I - C')^-1 w`` for a strictly triangular ``C`` (rows targets, columns earlier sources)."""
    n = C.shape[0]
    if C.shape != (n, n) or w.shape != (n,):
        raise ValueError(f"C must be square [n, n] and w [n]; got {C.shape} and {w.shape}")
    A = (sp.identity(n, format="csr") - sp.csr_matrix(C).T).tocsr()
    if sp.tril(A, k=-1).nnz == 0:
        return spsolve_triangular(A, w, lower=False)
    if sp.triu(A, k=1).nnz == 0:
        return spsolve_triangular(A, w, lower=True)
    raise ValueError("coefficients are not triangular in column order: not a circuit fitted in computation order")


def edge_influence(est: Any, X: Activations, *, coef: Literal["path_end", "selected"] = "path_end",
                   y_index: int = 0) -> pd.DataFrame:
    """Influence on ``y`` of every node edge with a nonzero flow (module docstring).

    ``est`` is a fitted component-level :class:`~circuitkit.fit.lasso.CircuitLasso` with a prediction target
    (``fit(X, y)``), ``X`` the activations it was fitted on. Returns a frame ``source, target, influence,
    total_effect_target`` sorted by decreasing influence; edges into the prediction target have target
    ``"y"`` (or the name of ``y_index``'s node when there are several).
    """
    if not isinstance(X, Activations):
        raise TypeError(f"edge_influence needs the component-level Activations the estimator was fitted on, "
                        f"got {type(X).__name__}")
    C, w = _coefs(est, coef, y_index)
    t = total_effect(C, w)
    Z = _design(est, X)
    node = est.columns_["node"].to_numpy()
    names = list(dict.fromkeys(node))
    cols = {n: np.flatnonzero(node == n) for n in names}
    y_name = est.y_nodes_[y_index]
    C = sp.csr_matrix(C)  # row blocks (target columns) are sliced below
    rows = []
    flows = {}
    for v in names:  # g over all source columns for target node v: sum_{j in v} C[j, i] t_j
        jv = cols[v]
        if not np.any(t[jv]):
            continue
        flows[v] = np.asarray(C[jv].T @ t[jv]).ravel()
    flows[y_name] = w
    for v, g in flows.items():
        for u in names:
            iu = cols[u]
            gu = g[iu]
            if not np.any(gu):
                continue
            c = Z[:, iu] @ gu
            rows.append((u, v, float(np.sqrt(np.mean(c ** 2))), float(np.abs(t[cols[v]]).sum()) if v in cols else 1.0))
    out = pd.DataFrame(rows, columns=["source", "target", "influence", "total_effect_target"])
    return out.sort_values("influence", ascending=False, ignore_index=True)


def node_influence(est: Any, *, coef: Literal["path_end", "selected"] = "path_end", y_index: int = 0) -> pd.Series:
    """Total effect of every node on ``y`` through the fitted map: ``|t_i|`` for a one-column node (an SAE
    feature: the change of ``y``, in its standard deviations, per standard deviation of the feature, summed
    over every path), the L2 norm of ``t`` over the node's columns for a block (the RMS contribution when the
    block is whitened, e.g. :func:`circuitkit.activations.compress_sites`). Sorted by decreasing value;
    nodes with no path to ``y`` are 0. Works at component and feature level (no design needed)."""
    C, w = _coefs(est, coef, y_index)
    t = total_effect(C, w)
    node = est.columns_["node"].to_numpy()
    s = pd.Series(t ** 2).groupby(node, sort=False).sum() ** 0.5
    return s.sort_values(ascending=False, kind="mergesort").rename("influence")


def _coefs(est: Any, coef: str, y_index: int) -> tuple[sp.spmatrix, np.ndarray]:
    check_is_fitted(est, "coef_")
    if coef not in COEFS:
        raise ValueError(f"unknown coef {coef!r}; valid choices: {list(COEFS)}")
    y_path = getattr(est, "y_coef_path_", None)
    if y_path is None:
        raise ValueError("the estimator has no prediction target: fit it with CircuitLasso().fit(X, y)")
    if coef == "path_end":
        C, W = est.coef_path_[-1], y_path[-1]
    else:
        C, W = est.coef_, est.y_coef_
        if W is None:
            raise ValueError("the selected circuit has no prediction-target coefficients "
                             "(selection='stability' keeps none); use coef='path_end'")
    W = sp.csr_matrix(W)
    if not (isinstance(y_index, int) and 0 <= y_index < W.shape[0]):
        raise ValueError(f"y_index {y_index!r} out of range: the estimator has {W.shape[0]} prediction targets")
    return C, np.asarray(W[y_index].todense()).ravel()


def influence_circuit(est: Any, X: Activations, *, coef: Literal["path_end", "selected"] = "path_end",
                      y_index: int = 0) -> Circuit:
    """``est.circuit_`` with its edges replaced by every edge of :func:`edge_influence`, ``score`` = influence
    (``weight`` keeps the fitted edge weight where the selected circuit has the edge, else 0; ``selected``
    says whether it has), so that ``rank_by="score"`` ranks by influence on ``y``. ``meta["edge_score"]``
    says so. Edges of the selected circuit with no flow to ``y`` are not in it."""
    inf = edge_influence(est, X, coef=coef, y_index=y_index)
    base = est.circuit_
    w = base.edges[["source", "target", "weight"]] if len(base.edges) else pd.DataFrame(columns=["source", "target", "weight"])
    edges = inf.merge(w, on=["source", "target"], how="left")
    edges["selected"] = edges["weight"].notna()
    edges["weight"] = edges["weight"].astype(float).fillna(0.0)
    edges["score"] = edges["influence"]
    meta = dict(base.meta, edge_score=f"influence on y ({coef})")
    return Circuit(base.nodes, edges[["source", "target", "weight", "score", "influence", "selected"]], base.path, meta)


__all__ = ["edge_influence", "influence_circuit", "node_influence", "total_effect"]
