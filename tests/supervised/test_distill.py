"""SimCLRv2 distillation: the soft-target loss against independent references, and a student
that learns from a fixed teacher on digits (self-distillation and a smaller student)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import siamkit.supervised.distill as distill_module
from siamkit.checkpoints import CONFIG_KEY
from siamkit.config import BackboneConfig, DataConfig
from siamkit.errors import CheckpointError, ConfigError
from siamkit.losses.distillation import soft_target_cross_entropy
from siamkit.supervised.classifier import load_classifier, predict_logits, topk_accuracy
from siamkit.supervised.distill import DistillConfig, distill
from siamkit.supervised.finetune import FinetuneConfig, finetune

TEACHER = BackboneConfig(name="small_cnn", width=0.5)
FAST = {"precision": "32-true", "crop_scale": (0.5, 1.0), "lr": 0.2, "accelerator": "cpu"}


# --------------------------------------------------------------------------------------------
# The loss
# --------------------------------------------------------------------------------------------
def _random_logits(seed: int, b: int = 6, c: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return 3 * torch.randn(b, c, generator=g), 3 * torch.randn(b, c, generator=g)


@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0, 4.0])
def test_loss_equals_kl_plus_teacher_entropy(temperature: float) -> None:
    """Cross-entropy = KL(P_T || P_S) + H(P_T), per image, in float64 with torch's kl_div."""
    s, t = _random_logits(int(temperature * 10))
    log_ps = F.log_softmax(s.double() / temperature, dim=1)
    log_pt = F.log_softmax(t.double() / temperature, dim=1)
    kl = F.kl_div(log_ps, log_pt, reduction="batchmean", log_target=True)
    entropy = -(log_pt.exp() * log_pt).sum(dim=1).mean()
    value = soft_target_cross_entropy(s, t, temperature)
    assert value.dtype == torch.float32 and value.shape == ()
    torch.testing.assert_close(value.double(), kl + entropy, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("temperature", [0.2, 1.0, 3.0])
def test_loss_gradient_matches_the_closed_form(temperature: float) -> None:
    """d/ds of mean_i CE = (softmax(s/tau) - softmax(t/tau)) / (tau B); the teacher gets none
    when its logits come from a no-grad pass."""
    s, t = _random_logits(1, b=4, c=7)
    s.requires_grad_(True)
    soft_target_cross_entropy(s, t, temperature).backward()
    expected = (F.softmax(s.detach() / temperature, 1) - F.softmax(t / temperature, 1)) / (
        temperature * len(s)
    )
    assert s.grad is not None
    torch.testing.assert_close(s.grad, expected, rtol=1e-5, atol=1e-7)


def test_loss_matches_a_hand_written_sum() -> None:
    """-1/B sum_i sum_y p_T log p_S with explicit exponentials (value and gradient)."""
    s, t = _random_logits(2, b=3, c=4)
    tau = 0.7
    s64 = s.double().requires_grad_(True)
    pt = torch.exp(t.double() / tau) / torch.exp(t.double() / tau).sum(1, keepdim=True)
    ps = torch.exp(s64 / tau) / torch.exp(s64 / tau).sum(1, keepdim=True)
    reference = -(pt * torch.log(ps)).sum() / len(s)
    reference.backward()
    s32 = s.clone().requires_grad_(True)
    value = soft_target_cross_entropy(s32, t, tau)
    value.backward()
    torch.testing.assert_close(value.double(), reference.detach(), rtol=1e-5, atol=1e-6)
    assert s32.grad is not None and s64.grad is not None
    torch.testing.assert_close(s32.grad.double(), s64.grad, rtol=1e-4, atol=1e-7)


def test_loss_is_smallest_when_student_matches_teacher_up_to_a_shift() -> None:
    """At s = t + c (any c per row) the loss is H(P_T), its gradient is 0, and any other
    logits give more."""
    _, t = _random_logits(3)
    shift = torch.randn(len(t), 1, generator=torch.Generator().manual_seed(1)) * 10
    matched = (t + shift).requires_grad_(True)
    at_min = soft_target_cross_entropy(matched, t, 0.5)
    at_min.backward()
    assert matched.grad is not None
    torch.testing.assert_close(matched.grad, torch.zeros_like(t), rtol=0, atol=1e-6)
    log_pt = F.log_softmax(t / 0.5, dim=1)
    torch.testing.assert_close(at_min, -(log_pt.exp() * log_pt).sum(1).mean())
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        other = t + shift + 0.5 * torch.randn(t.shape, generator=g)
        assert soft_target_cross_entropy(other, t, 0.5) > at_min


def test_loss_is_float32_for_bf16_logits_and_checks_its_input() -> None:
    s, t = _random_logits(4)
    value = soft_target_cross_entropy(s.bfloat16(), t.bfloat16(), 1.0)
    assert value.dtype == torch.float32
    torch.testing.assert_close(
        value, soft_target_cross_entropy(s.bfloat16().float(), t.bfloat16().float(), 1.0)
    )
    with pytest.raises(ValueError, match="differ in shape"):
        soft_target_cross_entropy(s, t[:, :3], 1.0)
    with pytest.raises(ValueError, match="temperature must be positive"):
        soft_target_cross_entropy(s, t, 0.0)


# --------------------------------------------------------------------------------------------
# Distillation runs
# --------------------------------------------------------------------------------------------
# One intra-op thread for the whole module; ``splits`` (600 digits) is in conftest.py.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def teacher(splits, tmp_path_factory) -> Path:
    """A classifier trained on half the labels (the scratch recipe: no pretraining needed to
    get a teacher that is clearly better than chance)."""
    out = tmp_path_factory.mktemp("teacher") / "teacher"
    cfg = FinetuneConfig(epochs=10, label_fraction=0.5, **FAST)  # type: ignore[arg-type]
    data = DataConfig(dataset="digits", decode_size=16)
    result = finetune(data, cfg, None, backbone=TEACHER, output=out, splits=splits)
    assert result.top1 > 60.0
    return out


def _digest(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def test_self_distillation_learns_from_a_fixed_teacher(teacher, splits, tmp_path, monkeypatch):
    """The student (teacher's backbone, random start) learns from soft targets alone: well
    above chance and agreeing with the teacher on most test images; the teacher's weights and
    BN statistics are unchanged, in memory and on disk."""
    loaded = []

    def spy(path, expect_backbone=None):
        model, info = load_classifier(path, expect_backbone)
        loaded.append(model)
        return model, info

    monkeypatch.setattr(distill_module, "load_classifier", spy)
    before = {k: v.clone() for k, v in load_classifier(teacher)[0].state_dict().items()}
    file_digest = _digest(teacher / "classifier.pt")
    cfg = DistillConfig(epochs=3, **FAST)  # type: ignore[arg-type]
    result = distill(teacher, None, cfg, output=tmp_path / "student", splits=splits)

    assert result.teacher_top1 > 60.0
    assert result.student_top1 > 30.0  # chance is 10%
    assert result.agreement > 50.0
    assert result.student_params == result.teacher_params
    assert result.losses[-1] < result.losses[0]
    (teacher_model,) = loaded
    after = teacher_model.state_dict()
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    assert all(not p.requires_grad for p in teacher_model.parameters())
    assert _digest(teacher / "classifier.pt") == file_digest
    # The student checkpoint is a classifier checkpoint like the teacher's.
    student, info = load_classifier(tmp_path / "student")
    assert info.kind == "distill" and info.source == str(teacher / "classifier.pt")
    assert info.backbone == TEACHER and info.from_head_layers == 0
    logits = predict_logits(student, splits.test, info.augment)
    assert topk_accuracy(logits, splits.test.labels) == pytest.approx(result.student_top1)
    assert (tmp_path / "student" / "results.json").is_file()


def test_smaller_student_with_labelled_term(teacher, splits, tmp_path) -> None:
    """Big-to-small: a half-width student (fewer parameters) distilled with Eq. 3's labelled
    term (alpha 0.5) still learns, and its checkpoint records its own backbone."""
    small = BackboneConfig(name="small_cnn", width=0.25)
    cfg = DistillConfig(epochs=3, alpha=0.5, **FAST)  # type: ignore[arg-type]
    result = distill(teacher, None, cfg, student_backbone=small, output=tmp_path, splits=splits)
    assert result.student_params < result.teacher_params / 2
    assert result.student_top1 > 25.0
    assert result.student_backbone["width"] == 0.25
    model, info = load_classifier(tmp_path, expect_backbone=small)
    assert info.backbone == small
    assert sum(p.numel() for p in model.parameters()) == result.student_params


def test_distill_from_a_pretraining_checkpoint_is_refused(tmp_path) -> None:
    fake = tmp_path / "last.ckpt"
    torch.save({CONFIG_KEY: {}, "state_dict": {}}, fake)
    with pytest.raises(CheckpointError, match=r"pretraining checkpoint.*eval finetune"):
        distill(fake, cfg=DistillConfig(accelerator="cpu"))


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"temperature": 0.0}, "temperature must be positive"),
        ({"alpha": 1.5}, r"alpha must be in \[0, 1\]"),
        ({"epochs": 0}, "epochs must be at least 1"),
    ],
)
def test_impossible_distill_config_values(change: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        DistillConfig(**change)


def test_distill_defaults() -> None:
    """Distillation only (alpha 1) at tau 1; lr 0.1 x batch / 256 for the randomly started
    student."""
    cfg = DistillConfig()
    assert cfg.alpha == 1.0 and cfg.temperature == 1.0
    assert cfg.peak_lr == pytest.approx(0.1 * cfg.batch_size / 256)
