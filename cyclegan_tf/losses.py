"""The CycleGAN objective as pure functions of tensors: adversarial (LSGAN, vanilla, WGAN-GP),
cycle-consistency and identity losses.

Every function returns a float32 scalar: the mean over all elements of its (local) batch. Under a
`tf.distribute` strategy the trainer divides by the number of replicas so the summed gradients equal
the single-device ones.

Paper mapping (Zhu et al. 2017, Eq. 1-3 and Sec. 5.2):
  adversarial  L_GAN(G, D_Y, X, Y): LSGAN replaces the log-likelihood by least squares
               (generator: (D(G(x)) - 1)^2; discriminator: (D(y) - 1)^2 + D(G(x))^2).
  cycle        L_cyc = ||F(G(x)) - x||_1 + ||G(F(y)) - y||_1.
  identity     L_idt = ||G(y) - y||_1 + ||F(x) - x||_1 (weighted by lambda_identity * lambda).
"""

from __future__ import annotations

import tensorflow as tf


def _f32(x: tf.Tensor) -> tf.Tensor:
    return tf.cast(x, tf.float32)


def generator_adversarial(fake_logits: tf.Tensor, gan_mode: str) -> tf.Tensor:
    """Adversarial loss of a generator: how far D's verdict on its fakes is from "real".

    Args:
      fake_logits: D(fake) logits, any shape (e.g. [N, 30, 30, 1] PatchGAN).
      gan_mode: "lsgan" | "vanilla" | "wgangp".

    Returns:
      A float32 scalar.
    """
    fake_logits = _f32(fake_logits)
    if gan_mode == "lsgan":
        return tf.reduce_mean(tf.square(fake_logits - 1.0))
    if gan_mode == "vanilla":
        return tf.reduce_mean(
            tf.nn.sigmoid_cross_entropy_with_logits(tf.ones_like(fake_logits), fake_logits)
        )
    if gan_mode == "wgangp":
        return -tf.reduce_mean(fake_logits)
    raise ValueError(f"Unknown gan_mode {gan_mode!r}: use lsgan, vanilla or wgangp.")


def discriminator_adversarial(
    real_logits: tf.Tensor, fake_logits: tf.Tensor, gan_mode: str
) -> tf.Tensor:
    """Discriminator loss, halved as in the official code (slows D relative to G).

    Args:
      real_logits: D(real) logits.
      fake_logits: D(fake) logits (fakes from the image pool, gradients stopped).
      gan_mode: "lsgan" | "vanilla" | "wgangp". For wgangp the gradient penalty is separate
        (`gradient_penalty`), added by the trainer.

    Returns:
      A float32 scalar: 0.5 * (loss on real + loss on fake).
    """
    real_logits, fake_logits = _f32(real_logits), _f32(fake_logits)
    if gan_mode == "lsgan":
        real = tf.reduce_mean(tf.square(real_logits - 1.0))
        fake = tf.reduce_mean(tf.square(fake_logits))
    elif gan_mode == "vanilla":
        bce = tf.nn.sigmoid_cross_entropy_with_logits
        real = tf.reduce_mean(bce(tf.ones_like(real_logits), real_logits))
        fake = tf.reduce_mean(bce(tf.zeros_like(fake_logits), fake_logits))
    elif gan_mode == "wgangp":
        real = -tf.reduce_mean(real_logits)
        fake = tf.reduce_mean(fake_logits)
    else:
        raise ValueError(f"Unknown gan_mode {gan_mode!r}: use lsgan, vanilla or wgangp.")
    return 0.5 * (real + fake)


def gradient_penalty(discriminator, real: tf.Tensor, fake: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """WGAN-GP penalty E[(||grad_x D(x)||_2 - 1)^2] on random interpolates (Gulrajani et al.).

    Matches the official `cal_gradient_penalty(type="mixed", constant=1)`.

    Args:
      discriminator: a Keras model mapping [N, H, W, 3] to logits.
      real: [N, H, W, 3] real images.
      fake: [N, H, W, 3] fakes (gradients stopped).
      seed: int32 [2] stateless seed for the interpolation weights.

    Returns:
      A float32 scalar (not yet multiplied by the penalty weight).
    """
    real, fake = _f32(real), _f32(fake)
    alpha = tf.random.stateless_uniform([tf.shape(real)[0], 1, 1, 1], seed=seed)
    mixed = alpha * real + (1.0 - alpha) * fake
    with tf.GradientTape() as tape:
        tape.watch(mixed)
        logits = _f32(discriminator(mixed, training=True))
    grads = tf.reshape(tape.gradient(logits, mixed), [tf.shape(real)[0], -1])
    norms = tf.sqrt(tf.reduce_sum(tf.square(grads), axis=1) + 1e-16)
    return tf.reduce_mean(tf.square(norms - 1.0))


def cycle(real: tf.Tensor, reconstructed: tf.Tensor) -> tf.Tensor:
    """Cycle-consistency L1: mean |F(G(x)) - x|. Both [N, H, W, 3] in [-1, 1]."""
    return tf.reduce_mean(tf.abs(_f32(reconstructed) - _f32(real)))


def identity(real: tf.Tensor, same: tf.Tensor) -> tf.Tensor:
    """Identity L1: mean |G(y) - y|, keeps colour composition (paper Sec. 5.2, monet2photo)."""
    return tf.reduce_mean(tf.abs(_f32(same) - _f32(real)))


def generator_objective(
    real_a: tf.Tensor, real_b: tf.Tensor, g_ab, g_ba, d_a, d_b, loss
) -> tuple[dict[str, tf.Tensor], tf.Tensor, tf.Tensor]:
    """The generators' objective, term by term (paper Eq. 3 plus the identity loss of Sec. 5.2).

        L = L_GAN(G, D_Y) + L_GAN(F, D_X) + lambda_a |F(G(a)) - a| + lambda_b |G(F(b)) - b|
            + lambda_identity * (lambda_a |F(a) - a| + lambda_b |G(b) - b|)

    The step and the notebook both call this; the discriminators are only evaluated here (their
    weights are updated by `discriminator_adversarial` in the step).

    Args:
      real_a: [N, H, W, 3] in [-1, 1]; real_b likewise.
      g_ab, g_ba, d_a, d_b: callables image -> image / logits, already in training mode.
      loss: a `config.LossConfig` (gan_mode, lambda_a, lambda_b, lambda_identity).

    Returns:
      (terms, fake_a, fake_b): terms is a flat dict of float32 scalars g/adv_ab, g/adv_ba,
      g/cycle_a, g/cycle_b, and g/idt_a, g/idt_b when lambda_identity > 0 (each already
      weighted), plus g/total, their sum; fake_a = F(b) and fake_b = G(a) for the image pools.
    """
    fake_b = g_ab(real_a)
    rec_a = g_ba(fake_b)
    fake_a = g_ba(real_b)
    rec_b = g_ab(fake_a)
    terms = {
        "g/adv_ab": generator_adversarial(d_b(fake_b), loss.gan_mode),
        "g/adv_ba": generator_adversarial(d_a(fake_a), loss.gan_mode),
        "g/cycle_a": loss.lambda_a * cycle(real_a, rec_a),
        "g/cycle_b": loss.lambda_b * cycle(real_b, rec_b),
    }
    if loss.lambda_identity > 0:
        w = loss.lambda_identity
        terms["g/idt_a"] = w * loss.lambda_a * identity(real_a, g_ba(real_a))
        terms["g/idt_b"] = w * loss.lambda_b * identity(real_b, g_ab(real_b))
    terms["g/total"] = tf.add_n(list(terms.values()))
    return terms, fake_a, fake_b
