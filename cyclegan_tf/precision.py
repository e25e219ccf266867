"""Numeric precision: the names, resolving `auto` from the hardware, the Keras policy, loss scaling.

A precision is a Keras dtype policy name (`float32`, `mixed_bfloat16`, `mixed_float16`) or `auto`,
which `resolve` turns into one of them for the devices at hand:

- NVIDIA GPUs: `mixed_bfloat16` when every GPU has compute capability >= 8.0 (Ampere and newer
  compute bfloat16 natively in their tensor cores), else `float32`. `mixed_float16` would use the
  tensor cores of 7.x GPUs too, but needs loss scaling and was not measured here (no GPU), so
  `auto` does not pick it; ask for it with `--precision=mixed_float16`.
- CPUs: `mixed_bfloat16` only when the CPU computes bfloat16 natively (x86 AVX512_BF16 or
  AMX-BF16), else `float32`. Without native support bfloat16 is emulated and slower than float32:
  on an AVX2-only EPYC the quick preset ran 0.27 it/s in bfloat16 vs 2.07 in float32, and a
  bfloat16 SavedModel served 0.54 vs 1.15 images/s (DESIGN.md). ARM CPUs resolve to `float32`
  (bfloat16 speed there was not measured), as does any CPU whose features cannot be read.

Detection reads `/proc/cpuinfo` on Linux and `sysctl` on macOS; it never fails (unknown means
"no native bfloat16", i.e. float32, never slower than float32). Nothing here imports TensorFlow at
module level, so the CLI can validate precisions before the slow import.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import platform
import subprocess
from collections.abc import Iterator

from cyclegan_tf import devices as devices_lib
from cyclegan_tf import errors

AUTO = "auto"
POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")
PRECISIONS = (AUTO, *POLICIES)

# CPU feature flags (as /proc/cpuinfo spells them) that mean native bfloat16 arithmetic.
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
# Vector features worth naming in start lines and benchmark records.
REPORTED_CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
MIN_BF16_GPU_CAPABILITY = (8, 0)


def check(precision: str, allow_auto: bool = True) -> str:
    """Returns `precision` if it is a known name, else raises ConfigError naming the choices."""
    choices = PRECISIONS if allow_auto else POLICIES
    if precision not in choices:
        raise errors.ConfigError(
            f"precision must be one of {', '.join(choices)}. Received: precision={precision!r}"
        )
    return precision


# -- the hardware ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CpuInfo:
    """What the CPU reports. `flags` uses /proc/cpuinfo's lower-case names (avx512_bf16, ...)."""

    model: str
    machine: str
    flags: frozenset[str]

    @property
    def native_bfloat16(self) -> bool:
        return self.machine in ("x86_64", "amd64") and any(
            flag in self.flags for flag in NATIVE_BF16_CPU_FLAGS
        )

    @property
    def vector_features(self) -> list[str]:
        """The reported features this CPU has, in a fixed order (e.g. ['avx2', 'fma'])."""
        return [flag for flag in REPORTED_CPU_FLAGS if flag in self.flags]

    def describe(self) -> str:
        """One short phrase, e.g. 'CPU AMD EPYC 7B13 (avx2 fma; no native bfloat16)'."""
        features = " ".join(self.vector_features) or "features unknown"
        native = "native bfloat16" if self.native_bfloat16 else "no native bfloat16"
        return f"CPU {self.model} ({features}; {native})"


@functools.lru_cache(maxsize=1)
def cpu_info() -> CpuInfo:
    """Reads the CPU model and feature flags; empty flags when the OS does not tell."""
    machine = platform.machine().lower()
    model, flags = platform.processor() or machine or "unknown", set()
    if os.path.isfile("/proc/cpuinfo"):
        try:
            with open("/proc/cpuinfo") as f:
                text = f.read()
        except OSError:
            text = ""
        for line in text.splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key == "model name" and value.strip():
                model = value.strip()
            elif key in ("flags", "features") and not flags:
                flags = set(value.split())
    elif platform.system() == "Darwin":
        brand = _sysctl("machdep.cpu.brand_string")
        model = brand or model
        # Intel Macs list features in upper case (AVX2, AVX512BF16); Apple silicon reports
        # hw.optional.arm.FEAT_BF16, which does not make TensorFlow's convolutions faster.
        for key in ("machdep.cpu.features", "machdep.cpu.leaf7_features"):
            for name in (_sysctl(key) or "").lower().split():
                flags.add({"avx2.0": "avx2", "avx512bf16": "avx512_bf16"}.get(name, name))
    return CpuInfo(model=model, machine=machine, flags=frozenset(flags))


def _sysctl(key: str) -> str | None:
    try:
        out = subprocess.run(
            ["sysctl", "-n", key], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


@dataclasses.dataclass(frozen=True)
class Devices:
    """The devices TensorFlow will compute on: GPUs (name, compute capability) or the CPU."""

    gpus: tuple[tuple[str, tuple[int, int] | None], ...]
    cpu: CpuInfo

    def describe(self) -> str:
        if not self.gpus:
            return self.cpu.describe()
        names = ", ".join(
            f"{name} (compute capability {cc[0]}.{cc[1]})" if cc else name for name, cc in self.gpus
        )
        return f"{len(self.gpus)} GPU(s): {names}"


def devices() -> Devices:
    """The GPUs TensorFlow sees (with their compute capabilities) and the CPU."""
    import tensorflow as tf

    gpus = []
    for gpu in devices_lib.gpus():
        try:
            details = tf.config.experimental.get_device_details(gpu)
        except (ValueError, RuntimeError):
            details = {}
        cc = details.get("compute_capability")
        gpus.append((details.get("device_name", gpu.name), tuple(cc) if cc else None))
    return Devices(gpus=tuple(gpus), cpu=cpu_info())


@dataclasses.dataclass(frozen=True)
class Resolution:
    """A resolved precision and why it was chosen."""

    precision: str
    reason: str


def resolve(precision: str, on: Devices | None = None) -> Resolution:
    """Turns `auto` into the fastest precision the devices compute natively; others pass through.

    Args:
      precision: one of `PRECISIONS`.
      on: the devices (default: `devices()`, which imports TensorFlow).

    Returns:
      A `Resolution` whose `precision` is one of `POLICIES`.
    """
    check(precision)
    if precision != AUTO:
        return Resolution(precision, "asked for")
    on = on if on is not None else devices()
    if on.gpus:
        capabilities = [cc for _, cc in on.gpus]
        if all(cc is not None and cc >= MIN_BF16_GPU_CAPABILITY for cc in capabilities):
            return Resolution("mixed_bfloat16", "auto: every GPU computes bfloat16 natively")
        return Resolution(
            "float32", "auto: a GPU below compute capability 8.0 (no native bfloat16)"
        )
    if on.cpu.native_bfloat16:
        return Resolution("mixed_bfloat16", "auto: the CPU has native bfloat16")
    return Resolution("float32", "auto: the CPU has no native bfloat16")


# -- Keras policy and loss scaling -----------------------------------------------------------


@contextlib.contextmanager
def policy(precision: str | None) -> Iterator[None]:
    """Sets Keras' global dtype policy to `precision` while layers are built inside, then restores
    the previous one (layers keep the policy they were built with).

    Args:
      precision: one of `POLICIES`, or None to leave the policy alone (`auto` must be resolved
        first).

    Raises:
      ValueError: an unknown or unresolved precision.
    """
    if precision is None:
        yield
        return
    check(precision, allow_auto=False)
    import keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def with_loss_scaling(optimizer, precision: str):
    """Wraps `optimizer` in Keras' dynamic loss scaling where the precision needs it.

    float16 gradients underflow without loss scaling; bfloat16 has float32's range and float32
    needs none, so only `mixed_float16` is wrapped.
    """
    check(precision, allow_auto=False)
    if precision != "mixed_float16":
        return optimizer
    import keras

    return keras.optimizers.LossScaleOptimizer(optimizer, name=f"{optimizer.name}_scaled")
