import numpy as np
import pytest

from cyclegan_tf import schedules


def test_linear_matches_the_official_lambda_rule():
    # Official: lr * (1 - max(0, epoch + 1 - n_epochs) / (n_epochs_decay + 1)), epochs from 0.
    s = schedules.EpochLinearDecay(2e-4, steps_per_epoch=10, n_epochs=3, n_epochs_decay=4)
    for epoch in range(7):
        expected = 2e-4 * (1 - max(0, epoch + 1 - 3) / 5)
        for step in (epoch * 10, epoch * 10 + 9):
            np.testing.assert_allclose(float(s(step)), expected, rtol=1e-6)
    assert float(s(69)) > 0  # the last step still learns


def test_constant():
    s = schedules.EpochLinearDecay(1e-3, 5, 1, 1, policy="constant")
    assert float(s(0)) == float(s(1000)) == pytest.approx(1e-3)


def test_serialisable():
    s = schedules.EpochLinearDecay(1e-3, 5, 1, 2)
    assert schedules.EpochLinearDecay(**s.get_config()).get_config() == s.get_config()


def test_bad_arguments():
    with pytest.raises(ValueError, match="steps_per_epoch must be > 0"):
        schedules.EpochLinearDecay(1e-3, 0, 1, 1)
