"""The Tracr ground-truth suite: torch port == Tracr, per-head outputs, nnsight, ground-truth edges."""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pytest
import torch

from circuitkit.models.tracr import (
    derive_edges,
    list_tracr_tasks,
    load_tracr_task,
    outputs_match,
)
from circuitkit.runtime.split import run_components


def component_outputs(model, ids, ablate=None):
    """The runtime's split forward, in the old component_outputs signature."""
    return run_components(model, ids, patch=ablate).outputs

TASKS = list_tracr_tasks()
ATOL = 1e-4


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="module")
def tasks():
    return {name: load_tracr_task(name) for name in TASKS}


def test_suite_present():
    assert len(TASKS) >= 12, TASKS


@pytest.mark.parametrize("name", TASKS)
def test_reproduces_stored_tracr_outputs(tasks, name):
    task = tasks[name]
    categorical = task.output_kind == "categorical"
    samples = task.meta["samples"]
    assert len(samples) >= 40
    got = task.run([s["input"] for s in samples])
    for s, g in zip(samples, got):
        assert outputs_match(s["output"], g, categorical=categorical, atol=ATOL), (s["input"], s["output"], g)
        if categorical:
            assert s["output"] == g
    raw = [s for s in samples if "residual" in s]
    assert raw
    for s in raw:
        ids = task.encode([s["input"]])
        with torch.no_grad():
            resid = task.model.residual(ids)[0].numpy()
            logits = task.model(ids)[0].numpy()
        np.testing.assert_allclose(resid, np.asarray(s["residual"]), atol=ATOL, rtol=1e-5)
        np.testing.assert_allclose(logits, np.asarray(s["logits"]), atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("name", TASKS)
def test_decoding_is_robust(tasks, name):
    """Categorical outputs have a clear argmax on every real position (no undefined RASP values)."""
    task = tasks[name]
    if task.output_kind != "categorical":
        pytest.skip("numerical output")
    assert task.meta["min_margin"] > 0.5
    for ids in _batches(task, n=8):
        with torch.no_grad():
            top = task.model(ids)[:, 1:].topk(2, dim=-1).values
        assert (top[..., 0] - top[..., 1]).min() > 0.5


@pytest.mark.parametrize("name", TASKS)
def test_meta_consistent(tasks, name):
    task = tasks[name]
    meta = task.meta
    assert meta["format"] == "circuitkit.tracr" and meta["version"] == 1
    assert meta["d_model"] == len(meta["residual_labels"]) == task.model.d_model
    sites, edges = derive_edges(task.weights, n_layers=meta["n_layers"], n_heads=meta["n_heads"])
    assert sites == task.sites and edges == task.true_edges
    assert sites[0] == "embed" and sites[-1] == "out"
    assert all(u in sites and v in sites for u, v in edges)
    # every site but embed has an input edge and every site but out feeds something (Tracr graphs are connected)
    assert {v for _, v in edges} == set(sites) - {"embed"}
    assert {u for u, _ in edges} == set(sites) - {"out"}
    # the weight-derived edges contain the edges of Tracr's own RASP/craft graph, plus only embed -> * edges
    craft = {tuple(e) for e in meta["craft_edges"]}
    assert craft <= set(edges)
    assert all(u == "embed" for u, _ in set(edges) - craft)


@pytest.mark.parametrize("name", TASKS)
def test_head_out_sums_to_attention(tasks, name):
    task = tasks[name]
    ids = task.encode(task.sample_inputs(8, seed=0, length=task.max_seq_len))
    x = task.model.embed(ids)
    for block in task.model.layers:
        captured = {}
        handle = block.attn.head_out.register_forward_hook(lambda m, i, o, c=captured: c.__setitem__("o", o))
        with torch.no_grad():
            out = block.attn(x)
        handle.remove()
        per = captured["o"]
        assert per.shape == (*ids.shape, block.attn.n_heads, task.model.d_model)
        torch.testing.assert_close(per.sum(dim=2) + block.attn.b_O, out)
        with torch.no_grad():
            x = block(x)


def test_nnsight_trace(tasks):
    from nnsight import NNsight

    task = tasks["sort"]
    ids = task.encode(task.sample_inputs(4, seed=0, length=4))
    nm = NNsight(task.model)
    saved = []
    with torch.no_grad(), nm.trace(ids):
        emb = nm.embed.output.save()
        for l in range(task.model.n_layers):
            saved.append((nm.layers[l].attn.head_out.output.save(), nm.layers[l].mlp.output.save()))
        out = nm.unembed.output.save()
    with torch.no_grad():
        ref = component_outputs(task.model, ids)
    torch.testing.assert_close(emb, ref["embed"])
    for l, (heads, mlp) in enumerate(saved):
        assert heads.shape == (*ids.shape, task.model.n_heads, task.model.d_model)
        torch.testing.assert_close(heads[:, :, 0], ref[f"L{l}.H0"])
        torch.testing.assert_close(mlp, ref[f"L{l}.MLP"])
    torch.testing.assert_close(out, task.model(ids))


def _batches(task, n=12):
    return [task.encode(task.sample_inputs(n, seed=7, length=L)) for L in range(1, task.max_seq_len + 1)]


@pytest.mark.parametrize("name", TASKS)
def test_true_edges_matter_and_non_edges_do_not(tasks, name):
    """Zero-ablate the source's contribution *in the target's input only* (component_outputs).

    Every true edge must change the model output on some sampled input; every other ordered pair
    (u earlier than v) must leave the output unchanged (v reads none of the dims u writes).
    """
    task = tasks[name]
    sites = task.sites
    true = set(task.true_edges)
    rank = {s: i for i, s in enumerate(sites)}
    pairs = [
        (u, v)
        for u in sites
        for v in sites
        if rank[u] < rank[v]
        and u != "out"
        and v != "embed"
        and not (u.split(".")[0] == v.split(".")[0] and u.split(".")[1][0] == v.split(".")[1][0] == "H")
    ]
    effect = {p: 0.0 for p in pairs}
    with torch.no_grad():
        for ids in _batches(task):
            base = component_outputs(task.model, ids)["out"]
            for u, v in pairs:
                o = component_outputs(task.model, ids, {v: {u: None}})["out"]
                effect[(u, v)] = max(effect[(u, v)], (o - base).abs().max().item())
    dead = [e for e in true if effect[e] < 1e-3]
    assert not dead, f"true edges without effect: {dead}"
    leaky = [p for p in pairs if p not in true and effect[p] > 1e-4]
    assert not leaky, f"non-edges with effect: {[(p, effect[p]) for p in leaky]}"


def test_component_outputs_match_forward(tasks):
    for task in tasks.values():
        ids = task.encode(task.sample_inputs(6, seed=3, length=task.max_seq_len))
        with torch.no_grad():
            outs = component_outputs(task.model, ids)
            total = sum(outs[s] for s in outs if s != "out")
            torch.testing.assert_close(outs["out"], task.model(ids))
            torch.testing.assert_close(total, task.model.residual(ids), atol=1e-4, rtol=1e-5)


def test_unknown_task_raises():
    with pytest.raises(ValueError) as err:
        load_tracr_task("no_such_task")
    msg = str(err.value)
    assert "no_such_task" in msg
    for name in TASKS:
        assert name in msg


def test_encode_decode_sampling(tasks):
    task = tasks["reverse"]
    assert task.run([["a", "b", "c"]]) == [["BOS", "c", "b", "a"]]
    ids = task.encode([["a", "b"], ["c", "c"]])
    assert ids.dtype == torch.long and ids.shape == (2, 3)
    assert (ids[:, 0] == task.input_encoding["BOS"]).all()
    with pytest.raises(ValueError, match="lengths"):
        task.encode([["a"], ["a", "b"]])
    with pytest.raises(ValueError, match="vocab"):
        task.encode([["zz"]])
    with pytest.raises(ValueError, match="max_seq_len"):
        task.encode([["a"] * (task.max_seq_len + 1)])
    assert task.sample_inputs(5, seed=1) == task.sample_inputs(5, seed=1)
    assert all(len(x) == 3 for x in task.sample_inputs(5, seed=1, length=3))
    su = tasks["sort_unique"].sample_inputs(50, seed=0)
    assert all(len(set(x)) == len(x) for x in su)


def test_load_from_path_and_float64(tasks, tmp_path):
    from circuitkit.models.tracr import data_dir

    task = load_tracr_task(str(data_dir() / "sort"), dtype=torch.float64)
    assert task.model.embed.token_embed.dtype == torch.float64
    s = task.meta["samples"]
    assert task.run([x["input"] for x in s]) == [x["output"] for x in s]


def test_data_env_override(tmp_path, monkeypatch):
    monkeypatch.setenv("CIRCUITKIT_DATA", str(tmp_path))
    assert list_tracr_tasks() == []
    with pytest.raises(ValueError, match="reverse"):
        load_tracr_task("reverse")


def test_assets_small():
    from circuitkit.models.tracr import data_dir

    size = sum(p.stat().st_size for p in data_dir().rglob("*") if p.is_file())
    assert size < 5e6, size
    for name in TASKS:
        meta = json.loads((data_dir() / name / "meta.json").read_text())
        assert meta["task"] == name


def test_no_tracr_import_at_runtime():
    import subprocess
    import sys

    code = (
        "import sys; from circuitkit.models.tracr import load_tracr_task; t = load_tracr_task('hist'); "
        "t.run([['a', 'b']]); bad = [m for m in ('tracr', 'jax', 'haiku') if m in sys.modules]; "
        "assert not bad, bad"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


@pytest.mark.skipif(importlib.util.find_spec("tracr") is None, reason="tracr (dev extra) not installed")
def test_live_compile_and_export(tmp_path):
    """Compile a small RASP program with Tracr now, export it, and compare on random inputs."""
    from tracr.compiler import compiling
    from tracr.rasp import rasp

    from circuitkit.models.tracr import save_tracr_model

    prog = rasp.numerical(
        rasp.Aggregate(
            rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.LEQ),
            rasp.numerical(rasp.Map(lambda t: 1 if t == "b" else 0, rasp.tokens)),
            default=0,
        )
    ).named("frac_b")
    compiled = compiling.compile_rasp_to_model(
        prog, vocab={"a", "b"}, max_seq_len=4, compiler_bos="BOS", compiler_pad="PAD"
    )
    path = save_tracr_model(compiled, tmp_path / "frac_b", task="frac_b", n_samples=10, n_check=10)
    task = load_tracr_task(path)
    assert task.output_kind == "numerical" and task.sites[0] == "embed"
    rng = np.random.default_rng(0)
    for _ in range(10):
        x = list(rng.choice(["a", "b"], size=int(rng.integers(1, 5))))
        ref = compiled.apply(["BOS", *x]).decoded
        assert outputs_match(ref, task.run([x])[0], categorical=False, atol=ATOL)
