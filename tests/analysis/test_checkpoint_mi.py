"""``siamkit eval mi`` and ``train.mi_every`` on a tiny digits run."""

from __future__ import annotations

import json
import math

import pytest

from siamkit.cli import main

TINY = [
    "--dataset", "digits", "--epochs", "2", "--batch-size", "64", "--no-progress",
    "--set", "augment.size=16", "backbone.name=small_cnn", "backbone.width=0.25",
    "method.proj_dim=32", "method.proj_hidden_dim=64", "method.pred_hidden_dim=16",
    "train.knn_every=0", "train.precision=32-true", "train.mi_every=1", "train.mi_images=1000",
]  # fmt: skip


@pytest.fixture(scope="module")
def mi_run(tmp_path_factory, one_thread):
    out = tmp_path_factory.mktemp("mi") / "run"
    assert main(["pretrain", *TINY, "--output", str(out)]) == 0
    return out


def test_mi_every_logs_and_keeps_the_history(mi_run):
    results = json.loads((mi_run / "results.json").read_text())
    epochs = [e for e, _ in results["mi_history"]]
    assert epochs == [1, 2]
    assert all(math.isfinite(v) for _, v in results["mi_history"])
    assert "val/mi_two_view" in (mi_run / "metrics.csv").read_text()


def test_eval_mi_trained_against_random_init(mi_run, capsys):
    args = [
        "eval",
        "mi",
        "--checkpoint",
        str(mi_run),
        "--max-images",
        "400",
        "--steps",
        "300",
        "--json",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    trained = json.loads(out.strip().splitlines()[-1])
    assert "I(h(v1); h(v2))" in out and "I(h; y)" in out
    assert main([*args, "--random-init"]) == 0
    random = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert random["random_init"] and not trained["random_init"]
    assert trained["label_entropy"] == pytest.approx(math.log(10), abs=0.02)  # balanced digits
    for r in (trained, random):
        # Features of digits carry much of the label (kNN on random-init features reaches 85%).
        assert 0.3 < r["h"]["label"] < r["label_entropy"] + 0.1
        assert r["h"]["two_view"] is not None and r["g"]["two_view"] is not None
    assert trained["h"] != random["h"]


def test_eval_mi_refuses_too_few_images(mi_run, capsys):
    assert main(["eval", "mi", "--checkpoint", str(mi_run), "--max-images", "5"]) == 2
    assert "--max-images: must be at least 10" in capsys.readouterr().err
