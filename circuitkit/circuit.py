"""`Circuit`: the one graph type every method returns.

Nodes
-----
``nodes`` is a DataFrame with one row per candidate node, in **node order**:

* sites in computation order (:mod:`circuitkit.sites`); within a site, SAE features by index, then the
  site's error node;
* read nodes (``kind == "read"``): what a head reads through its queries or keys, when a component fit was
  given ``reads=`` (:meth:`circuitkit.fit.lasso.CircuitLasso.fit`), in site order;
* prediction targets (``kind == "target"``) last.

Columns: ``node`` (unique name), ``site``, ``kind`` (``"site"``, ``"feature"``, ``"error"``, ``"read"``,
``"target"``), ``feature`` (feature index, ``-1`` otherwise), ``label`` (human-readable; user labels
override automatic ones and are saved with the circuit).

Node names: a component node is its site name (``"L0.H1"``); SAE feature ``p`` of site ``s`` is
``"s/f{p}"``; the error node of ``s`` is ``"s/err"``; a read node of head ``s`` is ``"s<q>"`` / ``"s<k>"``
(:func:`read_node`; its ``site`` is the head); a prediction target is ``"y"`` or ``"y:{name}"``.

Edges
-----
``edges`` is a DataFrame with columns ``source``, ``target``, ``weight`` and ``score``. ``weight`` is
the signed coefficient for a feature-to-feature edge and the block norm for edges between multi-column
nodes; ``score = |weight|`` ranks edges. Every edge goes forward in node order.

Matrices use the orientation *rows are targets, columns are sources* (:meth:`Circuit.adjacency`).

Path
----
``path`` (optional) holds the edges at every regularisation strength of the fit, with an ``alpha``
column, so a different sparsity can be read with :meth:`Circuit.at` without refitting.

Formats
-------
:meth:`Circuit.save`/:meth:`Circuit.load` (versioned JSON), :meth:`Circuit.to_graphml`; MIB circuit JSON / ``.pt``
and the Neuronpedia graph JSON are in :mod:`circuitkit.interop`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

FORMAT = "circuitkit.circuit"
VERSION = 1
NODE_COLUMNS = ["node", "site", "kind", "feature", "label"]
EDGE_COLUMNS = ["source", "target", "weight", "score"]


def feature_node(site: str, feature: int) -> str:
    return f"{site}/f{int(feature)}"


def error_node(site: str) -> str:
    return f"{site}/err"


def read_node(site: str, pathway: str) -> str:
    """The node of what head ``site`` reads through ``pathway`` (``"q"``, ``"k"``): ``"L1.H0<q>"``."""
    return f"{site}<{pathway}>"


def _as_float(x: Any) -> float:
    return float(x)


#: ``meta`` keys that describe a run rather than its result (wall times); ``==`` ignores them.
RUN_META_KEYS = ("seconds", "timings", "wall_time", "fit_seconds")


def _comparable_meta(meta: dict) -> str:
    def strip(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in RUN_META_KEYS}
        return x

    return json.dumps(strip(meta), sort_keys=True, default=str)


@dataclass
class Circuit:
    """Nodes, weighted edges, an optional regularisation path and provenance (see module docstring)."""

    nodes: pd.DataFrame
    edges: pd.DataFrame
    path: pd.DataFrame | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        nodes = self.nodes.copy()
        for col, default in (("site", ""), ("kind", "site"), ("feature", -1), ("label", "")):
            if col not in nodes:
                nodes[col] = default
        missing = [c for c in ("node",) if c not in nodes]
        if missing:
            raise ValueError(f"nodes table lacks columns {missing}; expected {NODE_COLUMNS}")
        if nodes["node"].duplicated().any():
            dup = nodes.loc[nodes["node"].duplicated(), "node"].iloc[0]
            raise ValueError(f"duplicate node {dup!r}")
        nodes["feature"] = nodes["feature"].astype(np.int64)
        nodes["label"] = nodes["label"].fillna("").astype(str)
        self.nodes = nodes[NODE_COLUMNS + [c for c in nodes.columns if c not in NODE_COLUMNS]].reset_index(drop=True)
        self.edges = self._check_edges(self.edges)
        if self.path is not None:
            self.path = self._check_edges(self.path, extra=("alpha",))

    def _check_edges(self, edges: pd.DataFrame, extra: tuple[str, ...] = ()) -> pd.DataFrame:
        edges = edges.copy()
        if "score" not in edges and "weight" in edges:
            edges["score"] = edges["weight"].abs()
        need = [*extra, *EDGE_COLUMNS]
        missing = [c for c in need if c not in edges]
        if missing:
            raise ValueError(f"edge table lacks columns {missing}; expected {need}")
        known = set(self.nodes["node"])
        bad = set(edges["source"]).union(edges["target"]) - known
        if bad:
            raise ValueError(f"edges mention unknown nodes {sorted(bad)[:5]}; nodes are listed in circuit.nodes")
        edges["weight"] = edges["weight"].astype(np.float64)
        edges["score"] = edges["score"].astype(np.float64)
        edges = edges[need + [c for c in edges.columns if c not in need]]
        sort = ([*extra] if extra else []) + ["score"]
        asc = [False] * len(extra) + [False]
        return edges.sort_values(sort, ascending=asc, kind="mergesort").reset_index(drop=True)

    # -- basic views -------------------------------------------------------------------------------
    @property
    def node_names(self) -> list[str]:
        return self.nodes["node"].tolist()

    @property
    def n_edges(self) -> int:
        return len(self.edges)

    @property
    def alphas(self) -> np.ndarray:
        """The regularisation strengths stored in the path (descending), empty without a path."""
        if self.path is None:
            return np.array([])
        grid = self.meta.get("path_alphas")
        if grid:
            return np.sort(np.asarray(grid, dtype=float))[::-1]
        return np.sort(self.path["alpha"].unique())[::-1]

    def label(self, node: str) -> str:
        row = self.nodes.loc[self.nodes["node"] == node]
        if row.empty:
            raise ValueError(f"unknown node {node!r}")
        lab = row["label"].iat[0]
        return lab if lab else node

    def set_labels(self, labels: dict[str, str]) -> Circuit:
        """Override node labels in place (saved with the circuit); returns self."""
        known = set(self.nodes["node"])
        bad = [n for n in labels if n not in known]
        if bad:
            raise ValueError(f"unknown nodes {bad[:5]}; cannot label them")
        m = self.nodes["node"].map(labels)
        self.nodes["label"] = m.where(m.notna(), self.nodes["label"]).astype(str)
        return self

    def __repr__(self) -> str:
        kinds = self.nodes["kind"].value_counts().to_dict()
        return (
            f"Circuit(nodes={len(self.nodes)} {kinds}, edges={self.n_edges}, "
            f"method={self.meta.get('method')!r}, alpha={self.meta.get('alpha')})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Circuit):
            return NotImplemented
        try:
            pd.testing.assert_frame_equal(self.nodes, other.nodes, check_dtype=False)
            pd.testing.assert_frame_equal(self.edges, other.edges, check_dtype=False, check_exact=True)
            if (self.path is None) != (other.path is None):
                return False
            if self.path is not None:
                pd.testing.assert_frame_equal(self.path, other.path, check_dtype=False, check_exact=True)
        except AssertionError:
            return False
        return _comparable_meta(self.meta) == _comparable_meta(other.meta)

    # -- selection ---------------------------------------------------------------------------------
    def _with_edges(self, edges: pd.DataFrame, **meta: Any) -> Circuit:
        return Circuit(self.nodes, edges[EDGE_COLUMNS + [c for c in edges.columns if c not in EDGE_COLUMNS + ["alpha"]]],
                       self.path, {**self.meta, **meta})

    def top_edges(self, k: int) -> pd.DataFrame:
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        return self.edges.head(k)

    def threshold(self, min_score: float) -> Circuit:
        """Keep edges with ``score >= min_score``."""
        if not math.isfinite(min_score) or min_score < 0:
            raise ValueError(f"min_score must be a finite number >= 0, got {min_score}")
        return self._with_edges(self.edges[self.edges["score"] >= min_score], threshold=min_score)

    def top_k(self, k: int) -> Circuit:
        """Keep the ``k`` highest-scoring edges."""
        return self._with_edges(self.top_edges(k), top_k=k)

    def at(self, alpha: float) -> Circuit:
        """The circuit at the stored path point ``alpha`` (the nearest one, in log scale). No refit."""
        alphas = self.alphas
        if alphas.size == 0:
            raise ValueError("this circuit has no regularisation path; fit with a path (alpha=None) to use .at()")
        lo, hi = float(alphas.min()), float(alphas.max())
        if not (alpha > 0 and lo * (1 - 1e-9) <= alpha <= hi * (1 + 1e-9)):
            raise ValueError(f"alpha={alpha!r} is outside the fitted path [{lo:.4g}, {hi:.4g}]")
        nearest = float(alphas[np.argmin(np.abs(np.log(alphas) - math.log(alpha)))])
        sel = self.path[np.isclose(self.path["alpha"], nearest, rtol=1e-12, atol=0)].drop(columns="alpha")
        return self._with_edges(sel, alpha=nearest)

    def restrict(self, nodes: Iterable[str]) -> Circuit:
        """The subgraph on ``nodes`` (all edges among them)."""
        keep = set(nodes)
        bad = keep - set(self.nodes["node"])
        if bad:
            raise ValueError(f"unknown nodes {sorted(bad)[:5]}")
        n = self.nodes[self.nodes["node"].isin(keep)]
        e = self.edges[self.edges["source"].isin(keep) & self.edges["target"].isin(keep)]
        p = None
        if self.path is not None:
            p = self.path[self.path["source"].isin(keep) & self.path["target"].isin(keep)]
        return Circuit(n, e, p, dict(self.meta))

    # -- matrices & graphs -------------------------------------------------------------------------
    def adjacency(self, *, signed: bool = False) -> sp.csr_matrix:
        """Sparse ``[n_nodes, n_nodes]`` matrix, rows are targets and columns sources, in node order."""
        pos = {n: i for i, n in enumerate(self.node_names)}
        r = self.edges["target"].map(pos).to_numpy()
        c = self.edges["source"].map(pos).to_numpy()
        v = (self.edges["weight"] if signed else self.edges["score"]).to_numpy()
        n = len(pos)
        return sp.csr_matrix((v, (r, c)), shape=(n, n))

    def to_networkx(self, *, include_isolated: bool = True):
        """A ``networkx.DiGraph`` with node attributes (site, kind, feature, label) and edge attributes
        (weight, score)."""
        import networkx as nx

        g = nx.DiGraph()  # meta goes into g.graph (not DiGraph(**meta): networkx reserves e.g. `backend=`)
        g.graph.update({k: v for k, v in self.meta.items() if isinstance(v, (str, int, float, bool))})
        used = set(self.edges["source"]).union(self.edges["target"])
        for rec in self.nodes.to_dict("records"):
            if include_isolated or rec["node"] in used:
                g.add_node(rec["node"], **{k: v for k, v in rec.items() if k != "node"})
        for rec in self.edges.to_dict("records"):
            g.add_edge(rec["source"], rec["target"], **{k: v for k, v in rec.items() if k not in ("source", "target")})
        return g

    def to_graphml(self, path: str | Path) -> Path:
        import networkx as nx

        g = self.to_networkx()
        for _, d in g.nodes(data=True):
            for k, v in list(d.items()):
                if isinstance(v, (np.integer,)):
                    d[k] = int(v)
        nx.write_graphml(g, str(path))
        return Path(path)

    # -- persistence -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        def records(df: pd.DataFrame) -> dict[str, list]:
            return {c: [x.item() if isinstance(x, np.generic) else x for x in df[c].tolist()] for c in df.columns}

        return {
            "format": FORMAT,
            "version": VERSION,
            "meta": self.meta,
            "nodes": records(self.nodes),
            "edges": records(self.edges),
            "path": records(self.path) if self.path is not None else None,
        }

    @classmethod
    def from_dict(cls, doc: Any) -> Circuit:
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
            raise ValueError(f"not a circuit: expected format {FORMAT!r}, got {got!r}")
        if int(doc.get("version", 0)) > VERSION:
            raise ValueError(f"circuit format version {doc['version']} is newer than this circuitkit reads ({VERSION})")
        for key in ("nodes", "edges"):
            if key not in doc:
                raise ValueError(f"not a circuit: missing {key!r}")
        nodes = pd.DataFrame(doc["nodes"])
        edges = pd.DataFrame(doc["edges"]) if doc["edges"] else pd.DataFrame(columns=EDGE_COLUMNS)
        path = pd.DataFrame(doc["path"]) if doc.get("path") is not None else None
        return cls(nodes, edges, path, doc.get("meta", {}))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=True)

    def save(self, path: str | Path) -> Path:
        """Write versioned JSON (floats round-trip exactly)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json())
        return path

    @classmethod
    def load(cls, path: str | Path) -> Circuit:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"no circuit file at {path}")
        try:
            doc = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path} is not a circuit file (not JSON: {e})") from None
        return cls.from_dict(doc)

    # -- construction helpers ----------------------------------------------------------------------
    @classmethod
    def from_edges(
        cls,
        edges: pd.DataFrame | Iterable[tuple[str, str, float]],
        *,
        nodes: Iterable[str] | pd.DataFrame | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Circuit:
        """Build a circuit from an edge list ``(source, target, weight)`` and optional node names."""
        if not isinstance(edges, pd.DataFrame):
            edges = pd.DataFrame(list(edges), columns=["source", "target", "weight"])
        if nodes is None:
            from .sites import parse_site, sort_sites

            names = list(dict.fromkeys([*edges["source"], *edges["target"]]))
            try:
                for n in names:
                    parse_site(n)
                names = sort_sites(names)
            except ValueError:
                pass
            nodes = pd.DataFrame({"node": names, "site": names, "kind": "site"})
        elif not isinstance(nodes, pd.DataFrame):
            names = list(nodes)
            nodes = pd.DataFrame({"node": names, "site": names, "kind": "site"})
        return cls(nodes, edges, None, dict(meta or {}))
