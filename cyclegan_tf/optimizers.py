"""Adam with the reference's semantics: `torch.optim.Adam`, as the official CycleGAN code uses.

The official code trains with `torch.optim.Adam(lr, betas=(0.5, 0.999))` and its default
eps = 1e-8, added to the bias-corrected root:

    m <- beta_1 m + (1 - beta_1) g          v <- beta_2 v + (1 - beta_2) g^2
    w <- w - lr / (1 - beta_1^t) * m / (sqrt(v) / sqrt(1 - beta_2^t) + eps)

`keras.optimizers.Adam` adds its epsilon (1e-7) to sqrt(v) BEFORE the bias correction, which in
torch's terms is an epsilon of 1e-7 / sqrt(1 - beta_2^t): 3.2e-6 at step 1, 1e-6 at step 10,
1.3e-7 at step 1000 (10-316x torch's). Weights with small gradients then take different steps.
`Adam` here computes torch's update.

The update is one fused `ResourceApplyAdam` kernel per variable (a single pass over weight, slots
and gradient, instead of the ~12 element-wise passes of Keras' composed update). That kernel
computes Keras' form, `w -= lr sqrt(1 - beta_2^t) / (1 - beta_1^t) * m / (sqrt(v) + eps_hat)`,
which is torch's update exactly when `eps_hat = eps sqrt(1 - beta_2^t)`; `Adam` passes that
(same arithmetic up to float32 rounding: tests/test_optimizers.py checks it against torch's
formula). The step's scalars are computed once per `apply` and shared by every variable. On the
AVX2-only EPYC one apply over both ResNet generators' 22.8 M weights took 19-20 ms instead of
40-63 (tf.function, medians of 15), and its trace plus first call 1.0-1.3 s instead of
1.3-1.5.
Slots (`_momentums`, `_velocities`), checkpoints and `get_config` are Keras Adam's.
"""

from __future__ import annotations

import keras
import tensorflow as tf

# torch.optim.Adam's default.
TORCH_EPSILON = 1e-8


class Adam(keras.optimizers.Adam):
    """`torch.optim.Adam`'s update with Keras' Adam slots and API (see the module docstring).

    Args:
      learning_rate: a float, a `LearningRateSchedule` or a zero-argument callable.
      beta_1, beta_2: the moment decay rates.
      epsilon: added to the bias-corrected sqrt(v), as in torch (default 1e-8).
      **kwargs: passed to `keras.optimizers.Adam` (name, ...). `amsgrad` is not supported.
    """

    def __init__(
        self,
        learning_rate=0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = TORCH_EPSILON,
        **kwargs,
    ):
        if kwargs.get("amsgrad"):
            raise ValueError("cyclegan_tf.optimizers.Adam does not implement amsgrad.")
        super().__init__(
            learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, **kwargs
        )
        # The scalars of the `apply` being run or traced, keyed by variable device and dtype (under
        # MirroredStrategy each device gets its own copy). Emptied at the start of every apply.
        self._scalars: dict = {}

    def step_scalars(self, learning_rate, variable):
        """(lr, beta_1^t, beta_2^t, beta_1, beta_2, eps_hat) for `variable`'s fused update.

        Computed once per apply (and device and dtype); every variable's update reuses them.
        """
        key = (variable.device, variable.dtype)
        if key not in self._scalars:
            ops, dtype = keras.ops, variable.dtype
            local_step = ops.cast(self.iterations + 1, dtype)
            beta_1, beta_2 = ops.cast(self.beta_1, dtype), ops.cast(self.beta_2, dtype)
            beta_2_power = ops.power(beta_2, local_step)
            self._scalars[key] = (
                ops.cast(learning_rate, dtype),
                ops.power(beta_1, local_step),
                beta_2_power,
                beta_1,
                beta_2,
                # torch adds eps to sqrt(v) / sqrt(1 - beta_2^t); the kernel adds it to sqrt(v).
                ops.multiply(ops.cast(self.epsilon, dtype), ops.sqrt(1 - beta_2_power)),
            )
        return self._scalars[key]

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        # One apply: every variable's update_step below shares the scalars made for it.
        self._scalars = {}
        return super()._backend_update_step(grads, trainable_variables, learning_rate)

    def update_step(self, gradient, variable, learning_rate):
        lr, beta_1_power, beta_2_power, beta_1, beta_2, epsilon = self.step_scalars(
            learning_rate, variable
        )
        index = self._get_variable_index(variable)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle,
            m=self._momentums[index].handle,
            v=self._velocities[index].handle,
            beta1_power=beta_1_power,
            beta2_power=beta_2_power,
            lr=lr,
            beta1=beta_1,
            beta2=beta_2,
            epsilon=epsilon,
            grad=tf.cast(tf.convert_to_tensor(gradient), variable.dtype),
        )
