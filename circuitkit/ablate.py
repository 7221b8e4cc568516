"""Feature ablation inside the forward pass, and gradients of a read-out with respect to SAE features.

Used by :mod:`circuitkit.debias`. Operations on an HF causal LM whose decoder blocks are at
``transformer.h`` (GPT-2, the embedded toy LM), ``gpt_neox.layers`` (GPT-NeoX/Pythia) or ``model.layers``
(Llama, Mistral, Qwen, Gemma), at one or several SAE sites on the residual stream. A site is named by a
block index ``layer``: ``layer >= 0`` is the output of block ``layer`` (``blocks.{layer}.hook_resid_post``,
site ``L{layer}.resid_post``; a forward hook on the block); ``layer = -1`` is the embedding, what block 0
reads (``blocks.0.hook_resid_pre``, site ``L0.resid_pre``; a forward pre-hook on block 0, so it is the
stream after any scaling the model applies to its embeddings). Pooling and ablation skip the first
position, which is BOS for tokenizers that prepend one (the toy LM's); for others it drops the first token.

* :func:`pooled_residual` -- the residual stream after block ``layer`` (before the final norm), mean-pooled
  over each prompt's real tokens (BOS excluded), optionally with SAE features **zero-ablated** at one or more
  earlier sites: at every non-BOS token position the site's activation ``h`` becomes
  ``h - sum_{f in S} z_f(h) W_dec[f]``. That is the SAE reconstruction with the selected latents set to
  zero, plus the untouched reconstruction error, so the change propagates through every later layer
  (Marks et al.'s feature ablation). With several sites, a later site encodes the already-ablated stream.
* :func:`feature_attributions` -- attribution patching of every SAE feature at one or more sites to a
  scalar read-out ``readout(pooled)`` of the final pooled representation (SHIFT's node scores): for each
  prompt, ``sum_pos z_f(pos) * d readout / d z_f(pos)``, with real gradients through the model (one forward
  and one backward pass per batch, all sites at once). Zero-ablating feature ``f`` changes the read-out by
  about ``-`` that amount.
* :func:`pooled_codes` -- the SAE codes of one or more sites, mean-pooled per prompt (observational).

Why plain torch forward hooks and not nnsight: these operations edit a site's output *and* need the
gradient with respect to a tensor created inside the edit (the SAE codes); a forward hook that returns the
replaced output does this in a few lines, keeps autograd intact, and the hooks are removed in ``finally``.
Observational capture still goes through :func:`circuitkit.capture`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

__all__ = [
    "EMBED",
    "FeatureAblation",
    "feature_attributions",
    "pooled_codes",
    "pooled_residual",
    "sae_hook",
    "site_name",
]

EMBED = -1  # the ``layer`` index of the embedding site (what block 0 reads)


def site_name(layer: int) -> str:
    """The circuitkit site of an SAE ``layer`` index: ``-1 -> 'L0.resid_pre'``, ``l -> 'L{l}.resid_post'``."""
    _check_layer(layer)
    return "L0.resid_pre" if layer == EMBED else f"L{int(layer)}.resid_post"


def sae_hook(layer: int) -> str:
    """The TransformerLens/sae_lens hook name of an SAE ``layer`` index (``-1 -> 'blocks.0.hook_resid_pre'``)."""
    from .sae import site_to_hook

    return site_to_hook(site_name(layer))


def _check_layer(layer: Any) -> int:
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or layer < EMBED:
        raise ValueError(f"layer must be an int >= -1 (-1 = the embedding, l = block l's output), got {layer!r}")
    return int(layer)


@dataclass
class FeatureAblation:
    """Zero-ablate SAE latents ``features`` of ``sae`` at site ``layer`` (-1: embedding; l: block l's output),
    at all non-BOS tokens."""

    sae: Any
    layer: int
    features: Sequence[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.layer = _check_layer(self.layer)
        d_sae = int(self.sae.cfg.d_sae)
        feats = np.asarray(list(self.features), dtype=np.int64).ravel()
        bad = feats[(feats < 0) | (feats >= d_sae)]
        if bad.size:
            raise ValueError(f"feature indices {bad[:5].tolist()} out of range; this SAE has d_sae={d_sae} "
                             f"(valid: 0..{d_sae - 1})")
        self.features = sorted(set(feats.tolist()))


class _StopForward(Exception):
    """Raised by a read hook to end a forward pass early."""


# Where the decoder blocks live in the HF architectures the hooks support.
BLOCK_PATHS = {"gpt2": "transformer.h", "gpt_neox": "gpt_neox.layers", "llama-style": "model.layers"}


def _blocks(model: Any) -> Any:
    for path in BLOCK_PATHS.values():
        obj = model
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        return obj
    raise ValueError(f"unsupported model {type(model).__name__}: expected the decoder blocks at one of "
                     f"{list(BLOCK_PATHS.values())} (GPT-2, GPT-NeoX/Pythia, Llama/Mistral/Qwen/Gemma layouts)")


def _check_block(model: Any, layer: int) -> Any:
    blocks = _blocks(model)
    layer = _check_layer(layer)
    if layer >= len(blocks):
        raise ValueError(f"layer {layer} out of range; the model has blocks 0..{len(blocks) - 1} (and -1, the "
                         "embedding)")
    return blocks


def _register(model: Any, layer: int, edit: Callable[[Tensor], Tensor | None]) -> Any:
    """Hook site ``layer``: ``edit(h)`` sees its activation ``[batch, pos, d]`` and may return a replacement.

    ``layer = -1`` is a forward *pre*-hook on block 0 (its input: the embedding, after any scaling the model
    applies, e.g. Gemma's sqrt(d)); ``layer = l`` a forward hook on block ``l`` (its output)."""
    blocks = _check_block(model, layer)
    if layer == EMBED:
        def pre(_mod: Any, args: tuple, kwargs: dict) -> Any:
            if args:
                new = edit(args[0])
                return None if new is None else ((new, *args[1:]), kwargs)
            new = edit(kwargs["hidden_states"])
            return None if new is None else (args, {**kwargs, "hidden_states": new})
        return blocks[0].register_forward_pre_hook(pre, with_kwargs=True)

    def post(_mod: Any, _inp: Any, output: Any) -> Any:
        new = edit(_hidden(output))
        return None if new is None else _replace(output, new)
    return blocks[layer].register_forward_hook(post)


def _encode(tok: Any, prompts: Sequence[str]) -> tuple[Tensor, Tensor]:
    enc = tok(list(prompts), add_special_tokens=True)["input_ids"]
    T = max(len(e) for e in enc)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = torch.full((len(enc), T), pad, dtype=torch.long)
    for i, e in enumerate(enc):
        ids[i, : len(e)] = torch.tensor(e, dtype=torch.long)
    return ids, torch.tensor([len(e) for e in enc])


def _batch(tok: Any, prompts: Sequence[str], device: Any) -> tuple[Tensor, Tensor, Tensor]:
    """Token ids, attention mask and the mask of real non-BOS tokens of one batch."""
    ids, lengths = _encode(tok, prompts)
    mask = torch.arange(ids.shape[1])[None] < lengths[:, None]
    real = mask.clone()
    real[:, 0] = False
    return ids.to(device), mask.long().to(device), real.to(device)


def _check_prompts(prompts: Any) -> list[str]:
    if isinstance(prompts, str) or len(prompts) == 0:
        raise ValueError("prompts must be a non-empty list of strings")
    return list(prompts)


def _pool(h: Tensor, real: Tensor) -> Tensor:
    """Mean of ``h [batch, pos, d]`` over the positions where ``real [batch, pos]`` is true."""
    m = real.to(h.dtype)[..., None]
    return (h * m).sum(1) / m.sum(1).clamp_min(1.0)


def _hidden(output: Any) -> Tensor:
    return output[0] if isinstance(output, tuple) else output


def _replace(output: Any, new: Tensor) -> Any:
    return (new, *output[1:]) if isinstance(output, tuple) else new


@contextlib.contextmanager
def _hooks(model: Any, hooks: Sequence[tuple[int, Callable[[Tensor], Tensor | None]]]) -> Iterator[None]:
    """Register site edits ``(layer, edit)`` (in the given order; see :func:`_register`) for the block."""
    handles = []
    try:
        for layer, edit in hooks:
            handles.append(_register(model, layer, edit))
        yield
    finally:
        for h in handles:
            h.remove()


def _ablation_hook(ab: FeatureAblation, keep: dict[str, Tensor]) -> Callable[[Tensor], Tensor]:
    idx = torch.as_tensor(ab.features, dtype=torch.long)
    w_dec = ab.sae.W_dec.detach()[idx]  # [k, d]

    def edit(h: Tensor) -> Tensor:
        with torch.no_grad():
            z = ab.sae.encode(h.to(w_dec.dtype))[..., idx]  # [b, t, k]
            delta = (z @ w_dec).to(h.dtype) * keep["mask"][..., None]
        return h - delta

    return edit


def _as_ablations(ablate: FeatureAblation | Sequence[FeatureAblation] | None) -> list[FeatureAblation]:
    if ablate is None:
        return []
    abls = [ablate] if isinstance(ablate, FeatureAblation) else list(ablate)
    for a in abls:
        if not isinstance(a, FeatureAblation):
            raise ValueError(f"ablate must hold FeatureAblation objects, got {type(a).__name__}")  # noqa: TRY004
    layers = [a.layer for a in abls]
    if len(set(layers)) != len(layers):
        raise ValueError(f"several ablations at the same layer {sorted(layers)}; merge their features into one")
    return sorted((a for a in abls if len(a.features)), key=lambda a: a.layer)


@torch.no_grad()
def pooled_residual(
    model: Any,
    tok: Any,
    prompts: Sequence[str],
    *,
    layer: int,
    ablate: FeatureAblation | Sequence[FeatureAblation] | None = None,
    batch_size: int = 128,
    progress: bool = False,
) -> Float[np.ndarray, "n d_model"]:
    """Mean over real non-BOS tokens of block ``layer``'s output, optionally with ``ablate`` applied (one
    :class:`FeatureAblation` or several, at distinct sites up to ``layer``)."""
    prompts = _check_prompts(prompts)
    _check_block(model, layer)
    abls = _as_ablations(ablate)
    late = [a.layer for a in abls if a.layer > layer]
    if late:
        raise ValueError(f"ablation layer(s) {late} come after the read-out layer {layer}")
    device = next(model.parameters()).device
    keep: dict[str, Tensor] = {}
    store: dict[str, Tensor] = {}

    def read(h: Tensor) -> None:
        store["h"] = h

    out = []
    edits = [(a.layer, _ablation_hook(a, keep)) for a in abls] + [(layer, read)]  # read last: the edited output
    with _hooks(model, edits):
        for s in tqdm(range(0, len(prompts), batch_size), desc="forward", disable=not progress):
            ids, mask, real = _batch(tok, prompts[s : s + batch_size], device)
            keep["mask"] = real
            model(input_ids=ids, attention_mask=mask)
            out.append(_pool(store.pop("h").float(), real).cpu())
    return torch.cat(out).numpy()


def _site_saes(sae: Any, layer: int | None, saes: Mapping[int, Any] | None) -> tuple[dict[int, Any], bool]:
    """``({layer: sae}, single)`` from either ``sae`` + ``layer`` or ``saes``."""
    if saes is not None:
        if sae is not None or layer is not None:
            raise ValueError("give either sae= and layer= (one site) or saes={layer: sae} (several), not both")
        if not saes:
            raise ValueError("saes is empty; give at least one {layer: sae}")
        return {_check_layer(k): v for k, v in sorted(saes.items())}, False
    if sae is None or layer is None:
        raise ValueError("give sae= and layer= (one site) or saes={layer: sae} (several sites)")
    return {_check_layer(layer): sae}, True


def feature_attributions(
    model: Any,
    tok: Any,
    prompts: Sequence[str],
    *,
    readout_layer: int,
    readout: Callable[[Tensor], Tensor],
    sae: Any = None,
    layer: int | None = None,
    saes: Mapping[int, Any] | None = None,
    batch_size: int = 64,
    progress: bool = False,
) -> Float[np.ndarray, "n d_sae"] | dict[int, Float[np.ndarray, "n d_sae"]]:
    """Per-prompt attribution-patching scores ``sum_pos z_f * d readout / d z_f`` of every SAE feature.

    ``readout`` maps the pooled representation ``[batch, d_model]`` (as :func:`pooled_residual` computes
    it at ``readout_layer``) to one scalar per prompt ``[batch]``, e.g. a linear probe's logit. Sites: one
    (``sae=``, ``layer=``; returns ``[n, d_sae]``) or several (``saes={layer: sae}``; returns
    ``{layer: [n, d_sae]}``), all attributed in the same forward/backward pass. At each site the output
    becomes ``h + decode(z) - stop_grad(decode(z))`` with ``z = encode(h)`` a leaf: the forward values are
    unchanged, ``d/dz`` is the gradient through the decoder, and gradients to earlier sites still flow
    through ``h`` (as through an SAE spliced in with its error term). BOS and padding are excluded.
    """
    prompts = _check_prompts(prompts)
    sites, single = _site_saes(sae, layer, saes)
    late = [k for k in sites if k > readout_layer]
    if late:
        raise ValueError(f"SAE layer(s) {late} come after the read-out layer {readout_layer}")
    _check_block(model, readout_layer)
    device = next(model.parameters()).device
    state: dict[Any, Tensor] = {}

    def splice(k: int, s: Any) -> Callable[[Tensor], Tensor]:
        def edit(h: Tensor) -> Tensor:
            z = s.encode(h.detach()).detach().requires_grad_(True)
            state[k] = z
            dec = s.decode(z)
            return h + (dec - dec.detach()).to(h.dtype)
        return edit

    def read(h: Tensor) -> None:
        state["h"] = h

    params = [p.requires_grad for p in model.parameters()]
    out: dict[int, list[Tensor]] = {k: [] for k in sites}
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        with _hooks(model, [(k, splice(k, s)) for k, s in sites.items()] + [(readout_layer, read)]):
            for s in tqdm(range(0, len(prompts), batch_size), desc="attribution", disable=not progress):
                ids, mask, real = _batch(tok, prompts[s : s + batch_size], device)
                with torch.enable_grad():
                    model(input_ids=ids, attention_mask=mask)
                    pooled = _pool(state.pop("h"), real)
                    zs = [state.pop(k) for k in sites]
                    grads = torch.autograd.grad(readout(pooled).sum(), zs)
                for k, z, g in zip(sites, zs, grads):
                    out[k].append(((z * g).detach() * real[..., None]).sum(1).float().cpu())
    finally:
        for p, g in zip(model.parameters(), params):
            p.requires_grad_(g)
    res = {k: torch.cat(v).numpy() for k, v in out.items()}
    return res[next(iter(sites))] if single else res


@torch.no_grad()
def pooled_codes(
    model: Any,
    tok: Any,
    prompts: Sequence[str],
    *,
    sae: Any = None,
    layer: int | None = None,
    saes: Mapping[int, Any] | None = None,
    batch_size: int = 128,
    progress: bool = False,
) -> Any:
    """SAE codes mean-pooled over each prompt's non-BOS tokens: CSR ``[n, d_sae]`` for one site (``sae=``,
    ``layer=``), or ``{layer: CSR}`` for several (``saes={layer: sae}``), from one forward pass per batch
    that stops after the last site. Observational: nothing is edited.
    """
    import scipy.sparse as sp

    prompts = _check_prompts(prompts)
    sites, single = _site_saes(sae, layer, saes)
    last = max(sites)
    device = next(model.parameters()).device
    store: dict[int, Tensor] = {}

    def read(k: int) -> Callable[[Tensor], None]:
        def edit(h: Tensor) -> None:
            store[k] = h
            if k == last:
                raise _StopForward
        return edit

    out: dict[int, list] = {k: [] for k in sites}
    with _hooks(model, [(k, read(k)) for k in sites]):
        for s in tqdm(range(0, len(prompts), batch_size), desc="codes", disable=not progress):
            ids, mask, real = _batch(tok, prompts[s : s + batch_size], device)
            try:  # the later blocks are not needed: stop the forward pass once the last site has run
                model(input_ids=ids, attention_mask=mask)
            except _StopForward:
                pass
            for k, sae_k in sites.items():
                out[k].append(sp.csr_matrix(_pool(sae_k.encode(store.pop(k)), real).float().cpu().numpy()))
    res = {k: sp.vstack(v, format="csr") for k, v in out.items()}
    return res[next(iter(sites))] if single else res
