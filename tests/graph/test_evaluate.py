"""Structural metrics agree with hand-computed values; bad input is a clear error."""

import math

import pandas as pd
import pytest

from circuitkit.circuit import Circuit
from circuitkit.evaluate import (
    candidate_edges,
    edge_auroc,
    edge_metrics,
    edge_scores,
    precision_recall_at_k,
    roc_curve,
    shd,
)

SITES = ["embed", "L0.H0", "L0.H1", "L0.MLP", "out"]


def test_candidate_edges_follow_computation_order():
    c = candidate_edges(SITES)
    # 5 sites, 10 ordered pairs, minus the one pair of parallel heads
    assert len(c) == 9
    assert ("L0.H0", "L0.H1") not in c and ("L0.H1", "L0.H0") not in c
    assert ("embed", "out") in c and ("out", "embed") not in c


def test_auroc_hand_computed():
    cands = [("embed", "L0.H0"), ("embed", "L0.MLP"), ("L0.H0", "L0.MLP"), ("L0.MLP", "out")]
    truth = [("embed", "L0.H0"), ("L0.H0", "L0.MLP")]
    # positives scored 0.9 and 0.3, negatives 0.5 and 0.1: pairs (pos > neg) = 1 + 1 + 0 + 1 = 3 of 4
    scores = {cands[0]: 0.9, cands[2]: 0.3, cands[1]: 0.5, cands[3]: 0.1}
    assert edge_auroc(scores, truth, candidates=cands) == pytest.approx(0.75)
    # ties count 1/2: all equal -> 0.5
    assert edge_auroc({c: 1.0 for c in cands}, truth, candidates=cands) == pytest.approx(0.5)
    # a missing score is 0: positives 0.9, 0; negatives 0.5, 0 -> (1 + 1 + 0 + 0.5) / 4
    assert edge_auroc({cands[0]: 0.9, cands[1]: 0.5}, truth, candidates=cands) == pytest.approx(0.625)
    roc = roc_curve(scores, truth, candidates=cands)
    assert roc.iloc[0][["fpr", "tpr"]].tolist() == [0.0, 0.0]
    assert roc.iloc[-1][["fpr", "tpr"]].tolist() == [1.0, 1.0]
    # trapezoid area under the returned points equals the AUROC
    area = sum((b.fpr - a.fpr) * (a.tpr + b.tpr) / 2 for a, b in zip(roc.itertuples(), roc.iloc[1:].itertuples()))
    assert area == pytest.approx(0.75)


def test_shd_and_precision_recall_hand_computed():
    truth = [("embed", "L0.H0"), ("L0.H0", "L0.MLP"), ("L0.MLP", "out")]
    pred = [("embed", "L0.H0"), ("embed", "out")]
    assert shd(pred, truth) == 1 + 2  # one extra, two missing
    assert shd(truth, truth) == 0
    cands = candidate_edges(SITES)
    scores = {("embed", "L0.H0"): 3.0, ("L0.H0", "L0.MLP"): 2.0, ("embed", "out"): 1.5, ("L0.MLP", "out"): 1.0}
    p, r = precision_recall_at_k(scores, truth, candidates=cands)
    assert (p, r) == (pytest.approx(2 / 3), pytest.approx(2 / 3))
    m = edge_metrics(scores, truth, candidates=cands)
    assert m["shd"] == pytest.approx(2.0)  # top-3 has 1 false edge and misses 1 true edge
    # ties at the cut-off are broken in expectation: k=3, scores 3 (true) then a 4-way tie with 2 true
    tied = {("embed", "L0.H0"): 3.0, ("L0.H0", "L0.MLP"): 1.0, ("L0.MLP", "out"): 1.0, ("embed", "out"): 1.0,
            ("embed", "L0.MLP"): 1.0}
    p, _ = precision_recall_at_k(tied, truth, candidates=cands)
    assert p == pytest.approx((1 + 2 * 2 / 4) / 3)


def test_edge_metrics_on_circuit_uses_path_entry_order():
    nodes = pd.DataFrame({"node": SITES, "site": SITES, "kind": "site"})
    path = pd.DataFrame({
        "alpha": [1.0, 0.5, 0.5, 0.1, 0.1, 0.1],
        "source": ["embed", "embed", "L0.H0", "embed", "L0.H0", "L0.H1"],
        "target": ["L0.H0", "L0.H0", "out", "L0.H0", "out", "out"],
        "weight": [0.1, 0.2, 5.0, 0.3, 6.0, 9.0],
    })
    edges = path[path.alpha == 0.5].drop(columns="alpha")
    circ = Circuit(nodes, edges, path, {"path_alphas": [1.0, 0.5, 0.1]})
    s = edge_scores(circ)
    # entered first -> highest, despite the smallest coefficient
    assert s[("embed", "L0.H0")] > s[("L0.H0", "out")] > s[("L0.H1", "out")] > 0
    m = edge_metrics(circ, [("embed", "L0.H0"), ("L0.H0", "out")])
    assert m["auroc"] == pytest.approx(1.0) and m["shd"] == 0 and m["precision"] == 1
    assert m["shd_selected"] == 0


def test_bad_inputs_are_clear_errors():
    cands = candidate_edges(SITES)
    with pytest.raises(ValueError, match="no edges"):
        edge_auroc({}, [], candidates=cands)
    with pytest.raises(ValueError, match="no edges"):
        edge_metrics({}, [], candidates=cands)
    with pytest.raises(ValueError, match="not candidate edges"):
        edge_metrics({("embed", "L3.MLP"): 1.0}, [("embed", "out")], candidates=cands)
    with pytest.raises(ValueError, match="not candidate edges"):
        edge_metrics({}, [("out", "embed")], candidates=cands)
    nodes = pd.DataFrame({"node": SITES, "site": SITES, "kind": "site"})
    circ = Circuit(nodes, pd.DataFrame({"source": ["embed"], "target": ["out"], "weight": [1.0]}))
    with pytest.raises(ValueError, match="mismatched site sets"):
        edge_metrics(circ, [("embed", "L1.MLP")])
    with pytest.raises(ValueError, match="mismatched site sets"):
        edge_metrics(circ, [("embed", "out")], sites=["embed", "L0.MLP", "out"])
    with pytest.raises(ValueError, match="NaN"):
        edge_metrics({("embed", "out"): math.nan}, [("embed", "out")], candidates=cands)
