"""cyclegan_tf.cluster: roles from TF_CONFIG, agreements and the stop vote outside a cluster (the
two-process run itself is tests/test_train.py's slow multi-worker test)."""

import json

import pytest
import tensorflow as tf

from cyclegan_tf import checkpoints, cluster, config, trainer


def _tf_config(monkeypatch, spec, task_type, index):
    monkeypatch.setenv(
        cluster.TF_CONFIG,
        json.dumps({"cluster": spec, "task": {"type": task_type, "index": index}}),
    )


def test_roles_follow_tf_distribute(monkeypatch):
    workers = {"worker": ["a:1", "b:1", "c:1"]}
    _tf_config(monkeypatch, workers, "worker", 0)
    first = cluster.Task.from_environment("multi_worker")
    assert first.is_chief and first.multi_worker and first.num_workers == 3
    assert first.describe() == "the chief (worker 0 of 3)"
    _tf_config(monkeypatch, workers, "worker", 2)
    assert not cluster.Task.from_environment("multi_worker").is_chief
    # With a chief job, worker 0 is not the chief.
    with_chief = {"chief": ["a:1"], "worker": ["b:1"]}
    _tf_config(monkeypatch, with_chief, "worker", 0)
    assert not cluster.Task.from_environment("multi_worker").is_chief
    _tf_config(monkeypatch, with_chief, "chief", 0)
    assert cluster.Task.from_environment("multi_worker").is_chief
    # Other strategies ignore TF_CONFIG: one worker, the chief.
    assert cluster.Task.from_environment("mirrored") == cluster.Task()
    assert cluster.Task().is_chief and not cluster.Task().multi_worker


@pytest.mark.parametrize(
    "value", [None, "not json", '{"cluster": {"worker": ["a:1"]}, "task": {"type": "ps"}}']
)
def test_a_missing_or_malformed_tf_config_is_one_line(monkeypatch, value):
    if value is None:
        monkeypatch.delenv(cluster.TF_CONFIG, raising=False)
    else:
        monkeypatch.setenv(cluster.TF_CONFIG, value)
    with pytest.raises(cluster.ClusterError) as e:
        cluster.Task.from_environment("multi_worker")
    assert "\n" not in str(e.value) and "TF_CONFIG" in str(e.value)
    with pytest.raises(cluster.ClusterError):
        trainer.make_strategy("multi_worker")


def test_outside_a_cluster_an_agreement_is_the_own_row_and_errors_pass_through():
    task, strategy = cluster.Task(), tf.distribute.get_strategy()
    with cluster.Agreement(task, strategy, "open the run", ("mode", "step")) as agreed:
        agreed.share(mode=2, step=7)
    assert agreed.chief == {"failed": 0, "chief": 1, "stop": 0, "mode": 2, "step": 7}
    with pytest.raises(KeyError):
        with cluster.Agreement(task, strategy, "restore", ("step",)):
            raise KeyError("own error")
    with pytest.raises(ValueError, match="no keys"):
        cluster.Agreement(task, strategy, "x", ("a",)).share(b=1)


def test_stop_vote_outside_a_cluster_is_the_local_signal():
    vote = cluster.StopVote(cluster.Task(), trainer.STOP_KEY)
    assert vote.inputs(True) == ()
    outputs = {"g/total": 1.0}
    assert vote.after_step(outputs, False) is False and vote.after_step(outputs, True) is True
    assert outputs == {"g/total": 1.0}


def test_in_a_cluster_the_vote_reads_the_previous_steps_agreed_flag():
    vote = cluster.StopVote(cluster.Task("worker", 1, 2), trainer.STOP_KEY)
    assert float(vote.inputs(True)[0]) == 1.0
    steps = [{trainer.STOP_KEY: tf.constant(x), "d/a": 0.5} for x in (0.0, 2.0, 0.0)]
    assert [vote.after_step(out, False) for out in steps] == [False, False, True]
    assert all(set(out) == {"d/a"} for out in steps)  # the flag is not a metric


def test_the_step_sums_the_stop_requests_of_all_replicas():
    model = trainer.CycleGAN(config.preset("tiny"), steps_per_epoch=4)
    a = tf.random.stateless_uniform([1, 32, 32, 3], seed=[1, 0], minval=-1, maxval=1)
    out = model.train_step(a, a, tf.constant(1.0))
    assert float(out[trainer.STOP_KEY]) == 1.0 and trainer.STOP_KEY not in model.train_step(a, a)


def test_a_worker_that_is_not_the_chief_saves_to_a_temporary_directory_it_deletes(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # TMPDIR is read again
    step = tf.Variable(3, dtype=tf.int64)
    run = tmp_path / "run"
    other = checkpoints.Checkpointer({"step": step}, str(run), chief=False)
    assert other.save(3) == str(run / "checkpoints" / "ckpt-3")
    assert other.save(3) == str(run / "checkpoints" / "ckpt-3")  # same step: nothing written
    assert other.latest == str(run / "checkpoints" / "ckpt-3")
    assert not run.exists() and list((tmp_path / "tmp").iterdir()) == []
    # It restores what the chief saved, from the shared run directory.
    chief = checkpoints.Checkpointer({"step": step}, str(run))
    path = chief.save(3)
    step.assign(0)
    assert other.restore(path) == path and int(step.numpy()) == 3
    with pytest.raises(checkpoints.CheckpointError, match="filesystem they all share"):
        other.restore(str(run / "checkpoints" / "ckpt-9"))
