"""Architecture adapters: where each circuitkit site lives inside a model.

An adapter maps the site names of :mod:`circuitkit.sites` to module paths of one architecture and knows
how to turn what nnsight saved into per-site tensors. nnsight (0.8) requires that module outputs are
requested *in execution order* inside one trace, so an adapter yields its requests layer by layer.

Per-head outputs are taken where they are exact: the input of the attention output projection
(``z``, all heads concatenated) is split by head and multiplied by that head's slice of ``W_O``. The
projection bias is spread evenly over the heads (``b_O / n_heads``) so that the heads sum exactly to
the attention output; a constant offset changes neither a regression with intercept nor an
attribution difference.

To add an architecture, register an :class:`ArchSpec`::

    from circuitkit.models.adapters import ArchSpec, register_arch
    register_arch(ArchSpec(name="myarch", model_types=("myarch",), layers="model.layers",
                           o_proj="self_attn.o_proj", o_proj_layout="linear", attn="self_attn",
                           mlp="mlp", lm_head="lm_head", n_layers_attr="num_hidden_layers",
                           n_heads_attr="num_attention_heads"))
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from ..sites import all_sites, parse_site

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArchSpec:
    """Module paths of one architecture (paths relative to the model root, or to a layer).

    Attributes
    ----------
    layers: path of the ``ModuleList`` of blocks, e.g. ``"transformer.h"``.
    attn: path (relative to a block) of the attention module; its output (or ``[0]``) is ``L{l}.attn``.
    o_proj: path (relative to a block) of the attention output projection whose *input* is ``z``;
        ``None`` when ``head_out`` is given.
    o_proj_layout: ``"conv1d"`` (GPT-2: ``x @ W + b``, W is ``[in, out]``) or ``"linear"`` (``x @ W.T + b``).
    head_out: path (relative to a block) of a module whose output is the stacked per-head
        contributions ``[batch, pos, head, d_model]`` (circuitkit's own Tracr modules).
    attn_out: optional module (relative to a block) whose output is what attention adds to the residual,
        when that differs from the attention module's output (e.g. a post-attention norm).
    mlp: path (relative to a block) of the MLP; ``mlp_out`` likewise for a post-MLP norm.
    lm_head: path of the module whose output is ``out`` (logits).
    head_transform: optional ``f(adapter, layer, heads) -> heads`` applied to the per-head outputs
        ``[rows, head, d_model]`` computed from ``o_proj``'s input, for architectures whose attention
        contribution is not ``o_proj``'s output (Gemma-2: a post-attention RMSNorm; see
        :mod:`circuitkit.models.archs`).
    """

    name: str
    model_types: tuple[str, ...]
    layers: str
    attn: str
    mlp: str
    lm_head: str
    o_proj: str | None = None
    o_proj_layout: Literal["conv1d", "linear"] = "linear"
    head_out: str | None = None
    attn_out: str | None = None
    mlp_out: str | None = None
    n_layers_attr: str = "n_layer"
    n_heads_attr: str = "n_head"
    matches: Callable[[Any], bool] | None = field(default=None, compare=False)
    head_transform: Callable[[Any, int, Tensor], Tensor] | None = field(default=None, compare=False)
    notes: str = ""


_REGISTRY: dict[str, ArchSpec] = {}


def register_arch(spec: ArchSpec) -> ArchSpec:
    """Register an architecture (later registrations with the same name replace earlier ones)."""
    _REGISTRY[spec.name] = spec
    return spec


def registered_archs() -> list[str]:
    return sorted(_REGISTRY)


register_arch(
    ArchSpec(
        name="gpt2",
        model_types=("gpt2",),
        layers="transformer.h",
        attn="attn",
        o_proj="attn.c_proj",
        o_proj_layout="conv1d",
        mlp="mlp",
        lm_head="lm_head",
        n_layers_attr="n_layer",
        n_heads_attr="n_head",
        notes="GPT-2 (HF GPT2LMHeadModel); also the embedded toy LM.",
    )
)


def _is_tracr(module: Any) -> bool:
    return type(module).__name__ == "TracrTransformer"


register_arch(
    ArchSpec(
        name="tracr",
        model_types=(),
        layers="layers",
        attn="attn",
        head_out="attn.head_out",
        mlp="mlp",
        lm_head="unembed",
        matches=_is_tracr,
        notes="circuitkit's torch port of Tracr-compiled models (circuitkit.models.tracr).",
    )
)


def _get(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _first(x: Any) -> Any:
    """Module outputs are tensors in recent transformers and tuples in older ones: take the tensor."""
    if isinstance(x, (tuple, list)):
        return x[0]
    return x


@dataclass
class Adapter:
    """An :class:`ArchSpec` bound to one model instance (its sizes and weights)."""

    spec: ArchSpec
    module: torch.nn.Module
    n_layers: int
    n_heads: int

    @property
    def sites(self) -> list[str]:
        return all_sites(self.n_layers, self.n_heads)

    def layer_module(self, layer: int) -> torch.nn.Module:
        return _get(self.module, self.spec.layers)[layer]

    # -- in-trace requests -------------------------------------------------------------------------
    def raw_keys(self, sites: list[str]) -> list[tuple[str, int | None]]:
        """The raw tensors that must be saved for ``sites``, as ``(kind, layer)`` in execution order."""
        need: set[tuple[str, int | None]] = set()
        for s in sites:
            p = parse_site(s)
            if p.kind == "embed":
                need.add(("resid_pre", 0))
            elif p.kind == "out":
                need.add(("out", None))
            elif p.kind == "head":
                need.add(("z", p.layer))
            else:
                need.add((p.kind, p.layer))
        order = {"resid_pre": 0, "z": 1, "attn": 2, "mlp": 3, "resid_post": 4}

        def key(k: tuple[str, int | None]) -> tuple[float, int]:
            if k[0] == "out":
                return (float("inf"), 0)
            return (float(k[1]), order[k[0]])

        return sorted(need, key=key)

    def request(self, envoy: Any, keys: list[tuple[str, int | None]], saved: dict) -> None:
        """Inside an nnsight trace: save the raw tensors for ``keys`` (in execution order) into ``saved``.

        nnsight runs the body of a ``with model.trace(...)`` block itself and only hands back names bound
        to saved values, so results go into a dict created *before* the block.
        """
        spec = self.spec
        layers = _get(envoy, spec.layers)
        for kind, layer in keys:
            if kind == "out":
                saved[(kind, layer)] = _get(envoy, spec.lm_head).output.save()
                continue
            block = layers[layer]
            if kind == "resid_pre":
                saved[(kind, layer)] = block.input.save()
            elif kind == "z":
                if spec.head_out is not None:
                    saved[(kind, layer)] = _get(block, spec.head_out).output.save()
                else:
                    saved[(kind, layer)] = _get(block, spec.o_proj).input.save()
            elif kind == "attn":
                mod = _get(block, spec.attn_out or spec.attn)
                saved[(kind, layer)] = mod.output.save()
            elif kind == "mlp":
                saved[(kind, layer)] = _get(block, spec.mlp_out or spec.mlp).output.save()
            elif kind == "resid_post":
                saved[(kind, layer)] = block.output.save()
            else:  # pragma: no cover - guarded by raw_keys
                raise ValueError(f"unknown raw kind {kind!r}")

    # -- post-processing ---------------------------------------------------------------------------
    def head_outputs(self, layer: int, z: Tensor) -> Float[Tensor, "rows head d_model"]:
        """Per-head residual contributions from the saved raw ``z`` of ``layer`` (rows already selected)."""
        spec = self.spec
        if spec.head_out is not None:
            return z  # already [rows, head, d_model]
        block = self.layer_module(layer)
        proj = _get(block, spec.o_proj)
        weight = proj.weight.detach()
        if spec.o_proj_layout == "conv1d":
            w_in_out = weight  # [H*dh, d]
        else:
            w_in_out = weight.T  # Linear stores [out, in]
        n_heads = self.n_heads
        d_in = w_in_out.shape[0]
        if d_in % n_heads:
            raise ValueError(f"output projection input width {d_in} is not divisible by n_heads={n_heads}")
        d_head = d_in // n_heads
        zz = z.reshape(z.shape[0], n_heads, d_head).to(w_in_out.dtype)
        w = w_in_out.reshape(n_heads, d_head, -1)
        heads = torch.einsum("rhk,hkd->rhd", zz, w)
        bias = getattr(proj, "bias", None)
        if bias is not None:
            heads = heads + bias.detach() / n_heads
        if spec.head_transform is not None:
            heads = spec.head_transform(self, layer, heads)
        return heads

    def finalize(self, raw: dict[tuple[str, int | None], Tensor], sites: list[str]) -> dict[str, Tensor]:
        """Turn row-selected raw tensors into per-site ``[rows, d]`` tensors."""
        out: dict[str, Tensor] = {}
        heads_cache: dict[int, Tensor] = {}
        for s in sites:
            p = parse_site(s)
            if p.kind == "embed":
                out[s] = raw[("resid_pre", 0)]
            elif p.kind == "out":
                out[s] = raw[("out", None)]
            elif p.kind == "head":
                if p.layer not in heads_cache:
                    heads_cache[p.layer] = self.head_outputs(p.layer, raw[("z", p.layer)])
                out[s] = heads_cache[p.layer][:, p.head, :]
            else:
                out[s] = raw[(p.kind, p.layer)]
        return out


def unwrap_output(x: Any) -> Tensor:
    """The tensor a module returned (first element of a tuple output)."""
    return _first(x)


def _underlying(model: Any) -> torch.nn.Module:
    """The torch module behind an nnsight envoy (or the module itself)."""
    inner = getattr(model, "_module", None)
    if isinstance(inner, torch.nn.Module):
        return inner
    if isinstance(model, torch.nn.Module):
        return model
    raise ValueError(f"cannot find a torch module in {type(model).__name__}")


def get_adapter(model: Any) -> Adapter:
    """Find the adapter for ``model`` (a torch module or an nnsight wrapper around one).

    Raises ``ValueError`` listing the supported architectures (and how to add one) otherwise.
    """
    from . import archs  # noqa: F401  (registers GPT-NeoX, Llama-family and Gemma specs; lazy)

    module = _underlying(model)
    config = getattr(module, "config", None)
    model_type = getattr(config, "model_type", None)
    for spec in _REGISTRY.values():
        hit = (spec.matches is not None and spec.matches(module)) or (
            model_type is not None and model_type in spec.model_types
        )
        if not hit:
            continue
        if spec.name == "tracr":
            layers = _get(module, spec.layers)
            n_layers = len(layers)
            n_heads = getattr(module, "n_heads", None)
            if n_heads is None and n_layers:
                n_heads = getattr(layers[0].attn, "n_heads", None)
            if n_heads is None:
                raise ValueError("Tracr module has no `n_heads` attribute; rebuild it with circuitkit.models.tracr")
            n_heads = int(n_heads)
        else:
            n_layers = int(getattr(config, spec.n_layers_attr))
            n_heads = int(getattr(config, spec.n_heads_attr))
        return Adapter(spec=spec, module=module, n_layers=n_layers, n_heads=n_heads)
    described = model_type or type(module).__name__
    raise ValueError(
        f"unsupported architecture {described!r}; supported: {', '.join(registered_archs())}. "
        "Add one with circuitkit.models.adapters.register_arch(ArchSpec(...)) naming its layer list, "
        "attention, output projection, MLP and LM head paths."
    )
