"""How a process takes its GPUs: memory on demand, decided before anything initialises them.

By default TensorFlow reserves nearly all of a GPU's memory the first time it touches the GPU, so
a second process on the same GPU (`cyclegan-tf translate` or `evaluate` while `train` runs)
fails to allocate. With memory growth each process takes what it uses. It must be set on every
GPU before TensorFlow initialises any of them, so the entry points call `configure_gpus` first:
`training.configure_tensorflow`, `exporting.export_run`, `sources.load`, and the CLI for
every command (`--gpu_memory_growth=false` turns it off). The first call in a process decides; later
calls without an explicit value keep that decision. TensorFlow's own environment variable
`TF_FORCE_GPU_ALLOW_GROWTH=true|false` overrides both ways.

Not measured here (no GPU): growing allocations may fragment memory and cost some speed; a
machine that runs only training can turn growth off.

A process-wide setting by nature (TensorFlow's device configuration is process-wide), hence the
one module-level record of the decision.
"""

from __future__ import annotations

from absl import logging

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
            "call cyclegan_tf.devices.configure_gpus() before anything else.",
            str(e).splitlines()[0] if str(e) else type(e).__name__,
        )
        return None
    return growth
