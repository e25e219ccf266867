"""Tests for cyclegan_tf.data: decoding, preprocessing, deterministic resumable stream, errors."""

import json
import logging
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from cyclegan_tf import config as config_lib
from cyclegan_tf import data, synthetic


def _rgb(seed, h, w):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _write_formats(folder):
    """One image per format of interest, a non-image and a truncated JPEG; returns good names."""
    os.makedirs(os.path.join(folder, "sub"))
    Image.fromarray(_rgb(0, 40, 50)).save(os.path.join(folder, "rgb.jpg"), quality=90)
    Image.fromarray(_rgb(1, 40, 40)[..., 0]).save(os.path.join(folder, "gray.png"))
    Image.fromarray(_rgb(2, 40, 40)).convert("RGBA").save(os.path.join(folder, "rgba.png"))
    Image.fromarray(_rgb(3, 40, 40)).convert("P").save(os.path.join(folder, "palette.gif"))
    Image.fromarray(_rgb(4, 40, 40)).save(os.path.join(folder, "image.bmp"))
    wide = tf.constant(_rgb(5, 40, 40).astype(np.uint16) * 257)
    tf.io.write_file(os.path.join(folder, "deep16.png"), tf.io.encode_png(wide))
    Image.fromarray(_rgb(6, 10, 12)).save(os.path.join(folder, "sub", "small.png"))
    with open(os.path.join(folder, "rgb.jpg"), "rb") as f:
        jpeg = f.read()
    with open(os.path.join(folder, "truncated.jpg"), "wb") as f:
        f.write(jpeg[: len(jpeg) // 2])
    with open(os.path.join(folder, "notes.txt"), "w") as f:
        f.write("not an image")
    with open(os.path.join(folder, ".DS_Store"), "wb") as f:
        f.write(b"\0")
    return [
        "deep16.png",
        "gray.png",
        "image.bmp",
        "palette.gif",
        "rgb.jpg",
        "rgba.png",
        "sub/small.png",
    ]


def _write_flat(folder, values, size=8):
    """Flat grey images whose value identifies them (`values[i]` in file i)."""
    os.makedirs(folder)
    for i, v in enumerate(values):
        Image.fromarray(np.full((size, size, 3), v, np.uint8)).save(
            os.path.join(folder, f"{i:03d}.png")
        )


@pytest.fixture
def formats_dir(tmp_path):
    """trainA: every format (7 good images), a truncated JPEG, a .txt; trainB: 3; test: 2 and 1."""
    root = tmp_path / "formats"
    good = _write_formats(str(root / "trainA"))
    _write_flat(str(root / "trainB"), [10, 20, 30])
    _write_flat(str(root / "testA"), [40, 50], size=20)
    _write_flat(str(root / "testB"), [60], size=20)
    return root, good


def _config(dataset, **overrides):
    values = dict(dataset=str(dataset), load_size=36, crop_size=32, batch_size=2)
    values.update(overrides)
    return config_lib.DataConfig(**values)


def _batches(ds):
    return [tuple(x.numpy() for x in batch) for batch in ds]


# ----------------------------------------------------------------------------------------------
# Folders: decoding and bad files


def test_folder_decodes_all_formats_and_skips_bad_files(formats_dir, caplog):
    root, good = formats_dir
    with caplog.at_level(logging.WARNING):
        u = data.load(_config(root), seed=0)
    assert (u.kind, u.num_a, u.num_b, u.has_test) == ("folder", 7, 3, True)
    assert u.train_names("a") == tuple(good)
    text = caplog.text
    assert "truncated.jpg" in text and "Skipped 1 of 8 images" in text
    assert "Ignored 1 file(s)" in text and "notes.txt" in text
    assert ".DS_Store" not in text


def test_file_checks_decode_each_file_once_and_check_changed_files_again(
    formats_dir, tmp_path, monkeypatch, caplog
):
    root, good = formats_dir
    decoded = []
    decodable = data._decodable
    monkeypatch.setattr(data, "_decodable", lambda paths: decoded.append(paths) or decodable(paths))
    record = str(tmp_path / "file_checks.json")
    checks = data.FileChecks.read(record)  # no record yet: an empty one
    first = data.load(_config(root), seed=0, file_checks=checks)
    checks.save_to(record)
    assert [len(paths) for paths in decoded] == [8, 3]  # trainA (with the truncated JPEG), trainB
    list(first.test("a"))  # a split checked later is recorded too (the record is saved from now)
    assert len(json.load(open(record))["files"]) == 8 + 3 + 2

    # A second start decodes nothing, and still skips (and names) the file that does not decode.
    decoded.clear()
    with caplog.at_level(logging.WARNING):
        second = data.load(_config(root), seed=0, file_checks=data.FileChecks.read(record))
        list(second.test("a"))
    assert decoded == []
    assert second.train_names("a") == first.train_names("a") == tuple(good)
    assert "truncated.jpg" in caplog.text and "Skipped 1 of 8 images" in caplog.text

    # A file changed since (here truncated in place) is decoded again, and only that one.
    changed = root / "trainA" / "rgb.jpg"
    changed.write_bytes(changed.read_bytes()[:300])
    third = data.load(_config(root), seed=0, file_checks=data.FileChecks.read(record))
    assert decoded == [[str(changed)]]
    assert "rgb.jpg" not in third.train_names("a") and third.num_a == 6
    # An unreadable or foreign record is an empty one: everything is decoded again.
    (tmp_path / "file_checks.json").write_text('{"name": "something else"}')
    decoded.clear()
    data.load(_config(root), seed=0, file_checks=data.FileChecks.read(record))
    assert [len(paths) for paths in decoded] == [8, 3]


def test_decode_converts_every_format_to_rgb_uint8(formats_dir):
    root, good = formats_dir
    for name in good:
        image = data._decode(tf.io.read_file(str(root / "trainA" / name)))
        assert image.dtype == tf.uint8 and image.shape[-1] == 3, name
    deep = data._decode(tf.io.read_file(str(root / "trainA" / "deep16.png"))).numpy()
    assert np.array_equal(deep, _rgb(5, 40, 40))  # 16 bit scaled back to 8 exactly
    gray = data._decode(tf.io.read_file(str(root / "trainA" / "gray.png"))).numpy()
    assert np.array_equal(gray, np.repeat(_rgb(1, 40, 40)[..., :1], 3, axis=-1))
    rgba = data._decode(tf.io.read_file(str(root / "trainA" / "rgba.png"))).numpy()
    assert np.array_equal(rgba, _rgb(2, 40, 40))


def test_train_batches_shape_dtype_range(formats_dir):
    root, _ = formats_dir
    u = data.load(_config(root), seed=0)
    ds = u.train()
    assert ds.element_spec[0].shape == (2, 32, 32, 3)
    for real_a, real_b in _batches(ds.take(8)):  # covers every image, incl. the small one
        for x in (real_a, real_b):
            assert x.shape == (2, 32, 32, 3) and x.dtype == np.float32
            assert x.min() >= -1.0 and x.max() <= 1.0


@pytest.mark.parametrize(
    "preprocess, batch_size, shape",
    [
        ("resize_and_crop", 2, (2, 32, 32, 3)),
        ("crop", 2, (2, 32, 32, 3)),
        ("scale_width_and_crop", 2, (2, 32, 32, 3)),
        ("scale_width", 2, (2, 32, 32, 3)),
        ("none", 2, (2, 32, 32, 3)),
        ("scale_width", 1, (1, None, 36, 3)),
        ("none", 1, (1, None, None, 3)),
    ],
)
def test_preprocess_modes(formats_dir, preprocess, batch_size, shape):
    root, _ = formats_dir
    u = data.load(_config(root, preprocess=preprocess, batch_size=batch_size), seed=0)
    for real_a, _ in _batches(u.train(num_steps=7)):
        assert all(s is None or s == d for s, d in zip(shape, real_a.shape)), real_a.shape
        assert real_a.shape[1] % 4 == 0 and real_a.shape[2] % 4 == 0
        assert real_a.min() >= -1.0 and real_a.max() <= 1.0


def test_scale_width_keeps_aspect():
    image = tf.zeros([40, 50, 3])
    assert data._scale_width(image, 36, 20).shape == (28, 36, 3)
    assert data._scale_width(image, 36, 32).shape == (32, 36, 3)  # height >= crop
    # Rounds half to even like the official Python round(): 10 / 4 = 2.5 -> 8.
    assert data._make_multiple(tf.zeros([10, 13, 3])).shape == (8, 12, 3)
    assert data._at_least(tf.zeros([10, 20, 3]), 32).shape == (32, 64, 3)


def test_flip_is_random_unless_no_flip(tmp_path):
    ramp = np.tile(np.linspace(0, 255, 32).astype(np.uint8)[None, :, None], (32, 1, 3))
    for split in ("trainA", "trainB"):
        os.makedirs(tmp_path / split)
        Image.fromarray(ramp).save(tmp_path / split / "ramp.png")
    for no_flip, expected in ((False, {True, False}), (True, {False})):
        cfg = _config(tmp_path, preprocess="crop", load_size=32, batch_size=1, no_flip=no_flip)
        flipped = {
            bool(a[0, 0, 0, 0] > a[0, 0, -1, 0])
            for a, _ in _batches(data.load(cfg, 0).train(num_steps=16))
        }
        assert flipped == expected


# ----------------------------------------------------------------------------------------------
# The unpaired, resumable stream


@pytest.fixture
def flat_dir(tmp_path):
    """|A| = 7, |B| = 3 flat images identified by their grey value."""
    root = tmp_path / "flat"
    _write_flat(str(root / "trainA"), [10 * (i + 1) for i in range(7)])
    _write_flat(str(root / "trainB"), [100 + 10 * i for i in range(3)])
    return root


def _ids(batches, domain):
    """Grey values (image identities) of the stream, sample by sample."""
    return [int(round((x[0, 0, 0] + 1) * 127.5)) for batch in batches for x in batch[domain]]


def _identity_config(root, **overrides):
    return _config(root, preprocess="crop", load_size=8, crop_size=8, no_flip=True, **overrides)


def test_restart_at_step_k_equals_uninterrupted(flat_dir, formats_dir):
    for root in (flat_dir, formats_dir[0]):
        u = data.load(_config(root, batch_size=2), seed=3)
        full = _batches(u.train(num_steps=12))  # 24 samples: A cycled 3+ times, B 8 times
        for k in (1, 5, 11):
            resumed = _batches(
                data.load(_config(root, batch_size=2), seed=3).train(start_step=k, num_steps=12 - k)
            )
            assert len(resumed) == 12 - k
            for x, y in zip(full[k:], resumed):
                assert np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1])


def test_epoch_is_max_domain_size_and_shorter_domain_cycles(flat_dir):
    u = data.load(_identity_config(flat_dir), seed=0)
    assert (u.num_a, u.num_b, u.epoch_size, u.steps_per_epoch) == (7, 3, 7, math.ceil(7 / 2))
    batches = _batches(u.train(num_steps=21))  # 42 samples: 6 passes of A, 14 of B
    a, b = _ids(batches, 0), _ids(batches, 1)
    a_passes = [a[i : i + 7] for i in range(0, 42, 7)]
    b_passes = [b[i : i + 3] for i in range(0, 42, 3)]
    assert all(sorted(p) == [10 * (i + 1) for i in range(7)] for p in a_passes)
    assert all(sorted(p) == [100, 110, 120] for p in b_passes)
    assert len({tuple(p) for p in a_passes}) > 1  # each pass reshuffled
    assert len({tuple(p) for p in b_passes}) > 1


def test_domains_shuffle_independently_and_seed_matters(tmp_path):
    values = [10 * (i + 1) for i in range(10)]
    _write_flat(str(tmp_path / "trainA"), values)
    _write_flat(str(tmp_path / "trainB"), values)
    a, b = (
        _ids(_batches(data.load(_identity_config(tmp_path), seed=0).train(num_steps=5)), d)
        for d in (0, 1)
    )
    assert sorted(a) == sorted(b) == values
    assert a != b
    other = _ids(_batches(data.load(_identity_config(tmp_path), seed=1).train(num_steps=5)), 0)
    assert other != a


def test_each_pass_is_a_permutation_and_every_start_step_resumes(tmp_path):
    values = [10 * (i + 1) for i in range(5)]
    _write_flat(str(tmp_path / "trainA"), values)
    _write_flat(str(tmp_path / "trainB"), values[:2])
    u = data.load(_identity_config(tmp_path, batch_size=1), seed=4)
    full = _batches(u.train(num_steps=20))  # 4 passes of A, 10 of B (index_shuffle per pass)
    a, b = _ids(full, 0), _ids(full, 1)
    a_passes = [tuple(a[i : i + 5]) for i in range(0, 20, 5)]
    assert all(sorted(p) == values for p in a_passes) and len(set(a_passes)) > 1
    assert all(sorted(b[i : i + 2]) == values[:2] for i in range(0, 20, 2))
    for k in range(1, 20):
        resumed = _batches(u.train(start_step=k, num_steps=20 - k))
        assert _ids(resumed, 0) == a[k:] and _ids(resumed, 1) == b[k:], k
    one = tmp_path / "one"  # a domain of one image: every pass is [0]
    _write_flat(str(one / "trainA"), [70])
    _write_flat(str(one / "trainB"), values)
    single = data.load(_identity_config(one), seed=0)
    assert set(_ids(_batches(single.train(num_steps=3)), 0)) == {70}


@pytest.mark.parametrize("pipelines, replicas", [(2, 2), (2, 4), (1, 2), (4, 4)])
def test_input_pipelines_together_yield_the_global_stream_disjointly(flat_dir, pipelines, replicas):
    u = data.load(_identity_config(flat_dir, batch_size=4), seed=5)
    start, steps = 3, 5
    full = _batches(u.train(start_step=start, num_steps=steps))
    local = replicas // pipelines  # replicas per pipeline (worker)
    parts = {}
    for p in range(pipelines):
        context = tf.distribute.InputContext(
            num_input_pipelines=pipelines, input_pipeline_id=p, num_replicas_in_sync=replicas
        )
        batches = _batches(u.train(start_step=start, num_steps=steps, input_context=context))
        assert len(batches) == steps * local  # this pipeline's replicas' batches only
        for k, batch in enumerate(batches):
            step, replica = k // local, p * local + k % local
            assert batch[0].shape[0] == 4 // replicas
            parts[(step, replica)] = batch
    assert sorted(parts) == [(s, r) for s in range(steps) for r in range(replicas)]
    for s, global_batch in enumerate(full):
        for domain in (0, 1):
            joined = np.concatenate([parts[s, r][domain] for r in range(replicas)])
            np.testing.assert_array_equal(joined, global_batch[domain])


def test_test_split_is_deterministic_and_named(formats_dir):
    root, _ = formats_dir
    u = data.load(_config(root, batch_size=2), seed=0)
    first = [(x.numpy(), n.numpy().decode()) for x, n in u.test("a")]
    second = [(x.numpy(), n.numpy().decode()) for x, n in u.test("a")]
    assert [n for _, n in first] == ["000.png", "001.png"] == list(u.test_names("a"))
    for (x, _), (y, _) in zip(first, second):
        assert x.shape == (32, 32, 3) and np.array_equal(x, y)
    # Flat 40 stays flat 40 after resizing 20 -> 32 (no crop, no flip, no jitter).
    np.testing.assert_allclose(first[0][0], 40 / 127.5 - 1, atol=1e-5)


def test_builtin_resolves_through_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(synthetic.CACHE_ENV, str(tmp_path))
    cfg = _config("builtin", builtin_size=32, builtin_num_train=5, builtin_num_test=2)
    u = data.load(cfg, seed=0, builtin_seed=7)
    assert (u.kind, u.num_a, u.num_b, u.has_test) == ("builtin", 5, 5, True)
    assert u.builtin_dir == data.builtin_path(cfg, 7) == u.root
    assert u.builtin_dir.startswith(str(tmp_path))
    a, b = synthetic.load_test_pairs(u.builtin_dir)
    test_a = np.stack([x.numpy() for x, _ in u.test("a")])
    np.testing.assert_allclose(test_a, a, atol=1e-6)  # test split at 32 px: untouched pixels
    real_a, real_b = next(iter(u.train()))
    assert real_a.shape == real_b.shape == (2, 32, 32, 3)


# ----------------------------------------------------------------------------------------------
# User errors: one line, naming the thing


def _message(excinfo):
    text = str(excinfo.value)
    assert "\n" not in text
    return text


def test_missing_folder(tmp_path):
    with pytest.raises(data.DataError) as e:
        data.load(_config(tmp_path / "nope"), seed=0)
    assert "nope does not exist" in _message(e) and "--dataset=builtin" in _message(e)


def test_missing_train_b(tmp_path):
    _write_flat(str(tmp_path / "trainA"), [1])
    with pytest.raises(data.DataError) as e:
        data.load(_config(tmp_path), seed=0)
    assert "has no trainB/ folder" in _message(e)


def test_a_required_folder_that_vanishes_while_read_is_an_error(tmp_path, monkeypatch):
    # trainB passed the first check, then is gone when its images are listed; the second check
    # (here made to pass, as if the folder came back in between) must not turn it into "no data".
    _write_flat(str(tmp_path / "trainA"), [1])
    monkeypatch.setattr(data.config_lib, "check_dataset_folder", lambda root: None)
    with pytest.raises(data.DataError) as e:
        data.load(_config(tmp_path), seed=0)
    assert "trainB is not a folder" in _message(e) and "Run again" in _message(e)


def test_train_a_without_images(tmp_path):
    os.makedirs(tmp_path / "trainA")
    (tmp_path / "trainA" / "readme.txt").write_text("x")
    _write_flat(str(tmp_path / "trainB"), [1])
    with pytest.raises(data.DataError) as e:
        data.load(_config(tmp_path), seed=0)
    assert "trainA contains no images" in _message(e)


def test_all_images_corrupt(tmp_path):
    os.makedirs(tmp_path / "trainA")
    for name in ("x.jpg", "y.png"):
        (tmp_path / "trainA" / name).write_bytes(b"garbage")
    _write_flat(str(tmp_path / "trainB"), [1])
    with pytest.raises(data.DataError) as e:
        data.load(_config(tmp_path), seed=0)
    assert "None of the 2 images" in _message(e) and "trainA" in _message(e)


def test_missing_test_split_fails_only_when_asked(flat_dir):
    u = data.load(_config(flat_dir), seed=0)
    assert not u.has_test
    with pytest.raises(data.DataError) as e:
        u.test("b")
    assert "testB has no images" in _message(e)


def test_crop_larger_than_load_is_rejected_by_config():
    with pytest.raises(ValueError) as e:
        config_lib.DataConfig(load_size=256, crop_size=300)
    assert "Received: crop_size=300 > load_size=256" in _message(e)


def test_unknown_tfds_config_lists_the_valid_ones():
    with pytest.raises(data.DataError) as e:
        data.load(_config("tfds:cycle_gan/horse2zebr"), seed=0)
    assert "'horse2zebr'" in _message(e) and "horse2zebra, monet2photo" in _message(e)
    with pytest.raises(data.DataError) as e:
        data.load(_config("tfds:mnist"), seed=0)
    assert "Only the TFDS cycle_gan builder" in _message(e)


def test_tfds_configs_come_from_tfds():
    configs = data.tfds_configs()
    assert {"horse2zebra", "monet2photo", "apple2orange", "facades"} <= set(configs)


# ----------------------------------------------------------------------------------------------
# TFDS


def test_tfds_offline_fails_fast_with_advice(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    cfg = _config("tfds:cycle_gan/horse2zebra", data_dir=str(tmp_path))
    # 1. The download host does not answer: no download is even attempted.
    monkeypatch.setattr(data, "_download_hosts", lambda builder: [("efrosgans.example", 443)])
    monkeypatch.setattr(data, "_unreachable_hosts", lambda hosts: "efrosgans.example: no DNS")

    def no_download(self, *args, **kwargs):
        raise AssertionError("download attempted")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_download)
    with pytest.raises(data.DataError) as e:
        data.load(cfg, seed=0)
    text = _message(e)
    assert "cycle_gan/horse2zebra is not in" in text and "could not be downloaded" in text
    assert "--dataset=/path/with/trainA_trainB" in text and "--dataset=builtin" in text
    # 2. The host answers but the download fails (connection reset, ...).
    monkeypatch.setattr(data, "_unreachable_hosts", lambda hosts: "")

    def broken_download(self, *args, **kwargs):
        raise ConnectionError("Connection reset by peer")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", broken_download)
    with pytest.raises(data.DataError) as e:
        data.load(cfg, seed=0)
    assert "could not be downloaded or prepared (ConnectionError: Connection reset" in _message(e)


def test_tfds_mock_data_gives_random_access_batches():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=5):
        u = data.load(_config("tfds:cycle_gan/horse2zebra"), seed=0)
        also = data.load(_config("cycle_gan/horse2zebra"), seed=0)
        assert (u.kind, u.name, u.num_a, u.num_b, u.has_test) == (
            "tfds",
            "tfds:cycle_gan/horse2zebra",
            5,
            5,
            True,
        )
        assert also.kind == "tfds"
        full = _batches(u.train(num_steps=6))
        resumed = _batches(u.train(start_step=4, num_steps=2))
        tests = [(x.numpy(), n.numpy().decode()) for x, n in u.test("b")]
    for real_a, real_b in full:
        assert real_a.shape == real_b.shape == (2, 32, 32, 3)
        assert real_a.min() >= -1 and real_a.max() <= 1
    for x, y in zip(full[4:], resumed):
        assert np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1])
    # The encoded images are held once, in a numpy array read by index (no tuple, no constant).
    items = u._train["a"].items
    assert isinstance(items, np.ndarray) and items.dtype == object and len(items) == 5
    assert [n for _, n in tests] == [f"testB_{i:05d}" for i in range(5)]
    assert all(x.shape == (32, 32, 3) for x, _ in tests)


def test_import_has_no_tfds_side_effect():
    code = "import sys, cyclegan_tf.data; print('tensorflow_datasets' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
