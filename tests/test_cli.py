"""The command line: every user mistake is one line on stderr and exit code 2."""

import os
import sys

import fixtures
import pytest
from tensorflow.compat.v1.train import summary_iterator

from cyclegan_tf import cli, config


def _cli(*args, cwd=None):
    return fixtures.run_cli(*args, cwd=cwd, timeout=300)


def _one_line_error(proc, fragment):
    """Exit code 2 and stderr exactly one line (TensorFlow's start-up noise filtered out)."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-1000:], proc.stderr[-2000:])
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("cyclegan-tf: error:"), proc.stderr
    assert fragment in lines[0], lines[0]


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
        (["train", "--output_dir=x", "--preset=tiny", "--generator=unet_128"], "multiple of 128"),
        (["train", "--output_dir=x", "--gan_mode=wgangp", "--precision=mixed_float16"], "wgangp"),
        (["evaluate", "--model=m"], "evaluate needs --dataset"),
        (["import-torch", "--output_dir=x"], "import-torch needs --weights"),
        (["import-torch", "--weights=w.pth", "--output_dir=x", "--direction=both"], "for evaluate"),
        (["train", "--output_dir=x", "--eval_every_epochs=-1"], "eval_every_epochs"),
        (["train", "--output_dir=x", "--weights_b2a=b.pth"], "goes with --init_from"),
        (["train", "--output_dir=x", "--generator=auto"], "generator must be one of"),
    ],
)
def test_bad_flags_are_one_line_exit_2(args, fragment, tmp_path):
    _one_line_error(_cli(*args, cwd=tmp_path), fragment)


@pytest.mark.parametrize("args", [["--help"], ["train", "-h"], ["export", "--helpfull"]])
def test_help_lists_commands_and_flags_and_exits_0(args, tmp_path):
    # absl's own --help printed only "USAGE: cyclegan-tf [flags]" and exited 1.
    proc = _cli(*args, cwd=tmp_path)
    assert proc.returncode == 0 and not proc.stderr, (proc.returncode, proc.stderr)
    out = proc.stdout
    assert out.startswith("usage: cyclegan-tf {train,export,translate,evaluate,import-torch,demo}")
    assert all(f"cyclegan-tf {c} --" in out for c in cli.COMMANDS)
    assert "--dataset:" in out and "--precision:" in out and "Exit codes:" in out
    assert ("--verbosity:" in out) == ("--helpfull" in args)  # absl's flags with --helpfull only
    assert not list(tmp_path.iterdir())


def test_missing_dataset_folder_is_one_line_and_writes_nothing(tmp_path):
    run = tmp_path / "run"
    proc = _cli("train", f"--output_dir={run}", f"--dataset={tmp_path / 'nope'}", "--preset=tiny")
    _one_line_error(proc, "nope")
    assert not run.exists()


def test_a_foreign_config_json_survives_noresume_overwrite(tmp_path):
    (tmp_path / "config.json").write_text('{"app": "mine"}')
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "model.bin").write_text("weights")
    proc = _cli(
        "train", "--output_dir=.", "--noresume", "--overwrite", "--preset=tiny", cwd=tmp_path
    )
    _one_line_error(proc, "not a cyclegan_tf run config")
    assert (tmp_path / "config.json").read_text() == '{"app": "mine"}'
    assert (tmp_path / "checkpoints" / "model.bin").exists()


def test_a_model_that_cannot_be_built_leaves_nothing_behind(tmp_path):
    run = tmp_path / "run"
    proc = _cli("train", f"--output_dir={run}", "--preset=tiny", "--generator=unet_128")
    _one_line_error(proc, "unet_128 needs crop_size to be a multiple of 128")
    assert not run.exists()


def test_internal_errors_exit_1_with_the_traceback(monkeypatch):
    from absl import flags

    from cyclegan_tf import cli

    def broken():
        raise ValueError("an internal bug, not the user's mistake")

    monkeypatch.setattr(cli, "_train", broken)
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["cyclegan-tf"])
    try:
        with pytest.raises(ValueError, match="internal bug"):  # app.run prints it, exits 1
            cli.main(["cyclegan-tf", "train"])
    finally:
        flags.FLAGS.unparse_flags()


def test_native_start_up_noise_is_filtered():
    from cyclegan_tf import nativelog

    text = "\n".join(
        [
            "WARNING: All log messages before absl::InitializeLog() is called are written to "
            "STDERR",
            "I0000 00:00:1796128574.875720 3078 cudart_stub.cc:31] Could not find cuda drivers on "
            "your machine, GPU will not be used.",
            "E0000 00:00:1796128766.580407 4937 cuda_platform.cc:52] failed call to cuInit: "
            "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
            "I0000 00:00:1.0 1 cpu_feature_guard.cc:210] This TensorFlow binary is optimized",
            "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
            "E0000 00:00:1.0 1 some_kernel.cc:1] a real native error",
        ]
    )
    assert nativelog.filter_lines(text, gpu_present=False) == [
        "E0000 00:00:1.0 1 some_kernel.cc:1] a real native error"
    ]
    with_gpu = nativelog.filter_lines(text, gpu_present=True)
    assert len(with_gpu) == 2 and "a GPU is present but CUDA could not initialise it" in with_gpu[0]
    assert "UNKNOWN ERROR (303)" in with_gpu[0]


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


@pytest.mark.slow(seconds=45)
def test_train_end_to_end_then_resume_and_refuse_overwrite(tmp_path):
    # Relative paths from the working directory, as the README's first command gives them
    # (`--output_dir=runs/quick --export_dir=runs/quick/export`).
    def cli(*args):
        return fixtures.run_cli(*args, cwd=tmp_path)

    run = tmp_path / "runs" / "quick"
    args = ["train", "--output_dir=runs/quick", "--preset=tiny", "--max_steps=4"]
    proc = cli(*args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "First step finished" in proc.stdout and "Done at step 4" in proc.stdout
    assert "identity" in proc.stdout  # the built-in score table
    assert proc.stderr == ""  # TensorFlow's start-up noise is filtered on a CPU-only machine
    # A command that succeeds ends without the interpreter's teardown (cli._exit_now): what it
    # wrote is complete, the TensorBoard events included.
    events = [e for f in (run / "logs").iterdir() for e in summary_iterator(str(f))]
    tags = {(v.tag, e.step) for e in events for v in e.summary.value}
    assert {("g/total", 2), ("g/total", 4), ("translations", 4)} <= tags, sorted(tags)
    # The README's first command's shape: resume, then export and translate the test split.
    proc = cli(*args[:-1], "--max_steps=6", "--export_dir=runs/quick/export")
    assert (
        proc.returncode == 0 and "Resuming from" in proc.stdout and "Done at step 6" in proc.stdout
    ), proc.stderr[-2000:]
    assert proc.stderr == ""
    assert "Exported a2b (float32)" in proc.stdout
    translated = os.listdir(run / "translated")  # the 4 test A images of the tiny built-in set
    assert len(translated) == 4 and all(name.endswith(".png") for name in translated)
    _one_line_error(cli(*args, "--noresume"), "already holds a run")
    _one_line_error(cli(*args, "--ngf=16"), "model.ngf: 8 -> 16")


def test_flagfile(tmp_path):
    from absl import flags

    from cyclegan_tf import cli

    flagfile = tmp_path / "h2z.flags"
    flagfile.write_text(
        "--preset=tutorial\n--generator=unet_128\n--crop_size=128\n--load_size=143\n"
        "--pool_size=10\n"
    )
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["cyclegan-tf", f"--flagfile={flagfile}", "--seed=2"])
    try:
        built = cli.build_config()
    finally:
        flags.FLAGS.unparse_flags()
    assert built == config.preset(
        "tutorial", generator="unet_128", crop_size=128, load_size=143, pool_size=10, seed=2
    )


def test_only_a_whole_process_of_its_own_skips_the_interpreter_teardown(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert cli._whole_process_is_ours()
    monkeypatch.setattr(sys, "ps1", ">>> ", raising=False)  # a Python prompt called run()
    assert not cli._whole_process_is_ours()
    monkeypatch.delattr(sys, "ps1")
    monkeypatch.setenv("TF_CONFIG", "{}")  # one worker of a cluster
    assert not cli._whole_process_is_ours()
