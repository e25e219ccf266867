"""Tests for cyclegan_tf.exporting: TF Serving layout, assets, the warmup request, and the
signatures loaded in fresh processes, both by `tf.saved_model.load` and by the TF1 session loader
TF Serving resolves SignatureDefs with; TFLite and ONNX files in their own runtimes. Outputs are
compared with the Keras generator run on numpy-padded input, and the files with the SavedModel."""

import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap

import fixtures
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2

from cyclegan_tf import (
    checkpoints,
    config,
    errors,
    exporting,
    generators,
    images,
    inference,
    rundir,
    sources,
)
from cyclegan_tf import precision as precision_lib

# Name -> (height, width) of the images pushed through both signatures.
SIZES = {"small": (37, 53), "square": (256, 256), "large": (1000, 750), "tiny": (5, 7)}

# Runs in a fresh interpreter: loads the exports (argv: mode tf2|tf1, a2b dir, b2a dir, inputs
# pickle, outputs pickle), calls the signatures, and pickles what came back.
_LOADER = textwrap.dedent(
    """
    import pickle, sys
    import tensorflow as tf

    mode, a2b_dir, b2a_dir, inputs_path, outputs_path = sys.argv[1:]
    with open(inputs_path, "rb") as f:
        inputs = pickle.load(f)

    def run_checks(call):
        out = {"translate": {}}
        for name, image in inputs["arrays"].items():
            out["translate"][name] = call("translate_images", images=image)
        out["serving_batch"] = call("serving_default", images_bytes=inputs["batch"])
        try:
            call("serving_default", images_bytes=inputs["garbage"])
            out["garbage_error"] = None
        except tf.errors.InvalidArgumentError as e:
            out["garbage_error"] = e.message
        out["after_garbage"] = call("serving_default", images_bytes=inputs["batch"][:1])
        return out

    results = {}
    if mode == "tf2":
        for direction, path in (("a2b", a2b_dir), ("b2a", b2a_dir)):
            loaded = tf.saved_model.load(path)

            def call(signature, **feeds):
                feeds = {k: tf.constant(v) for k, v in feeds.items()}
                return {k: v.numpy() for k, v in loaded.signatures[signature](**feeds).items()}

            if direction == "a2b":
                results["a2b"] = run_checks(call)
                results["asset"] = loaded.export_json.asset_path.numpy().decode()
            else:
                results["b2a"] = call("translate_images", images=inputs["arrays"]["small"])
    else:
        for direction, path in (("a2b", a2b_dir), ("b2a", b2a_dir)):
            with tf.compat.v1.Graph().as_default(), tf.compat.v1.Session() as sess:
                meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], path)

                def call(signature, **feeds):
                    sig = meta.signature_def[signature]
                    fetches = {k: v.name for k, v in sig.outputs.items()}
                    return sess.run(fetches, {sig.inputs[k].name: v for k, v in feeds.items()})

                if direction == "a2b":
                    results["a2b"] = run_checks(call)
                    results["tensor_names"] = {
                        name: (
                            {k: v.name for k, v in sig.inputs.items()},
                            {k: v.name for k, v in sig.outputs.items()},
                        )
                        for name, sig in meta.signature_def.items()
                        if not name.startswith("__")
                    }
                else:
                    results["b2a"] = call("translate_images", images=inputs["arrays"]["small"])
    with open(outputs_path, "wb") as f:
        pickle.dump(results, f)
    """
)


def _keras_reference(generator, images):
    """The Keras model on numpy reflect-padded input, cropped back: [N, H, W, 3] float32."""
    images = images.astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    height, width = images.shape[1:3]
    pads = []
    for size in (height, width):
        total = max(-(-size // 4) * 4, 8) - size  # ResNet: a multiple of 4, at least 8
        pads.append((total // 2, total - total // 2))
    padded = np.pad(images, [(0, 0), *pads, (0, 0)], mode="reflect")
    out = np.asarray(generator(padded, training=False))
    return out[:, pads[0][0] : pads[0][0] + height, pads[1][0] : pads[1][0] + width]


@pytest.fixture(scope="module")
def exported(shared_run):
    """The session's tiny run and its SavedModels (`shared_run`, read-only)."""
    return {**shared_run, "paths": shared_run["saved_models"]}


@pytest.fixture(scope="module")
def exported_files(shared_run):
    """The same export's TFLite and ONNX files: a2b only (the conversions are most of the time,
    and the directions share every line of them; both directions' SavedModels are checked)."""
    files = {fmt: {"a2b": path} for fmt, path in shared_run["files"].items()}
    paths = {"saved_model": shared_run["saved_models"], **files}
    return {"export_dir": shared_run["export_dir"], "paths": paths}


def test_layout_assets_and_metadata(exported):
    export_dir, paths = exported["export_dir"], exported["paths"]
    assert paths == {
        "a2b": os.path.join(export_dir, "cyclegan_a2b", "1"),
        "b2a": os.path.join(export_dir, "cyclegan_b2a", "1"),
    }
    # Only the formats' directories: the staging directory was renamed away, nothing half-written.
    assert sorted(os.listdir(export_dir)) == ["cyclegan_a2b", "cyclegan_b2a", "onnx", "tflite"]
    for direction, path in paths.items():
        assert os.path.isfile(os.path.join(path, "saved_model.pb"))
        assert os.path.isfile(os.path.join(path, "variables", "variables.index"))
        assert sources.read_exported_config(path) == config.preset("tiny", precision="float32")
        info = sources.read_export_info(path)
        assert info["direction"] == direction
        assert info["generator"] == {"a2b": "g_ab", "b2a": "g_ba"}[direction]
        assert (info["checkpoint"], info["step"], info["version"]) == ("ckpt-3", 0, 1)
        assert info["size_multiple"] == 4
        assert info["precision"] == "float32"  # the default: portable
        assert info["format"] == "saved_model"
        # The run's name, not the path of the machine the export was made on.
        assert info["run_name"] == "run" and "run_dir" not in info
        with open(os.path.join(path, "assets", "export.json")) as f:
            assert os.path.dirname(exported["run_dir"]) not in f.read()


@pytest.mark.slow
def test_fresh_process_loads_match_keras(exported, tmp_path):
    model, paths = exported["model"], exported["paths"]
    arrays = {
        name: fixtures.random_image(h, w, seed=i)[None]
        for i, (name, (h, w)) in enumerate(SIZES.items())
    }
    batch = [  # one request, mixed sizes and formats
        fixtures.encode(arrays["small"][0], "PNG"),
        fixtures.encode(fixtures.random_image(64, 48, seed=10), "JPEG"),
        fixtures.encode(arrays["tiny"][0], "PNG"),
        fixtures.encode(fixtures.random_image(21, 30, seed=11, channels=1), "PNG"),  # grayscale
        fixtures.encode(fixtures.random_image(23, 17, seed=12, channels=4), "PNG"),  # RGBA
        fixtures.encode(fixtures.random_image(19, 26, seed=13), "BMP"),
        fixtures.encode(fixtures.random_image(12, 9, seed=14), "GIF"),
    ]
    inputs = {"arrays": arrays, "batch": batch, "garbage": [batch[0], b"not an image at all"]}
    with open(tmp_path / "inputs.pkl", "wb") as f:
        pickle.dump(inputs, f)

    # Both loaders and saved_model_cli run side by side, each in a fresh process.
    procs = {
        mode: subprocess.Popen(
            [sys.executable, "-c", _LOADER, mode, paths["a2b"], paths["b2a"]]
            + [str(tmp_path / "inputs.pkl"), str(tmp_path / f"{mode}.pkl")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for mode in ("tf2", "tf1")
    }
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    procs["cli"] = subprocess.Popen(
        [cli, "show", "--all", "--dir", paths["a2b"]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    outputs = {name: proc.communicate(timeout=300) for name, proc in procs.items()}
    for name, proc in procs.items():
        assert proc.returncode == 0, f"{name}: {outputs[name][1][-3000:]}"

    # References: the Keras generators, with the padding done independently in numpy.
    expected = {name: _keras_reference(model.g_ab, image) for name, image in arrays.items()}
    expected_b2a = _keras_reference(model.g_ba, arrays["small"])
    decoded_batch = [
        tf.io.decode_image(data, channels=3, expand_animations=False).numpy() for data in batch
    ]
    expected_batch = [
        images.to_uint8(_keras_reference(model.g_ab, x[None])[0]) for x in decoded_batch
    ]

    for mode in ("tf2", "tf1"):
        with open(tmp_path / f"{mode}.pkl", "rb") as f:
            got = pickle.load(f)
        a2b = got["a2b"]
        for name, (height, width) in SIZES.items():
            out = a2b["translate"][name]
            assert out["images"].shape == (1, height, width, 3) and out["images"].dtype == np.uint8
            diff = np.abs(out["images_float"] - expected[name]).max()
            assert diff <= 1e-5, (mode, name, diff)
            np.testing.assert_array_equal(out["images"], images.to_uint8(expected[name]))
        assert np.abs(got["b2a"]["images_float"] - expected_b2a).max() <= 1e-5
        assert np.abs(expected_b2a - expected["small"]).max() > 1e-3  # really the other generator

        pngs = a2b["serving_batch"]["images_bytes"]
        assert len(pngs) == len(batch)
        for png, source, want in zip(pngs, decoded_batch, expected_batch):
            assert png.startswith(b"\x89PNG")
            image = tf.io.decode_png(png).numpy()
            assert image.shape == source.shape  # same size, RGB whatever came in
            np.testing.assert_array_equal(image, want)
        # The PNG holds exactly the tensor signature's pixels.
        first = tf.io.decode_png(pngs[0]).numpy()
        np.testing.assert_array_equal(first, a2b["translate"]["small"]["images"][0])

        assert "Could not decode image 1 of the request" in a2b["garbage_error"], mode
        assert a2b["after_garbage"]["images_bytes"][0] == pngs[0]  # still serving, same answer

    with open(tmp_path / "tf2.pkl", "rb") as f:
        asset = pickle.load(f)["asset"]
    with open(asset) as f:
        assert json.load(f)["direction"] == "a2b"
    with open(tmp_path / "tf1.pkl", "rb") as f:
        names = pickle.load(f)["tensor_names"]
    assert names["serving_default"] == (
        {"images_bytes": "serving_default_images_bytes:0"},
        {"images_bytes": "StatefulPartitionedCall:0"},
    )
    assert set(names["translate_images"][1]) == {"images", "images_float"}

    shown = outputs["cli"][0]
    assert "signature_def['serving_default']" in shown
    assert "signature_def['translate_images']" in shown
    assert "DT_STRING" in shown and "DT_UINT8" in shown


def test_precision_defaults_to_float32_and_bfloat16_serves_close_to_float32(tmp_path):
    run_dir, export_dir = str(tmp_path / "run"), str(tmp_path / "models")
    model = fixtures.make_run(run_dir, precision="mixed_bfloat16")  # trained in bfloat16

    def export_a2b(**kwargs):
        return exporting.export_run(run_dir, export_dir, directions=("a2b",), **kwargs)[
            "saved_model"
        ]

    fp32 = export_a2b()["a2b"]  # portable by default, whatever the run trained in
    bf16 = export_a2b(precision="mixed_bfloat16")["a2b"]
    auto = export_a2b(precision="auto")["a2b"]  # resolved on the exporting machine
    assert sources.read_export_info(fp32)["precision"] == "float32"
    assert sources.read_export_info(bf16)["precision"] == "mixed_bfloat16"
    resolved = precision_lib.resolve("auto")
    assert sources.read_export_info(auto)["precision"] == resolved.precision
    assert sources.read_export_info(auto)["precision_reason"] == resolved.reason
    with pytest.raises(ValueError, match="precision must be one of auto, float32, mixed_bfloat16"):
        exporting.export_run(run_dir, export_dir, precision="bfloat16")
    assert sorted(os.listdir(os.path.join(export_dir, "cyclegan_a2b"))) == ["1", "2", "3"]

    image = fixtures.random_image(37, 53, seed=7)[None]
    served = {}
    for name, path in (("bf16", bf16), ("fp32", fp32)):
        signature = tf.saved_model.load(path).signatures[sources.TENSOR_SIGNATURE]
        out = signature(images=tf.constant(image))
        assert out["images"].dtype == tf.uint8 and out["images_float"].dtype == tf.float32
        served[name] = out["images_float"].numpy()
    float32_generator = inference.load_run(run_dir).generators["a2b"]
    assert float32_generator.compute_dtype == "float32"
    assert model.g_ab.compute_dtype == "bfloat16"
    # float32 serving reproduces the float32 Keras model exactly, bfloat16 serving the model as
    # training ran it (bfloat16 layers); the two differ by bfloat16 rounding only.
    np.testing.assert_array_equal(served["fp32"], _keras_reference(float32_generator, image))
    np.testing.assert_allclose(served["bf16"], _keras_reference(model.g_ab, image), atol=1e-6)
    difference = np.abs(served["bf16"] - served["fp32"])
    assert 0 < difference.max() < 0.05 and difference.mean() < 0.01


def test_versions_increase_and_existing_versions_are_refused(exported, tmp_path):
    run_dir, export_dir = exported["run_dir"], str(tmp_path / "export")
    shutil.copytree(exported["export_dir"], export_dir)  # the shared export is read-only
    with pytest.raises(ValueError, match="already exists"):
        exporting.export_run(run_dir, export_dir, version=1)
    with pytest.raises(ValueError, match="version must be an integer >= 1"):
        exporting.export_run(run_dir, export_dir, version=0)
    # The next free version counts both directions, so the pair stays aligned.
    paths = exporting.export_run(run_dir, export_dir, checkpoint="3", directions=("b2a",))
    assert paths == {"saved_model": {"b2a": os.path.join(export_dir, "cyclegan_b2a", "2")}}
    latest = sources.latest_version(os.path.join(export_dir, "cyclegan_b2a"))
    assert latest == paths["saved_model"]["b2a"]
    assert sorted(os.listdir(export_dir)) == ["cyclegan_a2b", "cyclegan_b2a", "onnx", "tflite"]


def test_a_failed_export_leaves_no_version_behind(exported, tmp_path, monkeypatch):
    export_dir = str(tmp_path / "models")

    def half_export(generator, path, **kwargs):
        if kwargs["info"]["direction"] == "b2a":
            raise RuntimeError("disk full")
        os.makedirs(path)
        open(os.path.join(path, "saved_model.pb"), "w").close()
        return path

    monkeypatch.setattr(exporting, "export_generator", half_export)
    with pytest.raises(RuntimeError, match="disk full"):
        exporting.export_run(exported["run_dir"], export_dir)
    assert os.listdir(export_dir) == []  # neither direction, no staging directory


def test_unusable_run_directories_raise_user_errors(exported, tmp_path):
    with pytest.raises(checkpoints.CheckpointError, match="No checkpoints in"):
        exporting.export_run(str(tmp_path), str(tmp_path / "models"))
    shutil.copytree(os.path.join(exported["run_dir"], "checkpoints"), tmp_path / "checkpoints")
    with pytest.raises(rundir.RunDirError, match="not a run directory: it has no config"):
        exporting.export_run(str(tmp_path), str(tmp_path / "models"))
    with pytest.raises(checkpoints.CheckpointError, match="Checkpoint '99' not found"):
        exporting.export_run(exported["run_dir"], str(tmp_path / "models"), checkpoint="99")


def test_formats_are_parsed_and_unknown_ones_refused_before_any_work(exported, tmp_path):
    assert exporting.parse_formats("onnx, saved_model,") == ("onnx", "saved_model")
    assert exporting.parse_formats(("tflite",)) == ("tflite",)
    for bad in ("tflight", "saved_model,saved_model", ""):
        with pytest.raises(errors.ConfigError, match="format must be a comma-separated list"):
            exporting.export_run(exported["run_dir"], str(tmp_path / "m"), formats=bad)
    assert not (tmp_path / "m").exists()


# -- TFLite and ONNX ---------------------------------------------------------------------------


def test_tflite_and_onnx_layout_and_check_figures(exported_files):
    export_dir, paths = exported_files["export_dir"], exported_files["paths"]
    for fmt in ("tflite", "onnx"):
        assert sorted(os.listdir(os.path.join(export_dir, fmt))) == [
            f"cyclegan_a2b_1.{ext}" for ext in ("json", fmt)
        ]
        assert list(paths[fmt]) == ["a2b"]
        for direction, path in paths[fmt].items():
            assert path == os.path.join(export_dir, fmt, f"cyclegan_{direction}_1.{fmt}")
            info = sources.read_export_info(path)
            assert (info["format"], info["direction"], info["version"]) == (fmt, direction, 1)
            assert info["precision"] == "float32" and info["run_name"] == "run"
            assert list(info["inputs"]) == ["images"]
            assert list(info["outputs"]) == ["translated", "translated_float"]
            check = info["check"]
            assert check["sizes"] == [[64, 64], [37, 53]]
            assert check["max_uint8_difference"] <= 1
            assert 0 < check["max_float_difference"] < 1e-4


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_files_equal_the_saved_model_at_any_size(exported_files, fmt):
    paths = exported_files["paths"]
    for direction in paths[fmt]:
        run = sources.open_file(paths[fmt][direction])
        saved = tf.saved_model.load(paths["saved_model"][direction])
        signature = saved.signatures[sources.TENSOR_SIGNATURE]
        for i, (height, width) in enumerate([(45, 30), (32, 48), (3, 2)]):  # 45, 30, 3: not x4
            batch = np.stack([fixtures.random_image(height, width, seed=i + s) for s in (0, 9)])
            got = run(batch)
            want = {k: v.numpy() for k, v in signature(images=tf.constant(batch)).items()}
            assert got["translated"].shape == batch.shape and got["translated"].dtype == np.uint8
            assert got["translated_float"].dtype == np.float32
            levels = np.abs(got["translated"].astype(int) - want["images"]).max()
            assert levels <= 1, (direction, height, width)
            if height > 3:  # a 3x2 image is padded from 6 pixels: near-constant instance norm
                floats = np.abs(got["translated_float"] - want["images_float"]).max()
                assert floats < 1e-4, (direction, height, width, floats)


def test_a_file_failing_its_check_is_deleted_with_a_one_line_error(exported_files, tmp_path):
    source = exported_files["paths"]["onnx"]["a2b"]
    path = str(tmp_path / "copy.onnx")
    shutil.copy(source, path)
    shutil.copy(source[: -len(".onnx")] + ".json", str(tmp_path / "copy.json"))
    other = inference.Endpoints(generators.build_generator("resnet_6blocks", ngf=8), 4)
    with pytest.raises(
        exporting.ExportCheckError, match=r"differs from the Keras model by up to \d+"
    ):
        exporting.check_file(path, other)
    assert os.listdir(tmp_path) == []


def test_a_failed_check_writes_no_format_at_all(exported, tmp_path, monkeypatch):
    monkeypatch.setattr(exporting, "CHECK_TOLERANCE", -1)  # every file fails
    export_dir = str(tmp_path / "models")
    with pytest.raises(exporting.ExportCheckError, match="The tflite export differs"):
        exporting.export_run(
            exported["run_dir"], export_dir, directions=("a2b",), formats="saved_model,tflite"
        )
    assert os.listdir(export_dir) == []


def test_a_missing_extra_is_one_line_naming_the_pip_command(exported, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` fails
    with pytest.raises(sources.MissingExtraError) as caught:
        exporting.export_run(exported["run_dir"], str(tmp_path / "m"), formats="saved_model,onnx")
    message = str(caught.value)
    assert message == (
        "The onnx format needs onnxruntime, which is not installed: pip install 'cyclegan-tf[onnx]'"
    )
    assert isinstance(caught.value, errors.UserError)  # the CLI: this line, exit code 2
    assert not (tmp_path / "m").exists()
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    with pytest.raises(sources.MissingExtraError, match=r"pip install 'cyclegan-tf\[tflite\]'"):
        sources.open_file(str(tmp_path / "model.tflite"))


@pytest.mark.slow
def test_cli_export_formats_and_a_missing_extra(exported, tmp_path):
    def start(*args, block=None):
        code = "import sys\n"
        if block:  # as if the extra were not installed
            code += f"sys.modules[{block!r}] = None\n"
        code += (
            "from cyclegan_tf import cli\nsys.argv = ['cyclegan-tf', *sys.argv[1:]]\ncli.run()\n"
        )
        return subprocess.Popen(
            [sys.executable, "-c", code, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    run_dir, export_dir = exported["run_dir"], str(tmp_path / "m")
    procs = {
        "onnx": start(
            "export", f"--run_dir={run_dir}", f"--export_dir={export_dir}", "--format=onnx"
        ),
        "missing": start(
            "export",
            f"--run_dir={run_dir}",
            f"--export_dir={tmp_path}/x",
            "--format=saved_model,tflite",
            block="ai_edge_litert",
        ),
        "unknown": start(
            "export", f"--run_dir={run_dir}", f"--export_dir={tmp_path}/y", "--format=torchscript"
        ),
    }
    results = {
        name: (proc.communicate(timeout=300), proc.returncode) for name, proc in procs.items()
    }

    (stdout, stderr), code = results["onnx"]
    assert code == 0, stderr[-3000:]
    lines = stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(
        f"Exported a2b onnx (float32): {export_dir}/onnx/cyclegan_a2b_1.onnx; checked against the "
        "Keras model at 64x64 and 37x53: max difference"
    ), stdout
    assert sorted(os.listdir(export_dir)) == ["onnx"]
    for name in ("missing", "unknown"):
        (stdout, stderr), code = results[name]
        assert code == 2, stderr[-3000:]
        last = stderr.strip().splitlines()[-1]
        assert last.startswith("cyclegan-tf: error: "), stderr
        want = "pip install 'cyclegan-tf[tflite]'" if name == "missing" else "format must be"
        assert want in last, last
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


# -- TF Serving warmup -------------------------------------------------------------------------


def _fields(data):
    """Top-level protobuf fields of `data`: [(number, wire type, value)] (varints and bytes)."""
    fields, i = [], 0

    def varint():
        nonlocal i
        value, shift = 0, 0
        while True:
            byte = data[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value

    while i < len(data):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            fields.append((number, wire, varint()))
        elif wire == 2:
            size = varint()
            fields.append((number, wire, data[i : i + size]))
            i += size
        else:
            raise AssertionError(f"unexpected wire type {wire}")
    return fields


def test_warmup_file_parses_to_a_request_the_model_answers(exported):
    path = exported["paths"]["a2b"]
    warmup = os.path.join(path, "assets.extra", "tf_serving_warmup_requests")
    records = [r.numpy() for r in tf.data.TFRecordDataset(warmup)]
    assert len(records) == 1  # TF Serving reads at most 1,000

    # The wire format, walked by hand with the field numbers of TF Serving's .proto files:
    # PredictionLog.predict_log = 6 -> PredictLog.request = 1 -> PredictRequest.model_spec = 1
    # (ModelSpec.name = 1, .signature_name = 3) and .inputs = 2 (map entry: key 1, value 2).
    [(number, _, predict_log)] = _fields(records[0])
    assert number == 6
    [(number, _, request)] = _fields(predict_log)
    assert number == 1
    by_number = {}
    for number, _, value in _fields(request):
        by_number.setdefault(number, []).append(value)
    assert sorted(by_number) == [1, 2]
    assert {n: v for n, _, v in _fields(by_number[1][0])} == {
        1: b"cyclegan_a2b",
        3: b"serving_default",
    }
    [entry] = by_number[2]
    entry_fields = {n: v for n, _, v in _fields(entry)}
    assert entry_fields[1] == b"images_bytes"
    tensor = tf.make_ndarray(tensor_pb2.TensorProto.FromString(entry_fields[2]))

    # The same through the message class exporting.py writes with.
    log = exporting.prediction_log_class().FromString(records[0])
    spec = log.predict_log.request.model_spec
    assert (spec.name, spec.signature_name) == ("cyclegan_a2b", "serving_default")
    assert list(log.predict_log.request.inputs) == ["images_bytes"]

    # A real 32x32 PNG that the loaded model answers, like any request.
    assert tensor.shape == (1,) and tensor[0].startswith(b"\x89PNG")
    image = tf.io.decode_png(tensor[0]).numpy()
    assert image.shape == (32, 32, 3) and len(np.unique(image[..., 0])) > 1
    serving = tf.saved_model.load(path).signatures["serving_default"]
    answer = serving(images_bytes=tf.constant(tensor))["images_bytes"].numpy()
    translated = tf.io.decode_png(answer[0]).numpy()
    want = images.to_uint8(_keras_reference(exported["model"].g_ab, image[None])[0])
    np.testing.assert_array_equal(translated, want)


@pytest.mark.slow(seconds=50)
def test_affine_instance_norm_exports_to_every_format(tmp_path):
    """--norm=instance_affine: gamma and beta (set away from their initial 1 and 0, else the
    layer computes the affine-free norm and a lost scale would go unseen) are in every format:
    the SavedModel equals the Keras model within float32 rounding, TFLite and ONNX the SavedModel
    within a uint8 level (export's own check, and here at a size that is not a multiple of 4)."""
    cfg = config.preset("tiny", norm="instance_affine", precision="float32")
    run_dir = str(tmp_path / "run")
    model = fixtures.make_run(run_dir, step=1, norm="instance_affine")
    rng = np.random.default_rng(0)
    norms = [v for v in model.g_ab.weights if v.path.endswith(("/gamma", "/beta"))]
    assert len(norms) == 2 * 17
    for v in norms:
        shift = 1.0 if v.path.endswith("/gamma") else 0.0
        v.assign(shift + rng.uniform(-0.5, 0.5, v.shape).astype(np.float32))
    shutil.rmtree(checkpoints.checkpoint_dir(run_dir))
    checkpoints.Checkpointer(model.checkpoint_objects(), run_dir).save(1)
    assert rundir.require_config(run_dir).model.norm == cfg.model.norm

    paths = exporting.export_run(
        run_dir, str(tmp_path / "models"), directions=("a2b",), formats="saved_model,tflite,onnx"
    )
    batch = np.stack([fixtures.random_image(45, 30, seed=s) for s in (0, 1)])
    saved = tf.saved_model.load(paths["saved_model"]["a2b"])
    want = saved.signatures[sources.TENSOR_SIGNATURE](images=tf.constant(batch))
    reference = _keras_reference(model.g_ab, batch)
    np.testing.assert_allclose(want["images_float"].numpy(), reference, rtol=0, atol=1e-4)
    plain = generators.build_generator("resnet_6blocks", ngf=8)  # the same convs, no affine part
    affine_ids = {id(v) for v in norms}
    convs = [w for w in model.g_ab.weights if id(w) not in affine_ids]
    for source, target in zip(convs, plain.weights, strict=True):
        target.assign(source)
    assert np.abs(_keras_reference(plain, batch) - reference).max() > 0.1
    for fmt in ("tflite", "onnx"):
        assert sources.read_export_info(paths[fmt]["a2b"])["check"]["max_uint8_difference"] <= 1
        got = sources.open_file(paths[fmt]["a2b"])(batch)
        assert np.abs(got["translated"].astype(int) - want["images"].numpy()).max() <= 1, fmt


@pytest.mark.slow(seconds=45)
@pytest.mark.parametrize(
    "overrides, resize_op, formats",
    [
        # tiny: resnet_6blocks. Every format: the layer's SavedModel, TFLite and ONNX lowering.
        ({"upsampling": "resize_bilinear"}, "RESIZE_BILINEAR", ("tflite", "onnx")),
        # The other interpolation is one argument of the same layer: its TFLite op only.
        (
            {"upsampling": "resize_nearest", "generator": "unet_64", "crop_size": 64},
            "RESIZE_NEAREST_NEIGHBOR",
            ("tflite",),
        ),
    ],
)
def test_resize_upsampling_exports_to_every_format(tmp_path, overrides, resize_op, formats):
    """A resize-convolution generator exports to a SavedModel equal to the Keras model within
    float32 rounding, and to TFLite (builtin ops only) and ONNX files within a uint8 level."""
    from ai_edge_litert.interpreter import Interpreter

    run_dir = str(tmp_path / "run")
    model = fixtures.make_run(run_dir, step=1, load_size=64, **overrides)
    assert rundir.require_config(run_dir).model.upsampling == overrides["upsampling"]
    paths = exporting.export_run(
        run_dir,
        str(tmp_path / "models"),
        directions=("a2b",),
        formats=",".join(("saved_model", *formats)),
    )
    batch = np.stack([fixtures.random_image(45, 30, seed=s) for s in (0, 1)])
    saved = tf.saved_model.load(paths["saved_model"]["a2b"])
    want = saved.signatures[sources.TENSOR_SIGNATURE](images=tf.constant(batch))
    multiple = generators.size_multiple(model.config.model.generator)
    reference = inference.pad_run_crop(model.g_ab, images.to_float(batch), multiple)
    np.testing.assert_allclose(want["images_float"].numpy(), reference, rtol=0, atol=1e-4)
    for fmt in formats:
        assert sources.read_export_info(paths[fmt]["a2b"])["check"]["max_uint8_difference"] <= 1
        got = sources.open_file(paths[fmt]["a2b"])(batch)
        assert np.abs(got["translated"].astype(int) - want["images"].numpy()).max() <= 1, fmt
    interpreter = Interpreter(model_path=paths["tflite"]["a2b"])
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert resize_op in ops and "TRANSPOSE_CONV" not in ops
    assert not any(op.startswith("FLEX") for op in ops)
