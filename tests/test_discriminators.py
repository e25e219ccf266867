"""Tests for cyclegan_tf.discriminators: official sizes, patch grids, logits, errors."""

import os

import keras
import numpy as np
import pytest

from cyclegan_tf import discriminators


def _images(batch, height, width, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (batch, height, width, 3)).astype("float32")


def test_basic_patchgan_official_parameter_count():
    assert discriminators.build_discriminator("basic", ndf=64).count_params() == 2_764_737
    # With InstanceNorm2d(affine=True) (counted in PyTorch 2.13 from tests/make_torch_fixtures.py's
    # NLayerDiscriminator): + 2 x (128 + 256 + 512).
    model = discriminators.build_discriminator("basic", ndf=64, norm="instance_affine")
    assert model.count_params() == 2_766_529


def test_basic_patchgan_gives_30x30_logits_at_256():
    model = discriminators.build_discriminator("basic", ndf=64)
    assert model.compute_output_shape((1, 256, 256, 3)) == (1, 30, 30, 1)


@pytest.mark.parametrize(
    "name, n_layers, size, expected",
    [
        ("basic", 3, (64, 64), (6, 6)),
        ("basic", 5, (64, 48), (6, 4)),  # n_layers is ignored by basic
        ("n_layers", 2, (64, 48), (14, 10)),
        ("n_layers", 4, (64, 64), (2, 2)),
        ("pixel", 3, (33, 20), (33, 20)),
    ],
)
def test_logit_grid_shape(name, n_layers, size, expected):
    model = discriminators.build_discriminator(name, ndf=8, n_layers=n_layers)
    y = model(_images(2, *size), training=False)
    assert y.shape == (2, *expected, 1)


def test_outputs_are_logits_not_probabilities():
    model = discriminators.build_discriminator("basic", ndf=8, init_gain=0.5)
    y = np.asarray(model(_images(1, 64, 64), training=False))
    assert y.min() < 0 or y.max() > 1


@pytest.mark.parametrize("name", ["basic", "pixel"])
def test_no_norm_after_first_conv_and_bias_rules_under_batch_norm(name):
    model = discriminators.build_discriminator(name, ndf=8, norm="batch")
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == len(convs) - 2
    assert convs[0].use_bias and not any(layer.use_bias for layer in convs[1:-1])
    # The official PixelDiscriminator drops the last bias too; the PatchGAN keeps it.
    assert convs[-1].use_bias == (name == "basic")


def test_model_name():
    model = discriminators.build_discriminator(ndf=8, model_name="d_a")
    assert model.name == "d_a"


@pytest.mark.parametrize("name", ["basic", "pixel"])
def test_mixed_bfloat16_outputs_float32(mixed_bfloat16, name):
    model = discriminators.build_discriminator(name, ndf=8)
    assert model.get_layer("norm2").compute_dtype == "bfloat16"  # instance norm: the policy's
    y = model(_images(1, 32, 32), training=True)
    assert keras.backend.standardize_dtype(y.dtype) == "float32"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "multiscale"}, "Valid names: basic, n_layers, pixel"),
        ({"ndf": 0}, "ndf must be a positive integer"),
        ({"name": "n_layers", "n_layers": 0}, "n_layers must be a positive integer"),
        ({"norm": "group"}, "norm must be one of"),
        ({"init_type": "he"}, "init_type must be one of"),
        ({"init_gain": 0.0}, "init_gain must be > 0"),
        ({"input_shape": (64, 64, None)}, "input_shape"),
    ],
)
def test_invalid_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        discriminators.build_discriminator(**kwargs)


def test_norm_none_drops_the_middle_biases_like_the_official_code():
    model = discriminators.build_discriminator("basic", norm="none")
    assert model.count_params() == 2_764_737 - (128 + 256 + 512)


def test_patchgan_reproduces_the_official_network_given_its_weights():
    # tests/data/torch/patchgan_basic.npz: made by tests/make_torch_fixtures.py with PyTorch.
    golden = np.load(os.path.join(os.path.dirname(__file__), "data", "torch", "patchgan_basic.npz"))
    model = discriminators.build_discriminator("basic", ndf=4)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 5
    for i, conv in enumerate(convs):
        kernel = golden[f"kernel_{i}"].transpose(2, 3, 1, 0)  # [out, in, kh, kw] -> Keras
        conv.set_weights([kernel, golden[f"bias_{i}"]])
    logits = model(golden["x"], training=False).numpy()
    assert logits.shape == golden["y"].shape == (1, 6, 6, 1)
    np.testing.assert_allclose(logits, golden["y"], rtol=0, atol=1e-5)
