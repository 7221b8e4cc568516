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
with many more columns than a target block: batched gradients, working-set Gram solves), ``"gram"``
(:mod:`circuitkit.fit.gram`, small dense designs: Gram-form coordinate descent, one numba call per block), ``"torch"`` (:mod:`circuitkit.fit.gpu`), ``"dask"``
(:mod:`circuitkit.fit.distributed`) and ``"logistic"`` (:mod:`circuitkit.fit.logistic`, L1 logistic for
classifier targets). The estimator reaches them only through :func:`get_solver`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import scipy.sparse as sp

logger = logging.getLogger(__name__)


#: coefficients at most this times the largest |coefficient| of the same target at the same grid point are solver
#: noise (celer returns values like 1e-15 at fixed alphas) and are not edges (:class:`DenseCoefs`)
COEF_RTOL = 1e-10


class DenseCoefs(Sequence):
    """``PathResult.coefs`` of a solver that holds a block's path as one dense array ``W [n_alphas, n_targets,
    n_features]`` (``"celer"``, ``"gram"``): a sequence of CSR matrices built on first access, with the entries at
    most :data:`COEF_RTOL` times their row's largest |coefficient| dropped, plus vectorised readers that never
    build them (:meth:`triplets`, :meth:`row_nnz`) and :meth:`matmul`."""

    def __init__(self, W: np.ndarray) -> None:
        W = np.asarray(W, dtype=np.float64)
        if W.ndim != 3:
            raise ValueError(f"W must be [n_alphas, n_targets, n_features], got shape {W.shape}")
        scale = np.abs(W).max(axis=2, initial=0.0)
        self._keep = (np.abs(W) > COEF_RTOL * scale[:, :, None]) & (scale > 0)[:, :, None]
        self._W = np.where(self._keep, W, 0.0)
        self._cache: dict[int, sp.csr_matrix] = {}

    @property
    def shape(self) -> tuple[int, int, int]:
        return self._W.shape

    def __len__(self) -> int:
        return self._W.shape[0]

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        k = int(k)
        if k < 0:
            k += len(self)
        if not 0 <= k < len(self):
            raise IndexError(f"grid index {k} out of range for {len(self)} grid points")
        if k not in self._cache:
            keep = self._keep[k]
            indptr = np.zeros(keep.shape[0] + 1, dtype=np.int64)
            np.cumsum(keep.sum(axis=1), out=indptr[1:])
            self._cache[k] = sp.csr_matrix((self._W[k][keep], np.nonzero(keep)[1].astype(np.int64), indptr),
                                           shape=keep.shape)
        return self._cache[k]

    def triplets(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(grid index, target, feature, value)`` of every kept entry, ordered by grid index, then target, then
        feature."""
        k, r, c = np.nonzero(self._keep)
        return k, r, c, self._W[k, r, c]

    def row_nnz(self) -> np.ndarray:
        """``[n_alphas, n_targets]`` number of kept entries (the support size of each target at each point)."""
        return self._keep.sum(axis=2)

    def matmul(self, E: sp.spmatrix | np.ndarray) -> DenseCoefs:
        """The path with every grid point's matrix multiplied by ``E`` (``[n_features, m]``) on the right."""
        E = E.toarray() if sp.issparse(E) else np.asarray(E, dtype=np.float64)
        return DenseCoefs(self._W @ E)


@dataclass
class PathResult:
    """Coefficients of one block along the grid.

    ``coefs[k]`` is a CSR matrix ``[n_targets, n_features]`` at ``alphas[k]`` (rows targets, columns
    sources); ``coefs`` is a list, or a :class:`DenseCoefs` (the same sequence, built on access);
    ``rss[k, j]`` is the residual sum of squares of target ``j`` (standardised units);
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
                 "dense": "circuitkit.fit.dense", "gram": "circuitkit.fit.gram",
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
#: the toy LM's component sites) ``"gram"`` is the default: its ``p x p`` Gram is small and one numba call fits
#: a whole block (``benchmarks/ground_truth.md``, "Solver gram").
DENSE_MIN_COLUMNS = 2000


def choose_solver(X, n_targets: int, *, cuda: bool | None = None) -> str:
    """The ``solver="auto"`` rule: sparse design -> ``"fast"``; dense design with CUDA and at least
    ``1e6`` coefficients (``p * n_targets``) -> ``"torch"``; dense design with at least
    :data:`DENSE_MIN_COLUMNS` columns and ``n_rows <= n_columns`` -> ``"dense"``; other dense designs with fewer
    than :data:`DENSE_MIN_COLUMNS` columns -> ``"gram"``; otherwise (many columns and more rows than columns)
    ``"celer"``."""
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
    if X.shape[1] >= DENSE_MIN_COLUMNS:
        return "dense" if X.shape[0] <= X.shape[1] else "celer"
    return "gram"


def __getattr__(name: str):
    # old import path (one release): ``from circuitkit.fit.solvers import CelerSolver``
    if name in ("CelerSolver", "residual_ss"):
        from . import celer_solver

        return getattr(celer_solver, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["COEF_RTOL", "DENSE_MIN_COLUMNS", "DenseCoefs", "PathResult", "Solver", "available_solvers", "choose_solver", "get_solver", "register_solver"]
