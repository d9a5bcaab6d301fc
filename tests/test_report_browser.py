"""report.html in a real browser: headless Chromium renders every figure (no broken images).

Two checks: (1) the page itself reports, after ``load``, how many ``<img>`` elements are
complete with a non-zero natural size (a marker read back with ``--dump-dom``); (2) a
screenshot of the page is a real picture, not a blank or near-blank canvas.
Skipped only when no Chromium is installed (Debian package ``chromium``; CI installs it).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from hessian_powerlaw.analysis import ModelAnalysis, analyze_operator, versions
from hessian_powerlaw.io import atomic_write_json
from hessian_powerlaw.operators import MatrixOperator
from hessian_powerlaw.report.html import write_report

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium on PATH (Debian: apt-get install chromium)"
)

# Appended to a copy of the report: the page checks its own images once everything loaded.
CHECK_SCRIPT = """
<script>
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var broken = images.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
  var marker = document.createElement("pre");
  marker.id = "hpl-image-check";
  marker.textContent = "HPL-IMAGES total=" + images.length + " broken=" + broken.length +
    " widths=" + images.map(function (i) { return i.naturalWidth; }).join(",");
  document.body.appendChild(marker);
});
</script>
"""


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    command = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={profile}", *args,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A report with three figures (rank plot, CDF, density) of a known power-law spectrum."""
    root = tmp_path_factory.mktemp("report")
    gen = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(100, 100, generator=gen, dtype=torch.float64))
    values = torch.cat([5.0 / torch.arange(1, 51, dtype=torch.float64), torch.zeros(50)])
    analysis = analyze_operator(
        MatrixOperator(q @ torch.diag(values) @ q.T), k=40, trace_matvecs=12, density=True
    )
    result = ModelAnalysis(model="synthetic", data="matrix", checkpoint=None, num_samples=0,
                           params="all", analysis=analysis, blocks={}, evaluation={},
                           config={}, versions=versions(), seconds=analysis.seconds)  # fmt: skip
    atomic_write_json(root / "spectrum.json", result)
    return write_report(root)


def test_every_image_renders(report: Path, tmp_path: Path) -> None:
    checked = tmp_path / "checked.html"
    checked.write_text(report.read_text().replace("</body>", CHECK_SCRIPT + "</body>"))
    done = chromium("--virtual-time-budget=10000", "--dump-dom", checked.as_uri(),
                    profile=tmp_path / "profile")  # fmt: skip
    match = re.search(r"HPL-IMAGES total=(\d+) broken=(\d+) widths=([\d,]*)", done.stdout)
    assert match, f"no marker in the DOM; chromium said: {done.stderr[-2000:]}"
    total, broken = int(match.group(1)), int(match.group(2))
    widths = [int(w) for w in match.group(3).split(",") if w]
    assert total == 3 and broken == 0
    assert all(w >= 600 for w in widths)  # the PNGs are 704 px wide


def test_screenshot_is_not_blank(report: Path, tmp_path: Path) -> None:
    import matplotlib.image as mpimg

    shot = tmp_path / "shot.png"
    done = chromium(f"--screenshot={shot}", "--window-size=1200,3000", report.as_uri(),
                    profile=tmp_path / "profile")  # fmt: skip
    assert shot.is_file(), f"no screenshot; chromium said: {done.stderr[-2000:]}"
    pixels = mpimg.imread(shot)[..., :3]
    assert pixels.shape[:2] == (3000, 1200)
    ink = np.mean(pixels.mean(axis=2) < 0.9)  # fraction of clearly non-white pixels
    assert ink > 0.02, f"only {ink:.3%} of the page is drawn"
    # the figures are where the page's upper part is: its top half carries the ink
    top = np.mean(pixels[:1500].mean(axis=2) < 0.9)
    assert top > 0.03
