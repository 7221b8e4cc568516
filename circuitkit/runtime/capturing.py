"""Capture (`circuitkit.capture`): one nnsight trace per batch records every requested site.

This is the one place that opens an nnsight trace. nnsight is used for *observation* because it records
many module inputs/outputs in one pass, runs the same code remotely on NDIF (``remote=True``), and needs no
hook bookkeeping. Edits and gradients go through :mod:`circuitkit.runtime.interventions` (torch hooks).

Positions (``positions=``): see :mod:`circuitkit.runtime.inputs`; the default is
:data:`circuitkit.sites.DEFAULT_POSITIONS` (``"after_bos"``, the rows discovery fits on). With ``aggregate="mean" | "sum" |
"max"`` the selected positions of a prompt are pooled into one row.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..activations import Activations, hash_inputs
from ..models.adapters import Adapter, unwrap_output
from ..sites import DEFAULT_POSITIONS, validate_sites
from .inputs import Batch, PositionSpec, batches, positions_for, tokenize
from .loading import LoadedModel, load_model

logger = logging.getLogger(__name__)

AGGREGATES = (None, "mean", "sum", "max")


def _request(adapter: Adapter, envoy: Any, keys: list[tuple[str, int | None]], saved: dict) -> None:
    """Inside an nnsight trace: save the raw tensors for ``keys`` (in execution order) into ``saved``.

    nnsight (0.8) requires module outputs to be requested in execution order, and hands back only values
    bound to ``.save()``, so results go into a dict created before the ``with`` block.
    """
    for key in keys:
        path, which = adapter.raw_location(*key)
        node = adapter.resolve(envoy, path)
        saved[key] = (node.input if which == "input" else node.output).save()


def _run_batch(lm: LoadedModel, batch: Batch, keys: list) -> dict:
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
            _request(lm.adapter, lm.envoy, keys, saved)
    return {k: unwrap_output(v) for k, v in saved.items()}


def capture(
    model: Any,
    inputs: Any,
    *,
    sites: Sequence[str],
    positions: PositionSpec = DEFAULT_POSITIONS,
    aggregate: Literal["mean", "sum", "max"] | None = None,
    batch_size: int = 32,
    logit_tokens: Sequence[int] | None = None,
    progress: bool = True,
    dtype: torch.dtype = torch.float32,
    predictions: bool = False,
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
    predictions: also record the model's predicted next token (argmax of the logits) at every kept row, as
        the index column ``"predicted"`` (token strings; ``""`` for aggregated rows). Feature labels use it
        to show what the model was about to say (:mod:`circuitkit.labels`). Needs a tokenizer.

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
    ids, toks = tokenize(lm, inputs)
    want_pred = bool(predictions)
    if want_pred and lm.tokenizer is None:
        raise ValueError("predictions=True needs a tokenizer (the predicted token ids are decoded to strings)")
    keys = lm.adapter.raw_keys([*sites, "out"] if want_pred and "out" not in sites else sites)
    groups = batches(lm, ids, batch_size)
    pred_rows: list[np.ndarray] = []

    per_site: dict[str, list[np.ndarray]] = {s: [] for s in sites}
    rows_prompt: list[np.ndarray] = []
    rows_pos: list[np.ndarray] = []
    bar = tqdm(groups, desc="capture", unit="batch", disable=not progress or len(groups) < 2)
    for batch in bar:
        raw = _run_batch(lm, batch, keys)
        b_idx, t_idx, group = [], [], []
        for r, (pid, length) in enumerate(zip(batch.prompt_ids, batch.lengths)):
            pos = positions_for(positions, pid, length, toks[pid])
            if not pos:
                continue
            b_idx.extend([r] * len(pos))
            t_idx.extend(pos)
            group.append((pid, len(pos)))
        if not b_idx:
            continue
        bi = torch.tensor(b_idx)
        ti = torch.tensor(t_idx)
        if want_pred:
            pred = raw[("out", None)].detach()[bi, ti].argmax(-1).cpu().numpy()
            if aggregate is None:
                pred_rows.append(pred)
            else:
                pred_rows.append(np.full(len(group), -1))
            if "out" not in sites:
                raw = {k: v for k, v in raw.items() if k[0] != "out"}
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
    data = {s: _in_order(per_site[s], order) for s in sites}
    prompt_col, pos_col = prompt_col[order], pos_col[order]
    token_col = [toks[p][q] if q >= 0 else "" for p, q in zip(prompt_col, pos_col)]
    index = pd.DataFrame({"prompt": prompt_col, "position": pos_col, "token": token_col})
    if want_pred:
        pid = np.concatenate(pred_rows)[order]
        names = lm.tokenizer.convert_ids_to_tokens([int(i) for i in pid[pid >= 0]])
        it = iter(names)
        index["predicted"] = [next(it) if i >= 0 else "" for i in pid]
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


def _in_order(parts: list[np.ndarray], order: np.ndarray) -> np.ndarray:
    """``np.concatenate(parts)[order]`` with at most one copy: the batches' blocks are written straight to
    their sorted rows (no copy at all for a single batch already in order). On component sites of a real
    model the captured blocks are hundreds of MB, and a second full copy cost a quarter of a forward pass."""
    n = len(order)
    if np.array_equal(order, np.arange(n)):
        return np.ascontiguousarray(parts[0]) if len(parts) == 1 else np.concatenate(parts)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    out = np.empty((n, *parts[0].shape[1:]), dtype=parts[0].dtype)
    start = 0
    for part in parts:
        out[rank[start:start + len(part)]] = part
        start += len(part)
    return out


def forward(model: Any, inputs: Any, *, batch_size: int = 32) -> list[Tensor]:
    """Plain forward pass (no tracing) over the same batching as :func:`capture`; returns the output
    of each prompt as ``[length, n_out]`` tensors. Used to check capture and as a timing baseline."""
    lm = load_model(model)
    ids, _ = tokenize(lm, inputs)
    outs: dict[int, Tensor] = {}
    with torch.no_grad():
        for batch in batches(lm, ids, batch_size):
            if batch.attention_mask is not None:
                y = lm.module(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
            else:
                y = lm.module(batch.input_ids)
            y = getattr(y, "logits", y)
            for r, (pid, length) in enumerate(zip(batch.prompt_ids, batch.lengths)):
                outs[pid] = y[r, :length]
    return [outs[i] for i in range(len(ids))]


def next_token_logits(model: Any, prompts: Sequence[str], *, tokenizer: Any = None,
                      batch_size: int = 256) -> Tensor:
    """Logits ``[n, vocab]`` for the token after each prompt (the last real position; plain forward)."""
    if isinstance(prompts, str):
        prompts = [prompts]
    lm = load_model(model, tokenizer=tokenizer) if tokenizer is not None else load_model(model)
    outs = forward(lm, list(prompts), batch_size=batch_size)
    return torch.stack([o[-1] for o in outs]).float().cpu()


__all__ = ["AGGREGATES", "LoadedModel", "capture", "forward", "load_model", "next_token_logits"]
