"""`train(config, output_dir)`: the training loop, in phases; no model code lives here.

Phases: open the run (decide what the start means, load the data, resolve the precision), build
the state, write the run directory (`rundir.py`: its layout and rules), restore, loop, finish.
The loop's cadences (log, save, epoch grid, stop) are decided in one place, `Cadence`.

Metrics stay on the device between log points: the loop pulls a window of steps to the host at
the log cadence (one sync instead of one per step, so a GPU is never idle waiting for the host),
checks it for NaN/inf, and never writes a checkpoint of weights whose window was not checked.

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
import signal
import sys
import time

import numpy as np
import tensorflow as tf

from cyclegan_tf import checkpoints, data, errors, rundir, synthetic, trainer, visualize
from cyclegan_tf import config as config_lib
from cyclegan_tf import precision as precision_lib

NUM_GRID_SAMPLES = 2
RunDirError = rundir.RunDirError


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
    config: config_lib.Config | None = None  # as resolved (precision) and saved in config.json


@dataclasses.dataclass(frozen=True)
class Cadence:
    """When the loop logs, saves, draws the epoch grid and keeps epoch generators (pure).

    Steps count from 1: `events(k)` is what happens after the k-th step of the run finished.
    """

    steps_per_epoch: int
    total: int
    log_steps: int
    save_steps: int
    save_epoch: int

    @classmethod
    def of(cls, config: config_lib.Config, steps_per_epoch: int) -> Cadence:
        total = config.optim.total_epochs * steps_per_epoch
        if config.train.max_steps is not None:
            total = min(total, config.train.max_steps)
        t = config.train
        return cls(steps_per_epoch, total, t.log_steps, t.save_steps, t.save_epoch)

    def events(self, step: int) -> frozenset[str]:
        """A subset of {"log", "save", "epoch_end", "keep_epoch"} for the finished `step`."""
        out = set()
        epoch_done = step % self.steps_per_epoch == 0
        if step % self.log_steps == 0 or step == self.total:
            out.add("log")
        if epoch_done or step == self.total:
            out.add("epoch_end")  # the grid; a partial last epoch gets one too
        if step % self.save_steps == 0 or step == self.total:
            out.add("save")
        if epoch_done and (step // self.steps_per_epoch) % self.save_epoch == 0:
            out.update(("save", "keep_epoch"))
        return frozenset(out)

    def epoch_of(self, step: int) -> int:
        """The 0-based epoch the step after `step` belongs to."""
        return step // self.steps_per_epoch


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
    allow_data_change: bool = False,
) -> TrainResult:
    """Trains (or resumes) a CycleGAN run and returns where it ended.

    Args:
      config: the run configuration (`auto` precision is resolved here, see `rundir`).
      output_dir: the run directory (see `rundir` for its layout and rules).
      resume: continue from the newest checkpoint in `output_dir` if there is one.
      overwrite: with resume=False, delete an existing run's artefacts in `output_dir` first.
      verbose: 0 silent, 1 progress bar per epoch (a line per log_steps when not on a terminal).
      allow_data_change: resume even if the training images differ from the run's data.json.

    Returns:
      A `TrainResult`.

    Raises:
      errors.UserError (RunDirError, data.DataError, checkpoints.CheckpointError, ConfigError).
      NonFiniteLossError: a loss became NaN/inf (no checkpoint of the bad weights is written).
      Interrupted: SIGINT/SIGTERM arrived; a checkpoint of the last finished step was saved.
    """
    t_start = time.perf_counter()
    # 1. Open the run: decide what the start means (nothing written yet), data, precision.
    mode = rundir.check(config, output_dir, resume, overwrite)
    configure_tensorflow(config.train)
    unpaired = data.load(config.data, seed=config.train.seed)
    record = rundir.DataRecord.of(
        config.data.dataset,
        unpaired.train_names("a"),
        unpaired.train_names("b"),
        unpaired.steps_per_epoch,
    )
    if mode == rundir.RESUME:
        rundir.check_data(output_dir, record, allow_data_change)
    config, precision_note = rundir.resolve_precision(config, output_dir, mode == rundir.RESUME)
    strategy = trainer.make_strategy(config.train.strategy)
    if config.data.batch_size % strategy.num_replicas_in_sync:
        raise errors.ConfigError(
            f"batch_size must be divisible by the {strategy.num_replicas_in_sync} replicas. "
            f"Received: batch_size={config.data.batch_size}"
        )

    # 2. The state: built before anything is written, so a failing build leaves nothing behind.
    model = trainer.CycleGAN(config, unpaired.steps_per_epoch, strategy)
    with rundir.lock(output_dir):
        # 3. The run directory and the restore.
        rundir.create(config, output_dir, mode, record)
        ckpt = checkpoints.Checkpointer(
            model.checkpoint_objects(), output_dir, config.train.keep_checkpoints
        )
        restored = ckpt.restore_latest() if mode == rundir.RESUME else None
        if restored and int(model.seed.numpy()) != config.train.seed:
            raise RunDirError(f"{restored} was trained with seed {int(model.seed.numpy())}")
        start = int(model.step.numpy())
        cadence = Cadence.of(config, unpaired.steps_per_epoch)
        _say(
            verbose,
            f"{'Resuming from ' + restored if restored else 'Starting'} at step {start}/"
            f"{cadence.total} ({cadence.steps_per_epoch} steps per epoch; |A|={unpaired.num_a}, "
            f"|B|={unpaired.num_b}; {strategy.num_replicas_in_sync} replica(s)) in {output_dir}",
        )
        _say(verbose, f"Devices: {precision_lib.devices().describe()}; precision {precision_note}.")

        # 4. The loop.
        loop = _Loop(model, ckpt, unpaired, cadence, output_dir, config, verbose, t_start)
        loop.run(start, restored)

    # 5. The end: the score on the built-in dataset.
    score = (
        _score_builtin(model, unpaired.builtin_dir, output_dir, verbose)
        if unpaired.builtin_dir
        else None
    )
    if loop.steps_run == 0:
        _say(
            verbose,
            f"Nothing to do: the run is complete at step {start} (raise --n_epochs or "
            "--max_steps to train longer).",
        )
    return TrainResult(
        run_dir=output_dir,
        step=max(loop.step, start),
        epoch=int(model.epoch.numpy()),
        checkpoint=loop.last_saved or ckpt.latest,
        metrics=loop.last_means,
        score=score,
        first_step_seconds=loop.first_step_seconds,
        steps_per_second=loop.steps_per_second,
        config=config,
    )


class _Loop:
    """Runs steps `start+1 .. cadence.total`, acting on `Cadence.events` after each."""

    def __init__(self, model, ckpt, unpaired, cadence, output_dir, config, verbose, t_start):
        self.model, self.ckpt, self.cadence = model, ckpt, cadence
        self.unpaired, self.output_dir, self.config = unpaired, output_dir, config
        self.verbose, self.t_start = verbose, t_start
        self.step, self.steps_run = 0, 0
        self.last_saved, self.last_means = None, {}
        self.first_step_seconds, self.steps_per_second = None, None
        # Host seconds of the last 100 steps (data + dispatch; not grids or saves): the it/s shown.
        self.durations = collections.deque(maxlen=100)
        self.pending: list[tuple[int, dict[str, tf.Tensor]]] = []  # on-device, not yet checked
        self.window: dict[str, list[float]] = {}
        self.bar = None

    def run(self, start: int, restored: str | None) -> None:
        self.step, self.last_saved = start, restored
        total, model = self.cadence.total, self.model
        samples = _grid_samples(self.unpaired, NUM_GRID_SAMPLES)
        # A finite stream (exactly the steps left): at the end its prefetch threads have drained,
        # so releasing the iterator cannot wait on in-flight work.
        stream = self.unpaired.train(start_step=start, num_steps=max(total - start, 1))
        batches = iter(model.strategy.experimental_distribute_dataset(stream))
        writer = tf.summary.create_file_writer(os.path.join(self.output_dir, rundir.LOGS))
        t_loop = None
        with _StopSignals() as stop, writer.as_default():
            while self.step < total:
                self._maybe_new_bar()
                t_step = time.perf_counter()
                self.pending.append((self.step + 1, model.train_step(*next(batches))))
                self.step += 1
                self.steps_run += 1
                if self.first_step_seconds is None:  # the first step is mostly tracing
                    self.first_step_seconds = time.perf_counter() - self.t_start
                    t_loop = time.perf_counter()
                    _say(
                        self.verbose,
                        f"First step finished {self.first_step_seconds:.1f} s after start.",
                    )
                else:
                    self.durations.append(time.perf_counter() - t_step)
                events = self.cadence.events(self.step)
                if stop.signum is not None or events & {"log", "save"}:
                    self._drain()  # never save unchecked weights
                if "log" in events:
                    self._log()
                if "epoch_end" in events:
                    _epoch_end(
                        model, samples, self.output_dir, self.cadence, self.step, self.verbose
                    )
                if "keep_epoch" in events:
                    self.ckpt.keep_generators(self.cadence.epoch_of(self.step - 1) + 1)
                if "save" in events or stop.signum is not None:
                    self.last_saved = self.ckpt.save(self.step)
                if stop.signum is not None:
                    writer.flush()
                    raise Interrupted(stop.signum, self.step, self.last_saved)
                self._update_bar()
        writer.flush()
        if self.steps_run > 1 and t_loop is not None:
            self.steps_per_second = (self.steps_run - 1) / (time.perf_counter() - t_loop)

    def _drain(self) -> None:
        """Pulls the pending steps' metrics to the host (one sync) and checks them."""
        for step, values in self.pending:
            metrics = {k: float(v) for k, v in values.items()}
            bad = [k for k, v in metrics.items() if not math.isfinite(v)]
            if bad:
                raise NonFiniteLossError(
                    f"Loss {bad[0]} became {metrics[bad[0]]} at step {step}; stopped without "
                    f"saving (last good checkpoint: {self.last_saved}). Try a lower --lr or "
                    "--precision=float32."
                )
            for k, v in metrics.items():
                self.window.setdefault(k, []).append(v)
        self.pending = []

    def _log(self) -> None:
        self.last_means = _log_scalars(self.output_dir, self.step, self.window)
        self.window = {}
        if self.verbose and self.bar is None:  # not a terminal: one line per log interval
            _print_progress(self.step, self.cadence.total, self.durations, self.last_means)

    def _maybe_new_bar(self) -> None:
        spe, step = self.cadence.steps_per_epoch, self.step
        if step != self.cadence.epoch_of(step) * spe and self.steps_run:
            return  # inside an epoch that already has its bar
        epoch = self.cadence.epoch_of(step)
        target = min((epoch + 1) * spe, self.cadence.total) - epoch * spe
        self.bar = _progress_bar(self.verbose, epoch, self.config.optim.total_epochs, target)
        if self.bar is not None and step > epoch * spe:
            self.bar.update(step - epoch * spe)

    def _update_bar(self) -> None:
        if self.bar is None:
            return
        shown = [(k, self.last_means[k]) for k in _SHOWN if k in self.last_means]
        if self.durations:
            shown.insert(0, ("it/s", len(self.durations) / sum(self.durations)))
        epoch_start = self.cadence.epoch_of(self.step - 1) * self.cadence.steps_per_epoch
        self.bar.update(self.step - epoch_start, shown)


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
    with open(os.path.join(output_dir, rundir.METRICS_FILE), "a") as f:
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


def _epoch_end(model, samples, output_dir, cadence, step, verbose) -> str:
    epoch = cadence.epoch_of(step - 1)
    rows = model.cycle_images(samples["real_a"], samples["real_b"])
    path = os.path.join(output_dir, rundir.IMAGES, f"epoch_{epoch + 1:03d}.png")
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
    with open(os.path.join(output_dir, rundir.SCORE_FILE), "w") as f:
        json.dump(result, f, indent=2)
    if verbose:
        print(synthetic.format_scores(result["g_ab"], result["identity"]), flush=True)
    return result
