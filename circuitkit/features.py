"""The :class:`Features` container: sparse SAE codes per site, reconstruction errors, the row index.

Produced by :func:`circuitkit.encode`; consumed by :class:`circuitkit.CircuitLasso`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from jaxtyping import Float


@dataclass
class Features:
    """Sparse SAE codes per site, the reconstruction errors, and the row index of the activations.

    Node names: feature ``p`` of site ``s`` is ``"{s}/f{p}"``; the error node of ``s`` is ``"{s}/err"``.
    """

    codes: dict[str, sp.csr_matrix]
    errors: dict[str, Float[np.ndarray, "rows d_in"]]
    index: pd.DataFrame
    tokens: list[list[str]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from .sites import parse_site

        if not isinstance(self.codes, dict) or not self.codes:
            raise ValueError("Features needs codes={site: CSR [rows, d_sae]} for at least one site")
        rows = {}
        for site, c in self.codes.items():
            parse_site(site)
            if not sp.issparse(c) or c.ndim != 2:
                raise TypeError(f"codes[{site!r}] must be a 2-D scipy sparse matrix, got {type(c).__name__}")
            rows[site] = c.shape[0]
        for site, e in self.errors.items():
            if site not in self.codes:
                raise ValueError(f"errors for site {site!r}, which has no codes; sites with codes: {sorted(self.codes)}")
            rows[f"{site} (errors)"] = np.asarray(e).shape[0]
        if len(set(rows.values())) != 1:
            raise ValueError(f"sites have different row counts {rows}; every site's codes (and errors) must have "
                             "one row per captured row")
        n = next(iter(rows.values()))
        if not isinstance(self.index, pd.DataFrame) or len(self.index) != n:
            got = len(self.index) if isinstance(self.index, pd.DataFrame) else type(self.index).__name__
            raise ValueError(f"index has {got} rows but the codes have {n}; it must hold one row (prompt, position) "
                             "per code row")

    @classmethod
    def from_csr(
        cls,
        codes: dict[str, Any],
        *,
        index: pd.DataFrame | None = None,
        errors: dict[str, np.ndarray] | None = None,
        tokens: list[list[str]] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Features:
        """Features from ``{site: [rows, d_sae]}`` matrices (scipy sparse or dense), validated.

        ``index`` defaults to one row per code row (``prompt`` = row, ``position`` = -1, ``token`` = "");
        non-finite codes, ragged row counts, an index of another length, or a bad site name raise
        ``ValueError`` naming the site.
        """
        if not isinstance(codes, dict) or not codes:
            raise ValueError("from_csr needs codes={site: [rows, d_sae] matrix} for at least one site")
        csr = {}
        for site, c in codes.items():
            m = sp.csr_matrix(c, dtype=np.float64) if not sp.issparse(c) else sp.csr_matrix(c).astype(np.float64)
            if m.ndim != 2:
                raise ValueError(f"codes[{site!r}] must be 2-D [rows, d_sae], got shape {m.shape}")
            if m.nnz and not np.all(np.isfinite(m.data)):
                raise ValueError(f"codes[{site!r}] holds NaN or inf")
            csr[site] = m
        n = next(iter(csr.values())).shape[0]
        if index is None:
            index = pd.DataFrame({"prompt": np.arange(n), "position": np.full(n, -1), "token": [""] * n})
        return cls(csr, dict(errors or {}), index, list(tokens or []), dict(meta or {}))

    @property
    def sites(self) -> list[str]:
        from .sites import sort_sites

        return sort_sites(self.codes)

    @property
    def n_rows(self) -> int:
        return len(self.index)

    def __getitem__(self, site: str) -> sp.csr_matrix:
        try:
            return self.codes[site]
        except KeyError:
            raise ValueError(f"no SAE codes for site {site!r}; encoded sites are {self.sites}") from None

    def widths(self) -> dict[str, int]:
        return {s: self.codes[s].shape[1] for s in self.sites}

    def error_norm(self, site: str) -> np.ndarray:
        return np.linalg.norm(self.errors[site], axis=1)

    def stats(self) -> pd.DataFrame:
        """Per-site L0 (mean active features per row), alive features and FVU of the reconstruction."""
        rows = []
        for s in self.sites:
            c = self.codes[s]
            l0 = np.diff(c.indptr).mean() if c.shape[0] else 0.0
            alive = int((c.getnnz(axis=0) > 0).sum())
            rows.append({"site": s, "d_sae": c.shape[1], "l0": float(l0), "alive": alive,
                         "fvu": self.meta.get("fvu", {}).get(s, np.nan)})
        return pd.DataFrame(rows)

    def __repr__(self) -> str:
        w = ", ".join(f"{s}:{d}" for s, d in self.widths().items())
        return f"Features(rows={self.n_rows}, sites=[{w}])"
