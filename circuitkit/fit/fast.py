"""The fast SAE-level Lasso path (solver ``"fast"``): sparse covariance coordinate descent with screening.

It solves exactly the problem of every other solver (see :mod:`circuitkit.fit.solvers`)::

    min_w  1/(2 n) ||y - (X - 1 o') w||^2 + alpha ||w||_1        for every target y and every alpha

but is built for SAE codes, where ``X`` is an ``n x p`` sparse matrix with a few tens of nonzeros per row
and ``p`` is 16k-131k:

* **Sparse end to end.** ``X`` is never densified or centred; the centring ``o`` enters every inner
  product as a rank-one correction. Targets may arrive as :class:`SparseTargets` (raw sparse columns
  plus mean and scale), so a block of 24,576 targets never becomes a dense ``n x 24,576`` array.
* **Covariance (Gram) coordinate descent on a working set.** For a target, ``c = X_c' y / n`` costs one
  pass over the rows where ``y`` is active. The Gram entries ``X_c' X_c`` are built only between the
  features of the target's working set, from the rows those features are active in.
* **Screening with exact KKT checks.** Each grid point starts from the sequential strong rule
  (``|g_j| >= 2 alpha_k - alpha_{k-1}``, at most ``max_add`` candidates by size of ``|g_j|``); after the
  working-set problem converges, the full gradient ``g = X_c' r / n`` is checked and every violator
  (``|g_j| > alpha``) joins the working set, until none is left. The result is the exact Lasso solution,
  not an approximation: the final duality gap over *all* ``p`` features is reported in ``gaps``.
* **Warm starts** along the descending grid (the working set only grows).
* **Dead or too-rare targets are skipped and reported** (``PathResult.skipped``): a target with zero
  variance, or active in fewer than ``min_active_rows`` rows.
* **Relaxed residuals for free.** The OLS refit RSS on each support (what ``CircuitLasso`` uses for
  (E)BIC) comes from the working-set Gram: ``info["relaxed_rss"]`` ``[n_alphas, n_targets]``.
* **Parallel over targets** with joblib processes (``n_jobs``); the arrays are memory-mapped to the
  workers, the numba kernels are compiled once and cached on disk.

Convergence: a working-set problem stops when its duality gap is below ``tol * ||y||^2 / n`` (celer's
rule, so ``tol`` means the same for ``"celer"`` and ``"fast"``); the full-problem gap is then at most that
plus the KKT slack, and is returned. At ``tol=1e-8`` the coefficients agree with per-target
``celer_path`` to about ``1e-6`` (tests assert ``1e-5`` absolute on standardised data and the same support).

When to use it (the ``"auto"`` rule, :func:`circuitkit.fit.solvers.choose_solver`): a sparse design (SAE features) goes to
``"fast"``; a dense design with CUDA present goes to ``"torch"``; anything else to ``"celer"``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .design import SparseTargets, as_sparse_targets
from .solvers import PathResult, register_solver

logger = logging.getLogger(__name__)


# -- numba kernels ---------------------------------------------------------------------------------------

_KERNEL_NAMES = ['_k_ensure', '_k_exact_candidates', '_k_add_feature', '_k_full_gradient', '_k_ws_objective', '_k_duality_gap', '_k_relaxed_rss', '_k_fit_chunk']
_COMPILED = False


def _kernels():
    """Jit the kernels below (numba, imported lazily) on first use; compiled code is cached on disk.

    The plain functions are replaced in this module's namespace by their jitted versions, so the
    kernels that call each other resolve to compiled code."""
    global _COMPILED
    if not _COMPILED:
        from numba import njit

        g = globals()
        for nm in _KERNEL_NAMES:
            g[nm] = njit(cache=True)(g[nm])
        _COMPILED = True
    return globals()["_k_fit_chunk"]



def _k_ensure(G, W, w, q, wr, need):
    """Grow the working-set arrays to hold ``need`` features."""
    cap = W.shape[0]
    if need <= cap:
        return G, W, w, q, wr
    new = max(need, 2 * cap)
    G2 = np.zeros((new, new))
    G2[:cap, :cap] = G
    W2 = np.full(new, -1, dtype=np.int64)
    W2[:cap] = W
    w2 = np.zeros(new)
    w2[:cap] = w
    q2 = np.zeros(new)
    q2[:cap] = q
    r2 = np.zeros(new)
    r2[:cap] = wr
    return G2, W2, w2, q2, r2


def _k_exact_candidates(g, c, w, W, nW, pos, xnorm, rad, alpha, viol, vg, Xp, Xi, Xd, o, colsum, n, vbuf, rows,
                        mark):
    """Exact gradients of the features whose bound reaches alpha; violators go to viol[1:], |g| to vg[1:],
    their count to vg[0]. Returns the work done (entries read)."""
    p = g.shape[0]
    nrows = 0
    ow = 0.0
    cw = 0.0
    ops = 0
    for a in range(nW):
        wa = w[a]
        if wa == 0.0:
            continue
        k = W[a]
        ow += o[k] * wa
        cw += colsum[k] * wa
        for t in range(Xp[k], Xp[k + 1]):
            i = Xi[t]
            if mark[i] == 0:
                mark[i] = 1
                rows[nrows] = i
                nrows += 1
            vbuf[i] += Xd[t] * wa
            ops += 1
    nv = 0
    for j in range(p):
        if pos[j] < 0 and abs(g[j]) + xnorm[j] * rad > alpha:
            acc = 0.0
            for t in range(Xp[j], Xp[j + 1]):
                acc += Xd[t] * vbuf[Xi[t]]
            ops += Xp[j + 1] - Xp[j]
            gj = c[j] - (acc - o[j] * cw - colsum[j] * ow + n * o[j] * ow) / n
            if abs(gj) > alpha and nv + 1 < viol.shape[0]:
                viol[nv + 1] = j
                vg[nv + 1] = abs(gj)
                nv += 1
    for r in range(nrows):
        i = rows[r]
        vbuf[i] = 0.0
        mark[i] = 0
    vg[0] = nv
    return ops


def _k_add_feature(k, G, W, nW, pos, Xp, Xi, Xd, Rp, Ri, Rd, o, colsum, n):
    """Append feature k to the working set; fill its Gram row/column against the set."""
    a = nW
    pos[k] = a
    W[a] = k
    for b in range(a + 1):
        G[a, b] = 0.0
    ops = 0
    for t in range(Xp[k], Xp[k + 1]):
        i = Xi[t]
        xik = Xd[t]
        ops += Rp[i + 1] - Rp[i]
        for s in range(Rp[i], Rp[i + 1]):
            b = pos[Ri[s]]
            if b >= 0:
                G[a, b] += xik * Rd[s]
    for b in range(a + 1):
        m = W[b]
        val = G[a, b] - o[k] * colsum[m] - colsum[k] * o[m] + n * o[k] * o[m]
        G[a, b] = val
        G[b, a] = val
    return nW + 1, ops

def _k_full_gradient(g, c, w, W, nW, Xp, Xi, Xd, Rp, Ri, Rd, o, colsum, n, vbuf, rows, mark):
    """g = c - X_c' X_c w / n over all p features, touching only the rows of active features."""
    p = g.shape[0]
    nrows = 0
    ow = 0.0
    cw = 0.0
    for a in range(nW):
        wa = w[a]
        if wa == 0.0:
            continue
        k = W[a]
        ow += o[k] * wa
        cw += colsum[k] * wa
        for t in range(Xp[k], Xp[k + 1]):
            i = Xi[t]
            if mark[i] == 0:
                mark[i] = 1
                rows[nrows] = i
                nrows += 1
            vbuf[i] += Xd[t] * wa
    for j in range(p):
        g[j] = c[j] + (o[j] * cw + colsum[j] * ow - n * o[j] * ow) / n
    ops = 0
    for r in range(nrows):
        i = rows[r]
        vi = vbuf[i]
        ops += Rp[i + 1] - Rp[i]
        for s in range(Rp[i], Rp[i + 1]):
            g[Ri[s]] -= Rd[s] * vi / n
        vbuf[i] = 0.0
        mark[i] = 0
    return ops

def _k_ws_objective(G, w, c, W, nW, yty, n, alpha, q):
    """(rss, l1, max |X_W' r| / n, r'y) of the working-set problem, with q = G_W w."""
    cw = 0.0
    wq = 0.0
    l1 = 0.0
    gmax = 0.0
    for a in range(nW):
        cw += c[W[a]] * w[a]
        wq += w[a] * q[a]
        l1 += abs(w[a])
        ga = abs(c[W[a]] - q[a] / n)
        gmax = max(gmax, ga)
    rss = yty - 2.0 * n * cw + wq
    rss = max(rss, 0.0)
    return rss, l1, gmax, yty - n * cw

def _k_duality_gap(rss, l1, gmax, ry, alpha, n):
    scale = 1.0
    if gmax > alpha:
        scale = alpha / gmax
    primal = rss / (2.0 * n) + alpha * l1
    dual = scale * ry / n - scale * scale * rss / (2.0 * n)
    return primal - dual

def _k_relaxed_rss(G, c, W, nW, w, yty, n):
    """RSS of the OLS refit on the support of w (normal equations, least-squares solve)."""
    s = 0
    for a in range(nW):
        if w[a] != 0.0:
            s += 1
    if s == 0:
        return yty
    if s >= n - 1:
        return 0.0
    idx = np.empty(s, dtype=np.int64)
    s = 0
    for a in range(nW):
        if w[a] != 0.0:
            idx[s] = a
            s += 1
    A = np.empty((s, s))
    b = np.empty(s)
    for u in range(s):
        b[u] = n * c[W[idx[u]]]
        for v in range(s):
            A[u, v] = G[idx[u], idx[v]]
    # Cholesky (fast path); a (near-)singular Gram falls back to the minimum-norm least-squares solve,
    # as CircuitLasso's reference does
    L = np.zeros((s, s))
    ok = True
    dmax = 0.0
    for u in range(s):
        dmax = max(dmax, A[u, u])
    for u in range(s):
        acc = A[u, u]
        for m in range(u):
            acc -= L[u, m] * L[u, m]
        if acc <= 1e-10 * dmax:
            ok = False
            break
        L[u, u] = math.sqrt(acc)
        for v in range(u + 1, s):
            acc2 = A[v, u]
            for m in range(u):
                acc2 -= L[v, m] * L[u, m]
            L[v, u] = acc2 / L[u, u]
    val = yty
    if ok:
        z = np.empty(s)  # L z = b; the explained sum of squares is b' A^-1 b = ||z||^2
        for u in range(s):
            acc = b[u]
            for m in range(u):
                acc -= L[u, m] * z[m]
            z[u] = acc / L[u, u]
            val -= z[u] * z[u]
    else:
        coef = np.linalg.lstsq(A, b.reshape(s, 1))[0]
        for u in range(s):
            val -= b[u] * coef[u, 0]
    val = max(val, 0.0)
    return val


def _k_fit_chunk(Xp, Xi, Xd, Rp, Ri, Rd, o, colsum, xnorm, n_rows, Yp, Yi, Yd, ymu, ys, alphas, tol, max_epochs,
              max_rounds, max_add, min_rows, do_relaxed, max_exact, stop_entered):
    p = o.shape[0]
    nq = ymu.shape[0]
    nA = alphas.shape[0]
    rss_out = np.zeros((nA, nq))
    gap_out = np.zeros((nA, nq))
    rel_out = np.zeros((nA, nq))
    skipped = np.zeros(nq, dtype=np.bool_)
    work = np.zeros((nq, 5), dtype=np.int64)  # epochs, gradients, gradient ops, Gram ops, ws size
    cap = 4096
    o_t = np.empty(cap, dtype=np.int64)
    o_k = np.empty(cap, dtype=np.int64)
    o_j = np.empty(cap, dtype=np.int64)
    o_v = np.empty(cap)
    nout = 0
    pos = np.full(p, -1, dtype=np.int64)
    vbuf = np.zeros(n_rows)
    rows = np.empty(n_rows, dtype=np.int64)
    mark = np.zeros(n_rows, dtype=np.int8)
    n = float(n_rows)
    c = np.empty(p)
    g = np.empty(p)
    ever = np.zeros(p, dtype=np.bool_)  # sources that have been nonzero at some grid point (stop_entered)
    for t in range(nq):
        y0, y1 = Yp[t], Yp[t + 1]
        mu, sc = ymu[t], ys[t]
        s1 = 0.0
        s2 = 0.0
        nact = 0
        for u in range(y0, y1):
            s1 += Yd[u]
            s2 += Yd[u] * Yd[u]
            if Yd[u] != 0.0:
                nact += 1
        yty = (s2 - 2.0 * mu * s1 + n * mu * mu) / (sc * sc)
        sum_y = (s1 - n * mu) / sc
        if yty <= 1e-12 * n or nact < min_rows:
            skipped[t] = True
            for k in range(nA):
                rss_out[k, t] = yty
                rel_out[k, t] = yty
            continue
        # c = X_c' y / n
        for j in range(p):
            c[j] = 0.0
        for u in range(y0, y1):
            i = Yi[u]
            yv = Yd[u]
            for s in range(Rp[i], Rp[i + 1]):
                c[Ri[s]] += Rd[s] * yv
        cmax = 0.0
        for j in range(p):
            c[j] = ((c[j] - mu * colsum[j]) / sc - o[j] * sum_y) / n
            g[j] = c[j]
            cmax = max(cmax, abs(c[j]))
        tol_abs = tol * yty / n
        wcap = 64
        G = np.zeros((wcap, wcap))
        W = np.full(wcap, -1, dtype=np.int64)
        w = np.zeros(wcap)
        q = np.zeros(wcap)
        wr = np.zeros(wcap)  # the coefficients at which g was last computed exactly
        nW = 0
        last_rel = yty
        last_nnz = -1
        last_sig = 0.0
        n_ever = 0
        for k in range(nA):
            alpha = alphas[k]
            if cmax <= alpha * (1.0 + 1e-10):  # empty fit (also at alpha_max up to rounding)
                rss_out[k, t] = yty
                rel_out[k, t] = yty
                continue
            prev = alphas[k - 1] if k > 0 else cmax
            prev = min(prev, cmax)
            thr = 2.0 * alpha - prev
            # strong-rule candidates outside the working set, largest |g| first, at most max_add
            ncand = 0
            for j in range(p):
                if pos[j] < 0 and abs(g[j]) >= thr:
                    ncand += 1
            cand = np.empty(ncand, dtype=np.int64)
            ncand = 0
            for j in range(p):
                if pos[j] < 0 and abs(g[j]) >= thr:
                    cand[ncand] = j
                    ncand += 1
            if ncand > max_add:
                order = np.argsort(-np.abs(g[cand]))
                cand = cand[order[:max_add]]
            for j in cand:
                if nW + 1 > W.shape[0]:
                    G, W, w, q, wr = _k_ensure(G, W, w, q, wr, nW + 1)
                nW, ops = _k_add_feature(j, G, W, nW, pos, Xp, Xi, Xd, Rp, Ri, Rd, o, colsum, n)
                work[t, 3] += ops
                acc = 0.0
                for b in range(nW - 1):
                    acc += G[nW - 1, b] * w[b]
                q[nW - 1] = acc
                wr[nW - 1] = 0.0
            certified = False
            for rnd in range(max_rounds):
                # coordinate descent on the working set until its duality gap is small
                for ep in range(max_epochs):
                    work[t, 0] += 1
                    for a in range(nW):
                        h = G[a, a] / n
                        if h <= 0.0:
                            continue
                        ga = c[W[a]] - q[a] / n
                        z = w[a] * h + ga
                        if z > alpha:
                            nw = (z - alpha) / h
                        elif z < -alpha:
                            nw = (z + alpha) / h
                        else:
                            nw = 0.0
                        d = nw - w[a]
                        if d != 0.0:
                            w[a] = nw
                            for b in range(nW):
                                q[b] += G[a, b] * d  # G is symmetric: read the contiguous row
                    if True:  # the working-set gap costs O(|W|): check every epoch
                        rss, l1, gmax, ry = _k_ws_objective(G, w, c, W, nW, yty, n, alpha, q)
                        if _k_duality_gap(rss, l1, gmax, ry, alpha, n) <= tol_abs:
                            break
                # KKT check over all features. |g_j(w) - g_j(w_ref)| <= ||x_j|| ||X_c (w - w_ref)|| / n, so
                # only features whose bound reaches alpha need their exact gradient (from v = X_W w);
                # when too many do, the full gradient is recomputed and becomes the new reference.
                d2 = 0.0
                for a in range(nW):
                    da = w[a] - wr[a]
                    if da != 0.0:
                        acc = 0.0
                        for b in range(nW):
                            db = w[b] - wr[b]
                            if db != 0.0:
                                acc += G[a, b] * db
                        d2 += da * acc
                rad = math.sqrt(max(d2, 0.0)) / n * (1.0 + 1e-9) + 1e-14
                ncand = 0
                for j in range(p):
                    if pos[j] < 0 and abs(g[j]) + xnorm[j] * rad > alpha:
                        ncand += 1
                nviol = 0
                if ncand > max_exact:
                    work[t, 1] += 1
                    work[t, 2] += _k_full_gradient(g, c, w, W, nW, Xp, Xi, Xd, Rp, Ri, Rd, o, colsum, n, vbuf,
                                                   rows, mark)
                    for a in range(nW):
                        wr[a] = w[a]
                    for j in range(p):
                        if pos[j] < 0 and abs(g[j]) > alpha:
                            nviol += 1
                    viol = np.empty(nviol, dtype=np.int64)
                    vg = np.empty(nviol)
                    nviol = 0
                    for j in range(p):
                        if pos[j] < 0 and abs(g[j]) > alpha:
                            viol[nviol] = j
                            vg[nviol] = abs(g[j])
                            nviol += 1
                else:
                    viol = np.empty(ncand + 1, dtype=np.int64)
                    vg = np.empty(ncand + 1)
                    if ncand > 0:
                        work[t, 2] += _k_exact_candidates(g, c, w, W, nW, pos, xnorm, rad, alpha, viol, vg, Xp,
                                                          Xi, Xd, o, colsum, n, vbuf, rows, mark)
                        nviol = int(vg[0])
                        viol = viol[1:nviol + 1]
                        vg = vg[1:nviol + 1]
                if nviol == 0:
                    certified = True
                    break
                if nviol > max_add:
                    order = np.argsort(-vg)
                    viol = viol[order[:max_add]]
                for j in viol:
                    if nW + 1 > W.shape[0]:
                        G, W, w, q, wr = _k_ensure(G, W, w, q, wr, nW + 1)
                    nW, ops = _k_add_feature(j, G, W, nW, pos, Xp, Xi, Xd, Rp, Ri, Rd, o, colsum, n)
                    work[t, 3] += ops
                    acc = 0.0
                    for b in range(nW - 1):
                        acc += G[nW - 1, b] * w[b]
                    q[nW - 1] = acc
                    wr[nW - 1] = 0.0
            rss, l1, gmax, ry = _k_ws_objective(G, w, c, W, nW, yty, n, alpha, q)
            if not certified:  # rounds exhausted: the gap needs the exact gradient everywhere
                _k_full_gradient(g, c, w, W, nW, Xp, Xi, Xd, Rp, Ri, Rd, o, colsum, n, vbuf, rows, mark)
                for a in range(nW):
                    wr[a] = w[a]
                for j in range(p):
                    gmax = max(gmax, abs(g[j]))
            rss_out[k, t] = rss
            gap_out[k, t] = _k_duality_gap(rss, l1, gmax, ry, alpha, n)
            nnz = 0
            sig = 0.0
            for a in range(nW):
                if w[a] != 0.0:
                    nnz += 1
                    sig += (W[a] + 1.0) * (W[a] + 7.0)
                    if nout >= o_t.shape[0]:
                        newcap = 2 * o_t.shape[0]
                        t2 = np.empty(newcap, dtype=np.int64)
                        t2[:nout] = o_t[:nout]
                        o_t = t2
                        k2 = np.empty(newcap, dtype=np.int64)
                        k2[:nout] = o_k[:nout]
                        o_k = k2
                        j2 = np.empty(newcap, dtype=np.int64)
                        j2[:nout] = o_j[:nout]
                        o_j = j2
                        v2 = np.empty(newcap)
                        v2[:nout] = o_v[:nout]
                        o_v = v2
                    o_t[nout] = t
                    o_k[nout] = k
                    o_j[nout] = W[a]
                    o_v[nout] = w[a]
                    nout += 1
            if do_relaxed and (nnz != last_nnz or sig != last_sig):  # support changed: refit
                last_rel = _k_relaxed_rss(G, c, W, nW, w, yty, n)
                last_nnz = nnz
                last_sig = sig
            rel_out[k, t] = last_rel if do_relaxed else rss
            if stop_entered > 0:
                for a in range(nW):
                    if w[a] != 0.0 and not ever[W[a]]:
                        ever[W[a]] = True
                        n_ever += 1
                if n_ever > stop_entered:  # more than stop_entered sources have entered: the rest is not needed
                    for kk in range(k + 1, nA):
                        rss_out[kk, t] = np.nan
                        gap_out[kk, t] = np.nan
                        rel_out[kk, t] = np.nan
                    break
        work[t, 4] = nW
        for a in range(nW):
            pos[W[a]] = -1
            ever[W[a]] = False
    return o_t[:nout], o_k[:nout], o_j[:nout], o_v[:nout], rss_out, gap_out, rel_out, skipped, work



# -- the solver ---------------------------------------------------------------------------------------


@dataclass
class FastConfig:
    """Options of :class:`FastSolver` (defaults are what ``solver="fast"`` uses).

    min_active_rows: skip (and report) targets active in fewer rows than this (``1``: only constant
        targets are skipped, which keeps results identical to the reference).
    max_epochs: coordinate-descent epochs per working-set round.
    max_rounds: KKT rounds (working-set growths) per grid point.
    max_add: features added to the working set per round (largest ``|gradient|`` first).
    max_exact: KKT checks compute exact gradients for up to this many features whose bound reaches
        alpha; beyond it the full gradient is recomputed.
    chunk_targets: targets per joblib task (``None``: about ``4 * n_jobs`` tasks).
    relaxed: compute ``info["relaxed_rss"]`` (OLS refit on each support; needed for (E)BIC selection);
        when ``False`` it holds the Lasso RSS instead.
    stop_entered: ``0`` (default) fits the whole grid. ``q > 0`` stops a target's path at the first grid point
        where more than ``q`` sources have entered it (been nonzero at some grid point so far); later grid
        points are not computed: their coefficients are empty and their ``rss``/``gaps``/``relaxed_rss`` are
        NaN. Stability selection needs only the first ``q`` entrants of each half-sample path
        (:mod:`circuitkit.fit.stability`), and the small-alpha end of a path is where it is most expensive.
    """

    min_active_rows: int = 1
    max_epochs: int = 2000
    max_rounds: int = 100
    max_add: int = 32
    max_exact: int = 256
    chunk_targets: int | None = None
    relaxed: bool = True
    stop_entered: int = 0

    def __post_init__(self) -> None:
        for name in ("min_active_rows", "max_epochs", "max_rounds", "max_add"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < (0 if name == "min_active_rows" else 1):
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if isinstance(self.stop_entered, bool) or not isinstance(self.stop_entered, (int, np.integer)) \
                or self.stop_entered < 0:
            raise ValueError(f"stop_entered must be an int >= 0 (0 = whole grid), got {self.stop_entered!r}")
        if self.chunk_targets is not None and (not isinstance(self.chunk_targets, int) or self.chunk_targets < 1):
            raise ValueError(f"chunk_targets must be None or an int >= 1, got {self.chunk_targets!r}")


def _as_csc_with_offset(X, offset):
    if sp.issparse(X):
        Xc = sp.csc_matrix(X, dtype=np.float64)
        off = np.zeros(X.shape[1]) if offset is None else np.asarray(offset, dtype=np.float64)
    else:
        Xc = sp.csc_matrix(np.asarray(X, dtype=np.float64))
        off = np.zeros(X.shape[1]) if offset is None else np.asarray(offset, dtype=np.float64)
    Xc.sort_indices()
    return Xc, off


def _run_chunk(arrays: dict, Yraw: sp.csc_matrix, ymu, ys, alphas, tol, cfg: FastConfig):
    k = _kernels()
    return k(arrays["Xp"], arrays["Xi"], arrays["Xd"], arrays["Rp"], arrays["Ri"], arrays["Rd"], arrays["o"],
             arrays["colsum"], arrays["xnorm"], int(arrays["n"]), Yraw.indptr.astype(np.int64), Yraw.indices.astype(np.int64),
             Yraw.data.astype(np.float64), ymu, ys, alphas, float(tol), int(cfg.max_epochs), int(cfg.max_rounds),
             int(cfg.max_add), int(cfg.min_active_rows), bool(cfg.relaxed),
             int(cfg.max_exact), int(cfg.stop_entered))


class FastSolver:
    """Sparse covariance coordinate descent with strong-rule screening and KKT checks (module docstring)."""

    name = "fast"

    def __init__(self, config: FastConfig | None = None, **kwargs) -> None:
        if config is not None and kwargs:
            raise ValueError("pass either a FastConfig or keyword options, not both")
        self.config = config if config is not None else FastConfig(**kwargs)

    def path(self, X, Y, alphas, *, offset=None, tol=1e-6, max_iter=50, n_jobs=1) -> PathResult:
        """Fit every target of ``Y`` (dense block or :class:`SparseTargets`) along ``alphas``.

        ``max_iter`` is accepted for interface compatibility; convergence is governed by ``tol`` and
        :class:`FastConfig`."""
        from joblib import Parallel, delayed

        alphas = np.asarray(alphas, dtype=np.float64)
        if alphas.ndim != 1 or alphas.size == 0 or np.any(np.diff(alphas) > 0):
            raise ValueError("alphas must be a non-empty descending 1-D grid")
        targets = as_sparse_targets(Y)
        n, p = X.shape
        if targets.shape[0] != n:
            raise ValueError(f"X has {n} rows but the targets have {targets.shape[0]}")
        Xc, off = _as_csc_with_offset(X, offset)
        R = Xc.tocsr()
        R.sort_indices()
        colsum = np.asarray(Xc.sum(axis=0)).ravel()
        sq = np.asarray(Xc.multiply(Xc).sum(axis=0)).ravel()
        arrays = {"Xp": Xc.indptr.astype(np.int64), "Xi": Xc.indices.astype(np.int64), "Xd": Xc.data,
                  "Rp": R.indptr.astype(np.int64), "Ri": R.indices.astype(np.int64), "Rd": R.data,
                  "o": off, "colsum": colsum, "xnorm": np.sqrt(np.maximum(sq - 2 * off * colsum + n * off**2, 0.0)),
                  "n": n}
        nq = targets.shape[1]
        cfg = self.config
        n_workers = _n_workers(n_jobs)
        if cfg.chunk_targets is not None:
            size = cfg.chunk_targets
        else:
            size = max(1, math.ceil(nq / (4 * n_workers))) if n_workers > 1 else max(nq, 1)
        chunks = [np.arange(s, min(s + size, nq)) for s in range(0, nq, size)]
        Yraw = targets.raw
        Yraw.sort_indices()
        jobs = [(Yraw[:, ch], targets.mean[ch], targets.scale[ch]) for ch in chunks]
        if n_workers == 1 or len(chunks) == 1:
            outs = [_run_chunk(arrays, Yc, mu, sc, alphas, tol, cfg) for Yc, mu, sc in jobs]
        else:
            outs = Parallel(n_jobs=n_workers, max_nbytes="1M")(
                delayed(_run_chunk)(arrays, Yc, mu, sc, alphas, tol, cfg) for Yc, mu, sc in jobs)
        return _assemble(outs, chunks, alphas, nq, p, self.name)


def _n_workers(n_jobs: int) -> int:
    import os

    if n_jobs is None or n_jobs == 0:
        return 1
    if n_jobs < 0:
        return max(1, (os.cpu_count() or 1) + 1 + n_jobs)
    return int(n_jobs)


def _assemble(outs, chunks, alphas, nq, p, name) -> PathResult:
    nA = len(alphas)
    rss = np.zeros((nA, nq))
    gaps = np.zeros((nA, nq))
    rel = np.zeros((nA, nq))
    skipped = np.zeros(nq, dtype=bool)
    work = np.zeros((nq, 5), dtype=np.int64)
    T, K, J, V = [], [], [], []
    for ch, (ot, ok, oj, ov, r, g, rl, sk, ep) in zip(chunks, outs):
        rss[:, ch] = r
        gaps[:, ch] = g
        rel[:, ch] = rl
        skipped[ch] = sk
        work[ch] = ep
        T.append(ch[ot])
        K.append(ok)
        J.append(oj)
        V.append(ov)
    T = np.concatenate(T) if T else np.empty(0, np.int64)
    K = np.concatenate(K) if K else np.empty(0, np.int64)
    J = np.concatenate(J) if J else np.empty(0, np.int64)
    V = np.concatenate(V) if V else np.empty(0)
    coefs = []
    order = np.argsort(K, kind="stable")
    bounds = np.searchsorted(K[order], np.arange(nA + 1))
    for k in range(nA):
        sel = order[bounds[k]:bounds[k + 1]]
        m = sp.csr_matrix((V[sel], (T[sel], J[sel])), shape=(nq, p))
        m.sort_indices()
        coefs.append(m)
    info = {"relaxed_rss": rel, "work": work, "n_skipped": int(skipped.sum())}
    return PathResult(alphas, coefs, rss, gaps, skipped, name, info)


register_solver("fast", FastSolver)



def __getattr__(name: str):
    # old import paths (one release): selection lives in circuitkit.fit.select, the auto rule in solvers
    if name in ("select_per_target", "pick_rows"):
        from . import select

        return getattr(select, name)
    if name == "choose_solver":
        from .solvers import choose_solver

        return choose_solver
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["FastConfig", "FastSolver", "SparseTargets", "as_sparse_targets"]
