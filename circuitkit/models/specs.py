"""Architecture specs: where each circuitkit site lives inside one model family (data, no behaviour).

:mod:`circuitkit.models.archs` holds the built-in specs, :mod:`circuitkit.models.registry` the registry,
:mod:`circuitkit.models.adapters` binds a spec to a model instance. Nothing here runs a model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import Tensor


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
    mlp_in_norm: path (relative to a block) of the norm the MLP reads through (``ln_2``,
        ``post_attention_layernorm``, ``pre_feedforward_layernorm``); ``None`` when the MLP reads the raw
        residual (Tracr). Used by the split forward, which calls ``mlp(mlp_in_norm(x))`` on a reader's copy.
    final_norm: path of the norm between the last block and ``lm_head`` (``None``: none, Tracr).
    parallel_attr: config attribute that, when true, makes attention and MLP both read ``resid_pre``
        (GPT-NeoX's ``use_parallel_residual``); ``None``: always sequential.
    attn_bias: path (relative to a block) of a bias added once after the heads are summed (Tracr's
        ``attn.b_O``); HF projections spread their bias over the heads instead.
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
    mlp_in_norm: str | None = None
    final_norm: str | None = None
    parallel_attr: str | None = None
    attn_bias: str | None = None
    matches: Callable[[Any], bool] | None = field(default=None, compare=False)
    head_transform: Callable[[Any, int, Tensor], Tensor] | None = field(default=None, compare=False)
    notes: str = ""


def get_path(obj: Any, path: str) -> Any:
    """``obj.a.b.c`` for ``path="a.b.c"`` (works on torch modules and nnsight envoys alike)."""
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


__all__ = ["ArchSpec", "get_path"]
