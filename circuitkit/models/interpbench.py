"""InterpBench (Gupta, Arcuschin et al. 2024) for users with internet: released models and edge files.

InterpBench publishes one folder per case in the Hugging Face repo ``cybershiptrooper/InterpBench``
(e.g. ``"3"``, ``"ioi"``), each with

* ``ll_model.pth``: a TransformerLens ``HookedTransformer`` state dict (``embed.W_E``, ``pos_embed.W_pos``,
  ``blocks.{l}.attn.W_Q [n_heads, d_model, d_head]``, ..., ``unembed.W_U``);
* ``ll_model_cfg.pkl``: its ``HookedTransformerConfig`` (pickled dict or object);
* ``edges.pkl``: the ground-truth circuit, a list of ``(source_hook, target_hook)`` pairs in
  TransformerLens names, e.g. ``("blocks.0.hook_mlp_out", "blocks.1.hook_q_input[2]")``.

:func:`parse_interpbench_edges` maps those hook-level edges onto circuitkit's component sites
(``hook_embed``/``hook_pos_embed``/``blocks.0.hook_resid_pre`` -> ``embed``; ``attn.hook_result[h]`` and
``hook_{q,k,v}_input[h]`` -> ``L{l}.H{h}``; ``hook_mlp_out``/``hook_mlp_in`` -> ``L{l}.MLP``; the last
``hook_resid_post`` -> ``out``; edges inside one component, e.g. ``hook_q_input -> hook_q``, are dropped).
:func:`model_from_state_dict` loads a state dict into circuitkit's Tracr-style module (no LayerNorm,
ReLU MLPs; other configurations raise ``ValueError``), so the ground-truth bench methods apply unchanged.

Example (needs internet and ``huggingface_hub``)::

    case = load_interpbench_case("3")
    circuit = discover("eap", case.model, clean_ids, corrupt_ids, sites=case.sites)
"""

from __future__ import annotations

import logging
import pickle
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..sites import sort_sites

logger = logging.getLogger(__name__)

HF_REPO = "cybershiptrooper/InterpBench"
FILES = ("ll_model.pth", "ll_model_cfg.pkl", "edges.pkl")

_HEAD = re.compile(r"^blocks\.(\d+)\.(?:attn\.hook_result|hook_[qkv]_input|attn\.hook_[qkvz]|attn\.hook_pattern)"
                   r"\[(\d+)\]$")
_MLP = re.compile(r"^blocks\.(\d+)\.(?:hook_mlp_out|hook_mlp_in|mlp\.hook_pre|mlp\.hook_post)$")
_RESID = re.compile(r"^blocks\.(\d+)\.hook_resid_(pre|post|mid)$")


def hook_to_component(hook: str, *, n_layers: int) -> str:
    """The component site of a TransformerLens hook name (module docstring); ``ValueError`` otherwise."""
    h = hook.strip()
    if h in ("hook_embed", "hook_pos_embed", "embed", "pos_embed"):
        return "embed"
    m = _HEAD.match(h)
    if m:
        return f"L{int(m.group(1))}.H{int(m.group(2))}"
    m = _MLP.match(h)
    if m:
        return f"L{int(m.group(1))}.MLP"
    m = _RESID.match(h)
    if m:
        layer, kind = int(m.group(1)), m.group(2)
        if kind == "pre" and layer == 0:
            return "embed"
        if kind == "post" and layer == n_layers - 1:
            return "out"
    raise ValueError(
        f"cannot map hook {hook!r} to a component site; known forms: hook_embed, hook_pos_embed, "
        "blocks.0.hook_resid_pre, blocks.L.attn.hook_result[h], blocks.L.hook_{q,k,v}_input[h], "
        "blocks.L.hook_mlp_{in,out}, blocks.<last>.hook_resid_post"
    )


def parse_interpbench_edges(edges: Iterable[tuple[str, str]] | str | Path, *,
                            n_layers: int) -> list[tuple[str, str]]:
    """Component-level edges from InterpBench hook edges (a list of pairs or a path to ``edges.pkl``)."""
    if isinstance(edges, (str, Path)):
        path = Path(edges)
        if not path.is_file():
            raise ValueError(f"no edges file at {path}")
        with path.open("rb") as f:
            edges = pickle.load(f)
    out: set[tuple[str, str]] = set()
    for e in edges:
        if not (isinstance(e, (tuple, list)) and len(e) == 2):
            raise ValueError(f"InterpBench edges are (source_hook, target_hook) pairs, got {e!r}")
        u = hook_to_component(str(e[0]), n_layers=n_layers)
        v = hook_to_component(str(e[1]), n_layers=n_layers)
        if u != v:
            out.add((u, v))
    sites = sort_sites({x for e in out for x in e})
    order = {s: i for i, s in enumerate(sites)}
    return sorted(out, key=lambda e: (order[e[0]], order[e[1]]))


def _cfg_dict(cfg: Any) -> dict:
    if isinstance(cfg, Mapping):
        return dict(cfg)
    if hasattr(cfg, "to_dict"):
        return dict(cfg.to_dict())
    return dict(vars(cfg))


def model_from_state_dict(state: Mapping[str, Any], cfg: Any):
    """A :class:`~circuitkit.models.tracr.TracrTransformer` holding a TransformerLens state dict.

    Supports configurations without normalization and with ReLU MLPs (``normalization_type`` None,
    ``act_fn`` ``"relu"``); anything else raises ``ValueError`` naming the setting.
    """
    import torch

    from .tracr import TracrTransformer

    c = _cfg_dict(cfg)
    norm = c.get("normalization_type")
    if norm not in (None, "None"):
        raise ValueError(f"normalization_type={norm!r} is not supported (only None); convert the model first")
    act = c.get("act_fn", "relu")
    if act != "relu":
        raise ValueError(f"act_fn={act!r} is not supported (only 'relu')")
    n_layers, n_heads = int(c["n_layers"]), int(c["n_heads"])

    def arr(key: str) -> np.ndarray:
        if key not in state:
            raise ValueError(f"state dict lacks {key!r}; is this a TransformerLens HookedTransformer state dict?")
        v = state[key]
        return (v.detach().cpu().float().numpy() if isinstance(v, torch.Tensor) else np.asarray(v, np.float32))

    w: dict[str, np.ndarray] = {"token_embed": arr("embed.W_E"), "pos_embed": arr("pos_embed.W_pos"),
                                "unembed": arr("unembed.W_U")}
    d_model = w["token_embed"].shape[1]
    for layer in range(n_layers):
        p = f"blocks.{layer}."
        for name, key in (("query", "W_Q"), ("key", "W_K"), ("value", "W_V")):
            W = arr(p + f"attn.{key}")  # [H, d_model, d_head]
            w[f"layer_{layer}/attn/{name}/w"] = W.transpose(1, 0, 2).reshape(d_model, -1)
            b = state.get(p + f"attn.b_{key[-1]}")
            w[f"layer_{layer}/attn/{name}/b"] = (np.zeros(W.shape[0] * W.shape[2], np.float32) if b is None
                                                 else arr(p + f"attn.b_{key[-1]}").reshape(-1))
        WO = arr(p + "attn.W_O")  # [H, d_head, d_model]
        w[f"layer_{layer}/attn/linear/w"] = WO.reshape(-1, d_model)
        w[f"layer_{layer}/attn/linear/b"] = (arr(p + "attn.b_O") if p + "attn.b_O" in state
                                            else np.zeros(d_model, np.float32))
        w[f"layer_{layer}/mlp/linear_1/w"] = arr(p + "mlp.W_in")
        w[f"layer_{layer}/mlp/linear_1/b"] = arr(p + "mlp.b_in")
        w[f"layer_{layer}/mlp/linear_2/w"] = arr(p + "mlp.W_out")
        w[f"layer_{layer}/mlp/linear_2/b"] = arr(p + "mlp.b_out")
    b_u = state.get("unembed.b_U")
    if b_u is not None and float(np.abs(arr("unembed.b_U")).max()) > 0:
        logger.warning("unembed.b_U is nonzero and is dropped (the Tracr-style unembedding has no bias); "
                       "categorical log-probabilities shift by it")
    causal = c.get("attention_dir", "causal") == "causal"
    return TracrTransformer(w, n_layers=n_layers, n_heads=n_heads, causal=causal).eval()


@dataclass
class InterpBenchCase:
    """One InterpBench case: the model (Tracr-style module), its sites and component-level true edges."""

    name: str
    model: Any
    sites: list[str]
    true_edges: list[tuple[str, str]]
    cfg: dict = field(default_factory=dict, repr=False)
    hook_edges: list[tuple[str, str]] = field(default_factory=list, repr=False)


def load_interpbench_dir(path: str | Path, *, name: str | None = None) -> InterpBenchCase:
    """Load a case from a local folder holding InterpBench's three files (module docstring)."""
    import torch

    from ..sites import component_sites

    path = Path(path)
    missing = [f for f in FILES if not (path / f).is_file()]
    if missing:
        raise ValueError(f"{path} lacks InterpBench files {missing}; expected {list(FILES)}")
    with (path / "ll_model_cfg.pkl").open("rb") as f:
        cfg = _cfg_dict(pickle.load(f))
    state = torch.load(path / "ll_model.pth", map_location="cpu", weights_only=False)
    if hasattr(state, "state_dict"):
        state = state.state_dict()
    model = model_from_state_dict(state, cfg)
    with (path / "edges.pkl").open("rb") as f:
        hook_edges = [tuple(e) for e in pickle.load(f)]
    edges = parse_interpbench_edges(hook_edges, n_layers=int(cfg["n_layers"]))
    sites = component_sites(int(cfg["n_layers"]), int(cfg["n_heads"]))
    return InterpBenchCase(name or path.name, model, sites, edges, cfg, hook_edges)


def load_interpbench_case(case: str, *, cache_dir: str | Path | None = None, repo_id: str = HF_REPO,
                          downloader: Callable[..., str] | None = None) -> InterpBenchCase:
    """Download case ``case`` from the Hugging Face hub (``huggingface_hub.hf_hub_download``) and load it.

    ``downloader`` replaces ``hf_hub_download`` (same keyword arguments: ``repo_id, filename, subfolder,
    cache_dir``), e.g. for a mirror.
    """
    if not isinstance(case, str) or not case:
        raise ValueError(f"case must be a non-empty string such as '3' or 'ioi', got {case!r}")
    if downloader is None:
        try:
            from huggingface_hub import hf_hub_download as downloader
        except ImportError as e:  # pragma: no cover - huggingface_hub ships with transformers
            raise ValueError("load_interpbench_case needs huggingface_hub (pip install huggingface_hub)") from e
    paths = [Path(downloader(repo_id=repo_id, filename=f, subfolder=case,
                             cache_dir=None if cache_dir is None else str(cache_dir))) for f in FILES]
    folders = {p.parent for p in paths}
    if len(folders) != 1:
        raise ValueError(f"downloaded files landed in different folders {sorted(map(str, folders))}")
    return load_interpbench_dir(folders.pop(), name=case)


__all__ = [
    "HF_REPO",
    "InterpBenchCase",
    "hook_to_component",
    "load_interpbench_case",
    "load_interpbench_dir",
    "model_from_state_dict",
    "parse_interpbench_edges",
]
