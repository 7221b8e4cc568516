"""Input handling: tokenize, pad, batch, choose positions. One implementation for capture and the runtime.

Batches are right-padded (with the tokenizer's pad token, else its EOS token) and carry an attention mask.
Models without a tokenizer (Tracr) have no pad token, so their prompts are grouped into batches of equal
length instead.

Positions (``positions=``):

* ``"all"``  every real (non-padding) token of every prompt, one row each;
* ``"after_bos"`` every real token but the first (:func:`circuitkit.sites.after_bos`, the one BOS rule);
* ``"last"`` the last real token of each prompt;
* an ``int`` or a list of ints: those positions (negative counts from the last real token);
* a callable ``f(prompt_index, tokens) -> list[int]``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union

import numpy as np
import torch
from jaxtyping import Bool, Int
from torch import Tensor

from ..sites import N_SKIPPED_POSITIONS

logger = logging.getLogger(__name__)

PositionSpec = Union[Literal["all", "after_bos", "last"], int, Sequence[int], Callable[[int, list[str]], list[int]]]
POSITION_NAMES = ("all", "after_bos", "last")


@dataclass
class Batch:
    prompt_ids: list[int]
    input_ids: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"] | None
    lengths: list[int]


def tokenize(lm: Any, inputs: Any) -> tuple[list[list[int]], list[list[str]]]:
    """Turn inputs into token-id lists (no padding) and token strings."""
    if isinstance(inputs, torch.Tensor):
        if inputs.ndim != 2:
            raise ValueError(f"token-id tensors must be [batch, pos]; got shape {tuple(inputs.shape)}")
        ids = [row.tolist() for row in inputs]
    elif isinstance(inputs, (list, tuple)) and inputs and all(isinstance(x, str) for x in inputs):
        if lm.tokenizer is None:
            raise ValueError("string prompts need a tokenizer; pass tokenizer= to load_model or give token ids")
        empty = [i for i, x in enumerate(inputs) if not x.strip()]
        if empty:
            raise ValueError(f"prompt(s) {empty[:5]} are empty strings; every prompt needs at least one token")
        ids = [lm.tokenizer(x)["input_ids"] for x in inputs]
        _warn_unknown_tokens(lm.tokenizer, inputs, ids)
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


def _warn_unknown_tokens(tok: Any, prompts: Sequence[str], ids: list[list[int]]) -> None:
    """Warn (naming the words) when a word-level tokenizer mapped words to its unknown token."""
    unk = getattr(tok, "unk_token_id", None)
    if unk is None:
        return
    hits = [i for i, row in enumerate(ids) if unk in row]
    if not hits:
        return
    words: list[str] = []
    for i in hits[:20]:
        for w in prompts[i].split():
            if unk in tok(w, add_special_tokens=False)["input_ids"] and w not in words:
                words.append(w)
    warnings.warn(f"{len(hits)} prompt(s) (e.g. #{hits[0]}) contain words outside the tokenizer's vocabulary, "
                  f"read as {tok.unk_token!r}: {words[:10]}; the model never saw them", UserWarning, stacklevel=3)


def batches(lm: Any, ids: list[list[int]], batch_size: int) -> list[Batch]:
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
        if min(lengths) == width:  # one length: no padding, one tensor from the rows
            x = torch.tensor([ids[i] for i in g], dtype=torch.long)
        else:
            arr = np.full((len(g), width), pad_id if pad_id is not None else 0, dtype=np.int64)
            for r, i in enumerate(g):
                arr[r, : lengths[r]] = ids[i]
            x = torch.from_numpy(arr)
        mask = None
        if pad_id is not None:
            mask = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).to(torch.long)
        out.append(Batch(g, x, mask, lengths))
    return out


def positions_for(spec: PositionSpec, prompt: int, length: int, toks: list[str]) -> list[int]:
    if isinstance(spec, str):
        if spec == "all":
            return list(range(length))
        if spec == "last":
            return [length - 1]
        if spec == "after_bos":
            return list(range(N_SKIPPED_POSITIONS, length))
        raise ValueError(f"unknown positions {spec!r}; valid: {POSITION_NAMES}, an int, a list of ints or a callable")
    if callable(spec):
        chosen = list(spec(prompt, toks))
    elif isinstance(spec, (int, np.integer)):
        chosen = [int(spec)]
    elif isinstance(spec, (list, tuple)) and all(isinstance(p, (int, np.integer)) for p in spec):
        chosen = [int(p) for p in spec]
    else:
        raise ValueError(f"unknown positions {spec!r}; valid: {POSITION_NAMES}, an int, a list of ints or a callable")
    res = []
    for p in chosen:
        q = p + length if p < 0 else p
        if not 0 <= q < length:
            raise ValueError(f"position {p} is outside prompt {prompt} of length {length}")
        res.append(q)
    return res




def real_mask(batch: Batch, *, skip_first: bool = True) -> Bool[Tensor, "batch pos"]:
    """True at each prompt's real tokens (not padding), without position 0 when ``skip_first`` (the BOS rule)."""
    width = batch.input_ids.shape[1]
    lengths = torch.tensor(batch.lengths)
    mask = torch.arange(width)[None] < lengths[:, None]
    if skip_first:
        mask[:, :N_SKIPPED_POSITIONS] = False
    return mask


def model_kwargs(batch: Batch) -> tuple[tuple, dict[str, Any]]:
    """``(args, kwargs)`` to call a model on ``batch``: HF models get ``input_ids`` + ``attention_mask``,
    models without a mask (Tracr) get the ids positionally."""
    if batch.attention_mask is not None:
        return (), {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
    return (batch.input_ids,), {}


__all__ = ["POSITION_NAMES", "Batch", "PositionSpec", "batches", "model_kwargs", "positions_for", "real_mask",
           "tokenize"]
