"""The one probe of the hardware, and every choice the package makes from it (the "arms").

Some choices are right on one kind of machine and wrong on another. Each is made here, from one
probe, has a stock twin, and can be forced either way, so that a test or a user can run any arm
on any host (tests/test_hardware.py trains with all of them on and all off):

- precision `auto`: `mixed_bfloat16` where the devices compute bfloat16 natively (GPUs of compute
  capability >= 8.0; x86 CPUs with AVX512_BF16 or AMX-BF16), else `float32`.
  `CYCLEGAN_TF_CPU_BF16=0|1` replaces what the CPU reports.
- oneDNN: TensorFlow's own choice, its oneDNN CPU kernels by default on CPUs with AVX512_VNNI,
  AVX512_BF16 or AMX, its Eigen kernels elsewhere. TensorFlow's `TF_ENABLE_ONEDNN_OPTS=0|1`
  (read by TensorFlow at import) forces it; the other arms follow what TensorFlow runs.
- conv gradients: `forward` (stride-1 conv gradients computed as forward convolutions,
  `layers.Conv2D`) where TensorFlow runs its Eigen CPU kernels, whose gradient kernels are slow
  for these shapes; `stock` (TensorFlow's) with oneDNN or a GPU.
  `CYCLEGAN_TF_CONV_GRADIENTS=stock|forward`.
- inlining: the train step's nested network functions stay calls (`_noinline`) on a CPU-only
  machine (~1 s less first-call time); inlined with a GPU (Grappler optimises across them there).
  `CYCLEGAN_TF_INLINE=0|1`.
- Grappler: TensorFlow's graph optimiser off on a CPU-only machine (1.5-2 s of rewrites before the
  first step, no gain per step; bench/RESULTS.md); on with a GPU (layout rewrites, fusions for
  cuDNN). `CYCLEGAN_TF_GRAPPLER=0|1`.

The stock twin of every arm is what TensorFlow and Keras do unasked: TensorFlow's conv gradients,
inlined functions, Grappler on (and float32, oneDNN as TensorFlow decides). `describe()` is the
start line's account of the arms in use and of every override.

GPU memory growth (`configure_gpus`) is decided here too, once per process, before anything
initialises the GPUs.

Overrides are read here only: from the environment at the first probe (a bad value is a one-line
`ConfigError`), or in-process with `force(...)` (tests). The CPU half of the probe reads
/proc/cpuinfo (sysctl on macOS) and never imports TensorFlow, so the CLI can resolve and validate
before the slow import; the TensorFlow half (GPUs, oneDNN) imports it. The probe never fails:
what cannot be read counts as absent (float32, never slower than float32).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import platform
import subprocess
from collections.abc import Iterator

from absl import logging

from cyclegan_tf import errors

# CPU feature flags (as /proc/cpuinfo spells them) that mean native bfloat16 arithmetic.
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
# Vector features worth naming in start lines and benchmark records.
REPORTED_CPU_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "amx_bf16",
    "amx_tile",
)
MIN_BF16_GPU_CAPABILITY = (8, 0)

# The overrides: environment variable -> the values it takes (first: off, second: on).
CPU_BF16_ENV = "CYCLEGAN_TF_CPU_BF16"
ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"  # TensorFlow's own; reported, never set here
CONV_GRADIENTS_ENV = "CYCLEGAN_TF_CONV_GRADIENTS"
INLINE_ENV = "CYCLEGAN_TF_INLINE"
GRAPPLER_ENV = "CYCLEGAN_TF_GRAPPLER"
_BOOL_VALUES = {"0": False, "1": True}
CONV_GRADIENTS = ("stock", "forward")
ENV_CHOICES = {
    CPU_BF16_ENV: tuple(_BOOL_VALUES),
    CONV_GRADIENTS_ENV: CONV_GRADIENTS,
    INLINE_ENV: tuple(_BOOL_VALUES),
    GRAPPLER_ENV: tuple(_BOOL_VALUES),
}

# In-process overrides (`force`): arm name -> value; they win over the environment.
_forced: dict[str, object] = {}


# -- the CPU ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CpuInfo:
    """What the CPU reports. `flags` uses /proc/cpuinfo's lower-case names (avx512_bf16, ...)."""

    model: str
    machine: str
    flags: frozenset[str]

    @property
    def native_bfloat16(self) -> bool:
        """What the CPU itself reports (overrides do not change it: see `Probe.cpu_bf16`)."""
        return self.machine in ("x86_64", "amd64") and any(
            flag in self.flags for flag in NATIVE_BF16_CPU_FLAGS
        )

    @property
    def vector_features(self) -> list[str]:
        """The reported features this CPU has, in a fixed order (e.g. ['avx2', 'fma'])."""
        return [flag for flag in REPORTED_CPU_FLAGS if flag in self.flags]

    def describe(self) -> str:
        """One short phrase, e.g. 'CPU AMD EPYC 7B13 (avx2 fma)'."""
        return f"CPU {self.model} ({' '.join(self.vector_features) or 'features unknown'})"


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


# -- overrides ----------------------------------------------------------------------------------


def env_override(name: str) -> str | None:
    """The value of override variable `name` (one of `ENV_CHOICES`), or None when unset/empty.

    Raises:
      errors.ConfigError: a value the variable does not take.
    """
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    choices = ENV_CHOICES[name]
    if value.lower() not in choices:
        raise errors.ConfigError(
            f"{name} must be one of {', '.join(choices)} (or unset: chosen from the hardware). "
            f"Received: {name}={value!r}"
        )
    return value.lower()


def check_environment() -> None:
    """Raises ConfigError on the first override variable with a bad value (the CLI calls it
    before the slow import, so a typo is one line, not a traceback minutes later)."""
    for name in ENV_CHOICES:
        env_override(name)
    onednn = os.environ.get(ONEDNN_ENV, "").strip().lower()
    if onednn and onednn not in ("0", "1", "true", "false"):
        raise errors.ConfigError(
            f"{ONEDNN_ENV} must be 0 or 1 (TensorFlow's switch for its oneDNN kernels; unset: "
            f"TensorFlow decides). Received: {ONEDNN_ENV}={onednn!r}"
        )


@contextlib.contextmanager
def force(**arms) -> Iterator[None]:
    """Forces arms in this process while inside (tests; wins over the environment).

    Args:
      **arms: any of `cpu_bf16` (bool), `conv_gradients` ("stock" | "forward"), `inline` (bool),
        `grappler` (bool). oneDNN cannot be forced in-process: TensorFlow reads
        `TF_ENABLE_ONEDNN_OPTS` once, at import.

    The arms are read where they are used: the conv gradients when a graph is traced, inlining
    when a `trainer.CycleGAN` is built, Grappler by `apply_grappler` (`train.configure_tensorflow`).
    """
    unknown = set(arms) - {"cpu_bf16", "conv_gradients", "inline", "grappler"}
    if unknown:
        raise TypeError(f"force() got unknown arms: {', '.join(sorted(unknown))}")
    if "conv_gradients" in arms and arms["conv_gradients"] not in CONV_GRADIENTS:
        raise ValueError(f"conv_gradients must be one of {CONV_GRADIENTS}")
    previous = dict(_forced)
    _forced.update(arms)
    try:
        yield
    finally:
        _forced.clear()
        _forced.update(previous)


def _bool_arm(arm: str, env: str, chosen: bool) -> tuple[bool, str | None]:
    """(value, how it was overridden or None) for an on/off arm."""
    if arm in _forced:
        return bool(_forced[arm]), f"{arm}={int(bool(_forced[arm]))} (forced)"
    value = env_override(env)
    if value is not None:
        return _BOOL_VALUES[value], f"{env}={value}"
    return chosen, None


# -- the TensorFlow half of the probe -----------------------------------------------------------


@functools.lru_cache(maxsize=1)
def gpus() -> tuple[tuple[str, tuple[int, int] | None], ...]:
    """The GPUs TensorFlow sees: (name, compute capability or None). Does not initialise them.

    Cached: the devices of a process do not change (tests that pretend GPUs clear the cache).
    """
    import tensorflow as tf

    found = []
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            details = tf.config.experimental.get_device_details(gpu)
        except (ValueError, RuntimeError):
            details = {}
        cc = details.get("compute_capability")
        found.append((details.get("device_name", gpu.name), tuple(cc) if cc else None))
    return tuple(found)


@functools.lru_cache(maxsize=1)
def onednn() -> bool:
    """Whether TensorFlow runs its oneDNN CPU kernels in this process (decided at its import,
    from `TF_ENABLE_ONEDNN_OPTS` or, unset, the CPU's features)."""
    import tensorflow  # noqa: F401  (IsMklEnabled is decided at import)

    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:  # pragma: no cover - a TensorFlow that moved it
        return False
    return bool(_pywrap_util_port.IsMklEnabled())


def reset() -> None:
    """Forgets the cached probe (tests that pretend devices or change the environment)."""
    cpu_info.cache_clear()
    gpus.cache_clear()
    onednn.cache_clear()


# -- the arms -----------------------------------------------------------------------------------


def cpu_bf16() -> tuple[bool, str | None]:
    """(whether the CPU computes bfloat16 natively, the override or None). `CYCLEGAN_TF_CPU_BF16`
    replaces what the CPU reports; no TensorFlow import."""
    return _bool_arm("cpu_bf16", CPU_BF16_ENV, cpu_info().native_bfloat16)


@dataclasses.dataclass(frozen=True)
class Resolution:
    """A resolved precision and why it was chosen."""

    precision: str
    reason: str


def auto_precision(
    gpu_list: tuple[tuple[str, tuple[int, int] | None], ...] | None = None,
    cpu_native_bf16: bool | None = None,
) -> Resolution:
    """What `--precision=auto` means here: the fastest precision the devices compute natively.

    Args:
      gpu_list: the GPUs (default: `gpus()`, which imports TensorFlow).
      cpu_native_bf16: whether the CPU computes bfloat16 natively (default: `cpu_bf16()`, i.e.
        the CPU's report or its override).

    - NVIDIA GPUs: `mixed_bfloat16` when every GPU has compute capability >= 8.0 (Ampere and newer
      compute bfloat16 natively in their tensor cores), else `float32`. `mixed_float16` would use
      the tensor cores of 7.x GPUs too, but needs loss scaling and was not measured here (no
      GPU), so `auto` does not pick it.
    - CPUs: `mixed_bfloat16` only with native bfloat16 (x86 AVX512_BF16 or AMX-BF16), else
      `float32`: emulated bfloat16 is slower than float32 (AVX2-only EPYC: quick preset 0.27 it/s
      in bfloat16 vs 2.07 in float32). ARM CPUs resolve to `float32` (not measured).
    """
    gpu_list = gpus() if gpu_list is None else gpu_list
    if gpu_list:
        if all(cc is not None and cc >= MIN_BF16_GPU_CAPABILITY for _, cc in gpu_list):
            return Resolution("mixed_bfloat16", "auto: every GPU computes bfloat16 natively")
        return Resolution(
            "float32", "auto: a GPU below compute capability 8.0 (no native bfloat16)"
        )
    if cpu_native_bf16 is None:
        native, override = cpu_bf16()
    else:
        native, override = cpu_native_bf16, None
    how = f"{override}: " if override else "the CPU has "
    if native:
        return Resolution("mixed_bfloat16", f"auto: {how}native bfloat16")
    return Resolution("float32", f"auto: {how}no native bfloat16")


def conv_gradients() -> str:
    """`stock` (TensorFlow's conv gradient kernels) or `forward` (`layers.Conv2D` computes
    stride-1 conv gradients as forward convolutions).

    `forward` only where TensorFlow runs its Eigen CPU kernels: their weight and input gradients
    are slow for these networks' shapes (a 7x7 conv to 3 channels: 157 ms weight gradient, 114 ms
    input gradient, 11 ms forward; bench/RESULTS.md). cuDNN (GPU) and oneDNN (CPU) have fast
    ones. Read when a graph is traced.
    """
    return _conv_gradients()[0]


def _conv_gradients() -> tuple[str, str | None]:
    if "conv_gradients" in _forced:
        value = str(_forced["conv_gradients"])
        return value, f"conv_gradients={value} (forced)"
    value = env_override(CONV_GRADIENTS_ENV)
    if value is not None:
        return value, f"{CONV_GRADIENTS_ENV}={value}"
    return ("stock" if gpus() or onednn() else "forward"), None


def inline_functions() -> bool:
    """Whether the train step's nested network functions are inlined (stock) or stay calls
    (`_noinline`; CPU-only machines: the runtime builds each network's graph once instead of
    inlining three calls of each into one 15,850-node graph, first call ~2 -> ~1 s, same step
    time). With a GPU they are inlined: Grappler optimises across them there."""
    return _bool_arm("inline", INLINE_ENV, bool(gpus()))[0]


def grappler() -> bool:
    """Whether Grappler's meta optimizer runs (stock: on). Off on a CPU-only machine: its
    rewrites cost 1.5-2 s before the first step and gained nothing per step on either CPU kind
    (bench/RESULTS.md "Grappler on" rows). On with a GPU (layout rewrites and fusions for cuDNN;
    not measured here)."""
    return _bool_arm("grappler", GRAPPLER_ENV, bool(gpus()))[0]


def apply_grappler() -> None:
    """Sets TensorFlow's process-wide Grappler option to `grappler()`; functions instantiated
    afterwards follow it."""
    import tensorflow as tf

    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": not grappler()})


def overrides() -> list[str]:
    """Every arm that is not what the probe chose, as `NAME=value` (environment) or
    `arm=value (forced)`; TensorFlow's `TF_ENABLE_ONEDNN_OPTS` when set."""
    found = [
        how
        for _, how in (
            cpu_bf16(),
            _conv_gradients(),
            _bool_arm("inline", INLINE_ENV, False),
            _bool_arm("grappler", GRAPPLER_ENV, False),
        )
        if how
    ]
    onednn_env = os.environ.get(ONEDNN_ENV, "").strip()
    if onednn_env:
        found.append(f"{ONEDNN_ENV}={onednn_env}")
    return found


def describe() -> str:
    """The start line's account: devices, then every arm in use, then the overrides.

    E.g. 'CPU AMD EPYC 7B13 (avx2 fma; no native bfloat16); oneDNN off, conv gradients forward,
    calls not inlined, Grappler off; no overrides'.
    """
    native, _ = cpu_bf16()
    if gpus():
        names = ", ".join(
            f"{name} (compute capability {cc[0]}.{cc[1]})" if cc else name for name, cc in gpus()
        )
        where = f"{len(gpus())} GPU(s): {names}"
    else:
        bf16 = "native bfloat16" if native else "no native bfloat16"
        where = f"{cpu_info().describe()[:-1]}; {bf16})"
    arms = (
        f"oneDNN {'on' if onednn() else 'off'}, conv gradients {conv_gradients()}, "
        f"calls {'inlined' if inline_functions() else 'not inlined'}, "
        f"Grappler {'on' if grappler() else 'off'}"
    )
    forced = overrides()
    return f"{where}; {arms}; " + (f"overridden: {', '.join(forced)}" if forced else "no overrides")


# -- GPU memory: taken on demand, decided before anything initialises the GPUs ------------------
#
# By default TensorFlow reserves nearly all of a GPU's memory the first time it touches the GPU, so
# a second process on the same GPU (`cyclegan-tf translate` or `evaluate` while `train` runs)
# fails to allocate. With memory growth each process takes what it uses. It must be set on every
# GPU before TensorFlow initialises any of them, so the entry points call `configure_gpus` first:
# `training.configure_tensorflow`, `exporting.export_run`, `sources.load`, and the CLI for
# every command (`--gpu_memory_growth=false` turns it off). The first call in a process decides;
# later calls without an explicit value keep that decision. TensorFlow's own environment variable
# `TF_FORCE_GPU_ALLOW_GROWTH=true|false` overrides both ways.
#
# Not measured here (no GPU): growing allocations may fragment memory and cost some speed; a
# machine that runs only training can turn growth off.
#
# A process-wide setting by nature (TensorFlow's device configuration is process-wide), hence the
# one module-level record of the decision.

_decision: bool | None = None  # what the first call in this process decided


def configure_gpus(memory_growth: bool | None = None) -> bool | None:
    """Sets memory growth on every GPU TensorFlow sees, before they are initialised.

    Args:
      memory_growth: True or False to decide; None: True, unless an earlier call in this process
        decided already (then that decision stays).

    Returns:
      The setting now in force on the GPUs, or None when there is no GPU or TensorFlow had
      initialised them before (a warning says so; the setting cannot change then).
    """
    global _decision
    if memory_growth is None and _decision is not None:
        return _decision
    growth = True if memory_growth is None else bool(memory_growth)
    import tensorflow as tf

    found = tf.config.list_physical_devices("GPU")
    _decision = growth
    if not found:
        return None
    try:
        for gpu in found:
            tf.config.experimental.set_memory_growth(gpu, growth)
    except RuntimeError as e:  # "Physical devices cannot be modified after being initialized"
        logging.warning(
            "GPU memory growth left as it was (%s): TensorFlow had initialised the GPUs before; "
            "call cyclegan_tf.hardware.configure_gpus() before anything else.",
            str(e).splitlines()[0] if str(e) else type(e).__name__,
        )
        return None
    return growth
