"""Memory-bounded capture: stream activations and SAE codes to disk in chunks, resumable.

:func:`capture_to_disk` runs :func:`circuitkit.capture` (and :func:`circuitkit.encode` when SAEs are given)
on ``chunk_size`` prompts at a time and writes each chunk before the next starts. Everything that has one
entry per prompt or per row -- token ids, token strings, the row -> (prompt, position) index, activations,
codes, errors -- is written with its chunk and dropped, so peak memory is set by ``chunk_size`` (and
``batch_size``), not by the number of prompts. What stays in memory and grows with the dataset is only the
manifest's list of committed chunks (one small dict per chunk) and the caller's own ``inputs``.
:func:`load_store` opens the result; :meth:`Store.activations` / :meth:`Store.features` return the same
objects an in-memory ``capture``/``encode`` would, and :meth:`Store.iter_chunks` walks it chunk by chunk.

Inputs are read in two streaming passes: the first tokenizes ``chunk_size`` prompts at a time into a
scratch directory next to ``PATH`` (token ids and prompt lengths, 8 bytes each) and then computes the
input hash from it (the same hash :func:`circuitkit.capture` records, fed incrementally); the second
captures each chunk from its scratch ids. The scratch directory is removed when the call returns or fails.

On-disk format (``format: "circuitkit.store"``, ``version: 2``)::

    PATH/
      manifest.json        provenance + the list of completed chunks (rewritten atomically)
      chunk-00000/         one directory per completed chunk of prompts [start, stop)
        tokens.json        token strings of the chunk's prompts (prompt start + k is entry k)
        index.npz          prompt (global prompt index), position       (int64, one entry per row)
        acts.npz           {site: float32 [rows, d]}  (sites without an SAE, or all with keep_activations)
        codes.npz          {site::data, site::indices, site::indptr, site::shape}: CSR float32 SAE codes
        errors.npz         {site: float32 [rows, d_in]}  reconstruction errors x - decode(encode(x))
        stats.npz          {site::sse, site::sum, site::sumsq}: sums that give the exact dataset FVU
      chunk-00001.partial/ a chunk being written (ignored and redone on resume)

Version 1 stores (one ``tokens.json`` for all prompts at the top level) are still read; they are not
resumed by this version (the ``version`` difference is reported as stale).

``manifest.json`` holds ``format``, ``version``, ``model`` (name, arch, layers, heads, parameter count and
a weight fingerprint), ``sites``, ``positions``, ``aggregate``, ``logit_tokens``, ``dtype``,
``input_hash`` (the same hash :func:`circuitkit.capture` records), ``n_prompts``, ``chunk_size``,
``saes`` (``{site: {"id", "fingerprint"}}``; the fingerprint hashes the SAE's weights), ``n_chunks`` and
``chunks`` (completed chunks: ``index``, ``prompts [start, stop)``, ``rows``, ``dir``).

Resuming. A chunk is committed by renaming ``chunk-XXXXX.partial`` to ``chunk-XXXXX`` and then rewriting
the manifest; calling :func:`capture_to_disk` again with the same arguments skips committed chunks and
redoes anything else (a partial directory, or a directory the manifest does not list). If the stored
provenance differs (other inputs, model, sites, positions, SAEs, chunk size or store version) it raises a
``ValueError`` naming each difference, unless ``overwrite=True``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..sites import DEFAULT_POSITIONS

logger = logging.getLogger(__name__)

FORMAT = "circuitkit.store"
VERSION = 2
MANIFEST = "manifest.json"


# -- fingerprints -------------------------------------------------------------------------------------


def sae_fingerprint(sae: Any) -> str:
    """sha256 (16 hex) of an SAE's weights (every state-dict tensor: name, shape, dtype, bytes)."""
    import torch

    h = hashlib.sha256()
    for name, t in sorted(sae.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def model_fingerprint(module: Any) -> dict:
    """Parameter count and a SHA-256 of *every* value of every parameter and buffer (an edit anywhere in any
    tensor changes it; hashing runs at memory bandwidth, ~1 s per GB)."""
    import torch

    h = hashlib.sha256()
    n = 0
    params = dict(module.named_parameters())
    for name, p in [*params.items(), *module.named_buffers()]:
        n += p.numel() if name in params else 0
        t = p.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return {"n_params": int(n), "fingerprint": h.hexdigest()[:16]}


def _sae_id(sae: Any, site: str) -> str:
    meta = getattr(sae.cfg, "metadata", None)
    return str(getattr(meta, "sae_id", None) or getattr(meta, "hook_name", None) or site)


# -- the store ----------------------------------------------------------------------------------------


@dataclass
class Store:
    """A directory written by :func:`capture_to_disk` (see the module docstring for the layout)."""

    path: Path
    manifest: dict

    @property
    def complete(self) -> bool:
        return len(self.manifest["chunks"]) == self.manifest["n_chunks"]

    @property
    def n_rows(self) -> int:
        return int(sum(c["rows"] for c in self.manifest["chunks"]))

    @property
    def sites(self) -> list[str]:
        return list(self.manifest["sites"])

    @property
    def sae_sites(self) -> list[str]:
        return list(self.manifest["saes"])

    def _check_complete(self) -> None:
        if not self.complete:
            raise ValueError(
                f"store {self.path} is incomplete ({len(self.manifest['chunks'])} of {self.manifest['n_chunks']} "
                "chunks); call capture_to_disk again with the same arguments to resume it"
            )

    @property
    def _legacy_tokens(self) -> bool:
        """Version 1 stores keep every prompt's tokens in one top-level ``tokens.json``."""
        return (self.path / "tokens.json").is_file()

    def _chunks(self) -> list[dict]:
        return sorted(self.manifest["chunks"], key=lambda c: c["index"])

    def _chunk_tokens(self, c: dict, legacy: list[list[str]] | None = None) -> list[list[str]]:
        """Token strings of chunk ``c``'s prompts (entry ``k`` is prompt ``c["prompts"][0] + k``); ``legacy``:
        a version 1 store's token list, when already read."""
        if self._legacy_tokens:
            start, stop = c["prompts"]
            if legacy is None:
                legacy = json.loads((self.path / "tokens.json").read_text())
            return legacy[start:stop]
        return json.loads((self.path / c["dir"] / "tokens.json").read_text())

    def _base_meta(self) -> dict:
        m = self.manifest
        return {"model": m["model"]["name"], "arch": m["model"]["arch"], "n_layers": m["model"]["n_layers"],
                "n_heads": m["model"]["n_heads"], "sites": m["sites"], "positions": m["positions"],
                "aggregate": m["aggregate"], "logit_tokens": m["logit_tokens"], "n_prompts": m["n_prompts"],
                "input_hash": m["input_hash"]}

    def _chunk_index(self, c: dict, chunk_tokens: list[list[str]]) -> pd.DataFrame:
        with np.load(self.path / c["dir"] / "index.npz") as z:
            prompt, pos = z["prompt"], z["position"]
        start = int(c["prompts"][0])
        tok = [chunk_tokens[p - start][q] if q >= 0 else "" for p, q in zip(prompt.tolist(), pos.tolist())]
        return pd.DataFrame({"prompt": prompt, "position": pos, "token": tok})

    def iter_chunks(self, *, what: str = "both") -> Iterator[tuple[Any, Any]]:
        """Yield ``(Activations | None, Features | None)`` per committed chunk (``what``: ``"activations"``,
        ``"features"`` or ``"both"``); only one chunk is in memory at a time.

        The ``prompt`` column keeps global prompt indices; ``tokens`` has one entry per prompt of the whole
        store, empty (``()``) outside the chunk."""
        from ..activations import Activations
        from ..sae import Features

        if what not in ("activations", "features", "both"):
            raise ValueError(f"unknown what={what!r}; valid: 'activations', 'features', 'both'")
        meta = self._base_meta()
        n_prompts = int(self.manifest["n_prompts"])
        for c in self._chunks():
            d = self.path / c["dir"]
            chunk_toks = self._chunk_tokens(c)
            index = self._chunk_index(c, chunk_toks)
            start, stop = c["prompts"]
            tokens: list = [()] * n_prompts
            tokens[start:stop] = chunk_toks
            acts = feats = None
            if what in ("activations", "both"):
                with np.load(d / "acts.npz") as z:
                    data = {s: z[s] for s in z.files}
                acts = Activations(data, index, tokens, dict(meta)) if data else None
            if what in ("features", "both") and self.manifest["saes"]:
                codes, errors = _read_codes(d)
                fmeta = dict(meta)
                fmeta["sae_ids"] = {s: v["id"] for s, v in self.manifest["saes"].items()}
                feats = Features(codes, errors, index, tokens, fmeta)
            yield acts, feats

    def _index_and_tokens(self) -> tuple[pd.DataFrame, list[list[str]]]:
        idx, toks = [], []
        legacy = json.loads((self.path / "tokens.json").read_text()) if self._legacy_tokens else None
        for c in self._chunks():
            ct = self._chunk_tokens(c, legacy)
            idx.append(self._chunk_index(c, ct))
            toks.extend(ct)
        return pd.concat(idx, ignore_index=True), toks

    def activations(self, sites: Sequence[str] | None = None):
        """All stored dense activations as one :class:`~circuitkit.activations.Activations`."""
        from ..activations import Activations

        self._check_complete()
        parts: dict[str, list[np.ndarray]] = {}
        for c in self._chunks():
            with np.load(self.path / c["dir"] / "acts.npz") as z:
                for s in z.files:
                    if sites is None or s in sites:
                        parts.setdefault(s, []).append(z[s])
        if not parts:
            raise ValueError(f"store {self.path} keeps no dense activations for sites {sites or self.sites}; "
                             f"stored: {self.manifest['acts_sites']} (use keep_activations=True to keep SAE sites)")
        data = {s: np.concatenate(v) for s, v in parts.items()}
        index, tokens = self._index_and_tokens()
        return Activations(data, index, tokens, self._base_meta())

    def features(self):
        """All stored SAE codes and errors as one :class:`~circuitkit.sae.Features` (FVU from chunk sums)."""
        from ..sae import Features

        self._check_complete()
        if not self.manifest["saes"]:
            raise ValueError(f"store {self.path} was written without SAEs; pass saes= to capture_to_disk")
        codes: dict[str, list] = {}
        errors: dict[str, list] = {}
        sse: dict[str, float] = {}
        ssum: dict[str, np.ndarray] = {}
        sumsq: dict[str, float] = {}
        for c in self._chunks():
            d = self.path / c["dir"]
            cc, ee = _read_codes(d)
            for s in cc:
                codes.setdefault(s, []).append(cc[s])
            for s in ee:
                errors.setdefault(s, []).append(ee[s])
            with np.load(d / "stats.npz") as z:
                for s in self.manifest["saes"]:
                    sse[s] = sse.get(s, 0.0) + float(z[f"{s}::sse"])
                    ssum[s] = ssum.get(s, 0.0) + z[f"{s}::sum"]
                    sumsq[s] = sumsq.get(s, 0.0) + float(z[f"{s}::sumsq"])
        n = self.n_rows
        fvu = {}
        for s in self.manifest["saes"]:
            denom = sumsq[s] - float(ssum[s] @ ssum[s]) / n
            fvu[s] = sse[s] / denom if denom > 0 else float("nan")
        meta = self._base_meta()
        meta.update({"sae_ids": {s: v["id"] for s, v in self.manifest["saes"].items()}, "fvu": fvu})
        codes_all = {s: sp.vstack(v, format="csr") for s, v in codes.items()}
        errors_all = {s: np.concatenate(v) for s, v in errors.items()}
        index, tokens = self._index_and_tokens()
        return Features(codes_all, errors_all, index, tokens, meta)

    def __repr__(self) -> str:
        m = self.manifest
        return (f"Store({str(self.path)!r}, model={m['model']['name']!r}, rows={self.n_rows}, "
                f"chunks={len(m['chunks'])}/{m['n_chunks']}, saes={list(m['saes'])})")


def _read_codes(d: Path) -> tuple[dict, dict]:
    codes, errors = {}, {}
    if (d / "codes.npz").is_file():
        with np.load(d / "codes.npz") as z:
            sites = sorted({k.split("::")[0] for k in z.files})
            for s in sites:
                shape = tuple(int(v) for v in z[f"{s}::shape"])
                codes[s] = sp.csr_matrix((z[f"{s}::data"], z[f"{s}::indices"], z[f"{s}::indptr"]), shape=shape)
    if (d / "errors.npz").is_file():
        with np.load(d / "errors.npz") as z:
            errors = {s: z[s] for s in z.files}
    return codes, errors


def load_store(path: str | Path) -> Store:
    """Open a store written by :func:`capture_to_disk` (``ValueError`` if ``path`` is not one)."""
    from .._io import read_versioned_json

    path = Path(path)
    manifest = read_versioned_json(path, MANIFEST, fmt=FORMAT, version=VERSION, what="circuitkit store",
                                   version_word="store")
    return Store(path, manifest)


# -- writing --------------------------------------------------------------------------------------------


def _write_json_atomic(path: Path, doc: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, default=str))
    os.replace(tmp, path)


_CHECKED = ("version", "model", "sites", "positions", "aggregate", "logit_tokens", "dtype", "input_hash", "n_prompts",
            "chunk_size", "saes", "keep_activations")


def _differences(old: dict, new: dict) -> list[str]:
    out = []
    for k in _CHECKED:
        if json.dumps(old.get(k), sort_keys=True, default=str) != json.dumps(new.get(k), sort_keys=True, default=str):
            out.append(f"{k}: stored {old.get(k)!r}, requested {new.get(k)!r}")
    return out


def _n_inputs(lm: Any, inputs: Any) -> int:
    """The number of prompts in ``inputs``, after the checks :func:`circuitkit.capturing._tokenize` makes on
    the whole input (its errors are raised as they are); nothing is tokenized here."""
    import torch

    from .inputs import tokenize as _tokenize

    if isinstance(inputs, torch.Tensor) and inputs.ndim == 2 and len(inputs):
        return int(inputs.shape[0])
    if isinstance(inputs, (list, tuple)) and inputs and (all(isinstance(x, str) for x in inputs)
                                                         or all(isinstance(x, (list, tuple)) for x in inputs)):
        return len(inputs)
    _tokenize(lm, inputs)  # raises the error capture() would
    raise ValueError(f"unsupported inputs of type {type(inputs).__name__}")  # pragma: no cover


def _tokenize_to_scratch(lm: Any, inputs: Any, n: int, chunk_size: int, scratch: Path) -> None:
    """Pass 1: tokenize ``chunk_size`` prompts at a time into ``scratch/ids-XXXXX.npy`` (the chunk's token
    ids, concatenated) and ``scratch/lens-XXXXX.npy`` (its prompt lengths); nothing is kept in memory."""
    from .inputs import tokenize as _tokenize

    for i, start in enumerate(range(0, n, chunk_size)):
        stop = min(start + chunk_size, n)
        try:
            ids, _ = _tokenize(lm, inputs[start:stop])
        except ValueError as e:
            raise ValueError(f"{e} (prompts are counted from {start} in this message)") from e
        np.save(scratch / f"lens-{i:05d}.npy", np.fromiter((len(r) for r in ids), np.int64, len(ids)))
        np.save(scratch / f"ids-{i:05d}.npy", np.concatenate([np.asarray(r, dtype=np.int64) for r in ids]))


def _scratch_hash(scratch: Path, n_chunks: int, pos_desc: Any, aggregate: Any) -> str:
    """:func:`circuitkit.activations.hash_inputs` of ``[all ids concatenated, [prompt lengths], str(pos_desc),
    aggregate]`` -- the hash :func:`circuitkit.capture` records -- fed one scratch chunk at a time."""
    total = sum(int(np.load(scratch / f"ids-{i:05d}.npy", mmap_mode="r").shape[0]) for i in range(n_chunks))
    h = hashlib.sha256()
    h.update(b"int64")
    h.update(str((total,)).encode())
    for i in range(n_chunks):
        h.update(np.ascontiguousarray(np.load(scratch / f"ids-{i:05d}.npy")).tobytes())
    # json.dumps of a list of ints, written piecewise: "[1, 2, 3]"
    h.update(b"[")
    for i in range(n_chunks):
        lens = np.load(scratch / f"lens-{i:05d}.npy").tolist()
        h.update(((", " if i else "") + ", ".join(map(str, lens))).encode())
    h.update(b"]")
    for part in (str(pos_desc), aggregate):
        h.update(json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def _release_freed_memory() -> None:
    """Return freed heap memory to the OS after a chunk (glibc ``malloc_trim``; a no-op elsewhere).

    Nothing of a chunk is kept after it is committed, but glibc raises its mmap threshold after large
    arrays are freed, so later chunk-sized arrays live on the heap and the fragmented heap is not given
    back: on the toy LM (chunk 256 prompts) the RSS between chunks crept from 599 to 747 MB over 32 chunks.
    With the trim it is the same after every chunk (563 MB)."""
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        try:
            import ctypes

            _MALLOC_TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


_MALLOC_TRIM: Any = None


def _scratch_chunk(scratch: Path, i: int) -> list[list[int]]:
    lens = np.load(scratch / f"lens-{i:05d}.npy")
    flat = np.load(scratch / f"ids-{i:05d}.npy")
    return [a.tolist() for a in np.split(flat, np.cumsum(lens)[:-1])]


def capture_to_disk(
    model: Any,
    inputs: Any,
    *,
    sites: Sequence[str],
    path: str | Path,
    saes: Mapping[str, Any] | Sequence[Any] | None = None,
    chunk_size: int = 1024,
    positions: Any = DEFAULT_POSITIONS,
    aggregate: str | None = None,
    batch_size: int = 32,
    logit_tokens: Sequence[int] | None = None,
    keep_activations: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    on_chunk: Callable[[int, int], None] | None = None,
) -> Store:
    """Capture ``sites`` over ``inputs`` ``chunk_size`` prompts at a time, writing each chunk to ``path``.

    Parameters
    ----------
    model, inputs, sites, positions, aggregate, batch_size, logit_tokens: as :func:`circuitkit.capture`.
    path: the store directory (created; resumed if it holds a store with the same provenance).
    saes: SAEs to encode with, as :func:`circuitkit.encode` takes them; their sites are added to ``sites``.
    chunk_size: prompts per chunk; with ``batch_size`` it sets the peak memory.
    keep_activations: also keep the dense activations of SAE sites (by default only their codes and
        errors are kept; sites without an SAE always keep their activations).
    overwrite: replace a store with different provenance instead of refusing it.
    on_chunk: called as ``on_chunk(chunk_index, n_chunks)`` after each chunk is committed.

    Returns the :class:`Store` (``load_store(path)``).

    Example
    -------
    >>> store = capture_to_disk("toylm", prompts, sites=["L1.resid_post", "L2.resid_post"],
    ...                         saes=load_toy_saes(), path="outputs/acts", chunk_size=512)  # doctest: +SKIP
    >>> feats = store.features()  # doctest: +SKIP
    """
    from ..sae import attach_saes
    from ..sites import validate_sites
    from .loading import load_model

    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    lm = load_model(model)
    attached = attach_saes(saes) if saes is not None else {}
    sites = validate_sites(list(dict.fromkeys([*sites, *attached])), lm.sites)
    n_prompts = _n_inputs(lm, inputs)
    n_chunks = (n_prompts + chunk_size - 1) // chunk_size
    pos_desc = positions if isinstance(positions, (str, int, list, tuple)) else getattr(positions, "__name__",
                                                                                       "callable")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_scratch(path)
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.tokens-", dir=path.parent) as scratch_dir:
        scratch = Path(scratch_dir)
        (scratch / "owner.pid").write_text(str(os.getpid()))
        _tokenize_to_scratch(lm, inputs, n_prompts, chunk_size, scratch)
        input_hash = _scratch_hash(scratch, n_chunks, pos_desc, aggregate)
        return _write_chunks(lm, scratch, path=path, sites=sites, attached=attached, n_prompts=n_prompts,
                             n_chunks=n_chunks, input_hash=input_hash, chunk_size=chunk_size, positions=positions,
                             pos_desc=pos_desc, aggregate=aggregate, batch_size=batch_size,
                             logit_tokens=logit_tokens, keep_activations=keep_activations, overwrite=overwrite,
                             progress=progress, on_chunk=on_chunk)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _remove_stale_scratch(path: Path) -> None:
    """Remove scratch directories of earlier calls on ``path`` whose process died (a killed capture cannot
    clean up after itself); directories of live processes are left alone."""
    for d in path.parent.glob(f".{path.name}.tokens-*"):
        try:
            pid = int((d / "owner.pid").read_text())
        except (OSError, ValueError):
            pid = None
        if pid is None or not _pid_alive(pid):
            logger.info("removing the stale scratch directory %s of a killed capture", d)
            shutil.rmtree(d, ignore_errors=True)


def _write_chunks(lm: Any, scratch: Path, *, path: Path, sites: list[str], attached: dict, n_prompts: int,
                  n_chunks: int, input_hash: str, chunk_size: int, positions: Any, pos_desc: Any, aggregate: Any,
                  batch_size: int, logit_tokens: Any, keep_activations: bool, overwrite: bool, progress: bool,
                  on_chunk: Callable[[int, int], None] | None) -> Store:
    """Pass 2 of :func:`capture_to_disk`: check or create the store, then capture, encode and commit each
    chunk that is not committed yet. Only the current chunk's data is held."""
    from tqdm.auto import tqdm

    from ..sae import encode
    from .capturing import capture

    acts_sites = [s for s in sites if keep_activations or s not in attached]
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "model": {"name": lm.name, "arch": lm.adapter.spec.name, "n_layers": lm.n_layers, "n_heads": lm.n_heads,
                  **model_fingerprint(lm.module)},
        "sites": sites,
        "acts_sites": acts_sites,
        "positions": pos_desc,
        "aggregate": aggregate,
        "logit_tokens": list(logit_tokens) if logit_tokens is not None else None,
        "dtype": "float32",
        "input_hash": input_hash,
        "n_prompts": n_prompts,
        "chunk_size": chunk_size,
        "saes": {s: {"id": _sae_id(sae, s), "fingerprint": sae_fingerprint(sae)} for s, sae in attached.items()},
        "keep_activations": bool(keep_activations),
        "n_chunks": n_chunks,
        "chunks": [],
    }
    done: dict[int, dict] = {}
    if (path / MANIFEST).is_file():
        old = load_store(path).manifest
        diffs = _differences(old, manifest)
        if diffs and not overwrite:
            raise ValueError(f"stale store at {path}: it was written for different " + "; ".join(diffs)
                             + ". Use another path, or overwrite=True to replace it")
        if diffs:
            shutil.rmtree(path)
        else:
            done = {c["index"]: c for c in old["chunks"] if (path / c["dir"]).is_dir()}
    elif path.exists() and any(path.iterdir()):
        if not overwrite:
            raise ValueError(f"{path} exists, is not empty and is not a circuitkit store; use another path "
                             "or overwrite=True")
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    # anything on disk that the manifest does not list as committed is redone
    for d in path.glob("chunk-*"):
        if d.is_dir() and (d.name.endswith(".partial") or int(d.name.split("-")[1]) not in done):
            shutil.rmtree(d)
    manifest["chunks"] = [done[i] for i in sorted(done)]
    _write_json_atomic(path / MANIFEST, manifest)
    if done:
        logger.info("resuming store %s: %d of %d chunks already committed", path, len(done), n_chunks)

    bar = tqdm(total=n_chunks - len(done), desc="capture_to_disk", unit="chunk",
               disable=not progress or n_chunks - len(done) < 2)
    for i in range(n_chunks):
        if i in done:
            continue
        start, stop = i * chunk_size, min((i + 1) * chunk_size, n_prompts)
        pos_rule = positions
        if callable(positions):
            def pos_rule(p, t, _f=positions, _s=start):
                return _f(p + _s, t)
        acts = capture(lm, _scratch_chunk(scratch, i), sites=sites, positions=pos_rule, aggregate=aggregate,
                       batch_size=batch_size, logit_tokens=logit_tokens, progress=False)
        prompt = acts.index["prompt"].to_numpy(np.int64) + start
        position = acts.index["position"].to_numpy(np.int64)
        tmp = path / f"chunk-{i:05d}.partial"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        (tmp / "tokens.json").write_text(json.dumps(acts.tokens))
        np.savez(tmp / "index.npz", prompt=prompt, position=position)
        np.savez(tmp / "acts.npz", **{s: acts[s] for s in acts_sites})
        if attached:
            feats = encode(acts, attached)
            arrays, stats = {}, {}
            for s, c in feats.codes.items():
                c = sp.csr_matrix(c)
                arrays.update({f"{s}::data": c.data, f"{s}::indices": c.indices, f"{s}::indptr": c.indptr,
                               f"{s}::shape": np.asarray(c.shape, dtype=np.int64)})
                x = acts[s].astype(np.float64)
                err = feats.errors[s]
                stats.update({f"{s}::sse": np.float64((err.astype(np.float64) ** 2).sum()),
                              f"{s}::sum": x.sum(0), f"{s}::sumsq": np.float64((x**2).sum())})
            np.savez(tmp / "codes.npz", **arrays)
            np.savez(tmp / "errors.npz", **feats.errors)
            np.savez(tmp / "stats.npz", **stats)
            del feats, arrays, stats
        rows = len(prompt)
        del acts, prompt, position
        final = path / f"chunk-{i:05d}"
        os.replace(tmp, final)
        done[i] = {"index": i, "prompts": [start, stop], "rows": rows, "dir": final.name}
        manifest["chunks"] = [done[k] for k in sorted(done)]
        _write_json_atomic(path / MANIFEST, manifest)
        _release_freed_memory()
        bar.update(1)
        if on_chunk is not None:
            on_chunk(i, n_chunks)
    bar.close()
    return Store(path, manifest)


__all__ = ["Store", "capture_to_disk", "load_store", "model_fingerprint", "sae_fingerprint"]
