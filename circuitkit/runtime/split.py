"""The split forward: every reader of the residual stream gets its own copy (edge patching, per-edge gradients).

Intervention-based circuit discovery (EAP, EAP-IG, exact activation patching; :mod:`circuitkit.baselines.eap`)
needs, for every *target* component ``v``, its own copy of the residual stream it reads ("input of v"):

* an edge ``u -> v`` can then be patched alone: in v's input only, u's contribution is replaced by another
  value, while every other component reads the unmodified stream;
* ``dL/d(input of v)`` can be read per target. Heads of one layer read the *same* tensor inside the
  attention module, so a module-level gradient sums over every reader; the per-target gradient needs the
  stream split per reader (TransformerLens' ``use_split_qkv_input``).

"Input of v": for a head ``L{l}.H{h}``, the residual entering block ``l`` (it feeds the head's query, key and
value, through the block's own input norm); for ``L{l}.MLP``, the residual after layer ``l``'s attention
(GPT-NeoX with parallel residual: the residual entering the block); for ``out``, the final residual.

How it works, for every supported architecture: while :func:`run_components` runs, each block of the
model's layer list is replaced by a wrapper that receives exactly what the model passes to the block (the
hidden states, attention mask, rotary embeddings, ...). For the heads, the wrapper stacks the heads' own
inputs along the batch dimension, runs the *original* block on them up to the attention output projection
(so norms, rotary embeddings, grouped-query attention and masks are the model's own code) and takes head
``h``'s slice of chunk ``h``; the MLP is called through the spec's ``mlp_in_norm`` on its own copy; the
wrapper returns ``resid + attn + MLP`` built from those components, and the model's own final norm and LM
head read ``out``'s copy. Without patches and without ``split_inputs`` the result equals the plain forward
(the test suite checks this on Tracr, GPT-2, GPT-NeoX, Llama and Gemma-2 configs).

Example::

    >>> from circuitkit.models.tracr import load_tracr_task
    >>> task = load_tracr_task("hist")
    >>> run = run_components(task.model, task.encode([["a", "b", "a"]]))
    >>> sorted(run.outputs)[:3]
    ['L0.H0', 'L0.MLP', 'embed']
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import transformers
from jaxtyping import Float, Int
from torch import Tensor

from ..models.adapters import Adapter, get_adapter
from .interventions import StopForward, _first, _post_hook, _pre_hook
from .loading import module_of

logger = logging.getLogger(__name__)

#: ``patch[v][u] = r``: in the input of ``v`` only, replace u's contribution by ``r`` (broadcastable to
#: ``[batch, pos, d_model]``; ``None`` means zero).
PatchSpec = Mapping[str, Mapping[str, "Tensor | None"]]

OUTPUT_KINDS = ("categorical", "numerical")

_TUPLE_BLOCK_OUTPUT = int(transformers.__version__.split(".")[0]) < 5  # transformers 4 blocks return tuples


@dataclass
class ComponentRun:
    """What :func:`run_components` recorded.

    ``outputs[site]``: the component's residual contribution ``[batch, pos, d_model]`` (``embed``, heads,
    MLPs) and, for ``out``, the model output ``[batch, pos, n_out]``. ``inputs[v]`` (only with
    ``split_inputs=True``): the residual tensor target ``v`` read, a non-leaf tensor whose ``.grad`` is
    retained after ``backward()``.
    """

    outputs: dict[str, Tensor]
    inputs: dict[str, Tensor] = field(default_factory=dict)


class _Ctx:
    def __init__(self, adapter: Adapter, patch: PatchSpec, split_inputs: bool, embed: Tensor | None) -> None:
        self.adapter = adapter
        self.patch = patch
        self.split_inputs = split_inputs
        self.embed = embed
        self.outs: dict[str, Tensor] = {}
        self.inputs: dict[str, Tensor] = {}

    def read(self, v: str, resid: Tensor) -> Tensor | None:
        """v's own input, or ``None`` when v may read the shared stream."""
        if v not in self.patch and not self.split_inputs:
            return None
        x = resid * 1.0 if self.split_inputs else resid  # a fresh non-leaf node per reader
        for u, r in self.patch.get(v, {}).items():
            if u not in self.outs:
                raise ValueError(f"cannot patch {u!r} -> {v!r}: {u!r} is not computed before {v!r}")
            x = x - self.outs[u] + (0.0 if r is None else r)
        if self.split_inputs:
            if x.requires_grad:
                x.retain_grad()
            self.inputs[v] = x
        return x


def _tile(x: Any, batch: int, n: int) -> Any:
    """Repeat every tensor whose leading dimension is the batch ``n`` times along it (nested containers too)."""
    if n == 1:
        return x
    if isinstance(x, Tensor):
        return x.repeat(n, *([1] * (x.ndim - 1))) if x.ndim and x.shape[0] == batch and batch > 1 else x
    if isinstance(x, tuple):
        return tuple(_tile(v, batch, n) for v in x)
    if isinstance(x, list):
        return [_tile(v, batch, n) for v in x]
    if isinstance(x, dict):
        return {k: _tile(v, batch, n) for k, v in x.items()}
    return x


class _SplitBlock(torch.nn.Module):
    """Stands in for block ``layer`` during :func:`run_components` (module docstring)."""

    def __init__(self, inner: torch.nn.Module, layer: int, ctx: _Ctx) -> None:
        super().__init__()
        self.inner = inner
        self.layer = layer
        self._ctx = ctx

    def __getattr__(self, name: str) -> Any:  # the adapter resolves norms etc. through the layer list
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["inner"], name)

    def _heads(self, x: Tensor, args: tuple, kwargs: dict, n: int) -> Float[Tensor, "rows pos head d_model"]:
        """Per-head contributions from running the original block on ``x`` (``n`` stacked chunks)."""
        ad, spec, blk = self._ctx.adapter, self._ctx.adapter.spec, self.inner
        batch = x.shape[0] // n
        box: dict[str, Tensor] = {}
        if spec.head_out is not None:
            def grab(_m: Any, _i: Any, out: Tensor) -> None:
                box["heads"] = out
                raise StopForward

            handle = ad.resolve(blk, spec.head_out).register_forward_hook(grab)
        else:
            def grab_pre(_m: Any, a: tuple, kw: dict) -> None:
                box["z"] = a[0] if a else next(iter(kw.values()))
                raise StopForward

            handle = ad.resolve(blk, spec.o_proj).register_forward_pre_hook(grab_pre, with_kwargs=True)
        try:
            blk(x, *_tile(args, batch, n), **_tile(kwargs, batch, n))
        except StopForward:
            pass
        finally:
            handle.remove()
        if "heads" in box:
            return box["heads"]
        z = box["z"]
        heads = ad.head_outputs(self.layer, z.reshape(-1, z.shape[-1]))
        return heads.reshape(*z.shape[:-1], *heads.shape[1:])

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        ctx, ad, spec, layer = self._ctx, self._ctx.adapter, self._ctx.adapter.spec, self.layer
        if args:
            hidden, rest = args[0], args[1:]
        else:
            hidden, rest = kwargs.pop("hidden_states"), ()
        if layer == 0:
            ctx.outs["embed"] = hidden if ctx.embed is None else ctx.embed
            hidden = ctx.outs["embed"]
        resid = hidden
        names = [f"L{layer}.H{h}" for h in range(ad.n_heads)]
        own = [ctx.read(v, resid) for v in names]
        chunks: list[Tensor] = []
        where: list[int] = []
        if any(x is None for x in own):
            chunks.append(resid)
        for x in own:
            if x is None:
                where.append(0)
            else:
                chunks.append(x)
                where.append(len(chunks) - 1)
        batch = resid.shape[0]
        stacked = self._heads(torch.cat(chunks, dim=0) if len(chunks) > 1 else chunks[0], rest, kwargs, len(chunks))
        per = [stacked[c * batch:(c + 1) * batch, :, h] for h, c in enumerate(where)]
        for v, p in zip(names, per):
            ctx.outs[v] = p
        attn = torch.stack(per, dim=2).sum(dim=2)
        if spec.attn_bias is not None:
            attn = attn + ad.resolve(self.inner, spec.attn_bias)
        mlp_name = f"L{layer}.MLP"
        parallel = ad.is_parallel()
        if parallel and any(u in names for u in ctx.patch.get(mlp_name, {})):
            raise ValueError(f"cannot patch a head of layer {layer} into {mlp_name!r}: with a parallel residual "
                             "(GPT-NeoX use_parallel_residual) the MLP reads the block's input, not its heads")
        base = resid if parallel else resid + attn
        x = ctx.read(mlp_name, base)
        h = base if x is None else x
        if spec.mlp_in_norm is not None:
            h = _first(ad.resolve(self.inner, spec.mlp_in_norm)(h))
        m = _first(ad.resolve(self.inner, spec.mlp)(h))
        if spec.mlp_out is not None:
            m = _first(ad.resolve(self.inner, spec.mlp_out)(m))
        ctx.outs[mlp_name] = m
        new = resid + attn + m
        return (new,) if _TUPLE_BLOCK_OUTPUT and spec.name != "tracr" else new


def run_components(
    model: Any,
    ids: Int[Tensor, "batch pos"] | None = None,
    *,
    attention_mask: Int[Tensor, "batch pos"] | None = None,
    embed: Float[Tensor, "batch pos d_model"] | None = None,
    patch: PatchSpec | None = None,
    split_inputs: bool = False,
) -> ComponentRun:
    """Forward pass component by component, with per-target inputs (module docstring).

    Parameters
    ----------
    model: a supported model (torch module, :class:`~circuitkit.runtime.LoadedModel` or Tracr task).
    ids: token ids ``[batch, pos]``; or give ``embed`` instead (then the ids only fix the shape).
    attention_mask: for right-padded HF batches (``1`` = real token).
    embed: the ``embed`` output to use (e.g. an interpolation between two prompts' embeddings, EAP-IG).
    patch: ``patch[v][u] = r`` replaces, in the input of ``v`` only, the contribution of ``u`` by ``r``.
    split_inputs: give every target its own input tensor with ``retain_grad()`` (for per-target gradients).

    Gradients flow only if the caller enables them (``torch.enable_grad()``); parameters are not
    differentiated unless they require grad.
    """
    module = module_of(model)
    adapter = get_adapter(module)
    if ids is None and embed is None:
        raise ValueError("pass ids= (token ids) or embed= (the embedding to run from)")
    if ids is None:
        ids = torch.zeros(embed.shape[:2], dtype=torch.long, device=embed.device)
    patch = patch or {}
    known = set(adapter.sites)
    bad = sorted({*patch, *(u for d in patch.values() for u in d)} - known)
    if bad:
        raise ValueError(f"unknown site(s) {bad} in patch; this model's sites include {adapter.sites[:6]}...")
    ctx = _Ctx(adapter, patch, split_inputs, embed)
    spec = adapter.spec
    layers = adapter.resolve(module, spec.layers)
    originals = list(layers)
    reader = adapter.resolve(module, spec.final_norm) if spec.final_norm else adapter.resolve(module, spec.lm_head)

    def final_input(h: Tensor) -> Tensor | None:
        return ctx.read("out", h)

    def record_out(h: Tensor) -> None:
        ctx.outs["out"] = h

    handles = []
    try:
        for i, blk in enumerate(originals):
            layers[i] = _SplitBlock(blk, i, ctx)
        handles.append(reader.register_forward_pre_hook(_pre_hook(final_input), with_kwargs=True))
        handles.append(adapter.resolve(module, spec.lm_head).register_forward_hook(_post_hook(record_out)))
        if spec.name == "tracr":
            module(ids)
        else:
            module(input_ids=ids, attention_mask=attention_mask, use_cache=False)
    finally:
        for h in handles:
            h.remove()
        for i, blk in enumerate(originals):
            layers[i] = blk
    return ComponentRun(ctx.outs, ctx.inputs)


# --------------------------------------------------------------------------------------------------
# task metric and per-target gradients
# --------------------------------------------------------------------------------------------------


def answer_targets(out: Float[Tensor, "batch pos n_out"], *,
                   output_kind: Literal["categorical", "numerical"]) -> Tensor:
    """What the metric compares against: the clean run's argmax class (categorical) or nothing
    (numerical; returns the clean output itself, unused by :func:`task_metric`)."""
    if output_kind not in OUTPUT_KINDS:
        raise ValueError(f"unknown output_kind {output_kind!r}; valid: {OUTPUT_KINDS}")
    return out.argmax(dim=-1) if output_kind == "categorical" else out[..., 0]


def task_metric(out: Float[Tensor, "batch pos n_out"], targets: Tensor, *,
                output_kind: Literal["categorical", "numerical"], skip_first: int = 1) -> Float[Tensor, " batch"]:
    """Per-prompt task metric ``L``, summed over output positions (the first ``skip_first`` = BOS skipped).

    * categorical: ``log_softmax(out)[clean answer]``, the log-probability of the clean run's output;
    * numerical: the output value itself.
    """
    if output_kind == "categorical":
        logp = torch.log_softmax(out, dim=-1)
        val = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    elif output_kind == "numerical":
        val = out[..., 0]
    else:
        raise ValueError(f"unknown output_kind {output_kind!r}; valid: {OUTPUT_KINDS}")
    return val[:, skip_first:].sum(dim=-1)


def input_gradients(
    model: Any,
    *,
    embed: Float[Tensor, "batch pos d_model"],
    targets: Tensor,
    output_kind: Literal["categorical", "numerical"],
    target_sites: list[str],
    skip_first: int = 1,
    metric: Callable[[Tensor], Tensor] | None = None,
) -> dict[str, Float[Tensor, "batch pos d_model"]]:
    """``dL/d(input of v)`` for every site in ``target_sites`` (one forward + one backward).

    ``L`` is :func:`task_metric` of ``targets``, or ``metric(out)`` (a ``[batch]`` tensor from the output
    ``[batch, pos, n_out]``; then ``targets`` is unused) when given, summed over the batch.
    """
    with torch.enable_grad():
        e = embed.detach().clone().requires_grad_(True)
        run = run_components(model, embed=e, split_inputs=True)
        if metric is None:
            loss = task_metric(run.outputs["out"], targets, output_kind=output_kind, skip_first=skip_first).sum()
        else:
            loss = metric(run.outputs["out"]).sum()
        loss.backward()
    grads = {}
    for v in target_sites:
        x = run.inputs.get(v)
        if x is None:
            raise ValueError(f"{v!r} is not a target site of this model; targets: {sorted(run.inputs)}")
        grads[v] = x.grad.detach() if x.grad is not None else torch.zeros_like(x)
    return grads


__all__ = ["OUTPUT_KINDS", "ComponentRun", "PatchSpec", "answer_targets", "input_gradients", "run_components",
           "task_metric"]
