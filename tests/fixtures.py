"""Helpers shared by test modules: a run directory as training leaves it, and generated images."""

import io
import os

import numpy as np
import PIL.Image

from cyclegan_tf import checkpoints, config, trainer


def make_run(run_dir, step=3, **overrides):
    """A run directory as training leaves it: config.json + a checkpoint of a tiny model.

    `overrides` are Config fields on top of the tiny preset (e.g. precision="mixed_bfloat16").
    """
    cfg = config.preset("tiny", **overrides)
    model = trainer.CycleGAN(cfg, steps_per_epoch=4)
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, checkpoints.CONFIG_FILE), "w") as f:
        f.write(cfg.to_json())
    checkpoints.Checkpointer(model.checkpoint_objects(), str(run_dir)).save(step)
    return model


def random_image(height, width, seed, channels=3):
    """uint8 [height, width, channels] noise."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, channels), np.uint8)


def encode(image, fmt):
    """The bytes of `image` (uint8 [H, W, 1|3|4]) as a `fmt` file (PNG, JPEG, BMP, GIF)."""
    buffer = io.BytesIO()
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[image.shape[-1]]
    PIL.Image.fromarray(image.squeeze(-1) if mode == "L" else image, mode).save(buffer, fmt)
    return buffer.getvalue()
