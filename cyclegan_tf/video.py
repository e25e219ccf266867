"""Video files: which inputs are videos, and translating one frame by frame with PyAV, streamed.

PyAV (`pip install "cyclegan-tf[video]"`) carries FFmpeg's libraries in its wheel; nothing here
imports it before a video is translated, so still images work without it. TensorFlow is not
imported either: a video is translated by any function `uint8 [N, H, W, 3] -> uint8 [N, H, W, 3]`
(a run directory's generator, an export, a .tflite/.onnx file; `translate.py` passes it in).

- Files: `VIDEO_EXTENSIONS` (mp4, mov, mkv, webm; case-insensitive) and animated GIFs (a GIF of one
  frame is an image: `images.py`); `is_video_file`.
- `translate_video`: frames are decoded, converted to RGB in the input's own colour matrix and
  range, translated in batches (`batch_frames`) at the video's size, and encoded; the whole video
  is never in memory (a batch, the codecs' own look-ahead and audio packets waiting for the video
  they belong beside). The output keeps the input's container (by extension), frame count, frame
  timestamps (so the frame rate), size, pixel aspect ratio and colour tags; every audio stream is
  copied packet for packet (not re-encoded); other streams (subtitles, data) are dropped.
- Codec: the input's, where this PyAV build encodes it and the container takes it (H.264 ->
  libx264, VP9, VP8, MPEG-4 part 2, FFV1, GIF), else the container's usual one (mp4/mov/mkv:
  H.264, else MPEG-4 part 2; webm: VP9, else VP8). Pixel format: the input's where the encoder
  takes it. Lossy encoders are set to a high quality (`_QUALITY`); FFV1 stays lossless.
- Odd sizes: H.264 stores 4:2:0 and 4:2:2 colour only for even widths (and heights, 4:2:0), so an
  odd-sized H.264 video is written in 4:4:4 (yuv444p), full colour at its exact size. Players
  that only decode H.264's common profile (web browsers among them) may not play it; VP9, VP8,
  MPEG-4 part 2 and FFV1 take odd sizes in 4:2:0 as they are.
- GIF: every frame gets its own 256-colour palette (median cut, no dithering, so a still area does
  not flicker); timestamps in GIF's 1/100 s.
"""

from __future__ import annotations

import dataclasses
import fractions
import importlib
import os
import time
from collections.abc import Callable

import numpy as np
import PIL.Image

from cyclegan_tf import errors

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm")
GIF_EXTENSION = ".gif"  # a video when animated, else an image
INSTALL = 'pip install "cyclegan-tf[video]"'
# Frames per generator call, by the precision the model computes in. Measured with the paper's
# generator at 256 x 256 on a 2-core Xeon with AMX-BF16 (oneDNN; under load, CPU time per frame):
# float32 1.25 s at 1 frame, 0.92 s at 2, 4 or 8 (batches fill the cores better); mixed_bfloat16
# 0.27 s at 1 frame but 0.31-0.37 s at 2-8 (larger bfloat16 activations fall out of the caches).
BATCH_FRAMES = 4
_BATCH_FRAMES_MIXED = 1


def batch_frames(precision: str) -> int:
    """Frames per generator call for a model computing in `precision` (see `BATCH_FRAMES`)."""
    return _BATCH_FRAMES_MIXED if precision.startswith("mixed") else BATCH_FRAMES


# FFmpeg's muxer for each output extension.
_MUXERS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".gif": "gif"}
# The encoder that writes a decoded input's codec again, for the codecs kept as they are.
_SAME_CODEC = {
    "h264": "libx264",
    "vp9": "libvpx-vp9",
    "vp8": "libvpx",
    "mpeg4": "mpeg4",
    "ffv1": "ffv1",
    "gif": "gif",
}
# Otherwise the container's usual encoders, in order of preference.
_CONTAINER_ENCODERS = {
    ".mp4": ("libx264", "mpeg4"),
    ".mov": ("libx264", "mpeg4"),
    ".mkv": ("libx264", "mpeg4"),
    ".webm": ("libvpx-vp9", "libvpx"),
    ".gif": ("gif",),
}
# High quality for the lossy encoders: the translation's fine texture is what a viewer looks at.
# x264 CRF 18 is the usual "visually lossless" setting; VP9 in constant-quality mode (b=0);
# VP8's CRF needs a bitrate ceiling; MPEG-4 part 2 has no CRF: its quantiser is capped instead.
_QUALITY = {
    "libx264": {"crf": "18"},
    "libvpx-vp9": {"crf": "24", "b": "0", "row-mt": "1", "cpu-used": "4"},
    "libvpx": {"crf": "8", "b": "20M"},
    "mpeg4": {"qmin": "1", "qmax": "4"},
}
# Pixel formats whose colour planes are half as wide (4:2:0, 4:2:2) or also half as high (4:2:0).
_HALF_WIDTH_CHROMA = ("yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "nv12", "nv21", "nv16")
_HALF_HEIGHT_CHROMA = ("yuv420p", "yuvj420p", "nv12", "nv21")


class MissingVideoExtraError(errors.UserError):
    """PyAV is not installed; the message names the pip command."""


class VideoError(OSError):
    """A video that cannot be read, decoded or written (damaged, no video stream, too long);
    `translate` skips it with one line, like an image it cannot decode."""


@dataclasses.dataclass(frozen=True)
class VideoSummary:
    """What `translate_video` wrote.

    Attributes:
      path: the output file.
      frames: frames translated (= frames written).
      width, height: frame size in pixels.
      rate: the average frame rate (frames per second), as the input's container states it.
      codec: the encoder used (e.g. "libx264").
      pixel_format: the encoded pixel format (e.g. "yuv420p").
      audio_streams: audio streams copied.
      seconds: wall time, decoding to closing the file.
    """

    path: str
    frames: int
    width: int
    height: int
    rate: fractions.Fraction | None
    codec: str
    pixel_format: str
    audio_streams: int
    seconds: float

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


# -- files -----------------------------------------------------------------------------------


def is_video_file(path: str) -> bool:
    """Whether `path` names a video: a `VIDEO_EXTENSIONS` file, or a GIF of several frames."""
    extension = os.path.splitext(path)[1].lower()
    if extension in VIDEO_EXTENSIONS:
        return True
    return extension == GIF_EXTENSION and is_animated_gif(path)


def is_animated_gif(path: str) -> bool:
    """Whether the GIF at `path` has more than one frame (False if it cannot be read: it is then
    tried, and reported, as an image)."""
    try:
        with PIL.Image.open(path) as image:
            return bool(getattr(image, "is_animated", False))
    except (OSError, ValueError, SyntaxError):  # PIL's errors for missing and broken files
        return False


def output_name(path: str) -> str:
    """The output file name of a video: the input's own name (same container)."""
    return os.path.basename(path)


def require():
    """Imports PyAV, or raises `MissingVideoExtraError` naming the install command."""
    try:
        return importlib.import_module("av")
    except ImportError as e:
        raise MissingVideoExtraError(
            f"Translating videos needs PyAV, which is not installed: {INSTALL}"
        ) from e


def available() -> bool:
    """Whether PyAV can be imported."""
    try:
        require()
    except MissingVideoExtraError:
        return False
    return True


# -- translate -------------------------------------------------------------------------------


def translate_video(
    path: str,
    output_path: str,
    translate_batch: Callable[[np.ndarray], np.ndarray],
    *,
    batch_frames: int = BATCH_FRAMES,
    on_frames: Callable[[int, int | None], None] | None = None,
    max_frames: int | None = None,
) -> VideoSummary:
    """Translates the video at `path` frame by frame into `output_path` (see the module docstring).

    The output is written to a temporary file beside `output_path` and renamed when complete, so
    a failure never leaves a partial video under the output's name.

    Args:
      path: an mp4/mov/mkv/webm file or an animated GIF.
      output_path: where to write; its extension picks the container (`_MUXERS`): normally the
        input's own.
      translate_batch: uint8 [N, H, W, 3] RGB frames -> uint8 [N, H, W, 3] translations (N <=
        `batch_frames`, H and W the video's).
      batch_frames: frames per `translate_batch` call.
      on_frames: called after every batch with (frames done, frames in the video or None when the
        container does not say).
      max_frames: refuse (VideoError) a video with more frames than this; None: no limit.

    Returns:
      A `VideoSummary`.

    Raises:
      MissingVideoExtraError: PyAV is not installed.
      VideoError: the input cannot be opened or decoded, has no video stream or too many frames,
        or the output cannot be encoded.
    """
    av = require()
    extension = os.path.splitext(output_path)[1].lower()
    if extension not in _MUXERS:
        raise errors.UserError(
            f"Cannot write a video named {output_path!r}: use one of {', '.join(sorted(_MUXERS))}."
        )
    temporary = f"{output_path}.tmp-{os.getpid()}"
    start = time.perf_counter()
    try:
        try:
            with av.open(path, "r") as source:
                summary = _translate_container(
                    av,
                    source,
                    temporary,
                    extension,
                    translate_batch,
                    batch_frames,
                    on_frames,
                    max_frames,
                )
        except av.FFmpegError as e:
            raise VideoError(f"{type(e).__name__}: {_ffmpeg_message(e)}") from e
        os.replace(temporary, output_path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return dataclasses.replace(summary, path=output_path, seconds=time.perf_counter() - start)


def _translate_container(
    av, source, temporary, extension, translate_batch, batch_frames, on_frames, max_frames
) -> VideoSummary:
    if not source.streams.video:
        raise VideoError("the file has no video stream")
    video_in = source.streams.video[0]
    video_in.thread_type = "AUTO"  # frame- and slice-threaded decoding
    # GIF holds no audio; other containers get the input's audio streams their muxer takes.
    audio_in = list(source.streams.audio) if extension != GIF_EXTENSION else []
    total = video_in.frames or None  # 0 when the container does not record it (mkv, webm)
    writer = None
    pending_audio = []  # audio before the first video frame: the header needs the video stream
    batch, stamps = [], []
    done = 0

    def flush() -> None:
        nonlocal done
        if not batch:
            return
        frames = np.stack(batch)
        translated = np.asarray(translate_batch(frames))
        if translated.shape != frames.shape or translated.dtype != np.uint8:
            raise ValueError(  # a bug in the translate function, not in the video
                f"translate_batch returned {translated.dtype} {translated.shape} for uint8 "
                f"{frames.shape}"
            )
        for image, (pts, duration) in zip(translated, stamps):
            writer.write(image, pts, duration)
        done += len(batch)
        batch.clear()
        stamps.clear()
        if on_frames is not None:
            on_frames(done, total)

    with av.open(temporary, "w", format=_MUXERS[extension]) as sink:
        for packet in source.demux(video_in, *audio_in):
            if packet.stream.type == "audio":
                if packet.dts is None:  # the demuxer's end-of-stream marker: nothing to copy
                    continue
                if writer is None:
                    pending_audio.append(packet)
                else:
                    writer.mux_audio(packet)
                continue
            for frame in packet.decode():
                if writer is None:
                    writer = _Writer(av, sink, video_in, audio_in, extension, frame)
                    for waiting in pending_audio:
                        writer.mux_audio(waiting)
                    pending_audio.clear()
                if max_frames is not None and done + len(batch) >= max_frames:
                    raise VideoError(f"the video has more than {max_frames} frames")
                batch.append(writer.rgb(frame))
                stamps.append((writer.stamp(frame, done + len(batch) - 1), frame.duration))
                if len(batch) == batch_frames:
                    flush()
        if writer is None:
            raise VideoError("no frame could be decoded")
        flush()
        writer.close()
    return VideoSummary(
        path=temporary,
        frames=done,
        width=writer.width,
        height=writer.height,
        rate=video_in.average_rate,
        codec=writer.encoder,
        pixel_format=writer.pixel_format,
        audio_streams=len(writer.audio),
        seconds=0.0,
    )


class _Writer:
    """The output's video encoder (made from the first decoded frame) and its audio copies."""

    def __init__(self, av, sink, video_in, audio_in, extension, first_frame):
        self.av = av
        self.sink = sink
        self.width, self.height = first_frame.width, first_frame.height
        context = video_in.codec_context
        self.encoder = _choose_encoder(av, sink, context.name, extension)
        self.pixel_format = _choose_pixel_format(
            av, self.encoder, first_frame.format.name, self.width, self.height
        )
        self.time_base = video_in.time_base
        rate = video_in.average_rate or video_in.guessed_rate or fractions.Fraction(25)
        # Frame durations in the input's time base, for frames without a timestamp.
        self.ticks = max(1, round(1 / (rate * self.time_base))) if self.time_base else 1
        # Colour: decoded with the input's matrix and range, encoded and tagged with the same.
        self.colorspace = first_frame.colorspace
        self.color_range = first_frame.color_range or av.video.reformatter.ColorRange.MPEG
        stream = sink.add_stream(self.encoder, rate=rate, options=_QUALITY.get(self.encoder, {}))
        stream.width, stream.height = self.width, self.height
        stream.pix_fmt = self.pixel_format
        stream.time_base = self.time_base
        stream.codec_context.time_base = self.time_base  # the input's timestamps, unrounded
        if self.encoder != "gif":
            stream.codec_context.colorspace = self.colorspace
            stream.codec_context.color_range = self.color_range
            stream.codec_context.color_primaries = first_frame.color_primaries
            stream.codec_context.color_trc = first_frame.color_trc
            # The pixels' shape: an anamorphic video (720x480 shown at 4:3 has 8:9 pixels) is
            # shown at its own width again. GIF has no such field.
            if video_in.sample_aspect_ratio:
                stream.codec_context.sample_aspect_ratio = video_in.sample_aspect_ratio
        self.stream = stream
        self.audio = {s: sink.add_stream_from_template(s) for s in audio_in}

    def rgb(self, frame) -> np.ndarray:
        """A decoded frame as uint8 [H, W, 3] RGB at the video's size."""
        return frame.to_ndarray(
            format="rgb24",
            width=self.width,  # a size change mid-stream is scaled back to the first frame's
            height=self.height,
            src_color_range=frame.color_range or None,
        )

    def stamp(self, frame, index: int) -> int:
        return frame.pts if frame.pts is not None else index * self.ticks

    def write(self, image: np.ndarray, pts: int, duration: int | None) -> None:
        if self.encoder == "gif":
            frame = _palette_frame(self.av, image)
        else:
            frame = self.av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame = frame.reformat(
                format=self.pixel_format,
                dst_colorspace=self.colorspace,
                dst_color_range=self.color_range,
            )
        frame.pts = pts
        frame.time_base = self.time_base
        for packet in self.stream.encode(frame):
            if self.encoder == "gif" and duration:
                # GIF's encoder gives no packet durations; the muxer needs the last frame's.
                packet.duration = duration
            self.sink.mux(packet)

    def mux_audio(self, packet) -> None:
        packet.stream = self.audio[packet.stream]  # timestamps are rescaled by mux
        self.sink.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode(None):  # the encoder's delayed frames
            self.sink.mux(packet)


def _choose_encoder(av, sink, codec: str, extension: str) -> str:
    takes = sink.supported_codecs
    candidates = []
    if codec in _SAME_CODEC:
        candidates.append(_SAME_CODEC[codec])
    candidates += _CONTAINER_ENCODERS[extension]
    for name in candidates:
        try:
            encoder = av.codec.Codec(name, "w")
        except av.codec.codec.UnknownCodecError:
            continue  # not in this PyAV build
        if encoder.name in takes or _codec_id_name(av, name) in takes:
            return name
    raise VideoError(
        f"this PyAV build has no encoder for {extension} files (tried {', '.join(candidates)})"
    )


def _codec_id_name(av, encoder: str) -> str:
    """The codec an encoder writes (libx264 -> h264), as `supported_codecs` names it."""
    return av.codec.Codec(encoder, "w").canonical_name


def _choose_pixel_format(av, encoder: str, decoded: str, width: int, height: int) -> str:
    if encoder == "gif":
        return "pal8"
    formats = [f.name for f in av.codec.Codec(encoder, "w").video_formats or ()]

    def fits(name: str) -> bool:
        # libx264 refuses subsampled colour at odd sizes (avcodec_open2 fails).
        odd = (width % 2 and name in _HALF_WIDTH_CHROMA) or (
            height % 2 and name in _HALF_HEIGHT_CHROMA
        )
        return name in formats and not (encoder == "libx264" and odd)

    for name in (decoded, "yuv420p", "yuv444p"):
        if fits(name):
            return name
    return formats[0]


def _palette_frame(av, image: np.ndarray):
    """A pal8 frame of `image` with its own 256-colour palette (GIF)."""
    quantized = PIL.Image.fromarray(image).quantize(256, dither=PIL.Image.Dither.NONE)
    indices = np.asarray(quantized, np.uint8)
    rgb = np.asarray(quantized.getpalette(), np.uint8).reshape(-1, 3)
    # PyAV takes the palette as rows of (alpha, red, green, blue) bytes (checked by the GIF
    # round trip in tests/test_video.py).
    palette = np.zeros((256, 4), np.uint8)
    palette[:, 0] = 255
    palette[: len(rgb), 1:] = rgb
    return av.VideoFrame.from_ndarray((indices, palette), format="pal8")


def _ffmpeg_message(error: Exception) -> str:
    text = getattr(error, "strerror", None) or str(error)
    return str(text).splitlines()[0][:300] if text else type(error).__name__
