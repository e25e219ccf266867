import numpy as np
import pytest
import tensorflow as tf

from cyclegan_tf import losses


def test_lsgan():
    ones, zeros = tf.ones([2, 3, 3, 1]), tf.zeros([2, 3, 3, 1])
    assert float(losses.generator_adversarial(ones, "lsgan")) == 0.0
    assert float(losses.generator_adversarial(zeros, "lsgan")) == 1.0
    assert float(losses.discriminator_adversarial(ones, zeros, "lsgan")) == 0.0
    assert float(losses.discriminator_adversarial(zeros, ones, "lsgan")) == 1.0  # 0.5 * (1 + 1)


def test_vanilla_is_bce_with_logits():
    logits = tf.constant([[-2.0, 0.5], [1.0, 3.0]])
    expected = np.mean(np.log1p(np.exp(-logits.numpy())))
    np.testing.assert_allclose(losses.generator_adversarial(logits, "vanilla"), expected, rtol=1e-6)
    d = losses.discriminator_adversarial(logits, -logits, "vanilla")
    np.testing.assert_allclose(d, expected, rtol=1e-6)  # 0.5 * (x + x)


def test_wgan_signs():
    real, fake = tf.fill([4], 2.0), tf.fill([4], -1.0)
    assert float(losses.generator_adversarial(fake, "wgangp")) == 1.0
    assert float(losses.discriminator_adversarial(real, fake, "wgangp")) == -1.5


def test_gradient_penalty_is_zero_for_unit_gradient_norm():
    # D(x) = sum(x * w) with ||w|| = 1 has gradient norm 1 everywhere: no penalty.
    w = tf.random.stateless_normal([1, 4, 4, 3], seed=[1, 2])
    w = w / tf.norm(w)

    def critic(x, training=True):
        return tf.reduce_sum(x * w, axis=[1, 2, 3])

    real = tf.random.stateless_uniform([2, 4, 4, 3], seed=[3, 4])
    gp = losses.gradient_penalty(critic, real, -real, tf.constant([5, 6]))
    assert float(gp) == pytest.approx(0.0, abs=1e-5)

    def steep(x, training=True):
        return 3.0 * critic(x)

    assert float(losses.gradient_penalty(steep, real, -real, tf.constant([5, 6]))) == pytest.approx(
        4.0, rel=1e-4
    )


def test_cycle_and_identity_are_l1():
    a = tf.zeros([1, 2, 2, 3])
    b = tf.fill([1, 2, 2, 3], 0.5)
    assert float(losses.cycle(a, b)) == 0.5
    assert float(losses.identity(a, b)) == 0.5


def test_losses_are_float32_for_bfloat16_inputs():
    x = tf.ones([1, 2, 2, 1], tf.bfloat16)
    assert losses.generator_adversarial(x, "lsgan").dtype == tf.float32
    assert losses.cycle(x, x).dtype == tf.float32


def test_unknown_mode():
    with pytest.raises(ValueError, match="Unknown gan_mode 'hinge'"):
        losses.generator_adversarial(tf.ones([1]), "hinge")
