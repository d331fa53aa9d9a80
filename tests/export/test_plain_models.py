"""Plain models from files for ``siamkit embed``: a siamkit export, or a torchvision/timm name
with local weights. Embeddings from every exported file equal the checkpoint's own."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torchvision
from PIL import Image
from torch import nn

from siamkit.analysis.run_eval import embed_folder
from siamkit.checkpoints import load_backbone
from siamkit.config import AugmentConfig
from siamkit.encoders import SmallCNN
from siamkit.errors import CheckpointError, ConfigError
from siamkit.export.formats import export_backbone, export_checkpoint
from siamkit.export.plain_models import embedding_model, with_preprocessing
from tests.checkpoint_fixtures import write_checkpoint

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A pretraining checkpoint of a width-1 ResNet-18 (torchvision's shape) at 32 px, fp32,
    written in the training loop's format."""
    overrides = [
        "backbone.name=resnet18",
        "augment.size=32",
        "method.proj_dim=16",
        "method.proj_hidden_dim=16",
        "method.pred_hidden_dim=8",
        "train.precision=32-true",
    ]
    return write_checkpoint(overrides, tmp_path_factory.mktemp("run") / "last.ckpt", seed=11)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Six random RGB PNGs of different sizes (each is resized and centre-cropped)."""
    folder = tmp_path_factory.mktemp("pngs")
    rng = np.random.default_rng(0)
    for i in range(6):
        pixels = rng.integers(0, 256, (24 + 5 * i, 30 + 3 * i, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i}.png")
    return folder


def _embed(source: Path, images: Path, out: Path, **kwargs) -> tuple[np.ndarray, list[str]]:
    path = embed_folder(source, images, out, num_workers=0, overwrite=True, **kwargs)
    return np.load(path), (out.parent / (out.name + ".paths.txt")).read_text().splitlines()


@pytest.mark.parametrize(
    ("name", "format", "options"),
    [
        ("b.safetensors", "safetensors", {}),  # the run's size and normalisation recorded
        ("b.pth", "torchvision", {"model": "torchvision/resnet18", "image_size": 32}),
        ("b.pt", "timm", {"model": "timm/resnet18", "image_size": 32}),
    ],
)
def test_embeddings_of_an_export_equal_the_checkpoints(
    checkpoint: Path, images: Path, tmp_path: Path, name: str, format: str, options: dict
) -> None:
    """Same rows, same order: the export carries the backbone exactly (ImageNet normalisation is
    the run's, the torchvision default and timm's resnet18 pretrained_cfg)."""
    expected, expected_paths = _embed(checkpoint, images, tmp_path / "ckpt.npy")
    assert expected.shape == (6, 512)
    exported = export_checkpoint(checkpoint, tmp_path / name, format).path
    got, paths = _embed(exported, images, tmp_path / "export.npy", **options)
    assert paths == expected_paths
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)


def test_preprocessing_flags_change_the_embeddings(
    checkpoint: Path, images: Path, tmp_path: Path
) -> None:
    """--image-size/--mean/--std reach the view: another size or mean, other embeddings; the
    same values as the run's, the same embeddings."""
    run, _ = _embed(checkpoint, images, tmp_path / "a.npy")
    same, _ = _embed(checkpoint, images, tmp_path / "b.npy", image_size=32, mean=IMAGENET[0])
    np.testing.assert_array_equal(same, run)
    for options in ({"image_size": 40}, {"mean": (0.4, 0.4, 0.4)}, {"std": (0.3, 0.3, 0.3)}):
        other, _ = _embed(checkpoint, images, tmp_path / "c.npy", **options)
        assert np.abs(other - run).max() > 1e-3, options


def test_defaults_without_a_run(tmp_path: Path) -> None:
    """torchvision: 224 px, ImageNet's mean and std; timm: the model's pretrained_cfg; a
    safetensors export without a run: 224 px, ImageNet's."""
    state = torchvision.models.resnet18().state_dict()  # with fc: the classifier is ignored
    torch.save(state, tmp_path / "tv.pth")
    encoder, augment = embedding_model(tmp_path / "tv.pth", "torchvision/resnet18")
    assert (augment.effective_eval_size, augment.mean, augment.std) == (224, *IMAGENET)
    assert encoder.num_features == 512 and not encoder.training
    x = torch.randn(2, 3, 32, 32)
    reference = torchvision.models.resnet18()
    reference.load_state_dict(state)
    reference.fc = nn.Identity()
    torch.testing.assert_close(encoder(x), reference.eval()(x))

    vit = timm.create_model("test_vit")  # with its head: dropped
    torch.save(vit.state_dict(), tmp_path / "vit.pth")
    encoder, augment = embedding_model(tmp_path / "vit.pth", "timm/test_vit")
    assert (augment.effective_eval_size, augment.mean, augment.std) == (
        160,
        (0.5, 0.5, 0.5),
        (0.5, 0.5, 0.5),
    )
    assert encoder.num_features == 64

    export_backbone(SmallCNN(width=0.25), tmp_path / "cnn.safetensors")
    encoder, augment = embedding_model(tmp_path / "cnn.safetensors")
    assert isinstance(encoder, SmallCNN)
    assert (augment.effective_eval_size, augment.mean, augment.std) == (224, *IMAGENET)


def test_with_preprocessing_replaces_only_what_is_given() -> None:
    base = AugmentConfig(size=16, eval_size=24)
    assert with_preprocessing(base) == base
    changed = with_preprocessing(base, 48, [0.1, 0.2, 0.3], None)  # type: ignore[arg-type]
    assert (changed.effective_eval_size, changed.mean, changed.std) == (
        48,
        (0.1, 0.2, 0.3),
        base.std,
    )
    with pytest.raises(ConfigError, match=r"augment\.std must be positive"):
        with_preprocessing(base, std=(0.0, 1.0, 1.0))


@pytest.fixture(scope="module")
def r18_weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("w") / "r18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


@pytest.mark.parametrize(
    ("model", "error", "message"),
    [
        ("torchvision/resnet81", ConfigError, "unknown torchvision model 'resnet81'.*resnet18"),
        ("timm/resnet81", ConfigError, "unknown timm model 'resnet81'.*resnet18"),
        ("torchvision/mobilenet_v3_small", ConfigError, "has no `fc` classifier"),
        ("keras/resnet18", ConfigError, "names no library"),
        ("torchvision/resnet34", CheckpointError, "does not fit the model"),
        ("timm/resnet34", CheckpointError, "does not fit the model"),
    ],
)
def test_a_model_the_weights_do_not_fit_is_a_clear_error(
    r18_weights: Path, model: str, error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        embedding_model(r18_weights, model)


def test_weights_that_are_not_a_state_dict(tmp_path: Path) -> None:
    checkpoint = tmp_path / "ckpt.pth"
    torch.save({"state_dict": torchvision.models.resnet18().state_dict(), "epoch": 3}, checkpoint)
    with pytest.raises(CheckpointError, match="not a state dict"):
        embedding_model(checkpoint, "torchvision/resnet18")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(bytes(range(256)))
    for model in ("torchvision/resnet18", "timm/resnet18"):
        with pytest.raises(CheckpointError, match="cannot be read"):
            embedding_model(junk, model)


def test_timm_not_installed_is_a_config_error(monkeypatch, r18_weights: Path) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm raises ImportError
    with pytest.raises(ConfigError, match=r"timm is not installed.*siamkit\[timm\]"):
        embedding_model(r18_weights, "timm/resnet18")


def test_a_checkpoints_backbone_and_its_export_match(checkpoint: Path, tmp_path: Path) -> None:
    """embedding_model of the safetensors export gives the checkpoint backbone's features."""
    cfg, backbone = load_backbone(checkpoint)
    encoder, augment = embedding_model(
        export_checkpoint(checkpoint, tmp_path / "b.safetensors").path
    )
    assert augment.effective_eval_size == cfg.augment.effective_eval_size == 32
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(encoder(x), backbone.eval()(x), atol=1e-5, rtol=1e-5)
