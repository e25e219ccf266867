"""Tests for cyclegan_tf.metrics: Inception features on a stand-in graph, FID and KID against
independent references, and finding / downloading the graph file offline."""

import io
import os
import tarfile
import urllib.error

import fixtures
import numpy as np
import pytest
import tensorflow as tf

from cyclegan_tf import metrics


@pytest.fixture(scope="module")
def graph_path(tmp_path_factory):
    return fixtures.write_standin_inception_graph(tmp_path_factory.mktemp("standin"))


@pytest.fixture(scope="module")
def features(graph_path):
    with metrics.InceptionFeatures(graph_path, batch_size=3) as extractor:
        yield extractor


def _direct(graph_path, images):
    """The stand-in run as frozen: one [H, W, 3] float image per run at `Cast:0` -> [N, 2048]."""
    graph_def = tf.compat.v1.GraphDef()
    with open(graph_path, "rb") as f:
        graph_def.ParseFromString(f.read())
    graph = tf.compat.v1.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    with tf.compat.v1.Session(graph=graph) as session:
        return np.stack(
            [session.run("pool_3:0", {"Cast:0": np.float32(x)}).reshape(-1) for x in images]
        )


def _images(n, height, width, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, height, width, 3), np.uint8)


def _one_line(error):
    return "\n" not in str(error.value)


# -- InceptionFeatures ---------------------------------------------------------------------------


def test_features_batches_every_image_and_equal_the_graph_run_image_by_image(features, graph_path):
    images = _images(7, 20, 24, seed=1)  # batch_size 3 does not divide 7: the last batch has 1
    out = features(images)
    assert out.shape == (7, metrics.FEATURE_DIM) and out.dtype == np.float64
    np.testing.assert_allclose(out, _direct(graph_path, images), rtol=1e-5, atol=1e-5)
    assert len(np.unique(out[:, 0])) == 7  # every row is its own image's
    np.testing.assert_allclose(features(images.astype(np.float32)), out, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(features(images.astype(np.float64)), out, rtol=1e-6, atol=1e-6)


def test_features_of_a_list_of_sizes_keep_the_input_order(features, graph_path):
    sizes = [(20, 24), (31, 17), (20, 24), (9, 40), (20, 24), (20, 24), (31, 17)]
    images = [_images(1, h, w, seed=i)[0] for i, (h, w) in enumerate(sizes)]
    out = features(images)
    assert out.shape == (len(images), metrics.FEATURE_DIM)
    np.testing.assert_allclose(out, _direct(graph_path, images), rtol=1e-5, atol=1e-5)
    assert features([]).shape == (0, metrics.FEATURE_DIM)
    assert features(np.zeros((0, 8, 8, 3), np.uint8)).shape == (0, metrics.FEATURE_DIM)


def test_features_run_in_a_private_graph_with_a_free_batch_dimension(graph_path):
    default_graph = tf.compat.v1.get_default_graph()
    num_ops = len(default_graph.get_operations())
    with metrics.InceptionFeatures(graph_path) as extractor:
        extractor(_images(2, 8, 8, seed=0))
        # The stand-in's `_output_shapes` say batch 1 (as a graph frozen from one JPEG does); the
        # loader drops them, so the imported `pool_3` is not statically pinned to batch 1.
        assert extractor._features.shape.as_list() == [None, 1, 1, metrics.FEATURE_DIM]
    assert tf.executing_eagerly()
    assert tf.compat.v1.get_default_graph() is default_graph
    assert len(default_graph.get_operations()) == num_ops


@pytest.mark.parametrize(
    "images, match",
    [
        (np.zeros((8, 8, 3), np.uint8), r"\[N, H, W, 3\]"),
        (np.zeros((2, 8, 8, 4), np.uint8), r"RGB .*shape=\(2, 8, 8, 4\)"),
        ([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8)], r"images\[1\].*\[H, W, 3\]"),
        (np.zeros((2, 0, 8, 3), np.uint8), "empty side"),
        (np.zeros((2, 8, 8, 3), np.int32), "uint8 or float"),
        (np.full((2, 8, 8, 3), -1.0, np.float32), r"0\.\.255.*\(x \+ 1\) \* 127\.5"),
        (np.full((2, 8, 8, 3), np.nan, np.float32), r"0\.\.255"),
    ],
)
def test_features_reject_bad_images_in_one_line(features, images, match):
    with pytest.raises(ValueError, match=match) as error:
        features(images)
    assert _one_line(error)


def test_inception_features_reject_bad_files_and_arguments(graph_path, tmp_path):
    with pytest.raises(ValueError, match="batch_size"):
        metrics.InceptionFeatures(graph_path, batch_size=0)
    garbage = tmp_path / "garbage.pb"
    garbage.write_bytes(b"\xff\xfenot a protobuf at all")
    with pytest.raises(metrics.MetricsError, match="not a GraphDef") as error:
        metrics.InceptionFeatures(str(garbage))
    assert _one_line(error) and metrics.GRAPH_FLAG in str(error.value)
    graph = tf.compat.v1.Graph()
    with graph.as_default():
        tf.compat.v1.placeholder(tf.float32, [None, 3], name="x")
    other = tmp_path / "other.pb"
    other.write_bytes(graph.as_graph_def().SerializeToString())
    with pytest.raises(metrics.MetricsError, match="not TTUR's Inception graph") as error:
        metrics.InceptionFeatures(str(other))
    assert _one_line(error)


def test_score_images(features):
    translated = [_images(1, 20, 24, seed=i)[0] for i in range(5)] + [_images(1, 12, 12, 9)[0]]
    reference = _images(8, 16, 16, seed=20)
    scores = metrics.score_images(translated, reference, features, kid_subsets=3)
    feats_t, feats_r = features(translated), features(reference)
    kid, kid_std = metrics.kid_from_features(feats_t, feats_r, num_subsets=3)
    assert scores == {
        "fid": pytest.approx(metrics.fid_from_features(feats_t, feats_r), rel=1e-9),
        "kid": pytest.approx(kid, rel=1e-9),
        "kid_std": pytest.approx(kid_std, rel=1e-9),
        "num_translated": 6,
        "num_reference": 8,
    }
    with pytest.raises(ValueError, match="at least 2 translated"):
        metrics.score_images(translated[:1], reference, features)


# -- FID -----------------------------------------------------------------------------------------


def _reference_fid(a, b):
    """Independent float64 FID: eigenvalues of S1 @ S2 by numpy.linalg.eig, sqrt of real parts."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    eigenvalues = np.linalg.eig(s_a @ s_b)[0]
    trace_sqrt = np.sqrt(np.clip(eigenvalues.real, 0, None)).sum()
    return np.sum((mu_a - mu_b) ** 2) + np.trace(s_a) + np.trace(s_b) - 2 * trace_sqrt


def _gaussian(n, d, seed, shift=0.0):
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, d)) / np.sqrt(d)
    return rng.normal(size=(n, d)) @ mixing + shift


@pytest.mark.parametrize("na, nb, d", [(40, 50, 64), (300, 250, 16), (20, 400, 32)])
def test_fid_matches_an_independent_reference_on_both_paths(na, nb, d):
    a, b = _gaussian(na, d, seed=1), _gaussian(nb, d, seed=2, shift=0.3) * 1.5
    expected = _reference_fid(a, b)
    for method in ("auto", "gram", "covariance"):
        assert metrics.fid_from_features(a, b, method=method) == pytest.approx(expected, rel=1e-6)
    assert metrics.fid_from_features(b, a) == pytest.approx(expected, rel=1e-6)


def test_fid_paths_agree_and_fid_of_a_set_with_itself_is_zero():
    for n, d in [(30, 256), (400, 64)]:  # fewer and more samples than dimensions
        a, b = _gaussian(n, d, seed=3), _gaussian(n + 7, d, seed=4, shift=0.1)
        gram = metrics.fid_from_features(a, b, method="gram")
        assert metrics.fid_from_features(a, b, method="covariance") == pytest.approx(gram, rel=1e-9)
        for method in ("gram", "covariance"):
            assert abs(metrics.fid_from_features(a, a, method=method)) < 1e-6
        mu, sigma = a.mean(0), np.cov(a, rowvar=False)
        assert abs(metrics.frechet_distance(mu, sigma, mu, sigma)) < 1e-6


def test_fid_equals_the_closed_form_of_gaussians():
    rng = np.random.default_rng(5)
    d = 8
    mu_a, mu_b = rng.normal(size=d), rng.normal(size=d)
    var_a, var_b = rng.uniform(0.5, 2.0, d), rng.uniform(0.5, 2.0, d)
    closed = np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2)
    # Population statistics: exact.
    exact = metrics.frechet_distance(mu_a, np.diag(var_a), mu_b, np.diag(var_b))
    assert exact == pytest.approx(closed, rel=1e-12)
    # A rotation changes nothing (the matrix square root is not elementwise any more).
    rotation = np.linalg.qr(rng.normal(size=(d, d)))[0]
    rotated = metrics.frechet_distance(
        rotation @ mu_a, rotation @ np.diag(var_a) @ rotation.T,
        rotation @ mu_b, rotation @ np.diag(var_b) @ rotation.T,
    )  # fmt: skip
    assert rotated == pytest.approx(closed, rel=1e-10)
    # Samples: the estimate converges (standard error ~0.02 at 200,000 samples).
    n = 200_000
    a = mu_a + rng.normal(size=(n, d)) * np.sqrt(var_a)
    b = mu_b + rng.normal(size=(n, d)) * np.sqrt(var_b)
    assert metrics.fid_from_features(a, b) == pytest.approx(closed, rel=0.01)


def test_fid_rejects_bad_shapes_in_one_line():
    a = np.zeros((5, 4))
    for bad in [np.zeros((5, 3)), np.zeros((1, 4)), np.zeros(4)]:
        with pytest.raises(ValueError, match="fid_from_features") as error:
            metrics.fid_from_features(a, bad)
        assert _one_line(error)
    with pytest.raises(ValueError, match="method"):
        metrics.fid_from_features(a, a, method="sqrtm")
    with pytest.raises(ValueError, match=r"mu \[D\] and sigma \[D, D\]"):
        metrics.frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(4))


# -- KID -----------------------------------------------------------------------------------------


def _brute_force_mmd2(x, y):
    """Unbiased MMD^2 with k(u, v) = (u.v / d + 1)^3, with explicit loops."""
    m, d = x.shape

    def k(u, v):
        return (float(np.dot(u, v)) / d + 1.0) ** 3

    within = sum(k(x[i], x[j]) + k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    across = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    return within / (m * (m - 1)) - 2.0 * across / (m * m)


@pytest.mark.parametrize("subset_size", [10, 1000])  # 1000: m = min(Na, Nb) = 25
def test_kid_matches_a_brute_force_estimator_on_the_same_subsets(subset_size):
    a, b = _gaussian(30, 5, seed=6), _gaussian(25, 5, seed=7, shift=0.5)
    rng = np.random.default_rng(11)
    m = min(30, 25, subset_size)
    estimates = []
    for _ in range(4):
        x = a[rng.choice(30, m, replace=False)]
        y = b[rng.choice(25, m, replace=False)]
        estimates.append(_brute_force_mmd2(x, y))
    mean, std = metrics.kid_from_features(a, b, num_subsets=4, subset_size=subset_size, seed=11)
    assert mean == pytest.approx(np.mean(estimates), rel=1e-10)
    assert std == pytest.approx(np.std(estimates), rel=1e-8)
    assert std > 0


def test_kid_is_near_zero_for_the_same_distribution_and_positive_for_another():
    a, other = np.split(_gaussian(800, 16, seed=8), 2)  # one distribution, independent samples
    kwargs = dict(num_subsets=20, subset_size=100)
    same_mean, same_std = metrics.kid_from_features(a, a, **kwargs)
    iid_mean, iid_std = metrics.kid_from_features(a, other, **kwargs)
    shifted_mean, shifted_std = metrics.kid_from_features(a, a + 1.0, **kwargs)
    assert min(same_std, iid_std, shifted_std) > 0
    assert abs(same_mean) < 3 * same_std and abs(iid_mean) < 3 * iid_std  # zero within noise
    assert shifted_mean > 10 * shifted_std and shifted_mean > 50 * max(same_std, iid_std)
    assert metrics.kid_from_features(a, a, 3, 50, seed=1) != metrics.kid_from_features(
        a, a, 3, 50, seed=2
    )


def test_kid_rejects_bad_arguments():
    a = np.zeros((5, 4))
    with pytest.raises(ValueError, match="num_subsets"):
        metrics.kid_from_features(a, a, num_subsets=0)
    with pytest.raises(ValueError, match="subset_size"):
        metrics.kid_from_features(a, a, subset_size=1)
    with pytest.raises(ValueError, match="kid_from_features"):
        metrics.kid_from_features(a, np.zeros((5, 3)))


# -- find_inception_graph ------------------------------------------------------------------------


def _no_network(url):
    raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


def _archive(path, members):
    """A .tgz at `path` holding `members` ({name: bytes}); returns its file:// URL."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path.as_uri()


def test_explicit_path_must_exist(tmp_path, graph_path):
    assert metrics.find_inception_graph(graph_path, opener=_no_network) == graph_path
    missing = str(tmp_path / "nowhere.pb")
    with pytest.raises(metrics.MetricsError, match="nowhere.pb does not exist") as error:
        metrics.find_inception_graph(missing)
    assert _one_line(error) and metrics.GRAPH_FLAG in str(error.value)


def test_cache_hit_uses_the_cache_variable_and_checks_the_size(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / metrics.GRAPH_FILE).write_bytes(b"x" * 10)
    monkeypatch.setenv("CYCLEGAN_TF_CACHE", str(cache))
    found = metrics.find_inception_graph(expected_size=10, opener=_no_network)
    assert found == str(cache / metrics.GRAPH_FILE)
    # Wrong size: not trusted, so a download is attempted (and fails offline).
    with pytest.raises(metrics.MetricsError, match="cached copy has 10 bytes"):
        metrics.find_inception_graph(expected_size=11, opener=_no_network)


def test_offline_without_the_graph_fails_in_one_line(tmp_path):
    cache = tmp_path / "cache"
    for kwargs in [{"opener": _no_network}, {"download": False, "opener": pytest.fail}]:
        with pytest.raises(metrics.MetricsError) as error:
            metrics.find_inception_graph(cache_dir=str(cache), **kwargs)
        message = str(error.value)
        assert _one_line(error)
        assert metrics.DEFAULT_GRAPH_URL in message
        assert "95,673,916 bytes" in message
        assert "--inception_graph=PATH" in message
    assert not cache.exists() or os.listdir(cache) == []  # no temporary file left behind


def test_download_extracts_the_graph_from_a_local_archive(tmp_path, graph_path):
    data = open(graph_path, "rb").read()
    url = _archive(tmp_path / "inception.tgz", {"LICENSE": b"licence", metrics.GRAPH_FILE: data})
    cache = tmp_path / "cache"
    found = metrics.find_inception_graph(cache_dir=str(cache), url=url, expected_size=len(data))
    assert found == str(cache / metrics.GRAPH_FILE)
    assert os.listdir(cache) == [metrics.GRAPH_FILE]  # only the member; no temporaries
    assert open(found, "rb").read() == data
    # Now a cache hit: no download.
    again = metrics.find_inception_graph(
        cache_dir=str(cache), url=url + ".gone", expected_size=len(data), opener=pytest.fail
    )
    assert again == found
    with metrics.InceptionFeatures(found) as extractor:
        assert extractor(_images(2, 8, 8, seed=0)).shape == (2, metrics.FEATURE_DIM)


def test_download_with_the_wrong_size_or_member_leaves_nothing(tmp_path):
    data = b"not quite the graph"
    url = _archive(tmp_path / "inception.tgz", {f"inception/{metrics.GRAPH_FILE}": data})
    cache = tmp_path / "cache"
    with pytest.raises(metrics.MetricsError, match=f"has {len(data)} bytes, expected 1,000") as e:
        metrics.find_inception_graph(cache_dir=str(cache), url=url, expected_size=1000)
    assert _one_line(e) and url in str(e.value) and metrics.GRAPH_FLAG in str(e.value)
    assert os.listdir(cache) == []
    url = _archive(tmp_path / "other.tgz", {"LICENSE": b"licence"})
    with pytest.raises(metrics.MetricsError, match=f"no {metrics.GRAPH_FILE}") as e:
        metrics.find_inception_graph(cache_dir=str(cache), url=url, expected_size=len(data))
    assert _one_line(e) and os.listdir(cache) == []
    (tmp_path / "broken.tgz").write_bytes(b"\x1f\x8b truncated gzip")
    with pytest.raises(metrics.MetricsError, match="downloading it failed") as e:
        metrics.find_inception_graph(
            cache_dir=str(cache), url=(tmp_path / "broken.tgz").as_uri(), expected_size=10
        )
    assert _one_line(e) and os.listdir(cache) == []
