"""Lasso solvers behind one small interface.

Every solver computes, for each target column ``y`` of a block ``Y`` and every ``alpha`` of a
descending grid, the scikit-learn Lasso objective on *standardised* data::

    min_w  1/(2 n) ||y - X w||^2 + alpha ||w||_1

where the effective design is ``X - offset`` (``offset`` broadcast over rows): dense ``X`` arrives already
centred and scaled (``offset`` is ``None``); sparse ``X`` arrives column-scaled with its column means in
``offset`` so sparsity survives (celer's ``X_offset``/``X_scale`` mechanism). Targets arrive centred and
scaled, so no intercept is fitted.

Solvers register by name (:func:`register_solver`) and are picked with ``CircuitLasso(solver=...)``.
``"celer"`` is the reference: one ``celer_path`` per target with warm starts along the grid.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import scipy.sparse as sp
from joblib import Parallel, delayed

logger = logging.getLogger(__name__)


@dataclass
class PathResult:
    """Coefficients of one block along the grid.

    ``coefs[k]`` is a CSR matrix ``[n_targets, n_features]`` at ``alphas[k]`` (rows targets, columns
    sources); ``rss[k, j]`` is the residual sum of squares of target ``j`` (standardised units);
    ``gaps`` the final duality gaps; ``skipped`` marks targets that were not fitted (all zero).
    """

    alphas: np.ndarray
    coefs: list[sp.csr_matrix]
    rss: np.ndarray
    gaps: np.ndarray
    skipped: np.ndarray
    solver: str
    info: dict = field(default_factory=dict)


class Solver(Protocol):
    name: str

    def path(
        self,
        X: np.ndarray | sp.spmatrix,
        Y: np.ndarray,
        alphas: np.ndarray,
        *,
        offset: np.ndarray | None,
        tol: float,
        max_iter: int,
        n_jobs: int,
    ) -> PathResult: ...


_SOLVERS: dict[str, Callable[[], Solver]] = {}
#: Solvers that live in their own modules and register on first use (heavy imports stay lazy).
_LAZY_SOLVERS = {"fast": "circuitkit.fit.fast", "torch": "circuitkit.fit.gpu", "dask": "circuitkit.fit.distributed"}


def register_solver(name: str, factory: Callable[[], Solver]) -> None:
    """Register a solver factory under ``name`` (replaces an earlier one)."""
    _SOLVERS[name] = factory


def available_solvers() -> list[str]:
    return sorted(set(_SOLVERS) | set(_LAZY_SOLVERS))


def get_solver(name: str) -> Solver:
    if name not in _SOLVERS and name in _LAZY_SOLVERS:
        import importlib

        importlib.import_module(_LAZY_SOLVERS[name])
    if name not in _SOLVERS:
        raise ValueError(f"unknown solver {name!r}; valid solvers are {available_solvers()}")
    return _SOLVERS[name]()


def residual_ss(X, y: np.ndarray, w: np.ndarray, offset: np.ndarray | None) -> float:
    pred = X @ w
    if offset is not None:
        pred = pred - float(offset @ w)
    r = y - np.asarray(pred).ravel()
    return float(r @ r)


def _celer_chunk(X, Y: np.ndarray, cols: list[int], alphas: np.ndarray, offset, tol: float, max_iter: int):
    from celer import celer_path

    n_feat = X.shape[1]
    out = []
    kwargs = {}
    if offset is not None:
        kwargs = {"X_offset": offset.astype(X.dtype), "X_scale": np.ones(n_feat, dtype=X.dtype)}
    for j in cols:
        y = np.ascontiguousarray(Y[:, j], dtype=X.dtype)
        _, coefs, gaps = celer_path(X, y, "lasso", alphas=alphas, tol=tol, max_iter=max_iter, prune=True, **kwargs)
        rss = np.array([residual_ss(X, y, coefs[:, k], offset) for k in range(len(alphas))])
        out.append((j, coefs.T.copy(), rss, np.asarray(gaps)))
    return out


def _rows_to_csr(rows: list[tuple[np.ndarray, np.ndarray]], n_features: int) -> sp.csr_matrix:
    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(i) for i, _ in rows])
    indices = np.concatenate([i for i, _ in rows]) if rows else np.empty(0, np.int64)
    data = np.concatenate([v for _, v in rows]) if rows else np.empty(0)
    return sp.csr_matrix((data, indices, indptr), shape=(len(rows), n_features))


class CelerSolver:
    """Reference solver: one ``celer.celer_path`` per target (warm-started along the grid), targets
    spread over ``n_jobs`` joblib processes."""

    name = "celer"

    def path(self, X, Y, alphas, *, offset=None, tol=1e-6, max_iter=50, n_jobs=1) -> PathResult:
        n_targets = Y.shape[1]
        alphas = np.asarray(alphas, dtype=np.float64)
        if sp.issparse(X):
            X = sp.csc_matrix(X)
        else:
            X = np.asfortranarray(X)
        cols = list(range(n_targets))
        if n_jobs == 1 or n_targets < 8:
            parts = [_celer_chunk(X, Y, cols, alphas, offset, tol, max_iter)]
        else:
            n_chunks = max(1, min(n_targets, 4 * abs(n_jobs if n_jobs > 0 else 8)))
            chunks = [c.tolist() for c in np.array_split(np.arange(n_targets), n_chunks) if len(c)]
            parts = Parallel(n_jobs=n_jobs)(
                delayed(_celer_chunk)(X, Y[:, c], list(range(len(c))), alphas, offset, tol, max_iter) for c in chunks
            )
            parts = [[(chunks[i][j], w, r, g) for (j, w, r, g) in part] for i, part in enumerate(parts)]
        n_alphas = len(alphas)
        rows: list[list[tuple[np.ndarray, np.ndarray]]] = [[(np.empty(0, np.int64), np.empty(0))] * n_targets
                                                           for _ in range(n_alphas)]
        rss = np.zeros((n_alphas, n_targets))
        gaps = np.zeros((n_alphas, n_targets))
        for part in parts:
            for j, w, r, g in part:
                for k in range(n_alphas):
                    nz = np.flatnonzero(w[k])
                    rows[k][j] = (nz, w[k, nz])
                rss[:, j] = r
                gaps[:, j] = g
        coefs = [_rows_to_csr(rows[k], X.shape[1]) for k in range(n_alphas)]
        return PathResult(alphas, coefs, rss, gaps, np.zeros(n_targets, bool), self.name)


register_solver("celer", CelerSolver)
