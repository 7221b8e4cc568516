"""`python -m circuitkit demo` runs end to end on the embedded assets and writes what it promises."""

import json
import subprocess
import sys

from circuitkit.circuit import Circuit


def test_demo_cli_writes_outputs(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "circuitkit", "demo", "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("circuit.json", "edges.csv", "circuit.html"):
        assert (out / name).is_file(), name
    circuit = Circuit.load(out / "circuit.json")
    assert circuit.n_edges > 0 and (circuit.nodes["kind"] == "feature").any()
    assert "edge AUROC" in proc.stdout and "Strongest feature edges" in proc.stdout
    auroc = float(proc.stdout.split("edge AUROC")[1].split()[0])
    assert auroc > 0.8
    html = (out / "circuit.html").read_text()
    assert "<script src=\"http" not in html
    json.loads((out / "circuit.json").read_text())


def test_cli_refuses_unknown_commands():
    proc = subprocess.run([sys.executable, "-m", "circuitkit", "frobnicate"], capture_output=True, text=True)
    assert proc.returncode != 0 and "invalid choice" in proc.stderr
