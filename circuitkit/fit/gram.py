"""Gram-form coordinate descent for small dense designs (solver ``"gram"``).

It solves exactly the problem of every other solver (:mod:`circuitkit.fit.solvers`)::

    min_w  1/(2 n) ||y - (X - 1 o') w||^2 + alpha ||w||_1        for every target y and every alpha

and is built for designs whose ``p x p`` Gram is small: the component sites of Tracr models and of the toy LM
(tens to a few hundred live columns, a thousand or more rows). There a solve costs microseconds and what a
general solver spends is fixed cost per call: celer is called once per target (and per chunk of the grid
in a stopped path), the ``"dense"`` solver keeps a Python working set per target. Here one numba call fits
every target of a block along the whole grid:

* **Gram form.** ``H = A'A / n`` (``A = X - offset``) and ``C = A'Y / n`` are formed once per block by BLAS (or
  gathered from a Gram of the whole design that ``CircuitLasso`` computes once, ``gram=(G, cols)``); after
  that nothing touches the ``n`` rows.
* **Coordinate descent with the full gradient kept up to date.** ``r = C_j - H w`` is updated in ``O(p)``
  per changed coefficient, so every epoch is a full cyclic sweep over all ``p`` candidates, and the duality
  gap over all of them is exact at the end of each epoch (no working set, no screening: the KKT conditions
  of every candidate are checked by construction). Warm starts along the descending grid; ``r`` is recomputed
  from ``w`` at every grid point so rounding does not drift.
* **Stopping rule**: the duality gap is at most ``min(tol, GAP_TOL) * y'y / n``, far tighter than ``tol``'s
  meaning for ``"celer"``: an epoch costs ``O(p^2)`` at most, and on the exactly collinear designs of Tracr models
  coordinate descent stopped at celer's ``tol`` leaves coefficients of ~1e-4 on sources that the exact solution
  does not use (celer's working-set solver lands on the exact solution), which would enter the path as edges.
  Where the gap stalls above that (near-copies among the sources leave a floor around 1e-11) for
  ``STALL_EPOCHS`` epochs, the point stops once its gap is within ``tol * y'y / n``; ``max_epochs`` bounds the rest.
* **Exact steps** (:func:`_k_orthant_step`): once coordinate descent keeps its sign pattern for two epochs, a
  Newton step on that orthant (or, on an exactly collinear support, a move along a null direction that lowers
  the l1 norm at a constant fit) finishes the point; coordinate descent alone needs thousands of epochs on the
  noise-free, collinear designs of Tracr models (e.g. a head's query vectors).
* **Relaxed residuals.** ``info["relaxed_rss"]``: the OLS refit RSS on each support, a least-squares solve of
  ``H_SS b = C_S`` (minimum norm when the support is collinear, as :func:`circuitkit.fit.select.relaxed_rss`),
  computed once per distinct support.
* **Entry indices.** ``info["entry"]`` ``[n_targets, p]``: the first grid index at which each coefficient is
  nonzero (``-1``: never), read by stability selection without building the per-point matrices.
* **Conventions** as the other solvers: ``rss`` in standardised units (``||y - Xw||^2``), CSR coefficients
  ``[n_targets, n_features]`` (entries below ``COEF_RTOL`` times the target's largest |coefficient| dropped,
  as for celer), constant targets (``y'y <= 1e-12 n``) skipped and reported in ``skipped``, ``stop_entered``
  as for ``"celer"``/``"dense"``/``"fast"`` (stability selection's half-sample paths).

Stability selection (:mod:`circuitkit.fit.stability`) has a batched entry point for this solver,
:func:`select_first_q`: one numba call per half-sample fits every target block of the design from the half's
Gram, applies the noise floor and the first-``q`` rule, and adds the selected pairs to a count matrix.

``solver="auto"`` picks it for dense designs with fewer than :data:`circuitkit.fit.solvers.DENSE_MIN_COLUMNS`
columns (:func:`circuitkit.fit.solvers.choose_solver`). Measured in ``benchmarks/ground_truth.md`` ("Solver
gram").
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from .solvers import COEF_RTOL, DenseCoefs, PathResult, register_solver

#: coordinate-descent epochs per grid point
MAX_EPOCHS = 10_000
#: the duality gap a grid point is solved to, relative to ``y'y / n`` (module docstring, "Stopping rule")
GAP_TOL = 1e-12
#: epochs without the gap falling by 10% after which a grid point stops, if its gap is within the caller's ``tol``
STALL_EPOCHS = 50

_KERNEL_NAMES = ["_k_relaxed", "_k_grad", "_k_gap", "_k_orthant_step", "_k_paths", "_k_select"]
_COMPILED = False
_COMPILE_LOCK = threading.Lock()


def _kernels():
    """Jit the kernels below (numba, imported lazily) on first use; compiled code is cached on disk."""
    global _COMPILED
    with _COMPILE_LOCK:
        if not _COMPILED:
            from numba import njit

            g = globals()
            for nm in _KERNEL_NAMES:
                g[nm] = njit(cache=True, nogil=True)(g[nm])
            _COMPILED = True
    return globals()


def _k_relaxed(H, c, on, yty, n_rows):
    """``rss / n`` of the least-squares refit of a target on the support ``on``: ``y'y/n - c_S' b`` with
    ``H_SS b = c_S`` solved by least squares (minimum norm on a collinear support); ``y'y/n`` for an empty
    support and 0 when the support has at least ``n_rows - 1`` columns (as :func:`circuitkit.fit.select.relaxed_rss`)."""
    idx = np.flatnonzero(on)
    m = idx.size
    if m == 0:
        return yty
    if m >= n_rows - 1:
        return 0.0
    A = np.empty((m, m))
    b = np.empty(m)
    for a in range(m):
        b[a] = c[idx[a]]
        for e in range(m):
            A[a, e] = H[idx[a], idx[e]]
    x = np.linalg.lstsq(A, b)[0]
    s = 0.0
    for a in range(m):
        s += b[a] * x[a]
    return max(yty - s, 0.0)


def _k_grad(H, C, j, w, r):
    """``r = C[:, j] - H w`` from scratch."""
    p = w.size
    for i in range(p):
        s = C[i, j]
        for m in range(p):
            if w[m] != 0.0:
                s -= H[i, m] * w[m]
        r[i] = s


def _k_gap(C, j, w, r, yty, a):
    """Duality gap and ``rss / n`` of ``w`` for target ``j`` at ``alpha = a`` (``r = C[:, j] - H w``; all in units
    of ``1/n``; the dual point is the residual scaled into the dual feasible set, as celer does)."""
    cw = 0.0
    wr = 0.0
    l1 = 0.0
    rmax = 0.0
    for i in range(w.size):
        cw += C[i, j] * w[i]
        wr += w[i] * r[i]
        l1 += abs(w[i])
        rmax = max(rmax, abs(r[i]))
    rss_n = max(yty - cw - wr, 0.0)
    sc = 1.0 if rmax <= a else a / rmax
    return rss_n / 2.0 + a * l1 - (sc * (yty - cw) - sc * sc * rss_n / 2.0), rss_n


def _k_orthant_step(H, C, j, w, r, a):
    """One exact step of the Lasso restricted to the orthant of ``w``'s sign pattern ``S``, or ``False``.

    * ``H_SS`` singular with a null vector ``v`` (``X_S v = 0``) not orthogonal to ``sign(w_S)``: ``w_S`` moves along
      ``v`` in the direction that lowers ``||w||_1`` until a coefficient reaches zero. The fitted values do not
      change, so the objective falls and the support loses a column.
    * Otherwise a Newton step: towards the minimum-norm solution ``x`` of ``H_SS x = C_S - a sign(w_S)`` (the
      minimiser of the objective on that face of the orthant), stopping where the objective along the step is
      least or where a coefficient reaches zero.

    Either way the objective never rises and a coefficient that reaches zero is set to zero exactly. Coordinate
    descent alone takes thousands of epochs on the exactly collinear, noise-free designs of Tracr models (query
    targets are exact linear functions of the residual). Returns whether ``w`` moved (``r`` is updated)."""
    idx = np.flatnonzero(w)
    m = idx.size
    if m == 0:
        return False
    A = np.empty((m, m))
    b = np.empty(m)
    for u in range(m):
        b[u] = C[idx[u], j] - (a if w[idx[u]] > 0.0 else -a)
        for e in range(m):
            A[u, e] = H[idx[u], idx[e]]
    U, sv, Vt = np.linalg.svd(A)
    cut = 1e-10 * max(sv[0], 1e-300)
    d = np.zeros(m)
    null_move = False
    for q in range(m):   # a null direction of H_SS that the l1 norm is not flat along: the fit stays, l1 falls
        if sv[q] > cut:
            continue
        sd = 0.0
        for u in range(m):
            sd += (1.0 if w[idx[u]] > 0.0 else -1.0) * Vt[q, u]
        if abs(sd) > 1e-9:
            for u in range(m):
                d[u] = -Vt[q, u] if sd > 0.0 else Vt[q, u]
            null_move = True
            break
    if null_move:
        t = np.inf
    else:            # Newton: towards the minimum-norm solution of H_SS x = b (b is in the range of H_SS here)
        for q in range(m):
            if sv[q] <= cut:
                continue
            coef = 0.0
            for u in range(m):
                coef += U[u, q] * b[u]
            coef /= sv[q]
            for u in range(m):
                d[u] += coef * Vt[q, u]
        for u in range(m):
            d[u] -= w[idx[u]]
        slope = 0.0      # directional derivative of the objective along d (smooth part -r, l1 part a sign)
        for u in range(m):
            slope += d[u] * ((a if w[idx[u]] > 0.0 else -a) - r[idx[u]])
        if not slope < 0.0:
            return False
        curv = 0.0
        for u in range(m):
            for e in range(m):
                curv += d[u] * A[u, e] * d[e]
        t = 1.0
        if curv > 0.0:
            t = min(t, -slope / curv)
    hit = -1
    for u in range(m):   # stay in the orthant: the first coefficient to reach zero stops the step
        wu = w[idx[u]]
        if d[u] != 0.0 and (wu > 0.0) != (d[u] > 0.0) and -wu / d[u] < t:
            t = -wu / d[u]
            hit = u
    if t <= 0.0 or t == np.inf:
        return False
    for u in range(m):
        w[idx[u]] += t * d[u]
    if hit >= 0:
        w[idx[hit]] = 0.0
    _k_grad(H, C, j, w, r)
    return True


def _k_paths(H, C, yty, alphas, tol, tol_stall, max_epochs, stop_entered, relaxed, rtol, n_rows,
             W, rss, gaps, rel, ent, skipped, epochs):
    """The path of every column of ``C`` (module docstring). ``H [p, p] = A'A/n``, ``C [p, t] = A'Y/n``,
    ``yty [t] = y'y/n``. Writes ``W [n_alphas, t, p]``, and ``rss``/``gaps``/``rel`` ``[n_alphas, t]`` in units of
    ``1/n`` (the caller multiplies by ``n``), ``ent [t, p]`` entry grid indices (-1: never) and ``skipped [t]``."""
    p, t = C.shape
    n_alpha = alphas.size
    w = np.zeros(p)
    r = np.zeros(p)
    on = np.zeros(p, dtype=np.bool_)
    for j in range(t):
        for i in range(p):
            ent[j, i] = -1
        if yty[j] <= 1e-12:
            skipped[j] = True
            for k in range(n_alpha):
                rss[k, j] = yty[j]
                gaps[k, j] = 0.0
                rel[k, j] = yty[j]
            continue
        for i in range(p):
            w[i] = 0.0
            on[i] = False
        n_ent = 0
        stopped = False
        last_rel = yty[j]
        changed_support = False
        for k in range(n_alpha):
            if stopped:
                rss[k, j] = np.nan
                gaps[k, j] = np.nan
                rel[k, j] = np.nan
                continue
            a = alphas[k]
            _k_grad(H, C, j, w, r)
            gap, rss_n = _k_gap(C, j, w, r, yty[j], a)
            quiet = 0
            best = gap
            since = 0
            for _ep in range(max_epochs):
                epochs[k, j] += 1
                if gap <= tol * yty[j]:
                    break
                if gap < 0.9 * best:
                    best = gap
                    since = 0
                else:
                    since += 1
                    if since >= STALL_EPOCHS and gap <= tol_stall * yty[j]:
                        break   # no progress at this precision, and within the caller's tolerance
                flipped = False
                for i in range(p):
                    h = H[i, i]
                    if h <= 0.0:
                        continue
                    z = w[i] * h + r[i]
                    if z > a:
                        nw = (z - a) / h
                    elif z < -a:
                        nw = (z + a) / h
                    else:
                        nw = 0.0
                    d = nw - w[i]
                    if d != 0.0:
                        if (nw > 0.0) != (w[i] > 0.0) or (nw < 0.0) != (w[i] < 0.0):
                            flipped = True
                        for m in range(p):
                            r[m] -= d * H[i, m]
                        w[i] = nw
                gap, rss_n = _k_gap(C, j, w, r, yty[j], a)
                quiet = 0 if flipped else quiet + 1
                if quiet >= 2 and gap > tol * yty[j] and _k_orthant_step(H, C, j, w, r, a):
                    gap, rss_n = _k_gap(C, j, w, r, yty[j], a)
                    quiet = 0
            wmax = 0.0
            for i in range(p):
                wmax = max(wmax, abs(w[i]))
                W[k, j, i] = w[i]
            rss[k, j] = rss_n
            gaps[k, j] = gap
            for i in range(p):
                now = wmax > 0.0 and abs(w[i]) > rtol * wmax
                if now != on[i]:
                    changed_support = True
                    on[i] = now
                if now and ent[j, i] < 0:
                    ent[j, i] = k
                    n_ent += 1
            if relaxed:
                if changed_support:
                    last_rel = _k_relaxed(H, C[:, j], on, yty[j], n_rows)
                    changed_support = False
                rel[k, j] = last_rel
            else:
                rel[k, j] = rss_n
            if stop_entered > 0 and n_ent > stop_entered:
                stopped = True


def _k_select(G, n_rows, t_ptr, t_idx, s_ptr, s_idx, floors, alphas, tol, tol_stall, max_epochs, q, rtol, counts):
    """Stability selection on one half-sample, every block in one call: ``G`` is the Gram ``A'A`` of the half's
    standardised design (all columns), block ``b`` has targets ``t_idx[t_ptr[b]:t_ptr[b+1]]`` and candidate
    sources ``s_idx[s_ptr[b]:s_ptr[b+1]]`` (columns of ``G``), ``floors[b]`` its noise-floor multiplier. Each target's
    path stops once more than ``q`` sources have entered; entries past the noise floor are dropped
    (:func:`circuitkit.fit.stability.floor_index`) and the first ``q`` entrants
    (:func:`circuitkit.fit.stability.first_q`) get ``counts[target, source] += 1``."""
    n_alpha = alphas.size
    for b in range(t_ptr.size - 1):
        src = s_idx[s_ptr[b]:s_ptr[b + 1]]
        tg = t_idx[t_ptr[b]:t_ptr[b + 1]]
        p = src.size
        t = tg.size
        if p == 0 or t == 0:
            continue
        H = np.empty((p, p))
        for a in range(p):
            for e in range(p):
                H[a, e] = G[src[a], src[e]] / n_rows
        C = np.empty((p, t))
        yty = np.empty(t)
        for j in range(t):
            yty[j] = G[tg[j], tg[j]] / n_rows
            for a in range(p):
                C[a, j] = G[src[a], tg[j]] / n_rows
        W = np.zeros((n_alpha, t, p))
        rss = np.zeros((n_alpha, t))
        gaps = np.zeros((n_alpha, t))
        rel = np.zeros((n_alpha, t))
        ent = np.empty((t, p), dtype=np.int64)
        skipped = np.zeros(t, dtype=np.bool_)
        epochs = np.zeros((n_alpha, t), dtype=np.int64)
        _k_paths(H, C, yty, alphas, tol, tol_stall, max_epochs, q, False, rtol, n_rows, W, rss, gaps, rel, ent, skipped,
                 epochs)
        lam0 = math.sqrt(2.0 * math.log(max(p, 2)) / n_rows)
        cum = np.zeros(n_alpha, dtype=np.int64)
        for j in range(t):
            if skipped[j]:
                continue
            kmax = n_alpha - 1
            if floors[b] > 0.0:
                for k in range(n_alpha):
                    v = rss[k, j]
                    if not (alphas[k] >= floors[b] * lam0 * math.sqrt(max(v, 0.0))):  # NaN: a cut
                        kmax = k - 1
                        break
            for k in range(n_alpha):
                cum[k] = 0
            for a in range(p):
                e = ent[j, a]
                if 0 <= e <= kmax:
                    cum[e] += 1
            kstar = -1
            run = 0
            for k in range(n_alpha):
                run += cum[k]
                if run <= q:
                    kstar = k
                else:
                    break
            for a in range(p):
                e = ent[j, a]
                if 0 <= e <= kstar and e <= kmax:
                    counts[tg[j], src[a]] += 1


def _block_inputs(X, Y, offset, gram) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """``H = A'A/n``, ``C = A'Y/n``, ``y'y/n`` and ``n`` of one block (``A = X - offset``)."""
    Yd = Y.dense() if hasattr(Y, "dense") else np.asarray(Y)
    Yd = np.asarray(Yd, dtype=np.float64)
    if Yd.ndim != 2:
        raise ValueError(f"Y must be a 2-D block [n_rows, n_targets], got shape {Yd.shape}")
    n, p = X.shape
    if Yd.shape[0] != n:
        raise ValueError(f"X has {n} rows but Y has {Yd.shape[0]}")
    A = X.toarray() if sp.issparse(X) else np.asarray(X, dtype=np.float64)
    if offset is not None:
        off = np.asarray(offset, dtype=np.float64).ravel()
        if off.shape != (p,):
            raise ValueError(f"offset must have one entry per column of X ({p}), got shape {off.shape}")
        A = A - off[None, :]
    if gram is not None:
        G, cols = gram
        cols = np.asarray(cols, dtype=np.int64)
        if G.ndim != 2 or G.shape[0] != G.shape[1] or cols.shape != (p,) or (
                p and (cols.min() < 0 or cols.max() >= G.shape[0])):
            raise ValueError(f"gram must be (G [P, P], cols [{p}] indices into G), got G of shape "
                             f"{getattr(G, 'shape', None)} and cols of shape {cols.shape}")
        H = G[np.ix_(cols, cols)] / n
    else:
        H = (A.T @ A) / n
    C = (A.T @ Yd) / n
    yty = np.einsum("ij,ij->j", Yd, Yd) / n
    return np.ascontiguousarray(H), np.asfortranarray(C), yty, n


class GramSolver:
    """Gram-form coordinate descent over every target of a block in one numba call (module docstring).

    ``stop_entered``: ``0`` fits the whole grid; ``q > 0`` stops each target's path at the first grid point where
    more than ``q`` sources have entered (later points: no coefficients, NaN ``rss``/``gaps``/``relaxed_rss``).
    ``relaxed``: compute ``info["relaxed_rss"]`` (else it holds the Lasso RSS). ``max_epochs``: coordinate-descent
    epochs per grid point."""

    name = "gram"

    def __init__(self, stop_entered: int = 0, relaxed: bool = True, max_epochs: int = MAX_EPOCHS) -> None:
        for nm, v, lo in (("stop_entered", stop_entered, 0), ("max_epochs", max_epochs, 1)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ValueError(f"{nm} must be an int >= {lo}, got {v!r}")
        self.stop_entered = int(stop_entered)
        self.relaxed = bool(relaxed)
        self.max_epochs = int(max_epochs)

    def path(self, X, Y, alphas, *, offset=None, tol=1e-6, max_iter=50, n_jobs=1,
             gram: tuple[np.ndarray, np.ndarray] | None = None) -> PathResult:
        """Fit every column of ``Y`` along the descending grid ``alphas``.

        ``gram``: optional ``(G, cols)``, ``G`` the Gram ``A'A`` of a parent design and ``cols`` the positions of
        the columns of ``X - offset`` in it (as for :meth:`circuitkit.fit.dense.DenseSolver.path`). ``max_iter``
        and ``n_jobs`` are accepted for interface compatibility: one block is one numba call, and the epochs are
        bounded by ``max_epochs``."""
        alphas = np.asarray(alphas, dtype=np.float64)
        if alphas.ndim != 1 or alphas.size == 0 or np.any(np.diff(alphas) > 0) or np.any(alphas < 0):
            raise ValueError("alphas must be a non-empty descending 1-D grid of values >= 0")
        H, C, yty, n = _block_inputs(X, Y, offset, gram)
        p, t = C.shape
        nA = alphas.size
        W = np.zeros((nA, t, p))
        rss, gaps, rel = np.zeros((nA, t)), np.zeros((nA, t)), np.zeros((nA, t))
        ent = np.empty((t, p), dtype=np.int64)
        skipped = np.zeros(t, dtype=np.bool_)
        epochs = np.zeros((nA, t), dtype=np.int64)
        if t and p:
            _kernels()["_k_paths"](H, C, yty, alphas, min(float(tol), GAP_TOL), float(tol), self.max_epochs,
                                   self.stop_entered,
                                   self.relaxed, COEF_RTOL, n, W, rss, gaps, rel, ent, skipped, epochs)
        else:
            ent[:] = -1
            rss[:] = yty[None, :]
            rel[:] = yty[None, :]
        info = {"relaxed_rss": rel * n, "entry": ent, "n_skipped": int(skipped.sum()), "epochs": epochs}
        return PathResult(alphas, DenseCoefs(W), rss * n, gaps * n, skipped, self.name, info)


def select_first_q(gram: np.ndarray, n_rows: int, blocks: Sequence[tuple[np.ndarray, np.ndarray, float]],
                   alphas: np.ndarray, *, q: int, tol: float, counts: np.ndarray,
                   max_epochs: int = MAX_EPOCHS) -> None:
    """Stability selection's work on one half-sample in one numba call (module docstring): ``gram`` is the Gram
    ``A'A`` of the half's standardised design, ``blocks`` ``(target columns, candidate source columns, floor)``
    with columns indexing ``gram``; adds 1 to ``counts[target, source]`` for every selected pair."""
    if not blocks:
        return
    t_idx = np.concatenate([np.asarray(t, dtype=np.int64) for t, _, _ in blocks])
    s_idx = np.concatenate([np.asarray(s, dtype=np.int64) for _, s, _ in blocks])
    t_ptr = np.zeros(len(blocks) + 1, dtype=np.int64)
    s_ptr = np.zeros(len(blocks) + 1, dtype=np.int64)
    np.cumsum([len(t) for t, _, _ in blocks], out=t_ptr[1:])
    np.cumsum([len(s) for _, s, _ in blocks], out=s_ptr[1:])
    floors = np.array([f for _, _, f in blocks], dtype=np.float64)
    _kernels()["_k_select"](np.ascontiguousarray(gram, dtype=np.float64), int(n_rows), t_ptr, t_idx, s_ptr, s_idx,
                            floors, np.asarray(alphas, dtype=np.float64), min(float(tol), GAP_TOL), float(tol),
                            int(max_epochs), int(q),
                            COEF_RTOL, counts)


register_solver("gram", GramSolver)

__all__ = ["COEF_RTOL", "GramSolver", "select_first_q"]
