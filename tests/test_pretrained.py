"""Tests for cyclegan_tf.pretrained: reading PyTorch files without torch, layouts, outputs equal to
PyTorch's, imported run directories, and refusing malicious or foreign files.

The fixtures in tests/data/torch/ were written by tests/make_torch_fixtures.py (PyTorch 2.13);
these tests do not need PyTorch.
"""

import hashlib
import json
import os
import pickle
import re
import zipfile

import fixtures
import numpy as np
import PIL.Image
import pytest
from test_torch_pickle import _legacy, _rewrite_zip, _System, _zip

import cyclegan_tf
from cyclegan_tf import (
    checkpoints,
    config,
    errors,
    exporting,
    generators,
    inference,
    pretrained,
    rundir,
    trainer,
    training,
)

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "torch")

# name -> (layout, tensors in the file, of which norm running statistics, format)
FIXTURES = {
    "resnet6_legacy": (pretrained.Layout("resnet_6blocks", 4), 87, 51, "legacy"),
    "resnet9_zip": (pretrained.Layout("resnet_9blocks", 2), 48, 0, "zip"),
    "resnet6_dropout": (pretrained.Layout("resnet_6blocks", 2, dropout=True), 36, 0, "zip"),
    "unet128_legacy": (pretrained.Layout("unet_128", 1), 28, 0, "legacy"),
}


def _path(name):
    return os.path.join(DATA, f"{name}.pth")


def _float(images):
    return images.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


@pytest.fixture(scope="module")
def models():
    """name -> the Keras generator imported from the fixture (built once per module)."""
    cache = {}

    def get(name):
        if name not in cache:
            state_dict = pretrained.load_state_dict(_path(name))
            cache[name] = pretrained.to_keras(state_dict, pretrained.infer_layout(state_dict))
        return cache[name]

    return get


# -- reading files ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", FIXTURES)
def test_loads_both_formats(name):
    _, count, stats, kind = FIXTURES[name]
    with open(_path(name), "rb") as f:
        assert f.read(4).startswith(b"PK") == (kind == "zip")
    state_dict = pretrained.load_state_dict(_path(name))
    assert len(state_dict) == count
    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked"):
            assert value.dtype == np.int64 and value.shape == () and value == 200
        else:
            assert value.dtype == np.float32 and value.flags.c_contiguous, key
    assert sum(k.endswith(pretrained._RUNNING_STATS) for k in state_dict) == stats
    if name.startswith("resnet"):
        ngf = FIXTURES[name][0].ngf
        assert state_dict["model.1.weight"].shape == (ngf, 3, 7, 7)  # Conv2d [out, in, kh, kw]
        up = 10 + int(name[6])  # the first ConvTranspose2d: [in, out, kh, kw]
        assert state_dict[f"model.{up}.weight"].shape == (4 * ngf, 2 * ngf, 3, 3)


@pytest.mark.parametrize("name", FIXTURES)
def test_infers_layout_and_drops_running_stats(name):
    layout, count, stats, _ = FIXTURES[name]
    inferred = pretrained.infer_layout(pretrained.load_state_dict(_path(name)))
    assert inferred == layout
    assert len(inferred.dropped_keys) == stats
    assert all(k.endswith(pretrained._RUNNING_STATS) for k in inferred.dropped_keys)


def test_directions_are_inference_s():
    assert pretrained.DIRECTIONS == inference.DIRECTIONS
    assert pretrained.GENERATOR_NAMES == inference.GENERATOR_NAMES


# -- the Keras generators compute what PyTorch computes --------------------------------------


@pytest.mark.parametrize("name", FIXTURES)
def test_keras_generator_reproduces_torch_outputs(name, models):
    model = models(name)
    reference = np.load(os.path.join(DATA, f"{name}.npz"))
    multiple = generators.size_multiple(FIXTURES[name][0].generator)
    x_even, x_odd = _float(reference["x_even"]), _float(reference["x_odd"])
    assert x_even.shape[1] % multiple == x_even.shape[2] % multiple == 0
    assert x_odd.shape[1] % multiple and x_odd.shape[2] % multiple

    y_even = np.asarray(model(x_even, training=False))
    y_odd = np.asarray(inference.pad_run_crop(model, x_odd, multiple))
    assert y_even.shape == reference["y_even"].shape
    assert y_odd.shape == reference["y_odd"].shape
    # Measured: at most 3e-6 (float32 rounding).
    np.testing.assert_allclose(y_even, reference["y_even"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(y_odd, reference["y_odd"], rtol=0, atol=1e-4)
    assert np.abs(reference["y_even"]).max() > 0.5  # a real signal, not a near-zero output


# Community layouts (tests/make_torch_fixtures.py, write_community): file -> (reference, layout).
_AITORZIP = {"family": "aitorzip"}
_ALADDIN = {"family": "aladdinpersson", "down_padding": "reflect"}
COMMUNITY = {
    "aitorzip_block_affine_legacy": (
        "aitorzip_block_affine",
        pretrained.Layout(
            "resnet_9blocks", 2, False, "instance_affine", block_name="block", **_AITORZIP
        ),
    ),
    "aitorzip_block_affine_zip": (
        "aitorzip_block_affine",
        pretrained.Layout(
            "resnet_9blocks", 2, False, "instance_affine", block_name="block", **_AITORZIP
        ),
    ),
    "aitorzip_conv_block_affine": (
        "aitorzip_conv_block_affine",
        pretrained.Layout("resnet_6blocks", 3, False, "instance_affine", **_AITORZIP),
    ),
    "aitorzip_block": (
        "aitorzip_block",
        pretrained.Layout("resnet_6blocks", 2, block_name="block", **_AITORZIP),
    ),
    "aladdinpersson_legacy": ("aladdinpersson", pretrained.Layout("resnet_9blocks", 2, **_ALADDIN)),
    "aladdinpersson_zip": ("aladdinpersson", pretrained.Layout("resnet_9blocks", 2, **_ALADDIN)),
    "aladdinpersson_affine": (
        "aladdinpersson_affine",
        pretrained.Layout("resnet_6blocks", 2, False, "instance_affine", **_ALADDIN),
    ),
}


@pytest.mark.parametrize("name", COMMUNITY)
def test_community_layouts_reproduce_torch_outputs(name):
    """Each family's file (both pickle formats), recognised from names and shapes, imported and
    run at a size that is a multiple of 4 and one that is not: PyTorch's outputs within float32
    rounding (measured: a few 1e-6), so within one uint8 level."""
    reference_name, layout = COMMUNITY[name]
    state_dict = pretrained.load_state_dict(_path(name))
    inferred = pretrained.infer_layout(state_dict, name)
    assert inferred == layout
    assert inferred.dropped_keys == ()
    model = pretrained.to_keras(state_dict, inferred)
    reference = np.load(os.path.join(DATA, f"{reference_name}.npz"))
    x_even, x_odd = _float(reference["x_even"]), _float(reference["x_odd"])
    assert x_odd.shape[1] % 4 and x_odd.shape[2] % 4
    y_even = np.asarray(model(x_even, training=False))
    y_odd = np.asarray(inference.pad_run_crop(model, x_odd, 4))
    for got, want in ((y_even, reference["y_even"]), (y_odd, reference["y_odd"])):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
        levels = np.abs(np.round((got + 1) * 127.5) - np.round((want + 1) * 127.5))
        assert levels.max() <= 1
    assert np.abs(reference["y_even"]).max() > 0.5


def test_official_size_parameter_count():
    # resnet_9blocks at ngf 64 as the official files hold it: 48 tensors, 11,378,179 values.
    model = generators.build_generator("resnet_9blocks", ngf=64)
    layout = pretrained.Layout("resnet_9blocks", 64)
    entries = pretrained._entries(layout)
    params, _ = pretrained._expected_keys(layout)
    assert len(params) == 48
    assert params[0] == "model.1.weight" and params[-1] == "model.26.bias"
    assert "model.19.weight" in params and "model.18.conv_block.5.weight" in params
    state_dict = {}
    for entry in entries:
        if entry.kind != "norm":
            layer = model.get_layer(entry.keras)
            kh, kw, a, b = layer.kernel.shape
            state_dict[f"{entry.torch}.weight"] = np.zeros((b, a, kh, kw), np.float32)
            state_dict[f"{entry.torch}.bias"] = np.ones(layer.bias.shape, np.float32)
    assert pretrained.infer_layout(state_dict) == layout
    assert sum(v.size for v in state_dict.values()) == 11_378_179
    pretrained.assign(model, state_dict, layout)
    assert float(np.asarray(model.get_layer("out_conv").bias).min()) == 1.0


def test_misshapen_tensor_is_named():
    state_dict = pretrained.load_state_dict(_path("resnet9_zip"))
    layout = pretrained.infer_layout(state_dict)
    state_dict["model.4.weight"] = np.zeros((4, 3, 3, 3), np.float32)
    with pytest.raises(pretrained.PretrainedError, match=r"model\.4\.weight has shape \[4, 3"):
        pretrained.to_keras(state_dict, layout)


def test_a_resize_upsampling_model_refuses_official_weights():
    """Files hold transposed convolutions: assigning one to a resize-convolution generator fails
    in one line before any weight is set. `train --init_from=<file>` adopts the file's
    upsampling (a variant field, `source_architecture`) unless the config asks for resize-
    convolution (never a preset's: the user's own choice), which it refuses in one line; the
    generators' own check names the field too."""
    state_dict = pretrained.load_state_dict(_path("unet128_legacy"))
    model = generators.build_generator("unet_128", ngf=1, upsampling="resize_nearest")
    before = [w.numpy() for w in model.weights]
    with pytest.raises(pretrained.PretrainedError, match="upsamples by resize-convolution") as e:
        pretrained.assign(model, state_dict, pretrained.infer_layout(state_dict))
    assert "\n" not in str(e.value) and "upsampling='torch'" in str(e.value)
    assert all(np.array_equal(w.numpy(), b) for w, b in zip(model.weights, before))
    weights = _path("resnet6_legacy")
    cfg = config.preset("tiny", ngf=4, upsampling="resize_bilinear", precision="float32")
    with pytest.raises(pretrained.PretrainedError) as e:
        pretrained.source_architecture(cfg, weights)
    assert "\n" not in str(e.value) and "upsampling='torch', which cannot start" in str(e.value)
    assert "upsampling='resize_bilinear'" in str(e.value)
    default = config.preset("tiny", ngf=4, precision="float32")
    assert pretrained.source_architecture(default, weights).model.upsampling == "torch"
    g_ab = trainer.CycleGAN(cfg, steps_per_epoch=8).g_ab
    with pytest.raises(pretrained.PretrainedError, match=r"upsampling='torch'.*'resize_bilinear'"):
        pretrained.init_generators({"a2b": g_ab}, weights, cfg.model)


# -- import_torch ------------------------------------------------------------------------------


def _negate_floats(data):
    return (-np.frombuffer(data, "<f4")).astype("<f4").tobytes()


def test_import_writes_a_run_that_load_run_translates_identically(tmp_path):
    # The b2a file: the same architecture with other weights (every float negated), so a swap of
    # g_ab and g_ba cannot go unnoticed.
    a2b = _path("resnet6_dropout")
    with zipfile.ZipFile(a2b) as archive:
        keys = [n.split("/data/")[1] for n in archive.namelist() if "/data/" in n]
    b2a = _rewrite_zip(a2b, tmp_path / "other.pth", {f"/data/{k}": _negate_floats for k in keys})
    run_dir = str(tmp_path / "runs" / "imported")

    assert pretrained.import_torch(a2b, "a2b", run_dir, weights_b2a=b2a) == run_dir
    assert sorted(os.listdir(tmp_path / "runs")) == ["imported"]  # no temporary left behind
    assert sorted(os.listdir(run_dir)) == ["checkpoints", "config.json", "imported.json"]
    assert checkpoints.resolve_checkpoint(run_dir).endswith("ckpt-0")
    config = rundir.require_config(run_dir).model
    assert (config.generator, config.ngf, config.dropout, config.norm) == (
        "resnet_6blocks",
        2,
        True,
        "instance",
    )
    with open(os.path.join(run_dir, rundir.IMPORTED_FILE)) as f:
        record = json.load(f)
    assert record["directions"] == ["a2b", "b2a"]
    layout = {"generator": "resnet_6blocks", "ngf": 2, "dropout": True, "norm": "instance"}
    assert {k: record["layout"][k] for k in layout} == layout
    assert record["layout"]["family"] == "junyanz"
    assert "6 blocks model.10-15.conv_block" in record["layout"]["found"]
    for direction, path in (("a2b", a2b), ("b2a", b2a)):
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        assert record["sources"][direction]["sha256"] == digest
        assert record["sources"][direction]["file"] == os.path.abspath(path)
    assert record["date"]
    assert rundir.imported_directions(run_dir) == ("a2b", "b2a")
    rundir.check_directions(run_dir, ("a2b", "b2a"))

    run = inference.load_run(run_dir, precision="float32")
    reference = np.load(os.path.join(DATA, "resnet6_dropout.npz"))
    x_odd = _float(reference["x_odd"])
    translated = {d: np.asarray(run.endpoints(d).translate_float(x_odd)) for d in ("a2b", "b2a")}
    np.testing.assert_allclose(translated["a2b"], reference["y_odd"], rtol=0, atol=1e-4)
    direct_b2a = pretrained.to_keras(
        pretrained.load_state_dict(b2a), pretrained.Layout("resnet_6blocks", 2, dropout=True)
    )
    np.testing.assert_array_equal(
        translated["b2a"], np.asarray(inference.pad_run_crop(direct_b2a, x_odd, 4))
    )
    assert np.abs(translated["a2b"] - translated["b2a"]).max() > 0.1


def test_one_direction_import_reports_the_missing_direction(tmp_path):
    run_dir = str(tmp_path / "run")
    os.makedirs(run_dir)  # an existing empty directory is fine
    pretrained.import_torch(_path("resnet9_zip"), "b2a", run_dir)
    assert rundir.imported_directions(run_dir) == ("b2a",)
    rundir.check_directions(run_dir, ("b2a",))
    with pytest.raises(rundir.RunDirError) as error:
        rundir.check_directions(run_dir, ("a2b",))
    message = str(error.value)
    assert "\n" not in message
    assert "imported with b2a only" in message and "resnet9_zip.pth" in message
    assert "no a2b generator" in message

    run = inference.load_run(run_dir, directions=("b2a",), precision="float32")
    reference = np.load(os.path.join(DATA, "resnet9_zip.npz"))
    np.testing.assert_allclose(
        np.asarray(run.endpoints("b2a").translate_float(_float(reference["x_odd"]))),
        reference["y_odd"],
        rtol=0,
        atol=1e-4,
    )
    # A run directory that was not imported has both.
    assert rundir.imported_directions(str(tmp_path)) == ("a2b", "b2a")


def test_existing_output_dir_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"already exists and is not empty") as error:
        pretrained.import_torch(_path("resnet9_zip"), "a2b", str(run_dir))
    assert "\n" not in str(error.value)
    assert os.listdir(run_dir) == ["notes.txt"]
    assert os.listdir(tmp_path) == ["run"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"direction": "x2y"}, "direction must be a2b or b2a"),
        ({"direction": "b2a", "weights_b2a": "b.pth"}, "with direction=b2a pass one file"),
        ({"generator": "resnet_12blocks"}, "generator must be auto or one of"),
    ],
)
def test_bad_arguments_are_refused(tmp_path, kwargs, match):
    args = {"weights": _path("resnet9_zip"), "direction": "a2b", "output_dir": str(tmp_path / "r")}
    with pytest.raises(ValueError, match=match):
        pretrained.import_torch(**{**args, **kwargs})
    assert os.listdir(tmp_path) == []


def test_files_of_two_architectures_are_refused(tmp_path):
    with pytest.raises(pretrained.PretrainedError, match="share one architecture"):
        pretrained.import_torch(
            _path("resnet9_zip"),
            "a2b",
            str(tmp_path / "run"),
            weights_b2a=_path("resnet6_dropout"),
        )
    with pytest.raises(pretrained.PretrainedError, match="holds a resnet_9blocks generator, not"):
        pretrained.import_torch(
            _path("resnet9_zip"), "a2b", str(tmp_path / "run"), None, "unet_256"
        )
    assert os.listdir(tmp_path) == []


# -- foreign layouts ---------------------------------------------------------------------------


def test_unknown_layouts_are_refused_naming_the_key():
    base = pretrained.load_state_dict(_path("resnet9_zip"))

    def refused(state_dict, match):
        with pytest.raises(pretrained.PretrainedError, match=match) as error:
            pretrained.infer_layout(state_dict, "x.pth")
        assert "\n" not in str(error.value)

    refused(
        {**base, "model.27.weight": base["model.26.weight"]}, r"unexpected key 'model\.27\.weight'"
    )
    refused({**base, "model.5.weight": np.ones(4, np.float32)}, r"'model\.5\.weight'.*all affine")
    missing = dict(base)
    del missing["model.22.bias"]
    refused(missing, r"key 'model\.22\.bias' of the junyanz ResnetGenerator .* is missing")
    discriminator = {"model.0.weight": np.zeros((64, 3, 4, 4)), "model.0.bias": np.zeros(64)}
    refused(discriminator, r"no known generator layout: it has keys like 'model\.0\.weight'")
    five_blocks = {k: v for k, v in base.items() if not k.startswith(("model.14.", "model.15."))}
    refused(
        five_blocks,
        r"x\.pth: model\.10\.conv_block\.\* looks like official blocks with affine-free norm, "
        r"but 7 residual blocks were found; 6 or 9 \(resnet_6blocks, resnet_9blocks\) can be",
    )
    refused({}, "matches no known generator layout")


def test_import_refuses_a_file_with_an_unknown_key(tmp_path):
    renamed = _rewrite_zip(
        _path("resnet9_zip"),
        tmp_path / "renamed.pth",
        {"/data.pkl": lambda data: data.replace(b"model.26.bias", b"model.27.bias")},
    )
    run_dir = tmp_path / "run"
    with pytest.raises(pretrained.PretrainedError, match=r"unexpected key 'model\.27\.bias'"):
        pretrained.import_torch(renamed, "a2b", str(run_dir))
    assert not run_dir.exists()
    assert os.listdir(tmp_path) == ["renamed.pth"]


# -- unsafe files (more in tests/test_torch_pickle.py) ---------------------------------------


@pytest.mark.parametrize("frame", [_legacy, _zip], ids=["legacy", "zip"])
def test_malicious_pickle_is_refused_without_running_it(tmp_path, frame):
    payload = pickle.dumps(_System(f"touch {tmp_path / 'control'}"), protocol=2)
    pickle.loads(payload)  # the control: plain pickle does run the payload
    assert (tmp_path / "control").exists()

    marker = tmp_path / "pwned"
    payload = pickle.dumps(_System(f"touch {marker}"), protocol=2)
    weights = tmp_path / "evil.pth"
    weights.write_bytes(frame(payload))
    run_dir = tmp_path / "run"
    with pytest.raises(pretrained.PretrainedError) as error:
        pretrained.import_torch(str(weights), "a2b", str(run_dir))
    message = str(error.value)
    assert message.startswith(f"refusing to load {weights}: it references ")
    assert ".system, which a state_dict never needs; the file may be malicious" in message
    assert "\n" not in message
    assert not marker.exists()
    assert not run_dir.exists()
    assert sorted(os.listdir(tmp_path)) == ["control", "evil.pth"]


# -- imported runs in the rest of the package ------------------------------------------------


def _legacy_generator():
    """The resnet6_legacy fixture as a Keras generator (resnet_6blocks, ngf 4)."""
    state_dict = pretrained.load_state_dict(_path("resnet6_legacy"))
    return pretrained.to_keras(state_dict, pretrained.infer_layout(state_dict))


def test_errors_are_user_errors():
    assert issubclass(pretrained.PretrainedError, errors.UserError)
    with pytest.raises(errors.UserError):
        pretrained.load_state_dict("/nonexistent.pth")


def test_load_run_and_export_of_a_one_direction_import(tmp_path):
    run_dir = str(tmp_path / "run")
    pretrained.import_torch(_path("resnet6_legacy"), "a2b", run_dir)
    with pytest.raises(rundir.RunDirError, match="imported with a2b only") as error:
        inference.load_run(run_dir, directions=("b2a",), precision="float32")
    assert "\n" not in str(error.value) and "--direction=a2b" in str(error.value)
    # Export takes the directions the run has by default; asking for the other one is refused.
    export_dir = str(tmp_path / "exported")
    paths = exporting.export_run(run_dir, export_dir)
    assert paths == {"saved_model": {"a2b": os.path.join(export_dir, "cyclegan_a2b", "1")}}
    with pytest.raises(rundir.RunDirError, match="no b2a generator"):
        exporting.export_run(run_dir, export_dir, directions=("a2b", "b2a"))
    assert sorted(os.listdir(export_dir)) == ["cyclegan_a2b"]


def test_training_into_an_imported_run_is_refused_with_init_from_suggested(tmp_path):
    run_dir = str(tmp_path / "run")
    pretrained.import_torch(_path("resnet6_legacy"), "a2b", run_dir)
    saved = rundir.require_config(run_dir)  # even the imported run's own config
    for cfg in (config.preset("tiny"), saved):
        for resume, overwrite in ((True, False), (False, True)):
            with pytest.raises(rundir.RunDirError, match="imported from PyTorch") as error:
                rundir.check(cfg, run_dir, resume, overwrite)
            message = str(error.value)
            assert "\n" not in message and f"--init_from={run_dir}" in message
    assert sorted(os.listdir(run_dir)) == ["checkpoints", "config.json", "imported.json"]


@pytest.mark.parametrize("kind", ["run", "pth"])
def test_init_from_sets_the_generators_of_a_new_run(tmp_path, kind):
    weights = _path("resnet6_legacy")
    source = weights
    if kind == "run":
        source = str(tmp_path / "imported")
        pretrained.import_torch(weights, "a2b", source)
    cfg = config.preset("tiny", ngf=4, precision="float32")  # resnet_6blocks, like the file
    expected = [w.numpy() for w in _legacy_generator().weights]

    # 1. Right after the init: g_ab is the imported generator; g_ba (not imported) stays fresh.
    model = trainer.CycleGAN(cfg, steps_per_epoch=8)
    fresh_ba = [w.numpy() for w in model.g_ba.weights]
    targets = {"a2b": model.g_ab, "b2a": model.g_ba}
    record = pretrained.init_generators(targets, source, cfg.model)
    assert [w.shape for w in model.g_ab.weights] == [w.shape for w in expected]
    for got, want in zip(model.g_ab.weights, expected):
        np.testing.assert_array_equal(got.numpy(), want)
    for got, want in zip(model.g_ba.weights, fresh_ba):
        np.testing.assert_array_equal(got.numpy(), want)
    assert record["directions"] == ["a2b"] and record["init_from"] == os.path.abspath(source)

    # 2. Through train(): the run records its start in init.json; one Adam step of lr 2e-4 from
    # the imported weights moves each of them by at most the learning rate.
    run_dir = str(tmp_path / "new")
    training.train(cfg.replace(max_steps=1), run_dir, verbose=0, init_from=source)
    with open(os.path.join(run_dir, "init.json")) as f:
        init = json.load(f)
    assert init["init_from"] == os.path.abspath(source) and init["directions"] == ["a2b"]
    if kind == "pth":
        with open(weights, "rb") as f:
            assert init["sha256"] == {"a2b": hashlib.sha256(f.read()).hexdigest()}
    else:
        assert init["kind"] == "run" and init["checkpoint"].endswith("ckpt-0")
        assert init["imported"]["a2b"]["file"] == os.path.abspath(weights)
    trained = inference.load_run(run_dir, precision="float32").generators["a2b"]
    moved = max(float(np.abs(w.numpy() - e).max()) for w, e in zip(trained.weights, expected))
    assert 0 < moved <= 2.1e-4, moved
    if kind == "pth":
        return

    # 3. The same command again resumes; another source, or another architecture, is refused.
    assert training.train(cfg.replace(max_steps=2), run_dir, verbose=0, init_from=source).step == 2
    other = str(tmp_path / "other")
    pretrained.import_torch(weights, "a2b", other)
    with pytest.raises(pretrained.PretrainedError, match="already holds one") as error:
        training.train(cfg.replace(max_steps=3), run_dir, verbose=0, init_from=other)
    assert "\n" not in str(error.value)
    fresh = tmp_path / "fresh"
    with pytest.raises(pretrained.PretrainedError, match=r"ngf=4.*ngf=8: pass --ngf=4") as error:
        training.train(config.preset("tiny", max_steps=1), str(fresh), verbose=0, init_from=source)
    assert "\n" not in str(error.value) and not fresh.exists()


def _cli(*args):
    return fixtures.run_cli(*args)


def _one_line_exit_2(proc, fragment):
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and fragment in lines[0], proc.stderr


@pytest.mark.slow(seconds=22)
def test_cli_import_torch_end_to_end(tmp_path):
    run = tmp_path / "run"
    weights = _path("resnet6_legacy")
    proc = _cli("import-torch", f"--weights={weights}", "--direction=a2b", f"--output_dir={run}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"Imported into run directory {run}" in proc.stdout
    assert "Architecture: resnet_6blocks, ngf 4, dropout off, instance norm" in proc.stdout
    assert f"Direction a2b (g_ab): {weights}" in proc.stdout
    # The run translates like the PyTorch generator (within a uint8 level of its float output).
    reference = np.load(os.path.join(DATA, "resnet6_legacy.npz"))
    image = tmp_path / "in.png"
    PIL.Image.fromarray(reference["x_odd"][0]).save(image)
    out = str(tmp_path / "out")
    translator = cyclegan_tf.load(str(run), "a2b", precision="float32")
    summary = translator.translate_files(str(image), out, verbose=False)
    got = np.asarray(PIL.Image.open(summary.written[0]))
    want = (reference["y_odd"][0] + 1.0) * 127.5
    assert np.abs(got.astype(np.float32) - want).max() <= 1.0
    # Training into it, a direction it does not have: one line each.
    _one_line_exit_2(_cli("train", f"--output_dir={run}", "--preset=tiny"), "--init_from=")
    proc = _cli("translate", f"--model={run}", "--direction=b2a", f"--input={image}", "--output=o")
    _one_line_exit_2(proc, "imported with a2b only")
    proc = _cli("import-torch", f"--weights={weights}", "--direction=both", "--output_dir=x")
    _one_line_exit_2(proc, "--direction=a2b or b2a")
    proc = _cli(
        "import-torch", f"--weights={weights}", "--generator=unet_256", f"--output_dir={run}2"
    )
    _one_line_exit_2(proc, "holds a resnet_6blocks generator, not unet_256")
    _one_line_exit_2(_cli("train", "--output_dir=x", "--generator=auto"), "generator must be")
    # A malicious file: refused, nothing run, nothing written.
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    evil.write_bytes(_legacy(pickle.dumps(_System(f"touch {marker}"), protocol=2)))
    before = sorted(os.listdir(tmp_path))
    proc = _cli("import-torch", f"--weights={evil}", f"--output_dir={tmp_path / 'evil_run'}")
    _one_line_exit_2(proc, "the file may be malicious")
    assert not marker.exists() and sorted(os.listdir(tmp_path)) == before


# -- keras-io's generator (Keras weights) ------------------------------------------------------


def _keras_io_generator(filters=4, n_blocks=6, epsilon=1e-3, name="generator_G", seed=0):
    """keras-io's CycleGAN get_resnet_generator (examples/generative/cyclegan.py), written here for
    Keras 3: tfa's InstanceNormalization is GroupNormalization(groups=-1) (epsilon 1e-3, learned
    gamma and beta), strided convs and transposed convs are Keras "same", no conv bias but the
    last; its own reflection-padding layer. Weights randomised (gamma around 1)."""
    import keras

    @keras.saving.register_keras_serializable(package="test_keras_io")
    class ReflectionPadding2D(keras.layers.Layer):
        def __init__(self, padding=(1, 1), **kwargs):
            super().__init__(**kwargs)
            self.padding = tuple(padding)

        def call(self, x):
            p, q = self.padding
            return keras.ops.pad(x, [[0, 0], [q, q], [p, p], [0, 0]], mode="reflect")

        def get_config(self):
            return {**super().get_config(), "padding": self.padding}

    def norm(x):
        return keras.layers.GroupNormalization(groups=-1, epsilon=epsilon)(x)

    layers = keras.layers
    inputs = layers.Input((None, None, 3), name=f"{name}_img_input")
    x = ReflectionPadding2D((3, 3))(inputs)
    x = layers.Activation("relu")(norm(layers.Conv2D(filters, 7, use_bias=False)(x)))
    for _ in range(2):
        filters *= 2
        x = layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False)(x)
        x = layers.Activation("relu")(norm(x))
    for _ in range(n_blocks):
        y = layers.Conv2D(filters, 3, use_bias=False)(ReflectionPadding2D()(x))
        y = layers.Activation("relu")(norm(y))
        y = norm(layers.Conv2D(filters, 3, use_bias=False)(ReflectionPadding2D()(y)))
        x = layers.add([x, y])
    for _ in range(2):
        filters //= 2
        x = layers.Conv2DTranspose(filters, 3, strides=2, padding="same", use_bias=False)(x)
        x = layers.Activation("relu")(norm(x))
    x = layers.Conv2D(3, 7)(ReflectionPadding2D((3, 3))(x))
    model = keras.Model(inputs, layers.Activation("tanh")(x), name=name)
    rng = np.random.default_rng(seed)
    for w in model.weights:
        scale = 0.3 if w.path.endswith(("gamma", "beta")) else 0.2
        base = 1.0 if w.path.endswith("gamma") else 0.0
        w.assign(base + scale * rng.standard_normal(w.shape).astype(np.float32))
    return model


@pytest.fixture(scope="module")
def keras_io_files(tmp_path_factory):
    """keras-io generators saved as .weights.h5, .keras, legacy .h5, and a CycleGan's whole
    .weights.h5 (gen_G and gen_F), with the models that wrote them."""
    import keras

    root = tmp_path_factory.mktemp("keras_io")
    g = _keras_io_generator(seed=0)
    f = _keras_io_generator(n_blocks=6, name="generator_F", seed=1)
    g.save_weights(str(root / "g.weights.h5"))
    g.save(str(root / "g.keras"))
    g.save(str(root / "g.h5"))  # Keras' legacy HDF5 format, the layout Keras 2 wrote

    class CycleGan(keras.Model):  # keras-io's model keeps its generators as gen_G, gen_F
        def __init__(self):
            super().__init__()
            self.gen_G, self.gen_F = g, f

        def call(self, x):
            return self.gen_G(x) + self.gen_F(x)

    cycle = CycleGan()
    cycle(np.zeros((1, 8, 8, 3), np.float32))
    cycle.save_weights(str(root / "cyclegan.weights.h5"))
    return {"root": root, "g": g, "f": f}


@pytest.mark.parametrize("file", ["g.weights.h5", "g.keras", "g.h5"])
def test_keras_io_generator_files_are_imported(keras_io_files, file):
    path = str(keras_io_files["root"] / file)
    state_dict, kind, _ = pretrained._read_weights(path, "a2b")
    assert kind == "keras"
    layout = pretrained.infer_layout(state_dict, path)
    expected = {
        "generator": "resnet_6blocks",
        "ngf": 4,
        "dropout": False,
        "norm": "instance_affine",
        "norm_epsilon": 1e-3,
        "down_padding": "keras_same",
        "upsampling": "keras_same",
        "conv_bias": "output_only",
    }
    assert layout.family == "keras_io" and layout.architecture() == expected
    model = pretrained.to_keras(state_dict, layout)
    rng = np.random.default_rng(3)
    for height, width in ((16, 20), (13, 18)):  # a multiple of 4 and not
        x = _float(rng.integers(0, 256, (1, height, width, 3), np.uint8))
        want = np.asarray(
            inference.pad_run_crop(keras_io_files["g"], x, 4)
        )  # the source model, padded alike
        got = np.asarray(inference.pad_run_crop(model, x, 4))
        # Same layers, same order of operations (the instance norm fused vs moments): float32
        # rounding through ~20 layers, measured ~1e-6.
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
        assert np.abs(want).max() > 0.5


def test_keras_io_cyclegan_weights_give_both_directions(keras_io_files, tmp_path):
    path = str(keras_io_files["root"] / "cyclegan.weights.h5")
    run_dir = str(tmp_path / "run")
    pretrained.import_torch(path, "a2b", run_dir, weights_b2a=path)
    config = rundir.require_config(run_dir).model
    assert (config.norm, config.down_padding, config.upsampling, config.conv_bias) == (
        "instance_affine",
        "keras_same",
        "keras_same",
        "output_only",
    )
    with open(os.path.join(run_dir, rundir.IMPORTED_FILE)) as f:
        record = json.load(f)
    assert record["layout"]["family"] == "keras_io"
    assert record["sources"]["a2b"]["format"] == "keras"
    run = inference.load_run(run_dir, precision="float32")
    x = _float(np.random.default_rng(4).integers(0, 256, (1, 12, 16, 3), np.uint8))
    for direction, source in (("a2b", "g"), ("b2a", "f")):
        got = np.asarray(run.endpoints(direction).translate_float(x))
        want = np.asarray(keras_io_files[source](x, training=False))
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


def test_community_refusals_say_what_was_found_and_what_is_needed():
    def refused(state_dict, match):
        with pytest.raises(pretrained.PretrainedError, match=match) as error:
            pretrained.infer_layout(state_dict, "x.pth")
        assert "\n" not in str(error.value)

    fork = pretrained.load_state_dict(_path("aitorzip_block_affine_zip"))
    # The example: a fork with affine norms and `block`, two blocks short of 9.
    seven = {k: v for k, v in fork.items() if not k.startswith(("model.17.", "model.18."))}
    refused(
        seven,
        r"^x\.pth: model\.10\.block\.\* looks like aitorzip blocks with affine norm, but 7 "
        r"residual blocks were found; 6 or 9 \(resnet_6blocks, resnet_9blocks\) can be imported",
    )
    renamed = {k.replace(".block.", ".res."): v for k, v in fork.items()}
    refused(renamed, r"its residual blocks are model\.N\.res\.\*; blocks named model\.N\.conv_bl")
    one_affine = {k: v for k, v in fork.items() if not k.startswith("model.5.")}
    refused(one_affine, r"key 'model\.5\.weight' of the aitorzip ResnetGenerator .* is missing")
    aladdin = pretrained.load_state_dict(_path("aladdinpersson_zip"))
    four = {k: v for k, v in aladdin.items() if not re.match(r"res_blocks\.[4-8]\.", k)}
    refused(four, r"res_blocks\.\* looks like aladdinpersson's Generator .* but 4 residual blocks")
    # A recognised layout with a tensor of the wrong shape names the tensor.
    layout = pretrained.infer_layout(fork)
    bad = {**fork, "model.13.block.2.weight": np.ones(5, np.float32)}
    with pytest.raises(pretrained.PretrainedError, match=r"model\.13\.block\.2\.weight has shape"):
        pretrained.to_keras(bad, layout)


def test_init_from_a_community_file_takes_its_generator_variant(tmp_path):
    """train --init_from=<aladdinpersson .pth>: the variant without flags (reflect-padded
    downsampling) comes from the file (`source_architecture`, which train applies first); the
    flagged fields must be passed, else one line names the flag."""
    weights = _path("aladdinpersson_zip")
    cfg = config.preset("tiny", generator="resnet_9blocks", ngf=2, precision="float32")
    adopted = pretrained.source_architecture(cfg, weights)
    assert adopted.model.down_padding == "reflect" and cfg.model.down_padding == "zeros"
    model = trainer.CycleGAN(adopted, steps_per_epoch=8)
    record = pretrained.init_generators(
        {"a2b": model.g_ab, "b2a": model.g_ba}, weights, adopted.model
    )
    assert record["layout"]["a2b"]["family"] == "aladdinpersson"
    reference = np.load(os.path.join(DATA, "aladdinpersson.npz"))
    got = np.asarray(inference.pad_run_crop(model.g_ab, _float(reference["x_odd"]), 4))
    np.testing.assert_allclose(got, reference["y_odd"], rtol=0, atol=1e-4)
    with pytest.raises(pretrained.PretrainedError, match=r"down_padding='reflect'.*zeros") as error:
        pretrained.init_generators({"a2b": model.g_ab}, weights, cfg.model)
    assert "\n" not in str(error.value)
    with pytest.raises(pretrained.PretrainedError, match=r"pass --norm=instance_affine"):
        affine = _path("aladdinpersson_affine")
        six = pretrained.source_architecture(config.preset("tiny", ngf=2), affine)
        pretrained.init_generators({"a2b": model.g_ab}, affine, six.model)
