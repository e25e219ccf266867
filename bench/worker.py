"""One measurement per process: the benchmark's workers (run by `bench/run.py`, one at a time).

Each subcommand prints exactly one JSON line prefixed with `RESULT ` on stdout. Running every
configuration in a fresh process makes "time from process start to the first finished step" real
(imports, model building, tracing, graph optimisation, kernel set-up all included) and keeps one
configuration's threads, caches and memory from leaking into the next.

Subcommands:
  step        training iterations of the paper CycleGAN (resnet_9blocks, basic PatchGAN, batch 1);
              `--profile DIR` adds op self times per op type and per layer (tf.profiler)
  peak        the conv peak of this CPU in TF, float32 and bfloat16 (GFLOP/s)
  flops       FLOPs of one step: the analytic count and TF's profiler count of the traced graph
  pipeline    the tf.data training pipeline alone (JPEG decode, resize 286 bicubic, crop, flip)
  startup     opening a folder dataset of N small PNGs up to its first batch, with the run
              directory's file_checks.json as training keeps it (run twice: first, second start)
  savedmodel  SavedModel inference of one generator at 256 px (export, load, translate)
  formats     one float32 generator as SavedModel, TFLite and ONNX, each in its runtime at 256 px
  torch_gen   the PyTorch yardstick's generator forward (eager, no_grad), for the inference ratio

Usage: python bench/worker.py SUBCOMMAND [options]   (see `--help` of each subcommand)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import sys
import time

_START = time.time()

_HERE = os.path.dirname(os.path.abspath(__file__))
# The PyTorch yardstick lives outside the project (shared/anchors beside the repo); it is run and
# imported from there, never copied.
TORCH_ANCHOR = os.environ.get(
    "CYCLEGAN_BENCH_TORCH_ANCHOR",
    os.path.normpath(
        os.path.join(_HERE, "..", "..", "shared", "anchors", "torch_cyclegan_step.py")
    ),
)


def cpu_busy_seconds() -> float:
    """CPU seconds all processes have spent busy since boot (/proc/stat, all cores)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class ForeignLoad:
    """Measures the cores' worth of CPU that OTHER processes used over an interval: the machine's
    busy time (/proc/stat) minus this process's own CPU time (all its threads)."""

    def __init__(self):
        self.wall, self.busy, self.own = (
            time.perf_counter(),
            cpu_busy_seconds(),
            time.process_time(),
        )

    def cores(self) -> float:
        wall = time.perf_counter() - self.wall
        foreign = (cpu_busy_seconds() - self.busy) - (time.process_time() - self.own)
        return max(0.0, foreign / wall)


# Steps during which other processes used more CPU than this are left out of the median.
QUIET_CORES = 0.25


def _emit(result: dict) -> None:
    result["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result), flush=True)


def _configure_tf(args) -> None:
    """Threading and Grappler options; must run before TF executes anything."""
    import tensorflow as tf

    if args.intra:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra)
    if args.inter:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter)
    if args.grappler:
        tf.config.optimizer.set_experimental_options(json.loads(args.grappler))


# ------------------------------------------------------------------------------------------------
# FLOPs


def conv_flops(model) -> list[tuple[str, int]]:
    """Forward FLOPs (2 x multiply-adds) of each conv layer of a built Keras model, in order.

    Conv2D: 2 * kh * kw * c_in * c_out * h_out * w_out. Conv2DTranspose (stride s): every input
    pixel meets the whole kernel once, 2 * kh * kw * c_in * c_out * h_in * w_in.
    """
    import keras

    flops = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2DTranspose):
            _, h, w, _ = layer.input.shape
        elif isinstance(layer, keras.layers.Conv2D):
            _, h, w, _ = layer.output.shape
        else:
            continue
        kh, kw, c1, c2 = layer.kernel.shape
        flops.append((layer.name, 2 * kh * kw * c1 * c2 * h * w))
    return flops


def step_flops(size: int) -> dict:
    """The analytic FLOP count of one paper training step at `size` px (convolutions only).

    With F_g, F_d the forward conv FLOPs of a generator / discriminator and f_g, f_d those of
    their first conv: a backward pass costs F for the input gradients plus F for the weight
    gradients, except that no gradient flows into a real image (the first conv of a network fed a
    real image skips its input gradient) and discriminator weights get no gradient in the
    generator update. One step is then
      generator update: 6 G forwards (fake_b, rec_a, fake_a, rec_b, idt_b, idt_a) + their
        backward: 6 F_g (forward) + 6 F_g (weights) + 6 F_g - 4 f_g (inputs: 4 of the 6 calls
        see a real image); 2 D forwards on fakes + input gradients: 2 F_d + 2 F_d;
      discriminator update: 4 D forwards (real and pooled fake, two Ds) + weights 4 F_d + inputs
        4 (F_d - f_d),
    = 18 F_g - 4 f_g + 16 F_d - 4 f_d ("executed"). TF's graph holds every gradient op
    (18 F_g + 18 F_d, "graph"); Grappler prunes the ones nobody consumes.
    Normalization, activations, padding and Adam add < 0.5 % and are not counted.
    """
    from cyclegan_tf import discriminators, generators

    g = conv_flops(generators.build_generator("resnet_9blocks", input_shape=(size, size, 3)))
    d = conv_flops(discriminators.build_discriminator("basic", input_shape=(size, size, 3)))
    fg, fd = sum(v for _, v in g), sum(v for _, v in d)
    return {
        "size": size,
        "gen_forward": fg,
        "disc_forward": fd,
        "graph": 18 * fg + 18 * fd,
        "executed": 18 * fg - 4 * g[0][1] + 16 * fd - 4 * d[0][1],
    }


def profiler_flops(concrete_function) -> dict[str, float]:
    """FLOPs per op type of a traced graph, from TF's registered op statistics (tf.profiler)."""
    from tensorflow.python.framework import ops

    graph = concrete_function.graph
    totals: dict[str, float] = {}
    for op in graph.get_operations():
        try:
            value = ops.get_stats_for_node_def(graph, op.node_def, "flops").value
        except (ValueError, TypeError):
            value = None
        if value:
            totals[op.type] = totals.get(op.type, 0) + int(value)
    return totals


# ------------------------------------------------------------------------------------------------
# The training step


def _config(args):
    from cyclegan_tf import config

    return config.preset(
        "paper",
        crop_size=args.size,
        load_size=args.size + args.size // 8,
        precision=args.precision,
        jit_compile=bool(args.xla),
    )


def _model(args):
    from cyclegan_tf import trainer

    return trainer.CycleGAN(_config(args), steps_per_epoch=1000)


def _inputs(size: int):
    import tensorflow as tf

    shape = [1, size, size, 3]
    real_a = tf.random.stateless_uniform(shape, seed=[1, 2], minval=-1.0, maxval=1.0)
    real_b = tf.random.stateless_uniform(shape, seed=[3, 4], minval=-1.0, maxval=1.0)
    return real_a, real_b


def cmd_step(args) -> None:
    t0 = args.t0 or _START
    import keras  # noqa: F401
    import tensorflow as tf

    from cyclegan_tf import training

    # As `cyclegan-tf train` runs (Grappler off); --grappler then overrides for the variants.
    training.configure_tensorflow(_config(args).train)
    _configure_tf(args)
    t_import = time.time()
    model = _model(args)
    real_a, real_b = _inputs(args.size)
    t_build = time.time()
    model.train_step.get_concrete_function(real_a, real_b)
    t_trace = time.time()
    float(model.train_step(real_a, real_b)["g/total"])
    t_first = time.time()
    times, loads = [], []
    for _ in range(args.steps):
        t, load = time.perf_counter(), ForeignLoad()
        float(model.train_step(real_a, real_b)["g/total"])
        times.append(time.perf_counter() - t)
        loads.append(load.cores())
    quiet = [t for t, load in zip(times, loads) if load < QUIET_CORES] or times
    result = {
        "import_s": t_import - t0,
        "build_s": t_build - t_import,
        "trace_s": t_trace - t_build,
        "first_call_s": t_first - t_trace,
        "first_step_s": t_first - t0,
        "step_times": times,
        "step_loads": loads,
        # The median over steps during which other processes stayed under QUIET_CORES.
        "step_s": statistics.median(quiet) if quiet else None,
    }
    if args.profile:
        result["op_profile"] = _op_profile(model, real_a, real_b, args.profile)
    _emit(result)
    del tf


def _op_profile(model, real_a, real_b, logdir: str, steps: int = 2) -> dict:
    """Self time (s/step) of `steps` steps from a tf.profiler trace (XSpace): per op type, and per
    op type and layer (`network:layer`, e.g. `G:out_conv`, the layer's three generator calls and
    their gradients together; the two generators and the two discriminators summed)."""
    import glob

    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    tf.profiler.experimental.start(logdir)
    for _ in range(steps):
        float(model.train_step(real_a, real_b)["g/total"])
    tf.profiler.experimental.stop()
    path = max(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True))
    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    # Kernels appear on the executor threads' lines as "node_name:OpType" events; node names hold
    # the network's and the layer's scopes, e.g. ".../gradients/g_ba_1/out_conv_1/...".
    op_event = re.compile(r"^([^:]+):([A-Za-z0-9_]+)$")
    layer_scope = re.compile(r"\b(g_ab|g_ba|d_a|d_b)_\d+/([A-Za-z0-9_]+?)_\d+/")
    totals: dict[str, float] = {}
    by_layer: dict[str, float] = {}
    for plane in space.planes:
        names = {k: v.name for k, v in plane.event_metadata.items()}
        for line in plane.lines:
            for event in line.events:
                match = op_event.match(names.get(event.metadata_id, ""))
                if match:
                    seconds = event.duration_ps * 1e-12 / steps
                    totals[match[2]] = totals.get(match[2], 0.0) + seconds
                    scope = layer_scope.search(match[1])
                    layer = f"{scope[1][0].upper()}:{scope[2]}" if scope else "other"
                    key = f"{layer} {match[2]}"
                    by_layer[key] = by_layer.get(key, 0.0) + seconds
    return {
        "by_type": dict(sorted(totals.items(), key=lambda kv: -kv[1])),
        "by_layer": dict(sorted(by_layer.items(), key=lambda kv: -kv[1])),
    }


# ------------------------------------------------------------------------------------------------
# Conv peak


def cmd_peak(args) -> None:
    """Median GFLOP/s of a few large convs (the network's own shapes, batch 1 and 4)."""
    import tensorflow as tf

    _configure_tf(args)
    shapes = [  # (input NHWC, kernel side, output channels)
        ((1, 66, 66, 256), 3, 256),  # the ResNet block conv at 256 px
        ((4, 66, 66, 256), 3, 256),
        ((1, 130, 130, 128), 3, 128),
        ((1, 34, 34, 512), 3, 512),
    ]
    result = {}
    for dtype in (tf.float32, tf.bfloat16):
        best = []
        for shape, k, c_out in shapes:
            x = tf.cast(tf.random.stateless_normal(shape, seed=[1, 1]), dtype)
            w = tf.cast(tf.random.stateless_normal([k, k, shape[-1], c_out], seed=[2, 2]), dtype)
            conv = tf.function(lambda x, w: tf.nn.conv2d(x, w, 1, "VALID")[0, 0, 0, 0])
            for _ in range(2):
                conv(x, w).numpy()
            times = []
            for _ in range(args.reps):
                t = time.perf_counter()
                conv(x, w).numpy()
                times.append(time.perf_counter() - t)
            flops = 2 * shape[0] * (shape[1] - k + 1) * (shape[2] - k + 1) * k * k
            flops *= shape[-1] * c_out
            best.append(flops / statistics.median(times) / 1e9)
        result[dtype.name] = {"gflops": max(best), "per_shape": best}
    _emit(result)


# ------------------------------------------------------------------------------------------------
# FLOP count


def cmd_flops(args) -> None:
    """The analytic count, cross-checked per network: TF's profiler statistics on the traced
    forward graph of one generator and one discriminator (the step itself calls them as nested
    functions, whose ops the profiler does not see from the outer graph)."""
    import tensorflow as tf

    from cyclegan_tf import discriminators, generators

    result = step_flops(args.size)
    if args.profiler:
        x = tf.zeros([1, args.size, args.size, 3])
        for key, net in (
            ("gen_forward", generators.build_generator("resnet_9blocks")),
            ("disc_forward", discriminators.build_discriminator("basic")),
        ):
            forward = tf.function(lambda x, net=net: net(x, training=True))
            by_type = profiler_flops(forward.get_concrete_function(x))
            result[f"profiler_{key}"] = sum(by_type.values())
            result[f"profiler_{key}_by_type"] = by_type
    _emit(result)


# ------------------------------------------------------------------------------------------------
# Input pipeline


def _jpeg_folder(root: str, count: int, size: int = 256) -> str:
    """A trainA/trainB folder of `count` smooth-plus-texture JPEGs per domain (quality 90).

    Photos like horse2zebra's (256x256 JPEG, ~20 KB) rather than white noise, which would make
    the decoder's entropy stage unrealistically slow.
    """
    import numpy as np
    import tensorflow as tf

    marker = os.path.join(root, f".complete_{count}_{size}")
    if os.path.exists(marker):
        return root
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    for domain in ("trainA", "trainB"):
        os.makedirs(os.path.join(root, domain), exist_ok=True)
        for i in range(count):
            f = rng.uniform(1, 6, size=(3, 2))
            base = np.stack([np.sin(2 * np.pi * (f[c, 0] * xx + f[c, 1] * yy)) for c in range(3)])
            image = 127.5 + 80 * base.transpose(1, 2, 0) + rng.normal(0, 12, (size, size, 3))
            data = tf.io.encode_jpeg(np.clip(image, 0, 255).astype(np.uint8), quality=90)
            with open(os.path.join(root, domain, f"{i:04d}.jpg"), "wb") as f:
                f.write(data.numpy())
    open(marker, "w").close()
    return root


def cmd_jpegs(args) -> None:
    """Only writes the `_jpeg_folder` (for `run.py --process`, before any clock starts)."""
    _emit({"folder": _jpeg_folder(args.folder, args.images, args.size)})


def cmd_pipeline(args) -> None:
    import tensorflow as tf

    from cyclegan_tf import config, data

    _configure_tf(args)
    root = _jpeg_folder(args.folder, args.images)
    cfg = config.DataConfig(dataset=root, load_size=286, crop_size=256)
    dataset = data.load(cfg, seed=0).train()
    iterator = iter(dataset)
    for _ in range(args.warmup):
        next(iterator)
    t = time.perf_counter()
    for _ in range(args.batches):
        real_a, real_b = next(iterator)
    elapsed = time.perf_counter() - t
    assert real_a.shape == (1, 256, 256, 3) and real_a.dtype == tf.float32
    _emit({"images_per_s": 2 * args.batches / elapsed, "batches": args.batches})


# ------------------------------------------------------------------------------------------------
# Start-up against the dataset's size


def _png_folder(root: str, count: int, size: int = 8) -> str:
    """`root/<count>/` with trainA/ and trainB/ of count // 2 random size x size PNGs each,
    generated once (a marker file says it is complete) and reused."""
    import numpy as np
    from PIL import Image

    folder = os.path.join(root, str(count))
    marker = os.path.join(folder, ".complete")
    if os.path.exists(marker):
        return folder
    rng = np.random.default_rng(count)
    for domain in ("trainA", "trainB"):
        os.makedirs(os.path.join(folder, domain), exist_ok=True)
        pixels = rng.integers(0, 256, (count // 2, size, size, 3), np.uint8)
        for i, image in enumerate(pixels):
            Image.fromarray(image).save(os.path.join(folder, domain, f"{i:06d}.png"))
    open(marker, "w").close()
    return folder


def cmd_startup(args) -> None:
    """Times `data.load` up to the first training batch on a folder of `--images` 8x8 PNGs, as
    `train()` opens it: the run directory's file_checks.json read, then saved (`--run_dir`; a
    first start finds none and decodes every file, a second reuses it and decodes nothing that
    did not change). The folder is generated before the clock starts."""
    import tensorflow as tf

    from cyclegan_tf import config, data, rundir

    _configure_tf(args)
    root = _png_folder(args.folder, args.images)
    record = os.path.join(args.run_dir, rundir.FILE_CHECKS)
    first = not os.path.exists(record)
    cfg = config.DataConfig(dataset=root, load_size=8, crop_size=8)
    t0 = time.perf_counter()
    checks = data.FileChecks.read(record)
    unpaired = data.load(cfg, seed=0, file_checks=checks)
    t_load = time.perf_counter()
    checks.save_to(record)
    t_saved = time.perf_counter()
    real_a, _ = next(iter(unpaired.train()))
    t_first = time.perf_counter()
    assert real_a.shape == (1, 8, 8, 3) and real_a.dtype == tf.float32
    _emit(
        {
            "images": unpaired.num_a + unpaired.num_b,
            "start": "first" if first else "second",
            "decoded": checks.decoded,
            "load_s": t_load - t0,
            "save_s": t_saved - t_load,
            "first_batch_s": t_first - t_saved,
            "total_s": t_first - t0,
            "record_mb": os.path.getsize(record) / 2**20,
        }
    )


# ------------------------------------------------------------------------------------------------
# SavedModel inference


def cmd_savedmodel(args) -> None:
    """Exports one untrained resnet_9blocks generator with exporting.py (what `cyclegan-tf export`
    writes), loads it back with tf.saved_model.load and times its `translate_images` signature
    (uint8 [1, 256, 256, 3] in and out: the tensor endpoint a TF Serving client calls)."""
    import tempfile

    import keras
    import tensorflow as tf

    from cyclegan_tf import config, exporting, generators, sources

    _configure_tf(args)
    keras.utils.set_random_seed(0)
    # What `cyclegan-tf export --precision=P` builds (inference.load_run), minus the restore.
    cfg = config.preset("paper", precision=args.precision)
    generator = generators.build_from_config(cfg.model, "g_ab", precision=args.precision)
    path = os.path.join(tempfile.mkdtemp(prefix="bench_savedmodel_"), "1")
    t = time.perf_counter()
    exporting.export_generator(
        generator,
        path,
        multiple=generators.size_multiple("resnet_9blocks"),
        config_json=cfg.to_json(),
        info={"direction": "a2b", "precision": args.precision, "bench": True},
    )
    export_s = time.perf_counter() - t
    del generator
    t = time.perf_counter()
    serve = tf.saved_model.load(path).signatures[sources.TENSOR_SIGNATURE]
    load_s = time.perf_counter() - t
    shape = [1, args.size, args.size, 3]
    images = tf.cast(
        tf.random.stateless_uniform(shape, seed=[5, 6], maxval=256, dtype=tf.int32), tf.uint8
    )
    t = time.perf_counter()
    serve(images=images)["images"].numpy()
    first_s = time.perf_counter() - t
    serve(images=images)["images"].numpy()
    times = []
    for _ in range(args.reps):
        t = time.perf_counter()
        serve(images=images)["images"].numpy()
        times.append(time.perf_counter() - t)
    _emit(
        {
            "images_per_s": 1 / statistics.median(times),
            "times": times,
            "export_s": export_s,
            "load_s": load_s,
            "first_call_s": first_s,
            "export": f"exporting.export_generator, signature {sources.TENSOR_SIGNATURE}",
        }
    )


def cmd_formats(args) -> None:
    """Exports one untrained float32 generator of a preset in every format with exporting.py (what
    `cyclegan-tf export --format=saved_model,tflite,onnx` writes, minus the restore) and times
    uint8 [1, size, size, 3] -> uint8 through each: the SavedModel's `translate_images` signature
    (tf.saved_model.load), the .tflite file in ai_edge_litert's Interpreter and the .onnx file in
    onnxruntime (both through `sources.open_file`, default threads)."""
    import tempfile

    import keras
    import numpy as np
    import tensorflow as tf

    from cyclegan_tf import config, exporting, generators, sources

    _configure_tf(args)
    keras.utils.set_random_seed(0)
    cfg = config.preset(args.preset)
    generator = generators.build_from_config(cfg.model, "g_ab", precision="float32")
    multiple = generators.size_multiple(cfg.model.generator)
    root = tempfile.mkdtemp(prefix="bench_formats_")
    info = {"direction": "a2b", "precision": "float32", "bench": True}
    runners, export_s, checks = {}, {}, {}
    t = time.perf_counter()
    path = exporting.export_generator(
        generator,
        os.path.join(root, "1"),
        multiple=multiple,
        config_json=cfg.to_json(),
        info=info,
    )
    export_s["saved_model"] = time.perf_counter() - t
    serve = tf.saved_model.load(path).signatures[sources.TENSOR_SIGNATURE]
    runners["saved_model"] = lambda x: serve(images=tf.constant(x))["images"].numpy()
    for fmt in ("tflite", "onnx"):
        t = time.perf_counter()
        path = exporting.export_file(
            generator, os.path.join(root, f"model.{fmt}"), multiple=multiple, info=info
        )
        export_s[fmt] = time.perf_counter() - t
        checks[fmt] = sources.read_export_info(path)["check"]
        run = sources.open_file(path)
        runners[fmt] = lambda x, run=run: run(x)["translated"]
    images = np.random.default_rng(0).integers(0, 256, (1, args.size, args.size, 3), np.uint8)
    result = {"preset": args.preset, "generator": cfg.model.generator, "ngf": cfg.model.ngf}
    for fmt, runner in runners.items():
        runner(images)  # first call: tracing / allocation
        times = []
        for _ in range(args.reps):
            t = time.perf_counter()
            runner(images)
            times.append(time.perf_counter() - t)
        result[fmt] = {
            "images_per_s": 1 / statistics.median(times),
            "times": times,
            "export_s": export_s[fmt],
            **({"check": checks[fmt]} if fmt in checks else {}),
        }
    _emit(result)


def cmd_torch_gen(args) -> None:
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("torch_cyclegan_step", TORCH_ANCHOR)
    anchor = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(anchor)
    torch.manual_seed(0)
    generator = anchor.ResnetGenerator(9, 64).eval()
    x = torch.rand(1, 3, args.size, args.size) * 2 - 1
    times = []
    with torch.no_grad():
        for _ in range(2):
            generator(x)
        for _ in range(args.reps):
            t = time.perf_counter()
            generator(x)
            times.append(time.perf_counter() - t)
    _emit(
        {
            "images_per_s": 1 / statistics.median(times),
            "times": times,
            "threads": torch.get_num_threads(),
        }
    )


# ------------------------------------------------------------------------------------------------


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name, fn, **defaults):
        p = sub.add_parser(name)
        p.set_defaults(fn=fn)
        p.add_argument("--intra", type=int, default=0, help="intra-op threads (0: TF default)")
        p.add_argument("--inter", type=int, default=0, help="inter-op threads (0: TF default)")
        p.add_argument("--grappler", default="", help="JSON for set_experimental_options")
        for key, value in defaults.items():
            p.add_argument(f"--{key}", type=type(value), default=value)
        return p

    add("step", cmd_step, size=128, precision="float32", steps=5, xla=0, t0=0.0, profile="")
    add("peak", cmd_peak, reps=7)
    add("flops", cmd_flops, size=128, precision="float32", xla=0, profiler=1)
    add(
        "pipeline",
        cmd_pipeline,
        folder="/tmp/cyclegan_bench_jpeg",
        images=64,
        warmup=10,
        batches=200,
    )
    add("jpegs", cmd_jpegs, folder="/tmp/cyclegan_bench_jpeg", images=64, size=256)
    add("startup", cmd_startup, images=1000, folder="/tmp/cyclegan_bench_startup", run_dir="")
    add("savedmodel", cmd_savedmodel, size=256, reps=7, precision="float32")
    add("formats", cmd_formats, size=256, reps=7, preset="paper")
    add("torch_gen", cmd_torch_gen, size=256, reps=7)
    args = parser.parse_args(argv)
    args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
