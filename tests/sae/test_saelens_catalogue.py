"""sae_lens catalogue coverage, SAE attachment and encoding with the right preprocessing."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import transformers as tf
from sae_lens import StandardSAE, StandardSAEConfig
from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory
from sae_lens.saes.sae import SAEMetadata

import circuitkit as ck
from circuitkit import saelens_catalogue as cat
from circuitkit.models.archs import supported_model_types
from circuitkit.sites import parse_site

KNOWN_UNSUPPORTED_IN_SUPPORTED_FAMILIES = ("hook_z", "hook_resid_mid", "transcoder", "temporal SAE")


@pytest.fixture(scope="module")
def table():
    return cat.catalogue_table()


def test_every_catalogue_entry_is_accounted_for(table):
    directory = get_pretrained_saes_directory()
    total = sum(len(v.saes_map) for v in directory.values())
    assert len(table) == total
    assert set(table["release"]) == set(directory)
    assert not table.duplicated(["release", "sae_id"]).any()
    sup = table[table["supported"]]
    uns = table[~table["supported"]]
    assert len(sup) + len(uns) == total and len(sup) > 1000
    for site in sup["site"].unique():
        parse_site(site)  # a valid circuitkit site
    assert uns["site"].isna().all() and (uns["reason"].str.len() > 0).all()
    assert (sup["reason"] == "").all()
    # in the supported families, only known kinds of SAE are unsupported (no "cannot derive" leftovers)
    fam = uns[uns["model_type"].isin(supported_model_types())]
    ok = fam["reason"].apply(lambda r: r.startswith(KNOWN_UNSUPPORTED_IN_SUPPORTED_FAMILIES))
    assert ok.all(), fam[~ok][["release", "sae_id", "reason"]].head().to_dict("records")
    # every catalogue model is recognised (an unknown family would say so)
    assert table["model_type"].notna().all()
    summary = cat.summarize(table)
    assert summary.total == total and summary.supported == len(sup)
    assert sum(summary.by_reason.values()) == summary.unsupported


@pytest.mark.parametrize(
    "release, sae_id, site",
    [
        ("gpt2-small-res-jb", "blocks.8.hook_resid_pre", "L8.resid_pre"),
        ("gpt2-small-res-jb", "blocks.11.hook_resid_post", "L11.resid_post"),
        ("gpt2-small-res-jb-feature-splitting", "blocks.8.hook_resid_pre_24576", "L8.resid_pre"),
        ("gpt2-small-resid-post-v5-32k", "blocks.3.hook_resid_post", "L3.resid_post"),
        ("gpt2-small-attn-out-v5-32k", "blocks.3.hook_attn_out", "L3.attn"),
        ("pythia-70m-deduped-res-sm", "blocks.0.hook_resid_pre", "L0.resid_pre"),
        ("pythia-70m-deduped-att-sm", "blocks.2.hook_attn_out", "L2.attn"),
        ("pythia-70m-deduped-mlp-sm", "blocks.5.hook_mlp_out", "L5.MLP"),
        ("gemma-scope-2b-pt-res-canonical", "layer_12/width_16k/canonical", "L12.resid_post"),
        ("gemma-scope-2b-pt-mlp-canonical", "layer_3/width_16k/canonical", "L3.MLP"),
        ("gemma-scope-2b-pt-res", "embedding/width_4k/average_l0_6", "embed"),
        ("llama_scope_lxa_8x", "l5a_8x", "L5.attn"),
        ("llama_scope_lxr_32x", "l31r_32x", "L31.resid_post"),
        ("sae_bench_pythia70m_sweep_topk_ctx128_0730", "blocks.3.hook_resid_post__trainer_0", "L3.resid_post"),
        ("qwen2.5-7b-instruct-andyrdt", "resid_post_layer_3_trainer_1", "L3.resid_post"),
        ("gemma-scope-2-1b-pt-res", "layer_13_width_16k_l0_big", "L13.resid_post"),
    ],
)
def test_known_entries_map_to_the_right_site(table, release, sae_id, site):
    row = table[(table["release"] == release) & (table["sae_id"] == sae_id)].iloc[0]
    assert row["supported"] and row["site"] == site


@pytest.mark.parametrize(
    "release, sae_id, reason",
    [
        ("gemma-scope-2b-pt-att-canonical", "layer_0/width_16k/canonical", "hook_z"),
        ("gpt2-small-hook-z-kk", "blocks.0.hook_z", "hook_z"),
        ("gpt2-small-resid-mid-v5-32k", "blocks.0.hook_resid_mid", "hook_resid_mid"),
        ("gemma-scope-2b-pt-transcoders", "layer_0/width_16k/average_l0_76", "transcoder"),
        ("gemma-scope-2-4b-pt-res", "layer_17_width_16k_l0_big", "multimodal Gemma-3"),
    ],
)
def test_unsupported_entries_say_why(table, release, sae_id, reason):
    row = table[(table["release"] == release) & (table["sae_id"] == sae_id)].iloc[0]
    assert not row["supported"] and reason in row["reason"]


def test_preprocessing_column_flags_centred_gpt2_saes(table):
    jb = table[table["release"] == "gpt2-small-res-jb"]
    assert jb["preprocessing"].str.contains("center_d_model").all()
    oai = table[table["release"] == "gpt2-small-resid-post-v5-32k"]
    assert not oai["preprocessing"].str.contains("center_d_model").any()


# -- attaching and encoding ----------------------------------------------------------------------------------

D = 32


@pytest.fixture(scope="module")
def gpt2():
    torch.manual_seed(0)
    cfg = tf.GPT2Config(vocab_size=40, n_embd=D, n_layer=2, n_head=4, n_positions=32, initializer_range=0.3,
                        bos_token_id=0, eos_token_id=0)
    model = tf.GPT2LMHeadModel(cfg).eval()
    ids = torch.randint(1, 40, (6, 9), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        hs = model(ids, output_hidden_states=True).hidden_states
    lm = ck.load_model(model)
    acts = ck.capture(lm, ids, sites=["L1.resid_pre", "L1.resid_post", "L0.MLP"], progress=False, positions="all")
    return lm, acts, hs


def _sae(hook: str, *, d_in: int = D, normalize: str = "none", b_dec_in: bool = True, seed: int = 0):
    torch.manual_seed(seed)
    cfg = StandardSAEConfig(d_in=d_in, d_sae=96, normalize_activations=normalize, apply_b_dec_to_input=b_dec_in,
                            metadata=SAEMetadata(hook_name=hook))
    sae = StandardSAE(cfg).eval()
    with torch.no_grad():
        sae.b_dec.normal_(0, 0.5)
        sae.b_enc.normal_(0, 0.1)
    return sae


def test_layer_norm_sae_attaches_by_hook_and_encodes_like_sae_lens(gpt2):
    _, acts, hs = gpt2
    sae = _sae("blocks.1.hook_resid_pre", normalize="layer_norm", b_dec_in=True)
    feats = ck.encode(acts, [sae])  # attached through its release-style hook name
    assert feats.sites == ["L1.resid_pre"]
    x = hs[1].reshape(-1, D)  # HF's hidden state entering block 1: what the SAE should read
    with torch.no_grad():
        ref = sae.encode(x).numpy()
        wrong = sae.encode(hs[2].reshape(-1, D)).numpy()
    np.testing.assert_allclose(feats["L1.resid_pre"].toarray(), ref, rtol=1e-5, atol=1e-6)
    assert np.abs(ref).sum() > 0 and not np.allclose(ref, wrong)
    # b_dec is subtracted from the input: the same SAE without it gives different codes
    no_bdec = copy.deepcopy(sae)
    no_bdec.cfg.apply_b_dec_to_input = False
    with torch.no_grad():
        assert not np.allclose(no_bdec.encode(x).numpy(), ref)


def test_expected_average_only_in_is_folded_or_refused(gpt2):
    lm, acts, hs = gpt2
    sae = _sae("blocks.1.hook_resid_pre", normalize="expected_average_only_in")
    reference = copy.deepcopy(sae)
    with pytest.raises(ValueError, match="norm_scaling_factor"):
        cat.attach_sae(copy.deepcopy(sae), model=lm)
    factor = cat.estimate_norm_scaling_factor(acts, "L1.resid_pre")
    x = torch.as_tensor(acts["L1.resid_pre"])
    np.testing.assert_allclose(float((x * factor).norm(dim=-1).mean()), D**0.5, rtol=1e-4)
    attached = cat.attach_sae(sae, norm_scaling_factor=factor, model=lm)
    assert attached.site == "L1.resid_pre" and not attached.center
    feats = ck.encode(acts, {attached.site: attached})
    with torch.no_grad():
        ref = reference.encode(hs[1].reshape(-1, D) * factor).numpy()  # trained on scaled inputs
    np.testing.assert_allclose(feats["L1.resid_pre"].toarray(), ref, rtol=1e-4, atol=1e-5)


def test_release_sae_with_centred_writing_weights(gpt2, monkeypatch):
    """gpt2-small-res-jb was trained with centred writing weights: circuitkit must feed x - mean_d(x)."""
    lm, acts, hs = gpt2
    from sae_lens import SAE

    sae = _sae("blocks.1.hook_resid_pre")
    sae.cfg.metadata.model_from_pretrained_kwargs = {"center_writing_weights": True}
    calls = []

    def fake_from_pretrained(release, sae_id, **kwargs):
        calls.append((release, sae_id, kwargs))
        return sae

    monkeypatch.setattr(SAE, "from_pretrained", staticmethod(fake_from_pretrained))
    attached = cat.load_release_sae("gpt2-small-res-jb", "blocks.1.hook_resid_pre", model=lm, dtype="float32")
    assert calls == [("gpt2-small-res-jb", "blocks.1.hook_resid_pre", {"device": "cpu", "dtype": "float32"})]
    assert attached.site == "L1.resid_pre" and attached.center
    # the one loader: ck.load_sae(release, id) applies the same release preprocessing
    via_front_door = ck.load_sae("gpt2-small-res-jb", "blocks.1.hook_resid_pre", model=lm)
    assert type(via_front_door) is type(attached) and via_front_door.site == attached.site and via_front_door.center
    feats = ck.encode(acts, {attached.site: attached})
    x = hs[1].reshape(-1, D)
    xc = x - x.mean(-1, keepdim=True)
    with torch.no_grad():
        ref = sae.encode(xc).numpy()
        raw = sae.encode(x).numpy()
        err = (xc - sae.decode(sae.encode(xc))).numpy()
    np.testing.assert_allclose(feats["L1.resid_pre"].toarray(), ref, rtol=1e-5, atol=1e-6)
    assert not np.allclose(raw, ref)  # the raw residual would give other codes
    np.testing.assert_allclose(feats.errors["L1.resid_pre"], err, rtol=1e-4, atol=1e-5)


def test_width_mismatch_unknown_hook_and_unsupported_entry_are_clear_errors(gpt2, monkeypatch):
    lm, acts, _ = gpt2
    from sae_lens import SAE

    wide = _sae("blocks.1.hook_resid_pre", d_in=D * 2)
    monkeypatch.setattr(SAE, "from_pretrained", staticmethod(lambda *a, **k: wide))
    with pytest.raises(ValueError, match="width mismatch"):
        cat.load_release_sae("gpt2-small-res-jb", "blocks.1.hook_resid_pre", model=lm)
    with pytest.raises(ValueError, match="width mismatch"):
        ck.encode(acts, [wide])
    with pytest.raises(ValueError, match="layer 5"):
        cat.attach_sae(_sae("blocks.5.hook_resid_pre"), model=lm)
    with pytest.raises(ValueError, match="hook_q|unsupported SAE hook"):
        cat.attach_sae(_sae("blocks.1.attn.hook_q"))

    def boom(*a, **k):  # unsupported entries fail before any download
        raise AssertionError("from_pretrained must not be called")

    monkeypatch.setattr(SAE, "from_pretrained", staticmethod(boom))
    with pytest.raises(ValueError, match="hook_z"):
        cat.load_release_sae("gpt2-small-hook-z-kk", "blocks.0.hook_z")
    with pytest.raises(ValueError, match="unknown sae_id"):
        cat.load_release_sae("gpt2-small-res-jb", "blocks.99.hook_resid_pre")
    with pytest.raises(ValueError, match="unknown sae_lens release"):
        cat.load_release_sae("gpt2-small-res-nope", "blocks.1.hook_resid_pre")


def test_hook_embed_maps_to_embed_only_without_learned_positions():
    assert cat.site_for_hook("hook_embed", "gemma2") == ("embed", None)
    site, reason = cat.site_for_hook("hook_embed", "gpt2")
    assert site is None and "position" in reason
