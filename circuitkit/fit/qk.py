"""Query/key pathways: edges into a head through its queries or keys, not only through its output.

A regression of a head's *output* on earlier sites sees an earlier site ``u`` only where the head's output
varies linearly with ``u`` at the same position. When ``u`` feeds the head's query or key, it changes *where*
the head attends. The head's output is then a nonlinear function of ``u`` that mixes other positions' values,
and the edge is often invisible (MIB's ``<q>``/``<k>`` edges). The query and key vectors themselves are a
linear map of the residual the head reads, so they are fitted here as extra targets:

* :func:`capture_qk` records every head's query and key vector (``[rows, d_head]`` each) at the rows of a
  captured :class:`~circuitkit.activations.Activations` (aligned by ``acts.index`` prompt and position).
* :func:`fit_qk_circuit` fits one :class:`~circuitkit.fit.lasso.CircuitLasso` on the site outputs (pathway
  ``"v"``: the head's output, its values and whatever of its pattern a linear fit sees) with every head's
  query and key vectors as extra targets (``fit(acts, reads=...)``: read nodes ``"L1.H0<q>"``, regressed on the
  sites before the head, never sources). The alpha grid comes from the site targets, so the ``"v"`` edges are
  those of the plain fit.

**Merge rule.** ``circuit.edges`` has one row per ``(source, target)``. Its ``score`` and ``weight`` come
from the pathway with the largest score. ``via`` names every pathway that selected the edge, joined by
``"+"`` in the order ``v, q, k`` (e.g. ``"q"``, ``"v+k"``). ``circuit.path`` keeps one row per pathway,
with its own ``via``. Path ranking (:func:`circuitkit.evaluate.edge_scores`) takes each edge's largest entry
alpha over the pathways (one fit, one grid; every target is standardised).

Only Tracr models (:class:`~circuitkit.models.tracr.TracrTransformer`) are supported for now. Their heads
expose ``W_Q``/``W_K`` and read the residual directly (no layer norm). Other architectures raise
``TypeError``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..activations import Activations
from ..circuit import Circuit, read_node
from ..runtime.interventions import Record, hooked
from ..sites import parse_site

PATHWAYS = ("v", "q", "k")


def _tracr_module(model: Any) -> Any:
    from ..models.adapters import _underlying
    from ..models.tracr import TracrTransformer

    try:
        mod = _underlying(model)
    except ValueError:
        mod = None
    if not isinstance(mod, TracrTransformer):
        raise TypeError(f"query/key pathways (qk=True) support Tracr models (TracrTransformer) only; got "
                         f"{type(model).__name__}")
    return mod


def supports_qk(model: Any) -> bool:
    """Whether :func:`capture_qk` can record this model's queries and keys (Tracr models)."""
    try:
        _tracr_module(model)
    except TypeError:
        return False
    return True


@torch.no_grad()
def capture_qk(model: Any, inputs: Sequence[Sequence[int]] | torch.Tensor, *, acts: Activations,
               heads: Sequence[str] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Every head's query and key vectors at the rows of ``acts``.

    ``inputs`` are the token-id lists ``acts`` was captured from (``acts.index["prompt"]`` indexes them).
    ``heads`` defaults to the head sites of ``acts``. Returns ``{head: {"q": [rows, d_head], "k": [rows,
    d_head]}}``, float32. The query includes ``b_Q`` and the key ``b_K``, before the ``1/sqrt(d_head)``
    scaling.
    """
    mod = _tracr_module(model)
    rows = [r.tolist() for r in inputs] if isinstance(inputs, torch.Tensor) else [list(map(int, r)) for r in inputs]
    if heads is None:
        heads = [s for s in acts.sites if parse_site(s).kind == "head"]
    parsed = {h: parse_site(h) for h in heads}
    bad = [h for h, p in parsed.items() if p.kind != "head"]
    if bad:
        raise ValueError(f"heads must be head sites like 'L1.H0', got {bad}")
    if (acts.index["position"] < 0).any():
        raise ValueError("capture_qk needs token-level rows; acts has aggregated rows (position -1)")
    prompts = acts.index["prompt"].to_numpy()
    positions = acts.index["position"].to_numpy()
    if len(prompts) and prompts.max() >= len(rows):
        raise ValueError(f"acts index refers to prompt {int(prompts.max())} but only {len(rows)} inputs were given")
    layers = sorted({p.layer for p in parsed.values()})
    d_head = {layer: mod.layers[layer].attn.d_head for layer in layers}
    out = {h: {"q": np.zeros((len(prompts), d_head[p.layer]), np.float32),
               "k": np.zeros((len(prompts), d_head[p.layer]), np.float32)} for h, p in parsed.items()}
    # the prompts the rows need, batched by length; each row's slot in its batch
    need = np.unique(prompts)
    lengths = np.array([len(rows[i]) for i in need], dtype=np.int64)
    slot = np.full(max(len(rows), 1), -1, dtype=np.int64)
    # a Tracr head reads its block's input (no layer norm): L{layer}.resid_pre, recorded by the runtime's hooks
    reads = {layer: f"L{layer}.resid_pre" for layer in layers}
    with hooked(mod, [Record(site) for site in reads.values()]) as state:
        for length in np.unique(lengths):
            idx = need[lengths == length]
            slot[idx] = np.arange(idx.size)
            r = np.flatnonzero(np.isin(prompts, idx))
            b, pos = slot[prompts[r]], positions[r]
            state.clear()
            mod(torch.tensor([rows[i] for i in idx], dtype=torch.long))
            for layer in layers:
                attn, x = mod.layers[layer].attn, state.records[reads[layer]]
                q = attn._heads(x, attn.W_Q, attn.b_Q).float().numpy()  # [b, pos, head, d_head]
                k = attn._heads(x, attn.W_K, attn.b_K).float().numpy()
                for h, p in parsed.items():
                    if p.layer == layer:
                        out[h]["q"][r] = q[b, pos, p.head]
                        out[h]["k"][r] = k[b, pos, p.head]
    return out


def fit_qk_circuit(acts: Activations, qk: Mapping[str, Mapping[str, np.ndarray]], *,
                   pathways: Sequence[str] = PATHWAYS, **params: Any) -> Circuit:
    """CircuitLasso with query/key pathways (module docstring: the fit and the merge rule).

    ``qk``: :func:`capture_qk`'s output. ``pathways``: a subset of ``("v", "q", "k")``. ``params`` go to the
    :class:`~circuitkit.fit.lasso.CircuitLasso`. Returns the merged circuit, with ``via`` on edges and path rows
    and ``meta["pathways"]``.
    """
    from .lasso import CircuitLasso

    pathways = list(pathways)
    bad = [p for p in pathways if p not in PATHWAYS]
    if bad or not pathways:
        raise ValueError(f"pathways must be a non-empty subset of {PATHWAYS}, got {pathways}")
    for h in qk:
        p = parse_site(h)
        if p.kind != "head" or h not in acts.sites:
            raise ValueError(f"qk has {h!r}, which is not a head site of acts (sites: {acts.sites})")
    reads = {h: {via: np.asarray(qk[h][via], dtype=np.float32) for via in ("q", "k") if via in pathways}
             for h in qk}
    reads = {h: r for h, r in reads.items() if r}
    circ = CircuitLasso(**params).fit(acts, reads=reads or None).circuit_
    names = {read_node(h, via): (h, via) for h, r in reads.items() for via in r}

    def split(frame: pd.DataFrame) -> pd.DataFrame:
        """Edges into read nodes become edges into their head, with ``via`` the pathway."""
        head = frame["target"].map(lambda t: names.get(t, (t, "v")))
        out = frame.assign(target=[h for h, _ in head], via=[v for _, v in head])
        return out[out["via"].isin(pathways)]

    e = split(circ.edges)
    order = {p: i for i, p in enumerate(PATHWAYS)}
    merged = []
    for (_u, _v), g in e.groupby(["source", "target"], sort=False):
        best = g.loc[g["score"].idxmax()]
        vias = "+".join(sorted(set(g["via"]), key=order.__getitem__))
        merged.append({**{c: best[c] for c in e.columns if c != "via"}, "via": vias})
    edge_df = pd.DataFrame(merged, columns=list(e.columns)) if merged else e
    path = None if circ.path is None else split(circ.path)
    nodes = circ.nodes[circ.nodes["kind"] != "read"]
    meta = {**circ.meta, "pathways": pathways, "qk": True}
    return Circuit(nodes, edge_df, path, meta)


__all__ = ["PATHWAYS", "capture_qk", "fit_qk_circuit", "supports_qk"]
