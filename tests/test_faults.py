"""Faults that real machines and clusters have: a native abort while TensorFlow is imported,
--eval_every_epochs without the Inception graph, a signal to one worker of a cluster."""

import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request

import pytest
import test_train

from cyclegan_tf import config, evaluation, metrics, nativelog, training

# What TensorFlow's CPU-feature check logs before it aborts, on a CPU without the instructions
# the wheel was built for (cpu_feature_guard.cc: LOG(FATAL), then abort()).
CPU_FEATURE_FATAL = (
    "F0000 00:00:1796128574.875720 3078 cpu_feature_guard.cc:185] The TensorFlow library was "
    "compiled to use AVX instructions, but these aren't available on your machine."
)
NOISE = (
    "I0000 00:00:1796128574.875720 3078 cudart_stub.cc:31] Could not find cuda drivers on your "
    "machine, GPU will not be used."
)


def _python(code, **env):
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, **env),
    )


# -- a native abort inside nativelog.quiet ------------------------------------------------------


def test_a_native_abort_inside_quiet_still_shows_its_message():
    """The process writes the fatal line to descriptor 2 (as C++ does, past sys.stderr) and
    aborts inside the block, before TensorFlow is imported (as during the CLI's import)."""
    proc = _python(
        f"""
        import os
        from cyclegan_tf import nativelog
        with nativelog.quiet():
            os.write(2, {(NOISE + chr(10)).encode()!r})
            os.write(2, {(CPU_FEATURE_FATAL + chr(10)).encode()!r})
            os.abort()
        """
    )
    assert proc.returncode == -signal.SIGABRT, proc.stderr
    assert CPU_FEATURE_FATAL in proc.stderr.splitlines()
    assert "cudart_stub" not in proc.stderr  # still filtered


def test_quiet_forwards_what_matters_in_order_and_ends_with_the_block():
    proc = _python(
        """
        import os, sys
        from cyclegan_tf import nativelog
        print("before", file=sys.stderr, flush=True)
        for streaming in (None, False):  # before TensorFlow's import: a filter process; else a file
            with nativelog.quiet(streaming=streaming):
                os.write(2, b"E0000 00:00:1.0 1 kernel.cc:1] a native error\\n")
                os.write(2, b"I0000 00:00:1.0 1 cudart_stub.cc:31] Could not find cuda drivers\\n")
                os.write(2, b"no newline at the end")
            print("after", file=sys.stderr, flush=True)
        """
    )
    assert proc.returncode == 0, proc.stderr
    block = ["E0000 00:00:1.0 1 kernel.cc:1] a native error", "no newline at the end", "after"]
    assert proc.stderr.splitlines() == ["before", *block, *block]


def test_fatal_lines_are_never_filtered():
    assert nativelog.filter_lines(f"{NOISE}\n{CPU_FEATURE_FATAL}\n", gpu_present=False) == [
        CPU_FEATURE_FATAL
    ]
    check = "F0000 00:00:1.0 1 cuda_executor.cc:1] Check failed: device != nullptr"
    assert nativelog.filter_lines(check, gpu_present=True) == [check]


# -- --eval_every_epochs without the Inception graph ---------------------------------------------


def _no_network(*args, **kwargs):
    raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


def _assert_graph_error(message):
    assert "\n" not in message.strip(), message
    assert metrics.GRAPH_FLAG in message and "drop --eval_every_epochs" in message, message


def test_eval_every_epochs_without_a_graph_fails_before_training(tmp_path, monkeypatch):
    monkeypatch.setenv("CYCLEGAN_TF_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    run = tmp_path / "run"
    tiny = config.preset("tiny", max_steps=2, precision="float32")
    with pytest.raises(metrics.MetricsError) as error:
        training.train(tiny, str(run), verbose=0, eval_every_epochs=1)
    _assert_graph_error(str(error.value))
    assert not run.exists()  # nothing written, no checkpoint
    with pytest.raises(metrics.MetricsError, match="does not exist") as error:
        training.train(tiny, str(run), verbose=0, eval_every_epochs=1, inception_graph="typo.pb")
    _assert_graph_error(str(error.value))
    assert not run.exists()


def test_the_graph_check_downloads_nothing_when_the_graph_is_given_or_cached(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("downloaded"))
    given = tmp_path / "given.pb"
    given.write_bytes(b"x")
    assert evaluation.inception_graph_for_training(1, str(given)) == str(given)
    cache = tmp_path / "cache"
    cache.mkdir()
    with open(cache / metrics.GRAPH_FILE, "wb") as f:  # the expected size, sparse
        f.truncate(metrics.GRAPH_SIZE)
    monkeypatch.setenv("CYCLEGAN_TF_CACHE", str(cache))
    assert evaluation.inception_graph_for_training(1) == str(cache / metrics.GRAPH_FILE)
    assert evaluation.inception_graph_for_training(0) is None


@pytest.mark.slow(seconds=15)
def test_cli_eval_every_epochs_without_a_graph_is_one_line_exit_2(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "cyclegan_tf.cli", "train", "--preset=tiny", "--max_steps=2"]
        + ["--precision=float32", "--eval_every_epochs=1", f"--output_dir={run}"],
        capture_output=True,
        text=True,
        timeout=300,
        # No graph in the cache, and no network: every HTTP request goes to a closed port.
        env=dict(
            {k: v for k, v in os.environ.items() if k.lower() not in ("no_proxy", "http_proxy")},
            CYCLEGAN_TF_CACHE=str(tmp_path / "empty_cache"),
            http_proxy=f"http://127.0.0.1:{_closed_port()}",
        ),
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith("cyclegan-tf: error: ") and len(proc.stderr.splitlines()) == 1
    _assert_graph_error(proc.stderr)
    assert "Starting at step" not in proc.stdout and not run.exists()


def _closed_port():
    with socket.socket() as s:  # a port just freed, where nothing listens: refused at once
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- SIGINT to one worker of a cluster at any moment ---------------------------------------------

FAULT_ARGS = ["train", "--preset=tiny", "--batch_size=2", "--max_steps=200", "--precision=float32"]
# When the signal is sent: (what runs then, the chief's output line to wait for or None for the
# launch, the range of the random delay after it in seconds). The first two land in the start-up:
# importing TensorFlow (the CLI's stop handling is installed ~0.2 s after launch), joining the
# cluster, the start-up agreements (mode, precision, data; the run directory; the restore).
MOMENTS = [
    ("importing TensorFlow", None, (0.8, 2.0)),
    ("joining the cluster and agreeing", None, (2.0, 6.0)),
    ("after the start-up agreements", "Starting at step", (0.0, 0.5)),
    ("training", "First step finished", (0.0, 1.0)),
]
ENDED_MESSAGES = (
    "Interrupted at step",  # every worker stopped together
    "Another worker of the cluster stopped or was lost",  # its collectives were aborted
    "this worker stops now without saving",  # no agreement within cluster.GRACE_SECONDS
)


@pytest.mark.slow(seconds=90)
def test_sigint_to_one_worker_at_random_moments_ends_every_worker_within_60_s(tmp_path):
    rng = random.Random(20261207)
    report = []
    for index, (moment, marker, (low, high)) in enumerate(MOMENTS):
        target, delay = rng.choice([0, 1]), rng.uniform(low, high)
        run = tmp_path / f"run_{index}"
        with test_train._Workers(tmp_path, [run, run], FAULT_ARGS) as workers:
            if marker:
                workers.wait_for(0, marker, timeout=300)
            time.sleep(delay)
            trained = "First step finished" in workers.text(0)
            assert [p.poll() for p in workers.procs] == [None, None], workers.text(0)
            workers.procs[target].send_signal(signal.SIGINT)
            sent, ended = time.monotonic(), [None, None]
            while None in ended and time.monotonic() - sent < 60:
                for i, proc in enumerate(workers.procs):
                    if ended[i] is None and proc.poll() is not None:
                        ended[i] = time.monotonic() - sent
                time.sleep(0.05)
            time.sleep(0.2)  # the collector threads reach the end of the output
            texts = [workers.text(0), workers.text(1)]
            where = f"{moment} (worker {target}, {delay:.2f} s): {ended}\n" + "\n".join(
                t[-1500:] for t in texts
            )
            assert None not in ended, where  # both within 60 s of the signal
            codes = [p.returncode for p in workers.procs]
            assert codes[target] == 128 + signal.SIGINT and codes[1 - target] == 143, where
            for text in texts:
                assert "Traceback" not in text and any(m in text for m in ENDED_MESSAGES), where
            if all("Interrupted at step" in t for t in texts):  # together: the same step
                steps = [int(t.split("Interrupted at step ")[1].split(";")[0]) for t in texts]
                assert steps[0] == steps[1], where
        report.append(
            f"{moment}{' (training ran)' if trained else ''}: worker {target} "
            f"signalled {delay:.2f} s in, ended after {ended[0]:.1f} / {ended[1]:.1f} s"
        )
    print("\n".join(report))
