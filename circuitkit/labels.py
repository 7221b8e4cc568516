"""Feature labels and evidence, computed from the captured data.

For every SAE feature, :func:`feature_evidence` collects what a person needs to read it:

* the **top-activating rows** (largest code value first; ties go to the earlier row), each with its token
  and a context window (``window`` tokens before, ``window // 2`` after, the row's token in ``[brackets]``,
  the same format as :meth:`circuitkit.Activations.context`);
* the **activation frequency** (fraction of rows where the code is non-zero), the **mean activation when
  active** and the **max activation**;
* an **automatic short label**: the feature's dominant tokens among its top-``top_k`` rows, ranked by how
  many of those rows carry the token (ties: the token reached first in the top-row order), at most
  ``label_tokens`` of them, joined with ``" | "`` (e.g. ``"john | mary"``). When the rows' own token does
  not tell features apart -- the feature's dominant token is the token of at least half of *all* captured
  rows, as at ``positions="last"``, where every IOI row is "to" -- the label shows context instead: the model's predicted next token when the capture
  recorded it (``capture(..., predictions=True)``; ``"to → mary | john"``), else the dominant preceding
  token (``"drink to"``). Top contexts end with ``→ predicted`` when it is known;
* a **Neuronpedia link** ``https://neuronpedia.org/{neuronpedia_id}/{index}`` when the SAE comes from a
  known public sae_lens release (``neuronpedia_id`` is e.g. ``gpt2-small/8-res-jb``), else ``None``.

:func:`label_circuit` writes those labels (and the frequency, mean and top contexts, so a saved circuit
or an exported page can show them without the data) into a circuit's node table. User overrides win and
are remembered in ``circuit.meta["user_labels"]``, so they survive relabelling, saving and loading.

Example::

    >>> ev = feature_evidence(feats, site="L1.resid_post", top_k=5)      # doctest: +SKIP
    >>> ev.loc[ev["feature"] == 12, ["label", "frequency", "top_contexts"]]  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .circuit import Circuit, feature_node

logger = logging.getLogger(__name__)

NEURONPEDIA_URL = "https://neuronpedia.org/{neuronpedia_id}/{index}"
EVIDENCE_COLUMNS = [
    "node", "site", "feature", "label", "frequency", "mean_activation", "max_activation", "top_tokens",
    "top_activations", "top_rows", "top_contexts", "neuronpedia",
]
#: node-table columns that :func:`label_circuit` fills from the evidence (scalars, so GraphML keeps them)
NODE_EVIDENCE_COLUMNS = ["frequency", "mean_activation", "contexts", "neuronpedia"]
_N_NODE_CONTEXTS = 3


def display_token(tok: str) -> str:
    """A token string as a person reads it: BPE space markers become spaces, then it is stripped; a token
    that is only whitespace is shown as its ``repr``."""
    t = str(tok).replace("\u0120", " ").replace("\u2581", " ").replace("\u010a", "\n")
    s = t.strip()
    return s if s else repr(t)


def _context(tokens: list[list[str]], prompt: int, pos: int, window: int) -> str:
    toks = tokens[prompt] if 0 <= prompt < len(tokens) else []
    toks = [display_token(t) for t in toks]
    if pos < 0:
        return " ".join(toks)
    if pos >= len(toks):
        return ""
    left = toks[max(0, pos - window): pos]
    right = toks[pos + 1: pos + 1 + window // 2]
    return " ".join([*left, f"[{toks[pos]}]", *right])


def _previous_token(tokens: list[list[str]], prompt: int, pos: int) -> str:
    toks = tokens[prompt] if 0 <= prompt < len(tokens) else []
    return toks[pos - 1] if 0 < pos <= len(toks) else ""


def _row_tokens(features: Any) -> np.ndarray:
    """The token of every row (``""`` for aggregated rows)."""
    index = features.index
    if "token" in index and index["token"].astype(str).ne("").any():
        return index["token"].astype(str).to_numpy(dtype=object)
    toks = features.tokens or []
    out = []
    for p, pos in zip(index["prompt"].to_numpy(), index["position"].to_numpy()):
        p, pos = int(p), int(pos)
        out.append(toks[p][pos] if 0 <= p < len(toks) and 0 <= pos < len(toks[p]) else "")
    return np.asarray(out, dtype=object)


UNIFORM_TOKEN_SHARE = 0.5


def context_label(tokens: list[str], predicted: list[str] | None, previous: list[str], *,
                  base_share: Mapping[str, float] | None = None, max_tokens: int = 3) -> str:
    """The automatic label (module docstring): the dominant tokens; or, when the dominant token is the token
    of at least :data:`UNIFORM_TOKEN_SHARE` of all rows (``base_share``: ``{display token: share of rows}``),
    that token with the dominant predictions (or the dominant preceding token)."""
    shown = [display_token(t) for t in tokens if str(t) != ""]
    if shown:
        top, _ = Counter(shown).most_common(1)[0]
        if base_share is not None and base_share.get(top, 0.0) >= UNIFORM_TOKEN_SHARE:
            if predicted and any(predicted):
                return f"{top} → {short_label(predicted, max_tokens=max_tokens)}"
            prev = short_label(previous, max_tokens=1)
            if prev:
                return f"{prev} {top}"
    return short_label(tokens, max_tokens=max_tokens)


def short_label(tokens: Iterable[str], *, max_tokens: int = 3) -> str:
    """The dominant tokens of a ranked token list: most frequent first (ties: earliest in the list), at
    most ``max_tokens``, joined with ``" | "``. Empty tokens are ignored."""
    toks = [display_token(t) for t in tokens if str(t) != ""]
    if not toks:
        return ""
    counts = Counter(toks)
    first = {}
    for i, t in enumerate(toks):
        first.setdefault(t, i)
    ranked = sorted(counts, key=lambda t: (-counts[t], first[t]))
    return " | ".join(ranked[:max_tokens])


def neuronpedia_id(features: Any, site: str) -> str | None:
    """The Neuronpedia id (``"{model}/{sae}"``) of the SAE at ``site`` when it is known.

    Looked up in ``features.meta["neuronpedia_ids"][site]``; otherwise, when
    ``features.meta["sae_releases"][site]`` names a public sae_lens release, in sae_lens's (packaged,
    offline) release directory with ``features.meta["sae_ids"][site]``. ``None`` otherwise.
    """
    meta = getattr(features, "meta", {}) or {}
    direct = (meta.get("neuronpedia_ids") or {}).get(site)
    if direct:
        return str(direct)
    release = (meta.get("sae_releases") or {}).get(site)
    sae_id = (meta.get("sae_ids") or {}).get(site)
    if not release or not sae_id:
        return None
    try:
        from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

        info = get_pretrained_saes_directory().get(str(release))
    except Exception as e:  # pragma: no cover - depends on the installed sae_lens
        logger.debug("sae_lens release directory unavailable: %s", e)
        return None
    if info is None:
        return None
    ids = getattr(info, "neuronpedia_id", None) or {}
    got = ids.get(str(sae_id))
    return str(got) if got else None


def neuronpedia_url(neuronpedia_id: str | None, index: int) -> str | None:
    if not neuronpedia_id:
        return None
    return NEURONPEDIA_URL.format(neuronpedia_id=neuronpedia_id, index=int(index))


def feature_evidence(
    features: Any,
    *,
    site: str | Iterable[str] | None = None,
    top_k: int = 10,
    window: int = 8,
    nodes: Iterable[str] | None = None,
    include_dead: bool = False,
    label_tokens: int = 3,
) -> pd.DataFrame:
    """Evidence for each SAE feature (module docstring): one row per feature, columns
    :data:`EVIDENCE_COLUMNS`.

    Parameters
    ----------
    features: a :class:`circuitkit.sae.Features`.
    site: one site or a list of sites (default: every encoded site).
    top_k: number of top-activating rows kept per feature (and used for the label).
    window: context tokens on the left of the row's token (``window // 2`` on the right).
    nodes: only these feature nodes (``"site/f{p}"``), e.g. the nodes of a circuit.
    include_dead: also list features that are never active (label ``""``, frequency 0).
    label_tokens: at most this many dominant tokens in the automatic label.
    """
    if not (isinstance(top_k, (int, np.integer)) and top_k >= 1):
        raise ValueError(f"top_k must be an int >= 1, got {top_k!r}")
    if not (isinstance(window, (int, np.integer)) and window >= 0):
        raise ValueError(f"window must be an int >= 0, got {window!r}")
    if not hasattr(features, "codes"):
        raise ValueError(f"feature_evidence expects Features (from circuitkit.encode), got {type(features).__name__}")
    all_sites = list(features.sites)
    if site is None:
        sites = all_sites
    else:
        sites = [site] if isinstance(site, str) else list(site)
        bad = [s for s in sites if s not in features.codes]
        if bad:
            raise ValueError(f"no SAE codes for site(s) {bad}; encoded sites are {all_sites}")
    wanted: dict[str, set[int]] | None = None
    if nodes is not None:
        wanted = {}
        for n in nodes:
            s, _, f = str(n).rpartition("/f")
            if s and f.isdigit():
                wanted.setdefault(s, set()).add(int(f))
    row_tok = _row_tokens(features)
    row_pred = (features.index["predicted"].astype(str).to_numpy(dtype=object)
                if "predicted" in features.index else None)
    counts = Counter(display_token(t) for t in row_tok if str(t) != "")
    total = sum(counts.values())
    base_share = {t: c / total for t, c in counts.items()} if total else {}
    prompts = features.index["prompt"].to_numpy()
    positions = features.index["position"].to_numpy()
    n_rows = features.n_rows
    records: list[dict[str, Any]] = []
    for s in sites:
        if wanted is not None and s not in wanted:
            continue
        codes = sp.csc_matrix(features.codes[s])
        codes.eliminate_zeros()
        np_id = neuronpedia_id(features, s)
        cols = range(codes.shape[1]) if wanted is None else sorted(p for p in wanted[s] if p < codes.shape[1])
        for p in cols:
            lo, hi = codes.indptr[p], codes.indptr[p + 1]
            rows = codes.indices[lo:hi]
            vals = codes.data[lo:hi].astype(np.float64)
            if rows.size == 0 and not include_dead and wanted is None:
                continue
            order = np.lexsort((rows, -vals))[:top_k]
            top_rows = rows[order]
            toks = [str(row_tok[r]) for r in top_rows]
            preds = [str(row_pred[r]) for r in top_rows] if row_pred is not None else None
            prev = [_previous_token(features.tokens, int(prompts[r]), int(positions[r])) for r in top_rows]
            contexts = [_context(features.tokens, int(prompts[r]), int(positions[r]), window) for r in top_rows]
            if preds is not None:
                contexts = [f"{c} → {display_token(q)}" if q else c for c, q in zip(contexts, preds)]
            records.append({
                "node": feature_node(s, p),
                "site": s,
                "feature": int(p),
                "label": context_label(toks, preds, prev, base_share=base_share, max_tokens=label_tokens),
                "frequency": rows.size / n_rows if n_rows else 0.0,
                "mean_activation": float(vals.mean()) if vals.size else 0.0,
                "max_activation": float(vals.max()) if vals.size else 0.0,
                "top_tokens": [display_token(t) for t in toks],
                "top_activations": vals[order].tolist(),
                "top_rows": top_rows.astype(int).tolist(),
                "top_contexts": contexts,
                "neuronpedia": neuronpedia_url(np_id, p),
            })
    df = pd.DataFrame.from_records(records, columns=EVIDENCE_COLUMNS)
    df["neuronpedia"] = pd.Series([r["neuronpedia"] for r in records], index=df.index, dtype=object)
    return df


def label_circuit(
    circuit: Circuit,
    features: Any = None,
    *,
    overrides: Mapping[str, str] | None = None,
    evidence: pd.DataFrame | None = None,
    top_k: int = 10,
    window: int = 8,
) -> Circuit:
    """A copy of ``circuit`` whose nodes carry labels and evidence.

    Feature nodes that carry an edge at some point of the path get the automatic label of
    :func:`feature_evidence` (and the columns
    :data:`NODE_EVIDENCE_COLUMNS`: frequency, mean activation, the top contexts joined by newlines and the
    Neuronpedia link or ``""``); error nodes are labelled ``"{site} SAE error"``. User labels win: those
    already recorded in ``circuit.meta["user_labels"]`` and then ``overrides`` (``{node: label}``), which are
    recorded there too, so they are saved with the circuit and survive relabelling.

    Pass ``features`` (the :class:`~circuitkit.sae.Features` the circuit was fitted on) or a precomputed
    ``evidence`` table. Unknown nodes in ``overrides`` raise ``ValueError``.
    """
    if not isinstance(circuit, Circuit):
        raise ValueError(f"label_circuit expects a Circuit, got {type(circuit).__name__}")
    overrides = dict(overrides or {})
    known = set(circuit.nodes["node"])
    bad = [n for n in overrides if n not in known]
    if bad:
        raise ValueError(f"unknown nodes in overrides: {bad[:5]}; nodes are listed in circuit.nodes['node']")
    nodes = circuit.nodes.copy()
    used = set(circuit.edges["source"]).union(circuit.edges["target"])
    if circuit.path is not None:
        used |= set(circuit.path["source"]).union(circuit.path["target"])
    # only features that appear in an edge at some sparsity can ever be shown (cheap for wide SAEs)
    feat_nodes = nodes.loc[(nodes["kind"] == "feature") & nodes["node"].isin(used), "node"].tolist()
    if evidence is None and features is not None and feat_nodes:
        evidence = feature_evidence(features, nodes=feat_nodes, top_k=top_k, window=window)
    if evidence is not None and len(evidence):
        ev = evidence.set_index("node")
        ev = ev[~ev.index.duplicated()]
        has = nodes["node"].isin(ev.index)
        sel = nodes.loc[has, "node"]
        auto = sel.map(ev["label"]).fillna("").astype(str)
        nodes.loc[has, "label"] = auto.where(auto != "", nodes.loc[has, "label"])
        for col in ("frequency", "mean_activation"):
            if col not in nodes:
                nodes[col] = np.nan
            nodes.loc[has, col] = sel.map(ev[col]).astype(float)
        if "contexts" not in nodes:
            nodes["contexts"] = ""
        if "neuronpedia" not in nodes:
            nodes["neuronpedia"] = ""
        nodes.loc[has, "contexts"] = sel.map(
            lambda n: "\n".join(list(ev.at[n, "top_contexts"])[:_N_NODE_CONTEXTS]) if "top_contexts" in ev else "")
        if "neuronpedia" in ev:
            nodes.loc[has, "neuronpedia"] = sel.map(lambda n: ev.at[n, "neuronpedia"] or "")
        for col in ("contexts", "neuronpedia"):
            nodes[col] = nodes[col].fillna("").astype(str)
    elif features is None and evidence is None and feat_nodes:
        logger.info("label_circuit: no features or evidence given; feature nodes keep their current labels")
    err = nodes["kind"] == "error"
    nodes.loc[err & (nodes["label"] == ""), "label"] = nodes.loc[err & (nodes["label"] == ""), "site"] + " SAE error"
    meta = dict(circuit.meta)
    user = {**dict(meta.get("user_labels") or {}), **{str(k): str(v) for k, v in overrides.items()}}
    user = {k: v for k, v in user.items() if k in known}
    if user:
        meta["user_labels"] = user
    out = Circuit(nodes, circuit.edges, circuit.path, meta)
    if user:
        out.set_labels(user)
    return out


def node_labels(circuit: Circuit, labels: Mapping[str, str] | None = None) -> dict[str, str]:
    """``{node: display label}``: ``labels`` first, then the circuit's labels, then the node name."""
    labels = dict(labels or {})
    out = {}
    for n, lab in zip(circuit.nodes["node"], circuit.nodes["label"]):
        got = labels.get(n) or lab
        out[n] = str(got) if got else str(n)
    return out
