"""Capture (`circuitkit.capture`): one nnsight trace per batch records every requested site.

This is the one module that talks to nnsight. :func:`load_model` wraps a model (an HF hub name, a local
directory, the embedded ``"toylm"``, or any supported torch module such as a Tracr model) and
:func:`capture` runs it over inputs and returns :class:`~circuitkit.activations.Activations`.

Positions (``positions=``):

* ``"all"``  every real (non-padding) token of every prompt, one row each;
* ``"last"`` the last real token of each prompt;
* an ``int`` or a list of ints: those positions (negative counts from the last real token);
* a callable ``f(prompt_index, tokens) -> list[int]``.

With ``aggregate="mean" | "sum" | "max"`` the selected positions of a prompt are pooled into one row.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Sequence, Union

import numpy as np
import pandas as pd
import torch
from jaxtyping import Int
from torch import Tensor
from tqdm.auto import tqdm

from .activations import Activations, hash_inputs
from .models.adapters import Adapter, get_adapter, unwrap_output
from .sites import validate_sites

logger = logging.getLogger(__name__)

PositionSpec = Union[Literal["all", "last"], int, Sequence[int], Callable[[int, list[str]], list[int]]]
AGGREGATES = (None, "mean", "sum", "max")


@dataclass
class LoadedModel:
    """A model ready for capture: the nnsight wrapper, the torch module, its adapter and tokenizer."""

    envoy: Any
    module: torch.nn.Module
    adapter: Adapter
    tokenizer: Any | None
    name: str
    remote: bool = False

    @property
    def sites(self) -> list[str]:
        return self.adapter.sites

    @property
    def n_layers(self) -> int:
        return self.adapter.n_layers

    @property
    def n_heads(self) -> int:
        return self.adapter.n_heads

    def __repr__(self) -> str:
        return (
            f"LoadedModel({self.name!r}, arch={self.adapter.spec.name}, layers={self.n_layers}, "
            f"heads={self.n_heads}, remote={self.remote})"
        )


def load_model(
    model: Any,
    *,
    tokenizer: Any | None = None,
    dtype: torch.dtype | str | None = None,
    device: str | None = None,
    device_map: str | dict | None = None,
    remote: bool = False,
    name: str | None = None,
) -> LoadedModel:
    """Wrap ``model`` for capture.

    ``model`` may be:

    * ``"toylm"``: the embedded toy LM in ``data/toylm`` (offline);
    * a local directory or an HF hub name (e.g. ``"gpt2"``, ``"EleutherAI/pythia-70m"``): loaded with
      nnsight's ``TransformersModel`` (the default path for users with internet);
    * a ``torch.nn.Module`` (an HF ``PreTrainedModel`` or a :class:`~circuitkit.models.tracr.TracrTransformer`);
    * a :class:`LoadedModel` (returned unchanged).

    ``remote=True`` runs traces on NDIF (needs an NDIF API key; see nnsight's docs). ``dtype`` (e.g.
    ``torch.bfloat16``) and ``device_map`` (e.g. ``"auto"``) are passed to ``from_pretrained``.
    """
    if isinstance(model, LoadedModel):
        return model
    from nnsight import NNsight

    if isinstance(dtype, str):
        try:
            dtype = getattr(torch, dtype)
        except AttributeError:
            raise ValueError(f"unknown dtype {dtype!r}; use e.g. 'float32', 'bfloat16', 'float16'") from None
    if isinstance(model, str):
        from nnsight.modeling.transformers import TransformersModel

        if model == "toylm":
            from .models.toylm import TOYLM_DIR

            model_path = str(TOYLM_DIR)
            name = name or "circuitkit-toylm"
        elif model == "smollm2-135m":
            from .models.smollm2 import smollm2_dir  # the offline real model (cached from its GGUF wheel)

            model_path = str(smollm2_dir())
            name = name or "smollm2-135m"
        else:
            model_path = model
        kwargs: dict[str, Any] = {"task": "text-generation", "dispatch": not remote}
        if dtype is not None:
            kwargs["dtype"] = dtype
        if device_map is not None:
            kwargs["device_map"] = device_map
        if tokenizer is not None:
            kwargs["tokenizer"] = tokenizer
        if Path(model_path).is_dir() or model == "toylm":
            if not (Path(model_path) / "config.json").is_file():
                raise ValueError(f"{model_path} is not a model directory (no config.json)")
        envoy = TransformersModel(model_path, **kwargs)
        module = envoy._module
        module.eval()
        if device is not None and not remote:
            module.to(device)
        tok = envoy.tokenizer if tokenizer is None else tokenizer
        return LoadedModel(envoy, module, get_adapter(module), tok, name or model, remote)
    if isinstance(model, torch.nn.Module):
        module = model.eval()
        if dtype is not None:
            module = module.to(dtype)
        if device is not None:
            module = module.to(device)
        adapter = get_adapter(module)
        cfg = getattr(module, "config", None)
        label = name or getattr(cfg, "_name_or_path", None) or getattr(module, "name", None) or type(module).__name__
        return LoadedModel(NNsight(module), module, adapter, tokenizer, str(label), remote=False)
    if hasattr(model, "_module") and isinstance(getattr(model, "_module"), torch.nn.Module):
        module = model._module
        return LoadedModel(model, module, get_adapter(module), tokenizer or getattr(model, "tokenizer", None),
                           name or type(module).__name__, remote)
    raise ValueError(
        f"cannot load a model from {type(model).__name__}; pass 'toylm', a hub name, a local directory, "
        "a torch.nn.Module or an nnsight model"
    )


# -- input handling -------------------------------------------------------------------------------------


@dataclass
class _Batch:
    prompt_ids: list[int]
    input_ids: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"] | None
    lengths: list[int]


def _tokenize(lm: LoadedModel, inputs: Any) -> tuple[list[list[int]], list[list[str]]]:
    """Turn inputs into token-id lists (no padding) and token strings."""
    if isinstance(inputs, torch.Tensor):
        if inputs.ndim != 2:
            raise ValueError(f"token-id tensors must be [batch, pos]; got shape {tuple(inputs.shape)}")
        ids = [row.tolist() for row in inputs]
    elif isinstance(inputs, (list, tuple)) and inputs and all(isinstance(x, str) for x in inputs):
        if lm.tokenizer is None:
            raise ValueError("string prompts need a tokenizer; pass tokenizer= to load_model or give token ids")
        ids = [lm.tokenizer(x)["input_ids"] for x in inputs]
    elif isinstance(inputs, (list, tuple)) and inputs and all(isinstance(x, (list, tuple)) for x in inputs):
        ids = [list(map(int, x)) for x in inputs]
    else:
        if isinstance(inputs, (list, tuple)) and not inputs:
            raise ValueError("empty inputs: pass at least one prompt")
        raise ValueError(
            f"inputs must be a list of strings, a list of token-id lists or a [batch, pos] tensor; "
            f"got {type(inputs).__name__}"
        )
    if not ids:
        raise ValueError("empty inputs: pass at least one prompt")
    for i, row in enumerate(ids):
        if len(row) == 0:
            raise ValueError(f"prompt {i} is empty after tokenization")
    if lm.tokenizer is not None:
        toks = [lm.tokenizer.convert_ids_to_tokens(row) for row in ids]
    else:
        vocab = getattr(lm.module, "id_to_token", None)
        toks = [[str(vocab(t)) if callable(vocab) else str(t) for t in row] for row in ids]
    return ids, toks


def _batches(lm: LoadedModel, ids: list[list[int]], batch_size: int) -> list[_Batch]:
    """Right-padded batches when the model has a pad token; otherwise batches of equal length."""
    pad_id = None
    if lm.tokenizer is not None:
        pad_id = lm.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = lm.tokenizer.eos_token_id
    order = list(range(len(ids)))
    groups: list[list[int]] = []
    if pad_id is None:
        by_len: dict[int, list[int]] = {}
        for i in order:
            by_len.setdefault(len(ids[i]), []).append(i)
        for _, members in sorted(by_len.items()):
            groups.extend(members[k : k + batch_size] for k in range(0, len(members), batch_size))
    else:
        groups = [order[k : k + batch_size] for k in range(0, len(order), batch_size)]
    out = []
    for g in groups:
        lengths = [len(ids[i]) for i in g]
        width = max(lengths)
        x = torch.full((len(g), width), pad_id if pad_id is not None else 0, dtype=torch.long)
        mask = torch.zeros((len(g), width), dtype=torch.long)
        for r, i in enumerate(g):
            x[r, : lengths[r]] = torch.tensor(ids[i], dtype=torch.long)
            mask[r, : lengths[r]] = 1
        out.append(_Batch(g, x, mask if pad_id is not None else None, lengths))
    return out


def _positions_for(spec: PositionSpec, prompt: int, length: int, toks: list[str]) -> list[int]:
    if isinstance(spec, str):
        if spec == "all":
            return list(range(length))
        if spec == "last":
            return [length - 1]
        raise ValueError(f"unknown positions {spec!r}; valid: 'all', 'last', an int, a list of ints or a callable")
    if callable(spec):
        chosen = list(spec(prompt, toks))
    elif isinstance(spec, (int, np.integer)):
        chosen = [int(spec)]
    elif isinstance(spec, (list, tuple)) and all(isinstance(p, (int, np.integer)) for p in spec):
        chosen = [int(p) for p in spec]
    else:
        raise ValueError(f"unknown positions {spec!r}; valid: 'all', 'last', an int, a list of ints or a callable")
    res = []
    for p in chosen:
        q = p + length if p < 0 else p
        if not 0 <= q < length:
            raise ValueError(f"position {p} is outside prompt {prompt} of length {length}")
        res.append(q)
    return res


def _run_batch(lm: LoadedModel, batch: _Batch, keys: list) -> dict:
    saved: dict = {}
    with torch.no_grad():
        kwargs: dict[str, Any] = {}
        if lm.remote:
            kwargs["remote"] = True
        if batch.attention_mask is not None:
            ctx = lm.envoy.trace(input_ids=batch.input_ids, attention_mask=batch.attention_mask, **kwargs)
        else:
            ctx = lm.envoy.trace(batch.input_ids, **kwargs)
        with ctx:
            lm.adapter.request(lm.envoy, keys, saved)
    return {k: unwrap_output(v) for k, v in saved.items()}


def capture(
    model: Any,
    inputs: Any,
    *,
    sites: Sequence[str],
    positions: PositionSpec = "all",
    aggregate: Literal["mean", "sum", "max"] | None = None,
    batch_size: int = 32,
    logit_tokens: Sequence[int] | None = None,
    progress: bool = True,
    dtype: torch.dtype = torch.float32,
) -> Activations:
    """Record ``sites`` of ``model`` over ``inputs`` in one nnsight trace per batch.

    Parameters
    ----------
    model: anything :func:`load_model` accepts.
    inputs: prompts (``list[str]``), token-id lists, or a ``[batch, pos]`` LongTensor.
    sites: site names (see :mod:`circuitkit.sites`), any subset, in any order.
    positions, aggregate: which rows to keep (module docstring).
    batch_size: prompts per trace; bounds memory.
    logit_tokens: keep only these vocabulary columns of ``out`` (default: all).

    Returns
    -------
    Activations with one ``[rows, d]`` float32 block per site, in computation order.

    Example
    -------
    >>> acts = capture("toylm", ["when mary and john went to the store ,"],
    ...                sites=["embed", "L0.H0", "L0.MLP"], positions="last")  # doctest: +SKIP
    """
    if aggregate not in AGGREGATES:
        raise ValueError(f"unknown aggregate {aggregate!r}; valid: {AGGREGATES}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    lm = load_model(model)
    sites = validate_sites(sites, lm.sites)
    ids, toks = _tokenize(lm, inputs)
    keys = lm.adapter.raw_keys(sites)
    batches = _batches(lm, ids, batch_size)

    per_site: dict[str, list[np.ndarray]] = {s: [] for s in sites}
    rows_prompt: list[np.ndarray] = []
    rows_pos: list[np.ndarray] = []
    bar = tqdm(batches, desc="capture", unit="batch", disable=not progress or len(batches) < 2)
    for batch in bar:
        raw = _run_batch(lm, batch, keys)
        b_idx, t_idx, group = [], [], []
        for r, (pid, length) in enumerate(zip(batch.prompt_ids, batch.lengths)):
            pos = _positions_for(positions, pid, length, toks[pid])
            if not pos:
                continue
            b_idx.extend([r] * len(pos))
            t_idx.extend(pos)
            group.append((pid, len(pos)))
        if not b_idx:
            continue
        bi = torch.tensor(b_idx)
        ti = torch.tensor(t_idx)
        selected = {}
        for k, v in raw.items():
            v = v.detach()
            sel = v[bi, ti]
            if k[0] == "out" and logit_tokens is not None:
                sel = sel[:, list(logit_tokens)]
            selected[k] = sel.to(dtype)
        blocks = lm.adapter.finalize(selected, sites)
        if aggregate is None:
            rows_prompt.append(np.asarray([batch.prompt_ids[r] for r in b_idx]))
            rows_pos.append(np.asarray(t_idx))
            for s in sites:
                per_site[s].append(blocks[s].float().cpu().numpy())
        else:
            splits = [n for _, n in group]
            rows_prompt.append(np.asarray([pid for pid, _ in group]))
            rows_pos.append(np.full(len(group), -1))
            for s in sites:
                parts = torch.split(blocks[s], splits)
                if aggregate == "mean":
                    agg = torch.stack([p.mean(0) for p in parts])
                elif aggregate == "sum":
                    agg = torch.stack([p.sum(0) for p in parts])
                else:
                    agg = torch.stack([p.max(0).values for p in parts])
                per_site[s].append(agg.float().cpu().numpy())
    if not rows_prompt:
        raise ValueError("no rows captured: the position rule selected no token in any prompt")
    prompt_col = np.concatenate(rows_prompt)
    pos_col = np.concatenate(rows_pos)
    order = np.lexsort((pos_col, prompt_col))  # rows sorted by (prompt, position) whatever the batching
    data = {s: np.concatenate(per_site[s])[order] for s in sites}
    prompt_col, pos_col = prompt_col[order], pos_col[order]
    token_col = [toks[p][q] if q >= 0 else "" for p, q in zip(prompt_col, pos_col)]
    index = pd.DataFrame({"prompt": prompt_col, "position": pos_col, "token": token_col})
    pos_desc = positions if isinstance(positions, (str, int, list, tuple)) else getattr(positions, "__name__", "callable")
    meta = {
        "model": lm.name,
        "arch": lm.adapter.spec.name,
        "n_layers": lm.n_layers,
        "n_heads": lm.n_heads,
        "sites": sites,
        "positions": pos_desc,
        "aggregate": aggregate,
        "logit_tokens": list(logit_tokens) if logit_tokens is not None else None,
        "n_prompts": len(ids),
        "input_hash": hash_inputs([np.concatenate([np.asarray(r, dtype=np.int64) for r in ids]),
                                   [len(r) for r in ids], str(pos_desc), aggregate]),
    }
    logger.info("captured %d rows x %d sites from %s", len(index), len(sites), lm.name)
    return Activations(data, index, toks, meta)


def forward(model: Any, inputs: Any, *, batch_size: int = 32) -> list[Tensor]:
    """Plain forward pass (no tracing) over the same batching as :func:`capture`; returns the output
    of each prompt as ``[length, n_out]`` tensors. Used to check capture and as a timing baseline."""
    lm = load_model(model)
    ids, _ = _tokenize(lm, inputs)
    outs: dict[int, Tensor] = {}
    with torch.no_grad():
        for batch in _batches(lm, ids, batch_size):
            if batch.attention_mask is not None:
                y = lm.module(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
            else:
                y = lm.module(batch.input_ids)
            y = getattr(y, "logits", y)
            for r, (pid, length) in enumerate(zip(batch.prompt_ids, batch.lengths)):
                outs[pid] = y[r, :length]
    return [outs[i] for i in range(len(ids))]


__all__ = ["LoadedModel", "load_model", "capture", "forward"]
