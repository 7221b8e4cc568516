"""Per-target fits on a Dask cluster (solver ``"dask"``), for problems larger than one machine.

The Lasso problems of different targets are independent, so a block of targets is cut into chunks and
each chunk is fitted by an ordinary single-machine solver (``"fast"`` by default) on a Dask worker. The
design ``X`` is scattered to every worker once (``broadcast=True``); each task receives only its own
targets (kept sparse: :class:`~circuitkit.fit.design.SparseTargets`) and returns a
:class:`~circuitkit.fit.solvers.PathResult`, which are concatenated in target order. The result is the
same as the local solver's, because every target is solved by the same code with the same inputs.

Two ways to use Dask
--------------------
1. ``solver="dask"`` (this module). Start a client first; the solver uses the current one::

       from dask.distributed import Client, LocalCluster
       client = Client(LocalCluster(n_workers=4, threads_per_worker=1))   # one machine
       # client = Client("tcp://scheduler-host:8786")                      # a real cluster
       CircuitLasso(solver="dask").fit(features)

   or construct it explicitly: ``DaskSolver(inner="fast", address="tcp://scheduler-host:8786")``.
2. joblib's Dask backend: the local solvers parallelise with joblib, so
   ``with joblib.parallel_backend("dask"): CircuitLasso(solver="fast", n_jobs=-1).fit(features)`` sends
   their chunks to the cluster too (simpler; ``X`` is then shipped with every task).

On a real cluster
-----------------
* Workers need the same environment (circuitkit, numba, celer) as the client: build the image or conda
  env from ``environment.yml``; numba compiles its kernels once per worker (cached when the package
  directory is writable).
* Use ``threads_per_worker=1`` and one worker process per core: the kernels are single-threaded and hold
  the GIL. Set ``OMP_NUM_THREADS=1`` in the workers' environment.
* Memory per worker: ``X`` (CSC + CSR copies, about ``2 * 12 * nnz`` bytes) plus one chunk of targets
  and its coefficients. Tune ``chunk_targets`` so a chunk runs for ~10 s-1 min: small enough to balance,
  large enough that the scheduler's overhead (a few ms per task) does not matter.
* ``dask-jobqueue`` (SLURM/PBS), ``dask-kubernetes`` or Coiled start the cluster; nothing here changes.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import scipy.sparse as sp

from .solvers import PathResult, get_solver, register_solver

logger = logging.getLogger(__name__)


def _fit_chunk(inner: str, inner_options: dict, X, targets, alphas, offset, tol, max_iter) -> PathResult:
    # a fresh worker process has an empty registry: importing the modules registers "fast" and "torch"
    from . import fast, gpu

    if inner_options:
        if inner == "fast":
            solver = fast.FastSolver(fast.FastConfig(**inner_options))
        elif inner == "torch":
            solver = gpu.TorchSolver(gpu.TorchConfig(**inner_options))
        else:
            raise ValueError(f"inner_options are supported for inner='fast' or 'torch', not {inner!r}")
    else:
        solver = get_solver(inner)
    return solver.path(X, targets, alphas, offset=offset, tol=tol, max_iter=max_iter, n_jobs=1)


def concat_results(results: list[PathResult], n_features: int, solver: str) -> PathResult:
    """Concatenate the ``PathResult`` of consecutive target chunks (in order) into one."""
    if not results:
        raise ValueError("no results to concatenate")
    alphas = results[0].alphas
    for r in results[1:]:
        if not np.array_equal(r.alphas, alphas):
            raise ValueError("chunks were fitted on different alpha grids")
    coefs = [sp.vstack([r.coefs[k] for r in results], format="csr") for k in range(len(alphas))]
    for c in coefs:
        if c.shape[1] != n_features:
            raise ValueError(f"chunk coefficients have {c.shape[1]} columns, expected {n_features}")
    info: dict[str, Any] = {"n_chunks": len(results), "inner": results[0].solver}
    if all("relaxed_rss" in r.info for r in results):
        info["relaxed_rss"] = np.hstack([r.info["relaxed_rss"] for r in results])
    return PathResult(alphas, coefs, np.hstack([r.rss for r in results]), np.hstack([r.gaps for r in results]),
                      np.concatenate([r.skipped for r in results]), solver, info)


class DaskSolver:
    """Run an inner solver over target chunks on Dask workers (module docstring).

    Parameters
    ----------
    inner: the registered solver each task runs (``"fast"``, ``"celer"``, ``"torch"``, ...).
    client: a ``dask.distributed.Client``; ``None`` uses the current client (``distributed.get_client``),
        or connects to ``address``.
    address: scheduler address, e.g. ``"tcp://10.0.0.5:8786"`` (used when ``client`` is ``None``).
    chunk_targets: targets per task (``None``: about 4 tasks per worker thread, at least 16 targets).
    inner_options: options of the inner solver's config (``FastConfig``/``TorchConfig`` fields).
    """

    name = "dask"

    def __init__(self, inner: str = "fast", *, client: Any = None, address: str | None = None,
                 chunk_targets: int | None = None, inner_options: dict | None = None) -> None:
        if inner == "dask":
            raise ValueError("inner solver of 'dask' cannot be 'dask'")
        from . import fast, gpu  # noqa: F401  (registers "fast" and "torch")

        get_solver(inner)  # validates the name (ValueError lists the valid ones)
        if chunk_targets is not None and (not isinstance(chunk_targets, int) or chunk_targets < 1):
            raise ValueError(f"chunk_targets must be None or an int >= 1, got {chunk_targets!r}")
        self.inner = inner
        self.client = client
        self.address = address
        self.chunk_targets = chunk_targets
        self.inner_options = dict(inner_options or {})

    def _client(self):
        try:
            from distributed import Client, get_client
        except ImportError as e:  # pragma: no cover
            raise ImportError("solver 'dask' needs dask.distributed: pip install 'dask[distributed]'") from e
        if self.client is not None:
            return self.client
        if self.address is not None:
            self.client = Client(self.address)
            return self.client
        try:
            return get_client()
        except ValueError:
            raise ValueError("solver 'dask' found no Dask client: start one first, e.g. "
                             "Client(LocalCluster(n_workers=4, threads_per_worker=1)) or Client('tcp://host:8786'), "
                             "or pass DaskSolver(client=...) / DaskSolver(address=...)") from None

    def path(self, X, Y, alphas, *, offset=None, tol=1e-6, max_iter=50, n_jobs=1) -> PathResult:
        """``n_jobs`` is ignored: the cluster's workers are the parallelism."""
        from .design import SparseTargets, as_sparse_targets

        client = self._client()
        alphas = np.asarray(alphas, dtype=np.float64)
        targets = Y if isinstance(Y, SparseTargets) else None
        nq = Y.shape[1]
        if self.chunk_targets is not None:
            size = self.chunk_targets
        else:
            threads = sum(client.nthreads().values()) or 1
            size = max(16, math.ceil(nq / (4 * threads)))
        bounds = [(s, min(s + size, nq)) for s in range(0, nq, size)]
        X_f = client.scatter(X, broadcast=True)
        futures = []
        for s, e in bounds:
            if targets is not None:
                part = targets[:, np.arange(s, e)]
            elif self.inner == "fast":
                part = as_sparse_targets(np.asarray(Y)[:, s:e])
            else:
                part = np.asfortranarray(np.asarray(Y)[:, s:e])
            futures.append(client.submit(_fit_chunk, self.inner, self.inner_options, X_f, part, alphas, offset,
                                         tol, max_iter, pure=False))
        results = client.gather(futures)
        logger.info("dask solver: %d targets in %d tasks on %d workers", nq, len(bounds),
                    len(client.scheduler_info().get("workers", {})))
        return concat_results(results, X.shape[1], f"dask[{self.inner}]")


register_solver("dask", DaskSolver)

__all__ = ["DaskSolver", "concat_results"]
