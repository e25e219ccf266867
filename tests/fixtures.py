"""Helpers shared by test modules: a run directory as training leaves it, generated images, and a
small stand-in for the Inception graph of FID/KID."""

import io
import os
import subprocess
import sys

import numpy as np
import PIL.Image
import tensorflow as tf

from cyclegan_tf import checkpoints, config, metrics, rundir, trainer


def make_run(run_dir, step=3, **overrides):
    """A run directory as training leaves it: config.json + a checkpoint of a tiny model.

    `overrides` are Config fields on top of the tiny preset (e.g. precision="mixed_bfloat16").
    The precision is float32 unless given: tests compare the model's numbers with exports and
    translations, which must not depend on what `auto` picks on the host.
    """
    cfg = config.preset("tiny", **{"precision": "float32", **overrides})
    model = trainer.CycleGAN(cfg, steps_per_epoch=4)
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, rundir.CONFIG_FILE), "w") as f:
        f.write(cfg.to_json())
    checkpoints.Checkpointer(model.checkpoint_objects(), str(run_dir)).save(step)
    return model


def tree_state(*roots):
    """Every file and directory under `roots` with its size and modification time (sorted)."""
    state = []
    for root in roots:
        for folder, dirs, files in os.walk(root):
            for name in sorted(dirs + files):
                path = os.path.join(folder, name)
                info = os.lstat(path)
                state.append((path, info.st_size, info.st_mtime_ns))
    return sorted(state)


def build_shared_run(root):
    """The session's tiny run and its exports (conftest's `shared_run`), built once.

    `root/run`: `make_run` (tiny preset, float32, a checkpoint at step 3); `root/export`, all
    version 1: SavedModels of both directions and a2b's TFLite and ONNX files (b2a's files would
    double the slowest part, the conversions, and test nothing more).

    Returns:
      {"model": the trainer.CycleGAN whose weights the run holds, "run_dir", "export_dir",
      "saved_models": {direction: version directory}, "files": {"tflite"|"onnx": a2b file}}.
    """
    from cyclegan_tf import exporting

    run_dir, export_dir = os.path.join(str(root), "run"), os.path.join(str(root), "export")
    model = make_run(run_dir)
    saved_models = exporting.export_run(run_dir, export_dir)[exporting.SAVED_MODEL]
    files = exporting.export_run(
        run_dir,
        export_dir,
        directions=("a2b",),
        formats=(exporting.TFLITE, exporting.ONNX),
        version=1,  # free for these formats: one version number names the whole export
    )
    return {
        "model": model,
        "run_dir": run_dir,
        "export_dir": export_dir,
        "saved_models": saved_models,
        "files": {fmt: paths["a2b"] for fmt, paths in files.items()},
    }


def random_image(height, width, seed, channels=3):
    """uint8 [height, width, channels] noise."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, channels), np.uint8)


def encode(image, fmt):
    """The bytes of `image` (uint8 [H, W, 1|3|4]) as a `fmt` file (PNG, JPEG, BMP, GIF)."""
    buffer = io.BytesIO()
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[image.shape[-1]]
    PIL.Image.fromarray(image.squeeze(-1) if mode == "L" else image, mode).save(buffer, fmt)
    return buffer.getvalue()


# -- a stand-in for TTUR's Inception graph -------------------------------------------------------

STANDIN_SIZE = 16  # the stand-in resizes to 16 x 16 where the real graph resizes to 299 x 299


def _const(graph_def, name, value):
    node = graph_def.node.add()
    node.name, node.op = name, "Const"
    node.attr["dtype"].type = tf.float32.as_datatype_enum
    node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(np.asarray(value, np.float32)))


def standin_inception_graph_def():
    """A small GraphDef shaped like TTUR's 2015 Inception graph.

    Same tensor names (`Cast` [H, W, 3] -> `ExpandDims` -> ... -> `pool_3` [N, 1, 1, 2048]), a TF1
    bilinear resize (no half-pixel centres), an old `Concat`, the fixed-batch `pool_3/_reshape`,
    `_output_shapes` with batch 1 on every node, and a `BatchNormWithGlobalNormalization` node with
    producer version 8: TF 2.21 refuses to create that op (removed at GraphDef version 9), so its
    NodeDef is written by hand, as the real graph has 14 of them.
    """
    rng = np.random.default_rng(0)
    graph = tf.compat.v1.Graph()
    with graph.as_default():
        image = tf.compat.v1.placeholder(tf.float32, [None, None, 3], name="Cast")
        batch = tf.expand_dims(image, 0, name="ExpandDims")
        resized = tf.raw_ops.ResizeBilinear(
            images=batch,
            size=tf.constant([STANDIN_SIZE, STANDIN_SIZE]),
            align_corners=False,
            half_pixel_centers=False,
            name="ResizeBilinear",
        )
        scaled = tf.multiply(tf.subtract(resized, 128.0, name="Sub"), 1 / 128, name="Mul")
        kernel = rng.normal(size=(3, 3, 3, 8)).astype(np.float32)
        conv = tf.nn.conv2d(scaled, kernel, 1, "VALID", name="conv")
        stub = tf.identity(conv, name="conv/batchnorm")  # becomes the BN node below
        hidden = tf.nn.relu(stub, name="conv_1")
        crop = scaled[:, 1:-1, 1:-1, :]
        joined = tf.raw_ops.Concat(concat_dim=tf.constant(3), values=[hidden, crop], name="join")
        kernel = rng.normal(size=(1, 1, 11, metrics.FEATURE_DIM)).astype(np.float32)
        wide = tf.nn.conv2d(joined, kernel, 1, "VALID", name="conv_2")
        side = STANDIN_SIZE - 2
        pool = tf.nn.avg_pool2d(wide, side, 1, "VALID", name="pool_3")
        tf.reshape(pool, [1, metrics.FEATURE_DIM], name="pool_3/_reshape")
    graph_def = graph.as_graph_def(add_shapes=True)
    for name, value in [
        ("mean", rng.normal(size=8)),
        ("variance", rng.uniform(0.5, 2.0, 8)),
        ("beta", rng.normal(size=8)),
        ("gamma", rng.uniform(0.5, 2.0, 8)),
    ]:
        _const(graph_def, f"conv/batchnorm/{name}", value)
    (node,) = [n for n in graph_def.node if n.name == "conv/batchnorm"]
    node.op = "BatchNormWithGlobalNormalization"
    node.input.extend([f"conv/batchnorm/{k}" for k in ("mean", "variance", "beta", "gamma")])
    node.attr["variance_epsilon"].f = 1e-3
    node.attr["scale_after_normalization"].b = True
    graph_def.versions.producer = 8
    return graph_def


def write_standin_inception_graph(folder):
    """Writes the stand-in as `<folder>/classify_image_graph_def.pb`; returns its path (str)."""
    path = os.path.join(str(folder), metrics.GRAPH_FILE)
    with open(path, "wb") as f:
        f.write(standin_inception_graph_def().SerializeToString())
    return path


def run_cli(*args, cwd=None, timeout=600):
    """`cyclegan-tf ARGS` in a subprocess, as a user runs it.

    No TF_CPP_MIN_LOG_LEVEL of our own (conftest sets one for in-process tests), so the CLI's own
    filtering of TensorFlow's start-up output is what the tests see.
    """
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run(
        [sys.executable, "-m", "cyclegan_tf.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
    )


# -- tolerances from the arithmetic ---------------------------------------------------------------

# float32's unit roundoff: one rounding changes a value by at most this fraction of it.
FLOAT32_UNIT_ROUNDOFF = 2.0**-24


def conv_abs_sums(x, kernel, dy):
    """For a stride-1 VALID `conv2d(x, kernel)` with output gradient `dy`: per element of the
    output, of the input gradient and of the kernel gradient, the sum of the absolute values of
    the products that element adds up (float64). With every operand made non-negative, the same
    convolution and its gradients compute exactly those sums."""
    x, kernel, dy = (tf.abs(tf.cast(t, tf.float64)) for t in (x, kernel, dy))
    with tf.GradientTape() as tape:
        tape.watch([x, kernel])
        y = tf.nn.conv2d(x, kernel, 1, "VALID")
        total = tf.reduce_sum(y * dy)
    dx, dkernel = tape.gradient(total, [x, kernel])
    return y.numpy(), dx.numpy(), dkernel.numpy()


def assert_within_float32_rounding(actual, expected, abs_sum, terms):
    """Asserts two float32 computations of the same sums agree to what rounding allows.

    A float32 sum of `terms` products, added in any order (Eigen, oneDNN and the forward
    reformulation each choose theirs), is within terms * u * sum(|products|) of the exact value
    (u = 2^-24, the standard bound gamma_n ~ n u); two such computations are within twice that of
    each other. `abs_sum` is sum(|products|) per element (e.g. `conv_abs_sums`), `terms` the
    length of the longest chain of roundings behind an element. The bound depends on the inputs,
    not on the machine: elements that cancel to near zero get the absolute slack they need, large
    sums a relative one.
    """
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    bound = 2 * terms * FLOAT32_UNIT_ROUNDOFF * np.asarray(abs_sum, np.float64)
    excess = np.abs(actual - expected) - bound
    worst = np.unravel_index(np.argmax(excess), excess.shape) if excess.size else ()
    assert excess.size == 0 or excess[worst] <= 0, (
        f"{int((excess > 0).sum())} of {excess.size} values differ by more than float32 rounding "
        f"allows; worst at {worst}: {actual[worst]} vs {expected[worst]}, bound {bound[worst]:.3g}"
    )


# -- videos made with PyAV (the [video] extra) -------------------------------------------------


def make_video(
    path, width, height, frames=8, rate=12, codec="libx264", pix_fmt="yuv420p", audio="aac", seed=0
):
    """Writes a video of smooth random frames (blurred noise: lossy codecs keep it well) and,
    unless `audio` is None, a mono 16 kHz sine track encoded with `audio`; returns the frames
    (uint8 [frames, height, width, 3]) as they were given to the encoder."""
    import av

    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (frames, height // 4 + 2, width // 4 + 2, 3)).astype(np.uint8)
    images = np.stack(
        [
            np.asarray(PIL.Image.fromarray(c).resize((width, height), PIL.Image.BICUBIC))
            for c in coarse
        ]
    )
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        sound = None
        if audio:
            sound = out.add_stream(audio, rate=16000)
            sound.layout = "mono"
        for i, image in enumerate(images):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format=pix_fmt)
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        if sound is not None:
            samples = int(16000 * frames / rate)
            wave = 0.3 * np.sin(2 * np.pi * 440 * np.arange(samples) / 16000)
            fmt = sound.codec_context.codec.audio_formats[0].name
            chunk = sound.codec_context.frame_size or 1024
            for start in range(0, samples, chunk):
                part = wave[start : start + chunk][np.newaxis]
                part = (part * 32767).astype(np.int16) if fmt.startswith("s16") else part
                piece = av.AudioFrame.from_ndarray(
                    part.astype(part.dtype if fmt.startswith("s16") else np.float32),
                    format=fmt,
                    layout="mono",
                )
                piece.sample_rate, piece.pts = 16000, start
                for packet in sound.encode(piece):
                    out.mux(packet)
            for packet in sound.encode(None):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return images


def make_gif(path, width, height, durations=(80, 80, 120, 40), seed=0):
    """An animated GIF (Pillow) of len(durations) frames of at most 64 colours; returns them."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 4, (len(durations), height // 5 + 1, width // 5 + 1, 3)) * 85
    images = np.kron(coarse.astype(np.uint8), np.ones((1, 5, 5, 1), np.uint8))[:, :height, :width]
    frames = [PIL.Image.fromarray(image) for image in images]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=list(durations), loop=0)
    return images
