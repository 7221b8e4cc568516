"""The Dask path gives the same path and the same circuit as the local solvers."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from circuitkit.fit.distributed import DaskSolver, concat_results
from circuitkit.fit.fast import FastSolver, SparseTargets
from circuitkit.fit.lasso import CircuitLasso
from circuitkit.sae import Features

distributed = pytest.importorskip("distributed")  # the 'distributed' extra; installed in dev


def sparse_pair(n=1200, d=90, q=24, seed=0):
    rng = np.random.default_rng(seed)
    freq = np.minimum(0.4 * (np.arange(d) + 4.0) ** -0.7, 0.3)
    X = np.where(rng.random((n, d)) < freq, rng.lognormal(0, 0.5, (n, d)), 0.0)
    A = np.zeros((d, q))
    for j in range(q):
        A[rng.choice(40, size=rng.integers(1, 3), replace=False), j] = rng.uniform(0.8, 1.5)
    Y = np.maximum(X @ A + 0.05 * rng.standard_normal((n, q)) * (X @ A > 0), 0)
    return sp.csr_matrix(X), sp.csr_matrix(Y)


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None)
    c = Client(cluster)
    yield c
    c.close()
    cluster.close()


def test_dask_path_equals_local_fast_path(client):
    X, Y = sparse_pair()
    Xs = sp.csc_matrix(X)
    mean = np.asarray(Xs.mean(0)).ravel()
    sd = np.sqrt(np.asarray(Xs.multiply(Xs).mean(0)).ravel() - mean**2)
    Xs = sp.csc_matrix(Xs @ sp.diags(1 / sd))
    ym = np.asarray(Y.mean(0)).ravel()
    ysd = np.sqrt(np.asarray(Y.multiply(Y).mean(0)).ravel() - ym**2)
    T = SparseTargets(Y, ym, ysd)
    alphas = T.alpha_max(Xs, mean / sd) * np.geomspace(1, 0.02, 6)
    local = FastSolver().path(Xs, T, alphas, offset=mean / sd, tol=1e-9)
    remote = DaskSolver("fast", client=client, chunk_targets=5).path(Xs, T, alphas, offset=mean / sd, tol=1e-9)
    assert remote.solver == "dask[fast]" and remote.info["n_chunks"] == 5
    for k in range(len(alphas)):
        np.testing.assert_array_equal(remote.coefs[k].toarray(), local.coefs[k].toarray())
    np.testing.assert_array_equal(remote.rss, local.rss)
    np.testing.assert_array_equal(remote.info["relaxed_rss"], local.info["relaxed_rss"])
    assert sum(c.nnz for c in local.coefs) > 50


def test_dask_circuit_equals_local_circuit(client):
    X, Y = sparse_pair(seed=1)
    idx = pd.DataFrame({"prompt": np.arange(X.shape[0]), "position": 0, "token": ""})
    feats = Features({"L0.resid_post": X, "L1.resid_post": Y}, {}, idx)
    kw = {"tol": 1e-9, "n_alphas": 8, "progress": False}
    local = CircuitLasso(solver="fast", **kw).fit(feats).circuit_
    on_dask = CircuitLasso(solver="dask", **kw).fit(feats).circuit_  # uses the current client
    cols = ["source", "target", "weight"]
    a = local.edges[cols].sort_values(cols[:2]).reset_index(drop=True)
    b = on_dask.edges[cols].sort_values(cols[:2]).reset_index(drop=True)
    assert len(a) > 10
    pd.testing.assert_frame_equal(a, b)
    # the celer reference through Dask too (inner solver by name)
    ref = CircuitLasso(solver="celer", **kw).fit(feats).circuit_
    assert set(zip(ref.edges["source"], ref.edges["target"])) == set(zip(a["source"], a["target"]))


def test_joblib_dask_backend_runs_the_local_solver_on_the_cluster(client):
    import joblib

    X, Y = sparse_pair(n=600, seed=2)
    Xs = sp.csc_matrix(X)
    T = SparseTargets(Y, np.asarray(Y.mean(0)).ravel(), np.ones(Y.shape[1]))
    alphas = np.array([0.3, 0.1])
    local = FastSolver(chunk_targets=4).path(Xs, T, alphas, tol=1e-9, n_jobs=1)
    with joblib.parallel_backend("dask"):
        remote = FastSolver(chunk_targets=4).path(Xs, T, alphas, tol=1e-9, n_jobs=2)
    np.testing.assert_array_equal(remote.coefs[1].toarray(), local.coefs[1].toarray())


def test_no_client_and_bad_options_are_refused(monkeypatch):
    def no_client():
        raise ValueError("No clients found")

    monkeypatch.setattr(distributed, "get_client", no_client)
    with pytest.raises(ValueError, match="found no Dask client: start one first"):
        DaskSolver()._client()
    with pytest.raises(ValueError, match="unknown solver 'nope'"):
        DaskSolver("nope")
    with pytest.raises(ValueError, match="cannot be 'dask'"):
        DaskSolver("dask")
    with pytest.raises(ValueError, match="no results"):
        concat_results([], 3, "dask")
