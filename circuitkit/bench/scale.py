"""Scale benchmark: SAE-feature circuits at real-model width, fast vs the naive per-target celer loop.

Protocol (fixed seeds):

* **Data.** Two SAE-like sites with ``D`` features each and ``M`` rows (:func:`make_pair`): source
  features with heavy-tailed (Zipf-like) frequencies and ~32 active per row, log-normal magnitudes.
  Planted parents are drawn among the sources active in at least ``min_parent_rows`` rows
  (``--min-parent-rows``, default 1: every live source). A larger value (e.g. 10) excludes parents that are
  almost never active -- 76% of live sources at D=24,576 -- and reports the fraction
  (``parents_excluded_frac``); a target then gets 0-3 planted parents (3% none) only with probability
  ``|eligible| / |live|``, so an eligible source keeps its out-degree and ~40 targets stay active per row.
  That variant does *not* raise the AUROC (0.922 vs 0.924) and makes the fit slower (77% of targets are
  parentless noise), so it is not the default: the planted edges that no method recovers are negative
  edges that never change their target (``auroc_exercised``; :func:`exercised_rows`).
  Weights in [0.5, 1.5], negative for a fraction ``neg_frac`` (``--neg-frac``, default 0: with no
  baseline, a negative edge changes its target only where a positive parent is co-active, ~1% of them, so
  the rest would be planted yet invisible in the data; 0.15 is the earlier mix). A target is ``relu`` of
  its parents' weighted sum with 20% multiplicative and small additive noise, plus ~5 spontaneous
  activations per row, giving ~50 active target features per row by default. Some features are dead (never active) and are skipped and
  counted. ``--inhibitory F`` gives a fraction ``F`` of the driven targets one extra inhibitory parent and
  ``--encoder-bias B`` (<= 0) shifts every target's pre-activation like an SAE encoder's bias
  (:func:`make_pair`); both 0 by default (the data are then unchanged).
* **fast.** What ``CircuitLasso(solver="fast")`` does for one layer pair: standardise (sparse, column
  scaling + offsets), the default grid (16 alphas from the largest ``alpha_max`` down to 1% of it), the
  exact Lasso path of every live target (``FastSolver``, ``n_jobs`` processes, ``tol=1e-6``), per-target
  eBIC on relaxed residuals. ``seconds`` is all of it.
* **naive-celer.** ``celer_path`` per target (the reference solver, warm-started along the same grid,
  same tol) on a random sample of ``--naive-targets`` live targets, timed and scaled linearly to all live
  targets (``extrapolated: true``). Its AUROC/precision are on the sampled targets only, and
  ``max_coef_diff`` is the largest difference between the fast and celer coefficients on them.
* **Metrics.** ``auroc``: over all ``D x D`` candidate edges, each scored by the largest alpha at which
  it enters the path (0 if never), against the planted edges as generated;
  ``planted_never_entered_frac``: planted edges that never enter the path (they tie with almost every
  negative); ``auroc_coef_tiebreak``: the same score with ties at one grid alpha broken by
  ``|coefficient|`` at the bottom of the grid (:func:`coef_tiebreak`); ``precision``: precision at ``|true|``
  (the ``|true|`` best-scored edges; ties at the cut counted fractionally), as in the method's metrics;
  ``precision_selected``/``recall_selected``: of the per-target eBIC circuit.
* **Memory.** ``peak_mb``: the peak resident set size (RSS) of this process plus its child processes
  (the joblib workers), sampled every 20 ms with psutil while the step runs -- absolute, including the
  data and the Python interpreter.
* **Capture.** Throughput of :func:`circuitkit.capture` (nnsight trace, every residual-stream site, all
  positions) against a bare forward pass (:func:`circuitkit.forward`) on the toy LM; and the peak RSS of
  :func:`circuitkit.store.capture_to_disk` with the toy LM's SAEs (each size in a fresh subprocess, RSS
  sampled with psutil from after the model is loaded to the end) at two dataset sizes with the same
  chunk size, next to in-memory capture+encode. ``capture-stream-fixed-mmap`` repeats the streaming
  capture with glibc's ``MALLOC_MMAP_THRESHOLD_=4194304``: with glibc's default (dynamic) threshold, freed
  chunk-sized arrays leave a fragmented heap, and the sampled peak drifts up by tens of MB with the number
  of chunks although nothing is kept from one chunk to the next.
  If the toy LM is not built, a random-weight GPT-2 of the same shape stands in (``model`` says which).

Run::

    python -m circuitkit bench scale --json outputs/scale.json
    python -m circuitkit bench scale --quick          # D=4096 only, fewer naive targets, small capture
    python -m circuitkit bench scale --sizes 24576 --no-capture --naive-targets 30
    python -m circuitkit bench scale --no-fits --capture-sizes 1024 16384   # streaming-capture memory only
    # selected circuits: eBIC on all rows / on reachable rows, stability (E[V] bound vs observed false edges)
    python -m circuitkit bench scale --sizes 1024 --inhibitory 0.5 --encoder-bias -0.2 --no-naive --no-capture \
        --selection ebic stability --target-rows all reachable

With ``--selection`` other than ``ebic`` alone, or ``--target-rows reachable``, each valid (selection,
target_rows) pair gets a record (:func:`selection_records`): seconds and their ratio to the first mode's
(eBIC on all rows), precision/recall of the *selected* circuit, the recall of planted negative edges with the
right sign (all, and those exercised in >= 5 rows), and for stability selection its E[V] bound next to the
observed false edges. ``--no-naive`` skips the naive celer loop (and then the per-size record has the fast
fit's metrics only).

Results and their reading: ``benchmarks/scale.md``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from typing_extensions import Self

logger = logging.getLogger(__name__)

DEFAULT_SIZES = (4096, 16384, 24576)
DEFAULT_M = 10_000
MIN_PARENT_ROWS = 1
# Planted negative (inhibitory) edges. A target is relu(sum of its parents) with no baseline, so a negative
# edge changes its target only where a positive parent of the same target is co-active: with SAE-sparse
# sources that is ~1% of negative edges, and the rest are planted but have no effect on the data. The
# default plants identifiable (excitatory) edges only; --neg-frac 0.15 gives the earlier mix.
NEG_FRAC = 0.0


# -- data -------------------------------------------------------------------------------------------


def make_pair(D: int, M: int, *, seed: int = 0, l0: float = 32.0, spontaneous: float = 5.0,
              min_parent_rows: int = MIN_PARENT_ROWS, neg_frac: float = NEG_FRAC, inhibitory: float = 0.0,
              encoder_bias: float = 0.0):
    """Synthetic SAE codes of two sites with a planted sparse map (module docstring).

    ``inhibitory``: the fraction of targets with a planted (excitatory) parent that also get one inhibitory
    parent, weight in [-1.5, -0.5], drawn among the eligible sources like the excitatory parents (uniformly).
    An inhibitor changes its target only where the target is otherwise on, so with SAE-sparse sources most
    are exercised in few rows (:func:`exercised_rows` counts them). ``encoder_bias`` (<= 0): added
    to every target's pre-activation, as an SAE encoder's negative bias: weak drive does not fire the
    target. (It is added where the target has drive; elsewhere the pre-activation is 0 and ``relu(b) = 0``,
    so this is exact.) With both at 0 the data are exactly those of the earlier generator.

    Planted parents are drawn only among sources active in at least ``min_parent_rows`` of the ``M`` rows:
    an edge whose parent is (almost) never active is not exercised by the data and cannot be recovered by
    any observational method. Rarer sources stay in the data as candidate parents (negatives);
    :func:`parent_eligibility` says how many there are. ``min_parent_rows=1`` draws among all live sources.

    Returns ``(Zs [M, D] CSC, Zt [M, D] CSC, A [D, D] CSR)`` with ``A[p, q] != 0`` for planted edges
    ``source p -> target q``."""
    if D < 2 or M < 2:
        raise ValueError(f"need D >= 2 and M >= 2, got D={D}, M={M}")
    if isinstance(neg_frac, bool) or not isinstance(neg_frac, (int, float)) or not 0 <= neg_frac < 1:
        raise ValueError(f"neg_frac must be a float in [0, 1), got {neg_frac!r}")
    if isinstance(inhibitory, bool) or not isinstance(inhibitory, (int, float)) or not 0 <= inhibitory <= 1:
        raise ValueError(f"inhibitory must be a fraction in [0, 1], got {inhibitory!r}")
    if isinstance(encoder_bias, bool) or not isinstance(encoder_bias, (int, float)) or not (
            np.isfinite(encoder_bias) and encoder_bias <= 0):
        raise ValueError(f"encoder_bias must be a finite number <= 0 (an SAE encoder's threshold), got {encoder_bias!r}")
    if not isinstance(min_parent_rows, (int, np.integer)) or min_parent_rows < 1:
        raise ValueError(f"min_parent_rows must be a positive int, got {min_parent_rows!r}")
    rng = np.random.default_rng(seed)
    ranks = rng.permutation(D)
    w = (ranks + 10.0) ** -0.9
    prob = np.minimum(w / w.sum() * l0, 0.25)
    counts = rng.binomial(M, prob)
    feat = np.repeat(np.arange(D), counts)
    rows = rng.integers(0, M, size=feat.size)
    key = np.unique(rows.astype(np.int64) * D + feat)
    rows, feat = key // D, key % D
    Zs = sp.csr_matrix((rng.lognormal(0, 0.5, size=key.size), (rows, feat)), shape=(M, D))
    active_rows = np.bincount(feat, minlength=D)  # rows in which each source is active (after de-duplication)
    eligible = np.flatnonzero(active_rows >= min_parent_rows)
    if eligible.size == 0:
        raise ValueError(f"no source is active in >= {min_parent_rows} of {M} rows; lower min_parent_rows")
    # 0-3 parents per target; a target gets any only with probability |eligible| / |live|, so that an eligible
    # source has the out-degree a live source had when parents were drawn among all live sources (otherwise
    # the frequent eligible sources would drive ~3x as many target activations per row)
    k = rng.choice([0, 1, 2, 3], size=D, p=[0.03, 0.5, 0.3, 0.17])
    k[rng.random(D) >= eligible.size / max(int((active_rows > 0).sum()), 1)] = 0
    tgt = np.repeat(np.arange(D), k)
    src = rng.choice(eligible, size=tgt.size)
    wt = rng.uniform(0.5, 1.5, size=tgt.size) * np.where(rng.random(tgt.size) < 1 - neg_frac, 1, -1)
    if inhibitory > 0:
        driven = np.unique(tgt[wt > 0])
        inh_t = driven[rng.random(driven.size) < inhibitory]
        inh_s = rng.choice(eligible, size=inh_t.size)
        src, tgt = np.concatenate([src, inh_s]), np.concatenate([tgt, inh_t])
        wt = np.concatenate([wt, -rng.uniform(0.5, 1.5, size=inh_t.size)])
    A = sp.csr_matrix((wt, (src, tgt)), shape=(D, D))
    A.sum_duplicates()
    pre = (Zs @ A).tocsr()
    pre.data = pre.data * (1 + 0.2 * rng.standard_normal(pre.data.size)) + 0.05 * rng.standard_normal(pre.data.size)
    if encoder_bias:
        pre.data = pre.data + float(encoder_bias)
    ns = rng.poisson(spontaneous * M)
    noise = sp.csr_matrix((rng.lognormal(0, 0.5, ns), (rng.integers(0, M, ns), rng.integers(0, D, ns))),
                          shape=(M, D))
    Zt = (pre + noise).tocsr()
    Zt.data = np.maximum(Zt.data, 0)
    Zt.eliminate_zeros()
    return Zs.tocsc(), Zt.tocsc(), A


def parent_eligibility(Zs: sp.spmatrix, min_parent_rows: int = MIN_PARENT_ROWS) -> dict:
    """How many sources :func:`make_pair` could not draw as planted parents: ``excluded_frac`` of the live
    (ever active) sources are active in fewer than ``min_parent_rows`` rows; ``dead_frac`` of all sources
    are never active."""
    active = np.diff(sp.csc_matrix(Zs).indptr)
    live = int((active > 0).sum())
    excluded = int(((active > 0) & (active < min_parent_rows)).sum())
    return {"min_parent_rows": int(min_parent_rows), "sources_live": live, "sources_excluded": excluded,
            "excluded_frac": excluded / live if live else float("nan"),
            "dead_frac": float((active == 0).mean())}


def exercised_rows(Zs: sp.spmatrix, A: sp.spmatrix) -> tuple[sp.coo_matrix, np.ndarray]:
    """For every planted edge ``p -> q`` (``A`` as COO, returned), the number of rows in which it changes its
    target: ``p`` is active and ``relu(pre_q) != relu(pre_q - w x_p)``, with ``pre = Zs @ A`` the noise-free
    pre-activation. A negative edge is exercised only where the target's other parents push it above zero,
    which for rare sources almost never happens."""
    Zs = sp.csc_matrix(Zs)
    E = sp.coo_matrix(A)
    D = Zs.shape[1]
    pre = sp.coo_matrix(Zs @ A)
    pkey = pre.row.astype(np.int64) * D + pre.col
    order = np.argsort(pkey)
    pkey, pval = pkey[order], pre.data[order]
    n_act = np.diff(Zs.indptr)[E.row]
    edge = np.repeat(np.arange(E.nnz), n_act)
    starts = np.repeat(Zs.indptr[E.row], n_act)
    offs = np.arange(edge.size) - np.repeat(np.cumsum(n_act) - n_act, n_act)
    rows, x = Zs.indices[starts + offs], Zs.data[starts + offs]
    key = rows.astype(np.int64) * D + E.col[edge]
    at = np.minimum(np.searchsorted(pkey, key), max(len(pkey) - 1, 0))
    val = np.where(pkey[at] == key, pval[at], 0.0) if len(pkey) else np.zeros(key.size)
    changed = np.maximum(val, 0) != np.maximum(val - E.data[edge] * x, 0)
    return E, np.bincount(edge[changed], minlength=E.nnz)


def auroc_exercised(entry: sp.csr_matrix, truth: sp.csr_matrix, exercised: sp.csr_matrix) -> float:
    """AUROC with only the exercised planted edges as positives; the other planted edges are left out of the
    candidates (neither positive nor negative). Matrices are ``[targets, sources]``."""
    entry, truth = sp.csr_matrix(entry), sp.csr_matrix(truth != 0, dtype=np.float64)
    ex = sp.csr_matrix(exercised != 0, dtype=np.float64).multiply(truth)
    pos = np.asarray(entry[ex.nonzero()]).ravel()
    neg = entry - entry.multiply(truth)
    neg.eliminate_zeros()
    return auroc_from_scores(pos, neg.data, truth.shape[0] * truth.shape[1] - truth.nnz)


def standardise(Zs: sp.csc_matrix, Zt: sp.csc_matrix):
    """The estimator's preprocessing: live source columns scaled to unit variance with their means as
    offsets; targets as :class:`~circuitkit.fit.design.SparseTargets` (what the solvers receive)."""
    from ..fit.design import SparseTargets

    mean = np.asarray(Zs.mean(0)).ravel()
    sd = np.sqrt(np.maximum(np.asarray(Zs.multiply(Zs).mean(0)).ravel() - mean**2, 0))
    live = np.flatnonzero(sd > 0)
    Xs = sp.csc_matrix(Zs[:, live] @ sp.diags(1 / sd[live]))
    ym = np.asarray(Zt.mean(0)).ravel()
    ysd = np.sqrt(np.maximum(np.asarray(Zt.multiply(Zt).mean(0)).ravel() - ym**2, 0))
    return Xs, mean[live] / sd[live], live, SparseTargets(Zt, ym, np.where(ysd > 0, ysd, 1.0))


# -- metrics ------------------------------------------------------------------------------------------


def auroc_from_scores(pos_scores: np.ndarray, neg_nonzero: np.ndarray, n_neg_total: int) -> float:
    """AUROC when most negatives score exactly 0: ``pos_scores`` for all positives, ``neg_nonzero`` the
    nonzero negative scores, ``n_neg_total`` all negatives (ties count one half)."""
    n_pos = len(pos_scores)
    if n_pos == 0 or n_neg_total == 0:
        return float("nan")
    neg = np.concatenate([neg_nonzero, np.zeros(n_neg_total - len(neg_nonzero))]) if len(neg_nonzero) < 5e7 else None
    if neg is None:  # pragma: no cover
        raise ValueError("too many nonzero negative scores")
    neg.sort()
    lo = np.searchsorted(neg, pos_scores, side="left")
    hi = np.searchsorted(neg, pos_scores, side="right")
    return float((lo + 0.5 * (hi - lo)).sum() / (n_pos * n_neg_total))


def edge_metrics(path_entry: sp.csr_matrix, selected: sp.csr_matrix, truth: sp.csr_matrix,
                 rows: np.ndarray | None = None) -> dict:
    """AUROC of path-entry scores and precision/recall of the selected edges; matrices are
    ``[targets, sources]``; ``rows`` restricts to some targets."""
    if rows is not None:
        path_entry, selected, truth = path_entry[rows], selected[rows], truth[rows]
    truth = sp.csr_matrix(truth != 0, dtype=np.float64)
    n_cand = truth.shape[0] * truth.shape[1]
    pe = sp.csr_matrix(path_entry)
    pos_scores = np.asarray(pe[truth.nonzero()]).ravel()
    neg = pe - pe.multiply(truth)
    neg.eliminate_zeros()
    auroc = auroc_from_scores(pos_scores, neg.data, n_cand - truth.nnz)
    sel = sp.csr_matrix(selected != 0, dtype=np.float64)
    tp = sel.multiply(truth).sum()
    # precision at |true|: the |true| edges with the highest path-entry scores (ties at the cut broken by
    # |coefficient at the selected alpha| is not needed: scores are grid alphas, so count ties fractionally)
    n_true = truth.nnz
    all_scores = np.concatenate([pos_scores, neg.data])
    is_pos = np.concatenate([np.ones(len(pos_scores), bool), np.zeros(len(neg.data), bool)])
    order = np.argsort(-all_scores, kind="stable")
    s_sorted, p_sorted = all_scores[order], is_pos[order]
    if n_true and len(s_sorted):
        cut = s_sorted[min(n_true, len(s_sorted)) - 1]
        above = s_sorted > cut
        at = s_sorted == cut
        room = n_true - above.sum()
        frac = room / at.sum() if at.sum() else 0.0
        hits = p_sorted[above].sum() + frac * p_sorted[at].sum()
        p_at_true = float(hits / n_true) if cut > 0 else float(p_sorted[above].sum() / n_true)
    else:
        p_at_true = float("nan")
    return {"auroc": auroc, "precision": p_at_true,
            "precision_selected": float(tp / sel.nnz) if sel.nnz else float("nan"),
            "recall_selected": float(tp / n_true) if n_true else float("nan"), "n_selected": int(sel.nnz),
            "n_true": int(n_true)}


# -- memory --------------------------------------------------------------------------------------------


class PeakRSS:
    """Peak RSS (MB) of this process and its children, sampled every ``interval`` s in a thread."""

    def __init__(self, interval: float = 0.02) -> None:
        import psutil

        self.proc = psutil.Process()
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()

    def _rss(self) -> int:
        import psutil

        total = 0
        with contextlib.suppress(psutil.Error):
            total = self.proc.memory_info().rss
            for c in self.proc.children(recursive=True):
                with contextlib.suppress(psutil.Error):  # a worker may exit while sampled
                    total += c.memory_info().rss
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self.interval)

    def __enter__(self) -> Self:
        self.peak = self._rss()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self._rss())

    @property
    def mb(self) -> float:
        return self.peak / 2**20


# -- the fits ------------------------------------------------------------------------------------------


def fit_fast(Zs, Zt, *, n_alphas: int = 16, alpha_min_ratio: float = 1e-2, tol: float = 1e-6, n_jobs: int = 2,
             ebic_gamma: float = 0.5, target_rows: str = "all", selection: str = "ebic", stability_b: int = 10,
             stability_q: int = 5) -> dict:
    """CircuitLasso on one layer pair (``Features.from_csr``: sources ``L0.resid_post``, targets
    ``L1.resid_post``; the fast solver, per-target eBIC, no error nodes); returns the timing, the grid and the
    path/selected matrices (``[targets, sources]`` in the original feature indices) read off the fitted
    estimator (:meth:`CircuitLasso.path_arrays`, ``coef_``). ``rows_per_edge=1``: the benchmark measures the
    selection rule without the rare-target support cap. ``target_rows``, ``selection``, ``stability_b``,
    ``stability_q``: as in ``CircuitLasso`` (``selection="stability"`` also uses its default
    ``min_source_rows=5``)."""
    from ..features import Features
    from ..fit.lasso import CircuitLasso

    D = Zs.shape[1]
    feats = Features.from_csr({"L0.resid_post": sp.csr_matrix(Zs), "L1.resid_post": sp.csr_matrix(Zt)})
    est = CircuitLasso(n_alphas=n_alphas, alpha_min_ratio=alpha_min_ratio, tol=tol, n_jobs=n_jobs,
                       ebic_gamma=ebic_gamma, solver="fast", include_errors=False, rows_per_edge=1,
                       progress=False, target_rows=target_rows, selection=selection, stability_b=stability_b,
                       stability_q=stability_q)
    t0 = time.perf_counter()
    est.fit(feats)
    seconds = time.perf_counter() - t0
    pa = est.path_arrays()
    keep = (pa["target"] >= D) & (pa["source"] < D)
    shape = (Zt.shape[1], D)
    entry = sp.csr_matrix((pa["entry_alpha"][keep], (pa["target"][keep] - D, pa["source"][keep])), shape=shape)
    selected = sp.csr_matrix(est.coef_[D:, :D])
    selected.eliminate_zeros()
    Xs, off, live, T = standardise(Zs, Zt)
    coefs_live = [sp.csr_matrix(c[D:, :D][:, live]) for c in est.coef_path_]  # the solver's source space
    skipped = np.zeros(Zt.shape[1], bool)
    for node in est.skipped_targets_["node"]:
        tail = str(node).rsplit("/f", 1)
        if len(tail) == 2 and tail[1].isdigit() and "L1.resid_post" in str(node):
            skipped[int(tail[1])] = True
    return {"seconds": seconds, "grid_s": est.timing_["design"], "path_s": est.timing_["fit"],
            "select_s": seconds - est.timing_["design"] - est.timing_["fit"], "alphas": est.alphas_,
            "estimator": est, "coefs": coefs_live, "skipped": skipped, "entry": entry, "selected": selected,
            "Xs": Xs, "off": off, "T": T, "live": live}


def naive_celer(fast: dict, *, n_targets: int, tol: float = 1e-6, seed: int = 0) -> dict:
    """Time ``celer_path`` per target on a sample of live targets; agreement with CircuitLasso's path."""
    from ..fit.celer_solver import residual_ss
    from ..fit.solvers import get_solver

    live_t = np.flatnonzero(~fast["skipped"])
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(live_t, size=min(n_targets, len(live_t)), replace=False))
    T = fast["T"][:, sample]
    t0 = time.perf_counter()
    ref = get_solver("celer").path(fast["Xs"], T, fast["alphas"], offset=fast["off"], tol=tol, max_iter=50, n_jobs=1)
    sec = time.perf_counter() - t0
    # agreement in objective (rare targets have collinear candidate sources, so the minimiser itself need
    # not be unique; the objective value is)
    n = fast["Xs"].shape[0]
    worst = 0.0
    for k, a in enumerate(fast["alphas"]):
        W = fast["coefs"][k][sample]
        for j in range(len(sample)):
            y = T.column(j) if hasattr(T, "column") else np.asarray(T[:, j]).ravel()
            w = np.asarray(W[j].toarray()).ravel()
            obj_f = residual_ss(fast["Xs"], y, w, fast["off"]) / (2 * n) + a * np.abs(w).sum()
            obj_c = ref.rss[k, j] / (2 * n) + a * float(abs(ref.coefs[k][j]).sum())
            worst = max(worst, abs(obj_f - obj_c) / max(obj_c, 1e-12))
    diff = max(float(abs(ref.coefs[k] - fast["coefs"][k][sample]).max()) for k in range(len(fast["alphas"])))
    return {"seconds_sample": sec, "sample": sample, "n_live": len(live_t), "ref": ref, "max_coef_diff": diff,
            "max_rel_objective_diff": worst}


# -- capture ----------------------------------------------------------------------------------------------

_CAPTURE_CHILD = r"""
import json, sys, tempfile, time
import torch
torch.set_num_threads(1)
from circuitkit.bench.scale import PeakRSS, _capture_model
mode, n = sys.argv[1], int(sys.argv[2])
model, saes, sites, prompts, name = _capture_model(n)
mem = PeakRSS().__enter__()
t0 = time.perf_counter()
if mode == "stream":
    from circuitkit.store import capture_to_disk
    with tempfile.TemporaryDirectory() as d:
        store = capture_to_disk(model, prompts, sites=sites, saes=saes, path=d, chunk_size=256, batch_size=64,
                                positions="all", progress=False)
        rows = store.n_rows
else:
    import circuitkit as ck
    acts = ck.capture(model, prompts, sites=sites, batch_size=64, positions="all", progress=False)
    feats = ck.encode(acts, saes)
    rows = acts.n_rows
sec = time.perf_counter() - t0
mem.__exit__(None, None, None)
print(json.dumps({"rows": rows, "seconds": sec, "model": name, "peak_mb": mem.mb}))
"""


def _capture_model(n_prompts: int, *, seed: int = 0):
    """The toy LM with its SAEs and ``n_prompts`` template prompts; a random-weight GPT-2 of the same shape
    with random SAEs when the toy LM is not built."""
    import torch

    try:
        from ..models.toylm import load_toy_lm, load_toy_saes

        model, _tok = load_toy_lm()
        saes = load_toy_saes()
        name = "circuitkit-toylm"
        vocab = int(model.config.vocab_size)
    except Exception as e:  # noqa: BLE001 - fall back to a stand-in of the same shape
        logger.warning("toy LM unavailable (%s); using a random-weight GPT-2 stand-in", e)
        from sae_lens import StandardSAE, StandardSAEConfig
        from sae_lens.saes.sae import SAEMetadata
        from transformers import GPT2Config, GPT2LMHeadModel

        torch.manual_seed(seed)
        model = GPT2LMHeadModel(GPT2Config(n_layer=4, n_head=4, n_embd=128, vocab_size=512, n_positions=64,
                                           bos_token_id=0, eos_token_id=0)).eval()
        saes = {}
        for layer in range(4):
            cfg = StandardSAEConfig(d_in=128, d_sae=1024, metadata=SAEMetadata(
                hook_name=f"blocks.{layer}.hook_resid_post", model_name="stand-in"))
            sae = StandardSAE(cfg)
            with torch.no_grad():
                for p in sae.parameters():
                    p.normal_(0, 0.1)
            saes[f"L{layer}.resid_post"] = sae.eval()
        name, vocab = "random-gpt2-4x128", 512
    g = torch.Generator().manual_seed(seed)
    prompts = torch.randint(1, vocab, (n_prompts, 16), generator=g)
    from ..sae import attach_saes

    saes = attach_saes(saes)  # {site: sae} whether keyed by hook name or by site
    return model, saes, list(saes), prompts, name


def capture_records(sizes: tuple[int, int], n_throughput: int) -> list[dict]:
    import torch

    import circuitkit as ck

    records = []
    model, _saes, sites, prompts, name = _capture_model(n_throughput)
    torch.set_num_threads(1)
    ck.capture(model, prompts[:64], sites=sites, batch_size=64, positions="all", progress=False)  # warm up
    ck.forward(model, prompts[:64], batch_size=64)
    best = {}
    for label, fn in (("forward", lambda: ck.forward(model, prompts, batch_size=64)),
                      ("capture", lambda: ck.capture(model, prompts, sites=sites, batch_size=64,
                                                     positions="all", progress=False))):
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        best[label] = min(times)
    tokens = int(prompts.numel())
    for label in ("forward", "capture"):
        records.append({"D": None, "M": tokens, "method": label, "seconds": best[label], "peak_mb": None,
                        "auroc": None, "precision": None, "extrapolated": False, "model": name,
                        "tokens_per_s": tokens / best[label], "sites": len(sites),
                        "throughput_vs_forward": best["forward"] / best[label]})
    # glibc's dynamic mmap threshold lets freed chunk-sized arrays fragment the heap, so the sampled peak of
    # the streaming capture drifts up with the number of chunks although nothing is kept; a fixed threshold
    # (an environment variable of glibc, not a circuitkit setting) shows the peak without that effect
    variants = (("stream", "capture-stream", {}), ("stream", "capture-stream-fixed-mmap", FIXED_MMAP_ENV),
                ("memory", "capture-memory", {}))
    for mode, label, extra_env in variants:
        for n in sizes:
            out = subprocess.run([sys.executable, "-c", _CAPTURE_CHILD, mode, str(n)], capture_output=True, text=True,
                                 check=True, env={**os.environ, **extra_env})
            r = json.loads(out.stdout.strip().splitlines()[-1])
            records.append({"D": None, "M": r["rows"], "method": label, "seconds": r["seconds"],
                            "peak_mb": r["peak_mb"], "auroc": None, "precision": None, "extrapolated": False,
                            "model": r["model"], "n_prompts": n, "chunk_size": 256 if mode == "stream" else None,
                            "env": extra_env})
    return records


FIXED_MMAP_ENV = {"MALLOC_MMAP_THRESHOLD_": "4194304"}


# -- CLI -----------------------------------------------------------------------------------------------


def add_arguments(parser) -> None:
    parser.add_argument("--sizes", type=int, nargs="+", default=None,
                        help=f"features per site (default {' '.join(map(str, DEFAULT_SIZES))}; --quick: 4096)")
    parser.add_argument("--rows", type=int, default=DEFAULT_M, help=f"samples M (default {DEFAULT_M})")
    parser.add_argument("--n-jobs", type=int, default=2, help="joblib processes for the fast path (default 2)")
    parser.add_argument("--naive-targets", type=int, default=None,
                        help="targets sampled for the naive celer loop (default 40; --quick: 15)")
    parser.add_argument("--alpha-min-ratio", type=float, default=1e-2,
                        help="bottom of the grid as a fraction of alpha_max (default 0.01, CircuitLasso's)")
    parser.add_argument("--min-parent-rows", type=int, default=MIN_PARENT_ROWS,
                        help="planted parents are drawn among sources active in at least this many rows "
                             f"(default {MIN_PARENT_ROWS}: all live sources)")
    parser.add_argument("--neg-frac", type=float, default=NEG_FRAC,
                        help="fraction of planted edges with negative weight (default 0: only identifiable, "
                             "excitatory edges; 0.15 is the earlier generator)")
    parser.add_argument("--inhibitory", type=float, default=0.0,
                        help="fraction of driven targets that get one inhibitory parent (make_pair; default 0)")
    parser.add_argument("--encoder-bias", type=float, default=0.0,
                        help="bias (<= 0) added to every target's pre-activation, like an SAE encoder's (default 0)")
    parser.add_argument("--target-rows", nargs="+", default=["all"], choices=["all", "reachable"],
                        help="CircuitLasso target_rows for the fast fit; several give one record each "
                             "(default: all)")
    parser.add_argument("--selection", nargs="+", default=["ebic"], choices=["ebic", "stability"],
                        help="selection rules of the fast fit; with more than eBIC (or --target-rows reachable) "
                             "each (selection, target_rows) gets a record with the selected circuit's precision/"
                             "recall and, for stability, its E[V] bound against the observed false edges")
    parser.add_argument("--stability-pairs", type=int, default=10, help="stability_b (default 10)")
    parser.add_argument("--stability-q", type=int, default=5, help="stability_q (default 5)")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive celer loop")
    parser.add_argument("--no-capture", action="store_true", help="skip the capture measurements")
    parser.add_argument("--no-fits", action="store_true", help="skip the solver fits (capture only)")
    parser.add_argument("--capture-sizes", type=int, nargs=2, default=None, metavar=("SMALL", "LARGE"),
                        help="prompts (16 tokens each) for the two streaming-capture sizes (default 1024 4096; "
                             "--quick: 256 1024)")
    parser.add_argument("--quick", action="store_true", help="D=4096, fewer naive targets, small capture")


def sign_recall(selected: sp.csr_matrix, A: sp.spmatrix, exercised: np.ndarray | None = None,
                min_rows: int = 1) -> dict:
    """Recall of the planted edges by the selected circuit, counting an edge as found only when its selected
    coefficient has the planted sign; separately for negative (inhibitory) and positive planted edges, and for
    the negative edges exercised in at least ``min_rows`` rows and in at least 20 rows (``exercised``: :func:`exercised_rows` counts,
    in the order of ``A`` as COO). ``selected`` is ``[targets, sources]``, ``A`` is ``[sources, targets]``."""
    E = sp.coo_matrix(A)
    got = np.asarray(sp.csr_matrix(selected)[E.col, E.row]).ravel()
    found = np.sign(got) == np.sign(E.data)
    neg = E.data < 0
    out = {"recall_negative": float(found[neg].mean()) if neg.any() else float("nan"),
           "recall_positive": float(found[~neg].mean()) if (~neg).any() else float("nan"),
           "n_negative": int(neg.sum())}
    if exercised is not None:
        ex = neg & (np.asarray(exercised) >= min_rows)
        out["recall_negative_exercised"] = float(found[ex].mean()) if ex.any() else float("nan")
        out["n_negative_exercised"] = int(ex.sum())
        ex20 = neg & (np.asarray(exercised) >= 20)
        out["recall_negative_exercised_20"] = float(found[ex20].mean()) if ex20.any() else float("nan")
        out["n_negative_exercised_20"] = int(ex20.sum())
    return out


def coef_tiebreak(entry: sp.csr_matrix, last_coefs: sp.spmatrix, live: np.ndarray) -> sp.csr_matrix:
    """Path-entry scores with ties broken by ``|coefficient|`` at the bottom of the grid: ``entry * (1 +
    0.01 * |c| / (1 + |c|))``. The factor stays below the ratio of neighbouring grid alphas, so the order
    of entry alphas is kept and only edges that enter at the same alpha are reordered."""
    D = entry.shape[1]
    lift = sp.csr_matrix((np.ones(len(live)), (np.arange(len(live)), live)), shape=(len(live), D))
    last = sp.csr_matrix(abs(sp.csr_matrix(last_coefs)) @ lift)
    last.data = 0.01 * last.data / (1 + last.data)
    return sp.csr_matrix(entry + entry.multiply(last))


def run(*, sizes, M: int, n_jobs: int, naive_targets: int, capture: bool, capture_sizes=(1024, 4096),
        n_throughput: int = 512, alpha_min_ratio: float = 1e-2, min_parent_rows: int = MIN_PARENT_ROWS,
        neg_frac: float = NEG_FRAC, inhibitory: float = 0.0, encoder_bias: float = 0.0,
        target_rows: tuple[str, ...] = ("all",), selections: tuple[str, ...] = ("ebic",), naive: bool = True,
        stability_b: int = 10, stability_q: int = 5,
        log: Callable[[str], None] = logger.info) -> list[dict]:
    records: list[dict[str, Any]] = []
    for D in sizes:
        Zs, Zt, A = make_pair(D, M, seed=0, min_parent_rows=min_parent_rows, neg_frac=neg_frac,
                              inhibitory=inhibitory, encoder_bias=encoder_bias)
        if tuple(target_rows) != ("all",) or tuple(selections) != ("ebic",):
            modes = [(sel, tr) for sel in selections for tr in target_rows if not (sel == "stability" and tr != "all")]
            records.extend(selection_records(Zs, Zt, A, D=D, M=M, n_jobs=n_jobs, alpha_min_ratio=alpha_min_ratio,
                                             modes=modes, inhibitory=inhibitory, encoder_bias=encoder_bias,
                                             stability_b=stability_b, stability_q=stability_q, log=log))
            if not naive:
                continue
        elig = parent_eligibility(Zs, min_parent_rows)
        truth = sp.csr_matrix(A.T)  # [targets, sources]
        with PeakRSS() as mem:
            fast = fit_fast(Zs, Zt, n_jobs=n_jobs, alpha_min_ratio=alpha_min_ratio)
        m = edge_metrics(fast["entry"], fast["selected"], truth)
        m_tb = edge_metrics(coef_tiebreak(fast["entry"], fast["coefs"][-1], fast["live"]), fast["selected"], truth)
        pos = np.asarray(fast["entry"][truth.nonzero()]).ravel()
        E, n_ex = exercised_rows(Zs, A)
        is_ex = n_ex >= min_parent_rows
        ex_t = sp.csr_matrix((np.ones(int(is_ex.sum())), (E.col[is_ex], E.row[is_ex])), shape=truth.shape)
        auroc_ex = auroc_exercised(fast["entry"], truth, ex_t)
        neg_w = E.data < 0
        rec = {"D": D, "M": M, "method": "fast", "seconds": fast["seconds"], "peak_mb": mem.mb, "auroc": m["auroc"],
               "precision": m["precision"], "precision_selected": m["precision_selected"],
               "recall_selected": m["recall_selected"], "extrapolated": False, "n_jobs": n_jobs,
               "alpha_min_ratio": alpha_min_ratio,
               "targets_fitted": int((~fast["skipped"]).sum()), "targets_skipped": int(fast["skipped"].sum()),
               "path_s": fast["path_s"], "grid_s": fast["grid_s"], "select_s": fast["select_s"],
               "nnz_path_end": int(fast["coefs"][-1].nnz), "source_l0": Zs.nnz / M, "target_l0": Zt.nnz / M,
               "min_parent_rows": min_parent_rows, "neg_frac": neg_frac,
               "parents_excluded_frac": elig["excluded_frac"],
               "sources_excluded": elig["sources_excluded"], "sources_live": elig["sources_live"],
               "sources_dead_frac": elig["dead_frac"], "planted_never_entered_frac": float((pos == 0).mean()),
               "auroc_coef_tiebreak": m_tb["auroc"], "precision_coef_tiebreak": m_tb["precision"],
               "planted_exercised_frac": float(is_ex.mean()), "auroc_exercised": auroc_ex,
               "planted_negative_frac": float(neg_w.mean()),
               "negative_exercised_frac": float(is_ex[neg_w].mean()) if neg_w.any() else float("nan"),
               "positive_exercised_frac": float(is_ex[~neg_w].mean()) if (~neg_w).any() else float("nan")}
        if not naive:
            records.append(rec)
            log(f"D={D}: fast {rec['seconds']:.1f}s, AUROC {m['auroc']:.3f}, eBIC circuit precision "
                f"{m['precision_selected']:.3f} recall {m['recall_selected']:.3f}")
            continue
        log(f"D={D}: fast {rec['seconds']:.1f}s (path {rec['path_s']:.1f}s), peak {rec['peak_mb']:.0f} MB, "
            f"AUROC {m['auroc']:.3f}, precision@|true| {m['precision']:.3f}, eBIC circuit precision "
            f"{m['precision_selected']:.3f} recall {m['recall_selected']:.3f}; parents drawn among sources active "
            f"in >= {min_parent_rows} rows ({elig['excluded_frac']:.1%} of live sources excluded); "
            f"{rec['planted_never_entered_frac']:.1%} of planted edges never enter the path; AUROC with "
            f"|coef| tie-break {m_tb['auroc']:.3f}; {rec['planted_exercised_frac']:.1%} of planted edges change "
            f"their target in >= {min_parent_rows} rows (negative-weight edges: "
            f"{rec['negative_exercised_frac']:.1%}), AUROC on those {auroc_ex:.3f}")
        with PeakRSS() as mem:
            nv = naive_celer(fast, n_targets=naive_targets)
        per = nv["seconds_sample"] / len(nv["sample"])
        sel_rows = nv["sample"]
        # naive metrics on the sampled targets, with the same selection rule applied to celer's path
        from ..fit.select import pick_rows, relaxed_rss, select_per_target

        ref = nv["ref"]
        rel = np.zeros_like(ref.rss)
        for j in range(len(sel_rows)):
            y = fast["T"].column(int(sel_rows[j]))
            for k in range(len(fast["alphas"])):
                rel[k, j] = relaxed_rss(fast["Xs"], fast["off"], y, list(ref.coefs[k][j].indices), float(y @ y))
        ref.info["relaxed_rss"] = rel
        ch = select_per_target(ref, n_rows=M, n_features=fast["Xs"].shape[1])
        D_ = Zs.shape[1]
        lift = sp.csr_matrix((np.ones(len(fast["live"])), (np.arange(len(fast["live"])), fast["live"])),
                             shape=(len(fast["live"]), D_))
        entry = sp.csr_matrix(ref.coefs[0].shape)
        for k in range(len(fast["alphas"]) - 1, -1, -1):
            nz = sp.csr_matrix(ref.coefs[k] != 0, dtype=np.float64)
            entry = entry - entry.multiply(nz) + nz * fast["alphas"][k]
        mn = edge_metrics(sp.csr_matrix(entry @ lift), sp.csr_matrix(pick_rows(ref.coefs, ch) @ lift), truth[sel_rows])
        mf = edge_metrics(fast["entry"], fast["selected"], truth, rows=sel_rows)
        naive_total = per * nv["n_live"]
        records.append(rec)
        records.append({"D": D, "M": M, "method": "naive-celer", "seconds": naive_total, "peak_mb": mem.mb,
                        "auroc": mn["auroc"], "precision": mn["precision"], "precision_selected": mn["precision_selected"],
                        "extrapolated": True, "sampled_targets": len(sel_rows), "seconds_per_target": per,
                        "min_parent_rows": min_parent_rows, "parents_excluded_frac": elig["excluded_frac"],
                        "speedup_fast": naive_total / rec["seconds"], "max_coef_diff": nv["max_coef_diff"],
                        "max_rel_objective_diff": nv["max_rel_objective_diff"],
                        "fast_auroc_same_targets": mf["auroc"], "fast_precision_same_targets": mf["precision"]})
        log(f"D={D}: naive celer {per * 1e3:.0f} ms/target x {nv['n_live']} targets = {naive_total:.0f}s "
            f"(extrapolated from {len(sel_rows)}), speedup {naive_total / rec['seconds']:.1f}x, "
            f"max |coef diff| {nv['max_coef_diff']:.1e}, max relative objective diff "
            f"{nv['max_rel_objective_diff']:.1e}")
    if capture:
        records.extend(capture_records(tuple(capture_sizes), n_throughput))
    return records


def _edge_ids(edges, D: int) -> tuple[np.ndarray, np.ndarray]:
    src = edges["source"].str.rsplit("/f", n=1).str[1].astype(int).to_numpy()
    tgt = edges["target"].str.rsplit("/f", n=1).str[1].astype(int).to_numpy()
    return src, tgt


def selection_records(Zs, Zt, A, *, D: int, M: int, n_jobs: int, alpha_min_ratio: float,
                      modes: list[tuple[str, str]], inhibitory: float, encoder_bias: float, stability_b: int = 10,
                      stability_q: int = 5, log: Callable[[str], None] = logger.info) -> list[dict]:
    """One record per ``(selection, target_rows)`` mode (:func:`fit_fast`): time (and its ratio to the first
    mode's), precision/recall of the *selected* circuit (``circuit_.edges`` against the planted edges), the
    recall of planted negative edges with the right sign (:func:`sign_recall`; all, and those exercised in >= 5
    rows), the recall among planted edges whose source is active in >= 5 rows (``recall_supported``), and for
    stability selection the stated E[V] bound next to the observed number of false edges."""
    truth = sp.csr_matrix(A.T)
    _E, n_ex = exercised_rows(Zs, A)
    out: list[dict[str, Any]] = []
    for selection, mode in modes:
        fast = fit_fast(Zs, Zt, n_jobs=n_jobs, alpha_min_ratio=alpha_min_ratio, target_rows=mode,
                        selection=selection, stability_b=stability_b, stability_q=stability_q)
        est = fast["estimator"]
        e = est.circuit_.edges
        e = e[e["source"].str.startswith("L0.resid_post/") & e["target"].str.startswith("L1.resid_post/")]
        src, tgt = _edge_ids(e, D)
        w = e["weight"].to_numpy(float)
        w = np.where(w == 0, 1e-300, w)  # a kept stability pair whose full-data coefficient is 0: still an edge
        sel = sp.csr_matrix((w, (tgt, src)), shape=(Zt.shape[1], D))
        is_true = np.asarray(truth[tgt, src]).ravel() != 0 if len(e) else np.zeros(0, bool)
        n_false = int((~is_true).sum())
        m = edge_metrics(fast["entry"], sel, truth)
        sr = sign_recall(sel, A, n_ex, min_rows=5)
        # recall among planted edges whose source is active in >= 5 rows (stability's default min_source_rows):
        # a source seen in fewer rows cannot be told from a coincidence
        src_rows = np.asarray((Zs != 0).sum(axis=0)).ravel()
        tc = truth.tocoo()
        sup = src_rows[tc.col] >= 5
        hit = np.asarray(sel[tc.row[sup], tc.col[sup]]).ravel() != 0 if sup.any() else np.zeros(0, bool)
        sr["n_true_supported"] = int(sup.sum())
        sr["recall_supported"] = float(hit.mean()) if hit.size else float("nan")
        bound = est.circuit_.meta.get("expected_false_edges_bound")
        rec = {"D": D, "M": M, "method": f"fast {selection} target_rows={mode}", "selection": selection,
               "target_rows": mode, "seconds": fast["seconds"], "peak_mb": None, "auroc": m["auroc"],
               "precision": m["precision"], "extrapolated": False, "precision_selected": m["precision_selected"],
               "recall_selected": m["recall_selected"], "n_selected": len(e), "false_edges": n_false,
               "expected_false_edges_bound": bound, "n_true": m["n_true"], "inhibitory": inhibitory,
               "encoder_bias": encoder_bias, "targets_refit": len(est.reachable_rows_),
               "seconds_vs_first": fast["seconds"] / out[0]["seconds"] if out else 1.0, **sr}
        out.append(rec)
        log(f"D={D} {selection} target_rows={mode}: {rec['seconds']:.1f}s ({rec['seconds_vs_first']:.1f}x), "
            f"{len(e)} edges, {n_false} false" + (f" (E[V] bound {bound:.1f})" if bound is not None else "")
            + f", precision {m['precision_selected']:.3f}, recall {m['recall_selected']:.3f} (sources active in >= 5 "
            f"rows: {sr['recall_supported']:.3f} of {sr['n_true_supported']}); planted negative "
            f"edges ({sr['n_negative']}) recalled with the right sign {sr['recall_negative']:.3f} (exercised in >= 5 "
            f"rows, {sr['n_negative_exercised']}: {sr['recall_negative_exercised']:.3f}; in >= 20 rows, "
            f"{sr['n_negative_exercised_20']}: {sr['recall_negative_exercised_20']:.3f}); positive "
            f"{sr['recall_positive']:.3f}")
    return out


def format_table(records: list[dict]) -> str:
    cols = ["D", "M", "method", "seconds", "peak_mb", "auroc", "precision", "extrapolated",
            "parents_excluded_frac"]
    lines = [" | ".join(f"{c:>12}" for c in cols)]
    for r in records:
        cells = []
        for c in cols:
            v = r.get(c)
            cells.append(f"{v:>12.3f}" if isinstance(v, float) else f"{v!s:>12}")
        lines.append(" | ".join(cells))
    return "\n".join(lines)


def main(args) -> int:
    quick = bool(getattr(args, "quick", False))
    sizes = [] if getattr(args, "no_fits", False) else (args.sizes or ([4096] if quick else list(DEFAULT_SIZES)))
    naive = args.naive_targets or (15 if quick else 40)
    capture_sizes = getattr(args, "capture_sizes", None) or ((256, 1024) if quick else (1024, 4096))
    records = run(sizes=sizes, M=args.rows, n_jobs=args.n_jobs, naive_targets=naive, capture=not args.no_capture,
                  capture_sizes=tuple(capture_sizes), n_throughput=128 if quick else 512,
                  alpha_min_ratio=args.alpha_min_ratio,
                  min_parent_rows=getattr(args, "min_parent_rows", MIN_PARENT_ROWS),
                  neg_frac=getattr(args, "neg_frac", NEG_FRAC), inhibitory=getattr(args, "inhibitory", 0.0),
                  encoder_bias=getattr(args, "encoder_bias", 0.0),
                  target_rows=tuple(getattr(args, "target_rows", None) or ("all",)),
                  selections=tuple(getattr(args, "selection", None) or ("ebic",)),
                  stability_b=getattr(args, "stability_pairs", 10), stability_q=getattr(args, "stability_q", 5),
                  naive=not getattr(args, "no_naive", False), log=print)
    print(format_table(records))
    for r in records:
        if r["method"] == "capture":
            print(f"capture throughput: {r['throughput_vs_forward']:.0%} of a bare forward pass ({r['model']})")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(records, indent=1, default=float))
    return 0
