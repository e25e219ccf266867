"""Translating image and video files: which files an input names, where each output goes, the loop.

This module owns the file side of translation (`Translator.translate_files`, `cyclegan-tf
translate`): which files an input names (`find_images`, by `images.IMAGE_EXTENSIONS` and
`video.VIDEO_EXTENSIONS`), where each output goes (`output_names`), writing each translation
atomically, progress, and skipping unreadable files. It translates images through an
encoded-image function ([N] encoded images -> {"images_bytes": [N] PNG files}, the SavedModel's
`serving_default` contract) and video frames through a uint8 batch function (`video.py` streams
them), and knows nothing of where the model comes from: opening models is `sources.py`'s (every
source provides both functions), translating tensors `inference.py`'s.

File naming: every input image `name.ext` is written as `<output>/name.png` (PNG is lossless and
keeps the translation exact); when several inputs share a base name (`cat.jpg`, `cat.bmp`) each of
them keeps its full name instead (`cat.jpg.png`, `cat.bmp.png`). A video keeps its name and
container (`<output>/clip.mp4`).
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

from cyclegan_tf import errors, video
from cyclegan_tf import images as images_lib

# A model as this module runs it: [N] encoded images -> {"images_bytes": [N] PNG files}.
EncodedFn = Callable[[tf.Tensor], dict[str, tf.Tensor]]
# And for video frames: uint8 [N, H, W, 3] -> uint8 [N, H, W, 3].
ImagesFn = Callable[[np.ndarray], np.ndarray]


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


def translate_files(
    run: EncodedFn,
    inputs: str,
    output_dir: str,
    *,
    direction: str,
    precision: str = "",
    images: ImagesFn | None = None,
    verbose: bool = True,
) -> TranslateSummary:
    """Translates image and video files with `run` (and `images` for video frames).

    Every image is translated at its own size and written as PNG (see the module docstring for
    names); every video frame by frame into a video of the same container
    (`video.translate_video`; needs PyAV, the `[video]` extra: without it each video is skipped
    with one line naming the install command, and images are still translated). A file that
    cannot be read or decoded is reported on stderr by name and skipped; the rest continue. The
    inputs and output names are checked before anything is translated.

    Args:
      run: [N] encoded images -> {"images_bytes": [N] PNG files} (`sources.Translator`'s).
      inputs: an image or video file, a folder (its files with `images.IMAGE_EXTENSIONS` or
        `video.VIDEO_EXTENSIONS`), or a glob pattern (matching files with those extensions;
        `**` recurses).
      output_dir: output folder, created if needed.
      direction: a2b or b2a, for the summary.
      precision: what the model computes in, for the summary and the frames per call.
      images: uint8 [N, H, W, 3] -> uint8 [N, H, W, 3], for video frames (None: videos are
        refused).
      verbose: print a progress bar (a line per few files when stdout is not a terminal) and a
        summary.

    Returns:
      A `TranslateSummary`; `failed` is empty when every file was translated.

    Raises:
      errors.UserError: no input files, or an output folder that would overwrite the inputs.
      video.MissingVideoExtraError: only videos to translate, and PyAV is not installed.
    """
    files = find_images(inputs)
    videos = {path for path in files if video.is_video_file(path)}
    if videos and images is None:
        raise ValueError("translate_files: video inputs need the `images` function")
    targets = output_names(files, output_dir, videos)
    no_video = None  # without PyAV: why each video is skipped; only videos: the error itself
    try:
        if videos:
            video.require()
    except video.MissingVideoExtraError as e:
        if len(videos) == len(files):
            raise
        no_video = e

    os.makedirs(output_dir, exist_ok=True)
    summary = TranslateSummary(direction, output_dir, precision)
    progress = _Progress(len(files), verbose, unit="files" if videos else "images")
    for i, (source, target) in enumerate(zip(files, targets)):
        try:
            if source in videos:
                if no_video is not None:
                    raise no_video
                _translate_video(source, target, images, precision, progress)
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
        line += f"{output_dir} ({precision})"
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


def _translate_video(source: str, target: str, images: ImagesFn, precision: str, progress) -> None:
    """One video through `video.translate_video`, with a progress line per video."""
    name = os.path.basename(source)
    done = video.translate_video(
        source,
        target,
        images,
        batch_frames=video.batch_frames(precision),
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
