"""Input pipelines (tf.data only): image sources -> decode -> jitter/mirror -> [-1, 1].

This module owns where images come from and how they become network inputs:

Sources, named by one string (`DataConfig.dataset`):
  * `builtin`: the procedural dataset of `synthetic.py`, generated and cached on first use, then
    read as a folder.
  * `tfds:cycle_gan/<config>` (or `cycle_gan/<config>` when no such local folder exists): the TFDS
    `cycle_gan` builder (configs: `tfds_configs()`), splits trainA/trainB/testA/testB. The split's
    ENCODED images are read into memory once (`SkipDecoding`) into one numpy object array, and a
    sample is fetched by index with `tf.numpy_function`: the bytes are held once, never copied
    into a `tf.constant` (which would double the memory and, inside a dataset graph, hit the 2 GB
    GraphDef limit). TFDS 4.9's random-access `as_data_source` needs the ArrayRecord format,
    while `cycle_gan` is prepared as TFRecord, so it is not used. This also works under
    `tfds.testing.mock_data`, which yields encoded PNGs.
  * a folder with trainA/ and trainB/ (testA/ and testB/ optional), searched recursively, files
    sorted by relative path.

Decoding: `images.decode_rgb`, so JPEG, PNG (grey, RGBA, palette, 16-bit: scaled to 8 bits), BMP,
GIF (first frame) and WebP all become RGB uint8.

Bad input policy (folders):
  * Files whose extension is not an image extension (`images.IMAGE_EXTENSIONS`) are ignored,
    with one warning per folder that counts them; hidden files (".name") are ignored silently.
  * Every image file is decoded once when the source is loaded; a file that does not decode
    (corrupt, truncated, empty, not really an image) is skipped with a warning naming it, then a
    count. Skipping happens before indexing, so indices, shuffles and resumption stay
    deterministic for a given set of files.
  * `FileChecks` remembers each file's verdict by (path, size, modification time), in the run
    directory when training: a later start decodes only new or changed files, so starting again
    costs a stat per file instead of a decode. A header check would be cheaper on the first start
    but is not enough: a truncated JPEG or PNG has a valid header and fails only when decoded,
    which would stop a run mid-way (or, skipped then, shift the stream and break resumption).
  * A missing folder, a missing or image-less trainA/trainB, or a domain where no file decodes
    raises `DataError`: a one-line `ValueError` that names the problem and what to do.

Training stream (`Unpaired.train`): unpaired batches `(real_a, real_b)`, float32 NHWC in [-1, 1].
Sample number `g` (a global counter: step * batch_size + position in the batch) takes, in each
domain of n images, position `g % n` of the permutation number `g // n` of that domain: each
domain is an endless series of passes, each pass shuffled with its own stateless seed, so the
shorter domain is cycled and reshuffled. The permutation is never built: `index_shuffle` gives
one position of it in O(1) per sample. An epoch is max(|A|, |B|) samples. All randomness
(shuffles, crops, flips) is `tf.random.stateless_*` with seeds derived from (seed, domain, pass or
sample number): `train(start_step=k)` yields exactly the batches k, k+1, ... of `train()`.
Under a distribution strategy each input pipeline (one per worker) computes only the samples of
its own replicas (`input_context`); together the pipelines yield exactly the global stream.

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
import functools
import json
import math
import os
import socket
import urllib.parse
import urllib.request
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from absl import logging

from cyclegan_tf import config as config_lib
from cyclegan_tf import errors, synthetic
from cyclegan_tf import images as images_lib

TFDS_PREFIX, TFDS_BUILDER = config_lib.TFDS_PREFIX, config_lib.TFDS_BUILDER
DOMAINS = ("a", "b")

_DOMAIN_TAG = {"a": 0, "b": 1}
# Stream tags keep shuffle and augmentation seeds apart for the same (seed, domain, number).
_SHUFFLE, _AUGMENT = 0, 1
_PROBE_TIMEOUT_S = 5.0
_TRY_INSTEAD = "Use a local folder (--dataset=/path/with/trainA_trainB) or --dataset=builtin."


DataError = errors.DataError  # data.DataError: the name callers have used


@dataclasses.dataclass(frozen=True)
class _Images:
    """One split of one domain: `items[i]` is a file path (from_files: a tuple of str) or the
    encoded bytes of image i (a numpy object array, held once; see `_reader`)."""

    items: Sequence[str] | np.ndarray
    names: tuple[str, ...]
    from_files: bool

    def __len__(self) -> int:
        return len(self.items)


class FileChecks:
    """Which image files decode, remembered by (path, size, modification time) between starts.

    `load(..., file_checks=checks)` decodes only the files this record does not know in their
    current size and modification time, and records their verdicts. `read` never fails (a
    missing, unreadable or foreign file is an empty record); `save_to(path)` writes the record
    atomically and then keeps it written whenever it learns more (e.g. when a test split is
    checked later), so a run writes it only once it owns its directory.

    A file edited in place without changing its size or modification time is not noticed (as
    with make and rsync's quick check).
    """

    VERSION = 1

    def __init__(self, entries: dict[str, list] | None = None):
        self._entries: dict[str, list] = dict(entries or {})
        self._seen: set[str] = set()
        self._path: str | None = None
        self._read_from: str | None = None
        self.decoded = 0  # files decoded through this record (tests, bench)

    @classmethod
    def read(cls, path: str) -> FileChecks:
        try:
            with open(path) as f:
                record = json.load(f)
            if record.get("version") == cls.VERSION and isinstance(record.get("files"), dict):
                checks = cls(record["files"])
                checks._read_from = path
                return checks
        except (OSError, ValueError, AttributeError):
            pass
        return cls()

    def decodable(self, paths: list[str]) -> set[str]:
        """The paths that decode: known verdicts reused, the others decoded and recorded."""
        keys, unknown = {}, []
        for path in paths:
            try:
                stat = os.stat(path)
            except OSError:
                continue  # vanished or unreadable: not decodable, nothing to remember
            keys[path] = [stat.st_size, stat.st_mtime_ns]
            known = self._entries.get(path)
            if not (isinstance(known, list) and known[:2] == keys[path]):
                unknown.append(path)
        good = _decodable(unknown) if unknown else set()
        self.decoded += len(unknown)
        for path in unknown:
            self._entries[path] = [*keys[path], path in good]
        self._seen.update(keys)
        if unknown and self._path:
            self._write()
        return {p for p in keys if self._entries[p][2]}

    def save_to(self, path: str) -> None:
        """Writes the record to `path` now (unless it was read from there and has learnt nothing
        since) and after every later check that learns something."""
        self._path = path
        if self.decoded or path != self._read_from or not os.path.exists(path):
            self._write()

    def _write(self) -> None:
        # Entries of files not looked at by this process (a test split not loaded yet) are kept
        # while the file exists; those of deleted files are dropped.
        files = {p: v for p, v in self._entries.items() if p in self._seen or os.path.exists(p)}
        tmp = f"{self._path}.tmp-{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump({"version": self.VERSION, "files": files}, f, separators=(",", ":"))
        os.replace(tmp, self._path)


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

    def train(
        self,
        start_step: int = 0,
        num_steps: int | None = None,
        input_context: tf.distribute.InputContext | None = None,
    ) -> tf.data.Dataset:
        """The training stream, from global step `start_step` on.

        Args:
          start_step: first step; the stream equals steps start_step, start_step + 1, ... of
            `train(0)`, bit for bit.
          num_steps: stop after this many steps (None: endless; the trainer decides).
          input_context: from `strategy.distribute_datasets_from_function`: this pipeline then
            computes only its replicas' part of every global batch. With P pipelines (workers)
            of L local replicas each (R = P * L replicas, global batch B), replica r = p * L + l
            of pipeline p takes the B / R consecutive samples from s * B + r * B / R of step s;
            the pipeline yields its per-replica batches in the order step, local replica, which
            is how the strategy hands them out. None: whole global batches.

        Returns:
          A dataset of `(real_a, real_b)`, each float32 [batch, crop_size, crop_size, 3] in
          [-1, 1] ([1, H, W, 3] with H, W multiples of 4 for scale_width/none at batch_size 1),
          where batch is batch_size, or batch_size / R with an `input_context`.
        """
        if start_step < 0:
            raise ValueError(f"start_step must be >= 0. Received: start_step={start_step}")
        batch = self.config.batch_size
        pipelines, pipeline, replicas = 1, 0, 1
        if input_context is not None:
            pipelines = input_context.num_input_pipelines
            pipeline = input_context.input_pipeline_id
            replicas = input_context.num_replicas_in_sync
        if batch % replicas or replicas % pipelines:
            raise ValueError(
                f"batch_size {batch} must be divisible by the {replicas} replicas, and the "
                f"replicas by the {pipelines} input pipelines."
            )
        per_pipeline = batch // pipelines  # samples of each step this pipeline computes
        if num_steps is None:
            positions = tf.data.Dataset.counter(dtype=tf.int64)
        else:
            positions = tf.data.Dataset.range(num_steps * per_pipeline)
        loaders = {d: self._sampler(d) for d in DOMAINS}

        def sample(position):
            step = start_step + position // per_pipeline
            counter = step * batch + pipeline * per_pipeline + position % per_pipeline
            return loaders["a"](counter), loaders["b"](counter)

        options = tf.data.Options()
        # Every pipeline already computes only its own samples: nothing for tf.data to shard.
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        return (
            positions.map(_plain(sample), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .batch(batch // replicas, drop_remainder=True)
            .prefetch(tf.data.AUTOTUNE)
            .with_options(options)
        )

    def _sampler(self, domain: str):
        images = self._train[domain]
        read = _reader(images)
        count = tf.constant(len(images), tf.int64)
        tag = _DOMAIN_TAG[domain]
        shuffle_key = tf.constant([self.seed, 2 * tag + _SHUFFLE], tf.int64)
        augment_key = tf.constant([self.seed, 2 * tag + _AUGMENT], tf.int64)
        config = self.config
        fixed = self.fixed_size

        def draw(counter):
            # Pass number counter // n of this domain, a permutation with its own seed; only the
            # position needed is computed (O(1), not a shuffle of n indices per sample).
            pass_key = tf.random.experimental.stateless_fold_in(shuffle_key, counter // count)
            index = tf.random.experimental.index_shuffle(counter % count, pass_key, count - 1)
            image = _decode(read(index))
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
        read, names = _reader(images), tf.constant(list(images.names), tf.string)

        def prepare(index):
            return _test_transform(_decode(read(index)), config), names[index]

        ds = tf.data.Dataset.range(len(images))
        return ds.map(_plain(prepare), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

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


def load(
    config: config_lib.DataConfig,
    seed: int,
    builtin_seed: int | None = None,
    file_checks: FileChecks | None = None,
) -> Unpaired:
    """Resolves `config.dataset` and indexes its training images.

    Args:
      config: the data section of the run config.
      seed: the run seed; all shuffles, crops and flips derive from it.
      builtin_seed: seed of the built-in dataset's images (None: `synthetic.DEFAULT_SEED`, so
        runs with different seeds train and are scored on the same images).
      file_checks: folder sources: the verdicts of earlier starts, reused for unchanged files
        and completed with the new ones (None: decode every file).

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
        return _load_folder(root, config, seed, file_checks, kind="builtin", name="builtin")
    tfds_name = config_lib.tfds_name(dataset)
    if tfds_name is not None:
        return _load_tfds(tfds_name, config, seed)
    root = os.path.expanduser(dataset)
    return _load_folder(root, config, seed, file_checks, kind="folder", name=dataset)


def test_folder(config: config_lib.DataConfig, domain: str = "a") -> str | None:
    """The folder of a folder or built-in dataset's test images of `domain`, None if it has none.

    TFDS datasets have no folder (None): their test split is read with `load(...).test(domain)`.
    """
    _check_domain(domain)
    dataset = config.dataset.strip()
    if dataset == "builtin":
        root = builtin_path(config, synthetic.DEFAULT_SEED)
    elif config_lib.tfds_name(dataset) is not None:
        return None
    else:
        root = os.path.abspath(os.path.expanduser(dataset))
    folder = os.path.join(root, f"test{domain.upper()}")
    return folder if os.path.isdir(folder) else None


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


def _check_domain(domain: str) -> str:
    if domain not in DOMAINS:
        raise ValueError(f"domain must be 'a' or 'b'. Received: domain={domain!r}")
    return domain


# ----------------------------------------------------------------------------------------------
# Folders


def _load_folder(root: str, config, seed: int, checks, *, kind: str, name: str) -> Unpaired:
    root = os.path.abspath(root)  # file paths must not depend on a later working directory
    config_lib.check_dataset_folder(root)
    train = {d: _folder_images(root, f"train{d.upper()}", checks, required=True) for d in DOMAINS}

    def test_loader(domain: str) -> _Images:
        split = f"test{domain.upper()}"
        images = _folder_images(root, split, checks, required=False)
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
            is_image = images_lib.is_image_file(file)
            (images if is_image else others).append(path)
    key = functools.partial(_relative, os.path.join(folder, ""))
    return sorted(images, key=key), sorted(others, key=key)


def _relative(prefix: str, path: str) -> str:
    """`path` relative to the folder `prefix` (ending in a separator) it was listed under, with
    "/" separators (what os.path.relpath gives, without its cost per file)."""
    return path[len(prefix) :].replace(os.sep, "/")


def _folder_images(root: str, split: str, checks, *, required: bool) -> _Images | None:
    folder = os.path.join(root, split)
    if not os.path.isdir(folder):
        if required:
            config_lib.check_dataset_folder(root)  # says which folder is missing
            # It passed: the folder appeared after the check above. Still an error, not None.
            raise DataError(f"{folder} is not a folder (it changed while being read). Run again.")
        return None
    paths, others = _list_images(folder)
    if others:
        logging.warning(
            "Ignored %d file(s) in %s that are not images by extension (e.g. %s); "
            "images end in %s.",
            len(others),
            folder,
            os.path.relpath(others[0], folder),
            ", ".join(images_lib.IMAGE_EXTENSIONS),
        )
    if not paths:
        if not required:
            return None
        raise DataError(
            f"{folder} contains no images ({', '.join(images_lib.IMAGE_EXTENSIONS)}). "
            f"Put the domain's training images there."
        )
    good = checks.decodable(paths) if checks is not None else _decodable(paths)
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
    prefix = os.path.join(folder, "")
    names = tuple(_relative(prefix, p) for p in paths)
    return _Images(items=tuple(paths), names=names, from_files=True)


def _decodable(paths: list[str]) -> set[str]:
    """The paths that decode, checked once with a parallel tf.data pass."""

    def check(path):
        image = _decode(tf.io.read_file(path))
        # Touch the pixels so the decode cannot be optimised away.
        return path, tf.reduce_min(tf.shape(image))

    ds = (
        tf.data.Dataset.from_tensor_slices(paths)
        .map(_plain(check), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
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
        # One numpy object array of the encoded bytes: each image is held once (`_reader`).
        encoded = np.fromiter(
            ds.map(_plain(lambda ex: ex["image"])).as_numpy_iterator(), dtype=object
        )
        if not len(encoded):
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


def _plain(fn):
    """`fn` for `Dataset.map` as it is. The map functions here are graph code already (explicit
    `tf.cond`, no Python control flow on tensors), which autograph would parse and rewrite for
    nothing: building the tiny preset's training pipeline up to its first element took 1.1-1.7 s
    with autograph, 0.48-0.62 s without (AVX2 EPYC, fresh processes, 4 interleaved runs each)."""
    return tf.autograph.experimental.do_not_convert(fn)


def _reader(images: _Images):
    """A graph function: image index (int64 scalar) -> the image's encoded bytes (string scalar).

    Files: the paths are a constant of the dataset graph (short strings). Encoded images (TFDS):
    fetched from the numpy array by `tf.numpy_function`, so the bytes stay where they are.
    """
    if images.from_files:
        paths = tf.constant(list(images.items), tf.string)
        return lambda index: tf.io.read_file(tf.gather(paths, index))
    encoded = images.items

    def read(index):
        item = tf.numpy_function(lambda i: encoded[i], [index], tf.string, stateful=False)
        return tf.ensure_shape(item, [])

    return read


def _decode(encoded: tf.Tensor) -> tf.Tensor:
    """Encoded bytes -> uint8 [H, W, 3]: `images.decode_rgb`, the package's one decoder."""
    return images_lib.decode_rgb(encoded)


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
    return images_lib.pixels_to_float(x)


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
    return images_lib.pixels_to_float(x)
