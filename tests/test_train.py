"""The training loop: outputs, resume, run-dir rules, checkpoint fallback, NaN stop, kill -9."""

import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

from cyclegan_tf import (
    checkpoints,
    config,
    data,
    hardware,
    inference,
    losses,
    precision,
    trainer,
    training,
)


def _tiny(**overrides):
    return config.preset("tiny", **overrides)


def _variables(checkpoint_prefix):
    reader = tf.train.load_checkpoint(checkpoint_prefix)
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()}


def test_run_writes_checkpoints_logs_grids_and_score(tmp_path):
    run = str(tmp_path / "run")
    result = training.train(_tiny(max_steps=10), run, verbose=0)
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
    # The generators of epoch 1 are kept outside the rotation and load by name.
    kept = checkpoints.resolve_checkpoint(run, "epoch_1")
    assert kept.endswith(os.path.join("epochs", "epoch_001"))
    loaded = inference.load_run(run, checkpoint="epoch_1", precision="float32")
    assert set(loaded.generators) == {"a2b", "b2a"}


def test_resume_continues_where_it_stopped(tmp_path, monkeypatch):
    run = str(tmp_path / "run")
    decoded = []  # the image files each start decodes to check them
    decodable = data._decodable
    monkeypatch.setattr(data, "_decodable", lambda paths: decoded.append(paths) or decodable(paths))
    training.train(_tiny(max_steps=4), run, verbose=0)
    assert sum(map(len, decoded)) == 8 + 8 + 4 + 4  # train and test images, checked once
    decoded.clear()
    result = training.train(_tiny(max_steps=6), run, verbose=0)  # max_steps may change on resume
    assert result.step == 6
    assert decoded == []  # file_checks.json: nothing changed, nothing decoded
    again = training.train(_tiny(max_steps=6), run, verbose=0)
    assert again.step == 6 and again.first_step_seconds is None  # nothing left to do


def test_run_directory_rules(tmp_path):
    run = str(tmp_path / "run")
    training.train(_tiny(max_steps=2), run, verbose=0)
    with pytest.raises(training.RunDirError, match="already holds a run.*--overwrite"):
        training.train(_tiny(max_steps=2), run, resume=False, verbose=0)
    with pytest.raises(training.RunDirError, match=r"model.ngf: 8 -> 16"):
        training.train(_tiny(max_steps=2, ngf=16), run, verbose=0)
    result = training.train(_tiny(max_steps=2), run, resume=False, overwrite=True, verbose=0)
    assert result.step == 2


def test_corrupt_latest_checkpoint_falls_back_to_the_previous(tmp_path, caplog):
    run = str(tmp_path / "run")
    training.train(_tiny(max_steps=8, save_steps=4), run, verbose=0)
    data_file = os.path.join(run, "checkpoints", "ckpt-8.data-00000-of-00001")
    with open(data_file, "r+b") as f:
        f.truncate(100)
    result = training.train(_tiny(max_steps=10, save_steps=4), run, verbose=0)
    assert result.step == 10
    assert "ckpt-8 could not be read" in caplog.text and "resumed from" in caplog.text


def test_non_finite_loss_stops_without_saving_bad_weights(tmp_path, monkeypatch):
    run = str(tmp_path / "run")
    training.train(_tiny(max_steps=2), run, verbose=0)
    monkeypatch.setattr(losses, "cycle", lambda real, rec: tf.constant(float("nan")))
    with pytest.raises(training.NonFiniteLossError, match=r"Loss g/cycle_a became nan at step 3"):
        training.train(_tiny(max_steps=6), run, verbose=0)
    latest = tf.train.latest_checkpoint(os.path.join(run, "checkpoints"))
    assert latest.endswith("ckpt-2")
    floats = [v for v in _variables(latest).values() if getattr(v, "dtype", None) == np.float32]
    assert floats and all(np.all(np.isfinite(v)) for v in floats)


def test_the_loop_reads_step_outputs_only_at_the_log_cadence(tmp_path, monkeypatch):
    """Nothing waits for the device between steps: the host reads no step output (float()) before
    the log or save step that covers it. Time-free evidence: every read is recorded."""
    reads, calls = [], [0]

    class Recorded:  # a step output as the loop sees it
        def __init__(self, tensor, step):
            self.tensor, self.step = tensor, step

        def __float__(self):
            reads.append((self.step, calls[0]))
            return float(self.tensor)

    build = trainer.CycleGAN.__init__

    def recording_init(self, *args, **kwargs):
        build(self, *args, **kwargs)
        step_fn = self.train_step

        def train_step(*inputs):
            calls[0] += 1
            return {k: Recorded(v, calls[0]) for k, v in step_fn(*inputs).items()}

        self.train_step = train_step

    monkeypatch.setattr(trainer.CycleGAN, "__init__", recording_init)
    training.train(_tiny(max_steps=8, log_steps=4, save_steps=8), str(tmp_path / "run"), verbose=1)
    assert calls[0] == 8 and {step for step, _ in reads} == set(range(1, 9))
    assert all(at == 4 * math.ceil(step / 4) for step, at in reads), reads


def test_configure_tensorflow_grows_gpu_memory_and_keeps_grappler_on_a_gpu(monkeypatch):
    gpu = tf.config.PhysicalDevice(name="/physical_device:GPU:0", device_type="GPU")
    growth, options = [], []
    visible = [gpu]
    monkeypatch.setattr(
        tf.config, "list_physical_devices", lambda kind=None: visible if kind == "GPU" else []
    )
    monkeypatch.setattr(
        tf.config.experimental, "set_memory_growth", lambda d, on: growth.append((d.name, on))
    )
    monkeypatch.setattr(tf.config.optimizer, "set_experimental_options", options.append)
    monkeypatch.setattr(hardware, "_decision", None)  # a fresh process
    hardware.reset()  # the probe sees the pretended GPU (conftest resets it after the test)
    training.configure_tensorflow(_tiny().train)
    assert growth == [("/physical_device:GPU:0", True)]
    # Grappler's meta optimizer stays on with a GPU (not measured here)
    assert options == [{"disable_meta_optimizer": False}]
    # A process that decided first (cyclegan-tf --nogpu_memory_growth) keeps its decision.
    growth.clear()
    monkeypatch.setattr(hardware, "_decision", None)
    hardware.configure_gpus(False)
    training.configure_tensorflow(_tiny().train)
    assert growth == [("/physical_device:GPU:0", False)]
    # CPU only: nothing to grow; the meta optimizer off (measured to help on the CPU).
    growth.clear()
    options.clear()
    visible.clear()
    hardware.reset()
    training.configure_tensorflow(_tiny().train)
    assert growth == [] and options == [{"disable_meta_optimizer": True}]


# -- kill -9 at a random moment, resume, compare with an uninterrupted run ---------------------

TRAIN_CMD = [
    sys.executable,
    "-m",
    "cyclegan_tf.cli",
    "train",
    "--preset=tiny",
    "--n_epochs=2",
    "--n_epochs_decay=2",
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


@pytest.mark.slow(seconds=60)
def test_sigkill_at_random_moments_then_resume_equals_uninterrupted(tmp_path):
    reference = tmp_path / "reference"
    proc = _train_cli(reference)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-2000:]
    expected = _variables(tf.train.latest_checkpoint(str(reference / "checkpoints")))
    assert (
        "step/.ATTRIBUTES/VARIABLE_VALUE" in expected
        and expected["step/.ATTRIBUTES/VARIABLE_VALUE"] == 32
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


@pytest.mark.slow(seconds=12)
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


# -- multi-worker: two worker processes on localhost against one process on 2 devices ---------

MW_STEPS = 8
MW_ARGS = [
    "train",
    "--preset=tiny",
    "--batch_size=2",
    f"--max_steps={MW_STEPS}",
    "--precision=float32",
    "--deterministic",
]
# One process, two logical CPUs, `--strategy=mirrored` (which takes every logical CPU): the
# devices must be configured before TensorFlow initialises, so the CLI runs inside this script.
MIRRORED_CLI = textwrap.dedent(
    """
    import sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from cyclegan_tf import cli
    sys.argv = ["cyclegan-tf", *sys.argv[1:]]
    cli.run()
    """
)


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


class _Workers:
    """Two `cyclegan-tf train --strategy=multi_worker` processes on localhost (free ports from
    the OS), with `args` (default MW_ARGS). Their output is collected by threads; on leaving the
    block, any still running is killed, so a failing test leaves no process behind."""

    def __init__(self, tmp_path, output_dirs, args=None):
        ports = _free_ports(2)
        self.procs, self.outputs, self.tmpdirs = [], [[], []], []
        for index, output_dir in enumerate(output_dirs):
            tf_config = {
                "cluster": {"worker": [f"localhost:{p}" for p in ports]},
                "task": {"type": "worker", "index": index},
            }
            tmpdir = tmp_path / f"tmp_{len(list(tmp_path.glob('tmp_*')))}"
            tmpdir.mkdir()
            self.tmpdirs.append(tmpdir)
            env = dict(
                os.environ,
                TF_CPP_MIN_LOG_LEVEL="3",
                CUDA_VISIBLE_DEVICES="",  # CPU workers, compared with two logical CPUs
                TF_CONFIG=json.dumps(tf_config),
                TMPDIR=str(tmpdir),
            )
            cmd = [sys.executable, "-u", "-m", "cyclegan_tf.cli", *(args or MW_ARGS)]
            cmd += ["--strategy=multi_worker", f"--output_dir={output_dir}"]
            proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
            )
            self.procs.append(proc)
            threading.Thread(target=self._collect, args=(proc, index), daemon=True).start()

    def _collect(self, proc, index):
        for line in proc.stdout:
            self.outputs[index].append(line)

    def text(self, index):
        return "".join(self.outputs[index])

    def wait_for(self, index, marker, timeout):
        deadline = time.time() + timeout
        while marker not in self.text(index):
            assert time.time() < deadline and self.procs[index].poll() is None, self.text(index)
            time.sleep(0.02)

    def finish(self, timeout):
        deadline = time.time() + timeout
        for proc in self.procs:
            proc.wait(timeout=max(1.0, deadline - time.time()))
        time.sleep(0.2)  # the collector threads reach the end of the output
        return [proc.returncode for proc in self.procs]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        return False


def _restored_model(run_dir):
    """A tiny CycleGAN holding the latest checkpoint of `run_dir`."""
    from cyclegan_tf import checkpoints, trainer

    model = trainer.CycleGAN(_tiny(batch_size=2, precision="float32"), steps_per_epoch=4)
    assert checkpoints.Checkpointer(model.checkpoint_objects(), str(run_dir)).restore_latest()
    return model


def _close_to_mirrored(one, two, steps, lr=2e-4):
    """tests/test_trainer.py's criterion for equal training, over `steps` steps: the gradients
    (Adam's first moments) within 1e-4 relative, no weight further than 2 * lr per step, nearly
    all within 1e-5, and the pools close."""
    moments, weights = [], []
    for name in ("g_ab", "g_ba", "d_a", "d_b"):
        opt_one = one.g_optimizer if name.startswith("g") else one.d_optimizer
        opt_two = two.g_optimizer if name.startswith("g") else two.d_optimizer
        pairs = zip(getattr(one, name).trainable_weights, getattr(two, name).trainable_weights)
        for v1, v2 in pairs:
            m1 = opt_one._momentums[opt_one._get_variable_index(v1)].numpy()
            m2 = opt_two._momentums[opt_two._get_variable_index(v2)].numpy()
            moments.append((m1.ravel(), m2.ravel()))
            weights.append(np.abs(v1.numpy() - v2.numpy()).ravel())
    m1, m2 = (np.concatenate(m) for m in zip(*moments))
    moment_rel = np.linalg.norm(m1 - m2) / np.linalg.norm(m1)
    weights = np.concatenate(weights)
    pool = np.abs(one.pool_a.images.numpy() - two.pool_a.images.numpy()).max()
    assert int(one.step.numpy()) == int(two.step.numpy()) == steps
    assert moment_rel <= 1e-4, moment_rel
    assert weights.max() <= 2 * lr * steps and np.mean(weights <= 1e-5) >= 0.99, weights.max()
    assert pool <= 1e-3, pool
    return float(moment_rel), float(weights.max())


@pytest.mark.slow(seconds=150)
def test_two_workers_train_like_two_mirrored_devices_and_resume_after_sigterm(tmp_path):
    run_dir, mirrored_dir = tmp_path / "run", tmp_path / "mirrored"
    # 1. The reference: one process on two logical devices (CPUs: `mirrored` would take a GPU).
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    reference = subprocess.run(
        [sys.executable, "-c", MIRRORED_CLI, *MW_ARGS, "--strategy=mirrored"]
        + [f"--output_dir={mirrored_dir}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert reference.returncode == 0, reference.stdout[-2000:] + reference.stderr[-2000:]
    assert "2 replica(s)" in reference.stdout

    # 2. Two workers, uninterrupted; both get the same --output_dir (a shared filesystem).
    with _Workers(tmp_path, [run_dir, run_dir]) as workers:
        assert workers.finish(timeout=300) == [0, 0], workers.text(0)[-2000:] + workers.text(1)
    chief, other = workers.text(0), workers.text(1)
    assert "this is the chief (worker 0 of 2)" in chief and "this is worker 1 of 2" in other
    assert "precision float32" in other and "step 2/8" not in other  # the worker keeps quiet
    # Only the chief wrote: the run's files once (no second log, metrics line or copy), the
    # other worker's temporary checkpoints gone.
    names = {p.name for p in run_dir.iterdir()}
    assert names == {p.name for p in mirrored_dir.iterdir()}
    assert names == {
        ".lock",
        "checkpoints",
        "config.json",
        "data.json",
        "file_checks.json",
        "images",
        "logs",
        "metrics.jsonl",
        "score.json",
    }
    steps = [json.loads(line)["step"] for line in open(run_dir / "metrics.jsonl")]
    assert steps == [2, 4, 6, 8]
    assert len(os.listdir(run_dir / "logs")) == 1
    assert sorted(os.listdir(run_dir / "checkpoints")) == sorted(
        os.listdir(mirrored_dir / "checkpoints")
    )
    assert not [p for d in workers.tmpdirs for p in d.iterdir() if "cyclegan_tf_worker" in p.name]
    uninterrupted = _variables(tf.train.latest_checkpoint(str(run_dir / "checkpoints")))
    _close_to_mirrored(_restored_model(mirrored_dir), _restored_model(run_dir), MW_STEPS)

    # 3. SIGTERM to the worker that is not the chief once the loop starts (during the first
    #    step, which traces for seconds; after it the 8 steps take ~3 s, which a loaded host
    #    spent before the signal arrived): both save the same step and exit 143. This worker
    #    gets an --output_dir of its own, which must stay absent: a new run reads nothing there
    #    and writes nothing anywhere but the chief's directory.
    resumed_dir, elsewhere = tmp_path / "resumed", tmp_path / "not_the_chief"
    with _Workers(tmp_path, [resumed_dir, elsewhere]) as workers:
        workers.wait_for(0, "Starting at step", timeout=300)
        workers.procs[1].send_signal(signal.SIGTERM)
        codes = workers.finish(timeout=120)
    assert codes == [128 + signal.SIGTERM] * 2, workers.text(0)[-2000:] + workers.text(1)
    texts = [workers.text(0), workers.text(1)]
    stopped = [int(t.split("Interrupted at step ")[1].split(";")[0]) for t in texts]
    assert stopped[0] == stopped[1] < MW_STEPS, stopped
    assert tf.train.latest_checkpoint(str(resumed_dir / "checkpoints")).endswith(
        f"ckpt-{stopped[0]}"
    )
    assert not elsewhere.exists()

    # 4. The same command again resumes both workers from the chief's checkpoint and ends with
    #    exactly the weights of the uninterrupted run.
    with _Workers(tmp_path, [resumed_dir, resumed_dir]) as workers:
        assert workers.finish(timeout=300) == [0, 0], workers.text(0)[-2000:] + workers.text(1)
    assert f"Resuming from {resumed_dir / 'checkpoints'}/ckpt-{stopped[0]}" in workers.text(1)
    resumed = _variables(tf.train.latest_checkpoint(str(resumed_dir / "checkpoints")))
    assert set(resumed) == set(uninterrupted)
    # save_counter counts writes, not training: the save on SIGTERM is one more unless the signal
    # landed on a step that saves anyway (the CI run of 85abccf stopped elsewhere: 3 against 2).
    counter = "save_counter/.ATTRIBUTES/VARIABLE_VALUE"
    assert resumed.pop(counter) - uninterrupted.pop(counter) in (0, 1)
    for name, value in uninterrupted.items():
        np.testing.assert_array_equal(resumed[name], value, err_msg=name)


def test_a_checkpoint_of_another_model_is_reported_not_skipped(tmp_path):
    run = str(tmp_path / "run")
    training.train(_tiny(max_steps=2), run, verbose=0)
    # A newer checkpoint that reads fine but holds another model (another version or config).
    other = trainer.CycleGAN(_tiny(ngf=16, precision="float32"), steps_per_epoch=8)
    checkpoints.Checkpointer(other.checkpoint_objects(), run).save(3)
    with pytest.raises(checkpoints.CheckpointError, match="holds a different model"):
        training.train(_tiny(max_steps=4), run, verbose=0)
