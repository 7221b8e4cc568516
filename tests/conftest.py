"""Shared test setup: single-threaded torch/BLAS, offline hubs, and seeded RNGs in every test."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import random

import numpy as np
import pytest
import torch
from torch import Tensor

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


# -- a reference implementation to test the runtime's split forward against --------------------------
def _reference_component_outputs(model, ids, ablate=None):
    """Hand-written component forward of a Tracr model (the pre-runtime implementation, kept as an oracle).

    ``ablate[v][u] = r`` replaces, in the input of v only, the contribution of ``u`` by ``r`` (``None`` =
    zero). Returns ``{site: tensor}`` for ``embed``, every head and MLP, and ``out``.
    """
    ablate = ablate or {}
    outs: dict[str, Tensor] = {}
    outs["embed"] = model.embed(ids)

    def read(v: str, resid: Tensor) -> Tensor:
        if v not in ablate:
            return resid
        x = resid
        for u, r in ablate[v].items():
            if u not in outs:
                raise ValueError(f"cannot ablate {u!r} -> {v!r}: {u!r} is not earlier than {v!r}")
            x = x - outs[u] + (0.0 if r is None else r)
        return x

    resid = outs["embed"]
    for l, block in enumerate(model.layers):
        attn = block.attn
        heads = [f"L{l}.H{h}" for h in range(attn.n_heads)]
        if any(h in ablate for h in heads):
            per = torch.stack([attn.per_head(read(h, resid))[:, :, i] for i, h in enumerate(heads)], dim=2)
        else:
            per = attn.per_head(resid)
        for i, h in enumerate(heads):
            outs[h] = per[:, :, i]
        resid = resid + per.sum(dim=2) + attn.b_O
        name = f"L{l}.MLP"
        outs[name] = block.mlp(read(name, resid))
        resid = resid + outs[name]
    outs["out"] = model.unembed(read("out", resid))
    return outs


@pytest.fixture
def reference_component_outputs():
    return _reference_component_outputs
