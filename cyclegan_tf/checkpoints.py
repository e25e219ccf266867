"""The one place that builds `tf.train.Checkpoint`s and restores them.

A run directory holds `config.json` and `checkpoints/` (a `tf.train.CheckpointManager` directory:
`ckpt-<step>.index/.data-*` plus the `checkpoint` state file). The checkpoint's object names are the
`CycleGAN.checkpoint_objects()` keys (g_ab, g_ba, d_a, d_b, g_optimizer, d_optimizer, pool_a,
pool_b, step, epoch, seed), so `restore_generators` can load just the generators for export and
inference. Every `save_epoch` epochs the generators are also written to
`checkpoints/epochs/epoch_<NNN>` (outside the rotation, kept like the official code keeps its
epoch files); `resolve_checkpoint(run_dir, "epoch_5")` finds them.

Failure policy: a latest checkpoint that cannot be read (truncated or corrupt files) is skipped
with a warning and the previous one is used; when none can be read, `CheckpointError` says so. A
checkpoint that reads fine but holds another model (another config or version) is not damage:
it raises `CheckpointError` at once, without falling back. A restore never silently ignores
missing variables of the objects it restores.

Multi-worker training (`cluster.py`): saving is collective, so every worker saves; only the
chief's files land in the run directory. The other workers write each save to a temporary
directory of their own and delete it at once (tf.distribute's pattern for non-chief workers),
and restore the checkpoint the chief chose (`restore`), read from the shared run directory.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid

import tensorflow as tf
from absl import logging

from cyclegan_tf import errors, rundir

# `<run>/best/best.json` names the checkpoint in best/ (written by `evaluate.TrainingEvaluator`).
BEST = "best"
BEST_FILE = "best.json"


class CheckpointError(errors.UserError):
    """A checkpoint or run directory is unusable; the message says which and what to do."""


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
        self.manager = tf.train.CheckpointManager(
            self.checkpoint,
            checkpoint_dir(self._scratch or run_dir),
            max_to_keep=max(2, max_to_keep),
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
        path = self._generators.write(
            os.path.join(rundir.epoch_checkpoint_dir(self._scratch or self.run_dir), name)
        )
        return self._chief_path(path, rundir.epoch_checkpoint_dir(self.run_dir), name)

    def save(self, step: int) -> str:
        """Writes checkpoint `ckpt-<step>` and returns its path prefix.

        Saving again at the step of the latest checkpoint writes nothing (the state is the one
        already saved), so the loop's cadences (steps, epochs, end, signal) may coincide freely.
        """
        latest = self.manager.latest_checkpoint
        if latest is not None and os.path.basename(latest) == f"ckpt-{step}":
            return self._chief_path(latest, checkpoint_dir(self.run_dir), f"ckpt-{step}", False)
        path = self.manager.save(checkpoint_number=step)
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
            self.checkpoint.restore(path).assert_existing_objects_matched()
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
            lambda path: self.checkpoint.restore(path).assert_existing_objects_matched(),
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
    status = tf.train.Checkpoint(**objects).restore(path)
    status.expect_partial()
    status.assert_existing_objects_matched()


def _restore_newest(candidates: list[str], restore, verb: str) -> str:
    """Restores the newest of `candidates` (newest first) that can be read.

    A damaged checkpoint (missing, truncated or corrupt files) is skipped with a warning for the
    previous one. A checkpoint that reads but whose objects do not fit (another model: another
    config or version) is an error at once: an older checkpoint of the same run cannot help.

    Args:
      candidates: checkpoint path prefixes, newest first.
      restore: path -> None, raising what `tf.train.Checkpoint.restore` and its assertions raise.
      verb: how the warning names the fallback ("resumed from", "loaded").

    Returns:
      The restored path prefix.

    Raises:
      CheckpointError: another model, or none of the candidates can be read.
    """
    failures = []
    for path in candidates:
        try:
            restore(path)
        # AssertionError/ValueError: objects that do not fit; OpError: missing/corrupt files;
        # IndexError: a truncated data file ("Read less bytes than requested").
        except (AssertionError, ValueError) as e:
            if _index_readable(path):  # readable, yet the objects do not fit
                raise CheckpointError(
                    f"{path} holds a different model than this config builds "
                    f"({_first_line(e)}); it was written by another config or version of "
                    "cyclegan_tf. Use the original config, or train into a new --output_dir."
                ) from e
            failures.append((path, _first_line(e)))
        except (tf.errors.OpError, IndexError, OSError) as e:
            failures.append((path, _first_line(e)))
        else:
            if failures:
                logging.warning(
                    "Checkpoint %s could not be read (%s); %s %s instead.",
                    failures[0][0],
                    failures[0][1],
                    verb,
                    path,
                )
            return path
    raise CheckpointError(
        f"No readable checkpoint in {os.path.dirname(candidates[0])} (latest {failures[0][0]}: "
        f"{failures[0][1]}); the files are damaged: delete them, or pass --noresume "
        "--overwrite to start over."
    )


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
        return int(tf.train.load_variable(path, "step/.ATTRIBUTES/VARIABLE_VALUE"))
    except (tf.errors.OpError, ValueError):
        return None


def _index_readable(path: str) -> bool:
    """Whether the checkpoint's index (variable names and shapes) can be read."""
    try:
        tf.train.load_checkpoint(path).get_variable_to_shape_map()
    except (tf.errors.OpError, ValueError, IndexError, OSError):
        return False
    return True


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else type(error).__name__
