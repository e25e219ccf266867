"""bench/gpu_check.py, the check a user with a GPU runs, run here as a user would (--quick)."""

import os
import re
import subprocess
import sys

import pytest

from cyclegan_tf import hardware

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(__file__)), "bench", "gpu_check.py")


@pytest.mark.slow(seconds=25)
def test_gpu_check_reports_every_check_and_passes():
    # mixed_bfloat16, not `auto`: the mixed precision's bounds are exercised on every host
    # (emulated bfloat16 computes the same roundings as native, only slower).
    proc = subprocess.run(
        [sys.executable, SCRIPT, "--quick", "--precision=mixed_bfloat16"],
        capture_output=True,
        text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        timeout=600,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr[-3000:]
    lines = dict(re.findall(r"^(?:PASS|FAIL|SKIPPED) +(.+?): (.*)$", out, re.M))
    status = {name: s for s, name in re.findall(r"^(PASS|FAIL|SKIPPED) +(.+?): ", out, re.M)}
    assert status and lines, out
    assert "FAIL" not in status.values(), out
    cpu_checks = [
        "train, float32 on the CPU (reference)",
        "export float32, served on the CPU",
        "export mixed_bfloat16, served on the CPU",
    ]
    gpu_checks = [
        "train, mixed_bfloat16 on the GPU vs mixed_bfloat16 on the CPU",
        "export float32, served on the GPU vs the CPU",
        "export mixed_bfloat16, served on the GPU vs the CPU",
        "speed, float32 on the GPU",
        "speed, mixed_bfloat16 on the GPU",
    ]
    if hardware.gpus():  # a GPU runner: everything runs (the speed only without --quick)
        assert "NO GPU" not in out
        device_checks = ["train, mixed_bfloat16 on the GPU vs float32 on the CPU"]
        assert all(status[name] == "PASS" for name in cpu_checks + device_checks + gpu_checks[:3])
        return
    assert out.splitlines()[1].startswith("NO GPU: TensorFlow sees no GPU on this machine")
    assert all(status[name] == "PASS" for name in cpu_checks), out
    # Without a GPU the CPU is the device under test: the precision's bound against float32.
    compared = "train, mixed_bfloat16 on the CPU vs float32 on the CPU"
    assert status[compared] == "PASS" and "losses of step 1" in lines[compared], out
    assert all(status[name] == "SKIPPED" and lines[name] == "no GPU" for name in gpu_checks), out
    assert out.rstrip().endswith("5 passed, 0 failed, 5 skipped (no GPU on this machine)"), out
