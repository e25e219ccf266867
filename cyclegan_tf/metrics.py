"""FID and KID as the CycleGAN literature computes them, with TTUR's 2015 Inception graph.

This module owns the distribution metrics of translated images: finding (and once downloading) the
Inception graph file, running it to get features, and the Fréchet (FID) and kernel (KID)
distances between two sets of features. The built-in dataset's paired score lives in
`synthetic.py`; the `evaluate` command only calls `score_images`.

Which network: published CycleGAN FIDs use the original FID code (TTUR, bioinf-jku/TTUR `fid.py`)
and its frozen 2015 Inception graph, `classify_image_graph_def.pb` from `DEFAULT_GRAPH_URL`. It
takes float32 RGB in 0..255 of any size at the tensor `ExpandDims:0`, resizes to 299 x 299 itself
(TF1 bilinear, no half-pixel centres), normalises, and its `pool_3:0` tensor holds the 2,048
features ([N, 1, 1, 2048]). `keras.applications.InceptionV3` is a different network (other weights
and preprocessing) and gives other numbers, so it is not used here.

Differences from TTUR: the last partial batch is scored (TTUR's `get_activations` silently drops
the last `N mod batch_size` images), images may have different sizes (scored one size at a time),
and FID is computed in float64 without scipy (`frechet_distance`, `fid_from_features`).
"""

from __future__ import annotations

import functools
import os
import shutil
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable, Sequence
from typing import IO

import numpy as np
import tensorflow as tf
from absl import logging
from google.protobuf import message as protobuf_message

from cyclegan_tf import errors, synthetic

DEFAULT_GRAPH_URL = "http://download.tensorflow.org/models/image/imagenet/inception-2015-12-05.tgz"
GRAPH_FILE = "classify_image_graph_def.pb"
GRAPH_SIZE = 95_673_916  # bytes of GRAPH_FILE inside the archive at DEFAULT_GRAPH_URL
GRAPH_FLAG = "--inception_graph=PATH"
FEATURE_DIM = 2048
INPUT_TENSOR = "ExpandDims:0"
OUTPUT_TENSOR = "pool_3:0"
KID_DEGREE = 3  # the cubic polynomial kernel of Binkowski et al. (2018)

_DOWNLOAD_TIMEOUT_S = 60
_COPY_CHUNK = 1 << 20


class MetricsError(errors.UserError):
    """The Inception graph cannot be found, downloaded or loaded; the message says what to do."""


# -- the graph file ------------------------------------------------------------------------------


def find_inception_graph(
    path: str | None = None,
    cache_dir: str | None = None,
    download: bool = True,
    *,
    url: str = DEFAULT_GRAPH_URL,
    expected_size: int = GRAPH_SIZE,
    opener: Callable[[str], IO[bytes]] | None = None,
) -> str:
    """Returns the path of TTUR's Inception graph, downloading it into the cache on first use.

    Order: the explicit `path` (it must exist); else `<cache_dir>/classify_image_graph_def.pb` if
    it has `expected_size` bytes; else (if `download`) the archive at `url` is streamed into a
    temporary file in the cache directory, only `GRAPH_FILE` is extracted, its size is checked and
    it is renamed into place, so an interrupted or wrong download never leaves a file that a later
    call would trust.

    Args:
      path: an explicit graph file (the `--inception_graph` flag); not size-checked, so a copy
        from elsewhere works.
      cache_dir: where the graph is cached; default `$CYCLEGAN_TF_CACHE`, else
        `~/.cache/cyclegan_tf` (the package's one cache, see `synthetic.cache_root`).
      download: whether to download when the cache has no graph.
      url: the `.tgz` that contains `GRAPH_FILE` (tests pass a local `file://` archive).
      expected_size: the size of `GRAPH_FILE` in bytes (tests pass their stand-in's size).
      opener: `opener(url)` returns a readable binary file object (a context manager); default
        `urllib.request.urlopen` with a 60 s timeout.

    Returns:
      The path of the graph file.

    Raises:
      MetricsError: `path` does not exist; or the graph is not cached and cannot be downloaded
        (the one-line message names the URL, the expected size and `--inception_graph=PATH`); or
        the downloaded file has the wrong size (nothing is left behind).
    """
    if path is not None:
        if not os.path.isfile(path):
            raise MetricsError(
                f"Inception graph {path} does not exist; pass the path of {GRAPH_FILE} "
                f"(extracted from {url}) as {GRAPH_FLAG}."
            )
        return path
    cache = cache_dir or synthetic.cache_root()
    target = os.path.join(cache, GRAPH_FILE)
    if os.path.isfile(target) and os.path.getsize(target) == expected_size:
        return target

    def unavailable(reason: str) -> MetricsError:
        if os.path.isfile(target):
            reason = f"the cached copy has {os.path.getsize(target):,} bytes and {reason}"
        reason = " ".join(reason.split())  # one line, whatever the exception text was
        return MetricsError(
            f"The Inception graph {GRAPH_FILE} ({expected_size:,} bytes) is not in {cache}: "
            f"{reason}; download {url}, extract {GRAPH_FILE} and pass {GRAPH_FLAG}."
        )

    if not download:
        raise unavailable("downloading is disabled")
    logging.info("Downloading the Inception graph from %s into %s", url, cache)
    try:
        _download_graph(url, target, expected_size, opener)
    except (OSError, EOFError, tarfile.TarError) as e:  # URLError and HTTPError are OSErrors
        raise unavailable(f"downloading it failed ({type(e).__name__}: {e})") from e
    return target


def _download_graph(
    url: str, target: str, expected_size: int, opener: Callable[[str], IO[bytes]] | None
) -> None:
    """Streams the archive at `url`, extracts `GRAPH_FILE` and renames it to `target` atomically."""
    opener = opener or functools.partial(urllib.request.urlopen, timeout=_DOWNLOAD_TIMEOUT_S)
    cache = os.path.dirname(target)
    os.makedirs(cache, exist_ok=True)
    # Both temporary files live next to `target`, so the final os.replace is atomic (one file
    # system) and a killed download leaves only dot-files that no lookup ever matches.
    temporaries = []
    for suffix in (".tgz.part", ".pb.part"):
        fd, name = tempfile.mkstemp(prefix=".inception-", suffix=suffix, dir=cache)
        os.close(fd)
        temporaries.append(name)
    archive, graph = temporaries
    try:
        with opener(url) as response, open(archive, "wb") as f:
            shutil.copyfileobj(response, f, _COPY_CHUNK)
        with tarfile.open(archive, "r:*") as tar:
            member = next(
                (m for m in tar if m.isfile() and os.path.basename(m.name) == GRAPH_FILE), None
            )
            if member is None:
                raise tarfile.TarError(f"the archive has no {GRAPH_FILE}")
            with tar.extractfile(member) as src, open(graph, "wb") as dst:
                shutil.copyfileobj(src, dst, _COPY_CHUNK)
        size = os.path.getsize(graph)
        if size != expected_size:
            raise MetricsError(
                f"The {GRAPH_FILE} downloaded from {url} has {size:,} bytes, expected "
                f"{expected_size:,}; it was deleted. Download and extract it by hand and pass "
                f"{GRAPH_FLAG}."
            )
        os.replace(graph, target)
    finally:
        for name in temporaries:
            if os.path.exists(name):
                os.remove(name)


# -- features ------------------------------------------------------------------------------------


class InceptionFeatures:
    """Runs TTUR's Inception graph: images -> `pool_3` features [N, 2048] in float64.

    The graph runs in a private `tf.compat.v1.Graph` and `Session`, so no TF1 global state
    (default graph, eager mode) is touched. Why not `tf.compat.v1.wrap_function`: the 2015 graph
    contains `BatchNormWithGlobalNormalization` ops, which were removed at GraphDef version 9. A
    private graph takes the file's old producer version on import, so the op is still accepted; a
    function graph has the current version and fails at run time ("not available in GraphDef
    version ..."), unless every such node were rewritten into plain arithmetic. The session is the
    smaller change.

    Usage:
      with metrics.InceptionFeatures(metrics.find_inception_graph()) as features:
        feats = features(images)  # [N, 2048]
    """

    def __init__(self, graph_path: str, batch_size: int = 50):
        """Loads the graph.

        Args:
          graph_path: TTUR's `classify_image_graph_def.pb` (see `find_inception_graph`).
          batch_size: images per session run; every image is scored (no partial batch dropped).

        Raises:
          ValueError: `batch_size` < 1.
          MetricsError: the file is not a GraphDef or lacks `ExpandDims:0` / `pool_3:0`.
        """
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(
                f"batch_size must be an integer >= 1. Received: batch_size={batch_size}"
            )
        self.batch_size = int(batch_size)
        self.graph_path = graph_path
        graph_def = _read_graph_def(graph_path)
        self._graph = tf.compat.v1.Graph()
        with self._graph.as_default():
            self._images = tf.compat.v1.placeholder(
                tf.float32, [None, None, None, 3], name="cyclegan_tf_images"
            )
            try:
                (self._features,) = tf.compat.v1.import_graph_def(
                    graph_def,
                    input_map={INPUT_TENSOR: self._images},
                    return_elements=[OUTPUT_TENSOR],
                    name="",
                )
            except (ValueError, tf.errors.OpError) as e:
                raise MetricsError(
                    f"{graph_path} is not TTUR's Inception graph ({_first_line(e)}); pass the "
                    f"{GRAPH_FILE} from {DEFAULT_GRAPH_URL} as {GRAPH_FLAG}."
                ) from e
        self._graph.finalize()
        self._session = tf.compat.v1.Session(graph=self._graph)

    def __call__(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Computes the `pool_3` features of every image.

        Args:
          images: uint8 or float RGB, either one array [N, H, W, 3] or a list of [H, W, 3] arrays
            of possibly different sizes (scored one size at a time, results in input order).
            Float images must already be in 0..255 (like uint8, NOT the package's [-1, 1]:
            convert with `(x + 1) * 127.5`); uint8 is cast to float32. Any size works: the graph
            resizes to 299 x 299 itself.

        Returns:
          float64 [N, 2048]; [0, 2048] for no images.

        Raises:
          ValueError: wrong rank, not 3 channels, an empty side, a non-uint8 integer dtype, or
            float values outside 0..255.
        """
        if isinstance(images, (list, tuple)):
            arrays = [np.asarray(image) for image in images]
            for i, image in enumerate(arrays):
                _check_images(image, f"images[{i}]", 3)
            by_size: dict[tuple[int, int], list[int]] = {}
            for i, image in enumerate(arrays):
                by_size.setdefault(image.shape[:2], []).append(i)
            out = np.empty((len(arrays), FEATURE_DIM), np.float64)
            for indices in by_size.values():
                for start in range(0, len(indices), self.batch_size):
                    chunk = indices[start : start + self.batch_size]
                    out[chunk] = self._run(np.stack([arrays[i] for i in chunk]))
            return out
        images = np.asarray(images)
        _check_images(images, "images", 4)
        out = np.empty((len(images), FEATURE_DIM), np.float64)
        for start in range(0, len(images), self.batch_size):
            out[start : start + self.batch_size] = self._run(
                images[start : start + self.batch_size]
            )
        return out

    def _run(self, batch: np.ndarray) -> np.ndarray:
        """One session run: [B, H, W, 3] uint8 or float 0..255 -> float64 [B, 2048]."""
        feed = {self._images: batch.astype(np.float32, copy=False)}
        features = self._session.run(self._features, feed)
        return features.reshape(len(batch), FEATURE_DIM).astype(np.float64)

    def close(self) -> None:
        """Releases the session."""
        self._session.close()

    def __enter__(self) -> InceptionFeatures:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _read_graph_def(graph_path: str) -> tf.compat.v1.GraphDef:
    """Parses the file and removes `_output_shapes`, which would fix the batch dimension to 1."""
    try:
        with open(graph_path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise MetricsError(
            f"Cannot read Inception graph {graph_path} ({e}); pass {GRAPH_FLAG}."
        ) from e
    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(data)
    except protobuf_message.DecodeError as e:
        raise MetricsError(
            f"{graph_path} is not a GraphDef ({_first_line(e)}); pass the {GRAPH_FILE} from "
            f"{DEFAULT_GRAPH_URL} as {GRAPH_FLAG}."
        ) from e
    # The graph was frozen from a batch-1 JPEG pipeline (DecodeJpeg -> ExpandDims): shapes recorded
    # in `_output_shapes` start with 1, and the importer merges recorded shapes into the inferred
    # ones, so `pool_3` would be statically [1, 1, 1, 2048] whatever is fed (seen with the test's
    # stand-in on TF 2.21). TTUR patches the imported tensors' shapes afterwards through private
    # attributes (`o._shape`); dropping the recorded shapes before import lets shape inference
    # start from our [None, None, None, 3] placeholder instead, with no private API.
    for node in graph_def.node:
        if "_output_shapes" in node.attr:
            del node.attr["_output_shapes"]
    return graph_def


def _check_images(images: np.ndarray, name: str, rank: int) -> None:
    """Raises a one-line ValueError unless `images` is RGB of rank `rank`, uint8 or float 0..255."""
    shape = "[N, H, W, 3]" if rank == 4 else "[H, W, 3]"
    if images.ndim != rank or images.shape[-1] != 3:
        raise ValueError(f"{name} must be RGB {shape}. Received: shape={images.shape}")
    if images.shape[-3] == 0 or images.shape[-2] == 0:
        raise ValueError(f"{name} has an empty side. Received: shape={images.shape}")
    if images.dtype == np.uint8 or images.size == 0:
        return
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"{name} must be uint8 or float in 0..255. Received: dtype={images.dtype}")
    # Checked before any image is run: the package's own [-1, 1] images are the likely mistake.
    low, high = float(images.min()), float(images.max())
    if not (low >= 0.0 and high <= 255.0):  # also catches NaN
        raise ValueError(
            f"{name} must be in 0..255 (convert [-1, 1] images with (x + 1) * 127.5). Received: "
            f"min={low}, max={high}"
        )


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


# -- distances -----------------------------------------------------------------------------------


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """The Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    d^2 = ||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr sqrt(sigma1 sigma2). The last trace is
    computed without scipy's `sqrtm` (and its complex round-off): the eigenvalues of sigma1 sigma2
    are those of the symmetric PSD matrix sqrt(sigma1) sigma2 sqrt(sigma1), taken with
    `numpy.linalg.eigh`, tiny negative round-off clipped to 0.

    Args:
      mu1: [D] mean of the first set.
      sigma1: [D, D] covariance of the first set (symmetric PSD).
      mu2: [D] mean of the second set.
      sigma2: [D, D] covariance of the second set.

    Returns:
      The distance (>= 0; round-off below 0 is clipped).

    Raises:
      ValueError: the shapes do not match [D] and [D, D].
    """
    mu1, mu2 = (np.asarray(m, np.float64) for m in (mu1, mu2))
    sigma1, sigma2 = (np.asarray(s, np.float64) for s in (sigma1, sigma2))
    d = mu1.shape[0] if mu1.ndim == 1 else -1
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(
            "frechet_distance needs mu [D] and sigma [D, D] for both sets. Received: shapes "
            f"{mu1.shape}, {sigma1.shape}, {mu2.shape}, {sigma2.shape}"
        )
    eigenvalues, eigenvectors = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    root1 = (eigenvectors * np.sqrt(_drop_round_off(eigenvalues))) @ eigenvectors.T
    product = root1 @ sigma2 @ root1
    trace_sqrt = np.sqrt(_drop_round_off(np.linalg.eigvalsh((product + product.T) / 2))).sum()
    diff = mu1 - mu2
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt
    return max(float(value), 0.0)


def _drop_round_off(eigenvalues: np.ndarray) -> np.ndarray:
    """Eigenvalues of a PSD matrix with round-off (|value| <= D * eps * max) set to 0.

    Sample covariances of fewer samples than dimensions are singular: their zero eigenvalues come
    out as +-1e-16 * max, and summing the square roots of hundreds of them would add ~1e-8 * max
    each (the same cut-off as `numpy.linalg.pinv`'s).
    """
    cutoff = len(eigenvalues) * np.finfo(np.float64).eps * max(float(np.max(eigenvalues)), 0.0)
    return np.where(eigenvalues > cutoff, eigenvalues, 0.0)


def fid_from_features(a: np.ndarray, b: np.ndarray, method: str = "auto") -> float:
    """The FID between two feature sets (sample means and covariances, ddof 1), in float64.

    Two exact paths. "gram": with Xa, Xb the centred features and S = X^T X / (n - 1), the
    nonzero eigenvalues of Sa Sb are the squared singular values of Xa Xb^T / sqrt((na-1)(nb-1)),
    so tr sqrt(Sa Sb) is the sum of those singular values: an [Na, Nb] SVD (O(Na Nb D) with the
    product) instead of two [D, D] eigendecompositions (O(D^3)), and no square roots of the
    round-off that stands for the D - N zero eigenvalues. "covariance": `frechet_distance` of the
    means and covariances. "auto" takes "gram" when the cross-Gram matrix is no larger than a
    covariance matrix (Na * Nb <= D * D, e.g. test splits of a few hundred images), else
    "covariance".

    Args:
      a: [Na, D] features of one set, Na >= 2 (e.g. `InceptionFeatures` of translated images).
      b: [Nb, D] features of the other set, Nb >= 2.
      method: "auto", "gram" or "covariance" (the same value up to round-off).

    Returns:
      The FID (>= 0).

    Raises:
      ValueError: not 2-D, different D, fewer than 2 rows, or an unknown method.
    """
    a, b = _check_features(a, b, "fid_from_features")
    if method not in ("auto", "gram", "covariance"):
        raise ValueError(f"method must be auto, gram or covariance. Received: method={method!r}")
    (na, d), nb = a.shape, b.shape[0]
    if method == "auto":
        method = "gram" if na * nb <= d * d else "covariance"
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    if method == "covariance":
        return frechet_distance(mu_a, np.cov(a, rowvar=False), mu_b, np.cov(b, rowvar=False))
    xa, xb = a - mu_a, b - mu_b
    singular_values = np.linalg.svd(xa @ xb.T, compute_uv=False)
    trace_sqrt = singular_values.sum() / np.sqrt((na - 1) * (nb - 1))
    diff = mu_a - mu_b
    value = diff @ diff + np.sum(xa * xa) / (na - 1) + np.sum(xb * xb) / (nb - 1) - 2 * trace_sqrt
    return max(float(value), 0.0)


def kid_from_features(
    a: np.ndarray,
    b: np.ndarray,
    num_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """The KID (Binkowski et al. 2018) between two feature sets: mean and std over subsets.

    Each of `num_subsets` rounds draws m = min(Na, Nb, subset_size) rows of `a`, then m rows of `b`
    (`numpy.random.default_rng(seed)`, `rng.choice(n, m, replace=False)`, in that order) and
    computes the unbiased MMD^2 with the cubic kernel k(x, y) = (x.y / D + 1)^3:
      sum_{i != j} k(x_i, x_j) / (m(m-1)) + sum_{i != j} k(y_i, y_j) / (m(m-1))
      - 2 sum_{i, j} k(x_i, y_j) / m^2,
    the estimator of clean-fid and torch-fidelity (std with ddof 0, as torch-fidelity). Papers
    usually report KID x 1000 (the `evaluate` command does); this returns the raw value.

    Args:
      a: [Na, D] features, Na >= 2.
      b: [Nb, D] features, Nb >= 2.
      num_subsets: rounds (>= 1).
      subset_size: maximum rows per round (>= 2).
      seed: seed of the subset draws.

    Returns:
      (mean, std) of the MMD^2 estimates over the subsets (the mean can be slightly negative).

    Raises:
      ValueError: bad shapes or arguments.
    """
    a, b = _check_features(a, b, "kid_from_features")
    if num_subsets < 1 or subset_size < 2:
        raise ValueError(
            "kid_from_features needs num_subsets >= 1 and subset_size >= 2. Received: "
            f"num_subsets={num_subsets}, subset_size={subset_size}"
        )
    (na, d), nb = a.shape, b.shape[0]
    m = min(na, nb, subset_size)
    rng = np.random.default_rng(seed)
    estimates = np.empty(num_subsets, np.float64)
    for i in range(num_subsets):
        x = a[rng.choice(na, m, replace=False)]
        y = b[rng.choice(nb, m, replace=False)]
        k_xx = (x @ x.T / d + 1.0) ** KID_DEGREE
        k_yy = (y @ y.T / d + 1.0) ** KID_DEGREE
        k_xy = (x @ y.T / d + 1.0) ** KID_DEGREE
        within = k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)
        estimates[i] = within / (m * (m - 1)) - 2.0 * k_xy.sum() / (m * m)
    return float(estimates.mean()), float(estimates.std())


def _check_features(a: np.ndarray, b: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Both as float64 [N, D] with N >= 2 and the same D, else a one-line ValueError."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(
            f"{name} needs two [N, D] feature arrays with the same D. Received: shapes "
            f"{a.shape} and {b.shape}"
        )
    if len(a) < 2 or len(b) < 2:
        raise ValueError(
            f"{name} needs at least 2 feature rows per set. Received: {len(a)} and {len(b)}"
        )
    return a, b


# -- scoring images ------------------------------------------------------------------------------


def score_images(
    translated: np.ndarray | Sequence[np.ndarray],
    reference: np.ndarray | Sequence[np.ndarray],
    features: InceptionFeatures,
    kid_subsets: int = 100,
) -> dict:
    """FID and KID of translated images against real images of the target domain.

    Args:
      translated: uint8 (or float 0..255) [N, H, W, 3], or a list of [H, W, 3] (e.g. g_ab of testA).
      reference: the same for the real target images (e.g. testB).
      features: the Inception feature extractor.
      kid_subsets: KID rounds (`kid_from_features`' num_subsets; subsets of up to 1,000 images).

    Returns:
      {"fid": float, "kid": float (raw, not x 1000), "kid_std": float, "num_translated": int,
      "num_reference": int}.

    Raises:
      ValueError: fewer than 2 images in a set, or invalid images.
    """
    for name, images in (("translated", translated), ("reference", reference)):
        if len(images) < 2:
            raise ValueError(
                f"score_images needs at least 2 {name} images. Received: {len(images)}"
            )
    features_t = features(translated)
    features_r = features(reference)
    kid, kid_std = kid_from_features(features_t, features_r, num_subsets=kid_subsets)
    return {
        "fid": fid_from_features(features_t, features_r),
        "kid": kid,
        "kid_std": kid_std,
        "num_translated": len(features_t),
        "num_reference": len(features_r),
    }
