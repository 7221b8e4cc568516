"""Architecture adapters: where each circuitkit site lives inside a model.

An adapter maps the site names of :mod:`circuitkit.sites` to module paths of one architecture and knows
how to turn what nnsight saved into per-site tensors. nnsight (0.8) requires that module outputs are
requested *in execution order* inside one trace, so an adapter yields its requests layer by layer.

Per-head outputs are taken where they are exact: the input of the attention output projection
(``z``, all heads concatenated) is split by head and multiplied by that head's slice of ``W_O``. The
projection bias is spread evenly over the heads (``b_O / n_heads``) so that the heads sum exactly to
the attention output; a constant offset changes neither a regression with intercept nor an
attribution difference.

To add an architecture, register an :class:`~circuitkit.models.specs.ArchSpec` with
:func:`circuitkit.models.registry.register_arch` (example there). Adapters describe where things are; they
never run a model (:mod:`circuitkit.runtime` does).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from ..sites import all_sites, parse_site
from .registry import find_spec, register_arch, registered_archs
from .specs import ArchSpec, get_path

_get = get_path

logger = logging.getLogger(__name__)


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

    def raw_location(self, kind: str, layer: int | None) -> tuple[str, Literal["input", "output"]]:
        """Where the raw tensor ``(kind, layer)`` lives: ``(module path from the model root, "input"|"output")``."""
        spec = self.spec
        if kind == "out":
            return spec.lm_head, "output"
        block = f"{spec.layers}.{int(layer)}"
        if kind == "resid_pre":
            return block, "input"
        if kind == "z":
            if spec.head_out is not None:
                return f"{block}.{spec.head_out}", "output"
            return f"{block}.{spec.o_proj}", "input"
        if kind == "attn":
            return f"{block}.{spec.attn_out or spec.attn}", "output"
        if kind == "mlp":
            return f"{block}.{spec.mlp_out or spec.mlp}", "output"
        if kind == "resid_post":
            return block, "output"
        raise ValueError(f"unknown raw kind {kind!r}; valid: resid_pre, z, attn, mlp, resid_post, out")

    @staticmethod
    def resolve(root: Any, path: str) -> Any:
        """The module (or nnsight envoy) at ``path`` under ``root``; integer parts index module lists."""
        obj = root
        for part in path.split("."):
            obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
        return obj

    def is_parallel(self) -> bool:
        """Whether attention and MLP both read ``resid_pre`` (GPT-NeoX ``use_parallel_residual``)."""
        attr = self.spec.parallel_attr
        return bool(attr and getattr(getattr(self.module, "config", None), attr, False))

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
    module = _underlying(model)
    config = getattr(module, "config", None)
    spec = find_spec(module)
    if spec is None:
        described = getattr(config, "model_type", None) or type(module).__name__
        raise ValueError(
            f"unsupported architecture {described!r}; supported: {', '.join(registered_archs())}. "
            "Add one with circuitkit.models.registry.register_arch(ArchSpec(...)) naming its layer list, "
            "attention, output projection, MLP and LM head paths."
        )
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


__all__ = ["Adapter", "ArchSpec", "get_adapter", "register_arch", "registered_archs", "unwrap_output"]
