"""Memory-bounded capture: stream activations and SAE codes to disk in chunks, resumable.

:func:`capture_to_disk` runs :func:`circuitkit.capture` (and :func:`circuitkit.encode` when SAEs are given)
on ``chunk_size`` prompts at a time and writes each chunk before the next starts, so peak memory is set
by ``chunk_size`` (and ``batch_size``), not by the number of prompts. :func:`load_store` opens the result;
:meth:`Store.activations` / :meth:`Store.features` return the same objects an in-memory
``capture``/``encode`` would, and :meth:`Store.iter_chunks` walks it chunk by chunk.

On-disk format (``format: "circuitkit.store"``, ``version: 1``)::

    PATH/
      manifest.json        provenance + the list of completed chunks (rewritten atomically)
      tokens.json          token strings of every prompt
      chunk-00000/         one directory per completed chunk of prompts [start, stop)
        index.npz          prompt (global prompt index), position       (int64, one entry per row)
        acts.npz           {site: float32 [rows, d]}  (sites without an SAE, or all with keep_activations)
        codes.npz          {site::data, site::indices, site::indptr, site::shape}: CSR float32 SAE codes
        errors.npz         {site: float32 [rows, d_in]}  reconstruction errors x - decode(encode(x))
        stats.npz          {site::sse, site::sum, site::sumsq}: sums that give the exact dataset FVU
      chunk-00001.partial/ a chunk being written (ignored and redone on resume)

``manifest.json`` holds ``format``, ``version``, ``model`` (name, arch, layers, heads, parameter count and
a weight fingerprint), ``sites``, ``positions``, ``aggregate``, ``logit_tokens``, ``dtype``,
``input_hash`` (the same hash :func:`circuitkit.capture` records), ``n_prompts``, ``chunk_size``,
``saes`` (``{site: {"id", "fingerprint"}}``; the fingerprint hashes the SAE's weights), ``n_chunks`` and
``chunks`` (completed chunks: ``index``, ``prompts [start, stop)``, ``rows``, ``dir``).

Resuming. A chunk is committed by renaming ``chunk-XXXXX.partial`` to ``chunk-XXXXX`` and then rewriting
the manifest; calling :func:`capture_to_disk` again with the same arguments skips committed chunks and
redoes anything else (a partial directory, or a directory the manifest does not list). If the stored
provenance differs (other inputs, model, sites, positions, SAEs or chunk size) it raises a ``ValueError``
naming each difference, unless ``overwrite=True``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

logger = logging.getLogger(__name__)

FORMAT = "circuitkit.store"
VERSION = 1
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


def model_fingerprint(module: Any, *, sample: int = 4096) -> dict:
    """Parameter count and a hash of the first ``sample`` values of every parameter tensor (cheap even for
    large models, and changes when the weights do)."""
    import torch

    h = hashlib.sha256()
    n = 0
    for name, p in module.named_parameters():
        n += p.numel()
        flat = p.detach().reshape(-1)[:sample].float().cpu().contiguous()
        h.update(name.encode())
        h.update(flat.view(torch.uint8).numpy().tobytes())
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

    def _tokens(self) -> list[list[str]]:
        return json.loads((self.path / "tokens.json").read_text())

    def _base_meta(self) -> dict:
        m = self.manifest
        return {"model": m["model"]["name"], "arch": m["model"]["arch"], "n_layers": m["model"]["n_layers"],
                "n_heads": m["model"]["n_heads"], "sites": m["sites"], "positions": m["positions"],
                "aggregate": m["aggregate"], "logit_tokens": m["logit_tokens"], "n_prompts": m["n_prompts"],
                "input_hash": m["input_hash"]}

    def _chunk_index(self, d: Path, tokens: list[list[str]]) -> pd.DataFrame:
        with np.load(d / "index.npz") as z:
            prompt, pos = z["prompt"], z["position"]
        tok = [tokens[p][q] if q >= 0 else "" for p, q in zip(prompt, pos)]
        return pd.DataFrame({"prompt": prompt, "position": pos, "token": tok})

    def iter_chunks(self, *, what: str = "both") -> Iterator[tuple[Any, Any]]:
        """Yield ``(Activations | None, Features | None)`` per committed chunk (``what``: ``"activations"``,
        ``"features"`` or ``"both"``); only one chunk is in memory at a time."""
        from .activations import Activations
        from .sae import Features

        if what not in ("activations", "features", "both"):
            raise ValueError(f"unknown what={what!r}; valid: 'activations', 'features', 'both'")
        tokens = self._tokens()
        meta = self._base_meta()
        for c in sorted(self.manifest["chunks"], key=lambda c: c["index"]):
            d = self.path / c["dir"]
            index = self._chunk_index(d, tokens)
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

    def activations(self, sites: Sequence[str] | None = None):
        """All stored dense activations as one :class:`~circuitkit.activations.Activations`."""
        from .activations import Activations

        self._check_complete()
        tokens = self._tokens()
        parts: dict[str, list[np.ndarray]] = {}
        idx = []
        for c in sorted(self.manifest["chunks"], key=lambda c: c["index"]):
            d = self.path / c["dir"]
            idx.append(self._chunk_index(d, tokens))
            with np.load(d / "acts.npz") as z:
                for s in z.files:
                    if sites is None or s in sites:
                        parts.setdefault(s, []).append(z[s])
        if not parts:
            raise ValueError(f"store {self.path} keeps no dense activations for sites {sites or self.sites}; "
                             f"stored: {self.manifest['acts_sites']} (use keep_activations=True to keep SAE sites)")
        data = {s: np.concatenate(v) for s, v in parts.items()}
        return Activations(data, pd.concat(idx, ignore_index=True), tokens, self._base_meta())

    def features(self):
        """All stored SAE codes and errors as one :class:`~circuitkit.sae.Features` (FVU from chunk sums)."""
        from .sae import Features

        self._check_complete()
        if not self.manifest["saes"]:
            raise ValueError(f"store {self.path} was written without SAEs; pass saes= to capture_to_disk")
        tokens = self._tokens()
        codes: dict[str, list] = {}
        errors: dict[str, list] = {}
        idx = []
        sse: dict[str, float] = {}
        ssum: dict[str, np.ndarray] = {}
        sumsq: dict[str, float] = {}
        for c in sorted(self.manifest["chunks"], key=lambda c: c["index"]):
            d = self.path / c["dir"]
            idx.append(self._chunk_index(d, tokens))
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
        return Features(codes_all, errors_all, pd.concat(idx, ignore_index=True), tokens, meta)

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
    from ._io import read_versioned_json

    path = Path(path)
    manifest = read_versioned_json(path, MANIFEST, fmt=FORMAT, version=VERSION, what="circuitkit store",
                                   version_word="store")
    return Store(path, manifest)


# -- writing --------------------------------------------------------------------------------------------


def _write_json_atomic(path: Path, doc: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, default=str))
    os.replace(tmp, path)


_CHECKED = ("model", "sites", "positions", "aggregate", "logit_tokens", "dtype", "input_hash", "n_prompts",
            "chunk_size", "saes", "keep_activations")


def _differences(old: dict, new: dict) -> list[str]:
    out = []
    for k in _CHECKED:
        if json.dumps(old.get(k), sort_keys=True, default=str) != json.dumps(new.get(k), sort_keys=True, default=str):
            out.append(f"{k}: stored {old.get(k)!r}, requested {new.get(k)!r}")
    return out


def capture_to_disk(
    model: Any,
    inputs: Any,
    *,
    sites: Sequence[str],
    path: str | Path,
    saes: Mapping[str, Any] | Sequence[Any] | None = None,
    chunk_size: int = 1024,
    positions: Any = "all",
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
    from tqdm.auto import tqdm

    from .activations import hash_inputs
    from .capturing import _tokenize, capture, load_model
    from .sae import _attach, encode
    from .sites import validate_sites

    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    lm = load_model(model)
    attached = _attach(saes) if saes is not None else {}
    sites = validate_sites(list(dict.fromkeys([*sites, *attached])), lm.sites)
    ids, toks = _tokenize(lm, inputs)
    pos_desc = positions if isinstance(positions, (str, int, list, tuple)) else getattr(positions, "__name__",
                                                                                       "callable")
    input_hash = hash_inputs([np.concatenate([np.asarray(r, dtype=np.int64) for r in ids]), [len(r) for r in ids],
                              str(pos_desc), aggregate])
    n_chunks = (len(ids) + chunk_size - 1) // chunk_size
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
        "n_prompts": len(ids),
        "chunk_size": chunk_size,
        "saes": {s: {"id": _sae_id(sae, s), "fingerprint": sae_fingerprint(sae)} for s, sae in attached.items()},
        "keep_activations": bool(keep_activations),
        "n_chunks": n_chunks,
        "chunks": [],
    }
    path = Path(path)
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
    if not (path / "tokens.json").is_file() or not done:
        _write_json_atomic(path / "tokens.json", toks)
    manifest["chunks"] = [done[i] for i in sorted(done)]
    _write_json_atomic(path / MANIFEST, manifest)
    if done:
        logger.info("resuming store %s: %d of %d chunks already committed", path, len(done), n_chunks)

    todo = [i for i in range(n_chunks) if i not in done]
    for i in tqdm(todo, desc="capture_to_disk", unit="chunk", disable=not progress or len(todo) < 2):
        start, stop = i * chunk_size, min((i + 1) * chunk_size, len(ids))
        pos_rule = positions
        if callable(positions):
            def pos_rule(p, t, _f=positions, _s=start):
                return _f(p + _s, t)
        acts = capture(lm, ids[start:stop], sites=sites, positions=pos_rule, aggregate=aggregate,
                       batch_size=batch_size, logit_tokens=logit_tokens, progress=False)
        prompt = acts.index["prompt"].to_numpy(np.int64) + start
        position = acts.index["position"].to_numpy(np.int64)
        tmp = path / f"chunk-{i:05d}.partial"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
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
            del feats
        rows = len(prompt)
        del acts
        final = path / f"chunk-{i:05d}"
        os.replace(tmp, final)
        done[i] = {"index": i, "prompts": [start, stop], "rows": rows, "dir": final.name}
        manifest["chunks"] = [done[k] for k in sorted(done)]
        _write_json_atomic(path / MANIFEST, manifest)
        if on_chunk is not None:
            on_chunk(i, n_chunks)
    return Store(path, manifest)


__all__ = ["Store", "capture_to_disk", "load_store", "model_fingerprint", "sae_fingerprint"]
