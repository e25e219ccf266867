"""Importing the official PyTorch CycleGAN generators, without PyTorch and without running code.

This module owns the way from a `.pth` file of the official junyanz/pytorch-CycleGAN-and-pix2pix
code (e.g. its pretrained `horse2zebra.pth`) to a run directory that `inference.load_run`,
`sources.load` (translate, evaluate) and `exporting` use like a trained one:

1. `load_state_dict` reads a PyTorch `state_dict` file through `torch_pickle` (both formats
   `torch.save` writes; nothing in the pickle is executed).
2. `infer_layout` recognises the architecture from keys and shapes (resnet_9blocks /
   resnet_6blocks / unet_256 / unet_128, `ngf`, dropout) and drops the InstanceNorm running
   statistics PyTorch 0.4 saved (the official loader deletes them too).
3. `to_keras` / `assign` map every PyTorch module path to the layer of `generators.build_generator`
   that mirrors it and transpose the kernels to Keras' layout.
4. `import_torch` writes a run directory (config.json, checkpoints/ckpt-0 and `imported.json`,
   which records the source files and the directions present; `rundir.imported_directions` and
   `rundir.check_directions` read it back).

5. `init_generators` starts a NEW training run from such generators (`train --init_from`): from a
   run directory (imported or trained) or directly from `.pth` files, refusing an architecture
   that differs from the new run's config; `write_init_record` writes `<run>/init.json`.

Errors about the files are `PretrainedError` (an `errors.UserError`): one line naming the file and
the problem.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import hashlib
import io
import json
import os
import re
import shutil
import uuid
import zipfile
from collections.abc import Mapping

import keras
import numpy as np
import tensorflow as tf

from cyclegan_tf import checkpoints, errors, generators, layers, rundir, torch_pickle, version
from cyclegan_tf import config as config_lib

# The directions and their checkpoint object names: a run directory's (`rundir`).
DIRECTIONS = rundir.DIRECTIONS
GENERATOR_NAMES = rundir.GENERATOR_NAMES

_RUNNING_STATS = ("running_mean", "running_var", "num_batches_tracked")
# The config.ModelConfig fields a generator's weights fix; the variant ones have no flags.
_VARIANT_FIELDS = ("norm_epsilon", "down_padding", "upsampling", "conv_bias")
ARCHITECTURE_FIELDS = ("generator", "ngf", "dropout", "norm", *_VARIANT_FIELDS)


class PretrainedError(errors.UserError):
    """A PyTorch file that cannot (or must not) be imported, or generators that cannot start a run
    (`init_generators`); the message says which and why."""


# -- reading state_dict files ----------------------------------------------------------------


def _read(path: str) -> tuple[dict[str, np.ndarray], str, str]:
    """(state_dict, "legacy" | "zip", sha256) of a file (`torch_pickle.read`)."""
    try:
        return torch_pickle.read(path)
    except torch_pickle.TorchFileError as e:
        raise PretrainedError(str(e)) from None


def load_state_dict(path: str) -> dict[str, np.ndarray]:
    """Reads a PyTorch `state_dict` file without PyTorch and without running code from it.

    See `torch_pickle.load_state_dict`; this raises `PretrainedError` with the same messages.

    Args:
      path: a `.pth` file holding a state_dict, e.g. the official `horse2zebra.pth`.

    Returns:
      The state_dict in file order: key (e.g. `model.1.weight`) -> numpy array in PyTorch's
      layout (Conv2d weights `[out, in, kh, kw]`).

    Raises:
      PretrainedError: the file is unreadable, not a state_dict, corrupt, or references anything
        a state_dict never needs (the message names it).
    """
    return _read(path)[0]


# -- layouts ---------------------------------------------------------------------------------

# Where a layout comes from: junyanz/pytorch-CycleGAN-and-pix2pix (the official files; the original
# aitorzip/PyTorch-CycleGAN Generator has the same keys), the aitorzip family (its forks: the same
# `model.N` Sequential with residual Sequentials named `block`, and/or InstanceNorm2d(affine=True)),
# aladdinpersson's Machine-Learning-Collection CycleGAN, and keras-io's CycleGAN example (Keras
# weights, not a .pth).
FAMILIES = ("junyanz", "aitorzip", "aladdinpersson", "keras_io")
_RESNET_BLOCKS = {9: "resnet_9blocks", 6: "resnet_6blocks"}
_UNET_DOWNS = {8: "unet_256", 7: "unet_128"}
# keras-io builds its norms with tfa's InstanceNormalization / Keras' GroupNormalization(groups=-1),
# whose epsilon defaults to 1e-3; a weights-only file does not store it.
_KERAS_EPSILON = 1e-3


@dataclasses.dataclass(frozen=True)
class Layout:
    """The generator a file holds: where its layout comes from, and the generator of
    `generators.build_generator` it maps to.

    Attributes:
      generator: resnet_9blocks | resnet_6blocks | unet_256 | unet_128.
      ngf: filters of the first conv.
      dropout: whether the ResNet blocks had dropout (their second conv moves from
        `conv_block.5` to `conv_block.6`). UNet dropout holds no weights and leaves the keys
        alone, so it is always False for UNets; inference (`training=False`) does not use it.
      norm: "instance" (affine-free InstanceNorm2d, the official CycleGAN choice) or
        "instance_affine" (learned scale and offset).
      family: one of `FAMILIES`.
      block_name: junyanz/aitorzip: the residual Sequential's attribute (conv_block | block).
      norm_epsilon, down_padding, upsampling, conv_bias: the ResNet variant (see
        `config.ModelConfig`; the defaults are the official network).
      dropped_keys: the running-statistics keys of the norm layers that were ignored (PyTorch 0.4
        saved them for InstanceNorm; the official loader deletes them too).
    """

    generator: str
    ngf: int
    dropout: bool = False
    norm: str = "instance"
    family: str = "junyanz"
    block_name: str = "conv_block"
    norm_epsilon: float = 1e-5
    down_padding: str = "zeros"
    upsampling: str = "torch"
    conv_bias: str = "auto"
    dropped_keys: tuple[str, ...] = dataclasses.field(default=(), compare=False, repr=False)

    def architecture(self) -> dict:
        """The `config.ModelConfig` fields of the generator this layout maps to."""
        return {
            "generator": self.generator,
            "ngf": self.ngf,
            "dropout": self.dropout,
            "norm": self.norm,
            "norm_epsilon": self.norm_epsilon,
            "down_padding": self.down_padding,
            "upsampling": self.upsampling,
            "conv_bias": self.conv_bias,
        }

    def describe(self) -> str:
        """The layout found, in one phrase (e.g. for imported.json and import-torch's output)."""
        affine = "affine" if self.norm == "instance_affine" else "affine-free"
        norm = f"{affine} InstanceNorm"
        if self.generator.startswith("unet"):
            return f"junyanz UnetGenerator ({self.generator}, model.model... nesting, {norm})"
        blocks = {v: k for k, v in _RESNET_BLOCKS.items()}[self.generator]
        if self.family in ("junyanz", "aitorzip"):
            first = f"model.10-{9 + blocks}.{self.block_name}"
            same = ", as aitorzip's original" if self.family == "junyanz" else ""
            return (
                f"{self.family} ResnetGenerator (model.N Sequential{same}, {blocks} blocks "
                f"{first}, {norm}{', dropout' if self.dropout else ''})"
            )
        if self.family == "aladdinpersson":
            return (
                f"aladdinpersson Generator (initial, down_blocks, res_blocks, up_blocks, last; "
                f"{blocks} blocks, reflect-padded convs, {norm})"
            )
        return (
            f"keras-io CycleGAN generator ({blocks} residual blocks, Keras 'same' strided convs, "
            f"{norm} eps {self.norm_epsilon:g})"
        )

    def to_dict(self) -> dict:
        """The layout found and the architecture it maps to (without `dropped_keys`), e.g. for
        imported.json."""
        return {"family": self.family, "found": self.describe(), **self.architecture()}


@dataclasses.dataclass(frozen=True)
class _Entry:
    """One module of the file and the Keras layer that mirrors it."""

    torch: str  # module path, e.g. "model.10.conv_block.1" (keras-io: "conv.3", see _read_keras)
    keras: str  # layer name, e.g. "block1_conv1"
    kind: str  # conv | conv_transpose | norm


def _resnet_entries(n_blocks: int, dropout: bool, block_name: str = "conv_block") -> list[_Entry]:
    """ResnetGenerator's `model` Sequential: pad, conv, norm, relu (0-3), two downsamplings
    (4-9), the blocks (10 ...), two upsamplings, pad, conv, tanh."""
    entries = [
        _Entry("model.1", "in_conv", "conv"),
        _Entry("model.2", "in_norm", "norm"),
        _Entry("model.4", "down1_conv", "conv"),
        _Entry("model.5", "down1_norm", "norm"),
        _Entry("model.7", "down2_conv", "conv"),
        _Entry("model.8", "down2_norm", "norm"),
    ]
    # conv_block: pad, conv, norm, relu, [dropout], pad, conv, norm.
    second = 6 if dropout else 5
    for b in range(1, n_blocks + 1):
        block = f"model.{9 + b}.{block_name}"
        entries += [
            _Entry(f"{block}.1", f"block{b}_conv1", "conv"),
            _Entry(f"{block}.2", f"block{b}_norm1", "norm"),
            _Entry(f"{block}.{second}", f"block{b}_conv2", "conv"),
            _Entry(f"{block}.{second + 1}", f"block{b}_norm2", "norm"),
        ]
    up = 10 + n_blocks
    return entries + [
        _Entry(f"model.{up}", "up1_conv", "conv_transpose"),
        _Entry(f"model.{up + 1}", "up1_norm", "norm"),
        _Entry(f"model.{up + 3}", "up2_conv", "conv_transpose"),
        _Entry(f"model.{up + 4}", "up2_norm", "norm"),
        _Entry(f"model.{up + 7}", "out_conv", "conv"),
    ]


def _aladdinpersson_entries(n_blocks: int) -> list[_Entry]:
    """Generator: `initial` (conv, norm, relu), `down_blocks` and `up_blocks` (ConvBlocks: a
    `conv` Sequential of conv, norm, act), `res_blocks` (ResidualBlocks: a `block` Sequential of
    two ConvBlocks), `last` (conv)."""
    entries = [_Entry("initial.0", "in_conv", "conv"), _Entry("initial.1", "in_norm", "norm")]
    for i in (1, 2):
        entries += [
            _Entry(f"down_blocks.{i - 1}.conv.0", f"down{i}_conv", "conv"),
            _Entry(f"down_blocks.{i - 1}.conv.1", f"down{i}_norm", "norm"),
        ]
    for b in range(1, n_blocks + 1):
        for j in (1, 2):
            block = f"res_blocks.{b - 1}.block.{j - 1}.conv"
            entries += [
                _Entry(f"{block}.0", f"block{b}_conv{j}", "conv"),
                _Entry(f"{block}.1", f"block{b}_norm{j}", "norm"),
            ]
    for i in (1, 2):
        entries += [
            _Entry(f"up_blocks.{i - 1}.conv.0", f"up{i}_conv", "conv_transpose"),
            _Entry(f"up_blocks.{i - 1}.conv.1", f"up{i}_norm", "norm"),
        ]
    return entries + [_Entry("last", "out_conv", "conv")]


def _keras_io_entries(n_blocks: int) -> list[_Entry]:
    """keras-io's get_resnet_generator, in the order of each kind of layer (`_read_keras`)."""
    entries = [_Entry("conv.0", "in_conv", "conv"), _Entry("norm.0", "in_norm", "norm")]
    for i in (1, 2):
        entries += [
            _Entry(f"conv.{i}", f"down{i}_conv", "conv"),
            _Entry(f"norm.{i}", f"down{i}_norm", "norm"),
        ]
    for b in range(1, n_blocks + 1):
        for j in (1, 2):
            index = 2 * b + j
            entries += [
                _Entry(f"conv.{index}", f"block{b}_conv{j}", "conv"),
                _Entry(f"norm.{index}", f"block{b}_norm{j}", "norm"),
            ]
    for i in (1, 2):
        entries += [
            _Entry(f"conv_transpose.{i - 1}", f"up{i}_conv", "conv_transpose"),
            _Entry(f"norm.{2 * n_blocks + 2 + i}", f"up{i}_norm", "norm"),
        ]
    return entries + [_Entry(f"conv.{2 * n_blocks + 3}", "out_conv", "conv")]


def _unet_prefix(level: int) -> str:
    """The Sequential of UnetSkipConnectionBlock `level` (1 = outermost).

    The outermost block is [downconv, submodule, uprelu, upconv, tanh], so level 2 sits at `.1`;
    the others are [downrelu, downconv, downnorm, submodule, uprelu, upconv, upnorm, (dropout)],
    so deeper levels sit at `.3`.
    """
    prefix = "model.model"
    for depth in range(2, level + 1):
        prefix += ".1.model" if depth == 2 else ".3.model"
    return prefix


def _unet_entries(num_downs: int) -> list[_Entry]:
    outer = _unet_prefix(1)
    entries = [_Entry(f"{outer}.0", "down1_conv", "conv")]
    for level in range(2, num_downs):
        p = _unet_prefix(level)
        entries += [
            _Entry(f"{p}.1", f"down{level}_conv", "conv"),
            _Entry(f"{p}.2", f"down{level}_norm", "norm"),
            _Entry(f"{p}.5", f"up{level}_conv", "conv_transpose"),
            _Entry(f"{p}.6", f"up{level}_norm", "norm"),
        ]
    # The innermost block: [downrelu, downconv, uprelu, upconv, upnorm].
    inner = _unet_prefix(num_downs)
    entries += [
        _Entry(f"{inner}.1", f"down{num_downs}_conv", "conv"),
        _Entry(f"{inner}.3", f"up{num_downs}_conv", "conv_transpose"),
        _Entry(f"{inner}.4", f"up{num_downs}_norm", "norm"),
    ]
    return entries + [_Entry(f"{outer}.3", "up1_conv", "conv_transpose")]


def _entries(layout: Layout) -> list[_Entry]:
    if layout.generator.startswith("unet"):
        return _unet_entries({v: k for k, v in _UNET_DOWNS.items()}[layout.generator])
    n_blocks = {v: k for k, v in _RESNET_BLOCKS.items()}[layout.generator]
    if layout.family == "aladdinpersson":
        return _aladdinpersson_entries(n_blocks)
    if layout.family == "keras_io":
        return _keras_io_entries(n_blocks)
    return _resnet_entries(n_blocks, layout.dropout, layout.block_name)


def _param_names(layout: Layout, entry: _Entry) -> tuple[str, ...]:
    """The file's tensor names of an entry, in the order of the Keras layer's (kernel, bias) or
    (gamma, beta); () for an affine-free norm."""
    keras_style = layout.family == "keras_io"
    if entry.kind == "norm":
        if layout.norm != "instance_affine":
            return ()
        return ("gamma", "beta") if keras_style else ("weight", "bias")
    bias = layout.conv_bias == "auto" or entry.keras == "out_conv"
    names = ("kernel", "bias") if keras_style else ("weight", "bias")
    return names if bias else names[:1]


def _expected_keys(layout: Layout) -> tuple[list[str], set[str]]:
    """(parameter keys in order, optional running-statistics keys of the norms)."""
    params, stats = [], set()
    for entry in _entries(layout):
        params += [f"{entry.torch}.{name}" for name in _param_names(layout, entry)]
        if entry.kind == "norm" and layout.family != "keras_io":
            stats.update(f"{entry.torch}.{name}" for name in _RUNNING_STATS)
    return params, stats


def _ndim(state_dict: Mapping[str, np.ndarray], key: str) -> int:
    return np.ndim(state_dict[key]) if key in state_dict else -1


def _count_blocks(keys: list[str], pattern: str) -> list[int]:
    """The sorted distinct block indices captured by `pattern`'s first group."""
    return sorted({int(m.group(1)) for k in keys if (m := re.fullmatch(pattern, k))})


def _ngf(state_dict: Mapping[str, np.ndarray], key: str, source: str, dims: int = 4) -> int:
    shape = np.shape(state_dict.get(key))
    if len(shape) != dims:
        raise PretrainedError(f"{source}: {key} has shape {list(shape)}, expected {dims} dims.")
    return int(shape[-1] if key.startswith("conv.") else shape[0])


def _blocks_name(n_blocks: int, found: str, source: str) -> str:
    name = _RESNET_BLOCKS.get(n_blocks)
    if name is None:
        raise PretrainedError(
            f"{source}: {found}, but {n_blocks} residual blocks were found; 6 or 9 "
            "(resnet_6blocks, resnet_9blocks) can be imported."
        )
    return name


def _affine(state_dict, key: str) -> str:
    return "instance_affine" if _ndim(state_dict, f"{key}.weight") == 1 else "instance"


def _infer_sequential(state_dict, keys: list[str], source: str) -> Layout:
    """junyanz/aitorzip: `model.N` with residual Sequentials `model.N.conv_block|block.*`."""
    names = sorted({m.group(1) for k in keys if (m := re.match(r"model\.\d+\.(\w+)\.\d+\.", k))})
    norm = _affine(state_dict, "model.2")
    affine = "affine" if norm == "instance_affine" else "affine-free"
    if len(names) != 1 or names[0] not in ("conv_block", "block"):
        found = ", ".join(f"model.N.{n}.*" for n in names) or "no model.N.<blocks>.* keys"
        raise PretrainedError(
            f"{source}: model.1.weight looks like a ResnetGenerator Sequential (junyanz/aitorzip) "
            f"with {affine} norms, but its residual blocks are {found}; blocks named "
            "model.N.conv_block.* or model.N.block.* (6 or 9 of them) can be imported."
        )
    block = names[0]
    blocks = _count_blocks(keys, rf"model\.(\d+)\.{block}\.1\.weight")
    family = "junyanz" if block == "conv_block" and norm == "instance" else "aitorzip"
    label = "official" if family == "junyanz" else "aitorzip"
    found = f"model.10.{block}.* looks like {label} blocks with {affine} norm"
    name = _blocks_name(len(blocks), found, source)
    if blocks != list(range(10, 10 + len(blocks))):
        raise PretrainedError(
            f"{source}: {found}, but at model.{blocks[0]}-{blocks[-1]} with gaps; they must "
            f"follow each other from model.10."
        )
    # With dropout the second conv is at .6 (a 4-D weight; an affine norm's .6.weight is 1-D).
    dropout = _ndim(state_dict, f"model.10.{block}.6.weight") == 4
    ngf = _ngf(state_dict, "model.1.weight", source)
    return Layout(name, ngf, dropout, norm, family=family, block_name=block)


def _infer_unet(state_dict, source: str) -> Layout:
    depth = 1
    while f"{_unet_prefix(depth + 1)}.1.weight" in state_dict:
        depth += 1
    name = _UNET_DOWNS.get(depth)
    if name is None:
        raise PretrainedError(
            f"{source}: model.model.* looks like a junyanz UnetGenerator, but with {depth} "
            "downsamplings; 7 or 8 (unet_128, unet_256) can be imported."
        )
    return Layout(name, _ngf(state_dict, "model.model.0.weight", source))


def _infer_aladdinpersson(state_dict, keys: list[str], source: str) -> Layout:
    norm = _affine(state_dict, "initial.1")
    affine = "affine" if norm == "instance_affine" else "affine-free"
    blocks = _count_blocks(keys, r"res_blocks\.(\d+)\.block\.0\.conv\.0\.weight")
    found = f"res_blocks.* looks like aladdinpersson's Generator with {affine} norm"
    name = _blocks_name(len(blocks), found, source)
    ngf = _ngf(state_dict, "initial.0.weight", source)
    return Layout(name, ngf, False, norm, family="aladdinpersson", down_padding="reflect")


def _infer_keras_io(state_dict, keys: list[str], source: str) -> Layout:
    """keras-io: Conv2D 3 + 2n + 1 (no bias but the last), Conv2DTranspose 2, norms 3 + 2n + 2."""
    convs = _count_blocks(keys, r"conv\.(\d+)\.kernel")
    transposes = _count_blocks(keys, r"conv_transpose\.(\d+)\.kernel")
    norms = _count_blocks(keys, r"norm\.(\d+)\.gamma")
    n_blocks = (len(convs) - 4) // 2
    found = (
        f"{len(convs)} Conv2D, {len(transposes)} Conv2DTranspose and {len(norms)} norm layers "
        "look like a keras-io CycleGAN generator"
    )
    if len(transposes) != 2 or len(norms) != len(convs) + 1 or len(convs) % 2:
        raise PretrainedError(
            f"{source}: {found} only if there are 2 Conv2DTranspose, 2n + 4 Conv2D and 2n + 5 "
            "norm layers with scale and offset (n = 6 or 9 residual blocks)."
        )
    name = _blocks_name(n_blocks, found, source)
    biases = [i for i in convs if f"conv.{i}.bias" in state_dict]
    if biases == convs[-1:]:
        conv_bias = "output_only"
    elif biases == convs and "conv_transpose.0.bias" in state_dict:
        conv_bias = "auto"
    else:
        raise PretrainedError(
            f"{source}: {found}, but only Conv2D {biases} have biases; every conv or only the "
            "last can be imported."
        )
    ngf = _ngf(state_dict, "conv.0.kernel", source)
    epsilon = float(state_dict.get("epsilon", _KERAS_EPSILON))
    return Layout(
        name,
        ngf,
        False,
        "instance_affine",
        family="keras_io",
        block_name="",
        norm_epsilon=epsilon,
        down_padding="keras_same",
        upsampling="keras_same",
        conv_bias=conv_bias,
    )


def infer_layout(state_dict: Mapping[str, np.ndarray], source: str = "the state_dict") -> Layout:
    """Recognises which generator a state_dict holds, from its keys and shapes alone.

    - junyanz (official) ResnetGenerator: `model.<i>...` with `model.<i>.conv_block.{1,5}` per
      residual block (`{1,6}` with dropout); the aitorzip family is the same Sequential with blocks
      named `block` and/or affine InstanceNorm weights (`model.2.weight` ...).
    - junyanz UnetGenerator: one `.model.<i>.model` per level (`model.model.1.model.3.model...`).
    - aladdinpersson: `initial.0`, `down_blocks.<i>.conv.0`, `res_blocks.<i>.block.<j>.conv.0`,
      `up_blocks.<i>.conv.0`, `last`.
    - keras-io: the `conv.<i>.kernel` ... names `_read_keras` gives a Keras file's layers.

    `ngf` is the first conv's output channels. Every key must be one the recognised generator
    has; norm running statistics are the only extra keys allowed (and are dropped).

    Args:
      state_dict: key -> array, as `load_state_dict` returns it.
      source: what to call the state_dict in messages (the file name).

    Returns:
      The `Layout`; `dropped_keys` lists the running-statistics keys that were ignored.

    Raises:
      PretrainedError: the keys match no known layout, or a recognised layout has a count or a
        key it cannot have (the message says what was found and what can be imported).
    """
    keys = [k for k in state_dict if k != "epsilon"]
    if "model.1.weight" in state_dict:
        layout = _infer_sequential(state_dict, keys, source)
    elif any(k.startswith("model.model.") for k in keys):
        layout = _infer_unet(state_dict, source)
    elif "initial.0.weight" in state_dict:
        layout = _infer_aladdinpersson(state_dict, keys, source)
    elif "conv.0.kernel" in state_dict:
        layout = _infer_keras_io(state_dict, keys, source)
    else:
        found = f"keys like {', '.join(repr(k) for k in keys[:2])}" if keys else "no tensors"
        raise PretrainedError(
            f"{source} matches no known generator layout: it has {found}; importable are the "
            "junyanz/aitorzip ResnetGenerator (model.N...), junyanz UnetGenerator "
            "(model.model...), aladdinpersson's Generator (initial, down_blocks, res_blocks, "
            "up_blocks, last) and keras-io's generator (.h5/.weights.h5/.keras)."
        )

    params, stats = _expected_keys(layout)
    entries = _entries(layout)
    norms = {e.torch for e in entries if e.kind == "norm"}
    expected = set(params)
    described = layout.describe()
    for key in keys:
        if key not in expected and key not in stats:
            hint = ""
            if key.rsplit(".", 1)[0] in norms:
                hint = (
                    ": a norm weight where the other norms have none (the norms must be all "
                    "affine or all affine-free InstanceNorm)"
                )
            raise PretrainedError(
                f"{source} matches no known generator layout: unexpected key {key!r} for the "
                f"{described}{hint}."
            )
    missing = [k for k in params if k not in state_dict]
    if missing:
        raise PretrainedError(
            f"{source} matches no known generator layout: key {missing[0]!r} of the "
            f"{described} is missing."
        )
    return dataclasses.replace(layout, dropped_keys=tuple(k for k in keys if k in stats))


# -- Keras files (keras-io) --------------------------------------------------------------------

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
# keras-io's CycleGan model keeps its generators as gen_G (A -> B) and gen_F (B -> A).
_KERAS_GENERATORS = {"a2b": "gen_G", "b2a": "gen_F"}


def _keras_kind(layer: str, params: dict) -> str | None:
    """conv | conv_transpose | norm | None (no weights) from a Keras layer's name and weights."""
    base = re.sub(r"_\d+$", "", layer.rsplit("/", 1)[-1])
    if not params:
        return None
    if "gamma" in params or "beta" in params:
        return "norm"
    if "kernel" in params:
        return "conv_transpose" if "transpose" in base else "conv"
    return "other"


def _read_keras(path: str, data: bytes, direction: str) -> dict[str, np.ndarray]:
    """A Keras weights file as `conv.<i>.kernel|bias`, `conv_transpose.<i>.kernel|bias`,
    `norm.<i>.gamma|beta` (i: the order of that kind of layer in the model) plus `epsilon` when
    the file has the model's config; read with h5py (data only, nothing executed).

    `.weights.h5` / `.keras` (Keras 3: `layers/<class>_<k>/vars/<i>`, counters per class in layer
    order) and legacy `.h5` (Keras 2 and Keras 3's `model.save("x.h5")`: layer order in the
    `layer_names` attribute, `weight_names` per layer). A keras-io CycleGan's whole weights hold
    both generators (`gen_G`, `gen_F`): `direction` picks one.
    """
    import h5py  # Keras' own dependency; imported here, where Keras files are read

    config_json = None
    if data.startswith(torch_pickle._ZIP_MAGIC):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
            if "model.weights.h5" not in names:
                raise PretrainedError(f"{path} is a zip archive, but not a .pth or .keras file.")
            data = archive.read("model.weights.h5")
            if "config.json" in names:
                config_json = archive.read("config.json").decode("utf-8", "replace")
    layers_found: dict[str, list[tuple[str, dict]]] = {}
    with h5py.File(io.BytesIO(data), "r") as f:
        root = f["model_weights"] if "model_weights" in f else f
        if "layer_names" in root.attrs:  # legacy h5
            if "model_config" in f.attrs:
                config_json = _text(f.attrs["model_config"])
            layers_found[""] = []
            for layer in (_text(n) for n in root.attrs["layer_names"]):
                group = root[layer]
                params = {}
                for weight in (_text(n) for n in group.attrs.get("weight_names", [])):
                    short = weight.rsplit("/", 1)[-1].split(":")[0]
                    params[short] = np.asarray(group[weight], np.float32)
                layers_found[""].append((layer, params))
        else:  # Keras 3: [<attribute>/]layers/<class>[_k]/vars/<i>
            for prefix in [""] + [f"{k}/" for k in root if k not in ("layers", "vars")]:
                group = root.get(f"{prefix}layers")
                if group is None:
                    continue
                entries = []
                for layer in sorted(group, key=_class_order):
                    held = group[layer].get("vars") or {}
                    arrays = [np.asarray(held[str(i)], np.float32) for i in range(len(held))]
                    kind = _keras_class_kind(layer)
                    names = {"norm": ("gamma", "beta")}.get(kind, ("kernel", "bias"))
                    entries.append((layer, dict(zip(names, arrays))))
                layers_found[prefix.rstrip("/")] = entries
    # The norms' epsilon, when the file has the model's config (.keras, a whole-model .h5).
    epsilons = {float(e) for e in re.findall(r'"epsilon": ([0-9.eE+-]+)', config_json or "")}
    epsilon = epsilons.pop() if len(epsilons) == 1 else None

    generators_found = {k: v for k, v in layers_found.items() if any(p for _, p in v)}
    if len(generators_found) == 1:
        (layers_list,) = generators_found.values()
    elif _KERAS_GENERATORS[direction] in generators_found:
        layers_list = generators_found[_KERAS_GENERATORS[direction]]
    else:
        raise PretrainedError(
            f"{path} holds the weights of {', '.join(sorted(generators_found)) or 'no model'}; "
            "pass a file of one generator, or keras-io's CycleGan weights (gen_G: a2b, gen_F: b2a)."
        )
    state_dict: dict[str, np.ndarray] = {}
    counters: dict[str, int] = collections.Counter()
    for layer, params in layers_list:
        kind = _keras_kind(layer, params)
        if kind is None:
            continue
        if kind == "other":
            raise PretrainedError(
                f"{path}: layer {layer!r} has weights {sorted(params)}, which no layer of the "
                "keras-io generator has (Conv2D, Conv2DTranspose, instance norm)."
            )
        index = counters[kind]
        counters[kind] += 1
        for name, value in params.items():
            state_dict[f"{kind}.{index}.{name}"] = value
    if epsilon is not None:
        state_dict["epsilon"] = np.float64(epsilon)  # not a tensor: the config's value
    return state_dict


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _class_order(name: str) -> tuple[str, int]:
    """Keras 3 names a model's layers <class>, <class>_1, <class>_2 ... in layer order."""
    m = re.fullmatch(r"(.*?)(?:_(\d+))?", name)
    return m.group(1), int(m.group(2) or 0)


def _keras_class_kind(layer: str) -> str:
    base = _class_order(layer)[0]
    if base.endswith("normalization"):
        return "norm"
    return "conv_transpose" if "transpose" in base else "conv"


def _read_weights(path: str, direction: str = "a2b") -> tuple[dict[str, np.ndarray], str, str]:
    """(state_dict, format, sha256) of a PyTorch .pth (`torch_pickle`) or a Keras weights file
    (`_read_keras`; format "keras")."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            is_zip = head.startswith(torch_pickle._ZIP_MAGIC)
            is_keras = head.startswith(_HDF5_MAGIC) or (
                is_zip and "model.weights.h5" in zipfile.ZipFile(f).namelist()
            )
    except OSError as e:
        raise PretrainedError(f"cannot read {path}: {e.strerror or e}") from e
    except zipfile.BadZipFile:
        is_keras = False
    if not is_keras:
        return _read(path)
    with open(path, "rb") as f:
        data = f.read()
    try:
        state_dict = _read_keras(path, data, direction)
    except PretrainedError:
        raise
    except Exception as e:  # anything h5py raises on malformed input
        raise PretrainedError(
            f"cannot load {path} (Keras weights): {type(e).__name__}: {_first_line(e)}"
        ) from None
    return state_dict, "keras", hashlib.sha256(data).hexdigest()


# -- Keras models ----------------------------------------------------------------------------


def assign(
    model: keras.Model,
    state_dict: Mapping[str, np.ndarray],
    layout: Layout,
    source: str = "the state_dict",
) -> None:
    """Sets every weight of `model` from `state_dict`.

    Conv2d weights `[out, in, kh, kw]` become Keras kernels `[kh, kw, in, out]`; ConvTranspose2d
    weights `[in, out, kh, kw]` become Conv2DTranspose kernels `[kh, kw, out, in]` (the same
    permutation; `layers.conv2d_transpose` crops the full result like PyTorch's `padding`, so no
    flip or shift is needed); affine InstanceNorm2d `weight`/`bias` become gamma/beta. Keras
    files' kernels are in Keras' layout already. Every Keras weight is assigned exactly once and
    every state_dict tensor except `layout.dropped_keys` is used exactly once.

    Args:
      model: a generator built like `generators.build_generator(**layout.architecture())`
        (any precision policy).
      state_dict: key -> array, as `load_state_dict` returns it.
      layout: from `infer_layout(state_dict)`.
      source: what to call the state_dict in messages.

    Raises:
      PretrainedError: a missing, unused or misshapen tensor (named), or a model that does not
        have the layout's layers (e.g. a resize-convolution generator: no file has its layout).
    """
    resizes = [x.name for x in model.layers if isinstance(x, layers.Resize2x)]
    if resizes:  # checked before any weight is set: a refused model is left as it was
        raise PretrainedError(
            f"model {model.name!r} upsamples by resize-convolution ({resizes[0]!r}), but "
            f"{source} holds the transposed convolutions of {layout.describe()}: build the "
            "model with upsampling='torch'."
        )
    assigned: set[int] = set()
    used: set[str] = set()
    torch_layout = layout.family != "keras_io"
    for entry in _entries(layout):
        try:
            layer = model.get_layer(entry.keras)
        except ValueError:
            raise PretrainedError(
                f"model {model.name!r} has no layer {entry.keras!r}: build it for {layout}."
            ) from None
        names = _param_names(layout, entry)
        if entry.kind == "norm":
            variables = [layer.gamma, layer.beta] if layer.weights else []
        else:
            variables = [layer.kernel, layer.bias] if layer.bias is not None else [layer.kernel]
        if len(variables) != len(names):
            raise PretrainedError(
                f"model {model.name!r} has {len(variables)} weights in {entry.keras!r}, but "
                f"{source} has {len(names)} there: build the model for {layout.architecture()}."
            )
        for variable, name in zip(variables, names):
            key = f"{entry.torch}.{name}"
            if key not in state_dict or key in used:
                raise PretrainedError(
                    f"{source}: cannot assign {key!r} to layer {entry.keras!r} of {model.name!r}."
                )
            value = np.asarray(state_dict[key], np.float32)
            if value.ndim == 4 and torch_layout:  # [out, in, kh, kw] / [in, out, ...] -> [kh, ...]
                value = value.transpose(2, 3, 1, 0)
            if value.shape != tuple(variable.shape):
                file_shape = list(np.shape(state_dict[key]))
                wanted = list(variable.shape)
                if len(wanted) == 4 and torch_layout:
                    wanted = [wanted[3], wanted[2], wanted[0], wanted[1]]
                raise PretrainedError(
                    f"{source}: {key} has shape {file_shape}, but the {layout.generator} "
                    f"generator with ngf={layout.ngf} needs {wanted}."
                )
            variable.assign(value)
            assigned.add(id(variable))
            used.add(key)
    for variable in model.weights:
        if id(variable) not in assigned:
            raise PretrainedError(
                f"{source} has no tensor for weight {variable.path!r} of {model.name!r}: build "
                f"the model for {layout}."
            )
    unused = [
        k for k in state_dict if k not in used and k not in layout.dropped_keys and k != "epsilon"
    ]
    if unused:
        raise PretrainedError(f"{source}: tensor {unused[0]!r} has no place in the model.")


def to_keras(
    state_dict: Mapping[str, np.ndarray],
    layout: Layout,
    model_name: str = "g_ab",
    source: str = "the state_dict",
) -> keras.Model:
    """Builds the generator `layout` maps to and loads `state_dict` into it.

    Args:
      state_dict: key -> array, as `load_state_dict` returns it.
      layout: from `infer_layout(state_dict)`.
      model_name: the Keras model name: "g_ab" or "g_ba", like the trainer's generators.
      source: what to call the state_dict in messages.

    Returns:
      A Keras model `[N, H, W, 3]` float in [-1, 1] -> `[N, H, W, 3]` float32 that computes what
      the source generator computes in eval mode (H, W multiples of
      `generators.size_multiple(layout.generator)`; `inference.pad_run_crop` for any size).

    Raises:
      PretrainedError: see `assign`.
    """
    arguments = layout.architecture()
    name = arguments.pop("generator")
    model = generators.build_generator(name, model_name=model_name, **arguments)
    assign(model, state_dict, layout, source)
    return model


# -- run directories -------------------------------------------------------------------------


def import_torch(
    weights: str,
    direction: str,
    output_dir: str,
    weights_b2a: str | None = None,
    generator: str = "auto",
) -> str:
    """Writes a run directory holding official PyTorch generator weights.

    The directory is what `inference.load_run`, `sources.load` and `exporting` read: `config.json`
    (the paper preset with the file's generator, ngf and dropout, and precision float32, the
    precision the PyTorch outputs are reproduced in), `checkpoints/ckpt-0` with the
    imported generators only (`g_ab` and/or `g_ba`), and `imported.json` recording the source
    files, their sha256, the layout, the directions present and the date. Everything is read and
    checked before anything is written; the directory is assembled next to `output_dir` and
    renamed into place when complete, so a failure leaves nothing behind.

    Args:
      weights: a `.pth` generator state_dict (e.g. the official `horse2zebra.pth`).
      direction: what `weights` translates: a2b (stored as g_ab) or b2a (g_ba).
      output_dir: the run directory to create; must not exist or be empty.
      weights_b2a: with direction a2b, the file of the opposite generator (e.g. `zebra2horse.pth`).
      generator: "auto" (recognise it) or the generator name the files must hold.

    Returns:
      `output_dir`.

    Raises:
      PretrainedError: an unusable or unsafe file, files of two different architectures, a
        generator other than the one asked for, or an existing non-empty `output_dir`.
      errors.ConfigError: a bad direction or generator name.
    """
    # 1. Arguments and destination.
    if direction not in DIRECTIONS:
        raise errors.ConfigError(f"direction must be a2b or b2a. Received: direction={direction!r}")
    if weights_b2a is not None and direction != "a2b":
        raise errors.ConfigError(
            "weights_b2a is the b2a file to go with a2b weights; with direction=b2a pass one file."
        )
    if generator != "auto" and generator not in config_lib.GENERATORS:
        raise errors.ConfigError(
            f"generator must be auto or one of {', '.join(config_lib.GENERATORS)}. "
            f"Received: generator={generator!r}"
        )
    if os.path.exists(output_dir) and (not os.path.isdir(output_dir) or os.listdir(output_dir)):
        raise PretrainedError(
            f"{output_dir} already exists and is not empty; choose a new --output_dir."
        )

    # 2. Read and check every file before writing anything.
    files = {direction: weights}
    if weights_b2a is not None:
        files["b2a"] = weights_b2a
    models, sources, layouts = {}, {}, {}
    for dirn, path in files.items():
        state_dict, kind, digest = _read_weights(path, dirn)
        layout = infer_layout(state_dict, path)
        if generator != "auto" and layout.generator != generator:
            raise PretrainedError(
                f"{path} holds a {layout.generator} generator, not {generator}; pass "
                "--generator=auto or the matching file."
            )
        models[dirn] = to_keras(state_dict, layout, GENERATOR_NAMES[dirn], source=path)
        layouts[dirn] = layout
        sources[dirn] = {
            "file": os.path.abspath(path),
            "sha256": digest,
            "format": kind,
            "tensors": len(state_dict) - len(layout.dropped_keys),
            "dropped_keys": len(layout.dropped_keys),
        }
    layout = layouts[direction]
    for dirn, other in layouts.items():
        if other.architecture() != layout.architecture():
            raise PretrainedError(
                f"{files[dirn]} holds {other.architecture()} but {files[direction]} holds "
                f"{layout.architecture()}; both directions of a run share one architecture."
            )

    # 3. Assemble the run next to its destination, then rename it into place.
    output_dir = os.path.abspath(output_dir)
    parent = os.path.dirname(output_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(output_dir)}.import-{uuid.uuid4().hex[:12]}")
    os.mkdir(tmp)
    try:
        # float32: the precision the weights were trained and are checked in; translating
        # an imported run reproduces the PyTorch outputs unless asked for another precision.
        run_config = config_lib.preset("paper", **layout.architecture(), precision="float32")
        with open(os.path.join(tmp, rundir.CONFIG_FILE), "w") as f:
            f.write(run_config.to_json())
        checkpoint = tf.train.Checkpoint(
            **{GENERATOR_NAMES[dirn]: model for dirn, model in models.items()}
        )
        tf.train.CheckpointManager(
            checkpoint, directory=checkpoints.checkpoint_dir(tmp), max_to_keep=1
        ).save(checkpoint_number=0)
        present = [d for d in DIRECTIONS if d in models]
        record = {
            "imported_from": "pytorch",
            "directions": present,
            "sources": {d: sources[d] for d in present},
            "layout": layout.to_dict(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "cyclegan_tf_version": version.__version__,
        }
        with open(os.path.join(tmp, rundir.IMPORTED_FILE), "w") as f:
            json.dump(record, f, indent=2)
        if os.path.isdir(output_dir):
            os.rmdir(output_dir)  # empty (checked above)
        os.rename(tmp, output_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return output_dir


# -- starting a new run from pretrained generators ---------------------------------------------


def init_generators(
    targets: Mapping[str, keras.Model],
    source: str | Mapping[str, str],
    model_config: config_lib.ModelConfig,
    run_dir: str | None = None,
    resuming: bool = False,
) -> dict:
    """Sets the generators of a new run from a run directory or official `.pth` files.

    What `train --init_from` does after building the model and before writing the run directory:
    the discriminators, optimizers and counters stay fresh; only the generators start from the
    source. The source's architecture (generator, ngf, dropout, norm) must be the new run's.

    Args:
      targets: direction -> the new run's generator ({"a2b": g_ab, "b2a": g_ba}), built from
        `model_config`.
      source: a run directory (trained or imported: its latest checkpoint, every direction it
        has); a `.pth` file (initialises g_ab); or {direction: .pth file}.
      model_config: the new run's model section.
      run_dir: the new run's directory (checked when `resuming`).
      resuming: whether `run_dir` holds a run about to be resumed. Allowed only when that run was
        started from the same source (re-running the same command after an interruption; its
        checkpoint then replaces these weights), else refused: --init_from starts new runs.

    Returns:
      The record for `write_init_record`: {"init_from": absolute path (or {direction: path}),
      "kind": "run" | "pytorch", "directions": [...], and the checkpoint and step of a run or the
      sha256 of every file}.

    Raises:
      PretrainedError: an unusable source, another architecture (the message names the field and
        the flag to pass), or a resumed run that did not start from this source.
      rundir.RunDirError, checkpoints.CheckpointError: an unusable source run directory.
    """
    # 1. What the source is, and whether it may be applied here.
    if isinstance(source, Mapping):
        files = {d: os.path.abspath(p) for d, p in source.items()}
        for direction in files:
            if direction not in DIRECTIONS:
                raise errors.ConfigError(f"init_from directions must be a2b/b2a: {direction!r}")
        origin: str | dict[str, str] = files
    elif os.path.isdir(source):
        files, origin = None, os.path.abspath(source)
    elif os.path.isfile(source):
        files = {"a2b": os.path.abspath(source)}
        origin = files["a2b"]
    else:
        raise PretrainedError(
            f"--init_from={source} does not exist; pass a run directory (trained, or written by "
            "`cyclegan-tf import-torch`) or a PyTorch generator .pth file."
        )
    if resuming:
        _check_same_init(run_dir, origin)
    record = {"init_from": origin, "kind": "run" if files is None else "pytorch"}

    # 2. Load it into the targets.
    if files is None:
        saved = rundir.require_config(origin)
        found = {key: getattr(saved.model, key) for key in ARCHITECTURE_FIELDS}
        _check_architecture(origin, found, model_config)
        directions = rundir.imported_directions(origin)
        path = checkpoints.resolve_checkpoint(origin)
        checkpoints.restore_generators(path, **{GENERATOR_NAMES[d]: targets[d] for d in directions})
        record.update(checkpoint=path, step=checkpoints.step_of(path))
        imported = rundir.read_imported(origin)
        if imported is not None:
            record["imported"] = imported.get("sources")
    else:
        directions = tuple(d for d in DIRECTIONS if d in files)
        record["sha256"] = {}
        for direction in directions:
            state_dict, _, digest = _read_weights(files[direction], direction)
            layout = infer_layout(state_dict, files[direction])
            _check_architecture(files[direction], layout.architecture(), model_config)
            assign(targets[direction], state_dict, layout, source=files[direction])
            record["sha256"][direction] = digest
            record.setdefault("layout", {})[direction] = layout.to_dict()
    record["directions"] = list(directions)
    record["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return record


def source_architecture(
    config: config_lib.Config, source: str | Mapping[str, str]
) -> config_lib.Config:
    """`config` with the generator variant of an `--init_from` source (`train` calls this first).

    The variant fields (`norm_epsilon`, `down_padding`, `upsampling`, `conv_bias`: how another
    codebase's ResNet pads, upsamples, ...) have no flags: they follow the weights, read from the
    source's layout (a file) or config.json (a run directory). The fields that have flags
    (generator, ngf, dropout, norm) stay the caller's; `init_generators` refuses a mismatch in
    one line naming the flag.

    Args:
      config: the new run's configuration.
      source: what `init_generators` takes.

    Returns:
      `config`, or a copy with the source's variant fields; `config` itself when the source
      cannot be read (`init_generators` then reports why).
    """
    try:
        if isinstance(source, Mapping):
            direction, path = next(iter(source.items()))
        else:
            direction, path = "a2b", source
        if os.path.isdir(path):
            saved = rundir.require_config(path).model
            found = {key: getattr(saved, key) for key in _VARIANT_FIELDS}
        else:
            state_dict = _read_weights(path, direction)[0]
            found = {
                key: value
                for key, value in infer_layout(state_dict, path).architecture().items()
                if key in _VARIANT_FIELDS
            }
    except (errors.UserError, OSError, StopIteration):
        return config
    wanted, held = config.model.upsampling, found.get("upsampling", config.model.upsampling)
    if wanted in config_lib.RESIZE_UPSAMPLINGS and held != wanted:
        # No preset chooses resize-convolution, so the config's is the user's own choice: the
        # weights cannot follow it (other kernels), and quietly dropping it would train another
        # model than the one asked for.
        raise PretrainedError(
            f"--init_from={path} holds generators with upsampling={held!r}, which cannot start "
            f"the upsampling={wanted!r} generator the new run's config asks for: remove that "
            "setting to start from these weights, or train without --init_from."
        )
    return config.replace(**{f"model.{key}": value for key, value in found.items()})


def write_init_record(run_dir: str, record: dict) -> str:
    """Writes `record` (from `init_generators`) as `<run_dir>/init.json`, atomically."""
    path = os.path.join(run_dir, rundir.INIT_FILE)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=2)
    os.replace(tmp, path)
    return path


def _check_architecture(source: str, found: dict, model: config_lib.ModelConfig) -> None:
    """Refuses a source whose generator differs from the new run's, naming the field."""
    wanted = {key: getattr(model, key) for key in ARCHITECTURE_FIELDS}
    for key, value in found.items():
        if value != wanted[key]:
            flag = {True: "--dropout", False: "--nodropout"}[value] if key == "dropout" else None
            if key in _VARIANT_FIELDS:  # no flags: `source_architecture` sets them for train
                flag = f"{key}={value!r} in the new run's config"
            raise PretrainedError(
                f"--init_from={source} holds a {found['generator']} generator with "
                f"{key}={value!r}, but the new run's config has {key}={wanted[key]!r}: pass "
                f"{flag or f'--{key}={value}'} so that both have the same architecture."
            )


def _check_same_init(run_dir: str | None, origin: str | dict[str, str]) -> None:
    """Resuming with --init_from: only the run that command started (same source)."""
    path = os.path.join(run_dir or "", rundir.INIT_FILE)
    try:
        with open(path) as f:
            started_from = json.load(f).get("init_from")
    except (OSError, ValueError, AttributeError):
        started_from = None
    if started_from != origin:
        raise PretrainedError(
            f"--init_from starts a new run, but {run_dir!r} already holds one (not started from "
            "this --init_from): pass a new --output_dir, --noresume --overwrite to replace it, or "
            "drop --init_from to resume it."
        )


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:200] if lines else type(error).__name__
