"""Tests for cyclegan_tf.inference: mirror padding, any-size translation, the Translator's
endpoints, and generators loaded from a run directory in the precision asked for."""

import os

import fixtures
import numpy as np
import pytest
import tensorflow as tf

from cyclegan_tf import checkpoints, errors, generators, images, inference, precision


def _float(images):
    return images.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def _expected_png_pixels(generator, data):
    """What translating encoded image `data` must give: [H, W, 3] uint8."""
    image = tf.io.decode_image(data, channels=3, expand_animations=False).numpy()
    return images.to_uint8(inference.pad_run_crop(generator, _float(image[None]), 4)[0])


# -- padding -----------------------------------------------------------------


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


def test_translate_encoded_handles_a_batch_of_different_sizes():
    generator = generators.build_generator("resnet_6blocks", ngf=8)
    translator = inference.Endpoints(generator, 4)
    data = [
        fixtures.encode(fixtures.random_image(9, 13, seed=0), "PNG"),
        fixtures.encode(fixtures.random_image(30, 4, seed=1, channels=1), "PNG"),
    ]
    pngs = translator.translate_encoded(tf.constant(data))["images_bytes"].numpy()
    for png, source in zip(pngs, data):
        np.testing.assert_array_equal(
            tf.io.decode_png(png).numpy(), _expected_png_pixels(generator, source)
        )


# -- run directories -------------------------------------------------------------------------


def test_load_run_computes_in_the_precision_asked_for_and_resolves_auto_here(tmp_path):
    run_dir = str(tmp_path / "run")
    fixtures.make_run(run_dir, precision="mixed_bfloat16")  # trained in bfloat16
    loaded = inference.load_run(run_dir, directions=("a2b",))
    assert loaded.precision == "float32"  # the default: whatever the run trained in
    assert loaded.generators["a2b"].compute_dtype == "float32"
    auto = inference.load_run(run_dir, directions=("b2a",), precision="auto")
    assert auto.precision == precision.resolve("auto").precision  # this machine's best
    assert set(auto.generators) == {"b2a"}
    with pytest.raises(errors.ConfigError, match="direction must be a2b or b2a"):
        inference.load_run(run_dir, directions=("ab",))
    with pytest.raises(errors.ConfigError, match="precision must be one of"):
        inference.load_run(run_dir, precision="fp16")


def test_load_run_falls_back_past_a_corrupt_latest_checkpoint(tmp_path, caplog):
    run = str(tmp_path / "run")
    model = fixtures.make_run(run, step=3, precision="float32")
    checkpoints.Checkpointer(model.checkpoint_objects(), run).save(5)
    data_file = os.path.join(run, "checkpoints", "ckpt-5.data-00000-of-00001")
    with open(data_file, "r+b") as f:
        f.truncate(100)
    loaded = inference.load_run(run, precision="float32")
    assert loaded.checkpoint.endswith("ckpt-3")
    assert "ckpt-5 could not be read" in caplog.text
    np.testing.assert_array_equal(
        loaded.generators["a2b"].weights[0].numpy(), model.g_ab.weights[0].numpy()
    )
