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
        ({"norm": "layer"}, "norm must be one of instance, instance_affine, batch, none"),
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


def test_dataset_values_name_tfds_or_a_folder(tmp_path, monkeypatch):
    assert config.tfds_name("tfds:cycle_gan/horse2zebra") == "cycle_gan/horse2zebra"
    assert config.tfds_name(" cycle_gan/apple2orange ") == "cycle_gan/apple2orange"
    assert config.tfds_name("builtin") is None
    assert config.tfds_name(str(tmp_path)) is None
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cycle_gan" / "apple2orange").mkdir(parents=True)  # a folder of that name wins
    assert config.tfds_name("cycle_gan/apple2orange") is None
    assert config.tfds_name("tfds:cycle_gan/apple2orange") == "cycle_gan/apple2orange"


def test_dataset_folder_layout_is_checked_without_tensorflow(tmp_path):
    import subprocess
    import sys

    (tmp_path / "trainA").mkdir()
    code = (
        "import sys\n"
        "from cyclegan_tf import config, errors\n"
        "for root, fragment in ((sys.argv[1] + '/nope', 'does not exist'),\n"
        "                       (sys.argv[1], 'has no trainB/ folder')):\n"
        "    try:\n"
        "        config.check_dataset_folder(root)\n"
        "    except errors.DataError as e:\n"
        "        assert fragment in str(e), e\n"
        "    else:\n"
        "        raise AssertionError(root)\n"
        "assert 'tensorflow' not in sys.modules\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    (tmp_path / "trainB").mkdir()
    config.check_dataset_folder(str(tmp_path))  # the layout a dataset folder needs: no error


def test_resize_upsampling_is_for_any_generator_and_keras_same_for_resnets():
    for upsampling in config.RESIZE_UPSAMPLINGS:
        for name in ("quick", "tiny"):  # unet_64, resnet_6blocks
            c = config.preset(name, upsampling=upsampling)
            assert config.Config.from_json(c.to_json()).model.upsampling == upsampling
    assert {config.preset(name).model.upsampling for name in ("paper", "tutorial")} == {"torch"}
    with pytest.raises(config.errors.ConfigError, match="generator=unet_64 takes the defaults"):
        config.preset("quick", upsampling="keras_same")
    with pytest.raises(config.errors.ConfigError, match="resize_nearest, resize_bilinear"):
        config.preset("quick", upsampling="resize")
