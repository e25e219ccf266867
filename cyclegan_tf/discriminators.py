"""The discriminators: PatchGAN (basic = 70x70, n_layers) and the 1x1 PixelGAN (pixel).

Each is a Keras functional model built by a pure function of its arguments, layer for layer the
official PyTorch NLayerDiscriminator / PixelDiscriminator (k4 convs with 1-pixel zero padding,
LeakyReLU 0.2, no norm after the first conv). They return raw logits, one per patch, in float32
even under mixed precision; the losses apply the GAN objective (no sigmoid here).
"""

from __future__ import annotations

import functools

import keras

from cyclegan_tf import config, layers


def _n_layers(inputs, *, n_layers: int, ndf: int, norm: str, init_type: str, init_gain: float):
    """The official NLayerDiscriminator: C64 (no norm), C128, C256, C512 (stride 1), C1."""
    bias = layers.use_bias(norm)
    init = {"init_type": init_type, "init_gain": init_gain}

    x = layers.conv2d(inputs, ndf, 4, strides=2, padding=1, name="conv1", **init)
    x = keras.layers.LeakyReLU(0.2, name="lrelu1")(x)
    # Layers 2..n_layers halve the size; layer n_layers + 1 keeps it (stride 1, k4, pad 1: -1).
    for n in range(1, n_layers + 1):
        strides = 2 if n < n_layers else 1
        filters = ndf * min(2**n, 8)
        x = layers.conv2d(
            x, filters, 4, strides=strides, padding=1, use_bias=bias, name=f"conv{n + 1}", **init
        )
        x = layers.normalization(norm, name=f"norm{n + 1}", gamma_stddev=init_gain)(x)
        x = keras.layers.LeakyReLU(0.2, name=f"lrelu{n + 1}")(x)
    return layers.conv2d(x, 1, 4, padding=1, name="conv_logits", **init)


def _pixel(inputs, *, ndf: int, norm: str, init_type: str, init_gain: float):
    """The official PixelDiscriminator: 1x1 convs C64, C128 (norm), C1."""
    bias = layers.use_bias(norm)
    init = {"init_type": init_type, "init_gain": init_gain}

    x = layers.conv2d(inputs, ndf, 1, name="conv1", **init)
    x = keras.layers.LeakyReLU(0.2, name="lrelu1")(x)
    x = layers.conv2d(x, ndf * 2, 1, use_bias=bias, name="conv2", **init)
    x = layers.normalization(norm, name="norm2", gamma_stddev=init_gain)(x)
    x = keras.layers.LeakyReLU(0.2, name="lrelu2")(x)
    # The official code drops this bias too under batch norm, though no norm follows it.
    return layers.conv2d(x, 1, 1, use_bias=bias, name="conv_logits", **init)


_VARIANTS = {
    "basic": functools.partial(_n_layers, n_layers=3),
    "n_layers": _n_layers,
    "pixel": _pixel,
}


def build_discriminator(
    name: str = "basic",
    ndf: int = 64,
    n_layers: int = 3,
    norm: str = "instance",
    init_type: str = "normal",
    init_gain: float = 0.02,
    input_shape: tuple[int | None, int | None, int] = (None, None, 3),
    model_name: str | None = None,
) -> keras.Model:
    """Builds a discriminator as a Keras functional model.

    Args:
      name: one of `config.DISCRIMINATORS`: basic (70x70 PatchGAN, 3 layers) | n_layers
        (PatchGAN with `n_layers` layers) | pixel (1x1 PixelGAN).
      ndf: filters of the first conv layer (the official `--ndf`).
      n_layers: downsampling layers of the `n_layers` variant (ignored by the others).
      norm: instance | instance_affine | batch | none. Convs followed by batch norm have no bias.
      init_type: normal | xavier | kaiming | orthogonal (see `layers.kernel_initializer`).
      init_gain: scale of the initial weights.
      input_shape: `(height, width, channels)`; height and width may be None.
      model_name: Keras model name (default: `name`).

    Returns:
      A model mapping `(batch, height, width, channels)` images to float32 logits
      `(batch, h, w, 1)`: for PatchGANs `h = height / 2**(n_layers) - 2` for heights divisible by
      `2**n_layers` (30x30 for 256x256 and 3 layers); `h = height` for pixel.

    Raises:
      ValueError: on an unknown name or invalid argument.
    """
    if name not in _VARIANTS:
        raise ValueError(
            f"Unknown discriminator. Valid names: {', '.join(_VARIANTS)}. Received: name={name!r}"
        )
    for arg, value in (("ndf", ndf), ("n_layers", n_layers)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{arg} must be a positive integer. Received: {arg}={value!r}")
    if norm not in config.NORMS:
        raise ValueError(f"norm must be one of {', '.join(config.NORMS)}. Received: norm={norm!r}")
    layers.kernel_initializer(init_type, init_gain)  # validates both early
    if len(tuple(input_shape)) != 3 or not isinstance(input_shape[-1], int):
        raise ValueError(
            "input_shape must be (height, width, channels) with a known channel count. "
            f"Received: input_shape={input_shape!r}"
        )

    kwargs = {"ndf": ndf, "norm": norm, "init_type": init_type, "init_gain": init_gain}
    if name == "n_layers":
        kwargs["n_layers"] = n_layers
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = _VARIANTS[name](inputs, **kwargs)
    # The last conv computes in the policy's dtype; the logits leave in float32 for the loss.
    outputs = keras.layers.Activation("linear", dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name=model_name or name)
