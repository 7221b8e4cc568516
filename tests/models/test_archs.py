"""Architecture adapters on random-weight configs of every supported HF family.

What must hold for each family (GPT-2, GPT-NeoX parallel and sequential, Llama with grouped-query attention,
Mistral, Qwen2, Qwen3, Gemma, Gemma-2, Gemma-3 text), captured through ``circuitkit.capture``:

* residuals equal HF's hidden states (the last one after the final norm);
* per-head outputs sum to the attention block's output, and each head is exactly what zeroing its ``z``
  slice removes from the output projection (Gemma-2/3: the frozen-norm variant, checked both ways);
* ``resid_post - resid_pre == attn + MLP``;
* ``out`` is the LM head's output (Gemma-2: before the final logit soft-capping).
"""

from __future__ import annotations

import typing

import numpy as np
import pytest
import torch
import transformers as tf

import circuitkit as ck
import circuitkit.models.archs
from circuitkit.models.adapters import _get, get_adapter

VOCAB = 40
BASE = {"vocab_size": VOCAB, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 48, "max_position_embeddings": 64, "initializer_range": 0.2}


def _configs():
    return {
        "gpt2": tf.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64, initializer_range=0.2,
                              bos_token_id=0, eos_token_id=0),
        "gpt_neox-parallel": tf.GPTNeoXConfig(**BASE, rotary_pct=0.5, use_parallel_residual=True),
        "gpt_neox-sequential": tf.GPTNeoXConfig(**BASE, use_parallel_residual=False),
        "llama-gqa": tf.LlamaConfig(**BASE, num_key_value_heads=2),
        "mistral": tf.MistralConfig(**BASE, num_key_value_heads=2),
        "qwen2": tf.Qwen2Config(**BASE, num_key_value_heads=1),
        "qwen3": tf.Qwen3Config(**BASE, num_key_value_heads=2, head_dim=12),
        "gemma": tf.GemmaConfig(**BASE, num_key_value_heads=1, head_dim=8),
        "gemma2": tf.Gemma2Config(**BASE, num_key_value_heads=2, head_dim=12, final_logit_softcapping=5.0),
        "gemma3_text": tf.Gemma3TextConfig(**BASE, num_key_value_heads=2, head_dim=12),
    }


EXPECTED_ARCH = {"gpt2": "gpt2", "gpt_neox-parallel": "gpt_neox", "gpt_neox-sequential": "gpt_neox",
                 "llama-gqa": "llama", "mistral": "llama", "qwen2": "llama", "qwen3": "llama", "gemma": "gemma",
                 "gemma2": "gemma2", "gemma3_text": "gemma2"}
POST_NORM = {"gemma2", "gemma3_text"}


def _model(name: str):
    torch.manual_seed(0)
    model = tf.AutoModelForCausalLM.from_config(_configs()[name]).eval()
    with torch.no_grad():  # non-trivial norm gains and biases, so a wrong hook point cannot pass by accident
        for pname, p in model.named_parameters():
            if "norm" in pname and p.ndim == 1:
                p.add_(0.3 * torch.randn_like(p))
            elif pname.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


def _final_norm(model):
    for path in ("model.norm", "gpt_neox.final_layer_norm", "transformer.ln_f"):
        try:
            return _get(model, path)
        except AttributeError:
            continue
    raise AssertionError("no final norm found")


def _close(a, b, rel=1e-5):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(np.abs(b).max(), 1e-6)
    np.testing.assert_allclose(a, b, rtol=0, atol=rel * scale)


@pytest.fixture(scope="module")
def captured():
    """Every family captured once on the same token ids (all sites, all positions)."""
    ids = torch.randint(1, VOCAB, (3, 7), generator=torch.Generator().manual_seed(1))
    out = {}
    for name in _configs():
        model = _model(name)
        with torch.no_grad():
            hf = model(ids, output_hidden_states=True)
        lm = ck.load_model(model)
        acts = ck.capture(lm, ids, sites=lm.sites, progress=False, positions="all")
        out[name] = (model, lm, acts, hf, ids)
    return out


@pytest.mark.parametrize("name", list(_configs()))
def test_residuals_equal_hf_hidden_states(captured, name):
    model, lm, acts, hf, _ = captured[name]
    assert lm.adapter.spec.name == EXPECTED_ARCH[name]
    hs = [h.reshape(-1, h.shape[-1]).numpy() for h in hf.hidden_states]
    n = lm.n_layers
    assert len(hs) == n + 1
    np.testing.assert_array_equal(acts["embed"], hs[0])
    for layer in range(n):
        np.testing.assert_array_equal(acts[f"L{layer}.resid_pre"], hs[layer])
        if layer < n - 1:
            np.testing.assert_array_equal(acts[f"L{layer}.resid_post"], hs[layer + 1])
    # HF's last hidden state has the final norm applied; circuitkit's last resid_post does not
    last = torch.as_tensor(acts[f"L{n - 1}.resid_post"])
    with torch.no_grad():
        _close(_final_norm(model)(last).numpy(), hs[n])
    assert np.abs(acts[f"L{n - 1}.resid_post"] - hs[n]).max() > 1e-3


@pytest.mark.parametrize("name", list(_configs()))
def test_heads_sum_to_attention_and_update_is_attn_plus_mlp(captured, name):
    _, lm, acts, _, _ = captured[name]
    for layer in range(lm.n_layers):
        heads = sum(acts[f"L{layer}.H{h}"].astype(np.float64) for h in range(lm.n_heads))
        _close(heads, acts[f"L{layer}.attn"])
        update = acts[f"L{layer}.resid_post"].astype(np.float64) - acts[f"L{layer}.resid_pre"]
        _close(acts[f"L{layer}.attn"].astype(np.float64) + acts[f"L{layer}.MLP"], update)
        # heads are distinct components, not copies of the block output
        assert np.abs(acts[f"L{layer}.H0"] - acts[f"L{layer}.H1"]).max() > 1e-4


@pytest.mark.parametrize("name", list(_configs()))
def test_out_is_lm_head_output(captured, name):
    model, _, acts, hf, _ = captured[name]
    logits = hf.logits.reshape(-1, VOCAB).numpy()
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:  # Gemma-2: `out` is before the soft-capping, which is tanh(out / cap) * cap
        _close(np.tanh(acts["out"] / cap) * cap, logits)
        assert np.abs(acts["out"] - logits).max() > 1e-3
    else:
        _close(acts["out"], logits)


def _o_proj_io(model, lm, ids, layer, drop_head=None):
    """Input and output of the attention output projection, optionally with one head's z slice zeroed."""
    proj = _get(lm.adapter.layer_module(layer), lm.adapter.spec.o_proj)
    seen = {}

    def pre(mod, args):
        z = args[0]
        if drop_head is not None:
            z = z.clone()
            dh = z.shape[-1] // lm.n_heads
            z[..., drop_head * dh:(drop_head + 1) * dh] = 0
        seen["z"] = z
        return (z,)

    def post(mod, args, out):
        seen["out"] = out

    h1, h2 = proj.register_forward_pre_hook(pre), proj.register_forward_hook(post)
    try:
        with torch.no_grad():
            model(ids)
    finally:
        h1.remove()
        h2.remove()
    o = seen["out"]
    return seen["z"], o.reshape(-1, o.shape[-1]).double().numpy()


@pytest.mark.parametrize("name", ["gpt_neox-parallel", "llama-gqa", "qwen3", "gemma2"])
def test_each_head_is_what_ablating_its_z_removes(captured, name):
    """An intervention check, independent of the adapter's formula: zeroing head h's slice of the output
    projection's input changes the projection output by exactly head h's (pre-norm) contribution."""
    model, lm, acts, _, ids = captured[name]
    layer = 1
    _, full = _o_proj_io(model, lm, ids, layer)
    bias = getattr(_get(lm.adapter.layer_module(layer), lm.adapter.spec.o_proj), "bias", None)
    b = bias.detach().double().numpy() / lm.n_heads if bias is not None else 0.0
    if name in POST_NORM:
        # documented variant: heads are frozen-norm scaled; undo the common per-token factor g / rms(s)
        norm = _get(lm.adapter.layer_module(layer), "post_attention_layernorm")
        gain = (1.0 + norm.weight.detach().double()).numpy()
        rms = np.sqrt((full**2).mean(-1, keepdims=True) + norm.eps)
        pre = {h: acts[f"L{layer}.H{h}"].astype(np.float64) * rms / gain for h in range(lm.n_heads)}
        _close(sum(pre.values()), full)  # pre-norm heads sum to the o_proj output
    else:
        pre = {h: acts[f"L{layer}.H{h}"].astype(np.float64) for h in range(lm.n_heads)}
    for h in range(lm.n_heads):
        _, dropped = _o_proj_io(model, lm, ids, layer, drop_head=h)
        _close(full - dropped, pre[h] - b)


def test_gqa_config_really_groups_queries(captured):
    model, lm, _, _, _ = captured["llama-gqa"]
    cfg = model.config
    assert cfg.num_key_value_heads < cfg.num_attention_heads == lm.n_heads
    k_out = model.model.layers[0].self_attn.k_proj.out_features
    o_in = model.model.layers[0].self_attn.o_proj.in_features
    assert o_in == lm.n_heads * (o_in // lm.n_heads) and k_out < o_in


def test_positions_and_aggregation_on_new_family(captured):
    _, lm, acts, hf, ids = captured["llama-gqa"]
    last = ck.capture(lm, ids, sites=["L1.resid_pre"], positions="last", progress=False)
    np.testing.assert_array_equal(last["L1.resid_pre"], hf.hidden_states[1][:, -1].numpy())
    mean = ck.capture(lm, ids, sites=["L1.MLP"], positions="all", aggregate="mean", progress=False)
    _close(mean["L1.MLP"], acts["L1.MLP"].reshape(3, 7, -1).mean(1))


def test_unknown_architecture_names_supported_ones_and_how_to_add():
    cfg = tf.BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=16)
    model = tf.BertModel(cfg)
    with pytest.raises(ValueError) as e:
        get_adapter(model)
    msg = str(e.value)
    assert "bert" in msg and "register_arch" in msg
    for arch in ("gpt2", "gpt_neox", "llama", "gemma2"):
        assert arch in msg


# -- remote / dtype / device_map: argument plumbing only --------------------------------------------------------


class _FakeTransformersModel:
    calls: typing.ClassVar[list] = []

    def __init__(self, path, **kwargs):
        torch.manual_seed(0)
        self._module = tf.AutoModelForCausalLM.from_config(_configs()["llama-gqa"])
        self.tokenizer = None
        self.traces: list = []
        type(self).calls.append((path, kwargs))

    def trace(self, *args, **kwargs):
        self.traces.append((args, kwargs))
        raise _StopTrace


class _StopTrace(Exception):
    pass


def test_load_model_plumbs_dtype_device_map_and_remote(monkeypatch):
    import nnsight.modeling.transformers as nt

    from circuitkit.runtime import loading

    _FakeTransformersModel.calls = []
    monkeypatch.setattr(nt, "TransformersModel", _FakeTransformersModel)
    monkeypatch.setattr(loading, "hub_available", lambda **kw: True)  # pretend to be online
    lm = ck.load_model("meta-llama/Llama-3.1-8B", dtype="bfloat16", device_map="auto", remote=True)
    path, kwargs = _FakeTransformersModel.calls[-1]
    assert path == "meta-llama/Llama-3.1-8B"
    assert kwargs["dtype"] is torch.bfloat16 and kwargs["device_map"] == "auto"
    assert kwargs["dispatch"] is False  # remote: weights stay on NDIF
    assert lm.remote and lm.adapter.spec.name == "llama"
    with pytest.raises(_StopTrace):
        ck.capture(lm, [[1, 2, 3]], sites=["L0.resid_pre"], batch_size=4, progress=False, positions="all")
    _, trace_kwargs = lm.envoy.traces[-1]
    assert trace_kwargs.get("remote") is True

    local = ck.load_model("EleutherAI/pythia-70m", dtype=torch.float16)
    _, kwargs = _FakeTransformersModel.calls[-1]
    assert kwargs["dispatch"] is True and kwargs["dtype"] is torch.float16 and "device_map" not in kwargs
    with pytest.raises(_StopTrace):
        ck.capture(local, [[1, 2, 3]], sites=["L0.resid_pre"], progress=False, positions="all")
    assert "remote" not in local.envoy.traces[-1][1]
    with pytest.raises(ValueError, match="unknown dtype"):
        ck.load_model("gpt2", dtype="bfloat17")
