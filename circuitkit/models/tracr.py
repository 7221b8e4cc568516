"""Tracr-compiled transformers as plain torch modules, with weight-derived ground-truth circuits.

Tracr (DeepMind's RASP compiler) turns a RASP program into transformer weights. circuitkit ships a
suite of compiled programs under ``data/tracr/<task>/`` (``weights.npz`` + ``meta.json``; see
``data/tracr/README.md``) and this module loads them as torch models. Neither tracr nor jax is needed
at runtime; only :func:`save_tracr_model` (the exporter) imports tracr, lazily.

Module layout (circuitkit's capture code finds sites by these attribute names)::

    TracrTransformer
      .embed            ids [B,T] -> token_embed[ids] + pos_embed[arange(T)]          site ``embed``
      .layers[l]        TracrBlock: x = x + attn(x); x = x + mlp(x)
        .attn           TracrAttention; .attn.head_out (nn.Identity) is called on the
                        stacked per-head outputs [B,T,H,d_model]                    sites ``L{l}.H{h}``
        .mlp            TracrMLP: relu(x W1 + b1) W2 + b2                            site ``L{l}.MLP``
      .unembed          resid [B,T,d] -> resid @ U  [B,T,n_out]                      site ``out``

Tracr specifics reproduced exactly: no layer norm; attention logits divided by ``sqrt(key_size)``;
masked logits set to ``-1e30`` (causal models only; Tracr's compiled models have no padding mask);
ReLU MLPs; position ``0`` (BOS) has a zero positional embedding; the "unembedding" is a projection
of the residual onto the output space (argmax for categorical outputs).

Example::

    >>> from circuitkit.models.tracr import load_tracr_task
    >>> task = load_tracr_task("reverse")
    >>> task.run([["a", "b", "c"]])
    [['BOS', 'c', 'b', 'a']]
"""

from __future__ import annotations

import json
import logging
import math
import os
import random as _random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

logger = logging.getLogger(__name__)

FORMAT = "circuitkit.tracr"
VERSION = 1
from .._paths import DATA_ENV_VAR, data_root  # noqa: F401

EDGE_DERIVATION = (
    "u -> v iff u precedes v in computation order (embed < L0 heads < L0.MLP < L1 heads < ... < out; "
    "heads of one layer never connect) and some residual dimension has a nonzero entry in u's write "
    "matrix (embed: any row of token_embed/pos_embed; head: its rows of W_O; MLP: linear_2 columns) and "
    "a nonzero entry in v's read matrix (head: its columns of W_Q, W_K or W_V; MLP: linear_1; out: "
    "the unembedding projection). Components whose weights are identically zero are dropped."
)


# --------------------------------------------------------------------------------------------------
# torch modules
# --------------------------------------------------------------------------------------------------


def _param(x: np.ndarray | Tensor, dtype: torch.dtype) -> nn.Parameter:
    return nn.Parameter(torch.as_tensor(np.asarray(x)).to(dtype), requires_grad=False)


class TracrEmbed(nn.Module):
    """Token + positional embedding (site ``embed``)."""

    def __init__(self, token_embed: np.ndarray, pos_embed: np.ndarray, *, dtype: torch.dtype):
        super().__init__()
        self.token_embed = _param(token_embed, dtype)  # [n_tokens, d_model]
        self.pos_embed = _param(pos_embed, dtype)  # [max_seq_len + 1, d_model]

    def forward(self, ids: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_model"]:
        pos = torch.arange(ids.shape[-1], device=ids.device)
        return self.token_embed[ids] + self.pos_embed[pos]


class TracrAttention(nn.Module):
    """Tracr's multi-head attention. ``head_out`` is called on the per-head residual contributions."""

    def __init__(self, w: Mapping[str, np.ndarray], *, n_heads: int, causal: bool, dtype: torch.dtype):
        super().__init__()
        self.n_heads = int(n_heads)
        self.causal = bool(causal)
        self.W_Q, self.b_Q = _param(w["query_w"], dtype), _param(w["query_b"], dtype)
        self.W_K, self.b_K = _param(w["key_w"], dtype), _param(w["key_b"], dtype)
        self.W_V, self.b_V = _param(w["value_w"], dtype), _param(w["value_b"], dtype)
        self.W_O, self.b_O = _param(w["linear_w"], dtype), _param(w["linear_b"], dtype)
        self.d_head = self.W_Q.shape[1] // self.n_heads
        self.head_out = nn.Identity()

    def _heads(self, x: Tensor, w: Tensor, b: Tensor) -> Float[Tensor, "batch pos head d_head"]:
        return (x @ w + b).reshape(*x.shape[:-1], self.n_heads, self.d_head)

    def pattern(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch head qpos kpos"]:
        """Attention weights (after softmax)."""
        q = self._heads(x, self.W_Q, self.b_Q)
        k = self._heads(x, self.W_K, self.b_K)
        logits = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(self.d_head)
        if self.causal:
            t = x.shape[-2]
            mask = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
            logits = torch.where(mask, logits, torch.full_like(logits, -1e30))
        return torch.softmax(logits, dim=-1)

    def per_head(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos head d_model"]:
        """Each head's ``z @ W_O[h]`` (without the output bias, which Tracr sets to zero)."""
        v = self._heads(x, self.W_V, self.b_V)
        z = torch.einsum("bhts,bshd->bthd", self.pattern(x), v)
        w_o = self.W_O.reshape(self.n_heads, self.d_head, -1)
        return torch.einsum("bthd,hdm->bthm", z, w_o)

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        stacked = self.head_out(self.per_head(x))
        return stacked.sum(dim=2) + self.b_O


class TracrMLP(nn.Module):
    """``relu(x W1 + b1) W2 + b2`` (site ``L{l}.MLP``)."""

    def __init__(self, w: Mapping[str, np.ndarray], *, dtype: torch.dtype):
        super().__init__()
        self.W_in, self.b_in = _param(w["linear_1_w"], dtype), _param(w["linear_1_b"], dtype)
        self.W_out, self.b_out = _param(w["linear_2_w"], dtype), _param(w["linear_2_b"], dtype)

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        return torch.relu(x @ self.W_in + self.b_in) @ self.W_out + self.b_out


class TracrUnembed(nn.Module):
    """Projection of the residual onto the output space (site ``out``)."""

    def __init__(self, unembed: np.ndarray, *, dtype: torch.dtype):
        super().__init__()
        self.W_U = _param(unembed, dtype)  # [d_model, n_out]

    def forward(self, resid: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos n_out"]:
        return resid @ self.W_U


class TracrBlock(nn.Module):
    def __init__(self, attn: TracrAttention, mlp: TracrMLP):
        super().__init__()
        self.attn = attn
        self.mlp = mlp

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        x = x + self.attn(x)
        x = x + self.mlp(x)
        return x


class TracrTransformer(nn.Module):
    """A Tracr-compiled model in torch; ``forward(ids) -> [batch, pos, n_out]``.

    For categorical outputs the last dim holds the output-space scores (decode with argmax); for
    numerical outputs ``n_out == 1`` and it holds the value.
    """

    def __init__(
        self,
        weights: Mapping[str, np.ndarray],
        *,
        n_layers: int,
        n_heads: int,
        causal: bool,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        self.n_layers = int(n_layers)
        self.n_heads = int(n_heads)
        self.causal = bool(causal)
        self.embed = TracrEmbed(weights["token_embed"], weights["pos_embed"], dtype=dtype)
        blocks = []
        for l in range(self.n_layers):
            attn = TracrAttention(
                _layer_weights(weights, l, "attn"), n_heads=n_heads, causal=causal, dtype=dtype
            )
            mlp = TracrMLP(_layer_weights(weights, l, "mlp"), dtype=dtype)
            blocks.append(TracrBlock(attn, mlp))
        self.layers = nn.ModuleList(blocks)
        self.unembed = TracrUnembed(weights["unembed"], dtype=dtype)
        self.d_model = int(self.embed.token_embed.shape[1])

    def residual(self, ids: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_model"]:
        """The final residual stream (Tracr's ``transformer_output``)."""
        x = self.embed(ids)
        for block in self.layers:
            x = block(x)
        return x

    def forward(self, ids: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos n_out"]:
        x = self.embed(ids)
        for block in self.layers:
            x = block(x)
        return self.unembed(x)


def _layer_weights(weights: Mapping[str, np.ndarray], layer: int, kind: str) -> dict[str, np.ndarray]:
    prefix = f"layer_{layer}/{kind}/"
    return {k[len(prefix) :].replace("/", "_"): v for k, v in weights.items() if k.startswith(prefix)}


# --------------------------------------------------------------------------------------------------
# ground-truth edges from weights
# --------------------------------------------------------------------------------------------------


def _nz_rows(m: np.ndarray, tol: float) -> np.ndarray:
    m = np.asarray(m)
    return np.abs(m).reshape(m.shape[0], -1).max(axis=1) > tol if m.size else np.zeros(m.shape[0], bool)


def component_io(
    weights: Mapping[str, np.ndarray], *, n_layers: int, n_heads: int, tol: float = 0.0
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Residual dimensions each non-empty component reads and writes.

    Returns ``{site: (reads, writes)}`` in computation order, with boolean masks over ``d_model``
    (``embed`` reads nothing, ``out`` writes nothing). Heads/MLPs whose weights are all zero
    (Tracr's padding) are omitted.
    """
    te, pe = np.asarray(weights["token_embed"]), np.asarray(weights["pos_embed"])
    d = te.shape[1]
    io: dict[str, tuple[np.ndarray, np.ndarray]] = {
        "embed": (np.zeros(d, bool), _nz_rows(te.T, tol) | _nz_rows(pe.T, tol))
    }
    for l in range(n_layers):
        a = _layer_weights(weights, l, "attn")
        dh = a["query_w"].shape[1] // n_heads
        for h in range(n_heads):
            cols = slice(h * dh, (h + 1) * dh)
            reads = (
                _nz_rows(a["query_w"][:, cols], tol)
                | _nz_rows(a["key_w"][:, cols], tol)
                | _nz_rows(a["value_w"][:, cols], tol)
            )
            writes = _nz_rows(a["linear_w"][cols].T, tol)
            if reads.any() or writes.any():
                io[f"L{l}.H{h}"] = (reads, writes)
        m = _layer_weights(weights, l, "mlp")
        reads, writes = (
            _nz_rows(m["linear_1_w"], tol),
            _nz_rows(m["linear_2_w"].T, tol) | (np.abs(m["linear_2_b"]) > tol),
        )
        if reads.any() or writes.any():
            io[f"L{l}.MLP"] = (reads, writes)
    io["out"] = (_nz_rows(np.asarray(weights["unembed"]), tol), np.zeros(d, bool))
    return io


def _rank(site: str) -> tuple[float, int]:
    if site == "embed":
        return (-1.0, 0)
    if site == "out":
        return (math.inf, 0)
    layer, rest = site[1:].split(".", 1)
    return (float(layer), 0 if rest.startswith("H") else 1)


def derive_edges(
    weights: Mapping[str, np.ndarray], *, n_layers: int, n_heads: int, tol: float = 0.0
) -> tuple[list[str], list[tuple[str, str]]]:
    """Ground-truth (sites, edges) of a Tracr-compiled model, from its weights alone.

    ``u -> v`` iff ``u`` runs strictly before ``v`` (heads of one layer are parallel) and ``u`` writes
    a residual dimension that ``v`` reads. ``weights`` uses the keys of ``weights.npz`` (see
    :func:`weights_from_tracr_params`). Sites are returned in computation order, edges sorted by
    (source, target) order.
    """
    io = component_io(weights, n_layers=n_layers, n_heads=n_heads, tol=tol)
    sites = list(io)
    edges = []
    for j, v in enumerate(sites):
        for u in sites[:j]:
            if _rank(u) >= _rank(v):
                continue
            if (io[u][1] & io[v][0]).any():
                edges.append((u, v))
    order = {s: i for i, s in enumerate(sites)}
    edges.sort(key=lambda e: (order[e[0]], order[e[1]]))
    return sites, edges


# --------------------------------------------------------------------------------------------------
# tasks
# --------------------------------------------------------------------------------------------------


#: Task splits. ``"suite"`` is the embedded suite that circuitkit's defaults were developed on;
#: ``"holdout"`` holds further programs (``scripts/build_tracr.py --holdout``) on which no default was
#: chosen, for an honest estimate of accuracy off the home suite. The two are disjoint by name.
SPLITS = ("suite", "holdout")
_SPLIT_DIRS = {"suite": "tracr", "holdout": "tracr_holdout"}


def data_dir(split: str = "suite") -> Path:
    """The directory of a task split: ``<data root>/tracr`` (``"suite"``) or ``<data root>/tracr_holdout``
    (``"holdout"``); see :func:`circuitkit._paths.data_root`."""
    if split not in _SPLIT_DIRS:
        raise ValueError(f"unknown Tracr split {split!r}; valid: {list(SPLITS)}")
    return data_root() / _SPLIT_DIRS[split]


def list_tracr_tasks(split: str = "suite") -> list[str]:
    """Names of the Tracr tasks of ``split`` (directories with a ``meta.json``; see :data:`SPLITS`)."""
    root = data_dir(split)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "meta.json").is_file())


@dataclass
class TracrTask:
    """A compiled Tracr program, its torch model and its ground-truth circuit.

    ``sites`` are the non-empty components in computation order; ``true_edges`` the weight-derived
    ground truth (see :func:`derive_edges`). Decoded outputs follow Tracr's ``compiled.apply``
    convention: position 0 holds the BOS token, then one output per input token.
    """

    name: str
    model: TracrTransformer
    meta: dict
    sites: list[str]
    true_edges: list[tuple[str, str]]
    vocab: list
    max_seq_len: int
    weights: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def bos(self) -> str:
        return self.meta["bos"]

    @property
    def output_kind(self) -> Literal["categorical", "numerical"]:
        return self.meta["output_kind"]

    @property
    def input_encoding(self) -> dict:
        return {tok: i for tok, i in self.meta["input_encoding"]}

    def encode(self, inputs: Sequence[Sequence[Any]]) -> Int[Tensor, "batch pos"]:
        """Token ids ``[batch, 1 + len]`` with BOS prepended. All sequences must have the same length
        (Tracr models have no padding mask); use :meth:`run` or ``sample_inputs(..., length=L)``."""
        enc = self.input_encoding
        lengths = {len(x) for x in inputs}
        if len(lengths) > 1:
            raise ValueError(
                f"sequences of different lengths {sorted(lengths)} cannot share a batch (Tracr models have no "
                "padding mask); group them by length, or call run(), or sample_inputs(n, seed=..., length=L)"
            )
        rows = []
        for x in inputs:
            if len(x) > self.max_seq_len:
                raise ValueError(f"sequence of length {len(x)} exceeds max_seq_len={self.max_seq_len}: {x!r}")
            bad = [t for t in x if t not in enc or t == self.bos or t == self.meta.get("pad")]
            if bad:
                raise ValueError(f"tokens {bad!r} are not in the vocab {self.vocab!r}")
            rows.append([enc[self.bos]] + [enc[t] for t in x])
        if not rows:
            return torch.zeros(0, 1, dtype=torch.long)
        return torch.tensor(rows, dtype=torch.long)

    def token_ids(self, inputs: Sequence[Sequence[Any]]) -> list[list[int]]:
        """Ragged token-id lists (BOS prepended), for :func:`circuitkit.capture`, which batches Tracr
        inputs by equal length because Tracr models have no padding mask."""
        return [self.encode([x])[0].tolist() for x in inputs]

    def decode(self, outputs: Float[Tensor, "batch pos n_out"]) -> list[list]:
        """Decode model outputs as Tracr does (argmax for categorical; the value for numerical)."""
        if self.output_kind == "categorical":
            vals = self.meta["output_encoding"]
            idx = outputs.argmax(dim=-1).tolist()
            dec = [[vals[i] for i in row] for row in idx]
        else:
            dec = outputs[..., 0].tolist()
        return [[self.bos] + row[1:] for row in dec]

    def sample_inputs(self, n: int, *, seed: int, length: int | None = None) -> list[list]:
        """``n`` input sequences from the task's sampler (see ``meta["sampler"]`` and the README).

        ``length`` fixes every sequence's length (so they can share a batch); by default lengths are
        drawn uniformly from ``[sampler.min_len, max_seq_len]``.
        """
        return sample_inputs(self.meta["sampler"], self.vocab, self.max_seq_len, n, seed=seed, length=length)

    @torch.no_grad()
    def run(self, inputs: Sequence[Sequence[Any]]) -> list[list]:
        """Decoded outputs for ragged ``inputs`` (batched by length internally)."""
        out: list[list | None] = [None] * len(inputs)
        by_len: dict[int, list[int]] = {}
        for i, x in enumerate(inputs):
            by_len.setdefault(len(x), []).append(i)
        for idx in by_len.values():
            dec = self.decode(self.model(self.encode([inputs[i] for i in idx])))
            for i, d in zip(idx, dec):
                out[i] = d
        return out  # type: ignore[return-value]


def sample_inputs(
    spec: Mapping[str, Any],
    vocab: Sequence[Any],
    max_seq_len: int,
    n: int,
    *,
    seed: int,
    length: int | None = None,
) -> list[list]:
    """Draw inputs according to a sampler spec (``{"kind": ..., "min_len": ...}``).

    Kinds: ``uniform`` (i.i.d. uniform tokens); ``distinct`` (uniform without replacement: no repeated
    token); ``dyck`` (half the sequences are balanced strings over ``spec["pair"]`` padded with
    ``spec.get("filler")`` tokens, the rest uniform); ``plant`` (uniform, and with probability 1/2 the
    pattern ``spec["pattern"]`` is written at a random offset).
    """
    rng = _random.Random(seed)
    kind = spec.get("kind", "uniform")
    min_len = int(spec.get("min_len", 1))
    if length is not None and not 1 <= length <= max_seq_len:
        raise ValueError(f"length must be in [1, {max_seq_len}], got {length}")
    vocab = list(vocab)
    res = []
    for _ in range(n):
        t = length if length is not None else rng.randint(min_len, max_seq_len)
        if kind == "uniform":
            x = [rng.choice(vocab) for _ in range(t)]
        elif kind == "distinct":
            if t > len(vocab):
                raise ValueError(f"'distinct' sampler cannot draw {t} distinct tokens from {len(vocab)}")
            x = rng.sample(vocab, t)
        elif kind == "dyck":
            open_, close = spec["pair"]
            if rng.random() < 0.5:
                x, depth = [], 0
                for i in range(t):
                    remaining = t - i
                    if depth > 0 and (depth >= remaining or rng.random() < 0.5):
                        x.append(close)
                        depth -= 1
                    elif depth < remaining - 1:
                        x.append(open_)
                        depth += 1
                    else:
                        x.append(rng.choice([tok for tok in vocab if tok not in (open_, close)] or [close]))
            else:
                x = [rng.choice(vocab) for _ in range(t)]
        elif kind == "plant":
            x = [rng.choice(vocab) for _ in range(t)]
            pat = list(spec["pattern"])
            if len(pat) <= t and rng.random() < 0.5:
                o = rng.randint(0, t - len(pat))
                x[o : o + len(pat)] = pat
        else:
            raise ValueError(f"unknown sampler kind {kind!r}; valid: uniform, distinct, dyck, plant")
        res.append(x)
    return res


def _resolve(name_or_path: str | os.PathLike) -> Path:
    p = Path(name_or_path)
    if (p / "meta.json").is_file():
        return p
    for split in SPLITS:
        if str(name_or_path) in list_tracr_tasks(split):
            return data_dir(split) / str(name_or_path)
    raise ValueError(
        f"unknown Tracr task {str(name_or_path)!r}: not a directory with meta.json and not one of the "
        f"embedded tasks {list_tracr_tasks()} or holdout tasks {list_tracr_tasks('holdout')} "
        f"(data dir: {data_dir()})"
    )


def load_tracr_task(name_or_path: str | os.PathLike, *, dtype: torch.dtype = torch.float32) -> TracrTask:
    """Load an embedded task by name (suite or holdout split, see :func:`list_tracr_tasks`) or a directory in the same format
    (e.g. written by :func:`save_tracr_model`)."""
    path = _resolve(name_or_path)
    meta = json.loads((path / "meta.json").read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path / 'meta.json'} is not a {FORMAT} file (format={meta.get('format')!r})")
    if int(meta.get("version", 0)) > VERSION:
        raise ValueError(f"{path} has format version {meta['version']}; this circuitkit reads <= {VERSION}")
    with np.load(path / "weights.npz") as z:
        weights = {k: z[k] for k in z.files}
    model = TracrTransformer(
        weights, n_layers=meta["n_layers"], n_heads=meta["n_heads"], causal=meta["causal"], dtype=dtype
    ).eval()
    return TracrTask(
        name=meta["task"],
        model=model,
        meta=meta,
        sites=list(meta["sites"]),
        true_edges=[tuple(e) for e in meta["edges"]],
        vocab=list(meta["vocab"]),
        max_seq_len=int(meta["max_seq_len"]),
        weights=weights,
    )


# --------------------------------------------------------------------------------------------------
# exporter (imports tracr / jax lazily)
# --------------------------------------------------------------------------------------------------


def weights_from_tracr_params(compiled_model: Any) -> dict[str, np.ndarray]:
    """Flatten a Tracr ``AssembledTransformerModel``'s params (plus its unembedding) to float32 arrays.

    Keys: ``token_embed``, ``pos_embed``, ``layer_{l}/attn/{query,key,value,linear}/{w,b}``,
    ``layer_{l}/mlp/{linear_1,linear_2}/{w,b}``, ``unembed`` (``[d_model, n_out]``).
    """
    import haiku as hk
    import jax.numpy as jnp

    params = compiled_model.params
    w: dict[str, np.ndarray] = {
        "token_embed": np.asarray(params["token_embed"]["embeddings"], np.float32),
        "pos_embed": np.asarray(params["pos_embed"]["embeddings"], np.float32),
    }
    for mod, p in params.items():
        if not mod.startswith("transformer/"):
            continue
        for k, v in p.items():
            w[f"{mod[len('transformer/') :]}/{k}"] = np.asarray(v, np.float32)
    d = w["token_embed"].shape[1]

    @hk.without_apply_rng
    @hk.transform
    def _unembed(x):
        return compiled_model.get_compiled_model().unembed(x, use_unembed_argmax=False)

    u = np.asarray(_unembed.apply(params, jnp.eye(d, dtype=jnp.float32)[None]))[0]
    w["unembed"] = (u[:, None] if u.ndim == 1 else u).astype(np.float32)
    return w


def _jsonable(v: Any) -> Any:
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.bool_,)):
        return bool(v)
    return v


def save_tracr_model(
    compiled_model: Any,
    path: str | os.PathLike,
    *,
    task: str,
    vocab: Sequence[Any] | None = None,
    max_seq_len: int | None = None,
    description: str = "",
    program: str = "",
    sampler: Mapping[str, Any] | None = None,
    n_samples: int = 50,
    n_raw: int = 5,
    n_check: int = 300,
    seed: int = 0,
    extra_meta: Mapping[str, Any] | None = None,
    atol: float = 1e-4,
) -> Path:
    """Export a Tracr-compiled model (``compile_rasp_to_model(...)``) to ``path`` in circuitkit's format.

    Writes ``weights.npz`` and ``meta.json`` (ground-truth sites/edges from :func:`derive_edges`,
    ``n_samples`` sampled inputs with Tracr's decoded outputs, and for the first ``n_raw`` of them the
    final residual and the unembedded scores). Then reloads the directory and checks that the torch
    model reproduces Tracr on the stored samples and on ``n_check`` fresh ones (decoded outputs equal,
    categorical; values within ``atol``, numerical); raises ``RuntimeError`` otherwise.

    The model must have been compiled with a string BOS token (``compiler_bos``); ``apply`` is called
    on ``[bos, *x]``. ``sampler`` is a spec for :func:`sample_inputs` (default: uniform).
    """
    import numpy as _np

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    in_enc = compiled_model.input_encoder
    bos, pad = in_enc.bos_token, in_enc.pad_token
    cfg = compiled_model.model_config
    weights = weights_from_tracr_params(compiled_model)
    if max_seq_len is None:
        max_seq_len = weights["pos_embed"].shape[0] - 1
    if vocab is None:
        vocab = sorted((t for t in in_enc.encoding_map if t not in (bos, pad)), key=repr)
    vocab = [_jsonable(t) for t in vocab]
    sampler = dict(sampler or {"kind": "uniform", "min_len": 1})
    categorical = compiled_model.output_encoder is not None and hasattr(
        compiled_model.output_encoder, "encoding_map"
    )
    out_vals = None
    if categorical:
        enc = compiled_model.output_encoder.encoding_map
        out_vals = [None] * len(enc)
        for val, i in enc.items():
            out_vals[i] = _jsonable(val)
    sites, edges = derive_edges(weights, n_layers=cfg.num_layers, n_heads=cfg.num_heads)
    labels = [str(x) for x in compiled_model.residual_labels]
    io = component_io(weights, n_layers=cfg.num_layers, n_heads=cfg.num_heads)
    edge_dims = {f"{u}->{v}": [labels[i] for i in np.flatnonzero(io[u][1] & io[v][0])] for u, v in edges}

    def tracr_apply(x):
        o = compiled_model.apply([bos, *x])
        dec = [_jsonable(v) for v in o.decoded]
        return dec, _np.asarray(o.transformer_output[0], _np.float32)

    inputs = sample_inputs(sampler, vocab, max_seq_len, n_samples, seed=seed)
    samples = []
    for i, x in enumerate(inputs):
        dec, resid = tracr_apply(x)
        s: dict[str, Any] = {"input": x, "output": dec}
        if i < n_raw:
            s["residual"] = resid.tolist()
            s["logits"] = (resid @ weights["unembed"]).tolist()
        samples.append(s)

    meta = {
        "format": FORMAT,
        "version": VERSION,
        "task": task,
        "description": description,
        "program": program,
        "vocab": vocab,
        "max_seq_len": int(max_seq_len),
        "bos": bos,
        "pad": pad,
        "causal": bool(cfg.causal),
        "input_encoding": [[_jsonable(t), int(i)] for t, i in in_enc.encoding_map.items()],
        "output_encoding": out_vals,
        "output_kind": "categorical" if categorical else "numerical",
        "n_layers": int(cfg.num_layers),
        "n_heads": int(cfg.num_heads),
        "d_model": int(weights["token_embed"].shape[1]),
        "d_head": int(cfg.key_size),
        "d_mlp": int(cfg.mlp_hidden_size),
        "residual_labels": list(compiled_model.residual_labels),
        "sites": sites,
        "edges": [list(e) for e in edges],
        "edge_derivation": EDGE_DERIVATION,
        "edge_dims": edge_dims,
        "constant_edges": [[u, v] for u, v in edges if set(edge_dims[f"{u}->{v}"]) <= {"one"}],
        "sampler": sampler,
        "samples": samples,
        **dict(extra_meta or {}),
    }
    _np.savez_compressed(path / "weights.npz", **weights)
    (path / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")

    # verify the torch port against Tracr
    loaded = load_tracr_task(path)
    fresh = sample_inputs(sampler, vocab, max_seq_len, n_check, seed=seed + 1)
    mism = []
    margin = math.inf
    for x in [s["input"] for s in samples] + fresh:
        ref, ref_resid = tracr_apply(x)
        ids = loaded.encode([x])
        with torch.no_grad():
            scores = loaded.model(ids)
            got = loaded.decode(scores)[0]
            resid = loaded.model.residual(ids)[0].numpy()
        if categorical and scores.shape[-1] > 1 and ids.shape[1] > 1:
            top = scores[0, 1:].topk(2, dim=-1).values
            margin = min(margin, float((top[:, 0] - top[:, 1]).min()))
        if not outputs_match(ref, got, categorical=categorical, atol=atol) or not _np.allclose(
            resid, ref_resid, atol=atol, rtol=1e-5
        ):
            mism.append((x, ref, got))
    if mism:
        raise RuntimeError(f"{task}: torch port disagrees with Tracr on {len(mism)} inputs, e.g. {mism[:3]}")
    if categorical:
        meta["min_margin"] = margin if math.isfinite(margin) else None
        (path / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
        if margin < 1e-3:
            logger.warning(
                "%s: the argmax margin between the two best outputs falls to %.3g on checked inputs; decoded "
                "outputs there depend on float noise (an undefined RASP value?)",
                task,
                margin,
            )
    logger.info("exported %s to %s (%d sites, %d edges)", task, path, len(sites), len(edges))
    return path


def outputs_match(ref: Sequence[Any], got: Sequence[Any], *, categorical: bool, atol: float = 1e-4) -> bool:
    """Decoded outputs agree: exactly (categorical) or within ``atol`` after the BOS slot (numerical)."""
    if categorical:
        return list(ref) == list(got)
    if len(ref) != len(got) or ref[0] != got[0]:
        return False
    return bool(np.allclose(np.asarray(ref[1:], float), np.asarray(got[1:], float), atol=atol))


__all__ = [
    "TracrAttention",
    "TracrBlock",
    "TracrEmbed",
    "TracrMLP",
    "TracrTask",
    "TracrTransformer",
    "TracrUnembed",
    "component_io",
    "data_dir",
    "derive_edges",
    "list_tracr_tasks",
    "load_tracr_task",
    "outputs_match",
    "sample_inputs",
    "save_tracr_model",
    "weights_from_tracr_params",
]
