"""Tests for cyclegan_tf.translate: finding inputs, naming outputs, and translating files
(`Translator.translate_files`) from run directories, SavedModel exports and TFLite/ONNX files
(plus the CLI's exit codes, marked slow). The run and its exports are the session's `shared_run`."""

import os
import subprocess
import sys

import fixtures
import numpy as np
import pytest
import tensorflow as tf

import cyclegan_tf
from cyclegan_tf import checkpoints, images, inference, precision, sources, translate


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def _float(values):
    return values.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def _expected_png_pixels(generator, data):
    """What translating encoded image `data` must give: [H, W, 3] uint8."""
    image = tf.io.decode_image(data, channels=3, expand_animations=False).numpy()
    return images.to_uint8(inference.pad_run_crop(generator, _float(image[None]), 4)[0])


@pytest.fixture(scope="module")
def run(shared_run, tmp_path_factory):
    """The session's tiny run (`shared_run`, read-only) and input files of every kind."""
    inputs = tmp_path_factory.mktemp("inputs")
    files = {
        "a.png": fixtures.encode(fixtures.random_image(37, 53, seed=1), "PNG"),
        "gray.png": fixtures.encode(fixtures.random_image(20, 30, seed=2, channels=1), "PNG"),
        "rgba.png": fixtures.encode(fixtures.random_image(23, 17, seed=3, channels=4), "PNG"),
        "photo.jpg": fixtures.encode(fixtures.random_image(40, 44, seed=4), "JPEG"),
        "cat.bmp": fixtures.encode(fixtures.random_image(5, 7, seed=5), "BMP"),
        "cat.gif": fixtures.encode(fixtures.random_image(12, 9, seed=6), "GIF"),
        "bad.jpg": b"this is not a JPEG",
        "notes.txt": b"not an image, not picked up from a folder",
    }
    for name, data in files.items():
        _write(inputs / name, data)
    return {**shared_run, "inputs": str(inputs), "files": files}


@pytest.fixture(scope="module")
def exported(shared_run):
    """SavedModels of both directions (version 1), then a2b's TFLite and ONNX files (version 2)."""
    return shared_run["export_dir"], {**shared_run["saved_models"], **shared_run["files"]}


def _translate(
    model, inputs, output_dir, direction="a2b", checkpoint=None, precision="auto", verbose=True
):
    """What `cyclegan-tf translate` runs: open the model, translate the files."""
    translator = cyclegan_tf.load(model, direction, checkpoint=checkpoint, precision=precision)
    return translator.translate_files(inputs, output_dir, verbose=verbose)


# -- files -----------------------------------------------------------------------------------


def test_find_images_takes_a_file_a_folder_or_a_glob(run):
    inputs = run["inputs"]
    images = sorted(os.path.join(inputs, n) for n in run["files"] if not n.endswith(".txt"))
    assert translate.find_images(inputs) == images
    assert translate.find_images(os.path.join(inputs, "*.png")) == [
        os.path.join(inputs, n) for n in ("a.png", "gray.png", "rgba.png")
    ]
    assert translate.find_images(os.path.join(inputs, "notes.txt")) == [
        os.path.join(inputs, "notes.txt")  # named explicitly: tried, and reported if it fails
    ]
    with pytest.raises(ValueError, match="No input images found"):
        translate.find_images(os.path.join(inputs, "*.tiff"))


def test_output_names_keep_the_base_name_and_refuse_to_overwrite_inputs(tmp_path):
    files = ["in/a.jpg", "in/cat.bmp", "in/cat.gif", "in/b.png"]
    assert translate.output_names(files, "out") == [
        "out/a.png",
        "out/cat.bmp.png",
        "out/cat.gif.png",
        "out/b.png",
    ]
    _write(tmp_path / "b.png", b"")
    with pytest.raises(ValueError, match="would overwrite an input"):
        translate.output_names([str(tmp_path / "b.png")], str(tmp_path))
    with pytest.raises(ValueError, match="same output name"):
        translate.output_names(["x/a.png", "y/a.png"], "out")


def test_translate_from_a_run_directory(run, tmp_path, capsys):
    out = str(tmp_path / "out")
    summary = _translate(run["run_dir"], run["inputs"], out, direction="a2b", precision="float32")

    assert sorted(os.listdir(out)) == [
        "a.png",
        "cat.bmp.png",
        "cat.gif.png",
        "gray.png",
        "photo.png",
        "rgba.png",
    ]
    assert summary.written == [os.path.join(out, n) for n in sorted(os.listdir(out))]
    assert [os.path.basename(p) for p, _ in summary.failed] == ["bad.jpg"]
    assert "Could not decode image" in summary.failed[0][1]
    captured = capsys.readouterr()
    assert "bad.jpg" in captured.err and "Could not decode image" in captured.err
    assert "Translated 6 of 7 images (a2b)" in captured.out and "1 failed: bad.jpg" in captured.out
    assert "translated 7/7 images" in captured.out  # progress lines when not on a terminal

    outputs = {
        "a.png": "a.png",
        "gray.png": "gray.png",
        "rgba.png": "rgba.png",
        "photo.jpg": "photo.png",
        "cat.bmp": "cat.bmp.png",
        "cat.gif": "cat.gif.png",
    }
    for source, target in outputs.items():
        with open(os.path.join(out, target), "rb") as f:
            got = tf.io.decode_png(f.read()).numpy()
        want = _expected_png_pixels(run["model"].g_ab, run["files"][source])
        np.testing.assert_array_equal(got, want, err_msg=source)


def test_translate_from_saved_models_equals_the_run_directory(run, exported, tmp_path):
    export_dir, paths = exported
    from_run = str(tmp_path / "from_run")
    _translate(run["run_dir"], run["inputs"], from_run, verbose=False, precision="float32")
    # The version directory, the model directory (newest version) and the base directory.
    for i, model in enumerate([paths["a2b"], os.path.dirname(paths["a2b"]), export_dir]):
        out = str(tmp_path / f"saved_{i}")
        summary = _translate(model, run["inputs"], out, verbose=False)
        assert len(summary.written) == 6 and len(summary.failed) == 1
        for name in os.listdir(from_run):
            with (
                open(os.path.join(from_run, name), "rb") as a,
                open(os.path.join(out, name), "rb") as b,
            ):
                assert a.read() == b.read(), name

    out = str(tmp_path / "b2a")
    single = os.path.join(run["inputs"], "a.png")
    summary = _translate(export_dir, single, out, direction="b2a", verbose=False)
    with open(summary.written[0], "rb") as f:
        got = tf.io.decode_png(f.read()).numpy()
    want = _expected_png_pixels(run["model"].g_ba, run["files"]["a.png"])
    np.testing.assert_array_equal(got, want)


def test_translate_reports_unusable_arguments_in_one_line(run, exported, tmp_path):
    export_dir, paths = exported
    inputs, out = run["inputs"], str(tmp_path / "out")
    with pytest.raises(ValueError, match="translates a2b, not b2a"):
        _translate(paths["a2b"], inputs, out, direction="b2a")
    with pytest.raises(ValueError, match="--checkpoint applies to run directories"):
        _translate(export_dir, inputs, out, checkpoint="3")
    with pytest.raises(ValueError, match="neither a run directory"):
        _translate(str(tmp_path), inputs, out)
    with pytest.raises(ValueError, match="No input images found"):
        _translate(run["run_dir"], str(tmp_path / "missing" / "*.jpg"), out)
    with pytest.raises(ValueError, match="would overwrite an input"):
        _translate(run["run_dir"], inputs, inputs)
    with pytest.raises(ValueError, match="direction must be a2b or b2a"):
        _translate(run["run_dir"], inputs, out, direction="ab")
    with pytest.raises(checkpoints.CheckpointError, match="not found"):
        _translate(run["run_dir"], inputs, out, checkpoint="7")
    with pytest.raises(ValueError, match="--precision applies to run directories"):
        _translate(export_dir, inputs, out, precision="float32")
    with pytest.raises(ValueError, match="precision must be one of"):
        _translate(run["run_dir"], inputs, out, precision="fp16")


def test_translate_a_run_directory_in_bfloat16(run, tmp_path):
    out = str(tmp_path / "bf16")
    source = os.path.join(run["inputs"], "a.png")
    summary = _translate(run["run_dir"], source, out, precision="mixed_bfloat16", verbose=False)
    with open(summary.written[0], "rb") as f:
        got = tf.io.decode_png(f.read()).numpy().astype(int)
    want = _expected_png_pixels(run["model"].g_ab, run["files"]["a.png"]).astype(int)
    # bfloat16 rounding moves a few pixels by a level or two; the float32 run model is exact.
    assert got.shape == want.shape and 0 < np.abs(got - want).max() <= 3


def test_translate_with_tflite_and_onnx_files_equals_the_saved_model(run, exported, tmp_path):
    export_dir, paths = exported
    from_saved = str(tmp_path / "saved")
    _translate(paths["a2b"], run["inputs"], from_saved, verbose=False)
    for fmt in ("tflite", "onnx"):
        out = str(tmp_path / fmt)
        summary = _translate(paths[fmt], run["inputs"], out, verbose=False)
        assert summary.precision == "float32"
        assert len(summary.written) == 6 and [os.path.basename(p) for p, _ in summary.failed] == [
            "bad.jpg"
        ]
        assert "Could not decode image" in summary.failed[0][1]
        for name in sorted(os.listdir(from_saved)):
            with open(os.path.join(from_saved, name), "rb") as a:
                want = tf.io.decode_png(a.read()).numpy().astype(int)
            with open(os.path.join(out, name), "rb") as b:
                got = tf.io.decode_png(b.read()).numpy().astype(int)
            assert got.shape == want.shape and np.abs(got - want).max() <= 1, (fmt, name)
        with pytest.raises(ValueError, match="translates a2b, not b2a"):
            _translate(paths[fmt], run["inputs"], out, direction="b2a")
        with pytest.raises(ValueError, match="--precision applies to run directories"):
            _translate(paths[fmt], run["inputs"], out, precision="mixed_bfloat16")


def test_a_run_directory_translates_in_the_best_precision_of_this_machine(run, exported, tmp_path):
    single = os.path.join(run["inputs"], "a.png")
    for asked in (None, "auto"):
        out = str(tmp_path / str(asked))
        summary = _translate(run["run_dir"], single, out, precision=asked, verbose=False)
        assert summary.precision == precision.resolve("auto").precision
    # An export holds its precision: `auto` (the default) is accepted there and changes nothing.
    export_dir, paths = exported
    out = str(tmp_path / "export")
    summary = _translate(export_dir, single, out, precision="auto", verbose=False)
    assert summary.precision == sources.read_export_info(paths["a2b"])["precision"] == "float32"


@pytest.mark.slow
def test_cli_export_and_translate_exit_codes(run, tmp_path):
    def start(*args):
        return subprocess.Popen(
            [sys.executable, "-m", "cyclegan_tf.cli", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    procs = {
        "export": start(
            "export",
            f"--run_dir={run['run_dir']}",
            f"--export_dir={tmp_path}/m",
            "--precision=mixed_bfloat16",
        ),
        "translate": start(
            "translate",
            f"--model={run['run_dir']}",
            f"--input={run['inputs']}/*.jpg",
            f"--output={tmp_path}/out",
        ),
        "empty": start(
            "translate",
            f"--model={run['run_dir']}",
            f"--input={tmp_path}/nothing",
            f"--output={tmp_path}/out2",
        ),
    }
    results = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        results[name] = (proc.returncode, stdout, stderr)

    code, stdout, stderr = results["export"]
    assert code == 0, stderr
    assert f"Exported a2b (mixed_bfloat16): {tmp_path}/m/cyclegan_a2b/1" in stdout

    code, stdout, stderr = results["translate"]
    assert code == 1, stderr  # photo.jpg translated, bad.jpg skipped
    assert os.listdir(tmp_path / "out") == ["photo.png"]
    assert "skipped" in stderr and "bad.jpg" in stderr
    assert "Translated 1 of 2 images (a2b)" in stdout

    code, stdout, stderr = results["empty"]
    assert code == 2
    assert stderr.strip().splitlines()[-1].startswith("cyclegan-tf: error: No input images found")


def test_cli_translate_with_a_tflite_file_keeps_stderr_clean(exported, run, tmp_path):
    # LiteRT announces its XNNPACK delegate on file descriptor 2; translate filters it like
    # TensorFlow's start-up notices, so a successful run prints nothing there.
    _, paths = exported
    inputs = tmp_path / "in"
    inputs.mkdir()
    _write(inputs / "a.png", run["files"]["a.png"])
    proc = fixtures.run_cli(
        "translate", f"--model={paths['tflite']}", f"--input={inputs}", f"--output={tmp_path}/out"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr == ""
    assert os.listdir(tmp_path / "out") == ["a.png"]


def test_a_video_from_saved_model_tflite_and_onnx_equals_the_run_directory(run, exported, tmp_path):
    pytest.importorskip("av", reason='needs PyAV: pip install "cyclegan-tf[video]"')
    import av

    _, paths = exported
    source = str(tmp_path / "odd.mkv")  # FFV1 in bgr0, lossless: frames compare exactly
    fixtures.make_video(source, 35, 27, frames=4, codec="ffv1", pix_fmt="bgr0", audio="flac")

    def frames(path):
        with av.open(path) as container:
            return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])

    from_run = sources.load(run["run_dir"], precision="float32").translate_files(
        source, str(tmp_path / "run"), verbose=False
    )
    reference = frames(from_run.written[0])
    assert reference.shape == (4, 27, 35, 3)
    for fmt in ("a2b", "tflite", "onnx"):  # the a2b SavedModel, then the files
        summary = sources.load(paths[fmt]).translate_files(
            source, str(tmp_path / fmt), verbose=False
        )
        got = frames(summary.written[0])
        # The SavedModel runs the same float32 graph; LiteRT and onnxruntime are within a uint8
        # level of it (what `export.check_file` checks when it writes them).
        limit = 0 if fmt == "a2b" else 1
        assert np.abs(got.astype(int) - reference.astype(int)).max() <= limit, fmt
