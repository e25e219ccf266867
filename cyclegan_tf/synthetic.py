"""The built-in dataset: procedural shapes with a known A->B translation, and its score.

This module owns the built-in dataset end to end: the task, its generation (numpy only, no
download, deterministic from a seed), the on-disk cache and the metrics that say whether a model
learned the translation. `data.py` reads the cached folder like any other `trainA/ trainB/ testA/
testB/` folder.

The task (A -> B keeps geometry, changes appearance):
  * A scene is a smooth, almost grey background (saturation < 0.1) with 1-3 non-overlapping convex
    shapes (ellipses, rotated rectangles, triangles, pentagons, hexagons).
  * Domain A fills each shape with a flat orange: hue in [10, 30] degrees, saturation 0.7-0.95,
    value 0.8-1.
  * Domain B keeps the background and every outline, rotates the fill hue by 180 degrees (orange ->
    azure) and darkens alternate bands that follow the outline: a pixel at distance `d` (pixels)
    inside its shape is in a dark band (value x 0.55) when `(d / period) mod 1 >= 0.5`, with
    `period = max(3, size / 8)` (8 px at 64 px). The outermost band is light.
  * trainA and trainB are UNPAIRED (different scenes, drawn from different seed streams);
    testA/<name> and testB/<name> render the SAME scene, so testB is the exact ground-truth
    translation of testA.

Why this score (`score`): pixel L1 alone barely separates a trained model from the identity when
stripes are involved (a 1 px outline shift or a wrong stripe phase costs as much as no stripes at
all). Here the 180-degree hue change makes the identity expensive on every pixel-wise metric, and
two phase-free terms measure what was learned: `color_error` compares colours averaged over a
window of about two stripe periods (so the stripe phase does not matter) and `stripe_error`
compares the stripe contrast inside the shapes (0 when the bands have the right strength, 1 when
there are none). `mask_iou` checks that the geometry was kept.

Cache: `builtin_dir()` generates into `$CYCLEGAN_TF_CACHE` (default `~/.cache/cyclegan_tf`), in a
directory keyed by format version, seed, size and counts. Generation writes into a temporary
sibling directory and renames it into place, so a killed generation never leaves a half-written
dataset behind (the stale temporary directory is removed by the next generation).
"""

from __future__ import annotations

import colorsys
import dataclasses
import json
import os
import shutil
import tempfile

import numpy as np
from PIL import Image

from cyclegan_tf import images as images_lib

# Bump when the rendering changes: the cache key includes it, so old caches are never reused.
FORMAT_VERSION = 2
DEFAULT_SEED = 0
CACHE_ENV = "CYCLEGAN_TF_CACHE"
SPLITS = ("trainA", "trainB", "testA", "testB")

# Seed streams: trainA and trainB come from different streams so that they are unpaired; the test
# stream renders each scene in both domains.
_STREAM_TRAIN_A, _STREAM_TRAIN_B, _STREAM_TEST = 0, 1, 2
_HUE_SHIFT = 180.0
# Domain A's hues (degrees). An unpaired translation is learned only up to the maps that carry A's
# distribution onto B's: over a wide range the reversal h -> (lo + hi + 180) - h does so as well
# as the rotation h -> h + 180, and training finds either. Format 1 drew hues from [-15, 45]: the
# trained quick preset learned the reversal (output hue against input hue: correlation -0.97,
# 25 degrees off on average, colour error 0.127; bench/RESULTS.md). Over [10, 30] the reversal is
# at most 20 degrees off (6.7 on average), so the colour score measures the translation, not a
# coin toss between two equally good answers.
_HUE_RANGE = (10.0, 30.0)
# Bands per image side: period = size / 8 (8 px at 64 px, 4 at 32). Format 1's size / 12 drew
# 2.7 px bands at 64 px, at the limit of what a 64 px model draws sharply (bench/RESULTS.md).
_BANDS_PER_SIDE = 8.0
_BAND_DARKNESS = 0.45  # a dark band has value x (1 - 0.45)
_MASK_SATURATION = 0.4  # objects have saturation >= 0.7, the background < 0.1
_PSNR_CAP = 100.0


def band_period(size: int) -> float:
    """Stripe period in pixels for images of side `size` (8 at 64 px, 4 at 32 px)."""
    return max(3.0, size / _BANDS_PER_SIDE)


@dataclasses.dataclass(frozen=True)
class Shape:
    """One convex shape. `vertices`: [K, 2] float (x, y) in pixels, counter-clockwise on screen."""

    vertices: np.ndarray
    hue: float  # degrees, domain A
    saturation: float
    value: float


@dataclasses.dataclass(frozen=True)
class Scene:
    """What a test pair shares: background and shapes. Render it with `render`."""

    size: int
    background: np.ndarray  # [3] base colour in [0, 1]
    gradient: np.ndarray  # [2] change of brightness per image width along x and y
    shapes: tuple[Shape, ...]


def sample_scene(rng: np.random.Generator, size: int) -> Scene:
    """Draws a random scene of side `size` from `rng` (numpy Generator)."""
    gray = rng.uniform(0.55, 0.8)
    background = np.clip(gray + rng.uniform(-0.02, 0.02, size=3), 0.0, 1.0)
    gradient = rng.uniform(-0.08, 0.08, size=2)
    count = int(rng.choice([1, 2, 3], p=[0.3, 0.4, 0.3]))
    placed: list[tuple[float, float, float]] = []  # (cx, cy, radius) of the bounding circles
    shapes = []
    for _ in range(count):
        for _attempt in range(30):
            radius = rng.uniform(0.14, 0.26) * size
            cx, cy = rng.uniform(radius + 1, size - radius - 1, size=2)
            if all(np.hypot(cx - x, cy - y) > radius + r + 2 for x, y, r in placed):
                break
        else:
            continue  # no room left: fewer shapes
        placed.append((cx, cy, radius))
        shapes.append(
            Shape(
                vertices=_polygon(rng, cx, cy, radius),
                hue=float(rng.uniform(*_HUE_RANGE)) % 360.0,
                saturation=float(rng.uniform(0.7, 0.95)),
                value=float(rng.uniform(0.8, 1.0)),
            )
        )
    return Scene(size=size, background=background, gradient=gradient, shapes=tuple(shapes))


def _polygon(rng: np.random.Generator, cx: float, cy: float, radius: float) -> np.ndarray:
    """A convex polygon inscribed in the circle (cx, cy, radius); ellipses are 48-gons."""
    kind = rng.choice(["ellipse", "rectangle", "triangle", "pentagon", "hexagon"])
    angle = rng.uniform(0, 2 * np.pi)
    if kind == "ellipse":
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        points = np.stack([np.cos(t), rng.uniform(0.55, 1.0) * np.sin(t)], axis=1)
    elif kind == "rectangle":
        aspect = rng.uniform(0.5, 1.0)
        half = np.array([1.0, aspect]) / np.hypot(1.0, aspect)
        points = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=float) * half
    else:
        k = {"triangle": 3, "pentagon": 5, "hexagon": 6}[kind]
        t = np.arange(k) * 2 * np.pi / k + rng.uniform(-0.25, 0.25, size=k) * (k == 3)
        points = np.stack([np.cos(t), np.sin(t)], axis=1)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return points @ rotation.T * radius + np.array([cx, cy])


def _inside_distance(vertices: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Signed distance (pixels, > 0 inside) of points to a convex polygon's outline.

    Inside a convex polygon the distance to the outline is the smallest distance to the edges'
    supporting lines; outside this is only a bound, but exact within half a pixel of an edge
    (away from corners), which is all the anti-aliasing needs.
    """
    start = vertices
    edge = np.roll(vertices, -1, axis=0) - start
    # Orientation-independent inward normals: flip when the polygon is clockwise.
    area2 = np.sum(start[:, 0] * edge[:, 1] - start[:, 1] * edge[:, 0])
    normal = np.stack([-edge[:, 1], edge[:, 0]], axis=1) * np.sign(area2)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    d = (x[..., None] - start[:, 0]) * normal[:, 0] + (y[..., None] - start[:, 1]) * normal[:, 1]
    return d.min(axis=-1)


def render(scene: Scene, domain: str, band_phase: float = 0.0) -> np.ndarray:
    """Renders `scene` as domain "a" or "b".

    Args:
      scene: from `sample_scene`.
      domain: "a" (flat warm fills) or "b" (cool fills with outline-following bands).
      band_phase: shifts the bands by this fraction of a period (0 for the dataset; tests use 0.5
        to make a translation with the right colours and the wrong stripe phase).

    Returns:
      uint8 array [size, size, 3].
    """
    if domain not in ("a", "b"):
        raise ValueError(f"domain must be 'a' or 'b'. Received: domain={domain!r}")
    size = scene.size
    coords = np.arange(size, dtype=np.float64) + 0.5  # pixel centres
    ys, xs = np.meshgrid(coords, coords, indexing="ij")
    ramp = scene.gradient[0] * (xs / size - 0.5) + scene.gradient[1] * (ys / size - 0.5)
    image = np.clip(scene.background + ramp[..., None], 0.0, 1.0)
    period = band_period(size)
    for shape in scene.shapes:
        # Only the bounding box needs the distance computation.
        lo = np.maximum(np.floor(shape.vertices.min(axis=0)).astype(int) - 1, 0)
        hi = np.minimum(np.ceil(shape.vertices.max(axis=0)).astype(int) + 2, size)
        box_x, box_y = xs[lo[1] : hi[1], lo[0] : hi[0]], ys[lo[1] : hi[1], lo[0] : hi[0]]
        dist = _inside_distance(shape.vertices, box_x, box_y)
        alpha = np.clip(dist + 0.5, 0.0, 1.0)[..., None]  # anti-aliased coverage
        hue = shape.hue if domain == "a" else (shape.hue + _HUE_SHIFT) % 360.0
        fill = np.array(colorsys.hsv_to_rgb(hue / 360.0, shape.saturation, shape.value))
        fill = np.broadcast_to(fill, dist.shape + (3,))
        if domain == "b":
            # From half a pixel inside the outline on, so the outline pixels stay light.
            dark = _dark_coverage(np.maximum(dist, 0.5), period, band_phase)
            fill = fill * (1.0 - _BAND_DARKNESS * dark)[..., None]
        region = image[lo[1] : hi[1], lo[0] : hi[0]]
        image[lo[1] : hi[1], lo[0] : hi[0]] = region * (1.0 - alpha) + fill * alpha
    return np.round(image * 255.0).astype(np.uint8)


def _dark_coverage(dist: np.ndarray, period: float, phase: float) -> np.ndarray:
    """Fraction of each pixel covered by a dark band (anti-aliased square wave of `dist`)."""
    x = np.mod(dist + phase * period, period)
    half = period / 2.0
    # Signed distance (pixels) to the nearest band edge: > 0 inside a dark band.
    signed = np.where(x >= half, np.minimum(x - half, period - x), -np.minimum(x, half - x))
    return np.clip(signed + 0.5, 0.0, 1.0)


def _rng(seed: int, stream: int, index: int) -> np.random.Generator:
    # One generator per image: image i is the same whatever the counts, and generation order
    # does not matter.
    return np.random.default_rng([FORMAT_VERSION, seed, stream, index])


def generate(
    path: str, seed: int = DEFAULT_SEED, size: int = 64, num_train: int = 400, num_test: int = 50
) -> None:
    """Writes the dataset to `path` (created; must not exist or be empty), without caching.

    Layout: `path/{trainA,trainB,testA,testB}/NNNN.png` plus `path/info.json`.
    """
    for name, value in (("size", size), ("num_train", num_train), ("num_test", num_test)):
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive integer. Received: {name}={value!r}")
    for split in SPLITS:
        os.makedirs(os.path.join(path, split), exist_ok=True)

    def write(split: str, index: int, pixels: np.ndarray) -> None:
        Image.fromarray(pixels).save(
            os.path.join(path, split, f"{index:04d}.png"), compress_level=1
        )

    for i in range(num_train):
        write("trainA", i, render(sample_scene(_rng(seed, _STREAM_TRAIN_A, i), size), "a"))
        write("trainB", i, render(sample_scene(_rng(seed, _STREAM_TRAIN_B, i), size), "b"))
    for i in range(num_test):
        scene = sample_scene(_rng(seed, _STREAM_TEST, i), size)
        write("testA", i, render(scene, "a"))
        write("testB", i, render(scene, "b"))
    info = {
        "format_version": FORMAT_VERSION,
        "seed": seed,
        "size": size,
        "num_train": num_train,
        "num_test": num_test,
        "task": "orange flat shapes (A) -> hue + 180 degrees with outline-following dark bands (B)",
        "band_period": band_period(size),
    }
    with open(os.path.join(path, "info.json"), "w") as f:
        json.dump(info, f, indent=2)


def cache_root() -> str:
    """The cache directory: `$CYCLEGAN_TF_CACHE`, default `~/.cache/cyclegan_tf`."""
    return os.environ.get(CACHE_ENV) or os.path.join(
        os.path.expanduser("~"), ".cache", "cyclegan_tf"
    )


def builtin_dir(
    seed: int = DEFAULT_SEED, size: int = 64, num_train: int = 400, num_test: int = 50
) -> str:
    """Returns the folder of the built-in dataset, generating it on first use.

    Args:
      seed: dataset seed (the same seed always gives the same images).
      size: image side in pixels.
      num_train: images per domain in trainA/ and trainB/ (unpaired).
      num_test: images per domain in testA/ and testB/ (paired by file name).

    Returns:
      Absolute path of a directory with trainA/ trainB/ testA/ testB/ PNGs of [size, size, 3].
    """
    key = f"builtin-v{FORMAT_VERSION}-seed{seed}-size{size}-train{num_train}-test{num_test}"
    root = os.path.abspath(cache_root())
    final = os.path.join(root, key)
    if os.path.isdir(final):
        return final
    os.makedirs(root, exist_ok=True)
    _remove_stale_temporaries(root, key)
    tmp = tempfile.mkdtemp(prefix=f".{key}.tmp-{os.getpid()}-", dir=root)
    try:
        generate(tmp, seed=seed, size=size, num_train=num_train, num_test=num_test)
        try:
            os.rename(tmp, final)
        except OSError:
            # Another process finished first (rename onto a non-empty directory fails): use its.
            if not os.path.isdir(final):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _remove_stale_temporaries(root: str, key: str) -> None:
    """Removes temporaries of `key` left by generations whose process is gone (killed runs)."""
    prefix = f".{key}.tmp-"
    for name in os.listdir(root):
        if not name.startswith(prefix):
            continue
        pid = name[len(prefix) :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def load_test_pairs(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Loads the paired test split of a built-in dataset folder.

    Args:
      path: a directory returned by `builtin_dir` (or written by `generate`).

    Returns:
      (a, b_truth): float32 arrays [N, H, W, 3] in [-1, 1], in file-name order; b_truth[i] is the
      exact translation of a[i].
    """
    names = sorted(os.listdir(os.path.join(path, "testA")))
    a = np.stack([_read(os.path.join(path, "testA", n)) for n in names])
    b = np.stack([_read(os.path.join(path, "testB", n)) for n in names])
    return a, b


def _read(file: str) -> np.ndarray:
    with Image.open(file) as img:
        return images_lib.to_float(np.asarray(img.convert("RGB")))


def score(translated, truth, source=None) -> dict[str, float]:
    """Scores translations against the ground truth of the built-in task.

    All inputs are images in [-1, 1] (numpy or tensors), [N, H, W, 3] or [H, W, 3], same shape.

    Args:
      translated: model output for the test A images.
      truth: the test B images (exact translations).
      source: optional test A images; when given, the identity baseline is scored too, under the
        same keys prefixed with `identity/`.

    Returns:
      A dict of floats:
        l1: mean |translated - truth| on the [-1, 1] scale (0 is perfect).
        psnr: mean per-image PSNR in dB on the [0, 1] scale (capped at 100 for identical images).
        mask_iou: IoU of the object masks (saturation > 0.4), geometry kept (1 is perfect).
        color_error: mean absolute difference on the [0, 1] scale, inside the shapes, of colours
          box-averaged over about two stripe periods: stripe-phase free (0 is perfect).
        stripe_error: |c(translated) - c(truth)| / c(truth), where c is the RMS of the luminance's
          deviation from that box average inside the shapes: 0 when the bands have the truth's
          contrast, 1 when there are no bands (or twice too strong).
    """
    t = _as_batch(translated)
    y = _as_batch(truth)
    if t.shape != y.shape:
        raise ValueError(
            f"translated and truth must have the same shape. Received: {t.shape} and {y.shape}"
        )
    result = _score(t, y)
    if source is not None:
        s = _as_batch(source)
        result.update({f"identity/{k}": v for k, v in _score(s, y).items()})
    return result


def score_translation(translate, path: str, batch_size: int = 8) -> dict:
    """Scores an A->B translation on the paired test split of a built-in dataset folder.

    The one scoring routine of the built-in dataset: training's score.json and the `evaluate`
    command both call it.

    Args:
      translate: a function: float32 [N, H, W, 3] test A images in [-1, 1] -> the same shape,
        their translations in [-1, 1] (numpy or tensors).
      path: a directory returned by `builtin_dir`.
      batch_size: images per call of `translate`.

    Returns:
      {"g_ab": score of the translations, "identity": score of test A itself}, each with the
      identity baseline under `identity/` keys (`score` with `source`).
    """
    real_a, truth_b = load_test_pairs(path)
    fakes = np.concatenate(
        [
            np.asarray(translate(real_a[i : i + batch_size]), np.float32)
            for i in range(0, len(real_a), batch_size)
        ]
    )
    return {
        "g_ab": score(fakes, truth_b, real_a),
        "identity": score(real_a, truth_b, real_a),
    }


def score_identity_baseline(path: str) -> dict[str, float]:
    """Scores the identity (testA taken as the translation) on a built-in dataset folder."""
    a, b = load_test_pairs(path)
    return score(a, b)


def format_scores(scores: dict[str, float], identity: dict[str, float] | None = None) -> str:
    """A small text table of `score` results, with the identity baseline beside when given.

    `identity` defaults to the `identity/` keys of `scores` (present when `score` got `source`).
    """
    if identity is None:
        identity = {k.split("/", 1)[1]: v for k, v in scores.items() if k.startswith("identity/")}
    better = {
        "l1": "lower",
        "psnr": "higher",
        "mask_iou": "higher",
        "color_error": "lower",
        "stripe_error": "lower",
    }
    lines = [f"{'metric':<13}{'model':>9}{'identity':>10}  better"]
    for key, direction in better.items():
        if key in scores:
            base = f"{identity[key]:>10.3f}" if key in identity else f"{'':>10}"
            lines.append(f"{key:<13}{scores[key]:>9.3f}{base}  {direction}")
    return "\n".join(lines)


def _as_batch(images) -> np.ndarray:
    x = np.asarray(images, dtype=np.float32)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"images must be [N, H, W, 3] or [H, W, 3]. Received shape {x.shape}")
    return np.clip((x + 1.0) / 2.0, 0.0, 1.0)  # [0, 1]


def _score(t: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """`t`, `y`: [N, H, W, 3] in [0, 1]."""
    mse = np.mean((t - y) ** 2, axis=(1, 2, 3))
    psnr = np.where(mse > 0, 10.0 * np.log10(1.0 / np.maximum(mse, 1e-30)), _PSNR_CAP)

    mask_t, mask_y = _object_mask(t), _object_mask(y)
    inter = np.sum(mask_t & mask_y, axis=(1, 2))
    union = np.sum(mask_t | mask_y, axis=(1, 2))
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)

    # Interior: pixels whose whole averaging window lies inside a shape of the truth, so the
    # window average is the shape's mean colour whatever the stripe phase.
    k = 2 * int(round(band_period(y.shape[2]))) + 1
    interior = _box(mask_y.astype(np.float32)[..., None], k)[..., 0] > 0.999
    if not interior.any():
        interior = mask_y
    if not interior.any():
        return {
            "l1": float(2 * np.mean(np.abs(t - y))),
            "psnr": float(np.mean(psnr)),
            "mask_iou": float(np.mean(iou)),
            "color_error": 0.0,
            "stripe_error": 0.0,
        }
    mean_t, mean_y = _box(t, k), _box(y, k)
    color_error = np.mean(np.abs(mean_t - mean_y)[interior])
    contrast_t = _contrast(t, mean_t, interior)
    contrast_y = _contrast(y, mean_y, interior)
    stripe_error = abs(contrast_t - contrast_y) / max(contrast_y, 1e-6)
    return {
        "l1": float(2.0 * np.mean(np.abs(t - y))),  # x2: from the [0, 1] to the [-1, 1] scale
        "psnr": float(np.mean(psnr)),
        "mask_iou": float(np.mean(iou)),
        "color_error": float(color_error),
        "stripe_error": float(stripe_error),
    }


def _object_mask(x: np.ndarray) -> np.ndarray:
    """[N, H, W, 3] in [0, 1] -> bool [N, H, W]: saturated pixels are objects."""
    high, low = x.max(axis=-1), x.min(axis=-1)
    saturation = (high - low) / np.maximum(high, 1e-6)
    return (saturation > _MASK_SATURATION) & (high > 0.1)


def _contrast(x: np.ndarray, mean: np.ndarray, where: np.ndarray) -> float:
    luma = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    deviation = (x - mean) @ luma
    return float(np.sqrt(np.mean(deviation[where] ** 2)))


def _box(x: np.ndarray, k: int) -> np.ndarray:
    """Mean over a k x k window (edge-padded) of [N, H, W, C] via cumulative sums."""
    r = k // 2
    padded = np.pad(x, ((0, 0), (r, r), (r, r), (0, 0)), mode="edge").astype(np.float64)
    c = np.cumsum(np.pad(padded, ((0, 0), (1, 0), (1, 0), (0, 0))), axis=1).cumsum(axis=2)
    h, w = x.shape[1], x.shape[2]
    total = c[:, k : k + h, k : k + w] - c[:, :h, k : k + w] - c[:, k : k + h, :w] + c[:, :h, :w]
    return (total / (k * k)).astype(np.float32)
