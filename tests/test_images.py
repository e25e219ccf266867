"""Tests for cyclegan_tf.images: which files are images, decoding every format (WebP too) to RGB,
and uint8 <-> [-1, 1] conversions that agree exactly between graphs and numpy."""

import io

import fixtures
import numpy as np
import PIL.Image
import pytest
import tensorflow as tf

from cyclegan_tf import images


def _float(values):
    return values.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def _webp(image, **options):
    """`image` (uint8 [H, W, 1|3|4]) as WebP bytes; frames: more images for an animation."""
    frames = options.pop("frames", [])
    buffer = io.BytesIO()
    pil = [PIL.Image.fromarray(x.squeeze(-1) if x.shape[-1] == 1 else x) for x in [image, *frames]]
    pil[0].save(buffer, "WEBP", save_all=bool(frames), append_images=pil[1:], **options)
    return buffer.getvalue()


def test_image_files_are_known_by_their_extension_in_any_case():
    assert images.IMAGE_EXTENSIONS == (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
    for name in ("a.jpg", "b.JPEG", "dir/c.png", "d.Bmp", "e.gif", "f.webp", "g.WEBP"):
        assert images.is_image_file(name), name
    for name in ("notes.txt", "image.tiff", "png", "archive.png.zip", ".hidden"):
        assert not images.is_image_file(name), name


def test_uint8_conversions_are_exact_inside_graphs():
    values = np.arange(256, dtype=np.uint8)
    to_float = tf.function(images.uint8_to_float)
    np.testing.assert_array_equal(to_float(tf.constant(values)).numpy(), _float(values))
    np.testing.assert_array_equal(images.to_float(values), _float(values))
    floats = np.concatenate(
        [np.random.default_rng(0).uniform(-1.2, 1.2, 10_000), [-1, 1, 0, 1 / 255, -1 / 255]]
    ).astype(np.float32)
    to_uint8 = tf.function(images.float_to_uint8)
    np.testing.assert_array_equal(to_uint8(tf.constant(floats)).numpy(), images.to_uint8(floats))


def test_to_uint8_rounds_and_clips():
    x = np.array([-1.5, -1.0, 0.0, 0.999, 1.0, 2.0], np.float32)
    np.testing.assert_array_equal(images.to_uint8(x), [0, 0, 128, 255, 255, 255])


def test_pixels_to_float_clips_resampling_overshoot():
    pixels = tf.constant([-3.0, 0.0, 127.5, 255.0, 260.0])
    np.testing.assert_allclose(images.pixels_to_float(pixels).numpy(), [-1, -1, 0, 1, 1])


def test_decode_rgb_makes_rgb_from_any_format_and_names_undecodable_bytes():
    gray = fixtures.random_image(6, 4, seed=0, channels=1)
    rgba = fixtures.random_image(6, 4, seed=1, channels=4)
    np.testing.assert_array_equal(
        images.decode_rgb(fixtures.encode(gray, "PNG")), np.repeat(gray, 3, axis=-1)
    )
    np.testing.assert_array_equal(images.decode_rgb(fixtures.encode(rgba, "PNG")), rgba[..., :3])
    for fmt in ("JPEG", "BMP", "GIF"):
        assert images.decode_rgb(
            fixtures.encode(fixtures.random_image(6, 4, seed=2), fmt)
        ).shape == (6, 4, 3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="Could not decode image 3"):
        images.decode_rgb(b"<html>not an image</html>", 3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="Invalid PNG data"):
        images.decode_rgb(fixtures.encode(rgba, "PNG")[:60])


@pytest.mark.parametrize("lossless", [True, False])
def test_decode_rgb_reads_webp_with_and_without_alpha_like_pil(lossless):
    rgb = fixtures.random_image(7, 5, seed=3)
    variants = {
        "rgb": rgb,
        "rgba": np.concatenate([rgb, fixtures.random_image(7, 5, seed=4, channels=1)], axis=-1),
        "gray": rgb[..., :1],
    }
    decode_in_graph = tf.function(images.decode_rgb)
    for name, image in variants.items():
        data = _webp(image, lossless=lossless)
        want = np.asarray(PIL.Image.open(io.BytesIO(data)).convert("RGB"))
        np.testing.assert_array_equal(images.decode_rgb(data), want, err_msg=name)
        np.testing.assert_array_equal(decode_in_graph(tf.constant(data)), want, err_msg=name)
        if lossless and name == "rgba":  # exact: the alpha channel is dropped, not blended
            np.testing.assert_array_equal(want, rgb)


def test_animated_webp_is_refused_instead_of_crashing_the_decoder():
    # TensorFlow 2.21's own decoder returns wrong pixels or corrupts the heap on these.
    first = fixtures.random_image(6, 4, seed=5)
    data = _webp(first, lossless=True, frames=[255 - first])
    for decode in (images.decode_rgb, tf.function(images.decode_rgb)):
        with pytest.raises(tf.errors.InvalidArgumentError, match="animated WebP is not supported"):
            decode(tf.constant(data), 2)
