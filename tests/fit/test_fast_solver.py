"""The fast SAE-level path and the torch solver agree with the reference per-target celer fit."""

import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from circuitkit.fit.fast import (
    FastConfig,
    FastSolver,
    SparseTargets,
    choose_solver,
    pick_rows,
    select_per_target,
)
from circuitkit.fit.gpu import TorchConfig, TorchSolver
from circuitkit.fit.lasso import CircuitLasso, _relaxed_rss
from circuitkit.fit.solvers import CelerSolver, available_solvers, get_solver
from circuitkit.sae import Features


def sae_pair(n=2000, d=200, q=40, seed=0):
    """SAE-like sparse codes of two sites with a planted sparse map (rows: samples)."""
    rng = np.random.default_rng(seed)
    freq = np.minimum(0.5 * (np.arange(d) + 5.0) ** -0.8, 0.3)[rng.permutation(d)]  # heavy-tailed
    mask = rng.random((n, d)) < freq
    Xraw = np.where(mask, rng.lognormal(0, 0.5, (n, d)), 0.0)
    A = np.zeros((d, q))
    for j in range(q - 2):  # the last two targets: one dead, one active in a single row
        parents = rng.choice(np.argsort(-freq)[:80], size=rng.integers(1, 4), replace=False)
        A[parents, j] = rng.uniform(0.8, 1.5, len(parents))
    pre = Xraw @ A
    Yraw = np.maximum(pre + (pre > 0) * 0.1 * rng.standard_normal((n, q)), 0)
    Yraw[:, q - 2] = 0.0
    Yraw[:, q - 1] = 0.0
    Yraw[7, q - 1] = 2.0
    return sp.csc_matrix(Xraw), sp.csc_matrix(Yraw), A


def standardised(Xraw, Yraw):
    mean = np.asarray(Xraw.mean(0)).ravel()
    sd = np.sqrt(np.maximum(np.asarray(Xraw.multiply(Xraw).mean(0)).ravel() - mean**2, 0))
    keep = sd > 0
    Xs = sp.csc_matrix(Xraw[:, keep] @ sp.diags(1 / sd[keep]))
    ym = np.asarray(Yraw.mean(0)).ravel()
    ysd = np.sqrt(np.maximum(np.asarray(Yraw.multiply(Yraw).mean(0)).ravel() - ym**2, 0))
    return Xs, mean[keep] / sd[keep], SparseTargets(Yraw, ym, np.where(ysd > 0, ysd, 1.0))


@pytest.fixture(scope="module")
def problem():
    Xraw, Yraw, _A = sae_pair()
    Xs, off, T = standardised(Xraw, Yraw)
    alphas = T.alpha_max(Xs, off) * np.geomspace(1, 0.02, 8)
    ref = CelerSolver().path(Xs, T.dense(), alphas, offset=off, tol=1e-10, max_iter=500)
    return Xs, off, T, alphas, ref


def test_fast_path_matches_per_target_celer(problem):
    Xs, off, T, alphas, ref = problem
    res = FastSolver().path(Xs, T, alphas, offset=off, tol=1e-10)
    assert res.solver == "fast" and res.skipped.tolist() == [False] * 38 + [True, False]
    for k in range(len(alphas)):
        got, want = res.coefs[k].toarray(), ref.coefs[k].toarray()
        np.testing.assert_array_equal(got != 0, want != 0, err_msg=f"support differs at alpha #{k}")
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=1e-5)
        np.testing.assert_allclose(res.rss[k], ref.rss[k], rtol=1e-6, atol=1e-6)
    assert res.gaps.max() <= 1e-9  # duality gaps over all features, not only the working sets
    assert sum(c.nnz for c in res.coefs) > 200  # a real path, not a trivially empty one
    # the dead target is reported, not silently fitted
    assert res.info["n_skipped"] == 1 and all(c[38].nnz == 0 for c in res.coefs)


def test_relaxed_rss_equals_the_ols_refit_on_each_support(problem):
    Xs, off, T, alphas, _ = problem
    res = FastSolver().path(Xs, T, alphas, offset=off, tol=1e-10)
    rel = res.info["relaxed_rss"]
    for j in (0, 5, 17, 30):
        y = T.column(j)
        for k in (2, 5, 7):
            support = list(res.coefs[k][j].indices)
            want = _relaxed_rss(Xs, off, y, support, float(y @ y))
            assert rel[k, j] == pytest.approx(want, rel=1e-7, abs=1e-7)


def test_dense_targets_parallel_chunks_and_rare_target_skipping_agree(problem):
    Xs, off, T, alphas, ref = problem
    res = FastSolver(chunk_targets=7).path(Xs, T.dense(), alphas, offset=off, tol=1e-10, n_jobs=2)
    for k in range(len(alphas)):
        np.testing.assert_allclose(res.coefs[k].toarray(), ref.coefs[k].toarray(), atol=1e-6, rtol=1e-5)
    rare = FastSolver(min_active_rows=5).path(Xs, T, alphas, offset=off, tol=1e-10)
    assert rare.skipped[-1] and rare.skipped[-2] and not rare.skipped[:-2].any()


def test_planted_edges_are_recovered_by_ebic_selection():
    Xraw, Yraw, A = sae_pair(n=3000, seed=3)
    Xs, off, T = standardised(Xraw, Yraw)
    alphas = T.alpha_max(Xs, off) * np.geomspace(1, 0.01, 16)
    res = FastSolver().path(Xs, T, alphas, offset=off, tol=1e-8)
    chosen = select_per_target(res, n_rows=Xs.shape[0], n_features=Xs.shape[1])
    coef = pick_rows(res.coefs, chosen)
    keep = np.flatnonzero(np.asarray(Xraw.getnnz(0)) > 0)
    truth = A[keep].T[:38] != 0
    found = coef.toarray()[:38] != 0
    precision = (found & truth).sum() / found.sum()
    recall = (found & truth).sum() / truth.sum()
    assert precision >= 0.9 and recall >= 0.9, (precision, recall)
    # the vectorised selection is the estimator's sequential rule
    n, p = Xs.shape
    for j in range(0, 38, 5):
        crit = [n * math.log(max(res.info["relaxed_rss"][k, j] / n, 1e-12))
                + res.coefs[k][j].nnz * (math.log(n) + math.log(p)) for k in range(len(alphas))]
        best = 0
        for k in range(1, len(crit)):
            if crit[k] < crit[best] - 1e-9:
                best = k
        assert chosen[j] == best
        np.testing.assert_array_equal(coef[j].toarray(), res.coefs[best][j].toarray())


def test_circuitlasso_with_fast_solver_gives_the_celer_circuit():
    Xraw, Yraw, _ = sae_pair(n=1500, d=120, q=30, seed=5)
    idx = pd.DataFrame({"prompt": np.arange(1500), "position": 0, "token": ""})
    feats = Features({"L0.resid_post": sp.csr_matrix(Xraw), "L1.resid_post": sp.csr_matrix(Yraw)}, {}, idx)
    kw = {"tol": 1e-10, "max_iter": 500, "n_alphas": 10, "progress": False}
    a = CircuitLasso(solver="celer", **kw).fit(feats)
    b = CircuitLasso(solver="fast", **kw).fit(feats)
    ea = a.circuit_.edges.sort_values(["source", "target"]).reset_index(drop=True)
    eb = b.circuit_.edges.sort_values(["source", "target"]).reset_index(drop=True)
    assert len(ea) > 20
    pd.testing.assert_frame_equal(ea[["source", "target"]], eb[["source", "target"]])
    np.testing.assert_allclose(ea["weight"], eb["weight"], atol=1e-6)


def test_torch_solver_agrees_with_celer_on_cpu(problem):
    Xs, off, T, alphas, ref = problem
    sub = np.arange(12)
    res = TorchSolver(device="cpu").path(Xs, T[:, sub], alphas, offset=off, tol=1e-12)
    assert res.info["device"] == "cpu" and res.info["dtype"] == "float64"
    for k in range(len(alphas)):
        got, want = res.coefs[k].toarray(), ref.coefs[k][sub].toarray()
        np.testing.assert_allclose(got, want, atol=2e-5)
        big = np.abs(want) > 1e-3  # every clearly nonzero reference coefficient is found with its sign
        assert np.all(np.sign(got[big]) == np.sign(want[big]))
        assert np.all(got[want == 0] == 0) or np.abs(got[want == 0]).max() < 1e-4
    # a dense (component-level) design gives the same answer
    Xd = Xs.toarray() - off
    dense = TorchSolver(device="cpu", batch_targets=5).path(Xd, T[:, sub].dense(), alphas, tol=1e-12)
    np.testing.assert_allclose(dense.coefs[-1].toarray(), res.coefs[-1].toarray(), atol=2e-5)


def test_registry_auto_rule_and_bad_options():
    assert {"fast", "torch", "celer"} <= set(available_solvers())
    assert isinstance(get_solver("fast"), FastSolver)
    assert choose_solver(sp.csc_matrix((5, 5)), 3) == "fast"
    assert choose_solver(np.zeros((5, 2000)), 1000, cuda=True) == "torch"
    # small dense designs (Tracr, toy-LM component sites): Gram-form coordinate descent
    assert choose_solver(np.zeros((5, 20)), 10, cuda=False) == "gram"
    assert choose_solver(np.zeros((500, 1999)), 32, cuda=False) == "gram"
    assert choose_solver(np.zeros((30000, 1999)), 32, cuda=False) == "gram"
    # few rows, many dense columns (compressed component sites of a real model): the working-set solver
    assert choose_solver(np.zeros((500, 2000)), 32, cuda=False) == "dense"
    assert choose_solver(np.zeros((3000, 2000)), 32, cuda=False) == "celer"   # more rows than columns: not measured
    with pytest.raises(ValueError, match="max_add must be a positive int"):
        FastConfig(max_add=0)
    with pytest.raises(ValueError, match="dtype must be one of"):
        TorchConfig(dtype="float16")
    with pytest.raises(ValueError, match="descending"):
        FastSolver().path(sp.csc_matrix(np.eye(3)), np.eye(3), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match=r"Y\[:, j\] and Y\[:, cols\] only"):
        SparseTargets(sp.csc_matrix(np.eye(3)), np.zeros(3), np.ones(3))[0]


def test_alpha_max_matches_dense_correlations():
    """The buffered, in-place alpha_max equals the max of the centred X'Y of xty, for any chunking."""
    from circuitkit.fit.fast import SparseTargets

    rng = np.random.default_rng(0)
    X = sp.random(300, 500, density=0.2, random_state=1, format="csc")
    T = SparseTargets(sp.random(300, 700, density=0.1, random_state=2, format="csc"), rng.random(700),
                      rng.random(700) + 0.5)
    for off in (rng.random(500), None):
        ref = float(np.abs(T.xty(X, off)).max()) / 300
        for chunk in (64, 700, 1000):
            np.testing.assert_allclose(T.alpha_max(X, off, chunk=chunk), ref, rtol=1e-12)
        np.testing.assert_allclose(T.alpha_max(X.toarray(), off, chunk=50), ref, rtol=1e-12)


def test_stop_entered_equals_the_full_path_up_to_the_stop(problem):
    """FastConfig(stop_entered=q): every grid point up to the one where the (q+1)-th source enters is the full
    path's; later points are empty with NaN rss, and the first-q entrants are the same."""
    from circuitkit.fit.stability import _entry_index, first_q

    Xs, off, T, alphas, _ = problem
    full = FastSolver(FastConfig(relaxed=False)).path(Xs, T, alphas, offset=off, tol=1e-10)
    q = 1
    cut = FastSolver(FastConfig(relaxed=False, stop_entered=q)).path(Xs, T, alphas, offset=off, tol=1e-10)
    ent_full = _entry_index(full.coefs).toarray().astype(int) - 1
    ent_cut = _entry_index(cut.coefs).toarray().astype(int) - 1
    n_stopped = 0
    for j in range(T.shape[1]):
        entered = [int(((ent_full[j] >= 0) & (ent_full[j] <= k)).sum()) for k in range(len(alphas))]
        stop = next((k for k, c in enumerate(entered) if c > q), len(alphas) - 1)
        for k in range(stop + 1):
            np.testing.assert_array_equal(cut.coefs[k][j].toarray(), full.coefs[k][j].toarray())
        for k in range(stop + 1, len(alphas)):
            assert cut.coefs[k][j].nnz == 0 and np.isnan(cut.rss[k, j])
        n_stopped += stop < len(alphas) - 1
        np.testing.assert_array_equal(first_q(ent_cut[j], q), first_q(ent_full[j], q))
    assert n_stopped >= 10   # the option is exercised: measured 24 of 40 targets stopped early
    with pytest.raises(ValueError, match=r"stop_entered must be an int >= 0.*got -1"):
        FastConfig(stop_entered=-1)


def test_celer_stop_entered_equals_its_full_path_up_to_the_stop(problem):
    from circuitkit.fit.stability import _entry_index, first_q

    Xs, off, T, alphas, ref = problem
    cut = CelerSolver(stop_entered=1).path(Xs, T.dense(), alphas, offset=off, tol=1e-10, max_iter=500)
    ent_full = _entry_index(ref.coefs).toarray().astype(int) - 1
    ent_cut = _entry_index(cut.coefs).toarray().astype(int) - 1
    n_stopped = 0
    for j in range(T.shape[1]):
        entered = [int(((ent_full[j] >= 0) & (ent_full[j] <= k)).sum()) for k in range(len(alphas))]
        stop = next((k for k, c in enumerate(entered) if c > 1), len(alphas) - 1)
        for k in range(stop + 1):
            np.testing.assert_allclose(cut.coefs[k][j].toarray(), ref.coefs[k][j].toarray(), atol=1e-6)
        assert all(cut.coefs[k][j].nnz == 0 and np.isnan(cut.gaps[k, j]) for k in range(stop + 1, len(alphas)))
        n_stopped += stop < len(alphas) - 1
        np.testing.assert_array_equal(first_q(ent_cut[j], 1), first_q(ent_full[j], 1))
    assert n_stopped >= 10
    with pytest.raises(ValueError, match=r"stop_entered must be an int >= 0.*got 1.5"):
        CelerSolver(stop_entered=1.5)
