"""Circuit-discovery methods behind one registry, so benchmarks and notebooks pick them by name.

Every method has the signature ``method(model, clean, corrupt, *, sites=None, output_kind=..., **params)
-> Circuit`` (``clean``/``corrupt``: ``[batch, pos]`` token ids or lists of such batches, paired row by
row; observational methods ignore ``corrupt``). Registered names:

* ``"circuitlasso"``: :func:`circuitkit.baselines.eap.circuitlasso` (capture + CircuitLasso; on Tracr models it
  also fits the heads' queries and keys, ``qk="auto"``);
* ``"circuitlasso-v"``: ``circuitlasso`` with ``qk=False`` (site outputs only);
* ``"circuitlasso-group"``: :func:`circuitkit.baselines.group.circuitlasso_group` (capture +
  GroupCircuitLasso: one group-Lasso fit per target site over PCA-compressed source sites);
* ``"circuitlasso-qk"``: ``circuitlasso`` with ``qk=True`` (also fits heads' queries and keys:
  :mod:`circuitkit.fit.qk`; Tracr models only);
* ``"eap"``: edge attribution patching;
* ``"eap-ig"``: EAP with integrated gradients (``steps=``);
* ``"patching"``: exact edge activation patching (the reference EAP approximates);
* ``"sfc"``: :func:`circuitkit.baselines.sfc.sfc`, feature-level attribution patching of SAE features and
  feature edges (Marks et al.'s Sparse Feature Circuits; needs ``saes=`` and, for the default logit-difference
  metric, ``answer=``/``distractor=``; ``corrupt`` gives the patch values, else mean ablation). It returns a
  *feature* circuit (nodes ``site/f{i}``, ``site/err``, ``y``); :func:`circuitkit.baselines.sfc.sfc_circuit`
  is the same with the arguments in SFC's order.

Add one with :func:`register_method`. The modules are imported lazily.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

_BUILTIN = {
    "circuitlasso": ("circuitkit.baselines.eap", "circuitlasso"),
    "circuitlasso-group": ("circuitkit.baselines.group", "circuitlasso_group"),
    "circuitlasso-qk": ("circuitkit.baselines.eap", "circuitlasso_qk"),
    "circuitlasso-v": ("circuitkit.baselines.eap", "circuitlasso_v"),
    "eap": ("circuitkit.baselines.eap", "eap"),
    "eap-ig": ("circuitkit.baselines.eap", "eap_ig"),
    "patching": ("circuitkit.baselines.eap", "activation_patching"),
    "sfc": ("circuitkit.baselines.sfc", "sfc"),
}
_CUSTOM: dict[str, Callable[..., Any]] = {}


def register_method(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """Register a discovery method under ``name`` (replaces an earlier one of that name)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"method names are non-empty strings, got {name!r}")
    _CUSTOM[name] = fn
    return fn


def available_methods() -> list[str]:
    return sorted(set(_BUILTIN) | set(_CUSTOM))


def get_method(name: str) -> Callable[..., Any]:
    """The discovery function registered as ``name``; ``ValueError`` listing the valid names otherwise."""
    if name in _CUSTOM:
        return _CUSTOM[name]
    if name in _BUILTIN:
        module, attr = _BUILTIN[name]
        return getattr(importlib.import_module(module), attr)
    raise ValueError(f"unknown discovery method {name!r}; valid methods are {available_methods()}")


def discover(method: str, model: Any, clean: Any, corrupt: Any = None, **params: Any):
    """Run the method registered as ``method`` and return its :class:`~circuitkit.circuit.Circuit`."""
    return get_method(method)(model, clean, corrupt, **params)


__all__ = ["available_methods", "discover", "get_method", "register_method"]
