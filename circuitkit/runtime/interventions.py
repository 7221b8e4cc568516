"""Interventions by site name: record, replace, add, zero/mean/resample-ablate, splice an SAE.

Every edit names a circuitkit site (:mod:`circuitkit.sites`) and is placed by the architecture adapter, so
the same code edits Tracr models, the toy LM, GPT-2, GPT-NeoX, Llama/Qwen/Mistral (grouped-query
attention), Gemma and Gemma-2:

===================  ==========================================================================
site                 where the edit is applied
===================  ==========================================================================
``embed``,           a forward *pre*-hook on block ``l`` (its input ``hidden_states``; for ``embed``
``L{l}.resid_pre``   block 0, i.e. after any embedding scaling the model applies)
``L{l}.resid_post``  a forward hook on block ``l`` (its output)
``L{l}.attn``        a forward hook on the attention module (Gemma-2: on ``post_attention_layernorm``)
``L{l}.MLP``         a forward hook on the MLP (Gemma-2: on ``post_feedforward_layernorm``)
``L{l}.H{h}``        a pre-hook on the output projection reads ``z``; a forward hook on the projection
                     (Gemma-2: the post-attention norm; Tracr: ``head_out``) adds ``new_h - old_h``, so
                     the other heads are untouched and the head's value is the site value of capture
``out``              a forward hook on the LM head (logits before any soft-capping)
===================  ==========================================================================

Why plain torch hooks here and nnsight for capture (:mod:`circuitkit.runtime.capturing`): an edit must
return a replaced tensor *and* keep autograd intact through tensors created inside the edit (an SAE's codes
as a leaf for attribution patching), and it must compose with the split forward
(:mod:`circuitkit.runtime.split`) and with the caller's own ``model(...)`` calls. A forward hook that
returns the new output does all of that in a few lines, and the handles are removed in ``finally``.
nnsight stays the one way to *observe* (it batches many saves in one trace and runs remotely on NDIF).
There is one implementation of each: this module is the only place that registers forward hooks.

Example::

    >>> import circuitkit as ck
    >>> from circuitkit.runtime import Zero, run_with_edits
    >>> lm = ck.load_model("toylm")
    >>> res = run_with_edits(lm, ["when mary and john went to the store ,"], edits=[Zero("L1.H0")],
    ...                      record=["L1.resid_post"])  # doctest: +SKIP
    >>> res.logits.shape, res.records["L1.resid_post"].shape  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from ..models.adapters import Adapter, get_adapter
from ..sites import parse_site
from .inputs import batches, model_kwargs, real_mask, tokenize
from .loading import load_model, module_of

logger = logging.getLogger(__name__)


class StopForward(Exception):
    """Raised by a hook to end a forward pass early (nothing after the last needed site runs)."""


# --------------------------------------------------------------------------------------------------
# edits
# --------------------------------------------------------------------------------------------------


@dataclass
class Edit:
    """Base class: an edit of the value of ``site``. ``masked=True`` applies it only where the run's mask
    (:attr:`HookState.mask`, e.g. real non-BOS tokens) is true."""

    site: str
    masked: bool = field(default=False, kw_only=True)

    def __post_init__(self) -> None:
        if not isinstance(self.site, str):
            raise TypeError(f"site must be a site name string, got {type(self.site).__name__}")
        parse_site(self.site)

    def apply(self, h: Tensor, state: HookState) -> Tensor | None:  # pragma: no cover - abstract
        raise NotImplementedError


def _where(edit: Edit, state: HookState, old: Tensor, new: Tensor) -> Tensor:
    if not edit.masked or state.mask is None:
        return new
    m = state.mask.to(old.device)[..., None]
    return torch.where(m, new, old)


@dataclass
class Record(Edit):
    """Store the site's value (``[batch, pos, d]``) in ``state.records[site]``; nothing is changed."""

    stop: bool = False  # end the forward pass after this site (StopForward)

    def apply(self, h: Tensor, state: HookState) -> None:
        state.records[self.site] = h
        if self.stop:
            raise StopForward


@dataclass
class Replace(Edit):
    """Replace the site's value by ``value`` (broadcastable to ``[batch, pos, d]``)."""

    value: Any = None

    def apply(self, h: Tensor, state: HookState) -> Tensor:
        v = torch.as_tensor(self.value, dtype=h.dtype, device=h.device)
        return _where(self, state, h, v.expand_as(h))


@dataclass
class Add(Edit):
    """Add ``delta`` (broadcastable to ``[batch, pos, d]``) to the site's value (steering)."""

    delta: Any = None

    def apply(self, h: Tensor, state: HookState) -> Tensor:
        d = torch.as_tensor(self.delta, dtype=h.dtype, device=h.device)
        return _where(self, state, h, h + d)


@dataclass
class Zero(Edit):
    """Zero-ablate the site."""

    def apply(self, h: Tensor, state: HookState) -> Tensor:
        return _where(self, state, h, torch.zeros_like(h))


@dataclass
class Mean(Edit):
    """Mean-ablate the site: replace it by ``mean`` (``[d]``, e.g. its mean over a reference dataset)."""

    mean: Any = None

    def apply(self, h: Tensor, state: HookState) -> Tensor:
        m = torch.as_tensor(self.mean, dtype=h.dtype, device=h.device)
        return _where(self, state, h, m.expand_as(h))


@dataclass
class Resample(Edit):
    """Resample-ablate: replace the value of row ``i`` by ``values[perm[i]]``, the site's value on other
    inputs (``values`` ``[n_source, pos, d]``, e.g. recorded with :class:`Record` on corrupted prompts).
    ``perm`` defaults to a seeded random choice of source rows."""

    values: Any = None
    perm: Sequence[int] | None = None
    seed: int = 0

    def apply(self, h: Tensor, state: HookState) -> Tensor:
        src = torch.as_tensor(self.values, dtype=h.dtype, device=h.device)
        if src.ndim != 3 or src.shape[1:] != h.shape[1:]:
            raise ValueError(f"Resample values for {self.site!r} must be [n, {h.shape[1]}, {h.shape[2]}], "
                             f"got {tuple(src.shape)}")
        if self.perm is None:
            g = torch.Generator().manual_seed(self.seed)
            idx = torch.randint(0, src.shape[0], (h.shape[0],), generator=g)
        else:
            idx = torch.as_tensor(list(self.perm), dtype=torch.long)
            if idx.shape[0] != h.shape[0]:
                raise ValueError(f"Resample perm has {idx.shape[0]} entries for a batch of {h.shape[0]}")
        return _where(self, state, h, src[idx.to(src.device)])


@dataclass
class Splice(Edit):
    """Splice an SAE into the site: ``h + dec(z) - stop_grad(dec(z))`` with ``z = encode(h)``.

    The forward values are unchanged (the reconstruction error is kept), ``z`` is stored as a leaf that
    requires grad in ``state.codes[site]`` (so ``d metric / d z`` is the gradient through the decoder), and
    gradients to earlier sites still flow through ``h``. ``ablate``: feature indices to zero-ablate, i.e. the
    value becomes ``h - sum_{f in ablate} z_f W_dec[f]`` (the SAE reconstruction without those latents plus
    the untouched error; Marks et al.'s feature ablation). ``grad=False`` skips the leaf (cheaper).
    """

    sae: Any = None
    ablate: Sequence[int] = ()
    grad: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        from ..sae import check_sae

        check_sae(self.sae, name="Splice.sae")
        d_sae = int(self.sae.cfg.d_sae)
        feats = np.asarray(list(self.ablate), dtype=np.int64).ravel()
        bad = feats[(feats < 0) | (feats >= d_sae)]
        if bad.size:
            raise ValueError(f"feature indices {bad[:5].tolist()} out of range; this SAE has d_sae={d_sae} "
                             f"(valid: 0..{d_sae - 1})")
        self.ablate = sorted(set(feats.tolist()))

    def apply(self, h: Tensor, state: HookState) -> Tensor:
        sae = self.sae
        w_dtype = sae.W_dec.dtype
        out = h
        if self.ablate:
            idx = torch.as_tensor(self.ablate, dtype=torch.long, device=sae.W_dec.device)
            w_dec = sae.W_dec.detach()[idx]  # [k, d]
            with torch.no_grad():
                z = sae.encode(h.detach().to(w_dtype))[..., idx]
                delta = (z @ w_dec).to(h.dtype)
            out = _where(self, state, h, h - delta)
        if self.grad:
            z = sae.encode(out.detach().to(w_dtype)).detach().requires_grad_(True)
            state.codes[self.site] = z
            dec = sae.decode(z)
            out = out + (dec - dec.detach()).to(h.dtype)
        return out


@dataclass
class Custom(Edit):
    """Apply ``fn(h) -> new h or None`` (anything else the built-in edits do not cover)."""

    fn: Callable[[Tensor], Tensor | None] | None = None

    def apply(self, h: Tensor, state: HookState) -> Tensor | None:
        new = self.fn(h)
        return None if new is None else _where(self, state, h, new)


EDIT_TYPES = (Record, Replace, Add, Zero, Mean, Resample, Splice, Custom)


# --------------------------------------------------------------------------------------------------
# hook placement
# --------------------------------------------------------------------------------------------------


@dataclass
class HookState:
    """What the hooks of one :func:`hooked` context share: the position mask of the current batch, the
    recorded site values and the spliced SAE codes (leaves with ``requires_grad``)."""

    mask: Bool[Tensor, "batch pos"] | None = None
    records: dict[str, Tensor] = field(default_factory=dict)
    codes: dict[str, Tensor] = field(default_factory=dict)

    def clear(self) -> None:
        self.records.clear()
        self.codes.clear()


def _first(x: Any) -> Tensor:
    return x[0] if isinstance(x, (tuple, list)) else x


def _replace_first(output: Any, new: Tensor) -> Any:
    if isinstance(output, tuple):
        return (new, *output[1:])
    if isinstance(output, list):
        return [new, *output[1:]]
    return new


def _pre_hook(fn: Callable[[Tensor], Tensor | None]) -> Callable:
    def pre(_mod: Any, args: tuple, kwargs: dict) -> Any:
        if args:
            new = fn(args[0])
            return None if new is None else ((new, *args[1:]), kwargs)
        new = fn(kwargs["hidden_states"])
        return None if new is None else (args, {**kwargs, "hidden_states": new})

    return pre


def _post_hook(fn: Callable[[Tensor], Tensor | None]) -> Callable:
    def post(_mod: Any, _inp: Any, output: Any) -> Any:
        new = fn(_first(output))
        return None if new is None else _replace_first(output, new)

    return post


def _check_layer(adapter: Adapter, layer: int, site: str) -> None:
    if not 0 <= layer < adapter.n_layers:
        raise ValueError(f"site {site!r} is outside the model: it has layers 0..{adapter.n_layers - 1}")


def _register(adapter: Adapter, edit: Edit, state: HookState) -> list[Any]:
    """Register the hooks that apply ``edit`` (module docstring's table); returns their handles."""
    spec, root = adapter.spec, adapter.module
    p = parse_site(edit.site)

    def fn(h: Tensor) -> Tensor | None:
        return edit.apply(h, state)

    if p.kind == "out":
        return [adapter.resolve(root, spec.lm_head).register_forward_hook(_post_hook(fn))]
    layer = 0 if p.kind == "embed" else int(p.layer)
    _check_layer(adapter, layer, edit.site)
    block = adapter.layer_module(layer)
    if p.kind in ("embed", "resid_pre"):
        return [block.register_forward_pre_hook(_pre_hook(fn), with_kwargs=True)]
    if p.kind == "resid_post":
        return [block.register_forward_hook(_post_hook(fn))]
    if p.kind == "attn":
        return [adapter.resolve(block, spec.attn_out or spec.attn).register_forward_hook(_post_hook(fn))]
    if p.kind == "mlp":
        return [adapter.resolve(block, spec.mlp_out or spec.mlp).register_forward_hook(_post_hook(fn))]
    if p.head is None or not 0 <= p.head < adapter.n_heads:
        raise ValueError(f"site {edit.site!r}: the model has heads 0..{adapter.n_heads - 1}")
    return _register_head(adapter, block, layer, int(p.head), fn)


def _register_head(adapter: Adapter, block: Any, layer: int, head: int,
                   fn: Callable[[Tensor], Tensor | None]) -> list[Any]:
    spec = adapter.spec
    if spec.head_out is not None:  # Tracr: head_out's output is the stacked heads [B, T, H, d]
        def post(_mod: Any, _inp: Any, stacked: Tensor) -> Tensor | None:
            new = fn(stacked[:, :, head])
            if new is None:
                return None
            out = stacked.clone()
            out[:, :, head] = new
            return out

        return [adapter.resolve(block, spec.head_out).register_forward_hook(post)]
    box: dict[str, Tensor] = {}

    def pre(_mod: Any, args: tuple, kwargs: dict) -> None:
        box["z"] = args[0] if args else next(iter(kwargs.values()))

    def post(_mod: Any, _inp: Any, output: Any) -> Any:
        if "z" not in box:  # the module ran outside the attention path (e.g. a norm probed for its gain)
            return None
        z = box.pop("z")
        lead = z.shape[:-1]
        heads = adapter.head_outputs(layer, z.reshape(-1, z.shape[-1]))  # [rows, H, d]
        old = heads[:, head].reshape(*lead, -1)
        new = fn(old)
        if new is None:
            return None
        y = _first(output)
        return _replace_first(output, y + (new - old).to(y.dtype))

    proj = adapter.resolve(block, spec.o_proj)
    add_at = adapter.resolve(block, spec.attn_out) if spec.head_transform is not None else proj
    return [proj.register_forward_pre_hook(pre, with_kwargs=True), add_at.register_forward_hook(post)]


@contextlib.contextmanager
def hooked(model: Any, edits: Sequence[Edit]) -> Iterator[HookState]:
    """Register ``edits`` on ``model`` for the duration of the block; yields the shared :class:`HookState`.

    Edits at the same site apply in the order given (put a :class:`Record` last to see the edited value).
    Use it around your own ``model(...)`` calls; :func:`run_with_edits` is the batteries-included version.
    """
    module = module_of(model)
    adapter = model.adapter if hasattr(model, "adapter") else get_adapter(module)
    for e in edits:
        if not isinstance(e, Edit):
            raise TypeError(f"edits must be circuitkit.runtime edits {[t.__name__ for t in EDIT_TYPES]}, "
                            f"got {type(e).__name__}")
    state = HookState()
    handles: list[Any] = []
    try:
        for e in edits:
            handles.extend(_register(adapter, e, state))
        yield state
    finally:
        for h in handles:
            h.remove()


@dataclass
class RunResult:
    """Output of :func:`run_with_edits`: per-prompt logits ``[length, n_out]`` and recorded site values
    ``[length, d]`` (the positions of each prompt's real tokens)."""

    logits: list[Tensor]
    records: dict[str, list[Tensor]]


def call_model(module: torch.nn.Module, batch: Any) -> Tensor:
    """Run ``module`` on one input batch and return its output tensor (``.logits`` of HF outputs)."""
    args, kwargs = model_kwargs(batch)
    y = module(*args, **kwargs)
    return getattr(y, "logits", y)


def run_with_edits(
    model: Any,
    inputs: Any,
    *,
    edits: Sequence[Edit] = (),
    record: Sequence[str] = (),
    batch_size: int = 32,
    grad: bool = False,
) -> RunResult:
    """Run ``model`` over ``inputs`` with ``edits`` applied and ``record`` sites read after them.

    ``inputs``: prompts, token-id lists or a ``[batch, pos]`` tensor (as :func:`circuitkit.capture`). The
    mask used by ``masked=True`` edits is each prompt's real tokens after BOS (:mod:`circuitkit.sites`).
    """
    lm = load_model(model)
    ids, _ = tokenize(lm, inputs)
    edits = list(edits) + [Record(s) for s in record]
    logits: dict[int, Tensor] = {}
    recs: dict[str, dict[int, Tensor]] = {s: {} for s in record}
    ctx = torch.enable_grad() if grad else torch.no_grad()
    with ctx, hooked(lm, edits) as state:
        for batch in batches(lm, ids, batch_size):
            state.clear()
            state.mask = real_mask(batch)
            y = call_model(lm.module, batch)
            for r, (pid, length) in enumerate(zip(batch.prompt_ids, batch.lengths)):
                logits[pid] = y[r, :length]
                for s in record:
                    recs[s][pid] = state.records[s][r, :length]
    n = len(ids)
    return RunResult([logits[i] for i in range(n)], {s: [v[i] for i in range(n)] for s, v in recs.items()})


def pool(h: Float[Tensor, "batch pos d"], mask: Bool[Tensor, "batch pos"]) -> Float[Tensor, "batch d"]:
    """Mean of ``h`` over the positions where ``mask`` is true (one row per prompt)."""
    m = mask.to(h.dtype)[..., None]
    return (h * m).sum(1) / m.sum(1).clamp_min(1.0)


__all__ = [
    "EDIT_TYPES",
    "Add",
    "Custom",
    "Edit",
    "HookState",
    "Mean",
    "Record",
    "Replace",
    "Resample",
    "RunResult",
    "Splice",
    "StopForward",
    "Zero",
    "call_model",
    "hooked",
    "pool",
    "run_with_edits",
]
