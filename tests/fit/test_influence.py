"""Influence on y (circuitkit.fit.influence) and per-site compression (circuitkit.activations.compress_sites).

* the total effect equals the sum over every directed path of the coefficient products (explicit enumeration);
* on a planted linear model the edges that carry y rank first, an edge with no path to y gets no influence,
  and a direct edge's influence is the RMS of its linear contribution computed by hand;
* compressed sites are whitened, keep the stated variance and keep a planted edge; bad inputs name the value.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from circuitkit.activations import Activations, compress_sites
from circuitkit.fit.influence import edge_influence, influence_circuit, node_influence, total_effect
from circuitkit.fit.lasso import CircuitLasso


def test_total_effect_is_the_sum_over_paths():
    rng = np.random.default_rng(0)
    n = 6
    C = np.tril(rng.normal(size=(n, n)), k=-1) * (rng.random((n, n)) < 0.6)  # target j reads sources i < j
    w = rng.normal(size=n)
    t = total_effect(sp.csr_matrix(C), w)
    ref = np.zeros(n)
    for i in range(n):  # every path i -> j1 -> ... -> jk, then -> y
        for k in range(n):
            for mid in itertools.combinations(range(i + 1, n), k):
                chain = (i, *mid)
                prod = np.prod([C[b, a] for a, b in itertools.pairwise(chain)]) if k else 1.0
                ref[i] += prod * w[chain[-1]]
    np.testing.assert_allclose(t, ref, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="triangular"):
        total_effect(sp.csr_matrix(C + C.T), w)


def _planted(n=400, seed=0):
    """embed -> L0.H0 -> y (the pathway); embed -> L0.H1 (strong, no path to y)."""
    rng = np.random.default_rng(seed)
    e = rng.normal(size=(n, 3))
    h0 = e @ rng.normal(size=(3, 3)) + 0.3 * rng.normal(size=(n, 3))
    h1 = 2.0 * e[:, [0, 1, 2]] + 0.1 * rng.normal(size=(n, 3))
    y = h0 @ np.array([1.0, -0.5, 0.8]) + 0.1 * rng.normal(size=n)
    idx = pd.DataFrame({"prompt": np.arange(n), "position": -1, "token": ""})
    return Activations({"embed": e, "L0.H0": h0, "L0.H1": h1}, idx), y


def test_pathway_edges_rank_first_and_dead_ends_get_nothing():
    acts, y = _planted()
    est = CircuitLasso(progress=False).fit(acts, y)
    inf = edge_influence(est, acts)
    pairs = list(zip(inf["source"], inf["target"]))
    assert set(pairs[:2]) == {("embed", "L0.H0"), ("L0.H0", "y")}
    assert ("embed", "L0.H1") not in pairs  # L0.H1 never reaches y, so that strong edge carries nothing to it
    # direct edge: RMS over rows of the standardised source times its y coefficients
    Z = acts["L0.H0"] - acts["L0.H0"].mean(0)
    Z = Z / Z.std(0)
    cols = np.flatnonzero(est.columns_["node"].to_numpy() == "L0.H0")
    w = np.asarray(est.y_coef_path_[-1].todense()).ravel()[cols]
    row = inf[(inf["source"] == "L0.H0") & (inf["target"] == "y")].iloc[0]
    assert row["influence"] == pytest.approx(float(np.sqrt(np.mean((Z @ w) ** 2))), rel=1e-9)
    circ = influence_circuit(est, acts)
    assert circ.edges["score"].is_monotonic_decreasing and circ.edges["selected"].any()
    nodes = node_influence(est)
    assert nodes.index[0] in ("embed", "L0.H0") and nodes["L0.H1"] == 0.0


def test_edge_influence_needs_y_and_the_fitted_activations():
    acts, y = _planted(n=120)
    with pytest.raises(ValueError, match="no prediction target"):
        edge_influence(CircuitLasso(progress=False).fit(acts), acts)
    est = CircuitLasso(progress=False).fit(acts, y)
    with pytest.raises(ValueError, match="unknown coef 'last'.*'path_end', 'selected'"):
        edge_influence(est, acts, coef="last")
    with pytest.raises(ValueError, match="'L0.H1' was not captured"):
        edge_influence(est, acts.subset(["embed", "L0.H0"]))
    with pytest.raises(ValueError, match="pass the activations it was fitted on"):
        edge_influence(est, compress_sites(acts, max_components=1))
    with pytest.raises(ValueError, match="y_index 3 out of range"):
        node_influence(est, y_index=3)


def test_compress_sites_whitens_and_keeps_a_planted_edge():
    rng = np.random.default_rng(1)
    n = 300
    low = rng.normal(size=(n, 2)) @ rng.normal(size=(2, 16))  # rank 2 in 16 dimensions
    e = np.concatenate([low + 1e-3 * rng.normal(size=(n, 16))], axis=1)
    h = e[:, :4] @ rng.normal(size=(4, 8)) + 0.05 * rng.normal(size=(n, 8))
    idx = pd.DataFrame({"prompt": np.arange(n), "position": -1, "token": ""})
    acts = Activations({"embed": e, "L0.H0": h, "L0.H1": np.ones((n, 4))}, idx)
    small = compress_sites(acts, variance=0.99, max_components=32)
    info = small.meta["compressed"]["sites"]
    assert info["embed"]["k"] == 2 and info["embed"]["variance"] >= 0.99
    assert info["L0.H1"]["k"] == 0 and small["L0.H1"].shape == (n, 1)
    for s in ("embed", "L0.H0"):
        Z = small[s].astype(np.float64)
        np.testing.assert_allclose(Z.T @ Z / n, np.eye(Z.shape[1]), atol=1e-4)
    assert compress_sites(acts, max_components=1).meta["compressed"]["sites"]["L0.H0"]["k"] == 1
    est = CircuitLasso(progress=False).fit(small.subset(["embed", "L0.H0"]))
    assert set(zip(est.circuit_.edges["source"], est.circuit_.edges["target"])) == {("embed", "L0.H0")}
    with pytest.raises(ValueError, match="variance must be in"):
        compress_sites(acts, variance=1.5)
    with pytest.raises(ValueError, match="max_components must be an int"):
        compress_sites(acts, max_components=0)
