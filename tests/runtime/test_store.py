"""Streaming capture: the on-disk store equals in-memory capture/encode, resumes after an interruption,
and refuses a stale cache with a message naming what differs."""

import json

import numpy as np
import pytest
import torch
from sae_lens import StandardSAE, StandardSAEConfig
from sae_lens.saes.sae import SAEMetadata
from transformers import GPT2Config, GPT2LMHeadModel

import circuitkit as ck
from circuitkit.store import capture_to_disk, load_store

SITES = ["embed", "L0.resid_post", "L1.resid_post"]


def make_sae(hook: str, seed: int, d_in: int = 32, d_sae: int = 64) -> StandardSAE:
    torch.manual_seed(seed)
    cfg = StandardSAEConfig(d_in=d_in, d_sae=d_sae, apply_b_dec_to_input=True,
                            metadata=SAEMetadata(hook_name=hook, model_name="stand-in"))
    sae = StandardSAE(cfg)
    with torch.no_grad():
        for p in sae.parameters():
            p.normal_(0, 0.3)
    return sae.eval()


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=4, n_embd=32, vocab_size=50, n_positions=32,
                                      bos_token_id=0, eos_token_id=0)).eval()


@pytest.fixture(scope="module")
def prompts():
    g = torch.Generator().manual_seed(1)
    return torch.randint(1, 50, (22, 7), generator=g)


@pytest.fixture(scope="module")
def saes():
    return {"L0.resid_post": make_sae("blocks.0.hook_resid_post", 1),
            "L1.resid_post": make_sae("blocks.1.hook_resid_post", 2)}


def test_streamed_store_equals_in_memory_capture_and_encode(model, prompts, saes, tmp_path):
    store = capture_to_disk(model, prompts, sites=SITES, saes=saes, path=tmp_path / "s", chunk_size=5,
                            batch_size=4, progress=False, positions="all")
    assert store.complete and len(store.manifest["chunks"]) == 5  # 22 prompts in chunks of 5
    ref = ck.capture(model, prompts, sites=SITES, batch_size=4, progress=False, positions="all")
    ref_f = ck.encode(ref, saes)

    loaded = load_store(tmp_path / "s")
    acts = loaded.activations()
    assert acts.sites == ["embed"]  # SAE sites keep codes + errors only (keep_activations=False)
    np.testing.assert_allclose(acts["embed"], ref["embed"], atol=1e-6)
    pd_cols = ["prompt", "position", "token"]
    assert acts.index[pd_cols].equals(ref.index[pd_cols])
    assert acts.meta["input_hash"] == ref.meta["input_hash"] and acts.meta["model"] == ref.meta["model"]

    feats = loaded.features()
    assert feats.sites == ref_f.sites and feats.n_rows == ref_f.n_rows == 22 * 7
    for s in ref_f.sites:
        np.testing.assert_allclose(feats[s].toarray(), ref_f[s].toarray(), atol=1e-5)
        np.testing.assert_allclose(feats.errors[s], ref_f.errors[s], atol=1e-5)
        assert feats.meta["fvu"][s] == pytest.approx(ref_f.meta["fvu"][s], rel=1e-4)
    assert feats.meta["sae_ids"] == ref_f.meta["sae_ids"]

    # chunk-by-chunk access covers the same rows
    rows = sum(f.n_rows for _, f in loaded.iter_chunks(what="features"))
    assert rows == feats.n_rows


def test_keep_activations_and_positions_rule(model, prompts, saes, tmp_path):
    store = capture_to_disk(model, prompts, sites=SITES, saes=saes, path=tmp_path / "k", chunk_size=8,
                            positions="last", keep_activations=True, progress=False)
    ref = ck.capture(model, prompts, sites=SITES, positions="last", progress=False)
    acts = store.activations()
    assert acts.sites == SITES
    for s in SITES:
        np.testing.assert_allclose(acts[s], ref[s], atol=1e-6)
    assert (acts.index["position"] == 6).all() and acts.meta["input_hash"] == ref.meta["input_hash"]


def test_interrupted_capture_resumes_to_the_same_result(model, prompts, saes, tmp_path):
    full = capture_to_disk(model, prompts, sites=SITES, saes=saes, path=tmp_path / "full", chunk_size=5,
                           progress=False, positions="all").features()

    class Interrupt(Exception):
        pass

    def stop_after_two(i, n):
        if i == 1:
            raise Interrupt

    path = tmp_path / "resume"
    with pytest.raises(Interrupt):
        capture_to_disk(model, prompts, sites=SITES, saes=saes, path=path, chunk_size=5, progress=False,
                        on_chunk=stop_after_two, positions="all")
    partial = load_store(path)
    assert not partial.complete and len(partial.manifest["chunks"]) == 2
    with pytest.raises(ValueError, match="incomplete.*2 of 5 chunks"):
        partial.features()
    # a chunk half-written when the process died is redone, never read
    (path / "chunk-00002.partial").mkdir()
    (path / "chunk-00002.partial" / "index.npz").write_bytes(b"garbage")

    seen = []
    resumed = capture_to_disk(model, prompts, sites=SITES, saes=saes, path=path, chunk_size=5, progress=False,
                              on_chunk=lambda i, n: seen.append(i), positions="all")
    assert seen == [2, 3, 4]  # the two committed chunks are skipped
    assert not (path / "chunk-00002.partial").exists()
    got = resumed.features()
    for s in full.sites:
        np.testing.assert_array_equal(got[s].toarray(), full[s].toarray())
        np.testing.assert_array_equal(got.errors[s], full.errors[s])

    # a committed chunk deleted from disk is redone too
    import shutil

    shutil.rmtree(path / "chunk-00004")
    seen.clear()
    again = capture_to_disk(model, prompts, sites=SITES, saes=saes, path=path, chunk_size=5, progress=False,
                            on_chunk=lambda i, n: seen.append(i), positions="all")
    assert seen == [4]
    np.testing.assert_array_equal(again.features()["L1.resid_post"].toarray(), full["L1.resid_post"].toarray())


def test_stale_store_is_refused_naming_what_differs(model, prompts, saes, tmp_path):
    path = tmp_path / "stale"
    capture_to_disk(model, prompts, sites=SITES, saes=saes, path=path, chunk_size=8, progress=False, positions="all")
    other_inputs = prompts.clone()
    other_inputs[0, 0] = (other_inputs[0, 0] % 49) + 1
    with pytest.raises(ValueError, match=r"stale store .* input_hash: stored '[0-9a-f]+', requested '[0-9a-f]+'"):
        capture_to_disk(model, other_inputs, sites=SITES, saes=saes, path=path, chunk_size=8, progress=False, positions="all")
    other_saes = dict(saes)
    other_saes["L1.resid_post"] = make_sae("blocks.1.hook_resid_post", 99)
    with pytest.raises(ValueError, match=r"stale store .*saes: stored .*fingerprint") as e:
        capture_to_disk(model, prompts, sites=SITES, saes=other_saes, path=path, chunk_size=8, progress=False, positions="all")
    assert "input_hash" not in str(e.value)  # only what differs is named
    with pytest.raises(ValueError, match="positions: stored 'all', requested 'last'"):
        capture_to_disk(model, prompts, sites=SITES, saes=saes, path=path, chunk_size=8, positions="last",
                        progress=False)
    # the refused calls left the store untouched; overwrite=True replaces it
    assert json.loads((path / "manifest.json").read_text())["positions"] == "all"
    store = capture_to_disk(model, prompts, sites=SITES, saes=saes, path=path, chunk_size=8, positions="last",
                            overwrite=True, progress=False)
    assert store.complete and store.n_rows == len(prompts)


def test_bad_arguments_are_refused(model, prompts, tmp_path):
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        capture_to_disk(model, prompts, sites=SITES, path=tmp_path / "x", chunk_size=0, positions="all")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file.txt").write_text("x")
    with pytest.raises(ValueError, match="not empty and is not a circuitkit store"):
        capture_to_disk(model, prompts, sites=SITES, path=tmp_path / "junk", progress=False, positions="all")
    with pytest.raises(ValueError, match="not a circuitkit store"):
        load_store(tmp_path / "nowhere")
    store = capture_to_disk(model, prompts, sites=SITES, path=tmp_path / "nosae", chunk_size=50, progress=False, positions="all")
    with pytest.raises(ValueError, match="written without SAEs"):
        store.features()


def _per_item_size(v) -> int:
    """How many per-prompt/per-row entries a local could hold (0 for scalars and objects)."""
    if isinstance(v, (list, tuple, dict, set)):
        return len(v)
    if isinstance(v, np.ndarray):
        return v.shape[0] if v.ndim else 0
    if isinstance(v, torch.Tensor):
        return v.shape[0] if v.ndim else 0
    return 0


def test_streaming_writer_holds_no_per_prompt_objects(model, saes, tmp_path):
    """Structural: while chunks are written, no local of the store writer (other than the caller's inputs)
    holds an entry per prompt -- token ids and strings, lengths and the row index live on disk."""
    import sys

    import circuitkit.runtime.store as store_module

    g = torch.Generator().manual_seed(3)
    n = 120
    prompts = [list(map(int, r)) for r in torch.randint(1, 50, (n, 7), generator=g)]
    biggest: dict[str, int] = {}

    def inspect(i, n_chunks):
        f = sys._getframe(1)
        while f is not None:
            if f.f_code.co_filename == store_module.__file__:
                for name, v in f.f_locals.items():
                    if name != "inputs":
                        biggest[f"{f.f_code.co_name}.{name}"] = max(biggest.get(f"{f.f_code.co_name}.{name}", 0),
                                                                     _per_item_size(v))
            f = f.f_back

    store = capture_to_disk(model, prompts, sites=SITES, saes=saes, path=tmp_path / "s", chunk_size=10,
                            batch_size=10, progress=False, on_chunk=inspect, positions="all")
    assert any(k.startswith("capture_to_disk.") for k in biggest)  # the writer's frames were seen
    # per-chunk objects: 10 prompts x 7 tokens = 70 rows; the manifest's chunk list has one entry per chunk (12)
    too_big = {k: v for k, v in biggest.items() if v >= n}
    assert not too_big, f"writer locals that grow with the dataset: {too_big}"
    assert store.complete and store.n_rows == n * 7
    assert not list(tmp_path.glob(".s.tokens-*")), "the tokenization scratch directory was not removed"
    ref = ck.capture(model, prompts, sites=SITES, progress=False, positions="all")
    assert store.manifest["input_hash"] == ref.meta["input_hash"]
    assert store.features().index.equals(ref.index)


def test_streaming_capture_python_memory_does_not_grow_with_the_dataset(model, saes, tmp_path):
    """Peak Python-allocated memory (tracemalloc: Python objects and numpy arrays) of capture_to_disk at 16x
    the prompts with the same chunk size. Holding token ids and strings for every prompt, as the version-1
    writer did, costs ~2.4 MB more here (measured); the streaming writer grows only by the manifest's
    per-chunk entries."""
    import gc
    import tracemalloc

    g = torch.Generator().manual_seed(4)
    big = [list(map(int, r)) for r in torch.randint(1, 50, (3200, 7), generator=g)]

    def peak(n: int, k: int) -> int:
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        capture_to_disk(model, big[:n], sites=SITES, saes=saes, path=tmp_path / f"m{n}-{k}", chunk_size=50,
                        batch_size=50, progress=False, positions="all")
        out = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
        return out

    peak(100, -1)  # warm-up (lazy imports and caches)
    # min of two: a one-off allocation of a few MB by a library shows up in one call per process
    small = min(peak(200, k) for k in range(2))
    large = min(peak(3200, k) for k in range(2))
    assert large - small < 750_000, f"peak grew by {(large - small) / 1e6:.2f} MB for 16x the prompts"


def test_version_1_store_is_read_and_not_resumed(model, prompts, saes, tmp_path):
    path = tmp_path / "v1"
    store = capture_to_disk(model, prompts, sites=SITES, saes=saes, path=path, chunk_size=8, progress=False, positions="all")
    want = store.features()
    # rewrite it as version 1 wrote it: one top-level tokens.json, none per chunk
    toks = []
    for c in store.manifest["chunks"]:
        toks.extend(json.loads((path / c["dir"] / "tokens.json").read_text()))
        (path / c["dir"] / "tokens.json").unlink()
    (path / "tokens.json").write_text(json.dumps(toks))
    m = json.loads((path / "manifest.json").read_text())
    m["version"] = 1
    (path / "manifest.json").write_text(json.dumps(m))
    got = load_store(path).features()
    assert got.index.equals(want.index) and got.tokens == want.tokens
    np.testing.assert_array_equal(got["L1.resid_post"].toarray(), want["L1.resid_post"].toarray())
    chunk_toks = [f.tokens for _, f in load_store(path).iter_chunks(what="features")]
    assert chunk_toks[0][:8] == want.tokens[:8] and chunk_toks[0][8] == ()
    with pytest.raises(ValueError, match="stale store .*version: stored 1, requested 2"):
        capture_to_disk(model, prompts, sites=SITES, saes=saes, path=path, chunk_size=8, progress=False, positions="all")


def test_a_weight_edit_anywhere_invalidates_the_store(prompts, saes, tmp_path):
    """The model fingerprint hashes every value: editing the *last* entry of the last weight is seen."""
    import copy

    torch.manual_seed(0)
    m = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=4, n_embd=32, vocab_size=50, n_positions=32,
                                   bos_token_id=0, eos_token_id=0)).eval()
    path = tmp_path / "fp"
    capture_to_disk(m, prompts, sites=SITES, saes=saes, path=path, chunk_size=11, progress=False, positions="all")
    edited = copy.deepcopy(m)
    with torch.no_grad():
        w = edited.transformer.h[1].mlp.c_proj.weight
        w.view(-1)[-1] += 1.0
    with pytest.raises(ValueError, match="stale store .*fingerprint"):
        capture_to_disk(edited, prompts, sites=SITES, saes=saes, path=path, chunk_size=11, progress=False, positions="all")


def test_a_killed_capture_leaves_no_scratch_directory(model, prompts, saes, tmp_path):
    """A capture killed mid-way (SIGKILL: no cleanup runs) leaves its token scratch directory behind; the
    next call on the same path removes it, resumes, and leaves nothing but the store."""
    import os
    import signal
    import subprocess
    import sys
    import time

    path = tmp_path / "killed"
    code = (  # the same model, SAEs and prompts as the fixtures, rebuilt from their seeds in a child process
        "import torch, time\n"
        "from transformers import GPT2Config, GPT2LMHeadModel\n"
        "from sae_lens import StandardSAE, StandardSAEConfig\n"
        "from sae_lens.saes.sae import SAEMetadata\n"
        "import circuitkit.runtime.store as st\n"
        "def make_sae(hook, seed):\n"
        "    torch.manual_seed(seed)\n"
        "    cfg = StandardSAEConfig(d_in=32, d_sae=64, apply_b_dec_to_input=True,\n"
        "                            metadata=SAEMetadata(hook_name=hook, model_name='stand-in'))\n"
        "    sae = StandardSAE(cfg)\n"
        "    with torch.no_grad():\n"
        "        [p.normal_(0, 0.3) for p in sae.parameters()]\n"
        "    return sae.eval()\n"
        "torch.manual_seed(0)\n"
        "m = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=4, n_embd=32, vocab_size=50, n_positions=32,\n"
        "                               bos_token_id=0, eos_token_id=0)).eval()\n"
        "s = {'L0.resid_post': make_sae('blocks.0.hook_resid_post', 1), "
        "'L1.resid_post': make_sae('blocks.1.hook_resid_post', 2)}\n"
        "p = torch.randint(1, 50, (22, 7), generator=torch.Generator().manual_seed(1))\n"
        "st.capture_to_disk(m, p, sites=" + repr(SITES) + ", saes=s, path=" + repr(str(path)) +
        ", chunk_size=2, progress=False, positions='all', on_chunk=lambda i, n: time.sleep(60) if i == 2 else None)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob(".killed.tokens-*")):
        time.sleep(0.2)
    while time.time() < deadline and not (path / "manifest.json").exists():
        time.sleep(0.2)
    time.sleep(1.0)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(tmp_path.glob(".killed.tokens-*")), "the killed capture should have left its scratch directory"
    store = capture_to_disk(model, prompts, sites=SITES, saes=saes, path=path, chunk_size=2, progress=False, positions="all")
    assert int(store.manifest["n_prompts"]) == len(prompts)
    assert not list(tmp_path.glob(".killed.tokens-*"))
    ref = ck.capture(model, prompts, sites=SITES, progress=False, positions="all")
    np.testing.assert_allclose(load_store(path).activations()["embed"], ref["embed"], atol=1e-6)
