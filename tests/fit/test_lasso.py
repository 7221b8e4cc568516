"""CircuitLasso: planted structure is recovered; coefficients match scikit-learn; bad input is refused."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.linear_model import Lasso, LogisticRegression

from circuitkit.activations import Activations
from circuitkit.circuit import Circuit
from circuitkit.fit.lasso import CircuitLasso
from circuitkit.sae import Features

PLANTED = {("embed", "L0.H0"), ("embed", "L0.MLP"), ("L0.H0", "L0.MLP"), ("L0.MLP", "out"), ("L0.H1", "out")}


def planted_acts(n=600, seed=0, noise=0.1):
    rng = np.random.default_rng(seed)
    e = rng.normal(size=(n, 4))
    h0 = rng.normal(size=(n, 3))
    h0[:, 0] += 2 * e[:, 0]
    h1 = rng.normal(size=(n, 3))
    m0 = np.c_[1.5 * e[:, 1] - h0[:, 0] + noise * rng.normal(size=n), rng.normal(size=(n, 2))]
    o = np.c_[2 * m0[:, 0] + noise * rng.normal(size=n), h1[:, 1] + noise * rng.normal(size=n)]
    idx = pd.DataFrame({"prompt": np.arange(n), "position": 0, "token": ""})
    return Activations({"embed": e, "L0.H0": h0, "L0.H1": h1, "L0.MLP": m0, "out": o}, idx)


def edge_set(circuit: Circuit) -> set[tuple[str, str]]:
    return set(zip(circuit.edges["source"], circuit.edges["target"]))


def test_planted_component_structure_is_recovered_exactly():
    est = CircuitLasso(progress=False).fit(planted_acts())
    assert edge_set(est.circuit_) == PLANTED
    # heads of the same layer never predict each other, and nothing points backwards
    order = {n: i for i, n in enumerate(est.circuit_.node_names)}
    assert all(order[s] < order[t] for s, t in edge_set(est.circuit_))
    assert ("L0.H0", "L0.H1") not in edge_set(est.circuit_)


def test_fixed_alpha_recovers_planted_edges():
    est = CircuitLasso(alpha=0.2, progress=False).fit(planted_acts())
    assert edge_set(est.circuit_) == PLANTED
    assert est.alpha_ == 0.2 and est.circuit_.meta["selection"] == "fixed"


def test_coefficients_match_sklearn_lasso():
    acts = planted_acts(n=300, noise=0.5)
    alpha = 0.03
    est = CircuitLasso(alpha=alpha, standardize=False, tol=1e-10, max_iter=200, progress=False).fit(acts)
    X = np.hstack([acts[s] for s in ("embed", "L0.H0", "L0.H1")])
    Xc = X - X.mean(0)
    for j in range(3):
        y = acts["L0.MLP"][:, j]
        ref = Lasso(alpha=alpha, fit_intercept=False, tol=1e-12, max_iter=100000).fit(Xc, y - y.mean())
        # columns of L0.MLP in the estimator's layout
        row = est.columns_.index[est.columns_["node"] == "L0.MLP"][j]
        cols = est.columns_.index[est.columns_["node"].isin(["embed", "L0.H0", "L0.H1"])]
        got = est.coef_[row, cols].toarray().ravel()
        np.testing.assert_allclose(got, ref.coef_, atol=1e-6)


def test_standardized_coefficients_match_sklearn_on_standardized_data():
    acts = planted_acts(n=300, noise=0.5)
    est = CircuitLasso(alpha=0.1, tol=1e-10, max_iter=200, progress=False).fit(acts)
    X = np.hstack([acts[s] for s in ("embed", "L0.H0", "L0.H1", "L0.MLP")])
    Xs = (X - X.mean(0)) / X.std(0)
    y = acts["out"][:, 0]
    ys = (y - y.mean()) / y.std()
    ref = Lasso(alpha=0.1, fit_intercept=False, tol=1e-12, max_iter=100000).fit(Xs, ys)
    row = est.columns_.index[est.columns_["node"] == "out"][0]
    cols = est.columns_.index[est.columns_["node"] != "out"]
    np.testing.assert_allclose(est.coef_[row, cols].toarray().ravel(), ref.coef_, atol=1e-6)


def test_path_is_kept_and_at_reads_it_without_refit():
    est = CircuitLasso(n_alphas=8, progress=False).fit(planted_acts())
    c = est.circuit_
    assert len(c.alphas) == 8
    counts = [c.at(a).n_edges for a in c.alphas]
    assert counts[0] == 0 and counts[-1] >= len(PLANTED)  # alpha_max gives the empty graph
    assert counts == sorted(counts) or np.corrcoef(range(8), counts)[0, 1] > 0.9
    with pytest.raises(ValueError, match="outside the fitted path"):
        c.at(c.alphas[0] * 10)


def test_n_edges_selection():
    est = CircuitLasso(selection="n_edges", n_edges=5, n_alphas=30, progress=False).fit(planted_acts())
    assert abs(est.circuit_.n_edges - 5) <= 1


def planted_features(n=1500, d=40, seed=1):
    """Sparse nonnegative codes at two sites with a planted sparse map between them."""
    rng = np.random.default_rng(seed)
    freq = np.clip(rng.pareto(1.5, size=d) * 0.05 + 0.05, 0, 0.6)
    Z0 = (rng.random((n, d)) < freq) * rng.exponential(1.0, size=(n, d))
    k = d // 2
    planted = [(p, q) for q, p in enumerate(rng.permutation(d)[:k])]  # feature p of site 0 -> q of site 1
    Z1 = np.zeros((n, d))
    for p, q in planted:
        Z1[:, q] += 1.5 * Z0[:, p]
    Z1[:, k:] = (rng.random((n, d - k)) < 0.1) * rng.exponential(1.0, size=(n, d - k))
    Z1 = np.maximum(Z1 + 0.05 * rng.normal(size=Z1.shape) * (Z1 > 0), 0)
    idx = pd.DataFrame({"prompt": np.arange(n), "position": 0, "token": ""})
    codes = {"L0.resid_post": sp.csr_matrix(Z0), "L1.resid_post": sp.csr_matrix(Z1)}
    return Features(codes, {}, idx), planted


def test_feature_level_recovers_planted_feature_edges():
    feats, planted = planted_features()
    est = CircuitLasso(progress=False).fit(feats)
    got = {(s, t) for s, t in edge_set(est.circuit_)}
    want = {(f"L0.resid_post/f{p}", f"L1.resid_post/f{q}") for p, q in planted}
    assert want <= got
    top = est.circuit_.top_k(len(want))
    assert set(zip(top.edges["source"], top.edges["target"])) == want
    assert (est.circuit_.edges.set_index(["source", "target"]).loc[list(want), "weight"] > 0).all()


def test_prediction_target_logistic_matches_sklearn():
    rng = np.random.default_rng(3)
    n = 400
    feats, _ = planted_features(n=n, d=12)
    Z = feats["L0.resid_post"].toarray()
    logits = 2.0 * Z[:, 0] - 1.5 * Z[:, 3]
    y = (rng.random(n) < 1 / (1 + np.exp(-(logits - logits.mean())))).astype(int)
    alpha = 0.02
    est = CircuitLasso(alpha=alpha, sites=["L0.resid_post", "L1.resid_post"], include_errors=False,
                       progress=False, tol=1e-10).fit(feats, y)
    X = np.hstack([feats["L0.resid_post"].toarray(), feats["L1.resid_post"].toarray()])
    Xs = (X - X.mean(0)) / np.where(X.std(0) > 0, X.std(0), 1)
    # sklearn's saga minimises C * sum(log-loss) + ||w||_1 with an unpenalised intercept: C = 1 / (n alpha)
    ref = LogisticRegression(penalty="l1", C=1 / (n * alpha), solver="saga", tol=1e-10, max_iter=100000).fit(Xs, y)
    got = est.y_coef_.toarray().ravel()
    np.testing.assert_allclose(got, ref.coef_.ravel(), atol=2e-3)
    assert set(np.flatnonzero(np.abs(got) > 1e-3)) == set(np.flatnonzero(np.abs(ref.coef_.ravel()) > 1e-3))
    assert "y" in set(est.circuit_.edges["target"])


@pytest.mark.parametrize("alpha", [0, -1.0, float("nan"), float("inf")])
def test_bad_alpha_is_refused(alpha):
    with pytest.raises(ValueError, match="alpha must be"):
        CircuitLasso(alpha=alpha).fit(planted_acts(n=50))


def test_bad_options_name_valid_choices():
    with pytest.raises(ValueError, match="valid"):
        CircuitLasso(selection="cv?").fit(planted_acts(n=50))
    with pytest.raises(ValueError, match="valid solvers"):
        CircuitLasso(solver="nope").fit(planted_acts(n=50))
    with pytest.raises(ValueError, match="Activations or Features"):
        CircuitLasso().fit(np.zeros((3, 3)))


def test_nan_activations_are_refused():
    acts = planted_acts(n=50)
    acts.data["L0.H0"][3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or inf.*L0.H0|L0.H0.*NaN or inf"):
        CircuitLasso(progress=False).fit(acts)


def test_single_class_target_is_refused():
    feats, _ = planted_features(n=100, d=8)
    with pytest.raises(ValueError, match="single class"):
        CircuitLasso(progress=False).fit(feats, np.ones(100, dtype=int))


def test_single_site_with_prediction_target():
    feats, _ = planted_features(n=300, d=10)
    one = Features({"L0.resid_post": feats["L0.resid_post"]}, {}, feats.index)
    z = one["L0.resid_post"].toarray()
    y = 2.0 * z[:, 1] - z[:, 4] + 0.01 * np.random.default_rng(0).normal(size=300)
    est = CircuitLasso(progress=False).fit(one, y)
    got = set(est.circuit_.edges["source"])
    assert got == {"L0.resid_post/f1", "L0.resid_post/f4"}
    with pytest.raises(ValueError, match="at least 2 sites"):
        CircuitLasso(progress=False).fit(one)
