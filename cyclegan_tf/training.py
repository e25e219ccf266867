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
import contextlib
import dataclasses
import json
import math
import os
import signal
import sys
import time
from typing import Any

import numpy as np
import tensorflow as tf

from cyclegan_tf import (
    checkpoints,
    cluster,
    data,
    errors,
    evaluation,
    hardware,
    pretrained,
    rundir,
    synthetic,
    trainer,
    visualize,
)
from cyclegan_tf import config as config_lib
from cyclegan_tf import precision as precision_lib

NUM_GRID_SAMPLES = 2
RunDirError = rundir.RunDirError


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; nothing was saved after the last good checkpoint."""


class Interrupted(Exception):
    """SIGINT/SIGTERM arrived; a checkpoint was saved (`path`; None when stopped before training
    started and the run had none). `signum` says which signal, `by_peer` that it reached another
    worker of the cluster."""

    def __init__(self, signum: int, step: int, path: str | None, by_peer: bool = False):
        cause = "another worker's signal" if by_peer else f"signal {signum}"
        super().__init__(f"stopped by {cause} at step {step}; checkpoint {path}")
        self.signum, self.step, self.path, self.by_peer = signum, step, path, by_peer


@dataclasses.dataclass
class _Saved:
    """The run's last checkpoint as this process knows it: what a stop reports."""

    path: str | None = None
    step: int = 0


@dataclasses.dataclass
class TrainResult:
    """What `train` did (`cyclegan_tf.train` returns it).

    Attributes:
      run_dir: the run directory.
      step: the global step reached.
      epoch: the model's epoch counter when training ended.
      checkpoint: the last checkpoint written (path prefix), or None.
      metrics: the last logged losses ("g/adv_ab", "d/a", ...), floats.
      score: built-in dataset: the ground-truth score of g_ab and of the identity
        (score.json); else None.
      first_step_seconds: from the start of the loop to the end of the first step.
      steps_per_second: over the steps after the first.
      config: the Config as resolved (precision) and saved in config.json.
      is_chief: False on the other workers of a cluster (they wrote nothing).
      exported: with `export_dir` (`cyclegan_tf.train`): format -> direction -> path written.
      translated: with `export_dir`: the `translate.TranslateSummary` of the test split's A
        images translated into `<run_dir>/translated/` (None without a testA/ folder).
    """

    run_dir: str
    step: int
    epoch: int
    checkpoint: str | None
    metrics: dict[str, float]
    score: dict | None
    first_step_seconds: float | None
    steps_per_second: float | None
    config: config_lib.Config | None = None  # as resolved (precision) and saved in config.json
    is_chief: bool = True  # False on the other workers of a cluster (they wrote nothing)
    exported: dict[str, dict[str, str]] | None = None
    translated: Any = None  # translate.TranslateSummary (not imported: training needs no files)


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
    eval_epochs: int = 0  # FID/KID every this many epochs (train's eval_every_epochs); 0: never

    @classmethod
    def of(cls, config: config_lib.Config, steps_per_epoch: int, eval_epochs: int = 0) -> Cadence:
        total = config.optim.total_epochs * steps_per_epoch
        if config.train.max_steps is not None:
            total = min(total, config.train.max_steps)
        t = config.train
        return cls(steps_per_epoch, total, t.log_steps, t.save_steps, t.save_epoch, eval_epochs)

    def events(self, step: int) -> frozenset[str]:
        """A subset of {"log", "save", "epoch_end", "keep_epoch", "eval"} after the `step`."""
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
        epochs_done = step // self.steps_per_epoch
        if epoch_done and self.eval_epochs and epochs_done % self.eval_epochs == 0:
            out.add("eval")  # complete epochs only
        return frozenset(out)

    def epoch_of(self, step: int) -> int:
        """The 0-based epoch the step after `step` belongs to."""
        return step // self.steps_per_epoch


def configure_tensorflow(train_config: config_lib.TrainConfig) -> None:
    """The process-wide TensorFlow settings a training process runs with (`train` calls it first).

    - GPU memory on demand (`hardware.configure_gpus`), before anything initialises the GPUs.
    - Grappler as `hardware.grappler()` chooses: its meta optimizer off on a CPU-only machine
      (its graph rewrites cost 1.5-2 s before the first step and gain nothing per step there,
      bench/RESULTS.md "Grappler on" rows), on with a GPU (layout rewrites and fusions for
      cuDNN; not measured here, no GPU).
    - Op determinism when `train_config.deterministic` (exact resume across processes).

    Process-wide, so it is called where a process decides to train, not at import.
    """
    hardware.configure_gpus()
    if train_config.deterministic:
        tf.config.experimental.enable_op_determinism()
    hardware.apply_grappler()


def train(
    config: config_lib.Config,
    output_dir: str,
    resume: bool = True,
    overwrite: bool = False,
    verbose: int = 1,
    allow_data_change: bool = False,
    eval_every_epochs: int = 0,
    inception_graph: str | None = None,
    init_from: str | dict[str, str] | None = None,
) -> TrainResult:
    """Trains (or resumes) a CycleGAN run and returns where it ended.

    Args:
      config: the run configuration (`auto` precision is resolved here, see `rundir`).
      output_dir: the run directory (see `rundir` for its layout and rules).
      resume: continue from the newest checkpoint in `output_dir` if there is one.
      overwrite: with resume=False, delete an existing run's artefacts in `output_dir` first.
      verbose: 0 silent, 1 progress bar per epoch (a line per log_steps when not on a terminal).
      allow_data_change: resume even if the training images differ from the run's data.json.
      eval_every_epochs: K > 0: FID/KID of both directions on the test split after every K-th
        epoch, logged as `eval/*` and the best generators kept in `<run>/best/`
        (`evaluation.TrainingEvaluator`); 0: off.
      inception_graph: the Inception graph file for eval_every_epochs (None: the cached copy).
      init_from: a NEW run's generators start from this run directory or PyTorch .pth file (or
        {direction: .pth}; or a Keras weights file of keras-io's generator); see
        `pretrained.init_generators`. Recorded in `<run>/init.json`. The source's generator
        variant (`pretrained.source_architecture`) replaces the config's.

    Returns:
      A `TrainResult`.

    Raises:
      errors.UserError (RunDirError, data.DataError, checkpoints.CheckpointError, ConfigError).
      NonFiniteLossError: a loss became NaN/inf (no checkpoint of the bad weights is written).
      Interrupted: SIGINT/SIGTERM arrived; a checkpoint of the last finished step was saved (on
        a cluster: on any worker, also during the start-up; `cluster.STOP`).
      cluster.PeerLost: another worker of the cluster stopped without the others.
    """
    t_start = time.perf_counter()
    if init_from:  # the generator variant of imported weights (no flags): from the source
        config = pretrained.source_architecture(config, init_from)
    task = cluster.Task.from_environment(config.train.strategy)
    saved = _Saved()
    signals = cluster.STOP.handling(True) if task.multi_worker else contextlib.nullcontext()
    with signals:
        try:
            return _train(
                config,
                output_dir,
                (resume, overwrite, allow_data_change),
                (eval_every_epochs, inception_graph),
                init_from,
                verbose,
                t_start,
                saved,
            )
        except cluster.Stopped as e:  # at a start-up agreement: the last checkpoint is kept
            raise Interrupted(e.signum, saved.step, saved.path, e.by_peer) from None
        except tf.errors.OpError as e:
            if not cluster.peer_lost(e, task):
                raise
            raise cluster.PeerLost(e, saved.path, saved.step) from e


def _train(config, output_dir, start_flags, eval_flags, init_from, verbose, t_start, saved):
    """`train`'s phases; `saved` follows the run's last checkpoint."""
    resume, overwrite, allow_data_change = start_flags
    eval_every_epochs, inception_graph = eval_flags
    # 1. Open the run. The process settings and the strategy first (a multi-worker strategy must
    #    exist before TensorFlow runs anything); then what the start means (decided by the chief
    #    alone, nothing written yet), the data and the precision, agreed by all workers.
    configure_tensorflow(config.train)
    strategy = trainer.make_strategy(config.train.strategy)
    task = cluster.Task.of(strategy)
    if task.multi_worker:
        cluster.STOP.joined()  # every worker has joined the cluster's runtime
    eval_request = (eval_every_epochs if task.is_chief else 0, inception_graph)  # the chief's
    opened = _open(
        config, output_dir, resume, overwrite, allow_data_change, task, strategy, eval_request
    )
    mode, config, precision_note, unpaired, record, file_checks, graph = opened
    evaluator = evaluation.training_evaluator(  # the chief's: it writes best/ and the logs
        unpaired, output_dir, eval_request[0], graph, verbose
    )

    # 2. The state: built before anything is written, so a failing build leaves nothing behind.
    model = trainer.CycleGAN(config, unpaired.steps_per_epoch, strategy)
    init = _init_generators(model, init_from, config, output_dir, mode, verbose)
    with rundir.lock(output_dir) if task.is_chief else contextlib.nullcontext():
        # 3. The run directory (the chief's alone) and the restore.
        ckpt, restored = _create_and_restore(
            model, config, output_dir, mode, (record, file_checks, init), task, strategy, saved
        )
        start = int(model.step.numpy())
        cadence = Cadence.of(
            config, unpaired.steps_per_epoch, eval_every_epochs if evaluator else 0
        )
        _say(
            verbose,
            f"{'Resuming from ' + restored if restored else 'Starting'} at step {start}/"
            f"{cadence.total} ({cadence.steps_per_epoch} steps per epoch; |A|={unpaired.num_a}, "
            f"|B|={unpaired.num_b}; {strategy.num_replicas_in_sync} replica(s)) in {output_dir}"
            + (f"; this is {task.describe()}" if task.multi_worker else ""),
        )
        _say(verbose, f"Devices: {hardware.describe()}; precision {precision_note}.")

        # 4. The loop (the other workers of a cluster train, save and keep quiet).
        loop = _Loop(
            model,
            ckpt,
            unpaired,
            cadence,
            output_dir,
            config,
            verbose if task.is_chief else 0,
            t_start,
        )
        loop.evaluator, loop.task, loop.saved = evaluator, task, saved
        try:
            loop.run(start, restored)
        finally:
            if evaluator:
                evaluator.close()

    # 5. The end: the score on the built-in dataset (the chief's; the other workers wait, so
    #    that all end together).
    with cluster.Agreement(task, strategy, "finish the run", (), stoppable=False):
        score = (
            _score_builtin(model, unpaired.builtin_dir, output_dir, verbose)
            if unpaired.builtin_dir and task.is_chief
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
        is_chief=task.is_chief,
    )


def _init_generators(model, init_from, config, output_dir, mode, verbose) -> dict | None:
    """Phase 2b: a new run's generators from `init_from` (refused for a run it did not start)."""
    if not init_from:
        return None
    generators = {"a2b": model.g_ab, "b2a": model.g_ba}
    resuming = mode == rundir.RESUME
    init = pretrained.init_generators(generators, init_from, config.model, output_dir, resuming)
    _say(verbose, f"Generators {'/'.join(init['directions'])} from {init['init_from']}.")
    return init


def _create_and_restore(model, config, output_dir, mode, records, task, strategy, saved):
    """Phase 3: the chief writes the run directory and chooses the checkpoint (`restore_latest`
    skips damaged ones); every other worker restores exactly that one.

    Returns:
      (checkpoints.Checkpointer, the restored checkpoint path or None).
    """
    record, file_checks, init = records
    with cluster.Agreement(task, strategy, "prepare the run", ("step",)) as chosen:
        if task.is_chief:
            rundir.create(config, output_dir, mode, record)
            file_checks.save_to(os.path.join(output_dir, rundir.FILE_CHECKS))
            if init and mode != rundir.RESUME:
                pretrained.write_init_record(output_dir, init)
        keep = config.train.keep_checkpoints
        ckpt = checkpoints.Checkpointer(model.checkpoint_objects(), output_dir, keep, task.is_chief)
        restored = ckpt.restore_latest() if mode == rundir.RESUME and task.is_chief else None
        chosen.share(step=int(model.step.numpy()) if restored else -1)
        if restored:
            saved.path, saved.step = restored, int(model.step.numpy())
    with cluster.Agreement(task, strategy, "restore the chief's checkpoint", ()):
        if not task.is_chief and chosen.chief["step"] >= 0:
            restored = ckpt.restore(
                os.path.join(rundir.checkpoint_dir(output_dir), f"ckpt-{chosen.chief['step']}")
            )
            saved.path, saved.step = restored, chosen.chief["step"]
    if restored and int(model.seed.numpy()) != config.train.seed:
        raise RunDirError(f"{restored} was trained with seed {int(model.seed.numpy())}")
    return ckpt, restored


_MODES = (rundir.NEW, rundir.RESUME, rundir.OVERWRITE)


def _open(config, output_dir, resume, overwrite, allow_data_change, task, strategy, eval_request):
    """Phase 1 of `train`: what the start means, the Inception graph, the data and the precision.

    The chief alone judges the run directory (`rundir.check`), finds the Inception graph of
    `eval_request` ((eval_every_epochs, inception_graph); before the data, so that a missing graph
    is an error within seconds: `evaluation.inception_graph_for_training`) and resolves the
    precision; every worker loads the data (reusing the chief's `file_checks.json` when it can
    read it). All then agree (`cluster.Agreement`): the others take the chief's decisions, and
    all stop when a worker failed, was started with another config, or sees other training
    images.

    Returns:
      (mode, config with a concrete precision, precision note, Unpaired, DataRecord, FileChecks,
      the Inception graph's path or None).
    """
    if config.data.batch_size % strategy.num_replicas_in_sync:
        raise errors.ConfigError(
            f"batch_size must be divisible by the {strategy.num_replicas_in_sync} replicas. "
            f"Received: batch_size={config.data.batch_size}"
        )
    given, mode, note, graph = config, None, None, None
    file_checks = data.FileChecks.read(os.path.join(output_dir, rundir.FILE_CHECKS))
    keys = ("mode", "precision", "config", "data")
    with cluster.Agreement(task, strategy, "open the run", keys) as opened:
        if task.is_chief:
            mode = rundir.check(config, output_dir, resume, overwrite)
            graph = evaluation.inception_graph_for_training(*eval_request)
        unpaired = data.load(config.data, seed=config.train.seed, file_checks=file_checks)
        record = rundir.DataRecord.of(
            config.data.dataset,
            unpaired.train_names("a"),
            unpaired.train_names("b"),
            unpaired.steps_per_epoch,
        )
        if mode == rundir.RESUME:
            rundir.check_data(output_dir, record, allow_data_change)
        if task.is_chief:
            config, note = rundir.resolve_precision(config, output_dir, mode == rundir.RESUME)
        opened.share(
            mode=_MODES.index(mode) if mode else 0,
            precision=precision_lib.POLICIES.index(config.train.precision) if note else 0,
            # Where each worker finds the data may differ; the images may not (`data`).
            config=cluster.digest(given.replace(dataset="-", data_dir=None).to_json()),
            data=cluster.digest(record.fingerprint),
        )
    chief = opened.chief
    if any(row["config"] != chief["config"] for row in opened.rows):
        raise cluster.ClusterError(
            "The workers were started with different configs; start every worker with the same "
            "flags (only --dataset's path may differ)."
        )
    if any(row["data"] != chief["data"] for row in opened.rows):
        raise data.DataError(
            "The workers see different training images (names or decodable files differ); give "
            "every worker the same dataset."
        )
    if not task.is_chief:
        mode = _MODES[chief["mode"]]
        precision = precision_lib.POLICIES[chief["precision"]]
        config, note = config.replace(precision=precision), f"{precision} (the chief's)"
    return mode, config, note, unpaired, record, file_checks, graph


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
        self.evaluator = None  # evaluation.TrainingEvaluator on "eval" events (set by train())
        self.task = cluster.Task()  # the cluster's chief alone writes logs, grids and metrics
        self.saved = _Saved()  # the last checkpoint, shared with train() (set by train())

    def run(self, start: int, restored: str | None) -> None:
        self.step, self.last_saved = start, restored
        total, model, chief = self.cadence.total, self.model, self.task.is_chief
        samples = grid_samples(self.unpaired, NUM_GRID_SAMPLES) if chief else None
        # A finite stream (exactly the steps left): at the end its prefetch threads have drained,
        # so releasing the iterator cannot wait on in-flight work. Each input pipeline (one per
        # worker) computes only the samples of its own replicas.
        steps = max(total - start, 1)
        batches = iter(
            model.strategy.distribute_datasets_from_function(
                lambda context: self.unpaired.train(start, steps, input_context=context)
            )
        )
        logs = os.path.join(self.output_dir, rundir.LOGS)
        writer = tf.summary.create_file_writer(logs) if chief else tf.summary.create_noop_writer()
        # Nothing here waits for the device between steps: metrics are pulled at the log cadence
        # (`_drain`), the bar and cadences are host values, and across workers the agreed stop
        # flag is read one step late (`cluster.StopVote`).
        vote = cluster.StopVote(self.task, trainer.STOP_KEY)
        t_loop = None
        stop = cluster.STOP
        with stop.handling(self.task.multi_worker), writer.as_default():
            while self.step < total:
                self._maybe_new_bar()
                t_step = time.perf_counter()
                signalled = stop.signum is not None
                outputs = model.train_step(*next(batches), *vote.inputs(signalled))
                stopping = vote.after_step(outputs, signalled)
                self.pending.append((self.step + 1, outputs))
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
                if stopping or events & {"log", "save", "eval"}:
                    self._drain()  # never save (nor keep as best) unchecked weights
                if "log" in events:
                    self._log()
                if "epoch_end" in events and chief:
                    _epoch_end(
                        model, samples, self.output_dir, self.cadence, self.step, self.verbose
                    )
                if "eval" in events and self.evaluator is not None:
                    self.evaluator(model, self.step)
                if "keep_epoch" in events:
                    self.ckpt.keep_generators(self.cadence.epoch_of(self.step - 1) + 1)
                if stopping:
                    stop.agreed()  # every worker saves this step and ends
                if "save" in events or stopping:  # every worker: saving is collective
                    self.last_saved = self.ckpt.save(self.step)
                    self.saved.path, self.saved.step = self.last_saved, self.step
                if stopping:
                    writer.flush()
                    signum = stop.signum or signal.SIGTERM
                    raise Interrupted(signum, self.step, self.last_saved, stop.signum is None)
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
        self.last_means = _log_scalars(self.output_dir, self.step, self.window, self.task.is_chief)
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


def _log_scalars(output_dir: str, step: int, window: dict[str, list[float]], write=True) -> dict:
    """The window's mean of every scalar, written to TensorBoard and metrics.jsonl if `write`."""
    means = {k: float(np.mean(v)) for k, v in window.items()}
    if not write:
        return means
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


def grid_samples(unpaired, n: int) -> dict[str, np.ndarray]:
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
    result = synthetic.score_translation(lambda x: model.translate(x, "a2b"), builtin_dir)
    result["step"] = int(model.step.numpy())
    with open(os.path.join(output_dir, rundir.SCORE_FILE), "w") as f:
        json.dump(result, f, indent=2)
    if verbose:
        print(synthetic.format_scores(result["g_ab"], result["identity"]), flush=True)
    return result
