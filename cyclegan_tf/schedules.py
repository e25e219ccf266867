"""Learning-rate policies: the official "linear" (constant for n_epochs, then linearly to zero over
n_epochs_decay), "linear_steps" (the same rule counted in steps) and "constant".

The rate is a function of the global step only, so a resumed run follows the same curve. "linear"
changes once per epoch, as the official `lambda_rule`:
    factor(epoch) = 1 - max(0, epoch + 1 - n_epochs) / (n_epochs_decay + 1)
with epoch = step // steps_per_epoch. Over the paper's 100 decay epochs that is a smooth ramp; over
a short schedule it is a staircase that never gets low: with 1 + 1 epochs the rate only halves for
the second epoch. "linear_steps" applies the same rule with the step as its unit,
    factor(step) = 1 - max(0, step + 1 - n_epochs * S) / (n_epochs_decay * S + 1),  S = steps/epoch,
so the rate falls every step and the last step trains at 1 / (n_epochs_decay * S + 1) of it.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="cyclegan_tf")
class EpochLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Constant `base_lr` for `n_epochs` epochs, then linear decay over `n_epochs_decay` epochs.

    Called with the optimizer's iteration count, which equals the global step because each of the
    trainer's optimizers applies exactly one update per step.
    """

    def __init__(
        self,
        base_lr: float,
        steps_per_epoch: int,
        n_epochs: int,
        n_epochs_decay: int,
        policy: str = "linear",
    ):
        if steps_per_epoch <= 0:
            raise ValueError(f"steps_per_epoch must be > 0. Received: {steps_per_epoch}")
        if policy not in ("linear", "linear_steps", "constant"):
            raise ValueError(
                f"lr_policy must be linear, linear_steps or constant. Received: {policy!r}"
            )
        self.base_lr = float(base_lr)
        self.steps_per_epoch = int(steps_per_epoch)
        self.n_epochs = int(n_epochs)
        self.n_epochs_decay = int(n_epochs_decay)
        self.policy = policy

    def __call__(self, step):
        if self.policy == "constant":
            return ops.convert_to_tensor(self.base_lr, "float32")
        # One rule, counted in epochs ("linear") or in steps ("linear_steps").
        unit = self.steps_per_epoch if self.policy == "linear" else 1
        start = self.n_epochs * self.steps_per_epoch // unit
        length = self.n_epochs_decay * self.steps_per_epoch // unit + 1
        position = ops.cast(ops.floor_divide(ops.cast(step, "int64"), unit), "float32")
        decayed = ops.maximum(0.0, position + 1.0 - start) / float(length)
        return self.base_lr * ops.maximum(0.0, 1.0 - decayed)

    def get_config(self):
        return {
            "base_lr": self.base_lr,
            "steps_per_epoch": self.steps_per_epoch,
            "n_epochs": self.n_epochs,
            "n_epochs_decay": self.n_epochs_decay,
            "policy": self.policy,
        }
