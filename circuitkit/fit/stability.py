"""Complementary-pairs stability selection for CircuitLasso (Shah & Samworth 2013; Meinshausen & Buhlmann 2010).

Procedure (``CircuitLasso(selection="stability")``):

1. Draw ``B`` pairs of *disjoint* halves of the ``n`` rows (``floor(n/2)`` rows each, seeded by
   ``random_state``): ``2B`` subsamples in all.
2. On every half, standardise the columns with that half's own mean and scale and fit the Lasso path of
   every target column on its candidate parents, with the same solver and the same alpha grid (the full
   data's) that the full fit uses (:mod:`circuitkit.fit.solvers`; nothing is re-implemented here).
3. Per half and target, the selected set ``S_q`` is *the first ``q`` variables to enter the path*: a source's
   entry index is the first grid point at which its coefficient is nonzero; ``S_q`` holds the sources whose
   entry index is ``<= k*``, with ``k*`` the last grid point at which at most ``q`` sources have entered.
   Sources entering together at one grid point are taken all or none, so ``|S_q| <= q`` always (possibly
   fewer than ``q``: the grid is coarse).
   **Noise floor** (the scaled-Lasso level, Sun & Zhang 2012). A source entering at grid point ``k`` counts
   only while ``alpha_k >= floor * sigma_k * sqrt(2 log p / n_half)``, with ``sigma_k = ||r_k|| / sqrt(n_half)``
   the residual scale of the half's Lasso fit at ``alpha_k``, ``p`` the target's candidate parents and
   ``floor`` ``CircuitLasso.stability_floor`` (default 1); the path is cut at the first point below it.
   The floor applies only to targets whose own term of the bound below exceeds one,
   ``min(q, p)^2 / ((2 pi_thr - 1) p) > 1`` (few candidates, e.g. component sites): there the first-``q`` rule
   alone does not keep the expected number of noise parents of the target under one. Targets with many
   candidates (SAE features, a prediction target with its default ``q_y``) are left to that rule.
   Every column and linear target is standardised, so a source enters at ``alpha = |X_j' r| / n``, and
   ``sigma sqrt(2 log p / n)`` is the size that the largest ``|correlation|`` of ``p`` pure-noise sources with
   a residual of scale ``sigma`` reaches: below it, sources enter by noise. Without the floor, a target with
   few candidates (``p <= q``, as at component level) would select, in every half, every source that enters
   anywhere on the grid, pure noise included. For a target its parents explain well, ``sigma_k`` is small
   and the floor is low, so weak true parents still count. Restricting the regularisation region this way
   only shrinks ``S_q``, so the bound below still holds. A logistic prediction target has no floor (its
   alpha is on the scale of the logistic loss's gradient).
4. The selection probability of (target ``t``, source ``s``) is ``pi_hat = #{halves with s in S_q(t)} / 2B``;
   an edge is kept when ``pi_hat >= pi_thr``.

Error bound. For one target with ``p`` candidate parents, let ``V`` be the number of kept noise sources
(sources not in the true parent set). If (i) the distribution of ``1{s in S_q}`` is exchangeable over the
noise sources and (ii) the procedure is no worse than random guessing (``E|S_q cap N| / |N| <= E|S_q| / p``),
then for ``pi_thr in (1/2, 1]`` (Meinshausen & Buhlmann 2010, Thm 1; valid for complementary pairs by
Shah & Samworth 2013, worst case, no unimodality assumed)::

    E[V_t] <= q^2 / ((2 pi_thr - 1) p_t)

and summed over targets ``E[V] <= sum_t q^2 / ((2 pi_thr - 1) p_t)``: this is
``circuit_.meta["expected_false_edges_bound"]``. Slack: the bound uses ``|S_q| <= q``, while the
realised mean ``|S_q|`` is often smaller (grid ties), so it is conservative; it is an *expectation*, not a
high-probability guarantee, and (i) fails when noise sources are correlated with true parents (e.g. a
source co-active with a parent), which is the usual way the bound is exceeded in practice. Node-level
edges of block nodes (component level) keep the largest column-pair probability of the block; a kept node
edge implies at least one kept column pair, so the count of false node edges is bounded by the same sum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from joblib import Parallel, delayed

from .design import column_stats
from .solvers import get_solver


@dataclass
class StabilityResult:
    """``probability``: CSR ``[n_cols, n_cols]`` (rows targets, columns sources) selection probabilities;
    ``halves``: the ``2B`` row-index arrays (pair ``b`` is ``halves[2b], halves[2b+1]``);
    ``n_candidates``: candidate parents per fitted target column (``{column: p}``); ``bound``: the summed
    ``E[V]`` bound of the module docstring (prediction targets included); ``y_probability``: CSR
    ``[n_y, n_cols]`` selection probabilities of the prediction target(s)' sources (``None`` without ``y``);
    ``q_y``: the ``q`` used for the prediction target(s)."""

    probability: sp.csr_matrix
    halves: list[np.ndarray]
    n_candidates: dict[int, int]
    bound: float
    y_probability: sp.csr_matrix | None = None
    q_y: int | None = None


def complementary_halves(n_rows: int, n_pairs: int, random_state) -> list[np.ndarray]:
    """``2 * n_pairs`` sorted row-index arrays: ``n_pairs`` random splits into two disjoint halves."""
    rng = np.random.default_rng(random_state)
    half = n_rows // 2
    out = []
    for _ in range(n_pairs):
        perm = rng.permutation(n_rows)
        out.append(np.sort(perm[:half]))
        out.append(np.sort(perm[half:2 * half]))
    return out


def first_q(entry: np.ndarray, q: int) -> np.ndarray:
    """Boolean mask of the sources among the first ``q`` to enter the path (module docstring, step 3).
    ``entry``: grid index at which each source first enters (``-1`` = never)."""
    ent = entry[entry >= 0]
    if ent.size == 0:
        return np.zeros(entry.shape, dtype=bool)
    ks = np.unique(ent)
    counts = np.array([(ent <= k).sum() for k in ks])
    ok = ks[counts <= q]
    if ok.size == 0:
        return np.zeros(entry.shape, dtype=bool)
    return (entry >= 0) & (entry <= ok.max())


def _entry_index(coefs: list[sp.csr_matrix]) -> sp.csr_matrix:
    """CSR with entry ``k + 1`` at the first grid index ``k`` where each coefficient is nonzero."""
    shape = coefs[0].shape
    rows, cols, lvl = [], [], []
    for k, c in enumerate(coefs):
        c = c.tocoo()
        nz = c.data != 0
        rows.append(c.row[nz])
        cols.append(c.col[nz])
        lvl.append(np.full(int(nz.sum()), k + 1, dtype=np.float64))
    r, c, v = np.concatenate(rows), np.concatenate(cols), np.concatenate(lvl)
    if r.size == 0:
        return sp.csr_matrix(shape, dtype=np.float64)
    key = r.astype(np.int64) * shape[1] + c
    order = np.lexsort((v, key))  # by pair, then by grid index: the first of each pair is its entry
    first = np.ones(order.size, dtype=bool)
    first[1:] = key[order][1:] != key[order][:-1]
    o = order[first]
    return sp.csr_matrix((v[o], (r[o], c[o])), shape=shape)


def half_solver(solver_name: str, q: int):
    """The solver a half-sample path runs with: ``"fast"``, ``"dense"``, ``"gram"`` and ``"celer"`` stop each target's
    path once more than ``q`` sources have entered (``FastConfig(stop_entered=q, relaxed=False)``,
    ``DenseConfig(stop_entered=q, relaxed=False)``, ``GramSolver(stop_entered=q, relaxed=False)``,
    ``CelerSolver(stop_entered=q)``):
    ``S_q`` needs nothing past that point, and the small-alpha end is the expensive part of a path. Other solvers
    (torch, dask) fit the whole grid."""
    if solver_name == "fast":
        from .fast import FastConfig, FastSolver

        return FastSolver(FastConfig(stop_entered=int(q), relaxed=False))
    if solver_name == "dense":
        from .dense import DenseConfig, DenseSolver

        return DenseSolver(DenseConfig(stop_entered=int(q), relaxed=False))
    if solver_name == "celer":
        from .celer_solver import CelerSolver

        return CelerSolver(stop_entered=int(q))
    if solver_name == "gram":
        from .gram import GramSolver

        return GramSolver(stop_entered=int(q), relaxed=False)
    return get_solver(solver_name)


def bound_term(q: int, p: int, pi_thr: float) -> float:
    """One target's term of the ``E[V]`` bound: ``min(q, p)^2 / ((2 pi_thr - 1) p)`` (0 for ``p == 0``)."""
    return float(min(q, p) ** 2 / ((2 * pi_thr - 1) * p)) if p > 0 else 0.0


def floor_for(floor: float, q: int, p: int, pi_thr: float) -> float:
    """The noise-floor multiplier a target gets (module docstring, step 3): ``floor`` where its bound term
    exceeds 1, else 0."""
    return float(floor) if bound_term(q, p, pi_thr) > 1.0 else 0.0


def floor_index(rss: np.ndarray, alphas: np.ndarray, floor: float, n_candidates: int, n_rows: int) -> np.ndarray:
    """Per target, the last grid index a half's path is followed to (module docstring, step 3): the point
    before the first ``k`` with ``alpha_k < floor * sqrt(rss_k / n) * sqrt(2 log p / n)`` (``p`` at least 2).
    ``rss``: ``[n_alphas, n_targets]`` residual sums of squares (NaN past a stopped path: a cut).
    ``-1``: not even the first point; ``n_alphas - 1`` for ``floor == 0``."""
    n_alphas = len(alphas)
    if floor <= 0:
        return np.full(rss.shape[1], n_alphas - 1, dtype=np.int64)
    lam0 = np.sqrt(2.0 * np.log(max(int(n_candidates), 2)) / n_rows)
    with np.errstate(invalid="ignore"):
        ok = np.asarray(alphas)[:, None] >= floor * lam0 * np.sqrt(np.maximum(rss, 0.0) / n_rows)
    bad = ~ok  # NaN compares False: a cut
    return np.where(bad.any(axis=0), bad.argmax(axis=0), n_alphas).astype(np.int64) - 1


def _floored_entry(res, alphas, floor: float, n_candidates: int, n_rows: int) -> np.ndarray:
    """``[n_targets, n_sources]`` entry grid indices (-1: never) of a half's path, with entries past each
    target's :func:`floor_index` removed. A solver may hand the entry indices over in ``res.info["entry"]``."""
    ent = res.info.get("entry")
    ent = _entry_index(res.coefs).toarray().astype(np.int64) - 1 if ent is None else np.array(ent, dtype=np.int64)
    kmax = floor_index(np.asarray(res.rss, dtype=np.float64), alphas, floor, n_candidates, n_rows)
    ent[ent > kmax[:, None]] = -1
    return ent


def _fit_y_half(est, Xs, offset, live, rows, y_problem, alphas, solver_name, q):
    """Selected (prediction target, source column) pairs on one half: the target(s) ``y`` fitted on the half's
    standardised live candidate columns with the full fit's solver (L1 least squares, or L1 logistic)."""
    sc = y_problem["cols"][live[y_problem["cols"]]]
    empty = (np.empty(0, np.int64), np.empty(0, np.int64))
    if sc.size == 0:
        return empty
    if y_problem["kind"] == "linear":
        Y = y_problem["Y"][rows]
        sd = Y.std(0)
        ok = sd > 0
        Y = np.asfortranarray((Y - Y.mean(0)) / np.where(ok, sd, 1.0))
        res = half_solver(solver_name, q).path(Xs[:, sc], Y, alphas, offset=None if offset is None else offset[sc],
                                           tol=est.tol, max_iter=est.max_iter, n_jobs=1)
    else:
        Ys = np.column_stack([y[rows] for y in y_problem["Ys"]])
        ok = Ys.min(0) != Ys.max(0)  # a class absent from this half: no selection for it
        if not ok.any():
            return empty
        res = get_solver("logistic").path(Xs[:, sc], Ys, alphas, offset=None if offset is None else offset[sc],
                                          tol=est.tol)
    floor = y_problem["floor"] if y_problem["kind"] == "linear" else 0.0
    ent = _floored_entry(res, alphas, floor, sc.size, len(rows))
    ts, ss = [], []
    for j in np.flatnonzero(ok):
        m = np.flatnonzero(first_q(ent[j], q))
        ts.append(np.full(m.size, j))
        ss.append(sc[m])
    return (np.concatenate(ts), np.concatenate(ss)) if ts else empty


def _fit_half(est, design, rows, problems, alphas, solver_name, q, y_problem=None, floor=0.0, pi_thr=0.6,
              gram_cols=None):
    """Selected (target column, source column) pairs on one half (arrays of column indices), and the same for
    the prediction target(s) when ``y_problem`` is given (``(y index, source column)``). ``gram_cols``: solver
    ``"gram"`` on a dense design, the columns the problems use (:func:`_gram_half` fits the site targets)."""
    empty = np.empty(0, np.int64)
    site = None
    if gram_cols is not None:
        site = _gram_half(est, design, rows, gram_cols, problems, alphas, q, floor, pi_thr)
        if y_problem is None:
            return site[0], site[1], empty, empty
    D = design[rows]
    mean, std = column_stats(D)
    live = std > 1e-12
    safe = np.where(live, std, 1.0)
    Xs, offset = est._standardise(D, mean, safe, live)
    ty, sy = ((empty, empty) if y_problem is None else
              _fit_y_half(est, Xs, offset, live, rows, y_problem, alphas, solver_name, y_problem["q"]))
    if site is not None:
        return site[0], site[1], ty, sy
    solver = half_solver(solver_name, q)
    ts, ss = [], []
    for tcols, scols in problems:
        sc = scols[live[scols]]
        if sc.size == 0:
            continue
        Yp = est._target_block(D, tcols, mean, safe)
        res = solver.path(Xs[:, sc], Yp, alphas, offset=None if offset is None else offset[sc], tol=est.tol,
                          max_iter=est.max_iter, n_jobs=1)
        fl = floor_for(floor, q, len(scols), pi_thr)
        ent = _floored_entry(res, alphas, fl, sc.size, len(rows))   # [n_targets, n_sources], -1 = never
        for j in range(len(tcols)):
            if not live[tcols[j]]:
                continue
            m = np.flatnonzero(first_q(ent[j], q))
            ts.append(np.full(m.size, tcols[j]))
            ss.append(sc[m])
    if not ts:
        return empty, empty, ty, sy
    return np.concatenate(ts), np.concatenate(ss), ty, sy


def _gram_half(est, design, rows, cols, problems, alphas, q, floor, pi_thr) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_fit_half`'s site targets for solver ``"gram"``: the Gram of the half's standardised ``cols`` (every
    column a problem uses) once, then every block's stopped paths, noise floors and first-``q`` sets in one numba
    call (:func:`circuitkit.fit.gram.select_first_q`; the same steps as the generic loop). Returns the selected
    ``(target column, source column)`` pairs."""
    from .gram import select_first_q

    D = np.asarray(design[np.ix_(rows, cols)], dtype=np.float64)
    mean = D.mean(axis=0)
    A = D - mean
    std = np.sqrt((A * A).mean(axis=0))
    ok = std > 1e-12
    if est.standardize:
        A /= np.where(ok, std, 1.0)
    G = A.T @ A
    live = np.zeros(design.shape[1], dtype=bool)
    live[cols] = ok
    pos = np.full(design.shape[1], -1, dtype=np.int64)
    pos[cols] = np.arange(cols.size)
    blocks = []
    for tcols, scols in problems:
        sc, tl = scols[live[scols]], tcols[live[tcols]]
        if sc.size and tl.size:
            blocks.append((pos[tl], pos[sc], floor_for(floor, q, len(scols), pi_thr)))
    counts = np.zeros((cols.size, cols.size), dtype=np.int64)
    select_first_q(G, len(rows), blocks, alphas, q=q, tol=est.tol, counts=counts)
    r, c = np.nonzero(counts)
    return cols[r], cols[c]


def default_q_y(q: int, n_candidates: int, pi_thr: float) -> int:
    """``q`` of a prediction target when ``stability_q_y`` is ``None``: the largest ``q_y`` whose own bound term
    ``q_y^2 / ((2 pi_thr - 1) p)`` is at most 1 (one expected false source of ``y``), and never below ``q``.
    ``y`` has every latent of every site as a candidate (``p`` in the thousands), so the site targets' ``q`` would
    let only a handful enter each half and nothing would reach ``pi_thr``."""
    return max(int(q), int(np.floor(np.sqrt((2 * pi_thr - 1) * max(n_candidates, 0)))))


def stability_probabilities(est, design, problems, alphas, *, solver_name: str, q: int, n_pairs: int, pi_thr: float,
                            random_state=None, n_jobs: int = 1, y_problem: dict | None = None,
                            q_y: int | None = None, floor: float = 0.0) -> StabilityResult:
    """Selection probabilities over ``2 * n_pairs`` complementary halves (module docstring). ``est`` is the
    :class:`~circuitkit.fit.lasso.CircuitLasso` whose standardisation and target blocks are reused;
    ``problems`` its ``(target columns, candidate source columns)`` list; ``alphas`` the full-data grid;
    ``y_problem`` the prediction target(s): ``{"kind": "linear", "Y": [n, n_y]}`` or ``{"kind": "logistic",
    "Ys": [arrays]}``, with ``"cols"`` their candidate source columns; ``q_y`` their ``q`` (``None``:
    :func:`default_q_y`); ``floor`` the noise-floor multiplier (module docstring, step 3; 0: off)."""
    n_rows, n_cols = design.shape
    halves = complementary_halves(n_rows, n_pairs, random_state)
    if sp.issparse(design):
        design = sp.csr_matrix(design)
    if y_problem is not None:
        q_y = default_q_y(q, len(y_problem["cols"]), pi_thr) if q_y is None else int(q_y)
        y_problem = {**y_problem, "q": q_y, "floor": floor_for(floor, q_y, len(y_problem["cols"]), pi_thr)}
    gram_cols = None
    if solver_name == "gram" and not sp.issparse(design) and problems:
        gram_cols = np.unique(np.concatenate([np.concatenate([t, s]) for t, s in problems]))
    outs = Parallel(n_jobs=n_jobs)(delayed(_fit_half)(est, design, h, problems, np.asarray(alphas), solver_name, q,
                                                      y_problem, float(floor), pi_thr, gram_cols) for h in halves)
    t = np.concatenate([o[0] for o in outs]) if outs else np.empty(0, np.int64)
    s = np.concatenate([o[1] for o in outs]) if outs else np.empty(0, np.int64)
    prob = sp.csr_matrix((np.full(t.size, 1.0 / len(halves)), (t, s)), shape=(n_cols, n_cols))
    prob.sum_duplicates()
    n_cand = {int(c): len(scols) for tcols, scols in problems for c in tcols}
    bound = float(sum(bound_term(q, p, pi_thr) for p in n_cand.values()))
    y_prob = None
    if y_problem is not None:
        n_y = y_problem["Y"].shape[1] if y_problem["kind"] == "linear" else len(y_problem["Ys"])
        ty = np.concatenate([o[2] for o in outs])
        sy = np.concatenate([o[3] for o in outs])
        y_prob = sp.csr_matrix((np.full(ty.size, 1.0 / len(halves)), (ty, sy)), shape=(n_y, n_cols))
        y_prob.sum_duplicates()
        p = len(y_problem["cols"])
        bound += n_y * bound_term(y_problem["q"], p, pi_thr)
    return StabilityResult(prob, halves, n_cand, bound, y_prob, None if y_problem is None else y_problem["q"])


__all__ = [
    "StabilityResult",
    "bound_term",
    "complementary_halves",
    "default_q_y",
    "first_q",
    "floor_for",
    "floor_index",
    "half_solver",
    "stability_probabilities",
]
