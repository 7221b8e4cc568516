"""Exchange formats: MIB circuit files (JSON and ``.pt``), feature-to-component roll-up, Neuronpedia graph JSON.

MIB (circuit-localization track)
--------------------------------
MIB (Mueller et al. 2025) reads circuits in the format of EAP-IG's ``Graph.to_json`` / ``Graph.to_pt``
(hannamw/EAP-IG, ``src/eap/graph.py``). The JSON is::

    {"cfg":   {"n_layers": int, "n_heads": int, "parallel_attn_mlp": bool, "d_model": int},
     "nodes": {"input": {"in_graph": bool}, "a0.h0": {...}, ..., "m0": {...}, ..., "logits": {...}},
     "edges": {"input->a0.h0<q>": {"score": float, "in_graph": bool}, ..., "m1->logits": {...}}}

Node names map one to one onto circuitkit's component sites:

==============  ===============
circuitkit      MIB
==============  ===============
``embed``       ``input``
``L{l}.H{h}``   ``a{l}.h{h}``
``L{l}.MLP``    ``m{l}``
``out``         ``logits``
==============  ===============

An edge into a head is named ``src->a{l}.h{h}<q>`` (``<k>``, ``<v>``): MIB patches the head's query, key and
value inputs separately. Every candidate edge of the model is listed (``u`` before ``v`` in computation order;
with ``parallel_attn_mlp`` a layer's heads do not feed its own MLP), so a 2-layer, 2-head sequential model has
46 edges.

**Mapping rule (export).** CircuitLasso regresses a head's *output* on earlier components and does not tell
the query, key and value paths apart. By default (``qkv="v"``) a circuitkit edge ``u -> L{l}.H{h}`` is
exported as the ``<v>`` edge (the path through which the head's output depends linearly on its input; q and k
act through the attention pattern), and the ``<q>``/``<k>`` edges get score 0 and ``in_graph`` False. A
``qkv`` column in the circuit's edge table (a string of letters from ``"qkv"``, e.g. ``"v"`` or ``"qk"``)
overrides this per edge; the ``qkv=`` argument sets the letters for edges without one. Pitfall: circuitkit's
own edge ablation (:mod:`circuitkit.faithfulness`) patches a head's whole input copy of the residual, i.e. q,
k and v together; to have MIB keep the same paths, export with ``qkv="qkv"``. An edge's MIB ``score``
is its ranking score with the sign of its weight (``sign(weight) * score``), so MIB's ranking by ``|score|``
is circuitkit's ranking. ``in_graph`` is True for the circuit's edges (``k=`` keeps only the ``k``
highest-scoring ones; an ``in_graph`` column, as :func:`load_mib` writes, is used when present). Candidate
edges the circuit does not have get score 0 and ``in_graph`` False. A node's ``in_graph`` is True when an
in-graph edge starts or ends at it; ``logits`` is always in the graph (as in EAP-IG). A method that scores
every candidate edge (EAP) has all of them in its circuit, so pass ``k=``; MIB's own evaluation re-selects the
top edges by ``|score|`` at each of its sizes, so there the scores are what counts.

**Import** (:func:`load_mib`): the ``<q>``, ``<k>``, ``<v>`` edges from one source into one head merge into one
circuitkit edge: ``weight`` is the signed score of largest magnitude, ``score = |weight|``, ``in_graph`` is
True if any of the three is, and ``qkv`` lists the letters that are in the graph (or, when none is, those with
a nonzero score). Edges with score 0 that are not in the graph are dropped. The ``weight`` column survives a
round trip when ``|weight| == score`` (CircuitLasso's block norms and signed coefficients); otherwise only
its sign does.

**The ``.pt`` file** holds the same information as tensors, with the keys EAP-IG's ``Graph.to_pt`` writes:
``cfg`` (the dict above), ``src_nodes`` (forward nodes: ``input``, then per layer ``a{l}.h0..``, ``m{l}``),
``dst_nodes`` (backward nodes: per layer ``a{l}.h{h}<q>`` for every head, then ``<k>``, then ``<v>``, then
``m{l}``; finally ``logits``), ``edges_scores`` (float64 ``[n_src, n_dst]``), ``edges_in_graph`` (bool, same
shape) and ``nodes_in_graph`` (bool ``[n_src]``). **Orientation: rows are sources, columns are targets**
(EAP-IG's), the transpose of :meth:`circuitkit.circuit.Circuit.adjacency`. Pairs that are not candidate edges
hold score 0 and False.

Feature circuits
----------------
MIB's track is component level. :func:`rollup` maps a feature circuit (nodes ``site/f{i}``, ``site/err``) to
components first; its docstring states the rule.

Neuronpedia / circuit-tracer
----------------------------
:func:`to_neuronpedia` writes the graph JSON of circuit-tracer's frontend and Neuronpedia's graph viewer
(``circuit_tracer/frontend/graph_models.py``: ``{metadata, qParams, nodes, links}``).
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from .circuit import Circuit
from .sites import component_sites, parse_site, sort_sites

Edge = tuple[str, str]

#: Keys of EAP-IG's ``Graph.to_json`` output and its records (hannamw/EAP-IG ``src/eap/graph.py``).
MIB_KEYS = ("cfg", "nodes", "edges")
MIB_CFG_KEYS = ("n_layers", "n_heads", "parallel_attn_mlp", "d_model")
MIB_EDGE_KEYS = ("score", "in_graph")
#: Keys of EAP-IG's ``Graph.to_pt`` dict (without the optional node and neuron scores).
MIB_PT_KEYS = ("cfg", "src_nodes", "dst_nodes", "edges_scores", "edges_in_graph", "nodes_in_graph")
MIB_FORMATS = ("json", "pt")
QKV = "qkv"

_MIB_NODE = re.compile(r"^(?:input|logits|a(?P<al>\d+)\.h(?P<ah>\d+)|m(?P<ml>\d+))$")
_MIB_EDGE = re.compile(r"^(?P<src>[^<>]+)->(?P<dst>[^<>]+?)(?:<(?P<qkv>[qkv])>)?$")
_MIB_FORMS = "input, a{L}.h{H}, m{L}, logits"
_OUR_FORMS = "embed, L{l}.H{h}, L{l}.MLP, out"


# --------------------------------------------------------------------------------------------------
# names and the candidate graph
# --------------------------------------------------------------------------------------------------


def site_to_mib(site: str) -> str:
    """circuitkit component site -> MIB node name (``"L3.H1"`` -> ``"a3.h1"``)."""
    try:
        p = parse_site(site)
    except ValueError:
        p = None
    if p is None or p.kind not in ("embed", "head", "mlp", "out"):
        hint = " (a feature-circuit node: roll it up with circuitkit.interop.rollup first)" if "/" in str(site) else ""
        raise ValueError(f"node {site!r} is not a component site MIB knows; valid forms are {_OUR_FORMS}{hint}")
    if p.kind == "embed":
        return "input"
    if p.kind == "out":
        return "logits"
    if p.kind == "head":
        return f"a{p.layer}.h{p.head}"
    return f"m{p.layer}"


def mib_to_site(name: str) -> str:
    """MIB node name -> circuitkit site (``"a3.h1"`` -> ``"L3.H1"``)."""
    m = _MIB_NODE.match(str(name))
    if m is None:
        raise ValueError(f"unknown MIB node {name!r}; valid forms are {_MIB_FORMS}")
    if name == "input":
        return "embed"
    if name == "logits":
        return "out"
    if m.group("al") is not None:
        return f"L{int(m.group('al'))}.H{int(m.group('ah'))}"
    return f"L{int(m.group('ml'))}.MLP"


def check_mib_cfg(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a MIB ``cfg`` and return it as a plain dict with exactly the four published keys."""
    if not isinstance(cfg, Mapping):
        raise TypeError(f"cfg must be a dict with keys {list(MIB_CFG_KEYS)} or come from mib_cfg(model), "
                         f"got {type(cfg).__name__}")
    missing = [k for k in MIB_CFG_KEYS if k not in cfg]
    if missing:
        raise ValueError(f"cfg lacks keys {missing}; a MIB cfg has {list(MIB_CFG_KEYS)}")
    out: dict[str, Any] = {}
    for k in ("n_layers", "n_heads", "d_model"):
        v = cfg[k]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) < (1 if k != "n_heads" else 0):
            raise ValueError(f"cfg[{k!r}] must be an integer >= {1 if k != 'n_heads' else 0}, got {v!r}")
        out[k] = int(v)
    par = cfg["parallel_attn_mlp"]
    if not isinstance(par, (bool, np.bool_)):
        raise TypeError(f"cfg['parallel_attn_mlp'] must be True or False, got {par!r}")
    out["parallel_attn_mlp"] = bool(par)
    return {k: out[k] for k in MIB_CFG_KEYS}


def mib_cfg(model: Any) -> dict[str, Any]:
    """The MIB ``cfg`` of a model: ``n_layers``/``n_heads`` from :func:`circuitkit.models.adapters.get_adapter`,
    ``parallel_attn_mlp`` from the adapter (GPT-NeoX ``use_parallel_residual``), ``d_model`` from the HF config
    (``hidden_size``/``n_embd``/``d_model``) or the module's ``d_model`` (Tracr). ``model``: a torch module, a
    :class:`~circuitkit.runtime.loading.LoadedModel`, an nnsight model or a Tracr task
    (:func:`circuitkit.runtime.loading.module_of`)."""
    from .models.adapters import get_adapter
    from .runtime.loading import module_of

    module = module_of(model)
    ad = get_adapter(module)
    config = getattr(module, "config", None)
    d_model = None
    for attr in ("hidden_size", "n_embd", "d_model"):
        d_model = getattr(config, attr, None) if config is not None else None
        if d_model is not None:
            break
    if d_model is None:
        d_model = getattr(module, "d_model", None)
    if d_model is None:
        raise ValueError(f"cannot find d_model of {type(module).__name__}: no config.hidden_size/n_embd/d_model "
                         "and no .d_model attribute; pass cfg as a dict instead")
    return check_mib_cfg({"n_layers": ad.n_layers, "n_heads": ad.n_heads,
                          "parallel_attn_mlp": ad.is_parallel(), "d_model": int(d_model)})


def _resolve_cfg(cfg: Any) -> dict[str, Any]:
    if isinstance(cfg, Mapping):
        return check_mib_cfg(cfg)
    return mib_cfg(cfg)


def mib_candidate_edges(cfg: Mapping[str, Any]) -> list[Edge]:
    """The candidate component edges of a MIB model, as circuitkit site pairs, in EAP-IG's order.

    Sequential blocks: every earlier component feeds each head and the MLP of a layer (the MLP also reads
    its own layer's heads) and ``out``. ``parallel_attn_mlp``: a layer's MLP does not read its own heads.
    """
    cfg = check_mib_cfg(cfg)
    nl, nh, par = cfg["n_layers"], cfg["n_heads"], cfg["parallel_attn_mlp"]
    stream = ["embed"]
    out: list[Edge] = []
    for layer in range(nl):
        heads = [f"L{layer}.H{h}" for h in range(nh)]
        mlp = f"L{layer}.MLP"
        out += [(u, v) for u in stream for v in heads]
        out += [(u, mlp) for u in (stream if par else stream + heads)]
        stream = stream + heads + [mlp]
    out += [(u, "out") for u in stream]
    return out


def _mib_edge_names(u: str, v: str, letters: str = QKV) -> list[str]:
    base = f"{site_to_mib(u)}->{site_to_mib(v)}"
    if parse_site(v).kind == "head":
        return [f"{base}<{c}>" for c in letters]
    return [base]


def _src_dst_nodes(cfg: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    nl, nh = cfg["n_layers"], cfg["n_heads"]
    src = ["input"]
    dst: list[str] = []
    for layer in range(nl):
        src += [f"a{layer}.h{h}" for h in range(nh)] + [f"m{layer}"]
        dst += [f"a{layer}.h{h}<{c}>" for c in QKV for h in range(nh)] + [f"m{layer}"]
    dst.append("logits")
    return src, dst


# --------------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------------


def _letters(x: Any, default: str = "v") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)) or x == "":
        return default
    s = str(x)
    if not s or any(c not in QKV for c in s):
        raise ValueError(f"qkv column values must be letters from 'qkv' (e.g. 'v', 'qk'), got {x!r}")
    return "".join(c for c in QKV if c in s)


def _check_circuit_against_cfg(circuit: Circuit, cfg: Mapping[str, Any]) -> None:
    if not isinstance(circuit, Circuit):
        raise TypeError(f"expected a circuitkit Circuit, got {type(circuit).__name__}")
    nl, nh = cfg["n_layers"], cfg["n_heads"]
    used = set(circuit.edges["source"]).union(circuit.edges["target"])
    for node in sorted(used):
        site_to_mib(node)  # names the valid forms
        p = parse_site(node)
        if p.layer is not None and p.layer >= nl:
            raise ValueError(f"node {node!r} is in layer {p.layer} but cfg has n_layers={nl}")
        if p.head is not None and p.head >= nh:
            raise ValueError(f"node {node!r} is head {p.head} but cfg has n_heads={nh}")


def _mib_edges(circuit: Circuit, cfg: Mapping[str, Any], k: int | None,
               qkv: str = "v") -> dict[Edge, tuple[float, bool, str]]:
    """(u, v) -> (signed score, in_graph, qkv letters) for the circuit's edges."""
    default = _letters(qkv)
    _check_circuit_against_cfg(circuit, cfg)
    cands = set(mib_candidate_edges(cfg))
    e = circuit.edges
    if k is not None and (isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0):
        raise ValueError(f"k must be an integer >= 0 (edges kept in the graph), got {k!r}")
    order = np.argsort(-e["score"].to_numpy(), kind="mergesort")
    rank = np.empty(len(e), dtype=np.int64)
    rank[order] = np.arange(len(e))
    out: dict[Edge, tuple[float, bool, str]] = {}
    has_ig = "in_graph" in e
    has_qkv = "qkv" in e
    for i, rec in enumerate(e.to_dict("records")):
        u, v = rec["source"], rec["target"]
        if (u, v) not in cands:
            raise ValueError(f"edge {u!r} -> {v!r} is not a candidate edge of this MIB cfg {dict(cfg)} "
                             "(sources must come before targets; with parallel_attn_mlp a layer's heads do not "
                             "feed its MLP)")
        if (u, v) in out:
            raise ValueError(f"duplicate edge {u!r} -> {v!r} in the circuit's edge table")
        if k is not None:
            ig = bool(rank[i] < k)
        else:
            ig = bool(rec["in_graph"]) if has_ig else True
        w, s = float(rec["weight"]), float(rec["score"])
        signed = -s if w < 0 else s
        out[(u, v)] = (signed, ig, _letters(rec["qkv"], default) if has_qkv else default)
    return out


def to_mib(circuit: Circuit, *, cfg: Any, k: int | None = None, qkv: str = "v") -> dict[str, Any]:
    """The circuit as MIB's circuit JSON dict (``{"cfg", "nodes", "edges"}``; mapping rule in the module docstring).

    ``cfg``: a dict with ``n_layers, n_heads, parallel_attn_mlp, d_model``, or a model (:func:`mib_cfg`).
    ``k``: if given, only the ``k`` highest-scoring circuit edges are ``in_graph`` (the others keep their
    scores); otherwise every edge of the circuit is (or its ``in_graph`` column decides).
    ``qkv``: the head inputs (letters of ``"qkv"``) an edge into a head is written to, for edges without a
    ``qkv`` column value.
    """
    cfg = _resolve_cfg(cfg)
    ours = _mib_edges(circuit, cfg, k, qkv)
    edges: dict[str, dict[str, Any]] = {}
    touched: set[str] = set()
    for u, v in mib_candidate_edges(cfg):
        signed, ig, letters = ours.get((u, v), (0.0, False, ""))
        for name in _mib_edge_names(u, v):
            on = name[-2] in letters if name.endswith(">") else bool(letters)
            rec = {"score": float(signed) if on else 0.0, "in_graph": bool(ig and on)}
            edges[name] = rec
            if rec["in_graph"]:
                touched.update((site_to_mib(u), site_to_mib(v)))
    src, _ = _src_dst_nodes(cfg)
    nodes = {n: {"in_graph": n in touched} for n in src}
    nodes["logits"] = {"in_graph": True}
    return {"cfg": dict(cfg), "nodes": nodes, "edges": edges}


def to_mib_pt(circuit: Circuit, *, cfg: Any, k: int | None = None, qkv: str = "v") -> dict[str, Any]:
    """The circuit as the tensors of MIB's ``.pt`` file (layout and orientation in the module docstring;
    arguments as :func:`to_mib`)."""
    import torch

    doc = to_mib(circuit, cfg=cfg, k=k, qkv=qkv)
    cfg = doc["cfg"]
    src, dst = _src_dst_nodes(cfg)
    si = {n: i for i, n in enumerate(src)}
    di = {n: i for i, n in enumerate(dst)}
    scores = torch.zeros(len(src), len(dst), dtype=torch.float64)
    in_graph = torch.zeros(len(src), len(dst), dtype=torch.bool)
    for name, rec in doc["edges"].items():
        a, b = name.split("->")
        scores[si[a], di[b]] = rec["score"]
        in_graph[si[a], di[b]] = rec["in_graph"]
    nodes_in_graph = torch.tensor([doc["nodes"][n]["in_graph"] for n in src], dtype=torch.bool)
    return {"cfg": dict(cfg), "src_nodes": src, "dst_nodes": dst, "edges_scores": scores,
            "edges_in_graph": in_graph, "nodes_in_graph": nodes_in_graph}


def save_mib(circuit: Circuit, path: str | Path, *, cfg: Any, format: Literal["json", "pt"] = "json",
             k: int | None = None, qkv: str = "v") -> Path:
    """Write the circuit as a MIB circuit file (``format="json"`` or ``"pt"``; ``k``/``qkv`` as :func:`to_mib`);
    returns the path."""
    if format not in MIB_FORMATS:
        raise ValueError(f"format must be one of {list(MIB_FORMATS)}, got {format!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if format == "json":
        path.write_text(json.dumps(to_mib(circuit, cfg=cfg, k=k, qkv=qkv)))
    else:
        import torch

        torch.save(to_mib_pt(circuit, cfg=cfg, k=k, qkv=qkv), str(path))
    return path


# --------------------------------------------------------------------------------------------------
# import
# --------------------------------------------------------------------------------------------------


def _json_edges(doc: Mapping[str, Any]) -> dict[str, tuple[float, bool]]:
    missing = [k for k in MIB_KEYS if k not in doc]
    if missing:
        raise ValueError(f"not a MIB circuit: missing keys {missing}; a MIB circuit JSON has {list(MIB_KEYS)}")
    out = {}
    for name, rec in doc["edges"].items():
        if not isinstance(rec, Mapping) or any(k not in rec for k in MIB_EDGE_KEYS):
            raise ValueError(f"MIB edge {name!r} must be a record with keys {list(MIB_EDGE_KEYS)}, got {rec!r}")
        out[name] = (float(rec["score"]), bool(rec["in_graph"]))
    return out


def _pt_edges(doc: Mapping[str, Any]) -> dict[str, tuple[float, bool]]:
    missing = [k for k in MIB_PT_KEYS if k not in doc]
    if missing:
        raise ValueError(f"not a MIB .pt circuit: missing keys {missing}; expected {list(MIB_PT_KEYS)}")
    cfg = check_mib_cfg(doc["cfg"])
    src, dst = _src_dst_nodes(cfg)
    if list(doc["src_nodes"]) != src or list(doc["dst_nodes"]) != dst:
        raise ValueError("the .pt file's src_nodes/dst_nodes do not match its cfg "
                         f"(expected {len(src)} sources starting {src[:3]} and {len(dst)} targets starting {dst[:3]})")
    scores = np.asarray(doc["edges_scores"].detach().cpu().double().numpy())
    ig = np.asarray(doc["edges_in_graph"].detach().cpu().bool().numpy())
    if scores.shape != (len(src), len(dst)) or ig.shape != scores.shape:
        raise ValueError(f"edges_scores/edges_in_graph must have shape {(len(src), len(dst))}, "
                         f"got {tuple(scores.shape)} and {tuple(ig.shape)}")
    si = {n: i for i, n in enumerate(src)}
    di = {n: i for i, n in enumerate(dst)}
    out = {}
    for u, v in mib_candidate_edges(cfg):
        for name in _mib_edge_names(u, v):
            a, b = name.split("->")
            out[name] = (float(scores[si[a], di[b]]), bool(ig[si[a], di[b]]))
    return out


def load_mib(path_or_dict: str | Path | Mapping[str, Any], *, in_graph_only: bool = False) -> Circuit:
    """Read a MIB circuit (JSON or ``.pt`` file, or the dict of either) into a component :class:`Circuit`.

    q/k/v edges into one head merge into one edge (module docstring). The edge table has columns
    ``source, target, weight, score, in_graph, qkv``; edges with score 0 outside the graph are dropped
    (``in_graph_only=True`` keeps only in-graph edges). Nodes are every component of the cfg's model, with a
    ``mib_score`` column when the file has node scores; neuron-level masks are dropped with a warning;
    ``meta["mib_cfg"]`` holds the cfg.
    """
    doc: Any = path_or_dict
    if isinstance(path_or_dict, (str, Path)):
        p = Path(path_or_dict)
        if not p.is_file():
            raise ValueError(f"no MIB circuit file at {p}")
        if p.suffix == ".pt":
            import torch

            doc = torch.load(str(p), map_location="cpu", weights_only=True)
        else:
            try:
                doc = json.loads(p.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ValueError(f"{p} is not a MIB circuit JSON ({e}); .pt files need the .pt suffix") from None
    if not isinstance(doc, Mapping):
        raise TypeError(f"expected a MIB circuit dict or a file path, got {type(doc).__name__}")
    if "cfg" not in doc:
        raise ValueError(f"not a MIB circuit: no 'cfg' key (keys: {sorted(doc)[:8]})")
    cfg = check_mib_cfg(doc["cfg"])
    raw = _pt_edges(doc) if "edges_scores" in doc else _json_edges(doc)
    neuron_level = "neurons_in_graph" in doc or "neurons_scores" in doc
    if "edges_scores" not in doc:
        if not isinstance(doc["nodes"], Mapping):
            raise TypeError(f"MIB 'nodes' must map node names to records, got {type(doc['nodes']).__name__}")
        for name, rec in doc["nodes"].items():
            mib_to_site(name)  # names the valid forms
            if isinstance(rec, Mapping) and ("neurons" in rec or "neurons_scores" in rec):
                neuron_level = True
    valid = {n: (u, v) for u, v in mib_candidate_edges(cfg) for n in _mib_edge_names(u, v)}
    merged: dict[Edge, dict[str, Any]] = {}
    for name, (score, ig) in raw.items():
        m = _MIB_EDGE.match(name)
        if m is None:
            raise ValueError(f"bad MIB edge name {name!r}; expected 'src->dst' or 'src->a{{L}}.h{{H}}<q|k|v>' "
                             f"with nodes {_MIB_FORMS}")
        mib_to_site(m.group("src"))
        mib_to_site(m.group("dst"))
        if name not in valid:
            raise ValueError(f"MIB edge {name!r} is not an edge of a model with cfg {cfg} "
                             "(a head target needs <q>, <k> or <v>; sources come before targets)")
        if not math.isfinite(score):
            raise ValueError(f"MIB edge {name!r} has a non-finite score {score!r}")
        key = valid[name]
        letter = m.group("qkv") or ""
        r = merged.setdefault(key, {"weight": 0.0, "in_graph": False, "on": "", "nz": ""})
        if abs(score) > abs(r["weight"]):
            r["weight"] = score
        if ig:
            r["in_graph"] = True
            r["on"] += letter
        if score != 0.0:
            r["nz"] += letter
    rows = []
    for (u, v), r in merged.items():
        if not r["in_graph"] and r["weight"] == 0.0:
            continue
        if in_graph_only and not r["in_graph"]:
            continue
        letters = r["on"] if r["in_graph"] else r["nz"]
        rows.append({"source": u, "target": v, "weight": r["weight"], "score": abs(r["weight"]),
                     "in_graph": r["in_graph"], "qkv": "".join(c for c in QKV if c in letters)})
    cols = ["source", "target", "weight", "score", "in_graph", "qkv"]
    edges = pd.DataFrame(rows, columns=cols)
    edges["in_graph"] = edges["in_graph"].astype(bool)
    if neuron_level:
        warnings.warn("this MIB circuit has neuron-level masks (neurons / neurons_scores); circuitkit circuits are "
                      "component level, so they are dropped on import", UserWarning, stacklevel=2)
    sites = component_sites(cfg["n_layers"], cfg["n_heads"])
    nodes = pd.DataFrame({"node": sites, "site": sites, "kind": "site"})
    node_scores = _node_scores(doc, cfg)
    if node_scores is not None:
        nodes["mib_score"] = [node_scores.get(site_to_mib(s), math.nan) for s in sites]
    return Circuit(nodes, edges, None, {"method": "mib", "mib_cfg": cfg})


def _node_scores(doc: Mapping[str, Any], cfg: Mapping[str, Any]) -> dict[str, float] | None:
    """MIB node scores (JSON ``nodes[name]["score"]`` or ``.pt`` ``nodes_scores``), or None without any."""
    if "nodes_scores" in doc and doc["nodes_scores"] is not None:
        src, _ = _src_dst_nodes(cfg)
        vals = doc["nodes_scores"].detach().cpu().double().numpy().tolist()
        return dict(zip(src, vals))
    if "edges_scores" in doc:
        return None
    got = {n: float(r["score"]) for n, r in doc["nodes"].items() if isinstance(r, Mapping) and "score" in r}
    return got or None


# --------------------------------------------------------------------------------------------------
# roll-up of a feature circuit to components
# --------------------------------------------------------------------------------------------------


def _component_of(node: str, kind: str, site: str, residual: str) -> str:
    if kind == "target":
        return "out"
    p = parse_site(site)
    if p.kind in ("embed", "head", "mlp", "out"):
        return site
    if p.kind == "attn":
        raise ValueError(f"node {node!r} sits on {site!r}, the sum of all heads of layer {p.layer}; it cannot be "
                         "attributed to one head. Train SAEs on head outputs (L{l}.H{h}) or on L{l}.MLP / "
                         "residual sites")
    if residual == "error":
        raise ValueError(f"node {node!r} sits on the residual stream {site!r}, which is the sum of every earlier "
                         "component's output, not the output of one component; pass residual='last_writer' to "
                         "attribute it to the last component that writes the stream before it (see rollup's "
                         "docstring), or use SAEs on component outputs (L{l}.MLP, L{l}.H{h})")
    if p.kind == "resid_post":
        return f"L{p.layer}.MLP"
    return "embed" if p.layer == 0 else f"L{p.layer - 1}.MLP"  # resid_pre


def rollup(circuit: Circuit, *, rule: Literal["max", "sum"] = "max",
           residual: Literal["error", "last_writer"] = "error") -> Circuit:
    """Roll a feature circuit up to a component circuit (for :func:`to_mib`).

    Each node maps to one component site:

    * a feature ``s/f{i}`` or error node ``s/err`` on a component output (``embed``, ``L{l}.H{h}``,
      ``L{l}.MLP``, ``out``) maps to that component; component nodes map to themselves;
    * a prediction target (``y``, ``y:{name}``) maps to ``out`` (it is read from the model's output);
    * a node on ``L{l}.attn`` is refused (it mixes every head of the layer);
    * a node on the residual stream (``L{l}.resid_pre``/``L{l}.resid_post``) is refused by default
      (``residual="error"``): the residual is the sum of all earlier writes, not one component's output.
      ``residual="last_writer"`` attributes it to the **last component that writes the stream before it is
      read**: ``L{l}.resid_post`` -> ``L{l}.MLP``, ``L{l}.resid_pre`` -> ``L{l-1}.MLP`` (``embed`` for
      ``l = 0``). This is an approximation: it credits the newest write with everything the stream carries.

    A component edge ``A -> B`` collects every feature edge ``a -> b`` with ``a`` mapped to ``A`` and ``b`` to
    ``B``. ``rule="max"``: ``score`` is the largest of their scores and ``weight`` the weight of that edge;
    ``rule="sum"``: ``score`` is the sum of their scores and ``weight`` the sum of their weights. Edges that
    map inside one component (``A == B``) are dropped. An edge whose mapped endpoints are not in computation
    order (``A`` not before ``B``) raises. The regularisation path is not rolled up. The result's nodes are
    the components of every node of the input that maps (isolated ones included; an unmappable node without
    edges is left out), in computation order; ``meta`` records ``rollup_rule`` and ``rollup_residual``.
    """
    if rule not in ("max", "sum"):
        raise ValueError(f"rule must be 'max' or 'sum', got {rule!r}")
    if residual not in ("error", "last_writer"):
        raise ValueError(f"residual must be 'error' or 'last_writer', got {residual!r}")
    if not isinstance(circuit, Circuit):
        raise TypeError(f"expected a circuitkit Circuit, got {type(circuit).__name__}")
    nodes = circuit.nodes
    comp: dict[str, str] = {}
    used = set(circuit.edges["source"]).union(circuit.edges["target"])
    for rec in nodes.to_dict("records"):
        node, kind, site = rec["node"], rec["kind"], rec["site"] or rec["node"]
        try:
            comp[node] = _component_of(node, kind, site, residual)
        except ValueError:
            if node in used:
                raise
    groups: dict[Edge, list[tuple[float, float]]] = {}
    for rec in circuit.edges.to_dict("records"):
        a, b = comp[rec["source"]], comp[rec["target"]]
        if a == b:
            continue
        if not parse_site(a).rank < parse_site(b).rank:
            raise ValueError(f"feature edge {rec['source']!r} -> {rec['target']!r} rolls up to {a!r} -> {b!r}, "
                             "which is not in computation order")
        groups.setdefault((a, b), []).append((float(rec["weight"]), float(rec["score"])))
    rows = []
    for (a, b), ws in groups.items():
        if rule == "max":
            w, s = max(ws, key=lambda t: t[1])
        else:
            w, s = sum(t[0] for t in ws), sum(t[1] for t in ws)
        rows.append((a, b, w, s))
    edges = pd.DataFrame(rows, columns=["source", "target", "weight", "score"])
    sites = sort_sites(set(comp.values()))
    out_nodes = pd.DataFrame({"node": sites, "site": sites, "kind": "site"})
    meta = {**circuit.meta, "rollup_rule": rule, "rollup_residual": residual}
    return Circuit(out_nodes, edges, None, meta)


# --------------------------------------------------------------------------------------------------
# Neuronpedia / circuit-tracer graph JSON
# --------------------------------------------------------------------------------------------------

#: Keys of circuit-tracer's frontend graph (``circuit_tracer/frontend/graph_models.py``: ``Model``, ``Metadata``,
#: ``QParams``, ``Node``, ``Link``).
NP_KEYS = ("metadata", "qParams", "nodes", "links")
NP_METADATA_KEYS = ("slug", "scan", "transcoder_list", "prompt_tokens", "prompt", "node_threshold", "schema_version")
NP_QPARAMS_KEYS = ("pinnedIds", "supernodes", "linkType", "clickedId", "sg_pos")
NP_NODE_KEYS = ("node_id", "feature", "layer", "ctx_idx", "feature_type", "token_prob", "is_target_logit",
                "run_idx", "reverse_ctx_idx", "jsNodeId", "clerp", "influence", "activation")
NP_LINK_KEYS = ("source", "target", "weight")


def _opt_float(x: Any) -> float | None:
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def to_neuronpedia(
    circuit: Circuit,
    *,
    prompt: str,
    tokens: Iterable[str],
    model_id: str,
    slug: str,
    ctx_idx: int | None = None,
    n_layers: int | None = None,
    layers: Mapping[str, int] | None = None,
    transcoder_list: Iterable[str] = (),
    feature_type: str = "cross layer transcoder",
    include_isolated: bool = False,
    pinned_ids: Iterable[str] = (),
) -> dict[str, Any]:
    """A feature circuit as a circuit-tracer / Neuronpedia graph JSON dict ``{metadata, qParams, nodes, links}``.

    One frontend node per feature node ``s/f{i}`` (``feature_type`` as given: the frontend draws SAE and
    transcoder features alike; ``feature = i``), per error node ``s/err`` (``"mlp reconstruction error"``,
    ``feature = -1``), per ``embed`` component node (``"embedding"``, layer ``"E"``) and per prediction target
    (``"logit"``, ``is_target_logit`` True, layer ``n_layers + 1`` as circuit-tracer numbers logits). By default
    only nodes with an edge, plus every target, are written (``include_isolated=True``: all). Other component
    nodes (``L3.MLP``) are refused: use :func:`to_mib` for component circuits.

    ``layer`` is the site's block index (``embed`` features: -1; ``out`` features: ``n_layers``;
    ``layers={site: int}`` overrides it; two sites of one block, e.g.
    ``L3.MLP`` and ``L3.resid_post``, need it, since node ids are ``"{layer}_{feature}_{ctx_idx}"``).
    ``ctx_idx`` is the token position the circuit describes (default the last token); circuitkit circuits are
    fitted over a prompt set at one position, so ``prompt``/``tokens`` are the prompt shown and links carry the
    circuit's signed edge weights (regression coefficients over the set), not per-prompt attributions.
    ``clerp`` is the node's label (its name if unlabelled); ``influence``/``activation`` come from node columns of
    those names when the circuit has them (else ``None``). ``n_layers`` defaults to one more than the largest
    block index among the circuit's sites.
    """
    if not isinstance(circuit, Circuit):
        raise TypeError(f"expected a circuitkit Circuit, got {type(circuit).__name__}")
    tokens = [str(t) for t in tokens]
    if not tokens:
        raise ValueError("tokens must list the prompt's tokens (at least one)")
    if ctx_idx is None:
        ctx_idx = len(tokens) - 1
    if isinstance(ctx_idx, bool) or not isinstance(ctx_idx, (int, np.integer)) or not 0 <= ctx_idx < len(tokens):
        raise ValueError(f"ctx_idx must be a position in 0..{len(tokens) - 1}, got {ctx_idx!r}")
    ctx_idx = int(ctx_idx)
    nodes = circuit.nodes
    block: dict[str, int] = {}
    for s in nodes["site"].unique():
        if not s:
            continue
        try:
            p = parse_site(s)
        except ValueError:
            continue
        if p.layer is not None:
            block[s] = p.layer
    if n_layers is None:
        n_layers = max(block.values(), default=-1) + 1
    layers = dict(layers or {})
    used = set(circuit.edges["source"]).union(circuit.edges["target"])
    targets = nodes.loc[nodes["kind"] == "target", "node"].tolist()
    has_infl = "influence" in nodes
    has_act = "activation" in nodes
    out_nodes: list[dict[str, Any]] = []
    ids: dict[str, str] = {}
    owner: dict[str, str] = {}
    for rec in nodes.to_dict("records"):
        node, kind, site = rec["node"], rec["kind"], rec["site"]
        if not (include_isolated or node in used or kind == "target"):
            continue
        if kind == "target":
            layer, feat, ftype = str(n_layers + 1), targets.index(node), "logit"
        elif kind == "site" and site == "embed":
            layer, feat, ftype = "E", ctx_idx, "embedding"
        elif kind in ("feature", "error"):
            if site in ("embed", "out"):
                lay = layers.get(site, -1 if site == "embed" else n_layers)
            else:
                lay = layers.get(site, block.get(site))
            if lay is None:
                raise ValueError(f"cannot place node {node!r}: its site {site!r} has no block index; pass layers=")
            layer = str(int(lay))
            feat = int(rec["feature"]) if kind == "feature" else -1
            ftype = feature_type if kind == "feature" else "mlp reconstruction error"
        else:
            raise ValueError(f"node {node!r} is a component node; Neuronpedia graphs hold feature, error, embedding "
                             "and logit nodes. Export component circuits with circuitkit.interop.to_mib")
        if ftype == "embedding":
            node_id, js = f"E_{feat}_{ctx_idx}", f"E_{feat}-{ctx_idx}"
        elif ftype == "logit":
            node_id, js = f"{layer}_{feat}_{ctx_idx}", f"L_{feat}-{ctx_idx}"
        elif kind == "error":
            node_id, js = f"{layer}_-1_{ctx_idx}", f"{layer}_-1-{ctx_idx}"
        else:
            node_id, js = f"{layer}_{feat}_{ctx_idx}", f"{layer}_{feat}-0"
        if node_id in owner:
            raise ValueError(f"nodes {owner[node_id]!r} and {node!r} get the same node id {node_id!r} (sites in one "
                             "block); pass layers={site: int} to give each site its own layer")
        owner[node_id] = node
        ids[node] = node_id
        label = rec["label"] or node
        out_nodes.append({
            "node_id": node_id, "feature": int(feat), "layer": layer, "ctx_idx": ctx_idx, "feature_type": ftype,
            "token_prob": 0.0, "is_target_logit": ftype == "logit", "run_idx": 0, "reverse_ctx_idx": 0,
            "jsNodeId": js, "clerp": str(label),
            "influence": _opt_float(rec.get("influence")) if has_infl else None,
            "activation": _opt_float(rec.get("activation")) if has_act else None,
        })
    links = [{"source": ids[r["source"]], "target": ids[r["target"]], "weight": float(r["weight"])}
             for r in circuit.edges.to_dict("records") if r["source"] in ids and r["target"] in ids]
    metadata = {"slug": str(slug), "scan": str(model_id), "transcoder_list": [str(t) for t in transcoder_list],
                "prompt_tokens": tokens, "prompt": str(prompt), "node_threshold": None, "schema_version": 1}
    qparams = {"pinnedIds": [str(p) for p in pinned_ids], "supernodes": [], "linkType": "both", "clickedId": "",
               "sg_pos": ""}
    return {"metadata": metadata, "qParams": qparams, "nodes": out_nodes, "links": links}


def save_neuronpedia(circuit: Circuit, path: str | Path, **kwargs: Any) -> Path:
    """Write :func:`to_neuronpedia`'s dict as JSON to ``path`` (keyword arguments as there); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_neuronpedia(circuit, **kwargs), indent=1))
    return path


__all__ = [
    "MIB_CFG_KEYS", "MIB_EDGE_KEYS", "MIB_KEYS", "MIB_PT_KEYS", "NP_KEYS", "NP_LINK_KEYS", "NP_NODE_KEYS",
    "check_mib_cfg", "load_mib", "mib_candidate_edges", "mib_cfg", "mib_to_site", "rollup", "save_mib",
    "save_neuronpedia", "site_to_mib", "to_mib", "to_mib_pt", "to_neuronpedia",
]
