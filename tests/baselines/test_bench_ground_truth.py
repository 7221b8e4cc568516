"""Smoke test of `python -m circuitkit bench ground-truth` on 2 tasks with few prompts."""

import json
import math

import pytest

from circuitkit.bench import ground_truth as gt
from circuitkit.cli import main as cli_main

KEYS = {"task", "method", "auroc", "shd", "precision", "recall", "seconds"}


def test_bench_cli_two_tasks(tmp_path, capsys):
    out = tmp_path / "gt.json"
    rc = cli_main(["bench", "ground-truth", "--tasks", "hist", "frac_prevs", "--n-samples", "24", "--ig-steps", "2",
                   "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "means over tasks" in text and "relative to CircuitLasso" in text and "eap-ig" in text
    recs = json.loads(out.read_text())
    assert {(r["task"], r["method"]) for r in recs} == {
        (t, m) for t in ("hist", "frac_prevs") for m in ("circuitlasso", "eap", "eap-ig", "patching")}
    for r in recs:
        assert KEYS <= set(r)
        assert 0.0 <= r["auroc"] <= 1.0 and 0.0 <= r["precision"] <= 1.0 and r["seconds"] > 0
        # top-|true| rule: SHD = 2 (k - TP) and precision = recall = TP / k
        assert math.isclose(r["shd"], 2 * r["n_true"] * (1 - r["precision"]), abs_tol=1e-9)
        assert math.isclose(r["precision"], r["recall"])


def test_prompts_are_paired_by_length_and_deterministic():
    from circuitkit.models.tracr import load_tracr_task

    task = load_tracr_task("sort")
    c1, k1 = gt.make_prompts(task, 50, seed=3)
    c2, k2 = gt.make_prompts(task, 50, seed=3)
    assert sum(b.shape[0] for b in c1) == 50
    assert all(a.shape == b.shape for a, b in zip(c1, k1))
    assert all((a == b).all() for a, b in zip(c1 + k1, c2 + k2))
    assert any((a != b).any() for a, b in zip(c1, k1))  # corrupted prompts differ from the clean ones


def test_bench_bad_inputs(monkeypatch):
    with pytest.raises(ValueError, match="unknown tasks.*hist"):
        gt.run_benchmark(["no_such_task"])
    with pytest.raises(ValueError, match="unknown discovery method"):
        gt.run_benchmark(["hist"], methods=["circuitlasso", "acdc"])
    from circuitkit.models import tracr

    real = tracr.load_tracr_task

    def no_edges(name, **kw):
        task = real(name, **kw)
        task.true_edges = []
        return task

    monkeypatch.setattr(tracr, "load_tracr_task", no_edges)
    with pytest.raises(ValueError, match="no ground-truth edges"):
        gt.run_benchmark(["hist"], n_samples=8)


def test_holdout_split_is_disjoint_from_suite_and_loads():
    from circuitkit.models.tracr import list_tracr_tasks, load_tracr_task

    suite, holdout = list_tracr_tasks("suite"), list_tracr_tasks("holdout")
    assert len(holdout) >= 4 and len(suite) >= 17
    assert not set(suite) & set(holdout)
    for name in holdout:
        task = load_tracr_task(name)
        assert task.name == name and task.true_edges
        # the torch port reproduces Tracr's own decoded outputs stored at build time
        got = task.run([s["input"] for s in task.meta["samples"][:10]])
        assert got == [s["output"] for s in task.meta["samples"][:10]]
    with pytest.raises(ValueError, match="valid"):
        list_tracr_tasks("train")


def test_bench_holdout_records_have_split(tmp_path):
    out = tmp_path / "gt.json"
    rc = cli_main(["bench", "ground-truth", "--holdout", "--tasks", "count_b", "--methods", "circuitlasso", "eap",
                   "--n-samples", "24", "--json", str(out)])
    assert rc == 0
    recs = json.loads(out.read_text())
    assert {r["split"] for r in recs} == {"holdout"} and {r["task"] for r in recs} == {"count_b"}
    assert KEYS <= set(recs[0])
    with pytest.raises(ValueError, match="split 'holdout'"):
        gt.run_benchmark(["hist"], methods=["eap"], n_samples=8, split="holdout")
