"""`cyclegan-tf`: the command line (absl), thin over `api.py`: flags in, lines and exit codes out.

    cyclegan-tf train --dataset=builtin --output_dir=runs/quick --preset=quick
    cyclegan-tf export --run_dir=runs/quick --export_dir=exported
    cyclegan-tf translate --model=runs/quick --direction=a2b --input=photos/ --output=out/
    cyclegan-tf evaluate --model=runs/quick --direction=both --dataset=builtin --output=fid.json
    cyclegan-tf import-torch --weights=horse2zebra.pth --direction=a2b --output_dir=runs/h2z
    cyclegan-tf demo --model=runs/quick --port=7860

Exit codes: 0 done, 2 user error (one line on stderr, no traceback), 1 anything else,
130/143 interrupted by SIGINT/SIGTERM after saving a checkpoint (143 also on a worker of a
cluster that stops because another one did, saved or not; one line says which).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

from absl import app, flags

from cyclegan_tf import api, cluster, errors, hardware, nativelog, rundir
from cyclegan_tf import config as config_lib

COMMANDS = ("train", "export", "translate", "evaluate", "import-torch", "demo")
USAGE = (
    "usage: cyclegan-tf {train,export,translate,evaluate,import-torch,demo} [--flags]  "
    "(cyclegan-tf --help lists the flags; --flagfile=FILE reads them from a file)"
)

# -- train -----------------------------------------------------------------------------------
flags.DEFINE_string(
    "dataset",
    None,
    "builtin (procedural, no download) | tfds:cycle_gan/<config> (e.g. tfds:cycle_gan/horse2zebra)"
    " | a folder with trainA/ trainB/ [testA/ testB/]. train: default builtin. evaluate: the "
    "dataset whose test split is compared (required). export --quantize: the images to calibrate "
    "and check on instead of the run's own.",
)
flags.DEFINE_string(
    "output_dir",
    None,
    "Run directory (checkpoints, logs, images, config.json). import-torch: the run directory to "
    "create.",
)
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
flags.DEFINE_enum(
    "generator",
    None,
    [*config_lib.GENERATORS, "auto"],
    "Generator (resnet_9blocks). import-torch: auto (default: recognised from the file) or the "
    "generator the file must hold; train refuses auto.",
)
flags.DEFINE_enum("discriminator", None, list(config_lib.DISCRIMINATORS), "Discriminator (basic).")
flags.DEFINE_integer("ngf", None, "Generator filters in the first conv layer (64).")
flags.DEFINE_integer("ndf", None, "Discriminator filters in the first conv layer (64).")
flags.DEFINE_integer("n_layers_d", None, "Layers of the n_layers discriminator (3).")
flags.DEFINE_enum("norm", None, list(config_lib.NORMS), "Normalization (instance).")
flags.DEFINE_enum("init_type", None, list(config_lib.INITS), "Weight init (normal).")
flags.DEFINE_float("init_gain", None, "Scale of the init (0.02).")
flags.DEFINE_bool("dropout", None, "Dropout in the generator (off).")
# loss
flags.DEFINE_enum(
    "gan_mode",
    None,
    list(config_lib.GAN_MODES),
    "Adversarial loss (lsgan). wgangp adds a gradient penalty (--gp_weight), an extension: the "
    "official CycleGAN defines one but never applies it.",
)
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
flags.DEFINE_enum(
    "lr_policy",
    None,
    list(config_lib.LR_POLICIES),
    "Learning-rate policy (linear): linear decays once per epoch as the official code; "
    "linear_steps decays every step (short schedules); constant.",
)
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
    "train: the numeric precision (default auto: mixed_bfloat16 where this machine computes "
    "bfloat16 natively, else float32). export: the precision the SavedModels compute in "
    "(default float32, fast everywhere; mixed_bfloat16 is ~1.9x faster on CPUs with AVX512_BF16 "
    "and slower without; auto: chosen for the exporting machine; TFLite/ONNX are float32). "
    "translate: the precision a run directory's generator computes in (default auto: the best "
    "for this machine); an export runs in the precision it was exported with.",
)
flags.DEFINE_bool("jit_compile", None, "XLA-compile the train step (slower on CPU).")
flags.DEFINE_enum(
    "strategy",
    None,
    list(config_lib.STRATEGIES),
    "Distribution strategy. multi_worker: every worker runs the same command with its own "
    "TF_CONFIG and the same --output_dir on a shared filesystem (README).",
)
flags.DEFINE_bool("deterministic", None, "Deterministic ops (exact resume; a little slower).")
flags.DEFINE_bool(
    "gpu_memory_growth",
    True,
    "Every command: take GPU memory as needed instead of nearly all of it at start, so another "
    "process (translate, evaluate) can share the GPU; --nogpu_memory_growth turns it off.",
)
flags.DEFINE_bool(
    "allow_data_change",
    False,
    "Resume even though the training images differ from those the run started with (the epoch "
    "length and the learning-rate curve change).",
)
flags.DEFINE_integer(
    "eval_every_epochs",
    0,
    "train: FID/KID of both directions on the test split after every this many epochs (logged as "
    "eval/* to TensorBoard and metrics.jsonl; the best generators kept in <output_dir>/best/, "
    "--checkpoint=best); 0: off. Needs the Inception graph (--inception_graph).",
    lower_bound=0,
)
flags.DEFINE_string(
    "init_from",
    None,
    "train: start a NEW run with generators from a run directory (trained, or written by "
    "import-torch) or from a PyTorch generator .pth (g_ab; --weights_b2a adds g_ba). The "
    "architecture flags must match the source.",
)

# -- export / translate ----------------------------------------------------------------------
flags.DEFINE_string("run_dir", None, "export: the training run directory.")
flags.DEFINE_string(
    "export_dir",
    None,
    "export: base directory of the exports. train: if set, export there when training ends "
    "and translate the dataset's testA/ with the exported A->B model into <output_dir>/translated.",
)
flags.DEFINE_string(
    "checkpoint",
    None,
    "export/translate/evaluate: checkpoint step, name or best (--eval_every_epochs) (latest).",
)
flags.DEFINE_integer("version", None, "export: model version (default: next free integer).")
flags.DEFINE_string(
    "format",
    "saved_model",
    "export: comma-separated saved_model (TF Serving), tflite (LiteRT; needs "
    "'cyclegan-tf[tflite]'), onnx (needs 'cyclegan-tf[onnx]'), e.g. saved_model,tflite,onnx.",
)
flags.DEFINE_enum(
    "quantize",
    None,
    ["float16", "dynamic", "int8"],
    "export --format=tflite: quantize the TFLite files (default: float32). float16: float16 "
    "weights, half the size; dynamic: int8 weights, float activations, a quarter; int8: int8 "
    "weights and activations, calibrated on the run's training images (--dataset to read others). "
    "Each file is checked against the float32 model on the run's test images and refused below a "
    "PSNR floor.",
)
flags.DEFINE_string(
    "model",
    None,
    "translate, evaluate, demo: a run directory, an export (base, model or version directory) or "
    "a .tflite/.onnx file.",
)
flags.DEFINE_enum(
    "direction",
    "a2b",
    ["a2b", "b2a", "both"],
    "translate: the direction (a2b or b2a). evaluate: a2b, b2a or both. import-torch: what "
    "--weights translates. demo: the direction(s) served (default: every one the model has).",
)
flags.DEFINE_string(
    "input",
    None,
    "translate: an image or video file (mp4, mov, mkv, webm, animated gif; videos need "
    "'cyclegan-tf[video]'), a folder, or a glob.",
)
flags.DEFINE_string(
    "output",
    None,
    "translate: output folder (file names kept). evaluate: a JSON file for the results (an "
    "existing file is replaced only if it is a previous evaluate result).",
)

# -- evaluate / import-torch ---------------------------------------------------------------
flags.DEFINE_string("split", "test", "evaluate: the split compared (test, as published numbers).")
flags.DEFINE_string(
    "inception_graph",
    None,
    "evaluate, train --eval_every_epochs: TTUR's classify_image_graph_def.pb (from "
    "inception-2015-12-05.tgz); default: the cached copy, downloaded once.",
)
flags.DEFINE_string(
    "weights",
    None,
    "import-torch: the generator's weights: a PyTorch .pth (junyanz, aitorzip family, "
    "aladdinpersson) or keras-io's Keras weights (.h5, .weights.h5, .keras).",
)
# -- demo --------------------------------------------------------------------------------------
flags.DEFINE_string(
    "host", "127.0.0.1", "demo: the address to listen on (0.0.0.0: every interface, the network)."
)
flags.DEFINE_integer("port", 7860, "demo: the port to listen on.", lower_bound=1, upper_bound=65535)
flags.DEFINE_string(
    "weights_b2a",
    None,
    "import-torch, train --init_from: the .pth of the opposite (b2a) generator, with a2b weights.",
)

FLAGS = flags.FLAGS


class UsageError(errors.UserError):
    """A command-line mistake: reported as one line, exit code 2."""


def _train_flags() -> dict:
    """train's flags as `api.train` takes them (None: not given, the preset decides)."""
    return {name: FLAGS[name].value for name in api.train_flag_names() if name in FLAGS}


def build_config() -> config_lib.Config:
    """The Config described by the parsed flags: preset, then explicit flags on top."""
    return api.train_config(FLAGS.dataset, preset=FLAGS.preset, **_train_flags())[0]


def _require(command: str, *names: str) -> None:
    missing = [f"--{n}" for n in names if FLAGS[n].value is None]
    if missing:
        raise UsageError(f"{command} needs {' and '.join(missing)}.")


def _train() -> int:
    _require("train", "output_dir")
    # Before importing TensorFlow, so that these mistakes are reported at once: flags, the
    # config, the dataset folder and the run directory.
    plan = api.prepare_train(FLAGS.dataset, FLAGS.output_dir, preset=FLAGS.preset, **_train_flags())
    # On a worker of a cluster a signal is a request to stop from now on, also while TensorFlow
    # is imported: exiting before joining the cluster would leave the others waiting for it.
    in_cluster = plan.task.multi_worker
    with cluster.STOP.handling(True) if in_cluster else contextlib.nullcontext():
        return _train_with(plan, in_cluster)


def _train_with(plan, in_cluster: bool) -> int:
    _import_tensorflow_quietly()
    from cyclegan_tf import training

    try:
        result = plan.train()
    except training.Interrupted as e:
        saved = f"checkpoint saved to {e.path}" if e.path else "nothing saved (no step trained)"
        cause = "another worker of the cluster received the signal; " if e.by_peer else ""
        every = " on every worker" if in_cluster else ""
        print(
            f"Interrupted at step {e.step}; {cause}{saved}. Re-run the same command{every} to "
            "resume.",
            file=sys.stderr,
        )
        # The checkpoint and logs are written and closed. Exit now: tearing down TensorFlow's
        # runtime and input threads took more than 20 s once under load, and a scheduler that
        # sent SIGTERM may kill the process a few seconds later.
        _exit_now(128 + e.signum)
    except cluster.PeerLost as e:  # one line; no teardown that could wait on the lost worker
        print(f"cyclegan-tf: {e}", file=sys.stderr)
        _exit_now(128 + signal.SIGTERM)
    except training.NonFiniteLossError as e:
        print(f"cyclegan-tf: {e}", file=sys.stderr)
        return 1
    print(f"Done at step {result.step}: checkpoint {result.checkpoint}", flush=True)
    # --export_dir: float32 SavedModels for serving, and the test images translated by them.
    result = plan.finish(result)
    if result.exported:
        _print_exported(result.exported)
    return 1 if result.translated is not None and result.translated.failed else 0


def _one_direction(command: str) -> str:
    if FLAGS.direction == "both":
        raise UsageError(f"{command} takes --direction=a2b or b2a; both is for evaluate.")
    return FLAGS.direction


def _export() -> int:
    _require("export", "run_dir", "export_dir")
    available = rundir.imported_directions(FLAGS.run_dir)
    _import_tensorflow_quietly()
    if len(available) < len(rundir.DIRECTIONS):
        print(
            f"{FLAGS.run_dir} was imported with {'/'.join(available)} only: exporting "
            f"{'/'.join(available)}.",
            flush=True,
        )
    paths = api.export(
        FLAGS.run_dir,
        FLAGS.export_dir,
        formats=FLAGS.format,
        checkpoint=FLAGS.checkpoint,
        version=FLAGS.version,
        precision=FLAGS.precision,
        quantize=FLAGS.quantize,
        dataset=FLAGS.dataset,
    )
    _print_exported(paths)
    return 0


def _print_exported(paths: dict[str, dict[str, str]]) -> None:
    """One line per export, with the precision and (TFLite/ONNX) the check its JSON records."""
    from cyclegan_tf import sources

    for fmt, by_direction in paths.items():
        for direction, path in by_direction.items():
            info = sources.read_export_info(path)
            if fmt == sources.SAVED_MODEL:
                print(f"Exported {direction} ({info['precision']}): {path}", flush=True)
                continue
            check = info["check"]
            if "psnr_db" in check:  # a quantized file, checked on real (or generated) images
                images = check["images"]
                where = (
                    f"{images['count']} test images of {images['dataset']}"
                    if images["source"] == "test split"
                    else f"{images['count']} generated images (no test split: "
                    f"{images['why_not_test_split']})"
                )
                print(
                    f"Exported {direction} {fmt} ({info['precision']}, "
                    f"{os.path.getsize(path) / 1e6:.1f} MB): {path}; checked against the float32 "
                    f"Keras model on {where}: PSNR {check['psnr_db']} dB (floor "
                    f"{check['floor_psnr_db']:g}), max difference "
                    f"{check['max_uint8_difference']} uint8 levels, mean "
                    f"{check['mean_uint8_difference']:.2f}",
                    flush=True,
                )
                continue
            sizes = " and ".join(f"{h}x{w}" for h, w in check["sizes"])
            print(
                f"Exported {direction} {fmt} ({info['precision']}): {path}; checked against the "
                f"Keras model at {sizes}: max difference {check['max_uint8_difference']} uint8 "
                f"level(s), {check['max_float_difference']:.1e} in float",
                flush=True,
            )


def _translate() -> int:
    _require("translate", "model", "input", "output")
    direction = _one_direction("translate")
    _import_tensorflow_quietly()  # before the imports below, which import TensorFlow
    from cyclegan_tf import inference, sources, translate

    # The arguments that fail fast, before the model is loaded.
    inference.check_direction(direction)
    translate.output_names(translate.find_images(FLAGS.input), FLAGS.output)
    translator = sources.load(
        FLAGS.model, direction, checkpoint=FLAGS.checkpoint, precision=FLAGS.precision
    )
    summary = translator.translate_files(FLAGS.input, FLAGS.output)
    return 0 if not summary.failed else 1


def _evaluate() -> int:
    _require("evaluate", "model", "dataset")
    api.check_dataset(FLAGS.dataset)  # before the seconds of importing TensorFlow
    _import_tensorflow_quietly()
    api.evaluate(
        FLAGS.model,
        FLAGS.dataset,
        direction=FLAGS.direction,
        split=FLAGS.split,
        inception_graph=FLAGS.inception_graph,
        data_dir=FLAGS.data_dir,
        checkpoint=FLAGS.checkpoint,
        precision=FLAGS.precision,
        output=FLAGS.output,
    )
    if FLAGS.output:
        print(f"Wrote {FLAGS.output}", flush=True)
    return 0


def _import_torch() -> int:
    _require("import-torch", "weights", "output_dir")
    direction = _one_direction("import-torch")
    _import_tensorflow_quietly()
    run_dir = api.import_torch(
        FLAGS.weights,
        FLAGS.output_dir,
        direction=direction,
        weights_b2a=FLAGS.weights_b2a,
        generator=FLAGS.generator or "auto",
    )
    record = rundir.read_imported(run_dir)
    layout = record["layout"]
    print(f"Imported into run directory {run_dir}", flush=True)
    print(f"Layout found: {layout['found']}", flush=True)
    variant = [
        f"{key} {layout[key]}"
        for key, default in (
            ("down_padding", "zeros"),
            ("upsampling", "torch"),
            ("conv_bias", "auto"),
            ("norm_epsilon", 1e-5),
        )
        if layout[key] != default
    ]
    print(
        f"Architecture: {layout['generator']}, ngf {layout['ngf']}, dropout "
        f"{'on' if layout['dropout'] else 'off'}, {layout['norm']} norm"
        f"{''.join(', ' + v for v in variant)} (recognised from the file)",
        flush=True,
    )
    for d in record["directions"]:
        name = rundir.GENERATOR_NAMES[d]
        print(f"Direction {d} ({name}): {record['sources'][d]['file']}", flush=True)
    return 0


def _demo() -> int:
    _require("demo", "model")
    from cyclegan_tf import demo

    # Before the seconds of importing Gradio, TensorFlow and the model: the port, the extra.
    demo.check_port(FLAGS.host, FLAGS.port)
    demo.require()
    directions = None  # unless asked: every direction the model has
    if FLAGS["direction"].present:
        directions = ("a2b", "b2a") if FLAGS.direction == "both" else (FLAGS.direction,)
    _import_tensorflow_quietly()
    demo.serve(
        FLAGS.model,
        directions=directions,
        checkpoint=FLAGS.checkpoint,
        precision=FLAGS.precision,
        host=FLAGS.host,
        port=FLAGS.port,
    )
    return 0


def _import_tensorflow_quietly() -> None:
    """Imports TensorFlow and initialises its devices with native stderr filtered
    (`nativelog.quiet`: CUDA and CPU-feature notices dropped, a GPU that fails to initialise
    reported in one line). Then --gpu_memory_growth is applied, before anything initialises a GPU.
    """
    if "tensorflow" not in sys.modules:
        with nativelog.quiet():
            import tensorflow as tf

            tf.config.list_physical_devices()
    _configure_gpus()


def _configure_gpus() -> None:
    from cyclegan_tf import hardware

    hardware.configure_gpus(FLAGS.gpu_memory_growth)


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else None
    if command not in COMMANDS or len(argv) > 2:
        extra = " ".join(argv[1:]) or "nothing"
        _fail(f"expected one command of {', '.join(COMMANDS)}, got {extra!r}. {USAGE}")
    _quiet_tensorflow()
    try:  # a typo in an override variable is one line now, not a traceback after the import
        hardware.check_environment()
    except errors.UserError as e:
        _fail(str(e))
    handler = {
        "train": _train,
        "export": _export,
        "translate": _translate,
        "evaluate": _evaluate,
        "import-torch": _import_torch,
        "demo": _demo,
    }[command]
    try:
        return handler()
    except errors.UserError as e:  # anything else is a bug or TensorFlow's: exit 1, traceback
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
        _fail(f"{str(e).splitlines()[0]} (see cyclegan-tf --help)")


HELP_FLAGS = ("-h", "-help", "--help", "-?", "--helpshort", "--helpfull")


def help_text(full: bool = False) -> str:
    """What `cyclegan-tf --help` prints: the commands, the exit codes and this tool's flags
    (`--helpfull`: also absl's own flags)."""
    flags_text = str(FLAGS) if full else FLAGS.module_help(sys.modules[__name__])
    examples = __doc__.strip().split("\n\n", 1)[1]  # the docstring after its summary line
    return f"{USAGE}\n\nExamples:\n{examples}\n\nFlags:{flags_text}\n"


def run() -> None:
    """Console-script entry point."""
    # TensorFlow's C++ log lines (CUDA probing on a machine without a GPU, grappler notices) are
    # noise for users; real failures still surface as Python exceptions. Set the variable to 0 to
    # see them.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    asked = [a for a in sys.argv[1:] if a in HELP_FLAGS]
    try:
        if asked:  # absl's own --help prints the console script's (empty) docstring, exits 1
            sys.stdout.write(help_text(full="--helpfull" in asked))
            sys.exit(0)
        app.run(main, flags_parser=_parse_flags)
    except SystemExit as e:
        if e.code in (0, None) and _whole_process_is_ours():
            _exit_now(0)
        raise


def _whole_process_is_ours() -> bool:
    """Whether this process runs only the command: not a Python prompt or notebook kernel that
    called `run()`, not one worker of several (their runtimes may still talk at exit)."""
    ipython = sys.modules.get("IPython")  # imported by some libraries without a shell running
    shell = ipython is not None and getattr(ipython, "get_ipython", lambda: None)() is not None
    return not (hasattr(sys, "ps1") or shell) and "TF_CONFIG" not in os.environ


def _exit_now(code: int) -> None:
    """Ends the process with `code`, without the interpreter's teardown of TensorFlow and Keras,
    once the command's files are written (a success, or a stop on a signal after its checkpoint):
    the teardown takes ~1 s of CPU and adds nothing, as every file the package writes is closed
    by then (`with` blocks; the TensorBoard writer flushed); logging's handlers are flushed here.
    Measured (AVX2 EPYC): `python -c 'import tensorflow, keras'` 6.2-7.1 s wall, 5.1-5.5 s when
    it ends with `os._exit` instead."""
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
