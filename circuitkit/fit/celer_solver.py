"""The reference solver ``"celer"``: one ``celer.celer_path`` per target, warm-started along the grid."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from joblib import Parallel, delayed

from .solvers import COEF_RTOL, DenseCoefs, PathResult, register_solver


def residual_ss(X, y: np.ndarray, w: np.ndarray, offset: np.ndarray | None) -> float:
    pred = X @ w
    if offset is not None:
        pred = pred - float(offset @ w)
    r = y - np.asarray(pred).ravel()
    return float(r @ r)


def _celer_chunk(X, Y: np.ndarray, cols: list[int], alphas: np.ndarray, offset, tol: float, max_iter: int,
                 stop_entered: int = 0):
    from celer import celer_path

    n_feat = X.shape[1]
    out = []
    kwargs = {}
    if offset is not None:
        kwargs = {"X_offset": offset.astype(X.dtype), "X_scale": np.ones(n_feat, dtype=X.dtype)}
    for j in cols:
        y = np.ascontiguousarray(Y[:, j], dtype=X.dtype)
        if stop_entered > 0:
            coefs, gaps = _stopped_path(X, y, alphas, tol, max_iter, stop_entered, kwargs)
        else:
            _, coefs, gaps = celer_path(X, y, "lasso", alphas=alphas, tol=tol, max_iter=max_iter, prune=True,
                                        **kwargs)
        rss = np.array([residual_ss(X, y, coefs[:, k], offset) if np.isfinite(gaps[k]) else np.nan
                        for k in range(len(alphas))])
        out.append((j, coefs.T.copy(), rss, np.asarray(gaps)))
    return out


def _stopped_path(X, y, alphas, tol, max_iter, stop_entered, kwargs):
    """The warm-started path, stopped at the first grid point where more than ``stop_entered`` sources have
    entered (later points: zero coefficients, NaN gaps).

    The grid is fitted in chunks of 4, 4, 8, 16, ... points (one warm-started ``celer_path`` call each), and
    the entrants are checked between chunks: on small problems the fixed cost of a call, not the solve,
    dominates, so one call per grid point would cost several times the whole path. Points of the last chunk
    past the stop are computed and then discarded."""
    from celer import celer_path

    n = len(alphas)
    coefs = np.zeros((X.shape[1], n), dtype=X.dtype)
    gaps = np.full(n, np.nan)
    ever = np.zeros(X.shape[1], dtype=bool)
    w = None
    start, size = 0, 4
    while start < n:
        stop = min(n, start + size)
        _, c, g = celer_path(X, y, "lasso", alphas=np.asarray(alphas[start:stop]), coef_init=w, tol=tol,
                             max_iter=max_iter, prune=True, **kwargs)
        g = np.asarray(g).ravel()
        for i in range(stop - start):
            k = start + i
            wk = c[:, i]
            coefs[:, k] = wk
            gaps[k] = float(g[i])
            scale = float(np.abs(wk).max()) if wk.size else 0.0
            if scale > 0:
                ever |= np.abs(wk) > COEF_RTOL * scale
            if ever.sum() > stop_entered:
                return coefs, gaps
        w = c[:, -1].copy()
        start, size = stop, (size if start == 0 else 2 * size)
    return coefs, gaps


class CelerSolver:
    """Reference solver: one ``celer.celer_path`` per target (warm-started along the grid), targets
    spread over ``n_jobs`` joblib processes.

    ``stop_entered``: ``0`` (default) fits the whole grid; ``q > 0`` stops each target's path at the first grid
    point where more than ``q`` sources have entered (the same option as ``FastConfig.stop_entered``; later
    points have no coefficients and NaN ``rss``/``gaps``)."""

    name = "celer"

    def __init__(self, stop_entered: int = 0) -> None:
        if isinstance(stop_entered, bool) or not isinstance(stop_entered, (int, np.integer)) or stop_entered < 0:
            raise ValueError(f"stop_entered must be an int >= 0 (0 = whole grid), got {stop_entered!r}")
        self.stop_entered = int(stop_entered)

    def path(self, X, Y, alphas, *, offset=None, tol=1e-6, max_iter=50, n_jobs=1) -> PathResult:
        n_targets = Y.shape[1]
        alphas = np.asarray(alphas, dtype=np.float64)
        if sp.issparse(X):
            X = sp.csc_matrix(X)
        else:
            X = np.asfortranarray(X)
        cols = list(range(n_targets))
        if n_jobs == 1 or n_targets < 8:
            parts = [_celer_chunk(X, Y, cols, alphas, offset, tol, max_iter, self.stop_entered)]
        else:
            n_chunks = max(1, min(n_targets, 4 * abs(n_jobs if n_jobs > 0 else 8)))
            chunks = [c.tolist() for c in np.array_split(np.arange(n_targets), n_chunks) if len(c)]
            parts = Parallel(n_jobs=n_jobs)(
                delayed(_celer_chunk)(X, Y[:, c], list(range(len(c))), alphas, offset, tol, max_iter, self.stop_entered)
                for c in chunks
            )
            parts = [[(chunks[i][j], w, r, g) for (j, w, r, g) in part] for i, part in enumerate(parts)]
        n_alphas = len(alphas)
        dtype = next((p[0][1].dtype for p in parts if p), np.float64)
        W = np.zeros((n_alphas, n_targets, X.shape[1]), dtype=dtype)  # every target's path, by grid point
        rss = np.zeros((n_alphas, n_targets))
        gaps = np.zeros((n_alphas, n_targets))
        for part in parts:
            while part:  # pop, so each target's own copy is freed once it is in W
                j, w, r, g = part.pop()
                W[:, j, :] = w
                rss[:, j] = r
                gaps[:, j] = g
        return PathResult(alphas, DenseCoefs(W), rss, gaps, np.zeros(n_targets, bool), self.name)


register_solver("celer", CelerSolver)

__all__ = ["COEF_RTOL", "CelerSolver", "residual_ss"]
