"""Per-prompt pooled residuals and SAE codes, feature ablation and SAE-feature attributions, by site name.

Built on :mod:`circuitkit.runtime.interventions` (the edits) and :mod:`circuitkit.runtime.inputs` (the
batches); used by the debias workflow (:mod:`circuitkit.workflows.debias`). Pooling is the mean over each
prompt's real tokens after BOS (the one rule of :mod:`circuitkit.sites`); ablations apply at those tokens.

* :func:`pooled_residual` -- a residual site (``L{l}.resid_post``, ``L{l}.resid_pre``, ``embed``),
  mean-pooled, optionally with SAE features **zero-ablated** at earlier sites (:class:`FeatureAblation`:
  ``h - sum_{f in S} z_f(h) W_dec[f]``, reconstruction error kept, so the change propagates through every
  later layer; with several sites a later site encodes the already-ablated stream).
* :func:`feature_attributions` -- attribution patching of every SAE feature at one or more sites to a
  scalar read-out of the pooled representation (SHIFT's node scores): per prompt
  ``sum_pos z_f(pos) * d readout / d z_f(pos)``, one forward and one backward pass per batch, the SAEs
  spliced in with :class:`~circuitkit.runtime.interventions.Splice`.
* :func:`pooled_codes` -- the SAE codes of one or more sites, mean-pooled per prompt (observational; the
  forward pass stops after the last site).

Sites may be given as site names or, for one release, as the old int layers (``-1`` = ``L0.resid_pre``,
``l`` = ``L{l}.resid_post``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from ..sites import parse_site, sort_sites
from .inputs import batches, real_mask, tokenize
from .interventions import Record, Splice, StopForward, call_model, hooked, pool
from .loading import load_model

logger = logging.getLogger(__name__)

EMBED = -1  # the old int ``layer`` of the embedding site (what block 0 reads)


def site_name(site: int | str) -> str:
    """A site name from a site name or an old int layer (``-1 -> 'L0.resid_pre'``, ``l -> 'L{l}.resid_post'``)."""
    if isinstance(site, str):
        parse_site(site)
        return site
    if isinstance(site, bool) or not isinstance(site, (int, np.integer)) or site < EMBED:
        raise ValueError(f"site must be a site name such as 'L1.resid_post' (or an int layer >= -1), got {site!r}")
    return "L0.resid_pre" if site == EMBED else f"L{int(site)}.resid_post"


def _precedes_or_equal(u: str, v: str) -> bool:
    return sort_sites([u, v])[0] == u


@dataclass
class FeatureAblation:
    """Zero-ablate SAE latents ``features`` of ``sae`` at ``site`` (all real non-BOS tokens)."""

    sae: Any
    site: int | str
    features: Sequence[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.site = site_name(self.site)
        self.features = Splice(self.site, sae=self.sae, ablate=self.features, grad=False).ablate

    @property
    def layer(self) -> int:
        """The old int layer of this site (``-1`` for ``L0.resid_pre``)."""
        p = parse_site(self.site)
        return EMBED if p.kind in ("embed", "resid_pre") and p.layer in (None, 0) else int(p.layer)

    def edit(self) -> Splice:
        return Splice(self.site, sae=self.sae, ablate=self.features, grad=False, masked=True)


def _check_prompts(prompts: Any) -> list[str]:
    if isinstance(prompts, str) or len(prompts) == 0:
        raise ValueError("prompts must be a non-empty list of strings")
    return list(prompts)


def _lm(model: Any, tok: Any) -> Any:
    return load_model(model, tokenizer=tok) if tok is not None else load_model(model)


def _as_ablations(ablate: FeatureAblation | Sequence[FeatureAblation] | None) -> list[FeatureAblation]:
    if ablate is None:
        return []
    abls = [ablate] if isinstance(ablate, FeatureAblation) else list(ablate)
    for a in abls:
        if not isinstance(a, FeatureAblation):
            raise TypeError(f"ablate must hold FeatureAblation objects, got {type(a).__name__}")
    sites = [a.site for a in abls]
    if len(set(sites)) != len(sites):
        raise ValueError(f"several ablations at the same site {sorted(sites)}; merge their features into one")
    order = sort_sites(sites)
    return sorted((a for a in abls if len(a.features)), key=lambda a: order.index(a.site))


@torch.no_grad()
def pooled_residual(
    model: Any,
    tok: Any,
    prompts: Sequence[str],
    *,
    site: int | str,
    ablate: FeatureAblation | Sequence[FeatureAblation] | None = None,
    batch_size: int = 128,
    progress: bool = False,
) -> Float[np.ndarray, "n d_model"]:
    """Mean over real non-BOS tokens of ``site``, optionally with ``ablate`` applied (one
    :class:`FeatureAblation` or several, at distinct sites up to ``site``)."""
    prompts = _check_prompts(prompts)
    site = site_name(site)
    abls = _as_ablations(ablate)
    late = [a.site for a in abls if not _precedes_or_equal(a.site, site)]
    if late:
        raise ValueError(f"ablation site(s) {late} come after the read-out site {site!r}")
    lm = _lm(model, tok)
    ids, _ = tokenize(lm, prompts)
    out = []
    with hooked(lm, [a.edit() for a in abls] + [Record(site)]) as state:  # read last: the edited value
        for batch in tqdm(batches(lm, ids, batch_size), desc="forward", disable=not progress):
            state.clear()
            state.mask = real_mask(batch)
            call_model(lm.module, batch)
            out.append(pool(state.records[site].float(), state.mask).cpu())
    return torch.cat(out).numpy()


def _site_saes(sae: Any, site: int | str | None, saes: Mapping[Any, Any] | None) -> tuple[dict[str, Any], bool]:
    """``({site: sae}, single)`` from either ``sae`` + ``site`` or ``saes``."""
    if saes is not None:
        if sae is not None or site is not None:
            raise ValueError("give either sae= and site= (one site) or saes={site: sae} (several), not both")
        if not saes:
            raise ValueError("saes is empty; give at least one {site: sae}")
        named = {site_name(k): v for k, v in saes.items()}
        return {s: named[s] for s in sort_sites(named)}, False
    if sae is None or site is None:
        raise ValueError("give sae= and site= (one site) or saes={site: sae} (several sites)")
    return {site_name(site): sae}, True


def feature_attributions(
    model: Any,
    tok: Any,
    prompts: Sequence[str],
    *,
    readout_site: int | str,
    readout: Callable[[Tensor], Tensor],
    sae: Any = None,
    site: int | str | None = None,
    saes: Mapping[Any, Any] | None = None,
    batch_size: int = 64,
    progress: bool = False,
) -> Float[np.ndarray, "n d_sae"] | dict[str, Float[np.ndarray, "n d_sae"]]:
    """Per-prompt attribution-patching scores ``sum_pos z_f * d readout / d z_f`` of every SAE feature.

    ``readout`` maps the pooled representation ``[batch, d_model]`` (as :func:`pooled_residual` computes
    it at ``readout_site``) to one scalar per prompt ``[batch]``, e.g. a linear probe's logit. Sites: one
    (``sae=``, ``site=``; returns ``[n, d_sae]``) or several (``saes={site: sae}``; returns
    ``{site: [n, d_sae]}``), all attributed in the same forward/backward pass. BOS and padding are excluded.
    """
    prompts = _check_prompts(prompts)
    sites, single = _site_saes(sae, site, saes)
    readout_site = site_name(readout_site)
    late = [s for s in sites if not _precedes_or_equal(s, readout_site)]
    if late:
        raise ValueError(f"SAE site(s) {late} come after the read-out site {readout_site!r}")
    lm = _lm(model, tok)
    ids, _ = tokenize(lm, prompts)
    params = [p.requires_grad for p in lm.module.parameters()]
    out: dict[str, list[Tensor]] = {s: [] for s in sites}
    try:
        for p in lm.module.parameters():
            p.requires_grad_(False)
        edits = [Splice(s, sae=v) for s, v in sites.items()] + [Record(readout_site)]
        with hooked(lm, edits) as state:
            for batch in tqdm(batches(lm, ids, batch_size), desc="attribution", disable=not progress):
                state.clear()
                real = real_mask(batch)
                with torch.enable_grad():
                    call_model(lm.module, batch)
                    pooled = pool(state.records[readout_site], real)
                    zs = [state.codes[s] for s in sites]
                    grads = torch.autograd.grad(readout(pooled).sum(), zs)
                for s, z, g in zip(sites, zs, grads):
                    out[s].append(((z * g).detach() * real[..., None]).sum(1).float().cpu())
    finally:
        for p, g in zip(lm.module.parameters(), params):
            p.requires_grad_(g)
    res = {s: torch.cat(v).numpy() for s, v in out.items()}
    return res[next(iter(sites))] if single else res


@torch.no_grad()
def pooled_codes(
    model: Any,
    tok: Any,
    prompts: Sequence[str],
    *,
    sae: Any = None,
    site: int | str | None = None,
    saes: Mapping[Any, Any] | None = None,
    batch_size: int = 128,
    progress: bool = False,
) -> Any:
    """SAE codes mean-pooled over each prompt's non-BOS tokens: CSR ``[n, d_sae]`` for one site (``sae=``,
    ``site=``), or ``{site: CSR}`` for several (``saes={site: sae}``), from one forward pass per batch that
    stops after the last site. Observational: nothing is edited.
    """
    prompts = _check_prompts(prompts)
    sites, single = _site_saes(sae, site, saes)
    last = sort_sites(sites)[-1]
    lm = _lm(model, tok)
    ids, _ = tokenize(lm, prompts)
    out: dict[str, list] = {s: [] for s in sites}
    with hooked(lm, [Record(s, stop=(s == last)) for s in sites]) as state:
        for batch in tqdm(batches(lm, ids, batch_size), desc="codes", disable=not progress):
            state.clear()
            real = real_mask(batch)
            try:  # the later blocks are not needed: the last site's Record ends the pass
                call_model(lm.module, batch)
            except StopForward:
                pass
            for s, sae_s in sites.items():
                z = sae_s.encode(state.records[s].to(sae_s.W_dec.dtype))
                out[s].append(sp.csr_matrix(pool(z, real).float().cpu().numpy()))
    res = {s: sp.vstack(v, format="csr") for s, v in out.items()}
    return res[next(iter(sites))] if single else res


__all__ = ["EMBED", "FeatureAblation", "feature_attributions", "pooled_codes", "pooled_residual", "site_name"]
