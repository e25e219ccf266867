"""The GPU check: training, serving and translation speed on this machine's GPU, against its CPU.

    python bench/gpu_check.py                  # about 2 minutes on one GPU
    python bench/gpu_check.py --quick          # 2 steps, no speed run (tests/test_gpu_check.py)
    python bench/gpu_check.py --precision=mixed_float16     # another precision than `auto`

For a user with a GPU: no GPU could be used where this package is developed, so nothing here has
run on one (tests/test_gpu_audit.py checks without a GPU that every op of these graphs has a GPU
kernel for its dtypes). Please send the report if anything FAILs.

Checks, one report line each (PASS, FAIL, or SKIPPED with the reason); exit status 1 if any FAIL:

  train    the tiny preset's train step, `--steps` steps on the GPU in the precision under test
           (`auto` by default: what `cyclegan-tf train` picks here), against the same steps in
           float32 on the CPU from the same initial weights and images (and, for a mixed
           precision, against the same precision on the CPU, which isolates the GPU's kernels
           from the precision's own rounding): losses, the first step's gradients (Adam's first
           moment), the weights after the last step, within bounds derived from the arithmetic
           (`train_bounds`).
  export   the trained generator exported as a SavedModel (`exporting.export_run`: float32, what
           `cyclegan-tf export` writes, and the precision under test when it differs), loaded on
           the CPU and compared with the same function traced from the Keras generator; then
           loaded and served on the GPU (both signatures, under tf.device) against the CPU.
  speed    images/s translated at 256 px on the GPU by the paper's generator (resnet_9blocks,
           random weights: the speed does not depend on them) through the function the export's
           `translate_images` signature serves (`inference.Endpoints`), batches of 1 and 8, in
           float32 (TensorFloat-32 on, TensorFlow's default) and in the precision under test.

Without a GPU it says so at the top, runs the comparisons with the CPU as the device under test
(the harness and the precision's bounds are still exercised) and marks the GPU checks SKIPPED.
The process is configured as `cyclegan-tf train` configures it (`training.configure_tensorflow`:
GPU memory growth, Grappler as `hardware` chooses); the devices and arms in use are printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from cyclegan_tf import (  # noqa: E402
    checkpoints,
    config,
    exporting,
    generators,
    hardware,
    inference,
    precision,
    rundir,
    sources,
    trainer,
    training,
)

CPU, GPU = "/CPU:0", "/GPU:0"
PASS, FAIL, SKIPPED = "PASS", "FAIL", "SKIPPED"
NO_GPU = "no GPU"
SPEED_SIZE = 256
SPEED_BATCHES = (1, 8)
# A value's relative rounding error in each compute dtype (round to nearest, half the spacing):
# bfloat16 keeps 8 significant bits (2^-8 = 3.9e-3 per rounding, DESIGN.md), float16 11.
ROUNDING = {"mixed_bfloat16": 2.0**-8, "mixed_float16": 2.0**-11}
# Generator outputs: the generator's depth (tiny resnet_6blocks: 3 + 12 + 2 + 1 convolutions).
GENERATOR_DEPTH = 18


# -- bounds --------------------------------------------------------------------------------------


def adam_reach(optim: config.OptimConfig, steps: int) -> float:
    """The farthest Adam (torch's bias-corrected update; eps only shortens it) moves a weight in
    `steps` steps at a constant learning rate, whatever the gradients.

    At step k, m_hat = sum_i w_i g_i and v_hat = sum_i u_i g_i^2 with w_i = (1 - b1) b1^(k-i) /
    (1 - b1^k), u_i = (1 - b2) b2^(k-i) / (1 - b2^k); by Cauchy-Schwarz |m_hat| / sqrt(v_hat) <=
    sqrt(sum_i w_i^2 / u_i) (1 at the first step: the update is lr * sign(g)).
    """
    b1, b2, total = optim.beta1, optim.beta2, 0.0
    for k in range(1, steps + 1):
        i = np.arange(1, k + 1)
        w = (1 - b1) * b1 ** (k - i) / (1 - b1**k)
        u = (1 - b2) * b2 ** (k - i) / (1 - b2**k)
        total += math.sqrt(float(np.sum(w**2 / u)))
    return optim.lr * total


@dataclasses.dataclass(frozen=True)
class Bounds:
    """How far a device run may be from its reference run."""

    loss_rel: float  # losses of the first `loss_steps` steps, relative (denominator >= 1e-3)
    loss_steps: int
    grad_rel: float | None  # step-1 gradients (conv kernels), relative norm; None: not compared
    weight_abs: float  # every weight after the last step, absolute


def train_bounds(precision_name: str, reference: str, steps: int, optim) -> Bounds:
    """The bounds of a run in `precision_name` against a `reference` run ("float32" or "same":
    `precision_name` on the CPU), both from the same weights and images.

    Weights, every case: two Adam runs move each weight by at most `adam_reach` from the same
    start, so they are within twice that; a gradient within rounding noise of 0 may point either
    way in the two runs, and this is reached (bfloat16 vs float32 on a CPU, 2 steps: 8.2151e-4
    of 8.2157e-4). Weak, but a NaN or a step that did not train still breaks it.

    Losses and gradients are compared for the first two steps only: the step-1 losses see the
    same weights (only the forward's rounding differs), step 2 sees weights one update apart;
    after that those sign flips let GAN training drift apart in ways no rounding analysis bounds
    (two float32 CPU paths here: 1e-6 at steps 1-4, 2e-4 at step 5).

    - float32 against float32: the same arithmetic in another order (cuDNN's algorithms, other
      reduction trees; TensorFloat-32 is turned off for the comparison): float32 rounding is
      ~1e-6 relative per op chain; 1e-4 leaves a hundredfold margin (test_hardware.py's bound
      between CPU arms).
    - a mixed precision against itself on the CPU (u = `ROUNDING`): both round the same values
      to the compute dtype, from float32 sums taken in another order, so a fraction of them land
      on the neighbouring value; over the tiny networks' depth that is a few u: losses 4u,
      gradients 2u (test_hardware.py's bounds between CPU arms in bfloat16).
    - a mixed precision against float32: every layer's output is rounded once more (at most u
      relative, standard deviation u / sqrt(3)) while instance-norm statistics, tanh outputs
      and losses stay float32. The longest chain a loss sees is the cycle, two generators (36
      convolutions); independent roundings add like a random walk, sqrt(36 / 3) u = 3.5u, which
      a loss over few values keeps (the discriminators' 2x2 logits at 32 px), and 3.5 standard
      deviations cover the 9 losses: step-1 losses within 12u (bfloat16 4.7e-2, float16 5.9e-3;
      measured 7e-3 and 1.1e-2 in bfloat16, 1.3e-3 and 2.3e-3 in float16, on a CPU). Step 2
      and the gradients are not compared: a normalization's gradient subtracts its input
      gradient's projections on 1 and on the output, a cancellation that magnifies the input's
      roundings (bfloat16 vs float32 step-1 gradients differ by 0.3 relative on a CPU), so no
      rounding bound holds there.
    """
    weight_abs = 2 * adam_reach(optim, steps)
    if precision_name == "float32":
        return Bounds(1e-4, min(2, steps), 1e-4, weight_abs)
    u = ROUNDING[precision_name]
    if reference == "same":
        return Bounds(4 * u, min(2, steps), 2 * u, weight_abs)
    return Bounds(12 * u, 1, None, weight_abs)


def output_bound(precision_name: str) -> float:
    """Generator outputs in [-1, 1] of one export served on the GPU and on the CPU, absolute.

    float32: 1e-4 (as the losses). Mixed: each element's error is a random walk over the
    generator's 18 roundings, a standard deviation below sqrt(18) u (u bounds each rounding),
    and the largest of ~10^4 compared elements lies within ~4 standard deviations: 4 sqrt(18) u
    ~ 16u (bfloat16 6.3e-2, float16 7.8e-3).
    """
    if precision_name == "float32":
        return 1e-4
    return 4 * math.sqrt(GENERATOR_DEPTH) * ROUNDING[precision_name]


def uint8_levels(float_bound: float) -> int:
    """uint8 levels a float difference of `float_bound` can move a rounded pixel by."""
    return max(1, math.ceil(float_bound * 127.5))


# -- the report ----------------------------------------------------------------------------------


class Report:
    """The check lines, printed as they come, and the exit status."""

    def __init__(self):
        self.statuses: list[str] = []

    def line(self, status: str, name: str, detail: str) -> None:
        self.statuses.append(status)
        print(f"{status:<8} {name}: {detail}", flush=True)

    def run(self, name: str, check, *args) -> object:
        """Runs `check(*args)` -> (status, detail, value); an exception is a FAIL with its line."""
        try:
            status, detail, value = check(*args)
        except Exception as e:  # noqa: BLE001 - every failure is reported, the others still run
            text = str(e).strip()
            status, detail, value = FAIL, f"{type(e).__name__}: {text.splitlines()[0]}", None
        self.line(status, name, detail)
        return value

    def summary(self) -> str:
        counts = {s: self.statuses.count(s) for s in (PASS, FAIL, SKIPPED)}
        return f"{counts[PASS]} passed, {counts[FAIL]} failed, {counts[SKIPPED]} skipped"

    @property
    def failed(self) -> bool:
        return FAIL in self.statuses


def _on(tensor: tf.Tensor) -> str:
    """'GPU' or 'CPU': where an eager tensor was computed."""
    return "GPU" if ":GPU:" in tensor.device.upper() else "CPU"


class _float32_exactly:
    """Turns TensorFloat-32 off inside, on a float32 comparison on a GPU: Ampere and newer GPUs
    run float32 convolutions with 10-bit mantissas by default (a bfloat16-like error)."""

    def __init__(self, active: bool):
        self.active = active

    def __enter__(self):
        if self.active:
            tf.config.experimental.enable_tensor_float_32_execution(False)

    def __exit__(self, *exc):
        if self.active:
            tf.config.experimental.enable_tensor_float_32_execution(True)


# -- train ---------------------------------------------------------------------------------------


def _networks(model: trainer.CycleGAN) -> list[tf.Variable]:
    """Every weight of the four networks (float32 in every precision), in a fixed order."""
    return [v for net in (model.g_ab, model.g_ba, model.d_a, model.d_b) for v in net.weights]


def _first_moments(model: trainer.CycleGAN) -> list[np.ndarray]:
    """Adam's first moments: (1 - beta1) * gradient after the first step."""
    moments = []
    for optimizer in (model.g_optimizer, model.d_optimizer):
        inner = getattr(optimizer, "inner_optimizer", optimizer)  # mixed_float16's loss scaling
        moments.extend(m.numpy() for m in inner._momentums)
    return moments


@dataclasses.dataclass
class TrainRun:
    precision: str
    model: trainer.CycleGAN
    losses: list[dict[str, float]]  # per step
    moments: list[np.ndarray]  # after step 1
    weights: list[np.ndarray]  # after the last step
    initial: list[np.ndarray]  # before the first step
    device: str  # where the step's outputs were computed: GPU or CPU


def train_run(precision_name: str, device: str, images, initial=None) -> TrainRun:
    """Trains a new tiny CycleGAN in `precision_name` on `device`, one step per image pair.

    Args:
      precision_name: one of `precision.POLICIES`.
      device: `CPU` or `GPU`.
      images: (real_a, real_b), numpy float32 [steps, 1, H, W, 3] in [-1, 1].
      initial: the networks' weights to start from (`_networks` order); None: the seed's.
    """
    real_a, real_b = images
    cfg = config.preset("tiny", precision=precision_name)
    with tf.device(device), _float32_exactly(device == GPU and precision_name == "float32"):
        model = trainer.CycleGAN(cfg, steps_per_epoch=len(real_a))  # a constant learning rate
        if initial is not None:  # not the seed's: CPU and GPU initializers may differ by an ulp
            for variable, value in zip(_networks(model), initial, strict=True):
                variable.assign(value)
        initial = [v.numpy() for v in _networks(model)]
        losses, moments, where = [], [], ""
        for step in range(len(real_a)):
            out = model.train_step(tf.constant(real_a[step]), tf.constant(real_b[step]))
            losses.append({k: float(v) for k, v in out.items() if k != "lr"})
            where = _on(out["g/total"])
            if step == 0:
                moments = _first_moments(model)
    weights = [v.numpy() for v in _networks(model)]
    return TrainRun(precision_name, model, losses, moments, weights, initial, where)


def train_check(precision_name: str, device: str, images, initial=None):
    """One run (`train_run`); PASS when its losses are finite and it ran on `device`."""
    run = train_run(precision_name, device, images, initial)
    finite = all(math.isfinite(v) for step in run.losses for v in step.values())
    ok = finite and run.device == device.strip("/").split(":")[0]
    detail = (
        f"{len(run.losses)} steps on the {run.device}, g/total {run.losses[0]['g/total']:.4f} -> "
        f"{run.losses[-1]['g/total']:.4f}" + ("" if finite else "; NOT FINITE")
    )
    for name in ("g_optimizer", "d_optimizer"):  # mixed_float16: dynamic loss scaling
        optimizer = getattr(run.model, name)
        if hasattr(optimizer, "inner_optimizer"):
            applied = int(optimizer.inner_optimizer.iterations.numpy())
            detail += (
                f"; {name[0].upper()} loss scale {float(optimizer.dynamic_scale.numpy()):g}, "
                f"{len(run.losses) - applied} step(s) skipped (non-finite gradients)"
            )
    return (PASS if ok else FAIL), detail, run


def compare_check(run: TrainRun, reference: TrainRun, bound: Bounds, device: str):
    """`run` against `reference` within `bound`; also that `run` computed on `device`."""
    pairs = list(zip(run.losses, reference.losses, strict=True))
    loss_rel = max(
        abs(got[k] - want[k]) / max(abs(want[k]), 1e-3)
        for got, want in pairs[: bound.loss_steps]
        for k in want
    )
    weight_abs = max(
        float(np.abs(got - want).max())
        for got, want in zip(run.weights, reference.weights, strict=True)
    )
    finite = all(math.isfinite(v) for step in run.losses for v in step.values()) and all(
        np.isfinite(w).all() for w in run.weights
    )
    steps = "step 1" if bound.loss_steps == 1 else f"steps 1-{bound.loss_steps}"
    parts = [f"{len(pairs)} steps on the {run.device}"]
    parts.append(f"losses of {steps} {loss_rel:.2g} relative (bound {bound.loss_rel:.2g})")
    ok = finite and loss_rel <= bound.loss_rel and run.device == device.strip("/").split(":")[0]
    if bound.grad_rel is not None:
        grad_rel = max(
            float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))
            for got, want in zip(run.moments, reference.moments, strict=True)
            if want.ndim == 4  # conv kernels
        )
        ok = ok and grad_rel <= bound.grad_rel
        parts.append(f"step-1 gradients {grad_rel:.2g} (bound {bound.grad_rel:.2g})")
    # Plus the float32 rounding of each updated weight (half an ulp, |w| 2^-24) in both runs: the
    # Adam bound is reached within that (weights whose gradients are rounding noise).
    largest = max(float(np.abs(w).max()) for w in reference.weights)
    weight_bound = bound.weight_abs + 2 * len(pairs) * largest * 2.0**-24
    ok = ok and weight_abs <= weight_bound
    parts.append(f"weights {weight_abs:.3g} absolute (bound {weight_bound:.3g})")
    if not finite:
        parts.append("NOT FINITE")
    return (PASS if ok else FAIL), ", ".join(parts), None


# -- export --------------------------------------------------------------------------------------


def save_run(model: trainer.CycleGAN, run_dir: str, precision_name: str) -> str:
    """A trained model as a run directory (config.json and a checkpoint), as training leaves it."""
    rundir.create(config.preset("tiny", precision=precision_name), run_dir, rundir.NEW, None)
    checkpoints.Checkpointer(model.checkpoint_objects(), run_dir).save(int(model.step.numpy()))
    return run_dir


def _serve(path: str, device: str, images: np.ndarray) -> dict:
    """Loads the SavedModel on `device` and calls both signatures there."""
    with tf.device(device):
        loaded = tf.saved_model.load(path)
        tensors = loaded.signatures[sources.TENSOR_SIGNATURE](images=tf.constant(images))
        pngs = tf.constant([tf.io.encode_png(image).numpy() for image in images])
        served = loaded.signatures[sources.SERVING_SIGNATURE](images_bytes=pngs)
    decoded = np.stack([tf.io.decode_png(png).numpy() for png in served["images_bytes"].numpy()])
    return {
        "images": tensors["images"].numpy().astype(int),
        "images_float": tensors["images_float"].numpy(),
        "served": decoded.astype(int),
        "device": _on(tensors["images_float"]),
    }


def export_check(run_dir: str, export_dir: str, precision_name: str):
    """Exports in `precision_name`; serves it on the CPU against the same function traced from
    the Keras generator (`inference.Endpoints.translate_images`, as the export traces it)."""
    written = exporting.export_run(
        run_dir, export_dir, precision=precision_name, formats="saved_model", directions=("a2b",)
    )
    path = written[exporting.SAVED_MODEL]["a2b"]
    images = exporting.check_images(37, 53)  # padded to the generator's multiple and cropped back
    got = _serve(path, CPU, images)
    with tf.device(CPU):
        loaded = inference.load_run(run_dir, directions=("a2b",), precision=precision_name)
        translate = tf.function(
            loaded.endpoints("a2b").translate_images,
            input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)],
            autograph=False,
        )
        want = {k: v.numpy() for k, v in translate(tf.constant(images)).items()}
    # The same graph on the same device: equal up to float32 reordering by graph rewrites (and
    # one uint8 level where that flips a rounding, exporting.CHECK_TOLERANCE).
    floats = float(np.abs(got["images_float"] - want["images_float"]).max())
    levels = int(np.abs(got["images"] - want["images"].astype(int)).max())
    # serving_default translates each image alone, translate_images the batch: instance norm
    # takes its batch-1 or its batch-N path, the same sums in another order (float32: ~3e-6
    # relative, layers.InstanceNormalization); in a mixed precision that moves roundings.
    png_bound = (
        exporting.CHECK_TOLERANCE
        if precision_name == "float32"
        else uint8_levels(output_bound(precision_name))
    )
    png_levels = int(np.abs(got["served"] - got["images"]).max())
    ok = floats <= 1e-5 and levels <= exporting.CHECK_TOLERANCE and png_levels <= png_bound
    detail = (
        f"the SavedModel on the CPU vs the Keras generator's function: float {floats:.2g} (bound "
        f"1e-05), uint8 {levels} level(s) (bound {exporting.CHECK_TOLERANCE}); serving_default's "
        f"PNGs vs translate_images {png_levels} level(s) (bound {png_bound})"
    )
    return (PASS if ok else FAIL), detail, (path, got)


def gpu_serve_check(path: str, cpu_answers: dict, precision_name: str):
    """The same SavedModel served on the GPU against its answers on the CPU."""
    with _float32_exactly(precision_name == "float32"):
        got = _serve(path, GPU, exporting.check_images(37, 53))
    bound = output_bound(precision_name)
    levels_bound = uint8_levels(bound)
    floats = float(np.abs(got["images_float"] - cpu_answers["images_float"]).max())
    levels = int(np.abs(got["images"] - cpu_answers["images"]).max())
    png_levels = int(np.abs(got["served"] - cpu_answers["served"]).max())
    ok = got["device"] == "GPU" and floats <= bound and max(levels, png_levels) <= levels_bound
    detail = (
        f"translate_images on the {got['device']} vs the CPU: float {floats:.2g} (bound "
        f"{bound:.2g}), uint8 {levels} level(s); serving_default's PNGs {png_levels} level(s) "
        f"(bound {levels_bound})"
    )
    return (PASS if ok else FAIL), detail, None


# -- speed ---------------------------------------------------------------------------------------


def speed_check(precision_name: str, seconds: float):
    """Images/s of the paper generator at SPEED_SIZE px on the GPU, per batch size."""
    paper = config.preset("paper").model
    figures = []
    with tf.device(GPU):
        generator = generators.build_from_config(paper, "g_ab", precision=precision_name)
        translator = inference.Endpoints(generator, generators.size_multiple(paper.generator))
        translate = tf.function(
            translator.translate_images,
            input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)],
            autograph=False,
        )
        for batch in SPEED_BATCHES:
            shape = (batch, SPEED_SIZE, SPEED_SIZE, 3)
            images = tf.identity(np.random.default_rng(batch).integers(0, 256, shape, np.uint8))
            for _ in range(3):  # trace, let cuDNN pick its algorithms, warm up
                out = translate(images)["images"]
            assert _on(out) == "GPU" and out.numpy().shape == shape, "not computed on the GPU"
            calls, start = 0, time.perf_counter()
            while calls < 3 or time.perf_counter() - start < seconds:
                translate(images)["images"].numpy()  # .numpy() waits for the GPU
                calls += 1
            rate = batch * calls / (time.perf_counter() - start)
            figures.append(f"batch {batch} {rate:.1f} images/s")
    return PASS, f"{', '.join(figures)} ({SPEED_SIZE} px, the paper's generator)", None


# -- main ----------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--precision", default=precision.AUTO, choices=precision.PRECISIONS)
    parser.add_argument("--steps", type=int, default=None, help="train steps (default 5)")
    parser.add_argument(
        "--seconds", type=float, default=8.0, help="speed: seconds per batch size and precision"
    )
    parser.add_argument("--quick", action="store_true", help="2 steps, no speed measurement")
    args = parser.parse_args(argv)
    steps = args.steps or (2 if args.quick else 5)

    cfg = config.preset("tiny")
    training.configure_tensorflow(cfg.train)  # GPU memory growth, Grappler: as training runs
    gpus = hardware.gpus()
    resolution = precision.resolve(args.precision)
    under_test = resolution.precision
    device, where = (GPU, "GPU") if gpus else (CPU, "CPU")
    print(f"cyclegan_tf GPU check: TensorFlow {tf.__version__}, Keras {keras.__version__}")
    if not gpus:
        print(
            "NO GPU: TensorFlow sees no GPU on this machine. The GPU checks are SKIPPED; the "
            "comparisons run with the CPU as the device under test."
        )
    print(f"Devices: {hardware.describe()}")
    print(f"Precision under test: {under_test} ({resolution.reason})\n", flush=True)

    report = Report()
    size = cfg.data.crop_size
    rng = np.random.default_rng(cfg.train.seed)
    images = tuple(
        rng.uniform(-1, 1, (steps, 1, size, size, 3)).astype(np.float32) for _ in range(2)
    )
    reference = report.run(
        "train, float32 on the CPU (reference)", train_check, "float32", CPU, images
    )
    run = None
    if reference is not None:
        name = f"train, {under_test} on the {where}"
        run = report.run(name, train_check, under_test, device, images, reference.initial)
    if run is not None:
        report.run(
            f"train, {under_test} on the {where} vs float32 on the CPU",
            compare_check,
            run,
            reference,
            train_bounds(under_test, "float32", steps, cfg.optim),
            device,
        )
    if under_test != "float32":
        name = f"train, {under_test} on the GPU vs {under_test} on the CPU"
        if not gpus:
            report.line(SKIPPED, name, NO_GPU)
        elif run is not None:
            same = report.run(
                f"train, {under_test} on the CPU",
                train_check,
                under_test,
                CPU,
                images,
                reference.initial,
            )
            if same is not None:
                bound = train_bounds(under_test, "same", steps, cfg.optim)
                report.run(name, compare_check, run, same, bound, device)
    elif not gpus:
        report.line(SKIPPED, "train, float32 on the GPU vs float32 on the CPU", NO_GPU)

    precisions = list(dict.fromkeys(("float32", under_test)))
    with tempfile.TemporaryDirectory() as tmp:
        exported = {}
        if run is not None:
            run_dir = save_run(run.model, os.path.join(tmp, "run"), under_test)
            for name in precisions:
                export_dir = os.path.join(tmp, f"export_{name}")
                result = report.run(
                    f"export {name}, served on the CPU", export_check, run_dir, export_dir, name
                )
                if result is not None:
                    exported[name] = result
        for name in precisions:
            check = f"export {name}, served on the GPU vs the CPU"
            if not gpus:
                report.line(SKIPPED, check, NO_GPU)
            elif name in exported:
                report.run(check, gpu_serve_check, *exported[name], name)
            else:
                report.line(FAIL, check, "no export to serve (see above)")

    for name in precisions:
        check = f"speed, {name} on the GPU"
        if not gpus:
            report.line(SKIPPED, check, NO_GPU)
        elif args.quick:
            report.line(SKIPPED, check, "--quick")
        else:
            report.run(check, speed_check, name, args.seconds)

    print(f"\n{report.summary()}" + ("" if gpus else " (no GPU on this machine)"))
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
