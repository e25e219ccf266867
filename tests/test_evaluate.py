"""Tests for cyclegan_tf.evaluation: FID/KID of a run directory and of an export on the
built-in test split (through the stand-in Inception graph), the JSON output, one-line errors, the
CLI, and the evaluation during training (eval/ lines in metrics.jsonl, best/)."""

import json
import os
import urllib.error
import urllib.request

import fixtures
import PIL.Image
import pytest
import tensorflow as tf

import cyclegan_tf
from cyclegan_tf import (
    checkpoints,
    config,
    data,
    errors,
    evaluation,
    inference,
    metrics,
    rundir,
    sources,
    synthetic,
)
from cyclegan_tf import images as images_lib

TINY = config.preset("tiny")


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    return fixtures.write_standin_inception_graph(tmp_path_factory.mktemp("standin"))


@pytest.fixture(scope="module")
def run_dir(shared_run):
    return shared_run["run_dir"]  # the session's tiny run, read-only


@pytest.fixture(scope="module")
def export_dir(shared_run):
    return shared_run["export_dir"]  # its SavedModels of both directions (version 1)


def _one_line(error):
    return "\n" not in str(error.value)


def _no_network(*args, **kwargs):
    raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


def _expected(model_path, graph, direction, kid_subsets):
    """FID/KID computed here from the test images, independently of evaluate's plumbing."""
    real_a, real_b = (images_lib.to_uint8(x) for x in _test_pairs())
    source, reference = (real_a, real_b) if direction == "a2b" else (real_b, real_a)
    translated = cyclegan_tf.load(model_path, direction, precision="float32")(source)
    with metrics.InceptionFeatures(graph) as features:
        feats_t, feats_r = features(translated), features(reference)
    kid, kid_std = metrics.kid_from_features(feats_t, feats_r, num_subsets=kid_subsets)
    return translated, metrics.fid_from_features(feats_t, feats_r), kid, kid_std


def _test_pairs():
    # The tiny preset's built-in images are 32 px and its test preprocessing resizes to 32: the
    # PNG files are exactly what the data pipeline yields.
    return synthetic.load_test_pairs(data.builtin_path(TINY.data, synthetic.DEFAULT_SEED))


def test_a_run_directory_both_directions(run_dir, graph, capsys):
    result = cyclegan_tf.evaluate(
        run_dir,
        "builtin",
        direction="both",
        inception_graph=graph,
        kid_subsets=3,
        precision="float32",
    )
    num_test = TINY.data.builtin_num_test
    unpaired = data.load(TINY.data, seed=0)
    assert len(unpaired.test_names("a")) == len(unpaired.test_names("b")) == num_test
    for direction in ("a2b", "b2a"):
        scores = result[direction]
        translated, fid, kid, kid_std = _expected(run_dir, graph, direction, kid_subsets=3)
        assert scores["fid"] == pytest.approx(fid, rel=1e-9)
        assert scores["kid_x1000"] == pytest.approx(1000 * kid, rel=1e-9)
        assert scores["kid_std_x1000"] == pytest.approx(1000 * kid_std, rel=1e-9, abs=1e-9)
        assert scores["num_translated"] == scores["num_reference"] == num_test
        source, target = ("A", "B") if direction == "a2b" else ("B", "A")
        protocol = scores["protocol"]
        assert protocol["reference_set"] == f"builtin test domain {target}, all {num_test} images"
        assert protocol["translated_set"] == (
            f"builtin test domain {source}, all {num_test} images, translated {direction}"
        )
        assert protocol["image_size"] == "32x32"
        assert protocol["inception_graph"] == graph
        assert protocol["inception_graph_bytes"] == os.path.getsize(graph)
        assert protocol["cyclegan_tf_version"] == cyclegan_tf.__version__
        assert protocol["checkpoint"].endswith("ckpt-3") and protocol["precision"] == "float32"
        if direction == "a2b":
            real_a, truth_b = _test_pairs()
            got = synthetic.score(images_lib.to_float(translated), truth_b, real_a)
            assert result["builtin_score"]["g_ab"] == pytest.approx(got)
            assert result["builtin_score"]["identity"] == pytest.approx(
                synthetic.score(real_a, truth_b, real_a)
            )
    assert result["protocol"]["model_kind"] == "run"
    assert "uint8" in result["protocol"]["inception_input"]
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("a2b: FID ") and "KID x1000" in out[0] and "±" in out[0]
    assert f"({num_test} translated test A vs all {num_test} test B images of builtin)" in out[0]
    assert out[1].startswith("b2a: FID ")
    assert any("identity" in line for line in out[2:])  # the built-in score table
    json.dumps(result)  # JSON-serialisable as it is


def test_an_export_gives_the_run_directorys_numbers(run_dir, export_dir, graph):
    kwargs = dict(inception_graph=graph, kid_subsets=3, verbose=False)
    from_run = cyclegan_tf.evaluate(
        run_dir, "builtin", direction="both", precision="float32", **kwargs
    )
    from_export = cyclegan_tf.evaluate(export_dir, "builtin", direction="both", **kwargs)
    assert from_export["protocol"]["model_kind"] == "saved_model"
    for direction in ("a2b", "b2a"):
        got, want = from_export[direction], from_run[direction]
        assert got["protocol"]["model_path"] == os.path.join(
            export_dir, sources.model_name(direction), "1"
        )
        assert got["protocol"]["step"] == 0  # make_run's model was never trained
        for key in ("fid", "kid_x1000", "num_translated", "num_reference"):
            assert got[key] == pytest.approx(want[key], rel=1e-9), (direction, key)
    # One version directory is one direction.
    with pytest.raises(errors.UserError, match="translates a2b, not b2a") as error:
        cyclegan_tf.evaluate(
            os.path.join(export_dir, "cyclegan_a2b", "1"), "builtin", direction="both", **kwargs
        )
    assert _one_line(error)


def test_json_output_is_written_atomically_and_never_over_a_foreign_file(tmp_path):
    result = {"protocol": {"dataset": "builtin"}, "a2b": {"fid": 1.0}}
    path = str(tmp_path / "results" / "fid.json")
    assert evaluation.write_output(result, path) == path
    assert json.load(open(path)) == result
    evaluation.write_output({**result, "b2a": {"fid": 2.0}}, path)  # a previous result: replaced
    assert json.load(open(path))["b2a"] == {"fid": 2.0}
    assert os.listdir(tmp_path / "results") == ["fid.json"]  # no temporary left
    for name, content in [("notes.json", '{"mine": 1}'), ("notes.txt", "keep me"), ("x", "[1]")]:
        foreign = tmp_path / name
        foreign.write_text(content)
        with pytest.raises(evaluation.EvaluateError, match="is not an evaluate result") as error:
            evaluation.check_output(str(foreign))
        assert _one_line(error)
        with pytest.raises(evaluation.EvaluateError):
            evaluation.write_output(result, str(foreign))
        assert foreign.read_text() == content
    with pytest.raises(evaluation.EvaluateError, match="is a directory"):
        evaluation.check_output(str(tmp_path))


def _folder_dataset(root, splits, size=16):
    for split in splits:
        os.makedirs(root / split)
        for i in range(2):
            image = fixtures.random_image(size, size, seed=hash((split, i)) % 1000)
            PIL.Image.fromarray(image).save(root / split / f"{i}.png")
    return str(root)


def test_a_run_imported_from_pytorch(graph, tmp_path):
    run = str(tmp_path / "imported")
    weights = os.path.join(os.path.dirname(__file__), "data", "torch", "resnet6_legacy.pth")
    cyclegan_tf.import_torch(weights, run, direction="a2b")
    dataset = _folder_dataset(tmp_path / "folder", ("trainA", "trainB", "testA", "testB"))
    kwargs = dict(inception_graph=graph, kid_subsets=2, verbose=False)
    result = cyclegan_tf.evaluate(run, dataset, direction="a2b", **kwargs)
    protocol = result["a2b"]["protocol"]
    # The imported run's config is the paper preset: its test preprocessing resizes to 256.
    assert protocol["image_size"] == "256x256" and protocol["step"] is None
    assert result["a2b"]["num_translated"] == result["a2b"]["num_reference"] == 2
    with pytest.raises(rundir.RunDirError, match="imported with a2b only") as error:
        cyclegan_tf.evaluate(run, dataset, direction="both", **kwargs)
    assert _one_line(error)


def test_one_line_errors(run_dir, graph, tmp_path, monkeypatch):
    no_test = _folder_dataset(tmp_path / "no_test", ("trainA", "trainB"))
    with pytest.raises(evaluation.EvaluateError, match="has no test split") as error:
        cyclegan_tf.evaluate(run_dir, no_test, inception_graph=graph, verbose=False)
    assert _one_line(error)
    with pytest.raises(errors.ConfigError, match="a2b, b2a or both"):
        cyclegan_tf.evaluate(run_dir, "builtin", direction="x2y", inception_graph=graph)
    with pytest.raises(errors.ConfigError, match="split must be test"):
        cyclegan_tf.evaluate(run_dir, "builtin", split="train", inception_graph=graph)

    # No graph in the cache and no network: metrics' message, before the model is even loaded.
    monkeypatch.setenv("CYCLEGAN_TF_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    with pytest.raises(metrics.MetricsError) as error:
        cyclegan_tf.evaluate(str(tmp_path / "not_a_run"), "builtin")
    assert _one_line(error)
    message = str(error.value)
    assert metrics.DEFAULT_GRAPH_URL in message and metrics.GRAPH_FLAG in message
    with pytest.raises(metrics.MetricsError, match="does not exist"):
        cyclegan_tf.evaluate(run_dir, "builtin", inception_graph=str(tmp_path / "nowhere.pb"))


def test_training_evaluator_skips_without_a_test_split_and_fails_without_a_graph(
    tmp_path, monkeypatch, capsys
):
    dataset = _folder_dataset(tmp_path / "no_test", ("trainA", "trainB"))
    no_test = data.load(config.DataConfig(dataset=dataset, crop_size=16, load_size=16), 0)
    assert evaluation.training_evaluator(no_test, str(tmp_path), 0) is None
    assert evaluation.training_evaluator(no_test, str(tmp_path), 1) is None
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "--eval_every_epochs skipped" in err[0] and "no test split" in err[0]

    monkeypatch.setenv("CYCLEGAN_TF_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    builtin = data.load(TINY.data, 0)
    with pytest.raises(metrics.MetricsError) as error:  # no graph: an error, not a skip
        evaluation.training_evaluator(builtin, str(tmp_path), 1)
    assert _one_line(error) and metrics.DEFAULT_GRAPH_URL in str(error.value)
    assert "--inception_graph=" in str(error.value) and "--eval_every_epochs" in str(error.value)
    with pytest.raises(metrics.MetricsError):  # an explicit path must exist
        evaluation.training_evaluator(builtin, str(tmp_path), 1, str(tmp_path / "typo.pb"))
    with pytest.raises(errors.ConfigError, match="eval_every_epochs"):
        evaluation.training_evaluator(builtin, str(tmp_path), -1)


def _cli(*args):
    return fixtures.run_cli(*args)


@pytest.mark.slow
def test_cli_evaluate_end_to_end(run_dir, graph, tmp_path):
    output = tmp_path / "fid.json"
    args = [
        "evaluate",
        f"--model={run_dir}",
        "--direction=both",
        "--dataset=builtin",
        f"--inception_graph={graph}",
        f"--output={output}",
        "--precision=float32",
    ]
    proc = _cli(*args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    a2b = next(line for line in lines if line.startswith("a2b: FID "))
    assert "(4 translated test A vs all 4 test B images of builtin)" in a2b
    assert any(line.startswith("b2a: FID ") for line in lines)
    assert f"Wrote {output}" in lines
    result = json.loads(output.read_text())
    assert set(result) == {"protocol", "a2b", "b2a", "builtin_score"}
    assert f"{result['a2b']['fid']:.2f}" in a2b
    assert result["a2b"]["num_translated"] == 4
    # A foreign file is never replaced; a missing split is one line.
    foreign = tmp_path / "notes.json"
    foreign.write_text("{}")
    proc = _cli(*args[:-2], f"--output={foreign}")
    assert proc.returncode == 2 and "is not an evaluate result" in proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and foreign.read_text() == "{}"
    proc = _cli("evaluate", f"--model={run_dir}", "--dataset=builtin", "--split=train")
    assert proc.returncode == 2 and "split must be test" in proc.stderr
    proc = _cli("evaluate", f"--model={run_dir}")
    assert proc.returncode == 2 and "evaluate needs --dataset" in proc.stderr


@pytest.mark.slow
def test_training_with_eval_every_epochs_logs_eval_lines_and_keeps_the_best(graph, tmp_path):
    run = tmp_path / "run"
    proc = _cli(
        "train",
        f"--output_dir={run}",
        "--preset=tiny",
        "--max_steps=16",  # 2 epochs of 8 steps
        "--eval_every_epochs=1",
        f"--inception_graph={graph}",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "eval at step 8:" in proc.stdout and "eval at step 16:" in proc.stdout
    lines = [json.loads(line) for line in open(run / "metrics.jsonl")]
    evals = [line for line in lines if "eval/fid_a2b" in line]
    keys = {"step", "eval/fid_a2b", "eval/kid_a2b", "eval/fid_b2a", "eval/kid_b2a"}
    assert [line["step"] for line in evals] == [8, 16] and all(set(x) == keys for x in evals)
    means = {x["step"]: (x["eval/fid_a2b"] + x["eval/fid_b2a"]) / 2 for x in evals}
    best = json.load(open(run / "best" / "best.json"))
    assert best["step"] == min(means, key=means.get)
    assert best["fid_mean"] == pytest.approx(means[best["step"]])
    assert sorted(os.listdir(run / "best")) == sorted(
        ["best.json", f"ckpt-{best['step']}.index", f"ckpt-{best['step']}.data-00000-of-00001"]
    )
    # TensorBoard has the eval/ scalars.
    tags = set()
    for name in os.listdir(run / "logs"):
        for event in tf.compat.v1.train.summary_iterator(str(run / "logs" / name)):
            tags.update(v.tag for v in event.summary.value)
    assert {"eval/fid_a2b", "eval/kid_a2b", "eval/fid_b2a", "eval/kid_b2a"} <= tags
    # --checkpoint=best loads the kept generators.
    path = checkpoints.resolve_checkpoint(str(run), "best")
    assert path == str(run / "best" / f"ckpt-{best['step']}")
    assert inference.load_run(str(run), "best", precision="float32").checkpoint == path
