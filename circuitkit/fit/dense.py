"""Dense-design Lasso path (solver ``"dense"``): batched gradients, working-set Gram solves, exact KKT checks.

It solves exactly the problem of every other solver (:mod:`circuitkit.fit.solvers`)::

    min_w  1/(2 n) ||y - (X - 1 o') w||^2 + alpha ||w||_1        for every target y and every alpha

and is built for the component-level design of many sites compressed to a few whitened columns each
(:func:`circuitkit.activations.compress_sites`): a dense ``X`` with few rows and many columns (SmolLM2-135M at
500 prompts: ``n = 500``, up to ~9,000 columns) and blocks of up to 32 targets. ``X - offset`` is formed
once as a dense array (a sparse ``X`` is densified: use ``"fast"`` for SAE codes). The ``p x p`` Gram is never
formed.

* **Batched gradients.** ``c = X'Y / n`` for the whole block, and after every working-set solve the exact
  gradients ``X'R / n`` of all targets that were solved, are one BLAS matrix product each
  (``[n_targets, n] x [n, p]``).
* **Working sets.** Each target keeps its own working set with its columns and its Gram ``X_W'X_W``
  (built incrementally by BLAS as features join; the working set only grows along the grid). At a grid point
  the sequential strong rule (``|g_j| >= 2 alpha_k - alpha_{k-1}``) proposes candidates, at most twice the
  support's growth at the previous grid point (clipped to ``[min_add, max_add]``), largest ``|g_j|`` first.
* **Working-set solver.** Cyclic coordinate descent in Gram form (numba), warm-started along the descending
  grid; as soon as its sign pattern is stable for ``exact_every`` epochs, an active-set Newton step solves the
  working-set problem exactly on that pattern (``w_S = G_SS^-1 n (c_S - alpha s)``, repeated until the pattern
  is self-consistent). The Cholesky factor of ``G_SS`` is kept across steps and grid points and extended by
  rows (``O(s^2)`` per feature): its leading part whose features are still active stays valid.
* **Exact KKT checks.** After the solve, every feature outside the working set with ``|g_j| > alpha`` (exact
  gradient over all ``p`` features) joins it and the target is solved again, until none is left. The result
  is the exact Lasso solution; the duality gap over all ``p`` features is reported in ``gaps``. A working-set
  solve stops when its gap is at most ``tol * ||y||^2 / n`` (celer's rule, so ``tol`` means the same as for
  ``"celer"`` and ``"fast"``); an accepted Newton step usually reaches it at once (gap at rounding level),
  otherwise coordinate descent goes on.
* **Relaxed residuals.** ``info["relaxed_rss"]`` ``[n_alphas, n_targets]``: the OLS refit RSS on each support
  (what ``CircuitLasso`` uses for (E)BIC), from the same Cholesky factor; a (near-)singular support Gram falls
  back to a minimum-norm least-squares solve, as :func:`circuitkit.fit.select.relaxed_rss` does.
* **Conventions** as the other solvers: ``rss`` in standardised units (``||y - Xw||^2``), CSR coefficients
  ``[n_targets, n_features]``, constant targets (``y'y <= 1e-12 n``) skipped and reported in ``skipped``,
  ``stop_entered`` as for ``"celer"``/``"fast"`` (stability selection's half-sample paths),
  ``info["work"]`` ``[n_targets, 6]`` (epochs, Newton attempts, accepted, KKT rounds, gradients, final
  working-set size); ``n_jobs`` spreads target chunks over joblib processes (threads with ``gram``).
* **A shared Gram** (``gram=(G, cols)``): ``CircuitLasso`` computes the Gram of its whole standardised design once
  (:func:`parent_gram`; 644 MB for SmolLM2's 8,974 columns) and every block's working sets gather their Gram
  entries from it instead of computing ``n``-long dot products; the kernels release the GIL, so with it
  ``CircuitLasso(n_jobs=k)`` fits ``k`` whole blocks at once in threads.

Measured (benchmarks/component_scale.md, "Solver dense"; one core, another job on the second): the whole
SmolLM2-135M component-scale fit (500 prompts, 8,974 columns, 292 target blocks) takes 279.6 s and 296.3 s
(two runs, one core, Gram entries computed per block) instead of 2,221.8 s with ``"celer"`` (28,677 edges
against 28,678); with the shared Gram and ``n_jobs=-1`` (both cores of that machine) it takes 119.6 s, with the
same edges ("One shared Gram, two cores"). On its blocks at p = 189 / 4,252 / 8,941 earlier
columns (32 targets, 16 alphas, ``tol=1e-6``, same process) ``"celer"`` takes 1.65 / 5.75 / 12.0 s and
``"dense"`` 0.54 (numba compile included) / 0.92 / 1.09 s. Choices
measured on those blocks: strong-rule additions capped at 32 per grid point instead of 64 (ws ~340 instead of
~800 features, 1.3x faster); the Newton step instead of coordinate descent alone (CD needed ~1,500-2,000
epochs per target on these ill-conditioned whitened designs, the Newton step cuts that to ~150-200); Newton,
Cholesky and relaxed RSS in numba instead of SciPy LAPACK calls (the per-call overhead dominated at support
sizes ~100-300: 7 sampled blocks 7.0 s -> 4.1 s).

``solver="auto"`` picks it for dense designs with at least ``DENSE_MIN_COLUMNS`` (2,000) columns and no more rows
than columns (:func:`circuitkit.fit.solvers.choose_solver`), the shape it is measured on; smaller dense designs
(Tracr, the toy LM's component sites) keep ``"celer"``. The component-scale benchmark also asks for it explicitly.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .solvers import PathResult, register_solver

logger = logging.getLogger(__name__)

_KERNEL_NAMES = ["_k_ws_gap", "_k_cd", "_k_factor_to", "_k_chol_solve", "_k_newton", "_k_relaxed", "_k_fitted"]
_COMPILED = False
_COMPILE_LOCK = threading.Lock()


def _kernels():
    """Jit the kernels below (numba, imported lazily) on first use; compiled code is cached on disk."""
    global _COMPILED
    with _COMPILE_LOCK:  # threads (n_jobs with a shared Gram) must not wrap the kernels twice
        if not _COMPILED:
            from numba import njit

            g = globals()
            for nm in _KERNEL_NAMES:
                g[nm] = njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})(g[nm])
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


def _k_factor_to(G, m, act, L, order, nord, inf, dmax):
    """Make ``(L, order[:nord[0]])`` the Cholesky factor of the Gram of the features with ``act[a]``: keep the
    leading part of the current factor whose features are all active (a leading block of a Cholesky factor
    is the factor of the leading block), then append a row per other active feature (``O(s^2)`` each).
    ``L`` is row-major: row ``r`` holds ``L[r, :r + 1]``. Returns ``False`` when a pivot falls below
    ``1e-10 * dmax`` (near-singular Gram; the factor keeps its valid rows)."""
    keep = 0
    while keep < nord[0] and act[order[keep]]:
        keep += 1
    nord[0] = keep
    for j in range(keep):
        inf[order[j]] = True
    ok = True
    for f in range(m):
        if not act[f] or inf[f]:
            continue
        r = nord[0]
        for j in range(r):
            acc = G[f, order[j]]
            for k in range(j):
                acc -= L[r, k] * L[j, k]
            L[r, j] = acc / L[j, j]
        d = G[f, f]
        for k in range(r):
            d -= L[r, k] * L[r, k]
        if d <= 1e-10 * dmax:
            ok = False
            break
        L[r, r] = np.sqrt(d)
        order[r] = f
        nord[0] = r + 1
        inf[f] = True
    for f in range(m):
        inf[f] = False
    return ok


def _k_chol_solve(L, s, b, x):
    """``x = (L L')^-1 b`` for the leading ``s x s`` factor (``x`` may alias nothing)."""
    for i in range(s):
        acc = b[i]
        for k in range(i):
            acc -= L[i, k] * x[k]
        x[i] = acc / L[i, i]
    for i in range(s - 1, -1, -1):
        acc = x[i]
        for k in range(i + 1, s):
            acc -= L[k, i] * x[k]
        x[i] = acc / L[i, i]


def _k_newton(G, c, w, qv, m, alpha, n, max_newton, L, order, nord, inf, act, sgn, wt, qt, b, x):
    """Active-set Newton (primal-dual active set) on the working-set problem from the current ``w``: the
    support and signs are read off ``z = w + g / h`` (``g = c - qv / n`` the gradient, ``h = diag(G) / n``: the
    coordinate-descent rule applied to every feature at once), the problem is solved exactly on that sign
    pattern, ``w_S = G_SS^-1 n (c_S - alpha s)`` (Cholesky factor kept across calls, :func:`_k_factor_to`),
    and this repeats until the pattern no longer changes: then the KKT conditions of the working-set problem
    hold exactly and ``w``, ``qv`` are replaced (returns ``True``). Otherwise ``w`` is left unchanged."""
    dmax = 0.0
    for a in range(m):
        dmax = max(dmax, G[a, a])
    for a in range(m):
        wt[a] = w[a]
        qt[a] = qv[a]
    for it in range(max_newton):
        same = it > 0
        ns = 0
        for a in range(m):
            h = G[a, a] / n
            na = False
            sa = 0.0
            if h > 0.0:
                z = wt[a] + (c[a] - qt[a] / n) / h
                if abs(z) * h > alpha:
                    na = True
                    sa = 1.0 if z > 0 else -1.0
            if na != act[a] or sa != sgn[a]:
                same = False
            act[a] = na
            sgn[a] = sa
            if na:
                ns += 1
        if same:
            for a in range(m):
                if act[a] and (wt[a] > 0) != (sgn[a] > 0):
                    return False
            for a in range(m):
                w[a] = wt[a]
                qv[a] = qt[a]
            return True
        if ns == 0 or ns >= n:
            return False
        if not _k_factor_to(G, m, act, L, order, nord, inf, dmax):
            return False
        s = nord[0]
        for j in range(s):
            f = order[j]
            b[j] = n * (c[f] - alpha * sgn[f])
        _k_chol_solve(L, s, b, x)
        for a in range(m):
            wt[a] = 0.0
            qt[a] = 0.0
        for j in range(s):
            f = order[j]
            wt[f] = x[j]
            xj = x[j]
            for a in range(m):
                qt[a] += G[f, a] * xj
    return False


def _k_relaxed(G, c, w, m, yty, n, L, order, nord, inf, act, b, x):
    """RSS of the OLS refit on the support of ``w``: ``y'y - ||L^-1 b||^2`` with ``b = n c_S`` and ``L L'`` the
    support's Gram. Returns ``-1`` when that Gram is (near) singular (the caller falls back to least squares)."""
    dmax = 0.0
    for a in range(m):
        act[a] = w[a] != 0.0
        dmax = max(dmax, G[a, a])
    if not _k_factor_to(G, m, act, L, order, nord, inf, dmax):
        return -1.0
    s = nord[0]
    val = yty
    for i in range(s):
        acc = n * c[order[i]]
        for k in range(i):
            acc -= L[i, k] * x[k]
        x[i] = acc / L[i, i]
        val -= x[i] * x[i]
    return max(val, 0.0)


def _k_fitted(Xw, w, m, out, i):
    """``out[:, i] = X_W w`` over the nonzero coefficients only."""
    for a in range(m):
        wa = w[a]
        if wa != 0.0:
            for r in range(Xw.shape[0]):
                out[r, i] += Xw[r, a] * wa


# -- one target's working set ---------------------------------------------------------------------------


class _WorkingSet:
    """The working set of one target: feature indices, their columns, their Gram matrix, the coefficients,
    and the Cholesky factor of the Gram of the last exact solve's support (with the kernels' scratch space)."""

    _VEC = ("c", "w", "qv", "sgn", "wt", "qt", "b", "x")

    def __init__(self, n: int, cap: int = 64) -> None:
        self.idx = np.empty(cap, dtype=np.int64)
        self.Xw = np.empty((n, cap), order="F")
        self.G = np.zeros((cap, cap))
        self.L = np.zeros((cap, cap))
        self.order = np.zeros(cap, dtype=np.int64)
        self.nord = np.zeros(1, dtype=np.int64)
        self.inf = np.zeros(cap, dtype=np.bool_)
        self.act = np.zeros(cap, dtype=np.bool_)
        for nm in self._VEC:
            setattr(self, nm, np.zeros(cap))
        self.m = 0

    def _grow(self, need: int) -> None:
        cap0, m = self.idx.shape[0], self.m
        cap = max(need, 2 * cap0)
        idx = np.empty(cap, dtype=np.int64)
        idx[:m] = self.idx[:m]
        Xw = np.empty((self.Xw.shape[0], cap), order="F")
        Xw[:, :m] = self.Xw[:, :m]
        G = np.zeros((cap, cap))
        G[:m, :m] = self.G[:m, :m]
        L = np.zeros((cap, cap))
        k = int(self.nord[0])
        L[:k, :k] = self.L[:k, :k]
        order = np.zeros(cap, dtype=np.int64)
        order[:k] = self.order[:k]
        self.idx, self.Xw, self.G, self.L, self.order = idx, Xw, G, L, order
        self.inf = np.zeros(cap, dtype=np.bool_)
        self.act = np.zeros(cap, dtype=np.bool_)
        for nm in self._VEC:
            v = np.zeros(cap)
            v[:m] = getattr(self, nm)[:m]
            setattr(self, nm, v)

    def add(self, X: np.ndarray, cfull: np.ndarray, new: np.ndarray, gram: tuple | None = None) -> None:
        """Append the features ``new``: their columns, Gram rows/columns, ``c`` entries (``w = 0``). With
        ``gram = (G, cols)`` (``X'X == G[cols][:, cols]``) the Gram entries are read from ``G``, not computed."""
        a, m = len(new), self.m
        if m + a > self.idx.shape[0]:
            self._grow(m + a)
        Xn = X[:, new]
        if gram is None:
            cross = self.Xw[:, :m].T @ Xn
            self.G[m:m + a, m:m + a] = Xn.T @ Xn
        else:
            G, cols = gram
            gn = cols[new]
            cross = G[gn[:, None], cols[self.idx[:m]][None, :]].T   # [m, a], gathered from a rows (G symmetric)
            self.G[m:m + a, m:m + a] = G[gn[:, None], gn[None, :]]
        self.G[:m, m:m + a] = cross
        self.G[m:m + a, :m] = cross.T
        self.Xw[:, m:m + a] = Xn
        self.idx[m:m + a] = new
        self.c[m:m + a] = cfull[new]
        self.w[m:m + a] = 0.0
        self.qv[m:m + a] = cross.T @ self.w[:m]
        self.m = m + a

    def newton(self, alpha: float, n: float, max_newton: int) -> bool:
        """:func:`_k_newton` on this working set."""
        return _k_newton(self.G, self.c, self.w, self.qv, self.m, alpha, n, max_newton, self.L, self.order,
                         self.nord, self.inf, self.act, self.sgn, self.wt, self.qt, self.b, self.x)

    def relaxed(self, S: np.ndarray, yty: float, n: float) -> float:
        """RSS of the OLS refit on the working-set features ``S`` (the support of ``w``): normal equations on the
        support's Cholesky factor; a (near-)singular Gram falls back to the minimum-norm least-squares solve."""
        if S.size == 0:
            return yty
        if S.size >= n - 1:
            return 0.0
        val = _k_relaxed(self.G, self.c, self.w, self.m, yty, n, self.L, self.order, self.nord, self.inf,
                         self.act, self.b, self.x)
        if val >= 0.0:
            return float(val)
        b = n * self.c[S]
        coef = np.linalg.lstsq(self.G[S][:, S], b, rcond=None)[0]
        return float(max(yty - b @ coef, 0.0))


# -- the path over one chunk of targets ----------------------------------------------------------------


@dataclass
class DenseConfig:
    """Options of :class:`DenseSolver` (defaults are what ``solver="dense"`` uses).

    max_epochs: coordinate-descent epochs per working-set solve.
    exact_every: try the Newton step once the sign pattern of coordinate descent has not changed for this many
        epochs (the wait doubles after each rejected step; ``0``: never, coordinate descent only).
    max_newton: active-set Newton steps per exact-solve attempt.
    max_rounds: KKT rounds (working-set growths) per grid point.
    min_add, max_add: strong-rule candidates added to a target's working set at a grid point: twice the growth
        of its support at the previous grid point, clipped to ``[min_add, max_add]`` (largest ``|gradient|``
        first); KKT violators are added up to ``max_add`` per round.
    chunk_targets: targets per joblib task (``None``: ``n_jobs`` thread tasks with a shared Gram, about
        ``4 * n_jobs`` process tasks without).
    relaxed: compute ``info["relaxed_rss"]``; when ``False`` it holds the Lasso RSS.
    stop_entered: ``0`` fits the whole grid; ``q > 0`` stops a target's path at the first grid point where more
        than ``q`` sources have entered (later points: no coefficients, NaN ``rss``/``gaps``/``relaxed_rss``).
    """

    max_epochs: int = 10_000
    exact_every: int = 2
    max_newton: int = 8
    max_rounds: int = 100
    min_add: int = 8
    max_add: int = 32
    chunk_targets: int | None = None
    relaxed: bool = True
    stop_entered: int = 0

    def __post_init__(self) -> None:
        for name, lo in (("max_epochs", 1), ("exact_every", 0), ("max_newton", 1), ("max_rounds", 1), ("min_add", 1), ("max_add", 1),
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
        if ws.newton(alpha, n, cfg.max_newton):
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
        _k_fitted(ws.Xw, ws.w, ws.m, out, i)
    return out


def _fit_chunk(X: np.ndarray, Y: np.ndarray, alphas: np.ndarray, tol: float, cfg: DenseConfig,
               gram: tuple | None = None):
    """The path of every column of ``Y`` (module docstring). Returns triplets and the per-point arrays."""
    _kernels()
    n_rows, p = X.shape
    n = float(n_rows)
    nq, nA = Y.shape[1], len(alphas)
    yty = np.einsum("ij,ij->j", Y, Y)
    skipped = yty <= 1e-12 * n
    C = np.ascontiguousarray((Y.T @ X) / n)   # [nq, p] correlations X'y / n (one row per target)
    grad = C.copy()                           # gradients X'r / n at the current coefficients
    cmax = np.abs(C).max(axis=1, initial=0.0)
    rss = np.zeros((nA, nq))
    gaps = np.zeros((nA, nq))
    rel = np.zeros((nA, nq))
    rss[:, skipped] = yty[skipped]
    rel[:, skipped] = yty[skipped]
    sets = [_WorkingSet(n_rows, cap=min(p, 128)) for _ in range(nq)]
    inws = np.zeros((nq, p), dtype=bool)
    stopped = skipped.copy()
    ever = [set() for _ in range(nq)]
    last_rel = [(None, 0.0)] * nq
    n_sup = np.zeros(nq, dtype=np.int64)   # support size at the last grid point
    grow = np.zeros(nq, dtype=np.int64)    # and how much it grew there
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
        if live.size:
            prev = np.minimum(float(alphas[k - 1]) if k > 0 else cmax[live], cmax[live])
            absg = np.abs(grad[live])
            cand_mask = (absg >= (2.0 * alpha - prev)[:, None]) & ~inws[live]
            for i in np.flatnonzero(cand_mask.any(axis=1)):
                t = live[i]
                cand = np.flatnonzero(cand_mask[i])
                cap = min(cfg.max_add, max(cfg.min_add, 2 * int(grow[t])))
                if cand.size > cap:
                    cand = cand[np.argsort(-absg[i, cand], kind="stable")[:cap]]
                sets[t].add(X, C[t], cand, gram)
                inws[t, cand] = True
        todo = live
        for _rnd in range(cfg.max_rounds if live.size else 0):
            for t in todo:
                ws = sets[t]
                if ws.m:
                    _solve_ws(ws, alpha, n, yty[t], tol_abs[t], cfg, work[t])
            # exact gradients of the targets just solved: one matmul
            R = Y[:, todo] - _fitted(sets, todo, n_rows)
            grad[todo] = (R.T @ X) / n
            work[todo, 4] += 1
            absg = np.abs(grad[todo])
            viol_mask = (absg > alpha) & ~inws[todo]
            again = np.flatnonzero(viol_mask.any(axis=1))
            for i in again:
                t = todo[i]
                viol = np.flatnonzero(viol_mask[i])
                work[t, 3] += 1
                if viol.size > cfg.max_add:
                    viol = viol[np.argsort(-absg[i, viol], kind="stable")[:cfg.max_add]]
                sets[t].add(X, C[t], viol, gram)
                inws[t, viol] = True
            if not again.size:
                break
            todo = todo[again]
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
            gmax = float(np.abs(grad[t]).max())
            scale = min(1.0, alpha / gmax) if gmax > 0 else 1.0
            l1 = float(np.abs(w).sum())
            rss[k, t] = r2
            gaps[k, t] = r2 / (2 * n) + alpha * l1 - (scale * ry / n - scale * scale * r2 / (2 * n))
            S = np.flatnonzero(w)
            grow[t] = max(S.size - n_sup[t], 0)
            n_sup[t] = S.size
            T.append(np.full(S.size, t))
            K.append(np.full(S.size, k))
            J.append(ws.idx[S])
            V.append(w[S].copy())
            if cfg.relaxed:
                key = ws.idx[S]
                if last_rel[t][0] is None or not np.array_equal(last_rel[t][0], key):
                    last_rel[t] = (key, ws.relaxed(S, float(yty[t]), n))
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


def parent_gram(X, offset=None) -> np.ndarray:
    """The Gram ``A'A`` of the dense design ``A = X - offset`` (``[p, p]``, float64), for :meth:`DenseSolver.path`'s
    ``gram``."""
    A = _dense_design(X, offset)
    return A.T @ A


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

    def path(self, X, Y, alphas, *, offset=None, tol=1e-6, max_iter=50, n_jobs=1,
             gram: tuple[np.ndarray, np.ndarray] | None = None) -> PathResult:
        """Fit every column of ``Y`` along the descending grid ``alphas``.

        ``gram``: optional ``(G, cols)`` with ``G`` the Gram ``A'A`` of a parent design ``A`` and ``cols`` the
        indices of the columns of ``X - offset`` in it (``(X - offset)'(X - offset) == G[cols][:, cols]``);
        working-set Gram entries are then gathered from ``G`` instead of computed. ``CircuitLasso`` passes the
        Gram of its whole standardised design, computed once (:func:`parent_gram`). With ``gram``, ``n_jobs > 1``
        runs target chunks in threads (the kernels release the GIL), sharing ``G``.

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
        if gram is not None:
            G, cols = gram
            cols = np.asarray(cols, dtype=np.int64)
            if G.ndim != 2 or G.shape[0] != G.shape[1] or cols.shape != (p,) or (
                    p and (cols.min() < 0 or cols.max() >= G.shape[0])):
                raise ValueError(f"gram must be (G [P, P], cols [{p}] indices into G), got G of shape "
                                 f"{getattr(G, 'shape', None)} and cols of shape {cols.shape}")
            gram = (G, cols)
        nq = Yd.shape[1]
        cfg = self.config
        n_workers = _n_workers(n_jobs)
        if cfg.chunk_targets is not None:
            size = cfg.chunk_targets
        else:
            # threads (shared Gram): one chunk per worker, so each gradient product reads X once for many
            # targets (it is memory-bound); processes: ~4 chunks per worker, for balance
            per = 1 if gram is not None else 4
            size = max(1, math.ceil(nq / (per * n_workers))) if n_workers > 1 else max(nq, 1)
        chunks = [np.arange(s, min(s + size, nq)) for s in range(0, nq, size)]
        if n_workers == 1 or len(chunks) == 1:
            outs = [_fit_chunk(A, Yd[:, ch], alphas, float(tol), cfg, gram) for ch in chunks]
        else:
            from joblib import Parallel, delayed

            par = (Parallel(n_jobs=n_workers, prefer="threads") if gram is not None else
                   Parallel(n_jobs=n_workers, max_nbytes="1M"))
            outs = par(delayed(_fit_chunk)(A, np.asfortranarray(Yd[:, ch]), alphas, float(tol), cfg, gram)
                       for ch in chunks)
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

__all__ = ["DenseConfig", "DenseSolver", "parent_gram"]
