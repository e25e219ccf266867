"""The functions behind both the package root (`cyclegan_tf.train`, ...) and `cyclegan-tf`.

Each command of the CLI is one of these functions with the flags as keyword arguments, so the
command line and Python cannot disagree: `cli.py` only parses flags, prints and chooses exit
codes. Errors are `errors.UserError` subclasses with the messages the CLI prints as one line;
nothing here exits the process.

Importing this module imports no TensorFlow (the CLI imports it before TensorFlow, to check flags,
the config, the dataset folder and the run directory within a second); each function imports
what it runs. `load` (opening a model as a `Translator`) is `sources.load`.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cyclegan_tf import cluster, errors, rundir
from cyclegan_tf import config as config_lib

if TYPE_CHECKING:  # imported by the functions that run them: this module imports no TensorFlow
    from cyclegan_tf import training

# train's options besides the config, with their defaults: the CLI flags of the same names.
TRAIN_OPTIONS: dict[str, Any] = {
    "resume": True,
    "overwrite": False,
    "allow_data_change": False,
    "eval_every_epochs": 0,
    "inception_graph": None,
    "init_from": None,
    "weights_b2a": None,
    "export_dir": None,
    "verbose": 1,
}
# Flags that set two config fields at once.
_SHORTHANDS = {"lambda_cycle": ("lambda_a", "lambda_b")}


def train_flag_names() -> tuple[str, ...]:
    """Every keyword `train` takes: config fields (`config.field_names`), `lambda_cycle` and
    `TRAIN_OPTIONS`."""
    names = {*config_lib.field_names(), *_SHORTHANDS, *TRAIN_OPTIONS} - {"dataset"}
    return tuple(sorted(names))


# -- train ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class TrainPlan:
    """A training start checked without TensorFlow: `train` is `prepare_train(...).run()`.

    The CLI runs the two halves itself (it imports TensorFlow in between, with its signal
    handling and start-up output): same checks, same calls.

    Attributes:
      config: the Config of the run (preset, then the flags).
      output_dir: the run directory.
      options: `TRAIN_OPTIONS` with the values given.
      task: this process's place in a cluster (`cluster.Task`).
      init_from: what `training.train(init_from=...)` takes (a path, or {direction: .pth}).
    """

    config: config_lib.Config
    output_dir: str
    options: dict[str, Any]
    task: cluster.Task
    init_from: str | dict[str, str] | None

    def run(self) -> training.TrainResult:
        """Trains, then (with `export_dir`) exports and translates the test split.

        Returns:
          A `training.TrainResult`.
        """
        return self.finish(self.train())

    def train(self) -> training.TrainResult:
        """The training loop (`training.train`); returns its `training.TrainResult`.

        Raises:
          training.Interrupted: SIGINT/SIGTERM stopped it after saving a checkpoint.
          training.NonFiniteLossError: a loss became NaN or infinite.
          errors.UserError: anything `training.train` refuses in one line.
        """
        from cyclegan_tf import training

        o = self.options
        return training.train(
            self.config,
            self.output_dir,
            resume=o["resume"],
            overwrite=o["overwrite"],
            allow_data_change=o["allow_data_change"],
            eval_every_epochs=o["eval_every_epochs"],
            inception_graph=o["inception_graph"],
            init_from=self.init_from,
            verbose=o["verbose"],
        )

    def finish(self, result: training.TrainResult) -> training.TrainResult:
        """With `export_dir`: float32 SavedModels for serving, and the dataset's testA/ images
        translated A->B by the exported model into `<output_dir>/translated/`.

        Returns:
          `result` with `exported` (format -> direction -> path) and `translated` (a
          `translate.TranslateSummary`, or None without a testA/ folder) set; unchanged without
          `export_dir` or on a worker of a cluster other than the chief (it wrote nothing).
        """
        export_dir = self.options["export_dir"]
        if not export_dir or not result.is_chief:
            return result
        from cyclegan_tf import data, sources

        exported = export(result.run_dir, export_dir)
        translated = None
        test_a = data.test_folder(result.config.data, "a")
        if test_a is not None:  # a folder dataset with testA/, or the built-in one
            out = os.path.join(result.run_dir, rundir.TRANSLATED)
            a2b = sources.load(exported["saved_model"]["a2b"], "a2b")
            translated = a2b.translate_files(test_a, out, verbose=bool(self.options["verbose"]))
        return dataclasses.replace(result, exported=exported, translated=translated)


def prepare_train(
    dataset: str | None, output_dir: str, *, preset: str = "paper", **flags: Any
) -> TrainPlan:
    """Checks a training start without importing TensorFlow (see `train` for the arguments).

    Raises:
      TypeError: a keyword that is no flag of train (naming the closest one).
      errors.UserError: an invalid config, dataset folder, run directory or --init_from.
    """
    config, options = train_config(dataset, preset=preset, **flags)
    check_dataset(config.data.dataset)
    task = cluster.Task.from_environment(config.train.strategy)
    if task.is_chief:  # the others never judge it
        rundir.check(config, output_dir, options["resume"], options["overwrite"])
    return TrainPlan(config, output_dir, options, task, _init_from(options))


def train_config(
    dataset: str | None, *, preset: str = "paper", **flags: Any
) -> tuple[config_lib.Config, dict[str, Any]]:
    """The Config and the `TRAIN_OPTIONS` that `train`'s arguments describe (pure).

    The preset first, then every flag given (None: not given); `lambda_cycle` sets `lambda_a`
    and `lambda_b` unless they are given too.

    Raises:
      TypeError: a keyword that is no flag of train (naming the closest one).
      errors.ConfigError: an invalid value or combination.
    """
    names = train_flag_names()
    for name in flags:
        if name not in names:
            close = difflib.get_close_matches(name, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise TypeError(f"train() got an unexpected keyword argument {name!r}{hint}")
    given = {name: value for name, value in flags.items() if value is not None}
    options = {name: given.pop(name, default) for name, default in TRAIN_OPTIONS.items()}
    for shorthand, fields in _SHORTHANDS.items():
        if shorthand in given:
            value = given.pop(shorthand)
            for field in fields:
                given.setdefault(field, value)
    if dataset is not None:
        given["dataset"] = dataset
    return config_lib.preset(preset, **given), options


def train(
    dataset: str | None, output_dir: str, *, preset: str = "paper", **flags: Any
) -> training.TrainResult:
    """Trains CycleGAN into a run directory (or resumes it), as `cyclegan-tf train` does.

    Re-running the same call resumes from the newest checkpoint (see README "Stop and resume").

    Args:
      dataset: "builtin", "tfds:cycle_gan/<config>" or a folder with trainA/ trainB/ [testA/
        testB/]; None: the preset's (builtin).
      output_dir: the run directory (config.json, checkpoints/, logs/, images/, ...).
      preset: the starting point of every default: paper, quick or tiny (`config.PRESETS`).
      **flags: the CLI's flag names: any config field (`max_steps=800`, `crop_size=64`,
        `ngf=32`, `precision="float32"`, `lambda_cycle=10`, ...; `config.field_names()`) and
        `resume` (True), `overwrite` (False), `allow_data_change` (False), `eval_every_epochs`
        (0), `inception_graph`, `init_from` (a run directory or .pth), `weights_b2a`,
        `export_dir` (then export float32 SavedModels there and translate the test split into
        `<output_dir>/translated/`), `verbose` (1: progress; 0: quiet). None means "not given".

    Returns:
      A `training.TrainResult`: run_dir, step, epoch, checkpoint, metrics (the last logged
      losses), score (built-in dataset: the ground-truth score), config (as resolved), and with
      `export_dir` `exported` (format -> direction -> path) and `translated`.

    Raises:
      TypeError: a keyword that is no flag of train; the message names the closest one.
      errors.UserError: an invalid flag value or combination, an unusable dataset or run
        directory (one line, as the CLI prints it).
      training.Interrupted: SIGINT/SIGTERM stopped training after saving a checkpoint.
      training.NonFiniteLossError: a loss became NaN or infinite (nothing bad was saved).
    """
    return prepare_train(dataset, output_dir, preset=preset, **flags).run()


def check_dataset(dataset: str) -> None:
    """The dataset folder checks that need no TensorFlow (`config.check_dataset_folder`, which
    `data.load` applies too), so a typo is reported before seconds of importing TensorFlow.

    Raises:
      errors.DataError: a folder that does not exist or lacks trainA/ or trainB/.
    """
    dataset = dataset.strip()
    if dataset == "builtin" or config_lib.tfds_name(dataset) is not None:
        return
    config_lib.check_dataset_folder(os.path.abspath(os.path.expanduser(dataset)))


def _init_from(options: dict[str, Any]) -> str | dict[str, str] | None:
    """--init_from: a run directory or .pth, or {a2b, b2a: .pth} with --weights_b2a."""
    init_from, weights_b2a = options["init_from"], options["weights_b2a"]
    if weights_b2a is None:
        return init_from
    if not init_from or os.path.isdir(init_from):
        raise errors.ConfigError(
            "train: --weights_b2a goes with --init_from=<a2b .pth>; a run directory brings both "
            "generators it has."
        )
    return {"a2b": init_from, "b2a": weights_b2a}


# -- export, evaluate, import-torch --------------------------------------------------------------


def export(
    run_dir: str,
    export_dir: str,
    *,
    formats: str | Sequence[str] = ("saved_model",),
    checkpoint: str | None = None,
    version: int | None = None,
    precision: str | None = None,
    directions: Sequence[str] | None = None,
    quantize: str | None = None,
    dataset: str | None = None,
) -> dict[str, dict[str, str]]:
    """Exports a run's generators, as `cyclegan-tf export` does (`exporting.export_run`).

    Args:
      run_dir: a run directory (trained, or written by `import_torch`).
      export_dir: the base directory: `cyclegan_a2b/<version>/` SavedModels (TF Serving's
        layout), `tflite/`, `onnx/` files.
      formats: "saved_model", "tflite", "onnx" (a sequence or a comma-separated string).
      checkpoint: a step, checkpoint name, "best" or "epoch_N"; None: the latest.
      version: the version number; None: the next free one.
      precision: what the SavedModels compute in; None: float32 (ONNX: float32 always, TFLite:
        see `quantize`).
      directions: None: every direction the run has.
      quantize: the TFLite files' quantization: None (float32), "float16" (float16 weights),
        "dynamic" (int8 weights, float activations) or "int8" (int8 weights and activations,
        calibrated on the run's training images); needs "tflite" in `formats`. Each quantized
        file is checked against the float32 model on the run's test images (PSNR floors in
        `exporting.QUANTIZED_PSNR_FLOORS`).
      dataset: with `quantize`: read these images instead of the run's own (a folder, "builtin"
        or "tfds:cycle_gan/<config>"), e.g. for a run imported from PyTorch.

    Returns:
      format -> direction -> the path written (SavedModel version directory, or the file).

    Raises:
      errors.UserError: an unusable run directory or checkpoint, an unknown format, a taken
        version, a missing optional dependency (the message names the pip command), `quantize`
        without tflite, unreadable training images for int8, or a TFLite/ONNX file that
        computes something else or a quantized one below its floor (deleted).
    """
    if dataset is not None:
        check_dataset(dataset)
    from cyclegan_tf import exporting

    return exporting.export_run(
        run_dir,
        export_dir,
        checkpoint=checkpoint,
        version=version,
        directions=tuple(directions) if directions is not None else None,
        precision=precision,
        formats=formats,
        quantize=quantize,
        dataset=dataset,
    )


def evaluate(
    model: str,
    dataset: str,
    *,
    direction: str = "a2b",
    split: str = "test",
    inception_graph: str | None = None,
    data_dir: str | None = None,
    checkpoint: str | None = None,
    precision: str | None = None,
    output: str | None = None,
    batch_size: int = 50,
    kid_subsets: int = 100,
    verbose: bool = True,
) -> dict:
    """FID and KID (x1000) of a model's translations of a test split, as `cyclegan-tf evaluate`.

    Args:
      model: anything `load` takes (run directory, export, .tflite/.onnx file).
      dataset: the dataset whose test split is compared ("builtin", "tfds:cycle_gan/<config>",
        a folder with testA/ testB/).
      direction: a2b, b2a or both.
      split: "test" (the published protocol).
      inception_graph: TTUR's classify_image_graph_def.pb; None: the cached copy, downloaded
        once.
      data_dir: TFDS data directory.
      checkpoint: run directories only (see `load`).
      precision: run directories only (see `load`).
      output: also write the result there as JSON (an existing file is replaced only if it is a
        previous evaluate result; checked before anything is computed).
      batch_size: images per Inception run.
      kid_subsets: KID rounds.
      verbose: print one line per direction.

    Returns:
      The result (`evaluation.evaluate`): "protocol", and per direction {"fid", "kid_x1000",
      "kid_std_x1000", "num_translated", "num_reference", "protocol"}; on the built-in dataset
      with a2b also "builtin_score".

    Raises:
      errors.UserError: a bad argument, an unusable model or dataset, no Inception graph, or an
        `output` that is not a previous result.
    """
    check_dataset(dataset)
    from cyclegan_tf import evaluation, metrics, sources

    if output:
        evaluation.check_output(output)  # before the slow part
    directions = evaluation.directions_of(direction)
    evaluation.check_split(split)
    graph = metrics.find_inception_graph(inception_graph)
    translators = {
        d: sources.load(model, d, checkpoint=checkpoint, precision=precision) for d in directions
    }
    result = evaluation.evaluate(
        translators,
        dataset,
        split=split,
        inception_graph=graph,
        data_dir=data_dir,
        batch_size=batch_size,
        kid_subsets=kid_subsets,
        verbose=verbose,
        model=model,
    )
    if output:
        evaluation.write_output(result, output)
    return result


def import_torch(
    weights: str,
    output_dir: str,
    *,
    direction: str = "a2b",
    weights_b2a: str | None = None,
    generator: str = "auto",
) -> str:
    """Turns official PyTorch CycleGAN generator weights into a run directory (no torch needed).

    As `cyclegan-tf import-torch` (`pretrained.import_torch`): nothing in the `.pth` pickle is
    executed; the run directory works with `load`, `export`, `evaluate` and `train(init_from=)`.

    Args:
      weights: a generator `.pth` state_dict (e.g. the official horse2zebra.pth).
      output_dir: the run directory to create (must not exist, or be empty).
      direction: what `weights` translates: a2b or b2a.
      weights_b2a: with direction a2b, the `.pth` of the opposite generator.
      generator: "auto" (recognised from the file) or the generator the file must hold.

    Returns:
      `output_dir`; its `imported.json` records the sources and the layout.

    Raises:
      errors.UserError: an unusable or unsafe file, files of two architectures, another
        generator than asked for, or an existing non-empty `output_dir`.
    """
    from cyclegan_tf import pretrained

    return pretrained.import_torch(
        weights, direction, output_dir, weights_b2a=weights_b2a, generator=generator
    )
