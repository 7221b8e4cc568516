"""The runtime room: interventions by site name and the split forward, on every supported architecture.

What must hold (random-weight configs of GPT-2, GPT-NeoX parallel/sequential, Llama with grouped-query
attention, Gemma-2, and Tracr programs with known weights):

* the split forward without patches equals the plain forward, and its components equal capture's sites;
* zero-ablating a head by site name changes the output exactly as zeroing that head's output-projection
  weights (and its share of the bias) does; the same edit through the split forward (patching the head out
  of every reader) agrees;
* a replaced / added / mean-ablated site propagates as a hand-edited forward predicts;
* splicing an SAE leaves the output unchanged and its code gradient equals a finite difference.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers as tf

import circuitkit as ck
from circuitkit.models.adapters import get_adapter
from circuitkit.runtime import Add, Mean, Record, Replace, Resample, Splice, Zero, hooked, run_components

VOCAB = 40
BASE = {"vocab_size": VOCAB, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 48, "max_position_embeddings": 64, "initializer_range": 0.2}
CONFIGS = {
    "gpt2": lambda: tf.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                  initializer_range=0.2, bos_token_id=0, eos_token_id=0),
    "gpt_neox-parallel": lambda: tf.GPTNeoXConfig(**BASE, rotary_pct=0.5, use_parallel_residual=True),
    "gpt_neox-sequential": lambda: tf.GPTNeoXConfig(**BASE, use_parallel_residual=False),
    "llama-gqa": lambda: tf.LlamaConfig(**BASE, num_key_value_heads=2),
    "gemma2": lambda: tf.Gemma2Config(**BASE, num_key_value_heads=2, head_dim=12, final_logit_softcapping=5.0),
}


def _model(name: str):
    torch.manual_seed(0)
    model = tf.AutoModelForCausalLM.from_config(CONFIGS[name]()).eval()
    with torch.no_grad():  # non-trivial norm gains and biases, so a wrong hook point cannot pass by accident
        for pname, p in model.named_parameters():
            if "norm" in pname and p.ndim == 1:
                p.add_(0.3 * torch.randn_like(p))
            elif pname.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def hf(request):
    model = _model(request.param)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, VOCAB, (3, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[2, 5:] = 0  # one right-padded row
    return request.param, model, ids, mask


def _lm_head_out(model, ids, mask):
    box = {}
    h = model.lm_head.register_forward_hook(lambda m, i, o: box.setdefault("y", o))
    try:
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask)
    finally:
        h.remove()
    return box["y"]


def _close(a, b, tol=1e-5):
    a, b = np.asarray(a.detach(), np.float64), np.asarray(b.detach(), np.float64)
    np.testing.assert_allclose(a, b, rtol=0, atol=tol * max(np.abs(b).max(), 1e-6))


def test_split_forward_equals_plain_forward_and_capture(hf):
    name, model, ids, mask = hf
    with torch.no_grad():
        run = run_components(model, ids, attention_mask=mask)
    ref = _lm_head_out(model, ids, mask)
    real = mask.bool()
    _close(run.outputs["out"][real], ref[real])
    # components equal capture's sites on the unpadded rows
    ad = get_adapter(model)
    sites = ["embed", "L0.H1", "L1.H3", "L0.MLP", "L1.MLP"]
    acts = ck.capture(model, [row[m.bool()].tolist() for row, m in zip(ids, mask)], sites=sites, progress=False, positions="all")
    for s in sites:
        _close(torch.from_numpy(acts[s]), run.outputs[s][real].float(), tol=1e-4)
    # the components add up to the last residual (before the final norm)
    total = run.outputs["embed"] + sum(run.outputs[f"L{l}.H{h}"] + 0 for l in range(ad.n_layers)
                                       for h in range(ad.n_heads))
    total = total + sum(run.outputs[f"L{l}.MLP"] for l in range(ad.n_layers))
    box = {}
    last = ad.layer_module(ad.n_layers - 1)
    hd = last.register_forward_hook(lambda m, i, o: box.setdefault("h", o[0] if isinstance(o, tuple) else o))
    try:
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask)
    finally:
        hd.remove()
    _close(total[real], box["h"][real], tol=1e-4)


def _zero_head_by_weights(model, layer: int, head: int):
    """A copy of ``model`` whose head ``head`` of ``layer`` is removed by editing weights (and bias share)."""
    import copy

    m = copy.deepcopy(model)
    ad = get_adapter(m)
    proj = ad.resolve(ad.layer_module(layer), ad.spec.o_proj)
    n = ad.n_heads
    with torch.no_grad():
        if ad.spec.o_proj_layout == "conv1d":  # [in, out]
            dh = proj.weight.shape[0] // n
            proj.weight[head * dh:(head + 1) * dh] = 0
        else:  # [out, in]
            dh = proj.weight.shape[1] // n
            proj.weight[:, head * dh:(head + 1) * dh] = 0
        if getattr(proj, "bias", None) is not None:
            proj.bias.mul_(1 - 1 / n)  # the head's share b / n_heads is part of its site value
    return m


def test_zero_head_equals_editing_its_weights(hf):
    name, model, ids, mask = hf
    if name == "gemma2":  # frozen-norm heads: the weight edit is not the site edit (archs docstring)
        _check_gemma2_head_ablation_is_linearised(model, ids)
        return
    with torch.no_grad(), hooked(model, [Zero("L1.H2")]):
        y = model(input_ids=ids, attention_mask=mask).logits
    ref = _zero_head_by_weights(model, 1, 2)(input_ids=ids, attention_mask=mask).logits.detach()
    real = mask.bool()
    _close(y[real], ref[real])
    assert (y[real] - model(input_ids=ids, attention_mask=mask).logits[real]).abs().max() > 1e-3  # it did something
    # the split forward, patching the head out of its every reader (here: layer 1's MLP and out), agrees
    readers = ("out",) if name == "gpt_neox-parallel" else ("L1.MLP", "out")  # a parallel MLP reads resid_pre
    with torch.no_grad():
        run = run_components(model, ids, attention_mask=mask, patch={v: {"L1.H2": None} for v in readers})
    _close(run.outputs["out"][real], ref[real])
    if name == "gpt_neox-parallel":
        with pytest.raises(ValueError, match="parallel residual"):
            run_components(model, ids, attention_mask=mask, patch={"L1.MLP": {"L1.H2": None}})


def _check_gemma2_head_ablation_is_linearised(model, ids):
    with torch.no_grad(), hooked(model, [Record("L1.attn"), Record("L1.H0")]) as st:
        model(input_ids=ids)
        attn, h0 = st.records["L1.attn"].clone(), st.records["L1.H0"].clone()
    with torch.no_grad(), hooked(model, [Zero("L1.H0"), Record("L1.attn")]) as st:
        model(input_ids=ids)
        _close(st.records["L1.attn"], attn - h0)  # the attention output loses exactly the head's site value


def test_replace_add_mean_resample_propagate(hf):
    name, model, ids, mask = hf
    d = model.config.hidden_size
    delta = torch.randn(d, generator=torch.Generator().manual_seed(3))
    with torch.no_grad(), hooked(model, [Record("L0.resid_post")]) as st:
        model(input_ids=ids, attention_mask=mask)
        h = st.records["L0.resid_post"].clone()
    with torch.no_grad(), hooked(model, [Add("L0.resid_post", delta=delta), Record("L1.resid_pre")]) as st:
        model(input_ids=ids, attention_mask=mask)
        _close(st.records["L1.resid_pre"], h + delta)
    with torch.no_grad(), hooked(model, [Replace("L0.resid_post", value=h + delta)]):
        y1 = model(input_ids=ids, attention_mask=mask).logits
    with torch.no_grad(), hooked(model, [Add("L0.resid_post", delta=delta)]):
        y2 = model(input_ids=ids, attention_mask=mask).logits
    _close(y1, y2)
    with torch.no_grad(), hooked(model, [Mean("L0.MLP", mean=torch.zeros(d)), Record("L0.MLP")]) as st:
        model(input_ids=ids, attention_mask=mask)
        assert st.records["L0.MLP"].abs().max() == 0
    with torch.no_grad(), hooked(model, [Resample("L0.resid_post", values=h, perm=[2, 0, 1]),
                                         Record("L0.resid_post")]) as st:
        model(input_ids=ids, attention_mask=mask)
        _close(st.records["L0.resid_post"], h[[2, 0, 1]])


class _TinySAE(torch.nn.Module):
    """A ReLU SAE with the sae_lens interface the runtime uses (cfg.d_in/d_sae, encode, decode, W_dec)."""

    def __init__(self, d: int, k: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W_enc = torch.nn.Parameter(torch.randn(d, k, generator=g) / d**0.5)
        self.b_enc = torch.nn.Parameter(torch.zeros(k))
        self.W_dec = torch.nn.Parameter(torch.randn(k, d, generator=g) / k**0.5)
        self.b_dec = torch.nn.Parameter(torch.zeros(d))
        self.cfg = type("Cfg", (), {"d_in": d, "d_sae": k})()

    def encode(self, x):
        return torch.relu((x - self.b_dec) @ self.W_enc + self.b_enc)

    def decode(self, z):
        return z @ self.W_dec + self.b_dec


def test_splice_keeps_output_and_gives_decoder_gradients(hf):
    name, model, ids, mask = hf
    sae = _TinySAE(model.config.hidden_size, 16)
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask).logits
    with torch.enable_grad(), hooked(model, [Splice("L0.resid_post", sae=sae)]) as st:
        y = model(input_ids=ids, attention_mask=mask).logits
        _close(y, ref)
        z = st.codes["L0.resid_post"]
        (g,) = torch.autograd.grad(y[0, -1, 3], z)
    # finite difference: moving code f at (0, t) by eps moves the site by eps * W_dec[f]
    t = int(torch.nonzero(g[0].abs().sum(-1)).max())
    f = int(g[0, t].abs().argmax())
    eps = 1e-3
    with torch.no_grad(), hooked(model, [Add("L0.resid_post", delta=_onehot_delta(ids.shape, t, eps * sae.W_dec[f]))]):
        y2 = model(input_ids=ids, attention_mask=mask).logits
    fd = (y2[0, -1, 3] - ref[0, -1, 3]) / eps
    assert abs(float(fd) - float(g[0, t, f])) <= 1e-2 * max(1.0, abs(float(g[0, t, f])))


def _onehot_delta(shape, t, vec):
    d = torch.zeros(shape[0], shape[1], vec.shape[0])
    d[0, t] = vec.detach()
    return d


def test_splice_ablate_removes_feature_directions():
    model = _model("llama-gqa")
    sae = _TinySAE(model.config.hidden_size, 16, seed=4)
    ids = torch.randint(1, VOCAB, (2, 6), generator=torch.Generator().manual_seed(5))
    with torch.no_grad(), hooked(model, [Record("L0.resid_post")]) as st:
        model(input_ids=ids)
        h = st.records["L0.resid_post"].clone()
    with torch.no_grad(), hooked(model, [Splice("L0.resid_post", sae=sae, ablate=[1, 5], grad=False),
                                         Record("L0.resid_post")]) as st:
        model(input_ids=ids)
        z = sae.encode(h)
        _close(st.records["L0.resid_post"], h - z[..., [1, 5]] @ sae.W_dec[[1, 5]])


def test_bad_edits_name_the_problem():
    model = _model("gpt2")
    with pytest.raises(ValueError, match="layers 0..1"), hooked(model, [Zero("L5.MLP")]):
        pass
    with pytest.raises(ValueError, match="heads 0..3"), hooked(model, [Zero("L0.H7")]):
        pass
    with pytest.raises(TypeError, match="sae_lens SAE"):
        Splice("L0.resid_post", sae=torch.nn.Linear(3, 3))
    with pytest.raises(TypeError, match="edits must be"), hooked(model, ["L0.MLP"]):
        pass
    with pytest.raises(ValueError, match="unknown site"):
        run_components(model, torch.zeros(1, 3, dtype=torch.long), patch={"L0.MLP": {"L9.H0": None}})


# -- Tracr: against hand-edited forwards ---------------------------------------------------------------
def test_tracr_zero_head_equals_zero_weights():
    import copy

    from circuitkit.models.tracr import list_tracr_tasks, load_tracr_task

    checked = 0
    for name in list_tracr_tasks()[:4]:
        task = load_tracr_task(name)
        ids = task.encode(task.sample_inputs(6, seed=0, length=4))
        attn = task.model.layers[0].attn
        for h in range(attn.n_heads):
            m = copy.deepcopy(task.model)
            a = m.layers[0].attn
            with torch.no_grad():
                a.W_O[h * a.d_head:(h + 1) * a.d_head] = 0
            with torch.no_grad(), hooked(task.model, [Zero(f"L0.H{h}")]):
                y = task.model(ids)
            np.testing.assert_allclose(y.numpy(), m(ids).detach().numpy(), atol=1e-6)
            # and through the split forward: patching the head out of every reader is the same edit
            readers = [s for s in get_adapter(task.model).sites if s in ("out",) or s.endswith(".MLP")
                       or (s.startswith("L") and ".H" in s and int(s[1:s.index(".")]) > 0)]
            run = run_components(task.model, ids, patch={v: {f"L0.H{h}": None} for v in readers})
            np.testing.assert_allclose(run.outputs["out"].detach().numpy(), y.numpy(), atol=1e-5)
            checked += 1
    assert checked >= 4
