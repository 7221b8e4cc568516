"""Compile circuitkit's Tracr ground-truth suite and write ``data/tracr/<task>/``.

    python scripts/build_tracr.py [--out data/tracr] [--only reverse,hist] [--n-check 300]
    python scripts/build_tracr.py --holdout      # the holdout split -> data/tracr_holdout

Needs the dev extra (``tracr-pypi``, jax, haiku). Deterministic: the programs, vocabularies and
sampler seeds are fixed, and Tracr's compilation is deterministic. For every task it

1. compiles the RASP program (``compiler_bos="BOS"``, ``compiler_pad="PAD"``),
2. exports it with :func:`circuitkit.models.tracr.save_tracr_model` (weights, meta, samples, weight-
   derived ground-truth edges) which also checks that the torch port reproduces Tracr on the stored and
   on fresh random inputs,
3. cross-checks the weight-derived edges against the edges implied by Tracr's own RASP/craft graph
   (stored in ``meta["craft_edges"]``; the two must agree up to extra ``embed -> *`` edges that exist
   because components read the BOS-token and constant ``one`` dimensions, which RASP leaves implicit).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tracr.compiler import (
    assemble,
    basis_inference,
    craft_graph_to_model,
    craft_model_to_transformer,
    expr_to_craft_graph,
    lib,
    nodes,
    rasp_to_graph,
)
from tracr.craft import bases, transformers
from tracr.rasp import rasp

from circuitkit.models.tracr import save_tracr_model

BOS, PAD = "BOS", "PAD"


# --------------------------------------------------------------------------------------------------
# programs
# --------------------------------------------------------------------------------------------------


def _frac_prevs_x():
    return lib.make_frac_prevs(rasp.tokens == "x").named("frac_prevs")


def _is_vowel():
    return rasp.Map(lambda t: t in "aeiou", rasp.tokens).named("is_vowel")


def _token_value():
    # numerical MLP: categorical token -> its squared value
    return rasp.numerical(rasp.Map(lambda t: t * t / 10, rasp.tokens)).named("token_sq")


def shift_clamped(offset, sop):
    """``sop`` shifted right by ``offset``; the first ``offset`` positions read position 0.

    Unlike ``lib.shift_by`` (which leaves them ``None``), every query selects exactly one key, so the
    compiled output is well defined everywhere (``lib.shift_by``'s undefined positions give output
    scores of ~1e-8 whose argmax is float noise).
    """
    sel = rasp.Select(rasp.indices, rasp.indices, lambda k, q: k == q - offset or (q < offset and k == 0))
    return rasp.Aggregate(sel.named(f"shift{offset}_sel"), sop).named(f"shift_clamped({offset})")


def _prev_token():
    return shift_clamped(1, rasp.tokens).named("prev_token")


def _detect_abc():
    # lib.detect_pattern(tokens, "abc") with clamped shifts: at positions 0 and 1 the detectors read
    # token 0 for both 'a' and 'b', which cannot both hold, so the output there is a well-defined False.
    a = shift_clamped(2, rasp.tokens == "a")
    b = shift_clamped(1, rasp.tokens == "b")
    return (a & b & (rasp.tokens == "c")).named("detect_abc")


def _count_lt_first():
    # how many tokens are smaller than the current one (SelectorWidth with LT): the sort key of sort_unique
    smaller = rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.LT).named("smaller")
    return rasp.SelectorWidth(smaller).named("count_smaller")


def _tok_plus_idx():
    # categorical two-input MLP (SequenceMap of tokens and indices)
    return rasp.SequenceMap(lambda t, i: (t + i) % 4, rasp.tokens, rasp.indices).named("tok_plus_idx_mod4")


TASKS = {
    "reverse": {
        "make": lambda: lib.make_reverse(rasp.tokens),
        "vocab": ["a", "b", "c"],
        "max_seq_len": 5,
        "description": "Reverse the input sequence.",
        "program": "lib.make_reverse(tokens): length = SelectorWidth(Select(tokens,tokens,TRUE)); "
        "opp_idx = length - indices - 1; Aggregate(Select(indices, opp_idx, EQ), tokens)",
    },
    "hist": {
        "make": lambda: lib.make_hist(),
        "vocab": ["a", "b", "c"],
        "max_seq_len": 5,
        "description": "For each token, how many times it occurs in the input (categorical).",
        "program": "lib.make_hist(): SelectorWidth(Select(tokens, tokens, EQ))",
    },
    "length": {
        "make": lambda: lib.make_length(),
        "vocab": ["a", "b"],
        "max_seq_len": 6,
        "description": "Length of the input at every position (categorical).",
        "program": "lib.make_length(): SelectorWidth(Select(tokens, tokens, TRUE))",
    },
    "count_a": {
        "make": lambda: lib.make_count(rasp.tokens, "a"),
        "vocab": ["a", "b", "c"],
        "max_seq_len": 5,
        "description": "Number of 'a' tokens in the input, at every position (categorical).",
        "program": "lib.make_count(tokens, 'a'): SelectorWidth(Select(tokens, tokens, k == 'a'))",
    },
    "sort_unique": {
        "make": lambda: lib.make_sort_unique(rasp.tokens, rasp.tokens),
        "vocab": [1, 2, 3, 4, 5],
        "max_seq_len": 5,
        "sampler": {"kind": "distinct", "min_len": 1},
        "description": "Sort distinct tokens ascending.",
        "program": "lib.make_sort_unique(tokens, tokens): target_pos = SelectorWidth(Select(tokens,tokens,LT)); "
        "Aggregate(Select(target_pos, indices, EQ), tokens)",
    },
    "sort": {
        "make": lambda: lib.make_sort(rasp.tokens, rasp.tokens, max_seq_len=5, min_key=1),
        "vocab": [1, 2, 3, 4],
        "max_seq_len": 5,
        "description": "Sort tokens ascending (ties allowed; keys made unique by x + i/max_seq_len).",
        "program": "lib.make_sort(tokens, tokens, max_seq_len=5, min_key=1): keys = SequenceMap(x + i/5, tokens, "
        "indices); then make_sort_unique(tokens, keys)",
    },
    "sort_freq": {
        "make": lambda: lib.make_sort_freq(max_seq_len=5),
        "vocab": ["a", "b", "c"],
        "max_seq_len": 5,
        "description": "Sort tokens by descending frequency (stable).",
        "program": "lib.make_sort_freq(5): hist = -SelectorWidth(Select(tokens,tokens,EQ)); "
        "make_sort(tokens, hist, max_seq_len=5, min_key=1)",
    },
    "frac_prevs": {
        "make": _frac_prevs_x,
        "causal": True,
        "vocab": ["a", "b", "x"],
        "max_seq_len": 6,
        "description": "Fraction of tokens so far that are 'x' (numerical; causal model).",
        "program": "lib.make_frac_prevs(tokens == 'x'): numerical Aggregate(Select(indices, indices, LEQ), "
        "numerical(tokens == 'x'), default=0)",
    },
    "pair_balance": {
        "make": lambda: lib.make_pair_balance(rasp.tokens, "(", ")"),
        "causal": True,
        "vocab": ["(", ")", "a"],
        "max_seq_len": 6,
        "sampler": {"kind": "dyck", "pair": "()", "min_len": 1},
        "description": "Fraction of '(' minus fraction of ')' so far (numerical; causal model).",
        "program": "lib.make_pair_balance(tokens, '(', ')'): frac_prevs(tokens=='(') - frac_prevs(tokens==')')",
    },
    "dyck1": {
        "make": lambda: lib.make_shuffle_dyck(["()"]).named("shuffle_dyck1"),
        "vocab": ["(", ")", "a"],
        "max_seq_len": 6,
        "sampler": {"kind": "dyck", "pair": "()", "min_len": 1},
        "description": "Is the whole input a balanced parenthesis string (one pair; 'a' is filler)? (bool)",
        "program": "lib.make_shuffle_dyck(['()']): balance = pair_balance; has_neg = mean(balance < 0); "
        "last_zero = Aggregate(Select(indices, length-1, EQ), balance == 0); last_zero & ~has_neg",
    },
    "is_vowel": {
        "make": _is_vowel,
        "vocab": ["a", "b", "e", "k", "o", "z"],
        "max_seq_len": 5,
        "description": "Is the token a vowel? (bool; an MLP-only program)",
        "program": "Map(lambda t: t in 'aeiou', tokens)",
    },
    "token_sq": {
        "make": _token_value,
        "vocab": [0, 1, 2, 3, 4],
        "max_seq_len": 5,
        "description": "t*t/10 for each token t (numerical; a categorical->numerical MLP only).",
        "program": "numerical(Map(lambda t: t*t/10, tokens))",
    },
    "prev_token": {
        "make": _prev_token,
        "vocab": ["a", "b", "c", "d"],
        "max_seq_len": 5,
        "description": "The previous token (the first token copies itself). An attention-only program.",
        "program": "Aggregate(Select(indices, indices, k == q - 1 or (q < 1 and k == 0)), tokens)",
    },
    "detect_abc": {
        "make": _detect_abc,
        "vocab": ["a", "b", "c"],
        "max_seq_len": 6,
        "sampler": {"kind": "plant", "pattern": ["a", "b", "c"], "min_len": 1},
        "description": "True at the last token of each occurrence of 'abc' (bool).",
        "program": "like lib.detect_pattern(tokens, 'abc') with shifts that read position 0 instead of None: "
        "shift_clamped(2, tokens=='a') & shift_clamped(1, tokens=='b') & (tokens=='c'), where "
        "shift_clamped(o, s) = Aggregate(Select(indices, indices, k == q - o or (q < o and k == 0)), s)",
    },
    "count_less_freq": {
        "make": lambda: lib.make_count_less_freq(2),
        "vocab": ["a", "b", "c", "d"],
        "max_seq_len": 5,
        "description": "Number of positions whose token occurs at most 2 times (categorical).",
        "program": "lib.make_count_less_freq(2): hist = SelectorWidth(Select(tokens,tokens,EQ)); "
        "SelectorWidth(Select(hist, hist, lambda k, q: k <= 2))",
    },
    "count_smaller": {
        "make": _count_lt_first,
        "vocab": [1, 2, 3, 4],
        "max_seq_len": 5,
        "description": "For each token, how many tokens in the input are smaller (categorical).",
        "program": "SelectorWidth(Select(tokens, tokens, LT))",
    },
    "tok_plus_idx": {
        "make": _tok_plus_idx,
        "vocab": [0, 1, 2, 3],
        "max_seq_len": 5,
        "description": "(token + position) mod 4 (categorical; a two-input MLP only).",
        "program": "SequenceMap(lambda t, i: (t + i) % 4, tokens, indices)",
    },
}


def _same_as_prev():
    # a head (clamped previous token) feeding a two-input MLP that also reads the token itself
    prev = shift_clamped(1, rasp.tokens)
    return rasp.SequenceMap(lambda p, t: p == t, prev, rasp.tokens).named("same_as_prev")


def _detect_ba():
    a = shift_clamped(1, rasp.tokens == "b")
    return (a & (rasp.tokens == "a")).named("detect_ba")


# Holdout split (``--holdout``, written to ``data/tracr_holdout``): programs that CircuitLasso's
# defaults were NOT chosen on. Add tasks here only; never tune defaults on their results.
HOLDOUT_TASKS = {
    "hist4": {
        "make": lambda: lib.make_hist(),
        "vocab": ["a", "b", "c", "d"],
        "max_seq_len": 6,
        "description": "hist with a 4-token vocab and length 6.",
        "program": "lib.make_hist(): SelectorWidth(Select(tokens, tokens, EQ))",
    },
    "count_b": {
        "make": lambda: lib.make_count(rasp.tokens, "b"),
        "vocab": ["a", "b", "c", "d"],
        "max_seq_len": 6,
        "description": "Number of 'b' tokens in the input, at every position (categorical).",
        "program": "lib.make_count(tokens, 'b')",
    },
    "sort_unique6": {
        "make": lambda: lib.make_sort_unique(rasp.tokens, rasp.tokens),
        "vocab": [2, 4, 6, 8, 10, 12],
        "max_seq_len": 6,
        "sampler": {"kind": "distinct", "min_len": 1},
        "description": "Sort distinct even tokens ascending (6-token vocab, length 6).",
        "program": "lib.make_sort_unique(tokens, tokens)",
    },
    "dyck2": {
        "make": lambda: lib.make_shuffle_dyck2().named("shuffle_dyck2"),
        "vocab": ["(", ")", "{", "}"],
        "max_seq_len": 5,
        "sampler": {"kind": "dyck", "pair": "()", "min_len": 1},
        "description": "Is the input a shuffle of balanced '()' and '{}' strings? (bool)",
        "program": "lib.make_shuffle_dyck2(): make_shuffle_dyck(['()', '{}'])",
    },
    "same_as_prev": {
        "make": _same_as_prev,
        "vocab": ["a", "b", "c"],
        "max_seq_len": 6,
        "description": "Is the token equal to the previous one (the first compares with itself)? (bool)",
        "program": "SequenceMap(p == t, shift_clamped(1, tokens), tokens)",
    },
    "detect_ba": {
        "make": _detect_ba,
        "vocab": ["a", "b", "c", "d"],
        "max_seq_len": 6,
        "sampler": {"kind": "plant", "pattern": ["b", "a"], "min_len": 1},
        "description": "True at the 'a' of each occurrence of 'ba' (bool).",
        "program": "shift_clamped(1, tokens=='b') & (tokens=='a')",
    },
}


# --------------------------------------------------------------------------------------------------
# compilation that keeps the graph (same steps as tracr.compiler.compiling.compile_rasp_to_model)
# --------------------------------------------------------------------------------------------------


def compile_with_graph(program, vocab, max_seq_len, causal=False):
    extracted = rasp_to_graph.extract_rasp_graph(program)
    graph, sources, sink = extracted.graph, extracted.sources, extracted.sink
    basis_inference.infer_bases(graph, sink, set(vocab), max_seq_len)
    expr_to_craft_graph.add_craft_components_to_rasp_graph(
        graph, bos_dir=bases.BasisDirection(rasp.tokens.label, BOS), mlp_exactness=100
    )
    craft_model = craft_graph_to_model.craft_graph_to_model(graph, sources)
    compiled = craft_model_to_transformer.craft_model_to_transformer(
        craft_model=craft_model,
        graph=graph,
        sink=sink,
        max_seq_len=max_seq_len,
        causal=causal,
        compiler_bos=BOS,
        compiler_pad=PAD,
    )
    return compiled, graph, sink, craft_model


def craft_edges(graph, sink, craft_model):
    """Edges implied by Tracr's RASP graph: v's craft block reads the SOps it is computed from."""
    _, module_names = assemble._get_model_config_and_module_names(craft_model)
    head_site, mlp_site = {}, {}
    for name, block in zip(module_names, craft_model.blocks):
        layer = int(name.split("layer_")[1].split("/")[0])
        if isinstance(block, transformers.MLP):
            mlp_site[id(block)] = f"L{layer}.MLP"
        else:
            for h, head in enumerate(block.as_multi().heads()):
                head_site[id(head)] = f"L{layer}.H{h}"
    # which combined MLP holds a node's MLP: match by output space
    mlp_by_out = {}
    for block in craft_model.blocks:
        if isinstance(block, transformers.MLP):
            for d in block.snd.output_space.basis:
                mlp_by_out[d] = mlp_site[id(block)]

    def sites_of(node):
        block = node.get(nodes.MODEL_BLOCK)
        if block is None:
            return None
        parts = block.blocks if isinstance(block, transformers.SeriesWithResiduals) else [block]
        first, last = [], []
        for i, part in enumerate(parts):
            if isinstance(part, transformers.MLP):
                s = [mlp_by_out[part.snd.output_space.basis[0]]]
            else:
                s = [head_site[id(h)] for h in part.as_multi().heads()]
            if i == 0:
                first = s
            last = s
        return first, last, parts

    edges = set()

    def producers(node_id):
        """Sites that write the SOp of node_id (following block-less nodes)."""
        node = graph.nodes[node_id]
        label = node[nodes.EXPR].label
        if label in (rasp.tokens.label, rasp.indices.label):
            return {"embed"}
        s = sites_of(node)
        if s is not None:
            return set(s[1])
        out = set()
        for p in graph.predecessors(node_id):
            out |= producers(p)
        return out

    def inputs(node_id):
        out = set()
        for p in graph.predecessors(node_id):
            if isinstance(graph.nodes[p][nodes.EXPR], rasp.Selector):
                out |= inputs(p)
            else:
                out |= producers(p)
        return out

    for node_id, node in graph.nodes.items():
        s = sites_of(node)
        if s is None:
            continue
        first, last, parts = s
        for u in inputs(node_id):
            for v in first:
                edges.add((u, v))
        if len(parts) == 2:  # SelectorWidth: attention then MLP
            for u in first:
                for v in last:
                    edges.add((u, v))
    for u in producers(sink[nodes.ID]):
        edges.add((u, "out"))
    return sorted(edges)


def build(name, spec, out_dir, n_check):
    t0 = time.time()
    # RASP labels carry a global, lazily drawn id (e.g. "hist_7"): reset the counter and the shared
    # `lib.length` expression so that every task's residual labels do not depend on build order.
    rasp.RASPExpr._ids = itertools.count(1)
    lib.length = lib.make_length()
    program = spec["make"]()
    compiled, graph, sink, craft_model = compile_with_graph(
        program, spec["vocab"], spec["max_seq_len"], causal=spec.get("causal", False)
    )
    cedges = craft_edges(graph, sink, craft_model)
    path = save_tracr_model(
        compiled,
        out_dir / name,
        task=name,
        vocab=spec["vocab"],
        max_seq_len=spec["max_seq_len"],
        description=spec["description"],
        program=spec["program"],
        sampler=spec.get("sampler", {"kind": "uniform", "min_len": 1}),
        n_check=n_check,
        seed=0,
        extra_meta={"craft_edges": [list(e) for e in cedges]},
    )
    meta = json.loads((path / "meta.json").read_text())
    wedges = {tuple(e) for e in meta["edges"]}
    cset = set(cedges)
    missing = cset - wedges
    extra = wedges - cset
    if missing or any(u != "embed" for u, _ in extra):
        raise RuntimeError(
            f"{name}: weight edges disagree with craft graph: missing {missing}, extra {extra}"
        )
    meta["craft_check"] = {
        "agree": True,
        "extra_embed_edges": sorted([list(e) for e in extra]),
        "note": "weight-derived edges == craft-graph edges plus the listed embed -> * edges, which exist "
        "because components read embed-written dims that RASP leaves implicit: the constant 'one' "
        "dim (MLP biases, attention to BOS) and the BOS token dim (selector-width MLPs, keys)",
    }
    (path / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(
        f"{name:16s} layers={meta['n_layers']} heads={meta['n_heads']} d_model={meta['d_model']:3d} "
        f"sites={len(meta['sites']):2d} edges={len(meta['edges']):2d} (+{len(extra)} embed-only vs craft) "
        f"{meta['output_kind']:11s} {time.time() - t0:.1f}s"
    )
    return meta


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "data" / "tracr"))
    ap.add_argument("--only", default="", help="comma-separated task names (default: all)")
    ap.add_argument("--n-check", type=int, default=300, help="fresh random inputs checked per task")
    ap.add_argument("--holdout", action="store_true",
                    help="build the holdout split (HOLDOUT_TASKS) into data/tracr_holdout unless --out")
    args = ap.parse_args(argv)
    tasks = HOLDOUT_TASKS if args.holdout else TASKS
    if args.holdout and args.out == str(ROOT / "data" / "tracr"):
        args.out = str(ROOT / "data" / "tracr_holdout")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = [n for n in args.only.split(",") if n] or list(tasks)
    unknown = [n for n in names if n not in tasks]
    if unknown:
        raise SystemExit(f"unknown tasks {unknown}; valid: {sorted(tasks)}")
    for name in names:
        if (out / name).exists():
            shutil.rmtree(out / name)
        build(name, tasks[name], out, args.n_check)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {len(names)} tasks to {out} ({size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
