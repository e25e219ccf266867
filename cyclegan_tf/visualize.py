"""Pictures of a run: the epoch image grid (matplotlib PNG), TensorBoard images, loss curves.

The grid is two rows: real A | fake B | reconstructed A, and real B | fake A | reconstructed B, one
block per sample image, titled, so a reader can tell translation quality (fake) from cycle
consistency (reconstruction) at a glance.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from cyclegan_tf import images as images_lib

GRID_COLUMNS = ("real A", "fake B = G_AB(A)", "rec A = G_BA(fake B)")
GRID_COLUMNS_B = ("real B", "fake A = G_BA(B)", "rec B = G_AB(fake A)")


def save_grid(rows: dict[str, np.ndarray], path: str, title: str | None = None) -> str:
    """Writes a titled image grid as PNG.

    Args:
      rows: the six arrays "real_a", "fake_b", "rec_a", "real_b", "fake_a", "rec_b", each
        [N, H, W, 3] float in [-1, 1] (N samples are shown as N pairs of rows).
      path: output PNG path (parent created; written to a temporary file, then renamed).
      title: figure title, e.g. "epoch 3 (step 1200)".

    Returns:
      The path written.
    """
    # A bare Figure (no pyplot): writing a file must not switch the caller's backend, e.g. turn
    # off a notebook's inline display.
    from matplotlib.figure import Figure

    n = len(rows["real_a"])
    layout = [
        (("real_a", "fake_b", "rec_a"), GRID_COLUMNS),
        (("real_b", "fake_a", "rec_b"), GRID_COLUMNS_B),
    ]
    fig = Figure(figsize=(7.5, 2.6 * 2 * n))
    axes = fig.subplots(2 * n, 3, squeeze=False)
    for i in range(n):
        for r, (keys, labels) in enumerate(layout):
            for c, (key, label) in enumerate(zip(keys, labels)):
                ax = axes[2 * i + r, c]
                ax.imshow(images_lib.to_uint8(rows[key][i]), interpolation="nearest")
                ax.set_title(label, fontsize=9)
                ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)
    return path


def grid_tensor(rows: dict[str, np.ndarray]) -> tf.Tensor:
    """The same grid as one uint8 image [1, 2*N*H, 3*W, 3] for `tf.summary.image`."""
    blocks = []
    for i in range(len(rows["real_a"])):
        for keys in (("real_a", "fake_b", "rec_a"), ("real_b", "fake_a", "rec_b")):
            blocks.append(np.concatenate([images_lib.to_uint8(rows[k][i]) for k in keys], axis=1))
    return tf.constant(np.concatenate(blocks, axis=0)[None])


def save_loss_plot(history: dict[str, list[tuple[int, float]]], path: str) -> str:
    """Plots loss curves (key -> [(step, value), ...]) with labelled axes to a PNG."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    for key, points in sorted(history.items()):
        if points and key != "lr":
            steps, values = zip(*points)
            ax.plot(steps, values, label=key, linewidth=1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("CycleGAN losses")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
