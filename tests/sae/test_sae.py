"""SAE attachment and encoding agree with sae_lens; bad widths and hooks are refused."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sae_lens import SAE, StandardSAE, StandardSAEConfig
from sae_lens.saes.sae import SAEMetadata
from transformers import GPT2Config, GPT2LMHeadModel

import circuitkit as ck
from circuitkit.sae import hook_to_site, site_to_hook


def make_sae(d_in: int, d_sae: int, hook: str, seed: int = 0) -> StandardSAE:
    torch.manual_seed(seed)
    cfg = StandardSAEConfig(d_in=d_in, d_sae=d_sae, apply_b_dec_to_input=True,
                            metadata=SAEMetadata(hook_name=hook, model_name="stand-in"))
    sae = StandardSAE(cfg)
    with torch.no_grad():
        for p in sae.parameters():
            p.normal_(0, 0.3)
    return sae.eval()


@pytest.fixture(scope="module")
def acts():
    torch.manual_seed(0)
    m = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=4, n_embd=32, vocab_size=64, n_positions=32,
                                   bos_token_id=0, eos_token_id=0)).eval()
    ids = torch.randint(1, 64, (6, 8))
    return ck.capture(m, ids, sites=["embed", "L0.resid_post", "L1.resid_post"], progress=False, positions="all")


def test_hook_names_map_to_sites():
    assert hook_to_site("blocks.3.hook_resid_post") == "L3.resid_post"
    assert hook_to_site("blocks.0.hook_resid_pre") == "L0.resid_pre"
    assert hook_to_site("blocks.5.hook_mlp_out") == "L5.MLP"
    assert hook_to_site("blocks.2.hook_attn_out") == "L2.attn"
    assert site_to_hook("embed") == "blocks.0.hook_resid_pre"
    assert site_to_hook("L4.resid_post") == "blocks.4.hook_resid_post"
    with pytest.raises(ValueError, match="unsupported SAE hook 'blocks.1.attn.hook_q'.*supported hooks"):
        hook_to_site("blocks.1.attn.hook_q")


def test_encode_matches_sae_lens_and_keeps_errors(acts):
    sae = make_sae(32, 96, "blocks.1.hook_resid_post")
    feats = ck.encode(acts, [sae])  # attached by its hook name
    assert feats.sites == ["L1.resid_post"]
    codes = feats["L1.resid_post"]
    assert sp.isspmatrix_csr(codes) and codes.shape == (acts.n_rows, 96)
    with torch.no_grad():
        x = torch.as_tensor(acts["L1.resid_post"])
        ref = sae.encode(x).numpy()
        recon = sae.decode(sae.encode(x)).numpy()
    np.testing.assert_allclose(codes.toarray(), ref, atol=1e-6)
    np.testing.assert_allclose(feats.errors["L1.resid_post"], acts["L1.resid_post"] - recon, atol=1e-5)
    assert 0 < codes.nnz < codes.shape[0] * codes.shape[1]
    stats = feats.stats()
    assert stats.loc[0, "l0"] == pytest.approx(codes.nnz / codes.shape[0])


def test_saved_sae_roundtrips_through_load_sae(acts, tmp_path):
    sae = make_sae(32, 64, "blocks.0.hook_resid_post", seed=2)
    sae.save_model(str(tmp_path / "sae"))  # inference SAEs save with save_model
    loaded = ck.load_sae(tmp_path / "sae")
    a = ck.encode(acts, {"L0.resid_post": sae})["L0.resid_post"].toarray()
    b = ck.encode(acts, [loaded])["L0.resid_post"].toarray()
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert isinstance(loaded, SAE)


def test_width_mismatch_and_missing_site_are_refused(acts):
    with pytest.raises(ValueError, match="width mismatch.*d=32.*d_in=48"):
        ck.encode(acts, {"L1.resid_post": make_sae(48, 96, "blocks.1.hook_resid_post")})
    with pytest.raises(ValueError, match="not captured"):
        ck.encode(acts, {"L1.MLP": make_sae(32, 96, "blocks.1.hook_mlp_out")})
    with pytest.raises(ValueError, match="not an SAE directory"):
        ck.load_sae("/nonexistent/sae")


def test_nan_activations_are_refused(acts):
    bad = acts.subset(["L1.resid_post"])
    bad.data["L1.resid_post"] = bad["L1.resid_post"].copy()
    bad.data["L1.resid_post"][2, 3] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        ck.encode(bad, [make_sae(32, 96, "blocks.1.hook_resid_post")])


def test_encode_with_something_that_is_not_an_sae_says_so(acts):
    import torch

    with pytest.raises(TypeError, match=r"must be a sae_lens SAE .*got Linear; load one with circuitkit.load_sae"):
        ck.encode(acts, {acts.sites[0]: torch.nn.Linear(3, 3)})
    with pytest.raises(TypeError, match="got Linear"):
        ck.encode(acts, [torch.nn.Linear(3, 3)])
