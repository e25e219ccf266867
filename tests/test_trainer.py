import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from cyclegan_tf import checkpoints, config, trainer

G_KEYS = {"g/adv_ab", "g/adv_ba", "g/cycle_a", "g/cycle_b", "g/idt_a", "g/idt_b", "g/total"}


def _images(seed, n=1, size=32):
    return tf.random.stateless_uniform([n, size, size, 3], seed=[seed, 0], minval=-1, maxval=1)


def _model(**overrides):
    return trainer.CycleGAN(config.preset("tiny", **overrides), steps_per_epoch=4)


def test_step_returns_every_loss_and_updates_all_networks():
    model = _model()
    before = [v.numpy().copy() for v in model.generator_variables + model.discriminator_variables]
    out = model.train_step(_images(1), _images(2))
    assert set(out) == G_KEYS | {"d/a", "d/b", "lr"}
    assert all(v.dtype == tf.float32 and v.shape == () for v in out.values())
    assert all(np.isfinite(float(v)) for v in out.values())
    total = sum(float(out[k]) for k in G_KEYS - {"g/total"})
    assert float(out["g/total"]) == pytest.approx(total, rel=1e-5)
    after = model.generator_variables + model.discriminator_variables
    assert all(not np.array_equal(b, a.numpy()) for b, a in zip(before, after) if b.ndim == 4)
    assert int(model.step.numpy()) == 1
    assert float(out["lr"]) == pytest.approx(2e-4)


def test_identity_weight_zero_drops_the_identity_terms():
    out = _model(lambda_identity=0.0).train_step(_images(1), _images(2))
    assert "g/idt_a" not in out and "g/idt_b" not in out


def test_wgangp_applies_the_gradient_penalty():
    out = _model(gan_mode="wgangp").train_step(_images(1), _images(2))
    assert float(out["d/gp_a"]) > 0 and float(out["d/gp_b"]) > 0


def test_vanilla_and_mixed_bfloat16_steps_are_finite_float32():
    out = _model(gan_mode="vanilla", precision="mixed_bfloat16").train_step(_images(1), _images(2))
    assert all(v.dtype == tf.float32 and np.isfinite(float(v)) for v in out.values())


def test_restored_state_continues_bit_for_bit(tmp_path):
    first = _model()
    first.train_step(_images(1), _images(2))
    path = checkpoints.Checkpointer(first.checkpoint_objects(), str(tmp_path)).save(1)
    second = _model(seed=0)
    checkpoints.Checkpointer(second.checkpoint_objects(), str(tmp_path)).restore_latest()
    assert int(second.step.numpy()) == 1 and path.endswith("ckpt-1")
    for _ in range(2):
        a = first.train_step(_images(3), _images(4))
        b = second.train_step(_images(3), _images(4))
        assert {k: float(v) for k, v in a.items()} == {k: float(v) for k, v in b.items()}
    for x, y in zip(first.checkpoint_objects()["g_ab"].weights, second.g_ab.weights):
        np.testing.assert_array_equal(x.numpy(), y.numpy())
    np.testing.assert_array_equal(first.pool_a.images.numpy(), second.pool_a.images.numpy())


def test_multi_worker_needs_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        trainer.make_strategy("multi_worker")


# Runs in a fresh process: logical devices must be configured before TensorFlow initialises.
MIRRORED_CHECK = textwrap.dedent(
    """
    import numpy as np, tensorflow as tf, keras
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from cyclegan_tf import config, trainer

    cfg = config.preset("tiny", batch_size=2, pool_size=3)
    a = tf.random.stateless_uniform([2, 2, 32, 32, 3], seed=[1, 0], minval=-1, maxval=1)
    b = tf.random.stateless_uniform([2, 2, 32, 32, 3], seed=[2, 0], minval=-1, maxval=1)

    def build(strategy):
        model = trainer.CycleGAN(cfg, steps_per_epoch=4, strategy=strategy)
        batches = tf.data.Dataset.from_tensor_slices((a, b))
        return model, iter(strategy.experimental_distribute_dataset(batches))

    def norm_fed_biases(net):
        # Biases of convs followed by instance norm cancel out of the output: their gradient is
        # rounding noise, which Adam scales to +-lr either way. They are excluded from the check.
        out = set()
        for layer in net.layers:
            if isinstance(layer, keras.layers.GroupNormalization):
                producer = layer.input._keras_history.operation
                while not hasattr(producer, "bias"):
                    producer = producer.input._keras_history.operation
                out.add(id(producer.bias))
        return out

    def compare(one, two):
        # Adam first moments (0.5 * gradient after step 1), weights and pool, compared.
        grad_rel, weights = [], []
        for name in ("g_ab", "g_ba", "d_a", "d_b"):
            net_one, net_two = getattr(one, name), getattr(two, name)
            opt_one = one.g_optimizer if name.startswith("g") else one.d_optimizer
            opt_two = two.g_optimizer if name.startswith("g") else two.d_optimizer
            skip = norm_fed_biases(net_one)
            for v1, v2 in zip(net_one.trainable_weights, net_two.trainable_weights):
                if id(v1) in skip:
                    continue
                m1 = opt_one._momentums[opt_one._get_variable_index(v1)].numpy()
                m2 = opt_two._momentums[opt_two._get_variable_index(v2)].numpy()
                grad_rel.append(np.linalg.norm(m1 - m2) / max(np.linalg.norm(m1), 1e-30))
                weights.append(np.abs(v1.numpy() - v2.numpy()).ravel())
        weights = np.concatenate(weights)
        pool = float(np.abs(one.pool_a.images.numpy() - two.pool_a.images.numpy()).max())
        return max(grad_rel), weights, pool

    one, batches_one = build(tf.distribute.get_strategy())
    two, batches_two = build(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
    assert two.strategy.num_replicas_in_sync == 2
    for step in (1, 2):
        loss_one = one.train_step(*next(batches_one))
        loss_two = two.train_step(*next(batches_two))
        loss_rel = max(
            abs(float(loss_one[k]) - float(loss_two[k])) / max(abs(float(loss_one[k])), 1e-3)
            for k in loss_one
        )
        grad_rel, d, pool = compare(one, two)
        print("STEP", step, loss_rel, grad_rel, d.max(), float(np.mean(d <= 1e-5)), d.size, pool)
    x = tf.random.stateless_uniform([1, 32, 32, 3], seed=[9, 0], minval=-1, maxval=1)
    out_diff = float(np.abs(one.translate(x).numpy() - two.translate(x).numpy()).max())
    print("OUTPUT", out_diff)
    """
)


@pytest.mark.slow(seconds=60)
def test_mirrored_on_two_logical_cpus_equals_one_device():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, "-c", MIRRORED_CHECK], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [[float(v) for v in x.split()[1:]] for x in proc.stdout.splitlines() if x[:4] == "STEP"]
    (_, loss1, grad1, worst1, within1, size, pool1) = rows[0]
    (_, loss2, _, worst2, within2, _, pool2) = rows[1]
    (out_diff,) = [float(x.split()[1]) for x in proc.stdout.splitlines() if x[:6] == "OUTPUT"]
    lr = 2e-4
    assert size > 50_000
    # The gradients are what the strategy computes: after step 1, Adam's first moment is exactly
    # 0.5 * gradient, and it agrees within reduction-order rounding (~3e-6 relative on both CPU
    # kinds). A real error (an unscaled replica sum, a wrong slice) moves it by O(1): not dividing
    # by the replica count gives 1.0 here while every weight still agrees within 6e-5, because
    # Adam's update is invariant to the gradient's scale. Weights alone cannot tell.
    assert grad1 <= 1e-4, f"step 1: gradients differ by {grad1} (relative)"
    assert loss1 <= 1e-5 and loss2 <= 1e-4, (loss1, loss2)
    assert pool1 <= 1e-5, f"step 1: pools differ by {pool1}"
    # Weights: Adam's first update is lr * g / (|g| + eps'), so a gradient whose true value is
    # ~0 (rounding noise in either run) moves its weight by up to +-lr in a direction the noise
    # picks. That bounds every difference by 2 * lr per step, and such weights are rare (1 of
    # 337,784 after step 1 on the AVX2-only kind: 3.05e-5; the AVX-512 kind stayed within 1e-5).
    assert within1 >= 0.9999 and worst1 <= 2 * lr, f"step 1: {within1} within 1e-5, max {worst1}"
    assert within2 >= 0.99 and worst2 <= 4 * lr, f"step 2: {within2} within 1e-5, max {worst2}"
    # Images made by those weights: the pool after step 2 and a translation stay close.
    assert pool2 <= 1e-3 and out_diff <= 1e-2, (pool2, out_diff)


def test_variable_size_preprocessing_traces_the_step_at_most_twice():
    model = _model(preprocess="none", pool_size=0)
    for step, (h, w) in enumerate([(32, 32), (36, 28), (40, 44), (28, 32), (44, 36)]):
        a = tf.random.stateless_uniform([1, h, w, 3], seed=[step, 1], minval=-1, maxval=1)
        b = tf.random.stateless_uniform([1, w, h, 3], seed=[step, 2], minval=-1, maxval=1)
        out = model.train_step(a, b)
        assert np.isfinite(float(out["g/total"]))
    assert model.traces <= 2


def test_mixed_float16_trains_checkpoints_and_resumes_with_the_lr_on_the_global_step(tmp_path):
    first = _model(precision="mixed_float16")
    assert isinstance(first.g_optimizer, keras.optimizers.LossScaleOptimizer)
    # A loss scale so large that the float16 gradients overflow: the optimizer skips those
    # updates and its iterations stop, while the global step (and the schedule) moves on.
    first.g_optimizer.dynamic_scale.assign(2.0**60)
    for k in range(5):
        out = first.train_step(_images(10 + k), _images(20 + k))
        assert all(np.isfinite(float(v)) for v in out.values())
    assert int(first.step.numpy()) == 5
    assert int(first.g_optimizer.inner_optimizer.iterations.numpy()) < 5
    expected_lr = float(first.learning_rate(first.step))  # epoch 1 of the decay: lr halved
    assert expected_lr == pytest.approx(1e-4)
    assert float(first.g_optimizer.inner_optimizer.learning_rate) == pytest.approx(expected_lr)
    path = checkpoints.Checkpointer(first.checkpoint_objects(), str(tmp_path)).save(5)
    second = _model(precision="mixed_float16")
    assert checkpoints.Checkpointer(second.checkpoint_objects(), str(tmp_path)).restore_latest()
    assert path.endswith("ckpt-5")
    a = first.train_step(_images(30), _images(31))
    b = second.train_step(_images(30), _images(31))
    assert {k: float(v) for k, v in a.items()} == {k: float(v) for k, v in b.items()}
    assert float(second.g_optimizer.dynamic_scale) == float(first.g_optimizer.dynamic_scale)
