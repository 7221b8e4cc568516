"""SAE features: attach sae_lens SAEs to captured sites and encode them into sparse codes.

An SAE is attached to a site through its TransformerLens-style ``hook_name`` (sae_lens metadata):

=================================  ====================  =========================================
sae_lens ``hook_name``             circuitkit site       note
=================================  ====================  =========================================
``blocks.{l}.hook_resid_pre``      ``L{l}.resid_pre``    ``blocks.0.hook_resid_pre`` is ``embed``
``blocks.{l}.hook_resid_post``     ``L{l}.resid_post``
``blocks.{l}.hook_attn_out``       ``L{l}.attn``
``blocks.{l}.hook_mlp_out``        ``L{l}.MLP``
=================================  ====================  =========================================

Preprocessing: sae_lens's own ``SAE.encode`` applies what the SAE was trained with (its run-time input
normalisation and, when ``apply_b_dec_to_input`` is set, subtracting ``b_dec``), so circuitkit feeds it
the raw site activations and never re-implements those steps.

The reconstruction error ``x - decode(encode(x))`` of each site is kept; it becomes one extra node
``"{site}/err"`` per site when fitting (Marks et al.'s error nodes).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from .activations import Activations, check_finite
from .features import Features
from .sites import parse_site

logger = logging.getLogger(__name__)

_HOOK = re.compile(r"^blocks\.(?P<layer>\d+)\.(?P<hook>hook_resid_pre|hook_resid_post|hook_attn_out|hook_mlp_out)$")
_HOOK_SITE = {"hook_resid_pre": "resid_pre", "hook_resid_post": "resid_post", "hook_attn_out": "attn",
              "hook_mlp_out": "MLP"}
SUPPORTED_HOOKS = ("blocks.{l}.hook_resid_pre", "blocks.{l}.hook_resid_post", "blocks.{l}.hook_attn_out",
                   "blocks.{l}.hook_mlp_out")


def hook_to_site(hook_name: str) -> str:
    """Map a TransformerLens-style hook name (sae_lens metadata) to a circuitkit site name."""
    m = _HOOK.match(hook_name or "")
    if m is None:
        raise ValueError(f"unsupported SAE hook {hook_name!r}; supported hooks are {', '.join(SUPPORTED_HOOKS)}")
    return f"L{m.group('layer')}.{_HOOK_SITE[m.group('hook')]}"


def site_to_hook(site: str) -> str:
    """Inverse of :func:`hook_to_site` (``embed`` maps to ``blocks.0.hook_resid_pre``)."""
    p = parse_site(site)
    if p.kind == "embed":
        return "blocks.0.hook_resid_pre"
    names = {"resid_pre": "hook_resid_pre", "resid_post": "hook_resid_post", "attn": "hook_attn_out",
             "mlp": "hook_mlp_out"}
    if p.kind not in names:
        raise ValueError(f"site {site!r} has no sae_lens hook; SAEs attach to resid_pre/resid_post/attn/MLP sites")
    return f"blocks.{p.layer}.{names[p.kind]}"


def sae_hook_name(sae: Any) -> str:
    meta = getattr(sae.cfg, "metadata", None)
    name = getattr(meta, "hook_name", None) if meta is not None else None
    if name is None:
        name = getattr(sae.cfg, "hook_name", None)
    if name is None:
        raise ValueError("the SAE has no hook_name in its metadata; pass it as {site: sae}")
    return str(name)


def load_sae(path_or_release: str | Path, sae_id: str | None = None, *, device: str = "cpu",
             dtype: str = "float32", norm_scaling_factor: float | None = None, model: Any = None) -> Any:
    """Load an SAE, ready for :func:`circuitkit.encode` -- the one SAE loader.

    * ``load_sae(directory)``: an SAE saved with sae_lens' ``save_inference_model`` (offline; the embedded
      SAEs under ``data/saes``), returned as the sae_lens ``SAE``;
    * ``load_sae(release, sae_id)``: a public sae_lens release (needs internet). What the release needs is
      applied, as the catalogue (:mod:`circuitkit.saelens_catalogue`) records it: the hook is mapped to its
      circuitkit site, centring / norm scaling (``norm_scaling_factor``) are folded in, and ``model=`` (a
      loaded model) checks width and layer. Returns an
      :class:`~circuitkit.saelens_catalogue.AttachedSAE`; entries the catalogue marks unsupported raise
      ``ValueError`` with the reason.
    """
    if sae_id is not None:
        from .saelens_catalogue import load_release_sae

        return load_release_sae(str(path_or_release), sae_id, device=device, dtype=dtype,
                                norm_scaling_factor=norm_scaling_factor, model=model)
    from sae_lens import SAE

    p = Path(path_or_release)
    if not p.is_dir():
        raise ValueError(
            f"{path_or_release!s} is not an SAE directory; pass a directory saved with save_inference_model "
            "or a release and sae_id, e.g. load_sae('gpt2-small-res-jb', 'blocks.8.hook_resid_pre')"
        )
    sae = SAE.load_from_disk(str(p), device=device)
    sae.eval()
    return sae


def check_sae(sae: Any, *, name: str = "sae") -> Any:
    """Raise ``TypeError`` unless ``sae`` looks like a sae_lens SAE (``cfg.d_in``, ``cfg.d_sae``, ``encode``,
    ``decode``, ``W_dec``); returns it."""
    cfg = getattr(sae, "cfg", None)
    inner = getattr(sae, "sae", None)  # an AttachedSAE wraps the sae_lens SAE (its W_dec lives there)
    missing = [a for a in ("encode", "decode") if not hasattr(sae, a)]
    missing += [] if hasattr(sae, "W_dec") or hasattr(inner, "W_dec") else ["W_dec"]
    if cfg is None or not hasattr(cfg, "d_sae") or not hasattr(cfg, "d_in") or missing:
        raise TypeError(
            f"{name} must be a sae_lens SAE (with cfg.d_in, cfg.d_sae, encode, decode and W_dec), got "
            f"{type(sae).__name__}; load one with circuitkit.load_sae(path_or_release, sae_id)"
        )
    return sae


def attach_saes(saes: Mapping[str, Any] | Iterable[Any]) -> dict[str, Any]:
    """Normalise ``saes`` to ``{site: sae}``. Keys may be sites or hook names; a list uses each SAE's hook."""
    out: dict[str, Any] = {}
    items = saes.items() if isinstance(saes, Mapping) else ((None, s) for s in saes)
    for key, sae in items:
        check_sae(sae, name="the SAE" if key is None else f"the SAE for {key!r}")
        if key is None:
            site = hook_to_site(sae_hook_name(sae))
        elif str(key).startswith("blocks."):
            site = hook_to_site(str(key))
        else:
            site = str(key)
            parse_site(site)
        out[site] = sae
    if not out:
        raise ValueError("no SAEs given; pass {site: sae}, {hook_name: sae} or a list of sae_lens SAEs")
    return out


def encode(
    acts: Activations,
    saes: Mapping[str, Any] | Iterable[Any],
    *,
    batch_size: int = 4096,
    keep_errors: bool = True,
) -> Features:
    """Encode the captured sites with their SAEs into ``scipy.sparse`` CSR codes.

    ``saes`` is ``{site: sae}``, ``{hook_name: sae}`` or a list of SAEs (attached by their hook names).
    A width mismatch between a site and its SAE, a missing site, or NaN/inf activations raise
    ``ValueError``.
    """
    attached = attach_saes(saes)
    codes: dict[str, sp.csr_matrix] = {}
    errors: dict[str, np.ndarray] = {}
    fvu: dict[str, float] = {}
    ids: dict[str, str] = {}
    releases: dict[str, str | None] = {}
    np_ids: dict[str, str | None] = {}
    for site, sae in attached.items():
        if site not in acts:
            raise ValueError(f"SAE for site {site!r} but that site was not captured; captured: {acts.sites}")
        x_all = acts[site]
        check_finite(site, x_all)
        d_in = int(sae.cfg.d_in)
        if x_all.shape[1] != d_in:
            raise ValueError(
                f"SAE width mismatch at site {site!r}: the site has d={x_all.shape[1]} but the SAE expects "
                f"d_in={d_in}; pick the SAE trained on this model and hook"
            )
        parts, errs = [], []
        sse = 0.0
        dtype = next(sae.parameters()).dtype
        device = next(sae.parameters()).device
        with torch.no_grad():
            for start in range(0, x_all.shape[0], batch_size):
                x = torch.as_tensor(x_all[start : start + batch_size], dtype=dtype, device=device)
                z = sae.encode(x)
                xh = sae.decode(z)
                err = (x - xh).float().cpu().numpy()
                sse += float((err**2).sum())
                parts.append(sp.csr_matrix(z.float().cpu().numpy()))
                if keep_errors:
                    errs.append(err)
        codes[site] = sp.vstack(parts, format="csr").astype(np.float32)
        codes[site].eliminate_zeros()
        if keep_errors:
            errors[site] = np.concatenate(errs).astype(np.float32)
        centred = x_all - x_all.mean(0, keepdims=True)
        denom = float((centred.astype(np.float64) ** 2).sum())
        fvu[site] = sse / denom if denom > 0 else float("nan")
        meta = getattr(sae.cfg, "metadata", None)
        ids[site] = str(getattr(meta, "sae_id", None) or getattr(meta, "hook_name", None) or site)
        releases[site] = getattr(meta, "release", None)
        np_ids[site] = getattr(meta, "neuronpedia_id", None)
    meta = dict(acts.meta)
    meta.update({"sae_ids": ids, "sae_releases": releases, "neuronpedia_ids": np_ids, "fvu": fvu})
    return Features(codes, errors, acts.index, acts.tokens, meta)


def reconstruction_report(acts: Activations, saes: Mapping[str, Any] | Iterable[Any]) -> pd.DataFrame:
    """FVU, mean L0 and dead-feature fraction of each SAE on the captured data."""
    feats = encode(acts, saes, keep_errors=False)
    df = feats.stats()
    df["dead_frac"] = 1 - df["alive"] / df["d_sae"]
    return df


_attach = attach_saes  # old private name, kept for one release
