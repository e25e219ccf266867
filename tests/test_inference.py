"""Tests for cyclegan_tf.inference: mirror padding, any-size translation, decoding, and `translate`
with run directories and exported SavedModels (plus the CLI's exit codes, marked slow)."""

import os
import subprocess
import sys

import fixtures
import numpy as np
import pytest
import tensorflow as tf

from cyclegan_tf import checkpoints, export, generators, inference, visualize


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def _float(images):
    return images.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def _expected_png_pixels(generator, data):
    """What translating encoded image `data` must give: [H, W, 3] uint8."""
    image = tf.io.decode_image(data, channels=3, expand_animations=False).numpy()
    return visualize.to_uint8(inference.pad_run_crop(generator, _float(image[None]), 4)[0])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("inference")
    run_dir = str(root / "run")
    model = fixtures.make_run(run_dir)
    inputs = root / "inputs"
    inputs.mkdir()
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
    return {"model": model, "run_dir": run_dir, "inputs": str(inputs), "files": files}


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    export_dir = str(tmp_path_factory.mktemp("exported"))
    return export_dir, export.export_run(run["run_dir"], export_dir)


# -- padding and conversions -----------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_mirror_indices_match_numpy_reflect_for_any_width(size):
    axis = np.arange(size)
    for before in range(0, 13):
        for after in range(0, 13):
            got = inference.mirror_indices(size, before, after).numpy()
            want = np.pad(axis, (before, after), mode="reflect" if size > 1 else "edge")
            np.testing.assert_array_equal(got, want, err_msg=f"{size} {before} {after}")
    if size > 1:  # within the image, exactly tf.pad's REFLECT (what the issue asks for)
        images = tf.reshape(tf.range(4 * size * size * 3), [4, size, size, 3])
        pad = size - 1
        np.testing.assert_array_equal(
            inference.mirror_pad(images, pad, pad, 0, pad),
            tf.pad(images, [[0, 0], [pad, pad], [0, pad], [0, 0]], mode="REFLECT"),
        )


def test_pad_run_crop_keeps_any_size_and_equals_the_padded_model():
    generator = generators.build_generator("resnet_6blocks", ngf=8)
    for height, width in [(1, 1), (5, 7), (8, 8), (37, 53)]:
        images = _float(fixtures.random_image(height, width, seed=height)[None])
        out = inference.pad_run_crop(generator, images, 4)
        assert out.shape == (1, height, width, 3)
        assert np.all(np.abs(out.numpy()) <= 1)
    # 37x53 -> 40x56, centred: 1 above, 2 below, 1 left, 2 right, then the model, then a crop.
    padded = np.pad(images, [(0, 0), (1, 2), (1, 2), (0, 0)], mode="reflect")
    want = generator(padded, training=False).numpy()[:, 1:38, 1:54]
    assert np.abs(out.numpy() - want).max() <= 1e-6


def test_unet_pads_small_images_to_its_multiple():
    generator = generators.build_generator("unet_128", ngf=8)
    multiple = generators.size_multiple("unet_128")
    assert inference.padded_size(5, multiple) == 128 and inference.padded_size(129, multiple) == 256
    for height, width in [(5, 7), (130, 100)]:
        out = inference.pad_run_crop(
            generator, _float(fixtures.random_image(height, width, seed=0)[None]), multiple
        )
        assert out.shape == (1, height, width, 3)


def test_uint8_conversions_are_exact_inside_graphs():
    values = np.arange(256, dtype=np.uint8)
    to_float = tf.function(inference.uint8_to_float)
    np.testing.assert_array_equal(to_float(tf.constant(values)).numpy(), _float(values))
    floats = np.concatenate(
        [np.random.default_rng(0).uniform(-1.2, 1.2, 10_000), [-1, 1, 0, 1 / 255, -1 / 255]]
    ).astype(np.float32)
    to_uint8 = tf.function(inference.float_to_uint8)
    np.testing.assert_array_equal(to_uint8(tf.constant(floats)).numpy(), visualize.to_uint8(floats))


def test_decode_rgb_makes_rgb_from_any_format_and_names_undecodable_bytes():
    gray = fixtures.random_image(6, 4, seed=0, channels=1)
    rgba = fixtures.random_image(6, 4, seed=1, channels=4)
    np.testing.assert_array_equal(
        inference.decode_rgb(fixtures.encode(gray, "PNG")), np.repeat(gray, 3, axis=-1)
    )
    np.testing.assert_array_equal(inference.decode_rgb(fixtures.encode(rgba, "PNG")), rgba[..., :3])
    for fmt in ("JPEG", "BMP", "GIF"):
        assert inference.decode_rgb(
            fixtures.encode(fixtures.random_image(6, 4, seed=2), fmt)
        ).shape == (6, 4, 3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="Could not decode image 3"):
        inference.decode_rgb(b"<html>not an image</html>", 3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="Invalid PNG data"):
        inference.decode_rgb(fixtures.encode(rgba, "PNG")[:60])


def test_translate_encoded_handles_a_batch_of_different_sizes():
    generator = generators.build_generator("resnet_6blocks", ngf=8)
    translator = inference.Translator(generator, 4)
    data = [
        fixtures.encode(fixtures.random_image(9, 13, seed=0), "PNG"),
        fixtures.encode(fixtures.random_image(30, 4, seed=1, channels=1), "PNG"),
    ]
    pngs = translator.translate_encoded(tf.constant(data))["images_bytes"].numpy()
    for png, source in zip(pngs, data):
        np.testing.assert_array_equal(
            tf.io.decode_png(png).numpy(), _expected_png_pixels(generator, source)
        )


# -- files -----------------------------------------------------------------------------------


def test_find_images_takes_a_file_a_folder_or_a_glob(run):
    inputs = run["inputs"]
    images = sorted(os.path.join(inputs, n) for n in run["files"] if not n.endswith(".txt"))
    assert inference.find_images(inputs) == images
    assert inference.find_images(os.path.join(inputs, "*.png")) == [
        os.path.join(inputs, n) for n in ("a.png", "gray.png", "rgba.png")
    ]
    assert inference.find_images(os.path.join(inputs, "notes.txt")) == [
        os.path.join(inputs, "notes.txt")  # named explicitly: tried, and reported if it fails
    ]
    with pytest.raises(ValueError, match="No input images found"):
        inference.find_images(os.path.join(inputs, "*.tiff"))


def test_output_names_keep_the_base_name_and_refuse_to_overwrite_inputs(tmp_path):
    files = ["in/a.jpg", "in/cat.bmp", "in/cat.gif", "in/b.png"]
    assert inference.output_names(files, "out") == [
        "out/a.png",
        "out/cat.bmp.png",
        "out/cat.gif.png",
        "out/b.png",
    ]
    _write(tmp_path / "b.png", b"")
    with pytest.raises(ValueError, match="would overwrite an input"):
        inference.output_names([str(tmp_path / "b.png")], str(tmp_path))
    with pytest.raises(ValueError, match="same output name"):
        inference.output_names(["x/a.png", "y/a.png"], "out")


def test_translate_from_a_run_directory(run, tmp_path, capsys):
    out = str(tmp_path / "out")
    summary = inference.translate(run["run_dir"], run["inputs"], out, direction="a2b")

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
    inference.translate(run["run_dir"], run["inputs"], from_run, verbose=False)
    # The version directory, the model directory (newest version) and the base directory.
    for i, model in enumerate([paths["a2b"], os.path.dirname(paths["a2b"]), export_dir]):
        out = str(tmp_path / f"saved_{i}")
        summary = inference.translate(model, run["inputs"], out, verbose=False)
        assert len(summary.written) == 6 and len(summary.failed) == 1
        for name in os.listdir(from_run):
            with (
                open(os.path.join(from_run, name), "rb") as a,
                open(os.path.join(out, name), "rb") as b,
            ):
                assert a.read() == b.read(), name

    out = str(tmp_path / "b2a")
    single = os.path.join(run["inputs"], "a.png")
    summary = inference.translate(export_dir, single, out, direction="b2a", verbose=False)
    with open(summary.written[0], "rb") as f:
        got = tf.io.decode_png(f.read()).numpy()
    want = _expected_png_pixels(run["model"].g_ba, run["files"]["a.png"])
    np.testing.assert_array_equal(got, want)


def test_translate_reports_unusable_arguments_in_one_line(run, exported, tmp_path):
    export_dir, paths = exported
    inputs, out = run["inputs"], str(tmp_path / "out")
    with pytest.raises(ValueError, match="translates a2b, not b2a"):
        inference.translate(paths["a2b"], inputs, out, direction="b2a")
    with pytest.raises(ValueError, match="--checkpoint applies to run directories"):
        inference.translate(export_dir, inputs, out, checkpoint="3")
    with pytest.raises(ValueError, match="neither a run directory"):
        inference.translate(str(tmp_path), inputs, out)
    with pytest.raises(ValueError, match="No input images found"):
        inference.translate(run["run_dir"], str(tmp_path / "missing" / "*.jpg"), out)
    with pytest.raises(ValueError, match="would overwrite an input"):
        inference.translate(run["run_dir"], inputs, inputs)
    with pytest.raises(ValueError, match="direction must be a2b or b2a"):
        inference.translate(run["run_dir"], inputs, out, direction="ab")
    with pytest.raises(checkpoints.CheckpointError, match="not found"):
        inference.translate(run["run_dir"], inputs, out, checkpoint="7")
    with pytest.raises(ValueError, match="--precision applies to run directories"):
        inference.translate(export_dir, inputs, out, precision="float32")
    with pytest.raises(ValueError, match="precision must be one of"):
        inference.translate(run["run_dir"], inputs, out, precision="fp16")


def test_translate_a_run_directory_in_bfloat16(run, tmp_path):
    out = str(tmp_path / "bf16")
    source = os.path.join(run["inputs"], "a.png")
    summary = inference.translate(
        run["run_dir"], source, out, precision="mixed_bfloat16", verbose=False
    )
    with open(summary.written[0], "rb") as f:
        got = tf.io.decode_png(f.read()).numpy().astype(int)
    want = _expected_png_pixels(run["model"].g_ab, run["files"]["a.png"]).astype(int)
    # bfloat16 rounding moves a few pixels by a level or two; the float32 run model is exact.
    assert got.shape == want.shape and 0 < np.abs(got - want).max() <= 3


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
