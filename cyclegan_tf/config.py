"""Run configuration: frozen dataclasses validated on construction, named presets, JSON round trip.

A `Config` is the single description of a run. The CLI builds one from flags, `train()` consumes
it and saves it as `config.json` in the run directory; `export` and `translate` read it back to
rebuild the generators. Fields default to the official PyTorch CycleGAN values.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from cyclegan_tf import errors
from cyclegan_tf import precision as precision_lib

GENERATORS = ("resnet_9blocks", "resnet_6blocks", "unet_256", "unet_128", "unet_64")
# What a generator's input height and width must be a multiple of (ResNets downsample twice,
# UNets 8, 7 and 6 times). generators.size_multiple reads this table.
GENERATOR_MULTIPLES = {
    "resnet_9blocks": 4,
    "resnet_6blocks": 4,
    "unet_256": 256,
    "unet_128": 128,
    "unet_64": 64,
}
# Preprocessing that keeps each image's own size (batch 1) instead of cropping to crop_size.
VARIABLE_SIZE_PREPROCESS = ("none", "scale_width")
DISCRIMINATORS = ("basic", "n_layers", "pixel")
NORMS = ("instance", "instance_affine", "batch", "none")
INITS = ("normal", "xavier", "kaiming", "orthogonal")
# ResNet generator variants, for generators trained by other code and imported (pretrained.py):
# how the two stride-2 downsampling convs pad (PyTorch zeros, PyTorch padding_mode="reflect",
# Keras "same"), how the two upsamplings align (PyTorch ConvTranspose2d(k3, s2, p1,
# output_padding=1) or Keras Conv2DTranspose(k3, s2, "same"), one pixel apart), which convs have
# biases (the official rule, or only the output conv) and the norms' epsilon.
DOWN_PADDINGS = ("zeros", "reflect", "keras_same")
# `upsampling` also names a choice for any generator: resize-convolution (Odena et al. 2016,
# "Deconvolution and Checkerboard Artifacts"), a x2 nearest or bilinear resize then a k3 s1 conv
# (padded like the generator's other stride-1 convs: reflect in ResNets, zeros in UNets), in
# place of every transposed conv. No official or imported weights have this layout.
RESIZE_UPSAMPLINGS = ("resize_nearest", "resize_bilinear")
UPSAMPLINGS = ("torch", "keras_same", *RESIZE_UPSAMPLINGS)
CONV_BIASES = ("auto", "output_only")
PREPROCESS = ("resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none")
GAN_MODES = ("lsgan", "vanilla", "wgangp")
LR_POLICIES = ("linear", "linear_steps", "constant")
PRECISIONS = precision_lib.PRECISIONS
STRATEGIES = ("default", "one_device", "mirrored", "multi_worker")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise errors.ConfigError(message)


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    _check(
        value in choices, f"{name} must be one of {', '.join(choices)}. Received: {name}={value!r}"
    )


def _positive(name: str, value: Any) -> None:
    _check(
        isinstance(value, int) and value > 0,
        f"{name} must be a positive integer. Received: {name}={value!r}",
    )


def _non_negative(name: str, value: Any) -> None:
    _check(value >= 0, f"{name} must be >= 0. Received: {name}={value!r}")


# A `--dataset` value names the built-in dataset, a TFDS dataset or a folder.
TFDS_PREFIX = "tfds:"
TFDS_BUILDER = "cycle_gan"


def tfds_name(dataset: str) -> str | None:
    """`builder/config` if `dataset` names a TFDS dataset, else None (builtin or a folder).

    `tfds:cycle_gan/<config>` always does; `cycle_gan/<config>` does unless such a folder exists.
    """
    dataset = dataset.strip()
    if dataset.startswith(TFDS_PREFIX):
        return dataset[len(TFDS_PREFIX) :]
    if dataset.startswith(TFDS_BUILDER + "/") and not os.path.exists(dataset):
        return dataset
    return None


def check_dataset_folder(root: str) -> None:
    """The layout a dataset folder needs: it exists and holds trainA/ and trainB/ (testA/ and
    testB/ optional). Needs no TensorFlow, so the CLI answers within a second; `data.load`
    checks the same way before listing the images.

    Raises:
      errors.DataError: the folder or one of its train folders is missing.
    """
    if not os.path.isdir(root):
        raise errors.DataError(
            f"Dataset folder {root} does not exist. Pass --dataset=builtin, "
            "--dataset=tfds:cycle_gan/<config> or a folder with trainA/ and trainB/."
        )
    for split in ("trainA", "trainB"):
        if not os.path.isdir(os.path.join(root, split)):
            raise errors.DataError(
                f"{root} has no {split}/ folder. A dataset folder needs trainA/ and trainB/ "
                "(testA/ and testB/ optional)."
            )


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where images come from and how they are prepared.

    Attributes:
      dataset: `builtin`, `tfds:cycle_gan/<config>` (or `cycle_gan/<config>`), or a folder path
        holding trainA/ trainB/ (testA/ testB/ optional).
      load_size: images are resized to this before cropping (scale_width: to this width).
      crop_size: size of the random crop fed to the networks during training.
      preprocess: resize_and_crop | crop | scale_width | scale_width_and_crop | none.
      no_flip: disable random horizontal mirroring.
      batch_size: global batch size (split across replicas under a distribution strategy).
      data_dir: TFDS data directory (None: the TFDS default, ~/tensorflow_datasets).
      builtin_size: side of the images of the built-in dataset.
      builtin_num_train: images per domain in the built-in dataset's train split.
      builtin_num_test: images per domain in the built-in dataset's (paired) test split.
    """

    dataset: str = "builtin"
    load_size: int = 286
    crop_size: int = 256
    preprocess: str = "resize_and_crop"
    no_flip: bool = False
    batch_size: int = 1
    data_dir: str | None = None
    builtin_size: int = 64
    builtin_num_train: int = 400
    builtin_num_test: int = 50

    def __post_init__(self):
        _check(
            bool(self.dataset),
            "dataset must not be empty. Use builtin, tfds:cycle_gan/horse2zebra or a folder.",
        )
        for name in (
            "load_size",
            "crop_size",
            "batch_size",
            "builtin_size",
            "builtin_num_train",
            "builtin_num_test",
        ):
            _positive(name, getattr(self, name))
        _choice("preprocess", self.preprocess, PREPROCESS)
        if self.preprocess in ("resize_and_crop", "scale_width_and_crop"):
            _check(
                self.crop_size <= self.load_size,
                f"crop_size must be <= load_size for preprocess={self.preprocess}. "
                f"Received: crop_size={self.crop_size} > load_size={self.load_size}",
            )


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The four networks. Names follow the official code (netG, netD, ngf, ndf, n_layers_D);
    `norm_epsilon`, `down_padding`, `upsampling` and `conv_bias` describe ResNet generators
    of other codebases (see DOWN_PADDINGS above); `upsampling` also chooses resize-convolution
    for any generator (RESIZE_UPSAMPLINGS)."""

    generator: str = "resnet_9blocks"
    discriminator: str = "basic"
    ngf: int = 64
    ndf: int = 64
    n_layers_d: int = 3
    norm: str = "instance"
    init_type: str = "normal"
    init_gain: float = 0.02
    dropout: bool = False
    # The generator variant (defaults: the official network). Set by import-torch and
    # train --init_from from the layout of the imported weights (pretrained.py), not by flags.
    norm_epsilon: float = 1e-5
    down_padding: str = "zeros"
    upsampling: str = "torch"
    conv_bias: str = "auto"

    def __post_init__(self):
        _choice("generator", self.generator, GENERATORS)
        _choice("discriminator", self.discriminator, DISCRIMINATORS)
        _choice("norm", self.norm, NORMS)
        _choice("init_type", self.init_type, INITS)
        for name in ("ngf", "ndf", "n_layers_d"):
            _positive(name, getattr(self, name))
        _check(self.init_gain > 0, f"init_gain must be > 0. Received: init_gain={self.init_gain}")
        _check(self.norm_epsilon > 0, f"norm_epsilon must be > 0. Received: {self.norm_epsilon!r}")
        _choice("down_padding", self.down_padding, DOWN_PADDINGS)
        _choice("upsampling", self.upsampling, UPSAMPLINGS)
        _choice("conv_bias", self.conv_bias, CONV_BIASES)
        upsampling = "torch" if self.upsampling in RESIZE_UPSAMPLINGS else self.upsampling
        variant = (self.down_padding, upsampling, self.conv_bias) != ("zeros", "torch", "auto")
        _check(
            not variant or self.generator.startswith("resnet"),
            f"down_padding, upsampling (but {' and '.join(RESIZE_UPSAMPLINGS)}) and conv_bias "
            f"are ResNet generator variants; generator={self.generator} takes the defaults "
            "(zeros, torch, auto).",
        )


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """The objective: adversarial + lambda * cycle + lambda_identity * lambda * identity."""

    gan_mode: str = "lsgan"
    lambda_a: float = 10.0
    lambda_b: float = 10.0
    lambda_identity: float = 0.5
    gp_weight: float = 10.0
    pool_size: int = 50

    def __post_init__(self):
        _choice("gan_mode", self.gan_mode, GAN_MODES)
        for name in ("lambda_a", "lambda_b", "lambda_identity", "gp_weight", "pool_size"):
            _non_negative(name, getattr(self, name))


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Adam for generators and discriminators, constant then linear decay (epochs)."""

    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    lr_policy: str = "linear"
    n_epochs: int = 100
    n_epochs_decay: int = 100

    def __post_init__(self):
        _check(self.lr > 0, f"lr must be > 0. Received: lr={self.lr}")
        _check(0 <= self.beta1 < 1, f"beta1 must be in [0, 1). Received: beta1={self.beta1}")
        _check(0 <= self.beta2 < 1, f"beta2 must be in [0, 1). Received: beta2={self.beta2}")
        _choice("lr_policy", self.lr_policy, LR_POLICIES)
        _non_negative("n_epochs", self.n_epochs)
        _non_negative("n_epochs_decay", self.n_epochs_decay)
        _check(
            self.n_epochs + self.n_epochs_decay > 0,
            "n_epochs + n_epochs_decay must be > 0. Received: 0 + 0",
        )

    @property
    def total_epochs(self) -> int:
        return self.n_epochs + self.n_epochs_decay


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How the loop runs: seed, precision, devices, checkpoint and logging cadence."""

    seed: int = 0
    max_steps: int | None = None
    save_epoch: int = 5
    save_steps: int = 1000
    keep_checkpoints: int = 3
    log_steps: int = 100
    precision: str = "auto"
    jit_compile: bool = False
    strategy: str = "default"
    deterministic: bool = False

    def __post_init__(self):
        _check(
            isinstance(self.seed, int) and self.seed >= 0,
            f"seed must be an integer >= 0. Received: seed={self.seed!r}",
        )
        if self.max_steps is not None:
            _positive("max_steps", self.max_steps)
        for name in ("save_epoch", "save_steps", "log_steps"):
            _positive(name, getattr(self, name))
        _check(
            self.keep_checkpoints >= 2,
            f"keep_checkpoints must be >= 2 so a corrupt latest checkpoint has a fallback. "
            f"Received: keep_checkpoints={self.keep_checkpoints}",
        )
        _choice("precision", self.precision, PRECISIONS)
        _choice("strategy", self.strategy, STRATEGIES)


_SECTIONS = {
    "data": DataConfig,
    "model": ModelConfig,
    "loss": LossConfig,
    "optim": OptimConfig,
    "train": TrainConfig,
}


@dataclasses.dataclass(frozen=True)
class Config:
    """A whole run: data, model, loss, optim, train."""

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)

    def __post_init__(self):
        """Rules across sections: what the data pipeline feeds must fit the networks."""
        d, m, loss, t = self.data, self.model, self.loss, self.train
        multiple = GENERATOR_MULTIPLES[m.generator]
        variable = d.preprocess in VARIABLE_SIZE_PREPROCESS and d.batch_size == 1
        if variable:
            # Sizes are rounded to multiples of 4 only (data.py), which UNets cannot take.
            _check(
                multiple == 4,
                f"generator={m.generator} needs inputs that are multiples of {multiple}, but "
                f"preprocess={d.preprocess} keeps each image's size; use a cropping --preprocess "
                f"(e.g. resize_and_crop) or a resnet generator.",
            )
            _check(
                loss.pool_size == 0,
                f"preprocess={d.preprocess} with batch_size=1 yields images of varying size, which "
                "the image pool cannot store; use --pool_size=0, a cropping --preprocess, or "
                "--batch_size > 1 (batches end with a crop_size crop).",
            )
        else:
            _check(
                d.crop_size % multiple == 0,
                f"generator={m.generator} needs crop_size to be a multiple of {multiple}. "
                f"Received: crop_size={d.crop_size}",
            )
        _check(
            not (loss.gan_mode == "wgangp" and t.precision == "mixed_float16"),
            "gan_mode=wgangp with precision=mixed_float16 is not supported: the gradient "
            "penalty's inner gradient is not loss-scaled and underflows in float16; use "
            "--precision=float32 or mixed_bfloat16.",
        )

    def replace(self, **overrides: Any) -> Config:
        """Returns a copy with `section.field`-style or bare-field overrides applied.

        Example: `config.replace(crop_size=128, **{"optim.lr": 1e-4})`. A bare name must be unique
        across sections; unknown names raise ValueError naming the field.
        """
        sections = {name: dataclasses.asdict(getattr(self, name)) for name in _SECTIONS}
        for key, value in overrides.items():
            section, field = _locate(key)
            sections[section][field] = value
        return Config(**{name: _SECTIONS[name](**values) for name, values in sections.items()})

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Config:
        unknown = set(values) - set(_SECTIONS)
        _check(
            not unknown, f"Unknown config sections: {sorted(unknown)}. Expected {sorted(_SECTIONS)}"
        )
        kwargs = {}
        for name, section_cls in _SECTIONS.items():
            given = dict(values.get(name, {}))
            fields = {f.name for f in dataclasses.fields(section_cls)}
            extra = set(given) - fields
            _check(not extra, f"Unknown {name} config fields: {sorted(extra)}")
            kwargs[name] = section_cls(**given)
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str) -> Config:
        return cls.from_dict(json.loads(text))


def field_names() -> dict[str, str]:
    """Maps every bare field name to its section, e.g. {"crop_size": "data", ...}."""
    return {f.name: section for section, cls in _SECTIONS.items() for f in dataclasses.fields(cls)}


def _locate(key: str) -> tuple[str, str]:
    if "." in key:
        section, field = key.split(".", 1)
        _check(
            section in _SECTIONS
            and field in {f.name for f in dataclasses.fields(_SECTIONS[section])},
            f"Unknown config field {key!r}.",
        )
        return section, field
    names = field_names()
    _check(key in names, f"Unknown config field {key!r}. Known fields: {', '.join(sorted(names))}")
    return names[key], key


# Presets. "paper": the official defaults at 256 px. "tutorial": the TensorFlow CycleGAN
# tutorial (UNet generator, vanilla GAN, no history pool, 40 epochs, no decay). "quick": CPU-sized,
# trains the built-in dataset to a visible translation in minutes. "tiny": the smallest useful
# model, for tests.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "tutorial": {
        "generator": "unet_256",
        "gan_mode": "vanilla",
        "pool_size": 0,
        "n_epochs": 40,
        "n_epochs_decay": 0,
        "lr_policy": "constant",
        "init_type": "normal",
    },
    "quick": {
        # Chosen by measurement on the built-in dataset (bench/RESULTS.md, "Toward a better quick
        # preset"; score of G_AB on the paired test split against steps, float32 Eigen (the
        # AVX2-only kind's arithmetic) and bfloat16, two seeds):
        # - unet_64 (the official UNet at 6 downsamplings): its skips carry the outlines, so the
        #   geometry is kept (mask IoU 0.91-0.93 at 800 steps) where resnet_6blocks (ngf 32 or 16,
        #   instance norm or none) drew blobs at 800-2,000 steps (IoU 0.68-0.87): instance norm
        #   makes a ResNet blind to the image's absolute grey level, and the UNet's outermost skip
        #   bypasses the norms. ngf 24: ~1.5x the old preset's steps/s on float32 Eigen.
        # - load_size = crop_size = builtin_size: the test images are scored at their own size,
        #   so training on 9/8-resized (blurred, 1.125x wider bands) images taught the wrong size.
        # - the n_layers PatchGAN with 2 layers: 34 px receptive field on 64 px images (the 70 px
        #   basic one sees the whole image), so it judges edges and bands locally.
        # - lr 5e-4 falling every step to ~0 over the second epoch (linear_steps): the epoch
        #   staircase of "linear" only halves the rate over 1 + 1 epochs, and the stripe score
        #   swung 0.04-0.50 between checkpoints at the end; 2e-4 reached lower scores in 800 steps.
        # - 800 steps (1 + 1 epochs of 400): ~4 minutes on the AVX2-only kind (float32).
        # - the official transposed convs, not resize-convolution (upsampling=resize_*): that
        #   smooths the texture but softens outlines; at step 800 over 2 seeds x 2 precisions,
        #   bilinear IoU 0.887 vs 0.907, PSNR 25.5 vs 26.4 (RESULTS.md, round 3).
        "generator": "unet_64",
        "ngf": 24,
        "ndf": 32,
        "discriminator": "n_layers",
        "n_layers_d": 2,
        "load_size": 64,
        "crop_size": 64,
        "lr": 5e-4,
        "lr_policy": "linear_steps",
        "n_epochs": 1,
        "n_epochs_decay": 1,
        "save_epoch": 1,
        "save_steps": 200,
        "log_steps": 20,
    },
    "tiny": {
        "generator": "resnet_6blocks",
        "ngf": 8,
        "ndf": 8,
        "load_size": 36,
        "crop_size": 32,
        "builtin_size": 32,
        "builtin_num_train": 8,
        "builtin_num_test": 4,
        "n_epochs": 1,
        "n_epochs_decay": 1,
        "save_epoch": 1,
        "save_steps": 4,
        "log_steps": 2,
        "pool_size": 4,
    },
}


def preset(name: str, **overrides: Any) -> Config:
    """Builds the named preset, then applies `overrides` (see `Config.replace`)."""
    _choice("preset", name, tuple(PRESETS))
    return Config().replace(**PRESETS[name]).replace(**overrides)
