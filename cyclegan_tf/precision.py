"""Numeric precision: the names, resolving `auto`, the Keras policy, loss scaling.

A precision is a Keras dtype policy name (`float32`, `mixed_bfloat16`, `mixed_float16`) or `auto`,
which `resolve` turns into one of them for the devices at hand (`hardware.auto_precision` decides,
and `CYCLEGAN_TF_CPU_BF16=0|1` overrides what the CPU reports):

- NVIDIA GPUs: `mixed_bfloat16` when every GPU has compute capability >= 8.0 (Ampere and newer
  compute bfloat16 natively in their tensor cores), else `float32`. `mixed_float16` would use the
  tensor cores of 7.x GPUs too, but needs loss scaling and was not measured here (no GPU), so
  `auto` does not pick it; ask for it with `--precision=mixed_float16`.
- CPUs: `mixed_bfloat16` only when the CPU computes bfloat16 natively (x86 AVX512_BF16 or
  AMX-BF16), else `float32`. Without native support bfloat16 is emulated and slower than float32:
  on an AVX2-only EPYC the quick preset ran 0.27 it/s in bfloat16 vs 2.07 in float32, and a
  bfloat16 SavedModel served 0.54 vs 1.15 images/s (DESIGN.md). ARM CPUs resolve to `float32`
  (bfloat16 speed there was not measured), as does any CPU whose features cannot be read.

Nothing here imports TensorFlow at module level, so the CLI can validate precisions before the slow
import.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from cyclegan_tf import errors, hardware

AUTO = "auto"
POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")
PRECISIONS = (AUTO, *POLICIES)


def check(precision: str, allow_auto: bool = True) -> str:
    """Returns `precision` if it is a known name, else raises ConfigError naming the choices."""
    choices = PRECISIONS if allow_auto else POLICIES
    if precision not in choices:
        raise errors.ConfigError(
            f"precision must be one of {', '.join(choices)}. Received: precision={precision!r}"
        )
    return precision


def resolve(precision: str) -> hardware.Resolution:
    """Turns `auto` into the fastest precision this machine's devices compute natively
    (`hardware.auto_precision`: the one place that reads the hardware and its overrides);
    others pass through.

    Args:
      precision: one of `PRECISIONS`.

    Returns:
      A `hardware.Resolution` whose `precision` is one of `POLICIES`.
    """
    check(precision)
    if precision != AUTO:
        return hardware.Resolution(precision, "asked for")
    return hardware.auto_precision()


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
