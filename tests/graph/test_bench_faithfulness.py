"""The faithfulness bench (circuitkit.bench.faithfulness) on the toy LM at tiny sizes.

* every record has the issue's keys, finite CPR / CMD in a sane range, and the full circuit (fraction 1)
  has faithfulness 1 and completeness 0 exactly;
* the held-out prompts differ from the fit prompts, and every corrupted prompt has its clean prompt's length
  and none of its names (IOI) / the other subject number (SVA);
* CircuitLasso's prediction node ``y`` becomes the ``out`` site (edges and path); its component circuit
  scores edges by influence on ``y`` and has edges into ``out``;
* the feature level ranks every SAE latent (CircuitLasso and SFC) and its curve ends at f = 1, c = 0;
* bad --model / --task name the valid choices (library and command line).
"""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from circuitkit.bench import faithfulness as bench
from circuitkit.circuit import Circuit
from circuitkit.models.toylm import load_toy_lm

KEYS = {"model", "task", "level", "method", "cpr", "cmd", "faithfulness_10pct", "completeness_10pct", "seconds",
        "faithfulness_5pct", "faithfulness_20pct", "completeness_5pct", "completeness_20pct"}


@pytest.fixture(scope="module")
def records():
    return bench.run_benchmark(model="toylm", task="ioi", n_fit=8, n_eval=6, methods=("eap", "eap-ig"),
                               ig_steps=2, fractions=(0.05, 0.1, 0.2, 1.0), keep_curves=True)


def test_records_have_the_keys_and_sane_scores(records):
    assert [r["method"] for r in records] == ["eap", "eap-ig"]
    for r in records:
        assert KEYS <= set(r)
        assert r["model"] == "toylm" and r["task"] == "ioi" and r["level"] == "component"
        assert math.isfinite(r["cpr"]) and -1.0 <= r["cpr"] <= 2.0
        assert math.isfinite(r["cmd"]) and 0.0 <= r["cmd"] <= 3.0
        assert r["seconds"] > 0 and r["n_fit"] == 8 and r["n_eval"] == 6
        curve = r["curve"]
        full = curve[curve["fraction"] == 1.0].iloc[0]
        assert full["n_edges"] == r["n_candidates"]
        assert full["faithfulness"] == 1.0 and full["completeness"] == 0.0
        # the model solves the task, so the logit difference of the full model is positive and beats the empty one
        assert r["m_full"] > 0 and r["m_full"] > r["m_empty"]
    json.dumps([{k: v for k, v in r.items() if k not in ("curve", "circuit")} for r in records])
    table = bench.format_table(records)
    assert table.count("\n") == len(records) + 1 and "eap-ig" in table


@pytest.mark.parametrize("task", ["ioi", "sva"])
def test_held_out_prompts_differ_and_corruptions_match(task):
    _, tok = load_toy_lm()
    fit = bench.make_task_data("toylm", tok, task, 12, seed=0, split="fit")
    held = bench.make_task_data("toylm", tok, task, 12, seed=0, split="eval", exclude=set(fit.frame["prompt"]))
    assert fit.n == held.n == 12
    assert not set(fit.frame["prompt"]) & set(held.frame["prompt"])
    for d in (fit, held):
        assert sum(b.shape[0] for b in d.clean) == d.n
        for c, k, a in zip(d.clean, d.corrupt, d.answer):
            assert c.shape == k.shape and a.shape == (c.shape[0],)
            assert bool((c[:, 0] == tok.bos_token_id).all())
            assert bool((c != k).any(dim=1).all())  # every twin differs from its prompt
    f = fit.frame
    assert (f["prompt"] != f["corrupt"]).all()
    if task == "ioi":
        raw = bench._raw("toylm", tok, task, 12, seed=0, split="train")[0].set_index("prompt")
        for _, r in f.iterrows():
            words = r["corrupt"].split()
            assert raw.loc[r["prompt"], "io"] not in words and raw.loc[r["prompt"], "s"] not in words


def test_subset_spans_length_batches():
    _, tok = load_toy_lm()
    d = bench.make_task_data("toylm", tok, "sva", 12, seed=0, split="fit")
    k = d.clean[0].shape[0] + 1  # one more prompt than the first length batch holds
    sub = bench._subset(d, k)
    assert sum(b.shape[0] for b in sub.clean) == k == sum(b.shape[0] for b in sub.answer)
    assert all(c.shape == x.shape for c, x in zip(sub.clean, sub.corrupt))


def test_y_node_becomes_out():
    nodes = ["embed", "L0.H0", "y"]
    circ = Circuit.from_edges([("embed", "L0.H0", 1.0), ("L0.H0", "y", 2.0)], nodes=nodes)
    path = pd.DataFrame({"alpha": [1.0, 0.5], "source": ["L0.H0", "embed"], "target": ["y", "L0.H0"],
                         "weight": [2.0, 1.0], "score": [2.0, 1.0]})
    out = bench._y_as_out(Circuit(circ.nodes, circ.edges, path, {}))
    assert set(out.nodes["node"]) == {"embed", "L0.H0", "out"}
    assert set(zip(out.edges["source"], out.edges["target"])) == {("embed", "L0.H0"), ("L0.H0", "out")}
    assert ("L0.H0", "out") in set(zip(out.path["source"], out.path["target"]))


def test_circuitlasso_component_circuit_reaches_out():
    model, tok = load_toy_lm()
    fit = bench.make_task_data("toylm", tok, "ioi", 16, seed=0, split="fit")
    circ = bench.fit_circuitlasso(model, fit, sites=bench._sites(model, fit))
    e = circ.edges
    assert "y" not in set(e["target"]) and (e["target"] == "out").any()
    assert e["score"].is_monotonic_decreasing and (e["score"] > 0).all()
    assert circ.meta["edge_score"].startswith("influence on y")


def test_feature_level_records():
    recs = bench.run_benchmark(model="toylm", task="sva", n_fit=12, n_eval=8, level="feature",
                               fractions=(0.01, 0.1, 1.0), keep_curves=True)
    assert [(r["level"], r["method"]) for r in recs] == [("feature", "circuitlasso"), ("feature", "sfc")]
    for r in recs:
        assert KEYS <= set(r) and math.isfinite(r["cpr"]) and r["seconds"] > 0
        assert sorted(r["ranking"]) == sorted(set(r["ranking"])) and len(r["ranking"]) == r["n_candidates"]
        last = r["curve"].iloc[-1]
        assert last["faithfulness"] == 1.0 and last["completeness"] == 0.0
        assert r["n_features"][0] == round(0.01 * r["n_candidates"])
    json.dumps([{k: v for k, v in r.items() if k not in ("curve", "ranking")} for r in recs])
    with pytest.raises(ValueError, match=r"unknown feature-level method 'eap'.*'circuitlasso', 'sfc'"):
        bench.run_benchmark(model="toylm", level="feature", feature_methods=("eap",))
    with pytest.raises(ValueError, match=r"unknown level 'edge'.*'component', 'feature', 'all'"):
        bench.run_benchmark(model="toylm", level="edge")


def test_bad_model_and_task_name_the_choices(capsys):
    with pytest.raises(ValueError, match=r"unknown model 'gpt5'.*'auto', 'smollm2-135m', 'toylm'"):
        bench.run_benchmark(model="gpt5")
    with pytest.raises(ValueError, match=r"unknown task 'copy'.*'ioi', 'sva', 'all'"):
        bench.run_benchmark(model="toylm", task="copy")
    with pytest.raises(ValueError, match=r"unknown method 'sfc'.*'circuitlasso', 'eap', 'eap-ig'"):
        bench.run_benchmark(model="toylm", methods=("sfc",))
    from circuitkit.cli import main

    for flag, bad, valid in (("--model", "gpt5", "smollm2-135m"), ("--task", "copy", "sva")):
        with pytest.raises(SystemExit):
            main(["bench", "faithfulness", flag, bad])
        err = capsys.readouterr().err
        assert bad in err and valid in err
