"""SavedModels for TF Serving: one per translation direction, with serving signatures.

This module owns the export format. `export_run` turns a training run directory into

    <export_dir>/cyclegan_a2b/<version>/{saved_model.pb, variables/, assets/}
    <export_dir>/cyclegan_b2a/<version>/...

TF Serving's layout (a model base path holding numbered versions). Each version is written to a
hidden staging directory in `<export_dir>` and renamed into place only when both directions are
complete, because TF Serving polls the base path and would load a half-written version.

Signatures (see `SIGNATURES`; the functions are `inference.Translator`'s, so exports and
`cyclegan-tf translate` on a run directory compute the same pixels):

- `serving_default`: `images_bytes` [N] string (JPEG/PNG/BMP/GIF files; sizes may differ within
  a request) -> `images_bytes` [N] string (PNG, each the size of its input). The `_bytes` suffix
  makes TF Serving's REST API return `{"b64": ...}`.
- `translate_images`: `images` [N, H, W, 3] uint8 -> `images` [N, H, W, 3] uint8 and
  `images_float` [N, H, W, 3] float32 in [-1, 1] (before rounding).

Any H, W work: images are reflect-padded to the generator's size multiple and cropped back.
The generator computes in the export's precision (default: the run's training precision, e.g.
bfloat16 for the quick preset; see `export_run`); inputs and outputs have the same dtypes in all.

`assets/config.json` is the run's training config and `assets/export.json` says what the model
is (direction, checkpoint, step, versions); `read_exported_config` / `inference.read_export_info`
read them back.

Why `keras.export.ExportArchive` and not `tf.saved_model.save` of a `tf.Module`: TF Serving loads
SavedModels with the TF1 session loader, which fails on a tf.Module holding a Keras 3 model
("Could not find variable ..."); ExportArchive tracks the Keras variables so that loader works.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import keras
import tensorflow as tf

import cyclegan_tf
from cyclegan_tf import config as config_lib
from cyclegan_tf import inference

SERVING_SIGNATURE = "serving_default"
TENSOR_SIGNATURE = "translate_images"
# Signature name -> (input keys, output keys), for documentation and tests.
SIGNATURES = {
    SERVING_SIGNATURE: (("images_bytes",), ("images_bytes",)),
    TENSOR_SIGNATURE: (("images",), ("images", "images_float")),
}
CONFIG_ASSET = "config.json"


def model_name(direction: str) -> str:
    """The TF Serving model name of a direction: cyclegan_a2b or cyclegan_b2a."""
    return f"{inference.MODEL_PREFIX}_{direction}"


def export_run(
    run_dir: str,
    export_dir: str,
    checkpoint: str | None = None,
    version: int | None = None,
    directions: tuple[str, ...] = inference.DIRECTIONS,
    precision: str | None = None,
) -> dict[str, str]:
    """Exports the generators of a training run as TF Serving SavedModels.

    Args:
      run_dir: a training run directory (config.json + checkpoints/).
      export_dir: the base directory; `<export_dir>/cyclegan_<direction>/<version>/` is written.
      checkpoint: None for the latest, else a step ("1200"), a name ("ckpt-1200") or a path prefix.
      version: the version number; default: one more than the highest version of any direction
        in `export_dir` (1 for a new directory), so both directions share a version.
      directions: which directions to export.
      precision: the dtype policy the exported generators compute in, one of
        `config.PRECISIONS`; None: the run's training precision. Inputs and outputs are the same
        dtypes in every precision. `mixed_bfloat16` serves 1.9x faster than float32 at 256 px on a
        CPU with AVX512_BF16 (bench/RESULTS.md); export `float32` for hardware without fast
        bfloat16 (older GPUs, CPUs before AVX512_BF16/AMX) or to reproduce float32 pixels exactly.

    Returns:
      direction -> path of the written version directory.

    Raises:
      ValueError: an invalid or already existing version, an unknown direction or precision.
      checkpoints.CheckpointError: an unusable run directory or checkpoint.
    """
    if not directions or len(set(directions)) != len(directions):
        raise ValueError(f"directions must be distinct a2b/b2a. Received: {directions!r}")
    version = _choose_version(export_dir, directions, version)
    run = inference.load_run(run_dir, checkpoint, directions, precision)
    config_json = run.config.to_json()
    step = _checkpoint_step(run.checkpoint)

    os.makedirs(export_dir, exist_ok=True)
    # Hidden and outside the model directories, so TF Serving never sees a partial version.
    staging = tempfile.mkdtemp(prefix=".export-tmp-", dir=export_dir)
    try:
        staged = {}
        for direction in directions:
            info = {
                "direction": direction,
                "generator": inference.GENERATOR_NAMES[direction],
                "model_name": model_name(direction),
                "version": version,
                "checkpoint": os.path.basename(run.checkpoint),
                "step": step,
                "run_dir": os.path.abspath(run_dir),
                "generator_architecture": run.config.model.generator,
                "size_multiple": run.multiple,
                "precision": run.precision,
                "signatures": {k: {"inputs": i, "outputs": o} for k, (i, o) in SIGNATURES.items()},
                "cyclegan_tf_version": cyclegan_tf.__version__,
                "tensorflow_version": tf.__version__,
                "keras_version": keras.__version__,
            }
            staged[direction] = export_generator(
                run.generators[direction],
                os.path.join(staging, direction),
                multiple=run.multiple,
                config_json=config_json,
                info=info,
            )
        written = {}
        for direction in directions:
            target = os.path.join(export_dir, model_name(direction), str(version))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            if os.path.exists(target):  # another export raced us to this version
                raise ValueError(f"{target!r} appeared during the export; export again.")
            os.rename(staged[direction], target)
            written[direction] = target
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return written


def export_generator(
    generator: keras.Model, path: str, *, multiple: int, config_json: str, info: dict
) -> str:
    """Writes one generator as a SavedModel with the `SIGNATURES` (not atomically; see export_run).

    Args:
      generator: a model from `generators.build_generator` (weights loaded).
      path: the SavedModel directory to write (must not exist).
      multiple: `generators.size_multiple` of the generator.
      config_json: the training config, stored as assets/config.json.
      info: JSON-serialisable metadata, stored as assets/export.json.

    Returns:
      `path`.
    """
    translator = inference.Translator(generator, multiple)
    archive = keras.export.ExportArchive()
    archive.track(generator)
    archive.add_endpoint(
        SERVING_SIGNATURE,
        translator.translate_encoded,
        input_signature=[tf.TensorSpec([None], tf.string, name="images_bytes")],
    )
    archive.add_endpoint(
        TENSOR_SIGNATURE,
        translator.translate_images,
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")],
    )
    with tempfile.TemporaryDirectory() as tmp:
        files = {
            "config_json": (CONFIG_ASSET, config_json),
            "export_json": (inference.EXPORT_INFO_FILE, json.dumps(info, indent=2)),
        }
        for attribute, (name, text) in files.items():
            with open(os.path.join(tmp, name), "w") as f:
                f.write(text + "\n")
            # ExportArchive has no public hook for assets; its root trackable is what gets saved,
            # and tf.saved_model.save copies every tracked Asset into <path>/assets/.
            setattr(archive._tf_trackable, attribute, tf.saved_model.Asset(os.path.join(tmp, name)))
        archive.write_out(path, verbose=False)
    return path


def read_exported_config(saved_model_dir: str) -> config_lib.Config:
    """The training Config stored in an exported SavedModel (assets/config.json)."""
    with open(os.path.join(saved_model_dir, "assets", CONFIG_ASSET)) as f:
        return config_lib.Config.from_json(f.read())


def _choose_version(export_dir: str, directions: tuple[str, ...], version: int | None) -> int:
    existing = [
        int(name)
        for direction in directions
        for name in _listdir(os.path.join(export_dir, model_name(direction)))
        if name.isdigit()
    ]
    if version is None:
        return max(existing, default=0) + 1
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"version must be an integer >= 1. Received: version={version!r}")
    taken = [
        os.path.join(export_dir, model_name(d), str(version))
        for d in directions
        if os.path.exists(os.path.join(export_dir, model_name(d), str(version)))
    ]
    if taken:
        raise ValueError(
            f"{taken[0]!r} already exists; pass another --version or omit it for the next free "
            f"one ({max(existing) + 1})."
        )
    return version


def _listdir(path: str) -> list[str]:
    return os.listdir(path) if os.path.isdir(path) else []


def _checkpoint_step(path: str) -> int | None:
    """The training step saved in a checkpoint, or None if it holds no `step` variable."""
    try:
        return int(tf.train.load_variable(path, "step/.ATTRIBUTES/VARIABLE_VALUE"))
    except (tf.errors.OpError, ValueError):
        return None
