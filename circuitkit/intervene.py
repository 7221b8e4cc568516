"""Interventions at component granularity: split per-target inputs, edge patching, input gradients.

Intervention-based circuit discovery (EAP, EAP-IG, exact activation patching; see
:mod:`circuitkit.baselines.eap`) needs, for every *target* component ``v``, its own copy of the residual
stream it reads ("input of v"), so that

* an edge ``u -> v`` can be patched alone: in v's input only, u's contribution is replaced by another
  value (e.g. its value on a corrupted prompt), while every other component reads the unmodified stream;
* ``dL/d(input of v)`` can be read per target. Heads of one layer read the *same* residual tensor inside
  the attention module, so a module-level gradient (what an nnsight ``.grad`` on ``block.input`` returns)
  sums over all readers of that stream (every head, the MLP via the skip connection, ``out``). The
  per-target gradient needs the stream split per reader, as TransformerLens' ``use_split_qkv_input`` does.

:func:`run_components` is that split forward. It walks the model component by component, on the same
modules the architecture adapter (:mod:`circuitkit.models.adapters`) names, and records every component's
residual contribution. Ordinary activation recording stays in :func:`circuitkit.capture` (nnsight);
this module runs plain torch because nnsight's hooks see module inputs, not per-head copies of them.

"Input of v": for a head ``L{l}.H{h}``, the residual entering block ``l`` (it feeds the head's query,
key and value); for ``L{l}.MLP``, the residual after layer ``l``'s attention; for ``out``, the final
residual. Supported architectures: ``tracr`` (circuitkit's Tracr port and any model loaded into it,
e.g. InterpBench's via :mod:`circuitkit.baselines.interpbench`). Add one with
:func:`register_component_runner`.

Example::

    >>> from circuitkit.models.tracr import load_tracr_task
    >>> task = load_tracr_task("hist")
    >>> ids = task.encode([["a", "b", "a"]])
    >>> run = run_components(task.model, ids)
    >>> sorted(run.outputs)[:3]
    ['L0.H0', 'L0.MLP', 'embed']
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

logger = logging.getLogger(__name__)

#: ``patch[v][u] = r``: in the input of ``v`` only, replace u's contribution by ``r`` (broadcastable to
#: ``[batch, pos, d_model]``; ``None`` means zero).
PatchSpec = Mapping[str, Mapping[str, "Tensor | None"]]

OUTPUT_KINDS = ("categorical", "numerical")


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


RunnerFn = Callable[..., ComponentRun]
_RUNNERS: dict[str, RunnerFn] = {}


def register_component_runner(arch: str, fn: RunnerFn) -> RunnerFn:
    """Register the split forward for an architecture name (the adapter's ``ArchSpec.name``)."""
    _RUNNERS[arch] = fn
    return fn


def _module_of(model: Any) -> torch.nn.Module:
    """The torch module behind ``model`` (a module, a LoadedModel, an nnsight envoy or a TracrTask)."""
    inner = getattr(model, "module", None)  # LoadedModel
    if isinstance(inner, torch.nn.Module):
        return inner
    inner = getattr(model, "model", None)  # TracrTask
    if isinstance(inner, torch.nn.Module):
        return inner
    inner = getattr(model, "_module", None)  # nnsight envoy
    if isinstance(inner, torch.nn.Module):
        return inner
    if isinstance(model, torch.nn.Module):
        return model
    raise ValueError(f"cannot find a torch module in {type(model).__name__}; pass a model, LoadedModel or task")


def _arch(module: torch.nn.Module) -> str:
    from .models.adapters import get_adapter

    return get_adapter(module).spec.name


def run_components(
    model: Any,
    ids: Int[Tensor, "batch pos"] | None = None,
    *,
    embed: Float[Tensor, "batch pos d_model"] | None = None,
    patch: PatchSpec | None = None,
    split_inputs: bool = False,
) -> ComponentRun:
    """Forward pass component by component, with per-target inputs (module docstring).

    Parameters
    ----------
    model: a supported model (torch module, :class:`~circuitkit.capturing.LoadedModel` or Tracr task).
    ids: token ids ``[batch, pos]``; or give ``embed`` instead.
    embed: the ``embed`` output to use (e.g. an interpolation between two prompts' embeddings, EAP-IG).
    patch: ``patch[v][u] = r`` replaces, in the input of ``v`` only, the contribution of ``u`` by ``r``.
    split_inputs: give every target its own input tensor with ``retain_grad()`` (for per-target gradients).

    Gradients flow only if the caller enables them (``torch.enable_grad()``); parameters are not
    differentiated unless they require grad.
    """
    module = _module_of(model)
    arch = _arch(module)
    if arch not in _RUNNERS:
        raise ValueError(
            f"component-level interventions are not implemented for architecture {arch!r}; supported: "
            f"{sorted(_RUNNERS)}. Register one with circuitkit.intervene.register_component_runner."
        )
    if (ids is None) == (embed is None):
        raise ValueError("pass exactly one of ids= or embed=")
    return _RUNNERS[arch](module, ids=ids, embed=embed, patch=patch or {}, split_inputs=split_inputs)


def _tracr_one_head(attn: Any, x: Float[Tensor, "batch pos d_model"], h: int) -> Float[Tensor, "batch pos d_model"]:
    """Head ``h``'s residual contribution computed from its own input ``x`` (only that head's weights)."""
    dh = attn.d_head
    cols = slice(h * dh, (h + 1) * dh)
    q = x @ attn.W_Q[:, cols] + attn.b_Q[cols]
    k = x @ attn.W_K[:, cols] + attn.b_K[cols]
    v = x @ attn.W_V[:, cols] + attn.b_V[cols]
    logits = torch.einsum("btd,bsd->bts", q, k) / math.sqrt(dh)
    if attn.causal:
        t = x.shape[-2]
        mask = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        logits = torch.where(mask, logits, torch.full_like(logits, -1e30))
    z = torch.einsum("bts,bsd->btd", torch.softmax(logits, dim=-1), v)
    return z @ attn.W_O[cols]


def _tracr_runner(module: Any, *, ids, embed, patch: PatchSpec, split_inputs: bool) -> ComponentRun:
    outs: dict[str, Tensor] = {}
    inputs: dict[str, Tensor] = {}
    outs["embed"] = module.embed(ids) if embed is None else embed

    def read(v: str, resid: Tensor) -> Tensor | None:
        """v's own input, or None when v may read the shared stream."""
        if v not in patch and not split_inputs:
            return None
        x = resid * 1.0 if split_inputs else resid  # a fresh non-leaf node per reader
        for u, r in patch.get(v, {}).items():
            if u not in outs:
                raise ValueError(f"cannot patch {u!r} -> {v!r}: {u!r} is not computed before {v!r}")
            x = x - outs[u] + (0.0 if r is None else r)
        if split_inputs:
            if x.requires_grad:
                x.retain_grad()
            inputs[v] = x
        return x

    resid = outs["embed"]
    for layer, block in enumerate(module.layers):
        attn = block.attn
        heads = [f"L{layer}.H{h}" for h in range(attn.n_heads)]
        own = [read(h, resid) for h in heads]
        shared = attn.per_head(resid) if any(x is None for x in own) else None
        per = []
        for i, x in enumerate(own):
            per.append(shared[:, :, i] if x is None else _tracr_one_head(attn, x, i))
        for h, p in zip(heads, per):
            outs[h] = p
        resid = resid + torch.stack(per, dim=2).sum(dim=2) + attn.b_O
        name = f"L{layer}.MLP"
        x = read(name, resid)
        outs[name] = block.mlp(resid if x is None else x)
        resid = resid + outs[name]
    x = read("out", resid)
    outs["out"] = module.unembed(resid if x is None else x)
    return ComponentRun(outs, inputs)


register_component_runner("tracr", _tracr_runner)


# --------------------------------------------------------------------------------------------------
# task metric
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
) -> dict[str, Float[Tensor, "batch pos d_model"]]:
    """``dL/d(input of v)`` for every site in ``target_sites`` (one forward + one backward)."""
    with torch.enable_grad():
        e = embed.detach().clone().requires_grad_(True)
        run = run_components(model, embed=e, split_inputs=True)
        loss = task_metric(run.outputs["out"], targets, output_kind=output_kind, skip_first=skip_first).sum()
        loss.backward()
    grads = {}
    for v in target_sites:
        x = run.inputs.get(v)
        if x is None:
            raise ValueError(f"{v!r} is not a target site of this model; targets: {sorted(run.inputs)}")
        grads[v] = x.grad.detach() if x.grad is not None else torch.zeros_like(x)
    return grads


__all__ = [
    "OUTPUT_KINDS",
    "ComponentRun",
    "answer_targets",
    "input_gradients",
    "register_component_runner",
    "run_components",
    "task_metric",
]
