"""The command line: every user mistake is one line on stderr and exit code 2."""

import os
import subprocess
import sys

import pytest

from cyclegan_tf import config


def _cli(*args, cwd=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(
        [sys.executable, "-m", "cyclegan_tf.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


def _one_line_error(proc, fragment):
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-1000:], proc.stderr[-2000:])
    lines = [x for x in proc.stderr.splitlines() if x.startswith("cyclegan-tf: error:")]
    assert len(lines) == 1, proc.stderr
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "args, fragment",
    [
        ([], "expected one command of train, export, translate"),
        (["fly"], "got 'fly'"),
        (["train"], "train needs --output_dir"),
        (["train", "--output_dir=x", "--norm=layer"], "--norm"),
        (["train", "--output_dir=x", "--lr=fast"], "--lr"),
        (["train", "--output_dir=x", "--bogus=1"], "Unknown command line flag 'bogus'"),
        (["train", "--output_dir=x", "--crop_size=300"], "crop_size=300 > load_size=286"),
        (["train", "--output_dir=x", "--batch_size=0"], "batch_size must be a positive integer"),
        (["train", "--output_dir=x", "--preset=huge"], "--preset"),
        (["export"], "export needs --run_dir and --export_dir"),
        (["translate", "--model=m"], "translate needs --input and --output"),
    ],
)
def test_bad_flags_are_one_line_exit_2(args, fragment, tmp_path):
    _one_line_error(_cli(*args, cwd=tmp_path), fragment)


def test_missing_dataset_folder_is_one_line_and_writes_nothing(tmp_path):
    run = tmp_path / "run"
    proc = _cli("train", f"--output_dir={run}", f"--dataset={tmp_path / 'nope'}", "--preset=tiny")
    _one_line_error(proc, "nope")
    assert not run.exists()


def test_export_of_a_missing_run_is_one_line(tmp_path):
    proc = _cli("export", f"--run_dir={tmp_path / 'none'}", f"--export_dir={tmp_path / 'out'}")
    _one_line_error(proc, "No checkpoints in")


def test_presets_and_flags_compose():
    from absl import flags

    from cyclegan_tf import cli

    flags.FLAGS.unparse_flags()
    flags.FLAGS(["cyclegan-tf", "--preset=quick", "--ngf=16", "--lambda_cycle=5", "--seed=3"])
    try:
        built = cli.build_config()
    finally:
        flags.FLAGS.unparse_flags()
    expected = config.preset("quick", ngf=16, lambda_a=5.0, lambda_b=5.0, seed=3)
    assert built == expected


@pytest.mark.slow
def test_train_end_to_end_then_resume_and_refuse_overwrite(tmp_path):
    run = tmp_path / "run"
    args = ["train", f"--output_dir={run}", "--preset=tiny", "--max_steps=4"]
    proc = _cli(*args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "First step finished" in proc.stdout and "Done at step 4" in proc.stdout
    assert "identity" in proc.stdout  # the built-in score table
    proc = _cli(*args[:-1], "--max_steps=6")
    assert (
        proc.returncode == 0 and "Resuming from" in proc.stdout and "Done at step 6" in proc.stdout
    )
    _one_line_error(_cli(*args, "--noresume"), "already holds a run")
    _one_line_error(_cli(*args, "--ngf=16"), "model.ngf: 8 -> 16")


def test_flagfile(tmp_path):
    from absl import flags

    from cyclegan_tf import cli

    flagfile = tmp_path / "h2z.flags"
    flagfile.write_text("--preset=tutorial\n--crop_size=128\n--load_size=143\n--pool_size=10\n")
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["cyclegan-tf", f"--flagfile={flagfile}", "--seed=2"])
    try:
        built = cli.build_config()
    finally:
        flags.FLAGS.unparse_flags()
    assert built == config.preset("tutorial", crop_size=128, load_size=143, pool_size=10, seed=2)
