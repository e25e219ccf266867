"""Tests for cyclegan_tf.synthetic: determinism, cache, pairing, and that the score separates."""

import os

import numpy as np
import pytest

from cyclegan_tf import synthetic


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv(synthetic.CACHE_ENV, str(root))
    return root


def _files(path):
    out = {}
    for split in synthetic.SPLITS:
        for name in sorted(os.listdir(os.path.join(path, split))):
            with open(os.path.join(path, split, name), "rb") as f:
                out[f"{split}/{name}"] = f.read()
    return out


def test_generate_is_deterministic_and_seeded(tmp_path):
    kwargs = dict(size=32, num_train=3, num_test=2)
    synthetic.generate(str(tmp_path / "x"), seed=5, **kwargs)
    synthetic.generate(str(tmp_path / "y"), seed=5, **kwargs)
    synthetic.generate(str(tmp_path / "z"), seed=6, **kwargs)
    x, y, z = (_files(str(tmp_path / n)) for n in "xyz")
    assert sorted(x) == sorted(
        [f"{s}/{i:04d}.png" for s in synthetic.SPLITS for i in range(3 if "train" in s else 2)]
    )
    assert x == y
    assert all(x[k] != z[k] for k in x)


def test_builtin_dir_caches_and_keys_by_arguments(cache, monkeypatch):
    path = synthetic.builtin_dir(seed=0, size=32, num_train=2, num_test=2)
    assert os.path.dirname(path) == str(cache)
    assert sorted(os.listdir(path)) == ["info.json", "testA", "testB", "trainA", "trainB"]
    assert [n for n in os.listdir(cache) if n.startswith(".")] == []  # no temporaries left

    def fail(*args, **kwargs):
        raise AssertionError("regenerated a cached dataset")

    monkeypatch.setattr(synthetic, "generate", fail)
    assert synthetic.builtin_dir(seed=0, size=32, num_train=2, num_test=2) == path
    with pytest.raises(AssertionError, match="regenerated"):
        synthetic.builtin_dir(seed=0, size=32, num_train=3, num_test=2)  # another key


def test_killed_generation_leaves_no_dataset(cache, monkeypatch):
    real_generate = synthetic.generate

    def killed(path, **kwargs):
        os.makedirs(os.path.join(path, "trainA"))  # half written, then "killed"
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "generate", killed)
    with pytest.raises(KeyboardInterrupt):
        synthetic.builtin_dir(seed=0, size=32, num_train=2, num_test=1)
    assert os.listdir(cache) == []
    # A temporary of a process that died without cleaning up is removed by the next generation.
    stale = (
        cache / f".builtin-v{synthetic.FORMAT_VERSION}-seed0-size32-train2-test1.tmp-999999999-x"
    )
    stale.mkdir()
    monkeypatch.setattr(synthetic, "generate", real_generate)
    path = synthetic.builtin_dir(seed=0, size=32, num_train=2, num_test=1)
    assert os.listdir(cache) == [os.path.basename(path)]


def test_test_split_is_paired_and_train_split_is_not(tmp_path):
    synthetic.generate(str(tmp_path), seed=0, size=64, num_train=8, num_test=8)
    a, b = synthetic.load_test_pairs(str(tmp_path))
    assert a.shape == b.shape == (8, 64, 64, 3) and a.dtype == np.float32
    assert a.min() >= -1 and a.max() <= 1
    # Paired: same geometry (object masks), different colours.
    assert synthetic.score(a, b)["mask_iou"] > 0.95
    assert np.abs(a - b).mean() > 0.05
    train_a = np.stack(
        [synthetic._read(str(tmp_path / "trainA" / f"{i:04d}.png")) for i in range(8)]
    )
    train_b = np.stack(
        [synthetic._read(str(tmp_path / "trainB" / f"{i:04d}.png")) for i in range(8)]
    )
    assert synthetic.score(train_a, train_b)["mask_iou"] < 0.5  # different scenes


def test_domain_b_rotates_hue_and_adds_bands():
    scene = synthetic.sample_scene(np.random.default_rng(3), 64)
    a = synthetic.render(scene, "a").astype(float) / 255
    b = synthetic.render(scene, "b").astype(float) / 255
    mask = synthetic._object_mask(a[None])[0]
    assert mask.sum() > 100
    # Warm (red > blue) in A, cool (blue > red) in B, on every object pixel.
    assert np.all(a[mask][:, 0] > a[mask][:, 2])
    assert np.all(b[mask][:, 2] > b[mask][:, 0])
    # Bands: B's brightness varies inside the objects, A's fill is flat per object.
    assert b[mask].max(axis=1).std() > 2 * a[mask].max(axis=1).std()
    # The background (pixels at least one pixel away from any shape) is unchanged.
    near = synthetic._box((mask | synthetic._object_mask(b[None])[0])[None, ..., None] * 1.0, 3)
    background = near[0, ..., 0] == 0
    assert background.sum() > 1000
    assert np.array_equal(a[background], b[background])


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    path = tmp_path_factory.mktemp("score")
    synthetic.generate(str(path), seed=0, size=64, num_train=1, num_test=20)
    a, b = synthetic.load_test_pairs(str(path))
    scenes = [
        synthetic.sample_scene(synthetic._rng(0, synthetic._STREAM_TEST, i), 64) for i in range(20)
    ]
    wrong_phase = np.stack([synthetic.render(s, "b", band_phase=0.5) for s in scenes])
    return a, b, wrong_phase.astype(np.float32) / 127.5 - 1


def test_score_oracle_is_perfect(pairs):
    _, b, _ = pairs
    s = synthetic.score(b, b)
    assert s == {"l1": 0.0, "psnr": 100.0, "mask_iou": 1.0, "color_error": 0.0, "stripe_error": 0.0}


def test_score_identity_is_clearly_bad(pairs):
    a, b, _ = pairs
    s = synthetic.score(a, b)
    assert s["l1"] > 0.1 and s["psnr"] < 16
    assert s["color_error"] > 0.4  # the hue rotation
    assert s["stripe_error"] > 0.9  # no bands
    assert s["mask_iou"] > 0.95  # but the geometry is right


def test_imperfect_translations_beat_identity(pairs):
    a, b, wrong_phase = pairs
    identity = synthetic.score(a, b)
    blurred = synthetic._box((b + 1) / 2, 3) * 2 - 1
    shifted = np.roll(b, 1, axis=2)
    for name, x in {"blurred": blurred, "shifted": shifted, "wrong_phase": wrong_phase}.items():
        s = synthetic.score(x, b)
        assert s["l1"] < identity["l1"] / 2, name
        assert s["psnr"] > identity["psnr"] + 5, name
        assert s["color_error"] < identity["color_error"] / 10, name
        assert s["stripe_error"] < 0.5, name
        assert s["mask_iou"] > 0.8, name
    # Phase-free terms: the wrong stripe phase costs nothing there.
    s = synthetic.score(wrong_phase, b)
    assert s["stripe_error"] < 0.05 and s["color_error"] < 0.05


def test_score_with_source_adds_identity_and_formats(pairs, tmp_path):
    a, b, _ = pairs
    s = synthetic.score(b[:3], b[:3], source=a[:3])
    assert s["identity/l1"] == synthetic.score(a[:3], b[:3])["l1"]
    table = synthetic.format_scores(s)
    assert "color_error" in table and "identity" in table
    with pytest.raises(ValueError, match="same shape"):
        synthetic.score(a[:2], b[:3])


def test_score_identity_baseline(tmp_path):
    synthetic.generate(str(tmp_path), seed=1, size=32, num_train=1, num_test=3)
    a, b = synthetic.load_test_pairs(str(tmp_path))
    assert synthetic.score_identity_baseline(str(tmp_path)) == synthetic.score(a, b)
