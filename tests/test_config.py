"""Strict, typed configs: unknown keys, wrong types and impossible values are ConfigErrors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from siamkit.config import AugmentConfig, OptimConfig, RunConfig
from siamkit.errors import ConfigError, SiamkitError
from siamkit.methods import METHODS, SimSiamConfig
from siamkit.recipes import config_from_dict, load_config, parse_override
from siamkit.strict import flat_dict, to_dict

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "configs").glob("**/*.yaml"))


def _field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def test_config_error_exit_code():
    assert issubclass(ConfigError, SiamkitError)
    assert ConfigError.exit_code == 2


def test_defaults_are_the_paper_recipe():
    cfg = load_config()
    assert isinstance(cfg, RunConfig)
    assert isinstance(cfg.method, SimSiamConfig)
    assert cfg.optim.base_lr == 0.05 and cfg.optim.momentum == 0.9
    assert cfg.optim.weight_decay == 1e-4 and cfg.optim.batch_size == 512
    assert cfg.augment.crop_scale == (0.2, 1.0)


# --------------------------------------------------------------------------------------------
# Unknown keys
# --------------------------------------------------------------------------------------------
def test_unknown_top_level_key_lists_sections():
    with pytest.raises(ConfigError, match="unknown config key 'bogus'") as err:
        load_config(overrides=["bogus=1"])
    for section in _field_names(RunConfig):
        assert section in str(err.value)


@pytest.mark.parametrize("section", ["data", "augment", "backbone", "optim", "train"])
def test_unknown_key_in_section_lists_valid_keys(section):
    with pytest.raises(ConfigError, match=rf"unknown config key '{section}\.bogus'") as err:
        load_config(overrides=[f"{section}.bogus=1"])
    message = str(err.value)
    cls = type(getattr(RunConfig(), section))
    for key in _field_names(cls):
        assert key in message


def test_unknown_key_in_method_section_lists_the_methods_keys():
    # solo-learn kept an unused `temperature` in a SimSiam recipe: here it is an error.
    with pytest.raises(ConfigError, match=r"method\.temperature") as err:
        load_config(overrides=["method.temperature=0.1"])
    for key in ("proj_dim", "pred_hidden_dim", "stop_gradient", "bn_placement"):
        assert key in str(err.value)


def test_unknown_method_lists_valid_methods():
    with pytest.raises(ConfigError, match="unknown method 'moco_v9'") as err:
        load_config(overrides=["method.name=moco_v9"])
    for name in METHODS:
        assert name in str(err.value)


def test_method_flag_replaces_a_recipe_of_another_method_by_its_defaults(tmp_path):
    """``--method`` on a SimSiam recipe: SimSiam's keys are dropped, the data etc. are kept, and
    ``--set method.<key>`` still applies to the new method."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text("method: {name: simsiam, pred_hidden_dim: 7}\ntrain: {epochs: 3}\n")
    other = next(name for name in METHODS if name != "simsiam")
    cfg = load_config(recipe, values={"method.name": other})
    assert cfg.method.name == other and cfg.train.epochs == 3
    assert cfg.method == METHODS[other].config_class()
    # the same method as the recipe's keeps the recipe's keys
    cfg = load_config(recipe, values={"method.name": "simsiam"})
    assert cfg.method.pred_hidden_dim == 7  # type: ignore[attr-defined]


def test_unknown_key_in_yaml_recipe(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("train:\n  epochs: 3\n  epoch: 4\n")
    with pytest.raises(ConfigError, match=r"train\.epoch'") as err:
        load_config(recipe)
    assert "epochs" in str(err.value)


def test_missing_or_malformed_recipe(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: {epochs: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)


# --------------------------------------------------------------------------------------------
# Wrong types
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.epochs=abc", r"train\.epochs must be an integer"),
        ("train.epochs=2.5", r"train\.epochs must be an integer"),
        ("train.epochs=true", r"train\.epochs must be an integer"),
        ("train.progress_bar=1", r"train\.progress_bar must be true or false"),
        ("method.stop_gradient=yes please", r"method\.stop_gradient must be true or false"),
        ("optim.base_lr=fast", r"optim\.base_lr must be a number"),
        ("optim.base_lr=true", r"optim\.base_lr must be a number"),
        ("augment.crop_scale=0.5", r"augment\.crop_scale must be a list of 2"),
        ("augment.crop_scale=[0.2, 0.5, 1.0]", r"augment\.crop_scale must be a list of 2"),
        ("augment.crop_scale=[a, 1.0]", r"augment\.crop_scale\[0\] must be a number"),
        ("method.predictor=linear", r"method\.predictor must be one of"),
        ("train.precision=fp16", r"train\.precision must be one of"),
        ("data.dataset=imagenet", r"data\.dataset must be one of"),
        ("train.loggers=csv", r"train\.loggers must be a list, got 'csv'"),
        ("train.loggers={csv: 1}", r"train\.loggers must be a list"),
        ("train.loggers=[csv, 3]", r"train\.loggers\[1\] must be one of"),
        ("train={epochs: 2}", None),  # a mapping is fine for a section ...
        ("train=5", r"train must be a mapping"),  # ... a scalar is not
    ],
)
def test_wrong_types_raise(override, expected):
    if expected is None:
        assert load_config(overrides=[override]).train.epochs == 2
        return
    with pytest.raises(ConfigError, match=expected):
        load_config(overrides=[override])


def test_loggers_are_a_typed_list_of_the_known_names():
    assert load_config().train.loggers == ["csv", "tensorboard"]  # the default
    cfg = load_config(overrides=["train.loggers=[csv, wandb, mlflow]"])
    assert cfg.train.loggers == ["csv", "wandb", "mlflow"]
    assert load_config(overrides=["train.loggers=[]"]).train.loggers == []  # no logs at all
    with pytest.raises(ConfigError) as err:
        load_config(overrides=["train.loggers=[csv, neptune]"])
    assert "train.loggers[1] must be one of" in str(err.value)
    for name in ("'csv'", "'tensorboard'", "'wandb'", "'mlflow'"):  # the valid ones, listed
        assert name in str(err.value)
    with pytest.raises(ConfigError, match=r"train\.loggers names csv twice"):
        load_config(overrides=["train.loggers=[csv, wandb, csv]"])


def test_flat_dict_gives_dotted_keys_of_a_config_or_a_mapping_of_sections():
    cfg = load_config(overrides=["train.loggers=[csv, mlflow]"])
    flat = flat_dict(cfg)
    assert flat["optim.base_lr"] == cfg.optim.base_lr
    assert flat["augment.crop_scale"] == [0.2, 1.0]  # YAML-safe, as to_dict
    assert flat["train.loggers"] == ["csv", "mlflow"]
    assert len(flat) == sum(len(section) for section in to_dict(cfg).values())
    assert flat["backbone.timm_kwargs"] == {}  # an empty mapping is kept, not dropped
    vit = load_config(overrides=["backbone.name=timm/x", "backbone.timm_kwargs.img_size=32"])
    assert flat_dict(vit)["backbone.timm_kwargs.img_size"] == 32
    mixed = flat_dict({"finetune": cfg.optim, "checkpoint": "a.ckpt", "n": {"k": {"j": 1}}})
    assert mixed["finetune.momentum"] == cfg.optim.momentum
    assert (mixed["checkpoint"], mixed["n.k.j"]) == ("a.ckpt", 1)


def test_int_is_accepted_for_float_and_converted():
    cfg = load_config(overrides=["optim.base_lr=1"])
    assert cfg.optim.base_lr == 1.0 and isinstance(cfg.optim.base_lr, float)


def test_literal_choice_names_the_options():
    with pytest.raises(ConfigError) as err:
        load_config(overrides=["method.bn_placement=everywhere"])
    for choice in ("'none'", "'hidden'", "'hidden_proj_out'", "'hidden_proj_out_pred_out'"):
        assert choice in str(err.value)


# --------------------------------------------------------------------------------------------
# Impossible values
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("optim.batch_size=1", r"BatchNorm needs at least 2"),
        ("optim.batch_size=0", r"optim\.batch_size must be at least 1"),
        ("optim.base_lr=-0.1", r"optim\.base_lr must be positive"),
        ("optim.base_lr=0", r"optim\.base_lr must be positive"),
        ("optim.weight_decay=-1", r"optim\.weight_decay"),
        ("optim.momentum=1.0", r"optim\.momentum"),
        ("optim.warmup_epochs=-1", r"optim\.warmup_epochs"),
        ("augment.crop_scale=[0.0, 1.0]", r"augment\.crop_scale must satisfy 0 < min <= max <= 1"),
        ("augment.crop_scale=[0.2, 1.5]", r"augment\.crop_scale must satisfy"),
        ("augment.crop_scale=[0.8, 0.2]", r"augment\.crop_scale must satisfy"),
        ("augment.crop_scale=[-0.1, 0.5]", r"augment\.crop_scale must satisfy"),
        ("augment.flip_prob=1.5", r"augment\.flip_prob must be a probability in \[0, 1\]"),
        ("augment.jitter_prob=-0.1", r"augment\.jitter_prob must be a probability"),
        ("augment.grayscale_prob=2", r"augment\.grayscale_prob must be a probability"),
        ("augment.blur_prob=1.01", r"augment\.blur_prob must be a probability"),
        ("augment.size=2", r"augment\.size"),
        ("augment.hue=0.9", r"augment\.hue"),
        ("augment.std=[0.2, 0.0, 0.2]", r"augment\.std must be positive"),
        ("backbone.width=0", r"backbone\.width must be positive"),
        ("train.epochs=0", r"train\.epochs must be at least 1"),
        ("train.knn_every=-1", r"train\.knn_every"),
        ("train.max_minutes=0", r"train\.max_minutes"),
        ("data.test_fraction=1.0", r"data\.test_fraction"),
        ("method.proj_dim=0", r"method\.proj_dim must be at least 1"),
    ],
)
def test_impossible_values_raise_with_a_clear_message(override, expected):
    with pytest.raises(ConfigError, match=expected):
        load_config(overrides=[override])


def test_folder_dataset_needs_a_path():
    with pytest.raises(ConfigError, match=r"data\.path is required"):
        load_config(overrides=["data.dataset=folder"])
    assert load_config(overrides=["data.dataset=folder", "data.path=/x"]).data.path == "/x"


def test_boundary_values_are_accepted():
    cfg = load_config(
        overrides=[
            "optim.batch_size=2",
            "augment.crop_scale=[1.0, 1.0]",
            "augment.flip_prob=1",
            "augment.jitter_prob=0",
            "optim.momentum=0",
        ]
    )
    assert cfg.optim.batch_size == 2
    assert cfg.augment.crop_scale == (1.0, 1.0)
    assert cfg.augment.flip_prob == 1.0


# --------------------------------------------------------------------------------------------
# Recipes, overrides, round trip
# --------------------------------------------------------------------------------------------
def test_there_are_recipes():
    assert len(RECIPES) >= 3


@pytest.mark.parametrize("recipe", RECIPES, ids=[str(p.relative_to(ROOT)) for p in RECIPES])
def test_every_recipe_loads(recipe):
    cfg = load_config(recipe)
    assert isinstance(cfg, RunConfig)
    # A recipe is strict YAML of the same tree: reloading its dict gives the same config.
    assert config_from_dict(to_dict(cfg)) == cfg


def test_digits_recipe_values():
    cfg = load_config(ROOT / "configs" / "simsiam" / "digits.yaml")
    assert cfg.data.dataset == "digits"
    assert cfg.backbone.name == "small_cnn"
    assert cfg.method.proj_layers == 2  # CIFAR variant [Appendix D]


def test_overrides_parse_yaml_values():
    cfg = load_config(
        overrides=[
            "train.epochs=3",
            "method.stop_gradient=false",
            "augment.crop_scale=[0.3, 0.9]",
            "train.max_minutes=null",
            "optim.base_lr=3.0e-2",
            "train.output_dir=runs/a=b",
            "data.cache_dir=",
        ]
    )
    assert cfg.train.epochs == 3
    assert cfg.method.stop_gradient is False
    assert cfg.augment.crop_scale == (0.3, 0.9)
    assert cfg.train.max_minutes is None
    assert cfg.optim.base_lr == pytest.approx(0.03)
    assert cfg.train.output_dir == "runs/a=b"  # only the first '=' splits
    assert cfg.data.cache_dir is None


def test_parse_override():
    assert parse_override("a.b.c=[1, 2]") == (["a", "b", "c"], [1, 2])
    assert parse_override(" train.seed = 7") == (["train", "seed"], 7)
    with pytest.raises(ConfigError, match=r"section\.key=value"):
        parse_override("train.epochs")


def test_overrides_apply_in_order_and_values_last(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  epochs: 5\n  seed: 3\n")
    cfg = load_config(
        recipe,
        overrides=["train.epochs=6", "train.epochs=7"],
        values={"train.epochs": 8},
    )
    assert cfg.train.epochs == 8
    assert cfg.train.seed == 3
    assert load_config(recipe, overrides=["train.epochs=6", "train.epochs=7"]).train.epochs == 7


def test_override_into_a_scalar_is_an_error():
    with pytest.raises(ConfigError, match="not a section"):
        load_config(overrides=["train.epochs=3", "train.epochs.x=1"])


def test_to_dict_round_trips_through_from_dict():
    cfg = load_config(
        overrides=[
            "method.bn_placement=hidden",
            "method.loss_symmetry=asymmetric_2x",
            "augment.crop_scale=[0.5, 0.75]",
            "augment.blur_prob=0.25",
            "optim.batch_size=64",
            "train.max_minutes=1.5",
            "train.loggers=[mlflow, csv]",
        ]
    )
    tree = to_dict(cfg)
    assert tree["augment"]["crop_scale"] == [0.5, 0.75]  # YAML-safe: tuples become lists
    assert tree["method"]["name"] == "simsiam"
    back = config_from_dict(tree)
    assert back == cfg
    assert isinstance(back.method, SimSiamConfig)
    assert back.augment.crop_scale == (0.5, 0.75)
    assert to_dict(back) == tree


def test_to_dict_is_yaml_safe(tmp_path):
    import yaml

    cfg = load_config()
    path = tmp_path / "dump.yaml"
    path.write_text(yaml.safe_dump(to_dict(cfg)))
    assert load_config(path) == cfg


def test_lr_scales_linearly_with_batch():
    assert OptimConfig(batch_size=256, base_lr=0.05).lr == pytest.approx(0.05)
    assert OptimConfig(batch_size=512, base_lr=0.05).lr == pytest.approx(0.1)
    assert OptimConfig(batch_size=64, base_lr=0.03).lr == pytest.approx(0.03 * 64 / 256)
    assert load_config(overrides=["optim.batch_size=128"]).optim.lr == pytest.approx(0.025)


def test_effective_blur_prob_follows_the_image_size_rule():
    assert AugmentConfig(size=224).effective_blur_prob == 0.5
    assert AugmentConfig(size=32).effective_blur_prob == 0.0
    assert AugmentConfig(size=32, blur_prob=0.3).effective_blur_prob == 0.3


def test_override_accepts_exponent_floats():
    """YAML 1.1 reads ``5e-4`` (no dot) as a string; float fields still take it."""
    assert load_config(overrides=["optim.weight_decay=5e-4"]).optim.weight_decay == 5e-4
    assert load_config(overrides=["optim.base_lr=1e30"]).optim.base_lr == 1e30
    with pytest.raises(ConfigError, match="must be a number"):
        load_config(overrides=["optim.base_lr=fast"])


# --------------------------------------------------------------------------------------------
# timm backbones: a typed, strict home for their options
# --------------------------------------------------------------------------------------------
VIT = "backbone.name=timm/vit_tiny_patch16_224"


def test_timm_options_are_typed_and_round_trip():
    cfg = load_config(
        overrides=[
            VIT,
            "backbone.timm_kwargs.img_size=32",
            "backbone.timm_kwargs.patch_size=4",
            "backbone.timm_kwargs.drop_path_rate=1e-1",  # YAML 1.1 reads this as a string
            "backbone.timm_kwargs.global_pool=avg",
            "backbone.timm_kwargs.class_token=false",
            "backbone.timm_kwargs.channels=[16, 32]",
            "backbone.freeze_patch_embed=true",
        ]
    )
    kwargs = cfg.backbone.timm_kwargs
    assert kwargs == {
        "img_size": 32,
        "patch_size": 4,
        "drop_path_rate": 0.1,
        "global_pool": "avg",
        "class_token": False,
        "channels": [16, 32],
    }
    assert type(kwargs["drop_path_rate"]) is float and type(kwargs["img_size"]) is int
    assert config_from_dict(to_dict(cfg)) == cfg
    assert cfg.backbone.describe() == (
        "timm/vit_tiny_patch16_224 (img_size=32, patch_size=4, drop_path_rate=0.1, "
        "global_pool=avg, class_token=False, channels=[16, 32], frozen patch projection)"
    )


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ([VIT, "backbone.timm_kwargs=3"], r"backbone\.timm_kwargs must be a mapping"),
        (
            [VIT, "backbone.timm_kwargs.img_size={h: 32}"],
            r"timm_kwargs\.img_size must be an integer, a number, true or false, a string or a "
            r"list of such values, got \{'h': 32\}",
        ),
        ([VIT, "backbone.freeze_patch_embed=yes please"], r"must be true or false"),
        ([VIT, "backbone.timm_kwarg.img_size=32"], r"unknown config key 'backbone\.timm_kwarg'"),
        # siamkit's own options do not apply to timm models, and name the fix
        ([VIT, "backbone.width=0.5"], r"backbone\.width does not apply.*timm_kwargs"),
        ([VIT, "backbone.cifar_stem=true"], r"cifar_stem does not apply.*img_size: 32"),
        ([VIT, "backbone.norm=group_ws"], r"backbone\.norm does not apply.*norm_layer"),
        ([VIT, "backbone.timm_kwargs.pretrained=true"], r"pretrained is set by siamkit"),
        ([VIT, "backbone.timm_kwargs.num_classes=10"], r"num_classes is set by siamkit"),
        (["backbone.name=timm/"], r"names no model"),
        # timm's options only for timm models
        (["backbone.timm_kwargs.img_size=32"], r"timm_kwargs applies to timm backbones"),
        (["backbone.freeze_patch_embed=true"], r"resnet50' has none: set it to false"),
    ],
)
def test_bad_timm_options_are_config_errors(overrides, expected):
    with pytest.raises(ConfigError, match=expected):
        load_config(overrides=overrides)


def test_describe_names_siamkit_backbones_as_before():
    cfg = load_config(overrides=["backbone.name=resnet18", "backbone.width=0.25"])
    assert cfg.backbone.describe() == "resnet18 (width 0.25)"
    cifar = load_config(overrides=["backbone.cifar_stem=true", "backbone.norm=group_ws"])
    assert cifar.backbone.describe() == "resnet50 (width 1, CIFAR stem, GroupNorm+WS)"


@pytest.mark.parametrize("value", ["nan", "inf", ".nan", ".inf"])
def test_every_float_setting_is_finite_from_a_recipe_and_from_python(value: str) -> None:
    """A NaN weight decay once passed validation and failed the run as a learning-rate problem."""
    from siamkit.config import OptimConfig, RunConfig
    from siamkit.recipes import load_config

    with pytest.raises(ConfigError, match=r"optim\.weight_decay must be a finite number"):
        load_config(recipe="simsiam/digits", overrides=[f"optim.weight_decay={value}"])
    with pytest.raises(ConfigError, match=r"optim\.weight_decay must be a finite number"):
        RunConfig(optim=OptimConfig(weight_decay=float(value.lstrip("."))))


@pytest.mark.parametrize("key", ["train.output_dir", "data.path"])
def test_an_empty_path_setting_is_refused(key: str) -> None:
    from siamkit.recipes import load_config

    with pytest.raises(ConfigError, match=rf"{key} must not be empty"):
        load_config(recipe="simsiam/digits", overrides=[f"{key}=''"])
