"""Tests for cyclegan_tf.layers: padding, normalization, initializers, PyTorch-aligned convs."""

import fixtures
import keras
import numpy as np
import pytest
import tensorflow as tf

from cyclegan_tf import hardware, layers


def _random(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


# ReflectionPadding2D


def test_reflection_padding_matches_numpy_reflect():
    x = _random((2, 5, 6, 3))
    y = layers.ReflectionPadding2D(2)(x)
    expected = np.pad(x, [(0, 0), (2, 2), (2, 2), (0, 0)], mode="reflect")
    np.testing.assert_array_equal(np.asarray(y), expected)


def test_reflection_padding_accepts_unknown_height_and_width():
    inputs = keras.Input((None, None, 2))
    model = keras.Model(inputs, layers.ReflectionPadding2D(3)(inputs))
    assert model.output.shape == (None, None, None, 2)
    for height, width in ((8, 8), (9, 13)):
        assert model(_random((1, height, width, 2))).shape == (1, height + 6, width + 6, 2)
    layer = layers.ReflectionPadding2D(1)
    assert layer.compute_output_shape((None, 4, None, 2)) == (None, 6, None, 2)


def test_reflection_padding_config_round_trip():
    layer = layers.ReflectionPadding2D(3, name="pad")
    clone = layers.ReflectionPadding2D.from_config(layer.get_config())
    assert (clone.padding, clone.name) == (3, "pad")


def test_reflection_padding_rejects_negative_padding():
    with pytest.raises(ValueError, match="padding"):
        layers.ReflectionPadding2D(-1)


# normalization


def test_instance_norm_is_per_sample_per_channel_standardization():
    x = 3.0 * _random((2, 6, 5, 4)) + 1.5
    y = np.asarray(layers.normalization("instance")(x))
    mean = x.mean(axis=(1, 2), keepdims=True)
    var = x.var(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-5), atol=1e-5)


@pytest.mark.parametrize("shape", [(1, 16, 12, 8), (3, 9, 7, 5)])
def test_instance_norm_equals_group_normalization_with_gradients(shape):
    # The fused kernel (batch 1) and the moments path (other batches) must not change numerics.
    import tensorflow as tf

    x = tf.constant(3.0 * _random(shape) + 1.5)
    dy = tf.constant(_random(shape, seed=1))
    outputs = []
    for layer in (
        layers.normalization("instance"),
        keras.layers.GroupNormalization(groups=-1, center=False, scale=False, epsilon=1e-5),
    ):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * dy)
        outputs.append((y.numpy(), tape.gradient(loss, x).numpy()))
    (y1, g1), (y2, g2) = outputs
    np.testing.assert_allclose(y1, y2, atol=1e-5)
    np.testing.assert_allclose(g1, g2, atol=1e-5)


def test_instance_norm_of_a_batch_is_each_image_normalized_alone():
    # Equal to float rounding, not bit for bit: the fused kernel splits its reductions over the
    # batch's N * C channels differently from C (measured: 3e-6 relative at most here). The
    # shape-generic graph the inference functions trace ([None] * 4) computes exactly what the
    # static-shape one does.
    import tensorflow as tf

    layer = layers.normalization("instance")
    x = tf.constant(3.0 * _random((3, 9, 7, 5)) + 1.5)
    batch = layer(x).numpy()
    alone = np.concatenate([layer(x[i : i + 1]).numpy() for i in range(3)])
    generic = tf.function(layer, input_signature=[tf.TensorSpec([None] * 4, tf.float32)])
    np.testing.assert_allclose(batch, alone, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(generic(x).numpy(), batch)


def test_instance_norm_has_no_parameters():
    layer = layers.normalization("instance")
    layer.build((None, None, None, 8))
    assert layer.weights == []


def test_batch_norm_matches_torch_defaults():
    layer = layers.normalization("batch", gamma_stddev=0.02)
    layer.build((None, 8, 8, 4096))
    assert (layer.momentum, layer.epsilon) == (0.9, 1e-5)
    gamma = np.asarray(layer.gamma)
    assert abs(gamma.mean() - 1.0) < 0.002 and abs(gamma.std() - 0.02) < 0.002
    np.testing.assert_array_equal(np.asarray(layer.beta), 0.0)


def test_none_norm_is_identity():
    x = _random((1, 3, 3, 2))
    np.testing.assert_array_equal(np.asarray(layers.normalization("none")(x)), x)


def test_unknown_norm_raises():
    with pytest.raises(ValueError, match="norm must be one of instance, instance_affine, batch"):
        layers.normalization("layer")


def test_batch_norm_computes_in_float32_under_mixed_precision(mixed_bfloat16):
    layer = layers.normalization("batch")
    assert layer.compute_dtype == "float32"
    y = layer(keras.ops.cast(_random((1, 4, 4, 3)), "bfloat16"), training=True)
    assert keras.backend.standardize_dtype(y.dtype) == "float32"


@pytest.mark.parametrize("shape", [(1, 12, 10, 16), (3, 8, 6, 5)])
def test_bfloat16_instance_norm_is_the_float32_one_rounded(mixed_bfloat16, shape):
    """Under mixed_bfloat16 the layer takes and returns bfloat16 (the fused kernel keeps its
    statistics in float32): output and input gradient equal the float32 layer's, rounded."""
    import tensorflow as tf

    mixed = layers.normalization("instance")
    reference = layers.InstanceNormalization(dtype="float32")
    assert mixed.compute_dtype == "bfloat16" and reference.compute_dtype == "float32"
    x = tf.cast(_random(shape) * 3 + 1, tf.bfloat16)
    upstream = tf.cast(_random(shape, seed=1), tf.bfloat16)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y = mixed(x)
        y_reference = tf.cast(reference(x), tf.bfloat16)
    assert y.dtype == tf.bfloat16
    np.testing.assert_array_equal(y.numpy(), y_reference.numpy())
    grad = tape.gradient(y, x, output_gradients=upstream)
    grad_reference = tape.gradient(y_reference, x, output_gradients=upstream)
    assert grad.dtype == tf.bfloat16
    np.testing.assert_array_equal(grad.numpy(), grad_reference.numpy())


@pytest.mark.parametrize("shape", [(1, 16, 12, 8), (3, 9, 7, 5)])
def test_affine_instance_norm_equals_group_normalization_with_gradients(shape):
    """`instance_affine` (PyTorch's InstanceNorm2d(affine=True)): the fused kernel with gamma and
    beta as its scale and offset, for one image and for a batch (gamma tiled over the N * C
    channels), against Keras' GroupNormalization(groups=-1) with the same weights: outputs and
    the gradients of input, gamma and beta equal to float32 rounding (sums over 8 x 8 to 16 x 12
    pixels: a few 1e-6 relative)."""
    import tensorflow as tf

    x = tf.constant(3.0 * _random(shape) + 1.5)
    dy = tf.constant(_random(shape, seed=1))
    channels = shape[-1]
    gamma = 1.0 + _random((channels,), seed=2)
    beta = _random((channels,), seed=3)
    affine = layers.normalization("instance_affine", epsilon=1e-5)
    reference = keras.layers.GroupNormalization(groups=-1, epsilon=1e-5)
    results = []
    for layer in (affine, reference):
        layer.build(shape)
        layer.gamma.assign(gamma)
        layer.beta.assign(beta)
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x) * dy)
        grads = tape.gradient(loss, [x, layer.gamma, layer.beta])
        results.append([layer(x).numpy()] + [g.numpy() for g in grads])
    assert [w.shape for w in affine.trainable_weights] == [(channels,), (channels,)]
    for got, want in zip(*results):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_affine_instance_norm_starts_as_the_affine_free_one_and_round_trips():
    # PyTorch initialises InstanceNorm2d's weight to 1 and bias to 0 (the official init_weights
    # touches BatchNorm2d only): a fresh affine layer computes exactly the affine-free one.
    x = 3.0 * _random((1, 6, 5, 4)) + 1.5
    affine = layers.normalization("instance_affine")
    np.testing.assert_array_equal(
        np.asarray(affine(x)), np.asarray(layers.normalization("instance")(x))
    )
    config = affine.get_config()
    assert config["affine"] is True and config["epsilon"] == 1e-5
    clone = layers.InstanceNormalization.from_config(config)
    assert clone.affine and clone.center and clone.scale
    plain = layers.InstanceNormalization.from_config(layers.normalization("instance").get_config())
    assert not plain.affine and plain.weights == []


def test_bfloat16_affine_instance_norm_keeps_float32_weights(mixed_bfloat16):
    """Under mixed_bfloat16 gamma and beta stay float32 variables and are read unrounded (the
    fused kernel takes them in float32): the output equals the float32 layer's, rounded once."""
    import tensorflow as tf

    mixed = layers.normalization("instance_affine")
    reference = layers.InstanceNormalization(affine=True, dtype="float32")
    x = tf.cast(_random((1, 8, 6, 5)) * 3 + 1, tf.bfloat16)
    for layer in (mixed, reference):
        layer.build(x.shape)
        layer.gamma.assign(1.0 + _random((5,), seed=2))
        layer.beta.assign(_random((5,), seed=3))
    assert mixed.gamma.dtype == "float32" and mixed.compute_dtype == "bfloat16"
    y = mixed(x)
    assert y.dtype == tf.bfloat16
    np.testing.assert_array_equal(y.numpy(), tf.cast(reference(x), tf.bfloat16).numpy())


def test_use_bias_only_with_instance_norm():
    # The official `use_bias = norm_layer == nn.InstanceNorm2d`.
    assert layers.use_bias("instance") and layers.use_bias("instance_affine")
    assert not layers.use_bias("batch") and not layers.use_bias("none")


# kernel_initializer

_SHAPE = (3, 3, 64, 128)  # Conv2D kernel: fan_in = 576, fan_out = 1152.


@pytest.mark.parametrize(
    "init_type, gain, std",
    [
        ("normal", 0.02, 0.02),
        ("normal", 0.5, 0.5),
        ("xavier", 0.02, 0.02 * np.sqrt(2 / (576 + 1152))),
        ("kaiming", 0.02, np.sqrt(2 / 576)),  # the gain is unused, as in the official code
    ],
)
def test_initializer_std(init_type, gain, std):
    values = np.asarray(layers.kernel_initializer(init_type, gain)(_SHAPE))
    assert abs(values.mean()) < 0.02 * std
    np.testing.assert_allclose(values.std(), std, rtol=0.02)


def test_orthogonal_initializer_has_orthogonal_columns_scaled_by_gain():
    values = np.asarray(layers.kernel_initializer("orthogonal", 0.5)(_SHAPE)).reshape(-1, 128)
    np.testing.assert_allclose(values.T @ values, 0.25 * np.eye(128), atol=1e-5)


def test_initializer_instances_are_fresh():
    # One unseeded instance reused for two layers would give them identical kernels.
    a, b = (layers.kernel_initializer("normal", 0.02)((4, 4)) for _ in range(2))
    assert not np.allclose(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize(
    "init_type, gain, message",
    [("uniform", 0.02, "init_type must be one of normal, xavier"), ("normal", 0.0, "init_gain")],
)
def test_invalid_initializer_raises(init_type, gain, message):
    with pytest.raises(ValueError, match=message):
        layers.kernel_initializer(init_type, gain)


# PyTorch-aligned convolutions


def _conv_model(x_shape, build):
    inputs = keras.Input(x_shape[1:])
    return keras.Model(inputs, build(inputs))


def test_stride2_conv_samples_like_torch_padding_1():
    # A delta at the kernel centre makes the conv a sampler: PyTorch's padding=1 reads the input
    # at even positions (Keras "same" on even sizes would read odd ones).
    x = _random((1, 8, 10, 1))
    model = _conv_model(x.shape, lambda t: layers.conv2d(t, 1, 3, strides=2, padding=1, name="c"))
    kernel = np.zeros((3, 3, 1, 1), "float32")
    kernel[1, 1] = 1.0
    model.get_layer("c").set_weights([kernel, np.zeros(1, "float32")])
    np.testing.assert_allclose(np.asarray(model(x)), x[:, ::2, ::2], atol=1e-6)


def _torch_conv_transpose(x, kernel, strides, padding, output_padding):
    """ConvTranspose2d by definition: scatter each input pixel times the kernel, then crop.

    x: (batch, h, w, in); kernel in Keras layout (k, k, out, in).
    """
    batch, height, width, _ = x.shape
    k = kernel.shape[0]
    full = np.zeros((batch, (height - 1) * strides + k, (width - 1) * strides + k, kernel.shape[2]))
    for i in range(height):
        for j in range(width):
            contribution = np.einsum("bc,hwoc->bhwo", x[:, i, j], kernel)
            full[:, i * strides : i * strides + k, j * strides : j * strides + k] += contribution
    end = padding - output_padding
    return full[:, padding : full.shape[1] - end, padding : full.shape[2] - end]


@pytest.mark.parametrize(
    "kernel_size, output_padding",
    [(3, 1), (4, 0)],  # the ResNet and the UNet upsamplings
)
@pytest.mark.parametrize("size", [(4, 6), (5, 3)])
def test_conv_transpose_matches_torch_definition(kernel_size, output_padding, size):
    x = _random((2, *size, 3))
    model = _conv_model(
        x.shape,
        lambda t: layers.conv2d_transpose(
            t, 2, kernel_size, strides=2, padding=1, output_padding=output_padding, name="ct"
        ),
    )
    kernel = _random((kernel_size, kernel_size, 2, 3), seed=1)
    model.get_layer("ct").set_weights([kernel, np.zeros(2, "float32")])
    expected = _torch_conv_transpose(x, kernel, 2, 1, output_padding)
    assert expected.shape[1:3] == (2 * size[0], 2 * size[1])
    np.testing.assert_allclose(np.asarray(model(x)), expected, atol=1e-5)


def test_keras_same_conv_transpose_is_off_by_one_for_k3():
    # Why conv2d_transpose crops by hand for k3 s2 p1 op1: "same" keeps the other pixel rows.
    x = _random((1, 4, 4, 1))
    kernel = _random((3, 3, 1, 1), seed=1)
    same = keras.layers.Conv2DTranspose(1, 3, strides=2, padding="same", use_bias=False)
    same.build(x.shape)
    same.set_weights([kernel])
    expected = _torch_conv_transpose(x, kernel, 2, 1, 1)
    assert not np.allclose(np.asarray(same(x)), expected, atol=1e-3)


def test_conv_transpose_rejects_output_padding_above_padding():
    with pytest.raises(ValueError, match="output_padding"):
        layers.conv2d_transpose(keras.Input((4, 4, 1)), 1, 3, padding=0, output_padding=1)


# Conv2D: gradients as forward convolutions


@pytest.mark.parametrize(
    "x_shape, kernel_shape",
    [
        ((1, 14, 14, 8), (7, 7, 8, 3)),  # narrows the channels: input gradient reformulated too
        ((1, 10, 12, 6), (3, 3, 6, 6)),  # the residual blocks' shape (same channels)
        ((2, 9, 7, 3), (4, 4, 3, 5)),  # widens from few channels: TF's own input gradient; batch 2
        ((1, 8, 9, 16), (4, 4, 16, 24)),  # widens from 16 channels (the D's 256->512): reformulated
        ((2, 6, 6, 4), (1, 1, 4, 4)),  # 1x1 kernel, batch 2
        ((3, 8, 8, 5), (4, 2, 5, 1)),  # non-square kernel, one output channel
    ],
)
def test_conv_forward_gradients_equal_tensorflow_gradients(x_shape, kernel_shape):
    import tensorflow as tf

    x = tf.constant(_random(x_shape))
    kernel = tf.constant(_random(kernel_shape, seed=1))
    out_shape = (x_shape[0], x_shape[1] - kernel_shape[0] + 1, x_shape[2] - kernel_shape[1] + 1)
    dy = tf.constant(_random(out_shape + kernel_shape[3:], seed=2))
    results = []
    for conv in (lambda a, b: tf.nn.conv2d(a, b, 1, "VALID"), layers._conv2d_forward_gradients):
        with tf.GradientTape() as tape:
            tape.watch([x, kernel])
            y = conv(x, kernel)
        results.append([y, *tape.gradient(y, [x, kernel], output_gradients=dy)])
    # TensorFlow's kernels (Eigen or oneDNN) and the reformulation add the same products in
    # different orders: equal up to float32 rounding of sums of kh*kw*c_in (output), kh*kw*c_out
    # (input gradient) and batch*out_h*out_w (kernel gradient) products.
    kh, kw, c_in, c_out = kernel_shape
    terms = (kh * kw * c_in, kh * kw * c_out, int(np.prod(out_shape)))
    abs_sums = fixtures.conv_abs_sums(x, kernel, dy)
    for expected, actual, abs_sum, n in zip(*results, abs_sums, terms):
        fixtures.assert_within_float32_rounding(actual, expected, abs_sum, n)


@pytest.mark.parametrize("batch", [1, 2, 4])
def test_bfloat16_conv_forward_gradients_are_the_float32_ones_rounded(batch):
    """The forward arm in bfloat16 (forced, so it runs on every host), batch 1, 2 and 4: with a
    batch of 2 or 4 the kernel-gradient reformulation is a 32x32 "kernel" (dy) over 2 or 4
    channels (the batch), which oneDNN's bfloat16 convolution got ~100% wrong on an AVX512_BF16
    CPU (TF 2.21); the layer must give TensorFlow's gradients there on every host."""
    import tensorflow as tf

    x = tf.constant(_random((batch, 34, 34, 16)))
    kernel = tf.constant(_random((3, 3, 16, 16), seed=1) * 0.1)
    dy = tf.constant(_random((batch, 32, 32, 16), seed=2))
    xb, kb, dyb = (tf.cast(t, tf.bfloat16) for t in (x, kernel, dy))
    with tf.GradientTape() as tape:  # float32 of the bfloat16 inputs: the exact reference
        tape.watch([xb, kb])
        x32, k32 = tf.cast(xb, tf.float32), tf.cast(kb, tf.float32)
        y = tf.nn.conv2d(x32, k32, 1, "VALID")
    expected = tape.gradient(y, [x32, k32], output_gradients=tf.cast(dyb, tf.float32))
    with hardware.force(conv_gradients="forward"):
        with tf.GradientTape() as tape:
            tape.watch([xb, kb])
            y = layers._conv2d_forward_gradients(xb, kb)
        actual = tape.gradient(y, [xb, kb], output_gradients=dyb)
    for a, e in zip(actual, expected):
        assert a.dtype == tf.bfloat16
        # Accumulated in float32, rounded once to bfloat16 on the way out: 2^-9 relative per
        # element, so at most 2^-9 of the norm (the sums themselves add ~1e-6 more).
        err = np.linalg.norm(tf.cast(a, tf.float32).numpy() - e.numpy()) / np.linalg.norm(e)
        assert err <= 2**-9 + 1e-4, err


@pytest.mark.parametrize(
    "shape, perm",
    [
        ((1, 5, 6, 7), (3, 1, 2, 0)),  # batch-1 input of the kernel gradient
        ((3, 5, 6, 7), (3, 1, 2, 0)),
        ((1, 4, 5, 7), (1, 2, 0, 3)),  # batch-1 dy: a reshape only
        ((2, 4, 5, 7), (1, 2, 0, 3)),
        ((7, 3, 3, 5), (1, 2, 0, 3)),  # the taps
        ((9, 4, 6), (0, 2, 1)),  # the flipped kernel
        ((1, 1, 1), (2, 0, 1)),
        ((2, 1, 3, 1, 4), (4, 3, 0, 2, 1)),
    ],
)
def test_transpose_on_fewest_axes_equals_tf_transpose(shape, perm):
    import tensorflow as tf

    x = tf.constant(_random(shape))
    expected = tf.transpose(x, perm)
    np.testing.assert_array_equal(layers._transpose(x, perm), expected)
    # Unknown sizes (inside a function traced for any shape of this rank) give the same values.
    any_shape = tf.TensorSpec([None] * len(shape), tf.float32)
    traced = tf.function(lambda t: layers._transpose(t, perm), input_signature=[any_shape])
    np.testing.assert_array_equal(traced(x), expected)


def test_conv_layer_trains_like_keras_conv():
    # The layer's weights, forward and gradients are Keras' Conv2D's, whichever path it takes.
    import tensorflow as tf

    x = tf.constant(_random((2, 9, 9, 4)))
    results = []
    for path in hardware.CONV_GRADIENTS:
        with hardware.force(conv_gradients=path):
            conv = layers.Conv2D(3, 3, kernel_initializer="ones", bias_initializer="zeros")
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = conv(x)
                loss = tf.reduce_sum(y * y)
        assert [w.path.split("/")[-1] for w in conv.weights] == ["kernel", "bias"]
        results.append([y, *tape.gradient(loss, [x, *conv.trainable_weights])])
    # Equal up to float32 rounding (see fixtures.assert_within_float32_rounding): y sums 36
    # products; dy = 2y carries y's rounding into the gradients, which sum 27 (input), 98
    # (kernel) and 98 (bias) products of it.
    y_abs, dx_abs, dkernel_abs = fixtures.conv_abs_sums(x, np.ones((3, 3, 4, 3)), 2 * abs(y))
    dbias_abs = np.sum(2 * abs(np.asarray(y)), axis=(0, 1, 2))
    chains = (36, 36 + 27, 36 + 98, 36 + 98)
    abs_sums = (y_abs, dx_abs, dkernel_abs, dbias_abs)
    for expected, actual, abs_sum, n in zip(*results, abs_sums, chains):
        fixtures.assert_within_float32_rounding(actual, expected, abs_sum, n)


def test_strided_conv_keeps_tensorflow_gradients():
    import tensorflow as tf

    @tf.function
    def step(x, kernel):
        with tf.GradientTape() as tape:
            tape.watch(kernel)
            y = layers.Conv2D(2, 3, strides=2).convolution_op(x, kernel)
        return tape.gradient(y, kernel)

    x, kernel = tf.constant(_random((1, 9, 9, 2))), tf.constant(_random((3, 3, 2, 2)))
    with hardware.force(conv_gradients="forward"):  # traced inside: the arm is read at trace
        graph = step.get_concrete_function(x, kernel).graph.as_graph_def()
    ops = {node.op for node in graph.node} | {
        node.op for fn in graph.library.function for node in fn.node_def
    }
    assert "Conv2DBackpropFilter" in ops


@pytest.mark.parametrize("shape", [(2, 7, 9, 3), (1, 5, 6, 2)])
def test_cropping_equals_keras_cropping_with_gradients(shape):
    import tensorflow as tf

    x = tf.constant(_random(shape))
    crop = ((1, 0), (2, 1))
    results = []
    for layer in (layers.Cropping2D(crop), keras.layers.Cropping2D(crop)):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * y)
        results.append((y, tape.gradient(loss, x)))
    for expected, actual in zip(results[1], results[0]):
        np.testing.assert_array_equal(actual, expected)
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, layers.Cropping2D(crop)(inputs))
    assert model(_random((1, 8, 11, 3))).shape == (1, 7, 8, 3)


# Resize2x (resize-convolution's upsampling)


def test_resize2x_nearest_repeats_each_pixel_and_bilinear_keeps_the_mean():
    x = _random((2, 3, 5, 4))
    nearest = np.asarray(layers.Resize2x("nearest")(x))
    np.testing.assert_array_equal(nearest, np.repeat(np.repeat(x, 2, axis=1), 2, axis=2))
    bilinear = np.asarray(layers.Resize2x("bilinear")(x))
    assert bilinear.shape == (2, 6, 10, 4)
    # Half-pixel centres: each output pixel is 3/4 its source pixel plus 1/4 a neighbour.
    np.testing.assert_allclose(
        bilinear[:, 1, 1],
        0.5625 * x[:, 0, 0] + 0.1875 * (x[:, 0, 1] + x[:, 1, 0]) + 0.0625 * x[:, 1, 1],
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_resize2x_takes_any_size_in_a_graph_and_keeps_the_channels(interpolation):
    """Inference traces generators with unknown height and width (Keras' UpSampling2D cannot:
    bilinear fails on dynamic sizes, nearest loses the channel count TFLite needs)."""
    layer = layers.Resize2x(interpolation)
    traced = tf.function(layer, autograph=False).get_concrete_function(
        tf.TensorSpec([None, None, None, 3])
    )
    assert traced.structured_outputs.shape.as_list() == [None, None, None, 3]
    assert traced(tf.constant(_random((1, 5, 7, 3)))).shape == (1, 10, 14, 3)
    again = layers.Resize2x.from_config(layer.get_config())
    assert again.interpolation == interpolation
    with pytest.raises(ValueError, match="interpolation must be nearest or bilinear"):
        layers.Resize2x("bicubic")


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_resize2x_keeps_bfloat16(mixed_bfloat16, interpolation):
    layer = layers.Resize2x(interpolation)
    x = tf.constant(_random((1, 4, 4, 2)))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(tf.cast(y, tf.float32))
    assert y.dtype == tf.bfloat16
    # Each input value reaches output values of total weight 4 (a resize by 2 x 2).
    np.testing.assert_allclose(tape.gradient(loss, x).numpy().sum(), 4 * 32, rtol=1e-2)
