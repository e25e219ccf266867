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
names). They are always float32, and TFLite files use builtin ops only (no Flex delegate needed).
Right after writing, each file is run in its own runtime (`ai_edge_litert` Interpreter,
onnxruntime InferenceSession) on generated images at `CHECK_SIZES` and compared with the Keras
generator; the figures go into its JSON, and a file more than `CHECK_TOLERANCE` uint8 level off is
deleted with an `ExportCheckError`. Their dependencies are extras: `pip install
'cyclegan-tf[tflite]'` / `'cyclegan-tf[onnx]'`.

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
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from cyclegan_tf import checkpoints, errors, hardware, inference, rundir, sources
from cyclegan_tf import precision as precision_lib
from cyclegan_tf import version as version_lib

SAVED_MODEL, TFLITE, ONNX = sources.SAVED_MODEL, sources.TFLITE, sources.ONNX
FORMATS = (SAVED_MODEL, TFLITE, ONNX)
# TF Serving reads warmup requests (a TFRecord of PredictionLog protos, at most 1,000) from here.
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
WARMUP_IMAGE_SIZE = 32
# Heights x widths of the check images: one size a multiple of 4 (no padding), one not.
CHECK_SIZES = ((64, 64), (37, 53))
CHECK_IMAGES_PER_SIZE = 2
CHECK_TOLERANCE = 1  # uint8 levels: float differences of ~1e-6 may flip a rounding


class ExportCheckError(errors.UserError):
    """An exported file does not compute what the Keras model computes; it was deleted."""


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
        ONNX files are float32 always.
      formats: `FORMATS` names, a tuple or a comma-separated string ("saved_model,onnx").

    Returns:
      format -> direction -> path: the SavedModel version directory, or the .tflite/.onnx file.

    Raises:
      errors.ConfigError: an unknown format, direction or precision.
      ValueError: an invalid or already existing version.
      sources.MissingExtraError: a format whose optional dependencies are missing.
      ExportCheckError: a TFLite or ONNX file that computes something else (nothing is written).
      checkpoints.CheckpointError: an unusable run directory or checkpoint.
    """
    hardware.configure_gpus()  # before anything initialises a GPU (another process may train)
    formats = parse_formats(formats)
    if directions is None:
        directions = rundir.imported_directions(run_dir)
    if not directions or len(set(directions)) != len(directions):
        raise errors.ConfigError(f"directions must be distinct a2b/b2a. Received: {directions!r}")
    for direction in directions:
        inference.check_direction(direction)
    require_extras(formats)  # before the slow part: a missing package is reported at once
    resolution = precision_lib.resolve(precision or "float32")
    version = _choose_version(export_dir, directions, formats, version)
    run = inference.load_run(run_dir, checkpoint, directions, resolution.precision)
    file_formats = [fmt for fmt in formats if fmt in sources.FILE_FORMATS]
    float32_run = run
    if file_formats and run.precision != "float32":
        float32_run = inference.load_run(run_dir, run.checkpoint, directions, "float32")
    config_json = run.config.to_json()
    step = checkpoints.step_of(run.checkpoint)

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
                extension = sources.FILE_FORMATS[fmt][0]
                path = os.path.join(staging, fmt, _file_stem(direction, version) + extension)
                staged[fmt, direction] = export_file(
                    float32_run.generators[direction],
                    path,
                    multiple=run.multiple,
                    # The training config, as a SavedModel's assets/config.json holds it (evaluate
                    # reads the test preprocessing from it).
                    info={**info(direction, fmt, "float32"), "config": run.config.to_dict()},
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
                target = _target(export_dir, fmt, direction, version)
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


def export_file(generator: keras.Model, path: str, *, multiple: int, info: dict) -> str:
    """Writes one float32 generator as a TFLite or ONNX file, checks it and writes its JSON.

    The format is the extension of `path` (.tflite or .onnx). The file is run in its own runtime
    against the Keras generator (`check_file`); the figures are added to `info` under "check" and
    `info` is written to `<path minus extension>.json`. Not atomic (see export_run).

    Args:
      generator: a float32 model from `generators.build_generator` (weights loaded).
      path: the file to write (its folder is created).
      multiple: `generators.size_multiple` of the generator.
      info: JSON-serialisable metadata.

    Returns:
      `path`.

    Raises:
      sources.MissingExtraError: the format's extra is not installed.
      ExportCheckError: the file computes something else; it was deleted.
    """
    fmt = sources.require_file_format(path)
    require_extras([fmt])
    if generator.compute_dtype != "float32":
        raise errors.ConfigError(
            f"{fmt} files are float32; build the generator with precision='float32'. "
            f"Received: a {generator.compute_dtype} generator"
        )
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    model = _FileModel(generator, multiple)
    model(np.zeros((1, 8, 8, 3), np.uint8))  # Keras exports built models only
    signature = [tf.TensorSpec([None, None, None, 3], tf.uint8, name=sources.FILE_INPUTS[0])]
    if fmt == TFLITE:
        # Builtin ops only: the file then runs in the plain LiteRT interpreter (no Flex delegate).
        model.export(
            path,
            format="litert",
            input_signature=signature,
            verbose=False,
            target_spec={"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]},
        )
    else:
        with warnings.catch_warnings():  # Keras' numpy-2 patch for tf2onnx warns about itself
            warnings.simplefilter("ignore", FutureWarning)
            model.export(path, format="onnx", input_signature=signature, verbose=False)
    figures = check_file(path, inference.Endpoints(generator, multiple))
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
        for leftover in (path, sources.info_path(path)):
            if os.path.exists(leftover):
                os.remove(leftover)
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


def _file_stem(direction: str, version: int) -> str:
    return f"{sources.model_name(direction)}_{version}"


def _target(export_dir: str, fmt: str, direction: str, version: int) -> str:
    if fmt == SAVED_MODEL:
        return os.path.join(export_dir, sources.model_name(direction), str(version))
    extension = sources.FILE_FORMATS[fmt][0]
    return os.path.join(export_dir, fmt, _file_stem(direction, version) + extension)


def _version_of(module: str) -> str | None:
    try:
        from importlib import metadata

        name = {"ai_edge_litert": "ai-edge-litert"}.get(module, module)
        return metadata.version(name)
    except Exception:  # noqa: BLE001 - a missing version is not worth failing an export
        return None


# -- versions --------------------------------------------------------------------------------


def _choose_version(
    export_dir: str, directions: tuple[str, ...], formats: tuple[str, ...], version: int | None
) -> int:
    existing = _existing_versions(export_dir, directions)
    if version is None:
        return max(existing, default=0) + 1
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise errors.ConfigError(f"version must be an integer >= 1. Received: version={version!r}")
    taken = [
        _target(export_dir, fmt, d, version)
        for fmt in formats
        for d in directions
        if os.path.exists(_target(export_dir, fmt, d, version))
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
            pattern = re.compile(
                re.escape(sources.model_name(direction)) + r"_(\d+)" + re.escape(extension)
            )
            for name in _listdir(os.path.join(export_dir, fmt)):
                match = pattern.fullmatch(name)
                if match:
                    versions.append(int(match.group(1)))
    return versions


def _listdir(path: str) -> list[str]:
    return os.listdir(path) if os.path.isdir(path) else []
