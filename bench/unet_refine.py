"""A bench-only UNet variant: a full-resolution refinement head after the outermost up conv.

`install()` replaces the UNet builders of `cyclegan_tf.generators` (in this process only) by the
official UNet whose outermost transposed conv writes `ngf` channels at full size instead of the
output's 3, followed by norm (head `norm`; head `none`: no norm, the up conv has a bias) + ReLU +
reflect-pad 1 + conv k3 s1 to the output channels + tanh. Training, checkpoints and scoring then
build it through `generators.build_from_config` as usual. Used by bench/quick_curve.py and
bench/quick_ema.py with `--unet_refine norm|none` (issue 23's crispness).
"""

from __future__ import annotations

import functools

HEADS = ("norm", "none")


def add_flag(parser) -> None:
    """The `--unet_refine` flag of bench/quick_curve.py and bench/quick_ema.py (this module
    imports Keras only when `install` runs, so `--help` stays quick)."""
    parser.add_argument(
        "--unet_refine",
        choices=HEADS,
        help="UNets with a full-size refinement head (bench/unet_refine.py; bench only)",
    )


def _unet_refine(inputs, *, num_downs, ngf, options, dropout, output_channels, head_norm):
    import keras

    from cyclegan_tf import layers

    o = options
    inner = [ngf * min(2**i, 8) for i in range(num_downs)]
    outer = [ngf, *inner[:-1]]  # the outermost level returns ngf channels, not the image's

    downs = []
    x = inputs
    for i in range(num_downs):
        level = i + 1
        if i > 0:
            x = keras.layers.LeakyReLU(0.2, name=f"down{level}_lrelu")(x)
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
    if head_norm:  # the norm rule for the bias, like the inner up convs
        x = o.unet_up_conv(x, outer[0], name="up1_conv")
        x = o.norm_layer(x, name="up1_norm")
    else:  # no norm: keeps the absolute grey level the outermost skip carries (bias on)
        x = o.unet_up_conv(x, outer[0], use_bias=True, name="up1_conv")
    x = keras.layers.ReLU(name="refine_relu")(x)
    x = layers.ReflectionPadding2D(1, name="refine_reflect")(x)
    x = o.conv(x, output_channels, 3, use_bias=True, name="refine_conv")
    return keras.layers.Activation("tanh", dtype="float32", name="out_tanh")(x)


def install(head: str = "norm") -> None:
    """head: `norm` (up conv, norm, ReLU, conv k3) or `none` (up conv with bias, ReLU, conv k3)."""
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}. Received: {head!r}")
    from cyclegan_tf import generators

    for name, num_downs in (("unet_256", 8), ("unet_128", 7), ("unet_64", 6)):
        old = generators._VARIANTS[name]
        build = functools.partial(_unet_refine, num_downs=num_downs, head_norm=head == "norm")
        generators._VARIANTS[name] = generators._Variant(build, old.size_multiple)
