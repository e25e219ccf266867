"""FID and KID of translations as the CycleGAN literature reports them (`cyclegan-tf evaluate`).

This module owns evaluating a model on a dataset's test split: which images are compared, how they
reach the Inception graph, the numbers and the protocol record that makes them citable, the JSON
output, and the periodic evaluation during training (`TrainingEvaluator`: `eval/` scalars and the
best generators in `<run>/best/`). The Inception graph and the distances are `metrics.py`'s, the
built-in dataset's ground-truth score is `synthetic.py`'s; opening the model a user names is
`sources.py`'s (`cyclegan_tf.evaluate` opens it and hands the translators to `evaluate` here), so
training, which evaluates its own generators, needs nothing above this module.

The protocol (CUT via clean-fid, MMagic's evaluation of the official weights): for A->B, every
image of the source domain's test split (testA) is translated and compared with every image of the
target domain's test split (testB) — for horse2zebra 120 translated images against 140 real ones.
Both sets are read at the test preprocessing of the model's run config (`data.Unpaired.test`; the
paper preset resizes to 256 x 256) and quantised to uint8 as a PIL-based pipeline does, the model
translates uint8 to uint8 (a run directory and its exports give the same pixels), and the images go
to Inception as uint8 0..255 at that size: no JPEG round trip (a lossy save changes the numbers),
and the graph resizes to 299 x 299 itself (TF1 bilinear). KID is reported x 1000, as in papers.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from cyclegan_tf import checkpoints, data, errors, hardware, metrics, rundir, synthetic, version
from cyclegan_tf import images as images_lib

DIRECTION_CHOICES = ("a2b", "b2a", "both")
SPLITS = ("test",)
# direction -> (source domain, target domain)
DOMAINS = {"a2b": ("a", "b"), "b2a": ("b", "a")}
INCEPTION_INPUT = (
    "uint8 RGB 0..255 at the test preprocessing size, lossless (no JPEG round trip); the graph "
    "resizes to 299x299 itself (TF1 bilinear, no half-pixel centres)"
)
_TRANSLATE_BATCH = 8
# Shared protocol fields repeated in each direction's record, so that one number can be cited alone.
_CITED = ("dataset", "split", "inception_graph", "inception_graph_bytes", "cyclegan_tf_version")


class EvaluateError(errors.UserError):
    """An evaluation that cannot be run as asked; the message says what to do."""


def directions_of(direction: str) -> tuple[str, ...]:
    """("a2b",), ("b2a",) or both, for a2b | b2a | both.

    Raises:
      errors.ConfigError: anything else.
    """
    if direction not in DIRECTION_CHOICES:
        raise errors.ConfigError(
            f"direction must be a2b, b2a or both. Received: direction={direction!r}"
        )
    return tuple(DOMAINS) if direction == "both" else (direction,)


def check_split(split: str) -> None:
    """Raises a one-line ConfigError unless `split` is one of `SPLITS`."""
    if split not in SPLITS:
        raise errors.ConfigError(
            f"split must be test (the split the published numbers use). Received: split={split!r}"
        )


def evaluate(
    translators: Mapping[str, Any],
    dataset: str,
    split: str = "test",
    inception_graph: str | None = None,
    data_dir: str | None = None,
    batch_size: int = 50,
    kid_subsets: int = 100,
    verbose: bool = True,
    model: str | None = None,
) -> dict:
    """FID and KID of a model's translations of a dataset's test split (see the module docstring).

    Args:
      translators: direction ("a2b" and/or "b2a") -> a `sources.Translator` of that direction
        (what `sources.load` returns: called on uint8 [N, H, W, 3] batches; its `config`,
        `kind`, `source`, `checkpoint`, `step` and `precision` go into the record).
      dataset: builtin | tfds:cycle_gan/<config> | a folder with trainA/ trainB/ testA/ testB/.
        Its test images are read at the test preprocessing of the model's run config.
      split: the split compared; only "test" (the published protocol).
      inception_graph: TTUR's `classify_image_graph_def.pb`; None: the cached copy, downloaded
        once (`metrics.find_inception_graph`).
      data_dir: TFDS data directory (default: the run config's, else ~/tensorflow_datasets).
      batch_size: images per Inception run.
      kid_subsets: KID rounds (subsets of min(N_translated, N_reference, 1000) images).
      verbose: print one line per direction (and the built-in score table).
      model: what the user named (recorded as the protocol's "model"); default: the first
        translator's source.

    Returns:
      {"protocol": {model, model_kind, dataset, split, preprocessing, inception_graph,
      inception_graph_bytes, inception_input, fid, kid, cyclegan_tf_version, date}, and per
      direction "a2b"/"b2a": {"fid", "kid_x1000", "kid_std_x1000", "num_translated",
      "num_reference", "protocol": {reference_set ("<dataset> test domain B, all N images"),
      translated_set, image_size (fed to Inception), model_path, checkpoint, step, precision,
      dataset, split, inception_graph, inception_graph_bytes, cyclegan_tf_version}}; on the
      built-in dataset with a2b also "builtin_score": {"g_ab", "identity"} (`synthetic.score` of
      test A's translations against the paired truth, as training's score.json).

    Raises:
      errors.UserError: a bad argument, a dataset without a test split, a missing Inception graph
        (metrics' message), or a model without a recorded training config.
    """
    # 1. Arguments and the Inception graph: everything that fails fast, before the data.
    directions = tuple(d for d in DOMAINS if d in translators)
    if not directions or set(translators) - set(DOMAINS):
        raise errors.ConfigError(
            f"translators must map a2b and/or b2a to a model. Received: {sorted(translators)}"
        )
    check_split(split)
    graph = metrics.find_inception_graph(inception_graph)
    hardware.configure_gpus()  # before anything initialises a GPU: memory grows on demand

    # 2. The test images, at the test preprocessing of the model's run config.
    loaded = dict(translators)
    model = model or loaded[directions[0]].source
    config = loaded[directions[0]].config
    if config is None:
        raise EvaluateError(
            f"{model!r} does not record its training config (exported by an older version), so "
            "its test preprocessing is unknown; export it again, or evaluate the run directory."
        )
    config = config.replace(dataset=dataset, **({"data_dir": data_dir} if data_dir else {}))
    unpaired = data.load(config.data, seed=config.train.seed)
    real = load_test_images(unpaired)

    # 3. Translate, extract features, compare.
    shared = {
        "model": os.path.abspath(model),
        "model_kind": loaded[directions[0]].kind,
        "dataset": dataset,
        "split": split,
        "preprocessing": (
            f"the test preprocessing of the model's config: {config.data.preprocess}, "
            f"crop_size {config.data.crop_size} (data.Unpaired.test), quantised to uint8"
        ),
        "inception_graph": os.path.abspath(graph),
        "inception_graph_bytes": os.path.getsize(graph),
        "inception_input": INCEPTION_INPUT,
        "fid": "Frechet distance of the pool_3 features' means and covariances (ddof 1), float64",
        "kid": (
            f"unbiased MMD^2 with the cubic kernel, mean and std over {kid_subsets} subsets of "
            "min(N_translated, N_reference, 1000) images, x1000"
        ),
        "cyclegan_tf_version": version.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    result: dict = {"protocol": shared}
    with metrics.InceptionFeatures(graph, batch_size) as features:
        real_features: dict[str, np.ndarray] = {}
        for d in directions:
            source, target = DOMAINS[d]
            if target not in real_features:
                real_features[target] = features(real[target])
            translated = translate_all(loaded[d], real[source])
            scores = distances(features(translated), real_features[target], kid_subsets)
            scores["protocol"] = {
                "reference_set": f"{dataset} {split} domain {target.upper()}, all "
                f"{len(real[target])} images",
                "translated_set": f"{dataset} {split} domain {source.upper()}, all "
                f"{len(real[source])} images, translated {d}",
                "image_size": describe_sizes(translated),
                "model_path": os.path.abspath(loaded[d].source),
                "checkpoint": loaded[d].checkpoint,
                "step": loaded[d].step,
                "precision": loaded[d].precision,
                **{k: shared[k] for k in _CITED},
            }
            result[d] = scores
            if verbose:
                print(format_line(d, scores, dataset), flush=True)

    # 4. The built-in dataset: the ground-truth score of A->B, as training computes it.
    if unpaired.builtin_dir and "a2b" in directions:
        run = loaded["a2b"]
        result["builtin_score"] = synthetic.score_translation(
            lambda x: images_lib.to_float(run(images_lib.to_uint8(x))), unpaired.builtin_dir
        )
        if verbose:
            print("Ground truth (built-in paired test split, a2b):", flush=True)
            print(synthetic.format_scores(result["builtin_score"]["g_ab"]), flush=True)
    return result


def load_test_images(unpaired: data.Unpaired) -> dict[str, list[np.ndarray]]:
    """Both domains' test images as uint8 [H, W, 3] arrays, at the test preprocessing.

    Raises:
      EvaluateError: the dataset has no test split, or fewer than 2 images in a domain.
    """
    if not unpaired.has_test:
        raise EvaluateError(
            f"{unpaired.name} has no test split (testA/ and testB/ with images); FID and KID are "
            "computed on the test split: add testA/ and testB/ or pass another --dataset."
        )
    out = {}
    for domain in data.DOMAINS:
        out[domain] = [images_lib.to_uint8(image.numpy()) for image, _ in unpaired.test(domain)]
        if len(out[domain]) < 2:
            raise EvaluateError(
                f"{unpaired.name} has {len(out[domain])} test {domain.upper()} image(s); FID and "
                "KID need at least 2 per domain."
            )
    return out


def translate_all(
    run: Callable[[np.ndarray], np.ndarray],
    images: Sequence[np.ndarray],
    batch_size: int = _TRANSLATE_BATCH,
) -> list[np.ndarray]:
    """Translates uint8 [H, W, 3] images in same-size batches; results in input order.

    Args:
      run: uint8 [N, H, W, 3] -> uint8 [N, H, W, 3] (e.g. a `sources.Translator`).
      images: uint8 [H, W, 3] arrays, sizes may differ.
      batch_size: images per call.

    Returns:
      uint8 [H, W, 3] arrays, one per input.
    """
    out: list[np.ndarray | None] = [None] * len(images)
    by_size: dict[tuple[int, ...], list[int]] = {}
    for i, image in enumerate(images):
        by_size.setdefault(image.shape, []).append(i)
    for indices in by_size.values():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            translated = np.asarray(run(np.stack([images[i] for i in chunk])))
            for i, image in zip(chunk, translated):
                out[i] = image.astype(np.uint8, copy=False)
    return out


def distances(translated: np.ndarray, reference: np.ndarray, kid_subsets: int = 100) -> dict:
    """FID and KID (x1000) of two feature sets [N, 2048], with their sizes."""
    kid, kid_std = metrics.kid_from_features(translated, reference, num_subsets=kid_subsets)
    return {
        "fid": metrics.fid_from_features(translated, reference),
        "kid_x1000": 1000.0 * kid,
        "kid_std_x1000": 1000.0 * kid_std,
        "num_translated": len(translated),
        "num_reference": len(reference),
    }


def describe_sizes(images: Sequence[np.ndarray]) -> str:
    """ "256x256", or the distinct sizes (images of varying size: scale_width, none)."""
    sizes = sorted({tuple(image.shape[:2]) for image in images})
    text = ", ".join(f"{h}x{w}" for h, w in sizes[:4])
    return text if len(sizes) <= 4 else f"{len(sizes)} sizes, e.g. {text}"


def format_line(direction: str, scores: dict, dataset: str) -> str:
    """One line: `a2b: FID 77.21  KID x1000 12.34 ± 0.56  (120 translated test A vs ...)`."""
    source, target = (d.upper() for d in DOMAINS[direction])
    return (
        f"{direction}: FID {scores['fid']:.2f}  KID x1000 {scores['kid_x1000']:.2f} ± "
        f"{scores['kid_std_x1000']:.2f}  ({scores['num_translated']} translated test {source} vs "
        f"all {scores['num_reference']} test {target} images of {dataset})"
    )


# -- the JSON output -----------------------------------------------------------------------------


def check_output(path: str) -> None:
    """Refuses an `--output` that exists and is not a previous evaluate result (never replaced).

    Raises:
      EvaluateError: `path` is a directory, or a file that is not a JSON object with "protocol".
    """
    if not os.path.lexists(path):
        return
    if os.path.isdir(path):
        raise EvaluateError(f"--output={path} is a directory; pass the path of a .json file.")
    try:
        with open(path) as f:
            previous = json.load(f)
    except (OSError, ValueError):  # UnicodeDecodeError is a ValueError
        previous = None
    if not (isinstance(previous, dict) and "protocol" in previous):
        raise EvaluateError(
            f"--output={path} exists and is not an evaluate result; it is left untouched: choose "
            "another file."
        )


def write_output(result: dict, path: str) -> str:
    """Writes `result` as JSON, atomically (checked with `check_output` first)."""
    check_output(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


# -- during training -----------------------------------------------------------------------------


class TrainingEvaluator:
    """FID/KID of both directions on the test split during training; keeps the best generators.

    Built once per training process: the real test images are read and their Inception features
    computed once. Each call translates test A and test B with the model's current generators,
    logs `eval/fid_a2b`, `eval/kid_a2b` (x1000), `eval/fid_b2a`, `eval/kid_b2a` to TensorBoard (the
    default summary writer) and as one line of metrics.jsonl, and when the mean FID of both
    directions is the lowest so far writes the generators to `<run>/best/ckpt-<step>` (outside
    the checkpoint rotation) with `best/best.json` (step, scores); `--checkpoint=best` loads them.

    Args:
      unpaired: the training dataset (its test split is used).
      features: the Inception feature extractor (closed by `close`).
      run_dir: the run directory.
      kid_subsets: KID rounds.
      verbose: print one line per evaluation.
    """

    def __init__(
        self,
        unpaired: data.Unpaired,
        features: metrics.InceptionFeatures,
        run_dir: str,
        kid_subsets: int = 100,
        verbose: int = 1,
    ):
        self.features = features
        self.run_dir = run_dir
        self.kid_subsets = kid_subsets
        self.verbose = verbose
        self.real = load_test_images(unpaired)
        self.real_features = {d: features(images) for d, images in self.real.items()}
        self.best = read_best(run_dir)  # survives a resume

    def __call__(self, model, step: int) -> dict[str, float]:
        """Evaluates `model` (a `trainer.CycleGAN`) after `step`; returns the logged scalars."""
        scalars = {}
        for direction, (source, target) in DOMAINS.items():

            def run(images, direction=direction):
                translated = model.translate(images_lib.to_float(images), direction)
                return images_lib.to_uint8(translated)

            translated = translate_all(run, self.real[source])
            scores = distances(
                self.features(translated), self.real_features[target], self.kid_subsets
            )
            scalars[f"eval/fid_{direction}"] = scores["fid"]
            scalars[f"eval/kid_{direction}"] = scores["kid_x1000"]
        for name, value in scalars.items():
            tf.summary.scalar(name, value, step=step)
        with open(os.path.join(self.run_dir, rundir.METRICS_FILE), "a") as f:
            f.write(json.dumps({"step": step, **scalars}) + "\n")
        mean_fid = float(np.mean([scalars[f"eval/fid_{d}"] for d in DOMAINS]))
        improved = self.best is None or mean_fid < self.best["fid_mean"]  # False for NaN
        if improved:
            self._keep(model, step, mean_fid, scalars)
        if self.verbose:
            shown = "  ".join(f"{k[5:]}={v:.2f}" for k, v in scalars.items())
            note = "new best" if improved else f"best {self.best['fid_mean']:.2f}"
            print(f"  eval at step {step}: {shown}  (KID x1000; mean FID {mean_fid:.2f}, {note})")
        return scalars

    def _keep(self, model, step: int, mean_fid: float, scalars: dict) -> None:
        folder = os.path.join(self.run_dir, rundir.BEST)
        name = f"ckpt-{step}"
        checkpoint = tf.train.Checkpoint(g_ab=model.g_ab, g_ba=model.g_ba)
        # Created so that write() stores it: `checkpoints.restore_generators` asserts that every
        # object of its Checkpoint, save_counter included, is in the file.
        _ = checkpoint.save_counter
        checkpoint.write(os.path.join(folder, name))
        record = {
            "step": step,
            "checkpoint": name,
            "fid_mean": mean_fid,
            **{k.split("/", 1)[1]: v for k, v in scalars.items()},
            "kid_scale": "x1000",
        }
        path = os.path.join(folder, checkpoints.BEST_FILE)
        with open(f"{path}.tmp-{os.getpid()}", "w") as f:
            json.dump(record, f, indent=2)
        os.replace(f"{path}.tmp-{os.getpid()}", path)
        # Only now that best.json names the new checkpoint: the previous best goes.
        for file in os.listdir(folder):
            if file.startswith("ckpt-") and not file.startswith(f"{name}."):
                os.remove(os.path.join(folder, file))
        self.best = record

    def close(self) -> None:
        self.features.close()


def read_best(run_dir: str) -> dict | None:
    """`<run_dir>/best/best.json`, or None if there is none (or it is unreadable)."""
    try:
        with open(os.path.join(run_dir, rundir.BEST, checkpoints.BEST_FILE)) as f:
            best = json.load(f)
        return best if isinstance(best.get("fid_mean"), (int, float)) else None
    except (OSError, ValueError, AttributeError):
        return None


def inception_graph_for_training(
    every_epochs: int, inception_graph: str | None = None
) -> str | None:
    """The Inception graph `train(eval_every_epochs=K)` will use, found before training starts.

    An explicit `inception_graph` must exist; else the cached copy is used, or downloaded once. A
    graph that is neither given, cached nor downloadable is an error now, not a warning that
    training goes on without the evaluations it was asked for.

    Returns:
      The graph's path, or None when `every_epochs` is 0 (nothing is looked up).

    Raises:
      errors.ConfigError: `every_epochs` is not an integer >= 0.
      metrics.MetricsError: no graph; one line naming --inception_graph and --eval_every_epochs.
    """
    if not _check_every_epochs(every_epochs):
        return None
    try:
        return metrics.find_inception_graph(inception_graph)
    except metrics.MetricsError as e:
        raise metrics.MetricsError(
            f"{str(e).rstrip('.')}, or drop --eval_every_epochs (its FID/KID need the graph)."
        ) from None


def training_evaluator(
    unpaired: data.Unpaired,
    run_dir: str,
    every_epochs: int,
    inception_graph: str | None = None,
    verbose: int = 1,
) -> TrainingEvaluator | None:
    """The evaluator `train(eval_every_epochs=K)` calls, or None when off or impossible.

    Skipped with one warning line on stderr (training goes on) when the dataset has no test
    split. The Inception graph is `inception_graph_for_training`'s: without one, an error.

    Raises:
      errors.ConfigError: `every_epochs` < 0.
      metrics.MetricsError: no Inception graph, or a file that is not the graph.
    """
    if not _check_every_epochs(every_epochs):
        return None
    if not unpaired.has_test:
        _warn(f"--eval_every_epochs skipped: {unpaired.name} has no test split (testA/, testB/).")
        return None
    graph = inception_graph_for_training(every_epochs, inception_graph)
    features = metrics.InceptionFeatures(graph)
    try:
        return TrainingEvaluator(unpaired, features, run_dir, verbose=verbose)
    except BaseException:
        features.close()
        raise


def _check_every_epochs(every_epochs) -> int:
    if isinstance(every_epochs, bool) or not isinstance(every_epochs, int) or every_epochs < 0:
        raise errors.ConfigError(
            "eval_every_epochs must be an integer >= 0. Received: "
            f"eval_every_epochs={every_epochs!r}"
        )
    return every_epochs


def _warn(message: str) -> None:
    print(f"cyclegan-tf: warning: {message}", file=sys.stderr, flush=True)
