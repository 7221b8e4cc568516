"""EAP vs exact activation patching, the method registry, and the InterpBench loader's plumbing."""

import pickle

import numpy as np
import pytest
import torch
from conftest import _reference_component_outputs as component_outputs
from scipy.stats import spearmanr

from circuitkit.baselines import available_methods, discover, get_method
from circuitkit.evaluate import candidate_edges, edge_scores
from circuitkit.models.interpbench import (
    hook_to_component,
    load_interpbench_case,
    parse_interpbench_edges,
)
from circuitkit.models.tracr import TracrTransformer, load_tracr_task
from circuitkit.runtime.split import run_components


def _weights(rng, *, n_layers, n_heads, d=6, d_head=3, d_mlp=5, vocab=5, n_pos=6, n_out=1, linear=False):
    w = {"token_embed": rng.normal(size=(vocab, d)), "pos_embed": rng.normal(size=(n_pos, d)),
         "unembed": rng.normal(size=(d, n_out))}
    for l in range(n_layers):
        p = f"layer_{l}/"
        for name in ("query", "key", "value"):
            w[p + f"attn/{name}/w"] = np.zeros((d, n_heads * d_head)) if (linear and name != "value") else \
                rng.normal(size=(d, n_heads * d_head))
            w[p + f"attn/{name}/b"] = np.zeros(n_heads * d_head)
        w[p + "attn/linear/w"] = rng.normal(size=(n_heads * d_head, d)) / 2
        w[p + "attn/linear/b"] = np.zeros(d)
        w[p + "mlp/linear_1/w"] = rng.normal(size=(d, d_mlp)) / 2
        # linear toy: a large bias keeps every ReLU on, so the MLP is affine
        w[p + "mlp/linear_1/b"] = np.full(d_mlp, 1e3) if linear else rng.normal(size=d_mlp)
        w[p + "mlp/linear_2/w"] = rng.normal(size=(d_mlp, d)) / 2
        w[p + "mlp/linear_2/b"] = np.zeros(d)
    return {k: v.astype(np.float32) for k, v in w.items()}


def _toy(*, linear, n_out=1, seed=0, dtype=torch.float64):
    rng = np.random.default_rng(seed)
    w = _weights(rng, n_layers=2, n_heads=2, n_out=n_out, linear=linear)
    return TracrTransformer(w, n_layers=2, n_heads=2, causal=False, dtype=dtype).eval()


def _scores(circ, cands):
    s = edge_scores(circ)
    return np.array([s.get(e, 0.0) for e in cands])


def _weights_of(circ, cands):
    e = circ.edges.set_index(["source", "target"])["weight"]
    return np.array([e[c] for c in cands])


def test_split_forward_matches_model_and_reference_patching():
    model = _toy(linear=False, n_out=3, dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    ids, cor = torch.randint(0, 5, (7, 5), generator=g), torch.randint(0, 5, (7, 5), generator=g)
    with torch.no_grad():
        run = run_components(model, ids)
        assert torch.allclose(run.outputs["out"], model(ids), atol=1e-5)
        k = run_components(model, cor)
        patch = {"L1.H0": {"L0.MLP": k.outputs["L0.MLP"]}, "out": {"embed": k.outputs["embed"]}}
        got = run_components(model, ids, patch=patch).outputs["out"]
        ref = component_outputs(model, ids, ablate=patch)["out"]
    assert torch.allclose(got, ref, atol=1e-5)
    assert not torch.allclose(got, run.outputs["out"], atol=1e-3)  # the patch did something


def test_eap_equals_patching_on_a_linear_toy():
    """The metric is linear in every input there (uniform attention, always-on ReLUs, numerical output),
    so EAP's first-order estimate is exact: |EAP - patching| <= 1e-6 * max|patching| (float64)."""
    model = _toy(linear=True)
    sites = ["embed", "L0.H0", "L0.H1", "L0.MLP", "L1.H0", "L1.H1", "L1.MLP", "out"]
    g = torch.Generator().manual_seed(1)
    clean, corrupt = torch.randint(0, 5, (16, 5), generator=g), torch.randint(0, 5, (16, 5), generator=g)
    cands = candidate_edges(sites)
    kw = {"sites": sites, "output_kind": "numerical"}
    ref = discover("patching", model, clean, corrupt, **kw)
    tol = 1e-6 * np.abs(_weights_of(ref, cands)).max()
    for method, extra in (("eap", {}), ("eap-ig", {"steps": 3})):
        circ = discover(method, model, clean, corrupt, **kw, **extra)
        np.testing.assert_allclose(_weights_of(circ, cands), _weights_of(ref, cands), atol=tol, rtol=0)
        np.testing.assert_allclose(_scores(circ, cands), _scores(ref, cands), atol=tol, rtol=0)
    assert np.abs(_weights_of(ref, cands)).max() > 1e-2  # not a vacuous comparison


def test_eap_logit_difference_metric_equals_hand_patching_on_a_linear_toy():
    """With answer=/distractor= the metric is logit[a] - logit[d] at the last position, linear on the linear toy:
    EAP and EAP-IG equal the mean drop of that logit difference when u's clean contribution to v's input is
    replaced by its corrupted one (computed here by hand with run_components)."""
    model = _toy(linear=True, n_out=3)
    sites = ["embed", "L0.H0", "L0.H1", "L0.MLP", "L1.H0", "L1.H1", "L1.MLP", "out"]
    g = torch.Generator().manual_seed(3)
    clean, corrupt = torch.randint(0, 5, (12, 5), generator=g), torch.randint(0, 5, (12, 5), generator=g)
    ans = torch.randint(0, 3, (12,), generator=g)
    dis = (ans + 1 + torch.randint(0, 2, (12,), generator=g)) % 3
    rows = torch.arange(12)

    def ld(out):
        return (out[rows, -1, ans] - out[rows, -1, dis]).double()

    cands = candidate_edges(sites)
    with torch.no_grad():
        run_c, run_k = run_components(model, clean), run_components(model, corrupt)
        ref = np.array([float((ld(run_c.outputs["out"]) - ld(run_components(
            model, clean, patch={v: {u: run_k.outputs[u]}}).outputs["out"])).mean()) for u, v in cands])
    tol = 1e-6 * np.abs(ref).max()
    for method, extra in (("eap", {}), ("eap-ig", {"steps": 3})):
        circ = discover(method, model, clean, corrupt, sites=sites, answer=ans, distractor=dis, batch_size=5, **extra)
        np.testing.assert_allclose(_weights_of(circ, cands), ref, atol=tol, rtol=0)
        assert circ.meta["metric"] == "logit_diff"
    assert np.abs(ref).max() > 1e-2
    with pytest.raises(ValueError, match="both answer= and distractor="):
        discover("eap", model, clean, corrupt, sites=sites, answer=ans)
    with pytest.raises(ValueError, match="answer has 11 ids"):
        discover("eap", model, clean, corrupt, sites=sites, answer=ans[:11], distractor=dis[:11])


def test_eap_correlates_with_patching_on_nonlinear_models():
    """Away from linearity EAP is an approximation; on a random nonlinear model and on a Tracr task its
    edge ranking still agrees with exact patching (Spearman > 0.8)."""
    model = _toy(linear=False, dtype=torch.float32)
    sites = ["embed", "L0.H0", "L0.H1", "L0.MLP", "L1.H0", "L1.H1", "L1.MLP", "out"]
    g = torch.Generator().manual_seed(2)
    clean, corrupt = torch.randint(0, 5, (64, 5), generator=g), torch.randint(0, 5, (64, 5), generator=g)
    cands = candidate_edges(sites)
    kw = {"sites": sites, "output_kind": "numerical"}
    ref = _scores(discover("patching", model, clean, corrupt, **kw), cands)
    for method in ("eap", "eap-ig"):
        rho = spearmanr(_scores(discover(method, model, clean, corrupt, **kw), cands), ref)[0]
        assert rho > 0.8, (method, rho)

    task = load_tracr_task("sort")
    c = task.encode(task.sample_inputs(64, seed=0, length=task.max_seq_len))
    k = task.encode(task.sample_inputs(64, seed=1, length=task.max_seq_len))
    cands = candidate_edges(task.sites)
    kw = {"sites": task.sites, "output_kind": task.output_kind}
    ref = _scores(discover("patching", task.model, c, k, **kw), cands)
    eap = _scores(discover("eap", task.model, c, k, **kw), cands)
    assert spearmanr(eap, ref)[0] > 0.8


def test_registry_and_input_errors():
    assert {"circuitlasso", "eap", "eap-ig", "patching"} <= set(available_methods())
    with pytest.raises(ValueError, match="unknown discovery method 'acdc'.*eap-ig"):
        get_method("acdc")
    task = load_tracr_task("hist")
    c = task.encode(task.sample_inputs(4, seed=0, length=3))
    k = task.encode(task.sample_inputs(4, seed=1, length=4))
    with pytest.raises(ValueError, match="same length"):
        discover("eap", task.model, c, k, sites=task.sites)
    with pytest.raises(ValueError, match="steps"):
        discover("eap-ig", task.model, c, c, sites=task.sites, steps=0)
    with pytest.raises(ValueError, match="not components"):
        discover("eap", task.model, c, c, sites=["embed", "L7.MLP"])
    with pytest.raises(ValueError, match="output_kind"):
        discover("eap", task.model, c, c, sites=task.sites, output_kind="ordinal")


def test_circuitlasso_method_recovers_a_one_layer_task():
    task = load_tracr_task("hist")
    c = [task.encode(task.sample_inputs(60, seed=0, length=n)) for n in (3, 5)]
    circ = discover("circuitlasso", task.model, c, None, sites=task.sites, output_kind=task.output_kind)
    assert circ.meta["method"] == "circuitlasso" and circ.path is not None
    top = set(edge_scores(circ).sort_values(ascending=False).index[: len(task.true_edges)])
    assert top == set(task.true_edges)


# -- InterpBench ------------------------------------------------------------------------------------


HOOK_EDGES = [
    ("blocks.1.attn.hook_result[2]", "blocks.1.hook_resid_post"),
    ("blocks.0.hook_mlp_out", "blocks.1.hook_q_input[2]"),
    ("blocks.0.hook_mlp_out", "blocks.1.hook_k_input[2]"),
    ("blocks.0.hook_mlp_out", "blocks.1.hook_v_input[2]"),
    ("hook_embed", "blocks.0.hook_mlp_in"),
    ("hook_pos_embed", "blocks.1.hook_q_input[2]"),
    ("blocks.1.hook_q_input[2]", "blocks.1.attn.hook_q[2]"),
]


def test_interpbench_edge_parsing():
    assert hook_to_component("blocks.3.attn.hook_result[1]", n_layers=4) == "L3.H1"
    assert hook_to_component("blocks.3.hook_resid_post", n_layers=4) == "out"
    with pytest.raises(ValueError, match="cannot map hook"):
        hook_to_component("blocks.1.hook_resid_post", n_layers=4)
    edges = parse_interpbench_edges(HOOK_EDGES, n_layers=2)
    assert edges == [("embed", "L0.MLP"), ("embed", "L1.H2"), ("L0.MLP", "L1.H2"), ("L1.H2", "out")]


def _tl_state(rng, *, n_layers=2, n_heads=4, d=8, dh=2, d_mlp=6, vocab=5, n_ctx=6):
    t = lambda *s: torch.tensor(0.3 * rng.normal(size=s), dtype=torch.float32)
    st = {"embed.W_E": t(vocab, d), "pos_embed.W_pos": t(n_ctx, d), "unembed.W_U": t(d, vocab),
          "unembed.b_U": torch.zeros(vocab)}
    for l in range(n_layers):
        p = f"blocks.{l}."
        for x in "QKV":
            st[p + f"attn.W_{x}"] = t(n_heads, d, dh)
            st[p + f"attn.b_{x}"] = t(n_heads, dh)
        st[p + "attn.W_O"], st[p + "attn.b_O"] = t(n_heads, dh, d), t(d)
        st[p + "mlp.W_in"], st[p + "mlp.b_in"] = t(d, d_mlp), t(d_mlp)
        st[p + "mlp.W_out"], st[p + "mlp.b_out"] = t(d_mlp, d), t(d)
    return st


def _tl_reference(st, ids, *, n_layers=2, n_heads=4):
    """A direct TransformerLens-convention forward (no LN, causal) to check the conversion."""
    x = st["embed.W_E"][ids] + st["pos_embed.W_pos"][: ids.shape[1]]
    T = ids.shape[1]
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    for l in range(n_layers):
        p = f"blocks.{l}."
        q = torch.einsum("btd,hde->bthe", x, st[p + "attn.W_Q"]) + st[p + "attn.b_Q"]
        k = torch.einsum("btd,hde->bthe", x, st[p + "attn.W_K"]) + st[p + "attn.b_K"]
        v = torch.einsum("btd,hde->bthe", x, st[p + "attn.W_V"]) + st[p + "attn.b_V"]
        sc = torch.einsum("bqhe,bkhe->bhqk", q, k) / q.shape[-1] ** 0.5
        sc = sc.masked_fill(~mask, float("-inf"))
        z = torch.einsum("bhqk,bkhe->bqhe", sc.softmax(-1), v)
        x = x + torch.einsum("bqhe,hed->bqd", z, st[p + "attn.W_O"]) + st[p + "attn.b_O"]
        x = x + torch.relu(x @ st[p + "mlp.W_in"] + st[p + "mlp.b_in"]) @ st[p + "mlp.W_out"] + st[p + "mlp.b_out"]
    return x @ st["unembed.W_U"]


def test_interpbench_hub_plumbing_and_model_conversion(tmp_path):
    rng = np.random.default_rng(0)
    st = _tl_state(rng)
    cfg = {"n_layers": 2, "n_heads": 4, "d_model": 8, "d_head": 2, "normalization_type": None, "act_fn": "relu",
           "attention_dir": "causal"}
    folder = tmp_path / "hub" / "3"
    folder.mkdir(parents=True)
    torch.save(st, folder / "ll_model.pth")
    (folder / "ll_model_cfg.pkl").write_bytes(pickle.dumps(cfg))
    (folder / "edges.pkl").write_bytes(pickle.dumps(HOOK_EDGES))
    calls = []

    def fake_download(*, repo_id, filename, subfolder, cache_dir):
        calls.append((repo_id, filename, subfolder, cache_dir))
        return str(tmp_path / "hub" / subfolder / filename)

    case = load_interpbench_case("3", cache_dir=tmp_path / "cache", downloader=fake_download)
    assert [c[:3] for c in calls] == [("cybershiptrooper/InterpBench", f, "3")
                                      for f in ("ll_model.pth", "ll_model_cfg.pkl", "edges.pkl")]
    assert all(c[3] == str(tmp_path / "cache") for c in calls)
    assert case.true_edges == parse_interpbench_edges(HOOK_EDGES, n_layers=2)
    assert "L1.H3" in case.sites and case.sites[0] == "embed" and case.sites[-1] == "out"
    ids = torch.tensor([[0, 3, 1, 4, 2], [1, 1, 2, 0, 4]])
    with torch.no_grad():
        np.testing.assert_allclose(case.model(ids).numpy(), _tl_reference(st, ids).numpy(), rtol=1e-4, atol=1e-4)
    # the discovery methods run on it unchanged
    circ = discover("eap", case.model, ids, ids.flip(0), sites=case.sites)
    assert len(circ.edges) == len(candidate_edges(case.sites))
    bad = dict(cfg, normalization_type="LN")
    (folder / "ll_model_cfg.pkl").write_bytes(pickle.dumps(bad))
    with pytest.raises(ValueError, match="normalization_type"):
        load_interpbench_case("3", downloader=fake_download)
    with pytest.raises(ValueError, match="lacks InterpBench files"):
        from circuitkit.models.interpbench import load_interpbench_dir

        load_interpbench_dir(tmp_path)
