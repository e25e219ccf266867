"""cyclegan_tf.checkpoints: transient storage errors are retried and never taken for damage; only
damaged files make a restore fall back to an older checkpoint, with one warning line."""

import logging
import os

import numpy as np
import pytest
import tensorflow as tf

from cyclegan_tf import checkpoints

TRANSIENT = [tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError]


@pytest.fixture
def sleeps(monkeypatch):
    """The backoff's sleeps, recorded instead of slept."""
    slept = []
    monkeypatch.setattr(checkpoints, "RETRY", checkpoints.Retry(sleep=slept.append))
    return slept


class _Generator(tf.Module):
    """Stands in for a generator (what `restore_latest_generators` reads)."""

    def __init__(self):
        super().__init__()
        self.kernel = tf.Variable(np.zeros(3, np.float32))


def _objects(value=0.0):
    """A training state in small: a step, a weight and a generator."""
    w = tf.Variable(np.full(3, value, np.float32))
    return {"step": tf.Variable(0, dtype=tf.int64), "w": w, "g_ab": _Generator()}


def _saved_run(run_dir, steps=(2, 4)):
    """A run directory with a checkpoint per step; `w` holds the step's number."""
    objects = _objects()
    ckpt = checkpoints.Checkpointer(objects, str(run_dir))
    for step in steps:
        objects["step"].assign(step)
        objects["w"].assign(np.full(3, step, np.float32))
        ckpt.save(step)
    return ckpt


def _flaky(monkeypatch, owner, name, error, times):
    """Makes `owner.name` raise `error` on its first `times` calls, then behave; returns the
    list of calls made."""
    original, calls = getattr(owner, name), []

    def flaky(*args, **kwargs):
        calls.append(args)
        if len(calls) <= times:
            raise error(None, None, f"injected {error.__name__} {len(calls)}")
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, flaky)
    return calls


def _warnings(caplog):
    return [r for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.parametrize("error", TRANSIENT)
@pytest.mark.parametrize("times", [1, 2])
def test_a_transient_write_error_is_retried_and_the_save_is_one_write(
    tmp_path, monkeypatch, sleeps, error, times
):
    objects = _objects(1.5)
    ckpt = checkpoints.Checkpointer(objects, str(tmp_path / "run"))
    writes = _flaky(monkeypatch, tf.train.Checkpoint, "_write", error, times)
    path = ckpt.save(7)
    assert len(writes) == times + 1 and sleeps == [0.5, 1.0][:times]
    assert path.endswith("ckpt-7") and ckpt.latest == path
    # The manager counts a write before making it: the retried save still counts one.
    assert int(ckpt.checkpoint.save_counter.numpy()) == 1
    np.testing.assert_array_equal(tf.train.load_variable(path, "w/.ATTRIBUTES/VARIABLE_VALUE"), 1.5)


@pytest.mark.parametrize("error", TRANSIENT)
@pytest.mark.parametrize("times", [1, 2])
def test_a_transient_read_error_is_retried_without_falling_back(
    tmp_path, monkeypatch, sleeps, caplog, error, times
):
    _saved_run(tmp_path / "run")
    objects = _objects()
    ckpt = checkpoints.Checkpointer(objects, str(tmp_path / "run"))
    reads = _flaky(monkeypatch, tf.train.Checkpoint, "restore", error, times)
    restored = ckpt.restore_latest()
    assert restored.endswith("ckpt-4") and int(objects["step"].numpy()) == 4
    assert len(reads) == times + 1 and sleeps == [0.5, 1.0][:times]
    assert not any("could not be read" in r.getMessage() for r in caplog.records)
    # The same for the generators alone (translate, export) and for a worker following the chief.
    reads.clear()
    path = checkpoints.restore_latest_generators(str(tmp_path / "run"), g_ab=_Generator())
    assert path.endswith("ckpt-4") and len(reads) == times + 1
    reads.clear()
    assert ckpt.restore(restored) == restored and len(reads) == times + 1


def test_a_transient_error_that_persists_is_an_error_not_a_fallback(
    tmp_path, monkeypatch, sleeps, caplog
):
    _saved_run(tmp_path / "run")
    objects = _objects()
    ckpt = checkpoints.Checkpointer(objects, str(tmp_path / "run"))
    _flaky(monkeypatch, tf.train.Checkpoint, "restore", tf.errors.UnavailableError, 99)
    with pytest.raises(checkpoints.StorageUnavailableError) as error:
        ckpt.restore_latest()
    message = str(error.value)
    assert "\n" not in message and "ckpt-4" in message and "5 attempts" in message
    assert "not damaged" in message and sleeps == [0.5, 1.0, 2.0, 4.0]
    assert int(objects["step"].numpy()) == 0  # ckpt-2 was not tried
    assert not any("could not be read" in r.getMessage() for r in caplog.records)
    # A save that keeps failing: an error, and no checkpoint that names the step.
    sleeps.clear()
    _flaky(monkeypatch, tf.train.Checkpoint, "_write", tf.errors.DeadlineExceededError, 99)
    with pytest.raises(checkpoints.StorageUnavailableError, match="write checkpoint .*ckpt-6"):
        ckpt.save(6)
    assert sleeps == [0.5, 1.0, 2.0, 4.0]
    assert not os.path.exists(tmp_path / "run" / "checkpoints" / "ckpt-6.index")


def test_an_unreadable_state_file_is_not_taken_for_no_checkpoint(tmp_path, monkeypatch, sleeps):
    """TensorFlow's CheckpointManager logs a state file it cannot read and carries on as if the
    directory held no checkpoint (a resume would start at step 0 again)."""
    _saved_run(tmp_path / "run")
    reads = _flaky(monkeypatch, tf.io.gfile, "GFile", tf.errors.UnavailableError, 1)
    ckpt = checkpoints.Checkpointer(_objects(), str(tmp_path / "run"))
    assert ckpt.latest.endswith("ckpt-4") and len(reads) >= 2 and sleeps == [0.5]
    reads.clear()
    _flaky(monkeypatch, tf.io.gfile, "GFile", tf.errors.UnavailableError, 99)
    with pytest.raises(checkpoints.StorageUnavailableError, match="checkpoints/checkpoint"):
        checkpoints.Checkpointer(_objects(), str(tmp_path / "run"))


def test_a_damaged_newest_checkpoint_falls_back_with_one_warning_line(tmp_path, caplog, sleeps):
    _saved_run(tmp_path / "run")
    data = tmp_path / "run" / "checkpoints" / "ckpt-4.data-00000-of-00001"
    with open(data, "r+b") as f:
        f.truncate(10)
    objects = _objects()
    caplog.set_level(logging.WARNING)
    restored = checkpoints.Checkpointer(objects, str(tmp_path / "run")).restore_latest()
    assert restored.endswith("ckpt-2") and int(objects["step"].numpy()) == 2
    np.testing.assert_array_equal(objects["w"].numpy(), 2.0)
    lines = [r.getMessage() for r in _warnings(caplog)]
    assert len(lines) == 1 and "\n" not in lines[0], lines
    assert "ckpt-4 could not be read, its files are damaged" in lines[0]
    assert "resumed from" in lines[0] and "steps 3-4 are lost" in lines[0]
    assert sleeps == []  # damage is not retried


def test_a_read_error_that_is_not_damage_does_not_fall_back(tmp_path, monkeypatch, sleeps):
    _saved_run(tmp_path / "run")
    ckpt = checkpoints.Checkpointer(_objects(), str(tmp_path / "run"))
    _flaky(monkeypatch, tf.train.Checkpoint, "restore", tf.errors.PermissionDeniedError, 1)
    with pytest.raises(checkpoints.CheckpointError, match="not damage.*no older checkpoint"):
        ckpt.restore_latest()
    assert sleeps == []
