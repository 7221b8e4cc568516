"""Scale benchmark data: planted parents are sources the data exercises; the per-row activity stays SAE-like."""

import argparse

import numpy as np
import pytest
import scipy.sparse as sp

from circuitkit.bench import scale


def _parent_rows(Zs: sp.csc_matrix, A: sp.csr_matrix) -> np.ndarray:
    active = np.diff(sp.csc_matrix(Zs).indptr)
    return active[sp.coo_matrix(A).row]


@pytest.mark.parametrize("min_rows", [10, 40])
def test_planted_parents_are_active_in_at_least_min_parent_rows(min_rows):
    Zs, _, A = scale.make_pair(8192, 3000, seed=1, min_parent_rows=min_rows)
    rows = _parent_rows(Zs, A)
    assert A.nnz > 500 and rows.min() >= min_rows
    # the rule bites: at this width many live sources are rarer than that, and they stay in the data
    elig = scale.parent_eligibility(Zs, min_rows)
    active = np.diff(Zs.indptr)
    assert elig["sources_excluded"] == int(((active > 0) & (active < min_rows)).sum()) > 1000
    assert 0 < elig["excluded_frac"] < 1 and elig["min_parent_rows"] == min_rows


def test_without_the_rule_rare_parents_are_planted():
    """The check above can fail: with min_parent_rows=1 (parents among all live sources, the old
    generator) some planted parents are active in fewer than 10 rows."""
    Zs, _, A = scale.make_pair(8192, 3000, seed=1, min_parent_rows=1)
    assert _parent_rows(Zs, A).min() < 10


def test_activity_per_row_stays_sae_like():
    for D in (4096, 24576):
        Zs, Zt, _ = scale.make_pair(D, 10_000, seed=0)
        assert 30 <= Zs.nnz / 10_000 <= 60 and 30 <= Zt.nnz / 10_000 <= 60, (D, Zs.nnz, Zt.nnz)
        freq = np.sort(np.diff(Zs.indptr))[::-1]
        assert freq[: D // 10].sum() > 0.4 * freq.sum()  # heavy-tailed: the top 10% carry > 40% of activity


def test_make_pair_refuses_bad_min_parent_rows():
    with pytest.raises(ValueError, match="min_parent_rows must be a positive int"):
        scale.make_pair(64, 100, min_parent_rows=0)
    with pytest.raises(ValueError, match="no source is active in >= 1000"):
        scale.make_pair(64, 100, min_parent_rows=1000)


def test_cli_flags_and_table():
    p = argparse.ArgumentParser()
    scale.add_arguments(p)
    a = p.parse_args(["--no-fits", "--capture-sizes", "64", "256", "--min-parent-rows", "5"])
    assert a.no_fits and a.capture_sizes == [64, 256] and a.min_parent_rows == 5
    table = scale.format_table([{"D": 4096, "M": 10, "method": "fast", "seconds": 1.0, "peak_mb": 2.0,
                                 "auroc": 0.9, "precision": 0.5, "extrapolated": False,
                                 "parents_excluded_frac": 0.25}])
    assert "parents_excluded_frac" in table and "0.250" in table


def test_negative_edges_are_mostly_invisible_so_the_default_plants_none():
    """Why the default generator plants excitatory edges only: in relu(sum of parents) with no baseline, a
    negative edge changes its target only where a positive parent is co-active."""
    Zs, _, A = scale.make_pair(4096, 3000, seed=2, neg_frac=0.15)
    E, rows = scale.exercised_rows(Zs, A)
    neg = E.data < 0
    assert 0.1 < neg.mean() < 0.2
    assert (rows[neg] >= 3).mean() < 0.1 and (rows[~neg] >= 3).mean() > 0.9
    Zs, _, A = scale.make_pair(4096, 3000, seed=2)
    assert (A.data > 0).all()
    with pytest.raises(ValueError, match="neg_frac"):
        scale.make_pair(64, 100, neg_frac=1.0)


def test_selection_records_report_the_selected_circuit_and_the_bound():
    """`bench scale --selection ebic stability --target-rows all reachable` on a small planted pair: one
    record per valid mode, precision/recall of the selected circuit recomputed here from its edges, and the
    stability record's observed false edges next to its E[V] bound."""
    Zs, Zt, A = scale.make_pair(80, 1000, seed=0, inhibitory=0.5, encoder_bias=-0.2)
    recs = scale.selection_records(Zs, Zt, A, D=80, M=1000, n_jobs=1, alpha_min_ratio=1e-2,
                                   modes=[("ebic", "all"), ("ebic", "reachable"), ("stability", "all")],
                                   inhibitory=0.5, encoder_bias=-0.2, stability_b=2, stability_q=3, log=lambda m: None)
    assert [r["method"] for r in recs] == ["fast ebic target_rows=all", "fast ebic target_rows=reachable",
                                           "fast stability target_rows=all"]
    n_true = A.nnz
    for r in recs:
        assert r["n_true"] == n_true and 0 <= r["false_edges"] <= r["n_selected"]
        tp = r["n_selected"] - r["false_edges"]
        assert r["precision_selected"] == pytest.approx(tp / r["n_selected"])
        assert r["recall_selected"] == pytest.approx(tp / n_true)
        assert 0 <= r["recall_negative"] <= 1 and r["n_negative"] == int((A.data < 0).sum()) > 0
    st = recs[2]
    assert st["expected_false_edges_bound"] > 0 and st["false_edges"] <= st["expected_false_edges_bound"]
    assert recs[0]["expected_false_edges_bound"] is None and recs[1]["targets_refit"] > 0
    p = argparse.ArgumentParser()
    scale.add_arguments(p)
    a = p.parse_args(["--selection", "ebic", "stability", "--target-rows", "all", "reachable", "--inhibitory", "0.5",
                      "--encoder-bias", "-0.2", "--no-naive"])
    assert a.selection == ["ebic", "stability"] and a.target_rows == ["all", "reachable"] and a.no_naive
