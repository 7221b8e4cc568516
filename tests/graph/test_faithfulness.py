"""Ablation metrics (circuitkit.faithfulness): the science, on Tracr tasks and a random-weight GPT-2.

* nothing ablated is the full model and everything ablated is the empty circuit, so the curve has f = 1 at
  fraction 1 and f = 0 at fraction 0 exactly; the empty circuit's output is the unembedding of the summed
  reference values (checked by hand on a Tracr model);
* a Tracr task's weight-derived circuit is faithful (f = 1) and complete (completeness 0) under mean, zero and
  resample ablation, and dropping some of its edges lowers f;
* edge ablation of u -> v changes only v's input: on a GPT-2 config, patching one edge equals a forward
  written by hand from the model's own weights, and every reader before v sees the clean stream;
* node ablation equals ablating the node's output for every reader (a Zero edit of the interventions room);
* CPR / CMD of a perfect curve are 1 / 0 on the normalised fraction axis (MIB's raw axis: 0.999).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from circuitkit.circuit import Circuit
from circuitkit.evaluate import candidate_edges
from circuitkit.faithfulness import (
    DEFAULT_FRACTIONS,
    circuit_metric,
    cmd,
    cpr,
    faithfulness_curve,
    plot_faithfulness,
    rank_edges,
)
from circuitkit.models.tracr import load_tracr_task
from circuitkit.runtime import Zero, hooked
from circuitkit.runtime.split import answer_targets, run_components, task_metric

# tasks whose true circuit is checked (categorical; see test_numerical_tasks_are_ill_posed_under_mean_ablation)
TRUE_CIRCUIT_TASKS = ("reverse", "sort", "dyck1")


@pytest.fixture(scope="module")
def tasks():
    return {name: load_tracr_task(name) for name in ("reverse", "sort", "dyck1", "frac_prevs")}


def _ids(task, n=24, length=4, seed=0):
    return task.encode(task.sample_inputs(n, seed=seed, length=length))


def _by_length(task, n=48, seed=0):
    groups: dict[int, list] = {}
    for x in task.sample_inputs(n, seed=seed):
        groups.setdefault(len(x), []).append(x)
    return [task.encode(v) for v in groups.values()]


@pytest.fixture(scope="module")
def gpt2():
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=4, n_embd=32, vocab_size=50, n_positions=32,
                                      bos_token_id=0, eos_token_id=0)).eval()


@pytest.fixture(scope="module")
def gpt2_ids():
    g = torch.Generator().manual_seed(1)
    return torch.randint(1, 50, (6, 7), generator=g)


def _all_sites(model, ids):
    from circuitkit.sites import sort_sites

    with torch.no_grad():
        return sort_sites(run_components(model, ids[:1]).outputs)


# --------------------------------------------------------------------------------------------------
# the endpoints: nothing ablated = full model, everything ablated = empty circuit
# --------------------------------------------------------------------------------------------------


def test_full_and_empty_endpoints_are_exact(tasks):
    task = tasks["reverse"]
    ids = _ids(task)
    cands = candidate_edges(_all_sites(task, ids))
    with torch.no_grad():
        out = task.model(ids)
    tgt = answer_targets(out, output_kind="categorical")
    m_plain = float(task_metric(out, tgt, output_kind="categorical").double().mean())
    m_full = circuit_metric(task, ids, cands, ablation="mean")
    assert m_full == pytest.approx(m_plain, abs=1e-5)

    # empty circuit under mean ablation: `out` reads only the reference means (+ the attention biases)
    m_empty = circuit_metric(task, ids, [], ablation="mean")
    with torch.no_grad():
        run = run_components(task, ids)
        resid = sum(run.outputs[s].mean(0, keepdim=True) for s in run.outputs if s != "out")
        resid = resid + sum(b.attn.b_O for b in task.model.layers)
        out_empty = task.model.unembed(resid).expand_as(out)
    m_hand = float(task_metric(out_empty, tgt, output_kind="categorical").double().mean())
    assert m_empty == pytest.approx(m_hand, abs=1e-5)
    assert m_full - m_empty > 0.5  # the task needs its circuit

    circ = Circuit.from_edges([(u, v, 1.0) for u, v in cands])
    curve = faithfulness_curve(task, circ, ids, fractions=(0.0, 0.5, 1.0), ablation="mean")
    assert curve["faithfulness"].iloc[0] == 0.0 and curve["faithfulness"].iloc[-1] == 1.0  # exactly
    assert curve["completeness"].iloc[0] == 1.0 and curve["completeness"].iloc[-1] == 0.0
    assert curve["n_edges"].tolist() == [0, len(cands) // 2, len(cands)]
    assert curve.attrs["m_full"] == m_full and curve.attrs["m_empty"] == m_empty


@pytest.mark.parametrize("ablation", ["mean", "resample"])
def test_empty_circuit_reads_only_reference_values_gpt2(gpt2, gpt2_ids, ablation):
    """Every edge ablated: ``out`` reads the sum of the sources' reference values (per position mean over the
    reference prompts, or the corrupted prompts' values row by row), so the logits are ln_f + lm_head of it."""
    g = torch.Generator().manual_seed(5)
    ref = torch.randint(1, 50, gpt2_ids.shape, generator=g)
    with torch.no_grad():
        rr = run_components(gpt2, ref).outputs
        vals = {s: (t.mean(0, keepdim=True) if ablation == "mean" else t) for s, t in rr.items() if s != "out"}
        logits = gpt2.lm_head(gpt2.transformer.ln_f(sum(vals.values())))[:, -1].expand(gpt2_ids.shape[0], -1)
        full = gpt2(gpt2_ids).logits[:, -1]
    lp, lq = torch.log_softmax(full.double(), -1), torch.log_softmax(logits.double(), -1)
    kl = float((lp.exp() * (lp - lq)).sum(-1).mean())
    got = circuit_metric(gpt2, gpt2_ids, [], ablation=ablation, metric="kl", reference=ref, batch_size=4)
    assert got == pytest.approx(kl, rel=1e-4)
    assert kl > 1e-3


# --------------------------------------------------------------------------------------------------
# the true circuit of a Tracr task
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TRUE_CIRCUIT_TASKS)
@pytest.mark.parametrize("ablation", ["mean", "zero", "resample"])
def test_tracr_true_circuit_is_faithful_and_complete(tasks, name, ablation):
    task = tasks[name]
    ids = _by_length(task)
    ref = [task.encode(task.sample_inputs(b.shape[0], seed=7, length=b.shape[1] - 1)) for b in ids]
    kw = {"ablation": ablation, "reference": ref if ablation == "resample" else None}
    cands = candidate_edges(_all_sites(task, ids[0]))
    m_full = circuit_metric(task, ids, cands, **kw)
    m_empty = circuit_metric(task, ids, [], **kw)
    assert abs(m_full - m_empty) > 0.1
    m_c = circuit_metric(task, ids, task.true_edges, **kw)
    m_k = circuit_metric(task, ids, task.true_edges, complement=True, **kw)
    f = (m_c - m_empty) / (m_full - m_empty)
    comp = (m_k - m_empty) / (m_full - m_empty)
    assert abs(f - 1) < 0.05 and abs(comp) < 0.05
    # node ablation keeps every node the true circuit touches: faithful too
    m_n = circuit_metric(task, ids, task.true_edges, level="node", **kw)
    assert abs((m_n - m_empty) / (m_full - m_empty) - 1) < 0.05
    # ... and the circuit is not trivially faithful: dropping one of its edges lowers f for some edge
    drops = [(circuit_metric(task, ids, [e for e in task.true_edges if e != d], **kw) - m_empty)
             / (m_full - m_empty) for d in task.true_edges]
    assert min(drops) < 0.95


def test_numerical_tasks_are_ill_posed_under_mean_ablation(tasks):
    """frac_prevs reads out its value linearly, so the mean output of the mean-ablated model equals the full
    model's mean output: m(N) = m(empty) and faithfulness is 0/0. Zero ablation is well posed."""
    task = tasks["frac_prevs"]
    ids = _ids(task, length=5)
    cands = candidate_edges(_all_sites(task, ids))
    full, empty = (circuit_metric(task, ids, c, ablation="mean") for c in (cands, []))
    assert abs(full - empty) < 1e-5
    full, empty = (circuit_metric(task, ids, c, ablation="zero") for c in (cands, []))
    assert abs(full - empty) > 0.1
    m_c = circuit_metric(task, ids, task.true_edges, ablation="zero")
    assert (m_c - empty) / (full - empty) == pytest.approx(1.0, abs=1e-5)


# --------------------------------------------------------------------------------------------------
# edge ablation of u -> v changes only v's input (GPT-2, a forward written by hand)
# --------------------------------------------------------------------------------------------------


def _head(block, x, h, n_heads):
    """GPT-2 head h of ``block`` on residual ``x`` (its own input), from the weights: z_h W_O[h] + b_O / H."""
    d = x.shape[-1]
    dh = d // n_heads
    q, k, v = block.attn.c_attn(block.ln_1(x)).split(d, dim=-1)
    sl = slice(h * dh, (h + 1) * dh)
    s = q[..., sl] @ k[..., sl].transpose(-1, -2) / math.sqrt(dh)
    t = x.shape[1]
    s = s.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
    z = torch.softmax(s, dim=-1) @ v[..., sl]
    return z @ block.attn.c_proj.weight[sl] + block.attn.c_proj.bias / n_heads


def _hand_pieces(model, ids):
    tr = model.transformer
    emb = tr.wte(ids) + tr.wpe(torch.arange(ids.shape[1]))[None]
    b0, b1 = tr.h
    heads0 = [_head(b0, emb, h, 4) for h in range(4)]
    mid0 = emb + sum(heads0)
    h1 = mid0 + b0.mlp(b0.ln_2(mid0))
    heads1 = [_head(b1, h1, h, 4) for h in range(4)]
    return emb, heads0, h1, heads1


def test_hand_forward_matches_the_model(gpt2, gpt2_ids):
    with torch.no_grad():
        _, _, h1, heads1 = _hand_pieces(gpt2, gpt2_ids)
        b1 = gpt2.transformer.h[1]
        mid1 = h1 + sum(heads1)
        logits = gpt2.lm_head(gpt2.transformer.ln_f(mid1 + b1.mlp(b1.ln_2(mid1))))
        ref = gpt2(gpt2_ids).logits
    torch.testing.assert_close(logits, ref, atol=1e-5, rtol=1e-5)


def test_patching_one_edge_into_an_mlp_equals_a_hand_built_forward(gpt2, gpt2_ids):
    g = torch.Generator().manual_seed(3)
    r = torch.randn(gpt2_ids.shape[0], gpt2_ids.shape[1], 32, generator=g)
    with torch.no_grad():
        _emb, heads0, h1, heads1 = _hand_pieces(gpt2, gpt2_ids)
        b1, tr = gpt2.transformer.h[1], gpt2.transformer
        mid1 = h1 + sum(heads1)
        x = mid1 - heads0[1] + r  # L1.MLP's own input: L0.H1 replaced by r
        m_new = b1.mlp(b1.ln_2(x))
        expected = gpt2.lm_head(tr.ln_f(mid1 + m_new))
        clean = run_components(gpt2, gpt2_ids, split_inputs=True)
        got = run_components(gpt2, gpt2_ids, patch={"L1.MLP": {"L0.H1": r}}, split_inputs=True)
    torch.testing.assert_close(got.outputs["out"], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.inputs["L1.MLP"], x, atol=1e-5, rtol=1e-5)
    for v in ("L0.H0", "L0.H1", "L0.MLP", "L1.H0", "L1.H1", "L1.H2", "L1.H3"):  # read before v: untouched
        assert torch.equal(got.inputs[v], clean.inputs[v]), v


def test_patching_one_edge_into_a_head_equals_a_hand_built_forward(gpt2, gpt2_ids):
    g = torch.Generator().manual_seed(4)
    r = torch.randn(1, gpt2_ids.shape[1], 32, generator=g)  # broadcast over the batch, like a mean
    with torch.no_grad():
        emb, _heads0, h1, heads1 = _hand_pieces(gpt2, gpt2_ids)
        b1, tr = gpt2.transformer.h[1], gpt2.transformer
        new2 = _head(b1, h1 - emb + r, 2, 4)  # only L1.H2 reads the edited stream
        mid1 = h1 + heads1[0] + heads1[1] + new2 + heads1[3]
        expected = gpt2.lm_head(tr.ln_f(mid1 + b1.mlp(b1.ln_2(mid1))))
        got = run_components(gpt2, gpt2_ids, patch={"L1.H2": {"embed": r}})
    torch.testing.assert_close(got.outputs["out"], expected, atol=1e-5, rtol=1e-5)
    for h in (0, 1, 3):  # the other heads of the layer read the clean stream
        torch.testing.assert_close(got.outputs[f"L1.H{h}"], heads1[h], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.outputs["L1.H2"], new2, atol=1e-5, rtol=1e-5)


def test_circuit_metric_ablates_exactly_the_missing_edge(gpt2, gpt2_ids):
    """circuit_metric with one candidate left out, zero ablation, KL metric = KL of the hand-built forward."""
    cands = candidate_edges(_all_sites(gpt2, gpt2_ids))
    kept = [e for e in cands if e != ("L0.H1", "L1.MLP")]
    with torch.no_grad():
        _emb, heads0, h1, heads1 = _hand_pieces(gpt2, gpt2_ids)
        b1, tr = gpt2.transformer.h[1], gpt2.transformer
        mid1 = h1 + sum(heads1)
        patched = gpt2.lm_head(tr.ln_f(mid1 + b1.mlp(b1.ln_2(mid1 - heads0[1]))))[:, -1]
        full = gpt2(gpt2_ids).logits[:, -1]
    lp, lq = torch.log_softmax(full.double(), -1), torch.log_softmax(patched.double(), -1)
    kl = float((lp.exp() * (lp - lq)).sum(-1).mean())
    got = circuit_metric(gpt2, gpt2_ids, kept, ablation="zero", metric="kl", batch_size=4)
    assert got == pytest.approx(kl, rel=1e-4, abs=1e-7)
    assert circuit_metric(gpt2, gpt2_ids, cands, ablation="zero", metric="kl") == pytest.approx(0.0, abs=1e-12)


def test_node_ablation_equals_a_zero_edit_of_the_node(gpt2, gpt2_ids):
    cands = candidate_edges(_all_sites(gpt2, gpt2_ids))
    kept = [e for e in cands if "L0.H2" not in e]
    ans = gpt2_ids[:, 0]
    dis = gpt2_ids[:, 1]
    with torch.no_grad(), hooked(gpt2, [Zero("L0.H2")]):
        edited = gpt2(gpt2_ids).logits[:, -1]
    rows = torch.arange(len(ans))
    expected = float((edited[rows, ans] - edited[rows, dis]).double().mean())
    got = circuit_metric(gpt2, gpt2_ids, kept, level="node", ablation="zero", metric="logit_diff",
                         answer=ans, distractor=dis)
    assert got == pytest.approx(expected, abs=1e-5)
    # the same circuit at edge level keeps L0.H2's edges into nobody, i.e. also ablates it everywhere
    assert circuit_metric(gpt2, gpt2_ids, kept, ablation="zero", metric="logit_diff", answer=ans,
                          distractor=dis) == pytest.approx(expected, abs=1e-5)


def test_padding_and_metric_position(gpt2):
    """With right padding the metric is read at each row's last real token; prob lies in (0, 1)."""
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    cands = candidate_edges(_all_sites(gpt2, ids))
    p = circuit_metric(gpt2, ids, cands, attention_mask=mask, metric="prob", answer=torch.tensor([3, 4]))
    with torch.no_grad():
        a = torch.softmax(gpt2(ids[:1]).logits[0, -1], -1)[3]
        b = torch.softmax(gpt2(ids[1:, :2]).logits[0, -1], -1)[4]
    assert p == pytest.approx(float(a + b) / 2, abs=1e-5)
    # the task metric sums the positions after BOS of real tokens only
    t_pad = circuit_metric(gpt2, ids, cands, attention_mask=mask, metric="task")
    t_rows = [circuit_metric(gpt2, ids[:1], cands, metric="task"), circuit_metric(gpt2, ids[1:, :2], cands, metric="task")]
    assert t_pad == pytest.approx(sum(t_rows) / 2, abs=1e-5)


# --------------------------------------------------------------------------------------------------
# curve, CPR / CMD, ranking, plot
# --------------------------------------------------------------------------------------------------


def test_cpr_cmd_of_a_perfect_and_a_linear_curve():
    perfect = pd.DataFrame({"fraction": DEFAULT_FRACTIONS, "faithfulness": 1.0})
    assert cpr(perfect) == 1.0 and cmd(perfect) == 0.0  # normalised fraction axis
    assert cpr(perfect, normalize=False) == pytest.approx(1 - 0.001)  # MIB's raw-fraction axis
    x = np.asarray(DEFAULT_FRACTIONS)
    lin = pd.DataFrame({"fraction": x, "faithfulness": (x - x[0]) / (x[-1] - x[0])})
    assert cpr(lin) == pytest.approx(0.5) and cmd(lin) == pytest.approx(0.5)
    assert cpr(perfect, log_x=True) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least two"):
        cpr(perfect.head(1))


def test_curve_of_a_ranked_circuit_on_tracr(tasks):
    task = tasks["sort"]
    ids = _ids(task, length=4)
    cands = candidate_edges(_all_sites(task, ids))
    truth = set(task.true_edges)
    # an oracle ranking: true edges first -> f reaches 1 at |true| edges and stays there
    circ = Circuit.from_edges([(u, v, 2.0 if (u, v) in truth else 1.0) for u, v in cands])
    k = len(truth) / len(cands)
    fr = tuple(sorted({0.0, 0.1, k, 1.0}))
    curve = faithfulness_curve(task, circ, ids, fractions=fr)
    assert list(curve.columns[:6]) == ["fraction", "n_edges", "m_C", "m_complement", "faithfulness", "completeness"]
    row = curve[curve["fraction"] == k].iloc[0]
    assert row["n_edges"] == len(truth)
    assert row["faithfulness"] == pytest.approx(1.0, abs=1e-6) and row["completeness"] == pytest.approx(0.0, abs=1e-6)
    # the reversed ranking puts the true edges last: at the same size it is far less faithful
    rev = Circuit.from_edges([(u, v, 1.0 if (u, v) in truth else 2.0) for u, v in cands])
    bad = faithfulness_curve(task, rev, ids, fractions=fr)
    assert bad[bad["fraction"] == k]["faithfulness"].iloc[0] < 0.5
    assert cpr(curve) > cpr(bad) and cmd(curve) < cmd(bad)
    fig = plot_faithfulness({"oracle": curve, "reversed": bad})
    assert len(fig.data) == 2 and "CPR" in fig.data[0].name


def test_rank_edges_by_score_and_path():
    cands = [("embed", "L0.H0"), ("embed", "out"), ("L0.H0", "out")]
    circ = Circuit.from_edges([("L0.H0", "out", 0.5), ("embed", "out", 2.0)], nodes=["embed", "L0.H0", "out"])
    assert rank_edges(circ, cands) == [("embed", "out"), ("L0.H0", "out"), ("embed", "L0.H0")]
    with pytest.raises(ValueError, match="regularisation path"):
        rank_edges(circ, cands, rank_by="path")
    path = pd.DataFrame({"alpha": [1.0, 0.1, 0.1], "source": ["L0.H0", "L0.H0", "embed"],
                         "target": ["out", "out", "out"], "weight": [0.1, 0.5, 2.0], "score": [0.1, 0.5, 2.0]})
    withpath = Circuit(circ.nodes, circ.edges, path, {})
    assert rank_edges(withpath, cands, rank_by="path")[0] == ("L0.H0", "out")  # enters the path first
    with pytest.raises(ValueError, match="rank_by"):
        rank_edges(circ, cands, rank_by="weight")


# --------------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------------


def test_clear_errors(tasks, gpt2, gpt2_ids):
    task = tasks["reverse"]
    ids = _ids(task, n=4)
    with pytest.raises(ValueError, match=r"unknown ablation 'median'.*'zero', 'mean', 'resample'"):
        circuit_metric(task, ids, task.true_edges, ablation="median")
    with pytest.raises(ValueError, match=r"unknown metric 'acc'.*'task', 'logit_diff', 'prob', 'kl'"):
        circuit_metric(task, ids, task.true_edges, metric="acc")
    with pytest.raises(ValueError, match=r"unknown level"):
        circuit_metric(task, ids, task.true_edges, level="feature")
    with pytest.raises(ValueError, match=r"sites \['L7.H0'\].*valid sites"):
        circuit_metric(task, ids, [("embed", "L7.H0")])
    with pytest.raises(ValueError, match="not candidate edges"):
        circuit_metric(task, ids, [("out", "embed")])
    with pytest.raises(ValueError, match="needs reference="):
        circuit_metric(task, ids, task.true_edges, ablation="resample")
    with pytest.raises(ValueError, match="reference shape"):
        circuit_metric(task, ids, task.true_edges, ablation="resample", reference=ids[:, :-1])
    with pytest.raises(ValueError, match="cover every position"):
        circuit_metric(task, ids, task.true_edges, ablation="mean", reference=ids[:, :2])
    with pytest.raises(ValueError, match="answer= and distractor="):
        circuit_metric(gpt2, gpt2_ids, [], metric="logit_diff")
    with pytest.raises(ValueError, match="numerical"):
        circuit_metric(tasks["frac_prevs"], _ids(tasks["frac_prevs"], n=2), [], metric="kl")
    with pytest.raises(ValueError, match="fractions"):
        faithfulness_curve(task, Circuit.from_edges([("embed", "out", 1.0)]), ids, fractions=(0.5, 0.1))
    with pytest.raises(ValueError, match="not components"):
        circuit_metric(task, ids, [], sites=["embed", "L9.MLP"])


# --------------------------------------------------------------------------------------------------
# feature circuits (SAE features at their sites, error nodes kept)
# --------------------------------------------------------------------------------------------------


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


def test_feature_circuit_ablation_matches_hand_edits(gpt2, gpt2_ids):
    from circuitkit.faithfulness import feature_faithfulness
    from circuitkit.runtime import Record, Replace, Splice

    site = "L0.resid_post"
    sae = _TinySAE(32, 16, seed=2)
    keep = [0, 3, 7]
    nodes = [f"{site}/f{i}" for i in keep] + [f"{site}/err", "y"]
    ans, dis = gpt2_ids[:, 0], gpt2_ids[:, 1]
    kw = {"metric": "logit_diff", "answer": ans, "distractor": dis}
    rows = torch.arange(len(ans))

    def ld(logits):
        return float((logits[rows, -1, ans] - logits[rows, -1, dis]).double().mean())

    with torch.no_grad():
        full = gpt2(gpt2_ids).logits
        with hooked(gpt2, [Record(site)]) as st:
            gpt2(gpt2_ids)
            h = st.records[site].clone()
        drop = [i for i in range(16) if i not in keep]
        with hooked(gpt2, [Splice(site, sae=sae, ablate=drop, grad=False)]):
            zero_c = gpt2(gpt2_ids).logits  # the runtime's own feature ablation
        z = sae.encode(h)
        mean = z[:, 1:].mean((0, 1))  # positions after BOS
        h_mean = h - (z[..., drop] - mean[drop]) @ sae.W_dec[drop]
        with hooked(gpt2, [Replace(site, value=h_mean)]):
            mean_c = gpt2(gpt2_ids).logits
        h_empty = h - (z - mean) @ sae.W_dec  # every feature at its mean, the error kept
        with hooked(gpt2, [Replace(site, value=h_empty)]):
            mean_empty = gpt2(gpt2_ids).logits

    r0 = feature_faithfulness(gpt2, gpt2_ids, nodes, {site: sae}, ablation="zero", **kw)
    assert r0["m_full"] == pytest.approx(ld(full), abs=1e-6)
    assert r0["m_C"] == pytest.approx(ld(zero_c), abs=1e-5)
    assert r0["n_features"] == 3
    rm = feature_faithfulness(gpt2, gpt2_ids, nodes, {site: sae}, ablation="mean", **kw)
    assert rm["m_C"] == pytest.approx(ld(mean_c), abs=1e-5)
    assert rm["m_empty"] == pytest.approx(ld(mean_empty), abs=1e-5)
    every = feature_faithfulness(gpt2, gpt2_ids, [f"{site}/f{i}" for i in range(16)], {site: sae}, **kw)
    assert every["faithfulness"] == 1.0 and every["completeness"] == 0.0
    with pytest.raises(ValueError, match="without an SAE"):
        feature_faithfulness(gpt2, gpt2_ids, ["L1.resid_post/f0"], {site: sae}, **kw)
    with pytest.raises(ValueError, match="out of range"):
        feature_faithfulness(gpt2, gpt2_ids, [f"{site}/f99"], {site: sae}, **kw)
    with pytest.raises(ValueError, match="is a component"):
        feature_faithfulness(gpt2, gpt2_ids, ["L0.H1"], {site: sae}, **kw)
    with pytest.raises(ValueError, match=r"unknown feature ablation 'resample'.*'zero', 'mean'"):
        feature_faithfulness(gpt2, gpt2_ids, nodes, {site: sae}, ablation="resample", **kw)


def test_module_docstring_example_runs():
    import doctest

    import circuitkit.faithfulness as mod

    res = doctest.testmod(mod, verbose=False)
    assert res.attempted > 0 and res.failed == 0


def test_curve_of_discovery_methods_on_tracr(tasks):
    """Exact activation patching and EAP ranked by their scores recover the task: the full curve ends at f = 1,
    and their CPR beats the same circuits ranked backwards."""
    from circuitkit.baselines.eap import activation_patching, eap

    task = tasks["reverse"]
    ids = _ids(task, n=32, length=4)
    corrupt = _ids(task, n=32, length=4, seed=1)
    fr = (0.05, 0.1, 0.2, 0.5, 1.0)
    for method in (activation_patching, eap):
        circ = method(task, ids, corrupt)
        curve = faithfulness_curve(task, circ, ids, fractions=fr, ablation="resample", reference=corrupt)
        assert curve["faithfulness"].iloc[-1] == 1.0
        back = circ.edges.assign(score=-circ.edges["score"] + circ.edges["score"].max())
        worst = faithfulness_curve(task, Circuit(circ.nodes, back), ids, fractions=fr, ablation="resample",
                                   reference=corrupt)
        assert cpr(curve) > 0.9 and cpr(curve) > cpr(worst) + 0.2, (method.__name__, cpr(curve), cpr(worst))


def test_parallel_residual_and_node_level_curve():
    """GPT-NeoX with a parallel residual: a layer's heads are not candidates into its own MLP, and the empty
    circuit (every candidate ablated) runs; node-level curves hit f = 0 and 1 at their ends."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(GPTNeoXConfig(num_hidden_layers=2, num_attention_heads=4, hidden_size=32,
                                             intermediate_size=64, vocab_size=50, max_position_embeddings=32,
                                             use_parallel_residual=True)).eval()
    ids = torch.randint(1, 50, (4, 6), generator=torch.Generator().manual_seed(2))
    with pytest.raises(ValueError, match="not candidate edges"):
        circuit_metric(model, ids, [("L0.H0", "L0.MLP")])
    ok = [e for e in candidate_edges(_all_sites(model, ids))
          if not (e[0][:3] == e[1][:3] and ".H" in e[0] and e[1].endswith("MLP"))]
    circ = Circuit.from_edges([(u, v, float(i + 1)) for i, (u, v) in enumerate(ok)])
    for level in ("edge", "node"):
        curve = faithfulness_curve(model, circ, ids, fractions=(0.0, 0.3, 1.0), metric="kl", level=level)
        assert curve["faithfulness"].iloc[0] == 0.0 and curve["faithfulness"].iloc[-1] == pytest.approx(1.0)
        assert curve.attrs["m_full"] == pytest.approx(0.0, abs=1e-12) and curve.attrs["m_empty"] > 0
