"""The Gram-form solver ("gram") agrees with the reference celer path, and its batched stability selection with
the generic per-block loop; exact copies among the sources are fitted once and credited to every copy."""

import numpy as np
import pandas as pd
import pytest
from test_dense_solver import dense_problem
from test_lasso import PLANTED, edge_set, planted_acts

from circuitkit.activations import Activations
from circuitkit.fit import select
from circuitkit.fit.celer_solver import CelerSolver
from circuitkit.fit.duplicates import find_duplicates, reduce_block
from circuitkit.fit.gram import GramSolver
from circuitkit.fit.lasso import CircuitLasso
from circuitkit.fit.solvers import DenseCoefs, choose_solver


def objective(X, Y, coefs, alphas):
    n = X.shape[0]
    W = np.stack([c.toarray() for c in coefs])          # [k, t, p]
    R = Y[None] - np.einsum("np,ktp->knt", X, W)
    return (R**2).sum(1) / (2 * n) + alphas[:, None] * np.abs(W).sum(2)


@pytest.mark.parametrize("n,p", [(400, 60), (120, 300)], ids=["n>p", "p>n"])
def test_gram_path_matches_celer_objective_and_support(n, p):
    X, Y, alphas = dense_problem(n, p, 6)
    ref = CelerSolver().path(X, Y, alphas, tol=1e-10, max_iter=500)
    res = GramSolver().path(X, Y, alphas, tol=1e-8)
    assert res.solver == "gram" and isinstance(res.coefs, DenseCoefs)
    assert res.skipped.tolist() == [False] * 5 + [True] and res.info["n_skipped"] == 1
    np.testing.assert_allclose(objective(X, Y, res.coefs, alphas), objective(X, Y, ref.coefs, alphas),
                               rtol=1e-9, atol=1e-12)
    for k in range(len(alphas)):
        got, want = res.coefs[k].toarray(), ref.coefs[k].toarray()
        np.testing.assert_array_equal(got != 0, want != 0, err_msg=f"support differs at alpha #{k}")
        np.testing.assert_allclose(got, want, atol=1e-5)
        np.testing.assert_allclose(res.rss[k], ref.rss[k], rtol=1e-5)
    assert sum(c.nnz for c in res.coefs) > 50
    # KKT conditions of the Lasso on the full design
    for k in (3, len(alphas) - 1):
        W = res.coefs[k].toarray().T
        G = X.T @ (Y - X @ W) / n
        assert np.all(np.abs(G[:, :5]) <= alphas[k] * (1 + 1e-6))
    # entry indices are where each coefficient first becomes nonzero
    ent = res.info["entry"]
    for j in range(5):
        for i in range(p):
            nz = [k for k in range(len(alphas)) if res.coefs[k][j, i] != 0]
            assert ent[j, i] == (nz[0] if nz else -1)


def test_offset_shared_gram_and_vectorised_readers():
    X, Y, alphas = dense_problem(150, 80, 4, seed=1)
    shift = np.random.default_rng(2).normal(size=X.shape[1]) * 3
    want = GramSolver().path(X, Y, alphas, tol=1e-10)
    shifted = GramSolver().path(X + shift, Y, alphas, offset=shift, tol=1e-10)
    parent = np.hstack([np.random.default_rng(3).normal(size=(150, 5)), X])
    G = parent.T @ parent
    shared = GramSolver().path(X, Y, alphas, tol=1e-10, gram=(G, np.arange(5, 85)))
    for k in range(len(alphas)):
        np.testing.assert_allclose(shifted.coefs[k].toarray(), want.coefs[k].toarray(), atol=1e-8)
        np.testing.assert_allclose(shared.coefs[k].toarray(), want.coefs[k].toarray(), atol=1e-10)
    kk, r, c, v = want.coefs.triplets()
    for k in range(len(alphas)):
        m = want.coefs[k].tocoo()
        sel = kk == k
        assert sorted(zip(r[sel], c[sel], v[sel])) == sorted(zip(m.row, m.col, m.data))
    np.testing.assert_array_equal(want.coefs.row_nnz(), np.vstack([np.diff(c.indptr) for c in want.coefs]))
    with pytest.raises(ValueError, match="gram must be"):
        GramSolver().path(X, Y, alphas, gram=(G, np.arange(3)))
    with pytest.raises(ValueError, match="descending"):
        GramSolver().path(X, Y, alphas[::-1])
    with pytest.raises(ValueError, match="stop_entered must be an int >= 0"):
        GramSolver(stop_entered=-1)


def test_relaxed_rss_equals_the_ols_refit_on_each_support():
    X, Y, alphas = dense_problem(120, 300, 6, seed=3)
    res = GramSolver().path(X, Y, alphas, tol=1e-8)
    rel = res.info["relaxed_rss"]
    checked = 0
    for j in range(5):
        y = Y[:, j]
        for k in range(len(alphas)):
            support = res.coefs[k][j].indices.tolist()
            want = select.relaxed_rss(X, None, y, support, float(y @ y))
            np.testing.assert_allclose(rel[k, j], want, rtol=1e-7, atol=1e-7)
            checked += bool(support)
    assert checked > 20


def test_stopped_path_equals_the_whole_path_up_to_the_stop():
    X, Y, alphas = dense_problem(300, 50, 5, seed=4)
    whole = GramSolver().path(X, Y, alphas, tol=1e-10)
    stopped = GramSolver(stop_entered=3, relaxed=False).path(X, Y, alphas, tol=1e-10)
    ref = CelerSolver(stop_entered=3).path(X, Y, alphas, tol=1e-10, max_iter=500)
    for j in range(4):
        ent = whole.info["entry"][j]
        counts = np.array([(ent[ent >= 0] <= k).sum() for k in range(len(alphas))])
        stop = int(np.argmax(counts > 3)) if (counts > 3).any() else len(alphas) - 1
        for k in range(len(alphas)):
            if k <= stop:
                np.testing.assert_allclose(stopped.coefs[k][j].toarray(), whole.coefs[k][j].toarray(), atol=1e-10)
            else:
                assert stopped.coefs[k][j].nnz == 0 and np.isnan(stopped.rss[k, j])
        # celer's stopped path stops at the same grid point
        assert np.isnan(ref.rss[:, j]).sum() == np.isnan(stopped.rss[:, j]).sum()


def test_circuitlasso_gram_equals_celer_on_planted_components():
    acts = planted_acts(noise=0.3)
    assert choose_solver(np.zeros((600, 17)), 3, cuda=False) == "gram"
    fits = {s: CircuitLasso(solver=s, progress=False).fit(acts) for s in ("gram", "celer")}
    assert fits["gram"].solver_ == "gram" and CircuitLasso(progress=False).fit(acts).solver_ == "gram"
    tight = {s: CircuitLasso(solver=s, tol=1e-10, max_iter=500, progress=False).fit(acts) for s in ("gram", "celer")}
    for k in range(len(fits["gram"].alphas_)):
        np.testing.assert_allclose(tight["gram"].coef_path_[k].toarray(), tight["celer"].coef_path_[k].toarray(),
                                   atol=1e-7)
        np.testing.assert_array_equal(fits["gram"].coef_path_[k].toarray() != 0,
                                      fits["celer"].coef_path_[k].toarray() != 0)
    pg, pc = fits["gram"].stability_.probability, fits["celer"].stability_.probability
    np.testing.assert_allclose(pg.toarray(), pc.toarray(), atol=1e-12)
    assert edge_set(fits["gram"].circuit_) == edge_set(fits["celer"].circuit_) == PLANTED
    ebic = {s: CircuitLasso(solver=s, selection="ebic", progress=False).fit(acts) for s in ("gram", "celer")}
    assert edge_set(ebic["gram"].circuit_) == edge_set(ebic["celer"].circuit_) == PLANTED


def copies_acts(n=800, seed=5):
    """``L0.MLP``'s column 0 is an exact affine copy of ``embed``'s column 1 (negated, as float32 captures give);
    ``out`` reads that variable, plus ``L0.H0``."""
    rng = np.random.default_rng(seed)
    e = rng.normal(size=(n, 3)).astype(np.float32)
    h0 = np.c_[e[:, 0] + 0.3 * rng.normal(size=n), rng.normal(size=n)].astype(np.float32)
    m0 = np.c_[-2.5 * e[:, 1] + 4.0, rng.normal(size=n)].astype(np.float32)
    o = np.c_[1.5 * e[:, 1] + h0[:, 0] + 0.3 * rng.normal(size=n)].astype(np.float32)
    idx = pd.DataFrame({"prompt": np.arange(n), "position": 0, "token": ""})
    return Activations({"embed": e, "L0.H0": h0, "L0.MLP": m0, "out": o}, idx)


def test_find_duplicates_up_to_sign_and_affine_not_near_copies():
    rng = np.random.default_rng(0)
    a = rng.normal(size=500)
    near = a + 1e-3 * rng.normal(size=500)
    X = np.c_[a, rng.normal(size=500), -3 * a + 2, near, 0.5 * a]
    X = X - X.mean(0)
    d = find_duplicates(X.T @ X, np.array([10, 11, 12, 13, 14]))
    assert len(d) == 1
    np.testing.assert_array_equal(d.groups[0], [10, 12, 14])
    np.testing.assert_array_equal(d.signs[0], [1, -1, 1])
    red = reduce_block(np.array([10, 11, 12, 13, 14]), d)
    np.testing.assert_array_equal(red.scols, [10, 11, 13])
    np.testing.assert_allclose(red.expand_matrix.toarray(),
                               [[1 / 3, 0, -1 / 3, 0, 1 / 3], [0, 1, 0, 0, 0], [0, 0, 0, 1, 0]])
    assert reduce_block(np.array([11, 12, 13]), d) is None     # one copy in the block: nothing merged


@pytest.mark.parametrize("solver", ["gram", "celer"])
def test_copies_are_fitted_once_and_credited_alike(solver):
    acts = copies_acts()
    grid = list(np.geomspace(0.8, 0.008, 12))
    est = CircuitLasso(solver=solver, selection="ebic", alphas=grid, progress=False).fit(acts)
    dup = est.duplicate_columns_
    assert dup is not None and dup["node"].tolist() == ["embed", "L0.MLP"]
    assert dup["sign"].tolist() == [1.0, -1.0]
    e1, m0 = int(dup["column"].iat[0]), int(dup["column"].iat[1])
    out = int(np.flatnonzero(est.columns_["node"] == "out")[0])
    for k, c in enumerate(est.coef_path_):    # the two copies enter together, each with half, opposite signs
        a, b = c[out, e1], c[out, m0]
        assert a == pytest.approx(-b, abs=1e-12), k
    assert est.coef_[out, e1] != 0
    # the split is an optimal Lasso solution of the original design: same fit and l1 norm as the single copy
    single = CircuitLasso(solver=solver, selection="ebic", alphas=grid, progress=False,
                          sites=["embed", "L0.H0", "out"]).fit(acts)
    n_e = int(np.flatnonzero(single.columns_["node"] == "out")[0])
    w_single = single.coef_path_[-1][n_e].toarray().ravel()
    w_split = est.coef_path_[-1][out].toarray().ravel()
    assert abs(w_split[e1]) + abs(w_split[m0]) == pytest.approx(abs(w_single[e1]), rel=1e-6)
    edges = edge_set(est.circuit_)
    assert {("embed", "out"), ("L0.MLP", "out"), ("L0.H0", "out")} <= edges
    # stability selection gives the copies the same probability
    stab = CircuitLasso(solver=solver, progress=False).fit(acts)
    P = stab.stability_.probability
    assert P[out, e1] == P[out, m0] > 0.6


def test_copies_make_celer_and_gram_agree():
    acts = copies_acts(seed=6)
    a = CircuitLasso(solver="gram", progress=False).fit(acts)
    b = CircuitLasso(solver="celer", progress=False).fit(acts)
    for k in range(len(a.alphas_)):
        np.testing.assert_allclose(a.coef_path_[k].toarray(), b.coef_path_[k].toarray(), atol=1e-6)
    assert edge_set(a.circuit_) == edge_set(b.circuit_)
