"""Stability selection with a prediction target on the SmolLM2 demo data (160 IOI prompts, 4 SAE sites):
eBIC vs selection="stability" (defaults: 25 pairs, q=5, pi=0.6), time, edges, edges into y, E[V] bound.
Run: PYTHONPATH=. CIRCUITKIT_DATA=data OMP_NUM_THREADS=1 python benchmarks/stability_demo.py"""
import time, numpy as np, warnings, sys
warnings.filterwarnings("ignore")
from circuitkit import capture, encode, load_model
from circuitkit.datasets.real import ioi
from circuitkit.fit.lasso import CircuitLasso
from circuitkit.models.smollm2 import MODEL_NAME, load_smollm2, load_smollm2_saes
from circuitkit.runtime.capturing import next_token_logits
from circuitkit.sae import hook_to_site
model, tok = load_smollm2(); lm = load_model(model, tokenizer=tok, name=MODEL_NAME)
saes = load_smollm2_saes(); sites = [hook_to_site(h) for h in saes]
df = ioi(tok, 160, seed=0, split="test"); prompts = df["prompt"].tolist()
lg = next_token_logits(lm, prompts, batch_size=32).numpy(); rows = np.arange(len(df))
y = lg[rows, df["answer_id"].to_numpy(np.int64)] - lg[rows, df["distractor_id"].to_numpy(np.int64)]
acts = capture(lm, prompts, sites=sites, positions="last", batch_size=32, progress=False)
feats = encode(acts, saes)
for kw in [dict(), dict(selection="stability")]:
    t=time.perf_counter(); est = CircuitLasso(n_alphas=8, min_target_freq=0.05, n_jobs=1, progress=False, **kw).fit(feats, y)
    c=est.circuit_; print(kw, f"{time.perf_counter()-t:.1f}s", c.n_edges, "into y", int((c.edges.target=="y").sum()), c.meta.get("expected_false_edges_bound"))
