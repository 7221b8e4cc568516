"""SFC: feature-level attribution patching (Marks et al. 2024, *Sparse Feature Circuits*), as a baseline.

:func:`sfc_circuit` splices every SAE into its site, scores every SAE feature and error node by its
estimated effect on a metric, and scores feature edges between *consecutive* SAE sites. It returns a
:class:`~circuitkit.circuit.Circuit` with the node names of CircuitLasso's feature circuits
(``site/f{i}``, ``site/err``, the metric ``y``) and the edge columns ``source, target, weight, score``.

The spliced model
-----------------
At every SAE site ``s`` (in computation order) with value ``h_s`` the model computes
``h_s = dec(z_s) + e_s`` with ``z_s = encode(h_s)`` and the error ``e_s = h_s - dec(z_s)``; the forward
values are those of the plain model. ``z_s`` (one node ``s/f{i}`` per latent) and ``e_s`` (one node
``s/err``) are the nodes. With ``keep_errors=False`` the errors are ablated instead: every site's value is
``dec(encode(h_s))`` (the SAE-replaced model, whose metric differs), there are no error nodes, and every
quantity below (clean values, patch values, gradients) is taken in that model.

Node effects
------------
The metric ``m`` (per prompt; :mod:`circuitkit.faithfulness`'s metrics, by default the logit difference
``logit[answer] - logit[distractor]`` at the last real token) is a function of the nodes. A node ``a`` with
clean value ``a_c`` and patch value ``a_p`` has the effect

* ``method="attrib"`` (attribution patching): ``IE(a) = sum_t (a_c - a_p)[t] . dm/da[t]``, the gradient taken
  on the clean run, summed over positions ``t`` (and over the model dimension for an error node). One
  forward and one backward per batch. Exact when ``m`` is linear in the node.
* ``method="ig"`` (integrated gradients, per site as Marks et al.): for each site ``s`` separately, its
  value is replaced by ``dec(z_alpha) + e_alpha`` with ``z_alpha = z_p + alpha (z_c - z_p)`` (and ``e``
  likewise), ``alpha = 1/steps, 2/steps, ..., 1``; ``dm/da`` is averaged over the ``steps`` points.
  ``steps`` forwards and backwards per site and batch; ``steps=1`` is ``"attrib"``. The effects of one
  site's nodes then sum to ``m(clean) - m(site s at its patch values)`` up to the Riemann error
  (completeness of integrated gradients).

In the backward pass the splice passes gradients through unchanged (``dh_s/dh_{s'}`` is the model's own
Jacobian), ``dm/dz_s = W_dec dm/dh_s`` and ``dm/de_s = dm/dh_s``: the error is held fixed as a node of its
own, and an upstream node reaches the metric through every path, including through downstream errors.

Patch values ``a_p`` (``ablation=``): ``"zero"``; ``"mean"`` (default): each latent's mean code and the mean
error vector over the reference prompts' real positions after ``skip_first`` (the inputs by default; the
same mean as :func:`circuitkit.faithfulness.feature_faithfulness`), at every position; ``"resample"``: the
node values on the paired ``corrupted`` prompts, position by position (the default when ``corrupted`` is
given). Effects are summed over *every* position of a prompt, BOS included, because that is where
:func:`~circuitkit.faithfulness.feature_faithfulness` ablates a feature.

Edge effects (derivation)
-------------------------
Take consecutive SAE sites ``U < D``, an upstream node ``u`` at ``U`` and a downstream node ``d`` at ``D``.
When the sites are residual streams (every SAE site of circuitkit's toy LM and SmolLM2 SAEs is), every path
from ``u`` to the metric passes through ``D``'s value, so with ``D``'s nodes as the intermediate variables
the chain rule splits the node effect exactly::

    dm/du = sum_d dm/dd . dd/du        (d over D's latents and its error)

where ``dd/du`` is the Jacobian of ``d = encode(h_D)`` (or ``e_D = h_D - dec(encode(h_D))``) with respect to
``u`` through the layers between the sites, *holding U's other nodes fixed*. Multiplying by the upstream
change gives the first-order effect of ``u`` on ``m`` *through* ``d``::

    IE(u -> d) = sum_{t'} (u_c - u_p)[t'] . sum_t (dm/dd[t])^T dd[t]/du[t']

and ``sum_d IE(u -> d) = IE(u)`` for ``method="attrib"``. It is computed without forming the Jacobian: on a
run in which every site's nodes are re-created as leaves (so the graph between ``U`` and ``D`` is the only
path), the scalar ``S_d = sum_t stopgrad(dm/dd[t]) . d[t]`` is back-propagated to ``U``'s leaves once per
downstream node ``d``; its gradient with respect to ``u`` is ``sum_t (dm/dd[t])^T dd[t]/du``, which is then
dotted with ``u_c - u_p``. Prompts do not interact, so one backward serves the whole batch. With
``method="ig"`` the downstream gradient ``dm/dd`` is the integrated (step-averaged) one, and the Jacobian
is taken on the clean run (as Marks et al.'s implementation does). The last SAE site's nodes get an edge to
``y`` (the metric) whose weight is their node effect.

Thresholds and the returned circuit
-----------------------------------
A node is kept when its mean ``|IE|`` over prompts is ``>= node_threshold``; edges are scored only between
kept nodes and kept when their mean ``|IE(u -> d)|`` over prompts is ``>= edge_threshold``. As for
:mod:`circuitkit.baselines.eap`, an edge's ``weight`` is the mean *signed* per-prompt effect and its
``score`` the mean *absolute* per-prompt effect. ``circuit.nodes`` lists every latent of every SAE site
(feature index order), each site's error node and ``y``, with extra columns ``effect`` (mean signed node
effect), ``abs_effect`` (mean ``|IE|``, the ranking score) and ``in_circuit`` (above ``node_threshold``).

Cost: ``"attrib"``: one clean forward (+ one corrupted forward) to record, one forward + backward for the
nodes and one forward plus one backward *per kept downstream node* (through one inter-site span) for the
edges, per batch. ``"ig"``: ``n_sites * steps`` forwards + backwards for the nodes instead.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ..circuit import Circuit, error_node, feature_node
from ..sites import parse_site

logger = logging.getLogger(__name__)

METHODS = ("attrib", "ig")
SFC_ABLATIONS = ("zero", "mean", "resample")


def _choice(value: Any, valid: Sequence[str], what: str) -> str:
    if not isinstance(value, str) or value not in valid:
        raise ValueError(f"unknown {what} {value!r}; valid choices: {list(valid)}")
    return value


@dataclass
class _Nodes:
    """Node values of one site on one batch: codes ``z`` ``[b, t, d_sae]`` and error ``e`` ``[b, t, d]``."""

    z: Tensor
    e: Tensor | None


class _SFC:
    """State shared by the passes of :func:`sfc_circuit` (module docstring)."""

    def __init__(self, model: Any, saes: Mapping[str, Any], *, keep_errors: bool, metric: Any) -> None:
        from ..faithfulness import _Metric
        from ..models.adapters import get_adapter
        from ..runtime.loading import module_of
        from ..sae import attach_saes
        from ..sites import sort_sites

        self.model = model
        self.module = module_of(model)
        self.tracr = get_adapter(self.module).spec.name == "tracr"
        attached = attach_saes(saes)
        self.sites = sort_sites(list(attached))
        self.saes = {s: attached[s] for s in self.sites}
        self.keep_errors = bool(keep_errors)
        self.metric: _Metric = metric
        p = next(iter(self.saes[self.sites[0]].parameters()), None) if hasattr(
            self.saes[self.sites[0]], "parameters") else None
        self.sae_dtype = p.dtype if p is not None else torch.float32

    # -- forwards ---------------------------------------------------------------------------------------
    def forward(self, ids: Tensor, mask: Tensor | None) -> Tensor:
        if self.tracr:
            return self.module(ids)
        y = self.module(input_ids=ids, attention_mask=mask, use_cache=False)
        return getattr(y, "logits", y)

    def _enc(self, s: str, h: Tensor) -> Tensor:
        return self.saes[s].encode(h.to(self.sae_dtype))

    def _dec(self, s: str, z: Tensor, like: Tensor) -> Tensor:
        return self.saes[s].decode(z).to(like.dtype)

    def record(self, ids: Tensor, mask: Tensor | None) -> tuple[Tensor, dict[str, _Nodes]]:
        """The spliced model's logits and every site's node values (no grad)."""
        from ..runtime.interventions import Custom, hooked

        vals: dict[str, _Nodes] = {}

        def edit(s: str) -> Custom:
            def fn(h: Tensor) -> Tensor | None:
                if h.shape[-1] != int(self.saes[s].cfg.d_in):
                    raise ValueError(f"SAE width mismatch at site {s!r}: the site has d={h.shape[-1]} but the "
                                     f"SAE expects d_in={int(self.saes[s].cfg.d_in)}")
                z = self._enc(s, h)
                xh = self._dec(s, z, h)
                vals[s] = _Nodes(z, (h - xh) if self.keep_errors else None)
                return None if self.keep_errors else xh

            return Custom(s, fn=fn)

        with torch.no_grad(), hooked(self.model, [edit(s) for s in self.sites]):
            out = self.forward(ids, mask)
        missing = [s for s in self.sites if s not in vals]
        if missing:
            raise ValueError(f"SAE sites {missing} were never reached in the forward pass")
        return out, vals

    def node_grads(self, ids: Tensor, mask: Tensor | None, chunk: Any) -> dict[str, _Nodes]:
        """``dm/dz_s`` and ``dm/de_s`` at the clean point for every site (one forward + backward)."""
        from ..runtime.interventions import Custom, hooked

        leaves: dict[str, _Nodes] = {}

        def edit(s: str) -> Custom:
            def fn(h: Tensor) -> Tensor:
                if self.keep_errors:  # value h, gradient passed through; z and e are leaves
                    z = self._enc(s, h.detach()).detach().requires_grad_(True)
                    dec = self._dec(s, z, h)
                    e = (h.detach() - dec.detach()).requires_grad_(True)
                    leaves[s] = _Nodes(z, e)
                    return h + (dec - dec.detach()) + (e - e.detach())
                z = self._enc(s, h)  # the SAE-replaced model: z stays in the graph
                if not z.requires_grad:  # the first site: nothing upstream requires grad
                    z = z.detach().requires_grad_(True)
                leaves[s] = _Nodes(z, None)
                return self._dec(s, z, h)

            return Custom(s, fn=fn)

        with torch.enable_grad(), hooked(self.model, [edit(s) for s in self.sites]):
            out = self.forward(ids, mask)
            m = self.metric._per_prompt(out, chunk).sum()
            ins = [t for s in self.sites for t in (leaves[s].z, leaves[s].e) if t is not None]
            gs = torch.autograd.grad(m, ins, allow_unused=True)
        it = iter(gs)
        res = {}
        for s in self.sites:
            gz = next(it)
            ge = next(it) if leaves[s].e is not None else None
            res[s] = _Nodes(_zeros_if_none(gz, leaves[s].z), None if ge is None else _zeros_if_none(ge, leaves[s].e))
        return res

    def ig_grads(self, ids: Tensor, mask: Tensor | None, chunk: Any, clean: dict[str, _Nodes],
                 patch: dict[str, _Nodes], steps: int) -> dict[str, _Nodes]:
        """Per site, ``dm/da`` averaged over ``steps`` points on the line from the patch to the clean nodes."""
        from ..runtime.interventions import Custom, hooked

        res = {}
        for s in self.sites:
            c, p = clean[s], patch[s]
            acc_z = torch.zeros_like(c.z)
            acc_e = None if c.e is None else torch.zeros_like(c.e)
            for k in range(1, steps + 1):
                box: dict[str, Tensor] = {}
                fn = self._interpolated(s, c, p, k / steps, box)
                edits = [Custom(s, fn=fn)]
                if not self.keep_errors:  # the other sites stay replaced by their reconstructions
                    edits += [Custom(o, fn=self._recon(o)) for o in self.sites if o != s]
                with torch.enable_grad(), hooked(self.model, _ordered(edits, self.sites)):
                    out = self.forward(ids, mask)
                    m = self.metric._per_prompt(out, chunk).sum()
                    ins = [box["z"]] + ([box["e"]] if "e" in box else [])
                    gs = torch.autograd.grad(m, ins, allow_unused=True)
                acc_z += _zeros_if_none(gs[0], box["z"])
                if acc_e is not None:
                    acc_e += _zeros_if_none(gs[1], box["e"])
            res[s] = _Nodes(acc_z / steps, None if acc_e is None else acc_e / steps)
        return res

    def _interpolated(self, s: str, c: _Nodes, p: _Nodes, a: float, box: dict[str, Tensor]) -> Callable:
        """The edit value ``dec(z_a) + e_a`` at ``alpha = a`` on the line from ``p`` to ``c``; leaves in ``box``."""

        def fn(h: Tensor) -> Tensor:
            z = (p.z + a * (c.z - p.z)).detach().requires_grad_(True)
            box["z"] = z
            v = self._dec(s, z, h)
            if c.e is not None:
                e = (p.e + a * (c.e - p.e)).detach().to(h.dtype).requires_grad_(True)
                box["e"] = e
                v = v + e
            return v

        return fn

    def _recon(self, s: str) -> Callable[[Tensor], Tensor]:
        def fn(h: Tensor) -> Tensor:
            return self._dec(s, self._enc(s, h), h)

        return fn

    def edge_effects(self, ids: Tensor, mask: Tensor | None, grads: dict[str, _Nodes], delta: dict[str, _Nodes],
                     kept: dict[str, tuple[list[int], bool]]) -> dict[tuple[str, str], np.ndarray]:
        """Per-prompt ``IE(u -> d)`` for kept nodes of consecutive sites: ``{(U, D): [b, n_up, n_down]}`` with the
        upstream (downstream) kept features in order, then the error node when it is kept."""
        from ..runtime.interventions import Custom, Record, StopForward, hooked

        down: dict[str, _Nodes] = {}
        leaves: dict[str, _Nodes] = {}

        def edit(s: str) -> Custom:
            def fn(h: Tensor) -> Tensor:
                z = self._enc(s, h)
                e = (h - self._dec(s, z, h)) if self.keep_errors else None
                down[s] = _Nodes(z, e)
                zl = z.detach().requires_grad_(True)
                el = None if e is None else e.detach().requires_grad_(True)
                leaves[s] = _Nodes(zl, el)
                v = self._dec(s, zl, h)
                return v + el if el is not None else v

            return Custom(s, fn=fn)

        out: dict[tuple[str, str], np.ndarray] = {}
        b = ids.shape[0]
        edits = [edit(s) for s in self.sites] + [Record(self.sites[-1], stop=True)]  # nothing after is needed
        with torch.enable_grad(), hooked(self.model, edits):
            try:
                self.forward(ids, mask)
            except StopForward:
                pass
            for up, dn in zip(self.sites[:-1], self.sites[1:]):
                fu, eu = kept[up]
                fd, ed = kept[dn]
                n_up, n_dn = len(fu) + int(eu), len(fd) + int(ed)
                res = np.zeros((b, n_up, n_dn))
                if n_up == 0 or n_dn == 0:
                    out[(up, dn)] = res
                    continue
                ins = [leaves[up].z] + ([leaves[up].e] if eu else [])
                du = delta[up]
                targets: list[Tensor] = []
                for q in fd:
                    targets.append((grads[dn].z[..., q].detach() * down[dn].z[..., q].to(grads[dn].z.dtype)).sum())
                if ed:
                    targets.append((grads[dn].e.detach() * down[dn].e.to(grads[dn].e.dtype)).sum())
                fu_t = torch.as_tensor(fu, dtype=torch.long)
                for j, tgt in enumerate(targets):
                    if not tgt.requires_grad:
                        continue  # this downstream node does not depend on the upstream site
                    gs = torch.autograd.grad(tgt, ins, retain_graph=True, allow_unused=True)
                    gz = _zeros_if_none(gs[0], leaves[up].z)
                    if len(fu):
                        res[:, :len(fu), j] = (du.z[..., fu_t] * gz[..., fu_t].to(du.z.dtype)).sum(1).double().numpy()
                    if eu:
                        ge = _zeros_if_none(gs[1], leaves[up].e)
                        res[:, -1, j] = (du.e * ge.to(du.e.dtype)).sum((1, 2)).double().numpy()
                out[(up, dn)] = res
        return out


def _zeros_if_none(g: Tensor | None, like: Tensor) -> Tensor:
    return torch.zeros_like(like) if g is None else g


def _ordered(edits: list[Any], sites: list[str]) -> list[Any]:
    return sorted(edits, key=lambda e: sites.index(e.site))


def _patch_values(clean: dict[str, _Nodes], *, ablation: str, means: dict[str, _Nodes] | None,
                  corrupt: dict[str, _Nodes] | None) -> dict[str, _Nodes]:
    out = {}
    for s, c in clean.items():
        if ablation == "zero":
            out[s] = _Nodes(torch.zeros_like(c.z), None if c.e is None else torch.zeros_like(c.e))
        elif ablation == "mean":
            m = means[s]
            out[s] = _Nodes(m.z.to(c.z.dtype).expand_as(c.z),
                            None if c.e is None else m.e.to(c.e.dtype).expand_as(c.e))
        else:
            k = corrupt[s]
            out[s] = _Nodes(k.z, k.e)
    return out


def sfc_circuit(
    model: Any,
    saes: Any,
    inputs: Any,
    *,
    metric: str | Callable[[Tensor, Tensor], Tensor] = "logit_diff",
    answer: Any = None,
    distractor: Any = None,
    corrupted: Any = None,
    ablation: Literal["zero", "mean", "resample"] | None = None,
    reference: Any = None,
    method: Literal["attrib", "ig"] = "attrib",
    steps: int = 10,
    node_threshold: float = 0.1,
    edge_threshold: float = 0.01,
    keep_errors: bool = True,
    edges: bool = True,
    attention_mask: Any = None,
    output_kind: Literal["categorical", "numerical"] | None = None,
    position: Literal["last", "all"] = "last",
    skip_first: int = 1,
    batch_size: int = 32,
) -> Circuit:
    """Sparse-feature-circuit attribution (module docstring) of ``model`` with ``saes`` spliced in.

    Parameters
    ----------
    saes: ``{site: sae}``, ``{hook_name: sae}`` or a list of sae_lens SAEs (:func:`circuitkit.sae.attach_saes`).
    inputs: ``[batch, pos]`` token ids or a list of such batches (one per length).
    metric, answer, distractor, output_kind, position, skip_first: the per-prompt metric, as in
        :func:`circuitkit.faithfulness.feature_faithfulness` (default the logit difference at the last real token;
        ``answer``/``distractor``: ``[batch]`` token ids with the structure of ``inputs``).
    corrupted: paired corrupted prompts (the shapes of ``inputs``); their node values are the patch values.
    ablation: patch values ``"zero"``, ``"mean"`` (over ``reference``, default the inputs) or ``"resample"``
        (needs ``corrupted``); default ``"resample"`` with ``corrupted``, else ``"mean"``.
    method: ``"attrib"`` (gradient at the clean point) or ``"ig"`` (integrated gradients over ``steps``).
    node_threshold, edge_threshold: minimum mean ``|effect|`` of a kept node / edge (in metric units).
    keep_errors: error nodes are nodes (Marks et al.); ``False`` ablates them (the SAE-replaced model).
    edges: score feature edges (``False``: nodes only, the circuit then has only the edges into ``y``).
    attention_mask: right-padding masks with the structure of ``inputs``.
    batch_size: prompts per forward pass.
    """
    from ..faithfulness import _batches, _Chunk, _Metric, _paired

    t0 = time.perf_counter()
    method = _choice(method, METHODS, "method")
    if ablation is None:
        ablation = "resample" if corrupted is not None else "mean"
    ablation = _choice(ablation, SFC_ABLATIONS, "ablation")
    if ablation == "resample" and corrupted is None:
        raise ValueError("ablation='resample' needs corrupted= prompts paired with inputs")
    if ablation != "resample" and corrupted is not None:
        raise ValueError(f"corrupted= prompts are only used by ablation='resample', got ablation={ablation!r}")
    if not (isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1):
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    for name, thr in (("node_threshold", node_threshold), ("edge_threshold", edge_threshold)):
        if not (isinstance(thr, (int, float)) and not isinstance(thr, bool) and np.isfinite(thr) and thr >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {thr!r}")
    metric_obj = _Metric()
    metric_obj._setup_metric(model, metric=metric, position=position, skip_first=skip_first, output_kind=output_kind,
                             batch_size=batch_size, answer=answer, distractor=distractor)
    if metric == "kl":
        raise ValueError("metric='kl' is 0 with a zero gradient at the clean run, so attribution is degenerate; "
                         "valid choices here: ['task', 'logit_diff', 'prob'] or a callable")
    run = _SFC(model, saes, keep_errors=keep_errors, metric=metric_obj)
    other = [s for s in run.sites if parse_site(s).kind not in ("embed", "resid_pre", "resid_post")]
    if edges and other:
        warnings.warn(f"SAE sites {other} are not residual streams: paths that bypass them are not edges, so the "
                      "edges out of a node need not sum to its effect", UserWarning, stacklevel=2)
    xs = _batches(inputs, "inputs")
    masks = _paired(attention_mask, xs, "attention_mask", ndim=2)
    answers = _paired(answer, xs, "answer", ndim=1)
    distractors = _paired(distractor, xs, "distractor", ndim=1)
    ks: list[Any] = [None] * len(xs)
    if corrupted is not None:
        ks = _batches(corrupted, "corrupted")
        if len(ks) != len(xs):
            raise ValueError(f"corrupted has {len(ks)} batches but inputs has {len(xs)}; pair them one to one")
        for i, (a, b) in enumerate(zip(xs, ks)):
            if a.shape != b.shape:
                raise ValueError(f"batch {i}: inputs shape {tuple(a.shape)} != corrupted shape {tuple(b.shape)}; "
                                 "a corrupted prompt must have the same length as its clean prompt")
    device = next(iter(run.module.parameters()), torch.empty(0)).device

    chunks = []
    for x, m, a, d, k in zip(xs, masks, answers, distractors, ks):
        for s in range(0, x.shape[0], batch_size):
            sl = slice(s, s + batch_size)
            chunks.append(tuple(None if v is None else v[sl].to(device) for v in (x, m, a, d, k)))

    means = None
    if ablation == "mean":
        means = _means(run, chunks if reference is None else
                       [(r[i:i + batch_size].to(device), None) for r in _batches(reference, "reference")
                        for i in range(0, r.shape[0], batch_size)], skip_first)

    # pass 1: node effects (and the downstream gradients / upstream deltas the edges need)
    d_sae = {s: int(run.saes[s].cfg.d_sae) for s in run.sites}
    sums = {s: np.zeros(d_sae[s] + int(run.keep_errors)) for s in run.sites}
    abs_sums = {s: np.zeros(d_sae[s] + int(run.keep_errors)) for s in run.sites}
    stash = []
    n = 0
    m_clean = 0.0
    for ids, mk, ans, dis, kid in chunks:
        full, clean = run.record(ids, mk)
        chunk = _Chunk(ids, mk, ans, dis, full, {})
        m_clean += float(metric_obj._per_prompt(full, chunk).double().sum())
        corrupt = run.record(kid, mk)[1] if kid is not None else None
        patch = _patch_values(clean, ablation=ablation, means=means, corrupt=corrupt)
        if method == "attrib":
            grads = run.node_grads(ids, mk, chunk)
        else:
            grads = run.ig_grads(ids, mk, chunk, clean, patch, steps)
        delta = {s: _Nodes(clean[s].z - patch[s].z, None if clean[s].e is None else clean[s].e - patch[s].e)
                 for s in run.sites}
        for s in run.sites:
            per = (delta[s].z * grads[s].z.to(delta[s].z.dtype)).sum(1).double()  # [b, d_sae]
            if run.keep_errors:
                pe = (delta[s].e * grads[s].e.to(delta[s].e.dtype)).sum((1, 2)).double()[:, None]
                per = torch.cat([per, pe], dim=1)
            per = per.cpu().numpy()
            sums[s] += per.sum(0)
            abs_sums[s] += np.abs(per).sum(0)
        if edges and len(run.sites) > 1:
            stash.append((ids, mk, grads, delta))
        n += ids.shape[0]
    effect = {s: sums[s] / n for s in run.sites}
    abs_effect = {s: abs_sums[s] / n for s in run.sites}
    kept = {}
    for s in run.sites:
        keep = abs_effect[s] >= node_threshold
        kept[s] = (np.flatnonzero(keep[:d_sae[s]]).tolist(), bool(run.keep_errors and keep[-1]))

    # pass 2: edges between consecutive sites
    e_sum: dict[tuple[str, str], np.ndarray] = {}
    e_abs: dict[tuple[str, str], np.ndarray] = {}
    for ids, mk, grads, delta in stash:
        res = run.edge_effects(ids, mk, grads, delta, kept)
        for key, r in res.items():
            e_sum[key] = e_sum.get(key, 0) + r.sum(0)
            e_abs[key] = e_abs.get(key, 0) + np.abs(r).sum(0)
    stash.clear()

    def names(s: str) -> list[str]:
        fu, eu = kept[s]
        return [feature_node(s, i) for i in fu] + ([error_node(s)] if eu else [])

    rows = []
    for (up, dn), tot in e_sum.items():
        w, sc = tot / n, e_abs[(up, dn)] / n
        nu, nd = names(up), names(dn)
        for i, j in zip(*np.nonzero(sc >= edge_threshold)):
            rows.append((nu[i], nd[j], float(w[i, j]), float(sc[i, j])))
    last = run.sites[-1]
    for k, name in enumerate(names(last)):
        idx = kept[last][0][k] if k < len(kept[last][0]) else -1
        rows.append((name, "y", float(effect[last][idx]), float(abs_effect[last][idx])))
    edge_df = pd.DataFrame(rows, columns=["source", "target", "weight", "score"])

    node_rows = []
    for s in run.sites:
        for i in range(d_sae[s]):
            node_rows.append((feature_node(s, i), s, "feature", i, effect[s][i], abs_effect[s][i]))
        if run.keep_errors:
            node_rows.append((error_node(s), s, "error", -1, effect[s][-1], abs_effect[s][-1]))
    nodes = pd.DataFrame(node_rows, columns=["node", "site", "kind", "feature", "effect", "abs_effect"])
    nodes["in_circuit"] = nodes["abs_effect"] >= node_threshold
    nodes = pd.concat([nodes, pd.DataFrame({"node": ["y"], "site": [""], "kind": ["target"], "feature": [-1],
                                            "effect": [np.nan], "abs_effect": [np.nan], "in_circuit": [True]})],
                      ignore_index=True)
    nodes.insert(4, "label", nodes["node"].where(nodes["kind"] == "target", ""))
    meta = {"method": "sfc" if method == "attrib" else "sfc-ig", "level": "feature", "attribution": method,
            "ig_steps": steps if method == "ig" else 0, "ablation": ablation, "keep_errors": run.keep_errors,
            "metric": metric if isinstance(metric, str) else getattr(metric, "__name__", "callable"),
            "position": position, "node_threshold": float(node_threshold), "edge_threshold": float(edge_threshold),
            "sites": run.sites, "n_prompts": n, "m_clean": m_clean / n,
            "n_nodes_kept": int(sum(len(kept[s][0]) + kept[s][1] for s in run.sites)),
            "seconds": time.perf_counter() - t0, "score": "mean |per-prompt effect|"}
    return Circuit(nodes, edge_df, None, meta)


def _means(run: _SFC, chunks: list[tuple], skip_first: int) -> dict[str, _Nodes]:
    """Each latent's mean code and the mean error over real positions after ``skip_first``."""
    sz: dict[str, Tensor] = {}
    se: dict[str, Tensor] = {}
    cnt = 0.0
    for ch in chunks:
        ids, mk = ch[0], ch[1]
        _, vals = run.record(ids, mk)
        w = torch.ones(ids.shape, dtype=torch.float64, device=ids.device) if mk is None else mk.to(torch.float64)
        w[:, :skip_first] = 0
        for s, v in vals.items():
            sz[s] = sz.get(s, 0) + (v.z.to(torch.float64) * w[..., None]).sum((0, 1))
            if v.e is not None:
                se[s] = se.get(s, 0) + (v.e.to(torch.float64) * w[..., None]).sum((0, 1))
        cnt += float(w.sum())
    if cnt == 0:
        raise ValueError("mean ablation: the reference has no positions after skip_first")
    return {s: _Nodes(sz[s] / cnt, (se[s] / cnt) if s in se else None) for s in sz}  # float64; cast on use


def sfc(model: Any, clean: Any, corrupt: Any = None, *, saes: Any, **params: Any) -> Circuit:
    """:func:`sfc_circuit` with the registry's signature ``(model, clean, corrupt, **params)``
    (``ck.discover("sfc", model, clean, corrupt, saes=..., answer=..., distractor=...)``)."""
    return sfc_circuit(model, saes, clean, corrupted=corrupt, **params)


__all__ = ["METHODS", "SFC_ABLATIONS", "sfc", "sfc_circuit"]
