"""The demo page: a Gradio app over a model's translators (`cyclegan-tf demo`).

`build_app` makes the page from plain functions, one per direction, `uint8 [N, H, W, 3] -> uint8
[N, H, W, 3]`: upload an image (or a short video, with the `[video]` extra's PyAV), pick the
direction, see the translation beside the input and download it (images as lossless PNG). Its
API endpoint `/translate` takes `(image, direction)` and returns the translated image, so
`gradio_client` can call it (`Client(url).predict(handle_file(path), "a2b",
api_name="/translate")`); `/translate_video` does the same for a video file. `serve` opens what
`--model` names (`_load`, the one place this module opens models), builds the page and serves it.

Gradio (`pip install "cyclegan-tf[demo]"`) is imported only by `require`, `build_app` and `serve`;
this module imports neither Gradio nor TensorFlow at import time.
"""

from __future__ import annotations

import errno
import importlib
import os
import socket
import tempfile
import threading
from collections.abc import Callable, Sequence

import numpy as np

from cyclegan_tf import errors, video

INSTALL = 'pip install "cyclegan-tf[demo]"'
API_NAME = "translate"
VIDEO_API_NAME = "translate_video"
DEFAULT_HOST = "127.0.0.1"  # this machine only; --host=0.0.0.0 shows the page to the network
DEFAULT_PORT = 7860  # Gradio's own default
# A "short video": 30 s at 30 fps. At 256 px a CPU translates a few frames/s (README, Video), so
# this is minutes of work already; longer videos are for `cyclegan-tf translate`.
MAX_VIDEO_FRAMES = 900
# CSS pixels: the height of the image boxes; larger images are scaled down to fit, smaller ones
# are shown at their own size (Gradio does not enlarge them).
IMAGE_HEIGHT = 320
# The input box keeps a 40 px bar of upload buttons below its image that the output box has not,
# so Gradio drew the output larger and ~20 px lower. Both pictures at the top of their boxes,
# below the labels, with the output's box as short as the input's, are drawn at the same place
# and size (tests/test_demo.py measures it). Gradio 6 takes CSS at launch (`serve` passes it;
# `build_app(...).launch(css=CSS)` yourself).
CSS = (
    "#image_in img, #image_out img "
    "{ object-position: 50% 0; padding-top: 36px; box-sizing: border-box; } "
    "#image_out img { padding-bottom: 40px; }"
)
DIRECTION_LABELS = {"a2b": "A → B (g_ab)", "b2a": "B → A (g_ba)"}

TranslateFn = Callable[[np.ndarray], np.ndarray]


class MissingDemoExtraError(errors.UserError):
    """Gradio is not installed; the message names the pip command."""


class PortInUseError(errors.UserError):
    """The port cannot be listened on (in use, or not allowed)."""


def require():
    """Imports Gradio, or raises `MissingDemoExtraError` naming the install command."""
    # No usage statistics sent to Gradio's servers (and no network wait where there is none).
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        return importlib.import_module("gradio")
    except ImportError as e:
        raise MissingDemoExtraError(
            f"The demo needs gradio, which is not installed: {INSTALL}"
        ) from e


def check_port(host: str, port: int) -> None:
    """Raises `PortInUseError` unless `host:port` can be listened on now.

    Checked before the model is loaded, so a busy port costs a second, not a model load.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise PortInUseError(f"--host={host!r} is not an address of this machine ({e}).") from e
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As uvicorn binds: SO_REUSEADDR, so a port in TIME_WAIT after a stopped demo is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as e:
            busy = e.errno == errno.EADDRINUSE
            why = "is in use" if busy else f"cannot be used ({e.strerror})"
            raise PortInUseError(
                f"Port {port} on {host} {why}: pass another --port (or stop what listens there)."
            ) from e


# -- the page ---------------------------------------------------------------------------------


def build_app(translators: dict[str, TranslateFn], info: str, *, title: str = "cyclegan_tf"):
    """The Gradio page over `translators`.

    Args:
      translators: direction ("a2b"/"b2a") -> uint8 [N, H, W, 3] -> uint8 [N, H, W, 3] (same-size
        batches), in the order the direction choice lists them (the first is preselected). A
        function with a `precision` attribute (a `sources.Translator`) gets video frames in
        `video.batch_frames(precision)` per call, as `translate` gives them.
      info: Markdown shown under the title: which model, checkpoint/step and precision.
      title: the page title.

    Returns:
      A `gradio.Blocks`, not launched (`serve`, or `.launch(css=CSS)` yourself).
    """
    gr = require()
    if not translators:
        raise ValueError("build_app needs at least one direction")
    directions = list(translators)
    lock = threading.Lock()  # Gradio calls handlers from worker threads; LiteRT is not reentrant
    outputs = tempfile.mkdtemp(prefix="cyclegan_tf_demo_")

    def translate_image(image: np.ndarray | None, direction: str) -> np.ndarray:
        """The `/translate` endpoint: an RGB image (any size) and a direction -> the translation."""
        fn = _translator(translators, direction, gr)
        if image is None:
            raise gr.Error("Upload an image first.")
        image = _as_rgb(np.asarray(image))
        with lock:
            return fn(image[np.newaxis])[0]

    def translate_video(path: str | None, direction: str) -> str:
        """The `/translate_video` endpoint: a video file and a direction -> the translated file."""
        fn = _translator(translators, direction, gr)
        if not path:
            raise gr.Error("Upload a video first.")
        if not video.available():
            raise gr.Error(
                f"Translating videos needs PyAV, which is not installed: {video.INSTALL}"
            )
        stem, extension = os.path.splitext(os.path.basename(path))
        target = tempfile.mkdtemp(dir=outputs)
        target = os.path.join(target, f"{stem}_{direction}{extension.lower()}")

        def locked(frames: np.ndarray) -> np.ndarray:
            with lock:
                return fn(frames)

        # Frames per call as `translate` takes them for this precision (one in bfloat16): the
        # same frames/s, and the same file as `translate` writes (batching moves a bfloat16
        # result by a level here and there, and the encoder turns that into other decisions).
        frames_per_call = video.batch_frames(getattr(fn, "precision", None) or "")
        try:
            video.translate_video(
                path,
                target,
                locked,
                batch_frames=frames_per_call,
                max_frames=MAX_VIDEO_FRAMES,
            )
        except (video.VideoError, errors.UserError) as e:
            raise gr.Error(f"Could not translate {os.path.basename(path)}: {e}") from e
        return target

    with gr.Blocks(title=title, analytics_enabled=False) as app:
        gr.Markdown(f"# {title}: CycleGAN translation\n\n{info}")
        direction = gr.Radio(
            choices=[(DIRECTION_LABELS[d], d) for d in directions],
            value=directions[0],
            label="Direction",
            elem_id="direction",
        )
        with gr.Tab("Image"):
            with gr.Row():
                image_in = gr.Image(
                    type="numpy",
                    image_mode="RGB",
                    label="Input",
                    sources=["upload", "clipboard"],
                    height=IMAGE_HEIGHT,
                    elem_id="image_in",
                )
                image_out = gr.Image(
                    type="numpy",
                    format="png",
                    label="Translation",
                    interactive=False,
                    buttons=["download", "fullscreen"],
                    height=IMAGE_HEIGHT,
                    elem_id="image_out",
                )
            image_button = gr.Button("Translate", variant="primary", elem_id="translate_image")
        with gr.Tab("Video"):
            gr.Markdown(
                f"A short video (at most {MAX_VIDEO_FRAMES} frames): mp4, mov, mkv, webm. It is "
                "written in the same container and codec; browsers play H.264 (mp4) and VP9/VP8 "
                "(webm), the others can be downloaded."
            )
            with gr.Row():
                video_in = gr.Video(label="Input video", sources=["upload"], elem_id="video_in")
                video_out = gr.Video(
                    label="Translation",
                    interactive=False,
                    buttons=["download"],
                    elem_id="video_out",
                )
            video_button = gr.Button(
                "Translate video", variant="primary", elem_id="translate_video"
            )
        image_button.click(translate_image, [image_in, direction], image_out, api_name=API_NAME)
        video_button.click(
            translate_video, [video_in, direction], video_out, api_name=VIDEO_API_NAME
        )
    return app


def _translator(translators: dict[str, TranslateFn], direction: str, gr) -> TranslateFn:
    if direction not in translators:
        served = " or ".join(translators)
        raise gr.Error(f"This demo serves {served}, not direction={direction!r}.")
    return translators[direction]


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] from what Gradio passes (RGB already, unless an API caller sent grey or
    RGBA): grey replicated, alpha dropped, as `images.decode_rgb` does for files."""
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        image = image[:, :, np.newaxis]
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return np.ascontiguousarray(image[:, :, :3])


# -- serving a model ----------------------------------------------------------------------------


def serve(
    model: str,
    *,
    directions: Sequence[str] | None = None,
    checkpoint: str | None = None,
    precision: str | None = None,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    block: bool = True,
):
    """Opens `model`, builds the page and serves it on `host:port`.

    Args:
      model: what `cyclegan-tf translate --model` takes (a run directory, an export, a
        .tflite/.onnx file).
      directions: the directions to serve; None: every direction the model has.
      checkpoint, precision: run directories only (as for `translate`).
      host, port: where to listen (127.0.0.1: this machine only).
      block: serve until interrupted (the CLI); False: return once the server runs (tests).

    Returns:
      The launched `gradio.Blocks` (call `.close()` to stop it when `block` is False).

    Raises:
      MissingDemoExtraError: Gradio is not installed.
      PortInUseError: the port cannot be listened on.
      errors.UserError: an unusable model (as `translate` reports it).
    """
    require()
    check_port(host, port)
    translators, info = _load(model, directions, checkpoint, precision)
    app = build_app(translators, info)
    print(f"Serving the demo of {model} on http://{_url_host(host)}:{port} (Ctrl-C stops it)")
    app.launch(
        server_name=host,
        server_port=port,
        prevent_thread_lock=not block,
        share=False,
        show_error=True,
        quiet=True,
        footer_links=["api"],
        css=CSS,
    )
    return app


def _load(
    model: str, directions: Sequence[str] | None, checkpoint: str | None, precision: str | None
) -> tuple[dict[str, TranslateFn], str]:
    """The translators of `model` and the page's description of them.

    The demo opens models through `sources.load`, as translate, evaluate and the API do.
    """
    from cyclegan_tf import sources  # imports TensorFlow

    wanted = list(directions) if directions else ["a2b", "b2a"]
    loaded, refusals = {}, []
    for direction in wanted:
        try:
            loaded[direction] = sources.load(
                model, direction, checkpoint=checkpoint, precision=precision
            )
        except errors.UserError as e:
            if directions:  # asked for explicitly: it must load
                raise
            refusals.append(e)  # e.g. an a2b-only export: serve the direction it has
    if not loaded:
        raise refusals[0]
    translators = dict(loaded)  # a sources.Translator is a uint8 batch function
    return translators, describe(model, loaded)


def describe(model: str, loaded: dict) -> str:
    """Markdown lines: the model, then per direction its checkpoint/step and precision.

    Args:
      model: the path the user named.
      loaded: direction -> an object with `kind`, `source`, `checkpoint`, `step` and
        `precision` attributes (`sources.Translator`).
    """
    kinds = {
        "run": "run directory",
        "saved_model": "SavedModel export",
        "tflite": "TFLite file",
        "onnx": "ONNX file",
    }
    first = next(iter(loaded.values()))
    lines = [f"**Model:** `{model}` ({kinds.get(first.kind, first.kind)})"]
    for direction, item in loaded.items():
        checkpoint = os.path.basename(item.checkpoint) if item.checkpoint else "unknown"
        step = f", step {item.step}" if item.step is not None else ""
        source = f" from `{item.source}`" if item.source != model else ""
        lines.append(
            f"- **{direction}**: checkpoint `{checkpoint}`{step}, precision "
            f"`{item.precision or 'unknown'}`{source}"
        )
    return "\n".join(lines)


def _url_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "") else host
