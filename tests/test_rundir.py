"""The run directory's rules, tested directly (pure Python, no training)."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from cyclegan_tf import config, rundir, training


def _tiny(**overrides):
    return config.preset("tiny", **overrides)


def _make_run(path, cfg=None):
    rundir.create(cfg or _tiny(precision="float32"), str(path), rundir.NEW, None)
    os.makedirs(rundir.checkpoint_dir(str(path)), exist_ok=True)


def test_check_decides_new_resume_overwrite_without_writing(tmp_path):
    run = tmp_path / "run"
    assert rundir.check(_tiny(), str(run), resume=True, overwrite=False) == rundir.NEW
    assert not run.exists()
    _make_run(run)
    assert rundir.check(_tiny(), str(run), resume=True, overwrite=False) == rundir.RESUME
    assert rundir.check(_tiny(), str(run), resume=False, overwrite=True) == rundir.OVERWRITE
    with pytest.raises(rundir.RunDirError, match="already holds a run.*--overwrite"):
        rundir.check(_tiny(), str(run), resume=False, overwrite=False)


def test_resume_needs_a_compatible_config_and_auto_takes_the_recorded_precision(tmp_path):
    run = tmp_path / "run"
    _make_run(run, _tiny(precision="mixed_bfloat16"))
    with pytest.raises(rundir.RunDirError, match=r"model.ngf: 8 -> 16"):
        rundir.check(_tiny(ngf=16), str(run), resume=True, overwrite=False)
    # max_steps and the epoch counts may change; auto precision matches whatever was recorded.
    assert rundir.check(_tiny(max_steps=9, n_epochs=3), str(run), True, False) == rundir.RESUME
    resolved, note = rundir.resolve_precision(_tiny(), str(run), resume=True)
    assert resolved.train.precision == "mixed_bfloat16" and "recorded" in note
    with pytest.raises(rundir.RunDirError, match="train.precision"):
        rundir.check(_tiny(precision="float32"), str(run), resume=True, overwrite=False)


def test_a_foreign_config_json_or_checkpoints_folder_is_never_touched(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "config.json").write_text('{"name": "my-app", "version": 3}')
    (project / "main.py").write_text("print('hello')\n")
    for resume, overwrite in ((False, True), (True, False)):
        with pytest.raises(rundir.RunDirError, match="not a cyclegan_tf run config"):
            rundir.check(_tiny(), str(project), resume=resume, overwrite=overwrite)
    other = tmp_path / "other"
    (other / "checkpoints").mkdir(parents=True)
    with pytest.raises(rundir.RunDirError, match="no config.json, so it is not a cyclegan_tf run"):
        rundir.check(_tiny(), str(other), resume=False, overwrite=True)
    assert (project / "config.json").read_text() == '{"name": "my-app", "version": 3}'
    assert (project / "main.py").exists() and (other / "checkpoints").is_dir()


def test_overwrite_removes_only_the_runs_artefacts(tmp_path):
    run = tmp_path / "run"
    _make_run(run)
    for name in ("logs", "images"):
        (run / name).mkdir()
    (run / "metrics.jsonl").write_text("{}\n")
    (run / "notes.txt").write_text("mine")
    (run / "export").mkdir()
    rundir.create(_tiny(precision="float32"), str(run), rundir.OVERWRITE, None)
    assert sorted(os.listdir(run)) == ["config.json", "export", "notes.txt"]


def test_data_record_refuses_a_changed_dataset_unless_allowed(tmp_path):
    run = tmp_path / "run"
    before = rundir.DataRecord.of("d", ["1.png", "2.png"], ["x.png"], 2)
    rundir.create(_tiny(precision="float32"), str(run), rundir.NEW, before)
    assert json.loads((run / "data.json").read_text())["num_a"] == 2
    rundir.check_data(str(run), before, allow_change=False)  # same data: fine
    added = rundir.DataRecord.of("d", ["1.png", "2.png", "3.png"], ["x.png"], 3)
    with pytest.raises(rundir.RunDirError, match=r"num_a 2 -> 3.*--allow_data_change"):
        rundir.check_data(str(run), added, allow_change=False)
    renamed = rundir.DataRecord.of("d", ["1.png", "4.png"], ["x.png"], 2)
    with pytest.raises(rundir.RunDirError, match="file names changed"):
        rundir.check_data(str(run), renamed, allow_change=False)
    rundir.check_data(str(run), added, allow_change=True)


def test_one_process_per_run_and_a_killed_holder_does_not_block(tmp_path):
    run = str(tmp_path / "run")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                from cyclegan_tf import rundir
                with rundir.lock({run!r}):
                    print("locked", flush=True)
                    time.sleep(60)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(rundir.RunDirError, match=f"pid {holder.pid}.*is training into"):
            with rundir.lock(run):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    with rundir.lock(run):  # the kernel released the dead holder's lock
        pass


def test_cadence_of_log_save_grid_and_kept_epochs():
    cadence = training.Cadence(steps_per_epoch=4, total=10, log_steps=3, save_steps=5, save_epoch=2)
    events = {step: cadence.events(step) for step in range(1, 11)}
    assert [s for s, e in events.items() if "log" in e] == [3, 6, 9, 10]
    assert [s for s, e in events.items() if "epoch_end" in e] == [4, 8, 10]
    assert [s for s, e in events.items() if "keep_epoch" in e] == [8]
    assert [s for s, e in events.items() if "save" in e] == [5, 8, 10]
    capped = training.Cadence.of(_tiny(max_steps=6), steps_per_epoch=8)
    assert capped.total == 6 and training.Cadence.of(_tiny(), steps_per_epoch=8).total == 16


def test_cadence_of_evaluations_at_complete_epochs_only():
    assert not any("eval" in training.Cadence(4, 10, 3, 5, 2).events(s) for s in range(1, 11))
    every_2 = training.Cadence(
        steps_per_epoch=4, total=18, log_steps=3, save_steps=5, save_epoch=3, eval_epochs=2
    )
    assert [s for s in range(1, 19) if "eval" in every_2.events(s)] == [8, 16]  # not 18: partial
    every_1 = training.Cadence.of(_tiny(max_steps=20), steps_per_epoch=8, eval_epochs=1)
    assert [s for s in range(1, 21) if "eval" in every_1.events(s)] == [8, 16]
