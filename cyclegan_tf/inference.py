"""Translation of images of any size, and the `translate` command behind `cyclegan-tf translate`.

This module owns the one implementation of "run a generator on an arbitrary image": pad the image
by mirroring up to the generator's size multiple, run the generator, crop back to the input size
(`pad_run_crop`), plus the uint8 / encoded-image wrappers around it (`Translator`). The exported
SavedModels (`export.py`) trace exactly these functions, and `translate` runs them either from a
training run directory (rebuilding the generators from `config.json` and a checkpoint) or from an
exported SavedModel, so a run directory and its export give the same pixels.

File naming: every input `name.ext` is written as `<output>/name.png` (PNG is lossless and keeps the
translation exact); when several inputs share a base name (`cat.jpg`, `cat.bmp`) each of them keeps
its full name instead (`cat.jpg.png`, `cat.bmp.png`).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import sys

import keras
import numpy as np
import tensorflow as tf

from cyclegan_tf import checkpoints, generators
from cyclegan_tf import config as config_lib

DIRECTIONS = ("a2b", "b2a")
# The Keras generator attribute (checkpoint object name) behind each direction.
GENERATOR_NAMES = {"a2b": "g_ab", "b2a": "g_ba"}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
# Exported SavedModels: `<export_dir>/<MODEL_PREFIX>_<direction>/<version>/`, with this JSON
# (direction, checkpoint, ...) in the SavedModel's assets/.
MODEL_PREFIX = "cyclegan"
EXPORT_INFO_FILE = "export.json"

# ResNet generators reflect-pad by one pixel at a quarter of the input size, which needs at least
# two pixels there, i.e. eight at the input. UNet multiples (128, 256) are larger anyway.
_MIN_SIDE = 8
# Magic numbers of the formats tf.io.decode_image reads. Checking them first turns "unknown
# format" into an error that says the image could not be decoded.
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM")
_UINT8_TO_FLOAT = np.arange(256, dtype=np.float32) / np.float32(127.5) - np.float32(1.0)


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
    positions = tf.range(-before, size + after)
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


def uint8_to_float(images: tf.Tensor) -> tf.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1], exactly `x / 127.5 - 1` as numpy and eager TF compute it.

    A table lookup, because in a graph Grappler rewrites division by a constant as multiplication
    by its reciprocal: that is one ulp off for about half of the 256 values, and those ulps flip a
    few rounded output pixels against a reference computed outside the graph.
    """
    return tf.gather(tf.constant(_UINT8_TO_FLOAT), tf.cast(images, tf.int32))


def float_to_uint8(images: tf.Tensor) -> tf.Tensor:
    """float32 [-1, 1] -> uint8, rounded half to even and clipped, like `visualize.to_uint8`."""
    return tf.cast(tf.clip_by_value(tf.round((images + 1.0) * 127.5), 0.0, 255.0), tf.uint8)


def decode_rgb(encoded: tf.Tensor, index=0) -> tf.Tensor:
    """Decodes one JPEG/PNG/BMP/GIF image (first frame) to uint8 [H, W, 3].

    Grayscale is replicated to RGB; an alpha channel is dropped (like PIL's `convert("RGB")`).

    Args:
      encoded: scalar string tensor, the file's bytes.
      index: position in the request, named in the error message.

    Raises:
      tf.errors.InvalidArgumentError (when run): "Could not decode image <index> ..." if the bytes
        are not one of the four formats, or the decoder's own message for a corrupt file.
    """
    head = tf.strings.substr(encoded, 0, 4)
    known = tf.reduce_any(
        [tf.strings.substr(head, 0, len(magic)) == magic for magic in _MAGIC], axis=0
    )
    message = tf.strings.join(
        [
            "Could not decode image ",
            tf.strings.as_string(index),
            " of the request: not a JPEG, PNG, GIF or BMP file",
        ]
    )
    check = tf.debugging.Assert(known, [message])
    with tf.control_dependencies([check]):
        image = tf.io.decode_image(encoded, channels=3, dtype=tf.uint8, expand_animations=False)
    return tf.ensure_shape(image, [None, None, 3])


class Translator:
    """The translation endpoints of one generator: float, uint8 and encoded-image in/out.

    Export traces these methods into SavedModel signatures; `translate` calls them on a run
    directory's generators. All are graph-safe and need no autograph.

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
        translated = self.translate_float(uint8_to_float(images))
        return {"images": float_to_uint8(translated), "images_float": translated}

    def translate_encoded(self, images_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        """The serving endpoint: encoded images in, PNG out; sizes may differ within a batch.

        Args:
          images_bytes: [N] string, JPEG/PNG/BMP/GIF file contents.

        Returns:
          {"images_bytes": [N] string, PNG files of the translations, each the size of its input}.
        """

        def one(args):
            encoded, index = args
            image = decode_rgb(encoded, index)
            translated = self.translate_images(image[tf.newaxis])["images"]
            return tf.io.encode_png(translated[0])

        indices = tf.range(tf.shape(images_bytes)[0])
        # map_fn, not a batched call: images in one request may have different sizes.
        encoded = tf.map_fn(one, (images_bytes, indices), fn_output_signature=tf.string)
        return {"images_bytes": encoded}


# -- generators from a run directory ---------------------------------------------------------


def read_run_config(run_dir: str) -> config_lib.Config:
    """Reads `<run_dir>/config.json`.

    Raises:
      checkpoints.CheckpointError: no config.json (not a run directory) or an invalid one.
    """
    path = os.path.join(run_dir, checkpoints.CONFIG_FILE)
    if not os.path.isfile(path):
        raise checkpoints.CheckpointError(
            f"{run_dir!r} is not a run directory: it has no {checkpoints.CONFIG_FILE} (train "
            "with `cyclegan-tf train --output_dir=...` first)."
        )
    with open(path) as f:
        text = f.read()
    try:
        return config_lib.Config.from_json(text)
    except ValueError as e:
        raise checkpoints.CheckpointError(f"Invalid {path}: {e}") from e


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

    def translator(self, direction: str) -> Translator:
        return Translator(self.generators[direction], self.multiple)


def load_run(
    run_dir: str,
    checkpoint: str | None = None,
    directions: tuple[str, ...] = DIRECTIONS,
    precision: str | None = None,
) -> LoadedRun:
    """Rebuilds the generators of a run from its config.json and restores a checkpoint.

    Args:
      run_dir: a training run directory.
      checkpoint: None for the latest, else a step ("1200"), a name ("ckpt-1200") or a path prefix.
      directions: which generators to build ("a2b" -> g_ab, "b2a" -> g_ba).
      precision: the dtype policy to compute in, one of `config.PRECISIONS`; None: the run's
        training precision (`config.train.precision`). The checkpoint holds float32 weights
        either way. `mixed_bfloat16` is 1.9x faster than float32 at 256 px on a CPU with
        AVX512_BF16 (bench/RESULTS.md) and gives the forward pass training ran; float32 is the
        portable choice (CPUs and GPUs without fast bfloat16) and the numerical reference.

    Raises:
      ValueError: an unknown precision.
      checkpoints.CheckpointError: not a run directory, no such checkpoint, or weights that do not
        match config.json.
    """
    for direction in directions:
        _check_direction(direction)
    path = checkpoints.resolve_checkpoint(run_dir, checkpoint)
    config = read_run_config(run_dir)
    precision = precision or config.train.precision
    built = {
        direction: generators.build_from_config(
            config.model, GENERATOR_NAMES[direction], precision=precision
        )
        for direction in directions
    }
    checkpoints.restore_generators(
        path, **{GENERATOR_NAMES[direction]: model for direction, model in built.items()}
    )
    return LoadedRun(
        config, path, built, generators.size_multiple(config.model.generator), precision
    )


def _check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be a2b or b2a. Received: direction={direction!r}")


# -- translate files -------------------------------------------------------------------------


@dataclasses.dataclass
class TranslateSummary:
    """What `translate` did.

    Attributes:
      direction: a2b or b2a.
      output_dir: where the PNG files went.
      written: output paths, in input order.
      failed: (input path, reason) of every file that could not be translated.
    """

    direction: str
    output_dir: str
    written: list[str] = dataclasses.field(default_factory=list)
    failed: list[tuple[str, str]] = dataclasses.field(default_factory=list)


def translate(
    model: str,
    inputs: str,
    output_dir: str,
    direction: str = "a2b",
    checkpoint: str | None = None,
    verbose: bool = True,
    precision: str | None = None,
) -> TranslateSummary:
    """Translates image files with a run directory or an exported SavedModel.

    Every image is translated at its own size (see `pad_run_crop`) and written as PNG (see the
    module docstring for names). A file that cannot be read or decoded is reported on stderr by
    name and skipped; the rest continue.

    Args:
      model: a run directory (config.json + checkpoints/), an exported version directory
        (`<export_dir>/cyclegan_a2b/1`), a model directory (`<export_dir>/cyclegan_a2b`, newest
        version), or the export base directory (`<export_dir>`, the model of `direction`).
      inputs: an image file, a folder (its .jpg/.jpeg/.png/.bmp/.gif files), or a glob pattern
        (matching files with those extensions; `**` recurses).
      output_dir: output folder, created if needed.
      direction: a2b (g_ab) or b2a (g_ba).
      checkpoint: run directories only: a step or checkpoint name (default: the latest).
      precision: run directories only: the dtype policy the generator computes in (see
        `load_run`; default: the run's training precision). A SavedModel runs in the precision
        it was exported with.
      verbose: print a progress bar (a line per few files when stdout is not a terminal) and a
        summary.

    Returns:
      A `TranslateSummary`; `failed` is empty when every file was translated.

    Raises:
      ValueError: no input files, an unusable model path, a direction the SavedModel was not
        exported for, or an output folder that would overwrite the inputs.
      checkpoints.CheckpointError: an unusable run directory or checkpoint.
    """
    _check_direction(direction)
    files = find_images(inputs)
    targets = output_names(files, output_dir)
    run = _load_translate_fn(model, direction, checkpoint, precision)

    os.makedirs(output_dir, exist_ok=True)
    summary = TranslateSummary(direction, output_dir)
    progress = _Progress(len(files), verbose)
    for i, (source, target) in enumerate(zip(files, targets)):
        try:
            with open(source, "rb") as f:
                data = f.read()
            png = run(tf.constant([data]))["images_bytes"][0].numpy()
            _write_atomically(target, png)
            summary.written.append(target)
        except (OSError, tf.errors.OpError) as e:
            reason = _error_reason(e)
            summary.failed.append((source, reason))
            progress.message(f"cyclegan-tf: skipped {source}: {reason}")
        progress.update(i + 1)
    if verbose:
        line = f"Translated {len(summary.written)} of {len(files)} images ({direction}) into "
        line += f"{output_dir}"
        if summary.failed:
            names = ", ".join(os.path.basename(path) for path, _ in summary.failed[:5])
            more = "" if len(summary.failed) <= 5 else f" and {len(summary.failed) - 5} more"
            line += f"; {len(summary.failed)} failed: {names}{more}"
        print(line, flush=True)
    return summary


def find_images(inputs: str) -> list[str]:
    """The files `inputs` names: a file, a folder's image files, or a glob's image files (sorted).

    Raises:
      ValueError: nothing matches.
    """
    if os.path.isfile(inputs):
        return [inputs]
    if os.path.isdir(inputs):
        candidates = [os.path.join(inputs, name) for name in os.listdir(inputs)]
    else:
        candidates = glob.glob(inputs, recursive=True)
    files = sorted(
        path
        for path in candidates
        if os.path.isfile(path) and path.lower().endswith(IMAGE_EXTENSIONS)
    )
    if not files:
        raise ValueError(
            f"No input images found for {inputs!r}: give an image file, a folder or a glob "
            f"matching {'/'.join(IMAGE_EXTENSIONS)} files."
        )
    return files


def output_names(files: list[str], output_dir: str) -> list[str]:
    """Output paths: `<output_dir>/<stem>.png`, or `<name>.png` for inputs sharing a stem.

    Raises:
      ValueError: an output would overwrite one of the inputs.
    """
    stems = [os.path.splitext(os.path.basename(path))[0] for path in files]
    names = [
        f"{stem}.png" if stems.count(stem) == 1 else f"{os.path.basename(path)}.png"
        for stem, path in zip(stems, files)
    ]
    targets = [os.path.join(output_dir, name) for name in names]
    sources = {os.path.realpath(path) for path in files}
    clash = [t for t in targets if os.path.realpath(t) in sources]
    if clash:
        raise ValueError(
            f"The output {clash[0]!r} would overwrite an input image; choose another --output."
        )
    if len(set(targets)) != len(targets):  # same base name in different folders of a glob
        raise ValueError(
            "Several inputs would be written to the same output name (same file name in "
            "different folders); translate the folders one at a time."
        )
    return targets


def _load_translate_fn(model: str, direction: str, checkpoint: str | None, precision: str | None):
    """Returns a callable: [N] string images -> {"images_bytes": [N] PNG strings}."""
    saved_model = find_saved_model(model, direction)
    if saved_model is not None:
        for name, value in (("checkpoint", checkpoint), ("precision", precision)):
            if value is not None:
                raise ValueError(
                    f"--{name} applies to run directories; {model!r} is an exported SavedModel "
                    "(export again with the --checkpoint/--precision you want)."
                )
        return tf.saved_model.load(saved_model).signatures["serving_default"]
    if not os.path.isfile(os.path.join(model, checkpoints.CONFIG_FILE)):
        raise ValueError(
            f"--model={model!r} is neither a run directory (with {checkpoints.CONFIG_FILE}) nor an "
            f"exported SavedModel (a directory with saved_model.pb, or {MODEL_PREFIX}_{direction}/"
            "<version>/ below it)."
        )
    loaded = load_run(model, checkpoint, directions=(direction,), precision=precision)
    translator = loaded.translator(direction)
    # The same function the export traces as serving_default, run from the checkpoint.
    return tf.function(
        translator.translate_encoded,
        input_signature=[tf.TensorSpec([None], tf.string, name="images_bytes")],
        autograph=False,
    )


def find_saved_model(path: str, direction: str) -> str | None:
    """The exported SavedModel version directory `path` designates, or None if it is no export.

    `path` may be a version directory (holding saved_model.pb), a model directory (numbered
    versions; the newest is used) or an export base directory (holding `cyclegan_<direction>`).

    Raises:
      ValueError: the export is for the other direction.
    """
    candidate = path
    if not _is_saved_model(candidate):
        model_dir = os.path.join(path, f"{MODEL_PREFIX}_{direction}")
        version_dir = latest_version(model_dir) or latest_version(path)
        if version_dir is None:
            return None
        candidate = version_dir
    info = read_export_info(candidate)
    if info.get("direction") != direction:
        raise ValueError(
            f"{candidate!r} translates {info.get('direction')}, not {direction}: pass "
            f"--direction={info.get('direction')} or the export base directory."
        )
    return candidate


def latest_version(model_dir: str) -> str | None:
    """The highest numbered `<model_dir>/<version>` holding a SavedModel, or None."""
    if not os.path.isdir(model_dir):
        return None
    versions = [
        int(name)
        for name in os.listdir(model_dir)
        if name.isdigit() and _is_saved_model(os.path.join(model_dir, name))
    ]
    return os.path.join(model_dir, str(max(versions))) if versions else None


def read_export_info(saved_model_dir: str) -> dict:
    """The export metadata (direction, checkpoint, step, ...) stored in a SavedModel's assets.

    Raises:
      ValueError: the SavedModel was not written by `cyclegan_tf.export`.
    """
    path = os.path.join(saved_model_dir, "assets", EXPORT_INFO_FILE)
    if not os.path.isfile(path):
        raise ValueError(
            f"{saved_model_dir!r} is a SavedModel without assets/{EXPORT_INFO_FILE}; export it "
            "with `cyclegan-tf export`."
        )
    with open(path) as f:
        return json.load(f)


def _is_saved_model(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "saved_model.pb"))


def _write_atomically(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _error_reason(error: BaseException) -> str:
    """One line from a (possibly multi-line, graph-annotated) TF error."""
    if isinstance(error, tf.errors.OpError):
        lines = [line.strip() for line in error.message.splitlines()]
        for line in lines:
            if "Could not decode image" in line:
                return line.split("assertion failed:", 1)[-1].strip(" []")
        useful = [
            line
            for line in lines
            if line
            and not line.startswith(("Graph execution error", "Detected at node", "[["))
            and not line.startswith(("File ", "Traceback"))
        ]
        return (useful[0] if useful else type(error).__name__)[:300]
    return f"{type(error).__name__}: {error}"[:300]


class _Progress:
    """A Keras progress bar on a terminal; otherwise a line every few files (log-friendly)."""

    def __init__(self, total: int, verbose: bool):
        self.total = total
        self.verbose = verbose
        self.interactive = verbose and sys.stdout.isatty()
        self.every = max(1, total // 20)
        self.bar = keras.utils.Progbar(total, unit_name="image") if self.interactive else None

    def update(self, done: int) -> None:
        if self.bar is not None:
            self.bar.update(done)
        elif self.verbose and (done % self.every == 0 or done == self.total):
            print(f"translated {done}/{self.total} images", flush=True)

    def message(self, text: str) -> None:
        if self.bar is not None:
            sys.stdout.write("\n")
        print(text, file=sys.stderr, flush=True)
