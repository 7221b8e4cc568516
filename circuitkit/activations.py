"""`Activations`: what :func:`circuitkit.capture` returns.

Rows are samples. A row is either one token position of one prompt, or (with ``aggregate=``) one prompt
aggregated over its chosen positions. ``index`` maps every row back to ``(prompt, position)``; position
``-1`` marks an aggregated row. One ``[rows, d]`` float32 block is kept per site.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from jaxtyping import Float

from .sites import sort_sites

FORMAT = "circuitkit.activations"
VERSION = 1


def hash_inputs(parts: Iterable[Any]) -> str:
    """A stable hash of the model inputs (token ids / prompts) and capture options."""
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(str(p.dtype).encode())
            h.update(str(p.shape).encode())
            h.update(np.ascontiguousarray(p).tobytes())
        else:
            h.update(json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


@dataclass
class Activations:
    """Per-site activation blocks with a row index and provenance.

    Attributes
    ----------
    data: ``{site: array[rows, d]}``.
    index: DataFrame with columns ``prompt`` (int, index into the captured inputs), ``position``
        (int token position, ``-1`` for an aggregated row) and ``token`` (str; ``""`` when aggregated).
    tokens: token strings of every captured prompt (used for feature contexts and labels).
    meta: provenance: model name, sites, positions rule, aggregation, input hash, ...
    """

    data: dict[str, Float[np.ndarray, "rows d"]]
    index: pd.DataFrame
    tokens: list[list[str]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.data:
            raise ValueError("Activations need at least one site")
        n = len(self.index)
        for site, arr in self.data.items():
            if arr.ndim != 2 or arr.shape[0] != n:
                raise ValueError(f"site {site!r} has shape {arr.shape}; expected ({n}, d) to match the index")
        self.data = {s: self.data[s] for s in sort_sites(self.data)}

    # -- access ------------------------------------------------------------------------------------
    @property
    def sites(self) -> list[str]:
        """Site names in computation order."""
        return list(self.data)

    @property
    def n_rows(self) -> int:
        return len(self.index)

    def __getitem__(self, site: str) -> np.ndarray:
        try:
            return self.data[site]
        except KeyError:
            raise ValueError(f"site {site!r} was not captured; captured sites are {self.sites}") from None

    def __contains__(self, site: str) -> bool:
        return site in self.data

    def dims(self) -> dict[str, int]:
        return {s: a.shape[1] for s, a in self.data.items()}

    def subset(self, sites: Iterable[str]) -> Activations:
        sites = list(sites)
        for s in sites:
            self[s]
        return Activations({s: self.data[s] for s in sites}, self.index, self.tokens, dict(self.meta))

    def context(self, row: int, *, window: int = 8) -> str:
        """The text around row ``row`` with the row's token in [brackets]."""
        prompt, pos = int(self.index["prompt"].iat[row]), int(self.index["position"].iat[row])
        toks = self.tokens[prompt] if prompt < len(self.tokens) else []
        if pos < 0:
            return " ".join(toks)
        left = toks[max(0, pos - window) : pos]
        right = toks[pos + 1 : pos + 1 + window // 2]
        return " ".join([*left, f"[{toks[pos]}]", *right]) if pos < len(toks) else ""

    def __repr__(self) -> str:
        dims = ", ".join(f"{s}:{d}" for s, d in list(self.dims().items())[:6])
        more = " ..." if len(self.data) > 6 else ""
        return f"Activations(rows={self.n_rows}, sites=[{dims}{more}], model={self.meta.get('model')!r})"

    # -- persistence -------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Save to ``path`` (a directory): ``arrays.npz`` + ``meta.json``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        arrays = {f"site::{s}": a for s, a in self.data.items()}
        arrays["index::prompt"] = self.index["prompt"].to_numpy(np.int64)
        arrays["index::position"] = self.index["position"].to_numpy(np.int64)
        np.savez(path / "arrays.npz", **arrays)
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "sites": self.sites,
            "tokens": self.tokens,
            "index_token": self.index["token"].astype(str).tolist(),
            "meta": self.meta,
        }
        (path / "meta.json").write_text(json.dumps(doc, default=str))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Activations:
        from ._io import read_versioned_json

        path = Path(path)
        doc = read_versioned_json(path, "meta.json", fmt=FORMAT, version=VERSION,
                                  what="saved Activations directory")
        with np.load(path / "arrays.npz") as z:
            data = {s: z[f"site::{s}"] for s in doc["sites"]}
            index = pd.DataFrame(
                {"prompt": z["index::prompt"], "position": z["index::position"], "token": doc["index_token"]}
            )
        return cls(data, index, doc.get("tokens", []), doc.get("meta", {}))


def check_finite(name: str, arr: np.ndarray) -> None:
    """Raise ``ValueError`` if ``arr`` holds NaN or inf (names the site and the first bad row)."""
    data = arr.data if hasattr(arr, "tocsr") else arr
    finite = np.isfinite(data)
    if not finite.all():
        bad = int(np.argwhere(~finite)[0][0]) if np.ndim(data) else 0
        raise ValueError(
            f"site {name!r} holds NaN or inf activations (first at flat row {bad}); "
            "check the model's dtype (fp16 overflow) and inputs, or drop those rows"
        )


#: singular values below this fraction of a site's largest are numerically zero (float32 captures)
_RANK_RTOL = 1e-6


def compress_sites(X: Activations, *, variance: float = 0.99, max_components: int = 32) -> Activations:
    """Each site reduced to its leading principal components, whitened: a cheaper component-level design.

    A site's block is centred and projected on the fewest principal axes that keep ``variance`` of its total
    variance, at most ``max_components`` and never an axis whose singular value is below ``1e-6`` of the
    largest; the scores are divided by their standard deviations (unit variance, uncorrelated within the
    site). Sites keep their names, so a component-level :class:`~circuitkit.fit.lasso.CircuitLasso` fitted
    on the result has the same nodes and candidate edges, with ``k`` columns per site instead of ``d``: the
    number of Lasso targets falls from ``sum d`` to ``sum k``. Regressing on whitened scores is regressing
    on the site's projection onto those axes, so an edge through a discarded direction (at most
    ``1 - variance`` of the site's variance) is lost. A constant site keeps one all-zero column. The kept
    ``k`` and variance fractions are in ``meta["compressed"]``.
    """
    if not (isinstance(variance, (int, float)) and 0.0 < variance <= 1.0):
        raise ValueError(f"variance must be in (0, 1], got {variance!r}")
    if not (isinstance(max_components, int) and max_components >= 1):
        raise ValueError(f"max_components must be an int >= 1, got {max_components!r}")
    data, info = {}, {}
    n = X.n_rows
    for s, arr in X.data.items():
        a = np.asarray(arr, dtype=np.float64)
        check_finite(s, a)
        a = a - a.mean(axis=0)
        _, sv, vt = np.linalg.svd(a, full_matrices=False)
        total = float(np.sum(sv**2))
        if sv.size == 0 or total <= 0 or sv[0] <= 1e-12 * np.sqrt(n):
            data[s] = np.zeros((n, 1), dtype=np.float32)
            info[s] = {"k": 0, "variance": 0.0}
            continue
        rank = int(np.sum(sv > _RANK_RTOL * sv[0]))
        cum = np.cumsum(sv**2) / total
        k = max(1, min(int(np.searchsorted(cum, variance - 1e-12) + 1), rank, max_components))
        data[s] = ((a @ vt[:k].T) / (sv[:k] / np.sqrt(n))).astype(np.float32)
        info[s] = {"k": k, "variance": float(cum[k - 1])}
    meta = dict(X.meta, compressed={"variance": float(variance), "max_components": int(max_components), "sites": info})
    return Activations(data, X.index.copy(), X.tokens, meta)
