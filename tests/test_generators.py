"""Tests for cyclegan_tf.generators: official sizes, any-size round trips, options, errors."""

import keras
import numpy as np
import pytest

from cyclegan_tf import config, generators, layers


def _trainable_params(model):
    # Keras counts batch norm moving statistics as parameters; PyTorch keeps them as buffers.
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def _images(batch, height, width, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (batch, height, width, 3)).astype("float32")


@pytest.mark.parametrize(
    "name, norm, expected",
    [
        ("resnet_9blocks", "instance", 11_378_179),
        ("resnet_6blocks", "instance", 7_837_699),
        # The same with InstanceNorm2d(affine=True) (counted in PyTorch 2.13 from
        # tests/make_torch_fixtures.py's ResnetGenerator): + 2 x the norms' channels.
        ("resnet_9blocks", "instance_affine", 11_388_675),
        ("resnet_6blocks", "instance_affine", 7_845_123),
        # The official pix2pix UnetGenerator (checked against it in PyTorch). The often quoted
        # 54,414,979 is the TensorFlow pix2pix tutorial's generator, which also batch-normalizes
        # the innermost downsampling (+2 x 512).
        ("unet_256", "batch", 54_413_955),
    ],
)
def test_official_parameter_counts(name, norm, expected):
    assert _trainable_params(generators.build_generator(name, ngf=64, norm=norm)) == expected


@pytest.mark.parametrize("name", ["resnet_6blocks", "resnet_9blocks"])
@pytest.mark.parametrize("height, width", [(32, 48), (36, 60)])
def test_resnet_round_trips_any_multiple_of_4(name, height, width):
    model = generators.build_generator(name, ngf=8)
    y = model(_images(2, height, width), training=False)
    assert y.shape == (2, height, width, 3)
    assert float(np.abs(np.asarray(y)).max()) <= 1.0


@pytest.mark.parametrize("height, width", [(128, 128), (128, 256)])
def test_unet_128_round_trips_multiples_of_128(height, width):
    model = generators.build_generator("unet_128", ngf=8, norm="batch")
    assert model(_images(1, height, width), training=False).shape == (1, height, width, 3)


def test_unet_64_round_trips_multiples_of_64():
    # The quick preset's generator: six downsamplings, 64 px down to 1 x 1 and back.
    model = generators.build_generator("unet_64", ngf=4)
    assert model(_images(1, 64, 128), training=False).shape == (1, 64, 128, 3)
    assert generators.size_multiple("unet_64") == 64


def test_unet_256_output_shape():
    model = generators.build_generator("unet_256", ngf=4)
    assert model.compute_output_shape((1, 256, 512, 3)) == (1, 256, 512, 3)


def test_size_multiple():
    assert [generators.size_multiple(name) for name in config.GENERATORS] == [4, 4, 256, 128, 64]


def test_every_configured_generator_is_buildable():
    for name in config.GENERATORS:
        assert generators.build_generator(name, ngf=2).name == name


def test_model_name_and_static_input_shape():
    model = generators.build_generator(
        "resnet_6blocks", ngf=8, input_shape=(32, 32, 1), model_name="g_ab", output_channels=1
    )
    assert model.name == "g_ab"
    assert model.output.shape == (None, 32, 32, 1)


@pytest.mark.parametrize("norm, conv_bias", [("instance", True), ("none", False), ("batch", False)])
def test_conv_bias_follows_norm(norm, conv_bias):
    model = generators.build_generator("resnet_6blocks", ngf=8, norm=norm)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convs[-1].name == "out_conv" and convs[-1].use_bias  # no norm follows it
    assert {layer.use_bias for layer in convs[:-1]} == {conv_bias}


@pytest.mark.parametrize(
    "name, expected", [("resnet_6blocks", 6), ("unet_256", 3), ("unet_128", 2), ("unet_64", 1)]
)
def test_dropout_layers(name, expected):
    with_dropout = generators.build_generator(name, ngf=2, dropout=True)
    without = generators.build_generator(name, ngf=2)
    count = sum(isinstance(layer, keras.layers.Dropout) for layer in with_dropout.layers)
    assert count == expected
    assert not any(isinstance(layer, keras.layers.Dropout) for layer in without.layers)


def test_dropout_only_in_training():
    model = generators.build_generator("resnet_6blocks", ngf=8, dropout=True)
    x = _images(1, 32, 32)
    np.testing.assert_array_equal(model(x, training=False), model(x, training=False))
    assert not np.allclose(model(x, training=True), model(x, training=True))


def test_same_keras_seed_gives_same_weights():
    def weights():
        keras.utils.set_random_seed(7)
        return generators.build_generator("resnet_6blocks", ngf=4, init_type="xavier").weights

    for a, b in zip(weights(), weights(), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_init_gain_sets_kernel_std():
    model = generators.build_generator("resnet_9blocks", ngf=16, init_gain=0.05)
    kernel = np.asarray(model.get_layer("block1_conv1").kernel)
    np.testing.assert_allclose(kernel.std(), 0.05, rtol=0.05)


@pytest.mark.parametrize("name", ["resnet_6blocks", "unet_128"])
def test_mixed_bfloat16_outputs_float32(mixed_bfloat16, name):
    model = generators.build_generator(name, ngf=4)
    # Instance norm runs in the policy's dtype (float32 statistics inside its fused kernel).
    norm = model.get_layer("in_norm" if name.startswith("resnet") else "down2_norm")
    assert norm.compute_dtype == "bfloat16"
    y = model(_images(1, 128, 128), training=True)
    assert keras.backend.standardize_dtype(y.dtype) == "float32"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "resnet_12blocks"}, "Valid names: resnet_9blocks, resnet_6blocks, unet_256"),
        ({"name": "unet_256", "input_shape": (128, 128, 3)}, "multiples of 256"),
        ({"name": "resnet_6blocks", "input_shape": (30, None, 3)}, "multiples of 4"),
        ({"name": "resnet_6blocks", "input_shape": (None, None)}, "input_shape"),
        ({"name": "resnet_6blocks", "ngf": 0}, "ngf must be a positive integer"),
        ({"name": "resnet_6blocks", "norm": "group"}, "norm must be one of"),
        ({"name": "resnet_6blocks", "init_type": "he"}, "init_type must be one of"),
        ({"name": "resnet_6blocks", "init_gain": -1.0}, "init_gain must be > 0"),
        (
            {"name": "unet_64", "upsampling": "resize"},
            "upsampling must be one of torch, keras_same, resize_nearest, resize_bilinear",
        ),
        ({"name": "unet_64", "upsampling": "keras_same"}, "'keras_same' is a ResNet variant"),
    ],
)
def test_invalid_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        generators.build_generator(**kwargs)


def test_size_multiple_of_unknown_name_raises():
    with pytest.raises(ValueError, match="Valid names"):
        generators.size_multiple("unet_512")


def test_norm_none_drops_the_biases_like_the_official_code():
    # The official use_bias is `norm_layer == nn.InstanceNorm2d`: with norm "none" every conv that
    # would be followed by a norm loses its bias (64 + 128 + 256 + 9 * 2 * 256 + 128 + 64 values).
    model = generators.build_generator("resnet_9blocks", norm="none")
    assert model.count_params() == 11_378_179 - 5_248


@pytest.mark.parametrize("upsampling", config.RESIZE_UPSAMPLINGS)
@pytest.mark.parametrize("name, ups", [("unet_64", 6), ("resnet_6blocks", 2)])
def test_resize_upsampling_replaces_every_transposed_conv(name, ups, upsampling):
    """Resize-convolution: each transposed conv (UNet k4, ResNet k3) becomes a x2 resize and a
    k3 s1 conv between the same widths, under the same layer name; sizes round-trip as before."""
    official = generators.build_generator(name, ngf=4)
    model = generators.build_generator(name, ngf=4, upsampling=upsampling)
    assert not any(isinstance(x, keras.layers.Conv2DTranspose) for x in model.layers)
    resizes = [x for x in model.layers if isinstance(x, layers.Resize2x)]
    assert len(resizes) == ups
    assert {x.interpolation for x in resizes} == {upsampling.removeprefix("resize_")}
    for resize in resizes:
        conv = resize.name.removesuffix("_resize")
        k_in, k_out = official.get_layer(conv).kernel.shape[2:]  # transposed: [k, k, out, in]
        assert tuple(model.get_layer(conv).kernel.shape) == (3, 3, k_out, k_in)
    if name.startswith("resnet"):  # k3 either way: the same parameters
        assert model.count_params() == official.count_params()
    y = model(_images(1, 64, 128), training=False)
    assert y.shape == (1, 64, 128, 3) and float(np.abs(np.asarray(y)).max()) <= 1.0


@pytest.mark.parametrize("upsampling", config.RESIZE_UPSAMPLINGS)
def test_resize_upsampling_in_mixed_bfloat16(mixed_bfloat16, upsampling):
    model = generators.build_generator("unet_64", ngf=4, upsampling=upsampling)
    assert model.get_layer("up1_conv_resize").compute_dtype == "bfloat16"
    y = model(_images(1, 64, 64), training=True)
    assert keras.backend.standardize_dtype(y.dtype) == "float32"
    assert np.isfinite(np.asarray(y)).all()
