"""Opening whatever `--model` names, as a `Translator`: the one place models are opened.

A model source is any of:

- a training run directory (config.json + checkpoints/), trained or written by `import-torch`:
  the generators are rebuilt from config.json and a checkpoint (`inference.load_run`);
- a SavedModel export: a version directory (`<export_dir>/cyclegan_a2b/1`), a model directory
  (`<export_dir>/cyclegan_a2b`, its newest version) or the export base directory (`<export_dir>`,
  the model of the direction asked for);
- a `.tflite` or `.onnx` file written by `cyclegan-tf export --format=...` (TFLite: float32 or
  quantized, `--quantize`), run in its own runtime (ai_edge_litert / onnxruntime: the optional
  extras `[tflite]`, `[onnx]`).

`load` opens one for one direction and returns a `Translator`: uint8 images of any size in, uint8
images of the same size out, the same pixels whatever the source (a run directory and its
SavedModel run the same `inference.Endpoints` functions; the TFLite and ONNX files trace
`Endpoints.translate_images` and are checked against it within a uint8 level when written,
`exporting.check_file`; quantized TFLite files compute the same function approximately, checked
against a PSNR floor, `exporting.check_quantized`).

This module also owns the export layout as a reader sees it (the names `exporting.py` writes:
model directories, signatures, the files' input and output names, the metadata JSON) and finding
exports again (`find_saved_model`, `latest_version`, `read_export_info`, `open_file`). Writing
exports is `exporting.py`'s; translating image files is `translate.py`'s
(`Translator.translate_files` hands it the encoded-image function).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from cyclegan_tf import checkpoints, errors, hardware, inference, nativelog, rundir, translate
from cyclegan_tf import config as config_lib
from cyclegan_tf import images as images_lib
from cyclegan_tf import precision as precision_lib

# -- the export layout -------------------------------------------------------------------------

RUN, SAVED_MODEL, TFLITE, ONNX = "run", "saved_model", "tflite", "onnx"
KINDS = (RUN, SAVED_MODEL, TFLITE, ONNX)
SERVING_SIGNATURE = "serving_default"
TENSOR_SIGNATURE = "translate_images"
# Signature name -> (input keys, output keys), for documentation and tests.
SIGNATURES = {
    SERVING_SIGNATURE: (("images_bytes",), ("images_bytes",)),
    TENSOR_SIGNATURE: (("images",), ("images", "images_float")),
}
# TFLite and ONNX files: input and output names (the TFLite signature is `serving_default`).
FILE_INPUTS = ("images",)
FILE_OUTPUTS = ("translated", "translated_float")
CONFIG_ASSET = "config.json"
# Exported SavedModels: `<export_dir>/<MODEL_PREFIX>_<direction>/<version>/`, with this JSON
# (direction, checkpoint, ...) in the SavedModel's assets/.
MODEL_PREFIX = "cyclegan"
EXPORT_INFO_FILE = "export.json"
# File format -> (file extension, pip extra, modules it needs).
FILE_FORMATS = {
    TFLITE: (".tflite", "tflite", ("ai_edge_litert",)),
    ONNX: (".onnx", "onnx", ("tf2onnx", "onnxruntime")),
}

# The encoded-image function every source provides: [N] encoded images -> {"images_bytes": [N]
# PNG files} (the SavedModel's `serving_default`).
EncodedFn = Callable[[tf.Tensor], dict[str, tf.Tensor]]


class MissingExtraError(errors.UserError):
    """A format's optional dependencies are not installed; the message names the pip command."""


class ImageInputError(errors.UserError):
    """Images given to a `Translator` that are not uint8 RGB `[H, W, 3]` / `[N, H, W, 3]`."""


def model_name(direction: str) -> str:
    """The TF Serving model name of a direction: cyclegan_a2b or cyclegan_b2a."""
    return f"{MODEL_PREFIX}_{direction}"


def import_extra(module: str, fmt: str, extra: str):
    """Imports an optional dependency of a format.

    Raises:
      MissingExtraError: e.g. "The onnx format needs onnxruntime, which is not installed: pip
        install 'cyclegan-tf[onnx]'".
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtraError(
            f"The {fmt} format needs {module}, which is not installed: "
            f"pip install 'cyclegan-tf[{extra}]'"
        ) from e


# -- the Translator ----------------------------------------------------------------------------


class Translator:
    """One direction of a model, whatever its source: images in, translated images out.

    Made by `load` (`cyclegan_tf.load`). Calling it translates uint8 RGB images of any size:
    one image `[H, W, 3]` or a batch `[N, H, W, 3]` (same size within a batch), as a numpy
    array, a `tf.Tensor` or a `PIL.Image.Image` (converted to RGB); the result is a uint8 numpy
    array of the input's shape. A batch runs as one call of the source's compiled function (a
    `tf.function` traced once for any shape from a run directory, the SavedModel's
    `translate_images` signature, the TFLite/ONNX runtime), so batching frames is what makes a
    video fast.

    Attributes:
      direction: "a2b" (the run's g_ab) or "b2a" (g_ba).
      precision: what the model computes in ("float32", "mixed_bfloat16", ...).
      source: the run directory, SavedModel version directory or file the model came from.
      kind: "run", "saved_model", "tflite" or "onnx".
      generator: the Keras generator (run directories only; None for exports).
      config: the run's training Config (None for a TFLite/ONNX file exported before files
        recorded it).
      checkpoint: the checkpoint the weights came from (a path prefix, or the export's record).
      step: the training step of that checkpoint, when known.
    """

    def __init__(
        self,
        *,
        kind: str,
        source: str,
        direction: str,
        precision: str,
        run_images: Callable[[np.ndarray], np.ndarray],
        run_encoded: EncodedFn,
        generator: keras.Model | None = None,
        config: config_lib.Config | None = None,
        checkpoint: str | None = None,
        step: int | None = None,
    ):
        self.kind = kind
        self.source = source
        self.direction = direction
        self.precision = precision
        self.generator = generator
        self.config = config
        self.checkpoint = checkpoint
        self.step = step
        self._run_images = run_images
        self._run_encoded = run_encoded

    def __repr__(self) -> str:
        return (
            f"Translator(direction={self.direction!r}, kind={self.kind!r}, "
            f"precision={self.precision!r}, source={self.source!r})"
        )

    def __call__(self, images: Any) -> np.ndarray:
        """Translates one image or a batch.

        Args:
          images: uint8 RGB `[H, W, 3]` or `[N, H, W, 3]` (any H, W >= 1), as a numpy array, a
            `tf.Tensor` or a `PIL.Image.Image` (any mode; converted to RGB).

        Returns:
          uint8 numpy of the input's shape (`[H, W, 3]` for a PIL image).

        Raises:
          ImageInputError: not uint8, not 3 channels, or another rank.
        """
        batch, single = as_batch(images)
        if batch.shape[0] == 0:
            return batch.copy()
        translated = np.asarray(self._run_images(batch), np.uint8)
        return translated[0] if single else translated

    def translate_encoded(self, images_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        """Encoded images in, PNG files out (the SavedModel's `serving_default` contract).

        Args:
          images_bytes: [N] string, JPEG/PNG/BMP/GIF/WebP file contents; sizes may differ.

        Returns:
          {"images_bytes": [N] string PNG files, each the size of its input}.
        """
        return self._run_encoded(tf.convert_to_tensor(images_bytes, tf.string))

    def translate_files(
        self, inputs: str, output_dir: str, *, verbose: bool = True
    ) -> translate.TranslateSummary:
        """Translates image files into PNGs and videos into videos, as `cyclegan-tf translate`
        does (videos need the `[video]` extra, PyAV).

        Args:
          inputs: an image or video file, a folder (its image and video files) or a glob
            pattern (`**` recurses).
          output_dir: where `<name>.png` files (and videos under their own names) go, created if
            needed; see `translate.py` for the names.
          verbose: print progress and a summary line.

        Returns:
          A `translate.TranslateSummary` (written paths, and files that failed with the reason).

        Raises:
          errors.UserError: no input images, or outputs that would overwrite the inputs;
            `video.MissingVideoExtraError` when every input is a video and PyAV is missing.
        """
        return translate.translate_files(
            self._run_encoded,
            inputs,
            output_dir,
            direction=self.direction,
            precision=self.precision,
            images=self,  # video frames, a uint8 batch per call
            verbose=verbose,
        )


def as_batch(images: Any) -> tuple[np.ndarray, bool]:
    """Any accepted image input -> (uint8 numpy [N, H, W, 3], whether it was one image).

    Raises:
      ImageInputError: not uint8 RGB of rank 3 or 4.
    """
    if _is_pil_image(images):
        return np.asarray(images.convert("RGB"))[np.newaxis], True
    if tf.is_tensor(images):
        images = images.numpy()
    array = np.asarray(images)
    if array.dtype != np.uint8:
        raise ImageInputError(
            f"images must be uint8 (0..255); got {array.dtype}: convert them, e.g. "
            "images_float_0_1 * 255 rounded and cast with .astype('uint8')."
        )
    if array.ndim not in (3, 4) or array.shape[-1] != 3 or 0 in array.shape[-3:]:
        raise ImageInputError(
            f"images must be RGB [H, W, 3] or a batch [N, H, W, 3]; got shape {array.shape} "
            "(convert grayscale or RGBA first, e.g. PIL's image.convert('RGB'))."
        )
    return (array[np.newaxis], True) if array.ndim == 3 else (array, False)


def _is_pil_image(value: Any) -> bool:
    # Not imported for the check: PIL is loaded only if the caller already uses it.
    image_module = sys.modules.get("PIL.Image")
    return image_module is not None and isinstance(value, image_module.Image)


# -- opening a source --------------------------------------------------------------------------


def load(
    model: str,
    direction: str = "a2b",
    *,
    checkpoint: str | None = None,
    precision: str | None = "auto",
) -> Translator:
    """Opens what `--model` names (see the module docstring) for one direction.

    Args:
      model: a run directory, a SavedModel export (version, model or base directory), or a
        .tflite/.onnx file.
      direction: a2b (the run's g_ab) or b2a (g_ba).
      checkpoint: run directories only: a step ("1200"), a checkpoint name ("ckpt-1200"),
        "best" (`train --eval_every_epochs`), an epoch's generators ("epoch_5") or a path
        prefix; None: the latest readable checkpoint.
      precision: run directories only: the dtype policy the generator computes in, one of
        `precision.PRECISIONS`; "auto" or None: the best for THIS machine's devices
        (`precision.resolve`), whatever the run trained in. An export computes in the precision
        it was exported with (TFLite/ONNX: float32): only "auto"/None are accepted there.

    Returns:
      A `Translator`.

    Raises:
      errors.UserError: an unusable model path or checkpoint, a direction the model does not
        have, a checkpoint/precision asked of an export, or (MissingExtraError) a .tflite/.onnx
        file whose runtime is not installed.
    """
    hardware.configure_gpus()  # before anything initialises a GPU (another process may train)
    inference.check_direction(direction)
    if file_format(model) and os.path.isfile(model):
        _only_for_run_directories(model, "a TFLite/ONNX file", checkpoint, precision)
        return _open_file_model(model, direction)
    saved_model = find_saved_model(model, direction)
    if saved_model is not None:
        _only_for_run_directories(model, "an exported SavedModel", checkpoint, precision)
        return _open_saved_model(saved_model, direction)
    if not os.path.isfile(os.path.join(model, rundir.CONFIG_FILE)):
        raise errors.UserError(
            f"--model={model!r} is neither a run directory (with {rundir.CONFIG_FILE}), an "
            f"exported SavedModel (a directory with saved_model.pb, or "
            f"{model_name(direction)}/<version>/ below it) nor a .tflite/.onnx file."
        )
    return _open_run(model, direction, checkpoint, precision)


def _open_run(
    run_dir: str, direction: str, checkpoint: str | None, precision: str | None
) -> Translator:
    precision = precision_lib.resolve(precision or precision_lib.AUTO).precision
    loaded = inference.load_run(run_dir, checkpoint, directions=(direction,), precision=precision)
    endpoints = loaded.endpoints(direction)
    # The functions the export traces as its signatures, compiled once each for any shape.
    encoded = tf.function(
        endpoints.translate_encoded,
        input_signature=[tf.TensorSpec([None], tf.string, name="images_bytes")],
        autograph=False,
    )
    tensor_fn = tf.function(
        endpoints.translate_images,
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")],
        autograph=False,
    )
    return Translator(
        kind=RUN,
        source=run_dir,
        direction=direction,
        precision=loaded.precision,
        run_images=lambda x: tensor_fn(tf.constant(x, tf.uint8))["images"].numpy(),
        run_encoded=encoded,
        generator=loaded.generators[direction],
        config=loaded.config,
        checkpoint=loaded.checkpoint,
        step=checkpoints.step_of(loaded.checkpoint),
    )


def _open_saved_model(path: str, direction: str) -> Translator:
    info = read_export_info(path)
    signatures = tf.saved_model.load(path).signatures
    tensor_fn = signatures[TENSOR_SIGNATURE]
    return Translator(
        kind=SAVED_MODEL,
        source=path,
        direction=direction,
        precision=info.get("precision", ""),
        run_images=lambda x: tensor_fn(images=tf.constant(x, tf.uint8))["images"].numpy(),
        run_encoded=signatures[SERVING_SIGNATURE],
        config=read_exported_config(path),
        checkpoint=info.get("checkpoint"),
        step=info.get("step"),
    )


def _open_file_model(path: str, direction: str) -> Translator:
    """A TFLite/ONNX export in its runtime; the encoded path decodes and encodes around it."""
    info = {}
    if os.path.isfile(info_path(path)):
        info = read_export_info(path)
        made_for = info.get("direction")
        if made_for != direction:
            raise errors.UserError(
                f"{path!r} translates {made_for}, not {direction}: pass --direction={made_for} "
                f"or the {model_name(direction)} file."
            )
    run = open_file(path)

    def run_images(images: np.ndarray) -> np.ndarray:
        return run(images)[FILE_OUTPUTS[0]]

    def run_encoded(images_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        pngs = []
        for index, encoded in enumerate(tf.unstack(images_bytes)):
            image = images_lib.decode_rgb(encoded, index).numpy()
            pngs.append(tf.io.encode_png(run_images(image[np.newaxis])[0]).numpy())
        return {"images_bytes": tf.constant(pngs, tf.string)}

    config = info.get("config")
    return Translator(
        kind=file_format(path),
        source=path,
        direction=direction,
        # float32, or a TFLite file's quantization (float16, dynamic, int8): what it computes in.
        precision=info.get("precision", "float32"),
        run_images=run_images,
        run_encoded=run_encoded,
        config=config_lib.Config.from_dict(config) if config else None,
        checkpoint=info.get("checkpoint"),
        step=info.get("step"),
    )


def _only_for_run_directories(
    model: str, kind: str, checkpoint: str | None, precision: str | None
) -> None:
    """Exports were made from one checkpoint in one precision: refuse arguments asking otherwise."""
    # `auto` is the default: "what suits this machine", which for an export is what it holds.
    asked = {"checkpoint": checkpoint, "precision": None if precision == "auto" else precision}
    for name, value in asked.items():
        if value is not None:
            raise errors.UserError(
                f"--{name} applies to run directories; {model!r} is {kind} (export again with "
                "the --checkpoint/--precision you want)."
            )


# -- TFLite / ONNX files in their runtimes -----------------------------------------------------


def _cpu_count() -> int:
    """The CPUs this process may run on (the affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def open_file(path: str) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """Opens a .tflite or .onnx export in its runtime.

    Returns:
      A function: uint8 [N, H, W, 3] numpy images (any N, H, W) -> {"translated": uint8
      [N, H, W, 3], "translated_float": float32 [N, H, W, 3]}.

    Raises:
      MissingExtraError: the runtime is not installed.
      errors.ConfigError: not a .tflite or .onnx path.
    """
    fmt = require_file_format(path)
    if fmt == TFLITE:
        interpreter = import_extra("ai_edge_litert.interpreter", fmt, "tflite")
        # LiteRT runs on one thread unless told otherwise. The runner resizes the input tensors to
        # each call's shape; the first call applies the XNNPACK delegate, whose notice goes to file
        # descriptor 2: every call runs under `nativelog.quiet` (0.06 ms; a 256 px image: ~1 s).
        runner = interpreter.Interpreter(
            model_path=path, num_threads=_cpu_count()
        ).get_signature_runner(SERVING_SIGNATURE)

        def run(images):
            with nativelog.quiet():
                outputs = runner(**{FILE_INPUTS[0]: np.ascontiguousarray(images, np.uint8)})
            return {name: np.array(outputs[name]) for name in FILE_OUTPUTS}

        return run
    onnxruntime = import_extra("onnxruntime", fmt, "onnx")
    session = onnxruntime.InferenceSession(path, providers=onnxruntime.get_available_providers())

    def run(images):
        feeds = {FILE_INPUTS[0]: np.ascontiguousarray(images, np.uint8)}
        return dict(zip(FILE_OUTPUTS, session.run(list(FILE_OUTPUTS), feeds)))

    return run


# -- finding exports ---------------------------------------------------------------------------


def read_exported_config(saved_model_dir: str) -> config_lib.Config:
    """The training Config stored in an exported SavedModel (assets/config.json)."""
    with open(os.path.join(saved_model_dir, "assets", CONFIG_ASSET)) as f:
        return config_lib.Config.from_json(f.read())


def find_saved_model(path: str, direction: str) -> str | None:
    """The exported SavedModel version directory `path` designates, or None if it is no export.

    `path` may be a version directory (holding saved_model.pb), a model directory (numbered
    versions; the newest is used) or an export base directory (holding `cyclegan_<direction>`).

    Raises:
      errors.UserError: the export is for the other direction.
    """
    candidate = path
    if not is_saved_model(candidate):
        model_dir = os.path.join(path, model_name(direction))
        version_dir = latest_version(model_dir) or latest_version(path)
        if version_dir is None:
            return None
        candidate = version_dir
    info = read_export_info(candidate)
    if info.get("direction") != direction:
        raise errors.UserError(
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
        if name.isdigit() and is_saved_model(os.path.join(model_dir, name))
    ]
    return os.path.join(model_dir, str(max(versions))) if versions else None


def read_export_info(path: str) -> dict:
    """The export metadata (direction, checkpoint, step, precision, ...) of an export.

    Args:
      path: a SavedModel directory (reads assets/export.json) or a .tflite/.onnx file (reads the
        .json beside it).

    Raises:
      errors.UserError: no metadata: the export was not written by `cyclegan-tf export`.
    """
    if os.path.isfile(path):
        metadata = info_path(path)
        if not os.path.isfile(metadata):
            raise errors.UserError(
                f"{path!r} has no {os.path.basename(metadata)} beside it; export it with "
                "`cyclegan-tf export` (or copy the .json with the file)."
            )
    else:
        metadata = os.path.join(path, "assets", EXPORT_INFO_FILE)
        if not os.path.isfile(metadata):
            raise errors.UserError(
                f"{path!r} is a SavedModel without assets/{EXPORT_INFO_FILE}; export it with "
                "`cyclegan-tf export`."
            )
    with open(metadata) as f:
        return json.load(f)


def file_format(path: str) -> str | None:
    """`tflite` or `onnx` for a path with that extension, else None."""
    extension = os.path.splitext(path)[1].lower()
    return next((fmt for fmt, spec in FILE_FORMATS.items() if spec[0] == extension), None)


def require_file_format(path: str) -> str:
    """`file_format(path)`, which must not be None.

    Raises:
      errors.ConfigError: not a .tflite or .onnx path.
    """
    fmt = file_format(path)
    if fmt is None:
        raise errors.ConfigError(f"Expected a .tflite or .onnx path. Received: {path!r}")
    return fmt


def is_saved_model(path: str) -> bool:
    """Whether `path` is a SavedModel directory (holds saved_model.pb)."""
    return os.path.isfile(os.path.join(path, "saved_model.pb"))


def info_path(path: str) -> str:
    """The metadata JSON beside a .tflite/.onnx file: the same name with .json."""
    return os.path.splitext(path)[0] + ".json"
