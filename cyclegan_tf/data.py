"""Input pipelines (tf.data only): image sources -> decode -> jitter/mirror -> [-1, 1].

This module owns where images come from and how they become network inputs:

Sources, named by one string (`DataConfig.dataset`):
  * `builtin`: the procedural dataset of `synthetic.py`, generated and cached on first use, then
    read as a folder.
  * `tfds:cycle_gan/<config>` (or `cycle_gan/<config>` when no such local folder exists): the TFDS
    `cycle_gan` builder (configs: `tfds_configs()`), splits trainA/trainB/testA/testB. The split's
    ENCODED images are loaded into memory once (`SkipDecoding`), so any sample can be gathered by
    index; this also works under `tfds.testing.mock_data`, which yields encoded PNGs.
  * a folder with trainA/ and trainB/ (testA/ and testB/ optional), searched recursively, files
    sorted by relative path.

Decoding: `tf.io.decode_image(channels=3, expand_animations=False)`, so JPEG, PNG (grey, RGBA,
palette, 16-bit: scaled to 8 bits), BMP, GIF (first frame) and WebP all become RGB uint8.

Bad input policy (folders):
  * Files whose extension is not an image extension (`IMAGE_EXTENSIONS`) are ignored, with one
    warning per folder that counts them; hidden files (".name") are ignored silently.
  * Every image file is decoded once when the source is loaded; a file that does not decode
    (corrupt, truncated, empty, not really an image) is skipped with a warning naming it, then a
    count. Skipping happens before indexing, so indices, shuffles and resumption stay
    deterministic for a given set of files.
  * A missing folder, a missing or image-less trainA/trainB, or a domain where no file decodes
    raises `DataError`: a one-line `ValueError` that names the problem and what to do.

Training stream (`Unpaired.train`): unpaired batches `(real_a, real_b)`, float32 NHWC in [-1, 1].
Sample number `g` (a global counter: step * batch_size + position in the batch) takes, in each
domain of n images, position `g % n` of the permutation number `g // n` of that domain: each
domain is an endless series of passes, each pass shuffled with its own stateless seed, so the
shorter domain is cycled and reshuffled. An epoch is max(|A|, |B|) samples. All randomness
(shuffles, crops, flips) is `tf.random.stateless_*` with seeds derived from (seed, domain, pass or
sample number): `train(start_step=k)` yields exactly the batches k, k+1, ... of `train()`.

Train preprocessing follows the official `get_transform` (`preprocess`):
  * resize_and_crop: resize to load_size x load_size (bicubic), random crop_size crop.
  * crop: random crop_size crop, no resize.
  * scale_width: resize to width load_size keeping the aspect (height >= crop_size).
  * scale_width_and_crop: scale_width, then a random crop_size crop.
  * none: keep the size.
  Then a random horizontal flip unless no_flip. Deviations, all for robustness: an image smaller
  than a crop is first resized up (keeping its aspect) until the crop fits; scale_width and none
  round height and width to multiples of 4 (the official `__make_power_2(base=4)`, which the
  official code applies to none only, though its generators need it for scale_width too); and as
  images of different sizes cannot share a batch, with batch_size > 1 scale_width and none end
  with a random crop_size x crop_size crop (batch_size 1 keeps each image's own size). Bicubic
  overshoot is clipped to [0, 255] before scaling to [-1, 1].

Test preprocessing (`Unpaired.test`, no randomness, as the official test options with
load_size = crop_size): resize_and_crop and crop resize to crop_size x crop_size; scale_width and
scale_width_and_crop resize to width crop_size keeping the aspect; none keeps the size; the last
two round to multiples of 4.
"""

from __future__ import annotations

import dataclasses
import math
import os
import socket
import urllib.parse
import urllib.request

import tensorflow as tf
from absl import logging

from cyclegan_tf import config as config_lib
from cyclegan_tf import errors, synthetic

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
TFDS_PREFIX = "tfds:"
TFDS_BUILDER = "cycle_gan"
DOMAINS = ("a", "b")

_DOMAIN_TAG = {"a": 0, "b": 1}
# Stream tags keep shuffle and augmentation seeds apart for the same (seed, domain, number).
_SHUFFLE, _AUGMENT = 0, 1
_PROBE_TIMEOUT_S = 5.0
_TRY_INSTEAD = "Use a local folder (--dataset=/path/with/trainA_trainB) or --dataset=builtin."


class DataError(errors.UserError):
    """A user-facing data problem; the message is one line saying what to do."""


@dataclasses.dataclass(frozen=True)
class _Images:
    """One split of one domain: `items[i]` is a file path (from_files) or encoded image bytes."""

    items: tuple[bytes | str, ...]
    names: tuple[str, ...]
    from_files: bool

    def __len__(self) -> int:
        return len(self.items)


def tfds_configs() -> list[str]:
    """Names of the TFDS cycle_gan configs (horse2zebra, monet2photo, ...), from TFDS itself."""
    tfds = _import_tfds()
    return [c.name for c in tfds.builder_cls(TFDS_BUILDER).BUILDER_CONFIGS]


class Unpaired:
    """An unpaired two-domain dataset with a deterministic, resumable training stream.

    Built by `load`. Attributes:
      kind: "builtin", "tfds" or "folder".
      name: the source as given (e.g. "builtin", "tfds:cycle_gan/horse2zebra", "/data/h2z").
      root: the folder read (the cache folder for builtin), None for TFDS.
      builtin_dir: root for the built-in dataset (see `synthetic.load_test_pairs`), else None.
      num_a, num_b: training images per domain (after skipping undecodable files).
      epoch_size: max(num_a, num_b) samples.
      steps_per_epoch: ceil(epoch_size / batch_size).
    """

    def __init__(
        self,
        *,
        kind: str,
        name: str,
        root: str | None,
        config: config_lib.DataConfig,
        seed: int,
        train_a: _Images,
        train_b: _Images,
        test_loader,
        has_test: bool,
    ):
        self.kind = kind
        self.name = name
        self.root = root
        self.config = config
        self.seed = seed
        self._train = {"a": train_a, "b": train_b}
        self._test_loader = test_loader
        self._test: dict[str, _Images] = {}
        self.has_test = has_test
        self.builtin_dir = root if kind == "builtin" else None

    @property
    def num_a(self) -> int:
        return len(self._train["a"])

    @property
    def num_b(self) -> int:
        return len(self._train["b"])

    @property
    def epoch_size(self) -> int:
        return max(self.num_a, self.num_b)

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.epoch_size / self.config.batch_size)

    @property
    def fixed_size(self) -> bool:
        """Whether every training batch has the static shape [batch, crop, crop, 3]."""
        return self.config.preprocess in ("resize_and_crop", "crop", "scale_width_and_crop") or (
            self.config.batch_size > 1
        )

    def train_names(self, domain: str) -> tuple[str, ...]:
        """Names of the training images of `domain`, in index order."""
        return self._train[_check_domain(domain)].names

    def train(self, start_step: int = 0, num_steps: int | None = None) -> tf.data.Dataset:
        """The training stream, from global step `start_step` on.

        Args:
          start_step: first step; the stream equals steps start_step, start_step + 1, ... of
            `train(0)`, bit for bit.
          num_steps: stop after this many batches (None: endless; the trainer decides).

        Returns:
          A dataset of `(real_a, real_b)`, each float32 [batch_size, crop_size, crop_size, 3] in
          [-1, 1] ([1, H, W, 3] with H, W multiples of 4 for scale_width/none at batch_size 1).
        """
        if start_step < 0:
            raise ValueError(f"start_step must be >= 0. Received: start_step={start_step}")
        batch = self.config.batch_size
        counters = tf.data.Dataset.counter(start=start_step * batch, dtype=tf.int64)
        if num_steps is not None:
            counters = counters.take(num_steps * batch)
        loaders = {d: self._sampler(d) for d in DOMAINS}

        def sample(counter):
            return loaders["a"](counter), loaders["b"](counter)

        options = tf.data.Options()
        # The source is a counter, not files: shard by data under multi-worker strategies
        # instead of letting tf.data try (and warn about) file sharding first.
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA
        )
        return (
            counters.map(sample, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .batch(batch, drop_remainder=True)
            .prefetch(tf.data.AUTOTUNE)
            .with_options(options)
        )

    def _sampler(self, domain: str):
        images = self._train[domain]
        items = tf.constant(list(images.items), dtype=tf.string)
        count = tf.constant(len(images), tf.int64)
        from_files = images.from_files
        tag = _DOMAIN_TAG[domain]
        shuffle_key = tf.constant([self.seed, 2 * tag + _SHUFFLE], tf.int64)
        augment_key = tf.constant([self.seed, 2 * tag + _AUGMENT], tf.int64)
        config = self.config
        fixed = self.fixed_size

        def draw(counter):
            # Pass number counter // n of this domain, shuffled with its own seed.
            pass_key = tf.random.experimental.stateless_fold_in(shuffle_key, counter // count)
            order = tf.random.experimental.stateless_shuffle(tf.range(count), seed=pass_key)
            index = tf.gather(order, counter % count)
            image = _decode(_read(items[index], from_files))
            key = tf.random.experimental.stateless_fold_in(augment_key, counter)
            return _train_transform(image, key, config, fixed)

        return draw

    def test(self, domain: str = "a") -> tf.data.Dataset:
        """The test split of `domain`, in name order, without randomness.

        Returns:
          An (unbatched) dataset of `(image, name)`: image float32 [H, W, 3] in [-1, 1]
          ([crop_size, crop_size, 3] for resize_and_crop and crop), name a string scalar (the
          path relative to the split folder, or "<split>_<index>" for TFDS).

        Raises:
          DataError: the source has no test split for this domain.
        """
        images = self._test_images(_check_domain(domain))
        config = self.config

        def prepare(item, name):
            return _test_transform(_decode(_read(item, images.from_files)), config), name

        ds = tf.data.Dataset.from_tensor_slices(
            (tf.constant(list(images.items), tf.string), tf.constant(list(images.names)))
        )
        return ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def test_names(self, domain: str = "a") -> tuple[str, ...]:
        """Names of the test images of `domain`, in the order `test` yields them."""
        return self._test_images(_check_domain(domain)).names

    def _test_images(self, domain: str) -> _Images:
        if domain not in self._test:
            self._test[domain] = self._test_loader(domain)
        return self._test[domain]

    def __repr__(self) -> str:
        return (
            f"Unpaired(kind={self.kind!r}, name={self.name!r}, num_a={self.num_a}, "
            f"num_b={self.num_b}, steps_per_epoch={self.steps_per_epoch})"
        )


def load(config: config_lib.DataConfig, seed: int, builtin_seed: int | None = None) -> Unpaired:
    """Resolves `config.dataset` and indexes its training images.

    Args:
      config: the data section of the run config.
      seed: the run seed; all shuffles, crops and flips derive from it.
      builtin_seed: seed of the built-in dataset's images (None: `synthetic.DEFAULT_SEED`, so
        runs with different seeds train and are scored on the same images).

    Returns:
      An `Unpaired` dataset.

    Raises:
      DataError: the source is missing, empty, unreadable or cannot be downloaded.
    """
    dataset = config.dataset.strip()
    if dataset == "builtin":
        root = builtin_path(
            config, synthetic.DEFAULT_SEED if builtin_seed is None else builtin_seed
        )
        return _load_folder(root, config, seed, kind="builtin", name="builtin")
    tfds_name = _tfds_name(dataset)
    if tfds_name is not None:
        return _load_tfds(tfds_name, config, seed)
    return _load_folder(os.path.expanduser(dataset), config, seed, kind="folder", name=dataset)


def builtin_path(config: config_lib.DataConfig, seed: int) -> str:
    """The folder of the built-in dataset for `config.builtin_*` and `seed` (generated if needed).

    Pass it to `synthetic.load_test_pairs` to score a model on the paired test split.
    """
    return synthetic.builtin_dir(
        seed=seed,
        size=config.builtin_size,
        num_train=config.builtin_num_train,
        num_test=config.builtin_num_test,
    )


def _tfds_name(dataset: str) -> str | None:
    """`builder/config` if `dataset` names a TFDS dataset, else None (a folder)."""
    if dataset.startswith(TFDS_PREFIX):
        return dataset[len(TFDS_PREFIX) :]
    if dataset.startswith(TFDS_BUILDER + "/") and not os.path.exists(dataset):
        return dataset
    return None


def _check_domain(domain: str) -> str:
    if domain not in DOMAINS:
        raise ValueError(f"domain must be 'a' or 'b'. Received: domain={domain!r}")
    return domain


# ----------------------------------------------------------------------------------------------
# Folders


def _load_folder(root: str, config, seed: int, *, kind: str, name: str) -> Unpaired:
    root = os.path.abspath(root)  # file paths must not depend on a later working directory
    if not os.path.isdir(root):
        raise DataError(
            f"Dataset folder {root} does not exist. Pass --dataset=builtin, "
            f"--dataset=tfds:cycle_gan/<config> or a folder with trainA/ and trainB/."
        )
    train = {d: _folder_images(root, f"train{d.upper()}", required=True) for d in DOMAINS}

    def test_loader(domain: str) -> _Images:
        split = f"test{domain.upper()}"
        images = _folder_images(root, split, required=False)
        if images is None:
            raise DataError(
                f"{os.path.join(root, split)} has no images; add test images there to "
                f"translate or score the test split."
            )
        return images

    has_test = all(_list_images(os.path.join(root, f"test{d.upper()}"))[0] for d in DOMAINS)
    return Unpaired(
        kind=kind,
        name=name,
        root=root,
        config=config,
        seed=seed,
        train_a=train["a"],
        train_b=train["b"],
        test_loader=test_loader,
        has_test=has_test,
    )


def _list_images(folder: str) -> tuple[list[str], list[str]]:
    """(image paths, other files) under `folder`, recursively, sorted by relative path."""
    images, others = [], []
    if not os.path.isdir(folder):
        return images, others
    for parent, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for file in files:
            if file.startswith("."):
                continue  # .DS_Store, ._AppleDouble, editor swap files
            path = os.path.join(parent, file)
            is_image = os.path.splitext(file)[1].lower() in IMAGE_EXTENSIONS
            (images if is_image else others).append(path)
    key = lambda p: os.path.relpath(p, folder).replace(os.sep, "/")  # noqa: E731
    return sorted(images, key=key), sorted(others, key=key)


def _folder_images(root: str, split: str, *, required: bool) -> _Images | None:
    folder = os.path.join(root, split)
    if not os.path.isdir(folder):
        if not required:
            return None
        raise DataError(
            f"{root} has no {split}/ folder. A dataset folder needs trainA/ and trainB/ "
            f"(testA/ and testB/ optional)."
        )
    paths, others = _list_images(folder)
    if others:
        logging.warning(
            "Ignored %d file(s) in %s that are not images by extension (e.g. %s); "
            "images end in %s.",
            len(others),
            folder,
            os.path.relpath(others[0], folder),
            ", ".join(IMAGE_EXTENSIONS),
        )
    if not paths:
        if not required:
            return None
        raise DataError(
            f"{folder} contains no images ({', '.join(IMAGE_EXTENSIONS)}). "
            f"Put the domain's training images there."
        )
    good = _decodable(paths)
    skipped = [p for p in paths if p not in good]
    for path in skipped:
        logging.warning(
            "Skipping %s: it cannot be decoded as an image (corrupt or truncated).", path
        )
    if skipped:
        logging.warning(
            "Skipped %d of %d images in %s that could not be decoded.",
            len(skipped),
            len(paths),
            folder,
        )
    paths = [p for p in paths if p in good]
    if not paths:
        raise DataError(
            f"None of the {len(skipped)} images in {folder} can be decoded (e.g. "
            f"{os.path.basename(skipped[0])}). Replace them with valid JPEG/PNG/BMP/GIF files."
        )
    names = tuple(os.path.relpath(p, folder).replace(os.sep, "/") for p in paths)
    return _Images(items=tuple(paths), names=names, from_files=True)


def _decodable(paths: list[str]) -> set[str]:
    """The paths that decode, checked once with a parallel tf.data pass."""

    def check(path):
        image = _decode(tf.io.read_file(path))
        # Touch the pixels so the decode cannot be optimised away.
        return path, tf.reduce_min(tf.shape(image))

    ds = (
        tf.data.Dataset.from_tensor_slices(paths)
        .map(check, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .ignore_errors()
    )
    return {path.decode() for path, size in ds.as_numpy_iterator() if size > 0}


# ----------------------------------------------------------------------------------------------
# TFDS


def _import_tfds():
    # Imported on use only: it is slow and the package must import without side effects.
    import tensorflow_datasets as tfds

    return tfds


def _load_tfds(full_name: str, config, seed: int) -> Unpaired:
    builder_name, _, config_name = full_name.partition("/")
    if builder_name != TFDS_BUILDER:
        raise DataError(
            f"Only the TFDS {TFDS_BUILDER} builder is supported (tfds:cycle_gan/<config>). "
            f"Received: dataset={full_name!r}"
        )
    configs = tfds_configs()
    if config_name not in configs:
        raise DataError(
            f"Unknown TFDS config {config_name!r} for {TFDS_BUILDER}. Valid configs: "
            f"{', '.join(configs)} (e.g. --dataset=tfds:cycle_gan/horse2zebra)."
        )
    tfds = _import_tfds()
    # TFDS logs a warning per missing metadata file while it looks for prepared data; the one
    # DataError below says what matters, so its chatter is muted for these two calls.
    verbosity = logging.get_verbosity()
    logging.set_verbosity(min(verbosity, logging.ERROR))
    try:
        builder = tfds.builder(full_name, data_dir=config.data_dir)
        _prepare(builder, full_name)
    finally:
        logging.set_verbosity(verbosity)

    def split_loader(split: str) -> _Images:
        ds = builder.as_dataset(
            split=split, decoders={"image": tfds.decode.SkipDecoding()}, shuffle_files=False
        )
        encoded = tuple(ds.map(lambda ex: ex["image"]).as_numpy_iterator())
        if not encoded:
            raise DataError(f"TFDS split {full_name}:{split} is empty. {_TRY_INSTEAD}")
        return _Images(
            items=encoded,
            names=tuple(f"{split}_{i:05d}" for i in range(len(encoded))),
            from_files=False,
        )

    return Unpaired(
        kind="tfds",
        name=TFDS_PREFIX + full_name,
        root=None,
        config=config,
        seed=seed,
        train_a=split_loader("trainA"),
        train_b=split_loader("trainB"),
        test_loader=lambda d: split_loader(f"test{d.upper()}"),
        has_test=True,
    )


def _prepare(builder, full_name: str) -> None:
    """Downloads and prepares `builder` unless prepared; a failure becomes a DataError.

    Only this step is wrapped: errors reading already prepared data propagate unchanged.
    """
    if builder.is_prepared():
        return
    where = builder.data_dir
    if not _is_mocked(builder):
        # TFDS retries a failed connection with exponential backoff for about 200 s; a short
        # probe of the download host fails in well under a second when offline.
        unreachable = _unreachable_hosts(_download_hosts(builder))
        if unreachable:
            raise DataError(
                f"TFDS dataset {full_name} is not in {where} and could not be downloaded "
                f"(no connection to {unreachable}). {_TRY_INSTEAD}"
            )
    try:
        builder.download_and_prepare()
    except Exception as e:  # noqa: BLE001 - any failure here means "could not download"
        cause = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        if isinstance(e, ImportError) and getattr(e, "name", None):
            cause += f"; pip install {e.name}"
        raise DataError(
            f"TFDS dataset {full_name} is not in {where} and could not be downloaded or "
            f"prepared ({cause}). {_TRY_INSTEAD}"
        ) from e


def _is_mocked(builder) -> bool:
    # Under tfds.testing.mock_data nothing is downloaded, so there is nothing to probe.
    method = getattr(type(builder), "download_and_prepare", None)
    return getattr(method, "__module__", "").startswith("tensorflow_datasets.testing")


def _download_hosts(builder) -> list[tuple[str, int]]:
    """(host, port) of the builder's download URLs; empty when TFDS cannot say."""
    try:
        urls = list(builder.url_infos or {})
    except Exception:  # noqa: BLE001 - best effort: without URLs there is no probe
        return []
    hosts = set()
    for url in urls:
        parts = urllib.parse.urlsplit(url)
        if parts.hostname:
            hosts.add((parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)))
    return sorted(hosts)


def _unreachable_hosts(hosts: list[tuple[str, int]]) -> str:
    """ "host (reason)" for the first host that cannot be connected to, "" if all can."""
    proxies = urllib.request.getproxies()
    if proxies.get("https") or proxies.get("http") or proxies.get("all"):
        return ""  # behind a proxy a direct connection proves nothing
    for host, port in hosts:
        try:
            socket.create_connection((host, port), timeout=_PROBE_TIMEOUT_S).close()
        except OSError as e:
            return f"{host}: {e.strerror or type(e).__name__}"
    return ""


# ----------------------------------------------------------------------------------------------
# Decoding and transforms (graph code, used inside tf.data maps)


def _read(item: tf.Tensor, from_files: bool) -> tf.Tensor:
    return tf.io.read_file(item) if from_files else item


def _decode(encoded: tf.Tensor) -> tf.Tensor:
    """Encoded bytes -> uint8 [H, W, 3] (grey/RGBA/palette/16-bit converted)."""
    return tf.io.decode_image(encoded, channels=3, expand_animations=False, dtype=tf.uint8)


def _resize(image: tf.Tensor, height, width) -> tf.Tensor:
    """Bicubic (antialiased when shrinking, as PIL); a no-op when the size already matches."""
    height = tf.cast(height, tf.int32)
    width = tf.cast(width, tf.int32)
    shape = tf.shape(image)
    same = tf.logical_and(tf.equal(shape[0], height), tf.equal(shape[1], width))
    return tf.cond(
        same,
        lambda: image,
        lambda: tf.image.resize(image, tf.stack([height, width]), method="bicubic", antialias=True),
    )


def _at_least(image: tf.Tensor, size: int) -> tf.Tensor:
    """Resizes up, keeping the aspect, so that both sides are >= size."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = tf.maximum(1.0, size / tf.reduce_min(shape))
    new = tf.maximum(tf.cast(tf.math.ceil(shape * scale), tf.int32), size)
    return _resize(image, new[0], new[1])


def _scale_width(image: tf.Tensor, width: int, min_height: int) -> tf.Tensor:
    """The official `__scale_width`: width := width, height := max(width * h / w, min_height)."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    height = tf.maximum(tf.math.floor(width * shape[0] / shape[1]), float(min_height))
    return _resize(image, height, width)


def _make_multiple(image: tf.Tensor, base: int = 4) -> tf.Tensor:
    """The official `__make_power_2`: round height and width to multiples of `base`."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    # tf.round rounds half to even, like Python's round() in the official code.
    new = tf.maximum(tf.cast(tf.round(shape / base), tf.int32) * base, base)
    return _resize(image, new[0], new[1])


def _random_crop(image: tf.Tensor, size: int, key: tf.Tensor) -> tf.Tensor:
    image = _at_least(image, size)
    return tf.image.stateless_random_crop(image, [size, size, 3], seed=key)


def _train_transform(image, key, config, fixed_size: bool) -> tf.Tensor:
    """uint8 [H, W, 3] -> float32 [crop, crop, 3] (or [h, w, 3]) in [-1, 1]."""
    crop_key, flip_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))
    load, crop = config.load_size, config.crop_size
    x = tf.cast(image, tf.float32)
    p = config.preprocess
    if p == "resize_and_crop":
        x = _random_crop(_resize(x, load, load), crop, crop_key)
    elif p == "crop":
        x = _random_crop(x, crop, crop_key)
    elif p == "scale_width_and_crop":
        x = _random_crop(_scale_width(x, load, crop), crop, crop_key)
    else:  # scale_width, none: the image's own size
        if p == "scale_width":
            x = _scale_width(x, load, crop)
        x = _make_multiple(x)
        if fixed_size:
            x = _random_crop(x, crop, crop_key)
    if not config.no_flip:
        x = tf.image.stateless_random_flip_left_right(x, seed=flip_key)
    x.set_shape([crop, crop, 3] if fixed_size else [None, None, 3])
    return _to_unit_range(x)


def _test_transform(image, config) -> tf.Tensor:
    """uint8 [H, W, 3] -> float32 [h, w, 3] in [-1, 1], deterministic."""
    crop = config.crop_size
    x = tf.cast(image, tf.float32)
    if config.preprocess in ("resize_and_crop", "crop"):
        x = _resize(x, crop, crop)
        x.set_shape([crop, crop, 3])
    else:
        if config.preprocess in ("scale_width", "scale_width_and_crop"):
            x = _scale_width(x, crop, crop)
        x = _make_multiple(x)
        x.set_shape([None, None, 3])
    return _to_unit_range(x)


def _to_unit_range(x: tf.Tensor) -> tf.Tensor:
    # Bicubic resizing overshoots; clip before scaling so outputs stay in [-1, 1].
    return tf.clip_by_value(x, 0.0, 255.0) / 127.5 - 1.0
