"""The exported page opens in headless Chromium, offline, and the screenshot shows the graph.

Chromium comes from Debian's packages: if ``chromium`` is not on PATH and we are root, the session fixture
runs ``apt-get install -y chromium`` (after ``apt-get update``). Elsewhere, install it first (see the
error message).
"""

import os
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from circuitkit.circuit import Circuit, feature_node
from circuitkit.viz.figure import POS_COLOR, export_html, export_png

APT = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]


@pytest.fixture(scope="session")
def chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update"], check=True, env=env, capture_output=True, timeout=600)
        subprocess.run(APT, check=True, env=env, capture_output=True, timeout=900)
        path = shutil.which("chromium")
    if path is None:
        pytest.fail("headless Chromium is needed for this test: run `apt-get update && apt-get install -y chromium` "
                    "(as root, Debian/Ubuntu) or put a `chromium` on PATH")
    return path


def _circuit():
    rng = np.random.default_rng(0)
    sites = ["L0.resid_post", "L1.resid_post", "L2.resid_post"]
    names = [feature_node(s, p) for s in sites for p in range(6)]
    src, tgt = [], []
    for i in range(2):
        for a in range(6):
            for b in rng.choice(6, 2, replace=False):
                src.append(feature_node(sites[i], a))
                tgt.append(feature_node(sites[i + 1], int(b)))
    w = rng.uniform(0.1, 1, len(src)) * rng.choice([-1, 1], len(src))
    edges = pd.DataFrame({"source": src, "target": tgt, "weight": w})
    nodes = pd.DataFrame({"node": names, "site": [n.split("/")[0] for n in names], "kind": "feature",
                          "label": [f"tok{i}" for i in range(len(names))]})
    path = pd.concat([edges.assign(alpha=a, score=edges["weight"].abs()).query("score >= @a") for a in (0.5, 0.1)])
    return Circuit(nodes, edges, path, {"alpha": 0.1, "path_alphas": [0.5, 0.1]})


def _screenshot(chromium, url, png, tmp_path):
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--host-resolver-rules=MAP * ~NOTFOUND",  # any network request would fail
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={png}", "--window-size=1200,800", url]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    from PIL import Image

    return np.asarray(Image.open(png).convert("RGB")).astype(int)


def _blueish(px):
    """Pixels close to the positive-edge blue (POS_COLOR, drawn semi-transparent on white)."""
    assert POS_COLOR == "#2563eb"
    return (px[..., 2] > 150) & (px[..., 0] < 170) & (px[..., 2] - px[..., 0] > 60)


def test_exported_page_renders_offline_in_headless_chromium(chromium, tmp_path):
    page = export_html(_circuit(), tmp_path / "circuit.html")
    text = page.read_text()
    assert not re.search(r"<script[^>]+src=[\"']?(https?:)?//", text), "the page must not load scripts"
    assert not re.search(r"<link[^>]+href=[\"']?(https?:)?//", text), "the page must not load stylesheets"
    px = _screenshot(chromium, page.resolve().as_uri(), tmp_path / "shot.png", tmp_path)
    assert px.shape[:2] == (800, 1200)
    graph = px[80:700, 50:1150]  # the plot area, below the title and above the slider
    assert graph.std() > 10, "the plot area is blank"
    colours = {tuple(c) for c in graph.reshape(-1, 3)[::7]}
    assert len(colours) > 50
    assert _blueish(graph).sum() > 200, "no positive (blue) edges were drawn"
    # a control: a page with no plot renders as blank under the same check
    blank = tmp_path / "blank.html"
    blank.write_text("<html><body style='background:#fff'></body></html>")
    bpx = _screenshot(chromium, blank.resolve().as_uri(), tmp_path / "blank.png", tmp_path)
    assert bpx[80:700, 50:1150].std() < 1


def test_export_png_with_kaleido(chromium, tmp_path):
    png = export_png(_circuit(), tmp_path / "circuit.png", width=900, height=600)
    from PIL import Image

    px = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert px.shape[:2] == (600, 900)
    assert px.std() > 10 and _blueish(px).sum() > 100
