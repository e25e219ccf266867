"""The generators: ResNet (resnet_9blocks, resnet_6blocks) and UNet (unet_256, unet_128).

Each is a Keras functional model built by a pure function of its arguments, layer for layer the
official PyTorch CycleGAN/pix2pix network (same order, padding alignment, biases and sizes), so
parameter counts agree exactly and PyTorch weights can be ported by position. The variants are a
table of partials; `build_generator` dispatches on the name and `size_multiple` tells inference
and export how to pad inputs of arbitrary size.

Images are NHWC in [-1, 1]; outputs are float32 tanh activations even under mixed precision.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import keras

from cyclegan_tf import config, layers
from cyclegan_tf import precision as precision_lib


@dataclasses.dataclass(frozen=True)
class _Options:
    """The arguments every layer of a generator shares, and the ResNet variant (see
    `build_generator`)."""

    norm: str
    init_type: str
    init_gain: float
    norm_epsilon: float = 1e-5
    down_padding: str = "zeros"
    upsampling: str = "torch"
    conv_bias: str = "auto"

    def _bias(self, use_bias):
        if use_bias is not None:
            return use_bias
        return self.conv_bias == "auto" and layers.use_bias(self.norm)

    def conv(self, x, filters, kernel_size, name, strides=1, padding=0, use_bias=None):
        return layers.conv2d(
            x,
            filters,
            kernel_size,
            strides=strides,
            padding=padding,
            use_bias=self._bias(use_bias),
            init_type=self.init_type,
            init_gain=self.init_gain,
            name=name,
        )

    def _keras_same(self, name):
        """Arguments of the Keras-"same" k3 s2 variants (`down_padding`/`upsampling` keras_same)."""
        return dict(
            strides=2,
            padding="same",
            use_bias=self._bias(None),
            kernel_initializer=layers.kernel_initializer(self.init_type, self.init_gain),
            name=name,
        )

    def down_conv(self, x, filters, name):
        """The ResNet's k3 s2 downsampling: PyTorch's padding=1 (zeros or reflect) or Keras'
        "same" (zero padding after only, on even sizes)."""
        if self.down_padding == "reflect":
            x = layers.ReflectionPadding2D(1, name=f"{name}_reflect")(x)
            return self.conv(x, filters, 3, strides=2, name=name)
        if self.down_padding == "keras_same":
            return layers.Conv2D(filters, 3, **self._keras_same(name))(x)
        return self.conv(x, filters, 3, strides=2, padding=1, name=name)

    def conv_transpose(self, x, filters, kernel_size, name, output_padding=0, use_bias=None):
        return layers.conv2d_transpose(
            x,
            filters,
            kernel_size,
            strides=2,
            padding=1,
            output_padding=output_padding,
            use_bias=self._bias(use_bias),
            init_type=self.init_type,
            init_gain=self.init_gain,
            name=name,
        )

    def resize(self, x, name):
        """Doubles height and width (`layers.Resize2x`, nearest or bilinear): the first half of
        a resize-convolution (`config.RESIZE_UPSAMPLINGS`)."""
        interpolation = self.upsampling[len("resize_") :]
        return layers.Resize2x(interpolation, name=f"{name}_resize")(x)

    def up_conv(self, x, filters, name):
        """The ResNet's k3 s2 upsampling: PyTorch's padding=1, output_padding=1 (drops the first
        row and column of the full result), Keras' "same" (drops the last), or a x2 resize then
        a reflect-padded k3 s1 conv like the blocks'."""
        if self.upsampling in config.RESIZE_UPSAMPLINGS:
            x = layers.ReflectionPadding2D(1, name=f"{name}_reflect")(self.resize(x, name))
            return self.conv(x, filters, 3, name=name)
        if self.upsampling == "keras_same":
            return keras.layers.Conv2DTranspose(filters, 3, **self._keras_same(name))(x)
        return self.conv_transpose(x, filters, 3, output_padding=1, name=name)

    def unet_up_conv(self, x, filters, name, use_bias=None):
        """The UNet's upsampling: the official transposed conv k4 s2 p1, or a x2 resize then a
        k3 s1 conv with zero padding 1 like the UNet's down convs pad."""
        if self.upsampling in config.RESIZE_UPSAMPLINGS:
            x = self.resize(x, name)
            return self.conv(x, filters, 3, padding=1, use_bias=use_bias, name=name)
        return self.conv_transpose(x, filters, 4, use_bias=use_bias, name=name)

    def norm_layer(self, x, name):
        return layers.normalization(
            self.norm, name=name, gamma_stddev=self.init_gain, epsilon=self.norm_epsilon
        )(x)


def _resnet(
    inputs, *, n_blocks: int, ngf: int, options: _Options, dropout: bool, output_channels: int
):
    """The official ResnetGenerator: c7s1-ngf, d2ngf, d4ngf, n x R4ngf, u2ngf, ungf, c7s1-3."""
    o = options
    x = layers.ReflectionPadding2D(3, name="in_reflect")(inputs)
    x = o.conv(x, ngf, 7, name="in_conv")
    x = o.norm_layer(x, name="in_norm")
    x = keras.layers.ReLU(name="in_relu")(x)

    for i in (1, 2):
        x = o.down_conv(x, ngf * 2**i, name=f"down{i}_conv")
        x = o.norm_layer(x, name=f"down{i}_norm")
        x = keras.layers.ReLU(name=f"down{i}_relu")(x)

    dim = ngf * 4
    for b in range(1, n_blocks + 1):
        y = layers.ReflectionPadding2D(1, name=f"block{b}_reflect1")(x)
        y = o.conv(y, dim, 3, name=f"block{b}_conv1")
        y = o.norm_layer(y, name=f"block{b}_norm1")
        y = keras.layers.ReLU(name=f"block{b}_relu")(y)
        if dropout:
            y = keras.layers.Dropout(0.5, name=f"block{b}_dropout")(y)
        y = layers.ReflectionPadding2D(1, name=f"block{b}_reflect2")(y)
        y = o.conv(y, dim, 3, name=f"block{b}_conv2")
        y = o.norm_layer(y, name=f"block{b}_norm2")
        x = keras.layers.Add(name=f"block{b}_add")([x, y])

    for i in (1, 2):
        x = o.up_conv(x, ngf * 2 ** (2 - i), name=f"up{i}_conv")
        x = o.norm_layer(x, name=f"up{i}_norm")
        x = keras.layers.ReLU(name=f"up{i}_relu")(x)

    x = layers.ReflectionPadding2D(3, name="out_reflect")(x)
    x = o.conv(x, output_channels, 7, use_bias=True, name="out_conv")
    return keras.layers.Activation("tanh", dtype="float32", name="out_tanh")(x)


def _unet(
    inputs, *, num_downs: int, ngf: int, options: _Options, dropout: bool, output_channels: int
):
    """The official UnetGenerator, unrolled from its recursive UnetSkipConnectionBlock.

    Level 1 is the outermost block, level `num_downs` the innermost. Each level halves the size on
    the way down (LeakyReLU, conv k4 s2 p1, norm) and doubles it on the way up (ReLU, transposed
    conv k4 s2 p1, or with a resize `upsampling` a x2 resize and a conv k3 s1 p1; norm), then
    concatenates `[skip, up]` along channels. The outermost level has
    no activation or norm on the way down and ends in tanh; the innermost has no norm on the way
    down; with `dropout`, the levels between the 8*ngf-wide level 4 and the innermost drop 0.5.
    """
    o = options
    # inner[i] is the width level i + 1 produces on the way down; outer[i] what it returns up.
    inner = [ngf * min(2**i, 8) for i in range(num_downs)]
    outer = [output_channels, *inner[:-1]]

    downs = []
    x = inputs
    for i in range(num_downs):
        level = i + 1
        if i > 0:
            x = keras.layers.LeakyReLU(0.2, name=f"down{level}_lrelu")(x)
        # The outermost down conv follows the norm rule too (official `bias=use_bias`).
        x = o.conv(x, inner[i], 4, strides=2, padding=1, name=f"down{level}_conv")
        if 0 < i < num_downs - 1:
            x = o.norm_layer(x, name=f"down{level}_norm")
        downs.append(x)

    for i in reversed(range(1, num_downs)):
        level = i + 1
        x = keras.layers.ReLU(name=f"up{level}_relu")(x)
        x = o.unet_up_conv(x, outer[i], name=f"up{level}_conv")
        x = o.norm_layer(x, name=f"up{level}_norm")
        if dropout and 4 <= i < num_downs - 1:
            x = keras.layers.Dropout(0.5, name=f"up{level}_dropout")(x)
        x = keras.layers.Concatenate(name=f"up{level}_concat")([downs[i - 1], x])

    x = keras.layers.ReLU(name="up1_relu")(x)
    x = o.unet_up_conv(x, outer[0], use_bias=True, name="up1_conv")
    return keras.layers.Activation("tanh", dtype="float32", name="out_tanh")(x)


@dataclasses.dataclass(frozen=True)
class _Variant:
    build: Callable[..., keras.KerasTensor]
    size_multiple: int


_VARIANTS: dict[str, _Variant] = {
    name: _Variant(build, config.GENERATOR_MULTIPLES[name])
    for name, build in (
        ("resnet_9blocks", functools.partial(_resnet, n_blocks=9)),
        ("resnet_6blocks", functools.partial(_resnet, n_blocks=6)),
        ("unet_256", functools.partial(_unet, num_downs=8)),
        ("unet_128", functools.partial(_unet, num_downs=7)),
        ("unet_64", functools.partial(_unet, num_downs=6)),
    )
}


def _variant(name: str) -> _Variant:
    if name not in _VARIANTS:
        raise ValueError(
            f"Unknown generator. Valid names: {', '.join(_VARIANTS)}. Received: name={name!r}"
        )
    return _VARIANTS[name]


def size_multiple(name: str) -> int:
    """Returns the number the input height and width of generator `name` must be a multiple of.

    ResNet generators downsample twice (4); UNets downsample `num_downs` times (256 for unet_256,
    128 for unet_128). Inference pads inputs up to a multiple and crops the output back.

    Raises:
      ValueError: on an unknown name.
    """
    return _variant(name).size_multiple


def build_generator(
    name: str,
    ngf: int = 64,
    norm: str = "instance",
    init_type: str = "normal",
    init_gain: float = 0.02,
    dropout: bool = False,
    input_shape: tuple[int | None, int | None, int] = (None, None, 3),
    model_name: str | None = None,
    output_channels: int = 3,
    norm_epsilon: float = 1e-5,
    down_padding: str = "zeros",
    upsampling: str = "torch",
    conv_bias: str = "auto",
) -> keras.Model:
    """Builds a generator as a Keras functional model.

    Args:
      name: one of `config.GENERATORS`: resnet_9blocks | resnet_6blocks | unet_256 | unet_128.
      ngf: filters of the first conv layer (the official `--ngf`).
      norm: instance | instance_affine | batch | none. Convs followed by batch norm have no bias.
      init_type: normal | xavier | kaiming | orthogonal (see `layers.kernel_initializer`).
      init_gain: scale of the initial weights.
      dropout: dropout 0.5 in the ResNet blocks / the inner UNet decoder levels (the official
        `--no_dropout` negated; CycleGAN trains without it).
      input_shape: `(height, width, channels)`; height and width may be None (any multiple of
        `size_multiple(name)`, at least 8 for ResNets).
      model_name: Keras model name (default: `name`).
      output_channels: channels of the output image.
      norm_epsilon: the norms' epsilon (PyTorch's 1e-5; Keras' GroupNormalization 1e-3).
      down_padding: ResNets: the stride-2 downsampling convs pad with `zeros` (official) or
        `reflect` (PyTorch `padding_mode="reflect"`), or Keras' `keras_same`.
      upsampling: `torch` (the official transposed convs: ResNets k3 s2 p1 output_padding 1,
        UNets k4 s2 p1); ResNets only: `keras_same` (Conv2DTranspose k3 s2 "same", one pixel
        shifted); any generator: `resize_nearest` / `resize_bilinear` (resize-convolution: a x2
        resize then a k3 s1 conv, reflect-padded in ResNets, zero-padded in UNets).
      conv_bias: `auto` (the official rule, `layers.use_bias`) or `output_only` (no bias but
        the output conv's).

    Returns:
      A model mapping `(batch, height, width, channels)` float images in [-1, 1] to
      `(batch, height, width, output_channels)` float32 images in [-1, 1].

    Raises:
      ValueError: on an unknown name or invalid argument, or a static height or width that is
        not a multiple of `size_multiple(name)`.
    """
    variant = _variant(name)
    _check_positive_int("ngf", ngf)
    _check_positive_int("output_channels", output_channels)
    if norm not in config.NORMS:
        raise ValueError(f"norm must be one of {', '.join(config.NORMS)}. Received: norm={norm!r}")
    layers.kernel_initializer(init_type, init_gain)  # validates both early
    _check_input_shape(input_shape, variant.size_multiple, name)
    for arg, value, choices in (
        ("down_padding", down_padding, config.DOWN_PADDINGS),
        ("upsampling", upsampling, config.UPSAMPLINGS),
        ("conv_bias", conv_bias, config.CONV_BIASES),
    ):
        if value not in choices:
            raise ValueError(f"{arg} must be one of {', '.join(choices)}. Received: {value!r}")
        anywhere = value == choices[0] or value in config.RESIZE_UPSAMPLINGS
        if not anywhere and not name.startswith("resnet"):
            raise ValueError(f"{arg}={value!r} is a ResNet variant; {name} takes {choices[0]}.")

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    outputs = variant.build(
        inputs,
        ngf=ngf,
        options=_Options(
            norm=norm,
            init_type=init_type,
            init_gain=init_gain,
            norm_epsilon=norm_epsilon,
            down_padding=down_padding,
            upsampling=upsampling,
            conv_bias=conv_bias,
        ),
        dropout=bool(dropout),
        output_channels=output_channels,
    )
    return keras.Model(inputs, outputs, name=model_name or name)


def _check_positive_int(arg: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{arg} must be a positive integer. Received: {arg}={value!r}")


def _check_input_shape(input_shape, multiple: int, name: str) -> None:
    if len(tuple(input_shape)) != 3 or not isinstance(input_shape[-1], int):
        raise ValueError(
            "input_shape must be (height, width, channels) with a known channel count. "
            f"Received: input_shape={input_shape!r}"
        )
    for size in input_shape[:2]:
        if size is not None and size % multiple:
            raise ValueError(
                f"{name} needs height and width that are multiples of {multiple}; pad the "
                f"images (inference does). Received: input_shape={tuple(input_shape)}"
            )


def build_from_config(
    model: config.ModelConfig, model_name: str | None = None, precision: str | None = None
) -> keras.Model:
    """The generator a run's `ModelConfig` describes: what training and inference both build.

    Args:
      model: the model section of a run config.
      model_name: the Keras model name (checkpoints key generators by the trainer's names).
      precision: one of `precision.POLICIES` to build under (see `precision.policy`); None:
        the current global Keras policy.

    Returns:
      A functional Keras model [N, H, W, 3] -> [N, H, W, 3] (float32 output in any precision).
    """
    with precision_lib.policy(precision):
        return build_generator(
            model.generator,
            ngf=model.ngf,
            norm=model.norm,
            init_type=model.init_type,
            init_gain=model.init_gain,
            dropout=model.dropout,
            model_name=model_name,
            norm_epsilon=model.norm_epsilon,
            down_padding=model.down_padding,
            upsampling=model.upsampling,
            conv_bias=model.conv_bias,
        )
