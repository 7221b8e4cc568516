"""L1 logistic regression along a grid (skglm): CircuitLasso's classifier prediction targets.

Registered as solver ``"logistic"``: ``path(X, Y, alphas, offset=...)`` with ``Y`` holding one ``{-1, +1}``
label column per target returns a :class:`~circuitkit.fit.solvers.PathResult` whose ``info["deviance"]``
``[n_alphas, n_targets]`` is ``2 * sum(log-loss)`` (what per-target BIC uses).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .._compat import nnsight_save_unmounted
from .solvers import PathResult, register_solver


def logistic_path(X, y: np.ndarray, alphas: np.ndarray, *, offset: np.ndarray | None = None,
                  tol: float = 1e-6) -> tuple[list[np.ndarray], list[float]]:
    """L1 logistic regression with intercept along ``alphas`` (warm-started).

    Objective: ``mean_i log(1 + exp(-y_i (x_i w + b))) + alpha ||w||_1`` with ``y`` in {-1, +1}, solved by
    skglm's ``SparseLogisticRegression`` (prox-Newton; celer's logistic solver has no intercept). An
    ``offset`` (centring of sparse columns) only shifts the intercept, ``(x - o) w + b = x w + (b - o w)``,
    so the fit uses ``X`` as is. Returns the coefficient vectors and deviances ``2 * sum(log-loss)``.
    """
    from skglm import SparseLogisticRegression

    coefs, devs = [], []
    clf = SparseLogisticRegression(alpha=float(alphas[0]), fit_intercept=True, tol=tol, max_iter=50,
                                   warm_start=True)
    labels = np.where(y > 0, 1, 0)
    for a in alphas:
        clf.alpha = float(a)
        with nnsight_save_unmounted():  # skglm compiles numba jitclasses, which nnsight's mount breaks
            clf.fit(X, labels)
        w = np.asarray(clf.coef_).ravel().copy()
        margin = y * (np.asarray(X @ w).ravel() + float(np.ravel(clf.intercept_)[0]))
        devs.append(float(2 * np.logaddexp(0.0, -margin).sum()))
        coefs.append(w)
    return coefs, devs


class LogisticSolver:
    """``"logistic"``: :func:`logistic_path` per label column (see the module docstring)."""

    name = "logistic"

    def path(self, X, Y, alphas, *, offset=None, tol=1e-6, max_iter=50, n_jobs=1) -> PathResult:
        Y = np.asarray(Y, dtype=np.float64)
        if Y.ndim == 1:
            Y = Y[:, None]
        bad = ~np.isin(Y, (-1.0, 1.0))
        if bad.any():
            raise ValueError("logistic targets must be {-1, +1} label columns")
        alphas = np.asarray(alphas, dtype=np.float64)
        paths = [logistic_path(X, Y[:, j], alphas, offset=offset, tol=tol) for j in range(Y.shape[1])]
        coefs = [sp.csr_matrix(np.vstack([p[0][k] for p in paths])) for k in range(len(alphas))]
        dev = np.array([[p[1][k] for p in paths] for k in range(len(alphas))])
        n_t = Y.shape[1]
        return PathResult(alphas, coefs, dev, np.zeros((len(alphas), n_t)), np.zeros(n_t, bool), self.name,
                          {"deviance": dev})


register_solver("logistic", LogisticSolver)

__all__ = ["LogisticSolver", "logistic_path"]
