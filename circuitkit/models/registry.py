"""The architecture registry: which :class:`~circuitkit.models.specs.ArchSpec` describes a model.

Built-in specs come from :mod:`circuitkit.models.archs`; users add their own with :func:`register_arch`::

    from circuitkit.models.registry import register_arch
    from circuitkit.models.specs import ArchSpec
    register_arch(ArchSpec(name="myarch", model_types=("myarch",), layers="model.layers",
                           o_proj="self_attn.o_proj", o_proj_layout="linear", attn="self_attn",
                           mlp="mlp", mlp_in_norm="post_attention_layernorm", final_norm="model.norm",
                           lm_head="lm_head", n_layers_attr="num_hidden_layers",
                           n_heads_attr="num_attention_heads"))

Import order (no cycles): ``specs`` <- ``archs`` <- ``registry`` <- ``adapters``.
"""

from __future__ import annotations

from typing import Any

from .archs import BUILTIN_SPECS
from .specs import ArchSpec

_REGISTRY: dict[str, ArchSpec] = {spec.name: spec for spec in BUILTIN_SPECS}


def register_arch(spec: ArchSpec) -> ArchSpec:
    """Register an architecture (a later registration with the same name replaces the earlier one)."""
    if not isinstance(spec, ArchSpec):
        raise TypeError(f"register_arch needs an ArchSpec, got {type(spec).__name__}")
    _REGISTRY[spec.name] = spec
    return spec


def registered_archs() -> list[str]:
    """Names of every registered architecture."""
    return sorted(_REGISTRY)


def find_spec(module: Any) -> ArchSpec | None:
    """The spec whose ``matches(module)`` is true or whose ``model_types`` hold ``module.config.model_type``."""
    model_type = getattr(getattr(module, "config", None), "model_type", None)
    for spec in _REGISTRY.values():
        if spec.matches is not None and spec.matches(module):
            return spec
        if model_type is not None and model_type in spec.model_types:
            return spec
    return None


__all__ = ["find_spec", "register_arch", "registered_archs"]
