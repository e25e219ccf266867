"""`train(config, output_dir)`: wires data, CycleGAN state, checkpoints and logging into the loop.

No model code lives here. A run directory holds:
  config.json        the resolved config (a resumed run must be compatible with it)
  checkpoints/       tf.train.CheckpointManager files (every save_steps, every save_epoch epochs,
                     at the end, and on SIGINT/SIGTERM)
  logs/              TensorBoard: every loss and lr (scalars), the epoch grid (images)
  images/            epoch_<NNN>.png grids (real A, fake B, rec A / real B, fake A, rec B)
  metrics.jsonl      one JSON line per logged step (the same scalars as TensorBoard)
  score.json         built-in dataset only: ground-truth score of G_AB vs the identity baseline

Resume: re-running the same command restores the newest readable checkpoint and continues at its
step; the data pipeline restarts at that step, so the run ends with the same weights as an
uninterrupted one (with `deterministic=True` ops).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
import shutil
import signal
import sys
import time

import numpy as np
import tensorflow as tf

from cyclegan_tf import checkpoints, data, errors, synthetic, trainer, visualize
from cyclegan_tf import config as config_lib
from cyclegan_tf import precision as precision_lib

# Fields that may change between the original run and a resume: they steer the loop, not the
# model or the data stream. Anything else must match config.json.
RESUMABLE_CHANGES = {
    ("train", "max_steps"),
    ("train", "save_epoch"),
    ("train", "save_steps"),
    ("train", "log_steps"),
    ("train", "keep_checkpoints"),
    ("train", "deterministic"),
    ("optim", "n_epochs"),
    ("optim", "n_epochs_decay"),
}
NUM_GRID_SAMPLES = 2


class RunDirError(errors.UserError):
    """The output directory cannot be used as asked (exists, incompatible config)."""


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; nothing was saved after the last good checkpoint."""


class Interrupted(Exception):
    """SIGINT/SIGTERM arrived; a checkpoint was saved. `signum` says which signal."""

    def __init__(self, signum: int, step: int, path: str):
        super().__init__(f"stopped by signal {signum} at step {step}; checkpoint {path}")
        self.signum, self.step, self.path = signum, step, path


@dataclasses.dataclass
class TrainResult:
    run_dir: str
    step: int
    epoch: int
    checkpoint: str | None
    metrics: dict[str, float]
    score: dict | None
    first_step_seconds: float | None
    steps_per_second: float | None
    data_root: str | None = None  # the folder of a folder/builtin dataset (holds testA/ testB/)


def prepare_run_dir(
    config: config_lib.Config, output_dir: str, resume: bool, overwrite: bool
) -> None:
    """Creates the run directory or checks that resuming into it is legitimate.

    Raises:
      RunDirError: the directory holds a run and neither resume nor overwrite allows reusing it,
        or its config.json is incompatible with `config`.
    """
    config_path = os.path.join(output_dir, checkpoints.CONFIG_FILE)
    exists = os.path.exists(config_path) or os.path.isdir(checkpoints.checkpoint_dir(output_dir))
    if exists and not resume:
        if not overwrite:
            raise RunDirError(
                f"{output_dir!r} already holds a run; re-run with --resume to continue it, "
                "or --overwrite to delete it and start over."
            )
        shutil.rmtree(output_dir)
    elif exists and os.path.exists(config_path):
        with open(config_path) as f:
            saved = config_lib.Config.from_json(f.read())
        diffs = config_diff(saved, config)
        if diffs:
            raise RunDirError(
                f"Cannot resume {output_dir!r}: config differs from its config.json in "
                f"{'; '.join(diffs)}. Use the original flags, or a new --output_dir."
            )
    os.makedirs(output_dir, exist_ok=True)
    tmp = config_path + ".tmp"
    with open(tmp, "w") as f:
        f.write(config.to_json())
    os.replace(tmp, config_path)


def resolve_precision(
    config: config_lib.Config, output_dir: str, resume: bool
) -> tuple[config_lib.Config, str]:
    """The config with a concrete precision, and a phrase saying where it came from.

    `auto` becomes the precision recorded in the run directory when resuming one (a run keeps
    the precision it started with, whatever machine resumes it), else the fastest precision the
    devices compute natively (`precision.resolve`). An explicit precision is kept as given.
    """
    requested = config.train.precision
    if requested != precision_lib.AUTO:
        return config, f"{requested} (asked for)"
    config_path = os.path.join(output_dir, checkpoints.CONFIG_FILE)
    if resume and os.path.isfile(config_path):
        with open(config_path) as f:
            saved = config_lib.Config.from_json(f.read()).train.precision
        if saved != precision_lib.AUTO:
            return config.replace(precision=saved), f"{saved} (auto: recorded in the run)"
    resolution = precision_lib.resolve(requested)
    return config.replace(precision=resolution.precision), (
        f"{resolution.precision} ({resolution.reason})"
    )


def config_diff(saved: config_lib.Config, new: config_lib.Config) -> list[str]:
    """Fields that differ and may not change on resume, as 'section.field: old -> new'."""
    out = []
    saved_d, new_d = saved.to_dict(), new.to_dict()
    for section, fields in saved_d.items():
        for field, old in fields.items():
            value = new_d[section][field]
            if old != value and (section, field) not in RESUMABLE_CHANGES:
                out.append(f"{section}.{field}: {old!r} -> {value!r}")
    return out


class _StopSignals:
    """Turns SIGINT/SIGTERM into a flag the loop checks between steps (main thread only)."""

    def __init__(self):
        self.signum = None
        self._previous = {}

    def __enter__(self):
        if _in_main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        del frame
        if self.signum is not None:  # a second signal: the user insists
            raise KeyboardInterrupt
        self.signum = signum
        print(
            f"\nReceived signal {signum}: saving a checkpoint after this step...",
            file=sys.stderr,
            flush=True,
        )

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def configure_tensorflow(train_config: config_lib.TrainConfig) -> None:
    """The process-wide TensorFlow settings a training process runs with (`train` calls it).

    - Grappler's meta optimizer off: its graph rewrites cost 1.5-2 s before the first step and
      gain nothing per step on this CPU (bench/RESULTS.md: "Grappler on" rows).
    - Op determinism when `train_config.deterministic` (exact resume across processes).

    Process-wide, so it is called where a process decides to train, not at import.
    """
    if train_config.deterministic:
        tf.config.experimental.enable_op_determinism()
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})


def train(
    config: config_lib.Config,
    output_dir: str,
    resume: bool = True,
    overwrite: bool = False,
    verbose: int = 1,
) -> TrainResult:
    """Trains (or resumes) a CycleGAN run and returns where it ended.

    Args:
      config: the run configuration.
      output_dir: the run directory (created; see the module docstring for its layout).
      resume: continue from the newest checkpoint in `output_dir` if there is one.
      overwrite: with resume=False, delete an existing run in `output_dir` first.
      verbose: 0 silent, 1 progress bar per epoch (a line per log_steps when not on a terminal).

    Returns:
      A `TrainResult`.

    Raises:
      RunDirError, data.DataError, checkpoints.CheckpointError, ValueError: user errors.
      NonFiniteLossError: a loss became NaN/inf (no checkpoint of the bad weights is written).
      Interrupted: SIGINT/SIGTERM arrived; a checkpoint of the last finished step was saved.
    """
    t_start = time.perf_counter()
    t_cfg = config.train
    if config.loss.pool_size > 0 and config.data.preprocess in ("none", "scale_width"):
        raise ValueError(
            f"preprocess={config.data.preprocess} yields images of varying size, which the image "
            "pool cannot store; use --pool_size=0 or a cropping preprocess."
        )
    configure_tensorflow(t_cfg)

    # 1. Data first: a missing dataset should fail before anything is written.
    unpaired = data.load(config.data, seed=t_cfg.seed)
    strategy = trainer.make_strategy(t_cfg.strategy)
    config, resolution = resolve_precision(config, output_dir, resume)
    t_cfg = config.train
    prepare_run_dir(config, output_dir, resume, overwrite)
    if config.data.batch_size % strategy.num_replicas_in_sync:
        raise ValueError(
            f"batch_size must be divisible by the {strategy.num_replicas_in_sync} replicas. "
            f"Received: batch_size={config.data.batch_size}"
        )

    # 2. State and its checkpoint.
    model = trainer.CycleGAN(config, unpaired.steps_per_epoch, strategy)
    ckpt = checkpoints.Checkpointer(model.checkpoint_objects(), output_dir, t_cfg.keep_checkpoints)
    restored = ckpt.restore_latest() if resume else None
    if restored and int(model.seed.numpy()) != t_cfg.seed:
        raise RunDirError(f"{restored} was trained with seed {int(model.seed.numpy())}")
    start = int(model.step.numpy())
    spe = unpaired.steps_per_epoch
    total = config.optim.total_epochs * spe
    if t_cfg.max_steps is not None:
        total = min(total, t_cfg.max_steps)
    _say(
        verbose,
        f"{'Resuming from ' + restored if restored else 'Starting'} at step {start}/{total} "
        f"({spe} steps per epoch; |A|={unpaired.num_a}, |B|={unpaired.num_b}; "
        f"{strategy.num_replicas_in_sync} replica(s)) in {output_dir}",
    )
    _say(verbose, f"Devices: {precision_lib.devices().describe()}; precision {resolution}.")

    writer = tf.summary.create_file_writer(os.path.join(output_dir, "logs"))
    samples = _grid_samples(unpaired, NUM_GRID_SAMPLES)
    # A finite stream (exactly the steps left): at the end its prefetch threads have drained, so
    # releasing the iterator cannot wait on in-flight work.
    stream = unpaired.train(start_step=start, num_steps=max(total - start, 1))
    batches = iter(strategy.experimental_distribute_dataset(stream))
    last_saved = restored
    metrics: dict[str, float] = {}
    first_step_seconds = None
    window: dict[str, list[float]] = {}
    t_loop, steps_run = None, 0
    # Seconds of the last 100 steps (data + step + sync; not grids or saves): the it/s shown.
    durations = collections.deque(maxlen=100)

    # 3. The loop: epochs of steps; checkpoints, logs and grids at their cadence.
    with _StopSignals() as stop, writer.as_default():
        step = start
        while step < total:
            epoch = step // spe
            epoch_end = min((epoch + 1) * spe, total)
            bar = _progress_bar(verbose, epoch, config.optim.total_epochs, epoch_end - epoch * spe)
            if bar is not None and step > epoch * spe:
                bar.update(step - epoch * spe)
            while step < epoch_end:
                t_step = time.perf_counter()
                real_a, real_b = next(batches)
                values = model.train_step(real_a, real_b)
                metrics = {k: float(v) for k, v in values.items()}
                bad = [k for k, v in metrics.items() if not math.isfinite(v)]
                if bad:
                    raise NonFiniteLossError(
                        f"Loss {bad[0]} became {metrics[bad[0]]} at step {step + 1}; stopped "
                        f"without saving (last good checkpoint: {last_saved}). Try a lower --lr or "
                        "--precision=float32."
                    )
                step += 1
                steps_run += 1
                if first_step_seconds is not None:  # the first step is mostly tracing
                    durations.append(time.perf_counter() - t_step)
                if first_step_seconds is None:
                    first_step_seconds = time.perf_counter() - t_start
                    t_loop = time.perf_counter()
                    _say(verbose, f"First step finished {first_step_seconds:.1f} s after start.")
                for k, v in metrics.items():
                    window.setdefault(k, []).append(v)
                if bar is not None:
                    shown = [(k, metrics[k]) for k in _SHOWN if k in metrics]
                    if durations:
                        shown.insert(0, ("it/s", len(durations) / sum(durations)))
                    bar.update(step - epoch * spe, shown)
                if step % t_cfg.log_steps == 0 or step == total:
                    means = _log_scalars(output_dir, step, window)
                    window = {}
                    if verbose and bar is None:  # not a terminal: one line per log interval
                        _print_progress(step, total, durations, means)
                if step % t_cfg.save_steps == 0:
                    last_saved = ckpt.save(step)
                if stop.signum is not None:
                    last_saved = ckpt.save(step)
                    writer.flush()
                    raise Interrupted(stop.signum, step, last_saved)
            if step == (epoch + 1) * spe or step == total:
                _epoch_end(model, samples, output_dir, epoch, step, verbose)
                if (epoch + 1) % t_cfg.save_epoch == 0:
                    last_saved = ckpt.save(step)

        # 4. The end: a final checkpoint, the score on the built-in dataset.
        if steps_run:
            last_saved = ckpt.save(step)
    writer.flush()
    steps_per_second = None
    if steps_run > 1 and t_loop is not None:
        steps_per_second = (steps_run - 1) / (time.perf_counter() - t_loop)
    score = (
        _score_builtin(model, unpaired.builtin_dir, output_dir, verbose)
        if unpaired.builtin_dir
        else None
    )
    if steps_run == 0:
        _say(
            verbose,
            f"Nothing to do: the run is complete at step {start} (raise --n_epochs or "
            "--max_steps to train longer).",
        )
    return TrainResult(
        run_dir=output_dir,
        step=step if total > start else start,
        epoch=int(model.epoch.numpy()),
        checkpoint=last_saved or ckpt.latest,
        metrics=metrics,
        score=score,
        first_step_seconds=first_step_seconds,
        steps_per_second=steps_per_second,
        data_root=unpaired.root,
    )


_SHOWN = ("g/total", "g/adv_ab", "g/cycle_a", "d/a", "d/b")


def _say(verbose: int, message: str) -> None:
    if verbose:
        print(message, flush=True)


def _progress_bar(verbose, epoch, total_epochs, target):
    if not verbose:
        return None
    if not (sys.stdout.isatty() or "ipykernel" in sys.modules):
        print(f"Epoch {epoch + 1}/{total_epochs}", flush=True)
        return None
    import keras

    print(f"Epoch {epoch + 1}/{total_epochs}", flush=True)
    return keras.utils.Progbar(target, stateful_metrics=["it/s", *_SHOWN], unit_name="step")


def _log_scalars(output_dir: str, step: int, window: dict[str, list[float]]) -> dict:
    """Writes the window's mean of every scalar to TensorBoard and metrics.jsonl."""
    means = {k: float(np.mean(v)) for k, v in window.items()}
    for k, v in means.items():
        tf.summary.scalar(k, v, step=step)
    with open(os.path.join(output_dir, "metrics.jsonl"), "a") as f:
        f.write(json.dumps({"step": step, **means}) + "\n")
    return means


def _print_progress(step: int, total: int, durations, means: dict) -> None:
    rate = len(durations) / sum(durations) if durations else 0.0
    eta = (total - step) / rate if rate > 0 else float("nan")
    eta_text = time.strftime("%H:%M:%S", time.gmtime(eta)) if math.isfinite(eta) else "?"
    shown = " ".join(f"{k}={means[k]:.4f}" for k in (*_SHOWN, "lr") if k in means)
    print(f"  step {step}/{total}  {rate:.2f} it/s  ETA {eta_text}  {shown}", flush=True)


def _grid_samples(unpaired, n: int) -> dict[str, np.ndarray]:
    """A fixed set of n images per domain (test split if present) for the epoch grids."""
    out = {}
    if unpaired.has_test:
        for domain in ("a", "b"):
            images = [image.numpy() for image, _ in unpaired.test(domain).take(n)]
            out[f"real_{domain}"] = np.stack(images)
    else:  # no test split: the first training batches (deterministic for a given seed)
        for real_a, real_b in unpaired.train(start_step=0, num_steps=n):
            out.setdefault("real_a", []).append(real_a[0].numpy())
            out.setdefault("real_b", []).append(real_b[0].numpy())
        out = {k: np.stack(v) for k, v in out.items()}
    return out


def _epoch_end(model, samples, output_dir, epoch, step, verbose) -> str:
    rows = model.cycle_images(samples["real_a"], samples["real_b"])
    path = os.path.join(output_dir, "images", f"epoch_{epoch + 1:03d}.png")
    visualize.save_grid(rows, path, title=f"epoch {epoch + 1} (step {step})")
    tf.summary.image("translations", visualize.grid_tensor(rows), step=step)
    _say(verbose, f"Wrote {path}")
    return path


def _score_builtin(model, builtin_dir, output_dir, verbose) -> dict:
    """Scores G_AB on the built-in paired test split against the identity baseline."""
    real_a, truth_b = synthetic.load_test_pairs(builtin_dir)
    fakes = np.concatenate(
        [model.translate(real_a[i : i + 8], "a2b").numpy() for i in range(0, len(real_a), 8)]
    )
    result = {
        "g_ab": synthetic.score(fakes, truth_b, real_a),
        "identity": synthetic.score(real_a, truth_b, real_a),
        "step": int(model.step.numpy()),
    }
    with open(os.path.join(output_dir, "score.json"), "w") as f:
        json.dump(result, f, indent=2)
    if verbose:
        print(synthetic.format_scores(result["g_ab"], result["identity"]), flush=True)
    return result
