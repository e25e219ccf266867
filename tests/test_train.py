"""The training loop: outputs, resume, run-dir rules, checkpoint fallback, NaN stop, kill -9."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from cyclegan_tf import config, losses, precision, train


def _tiny(**overrides):
    return config.preset("tiny", **overrides)


def _variables(checkpoint_prefix):
    reader = tf.train.load_checkpoint(checkpoint_prefix)
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()}


def test_run_writes_checkpoints_logs_grids_and_score(tmp_path):
    run = str(tmp_path / "run")
    result = train.train(_tiny(max_steps=10), run, verbose=0)
    assert result.step == 10 and result.checkpoint.endswith("ckpt-10")
    assert os.path.exists(os.path.join(run, "images", "epoch_001.png"))  # epoch of 8 steps
    assert os.path.exists(os.path.join(run, "images", "epoch_002.png"))  # partial last epoch
    assert os.listdir(os.path.join(run, "logs"))
    saved = config.Config.from_json(open(os.path.join(run, "config.json")).read())
    # `auto` is saved resolved for this machine, so a resume elsewhere keeps it.
    assert saved == _tiny(max_steps=10, precision=precision.resolve("auto").precision)
    assert result.config == saved
    score = json.load(open(os.path.join(run, "score.json")))
    assert set(score) == {"g_ab", "identity", "step"} and "psnr" in score["g_ab"]
    lines = [json.loads(x) for x in open(os.path.join(run, "metrics.jsonl"))]
    assert [x["step"] for x in lines] == [2, 4, 6, 8, 10]
    assert result.first_step_seconds > 0


def test_resume_continues_where_it_stopped(tmp_path):
    run = str(tmp_path / "run")
    train.train(_tiny(max_steps=4), run, verbose=0)
    result = train.train(_tiny(max_steps=6), run, verbose=0)  # max_steps may change on resume
    assert result.step == 6
    again = train.train(_tiny(max_steps=6), run, verbose=0)
    assert again.step == 6 and again.first_step_seconds is None  # nothing left to do


def test_run_directory_rules(tmp_path):
    run = str(tmp_path / "run")
    train.train(_tiny(max_steps=2), run, verbose=0)
    with pytest.raises(train.RunDirError, match="already holds a run.*--overwrite"):
        train.train(_tiny(max_steps=2), run, resume=False, verbose=0)
    with pytest.raises(train.RunDirError, match=r"model.ngf: 8 -> 16"):
        train.train(_tiny(max_steps=2, ngf=16), run, verbose=0)
    result = train.train(_tiny(max_steps=2), run, resume=False, overwrite=True, verbose=0)
    assert result.step == 2


def test_corrupt_latest_checkpoint_falls_back_to_the_previous(tmp_path, caplog):
    run = str(tmp_path / "run")
    train.train(_tiny(max_steps=8, save_steps=4), run, verbose=0)
    data_file = os.path.join(run, "checkpoints", "ckpt-8.data-00000-of-00001")
    with open(data_file, "r+b") as f:
        f.truncate(100)
    result = train.train(_tiny(max_steps=10, save_steps=4), run, verbose=0)
    assert result.step == 10
    assert "ckpt-8 could not be read" in caplog.text and "resumed from" in caplog.text


def test_non_finite_loss_stops_without_saving_bad_weights(tmp_path, monkeypatch):
    run = str(tmp_path / "run")
    train.train(_tiny(max_steps=2), run, verbose=0)
    monkeypatch.setattr(losses, "cycle", lambda real, rec: tf.constant(float("nan")))
    with pytest.raises(train.NonFiniteLossError, match=r"Loss g/cycle_a became nan at step 3"):
        train.train(_tiny(max_steps=6), run, verbose=0)
    latest = tf.train.latest_checkpoint(os.path.join(run, "checkpoints"))
    assert latest.endswith("ckpt-2")
    floats = [v for v in _variables(latest).values() if getattr(v, "dtype", None) == np.float32]
    assert floats and all(np.all(np.isfinite(v)) for v in floats)


# -- kill -9 at a random moment, resume, compare with an uninterrupted run ---------------------

TRAIN_CMD = [
    sys.executable,
    "-m",
    "cyclegan_tf.cli",
    "train",
    "--preset=tiny",
    "--n_epochs=4",
    "--n_epochs_decay=4",
    "--save_steps=3",
    "--deterministic",
]


def _train_cli(run_dir, **kwargs):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.Popen(
        TRAIN_CMD + [f"--output_dir={run_dir}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        **kwargs,
    )


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_equals_uninterrupted(tmp_path):
    reference = tmp_path / "reference"
    proc = _train_cli(reference)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-2000:]
    expected = _variables(tf.train.latest_checkpoint(str(reference / "checkpoints")))
    assert (
        "step/.ATTRIBUTES/VARIABLE_VALUE" in expected
        and expected["step/.ATTRIBUTES/VARIABLE_VALUE"] == 64
    )

    rng = random.Random(20261125)
    killed = tmp_path / "killed"
    kills = 0
    for _ in range(2):  # two kills at random moments after training started
        proc = _train_cli(killed)
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            ckpts = killed / "checkpoints"
            if ckpts.exists() and any(p.name.endswith(".index") for p in ckpts.iterdir()):
                break
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.communicate(timeout=60)
    assert kills >= 1, "the run finished before it could be killed"
    proc = _train_cli(killed)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-2000:]
    assert "Resuming from" in out
    got = _variables(tf.train.latest_checkpoint(str(killed / "checkpoints")))
    assert set(got) == set(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_then_exits_143(tmp_path):
    run = tmp_path / "run"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cyclegan_tf.cli", "train", "--preset=tiny", "--n_epochs=50"]
        + [f"--output_dir={run}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lines = []
    for line in proc.stdout:  # wait until training runs
        lines.append(line)
        if "First step finished" in line:
            break
    proc.send_signal(signal.SIGTERM)
    out = "".join(lines) + proc.communicate(timeout=120)[0]
    assert proc.returncode == 128 + signal.SIGTERM, out[-2000:]
    assert "Interrupted at step" in out and "Re-run the same command to resume" in out
    step = int(out.split("Interrupted at step ")[1].split(";")[0])
    latest = tf.train.latest_checkpoint(str(run / "checkpoints"))
    assert latest.endswith(f"ckpt-{step}")
