"""Faults that real machines and clusters have: a native abort while TensorFlow is imported,
--eval_every_epochs without the Inception graph, a signal to one worker of a cluster."""

import os
import signal
import subprocess
import sys
import textwrap

from cyclegan_tf import nativelog

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
