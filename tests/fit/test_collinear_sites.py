"""Collinear sites: a site that is a linear function of earlier sites is reported (with those sites) by the
per-column CircuitLasso; independent sites are not; the reported R^2 agrees with a least-squares fit."""

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression

from circuitkit.activations import Activations
from circuitkit.fit.collinear import collinear_blocks
from circuitkit.fit.lasso import CircuitLasso


def acts(noise: float, n: int = 500, seed: int = 0) -> Activations:
    """embed, L0.H0, L0.H1 independent; L0.MLP's first column = 2 embed_0 - 3 L0.H0_1 (+ noise); out reads
    L0.MLP and L0.H1."""
    rng = np.random.default_rng(seed)
    e = rng.normal(size=(n, 4))
    h0 = rng.normal(size=(n, 3))
    h1 = rng.normal(size=(n, 3))
    m0 = np.c_[2 * e[:, 0] - 3 * h0[:, 1] + noise * rng.normal(size=n), rng.normal(size=(n, 2))]
    o = np.c_[m0[:, 0] + h1[:, 2] + 0.1 * rng.normal(size=n), rng.normal(size=n)]
    idx = pd.DataFrame({"prompt": np.arange(n), "position": 0, "token": ""})
    return Activations({"embed": e, "L0.H0": h0, "L0.H1": h1, "L0.MLP": m0, "out": o}, idx)


def test_exact_linear_function_of_two_earlier_sites_is_reported():
    with pytest.warns(UserWarning, match=r"L0\.MLP \(R\^2 = 1 - .*in the span of embed \+ L0\.H0\)"):
        est = CircuitLasso(progress=False).fit(acts(noise=0.0))
    found = est.collinear_sites_
    assert found["site"].tolist() == ["L0.MLP"]          # L0.H0, L0.H1 (independent) are not reported
    row = found.iloc[0]
    assert row["r2"] > 1 - 1e-10 and row["n_dims"] == 1 and row["n_columns"] == 3
    assert row["sources"] == ["embed", "L0.H0"]
    assert est.circuit_.meta["collinear_sites"] == ["L0.MLP"]


def test_near_collinear_reported_and_noisy_not():
    with pytest.warns(UserWarning, match="linear functions of earlier sites"):
        est = CircuitLasso(progress=False).fit(acts(noise=1e-5))     # R^2 = 1 - ~1e-11
    assert est.collinear_sites_["site"].tolist() == ["L0.MLP"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")                      # no collinearity warning at noise 0.1
        est = CircuitLasso(progress=False).fit(acts(noise=0.1))
    assert est.collinear_sites_.empty and est.circuit_.meta["collinear_sites"] == []


def test_r2_matches_least_squares_on_earlier_columns():
    """For a one-column block the squared canonical correlation is the R^2 of OLS on the earlier columns."""
    rng = np.random.default_rng(1)
    n = 400
    a, b = rng.normal(size=(n, 3)), rng.normal(size=(n, 2))
    for noise in (1e-4, 0.3, 1.0):
        y = a @ [1.0, -2.0, 0.5] + 3 * b[:, 1] + noise * rng.normal(size=n)
        blocks = [x - x.mean(0) for x in (a, b, y[:, None])]
        ref = LinearRegression().fit(np.c_[a, b], y).score(np.c_[a, b], y)
        got = collinear_blocks(blocks, ["A", "B", "C"], r2_threshold=0.0)
        r2 = float(got.set_index("site").loc["C", "r2"])
        assert r2 == pytest.approx(ref, abs=1e-10)
        assert got.set_index("site").loc["C", "sources"] == ["A", "B"]
    # B is independent of A: its r2 is the chance level (~ 3 / n), far below any threshold
    assert float(got.set_index("site").loc["B", "r2"]) < 0.05


def test_check_only_reports_and_is_skipped_when_too_costly(monkeypatch):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        checked = CircuitLasso(progress=False).fit(acts(noise=0.0))
        monkeypatch.setattr("circuitkit.fit.lasso.COLLINEAR_MAX_WORK", 0)
        skipped = CircuitLasso(progress=False).fit(acts(noise=0.0))
    assert checked.collinear_sites_["site"].tolist() == ["L0.MLP"]
    assert skipped.collinear_sites_ is None and skipped.circuit_.meta["collinear_sites"] is None
    # the fit itself does not depend on the check
    pd.testing.assert_frame_equal(checked.circuit_.edges, skipped.circuit_.edges, check_exact=True)
    pd.testing.assert_frame_equal(checked.circuit_.path, skipped.circuit_.path, check_exact=True)
