"""The one place that builds `tf.train.Checkpoint`s and restores them.

A run directory holds `config.json` and `checkpoints/` (a `tf.train.CheckpointManager` directory:
`ckpt-<step>.index/.data-*` plus the `checkpoint` state file). The checkpoint's object names are the
`CycleGAN.checkpoint_objects()` keys (g_ab, g_ba, d_a, d_b, g_optimizer, d_optimizer, pool_a,
pool_b, step, epoch, seed), so `restore_generators` can load just the generators for export and
inference. Every `save_epoch` epochs the generators are also written to
`checkpoints/epochs/epoch_<NNN>` (outside the rotation, kept like the official code keeps its
epoch files); `resolve_checkpoint(run_dir, "epoch_5")` finds them.

Failure policy: a latest checkpoint whose files are damaged (truncated, corrupt or missing) is
skipped with one warning line naming the steps lost, and the previous one is used; when none can
be read, `CheckpointError` says so. A checkpoint that reads fine but holds another model (another
config or version) is not damage: it raises `CheckpointError` at once, without falling back. A
restore never silently ignores missing variables of the objects it restores.

Storage that fails for a moment is not damage either. GCS and NFS answer `UnavailableError`,
`DeadlineExceededError` or `AbortedError` now and then; every checkpoint read and write is retried
on those with backoff (`Retry`: 0.5, 1, 2, 4 s), and one that persists is `StorageUnavailableError`
(never a fallback to an older checkpoint: the newer one may be perfectly fine).

Multi-worker training (`cluster.py`): saving is collective, so every worker saves; only the
chief's files land in the run directory. The other workers write each save to a temporary
directory of their own and delete it at once (tf.distribute's pattern for non-chief workers),
and restore the checkpoint the chief chose (`restore`), read from the shared run directory.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable

import tensorflow as tf
from absl import logging

from cyclegan_tf import errors, rundir

# `<run>/best/best.json` names the checkpoint in best/ (written by `evaluate.TrainingEvaluator`).
BEST = "best"
BEST_FILE = "best.json"


class CheckpointError(errors.UserError):
    """A checkpoint or run directory is unusable; the message says which and what to do."""


class StorageUnavailableError(CheckpointError):
    """Reading or writing a checkpoint kept failing with a transient storage error (`TRANSIENT`)
    through every retry: the storage is unavailable, which says nothing about the files."""


# What storage answers when it is briefly unavailable (GCS, NFS): retried, never taken for damage.
TRANSIENT = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError)


@dataclasses.dataclass(frozen=True)
class Retry:
    """Calls a checkpoint read or write again after a transient storage error (`TRANSIENT`).

    Attributes:
      delays: seconds slept before each retry; their number is the number of retries.
      sleep: how to sleep (tests pass a recorder, so that nothing sleeps).
    """

    delays: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
    sleep: Callable[[float], None] = time.sleep

    def __call__(self, fn: Callable[[], object], what: str):
        """`fn()`, retried on `TRANSIENT` errors.

        Args:
          fn: the read or write; it must be safe to call again after it failed.
          what: what `fn` does, for the messages ("write checkpoint /run/checkpoints/ckpt-8").

        Raises:
          StorageUnavailableError: still a transient error after the last retry.
        """
        for attempt, delay in enumerate((*self.delays, None), start=1):
            try:
                return fn()
            except TRANSIENT as e:
                if delay is None:
                    raise StorageUnavailableError(
                        f"Could not {what}: {type(e).__name__} ({_first_line(e)}) on each of "
                        f"{attempt} attempts over {sum(self.delays):g} s. The storage is "
                        "unavailable, the checkpoints are not damaged: re-run the same command "
                        "once it is back."
                    ) from e
                logging.warning(
                    "Could not %s: %s (%s); retrying in %g s (retry %d of %d).",
                    what,
                    type(e).__name__,
                    _first_line(e),
                    delay,
                    attempt,
                    len(self.delays),
                )
                self.sleep(delay)


# Every read and write of this module goes through RETRY (looked up at each call: tests replace it).
RETRY = Retry()


def checkpoint_dir(run_dir: str) -> str:
    return rundir.checkpoint_dir(run_dir)


class Checkpointer:
    """Saves and restores a full training state under `<run_dir>/checkpoints`.

    Args:
      objects: name -> trackable (e.g. `CycleGAN.checkpoint_objects()`).
      run_dir: the run directory.
      max_to_keep: checkpoints kept (>= 2 so a corrupt latest one has a fallback).
      chief: False on a multi-worker cluster's other workers: saves go to a temporary directory
        (created by each save, deleted after it); paths returned are the chief's.
    """

    def __init__(self, objects: dict, run_dir: str, max_to_keep: int = 3, chief: bool = True):
        self.run_dir = run_dir
        self.checkpoint = tf.train.Checkpoint(**objects)
        # Not created here: a worker that dies between saves leaves nothing behind.
        self._scratch = None if chief else _scratch_dir()
        directory = checkpoint_dir(self._scratch or run_dir)
        _probe_state(directory)  # the manager takes an unreadable state file for no checkpoint
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, directory, max_to_keep=max(2, max_to_keep)
        )
        generators = {k: objects[k] for k in ("g_ab", "g_ba") if k in objects}
        self._generators = tf.train.Checkpoint(**generators) if generators else None
        if self._generators is not None:
            # `write` saves no save_counter unless it exists, and a restore with a fresh
            # tf.train.Checkpoint then finds that object unbound: create it now.
            _ = self._generators.save_counter

    def keep_generators(self, epoch: int) -> str | None:
        """Writes the generators as `checkpoints/epochs/epoch_<NNN>`, outside the rotation.

        The official code keeps every `save_epoch_freq` epoch; the rotation of the full state
        (keep_checkpoints) would delete them. The generators are what translation and export need
        (~91 MB at 256 px, against ~420 MB for the full state with optimizers and pools).
        """
        if self._generators is None:
            return None
        name = f"epoch_{epoch:03d}"
        prefix = os.path.join(rundir.epoch_checkpoint_dir(self._scratch or self.run_dir), name)
        path = RETRY(lambda: self._generators.write(prefix), f"write checkpoint {prefix}")
        return self._chief_path(path, rundir.epoch_checkpoint_dir(self.run_dir), name)

    def save(self, step: int) -> str:
        """Writes checkpoint `ckpt-<step>` and returns its path prefix.

        Saving again at the step of the latest checkpoint writes nothing (the state is the one
        already saved), so the loop's cadences (steps, epochs, end, signal) may coincide freely.
        """
        latest = self.manager.latest_checkpoint
        if latest is not None and os.path.basename(latest) == f"ckpt-{step}":
            return self._chief_path(latest, checkpoint_dir(self.run_dir), f"ckpt-{step}", False)
        counter = self.checkpoint.save_counter
        writes = int(counter.numpy())

        def save():  # the manager counts the write before it; a retry is still one write
            counter.assign(writes)
            return self.manager.save(checkpoint_number=step)

        path = RETRY(save, f"write checkpoint {self.manager.directory}/ckpt-{step}")
        return self._chief_path(path, checkpoint_dir(self.run_dir), f"ckpt-{step}")

    def _chief_path(self, path: str, chief_dir: str, name: str, written: bool = True) -> str:
        """`path` on the chief; elsewhere the same name in the chief's directory, once this
        worker's temporary copy is deleted."""
        if self._scratch is None:
            return path
        if written:
            shutil.rmtree(self._scratch, ignore_errors=True)
        return os.path.join(chief_dir, name)

    @property
    def latest(self) -> str | None:
        path = self.manager.latest_checkpoint
        if path is None or self._scratch is None:
            return path
        return os.path.join(checkpoint_dir(self.run_dir), os.path.basename(path))

    def restore(self, path: str) -> str:
        """Restores exactly `path`: a worker following the chief's choice (`restore_latest`).

        Raises:
          CheckpointError: it cannot be read here (the message names the usual cause: a run
            directory that is not on a filesystem every worker shares) or holds another model.
        """
        try:
            RETRY(
                lambda: self.checkpoint.restore(path).assert_existing_objects_matched(),
                f"read checkpoint {path}",
            )
        except StorageUnavailableError:
            raise
        except (AssertionError, ValueError, tf.errors.OpError, IndexError, OSError) as e:
            raise CheckpointError(
                f"This worker cannot restore {path}, which the chief restored ({_first_line(e)}); "
                "every worker needs the same --output_dir on a filesystem they all share, and "
                "the same flags."
            ) from e
        return path

    def restore_latest(self) -> str | None:
        """Restores the newest readable checkpoint.

        Returns:
          The restored path prefix, or None if the directory holds no checkpoint.

        Raises:
          CheckpointError: checkpoints exist but none of them can be read.
        """
        candidates = list(reversed(self.manager.checkpoints))
        if not candidates:
            return None
        return _restore_newest(
            candidates,
            lambda path: RETRY(
                lambda: self.checkpoint.restore(path).assert_existing_objects_matched(),
                f"read checkpoint {path}",
            ),
            "resumed from",
        )


def _scratch_dir() -> str:
    """A temporary directory name for a non-chief worker's saves (not created here)."""
    return os.path.join(
        tempfile.gettempdir(), f"cyclegan_tf_worker_{os.getpid()}_{uuid.uuid4().hex}"
    )


def resolve_checkpoint(run_dir: str, checkpoint: str | None = None) -> str:
    """Returns the checkpoint path prefix to load from a run directory.

    Args:
      run_dir: a training run directory.
      checkpoint: None for the latest; a step number ("1200"), a name ("ckpt-1200"), a kept
        epoch ("epoch_5"), "best" (the generators with the best mean FID of
        `train --eval_every_epochs`) or a path prefix.

    Raises:
      CheckpointError: no such run or checkpoint.
    """
    if checkpoint == BEST:
        return _best_checkpoint(run_dir)
    ckpt_dir = checkpoint_dir(run_dir)
    if not os.path.isdir(ckpt_dir):
        raise CheckpointError(
            f"No checkpoints in {run_dir!r}: expected a run directory written by "
            "`cyclegan-tf train` (with a checkpoints/ folder)."
        )
    if checkpoint is None:
        _probe_state(ckpt_dir)  # latest_checkpoint takes an unreadable state file for none
        path = tf.train.latest_checkpoint(ckpt_dir)
        if path is None:
            raise CheckpointError(f"{ckpt_dir!r} holds no checkpoint yet; train first.")
        return path
    name = f"ckpt-{checkpoint}" if str(checkpoint).isdigit() else str(checkpoint)
    if name.startswith("epoch_") and name[6:].isdigit():  # a kept epoch: epoch_5, epoch_005
        name = os.path.join(rundir.EPOCH_CHECKPOINTS, f"epoch_{int(name[6:]):03d}")
    path = (
        name
        if os.path.isabs(name) or os.path.exists(name + ".index")
        else (os.path.join(ckpt_dir, name))
    )
    if not tf.io.gfile.exists(path + ".index"):
        available = tf.train.get_checkpoint_state(ckpt_dir)
        names = [
            os.path.basename(p) for p in (available.all_model_checkpoint_paths if available else [])
        ]
        epochs_dir = rundir.epoch_checkpoint_dir(run_dir)
        if os.path.isdir(epochs_dir):
            names += sorted(f[:-6] for f in os.listdir(epochs_dir) if f.endswith(".index"))
        raise CheckpointError(
            f"Checkpoint {checkpoint!r} not found in {ckpt_dir!r}. Available: {', '.join(names)}"
        )
    return path


def restore_generators(path: str, g_ab=None, g_ba=None) -> None:
    """Loads generator weights (either or both) from a full training checkpoint.

    Args:
      path: a checkpoint path prefix (see `resolve_checkpoint`).
      g_ab: a Keras model built with the run's config, or None.
      g_ba: likewise.

    Raises:
      CheckpointError: the checkpoint is unreadable or does not match the models.
    """
    try:
        _restore_generators_raw(path, g_ab, g_ba)
    except StorageUnavailableError:
        raise
    except (tf.errors.OpError, ValueError, AssertionError, IndexError, OSError) as e:
        raise CheckpointError(
            f"Could not load generators from checkpoint {path!r}: {_first_line(e)}. Is config.json "
            "the one this run was trained with?"
        ) from e


def restore_latest_generators(run_dir: str, g_ab=None, g_ba=None) -> str:
    """Loads the generators of the newest readable checkpoint, as training's resume chooses it.

    A damaged latest checkpoint (truncated or corrupt files) is skipped with a warning for the
    previous one, like `Checkpointer.restore_latest`; a checkpoint that reads but holds another
    model is an error at once.

    Returns:
      The path prefix the weights came from.

    Raises:
      CheckpointError: no checkpoint, none readable, or weights that do not fit the models.
    """
    latest = resolve_checkpoint(run_dir)  # raises when there is none, so the state exists
    # get_checkpoint_state joins relative entries with the directory it was given (relative too
    # when the run directory is, e.g. `--output_dir=runs/quick`): used as they come. A state
    # file that names only the latest checkpoint has no list of all of them.
    state = tf.train.get_checkpoint_state(checkpoint_dir(run_dir))
    candidates = list(reversed(state.all_model_checkpoint_paths)) or [latest]
    return _restore_newest(
        candidates, lambda path: _restore_generators_raw(path, g_ab, g_ba), "loaded"
    )


def _restore_generators_raw(path: str, g_ab, g_ba) -> None:
    objects = {k: v for k, v in (("g_ab", g_ab), ("g_ba", g_ba)) if v is not None}

    def restore():
        status = tf.train.Checkpoint(**objects).restore(path)
        status.expect_partial()
        status.assert_existing_objects_matched()

    RETRY(restore, f"read checkpoint {path}")


def _restore_newest(candidates: list[str], restore, verb: str) -> str:
    """Restores the newest of `candidates` (newest first) that can be read.

    A damaged checkpoint (`_damaged`: missing, truncated or corrupt files) is skipped for the
    previous one, with one warning line naming the step that is lost. Anything else is an error
    at once: a checkpoint that reads but whose objects do not fit (another model: another config
    or version; an older checkpoint of the same run cannot help), storage that stays unavailable
    (`Retry`), or another failure to read (e.g. permissions) that says nothing about the files.

    Args:
      candidates: checkpoint path prefixes, newest first.
      restore: path -> None, raising what `tf.train.Checkpoint.restore` and its assertions raise
        (transient storage errors already retried: `StorageUnavailableError`).
      verb: how the warning names the fallback ("resumed from", "loaded").

    Returns:
      The restored path prefix.

    Raises:
      CheckpointError: another model, none of the candidates readable, or not damage.
      StorageUnavailableError: a transient storage error persisted through the retries.
    """
    failures = []
    for path in candidates:
        try:
            restore(path)
        except StorageUnavailableError:
            raise  # the storage, not the files: an older checkpoint is no answer
        except (AssertionError, ValueError) as e:  # objects that do not fit, or an unreadable file
            if _index_readable(path):  # readable, yet the objects do not fit
                raise CheckpointError(
                    f"{path} holds a different model than this config builds "
                    f"({_first_line(e)}); it was written by another config or version of "
                    "cyclegan_tf. Use the original config, or train into a new --output_dir."
                ) from e
            failures.append((path, _first_line(e)))
        except (tf.errors.OpError, IndexError, OSError) as e:
            if not _damaged(e):
                raise CheckpointError(
                    f"Could not read {path} ({type(e).__name__}: {_first_line(e)}); this is not "
                    "damage to its files, so no older checkpoint was tried: fix the access to "
                    "the storage and re-run."
                ) from e
            failures.append((path, _first_line(e)))
        else:
            if failures:
                logging.warning(_fallback_line(failures, path, verb))
            return path
    raise CheckpointError(
        f"No readable checkpoint in {os.path.dirname(candidates[0])} (latest {failures[0][0]}: "
        f"{failures[0][1]}); the files are damaged: delete them, or pass --noresume "
        "--overwrite to start over."
    )


# What damaged checkpoint files raise (TF 2.21, tried on truncated, garbled and deleted files):
# a truncated data file IndexError ("Read less bytes than requested"), a garbled one
# DataLossError, a missing index NotFoundError, a missing data file or a truncated or garbled
# index an OpError with code UNKNOWN. Corrupt contents may also say INVALID_ARGUMENT or
# OUT_OF_RANGE. Not damage: TRANSIENT (retried), permissions, exhausted resources, cancellation.
_DAMAGE_CODES = frozenset(
    (
        tf.errors.DATA_LOSS,
        tf.errors.NOT_FOUND,
        tf.errors.UNKNOWN,
        tf.errors.INVALID_ARGUMENT,
        tf.errors.OUT_OF_RANGE,
    )
)


def _damaged(error: BaseException) -> bool:
    """Whether a failed read means that the checkpoint's files are damaged."""
    if isinstance(error, tf.errors.OpError):
        return error.error_code in _DAMAGE_CODES
    if isinstance(error, OSError):
        return not isinstance(error, PermissionError)
    return isinstance(error, IndexError)


def _fallback_line(failures: list[tuple[str, str]], path: str, verb: str) -> str:
    """The one warning line of a fallback: the damaged newest checkpoint, why, what was used
    instead and the steps lost."""
    newest, reason = failures[0]
    lost, kept = _step_in_name(newest), _step_in_name(path)
    also = f" (and {len(failures) - 1} older one(s))" if len(failures) > 1 else ""
    steps = (
        f"steps {kept + 1}-{lost} are lost"
        if lost is not None and kept is not None
        else f"the steps of {os.path.basename(newest)} are lost"
    )
    return (
        f"Checkpoint {newest} could not be read, its files are damaged ({reason}){also}; {verb} "
        f"{path} instead: {steps}."
    )


def _step_in_name(path: str) -> int | None:
    """N of a `ckpt-N` path prefix (the file name: the damaged file cannot be read)."""
    match = re.fullmatch(r"ckpt-(\d+)", os.path.basename(path))
    return int(match.group(1)) if match else None


def _probe_state(directory: str) -> None:
    """Reads `directory`'s `checkpoint` state file if there is one, retrying transient errors.

    `tf.train.CheckpointManager` and `tf.train.latest_checkpoint` log a state file they cannot
    read and go on as if the directory held no checkpoint: a resume would start again at step 0.

    Raises:
      StorageUnavailableError: the state file exists but stays unreadable.
    """
    state = os.path.join(directory, "checkpoint")

    def read():
        try:
            with tf.io.gfile.GFile(state, "r") as f:
                f.read()
        except tf.errors.NotFoundError:
            pass

    RETRY(read, f"read {state}")


def _best_checkpoint(run_dir: str) -> str:
    record = os.path.join(run_dir, rundir.BEST, BEST_FILE)
    try:
        with open(record) as f:
            path = os.path.join(run_dir, rundir.BEST, json.load(f)["checkpoint"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(
            f"{run_dir!r} has no readable {rundir.BEST}/{BEST_FILE} ({_first_line(e)}); train "
            "with --eval_every_epochs=K to keep the best generators, or pass another --checkpoint."
        ) from None
    if not tf.io.gfile.exists(path + ".index"):
        raise CheckpointError(f"{record} names {path}, which does not exist.")
    return path


def step_of(path: str) -> int | None:
    """The training step saved in a checkpoint, or None if it holds no `step` variable
    (generator-only checkpoints: kept epochs, imported runs, best/)."""
    try:
        return int(
            RETRY(
                lambda: tf.train.load_variable(path, "step/.ATTRIBUTES/VARIABLE_VALUE"),
                f"read checkpoint {path}",
            )
        )
    except StorageUnavailableError:
        raise
    except (tf.errors.OpError, ValueError):
        return None


def _index_readable(path: str) -> bool:
    """Whether the checkpoint's index (variable names and shapes) can be read."""
    try:
        RETRY(
            lambda: tf.train.load_checkpoint(path).get_variable_to_shape_map(),
            f"read checkpoint {path}",
        )
    except StorageUnavailableError:
        raise
    except (tf.errors.OpError, ValueError, IndexError, OSError):
        return False
    return True


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else type(error).__name__
