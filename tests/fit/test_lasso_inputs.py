"""CircuitLasso's parameters and targets: every bad input names the parameter, the value and the valid
choices; suspicious but legal inputs warn; new options (targets='y', exclude, min_edges, path_arrays)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import circuitkit as ck
from circuitkit.features import Features


@pytest.fixture(scope="module")
def feats():
    rng = np.random.default_rng(0)
    a = sp.csr_matrix(rng.exponential(size=(300, 8)) * (rng.random((300, 8)) < 0.4))
    b = a[:, [0, 1, 2, 3]] * 2.0 + sp.csr_matrix(0.01 * rng.random((300, 4)))
    return Features.from_csr({"L0.resid_post": a, "L1.resid_post": b})


def _fit(feats, y=None, **kw):
    return ck.CircuitLasso(progress=False, **kw).fit(feats, y)


@pytest.mark.parametrize("kw, exc, pattern", [
    ({"alpha": True}, TypeError, r"alpha must be a number, got True"),
    ({"alpha": -1.0}, ValueError, r"alpha must be a finite number > 0"),
    ({"n_edges": "40", "selection": "n_edges"}, TypeError, r"n_edges must be an int >= 0, got '40'"),
    ({"alphas": ["a"]}, TypeError, r"every entry of alphas must be a number, got 'a'"),
    ({"alphas": []}, ValueError, r"alphas must be a non-empty list"),
    ({"n_jobs": 0}, ValueError, r"n_jobs must be a positive int or -1 \(all cores\), got 0"),
    ({"selection": "aic"}, ValueError, r"unknown selection 'aic'; valid choices: \('bic', 'ebic', 'n_edges', 'min_edges', 'stability'\)"),
    ({"selection": "min_edges"}, ValueError, r"selection='min_edges' needs n_edges"),
    ({"targets": "x"}, ValueError, r"unknown targets 'x'; valid: \('all', 'y'\)"),
    ({"exclude": "L0.resid_post/f1"}, TypeError, r"exclude must be a list of node names"),
])
def test_bad_parameters_name_themselves(feats, kw, exc, pattern):
    with pytest.raises(exc, match=pattern):
        _fit(feats, **kw)


def test_numpy_scalars_are_numbers(feats):
    est = _fit(feats, alpha=np.float32(0.05))
    assert est.alpha_ == pytest.approx(0.05, rel=1e-6) and est.circuit_.n_edges > 0
    _fit(feats, selection="n_edges", n_edges=np.int64(3))


def test_string_class_labels_fit_a_logistic_target(feats):
    y = np.where(feats["L0.resid_post"][:, 0].toarray().ravel() > 0.5, "nurse", "professor")
    est = _fit(feats, y, targets="y", selection="min_edges", n_edges=1)
    into_y = est.circuit_.edges[est.circuit_.edges["target"] == "y"]
    assert "L0.resid_post/f0" in set(into_y["source"]) or "L1.resid_post/f0" in set(into_y["source"])
    with pytest.raises(TypeError, match="y_kind='linear' needs numeric y"):
        _fit(feats, y, y_kind="linear")


def test_constant_and_unselected_targets_warn(feats):
    with pytest.warns(UserWarning, match="are constant"):
        _fit(feats, np.ones(300), targets="y")
    y = feats["L1.resid_post"][:, 1].toarray().ravel() + 0.0
    with pytest.warns(UserWarning, match="no edge into the prediction target although its path has up to"):
        _fit(feats, y, targets="y", alphas=[1e3, 1e-3], selection="n_edges", n_edges=0)


def test_targets_y_exclude_and_min_edges(feats):
    y = 3 * feats["L0.resid_post"][:, 2].toarray().ravel() + feats["L0.resid_post"][:, 5].toarray().ravel()
    est = _fit(feats, y, targets="y", selection="min_edges", n_edges=2)
    e = est.circuit_.edges
    assert set(e["target"]) == {"y"}  # no site-to-site regressions
    assert len(e) >= 2 and est.n_edges_path_[np.argmax(est.alphas_ == est.alpha_)] >= 2
    hit = np.flatnonzero(est.n_edges_path_ >= 2)[0]
    assert est.alpha_ == est.alphas_[hit]  # the sparsest point with at least 2 edges
    ex = _fit(feats, y, targets="y", selection="min_edges", n_edges=1, exclude=["L0.resid_post/f2", "L1.resid_post/f2"])
    assert not ex.circuit_.edges["source"].isin(["L0.resid_post/f2", "L1.resid_post/f2"]).any()
    with pytest.raises(ValueError, match="exclude names nodes this fit does not have"):
        _fit(feats, y, targets="y", exclude=["L9.resid_post/f0"])
    with pytest.raises(ValueError, match="targets='y' fits only the prediction target"):
        _fit(feats, targets="y")


def test_path_arrays_are_the_numeric_path(feats):
    est = _fit(feats)
    pa = est.path_arrays()
    assert {"target", "source", "entry_alpha", "entry_index", "coef"} <= set(pa)
    # every array entry matches the stored coefficient path: nonzero at its entry alpha, zero above it
    for t, s, k in zip(pa["target"], pa["source"], pa["entry_index"]):
        assert est.coef_path_[k][t, s] != 0
        assert all(est.coef_path_[j][t, s] == 0 for j in range(k))
    np.testing.assert_allclose(pa["coef"], np.asarray(est.coef_[pa["target"], pa["source"]]).ravel())
    assert set(est.columns_["node"].iloc[pa["target"]]) <= set(est.circuit_.nodes["node"])


def test_alpha_has_one_meaning(feats):
    fixed = _fit(feats, alpha=0.02)
    assert fixed.alpha_ == 0.02 and np.nanmax(fixed.target_alpha_) == 0.02
    per = _fit(feats)
    has = np.asarray(per.coef_.getnnz(axis=1) > 0) & np.isfinite(per.target_alpha_)
    assert per.alpha_ == pytest.approx(float(np.median(per.target_alpha_[has])))
    glob = _fit(feats, selection="n_edges", n_edges=3)
    assert np.all(glob.target_alpha_[np.isfinite(glob.target_alpha_)] == glob.alpha_)


def test_features_validation():
    a = sp.random(10, 4, density=0.5, format="csr", random_state=0)
    with pytest.raises(ValueError, match=r"different row counts"):
        Features.from_csr({"L0.resid_post": a, "L1.resid_post": a[:9]})
    import pandas as pd

    with pytest.raises(ValueError, match="index has 3 rows but the codes have 10"):
        Features.from_csr({"L0.resid_post": a}, index=pd.DataFrame({"prompt": [0, 1, 2]}))
    with pytest.raises(ValueError, match="holds NaN"):
        Features.from_csr({"L0.resid_post": sp.csr_matrix(np.array([[np.nan, 1.0]]))})
    with pytest.raises(ValueError, match="unknown site"):
        Features.from_csr({"layer0": a})


def test_exactly_collinear_sources_are_named():
    rng = np.random.default_rng(3)
    a = rng.exponential(size=(200, 6)) * (rng.random((200, 6)) < 0.5)
    a[:, 4] = 0.0
    a[:, 5] = 0.0
    a[7, 4] = 2.0
    a[7, 5] = 5.0  # features 4 and 5 fire only in row 7: identical after standardisation
    b = a[:, :3] @ rng.normal(size=(3, 3)) + 0.01 * rng.random((200, 3))
    f = Features.from_csr({"L0.resid_post": sp.csr_matrix(a), "L1.resid_post": sp.csr_matrix(np.abs(b))})
    with pytest.warns(UserWarning, match=r"exactly collinear.*L0.resid_post/f4 = L0.resid_post/f5"):
        est = _fit(f)
    assert ["L0.resid_post/f4", "L0.resid_post/f5"] in est.collinear_sources_


def test_fixed_alpha_celer_keeps_no_round_off_coefficients():
    from circuitkit.fit.celer_solver import COEF_RTOL
    from circuitkit.fit.solvers import get_solver

    rng = np.random.default_rng(4)
    X = rng.normal(size=(100, 20))
    X = (X - X.mean(0)) / X.std(0)
    y = 2 * X[:, 0] + 0.1 * rng.normal(size=100)
    y = (y - y.mean()) / y.std()
    res = get_solver("celer").path(X, y[:, None], np.array([0.3]), tol=1e-12)
    w = res.coefs[0].toarray().ravel()
    assert np.all(np.abs(w[w != 0]) > COEF_RTOL * np.abs(w).max()) and w[0] != 0
