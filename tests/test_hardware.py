"""cyclegan_tf.hardware: the one probe, the arms chosen from it, their overrides, and the proof that
every fast arm trains like its stock twin (on any host: each arm is forced both ways here)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from cyclegan_tf import errors, hardware, precision

NATIVE = hardware.CpuInfo(model="X", machine="x86_64", flags=frozenset({"avx2", "avx512_bf16"}))
PLAIN = hardware.CpuInfo(model="Y", machine="x86_64", flags=frozenset({"avx2", "fma"}))


@pytest.fixture
def cpu(monkeypatch):
    """Pretends a CPU: `cpu(NATIVE)`; no GPU, oneDNN off unless asked."""

    def pretend(info, gpus=(), onednn=False):
        monkeypatch.setattr(hardware, "cpu_info", lambda: info)
        monkeypatch.setattr(hardware, "gpus", lambda: tuple(gpus))
        monkeypatch.setattr(hardware, "onednn", lambda: onednn)

    for name in hardware.ENV_CHOICES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(hardware.ONEDNN_ENV, raising=False)
    return pretend


def test_auto_follows_the_cpu_and_its_override(cpu, monkeypatch):
    cpu(NATIVE)
    assert precision.resolve("auto").precision == "mixed_bfloat16"
    assert hardware.overrides() == []
    cpu(PLAIN)
    assert precision.resolve("auto") == hardware.Resolution(
        "float32", "auto: the CPU has no native bfloat16"
    )
    monkeypatch.setenv("CYCLEGAN_TF_CPU_BF16", "1")  # replaces what the CPU reports
    assert precision.resolve("auto") == hardware.Resolution(
        "mixed_bfloat16", "auto: CYCLEGAN_TF_CPU_BF16=1: native bfloat16"
    )
    cpu(NATIVE)
    monkeypatch.setenv("CYCLEGAN_TF_CPU_BF16", "0")
    assert precision.resolve("auto").precision == "float32"
    assert precision.resolve("mixed_bfloat16").precision == "mixed_bfloat16"  # asked for: kept
    assert hardware.overrides() == ["CYCLEGAN_TF_CPU_BF16=0"]
    with hardware.force(cpu_bf16=True):  # in-process wins over the environment
        assert precision.resolve("auto").precision == "mixed_bfloat16"


def test_gpus_decide_auto_whatever_the_cpu_says(cpu, monkeypatch):
    monkeypatch.setenv("CYCLEGAN_TF_CPU_BF16", "1")
    cpu(PLAIN, gpus=[("A100", (8, 0)), ("H100", (9, 0))])
    assert precision.resolve("auto").precision == "mixed_bfloat16"
    cpu(NATIVE, gpus=[("A100", (8, 0)), ("T4", (7, 5))])
    assert precision.resolve("auto").precision == "float32"
    cpu(NATIVE, gpus=[("unknown", None)])
    assert precision.resolve("auto").precision == "float32"


@pytest.mark.parametrize(
    "gpus, onednn, expected",
    [
        ((), False, ("forward", False, False)),  # Eigen CPU kernels: every fast arm on
        ((), True, ("stock", False, False)),  # oneDNN: its conv gradients are the fast ones
        ((("A100", (8, 0)),), False, ("stock", True, True)),  # a GPU: TensorFlow's own way
    ],
)
def test_arms_chosen_from_the_probe(cpu, gpus, onednn, expected):
    cpu(PLAIN, gpus=gpus, onednn=onednn)
    assert (hardware.conv_gradients(), hardware.inline_functions(), hardware.grappler()) == expected


def test_every_arm_can_be_forced_both_ways(cpu, monkeypatch):
    cpu(PLAIN)
    monkeypatch.setenv("CYCLEGAN_TF_CONV_GRADIENTS", "stock")
    monkeypatch.setenv("CYCLEGAN_TF_INLINE", "1")
    monkeypatch.setenv("CYCLEGAN_TF_GRAPPLER", "1")
    assert (hardware.conv_gradients(), hardware.inline_functions(), hardware.grappler()) == (
        "stock",
        True,
        True,
    )
    with hardware.force(conv_gradients="forward", inline=False, grappler=False):
        assert (hardware.conv_gradients(), hardware.inline_functions(), hardware.grappler()) == (
            "forward",
            False,
            False,
        )
    assert hardware.conv_gradients() == "stock"  # the environment again after the block
    with pytest.raises(TypeError, match="unknown arms: onednn"):
        with hardware.force(onednn=True):
            pass


def test_start_line_names_the_arms_and_every_override(cpu, monkeypatch):
    cpu(PLAIN)
    assert hardware.describe() == (
        "CPU Y (avx2 fma; no native bfloat16); oneDNN off, conv gradients forward, calls not "
        "inlined, Grappler off; no overrides"
    )
    monkeypatch.setenv("CYCLEGAN_TF_CPU_BF16", "1")
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "1")
    cpu(PLAIN, onednn=True)
    assert hardware.describe() == (
        "CPU Y (avx2 fma; native bfloat16); oneDNN on, conv gradients stock, calls not inlined, "
        "Grappler off; overridden: CYCLEGAN_TF_CPU_BF16=1, TF_ENABLE_ONEDNN_OPTS=1"
    )
    cpu(PLAIN, gpus=[("A100", (8, 0))])
    assert hardware.describe().startswith("1 GPU(s): A100 (compute capability 8.0); oneDNN off, ")


@pytest.mark.parametrize(
    "name, value",
    [
        ("CYCLEGAN_TF_CPU_BF16", "yes"),
        ("CYCLEGAN_TF_CONV_GRADIENTS", "fast"),
        ("TF_ENABLE_ONEDNN_OPTS", "on"),
    ],
)
def test_a_bad_override_is_one_line(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(errors.ConfigError, match=f"^{name} must be "):
        hardware.check_environment()


def test_cli_refuses_a_bad_override_before_importing_tensorflow(tmp_path):
    env = dict(os.environ, CYCLEGAN_TF_CPU_BF16="2")
    proc = subprocess.run(
        [sys.executable, "-m", "cyclegan_tf.cli", "train", "--preset=tiny",
         f"--output_dir={tmp_path / 'run'}"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "cyclegan-tf: error: CYCLEGAN_TF_CPU_BF16 must be one of 0, 1 (or unset: chosen from the "
        "hardware). Received: CYCLEGAN_TF_CPU_BF16='2'"
    ]
    assert not (tmp_path / "run").exists()


def test_the_probe_of_this_host_is_consistent():
    # Whatever this host is: oneDNN on means TensorFlow's conv gradients; the start line says so.
    with_onednn = hardware.onednn()
    line = hardware.describe()
    assert f"oneDNN {'on' if with_onednn else 'off'}" in line
    if not hardware.gpus():
        expected = "stock" if with_onednn else "forward"
        assert hardware.conv_gradients() == expected or "CONV_GRADIENTS" in line


# -- fast path = stock path ------------------------------------------------------------------------

# Every fast arm on (what a CPU-only host without oneDNN runs) against every arm stock (what
# TensorFlow and Keras do unasked: their conv gradients, inlined functions, Grappler on), trained
# from the same weights on the same images, in one process with two logical CPUs so that
# MirroredStrategy runs compare too (and with one device: the strategy's own correctness). Each
# comparison prints one JSON line.
ARMS_CHECK = textwrap.dedent(
    """
    import json, sys
    import keras, numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from cyclegan_tf import config, hardware, trainer

    ARMS = {
        "fast": dict(conv_gradients="forward", inline=False, grappler=False),
        "stock": dict(conv_gradients="stock", inline=True, grappler=True),
    }
    STEPS = 2

    def images(seed):  # STEPS global batches of 2
        shape = [STEPS, 2, 32, 32, 3]
        return tf.random.stateless_uniform(shape, seed=[seed, 0], minval=-1, maxval=1)

    def norm_fed_biases(net):
        # Biases of convs followed by instance norm cancel out of the output: their gradient is
        # rounding noise, which Adam scales to +-lr either way. Excluded from gradients/weights.
        out = set()
        for layer in net.layers:
            if isinstance(layer, keras.layers.GroupNormalization):
                producer = layer.input._keras_history.operation
                while not hasattr(producer, "bias"):
                    producer = producer.input._keras_history.operation
                out.add(id(producer.bias))
        return out

    def run(arms, gan_mode, precision, mirrored):
        cfg = config.preset("tiny", gan_mode=gan_mode, precision=precision, batch_size=2,
                            pool_size=3)
        strategy = (tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]) if mirrored
                    else tf.distribute.get_strategy())
        with hardware.force(**ARMS[arms]):
            hardware.apply_grappler()  # functions instantiated from now on follow it
            model = trainer.CycleGAN(cfg, steps_per_epoch=4, strategy=strategy)
            assert model.strategy.num_replicas_in_sync == (2 if mirrored else 1)
            batches = iter(strategy.experimental_distribute_dataset(
                tf.data.Dataset.from_tensor_slices((images(1), images(2)))))
            losses, moments = [], []
            for step in range(STEPS):
                out = model.train_step(*next(batches))  # traced at the first call, inside
                losses.append({k: float(v) for k, v in out.items() if k != "lr"})
                if step == 0:  # Adam's first moment after step 1 is (1 - beta1) * gradient
                    for name in ("g_ab", "g_ba", "d_a", "d_b"):
                        net = getattr(model, name)
                        opt = model.g_optimizer if name[0] == "g" else model.d_optimizer
                        skip = norm_fed_biases(net)
                        moments += [opt._momentums[opt._get_variable_index(v)].numpy()
                                    for v in net.trainable_weights if id(v) not in skip]
            x = tf.random.stateless_uniform([1, 32, 32, 3], seed=[9, 0], minval=-1, maxval=1)
            output = model.translate(x).numpy()
        skip = set().union(*(norm_fed_biases(getattr(model, n)) for n in ("g_ab", "g_ba")))
        weights = [v.numpy().ravel() for v in model.generator_variables
                   + model.discriminator_variables if id(v) not in skip]
        return dict(losses=losses, moments=moments, weights=np.concatenate(weights),
                    pool=model.pool_a.images.numpy(), output=output)

    GP_WEIGHT = config.preset("tiny").loss.gp_weight

    def loss_error(key, value, reference):
        # A loss's difference relative to max(|loss|, 0.1) (WGAN's critic loss can cancel to
        # ~0). The gradient penalty, gp = w * mean_i (n_i - 1)^2 over the batch's critic
        # input-gradient norms n_i, is compared as r = sqrt(gp / w), the RMS of n_i - 1: squared,
        # a gradient norm's relative error e grows to 2 e n / |n - 1| in gp, but r moves by at
        # most RMS(n - n') <= e RMS(n) <= e (r + 1) (the RMS is a norm), so |r - r'| / (r' + 1)
        # is at most the gradients' own relative error, and shares their bound.
        if key.startswith("d/gp_"):
            r, r_ref = (max(v, 0.0) ** 0.5 / GP_WEIGHT ** 0.5 for v in (value, reference))
            return abs(r - r_ref) / (r_ref + 1.0)
        return abs(value - reference) / max(abs(reference), 0.1)

    def compare(one, two, **case):
        loss_rel = [max((loss_error(k, l1[k], l2[k]), k) for k in l2)
                    for l1, l2 in zip(one["losses"], two["losses"])]
        grad_rel = max(float(np.linalg.norm(m1 - m2) / max(np.linalg.norm(m2), 1e-30))
                       for m1, m2 in zip(one["moments"], two["moments"]) if m2.ndim == 4)
        m1, m2 = (np.concatenate([m.ravel() for m in run["moments"]]) for run in (one, two))
        grad_rel_all = float(np.linalg.norm(m1 - m2) / np.linalg.norm(m2))
        d = np.abs(one["weights"] - two["weights"])
        print("CASE " + json.dumps(dict(
            case, loss_rel=[float(v) for v, _ in loss_rel], loss_key=[k for _, k in loss_rel],
            grad_rel=grad_rel, grad_rel_all=grad_rel_all, weight_max=float(d.max()),
            weights_within=float(np.mean(d <= 1e-5)),
            weights=int(d.size), pool=float(np.abs(one["pool"] - two["pool"]).max()),
            output=float(np.abs(one["output"] - two["output"]).max()),
        )), flush=True)

    for gan_mode, precision, mirrored in json.loads(sys.argv[1]):
        fast = run("fast", gan_mode, precision, mirrored)
        stock = run("stock", gan_mode, precision, mirrored)
        case = dict(gan_mode=gan_mode, precision=precision, mirrored=mirrored)
        compare(fast, stock, compared="fast vs stock", **case)
        if mirrored and precision == "float32":  # the strategy's own correctness
            one = run("fast", gan_mode, precision, False)
            compare(one, fast, compared="one device vs mirrored", **case)
    """
)

# Every GAN objective in both precisions on one device; the MirroredStrategy cases (each also
# compared with one device) in both precisions with LSGAN. Two tests, so the workers share them.
CASES = {
    "float32": [
        ["lsgan", "float32", True],
        ["vanilla", "float32", False],
        ["wgangp", "float32", False],
    ],
    "mixed_bfloat16": [
        ["lsgan", "mixed_bfloat16", True],
        ["vanilla", "mixed_bfloat16", False],
        ["wgangp", "mixed_bfloat16", False],
    ],
}
LR = 2e-4


@pytest.mark.slow(seconds=120)
@pytest.mark.parametrize("prec", ["float32", "mixed_bfloat16"])
def test_fast_arms_train_like_stock_tensorflow(prec):
    # The CPU arms on two logical CPUs: a GPU, if any, is hidden (its arms: test_gpu_audit.py).
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, "-c", ARMS_CHECK, json.dumps(CASES[prec])],
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(line[5:]) for line in proc.stdout.splitlines() if line[:5] == "CASE "]
    bf16 = prec == "mixed_bfloat16"
    assert len(results) == len(CASES[prec]) + (0 if bf16 else 1)
    for r in results:
        assert r["weights"] > 50_000, r
        step1, step2 = r["loss_rel"]
        if not bf16:
            # float32: the same arithmetic added in other orders (oneDNN/Eigen kernels, forward
            # reformulations, Grappler's rewrites, per-replica sums): rounding, ~1e-6 relative
            # per chain. A real error (a wrong gradient formula, an unscaled replica sum) is O(1).
            # Losses: `loss_error` in ARMS_CHECK (the gradient penalty as a gradient norm).
            assert step1 <= 1e-5 and step2 <= 1e-4, r
            # Gradients: Adam's first moment after step 1 = (1 - beta1) * gradient, per conv
            # kernel and over all variables (relative norms).
            assert r["grad_rel"] <= 1e-4 and r["grad_rel_all"] <= 1e-4, r
            # Weights. Adam's first update is lr * g / |g| = +-lr whatever |g| is, so after step
            # 1 weights differ only where a gradient's sign flips (near-zero gradients, rounding
            # noise), and after step 2 by lr times the relative gradient difference: nearly all
            # within 1e-5 (lr / 20). No weight moves more than 1.054 lr per step (Adam with beta1
            # 0.5, beta2 0.999, by Cauchy-Schwarz), so none differs by more than 2 * 2.06 lr.
            assert r["weights_within"] >= 0.99 and r["weight_max"] <= 2 * 2.06 * LR, r
            assert r["pool"] <= 1e-3 and r["output"] <= 1e-2, r
        else:
            # bfloat16: both arms compute the same forward kernels (step-1 losses agree), but the
            # gradient paths round different intermediate values to bfloat16 (one rounding: up to
            # 2^-9 relative; a value that lands on the neighbouring bfloat16 is 2^-8 off).
            # Gradients: each of the ~20 convolutions between a loss and the deepest kernel
            # rounds the back-propagated gradient once more, at different points in the two arms;
            # worst case linear, 20 * 2^-9 = 3.9e-2 (measured: up to 3.6e-2 with Eigen's
            # bfloat16, 1e-2 with oneDNN's), bounded by 16 * 2^-8 = 6.25e-2. The step-2 losses
            # are computed by weights one Adam step apart by those gradients, so they share the
            # bound (measured: up to 5.2e-2, WGAN-GP with Eigen's bfloat16; the penalty read as
            # the gradient norm it squares, `loss_error`: as gp itself it differed by 9.4e-2 with
            # one intra-op thread, oneDNN). Real errors are O(1): a oneDNN bfloat16 conv bug gave
            # 1.02 here (layers._conv2d_forward_gradients).
            assert step1 <= 2**-8 and step2 <= 16 * 2**-8, r
            assert r["grad_rel"] <= 16 * 2**-8 and r["grad_rel_all"] <= 16 * 2**-8, r
            # Weights: Adam turns relative gradient differences of small elements into update
            # differences of up to ~lr, so only the bound of the update size holds per weight;
            # the images the weights make (the pool, a translation, in [-1, 1]) stay within 0.1.
            assert r["weight_max"] <= 2 * 2.06 * LR, r
            assert r["pool"] <= 0.1 and r["output"] <= 0.1, r
