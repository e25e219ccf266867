import keras
import numpy as np
import pytest
import tensorflow as tf

from cyclegan_tf import optimizers, schedules


class ReferenceAdam(keras.optimizers.Adam):
    """torch.optim.Adam's update written per variable, without shared scalars."""

    def update_step(self, gradient, variable, learning_rate):
        ops, dtype = keras.ops, variable.dtype
        lr = ops.cast(learning_rate, dtype)
        t = ops.cast(self.iterations + 1, dtype)
        bias_correction_1 = 1 - ops.power(ops.cast(self.beta_1, dtype), t)
        bias_correction_2 = 1 - ops.power(ops.cast(self.beta_2, dtype), t)
        gradient = ops.cast(gradient, dtype)
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        self.assign_add(
            m, ops.multiply(ops.subtract(gradient, m), ops.cast(1 - self.beta_1, dtype))
        )
        self.assign_add(
            v, ops.multiply(ops.subtract(ops.square(gradient), v), ops.cast(1 - self.beta_2, dtype))
        )
        denominator = ops.add(
            ops.multiply(ops.sqrt(v), 1 / ops.sqrt(bias_correction_2)),
            ops.cast(self.epsilon, dtype),
        )
        self.assign_sub(variable, ops.multiply(lr / bias_correction_1, ops.divide(m, denominator)))


SHAPES = [(3, 3, 4, 8), (8,), (5, 5), ()]


def _run(optimizer, compiled, steps=6, grad_scale=1e-3):
    variables = [
        tf.Variable(np.random.default_rng(i).normal(size=shape).astype(np.float32))
        for i, shape in enumerate(SHAPES)
    ]
    optimizer.build(variables)

    def step(k):
        optimizer.apply([tf.sin(v * k) * grad_scale for v in variables], variables)

    step = tf.function(step, autograph=False) if compiled else step
    for k in range(steps):
        step(tf.constant(k + 1.0))
    return [v.numpy() for v in variables + optimizer.variables]


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf_function"])
def test_fused_update_equals_the_per_variable_reference(compiled):
    # The fused kernel computes the same arithmetic in another order, and 1 - beta_2 from the
    # float32 beta_2 (0.00099998713 instead of 0.001: 1.3e-5 relative in v's increment, as if
    # beta_2 were float32(0.999) exactly). Weights then differ by < 1e-8 (steps are ~2e-4).
    def lr():
        return schedules.EpochLinearDecay(2e-4, 2, 1, 2, "linear")  # through the linear decay

    ours = _run(optimizers.Adam(learning_rate=lr(), beta_1=0.5), compiled)
    reference = _run(
        ReferenceAdam(learning_rate=lr(), beta_1=0.5, epsilon=optimizers.TORCH_EPSILON), compiled
    )
    assert len(ours) == len(reference)
    for a, b in zip(ours, reference):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-8)


def _torch_adam_numpy(w, grads, lr=2e-4, beta_1=0.5, beta_2=0.999, eps=1e-8):
    """torch.optim.Adam.step (single tensor, float32), as torch/optim/adam.py computes it."""
    w = w.astype(np.float32).copy()
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        m = m + (g - m) * np.float32(1 - beta_1)  # exp_avg.lerp_(grad, 1 - beta1)
        v = v * np.float32(beta_2) + g * g * np.float32(1 - beta_2)
        bias_correction_1 = np.float32(1 - beta_1**t)
        bias_correction_2_sqrt = np.float32(np.sqrt(1 - beta_2**t))
        denominator = np.sqrt(v) / bias_correction_2_sqrt + np.float32(eps)
        w = w - np.float32(lr / bias_correction_1) * (m / denominator)
    return w


@pytest.mark.parametrize("grad_scale", [1.0, 1e-6], ids=["ordinary", "tiny_gradients"])
def test_update_equals_torch_adam_and_keras_adam_does_not(grad_scale):
    rng = np.random.default_rng(0)
    # Small weights, so float32 resolves the ~2e-4 steps to ~1e-10 and 1e-8 is a real bound.
    w0 = (rng.normal(size=(64,)) * 1e-3).astype(np.float32)
    grads = [(rng.normal(size=(64,)) * grad_scale).astype(np.float32) for _ in range(3)]
    expected = _torch_adam_numpy(w0, grads)

    def run(optimizer):
        w = tf.Variable(w0)
        optimizer.build([w])
        for g in grads:
            optimizer.apply([tf.constant(g)], [w])
        return w.numpy()

    ours = run(optimizers.Adam(learning_rate=2e-4, beta_1=0.5))
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-8)
    if grad_scale < 1e-3:
        # Keras adds 1e-7 before the bias correction: ~3e-6 in torch's terms at step 1, which
        # changes the steps of weights with gradients of that size.
        keras_adam = run(keras.optimizers.Adam(learning_rate=2e-4, beta_1=0.5))
        assert np.abs(keras_adam - expected).max() > 1e-5


def test_amsgrad_is_refused():
    with pytest.raises(ValueError, match="amsgrad"):
        optimizers.Adam(amsgrad=True)
