"""Translating tensors of any size, and the generators of a run directory to translate with.

This module owns the one implementation of "run a generator on an arbitrary image": pad the image
by mirroring up to the generator's size multiple, run the generator, crop back to the input size
(`pad_run_crop`), plus the uint8 / encoded-image wrappers around it (`Endpoints`). Every export
format (`exporting.py`: the SavedModel's signatures, the TFLite and ONNX files) traces exactly
these functions, and `sources.py` runs them on a training run directory (`load_run`: the
generators rebuilt from `config.json` and a checkpoint), so a run directory and its exports give
the same pixels. Image files, decoding and uint8 conversions are `images.py`'s.
"""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf

from cyclegan_tf import checkpoints, errors, generators, rundir
from cyclegan_tf import config as config_lib
from cyclegan_tf import images as images_lib
from cyclegan_tf import precision as precision_lib

DIRECTIONS = rundir.DIRECTIONS
# The Keras generator attribute (checkpoint object name) behind each direction.
GENERATOR_NAMES = rundir.GENERATOR_NAMES

# ResNet generators reflect-pad by one pixel at a quarter of the input size, which needs at least
# two pixels there, i.e. eight at the input. UNet multiples (128, 256) are larger anyway.
_MIN_SIDE = 8


# -- pad, run, crop --------------------------------------------------------------------------


def padded_size(size, multiple: int):
    """The side an image of `size` pixels is padded to: a multiple of `multiple`, >= 8.

    Args:
      size: an int or a scalar int32 tensor.
      multiple: `generators.size_multiple(name)`.
    """
    rounded = (size + multiple - 1) // multiple * multiple
    return tf.maximum(rounded, _MIN_SIDE) if tf.is_tensor(rounded) else max(rounded, _MIN_SIDE)


def mirror_indices(size, before, after) -> tf.Tensor:
    """Source indices of a reflect padding that may be wider than the image.

    For `before, after < size` this is exactly `tf.pad(..., mode="REFLECT")` (edge pixel not
    repeated); wider pads keep reflecting back and forth (like `numpy.pad(mode="reflect")`), so
    a 5-pixel image can be padded to 256. A 1-pixel side is repeated.

    Args:
      size: length of the axis (scalar int32, > 0).
      before: pixels added before index 0.
      after: pixels added after the last index.

    Returns:
      int32 [before + size + after] indices into the axis.
    """
    # Reflecting about index 0 first (the padding is symmetric there) keeps the remainder on
    # non-negative numbers: the ONNX export computed floormod(-3, 8) as -3, not 5.
    positions = tf.abs(tf.range(-before, size + after))
    period = tf.maximum(2 * (size - 1), 1)
    folded = tf.math.floormod(positions, period)
    return tf.where(folded >= size, period - folded, folded)


def mirror_pad(images: tf.Tensor, top, bottom, left, right) -> tf.Tensor:
    """Reflect-pads [N, H, W, C] images by any amount (see `mirror_indices`)."""
    shape = tf.shape(images)
    images = tf.gather(images, mirror_indices(shape[1], top, bottom), axis=1)
    return tf.gather(images, mirror_indices(shape[2], left, right), axis=2)


def pad_run_crop(generator: keras.Model, images: tf.Tensor, multiple: int) -> tf.Tensor:
    """Runs `generator` on images of any height and width; the output has the input's size.

    The image is reflect-padded (centred) up to `padded_size`, translated in inference mode
    (`training=False`) and cropped back. Graph-safe: heights and widths may be dynamic.

    Args:
      generator: a model from `generators.build_generator`.
      images: [N, H, W, 3] float32 in [-1, 1], any H, W >= 1.
      multiple: `generators.size_multiple(name)` of the generator.

    Returns:
      [N, H, W, 3] float32 in [-1, 1].
    """
    images = tf.convert_to_tensor(images, tf.float32)
    shape = tf.shape(images)
    height, width = shape[1], shape[2]
    pad_h = padded_size(height, multiple) - height
    pad_w = padded_size(width, multiple) - width
    top, left = pad_h // 2, pad_w // 2
    padded = mirror_pad(images, top, pad_h - top, left, pad_w - left)
    # Static channel count for the Keras functional model; H and W stay dynamic.
    padded = tf.ensure_shape(padded, [None, None, None, 3])
    outputs = tf.cast(generator(padded, training=False), tf.float32)
    return outputs[:, top : top + height, left : left + width, :]


class Endpoints:
    """The translation endpoints of one generator: float, uint8 and encoded-image in/out.

    Export traces these methods into SavedModel signatures (and `translate_images` into the
    TFLite and ONNX files); `sources.load` runs them on a run directory's generators. All are
    graph-safe and need no autograph.

    Args:
      generator: a model from `generators.build_generator`.
      multiple: `generators.size_multiple(name)` of the generator.
    """

    def __init__(self, generator: keras.Model, multiple: int):
        self.generator = generator
        self.multiple = int(multiple)

    def translate_float(self, images: tf.Tensor) -> tf.Tensor:
        """[N, H, W, 3] float32 in [-1, 1] -> [N, H, W, 3] float32 in [-1, 1]."""
        return pad_run_crop(self.generator, images, self.multiple)

    def translate_images(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        """The tensor endpoint: one batch of same-size uint8 images.

        Args:
          images: [N, H, W, 3] uint8.

        Returns:
          {"images": [N, H, W, 3] uint8, "images_float": [N, H, W, 3] float32 in [-1, 1] (the
          generator output before rounding)}.
        """
        translated = self.translate_float(images_lib.uint8_to_float(images))
        return {"images": images_lib.float_to_uint8(translated), "images_float": translated}

    def translate_encoded(self, images_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        """The serving endpoint: encoded images in, PNG out; sizes may differ within a batch.

        Args:
          images_bytes: [N] string, JPEG/PNG/BMP/GIF/WebP file contents (`images.decode_rgb`).

        Returns:
          {"images_bytes": [N] string, PNG files of the translations, each the size of its input}.
        """

        def one(args):
            encoded, index = args
            image = images_lib.decode_rgb(encoded, index)
            translated = self.translate_images(image[tf.newaxis])["images"]
            return tf.io.encode_png(translated[0])

        indices = tf.range(tf.shape(images_bytes)[0])
        # map_fn, not a batched call: images in one request may have different sizes.
        encoded = tf.map_fn(one, (images_bytes, indices), fn_output_signature=tf.string)
        return {"images_bytes": encoded}


# -- generators from a run directory ---------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LoadedRun:
    """Generators restored from a run directory.

    Attributes:
      config: the run's Config.
      checkpoint: the checkpoint path prefix the weights came from.
      generators: direction ("a2b"/"b2a") -> Keras generator with restored weights.
      multiple: the generators' size multiple.
      precision: the Keras dtype policy the generators compute in (their outputs are float32).
    """

    config: config_lib.Config
    checkpoint: str
    generators: dict[str, keras.Model]
    multiple: int
    precision: str

    def endpoints(self, direction: str) -> Endpoints:
        return Endpoints(self.generators[direction], self.multiple)


def load_run(
    run_dir: str,
    checkpoint: str | None = None,
    directions: tuple[str, ...] = DIRECTIONS,
    precision: str = "float32",
) -> LoadedRun:
    """Rebuilds the generators of a run from its config.json and restores a checkpoint.

    Args:
      run_dir: a training run directory.
      checkpoint: None for the latest, else a step ("1200"), a name ("ckpt-1200") or a path prefix.
      directions: which generators to build ("a2b" -> g_ab, "b2a" -> g_ba).
      precision: the dtype policy to compute in, one of `precision.PRECISIONS`; `auto` resolves
        for the devices of THIS machine (`precision.resolve`). Whatever the run trained in: the
        checkpoint holds float32 weights either way. `mixed_bfloat16` is 1.9x faster than float32
        at 256 px on a CPU with AVX512_BF16 (bench/RESULTS.md) and slower where bfloat16 is
        emulated; float32 is the portable choice and the numerical reference.

    Raises:
      ValueError: an unknown precision.
      rundir.RunDirError: not a run directory (no config.json, or a foreign one), or a direction
        a run imported from PyTorch has no generator for.
      checkpoints.CheckpointError: no such checkpoint, or weights that do not match config.json.
    """
    for direction in directions:
        check_direction(direction)
    # A run imported from PyTorch may hold one generator: say so before the restore fails on it.
    rundir.check_directions(run_dir, directions)
    precision = precision_lib.resolve(precision).precision
    path = checkpoints.resolve_checkpoint(run_dir, checkpoint)
    config = rundir.require_config(run_dir)
    built = {
        direction: generators.build_from_config(
            config.model, GENERATOR_NAMES[direction], precision=precision
        )
        for direction in directions
    }
    models = {GENERATOR_NAMES[direction]: model for direction, model in built.items()}
    if checkpoint is None:  # the newest readable one, as training's resume chooses it
        path = checkpoints.restore_latest_generators(run_dir, **models)
    else:
        checkpoints.restore_generators(path, **models)
    return LoadedRun(
        config, path, built, generators.size_multiple(config.model.generator), precision
    )


def check_direction(direction: str) -> None:
    """Raises a one-line ConfigError unless `direction` is a2b or b2a."""
    if direction not in DIRECTIONS:
        raise errors.ConfigError(f"direction must be a2b or b2a. Received: direction={direction!r}")
