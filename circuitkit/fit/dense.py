"""Dense-design Lasso path (solver ``"dense"``): batched gradients, working-set Gram coordinate descent.

DRAFT -- docstring is rewritten once the measurements are in.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .solvers import PathResult, register_solver

logger = logging.getLogger(__name__)

_KERNEL_NAMES = ["_k_ws_gap", "_k_cd"]
_COMPILED = False


def _kernels():
    """Jit the kernels below (numba, imported lazily) on first use; compiled code is cached on disk."""
    global _COMPILED
    if not _COMPILED:
        from numba import njit

        g = globals()
        for nm in _KERNEL_NAMES:
            g[nm] = njit(cache=True)(g[nm])
        _COMPILED = True
    return globals()["_k_cd"]


def _k_ws_gap(c, w, qv, m, alpha, n, yty):
    """Duality gap of the working-set problem (``qv = G w``, ``c = X_W' y / n``)."""
    cw = 0.0
    wq = 0.0
    l1 = 0.0
    gmax = 0.0
    for a in range(m):
        cw += c[a] * w[a]
        wq += w[a] * qv[a]
        l1 += abs(w[a])
        ga = abs(c[a] - qv[a] / n)
        gmax = max(gmax, ga)
    rss = max(yty - 2.0 * n * cw + wq, 0.0)
    ry = yty - n * cw
    scale = 1.0
    if gmax > alpha:
        scale = alpha / gmax
    return rss / (2.0 * n) + alpha * l1 - (scale * ry / n - scale * scale * rss / (2.0 * n))


def _k_cd(G, c, w, qv, m, alpha, n, yty, tol_abs, max_epochs, stable):
    """Cyclic coordinate descent on ``min 1/(2n) ||y - X_W w||^2 + alpha ||w||_1`` in Gram form
    (``G = X_W' X_W``, ``c = X_W' y / n``, ``qv = G w`` kept up to date), until the working-set duality gap is
    at most ``tol_abs`` or (``stable > 0``) the sign pattern of ``w`` has not changed for ``stable`` epochs.
    Returns ``(epochs, gap, sign pattern stable)``."""
    gap = np.inf
    quiet = 0
    for ep in range(max_epochs):
        changed = False
        for a in range(m):
            h = G[a, a] / n
            if h <= 0.0:
                continue
            z = w[a] * h + c[a] - qv[a] / n
            if z > alpha:
                nw = (z - alpha) / h
            elif z < -alpha:
                nw = (z + alpha) / h
            else:
                nw = 0.0
            d = nw - w[a]
            if d != 0.0:
                if (nw > 0.0) != (w[a] > 0.0) or (nw < 0.0) != (w[a] < 0.0):
                    changed = True
                w[a] = nw
                for b in range(m):
                    qv[b] += G[a, b] * d
        gap = _k_ws_gap(c, w, qv, m, alpha, n, yty)
        if gap <= tol_abs:
            return ep + 1, gap, False
        quiet = 0 if changed else quiet + 1
        if stable > 0 and quiet >= stable:
            return ep + 1, gap, True
    return max_epochs, gap, False


# -- one target's working set ---------------------------------------------------------------------------


class _WorkingSet:
    """The working set of one target: feature indices, their columns, their Gram matrix, the coefficients."""

    __slots__ = ("G", "Xw", "c", "factor", "idx", "m", "qv", "w")

    def __init__(self, n: int, cap: int = 64) -> None:
        self.idx = np.empty(cap, dtype=np.int64)
        self.Xw = np.empty((n, cap), order="F")
        self.G = np.zeros((cap, cap))
        self.c = np.zeros(cap)
        self.w = np.zeros(cap)
        self.qv = np.zeros(cap)
        self.m = 0
        self.factor = None  # (support, Cholesky factor of its Gram) from the last exact solve

    def add(self, X: np.ndarray, cfull: np.ndarray, new: np.ndarray) -> None:
        """Append the features ``new``: their columns, Gram rows/columns, ``c`` entries (``w = 0``)."""
        a, m = len(new), self.m
        if m + a > self.idx.shape[0]:
            cap = max(m + a, 2 * self.idx.shape[0])
            idx = np.empty(cap, dtype=np.int64)
            idx[:m] = self.idx[:m]
            Xw = np.empty((X.shape[0], cap), order="F")
            Xw[:, :m] = self.Xw[:, :m]
            G = np.zeros((cap, cap))
            G[:m, :m] = self.G[:m, :m]
            c, w, qv = np.zeros(cap), np.zeros(cap), np.zeros(cap)
            c[:m], w[:m], qv[:m] = self.c[:m], self.w[:m], self.qv[:m]
            self.idx, self.Xw, self.G, self.c, self.w, self.qv = idx, Xw, G, c, w, qv
        Xn = X[:, new]
        cross = self.Xw[:, :m].T @ Xn
        self.G[:m, m:m + a] = cross
        self.G[m:m + a, :m] = cross.T
        self.G[m:m + a, m:m + a] = Xn.T @ Xn
        self.Xw[:, m:m + a] = Xn
        self.idx[m:m + a] = new
        self.c[m:m + a] = cfull[new]
        self.w[m:m + a] = 0.0
        self.qv[m:m + a] = cross.T @ self.w[:m]
        self.m = m + a


def _exact_solve(ws: _WorkingSet, alpha: float, n: float, max_newton: int) -> bool:
    """Active-set Newton (primal-dual active set) on the working-set problem from the current ``w``: the
    support and signs are read off ``z = w + g / h`` (``g`` the gradient, ``h = diag(G) / n``; the coordinate
    descent rule applied to every feature at once), the problem is solved exactly on that sign pattern,
    ``w_S = G_SS^-1 n (c_S - alpha s)`` (Cholesky of the support's Gram), and this repeats until the pattern
    no longer changes -- then the KKT conditions of the working-set problem hold exactly. Accepted (``w``,
    ``qv`` replaced) only then; after ``max_newton`` steps without that, ``w`` is left unchanged."""
    from scipy.linalg import lapack

    m = ws.m
    G, c = ws.G[:m, :m], ws.c[:m]
    h = np.diag(G) / n
    ok = h > 0
    w = ws.w[:m].copy()
    qv = ws.qv[:m].copy()
    g = c - qv / n
    S_prev = None
    for _ in range(max_newton):
        z = np.where(ok, w + g / np.where(ok, h, 1.0), 0.0)
        act = ok & (np.abs(z) * h > alpha)
        S = np.flatnonzero(act)
        s = np.sign(z[S])
        if S_prev is not None and np.array_equal(S, S_prev[0]) and np.array_equal(s, S_prev[1]):
            if np.all(np.sign(w[S]) == s):
                ws.w[:m] = w
                ws.qv[:m] = qv
                return True
            return False
        if S.size == 0 or S.size >= n:
            return False
        L, info = lapack.dpotrf(G[S][:, S], lower=1, clean=1, overwrite_a=1)
        if info != 0:
            return False
        x, info = lapack.dpotrs(L, n * (c[S] - alpha * s), lower=1)
        if info != 0:
            return False
        w = np.zeros(m)
        w[S] = x
        qv = G @ w
        g = c - qv / n
        ws.factor = (S, L)
        S_prev = (S, s)
    return False


def _relaxed(ws: _WorkingSet, S: np.ndarray, yty: float, n: float) -> float:
    """RSS of the OLS refit on the working-set features ``S`` (normal equations: ``y'y - b' G_SS^-1 b`` with
    ``b = X_S' y``); a (near-)singular Gram falls back to the minimum-norm least-squares solve."""
    from scipy.linalg import lapack

    if S.size == 0:
        return yty
    if S.size >= n - 1:
        return 0.0
    b = n * ws.c[S]
    if ws.factor is not None and np.array_equal(ws.factor[0], S):
        L, info = ws.factor[1], 0
    else:
        A = ws.G[S][:, S]
        L, info = lapack.dpotrf(A, lower=1, clean=1)
        if info == 0 and np.min(np.abs(np.diag(L))) ** 2 <= 1e-10 * np.max(np.diag(A)):
            info = 1
    if info == 0:
        z, _ = lapack.dtrtrs(L, b, lower=1)
        return float(max(yty - z @ z, 0.0))
    coef = np.linalg.lstsq(ws.G[S][:, S], b, rcond=None)[0]
    return float(max(yty - b @ coef, 0.0))


# -- the path over one chunk of targets ----------------------------------------------------------------


@dataclass
class DenseConfig:
    """Options of :class:`DenseSolver` (defaults are what ``solver="dense"`` uses).

    max_epochs: coordinate-descent epochs per working-set solve.
    exact_every: every this many epochs, try the exact solve on the current sign pattern (``0``: never).
    max_newton: active-set Newton steps per exact-solve attempt.
    max_rounds: KKT rounds (working-set growths) per grid point.
    max_add: features added to a target's working set per round (largest ``|gradient|`` first).
    chunk_targets: targets per joblib task (``None``: about ``4 * n_jobs`` tasks).
    relaxed: compute ``info["relaxed_rss"]``; when ``False`` it holds the Lasso RSS.
    stop_entered: ``0`` fits the whole grid; ``q > 0`` stops a target's path at the first grid point where more
        than ``q`` sources have entered (later points: no coefficients, NaN ``rss``/``gaps``/``relaxed_rss``).
    """

    max_epochs: int = 10_000
    exact_every: int = 10
    max_newton: int = 8
    max_rounds: int = 100
    max_add: int = 64
    chunk_targets: int | None = None
    relaxed: bool = True
    stop_entered: int = 0

    def __post_init__(self) -> None:
        for name, lo in (("max_epochs", 1), ("exact_every", 0), ("max_newton", 1), ("max_rounds", 1), ("max_add", 1),
                         ("stop_entered", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
        if self.chunk_targets is not None and (isinstance(self.chunk_targets, bool)
                                               or not isinstance(self.chunk_targets, (int, np.integer))
                                               or self.chunk_targets < 1):
            raise ValueError(f"chunk_targets must be None or an int >= 1, got {self.chunk_targets!r}")


def _solve_ws(ws: _WorkingSet, alpha: float, n: float, yty: float, tol_abs: float, cfg: DenseConfig,
              work: np.ndarray) -> float:
    """Coordinate descent on the working set; whenever its sign pattern has been stable for ``cfg.exact_every``
    epochs, the exact solve on that pattern is tried (and the wait doubles when it is rejected)."""
    cd = _kernels()
    left = cfg.max_epochs
    stable = cfg.exact_every
    gap = np.inf
    while left > 0:
        ep, gap, quiet = cd(ws.G, ws.c, ws.w, ws.qv, ws.m, alpha, n, yty, tol_abs, left, stable)
        work[0] += ep
        left -= ep
        if not quiet:
            break
        work[1] += 1
        if _exact_solve(ws, alpha, n, cfg.max_newton):
            work[2] += 1
            gap = _k_ws_gap(ws.c, ws.w, ws.qv, ws.m, alpha, n, yty)
            if gap <= tol_abs:
                break
        stable *= 2
    return gap


def _fitted(sets: list[_WorkingSet], targets: np.ndarray, n_rows: int) -> np.ndarray:
    """``X w`` of each of ``targets``, as the columns of an ``[n_rows, len(targets)]`` array."""
    out = np.zeros((n_rows, len(targets)), order="F")
    for i, t in enumerate(targets):
        ws = sets[t]
        if ws.m:
            out[:, i] = ws.Xw[:, :ws.m] @ ws.w[:ws.m]
    return out


def _fit_chunk(X: np.ndarray, Y: np.ndarray, alphas: np.ndarray, tol: float, cfg: DenseConfig):
    """The path of every column of ``Y`` (module docstring). Returns triplets and the per-point arrays."""
    _kernels()
    n_rows, p = X.shape
    n = float(n_rows)
    nq, nA = Y.shape[1], len(alphas)
    yty = np.einsum("ij,ij->j", Y, Y)
    skipped = yty <= 1e-12 * n
    C = X.T @ Y / n                      # [p, nq] correlations X'y / n
    grad = C.copy()                      # gradients X'r / n at the current coefficients
    cmax = np.abs(C).max(axis=0, initial=0.0)
    rss = np.zeros((nA, nq))
    gaps = np.zeros((nA, nq))
    rel = np.zeros((nA, nq))
    rss[:, skipped] = yty[skipped]
    rel[:, skipped] = yty[skipped]
    sets = [_WorkingSet(n_rows) for _ in range(nq)]
    inws = np.zeros((p, nq), dtype=bool)
    stopped = skipped.copy()
    ever = [set() for _ in range(nq)]
    last_rel = [(None, 0.0)] * nq
    work = np.zeros((nq, 6), dtype=np.int64)  # epochs, exact tries, exact accepted, KKT rounds, gradients, ws size
    T, K, J, V = [], [], [], []
    for k in range(nA):
        alpha = float(alphas[k])
        live = np.flatnonzero(~stopped & (cmax > alpha * (1.0 + 1e-10)))
        empty = np.flatnonzero(~stopped & (cmax <= alpha * (1.0 + 1e-10)))
        rss[k, empty] = yty[empty]
        rel[k, empty] = yty[empty]
        tol_abs = tol * yty / n
        # strong rule: candidates outside the working set with |g_j| >= 2 alpha - alpha_prev
        for t in live:
            prev = min(float(alphas[k - 1]) if k > 0 else cmax[t], cmax[t])
            g = np.abs(grad[:, t])
            cand = np.flatnonzero((g >= 2.0 * alpha - prev) & ~inws[:, t])
            if cand.size > cfg.max_add:
                cand = cand[np.argsort(-g[cand], kind="stable")[:cfg.max_add]]
            if cand.size:
                sets[t].add(X, C[:, t], cand)
                inws[cand, t] = True
        todo = live
        for _rnd in range(cfg.max_rounds if live.size else 0):
            for t in todo:
                ws = sets[t]
                if ws.m:
                    _solve_ws(ws, alpha, n, yty[t], tol_abs[t], cfg, work[t])
            # exact gradients of the targets just solved: one matmul
            R = Y[:, todo] - _fitted(sets, todo, n_rows)
            grad[:, todo] = X.T @ R / n
            work[todo, 4] += 1
            again = []
            for t in todo:
                g = np.abs(grad[:, t])
                viol = np.flatnonzero((g > alpha) & ~inws[:, t])
                if viol.size:
                    work[t, 3] += 1
                    if viol.size > cfg.max_add:
                        viol = viol[np.argsort(-g[viol], kind="stable")[:cfg.max_add]]
                    sets[t].add(X, C[:, t], viol)
                    inws[viol, t] = True
                    again.append(t)
            if not again:
                break
            todo = np.asarray(again)
        # record this grid point
        if live.size:
            Rl = Y[:, live] - _fitted(sets, live, n_rows)
        for i, t in enumerate(live):
            ws = sets[t]
            m = ws.m
            w = ws.w[:m]
            r = Rl[:, i]
            r2 = float(r @ r)
            ry = float(r @ Y[:, t])
            gmax = float(np.abs(grad[:, t]).max())
            scale = min(1.0, alpha / gmax) if gmax > 0 else 1.0
            l1 = float(np.abs(w).sum())
            rss[k, t] = r2
            gaps[k, t] = r2 / (2 * n) + alpha * l1 - (scale * ry / n - scale * scale * r2 / (2 * n))
            S = np.flatnonzero(w)
            T.append(np.full(S.size, t))
            K.append(np.full(S.size, k))
            J.append(ws.idx[S])
            V.append(w[S].copy())
            if cfg.relaxed:
                key = ws.idx[S]
                if last_rel[t][0] is None or not np.array_equal(last_rel[t][0], key):
                    last_rel[t] = (key, _relaxed(ws, S, float(yty[t]), n))
                rel[k, t] = last_rel[t][1]
            else:
                rel[k, t] = r2
            if cfg.stop_entered > 0:
                ever[t].update(ws.idx[S].tolist())
                if len(ever[t]) > cfg.stop_entered:
                    stopped[t] = True
                    rss[k + 1:, t] = np.nan
                    gaps[k + 1:, t] = np.nan
                    rel[k + 1:, t] = np.nan
    for t in range(nq):
        work[t, 5] = sets[t].m
    cat = (lambda parts, dt: np.concatenate(parts).astype(dt) if parts else np.empty(0, dt))
    return (cat(T, np.int64), cat(K, np.int64), cat(J, np.int64), cat(V, np.float64), rss, gaps, rel, skipped,
            work)


# -- the solver -----------------------------------------------------------------------------------------


def _dense_design(X, offset) -> np.ndarray:
    """The effective design ``X - offset`` as a dense Fortran-ordered float64 array."""
    A = X.toarray() if sp.issparse(X) else np.asarray(X)
    A = np.array(A, dtype=np.float64, order="F", copy=True)
    if offset is not None:
        off = np.asarray(offset, dtype=np.float64).ravel()
        if off.shape != (A.shape[1],):
            raise ValueError(f"offset must have one entry per column of X ({A.shape[1]}), got shape {off.shape}")
        A -= off[None, :]
    return A


def _n_workers(n_jobs) -> int:
    import os

    if n_jobs is None or n_jobs == 0:
        return 1
    if n_jobs < 0:
        return max(1, (os.cpu_count() or 1) + 1 + n_jobs)
    return int(n_jobs)


class DenseSolver:
    """Batched-gradient working-set Lasso path for dense designs (module docstring)."""

    name = "dense"

    def __init__(self, config: DenseConfig | None = None, **kwargs) -> None:
        if config is not None and kwargs:
            raise ValueError("pass either a DenseConfig or keyword options, not both")
        self.config = config if config is not None else DenseConfig(**kwargs)

    def path(self, X, Y, alphas, *, offset=None, tol=1e-6, max_iter=50, n_jobs=1) -> PathResult:
        """Fit every column of ``Y`` along the descending grid ``alphas``.

        ``max_iter`` is accepted for interface compatibility; convergence is governed by ``tol`` and
        :class:`DenseConfig`."""
        alphas = np.asarray(alphas, dtype=np.float64)
        if alphas.ndim != 1 or alphas.size == 0 or np.any(np.diff(alphas) > 0) or np.any(alphas < 0):
            raise ValueError("alphas must be a non-empty descending 1-D grid of values >= 0")
        Yd = Y.dense() if hasattr(Y, "dense") else np.asarray(Y)
        Yd = np.asfortranarray(Yd, dtype=np.float64)
        if Yd.ndim != 2:
            raise ValueError(f"Y must be a 2-D block [n_rows, n_targets], got shape {Yd.shape}")
        n, p = X.shape
        if Yd.shape[0] != n:
            raise ValueError(f"X has {n} rows but Y has {Yd.shape[0]}")
        A = _dense_design(X, offset)
        nq = Yd.shape[1]
        cfg = self.config
        n_workers = _n_workers(n_jobs)
        if cfg.chunk_targets is not None:
            size = cfg.chunk_targets
        else:
            size = max(1, math.ceil(nq / (4 * n_workers))) if n_workers > 1 else max(nq, 1)
        chunks = [np.arange(s, min(s + size, nq)) for s in range(0, nq, size)]
        if n_workers == 1 or len(chunks) == 1:
            outs = [_fit_chunk(A, Yd[:, ch], alphas, float(tol), cfg) for ch in chunks]
        else:
            from joblib import Parallel, delayed

            outs = Parallel(n_jobs=n_workers, max_nbytes="1M")(
                delayed(_fit_chunk)(A, np.asfortranarray(Yd[:, ch]), alphas, float(tol), cfg) for ch in chunks)
        return _assemble(outs, chunks, alphas, nq, p, self.name)


def _assemble(outs, chunks, alphas, nq, p, name) -> PathResult:
    nA = len(alphas)
    rss, gaps, rel = np.zeros((nA, nq)), np.zeros((nA, nq)), np.zeros((nA, nq))
    skipped = np.zeros(nq, dtype=bool)
    work = np.zeros((nq, 6), dtype=np.int64)
    T, K, J, V = [], [], [], []
    for ch, (ot, ok, oj, ov, r, g, rl, sk, wk) in zip(chunks, outs):
        rss[:, ch], gaps[:, ch], rel[:, ch] = r, g, rl
        skipped[ch] = sk
        work[ch] = wk
        T.append(ch[ot])
        K.append(ok)
        J.append(oj)
        V.append(ov)
    T, K, J, V = (np.concatenate(a) for a in (T, K, J, V))
    order = np.argsort(K, kind="stable")
    bounds = np.searchsorted(K[order], np.arange(nA + 1))
    coefs = []
    for k in range(nA):
        sel = order[bounds[k]:bounds[k + 1]]
        m = sp.csr_matrix((V[sel], (T[sel], J[sel])), shape=(nq, p))
        m.sort_indices()
        coefs.append(m)
    info = {"relaxed_rss": rel, "work": work, "n_skipped": int(skipped.sum())}
    return PathResult(alphas, coefs, rss, gaps, skipped, name, info)


register_solver("dense", DenseSolver)

__all__ = ["DenseConfig", "DenseSolver"]
