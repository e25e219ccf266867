"""Building blocks shared by the generators and discriminators.

This module owns the pieces whose exact behaviour the official PyTorch CycleGAN fixes and Keras
does not provide as-is: reflection padding, the normalization choices (instance norm, affine-free
or affine, on a fused kernel; batch norm; none), the weight initializers (`normal | xavier |
kaiming | orthogonal`), PyTorch-aligned (transposed) convolutions, and `Conv2D`, whose gradients
are forward convolutions on CPUs where TensorFlow's own gradient kernels are slow
(`hardware.conv_gradients`).
Builders call `kernel_initializer` once per layer: an unseeded Keras initializer reused across
layers would give every layer the same values.
"""

from __future__ import annotations

import functools
from typing import Any

import keras
import tensorflow as tf

from cyclegan_tf import config, hardware

# PyTorch's BatchNorm2d momentum 0.1 weighs the new batch statistic; Keras' momentum weighs the
# running value, hence 0.9.
_BATCH_NORM_MOMENTUM = 0.9
_NORM_EPSILON = 1e-5


@keras.saving.register_keras_serializable(package="cyclegan_tf")
class ReflectionPadding2D(keras.layers.Layer):
    """Pads height and width by mirroring, like `torch.nn.ReflectionPad2d` (edge not repeated).

    Args:
      padding: pixels added on each side of both spatial axes. Must be smaller than the height and
        width of the input (a reflection cannot reach further than the opposite edge).
      **kwargs: base layer arguments (`name`, `dtype`, ...).

    Input shape: `(batch, height, width, channels)`; height and width may be None.
    Output shape: `(batch, height + 2 * padding, width + 2 * padding, channels)`.
    """

    def __init__(self, padding: int = 1, **kwargs: Any):
        super().__init__(**kwargs)
        if not isinstance(padding, int) or padding < 0:
            raise ValueError(f"padding must be an integer >= 0. Received: padding={padding!r}")
        self.padding = padding

    def call(self, inputs):
        p = self.padding
        return keras.ops.pad(inputs, [[0, 0], [p, p], [p, p], [0, 0]], mode="reflect")

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        grow = 2 * self.padding
        return (
            batch,
            None if height is None else height + grow,
            None if width is None else width + grow,
            channels,
        )

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "padding": self.padding}


@keras.saving.register_keras_serializable(package="cyclegan_tf")
class InstanceNormalization(keras.layers.GroupNormalization):
    """Instance norm: `GroupNormalization(groups=-1)`, affine-free (`center=False, scale=False`,
    PyTorch's `InstanceNorm2d(affine=False)`) or with a learned per-channel scale and offset
    (`affine=True`: `InstanceNorm2d(affine=True)`, gamma 1 and beta 0 at first), computed with one
    fused kernel where possible.

    For a batch of one image, instance norm is batch norm in training mode (statistics over height
    and width per channel), so the fused `FusedBatchNormV3` kernel and its fused gradient do the
    work of GroupNormalization's reshape, moments and arithmetic (about a dozen ops, each a pass
    over the feature map): at 128 px this took the paper step from 2.75 to 2.65 s (fp32) and
    the time to its first step from 19.6 to 14.6 s (smaller graph to trace and optimise). Larger
    batches are transposed to one image with N * C channels. Results agree with
    GroupNormalization to float32 rounding (1e-5).

    Under a mixed precision policy the layer takes and returns the compute dtype (bfloat16), like
    Keras' own layers; the fused kernel keeps its statistics in float32, so output and input
    gradient equal the float32 computation rounded to bfloat16 (tests/test_layers.py). Taking
    bfloat16 in and out saves the two casts around each norm: bf16 paper step at 128 px 1.65 ->
    1.59 s, 70 MB less memory (bench/RESULTS.md).

    With `affine`, gamma and beta are the fused kernel's scale and offset (float32 variables,
    not autocast: the kernel takes them in float32 whatever the input's dtype), so the learned
    part costs no extra op; their gradients come from the same fused gradient.

    Args:
      epsilon: added to the variance.
      affine: whether the layer has a learned per-channel scale (gamma) and offset (beta).
      **kwargs: base layer arguments (`name`, `dtype`, ...).
    """

    def __init__(self, epsilon: float = _NORM_EPSILON, affine: bool = False, **kwargs: Any):
        for key in ("groups", "center", "scale"):
            kwargs.pop(key, None)  # fixed; present in configs written by get_config
        affine = bool(affine)
        super().__init__(groups=-1, center=affine, scale=affine, epsilon=epsilon, **kwargs)
        self.affine = affine

    def call(self, inputs):
        if inputs.shape.rank != 4:
            return super().call(inputs)
        x = tf.cast(inputs, self.compute_dtype)
        if x.shape[0] == 1:
            return self._fused(x, self.gamma, self.beta)
        # [N, H, W, C] -> [1, H, W, N * C]: every (sample, channel) pair becomes a channel of one
        # image. Per channel the kernel computes what it computes for a batch of one, equal to
        # float rounding (its reductions split N * C channels differently: <= 3e-6 relative in
        # tests/test_layers.py), so replicas holding parts of a batch see the same numbers.
        # One Shape + Unpack for the dynamic sizes, -1 where a reshape can infer one: fewer nodes
        # than indexing each size (every shape-generic inference function traces this path; the
        # tiny generator's graph: 932 -> 711 nodes; tracing costs ~0.5-1 ms per node).
        _, h, w, c = tf.unstack(tf.shape(x), num=4)
        if x.shape[-1] is not None:
            c = x.shape[-1]
        y = tf.reshape(tf.transpose(x, [1, 2, 0, 3]), tf.stack([1, h, w, -1]))
        scale = offset = None
        if self.affine:  # channel n * C + c of the one image is channel c of sample n
            batch = tf.shape(x)[0]
            scale, offset = tf.tile(self.gamma, [batch]), tf.tile(self.beta, [batch])
        y = self._fused(y, scale, offset)
        y = tf.transpose(tf.reshape(y, tf.stack([h, w, -1, c])), [2, 0, 1, 3])
        y.set_shape(x.shape)
        return y

    def _fused(self, x, scale=None, offset=None):
        """Batch norm (training mode) of [1, H, W, C], statistics in float32: times `scale`
        plus `offset` (float32 [C]) if given, else no affine part."""
        channels = [x.shape[-1]] if x.shape[-1] is not None else tf.shape(x)[-1:]
        y, _, _ = tf.compat.v1.nn.fused_batch_norm(
            x,
            tf.ones(channels, tf.float32) if scale is None else scale,
            tf.zeros(channels, tf.float32) if offset is None else offset,
            epsilon=self.epsilon,
            is_training=True,
        )
        return y

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "affine": self.affine}


def normalization(
    norm: str, name: str | None = None, gamma_stddev: float = 0.02, epsilon: float = _NORM_EPSILON
) -> keras.layers.Layer:
    """Returns a fresh normalization layer of the given kind.

    Statistics are computed in float32 even under a mixed precision policy: bfloat16 variance
    over a feature map loses too many bits. Batch norm is a float32 layer (`dtype="float32"`);
    instance norm computes them in float32 inside its fused kernel and returns the compute dtype.

    Args:
      norm: `instance` (per sample and channel, no affine parameters, like
        `InstanceNorm2d(affine=False)`), `instance_affine` (the same with a learned per-channel
        scale and offset, initially 1 and 0, like `InstanceNorm2d(affine=True)`), `batch` (like
        `BatchNorm2d`, gamma ~ N(1, gamma_stddev), beta 0) or `none` (identity).
      name: layer name.
      gamma_stddev: standard deviation of the batch norm scale's initial values; the official code
        uses the `init_gain` of the networks (and leaves InstanceNorm2d's affine part at 1 and 0).
      epsilon: added to the variance (PyTorch's 1e-5; Keras' GroupNormalization uses 1e-3).

    Returns:
      A layer mapping `(batch, height, width, channels)` to the same shape.

    Raises:
      ValueError: if `norm` is not one of `config.NORMS`.
    """
    if norm in ("instance", "instance_affine"):
        return InstanceNormalization(epsilon=epsilon, affine=norm == "instance_affine", name=name)
    if norm == "batch":
        return keras.layers.BatchNormalization(
            momentum=_BATCH_NORM_MOMENTUM,
            epsilon=epsilon,
            gamma_initializer=keras.initializers.RandomNormal(mean=1.0, stddev=gamma_stddev),
            dtype="float32",
            name=name,
        )
    if norm == "none":
        return keras.layers.Identity(name=name)
    raise ValueError(f"norm must be one of {', '.join(config.NORMS)}. Received: norm={norm!r}")


def use_bias(norm: str) -> bool:
    """Whether a convolution followed by `norm` carries a bias.

    The official code sets `use_bias = norm_layer == nn.InstanceNorm2d` (true for a
    `functools.partial(nn.InstanceNorm2d, affine=True)` too): only instance norm keeps the biases
    (batch norm's beta makes them redundant, and `norm="none"` drops them too).
    """
    return norm in ("instance", "instance_affine")


def kernel_initializer(init_type: str, gain: float = 0.02) -> keras.initializers.Initializer:
    """Returns a fresh kernel initializer matching the official `init_weights`.

    Fans follow PyTorch's for both `Conv2D` kernels `(kh, kw, in, out)` and `Conv2DTranspose`
    kernels `(kh, kw, out, in)`: fan_in = kh * kw * shape[-2]. Distributions are untruncated, as
    in PyTorch. Biases are zero-initialized by the layers' defaults, as in the official code.

    Args:
      init_type: `normal` (N(0, gain)), `xavier` (Glorot normal scaled by `gain`: std = gain *
        sqrt(2 / (fan_in + fan_out))), `kaiming` (He normal, fan_in: std = sqrt(2 / fan_in);
        `gain` unused, as in the official code) or `orthogonal` (orthogonal matrix times `gain`).
      gain: scale of the initial weights.

    Returns:
      A new, unseeded initializer (values follow the Keras global seed,
      `keras.utils.set_random_seed`).

    Raises:
      ValueError: on an unknown `init_type` or a non-positive `gain`.
    """
    if not gain > 0:
        raise ValueError(f"init_gain must be > 0. Received: init_gain={gain!r}")
    if init_type == "normal":
        return keras.initializers.RandomNormal(mean=0.0, stddev=gain)
    if init_type == "xavier":
        return keras.initializers.VarianceScaling(
            scale=gain**2, mode="fan_avg", distribution="untruncated_normal"
        )
    if init_type == "kaiming":
        return keras.initializers.VarianceScaling(
            scale=2.0, mode="fan_in", distribution="untruncated_normal"
        )
    if init_type == "orthogonal":
        return keras.initializers.Orthogonal(gain=gain)
    raise ValueError(
        f"init_type must be one of {', '.join(config.INITS)}. Received: init_type={init_type!r}"
    )


def _transpose(x, perm):
    """`tf.transpose(x, perm)` done on the fewest axes: size-1 axes dropped and axes that stay
    neighbours merged, then reshaped back. TensorFlow's CPU kernel does neither, and the rank-4
    transposes of the gradients below cost twice to three times their rank-2 equivalents: on the
    AVX2-only EPYC, [1, 34, 34, 256] -> [256, 34, 34, 1] took 2.0 ms, the same bytes as one
    [1156, 256] matrix transpose 0.9 ms (`tf.function`, medians of 40 interleaved calls)."""
    static = x.shape.as_list()
    dynamic = tf.shape(x) if None in static else None  # only when a size is unknown
    sizes = [d if d is not None else dynamic[i] for i, d in enumerate(static)]
    out_sizes = [sizes[axis] for axis in perm]
    kept = [axis for axis in perm if static[axis] != 1]
    rank = {axis: i for i, axis in enumerate(sorted(kept))}
    groups: list[list[int]] = []  # runs of axes, in output order, contiguous in the input
    for axis in kept:
        if groups and rank[groups[-1][-1]] + 1 == rank[axis]:
            groups[-1].append(axis)
        else:
            groups.append([axis])
    if len(groups) <= 1:  # the bytes keep their order: a reshape
        return tf.reshape(x, out_sizes)
    by_input = sorted(groups, key=lambda group: group[0])
    merged = [functools.reduce(lambda a, b: a * b, (sizes[a] for a in g), 1) for g in by_input]
    y = x if merged == static else tf.reshape(x, merged)
    y = tf.transpose(y, [by_input.index(group) for group in groups])
    return y if y.shape.as_list() == out_sizes else tf.reshape(y, out_sizes)


def _kernel_gradient(x, dy, kernel_shape):
    """The gradient of the stride-1 `conv2d(x, kernel, 1, "VALID")` with respect to its
    `kernel_shape` kernel, as one forward convolution with batch and channel axes swapped: the
    channels of `x` are the batch, the batch is the input channels, `dy` is the kernel, and each
    output pixel is one kernel tap."""
    xt = _transpose(x, [3, 1, 2, 0])  # (in, height, width, batch)
    dyt = _transpose(dy, [1, 2, 0, 3])  # (out_height, out_width, batch, out)
    taps = tf.nn.conv2d(xt, dyt, 1, "VALID")  # (in, kh, kw, out)
    return tf.ensure_shape(_transpose(taps, [1, 2, 0, 3]), kernel_shape)


# Below this many input channels, a widening conv's input gradient stays TensorFlow's kernel.
_MIN_FORWARD_INPUT_GRADIENT_CHANNELS = 16


def _input_gradient(x, kernel, dy):
    """The gradient of the stride-1 `conv2d(x, kernel, 1, "VALID")` with respect to `x`.

    It is the full correlation of `dy` with the flipped, transposed kernel: a forward
    convolution, on the AVX2-only EPYC 114 -> 6 ms for the 7x7 64->3 output conv at 128 px,
    44 -> 33 ms for a residual block's 3x3 256->256 conv at 64x64 (equal at 32x32), 23-28 ->
    14-17 ms for the discriminator's 4x4 256->512 conv at 128 px. Only where it produces very few
    channels (the 3-channel input conv's gradient: 5.3 vs 16 ms) is TensorFlow's own kernel the
    faster one.
    """
    kh, kw, c_in, c_out = kernel.shape
    if c_out <= c_in or c_in >= _MIN_FORWARD_INPUT_GRADIENT_CHANNELS:
        padded = tf.pad(dy, [[0, 0], [kh - 1, kh - 1], [kw - 1, kw - 1], [0, 0]])
        # Flipping both spatial axes reverses the flattened taps.
        taps = tf.reverse(tf.reshape(kernel, [kh * kw, c_in, c_out]), [0])
        flipped = tf.reshape(_transpose(taps, [0, 2, 1]), [kh, kw, c_out, c_in])
        return tf.nn.conv2d(padded, flipped, 1, "VALID")
    return tf.raw_ops.Conv2DBackpropInput(
        input_sizes=tf.shape(x),
        filter=kernel,
        out_backprop=dy,
        strides=[1, 1, 1, 1],
        padding="VALID",
    )


@tf.custom_gradient
def _conv2d_forward_gradients(x, kernel):
    """`tf.nn.conv2d(x, kernel, 1, "VALID")` whose gradients are forward convolutions."""

    def grad(dy):
        if x.dtype == tf.bfloat16 and hardware.onednn():
            # oneDNN's bfloat16 convolution (TF 2.21, AMX/AVX512_BF16 CPU) is wrong for large
            # kernels over a few input channels: a 16x16 kernel over 4, 6, 8 or 12 channels gives
            # ~100% relative error (12x12 over 8 too; 1, 3, 16 and 32 channels and kernels <= 9
            # are right), and the forward kernel gradient is exactly such a convolution (dy as a
            # kernel over the batch as channels). TensorFlow's own kernel-gradient op is right.
            dk = tf.raw_ops.Conv2DBackpropFilter(
                input=x, filter_sizes=tf.shape(kernel), out_backprop=dy,
                strides=[1, 1, 1, 1], padding="VALID",
            )  # fmt: skip
        else:
            dk = _kernel_gradient(x, dy, kernel.shape)
        return _input_gradient(x, kernel, dy), dk

    return tf.nn.conv2d(x, kernel, 1, "VALID"), grad


@keras.saving.register_keras_serializable(package="cyclegan_tf")
class Conv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` (same weights, same forward kernel) whose gradients are computed as
    forward convolutions where TensorFlow's own gradient kernels are slow
    (`hardware.conv_gradients`, read when the layer is traced): stride-1 convs only (for strided
    ones the reformulation, a dilated convolution, measured slower than TensorFlow's kernels).
    Same values up to float rounding (tests/test_layers.py). The forward pass is TensorFlow's
    Conv2D either way, so exports are unchanged."""

    def call(self, inputs):
        if self.data_format != "channels_last":
            return super().call(inputs)
        # Keras adds the bias as reshape to [1, 1, 1, C], squeeze back, BiasAdd: the same BiasAdd
        # without the two reshapes, whose ops (and their gradients' ops) every trace builds.
        outputs = self.convolution_op(inputs, self.kernel)
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, self.bias)
        return outputs if self.activation is None else self.activation(outputs)

    def convolution_op(self, inputs, kernel):
        plain = (
            self.padding == "valid"
            and self.data_format == "channels_last"
            and tuple(self.strides) == (1, 1)
            and tuple(self.dilation_rate) == (1, 1)
        )
        if not plain or hardware.conv_gradients() == "stock":
            return super().convolution_op(inputs, kernel)
        # A tensor, not the variable: the custom gradient then reaches the variable through the
        # read, as for any op (a variable used inside it would need its own gradient contract).
        return _conv2d_forward_gradients(inputs, tf.convert_to_tensor(kernel))


def conv2d(
    x,
    filters: int,
    kernel_size: int,
    *,
    strides: int = 1,
    padding: int = 0,
    use_bias: bool = True,
    init_type: str = "normal",
    init_gain: float = 0.02,
    name: str | None = None,
):
    """Applies a convolution aligned like `torch.nn.Conv2d(..., padding=padding)`.

    Keras' `padding="same"` pads asymmetrically (less before than after) whenever the stride does
    not divide the padded size evenly, e.g. a stride-2 3x3 conv on even sizes; explicit symmetric
    zero padding and `padding="valid"` matches PyTorch for every input size.

    Args:
      x: symbolic tensor `(batch, height, width, channels)`.
      filters: output channels.
      kernel_size: square kernel side.
      strides: square stride.
      padding: zero pixels added on each side before the convolution.
      use_bias: whether the convolution has a bias (zero-initialized).
      init_type: see `kernel_initializer`.
      init_gain: see `kernel_initializer`.
      name: conv layer name; the padding layer is named `<name>_pad`.

    Returns:
      `(batch, (height + 2 * padding - kernel_size) // strides + 1, ..., filters)`.
    """
    if padding:
        x = keras.layers.ZeroPadding2D(padding, name=name and f"{name}_pad")(x)
    return Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="valid",
        use_bias=use_bias,
        kernel_initializer=kernel_initializer(init_type, init_gain),
        name=name,
    )(x)


@keras.saving.register_keras_serializable(package="cyclegan_tf")
class Resize2x(keras.layers.Layer):
    """Doubles height and width with `tf.image.resize`: the first half of a resize-convolution
    (Odena et al. 2016). `nearest` repeats each pixel 2 x 2 (half-pixel centres), `bilinear`
    interpolates between neighbours.

    Keras' `UpSampling2D` does not serve: its bilinear path needs static sizes inside a graph
    (inference pads images of any size under `tf.function`) and its nearest path (`ops.repeat`)
    loses the static channel count, which TFLite's converter needs for the next conv. The ops
    here are TFLite builtins (RESIZE_NEAREST_NEIGHBOR, RESIZE_BILINEAR) and ONNX Resize.

    Args:
      interpolation: `nearest` or `bilinear`.
      **kwargs: base layer arguments (`name`, `dtype`, ...).

    Input shape: `(batch, height, width, channels)`; height and width may be None.
    Output shape: `(batch, 2 * height, 2 * width, channels)`, in the input's dtype.
    """

    def __init__(self, interpolation: str = "nearest", **kwargs: Any):
        super().__init__(**kwargs)
        if interpolation not in ("nearest", "bilinear"):
            raise ValueError(
                f"interpolation must be nearest or bilinear. Received: {interpolation!r}"
            )
        self.interpolation = interpolation

    def call(self, inputs):
        size = tf.shape(inputs)[1:3] * 2
        outputs = tf.image.resize(inputs, size, method=self.interpolation)
        # Bilinear resizing returns float32 whatever it is given; keep the compute dtype.
        return tf.cast(outputs, inputs.dtype)

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        return (
            batch,
            None if height is None else 2 * height,
            None if width is None else 2 * width,
            channels,
        )

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "interpolation": self.interpolation}


@keras.saving.register_keras_serializable(package="cyclegan_tf")
class Cropping2D(keras.layers.Cropping2D):
    """`keras.layers.Cropping2D` (channels last) whose gradient is a pad. The forward pass is
    Keras' strided slice (exports unchanged); TensorFlow's generic `StridedSliceGrad` took 37 ms
    where a pad takes 3.6 for the ResNet generator's last transposed conv at 256 px (AVX2 EPYC,
    same values)."""

    def call(self, inputs):
        if self.data_format != "channels_last":
            return super().call(inputs)
        (top, bottom), (left, right) = self.cropping

        @tf.custom_gradient
        def crop(x):
            def grad(dy):
                return tf.pad(dy, [[0, 0], [top, bottom], [left, right], [0, 0]])

            return x[:, top : -bottom or None, left : -right or None, :], grad

        return crop(inputs)


def conv2d_transpose(
    x,
    filters: int,
    kernel_size: int,
    *,
    strides: int = 2,
    padding: int = 1,
    output_padding: int = 0,
    use_bias: bool = True,
    init_type: str = "normal",
    init_gain: float = 0.02,
    name: str | None = None,
):
    """Applies a transposed convolution aligned like `torch.nn.ConvTranspose2d`.

    PyTorch computes the full transposed convolution, `(height - 1) * strides + kernel_size`
    rows, then drops `padding` rows at the start and `padding - output_padding` at the end.
    Keras' `padding="same"` drops `(kernel_size - strides) // 2` at the start, which agrees for
    k4 s2 p1 (the UNet) but not for k3 s2 p1 op1 (the ResNet: PyTorch drops the first row, Keras
    the last). Where they disagree, the full result is cropped explicitly.

    Args:
      x: symbolic tensor `(batch, height, width, channels)`.
      filters: output channels.
      kernel_size: square kernel side.
      strides: square stride.
      padding: PyTorch's `padding`.
      output_padding: PyTorch's `output_padding`; must not exceed `padding`.
      use_bias: whether the convolution has a bias (zero-initialized).
      init_type: see `kernel_initializer`.
      init_gain: see `kernel_initializer`.
      name: layer name; a crop, when needed, is named `<name>_crop`.

    Returns:
      `(batch, (height - 1) * strides - 2 * padding + kernel_size + output_padding, ..., filters)`.
    """
    if not 0 <= output_padding <= padding:
        raise ValueError(
            "output_padding must be in [0, padding]. "
            f"Received: padding={padding}, output_padding={output_padding}"
        )
    crop = (padding, padding - output_padding)
    total = kernel_size - strides
    same = total >= 0 and crop == (total // 2, total - total // 2)
    x = keras.layers.Conv2DTranspose(
        filters,
        kernel_size,
        strides=strides,
        padding="same" if same else "valid",
        use_bias=use_bias,
        kernel_initializer=kernel_initializer(init_type, init_gain),
        name=name,
    )(x)
    if not same and crop != (0, 0):
        x = Cropping2D((crop, crop), name=name and f"{name}_crop")(x)
    return x
