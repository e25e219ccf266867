"""`cyclegan-tf`: the command line (absl). Parses flags, builds a Config, calls the library.

    cyclegan-tf train --dataset=builtin --output_dir=runs/quick --preset=quick
    cyclegan-tf export --run_dir=runs/quick --export_dir=exported
    cyclegan-tf translate --model=runs/quick --direction=a2b --input=photos/ --output=out/

Exit codes: 0 done, 2 user error (one line on stderr, no traceback), 1 anything else,
130/143 interrupted by SIGINT/SIGTERM after saving a checkpoint.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

from cyclegan_tf import config as config_lib

COMMANDS = ("train", "export", "translate")
USAGE = (
    "usage: cyclegan-tf {train,export,translate} [--flags]  (cyclegan-tf --helpfull lists all "
    "flags; --flagfile=FILE reads them from a file)"
)

# -- train -----------------------------------------------------------------------------------
flags.DEFINE_string(
    "dataset",
    None,
    "builtin (procedural, no download) | tfds:cycle_gan/<config> (e.g. tfds:cycle_gan/horse2zebra)"
    " | a folder with trainA/ trainB/ [testA/ testB/]. Default: builtin.",
)
flags.DEFINE_string("output_dir", None, "Run directory (checkpoints, logs, images, config.json).")
flags.DEFINE_enum("preset", "paper", list(config_lib.PRESETS), "Starting point for all defaults.")
flags.DEFINE_integer("max_steps", None, "Stop after this many global steps (smoke runs).")
flags.DEFINE_integer("seed", None, "Seed of every random choice (data, init, pool).")
flags.DEFINE_bool("resume", True, "Continue from the newest checkpoint in --output_dir.")
flags.DEFINE_bool("overwrite", False, "With --noresume: delete an existing run in --output_dir.")
flags.DEFINE_string("data_dir", None, "TFDS data directory (default ~/tensorflow_datasets).")
# data
flags.DEFINE_integer("load_size", None, "Resize images to this size before cropping (286).")
flags.DEFINE_integer("crop_size", None, "Random crop size fed to the networks (256).")
flags.DEFINE_enum("preprocess", None, list(config_lib.PREPROCESS), "Train-time resizing/cropping.")
flags.DEFINE_bool("no_flip", None, "Disable random horizontal mirroring.")
flags.DEFINE_integer("batch_size", None, "Global batch size (1).")
# model
flags.DEFINE_enum("generator", None, list(config_lib.GENERATORS), "Generator (resnet_9blocks).")
flags.DEFINE_enum("discriminator", None, list(config_lib.DISCRIMINATORS), "Discriminator (basic).")
flags.DEFINE_integer("ngf", None, "Generator filters in the first conv layer (64).")
flags.DEFINE_integer("ndf", None, "Discriminator filters in the first conv layer (64).")
flags.DEFINE_integer("n_layers_d", None, "Layers of the n_layers discriminator (3).")
flags.DEFINE_enum("norm", None, list(config_lib.NORMS), "Normalization (instance).")
flags.DEFINE_enum("init_type", None, list(config_lib.INITS), "Weight init (normal).")
flags.DEFINE_float("init_gain", None, "Scale of the init (0.02).")
flags.DEFINE_bool("dropout", None, "Dropout in the generator (off).")
# loss
flags.DEFINE_enum("gan_mode", None, list(config_lib.GAN_MODES), "Adversarial loss (lsgan).")
flags.DEFINE_float("lambda_cycle", None, "Cycle weight for both directions (10); sets both below.")
flags.DEFINE_float("lambda_a", None, "Cycle weight A->B->A (10).")
flags.DEFINE_float("lambda_b", None, "Cycle weight B->A->B (10).")
flags.DEFINE_float(
    "lambda_identity", None, "Identity weight as a fraction of the cycle weight (0.5); 0 disables."
)
flags.DEFINE_float("gp_weight", None, "WGAN-GP gradient penalty weight (10).")
flags.DEFINE_integer("pool_size", None, "Image history pool per discriminator (50); 0 disables.")
# optimisation
flags.DEFINE_float("lr", None, "Adam learning rate (2e-4).")
flags.DEFINE_float("beta1", None, "Adam beta1 (0.5).")
flags.DEFINE_enum("lr_policy", None, list(config_lib.LR_POLICIES), "Learning-rate policy (linear).")
flags.DEFINE_integer("n_epochs", None, "Epochs at the initial learning rate (100).")
flags.DEFINE_integer("n_epochs_decay", None, "Epochs of linear decay to zero (100).")
# loop
flags.DEFINE_integer("save_epoch", None, "Checkpoint every this many epochs (5).")
flags.DEFINE_integer("save_steps", None, "Checkpoint every this many steps (1000).")
flags.DEFINE_integer("log_steps", None, "TensorBoard scalars every this many steps (100).")
flags.DEFINE_enum(
    "precision",
    None,
    list(config_lib.PRECISIONS),
    "train: numeric precision (float32; quick preset mixed_bfloat16). export/translate: the "
    "precision the generators run in (default: the run's training precision; mixed_bfloat16 is "
    "~1.9x faster on CPUs with AVX512_BF16, float32 is portable).",
)
flags.DEFINE_bool("jit_compile", None, "XLA-compile the train step (slower on CPU).")
flags.DEFINE_enum("strategy", None, list(config_lib.STRATEGIES), "Distribution strategy.")
flags.DEFINE_bool("deterministic", None, "Deterministic ops (exact resume; a little slower).")

# -- export / translate ----------------------------------------------------------------------
flags.DEFINE_string("run_dir", None, "export: the training run directory.")
flags.DEFINE_string(
    "export_dir",
    None,
    "export: base directory of the SavedModels. train: if set, export there when training ends "
    "and translate the dataset's testA/ with the exported A->B model into <output_dir>/translated.",
)
flags.DEFINE_string("checkpoint", None, "export/translate: checkpoint step or name (latest).")
flags.DEFINE_integer("version", None, "export: model version (default: next free integer).")
flags.DEFINE_string("model", None, "translate: a run directory or an exported SavedModel.")
flags.DEFINE_enum("direction", "a2b", ["a2b", "b2a"], "translate: direction.")
flags.DEFINE_string("input", None, "translate: an image file, a folder, or a glob.")
flags.DEFINE_string("output", None, "translate: output folder (file names kept).")

FLAGS = flags.FLAGS

# Flags that map 1:1 onto a config field of the same name.
_CONFIG_FLAGS = tuple(
    name
    for name in config_lib.field_names()
    if name in FLAGS and name not in ("dataset", "data_dir", "seed", "max_steps")
)


class UsageError(ValueError):
    """A command-line mistake: reported as one line, exit code 2."""


def build_config() -> config_lib.Config:
    """The Config described by the parsed flags: preset, then explicit flags on top."""
    overrides = {name: FLAGS[name].value for name in _CONFIG_FLAGS if FLAGS[name].value is not None}
    if FLAGS.lambda_cycle is not None:
        overrides.setdefault("lambda_a", FLAGS.lambda_cycle)
        overrides.setdefault("lambda_b", FLAGS.lambda_cycle)
    for name in ("dataset", "data_dir", "seed", "max_steps"):
        if FLAGS[name].value is not None:
            overrides[name] = FLAGS[name].value
    return config_lib.preset(FLAGS.preset, **overrides)


def _require(command: str, *names: str) -> None:
    missing = [f"--{n}" for n in names if FLAGS[n].value is None]
    if missing:
        raise UsageError(f"{command} needs {' and '.join(missing)}.")


def _train() -> int:
    _require("train", "output_dir")
    config = build_config()  # before importing TensorFlow: flag mistakes are reported at once
    from cyclegan_tf import train

    try:
        result = train.train(
            config, FLAGS.output_dir, resume=FLAGS.resume, overwrite=FLAGS.overwrite
        )
    except train.Interrupted as e:
        print(
            f"Interrupted at step {e.step}; checkpoint saved to {e.path}. Re-run the same command "
            "to resume.",
            file=sys.stderr,
        )
        return 128 + e.signum
    except train.NonFiniteLossError as e:
        print(f"cyclegan-tf: {e}", file=sys.stderr)
        return 1
    print(f"Done at step {result.step}: checkpoint {result.checkpoint}", flush=True)
    if FLAGS.export_dir:
        return _export_and_translate_test_split(result)
    return 0


def _export_and_translate_test_split(result) -> int:
    """After training: SavedModels for serving, and the test images translated by them."""
    from cyclegan_tf import export, inference

    paths = export.export_run(result.run_dir, FLAGS.export_dir)
    _print_exported(paths)
    test_a = os.path.join(result.data_root, "testA") if result.data_root else None
    if not test_a or not os.path.isdir(test_a):
        return 0
    out = os.path.join(result.run_dir, "translated")
    summary = inference.translate(paths["a2b"], test_a, out, direction="a2b")
    return 0 if not summary.failed else 1


def _export() -> int:
    from cyclegan_tf import export

    _require("export", "run_dir", "export_dir")
    paths = export.export_run(
        FLAGS.run_dir,
        FLAGS.export_dir,
        checkpoint=FLAGS.checkpoint,
        version=FLAGS.version,
        precision=FLAGS.precision,
    )
    _print_exported(paths)
    return 0


def _print_exported(paths: dict[str, str]) -> None:
    """One line per exported direction, with the precision export.json records."""
    from cyclegan_tf import inference

    for direction, path in paths.items():
        precision = inference.read_export_info(path)["precision"]
        print(f"Exported {direction} ({precision}): {path}", flush=True)


def _translate() -> int:
    from cyclegan_tf import inference

    _require("translate", "model", "input", "output")
    summary = inference.translate(
        FLAGS.model,
        FLAGS.input,
        FLAGS.output,
        direction=FLAGS.direction,
        checkpoint=FLAGS.checkpoint,
        precision=FLAGS.precision,
    )
    return 0 if not summary.failed else 1


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "the user asked for something impossible" (exit 2, one line).

    The library's user-facing errors (data.DataError, checkpoints.CheckpointError,
    train.RunDirError, config validation) all derive from ValueError; catching the base class here
    keeps a flag mistake from importing TensorFlow just to report it.
    """
    return (UsageError, ValueError, FileNotFoundError)


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else None
    if command not in COMMANDS or len(argv) > 2:
        extra = " ".join(argv[1:]) or "nothing"
        _fail(f"expected one command of {', '.join(COMMANDS)}, got {extra!r}. {USAGE}")
    _quiet_tensorflow()
    handler = {"train": _train, "export": _export, "translate": _translate}[command]
    try:
        return handler()
    except _user_errors() as e:
        _fail(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130


def _fail(message: str) -> None:
    print(f"cyclegan-tf: error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def _quiet_tensorflow() -> None:
    # absl INFO lines (checkpoint sharding timings) drown the progress output; --verbosity=0
    # brings them back.
    from absl import logging

    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)


def _parse_flags(argv: list[str]) -> list[str]:
    try:
        return FLAGS(argv)
    except flags.Error as e:
        _fail(f"{str(e).splitlines()[0]} (see cyclegan-tf --helpfull)")


def run() -> None:
    """Console-script entry point."""
    # TensorFlow's C++ log lines (CUDA probing on a machine without a GPU, grappler notices) are
    # noise for users; real failures still surface as Python exceptions. Set the variable to 0 to
    # see them.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    run()
