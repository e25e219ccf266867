"""Native runtimes' output on file descriptor 2: captured, filtered, and what matters re-emitted.

TensorFlow prints CUDA probing and CPU-feature notices while it is imported and initialises its
devices, before its logging is configured (so TF_CPP_MIN_LOG_LEVEL does not silence them), and
LiteRT prints a notice when it applies its XNNPACK delegate. They go straight to file descriptor
2 from C++, past `sys.stderr`. `quiet()` redirects descriptor 2 for a block of code and lets
through only the lines `filter_lines` keeps: on a machine without a GPU these notices disappear, a
GPU that exists but fails to initialise is reported in one line, and any other native error is
shown. CYCLEGAN_TF_RAW_STDERR=1 turns the capture off.

A process may die inside the block: TensorFlow's CPU-feature check logs "The TensorFlow library
was compiled to use AVX instructions, but these aren't available on your machine." and aborts
during the import. Text captured by the process itself dies with it, so before TensorFlow is
imported (a small process with few threads, cheap and safe to fork) a forked filter process reads
the redirected descriptor and passes the kept lines on as they arrive; it ends when every writer
is gone, the aborted process included. Once TensorFlow's threads exist (LiteRT's per-call
notices), forking is neither cheap nor safe: the block's output goes to a temporary file,
filtered at the end.

Pure Python (no TensorFlow import), so the CLI can use it before TensorFlow is imported.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import tempfile
import time

# Notices printed on every CPU-only start, LiteRT's delegate notice and the settings line the
# TFLite quantizer prints for every int8 quantization.
_NOISE = re.compile(
    r"All log messages before absl::InitializeLog|cudart_stub|Could not find cuda drivers|"
    r"cuda_(platform|executor|dnn|fft|blas|diagnostics)|failed call to cuInit|cpu_feature_guard|"
    r"This TensorFlow binary is optimized|To enable the following instructions|oneDNN custom "
    r"operations|computation_placer|TF-TRT Warning|Unable to register cu(DNN|FFT|BLAS) factory|"
    r"Attempting to register factory|^INFO: Created TensorFlow Lite XNNPACK delegate for CPU|"
    r"^fully_quantize: \d+, inference_type: "
)
_INFO_OR_WARNING = re.compile(r"^[IW]\d{4} ")  # native INFO/WARNING lines: "I0000 00:00:..."
# Never dropped, whatever else they match: a fatal log line ("F0000 ... cpu_feature_guard.cc:...]
# The TensorFlow library was compiled to use AVX ...", then abort) and a failed CHECK.
_FATAL = re.compile(r"^F\d{4} |Check failed|The TensorFlow library was compiled to use")
# How long the end of a streaming block waits for the filter process to pass on what is left.
_DRAIN_TIMEOUT_S = 5.0


def gpu_present() -> bool:
    """Whether this machine has an NVIDIA GPU device node (Linux) or WSL's GPU device."""
    return any(os.path.exists(p) for p in ("/dev/nvidia0", "/dev/nvidiactl", "/dev/dxg"))


def filter_lines(text: str, gpu_present: bool) -> list[str]:
    """The lines of captured native output worth showing.

    CUDA and CPU-feature notices, native INFO/WARNING lines and LiteRT's delegate notice are
    dropped; where a GPU exists but CUDA fails to initialise, one line says so. Other native
    errors are kept, and fatal lines always.
    """
    out = []
    for line in text.splitlines():
        if _FATAL.search(line):
            out.append(line)
        elif "failed call to cuInit" in line and gpu_present:
            reason = line.split("failed call to cuInit:", 1)[1].strip()
            out.append(
                f"cyclegan-tf: warning: a GPU is present but CUDA could not initialise it "
                f"({reason}); TensorFlow runs on the CPU."
            )
        elif line.strip() and not _NOISE.search(line) and not _INFO_OR_WARNING.match(line):
            out.append(line)
    return out


@contextlib.contextmanager
def quiet(streaming: bool | None = None):
    """Redirects file descriptor 2 during the block; stderr gets the lines `filter_lines` keeps
    (also when the block raises).

    Args:
      streaming: pass the kept lines on as they arrive through a forked filter process, so that
        they reach stderr even if this process dies inside the block (module docstring). None:
        only while TensorFlow is not imported yet; otherwise captured and filtered at the end.
    """
    if os.environ.get("CYCLEGAN_TF_RAW_STDERR") == "1":
        yield
        return
    if streaming is None:
        streaming = "tensorflow" not in sys.modules
    streaming = streaming and hasattr(os, "fork")
    sys.stderr.flush()
    with _streamed() if streaming else _captured():
        yield


@contextlib.contextmanager
def _captured():
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode(errors="replace")
            for line in filter_lines(text, gpu_present()):
                print(line, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _streamed():
    gpu = gpu_present()  # before the fork: the filter process only reads, filters and writes
    read_end, write_end = os.pipe()
    try:
        pid = os.fork()
    except OSError:  # no process to spare: capture instead
        os.close(read_end)
        os.close(write_end)
        with _captured():
            yield
        return
    if pid == 0:  # the filter process: stderr is still the real one here
        try:
            os.close(write_end)
            _filter_stream(read_end, gpu)
        finally:
            os._exit(0)
    os.close(read_end)
    saved = os.dup(2)
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # this process's last write end of the pipe: the filter reads EOF
        os.close(saved)
        _wait_for(pid, _DRAIN_TIMEOUT_S)


def _filter_stream(fd: int, gpu: bool) -> None:
    """The filter process: reads `fd` until every writer has closed it (or died) and writes the
    kept lines to descriptor 2 as each line completes."""
    for sig in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C reaches the whole process group: the
        signal.signal(sig, signal.SIG_IGN)  # filter ends with its writers, never before them
    pending = b""
    while True:
        chunk = os.read(fd, 65536)
        pending += chunk
        lines = pending.split(b"\n")
        pending = lines.pop() if chunk else b""
        kept = filter_lines(b"\n".join(lines).decode(errors="replace"), gpu)
        if kept:
            os.write(2, ("\n".join(kept) + "\n").encode())
        if not chunk:
            return


def _wait_for(pid: int, timeout: float) -> None:
    """Reaps the filter process; gives up after `timeout` s (a process started inside the block
    may still hold the pipe: the filter then ends with it)."""
    deadline = time.monotonic() + timeout
    while True:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done or time.monotonic() > deadline:
            return
        time.sleep(0.001)
