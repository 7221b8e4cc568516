"""Lasso solvers behind one small interface.

Every solver computes, for each target column ``y`` of a block ``Y`` and every ``alpha`` of a
descending grid, the scikit-learn Lasso objective on *standardised* data::

    min_w  1/(2 n) ||y - X w||^2 + alpha ||w||_1

where the effective design is ``X - offset`` (``offset`` broadcast over rows): dense ``X`` arrives already
centred and scaled (``offset`` is ``None``); sparse ``X`` arrives column-scaled with its column means in
``offset`` so sparsity survives (celer's ``X_offset``/``X_scale`` mechanism). Targets arrive centred and
scaled, so no intercept is fitted.

This module is the interface only: :class:`PathResult`, the :class:`Solver` protocol, the registry
(:func:`register_solver`, :func:`get_solver`, :func:`available_solvers`) and the ``solver="auto"`` rule
(:func:`choose_solver`). The solvers live in their own modules and register on first use: ``"celer"``
(:mod:`circuitkit.fit.celer_solver`, the reference: one ``celer_path`` per target with warm starts),
``"fast"`` (:mod:`circuitkit.fit.fast`, sparse designs), ``"dense"`` (:mod:`circuitkit.fit.dense`, dense designs
with many more columns than a target block: batched gradients, working-set Gram solves), ``"torch"`` (:mod:`circuitkit.fit.gpu`), ``"dask"``
(:mod:`circuitkit.fit.distributed`) and ``"logistic"`` (:mod:`circuitkit.fit.logistic`, L1 logistic for
classifier targets). The estimator reaches them only through :func:`get_solver`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import scipy.sparse as sp

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
_LAZY_SOLVERS = {"celer": "circuitkit.fit.celer_solver", "fast": "circuitkit.fit.fast",
                 "dense": "circuitkit.fit.dense",
                 "torch": "circuitkit.fit.gpu", "dask": "circuitkit.fit.distributed",
                 "logistic": "circuitkit.fit.logistic"}


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


#: ``solver="auto"`` picks ``"dense"`` for a dense design (no CUDA) with at least this many columns and no more
#: rows than columns: the shape it was built and measured on (``benchmarks/component_scale.md``: 500 rows, blocks
#: with 4,252 / 8,941 earlier columns 6.3x / 11x faster than celer, the whole SmolLM2 fit 7.5x). Below it (Tracr,
#: the toy LM's component sites) celer stays the default, where it is measured against the baselines.
DENSE_MIN_COLUMNS = 2000


def choose_solver(X, n_targets: int, *, cuda: bool | None = None) -> str:
    """The ``solver="auto"`` rule: sparse design -> ``"fast"``; dense design with CUDA and at least
    ``1e6`` coefficients (``p * n_targets``) -> ``"torch"``; dense design with at least
    :data:`DENSE_MIN_COLUMNS` columns and ``n_rows <= n_columns`` -> ``"dense"``; otherwise ``"celer"``."""
    if sp.issparse(X):
        return "fast"
    if cuda is None:
        try:
            import torch

            cuda = bool(torch.cuda.is_available())
        except ImportError:  # pragma: no cover
            cuda = False
    if cuda and X.shape[1] * n_targets >= 1_000_000:
        return "torch"
    if X.shape[1] >= DENSE_MIN_COLUMNS and X.shape[0] <= X.shape[1]:
        return "dense"
    return "celer"


def __getattr__(name: str):
    # old import path (one release): ``from circuitkit.fit.solvers import CelerSolver``
    if name in ("CelerSolver", "residual_ss"):
        from . import celer_solver

        return getattr(celer_solver, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DENSE_MIN_COLUMNS", "PathResult", "Solver", "available_solvers", "choose_solver", "get_solver", "register_solver"]
