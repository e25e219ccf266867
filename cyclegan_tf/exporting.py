"""Writing every export format of a run's generators, and checking what was written.

`export_run` turns a training run directory into any of (`FORMATS`, one version number for all):

    <export_dir>/cyclegan_a2b/<version>/{saved_model.pb, variables/, assets/, assets.extra/}
    <export_dir>/cyclegan_b2a/<version>/...                 saved_model: TF Serving's layout
    <export_dir>/tflite/cyclegan_a2b_<version>.tflite (+ .json)   tflite: LiteRT, on devices
    <export_dir>/onnx/cyclegan_a2b_<version>.onnx (+ .json)       onnx: onnxruntime and others

TF Serving watches a model base path (`cyclegan_a2b/`) for numbered version directories, so the
TFLite and ONNX files live in folders of their own beside the base paths, never inside a version
(the server would ignore them, but a version directory should hold one SavedModel and nothing
else). Every artifact is written to a hidden staging directory in `<export_dir>` and renamed into
place only when all requested formats and directions are complete (and checked), because TF
Serving polls the base path and would load a half-written version.

The layout's names (model directories, signatures, file inputs and outputs, the metadata files)
are `sources.py`'s, which opens exports again. SavedModel signatures (`sources.SIGNATURES`; the
functions are `inference.Endpoints`'s, so exports and a run directory compute the same pixels):

- `serving_default`: `images_bytes` [N] string (JPEG/PNG/BMP/GIF/WebP files; sizes may differ
  within a request) -> `images_bytes` [N] string (PNG, each the size of its input). The `_bytes`
  suffix makes TF Serving's REST API return `{"b64": ...}`.
- `translate_images`: `images` [N, H, W, 3] uint8 -> `images` [N, H, W, 3] uint8 and
  `images_float` [N, H, W, 3] float32 in [-1, 1] (before rounding).

Each SavedModel carries a warmup request for `serving_default` (`WARMUP_FILE`, one 32x32 PNG) so
that TF Serving traces and optimises the model when it loads it, not on the first user's request.

TFLite and ONNX files (`sources.FILE_INPUTS` / `FILE_OUTPUTS`): `images` [N, H, W, 3] uint8 ->
`translated` [N, H, W, 3] uint8 and `translated_float` [N, H, W, 3] float32 in [-1, 1]: the same
function as `translate_images` (the names differ because ONNX graphs need distinct input and output
names). ONNX files are float32; TFLite files are float32 or quantized (`QUANTIZATIONS`, below), and
use builtin ops only (no Flex delegate needed). Right after writing, each file is run in its own
runtime (`ai_edge_litert` Interpreter, onnxruntime InferenceSession) and compared with the float32
Keras generator; the figures go into its JSON, and a file that fails its check is deleted with an
`ExportCheckError` (nothing of it is left: the export is staged). A float32 file is checked on
generated images at `CHECK_SIZES` and may be at most `CHECK_TOLERANCE` uint8 level off. Their
dependencies are extras: `pip install 'cyclegan-tf[tflite]'` / `'cyclegan-tf[onnx]'`.

Quantized TFLite files (`quantize=`, TensorFlow's post-training quantization), with the same
inputs and outputs (uint8 in, uint8 and float32 out), so everything that runs a float file runs
them unchanged:

- `float16`: float16 weights (half the size), dequantized to float32 when the file is loaded.
- `dynamic`: dynamic-range quantization: int8 weights (a quarter of the size), float activations.
- `int8`: full integer quantization: int8 weights and activations, calibrated on
  `CALIBRATION_IMAGES` of the run's own training images (the input domain of each direction,
  through `data.py`'s training pipeline, so at the run's crop size). The uint8/float conversions
  around the generator, the mirror padding to its size multiple and the statistics of every
  instance norm stay float (`_float_nodes`: TFLite's selective quantization, through
  `tf.lite.experimental.QuantizationDebugger`), because those are what int8 loses most on.

A quantized file is checked on real images, `QUANTIZED_CHECK_IMAGES` of the run's test split
(the generated ones only where the run has no reachable test split; its JSON says which): the PSNR
of its float output against the float32 Keras generator's and the largest uint8 difference are
printed and stored, and a file below its PSNR floor (`QUANTIZED_PSNR_FLOORS`) fails the export.

Any H, W work in every format: images are reflect-padded to the generator's size multiple and
cropped back. A SavedModel computes in the export's precision (default float32; see `export_run`);
inputs and outputs have the same dtypes in all.

Metadata: `assets/config.json` is the run's training config and `assets/export.json` (for files:
`<name>.json` beside them) says what the model is (direction, checkpoint, step, run name,
precision, check figures, versions); `sources.read_exported_config` / `read_export_info` read
them back, `sources.find_saved_model` / `latest_version` find exports.

Why `keras.export.ExportArchive` and not `tf.saved_model.save` of a `tf.Module`: TF Serving loads
SavedModels with the TF1 session loader, which fails on a tf.Module holding a Keras 3 model
("Could not find variable ..."); ExportArchive tracks the Keras variables so that loader works.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from cyclegan_tf import (
    checkpoints,
    data,
    errors,
    hardware,
    inference,
    layers,
    nativelog,
    rundir,
    sources,
)
from cyclegan_tf import images as images_lib
from cyclegan_tf import precision as precision_lib
from cyclegan_tf import version as version_lib

SAVED_MODEL, TFLITE, ONNX = sources.SAVED_MODEL, sources.TFLITE, sources.ONNX
_DOMAINS = {"a2b": "a", "b2a": "b"}  # the domain a direction's generator takes
FORMATS = (SAVED_MODEL, TFLITE, ONNX)
# TF Serving reads warmup requests (a TFRecord of PredictionLog protos, at most 1,000) from here.
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
WARMUP_IMAGE_SIZE = 32
# Heights x widths of the check images: one size a multiple of 4 (no padding), one not.
CHECK_SIZES = ((64, 64), (37, 53))
CHECK_IMAGES_PER_SIZE = 2
CHECK_TOLERANCE = 1  # uint8 levels: float differences of ~1e-6 may flip a rounding
# TFLite post-training quantizations (`quantize=`; see the module docstring). None: float32.
QUANTIZATIONS = ("float16", "dynamic", "int8")
# The lowest PSNR (dB, float outputs against the float32 Keras generator's, on the 0..255 scale)
# a quantized file may have; below it the file is deleted and the export fails. Measured
# (bench/RESULTS.md, "Quantized TFLite files"), float16 / dynamic / int8:
# - the quick preset trained 800 steps, builtin test images: 83.8 / 46.5 / 34.4 dB (a2b);
# - untrained tiny generator: 71.6 / 41.5 / 35.1 dB;
# - untrained paper generator at 256 px: 66.6 / 33.9 / 27.4 dB on smooth random images, but
#   64.3 / 29.2 / 20.9 dB on the built-in images (flat regions: an untrained net's instance norms
#   of near-constant maps amplify small errors);
# - a broken conversion (the float -> uint8 edge quantized): 17-18 dB.
# float16 40 dB (about 2.5 uint8 levels of RMS error) is the goal, far below any model.
# dynamic 30 and int8 25 dB are quality floors: trained models pass with 9-16 dB to spare, broken
# conversions fail, and so do untrained paper-size generators on flat images (that file really
# is 17 levels off on average; use a milder mode for it).
QUANTIZED_PSNR_FLOORS = {"float16": 40.0, "dynamic": 30.0, "int8": 25.0}
# int8 calibration: "a few dozen" training images of the direction's input domain.
CALIBRATION_IMAGES = 32
# Test images a quantized file is checked on (a check runs at ~1 image/s at 256 px on 2 cores).
QUANTIZED_CHECK_IMAGES = 8


class ExportCheckError(errors.UserError):
    """An exported file does not compute what the Keras model computes; it was deleted."""


def parse_quantize(quantize: str | None, formats: Sequence[str]) -> str | None:
    """Checks `quantize` (None or one of `QUANTIZATIONS`) against the formats it applies to.

    Raises:
      errors.ConfigError: an unknown quantization, or one without the tflite format.
    """
    if quantize is None:
        return None
    if quantize not in QUANTIZATIONS:
        raise errors.ConfigError(
            f"quantize must be one of {', '.join(QUANTIZATIONS)} (or omitted for float32). "
            f"Received: quantize={quantize!r}"
        )
    if TFLITE not in formats:
        raise errors.ConfigError(
            f"--quantize={quantize} applies to TFLite files only: add tflite to --format (e.g. "
            f"--format=tflite --quantize={quantize}) or drop --quantize. Received: "
            f"format={','.join(formats)}"
        )
    return quantize


def parse_formats(formats: str | Sequence[str]) -> tuple[str, ...]:
    """`"saved_model,onnx"` or a sequence of names -> a tuple of distinct `FORMATS`, in order.

    Raises:
      errors.ConfigError: an unknown or repeated format, or none.
    """
    names = formats.split(",") if isinstance(formats, str) else list(formats)
    names = [name.strip() for name in names if name.strip()]
    unknown = [name for name in names if name not in FORMATS]
    if unknown or not names or len(set(names)) != len(names):
        raise errors.ConfigError(
            f"format must be a comma-separated list of distinct {', '.join(FORMATS)}. "
            f"Received: format={formats!r}"
        )
    return tuple(names)


def require_extras(formats: Sequence[str]) -> None:
    """Imports what the formats need; a missing module raises one line naming the pip command.

    Raises:
      sources.MissingExtraError: e.g. "The onnx format needs onnxruntime, which is not
        installed: pip install 'cyclegan-tf[onnx]'".
    """
    for fmt in formats:
        if fmt in sources.FILE_FORMATS:
            _, extra, modules = sources.FILE_FORMATS[fmt]
            for module in modules:
                sources.import_extra(module, fmt, extra)


# -- export ----------------------------------------------------------------------------------


def export_run(
    run_dir: str,
    export_dir: str,
    checkpoint: str | None = None,
    version: int | None = None,
    directions: tuple[str, ...] | None = None,
    precision: str | None = None,
    formats: str | Sequence[str] = (SAVED_MODEL,),
    quantize: str | None = None,
    dataset: str | None = None,
) -> dict[str, dict[str, str]]:
    """Exports the generators of a training run in the requested formats (see the module doc).

    Args:
      run_dir: a training run directory (config.json + checkpoints/).
      export_dir: the base directory (layout in the module docstring).
      checkpoint: None for the latest, else a step ("1200"), a name ("ckpt-1200") or a path prefix.
      version: the version number; default: one more than the highest version of any direction
        and format in `export_dir` (1 for a new directory), so all artifacts share a version.
      directions: which directions to export; None: those the run has generators for (both,
        or the ones a run imported from PyTorch holds: `rundir.imported_directions`).
      precision: the dtype policy the SavedModels compute in, one of `precision.PRECISIONS`.
        None: float32, which runs at full speed everywhere (an export is made to be moved).
        `mixed_bfloat16` serves 1.9x faster than float32 at 256 px on a CPU with AVX512_BF16
        (bench/RESULTS.md) but ~2x slower where bfloat16 is emulated (AVX2-only CPUs); `auto`
        picks it by the hardware of the EXPORTING machine (`precision.resolve`). Whatever the
        run trained in; inputs and outputs have the same dtypes in every precision. TFLite and
        ONNX files are float32 unless `quantize` says otherwise.
      formats: `FORMATS` names, a tuple or a comma-separated string ("saved_model,onnx").
      quantize: None (float32) or one of `QUANTIZATIONS`: the TFLite files are quantized so
        (`<name>_<quantize>.tflite`; the other formats are not affected). Needs `tflite` in
        `formats`.
      dataset: with `quantize`: the images to calibrate int8 on and check the files against, as
        `train --dataset` takes them; None: the run's own (config.json). For a run whose
        images moved, or one imported from PyTorch (which has none of its own).

    Returns:
      format -> direction -> path: the SavedModel version directory, or the .tflite/.onnx file.

    Raises:
      errors.ConfigError: an unknown format, direction or precision.
      ValueError: an invalid or already existing version.
      sources.MissingExtraError: a format whose optional dependencies are missing.
      ExportCheckError: a TFLite or ONNX file that computes something else, or a quantized
        file below its PSNR floor (nothing is written).
      errors.DataError: `quantize="int8"` and the training images cannot be read.
      checkpoints.CheckpointError: an unusable run directory or checkpoint.
    """
    hardware.configure_gpus()  # before anything initialises a GPU (another process may train)
    formats = parse_formats(formats)
    quantize = parse_quantize(quantize, formats)
    if directions is None:
        directions = rundir.imported_directions(run_dir)
    if not directions or len(set(directions)) != len(directions):
        raise errors.ConfigError(f"directions must be distinct a2b/b2a. Received: {directions!r}")
    for direction in directions:
        inference.check_direction(direction)
    require_extras(formats)  # before the slow part: a missing package is reported at once
    resolution = precision_lib.resolve(precision or "float32")
    version = _choose_version(export_dir, directions, formats, version, quantize)
    run = inference.load_run(run_dir, checkpoint, directions, resolution.precision)
    file_formats = [fmt for fmt in formats if fmt in sources.FILE_FORMATS]
    float32_run = run
    if file_formats and run.precision != "float32":
        float32_run = inference.load_run(run_dir, run.checkpoint, directions, "float32")
    config_json = run.config.to_json()
    step = checkpoints.step_of(run.checkpoint)
    run_images = RunImages(run_dir, run.config, dataset) if quantize else None
    calibration = {}
    if quantize == "int8":  # before any conversion: unreadable training images fail at once
        calibration = {direction: run_images.calibration(direction) for direction in directions}

    def info(direction: str, fmt: str, precision: str) -> dict:
        return {
            "format": fmt,
            "direction": direction,
            "generator": inference.GENERATOR_NAMES[direction],
            "model_name": sources.model_name(direction),
            "version": version,
            "checkpoint": os.path.basename(run.checkpoint),
            "step": step,
            # The run's name only: an absolute path would name the machine the export was made on.
            "run_name": os.path.basename(os.path.normpath(os.path.abspath(run_dir))),
            "generator_architecture": run.config.model.generator,
            "size_multiple": run.multiple,
            "precision": precision,
            "cyclegan_tf_version": version_lib.__version__,
            "tensorflow_version": tf.__version__,
            "keras_version": keras.__version__,
        }

    os.makedirs(export_dir, exist_ok=True)
    # Hidden and outside the model directories, so TF Serving never sees a partial version.
    staging = tempfile.mkdtemp(prefix=".export-tmp-", dir=export_dir)
    try:
        staged = {}  # (format, direction) -> staged path
        for direction in directions:
            for fmt in file_formats:
                quantization = quantize if fmt == TFLITE else None
                extension = sources.FILE_FORMATS[fmt][0]
                stem = _file_stem(direction, version, quantization)
                file_info = {
                    **info(direction, fmt, quantization or "float32"),
                    # The training config, as a SavedModel's assets/config.json holds it (evaluate
                    # reads the test preprocessing from it).
                    "config": run.config.to_dict(),
                }
                if fmt == TFLITE:
                    file_info["quantization"] = quantization
                staged[fmt, direction] = export_file(
                    float32_run.generators[direction],
                    os.path.join(staging, fmt, stem + extension),
                    multiple=run.multiple,
                    info=file_info,
                    quantize=quantization,
                    calibration=calibration.get(direction),
                    check_images=run_images.check(direction) if quantization else None,
                )
            if SAVED_MODEL in formats:
                saved_info = info(direction, SAVED_MODEL, run.precision)
                saved_info["precision_reason"] = resolution.reason
                saved_info["signatures"] = {
                    k: {"inputs": i, "outputs": o} for k, (i, o) in sources.SIGNATURES.items()
                }
                staged[SAVED_MODEL, direction] = export_generator(
                    run.generators[direction],
                    os.path.join(staging, direction),
                    multiple=run.multiple,
                    config_json=config_json,
                    info=saved_info,
                )
        written: dict[str, dict[str, str]] = {}
        for fmt in formats:
            for direction in directions:
                target = _target(export_dir, fmt, direction, version, quantize)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                if os.path.exists(target):  # another export raced us to this version
                    raise errors.UserError(f"{target!r} appeared during the export; export again.")
                if fmt in sources.FILE_FORMATS:  # the metadata first: a visible file always has it
                    os.rename(sources.info_path(staged[fmt, direction]), sources.info_path(target))
                os.rename(staged[fmt, direction], target)
                written.setdefault(fmt, {})[direction] = target
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return written


def export_generator(
    generator: keras.Model, path: str, *, multiple: int, config_json: str, info: dict
) -> str:
    """Writes one generator as a SavedModel with the `sources.SIGNATURES` and a warmup request.

    Not atomic (see export_run).

    Args:
      generator: a model from `generators.build_generator` (weights loaded).
      path: the SavedModel directory to write (must not exist).
      multiple: `generators.size_multiple` of the generator.
      config_json: the training config, stored as assets/config.json.
      info: JSON-serialisable metadata, stored as assets/export.json (with a "warmup" entry
        added); its "model_name" is the warmup request's model name (default
        `sources.MODEL_PREFIX`).

    Returns:
      `path`.
    """
    endpoints = inference.Endpoints(generator, multiple)
    archive = keras.export.ExportArchive()
    archive.track(generator)
    archive.add_endpoint(
        sources.SERVING_SIGNATURE,
        endpoints.translate_encoded,
        input_signature=[tf.TensorSpec([None], tf.string, name="images_bytes")],
    )
    archive.add_endpoint(
        sources.TENSOR_SIGNATURE,
        endpoints.translate_images,
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")],
    )
    info = {
        **info,
        "warmup": {
            "file": WARMUP_FILE,
            "requests": 1,
            "signature": sources.SERVING_SIGNATURE,
            "image": f"{WARMUP_IMAGE_SIZE}x{WARMUP_IMAGE_SIZE} PNG",
        },
    }
    with tempfile.TemporaryDirectory() as tmp:
        files = {
            "config_json": (sources.CONFIG_ASSET, config_json),
            "export_json": (sources.EXPORT_INFO_FILE, json.dumps(info, indent=2)),
        }
        for attribute, (name, text) in files.items():
            with open(os.path.join(tmp, name), "w") as f:
                f.write(text + "\n")
            # ExportArchive has no public hook for assets; its root trackable is what gets saved,
            # and tf.saved_model.save copies every tracked Asset into <path>/assets/.
            setattr(archive._tf_trackable, attribute, tf.saved_model.Asset(os.path.join(tmp, name)))
        archive.write_out(path, verbose=False)
    write_warmup(path, info.get("model_name") or sources.MODEL_PREFIX)
    return path


class _FileModel(keras.Model):
    """What a TFLite or ONNX file holds: `inference.Endpoints.translate_images`, named for files."""

    def __init__(self, generator: keras.Model, multiple: int):
        super().__init__(name="cyclegan_translator")
        self.generator = generator
        self.multiple = int(multiple)

    def call(self, images):
        out = inference.Endpoints(self.generator, self.multiple).translate_images(images)
        return dict(zip(sources.FILE_OUTPUTS, (out["images"], out["images_float"])))


def file_model(generator: keras.Model, multiple: int) -> keras.Model:
    """What a TFLite or ONNX file holds, as a built Keras model (Keras exports built models only).

    Args:
      generator: a float32 model from `generators.build_generator`.
      multiple: `generators.size_multiple` of the generator.
    """
    model = _FileModel(generator, multiple)
    model(np.zeros((1, 8, 8, 3), np.uint8))
    return model


def file_signature() -> list[tf.TensorSpec]:
    """The input signature of TFLite and ONNX files: `images` uint8 [N, H, W, 3]."""
    return [tf.TensorSpec([None, None, None, 3], tf.uint8, name=sources.FILE_INPUTS[0])]


def export_file(
    generator: keras.Model,
    path: str,
    *,
    multiple: int,
    info: dict,
    quantize: str | None = None,
    calibration: Sequence[np.ndarray] | None = None,
    check_images: tuple[Sequence[np.ndarray], dict] | None = None,
) -> str:
    """Writes one float32 generator as a TFLite or ONNX file, checks it and writes its JSON.

    The format is the extension of `path` (.tflite or .onnx). The file is run in its own runtime
    against the Keras generator (`check_file`; quantized files `check_quantized`); the figures are
    added to `info` under "check" and `info` is written to `<path minus extension>.json`. Not
    atomic (see export_run).

    Args:
      generator: a float32 model from `generators.build_generator` (weights loaded).
      path: the file to write (its folder is created).
      multiple: `generators.size_multiple` of the generator.
      info: JSON-serialisable metadata.
      quantize: TFLite only: None (float32) or one of `QUANTIZATIONS`.
      calibration: with quantize="int8": uint8 [H, W, 3] images of the generator's input domain
        (`RunImages.calibration`).
      check_images: with `quantize`: (uint8 [H, W, 3] images, what they are) to check the file on
        (`RunImages.check`); None: generated images at `CHECK_SIZES`.

    Returns:
      `path`.

    Raises:
      sources.MissingExtraError: the format's extra is not installed.
      ExportCheckError: the file computes something else, or (quantized) is below its PSNR
        floor; it was deleted.
    """
    fmt = sources.require_file_format(path)
    require_extras([fmt])
    if generator.compute_dtype != "float32":
        raise errors.ConfigError(
            f"{fmt} files are float32; build the generator with precision='float32'. "
            f"Received: a {generator.compute_dtype} generator"
        )
    if quantize is not None and fmt != TFLITE:
        raise errors.ConfigError(f"Only TFLite files are quantized. Received: {path!r}")
    if quantize == "int8" and not calibration:
        raise errors.ConfigError("quantize='int8' needs calibration images.")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    model, signature = file_model(generator, multiple), file_signature()
    if fmt == TFLITE:
        with open(path, "wb") as f:
            f.write(convert_tflite(model, signature, quantize, calibration))
    else:
        with warnings.catch_warnings():  # Keras' numpy-2 patch for tf2onnx warns about itself
            warnings.simplefilter("ignore", FutureWarning)
            model.export(path, format="onnx", input_signature=signature, verbose=False)
    endpoints = inference.Endpoints(generator, multiple)
    if quantize is None:
        figures = check_file(path, endpoints)
    else:
        images, described = check_images or (_generated_check_images(), {"source": "generated"})
        figures = check_quantized(path, endpoints, images, quantize, described)
    runtime = {TFLITE: "ai_edge_litert", ONNX: "onnxruntime"}[fmt]
    info = {
        **info,
        "inputs": {sources.FILE_INPUTS[0]: "uint8 [N, H, W, 3]"},
        "outputs": {
            sources.FILE_OUTPUTS[0]: "uint8 [N, H, W, 3]",
            sources.FILE_OUTPUTS[1]: "float32 [N, H, W, 3] in [-1, 1]",
        },
        "check": figures,
        f"{runtime}_version": _version_of(runtime),
    }
    if fmt == ONNX:
        info["tf2onnx_version"] = _version_of("tf2onnx")
    with open(sources.info_path(path), "w") as f:
        f.write(json.dumps(info, indent=2) + "\n")
    return path


def convert_tflite(
    model: keras.Model,
    input_signature: list[tf.TensorSpec],
    quantize: str | None = None,
    calibration: Sequence[np.ndarray] | None = None,
) -> bytes:
    """A built Keras model -> TFLite flatbuffer bytes, builtin ops only, float32 or quantized.

    The path Keras' own LiteRT export takes (`ExportArchive` -> SavedModel ->
    `TFLiteConverter.from_saved_model`), done here because quantization needs the converter:
    `float16` and `dynamic` set its optimizations; `int8` calibrates on `calibration` and keeps
    `_float_nodes` in float through `tf.lite.experimental.QuantizationDebugger` (the converter's
    selective quantization).

    Args:
      model: a built `_FileModel`.
      input_signature: its input specs.
      quantize: None (float32) or one of `QUANTIZATIONS`.
      calibration: int8: uint8 [H, W, 3] images, fed one at a time.
    """
    with tempfile.TemporaryDirectory() as saved_model:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(
            "serve",
            functools.partial(model.__call__, training=False),
            input_signature=input_signature,
        )
        archive.write_out(saved_model, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
        # Builtin ops only: the file then runs in the plain LiteRT interpreter (no Flex delegate).
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        converter.experimental_enable_resource_variables = True  # as Keras' exporter
        if quantize is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if quantize != "int8":  # float32, float16, dynamic (no representative data: weights only)
            return converter.convert()

        def representative():
            for image in calibration:
                yield [np.ascontiguousarray(image, np.uint8)[np.newaxis]]

        converter.representative_dataset = representative
        options = tf.lite.experimental.QuantizationDebugOptions()
        with warnings.catch_warnings(), nativelog.quiet():
            # The debugger opens its debug model in tf.lite.Interpreter, which warns that it is
            # deprecated; the quantizer prints its settings on file descriptor 2.
            warnings.simplefilter("ignore", UserWarning)
            debugger = tf.lite.experimental.QuantizationDebugger(
                converter=converter, debug_options=options
            )
            # The nodes are named in the calibrated model, which the debugger made: the names
            # are read from it, and its next quantization leaves those nodes in float.
            options.denylisted_nodes = _float_nodes(debugger.calibrated_model, model.generator)
            return debugger.get_nondebug_quantized_model()


def _float_nodes(calibrated_model: bytes, generator: keras.Model) -> list[str]:
    """The nodes (output tensor names) an int8 file keeps in float, found in the calibrated model.

    - Everything outside the generator: the uint8 -> float table, the mirror padding to the size
      multiple, the crop and float -> uint8. Quantized, the last of these collapsed the uint8
      output to 17-18 dB PSNR (the multiply by 127.5 got an int8 scale of ~0.96) while the float
      output kept 31 dB; they cost a few elementwise ops per pixel in float.
    - Every instance norm (its statistics, normalization and the ReLU fused into it), between an
      int8 convolution's dequantize and the next one's quantize: in int8 the mean/variance of a
      whole feature map lost 1.3-2.1 dB (trained quick model 32.3 -> 34.4 dB with them in
      float; untrained paper generator 26.1 -> 27.4 dB), and LiteRT's int8 MEAN, RSQRT and
      SQUARED_DIFFERENCE are not taken by XNNPACK, so the float norms were also faster in every
      interleaved timing here (a loaded machine: bench/tflite_quant.py measures it properly).
    """
    interpreter = sources.import_extra("ai_edge_litert.interpreter", TFLITE, "tflite")
    names = [
        t["name"]
        for t in interpreter.Interpreter(model_content=calibrated_model).get_tensor_details()
    ]
    # Names are scopes: "cyclegan_translator_1/g_ab_1/down1_norm_1/FusedBatchNormV3", fused ops'
    # joined by ";". Keras appends "_<n>" to a layer's scope when it is called.
    inside = re.compile(rf"(^|[;/]){re.escape(generator.name)}(_\d+)?/")
    norms = [
        re.compile(rf"/{re.escape(layer.name)}(_\d+)?/")
        for layer in generator.layers
        if isinstance(layer, layers.InstanceNormalization)
    ]
    return sorted(
        name
        for name in names
        if not inside.search(name) or any(norm.search(name) for norm in norms)
    )


# -- checking and running TFLite / ONNX files --------------------------------------------------


def check_file(
    path: str,
    endpoints: inference.Endpoints,
    sizes: Sequence[tuple[int, int]] = CHECK_SIZES,
    tolerance: int | None = None,
) -> dict:
    """Runs a .tflite/.onnx file in its runtime and compares it with the Keras generator.

    Args:
      path: the file.
      endpoints: the float32 generator it was made from (`inference.Endpoints`).
      sizes: (height, width) of the generated check images, `CHECK_IMAGES_PER_SIZE` per size.
      tolerance: the largest acceptable uint8 difference; None: `CHECK_TOLERANCE`.

    Returns:
      {"max_uint8_difference": int, "max_float_difference": float, "sizes": [[h, w], ...],
      "images_per_size": int, "reference": str}.

    Raises:
      ExportCheckError: a difference above `tolerance`; the file (and its JSON) was deleted.
    """
    fmt = sources.require_file_format(path)
    tolerance = CHECK_TOLERANCE if tolerance is None else tolerance
    run = sources.open_file(path)
    worst_uint8, worst_float, worst_size = 0, 0.0, sizes[0]
    for height, width in sizes:
        images = check_images(height, width)
        want = endpoints.translate_images(tf.constant(images))
        got = run(images)
        uint8 = int(np.abs(got["translated"].astype(int) - want["images"].numpy()).max())
        floats = float(np.abs(got["translated_float"] - want["images_float"].numpy()).max())
        if uint8 > worst_uint8:
            worst_size = (height, width)
        worst_uint8, worst_float = max(worst_uint8, uint8), max(worst_float, floats)
    if worst_uint8 > tolerance:
        _remove_file_export(path)
        raise ExportCheckError(
            f"The {fmt} export differs from the Keras model by up to {worst_uint8} uint8 levels "
            f"(float {worst_float:.2g}) on {worst_size[0]}x{worst_size[1]} test images, more than "
            f"{tolerance}; it was deleted. Use --format=saved_model, or report it with your "
            "tensorflow/keras versions."
        )
    return {
        "max_uint8_difference": worst_uint8,
        "max_float_difference": worst_float,
        "sizes": [list(size) for size in sizes],
        "images_per_size": CHECK_IMAGES_PER_SIZE,
        "reference": "the float32 Keras generator through inference.Endpoints.translate_images",
    }


def check_images(height: int, width: int) -> np.ndarray:
    """Deterministic uint8 [CHECK_IMAGES_PER_SIZE, height, width, 3]: gradients plus noise."""
    rng = np.random.default_rng([height, width])
    ramp = np.linspace(0.0, 160.0, width, dtype=np.float32)[None, :, None]
    noise = rng.uniform(0.0, 95.0, (CHECK_IMAGES_PER_SIZE, height, width, 3))
    return np.clip(ramp + noise, 0, 255).astype(np.uint8)


def _generated_check_images() -> list[np.ndarray]:
    """`check_images` at every `CHECK_SIZES`, one [H, W, 3] image per entry."""
    return [image for size in CHECK_SIZES for image in check_images(*size)]


def _remove_file_export(path: str) -> None:
    """Deletes a TFLite/ONNX file that failed its check, and its JSON if written."""
    for leftover in (path, sources.info_path(path)):
        if os.path.exists(leftover):
            os.remove(leftover)


def check_quantized(
    path: str,
    endpoints: inference.Endpoints,
    images: Sequence[np.ndarray],
    quantize: str,
    described: dict,
    floor: float | None = None,
) -> dict:
    """Runs a quantized .tflite file on `images` and measures it against the float32 generator.

    Args:
      path: the file.
      endpoints: the float32 generator it was made from (`inference.Endpoints`).
      images: uint8 [H, W, 3] images (sizes may differ), run one at a time.
      quantize: the file's quantization, one of `QUANTIZATIONS`.
      described: what the images are (stored under "images" with their count and sizes).
      floor: the lowest acceptable PSNR in dB; None: `QUANTIZED_PSNR_FLOORS[quantize]`.

    Returns:
      {"psnr_db": PSNR of `translated_float` against the Keras float output over all pixels,
      peak-to-peak 2 (the 0..255 scale's PSNR), "floor_psnr_db", "max_uint8_difference",
      "mean_uint8_difference", "max_float_difference", "images": described + count + sizes,
      "reference": str}.

    Raises:
      ExportCheckError: a PSNR below `floor`; the file (and its JSON) was deleted.
    """
    floor = QUANTIZED_PSNR_FLOORS[quantize] if floor is None else floor
    run = sources.open_file(path)
    squared, levels, values = 0.0, 0, 0
    worst_uint8, worst_float = 0, 0.0
    for image in images:
        batch = np.ascontiguousarray(image, np.uint8)[np.newaxis]
        want = endpoints.translate_images(tf.constant(batch))
        got = run(batch)
        error = got["translated_float"].astype(np.float64) - want["images_float"].numpy()
        squared += float(np.sum(error**2))
        values += error.size
        uint8 = np.abs(got["translated"].astype(int) - want["images"].numpy())
        levels += int(uint8.sum())
        worst_uint8 = max(worst_uint8, int(uint8.max()))
        worst_float = max(worst_float, float(np.abs(error).max()))
    mse = squared / values
    psnr = 10.0 * math.log10(4.0 / mse) if mse > 0 else math.inf
    sizes = sorted({tuple(image.shape[:2]) for image in images})
    figures = {
        "psnr_db": round(psnr, 2) if math.isfinite(psnr) else None,  # None: identical outputs
        "floor_psnr_db": floor,
        "max_uint8_difference": worst_uint8,
        "mean_uint8_difference": round(levels / values, 4),
        "max_float_difference": worst_float,
        "images": {**described, "count": len(images), "sizes": [list(s) for s in sizes]},
        "reference": "the float32 Keras generator through inference.Endpoints.translate_images",
    }
    if psnr < floor:
        _remove_file_export(path)
        raise ExportCheckError(
            f"The {quantize} TFLite export is {psnr:.1f} dB PSNR from the float32 Keras model on "
            f"{len(images)} {described.get('source', 'check')} images, below its floor of "
            f"{floor:g} dB; it was deleted. Try a milder --quantize (float16 keeps the most), or "
            "omit --quantize for float32."
        )
    return figures


# -- the run's own images, for quantized files ------------------------------------------------


class RunImages:
    """A run's images for quantized TFLite files: uint8, read through `data.py` once.

    `calibration(direction)`: `CALIBRATION_IMAGES` training images of the direction's input
    domain (a2b: A), as the training pipeline crops them (the run's crop size). `check(direction)`:
    the first `QUANTIZED_CHECK_IMAGES` test images of that domain as the test pipeline prepares
    them, or the generated check images where the run has no readable test split.

    Args:
      run_dir: the run directory (its file_checks.json is reused, never written).
      config: the run's Config.
      dataset: another dataset to read instead of the run's own (as `train --dataset` takes it).
    """

    def __init__(self, run_dir: str, config, dataset: str | None = None):
        self.imported = os.path.isfile(os.path.join(run_dir, rundir.IMPORTED_FILE))
        self.run_dir = run_dir
        self.given = dataset is not None
        self.config = config if dataset is None else config.replace(dataset=dataset)
        self._loaded = None

    @property
    def dataset(self) -> str:
        return self.config.data.dataset

    def _unpaired(self) -> data.Unpaired:
        """The dataset; raises the one-line DataError of `data.load` (remembered)."""
        if self._loaded is None:
            try:
                checks = data.FileChecks.read(os.path.join(self.run_dir, rundir.FILE_CHECKS))
                self._loaded = data.load(self.config.data, self.config.train.seed, None, checks)
            except errors.DataError as e:
                self._loaded = e
        if isinstance(self._loaded, Exception):
            raise self._loaded
        return self._loaded

    def calibration(self, direction: str) -> list[np.ndarray]:
        """uint8 [H, W, 3] training images of `direction`'s input domain.

        Raises:
          errors.DataError: the run was imported (no images of its own) or its training images
            cannot be read; one line saying what to do.
        """
        if self.imported and not self.given:
            raise errors.DataError(
                f"--quantize=int8 calibrates on the run's training images, and {self.run_dir} "
                "was imported from PyTorch without any: pass --dataset=<the images it was "
                "trained on>, or use --quantize=dynamic or float16 (they need no images)."
            )
        domain = _DOMAINS[direction]
        try:
            unpaired = self._unpaired()
            steps = math.ceil(CALIBRATION_IMAGES / self.config.data.batch_size)
            found = [
                images_lib.to_uint8(image)
                for batch in unpaired.train(num_steps=steps)
                for image in batch[data.DOMAINS.index(domain)].numpy()
            ]
        except (errors.DataError, tf.errors.OpError) as e:
            message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise errors.DataError(
                f"--quantize=int8 calibrates on the run's training images ({self.dataset}), "
                f"which cannot be read here: {message.rstrip('.')}. Make them available there, "
                "pass --dataset=<where they are now>, or use --quantize=dynamic or float16 "
                "(they need no images)."
            ) from e
        return found[:CALIBRATION_IMAGES]

    def check(self, direction: str) -> tuple[list[np.ndarray], dict]:
        """(uint8 [H, W, 3] images, what they are) to check a quantized file of `direction` on."""
        domain = _DOMAINS[direction]
        if self.imported and not self.given:
            reason = "the run was imported from PyTorch and has no test split of its own"
        else:
            try:
                test = self._unpaired().test(domain).take(QUANTIZED_CHECK_IMAGES)
                images = [images_lib.to_uint8(image.numpy()) for image, _ in test]
                if images:
                    return images, {
                        "source": "test split",
                        "dataset": self.dataset,
                        "domain": domain,
                    }
                reason = f"the test split of domain {domain} is empty"
            except (errors.DataError, tf.errors.OpError) as e:
                reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return _generated_check_images(), {"source": "generated", "why_not_test_split": reason}


# -- TF Serving warmup -----------------------------------------------------------------------


def write_warmup(saved_model_dir: str, name: str) -> str:
    """Writes `<saved_model_dir>/assets.extra/tf_serving_warmup_requests`: one request.

    The request is a `serving_default` PredictRequest with one 32x32 PNG (a colour gradient):
    TF Serving (`--enable_model_warmup`, on by default) replays it when it loads the version,
    so the first real request does not pay for tracing and graph optimisation.

    Returns:
      The path of the warmup file.
    """
    row = np.linspace(0, 255, WARMUP_IMAGE_SIZE).astype(np.uint8)
    image = np.stack(
        np.broadcast_arrays(row[None, :], row[:, None], np.full_like(row[None, :], 128)), axis=-1
    )
    png = tf.io.encode_png(image).numpy()
    log = prediction_log_class()()
    request = log.predict_log.request
    request.model_spec.name = name
    request.model_spec.signature_name = sources.SERVING_SIGNATURE
    tensor = tf.make_tensor_proto([png], dtype=tf.string)
    request.inputs[sources.SIGNATURES[sources.SERVING_SIGNATURE][0][0]].ParseFromString(
        tensor.SerializeToString()
    )
    path = os.path.join(saved_model_dir, WARMUP_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(log.SerializeToString())
    return path


@functools.lru_cache(maxsize=1)
def prediction_log_class() -> type:
    """`tensorflow.serving.PredictionLog`, reduced to the fields a predict warmup request uses.

    TensorFlow does not ship TF Serving's protos, and the `tensorflow-serving-api` package would
    pin its own TensorFlow, so the messages are declared here, in a private descriptor pool, with
    the field numbers of tensorflow_serving/apis/{prediction_log,predict,model}.proto:
    PredictionLog.predict_log = 6, PredictLog.request = 1, PredictRequest.model_spec = 1 and
    .inputs = 2 (map<string, TensorProto>), ModelSpec.name = 1 and .signature_name = 3. The
    bytes are what TF Serving parses (fields left out are simply absent).
    """
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    from tensorflow.core.framework import tensor_pb2

    pool = descriptor_pool.DescriptorPool()
    added = set()

    def add(file_descriptor):  # TensorProto's file and its imports, copied from TensorFlow's
        if file_descriptor.name in added:
            return
        for dependency in file_descriptor.dependencies:
            add(dependency)
        proto = descriptor_pb2.FileDescriptorProto()
        file_descriptor.CopyToProto(proto)
        pool.AddSerializedFile(proto.SerializeToString())
        added.add(file_descriptor.name)

    add(tensor_pb2.DESCRIPTOR)
    field = descriptor_pb2.FieldDescriptorProto
    string, message = field.TYPE_STRING, field.TYPE_MESSAGE
    optional, repeated = field.LABEL_OPTIONAL, field.LABEL_REPEATED
    messages = {  # name -> [(field name, number, type, type name, label)]
        "ModelSpec": [
            ("name", 1, string, None, optional),
            ("signature_name", 3, string, None, optional),
        ],
        "PredictRequest": [
            ("model_spec", 1, message, ".tensorflow.serving.ModelSpec", optional),
            ("inputs", 2, message, ".tensorflow.serving.PredictRequest.InputsEntry", repeated),
        ],
        "PredictLog": [("request", 1, message, ".tensorflow.serving.PredictRequest", optional)],
        "PredictionLog": [
            ("predict_log", 6, message, ".tensorflow.serving.PredictLog", optional),
        ],
    }
    file = descriptor_pb2.FileDescriptorProto(
        name="cyclegan_tf/tf_serving_warmup.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=[tensor_pb2.DESCRIPTOR.name],
    )

    def fill(target, fields):
        for name, number, kind, type_name, label in fields:
            target.field.add(name=name, number=number, type=kind, label=label)
            if type_name:
                target.field[-1].type_name = type_name

    for name, fields in messages.items():
        fill(file.message_type.add(name=name), fields)
    request = next(m for m in file.message_type if m.name == "PredictRequest")
    entry = request.nested_type.add(name="InputsEntry")
    entry.options.map_entry = True
    fill(
        entry,
        [
            ("key", 1, string, None, optional),
            ("value", 2, message, ".tensorflow.TensorProto", optional),
        ],
    )
    pool.AddSerializedFile(file.SerializeToString())
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.serving.PredictionLog")
    )


# -- paths -----------------------------------------------------------------------------------


def _file_stem(direction: str, version: int, quantize: str | None = None) -> str:
    """cyclegan_a2b_1, or cyclegan_a2b_1_int8 for a quantized file."""
    suffix = f"_{quantize}" if quantize else ""
    return f"{sources.model_name(direction)}_{version}{suffix}"


def _target(
    export_dir: str, fmt: str, direction: str, version: int, quantize: str | None = None
) -> str:
    if fmt == SAVED_MODEL:
        return os.path.join(export_dir, sources.model_name(direction), str(version))
    extension = sources.FILE_FORMATS[fmt][0]
    stem = _file_stem(direction, version, quantize if fmt == TFLITE else None)
    return os.path.join(export_dir, fmt, stem + extension)


def _version_of(module: str) -> str | None:
    try:
        from importlib import metadata

        name = {"ai_edge_litert": "ai-edge-litert"}.get(module, module)
        return metadata.version(name)
    except Exception:  # noqa: BLE001 - a missing version is not worth failing an export
        return None


# -- versions --------------------------------------------------------------------------------


def _choose_version(
    export_dir: str,
    directions: tuple[str, ...],
    formats: tuple[str, ...],
    version: int | None,
    quantize: str | None = None,
) -> int:
    existing = _existing_versions(export_dir, directions)
    if version is None:
        return max(existing, default=0) + 1
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise errors.ConfigError(f"version must be an integer >= 1. Received: version={version!r}")
    taken = [
        _target(export_dir, fmt, d, version, quantize)
        for fmt in formats
        for d in directions
        if os.path.exists(_target(export_dir, fmt, d, version, quantize))
    ]
    if taken:
        raise errors.UserError(
            f"{taken[0]!r} already exists; pass another --version or omit it for the next free "
            f"one ({max(existing) + 1})."
        )
    return version


def _existing_versions(export_dir: str, directions: tuple[str, ...]) -> list[int]:
    """Versions of these directions in any format, so one version number names one export."""
    versions = [
        int(name)
        for direction in directions
        for name in _listdir(os.path.join(export_dir, sources.model_name(direction)))
        if name.isdigit()
    ]
    for fmt, (extension, _, _) in sources.FILE_FORMATS.items():
        for direction in directions:
            pattern = re.compile(  # with a quantization's suffix or without
                re.escape(sources.model_name(direction))
                + r"_(\d+)(?:_[a-z0-9]+)?"
                + re.escape(extension)
            )
            for name in _listdir(os.path.join(export_dir, fmt)):
                match = pattern.fullmatch(name)
                if match:
                    versions.append(int(match.group(1)))
    return versions


def _listdir(path: str) -> list[str]:
    return os.listdir(path) if os.path.isdir(path) else []
