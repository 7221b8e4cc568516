"""The dense-design solver ("dense") agrees with the reference per-target celer path."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from circuitkit.activations import Activations
from circuitkit.fit import select
from circuitkit.fit.celer_solver import CelerSolver
from circuitkit.fit.dense import DenseConfig, DenseSolver
from circuitkit.fit.lasso import CircuitLasso
from circuitkit.fit.solvers import available_solvers, get_solver


def dense_problem(n, p, q, seed=0):
    """Standardised correlated design, targets with planted sparse parents; the last target is constant."""
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((n, p))
    X = Z + 0.5 * np.roll(Z, 1, axis=1)  # neighbouring columns correlated
    X = (X - X.mean(0)) / X.std(0)
    B = np.zeros((p, q))
    for j in range(q - 1):
        B[rng.choice(p, size=4, replace=False), j] = rng.uniform(0.5, 1.5, 4) * rng.choice([-1, 1], 4)
    Y = X @ B + 0.5 * rng.standard_normal((n, q))
    Y[:, -1] = 0.0
    Y[:, :-1] = (Y[:, :-1] - Y[:, :-1].mean(0)) / Y[:, :-1].std(0)
    alphas = np.abs(X.T @ Y).max() / n * np.geomspace(1, 0.01, 10)
    return np.asfortranarray(X), np.asfortranarray(Y), alphas


@pytest.mark.parametrize("n,p", [(120, 300), (400, 60)], ids=["p>n", "n>p"])
def test_dense_path_matches_per_target_celer(n, p):
    X, Y, alphas = dense_problem(n, p, 6)
    ref = CelerSolver().path(X, Y, alphas, tol=1e-10, max_iter=500)
    res = DenseSolver().path(X, Y, alphas, tol=1e-8)
    assert res.solver == "dense" and res.skipped.tolist() == [False] * 5 + [True]
    for k in range(len(alphas)):
        got, want = res.coefs[k].toarray(), ref.coefs[k].toarray()
        np.testing.assert_array_equal(got != 0, want != 0, err_msg=f"support differs at alpha #{k}")
        np.testing.assert_allclose(got, want, atol=1e-5)
        np.testing.assert_allclose(res.rss[k], ref.rss[k], rtol=1e-5)
    yty = (Y**2).sum(0)
    assert np.all(res.gaps <= 1e-8 * yty / n + 1e-15)  # celer's stopping rule, over all p features
    assert sum(c.nnz for c in res.coefs) > 50  # a real path
    # the constant target is reported as skipped and has no coefficients
    assert res.info["n_skipped"] == 1 and all(c[5].nnz == 0 for c in res.coefs)
    # the coefficients are the Lasso's: KKT conditions on the full design
    for k in (3, len(alphas) - 1):
        W = res.coefs[k].toarray().T
        G = X.T @ (Y - X @ W) / n
        assert np.all(np.abs(G[:, :5]) <= alphas[k] * (1 + 1e-4))


def test_offset_is_the_centring_of_the_design():
    X, Y, alphas = dense_problem(150, 80, 4, seed=1)
    shift = np.random.default_rng(2).normal(size=X.shape[1]) * 3
    res = DenseSolver().path(X + shift, Y, alphas, offset=shift, tol=1e-10)
    want = DenseSolver().path(X, Y, alphas, tol=1e-10)
    ref = CelerSolver().path(X, Y, alphas, tol=1e-10, max_iter=500)
    sparse_in = DenseSolver().path(sp.csc_matrix(X + shift), Y, alphas, offset=shift, tol=1e-10)  # densified
    for k in range(len(alphas)):
        np.testing.assert_allclose(res.coefs[k].toarray(), want.coefs[k].toarray(), atol=1e-7)
        np.testing.assert_allclose(res.coefs[k].toarray(), ref.coefs[k].toarray(), atol=1e-5)
        np.testing.assert_allclose(sparse_in.coefs[k].toarray(), res.coefs[k].toarray(), atol=1e-9)


def test_relaxed_rss_equals_the_ols_refit_on_each_support():
    X, Y, alphas = dense_problem(120, 300, 6, seed=3)
    res = DenseSolver().path(X, Y, alphas, tol=1e-8)
    rel = res.info["relaxed_rss"]
    checked = 0
    for j in range(5):
        y = Y[:, j]
        for k in range(len(alphas)):
            support = res.coefs[k][j].indices.tolist()
            want = select.relaxed_rss(X, None, y, support, float(y @ y))
            np.testing.assert_allclose(rel[k, j], want, rtol=1e-8, atol=1e-8)
            checked += bool(support)
    assert checked > 20
    assert np.all(rel[:, 5] == 0.0) and np.all(res.rss[:, 5] == 0.0)  # the constant target


def test_stop_entered_equals_the_full_path_up_to_the_stop():
    X, Y, alphas = dense_problem(120, 300, 6, seed=4)
    full = DenseSolver().path(X, Y, alphas, tol=1e-10)
    q = 3
    stop = DenseSolver(stop_entered=q, relaxed=False).path(X, Y, alphas, tol=1e-10)
    ref = CelerSolver(stop_entered=q).path(X, Y, alphas, tol=1e-10, max_iter=500)
    for j in range(5):
        seen: set[int] = set()
        last = len(alphas) - 1
        for k in range(len(alphas)):
            seen |= set(full.coefs[k][j].indices.tolist())
            if len(seen) > q:
                last = k
                break
        for k in range(last + 1):
            np.testing.assert_allclose(stop.coefs[k][j].toarray(), full.coefs[k][j].toarray(), atol=1e-9)
            np.testing.assert_allclose(stop.coefs[k][j].toarray(), ref.coefs[k][j].toarray(), atol=1e-5)
        assert np.all(np.isnan(stop.rss[last + 1:, j])) and all(stop.coefs[k][j].nnz == 0
                                                                 for k in range(last + 1, len(alphas)))
        np.testing.assert_allclose(stop.info["relaxed_rss"][:last + 1, j], stop.rss[:last + 1, j])


def test_parallel_chunks_give_the_same_path():
    X, Y, alphas = dense_problem(120, 200, 6, seed=5)
    one = DenseSolver().path(X, Y, alphas, tol=1e-8)
    two = DenseSolver(chunk_targets=2).path(X, Y, alphas, tol=1e-8, n_jobs=2)
    for k in range(len(alphas)):
        np.testing.assert_array_equal(one.coefs[k].toarray(), two.coefs[k].toarray())
    np.testing.assert_array_equal(one.info["relaxed_rss"], two.info["relaxed_rss"])


def planted_sites(n=500, seed=0):
    """Five sites of 4 columns; planted site graph embed -> A -> C, embed -> B, B -> out, C -> out."""
    rng = np.random.default_rng(seed)
    e = rng.normal(size=(n, 4))
    a = rng.normal(size=(n, 4))
    a[:, 0] += 1.5 * e[:, 0]
    b = rng.normal(size=(n, 4))
    b[:, 1] += -1.2 * e[:, 2]
    c = rng.normal(size=(n, 4))
    c[:, 0] += 1.5 * a[:, 0] + 0.2 * rng.normal(size=n)
    o = np.c_[b[:, 1] + c[:, 0] + 0.2 * rng.normal(size=n), rng.normal(size=(n, 3))]
    idx = pd.DataFrame({"prompt": np.arange(n), "position": 0, "token": ""})
    acts = Activations({"embed": e, "L0.H0": a, "L0.H1": b, "L1.MLP": c, "out": o}, idx)
    planted = {("embed", "L0.H0"), ("embed", "L0.H1"), ("L0.H0", "L1.MLP"), ("L0.H1", "out"), ("L1.MLP", "out")}
    return acts, planted


def test_circuitlasso_with_dense_solver_recovers_planted_sites_and_the_celer_circuit():
    acts, planted = planted_sites()
    kw = {"tol": 1e-10, "max_iter": 500, "n_alphas": 12, "progress": False}
    a = CircuitLasso(solver="celer", **kw).fit(acts)
    b = CircuitLasso(solver="dense", **kw).fit(acts)
    assert b.solver_ == "dense" and b.circuit_.meta["solver"] == "dense"
    got = set(zip(b.circuit_.edges["source"], b.circuit_.edges["target"]))
    assert got == planted
    ea = a.circuit_.edges.sort_values(["source", "target"]).reset_index(drop=True)
    eb = b.circuit_.edges.sort_values(["source", "target"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(ea[["source", "target"]], eb[["source", "target"]])
    np.testing.assert_allclose(ea["weight"], eb["weight"], atol=1e-6)
    np.testing.assert_allclose(a.target_alpha_, b.target_alpha_)


def test_registry_and_bad_options():
    assert "dense" in available_solvers() and isinstance(get_solver("dense"), DenseSolver)
    with pytest.raises(ValueError, match="max_add must be an int >= 1"):
        DenseConfig(max_add=0)
    with pytest.raises(ValueError, match="stop_entered must be an int >= 0"):
        DenseSolver(stop_entered=-1)
    with pytest.raises(ValueError, match="either a DenseConfig or keyword options"):
        DenseSolver(DenseConfig(), max_add=3)
    with pytest.raises(ValueError, match="descending"):
        DenseSolver().path(np.eye(3), np.eye(3), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="X has 3 rows but Y has 4"):
        DenseSolver().path(np.eye(3), np.ones((4, 1)), np.array([0.1]))
    with pytest.raises(ValueError, match="one entry per column"):
        DenseSolver().path(np.eye(3), np.eye(3), np.array([0.1]), offset=np.zeros(2))


def test_stability_selection_with_dense_half_paths_matches_celer():
    from circuitkit.fit.stability import half_solver

    solver = half_solver("dense", 4)
    assert isinstance(solver, DenseSolver) and solver.config.stop_entered == 4 and not solver.config.relaxed
    acts, planted = planted_sites(n=400, seed=1)
    kw = {"tol": 1e-10, "max_iter": 500, "n_alphas": 12, "progress": False, "selection": "stability",
          "stability_b": 3}
    a = CircuitLasso(solver="celer", **kw).fit(acts)
    b = CircuitLasso(solver="dense", **kw).fit(acts)
    np.testing.assert_allclose(b.stability_.probability.toarray(), a.stability_.probability.toarray())
    got = set(zip(b.circuit_.edges["source"], b.circuit_.edges["target"]))
    assert planted <= got


def test_shared_parent_gram_gives_the_same_path_in_one_thread_or_two():
    """Working-set Gram entries gathered from a parent design's Gram (columns in any order, with an offset) equal
    the ones computed from X; threads sharing that Gram give the same path."""
    from circuitkit.fit.dense import parent_gram

    X, Y, alphas = dense_problem(150, 240, 6, seed=7)
    shift = np.random.default_rng(8).normal(size=X.shape[1])
    cols = np.random.default_rng(9).permutation(X.shape[1])[:180]   # X's columns sit anywhere in the parent
    parent = np.empty_like(X)
    parent[:, cols] = X[:, :180] + shift[:180]
    rest = np.setdiff1d(np.arange(X.shape[1]), cols)
    parent[:, rest] = X[:, 180:]
    off = np.zeros(X.shape[1])
    off[cols] = shift[:180]
    G = parent_gram(parent, off)
    np.testing.assert_allclose(G, (parent - off).T @ (parent - off))
    Xp = X[:, :180] + shift[:180]
    plain = DenseSolver().path(Xp, Y, alphas, offset=shift[:180], tol=1e-8)
    shared = DenseSolver().path(Xp, Y, alphas, offset=shift[:180], tol=1e-8, gram=(G, cols))
    two = DenseSolver().path(Xp, Y, alphas, offset=shift[:180], tol=1e-8, gram=(G, cols), n_jobs=2)
    assert sum(c.nnz for c in plain.coefs) > 50
    for k in range(len(alphas)):
        for other in (shared, two):
            np.testing.assert_array_equal(other.coefs[k].toarray() != 0, plain.coefs[k].toarray() != 0)
            np.testing.assert_allclose(other.coefs[k].toarray(), plain.coefs[k].toarray(), atol=1e-9)
        np.testing.assert_array_equal(two.coefs[k].toarray(), shared.coefs[k].toarray())
    np.testing.assert_allclose(shared.info["relaxed_rss"], plain.info["relaxed_rss"], rtol=1e-9)
    with pytest.raises(ValueError, match="gram must be"):
        DenseSolver().path(Xp, Y, alphas, gram=(G, cols[:10]))


def test_circuitlasso_shares_one_gram_and_it_changes_nothing(monkeypatch):
    import circuitkit.fit.dense as dense_mod
    import circuitkit.fit.lasso as lasso_mod

    acts, planted = planted_sites(seed=3)
    kw = {"tol": 1e-10, "n_alphas": 12, "progress": False, "selection": "ebic", "solver": "dense"}
    seen = []
    orig = dense_mod.DenseSolver.path

    def spy(self, X, Y, alphas, **k):
        seen.append(k.get("gram") is not None)
        return orig(self, X, Y, alphas, **k)

    monkeypatch.setattr(dense_mod.DenseSolver, "path", spy)
    a = CircuitLasso(**kw).fit(acts)
    c = CircuitLasso(n_jobs=2, **kw).fit(acts)   # threads sharing the Gram
    assert seen and all(seen)
    monkeypatch.setattr(lasso_mod, "GRAM_MAX_BYTES", 0)  # too large: every block computes its own Gram entries
    seen.clear()
    b = CircuitLasso(**kw).fit(acts)
    assert seen and not any(seen)
    for est in (b, c):
        pd.testing.assert_frame_equal(a.circuit_.edges[["source", "target"]], est.circuit_.edges[["source", "target"]])
        np.testing.assert_allclose(a.circuit_.edges["weight"], est.circuit_.edges["weight"], atol=1e-9)
    assert set(zip(a.circuit_.edges["source"], a.circuit_.edges["target"])) == planted
