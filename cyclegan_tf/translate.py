"""The `translate` command: image files in, translated PNG files out (`cyclegan-tf translate`).

This module owns the file side of translation: which files an input names (`find_images`, by
`images.IMAGE_EXTENSIONS`), where each output goes (`output_names`), loading the model the user
named (a run directory, a SavedModel export, or a .tflite/.onnx file) as one kind of function
(encoded image bytes in -> PNG out), progress, and skipping unreadable files. Translating tensors
is `inference.py`'s; the SavedModel's `serving_default` signature and a run directory run the same
`inference.Translator.translate_encoded`, and TFLite/ONNX files run its `translate_images` with
the decoding and encoding done around them here, so every kind of model gives the same pixels
(within a uint8 level for the files: see `export.check_file`).

File naming: every input `name.ext` is written as `<output>/name.png` (PNG is lossless and keeps the
translation exact); when several inputs share a base name (`cat.jpg`, `cat.bmp`) each of them keeps
its full name instead (`cat.jpg.png`, `cat.bmp.png`). Videos (`video.is_video_file`: mp4, mov, mkv,
webm, animated GIF) are translated frame by frame by `video.translate_video` with the same model
and written under their own name (`<output>/clip.mp4`).
"""

from __future__ import annotations

import dataclasses
import glob
import os
import sys
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from cyclegan_tf import checkpoints, devices, errors, export, inference, rundir, video
from cyclegan_tf import config as config_lib
from cyclegan_tf import images as images_lib
from cyclegan_tf import precision as precision_lib

# A model as `translate` runs it: [N] encoded images -> {"images_bytes": [N] PNG files}.
TranslateFn = Callable[[tf.Tensor], dict[str, tf.Tensor]]


@dataclasses.dataclass
class TranslateSummary:
    """What `translate` did.

    Attributes:
      direction: a2b or b2a.
      output_dir: where the PNG files went.
      written: output paths, in input order.
      failed: (input path, reason) of every file that could not be translated.
      precision: what the model computed in (e.g. "float32", "mixed_bfloat16").
    """

    direction: str
    output_dir: str
    precision: str = ""
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
    """Translates image and video files with a run directory, an export or a TFLite/ONNX file.

    Every image is translated at its own size (see `inference.pad_run_crop`) and written as PNG
    (see the module docstring for names); every video frame by frame into a video of the same
    container (`video.translate_video`; needs PyAV, the `[video]` extra: without it each video is
    skipped with one line naming the install command, and images are still translated). A file
    that cannot be read or decoded is reported on stderr by name and skipped; the rest continue.

    Args:
      model: a run directory (config.json + checkpoints/), an exported version directory
        (`<export_dir>/cyclegan_a2b/1`), a model directory (`<export_dir>/cyclegan_a2b`, newest
        version), the export base directory (`<export_dir>`, the model of `direction`), or a
        `.tflite` / `.onnx` file from `cyclegan-tf export --format=...` (run in ai_edge_litert /
        onnxruntime: check a file where it will run).
      inputs: an image or video file, a folder (its files with `images.IMAGE_EXTENSIONS` or
        `video.VIDEO_EXTENSIONS`), or a glob pattern (matching files with those extensions;
        `**` recurses).
      output_dir: output folder, created if needed.
      direction: a2b (g_ab) or b2a (g_ba).
      checkpoint: run directories only: a step or checkpoint name (default: the latest).
      precision: run directories only: the dtype policy the generator computes in, one of
        `precision.PRECISIONS`; None or `auto`: the best one for THIS machine's devices
        (`precision.resolve`), whatever the run trained in. An export runs in the precision it
        was exported with (TFLite/ONNX files: float32); only None or `auto` are accepted there.
      verbose: print a progress bar (a line per few files when stdout is not a terminal) and a
        summary.

    Returns:
      A `TranslateSummary`; `failed` is empty when every file was translated.

    Raises:
      ValueError: no input files, an unusable model path, a direction the export was not
        made for, or an output folder that would overwrite the inputs.
      checkpoints.CheckpointError: an unusable run directory or checkpoint.
      export.MissingExtraError: a .tflite/.onnx file whose runtime is not installed.
      video.MissingVideoExtraError: only videos to translate, and PyAV is not installed.
    """
    devices.configure_gpus()  # before anything initialises a GPU (another process may train)
    inference.check_direction(direction)
    files = find_images(inputs)
    videos = {path for path in files if video.is_video_file(path)}
    targets = output_names(files, output_dir, videos)
    no_video = None  # without PyAV: why each video is skipped; only videos: the error itself
    try:
        if videos:
            video.require()
    except video.MissingVideoExtraError as e:
        if len(videos) == len(files):
            raise
        no_video = e
    loaded = load_model(model, direction, checkpoint, precision)
    run, computed_in = loaded.encoded, loaded.precision

    os.makedirs(output_dir, exist_ok=True)
    summary = TranslateSummary(direction, output_dir, computed_in)
    progress = _Progress(len(files), verbose, unit="files" if videos else "images")
    for i, (source, target) in enumerate(zip(files, targets)):
        try:
            if source in videos:
                if no_video is not None:
                    raise no_video
                _translate_video(source, target, loaded, progress)
            else:
                with open(source, "rb") as f:
                    data = f.read()
                png = run(tf.constant([data]))["images_bytes"][0].numpy()
                _write_atomically(target, png)
            summary.written.append(target)
        except (OSError, tf.errors.OpError, video.MissingVideoExtraError) as e:
            reason = _error_reason(e)
            summary.failed.append((source, reason))
            progress.message(f"cyclegan-tf: skipped {source}: {reason}")
        progress.update(i + 1)
    if verbose:
        kind = f"files ({len(videos)} videos)" if videos else "images"
        line = f"Translated {len(summary.written)} of {len(files)} {kind} ({direction}) into "
        line += f"{output_dir} ({computed_in})"
        if summary.failed:
            names = ", ".join(os.path.basename(path) for path, _ in summary.failed[:5])
            more = "" if len(summary.failed) <= 5 else f" and {len(summary.failed) - 5} more"
            line += f"; {len(summary.failed)} failed: {names}{more}"
        print(line, flush=True)
    return summary


def find_images(inputs: str) -> list[str]:
    """The files `inputs` names: a file, a folder's image and video files, or a glob's (sorted).

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
        if os.path.isfile(path) and (images_lib.is_image_file(path) or video.is_video_file(path))
    )
    if not files:
        extensions = images_lib.IMAGE_EXTENSIONS + video.VIDEO_EXTENSIONS
        raise errors.UserError(
            f"No input images found for {inputs!r}: give an image or video file, a folder or a "
            f"glob matching {'/'.join(extensions)} files."
        )
    return files


def output_names(
    files: list[str], output_dir: str, videos: set[str] | frozenset[str] = frozenset()
) -> list[str]:
    """Output paths: `<output_dir>/<stem>.png`, or `<name>.png` for inputs sharing a stem;
    `<output_dir>/<name>` for the files in `videos` (the container kept).

    Raises:
      ValueError: an output would overwrite one of the inputs.
    """
    stems = [os.path.splitext(os.path.basename(path))[0] for path in files]
    names = [
        video.output_name(path)
        if path in videos
        else f"{stem}.png"
        if stems.count(stem) == 1
        else f"{os.path.basename(path)}.png"
        for stem, path in zip(stems, files)
    ]
    targets = [os.path.join(output_dir, name) for name in names]
    sources = {os.path.realpath(path) for path in files}
    clash = [t for t in targets if os.path.realpath(t) in sources]
    if clash:
        raise errors.UserError(
            f"The output {clash[0]!r} would overwrite an input file; choose another --output."
        )
    if len(set(targets)) != len(targets):  # same base name in different folders of a glob
        raise errors.UserError(
            "Several inputs would be written to the same output name (same file name in "
            "different folders); translate the folders one at a time."
        )
    return targets


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A model `--model` names, ready to translate one direction.

    Attributes:
      kind: "run" (a run directory), "saved_model", "tflite" or "onnx".
      path: the run directory, the SavedModel version directory, or the file.
      direction: a2b or b2a.
      precision: what the model computes in (e.g. "float32", "mixed_bfloat16").
      encoded: [N] encoded images -> {"images_bytes": [N] PNG files} (`TranslateFn`).
      images: uint8 numpy [N, H, W, 3] -> uint8 numpy [N, H, W, 3] (same-size batches).
      config: the run's training Config (None for a TFLite/ONNX file exported before files
        recorded it).
      checkpoint: the checkpoint the weights come from (a path prefix, or the export's name).
      step: the training step of that checkpoint, when known.
    """

    kind: str
    path: str
    direction: str
    precision: str
    encoded: TranslateFn
    images: Callable[[np.ndarray], np.ndarray]
    config: config_lib.Config | None
    checkpoint: str | None = None
    step: int | None = None


def load_model(
    model: str, direction: str, checkpoint: str | None = None, precision: str | None = None
) -> LoadedModel:
    """Loads what `--model` names (see `translate`) for one direction.

    Args:
      model: a run directory, a SavedModel export (version, model or base directory) or a
        .tflite/.onnx file.
      direction: a2b or b2a.
      checkpoint: run directories only (see `translate`).
      precision: run directories only (see `translate`); None or `auto`: the best for this
        machine.

    Returns:
      A `LoadedModel`; its `encoded` and `images` functions compute the same pixels.

    Raises:
      errors.UserError: an unusable model path or checkpoint, a direction the model does not
        have, or a .tflite/.onnx file whose runtime is not installed.
    """
    inference.check_direction(direction)
    if export.file_format(model) and os.path.isfile(model):
        _only_for_run_directories(model, "a TFLite/ONNX file", checkpoint, precision)
        return _file_model(model, direction)
    saved_model = export.find_saved_model(model, direction)
    if saved_model is not None:
        _only_for_run_directories(model, "an exported SavedModel", checkpoint, precision)
        info = export.read_export_info(saved_model)
        signatures = tf.saved_model.load(saved_model).signatures
        tensor_fn = signatures[export.TENSOR_SIGNATURE]
        return LoadedModel(
            kind=export.SAVED_MODEL,
            path=saved_model,
            direction=direction,
            precision=info.get("precision", ""),
            encoded=signatures[export.SERVING_SIGNATURE],
            images=lambda x: tensor_fn(images=tf.constant(x, tf.uint8))["images"].numpy(),
            config=export.read_exported_config(saved_model),
            checkpoint=info.get("checkpoint"),
            step=info.get("step"),
        )
    if not os.path.isfile(os.path.join(model, rundir.CONFIG_FILE)):
        raise errors.UserError(
            f"--model={model!r} is neither a run directory (with {rundir.CONFIG_FILE}), an "
            f"exported SavedModel (a directory with saved_model.pb, or "
            f"{export.model_name(direction)}/<version>/ below it) nor a .tflite/.onnx file."
        )
    precision = precision_lib.resolve(precision or precision_lib.AUTO).precision
    loaded = inference.load_run(model, checkpoint, directions=(direction,), precision=precision)
    translator = loaded.translator(direction)
    # The same functions the export traces as its signatures, run from the checkpoint.
    encoded = tf.function(
        translator.translate_encoded,
        input_signature=[tf.TensorSpec([None], tf.string, name="images_bytes")],
        autograph=False,
    )
    tensor_fn = tf.function(
        translator.translate_images,
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")],
        autograph=False,
    )
    return LoadedModel(
        kind="run",
        path=model,
        direction=direction,
        precision=loaded.precision,
        encoded=encoded,
        images=lambda x: tensor_fn(tf.constant(x, tf.uint8))["images"].numpy(),
        config=loaded.config,
        checkpoint=loaded.checkpoint,
        step=checkpoints.step_of(loaded.checkpoint),
    )


def _only_for_run_directories(
    model: str, kind: str, checkpoint: str | None, precision: str | None
) -> None:
    """Exports were made from one checkpoint in one precision: refuse flags asking otherwise."""
    # `auto` is the default: "what suits this machine", which for an export is what it holds.
    asked = {"checkpoint": checkpoint, "precision": None if precision == "auto" else precision}
    for name, value in asked.items():
        if value is not None:
            raise errors.UserError(
                f"--{name} applies to run directories; {model!r} is {kind} (export again with "
                "the --checkpoint/--precision you want)."
            )


def _file_model(path: str, direction: str) -> LoadedModel:
    """A TFLite/ONNX export in its runtime; `encoded` wraps it like `translate_encoded`."""
    info = {}
    if os.path.isfile(os.path.splitext(path)[0] + ".json"):
        info = export.read_export_info(path)
        made_for = info.get("direction")
        if made_for != direction:
            raise errors.UserError(
                f"{path!r} translates {made_for}, not {direction}: pass --direction={made_for} "
                f"or the {export.model_name(direction)} file."
            )
    run = export.load_file(path)

    def translate_images(images: np.ndarray) -> np.ndarray:
        return run(images)[export.FILE_OUTPUTS[0]]

    def translate_encoded(images_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        pngs = []
        for index, encoded in enumerate(tf.unstack(images_bytes)):
            image = images_lib.decode_rgb(encoded, index).numpy()
            translated = translate_images(image[np.newaxis])[0]
            pngs.append(tf.io.encode_png(translated).numpy())
        return {"images_bytes": tf.constant(pngs, tf.string)}

    config = info.get("config")
    return LoadedModel(
        kind=export.file_format(path),
        path=path,
        direction=direction,
        precision="float32",
        encoded=translate_encoded,
        images=translate_images,
        config=config_lib.Config.from_dict(config) if config else None,
        checkpoint=info.get("checkpoint"),
        step=info.get("step"),
    )


def _translate_video(source: str, target: str, loaded: LoadedModel, progress) -> None:
    """One video through `video.translate_video`, with a progress line per video."""
    name = os.path.basename(source)
    done = video.translate_video(
        source,
        target,
        loaded.images,
        batch_frames=video.batch_frames(loaded.precision),
        on_frames=lambda n, total: progress.frames(name, n, total),
    )
    rate = f" at {float(done.rate):.4g} fps" if done.rate else ""
    audio = f", {done.audio_streams} audio stream(s) copied" if done.audio_streams else ""
    progress.line(
        f"{name}: {done.frames} frames {done.width}x{done.height}{rate}, "
        f"{done.frames_per_second:.2f} frames/s ({done.codec} {done.pixel_format}{audio})"
    )


def _write_atomically(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _error_reason(error: BaseException) -> str:
    """One line from a (possibly multi-line, graph-annotated) TF error."""
    if isinstance(error, (video.VideoError, errors.UserError)):  # already one line
        return str(error)
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

    def __init__(self, total: int, verbose: bool, unit: str = "images"):
        self.total = total
        self.unit = unit
        self.verbose = verbose
        self.interactive = verbose and sys.stdout.isatty()
        self.every = max(1, total // 20)
        self.bar = keras.utils.Progbar(total, unit_name=unit[:-1]) if self.interactive else None

    def update(self, done: int) -> None:
        if self.bar is not None:
            self.bar.update(done)
        elif self.verbose and (done % self.every == 0 or done == self.total):
            print(f"translated {done}/{self.total} {self.unit}", flush=True)

    def message(self, text: str) -> None:
        if self.bar is not None:
            sys.stdout.write("\n")
        print(text, file=sys.stderr, flush=True)

    def frames(self, name: str, done: int, total: int | None) -> None:
        """Within a video: on a terminal, the frame count rewritten in place."""
        if self.interactive:
            of = f"/{total}" if total else ""
            sys.stdout.write(f"\r{name}: frame {done}{of}")
            sys.stdout.flush()

    def line(self, text: str) -> None:
        """A line on stdout (a finished video)."""
        if not self.verbose:
            return
        if self.interactive:
            sys.stdout.write("\r\x1b[K")  # over the frame counter
        print(text, flush=True)
