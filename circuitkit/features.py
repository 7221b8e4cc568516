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
