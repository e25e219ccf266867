import json

import pytest

from cyclegan_tf import config


def test_defaults_are_the_official_ones():
    c = config.Config()
    assert (c.data.load_size, c.data.crop_size, c.data.batch_size) == (286, 256, 1)
    assert (c.model.generator, c.model.discriminator, c.model.norm) == (
        "resnet_9blocks",
        "basic",
        "instance",
    )
    assert (c.loss.gan_mode, c.loss.lambda_a, c.loss.lambda_identity, c.loss.pool_size) == (
        "lsgan",
        10.0,
        0.5,
        50,
    )
    assert (c.optim.lr, c.optim.beta1, c.optim.n_epochs, c.optim.n_epochs_decay) == (
        2e-4,
        0.5,
        100,
        100,
    )


def test_json_round_trip():
    c = config.preset("quick", seed=3, dataset="/data/x")
    again = config.Config.from_json(c.to_json())
    assert again == c
    assert json.loads(c.to_json())["train"]["seed"] == 3


@pytest.mark.parametrize("name", sorted(config.PRESETS))
def test_presets_build(name):
    assert isinstance(config.preset(name), config.Config)


def test_tutorial_preset_matches_the_tensorflow_tutorial():
    c = config.preset("tutorial")
    assert (c.model.generator, c.loss.gan_mode, c.loss.pool_size) == ("unet_256", "vanilla", 0)


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"crop_size": 300}, "crop_size=300 > load_size=286"),
        ({"norm": "layer"}, "norm must be one of instance, batch, none"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"lr": -1.0}, "lr must be > 0"),
        ({"pool_size": -1}, "pool_size must be >= 0"),
        ({"keep_checkpoints": 1}, "keep_checkpoints must be >= 2"),
        ({"gan_mode": "hinge"}, "gan_mode must be one of"),
        ({"colour": 1}, "Unknown config field 'colour'"),
    ],
)
def test_invalid_values_name_the_field(overrides, fragment):
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(")) as info:
        config.preset("paper", **overrides)
    assert "\n" not in str(info.value)


def test_crop_may_exceed_load_when_not_resizing():
    assert config.preset("paper", preprocess="crop", crop_size=300).data.crop_size == 300


def test_dotted_override():
    assert config.Config().replace(**{"optim.lr": 1e-3}).optim.lr == 1e-3


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"generator": "unet_128"}, "unet_128 needs crop_size to be a multiple of 128"),
        ({"crop_size": 30, "load_size": 36}, "multiple of 4. Received: crop_size=30"),
        ({"preprocess": "none"}, "image pool cannot store"),
        (
            {"preprocess": "scale_width", "pool_size": 0, "generator": "unet_256"},
            "multiples of 256",
        ),
        (
            {"gan_mode": "wgangp", "precision": "mixed_float16"},
            "wgangp with precision=mixed_float16",
        ),
        ({"precision": "fp8"}, "precision must be one of auto, float32"),
    ],
)
def test_cross_section_rules_fail_early(overrides, fragment):
    with pytest.raises(config.errors.ConfigError, match=fragment):
        config.preset("tiny", **overrides)


def test_cross_section_rules_allow_what_works():
    config.preset("tiny", preprocess="none", pool_size=0)
    config.preset("tiny", preprocess="scale_width", batch_size=2)  # batches end with a crop
    config.preset("tiny", generator="unet_128", crop_size=128, load_size=143)
    assert {config.preset(name).train.precision for name in config.PRESETS} == {"auto"}
