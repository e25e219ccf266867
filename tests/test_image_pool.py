import numpy as np
import pytest
import tensorflow as tf

from cyclegan_tf import image_pool


def _batch(step):
    # Two 1x1 "images" whose value identifies them: 2*step and 2*step + 1.
    return tf.reshape(tf.constant([2.0 * step, 2.0 * step + 1]), [2, 1, 1, 1])


def _run(pool, steps, query):
    return [query(_batch(s), tf.constant([7, s])).numpy().ravel().tolist() for s in range(steps)]


def test_fills_then_returns_new_or_stored_images():
    pool = image_pool.ImagePool(3, (1, 1, 1))
    outs = _run(pool, 20, pool.query)
    assert outs[0] == [0.0, 1.0]  # filling: images pass through
    assert int(pool.count.numpy()) == 3
    seen_old = False
    for step, out in enumerate(outs[2:], start=2):
        for value in out:
            assert value <= 2 * step + 1  # never an image from the future
            seen_old |= value < 2 * step
    assert seen_old, "with p=1/2 per image, 36 draws should return at least one stored image"


def test_graph_and_eager_agree_and_are_deterministic():
    eager = image_pool.ImagePool(3, (1, 1, 1))
    graph = image_pool.ImagePool(3, (1, 1, 1))
    outs_eager = _run(eager, 12, eager.query)
    outs_graph = _run(graph, 12, tf.function(graph.query))
    assert outs_eager == outs_graph
    np.testing.assert_array_equal(eager.images.numpy(), graph.images.numpy())


def test_checkpoint_restores_the_pool(tmp_path):
    pool = image_pool.ImagePool(2, (1, 1, 1))
    _run(pool, 3, pool.query)
    path = tf.train.Checkpoint(pool=pool).save(str(tmp_path / "ckpt"))
    other = image_pool.ImagePool(2, (1, 1, 1))
    tf.train.Checkpoint(pool=other).restore(path).assert_existing_objects_matched()
    np.testing.assert_array_equal(other.images.numpy(), pool.images.numpy())
    assert int(other.count.numpy()) == 2


def test_size_zero_passes_through():
    pool = image_pool.ImagePool(0, (1, 1, 1))
    assert _run(pool, 2, pool.query) == [[0.0, 1.0], [2.0, 3.0]]


def test_negative_size():
    with pytest.raises(ValueError, match="pool_size must be >= 0"):
        image_pool.ImagePool(-1, (1, 1, 1))
