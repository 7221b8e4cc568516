"""SFC node effects vs exact single-feature mean ablation on the toy LM (one SAE site, L2.resid_post, 8 IOI prompts).

Run: PYTHONPATH=. CIRCUITKIT_DATA=data OMP_NUM_THREADS=1 python benchmarks/sfc_single_feature.py
Prints: Pearson r (exact vs attrib), r (exact vs IG), mean |exact - attrib|, mean |exact - IG|, mean |exact|.
"""
import time

import numpy as np
import torch

from circuitkit.baselines.sfc import sfc_circuit
from circuitkit.datasets.templates import ioi
from circuitkit.faithfulness import feature_faithfulness
from circuitkit.models.toylm import load_toy_lm, load_toy_saes

model, tok = load_toy_lm(); saes = load_toy_saes(["blocks.2.hook_resid_post"])
df = ioi(8, seed=0)
enc = [tok(p)["input_ids"] for p in df.prompt]
groups={}
for i,e in enumerate(enc): groups.setdefault(len(e),[]).append(i)
x=[torch.tensor([enc[i] for i in g]) for g in groups.values()]
a=[torch.tensor([tok.convert_tokens_to_ids(df.answer[i]) for i in g]) for g in groups.values()]
d=[torch.tensor([tok.convert_tokens_to_ids(df.distractor[i]) for i in g]) for g in groups.values()]
t=time.time()
ca=sfc_circuit(model, saes, x, answer=a, distractor=d, edges=False)
ci=sfc_circuit(model, saes, x, answer=a, distractor=d, edges=False, method="ig", steps=10)
print("sfc", time.time()-t)
n=ca.nodes[ca.nodes.kind=="feature"].sort_values("abs_effect",ascending=False).head(30)
t=time.time()
ex=[]
for node in n.node:
    r=feature_faithfulness(model, x, [node], saes, ablation="mean", metric="logit_diff", answer=a, distractor=d)
    ex.append(r["m_full"]-r["m_complement"])
print("exact", time.time()-t)
ex=np.array(ex); at=n.effect.to_numpy(); ig=ci.nodes.set_index("node").loc[n.node,"effect"].to_numpy()
print(np.corrcoef(ex,at)[0,1], np.corrcoef(ex,ig)[0,1], np.abs(ex-at).mean(), np.abs(ex-ig).mean(), np.abs(ex).mean())
print(np.round(np.c_[ex,at,ig][:10],3))
