"""The one per-target selection rule of CircuitLasso, used whatever the solver.

* ``"ebic"`` / ``"bic"``: per target, the path point minimising ``n log(RSS_relaxed / n) + df (log n +
  2 gamma log p)`` (BIC: without ``log p``), where ``RSS_relaxed`` is the residual of an OLS refit on the
  Lasso support (a solver may supply it in ``PathResult.info["relaxed_rss"]``; otherwise it is computed here
  by :func:`relaxed_rss`); supports larger than the target's evidence (``max_df``) are not eligible; ties
  go to the sparser model.
* ``"n_edges"``: one grid point for every target, the one whose circuit's edge count is closest to
  ``n_edges`` (:func:`closest_count`).
* ``"min_edges"``: one grid point, the sparsest whose circuit has at least ``n_edges`` edges (the last
  point if none has that many; :func:`min_count`).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp

from .solvers import DenseCoefs, PathResult

PER_TARGET = ("bic", "ebic")
GLOBAL = ("n_edges", "min_edges")


def relaxed_rss(Xp, offset, y: np.ndarray, support: list[int], tss: float) -> float:
    """RSS of the least-squares refit of ``y`` (centred) on the ``support`` columns of the centred design.

    Uses the normal equations on the support: ``RSS = y'y - b' G^+ b`` with ``G = A'A`` and ``b = A'y``;
    for sparse columns the centring enters as ``G = X_S'X_S - n o o'`` and ``b = X_S'y`` (``sum(y) = 0``)."""
    if not support:
        return tss
    n = Xp.shape[0]
    if len(support) >= n - 1:
        return 0.0
    A = Xp[:, support]
    if sp.issparse(A):
        G = (A.T @ A).toarray()
        b = np.asarray(A.T @ y).ravel()
        if offset is not None:
            o = offset[support]
            G = G - n * np.outer(o, o)
    else:
        A = np.asarray(A)
        G = A.T @ A
        b = A.T @ y
    coef = np.linalg.lstsq(G, b, rcond=None)[0]
    return float(max(tss - b @ coef, 0.0))


def select_per_target(res: PathResult, *, n_rows: int, n_features: int, selection: str = "ebic",
                      ebic_gamma: float = 0.5, max_df: np.ndarray | None = None,
                      penalty_rows: int | None = None) -> np.ndarray:
    """Per-target (E)BIC on relaxed residuals, vectorised over targets: the grid index chosen for each target.

    ``crit = n log(RSS_relaxed / n) + df * (log n + 2 gamma log p)`` (``"bic"``: without the ``log p``
    term); the first (largest-alpha) minimum wins, so ties go to the sparser model -- the same rule as
    :func:`select_sequential`. Needs ``res.info["relaxed_rss"]``. ``penalty_rows``: the ``n`` of the ``log n``
    penalty when it differs from the rows fitted (a fit on a subset of rows that keeps the full data's
    penalty per parameter)."""
    if selection not in ("bic", "ebic"):
        raise ValueError(f"unknown selection {selection!r}; valid: ('bic', 'ebic')")
    rel = res.info.get("relaxed_rss")
    if rel is None:
        raise ValueError(f"PathResult from solver {res.solver!r} has no info['relaxed_rss']")
    pen = math.log(penalty_rows or n_rows) + (2 * ebic_gamma * math.log(max(n_features, 2)) if selection == "ebic"
                                              else 0.0)
    df = (res.coefs.row_nnz() if isinstance(res.coefs, DenseCoefs)               # [n_alphas, n_targets]
          else np.vstack([np.diff(c.indptr) for c in res.coefs]))
    crit = n_rows * np.log(np.maximum(rel / n_rows, 1e-12)) + df * pen
    if max_df is not None:  # supports larger than a target's evidence allows are not eligible
        crit = np.where(df <= np.asarray(max_df)[None, :], crit, np.inf)
        crit[0] = np.where(np.isfinite(crit[0]), crit[0], np.finfo(float).max)
    # first index within 1e-9 of the running minimum, as the sequential rule does
    best = crit[0].copy()
    chosen = np.zeros(crit.shape[1], dtype=np.int64)
    for k in range(1, crit.shape[0]):
        better = crit[k] < best - 1e-9
        chosen[better] = k
        best[better] = crit[k][better]
    return chosen


def select_sequential(Xp, offset, Yp, res: PathResult, *, n_rows: int, selection: str = "ebic",
                      ebic_gamma: float = 0.5, max_df: np.ndarray | None = None,
                      penalty_rows: int | None = None) -> np.ndarray:
    """Per-target (E)BIC when the solver gave no relaxed residuals: refit each distinct support by OLS
    (:func:`relaxed_rss`) and apply the rule of :func:`select_per_target` (``penalty_rows`` as there).
    ``Yp`` supports ``Yp[:, j]``."""
    if selection not in PER_TARGET:
        raise ValueError(f"unknown selection {selection!r}; valid: {PER_TARGET}")
    n_t = Yp.shape[1]
    max_df = np.full(n_t, np.iinfo(np.int64).max) if max_df is None else np.asarray(max_df)
    n_alpha = len(res.alphas)
    pen = math.log(penalty_rows or n_rows) + (2 * ebic_gamma * math.log(max(Xp.shape[1], 2)) if selection == "ebic"
                                              else 0.0)
    chosen = np.zeros(n_t, dtype=np.int64)
    rows_by_alpha = [c.tolil().rows for c in res.coefs]
    for j in range(n_t):
        y = Yp[:, j]
        tss = float(y @ y)
        best, best_k, seen = np.inf, 0, {}
        for k in range(n_alpha):
            support = tuple(rows_by_alpha[k][j])
            if k > 0 and len(support) > max_df[j]:
                continue
            if support not in seen:
                seen[support] = relaxed_rss(Xp, offset, y, list(support), tss)
            rss = seen[support]
            crit = n_rows * math.log(max(rss / n_rows, 1e-12)) + len(support) * pen
            if crit < best - 1e-9:
                best, best_k = crit, k
        chosen[j] = best_k
    return chosen


def closest_count(counts: np.ndarray, n: int) -> int:
    """The grid index whose edge count is closest to ``n`` (the first on ties: the sparser)."""
    return int(np.argmin(np.abs(np.asarray(counts) - n)))


def min_count(counts: np.ndarray, n: int) -> int:
    """The sparsest grid index (counts grow along the descending grid) with at least ``n`` edges; the last
    index if none has that many."""
    counts = np.asarray(counts)
    hit = np.flatnonzero(counts >= n)
    return int(hit[0]) if hit.size else len(counts) - 1


def pick_rows(coefs: list[sp.csr_matrix], chosen: np.ndarray) -> sp.csr_matrix:
    """Row ``j`` of ``coefs[chosen[j]]`` for every ``j``, as one CSR matrix (vectorised)."""
    chosen = np.asarray(chosen)
    out = None
    for k in np.unique(chosen):
        mask = sp.diags((chosen == k).astype(np.float64))
        part = mask @ coefs[int(k)]
        out = part if out is None else out + part
    if out is None:
        return sp.csr_matrix(coefs[0].shape)
    out = sp.csr_matrix(out)
    out.eliminate_zeros()
    return out


__all__ = ["GLOBAL", "PER_TARGET", "closest_count", "min_count", "pick_rows", "relaxed_rss", "select_per_target",
           "select_sequential"]
