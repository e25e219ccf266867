"""The one image policy: which files are images, how they are decoded, uint8 <-> [-1, 1].

Every module that reads image files (`data.py` for training, `translate.py` and the exported
`serving_default` signature for translation) or turns network outputs into pixels (`inference.py`,
`visualize.py`, `synthetic.py`) uses these functions, so training, translation and serving accept
the same files and compute the same pixels.

- Files: `IMAGE_EXTENSIONS` (JPEG, PNG, BMP, GIF, WebP; case-insensitive), `is_image_file`.
- Decoding (`decode_rgb`): any of those formats -> RGB uint8 [H, W, 3]; grey is replicated, alpha
  dropped (like PIL's `convert("RGB")`), GIFs give their first frame. Animated WebP is refused
  with an error: TensorFlow 2.21's decoder returns wrong pixels for it or corrupts the heap
  (`free(): invalid next size`, the process dies), depending on the arguments.
- Values: uint8 [0, 255] <-> float32 [-1, 1] as `x / 127.5 - 1`, rounding half to even on the
  way back; graph versions (`uint8_to_float`, `float_to_uint8`, `pixels_to_float`) and numpy ones
  (`to_float`, `to_uint8`) give identical numbers.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")

# Magic numbers of the formats `decode_rgb` reads (WebP: "RIFF", 4 size bytes, "WEBP"). Checking
# them first turns "unknown format" into an error that says the image could not be decoded.
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM")
_WEBP_RIFF, _WEBP_TAG = b"RIFF", b"WEBP"
_FORMAT_NAMES = "a JPEG, PNG, GIF, BMP or WebP file"
# WebP header bits (RIFF container, https://developers.google.com/speed/webp/docs/riff_container):
# the first chunk's tag at byte 12; a VP8X chunk has its flags at byte 20 (0x02 animation,
# 0x10 alpha); a VP8L (lossless) chunk has its alpha_is_used bit in byte 24 (0x10).
_WEBP_HEADER_BYTES = 32
_VP8X_ANIMATION, _VP8X_ALPHA, _VP8L_ALPHA = 0x02, 0x10, 0x10
# float32 value of every uint8 level: exactly what numpy and eager TF compute for x / 127.5 - 1.
_UINT8_TO_FLOAT = np.arange(256, dtype=np.float32) / np.float32(127.5) - np.float32(1.0)


# -- files -----------------------------------------------------------------------------------


def is_image_file(path: str) -> bool:
    """Whether `path` names an image by its extension (`IMAGE_EXTENSIONS`, any case)."""
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def decode_rgb(encoded: tf.Tensor, index=0) -> tf.Tensor:
    """Decodes one JPEG/PNG/BMP/GIF/WebP image (GIF: first frame) to uint8 [H, W, 3].

    Grayscale is replicated to RGB; an alpha channel is dropped (like PIL's `convert("RGB")`);
    16-bit PNGs are scaled to 8 bits. Graph-safe (used inside tf.data and exported signatures).

    Args:
      encoded: scalar string tensor, the file's bytes.
      index: position in the request, named in the error message.

    Returns:
      uint8 [H, W, 3].

    Raises:
      tf.errors.InvalidArgumentError (when run): "Could not decode image <index> ..." if the bytes
        are not one of the five formats or an animated WebP, or the decoder's own message for a
        corrupt file.
    """
    encoded = tf.convert_to_tensor(encoded, tf.string)
    # Zero-padded so that reading the header never runs past the end of a short file.
    head = tf.strings.substr(
        tf.strings.join([encoded, b"\0" * _WEBP_HEADER_BYTES]), 0, _WEBP_HEADER_BYTES
    )
    webp = tf.logical_and(
        tf.strings.substr(head, 0, 4) == _WEBP_RIFF, tf.strings.substr(head, 8, 4) == _WEBP_TAG
    )
    known = tf.reduce_any(
        [tf.strings.substr(head, 0, len(magic)) == magic for magic in _MAGIC] + [webp], axis=0
    )
    header = tf.io.decode_raw(head, tf.uint8)
    chunk = tf.strings.substr(head, 12, 4)
    vp8x_flags = tf.where(chunk == b"VP8X", header[20], tf.constant(0, tf.uint8))
    animated = tf.logical_and(webp, tf.bitwise.bitwise_and(vp8x_flags, _VP8X_ANIMATION) > 0)
    alpha = tf.logical_or(
        tf.bitwise.bitwise_and(vp8x_flags, _VP8X_ALPHA) > 0,
        tf.logical_and(chunk == b"VP8L", tf.bitwise.bitwise_and(header[24], _VP8L_ALPHA) > 0),
    )
    checks = [
        tf.debugging.Assert(known, [_could_not_decode(index, f"not {_FORMAT_NAMES}")]),
        tf.debugging.Assert(
            tf.logical_not(animated),
            [_could_not_decode(index, "animated WebP is not supported (save one frame)")],
        ),
    ]
    with tf.control_dependencies(checks):
        # TensorFlow's WebP decoder only returns the file's own channel count (3 or 4); every
        # other format converts to the 3 channels asked for.
        image = tf.cond(
            tf.logical_and(webp, alpha),
            lambda: _decode(encoded, 4)[:, :, :3],
            lambda: _decode(encoded, 3),
        )
    return tf.ensure_shape(image, [None, None, 3])


def _decode(encoded: tf.Tensor, channels: int) -> tf.Tensor:
    return tf.io.decode_image(encoded, channels=channels, dtype=tf.uint8, expand_animations=False)


def _could_not_decode(index, reason: str) -> tf.Tensor:
    return tf.strings.join(
        ["Could not decode image ", tf.strings.as_string(index), f" of the request: {reason}"]
    )


# -- values ----------------------------------------------------------------------------------


def uint8_to_float(images: tf.Tensor) -> tf.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1], exactly `x / 127.5 - 1` as numpy and eager TF compute it.

    A table lookup, because in a graph Grappler rewrites division by a constant as multiplication
    by its reciprocal: that is one ulp off for about half of the 256 values, and those ulps flip a
    few rounded output pixels against a reference computed outside the graph.

    Args:
      images: uint8 tensor of any shape.

    Returns:
      float32, same shape.
    """
    return tf.gather(tf.constant(_UINT8_TO_FLOAT), tf.cast(images, tf.int32))


def float_to_uint8(images: tf.Tensor) -> tf.Tensor:
    """float32 [-1, 1] -> uint8, rounded half to even and clipped, exactly like `to_uint8`."""
    return tf.cast(tf.clip_by_value(tf.round((images + 1.0) * 127.5), 0.0, 255.0), tf.uint8)


def pixels_to_float(pixels: tf.Tensor) -> tf.Tensor:
    """float32 pixel values on the 0..255 scale -> [-1, 1], clipped first.

    For pixels that went through resizing: bicubic interpolation overshoots [0, 255], and
    clipping before scaling keeps network inputs in [-1, 1]. Use `uint8_to_float` on uint8.
    """
    return tf.clip_by_value(pixels, 0.0, 255.0) / 127.5 - 1.0


def to_float(images) -> np.ndarray:
    """numpy: uint8 [...] -> float32 [...] in [-1, 1]; the same numbers as `uint8_to_float`."""
    return _UINT8_TO_FLOAT[np.asarray(images, dtype=np.uint8)]


def to_uint8(images) -> np.ndarray:
    """numpy: float [...] in [-1, 1] -> uint8 in [0, 255] (rounded half to even, clipped)."""
    images = np.asarray(images, dtype=np.float32)
    return np.clip(np.round((images + 1.0) * 127.5), 0, 255).astype(np.uint8)
