"""The embedded toy LM and its SAEs: offline loading, task accuracy on fresh samples, SAE quality.

Thresholds are the held-out accuracies in ``data/toylm/metrics.json`` minus a margin (they are measured
on a different seed there), floored at sensible minimums; they are stated in ``THRESHOLDS`` so a
regression shows which task broke.
"""

from __future__ import annotations

import json

import pytest
import torch

import circuitkit as ck
from circuitkit.datasets import bios, induction, ioi, mixture, professions, sva
from circuitkit.models import toylm
from circuitkit.models.toylm import (
    SAE_HOOKS,
    TOYLM_DIR,
    evaluate_task,
    list_toy_saes,
    load_toy_lm,
    load_toy_saes,
    toy_sae_dir,
)

pytestmark = pytest.mark.skipif(
    not (TOYLM_DIR / "config.json").is_file(), reason="data/toylm not built (run scripts/build_toylm.py)"
)

TEST_SEED = 4242  # differs from the training data (0) and the build-time evaluation (10000)
N = 200
# minimum logit-diff accuracy (answer beats distractor) per task on fresh samples
# (build-time measurement on 1000 samples in the comment; margin covers n=200 sampling noise)
THRESHOLDS = {
    "ioi": 0.90,  # 0.996
    "sva": 0.90,  # 1.000
    "bios_profession": 0.90,  # 1.000
    "bios_pronoun": 0.90,  # 1.000
    "induction": 0.55,  # 0.682 -- only partly learned, see data/toylm/README.md
}
# Tasks the shipped model does not solve (xfail, non-strict). Empty for the shipped build; add a task
# here with a reason if a rebuild regresses it, and remove it once metrics.json meets the threshold.
KNOWN_FAILURES: dict[str, str] = {}
SAE_MAX_FVU = 0.08  # measured held-out FVU <= 0.025 (data/saes/toylm/metrics.json)


@pytest.fixture(scope="module")
def lm():
    return load_toy_lm()


def _suite(name):
    return {
        "ioi": lambda: ioi(N, seed=TEST_SEED),
        "sva": lambda: sva(N, seed=TEST_SEED),
        "induction": lambda: induction(N, seed=TEST_SEED),
        "bios_profession": lambda: bios(N, seed=TEST_SEED, professions=professions(), form="profession"),
        "bios_pronoun": lambda: bios(N, seed=TEST_SEED, professions=professions(), form="pronoun"),
    }[name]()


def test_loads_offline(lm, monkeypatch):
    model, tok = lm
    assert not model.training
    assert model.config.n_layer == 4 and model.config.n_embd == 128 and model.config.n_positions == 64
    assert len(tok) == model.config.vocab_size
    assert tok.bos_token == "<bos>" and tok.pad_token == "<pad>" and tok.unk_token == "<unk>"
    ids = tok("when mary and john went to the store ,")["input_ids"]
    assert ids[0] == tok.bos_token_id and tok.unk_token_id not in ids
    assert tok("the key", add_special_tokens=False)["input_ids"][0] != tok.bos_token_id


def test_data_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv("CIRCUITKIT_DATA", str(tmp_path))
    assert toylm.TOYLM_DIR == tmp_path / "toylm"
    assert toy_sae_dir("blocks.1.hook_resid_post") == tmp_path / "saes" / "toylm" / "blocks.1.hook_resid_post"
    with pytest.raises(FileNotFoundError, match="build_toylm"):
        load_toy_lm()


def test_bad_hook_name():
    with pytest.raises(ValueError, match=r"blocks\.9.*blocks\.0\.hook_resid_pre"):
        toy_sae_dir("blocks.9.hook_resid_post")


@pytest.mark.parametrize(
    "task",
    [
        pytest.param(t, marks=pytest.mark.xfail(reason=KNOWN_FAILURES[t], strict=False)) if t in KNOWN_FAILURES else t
        for t in sorted(THRESHOLDS)
    ],
)
def test_task_accuracy(lm, task):
    model, tok = lm
    res = evaluate_task(model, tok, _suite(task))
    assert res["logit_diff_acc"] >= THRESHOLDS[task], res


def test_metrics_file_consistent():
    m = json.loads((TOYLM_DIR / "metrics.json").read_text())
    assert set(THRESHOLDS) <= set(m["accuracy"])
    for task, thr in THRESHOLDS.items():
        if task not in KNOWN_FAILURES:
            assert m["accuracy"][task]["logit_diff_acc"] >= thr


saes_built = pytest.mark.skipif(not list_toy_saes(), reason="toy SAEs not built (run scripts/build_saes.py)")


@saes_built
def test_saes_load_and_reconstruct(lm):
    from sae_lens import SAE

    model, tok = lm
    assert list_toy_saes() == list(SAE_HOOKS)
    saes = load_toy_saes()
    acts = _residuals(model, tok, mixture(120, seed=TEST_SEED)["text"].tolist())
    for hook, sae in saes.items():
        assert isinstance(sae, SAE)
        assert sae.cfg.d_in == model.config.n_embd
        assert sae.cfg.metadata.hook_name == hook
        assert sae.cfg.metadata.model_name == "circuitkit-toylm"
        x = acts[hook]
        with torch.no_grad():
            xh = sae.decode(sae.encode(x))
        fvu = float(((x - xh) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())
        assert fvu < SAE_MAX_FVU, (hook, fvu)
        l0 = float((sae.encode(x) > 0).sum(-1).float().mean())
        assert 1 <= l0 <= 64, (hook, l0)


def _residuals(model, tok, prompts, positions="after_bos"):
    """``{hook: [tokens, d]}`` at the toy SAE hooks, captured through the runtime."""
    from circuitkit.sae import hook_to_site

    acts = ck.capture(ck.load_model(model, tokenizer=tok), list(prompts), sites=[hook_to_site(h) for h in SAE_HOOKS],
                      positions=positions, progress=False)
    return {h: torch.from_numpy(acts[hook_to_site(h)]) for h in SAE_HOOKS}


def test_residual_capture_matches_hidden_states(lm):
    model, tok = lm
    prompts = ["the key to the cabinets", "when mary and john went to the store , john gave a drink to"]
    acts = _residuals(model, tok, prompts, positions="all")
    enc = tok(prompts[:1], return_tensors="pt")
    with torch.no_grad():
        hs = model(**enc, output_hidden_states=True).hidden_states
    n = enc["input_ids"].shape[1]
    torch.testing.assert_close(acts["blocks.0.hook_resid_pre"][:n], hs[0][0])
    torch.testing.assert_close(acts["blocks.1.hook_resid_post"][:n], hs[2][0])
    # hidden_states[-1] has ln_f applied; the hook output must not
    assert not torch.allclose(acts["blocks.3.hook_resid_post"][:n], hs[4][0])
    torch.testing.assert_close(model.transformer.ln_f(acts["blocks.3.hook_resid_post"][:n]), hs[4][0])


def test_canonical_examples(lm):
    model, tok = lm
    from circuitkit.models.toylm import next_token_logits

    prompts = {
        "when mary and john went to the store , john gave a drink to": "mary",
        "the key to the cabinets": "is",
        "the keys to the cabinet": "are",
        "mary smith is a lawyer in ohio . she argues cases in court . so mary works as a": "lawyer",
    }
    logits = next_token_logits(model, tok, list(prompts))
    got = tok.convert_ids_to_tokens(logits.argmax(-1).tolist())
    assert got == list(prompts.values())
