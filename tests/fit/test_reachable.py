"""CircuitLasso(target_rows="reachable"): ReLU-like targets refitted on the rows where they can move find
inhibitory parents that the all-rows fit misses; the refit equals a slow sklearn reference on those rows;
bad option values name the valid choices; the planted generator's inhibitory option."""

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.linear_model import lasso_path

from circuitkit.bench import scale
from circuitkit.features import Features
from circuitkit.fit.lasso import CircuitLasso
from circuitkit.fit.reachable import nonnegative_columns, reachable_rows

KW = {"include_errors": False, "progress": False, "n_alphas": 16, "selection": "ebic"}  # reachable needs (E)BIC
E1, E2, INH = "L0.resid_post/f0", "L0.resid_post/f1", "L0.resid_post/f2"


def inhibited(seed, n=2000, d=30, p_drive=0.005, p_inh=0.3):
    """Target 0 = relu(x0 + x1 - x2 - 0.1) with rare drivers x0, x1 (0.5% of rows each) and a frequent
    inhibitor x2 (30%): the inhibitor matters only in the ~20 rows where a driver is on. Target 1 is a
    control driven by x5 alone."""
    rng = np.random.default_rng(seed)
    P = rng.uniform(0.02, 0.2, d)
    P[0] = P[1] = p_drive
    P[2] = p_inh
    Zs = (rng.random((n, d)) < P) * rng.lognormal(0, 0.5, (n, d))
    pre = Zs[:, 0] + Zs[:, 1] - Zs[:, 2]
    pre = pre * (1 + 0.2 * rng.standard_normal(n)) + 0.05 * rng.standard_normal(n) - 0.1
    y = np.maximum(np.where(pre != 0, pre, 0), 0)
    Zt = np.column_stack([y, np.maximum(Zs[:, 5] * (1 + 0.2 * rng.standard_normal(n)), 0)])
    return Zs, Zt, Features.from_csr({"L0.resid_post": sp.csr_matrix(Zs), "L1.resid_post": sp.csr_matrix(Zt)})


def test_reachable_rows_find_the_inhibitor_the_all_rows_fit_misses():
    found = {"all": 0, "reachable": 0}
    false = {"all": 0, "reachable": 0}
    for seed in range(12):
        _, _, f = inhibited(seed)
        for mode in found:
            est = CircuitLasso(target_rows=mode, **KW).fit(f)
            e = est.circuit_.edges
            e = e[e["target"] == "L1.resid_post/f0"]
            w = dict(zip(e["source"], e["weight"]))
            found[mode] += w.get(INH, 0.0) < 0
            false[mode] += len(set(w) - {E1, E2, INH})
            if mode == "reachable":
                assert est.circuit_.meta["target_rows"] == "reachable"
                assert set(est.reachable_rows_) >= {30}  # column 30 = target 0 (after the 30 sources)
    # measured on seeds 0-11: the inhibitor (with a negative weight) in 3/12 fits on all rows, 10/12 on the
    # reachable rows; false parents of target 0: 5 vs 4 in all
    assert found["all"] <= 5 and found["reachable"] >= 8
    assert false["reachable"] <= false["all"] + 4


def test_refit_equals_sklearn_lasso_path_on_the_reachable_rows():
    Zs, Zt, f = inhibited(3, n=1500)
    n, d = Zs.shape
    base = CircuitLasso(tol=1e-12, max_iter=500, solver="celer", **KW).fit(f)
    est = CircuitLasso(target_rows="reachable", tol=1e-12, max_iter=500, solver="celer", **KW).fit(f)
    np.testing.assert_allclose(est.alphas_, base.alphas_)
    t = d  # target 0's column
    drivers = np.flatnonzero(base.coef_[t, :d].toarray().ravel() > 0)
    R = np.flatnonzero((Zt[:, 0] != 0) | (Zs[:, drivers] != 0).any(axis=1))
    assert est.reachable_rows_[t] == R.size and 0 < R.size < n
    X, y = Zs[R], Zt[R, 0]
    live = X.std(0) > 1e-12
    Xc = (X[:, live] - X[:, live].mean(0)) / X[:, live].std(0)
    yc = (y - y.mean()) / y.std()
    _, ref, _ = lasso_path(Xc, yc, alphas=est.alphas_, tol=1e-14, max_iter=200_000)
    got = np.stack([c[t, :d].toarray().ravel()[live] for c in est.coef_path_], axis=1)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    # the control target (not refitted differently in kind) still has its one parent
    e = est.circuit_.edges
    assert set(e.loc[e["target"] == "L1.resid_post/f1", "source"]) == {"L0.resid_post/f5"}


def test_rows_helpers_agree_between_sparse_and_dense():
    rng = np.random.default_rng(0)
    X = (rng.random((50, 6)) < 0.2) * rng.random((50, 6))
    X[:, 4] = rng.standard_normal(50)     # signed: not a ReLU-like target
    X[:, 5] = 1.0 + rng.random(50)        # positive everywhere: never off, nothing to refit
    cols = np.arange(6)
    np.testing.assert_array_equal(nonnegative_columns(sp.csc_matrix(X), cols), nonnegative_columns(X, cols))
    assert nonnegative_columns(X, cols).tolist() == [True, True, True, True, False, False]
    want = np.flatnonzero((X[:, 0] != 0) | (X[:, 2] != 0) | (X[:, 3] != 0))
    np.testing.assert_array_equal(reachable_rows(sp.csc_matrix(X), 0, np.array([2, 3])), want)
    np.testing.assert_array_equal(reachable_rows(X, 0, np.array([2, 3])), want)


@pytest.mark.parametrize("kw, msg", [
    ({"target_rows": "active"}, r"unknown target_rows 'active'; valid choices: \('all', 'reachable'\)"),
    ({"target_rows": None}, r"unknown target_rows None; valid choices"),
    ({"target_rows": "reachable", "selection": "stability"}, r"needs selection in \('bic', 'ebic'\) or a fixed alpha"),
    ({"target_rows": "reachable", "selection": "n_edges", "n_edges": 3}, "got selection='n_edges'"),
])
def test_bad_target_rows_are_named(kw, msg):
    _, _, f = inhibited(0, n=200)
    with pytest.raises(ValueError, match=msg):
        CircuitLasso(**{**KW, **kw}).fit(f)
    if kw.get("selection") == "stability":  # the default selection: the message says what to pass
        with pytest.raises(ValueError, match="pass selection='ebic' with target_rows='reachable'"):
            CircuitLasso(target_rows="reachable").fit(f)


def test_default_is_unchanged_and_fixed_alpha_works():
    _, _, f = inhibited(1, n=800)
    a = CircuitLasso(**KW).fit(f)
    b = CircuitLasso(target_rows="all", **KW).fit(f)
    assert (a.coef_ != b.coef_).nnz == 0 and "target_rows" not in a.circuit_.meta and a.reachable_rows_ == {}
    c = CircuitLasso(target_rows="reachable", alpha=0.02, **KW).fit(f)
    assert c.circuit_.meta["selection"] == "fixed" and len(c.reachable_rows_) >= 1


def test_generator_plants_inhibitory_edges_and_keeps_the_old_data_without_them():
    Zs0, Zt0, A0 = scale.make_pair(200, 2000, seed=4)
    Zs1, Zt1, A1 = scale.make_pair(200, 2000, seed=4, inhibitory=0.0, encoder_bias=0.0)
    assert (Zs0 != Zs1).nnz == 0 and (Zt0 != Zt1).nnz == 0 and (A0 != A1).nnz == 0
    _, Zt2, A2 = scale.make_pair(200, 2000, seed=4, inhibitory=0.5, encoder_bias=-0.2)
    driven = np.unique(A0.tocoo().col[A0.tocoo().data > 0])
    n_neg = int((A2.data < 0).sum())
    assert abs(n_neg - 0.5 * driven.size) <= 4 * np.sqrt(0.25 * driven.size)   # a binomial draw
    assert Zt2.nnz < Zt0.nnz  # inhibition and the negative bias switch target activations off
    for kw, msg in [({"inhibitory": 1.5}, r"inhibitory must be a fraction in \[0, 1\]"),
                    ({"encoder_bias": 0.3}, "encoder_bias must be a finite number <= 0")]:
        with pytest.raises(ValueError, match=msg):
            scale.make_pair(20, 100, **kw)
