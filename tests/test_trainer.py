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


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
def test_affine_instance_norm_trains_its_scale_and_offset(precision):
    # --norm=instance_affine: every network's norms hold gamma (1 at first) and beta (0), which
    # one Adam step moves (by about the learning rate: Adam's first step is lr * sign).
    model = _model(norm="instance_affine", precision=precision)
    norms = [
        v
        for v in model.generator_variables + model.discriminator_variables
        if v.path.endswith(("/gamma", "/beta"))
    ]
    assert len(norms) == 2 * 2 * (3 + 2 * 6 + 2) + 2 * 2 * 3  # 2 G x 17 norms, 2 D x 3 norms
    assert all(v.dtype == "float32" for v in norms)
    before = [v.numpy().copy() for v in norms]
    out = model.train_step(_images(1), _images(2))
    assert all(np.isfinite(float(v)) for v in out.values())
    moved = [float(np.abs(v.numpy() - b).max()) for v, b in zip(norms, before)]
    assert all(0 < m <= 2.1e-4 for m in moved), moved


@pytest.mark.parametrize(
    "generator, size, upsampling, precision",
    [
        ("resnet_6blocks", 32, "resize_nearest", "float32"),
        ("unet_64", 64, "resize_bilinear", "mixed_bfloat16"),
    ],
)
def test_resize_upsampling_generators_train(generator, size, upsampling, precision):
    model = _model(
        generator=generator,
        crop_size=size,
        load_size=size,
        upsampling=upsampling,
        precision=precision,
    )
    kernels = [v for v in model.generator_variables if v.path.endswith("up1_conv/kernel")]
    assert len(kernels) == 2 and all(k.shape[:2] == (3, 3) for k in kernels)
    before = [v.numpy().copy() for v in model.generator_variables]
    out = model.train_step(_images(1, size=size), _images(2, size=size))
    assert all(np.isfinite(float(v)) for v in out.values())
    after = model.generator_variables
    assert all(not np.array_equal(b, a.numpy()) for b, a in zip(before, after) if b.ndim == 4)


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
