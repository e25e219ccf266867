"""Native runtimes' output on file descriptor 2: captured, filtered, and what matters re-emitted.

TensorFlow prints CUDA probing and CPU-feature notices while it is imported and initialises its
devices, before its logging is configured (so TF_CPP_MIN_LOG_LEVEL does not silence them), and
LiteRT prints a notice when it applies its XNNPACK delegate. They go straight to file descriptor
2 from C++, past `sys.stderr`. `quiet()` captures descriptor 2 in a temporary file for a block of
code and afterwards prints only the lines `filter_lines` keeps: on a machine without a GPU these
notices disappear, a GPU that exists but fails to initialise is reported in one line, and any
other native error is shown. CYCLEGAN_TF_RAW_STDERR=1 turns the capture off.

Pure Python (no TensorFlow import), so the CLI can use it before TensorFlow is imported.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile

# Notices printed on every CPU-only start, and LiteRT's delegate notice.
_NOISE = re.compile(
    r"All log messages before absl::InitializeLog|cudart_stub|Could not find cuda drivers|"
    r"cuda_(platform|executor|dnn|fft|blas|diagnostics)|failed call to cuInit|cpu_feature_guard|"
    r"This TensorFlow binary is optimized|To enable the following instructions|oneDNN custom "
    r"operations|computation_placer|TF-TRT Warning|Unable to register cu(DNN|FFT|BLAS) factory|"
    r"Attempting to register factory|^INFO: Created TensorFlow Lite XNNPACK delegate for CPU"
)
_INFO_OR_WARNING = re.compile(r"^[IW]\d{4} ")  # native INFO/WARNING lines: "I0000 00:00:..."


def gpu_present() -> bool:
    """Whether this machine has an NVIDIA GPU device node (Linux) or WSL's GPU device."""
    return any(os.path.exists(p) for p in ("/dev/nvidia0", "/dev/nvidiactl", "/dev/dxg"))


def filter_lines(text: str, gpu_present: bool) -> list[str]:
    """The lines of captured native output worth showing.

    CUDA and CPU-feature notices, native INFO/WARNING lines and LiteRT's delegate notice are
    dropped; where a GPU exists but CUDA fails to initialise, one line says so. Other native
    errors are kept.
    """
    out = []
    for line in text.splitlines():
        if "failed call to cuInit" in line and gpu_present:
            reason = line.split("failed call to cuInit:", 1)[1].strip()
            out.append(
                f"cyclegan-tf: warning: a GPU is present but CUDA could not initialise it "
                f"({reason}); TensorFlow runs on the CPU."
            )
        elif line.strip() and not _NOISE.search(line) and not _INFO_OR_WARNING.match(line):
            out.append(line)
    return out


@contextlib.contextmanager
def quiet():
    """Captures file descriptor 2 during the block; afterwards prints the lines `filter_lines`
    keeps to stderr (also when the block raises)."""
    if os.environ.get("CYCLEGAN_TF_RAW_STDERR") == "1":
        yield
        return
    sys.stderr.flush()
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
