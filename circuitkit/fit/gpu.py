"""Solver ``"torch"``: batched FISTA over many targets at once, in torch (GPU when CUDA is present).

The problem is the one every solver solves (:mod:`circuitkit.fit.solvers`), for a block of targets at a
time::

    min_W  1/(2 n) ||Y - X_c W||_F^2 + alpha sum_j ||W[:, j]||_1,     X_c = X - 1 o'

Because all targets share ``X``, one step for ``b`` targets is two matrix products (``X_c W`` and
``X_c' R``), which is what a GPU does well. The centring never densifies a sparse ``X``: it enters as
``X W - 1 (o' W)`` and ``X' R - o (1' R)``.

* **Algorithm.** FISTA with step ``1/L``, ``L = ||X_c||_2^2 / n`` (power iteration), per-target momentum
  with adaptive (gradient) restart, warm starts along the descending grid.
* **Stopping.** Every ``check_every`` iterations the duality gap of every target is computed (the same
  dual point as celer: the residual rescaled into the dual feasible set); a target stops when its gap is
  below ``tol * ||y||^2 / n`` (celer's rule), the block when all have stopped or ``max_iter`` is reached
  (then a warning names the largest remaining gap).
* **Memory.** ``batch_targets`` targets at a time: ``Y`` block, ``W``, ``Z`` and one gradient, each
  ``[p or n, batch_targets]``; sparse ``X`` stays sparse on the device.
* **Precision.** float64 on CPU (so it agrees with celer to ``1e-6``; tests check this); float32 on
  CUDA by default (``TorchConfig(dtype="float64")`` to override), where a gap below ~1e-6 relative is not
  reachable and ``tol`` is clipped to ``1e-6``.

Selection by (E)BIC needs relaxed residuals, which ``CircuitLasso`` computes from the returned
supports (this solver does not fill ``info["relaxed_rss"]``).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .solvers import PathResult, register_solver

logger = logging.getLogger(__name__)

DTYPES = ("float32", "float64")


@dataclass
class TorchConfig:
    """Options of :class:`TorchSolver`.

    device: ``"cuda"``, ``"cpu"`` or ``None`` (CUDA when available).
    dtype: ``"float32"``, ``"float64"`` or ``None`` (float32 on CUDA, float64 on CPU).
    batch_targets: targets per batch (bounds memory).
    max_iter: FISTA iterations per grid point.
    check_every: iterations between duality-gap checks.
    """

    device: str | None = None
    dtype: str | None = None
    batch_targets: int = 1024
    max_iter: int = 20000
    check_every: int = 10

    def __post_init__(self) -> None:
        if self.device is not None and not (self.device == "cpu" or str(self.device).startswith("cuda")):
            raise ValueError(f"device must be 'cpu', 'cuda[:i]' or None, got {self.device!r}")
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES} or None, got {self.dtype!r}")
        for name in ("batch_targets", "max_iter", "check_every"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")


class _Design:
    """``X_c = X - 1 o'`` on the device, with the two products FISTA needs."""

    def __init__(self, X, offset, device, dtype):
        import torch

        self.n, self.p = X.shape
        self.torch = torch
        if sp.issparse(X):
            Xr = sp.csr_matrix(X, dtype=np.float64)
            Xt = sp.csr_matrix(Xr.T)
            self.X = self._sparse(Xr, device, dtype)
            self.Xt = self._sparse(Xt, device, dtype)
            self.sparse = True
        else:
            self.X = torch.as_tensor(np.ascontiguousarray(X), dtype=dtype, device=device)
            self.Xt = None
            self.sparse = False
        off = np.zeros(self.p) if offset is None else np.asarray(offset, dtype=np.float64)
        self.o = torch.as_tensor(off, dtype=dtype, device=device)
        self.has_offset = offset is not None and bool(np.any(off != 0))

    def _sparse(self, M: sp.csr_matrix, device, dtype):
        torch = self.torch
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            return torch.sparse_csr_tensor(torch.as_tensor(M.indptr, dtype=torch.int64),
                                           torch.as_tensor(M.indices, dtype=torch.int64),
                                           torch.as_tensor(M.data), size=M.shape, dtype=dtype, device=device,
                                           check_invariants=False)

    def matvec(self, W):
        """``X_c W`` for ``W [p, b]``."""
        out = self.X @ W
        if self.has_offset:
            out = out - (self.o @ W)[None, :]
        return out

    def rmatvec(self, R):
        """``X_c' R`` for ``R [n, b]``."""
        out = self.Xt @ R if self.sparse else self.X.T @ R
        if self.has_offset:
            out = out - self.o[:, None] * R.sum(0)[None, :]
        return out

    def lipschitz(self, n_iter: int = 100) -> float:
        torch = self.torch
        gen = torch.Generator(device="cpu").manual_seed(0)
        v = torch.randn(self.p, 1, generator=gen, dtype=self.o.dtype).to(self.o.device)
        v = v / v.norm()
        lam = 0.0
        for _ in range(n_iter):
            u = self.rmatvec(self.matvec(v))
            lam_new = float(u.norm())
            if lam_new == 0:
                return 1e-12
            v = u / lam_new
            if abs(lam_new - lam) <= 1e-10 * lam_new:
                lam = lam_new
                break
            lam = lam_new
        return 1.01 * lam / self.n  # a little slack: the power iteration approaches from below


class TorchSolver:
    """Batched FISTA over targets (module docstring)."""

    name = "torch"

    def __init__(self, config: TorchConfig | None = None, **kwargs) -> None:
        if config is not None and kwargs:
            raise ValueError("pass either a TorchConfig or keyword options, not both")
        self.config = config if config is not None else TorchConfig(**kwargs)

    def _device_dtype(self):
        import torch

        dev = self.config.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if self.config.dtype is not None:
            dt = getattr(torch, self.config.dtype)
        else:
            dt = torch.float32 if str(dev).startswith("cuda") else torch.float64
        return torch.device(dev), dt

    def path(self, X, Y, alphas, *, offset=None, tol=1e-6, max_iter=50, n_jobs=1) -> PathResult:
        """``max_iter`` and ``n_jobs`` belong to the CPU solvers' interface and are ignored here
        (iterations: ``TorchConfig.max_iter``; parallelism: the device)."""
        import torch

        from .design import as_sparse_targets

        alphas = np.asarray(alphas, dtype=np.float64)
        if alphas.ndim != 1 or alphas.size == 0 or np.any(np.diff(alphas) > 0):
            raise ValueError("alphas must be a non-empty descending 1-D grid")
        targets = as_sparse_targets(Y)
        n, p = X.shape
        if targets.shape[0] != n:
            raise ValueError(f"X has {n} rows but the targets have {targets.shape[0]}")
        device, dtype = self._device_dtype()
        if dtype == torch.float32 and tol < 1e-6:
            tol = 1e-6
        design = _Design(X, offset, device, dtype)
        L = design.lipschitz()
        nq, nA = targets.shape[1], len(alphas)
        rss = np.zeros((nA, nq))
        gaps = np.zeros((nA, nq))
        skipped = np.zeros(nq, dtype=bool)
        parts: list[list[sp.csr_matrix]] = [[] for _ in range(nA)]
        iters = np.zeros(nq, dtype=np.int64)
        bt = self.config.batch_targets
        with torch.no_grad():
            for start in range(0, nq, bt):
                cols = np.arange(start, min(start + bt, nq))
                Yb = torch.as_tensor(targets[:, cols].dense(), dtype=dtype, device=device)
                coefs_b, rss_b, gaps_b, skip_b, it_b = self._fit_block(design, Yb, alphas, L, tol)
                for k in range(nA):
                    parts[k].append(coefs_b[k])
                rss[:, cols] = rss_b
                gaps[:, cols] = gaps_b
                skipped[cols] = skip_b
                iters[cols] = it_b
        coefs = [sp.vstack(parts[k], format="csr") if parts[k] else sp.csr_matrix((0, p)) for k in range(nA)]
        return PathResult(alphas, coefs, rss, gaps, skipped, self.name,
                          {"iterations": iters, "device": str(device), "dtype": str(dtype).replace("torch.", ""),
                           "lipschitz": L})

    def _fit_block(self, design: _Design, Y, alphas, L: float, tol: float):
        import torch

        cfg = self.config
        n, b = Y.shape
        yty = (Y * Y).sum(0)
        skip = (yty <= 1e-12 * n).cpu().numpy()
        tol_abs = tol * yty / n
        W = torch.zeros(design.p, b, dtype=Y.dtype, device=Y.device)
        out_coefs, out_rss, out_gap = [], np.zeros((len(alphas), b)), np.zeros((len(alphas), b))
        iters = np.zeros(b, dtype=np.int64)
        for k, alpha in enumerate(alphas):
            Z = W.clone()
            t = torch.ones(b, dtype=Y.dtype, device=Y.device)
            active = torch.ones(b, dtype=torch.bool, device=Y.device)
            active[torch.as_tensor(skip, device=Y.device)] = False
            gap = torch.zeros(b, dtype=Y.dtype, device=Y.device)
            for it in range(1, cfg.max_iter + 1):
                grad = design.rmatvec(design.matvec(Z) - Y) / n
                U = Z - grad / L
                W_new = torch.sign(U) * torch.clamp(U.abs() - alpha / L, min=0.0)
                W_new[:, ~active] = W[:, ~active]
                t_new = (1 + torch.sqrt(1 + 4 * t * t)) / 2
                # gradient restart: drop momentum where it points uphill
                restart = ((Z - W_new) * (W_new - W)).sum(0) > 0
                t_new = torch.where(restart, torch.ones_like(t_new), t_new)
                beta = torch.where(restart, torch.zeros_like(t), (t - 1) / t_new)
                Z = W_new + beta[None, :] * (W_new - W)
                W = W_new
                t = t_new
                iters[active.cpu().numpy()] += 1
                if it % cfg.check_every == 0 or it == cfg.max_iter:
                    gap, r2 = _gaps(design, Y, W, alpha, yty)
                    active = active & (gap > tol_abs)
                    if not bool(active.any()):
                        break
            gap, r2 = _gaps(design, Y, W, alpha, yty)
            left = (gap > tol_abs) & torch.as_tensor(~skip, device=Y.device)
            if bool(left.any()):
                warnings.warn(f"torch solver: {int(left.sum())} targets did not reach tol={tol:g} at alpha={alpha:.4g} "
                              f"within {cfg.max_iter} iterations (largest gap {float(gap.max()):.3g})",
                              RuntimeWarning, stacklevel=3)
            Wc = W.cpu().numpy().astype(np.float64)
            Wc[:, skip] = 0.0
            m = sp.csr_matrix(Wc.T)
            m.eliminate_zeros()
            out_coefs.append(m)
            out_rss[k] = r2.cpu().numpy()
            out_gap[k] = gap.cpu().numpy()
        return out_coefs, out_rss, out_gap, skip, iters


def _gaps(design: _Design, Y, W, alpha: float, yty):
    """Duality gaps (celer's dual point) and RSS of every column."""
    import torch

    n = Y.shape[0]
    R = Y - design.matvec(W)
    r2 = (R * R).sum(0)
    gmax = (design.rmatvec(R).abs().amax(0)) / n
    scale = torch.where(gmax > alpha, alpha / torch.clamp(gmax, min=1e-300), torch.ones_like(gmax))
    primal = r2 / (2 * n) + alpha * W.abs().sum(0)
    dual = scale * (R * Y).sum(0) / n - scale * scale * r2 / (2 * n)
    return primal - dual, r2


register_solver("torch", TorchSolver)

__all__ = ["TorchConfig", "TorchSolver"]
