"""The HTML report of a real (tiny) run, opened in a headless Chromium: every plot is there,
loaded and not blank; the page needs nothing outside itself.

The browser is the headless Chromium that ``scripts/setup.sh`` unpacks into ``.browser/`` from
the npm package @sparticuz/chromium (Playwright's own download host is not reachable from the
machines this project runs on); ``SIAMKIT_CHROMIUM`` may point at another Chromium or Chrome.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.distance import pdist

from siamkit.analysis.run_eval import metric_images, representation_metrics
from siamkit.analysis.run_report import write_report
from siamkit.checkpoints import load_method
from siamkit.data.datasets import Splits, load_digits
from siamkit.errors import CheckpointError
from siamkit.eval.features import extract_features
from siamkit.recipes import load_config
from siamkit.train import pretrain

# Lightning's note that the fresh run folder is not empty (the report test writes no logs there).
pytestmark = pytest.mark.filterwarnings("ignore:.*exists and is not empty.*")

REPO = Path(__file__).resolve().parents[2]
IMAGES = 300  # images for the metrics and the t-SNE map (digits' test split has 360)

TINY = [
    "data.dataset=digits",
    "augment.size=16",
    "backbone.name=small_cnn",
    "backbone.width=0.25",
    "method.proj_layers=2",
    "method.proj_dim=64",
    "method.proj_hidden_dim=64",
    "method.pred_hidden_dim=16",
    "optim.batch_size=64",
    "train.epochs=2",
    "train.progress_bar=false",
    "train.knn_every=1",
    "train.knn_k=10",
    "train.log_every_n_steps=5",
    "train.precision=32-true",
]


def chromium_executable() -> str:
    """The headless Chromium to drive; fails the test (never skips) with how to install it."""
    path = Path(os.environ.get("SIAMKIT_CHROMIUM") or REPO / ".browser" / "chromium")
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"no headless Chromium at {path}: run `bash scripts/setup.sh` (it unpacks the npm "
            "package @sparticuz/chromium into .browser/), or set SIAMKIT_CHROMIUM to a Chromium "
            "or Chrome binary"
        )
    return str(path)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "run"
    digits = load_digits(32)
    # 640 training images: 10 steps an epoch, two logged losses each; all 360 test images.
    splits = Splits(digits.train.subset(torch.arange(640)), digits.test)
    pretrain(load_config(overrides=[*TINY, f"train.output_dir={out}"]), splits=splits)
    return out


@pytest.fixture(scope="module")
def report(run_dir: Path) -> Path:
    return write_report(run_dir, tsne_images=IMAGES, max_images=IMAGES)


class _Tags(HTMLParser):
    """Every start tag of a page with its attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


# Runs in the page: for every <img>, whether it loaded, its natural size, and how many distinct
# colours a canvas shows after drawing it (1 would be a blank image).
_INSPECT_IMAGES = """
() => Array.from(document.images).map((img) => {
  const canvas = document.createElement("canvas");
  canvas.width = img.naturalWidth;
  canvas.height = img.naturalHeight;
  const ctx = canvas.getContext("2d");
  let colours = 0;
  if (img.naturalWidth > 0) {
    ctx.drawImage(img, 0, 0);
    const px = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
    const seen = new Set();
    for (let i = 0; i < px.length; i += 4) {
      seen.add((px[i] << 24) | (px[i + 1] << 16) | (px[i + 2] << 8) | px[i + 3]);
    }
    colours = seen.size;
  }
  return {alt: img.alt, complete: img.complete, width: img.naturalWidth,
          height: img.naturalHeight, colours: colours};
})
"""


def test_report_plots_load_in_a_headless_browser(report: Path) -> None:
    from playwright.sync_api import sync_playwright

    executable = chromium_executable()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True)
        try:
            page = browser.new_page()
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto(report.as_uri(), wait_until="load")
            images = page.evaluate(_INSPECT_IMAGES)
            title = page.title()
            headings = page.locator("h2").all_inner_texts()
            metric_cells = page.locator("table tr").all_inner_texts()
        finally:
            browser.close()
    assert [i["alt"] for i in images] == ["training curves", "t-SNE of h (test images)"]
    for img in images:
        assert img["complete"] and img["width"] > 100 and img["height"] > 100, img
        assert img["colours"] > 10, img  # drawn plots, not a blank or broken image
    # The page fetched nothing but itself (inline images are not requests).
    assert [r for r in requests if not r.startswith("data:")] == [report.as_uri()]
    assert "simsiam" in title and "small_cnn" in title
    assert {"Results", "Representation metrics", "Config"} <= set(headings)
    assert any(row.startswith("RankMe") for row in metric_cells)


def test_report_is_self_contained(report: Path, run_dir: Path) -> None:
    assert report == run_dir / "report" / "report.html"
    assert {p.name for p in report.parent.iterdir()} == {
        "report.html",
        "curves.png",
        "tsne.png",
        "representation.json",
    }
    text = report.read_text()
    parser = _Tags()
    parser.feed(text)
    tags = {t for t, _ in parser.tags}
    assert not tags & {"script", "link", "iframe", "object", "embed", "base"}
    images = [a for t, a in parser.tags if t == "img"]
    assert len(images) == 2
    for tag, attrs in parser.tags:
        assert "href" not in attrs, (tag, attrs)
        for name, value in attrs.items():
            if name != "src":  # checked below: inline data only
                assert "http" not in (value or "") and "file:" not in (value or ""), (tag, name)
    for attrs in images:
        assert (attrs["src"] or "").startswith("data:image/png;base64,")
    assert "url(" not in text  # no style sheet fetches either
    # The run's config and results are in the page.
    assert "small_cnn" in text and "knn_k: 10" in text
    results = json.loads((run_dir / "results.json").read_text())
    assert f"{results['knn_top1']:.2f}% trained vs {results['random_init_knn_top1']:.2f}%" in text


def test_report_metrics_are_representation_metrics(report: Path, run_dir: Path) -> None:
    saved = json.loads((report.parent / "representation.json").read_text())
    direct = representation_metrics(run_dir, max_images=IMAGES)
    assert saved.keys() == direct.keys()
    for part in ("h", "g"):
        assert saved[part] == pytest.approx(direct[part], rel=1e-6)
    assert direct["num_images"] == IMAGES and direct["split"] == "test"
    assert direct["h"]["dim"] == 32 and direct["g"]["dim"] == 64  # small_cnn width 0.25
    # RankMe and uniformity recomputed here from the checkpoint's own h and g(h) of the same
    # images, with numpy (RankMe [arXiv:2210.02885, Eq. 1]: exp of the entropy of the
    # l1-normalised singular values, eps 1e-7; uniformity [arXiv:2005.10242, Eq. 5], t = 2).
    cfg, method = load_method(run_dir)
    images, _ = metric_images(cfg.data, IMAGES, seed=0)
    h = extract_features(method.backbone, images, cfg.augment)
    method.projector.eval()  # g(h) of evaluation: BatchNorm on its running statistics
    with torch.no_grad():
        g = method.projector(h)
    for part, feats in (("h", h), ("g", g)):
        m = direct[part]
        x = feats.numpy().astype(np.float64)
        s = np.linalg.svd(x, compute_uv=False)
        p = s / s.sum() + 1e-7
        assert m["rankme"] == pytest.approx(float(np.exp(-(p * np.log(p)).sum())), rel=1e-6)
        unit = x / np.linalg.norm(x, axis=1, keepdims=True)
        expected = float(np.log(np.mean(np.exp(-2.0 * pdist(unit, "sqeuclidean")))))
        assert m["uniformity"] == pytest.approx(expected, rel=1e-6)
        assert m["uniformity"] < 0  # not every image on one point (that would be 0)
        assert m["alignment"] > 0  # two different augmented views (at most 4 by construction)
        assert m["collapse_std"] > 0.05
        assert f"{m['rankme']:.4g}" in report.read_text()


def test_a_missing_or_damaged_run_is_a_run_error_and_writes_nothing(
    tmp_path: Path, run_dir: Path
) -> None:
    """A run folder given to ``report`` is an input of the checkpoint kind (exit 5); every file
    is read and checked before anything is written, and the message names the bad file."""
    with pytest.raises(CheckpointError, match=r"run folder .* not found"):
        write_report(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"no metrics\.csv"):
        write_report(tmp_path / "empty")
    for name, damage in (
        ("metrics.csv", b"epoch,step,train/loss\n0,1,not-a-number\n"),
        ("metrics.csv", bytes(range(256))),
        ("results.json", b"{not json"),
        ("config.yaml", b"\xff\xfe\x00"),
    ):
        run = tmp_path / f"damaged-{name}-{len(damage)}"
        shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("report"))
        (run / name).write_bytes(damage)
        with pytest.raises(CheckpointError, match=re.escape(str(run / name))):
            write_report(run)
        assert not (run / "report").exists()  # nothing half-made
