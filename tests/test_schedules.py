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


def test_linear_steps_is_the_same_rule_counted_in_steps():
    # n_epochs * S steps at the full rate, then one step of decay each; the last step keeps
    # 1 / (n_epochs_decay * S + 1) of it.
    s = schedules.EpochLinearDecay(1e-3, 10, 2, 3, policy="linear_steps")
    for step in (0, 18):
        np.testing.assert_allclose(float(s(step)), 1e-3, rtol=1e-6)
    for step in (19, 20, 33, 49):
        np.testing.assert_allclose(float(s(step)), 1e-3 * (1 - (step + 1 - 20) / 31), rtol=1e-6)
    np.testing.assert_allclose(float(s(49)), 1e-3 / 31, rtol=1e-5)
    steps = np.array([float(s(i)) for i in range(19, 50)])
    assert np.all(np.diff(steps) < 0)  # falls every step, unlike "linear"'s staircase


def test_constant():
    s = schedules.EpochLinearDecay(1e-3, 5, 1, 1, policy="constant")
    assert float(s(0)) == float(s(1000)) == pytest.approx(1e-3)


def test_serialisable():
    s = schedules.EpochLinearDecay(1e-3, 5, 1, 2)
    assert schedules.EpochLinearDecay(**s.get_config()).get_config() == s.get_config()


def test_bad_arguments():
    with pytest.raises(ValueError, match="steps_per_epoch must be > 0"):
        schedules.EpochLinearDecay(1e-3, 0, 1, 1)
