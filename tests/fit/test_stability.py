"""Stability selection in CircuitLasso: the E[V] bound holds on planted data, probabilities equal a slow
sklearn reference, bad inputs are named, and probabilities survive save/load."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.linear_model import lasso_path

from circuitkit.bench import scale
from circuitkit.circuit import Circuit
from circuitkit.features import Features
from circuitkit.fit.lasso import CircuitLasso


def _features(Zs, Zt):
    idx = pd.DataFrame({"prompt": np.arange(Zs.shape[0]), "position": 0, "token": ""})
    return Features({"L0.resid_post": sp.csr_matrix(Zs), "L1.resid_post": sp.csr_matrix(Zt)}, {}, idx)


def _ids(names):
    return names.str.split("/f").str[1].astype(int).to_numpy()


KW = {"include_errors": False, "progress": False, "n_alphas": 10}


def _floored(nz, X, y, coefs, alphas, p):
    """The noise floor of the reference (stability module docstring, step 3; it applies here: every target of these
    tests has a bound term q^2 / ((2 pi - 1) p) > 1): grid points from the first one with
    alpha_k < sigma_k sqrt(2 log p / n), sigma_k = ||y - X w_k|| / sqrt(n), count no entrants."""
    n = len(y)
    sigma = np.sqrt(((y[:, None] - X @ coefs) ** 2).sum(0) / n)
    below = alphas < sigma * np.sqrt(2 * np.log(p) / n)
    cut = int(np.argmax(below)) if below.any() else len(alphas)
    out = nz.copy()
    out[:, cut:] = False
    return out


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_false_edges_within_bound_and_recall_on_planted_data(seed):
    Zs, Zt, A = scale.make_pair(120, 1500, seed=seed)
    est = CircuitLasso(selection="stability", stability_b=5, stability_q=3, random_state=seed, **KW).fit(
        _features(Zs, Zt))
    e = est.circuit_.edges
    bound = est.circuit_.meta["expected_false_edges_bound"]
    true = np.asarray(A[_ids(e["source"]), _ids(e["target"])]).ravel() != 0
    # E[V] bound (an expectation; exchangeability assumed) used as a per-run cap, no extra slack: measured
    # 0-2 false edges against a bound of 45 on seeds 0-3
    assert (~true).sum() <= bound
    # recall among planted edges whose source passes min_source_rows: measured 1.0 on seeds 0-3
    ok = np.asarray((Zs != 0).sum(axis=0)).ravel() >= 5
    At = A.tocoo()
    n_planted = int(ok[At.row].sum())
    assert true.sum() >= 0.9 * n_planted
    assert (e["probability"] >= 0.6).all() and (e["probability"] <= 1).all()
    assert est.circuit_.meta["selection"] == "stability" and est.circuit_.meta["n_subsamples"] == 10


def test_probabilities_equal_sklearn_lasso_path_reference():
    rng = np.random.default_rng(0)
    n, d = 300, 12
    X = rng.standard_normal((n, d)) * (rng.random((n, d)) < 0.5)
    B = np.zeros((d, d))
    B[0, 1], B[2, 3], B[4, 3], B[5, 7] = 1.0, 0.8, -0.7, 0.6
    Y = X @ B + 0.5 * rng.standard_normal((n, d)) * (rng.random((n, d)) < 0.5)
    q, b = 3, 4
    est = CircuitLasso(selection="stability", stability_b=b, stability_q=q, solver="celer", tol=1e-10,
                       max_iter=500, min_source_rows=0, **KW).fit(_features(X, Y))
    P = est.stability_.probability.toarray()[d:, :d]           # targets L1 columns, sources L0 columns
    alphas = est.alphas_
    ref = np.zeros((d, d))
    n_cut = 0  # (half, target) paths the floor cuts short of the grid's end with an entrant lost
    for h in est.stability_.halves:
        Xh, Yh = X[h], Y[h]
        Xh = (Xh - Xh.mean(0)) / Xh.std(0)
        Yh = (Yh - Yh.mean(0)) / Yh.std(0)
        for j in range(d):
            _, coefs, _ = lasso_path(Xh, Yh[:, j], alphas=alphas, tol=1e-12, max_iter=100_000)
            nz = _floored(coefs != 0, Xh, Yh[:, j], coefs, alphas, d)   # [d, n_alphas] (sklearn keeps our order)
            n_cut += int(nz.any(1).sum() < (coefs != 0).any(1).sum())
            entry = np.where(nz.any(1), nz.argmax(1), -1)
            kstar = max((k for k in range(len(alphas)) if ((entry >= 0) & (entry <= k)).sum() <= q), default=-1)
            ref[j] += (entry >= 0) & (entry <= kstar)
    ref /= len(est.stability_.halves)
    np.testing.assert_allclose(P, ref, atol=1e-12)
    assert P[1, 0] == 1.0 and P[3, 2] == 1.0
    assert n_cut > 0  # the floor binds here, so the comparison checks it


@pytest.mark.parametrize("q_y", [None, 5])
def test_prediction_target_probabilities_equal_sklearn_reference(q_y):
    """fit(X, y) with stability: y's sources get probabilities from the same halves (sklearn reference over
    every column of both sites), its planted parents are kept with their probability, and the bound counts y."""
    rng = np.random.default_rng(1)
    n, d = 300, 8
    X = rng.standard_normal((n, d)) * (rng.random((n, d)) < 0.6)
    Y = X[:, [0, 1]] @ np.array([[1.0, 0.0], [0.0, 0.9]]) + 0.3 * rng.standard_normal((n, 2))
    Y = np.concatenate([Y, rng.standard_normal((n, d - 2)) * (rng.random((n, d - 2)) < 0.6)], axis=1)
    y = 1.2 * Y[:, 0] - 0.8 * X[:, 5] + 0.3 * rng.standard_normal(n)
    q, b = 3, 4
    feats = _features(X, Y)
    est = CircuitLasso(selection="stability", stability_b=b, stability_q=q, solver="celer", tol=1e-10,
                       max_iter=500, min_source_rows=0, stability_q_y=q_y, **KW).fit(feats, y)
    P = est.stability_.y_probability.toarray()[0]
    # default q_y: floor(sqrt((2 pi - 1) p)) = floor(sqrt(0.2 * 16)) = 1, raised to q
    qy = q if q_y is None else q_y
    assert est.stability_.q_y == qy == est.circuit_.meta["q_y"]
    Xall = np.concatenate([X, Y], axis=1)
    ref = np.zeros(2 * d)
    for h in est.stability_.halves:
        Xh = (Xall[h] - Xall[h].mean(0)) / Xall[h].std(0)
        yh = (y[h] - y[h].mean()) / y[h].std()
        _, coefs, _ = lasso_path(Xh, yh, alphas=est.alphas_, tol=1e-12, max_iter=100_000)
        nz = _floored(coefs != 0, Xh, yh, coefs, est.alphas_, 2 * d)
        entry = np.where(nz.any(1), nz.argmax(1), -1)
        kstar = max((k for k in range(len(est.alphas_)) if ((entry >= 0) & (entry <= k)).sum() <= qy), default=-1)
        ref += (entry >= 0) & (entry <= kstar)
    ref /= len(est.stability_.halves)
    np.testing.assert_allclose(P, ref, atol=1e-12)
    into = est.circuit_.edges[est.circuit_.edges["target"] == "y"].set_index("source")
    assert {"L1.resid_post/f0", "L0.resid_post/f5"} <= set(into.index)
    assert (into["probability"] >= 0.6).all() and (into["weight"] != 0).all()
    no_y = CircuitLasso(selection="stability", stability_b=b, stability_q=q, min_source_rows=0, **KW).fit(feats)
    extra = est.circuit_.meta["expected_false_edges_bound"] - no_y.circuit_.meta["expected_false_edges_bound"]
    assert extra == pytest.approx(qy ** 2 / ((2 * 0.6 - 1) * 2 * d))   # y's term: q_y^2 / ((2 pi - 1) p)


@pytest.mark.parametrize("kw, msg", [
    ({"stability_pi": 0.5}, r"stability_pi must be in \(0.5, 1\].*got 0.5"),
    ({"stability_pi": 1.2}, "stability_pi must be in"),
    ({"stability_b": 0}, "stability_b must be an int >= 1, got 0"),
    ({"stability_q": 0}, "stability_q must be an int >= 1, got 0"),
    ({"stability_q_y": 0}, "stability_q_y must be an int >= 1, got 0"),
    ({"min_source_rows": -1}, "min_source_rows must be an int >= 0, got -1"),
])
def test_bad_inputs_are_named(kw, msg):
    Zs, Zt, _ = scale.make_pair(20, 100, seed=0)
    with pytest.raises(ValueError, match=msg):
        CircuitLasso(selection="stability", **KW, **kw).fit(_features(Zs, Zt))


def test_noise_floor_keeps_a_pure_noise_site_out_of_a_small_component_graph():
    """At component level a target has few candidate columns (here 4 <= q = 5): without the floor every source
    that enters anywhere on the grid is among the first q in every half, so the pure-noise head L0.H1 gets an
    edge from embed with probability 1. With the default floor its noise correlations (~0.06 in 300 rows) stay
    below sigma * sqrt(2 log 4 / 300) (sigma ~ 1: nothing explains the head) = 0.096, and the planted graph is
    recovered exactly."""
    from tests.fit.test_lasso import PLANTED, edge_set, planted_acts

    acts = planted_acts()
    off = CircuitLasso(progress=False, stability_floor=0.0).fit(acts).circuit_
    on = CircuitLasso(progress=False).fit(acts).circuit_
    assert ("embed", "L0.H1") in edge_set(off) and PLANTED <= edge_set(off)
    assert edge_set(on) == PLANTED and on.meta["stability_floor"] == 1.0
    with pytest.raises(ValueError, match="stability_floor must be a finite number >= 0.0, got -1"):
        CircuitLasso(stability_floor=-1).fit(acts)


def test_stability_is_the_default_and_a_fixed_alpha_overrides_it():
    Zs, Zt, _ = scale.make_pair(30, 400, seed=0)
    feats = _features(Zs, Zt)
    est = CircuitLasso(stability_b=3, stability_q=3, **KW).fit(feats)
    assert CircuitLasso().selection == "stability"
    assert est.circuit_.meta["selection"] == "stability"
    assert "expected_false_edges_bound" in est.circuit_.meta
    assert est.circuit_.n_edges > 0 and est.circuit_.edges["probability"].between(0.6 - 1e-9, 1.0).all()
    # a fixed alpha: nothing to select, and the stability-only source filter is off (same fit as with eBIC)
    fixed = CircuitLasso(alpha=0.05, **KW).fit(feats)
    ref = CircuitLasso(alpha=0.05, selection="ebic", **KW).fit(feats)
    assert fixed.circuit_.meta["selection"] == "fixed"
    assert "probability" not in fixed.circuit_.edges.columns
    assert (fixed.coef_ != ref.coef_).nnz == 0 and fixed.coef_.nnz > 0


def test_save_load_keeps_probabilities(tmp_path):
    Zs, Zt, _ = scale.make_pair(60, 800, seed=5)
    c = CircuitLasso(selection="stability", stability_b=3, **KW).fit(_features(Zs, Zt)).circuit_
    assert len(c.edges) > 0
    back = Circuit.load(c.save(tmp_path / "c.json"))
    pd.testing.assert_series_equal(back.edges["probability"], c.edges["probability"])
    assert back.meta["expected_false_edges_bound"] == c.meta["expected_false_edges_bound"]


def test_early_stopped_half_paths_give_the_full_path_probabilities(monkeypatch):
    """The fast solver stops each half-sample path after q entrants (stability.half_solver); the probabilities
    equal those from whole-grid half paths, with and without a prediction target."""
    from circuitkit.fit import stability
    from circuitkit.fit.fast import FastConfig, FastSolver

    Zs, Zt, _ = scale.make_pair(150, 1200, seed=3)
    feats = _features(Zs, Zt)
    y = np.asarray(Zt[:, :3].sum(axis=1)).ravel() + 0.1 * np.random.default_rng(0).standard_normal(Zt.shape[0])
    kw = {**KW, "solver": "fast", "selection": "stability", "stability_b": 3, "stability_q": 2, "random_state": 0}
    cut = CircuitLasso(**kw).fit(feats, y).stability_
    monkeypatch.setattr(stability, "half_solver", lambda name, q: FastSolver(FastConfig(relaxed=False)))
    full = CircuitLasso(**kw).fit(feats, y).stability_
    assert cut.probability.nnz > 0 and cut.y_probability.nnz > 0
    np.testing.assert_array_equal(cut.probability.toarray(), full.probability.toarray())
    np.testing.assert_array_equal(cut.y_probability.toarray(), full.y_probability.toarray())


def test_default_q_y_caps_the_prediction_targets_bound_at_one():
    from circuitkit.fit.stability import default_q_y

    assert default_q_y(5, 9000, 0.6) == 42             # floor(sqrt(0.2 * 9000)) = 42; 42^2 / 1800 = 0.98 <= 1
    assert 42 ** 2 / (0.2 * 9000) <= 1 < 43 ** 2 / (0.2 * 9000)
    assert default_q_y(5, 16, 0.6) == 5                # never below the site targets' q


def test_stability_with_targets_y_selects_the_planted_sources_of_y():
    """targets="y": only y is a target; its planted sources are kept with probabilities and the bound is y's."""
    rng = np.random.default_rng(4)
    X = rng.standard_normal((300, 8)) * (rng.random((300, 8)) < 0.6)
    Y = rng.standard_normal((300, 8))
    y = 1.5 * X[:, 2] - Y[:, 3] + 0.3 * rng.standard_normal(300)
    est = CircuitLasso(targets="y", selection="stability", stability_b=4, **KW).fit(_features(X, Y), y)
    e = est.circuit_.edges
    assert set(e["target"]) == {"y"}
    assert {"L0.resid_post/f2", "L1.resid_post/f3"} <= set(e["source"])
    assert (e["probability"] >= 0.6).all()
    assert est.circuit_.meta["expected_false_edges_bound"] == pytest.approx(5 ** 2 / (0.2 * 16))
