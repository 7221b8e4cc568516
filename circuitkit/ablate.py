"""Feature ablation inside the forward pass, and gradients of a read-out with respect to SAE features.

Used by :mod:`circuitkit.debias`. Two operations on a GPT-2-style HF model (``model.transformer.h``;
the embedded toy LM, GPT-2):

* :func:`pooled_residual` -- the residual stream after block ``layer`` (``blocks.{layer}.hook_resid_post``,
  before ``ln_f``), mean-pooled over each prompt's real tokens (BOS excluded), optionally with SAE features
  **zero-ablated** at an earlier block: at every non-BOS token position the output ``h`` of block
  ``ablate.layer`` becomes ``h - sum_{f in S} z_f(h) W_dec[f]``. That is the SAE reconstruction with the
  selected latents set to zero, plus the untouched reconstruction error, so the change propagates through
  every later layer (Marks et al.'s feature ablation).
* :func:`feature_attributions` -- attribution patching of every SAE feature at block ``layer`` to a scalar
  read-out ``readout(pooled)`` of the final pooled representation (SHIFT's node scores): for each prompt,
  ``sum_pos z_f(pos) * d readout / d z_f(pos)``, with real gradients through the model (one forward and one
  backward pass per batch). Zero-ablating feature ``f`` changes the read-out by about ``-`` that amount.

Why plain torch forward hooks and not nnsight: both operations edit a block's output *and* need the
gradient with respect to a tensor created inside the edit (the SAE codes); a forward hook that returns the
replaced output does this in a few lines, keeps autograd intact, and the hooks are removed in ``finally``.
Observational capture still goes through :func:`circuitkit.capture`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

__all__ = ["FeatureAblation", "feature_attributions", "pooled_codes", "pooled_residual"]


@dataclass
class FeatureAblation:
    """Zero-ablate SAE latents ``features`` of ``sae`` at the output of block ``layer`` (all non-BOS tokens)."""

    sae: Any
    layer: int
    features: Sequence[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if isinstance(self.layer, bool) or not isinstance(self.layer, (int, np.integer)) or self.layer < 0:
            raise ValueError(f"layer must be an int >= 0, got {self.layer!r}")
        d_sae = int(self.sae.cfg.d_sae)
        feats = np.asarray(list(self.features), dtype=np.int64).ravel()
        bad = feats[(feats < 0) | (feats >= d_sae)]
        if bad.size:
            raise ValueError(f"feature indices {bad[:5].tolist()} out of range; this SAE has d_sae={d_sae} "
                             f"(valid: 0..{d_sae - 1})")
        self.features = sorted(set(feats.tolist()))


class _StopForward(Exception):
    """Raised by a read hook to end a forward pass early."""


def _blocks(model: Any) -> Any:
    try:
        return model.transformer.h
    except AttributeError:
        raise ValueError(f"expected a GPT-2-style HF model with model.transformer.h, got {type(model).__name__}") \
            from None


def _encode(tok: Any, prompts: Sequence[str]) -> tuple[Tensor, Tensor]:
    enc = tok(list(prompts), add_special_tokens=True)["input_ids"]
    T = max(len(e) for e in enc)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = torch.full((len(enc), T), pad, dtype=torch.long)
    for i, e in enumerate(enc):
        ids[i, : len(e)] = torch.tensor(e, dtype=torch.long)
    return ids, torch.tensor([len(e) for e in enc])


def _hidden(output: Any) -> Tensor:
    return output[0] if isinstance(output, tuple) else output


def _replace(output: Any, new: Tensor) -> Any:
    return (new, *output[1:]) if isinstance(output, tuple) else new


@contextlib.contextmanager
def _hooks(model: Any, hooks: dict[int, Callable]) -> Iterator[None]:
    blocks = _blocks(model)
    handles = []
    try:
        for layer, fn in hooks.items():
            if not 0 <= layer < len(blocks):
                raise ValueError(f"layer {layer} out of range; the model has blocks 0..{len(blocks) - 1}")
            handles.append(blocks[layer].register_forward_hook(fn))
        yield
    finally:
        for h in handles:
            h.remove()


def _ablation_hook(ab: FeatureAblation, keep: dict[str, Tensor]) -> Callable:
    idx = torch.as_tensor(ab.features, dtype=torch.long)
    w_dec = ab.sae.W_dec.detach()[idx]  # [k, d]

    def fn(_mod: Any, _inp: Any, output: Any) -> Any:
        h = _hidden(output)
        with torch.no_grad():
            z = ab.sae.encode(h.to(w_dec.dtype))[..., idx]  # [b, t, k]
            delta = (z @ w_dec).to(h.dtype) * keep["mask"][..., None]
        return _replace(output, h - delta)

    return fn


@torch.no_grad()
def pooled_residual(
    model: Any,
    tok: Any,
    prompts: Sequence[str],
    *,
    layer: int,
    ablate: FeatureAblation | None = None,
    batch_size: int = 128,
    progress: bool = False,
) -> Float[np.ndarray, "n d_model"]:
    """Mean over real non-BOS tokens of block ``layer``'s output, optionally with ``ablate`` applied."""
    if isinstance(prompts, str) or len(prompts) == 0:
        raise ValueError("prompts must be a non-empty list of strings")
    blocks = _blocks(model)
    if not 0 <= layer < len(blocks):
        raise ValueError(f"layer {layer} out of range; the model has blocks 0..{len(blocks) - 1}")
    if ablate is not None and ablate.layer > layer:
        raise ValueError(f"ablation layer {ablate.layer} comes after the read-out layer {layer}")
    device = next(model.parameters()).device
    keep: dict[str, Tensor] = {}
    store: dict[str, Tensor] = {}

    def read(_mod: Any, _inp: Any, output: Any) -> None:
        store["h"] = _hidden(output)

    hooks: dict[int, Callable] = {}
    if ablate is not None and len(ablate.features):
        hooks[ablate.layer] = _ablation_hook(ablate, keep)
    out = []
    starts = range(0, len(prompts), batch_size)
    with _hooks(model, hooks), contextlib.ExitStack() as stack:
        h_read = blocks[layer].register_forward_hook(read)
        stack.callback(h_read.remove)
        for s in tqdm(starts, desc="forward", disable=not progress):
            ids, lengths = _encode(tok, prompts[s : s + batch_size])
            mask = torch.arange(ids.shape[1])[None] < lengths[:, None]
            real = mask.clone()
            real[:, 0] = False
            keep["mask"] = real.to(device)
            model(input_ids=ids.to(device), attention_mask=mask.long().to(device))
            h = store.pop("h").float()
            m = keep["mask"].float()[..., None]
            out.append(((h * m).sum(1) / m.sum(1).clamp_min(1.0)).cpu())
    return torch.cat(out).numpy()


def feature_attributions(
    model: Any,
    tok: Any,
    prompts: Sequence[str],
    *,
    sae: Any,
    layer: int,
    readout_layer: int,
    readout: Callable[[Tensor], Tensor],
    batch_size: int = 64,
    progress: bool = False,
) -> Float[np.ndarray, "n d_sae"]:
    """Per-prompt attribution-patching scores ``sum_pos z_f * d readout / d z_f`` of every SAE feature.

    ``readout`` maps the pooled representation ``[batch, d_model]`` (as :func:`pooled_residual` computes
    it at ``readout_layer``) to one scalar per prompt ``[batch]``, e.g. a linear probe's logit. The SAE
    is spliced in at block ``layer``: the block output becomes ``decode(z) + err`` with ``err`` held fixed,
    so the forward values are unchanged and gradients flow into the codes ``z`` (BOS and padding excluded).
    """
    if isinstance(prompts, str) or len(prompts) == 0:
        raise ValueError("prompts must be a non-empty list of strings")
    if layer > readout_layer:
        raise ValueError(f"SAE layer {layer} comes after the read-out layer {readout_layer}")
    blocks = _blocks(model)
    device = next(model.parameters()).device
    state: dict[str, Tensor] = {}

    def splice(_mod: Any, _inp: Any, output: Any) -> Any:
        h = _hidden(output)
        z = sae.encode(h.detach()).detach().requires_grad_(True)
        err = (h - sae.decode(z)).detach()
        state["z"] = z
        return _replace(output, sae.decode(z) + err)

    def read(_mod: Any, _inp: Any, output: Any) -> None:
        state["h"] = _hidden(output)

    params = [p.requires_grad for p in model.parameters()]
    out = []
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        with _hooks(model, {layer: splice}), contextlib.ExitStack() as stack:
            h_read = blocks[readout_layer].register_forward_hook(read)
            stack.callback(h_read.remove)
            for s in tqdm(range(0, len(prompts), batch_size), desc="attribution", disable=not progress):
                ids, lengths = _encode(tok, prompts[s : s + batch_size])
                mask = torch.arange(ids.shape[1])[None] < lengths[:, None]
                real = mask.clone()
                real[:, 0] = False
                real = real.to(device)
                with torch.enable_grad():
                    model(input_ids=ids.to(device), attention_mask=mask.long().to(device))
                    h, z = state.pop("h"), state.pop("z")
                    m = real.to(h.dtype)[..., None]
                    pooled = (h * m).sum(1) / m.sum(1).clamp_min(1.0)
                    r = readout(pooled)
                    (grad,) = torch.autograd.grad(r.sum(), z)
                out.append(((z * grad).detach() * real[..., None]).sum(1).float().cpu())
    finally:
        for p, g in zip(model.parameters(), params):
            p.requires_grad_(g)
    return torch.cat(out).numpy()


@torch.no_grad()
def pooled_codes(
    model: Any,
    tok: Any,
    prompts: Sequence[str],
    *,
    sae: Any,
    layer: int,
    batch_size: int = 128,
    progress: bool = False,
) -> Any:
    """SAE codes of block ``layer``'s output, mean-pooled over each prompt's non-BOS tokens (CSR ``[n, d_sae]``).

    One forward pass per batch that stops being useful after block ``layer`` (the rest of the model still
    runs; the toy LM is small). Observational: nothing is edited.
    """
    import scipy.sparse as sp

    if isinstance(prompts, str) or len(prompts) == 0:
        raise ValueError("prompts must be a non-empty list of strings")
    blocks = _blocks(model)
    if not 0 <= layer < len(blocks):
        raise ValueError(f"layer {layer} out of range; the model has blocks 0..{len(blocks) - 1}")
    device = next(model.parameters()).device
    store: dict[str, Tensor] = {}

    def read(_mod: Any, _inp: Any, output: Any) -> None:
        store["h"] = _hidden(output)
        raise _StopForward

    out = []
    handle = blocks[layer].register_forward_hook(read)
    try:
        for s in tqdm(range(0, len(prompts), batch_size), desc="codes", disable=not progress):
            ids, lengths = _encode(tok, prompts[s : s + batch_size])
            mask = torch.arange(ids.shape[1])[None] < lengths[:, None]
            real = mask.clone()
            real[:, 0] = False
            try:  # the later blocks are not needed: stop the forward pass once block `layer` has run
                model(input_ids=ids.to(device), attention_mask=mask.long().to(device))
            except _StopForward:
                pass
            z = sae.encode(store.pop("h")) * real.to(device)[..., None]
            pooled = z.sum(1) / real.sum(1, keepdim=True).to(z.dtype).clamp_min(1.0)
            out.append(sp.csr_matrix(pooled.float().cpu().numpy()))
    finally:
        handle.remove()
    return sp.vstack(out, format="csr")
