"""`python -m circuitkit demo` runs end to end on the embedded assets and writes what it promises, from a
*non-editable* install (``pip install .``) in a fresh venv, run outside the repository: the embedded models
travel inside the package (``circuitkit.data``)."""

import json
import os
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from circuitkit.circuit import Circuit

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed_python(tmp_path_factory):
    """A fresh venv with circuitkit installed from a built wheel (not editable). Its dependencies come from
    the test environment's site-packages through a ``.pth`` path entry (appended after the venv's own
    site-packages, so the installed circuitkit wins), which keeps the test offline and fast."""
    env = tmp_path_factory.mktemp("fresh") / "venv"
    venv.EnvBuilder(with_pip=True).create(env)
    py = env / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    deps = [p for p in site.getsitepackages() if Path(p).is_dir()]
    Path(purelib, "zz_test_deps.pth").write_text("\n".join(deps) + "\n")
    # the venv's bundled setuptools (ensurepip's) may predate the one the build needs: use the test env's
    subprocess.run([str(py), "-m", "pip", "uninstall", "--quiet", "-y", "setuptools"], capture_output=True)
    proc = subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--no-index", str(ROOT)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return py


def test_demo_cli_writes_outputs(tmp_path, installed_python):
    out = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if k not in ("CIRCUITKIT_DATA", "PYTHONPATH")}
    where = subprocess.run([str(installed_python), "-c", "import circuitkit, circuitkit._paths as p; "
                            "print(circuitkit.__file__); print(p.data_root())"], capture_output=True, text=True,
                           cwd=tmp_path, env=env, check=True).stdout.split()
    assert not where[0].startswith(str(ROOT)) and not where[1].startswith(str(ROOT)), where  # the installed copy
    proc = subprocess.run([str(installed_python), "-m", "circuitkit", "demo", "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=900, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("circuit.json", "edges.csv", "circuit.html"):
        assert (out / name).is_file(), name
    circuit = Circuit.load(out / "circuit.json")
    assert circuit.n_edges > 0 and (circuit.nodes["kind"] == "feature").any()
    # stability selection: every edge carries its selection probability, and the bound is stated
    assert circuit.meta["selection"] == "stability" and circuit.meta["expected_false_edges_bound"] > 0
    assert circuit.edges["probability"].between(0.6 - 1e-9, 1.0 + 1e-9).all()   # sums of 1/20: 0.6 may be 0.59999...
    assert "expected false edges <=" in proc.stdout
    assert (out / "circuit_page.html").stat().st_size <= 2_000_000
    assert "edge AUROC" in proc.stdout and "Strongest feature edges" in proc.stdout
    auroc = float(proc.stdout.split("edge AUROC")[1].split()[0])
    assert auroc > 0.8
    html = (out / "circuit.html").read_text()
    assert "<script src=\"http" not in html
    json.loads((out / "circuit.json").read_text())


def test_cli_refuses_unknown_commands():
    proc = subprocess.run([sys.executable, "-m", "circuitkit", "frobnicate"], capture_output=True, text=True)
    assert proc.returncode != 0 and "invalid choice" in proc.stderr
