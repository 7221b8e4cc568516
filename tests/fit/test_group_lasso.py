"""GroupCircuitLasso: a planted site graph is recovered; the solver agrees with a slow proximal-gradient
reference; collinear sites are reported; bad input is refused."""

import math

import numpy as np
import pandas as pd
import pytest

from circuitkit.activations import Activations
from circuitkit.fit.group import GroupCircuitLasso, group_lasso_bcd

SITES = ["embed", "L0.H0", "L0.H1", "L0.MLP", "L1.H0", "L1.H1", "L1.MLP", "out"]
PARENTS = {"L0.H0": ["embed"], "L0.H1": ["embed"], "L0.MLP": ["L0.H0"], "L1.H0": ["embed", "L0.MLP"],
           "L1.H1": ["L0.H1"], "L1.MLP": ["L1.H0", "L0.H0"], "out": ["L1.MLP", "L1.H1"]}
TRUTH = {(u, v) for v, ps in PARENTS.items() for u in ps}


def planted_acts(n=1500, d=6, seed=0, noise=1.0):
    """8 sites x 6 dims; each site = sum of random linear maps of its parents + its own noise."""
    rng = np.random.default_rng(seed)
    data = {"embed": rng.normal(size=(n, d))}
    for v in SITES[1:]:
        x = noise * rng.normal(size=(n, d))
        for u in PARENTS[v]:
            x += data[u] @ (rng.normal(size=(d, d)) / math.sqrt(d))
        data[v] = x
    idx = pd.DataFrame({"prompt": np.arange(n), "position": 0, "token": ""})
    return Activations(data, idx)


def edge_set(circuit):
    return set(zip(circuit.edges["source"], circuit.edges["target"]))


def whitened(acts, est, site):
    a = np.asarray(acts[site], dtype=np.float64)
    s = (a - a.mean(0)) @ est.components_[site].T
    return s / s.std(0)


def test_planted_site_graph_recovered_exactly():
    est = GroupCircuitLasso().fit(planted_acts())
    assert edge_set(est.circuit_) == TRUTH
    assert (est.n_components_ == 6).all() and len(est.collinear_sites_) == 0
    # the path: empty at alpha_max, every candidate edge has entered by the end, .at() reads it back
    assert len(est.circuit_.at(float(est.alphas_[0])).edges) == 0
    assert len(est.alphas_) == 32 and math.isclose(est.alphas_[-1] / est.alphas_[0], 1e-4, rel_tol=1e-9)
    n_cand = sum(len(s) for s in est.sources_.values())
    assert len(est.entry_alpha_) == n_cand
    # true edges enter the path before every false one
    entry = {(r.source, r.target): r.entry_alpha for r in est.entry_alpha_.itertuples()}
    assert min(entry[e] for e in TRUTH) > max(a for e, a in entry.items() if e not in TRUTH)
    assert all(g.max() <= est.tol * 6 / 2 + 1e-15 for g in est.dual_gaps_.values())
    # n_edges selection reads one global alpha with that many edges
    est2 = GroupCircuitLasso(selection="n_edges", n_edges=len(TRUTH)).fit(planted_acts())
    assert edge_set(est2.circuit_) == TRUTH


def fista_group_lasso(X, Y, groups, w, alpha, n_iter=20000):
    """Slow reference: accelerated proximal gradient on the data matrices (no Gram, no block descent)."""
    n = X.shape[0]
    L = np.linalg.eigvalsh(X.T @ X / n)[-1]
    B = np.zeros((X.shape[1], Y.shape[1]))
    Z, t = B.copy(), 1.0
    for _ in range(n_iter):
        V = Z - X.T @ (X @ Z - Y) / (n * L)
        Bn = np.zeros_like(V)
        for g, wg in zip(groups, w):
            nv = np.linalg.norm(V[g])
            if nv > alpha * wg / L:
                Bn[g] = V[g] * (1 - alpha * wg / (L * nv))
        tn = (1 + math.sqrt(1 + 4 * t * t)) / 2
        Z = Bn + (t - 1) / tn * (Bn - B)
        B, t = Bn, tn
    return B


def objective(X, Y, B, groups, w, alpha):
    R = Y - X @ B
    return 0.5 * np.sum(R * R) / X.shape[0] + alpha * sum(wg * np.linalg.norm(B[g]) for g, wg in zip(groups, w))


def test_agrees_with_proximal_gradient_reference():
    acts = planted_acts(n=400, noise=1.5, seed=3)
    v = "L1.MLP"
    probe = GroupCircuitLasso().fit(acts)
    ent = np.sort(probe.entry_alpha_.loc[probe.entry_alpha_["target"] == v, "entry_alpha"].to_numpy())[::-1]
    alpha = float(math.sqrt(ent[1] * ent[2]))  # between the 2nd and 3rd group to enter: a partial support
    est = GroupCircuitLasso(alpha=alpha, tol=1e-12).fit(acts)
    src = est.sources_[v]
    X = np.hstack([whitened(acts, est, u) for u in src])
    Y = whitened(acts, est, v)
    sizes = [est.n_components_[u] for u in src]
    groups = np.split(np.arange(X.shape[1]), np.cumsum(sizes)[:-1])
    w = np.array([math.sqrt(k * est.n_components_[v]) for k in sizes])
    ref = fista_group_lasso(X, Y, groups, w, alpha)
    got = est.coef_[v]
    f_got, f_ref = objective(X, Y, got, groups, w, alpha), objective(X, Y, ref, groups, w, alpha)
    assert f_got <= f_ref + 1e-10 and f_ref - f_got < 1e-8 * f_ref
    np.testing.assert_allclose(got, ref, atol=1e-5)
    sup_got = [np.linalg.norm(got[g]) > 0 for g in groups]
    sup_ref = [np.linalg.norm(ref[g]) > 1e-8 for g in groups]
    assert sup_got == sup_ref and 0 < sum(sup_got) < len(groups)
    # the circuit's weights are these block norms
    edges = est.circuit_.edges[est.circuit_.edges["target"] == v].set_index("source")["weight"]
    for u, g in zip(src, groups):
        assert math.isclose(edges.get(u, 0.0), float(np.linalg.norm(got[g])), rel_tol=1e-12, abs_tol=1e-15)


def test_bcd_on_non_whitened_groups_matches_reference():
    rng = np.random.default_rng(1)
    n, q = 300, 3
    X = rng.normal(size=(n, 9)) @ rng.normal(size=(9, 9))
    Y = X[:, :3] @ rng.normal(size=(3, q)) + rng.normal(size=(n, q))
    groups = [np.arange(0, 3), np.arange(3, 6), np.arange(6, 9)]
    w = np.ones(3) * 3.0
    alpha = 0.05
    B, gap, _ = group_lasso_bcd(X.T @ X / n, X.T @ Y / n, float(np.sum(Y * Y)) / n, groups, w, alpha, tol=1e-12,
                                max_iter=100000)
    ref = fista_group_lasso(X, Y, groups, w, alpha, n_iter=30000)
    assert gap <= 1e-12 * np.sum(Y * Y) / n
    assert abs(objective(X, Y, B, groups, w, alpha) - objective(X, Y, ref, groups, w, alpha)) < 1e-8


def test_collinear_site_detected_and_warned():
    acts = planted_acts(n=800)
    data = dict(acts.data)
    rng = np.random.default_rng(5)
    data["L0.MLP"] = data["embed"] @ rng.normal(size=(6, 6)) + data["L0.H0"] @ rng.normal(size=(6, 6))  # exact
    coll = Activations(data, acts.index)
    with pytest.warns(UserWarning, match="L0.MLP"):
        est = GroupCircuitLasso().fit(coll)
    assert est.collinear_sites_["site"].tolist() == ["L0.MLP"]
    assert est.collinear_sites_["r2"].iat[0] > 1 - 1e-9
    assert est.circuit_.meta["collinear_sites"] == ["L0.MLP"]


def test_bad_inputs_raise_helpful_errors():
    acts = planted_acts(n=100)
    with pytest.raises(ValueError, match="variance must be"):
        GroupCircuitLasso(variance=1.5).fit(acts)
    with pytest.raises(ValueError, match="valid: .*ebic"):
        GroupCircuitLasso(selection="cv").fit(acts)
    with pytest.raises(ValueError, match="needs n_edges"):
        GroupCircuitLasso(selection="n_edges").fit(acts)
    with pytest.raises(TypeError, match="max_components must be an int"):
        GroupCircuitLasso(max_components=2.5).fit(acts)
    with pytest.raises(TypeError, match="expects Activations"):
        GroupCircuitLasso().fit(np.zeros((10, 4)))
    with pytest.raises(ValueError, match="not captured"):
        GroupCircuitLasso(sites=["embed", "L9.MLP"]).fit(acts)
    with pytest.raises(ValueError, match="at least 2 sites"):
        GroupCircuitLasso(sites=["embed"]).fit(acts)
    bad = dict(acts.data)
    bad["L0.H0"] = bad["L0.H0"].copy()
    bad["L0.H0"][3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        GroupCircuitLasso().fit(Activations(bad, acts.index))
    const = dict(acts.data)
    const["L0.H1"] = np.ones_like(const["L0.H1"])
    est = GroupCircuitLasso().fit(Activations(const, acts.index))
    assert est.skipped_["site"].tolist() == ["L0.H1"]
    assert "L0.H1" not in set(est.circuit_.edges["source"]) | set(est.circuit_.edges["target"])


@pytest.mark.filterwarnings("ignore:.*linear functions of earlier sites:UserWarning")
def test_registered_for_discover_and_the_ground_truth_bench():
    import circuitkit as ck
    from circuitkit.baselines import available_methods
    from circuitkit.bench.ground_truth import make_prompts, run_task
    from circuitkit.evaluate import candidate_edges
    from circuitkit.models.tracr import load_tracr_task

    assert "circuitlasso-group" in available_methods()
    task = load_tracr_task("hist")
    clean, corrupt = make_prompts(task, 64)
    circ = ck.discover("circuitlasso-group", task.model, clean, corrupt, sites=task.sites)
    assert circ.node_names == list(task.sites) and circ.meta["method"] == "circuitlasso-group"
    cands = set(candidate_edges(task.sites))
    assert set(zip(circ.path["source"], circ.path["target"])) <= cands
    recs, _ = run_task(task, methods=["circuitlasso-group"], n_samples=64)
    assert recs[0]["method"] == "circuitlasso-group" and 0 <= recs[0]["auroc"] <= 1
