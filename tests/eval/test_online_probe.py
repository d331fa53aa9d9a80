"""The online linear probe: learns from detached features, leaves the encoder's training alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from siamkit.data.datasets import ImageSet, Splits, load_digits
from siamkit.data.loader import Batch
from siamkit.encoders import create_backbone
from siamkit.errors import ConfigError, DataError
from siamkit.eval.online_probe import OnlineLinearProbe
from siamkit.methods import create_method
from siamkit.recipes import load_config
from siamkit.train import pretrain
from siamkit.train.loop import PretrainModule
from tests.train.test_loop import SMALL

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*self.trainer.*reference is not registered.*"),
    pytest.mark.filterwarnings("ignore:.*exists and is not empty.*"),
]


def test_update_learns_a_separable_problem_and_ignores_unlabelled_rows() -> None:
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 8, generator=g) * 4
    y = torch.arange(3).repeat(40)
    h = centres[y] + torch.randn(120, 8, generator=g)
    probe = OnlineLinearProbe(8, 3, lr=0.1)
    first = probe.update(h, y)["loss"]
    for _ in range(30):
        last = probe.update(h, y)["loss"]
    assert last < first * 0.2
    assert probe.accuracy(h, y) > 95
    before = [p.clone() for p in probe.parameters()]
    assert probe.update(h, torch.full_like(y, -1)) == {}  # no labels: no step
    assert all(torch.equal(a, b) for a, b in zip(before, probe.parameters(), strict=True))


def test_probe_does_not_change_the_encoders_gradients(tmp_path: Path) -> None:
    """Same seed, same batch: the method's gradients are identical with the probe on and off,
    while the probe's own weights move."""
    splits = load_digits(32)
    images, labels = splits.train.images[:64], splits.train.labels[:64]  # type: ignore[index]
    grads = {}
    for on in (False, True):
        cfg = load_config(
            overrides=[*SMALL, f"train.output_dir={tmp_path}", f"train.online_probe={on}"]
        )
        torch.manual_seed(0)
        method = create_method(create_backbone(cfg.backbone), cfg.method)
        module = PretrainModule(cfg, method, steps_per_epoch=10, num_classes=10)
        torch.manual_seed(1)  # same augmentation draws in both runs
        batch = Batch(images, labels, torch.arange(64), torch.zeros(64, dtype=torch.bool))
        out = module.training_step(batch, 0)
        out["loss"].backward()
        grads[on] = {
            n: p.grad.clone() for n, p in module.method.named_parameters() if p.grad is not None
        }
        if on:
            assert module.probe is not None
            assert module.probe.fc.weight.grad is None  # its own optimiser stepped and cleared
            assert all(p.grad is None for p in module.probe.parameters())
    assert grads[False].keys() == grads[True].keys() and grads[False]
    for name, g in grads[False].items():
        torch.testing.assert_close(grads[True][name], g, rtol=0, atol=0, msg=name)


def test_pretrain_reports_the_probes_held_out_accuracy(tmp_path: Path) -> None:
    cfg = load_config(
        overrides=[
            *SMALL,
            f"train.output_dir={tmp_path}",
            "train.online_probe=true",
            "train.epochs=2",
        ]
    )
    result = pretrain(cfg, splits=load_digits(32))
    assert result.online_probe_top1 is not None
    assert result.online_probe_top1 > 50  # 10 classes: chance is 10%
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0]
    assert "train/online_probe_top1" in header


def test_probe_needs_labels_and_a_positive_lr(tmp_path: Path) -> None:
    digits = load_digits(32)
    unlabelled = Splits(ImageSet(digits.train.images), None)
    cfg = load_config(overrides=[*SMALL, f"train.output_dir={tmp_path}", "train.online_probe=true"])
    with pytest.raises(DataError, match="online_probe needs labelled"):
        pretrain(cfg, splits=unlabelled)
    with pytest.raises(ConfigError, match="online_probe_lr must be positive"):
        load_config(overrides=[*SMALL, "train.online_probe_lr=0"])
