"""sae_lens's pretrained catalogue, mapped onto circuitkit sites (and loading releases correctly).

sae_lens ships its catalogue (``pretrained_saes.yaml``: releases, each with a model, a Hugging Face repo and
a list of SAEs with ``id`` and ``path``). Most entries do not spell out their TransformerLens hook name:
sae_lens's per-family conversion functions derive it from the release, id or path when the SAE is
downloaded. :func:`catalogue_table` derives it the same way *offline*, and maps every entry either to a
circuitkit site or to ``supported=False`` with a reason:

=================================  ===========================================================
hook (TransformerLens name)        circuitkit
=================================  ===========================================================
``blocks.{l}.hook_resid_pre``      ``L{l}.resid_pre`` (``L0.resid_pre`` is the same tensor as ``embed``)
``blocks.{l}.hook_resid_post``     ``L{l}.resid_post``
``blocks.{l}.hook_attn_out``       ``L{l}.attn`` (Gemma-2: after ``post_attention_layernorm``)
``blocks.{l}.hook_mlp_out``        ``L{l}.MLP`` (Gemma-2: after ``post_feedforward_layernorm``)
``hook_embed``                     ``embed`` for rotary models (Gemma: TransformerLens folds the
                                   ``sqrt(d_model)`` scale into ``W_E``, so it equals block 0's input)
``blocks.{l}.hook_resid_mid``      unsupported: no ``resid_mid`` site (it is ``resid_pre + attn``)
``blocks.{l}.(attn.)hook_z``       unsupported: per-head ``z`` (the ``o_proj`` input), not a residual
                                   write; capture ``L{l}.H{h}`` for heads instead
transcoders / CLTs                 unsupported: read one hook and write another (``hook_mlp_in`` ->
                                   ``hook_mlp_out``); CircuitLasso encodes each site with its own SAE
temporal SAEs                      unsupported: codes depend on earlier tokens' activations, while
                                   circuitkit encodes captured rows independently
=================================  ===========================================================

Models outside the supported families (:data:`circuitkit.models.archs.SUPPORTED_MODEL_TYPES`), such as
multimodal Gemma-3 (4b/12b/27b), Qwen3.5 (hybrid linear attention), MoE models and gpt-oss, are listed
as unsupported with that reason.

Preprocessing: what each SAE family expects, and who applies it
---------------------------------------------------------------
circuitkit captures activations from the Hugging Face model as it is. An SAE must see the tensor it
was trained on, so :func:`load_release_sae` returns an :class:`AttachedSAE` that applies the one step
sae_lens cannot apply itself and checks the rest:

* **Centred writing weights** (jb's ``gpt2-small-res-jb``, ``gpt2-small-res-jb-feature-splitting``,
  ``gpt2-small-mlp-tm``; any SAE whose metadata says
  ``model_from_pretrained_kwargs={"center_writing_weights": True}``). These were trained on a
  TransformerLens model whose residual writers (``W_E``, ``W_pos``, ``W_O``, ``W_out`` and their biases)
  had their mean over ``d_model`` removed. Centring is linear and LayerNorm ignores the mean, so the
  trained-on activation is exactly the HF activation minus its per-token mean over ``d_model``.
  :class:`AttachedSAE` subtracts it before ``encode`` and adds it back after ``decode`` (so the
  reconstruction error is the centred error, as for sae_lens's own run-time norms).
* **Run-time input normalisation** (``normalize_activations="layer_norm"`` e.g. OpenAI's GPT-2 v5
  SAEs; ``"constant_norm_rescale"`` e.g. ``mistral-7b-res-wg``) and ``apply_b_dec_to_input``: applied by
  sae_lens's own ``SAE.encode`` (and undone by ``decode``); circuitkit feeds raw activations.
* **``expected_average_only_in``** (Llama Scope, some Gemma/GPT-2 MLP releases): sae_lens folds the
  catalogue's ``norm_scaling_factor`` into the weights at load time. When the catalogue has no factor,
  sae_lens only warns and the SAE would silently see unscaled inputs: :func:`load_release_sae` raises
  instead, unless ``norm_scaling_factor=`` is given (e.g. :func:`estimate_norm_scaling_factor` on
  captured data, ``sqrt(d_in) / E||x||``).
* **JumpReLU thresholds** (Gemma Scope, Llama Scope): part of the SAE's ``encode``; nothing to do
  beyond feeding the right tensor (Gemma Scope residual SAEs read ``resid_post``, the MLP ones the
  post-feedforward-norm output, which is circuitkit's ``L{l}.MLP``).
* **``hook_z`` reshaping** (``reshape_activations="hook_z"``): those SAEs read per-head ``z`` and are
  unsupported (see above).
* Width: ``d_in`` must equal the site's width; :func:`load_release_sae` checks it against ``model=``
  when given and :func:`circuitkit.encode` always does.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from .sae import hook_to_site

logger = logging.getLogger(__name__)

TABLE_COLUMNS = ["release", "sae_id", "model", "model_type", "hook_name", "site", "supported", "reason",
                 "preprocessing", "neuronpedia"]

# catalogue model name -> HF model_type (first match wins)
_MODEL_TYPE_RULES: tuple[tuple[str, str], ...] = (
    (r"^gpt2-small$", "gpt2"),
    (r"^pythia-", "gpt_neox"),
    (r"^gemma-2-\d+b(-it)?$", "gemma2"),
    (r"^gemma-(2|7)b(-it)?$", "gemma"),
    (r"^google/gemma-3-(270m|1b)", "gemma3_text"),
    (r"^google/gemma-3-", "gemma3"),
    (r"(?i)llama", "llama"),
    (r"^mistral-7b", "mistral"),
    (r"^Qwen/Qwen2\.5-", "qwen2"),
    (r"^Qwen/Qwen3\.5-", "qwen3_5"),
    (r"(?i)^(qwen/)?qwen3-.*-a\d+b", "qwen3_moe"),
    (r"(?i)^(qwen/)?qwen3-", "qwen3"),
    (r"^openai/gpt-oss", "gpt_oss"),
)

_UNSUPPORTED_MODEL_REASON = {
    "gemma3": "multimodal Gemma-3 (Gemma3ForConditionalGeneration) has no circuitkit adapter; the text-only "
              "sizes (270m, 1b) are supported",
    "qwen3_5": "Qwen3.5 mixes linear-attention (Gated DeltaNet) and attention layers; no circuitkit adapter",
    "qwen3_moe": "mixture-of-experts Qwen3 has no circuitkit adapter",
    "gpt_oss": "gpt-oss (mixture of experts with attention sinks) has no circuitkit adapter",
}

_CENTRED = "center_d_model: subtract each token's mean over d_model (trained with centred writing weights)"
_SAE_LENS_NORM = "run-time normalisation / b_dec handled by sae_lens's encode"


def model_type_of(model: str) -> str | None:
    """The HF ``model_type`` of a catalogue model name (``"gpt2-small"`` -> ``"gpt2"``), or None."""
    for pattern, model_type in _MODEL_TYPE_RULES:
        if re.search(pattern, str(model)):
            return model_type
    return None


def _supported_model_types() -> set[str]:
    from .models.archs import supported_model_types

    return set(supported_model_types())


def _catalogue() -> dict[str, Any]:
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    return get_pretrained_saes_directory()


_STD_HOOK = re.compile(r"^(blocks\.\d+\.(?:attn\.)?hook_[a-z]+(?:_[a-z]+)*)(?:_\d+)?$")
_LAYER = re.compile(r"layer_?(\d+)")


def _hook_from_id(sae_id: str) -> str | None:
    m = _STD_HOOK.match(sae_id.split("__")[0])
    return m.group(1) if m else None


def infer_hook_name(release: str, sae_id: str, *, conversion_func: str | None = None, repo_id: str = "",
                    path: str = "", config_overrides: dict | None = None) -> tuple[str | None, str | None]:
    """The TransformerLens hook an SAE reads, derived from catalogue fields as sae_lens's loaders do.

    Returns ``(hook_name, None)``, or ``(None, reason)`` for SAEs that are not single-hook SAEs
    (transcoders, temporal SAEs) or whose hook cannot be derived offline.
    """
    conv = conversion_func
    overrides = config_overrides or {}
    path = str(path)
    if conv in ("gemma_2_transcoder", "mwhanna_transcoder", "mntss_clt_layer_transcoder"):
        return None, "transcoder: reads the MLP input and writes the MLP output (two hooks), not a single-site SAE"
    if conv == "temporal":
        return None, ("temporal SAE: codes depend on earlier tokens' activations; circuitkit encodes captured "
                      "rows independently")
    if conv == "gemma_2":
        m = _LAYER.search(path)
        if "res" in repo_id and "embedding" in path:
            return "hook_embed", None
        if m is None:
            return None, f"no layer in path {path!r}"
        layer = int(m.group(1))
        if "res" in repo_id:
            return f"blocks.{layer}.hook_resid_post", None
        if "mlp" in repo_id:
            return f"blocks.{layer}.hook_mlp_out", None
        if "att" in repo_id:
            return f"blocks.{layer}.attn.hook_z", None
        return None, f"cannot tell the hook of repo {repo_id!r}"
    if conv == "gemma_3":
        m = _LAYER.search(path)
        if "transcoder" in path or "clt" in path:
            return None, "transcoder: reads the MLP input and writes the MLP output (two hooks), not a single-site SAE"
        if m is None:
            return None, f"no layer in path {path!r}"
        layer = int(m.group(1))
        for key, hook in (("resid_post", "hook_resid_post"), ("attn_out", "attn.hook_z"), ("mlp_out", "hook_mlp_out")):
            if key in path:
                return f"blocks.{layer}.{hook}", None
        return None, f"cannot tell the hook of path {path!r}"
    if conv in ("llama_scope", "llama_scope_r1_distill"):
        m = re.match(r"^l(\d+)([ram])", sae_id)
        if m is None:
            return None, f"cannot parse Llama Scope id {sae_id!r}"
        hook = {"r": "hook_resid_post", "a": "hook_attn_out", "m": "hook_mlp_out"}[m.group(2)]
        return f"blocks.{int(m.group(1))}.{hook}", None
    if conv == "dictionary_learning_1":
        hook = _hook_from_id(sae_id)
        if hook is not None:
            return hook, None
        m = re.match(r"^resid_post_layer_(\d+)", sae_id)
        if m:
            return f"blocks.{int(m.group(1))}.hook_resid_post", None
        return None, f"cannot parse dictionary_learning id {sae_id!r}"
    if conv in ("qwen_scope", "goodfire"):
        m = re.match(r"^layer_?(\d+)$", sae_id)
        if m:
            return f"blocks.{int(m.group(1))}.hook_resid_post", None
        return None, f"cannot parse {conv} id {sae_id!r}"
    # sae_lens-native releases (conversion_func None), deepseek_r1, connor_rob_hook_z: the id is the hook
    if "hook_name" in overrides:
        return str(overrides["hook_name"]), None
    hook = _hook_from_id(sae_id)
    if hook is not None:
        return hook, None
    return None, f"cannot derive the hook name of {release}/{sae_id} offline"


def site_for_hook(hook_name: str, model_type: str | None) -> tuple[str | None, str | None]:
    """Map a hook name to a circuitkit site for a model family: ``(site, None)`` or ``(None, reason)``."""
    if hook_name == "hook_embed":
        if model_type in ("gpt2",):
            return None, ("hook_embed is the token embedding without the learned position embedding; "
                          "circuitkit's embed includes both")
        return "embed", None
    if re.search(r"hook_z$", hook_name):
        return None, ("hook_z: per-head z (the attention output projection's input), not a residual-stream "
                      "write; circuitkit has no z site (capture L{l}.H{h} for per-head outputs)")
    if re.search(r"hook_resid_mid$", hook_name):
        return None, ("hook_resid_mid: circuitkit has no resid_mid site (it equals L{l}.resid_pre + L{l}.attn)")
    if re.search(r"hook_(mlp_in|normalized|in)$", hook_name):
        return None, f"{hook_name}: an MLP input, not a residual-stream write"
    try:
        return hook_to_site(hook_name), None
    except ValueError as e:
        return None, str(e)


def _preprocessing(lookup: Any, sae_id: str, conversion_func: str | None) -> str:
    overrides = lookup.config_overrides or {}
    steps = []
    kwargs = overrides.get("model_from_pretrained_kwargs") or {}
    if kwargs.get("center_writing_weights"):
        steps.append(_CENTRED)
    if overrides.get("normalize_activations"):
        steps.append(f"normalize_activations={overrides['normalize_activations']} ({_SAE_LENS_NORM})")
    if sae_id in (lookup.norm_scaling_factor or {}):
        steps.append("expected_average_only_in: catalogue norm_scaling_factor folded into the weights by sae_lens")
    if conversion_func in ("gemma_2", "gemma_3", "llama_scope", "llama_scope_r1_distill"):
        steps.append("JumpReLU thresholds (inside the SAE's encode)")
    return "; ".join(steps) if steps else "none (raw activations; sae_lens's encode applies the SAE's own cfg)"


def catalogue_table(*, releases: Iterable[str] | None = None) -> pd.DataFrame:
    """Every entry of sae_lens's pretrained catalogue with its hook, circuitkit site and support status.

    Columns: ``release, sae_id, model, model_type, hook_name, site, supported, reason, preprocessing,
    neuronpedia``. ``supported`` rows have a site; the others have a reason (an unsupported model family,
    a hook circuitkit has no site for, or an SAE kind it cannot encode).
    """
    directory = _catalogue()
    names = list(directory) if releases is None else list(releases)
    unknown = [r for r in names if r not in directory]
    if unknown:
        raise ValueError(f"unknown sae_lens releases {unknown}; e.g. {sorted(directory)[:5]}")
    supported_types = _supported_model_types()
    rows = []
    for release in names:
        lookup = directory[release]
        model_type = model_type_of(lookup.model)
        for sae_id, path in lookup.saes_map.items():
            hook, reason = infer_hook_name(
                release, sae_id, conversion_func=lookup.conversion_func, repo_id=lookup.repo_id, path=path,
                config_overrides=lookup.config_overrides or {},
            )
            site = None
            if model_type is None:
                reason = f"model {lookup.model!r} is not a recognised family"
            elif model_type not in supported_types:
                reason = _UNSUPPORTED_MODEL_REASON.get(model_type, f"model family {model_type!r} has no adapter")
            elif hook is not None:
                site, reason = site_for_hook(hook, model_type)
            rows.append({
                "release": release, "sae_id": sae_id, "model": lookup.model, "model_type": model_type,
                "hook_name": hook, "site": site, "supported": site is not None,
                "reason": "" if site is not None else reason,
                "preprocessing": _preprocessing(lookup, sae_id, lookup.conversion_func),
                "neuronpedia": (lookup.neuronpedia_id or {}).get(sae_id),
            })
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def catalogue_entry(release: str, sae_id: str) -> dict[str, Any]:
    """One row of :func:`catalogue_table` (ValueError naming valid ids when the entry does not exist)."""
    directory = _catalogue()
    if release not in directory:
        close = [r for r in directory if release.split("-")[0] in r][:8]
        raise ValueError(f"unknown sae_lens release {release!r}; similar releases: {close}")
    ids = list(directory[release].saes_map)
    if sae_id not in ids:
        raise ValueError(f"unknown sae_id {sae_id!r} for release {release!r}; valid ids include {ids[:8]}")
    table = catalogue_table(releases=[release])
    return table[table["sae_id"] == sae_id].iloc[0].to_dict()


# -- loading --------------------------------------------------------------------------------------------


class AttachedSAE(torch.nn.Module):
    """A sae_lens SAE bound to a circuitkit site, applying the preprocessing it was trained with.

    ``encode(x)`` takes *raw* site activations as captured by :func:`circuitkit.capture`. With
    ``center=True`` each row's mean over ``d_model`` is removed first and added back by the next
    ``decode`` (the same convention sae_lens uses for its own run-time norms), so ``x - decode(encode(x))``
    is the SAE's error on the tensor it was trained on. ``cfg`` and ``parameters()`` are the SAE's.
    """

    def __init__(self, sae: Any, *, site: str, hook_name: str, center: bool = False,
                 release: str | None = None, sae_id: str | None = None) -> None:
        super().__init__()
        self.sae = sae
        self.site = site
        self.hook_name = hook_name
        self.center = bool(center)
        self.release = release
        self.sae_id = sae_id
        self._offset: Tensor | None = None

    @property
    def cfg(self) -> Any:
        return self.sae.cfg

    def preprocess(self, x: Float[Tensor, "rows d_in"]) -> Float[Tensor, "rows d_in"]:
        """The tensor the SAE was trained on, from raw captured activations."""
        if self.center:
            return x - x.mean(dim=-1, keepdim=True)
        return x

    def encode(self, x: Float[Tensor, "rows d_in"]) -> Float[Tensor, "rows d_sae"]:
        if self.center:
            self._offset = x.mean(dim=-1, keepdim=True)
        return self.sae.encode(self.preprocess(x))

    def decode(self, z: Float[Tensor, "rows d_sae"]) -> Float[Tensor, "rows d_in"]:
        xh = self.sae.decode(z)
        if self.center and self._offset is not None and self._offset.shape[0] == xh.shape[0]:
            xh = xh + self._offset.to(xh.dtype)
            self._offset = None
        return xh

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    def __repr__(self) -> str:
        src = f"{self.release}/{self.sae_id}" if self.release else self.hook_name
        return (f"AttachedSAE({src} -> {self.site}, d_in={self.cfg.d_in}, d_sae={self.cfg.d_sae}, "
                f"center={self.center})")


def _model_width_layers(model: Any) -> tuple[int | None, int | None, str | None]:
    from .runtime.loading import LoadedModel

    module = model.module if isinstance(model, LoadedModel) else getattr(model, "_module", model)
    cfg = getattr(module, "config", None)
    if cfg is None:
        return None, None, None
    width = getattr(cfg, "hidden_size", None) or getattr(cfg, "n_embd", None) or getattr(cfg, "d_model", None)
    layers = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", None)
    return width, layers, getattr(cfg, "model_type", None)


def attach_sae(sae: Any, *, hook_name: str | None = None, model_type: str | None = None, center: bool | None = None,
               norm_scaling_factor: float | None = None, model: Any = None, release: str | None = None,
               sae_id: str | None = None) -> AttachedSAE:
    """Bind a loaded sae_lens SAE to its circuitkit site, with the preprocessing checks of this module.

    ``hook_name`` defaults to the SAE's metadata; ``center`` defaults to its
    ``model_from_pretrained_kwargs["center_writing_weights"]``. ``norm_scaling_factor`` folds an
    ``expected_average_only_in`` scale that sae_lens could not fold. With ``model=`` (a
    :class:`~circuitkit.runtime.LoadedModel` or HF module) the width, layer and family are checked.
    """
    meta = getattr(sae.cfg, "metadata", None)
    if hook_name is None:
        hook_name = getattr(meta, "hook_name", None) if meta is not None else None
    if not hook_name:
        raise ValueError("the SAE has no hook_name in its metadata; pass hook_name='blocks.{l}.hook_resid_post' etc.")
    if getattr(sae.cfg, "reshape_activations", "none") == "hook_z" or hook_name.endswith("hook_z"):
        raise ValueError(f"SAE hook {hook_name!r} reads per-head z; circuitkit has no z site (capture L{{l}}.H{{h}})")
    width, n_layers, mt = _model_width_layers(model) if model is not None else (None, None, None)
    site, reason = site_for_hook(hook_name, model_type or mt)
    if site is None:
        raise ValueError(f"cannot attach SAE with hook {hook_name!r}: {reason}")
    if center is None:
        kwargs = getattr(meta, "model_from_pretrained_kwargs", None) if meta is not None else None
        center = bool((kwargs or {}).get("center_writing_weights", False))
    if getattr(sae.cfg, "normalize_activations", "none") == "expected_average_only_in":
        if norm_scaling_factor is None:
            raise ValueError(
                f"SAE {release}/{sae_id} expects inputs scaled by a norm_scaling_factor that sae_lens could not "
                "fold (it is not in the catalogue); pass norm_scaling_factor= (sqrt(d_in) / E||x||, e.g. "
                "circuitkit.saelens_catalogue.estimate_norm_scaling_factor(acts, site))"
            )
        sae.fold_activation_norm_scaling_factor(float(norm_scaling_factor))
    elif norm_scaling_factor is not None:
        raise ValueError(
            f"norm_scaling_factor given but the SAE's normalize_activations is "
            f"{getattr(sae.cfg, 'normalize_activations', None)!r}, not 'expected_average_only_in'"
        )
    d_in = int(sae.cfg.d_in)
    if width is not None and d_in != int(width):
        raise ValueError(f"SAE width mismatch: {release or ''}/{sae_id or hook_name} has d_in={d_in} but the model's "
                         f"residual width is {width}; pick an SAE trained on this model")
    layer = int(site.split(".")[0][1:]) if site.startswith("L") else None
    if n_layers is not None and layer is not None and layer >= int(n_layers):
        raise ValueError(f"SAE hook {hook_name!r} is at layer {layer} but the model has {n_layers} layers")
    return AttachedSAE(sae, site=site, hook_name=hook_name, center=center, release=release, sae_id=sae_id)


def load_release_sae(release: str, sae_id: str, *, device: str = "cpu", dtype: str = "float32",
                     norm_scaling_factor: float | None = None, model: Any = None) -> AttachedSAE:
    """Load a catalogue SAE with ``SAE.from_pretrained`` (needs internet) and attach it to its site.

    Raises ``ValueError`` for entries :func:`catalogue_table` lists as unsupported (with the reason), for a
    width or layer mismatch with ``model=``, and for an unfoldable ``expected_average_only_in`` scale.
    """
    entry = catalogue_entry(release, sae_id)
    if not entry["supported"]:
        raise ValueError(f"{release}/{sae_id} is not supported by circuitkit: {entry['reason']}")
    from sae_lens import SAE

    sae = SAE.from_pretrained(release, sae_id, device=device, dtype=dtype)
    if isinstance(sae, tuple):  # sae_lens < 6 returned (sae, cfg, sparsity)
        sae = sae[0]
    sae.eval()
    meta = getattr(sae.cfg, "metadata", None)
    hook = (getattr(meta, "hook_name", None) if meta is not None else None) or entry["hook_name"]
    if hook != entry["hook_name"]:
        logger.warning("%s/%s: loaded hook %r differs from the catalogue-derived %r; using the loaded one",
                       release, sae_id, hook, entry["hook_name"])
    center = None
    if _CENTRED in entry["preprocessing"]:
        center = True
    return attach_sae(sae, hook_name=hook, model_type=entry["model_type"], center=center,
                      norm_scaling_factor=norm_scaling_factor, model=model, release=release, sae_id=sae_id)


def release_saes(release: str, sae_ids: Iterable[str], **kwargs: Any) -> dict[str, AttachedSAE]:
    """Load several SAEs of one release as ``{site: AttachedSAE}``, ready for :func:`circuitkit.encode`."""
    out: dict[str, AttachedSAE] = {}
    for sae_id in sae_ids:
        sae = load_release_sae(release, sae_id, **kwargs)
        if sae.site in out:
            raise ValueError(f"two SAEs of {release} attach to site {sae.site!r} ({out[sae.site].sae_id}, {sae_id})")
        out[sae.site] = sae
    return out


def estimate_norm_scaling_factor(acts: Any, site: str) -> float:
    """``sqrt(d) / E||x||`` over the captured rows of ``site`` (the ``expected_average_only_in`` scale)."""
    import numpy as np

    x = np.asarray(acts[site], dtype=np.float64)
    mean_norm = float(np.linalg.norm(x, axis=1).mean())
    if not mean_norm > 0:
        raise ValueError(f"site {site!r} has zero activations; cannot estimate a norm scaling factor")
    return math.sqrt(x.shape[1]) / mean_norm


@dataclass(frozen=True)
class CatalogueSummary:
    """Counts of :func:`catalogue_table` rows (``total == supported + unsupported``)."""

    total: int
    supported: int
    unsupported: int
    by_reason: dict[str, int]


def summarize(table: pd.DataFrame | None = None) -> CatalogueSummary:
    """How many catalogue entries map to a site, and why the others do not (first clause of the reason)."""
    t = catalogue_table() if table is None else table
    bad = t[~t["supported"]]
    reasons = bad["reason"].str.split(":").str[0].value_counts().to_dict()
    return CatalogueSummary(len(t), int(t["supported"].sum()), len(bad), {str(k): int(v) for k, v in reasons.items()})


__all__ = [
    "TABLE_COLUMNS",
    "AttachedSAE",
    "CatalogueSummary",
    "attach_sae",
    "catalogue_entry",
    "catalogue_table",
    "estimate_norm_scaling_factor",
    "infer_hook_name",
    "load_release_sae",
    "model_type_of",
    "release_saes",
    "site_for_hook",
    "summarize",
]
