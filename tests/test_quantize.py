"""Tests for quantized TFLite exports (`export --format=tflite --quantize=...`): the files, their
check figures, running them through every entry point, the PSNR floor and the one-line errors.

The run is the session's tiny `shared_run` (float32, the built-in dataset: calibration and check
images come from its train and test splits); its float32 TFLite file is the size reference."""

import json
import os
import shutil

import fixtures
import numpy as np
import PIL.Image
import pytest

import cyclegan_tf
from cyclegan_tf import errors, exporting, rundir, sources

MODES = exporting.QUANTIZATIONS


@pytest.fixture(scope="module")
def quantized(shared_run, tmp_path_factory):
    """a2b's TFLite file in each quantization, exported from the shared run (versions 1, 2, 3)."""
    export_dir = str(tmp_path_factory.mktemp("quantized"))
    paths = {
        mode: exporting.export_run(
            shared_run["run_dir"], export_dir, directions=("a2b",), formats="tflite", quantize=mode
        )["tflite"]["a2b"]
        for mode in MODES
    }
    return {**shared_run, "quantized_dir": export_dir, "paths": paths}


def test_each_mode_writes_a_named_file_whose_json_holds_the_check(quantized):
    export_dir, paths = quantized["quantized_dir"], quantized["paths"]
    # One version per export, the quantization in the name; nothing else (no staging leftovers).
    assert paths == {
        mode: os.path.join(export_dir, "tflite", f"cyclegan_a2b_{v}_{mode}.tflite")
        for v, mode in enumerate(MODES, start=1)
    }
    assert sorted(os.listdir(export_dir)) == ["tflite"]
    assert len(os.listdir(os.path.join(export_dir, "tflite"))) == 2 * len(MODES)
    for mode, path in paths.items():
        info = sources.read_export_info(path)
        assert (info["format"], info["quantization"], info["precision"]) == ("tflite", mode, mode)
        assert list(info["outputs"]) == ["translated", "translated_float"]
        check = info["check"]
        assert check["floor_psnr_db"] == exporting.QUANTIZED_PSNR_FLOORS[mode]
        assert check["psnr_db"] >= check["floor_psnr_db"], (mode, check)
        assert isinstance(check["max_uint8_difference"], int)
        assert 0 <= check["mean_uint8_difference"] <= check["max_uint8_difference"]
        # The run's own test split (builtin, 4 test images of 32 px), not generated images.
        assert check["images"] == {
            "source": "test split",
            "dataset": "builtin",
            "domain": "a",
            "count": 4,
            "sizes": [[32, 32]],
        }
    # float16 rounds weights only: nearly the float model; the int8 kinds lose more.
    figures = {m: sources.read_export_info(p)["check"] for m, p in paths.items()}
    assert figures["float16"]["max_uint8_difference"] <= 2
    assert figures["float16"]["psnr_db"] > max(figures["dynamic"]["psnr_db"], 50)
    # The plain float32 file keeps its tolerance check, and no quantization.
    plain = sources.read_export_info(quantized["files"]["tflite"])
    assert plain["quantization"] is None and plain["precision"] == "float32"
    assert plain["check"]["max_uint8_difference"] <= exporting.CHECK_TOLERANCE


def test_sizes_follow_the_weights_bytes(quantized):
    """float16 weights take half the bytes of float32, int8 a quarter. The tiny model's weights
    are ~half of its float32 file (the rest is the graph: ops, shapes, the uint8 table), so the
    bounds here are looser than the paper generator's measured 0.50x and 0.25x."""
    float32 = os.path.getsize(quantized["files"]["tflite"])
    ratio = {mode: os.path.getsize(path) / float32 for mode, path in quantized["paths"].items()}
    assert 0.45 < ratio["float16"] < 0.65, ratio
    assert 0.2 < ratio["dynamic"] < 0.45, ratio
    assert 0.2 < ratio["int8"] < 0.45, ratio


def test_every_entry_point_runs_a_quantized_file(quantized, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for name, (height, width) in {"a.png": (37, 53), "b.png": (32, 32)}.items():
        (inputs / name).write_bytes(fixtures.encode(fixtures.random_image(height, width, 1), "PNG"))
    batch = np.stack([fixtures.random_image(45, 30, seed=s) for s in (0, 1)])
    for mode, path in quantized["paths"].items():
        translator = cyclegan_tf.load(path)  # sources.load, what translate/demo/video use
        assert (translator.kind, translator.precision) == ("tflite", mode)
        out = translator(batch)
        assert out.shape == batch.shape and out.dtype == np.uint8
        one = translator(batch[0])
        assert one.shape == batch[0].shape and one.dtype == np.uint8
        raw = sources.open_file(path)(batch)  # the file's own signature, unchanged
        assert raw["translated"].dtype == np.uint8 and raw["translated_float"].dtype == np.float32
        np.testing.assert_array_equal(raw["translated"], out)
        summary = translator.translate_files(str(inputs), str(tmp_path / mode), verbose=False)
        assert not summary.failed and len(summary.written) == 2
        with PIL.Image.open(os.path.join(tmp_path, mode, "a.png")) as written:
            assert (written.size, written.mode) == ((53, 37), "RGB")


def test_a_file_below_its_floor_is_deleted_with_a_one_line_error(shared_run, tmp_path, monkeypatch):
    monkeypatch.setitem(exporting.QUANTIZED_PSNR_FLOORS, "dynamic", 200.0)  # unreachable
    export_dir = tmp_path / "models"
    with pytest.raises(exporting.ExportCheckError) as caught:
        exporting.export_run(
            shared_run["run_dir"],
            str(export_dir),
            directions=("a2b",),
            formats="saved_model,tflite",
            quantize="dynamic",
        )
    message = str(caught.value)
    assert "\n" not in message and "below its floor of 200 dB; it was deleted" in message
    assert message.startswith("The dynamic TFLite export is ") and "4 test split images" in message
    assert isinstance(caught.value, errors.UserError)  # the CLI: this line, exit code 2
    assert os.listdir(export_dir) == []  # neither the file nor the SavedModel, nor staging


def test_quantize_needs_the_tflite_format_and_a_known_mode(shared_run, tmp_path):
    for formats in ("saved_model", "saved_model,onnx"):
        with pytest.raises(errors.ConfigError, match="--quantize=int8 applies to TFLite files"):
            cyclegan_tf.export(
                shared_run["run_dir"], str(tmp_path), formats=formats, quantize="int8"
            )
    with pytest.raises(errors.ConfigError, match="quantize must be one of float16, dynamic, int8"):
        cyclegan_tf.export(shared_run["run_dir"], str(tmp_path), formats="tflite", quantize="int4")
    assert os.listdir(tmp_path) == []


def test_unreadable_run_images_int8_fails_at_once_and_the_check_falls_back(shared_run, tmp_path):
    run_dir = str(tmp_path / "run")
    shutil.copytree(shared_run["run_dir"], run_dir)
    config_path = os.path.join(run_dir, rundir.CONFIG_FILE)
    with open(config_path) as f:
        config = json.load(f)
    config["data"]["dataset"] = str(tmp_path / "moved")  # the images are gone
    with open(config_path, "w") as f:
        json.dump(config, f)
    export_dir = str(tmp_path / "models")
    with pytest.raises(errors.DataError) as caught:
        exporting.export_run(run_dir, export_dir, formats="tflite", quantize="int8")
    message = str(caught.value)
    assert "\n" not in message and message.startswith("--quantize=int8 calibrates on the run's")
    assert "moved" in message and "--dataset=" in message and "--quantize=dynamic" in message
    assert not os.path.exists(export_dir) or os.listdir(export_dir) == []

    # dynamic needs no images: its check falls back to the generated ones, and says why.
    path = exporting.export_run(
        run_dir, export_dir, directions=("a2b",), formats="tflite", quantize="dynamic"
    )["tflite"]["a2b"]
    images = sources.read_export_info(path)["check"]["images"]
    assert images["source"] == "generated" and "moved" in images["why_not_test_split"]
    assert images["count"] == len(exporting.CHECK_SIZES) * exporting.CHECK_IMAGES_PER_SIZE

    # --dataset reads other images: int8 of the same run calibrates on them.
    path = exporting.export_run(
        run_dir,
        export_dir,
        directions=("a2b",),
        formats="tflite",
        quantize="int8",
        dataset="builtin",
    )["tflite"]["a2b"]
    info = sources.read_export_info(path)
    assert info["check"]["images"]["source"] == "test split"
    assert info["config"]["data"]["dataset"] == str(tmp_path / "moved")  # the run's, as trained
