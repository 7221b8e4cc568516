"""Capture equals a plain PyTorch forward pass on the structural stand-in for hub models (random GPT-2)."""

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

import circuitkit as ck
from circuitkit.activations import Activations
from circuitkit.sites import all_sites


@pytest.fixture(scope="module")
def gpt2():
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_head=4, n_embd=32, vocab_size=64, n_positions=32, bos_token_id=0,
                     eos_token_id=0)
    return GPT2LMHeadModel(cfg).eval()


@pytest.fixture(scope="module")
def ids():
    g = torch.Generator().manual_seed(1)
    return torch.randint(1, 64, (5, 9), generator=g)


def test_residual_stream_equals_hf_hidden_states(gpt2, ids):
    acts = ck.capture(gpt2, ids, sites=all_sites(2, 4), batch_size=2, progress=False, positions="all")
    with torch.no_grad():
        out = gpt2(ids, output_hidden_states=True)
    for layer in range(2):  # hidden_states[l] is the input of block l (the last one has ln_f applied)
        np.testing.assert_allclose(acts[f"L{layer}.resid_pre"], out.hidden_states[layer].reshape(-1, 32), atol=1e-6)
    np.testing.assert_allclose(acts["embed"], out.hidden_states[0].reshape(-1, 32), atol=1e-6)
    np.testing.assert_allclose(acts["L0.resid_post"], acts["L1.resid_pre"], atol=1e-6)
    np.testing.assert_allclose(acts["out"], out.logits.reshape(-1, 64), atol=1e-5)


def test_heads_sum_to_attention_and_components_sum_to_update(gpt2, ids):
    acts = ck.capture(gpt2, ids, sites=all_sites(2, 4), progress=False, positions="all")
    for layer in range(2):
        heads = sum(acts[f"L{layer}.H{h}"] for h in range(4))
        np.testing.assert_allclose(heads, acts[f"L{layer}.attn"], atol=1e-5)
        update = acts[f"L{layer}.resid_post"] - acts[f"L{layer}.resid_pre"]
        np.testing.assert_allclose(acts[f"L{layer}.attn"] + acts[f"L{layer}.MLP"], update, atol=1e-5)
        # heads are genuinely different contributions, not copies
        assert np.abs(acts[f"L{layer}.H0"] - acts[f"L{layer}.H1"]).max() > 1e-3


def test_head_output_is_z_times_its_slice_of_w_o(gpt2, ids):
    acts = ck.capture(gpt2, ids[:1], sites=["L1.H2"], progress=False, positions="all")
    captured = {}
    h = gpt2.transformer.h[1].attn.c_proj.register_forward_hook(lambda m, i, o: captured.setdefault("z", i[0]))
    with torch.no_grad():
        gpt2(ids[:1])
    h.remove()
    z = captured["z"][0]  # [pos, 32]
    w = gpt2.transformer.h[1].attn.c_proj.weight  # Conv1D [in, out]
    b = gpt2.transformer.h[1].attn.c_proj.bias
    ref = z[:, 16:24] @ w[16:24] + b / 4
    np.testing.assert_allclose(acts["L1.H2"], ref.detach().numpy(), atol=1e-6)


def test_positions_and_aggregation_keep_the_row_map(gpt2):
    prompts = [[3, 4, 5], [6, 7, 8, 9, 10], [11, 12]]
    last = ck.capture(gpt2, prompts, sites=["L1.MLP"], positions="last", progress=False)
    assert last.index[["prompt", "position"]].values.tolist() == [[0, 2], [1, 4], [2, 1]]
    every = ck.capture(gpt2, prompts, sites=["L1.MLP"], positions="all", progress=False)
    assert every.n_rows == 10
    # variable lengths are batched by equal length (no pad token): same numbers as one prompt at a time
    single = ck.capture(gpt2, [prompts[1]], sites=["L1.MLP"], progress=False, positions="all")
    np.testing.assert_allclose(every["L1.MLP"][every.index["prompt"] == 1], single["L1.MLP"], atol=1e-6)
    mean = ck.capture(gpt2, prompts, sites=["L1.MLP"], positions=[0, -1], aggregate="mean", progress=False)
    assert mean.index["position"].tolist() == [-1, -1, -1]
    rows = every.index["prompt"] == 1
    sel = every["L1.MLP"][rows][[0, 4]].mean(0)
    np.testing.assert_allclose(mean["L1.MLP"][1], sel, atol=1e-6)
    picked = ck.capture(gpt2, prompts, sites=["embed"], positions=lambda i, toks: [0], progress=False)
    assert picked.index["position"].tolist() == [0, 0, 0]


def test_activations_save_load_roundtrip(gpt2, ids, tmp_path):
    acts = ck.capture(gpt2, ids, sites=["embed", "L0.H1", "out"], positions="last", progress=False)
    acts.save(tmp_path / "a")
    back = Activations.load(tmp_path / "a")
    assert back.sites == acts.sites and back.meta == acts.meta
    for s in acts.sites:
        np.testing.assert_array_equal(back[s], acts[s])
    assert back.index.equals(acts.index)


def test_bad_input_is_refused_with_the_valid_choices(gpt2, ids):
    with pytest.raises(ValueError, match="unknown site 'L7.MLP'.*valid sites"):
        ck.capture(gpt2, ids, sites=["L7.MLP"], progress=False, positions="all")
    with pytest.raises(ValueError, match="unknown site 'mlp0'.*valid forms"):
        ck.capture(gpt2, ids, sites=["mlp0"], progress=False, positions="all")
    with pytest.raises(ValueError, match="empty inputs"):
        ck.capture(gpt2, [], sites=["embed"], progress=False, positions="all")
    with pytest.raises(ValueError, match="no sites"):
        ck.capture(gpt2, ids, sites=[], progress=False, positions="all")
    with pytest.raises(ValueError, match="unknown positions"):
        ck.capture(gpt2, ids, sites=["embed"], positions="first", progress=False)
    with pytest.raises(ValueError, match="outside prompt"):
        ck.capture(gpt2, ids, sites=["embed"], positions=[40], progress=False)
    with pytest.raises(ValueError, match="unknown aggregate"):
        ck.capture(gpt2, ids, sites=["embed"], aggregate="median", progress=False, positions="all")
    with pytest.raises(ValueError, match="need a tokenizer"):
        ck.capture(gpt2, ["a string"], sites=["embed"], progress=False, positions="all")


def test_unknown_architecture_lists_supported_ones():
    with pytest.raises(ValueError, match="supported: .*gpt2.*register_arch"):
        ck.load_model(torch.nn.Linear(3, 3))


def test_hub_name_path_uses_transformers_model(monkeypatch, gpt2, tmp_path):
    """Users with internet pass a hub name; here a local directory stands in for the download."""
    gpt2.save_pretrained(tmp_path / "m")
    lm = ck.load_model(str(tmp_path / "m"))
    assert type(lm.envoy).__name__ == "TransformersModel"
    ids = torch.randint(1, 64, (2, 5))
    a = ck.capture(lm, ids, sites=["L1.resid_post"], progress=False, positions="all")
    b = ck.capture(gpt2, ids, sites=["L1.resid_post"], progress=False, positions="all")
    np.testing.assert_allclose(a["L1.resid_post"], b["L1.resid_post"], atol=1e-5)
