"""The CycleGAN model state and its training step.

Paper mapping (Zhu et al. 2017): `g_ab` is G: X -> Y, `g_ba` is F: Y -> X, `d_a` is D_X (real_a vs
fake_a) and `d_b` is D_Y (real_b vs fake_b). Domain A is X, domain B is Y. Tensors are named by what
they are: `fake_b = g_ab(real_a)`, `rec_a = g_ba(fake_b)`, `idt_b = g_ab(real_b)` (identity: a B
image through the A->B generator should stay itself).

`CycleGAN` owns the four networks, both optimizers, the two image pools, and the step/epoch/seed
counters, all created under one `tf.distribute.Strategy`. `train_step` is ONE `tf.function`; it
takes a (distributed) batch `(real_a, real_b)` and returns a flat dict of float32 scalars. Across
workers it also carries each worker's stop request (`stop`, see `cluster.StopVote`).

All randomness of a step (pool choices, WGAN-GP interpolation) is stateless, seeded by
(seed, step), so a run restored from a checkpoint takes exactly the steps an uninterrupted run
takes.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from cyclegan_tf import (
    cluster,
    discriminators,
    generators,
    hardware,
    image_pool,
    losses,
    optimizers,
    schedules,
)
from cyclegan_tf import config as config_lib
from cyclegan_tf import precision as precision_lib

# Salts that separate the stateless random streams drawn from (seed, step).
_POOL_A, _POOL_B, _GP_A, _GP_B = 1, 2, 3, 4
# The output of `train_step(..., stop=flag)`: the stop requests summed over all replicas.
STOP_KEY = "cluster/stop"


def make_strategy(name: str) -> tf.distribute.Strategy:
    """Builds the distribution strategy named by `TrainConfig.strategy`.

    Args:
      name: "default" (the current/default strategy: one device), "one_device" (first GPU, else
        the CPU), "mirrored" (all local GPUs; without GPUs every logical CPU device, i.e. one
        unless the process configured more), "multi_worker" (MultiWorkerMirroredStrategy over
        the cluster in the TF_CONFIG environment variable; create it before TensorFlow runs
        anything else, see `cluster.py`).

    Returns:
      A `tf.distribute.Strategy`.

    Raises:
      cluster.ClusterError: multi_worker without a usable TF_CONFIG.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if name == "multi_worker":
        cluster.Task.from_environment(name)  # a one-line error for a missing/malformed TF_CONFIG
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(
        f"strategy must be one of {', '.join(config_lib.STRATEGIES)}. Received: strategy={name!r}"
    )


class CycleGAN(tf.Module):
    """Networks, optimizers, pools and counters of one CycleGAN run.

    Args:
      config: the run configuration.
      steps_per_epoch: steps in one epoch (max(|A|, |B|) / batch), for the learning-rate schedule.
      strategy: the distribution strategy (default: the current one).
    """

    def __init__(
        self,
        config: config_lib.Config,
        steps_per_epoch: int,
        strategy: tf.distribute.Strategy | None = None,
    ):
        super().__init__(name="cyclegan")
        self.config = config
        self.steps_per_epoch = int(steps_per_epoch)
        self.strategy = strategy or tf.distribute.get_strategy()
        m, o, t = config.model, config.optim, config.train
        crop = config.data.crop_size

        # Weight initialisation draws from the global Keras seed; setting it makes two runs with
        # the same seed start from the same weights (and lets a single-device and a mirrored run
        # be compared).
        keras.utils.set_random_seed(t.seed)
        # `auto` is resolved here for direct users; `train()` resolves it earlier (and keeps the
        # run directory's record), so the config it passes is already concrete.
        self.precision = precision_lib.resolve(t.precision).precision
        with precision_lib.policy(self.precision), self.strategy.scope():
            dis = dict(
                ndf=m.ndf,
                n_layers=m.n_layers_d,
                norm=m.norm,
                init_type=m.init_type,
                init_gain=m.init_gain,
            )
            self.g_ab = generators.build_from_config(m, "g_ab")
            self.g_ba = generators.build_from_config(m, "g_ba")
            self.d_a = discriminators.build_discriminator(m.discriminator, model_name="d_a", **dis)
            self.d_b = discriminators.build_discriminator(m.discriminator, model_name="d_b", **dis)

            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
            self.seed = tf.Variable(t.seed, dtype=tf.int64, trainable=False, name="seed")

            self.learning_rate = schedules.EpochLinearDecay(
                o.lr, self.steps_per_epoch, o.n_epochs, o.n_epochs_decay, o.lr_policy
            )
            self.g_optimizer = self._make_optimizer("g_optimizer")
            self.d_optimizer = self._make_optimizer("d_optimizer")
            # Building the optimizers here (not lazily inside the first step) keeps slot
            # creation out of the traced function: tracing is several times faster.
            self.g_optimizer.build(self.generator_variables)
            self.d_optimizer.build(self.discriminator_variables)

        # The pools are queried once per step over the global batch in cross-replica context
        # (see `_pool_query`), so they are ordinary variables, not mirrored ones: a
        # MirroredVariable has no scatter update, and every replica must see the same pool.
        pool_shape = (crop, crop, 3)
        self.pool_a = image_pool.ImagePool(config.loss.pool_size, pool_shape, "pool_a")
        self.pool_b = image_pool.ImagePool(config.loss.pool_size, pool_shape, "pool_b")

        # autograph=False: the step is plain graph code (the pool uses explicit while_loop/cond),
        # and converting it and everything it calls (Keras' Adam included) took ~1 s of tracing.
        # Preprocessing that keeps each image's size (batch 1) feeds a new shape every step:
        # reduce_retracing makes the second trace shape-generic, so there are at most two
        # instead of one per image size.
        variable_size = (
            config.data.preprocess in config_lib.VARIABLE_SIZE_PREPROCESS
            and config.data.batch_size == 1
        )
        self.traces = 0  # how often the step was traced (tests)
        self.train_step = tf.function(
            self._train_step,
            jit_compile=t.jit_compile or None,
            autograph=False,
            reduce_retracing=variable_size,
        )
        # Each network runs 3 times per step. As a nested tf.function it is traced, and its
        # gradient built, once instead of 3 times (trace 3.8 -> 2.6 s at 128 px). On a CPU-only
        # machine the calls also stay calls (`_noinline`): the runtime then builds each
        # network's graph once instead of inlining every call into one 15,850-node graph; that
        # took ~2 s of the first call, now ~1 s (AVX2 EPYC; steps interleaved in one process:
        # 4.24 vs 4.29 s/iter, the same). With a GPU the runtime inlines them as before
        # (Grappler, on there, optimises across the calls; not measured, no GPU here).
        inline = hardware.inline_functions()
        self._train_calls = {
            net.name: tf.function(
                lambda x, net=net: net(x, training=True),
                autograph=False,
                reduce_retracing=variable_size,
                experimental_attributes=None if inline else {"_noinline": True},
            )
            for net in (self.g_ab, self.g_ba, self.d_a, self.d_b)
        }
        # Inference for grids, scores and evaluation: one shape-generic trace per direction
        # serves every batch and image size (the grid's 2 images, the score's batches of 8, an
        # evaluation's own sizes); per-shape traces cost ~0.3-0.5 s each.
        images = tf.TensorSpec([None, None, None, 3], tf.float32)
        self._translate = {
            name: tf.function(
                lambda x, net=net: net(x, training=False),
                input_signature=[images],
                autograph=False,
            )
            for name, net in (("a2b", self.g_ab), ("b2a", self.g_ba))
        }

    # -- construction helpers ---------------------------------------------------------------

    def _make_optimizer(self, name: str) -> keras.optimizers.Optimizer:
        o = self.config.optim
        optimizer = optimizers.Adam(
            # The schedule reads the global step, not the optimizer's iteration count: under
            # mixed_float16 the loss scale skips non-finite steps and the iterations stop with them.
            learning_rate=lambda: self.learning_rate(self.step),
            beta_1=o.beta1,
            beta_2=o.beta2,
            name=name,
        )
        return precision_lib.with_loss_scaling(optimizer, self.precision)

    @property
    def generator_variables(self) -> list[tf.Variable]:
        return self.g_ab.trainable_variables + self.g_ba.trainable_variables

    @property
    def discriminator_variables(self) -> list[tf.Variable]:
        return self.d_a.trainable_variables + self.d_b.trainable_variables

    def checkpoint_objects(self) -> dict[str, tf.Module | tf.Variable]:
        """Everything a checkpoint must hold for an exact resume, by stable name."""
        return {
            "g_ab": self.g_ab,
            "g_ba": self.g_ba,
            "d_a": self.d_a,
            "d_b": self.d_b,
            "g_optimizer": self.g_optimizer,
            "d_optimizer": self.d_optimizer,
            "pool_a": self.pool_a,
            "pool_b": self.pool_b,
            "step": self.step,
            "epoch": self.epoch,
            "seed": self.seed,
        }

    def translate(self, images: tf.Tensor, direction: str = "a2b") -> tf.Tensor:
        """Runs one generator in inference mode. images: [N, H, W, 3] in [-1, 1] -> same shape."""
        return self._translate[direction](tf.convert_to_tensor(images, tf.float32))

    def cycle_images(self, real_a, real_b) -> dict[str, np.ndarray]:
        """Both cycles in inference mode, for image grids.

        Args:
          real_a: [N, H, W, 3] in [-1, 1]; real_b likewise.

        Returns:
          numpy arrays keyed real_a, fake_b, rec_a, real_b, fake_a, rec_b (as
          `visualize.save_grid` expects).
        """
        fake_b = self.translate(real_a, "a2b")
        fake_a = self.translate(real_b, "b2a")
        rows = {
            "real_a": real_a,
            "fake_b": fake_b,
            "rec_a": self.translate(fake_b, "b2a"),
            "real_b": real_b,
            "fake_a": fake_a,
            "rec_b": self.translate(fake_a, "a2b"),
        }
        return {k: np.asarray(v) for k, v in rows.items()}

    def current_learning_rate(self) -> float:
        return float(self.learning_rate(self.step))

    # -- the step ---------------------------------------------------------------------------

    def _train_step(
        self, real_a: tf.Tensor, real_b: tf.Tensor, stop: tf.Tensor | None = None
    ) -> dict[str, tf.Tensor]:
        """One CycleGAN iteration: update both generators, then both discriminators.

        Args:
          real_a: [N, H, W, 3] float32 in [-1, 1] (per replica when distributed).
          real_b: [N, H, W, 3] float32 in [-1, 1].
          stop: optional float32 scalar, this worker's stop request (1.0) or not (0.0).

        Returns:
          A flat dict of float32 scalars: g/adv_ab, g/adv_ba, g/cycle_a, g/cycle_b, g/idt_a,
          g/idt_b, g/total, d/a, d/b (plus d/gp_a, d/gp_b for wgangp), and lr; with `stop`,
          also `STOP_KEY`: the requests summed over every replica of every worker (> 0: some
          worker asked to stop).
        """
        self.traces += 1  # runs when traced, not when the graph runs
        # 1. One stateless seed per step: same step -> same random choices, resumed or not.
        step_seed = tf.stack([self.seed, self.step])

        # 2. Generators (per replica): adversarial + cycle + identity, D frozen.
        g_metrics, fake_a, fake_b = self.strategy.run(self._generator_update, (real_a, real_b))

        # 3. History pools over the GLOBAL batch (cross-replica), so the pool behaves the same on
        #    one device and on many; then hand each replica its slice back.
        pooled_a = self._pool_query(self.pool_a, fake_a, _POOL_A, step_seed)
        pooled_b = self._pool_query(self.pool_b, fake_b, _POOL_B, step_seed)

        # 4. Discriminators (per replica) on real images and pooled fakes.
        d_metrics = self.strategy.run(
            self._discriminator_update, (real_a, real_b, pooled_a, pooled_b, step_seed)
        )

        # 5. Counters and the replica-averaged metrics.
        lr = self.learning_rate(self.step)
        self.step.assign_add(1)
        self.epoch.assign(self.step // self.steps_per_epoch)
        metrics = {**g_metrics, **d_metrics}
        metrics = {
            k: self.strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None)
            for k, v in metrics.items()
        }
        metrics["lr"] = tf.cast(lr, tf.float32)
        if stop is not None:  # one more scalar all-reduce next to the metrics'
            requests = self.strategy.run(lambda: tf.identity(stop))
            metrics[STOP_KEY] = self.strategy.reduce(tf.distribute.ReduceOp.SUM, requests, None)
        return metrics

    def _generator_update(self, real_a, real_b):
        replicas = self.strategy.num_replicas_in_sync
        nets = {name: self._train_calls[name] for name in ("g_ab", "g_ba", "d_a", "d_b")}
        with tf.GradientTape() as tape:
            metrics, fake_a, fake_b = losses.generator_objective(
                real_a, real_b, **nets, loss=self.config.loss
            )
            # Gradients are summed over replicas: dividing by their number gives the global mean.
            scaled = self.g_optimizer.scale_loss(metrics["g/total"] / replicas)
        variables = self.generator_variables
        grads = tape.gradient(scaled, variables)
        self.g_optimizer.apply(grads, variables)
        return metrics, tf.stop_gradient(fake_a), tf.stop_gradient(fake_b)

    def _discriminator_update(self, real_a, real_b, pooled_a, pooled_b, step_seed):
        loss_cfg = self.config.loss
        mode = loss_cfg.gan_mode
        replicas = self.strategy.num_replicas_in_sync
        replica_id = tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group, tf.int64)
        d_a, d_b = self._train_calls["d_a"], self._train_calls["d_b"]
        with tf.GradientTape() as tape:
            metrics = {
                "d/a": losses.discriminator_adversarial(d_a(real_a), d_a(pooled_a), mode),
                "d/b": losses.discriminator_adversarial(d_b(real_b), d_b(pooled_b), mode),
            }
            total = metrics["d/a"] + metrics["d/b"]
            if mode == "wgangp":
                gp_seed = tf.random.experimental.stateless_fold_in(step_seed, replica_id)
                for key, d, real, fake, salt in (
                    ("d/gp_a", self.d_a, real_a, pooled_a, _GP_A),
                    ("d/gp_b", self.d_b, real_b, pooled_b, _GP_B),
                ):
                    seed = tf.random.experimental.stateless_fold_in(gp_seed, salt)
                    metrics[key] = loss_cfg.gp_weight * losses.gradient_penalty(d, real, fake, seed)
                    total += metrics[key]
            scaled = self.d_optimizer.scale_loss(total / replicas)
        variables = self.discriminator_variables
        grads = tape.gradient(scaled, variables)
        self.d_optimizer.apply(grads, variables)
        return metrics

    def _pool_query(self, pool, per_replica_fakes, salt, step_seed):
        """Gathers fakes from all replicas, queries the pool once, and splits the result back."""
        seed = tf.random.experimental.stateless_fold_in(step_seed, salt)
        if self.strategy.num_replicas_in_sync == 1:
            local = self.strategy.experimental_local_results(per_replica_fakes)[0]
            return pool.query(local, seed)
        fakes = self.strategy.gather(per_replica_fakes, axis=0)
        pooled = pool.query(fakes, seed)
        per_replica = tf.shape(fakes)[0] // self.strategy.num_replicas_in_sync

        def slice_for(ctx):
            start = ctx.replica_id_in_sync_group * per_replica
            return pooled[start : start + per_replica]

        return self.strategy.experimental_distribute_values_from_function(slice_for)
