"""The one place that builds `tf.train.Checkpoint`s and restores them.

A run directory holds `config.json` and `checkpoints/` (a `tf.train.CheckpointManager` directory:
`ckpt-<step>.index/.data-*` plus the `checkpoint` state file). The checkpoint's object names are the
`CycleGAN.checkpoint_objects()` keys (g_ab, g_ba, d_a, d_b, g_optimizer, d_optimizer, pool_a,
pool_b, step, epoch, seed), so `restore_generators` can load just the generators for export and
inference.

Failure policy: a latest checkpoint that cannot be read (truncated or corrupt files) is skipped
with a warning and the previous one is used; when none can be read, `CheckpointError` says so. A
restore never silently ignores missing variables of the objects it restores.
"""

from __future__ import annotations

import os

import tensorflow as tf
from absl import logging

from cyclegan_tf import errors

CHECKPOINT_SUBDIR = "checkpoints"
CONFIG_FILE = "config.json"


class CheckpointError(errors.UserError):
    """A checkpoint or run directory is unusable; the message says which and what to do."""


def checkpoint_dir(run_dir: str) -> str:
    return os.path.join(run_dir, CHECKPOINT_SUBDIR)


class Checkpointer:
    """Saves and restores a full training state under `<run_dir>/checkpoints`.

    Args:
      objects: name -> trackable (e.g. `CycleGAN.checkpoint_objects()`).
      run_dir: the run directory.
      max_to_keep: checkpoints kept (>= 2 so a corrupt latest one has a fallback).
    """

    def __init__(self, objects: dict, run_dir: str, max_to_keep: int = 3):
        self.checkpoint = tf.train.Checkpoint(**objects)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, checkpoint_dir(run_dir), max_to_keep=max(2, max_to_keep)
        )

    def save(self, step: int) -> str:
        """Writes checkpoint `ckpt-<step>` and returns its path prefix.

        Saving again at the step of the latest checkpoint writes nothing (the state is the one
        already saved), so the loop's cadences (steps, epochs, end, signal) may coincide freely.
        """
        latest = self.manager.latest_checkpoint
        if latest is not None and os.path.basename(latest) == f"ckpt-{step}":
            return latest
        return self.manager.save(checkpoint_number=step)

    @property
    def latest(self) -> str | None:
        return self.manager.latest_checkpoint

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
        errors = []
        for path in candidates:
            try:
                self.checkpoint.restore(path).assert_existing_objects_matched()
                if errors:
                    logging.warning(
                        "Checkpoint %s could not be read (%s); resumed from %s instead.",
                        errors[0][0],
                        errors[0][1],
                        path,
                    )
                return path
            # OpError: missing/corrupt files; IndexError: a truncated data file ("Read less
            # bytes than requested"); AssertionError/ValueError: objects that do not match.
            except (tf.errors.OpError, ValueError, AssertionError, IndexError, OSError) as e:
                errors.append((path, _first_line(e)))
        raise CheckpointError(
            f"No readable checkpoint in {self.manager.directory} (latest {errors[0][0]}: "
            f"{errors[0][1]}); delete the directory or pass --noresume --overwrite to start over."
        )


def resolve_checkpoint(run_dir: str, checkpoint: str | None = None) -> str:
    """Returns the checkpoint path prefix to load from a run directory.

    Args:
      run_dir: a training run directory.
      checkpoint: None for the latest; a step number ("1200"), a name ("ckpt-1200") or a path
        prefix.

    Raises:
      CheckpointError: no such run or checkpoint.
    """
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
    path = name if os.path.dirname(name) else os.path.join(ckpt_dir, name)
    if not tf.io.gfile.exists(path + ".index"):
        available = tf.train.get_checkpoint_state(ckpt_dir)
        names = [
            os.path.basename(p) for p in (available.all_model_checkpoint_paths if available else [])
        ]
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
    objects = {k: v for k, v in (("g_ab", g_ab), ("g_ba", g_ba)) if v is not None}
    try:
        status = tf.train.Checkpoint(**objects).restore(path)
        status.expect_partial()
        status.assert_existing_objects_matched()
    except (tf.errors.OpError, ValueError, AssertionError) as e:
        raise CheckpointError(
            f"Could not load generators from checkpoint {path!r}: {_first_line(e)}. Is config.json "
            "the one this run was trained with?"
        ) from e


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else type(error).__name__
