"""Structure: the runtime is the only room that runs a model; models/ has no import cycle; the packages
listed in pyproject.toml are exactly the source tree's."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "circuitkit"

# what running/editing a model looks like in torch and nnsight
HOOK_CALLS = re.compile(r"\.(register_forward_hook|register_forward_pre_hook|register_full_backward_hook|"
                        r"register_full_backward_pre_hook|register_module_forward_hook|trace|session)\(")


def test_no_module_outside_runtime_registers_hooks_or_opens_a_trace():
    offenders = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG)
        if rel.parts[0] == "runtime":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if HOOK_CALLS.search(code):
                offenders.append(f"{rel}:{n}: {line.strip()}")
    assert not offenders, "hooks / nnsight traces outside circuitkit/runtime/:\n" + "\n".join(offenders)
    # and the check itself sees the runtime's own hooks
    assert HOOK_CALLS.search((PKG / "runtime" / "interventions.py").read_text())


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level and node.module:
            out.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.level and not node.module:
            out.update(a.name for a in node.names)
    return out


def test_models_layering_has_no_cycle():
    """specs <- archs <- registry <- adapters: each imports only modules to its left (at any depth)."""
    order = ["specs", "archs", "registry", "adapters"]
    models = PKG / "models"
    for i, name in enumerate(order):
        deps = _imports(models / f"{name}.py") & set(order)
        assert deps <= set(order[:i]), (name, deps)


def test_models_never_run_a_model():
    """models/ describes models: it imports nothing from runtime at module level."""
    for path in (PKG / "models").glob("*.py"):
        tree = ast.parse(path.read_text())
        top = [n for n in tree.body if isinstance(n, ast.ImportFrom) and n.level]
        assert not [n.module for n in top if n.module and n.module.startswith("runtime")], path.name


def test_pyproject_lists_every_package():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(cfg["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in PKG.rglob("__init__.py")}
    found.add("circuitkit.data")
    assert listed == found, (sorted(listed - found), sorted(found - listed))
    assert (ROOT / "data" / "__init__.py").is_file()


def test_data_root_is_the_package_resource(monkeypatch, tmp_path):
    from circuitkit import _paths

    monkeypatch.delenv(_paths.DATA_ENV_VAR, raising=False)
    root = _paths.data_root()
    assert (root / "toylm" / "config.json").is_file() and (root / "tracr").is_dir()
    monkeypatch.setenv(_paths.DATA_ENV_VAR, str(tmp_path))
    assert _paths.data_root() == tmp_path
    monkeypatch.setenv(_paths.CACHE_ENV_VAR, str(tmp_path / "cache"))
    assert _paths.cache_root() == tmp_path / "cache" and (tmp_path / "cache").is_dir()


def test_import_has_no_side_effects():
    code = ("import sys, circuitkit, circuitkit.runtime, circuitkit.models.adapters; "
            "heavy = [m for m in ('nnsight', 'sae_lens', 'celer') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_test_files_have_unique_basenames():
    """Tests live in room folders without __init__.py, so pytest needs every basename to be unique."""
    names = [p.name for p in (ROOT / "tests").rglob("test_*.py")]
    dupes = sorted({n for n in names if names.count(n) > 1})
    assert not dupes, dupes
