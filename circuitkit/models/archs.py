"""Architecture specs for Hugging Face model families beyond GPT-2.

This module only *describes* architectures: :data:`BUILTIN_SPECS` is read by
:mod:`circuitkit.models.registry`. Besides GPT-2 (also the embedded toy LM) and circuitkit's Tracr port:

==============  =======================================  ==============================================
spec            HF ``model_type``                        notes
==============  =======================================  ==============================================
``gpt_neox``    ``gpt_neox`` (Pythia)                    parallel residual (``use_parallel_residual``)
``llama``       ``llama``, ``mistral``, ``qwen2``,       grouped-query attention
                ``qwen3``
``gemma``       ``gemma`` (Gemma 1)                      embedding scaled by ``sqrt(d_model)``
``gemma2``      ``gemma2``, ``gemma3_text``              post-attention / post-feedforward RMSNorms
==============  =======================================  ==============================================

What every site means (see :mod:`circuitkit.sites`) and why it is exact:

* ``embed`` is the input of block 0 (``hidden_states[0]``), so the Gemma embedding scale
  (``* sqrt(d_model)``, applied inside the model's forward) and Pythia's rotary-only positions are
  included as the model computes them.
* ``L{l}.resid_pre`` / ``L{l}.resid_post`` are the input / output of block ``l``. They equal HF's
  ``hidden_states[l]`` / ``hidden_states[l+1]``, except that HF's *last* hidden state has the final
  norm applied and ``L{last}.resid_post`` does not.
* ``L{l}.attn`` and ``L{l}.MLP`` are what the attention and the MLP add to the residual stream, so
  ``resid_post - resid_pre == attn + MLP`` for every family. GPT-NeoX with
  ``use_parallel_residual=True`` (all Pythia models) computes both from ``resid_pre``; the identity still
  holds. For Gemma-2/3 they are the outputs of ``post_attention_layernorm`` and
  ``post_feedforward_layernorm`` (TransformerLens's ``hook_attn_out`` / ``hook_mlp_out`` are taken at
  the same place, so Gemma Scope's MLP SAEs attach to ``L{l}.MLP``).
* ``L{l}.H{h}``: the input of the attention output projection (``o_proj`` / ``dense``; with grouped-query
  attention it is still ``n_heads * d_head`` wide, one slice per *query* head) split by head and
  multiplied by that head's slice of the projection weight (+ ``bias / n_heads``). The heads sum exactly
  to the projection's output, which is ``L{l}.attn`` for GPT-NeoX and the Llama family.

Gemma-2/3 heads (a documented decision)
---------------------------------------
Gemma-2 writes ``post_attention_layernorm(o_proj(z))`` into the residual stream. That RMSNorm is not
linear in the heads: ``norm(s) = s * g / rms(s)`` with ``s = sum_h head_h``. circuitkit *freezes the
norm's scale at its actual value for each token* (the usual "frozen LayerNorm" linearisation, as
TransformerLens does when it folds norm scales): ``L{l}.H{h} = head_h * g / rms(s)``. Then

* the heads sum exactly to ``L{l}.attn`` (the post-norm contribution), like in every other family, so
  heads remain additive components of the residual stream and CircuitLasso's component sites
  (``embed``, heads, MLPs) still add up to the residual;
* multiplying each head by the same per-token factor ``rms(s) / g`` (elementwise) gives back the
  pre-norm per-head outputs ``z_h @ W_O[h]``, which sum to the ``o_proj`` output (the test suite checks
  both sums).

The price: a head's value depends on the other heads through ``rms(s)`` (one positive scalar per
token), so ablating one head is not exactly "subtract its column". ``out`` is ``lm_head``'s output, i.e.
the logits *before* Gemma-2's final logit soft-capping (``tanh``), which keeps it linear in the residual.

Adding another family: register an :class:`~circuitkit.models.specs.ArchSpec` with
:func:`circuitkit.models.registry.register_arch` naming its block list,
attention, output projection, MLP and LM head (see the table below in the code for examples) and run
``tests/test_archs.py``'s checks on a random-weight config of it.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from .specs import ArchSpec
from .specs import get_path as _get

#: HF ``model_type`` values that circuitkit supports, by family (used by the sae_lens catalogue).
SUPPORTED_MODEL_TYPES: dict[str, tuple[str, ...]] = {
    "gpt2": ("gpt2",),
    "gpt_neox": ("gpt_neox",),
    "llama": ("llama", "mistral", "qwen2", "qwen3"),
    "gemma": ("gemma",),
    "gemma2": ("gemma2", "gemma3_text"),
}


def _rms_norm_gain_eps(norm: torch.nn.Module) -> tuple[Tensor, float]:
    """The gain vector ``g`` and ``eps`` of a bias-free RMSNorm ``x -> x * g / sqrt(mean(x^2) + eps)``.

    The gain is read off the module itself (``norm(1) * sqrt(1 + eps)``) so it is right whether the
    module stores ``g`` (Llama) or ``g - 1`` (Gemma's ``1 + weight``).
    """
    eps = getattr(norm, "eps", None)
    if eps is None:
        eps = getattr(norm, "variance_epsilon", None)
    if eps is None:
        raise ValueError(
            f"{type(norm).__name__} has no `eps`/`variance_epsilon`; circuitkit's frozen-norm head "
            "decomposition needs an RMSNorm"
        )
    weight = getattr(norm, "weight", None)
    if weight is None:
        raise ValueError(f"{type(norm).__name__} has no weight; expected an RMSNorm")
    ones = torch.ones(1, weight.shape[-1], dtype=torch.float32, device=weight.device)
    with torch.no_grad():
        gain = norm.forward(ones).float()[0] * math.sqrt(1.0 + float(eps))  # .forward: no hooks fire
    return gain, float(eps)


def frozen_post_norm_heads(
    adapter: Any, layer: int, heads: Float[Tensor, "rows head d_model"], *, norm_path: str = "post_attention_layernorm"
) -> Float[Tensor, "rows head d_model"]:
    """Scale pre-norm per-head outputs by the post-attention RMSNorm frozen at its per-token value.

    ``heads`` sum to the ``o_proj`` output ``s``; the result sums to ``norm(s)``, the attention's
    contribution to the residual stream (module docstring).
    """
    norm = _get(adapter.layer_module(layer), norm_path)
    gain, eps = _rms_norm_gain_eps(norm)
    h32 = heads.float()
    total = h32.sum(1)
    scale = torch.rsqrt(total.pow(2).mean(-1, keepdim=True) + eps)  # [rows, 1]
    out = h32 * scale[:, None, :] * gain.to(h32.device)
    return out.to(heads.dtype)


# -- GPT-2 (and the toy LM), Tracr ----------------------------------------------------------------------
_GPT2 = ArchSpec(
    name="gpt2",
    model_types=("gpt2",),
    layers="transformer.h",
    attn="attn",
    o_proj="attn.c_proj",
    o_proj_layout="conv1d",
    mlp="mlp",
    mlp_in_norm="ln_2",
    final_norm="transformer.ln_f",
    lm_head="lm_head",
    n_layers_attr="n_layer",
    n_heads_attr="n_head",
    notes="GPT-2 (HF GPT2LMHeadModel); also the embedded toy LM.",
)


def _is_tracr(module: Any) -> bool:
    return type(module).__name__ == "TracrTransformer"


_TRACR = ArchSpec(
    name="tracr",
    model_types=(),
    layers="layers",
    attn="attn",
    head_out="attn.head_out",
    attn_bias="attn.b_O",
    mlp="mlp",
    lm_head="unembed",
    matches=_is_tracr,
    notes="circuitkit's torch port of Tracr-compiled models (circuitkit.models.tracr).",
)


# -- GPT-NeoX / Pythia --------------------------------------------------------------------------------
def _neox_with(head_attr: str):
    def matches(module: Any) -> bool:
        cfg = getattr(module, "config", None)
        return getattr(cfg, "model_type", None) == "gpt_neox" and hasattr(module, head_attr)

    return matches


_NEOX_NOTES = (
    "GPT-NeoX / Pythia. Parallel residual when config.use_parallel_residual (Pythia: True): attention and "
    "MLP both read resid_pre and resid_post = resid_pre + attn + MLP; otherwise sequential. Rotary "
    "positions, so embed is the token embedding alone."
)

_NEOX = ArchSpec(
    name="gpt_neox",
    model_types=(),
    layers="gpt_neox.layers",
    attn="attention",
    o_proj="attention.dense",
    o_proj_layout="linear",
    mlp="mlp",
    mlp_in_norm="post_attention_layernorm",
    final_norm="gpt_neox.final_layer_norm",
    parallel_attr="use_parallel_residual",
    lm_head="lm_head",
    n_layers_attr="num_hidden_layers",
    n_heads_attr="num_attention_heads",
    matches=_neox_with("lm_head"),
    notes=_NEOX_NOTES,
)
# transformers < 5 names Pythia's unembedding `embed_out`
_NEOX_OLD = replace(_NEOX, name="gpt_neox-embed_out", lm_head="embed_out", matches=_neox_with("embed_out"),
                    notes=_NEOX_NOTES + " (transformers < 5 module names)")

# -- Llama family (grouped-query attention) -------------------------------------------------------------
_LLAMA = (
    ArchSpec(
        name="llama",
        model_types=SUPPORTED_MODEL_TYPES["llama"],
        layers="model.layers",
        attn="self_attn",
        o_proj="self_attn.o_proj",
        o_proj_layout="linear",
        mlp="mlp",
        mlp_in_norm="post_attention_layernorm",
        final_norm="model.norm",
        lm_head="lm_head",
        n_layers_attr="num_hidden_layers",
        n_heads_attr="num_attention_heads",
        notes=(
            "Llama / Mistral / Qwen2 / Qwen3 (pre-norm, grouped-query attention). o_proj's input is "
            "num_attention_heads * head_dim wide (one slice per query head), so per-head outputs are exact."
        ),
    )
)

_GEMMA = replace(
    _LLAMA,
    name="gemma",
    model_types=SUPPORTED_MODEL_TYPES["gemma"],
    notes="Gemma 1: Llama-like blocks; the sqrt(d_model) embedding scale is part of embed (block 0's input).",
)

# -- Gemma-2 / Gemma-3 (text) -----------------------------------------------------------------------------
_GEMMA2 = (
    ArchSpec(
        name="gemma2",
        model_types=SUPPORTED_MODEL_TYPES["gemma2"],
        layers="model.layers",
        attn="self_attn",
        o_proj="self_attn.o_proj",
        o_proj_layout="linear",
        attn_out="post_attention_layernorm",
        mlp="mlp",
        mlp_out="post_feedforward_layernorm",
        mlp_in_norm="pre_feedforward_layernorm",
        final_norm="model.norm",
        lm_head="lm_head",
        n_layers_attr="num_hidden_layers",
        n_heads_attr="num_attention_heads",
        head_transform=frozen_post_norm_heads,
        notes=(
            "Gemma-2 and text-only Gemma-3: attn = post_attention_layernorm(o_proj(z)), MLP = "
            "post_feedforward_layernorm(mlp(...)); heads are the pre-norm o_proj slices scaled by the "
            "post-attention norm frozen per token, so they sum to attn (circuitkit.models.archs docstring). "
            "out = lm_head output before the final logit soft-capping."
        ),
    )
)


def supported_model_types() -> list[str]:
    """Every HF ``model_type`` circuitkit has an adapter for."""
    return sorted({t for types in SUPPORTED_MODEL_TYPES.values() for t in types})


#: The built-in specs, in lookup order (read by :mod:`circuitkit.models.registry`).
BUILTIN_SPECS: tuple[ArchSpec, ...] = (_GPT2, _TRACR, _NEOX, _NEOX_OLD, _LLAMA, _GEMMA, _GEMMA2)

__all__ = ["BUILTIN_SPECS", "SUPPORTED_MODEL_TYPES", "frozen_post_norm_heads", "supported_model_types"]
